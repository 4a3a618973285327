"""Which timesteps a training batch sees, and with what importance weights.

A sampler draws t with probabilities p_t and returns weights 1 / (T · p_t), so the weighted
loss stays an unbiased estimate of the uniform-t objective whatever p is. The loss-second-
moment sampler (Nichol & Dhariwal, sec. 3.3) puts p_t ∝ √E[L_t²], which cuts the variance of
L_vlb by orders of magnitude; it only moves off uniform once every t has a full history.
The log-SNR normal sampler spends the batch where EDM's training density does (Karras et al.
2022: ln σ ~ N(P_mean, P_std²), i.e. log SNR ~ N(-2 P_mean, (2 P_std)²)), and being reweighted
it keeps the uniform objective: it changes the gradient's variance, not what is learned.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

__all__ = ["UniformSampler", "LossSecondMomentSampler", "LogSNRNormalSampler",
           "log_snr_normal_density", "create_timestep_sampler", "TIMESTEP_SAMPLERS"]

TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment", "log-snr-normal")


class UniformSampler:
    """p_t = 1/T: every weight is 1."""

    learns_from_losses = False   # whether training must hand it each step's losses

    def __init__(self, num_timesteps: int):
        self.num_timesteps = int(num_timesteps)

    def weights(self) -> torch.Tensor:
        """Unnormalised sampling weights per t (float64)."""
        return torch.ones(self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size: int, device=None, generator: torch.Generator | None = None):
        """(t, weights): ``batch_size`` timesteps and their importance weights on ``device``."""
        p = self.weights()
        p = p / p.sum()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.to(device=device, dtype=torch.float32)

    def update_with_local_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Uniform sampling learns nothing from losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LossSecondMomentSampler(UniformSampler):
    """p_t ∝ √(mean of the last ``history`` losses² at t), mixed with ``uniform_prob`` of uniform.

    Under DDP every rank gathers every rank's (t, loss) pairs before updating, so all ranks
    keep the same history and hence draw from the same distribution.
    """

    learns_from_losses = True

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history = int(history)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(self.num_timesteps, self.history, dtype=torch.float64)
        self.loss_counts = torch.zeros(self.num_timesteps, dtype=torch.long)

    @property
    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def weights(self) -> torch.Tensor:
        if not self.warmed_up:
            return torch.ones(self.num_timesteps, dtype=torch.float64)
        weights = self.loss_history.pow(2).mean(dim=1).sqrt()
        weights = weights / weights.sum()
        return weights * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_local_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record this rank's losses, plus every other rank's when distributed."""
        t, losses = t.detach(), losses.detach().to(torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t, losses = _all_gather_variable(t), _all_gather_variable(losses)
        self.update_with_all_losses(t.cpu(), losses.cpu())

    def update_with_all_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each loss to its t's history, dropping the oldest once the history is full."""
        for step, loss in zip(t.tolist(), losses.tolist(), strict=True):
            if self.loss_counts[step] == self.history:
                self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, self.loss_counts[step]] = loss
                self.loss_counts[step] += 1

    def state_dict(self) -> dict:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["loss_history"].shape) != tuple(self.loss_history.shape):
            raise ValueError(f"sampler history has shape {tuple(state['loss_history'].shape)}, "
                             f"expected {tuple(self.loss_history.shape)} (T x history)")
        self.loss_history = state["loss_history"].to(torch.float64).cpu().clone()
        self.loss_counts = state["loss_counts"].to(torch.long).cpu().clone()


def log_snr_normal_density(log_snr: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """P(t) when log SNR ~ N(mean, std²) is rounded to the nearest step's log SNR (float64, sums to 1).

    Each t owns the log-SNR interval between the midpoints to its neighbours (t = 0 up to +∞,
    t = T-1 down to -∞), and gets the normal's mass over it: a density over the continuous
    log SNR, which is how EDM states it, turned into one over the chain's steps whatever its
    schedule or length. ``log_snr`` must decrease with t (every schedule's does).
    """
    log_snr = torch.as_tensor(log_snr, dtype=torch.float64)
    if log_snr.numel() > 1 and not bool((log_snr[1:] < log_snr[:-1]).all()):
        raise ValueError("log SNR must decrease with t")
    if not std > 0:
        raise ValueError(f"module.log_snr_normal.std={std} must be > 0")
    inf = torch.tensor([math.inf], dtype=torch.float64)
    edges = torch.cat([inf, (log_snr[1:] + log_snr[:-1]) / 2, -inf])
    cdf = torch.special.ndtr((edges - mean) / std)
    return cdf[:-1] - cdf[1:]


class LogSNRNormalSampler(UniformSampler):
    """p_t = (1 - u) · ``log_snr_normal_density`` + u / T, weights 1 / (T p_t).

    The weights make E_p[w_t L_t] = (1/T) Σ_t L_t, the uniform objective, for any per-t loss:
    only which t a batch spends its examples on changes. The uniform part u bounds every
    weight by 1 / u, so the rare large-t draws cannot blow up a step.
    """

    def __init__(self, num_timesteps: int, log_snr: torch.Tensor, mean: float, std: float,
                 uniform_prob: float):
        super().__init__(num_timesteps)
        if not 0.0 < uniform_prob <= 1.0:
            raise ValueError(f"module.log_snr_normal.uniform_prob={uniform_prob} must lie in "
                             f"(0, 1] (it bounds the importance weights by 1/uniform_prob)")
        if len(log_snr) != self.num_timesteps:
            raise ValueError(f"{len(log_snr)} log-SNR values for {self.num_timesteps} steps")
        density = log_snr_normal_density(log_snr, float(mean), float(std))
        self._weights = density * (1.0 - uniform_prob) + uniform_prob / self.num_timesteps

    def weights(self) -> torch.Tensor:
        return self._weights.clone()


def _all_gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor across ranks, whatever each rank's length (rank order)."""
    world = dist.get_world_size()
    backend_device = x.device if dist.get_backend() != "gloo" else torch.device("cpu")
    x = x.to(backend_device)
    size = torch.tensor([x.numel()], device=backend_device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=x.dtype, device=backend_device)
    padded[: x.numel()] = x
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes, strict=True)])


def create_timestep_sampler(name: str, diffusion, log_snr_normal: dict | None = None
                            ) -> UniformSampler:
    """``uniform``, ``loss-second-moment`` or ``log-snr-normal`` over ``diffusion``'s steps.

    ``log_snr_normal``: ``mean``, ``std`` (of log SNR) and ``uniform_prob`` for the last.
    """
    if name == "uniform":
        return UniformSampler(diffusion.num_timesteps)
    if name in ("loss-second-moment", "loss_second_moment"):
        return LossSecondMomentSampler(diffusion.num_timesteps)
    if name in ("log-snr-normal", "log_snr_normal"):
        params = dict(log_snr_normal or {})
        missing = {"mean", "std", "uniform_prob"} - set(params)
        if missing:
            raise ValueError(f"timestep_sampler=log-snr-normal needs module.log_snr_normal."
                             f"{', '.join(sorted(missing))} (configs/train.yaml has them)")
        alpha_bar = diffusion.alphas_cumprod
        return LogSNRNormalSampler(diffusion.num_timesteps, torch.log(alpha_bar / (1 - alpha_bar)),
                                   float(params["mean"]), float(params["std"]),
                                   float(params["uniform_prob"]))
    raise ValueError(f"unknown timestep sampler {name!r}: use one of {', '.join(TIMESTEP_SAMPLERS)}"
                     f" (module.timestep_sampler)")
