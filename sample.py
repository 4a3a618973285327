"""Inpaint images with a trained prior (RePaint), or draw unconditional samples.

    python sample.py ckpt=runs/x/last.ckpt images=photos/ mask=half out=inpainted
    python sample.py ckpt=runs/x/last.ckpt n_samples=16 out=samples      # unconditional

Options and their defaults: configs/sample.yaml. The work is done by
``priorpaint.sampling.run.run``; this file only composes the config and reports errors.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from priorpaint.sampling.run import run

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


@hydra.main(config_path="configs", config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except USER_ERRORS as e:  # bad input: say what is wrong, without a traceback
        print(f"sample.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
