"""Evaluate inpaintings, or run RePaint's compute ablation on a prior.

    python evaluate.py out=inpainted                     # a sample.py output folder
    python evaluate.py out=inpainted lpips_weights=alexnet-owt-7be5be79.pth
    python evaluate.py out=inpainted nll_images=heldout/ nll_steps=50
    python evaluate.py mode=ablation ckpt=runs/x/last.ckpt images=val/ mask=thick budget=1000

Options and their defaults: configs/evaluate.yaml, with the mode's own keys from the config
group configs/mode/ (folder, the default, or ablation). The work is done by
``priorpaint.evaluation.modes.run``; this file only composes the config and reports errors.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from priorpaint.cli import check_missing_keys, report_user_errors
from priorpaint.evaluation.modes import run
from priorpaint.metrics import MetricUnavailable


# bad input or a missing weight file: one line, exit status 2 (priorpaint.cli)
@report_user_errors("evaluate.py", extra=(MetricUnavailable,))
def _main(cfg: DictConfig) -> None:
    check_missing_keys(cfg)
    run(cfg)


main = hydra.main(config_path="configs", config_name="evaluate", version_base="1.3")(_main)


if __name__ == "__main__":
    main()
