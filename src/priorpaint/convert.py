"""Turn a published guided-diffusion / improved-diffusion / RePaint `.pt` into a priorpaint checkpoint.

    python -m priorpaint.convert guided-diffusion 256x256_diffusion.pt out.ckpt preset=imagenet256
    python -m priorpaint.convert repaint celeba256_250000.pt celeba.ckpt preset=celeba256
    python -m priorpaint.convert improved-diffusion cifar10_uncond_50M_500K.pt c10.ckpt preset=cifar10
    python -m priorpaint.convert guided-diffusion my.pt out.ckpt image_size=64 num_channels=192 ...
    python -m priorpaint.convert guided-diffusion grey.pt grey.ckpt in_channels=1 learn_sigma=True ...
    python -m priorpaint.convert diffusers path/to/ddpm-celebahq-256 celebahq.ckpt

(diffusers folders carry their own configs: see ``priorpaint.diffusers_prior``.)

The published files are bare state dicts: the architecture and the diffusion live only in the
command lines their authors trained with. Presets hold those flags (the RePaint confs and the
improved-diffusion README); ``key=value`` sets or overrides any of them, with the references'
own flag names (``create_model`` and ``create_gaussian_diffusion`` arguments), plus
``in_channels`` for grey (1) or multi-channel models (out_channels follows from it and
learn_sigma). The output carries model config, diffusion config, image size and channels, so
``sample.py ckpt=out.ckpt`` needs no other flag and ``python train.py init_from=out.ckpt``
fine-tunes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .checkpoint import load_diffusers_prior, save_prior
from .cli import report_user_errors
from .diffusion import GaussianDiffusion
from .models import unet_from_guided_diffusion, unet_from_improved_diffusion
from .weights_io import load_torch_file

__all__ = ["PRESETS", "DEFAULTS", "diffusion_config_from_flags", "convert", "convert_diffusers",
           "main"]

# model_and_diffusion_defaults() of each reference's scripts: what an omitted flag meant;
# plus in_channels, which the references hard-code to 3 and grey or multi-channel models patch.
DEFAULTS = {
    "guided": dict(
        image_size=64, in_channels=3, num_channels=128, num_res_blocks=2, num_heads=4,
        num_heads_upsample=-1, num_head_channels=-1, attention_resolutions="16,8", channel_mult="",
        dropout=0.0,
        class_cond=False, use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False,
        use_fp16=False, use_new_attention_order=False, learn_sigma=False, diffusion_steps=1000,
        noise_schedule="linear", use_kl=False, predict_xstart=False, rescale_timesteps=False,
        rescale_learned_sigmas=False, sigma_small=False),
    "improved": dict(
        image_size=64, in_channels=3, num_channels=128, num_res_blocks=2, num_heads=4,
        num_heads_upsample=-1, attention_resolutions="16,8", dropout=0.0, learn_sigma=False,
        sigma_small=False,
        class_cond=False, diffusion_steps=1000, noise_schedule="linear", use_kl=False,
        predict_xstart=False, rescale_timesteps=True, rescale_learned_sigmas=True,
        use_checkpoint=False, use_scale_shift_norm=True),
}

# guided-diffusion 256x256 architecture, as in the RePaint confs (test_c256/p256/inet256_*.yml)
_ADM256 = dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
               num_head_channels=64, num_heads=4, resblock_updown=True, use_scale_shift_norm=True,
               learn_sigma=True, diffusion_steps=1000, noise_schedule="linear", sampling_steps=250)

PRESETS = {
    "repaint": {
        "celeba256": {**_ADM256, "class_cond": False},
        "places256": {**_ADM256, "class_cond": False},
        "imagenet256": {**_ADM256, "class_cond": True},
    },
    "guided": {
        "imagenet256": {**_ADM256, "class_cond": True},
        "imagenet256-uncond": {**_ADM256, "class_cond": False},
    },
    # the improved-diffusion README's "Models and Hyperparameters" section
    "improved": {
        "cifar10": dict(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True,
                        dropout=0.3, diffusion_steps=4000, noise_schedule="cosine"),
        "cifar10-vlb": dict(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True,
                            dropout=0.3, diffusion_steps=4000, noise_schedule="cosine", use_kl=True),
        "imagenet64": dict(image_size=64, num_channels=128, num_res_blocks=3, learn_sigma=True,
                           diffusion_steps=4000, noise_schedule="cosine"),
        "imagenet64-vlb": dict(image_size=64, num_channels=128, num_res_blocks=3, learn_sigma=True,
                               diffusion_steps=4000, noise_schedule="cosine", use_kl=True),
        "imagenet64-cond": dict(image_size=64, num_channels=192, num_res_blocks=3, learn_sigma=True,
                                class_cond=True, diffusion_steps=4000, noise_schedule="cosine",
                                rescale_learned_sigmas=False, rescale_timesteps=False),
        "lsun-bedroom": dict(image_size=256, num_channels=128, num_res_blocks=2, num_heads=1,
                             learn_sigma=True, use_scale_shift_norm=False,
                             attention_resolutions="16", diffusion_steps=1000,
                             noise_schedule="linear", rescale_learned_sigmas=False,
                             rescale_timesteps=False),
    },
}
SOURCES = {"guided-diffusion": "guided", "repaint": "guided", "improved-diffusion": "improved"}
_DIFFUSION_FLAGS = {"diffusion_steps", "noise_schedule", "use_kl", "predict_xstart",
                    "rescale_timesteps", "rescale_learned_sigmas", "sigma_small", "learn_sigma",
                    "timestep_respacing"}


def diffusion_config_from_flags(flags: dict) -> dict:
    """priorpaint's diffusion config for the references' create_gaussian_diffusion flags."""
    if flags.get("learn_sigma"):
        var_type = "learned_range"
    else:
        var_type = "fixed_small" if flags.get("sigma_small") else "fixed_large"
    if flags.get("use_kl"):
        loss = "rescaled_kl"
    else:
        loss = "hybrid" if flags.get("rescale_learned_sigmas") else "mse"
    config = {"schedule": flags["noise_schedule"], "steps": int(flags["diffusion_steps"]),
              "mean_type": "x0" if flags.get("predict_xstart") else "eps",
              "var_type": var_type, "loss": loss}
    if flags.get("rescale_timesteps"):
        config["rescale_timesteps"] = True
    return config


def convert(source: str, state_dict_path, out_path, preset: str | None = None,
            overrides: dict | None = None) -> Path:
    """Convert one published checkpoint; returns the written path. See the module docstring."""
    if source == "diffusers":
        if preset is not None:
            raise ValueError("a diffusers folder carries its own configs: it takes no preset=")
        return convert_diffusers(state_dict_path, out_path, overrides)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    reference = SOURCES[source]
    presets = PRESETS["repaint" if source == "repaint" else reference]
    flags = dict(DEFAULTS[reference])
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown {source} preset {preset!r}: choose one of "
                             f"{', '.join(presets)}")
        flags.update(presets[preset])
    elif source == "repaint":
        raise ValueError(f"a repaint checkpoint needs preset=NAME, one of {', '.join(presets)}")
    for key in overrides or {}:
        if key not in flags and key not in ("sampling_steps", "timestep_respacing"):
            raise ValueError(f"unknown flag {key!r} for {source}; known: {', '.join(sorted(flags))}")
    flags.update(overrides or {})

    path = Path(state_dict_path)
    if not path.is_file():
        raise FileNotFoundError(f"{source} checkpoint {path} does not exist")
    state = load_torch_file(path, what=f"{source} checkpoint")
    if isinstance(state, dict) and "priorpaint" in state:
        raise ValueError(f"{path} is already a priorpaint checkpoint: use it as it is "
                         f"(python sample.py ckpt={path})")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    sampling_steps = flags.pop("sampling_steps", None)
    respacing = flags.pop("timestep_respacing", None) or sampling_steps
    model_flags = {k: v for k, v in flags.items() if k not in _DIFFUSION_FLAGS - {"learn_sigma"}}
    build = unet_from_guided_diffusion if reference == "guided" else unet_from_improved_diffusion
    try:
        model = build(model_flags, state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    diffusion = GaussianDiffusion.from_config(diffusion_config_from_flags(flags))
    extra = {"source": {"kind": source, "file": str(path), "preset": preset, "flags": flags}}
    if respacing:
        extra["sampling"] = {"steps": str(respacing)}
    size = int(flags["image_size"])
    return save_prior(out_path, model, diffusion, (size, size), model.config["in_channels"],
                      extra=extra)


def convert_diffusers(path, out_path, overrides: dict | None = None) -> Path:
    """Write a diffusers folder as a priorpaint checkpoint (``image_size=`` the only override).

    The folder is loaded as :func:`~priorpaint.checkpoint.load_prior` loads it, so a converted
    checkpoint passed the same checks and holds the same payload as the folder's ``Prior``.
    """
    overrides = dict(overrides or {})
    image_size = overrides.pop("image_size", None)
    if overrides:
        raise ValueError(f"unknown option(s) {sorted(overrides)} for diffusers; the only one "
                         f"is image_size= (when config.json has no sample_size)")
    prior = load_diffusers_prior(path, image_size)
    return save_prior(out_path, prior.model, prior.diffusion, prior.image_size, prior.channels,
                      extra={k: prior.info[k] for k in ("source", "sampling")})


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value) if value != "" else ""
    return overrides


USAGE = ("usage: python -m priorpaint.convert {guided-diffusion|improved-diffusion|repaint} "
         "IN.pt OUT.ckpt [preset=NAME] [flag=value ...]\n"
         "       python -m priorpaint.convert diffusers FOLDER OUT.ckpt [image_size=N]\n"
         "presets: " + "; ".join(f"{s}: {', '.join(PRESETS['repaint' if s == 'repaint' else r])}"
                                 for s, r in SOURCES.items()))


# ImportError: the diffusers source needs the optional diffusers package (its message says so)
@report_user_errors("priorpaint.convert", extra=(ImportError,), returns_status=True)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    source, src, out, *rest = argv
    overrides = _parse_overrides(rest)
    preset = overrides.pop("preset", None)
    written = convert(source, src, out, preset=preset, overrides=overrides)
    print(f"wrote {written}  (sample with: python sample.py ckpt={written})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
