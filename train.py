"""Train an improved-DDPM prior: `python train.py` runs the 16x16 digits quickstart on CPU.

Examples:
    python train.py                                   # quickstart (~10 min on 2 cores)
    python train.py experiment=mnist32                # MNIST 32x32 from ../shared/data/mnist
    python train.py data=folder data.path=/my/images model=im64 trainer=gpu
    python train.py ckpt_path=outputs/<run>/checkpoints/last.ckpt run_dir=outputs/<run>
A command line that chooses no data/model/diffusion/trainer/experiment is the quickstart
(experiment=quickstart is added); any other run gets configs/train.yaml's and its groups'
defaults. Only composes the config and launches; everything else lives in priorpaint.lightning.
"""

import sys

import hydra
from omegaconf import DictConfig

from priorpaint.cli import report_user_errors, with_default_experiment


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@report_user_errors("train.py")
def main(cfg: DictConfig) -> None:
    from priorpaint.lightning.launch import run_training

    result = run_training(cfg)
    if result.trainer.is_global_zero:
        print("\n[priorpaint] training finished\n" + result.summary(), flush=True)


if __name__ == "__main__":
    sys.argv[1:] = with_default_experiment(sys.argv[1:])
    main()
