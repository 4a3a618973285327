"""Issue #31's screen: steps to clean per training factor on the quickstart's digits.

    python benchmarks/training_speed.py scores=/work/runs31/scores runs=/work/runs31 \
        cache=/work/runs31/cache out=docs/results/training_speed

``scores=`` holds ``prior_clean.py``'s JSON per draw, named ``<variant>_s<seed>_step<N>_ema_100_
seed<k>.json`` (docs/research/training-efficiency.md's scoring: ``data=digits``, 100 sampling steps, one
draw at 250 and four pooled from 500 on); ``runs=`` the training runs' folders of the same
names (their TensorBoard ``train/mse_q*``: the MSE per quarter of t). ``committed=`` (default
``quickstart_s0,quickstart_s1``) adds today's preset's committed scores in
``docs/results/training_speed/preset_scores`` (prior_clean.py's JSON of the runs behind the
README's training table, bf16-mixed, four draws pooled) as the baseline, variant
``preset``, beside any baseline retrained here (``base``). (Their grids rescored with this
machine's classifier, ``prior_clean.py grids=...``, read within 0.01 of the stored JSON.)

Writes ``out/table.md`` (pooled confident / FD per checkpoint, "clean at" = the first
checkpoint whose pooled draws are clean, MSE per t-quarter at the last logged step),
``out/table.csv`` (one row per run and step) and ``out/clean_fraction.png`` (pooled confident
fraction against steps, one colour per variant, seed 0 solid and seed 1 thin, the bound
dashed). PIL only.

The MNIST confirmation (``experiment=mnist32``) is tabled from grids instead of JSON:
``grids=`` names a folder of prior_clean.py's PNG grids (named as its score files), each
scored again here with this machine's classifier (``data=mnist mnist= cache=``), so the
preset's draws committed in #19 and today's variants are read by one classifier;
``steps=`` picks the columns (default the quickstart's 250,500,750,1000); ``montage=``
(``variant:step,...``) puts those draws side by side, a row per training seed, in
``out/side_by_side.png``:

    python benchmarks/training_speed.py grids=docs/results/training_speed/mnist32/grids \
        data=mnist steps=2000,3000,4000 committed= runs=/work/runs31m cache=/work/runs31m/cache \
        montage=preset:2000,minsnr:2000,preset:4000 out=docs/results/training_speed/mnist32

Post-hoc EMA (``module.posthoc_ema``): runs listed in ``posthoc=`` (default ``ph,mph``: the
preset and Min-SNR trained with power-EMA snapshots every 50 steps) are left out of the
table above and get ``out/posthoc.md`` / ``posthoc.csv`` instead: the pooled confident / FD
of the run's own EMA (ema-pytorch, today's default; its checkpoints every 250 steps) beside
the EMAs ``python -m priorpaint.ema_posthoc`` rebuilt at each σ_rel and step (snapshots
every 50 steps), scored as ``<variant>_s<seed>_sigma<σ>_step<N>``. A variant not in
``posthoc=`` with such rebuilt draws (MNIST's ``minsnr``) stays in the main table and gets its
rows in ``posthoc.md`` too.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from arguments import key_value_options  # noqa: E402
from score_files import pool, read_priorpaint, read_scores, rescore_grids  # noqa: E402

RUN = re.compile(r"^(?P<variant>.+)_s(?P<seed>\d+)$")
POSTHOC = re.compile(r"^(?P<variant>.+)_s(?P<seed>\d+)_sigma(?P<sigma>[\d.]+)$")
STEPS = (250, 500, 750, 1000)   # the quickstart screen's checkpoints (steps= for others)
# what the post-hoc runs of the screen were trained as (their table's first column)
POSTHOC_LABELS = {"ph": "preset, retrained fp32", "mph": "min_snr"}
DEFAULTS = {"scores": None, "runs": None, "out": "docs/results/training_speed",
            "committed": "quickstart_s0,quickstart_s1", "posthoc": "ph,mph", "grids": None,
            "steps": ",".join(map(str, STEPS)), "data": "digits",
            "mnist": str(ROOT.parent / "shared" / "data" / "mnist"), "cache": "study/cache",
            "montage": ""}


def collect(scores: list[dict]) -> dict[tuple[str, int], dict[int, dict]]:
    """{(variant, seed): {step: pooled EMA draws}} from prior_clean.py's scores (read_scores
    or rescore_grids rows)."""
    groups: dict[tuple[str, int, int], list[dict]] = {}
    for s in scores:
        match = RUN.match(s["run"])
        if match and s["weights"] == "ema":
            groups.setdefault((match["variant"], int(match["seed"]), s["step"]), []).append(s)
    out: dict[tuple[str, int], dict[int, dict]] = {}
    for (variant, seed, step), draws in groups.items():
        out.setdefault((variant, seed), {})[step] = pool(draws)
    return out


def collect_posthoc(scores: list[dict]) -> dict[tuple[str, int, str], dict[int, dict]]:
    """{(variant, seed, σ_rel): {step: pooled draws}} of the post-hoc EMAs rebuilt.

    A rebuild from a snapshot written before commit 9f45763 names the step before the one it
    ends: snapshots then recorded the step Lightning had counted before the one just taken
    (the snapshot after update 500 said 499; the checkpoint of that moment is
    step0000500.ckpt), so a step ending in 49 or 99 is counted as the next one.
    """
    groups: dict[tuple[str, int, str, int], list[dict]] = {}
    for s in scores:
        match = POSTHOC.match(s["run"])
        if match and s["weights"] == "ema":
            step = s["step"] + 1 if s["step"] % 50 == 49 else s["step"]
            key = (match["variant"], int(match["seed"]), f"{float(match['sigma']):.2f}", step)
            groups.setdefault(key, []).append(s)
    out: dict[tuple[str, int, str], dict[int, dict]] = {}
    for (variant, seed, sigma, step), draws in groups.items():
        out.setdefault((variant, seed, sigma), {})[step] = pool(draws)
    return out


def _write(out: Path, name: str, lines: list[str], rows_csv: list[dict]) -> None:
    """``out/<name>.md`` (the markdown lines, also printed) and ``out/<name>.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows_csv[0]))
        writer.writeheader()
        writer.writerows(rows_csv)
    print("\n".join(lines))


def write_posthoc_table(posthoc, own_ema, out: Path) -> None:
    """posthoc.md / .csv: per run, its own EMA (checkpoints every 250 steps) and each rebuilt
    σ_rel, pooled confident / FD at every step scored."""
    steps = sorted({step for rows in posthoc.values() for step in rows})
    lines = ["| training | seed | EMA | " + " | ".join(str(s) for s in steps) + " |",
             "|---|---|---|" + "---|" * len(steps)]
    rows_csv = []
    for variant, seed in sorted({(v, sd) for v, sd, _ in posthoc}):
        emas = [("ema-pytorch (today's default)", own_ema.get((variant, seed), {}))] + [
            (f"post-hoc σ_rel {sg}", posthoc[(v, sd, sg)])
            for v, sd, sg in sorted(posthoc, key=lambda key: float(key[2]))
            if (v, sd) == (variant, seed)]
        for ema, rows in emas:
            lines.append(f"| {POSTHOC_LABELS.get(variant, variant)} | {seed} | {ema} | " +
                         " | ".join(_cell(rows.get(step)) for step in steps) + " |")
            rows_csv += [{"variant": variant, "seed": seed, "ema": ema, "step": step,
                          "draws": p["draws"], "confident": round(p["confident"], 4),
                          "fd": round(p["fd"], 2), "clean": p["clean"]}
                         for step, p in sorted(rows.items()) if step in steps]
    _write(out, "posthoc", lines, rows_csv)


def committed(names: list[str], steps=STEPS) -> dict[tuple[str, int], dict[int, dict]]:
    """Today's preset's committed scores (docs/results/training_speed/preset_scores: four
    draws pooled, as scored when the runs were trained; bf16-mixed, the preset's precision)."""
    out: dict[tuple[str, int], dict[int, list[dict]]] = {}
    for s in read_scores(ROOT / "docs" / "results" / "training_speed" / "preset_scores"):
        if s["run"] in names and s["weights"] == "ema" and s["respacing"] == "100" \
                and s["step"] in steps:
            seed = int(RUN.match(s["run"])["seed"])
            out.setdefault(("preset", seed), {}).setdefault(s["step"], []).append(s)
    return {key: {step: pool(draws) for step, draws in rows.items()} for key, rows in out.items()}


def clean_at(rows: dict[int, dict]) -> int | None:
    return next((step for step in sorted(rows) if rows[step]["clean"]), None)


def quarters(run_dir: Path) -> list[float] | None:
    """MSE per quarter of t at the run's last logged step (TensorBoard train/mse_q0..3)."""
    if not run_dir.is_dir():
        return None
    logged = read_priorpaint(run_dir)
    if not logged:
        return None
    last = logged[max(logged)]
    return [last.get(f"mse_q{q}") for q in range(4)]


def _cell(p: dict | None) -> str:
    if p is None:
        return "-"
    bold = "**" if p["clean"] else ""
    return f"{bold}{p['confident']:.2f} / {p['fd']:.0f}{bold}"


def write_table(results, runs_dir: Path | None, out: Path, steps=STEPS) -> None:
    variants = sorted({v for v, _ in results}, key=lambda v: (v not in ("preset", "base"), v))
    lines = ["| variant | seed | " + " | ".join(str(s) for s in steps) +
             " | clean at | MSE per t-quarter, last logged step (q0 least noise ... q3) |",
             "|---|---|" + "---|" * len(steps) + "---|---|"]
    rows_csv = []
    for variant in variants:
        for seed in sorted(s for v, s in results if v == variant):
            rows = results[(variant, seed)]
            cells = []
            for step in steps:
                p = rows.get(step)
                cells.append(_cell(p))
                if p is not None:
                    rows_csv.append({"variant": variant, "seed": seed, "step": step,
                                     "draws": p["draws"], "confident": round(p["confident"], 4),
                                     "fd": round(p["fd"], 2), "clean": p["clean"]})
            q = quarters(runs_dir / f"{variant}_s{seed}") if runs_dir and variant != "preset" \
                else None
            qtext = "-" if not q or None in q else " / ".join(f"{v:.4f}" for v in q)
            at = clean_at(rows)
            lines.append(f"| {variant} | {seed} | " + " | ".join(cells) +
                         f" | {at if at else '> ' + str(max(rows))} | {qtext} |")
    _write(out, "table", lines, rows_csv)


def plot(results, path: Path, bound: float, steps=STEPS) -> None:
    """Pooled confident fraction against steps: a colour per variant, seed 0 thick, seed 1 thin."""
    from PIL import Image, ImageDraw

    colours = [(127, 127, 127), (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44),
               (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    variants = sorted({v for v, _ in results}, key=lambda v: (v not in ("preset", "base"), v))
    w, h, pad, lo, hi = 520, 320, 60, 0.3, 1.0
    image = Image.new("RGB", (w + 2 * pad + 170, h + 2 * pad), "white")
    draw = ImageDraw.Draw(image)

    def xy(step, value):
        return (pad + (step - steps[0]) / (steps[-1] - steps[0]) * w,
                pad + h - (value - lo) / (hi - lo) * h)

    draw.rectangle([pad, pad, pad + w, pad + h], outline="black")
    for step in steps:
        x, _ = xy(step, lo)
        draw.text((x - 12, pad + h + 6), str(step), fill="black")
    for v in (0.4, 0.6, 0.8, 1.0):
        _, y = xy(steps[0], v)
        draw.text((pad - 30, y - 6), f"{v:.1f}", fill="black")
    _, y = xy(steps[0], bound)
    for x in range(pad, pad + w, 12):
        draw.line([(x, y), (x + 6, y)], fill=(200, 0, 0), width=1)
    draw.text((pad, 10), "confident fraction (the draws of 64 of each checkpoint pooled) vs "
              f"training steps; clean needs >= {bound} (red dashes)", fill="black")
    draw.text((pad + w / 2 - 40, pad + h + 24), "training step", fill="black")
    for i, variant in enumerate(variants):
        colour = colours[i % len(colours)]
        for seed in sorted(s for v, s in results if v == variant):
            rows = results[(variant, seed)]
            points = [xy(s, rows[s]["confident"]) for s in steps if s in rows]
            if len(points) > 1:
                draw.line(points, fill=colour, width=3 if seed == 0 else 1)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = pad + 18 * i
        draw.line([(pad + w + 15, ly + 6), (pad + w + 35, ly + 6)], fill=colour, width=3)
        draw.text((pad + w + 40, ly), variant, fill="black")
    draw.text((pad + w + 15, pad + 18 * len(variants) + 6), "thick: seed 0, thin: seed 1",
              fill="black")
    image.save(path)


def montage(grids: Path, columns: list[tuple[str, int]], path: Path, seeds=(0, 1)) -> None:
    """The draws (sampling seed 0) of ``columns`` (variant, step) side by side, one row per
    training seed, labelled: what the table's numbers look like."""
    from PIL import Image, ImageDraw

    def grid(variant, step, seed):
        found = sorted(grids.glob(f"{variant}_s{seed}_step{step:07d}_ema_*_seed0.png"))
        return Image.open(found[0]).convert("RGB") if found else None

    cells = {(c, seed): grid(*c, seed) for c in columns for seed in seeds}
    w, h = next(im.size for im in cells.values() if im is not None)
    image = Image.new("RGB", (70 + len(columns) * (w + 10), 24 + len(seeds) * (h + 10)), "white")
    draw = ImageDraw.Draw(image)
    for j, (variant, step) in enumerate(columns):
        draw.text((74 + j * (w + 10), 6), f"{variant}, step {step}", fill="black")
        for i, seed in enumerate(seeds):
            if cells[(variant, step), seed] is not None:
                image.paste(cells[(variant, step), seed], (70 + j * (w + 10), 24 + i * (h + 10)))
    for i, seed in enumerate(seeds):
        draw.text((4, 24 + i * (h + 10) + h // 2), f"seed {seed}", fill="black")
    image.save(path)


def main(argv: list[str]) -> None:
    import prior_clean

    cfg = key_value_options(argv, DEFAULTS, "training_speed.py")
    if bool(cfg["scores"]) == bool(cfg["grids"]):
        print("training_speed.py: give scores=<folder of prior_clean.py JSON> or grids=<folder "
              "of its PNG grids, scored again here>", file=sys.stderr)
        raise SystemExit(2)
    try:
        steps = tuple(int(s) for s in str(cfg["steps"]).split(",") if s)
    except ValueError:
        steps = ()
    if len(steps) < 2 or cfg["data"] not in prior_clean.BOUNDS:
        print(f"training_speed.py: steps={cfg['steps']} must list two or more steps and "
              f"data={cfg['data']} be one of {', '.join(prior_clean.BOUNDS)}", file=sys.stderr)
        raise SystemExit(2)
    scores = (read_scores(Path(cfg["scores"])) if cfg["scores"] else
              rescore_grids(Path(cfg["grids"]), cfg["data"], cfg["mnist"], cfg["cache"]))
    results = collect(scores)
    if cfg["committed"]:
        results.update(committed([n for n in cfg["committed"].split(",") if n], steps))
    out = Path(cfg["out"])
    posthoc_runs = {n for n in str(cfg["posthoc"]).split(",") if n}
    posthoc = collect_posthoc(scores)
    if posthoc:   # every run's own EMA beside its rebuilt ones, before posthoc= runs leave
        write_posthoc_table(posthoc, results, out)
    # only the runs in posthoc= (trained just for the snapshots) leave the main table; any
    # other with rebuilt EMAs (MNIST's minsnr) stays in both
    results = {key: rows for key, rows in results.items() if key[0] not in posthoc_runs}
    write_table(results, Path(cfg["runs"]) if cfg["runs"] else None, out, steps)
    plot(results, out / "clean_fraction.png", prior_clean.BOUNDS[cfg["data"]][0], steps)
    if cfg["grids"] and cfg["montage"]:
        columns = [(c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1]))
                   for c in str(cfg["montage"]).split(",") if c]
        montage(Path(cfg["grids"]), columns, out / "side_by_side.png")


if __name__ == "__main__":
    main(sys.argv[1:])
