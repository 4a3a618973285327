"""Is an MNIST prior "clean"? Two numbers from 64 unconditional samples with fixed seeds.

    python benchmarks/prior_clean.py ckpt=runs/mnist32/checkpoints/step0002000.ckpt
    python benchmarks/prior_clean.py ckpt=... respacing=full          # the whole chain (slow)
    python benchmarks/prior_clean.py ckpt=... use_ema=false           # the raw training weights
    python benchmarks/prior_clean.py ckpt=real repeats=50              # the floor: real digits
    python benchmarks/prior_clean.py ckpt=noise                        # a sanity low end
    python benchmarks/prior_clean.py ckpt=outputs/quickstart/checkpoints/last.ckpt data=digits
    python benchmarks/prior_clean.py grids='prior_clean/<run>_step0008000_ema_250_seed*.png'   # saved draws

Metrics (issue #19), both from the digit classifier of ``inpainting_study.py`` (a small CNN
trained on MNIST t10k indices 0-6999 only, cached in ``cache=``):
- ``confident``: the fraction of samples it reads with softmax confidence >= ``confidence``
  (0.9): a blob or a scribble is not read confidently as any digit;
- ``fd``: the Fréchet distance between its 128 penultimate features of the samples and of the
  evaluation digits 7000-7999 (all 1000): it also sees missing variety (one digit drawn 64
  times reads confidently but is far from the real mix). With n = 64 the distance has a
  positive bias, so its bound is calibrated on real digits at the same n (``ckpt=real``).
A prior is **clean** when ``confident >= clean_fraction`` (0.85) and ``fd <= fd_bound`` (150),
both set from 200 draws of 64 real digits of indices 0-6999 scored the same way (``ckpt=real
repeats=200``): their FD to 7000-7999 has median 77, 99th percentile 137, worst 145, so 150;
their confident fraction has median 0.93, 1st percentile 0.84, worst 0.81 (the issue's 0.9
would call 20% of real draws unclean with this classifier), so 0.85. The bounds belong to one
classifier file: with a retrained classifier, rerun ``ckpt=real repeats=200`` and pass
``fd_bound=`` / ``clean_fraction=`` (docs/research/classifier-calibration.md).

Beside the verdict, ``blobs`` counts the samples brighter on average than any real training
digit (``BLOB_BRIGHTNESS``): the "blobs on grey backgrounds" of an early prior, some of which
the classifier reads confidently as a digit, so ``confident`` alone can hide them.

Samples: DDPM ancestral sampling with ``respacing`` steps (default 100; ``full`` = all T),
sample k seeded by (seed, k, 0) alone, so the images do not depend on ``batch_size``.
Outputs in ``out=``: ``<name>.png`` (an 8-wide grid of the samples) and ``<name>.json``.
MNIST indices 8000-9999 are never read (``read_mnist`` stops at record 7999).

``grids=`` (a glob, instead of ``ckpt=``) scores draws saved before, one per PNG grid, with the
classifier of this machine: the classifier is trained here on first use and is not bitwise the
same across machines or thread counts, so a committed verdict is rechecked from its grids
without the checkpoint that drew them (the images come back 8-bit rounded). It prints, writes
nothing, and pools the matched grids into one verdict.

``data=digits`` scores a prior of scikit-learn's digits (the quickstart) the same way, with
its own classifier: the 1781 training digits as ``data=digits`` feeds them (upsampled to the
prior's size), the CNN trained on the first 1200 (30 epochs: a small set), the Fréchet
reference the other 581, real draws from the first 1200. Its bounds, from ``ckpt=real
repeats=200 data=digits`` the same way: see ``BOUNDS``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from torchvision.utils import make_grid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import inpainting_study as study  # noqa: E402
from arguments import key_value_options, usage_error  # noqa: E402

from priorpaint.checkpoint import load_prior  # noqa: E402
from priorpaint.imageio import read_image, save_png  # noqa: E402
from priorpaint.metrics.distribution import frechet_distance  # noqa: E402
from priorpaint.sampling import generate, item_generators  # noqa: E402

FD_BOUND = 150.0   # above the worst of 200 real n=64 draws (144.7); see the module docstring
CLEAN_FRACTION = 0.85   # real n=64 draws: 1% below 0.844, the worst 0.81
# data=digits: 200 draws of 64 of the 581 digits its classifier never saw (what a new sample is
# to it) are read confidently at median 0.91, 1st percentile 0.84, worst 0.80: 0.84; 200 draws
# from 0-1199 are at FD median 65, 99th percentile 123, worst 134 from the 581: 140.
DIGITS_CLEAN_FRACTION = 0.84
DIGITS_FD_BOUND = 140.0
BOUNDS = {   # data -> (clean_fraction, fd_bound), each from 200 real draws of 64
    "mnist": (CLEAN_FRACTION, FD_BOUND),
    "digits": (DIGITS_CLEAN_FRACTION, DIGITS_FD_BOUND),
}
DIGITS_SPLIT = 1200   # scikit-learn digits: classifier and real draws below, FD reference above
REAL_SIZE = {"mnist": 32, "digits": 16}   # data -> the size= of ckpt=real / noise (as trained)
DEFAULTS = {
    "ckpt": None, "data": "mnist", "mnist": str(ROOT.parent / "shared" / "data" / "mnist"),
    "out": "prior_clean", "cache": "study/cache", "name": None, "samples": 64,
    "respacing": "100", "seed": 0, "batch_size": 64, "threads": 1, "use_ema": True,
    "confidence": 0.9, "clean_fraction": None, "fd_bound": None, "repeats": 1, "size": None,
    "grids": None,
}
# #19's symptom, "blobs on grey", as a count: a sample brighter on average than any real training
# digit. MNIST 0-6999 at 32x32 reach a mean brightness of 0.25, scikit-learn's training digits 0.42.
BLOB_BRIGHTNESS = {"mnist": 0.3, "digits": 0.5}
SOURCES = ("real", "noise")   # ckpt= values that score something other than a prior


def parse(argv: list[str]) -> dict:
    """key=value arguments over DEFAULTS; a bad one exits with status 2 and one line."""
    options = key_value_options(argv, DEFAULTS, "prior_clean.py")
    if bool(options["ckpt"]) == bool(options["grids"]):
        fail("give ckpt= (a priorpaint checkpoint, or 'real' / 'noise' to calibrate) or grids= "
             "(saved draws' PNG grids, a glob), not both")
    if options["data"] not in BOUNDS:
        fail(f"data={options['data']!r}: use {' or '.join(BOUNDS)}")
    defaults = {"size": REAL_SIZE[options["data"]]}
    defaults["clean_fraction"], defaults["fd_bound"] = BOUNDS[options["data"]]
    options.update({key: value for key, value in defaults.items() if options[key] is None})
    try:
        for key in ("samples", "seed", "batch_size", "threads", "repeats", "size"):
            options[key] = int(options[key])
        for key in ("confidence", "clean_fraction", "fd_bound"):
            options[key] = float(options[key])
    except ValueError as error:
        fail(f"a numeric option is not a number ({error})")
    if options["samples"] < 2 or options["batch_size"] < 1 or options["repeats"] < 1:
        fail("samples must be >= 2 (a covariance), batch_size and repeats >= 1")
    options["use_ema"] = str(options["use_ema"]).lower() in ("1", "true", "yes")
    spec = str(options["respacing"]).lower()
    if spec not in ("full", "none") and not spec.isdigit():
        fail(f"respacing={options['respacing']!r}: give a step count (e.g. 100) or 'full'")
    options["respacing"] = "full" if spec in ("full", "none") else spec
    return options


def fail(message: str) -> NoReturn:
    usage_error("prior_clean.py", message)


# ----------------------------------------------------------------------------- metrics
def score(images: torch.Tensor, net: study.DigitCNN, reference: tuple[torch.Tensor, torch.Tensor],
          confidence: float = 0.9) -> dict:
    """``confident`` fraction, ``fd`` to the reference (mu, sigma), and the read classes.

    ``images``: (N, 1, H, W) in [-1, 1] at the classifier's resolution.
    """
    with torch.no_grad():
        features = net.features(images.float())
        probs = torch.softmax(net.head(features), dim=1)
    top, digit = probs.max(1)
    sure = top >= confidence
    features = features.double()
    fd = frechet_distance(features.mean(0), torch.cov(features.T), *reference)
    return {"n": int(images.shape[0]), "confident": float(sure.float().mean()),
            "fd": float(fd), "classes": np.bincount(digit[sure].numpy(), minlength=10).tolist()}


def classifier_digest(net: torch.nn.Module) -> str:
    """The first 12 hex digits of the sha256 of the classifier's weights: the classifier is
    trained on each machine on first use and is not bitwise the same across machines or thread
    counts, so every score names the classifier that made it."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def blobs(images: torch.Tensor, brightness: float) -> int:
    """How many of (N, C, H, W) images in [-1, 1] have a mean brightness (in [0, 1]) above
    ``brightness``: the blobs on grey backgrounds that an early prior draws, some of which the
    classifier still reads confidently as a digit."""
    return int((((images.float() + 1) / 2).flatten(1).mean(1) > brightness).sum())


def is_clean(result: dict, clean_fraction: float = CLEAN_FRACTION,
             fd_bound: float = FD_BOUND) -> bool:
    """The #19 criterion: enough confident reads and features close to real digits."""
    return result["confident"] >= clean_fraction and result["fd"] <= fd_bound


def pooled(results: list[dict], clean_fraction: float = CLEAN_FRACTION,
           fd_bound: float = FD_BOUND) -> dict:
    """Several draws of one prior as one verdict: confident pooled over every sample, FD the
    draws' mean. One draw of 64 moves by about ±0.05 in its fraction (binomial), so a prior
    near the bound passes or fails by the seed; "steps to clean" uses four draws pooled."""
    n = sum(r["n"] for r in results)
    result = {"n": n, "confident": sum(r["confident"] * r["n"] for r in results) / n,
              "fd": sum(r["fd"] for r in results) / len(results)}
    return {**result, "clean": is_clean(result, clean_fraction, fd_bound)}


# ----------------------------------------------------------------------------- data
def digit_sets(data: str, size: tuple[int, int], mnist: Path,
               cache: Path) -> tuple[torch.Tensor, study.DigitCNN, torch.Tensor]:
    """(real digits for ``ckpt=real``, the classifier, the Fréchet reference digits), all
    (N, 1, H, W) in [-1, 1] at ``size``: MNIST t10k 0-6999 / 7000-7999, or scikit-learn's
    training digits 0-1199 / 1200-1780 as ``data=digits`` feeds them to the prior."""
    if data == "mnist":
        raw, labels = study.read_mnist(mnist, study.EVALUATE[1])
        images, labels = study.to_model(raw, size), torch.from_numpy(labels)
        span, held, epochs = study.TRAIN, study.EVALUATE, 3
    else:
        from sklearn.datasets import load_digits

        from priorpaint.data import TensorImages, load_digits_images

        digits = TensorImages(load_digits_images("train"), size, 1, "center", name="digits")
        images = torch.stack([digits[i] for i in range(len(digits))])
        labels = torch.from_numpy(load_digits().target[:len(images)]).long()
        span, held, epochs = (0, DIGITS_SPLIT), (DIGITS_SPLIT, len(images)), 30
    net = study.classifier(images, labels, cache, span=span, dataset=data, epochs=epochs)
    return images[span[0]:span[1]], net, images[held[0]:held[1]]


# ----------------------------------------------------------------------------- samples
def draw_samples(prior, count: int, respacing: str, seed: int, batch_size: int) -> torch.Tensor:
    """``count`` DDPM samples (N, C, H, W) in [-1, 1]; sample k from the stream (seed, k, 0)."""
    steps = None if respacing == "full" else min(int(respacing), prior.diffusion.num_timesteps)
    shape = (prior.channels, *prior.image_size)
    batches = []
    with torch.no_grad():
        for first in range(0, count, batch_size):
            ids = list(range(first, min(count, first + batch_size)))
            generators = item_generators(seed, ids, [0] * len(ids))
            batches.append(generate(prior.model, prior.diffusion, (len(ids), *shape),
                                    sampler="ddpm", steps=steps, generators=generators,
                                    seed=seed))
    return torch.cat(batches)


def save_grid(images: torch.Tensor, path: Path) -> Path:
    """An 8-wide PNG grid of (N, C, H, W) images in [-1, 1]."""
    grid = make_grid(((images.clamp(-1, 1) + 1) / 2).float(), nrow=8, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return save_png(array[..., :1] if images.shape[1] == 1 else array, path)


def grid_images(path: Path, count: int) -> torch.Tensor:
    """The first ``count`` images of a ``save_grid`` PNG, back as (N, C, H, W) in [-1, 1]
    (8-bit rounded): to count the blobs of draws scored before their JSON stored them."""
    pixels = torch.from_numpy(read_image(path)).permute(2, 0, 1).float() / 255 * 2 - 1
    size = (pixels.shape[2] - 2) // 8 - 2    # 8 columns of size + 2 padding, plus 2
    rows = (pixels.shape[1] - 2) // (size + 2)
    cells = [pixels[:, 2 + r * (size + 2):2 + r * (size + 2) + size,
                    2 + c * (size + 2):2 + c * (size + 2) + size]
             for r in range(rows) for c in range(8)]
    if count > len(cells):
        raise ValueError(f"{path}: a grid of {len(cells)} images, not {count}")
    return torch.stack(cells[:count])


# ----------------------------------------------------------------------------- main
def scorer(cfg: dict, size: tuple[int, int]):
    """(real training digits, the classifier, the Fréchet reference (mu, sigma), the
    classifier's digest) for ``cfg``'s data at ``size``; names the classifier on stdout."""
    train, net, held = digit_sets(cfg["data"], size, Path(cfg["mnist"]), Path(cfg["cache"]))
    with torch.no_grad():
        ref = net.features(held).double()
    digest = classifier_digest(net)
    print(f"classifier {digest} (cache={cfg['cache']})", flush=True)
    return train, net, (ref.mean(0), torch.cov(ref.T)), digest


def rescore(cfg: dict, pool: bool = True) -> list[dict]:
    """``grids=``: score saved draws again with this machine's classifier; print, write nothing.
    ``pool=False`` leaves out the pooled verdict (grids of several checkpoints)."""
    paths = sorted(Path(path) for path in glob.glob(cfg["grids"]))
    if not paths:
        fail(f"grids={cfg['grids']} matches no file: give a glob of prior_clean.py's PNG grids")
    images = []
    for path in paths:
        try:
            images.append(grid_images(path, cfg["samples"]))
        except (ValueError, OSError) as error:
            fail(f"grids: {path} is not a grid of {cfg['samples']} samples ({error})")
    size = tuple(images[0].shape[-2:])
    if any(tuple(i.shape[-2:]) != size for i in images) or images[0].shape[1] != 1:
        fail(f"grids={cfg['grids']}: the grids must all be grey and of one image size")
    _, net, reference, digest = scorer(cfg, size)
    results = []
    for path, samples in zip(paths, images, strict=True):   # each grid alone, then pooled
        result = score(samples, net, reference, cfg["confidence"])
        result.update(source=str(path), classifier=digest,
                      blobs=blobs(samples, BLOB_BRIGHTNESS[cfg["data"]]),
                      clean=is_clean(result, cfg["clean_fraction"], cfg["fd_bound"]))
        print(f"{path}: confident {result['confident']:.2f} "
              f"({round(result['confident'] * result['n'])}/{result['n']}), FD {result['fd']:.2f}, "
              f"blobs {result['blobs']} -> {'CLEAN' if result['clean'] else 'not clean'}", flush=True)
        results.append(result)
    if len(results) > 1 and pool:
        both = pooled(results, cfg["clean_fraction"], cfg["fd_bound"])
        print(f"pooled {len(results)} grids ({both['n']} samples): confident {both['confident']:.3f} "
              f"({round(both['confident'] * both['n'])}/{both['n']}), mean FD {both['fd']:.2f} -> "
              f"{'CLEAN' if both['clean'] else 'not clean'}", flush=True)
    return results


def main(argv: list[str]) -> list[dict]:
    cfg = parse(argv)
    torch.set_num_threads(cfg["threads"])
    if cfg["ckpt"] and cfg["ckpt"] not in SOURCES and not Path(cfg["ckpt"]).exists():
        fail(f"ckpt={cfg['ckpt']} does not exist")
    mnist = Path(cfg["mnist"])
    if cfg["data"] == "mnist" and not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        fail(f"mnist={mnist} has no t10k-images-idx3-ubyte.gz: point mnist= at the MNIST files")
    if cfg["grids"]:
        return rescore(cfg)
    prior = None
    if cfg["ckpt"] not in SOURCES:
        try:
            prior = load_prior(cfg["ckpt"], use_ema=cfg["use_ema"])
        except ValueError as error:
            fail(str(error))
        if prior.channels != 1:
            fail(f"{cfg['ckpt']} is a {prior.channels}-channel prior; this metric is for grey "
                 f"digit priors")
    size = tuple(prior.image_size) if prior is not None else (cfg["size"], cfg["size"])
    train, net, reference, digest = scorer(cfg, size)

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for repeat in range(cfg["repeats"]):
        seed = cfg["seed"] + repeat
        started = time.perf_counter()
        if prior is None:
            generator = torch.Generator().manual_seed(seed)
            if cfg["ckpt"] == "real":   # the floor: real training digits at the same n
                pick = torch.randperm(len(train), generator=generator)[:cfg["samples"]]
                samples = train[pick]
            else:
                samples = torch.rand(cfg["samples"], 1, *size, generator=generator) * 2 - 1
            what = f"{cfg['ckpt']} (seed {seed})"
        else:
            samples = draw_samples(prior, cfg["samples"], cfg["respacing"], seed,
                                   cfg["batch_size"])
            step = prior.info.get("global_step", "?") if isinstance(prior.info, dict) else "?"
            what = (f"{cfg['ckpt']} ({prior.weights} weights, step {step}, "
                    f"{cfg['respacing']} steps, seed {seed})")
        seconds = time.perf_counter() - started
        result = score(samples, net, reference, cfg["confidence"])
        result.update(source=str(cfg["ckpt"]), seed=seed, respacing=cfg["respacing"],
                      weights=prior.weights if prior is not None else None,
                      seconds=round(seconds, 1), fd_bound=cfg["fd_bound"],
                      clean_fraction=cfg["clean_fraction"], data=cfg["data"],
                      classifier=digest,
                      blobs=blobs(samples, BLOB_BRIGHTNESS[cfg["data"]]),
                      clean=is_clean(result, cfg["clean_fraction"], cfg["fd_bound"]))
        name = cfg["name"] or (Path(cfg["ckpt"]).stem if prior is not None else cfg["ckpt"])
        if prior is not None:
            name = f"{name}_{prior.weights}_{cfg['respacing']}"
        name = f"{name}_seed{seed}"
        save_grid(samples, out / f"{name}.png")
        (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{what}: confident {result['confident']:.2f} "
              f"({round(result['confident'] * result['n'])}/{result['n']}), FD {result['fd']:.2f} "
              f"(bound {cfg['fd_bound']:g}), blobs {result['blobs']}, confident reads per digit "
              f"{result['classes']} -> "
              f"{'CLEAN' if result['clean'] else 'not clean'} ({seconds:.0f} s); "
              f"{out / name}.png", flush=True)
        results.append(result)
    if len(results) > 1:
        fds = sorted(r["fd"] for r in results)
        conf = [r["confident"] for r in results]
        print(f"{len(results)} draws: FD median {fds[len(fds) // 2]:.2f}, max {fds[-1]:.2f}, "
              f"min {fds[0]:.2f}; confident min {min(conf):.2f}, mean "
              f"{sum(conf) / len(conf):.3f}", flush=True)
        if prior is not None:   # one checkpoint, several sampling seeds: the pooled verdict
            both = pooled(results, cfg["clean_fraction"], cfg["fd_bound"])
            print(f"pooled ({both['n']} samples): confident {both['confident']:.3f}, mean FD "
                  f"{both['fd']:.2f}, blobs {sum(r['blobs'] for r in results)} -> "
                  f"{'CLEAN' if both['clean'] else 'not clean'} "
                  f"({sum(r['clean'] for r in results)}/{len(results)} draws clean alone)",
                  flush=True)
    if any(math.isnan(r["fd"]) for r in results):
        raise RuntimeError("the Fréchet distance is NaN: the features hold non-finite values")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
