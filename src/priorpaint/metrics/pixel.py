"""Per-image pixel metrics: PSNR, SSIM, gradient energy, known-region error and diversity.

Images are float tensors in [-1, 1], shape (B, C, H, W). PSNR, SSIM and diversity are computed
on the [0, 1] rescaling (data range 1), the convention of published inpainting tables.

``mask`` arguments of :func:`psnr`, :func:`ssim`, :func:`gradient_energy` and
:func:`gradient_energy_ratio` are REGION masks: 1 = pixel is scored. To score
the inpainted hole of a priorpaint mask (1 = known) pass ``1 - mask`` (``~mask`` if bool).
:func:`known_region_error` and :func:`diversity` take the priorpaint mask itself (1 = known)
and say which part they use.
A region with no pixel gives NaN for that image (the metric is undefined there), never an error,
so one empty mask does not stop a whole evaluation run; :func:`~priorpaint.metrics.aggregate`
leaves NaNs out and counts them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["to_unit", "psnr", "ssim", "ssim_map", "gradient_energy", "gradient_energy_ratio",
           "known_region_error", "diversity"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03   # Wang et al. (2004); data range 1 -> C1 = K1², C2 = K2²


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], in float32 or better (the metrics' working precision)."""
    return (x.to(torch.promote_types(x.dtype, torch.float32)) + 1.0) / 2.0


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(f"pred and target must be (B, C, H, W) of the same shape: got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def _region(mask: torch.Tensor, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``mask`` (B, 1|C, H, W), bool or float, as float weights expanded to ``like``'s shape."""
    b, c, h, w = like.shape
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] not in (1, c) \
            or tuple(mask.shape[2:]) != (h, w):
        raise ValueError(f"{name} must be (B, 1, H, W) or (B, C, H, W) = ({b}, 1|{c}, {h}, {w}) "
                         f"for images {tuple(like.shape)}; got {tuple(mask.shape)}")
    return mask.to(device=like.device, dtype=like.dtype).expand_as(like)


def _region_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Per-image (weighted) mean over (C, H, W); NaN where the weights are all zero."""
    if weights is None:
        return values.mean(dim=(1, 2, 3))
    total = weights.sum(dim=(1, 2, 3))
    return (values * weights).sum(dim=(1, 2, 3)) / total   # 0/0 = NaN: empty region


def psnr(pred: torch.Tensor, target: torch.Tensor,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,), on [0, 1] data: 10·log10(1 / MSE).

    ``mask`` (optional) is the region to score (1 = scored); the MSE is then the mean over the
    region's pixels and channels. Identical images give +inf.
    """
    _check_pair(pred, target)
    err = (to_unit(pred) - to_unit(target)) ** 2
    weights = None if mask is None else _region(mask, err)
    return -10.0 * torch.log10(_region_mean(err, weights))


def _gaussian_1d(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    kernel = torch.exp(-(offsets / sigma) ** 2 / 2)
    return kernel / kernel.sum()


def _window_size(extent: int) -> int:
    """11, or for a side under 6 px the largest window reflect padding allows (2·side - 1)."""
    return min(SSIM_WINDOW, 2 * extent - 1)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM at every pixel, (B, C, H, W), on [0, 1] data.

    Wang et al. (2004): Gaussian window 11×11, σ = 1.5, C1 = 0.01², C2 = 0.03². The images are
    reflect-padded by half a window so every pixel, border included, has a value: the map
    torchmetrics (1.x) averages for its SSIM (Wang's and skimage's code instead drop a 5 px
    border; the means differ slightly). Tiny images: padding by half a window needs a side of
    at least 6 px (sides 6-10 use the 11 window over their reflection, as torchmetrics does);
    a side under 6 px gets the largest window padding allows, 2·side - 1 (σ stays 1.5), so
    it still has a value, but one not comparable with 11-window SSIM.
    """
    _check_pair(pred, target)
    x, y = to_unit(pred), to_unit(target)
    channels = x.shape[1]
    kh, kw = _window_size(x.shape[2]), _window_size(x.shape[3])
    # One grouped, separable convolution computes all five local moments at once.
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    stats = F.pad(stats, ((kw - 1) // 2, (kw - 1) // 2, (kh - 1) // 2, (kh - 1) // 2),
                  mode="reflect")
    groups = stats.shape[1]
    rows = _gaussian_1d(kh, SSIM_SIGMA, x).view(1, 1, kh, 1).expand(groups, 1, kh, 1)
    cols = _gaussian_1d(kw, SSIM_SIGMA, x).view(1, 1, 1, kw).expand(groups, 1, 1, kw)
    local = F.conv2d(F.conv2d(stats, rows, groups=groups), cols, groups=groups)
    mu_x, mu_y, xx, yy, xy = local.split(channels, dim=1)
    # E[x²] - E[x]² can round to a tiny negative number on flat patches; a variance cannot.
    var_x, var_y = (xx - mu_x ** 2).clamp(min=0), (yy - mu_y ** 2).clamp(min=0)
    cov = xy - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
            / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))


def ssim(pred: torch.Tensor, target: torch.Tensor,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Structural similarity per image, (B,), on [0, 1] data (see :func:`ssim_map`).

    Without ``mask``: the mean of the SSIM map (the standard whole-image SSIM). With a region
    ``mask`` (1 = scored): the mean of the map over the region's pixels (and channels). Each
    map value looks at an 11×11 neighbourhood, so a hole's score also sees the known pixels
    around its edge, as a whole-image SSIM of the same pixels would.
    """
    values = ssim_map(pred, target)
    return _region_mean(values, None if mask is None else _region(mask, values))


def gradient_energy(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared forward difference per image, (B,), on [0, 1] data.

    Horizontal and vertical neighbour differences are pooled (and channels); with a region
    ``mask`` (1 = scored) a difference counts when either of its two pixels is in the region,
    so a fill's seam with the known pixels around it is part of the hole's energy (a fill
    that is smooth inside but jumps at its border is not mistaken for texture-free). NaN for
    an image whose region has no difference to count.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W); got {tuple(x.shape)}")
    u = to_unit(x)
    dx, dy = u[..., :, 1:] - u[..., :, :-1], u[..., 1:, :] - u[..., :-1, :]
    if mask is None:
        total = (dx ** 2).sum(dim=(1, 2, 3)) + (dy ** 2).sum(dim=(1, 2, 3))
        return total / (dx[0].numel() + dy[0].numel())
    region = _region(mask, u) > 0.5
    wx = (region[..., :, 1:] | region[..., :, :-1]).to(u.dtype)
    wy = (region[..., 1:, :] | region[..., :-1, :]).to(u.dtype)
    total = (dx ** 2 * wx).sum(dim=(1, 2, 3)) + (dy ** 2 * wy).sum(dim=(1, 2, 3))
    return total / (wx.sum(dim=(1, 2, 3)) + wy.sum(dim=(1, 2, 3)))   # 0/0 = NaN: empty region


def gradient_energy_ratio(pred: torch.Tensor, target: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """``gradient_energy(pred) / gradient_energy(target)`` over the same region, (B,).

    A blur-sensitive score that PSNR and SSIM are not: a fill that smears the hole (harmonic,
    Telea, a blurry upsample) has far less gradient energy than the photo had there (ratio
    well below 1), one that keeps the texture's contrast scores near 1 (even if the texture
    is not the true one), and noise or seams score above 1. NaN where the truth is flat in
    the region (nothing to compare against) or the region is empty.
    """
    _check_pair(pred, target)
    truth = gradient_energy(target, mask)
    return gradient_energy(pred, mask) / torch.where(truth > 0, truth, torch.nan)


def known_region_error(pred: torch.Tensor, reference: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """Largest |pred - reference| over the known pixels (mask > 0.5), per image, (B,).

    In the images' own [-1, 1] units. RePaint pastes the known pixels back at every step, so
    priorpaint's outputs must give exactly 0; anything else means the known region was
    altered. An image with no known pixel gives 0 (nothing to violate).
    """
    _check_pair(pred, reference)
    known = _region(mask, pred) > 0.5
    diff = (pred - reference).abs()
    return torch.where(known, diff, torch.zeros_like(diff)).amax(dim=(1, 2, 3))


def diversity(samples: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pairwise RMS distance in the hole between samples of the same input, (N,).

    ``samples`` (N, S, C, H, W) in [-1, 1], S ≥ 2 inpaintings per input; ``mask`` (N, 1|C, H, W),
    1 = known. For every pair (i < j) the distance is sqrt(mean over hole pixels and channels
    of (s_i - s_j)²) on [0, 1] data; the result averages the S(S-1)/2 pairs. 0 means the
    sampler returned the same completion every time; NaN means the mask has no hole.
    """
    if samples.ndim != 5 or samples.shape[1] < 2:
        raise ValueError(f"samples must be (N, S, C, H, W) with S >= 2 samples per input; "
                         f"got {tuple(samples.shape)}")
    n, s = samples.shape[:2]
    hole = 1.0 - _region(mask, samples[:, 0])
    values = rearrange(to_unit(samples) * hole.unsqueeze(1), "n s c h w -> n s (c h w)")
    # Exact differences (not the |a|² + |b|² - 2ab shortcut, which cancels for close samples).
    dist = torch.cdist(values.double(), values.double(),
                       compute_mode="donot_use_mm_for_euclid_dist")
    i, j = torch.triu_indices(s, s, offset=1, device=dist.device)
    count = hole.sum(dim=(1, 2, 3)).double()
    rms = dist[:, i, j] / count.sqrt().unsqueeze(1)
    return rms.mean(dim=1).to(values.dtype).reshape(n)
