"""Metrics: closed forms, torchmetrics/scipy cross-checks, and the real weight-loading paths.

No test downloads anything: feature networks are randomly initialised here, saved to a temp
file and loaded through the same path a user's downloaded weights take.
"""

import csv
import json
import math
import sys
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from priorpaint.diffusion import GaussianDiffusion, calc_bpd_loop
from priorpaint.metrics import (
    INCEPTION_FILE,
    InceptionMetrics,
    MetricUnavailable,
    aggregate,
    diversity,
    frechet_distance,
    gradient_energy,
    gradient_energy_ratio,
    kernel_inception_distance,
    known_region_error,
    load_inception,
    load_lpips,
    lpips,
    lpips_diversity,
    nll_bpd,
    polynomial_mmd,
    psnr,
    ssim,
    ssim_map,
    write_metrics,
)


def _images(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1


def _noisy(x, scale=0.2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x + scale * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(-1, 1)


def _hole_mask(b, h, w, top=2, left=3, size=4):
    """priorpaint convention: 1 = known, a square hole of zeros."""
    mask = torch.ones(b, 1, h, w)
    mask[:, :, top:top + size, left:left + size] = 0
    return mask


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch, tmp_path):
    """Any attempt to fetch weights fails the test instead of reaching the network."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a metric tried to download {args[:1]}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


# ----------------------------------------------------------------------------- PSNR
def test_psnr_closed_form_whole_image_and_region():
    target = _images(2, 3, 8, 8) * 0.5
    offset = torch.tensor([0.1, 0.4], dtype=torch.float64).view(2, 1, 1, 1)
    pred = target + offset                    # [0, 1] error offset / 2 everywhere
    expected = -20 * torch.log10(offset.flatten() / 2)
    torch.testing.assert_close(psnr(pred, target), expected)

    region = 1 - _hole_mask(2, 8, 8)          # score only the hole
    spoiled = torch.where(region.bool(), pred, -target.sign())   # errors >= 1 outside it
    torch.testing.assert_close(psnr(spoiled, target, region), expected)
    assert (psnr(spoiled, target) < expected - 3).all()
    assert torch.isinf(psnr(target, target)).all()


def test_empty_region_gives_nan_not_error():
    x = _images(2, 1, 8, 8)
    empty = torch.zeros(2, 1, 8, 8)
    empty[1, :, 0, 0] = 1
    values = psnr(_noisy(x), x, empty)
    assert math.isnan(values[0]) and math.isfinite(values[1])
    assert math.isnan(ssim(_noisy(x), x, empty)[0])


# ----------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("shape", [(3, 3, 32, 40), (2, 1, 28, 28), (2, 3, 8, 8)])
def test_ssim_matches_torchmetrics_on_whole_images(shape):
    from torchmetrics.functional.image import structural_similarity_index_measure

    target = _images(*shape)
    pred = _noisy(target)
    expected = structural_similarity_index_measure((pred + 1) / 2, (target + 1) / 2,
                                                   data_range=1.0, reduction="none")
    torch.testing.assert_close(ssim(pred, target), expected, rtol=0, atol=1e-10)


def test_ssim_region_is_the_map_mean_over_the_region():
    target = _images(2, 3, 24, 24)
    pred = target.clone()
    pred[:, :, 16:, 16:] = _noisy(target)[:, :, 16:, 16:]     # damage one corner only
    known = torch.ones(2, 1, 24, 24)
    known[:, :, 14:, 14:] = 0
    hole = 1 - known

    whole = ssim(pred, target)
    torch.testing.assert_close(ssim(pred, target, torch.ones(2, 1, 24, 24)), whole)
    map_ = ssim_map(pred, target)
    expected = (map_ * hole).sum(dim=(1, 2, 3)) / (hole.sum(dim=(1, 2, 3)) * 3)
    torch.testing.assert_close(ssim(pred, target, hole), expected)
    assert (ssim(pred, target, hole) < whole).all()
    far = torch.zeros(2, 1, 24, 24)
    far[:, :, :6, :6] = 1                     # > 5 px from any damage: untouched windows
    torch.testing.assert_close(ssim(pred, target, far), torch.ones(2, dtype=torch.float64))
    # (B, C, H, W) and bool masks mean the same region
    torch.testing.assert_close(ssim(pred, target, hole.expand(2, 3, 24, 24).bool()), expected)


def test_ssim_tiny_images_get_a_clamped_window():
    x = _images(2, 3, 4, 5)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    value = ssim(_noisy(x, 0.5), x)
    assert torch.isfinite(value).all() and (value < 1).all()


def test_mask_shape_errors_name_the_shapes():
    x = _images(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\(2, 1\|3, 8, 8\).*\(2, 2, 8, 8\)"):
        psnr(x, x, torch.ones(2, 2, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:, :1])


# ----------------------------------------------------------------------------- known region
def _ramp(slope, shape=(1, 3, 8, 8)):
    """[0, 1] value slope * column (as [-1, 1] images): every horizontal difference = slope."""
    columns = torch.arange(shape[-1], dtype=torch.float64).expand(shape)
    return (0.1 + slope * columns) * 2 - 1


def test_gradient_energy_closed_form():
    # whole image: 3 x 8 x 7 horizontal differences of 0.05, as many vertical ones of 0
    assert torch.allclose(gradient_energy(_ramp(0.05)), torch.tensor([0.05 ** 2 / 2], dtype=torch.float64))
    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:6, 2:6] = 1          # differences touching the 4x4 square: 5 per row and
                                       # column, 4 x 5 x 2 directions x 3 channels in all
    hole_only = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    hole_only[..., 3, 3] = 0.2         # a spike in the region ([0, 1]: 0.5 +- 0.1) ...
    assert torch.allclose(gradient_energy(hole_only, region),
                          torch.tensor([3 * 4 * 0.1 ** 2 / 120], dtype=torch.float64))
    outside = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    outside[..., 0, 0] = 0.2           # ... counts, one two pixels outside it does not
    assert float(gradient_energy(outside, region)) == 0.0


def test_gradient_energy_ratio_is_one_for_the_truth_and_small_for_smooth_fills():
    region = torch.zeros(2, 1, 8, 8)
    region[..., 2:6, 2:6] = 1
    truth = torch.cat([_ramp(0.05), _ramp(0.02)])
    assert torch.allclose(gradient_energy_ratio(truth, truth, region),
                          torch.ones(2, dtype=torch.float64))
    flatter = torch.cat([_ramp(0.025), _ramp(0.04)])     # half, twice the slope: (1/2)², 2²
    assert torch.allclose(gradient_energy_ratio(flatter, truth, region),
                          torch.tensor([0.25, 4.0], dtype=torch.float64))
    flat = torch.zeros_like(truth)
    assert torch.equal(gradient_energy_ratio(flat, truth, region), torch.zeros(2, dtype=torch.float64))
    ratio = gradient_energy_ratio(truth, flat, region)   # flat truth: undefined, not inf
    assert torch.isnan(ratio).all()
    assert torch.isnan(gradient_energy_ratio(truth, truth, torch.zeros_like(region))).all()
    with pytest.raises(ValueError, match="same shape"):
        gradient_energy_ratio(truth[:1], truth)


def test_known_region_error_sees_only_known_pixels():
    reference = _images(3, 3, 8, 8)
    mask = _hole_mask(3, 8, 8)
    pred = torch.where(mask.bool(), reference, torch.ones_like(reference))   # hole filled
    assert (known_region_error(pred, reference, mask) == 0).all()
    pred[1, 2, 0, 0] += 0.3                                     # a known pixel altered
    torch.testing.assert_close(known_region_error(pred, reference, mask),
                               torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64))
    assert (known_region_error(pred, reference, torch.zeros(3, 1, 8, 8)) == 0).all()


# ----------------------------------------------------------------------------- diversity
def test_diversity_closed_form_in_the_hole():
    n, s = 2, 3
    levels = torch.tensor([[-1.0, 0.0, 0.5], [0.2, 0.2, 0.2]])          # per sample
    mask = _hole_mask(n, 8, 8)
    outside = _images(n, s, 3, 8, 8, dtype=torch.float32)                # differs, ignored
    samples = torch.where(mask.unsqueeze(1).bool(), outside,
                          levels.view(n, s, 1, 1, 1).expand(n, s, 3, 8, 8))
    # On [0, 1] data a constant difference d in [-1, 1] units is an RMS distance of |d| / 2.
    expected = torch.tensor([(1.0 + 1.5 + 0.5) / 2 / 3, 0.0])
    torch.testing.assert_close(diversity(samples, mask), expected)
    assert math.isnan(diversity(samples, torch.ones(n, 1, 8, 8))[0])
    with pytest.raises(ValueError, match="S >= 2"):
        diversity(samples[:, :1], mask)


# ----------------------------------------------------------------------------- LPIPS
@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("weights") / "alexnet-owt-7be5be79.pth"
    torch.save(net.state_dict(), path)
    return path, net


def _reference_lpips(a, b, alexnet, linear):
    """LPIPS written out from the paper: unit-normalised AlexNet ReLU features, weighted."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = (1, 4, 7, 9, 11)                   # relu1 .. relu5 of torchvision's AlexNet
    total = 0.0
    fa, fb = (a - shift) / scale, (b - shift) / scale
    for index, layer in enumerate(alexnet.features[:12]):
        fa, fb = layer(fa), layer(fb)
        if index in taps:
            k = taps.index(index)
            na = fa / torch.sqrt((fa ** 2).sum(dim=1, keepdim=True) + 1e-8)
            nb = fb / torch.sqrt((fb ** 2).sum(dim=1, keepdim=True) + 1e-8)
            weight = linear[f"lin{k}.model.1.weight"]
            total = total + F.conv2d((na - nb) ** 2, weight).mean(dim=(1, 2, 3))
    return total


def test_lpips_loads_local_weights_and_matches_the_formula(alexnet_file):
    import torchmetrics.functional.image.lpips as tm_lpips

    path, alexnet = alexnet_file
    model = load_lpips(path, net="alex")
    torch.testing.assert_close(getattr(model.net.slice2, "3").weight, alexnet.features[3].weight)
    linear = torch.load(f"{tm_lpips.__file__[:-3]}_models/alex.pth", map_location="cpu",
                        weights_only=True)
    a, b = (_images(3, 3, 64, 64, seed=s, dtype=torch.float32) for s in (1, 2))
    with torch.no_grad():
        expected = _reference_lpips(a, b, alexnet.eval(), linear)
    torch.testing.assert_close(lpips(a, b, model), expected, rtol=1e-4, atol=1e-6)
    assert (lpips(a, a, model) == 0).all()

    # grayscale 28x28 (MNIST): repeated to RGB and upsampled to 64 px
    gray = _images(2, 2, 1, 28, 28, dtype=torch.float32)   # N = 2 inputs, S = 2 samples
    values = lpips_diversity(gray, model)
    up = F.interpolate(gray[:, 0].expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear")
    up2 = F.interpolate(gray[:, 1].expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear")
    with torch.no_grad():
        torch.testing.assert_close(values, _reference_lpips(up, up2, alexnet, linear),
                                   rtol=1e-4, atol=1e-6)


def test_lpips_diversity_is_the_mean_over_pairs(alexnet_file):
    model = load_lpips(alexnet_file[0])
    samples = _images(2, 3, 3, 32, 32, dtype=torch.float32)
    pairs = [lpips(samples[:, i], samples[:, j], model) for i, j in ((0, 1), (0, 2), (1, 2))]
    torch.testing.assert_close(lpips_diversity(samples, model), torch.stack(pairs).mean(dim=0))


def test_lpips_unavailable_says_which_file_and_key(tmp_path):
    for missing in (None, tmp_path / "nope.pth"):
        with pytest.raises(MetricUnavailable, match=r"alexnet-owt-7be5be79\.pth.*lpips_weights"):
            load_lpips(missing)
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not the torchvision alex backbone"):
        load_lpips(other)


# ----------------------------------------------------------------------------- FID / KID maths
def test_frechet_distance_closed_form_and_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    # diagonal covariances: ||Δμ||² + Σ (σ1 - σ2)²
    expected = 5.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
    value = frechet_distance(mu1, torch.diag(var1), mu2, torch.diag(var2))
    assert value.item() == pytest.approx(expected, abs=1e-10)

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = a.T @ a / 6 + 0.1 * torch.eye(5), b.T @ b / 6
    m1, m2 = torch.randn(5, generator=g, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    covmean = scipy_linalg.sqrtm((s1 @ s2).numpy()).real
    reference = ((m1 - m2) ** 2).sum() + s1.trace() + s2.trace() - 2 * float(covmean.trace())
    assert frechet_distance(m1, s1, m2, s2).item() == pytest.approx(reference.item(), rel=1e-8)
    assert frechet_distance(m1, s1, m1, s1).item() == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_stays_real_for_rank_deficient_covariances():
    g = torch.Generator().manual_seed(1)
    few = torch.randn(4, 32, generator=g, dtype=torch.float64)   # 4 samples, 32 features
    other = torch.randn(4, 32, generator=g, dtype=torch.float64) + 0.5
    value = frechet_distance(few.mean(0), torch.cov(few.T), other.mean(0), torch.cov(other.T))
    assert torch.isfinite(value) and value.item() > 0


def test_polynomial_mmd_matches_direct_sums_and_torchmetrics():
    from torchmetrics.image.kid import poly_mmd

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randn(7, 4, generator=g, dtype=torch.float64) + 0.3

    def k(a, b):
        return (float(a @ b) / 4 + 1.0) ** 3

    m, n = len(x), len(y)
    direct = (sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
              + sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
              - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n))
    assert polynomial_mmd(x, y).item() == pytest.approx(direct, rel=1e-10)
    assert polynomial_mmd(x, y[:5]).item() == pytest.approx(poly_mmd(x, y[:5]).item(), rel=1e-10)

    mean, std, size = kernel_inception_distance(x, y, subsets=3, subset_size=100, generator=g)
    assert size == 5 and std.item() >= 0
    mean_all, std_all, _ = kernel_inception_distance(x, y[:5], subsets=2, subset_size=5)
    assert mean_all.item() == pytest.approx(polynomial_mmd(x, y[:5]).item(), rel=1e-10)
    assert std_all.item() == pytest.approx(0.0, abs=1e-12)   # full sets: every subset alike


# ----------------------------------------------------------------------------- Inception
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised FID Inception state dict, built without torch-fidelity's download."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict",
                              lambda self, *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["64"])
    torch.manual_seed(0)
    for module in net.modules():   # variance-preserving init: features that actually vary
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("weights") / INCEPTION_FILE
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_inception_metrics_load_local_weights_and_match_torchmetrics_fid(inception_file):
    from torchmetrics.image.fid import FrechetInceptionDistance

    path, state = inception_file
    metrics = InceptionMetrics(path, feature=64, kid_subsets=5, kid_subset_size=4)
    torch.testing.assert_close(metrics.network.Conv2d_1a_3x3.conv.weight,
                               state["Conv2d_1a_3x3.conv.weight"])
    real = _images(6, 3, 32, 32, seed=1, dtype=torch.float32)
    fake = _images(5, 3, 32, 32, seed=2, dtype=torch.float32) * 0.5
    metrics.update(real, real=True)
    metrics.update(fake, real=False)
    result = metrics.compute(generator=torch.Generator().manual_seed(0))
    assert result["n_real"] == 6 and result["n_fake"] == 5 and result["kid_subset_size"] == 4

    reference = FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(path),
                                         antialias=False)
    to_uint8 = lambda x: ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    reference.update(to_uint8(real), real=True)
    reference.update(to_uint8(fake), real=False)
    assert result["fid"] == pytest.approx(reference.compute().item(), rel=1e-4)
    assert result["fid"] > 1e-3                  # the two sets really differ in feature space

    torch.testing.assert_close(metrics.extract(real[:, :1]),
                               metrics.extract(real[:, :1].expand(-1, 3, -1, -1)))


def test_inception_unavailable_says_which_file_key_or_package(tmp_path, monkeypatch):
    for missing in (None, tmp_path / "nope.pth"):
        with pytest.raises(MetricUnavailable, match=rf"{INCEPTION_FILE}.*inception_weights"):
            load_inception(missing)
    present = tmp_path / INCEPTION_FILE
    present.write_bytes(b"not a checkpoint")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torch_fidelity", None)   # import now fails as if absent
        with pytest.raises(MetricUnavailable, match="pip install torch-fidelity"):
            load_inception(present, feature=64)
    pytest.importorskip("torch_fidelity")
    with pytest.raises(ValueError, match="not a usable FID Inception state dict"):
        load_inception(present, feature=64)


# ----------------------------------------------------------------------------- NLL
class _TinyEps(torch.nn.Module):
    """A 1x1 conv standing in for the UNet: eps and variance channels from x_t and t."""

    def __init__(self, channels=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, x, t):
        return torch.tanh(self.conv(x) + t.view(-1, 1, 1, 1).float() / 100)


def test_nll_bpd_averages_calc_bpd_loop_over_tensors_and_loaders():
    diffusion = GaussianDiffusion.from_config({"schedule": "cosine", "steps": 8})
    model = _TinyEps().train()
    levels = torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    images = levels.float() / 127.5 - 1

    direct = calc_bpd_loop(model.eval(), diffusion, images,
                           generator=torch.Generator().manual_seed(3))["total_bpd"]
    model.train()
    result = nll_bpd(model, diffusion, images, batch_size=5,
                     generator=torch.Generator().manual_seed(3))
    assert model.training                       # eval only for the run, then restored
    torch.testing.assert_close(result["per_image"], direct)
    assert result["bpd"] == pytest.approx(direct.mean().item())
    assert result["n"] == 5 and result["num_timesteps"] == 8

    loader = [(images[:3], torch.zeros(3)), {"image": images[3:]}]
    from_loader = nll_bpd(model, diffusion, loader, max_images=4,
                          generator=torch.Generator().manual_seed(3))
    assert from_loader["n"] == 4 and from_loader["per_image"].shape == (4,)

    fast = nll_bpd(model, diffusion, images, steps=4, generator=torch.Generator().manual_seed(3))
    respaced = calc_bpd_loop(model, diffusion.respace("4"), images,
                             generator=torch.Generator().manual_seed(3))["total_bpd"]
    assert fast["num_timesteps"] == 4
    torch.testing.assert_close(fast["per_image"], respaced)
    with pytest.raises(ValueError, match="batches of images"):
        nll_bpd(model, diffusion, [torch.zeros(3)])


# ----------------------------------------------------------------------------- reports
def test_aggregate_skips_non_numbers_and_non_finite_values():
    rows = [{"image": "a.png", "psnr": 20.0, "ssim": torch.tensor(0.5), "ok": True},
            {"image": "b.png", "psnr": 30.0, "ssim": float("nan")},
            {"image": "c.png", "psnr": float("inf"), "ssim": 0.7}]
    summary = aggregate(rows)
    assert set(summary) == {"psnr", "ssim"}
    assert summary["psnr"] == {"mean": 25.0, "std": 5.0, "n": 2, "n_excluded": 1}
    assert summary["ssim"]["mean"] == pytest.approx(0.6) and summary["ssim"]["n_excluded"] == 1


def test_write_metrics_writes_strict_json_and_csv(tmp_path):
    rows = [{"image": "a.png", "psnr": 20.0, "lpips": torch.tensor(0.25)},
            {"image": "b.png", "psnr": float("nan")}]
    json_path, csv_path = write_metrics(rows, aggregate(rows), tmp_path / "eval")

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")
    data = json.loads(json_path.read_text(), parse_constant=reject)
    assert data["per_image"][0] == {"image": "a.png", "psnr": 20.0, "lpips": 0.25}
    assert data["per_image"][1]["psnr"] is None
    assert data["summary"]["psnr"]["mean"] == 20.0
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["image"] for r in table] == ["a.png", "b.png"]
    assert table[1]["psnr"] == "nan" and table[1]["lpips"] == ""
