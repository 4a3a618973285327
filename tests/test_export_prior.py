"""scripts/export_prior.py / checkpoint.export_prior: EMA-only, float16 on disk, float32 loaded."""

import importlib.util
from pathlib import Path

import torch
from tiny import save_tiny_prior

from priorpaint.checkpoint import export_prior, load_prior

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "export_prior.py"


def _script():
    spec = importlib.util.spec_from_file_location("export_prior_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_keeps_fp16_rounded_ema_and_loads_float32(tmp_path, capsys):
    source = save_tiny_prior(tmp_path / "full.ckpt", channels=3, size=(8, 8), with_ema=True)
    ema = load_prior(source).model.state_dict()
    target = tmp_path / "shipped" / "prior.ckpt"
    assert _script().main([str(source), str(target)]) == 0
    assert "float16" in capsys.readouterr().out
    stored = torch.load(target, weights_only=True)
    assert stored["state_dict"] == {}                                 # no raw weights
    assert all(v.dtype == torch.float16 for v in stored["priorpaint"]["ema_state_dict"].values()
               if v.is_floating_point())
    prior = load_prior(target)
    assert prior.weights == "ema" and prior.info["weights_dtype"] == "float16"
    for name, value in prior.model.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ema[name].half().float(), rtol=0, atol=0)
    assert any((v - ema[k]).abs().max() > 0 for k, v in prior.model.state_dict().items())
    # half the bytes of an EMA-only float32 export, a third of the file with raw weights too
    full32 = export_prior(source, tmp_path / "f32.ckpt", half=False)
    assert target.stat().st_size < 0.6 * full32.stat().st_size
    assert target.stat().st_size < 0.4 * source.stat().st_size
    for name, value in load_prior(full32).model.state_dict().items():
        torch.testing.assert_close(value, ema[name], rtol=0, atol=0)


def test_export_errors_are_one_line(tmp_path, capsys):
    status = _script().main([str(tmp_path / "none.ckpt"), str(tmp_path / "out.ckpt")])
    err = capsys.readouterr().err
    assert status == 2 and "none.ckpt does not exist" in err and "Traceback" not in err
    raw_only = save_tiny_prior(tmp_path / "raw.ckpt", with_ema=False)
    assert _script().main([str(raw_only), str(tmp_path / "out.ckpt")]) == 2
    assert "holds no EMA weights" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()
