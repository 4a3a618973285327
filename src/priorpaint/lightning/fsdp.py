"""Fully sharded data parallel training (``trainer=fsdp``) for UNets too large to replicate.

Why FSDP2 (``torch.distributed.fsdp.fully_shard``, through Lightning's ``ModelParallelStrategy``)
and not Lightning's ``FSDPStrategy`` (FSDP1):

- FSDP2 keeps every parameter under its own name as a sharded ``DTensor``; FSDP1 renames them
  (``_fsdp_wrapped_module.``) and flattens them, which silently breaks ema-pytorch's by-name
  pairing of online and EMA weights — the EMA would simply stop moving.
- FSDP2 runs on CPU over gloo, so the sharded path is tested here (``trainer=fsdp_sim``) exactly
  as it runs on GPUs; FSDP1 refuses a CPU device.

What is sharded: every ResBlock and attention block is one FSDP unit (gathered for its forward
and backward, resharded after), the rest of the UNet is the root unit. Parameters, gradients
and AdamW moments are split over all processes. The EMA networks are *not* sharded: each rank
keeps them whole (they are what sampling and ``checkpoint["priorpaint"]`` use), and every update
reads the gathered weights (``ema.OnlineWeights``), so EMA costs one extra all-gather of the
parameters per update (``module.ema.update_every`` spaces them out).
"""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.constants import default_pg_timeout
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from ..models.attention import AttentionBlock
from ..models.layers import ResBlock

__all__ = ["FullyShardedStrategy", "shard_network", "SHARDED_UNITS"]

# The blocks that become FSDP units: large enough to amortise a collective, small enough that
# only one is gathered at a time.
SHARDED_UNITS = (ResBlock, AttentionBlock)


def shard_network(network: nn.Module, mesh: DeviceMesh, reshard_after_forward: bool = True,
                  units: tuple[type[nn.Module], ...] = SHARDED_UNITS) -> nn.Module:
    """Apply ``fully_shard`` to each unit of ``network`` and then to ``network`` itself.

    Idempotent: Lightning calls ``configure_model`` again when a trainer is reused.
    """
    if isinstance(network, FSDPModule):
        return network
    for module in network.modules():
        if isinstance(module, units) and module is not network:
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(network, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return network


class FullyShardedStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP: one data-parallel group of every process.

    Upstream, ``data_parallel_size="auto"`` means "one group per node" and the GPUs of a node
    form a tensor-parallel group; a UNet has no tensor-parallel plan, so here all
    ``num_nodes x devices`` processes shard one model and split the batch.

    Args:
        save_distributed_checkpoint: False (default) gathers whole weights into one ``.ckpt``
            on rank 0, which ``sample.py ckpt=...`` reads directly; True writes one shard per
            rank (a folder), faster for very large models but not readable by ``load_prior``.
        process_group_backend: ``nccl`` on GPUs (default), ``gloo`` on CPU.
        timeout: collective timeout.
    """

    def __init__(self, save_distributed_checkpoint: bool = False,
                 process_group_backend: str | None = None,
                 timeout: timedelta | None = default_pg_timeout) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)

    def setup_environment(self) -> None:
        # num_nodes and the devices are known now (the accelerator connector set them).
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
