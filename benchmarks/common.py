"""Shared pieces of the benchmarks: the machine line, matched networks, interleaved timing.

Every figure a benchmark prints is a ratio of two things measured in the same run, taking
turns (reference, priorpaint, reference, ...), so the load other processes put on the shared
cores hits both alike. The header says what the figures were measured under: CPU, cores,
load average, torch threads, allocator and precision, all of which move CPU timings a lot.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from priorpaint.models import UNet

__all__ = ["Layout", "SMALL", "IMAGENET64", "PRECISIONS", "allocator", "machine_lines",
           "load_average", "warn_if_shared", "require_diffusers", "priorpaint_unet",
           "diffusers_unet", "perturb_zero_init", "interleaved", "median_ratio", "autocast"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Layout:
    """An ADM UNet layout both libraries can build: priorpaint's ``UNet`` keywords, and the
    UNet2DModel blocks that match them (attention at downsample rates ``attention``)."""

    width: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    attention: tuple[int, ...] = (2, 4)
    num_res_blocks: int = 2
    head_channels: int = 8

    def with_width(self, width: int) -> Layout:
        return Layout(width, self.channel_mult, self.attention, self.num_res_blocks,
                      self.head_channels)


SMALL = Layout()                       # unet_speed.py's layout at width 32
IMAGENET64 = Layout(width=64, channel_mult=(1, 2, 3, 4), attention=(2, 4, 8), head_channels=32)


def require_diffusers():
    """The diffusers module, or exit with how to get it (it is not a priorpaint dependency)."""
    try:
        import diffusers
    except ImportError:
        sys.exit("diffusers is not installed: `pip install diffusers` to run this benchmark "
                 "(it is only the reference here, not a priorpaint dependency)")
    return diffusers


def priorpaint_unet(layout: Layout, channels: int = 3, out_channels: int = 6) -> UNet:
    return UNet(in_channels=channels, model_channels=layout.width, out_channels=out_channels,
                num_res_blocks=layout.num_res_blocks, attention_resolutions=layout.attention,
                channel_mult=layout.channel_mult, num_head_channels=layout.head_channels,
                use_scale_shift_norm=True)


def diffusers_unet(layout: Layout, size: int, channels: int = 3, out_channels: int = 6):
    """UNet2DModel with ``layout``: FiLM time conditioning, conv up/down, GroupNorm(32)."""
    from diffusers import UNet2DModel

    levels = [2**i for i in range(len(layout.channel_mult))]
    down = tuple("AttnDownBlock2D" if ds in layout.attention else "DownBlock2D" for ds in levels)
    up = tuple(name.replace("Down", "Up") for name in reversed(down))
    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=out_channels,
        layers_per_block=layout.num_res_blocks,
        block_out_channels=tuple(layout.width * m for m in layout.channel_mult),
        down_block_types=down, up_block_types=up, attention_head_dim=layout.head_channels,
        norm_num_groups=32, resnet_time_scale_shift="scale_shift", flip_sin_to_cos=True,
        freq_shift=0,
    )


def perturb_zero_init(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Refill all-zero parameters (zero-initialised output convs, norm biases) with N(0, std²).

    A freshly built ADM UNet outputs exactly zero, whatever its input and precision; this
    makes it a generic "trained-like" function so precision differences show in the outputs.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def allocator() -> str:
    """Which malloc the process runs with: it changes CPU timings a lot (glibc's returns big
    blocks to the kernel and page-faults them back on every step; tcmalloc/jemalloc keep them)."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in preload:
            return name
    tunables = os.environ.get("GLIBC_TUNABLES")
    return f"glibc (GLIBC_TUNABLES={tunables})" if tunables else "glibc"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def warn_if_shared() -> None:
    """Say so when other processes load the cores while torch runs several threads: every
    parallel op then waits for its slowest thread's time slice, and small-batch network
    calls get many times slower (seen here: 14 ms -> 700 ms at batch 1), far beyond what
    interleaving can even out. ``--threads 1`` keeps such runs comparable."""
    load = os.getloadavg()[0]
    if torch.get_num_threads() > 1 and load > 0.5:
        print(f"note: load average {load:.2f} on {os.cpu_count()} cores with torch using "
              f"{torch.get_num_threads()} threads; if other processes are running, the "
              f"figures will be noisy: pass --threads 1", file=sys.stderr)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_lines(precision: str | None = None) -> list[str]:
    """What the figures were measured under (print it with every result)."""
    lines = [f"machine: {_cpu_model()}, nproc {os.cpu_count()}, python "
             f"{platform.python_version()}, torch {torch.__version__}",
             f"threads {torch.get_num_threads()}, allocator {allocator()}"
             + (f", precision {precision}" if precision else "")
             + f", load average {load_average()}"]
    if sys.modules.get("diffusers") is not None:
        lines[0] += f", diffusers {sys.modules['diffusers'].__version__}"
    return lines


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, reps: dict[str, int] | int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each function, one entry per round; the functions take turns.

    Round r runs every function ``reps`` times back to back (after one untimed call in the
    first round), so a burst of outside load lands on one round of each, not on one function.
    """
    if isinstance(reps, int):
        reps = {name: reps for name in fns}
    for fn in fns.values():
        fn()  # warm-up: oneDNN primitive caches, allocator pools, lazy init
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            for _ in range(reps[name]):
                fn()
            times[name].append((clock() - start) / reps[name])
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the per-round ratio (pairs measured back to back)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def autocast(precision: str):
    """CPU autocast context for ``precision`` ("fp32": a no-op)."""
    dtype = PRECISIONS[precision]
    return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
