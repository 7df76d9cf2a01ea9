"""Quantizing a float model with PyTorch's FX graph mode, for fxns's own use.

The demo, the command line and the sensitivity analysis need a quantized
model when the user gives only a float one. :func:`quantize_fx` runs
``prepare_fx``, calibration and ``convert_fx`` on a copy, with the
deprecation warnings that ``torch.ao.quantization`` raises silenced here, where
fxns itself triggers them, and nowhere else.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import fx, nn

from .errors import FxnsError

__all__ = ["BACKENDS", "quantize_fx", "quiet_torch_ao"]

# Static backends take a calibration pass; "dynamic" quantizes weights only.
BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn", "dynamic")


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation and observer warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
        warnings.filterwarnings(
            "ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel"
        )
        yield


def quantize_fx(
    model: nn.Module,
    calibration: Iterable[Any],
    backend: str = "x86",
) -> fx.GraphModule:
    """A quantized copy of ``model`` made with ``prepare_fx``/``convert_fx``.

    Args:
        model: the float model; it is copied, never changed.
        calibration: batches (tensors or tuples of model arguments) to
            calibrate the observers on; the first one is the example input.
        backend: ``x86``, ``fbgemm``, ``qnnpack``, ``onednn`` (static int8) or
            ``dynamic`` (int8 weights, activations quantized on the fly).
            The model runs on whatever ``torch.backends.quantized.engine``
            is set to; this function does not change it.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
        >>> q = quantize_fx(model, [torch.randn(2, 4)])
        >>> type(q.get_submodule("0")).__name__
        'Linear'
    """
    from torch.ao.quantization import (
        QConfigMapping,
        default_dynamic_qconfig,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in BACKENDS:
        raise FxnsError(
            f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}"
        )
    batches = [b if isinstance(b, tuple) else (b,) for b in calibration]
    if not batches:
        raise FxnsError("quantize_fx needs at least one calibration batch")

    with quiet_torch_ao():
        if backend == "dynamic":
            qconfig_mapping = QConfigMapping().set_global(default_dynamic_qconfig)
        else:
            qconfig_mapping = get_default_qconfig_mapping(backend)
        prepared = prepare_fx(copy.deepcopy(model).eval(), qconfig_mapping, batches[0])
        with torch.no_grad():
            for args in batches:
                prepared(*args)
        return convert_fx(prepared)
