"""The optional feature networks of an evaluation (LPIPS, Inception), loaded once per command.

A metric whose weight file is not configured is skipped, and the reason (with how to provide
the file) travels into the summary; a configured file that is missing or wrong is an error
before any work starts: the user asked for that metric, so silently leaving it out would
produce a table that looks complete but is not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import torch

from ..devices import resolve_device
from ..metrics import InceptionMetrics, MetricUnavailable, load_inception, load_lpips

__all__ = ["MetricOptions", "MetricSuite"]


@dataclass
class MetricOptions:
    """The metric keys of ``configs/evaluate.yaml`` (paths are local files, never downloaded)."""

    lpips_weights: str | None = None
    lpips_net: str = "alex"
    lpips_linear_weights: str | None = None
    inception_weights: str | None = None
    inception_feature: int = 2048
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    device: str = "auto"

    @classmethod
    def from_config(cls, cfg) -> MetricOptions:
        """The fields present in ``cfg`` (a DictConfig or mapping); the rest keep defaults."""
        values = {f.name: cfg[f.name] for f in fields(cls) if cfg.get(f.name) is not None}
        for key in ("lpips_weights", "lpips_linear_weights", "inception_weights", "lpips_net",
                    "device"):
            if key in values:
                values[key] = str(values[key])
        for key in ("inception_feature", "kid_subsets", "kid_subset_size"):
            if key in values:
                values[key] = int(values[key])
        return cls(**values)


def _unset_reason(loader) -> str:
    """The loader's own MetricUnavailable text for an unset path (says what to pass)."""
    try:
        loader(None)
    except MetricUnavailable as err:
        return str(err)
    return "no weight file configured"


class MetricSuite:
    """LPIPS network and Inception feature accumulator, or the reasons they are skipped.

    Attributes: ``lpips`` (module or None), ``inception`` (:class:`InceptionMetrics` or None;
    call ``reset()`` between evaluated sets), ``skipped`` ({metric: reason}), ``device``.
    """

    def __init__(self, options: MetricOptions | None = None):
        self.options = options or MetricOptions()
        self.device = resolve_device(self.options.device)
        self.skipped: dict[str, str] = {}
        self.lpips: torch.nn.Module | None = None
        self.inception: InceptionMetrics | None = None
        if self.options.lpips_weights is None:
            self.skipped["lpips"] = _unset_reason(lambda path: load_lpips(
                path, self.options.lpips_net))
        else:
            self.lpips = load_lpips(self.options.lpips_weights, self.options.lpips_net,
                                    self.options.lpips_linear_weights, self.device)
        if self.options.inception_weights is None:
            self.skipped["fid_kid"] = _unset_reason(load_inception)
        else:
            self.inception = InceptionMetrics(
                self.options.inception_weights, self.options.inception_feature, self.device,
                kid_subsets=self.options.kid_subsets,
                kid_subset_size=self.options.kid_subset_size)

    @classmethod
    def from_config(cls, cfg) -> MetricSuite:
        return cls(MetricOptions.from_config(cfg))

    def without_features(self, reason: str) -> MetricSuite:
        """This suite with LPIPS and Inception left out for ``reason`` (data they cannot
        take, e.g. 2-channel arrays): the skips say so instead of a number."""
        bare = copy.copy(self)
        bare.lpips, bare.inception = None, None
        bare.skipped = {**self.skipped, "lpips": f"LPIPS left out: {reason}",
                        "fid_kid": f"FID/KID left out: {reason}"}
        return bare
