"""Two "nodes" on localhost through torchrun (--nnodes 2, --node_rank 0/1, gloo): Lightning's
torchrun environment wires DDP across them; training finishes, rank 0 alone writes the one
checkpoint, and the EMA weights are identical on both nodes."""

import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from ranks import child_env

WORKER = textwrap.dedent("""
    import sys
    import torch
    from priorpaint.lightning.launch import compose_config, run_training

    out, overrides = sys.argv[1], sys.argv[2:]
    result = run_training(compose_config(overrides))
    torch.save({"emas": [ema.state_dict() for ema in result.module.emas],
                "world": result.trainer.world_size, "node": result.trainer.node_rank,
                "step": result.trainer.global_step},
               f"{out}/rank{result.trainer.global_rank}.pt")
""")


@pytest.mark.slow
def test_two_nodes_train_with_one_checkpoint_and_equal_ema(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    overrides = ["experiment=none", "model=tiny", "data=digits", "data.image_size=8", "data.batch_size=4",
                 "diffusion=cosine1000", "diffusion.steps=8", "trainer=ddp_sim",
                 "trainer.devices=1", "trainer.num_nodes=2", "trainer.max_steps=3",
                 "trainer.precision=32-true", "num_threads=1", "module.ema.rates='0.9,0.5'",
                 "logger=none", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false", "callbacks.sample_grid.every_n_steps=0",
                 f"run_dir={run_dir}"]
    env = child_env(OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                               f"--node_rank={node}", "--nproc_per_node=1",
                               "--master_addr=127.0.0.1", f"--master_port={port}",
                               str(script), str(tmp_path), *overrides],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for node in (0, 1)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, log in zip(nodes, logs, strict=True):
        assert node.returncode == 0, log[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["world"], r["node"], r["step"]) for r in ranks] == [(2, 0, 3), (2, 1, 3)]
    for ema0, ema1 in zip(ranks[0]["emas"], ranks[1]["emas"], strict=True):
        assert ema0.keys() == ema1.keys()
        for key in ema0:
            assert torch.equal(ema0[key], ema1[key]), key
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints
    assert len([c for c in checkpoints if c != "last.ckpt"]) == 1   # the final step, once
