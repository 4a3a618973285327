"""Quality against network calls: every inpainting sampler and two baselines on held-out MNIST.

    python benchmarks/inpainting_study.py ckpt=runs/mnist32/last.ckpt
    python benchmarks/inpainting_study.py ckpt=... images=8 budgets=100,250 samples=2   # toy

Costly budgets may run on fewer images and samplers: ``images_at=500:12,2410:12`` caps the
images at those budgets (always the first ones, so cells of one size are paired image for
image), ``samplers_at=1000:ddnm,2410:repaint+ddnm`` picks the samplers run there.
``precision=bf16`` runs the network under bfloat16 autocast (the loop's arithmetic stays
float32), as ``sample.py precision=bf16`` does. Every size gets its own baseline and ``clean``
rows: the Fréchet distance is biased by the sample size, so it compares only within one size.

Data: MNIST t10k from ``mnist=`` (../shared/data/mnist). The classifier trains on indices
0-6999 only (a small CNN, ~1-2 min on a CPU, cached in ``cache=``); the study inpaints
indices ``first`` .. ``first + images - 1`` within 7000-7999; its Fréchet reference is all of
7000-7999. Indices 8000-9999 are held out for independent checks: the reader decompresses the
files only up to record 7999, so they are never read.

Masks (1 = known), made at the prior's resolution by ``priorpaint.masks`` (the RePaint
kinds; random kinds seeded by the image index, so every sampler sees the same masks):
thick, thin, half (left half known), expand (central quarter known, ex64 scaled), ev2li
(every second row), sr2 (one pixel per 2x2: nn2), top (top half known).

Samplers and their settings per budget B (a fixed rule, chosen from the papers' defaults,
not tuned on the study images; T_max = the prior's steps):
- ``repaint``: j=10, r=10, T fitted so the calls are closest to B (RePaint's paper ratio);
- ``repaint-r1``: no resampling, T = min(B, T_max) ("slowing down", the paper's Table 2);
- ``repaint-ddim``: as ``repaint`` on DDIM steps with η = 0.5;
- ``ddnm``: η = 0.85, T = min(B, T_max) without time travel; above T_max: T = T_max/4,
  L = 10 and r fitted to B;
- ``diffpir``: λ = 1, σ_n = 0.001, ζ = 1, quadratic skip with T = min(B, T_max/2); when B
  is larger, U inner loops fitted to B.
Baselines (0 calls): the hole filled with the mean known value of the image, and the
harmonic (Laplace) fill of the hole from its border.

Metrics per mask kind, sampler and budget: classifier accuracy of the completions (with the
half-width of a 95% Wilson interval over images, a conservative one: samples of one image
are not independent), hole MSE (pixels in [0, 1], with its standard error over
images), known-pixel error (max |difference| in 8-bit levels; must be 0), diversity (mean
over hole pixels of the std across ``samples`` completions), Fréchet distance between the
classifier's penultimate features of the completions and of digits 7000-7999 (the row
``clean`` gives its floor at the same sample size), and wall seconds per completion.
Every (kind, sampler, budget) cell is stored in ``out/cells/`` as it finishes, so a rerun
resumes; ``out/study.csv``, ``out/study.md`` and ``out/study.png`` are rewritten at the end.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from arguments import key_value_options, usage_error  # noqa: E402

from priorpaint.checkpoint import load_prior  # noqa: E402
from priorpaint.diffusion.beta_schedules import space_timesteps  # noqa: E402
from priorpaint.evaluation.ablation import fit_steps  # noqa: E402
from priorpaint.masks import make_mask  # noqa: E402
from priorpaint.metrics.distribution import frechet_distance  # noqa: E402
from priorpaint.sampling import count_network_calls, inpaint, item_generators  # noqa: E402
from priorpaint.sampling.samplers import (  # noqa: E402
    resolve_options,
    respacing,
    sampler_schedule,
)

DEFAULTS = {
    "ckpt": None, "mnist": str(ROOT.parent / "shared" / "data" / "mnist"),
    "out": "study", "cache": "study/cache", "first": 7000, "images": 100, "samples": 2,
    "kinds": "thick,thin,half,expand,ev2li,sr2,top", "budgets": "100,250,500,1000,2410",
    "samplers": "repaint,repaint-r1,repaint-ddim,ddnm,diffpir", "batch_size": 50, "seed": 0,
    "threads": 1, "device": "cpu", "use_ema": True, "precision": "fp32",
    "images_at": "", "samplers_at": "",
}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}   # the network's autocast dtype
TRAIN = (0, 7000)           # classifier (and prior) indices
EVALUATE = (7000, 8000)     # study indices; 8000-9999 are never read
KINDS = {"thick": "thick", "thin": "thin", "half": "genhalf", "expand": "expand",
         "ev2li": "ev2li", "sr2": "nn2", "top": None}


# ----------------------------------------------------------------------------- data
def read_mnist(root: Path, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """t10k images (stop, 28, 28) uint8 and labels (stop,), decompressing records < stop only."""
    if stop > EVALUATE[1]:
        raise ValueError(f"indices up to {stop} requested: 8000-9999 are held out, never read")

    def records(name: str, header: int, size: int) -> np.ndarray:
        with gzip.open(root / name, "rb") as f:
            f.read(header)
            data = f.read(stop * size)
        if len(data) != stop * size:
            raise ValueError(f"{root / name} holds fewer than {stop} records")
        return np.frombuffer(data, dtype=np.uint8)

    images = records("t10k-images-idx3-ubyte.gz", 16, 784).reshape(stop, 28, 28)
    return images, records("t10k-labels-idx1-ubyte.gz", 8, 1).astype(np.int64)


def to_model(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, 28, 28) -> (N, 1, H, W) in [-1, 1]: padded to 32x32 as data=mnist, resized."""
    x = F.pad(torch.from_numpy(images.astype(np.float32) / 255.0)[:, None], (2, 2, 2, 2))
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="area")
    return x * 2 - 1


def mask_of(kind: str, index: int, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) in {0, 1}; random kinds seeded by the image index."""
    if KINDS[kind] is None:   # top half known
        mask = torch.zeros(1, *size)
        mask[:, : size[0] // 2] = 1
        return mask
    return make_mask(KINDS[kind], size, seed=index)


# ----------------------------------------------------------------------------- classifier
class DigitCNN(torch.nn.Module):
    """Two conv blocks and a 128-feature layer; ``features`` feeds the Fréchet distance."""

    def __init__(self, size: int):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(64 * (size // 4) ** 2, 128), torch.nn.ReLU())
        self.head = torch.nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def classifier(images: torch.Tensor, labels: torch.Tensor, cache: Path, span=TRAIN,
               dataset: str = "mnist", epochs: int = 3) -> DigitCNN:
    """The CNN trained on ``images[span]`` at this resolution (trained once, then cached).

    ``span`` and ``dataset`` name the cached file, so MNIST's (indices 0-6999) and the
    scikit-learn digits' classifiers never mix; small sets take more ``epochs``.
    """
    size = images.shape[-1]
    path = cache / f"{dataset}_cnn_{size}px_train{span[0]}-{span[1] - 1}.pt"
    model = DigitCNN(size)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    torch.manual_seed(0)
    train_x, train_y = images[span[0]:span[1]], labels[span[0]:span[1]]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(train_x))
        for i in range(0, len(order), 64):
            batch = order[i:i + 64]
            shift = torch.randint(-1, 2, (2,)).tolist()   # small translations
            x = torch.roll(train_x[batch], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(x), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"classifier epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


# ----------------------------------------------------------------------------- settings
def calls_of(name: str, options: dict, model_steps: int) -> int:
    """Network calls per image of sampler ``name`` with inpaint() ``options``."""
    resolved = resolve_options(name, **options)
    spec = respacing(resolved, model_steps)
    steps = model_steps if spec is None else len(space_timesteps(model_steps, spec))
    return count_network_calls(sampler_schedule(name, resolved, steps))


def _closest(candidates, budget: int, calls) -> object:
    return min(candidates, key=lambda c: (abs(calls(c) - budget), calls(c)))


def settings(label: str, budget: int, model_steps: int) -> tuple[str, dict]:
    """(sampler name, inpaint() options) of study sampler ``label`` at about ``budget`` calls."""
    if label in ("repaint", "repaint-ddim"):
        extra = {"step": "ddim", "eta": 0.5} if label == "repaint-ddim" else {}
        steps = fit_steps(budget, 10, 10, model_steps)   # closest calls, by bisection
        return "repaint", {"steps": steps, "jump_length": 10, "jump_n_sample": 10, **extra}
    if label == "repaint-r1":
        return "repaint", {"steps": min(budget, model_steps), "jump_length": 1,
                           "jump_n_sample": 1}
    if label == "ddnm":
        if budget <= model_steps:
            return "ddnm", {"steps": budget}
        steps = max(model_steps // 4, 20)
        repeats = _closest(range(1, 100), budget, lambda r: calls_of(
            "ddnm", {"steps": steps, "jump_length": 10, "jump_n_sample": r}, model_steps))
        return "ddnm", {"steps": steps, "jump_length": 10, "jump_n_sample": repeats}
    if label == "diffpir":
        steps = min(budget, model_steps // 2)
        loops = _closest(range(1, 100), budget, lambda u: calls_of(
            "diffpir", {"steps": steps, "inner_loops": u}, model_steps))
        return "diffpir", {"steps": steps, "inner_loops": loops}
    raise ValueError(f"samplers: unknown study sampler {label!r}; known: repaint, repaint-r1, "
                     f"repaint-ddim, ddnm, diffpir")


# ----------------------------------------------------------------------------- baselines
def mean_fill(x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hole filled with each image's mean known value."""
    known = mask.expand_as(x0)
    mean = (x0 * known).sum((1, 2, 3), keepdim=True) / known.sum((1, 2, 3), keepdim=True)
    return torch.where(known > 0.5, x0, mean.expand_as(x0))


def harmonic_fill(x0: torch.Tensor, mask: torch.Tensor, iterations: int = 4000) -> torch.Tensor:
    """The hole solved for Laplace's equation with the known pixels as boundary values
    (Jacobi iterations; the image border reflects, i.e. zero normal derivative)."""
    known = mask.expand_as(x0) > 0.5
    x = mean_fill(x0, mask)
    kernel = torch.tensor([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]]).view(1, 1, 3, 3)
    for _ in range(iterations):
        x = torch.where(known, x0, F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel))
    return x


# ----------------------------------------------------------------------------- metrics
def wilson_half_width(p: float, n: int, z: float = 1.96) -> float:
    """Half-width of the Wilson 95% interval of a proportion p over n trials (unlike the
    normal one it is not 0 at p = 0 or 1: 8 of 8 correct still leaves ±0.16)."""
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def metrics(completions: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor,
            labels: torch.Tensor, net: DigitCNN, reference: tuple,
            per_image: bool = False) -> dict:
    """The study's metrics of ``completions`` (N, S, 1, H, W) in [-1, 1].

    ``per_image`` adds each image's hole MSE (over its samples) and the fraction of its
    samples read as the right digit, so two priors run on the same images and masks can be
    compared image by image (``compare_studies.py``: a paired difference has a far smaller
    error than the two rows' own intervals)."""
    n, s = completions.shape[:2]
    flat = completions.reshape(n * s, *completions.shape[2:])
    with torch.no_grad():
        logits = net(flat)
        features = net.features(flat)
    correct = (logits.argmax(1) == labels.repeat_interleave(s)).double()
    accuracy = float(correct.mean())
    hole = (mask.expand_as(x0) < 0.5)[:, None].expand_as(completions)
    known = ~hole
    pixels, truth = (completions + 1) / 2, ((x0 + 1) / 2)[:, None].expand_as(completions)
    per_image_mse = ((((pixels - truth) ** 2) * hole).sum((1, 2, 3, 4))
                     / hole.sum((1, 2, 3, 4)))
    diversity = float("nan")
    if s > 1:
        spread = pixels.std(dim=1, unbiased=False)                   # (N, 1, H, W)
        holes = hole[:, 0]
        diversity = float(((spread * holes).sum((1, 2, 3)) / holes.sum((1, 2, 3))).mean())
    mu, sigma = features.double().mean(0), torch.cov(features.double().T)
    paired = {} if not per_image else {
        "hole_mse_per_image": [float(v) for v in per_image_mse],
        "correct_per_image": [float(v) for v in correct.reshape(n, s).mean(1)]}
    return {
        "accuracy": accuracy,
        "accuracy_ci95": wilson_half_width(accuracy, n),
        "hole_mse": float(per_image_mse.mean()),
        "hole_mse_se": float(per_image_mse.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "known_error": float(((pixels - truth).abs() * known).max() * 255),
        "diversity": diversity,
        "fd": float(frechet_distance(mu, sigma, *reference)),
        **paired,
    }


# ----------------------------------------------------------------------------- the study
def parse(argv: list[str]) -> dict:
    options = key_value_options(argv, DEFAULTS, "inpainting_study.py")
    if not options["ckpt"]:
        usage_error("inpainting_study.py", "ckpt= is required (a trained prior)")
    for key in ("first", "images", "samples", "batch_size", "seed", "threads"):
        options[key] = int(options[key])
    options["use_ema"] = str(options["use_ema"]).lower() in ("1", "true", "yes")
    for key in ("kinds", "budgets", "samplers"):
        options[key] = [v.strip() for v in str(options[key]).split(",") if v.strip()]
    options["budgets"] = [int(b) for b in options["budgets"]]
    if options["precision"] not in PRECISIONS:
        usage_error("inpainting_study.py", f"precision={options['precision']!r}; "
                    f"known: {', '.join(PRECISIONS)}")
    for key, convert in (("images_at", int), ("samplers_at", lambda v: v.split("+"))):
        pairs = [p.partition(":") for p in str(options[key]).split(",") if p.strip()]
        if any(not sep for _, sep, _ in pairs):
            example = "12" if key == "images_at" else "repaint+ddnm"
            usage_error("inpainting_study.py", f"{key}= takes budget:value pairs "
                        f"separated by commas, e.g. {key}=2410:{example}")
        options[key] = {int(b): convert(v) for b, _, v in pairs}
    unknown = [k for k in options["kinds"] if k not in KINDS]
    if unknown:
        usage_error("inpainting_study.py", f"unknown mask kind {unknown[0]!r}; "
                    f"known: {', '.join(KINDS)}")
    first, stop = options["first"], options["first"] + options["images"]
    if not (EVALUATE[0] <= first and stop <= EVALUATE[1]):
        usage_error("inpainting_study.py", f"images {first}-{stop - 1} must lie in "
                    f"{EVALUATE[0]}-{EVALUATE[1] - 1} (0-6999 train, 8000-9999 held out)")
    return options


def run_cell(prior, name: str, options: dict, x0, mask, image_ids, cfg) -> tuple:
    """All completions (N, S, 1, H, W) of one sampler setting, and seconds per completion."""
    model, diffusion, s = prior.model, prior.diffusion, cfg["samples"]
    items = [(i, k) for i in range(len(x0)) for k in range(s)]
    out = torch.empty(len(x0), s, *x0.shape[1:])
    start = time.perf_counter()
    for b in range(0, len(items), cfg["batch_size"]):
        batch = items[b:b + cfg["batch_size"]]
        rows = [i for i, _ in batch]
        generators = item_generators(cfg["seed"], [image_ids[i] for i in rows],
                                     [k for _, k in batch])
        result = inpaint(model, diffusion, x0[rows], mask[rows], sampler=name,
                         generators=generators, autocast_dtype=PRECISIONS[cfg["precision"]],
                         **options)
        for (i, k), sample in zip(batch, result, strict=True):
            out[i, k] = sample
    return out, (time.perf_counter() - start) / len(items)


def main(argv: list[str]) -> None:
    cfg = parse(argv)
    torch.set_num_threads(cfg["threads"])
    out, cache = Path(cfg["out"]), Path(cfg["cache"])
    (out / "cells").mkdir(parents=True, exist_ok=True)
    prior = load_prior(cfg["ckpt"], use_ema=cfg["use_ema"])
    prior.model.eval()
    if prior.channels != 1:
        usage_error("inpainting_study.py", f"{cfg['ckpt']} is a {prior.channels}-"
                    f"channel prior; the study needs one trained on MNIST (1 channel)")
    size = tuple(prior.image_size)
    images, labels = read_mnist(Path(cfg["mnist"]), EVALUATE[1])
    x_all, y_all = to_model(images, size), torch.from_numpy(labels)
    net = classifier(x_all, y_all, cache)
    with torch.no_grad():
        ref_features = net.features(x_all[EVALUATE[0]:EVALUATE[1]]).double()
    reference = (ref_features.mean(0), torch.cov(ref_features.T))
    ids = list(range(cfg["first"], cfg["first"] + cfg["images"]))
    x0, y = x_all[ids], y_all[ids]
    model_steps = prior.diffusion.num_timesteps
    print(f"prior {cfg['ckpt']}: {size[0]}x{size[1]}, {model_steps} steps; images "
          f"{ids[0]}-{ids[-1]} ({len(ids)}), {cfg['samples']} samples each", flush=True)

    tag = "" if cfg["precision"] == "fp32" else f"_{cfg['precision']}"
    for kind in cfg["kinds"]:
        mask = torch.stack([mask_of(kind, i, size) for i in ids])
        for budget in cfg["budgets"]:
            n = min(len(ids), cfg["images_at"].get(budget, len(ids)))
            for label in cfg["samplers_at"].get(budget, cfg["samplers"]):
                name, options = settings(label, budget, model_steps)
                calls = calls_of(name, options, model_steps)
                cell = out / "cells" / f"{kind}_{label}_{budget}_n{n}_s{cfg['samples']}{tag}.json"
                same = [c for c in (out / "cells").glob(f"{kind}_{label}_*_n{n}_s{cfg['samples']}"
                                                         f"{tag}.json")
                        if json.loads(c.read_text())["settings"] == _describe(options)]
                if cell.is_file() or same:   # done before, or another budget maps to it
                    continue
                completions, seconds = run_cell(prior, name, options, x0[:n], mask[:n],
                                                ids[:n], cfg)
                row = {"kind": kind, "sampler": label, "budget": budget, "calls": calls, "n": n,
                       **metrics(completions, x0[:n], mask[:n], y[:n], net, reference,
                                 per_image=True),
                       "s_per_image": seconds, "settings": _describe(options)}
                cell.write_text(json.dumps(row))
                print(f"{kind:7s} {label:13s} {calls:5d} calls n={n}: acc {row['accuracy']:.3f} "
                      f"hole MSE {row['hole_mse']:.4f} FD {row['fd']:.1f} known err "
                      f"{row['known_error']:.0f} ({seconds:.2f} s/image)", flush=True)
    rows = report_rows(out, cfg, tag, x_all, y_all, size, net, reference)
    write_outputs(rows, out, cfg)


def _describe(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def report_rows(out: Path, cfg: dict, tag: str, x_all, y_all, size, net,
                reference) -> list[dict]:
    """Every finished cell of the chosen kinds (this run's and earlier runs' into ``out``),
    with the ``clean`` row and both baselines at each image count the cells use."""
    pattern = f"_s{cfg['samples']}{tag}.json"
    cells = [json.loads(c.read_text()) for c in sorted((out / "cells").glob("*" + pattern))
             if c.name[: -len(pattern)].rsplit("_n", 1)[-1].isdigit()]
    cells = [c for c in cells if c["kind"] in cfg["kinds"]]
    ids = list(range(cfg["first"], cfg["first"] + max((c["n"] for c in cells), default=0)))
    x0, y = x_all[ids], y_all[ids]   # cells of earlier runs may use more images than this one
    rows = []
    for n in sorted({c["n"] for c in cells}, reverse=True):
        clean = metrics(x0[:n, None], x0[:n], torch.zeros(n, 1, *size), y[:n], net, reference)
        rows.append({"kind": "-", "sampler": "clean", "budget": 0, "calls": 0, "n": n, **clean,
                     "s_per_image": 0.0, "settings": "the ground truth itself"})
    for kind in cfg["kinds"]:
        mask = torch.stack([mask_of(kind, i, size) for i in ids])
        for n in sorted({c["n"] for c in cells if c["kind"] == kind}, reverse=True):
            for label, fill in (("mean-fill", mean_fill), ("harmonic", harmonic_fill)):
                start = time.perf_counter()
                filled = fill(x0[:n], mask[:n])
                seconds = (time.perf_counter() - start) / n
                rows.append({"kind": kind, "sampler": label, "budget": 0, "calls": 0, "n": n,
                             **metrics(filled[:, None], x0[:n], mask[:n], y[:n], net, reference),
                             "s_per_image": seconds, "settings": "baseline"})
        order = {label: i for i, label in enumerate(cfg["samplers"])}
        rows += sorted((c for c in cells if c["kind"] == kind),
                       key=lambda c: (-c["n"], order.get(c["sampler"], 99), c["calls"]))
    return rows


# ----------------------------------------------------------------------------- outputs
COLUMNS = ("kind", "sampler", "budget", "calls", "n", "accuracy", "accuracy_ci95", "hole_mse",
           "hole_mse_se", "known_error", "diversity", "fd", "s_per_image", "settings")


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_outputs(rows: list[dict], out: Path, cfg: dict) -> None:
    lines = [",".join(COLUMNS)] + [",".join(_fmt(r[c]) for c in COLUMNS) for r in rows]
    (out / "study.csv").write_text("\n".join(lines) + "\n")
    def arg(value) -> str:
        if isinstance(value, dict):
            return ",".join(f"{b}:{'+'.join(v) if isinstance(v, list) else v}"
                            for b, v in value.items())
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    command = "python benchmarks/inpainting_study.py " + " ".join(
        f"{k}={arg(v)}" for k, v in cfg.items() if arg(v) != "")
    md = [f"Every finished cell in `{out / 'cells'}` (one row each; earlier runs' cells too). "
          f"This report's run: `{command}`", "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    md += ["", "## The targets of #13, read off the rows above", ""] + targets(rows)
    (out / "study.md").write_text("\n".join(md) + "\n")
    plot(rows, out / "study.png")
    print(f"wrote {out / 'study.csv'}, {out / 'study.md'} and {out / 'study.png'}")


def _noise(a: dict, b: dict, key: str) -> float:
    """Combined 95% half-width of a difference of two rows' ``key`` (independent-error
    approximation; on the same images it overstates the noise, i.e. it is conservative)."""
    return math.hypot(_half_width(a, key), _half_width(b, key))


def _half_width(row: dict, metric: str) -> float:
    if metric == "accuracy":
        return row["accuracy_ci95"]
    se = row.get(metric + "_se", float("nan"))
    return 0.0 if math.isnan(se) else 1.96 * se


def targets(rows: list[dict]) -> list[str]:
    """#13's three targets per mask kind, each compared on the same images (same n)."""
    lines = []
    diffusion = [r for r in rows if r["calls"]]
    for kind in dict.fromkeys(r["kind"] for r in diffusion):
        mine = [r for r in diffusion if r["kind"] == kind]
        refs = [r for r in mine if r["sampler"] == "repaint" and r["calls"] >= 2000]
        for ref in refs:
            pool = [r for r in mine if r["calls"] <= 600 and r["n"] == ref["n"]]
            if not pool:
                continue
            best = max(pool, key=lambda r: (r["accuracy"], -r["hole_mse"]))
            ok = (best["accuracy"] >= ref["accuracy"] - _noise(best, ref, "accuracy")
                  and best["hole_mse"] <= ref["hole_mse"] + _noise(best, ref, "hole_mse"))
            lines.append(
                f"- {kind}, 1 (<= 600 calls vs RePaint at {ref['calls']}, n={ref['n']}): "
                f"{best['sampler']} at {best['calls']} calls: accuracy {best['accuracy']:.3f} vs "
                f"{ref['accuracy']:.3f} (noise ±{_noise(best, ref, 'accuracy'):.3f}), hole MSE "
                f"{best['hole_mse']:.4f} vs {ref['hole_mse']:.4f} (noise "
                f"±{_noise(best, ref, 'hole_mse'):.4f}): {'met' if ok else 'NOT met'}")
        for n in sorted({r["n"] for r in mine}, reverse=True):
            pool = [r for r in mine if r["calls"] >= 250 and r["n"] == n]
            base = [r for r in rows if r["kind"] == kind and r["n"] == n
                    and r["sampler"] in ("mean-fill", "harmonic")]
            if not pool or len(base) < 2:
                continue
            best = max(pool, key=lambda r: (r["accuracy"], -r["fd"]))
            acc = all(best["accuracy"] > b["accuracy"] for b in base)
            fd = all(best["fd"] < b["fd"] for b in base)
            lines.append(
                f"- {kind}, 2 (>= 250 calls vs baselines, n={n}): {best['sampler']} at "
                f"{best['calls']} calls: accuracy {best['accuracy']:.3f} vs "
                + ", ".join(f"{b['sampler']} {b['accuracy']:.3f}" for b in base)
                + f"; FD {best['fd']:.1f} vs " + ", ".join(f"{b['fd']:.1f}" for b in base)
                + f": accuracy {'beats' if acc else 'does NOT beat'} both, FD "
                  f"{'beats' if fd else 'does NOT beat'} both")
        for r1 in (r for r in mine if r["sampler"] == "repaint-r1"):
            rr = [r for r in mine if r["sampler"] == "repaint" and r["n"] == r1["n"]
                  and abs(r["calls"] - r1["calls"]) <= 0.2 * r1["calls"]]
            for r in rr:
                lines.append(
                    f"- {kind}, 3 (RePaint r=10 vs r=1 at ~{r1['calls']} calls, n={r1['n']}): "
                    f"accuracy {r['accuracy']:.3f} vs {r1['accuracy']:.3f} (noise "
                    f"±{_noise(r, r1, 'accuracy'):.3f}), hole MSE {r['hole_mse']:.4f} vs "
                    f"{r1['hole_mse']:.4f}: r>1 "
                    + ("better" if r["accuracy"] > r1["accuracy"] and r["hole_mse"] < r1["hole_mse"]
                       else "worse" if r["accuracy"] < r1["accuracy"]
                       and r["hole_mse"] > r1["hole_mse"] else "mixed"))
    return lines


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194)]


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy (top) and hole MSE (bottom) against calls (log axis), one column per kind,
    with 95% error bars; cells on fewer images hollow; baselines dashed (at the largest
    image count), the clean images' accuracy dotted. Drawn with PIL (no matplotlib)."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows if r["kind"] != "-"))
    samplers = list(dict.fromkeys(r["sampler"] for r in rows if r["budget"]))
    baselines = ["mean-fill", "harmonic"]
    calls = [r["calls"] for r in rows if r["calls"]] or [1, 10]
    lo, hi = math.log10(min(calls)) - 0.1, math.log10(max(calls)) + 0.1
    hi = hi if hi > lo + 0.3 else lo + 0.3
    w, h, pad = 260, 200, 48
    image = Image.new("RGB", (max(pad + len(kinds) * (w + pad), 1000),
                              2 * (h + pad) + pad + 20), "white")
    draw = ImageDraw.Draw(image)
    clean = next((r["accuracy"] for r in rows if r["sampler"] == "clean"), None)
    n_max = max((r["n"] for r in rows), default=0)
    ticks = [c for c in (100, 250, 500, 1000, 2410) if lo <= math.log10(c) <= hi]
    for column, kind in enumerate(kinds):
        mse_max = max([r["hole_mse"] for r in rows if r["kind"] == kind] + [1e-6]) * 1.15
        for panel, (metric, top) in enumerate((("accuracy", 1.0), ("hole_mse", mse_max))):
            x0, y0 = pad + column * (w + pad), pad + panel * (h + pad)
            draw.rectangle([x0, y0, x0 + w, y0 + h], outline="black")
            draw.text((x0, y0 - 14), f"{kind}: {metric} (0-{top:.3g})", fill="black")

            def xy(c, v, x0=x0, y0=y0, top=top):
                return (x0 + (math.log10(c) - lo) / (hi - lo) * w, y0 + h - v / top * h)

            for i, name in enumerate(baselines):
                value = next((r[metric] for r in rows if r["kind"] == kind
                              and r["sampler"] == name), None)
                if value is not None:
                    y = xy(10 ** lo, value)[1]
                    for x in range(x0, x0 + w, 8):
                        draw.line([x, y, x + 4, y], fill=(120, 120, 120) if i else (0, 0, 0))
            if metric == "accuracy" and clean is not None:
                y = xy(10 ** lo, clean)[1]
                for x in range(x0, x0 + w, 4):
                    draw.point((x, y), fill=(0, 150, 0))
            for tick in ticks:
                tx = xy(tick, 0)[0]
                draw.line([tx, y0 + h, tx, y0 + h + 4], fill="black")
                draw.text((tx - 8, y0 + h + 5), str(tick), fill="black")
            for i, name in enumerate(samplers):
                colour = COLOURS[i % len(COLOURS)]
                points = sorted((r["calls"], r[metric], _half_width(r, metric), r["n"])
                                for r in rows if r["kind"] == kind and r["sampler"] == name)
                shift = (i - (len(samplers) - 1) / 2) * 3   # bars of one budget side by side
                coords = [(xy(c, v)[0] + shift, xy(c, v)[1]) for c, v, _, _ in points]
                if len(coords) > 1:
                    draw.line(coords, fill=colour, width=2)
                for (c, v, e, n), (cx, cy) in zip(points, coords, strict=True):
                    lo_y, hi_y = xy(c, max(v - e, 0))[1], xy(c, min(v + e, top))[1]
                    draw.line([cx, lo_y, cx, hi_y], fill=colour)
                    draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=colour,
                                 fill=colour if n == n_max else "white", width=2)
    legend_y = 2 * (h + pad) + pad - 10
    x = pad
    for i, name in enumerate(samplers):
        draw.rectangle([x, legend_y, x + 10, legend_y + 10], fill=COLOURS[i % len(COLOURS)])
        draw.text((x + 14, legend_y), name, fill="black")
        x += 20 + 7 * len(name)
    draw.text((x, legend_y), f"--- mean-fill (black), harmonic (grey); ... clean accuracy; "
              f"filled: n={n_max} images, hollow: fewer (table); bars: 95%", fill="black")
    image.save(path)


if __name__ == "__main__":
    main(sys.argv[1:])
