"""Post-hoc EMA (EDM2): σ_rel ↔ γ, the power EMA's profile, the least-squares rebuild against
an EMA run directly with the target profile, and the command end to end."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from priorpaint.ema_posthoc import main, posthoc_state_dict
from priorpaint.ema_profiles import (
    gamma_to_sigma_rel,
    posthoc_weights,
    power_ema_beta,
    power_profile,
    sigma_rel_to_gamma,
)
from priorpaint.lightning.posthoc_ema import PowerEMAs


def test_sigma_rel_and_gamma_are_edm2s():
    # EDM2 sec. 3.1: σ_rel = 0.05 and 0.10 are γ = 16.97 and 6.94
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for sigma in (0.03, 0.05, 0.1, 0.2):
        gamma = sigma_rel_to_gamma(sigma)
        assert gamma_to_sigma_rel(gamma) == pytest.approx(sigma, rel=1e-9)
        # σ_rel is the std of the profile (γ+1) x^γ on [0, 1], as the paper defines it
        x = np.linspace(0, 1, 200001)
        p = (gamma + 1) * x ** gamma
        mean = np.trapezoid(x * p, x)
        assert math.sqrt(np.trapezoid((x - mean) ** 2 * p, x)) == pytest.approx(sigma, rel=1e-4)
    with pytest.raises(ValueError, match="sigma_rel=0.3 must lie in"):
        sigma_rel_to_gamma(0.3)


def _sequence(steps, seed=0):
    """A tiny parameter trajectory: a drifting random walk of a 5-weight layer."""
    generator = torch.Generator().manual_seed(seed)
    steps_ = torch.randn(steps, 5, generator=generator, dtype=torch.float64).cumsum(0)
    return steps_ + torch.linspace(0, 3, steps, dtype=torch.float64)[:, None]


def _run(sequence, sigma_rels, snapshot_every, folder):
    """PowerEMAs over ``sequence`` (float64 layer), snapshots collected in memory."""
    layer = nn.Linear(5, 1, bias=False).double()
    emas = PowerEMAs(layer, sigma_rels, snapshot_every, folder)
    snapshots = []
    for step, theta in enumerate(sequence, 1):
        with torch.no_grad():
            layer.weight.copy_(theta[None])
        emas.update(layer)
        if emas.snapshot_due() or step == len(sequence):
            snapshots.append({"update": step, "global_step": step, "sigma_rels": emas.sigma_rels,
                              "gammas": emas.gammas,
                              "state_dicts": [{k: v.clone() for k, v in a.state_dict().items()}
                                              for a in emas.averages]})
    return emas, snapshots


def _direct_ema(sequence, gamma):
    """θ̂_n = β_n θ̂_{n-1} + (1 - β_n) θ_n with β_n = (1 - 1/n)^(γ+1), run step by step."""
    average = torch.zeros_like(sequence[0])
    for n, theta in enumerate(sequence, 1):
        beta = power_ema_beta(n, gamma)
        average = beta * average + (1 - beta) * theta
    return average


def test_the_power_ema_has_the_telescoped_profile(tmp_path):
    sequence = _sequence(40)
    emas, _ = _run(sequence, (0.05, 0.10), 1000, tmp_path)
    for gamma, average in zip(emas.gammas, emas.averages, strict=True):
        direct = _direct_ema(sequence, gamma)
        assert torch.allclose(average.weight[0], direct, rtol=1e-12, atol=1e-12)
        profile = torch.from_numpy(power_profile(40, gamma, 40))
        assert profile.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert torch.allclose(profile @ sequence, direct, rtol=1e-10, atol=1e-10)


def test_a_loaded_power_ema_continues_the_same_averages(tmp_path):
    """The update count lives in a buffer (checkpoints) and a Python mirror (no host sync per
    step): after load_state_dict the next update is n + 1 of the loaded run, as if unbroken."""
    sequence = _sequence(12, seed=3)
    whole, _ = _run(sequence, (0.05, 0.10), 1000, tmp_path)
    first, _ = _run(sequence[:7], (0.05, 0.10), 1000, tmp_path)
    layer = nn.Linear(5, 1, bias=False).double()
    resumed = PowerEMAs(layer, (0.05, 0.10), 4, tmp_path)
    assert resumed.count == 0
    resumed.load_state_dict(first.state_dict())
    assert resumed.count == 7 and not resumed.snapshot_due()
    for theta in sequence[7:]:
        with torch.no_grad():
            layer.weight.copy_(theta[None])
        resumed.update(layer)
        assert int(resumed.updates) == resumed.count        # the buffer kept in step
        assert resumed.snapshot_due() == (resumed.count % 4 == 0)
    assert resumed.count == 12
    for a, b in zip(whole.averages, resumed.averages, strict=True):
        assert torch.equal(a.weight, b.weight)


def test_posthoc_rebuild_equals_an_ema_run_with_the_target_profile(tmp_path):
    """Snapshots of σ_rel 0.05 and 0.10 at every step span every profile: the rebuild of
    σ_rel 0.08 (never trained) is the directly run EMA within float tolerance. Every 5th step,
    it is still far closer to it than either stored profile is."""
    sequence = _sequence(30)
    target = sigma_rel_to_gamma(0.08)
    direct = _direct_ema(sequence, target)
    _, every = _run(sequence, (0.05, 0.10), 1, tmp_path)
    state, info = posthoc_state_dict(every, 0.08)
    assert info["snapshots"] == 30 and info["update"] == 30
    assert torch.allclose(state["weight"][0], direct, rtol=0, atol=1e-6)

    emas, sparse = _run(sequence, (0.05, 0.10), 5, tmp_path)
    state, _ = posthoc_state_dict(sparse, 0.08)
    error = (state["weight"][0] - direct).abs().max()
    stored = min((a.weight[0] - direct).abs().max() for a in emas.averages)
    assert error < 0.1 * stored, (error, stored)
    # an EMA ending earlier uses only the snapshots up to it
    state, info = posthoc_state_dict(sparse, 0.08, step=15)
    assert info["snapshots"] == 3
    direct = _direct_ema(sequence[:15], target)
    stored = min((s["weight"][0] - direct).abs().max() for s in sparse[2]["state_dicts"])
    assert (state["weight"][0] - direct).abs().max() < 0.5 * stored


def test_weights_of_a_stored_profile_pick_that_snapshot():
    pairs = [(10, 6.94), (10, 16.97), (20, 6.94), (20, 16.97)]
    weights = posthoc_weights(pairs, (20, 16.97))
    assert np.allclose(weights, [0, 0, 0, 1], atol=1e-8)


@pytest.mark.slow
def test_training_writes_snapshots_and_the_command_writes_a_prior(tmp_path, capsys):
    from priorpaint.checkpoint import load_prior
    from priorpaint.lightning.launch import compose_config, run_training

    run_dir = tmp_path / "run"
    cfg = compose_config(["experiment=none", "model=tiny", "data=digits", "data.image_size=8",
                          "diffusion=cosine1000",
                          "diffusion.steps=20", "trainer.precision=32-true", "num_threads=1",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                          "logger=none", "~callbacks", "+callbacks.model_checkpoint=null",
                          "trainer.max_steps=3", "data.batch_size=4",
                          "module.posthoc_ema.sigma_rels=[0.05,0.1]",
                          "module.posthoc_ema.snapshot_every=2", f"run_dir={run_dir}"])
    result = run_training(cfg)
    snapshots = sorted(p.name for p in (run_dir / "ema_snapshots").iterdir())
    assert snapshots == ["ema_snapshot_00000002.pt", "ema_snapshot_00000003.pt"]
    steps = [torch.load(run_dir / "ema_snapshots" / name, weights_only=True)["global_step"]
             for name in snapshots]
    assert steps == [2, 3]   # the steps the checkpoints of those moments are named by
    result.trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    out = tmp_path / "prior.ckpt"
    assert main([str(run_dir), "sigma_rel=0.1", f"out={out}"]) == 0
    prior = load_prior(out)
    assert prior.info["posthoc_ema"]["global_step"] == 3 and prior.weights == "ema"
    # σ_rel 0.10 was trained: the rebuild is that EMA
    for name, value in prior.model.state_dict().items():
        expected = result.module.posthoc_emas.averages[1].state_dict()[name]
        assert torch.allclose(value, expected, atol=1e-5), name
    assert main([str(run_dir), "sigma_rel=0.1", "step=2", f"out={tmp_path / 'p2.ckpt'}"]) == 0
    assert load_prior(tmp_path / "p2.ckpt").info["posthoc_ema"]["global_step"] == 2
    # a run without snapshots: one line, exit status 2
    assert main([str(tmp_path), "sigma_rel=0.1"]) == 2
    assert "no EMA snapshots" in capsys.readouterr().err
