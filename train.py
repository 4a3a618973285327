"""Train an improved-DDPM prior: `python train.py` runs the 16x16 digits quickstart on CPU.

Examples:
    python train.py                                   # quickstart (~10 min on 2 cores)
    python train.py experiment=mnist32                # MNIST 32x32 from ../shared/data/mnist
    python train.py experiment=none data=folder data.path=/my/images model=im64 trainer=gpu
    python train.py ckpt_path=outputs/<run>/checkpoints/last.ckpt run_dir=outputs/<run>
The quickstart is configs/train.yaml's default preset (experiment: quickstart): another
experiment= replaces it, experiment=none runs train.yaml's and the chosen groups' own values;
`--cfg job` prints every setting a command gets. Only composes the config and launches;
everything else lives in priorpaint.lightning.
"""

import hydra
from omegaconf import DictConfig

from priorpaint.cli import report_user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@report_user_errors("train.py")
def main(cfg: DictConfig) -> None:
    from priorpaint.lightning.launch import run_training

    result = run_training(cfg)
    if result.trainer.is_global_zero:
        print("\n[priorpaint] training finished\n" + result.summary(), flush=True)


if __name__ == "__main__":
    main()
