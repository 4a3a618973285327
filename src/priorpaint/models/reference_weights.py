"""Load openai/guided-diffusion and openai/improved-diffusion UNet checkpoints into `UNet`.

Our module tree has the reference's parameter names, so "conversion" is: translate the reference
constructor config, build a `UNet`, cast the (possibly float16) state dict to float32 and load it
strictly. When keys or shapes disagree, the error lists them and names the config value that most
likely causes it (learn_sigma/out_channels, resblock_updown, conv_resample, num_classes,
attention_resolutions, use_scale_shift_norm, widths).

Two config styles are accepted:
- the reference `UNetModel(**config)` arguments (attention_resolutions = downsample RATES);
- `script_util.create_model(**args)` arguments (`num_channels`, `learn_sigma`, `class_cond`,
  attention_resolutions as a comma string of PIXEL sizes, `channel_mult` "" = default for
  image_size). These are recognised by their `num_channels` key and translated with
  `unet_config_from_create_model_args`.

Head counts (`num_heads`, `num_head_channels`, `num_heads_upsample`) and
`use_new_attention_order` change no weight shape: a wrong value loads without error but computes
something else. Take them from the checkpoint's training command/config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from .unet import UNet

_GUIDED_ARGS = {
    "image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks",
    "attention_resolutions", "dropout", "channel_mult", "conv_resample", "dims", "num_classes",
    "use_checkpoint", "use_fp16", "num_heads", "num_head_channels", "num_heads_upsample",
    "use_scale_shift_norm", "resblock_updown", "use_new_attention_order",
}
_IMPROVED_ARGS = {
    "in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
    "dropout", "channel_mult", "conv_resample", "dims", "num_classes", "use_checkpoint",
    "num_heads", "num_heads_upsample", "use_scale_shift_norm",
}
_REFERENCE_ONLY = {"image_size", "dims", "use_fp16"}  # no meaning for priorpaint's UNet
# create_model / model_and_diffusion_defaults keys that describe the diffusion, not the network
_DIFFUSION_KEYS = {
    "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
    "rescale_timesteps", "rescale_learned_sigmas", "sigma_small",
}
_CREATE_MODEL_ARGS = {
    "guided": {
        "image_size", "in_channels", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma",
        "class_cond", "use_checkpoint", "attention_resolutions", "num_heads",
        "num_head_channels", "num_heads_upsample", "use_scale_shift_norm", "dropout",
        "resblock_updown", "use_fp16", "use_new_attention_order",
    },
    "improved": {
        "image_size", "in_channels", "num_channels", "num_res_blocks", "learn_sigma", "class_cond",
        "use_checkpoint", "attention_resolutions", "num_heads", "num_heads_upsample",
        "use_scale_shift_norm", "dropout",
    },
}
# default channel_mult by image_size in each repository's create_model
_DEFAULT_MULT = {
    "guided": {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
               64: (1, 2, 3, 4)},
    "improved": {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)},
}
NUM_CLASSES = 1000  # create_model's class_cond=True means ImageNet's 1000 classes


def unet_config_from_create_model_args(args: Mapping, reference: str = "guided") -> dict:
    """Translate `script_util.create_model(**args)` arguments into `UNetModel(**config)` ones.

    As the reference does: attention_resolutions "16,8" (pixel sizes) -> downsample rates
    image_size // res; channel_mult "" -> the default for image_size ("1,2,2" -> (1, 2, 2));
    num_classes = 1000 if class_cond else None. ``in_channels`` is not a create_model argument
    (the references hard-code 3) but the patch grey and multi-channel models are trained with,
    so it is accepted (default 3) and out_channels follows: 2 x in_channels if learn_sigma,
    else in_channels. Diffusion keys of `model_and_diffusion_defaults()` (diffusion_steps,
    noise_schedule, ...) are ignored. `reference` is "guided" (guided-diffusion/RePaint) or
    "improved" (improved-diffusion: no channel_mult argument, 32 -> (1, 2, 2, 2) default).
    Omitted arguments take create_model's own defaults (use_scale_shift_norm=False,
    num_heads=1, attention_resolutions "16", ...), not those of model_and_diffusion_defaults().
    """
    if reference not in _CREATE_MODEL_ARGS:
        raise ValueError(f"reference must be 'guided' or 'improved', got {reference!r}")
    known = _CREATE_MODEL_ARGS[reference]
    unknown = sorted(set(args) - known - _DIFFUSION_KEYS)
    if unknown:
        raise ValueError(
            f"unknown {reference}-diffusion create_model argument(s) {unknown}; "
            f"expected a subset of {sorted(known)}"
        )
    for key in ("image_size", "num_channels", "num_res_blocks"):
        if key not in args:
            raise ValueError(f"create_model args need {key!r} (got keys {sorted(args)})")
    a = dict(args)
    image_size = int(a["image_size"])
    mult = a.get("channel_mult", "")
    if isinstance(mult, str) and mult.strip() == "":
        if image_size not in _DEFAULT_MULT[reference]:
            raise ValueError(
                f"{reference}-diffusion create_model has no default channel_mult for image_size="
                f"{image_size} (defaults exist for {sorted(_DEFAULT_MULT[reference])}); "
                "give channel_mult explicitly, e.g. '1,2,2'"
            )
        mult = _DEFAULT_MULT[reference][image_size]
    elif isinstance(mult, str):
        mult = tuple(int(m) for m in mult.split(","))
    res = a.get("attention_resolutions", "16")
    if isinstance(res, str):
        pixel_sizes = [int(r) for r in res.split(",") if r.strip()]
    else:
        pixel_sizes = [int(res)] if isinstance(res, int) else [int(r) for r in res]
    in_channels = int(a.get("in_channels", 3))
    if in_channels < 1:
        raise ValueError(f"in_channels={in_channels}: an image has at least 1 channel")
    config = dict(
        in_channels=in_channels,
        model_channels=int(a["num_channels"]),
        out_channels=in_channels * (2 if a.get("learn_sigma", False) else 1),
        num_res_blocks=int(a["num_res_blocks"]),
        attention_resolutions=[image_size // r for r in pixel_sizes],
        dropout=float(a.get("dropout", 0.0)),
        channel_mult=list(mult),
        conv_resample=True,
        dims=2,
        num_classes=NUM_CLASSES if a.get("class_cond", False) else None,
        use_checkpoint=bool(a.get("use_checkpoint", False)),
        num_heads=int(a.get("num_heads", 1)),
        num_heads_upsample=int(a.get("num_heads_upsample", -1)),
        use_scale_shift_norm=bool(a.get("use_scale_shift_norm", False)),
    )
    if reference == "guided":
        config.update(
            image_size=image_size,
            use_fp16=bool(a.get("use_fp16", False)),
            num_head_channels=int(a.get("num_head_channels", -1)),
            resblock_updown=bool(a.get("resblock_updown", False)),
            use_new_attention_order=bool(a.get("use_new_attention_order", False)),
        )
    return config


def unet_from_guided_diffusion(config: Mapping, state_dict) -> UNet:
    """A `UNet` equal to guided-diffusion's `UNetModel(**config)` with `state_dict` loaded.

    `config`: UNetModel arguments, or create_model arguments (detected by `num_channels`).
    `state_dict`: mapping of reference parameter names to tensors (float16 is cast to float32),
    or a path to a `.pt` file holding one. Raises ValueError with a diagnosis on any mismatch.
    """
    if "num_channels" in config:
        config = unet_config_from_create_model_args(config, "guided")
    kwargs = _unet_kwargs(config, _GUIDED_ARGS, "guided-diffusion")
    return _load(UNet(**kwargs), state_dict, config, "guided-diffusion")


def unet_from_improved_diffusion(config: Mapping, state_dict) -> UNet:
    """A `UNet` equal to improved-diffusion's `UNetModel(**config)` with `state_dict` loaded.

    improved-diffusion's UNet is guided-diffusion's with resblock_updown=False, num_head_channels
    =-1 and the legacy (head-first) attention order; its config has none of those arguments.
    """
    if "num_channels" in config:
        config = unet_config_from_create_model_args(config, "improved")
    extra = set(config) & (_GUIDED_ARGS - _IMPROVED_ARGS - {"image_size", "use_fp16"})
    if extra:
        raise ValueError(
            f"improved-diffusion's UNetModel has no argument(s) {sorted(extra)}; "
            "for a guided-diffusion checkpoint use unet_from_guided_diffusion"
        )
    mult = config.get("channel_mult", (1, 2, 4, 8))
    if float(mult[0]) != 1.0:
        raise ValueError(
            f"improved-diffusion's UNet only runs with channel_mult[0] == 1 (its input conv is "
            f"model_channels wide), got channel_mult={list(mult)}"
        )
    kwargs = _unet_kwargs(config, _IMPROVED_ARGS | {"image_size", "use_fp16"},
                          "improved-diffusion")
    return _load(UNet(**kwargs), state_dict, config, "improved-diffusion")


def _unet_kwargs(config: Mapping, allowed: set, source: str) -> dict:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {source} UNetModel argument(s) {unknown}; expected a subset of "
            f"{sorted(allowed)} (or create_model arguments with 'num_channels')"
        )
    dims = config.get("dims", 2)
    if dims != 2:
        raise ValueError(f"dims={dims}: priorpaint's UNet is 2-D only (images); got a "
                         f"{dims}-D {source} config")
    kwargs = {k: v for k, v in config.items() if k not in _REFERENCE_ONLY}
    for key in ("attention_resolutions", "channel_mult"):
        if isinstance(kwargs.get(key), str):
            raise ValueError(
                f"{key}={kwargs[key]!r} is a string: that is create_model style (pixel sizes for "
                "attention_resolutions); convert with unet_config_from_create_model_args first"
            )
    return kwargs


# --------------------------------------------------------------------------- loading + diagnosis
def _as_float32_state_dict(state_dict, source: str) -> dict:
    if isinstance(state_dict, (str, os.PathLike)):
        path = os.fspath(state_dict)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{source} checkpoint {path!r} does not exist")
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ValueError(
            f"expected a {source} state dict (parameter name -> tensor), got {type(state_dict)}"
            + (f" with keys {list(state_dict)[:5]}" if isinstance(state_dict, Mapping) else "")
        )
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def _load(model: UNet, state_dict, config: Mapping, source: str) -> UNet:
    ckpt = _as_float32_state_dict(state_dict, source)
    own = model.state_dict()
    missing = [k for k in own if k not in ckpt]
    unexpected = [k for k in ckpt if k not in own]
    shapes = [(k, tuple(ckpt[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in ckpt and ckpt[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(_mismatch_report(source, config, ckpt, own, missing, unexpected,
                                          shapes))
    model.load_state_dict(ckpt, strict=True)
    return model


def _first(keys, n=6):
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _mismatch_report(source, config, ckpt, own, missing, unexpected, shapes) -> str:
    lines = [f"{source} state dict does not fit the UNet built from its config:"]
    if missing:
        lines.append(f"  missing keys: {_first(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys: {_first(unexpected)}")
    if shapes:
        lines.append("  shape mismatches (checkpoint vs model): " + _first(
            [f"{k} {a} vs {b}" for k, a, b in shapes], 4))
    hints = _diagnose(config, ckpt, own, missing, unexpected, shapes)
    lines.append("likely cause:" if hints else "no single config value explains this; compare "
                 "model_channels, channel_mult, num_res_blocks and attention_resolutions with the "
                 "checkpoint's training config")
    lines += [f"  - {h}" for h in hints]
    return "\n".join(lines)


def _module(key: str) -> str:
    """'input_blocks.3.0.op.weight' -> 'input_blocks.3.0' (the layer inside a block)."""
    m = re.match(r"((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)", key)
    return m.group(1) if m else key.rsplit(".", 1)[0]


def _diagnose(config, ckpt, own, missing, unexpected, shapes) -> list[str]:
    hints = []
    shape_keys = {k for k, _, _ in shapes}
    n_ck, n_own = _count_blocks(ckpt, "input_blocks"), _count_blocks(own, "input_blocks")
    if n_ck == 0:
        return [f"the state dict has no input_blocks.* keys (first keys: {_first(list(ckpt), 3)}):"
                " it is not a guided-/improved-diffusion UNet"]
    if n_ck != n_own:
        levels = len(config.get("channel_mult", (1, 2, 4, 8)))
        nrb = n_ck // levels - 1 if levels and n_ck % levels == 0 else None
        hints.append(f"the checkpoint has {n_ck} input blocks, the config builds {n_own}: "
                     + (f"num_res_blocks is probably {nrb} (with {levels} levels)" if nrb
                        else "check num_res_blocks and channel_mult"))
    in_ch, out_ch = config.get("in_channels"), config.get("out_channels")
    n_in = ckpt["input_blocks.0.0.weight"].shape[1] if "input_blocks.0.0.weight" in ckpt else in_ch
    if n_in != in_ch:
        hints.append(f"input_blocks.0.0 takes {n_in} input channels but config says in_channels="
                     f"{in_ch}: set in_channels={n_in}")
    n_out = ckpt["out.2.weight"].shape[0] if "out.2.weight" in ckpt else out_ch
    if n_out != out_ch and n_in != in_ch and in_ch and n_in and out_ch * n_in == n_out * in_ch:
        hints.append(f"out.2 has {n_out} output channels, {n_out // n_in} x its {n_in} input "
                     f"channels as the config's learn_sigma says: in_channels={n_in} fixes both")
    elif n_out != out_ch:
        # learned sigma doubles the checkpoint's OWN input channels (not the config's)
        sigma = {2 * (n_in or 0): "True", n_in: "False"}.get(n_out)
        hints.append(f"out.2 has {n_out} output channels but config says out_channels={out_ch}: "
                     + (f"learn_sigma was {sigma.lower()} for its {n_in} input channels "
                        f"(create_model: learn_sigma={sigma}; UNetModel: set out_channels={n_out})"
                        if sigma else f"set out_channels={n_out}"))
    if "time_embed.0.weight" in shape_keys:
        n = ckpt["time_embed.0.weight"].shape[1]
        hints.append(f"time_embed.0 expects a {n}-dim timestep embedding: set model_channels={n} "
                     f"(config says {config.get('model_channels')})")
    if "label_emb.weight" in unexpected:
        n = ckpt["label_emb.weight"].shape[0]
        hints.append(f"the checkpoint is class-conditional (label_emb has {n} classes): set "
                     f"num_classes={n} (class_cond=True)")
    elif "label_emb.weight" in missing:
        hints.append("the checkpoint has no label_emb: it is unconditional, set num_classes=None "
                     "(class_cond=False)")
    elif "label_emb.weight" in shape_keys:
        n = ckpt["label_emb.weight"].shape[0]
        hints.append(f"label_emb has {n} classes in the checkpoint: set num_classes={n}")
    ssn = _scale_shift_norm(ckpt)
    if ssn is not None and ssn != bool(config.get("use_scale_shift_norm", False)):
        hints.append(f"the checkpoint's emb_layers give {'2x' if ssn else '1x'} the block width: "
                     f"use_scale_shift_norm is probably {ssn}")
    hints += _resample_hints(missing, unexpected)
    attn_m = sorted({_module(k) for k in missing if re.search(r"\.(qkv|proj_out)\.", k)})
    attn_u = sorted({_module(k) for k in unexpected if re.search(r"\.(qkv|proj_out)\.", k)})
    if (attn_m or attn_u) and n_ck == n_own:
        res = config.get("attention_resolutions")
        hints.append(
            f"attention layers differ (model only: {attn_m[:4]}, checkpoint only: {attn_u[:4]}): "
            f"check attention_resolutions={res} (UNetModel takes downsample rates = image_size // "
            "pixel size; create_model takes pixel sizes)"
        )
    if shapes and not hints:
        hints.append("feature widths differ: check model_channels and channel_mult")
    if any(re.search(r"\.(qkv|proj_out)\.", k) for k in shape_keys):
        hints.append("attention weight shapes follow the feature width (model_channels / "
                     "channel_mult); num_heads / num_head_channels never change weight shapes, "
                     "so check them separately")
    return hints


def _scale_shift_norm(ckpt) -> bool | None:
    """use_scale_shift_norm as the checkpoint's first ResBlock shows it (emb gives 2C or C)."""
    for key, value in ckpt.items():
        if key.endswith(".emb_layers.1.weight"):
            width = ckpt.get(key.replace("emb_layers.1", "out_layers.3"))
            if width is not None:
                return value.shape[0] == 2 * width.shape[0]
    return None


def _resample_hints(missing, unexpected) -> list[str]:
    """Down/upsampling layers: Downsample has `op`, Upsample `conv`, ResBlocks `in_layers`."""
    hints = []
    for which, mine, theirs in (("missing", missing, unexpected), ("unexpected", unexpected,
                                                                     missing)):
        for pattern, name in ((r"\.op\.", "Downsample conv"), (r"\.\d+\.conv\.", "Upsample conv")):
            mods = sorted({_module(k) for k in mine if re.search(pattern, k)})
            if not mods:
                continue
            other_has_resblock = any(_module(k) in mods and ".in_layers." in k for k in theirs)
            if other_has_resblock:
                value = which == "missing"
                hints.append(f"{mods[0]}.{'op' if 'Down' in name else 'conv'} {which}: the "
                             f"checkpoint resamples with {'ResBlocks' if value else name + 's'}, "
                             f"resblock_updown is probably {value}")
            else:
                value = which == "unexpected"
                hints.append(f"{mods[0]} {name} weights {which}: conv_resample is probably "
                             f"{value}")
            break
    return hints


def _count_blocks(keys, prefix) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0
