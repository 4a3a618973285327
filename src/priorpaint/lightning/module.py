"""The LightningModule: UNet + GaussianDiffusion + EMA, trained on the improved-DDPM loss.

What it adds to a plain training step, and why:

- t and ε come from per-example seeds (``training_noise.py``), not from a global stream, so resuming
  and DDP reproduce a straight single-process run.
- The network may run in bf16/fp16 (Lightning's ``precision``), but its output is cast to
  float32 and the diffusion maths runs outside autocast: the VLB term is a KL of nearly
  equal Gaussians and does not survive half precision.
- A step whose loss or gradient norm is not finite is skipped (gradients dropped before AdamW
  sees them), logged and counted; the EMA is updated only after steps that were taken. What
  happens after many in a row, and to checkpoints, is ``nonfinite.NonFinitePolicy``'s.
- The checkpoint carries ``checkpoint["priorpaint"]`` (configs, geometry, EMA weights) so it
  alone rebuilds the prior, and the timestep sampler's loss history so resume is exact.
"""

from __future__ import annotations

import logging
import math
import time

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch.distributed.tensor import DTensor

from ..checkpoint import prior_payload
from ..data.datamodule import images_of
from ..data.transforms import pair
from ..diffusion import GaussianDiffusion, create_timestep_sampler
from ..diffusion.loss_weights import mse_weight_table
from ..imageio import ValueRule
from ..seeding import Stream, stream_seed
from .ema import build_emas, parse_rates
from .lr_schedule import lr_lambda
from .nonfinite import check_optimizer_config
from .posthoc_ema import PowerEMAs
from .stats import QuartileMeans
from .step_gate import OptimizerStepGate
from .training_noise import draw_t_and_noise, example_seeds

__all__ = ["DiffusionPriorModule", "check_precision"]

log = logging.getLogger(__name__)

# The keys each block of ``module:`` must hold. Their values live in configs/train.yaml (and
# the presets) only: the module has no defaults of its own, so the YAML is the one place a
# training default is written (a Python caller composes it: ``compose_config([...]).module``).
EMA_KEYS = ("rates", "update_every", "update_after_step", "inv_gamma", "power")
LR_SCHEDULE_KEYS = ("warmup_steps", "decay", "min_ratio")
LOSS_WEIGHT_KEYS = ("gamma", "k", "sigma_data")
POSTHOC_EMA_KEYS = ("sigma_rels", "snapshot_every", "dir")


class DiffusionPriorModule(pl.LightningModule):
    """Trains an unconditional improved-DDPM prior.

    Args:
        net: UNet keyword arguments (``in_channels``/``out_channels`` are derived from
            ``channels`` and the diffusion; if given they must agree).
        diffusion: ``GaussianDiffusion.from_config`` dict (schedule, steps, mean_type,
            var_type, loss — ``hybrid`` by default).
        image_size: int or [H, W] of training images; channels: 1 or 3.
        optimizer: ``_partial_`` config of a torch optimizer (train.yaml: AdamW).
        lr_schedule: ``warmup_steps``, ``decay`` (none|cosine|linear), ``min_ratio``.
        grad_clip: max global gradient norm (None or 0, train.yaml's and the references': no
            clipping; the norm is logged either way).
        ema: ``rates`` ("0.9999,0.999"), ``update_every``, ``update_after_step``,
            ``inv_gamma``, ``power`` (ema-pytorch's warm-up: the decay after n updates is
            min(rate, 1 - (1 + n / inv_gamma) ** -power), logged as ``train/ema_decay``).
        loss_weight: weight of the MSE term over t: ``none`` (L_simple as the references),
            ``min_snr``, ``p2`` or ``soft_min_snr`` (``diffusion.loss_weights``; L_vlb keeps
            its weight). loss_weight_params: ``gamma``, ``k``, ``sigma_data`` (None: the
            paper's value).
        posthoc_ema: ``sigma_rels`` (None: off; e.g. [0.05, 0.10]), ``snapshot_every``, ``dir``:
            power-function EMAs saved for ``python -m priorpaint.ema_posthoc`` (EDM2); they
            run beside ``ema``, which sampling keeps using.
        timestep_sampler: ``uniform``, ``loss-second-moment`` or ``log-snr-normal`` (reweighted:
            the objective stays the uniform one). log_snr_normal: its ``mean``, ``std`` (of log
            SNR) and ``uniform_prob``.
        seed: base of every per-example seed.
        log_every_n_steps: interval of loss / lr / grad-norm / throughput logging.
        data_info: stored in the checkpoint payload under ``"data"`` (for provenance).
        values: the data's value rule (``ValueRule.as_dict()``, resolved by the datamodule from
            ``data.range``): stored as the payload's ``normalization`` so sampling maps back.

    Every argument but ``data_info`` and ``values`` (what the data module found, not
    settings) is required: their defaults are configs/train.yaml's ``module:`` block, written
    nowhere else (``compose_config(overrides).module`` gives them to a Python caller).
    """

    def __init__(self, net: dict, diffusion: dict, image_size, channels: int, *,
                 optimizer: dict, lr_schedule: dict, grad_clip: float | None, ema: dict,
                 posthoc_ema: dict, loss_weight: str, loss_weight_params: dict,
                 timestep_sampler: str, log_snr_normal: dict, seed: int, log_every_n_steps: int,
                 data_info: dict | None = None, values: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        from ..models import build_network

        self.image_size = pair(image_size)
        self.channels = int(channels)
        self.diffusion = GaussianDiffusion.from_config(dict(diffusion))
        # an ADM UNet, or (init_from a diffusers prior) the adapter its stored config names
        self.model = build_network(_network_kwargs(dict(net), self.channels, self.diffusion))
        self.model.check_input_size(*self.image_size)
        self.timestep_sampler = create_timestep_sampler(timestep_sampler, self.diffusion,
                                                        dict(log_snr_normal))
        self._learns_from_losses = self.timestep_sampler.learns_from_losses
        self.loss_weight = str(loss_weight)
        table = mse_weight_table(self.loss_weight, self.diffusion.alphas_cumprod,
                                 self.diffusion.mean_type,
                                 **_complete(loss_weight_params, LOSS_WEIGHT_KEYS,
                                             "module.loss_weight_params"))
        if table is not None and self.diffusion.loss in ("kl", "rescaled_kl"):
            raise ValueError(f"module.loss_weight={self.loss_weight} weights the MSE term, which "
                             f"diffusion.loss={self.diffusion.loss} does not optimise: use "
                             f"diffusion.loss=hybrid or mse, or module.loss_weight=none")
        # per-t weight of the MSE term (float32; None: the unweighted loss, bit for bit); a
        # buffer, so it moves with the module once instead of being copied every step
        self.register_buffer("_mse_weights", None if table is None else table.to(torch.float32),
                             persistent=False)
        ema_cfg = _complete(ema, EMA_KEYS, "module.ema")
        self.ema_rates = parse_rates(ema_cfg.pop("rates"))
        self.emas = build_emas(self.model, self.ema_rates, **ema_cfg)
        posthoc = _complete(posthoc_ema, POSTHOC_EMA_KEYS, "module.posthoc_ema")
        self.posthoc_emas = None if not posthoc["sigma_rels"] else PowerEMAs(
            self.model, posthoc["sigma_rels"], posthoc["snapshot_every"], posthoc["dir"])
        self.optimizer_cfg = dict(optimizer)
        check_optimizer_config(self.optimizer_cfg, grad_clip)
        self.lr_schedule_cfg = _complete(lr_schedule, LR_SCHEDULE_KEYS, "module.lr_schedule")
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.seed, self.log_every_n_steps = int(seed), max(1, int(log_every_n_steps))
        self.data_info = dict(data_info or {})
        self.values = ValueRule.from_dict(values) if values else None
        self.stats = QuartileMeans(("loss", "mse", "vb"), self.diffusion.num_timesteps)
        self._grad_norms: list[torch.Tensor] = []
        self._skipped_steps = 0
        self._step_skipped = False
        self._losses_finite: torch.Tensor | None = None   # device-side, over a step's micro-batches
        self._clock: tuple[float, int] | None = None
        self._gate = OptimizerStepGate()

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            check_precision(str(self.trainer.precision))

    def configure_model(self) -> None:
        """Shard the network when the strategy hands us a device mesh (``trainer=fsdp``).

        Other strategies leave ``device_mesh`` unset and the network whole.
        """
        if self.device_mesh is None:
            return
        if self.posthoc_emas is not None:
            raise ValueError("module.posthoc_ema reads whole weights and does not support "
                             "trainer=fsdp yet: set module.posthoc_ema.sigma_rels=null")
        if not len(self.emas):
            raise ValueError("trainer=fsdp samples and saves the whole EMA network, the sharded "
                             "raw weights cannot be sampled on rank 0: set module.ema.rates "
                             "(e.g. '0.9999')")
        from .fsdp import shard_network  # (torch.distributed imports only when sharding)

        shard_network(self.model, self.device_mesh["data_parallel"])

    # ------------------------------------------------------------------ training
    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The raw network on this diffusion's indices ``t`` (mapped to the network's)."""
        return self.model(x_t, self.diffusion.model_timesteps(t))

    def _batch_number(self, batch_idx: int) -> int:
        accumulate = max(1, int(self.trainer.accumulate_grad_batches)) if self._trainer else 1
        return self.global_step * accumulate + batch_idx % accumulate

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout draws from the global generator: reseed it per (step, rank) for exact resume.
        torch.manual_seed(stream_seed(Stream.DROPOUT, self.seed, self._batch_number(batch_idx),
                                      self.global_rank))
        if self._clock is None:
            self._clock = (time.perf_counter(), self.global_step)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x0 = images_of(batch)
        self._check_batch(x0)
        x0 = x0.float()
        size = x0.shape[0]
        seeds = example_seeds(self.seed, self._batch_number(batch_idx), self.global_rank * size,
                              size)
        t, weights, noise = draw_t_and_noise(self.timestep_sampler, seeds, tuple(x0.shape[1:]),
                                             x0.device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        output = self(x_t, t)
        mse_weight = None if self._mse_weights is None else self._mse_weights[t]
        with torch.autocast(device_type=x0.device.type, enabled=False):
            losses = self.diffusion.training_losses(output.float(), x0, t, noise, mse_weight)
        if self._learns_from_losses:  # (skip the host sync of the boolean mask otherwise)
            per_example = losses["loss"].detach()
            finite = torch.isfinite(per_example)  # a NaN must not poison the loss history
            self.timestep_sampler.update_with_local_losses(t[finite], per_example[finite])
        self.stats.update(t, {k: v * weights for k, v in losses.items()})
        loss = (losses["loss"] * weights).mean()
        finite = torch.isfinite(loss.detach())   # read with the grad norm's check: no extra sync
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def _check_batch(self, x0: torch.Tensor) -> None:
        expected = (self.channels, *self.image_size)
        if x0.ndim != 4 or tuple(x0.shape[1:]) != expected:
            raise ValueError(f"training batch has shape {tuple(x0.shape)} but the model expects "
                             f"(B, {expected[0]}, {expected[1]}, {expected[2]}); make "
                             f"data.channels / data.image_size match the model's")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Clip to ``grad_clip``, record the pre-clip norm, and skip non-finite steps.

        The loss and the norm are judged in one device-side expression, so the skip costs the
        one host sync per optimizer step that the norm check always took.
        """
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = gradient_clip_val or self.grad_clip or math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if isinstance(norm, DTensor):  # FSDP: the norm over all shards, the same on every rank
            norm = norm.full_tensor()
        finite = torch.isfinite(norm)
        if self._losses_finite is not None:
            finite = finite & self._losses_finite.to(finite.device)
            self._losses_finite = None
        if not bool(finite):
            # Dropping the gradients makes AdamW (and GradScaler) leave weights and moments alone.
            for p in params:
                p.grad = None
            self._step_skipped = True
            self._skipped_steps += 1
            log.warning("step %d: non-finite loss or gradient norm (%s); optimizer step skipped "
                        "(%d skipped so far)", self.global_step, norm.item(), self._skipped_steps)
        else:
            self._grad_norms.append(norm.detach())

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        self._step_skipped = False
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if not self._step_skipped:
            for ema in self.emas:
                ema.update()
            if self.posthoc_emas is not None:
                self.posthoc_emas.update(self.model)
                if self.posthoc_emas.snapshot_due() and self.global_rank == 0:
                    # Lightning counts this step once it returns: +1 is the step the
                    # checkpoints of this moment are named by (step0000500.ckpt)
                    self.posthoc_emas.save_snapshot(self.global_step + 1)

    @property
    def last_step_skipped(self) -> bool:
        """Whether the latest optimizer step was skipped (non-finite loss or gradient norm)."""
        return self._step_skipped

    def on_train_start(self) -> None:
        self._gate.reset(self.trainer)

    def on_train_end(self) -> None:
        # the last update is a snapshot too, so post-hoc EMA can end where training did
        posthoc = self.posthoc_emas
        if posthoc is not None and posthoc.count > 0 and not posthoc.snapshot_due() \
                and self.global_rank == 0:
            posthoc.save_snapshot(self.global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not self._gate.stepped(self.trainer):   # a micro-batch of an accumulated step
            return
        step = self.global_step
        if step % self.log_every_n_steps == 0 and step > 0 and self._clock is not None:
            self._flush_logs(step)

    def _flush_logs(self, step: int) -> None:
        metrics = self.stats.compute()
        started, first_step = self._clock
        now = time.perf_counter()
        steps = step - first_step
        if steps > 0:
            images = steps * self._global_batch_size()
            metrics["train/img_per_sec"] = images / max(now - started, 1e-9)
        if self._grad_norms:
            metrics["train/grad_norm"] = torch.stack(self._grad_norms).mean().item()
            self._grad_norms.clear()
        metrics["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        if len(self.emas):   # the warm-up's rate now, not the nominal one (see ema.py)
            metrics["train/ema_decay"] = float(self.emas[0].get_current_decay())
        metrics["train/skipped_steps"] = float(self._skipped_steps)
        self._clock = (now, step)
        if self.global_rank == 0:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=step)

    def exclude_time(self, seconds: float) -> None:
        """Leave ``seconds`` (e.g. drawing sample grids) out of the throughput measurement."""
        if self._clock is not None:
            self._clock = (self._clock[0] + seconds, self._clock[1])

    def _global_batch_size(self) -> int:
        size = self.trainer.datamodule.batch_size if self.trainer.datamodule is not None else 0
        return size * self.trainer.world_size * max(1, int(self.trainer.accumulate_grad_batches))

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        optimizer = instantiate(self.optimizer_cfg)(self.model.parameters())
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 \
            else None
        schedule = lr_lambda(total_steps=total, **self.lr_schedule_cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoints
    def prior_payload(self) -> dict:
        """``checkpoint["priorpaint"]``: what sampling needs, with the first rate's EMA weights."""
        ema = self.emas[0].ema_model.state_dict() if len(self.emas) else None
        return prior_payload(self.model, self.diffusion, self.image_size, self.channels, ema,
                             extra={"ema_rates": self.ema_rates, "global_step": self.global_step,
                                    "data": self.data_info}, values=self.values)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["priorpaint"] = self.prior_payload()
        checkpoint["priorpaint_train"] = {
            "timestep_sampler": self.timestep_sampler.state_dict(),
            "skipped_steps": self._skipped_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        train_state = checkpoint.get("priorpaint_train", {})
        if "timestep_sampler" in train_state:
            self.timestep_sampler.load_state_dict(train_state["timestep_sampler"])
        self._skipped_steps = int(train_state.get("skipped_steps", 0))

    def ema_model(self, index: int = 0) -> torch.nn.Module:
        """The EMA network of rate ``ema_rates[index]`` (the raw network when there is none)."""
        return self.emas[index].ema_model if len(self.emas) else self.model


def check_precision(precision: str) -> None:
    """Refuse ``*-true`` half precision: it would store what must accumulate tiny steps in bf16.

    Lightning's ``bf16-true``/``16-true`` cast the whole module, EMA networks included, and the
    optimizer then keeps its moments and weights in that format. bf16 resolves 1 part in 256
    of a value: an EMA update of weight 1 - 0.9999 and most AdamW steps of lr=1e-4 round away,
    so the EMA freezes at its first copy and the weights barely move. ``bf16-mixed`` computes
    in bf16 and keeps float32 weights, optimizer state and EMA.
    """
    if precision.endswith("-true") and precision.split("-")[0] in ("16", "bf16"):
        half = "bf16" if precision.startswith("bf16") else "fp16"
        raise ValueError(
            f"trainer.precision={precision} stores the weights, AdamW's state and the EMA in "
            f"{half}, where EMA updates of weight 1-0.9999 and steps of lr~1e-4 round away (the EMA "
            f"freezes): use trainer.precision=bf16-mixed (half-precision compute, float32 "
            f"weights, optimizer state and EMA)")


def _network_kwargs(net: dict, channels: int, diffusion: GaussianDiffusion) -> dict:
    """UNet kwargs with in/out channels derived from the data and the variance type."""
    out_channels = channels * (2 if diffusion.learns_variance else 1)
    for key, want in (("in_channels", channels), ("out_channels", out_channels)):
        given = net.get(key)
        if given is not None and int(given) != want:
            raise ValueError(f"model.{key}={given} does not fit data.channels={channels} with "
                             f"var_type={diffusion.var_type!r} (needs {want}); drop model.{key}, "
                             f"it is derived")
        net[key] = want
    net.pop("_target_", None)
    for key in ("attention_resolutions", "channel_mult"):
        if isinstance(net.get(key), list):
            net[key] = tuple(net[key])
    return net


def _complete(block, keys: tuple[str, ...], name: str) -> dict:
    """``block`` as a dict holding every one of ``keys`` (a config that lacks one is refused
    naming it, rather than filled from a second copy of train.yaml's defaults)."""
    block = dict(block)
    missing = [key for key in keys if key not in block]
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}; configs/train.yaml's {name} "
                         f"block has every key (compose the config rather than write it by hand)")
    return block
