"""benchmarks/prior_clean.py: real digits score clean, noise does not; samples are seeded per item."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny import save_tiny_prior

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import prior_clean  # noqa: E402

study = prior_clean.study
SIZE = 16   # a 16 px classifier trains in seconds; the metric is the same at any size


@pytest.fixture(scope="module")
def mnist(shared_data):
    root = shared_data / "mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST t10k files not found in {root}")
    raw, labels = study.read_mnist(root, study.EVALUATE[1])
    return root, study.to_model(raw, (SIZE, SIZE)), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def quick_net(mnist):
    """The study's CNN, two quick epochs on indices 0-6999 (the benchmark trains three)."""
    _, images, labels = mnist
    torch.manual_seed(0)
    net = study.DigitCNN(SIZE)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(2):
        order = torch.randperm(study.TRAIN[1])
        for i in range(0, len(order), 64):
            batch = order[i:i + 64]
            loss = F.cross_entropy(net(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


def reference_of(net, images):
    with torch.no_grad():
        ref = net.features(images[study.EVALUATE[0]:study.EVALUATE[1]]).double()
    return ref.mean(0), torch.cov(ref.T)


def test_real_digits_score_clean_and_noise_does_not(mnist, quick_net):
    _, images, _ = mnist
    reference = reference_of(quick_net, images)
    generator = torch.Generator().manual_seed(0)
    real = [prior_clean.score(images[torch.randperm(7000, generator=generator)[:64]], quick_net,
                              reference) for _ in range(5)]
    noise = prior_clean.score(torch.rand(64, 1, SIZE, SIZE, generator=generator) * 2 - 1,
                              quick_net, reference)
    blank = prior_clean.score(torch.full((64, 1, SIZE, SIZE), -1.0), quick_net, reference)
    # calibrated as the benchmark does: the bound just above the real draws' worst FD
    bound = 1.05 * max(r["fd"] for r in real)
    fraction = min(r["confident"] for r in real)
    assert fraction >= 0.6 and all(sum(r["classes"]) == round(64 * r["confident"]) for r in real)
    assert all(prior_clean.is_clean(r, fraction, bound) for r in real)
    assert noise["confident"] < fraction and noise["fd"] > 5 * bound
    assert not prior_clean.is_clean(noise, fraction, bound)
    # one image 64 times: maybe confident, but its features have no spread: far in FD
    assert blank["fd"] > 2 * bound and not prior_clean.is_clean(blank, fraction, bound)
    assert all(r["n"] == 64 for r in [*real, noise, blank])


def test_samples_are_seeded_per_item_and_the_run_writes_its_grid(mnist, quick_net, tmp_path,
                                                                 monkeypatch):
    root, _, _ = mnist
    monkeypatch.setattr(study, "classifier", lambda images, labels, cache, **kw: quick_net)
    ckpt = save_tiny_prior(tmp_path / "tiny.ckpt", channels=1, size=(SIZE, SIZE), steps=20)
    common = [f"ckpt={ckpt}", f"mnist={root}", "samples=5", "respacing=4", "seed=3"]
    one = prior_clean.main([*common, "batch_size=5", f"out={tmp_path / 'a'}"])
    two = prior_clean.main([*common, "batch_size=2", f"out={tmp_path / 'b'}"])
    assert one[0]["fd"] == pytest.approx(two[0]["fd"], rel=1e-6)
    grid_a = Image.open(tmp_path / "a" / "tiny_raw_4_seed3.png")
    grid_b = Image.open(tmp_path / "b" / "tiny_raw_4_seed3.png")
    assert grid_a.size == (2 + 5 * (SIZE + 2), 2 + SIZE + 2)   # 5 samples in one 8-wide row
    assert np.array_equal(np.asarray(grid_a), np.asarray(grid_b))
    saved = json.loads((tmp_path / "a" / "tiny_raw_4_seed3.json").read_text())
    assert saved["clean"] is False and saved["respacing"] == "4" and saved["n"] == 5
    assert 0.0 <= saved["confident"] <= 1.0 and saved["fd"] > 0
    assert saved["classifier"] == prior_clean.classifier_digest(quick_net)   # names its classifier


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as missing:
        prior_clean.main([f"ckpt={tmp_path / 'nope.ckpt'}"])
    with pytest.raises(SystemExit) as bad_key:
        prior_clean.main(["ckpt=real", "stepz=4"])
    assert missing.value.code == 2 and bad_key.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "nope.ckpt does not exist" in lines[0] and "stepz" in lines[1]


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """The scikit-learn digits classifier, trained once for this module (~15 s)."""
    return tmp_path_factory.mktemp("digits_cache")


def test_digits_real_draws_are_clean_noise_is_not(digits_cache, tmp_path):
    common = ["data=digits", f"cache={digits_cache}", f"out={tmp_path}"]
    real = prior_clean.main(["ckpt=real", "repeats=3", *common])
    noise = prior_clean.main(["ckpt=noise", *common])
    assert [r["fd_bound"] for r in real] == [prior_clean.DIGITS_FD_BOUND] * 3
    assert all(r["clean"] and r["n"] == 64 for r in real)
    assert noise[0]["fd"] > 3 * prior_clean.DIGITS_FD_BOUND and not noise[0]["clean"]
    assert Image.open(tmp_path / "real_seed0.png").size == (2 + 8 * 18, 2 + 8 * 18)   # 16 px
    assert (digits_cache / "digits_cnn_16px_train0-1199.pt").is_file()


def test_digits_scores_a_prior_of_its_size(digits_cache, tmp_path):
    ckpt = save_tiny_prior(tmp_path / "tiny.ckpt", channels=1, size=(8, 8), steps=20)
    result = prior_clean.main([f"ckpt={ckpt}", "data=digits", f"cache={digits_cache}",
                               f"out={tmp_path}", "samples=4", "respacing=4"])[0]
    assert result["n"] == 4 and not result["clean"] and result["fd_bound"] == 140.0
    assert (digits_cache / "digits_cnn_8px_train0-1199.pt").is_file()   # its own classifier


def test_unknown_data_is_one_line(capsys):
    with pytest.raises(SystemExit) as bad:
        prior_clean.main(["ckpt=real", "data=cifar"])
    assert bad.value.code == 2 and "data='cifar'" in capsys.readouterr().err


def test_draws_pool_into_one_verdict():
    draws = [{"n": 64, "confident": 55 / 64, "fd": 48.0}, {"n": 64, "confident": 49 / 64, "fd": 70.0}]
    both = prior_clean.pooled(draws)
    assert both["n"] == 128 and both["confident"] == pytest.approx(104 / 128)
    assert both["fd"] == pytest.approx(59.0) and not both["clean"]   # 0.81 < 0.85
    assert prior_clean.pooled(draws, clean_fraction=0.8)["clean"]


def test_blobs_are_samples_brighter_than_any_real_digit(mnist):
    _, images, _ = mnist
    train = images[:study.TRAIN[1]]
    assert prior_clean.blobs(train, prior_clean.BLOB_BRIGHTNESS["mnist"]) == 0
    grey = torch.zeros(4, 1, SIZE, SIZE)          # mid-grey: brightness 0.5
    assert prior_clean.blobs(torch.cat([train[:60], grey]), prior_clean.BLOB_BRIGHTNESS["mnist"]) == 4


def test_digits_real_draws_have_no_blobs():
    from priorpaint.data import TensorImages, load_digits_images

    digits = TensorImages(load_digits_images("train"), (16, 16), 1, "center", name="digits")
    images = torch.stack([digits[i] for i in range(prior_clean.DIGITS_SPLIT)])
    assert prior_clean.blobs(images, prior_clean.BLOB_BRIGHTNESS["digits"]) == 0


def test_a_grid_reads_back_as_its_images(tmp_path):
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prior_clean.save_grid(images, tmp_path / "g.png")
    back = prior_clean.grid_images(tmp_path / "g.png", 64)
    assert back.shape == images.shape
    assert (back - images).abs().max() <= 1 / 255 + 1e-6     # 8-bit rounding only
    with pytest.raises(ValueError, match="a grid of 64 images, not 65"):
        prior_clean.grid_images(tmp_path / "g.png", 65)


def test_saved_grids_are_scored_again_as_the_draws_they_hold(mnist, quick_net, tmp_path,
                                                            monkeypatch, capsys):
    """grids= rechecks committed draws with this machine's classifier, without checkpoints."""
    root, images, _ = mnist
    monkeypatch.setattr(study, "classifier", lambda images, labels, cache, **kw: quick_net)
    reference = reference_of(quick_net, images)
    draws = [images[64 * k:64 * (k + 1)] for k in range(2)]   # real digits of 0-127
    for k, draw in enumerate(draws):
        prior_clean.save_grid(draw, tmp_path / f"run_step1_ema_100_seed{k}.png")
    results = prior_clean.main([f"grids={tmp_path / 'run_step1_*_seed*.png'}", f"mnist={root}",
                                "clean_fraction=0.5", "fd_bound=1e6"])
    for draw, result in zip(draws, results, strict=True):
        again = prior_clean.score(prior_clean.grid_images(Path(result["source"]), 64), quick_net,
                                  reference)
        assert result["confident"] == again["confident"] and result["fd"] == pytest.approx(again["fd"])
        assert abs(result["confident"] - prior_clean.score(draw, quick_net, reference)["confident"]) \
            <= 2 / 64    # 8-bit rounding moves at most a read or two
        assert result["blobs"] == 0 and result["clean"]
        assert result["classifier"] == prior_clean.classifier_digest(quick_net)
    out = capsys.readouterr().out
    assert "pooled 2 grids (128 samples)" in out and "CLEAN" in out
    assert not list(tmp_path.glob("*.json"))   # rescoring writes nothing


def test_grids_that_match_nothing_or_with_ckpt_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as nothing:
        prior_clean.main([f"grids={tmp_path / '*.png'}", f"mnist={tmp_path}", "data=digits"])
    with pytest.raises(SystemExit) as both:
        prior_clean.main(["ckpt=real", f"grids={tmp_path / '*.png'}"])
    assert nothing.value.code == 2 and both.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "matches no file" in lines[0] and "not both" in lines[1]


def test_a_classifier_digest_tells_retrained_weights_apart():
    torch.manual_seed(0)
    net = study.DigitCNN(SIZE)
    same = study.DigitCNN(SIZE)
    same.load_state_dict(net.state_dict())
    assert prior_clean.classifier_digest(net) == prior_clean.classifier_digest(same)
    with torch.no_grad():
        same.head.bias[0] += 1e-7     # one rounding-sized difference, as a retrain on other cores
    assert prior_clean.classifier_digest(net) != prior_clean.classifier_digest(same)
    assert len(prior_clean.classifier_digest(net)) == 12
