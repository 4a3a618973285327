"""The inpainting web page: paint a hole, choose a prior and a sampler, watch, download.

    python app.py ckpt=runs/x/last.ckpt
    python app.py ckpt=outputs/ port=7860      # a folder: pick one of its .ckpt files

Options and their defaults: configs/app.yaml (every sample.py key is a default of the page).
The page is ``priorpaint.app.ui``; this file only composes the config and launches it.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from priorpaint.cli import report_user_errors  # noqa: E402


@hydra.main(config_path="configs", config_name="app", version_base="1.3")
@report_user_errors("app.py")   # bad input: one line, exit status 2 (priorpaint.cli)
def main(cfg: DictConfig) -> None:
    try:
        from priorpaint.app.ui import launch
    except ImportError as e:
        print(f"app.py: error: {e}; install the page's extra: pip install -e \".[app]\"",
              file=sys.stderr)
        raise SystemExit(2) from e
    launch(cfg)


if __name__ == "__main__":
    main()
