"""Plain-text tables for the console, and the same rows as JSON/CSV files.

Rows are dicts of scalars. Non-finite numbers are kept as such in memory, written as null in
JSON (strict JSON has no NaN) and as "nan"/"inf" in CSV, like ``metrics.write_metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..metrics.report import write_json_csv

__all__ = ["format_value", "format_table", "write_rows"]


def format_value(value) -> str:
    """Numbers with 4 significant digits (ints as they are); None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A left-aligned text table of ``columns`` (a missing value shows as "-")."""
    cells = [[format_value(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) if cells else len(column)
              for i, column in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
              for line in cells]
    return "\n".join(lines)


def write_rows(rows: Sequence[dict], folder: str | Path, name: str,
               header: dict | None = None) -> tuple[Path, Path]:
    """``{name}.json`` ({**header, "rows": rows}) and ``{name}.csv`` (one line per row)."""
    return write_json_csv(folder, name, {**(header or {}), "rows": list(rows)}, list(rows))
