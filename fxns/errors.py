"""The exceptions fxns raises for mistakes a user can fix.

Every error fxns raises on purpose derives from :class:`FxnsError`, so one
``except fxns.FxnsError`` catches them all. Each subclass also derives from the
built-in exception that fits it best (``TypeError``, ``ValueError``, ...), so
code written against the built-ins keeps working. Messages name the offending
object (module path, node, argument) and say what to do next.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "DataError",
    "DistributedError",
    "EngineError",
    "FxnsError",
    "InstrumentError",
    "MetricError",
    "ModelError",
    "ReportError",
    "RowError",
    "TraceError",
]


class FxnsError(Exception):
    """Base class of every error fxns raises for a mistake the user can fix."""


class ModelError(FxnsError, TypeError):
    """A model argument is not something fxns can compare.

    Raised for objects that are not ``torch.nn.Module`` instances, and for
    models whose outputs cannot be compared.
    """


class TraceError(FxnsError, RuntimeError):
    """``torch.fx`` could not trace a model.

    The message names the innermost module that was being traced and how to
    mark it as a leaf (``leaf_modules=`` or ``leaf_module_names=``) so that it
    is kept as one opaque operation.
    """


class DataError(FxnsError, ValueError):
    """The data given to a comparison is empty, malformed, or does not fit the
    models (wrong type, wrong shape)."""


class InstrumentError(FxnsError, RuntimeError):
    """An instrumented model could not be built or failed while running."""


class EngineError(FxnsError, RuntimeError):
    """The selected quantized engine (``torch.backends.quantized.engine``)
    cannot run an operation of the quantized model.

    The message names the operation, the engine, and the engines to try.
    """


class ArgumentError(FxnsError, ValueError):
    """An option that fxns does not accept: an unknown ``mode``, an
    ``input_fn`` that is not callable, a ``top`` that is not a number, ..."""


class ReportError(FxnsError, ValueError):
    """A saved report that cannot be read: not JSON, not a report, or written
    by a newer fxns."""


class DistributedError(FxnsError, RuntimeError):
    """The processes of a ``torch.distributed`` group disagree: they compared
    different models, or one of them failed."""


class MetricError(FxnsError, KeyError):
    """A metric or column name that fxns does not know."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better unquoted.
        return str(self.args[0]) if self.args else ""


class RowError(FxnsError, KeyError):
    """A row (layer) name that is not in the report."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
