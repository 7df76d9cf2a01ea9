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
    ArgumentError,
    DataError,
    DistributedError,
    EngineError,
    FxnsError,
    InstrumentError,
    MetricError,
    ModelError,
    ReportError,
    RowError,
    TraceError,
)
from .match import Matching, Pair, match
from .report import LayerResult, Report, VariantReport
from .sensitivity import sensitivity
from .stats import METRICS
from .variants import FloatLayer

__all__ = [
    "METRICS",
    "ArgumentError",
    "DataError",
    "DistributedError",
    "EngineError",
    "FloatLayer",
    "FxnsError",
    "GraphDiff",
    "InstrumentError",
    "LayerResult",
    "Matching",
    "MetricError",
    "ModelError",
    "Pair",
    "Report",
    "ReportError",
    "RowError",
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
    "sensitivity",
]
