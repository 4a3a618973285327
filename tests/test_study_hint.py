"""sample.py keeps RePaint as its default and, under RePaint's defaults only, logs one line
pointing at sampler=ddnm (the inpainting study's finding), with the command."""

import logging

import pytest
from tiny import save_tiny_prior, write_random_images

from priorpaint.sampling import SamplerOptions
from priorpaint.sampling.options import RunOptions, study_hint
from priorpaint.sampling.run import run

BASE = dict(ckpt="p.ckpt", images="photos", mask="thick", out="inpainted")


def test_the_hint_under_repaints_defaults_names_ddnm_and_the_command():
    hint = study_hint(RunOptions(**BASE))
    assert hint is not None and "\n" not in hint
    assert "sampler=ddnm" in hint and "100 network calls" in hint and "2410" in hint
    assert hint.endswith("python sample.py ckpt=p.ckpt images=photos mask=thick out=inpainted "
                         "sampler=ddnm")
    # the defaults spelled out are still the defaults
    spelled = RunOptions(**BASE, steps=250, knobs=SamplerOptions(
        step="ddpm", eta=0.0, jump_length=10, jump_n_sample=10))
    assert study_hint(spelled) == hint


@pytest.mark.parametrize("change", [
    dict(sampler="ddnm"), dict(sampler="diffpir"), dict(sampler="ddpm"),
    dict(steps=100), dict(knobs=SamplerOptions(jump_n_sample=5)),
    dict(knobs=SamplerOptions(step="ddim")), dict(knobs=SamplerOptions(start_resampling=100)),
    dict(images=None, mask=None),   # unconditional samples: nothing to inpaint
])
def test_no_hint_when_the_user_chose_something_else(change):
    assert study_hint(RunOptions(**{**BASE, **change})) is None


def _run(tmp_path, ckpt, name, *extra):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    write_random_images(images, (8, 8, 3))
    return run({"ckpt": str(ckpt), "images": str(images), "mask": "half", "progress": False,
                "out": str(tmp_path / name), **dict(extra)})


def test_sample_py_logs_the_hint_once_under_defaults_only(tmp_path, caplog):
    ckpt = save_tiny_prior(tmp_path / "p.ckpt", 3, (8, 8), steps=20)
    with caplog.at_level(logging.INFO, logger="priorpaint.sample"):
        _run(tmp_path, ckpt, "defaults")
    hints = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hint:")]
    assert len(hints) == 1 and "sampler=ddnm" in hints[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="priorpaint.sample"):
        _run(tmp_path, ckpt, "ddnm", ("sampler", "ddnm"))
        _run(tmp_path, ckpt, "r3", ("jump_n_sample", 3))
    assert not [r for r in caplog.records if r.getMessage().startswith("hint:")]
