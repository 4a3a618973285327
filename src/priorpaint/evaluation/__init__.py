"""Evaluation: the metrics of ``priorpaint.metrics`` applied to sampler outputs on disk.

Data flow: a ``sample.py`` folder (``run.yaml`` + outputs) -> :func:`evaluate_run` (per-output
rows and a summary) -> metrics.json / metrics.csv. :func:`run_ablation` samples one folder per
RePaint setting at a fixed network-call budget and tabulates their summaries. ``evaluate.py``
is :func:`cli.run`.
"""

from .ablation import Setting, ablation_settings, fit_steps, network_calls, run_ablation
from .heldout_nll import load_heldout, nll_on_images
from .run_folder import RUN_RECORD, Evaluation, evaluate_run, read_run, to_tensor
from .suite import MetricOptions, MetricSuite
from .table import format_table, write_rows

__all__ = [
    "MetricOptions", "MetricSuite",
    "RUN_RECORD", "Evaluation", "read_run", "evaluate_run", "to_tensor",
    "load_heldout", "nll_on_images",
    "Setting", "network_calls", "fit_steps", "ablation_settings", "run_ablation",
    "format_table", "write_rows",
]
