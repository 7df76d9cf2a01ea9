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
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from .errors import ArgumentError, DataError, ModelError

if TYPE_CHECKING:
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.backend_config import BackendConfig

__all__ = [
    "BACKENDS",
    "FUSIONS",
    "backend_config",
    "qconfig_mapping_for",
    "quantize_fx",
    "quiet_torch_ao",
]

# Static backends take a calibration pass; "dynamic" quantizes weights only.
BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn", "dynamic")

# Fusion strategies: "all" fuses whatever the backend can (conv+bn+relu,
# linear+relu, add+relu); "conv_bn" only folds batch norms into the conv or
# linear before them, and runs activations as separate quantized ops; "none"
# fuses nothing (batch norms become quantized batch norm modules).
FUSIONS = ("all", "conv_bn", "none")


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
    *,
    fusion: str = "all",
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
        fusion: one of :data:`FUSIONS`: ``all`` (the backend's default),
            ``conv_bn`` or ``none``.

    Raises:
        ArgumentError: an unknown ``backend`` or ``fusion``.
        DataError: no calibration batch, or one that does not fit the model.
        ModelError: ``prepare_fx`` cannot quantize the model.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
        >>> q = quantize_fx(model, [torch.randn(2, 4)])
        >>> type(q.get_submodule("0")).__name__
        'Linear'
    """
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    qconfig_mapping = qconfig_mapping_for(backend)
    config = backend_config(fusion)
    batches = [b if isinstance(b, tuple) else (b,) for b in calibration]
    if not batches:
        raise DataError("quantize_fx needs at least one calibration batch")

    with quiet_torch_ao():
        try:
            prepared = prepare_fx(
                copy.deepcopy(model).eval(),
                qconfig_mapping,
                batches[0],
                backend_config=config,
            )
        except Exception as err:
            raise ModelError(
                f"prepare_fx cannot quantize {type(model).__name__}: "
                f"{type(err).__name__}: {_first_line(err)}"
            ) from err
        with torch.no_grad():
            for index, args in enumerate(batches):
                try:
                    prepared(*args)
                except Exception as err:
                    raise DataError(
                        f"calibration batch {index} does not fit "
                        f"{type(model).__name__}: {type(err).__name__}: "
                        f"{_first_line(err)}"
                    ) from err
        return convert_fx(prepared, backend_config=config)


def qconfig_mapping_for(backend: str) -> QConfigMapping:
    """The default ``QConfigMapping`` of ``backend`` (one of :data:`BACKENDS`).

    Example:
        >>> qconfig_mapping_for("x86").global_qconfig.weight.p.keywords["dtype"]
        torch.qint8
    """
    from torch.ao.quantization import (
        QConfigMapping,
        default_dynamic_qconfig,
        get_default_qconfig_mapping,
    )

    if backend not in BACKENDS:
        raise ArgumentError(
            f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}"
        )
    with quiet_torch_ao():
        if backend == "dynamic":
            return QConfigMapping().set_global(default_dynamic_qconfig)
        return get_default_qconfig_mapping(backend)


def backend_config(fusion: str = "all") -> BackendConfig:
    """PyTorch's native ``BackendConfig`` with only the fusions of ``fusion``.

    Args:
        fusion: one of :data:`FUSIONS`.

    Example:
        >>> config = backend_config("none")
        >>> any(isinstance(c.pattern, tuple) for c in config.configs)
        False
    """
    if fusion not in FUSIONS:
        raise ArgumentError(
            f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}"
        )
    with quiet_torch_ao():
        # quantize_fx loads the helpers that BackendConfig needs.
        import torch.ao.quantization.quantize_fx  # noqa: F401
        from torch.ao.quantization.backend_config import (
            BackendConfig,
            get_native_backend_config,
        )

        native = get_native_backend_config()
    if fusion == "all":
        return native
    config = BackendConfig(f"{native.name}_fusion_{fusion}")
    config.set_backend_pattern_configs(
        [c for c in native.configs if _keeps(c.pattern, c.fuser_method, fusion)]
    )
    return config


def _keeps(pattern: Any, fuser_method: Any, fusion: str) -> bool:
    # Single-op patterns quantize one op; tuples fuse several into one.
    if not isinstance(pattern, tuple):
        return True
    if fusion == "conv_bn":
        return (
            fuser_method is not None
            and len(pattern) == 2
            and isinstance(pattern[1], type)
            and issubclass(pattern[1], nn.modules.batchnorm._BatchNorm)
        )
    return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
