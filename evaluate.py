"""Evaluate inpaintings, or run RePaint's compute ablation on a prior.

    python evaluate.py out=inpainted                     # a sample.py output folder
    python evaluate.py out=inpainted lpips_weights=alexnet-owt-7be5be79.pth
    python evaluate.py out=inpainted nll_images=heldout/ nll_steps=50
    python evaluate.py mode=ablation ckpt=runs/x/last.ckpt images=val/ mask=thick budget=1000

Options and their defaults: configs/evaluate.yaml (mode=folder) and configs/ablation.yaml
(mode=ablation). The work is done by ``priorpaint.evaluation.cli.run``; this file only picks
the config, composes it and reports errors.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from priorpaint.cli import check_missing_keys, report_user_errors
from priorpaint.evaluation.cli import run
from priorpaint.metrics import MetricUnavailable


# bad input or a missing weight file: one line, exit status 2 (priorpaint.cli)
@report_user_errors("evaluate.py", extra=(MetricUnavailable,))
def _main(cfg: DictConfig) -> None:
    check_missing_keys(cfg)
    run(cfg)


def main() -> None:
    # mode=ablation selects another config file (its keys differ), so it is read before Hydra
    name = "ablation" if "mode=ablation" in sys.argv[1:] else "evaluate"
    hydra.main(config_path="configs", config_name=name, version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
