"""DDP on CPU (2 processes, gloo): runs, keeps EMA identical on every rank, and 2 ranks x batch b
equal one process with batch 2b (same examples, same per-example t and noise)."""

import subprocess
import sys
import textwrap

import pytest
import torch

from priorpaint.lightning.launch import compose_config, run_training

# Launched as a script so Lightning's subprocess launcher can start rank 1 the same way.
WORKER = textwrap.dedent("""
    import sys
    import torch
    from priorpaint.lightning.launch import compose_config, run_training

    out, overrides = sys.argv[1], sys.argv[2:]
    result = run_training(compose_config(overrides))
    module = result.module
    torch.save({"model": module.model.state_dict(),
                "emas": [ema.state_dict() for ema in module.emas],
                "sampler": module.timestep_sampler.state_dict(),
                "step": result.trainer.global_step, "world": result.trainer.world_size},
               f"{out}/rank{result.trainer.global_rank}.pt")
""")

COMMON = ["model=tiny", "data=digits", "data.image_size=8", "diffusion=cosine1000",
          "trainer.precision=32-true", "num_threads=1",
          "diffusion.steps=8", "model.dropout=0", "module.timestep_sampler=loss-second-moment",
          "module.ema.rates='0.9,0.5'", "module.optimizer.lr=1e-3", "trainer.max_steps=2",
          # Biases just before a per-channel GroupNorm have an exactly-zero gradient, so theirs
          # is pure round-off, which Adam's eps=1e-8 would blow up to +-lr steps that differ
          # between a 2-rank all-reduce and a 1-process sum. A larger eps keeps the comparison
          # about DDP rather than about round-off.
          "+module.optimizer.eps=1e-4",
          "~callbacks", "logger=none", "trainer.enable_progress_bar=false",
          "trainer.enable_model_summary=false"]


def _assert_same(a: dict, b: dict, atol: float, what: str):
    assert a.keys() == b.keys(), what
    for key in a:
        if torch.is_tensor(a[key]) and a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=atol, rtol=0), f"{what}: {key}"
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), f"{what}: {key}"


@pytest.mark.slow
def test_ddp_two_ranks_equal_one_process_with_double_batch(tmp_path):
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    overrides = [*COMMON, "trainer=ddp_sim", "data.batch_size=4", f"run_dir={tmp_path / 'ddp'}"]
    done = subprocess.run([sys.executable, str(script), str(tmp_path), *overrides],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [2, 2]

    # Every rank holds bit-identical weights and EMA (incl. ema-pytorch's step counters).
    _assert_same(ranks[0]["model"], ranks[1]["model"], 0.0, "model across ranks")
    for ema0, ema1 in zip(ranks[0]["emas"], ranks[1]["emas"], strict=True):
        _assert_same(ema0, ema1, 0.0, "EMA across ranks")
    _assert_same(ranks[0]["sampler"], ranks[1]["sampler"], 0.0, "sampler history across ranks")

    single = run_training(compose_config([*COMMON, "data.batch_size=8",
                                          f"run_dir={tmp_path / 'single'}"])).module
    # Adam divides by √v: on near-zero gradients (zero-initialised output conv) the round-off
    # of a 2-rank all-reduce vs a 1-process sum moves a weight by up to ~1e-5 (seen once under
    # heavy load). A wrong batch split moves weights by ~lr = 1e-3, far above this tolerance.
    _assert_same(single.model.state_dict(), ranks[0]["model"], 5e-5, "DDP vs single process")
    for ema, saved in zip(single.emas, ranks[0]["emas"], strict=True):
        _assert_same(ema.state_dict(), saved, 5e-5, "EMA: DDP vs single process")
    # The sampler saw the same (t, loss) pairs in the same order: both ranks' losses, gathered.
    _assert_same(single.timestep_sampler.state_dict(), ranks[0]["sampler"], 1e-6, "sampler")
    assert int(single.timestep_sampler.state_dict()["loss_counts"].sum()) == 16
