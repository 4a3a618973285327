"""FID and KID between sets of real and generated images, from a local Inception weight file.

Features come from torchmetrics' ``NoTrainInceptionV3``, i.e. torch-fidelity's port of the
TensorFlow FID Inception (the network behind published FID numbers), built only from a file
the user provides (config key ``inception_weights``); torch-fidelity would otherwise download
it. The distances themselves are small functions here, written for numerical robustness and
tested against closed forms.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..imageio import to_uint8
from .errors import MetricUnavailable

__all__ = ["INCEPTION_FILE", "frechet_distance", "polynomial_mmd", "kernel_inception_distance",
           "load_inception", "InceptionMetrics"]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_FILE)
_FEATURE_DIMS = (64, 192, 768, 2048)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a (numerically) positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                     sigma2: torch.Tensor) -> torch.Tensor:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ||mu1 - mu2||² + tr(sigma1) + tr(sigma2) - 2·tr((sigma1 sigma2)^½), in float64. The trace
    term is computed as tr((S1 sigma2 S1)^½) with S1 = sigma1^½: that matrix is symmetric PSD,
    so its eigenvalues are real and the result has no imaginary part to discard, unlike
    sqrtm(sigma1 @ sigma2) on near-singular covariances (few samples, many features).
    """
    mu1, mu2, sigma1, sigma2 = (x.double() for x in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape \
            or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"need mu (D,) and sigma (D, D) for both sets: got {tuple(mu1.shape)}, "
                         f"{tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt


def _mean_cov(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    features = features.double()
    return features.mean(dim=0), torch.cov(features.T)


def polynomial_mmd(f_real: torch.Tensor, f_fake: torch.Tensor, degree: int = 3,
                   gamma: float | None = None, coef: float = 1.0) -> torch.Tensor:
    """Unbiased MMD² under k(x, y) = (gamma·x·y + coef)^degree, gamma = 1/D by default.

    The KID estimator of Bińkowski et al. (2018): within-set kernel sums leave out the diagonal
    (k(x, x)), which is what makes it unbiased; the sets may differ in size.
    """
    x, y = f_real.double(), f_fake.double()
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need >= 2 feature rows per set with equal widths: got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx, k_yy, k_xy = ((a @ b.T * gamma + coef) ** degree for a, b in ((x, x), (y, y), (x, y)))
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


def kernel_inception_distance(f_real: torch.Tensor, f_fake: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000,
                              generator: torch.Generator | None = None):
    """KID: mean and (population) std of :func:`polynomial_mmd` over random subsets.

    Each subset draws ``subset_size`` rows of each set without replacement (clamped to the
    smaller set's size: the estimator stays unbiased, only its spread grows). Returns
    (mean, std, used subset size).
    """
    size = min(subset_size, f_real.shape[0], f_fake.shape[0])
    scores = []
    for _ in range(subsets):
        real = f_real[torch.randperm(f_real.shape[0], generator=generator)[:size]]
        fake = f_fake[torch.randperm(f_fake.shape[0], generator=generator)[:size]]
        scores.append(polynomial_mmd(real, fake))
    scores = torch.stack(scores)
    return scores.mean(), scores.std(correction=0), size


def _inception_how_to() -> str:
    return (f"FID/KID need the FID Inception weights as a local file: {INCEPTION_FILE} "
            f"(torch-fidelity's FeatureExtractorInceptionV3 weights, {INCEPTION_URL}). Fetch it on "
            "a machine with internet and pass its path as "
            f"inception_weights=/path/to/{INCEPTION_FILE}. Nothing is downloaded at run time.")


def load_inception(inception_weights: str | Path | None, feature: int = 2048,
                   device: torch.device | str | None = None,
                   antialias: bool = False) -> torch.nn.Module:
    """The frozen FID Inception: uint8 images (B, 3, H, W) -> (B, ``feature``) pool features.

    ``antialias=False`` resizes to 299 like TensorFlow 1 did (torch-fidelity's default, so
    numbers compare with published ones); torchmetrics' own FID defaults to True.
    Raises :class:`MetricUnavailable` when the file or the torch-fidelity package is missing,
    ``ValueError`` when the file is not these weights.
    """
    if feature not in _FEATURE_DIMS:
        raise ValueError(f"feature must be one of {_FEATURE_DIMS} (Inception layer widths); "
                         f"got {feature}")
    if inception_weights is None:
        raise MetricUnavailable(f"inception_weights is not set. {_inception_how_to()}")
    path = Path(inception_weights).expanduser()
    if not path.is_file():
        raise MetricUnavailable(f"no file at inception_weights={path}. {_inception_how_to()}")
    try:
        import torch_fidelity  # noqa: F401 - the Inception definition torchmetrics builds on
    except ImportError as err:
        raise MetricUnavailable("FID/KID need the torch-fidelity package (the Inception network "
                                "definition): pip install torch-fidelity, or install "
                                "priorpaint[metrics].") from err
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:   # refuse anything but plain tensors before torch-fidelity unpickles the file itself
        torch.load(path, map_location="cpu", weights_only=True)
        model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)],
                                   feature_extractor_weights_path=str(path), antialias=antialias)
    except Exception as err:  # any unreadable or mismatched file gets the same clear message
        raise ValueError(f"{path} is not a usable FID Inception state dict ({err}). "
                         f"{_inception_how_to()}") from err
    return model.to(device) if device is not None else model


def _to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 RGB levels (what the TF-ported Inception was fed)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1|3, H, W) in [-1, 1]; got {tuple(images.shape)}")
    levels = to_uint8(images)
    return levels.expand(-1, 3, -1, -1) if levels.shape[1] == 1 else levels


class InceptionMetrics:
    """Accumulates Inception features of real and generated images; computes FID and KID.

    Features are kept (float32, on the CPU) because KID resamples them: 2048 × 4 bytes per image
    and set, i.e. ~80 MB per 10k images. Use ``update`` with image batches, or ``add_features``
    with features from :meth:`extract` cached elsewhere (e.g. of a fixed real set).
    """

    def __init__(self, inception_weights: str | Path | None, feature: int = 2048,
                 device: torch.device | str | None = None, antialias: bool = False,
                 kid_subsets: int = 100, kid_subset_size: int = 1000):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.network = load_inception(inception_weights, feature, self.device, antialias)
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self._features: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Pool features (B, feature) of images in [-1, 1] (grayscale is repeated to RGB)."""
        return self.network(_to_uint8_rgb(images).to(self.device)).float().cpu()

    def add_features(self, features: torch.Tensor, real: bool) -> None:
        self._features[bool(real)].append(features.detach().float().cpu())

    def update(self, images: torch.Tensor, real: bool) -> None:
        self.add_features(self.extract(images), real)

    def reset(self) -> None:
        self._features = {True: [], False: []}

    def compute(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """``fid``, ``kid_mean``, ``kid_std``, ``kid_subset_size``, ``n_real``, ``n_fake``."""
        real, fake = (torch.cat(self._features[key]) if self._features[key] else torch.empty(0)
                      for key in (True, False))
        if real.shape[0] < 2 or fake.shape[0] < 2:
            raise ValueError(f"FID/KID need >= 2 images per set: have {real.shape[0]} real and "
                             f"{fake.shape[0]} generated (call update(images, real=...))")
        fid = frechet_distance(*_mean_cov(real), *_mean_cov(fake))
        kid_mean, kid_std, size = kernel_inception_distance(
            real, fake, self.kid_subsets, self.kid_subset_size, generator)
        return {"fid": fid.item(), "kid_mean": kid_mean.item(), "kid_std": kid_std.item(),
                "kid_subset_size": size, "n_real": real.shape[0], "n_fake": fake.shape[0]}
