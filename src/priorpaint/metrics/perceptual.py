"""LPIPS (Zhang et al., 2018) through torchmetrics, from weight files on this machine only.

LPIPS needs two sets of weights:
- the backbone: torchvision's ImageNet AlexNet / VGG16 / SqueezeNet 1.1. torchvision would
  download these on first use; here the user provides the file (config key ``lpips_weights``).
- the linear calibration layers: small files that ship inside torchmetrics
  (``torchmetrics/functional/image/lpips_models/<net>.pth``), used unless
  ``lpips_linear_weights`` names another copy.

The network is torchmetrics' own LPIPS module built with a randomly initialised backbone (the
constructor path that never downloads), into which both files are then loaded strictly, so a
wrong or truncated file fails loudly instead of leaving random weights in place.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import MetricUnavailable

__all__ = ["LPIPS_NETS", "load_lpips", "lpips", "lpips_diversity"]

# net name -> (torchvision weights enum, its file name as torchvision's cache stores it)
LPIPS_NETS = {
    "alex": ("AlexNet_Weights.IMAGENET1K_V1", "alexnet-owt-7be5be79.pth"),
    "vgg": ("VGG16_Weights.IMAGENET1K_V1", "vgg16-397923af.pth"),
    "squeeze": ("SqueezeNet1_1_Weights.IMAGENET1K_V1", "squeezenet1_1-b8a52dc0.pth"),
}
_URL_ROOT = "https://download.pytorch.org/models/"
_MIN_SIDE = 64


def _how_to_get(net: str) -> str:
    enum, filename = LPIPS_NETS[net]
    return (f"LPIPS ({net}) needs torchvision's ImageNet backbone weights as a local file: "
            f"{filename} (torchvision.models.{enum}, {_URL_ROOT}{filename}). Fetch it on a "
            "machine with internet (or copy it from a torch hub cache, "
            "$TORCH_HOME/hub/checkpoints/) and pass its path as "
            f"lpips_weights=/path/to/{filename}. "
            "Nothing is downloaded at run time.")


def _torchmetrics_lpips():
    try:
        from torchmetrics.functional.image.lpips import _NoTrainLpips
    except ImportError as err:   # private class: name the version we were written against
        raise MetricUnavailable(
            "LPIPS needs torchmetrics' LPIPS module (torchmetrics.functional.image.lpips."
            f"_NoTrainLpips, present in torchmetrics 1.9); it could not be imported: {err}. "
            "Install torchmetrics>=1.4,<2 (pip install 'torchmetrics>=1.4,<2').") from err
    return _NoTrainLpips


def _load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file gets the same clear message
        raise ValueError(f"could not read {what} from {path}: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict ({what}); got {type(state).__name__}")
    return state


def _backbone_state(module: torch.nn.Module, torchvision_state: dict, path: Path, net: str):
    """torchvision ``features.<i>.<param>`` keys renamed to torchmetrics' slice keys.

    torchmetrics splits ``model.features`` into slices (``slice<k>.<i>.<param>``, or
    ``slices.<k>.<i>.<param>`` for SqueezeNet) but keeps each layer's index ``<i>`` as its
    name, so that index alone identifies the source parameter.
    """
    renamed = {}
    for key in module.net.state_dict():
        parts = key.split(".")
        layer = parts[2:] if parts[0] == "slices" else parts[1:]
        source = ".".join(["features", *layer])
        if source not in torchvision_state:
            raise ValueError(f"{path} is not the torchvision {net} backbone LPIPS needs: it has no "
                             f"{source!r}. {_how_to_get(net)}")
        renamed[key] = torchvision_state[source]
    return renamed


def load_lpips(lpips_weights: str | Path | None, net: str = "alex",
               lpips_linear_weights: str | Path | None = None,
               device: torch.device | str | None = None) -> torch.nn.Module:
    """A frozen, eval-mode LPIPS network from local files (see the module docstring).

    Raises :class:`MetricUnavailable` (saying which file, where to get it and which key to set)
    when ``lpips_weights`` is None or missing; ``ValueError`` when a file is not the right one.
    Call it as ``model(a, b)`` with a, b in [-1, 1], (B, 3, H, W) -> (B, 1, 1, 1); or use
    :func:`lpips`.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}: choose one of {', '.join(LPIPS_NETS)}")
    if lpips_weights is None:
        raise MetricUnavailable(f"lpips_weights is not set. {_how_to_get(net)}")
    backbone_path = Path(lpips_weights).expanduser()
    if not backbone_path.is_file():
        raise MetricUnavailable(f"no file at lpips_weights={backbone_path}. {_how_to_get(net)}")
    lpips_class = _torchmetrics_lpips()
    if lpips_linear_weights is None:
        import torchmetrics.functional.image.lpips as tm_lpips
        linear_path = Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"
    else:
        linear_path = Path(lpips_linear_weights).expanduser()
    if not linear_path.is_file():
        raise MetricUnavailable(
            f"no LPIPS linear-layer file at {linear_path} (lpips_linear_weights). torchmetrics "
            f"ships it as torchmetrics/functional/image/lpips_models/{net}.pth; reinstall "
            "torchmetrics or point lpips_linear_weights at a copy (the lpips package's "
            f"lpips/weights/v0.1/{net}.pth is the same file).")

    # pretrained=False: no file is read by torchmetrics; pnet_rand=True: torchvision builds the
    # backbone with weights=None, which never downloads. Both are loaded below, strictly.
    model = lpips_class(pretrained=False, net=net, pnet_rand=True, use_dropout=True)
    backbone = _backbone_state(model, _load_state(backbone_path, f"{net} backbone"),
                               backbone_path, net)
    try:
        model.net.load_state_dict(backbone, strict=True)
    except RuntimeError as err:   # right names, wrong shapes: another network's file
        raise ValueError(f"{backbone_path} does not fit the {net} backbone ({err}). "
                         f"{_how_to_get(net)}") from err
    linear = _load_state(linear_path, "LPIPS linear layers")
    # lin0..lin4(6) hold the layers; ``lins.<k>`` are aliases of the same modules.
    expected = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
    if set(linear) != expected:
        raise ValueError(f"{linear_path} is not the LPIPS {net} linear-layer file: keys "
                         f"{sorted(linear)} != expected {sorted(expected)}")
    try:
        model.load_state_dict(linear, strict=False)   # the backbone keys were loaded above
    except RuntimeError as err:   # same names for every net; the widths tell them apart
        raise ValueError(f"{linear_path} does not fit the LPIPS {net} linear layers ({err})") \
            from err
    model.requires_grad_(False)
    return model.to(device) if device is not None else model


def _backbone_input(x: torch.Tensor) -> torch.Tensor:
    """RGB (grayscale repeated), short side >= 64 px (upsampled bilinearly when smaller)."""
    if x.shape[1] == 1:   # the ImageNet backbones expect RGB
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"LPIPS needs 1- or 3-channel images; got shape {tuple(x.shape)}")
    short = min(x.shape[2:])
    if short < _MIN_SIDE:   # AlexNet's deepest LPIPS layer has no pixel left below ~31 px
        size = [round(side * _MIN_SIDE / short) for side in x.shape[2:]]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


@torch.no_grad()
def lpips(pred: torch.Tensor, target: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """LPIPS distance per image, (B,), for images in [-1, 1]; lower is more similar.

    Whole-image LPIPS, the number published tables report. Grayscale is repeated to RGB;
    images whose short side is under 64 px (MNIST, CIFAR) are first upsampled bilinearly so it
    is 64, since the backbones' deepest layers need that much; such values are comparable only
    with LPIPS computed the same way.
    """
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(f"pred and target must be (B, C, H, W) of the same shape: got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    param = next(model.parameters())
    a, b = (_backbone_input(x).to(device=param.device, dtype=param.dtype) for x in (pred, target))
    return model(a, b).reshape(pred.shape[0]).to(pred.device)


@torch.no_grad()
def lpips_diversity(samples: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """Mean pairwise LPIPS between the S samples of each input, (N,), samples (N, S, C, H, W).

    Whole images: the known pixels are identical across samples, so the distance comes from
    the hole and how it meets its surroundings. 0 = the sampler always gave the same image.
    """
    if samples.ndim != 5 or samples.shape[1] < 2:
        raise ValueError(f"samples must be (N, S, C, H, W) with S >= 2 samples per input; "
                         f"got {tuple(samples.shape)}")
    n, s = samples.shape[:2]
    i, j = torch.triu_indices(s, s, offset=1)
    first = rearrange(samples[:, i], "n p c h w -> (n p) c h w")
    second = rearrange(samples[:, j], "n p c h w -> (n p) c h w")
    pairs = lpips(first, second, model)
    return rearrange(pairs, "(n p) -> n p", n=n).mean(dim=1)
