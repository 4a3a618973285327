"""Evaluation metrics for priors and inpaintings: the last stage of the data flow.

- ``pixel``: PSNR, SSIM, gradient energy (whole image or a region), known-region error,
  sample diversity.
- ``perceptual``: LPIPS and LPIPS diversity, from local weight files only.
- ``distribution``: FID and KID (own maths, torchmetrics/torch-fidelity Inception features,
  from a local weight file only).
- ``likelihood``: the prior's bits/dim on held-out images.
- ``report``: per-image rows -> summary, metrics.json and metrics.csv.

Nothing here downloads: a metric whose weights are absent raises :class:`MetricUnavailable`
naming the file, where it comes from and the config key to set.
"""

from .bits_per_dim import nll_bpd
from .distribution import (
    INCEPTION_FILE,
    InceptionMetrics,
    frechet_distance,
    kernel_inception_distance,
    load_inception,
    polynomial_mmd,
)
from .errors import MetricUnavailable
from .perceptual import LPIPS_NETS, load_lpips, lpips, lpips_diversity
from .pixel import (
    diversity,
    gradient_energy,
    gradient_energy_ratio,
    known_region_error,
    psnr,
    ssim,
    ssim_map,
    to_unit,
)
from .report import aggregate, write_metrics

__all__ = [
    "MetricUnavailable",
    "to_unit", "psnr", "ssim", "ssim_map", "gradient_energy", "gradient_energy_ratio",
    "known_region_error", "diversity",
    "LPIPS_NETS", "load_lpips", "lpips", "lpips_diversity",
    "INCEPTION_FILE", "frechet_distance", "polynomial_mmd", "kernel_inception_distance",
    "load_inception", "InceptionMetrics",
    "nll_bpd",
    "aggregate", "write_metrics",
]
