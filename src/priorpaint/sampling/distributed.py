"""Which share of a sampling run this process does: rank and world size from the launcher.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); ``srun``
sets SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (the sbatch template exports MASTER_ADDR
and MASTER_PORT). Sampling needs no gradients to sync: the process group exists only for
two barriers (everyone has planned before anyone writes; everyone has written before rank 0
writes the summary), so its timeout is long enough for the slowest rank's share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["Ranks", "ranks_from_env", "shard"]

BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False   # we created the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(*names: str) -> int | None:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return None


def ranks_from_env(device_type: str) -> Ranks:
    """Join (or create) the process group described by the environment, if any."""
    if dist.is_available() and dist.is_initialized():
        local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
        return Ranks(dist.get_rank(), dist.get_world_size(), local)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
    if world == 1:
        return Ranks()
    rank = _env_int("RANK", "SLURM_PROCID")
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    if rank is None:
        raise ValueError(f"WORLD_SIZE={world} but no RANK (or SLURM_PROCID) is set: launch with "
                         f"torchrun or srun")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"distributed sampling ({world} processes) needs {' and '.join(missing)} "
                         f"in the environment: torchrun sets them; under SLURM export them "
                         f"(see scripts/slurm/sample.sbatch)")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                            timeout=BARRIER_TIMEOUT)
    return Ranks(rank, world, local, owns_group=True)


def shard(items: list, ranks: Ranks) -> list:
    """This rank's items: every world_size-th one from its rank (all ranks together: all
    items exactly once)."""
    return items[ranks.rank::ranks.world_size]


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per local rank when the device names no index."""
    if device.type == "cuda" and device.index is None and ranks.world_size > 1:
        return torch.device("cuda", ranks.local_rank)
    return device
