"""Sample grids during training: EMA samples and inpaintings of a fixed batch with a fixed mask.

Seeds, validation images and mask are fixed for the whole run, so successive grids show the
prior improving rather than new random draws. Sampling goes through ``priorpaint.sampling``
(ancestral samples; RePaint with short jumps), respaced (50 steps by default) to keep a grid
cheap next to the training it interrupts; it runs on rank 0 only.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from ..atomic import atomic_write
from ..imageio import preview_channels
from ..masks import make_mask
from ..sampling import generate, inpaint
from ..seeding import Stream, stream_seed
from .preemption import PreemptionCheckpoint
from .step_gate import OptimizerStepGate

__all__ = ["SampleGridCallback", "StepCheckpoint", "ShardStatsLogger"]


class SampleGridCallback(pl.Callback):
    """Every ``every_n_steps`` (and at the end of fit) log and save two grids.

    - ``samples.png``: ``num_samples`` images from pure noise with the EMA weights;
    - ``inpainting.png``: rows of originals, masked inputs (hole grey) and RePaint
      inpaintings of ``num_inpaint`` fixed images with one fixed ``priorpaint.masks`` mask.

    Args:
        every_n_steps: interval in optimizer steps (0 disables the periodic grids).
        respacing: sampling steps (a ``GaussianDiffusion.respace`` spec).
        mask: a ``make_mask`` kind (``box`` = centred half-side hole, ``genhalf``, ``thick``...);
            mask_seed: its seed (None: the kind's fixed variant).
        jump_length, jump_n_sample: RePaint resampling of the inpainting (1 = none).
        ema_index: which EMA rate samples (its raw network when the run has no EMA).
        seed: seed of the grid noise.
        dirpath: where the PNGs go (default: the trainer's ``default_root_dir``).
    """

    def __init__(self, every_n_steps: int = 500, num_samples: int = 16, num_inpaint: int = 8,
                 respacing: str = "50", mask: str = "box", mask_seed: int | None = None,
                 jump_length: int = 5, jump_n_sample: int = 2, ema_index: int = 0,
                 seed: int = 0, dirpath: str | None = None):
        self.every_n_steps = int(every_n_steps)
        self.num_samples, self.num_inpaint = int(num_samples), int(num_inpaint)
        self.respacing, self.ema_index, self.seed = str(respacing), int(ema_index), int(seed)
        self.mask_kind, self.mask_seed = mask, mask_seed
        self.jump_length, self.jump_n_sample = int(jump_length), int(jump_n_sample)
        self.dirpath = dirpath
        self._images: torch.Tensor | None = None
        self._last_step = -1
        self.last_paths: dict[str, Path] = {}
        self._gate = OptimizerStepGate()

    def on_train_start(self, trainer, pl_module) -> None:
        self._gate.reset(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self._gate.stepped(trainer):   # a micro-batch of an accumulated step
            return
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        # A preempted run draws nothing more: its warning gives the job a minute or two before
        # the kill, and the resumed run draws this grid when it gets there.
        if trainer.global_step != self._last_step and not _preempted(trainer):
            self._draw(trainer, pl_module)

    @rank_zero_only
    def _draw(self, trainer, pl_module) -> None:
        started = time.perf_counter()
        self._last_step = trainer.global_step
        network = pl_module.ema_model(self.ema_index)
        spec = self.respacing
        if spec.isdigit() and int(spec) > pl_module.diffusion.num_timesteps:
            spec = str(pl_module.diffusion.num_timesteps)   # a short chain: sample all of it
        diffusion = pl_module.diffusion.respace(spec)
        shape = (self.num_samples, pl_module.channels, *pl_module.image_size)
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                samples = generate(network, diffusion, shape, sampler="ddpm",
                                   seed=stream_seed(Stream.GRID, self.seed, 0),
                                   device=pl_module.device)
                grids = {"samples": make_grid(_to01(samples), nrow=_columns(self.num_samples))}
                images = self._validation_images(trainer, pl_module)
                if images is not None:
                    mask = make_mask(self.mask_kind, pl_module.image_size, self.mask_seed)
                    mask = mask.to(images.device).expand(images.shape[0], 1, -1, -1)
                    jump = min(self.jump_length, max(1, diffusion.num_timesteps // 2))
                    filled = inpaint(network, diffusion, images, mask, sampler="repaint",
                                     jump_length=jump, jump_n_sample=self.jump_n_sample,
                                     seed=stream_seed(Stream.GRID, self.seed, 1))
                    masked = images * mask  # the hole shows as mid-grey (0 in [-1, 1])
                    rows = torch.cat([images, masked, filled]).float()
                    grids["inpainting"] = make_grid(_to01(rows), nrow=images.shape[0])
        finally:
            network.train(was_training)
        self._publish(trainer, grids)
        pl_module.exclude_time(time.perf_counter() - started)

    def _validation_images(self, trainer, pl_module) -> torch.Tensor | None:
        if self._images is None:
            datamodule = trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "fixed_batch") \
                    or self.num_inpaint < 1:
                return None
            self._images = datamodule.fixed_batch(self.num_inpaint)
        return self._images.to(pl_module.device)

    def _publish(self, trainer, grids: dict[str, torch.Tensor]) -> None:
        folder = Path(self.dirpath or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            path = folder / f"{name}.png"
            cpu = grid.cpu()
            atomic_write(path, lambda handle, cpu=cpu: save_image(cpu, handle, format="png"))
            self.last_paths[name] = path
            for logger in trainer.loggers:
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_image"):
                    experiment.add_image(f"grids/{name}", grid.cpu(), trainer.global_step)


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves the final step when max_steps is no multiple of the interval.

    With a never-ending data stream there is no epoch end to trigger a save, so without this
    the last ``max_steps % every_n_train_steps`` steps would be lost.

    No checkpoint is written right after a skipped step (non-finite loss or gradient norm, see
    ``nonfinite.py``): ``last.ckpt`` stays the state after the last step that was taken, which
    is what a diverging run's error message tells the user to resume from.
    """

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        module = trainer.lightning_module
        return super()._should_skip_saving_checkpoint(trainer) \
            or bool(getattr(module, "last_step_skipped", False))

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)


def _preempted(trainer) -> bool:
    """Whether a :class:`PreemptionCheckpoint` stopped this run (its checkpoint is saved)."""
    return any(isinstance(c, PreemptionCheckpoint) and c.preempted_at is not None
               for c in trainer.callbacks)


def _to01(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to look at: N-channel data shows its first channel(s)
    (``imageio.preview_channels``: 2 -> the first, 4+ -> the first three)."""
    images = images[:, :preview_channels(images.shape[1])]
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()


def _columns(count: int) -> int:
    return max(1, int(round(count ** 0.5)))


class ShardStatsLogger(pl.Callback):
    """Log the shard stream's counters (samples read, decode and read errors, samples lost).

    A corrupt image or a truncated shard is skipped by the stream so training goes on; these
    counters are how the loss shows up in TensorBoard instead of passing silently.
    """

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = int(every_n_steps)
        self._gate = OptimizerStepGate()

    def on_train_start(self, trainer, pl_module) -> None:
        self._gate.reset(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._gate.stepped(trainer):   # a micro-batch of an accumulated step
            return
        stats = getattr(trainer.datamodule, "shard_stats", None) if trainer.datamodule else None
        if stats is None or self.every_n_steps <= 0 or trainer.global_step % self.every_n_steps:
            return
        counts = {f"data/{name}": float(value) for name, value in stats.as_dict().items()}
        # every rank streams its own shards: the logged counts are totals over ranks
        pl_module.log_dict(counts, on_step=True, on_epoch=False, reduce_fx="sum",
                           sync_dist=True)
