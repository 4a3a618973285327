"""The Gradio page and its handlers (``python app.py``).

:class:`Page` holds what all visitors share (the config, the listed checkpoints and a cache
of the priors loaded from them, one cancel flag per visitor); what a visitor chose (the
prior, the image, the mask, the run and its results) lives in that visitor's session
(``gr.State`` and the components), so two tabs never see or use each other's prior. Its
handlers are plain methods: they take and return what the components hold (numpy arrays,
editor dicts, file paths), so tests call them without a browser. User errors become
``gr.Error`` (a message in the page that stays until closed), a ``❌`` line in the page until
the next action (:func:`shows_errors`) and one line in the server's log, never a traceback;
notes such as "the image is resized" stay in the note line and come as ``gr.Warning`` toasts.
Small images are shown enlarged nearest-neighbour by one whole factor everywhere (editor,
results, slider): crisp, and the editor's painting maps back block by block.

Offline by construction: analytics off, system fonts (the default theme's web fonts would
come from a CDN), no share link, and one sampling job at a time
(``queue(default_concurrency_limit=1)``); the light handlers (mask preview, budget) bypass
that limit so the page stays responsive while a job runs. Served files are only Gradio's
own (uploads, and copies of the outputs in its cache under unguessable names): the run
folders, checkpoints and examples are never served by path.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported

import queue  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..cli import USER_ERRORS, UserError, one_line  # noqa: E402
from ..imageio import list_images  # noqa: E402
from ..sampling.api import SAMPLERS  # noqa: E402
from ..sampling.fit import resolve_fit  # noqa: E402
from ..sampling.images import InputImage, comparison_grid, masked_view  # noqa: E402
from ..sampling.samplers import resolve_options  # noqa: E402
from .engine import (  # noqa: E402
    RunCancelled,
    RunRequest,
    estimate_seconds,
    page_options,
    plan_calls,
    run_inpainting,
)
from .inputs import (  # noqa: E402
    MASK_FILE,
    PAINTED,
    check_mask,
    for_prior,
    generated_mask,
    input_from_array,
    invert_mask,
    mask_choices,
    mask_from_file,
    mask_from_layers,
    read_file,
    size_note,
)
from .prior import LoadedPrior, describe_markdown, list_checkpoints, load  # noqa: E402

__all__ = ["Page", "build", "launch", "parse_steps", "visitor_error", "auth_pairs",
           "DEFAULT_SAMPLER_WHY"]

# why the page opens on DDNM at 100 calls (configs/app.yaml's sampler), in one line
DEFAULT_SAMPLER_WHY = (
    "Default **ddnm** (100 network calls): on held-out MNIST digits it scored as well as "
    "RePaint at 2410 calls (docs/results/inpainting_study/study.md).")


def _hide_paths(text: str, roots) -> str:
    """``text`` with every path under one of ``roots`` (server folders: Gradio's uploads,
    the temp dir, the runs and checkpoint folders) cut to its file name, so that a message a
    visitor reads names their file, not the server's layout."""
    for root in sorted({str(r).rstrip("/") for r in roots if r} - {""}, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"/[^\s,;:'\"()]*?([^/\s,;:'\"()]+)(?=[\s,;:'\"()]|$)",
                      r"\1", text)
    return text


def visitor_error(error, roots=()) -> gr.Error:
    """A user error as the page shows it (until closed, no server paths) and as the server
    logs it: ONE line on stderr, no traceback (Gradio prints one unless told not to)."""
    text = one_line(error) if isinstance(error, BaseException) else str(error)
    text = _hide_paths(text, (*roots, tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR")))
    print(f"app.py: user error: {text}", file=sys.stderr, flush=True)
    return gr.Error(text, duration=None, print_exception=False)


CANVAS_LABEL = "the image dropped on the editor"   # how notes name a canvas image
ERROR_MARK = "❌"   # an error in the page's lines (notes such as "resized" are ⚠)


def shows_errors(handler, n_outputs: int, at: int):
    """``handler`` for an event whose user errors stay readable in the page until the next
    action: on a ``gr.Error`` it first writes ``❌ message`` into output ``at`` (the page's
    status line), then re-raises (the toast, the one log line, an error to an API caller).
    Why: Gradio's toast can be closed or scroll away and its red badges carry no text; a
    line in the page is overwritten only by the next action, whose success clears it."""
    import functools
    import inspect

    generator = inspect.isgeneratorfunction(handler)

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            if generator:
                yield from handler(*args, **kwargs)
            else:
                yield handler(*args, **kwargs)
        except gr.Error as e:
            shown = [gr.skip()] * n_outputs
            shown[at] = f"{ERROR_MARK} {e.message}"
            yield tuple(shown) if n_outputs > 1 else shown[0]
            raise

    return wrapped


def auth_pairs(entries) -> list[tuple[str, str]] | None:
    """configs/app.yaml's ``auth:`` (``["user:password", ...]``, or null) as Gradio's
    ``launch(auth=...)`` pairs."""
    if entries in (None, "", "null"):
        return None
    if isinstance(entries, str):
        entries = [entries]
    pairs = []
    for entry in entries:
        user, sep, password = str(entry).partition(":")
        if not sep or not user or not password:
            raise UserError(f"auth= takes user:password pairs (e.g. auth=[alice:s3cret]); "
                            f"{str(entry)!r} is not one")
        pairs.append((user, password))
    return pairs or None


def _blank_or(kind, value):
    """A number box's value, or None when it is empty (= the config's value)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return kind(value)


def sampler_fields(name: str, cfg) -> tuple:
    """(jump length, resamplings, eta) the page shows for sampler ``name``: the config's value
    where ``python app.py key=value`` set one, else the sampler's default; None for a knob the
    sampler does not read. Why: a blank number box comes back from the browser as 0, which
    is a real (and for j, r invalid) value, so every box the sampler reads must hold one."""
    defaults = resolve_options(name)
    given = (cfg.get("jump_length"), cfg.get("jump_n_sample"), cfg.get("eta"))
    used = (defaults.jump_length, defaults.jump_n_sample, defaults.eta)
    return tuple(None if default is None else (value if value is not None else default)
                 for value, default in zip(given, used, strict=True))


def parse_steps(text) -> int | str:
    """The steps box: ``auto``, an int, or a respacing string such as ``ddim50``."""
    text = str(text).strip()
    if not text:
        return "auto"
    return int(text) if text.isdigit() else text


def _shown(pixels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 1) grey as (H, W): what Gradio's image components display."""
    pixels = np.asarray(pixels)
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels


def _same_pixels(background, image: InputImage) -> bool:
    """Whether the editor's background shows ``image`` (compared on RGB; the editor shows it
    enlarged by a whole factor, :func:`editor_factor`)."""
    shown = np.asarray(background)
    shown = shown[..., :3] if shown.ndim == 3 else np.repeat(shown[..., None], 3, -1)
    pixels = image.pixels if image.pixels.shape[-1] == 3 else np.repeat(image.pixels, 3, -1)
    k = shown.shape[0] // max(pixels.shape[0], 1)
    if k < 1 or shown.shape[:2] != (k * pixels.shape[0], k * pixels.shape[1]):
        return False
    return bool(np.array_equal(shown[::k, ::k], pixels))


# the editor's canvas: small images are enlarged to about this many pixels
EDITOR_SIDE = 448


def editor_factor(size) -> int:
    """The whole factor the editor shows an image of ``size`` (H, W) at: a 32x32 digit at
    14x (448 px), a 481x321 photo as it is. Why enlarge on the server: the editor's canvas
    scales its image smoothly, which blurs a 32x32 image to nothing; a nearest-neighbour
    enlargement is crisp, and the painted layer maps back block by block
    (``inputs.mask_from_layers``)."""
    return view_factor(size, EDITOR_SIDE)


def brush_default(image_size) -> int:
    """The brush (and eraser) radius in image pixels a page opens with: a sixteenth of the
    image (a stroke an eighth of it wide: 4 px on a 32x32 digit)."""
    return max(1, min(int(image_size[0]), int(image_size[1])) // 16)


def _brush(image_size, size: int | None = None) -> gr.Brush:
    """A magenta brush of radius ``size`` image pixels, in the editor's enlarged canvas
    pixels (Gradio's 'auto' is 1/50 of the canvas whatever the image)."""
    size = brush_default(image_size) if size in (None, 0) else int(size)
    return gr.Brush(default_size=size * editor_factor(image_size), colors=["#ff00ff"],
                    color_mode="fixed")


def _eraser(image_size, size: int | None = None) -> gr.Eraser:
    """The eraser, as large as the brush (Gradio's default is far larger on small images)."""
    size = brush_default(image_size) if size in (None, 0) else int(size)
    return gr.Eraser(default_size=size * editor_factor(image_size))


def _enlarged(pixels: np.ndarray, side: int = 192) -> np.ndarray:
    """A small image repeated nearest-neighbour up to about ``side`` pixels (for viewing)."""
    pixels = _shown(pixels)
    factor = max(1, side // max(pixels.shape[:2]))
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


def result_views(masked, samples, side: int = 256) -> dict:
    """The masked input and the samples as the page shows them: uint8, repeated
    nearest-neighbour by one common whole factor, so a 32x32 result is crisp (never blurred
    by the browser's smoothing) and the before/after pair has the same size."""
    factor = view_factor(np.asarray(masked).shape[:2], side)
    grow = lambda p: _shown(p).repeat(factor, axis=0).repeat(factor, axis=1)  # noqa: E731
    return {"masked": grow(masked), "samples": [grow(s) for s in samples], "factor": factor}


def view_factor(size, side: int = 256) -> int:
    """The whole factor that brings an image of ``size`` (H, W) to about ``side`` pixels (1
    for images already that large: they are shown as they are, fitted by the browser)."""
    return max(1, side // max(int(size[0]), int(size[1])))


def gallery_columns(n: int) -> int:
    """Columns for ``n`` results: a near-square grid, so every result fits its box whole."""
    return max(1, min(4, int(np.ceil(np.sqrt(n)))))


def by_prior_name(by_prior, checkpoint: str, default):
    """The value of the first pattern of ``by_prior`` (configs/app.yaml's ``*_by_prior``
    maps) that matches ``checkpoint``'s file name or stem (fnmatch), else ``default``."""
    from fnmatch import fnmatch

    name = Path(checkpoint).name
    for pattern, value in dict(by_prior or {}).items():
        if fnmatch(name, str(pattern)) or fnmatch(Path(name).stem, str(pattern)):
            return value
    return default


def example_images(by_prior, folder, checkpoint: str) -> list[str]:
    """The example images offered with ``checkpoint`` (its name in the page's list), by
    configs/app.yaml's rule: the folder of the first ``examples_by_prior`` pattern that
    matches the checkpoint's file name or stem (``mnist32: examples/mnist``,
    ``"photos*": examples/photos``), else the ``examples`` folder (the quickstart's digits).
    Why by name: a checkpoint does not record which images suit it, and its file name is
    what the person who set up the page chose. A folder that does not exist offers nothing
    (a prior's examples may come later)."""
    folder = by_prior_name(by_prior, checkpoint, folder)
    if folder in (None, "", "null") or not Path(str(folder)).is_dir():
        return []
    return [str(p) for p in list_images(Path(str(folder)), recursive=False)]


def checkpoint_label(name: str) -> str:
    """``run/b.ckpt`` as ``b.ckpt · in run/``: the file name first, its folder as a hint."""
    path = Path(name)
    return path.name if path.parent == Path(".") else f"{path.name} · in {path.parent}/"


def _seconds(value: float) -> str:
    if value != value:  # nan
        return "?"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


class Page:
    """What all visitors share: the config, the listed checkpoints and a cache of the priors
    loaded from them. A visitor's chosen prior is a name from :attr:`checkpoints` held in
    their session (``gr.State``) and passed to each handler; only listed names are loaded."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.options = page_options(cfg)   # every run's sample.py options, parsed once
        source = Path(str(cfg.ckpt))
        found = list_checkpoints(source)
        # shown and chosen by name (relative to the folder): no server path reaches the page
        self._paths = {(p.relative_to(source).as_posix() if source.is_dir() else p.name): p
                       for p in found}
        self.checkpoints = list(self._paths)
        self.runs = Path(str(cfg.get("runs") or "app_runs")).resolve()
        self._examples = {name: example_images(cfg.get("examples_by_prior"),
                                               cfg.get("examples"), name)
                          for name in self.checkpoints}
        # each prior's fit (fit_by_prior, else fit), checked now: a typo is one line at launch
        self._fits = {name: str(by_prior_name(cfg.get("fit_by_prior"), name, cfg.get("fit")))
                      for name in self.checkpoints}
        for fit in set(self._fits.values()):
            resolve_fit(fit, (1, 1), (1, 1))
        self._priors: dict[str, LoadedPrior] = {}
        self._loading = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._running: set[str] = set()   # visitors whose run is sampling now
        self.min_preview_seconds = 0.2     # at most five x̂_0 previews a second
        # downloads are copied here for Gradio to serve from its cache: the runs folder
        # itself is never on a served path (another visitor could guess a run's name)
        self._staging = tempfile.TemporaryDirectory(prefix="priorpaint-app-")
        self.default = self.checkpoints[0]
        self.prior(self.default)

    @property
    def examples(self) -> list[str]:
        """The examples of the page's first prior (what a new visitor sees)."""
        return self._examples[self.default]

    def examples_for(self, choice: str | None) -> list[str]:
        """The example images of listed checkpoint ``choice`` (configs/app.yaml's examples)."""
        return self._examples.get(self.default if choice in (None, "") else str(choice), [])

    def fit_for(self, choice: str | None) -> str:
        """How images of another size meet listed checkpoint ``choice``: the value of the
        first ``fit_by_prior`` pattern its name matches, else ``fit``. Why per prior: a 32x32
        digit prior is best given a 28x28 digit resized, but a 64x64 photo prior given a
        481x321 photo resized would fill the hole from a 64x64 thumbnail; photos want
        ``crop`` (windows at the photo's own resolution)."""
        return self._fits.get(self.default if choice in (None, "") else str(choice),
                              self.options.fit)

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """(label, value) for the checkpoint list: the file name, and the folder as a hint
        (the value stays the name relative to ckpt=, what a session holds)."""
        return [(checkpoint_label(name), name) for name in self.checkpoints]

    @property
    def private_roots(self) -> tuple[Path, ...]:
        """Server folders whose paths never appear in a visitor's message."""
        folder = Path(str(self.cfg.ckpt)).resolve()
        return (self.runs, folder if folder.is_dir() else folder.parent, Path.cwd())

    def _error(self, error) -> gr.Error:
        return visitor_error(error, self.private_roots)

    # ----------------------------------------------------------------------- the prior
    def prior(self, choice: str | None = None) -> LoadedPrior:
        """The loaded prior of listed checkpoint ``choice`` (None: the page's first), loaded
        once and shared; a name that is not listed is refused (a visitor's session or an
        API call cannot make the page open another file)."""
        choice = self.default if choice in (None, "") else str(choice)
        if choice not in self._paths:
            raise UserError(f"checkpoint {choice!r} is not one of this page's checkpoints; "
                            f"choose one of the list ({len(self.checkpoints)} offered)")
        with self._loading:
            if choice not in self._priors:
                self._priors[choice] = load(
                    self._paths[choice], device=self.options.device,
                    use_ema=self.options.use_ema,
                    time_batches=tuple(self.cfg.get("time_batches") or (1, 2)))
        return self._priors[choice]

    @property
    def loaded(self) -> LoadedPrior:
        """The page's first prior (what a new visitor starts with)."""
        return self.prior(self.default)

    def choose_checkpoint(self, choice: str, current: str | None = None) -> tuple[str, str]:
        """Dropdown handler: load ``choice`` for this visitor; (what it is, the new state)."""
        if not choice:
            raise self._error("choose a checkpoint")
        try:
            loaded = self.prior(choice)
        except USER_ERRORS as e:
            still = f"; the page still uses {current}" if current else ""
            raise self._error(f"{one_line(e)}{still}") from e
        return describe_markdown(loaded), choice

    def info(self, choice: str | None = None) -> str:
        return describe_markdown(self.prior(choice))

    # ----------------------------------------------------------------------- the image
    def take_upload(self, path, chosen: str | None = None) -> tuple:
        """File or example chosen: (editor value, source state, masked view, note)."""
        if path is None:
            return None, None, None, ""
        self.prior(chosen)   # an unlisted choice is refused before the file is read
        try:
            source = read_file(path)   # the file's own pixels; fitted to the prior at use
        except USER_ERRORS as e:
            raise self._error(e) from e
        image, note = self._fitted(source, chosen)
        if note:
            gr.Warning(note.removeprefix("⚠ "))
        return (self._editor(image), source,
                _enlarged(masked_view(image, torch.ones(1, *image.size))), note)

    @staticmethod
    def _editor(image: InputImage, brush: int | None = None):
        """The editor's value for ``image`` (what the prior sees, enlarged crisp by
        :func:`editor_factor`), its painting cleared, the brush and eraser at ``brush`` image
        pixels."""
        pixels = image.pixels if image.pixels.shape[-1] == 3 else np.repeat(image.pixels, 3, -1)
        k = editor_factor(image.size)
        pixels = pixels.repeat(k, axis=0).repeat(k, axis=1)
        return gr.update(value={"background": pixels, "layers": [], "composite": pixels},
                         brush=_brush(image.size, brush), eraser=_eraser(image.size, brush))

    def clear_mask(self, editor, source, chosen: str | None = None, brush=None):
        """Clear the painted stroke and keep the image (the editor's own trash button would
        remove the image too)."""
        if source is None and (editor or {}).get("background") is None:
            return gr.skip()
        return self._editor(self.current_input(editor, source, chosen), brush)

    def mask_kind_changed(self, kind, editor, source, chosen: str | None = None, brush=None):
        """A generated or uploaded mask replaces the stroke: clear it, so that the editor
        never shows a stroke the run would ignore."""
        if kind == PAINTED or not ((editor or {}).get("layers")):
            return gr.skip()
        return self.clear_mask(editor, source, chosen, brush)

    def set_brush(self, brush, editor, source, chosen: str | None = None):
        """The brush/eraser size slider (image pixels): the editor's tools at that size."""
        size = self._image_size(editor, source, chosen)
        return gr.update(brush=_brush(size, brush), eraser=_eraser(size, brush))

    def _image_size(self, editor, source, chosen) -> tuple[int, int]:
        if source is not None:
            return source.size
        background = (editor or {}).get("background")
        return np.asarray(background).shape[:2] if background is not None else \
            tuple(self.prior(chosen).prior.image_size)

    @staticmethod
    def brush_for(source):
        """The brush slider for a new image: its default size (a tenth of the image)."""
        return gr.skip() if source is None else brush_default(source.size)

    @staticmethod
    def take_mask_file(path):
        """A mask file uploaded: the page switches to it (kind ``file``)."""
        if path is None:
            return None, gr.skip()
        return str(path), MASK_FILE

    def _fitted(self, source: InputImage, chosen: str | None,
                label: str | None = None) -> tuple[InputImage, str]:
        """``source`` as prior ``chosen`` sees it, and the note the page shows about it (""
        if none): colour converted for a grey prior, grey repeated for an RGB one, another
        size (under the prior's :meth:`fit_for`). The note names the image by ``label``
        (default its file name)."""
        prior = self.prior(chosen).prior
        image, converted = for_prior(source, prior.channels, label)
        notes = [converted, size_note(image, prior.image_size, prior.channels,
                                      self.fit_for(chosen), label)]
        text = "; ".join(n for n in notes if n)
        return image, (f"⚠ {text}" if text else "")

    def take_canvas(self, editor, source: InputImage | None = None, chosen: str | None = None):
        """An image dropped (or uploaded) onto the editor itself: the note line says what the
        prior will see, as for an uploaded file -- colour converted to grey for a grey prior,
        grey repeated for an RGB one, another size. Why: the run converts the canvas without
        a word otherwise (``current_input``), and a visitor would find a grey result from a
        colour picture unexplained. The editor reports the page's own image (an upload or
        example it shows, enlarged) as an upload too: then the upload's note stays."""
        background = (editor or {}).get("background")
        if background is None:
            return ""
        if source is not None and (_same_pixels(background, source) or _same_pixels(
                background, for_prior(source, self.prior(chosen).prior.channels)[0])):
            return gr.skip()
        try:
            own = input_from_array(background, "canvas", 3)   # 3: its own colours, kept
        except USER_ERRORS as e:
            raise self._error(e) from e
        _, note = self._fitted(own, chosen, CANVAS_LABEL)
        if note:
            gr.Warning(note.removeprefix("⚠ "))
        return note

    def take_example(self, chosen: str | None = None, evt: gr.SelectData = None) -> tuple:
        index = getattr(evt, "index", None)
        examples = self.examples_for(chosen)
        if not isinstance(index, int) or not 0 <= index < len(examples):
            raise self._error(f"no example number {index!r}; click one of the examples")
        return self.take_upload(examples[index], chosen)

    def follow_prior(self, chosen: str | None, source: InputImage | None) -> tuple:
        """After a checkpoint is chosen: (its examples, the note and the editor for the image
        in hand, refitted to this prior: its size, grey or colour)."""
        examples = self.examples_for(chosen)
        gallery = gr.update(value=examples or None, visible=bool(examples))
        if source is None:
            return gallery, "", gr.skip()
        image, note = self._fitted(source, chosen)
        return gallery, note, self._editor(image)

    def current_input(self, editor, source: InputImage | None,
                      chosen: str | None = None) -> InputImage:
        """The image to inpaint: the uploaded file's own pixels (exact, alpha kept) while the
        editor shows them, else the editor's canvas (an image dropped on the editor)."""
        channels = self.prior(chosen).prior.channels
        background = (editor or {}).get("background")
        if source is not None:
            image = for_prior(source, channels)[0]
            if background is None or _same_pixels(background, image) or _same_pixels(
                    background, source):   # the editor may not yet show the refitted image
                return image
        if background is None:
            raise self._error("no image: upload one, pick an example, or drop one on the editor")
        try:
            return input_from_array(background, "canvas", channels)
        except USER_ERRORS as e:
            raise self._error(e) from e

    def current_mask(self, editor, image: InputImage, kind: str, seed, invert=False,
                     mask_path=None) -> torch.Tensor:
        """The mask of the run (1 = known, 0 = hole): the painted stroke, an uploaded mask
        file or a generated kind, inverted when asked."""
        try:
            if kind == PAINTED:
                mask = mask_from_layers((editor or {}).get("layers"), image.size)
            elif kind == MASK_FILE:
                if not mask_path:
                    raise ValueError("no mask file: upload one (white = known, black = the "
                                     "hole) or choose another mask")
                mask = mask_from_file(mask_path, image.size)
            else:
                mask = generated_mask(kind, image.size, int(seed or 0))
        except USER_ERRORS as e:
            raise self._error(e) from e
        return invert_mask(mask) if invert else mask

    def show_mask(self, editor, source, kind, seed, chosen: str | None = None, invert=False,
                  mask_path=None):
        """The masked input (hole grey) for the current image and mask choice."""
        if source is None and (editor or {}).get("background") is None:
            return None
        image = self.current_input(editor, source, chosen)
        return _enlarged(masked_view(image, self.current_mask(editor, image, kind, seed,
                                                              invert, mask_path)))

    # ----------------------------------------------------------------------- the budget
    def budget(self, sampler, steps, jump_length, jump_n_sample, n_samples,
               chosen: str | None = None) -> str:
        """Network calls per sample and the run's time estimated from the measured call."""
        loaded = self.prior(chosen)
        try:
            calls = plan_calls(loaded, self.options, sampler, parse_steps(steps),
                               _blank_or(int, jump_length), _blank_or(int, jump_n_sample))
        except USER_ERRORS as e:
            return f"⚠ {e}"
        n, batch = int(n_samples), self.options.batch_size
        seconds = estimate_seconds(loaded, calls, n, batch)
        per_call = loaded.call_seconds.get(1, float("nan"))
        # fit=crop (a photo larger than the prior): one sampler run per window around the hole
        windows = " per window" if self.fit_for(chosen) == "crop" else ""
        return (f"**{calls:,} network calls** per sample{windows} · {n} sample(s) in "
                f"{-(-n // batch)} batch(es) · about **{_seconds(seconds)}**{windows} on "
                f"{loaded.device} (one call measured at {per_call * 1000:.1f} ms)")

    # ----------------------------------------------------------------------- a run
    @staticmethod
    def _key(request) -> str:
        return getattr(request, "session_hash", None) or "local"

    def _event(self, request) -> threading.Event:
        return self._cancel.setdefault(self._key(request), threading.Event())

    def cancel(self, request: gr.Request = None) -> None:
        """Stop this visitor's run at its next network call. It writes no status itself: the
        run's own handler reports ``cancelled (…)`` once it has stopped, so the two updates
        cannot race for the status line (Gradio's ``cancels=`` could kill the handler before
        that report)."""
        self._event(request).set()

    def _downloads(self, paths) -> list[str]:
        """Copies of a run's downloads in a fresh private folder (Gradio then serves them from
        its cache under content-hashed names): the run folder is never a served path."""
        folder = Path(tempfile.mkdtemp(dir=self._staging.name))
        return [str(shutil.copy2(p, folder / Path(p).name)) for p in paths]

    def run(self, editor, source, kind, sampler, steps, jump_length, jump_n_sample, eta,
            n_samples, seed, chosen: str | None = None, invert=False, mask_path=None,
            history=None, request: gr.Request = None):
        """Generator handler: yields the :data:`RUN_OUTPUTS` while sampling.

        Progress is the page's own: one status line and one bar from the same report, so two
        counters cannot disagree (Gradio's progress overlay would cover the preview and the
        results and count on its own)."""
        loaded = self.prior(chosen)
        image = self.current_input(editor, source, chosen)
        mask = self.current_mask(editor, image, kind, seed, invert, mask_path)
        try:
            check_mask(mask)
        except ValueError as e:
            raise self._error(e) from e
        job = RunRequest(image=image, mask=mask, sampler=str(sampler), steps=parse_steps(steps),
                         jump_length=_blank_or(int, jump_length),
                         jump_n_sample=_blank_or(int, jump_n_sample), eta=_blank_or(float, eta),
                         n_samples=int(n_samples), seed=int(seed or 0),
                         fit=self.fit_for(chosen))
        try:
            plan_calls(loaded, self.options, job.sampler, job.steps, job.jump_length,
                       job.jump_n_sample, job.eta)
        except USER_ERRORS as e:
            raise self._error(e) from e
        cancel = self._event(request)
        cancel.clear()
        events: queue.Queue = queue.Queue()

        def work():
            try:
                result = run_inpainting(
                    loaded, job, self.options, self.runs, cancel=cancel,
                    preview_every=int(self.cfg.get("preview_every") or 25),
                    on_progress=lambda done, total: events.put(("progress", done, total)),
                    on_preview=lambda tiles, done: events.put(("preview", tiles, done)))
                events.put(("done", result))
            except BaseException as e:  # handed to the page below
                events.put(("error", e))

        worker = threading.Thread(target=work, name="priorpaint-sampling", daemon=True)
        worker.start()
        skip = gr.skip()
        out = dict.fromkeys(RUN_OUTPUTS, skip)

        def update(**changes):
            return tuple({**out, **changes}.values())

        speed = Speed()
        self._running.add(self._key(request))
        try:
            yield update(status="sampling: starting…", bar=progress_html(0, 1), preview=None,
                         gallery=[], compare=None,
                         files=None, button=gr.update(value=BUSY_LABEL, variant="secondary"))
            shown = previewed = 0.0
            total_calls = None
            while True:
                kind_, *payload = events.get()
                if kind_ == "progress":
                    done, total = payload
                    total_calls = total
                    now = time.perf_counter()
                    speed.tick(done, now)
                    if now - shown > 0.25 or done == total:
                        shown = now
                        yield update(status=progress_line(done, total, speed.elapsed(now),
                                                          speed.left(done, total)),
                                     bar=progress_html(done, total))
                elif kind_ == "preview":
                    tiles, done = payload
                    now = time.perf_counter()
                    # every preview_every calls, but not faster than the browser can show:
                    # a tiny prior's run would send hundreds a second and stall the page
                    if now - previewed >= self.min_preview_seconds or done == total_calls:
                        previewed = now
                        yield update(preview=_enlarged(np.asarray(comparison_grid([tiles]))))
                elif kind_ == "done":
                    result = payload[0]
                    views = result_views(masked_view(image, mask), result.samples)
                    gallery = gr.update(value=[(view, f"sample {k}") for k, view in
                                               enumerate(views["samples"])],
                                        columns=gallery_columns(len(result.samples)))
                    status = (f"done: {len(result.samples)} sample(s), "
                              f"{result.network_calls:,} network calls each, "
                              f"{_seconds(result.seconds)} · saved as `{result.run_dir.name}`")
                    files = self._downloads(result.downloads)
                    settings = {"sampler": job.sampler, "steps": str(steps),
                                "jump_length": job.jump_length,
                                "jump_n_sample": job.jump_n_sample, "eta": job.eta,
                                "n_samples": job.n_samples, "seed": job.seed}
                    past = remember(history, {
                        "label": f"{image.stem} · {job.sampler} · seed {job.seed} · "
                                 f"{result.network_calls:,} calls",
                        "views": views, "files": files, "status": status,
                        "settings": settings},
                        int(self.cfg.get("history") or 8))
                    yield update(status=status, bar="", gallery=gallery,
                                 compare=(views["masked"], views["samples"][0]), last=views,
                                 files=files, button=IDLE_BUTTON(), history=past,
                                 past=history_gallery(past))
                    return
                else:
                    error = payload[0]
                    if isinstance(error, RunCancelled):
                        gr.Info(f"run {error}")
                        yield update(status=f"cancelled ({error}); nothing was written", bar="",
                                     gallery=[], compare=None, files=None, button=IDLE_BUTTON())
                        return
                    if isinstance(error, USER_ERRORS):
                        raise self._error(error) from error
                    raise error
        finally:
            self._running.discard(self._key(request))
            if worker.is_alive():   # the page went away or the event was cancelled
                cancel.set()
                worker.join()

    @staticmethod
    def compare_sample(last, evt: gr.SelectData = None):
        """A result clicked in the gallery: the before/after slider shows that sample."""
        index = getattr(evt, "index", None)
        if not last or not isinstance(index, int) or not 0 <= index < len(last["samples"]):
            return gr.skip()
        return last["masked"], last["samples"][index]

    @staticmethod
    def reload_run(history, evt: gr.SelectData = None) -> tuple:
        """A run clicked in the history: its results, downloads and settings back on the page
        (the :data:`RELOAD_OUTPUTS`); the image in the editor stays as it is."""
        index = getattr(evt, "index", None)
        if not history or not isinstance(index, int) or not 0 <= index < len(history):
            return tuple(gr.skip() for _ in RELOAD_OUTPUTS)
        entry = history[index]
        views, settings = entry["views"], entry["settings"]
        shown = {
            "status": f"reloaded from the history: {entry['status']}",
            "gallery": gr.update(value=[(v, f"sample {k}") for k, v in
                                        enumerate(views["samples"])],
                                 columns=gallery_columns(len(views["samples"]))),
            "compare": (views["masked"], views["samples"][0]), "last": views,
            "files": entry["files"], **settings}
        return tuple(shown[name] for name in RELOAD_OUTPUTS)

    def busy(self, request: gr.Request = None) -> None:
        """A click on Inpaint while this visitor's run samples: say so (the run's own event
        ignores clicks until it ends; Gradio would otherwise drop the click silently)."""
        if self._key(request) in self._running:
            gr.Info("a run is in progress: wait for it to finish, or press Cancel to stop it")


# what page.run yields, in order (the outputs of the Inpaint event)
RUN_OUTPUTS = ("status", "bar", "preview", "gallery", "compare", "last", "files", "button",
               "history", "past")
# what Page.reload_run returns, in order (the outputs of a click in the history)
RELOAD_OUTPUTS = ("status", "gallery", "compare", "last", "files", "sampler", "steps",
                  "jump_length", "jump_n_sample", "eta", "n_samples", "seed")


def remember(history, entry: dict, keep: int) -> list[dict]:
    """This visitor's history with ``entry`` first, the ``keep`` newest runs only (each holds
    its shown images in the server's memory, so the list stays short)."""
    return [entry, *(history or [])][:max(1, keep)]


def history_gallery(history) -> list:
    """The history as the page shows it: one thumbnail (sample 0) and a label per run."""
    return [(entry["views"]["samples"][0], entry["label"]) for entry in history or []]
BUSY_LABEL = "Inpainting… (running)"


def IDLE_BUTTON():  # noqa: N802 (a constant made fresh: Gradio updates are dicts)
    return gr.update(value="Inpaint", variant="primary")


class Speed:
    """This run's measured speed: network calls per second since its first call.

    Why not the call timed at load: the first calls of a run pay for warm-up and the machine's
    load changes, so only the run's own pace predicts its end (the budget line before a run
    is the load-time estimate). The first call is the clock's start, so setup (writing the
    input, building the model) is not counted as sampling time.
    """

    def __init__(self):
        self.first: tuple[int, float] | None = None
        self.last: tuple[int, float] | None = None
        self.started = time.perf_counter()

    def tick(self, done: int, now: float) -> None:
        if self.first is None:
            self.first = (done, now)
        self.last = (done, now)

    def elapsed(self, now: float) -> float:
        return now - self.started

    def left(self, done: int, total: int) -> float:
        return seconds_left(done, total, *(self.first or (0, 0.0)), *(self.last or (0, 0.0)))


def seconds_left(done: int, total: int, first_done: int, first_time: float, last_done: int,
                 last_time: float) -> float:
    """Time to the run's end at the pace measured between two progress reports (nan until
    two distinct reports exist)."""
    if last_done <= first_done or last_time <= first_time:
        return float("nan")
    per_call = (last_time - first_time) / (last_done - first_done)
    return per_call * max(total - done, 0)


def progress_line(done: int, total: int, elapsed: float, left: float) -> str:
    """The status line during a run: the one counter the page shows."""
    estimate = "measuring speed…" if left != left else f"~{_seconds(left)} left"
    return (f"sampling: {done}/{total} network calls · {_seconds(elapsed)} elapsed · "
            f"{estimate} (at this run's measured speed)")


def progress_html(done: int, total: int) -> str:
    """One progress bar (an HTML ``<progress>``): filled to done/total."""
    return (f'<progress value="{int(done)}" max="{max(int(total), 1)}" '
            f'style="width:100%;height:14px" aria-label="network calls done"></progress>')


# tiny priors make tiny images: show their pixels, not a blur
CSS = ("#results img, #examples img, #history img, #compare img, #preview img, #masked img, #editor canvas "
       "{image-rendering: pixelated} "
       # the editor's trash button removes the image too: "clear mask (keep image)" replaces it
       "#editor button[aria-label='Clear canvas'] {display: none} "
       # a run's status line changes length many times a second: room for two lines keeps
       # the buttons around it from jumping under the pointer
       "#status {min-height: 3.2em} "
       # the results' box grows with their rows (Gradio caps a gallery at 55% of the window
       # and scrolls it, which cut off the second row of four samples)
       "#results .grid-wrap {max-height: none !important; min-height: 0 !important} "
       # the history: a row of small thumbnails, however few runs there are yet
       "#history .grid-wrap {min-height: 0 !important} "
       "#history .grid-container {grid-template-columns: repeat(auto-fill, 88px) !important;"
       " grid-auto-rows: 88px !important}")


def _theme():
    """The default look with system fonts: the stock theme loads Google Fonts from a CDN."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build(page: Page) -> gr.Blocks:
    """The page: prior on top, image and mask on the left, sampler and results on the right."""
    cfg = page.cfg
    # not queued behind a running sampling job; no progress badges (they would cover the
    # outputs, and an error left a red "Error" on them with no text: errors are written out)
    light = {"concurrency_limit": None, "show_progress": "hidden"}
    with gr.Blocks(title="priorpaint", analytics_enabled=False) as demo:
        gr.Markdown("## priorpaint: inpaint by hand\nUpload an image or pick an example, paint "
                    "the hole with the brush (painted = filled in) or choose a generated "
                    "mask, then **Inpaint**.")
        with gr.Row():
            checkpoint = gr.Dropdown(page.checkpoint_choices(), value=page.default,
                                     label="checkpoint", scale=1, elem_id="checkpoint",
                                     info=f"in {Path(str(cfg.ckpt)).name}/"
                                     if Path(str(cfg.ckpt)).is_dir() else None)
            with gr.Column(scale=2):
                info = gr.Markdown(page.info(), elem_id="prior-info")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="upload an image (PNG, JPEG, …)", type="filepath",
                                 elem_id="upload")
                # the chosen prior's own examples (configs/app.yaml's examples:), hidden if none
                examples = gr.Gallery(page.examples or None, label="examples (click one)",
                                      columns=8, height=110, allow_preview=False,
                                      visible=bool(page.examples), elem_id="examples")
                size = page.loaded.prior.image_size
                # a fixed 480 px high canvas, images enlarged crisp to fill it (editor_factor)
                editor = gr.ImageEditor(label="paint the hole (magenta = fill in)", type="numpy",
                                        format="png", image_mode="RGBA",
                                        sources=("upload", "clipboard"), brush=_brush(size),
                                        eraser=_eraser(size), layers=False, transforms=(),
                                        elem_id="editor", height=560)
                with gr.Row():
                    brush = gr.Slider(1, 64, step=1, value=brush_default(size),
                                      label="brush / eraser radius (image pixels)",
                                      elem_id="brush", scale=3)
                    clear = gr.Button("clear mask (keep image)", elem_id="clear-mask", scale=1,
                                      size="sm")
                kinds = mask_choices()
                with gr.Row():
                    mask_kind = gr.Dropdown(kinds, value=kinds[0][1], label="mask",
                                            elem_id="mask", scale=3)
                    invert = gr.Checkbox(False, label="invert mask (fill what is not painted)",
                                         elem_id="invert", scale=1)
                mask_file = gr.UploadButton("upload a mask file (white = known, black = hole)",
                                            type="filepath", file_types=["image", ".npy", ".pt"],
                                            size="sm", elem_id="mask-file")
                note = gr.Markdown("", elem_id="note")
                masked = gr.Image(label="masked input (hole grey)", format="png", height=200,
                                  interactive=False, elem_id="masked")
            with gr.Column():
                samplers = list(SAMPLERS)
                # every sampler one click away; the default (configs/app.yaml) says why
                sampler = gr.Radio(samplers, value=str(cfg.sampler) if str(cfg.sampler) in
                                   samplers else samplers[0], label="sampler",
                                   info=DEFAULT_SAMPLER_WHY if str(cfg.sampler) == "ddnm"
                                   else None, elem_id="sampler")
                with gr.Row():
                    steps = gr.Textbox(str(cfg.steps), label="steps (auto, N or ddimN)",
                                       elem_id="steps")
                    # the chosen sampler's values (sampler_fields); refreshed when it changes
                    j, r, e = sampler_fields(sampler.value, cfg)
                    jump_length = gr.Number(j, precision=0, interactive=j is not None,
                                            label="jump length (RePaint j, DDNM L)",
                                            elem_id="jump_length")
                    jump_n_sample = gr.Number(r, precision=0, interactive=r is not None,
                                              label="resamplings (RePaint / DDNM r)",
                                              elem_id="jump_n_sample")
                    eta = gr.Number(e, interactive=e is not None, label="eta (DDIM / DDNM)",
                                    elem_id="eta")
                with gr.Row():
                    n_samples = gr.Slider(1, int(cfg.get("max_samples") or 16), step=1,
                                          value=int(cfg.n_samples), label="samples",
                                          elem_id="n_samples")
                    seed = gr.Number(int(cfg.seed), precision=0, label="seed", elem_id="seed")
                budget = gr.Markdown(page.budget(sampler.value, steps.value, jump_length.value,
                                                 jump_n_sample.value, n_samples.value),
                                     elem_id="budget")
                with gr.Row():
                    go = gr.Button("Inpaint", variant="primary", elem_id="run")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                # Gradio's own tracker lives here alone: "queue: 1/2" while this visitor
                # waits for another's run, its timer while sampling; it covers nothing else
                waiting = gr.Markdown("", elem_id="queue")
                status = gr.Markdown("", elem_id="status")
                bar = gr.HTML("", elem_id="progress", padding=False)
                preview = gr.Image(label="predicted x̂₀ (preview)", format="png", height=160,
                                   interactive=False, elem_id="preview")
                # results: whole (object-fit contain in square cells, as many columns as
                # the count needs), crisp (enlarged nearest-neighbour), click one to enlarge
                # it and to compare it below
                gallery = gr.Gallery(label="results (known pixels exact; click to enlarge)",
                                     format="png", columns=2, height="auto",
                                     object_fit="contain", allow_preview=True, preview=False,
                                     elem_id="results")
                compare = gr.ImageSlider(label="before (hole grey) / after: drag to compare",
                                         format="png", interactive=False, max_height=360,
                                         elem_id="compare")
                files = gr.File(label="downloads: zip of the run, PNGs, mask, run.yaml",
                                file_count="multiple", interactive=False, elem_id="downloads")
                past = gr.Gallery(label="your recent runs (click one to bring back its results "
                                  "and settings)", format="png", columns=8, height=140,
                                  object_fit="contain", allow_preview=False, elem_id="history")

        # this visitor's own: the uploaded image and the chosen prior (a listed name)
        source = gr.State(None)
        chosen = gr.State(page.default)
        budget_fields = (sampler, steps, jump_length, jump_n_sample, n_samples)
        checkpoint.change(page.choose_checkpoint, [checkpoint, chosen], [info, chosen],
                          api_name="choose_checkpoint",
                          **{**light, "show_progress": "minimal"}).then(
            page.budget, [*budget_fields, chosen], budget, **light).then(
            page.follow_prior, [chosen, source], [examples, note, editor], **light)
        loaded = [editor, source, masked, note]
        # an image's errors stay in the note line (loaded[3]) until the next image
        upload.upload(shows_errors(page.take_upload, len(loaded), 3), [upload, chosen], loaded,
                      **light).then(page.brush_for, source, brush, **light)
        # an image dropped on the editor itself: the same note line (colour -> grey, size)
        editor.upload(shows_errors(page.take_canvas, 1, 0), [editor, source, chosen], note,
                      **light)
        examples.select(shows_errors(page.take_example, len(loaded), 3), chosen, loaded,
                        **light).then(page.brush_for, source, brush, **light)
        mask_path = gr.State(None)   # this visitor's uploaded mask file
        mask_inputs = [editor, source, mask_kind, seed, chosen, invert, mask_path]
        for trigger in (editor.change, mask_kind.change, seed.change, invert.change,
                        mask_path.change):
            trigger(page.show_mask, mask_inputs, masked, trigger_mode="always_last", **light)
        mask_file.upload(page.take_mask_file, mask_file, [mask_path, mask_kind], **light)
        mask_kind.change(page.mask_kind_changed, [mask_kind, editor, source, chosen, brush],
                         editor, **light)
        clear.click(page.clear_mask, [editor, source, chosen, brush], editor, **light)
        brush.release(page.set_brush, [brush, editor, source, chosen], editor, **light)
        def refresh_fields(name):
            return tuple(gr.update(value=v, interactive=v is not None)
                         for v in sampler_fields(name, cfg))

        # .input (a visitor's pick), not .change: a run reloaded from the history sets the
        # sampler and its own j, r, eta, which a refresh would overwrite
        sampler.input(refresh_fields, sampler, [jump_length, jump_n_sample, eta], **light)
        # One listener for the five fields, always_last: the light handlers run concurrently,
        # so five listeners could answer out of order and leave a stale budget on the page
        # (choosing RePaint also rewrites the jump fields, a second wave of changes).
        gr.on([box.change for box in budget_fields], page.budget, [*budget_fields, chosen],
              budget, trigger_mode="always_last", **light)
        # a click during this visitor's run is answered (the run's own event ignores it)
        go.click(page.busy, None, None, **light)
        last = gr.State(None)   # this visitor's last result, as shown (for the slider)
        history = gr.State([])  # this visitor's recent runs (newest first)
        outputs = {"status": status, "bar": bar, "preview": preview, "gallery": gallery,
                   "compare": compare, "last": last, "files": files, "button": go,
                   "history": history, "past": past, "sampler": sampler, "steps": steps,
                   "jump_length": jump_length, "jump_n_sample": jump_n_sample, "eta": eta,
                   "n_samples": n_samples, "seed": seed}
        past.select(page.reload_run, history, [outputs[name] for name in RELOAD_OUTPUTS],
                    **light)
        gallery.select(page.compare_sample, last, compare, **light)
        # Gradio's own progress only on its line (#queue): a queued visitor sees "queue: 1/1"
        # there, and nothing covers the status, the preview or the results
        go.click(shows_errors(page.run, len(RUN_OUTPUTS), RUN_OUTPUTS.index("status")),
                 [editor, source, mask_kind, sampler, steps, jump_length,
                            jump_n_sample, eta, n_samples, seed, chosen, invert, mask_path,
                            history],
                 [outputs[name] for name in RUN_OUTPUTS], api_name="inpaint",
                 show_progress="full", show_progress_on=[waiting]).then(
            IDLE_BUTTON, None, go, **light)   # also after an error: the button is free again
        stop.click(page.cancel, None, None, queue=False)
    return demo


def launch(cfg, block: bool = True):
    """Build and serve the page as configured (configs/app.yaml); returns the local URL."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, "ckpt") or cfg.get("ckpt") in (None, ""):
        raise ValueError("ckpt= is required: a checkpoint file, or a folder of .ckpt files "
                         "to choose from (e.g. ckpt=outputs/)")
    if cfg.get("num_threads"):
        import torch

        torch.set_num_threads(int(cfg.num_threads))
    auth = auth_pairs(cfg.get("auth"))   # checked before the (slow) prior loading
    page = Page(cfg)
    demo = build(page)
    demo.queue(default_concurrency_limit=1)   # several visitors queue; one job samples
    port = None if cfg.get("port") in (None, "", "null") else int(cfg.port)
    # Nothing is served by path: no allowed_paths (outputs reach the browser as copies in
    # Gradio's cache), and the checkpoints are blocked outright.
    _, url, _ = demo.launch(server_name=str(cfg.host), server_port=port, share=False,
                            auth=auth, inbrowser=False,
                            blocked_paths=[str(p.resolve()) for p in page._paths.values()],
                            theme=_theme(),
                            footer_links=["settings"], css=CSS, ssr_mode=False, mcp_server=False,
                            prevent_thread_lock=True, quiet=True)
    # quiet: Gradio's own banner ends with a hint to set share=True, which this page never
    # does (a public link would bypass host= and auth=); the address is all a user needs
    print(f"app.py: the page is at {url} (Ctrl+C stops it)", flush=True)
    if block:
        demo.block_thread()
    return demo, url
