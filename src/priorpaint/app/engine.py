"""One inpainting run of the page, on sample.py's own engine.

A run is what ``python sample.py ckpt=C images=input/<stem>.png mask=mask.png out=<run dir>
seed=S ...`` would do: the page saves the input and the mask, makes its ``RunOptions`` (the
app's sample.yaml keys, parsed once when the page starts, with the visitor's fields replaced)
and calls the runner's two halves, ``run.prepare`` and ``run.execute``. So the outputs, the
seed scheme ``item_generators(seed, image 0, sample k)``, the known-pixel paste and
``run.yaml`` are sample.py's, and that command reproduces a page run bit for bit. The page
adds only its UI concerns: a monitoring callback (:class:`Monitor`: progress, an x̂_0 preview
every few dozen network calls, cancelling), the run folder and its zip.
"""

from __future__ import annotations

import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from ..imageio import read_pixels
from ..sampling.images import InputImage, from_model
from ..sampling.loop import LoopContext, Progress
from ..sampling.options import RunOptions, plan
from ..sampling.run import execute, network_calls, prepare
from .inputs import save_input, save_mask
from .prior import LoadedPrior

__all__ = ["RunRequest", "RunResult", "RunCancelled", "Monitor", "run_inpainting", "plan_calls",
           "estimate_seconds", "page_options", "request_options"]

# one sampling job at a time in this process, whatever the web server's queue does
_ONE_RUN = threading.Lock()


class RunCancelled(Exception):
    """Raised inside the sampling loop when the user pressed Cancel."""


@dataclass
class RunRequest:
    """What the page asks for (the rest comes from the app's config, sample.yaml's keys)."""

    image: InputImage
    mask: torch.Tensor          # (1, H, W) at the image's size, 1 = known, 0 = hole
    sampler: str = "repaint"
    steps: int | str = "auto"
    jump_length: int | None = None     # None: the config's value (see sampler_overrides)
    jump_n_sample: int | None = None
    eta: float | None = None
    n_samples: int = 1
    seed: int = 0
    fit: str | None = None      # None: the config's ``fit`` (the page: its prior's, fit_for)


@dataclass
class RunResult:
    run_dir: Path
    samples: list[np.ndarray]   # uint8 (H, W, C) as written, known pixels = the input's
    sample_files: list[Path]
    mask_file: Path
    input_file: Path
    record: Path
    grid: Path
    archive: Path               # zip of the whole run folder
    network_calls: int          # per sample (sample.py's network_calls_per_sample)
    seconds: float

    @property
    def downloads(self) -> list[Path]:
        return [self.archive, *self.sample_files, self.mask_file, self.record]


# configs/app.yaml keys that are the page's own, not sample.py's (kept out of run.yaml)
APP_KEYS = ("port", "host", "auth", "runs", "examples", "examples_by_prior", "fit_by_prior",
            "preview_every",
            "max_samples", "time_batches", "history")


def page_options(cfg) -> RunOptions:
    """The app's config (configs/app.yaml: sample.yaml's keys and the page's own) as the
    ``RunOptions`` every page run starts from; parsed once, when the page starts."""
    return RunOptions.from_config(cfg)


def request_options(base: RunOptions, sampler: str, steps, jump_length=None,
                    jump_n_sample=None, eta=None) -> RunOptions:
    """``base`` with the page's sampler fields; a blank (None) field keeps base's value
    (sample.yaml's default, or what ``python app.py key=value`` set)."""
    knobs = {key: value for key, value in (("jump_length", jump_length),
                                            ("jump_n_sample", jump_n_sample), ("eta", eta))
             if value is not None}
    return replace(base, sampler=str(sampler), steps=base.steps if steps is None else steps,
                   knobs=replace(base.knobs, **knobs))


def plan_calls(loaded: LoadedPrior, base: RunOptions, sampler: str, steps, jump_length=None,
               jump_n_sample=None, eta=None) -> int:
    """Network calls per sample for these settings (a ValueError for impossible ones)."""
    options = request_options(base, sampler, steps, jump_length, jump_n_sample, eta)
    return plan(options, loaded.prior, conditional=True).calls


def estimate_seconds(loaded: LoadedPrior, calls: int, n_samples: int, batch_size: int) -> float:
    """calls x the measured time of one call, summed over the run's batches.

    The time of a batch of b is interpolated linearly from the calls timed at load
    (batch 1 and 2: fixed cost + per-item cost); with a single timing, it scales with b.
    """
    timed = sorted(loaded.call_seconds.items())
    if not timed:
        return float("nan")
    (b1, t1), (b2, t2) = timed[0], timed[-1]
    per_item = (t2 - t1) / (b2 - b1) if b2 != b1 else t1 / b1
    per_item = max(per_item, 0.0)
    sizes = [min(batch_size, n_samples - start) for start in range(0, n_samples, batch_size)]
    return calls * sum(max(t1 + per_item * (b - b1), 0.0) for b in sizes)


class Monitor(Progress):
    """Counts network calls, stops the loop on cancel, and previews x̂_0 every few dozen calls.

    Previews come at calls 1, 1 + every, ... and at the last call, whose x̂_0 is the result's
    hole (the last ancestral step returns x̂_0). A preview costs no extra network call: a
    forward hook on the network keeps the input and output of the call to preview, and x̂_0
    is the diffusion's own ``predict_xstart`` of that output (clipped to [-1, 1]) at the
    step's index.
    """

    def __init__(self, network: torch.nn.Module, total: int, *, image_size, out_channels: int,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_preview: Callable[[list[np.ndarray], int], None] | None = None,
                 cancel: threading.Event | None = None, preview_every: int = 25):
        super().__init__(total=total, disable=True)
        self.total, self.on_progress, self.on_preview = total, on_progress, on_preview
        self.cancel, self.every = cancel, max(1, int(preview_every))
        self.image_size, self.out_channels = tuple(image_size), out_channels
        self._armed, self._captured, self._diffusion = False, None, None
        self._hook = network.register_forward_hook(self._keep) if on_preview else None

    def _keep(self, module, args, output) -> None:
        if self._armed:
            self._captured, self._armed = (args[0], output), False

    def setup(self, context: LoopContext) -> None:
        self._diffusion = context.diffusion

    def before_step(self, x: torch.Tensor, step) -> torch.Tensor:
        if self._hook is not None and step.calls_network and (
                self.calls % self.every == 0 or self.calls == self.total - 1):
            self._armed = True   # every few dozen calls, and the last call (x̂_0 ≈ the result)
        return x

    def after_step(self, x: torch.Tensor, step) -> torch.Tensor:
        if not step.calls_network:
            return x
        self.calls += 1
        if self.cancel is not None and self.cancel.is_set():
            raise RunCancelled(f"cancelled after {self.calls} of {self.total} network calls")
        if self.on_progress is not None:
            self.on_progress(self.calls, self.total)
        if self._captured is not None:
            x_in, out = self._captured
            self._captured = None
            self.on_preview(self._preview(x_in, out, step.t), self.calls)
        return x

    def _preview(self, x_in: torch.Tensor, out: torch.Tensor, t: int) -> list[np.ndarray]:
        channels = x_in.shape[1]
        index = torch.full((x_in.shape[0],), int(t), device=x_in.device, dtype=torch.long)
        x0 = self._diffusion.predict_xstart(out[:, :channels].float(), x_in.float(), index)
        return [from_model(item.clamp(-1.0, 1.0), self.image_size, self.out_channels)
                for item in x0]

    def close(self) -> None:
        super().close()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _new_run_dir(runs: Path, stem: str) -> Path:
    runs.mkdir(parents=True, exist_ok=True)
    base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{stem}"
    for n in range(1000):
        candidate = runs / (base if n == 0 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot make a new run folder under {runs}")


def run_inpainting(loaded: LoadedPrior, request: RunRequest, base: RunOptions, runs,
                   *, on_progress=None, on_preview=None, cancel: threading.Event | None = None,
                   preview_every: int = 25) -> RunResult:
    """Inpaint ``request`` into a new folder under ``runs`` (removed again if cancelled);
    ``base``: the page's options (:func:`page_options`)."""
    with _ONE_RUN:
        run_dir = _new_run_dir(Path(str(runs)), request.image.stem)
        try:
            return _run(loaded, request, base, run_dir, on_progress, on_preview, cancel,
                        preview_every)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _run(loaded, request, base: RunOptions, run_dir: Path, on_progress, on_preview, cancel,
         preview_every) -> RunResult:
    started = time.perf_counter()
    input_file = save_input(request.image, run_dir / "input")
    mask_file = save_mask(request.mask, run_dir / "mask.png")
    options = replace(
        request_options(base, request.sampler, request.steps, request.jump_length,
                        request.jump_n_sample, request.eta),
        ckpt=str(loaded.path), images=str(input_file), mask=str(mask_file), out=str(run_dir),
        overwrite=False, n_samples=int(request.n_samples), seed=int(request.seed),
        use_ema=loaded.use_ema, device=str(loaded.device), progress=False,
        **({"fit": request.fit} if request.fit is not None else {}))
    # sample.py's own preparation: it reads the saved files back as sample.py reads them
    job = prepare(options, loaded.prior, loaded.device, ckpt_sha256=loaded.sha256)
    image = job.inputs[0]
    channels = image.pixels.shape[-1]
    monitor = Monitor(loaded.prior.model, network_calls(job), image_size=image.size,
                      out_channels=channels, on_progress=on_progress, on_preview=on_preview,
                      cancel=cancel, preview_every=preview_every)
    sample_files = execute(job, monitor)
    archive = run_dir.parent / f"{run_dir.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for file in sorted(run_dir.rglob("*")):
            if file.is_file():
                z.write(file, Path(run_dir.name) / file.relative_to(run_dir))
    return RunResult(run_dir, [read_pixels(p, channels) for p in sample_files], sample_files,
                     mask_file, input_file, job.record, run_dir / f"{image.stem}_grid.png",
                     archive, job.plan.calls, time.perf_counter() - started)
