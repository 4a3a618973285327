"""Which timesteps a training batch sees, and with what importance weights.

A sampler draws t with probabilities p_t and returns weights 1 / (T · p_t), so the weighted
loss stays an unbiased estimate of the uniform-t objective whatever p is. The loss-second-
moment sampler (Nichol & Dhariwal, sec. 3.3) puts p_t ∝ √E[L_t²], which cuts the variance of
L_vlb by orders of magnitude; it only moves off uniform once every t has a full history.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["UniformSampler", "LossSecondMomentSampler", "create_timestep_sampler"]


class UniformSampler:
    """p_t = 1/T: every weight is 1."""

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


def create_timestep_sampler(name: str, diffusion) -> UniformSampler:
    """``uniform`` or ``loss-second-moment`` over ``diffusion.num_timesteps`` steps."""
    if name == "uniform":
        return UniformSampler(diffusion.num_timesteps)
    if name in ("loss-second-moment", "loss_second_moment"):
        return LossSecondMomentSampler(diffusion.num_timesteps)
    raise ValueError(f"unknown timestep sampler {name!r}: use 'uniform' or 'loss-second-moment'")
