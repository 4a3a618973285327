"""Loading guided-diffusion / improved-diffusion checkpoints reproduces the reference outputs."""

from pathlib import Path

import pytest
import torch

from priorpaint.models import (
    UNet,
    timestep_embedding,
    unet_config_from_create_model_args,
    unet_from_guided_diffusion,
    unet_from_improved_diffusion,
)

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "golden"


def golden(name: str) -> dict:
    path = GOLDEN / name
    if not path.exists():
        pytest.skip(f"golden file {path} not present (shared data not mounted)")
    return torch.load(path, weights_only=True)


def run(model: UNet, g: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(g["x"], g["t"])


def test_guided_tiny_reproduces_reference_output():
    g = golden("unet_guided_tiny.pt")
    assert all(v.dtype == torch.float16 for v in g["state_dict"].values())
    model = unet_from_guided_diffusion(g["config"], g["state_dict"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == g["num_parameters"]
    torch.testing.assert_close(run(model, g), g["out"], rtol=0, atol=1e-5)
    emb = timestep_embedding(g["t"], g["config"]["model_channels"])
    torch.testing.assert_close(emb, g["timestep_embedding"], rtol=0, atol=1e-6)


def test_guided_tiny_from_create_model_args():
    g = golden("unet_guided_tiny.pt")
    assert unet_config_from_create_model_args(g["create_model_args"]) == g["config"]
    model = unet_from_guided_diffusion(g["create_model_args"], g["state_dict"])
    torch.testing.assert_close(run(model, g), g["out"], rtol=0, atol=1e-5)


def test_improved_tiny_reproduces_reference_output():
    g = golden("unet_improved_tiny.pt")
    model = unet_from_improved_diffusion(g["config"], g["state_dict"])
    assert sum(p.numel() for p in model.parameters()) == g["num_parameters"]
    torch.testing.assert_close(run(model, g), g["out"], rtol=0, atol=1e-5)


def test_wrong_learn_sigma_names_out_channels():
    g = golden("unet_guided_tiny.pt")
    with pytest.raises(ValueError, match=r"out\.2 has 6 output channels but config says "
                                         r"out_channels=3: learn_sigma was true"):
        unet_from_guided_diffusion({**g["config"], "out_channels": 3}, g["state_dict"])
    args = {**g["create_model_args"], "learn_sigma": False}
    with pytest.raises(ValueError, match="set out_channels=6"):
        unet_from_guided_diffusion(args, g["state_dict"])


def test_wrong_resblock_updown_is_diagnosed():
    g = golden("unet_guided_tiny.pt")
    with pytest.raises(ValueError, match=r"input_blocks\.2\.0\.op missing.*resblock_updown is "
                                         r"probably True") as err:
        unet_from_guided_diffusion({**g["config"], "resblock_updown": False}, g["state_dict"])
    assert "missing keys: input_blocks.2.0.op.weight" in str(err.value)
    i = golden("unet_improved_tiny.pt")
    with pytest.raises(ValueError, match="resblock_updown is probably False"):
        unet_from_guided_diffusion({**i["config"], "resblock_updown": True}, i["state_dict"])


def test_other_mismatches_are_diagnosed():
    g = golden("unet_guided_tiny.pt")
    with pytest.raises(ValueError, match=r"no label_emb.*num_classes=None"):
        unet_from_guided_diffusion({**g["config"], "num_classes": 10}, g["state_dict"])
    with pytest.raises(ValueError, match="attention_resolutions"):
        unet_from_guided_diffusion({**g["config"], "attention_resolutions": [16, 8]},
                                   g["state_dict"])
    with pytest.raises(ValueError, match="use_scale_shift_norm is probably True"):
        unet_from_guided_diffusion({**g["config"], "use_scale_shift_norm": False},
                                   g["state_dict"])
    i = golden("unet_improved_tiny.pt")
    with pytest.raises(ValueError, match="conv_resample is probably True"):
        unet_from_improved_diffusion({**i["config"], "conv_resample": False}, i["state_dict"])


def test_config_errors():
    g = golden("unet_improved_tiny.pt")
    with pytest.raises(ValueError, match="dims=3"):
        unet_from_improved_diffusion({**g["config"], "dims": 3}, g["state_dict"])
    with pytest.raises(ValueError, match=r"no argument\(s\) \['resblock_updown'\]"):
        unet_from_improved_diffusion({**g["config"], "resblock_updown": False},
                                     g["state_dict"])
    with pytest.raises(ValueError, match="unknown guided-diffusion UNetModel argument"):
        unet_from_guided_diffusion({**g["config"], "learn_sigma": True}, g["state_dict"])


def test_create_model_args_defaults():
    base = dict(image_size=64, num_channels=128, num_res_blocks=3, attention_resolutions="16,8",
                class_cond=True, learn_sigma=True, diffusion_steps=4000)
    cfg = unet_config_from_create_model_args(base)
    assert cfg["channel_mult"] == [1, 2, 3, 4] and cfg["attention_resolutions"] == [4, 8]
    assert cfg["num_classes"] == 1000 and cfg["out_channels"] == 6
    small = {**base, "image_size": 32}
    with pytest.raises(ValueError, match="no default channel_mult for image_size=32"):
        unet_config_from_create_model_args(small)
    assert unet_config_from_create_model_args(
        {k: v for k, v in small.items() if k != "channel_mult"}, "improved"
    )["channel_mult"] == [1, 2, 2, 2]
    with pytest.raises(ValueError, match=r"unknown .* argument\(s\) \['typo'\]"):
        unet_config_from_create_model_args({**base, "typo": 1})
