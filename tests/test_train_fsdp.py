"""FSDP (FSDP2 through Lightning) on CPU, 2 processes over gloo — the code path of trainer=fsdp.

The network is really sharded, yet training equals one process with the global batch, the
whole EMA is identical on every rank, the checkpoint holds whole weights that ``load_prior``
reads, and resuming from it is exact.
"""

import pytest
import torch
from ranks import COMMON, assert_resumed_equals_straight, assert_same, run_ranks

from priorpaint.checkpoint import load_prior
from priorpaint.lightning.launch import compose_config, run_training


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_with_double_batch(tmp_path):
    ranks = run_ranks(tmp_path, [*COMMON, "trainer=fsdp_sim", "data.batch_size=4",
                                 f"run_dir={tmp_path / 'fsdp'}"])
    assert [r["world"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [2, 2]
    assert all(r["sharded"] for r in ranks)
    assert_same(ranks[0]["model"], ranks[1]["model"], 0.0, "gathered weights across ranks")
    for ema0, ema1 in zip(ranks[0]["emas"], ranks[1]["emas"], strict=True):
        assert_same(ema0, ema1, 0.0, "EMA across ranks")

    single = run_training(compose_config([*COMMON, "data.batch_size=8",
                                          f"run_dir={tmp_path / 'single'}"])).module
    # Same tolerance and reason as the DDP test: reduce-scatter vs a 1-process sum.
    assert_same(single.model.state_dict(), ranks[0]["model"], 5e-5, "FSDP vs single process")
    for ema, saved in zip(single.emas, ranks[0]["emas"], strict=True):
        assert_same(ema.state_dict(), saved, 5e-5, "EMA: FSDP vs single process")
    # The EMA moved (a frozen EMA equals the initial weights, which the raw weights left).
    assert int(ranks[0]["emas"][0]["step"]) == 2
    assert_same(single.timestep_sampler.state_dict(), ranks[0]["sampler"], 1e-6, "sampler")


CHECKPOINTED = [o for o in COMMON if o != "~callbacks"] + [
    "trainer=fsdp_sim", "data.batch_size=4", "trainer.max_steps=4", "model.dropout=0.1",
    "module.grad_clip=0.5", "module.ema.update_every=2", "module.lr_schedule.warmup_steps=3",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    # one grid at the end: rank 0 samples with the whole EMA while rank 1 waits
    "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.respacing=4",
    "callbacks.sample_grid.num_samples=2", "callbacks.sample_grid.num_inpaint=2"]


@pytest.mark.slow
def test_fsdp_checkpoint_is_whole_and_resume_is_exact(tmp_path):
    straight_dir = tmp_path / "straight"
    straight = run_ranks(tmp_path, [*CHECKPOINTED, f"run_dir={straight_dir}"])
    assert (straight_dir / "samples.png").is_file() and (straight_dir / "inpainting.png").is_file()

    # One file with whole weights: load_prior rebuilds the EMA network, raw weights included.
    last = straight_dir / "checkpoints" / "last.ckpt"
    prior = load_prior(last)
    assert prior.weights == "ema"
    ema_weights = {k.removeprefix("ema_model."): v for k, v in straight[0]["emas"][0].items()
                   if k.startswith("ema_model.")}
    assert_same(prior.model.state_dict(), ema_weights, 0.0, "checkpoint EMA vs rank 0's")
    saved = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    raw = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
    assert_same(raw, straight[0]["model"], 0.0, "checkpoint raw weights vs gathered ones")

    resumed = run_ranks(tmp_path, [*CHECKPOINTED, f"run_dir={tmp_path / 'resumed'}",
                                   f"ckpt_path={straight_dir / 'checkpoints' / 'step0000002.ckpt'}"])
    assert len(resumed) == 2
    assert_resumed_equals_straight(resumed, straight, step=4)


def test_fsdp_without_ema_is_refused_before_training(tmp_path):
    """Sampling grids and checkpoints use the whole EMA; sharded raw weights cannot stand in."""
    from omegaconf import OmegaConf

    from priorpaint.lightning import DiffusionPriorModule

    cfg = compose_config(["experiment=none", "model=tiny", "data.image_size=8",
                          "module.ema.rates=''"])
    module_cfg = OmegaConf.to_container(cfg.module, resolve=True)
    module_cfg.pop("_target_")
    module = DiffusionPriorModule(**module_cfg)
    module._device_mesh = object()  # what ModelParallelStrategy sets before configure_model
    with pytest.raises(ValueError, match="module.ema.rates"):
        module.configure_model()
