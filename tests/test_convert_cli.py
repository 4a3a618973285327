"""`python -m priorpaint.convert`: published reference checkpoints -> priorpaint checkpoints."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from tiny import tiny_unet, tiny_unet_config

from priorpaint.checkpoint import load_prior, save_prior
from priorpaint.convert import PRESETS, convert, diffusion_config_from_flags, main
from priorpaint.diffusion import GaussianDiffusion
from priorpaint.models import UNet
from priorpaint.sampling.run import run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def guided(golden):
    return golden("unet_guided_tiny.pt")


@pytest.fixture(scope="module")
def guided_pt(guided, tmp_path_factory):
    """The golden reference network's weights as the bare state dict a user downloads."""
    path = tmp_path_factory.mktemp("published") / "tiny_guided.pt"
    torch.save(guided["state_dict"], path)
    return path


def _flags(guided) -> list[str]:
    return [f"{k}={v}" for k, v in guided["create_model_args"].items()]


def test_converted_guided_checkpoint_computes_the_reference_output(guided, guided_pt, tmp_path):
    out = tmp_path / "tiny.ckpt"
    assert main(["guided-diffusion", str(guided_pt), str(out), *_flags(guided),
                 "diffusion_steps=1000", "noise_schedule=linear"]) == 0
    prior = load_prior(out)
    with torch.no_grad():
        actual = prior.model(guided["x"], guided["t"])
    torch.testing.assert_close(actual, guided["out"], rtol=0, atol=1e-5)
    assert prior.image_size == (32, 32) and prior.channels == 3
    assert prior.diffusion.var_type == "learned_range" and prior.diffusion.num_timesteps == 1000
    assert not prior.diffusion.rescale_timesteps   # guided-diffusion never rescaled


def test_improved_diffusion_flags_keep_its_timestep_rescaling(tmp_path):
    """improved-diffusion's CLI defaulted to rescale_timesteps=True: the converted diffusion
    must feed the network t·1000/T, or a published T=4000 model samples garbage."""
    flags = dict(image_size=32, num_channels=32, num_res_blocks=1, learn_sigma=True,
                 attention_resolutions="16", diffusion_steps=4000, noise_schedule="cosine")
    torch.manual_seed(0)
    reference = UNet(**tiny_unet_config(3, attention_resolutions=(2,), channel_mult=(1, 2, 2, 2),
                                        num_heads=4, use_scale_shift_norm=True))
    published = tmp_path / "improved.pt"
    torch.save({k: v.half() for k, v in reference.state_dict().items()}, published)
    out = convert("improved-diffusion", published, tmp_path / "c.ckpt",
                  overrides={k: v for k, v in flags.items()})
    prior = load_prior(out)
    assert prior.diffusion.rescale_timesteps and prior.diffusion.loss == "hybrid"
    assert prior.diffusion.model_timesteps(torch.tensor([3999])).tolist() == [999.75]
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    with torch.no_grad():
        expected = reference.half().float()(x, t)
        torch.testing.assert_close(prior.model(x, t), expected, rtol=0, atol=1e-5)


def test_presets_are_the_published_configurations():
    celeba = PRESETS["repaint"]["celeba256"]
    assert celeba["attention_resolutions"] == "32,16,8" and celeba["num_head_channels"] == 64
    assert celeba["resblock_updown"] and celeba["learn_sigma"] and not celeba["class_cond"]
    assert PRESETS["repaint"]["imagenet256"]["class_cond"]
    assert diffusion_config_from_flags({**celeba, "rescale_learned_sigmas": False}) == {
        "schedule": "linear", "steps": 1000, "mean_type": "eps", "var_type": "learned_range",
        "loss": "mse"}
    cifar = diffusion_config_from_flags({**PRESETS["improved"]["cifar10-vlb"],
                                         "rescale_timesteps": True})
    assert cifar["loss"] == "rescaled_kl" and cifar["schedule"] == "cosine"


def test_mismatched_config_names_the_likely_cause(guided, guided_pt, tmp_path, capsys):
    flags = [f for f in _flags(guided) if not f.startswith("learn_sigma")]
    code = main(["guided-diffusion", str(guided_pt), str(tmp_path / "x.ckpt"), *flags,
                 "learn_sigma=False"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(guided_pt) in err and "learn_sigma was true" in err
    with pytest.raises(ValueError, match="resblock_updown is probably True"):
        convert("guided-diffusion", guided_pt, tmp_path / "y.ckpt",
                overrides={**guided["create_model_args"], "resblock_updown": False})
    assert not (tmp_path / "x.ckpt").exists()


def test_bad_arguments_are_clear(guided_pt, tmp_path, capsys):
    assert main(["repaint", str(guided_pt), str(tmp_path / "o.ckpt")]) == 2
    assert "preset=NAME" in capsys.readouterr().err
    assert main(["repaint", str(tmp_path / "missing.pt"), str(tmp_path / "o.ckpt"),
                 "preset=celeba256"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["guided-diffusion", str(guided_pt), str(tmp_path / "o.ckpt"), "colour=red"]) == 2
    assert "unknown flag 'colour'" in capsys.readouterr().err


def test_converted_checkpoint_inpaints_through_sample_py(guided, guided_pt, tmp_path):
    ckpt = tmp_path / "tiny.ckpt"
    assert main(["guided-diffusion", str(guided_pt), str(ckpt), *_flags(guided),
                 "diffusion_steps=100", "noise_schedule=cosine"]) == 0
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "x.png")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[
            f"ckpt={ckpt}", f"images={images}", "mask=genhalf", f"out={tmp_path / 'out'}",
            "steps=10", "jump_length=2", "jump_n_sample=2", "progress=false"])
    written = run(cfg)
    result = np.asarray(Image.open(written[0]))
    assert result.shape == pixels.shape
    assert np.array_equal(result[:, :16], pixels[:, :16])   # known left half, exact
    record = yaml.safe_load((tmp_path / "out" / "run.yaml").read_text())
    assert record["resolved"]["steps"] == 10


def test_class_conditional_checkpoint_samples_with_labels(tmp_path):
    model = tiny_unet(3, seed=0, num_classes=5)
    ckpt = save_prior(tmp_path / "cond.ckpt", model,
                      GaussianDiffusion.from_config({"schedule": "cosine", "steps": 50}), 16, 3)
    outputs = {}
    for label in (1, 3):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name="sample", overrides=[
                f"ckpt={ckpt}", f"out={tmp_path / str(label)}", "n_samples=2", "steps=5",
                f"class_label={label}", "progress=false"])
        outputs[label] = [np.asarray(Image.open(p)) for p in run(cfg)]
        record = yaml.safe_load((tmp_path / str(label) / "run.yaml").read_text())
        assert [o["class_label"] for o in record["outputs"]] == [label, label]
    assert not np.array_equal(outputs[1][0], outputs[3][0])   # the label reaches the network
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[
            f"ckpt={ckpt}", f"out={tmp_path / 'bad'}", "class_label=9", "progress=false"])
    with pytest.raises(ValueError, match="class_label=9 is out of range"):
        run(cfg)


def test_module_entry_point_runs(guided, guided_pt, tmp_path):
    out = tmp_path / "cli.ckpt"
    result = subprocess.run([sys.executable, "-m", "priorpaint.convert", "guided-diffusion",
                             str(guided_pt), str(out), *_flags(guided)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and f"ckpt={out}" in result.stdout


def test_converted_checkpoint_fine_tunes_through_train_py(guided, guided_pt, tmp_path):
    """init_from= starts a run from the converted weights (network + diffusion from the file)."""
    from priorpaint.lightning.launch import compose_config, run_training

    ckpt = tmp_path / "tiny.ckpt"
    assert main(["guided-diffusion", str(guided_pt), str(ckpt), *_flags(guided),
                 "diffusion_steps=100", "noise_schedule=cosine"]) == 0
    base = ["experiment=none", "data=digits", "data.image_size=32", "data.channels=3", "data.batch_size=2",
            "trainer.max_steps=1", "trainer.precision=32-true", "num_threads=1",
            "logger=none", "~callbacks.sample_grid",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "module.optimizer.lr=0.0", f"run_dir={tmp_path / 'run'}", f"init_from={ckpt}"]
    result = run_training(compose_config(base))
    reference = load_prior(ckpt).model.state_dict()
    for key, value in result.module.model.state_dict().items():   # lr 0: still the converted
        assert torch.equal(value, reference[key]), key
    for key, value in result.module.emas[0].ema_model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert result.module.diffusion.num_timesteps == 100
    tuned = load_prior(result.last_checkpoint)
    assert tuned.model.config == load_prior(ckpt).model.config
    with pytest.raises(ValueError, match="3-channel prior but data.channels=1"):
        run_training(compose_config([*base, "data.channels=1"]))
    with pytest.raises(ValueError, match="not both"):
        run_training(compose_config([*base, f"ckpt_path={ckpt}"]))


@pytest.mark.parametrize("channels", [1, 4])
def test_grey_and_multichannel_guided_unets_convert_with_in_channels(tmp_path, channels,
                                                                      capsys):
    """Grey (1) and multi-channel (4) guided-diffusion models: in_channels is accepted,
    out_channels follows from it and learn_sigma, and without it the hints say so."""
    flags = ["image_size=16", "num_channels=32", "num_res_blocks=1", "channel_mult=1,2",
             "attention_resolutions=8", "learn_sigma=True", "diffusion_steps=50",
             "noise_schedule=cosine"]
    # guided-diffusion's UNetModel for those flags, built by hand (our names are the reference's)
    # jittered: a fresh init outputs zeros, and the comparison would mean nothing
    reference = tiny_unet(channels, seed=channels, attention_resolutions=(2,), num_heads=4,
                          use_scale_shift_norm=True)
    published = tmp_path / f"c{channels}.pt"
    torch.save({k: v.half() for k, v in reference.state_dict().items()}, published)

    out = tmp_path / f"c{channels}.ckpt"
    assert main(["guided-diffusion", str(published), str(out), *flags,
                 f"in_channels={channels}"]) == 0
    prior = load_prior(out)
    assert prior.channels == channels and prior.image_size == (16, 16)
    assert prior.model.config["out_channels"] == 2 * channels
    assert prior.diffusion.var_type == "learned_range"
    x, t = torch.randn(2, channels, 16, 16), torch.tensor([3, 40])
    with torch.no_grad():
        torch.testing.assert_close(prior.model(x, t), reference.half().float()(x, t),
                                   rtol=0, atol=1e-5)

    capsys.readouterr()
    assert main(["guided-diffusion", str(published), str(tmp_path / "x.ckpt"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"set in_channels={channels}" in err
    assert f"in_channels={channels} fixes both" in err and "learn_sigma was" not in err
    assert main(["guided-diffusion", str(published), str(tmp_path / "x.ckpt"),
                 *[f for f in flags if not f.startswith("learn_sigma")],
                 f"in_channels={channels}"]) == 2
    assert "learn_sigma was true" in capsys.readouterr().err   # 2 x channels outputs
