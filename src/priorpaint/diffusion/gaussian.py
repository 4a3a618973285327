"""The Gaussian diffusion of improved DDPM: forward process, true posterior, model posterior, losses.

Methods carry the paper's names (``q_sample``, ``q_posterior``, ``p_mean_variance``) so a reader
with Nichol & Dhariwal (2021) open finds every equation. Indices: ``t`` is 0-based into this
diffusion's own arrays (t = 0 produces x_1 in the paper's notation); a respaced diffusion has
its own, shorter arrays and maps its indices back to the original ones only for the network
(``model_timesteps``).

The network is not called here: every method takes its raw output. That keeps the maths pure
and lets training, sampling and likelihood evaluation each call the network their own way.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import coefficients
from .beta_schedules import betas_for, betas_for_kept_steps, space_timesteps
from .gaussian_likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl

__all__ = ["GaussianDiffusion", "MEAN_TYPES", "VAR_TYPES", "LOSSES"]

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
LOSSES = ("mse", "hybrid", "kl", "rescaled_kl")
_LN2 = math.log(2.0)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
    return value


class GaussianDiffusion:
    """Improved-DDPM diffusion over ``betas`` (float64, one per step).

    Args:
        betas: β_0..β_{T-1}, each in (0, 1) (β = 1 would leave ᾱ = 0 and x_0 unrecoverable).
        mean_type: what the network's first C channels predict: ``eps`` (noise), ``x0`` or ``v``.
        var_type: ``learned_range`` (network's last C channels v ∈ [-1, 1] interpolate the
            log-variance between β̃_t and β_t), ``learned`` (they are the log-variance),
            ``fixed_small`` (β̃_t) or ``fixed_large`` (β_t).
        loss: ``hybrid`` (L_simple + λ·L_vlb, λ = 0.001), ``mse`` (L_simple; with a learned
            variance the VLB term is added at λ = 1/T, as the reference does), ``kl`` (one
            VLB term) or ``rescaled_kl`` (T · that term, an estimate of the whole bound).
        timestep_map: original step index of each of these steps (respaced diffusions).
        rescale_timesteps: give the network t·1000/T (a float) instead of t, as
            improved-diffusion's command-line default did; only needed for its checkpoints.
        original_num_steps: T of the chain the network was trained on (defaults to
            len(betas); a respaced diffusion carries its parent's).
    """

    def __init__(self, betas, mean_type: str = "eps", var_type: str = "learned_range",
                 loss: str = "hybrid", timestep_map=None, rescale_timesteps: bool = False,
                 original_num_steps: int | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() == 0 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a non-empty sequence of values in (0, 1): "
                             f"got min {betas.min().item():g}, max {betas.max().item():g}")
        self.mean_type = _check_choice("mean_type", mean_type, MEAN_TYPES)
        self.var_type = _check_choice("var_type", var_type, VAR_TYPES)
        self.loss = _check_choice("loss", loss, LOSSES)
        self.num_timesteps = int(betas.numel())
        self.timestep_map = (torch.arange(self.num_timesteps) if timestep_map is None
                             else torch.as_tensor(timestep_map, dtype=torch.long).cpu())
        if self.timestep_map.shape != betas.shape:
            raise ValueError(f"timestep_map has {self.timestep_map.numel()} entries for "
                             f"{self.num_timesteps} steps")
        self.rescale_timesteps = bool(rescale_timesteps)
        self.original_num_steps = int(original_num_steps or self.num_timesteps)
        self._config: dict[str, Any] | None = None
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.alphas_cumprod_next = torch.cat([self.alphas_cumprod[1:], betas.new_zeros(1)])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.posterior_variance = coefficients.posterior_variance(
            self.alphas_cumprod, self.alphas_cumprod_prev, betas)
        # β̃_0 is exactly 0; its log is replaced by log β̃_1 so the log-variance stays finite.
        clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        self.posterior_log_variance_clipped = torch.log(clipped) if self.num_timesteps > 1 \
            else torch.log(betas)  # a one-step chain has no β̃_1; its posterior is x_0 itself
        self.posterior_mean_coef1, self.posterior_mean_coef2 = \
            coefficients.posterior_mean_coefficients(self.alphas_cumprod,
                                                     self.alphas_cumprod_prev, betas)
        self.log_betas = torch.log(betas)
        # fixed_large uses β_t, except at t = 0 where β̃_1 gives a better decoder likelihood.
        large = torch.cat([self.posterior_variance[1:2], betas[1:]]) \
            if self.num_timesteps > 1 else betas
        self.log_large_variance = torch.log(large)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GaussianDiffusion:
        """Build from ``{schedule, steps, mean_type, var_type, loss[, respacing]}`` (the checkpoint form).

        ``beta_start``/``beta_end`` parameterise the ranged schedules (see ``betas_for``);
        ``schedule: custom`` takes the β themselves from ``betas`` (a list of ``steps`` floats,
        e.g. a diffusers scheduler's ``trained_betas``).
        """
        known = {"schedule", "steps", "mean_type", "var_type", "loss", "respacing",
                 "rescale_timesteps", "beta_start", "beta_end", "betas"}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown diffusion config keys {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        for key in ("schedule", "steps"):
            if key not in config:
                raise ValueError(f"diffusion config needs {key!r} (got keys {sorted(config)})")
        steps = int(config["steps"])
        schedule_keys = {k: config[k] for k in ("beta_start", "beta_end", "betas")
                         if config.get(k) is not None}
        base = cls(_schedule_betas(config["schedule"], steps, schedule_keys),
                   mean_type=config.get("mean_type", "eps"),
                   var_type=config.get("var_type", "learned_range"),
                   loss=config.get("loss", "hybrid"),
                   rescale_timesteps=bool(config.get("rescale_timesteps", False)))
        base._config = {"schedule": config["schedule"], "steps": steps, **schedule_keys,
                        "mean_type": base.mean_type, "var_type": base.var_type,
                        "loss": base.loss}
        if base.rescale_timesteps:
            base._config["rescale_timesteps"] = True
        respacing = config.get("respacing")
        return base.respace(str(respacing)) if respacing not in (None, "", "none") else base

    @property
    def config(self) -> dict[str, Any]:
        """A plain dict that rebuilds this diffusion with :meth:`from_config`."""
        if self._config is None:
            raise ValueError("this diffusion was built from raw betas; build it with "
                             "GaussianDiffusion.from_config to get a storable config")
        return dict(self._config)

    @property
    def learns_variance(self) -> bool:
        """True when the network outputs 2C channels (mean part and variance part)."""
        return self.var_type in ("learned", "learned_range")

    def respace(self, spec: str | int) -> GaussianDiffusion:
        """A shorter chain over the steps ``space_timesteps(T, spec)`` keeps (sampling only).

        Its β are recomputed from ᾱ so each kept x_t has its original marginal; the network
        still receives original timestep indices through ``timestep_map``.
        """
        kept = space_timesteps(self.num_timesteps, spec)
        spaced = GaussianDiffusion(betas_for_kept_steps(self.alphas_cumprod, kept),
                                   mean_type=self.mean_type, var_type=self.var_type,
                                   loss=self.loss, timestep_map=self.timestep_map[kept],
                                   rescale_timesteps=self.rescale_timesteps,
                                   original_num_steps=self.original_num_steps)
        if self._config is not None and "respacing" not in self._config:
            spaced._config = {**self._config, "respacing": str(spec)}
        return spaced

    # ----------------------------------------------------------------- helpers
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        """A schedule array on ``device`` (copied once per device, float64 where supported)."""
        tables = self._device_cache.get(device)
        if tables is None:
            tables = self._device_cache[device] = {}
        if name not in tables:
            array = getattr(self, name)
            dtype = torch.float32 if device.type == "mps" else array.dtype
            tables[name] = array.to(device=device, dtype=dtype)
        return tables[name]

    def _coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``name[t]`` in the compute dtype of ``like``, shaped (B, 1, 1, ...) to broadcast."""
        values = self._table(name, like.device)[t.to(like.device)]
        return values.to(_compute_dtype(like)).reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """What the network receives for indices ``t`` of this chain: the original step index
        (int64), or with ``rescale_timesteps`` that index · 1000/T as float32."""
        original = self._table("timestep_map", t.device)[t]
        if self.rescale_timesteps:
            return original.to(torch.float32) * (1000.0 / self.original_num_steps)
        return original

    def model_output_channels(self, channels: int) -> int:
        """How many channels the network returns for ``channels``-channel images: the mean
        part, and as many variance values again when the variance is learned."""
        return 2 * channels if self.learns_variance else channels

    def check_network_channels(self, out_channels: int, channels: int, where) -> None:
        """Refuse a network whose output cannot fit this diffusion, naming ``where`` it came from.

        Loaders call it when a prior is put together, so a mismatched file fails there with
        the file's name instead of as a shape error at the first sampling step.
        """
        want = self.model_output_channels(channels)
        if int(out_channels) != want:
            raise ValueError(f"{where}: the network returns out_channels={out_channels}, but "
                             f"var_type={self.var_type!r} needs {want} for {channels}-channel "
                             f"images (out_channels = {'2 x ' if self.learns_variance else ''}"
                             f"in_channels)")

    def split_model_output(self, model_output: torch.Tensor, x_t: torch.Tensor):
        """(mean part, variance part or None) of the network's raw output, shapes checked."""
        channels = x_t.shape[1]
        expected = self.model_output_channels(channels)
        if model_output.shape[0] != x_t.shape[0] or model_output.shape[1] != expected \
                or model_output.shape[2:] != x_t.shape[2:]:
            raise ValueError(
                f"model output has shape {tuple(model_output.shape)} but x_t is "
                f"{tuple(x_t.shape)}: var_type={self.var_type!r} needs {expected} output "
                f"channels (out_channels = {'2 x' if self.learns_variance else ''} in_channels)")
        if not self.learns_variance:
            return model_output, None
        return model_output[:, :channels], model_output[:, channels:]

    # ----------------------------------------------------------------- forward process
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)."""
        x0 = x0.to(_compute_dtype(x0))
        mean = self._coef("sqrt_alphas_cumprod", t, x0) * x0
        variance = (1.0 - self._coef("alphas_cumprod", t, x0)).expand_as(x0)
        log_variance = self._coef("log_one_minus_alphas_cumprod", t, x0).expand_as(x0)
        return mean, variance, log_variance

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None):
        """Draw x_t ~ q(x_t | x_0) = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (``noise`` is ε)."""
        if noise is None:
            noise = torch.randn_like(x0)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 {tuple(x0.shape)}")
        return (self._coef("sqrt_alphas_cumprod", t, x0) * x0
                + self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance β̃_t and clipped log-variance of the true posterior q(x_{t-1} | x_t, x_0)."""
        mean = (self._coef("posterior_mean_coef1", t, x_t) * x0
                + self._coef("posterior_mean_coef2", t, x_t) * x_t)
        variance = self._coef("posterior_variance", t, x_t).expand_as(mean)
        log_variance = self._coef("posterior_log_variance_clipped", t, x_t).expand_as(mean)
        return mean, variance, log_variance

    # ----------------------------------------------------------------- reverse process
    def predict_xstart(self, mean_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """x_0 implied by the network's mean part, for this diffusion's ``mean_type``."""
        if self.mean_type == "x0":
            return mean_output.to(_compute_dtype(x_t))
        if self.mean_type == "eps":
            return (self._coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                    - self._coef("sqrt_recipm1_alphas_cumprod", t, x_t) * mean_output)
        # v = √ᾱ ε - √(1-ᾱ) x_0  =>  x_0 = √ᾱ x_t - √(1-ᾱ) v
        return (self._coef("sqrt_alphas_cumprod", t, x_t) * x_t
                - self._coef("sqrt_one_minus_alphas_cumprod", t, x_t) * mean_output)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor):
        """ε implied by a predicted x_0 (DDIM needs it after clipping x_0)."""
        return ((self._coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart)
                / self._coef("sqrt_recipm1_alphas_cumprod", t, x_t))

    def model_log_variance(self, var_output: torch.Tensor | None, x_t: torch.Tensor,
                           t: torch.Tensor) -> torch.Tensor:
        """Log-variance of p(x_{t-1} | x_t) for this ``var_type``."""
        if self.var_type == "learned":
            return var_output.to(_compute_dtype(x_t))
        if self.var_type == "learned_range":
            low = self._coef("posterior_log_variance_clipped", t, x_t)   # v = -1: β̃_t
            high = self._coef("log_betas", t, x_t)                        # v = +1: β_t
            return coefficients.learned_range_log_variance(var_output.to(low.dtype), low, high)
        name = ("posterior_log_variance_clipped" if self.var_type == "fixed_small"
                else "log_large_variance")
        return self._coef(name, t, x_t).expand_as(x_t)

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """Mean and variance of the model's p(x_{t-1} | x_t), and the x_0 it predicts.

        The mean is the true posterior's mean at the predicted x_0 (clipped to [-1, 1] when
        ``clip_denoised``), which is how every mean type parameterises μ_θ.
        """
        mean_output, var_output = self.split_model_output(model_output, x_t)
        x_t = x_t.to(_compute_dtype(x_t))
        log_variance = self.model_log_variance(var_output, x_t, t)
        pred_xstart = self.predict_xstart(mean_output, x_t, t)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(pred_xstart, x_t, t)
        return {"mean": mean, "variance": torch.exp(log_variance),
                "log_variance": log_variance, "pred_xstart": pred_xstart}

    # ----------------------------------------------------------------- losses
    def vb_terms_bpd(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor, clip_denoised: bool = False) -> torch.Tensor:
        """One term of the variational bound per example, in bits per dimension.

        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0; the discretized Gaussian
        decoder's negative log-likelihood of x_0 for t = 0.
        """
        true_mean, _, true_log_variance = self.q_posterior(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"]))
        decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(
            x0.to(out["mean"].dtype), means=out["mean"], log_scales=0.5 * out["log_variance"]))
        return torch.where(t.to(kl.device) == 0, decoder_nll, kl) / _LN2

    def training_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        """What the mean part of the network regresses onto under L_simple."""
        if self.mean_type == "eps":
            return noise
        if self.mean_type == "x0":
            return x0
        return (self._coef("sqrt_alphas_cumprod", t, x0) * noise
                - self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * x0)

    def training_losses(self, model_output: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor, mse_weight: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """Per-example ``mse``, ``vb`` (bits/dim) and the optimised ``loss``, all shape (B,).

        ``model_output`` must be the network's output at ``q_sample(x0, t, noise)``. For the
        hybrid loss the VLB term sees the mean part detached, so L_vlb trains only the
        variance and L_simple alone shapes the mean (Nichol & Dhariwal, sec. 3.1).
        ``mse_weight`` (B,), e.g. Min-SNR's (``loss_weights``), multiplies the MSE inside
        ``loss`` only: ``mse`` is reported unweighted and L_vlb keeps its weight. None (not
        ones) leaves ``loss`` the exact tensor of the unweighted objective.
        """
        dtype = _compute_dtype(x0)
        x0, noise = x0.to(dtype), noise.to(dtype)
        model_output = model_output.to(torch.promote_types(model_output.dtype, torch.float32))
        x_t = self.q_sample(x0, t, noise)
        mean_output, var_output = self.split_model_output(model_output, x_t)
        mse = mean_flat((self.training_target(x0, t, noise) - mean_output) ** 2)

        if self.loss in ("kl", "rescaled_kl"):
            if mse_weight is not None:
                raise ValueError(f"module.loss_weight weights the MSE term, which loss="
                                 f"{self.loss!r} does not optimise: use diffusion.loss=hybrid "
                                 f"or mse, or module.loss_weight=none")
            vb = self.vb_terms_bpd(model_output, x0, x_t, t)
            scale = self.num_timesteps if self.loss == "rescaled_kl" else 1.0
            return {"mse": mse.detach(), "vb": vb, "loss": vb * scale}

        weighted = mse if mse_weight is None else mse * mse_weight.to(mse.dtype)
        if var_output is None:
            return {"mse": mse, "vb": torch.zeros_like(mse), "loss": weighted}
        frozen = torch.cat([mean_output.detach(), var_output], dim=1)
        vb = self.vb_terms_bpd(frozen, x0, x_t, t)
        if self.loss == "hybrid":
            # One sampled term stands for T terms of L_vlb; λ = 0.001 makes the weight T/1000.
            vb = vb * (self.num_timesteps / 1000.0)
        return {"mse": mse, "vb": vb, "loss": weighted + vb}

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_{T-1} | x_0) || N(0, I)) in bits/dim: the L_T term (no parameters)."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, log_variance = self.q_mean_variance(x0, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / _LN2


def _schedule_betas(schedule: str, steps: int, keys: dict[str, Any]) -> torch.Tensor:
    """β of a config's schedule: named (with optional beta_start/beta_end) or ``custom``."""
    if schedule == "custom":
        betas = keys.get("betas")
        if betas is None or len(betas) != steps or set(keys) != {"betas"}:
            raise ValueError(f"schedule 'custom' needs betas: a list of steps={steps} values "
                             f"(and no beta_start/beta_end); got keys {sorted(keys)}"
                             + (f" with {len(betas)} betas" if betas is not None else ""))
        return torch.tensor([float(b) for b in betas], dtype=torch.float64)
    if "betas" in keys:
        raise ValueError(f"betas are only read with schedule 'custom', not {schedule!r}")
    return betas_for(schedule, steps, keys.get("beta_start"), keys.get("beta_end"))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 or better: half-precision inputs are promoted (the VLB term is tiny and fragile)."""
    return torch.promote_types(x.dtype, torch.float32)
