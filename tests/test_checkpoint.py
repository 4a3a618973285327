"""The checkpoint alone rebuilds network and diffusion (save_prior / load_prior / Lightning)."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_unet_config

from priorpaint.checkpoint import MODEL_PREFIX, load_prior, save_prior, torch_file_problem
from priorpaint.cli import UserError
from priorpaint.diffusion import GaussianDiffusion
from priorpaint.models import UNet

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = tiny_unet_config(1, attention_resolutions=(2,), use_scale_shift_norm=True)
DIFFUSION = {"schedule": "cosine", "steps": 50, "mean_type": "eps", "var_type": "learned_range",
             "loss": "hybrid"}


def _perturbed(model: torch.nn.Module, scale: float, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=generator) if v.is_floating_point()
            else v for k, v in model.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_prior_round_trip_ema_and_raw(tmp_path):
    torch.manual_seed(0)
    model = UNet(**TINY)
    diffusion = GaussianDiffusion.from_config(DIFFUSION)
    ema = _perturbed(model, 0.01, seed=1)
    path = save_prior(tmp_path / "p.pt", model, diffusion, (8, 8), 1, ema_state_dict=ema,
                      extra={"note": "test"})

    prior = load_prior(path)
    assert prior.weights == "ema" and not prior.model.training
    assert _same_weights(prior.model.state_dict(), ema)
    assert prior.image_size == (8, 8) and prior.channels == 1
    assert prior.diffusion.num_timesteps == 50 and prior.diffusion.config == DIFFUSION
    assert prior.info["note"] == "test" and prior.info["normalization"] == "[-1,1]"

    raw = load_prior(path, use_ema=False)
    assert raw.weights == "raw" and _same_weights(raw.model.state_dict(), model.state_dict())

    # The rebuilt network computes what the saved one computes.
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 49])
    with torch.no_grad():
        assert torch.allclose(raw.model(x, t), model.eval()(x, t))


def test_prior_without_ema_falls_back_to_raw(tmp_path):
    model = UNet(**TINY)
    path = save_prior(tmp_path / "p.pt", model, GaussianDiffusion.from_config(DIFFUSION), 8, 1)
    prior = load_prior(path)
    assert prior.weights == "raw" and prior.image_size == (8, 8)


def test_load_prior_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_prior(tmp_path / "nope.ckpt")

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt is not a priorpaint checkpoint"):
        load_prior(foreign)

    broken = tmp_path / "broken.pt"
    torch.save({"priorpaint": {"format": 1, "model_config": TINY}}, broken)
    with pytest.raises(ValueError, match=r"broken.pt.*lacks.*diffusion_config"):
        load_prior(broken)

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.ckpt"):
        load_prior(garbage)


def test_mismatched_weights_are_reported(tmp_path):
    model = UNet(**TINY)
    path = save_prior(tmp_path / "p.pt", model, GaussianDiffusion.from_config(DIFFUSION), 8, 1)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["priorpaint"]["model_config"]["model_channels"] = 64
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="do not fit the saved model_config"):
        load_prior(path)


# -------------------------------------------------- broken files vs files holding objects
def _cut(path, out, size=20_000):
    out.write_bytes(path.read_bytes()[:size])
    return out


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_broken_file_is_not_advised_to_be_trusted(tmp_path, zip_format):
    """A cut, garbage or text file is 'not a complete checkpoint'; never 'pass trusted=True'."""
    whole = tmp_path / "whole.ckpt"
    model = UNet(**TINY)
    state = {"state_dict": {MODEL_PREFIX + k: v for k, v in model.state_dict().items()},
             "args": argparse.Namespace(lr=1)}   # a real file holding a pickled object
    torch.save(state, whole, _use_new_zipfile_serialization=zip_format)
    notes = tmp_path / "notes.txt"
    notes.write_text("e" * 200)   # torch trips with KeyError: 101 on this one
    # the 20 KB of a zip checkpoint; a legacy file cut inside its pickles
    cut = _cut(whole, tmp_path / "cut.ckpt", 20_000 if zip_format else 300)
    for broken in (cut, notes, tmp_path / "empty.ckpt"):
        broken.touch()
        with pytest.raises(UserError, match="is not a complete checkpoint: corrupt, truncated or "
                                            "another format") as caught:
            load_prior(broken)
        assert "trusted" not in str(caught.value) and str(broken) in str(caught.value)
    kind = "complete torch file" if zip_format else r"legacy \(pre-1.6\) torch file"
    with pytest.raises(UserError, match=kind + r" that holds pickled objects "
                                        r"\(argparse.Namespace\).*trusted=True"):
        load_prior(whole)
    with pytest.raises(ValueError, match="not a priorpaint checkpoint"):  # trusted: it loads
        load_prior(whole, trusted=True)


def test_torch_file_problem_reads_structure_only(tmp_path):
    path = save_prior(tmp_path / "p.pt", UNet(**TINY), GaussianDiffusion.from_config(DIFFUSION),
                      8, 1)
    assert torch_file_problem(path) is None
    assert "cut short" in torch_file_problem(_cut(path, tmp_path / "cut.pt", 5_000))
    (tmp_path / "text").write_text("hello")
    assert "neither a zip nor a legacy torch file" in torch_file_problem(tmp_path / "text")


# -------------------------------------------------- every prior is assembled with one set of checks
def test_a_network_whose_output_does_not_fit_the_diffusion_is_refused_naming_the_file(tmp_path):
    fixed = {**DIFFUSION, "var_type": "fixed_small", "loss": "mse"}
    path = save_prior(tmp_path / "mixed.pt", UNet(**TINY), GaussianDiffusion.from_config(fixed),
                      8, 1)   # a 2-channel output (learned variance) under a fixed variance
    with pytest.raises(ValueError, match=r"mixed\.pt: the network returns out_channels=2, but "
                                         r"var_type='fixed_small' needs 1 for 1-channel images"):
        load_prior(path)


def test_an_image_size_the_network_cannot_take_is_refused_naming_the_file(tmp_path):
    path = save_prior(tmp_path / "odd.pt", UNet(**TINY), GaussianDiffusion.from_config(DIFFUSION),
                      (8, 7), 1)
    with pytest.raises(ValueError, match=r"odd\.pt: input size H x W = 8 x 7 does not fit"):
        load_prior(path)


def _fresh_python(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("order", [("checkpoint", "diffusers_prior"),
                                   ("diffusers_prior", "checkpoint")])
def test_the_loaders_import_in_either_order(order):
    _fresh_python("\n".join(f"import priorpaint.{name}" for name in order))


@pytest.mark.parametrize("module,below", [
    ("weights_io", ("checkpoint", "diffusers_prior")),   # the leaf pulls in neither loader
    ("diffusers_prior", ("checkpoint",)),                # parts, not Priors: no way back up
])
def test_imports_go_one_way_checkpoint_diffusers_prior_weights_io(module, below):
    """checkpoint -> diffusers_prior -> weights_io, and no module-level import back up: an
    import that closed the cycle would still pass the order test above, not this one."""
    _fresh_python(f"import priorpaint.{module}\n"
                  f"loaded = [m for m in {[f'priorpaint.{b}' for b in below]!r} "
                  f"if m in sys.modules]\n"
                  f"assert not loaded, f'priorpaint.{module} imports {{loaded}}'")
