"""Ship a trained prior: a checkpoint's EMA weights only, stored in float16.

    python scripts/export_prior.py runs/photos64/checkpoints/last.ckpt examples/priors/photos64.ckpt
    python scripts/export_prior.py SOURCE TARGET --float32      # keep float32 weights

The output holds what ``sample.py ckpt=...`` needs (network and diffusion configs, image size,
channels, provenance) and the first EMA rate's weights; no raw weights, optimizer or callback
state. ``priorpaint.checkpoint.load_prior`` loads it back as a float32 network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from priorpaint.checkpoint import export_prior
from priorpaint.cli import report_user_errors


@report_user_errors("export_prior.py", returns_status=True)   # bad input: one line, status 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a checkpoint written by train.py (or save_prior)")
    parser.add_argument("target", type=Path, help="where to write the EMA-only prior")
    parser.add_argument("--float32", action="store_true", help="store float32, not float16")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        raise FileNotFoundError(f"checkpoint {args.source} does not exist")
    path = export_prior(args.source, args.target, half=not args.float32)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, EMA weights, "
          f"{'float32' if args.float32 else 'float16'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
