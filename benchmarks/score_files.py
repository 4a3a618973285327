"""prior_clean.py's score files and a run's TensorBoard scalars, read back for the tables of
benchmarks/training_speed.py (what the removed training_side_by_side.py held for it).

A score file is ``<run>_step<N>_<raw|ema>_<respacing>_seed<k>.json``; several sampling seeds of
one checkpoint are pooled into one row by ``prior_clean.pooled``."""

from __future__ import annotations

import json
import re
from pathlib import Path

SCORE_NAME = re.compile(r"^(?P<run>.*?)_?step(?P<step>\d+)_(?P<weights>raw|ema)_(?P<respacing>\w+?)"
                        r"_seed(?P<seed>\d+)\.(?:json|png)$")



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


def rescore_grids(folder: Path, data: str, mnist: str, cache: str) -> list[dict]:
    """Every prior_clean.py PNG grid in ``folder`` (named as its score file) scored again with
    this machine's classifier, as :func:`read_scores` rows: the classifier is trained on each
    machine and reads a draw slightly differently (docs/research/classifier-calibration.md),
    so draws from other sessions are compared with today's only through one classifier."""
    import prior_clean

    if not list(folder.glob("*.png")):
        return []
    cfg = prior_clean.parse([f"grids={folder}/*.png", f"data={data}", f"mnist={mnist}",
                             f"cache={cache}"])
    scores = []
    for result in prior_clean.rescore(cfg, pool=False):
        match = SCORE_NAME.match(Path(result["source"]).name)
        if match:
            scores.append({**match.groupdict(), "step": int(match["step"]),
                           **{k: result[k] for k in ("confident", "fd", "clean", "n", "blobs")},
                           "clean_fraction": cfg["clean_fraction"], "fd_bound": cfg["fd_bound"]})
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


