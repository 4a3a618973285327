"""Training end to end on CPU: learning, EMA, checkpoint payload, exact resume, bad input."""

import lightning.pytorch as pl
import pytest
import torch
from tiny import TINY_TRAIN

from priorpaint.checkpoint import load_prior
from priorpaint.data import PriorDataModule
from priorpaint.lightning.launch import compose_config, run_training

TINY = [*TINY_TRAIN, "data=digits", "data.image_size=8"]


def _train(cfg_train, name, *overrides):
    return run_training(cfg_train(*overrides, run=name))


def _fixed_batch_loss(module, images, seed=0) -> float:
    """Mean hybrid loss at fixed t and noise (independent of the training stream)."""
    generator = torch.Generator().manual_seed(seed)
    steps = module.diffusion.num_timesteps
    t = torch.linspace(0, steps - 1, images.shape[0]).round().long()
    noise = torch.randn(images.shape, generator=generator)
    module.model.eval()
    with torch.no_grad():
        x_t = module.diffusion.q_sample(images, t, noise)
        losses = module.diffusion.training_losses(module(x_t, t), images, t, noise)
    return losses["loss"].mean().item()


@pytest.mark.slow
def test_learning_lowers_the_hybrid_loss_and_ema_lags(tmp_path, cfg_train):
    images = PriorDataModule("digits", image_size=8, channels=1).fixed_batch(64)
    start = _train(cfg_train, "start", "trainer.max_steps=1", "module.optimizer.lr=0",
                   "~callbacks")
    initial = _fixed_batch_loss(start.module, images)

    result = _train(cfg_train, "run", "diffusion.steps=200", "trainer.max_steps=300",
                    "data.batch_size=32", "module.optimizer.lr=2e-3", "module.ema.rates='0.99,0.999'",
                    "module.ema.power=1", "module.ema.inv_gamma=0.1",
                    "callbacks.model_checkpoint.every_n_train_steps=300",
                    "callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.respacing=10")
    module = result.module
    trained = _fixed_batch_loss(module, images)
    assert trained < 0.5 * initial, (initial, trained)

    # EMA: a smoothed copy of the trajectory — not the raw weights, closer to the start, and
    # the slower rate lags more.
    init = dict(start.module.model.named_parameters())
    raw = dict(module.model.named_parameters())
    fast, slow = (dict(e.ema_model.named_parameters()) for e in module.emas)

    def distance(a, b):
        return sum((a[k] - b[k]).pow(2).sum() for k in a).sqrt().item()

    assert distance(fast, raw) > 0 and distance(slow, raw) > distance(fast, raw)
    assert distance(slow, init) < distance(raw, init)

    # The Lightning checkpoint alone rebuilds the prior, with the first rate's EMA weights.
    prior = load_prior(result.last_checkpoint)
    assert prior.weights == "ema" and prior.image_size == (8, 8) and prior.channels == 1
    assert prior.diffusion.config == module.diffusion.config
    for key, value in prior.model.state_dict().items():
        assert torch.equal(value, module.emas[0].ema_model.state_dict()[key]), key
    assert prior.info["ema_rates"] == [0.99, 0.999] and prior.info["global_step"] == 300
    assert result.grids["samples"].is_file()


RESUME = ["diffusion.steps=8", "data.batch_size=16", "model.dropout=0.1",
          "module.timestep_sampler=loss-second-moment", "module.ema.rates='0.9,0.99'",
          "module.ema.update_every=2", "module.ema.update_after_step=3",
          "module.lr_schedule.warmup_steps=5", "module.lr_schedule.decay=cosine",
          "module.optimizer.lr=1e-3", "module.grad_clip=0.5", "trainer.deterministic=true",
          "callbacks.model_checkpoint.every_n_train_steps=12", "~callbacks.sample_grid",
          "trainer.max_steps=24"]


class StopAtStep(pl.Callback):
    """Ends fit after ``step`` optimizer steps, like a pre-empted job (max_steps unchanged)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.slow
def test_resume_is_exact(tmp_path, cfg_train):
    """24 steps straight == 12 steps (pre-empted), then resumed from the step-12 checkpoint."""
    straight = _train(cfg_train, "straight", *RESUME).module
    first = _train(cfg_train, "first", *RESUME, "+callbacks.stop._target_=test_train.StopAtStep",
                   "+callbacks.stop.step=12")
    assert first.trainer.global_step == 12
    assert first.module.timestep_sampler.warmed_up  # the history matters from here on
    resumed = _train(cfg_train, "first", *RESUME,
                     f"ckpt_path={first.run_dir / 'checkpoints' / 'step0000012.ckpt'}").module
    assert resumed.global_step == straight.global_step == 24

    def same(a: torch.nn.Module, b: torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.allclose(sa[key].float(), sb[key].float(), atol=1e-6, rtol=0), key

    same(resumed.model, straight.model)
    for ema_resumed, ema_straight in zip(resumed.emas, straight.emas, strict=True):
        same(ema_resumed, ema_straight)  # weights and the step / initted counters
    assert int(resumed.emas[0].step) == 24
    history = resumed.timestep_sampler.state_dict(), straight.timestep_sampler.state_dict()
    assert torch.equal(history[0]["loss_counts"], history[1]["loss_counts"])
    assert torch.allclose(history[0]["loss_history"], history[1]["loss_history"])
    # ... and the resumed half really trained (it is not just the step-12 weights).
    assert not torch.allclose(first.module.model.out[2].weight, resumed.model.out[2].weight)


def test_bf16_mixed_step_keeps_float32_weights(tmp_path, cfg_train):
    result = _train(cfg_train, "bf16", "trainer.precision=bf16-mixed", "trainer.fast_dev_run=2",
                    "~callbacks.sample_grid")
    module = result.module
    assert all(p.dtype == torch.float32 for p in module.model.parameters())
    assert all(torch.isfinite(p).all() for p in module.emas[0].ema_model.parameters())


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_half_true_precision_is_refused_before_a_step(tmp_path, precision, cfg_train):
    """*-true would cast the EMA networks and AdamW's state to half precision (a frozen EMA)."""
    with pytest.raises(ValueError, match=rf"trainer.precision={precision} .*EMA.*bf16-mixed"):
        _train(cfg_train, precision, f"trainer.precision={precision}", "trainer.max_steps=1",
               "~callbacks")


def test_non_finite_gradients_skip_the_step(cfg_train):
    cfg = cfg_train("trainer.max_steps=1", "~callbacks")
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg.module, resolve=True)
    module = get_class(kwargs.pop("_target_"))(**kwargs)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in module.emas[0].ema_model.state_dict().items()}

    original = module.training_step

    def poisoned(batch, batch_idx):
        return original(batch, batch_idx) * float("nan")

    module.training_step = poisoned
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False)
    datamodule = instantiate(cfg.data)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1 and module._skipped_steps == 1
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert int(module.emas[0].step) == 0  # no EMA update after a skipped step
    assert all(torch.equal(v, ema_before[k])
               for k, v in module.emas[0].ema_model.state_dict().items())


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_before_training(tmp_path, cfg_train):
    with pytest.raises(ValueError, match=r"9 x 9 does not fit this UNet.*multiples of 2"):
        _train(cfg_train, "size", "data.image_size=9", "trainer.max_steps=1")
    with pytest.raises(ValueError, match="data.channels=1 but the model has 3"):
        _train(cfg_train, "channels", "module.channels=3", "trainer.max_steps=1")
    with pytest.raises(ValueError, match="model.in_channels=3 does not fit data.channels=1"):
        _train(cfg_train, "in", "+model.in_channels=3", "trainer.max_steps=1")
    with pytest.raises(ValueError, match="holds no images"):
        (tmp_path / "empty").mkdir()
        _train(cfg_train, "folder", "data=folder", f"data.path={tmp_path / 'empty'}")
    with pytest.raises(Exception, match="Could not override 'data.imagesize'"):
        compose_config(["data.imagesize=8"])
    with pytest.raises(ValueError, match="decay 'cosine' needs trainer.max_steps"):
        _train(cfg_train, "decay", "module.lr_schedule.decay=cosine", "trainer.max_steps=-1",
               "~callbacks")


def test_every_config_composes_and_builds(tmp_path):
    """Each model/diffusion/experiment option composes; small ones build a module."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    for overrides in (["experiment=mnist32"], ["model=cifar32", "data.image_size=32"],
                      ["diffusion=cosine4000"], ["diffusion=linear4000"],
                      ["model=im64", "data.image_size=64"], ["model=adm256"],
                      ["trainer=gpu"], ["trainer=ddp"], ["trainer=ddp_sim"], ["logger=csv"]):
        cfg = compose_config([*overrides, f"run_dir={tmp_path}"])
        net = OmegaConf.to_container(cfg.module, resolve=True)["net"]
        if net["model_channels"] <= 128 and cfg.data.image_size <= 32:
            kwargs = OmegaConf.to_container(cfg.module, resolve=True)
            module = get_class(kwargs.pop("_target_"))(**kwargs)
            assert module.model.config["model_channels"] == net["model_channels"]
    adm = compose_config(["model=adm256"]).model
    assert list(adm.channel_mult) == [1, 1, 2, 2, 4, 4] and adm.num_head_channels == 64
    assert list(adm.attention_resolutions) == [8, 16, 32] and adm.resblock_updown


def test_train_yaml_is_the_one_home_of_the_modules_defaults():
    """configs/train.yaml's ``module:`` block is where training defaults are written: the
    module takes no default of its own (only ``data_info`` and ``values``, what the data module
    found, may be left out), so the YAML and
    the code cannot drift apart, and a block that lacks a key is refused naming it."""
    import inspect

    from omegaconf import OmegaConf

    from priorpaint.lightning import DiffusionPriorModule

    signature = inspect.signature(DiffusionPriorModule.__init__)
    with_defaults = [name for name, p in signature.parameters.items()
                     if p.default is not inspect.Parameter.empty]
    assert with_defaults == ["data_info", "values"]
    kwargs = OmegaConf.to_container(compose_config([*TINY]).module, resolve=True)
    kwargs.pop("_target_")
    assert set(kwargs) == set(signature.parameters) - {"self", "data_info", "values"}
    DiffusionPriorModule(**kwargs)
    del kwargs["ema"]["power"]
    with pytest.raises(ValueError, match="module.ema lacks power"):
        DiffusionPriorModule(**kwargs)
