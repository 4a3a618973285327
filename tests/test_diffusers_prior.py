"""diffusers-format priors: a tiny UNet2DModel + DDPMScheduler saved here, loaded and sampled.

Nothing is downloaded: every folder is made with diffusers' own ``save_pretrained``. The
references are diffusers' own ``UNet2DModel`` forward and ``DDPMScheduler.step``.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import write_random_images

diffusers = pytest.importorskip("diffusers", reason="the [diffusers] extra is not installed")
pytest.importorskip("safetensors", reason="the [diffusers] extra is not installed")
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from priorpaint.checkpoint import load_prior  # noqa: E402
from priorpaint.convert import convert_diffusers  # noqa: E402
from priorpaint.convert import main as convert_main  # noqa: E402
from priorpaint.diffusion import GaussianDiffusion, betas_for  # noqa: E402
from priorpaint.diffusion.from_diffusers import diffusion_config_from_scheduler  # noqa: E402
from priorpaint.sampling import api  # noqa: E402
from priorpaint.sampling.options import RunOptions, clip_denoised  # noqa: E402
from priorpaint.sampling.run import run  # noqa: E402
from priorpaint.sampling.steps import compile_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def tiny_unet(channels=3, out_channels=None, seed=0, **kwargs) -> UNet2DModel:
    """sample_size 16, widths (32, 64), one attention level; weights perturbed so the
    output is not the near-constant of a fresh init."""
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=16, in_channels=channels,
                       out_channels=out_channels or channels, block_out_channels=(32, 64),
                       layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), **kwargs)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def save_folder(path: Path, channels=3, flat=False, safe=True, unet_kwargs=None, **scheduler):
    """A DDPMPipeline-style folder (unet/ + scheduler/ + model_index.json) or a flat one."""
    variance = scheduler.get("variance_type", "fixed_small")
    learned = variance in ("learned", "learned_range")
    unet = tiny_unet(channels, 2 * channels if learned else channels, **(unet_kwargs or {}))
    sched = DDPMScheduler(**scheduler)
    if flat:
        unet.save_pretrained(path, safe_serialization=safe)
        sched.save_pretrained(path)
    else:
        diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(
            path, safe_serialization=safe)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_folder(tmp_path_factory.mktemp("hub") / "ddpm-tiny")


def edit_scheduler(folder: Path, **changes) -> Path:
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return folder


# ---------------------------------------------------------------- the network
def test_adapter_call_equals_diffusers_own(folder):
    prior = load_prior(folder)
    reference = UNet2DModel.from_pretrained(folder / "unet").eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 421, 999])
    with torch.no_grad():
        ours, theirs = prior.model(x, t), reference(x, t).sample
    assert torch.equal(ours, theirs)
    assert prior.image_size == (16, 16) and prior.channels == 3
    assert prior.model.config["diffusers_config"]["block_out_channels"] == [32, 64]


def test_class_conditional_grey_unet_takes_labels(tmp_path):
    folder = save_folder(tmp_path / "cond", channels=1, unet_kwargs={"num_class_embeds": 4})
    prior = load_prior(folder)
    reference = UNet2DModel.from_pretrained(folder / "unet").eval()
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([10, 700]), torch.tensor([3, 0])
    with torch.no_grad():
        assert torch.equal(prior.model(x, t, y), reference(x, t, class_labels=y).sample)
        assert not torch.equal(prior.model(x, t, y), prior.model(x, t, torch.tensor([0, 3])))
    assert prior.model.num_classes == 4 and prior.channels == 1
    with pytest.raises(ValueError, match="class labels y are required"):
        prior.model(x, t)


def test_flat_bin_folder_with_legacy_attention_names_loads_the_same(folder, tmp_path):
    """The same files flat in one folder, weights as a .bin (weights-only torch.load) with
    the pre-0.15 attention names (query/key/value/proj_attn) that old hub folders have."""
    flat = tmp_path / "flat"
    flat.mkdir()
    state = UNet2DModel.from_pretrained(folder / "unet").state_dict()
    legacy = {k.replace("to_q.", "query.").replace("to_k.", "key.").replace("to_v.", "value.")
              .replace("to_out.0.", "proj_attn."): v for k, v in state.items()}
    assert any(".query." in k for k in legacy)
    torch.save(legacy, flat / "diffusion_pytorch_model.bin")
    for name in ("unet/config.json", "scheduler/scheduler_config.json"):
        (flat / Path(name).name).write_text((folder / name).read_text())
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(load_prior(flat).model(x, t), load_prior(folder).model(x, t))


def test_bin_holding_pickled_objects_is_refused(folder, tmp_path):
    flat = tmp_path / "evil"
    flat.mkdir()
    for name in ("unet/config.json", "scheduler/scheduler_config.json"):
        (flat / Path(name).name).write_text((folder / name).read_text())
    torch.save({"weights": Path("not a tensor")}, flat / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="weights-only"):
        load_prior(flat)


# ---------------------------------------------------------------- the diffusion
@pytest.mark.parametrize("scheduler", [
    dict(beta_schedule="linear"),
    dict(beta_schedule="linear", beta_start=0.0002, beta_end=0.03, num_train_timesteps=300),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(beta_schedule="sigmoid", beta_start=0.0001, beta_end=0.02, num_train_timesteps=200),
    dict(trained_betas=np.linspace(1e-4, 0.05, 50).tolist(), num_train_timesteps=50),
])
def test_schedules_equal_diffusers_betas(scheduler):
    reference = DDPMScheduler(**scheduler)
    config, _ = diffusion_config_from_scheduler(dict(reference.config))
    diffusion = GaussianDiffusion.from_config(config)
    # diffusers rounds the same formulas to float32; priorpaint keeps float64
    torch.testing.assert_close(diffusion.betas.float(), reference.betas, rtol=2e-6, atol=0)
    torch.testing.assert_close(diffusion.alphas_cumprod.float(), reference.alphas_cumprod,
                               rtol=2e-5, atol=1e-7)


def test_squaredcos_cap_v2_is_the_cosine_schedule_and_scaled_linear_is_squared():
    config, _ = diffusion_config_from_scheduler({"beta_schedule": "squaredcos_cap_v2",
                                                 "num_train_timesteps": 1000})
    assert config["schedule"] == "cosine"
    torch.testing.assert_close(DDPMScheduler(beta_schedule="squaredcos_cap_v2").betas.double(),
                               betas_for("cosine", 1000), rtol=1e-6, atol=0)
    assert float(betas_for("cosine", 1000).max()) == 0.999       # the 0.999 cap, both sides
    scaled = betas_for("scaled_linear", 5, 0.01, 0.09)
    torch.testing.assert_close(scaled, torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3],
                                                    dtype=torch.float64) ** 2)


def _our_step(diffusion, t, x, model, noise, clip):
    """One real ancestral step of priorpaint's sampler at index t (no callbacks), float64."""
    plan = compile_plan(diffusion, list(range(t, -2, -1)), x.shape[0], x.shape[1],
                        step="ddpm", clip_denoised=clip, dtype=torch.float64)
    return plan[0](x, model, lambda: noise)


def _float64(reference: DDPMScheduler) -> DDPMScheduler:
    """The scheduler's own β, with ᾱ and its step maths in float64: in float32, 1 - ᾱ_1 ≈ 3e-4
    keeps only ~3 digits, which would hide a wrong formula as well as a right one."""
    reference.betas = reference.betas.double()
    reference.alphas = 1.0 - reference.betas
    reference.alphas_cumprod = torch.cumprod(reference.alphas, dim=0)
    reference.one = torch.tensor(1.0, dtype=torch.float64)
    return reference


def _noise(shape, seed):
    """What DDPMScheduler.step draws for its variance noise given this seed (float64 state)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


STEP_CASES = [
    ("fixed_small", "epsilon"), ("fixed_small", "sample"), ("fixed_small", "v_prediction"),
    ("fixed_large", "epsilon"), ("fixed_small_log", "epsilon"), ("learned_range", "epsilon"),
    ("learned", "v_prediction"),
]


@pytest.mark.parametrize("variance_type,prediction_type", STEP_CASES)
@pytest.mark.parametrize("t", [999, 371, 1, 0])
def test_ancestral_step_equals_ddpm_scheduler_step(variance_type, prediction_type, t):
    reference = DDPMScheduler(variance_type=variance_type, prediction_type=prediction_type,
                              clip_sample=prediction_type != "sample")
    config, hints = diffusion_config_from_scheduler(dict(reference.config))
    diffusion = GaussianDiffusion.from_config(config)
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    raw = 1.5 * torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)   # clipping matters
    if variance_type == "learned":      # diffusers: these channels are σ² itself
        var = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 0.02 + 1e-4
        raw = torch.cat([raw, var], 1)
    elif variance_type == "learned_range":
        raw = torch.cat([raw, torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1], 1)
    seen = []

    def model(x_t, model_t):              # the adapter's layout: log σ² for diffusers' learned
        seen.append(model_t)
        if hints["variance_to_log"]:
            return torch.cat([raw[:, :3], raw[:, 3:].log()], 1)
        return raw

    expected = _float64(reference).step(raw, t, x,
                                        generator=torch.Generator().manual_seed(5)).prev_sample
    ours = _our_step(diffusion, t, x, model, _noise(x.shape, 5), hints["clip_denoised"])
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    assert seen[0].tolist() == [t, t]


@pytest.mark.parametrize("variance_type", ["fixed_small", "learned_range"])
def test_respaced_step_equals_scheduler_with_fewer_inference_steps(variance_type):
    """DDPMScheduler.set_timesteps(50) ('leading', T=1000: every 20th step from 0) jumps
    between the same ᾱ as priorpaint's respacing 'ddim50'."""
    reference = _float64(DDPMScheduler(variance_type=variance_type))
    reference.set_timesteps(50)
    config, _ = diffusion_config_from_scheduler(dict(reference.config))
    diffusion = GaussianDiffusion.from_config(config).respace("ddim50")
    assert diffusion.timestep_map.tolist() == reference.timesteps.flip(0).tolist()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    channels = 3 if variance_type == "fixed_small" else 6
    raw = torch.randn(1, channels, 8, 8, generator=g, dtype=torch.float64).clamp(-1, 1)
    expected = reference.step(raw, 500, x, generator=torch.Generator().manual_seed(2)).prev_sample
    ours = _our_step(diffusion, 25, x, lambda x_t, t: raw, _noise(x.shape, 2), True)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)


def test_learned_variance_channels_come_back_as_their_log(tmp_path):
    folder = save_folder(tmp_path / "learned", variance_type="learned")
    prior = load_prior(folder)
    reference = UNet2DModel.from_pretrained(folder / "unet").eval()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300])
    with torch.no_grad():
        ours, theirs = prior.model(x, t), reference(x, t).sample
        raw = prior.model.unet(x, t).sample    # the wrapped network's own output
    assert prior.diffusion.var_type == "learned" and prior.model.variance_to_log
    assert torch.equal(ours[:, :3], raw[:, :3])
    assert torch.equal(ours[:, 3:], raw[:, 3:].clamp(min=1e-20).log())
    # two instances of one diffusers UNet with equal weights agree bit for bit on some CPUs and
    # to float rounding on others (1.9e-6 of 3.1 seen on an AMD EPYC)
    torch.testing.assert_close(raw, theirs)


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("changes,name", [
    ({"thresholding": True}, "thresholding"),
    ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ({"clip_sample_range": 2.0}, "clip_sample_range"),
    ({"variance_type": "fixed_medium"}, "variance_type"),
    ({"prediction_type": "flow"}, "prediction_type"),
    ({"beta_schedule": "laplace"}, "beta_schedule"),
    ({"snr_shift": 0.5}, "snr_shift"),
    ({"_class_name": "ScoreSdeVeScheduler"}, "_class_name"),
])
def test_unsupported_scheduler_settings_are_refused_by_name(folder, tmp_path, changes, name):
    bad = tmp_path / "bad"
    for file in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json"):
        (bad / file).parent.mkdir(parents=True, exist_ok=True)
        (bad / file).write_bytes((folder / file).read_bytes())
    edit_scheduler(bad, **changes)
    with pytest.raises(ValueError, match=name):
        load_prior(bad)


def test_harmless_keys_are_accepted(folder, tmp_path):
    """Inference-only keys of DDIM/PNDM/RePaint scheduler configs change nothing here."""
    config, _ = diffusion_config_from_scheduler({
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.1.1", "set_alpha_to_one": False,
        "steps_offset": 1, "timestep_spacing": "trailing", "skip_prk_steps": True, "eta": 0.5,
        "tensor_format": "pt", "clip_sample": False})
    assert config == diffusion_config_from_scheduler({"clip_sample": False})[0]


def test_convert_cli_refuses_a_bad_scheduler_with_one_line(folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json"):
        (bad / Path(name).name).write_bytes((folder / name).read_bytes())
    config = json.loads((bad / "scheduler_config.json").read_text())
    (bad / "scheduler_config.json").write_text(json.dumps({**config, "thresholding": True}))
    result = subprocess.run([sys.executable, "-m", "priorpaint.convert", "diffusers", str(bad),
                             str(tmp_path / "out.ckpt")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "thresholding" in lines[0] and "scheduler_config.json" in lines[0]
    assert not (tmp_path / "out.ckpt").exists()


def test_latent_pipelines_are_refused(folder, tmp_path):
    index = json.loads((folder / "model_index.json").read_text())
    latent = tmp_path / "ldm"
    latent.mkdir()
    (latent / "model_index.json").write_text(json.dumps({**index, "vqvae": ["diffusers",
                                                                            "VQModel"]}))
    with pytest.raises(ValueError, match="vqvae"):
        load_prior(latent)


def test_out_channels_that_do_not_fit_the_scheduler_are_refused_naming_the_config(tmp_path):
    """A 3-channel-output UNet under a learned-variance scheduler: loading and converting
    both stop before the network is built, naming the UNet's config.json."""
    folder = edit_scheduler(save_folder(tmp_path / "f"), variance_type="learned_range")
    want = r"unet[/\\]config\.json: the network returns out_channels=3, but var_type='learned_range'"
    with pytest.raises(ValueError, match=want):
        load_prior(folder)
    with pytest.raises(ValueError, match=want):
        convert_diffusers(folder, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


def test_an_image_size_the_unet_cannot_take_is_refused_naming_the_folder(folder, tmp_path):
    with pytest.raises(ValueError, match=r"ddpm-tiny: input size H x W = 7 x 7 does not fit"):
        convert_diffusers(folder, tmp_path / "out.ckpt", {"image_size": 7})
    assert not (tmp_path / "out.ckpt").exists()


# ---------------------------------------------------------------- convert, sample, train
def test_convert_round_trip_gives_the_folder_outputs(folder, tmp_path):
    out = tmp_path / "tiny.ckpt"
    assert convert_main(["diffusers", str(folder), str(out)]) == 0
    direct, converted = load_prior(folder), load_prior(out)
    assert converted.model.config == direct.model.config
    assert converted.diffusion.config == direct.diffusion.config
    assert converted.info["sampling"] == direct.info["sampling"] == {"clip_denoised": True}
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 800])
    with torch.no_grad():
        assert torch.equal(converted.model(x, t), direct.model(x, t))
    x0 = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)

    def inpaint(prior):
        return api.inpaint(prior.model, prior.diffusion, x0, mask, sampler="ddpm", steps=10,
                           generators=[torch.Generator().manual_seed(0)])

    assert torch.equal(inpaint(converted), inpaint(direct))


def test_repaint_on_the_loaded_prior_keeps_known_pixels(folder):
    prior = load_prior(folder)
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8] = 1.0
    out = api.inpaint(prior.model, prior.diffusion, x0, mask, sampler="repaint", steps=10,
                      jump_length=2, jump_n_sample=2, seed=0)
    assert torch.equal(out * mask, x0 * mask)
    assert not torch.equal(out * (1 - mask), x0 * (1 - mask))
    assert bool(torch.isfinite(out).all())


def config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="sample", overrides=["progress=false", *overrides])


@pytest.mark.parametrize("sampler", ["repaint", "ddpm", "ddim"])
def test_every_sampler_inpaints_from_the_folder(folder, tmp_path, sampler):
    images = tmp_path / "images"
    images.mkdir()
    write_random_images(images, (16, 16, 3))
    out = tmp_path / "out"
    run(config(f"ckpt={folder}", f"images={images}", "mask=half", f"out={out}", "steps=10",
               f"sampler={sampler}", "jump_length=2", "jump_n_sample=2"))
    source, result = (np.asarray(Image.open(p)) for p in (images / "a.png", out / "a_s0.png"))
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert record["resolved"]["steps"] == 10 and record["resolved"]["model_steps"] == 1000
    assert len(record["checkpoint"]["sha256"]) == 64
    assert result.shape == source.shape and not np.array_equal(result, source)


def test_sample_py_runs_on_the_folder(folder, tmp_path):
    out = tmp_path / "samples"
    result = subprocess.run([sys.executable, "sample.py", f"ckpt={folder}", "n_samples=2",
                             "steps=10", "sampler=ddim", f"out={out}", "progress=false",
                             "num_threads=1"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["sample_s0.png", "sample_s1.png",
                                                         "samples_grid.png"]


def test_clip_sample_false_becomes_the_default_clip_denoised(folder, tmp_path):
    free = save_folder(tmp_path / "noclip", clip_sample=False, prediction_type="sample")
    prior = load_prior(free)
    assert prior.diffusion.mean_type == "x0"
    assert clip_denoised("auto", prior) is False
    assert clip_denoised(True, prior) is True
    assert clip_denoised("auto", load_prior(folder)) is True
    with pytest.raises(ValueError, match="clip_denoised=maybe"):
        clip_denoised("maybe", prior)
    with pytest.raises(ValueError, match="clip_denoised=maybe"):   # parsed options check it too
        RunOptions.from_config({"clip_denoised": "maybe"})


def test_train_py_init_from_fine_tunes_a_converted_diffusers_prior(folder, tmp_path):
    from priorpaint.lightning.launch import compose_config, run_training

    ckpt = tmp_path / "tiny.ckpt"
    assert convert_main(["diffusers", str(folder), str(ckpt)]) == 0
    base = ["experiment=none", "data=digits", "data.image_size=16", "data.channels=3", "data.batch_size=2",
            "trainer.max_steps=2", "trainer.precision=32-true", "num_threads=1",
            "logger=none", "~callbacks.sample_grid", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "module.optimizer.lr=1e-3",
            "module.lr_schedule.warmup_steps=200",   # small steps: stays near the prior
            "module.ema.rates='0.5'", f"run_dir={tmp_path / 'run'}", f"init_from={ckpt}"]
    result = run_training(compose_config(base))
    assert type(result.module.model).__name__ == "DiffusersUNet"
    assert result.module.diffusion.config == load_prior(ckpt).diffusion.config
    tuned = load_prior(result.last_checkpoint)
    original = load_prior(ckpt)
    assert tuned.model.config == original.model.config
    changed = [k for k, v in tuned.model.state_dict().items()
               if not torch.equal(v, original.model.state_dict()[k])]
    assert changed   # two AdamW steps at lr 1e-3 moved the weights
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        delta = (tuned.model(x, t) - original.model(x, t)).abs().max()
    assert 0 < delta < 1.0   # fine-tuned from the prior, not re-initialised


def test_class_conditional_folder_samples_with_class_label(tmp_path):
    folder = save_folder(tmp_path / "cond", channels=1, unet_kwargs={"num_class_embeds": 4})
    out = tmp_path / "out"
    run(config(f"ckpt={folder}", "n_samples=2", "steps=5", "sampler=ddim", "class_label=2",
               f"out={out}"))
    record = yaml.safe_load((out / "run.yaml").read_text())
    assert [o["class_label"] for o in record["outputs"]] == [2, 2]
    assert np.asarray(Image.open(out / "sample_s0.png")).shape == (16, 16)
    with pytest.raises(ValueError, match="class_label=4 is out of range"):
        run(config(f"ckpt={folder}", "steps=5", "class_label=4", f"out={tmp_path / 'bad'}"))
