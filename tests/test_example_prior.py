"""The prior shipped in examples/priors/ loads on a fresh clone and inpaints the shipped digits.

(Quality is the inpainting study's business; that a trained prior beats an untrained one under
every sampler is tests/test_samplers.py's.)"""

from pathlib import Path

import torch

from priorpaint.checkpoint import load_prior
from priorpaint.sampling import inpaint
from priorpaint.sampling.images import load_input, to_model

ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "examples" / "priors" / "mnist32.ckpt"


def test_shipped_prior_inpaints_the_shipped_digits(one_thread):
    prior = load_prior(PRIOR)
    assert prior.weights == "ema" and tuple(prior.image_size) == (32, 32) and prior.channels == 1
    assert prior.info["data"]["indices"] == "0:7000"        # never saw 7000-9999
    assert PRIOR.stat().st_size <= 12 * 2**20
    files = sorted((ROOT / "examples" / "mnist").glob("*.png"))
    assert len(files) == 8
    x0 = torch.stack([to_model(load_input(f, 1), 1, (32, 32)) for f in files[:2]])
    mask = torch.ones_like(x0[:, :1])
    mask[..., 10:22, 8:24] = 0
    _fills_the_hole_keeping_known_pixels(prior, x0, mask)


PHOTO_PRIOR = ROOT / "examples" / "priors" / "photos64.ckpt"


def _fills_the_hole_keeping_known_pixels(prior, x0, mask) -> None:
    """DDNM with 10 steps on a shipped prior: known pixels exact, the hole filled, in range."""
    with torch.no_grad():
        out = inpaint(prior.model.eval(), prior.diffusion, x0, mask, sampler="ddnm", steps=10)
    assert torch.equal(out * mask, x0 * mask)               # known pixels exact
    assert out.isfinite().all() and out.abs().max() <= 1.0
    assert not torch.equal(out * (1 - mask), x0 * (1 - mask))   # the hole was filled


def test_shipped_photo_prior_is_ema_float16_and_inpaints_an_example_photo(one_thread):
    """examples/priors/photos64.ckpt: trained on photos/train only, EMA-only in float16 (loads
    as float32), and fills a hole in a native-resolution window of a shipped example photo."""
    assert PHOTO_PRIOR.stat().st_size <= 12 * 2**20
    prior = load_prior(PHOTO_PRIOR)
    assert prior.weights == "ema" and tuple(prior.image_size) == (64, 64) and prior.channels == 3
    info = prior.info
    assert info["weights_dtype"] == "float16" and info["data"]["resize"] == "none"
    assert info["data"]["path"].rstrip("/").endswith("photos/train")   # never val/
    assert all(p.dtype == torch.float32 for p in prior.model.parameters())
    assert all(v.dtype == torch.float16 for v in torch.load(PHOTO_PRIOR, weights_only=True)
               ["priorpaint"]["ema_state_dict"].values() if v.is_floating_point())
    photo = load_input(ROOT / "examples" / "photos" / "coffee.jpg", 3)
    assert photo.pixels.shape == (384, 512, 3)
    x0 = to_model(photo, 3, photo.pixels.shape[:2])[None, :, 160:224, 224:288]
    mask = torch.ones_like(x0[:, :1])
    mask[..., 20:44, 20:44] = 0
    _fills_the_hole_keeping_known_pixels(prior, x0, mask)
