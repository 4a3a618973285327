"""Rebuild an EMA of any length after training, from a run's power-EMA snapshots (EDM2).

    python -m priorpaint.ema_posthoc RUN_DIR sigma_rel=0.05 out=prior.ckpt
    python -m priorpaint.ema_posthoc RUN_DIR sigma_rel=0.12 step=2000 out=p2000.ckpt

The run must have trained with ``module.posthoc_ema.sigma_rels`` set (e.g. ``[0.05,0.10]``),
which leaves ``RUN_DIR/ema_snapshots/ema_snapshot_<update>.pt``. ``sigma_rel`` is the EMA's
width relative to the training length (EDM2: 0.05-0.15 are the useful ones); ``step`` ends the
EMA at that snapshot's training step (default: the last snapshot) and uses only snapshots up
to it. The network, diffusion and data geometry come from ``ckpt`` (default
``RUN_DIR/checkpoints/last.ckpt``); the output is an EMA-only prior that ``sample.py``, the
app and ``prior_clean.py`` load like any other. The maths: :mod:`priorpaint.ema_profiles`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .cli import report_user_errors

__all__ = ["posthoc_state_dict", "write_posthoc_prior", "main"]

USAGE = ("usage: python -m priorpaint.ema_posthoc RUN_DIR sigma_rel=S [out=PRIOR.ckpt] "
         "[step=N] [ckpt=RUN_DIR/checkpoints/last.ckpt]")
KEYS = ("sigma_rel", "out", "step", "ckpt")


def _snapshots(folder: Path) -> list[dict]:
    from .lightning.posthoc_ema import SNAPSHOT_GLOB

    paths = sorted(folder.glob(SNAPSHOT_GLOB))
    if not paths:
        raise ValueError(f"no EMA snapshots ({SNAPSHOT_GLOB}) in {folder}: train with "
                         f"module.posthoc_ema.sigma_rels='[0.05,0.10]' to write them")
    return [torch.load(p, map_location="cpu", weights_only=True) for p in paths]


def posthoc_state_dict(snapshots: list[dict], sigma_rel: float, step: int | None = None):
    """(state dict, info) of the power EMA of ``sigma_rel`` ending at ``step`` (a snapshot's
    global step; None: the last), combined from every profile of the snapshots up to it."""
    from .ema_profiles import combine_state_dicts, posthoc_weights, sigma_rel_to_gamma

    snapshots = sorted(snapshots, key=lambda s: s["update"])
    if step is None:
        end = snapshots[-1]
    else:
        matching = [s for s in snapshots if s["global_step"] == int(step)]
        if not matching:
            raise ValueError(f"step={step}: no snapshot at that step; snapshots are at steps "
                             f"{[s['global_step'] for s in snapshots]}")
        end = matching[-1]
    used = [s for s in snapshots if s["update"] <= end["update"]]
    gamma = sigma_rel_to_gamma(float(sigma_rel))
    pairs = [(s["update"], g) for s in used for g in s["gammas"]]
    states = [state for s in used for state in s["state_dicts"]]
    weights = posthoc_weights(pairs, (end["update"], gamma))
    info = {"sigma_rel": float(sigma_rel), "gamma": gamma, "update": end["update"],
            "global_step": end["global_step"], "snapshots": len(used),
            "profiles": sorted({float(s) for u in used for s in u["sigma_rels"]})}
    return combine_state_dicts(states, weights), info


def write_posthoc_prior(run_dir, sigma_rel: float, out=None, step: int | None = None,
                        ckpt=None) -> Path:
    """Write the post-hoc EMA prior of ``run_dir`` (see the module doc); returns its path."""
    from .atomic import atomic_write
    from .checkpoint import load_prior, prior_payload, value_rule_of

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found (give the run_dir of train.py)")
    snapshots = _snapshots(run_dir / "ema_snapshots")
    ckpt = Path(ckpt) if ckpt else run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: pass ckpt= a checkpoint of this run")
    state, info = posthoc_state_dict(snapshots, sigma_rel, step)
    prior = load_prior(ckpt)
    try:
        prior.model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"the EMA snapshots of {run_dir} do not fit the network of {ckpt} "
                         f"({e})") from e
    extra = {k: prior.info[k] for k in ("data",) if k in prior.info}
    extra.update(global_step=info["global_step"], posthoc_ema=info)
    payload = prior_payload(prior.model, prior.diffusion, prior.image_size, prior.channels,
                            ema_state_dict=state, extra=extra, values=value_rule_of(prior.info))
    out = Path(out) if out else run_dir / f"posthoc_ema_{sigma_rel:g}_step{info['global_step']}.ckpt"
    return atomic_write(out, lambda f: torch.save({"state_dict": {}, "priorpaint": payload}, f))


@report_user_errors("priorpaint.ema_posthoc", returns_status=True)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    run_dir, *rest = argv
    options = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"{item!r}: expected one of {', '.join(k + '=' for k in KEYS)}")
        options[key] = value
    if "sigma_rel" not in options:
        raise ValueError(f"sigma_rel= is required (e.g. sigma_rel=0.05); {USAGE}")
    try:
        sigma_rel = float(options["sigma_rel"])
        step = int(options["step"]) if options.get("step") else None
    except ValueError:
        raise ValueError(f"sigma_rel= takes a number and step= an integer, got "
                         f"{options.get('sigma_rel')!r} / {options.get('step')!r}") from None
    written = write_posthoc_prior(run_dir, sigma_rel, options.get("out"), step, options.get("ckpt"))
    print(f"wrote {written}  (sample with: python sample.py ckpt={written})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
