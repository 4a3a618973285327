"""priorpaint's DDNM beside the authors' own DDNM code (wyhuai/DDNM), same weights and cases.

    git clone https://github.com/wyhuai/DDNM /somewhere/DDNM      # outside this project (MIT)
    python benchmarks/ddnm_authors.py ckpt=examples/priors/mnist32.ckpt ddnm_repo=/somewhere/DDNM

``ddnm_repo=`` (or the environment variable ``DDNM_REPO``) names a checkout of the authors'
code; it is imported from there, never copied into this project nor downloaded at run time
(it needs torch, torchvision, tqdm, opencv and scipy, as their code imports them).

Why: ``priorpaint/sampling/ddnm.py`` says its step has the coefficients of the authors' SVD
loop (``ddnm_diffusion`` in ``functions/svd_ddnm.py``, which ``svd_based_ddnm_plus`` in
``guided_diffusion/diffusion.py`` runs when σ_y = 0) and leaves out the extra √(1 − ᾱ'²)
that their ``simplified_ddnm_plus`` loop puts on the noise-and-ε term. This script runs

- ``authors-svd``: their ``ddnm_diffusion`` function, called as it is, with their
  ``Inpainting`` operator (one operator per mask, so a batch is the samples of one image);
- ``authors-simplified``: the reverse loop of their ``simplified_ddnm_plus`` method. That
  method also loads a data set, a mask file and writes images, so the loop alone is taken
  from its source text at run time (from ``with torch.no_grad():`` to ``x = xs[-1]``) and
  run unchanged on our tensors; it takes one image at a time (its ``if sigma_t >= ...``
  needs a one-element batch);
- ``priorpaint``: ``inpaint(sampler="ddnm", steps=T)``, the project's default DDNM;

all at η = 0.85, T = ``steps`` (100 network calls; no time travel: L = r = 1, their
``travel_length`` / ``travel_repeat``), on MNIST t10k images ``first`` .. ``first+images-1``
(within 7000-7999; 8000-9999 are never read) with the study's masks, ``samples`` seeds per
image, and scores them with ``benchmarks/inpainting_study.py``'s metrics (its classifier
trained on 0-6999, its Fréchet reference 7000-7999). The authors' code runs on the prior's
own β (their ``compute_alpha`` over them) and gets ε as the first C output channels of
the prior's network; their hard-coded ``.to('cuda')`` is pointed at ``device=`` while it
runs. Their outputs are clamped to [-1, 1], as their image writer does. Known differences
that remain: their time grid is t = 10k (990 .. 0, then ᾱ = 1), priorpaint's the respaced
chain (0 .. 999 evenly); priorpaint clips x̂_0 to [-1, 1] at each step, they do not.

Writes ``out/ddnm_authors.csv`` and ``out/ddnm_authors.md`` (the command, one row per mask
kind and loop, and each authors' loop's difference to priorpaint with its noise).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import sys
import textwrap
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import inpainting_study as study  # noqa: E402
from arguments import key_value_options, usage_error  # noqa: E402

from priorpaint.checkpoint import load_prior  # noqa: E402

DEFAULTS = {
    "ckpt": None, "ddnm_repo": os.environ.get("DDNM_REPO", ""),
    "mnist": str(ROOT.parent / "shared" / "data" / "mnist"), "out": "ddnm_authors",
    "cache": "study/cache", "first": 7000, "images": 32, "samples": 2, "kinds": "thick,half",
    "steps": 100, "eta": 0.85, "loops": "priorpaint,authors-svd,authors-simplified",
    "batch_size": 50, "seed": 0, "threads": 1, "device": "cpu",
}
LOOPS = ("priorpaint", "authors-svd", "authors-simplified")
COLUMNS = ("kind", "loop", "calls", "n", "accuracy", "accuracy_ci95", "hole_mse",
           "hole_mse_se", "known_error", "diversity", "fd", "s_per_image")


def parse(argv: list[str]) -> dict:
    cfg = key_value_options(argv, DEFAULTS, "ddnm_authors.py")
    if not cfg["ckpt"]:
        usage_error("ddnm_authors.py", "ckpt= is required (a 1-channel MNIST prior)")
    for key in ("first", "images", "samples", "steps", "batch_size", "seed", "threads"):
        cfg[key] = int(cfg[key])
    cfg["eta"] = float(cfg["eta"])
    for key in ("kinds", "loops"):
        cfg[key] = [v.strip() for v in str(cfg[key]).split(",") if v.strip()]
    unknown = [v for v in cfg["loops"] if v not in LOOPS]
    if unknown:
        usage_error("ddnm_authors.py", f"loops: unknown {unknown[0]!r}; known: "
                    f"{', '.join(LOOPS)}")
    unknown = [k for k in cfg["kinds"] if k not in study.KINDS]
    if unknown:
        usage_error("ddnm_authors.py", f"unknown mask kind {unknown[0]!r}; known: "
                    f"{', '.join(study.KINDS)}")
    if any(loop.startswith("authors") for loop in cfg["loops"]):
        repo = Path(cfg["ddnm_repo"] or ".")
        if not cfg["ddnm_repo"] or not (repo / "functions" / "svd_ddnm.py").is_file():
            usage_error("ddnm_authors.py", "ddnm_repo= (or DDNM_REPO) must name a "
                        "checkout of github.com/wyhuai/DDNM (it has functions/svd_ddnm.py)"
                        f"; got {cfg['ddnm_repo']!r}")
    first, stop = cfg["first"], cfg["first"] + cfg["images"]
    if not (study.EVALUATE[0] <= first and stop <= study.EVALUATE[1]):
        usage_error("ddnm_authors.py", f"images {first}-{stop - 1} must lie in "
                    f"{study.EVALUATE[0]}-{study.EVALUATE[1] - 1}")
    return cfg


# ----------------------------------------------------------------------------- the authors' code
def authors_modules(repo: str) -> types.SimpleNamespace:
    """Their ``functions.svd_ddnm``, ``functions.svd_operators`` and ``guided_diffusion.diffusion``
    imported from the checkout ``repo``, their per-step progress bars silenced."""
    if repo not in sys.path:
        sys.path.insert(0, repo)
    mods = types.SimpleNamespace(
        svd=importlib.import_module("functions.svd_ddnm"),
        operators=importlib.import_module("functions.svd_operators"),
        diffusion=importlib.import_module("guided_diffusion.diffusion"))
    mods.svd.tqdm = _quiet   # their ``from tqdm import tqdm``
    return mods


def _quiet(iterable, *args, **kwargs):
    return iterable


def simplified_loop_source(diffusion_module) -> str:
    """The reverse loop of their ``Diffusion.simplified_ddnm_plus``, as its source text says."""
    source = textwrap.dedent(inspect.getsource(diffusion_module.Diffusion.simplified_ddnm_plus))
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "with torch.no_grad():")
    stop = next(i for i, line in enumerate(lines) if line.strip() == "x = xs[-1]")
    return textwrap.dedent("\n".join(lines[start:stop + 1]))


@contextlib.contextmanager
def cuda_means(device: torch.device):
    """Their code moves tensors with ``.to('cuda')``; while this is open that means ``device``."""
    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple(device if isinstance(a, str) and a == "cuda" else a for a in args)
        return original(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = original


def eps_model(prior):
    """The authors' ``model(x_t, t)`` -> ε: the prior's network on the original step index."""
    channels, diffusion = prior.channels, prior.diffusion

    def model(x, t):
        with torch.no_grad():
            return prior.model(x, diffusion.model_timesteps(t.long()))[:, :channels]

    return model


def authors_config(steps: int, num_timesteps: int) -> types.SimpleNamespace:
    """The parts of their YAML config their loops read: T_sampling, no time travel."""
    return types.SimpleNamespace(
        diffusion=types.SimpleNamespace(num_diffusion_timesteps=num_timesteps),
        time_travel=types.SimpleNamespace(T_sampling=steps, travel_length=1, travel_repeat=1))


def seeded(seed: int, image: int, sample: int) -> None:
    """Their loops draw from torch's global generator: seed it per (seed, image, sample)."""
    torch.manual_seed((seed * 1_000_003 + image) * 1_009 + sample)


def run_authors_svd(mods, prior, cfg, x0, mask, ids, device) -> torch.Tensor:
    """(N, S, C, H, W): their ``ddnm_diffusion`` on each image's S samples (one A per mask)."""
    n, s, c = len(x0), cfg["samples"], prior.channels
    config = authors_config(cfg["steps"], prior.diffusion.num_timesteps)
    betas, model = prior.diffusion.betas.float().to(device), eps_model(prior)
    out = torch.empty(n, s, *x0.shape[1:])
    for i in range(n):
        pixels = torch.nonzero(mask[i, 0].reshape(-1) == 0).reshape(-1)
        missing = torch.cat([pixels * c + k for k in range(c)]).to(device)   # their layout
        a_funcs = mods.operators.Inpainting(c, x0.shape[-1], missing, device)
        truth = x0[i:i + 1].expand(s, -1, -1, -1).to(device)
        y = a_funcs.A(truth)
        seeded(cfg["seed"], ids[i], 0)
        x = torch.randn(s, *x0.shape[1:], device=device)
        with cuda_means(device):
            xs, _ = mods.svd.ddnm_diffusion(x, model, betas, cfg["eta"], a_funcs, y,
                                            cls_fn=None, classes=None, config=config)
        out[i] = xs[0].clamp(-1, 1).cpu()
    return out


def run_authors_simplified(mods, prior, cfg, x0, mask, ids, device) -> torch.Tensor:
    """(N, S, C, H, W): their ``simplified_ddnm_plus`` loop, one (image, sample) at a time."""
    code = compile(simplified_loop_source(mods.diffusion), "simplified_ddnm_plus", "exec")
    n, s = len(x0), cfg["samples"]
    owner = types.SimpleNamespace(betas=prior.diffusion.betas.float().to(device),
                                  args=types.SimpleNamespace(eta=cfg["eta"]))
    out = torch.empty(n, s, *x0.shape[1:])
    for i in range(n):
        m = mask[i:i + 1].to(device)
        y = x0[i:i + 1].to(device) * m
        for k in range(s):
            seeded(cfg["seed"], ids[i], k)
            scope = dict(vars(mods.diffusion))
            scope.update(self=owner, tqdm=types.SimpleNamespace(tqdm=_quiet),
                         model=eps_model(prior), sigma_y=0.0, y=y,
                         A=lambda z, m=m: z * m, Ap=lambda z, m=m: z * m,
                         config=authors_config(cfg["steps"], prior.diffusion.num_timesteps),
                         x=torch.randn(1, *x0.shape[1:], device=device))
            with cuda_means(device):
                exec(code, scope)
            out[i, k] = scope["x"][0].clamp(-1, 1).cpu()
    return out


def run_priorpaint(prior, cfg, x0, mask, ids) -> torch.Tensor:
    """(N, S, C, H, W): ``inpaint(sampler="ddnm", steps=T)``, batched as the study does."""
    options = {"steps": cfg["steps"], "eta": cfg["eta"]}
    completions, _ = study.run_cell(prior, "ddnm", options, x0, mask, ids,
                                    {**cfg, "precision": "fp32"})
    return completions


# ----------------------------------------------------------------------------- the run
def main(argv: list[str]) -> None:
    cfg = parse(argv)
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    prior = load_prior(cfg["ckpt"])
    prior.model.eval().to(device)
    if prior.channels != 1:
        usage_error("ddnm_authors.py", f"{cfg['ckpt']} is a {prior.channels}-channel "
                    f"prior; the comparison needs one trained on MNIST (1 channel)")
    size = tuple(prior.image_size)
    images, labels = study.read_mnist(Path(cfg["mnist"]), study.EVALUATE[1])
    x_all, y_all = study.to_model(images, size), torch.from_numpy(labels)
    net = study.classifier(x_all, y_all, Path(cfg["cache"]))
    with torch.no_grad():
        ref = net.features(x_all[study.EVALUATE[0]:study.EVALUATE[1]]).double()
    reference = (ref.mean(0), torch.cov(ref.T))
    ids = list(range(cfg["first"], cfg["first"] + cfg["images"]))
    x0, y = x_all[ids], y_all[ids]
    mods = (authors_modules(cfg["ddnm_repo"])
            if any(loop.startswith("authors") for loop in cfg["loops"]) else None)
    rows = []
    for kind in cfg["kinds"]:
        mask = torch.stack([study.mask_of(kind, i, size) for i in ids])
        for loop in cfg["loops"]:
            start = time.perf_counter()
            if loop == "priorpaint":
                completions = run_priorpaint(prior, cfg, x0, mask, ids)
            elif loop == "authors-svd":
                completions = run_authors_svd(mods, prior, cfg, x0, mask, ids, device)
            else:
                completions = run_authors_simplified(mods, prior, cfg, x0, mask, ids, device)
            seconds = (time.perf_counter() - start) / (len(ids) * cfg["samples"])
            row = {"kind": kind, "loop": loop, "calls": cfg["steps"], "n": len(ids),
                   **study.metrics(completions, x0, mask, y, net, reference),
                   "s_per_image": seconds}
            rows.append(row)
            print(f"{kind:6s} {loop:18s} acc {row['accuracy']:.3f} hole MSE "
                  f"{row['hole_mse']:.4f} FD {row['fd']:.1f} known err "
                  f"{row['known_error']:.1f} ({seconds:.2f} s/image)", flush=True)
    write_outputs(rows, out, cfg)


def write_outputs(rows: list[dict], out: Path, cfg: dict) -> None:
    fmt = study._fmt
    (out / "ddnm_authors.csv").write_text(
        "\n".join([",".join(COLUMNS)] + [",".join(fmt(r[c]) for c in COLUMNS) for r in rows])
        + "\n")
    shown = {k: v for k, v in cfg.items() if k != "ddnm_repo"}
    command = "python benchmarks/ddnm_authors.py ddnm_repo=$DDNM_REPO " + " ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in shown.items())
    md = [f"priorpaint's DDNM and the authors' two DDNM loops (wyhuai/DDNM) on the same prior, "
          f"masks and seeds; accuracy ± half-width of a 95% Wilson interval, hole MSE ± its "
          f"standard error, FD against digits 7000-7999. Command: `{command}`", "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    md += ["", "Differences to priorpaint per kind (accuracy; hole MSE, with the combined 95% "
           "noise of the difference):", ""]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = {r["loop"]: r for r in rows if r["kind"] == kind}
        base = mine.get("priorpaint")
        for loop, r in mine.items():
            if base is None or loop == "priorpaint":
                continue
            acc_noise = math.hypot(r["accuracy_ci95"], base["accuracy_ci95"])
            mse_noise = 1.96 * math.hypot(r["hole_mse_se"], base["hole_mse_se"])
            md.append(f"- {kind}: {loop} − priorpaint: accuracy {r['accuracy'] - base['accuracy']:+.3f}"
                      f" (noise ±{acc_noise:.3f}), hole MSE "
                      f"{r['hole_mse'] - base['hole_mse']:+.4f} (noise ±{mse_noise:.4f}), FD "
                      f"{r['fd']:.1f} vs {base['fd']:.1f}")
    (out / "ddnm_authors.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'ddnm_authors.csv'} and {out / 'ddnm_authors.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
