"""Inpaint images with a trained prior (RePaint), or draw unconditional samples.

    python sample.py ckpt=runs/x/last.ckpt images=photos/ mask=half out=inpainted
    python sample.py ckpt=runs/x/last.ckpt n_samples=16 out=samples      # unconditional

Options and their defaults: configs/sample.yaml. The work is done by
``priorpaint.sampling.run.run``; this file only composes the config and reports errors.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from priorpaint.cli import check_missing_keys, report_user_errors
from priorpaint.sampling.run import run


@hydra.main(config_path="configs", config_name="sample", version_base="1.3")
@report_user_errors("sample.py")   # bad input: one line, exit status 2 (priorpaint.cli)
def main(cfg: DictConfig) -> None:
    check_missing_keys(cfg)
    run(cfg)


if __name__ == "__main__":
    main()
