"""Fill a SLURM template's {{PLACEHOLDERS}}: defaults from its '# @param NAME=value' lines.

    python scripts/slurm/render.py scripts/slurm/train.sbatch NODES=4 GPUS_PER_NODE=8 > job.sbatch

Unknown names and placeholders left without a value are errors, so a typo never reaches sbatch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PARAM = re.compile(r"^# @param (\w+)=(\S*(?: \S+=\S+)*)")
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def defaults(text: str) -> dict[str, str]:
    """NAME -> default value declared by the template's '# @param' lines."""
    found = {}
    for line in text.splitlines():
        match = PARAM.match(line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def render(text: str, values: dict[str, str]) -> str:
    """The template with every placeholder replaced; raises ValueError naming what is wrong."""
    params = defaults(text)
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; this template takes {sorted(params)}")
    filled = {**params, **values}
    missing = sorted({m for m in PLACEHOLDER.findall(text) if m not in filled})
    if missing:
        raise ValueError(f"placeholder(s) {missing} have no '# @param' default and no value")
    return PLACEHOLDER.sub(lambda m: filled[m.group(1)], text)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv else 2
    template, *pairs = argv
    try:
        values = dict(pair.split("=", 1) for pair in pairs)
    except ValueError:
        print(f"render.py: error: expected NAME=value, got {pairs}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(render(Path(template).read_text(), values))
    except (ValueError, OSError) as e:
        print(f"render.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
