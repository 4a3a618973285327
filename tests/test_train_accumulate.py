"""Gradient accumulation (trainer.accumulate_grad_batches=2): everything that happens "every n
steps" happens once per optimizer step, not once per micro-batch."""

import csv
from types import SimpleNamespace

import pytest
from tiny import QUIET, TINY_TRAIN

from priorpaint.lightning import DiffusionPriorModule, SampleGridCallback, ShardStatsLogger
from priorpaint.lightning.launch import compose_config, run_training

TINY = [*TINY_TRAIN, *QUIET, "data=digits", "data.image_size=8", "diffusion.steps=8"]


@pytest.mark.slow
def test_accumulation_acts_once_per_optimizer_step(tmp_path, monkeypatch):
    draws, flushes = [], []
    original_draw, original_flush = SampleGridCallback._draw, DiffusionPriorModule._flush_logs

    def draw(self, trainer, pl_module):
        draws.append(trainer.global_step)
        original_draw(self, trainer, pl_module)

    def flush(self, step):
        flushes.append(step)
        original_flush(self, step)

    monkeypatch.setattr(SampleGridCallback, "_draw", draw)
    monkeypatch.setattr(DiffusionPriorModule, "_flush_logs", flush)
    result = run_training(compose_config([
        *TINY, "logger=csv", f"run_dir={tmp_path}", "data.batch_size=4", "trainer.accumulate_grad_batches=2",
        "trainer.max_steps=4", "trainer.log_every_n_steps=2",
        "callbacks.sample_grid.every_n_steps=2", "callbacks.sample_grid.respacing=2",
        "callbacks.sample_grid.num_samples=1", "callbacks.sample_grid.num_inpaint=1",
        "callbacks.model_checkpoint.every_n_train_steps=100"]))
    assert result.trainer.global_step == 4
    assert draws == [2, 4]       # not [2, 2, 4]: the micro-batch after step 2 draws nothing
    assert flushes == [2, 4]     # logs flushed once per logged step, with both micro-batches
    assert [int(ema.step) for ema in result.module.emas] == [4]   # one EMA update per step

    # The EMA rate the run really had (warm-up), not the nominal 0.9999, is logged.
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/ema_decay")]
    assert [int(row["step"]) for row in rows] == [2, 4]
    power = result.module.hparams.ema["power"]   # (0.75: the quickstart preset's)
    assert float(rows[-1]["train/ema_decay"]) == pytest.approx(1 - (1 + 3) ** -power, rel=1e-5)


def test_shard_stats_are_logged_once_per_optimizer_step():
    logged = []
    stats = SimpleNamespace(as_dict=lambda: {"samples": 8})
    trainer = SimpleNamespace(global_step=0, datamodule=SimpleNamespace(shard_stats=stats))
    module = SimpleNamespace(log_dict=lambda counts, **kw: logged.append(trainer.global_step))
    callback = ShardStatsLogger(every_n_steps=2)
    callback.on_train_start(trainer, module)
    # accumulate_grad_batches=2: global_step after each micro-batch
    for step in (0, 1, 1, 2, 2, 3, 3, 4):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, None, 0)
    assert logged == [2, 4]
