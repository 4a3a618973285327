"""Build everything from a composed Hydra config and fit: what ``train.py`` runs.

Order matters for error messages: the data module is built and set up first (an empty
folder or a missing MNIST file fails in a second), then the module (bad UNet sizes,
unknown diffusion keys), then their geometry is compared, and only then does Lightning
start any process or step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["run_training", "compose_config", "TrainResult", "check_geometry", "CONFIG_DIR"]

# configs/ at the repository root (src/priorpaint/lightning/launch.py -> ../../../configs).
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train",
                   config_dir: str | Path | None = None) -> DictConfig:
    """The config ``train.py`` would run with these command-line overrides (tests, notebooks):
    Hydra's own composition, train.yaml's default preset (``experiment: quickstart``) included."""
    from hydra import compose, initialize_config_dir

    folder = Path(config_dir or CONFIG_DIR).resolve()
    if not (folder / f"{config_name}.yaml").is_file():
        raise FileNotFoundError(f"no {config_name}.yaml in {folder}; pass config_dir=")
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@dataclass
class TrainResult:
    """Where a finished run left its outputs (paths may be None when disabled)."""

    run_dir: Path
    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    last_checkpoint: Path | None = None
    tensorboard_dir: Path | None = None
    grids: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"run directory : {self.run_dir}",
                 f"checkpoint    : {self.last_checkpoint or '(checkpointing disabled)'}",
                 f"tensorboard   : {self.tensorboard_dir or '(no TensorBoard logger)'}"]
        if self.tensorboard_dir:
            lines[-1] += f"   (tensorboard --logdir {self.tensorboard_dir})"
        for name, path in self.grids.items():
            lines.append(f"{name:<14}: {path}")
        return "\n".join(lines)


def check_geometry(datamodule, module) -> None:
    """Data and model must agree on channels and image size before any step runs."""
    problems = []
    if datamodule.channels != module.channels:
        problems.append(f"data.channels={datamodule.channels} but the model has "
                        f"{module.channels} input channels")
    if tuple(datamodule.image_size) != tuple(module.image_size):
        problems.append(f"data.image_size={list(datamodule.image_size)} but the model is built "
                        f"for {list(module.image_size)}")
    if problems:
        raise ValueError("; ".join(problems) + " (module.image_size/channels follow data.* by "
                         "default: do not override them separately)")


def _single_log_stream() -> None:
    """Under Hydra, let its handlers (console + run_dir/train.log) print Lightning's messages
    once, instead of Lightning's own stderr handler printing them a second time."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        logger = logging.getLogger("lightning")
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)


def _share_cores(trainer: pl.Trainer, explicit: bool) -> None:
    """CPU processes of one machine split its cores: two ranks with all cores each make OpenMP
    threads wait on descheduled partners, which can slow every op tenfold."""
    from lightning.pytorch.accelerators import CPUAccelerator

    if not explicit and isinstance(trainer.accelerator, CPUAccelerator) \
            and trainer.num_devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // trainer.num_devices))


def config_error(error: Exception, key: str) -> Exception:
    """A config the user wrote wrong as one UserError line; anything else unchanged (a bug).

    Hydra wraps what a ``_target_`` raises in an InstantiationException: its cause decides.
    priorpaint's own ValueErrors already name the key and the fix; an unknown class or keyword
    (ImportError, AttributeError, TypeError) and Lightning's MisconfigurationException are
    named with Hydra's message and the config key.
    """
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from ..cli import USER_ERRORS, UserError, one_line

    cause = error.__cause__ if isinstance(error, InstantiationException) else error
    if isinstance(cause, USER_ERRORS) and not isinstance(cause, UnicodeError):
        return UserError(one_line(cause))
    if isinstance(error, InstantiationException) or isinstance(cause, MisconfigurationException):
        if cause is None or isinstance(cause, (ImportError, AttributeError, TypeError,
                                               MisconfigurationException)):
            text = one_line(error)
            if cause is not None and str(cause) not in text:
                text += f": {one_line(cause)}"
            return UserError(f"{key}: {text}" if "full_key" not in text else text)
    return error


def _build(node, key: str, **kwargs):
    """``instantiate(node)`` whose config mistakes end in one line naming ``key``."""
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, MisconfigurationException) as error:
        converted = config_error(error, key)
        if converted is error:
            raise
        raise converted from None


def _instantiate_group(group: DictConfig | None, name: str) -> list:
    if not group:
        return []
    return [_build(node, f"{name}.{key}") for key, node in group.items()
            if isinstance(node, DictConfig) and "_target_" in node]


def run_training(cfg: DictConfig) -> TrainResult:
    """Fit a prior as ``cfg`` says; returns where the checkpoint, logs and grids are.

    ``cfg.num_threads`` (if set) is torch's intra-op thread count for this run only.
    """
    threads = torch.get_num_threads()
    try:
        if cfg.get("num_threads"):
            torch.set_num_threads(int(cfg.num_threads))
        return _fit(cfg)
    finally:
        torch.set_num_threads(threads)


def _check_command_line(cfg: DictConfig) -> None:
    """Missing values and paths that do not exist, named before anything is built."""
    from ..cli import UserError, check_missing_keys

    check_missing_keys(cfg)
    what = {"ckpt_path": "a run's checkpoints/last.ckpt to resume, or leave ckpt_path out",
            "init_from": "a priorpaint checkpoint (train.py's or priorpaint.convert's output)"}
    for key, hint in what.items():
        path = cfg.get(key)
        special = str(path) in ("last", "hpc", "best", "registry") or "://" in str(path)
        if path and not special and not Path(path).exists():
            raise UserError(f"{key}={path} does not exist: give {hint}")


def _check_resume(cfg: DictConfig, module) -> None:
    """``ckpt_path=`` needs the run's own network: name the settings that differ (and the run's
    recorded arguments) instead of a page of size mismatches from load_state_dict."""
    path = Path(str(cfg.get("ckpt_path") or ""))
    if not cfg.get("ckpt_path") or not path.is_file():
        return
    from ..checkpoint import load_torch_file
    from ..cli import UserError

    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    saved = load_torch_file(path, mmap=True)
    theirs = (saved.get("priorpaint") or {}).get("model_config") if isinstance(saved, dict) else None
    if not theirs:
        return   # not one of ours: Lightning says what it can
    ours = dict(module.model.config)
    differ = [f"{k}={plain(theirs.get(k))} (this command: {plain(ours.get(k))})"
              for k in sorted(set(theirs) | set(ours)) if plain(theirs.get(k)) != plain(ours.get(k))]
    if differ:
        record = path.parent.parent / ".hydra" / "overrides.yaml"
        args = " ".join(OmegaConf.load(record)) if record.is_file() else ""
        raise UserError(f"ckpt_path={path} was trained with another network: {'; '.join(differ)}; "
                        "resume with the run's own arguments"
                        + (f" ({record}: {args})" if args else ""))


def _follow_hydra_output_dir(cfg: DictConfig) -> None:
    """One output folder for both spellings: ``run_dir=X`` sets ``hydra.run.dir`` (train.yaml
    says ``hydra.run.dir: ${run_dir}``), and ``hydra.run.dir=X`` (or a multirun's job folder)
    is where Hydra wrote its .hydra record, so run_dir takes that value and every
    ``${run_dir}`` (checkpoints, TensorBoard, grids) follows it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():   # compose API (tests, notebooks): run_dir as given
        return
    output = HydraConfig.get().runtime.output_dir
    if output and Path(output).resolve() != Path(cfg.run_dir).resolve():
        cfg.run_dir = output


def _fit(cfg: DictConfig) -> TrainResult:
    _check_command_line(cfg)
    _follow_hydra_output_dir(cfg)
    _single_log_stream()
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)

    datamodule = _build(cfg.data, "data")
    datamodule.setup("fit")
    module_cfg = OmegaConf.to_container(cfg.module, resolve=True)
    module_cfg["data_info"] = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True)
                               .items() if not k.startswith("_")}
    module_cfg["values"] = datamodule.value_rule.as_dict()   # data.range, resolved
    prior = _init_prior(cfg, module_cfg)
    # Plain containers (not DictConfig) so the checkpoint loads with torch.load(weights_only=True).
    module = get_class(module_cfg.pop("_target_"))(**module_cfg)
    check_geometry(datamodule, module)
    _check_resume(cfg, module)
    if prior is not None:
        _load_init_weights(module, prior, cfg.init_from)

    callbacks = _instantiate_group(cfg.get("callbacks"), "callbacks")
    loggers = _instantiate_group(cfg.get("logger"), "logger")
    from .preemption import trainer_plugins  # atomic checkpoints; no requeue inside a signal

    trainer = _build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
                     plugins=trainer_plugins())
    _share_cores(trainer, explicit=bool(cfg.get("num_threads")))
    if trainer.is_global_zero:
        print(f"[priorpaint] data: {datamodule.describe()}; network: "
              f"{sum(p.numel() for p in module.model.parameters()) / 1e6:.2f} M parameters; "
              f"T={module.diffusion.num_timesteps}; run dir: {run_dir}", flush=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return _result(run_dir, trainer, module, datamodule)


def _init_prior(cfg: DictConfig, module_cfg: dict):
    """``init_from=ckpt``: fine-tune a prior (e.g. one converted from guided-diffusion).

    The network and diffusion are the checkpoint's (so model=/diffusion= choices are replaced,
    with a note); optimizer, step and EMA start fresh. ``ckpt_path=`` is different: it resumes
    a priorpaint training run exactly, optimizer and step included.
    """
    if not cfg.get("init_from"):
        return None
    if cfg.get("ckpt_path"):
        raise ValueError("give init_from= (start a new run from a prior's weights) or ckpt_path= "
                         "(resume a run exactly), not both")
    from ..checkpoint import load_prior

    prior = load_prior(cfg.init_from, use_ema=bool(cfg.get("init_from_ema", True)))
    if prior.channels != int(cfg.data.channels):
        raise ValueError(f"init_from={cfg.init_from} is a {prior.channels}-channel prior but "
                         f"data.channels={cfg.data.channels}: set data.channels={prior.channels}")
    net = dict(prior.model.config)
    net.pop("in_channels", None), net.pop("out_channels", None)
    module_cfg["net"] = net
    module_cfg["diffusion"] = {k: v for k, v in prior.info["diffusion_config"].items()
                               if k != "respacing"}
    print(f"[priorpaint] init_from={cfg.init_from}: network and diffusion taken from the "
          f"checkpoint ({prior.weights} weights; model=/diffusion= settings are not used)",
          flush=True)
    return prior


def _load_init_weights(module, prior, path) -> None:
    if tuple(prior.image_size) != tuple(module.image_size):
        print(f"[priorpaint] note: {path} was trained on {prior.image_size[0]}x"
              f"{prior.image_size[1]} images, this run uses {module.image_size[0]}x"
              f"{module.image_size[1]}", flush=True)
    module.model.load_state_dict(prior.model.state_dict())
    for ema in module.emas:   # EMAs start from the loaded weights, not the random init
        ema.copy_params_from_model_to_ema()


def _result(run_dir, trainer, module, datamodule) -> TrainResult:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from .callbacks import SampleGridCallback

    result = TrainResult(run_dir=run_dir, trainer=trainer, module=module, datamodule=datamodule)
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            last = Path(callback.dirpath) / "last.ckpt" if callback.dirpath else None
            result.last_checkpoint = last if last and last.is_file() else \
                (Path(callback.best_model_path) if callback.best_model_path else None)
        if isinstance(callback, SampleGridCallback):
            result.grids.update(callback.last_paths)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            result.tensorboard_dir = Path(logger.log_dir)
    return result
