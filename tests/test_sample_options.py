"""sample.yaml parsed once: RunOptions mirrors the config file, plans what sample.py runs,
and a run from typed options is the run from the config."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from tiny import save_tiny_prior, write_random_images

from priorpaint.evaluation.ablation import Setting, network_calls, setting_options
from priorpaint.sampling import SamplerOptions
from priorpaint.sampling.options import RunOptions, describe_plan, plan
from priorpaint.sampling.run import run

REPO = Path(__file__).resolve().parents[1]


def _sample_yaml(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="sample", overrides=list(overrides))


def test_options_mirror_sample_yaml_key_for_key():
    cfg = _sample_yaml("ckpt=c.ckpt", "sampler=diffpir", "steps=12", "diffpir.lambda=2",
                       "eta=0.5", "clip_denoised=false", "seed=3")
    options = RunOptions.from_config(cfg)
    assert set(options.to_config()) == set(cfg)               # run.yaml records every key
    assert RunOptions.from_config(options.to_config()) == options   # and reads back the same
    assert options.knobs.lambda_ == 2.0 and options.steps == 12 and options.seed == 3
    assert options.clip_denoised is False
    resolved = options.sampler_options       # sampler defaults filled in, the given ones kept
    assert resolved.lambda_ == 2.0 and resolved.eta == 0.5 and resolved.inner_loops == 1
    assert RunOptions.from_config(_sample_yaml("ckpt=c.ckpt")) == RunOptions(ckpt="c.ckpt")


@pytest.mark.parametrize("change, message", [
    (dict(sampler="tile"), "sampler=tile is unknown"),
    (dict(n_samples=0), "n_samples=0 must be at least 1"),
    (dict(precision="fp8"), "precision=fp8 is unknown"),
    (dict(fit="tile"), "fit=tile is unknown"),
    (dict(clip_denoised="maybe"), "clip_denoised=maybe"),
    (dict(knobs=SamplerOptions(eta=2.0)), r"eta=2.0 must lie in \[0, 1\]"),
])
def test_options_are_checked_however_they_are_made(change, message):
    with pytest.raises(ValueError, match=message):
        RunOptions(**change)
    with pytest.raises(ValueError, match="diffpir.rho is not a DiffPIR option"):
        RunOptions.from_config({"diffpir": {"rho": 1}})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("ckpt") / "p.ckpt", 3, (8, 8), steps=20)


def test_ablation_settings_are_the_base_options_with_t_r_j(ckpt, tmp_path):
    from priorpaint.checkpoint import load_prior

    prior = load_prior(ckpt)
    base = RunOptions(ckpt=str(ckpt), images="x", mask="half", n_samples=2, seed=5)
    setting = Setting("resampling", 12, 3, 2, network_calls(12, 3, 2))
    options = setting_options(base, setting, tmp_path / "T12")
    assert options == replace(base, out=str(tmp_path / "T12"), steps=12,
                              knobs=SamplerOptions(jump_length=2, jump_n_sample=3))
    planned = plan(options, prior)
    assert planned.calls == setting.calls and planned.diffusion.num_timesteps == 12
    assert describe_plan(planned).startswith("sampler=repaint (T=12 j=2 r=3 step=ddpm")


def test_a_run_from_options_is_the_run_from_its_config(ckpt, tmp_path, one_thread):
    (tmp_path / "images").mkdir()
    images = write_random_images(tmp_path / "images", (8, 8, 3), (10, 12, 3))
    cfg = _sample_yaml(f"ckpt={ckpt}", f"images={images}", "mask=half", "n_samples=2",
                       "batch_size=3", "jump_length=3", "jump_n_sample=2", "progress=false",
                       f"out={tmp_path / 'cfg'}")
    from_config = run(cfg)
    options = replace(RunOptions.from_config(cfg), out=str(tmp_path / "typed"))
    from_options = run(options)
    assert [p.name for p in from_config] == [p.name for p in from_options]
    for a, b in zip(from_config, from_options, strict=True):
        assert a.read_bytes() == b.read_bytes()
    record = yaml.safe_load((tmp_path / "typed" / "run.yaml").read_text())
    assert record["config"] == options.to_config()
    # the record, fed back, is the same run: a re-run resumes instead of refusing
    assert run(record["config"]) == from_options
