"""Two priors' inpainting studies, cell by cell and image by image: is the new one as good?

    python benchmarks/compare_studies.py base=study_shipped new=study_minsnr \
        base_name="shipped prior" new_name="Min-SNR, step 3000" out=comparison.md

``base=`` and ``new=`` are ``inpainting_study.py`` output folders of the same images, masks,
samples and seed (the same ``first``, ``images``, ``samples``, ``seed``; the masks and the
sampling noise depend only on those), one per prior. Each (kind, sampler, budget) cell in both
is compared on the hole MSE and on the fraction of an image's samples the classifier reads as
the right digit, as **paired** differences over images (new - base): the same image, mask and
noise under both priors, so the per-image difference has a far smaller error than the two
rows' own intervals (``accuracy_ci95``, ``hole_mse_se``), which overlap even where one prior
is clearly better. A cell is *better* or *worse* when the mean difference is more than twice
its standard error from 0, *within noise* otherwise. Cells written before the study stored
per-image values fall back to an unpaired difference (the rows' standard errors combined)
and say so. The FD of each cell is listed beside (no error bar: it is one number per cell).

Writes ``out`` (Markdown: one row per cell, then a count of better / within noise / worse)
and prints it. Exit status 2 with one line for a missing folder or no cell in common.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from arguments import key_value_options, usage_error  # noqa: E402

DEFAULTS = {"base": None, "new": None, "base_name": "base", "new_name": "new",
            "out": "comparison.md"}
KEY = ("kind", "sampler", "budget", "n")


def read_cells(folder: Path) -> dict[tuple, dict]:
    """{(kind, sampler, budget, n): cell} of one study folder (its ``cells/*.json``)."""
    cells = {}
    for path in sorted((folder / "cells").glob("*.json")):
        cell = json.loads(path.read_text())
        cells[tuple(cell[k] for k in KEY)] = cell
    return cells


def paired(base: list[float], new: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-image differences new - base."""
    diffs = [b - a for a, b in zip(base, new, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, float("nan")
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(var / n)


def verdict(mean: float, se: float, lower_is_better: bool) -> str:
    if math.isnan(se) or abs(mean) <= 2 * se:
        return "within noise"
    return "better" if (mean < 0) == lower_is_better else "worse"


def compare_cell(base: dict, new: dict) -> dict:
    """The paired (or, for old cells, unpaired) differences of one cell."""
    if "hole_mse_per_image" in base and "hole_mse_per_image" in new:
        mse = paired(base["hole_mse_per_image"], new["hole_mse_per_image"])
        acc = paired(base["correct_per_image"], new["correct_per_image"])
        how = "paired"
    else:
        mse = (new["hole_mse"] - base["hole_mse"],
               math.hypot(base["hole_mse_se"], new["hole_mse_se"]))
        acc = (new["accuracy"] - base["accuracy"],
               math.hypot(base["accuracy_ci95"], new["accuracy_ci95"]) / 1.96)
        how = "unpaired"
    return {"mse": mse, "acc": acc, "how": how,
            "mse_verdict": verdict(*mse, lower_is_better=True),
            "acc_verdict": verdict(*acc, lower_is_better=False)}


def compare(base: dict[tuple, dict], new: dict[tuple, dict], base_name: str,
            new_name: str) -> list[str]:
    """Markdown lines: a row per common cell, then the counts."""
    common = sorted(set(base) & set(new), key=lambda k: (k[0], k[1], k[2], -k[3]))
    lines = [f"| kind | sampler | calls | n | hole MSE: {base_name} | {new_name} | "
             f"difference (± se) | | accuracy: {base_name} | {new_name} | difference (± se) | "
             f"| FD: {base_name} | {new_name} |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    counts = {"mse": {}, "acc": {}}
    for key in common:
        a, b = base[key], new[key]
        c = compare_cell(a, b)
        for metric in ("mse", "acc"):
            counts[metric][c[f"{metric}_verdict"]] = counts[metric].get(c[f"{metric}_verdict"],
                                                                        0) + 1
        mark = "" if c["how"] == "paired" else " (unpaired)"
        lines.append(
            f"| {key[0]} | {key[1]} | {b['calls']} | {key[3]} | {a['hole_mse']:.4f} | "
            f"{b['hole_mse']:.4f} | {c['mse'][0]:+.4f} ± {c['mse'][1]:.4f}{mark} | "
            f"{c['mse_verdict']} | {a['accuracy']:.3f} | {b['accuracy']:.3f} | "
            f"{c['acc'][0]:+.3f} ± {c['acc'][1]:.3f}{mark} | {c['acc_verdict']} | "
            f"{a['fd']:.1f} | {b['fd']:.1f} |")
    lines.append("")
    for metric, label in (("mse", "hole MSE"), ("acc", "accuracy")):
        tally = ", ".join(f"{counts[metric].get(v, 0)} {v}"
                          for v in ("better", "within noise", "worse"))
        lines.append(f"- {label}, {new_name} against {base_name} over {len(common)} cells: "
                     f"{tally} (more than 2 standard errors of the paired difference from 0)")
    return lines


def main(argv: list[str]) -> None:
    cfg = key_value_options(argv, DEFAULTS, "compare_studies.py")
    folders = {}
    for key in ("base", "new"):
        if not cfg[key]:
            usage_error("compare_studies.py", f"{key}= is required (an inpainting_study.py out=)")
        folder = Path(cfg[key])
        if not (folder / "cells").is_dir():
            usage_error("compare_studies.py", f"{key}={folder}: no cells/ folder there; give "
                        f"the out= folder of an inpainting_study.py run")
        folders[key] = read_cells(folder)
    if not set(folders["base"]) & set(folders["new"]):
        usage_error("compare_studies.py", f"{cfg['base']} and {cfg['new']} share no (kind, "
                    f"sampler, budget, images) cell: run both studies with the same kinds=, "
                    f"samplers=, budgets= and images=")
    lines = compare(folders["base"], folders["new"], cfg["base_name"], cfg["new_name"])
    Path(cfg["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg["out"]).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
