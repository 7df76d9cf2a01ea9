"""fxns: find the layer where a quantized PyTorch model departs from its float twin.

Trace both models with ``torch.fx``, align their operations by structure,
instrument copies with loggers (propagated error) or float shadows (each
layer's own error), run them on PyTorch's quantized CPU kernels, and report
per-layer SQNR, cosine similarity, MSE and maximum error.

Example:
    >>> import fxns
    >>> report = fxns.compare_activations(f, q, batches)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .compare import (
    add_loggers,
    add_shadows,
    collect,
    compare_activations,
    compare_variants,
    compare_weights,
)
from .diff import GraphDiff, diff
from .errors import (
    DataError,
    FxnsError,
    InstrumentError,
    MetricError,
    ModelError,
    TraceError,
)
from .match import Matching, Pair, match
from .report import LayerResult, Report, VariantReport
from .stats import METRICS

__all__ = [
    "METRICS",
    "DataError",
    "FxnsError",
    "GraphDiff",
    "InstrumentError",
    "LayerResult",
    "Matching",
    "MetricError",
    "ModelError",
    "Pair",
    "Report",
    "TraceError",
    "VariantReport",
    "__version__",
    "add_loggers",
    "add_shadows",
    "collect",
    "compare_activations",
    "compare_variants",
    "compare_weights",
    "diff",
    "match",
]
