"""Where a prior's colour comes from: its x0-prediction of a window's mean colour at high noise.

    python benchmarks/dc_calibration.py ckpt=examples/priors/photos64.ckpt
    python benchmarks/dc_calibration.py ckpt=runs/photos64/checkpoints/last.ckpt windows=256 t=999,960,900

Why: an image's mean colour per channel (its "DC") has 1/(H*W) of the per-pixel noise, so it
is still visible when every pixel is buried, and an unconditional sample fixes its colour in
the top few percent of t. There the eps-MSE barely sees it (the DC is one of H*W components of
the error), and x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies any error in eps by
1 / sqrt(abar) (2e4 at t = 999 of cosine 1000). A prior that gets the DC wrong there draws
every sample in a saturated colour cast even when its inpaintings (whose known pixels fix the
colour) look right. This prints, per t, what the prior's clipped x0-prediction gives the
windows' DC against the truth (RMSE, in [-1, 1] units) and against the best constant (the
windows' mean DC), and the mean spread between channels (max - min of the DC, in 8-bit levels:
large = saturated colours).

Data: ``windows`` 64x64 (the prior's size) windows of the photos in ``photos=``
(../shared/data/photos/val by default, the evaluation set), one seed, native resolution.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from arguments import key_value_options, usage_error  # noqa: E402

from priorpaint.checkpoint import load_prior  # noqa: E402
from priorpaint.data.patches import PhotoPatches  # noqa: E402

PROG = "dc_calibration.py"
DEFAULTS = {"ckpt": None, "photos": str(ROOT.parent / "shared" / "data" / "photos" / "val"),
            "windows": "128", "t": "999,990,980,960,900,700", "seed": "0", "threads": "1"}


def channel_spread(dc: torch.Tensor) -> float:
    """Mean over windows of (max - min) of the per-channel mean, in 8-bit levels."""
    return float((dc.max(1).values - dc.min(1).values).mean()) * 127.5


def dc_table(model, diffusion, x0: torch.Tensor, ts, seed: int = 0) -> list[dict]:
    """Per t: the clipped x0-prediction's DC error (RMSE) and channel spread on windows ``x0``."""
    g = torch.Generator().manual_seed(seed)
    abar = torch.as_tensor(np.asarray(diffusion.alphas_cumprod), dtype=torch.float64)
    dc = x0.mean((2, 3))
    rows = []
    for t in ts:
        steps = torch.full((x0.shape[0],), t)
        xt = diffusion.q_sample(x0, steps, torch.randn(x0.shape, generator=g)).float()
        with torch.no_grad():
            out = model(xt, steps)
        mean_part = out[:, : x0.shape[1]]   # learned-variance priors add C channels after it
        pred_x0 = diffusion.predict_xstart(mean_part, xt, steps).clamp(-1, 1)
        pred = pred_x0.mean((2, 3))
        rows.append({"t": t, "abar": float(abar[t]), "rmse": float(((pred - dc) ** 2).mean().sqrt()),
                     "constant_rmse": float(((dc.mean(0) - dc) ** 2).mean().sqrt()),
                     "spread": channel_spread(pred), "true_spread": channel_spread(dc)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = key_value_options(sys.argv[1:] if argv is None else argv, DEFAULTS, PROG)
    if not cfg["ckpt"]:
        usage_error(PROG, "ckpt= is required: a prior checkpoint (train.py's or an exported one)")
    if not Path(cfg["ckpt"]).is_file():
        usage_error(PROG, f"ckpt={cfg['ckpt']} does not exist")
    if not Path(cfg["photos"]).is_dir():
        usage_error(PROG, f"photos={cfg['photos']} is not a folder of photos")
    torch.set_num_threads(int(cfg["threads"]))
    prior = load_prior(cfg["ckpt"])
    steps = prior.diffusion.num_timesteps
    try:
        ts = [int(t) for t in cfg["t"].split(",")]
    except ValueError:
        usage_error(PROG, f"t={cfg['t']}: give comma-separated integers")
    if not all(0 <= t < steps for t in ts):
        usage_error(PROG, f"t={cfg['t']}: every t must be in 0..{steps - 1} for this prior")
    windows = PhotoPatches(cfg["photos"], prior.image_size, prior.channels)
    n, seed = int(cfg["windows"]), int(cfg["seed"])
    x0 = torch.stack([windows[(i % len(windows.photos), seed * 1_000_003 + i)] for i in range(n)])
    rows = dc_table(prior.model.eval(), prior.diffusion, x0, ts, seed)
    print(f"{PROG} ckpt={cfg['ckpt']} photos={cfg['photos']} windows={n} seed={seed}")
    print(f"true windows: channel spread {rows[0]['true_spread']:.1f} levels")
    print("| t | abar | x0-prediction DC RMSE | best constant's RMSE | channel spread (levels) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['t']} | {r['abar']:.2e} | {r['rmse']:.3f} | {r['constant_rmse']:.3f} | "
              f"{r['spread']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
