"""A diffusers scheduler config (``scheduler_config.json``) as priorpaint's diffusion config.

Every key a diffusers DDPM-family scheduler writes is either translated, accepted because it
does not change the model's diffusion, or refused by name: nothing is guessed.

Translated (the maths of the trained chain):

- ``num_train_timesteps`` -> ``steps``; ``beta_schedule`` ``linear`` / ``scaled_linear`` /
  ``sigmoid`` with ``beta_start``/``beta_end`` -> the same-named ranged schedule;
  ``squaredcos_cap_v2`` -> ``cosine`` (the same ᾱ(t) = cos²((t + 0.008)/1.008·π/2), β ≤ 0.999);
  ``trained_betas`` -> ``schedule: custom`` with those β.
- ``prediction_type`` ``epsilon`` / ``sample`` / ``v_prediction`` -> ``mean_type`` ``eps`` /
  ``x0`` / ``v`` (diffusers' v = √ᾱ ε - √(1-ᾱ) x_0, the same as priorpaint's).
- ``variance_type``: ``fixed_small`` (β̃_t) and ``fixed_large`` (β_t) as is; their ``_log``
  twins compute the same standard deviation through a log, so they map to them. At t = 0
  diffusers uses β̃_0 = 0 (clamped to 1e-20) and β_0, priorpaint β̃_1 for both (improved-
  diffusion's clipped log-variance); neither adds noise at t = 0, so only the bits/dim
  decoder term sees the difference, and there priorpaint's is the finite one;
  ``learned_range`` as is (v ∈ [-1, 1], log σ² = (v+1)/2·log β_t + (1-v)/2·log β̃_t);
  ``learned``: diffusers reads those channels as σ² itself (``step`` takes their square root),
  priorpaint as log σ², so the network adapter is told to return their log
  (``variance_to_log``). The two conventions differ only at t = 0 (diffusers: log β̃_0 clamped
  at 1e-20, priorpaint: log β̃_1), where neither sampler adds noise, so samples are the same.
- ``clip_sample`` -> the prior's default ``clip_denoised`` (``sample.py clip_denoised=auto``);
  ``clip_sample_range`` must be 1 when clipping (priorpaint clips x̂_0 to [-1, 1]).

Accepted and not used, because they only choose how diffusers' own pipelines *sample*:
``timestep_spacing``, ``steps_offset`` (which timesteps ``set_timesteps`` picks: ``sample.py
steps=`` respacing decides that here), ``set_alpha_to_one`` (DDIM/PNDM's last step;
priorpaint's DDIM always ends at ᾱ = 1), ``skip_prk_steps`` (PNDM), ``eta`` (RePaintScheduler's
DDIM η: ``sample.py eta=``), ``dynamic_thresholding_ratio`` and ``sample_max_value`` (read only
when ``thresholding`` is true, which is refused), ``tensor_format`` (diffusers ≤ 0.3: whether
its schedulers returned numpy or torch arrays; old hub folders still carry it), and keys
starting with ``_`` (diffusers' own bookkeeping such as ``_class_name``,
``_diffusers_version``: never constructor arguments).

Refused: ``thresholding: true`` (dynamic thresholding is not implemented),
``rescale_betas_zero_snr: true`` (a zero-SNR last step has β = 1), ``clip_sample_range`` ≠ 1
with clipping, other beta schedules or variance or prediction types, schedulers of other
processes (``_class_name`` outside :data:`SCHEDULER_CLASSES`) and any key not listed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SCHEDULER_CLASSES", "ACCEPTED_UNUSED", "diffusion_config_from_scheduler"]

# DDPM-family schedulers: their configs describe the same discrete VP chain (β_0..β_{T-1})
SCHEDULER_CLASSES = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "RePaintScheduler",
                     "DDPMParallelScheduler", "DDIMParallelScheduler")
# keys that only steer diffusers' own sampling loops (see the module docstring for each)
ACCEPTED_UNUSED = ("timestep_spacing", "steps_offset", "set_alpha_to_one", "skip_prk_steps",
                   "eta", "dynamic_thresholding_ratio", "sample_max_value", "tensor_format")
_TRANSLATED = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
               "prediction_type", "variance_type", "clip_sample", "clip_sample_range",
               "thresholding", "rescale_betas_zero_snr")
_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "sigmoid": "sigmoid",
              "squaredcos_cap_v2": "cosine"}
_MEAN_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
_VAR_TYPES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small",
              "fixed_large": "fixed_large", "fixed_large_log": "fixed_large",
              "learned": "learned", "learned_range": "learned_range"}


def _choice(where: str, key: str, value, table: Mapping[str, str]) -> str:
    if value not in table:
        raise ValueError(f"{where}: {key}={value!r} is not supported; priorpaint reads "
                         f"{', '.join(table)}")
    return table[value]


def diffusion_config_from_scheduler(config: Mapping[str, Any], where: str = "scheduler config"
                                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(diffusion config for ``GaussianDiffusion.from_config``, network hints) of a scheduler.

    The hints are ``{"clip_denoised": bool, "variance_to_log": bool}``: sampling's default
    clipping, and whether the network's variance channels are σ² (diffusers' ``learned``).
    Defaults of omitted keys are DDPMScheduler's, as ``DDPMScheduler.from_config`` would use.
    ``where`` names the file in error messages. The training loss (for ``train.py
    init_from=``) is ``mse`` for fixed variances, ``hybrid`` for learned ones.
    """
    name = config.get("_class_name", "DDPMScheduler")
    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"{where}: _class_name={name!r} is not a DDPM-family scheduler; "
                         f"priorpaint reads {', '.join(SCHEDULER_CLASSES)}")
    unknown = [k for k in config
               if not k.startswith("_") and k not in _TRANSLATED and k not in ACCEPTED_UNUSED]
    if unknown:
        raise ValueError(f"{where}: unsupported key {unknown[0]!r}"
                         + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
                         + "; priorpaint does not know what it changes, so it refuses it")
    for key in ("thresholding", "rescale_betas_zero_snr"):
        if config.get(key):
            raise ValueError(f"{where}: {key}=true is not supported by priorpaint's samplers")

    steps = int(config.get("num_train_timesteps", 1000))
    diffusion: dict[str, Any] = {"steps": steps}
    if config.get("trained_betas") is not None:
        betas = [float(b) for b in config["trained_betas"]]
        if len(betas) != steps:
            raise ValueError(f"{where}: trained_betas has {len(betas)} values but "
                             f"num_train_timesteps={steps}")
        diffusion.update(schedule="custom", betas=betas)
    else:
        schedule = _choice(where, "beta_schedule", config.get("beta_schedule", "linear"),
                           _SCHEDULES)
        diffusion["schedule"] = schedule
        if schedule != "cosine":
            diffusion.update(beta_start=float(config.get("beta_start", 0.0001)),
                             beta_end=float(config.get("beta_end", 0.02)))
    diffusion["mean_type"] = _choice(where, "prediction_type",
                                     config.get("prediction_type", "epsilon"), _MEAN_TYPES)
    variance_type = config.get("variance_type", "fixed_small")
    diffusion["var_type"] = _choice(where, "variance_type", variance_type, _VAR_TYPES)
    diffusion["loss"] = "hybrid" if diffusion["var_type"].startswith("learned") else "mse"

    clip = bool(config.get("clip_sample", True))
    clip_range = float(config.get("clip_sample_range", 1.0))
    if clip and clip_range != 1.0:
        raise ValueError(f"{where}: clip_sample_range={clip_range:g} is not supported; "
                         f"priorpaint clips the predicted x_0 to [-1, 1] (clip_sample_range=1)")
    return diffusion, {"clip_denoised": clip, "variance_to_log": variance_type == "learned"}
