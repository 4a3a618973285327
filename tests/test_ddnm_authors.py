"""benchmarks/ddnm_authors.py: the authors' DDNM loops beside priorpaint's on the same prior.

The authors' code is never part of this project: the loops run only where ``DDNM_REPO``
names a checkout of github.com/wyhuai/DDNM; without it those tests skip, saying so.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import ddnm_authors  # noqa: E402

AUTHORS = os.environ.get("DDNM_REPO", "")
needs_authors = pytest.mark.skipif(
    not (AUTHORS and (Path(AUTHORS) / "functions" / "svd_ddnm.py").is_file()),
    reason="DDNM_REPO does not name a checkout of github.com/wyhuai/DDNM (never downloaded "
           "by the tests; clone it outside the project and set DDNM_REPO to run these)")


def _refused(capsys, argv: list[str]) -> str:
    """The one line on stderr with which ``parse`` refuses ``argv`` (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        ddnm_authors.parse(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddnm_authors.py: error: ")
    return lines[0]


def test_the_authors_loops_need_their_checkout_named(monkeypatch, capsys):
    monkeypatch.delenv("DDNM_REPO", raising=False)
    assert "ddnm_repo= (or DDNM_REPO) must name a checkout of github.com/wyhuai/DDNM" in _refused(
        capsys, ["ckpt=p.ckpt", "ddnm_repo=", "loops=priorpaint,authors-svd"])
    cfg = ddnm_authors.parse(["ckpt=p.ckpt", "ddnm_repo=", "loops=priorpaint"])  # ours alone
    assert cfg["loops"] == ["priorpaint"]
    assert "must lie in 7000-7999" in _refused(
        capsys, ["ckpt=p.ckpt", "loops=priorpaint", "first=7990", "images=20"])
    assert "expected key=value with key in ckpt" in _refused(capsys, ["ckpt=p.ckpt", "step=5"])


def test_cuda_strings_mean_the_chosen_device_only_inside():
    x = torch.ones(2)
    with ddnm_authors.cuda_means(torch.device("cpu")):
        assert x.to("cuda").device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):
            x.to("cuda")


@needs_authors
def test_all_three_loops_inpaint_the_same_cases_keeping_known_pixels(shared_data):
    from priorpaint.checkpoint import load_prior

    torch.set_num_threads(1)
    prior = load_prior(REPO / "examples" / "priors" / "mnist32.ckpt")
    prior.model.eval()
    images, _ = ddnm_authors.study.read_mnist(shared_data / "mnist", 7002)
    ids = [7000, 7001]
    x0 = ddnm_authors.study.to_model(images[ids], (32, 32))
    mask = torch.stack([ddnm_authors.study.mask_of("thick", i, (32, 32)) for i in ids])
    cfg = {"samples": 2, "steps": 5, "eta": 0.85, "seed": 0, "batch_size": 4}
    mods = ddnm_authors.authors_modules(AUTHORS)
    assert "x = xs[-1]" in ddnm_authors.simplified_loop_source(mods.diffusion)
    known = mask.bool()[:, None].expand(2, 2, 1, 32, 32)
    for run in (lambda: ddnm_authors.run_priorpaint(prior, cfg, x0, mask, ids),
                lambda: ddnm_authors.run_authors_svd(mods, prior, cfg, x0, mask, ids, "cpu"),
                lambda: ddnm_authors.run_authors_simplified(mods, prior, cfg, x0, mask, ids,
                                                            "cpu")):
        out = run()
        assert out.shape == (2, 2, 1, 32, 32) and torch.isfinite(out).all()
        truth = x0[:, None].expand_as(out)
        assert (out - truth)[known].abs().max() < 1e-5          # known pixels exact
        assert not torch.equal(out[:, 0], out[:, 1])            # seeds differ per sample
