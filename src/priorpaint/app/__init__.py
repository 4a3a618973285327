"""The inpainting web page (``python app.py``): paint a hole, pick a prior and a sampler, watch.

Layout: ``prior`` (load a checkpoint, say what it is, time a network call), ``inputs``
(uploads, painted and generated masks), ``engine`` (one run through sample.py's prepare and execute,
with progress, x̂_0 previews and cancelling), ``ui`` (the Gradio page and its handlers). Only
``ui`` imports Gradio, so everything below it is testable and usable without a browser.
"""

from .engine import RunCancelled, RunRequest, RunResult, estimate_seconds, plan_calls, run_inpainting
from .inputs import generated_mask, input_from_array, mask_from_layers, read_upload
from .prior import LoadedPrior, describe, list_checkpoints, load

__all__ = [
    "LoadedPrior", "load", "describe", "list_checkpoints",
    "read_upload", "input_from_array", "mask_from_layers", "generated_mask",
    "RunRequest", "RunResult", "RunCancelled", "run_inpainting", "plan_calls", "estimate_seconds",
]
