"""Make the README's first picture: masked | inpainted | truth, from the shipped priors.

    python scripts/readme_figure.py                  # writes docs/images/readme_figure.png
    python scripts/readme_figure.py out=other.png num_threads=1

One row per shipped prior (``examples/priors/``): a photo of ``examples/photos`` with two
48 px holes inpainted at its own resolution by ``photos64.ckpt`` (``fit=crop``: one 64x64
window per hole), and four held-out digits of ``examples/mnist`` with thick brush strokes
inpainted by ``mnist32.ckpt``. DDNM with its default 100 network calls, seed 0, so the picture
is the same on every run on one machine; the images and masks are those ``sample.py`` would
use (``load_input``, ``make_mask`` seeded by the image index). The script exists so that the
picture can be re-made with one command when a shipped prior is replaced.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from priorpaint.checkpoint import load_prior
from priorpaint.cli import UserError, report_user_errors
from priorpaint.imageio import from_uint8, to_uint8
from priorpaint.masks import make_mask
from priorpaint.sampling import inpaint, inpaint_any_size
from priorpaint.sampling.images import load_input

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"out": "docs/images/readme_figure.png", "photo": "examples/photos/chelsea.jpg",
            "photo_mask": "box:48:2", "digits": "examples/mnist", "digit_mask": "thick",
            "sampler": "ddnm", "seed": "0", "num_threads": "0"}
HOLE_GREY = 0.5          # how a hole is drawn in the "masked" column (model range [-1, 1]: 0)
DIGIT_ZOOM = 3           # 32x32 digits drawn at 96x96, nearest neighbour (crisp)
LABEL_HEIGHT = 22


def parse_args(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments over :data:`DEFAULTS`; an unknown key is a user error."""
    options = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise UserError(f"unknown argument {arg!r}; keys: "
                            f"{', '.join(DEFAULTS)} (as key=value)")
        options[key] = value
    return options


def masked_view(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (C, H, W in [-1, 1]) with its hole (mask 0) drawn mid-grey, as a user sees it."""
    grey = torch.full_like(x, 2 * HOLE_GREY - 1)
    return torch.where(mask.bool(), x, grey)


def to_image(x: torch.Tensor, zoom: int = 1) -> Image.Image:
    """A (C, H, W) model-range tensor as an RGB image, enlarged ``zoom`` times (nearest)."""
    levels = to_uint8(x).permute(1, 2, 0).numpy()
    if levels.shape[-1] == 1:
        levels = np.repeat(levels, 3, axis=-1)
    image = Image.fromarray(levels, "RGB")
    if zoom > 1:
        image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    return image


def photo_row(options: dict[str, str]) -> list[Image.Image]:
    """masked | inpainted | truth for one photo and ``photos64.ckpt`` at native resolution."""
    prior = load_prior(REPO / "examples/priors/photos64.ckpt")
    image = load_input(REPO / options["photo"], prior.channels)
    truth = from_uint8(image.pixels).permute(2, 0, 1)
    mask = make_mask(options["photo_mask"], image.size, seed=int(options["seed"]))
    (filled,) = inpaint_any_size(prior.model, prior.diffusion, [truth], [mask],
                                 prior_size=prior.image_size, fit="crop",
                                 sampler=options["sampler"], seed=int(options["seed"]))
    return [to_image(masked_view(truth, mask)), to_image(filled), to_image(truth)]


def digit_row(options: dict[str, str]) -> list[Image.Image]:
    """masked | inpainted | truth for four held-out digits and ``mnist32.ckpt``, side by side."""
    prior = load_prior(REPO / "examples/priors/mnist32.ckpt")
    files = sorted((REPO / options["digits"]).glob("*.png"))[:4]
    truth = torch.stack([from_uint8(load_input(f, prior.channels).pixels).permute(2, 0, 1)
                         for f in files])
    masks = torch.stack([make_mask(options["digit_mask"], prior.image_size, seed=i)
                         for i in range(len(files))])
    filled = inpaint(prior.model, prior.diffusion, truth, masks, sampler=options["sampler"],
                     seed=int(options["seed"]))
    return [strip([to_image(t, DIGIT_ZOOM) for t in batch])
            for batch in (masked_view(truth, masks), filled, truth)]


def strip(images: list[Image.Image], gap: int = 4) -> Image.Image:
    """Images side by side on white, ``gap`` pixels apart."""
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(i.height for i in images)), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width + gap
    return canvas


def compose(rows: list[list[Image.Image]], labels=("masked", "inpainted", "truth"),
            gap: int = 8) -> Image.Image:
    """Rows of three panels under one line of column labels, each column as wide as its widest."""
    widths = [max(row[c].width for row in rows) for c in range(3)]
    height = LABEL_HEIGHT + sum(max(p.height for p in row) + gap for row in rows)
    canvas = Image.new("RGB", (sum(widths) + gap * 2, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    x = 0
    for label, width in zip(labels, widths, strict=True):
        draw.text((x + width // 2, LABEL_HEIGHT // 2), label, fill="black", font=font, anchor="mm")
        x += width + gap
    y = LABEL_HEIGHT
    for row in rows:
        x = 0
        for panel, width in zip(row, widths, strict=True):
            canvas.paste(panel, (x + (width - panel.width) // 2, y))
            x += width + gap
        y += max(p.height for p in row) + gap
    return canvas


@report_user_errors("readme_figure.py")   # bad input: one line, exit status 2
def main(argv: list[str]) -> Path:
    options = parse_args(argv)
    if int(options["num_threads"]) > 0:
        torch.set_num_threads(int(options["num_threads"]))
    figure = compose([photo_row(options), digit_row(options)])
    out = REPO / options["out"] if not Path(options["out"]).is_absolute() else Path(options["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"wrote {out} ({figure.width}x{figure.height})")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
