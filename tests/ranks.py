"""Run a training config in Lightning's own multi-process launcher and collect every rank's state.

The worker is a script so Lightning's subprocess launcher can start rank 1 the same way; each
rank saves its *whole* weights (FSDP shards are gathered, a collective all ranks join).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from tiny import QUIET, TINY_TRAIN

import priorpaint

WORKER = textwrap.dedent("""
    import sys
    import torch
    from torch.distributed.tensor import DTensor
    from priorpaint.lightning.launch import compose_config, run_training

    def whole(state):
        return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}

    out, overrides = sys.argv[1], sys.argv[2:]
    result = run_training(compose_config(overrides))
    module = result.module
    torch.save({"model": whole(module.model.state_dict()),
                "sharded": any(isinstance(p, DTensor) for p in module.model.parameters()),
                "emas": [ema.state_dict() for ema in module.emas],
                "sampler": module.timestep_sampler.state_dict(),
                "step": result.trainer.global_step, "world": result.trainer.world_size},
               f"{out}/rank{result.trainer.global_rank}.pt")
""")

# Two optimizer steps of a tiny prior on 8x8 digits with everything that could go wrong across
# ranks switched on: two EMA rates, the loss-second-moment sampler, gradient clipping.
COMMON = [*TINY_TRAIN, *QUIET, "data=digits", "data.image_size=8", "diffusion.steps=8",
          "model.dropout=0", "module.timestep_sampler=loss-second-moment",
          "module.ema.rates='0.9,0.5'", "module.optimizer.lr=1e-3", "trainer.max_steps=2",
          "module.grad_clip=1.0",
          # Biases just before a per-channel GroupNorm have an exactly-zero gradient, so theirs
          # is pure round-off, which Adam's eps=1e-8 would blow up to +-lr steps that differ
          # between a 2-rank all-reduce and a 1-process sum. A larger eps keeps the comparison
          # about the parallel strategy rather than about round-off.
          "+module.optimizer.eps=1e-4",
          "~callbacks"]


def child_env(**extra) -> dict:
    """The environment for worker processes: they import the priorpaint this test imported.

    (Workers run in tmp_path, where a relative PYTHONPATH=src would silently fall back to the
    installed package, i.e. test some other checkout's code.)
    """
    src = str(Path(priorpaint.__file__).resolve().parents[1])
    paths = [src, *(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                    if p)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def run_ranks(tmp_path, overrides, world: int = 2, timeout: int = 240) -> list[dict]:
    """Train with ``overrides`` in a fresh process (which launches the others); every rank's state."""
    out = tmp_path / "ranks"
    out.mkdir(exist_ok=True)
    script = tmp_path / "rank_worker.py"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, str(script), str(out), *overrides],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for r in range(world):
        (out / f"rank{r}.pt").unlink()
    return ranks


def assert_same(a: dict, b: dict, atol: float, what: str):
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]) and a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=atol, rtol=0), f"{what}: {key}"
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), f"{what}: {key}"


def assert_resumed_equals_straight(resumed: list[dict], straight: list[dict], step: int,
                                   atol: float = 1e-6):
    """Every rank of a resumed run ends at ``step`` with the uninterrupted run's weights, EMAs
    and timestep-sampler history (what exact resume promises)."""
    assert len(resumed) == len(straight)
    for rank in range(len(resumed)):
        assert resumed[rank]["step"] == step
        assert_same(resumed[rank]["model"], straight[rank]["model"], atol, "resumed weights")
        for ema_r, ema_s in zip(resumed[rank]["emas"], straight[rank]["emas"], strict=True):
            assert_same(ema_r, ema_s, atol, "resumed EMA")
        assert_same(resumed[rank]["sampler"], straight[rank]["sampler"], atol, "sampler")
