"""Shared test fixtures: the shared data folder (../shared/data from the project root).

The tiny UNet, its config and saved tiny priors that many tests build are in tests/tiny.py
(plain functions: module-scoped fixtures and helpers call them with their own overrides)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip naming what is missing (users may have only the project)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def golden(shared_data):
    """Loader for ../shared/data/golden/<name>.pt (skips when the file is absent)."""
    import torch

    def load(name: str):
        path = shared_data / "golden" / name
        if not path.is_file():
            pytest.skip(f"golden file {path} not found")
        return torch.load(path, weights_only=True)

    return load


@pytest.fixture
def cfg_train(tmp_path):
    """``cfg_train(*overrides, run="run")``: the tiny training run's config (tests/tiny.py's
    TINY_TRAIN and QUIET on 8x8 digits, its run folder ``tmp_path / run``) with ``overrides`` on
    top, composed as train.py composes it (the Lightning+Hydra template's ``cfg_train``)."""
    from tiny import QUIET, TINY_TRAIN

    from priorpaint.lightning.launch import compose_config

    def make(*overrides, run: str = "run"):
        return compose_config([*TINY_TRAIN, *QUIET, "data=digits", "data.image_size=8",
                               f"run_dir={tmp_path / run}", *overrides])

    return make


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and oversubscribed cores make them crawl."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
