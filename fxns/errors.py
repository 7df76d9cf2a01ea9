"""The exceptions fxns raises for mistakes a user can fix.

Every error fxns raises on purpose derives from :class:`FxnsError`, so one
``except fxns.FxnsError`` catches them all. Each subclass also derives from the
built-in exception that fits it best (``TypeError``, ``ValueError``, ...), so
code written against the built-ins keeps working. Messages name the offending
object (module path, node, argument) and say what to do next.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "FxnsError",
    "InstrumentError",
    "MetricError",
    "ModelError",
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


class MetricError(FxnsError, KeyError):
    """A metric or column name that fxns does not know."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better unquoted.
        return str(self.args[0]) if self.args else ""
