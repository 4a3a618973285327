"""Images of another size than the prior: ``fit=crop | native | resize`` (``auto`` picks one).

A prior is trained at one size (h, w). An image (H, W) of another size can be

- ``resize``: resized to (h, w), inpainted, and the completion resized back (the old way; the
  hole is filled at the prior's resolution, so a large photo gets a blurry fill);
- ``native``: inpainted as it is, the fully convolutional UNet run at (H, W); sides that are
  not multiples of 2 ** downsamplings are padded up to them by reflection (the mask reflected
  alike, so padding that mirrors a hole is sampled, not known) and the padding cropped off;
- ``crop``: inpainted at its own resolution, one (h, w) window around each cluster of holes.

Crop, in order (all pure functions of the mask, so the plan is the same on every rank):

1. Holes are the 8-connected components of the unknown region; components whose joint
   bounding box fits in one window are merged into a cluster (sampled together).
2. A cluster that fits gets one window, centred on it and clamped inside the image: the most
   known context a window of the prior's size can give it.
3. Clusters larger than a window are filled coarse-to-fine: the whole image is area-averaged
   to (h, w) (hole pixels excluded, a small pixel is known only if all it covers is), inpainted
   there for the layout, and the completion upsampled into the holes as a guide. The clusters
   are then covered by the cells of a grid of half windows, each sampled in a window centred
   on it with the guide standing in (as known) for the not-yet-sampled hole pixels outside
   the cell. (Small clusters' windows run first.)
4. Windows are sampled in turn: each sees as known what the input knows and what earlier
   windows filled, and writes back only its own cluster or cell ("core"); other holes' pixels
   in its frame are unknown to it (or the guide, after a coarse pass) and are left for their
   own window. Overlapping windows therefore agree; the known pixels are never written.

Measured (docs/benchmarks.md): separate small holes, crop beats resize clearly and matches
native at a fraction of its pixels; for a hole much larger than a window, native did better
than the coarse-to-fine path, which is kept for sizes native cannot take.

Every sampler call goes through a ``sample(x0, mask, generators, items)`` callable (the public
``inpaint`` in the end), so any sampler works. Randomness: the resize, native and coarse
passes use item (image i, sample k)'s own generator, window j of it one seeded from
(seed, i, k, j): an output depends only on (seed, image, mask, sample), never on batching.
Windows always have the prior's size, so window j of every item in a batch runs in one call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..masks import resize_mask
from ..seeding import Stream, stream_seed
from .item_noise import item_generators

__all__ = ["FITS", "FitWarning", "Box", "Window", "WindowPlan", "resolve_fit", "check_fit", "hole_boxes",
           "cluster_boxes", "place_window", "plan_windows", "window_generator", "count_calls",
           "inpaint_items", "inpaint_any_size", "size_multiple", "pad_to_multiple"]

FITS = ("auto", "crop", "native", "resize")



class FitWarning(UserWarning):
    """How ``fit=crop`` handled holes larger than a window (coarse-to-fine)."""


SampleFn = Callable[[torch.Tensor, torch.Tensor, list, list], torch.Tensor]


# ---------------------------------------------------------------- choosing a fit
def resolve_fit(fit: str, image_size: Sequence[int], prior_size: Sequence[int]) -> str:
    """``auto`` = ``crop`` for an image at least the prior's size on both sides (and not equal
    to it), ``resize`` otherwise; any other value is returned as it is (after validation)."""
    fit = str(fit)
    if fit not in FITS:
        raise ValueError(f"fit={fit} is unknown; choose one of {', '.join(FITS)}")
    if fit != "auto":
        return fit
    (H, W), (h, w) = tuple(image_size), tuple(prior_size)
    return "crop" if H >= h and W >= w and (H, W) != (h, w) else "resize"


def size_multiple(model) -> int | None:
    """2 ** (downsamplings) of the UNet inside ``model`` (wrappers unwrapped), if it says."""
    while model is not None:
        multiple = getattr(model, "size_multiple", None)
        if isinstance(multiple, int):
            return multiple
        model = getattr(model, "model", None)
    return None


def check_fit(fit: str, image_size: Sequence[int], prior_size: Sequence[int],
              name: str = "the image") -> None:
    """Raise ValueError (naming ``name``, its size and what to do) if ``fit`` cannot work.

    (``native`` takes any size: :func:`pad_to_multiple` pads it for the UNet.)"""
    (H, W), (h, w) = tuple(image_size), tuple(prior_size)
    if fit == "crop" and (H < h or W < w):
        raise ValueError(f"fit=crop: {name} is {H}x{W}, smaller than the prior's {h}x{w} "
                         f"windows; use fit=resize (or fit=auto) for it")


# ---------------------------------------------------------------- planning windows
@dataclass(frozen=True)
class Box:
    """Rows [top, bottom) and columns [left, right) of an image."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def size(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def union(self, other: Box) -> Box:
        return Box(min(self.top, other.top), min(self.left, other.left),
                   max(self.bottom, other.bottom), max(self.right, other.right))

    def fits(self, window: Sequence[int]) -> bool:
        return self.size[0] <= window[0] and self.size[1] <= window[1]

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


@dataclass(frozen=True)
class Window:
    """One sampler call: the prior-size ``frame`` it sees, the ``core`` it writes back."""

    frame: Box
    core: Box


@dataclass(frozen=True)
class WindowPlan:
    windows: tuple[Window, ...]
    coarse: bool        # a cluster is larger than a window: run the coarse pass first


def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def hole_boxes(unknown: np.ndarray) -> list[Box]:
    """Bounding boxes of the 8-connected components of ``unknown`` (H, W) bool, in raster
    order of their first pixel. Union-find over the runs of each row: O(runs)."""
    parent: list[int] = []
    boxes: list[list[int]] = []
    previous: list[tuple[int, int, int]] = []   # (start, stop, run id) of the row above
    for r, row in enumerate(np.asarray(unknown, dtype=bool)):
        edges = np.diff(np.concatenate([[0], row.view(np.int8), [0]]))
        current = []
        p = 0
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1),
                               strict=True):
            run = len(parent)
            parent.append(run)
            boxes.append([r, int(start), r + 1, int(stop)])
            while p < len(previous) and previous[p][1] < start:   # ends left of our reach
                p += 1
            q = p
            while q < len(previous) and previous[q][0] <= stop:   # touches (diagonals too)
                a, b = _find(parent, run), _find(parent, previous[q][2])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                q += 1
            current.append((int(start), int(stop), run))
        previous = current
    merged: dict[int, Box] = {}
    for run, (t, left, b, right) in enumerate(boxes):
        root = _find(parent, run)
        box = Box(t, left, b, right)
        merged[root] = merged[root].union(box) if root in merged else box
    return [merged[k] for k in sorted(merged)]


def cluster_boxes(boxes: Sequence[Box], window: Sequence[int]) -> list[Box]:
    """Merge boxes whose joint bounding box still fits in ``window``, until none can be.

    Merged holes are sampled in one call, seeing each other's fill; holes that cannot share
    a window are sampled in turn instead. Boxes larger than a window stay as they are.
    Greedy in raster order, then passes over the clusters until nothing merges: O(boxes x
    clusters) per pass, so a mask of thousands of specks stays cheap.
    """
    clusters = sorted(boxes, key=lambda b: (b.top, b.left))
    merged = True
    while merged:
        merged, out = False, []
        for box in clusters:
            for i, cluster in enumerate(out):
                joint = cluster.union(box)
                if joint.fits(window):
                    out[i], merged = joint, True
                    break
            else:
                out.append(box)
        clusters = out
    return sorted(clusters, key=lambda b: (b.top, b.left))


def place_window(box: Box, window: Sequence[int], image_size: Sequence[int]) -> Box:
    """The ``window``-sized frame centred on ``box``, shifted to lie inside the image."""
    (h, w), (H, W) = tuple(window), tuple(image_size)
    top = min(max((box.top + box.bottom - h) // 2, 0), H - h)
    left = min(max((box.left + box.right - w) // 2, 0), W - w)
    return Box(top, left, top + h, left + w)


def _grid_cells(image_size: Sequence[int], window: Sequence[int], regions: Sequence[Box]):
    """Cells of half a window on a grid over the image, those meeting any of ``regions``, in
    raster order. Each cell's window (centred on it) keeps a quarter window of context all
    round, and the number of windows is bounded by the grid (4 H W / (h w)) whatever the
    hole's shape (every other row of a large image is a few hundred cells, not thousands)."""
    (H, W), (h, w) = tuple(image_size), tuple(window)
    ch, cw = max(h // 2, 1), max(w // 2, 1)
    cells = []
    for top in range(0, H, ch):
        for left in range(0, W, cw):
            cell = Box(top, left, min(top + ch, H), min(left + cw, W))
            if any(cell.top < r.bottom and r.top < cell.bottom and cell.left < r.right
                   and r.left < cell.right for r in regions):
                cells.append(cell)
    return cells


def plan_windows(mask: torch.Tensor, window: Sequence[int]) -> WindowPlan:
    """The windows that inpaint ``mask`` (1, H, W), 1 = known, in the order they run.

    First one window per cluster that fits a window (raster order); then, if some clusters are
    larger than a window, the grid cells that cover them (the coarse-to-fine part). A window
    whose core holds no hole pixel that an earlier window has not already written is dropped,
    so every call samples something and every hole pixel is written exactly once.
    """
    unknown = mask[0].detach().cpu().numpy() <= 0.5   # as RePaint: known means > 0.5
    image_size = unknown.shape
    clusters = cluster_boxes(hole_boxes(unknown), window)
    large = [c for c in clusters if not c.fits(window)]
    cores = [c for c in clusters if c.fits(window)] + _grid_cells(image_size, window, large)
    windows = []
    pending = unknown.copy()
    for core in cores:
        if pending[core.slices].any():
            windows.append(Window(place_window(core, window, image_size), core))
            pending[core.slices] = False
    return WindowPlan(tuple(windows), bool(large))


def count_calls(fits: Sequence[str], masks: Sequence[torch.Tensor], prior_size) -> int:
    """Sampler calls :func:`inpaint_items` makes for one batch of these items."""
    calls = int("resize" in fits)
    calls += len({tuple(m.shape[-2:]) for m, f in zip(masks, fits, strict=True) if f == "native"})
    plans = [plan_windows(m, prior_size) for m, f in zip(masks, fits, strict=True) if f == "crop"]
    calls += int(any(p.coarse for p in plans)) + max((len(p.windows) for p in plans), default=0)
    return calls


def window_generator(seed: int, image_index: int, sample_index: int, window_index: int,
                     device="cpu") -> torch.Generator:
    """The generator of window ``window_index`` of output (image, sample): (seed, i, k, j)."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(stream_seed(Stream.WINDOW, seed, image_index, sample_index,
                                      window_index))
    return generator


# ---------------------------------------------------------------- sampling
def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """(C, H, W) resized like ``images.to_model``: antialiased bicubic, clamped to [-1, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=tuple(size), mode="bicubic", antialias=True,
                         align_corners=False)[0].clamp(-1.0, 1.0)


def _coarse_input(x0: torch.Tensor, mask: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, mask) area-averaged to ``size`` over known pixels only: no hole value leaks in,
    and a small pixel is known only when every pixel it covers is."""
    known = (mask > 0.5).to(x0.dtype)
    weight = F.adaptive_avg_pool2d(known[None], tuple(size))[0]
    total = F.adaptive_avg_pool2d((x0 * known)[None], tuple(size))[0]
    small = torch.where(weight > 0, total / weight.clamp_min(1e-12), torch.zeros_like(total))
    return small, (weight > 1.0 - 1e-6).to(mask.dtype)


def _generators(seed, items, device):
    return item_generators(seed, [i for i, _ in items], [k for _, k in items], device)


def _sample_resized(sample: SampleFn, x0s, masks, idx, prior_size, seed, items, device, out):
    x = torch.stack([_resize(x0s[j], prior_size) for j in idx])
    m = torch.stack([resize_mask(masks[j], prior_size) for j in idx])
    result = sample(x, m, _generators(seed, [items[j] for j in idx], device), [items[j] for j in idx])
    for j, r in zip(idx, result, strict=True):
        back = F.interpolate(r[None].float(), size=tuple(x0s[j].shape[-2:]), mode="bicubic",
                             antialias=True, align_corners=False)[0].clamp(-1.0, 1.0)
        out[j] = torch.where(masks[j] > 0.5, x0s[j], back.to(x0s[j].dtype))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """(C, H, W) padded at the bottom and right up to sides that are multiples of ``multiple``,
    by reflection (edge replication where a side is too short to reflect): the UNet's
    downsamplings need such sides, and mirrored content is the context a photo's edge suggests.
    Cropping ``[..., :H, :W]`` undoes it."""
    H, W = x.shape[-2:]
    pad_h, pad_w = -H % multiple, -W % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < H and pad_w < W else "replicate"
    return F.pad(x[None].float(), (0, pad_w, 0, pad_h), mode=mode)[0].to(x.dtype)


def _sample_native(sample: SampleFn, x0s, masks, idx, seed, items, device, out, multiple):
    padded = {j: (pad_to_multiple(x0s[j], multiple), pad_to_multiple(masks[j], multiple))
              for j in idx}
    for shape in dict.fromkeys(tuple(padded[j][0].shape) for j in idx):
        group = [j for j in idx if tuple(padded[j][0].shape) == shape]
        its = [items[j] for j in group]
        result = sample(torch.stack([padded[j][0] for j in group]),
                        torch.stack([padded[j][1] for j in group]),
                        _generators(seed, its, device), its)
        for j, r in zip(group, result, strict=True):
            H, W = x0s[j].shape[-2:]
            out[j] = torch.where(masks[j] > 0.5, x0s[j], r[:, :H, :W].to(x0s[j].dtype))


def _sample_cropped(sample: SampleFn, x0s, masks, idx, prior_size, seed, items, device, out):
    plans = {j: plan_windows(masks[j], prior_size) for j in idx}
    state = {j: x0s[j].clone() for j in idx}
    pending = {j: masks[j][0] <= 0.5 for j in idx}   # hole pixels no window has written yet
    coarse = [j for j in idx if plans[j].coarse]
    if coarse:
        h, w = tuple(prior_size)
        warnings.warn(f"fit=crop: {len(coarse)} image(s) have holes larger than the prior's "
                      f"{h}x{w} window: filled coarse-to-fine (the whole image inpainted at "
                      f"{h}x{w} for the layout, then cells of half a window sampled in turn at "
                      f"the image's own resolution, the upsampled coarse fill standing in for "
                      f"the hole outside each cell)", FitWarning, stacklevel=3)
        # the layout of the large holes, at the prior's size; its fill becomes the guide
        small = [_coarse_input(x0s[j], masks[j], prior_size) for j in coarse]
        its = [items[j] for j in coarse]
        result = sample(torch.stack([s for s, _ in small]), torch.stack([m for _, m in small]),
                        _generators(seed, its, device), its)
        for j, r in zip(coarse, result, strict=True):
            guide = F.interpolate(r[None].float(), size=tuple(x0s[j].shape[-2:]), mode="bicubic",
                                  align_corners=False)[0].clamp(-1.0, 1.0)
            state[j] = torch.where(pending[j], guide.to(state[j].dtype), state[j])
    for n in range(max((len(p.windows) for p in plans.values()), default=0)):
        active = [j for j in idx if n < len(plans[j].windows)]
        crops, knowns, cores = [], [], []
        for j in active:
            window = plans[j].windows[n]
            rows, cols = window.frame.slices
            core = torch.zeros_like(pending[j])
            core[window.core.slices] = True
            core = core[rows, cols] & pending[j][rows, cols]
            # with a guide, only the core is unknown; without, every unwritten hole pixel is
            # (the others are sampled for context and discarded: their own window comes later)
            unknown = core if plans[j].coarse else pending[j][rows, cols]
            crops.append(state[j][:, rows, cols])
            knowns.append((~unknown)[None].to(masks[j].dtype))
            cores.append(core)
        its = [items[j] for j in active]
        generators = [window_generator(seed, i, k, n, device) for i, k in its]
        result = sample(torch.stack(crops), torch.stack(knowns), generators, its)
        for j, r, core in zip(active, result, cores, strict=True):
            rows, cols = plans[j].windows[n].frame.slices
            state[j][:, rows, cols] = torch.where(core, r.to(state[j].dtype), state[j][:, rows, cols])
            pending[j][rows, cols] &= ~core
    for j in idx:
        if pending[j].any():
            raise RuntimeError(f"fit=crop left {int(pending[j].sum())} hole pixels unsampled")
        out[j] = state[j]


def inpaint_items(sample: SampleFn, x0s: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                  fits: Sequence[str], prior_size: Sequence[int], *, seed: int = 0,
                  items: Sequence[tuple[int, int]] | None = None,
                  multiple: int = 1) -> list[torch.Tensor]:
    """Inpaint images of any sizes, each by its resolved fit (``crop``/``native``/``resize``).

    Args:
        sample: ``sample(x0 (B, C, h, w), mask (B, 1, h, w), generators, items) -> (B, C, h, w)``
            inpaints a batch (1 = known); ``items`` are the batch's (image, sample) indices.
        x0s: (C, H, W) images in [-1, 1]; masks: (1, H, W), 1 = known.
        items: (image index, sample index) of each output, for its random streams;
            default (i, 0).
        multiple: ``native`` images are padded to sides that are multiples of it (the
            UNet's :func:`size_multiple`) and cropped back.
    Returns each completion (C, H, W) at its input's size, known pixels equal to the input's.
    """
    n = len(x0s)
    if not (len(masks) == len(fits) == n):
        raise ValueError(f"{n} images, {len(masks)} masks and {len(fits)} fits: give one each")
    items = [(i, 0) for i in range(n)] if items is None else [tuple(t) for t in items]
    bad = sorted(set(fits) - {"crop", "native", "resize"})
    if bad:
        raise ValueError(f"fits {bad} are not resolved: pass each through resolve_fit first")
    device = x0s[0].device if n else torch.device("cpu")
    out: list[torch.Tensor | None] = [None] * n
    by_fit = {f: [j for j in range(n) if fits[j] == f] for f in ("resize", "native", "crop")}
    if by_fit["resize"]:
        _sample_resized(sample, x0s, masks, by_fit["resize"], prior_size, seed, items, device, out)
    if by_fit["native"]:
        _sample_native(sample, x0s, masks, by_fit["native"], seed, items, device, out, multiple)
    if by_fit["crop"]:
        _sample_cropped(sample, x0s, masks, by_fit["crop"], prior_size, seed, items, device, out)
    return out


def inpaint_any_size(model, diffusion, images, masks, *, prior_size: Sequence[int],
                     fit: str = "auto", seed: int = 0,
                     items: Sequence[tuple[int, int]] | None = None, **inpaint_kwargs):
    """:func:`priorpaint.sampling.inpaint` for images of any size (list of (C, H, W), or one
    (B, C, H, W) tensor) and masks (1, H, W) each, 1 = known; ``fit`` as in ``sample.py``.

    ``prior_size`` is the (h, w) the prior was trained at; ``inpaint_kwargs`` go to every
    ``inpaint`` call (sampler, steps, jump_length, ...). Returns a list (or a tensor when
    given one) of completions at the inputs' sizes, known pixels exact.
    """
    from .api import inpaint

    stacked = isinstance(images, torch.Tensor)
    fits = [resolve_fit(fit, x.shape[-2:], prior_size) for x in images]
    for j, (x, f) in enumerate(zip(images, fits, strict=True)):
        check_fit(f, x.shape[-2:], prior_size, name=f"image {j}")

    def sample(x0, mask, generators, _items):
        return inpaint(model, diffusion, x0, mask, generators=generators, **inpaint_kwargs)

    result = inpaint_items(sample, list(images), list(masks), fits, prior_size, seed=seed,
                           items=items, multiple=size_multiple(model) or 1)
    return torch.stack(result) if stacked else result
