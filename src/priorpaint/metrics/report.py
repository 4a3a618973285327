"""Summaries of per-image metric rows, and the metrics.json / metrics.csv an evaluation writes.

A row is one image's dict, e.g. ``{"image": "0001.png", "psnr_hole": 21.3, "ssim_hole": 0.71}``.
Numeric values (Python/NumPy numbers, 0-d tensors; not bools) are summarised; other values
(names, paths) are carried into the files only.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
from pathlib import Path

import torch

__all__ = ["aggregate", "write_metrics", "write_json_csv", "json_safe"]


def _plain(value):
    """0-d tensors and NumPy scalars as Python numbers; everything else unchanged."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError("metric rows hold scalars; got a tensor of shape "
                             f"{tuple(value.shape)}")
        return value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def aggregate(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per numeric key: ``mean``, ``std`` (population, over images), ``n`` (images counted).

    NaN and ±inf values (an empty region, identical images' PSNR) are left out of mean and std
    and counted in ``n_excluded``, so one undefined image cannot turn a whole summary into NaN.
    A key with no finite value gets mean and std NaN.
    """
    values: dict[str, list[float]] = {}
    excluded: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            value = _plain(value)
            if not _is_number(value):
                continue
            value = float(value)
            values.setdefault(key, [])
            excluded.setdefault(key, 0)
            if math.isfinite(value):
                values[key].append(value)
            else:
                excluded[key] += 1
    summary = {}
    for key, finite in values.items():
        data = torch.tensor(finite, dtype=torch.float64)
        mean = data.mean().item() if finite else math.nan
        std = data.std(correction=0).item() if finite else math.nan
        summary[key] = {"mean": mean, "std": std, "n": len(finite), "n_excluded": excluded[key]}
    return summary


def json_safe(value):
    """JSON has no NaN/inf: write them as null (strict JSON every reader accepts)."""
    value = _plain(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(rows: list[dict], summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` ({"summary", "per_image"}) and ``metrics.csv`` (one row per image).

    Non-finite numbers become null in the JSON and "nan" / "inf" in the CSV. The CSV columns
    are the union of the rows' keys in first-seen order; a missing value is an empty cell.
    Returns the two paths.
    """
    plain_rows = [{str(k): _plain(v) for k, v in row.items()} for row in rows]
    return write_json_csv(out_dir, "metrics", {"summary": summary, "per_image": plain_rows},
                          plain_rows)


def write_json_csv(folder: str | Path, name: str, document: dict,
                   rows: list[dict]) -> tuple[Path, Path]:
    """``{name}.json`` (``document``, strict JSON) and ``{name}.csv`` (``rows``; columns are the
    union of the rows' keys in first-seen order, a missing value an empty cell)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / f"{name}.json", folder / f"{name}.csv"
    json_path.write_text(json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path
