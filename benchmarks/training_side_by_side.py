"""Training runs side by side (issue #19): loss curves per t-quarter and "clean" scores.

    python benchmarks/training_side_by_side.py \
        runs=ref:/tmp/ref_s0/reference_log,ours:runs/pp_matched_s0 plot=curves.png
    python benchmarks/training_side_by_side.py scores=benchmarks/results/prior_clean

``runs=label:path,...`` names training logs: a priorpaint ``run_dir`` (its TensorBoard events,
``train/<key>``; a resumed run has several event files, the later one wins a step) or a folder
with openai/improved-diffusion's ``progress.csv`` (its logger averages each key over the
``log_interval`` steps before step ``s``, and writes ``step`` = s - 1). Both log the mean of the
window's per-step batch means, so the columns compare like with like. Prints one markdown table
of ``keys`` (default loss, mse, vb and the four mse quarters of t) with one ``a / b / ...``
cell per key and logged step; ``plot=`` draws the mse of each quarter of t against steps.
``grids=label:png,... montage=out.png`` puts sample grids side by side under their labels.

``scores=folder`` collects ``prior_clean.py``'s JSON files named
``<run>_step<NNNNNNN>_<raw|ema>_<respacing>_seed<k>.json`` into one table (run, step, weights,
confident, FD, blobs, clean), so a study's numbers are read off files anyone can regenerate. A
checkpoint scored with several sampling seeds is one row, its draws pooled (``pool``).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

from arguments import key_value_options

KEYS = ("loss", "mse", "vb", "mse_q0", "mse_q1", "mse_q2", "mse_q3")
SCORE_NAME = re.compile(r"^(?P<run>.*?)_?step(?P<step>\d+)_(?P<weights>raw|ema)_(?P<respacing>\w+?)"
                        r"_seed(?P<seed>\d+)\.json$")


def fail(message: str) -> None:
    """A user error: one line, exit status 2."""
    print(f"training_side_by_side.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_reference(folder: Path) -> dict[int, dict[str, float]]:
    """improved-diffusion's progress.csv as {updates done: {key: window mean}}."""
    rows = {}
    with open(folder / "progress.csv", newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row["step"])) + 1
            rows[step] = {k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"}
    return rows


def read_priorpaint(run_dir: Path) -> dict[int, dict[str, float]]:
    """A run's TensorBoard ``train/*`` scalars as {global step: {key: value}}; event files in
    the order they were written, so a resumed run's later file wins a step both logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.glob("**/events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    rows: dict[int, dict[str, float]] = {}
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("train/"):
                for event in events.Scalars(tag):
                    rows.setdefault(event.step, {})[tag.split("/", 1)[1]] = event.value
    return rows


def read_run(path: Path) -> dict[int, dict[str, float]]:
    """Either kind of training log, told apart by what the folder holds."""
    if (path / "progress.csv").is_file():
        return read_reference(path)
    if path.is_dir() and any(path.glob("**/events.out.tfevents.*")):
        return read_priorpaint(path)
    fail(f"{path}: neither a progress.csv (improved-diffusion) nor TensorBoard events "
         f"(a priorpaint run_dir); pass runs=label:folder")


def curve_table(runs: dict[str, dict[int, dict[str, float]]], keys=KEYS) -> str:
    """Markdown: a row per step every run logged, a cell per key holding each run's value."""
    steps = sorted(set.intersection(*(set(r) for r in runs.values())))
    labels = " / ".join(runs)
    lines = [f"| step | {' | '.join(f'{k} {labels}' for k in keys)} |", "|---|" + "---|" * len(keys)]
    for step in steps:
        cells = [" / ".join(f"{r[step][k]:.4f}" if k in r[step] else "-" for r in runs.values())
                 for k in keys]
        lines.append(f"| {step} | {' | '.join(cells)} |")
    return "\n".join(lines)


def read_scores(folder: Path) -> list[dict]:
    """Every prior_clean.py JSON in ``folder`` whose name carries run, step and weights."""
    scores = []
    for path in sorted(folder.glob("*.json")):
        match = SCORE_NAME.match(path.name)
        if match:
            result = json.loads(path.read_text())
            scores.append({**match.groupdict(), "step": int(match["step"]), **{
                k: result[k] for k in ("confident", "fd", "clean", "n")},
                "blobs": result["blobs"] if "blobs" in result else grid_blobs(path, result),
                # files written before these were stored are MNIST's, scored at 0.85 / 150
                "clean_fraction": result.get("clean_fraction", 0.85),
                "fd_bound": result.get("fd_bound", 150.0)})
    return sorted(scores, key=lambda s: (s["run"], s["step"], s["weights"], s["respacing"],
                                         int(s["seed"])))


def grid_blobs(path: Path, result: dict) -> int | None:
    """The blob count of a draw scored before prior_clean.py stored it, off its grid PNG (the
    same samples, 8-bit rounded); None without the PNG."""
    grid = path.with_suffix(".png")
    if not grid.is_file():
        return None
    from prior_clean import BLOB_BRIGHTNESS, blobs, grid_images

    return blobs(grid_images(grid, result["n"]), BLOB_BRIGHTNESS[result.get("data", "mnist")])


def pool(draws: list[dict]) -> dict:
    """Draws of one checkpoint (several sampling seeds) as one, by ``prior_clean.pooled`` and
    the bounds they were scored with, plus how many draws were clean alone."""
    from prior_clean import pooled  # torch and the study: only when scores are pooled

    both = pooled(draws, draws[0]["clean_fraction"], draws[0]["fd_bound"])
    counts = [d["blobs"] for d in draws]
    return {**both, "draws": len(draws), "clean_draws": sum(bool(d["clean"]) for d in draws),
            "blobs": None if None in counts else sum(counts)}


def score_table(scores: list[dict]) -> str:
    """Markdown: one row per scored checkpoint, its sampling seeds pooled (``pool``)."""
    groups: dict[tuple, list[dict]] = {}
    for s in scores:
        groups.setdefault((s["run"], s["step"], s["weights"], s["respacing"]), []).append(s)
    lines = ["| run | step | weights | respacing | seeds | confident | FD | blobs | clean draws | "
             "clean |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (run, step, weights, respacing), draws in groups.items():
        p = pool(draws)
        fds = f"{p['fd']:.1f}" + (f" ({min(d['fd'] for d in draws):.0f}-"
                                   f"{max(d['fd'] for d in draws):.0f})" if len(draws) > 1 else "")
        lines.append(f"| {run or '-'} | {step} | {weights} | {respacing} | "
                     f"{','.join(d['seed'] for d in draws)} | "
                     f"{p['confident']:.2f} ({round(p['confident'] * p['n'])}/{p['n']}) | {fds} | "
                     f"{'-' if p['blobs'] is None else p['blobs']} | "
                     f"{p['clean_draws']}/{p['draws']} | {'yes' if p['clean'] else 'no'} |")
    return "\n".join(lines)


def plot_curves(runs: dict[str, dict[int, dict[str, float]]], path: Path, first: int = 300) -> None:
    """The mse of each quarter of t against steps (log y), one line per run, from step ``first``
    on (the first windows fall 10-50x and would flatten the rest); PIL only."""
    from PIL import Image, ImageDraw

    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    w, h, pad = 300, 220, 50
    image = Image.new("RGB", (pad + 4 * (w + pad), h + 2 * pad + 16 * (1 + len(runs) // 4)), "white")
    draw = ImageDraw.Draw(image)
    runs = {label: {s: r for s, r in rows.items() if s >= first} for label, rows in runs.items()}
    last = max(max(rows, default=1) for rows in runs.values())
    for q in range(4):
        key, x0, y0 = f"mse_q{q}", pad + q * (w + pad), pad
        values = [r[key] for rows in runs.values() for r in rows.values() if r.get(key, 0) > 0]
        if not values:
            continue
        lo, hi = math.log10(min(values)), math.log10(max(values))
        hi = hi if hi > lo + 0.1 else lo + 0.1
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline="black")
        draw.text((x0, y0 - 28), f"mse, t in quarter {q} of T", fill="black")
        draw.text((x0, y0 - 14), f"log axis {10 ** lo:.3g} - {10 ** hi:.3g}", fill="black")
        draw.text((x0, y0 + h + 4), f"step {first} - {last}", fill="black")
        for i, rows in enumerate(runs.values()):
            span = max(last - first, 1)
            points = [(x0 + (s - first) / span * w, y0 + h - (math.log10(r[key]) - lo) / (hi - lo) * h)
                      for s, r in sorted(rows.items()) if r.get(key, 0) > 0]
            if len(points) > 1:
                draw.line(points, fill=colours[i % len(colours)], width=2)
    for i, label in enumerate(runs):
        x, y = pad + (i % 4) * (w + pad), h + pad + 24 + 16 * (i // 4)
        draw.rectangle([x, y, x + 10, y + 10], fill=colours[i % len(colours)])
        draw.text((x + 14, y), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def montage(grids: dict[str, Path], path: Path) -> None:
    """Sample grids side by side, each under its label (same seeds: compare cell for cell)."""
    from PIL import Image, ImageDraw

    images = [Image.open(g).convert("RGB") for g in grids.values()]
    width, height, gap = max(i.width for i in images), max(i.height for i in images), 12
    sheet = Image.new("RGB", (len(images) * (width + gap) - gap, height + 18), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, image) in enumerate(zip(grids, images, strict=True)):
        sheet.paste(image, (k * (width + gap), 18))
        draw.text((k * (width + gap), 3), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def labelled(option: str, value: str) -> dict[str, Path]:
    """``label:path,...`` as {label: path}; a missing path is a user error."""
    items = {}
    for item in value.split(","):
        label, sep, path = item.partition(":")
        if not sep or not Path(path).exists():
            fail(f"{option}: {item!r} is not label:path with an existing path")
        items[label] = Path(path)
    return items


def main(argv: list[str]) -> None:
    options = {"runs": "", "keys": ",".join(KEYS), "plot": "", "plot_from": "300", "scores": "",
               "grids": "", "montage": ""}
    options = key_value_options(argv, options, "training_side_by_side.py")
    if not options["runs"] and not options["scores"] and not options["grids"]:
        fail("give runs=label:folder,..., scores=folder and/or grids=label:png,... montage=out.png")
    if options["grids"]:
        if not options["montage"]:
            fail("grids= needs montage=<out.png>, the file to write")
        montage(labelled("grids", options["grids"]), Path(options["montage"]))
        print(f"montage: {options['montage']}")
    if options["runs"]:
        runs = {label: read_run(folder) for label, folder in labelled("runs", options["runs"]).items()}
        print(curve_table(runs, tuple(k for k in options["keys"].split(",") if k)))
        if options["plot"]:
            plot_curves(runs, Path(options["plot"]), int(options["plot_from"]))
            print(f"\nplot: {options['plot']}")
    if options["scores"]:
        if not Path(options["scores"]).is_dir():
            fail(f"scores: {options['scores']} is not a folder of prior_clean.py JSON files")
        print(score_table(read_scores(Path(options["scores"]))))


if __name__ == "__main__":
    main(sys.argv[1:])
