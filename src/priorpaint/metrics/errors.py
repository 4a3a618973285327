"""The one error the metrics raise when a metric cannot be computed on this machine."""

from __future__ import annotations

__all__ = ["MetricUnavailable"]


class MetricUnavailable(RuntimeError):
    """A metric needs a file or package that is not here; the message says which and how to add it.

    Raised before any network is built, so a missing weight file never turns into a silent
    download (evaluation must run offline and give the same numbers everywhere).
    """
