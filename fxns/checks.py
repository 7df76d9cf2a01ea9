"""Checks that the two models are what fxns takes them to be, before comparing.

After matching (step 3 of the pipeline) and before instrumenting, the entry
points of :mod:`fxns.compare` ask three questions that catch the usual mix-ups
early, where an answer is still cheap and clear:

1. **Which model is quantized?** :func:`quantization_of` lists a traced
   model's quantized operations: quantized, fused-quantized, dynamic,
   reference and QAT modules, fake-quants, ``quantize_per_tensor`` and the
   other quantized kernels, quantized or half-precision parameters and
   casts to half precision. A float model with quantized operations next to
   a quantized model without any means the two were passed the wrong way
   round (:func:`check_direction`, a :class:`~fxns.errors.ModelError`); a
   "quantized" model without any is a prepared model that was never
   converted, or a float model, and its numbers would read as near-perfect
   (:func:`unquantized_warning`).
2. **Can the float model run on float inputs?** Shadow mode runs each float
   layer on the dequantized inputs of its quantized twin; a float model made
   of quantized kernels cannot (:func:`check_shadowable`).
3. **Is the quantized model made from this float model?** Its weights must
   be the float weights, quantized. :func:`weight_mismatch_warning` compares
   the weights of a few matched layers spread over the network (shapes, then
   SQNR) and warns when most disagree, which happens when the quantized model
   was made from another float model (another checkpoint, another
   architecture).

Cost: one walk over each graph's nodes, modules and parameters, and one
pass over the weights of at most :data:`WEIGHT_SAMPLE` matched layers. On
ResNet-50 (one CPU thread) that is 3 ms and 8 ms, beside 45 ms for tracing
and matching and 1.7 s for comparing one batch of 8×3×224×224.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import fx, nn

from .errors import ModelError
from .match import Matching
from .ops import WEIGHTED_KINDS
from .stats import ErrorStats
from .weights import weight_pairs

__all__ = [
    "Quantization",
    "check_direction",
    "check_float",
    "check_shadowable",
    "quantization_of",
    "unquantized_warning",
    "weight_mismatch",
    "weight_mismatch_warning",
]

# Below this SQNR (dB) a weight is not a quantized copy of its float twin: int8
# quantization gives 35 to 45 dB, even 4-bit gives 15 to 20.
WEIGHT_SQNR_FLOOR = 5.0

# How many weighted layers the weight check looks at, spread over the network.
WEIGHT_SAMPLE = 8

# How many examples a message names.
_EXAMPLES = 3

# Module packages whose modules compute with quantized values (or simulate
# quantization, QAT), and those among them whose inputs must be quantized
# tensors already.
_QUANTIZED_PACKAGES = (
    "torch.ao.nn.quantized",
    "torch.ao.nn.intrinsic.quantized",
    "torch.ao.nn.qat",
    "torch.ao.nn.intrinsic.qat",
    "torch.nn.quantized",
    "torch.nn.intrinsic.quantized",
    "torch.nn.qat",
    "torch.nn.intrinsic.qat",
)
_FLOAT_INPUT_PACKAGES = (
    "torch.ao.nn.quantized.dynamic",
    "torch.ao.nn.quantized.reference",
    "torch.ao.nn.intrinsic.quantized.dynamic",
    "torch.ao.nn.qat",
    "torch.ao.nn.intrinsic.qat",
    "torch.nn.quantized.dynamic",
    "torch.nn.qat",
    "torch.nn.intrinsic.qat",
)

# Functions that make quantized tensors or simulate quantization.
_QUANTIZE_FUNCTIONS = frozenset(
    {
        "quantize_per_tensor",
        "quantize_per_tensor_dynamic",
        "quantize_per_channel",
        "fake_quantize_per_tensor_affine",
        "fake_quantize_per_channel_affine",
    }
)

# Op namespaces of quantized kernels.
_QUANTIZED_NAMESPACES = ("quantized", "quantized_decomposed")

# Reduced-precision float dtypes that count as quantization (fp16 qconfigs).
_HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Quantization:
    """What a traced model holds of quantization, for messages.

    Example:
        >>> q = quantization_of(fxns.match(f, q).quant_module)  # doctest: +SKIP
        >>> q.ops[:2]  # doctest: +SKIP
        ("module 'conv1' (ConvReLU2d)", "node 'quantize_per_tensor' (...)")
    """

    # Quantized operations, described ("module 'conv1' (ConvReLU2d)"), in
    # graph order.
    ops: tuple[str, ...]
    # fx node name → description of the nodes that are quantized kernels:
    # they take quantized tensors, and a float input makes them fail.
    kernels: dict[str, str]
    # Observers: the model was prepared for quantization.
    observers: int

    @property
    def quantized(self) -> bool:
        """Whether the model has any quantized operation."""
        return bool(self.ops)


def quantization_of(gm: fx.GraphModule) -> Quantization:
    """The quantized operations, kernels and observers of a traced model.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> quantization_of(torch.fx.symbolic_trace(model)).quantized
        False
    """
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    ops: list[str] = []
    named: list[str] = []
    observers = 0
    for name, module in gm.named_modules():
        if any(name.startswith(f"{outer}.") for outer in named):
            continue  # a part of a module already named
        if isinstance(module, FakeQuantizeBase) or _is_quantized_module(module):
            named.append(name)
            ops.append(_module(name, module))
        elif isinstance(module, ObserverBase):
            observers += 1

    kernels: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(str(node.target))
            if _is_quantized_module(module) and not _in_packages(
                module, _FLOAT_INPUT_PACKAGES
            ):
                kernels[node.name] = _module(str(node.target), module)
            continue
        kind = _quantized_node(node)
        if kind:
            what = f"node '{node.name}' ({_target_name(node.target)})"
            ops.append(what)
            if kind == "kernel":
                kernels[node.name] = what
    ops += [
        f"{what} '{name}' ({str(value.dtype).removeprefix('torch.')})"
        for what, name, value in _tensors(gm)
        if value.is_quantized or value.dtype in _HALF_DTYPES
    ]
    return Quantization(tuple(ops), kernels, observers)


def check_direction(matching: Matching) -> None:
    """Raise if the float model is quantized and the quantized one is not.

    Raises:
        ModelError: the two models were passed the wrong way round.

    Example:
        >>> check_direction(fxns.match(quant_model, float_model))  # doctest: +SKIP
        Traceback (most recent call last):
        fxns.errors.ModelError: the float model (GraphModule) has quantized ...
    """
    f = quantization_of(matching.float_module)
    if not f.quantized:
        return
    q = quantization_of(matching.quant_module)
    if q.quantized:
        return
    raise ModelError(
        f"the float model ({_type(matching.float_module)}) has quantized "
        f"operations ({_examples(f.ops)}) and the quantized model "
        f"({_type(matching.quant_module)}) has none: the two models look swapped; "
        "pass the float model first and the quantized model second"
    )


def check_float(gm: fx.GraphModule, why: str) -> None:
    """Raise if a model that must be float has quantized operations.

    Args:
        gm: the traced model.
        why: what needs it float ("sensitivity quantizes the float model
            itself").

    Raises:
        ModelError: the model has quantized operations.

    Example:
        >>> check_float(trace(quant_model), "sensitivity needs it")  # doctest: +SKIP
        Traceback (most recent call last):
        fxns.errors.ModelError: the float model (GraphModule) has quantized ...
    """
    found = quantization_of(gm)
    if found.quantized:
        raise ModelError(
            f"the float model ({_type(gm)}) has quantized operations "
            f"({_examples(found.ops)}), and {why}: pass the float model it was "
            "made from"
        )


def check_shadowable(matching: Matching) -> None:
    """Raise if a float layer is a quantized kernel, which shadow mode cannot run.

    Raises:
        ModelError: the float model has quantized kernels.

    Example:
        >>> check_shadowable(fxns.match(quant_model, quant_model))  # doctest: +SKIP
        Traceback (most recent call last):
        fxns.errors.ModelError: the float model (GraphModule) has quantized ...
    """
    gm = matching.float_module
    found = quantization_of(gm).kernels
    kernels = list(
        dict.fromkeys(
            found[n] for p in matching.pairs for n in p.float_nodes if n in found
        )
    )
    if not kernels:
        return
    raise ModelError(
        f"the float model ({_type(gm)}) has quantized kernels ({_examples(kernels)}), "
        "and shadow mode runs each float layer on float inputs, which they cannot "
        "take. Pass the float model the quantized one was made from as the first "
        "model; to compare two quantized models, use propagated mode"
    )


def unquantized_warning(matching: Matching, role: str = "quantized model") -> str:
    """Why the quantized model's numbers will mean nothing, or "".

    A model with no quantized operation at all computes in float: a prepared
    model (observers, no ``convert_fx``) or the float model itself. Its
    comparison reads as near-perfect.

    Example:
        >>> unquantized_warning(fxns.match(f, prepared))  # doctest: +SKIP
        'the quantized model (GraphModule) has no quantized operation ...'
    """
    q = quantization_of(matching.quant_module)
    if q.quantized:
        return ""
    what = (
        f"it has {q.observers} observer(s) and looks like a prepared model: did "
        "you forget convert_fx (or torch.ao.quantization.convert)?"
        if q.observers
        else "it looks like a float model: pass the quantized version of the "
        "float model (to compare a model with itself, ignore this warning)"
    )
    return (
        f"the {role} ({_type(matching.quant_module)}) has no quantized "
        "operation (no quantized module or kernel, no quantize_per_tensor, no "
        f"fake-quant, no reduced-precision dtype), so it computes in float; {what}"
    )


def weight_mismatch_warning(matching: Matching, role: str = "quantized model") -> str:
    """Why the quantized model seems made from another float model, or "".

    The warning around :func:`weight_mismatch`.

    Example:
        >>> weight_mismatch_warning(fxns.match(f, q_of_other_f))  # doctest: +SKIP
        "the quantized model's weights do not match the float model's ..."
    """
    detail = weight_mismatch(matching)
    if not detail:
        return ""
    return (
        f"the {role}'s weights do not match the float model's ({detail}): "
        "is it made from this float model?"
    )


def weight_mismatch(matching: Matching) -> str:
    """How the quantized weights disagree with the float ones, or "".

    Compares the weights of up to :data:`WEIGHT_SAMPLE` matched weighted
    layers spread over the network: a shape that differs, or most of them
    below :data:`WEIGHT_SQNR_FLOOR`, mean the quantized weights are not the
    float weights quantized.

    Example:
        >>> weight_mismatch(fxns.match(f, q_of_other_f))  # doctest: +SKIP
        'shapes differ: fc: [5, 144] vs [7, 144]'
    """
    weighted = [
        p
        for p in matching.pairs
        if any(part in WEIGHTED_KINDS for part in p.kind.split("+"))
    ]
    # A model made from another float model differs in every layer, so a
    # sample spread over the network tells; all of them would cost as much as
    # compare_weights (unpacking and dequantizing every weight).
    step = max(1, math.ceil(len(weighted) / WEIGHT_SAMPLE))
    sample = weighted[::step]
    shapes: list[str] = []
    low: list[tuple[str, float]] = []
    compared = 0
    for w in weight_pairs(dataclasses.replace(matching, pairs=sample)):
        if w.quant_weight is None:
            continue
        if w.float_weight.shape != w.quant_weight.shape:
            shapes.append(
                f"{w.name}: {list(w.float_weight.shape)} vs "
                f"{list(w.quant_weight.shape)}"
            )
            continue
        stats = ErrorStats()
        try:
            stats.update(w.float_weight, w.quant_weight)
        except ValueError:
            continue
        if stats.n == 0:
            continue
        compared += 1
        sqnr = stats.metrics()["sqnr"]
        if sqnr < WEIGHT_SQNR_FLOOR:
            low.append((w.name, sqnr))
    if shapes:
        return f"shapes differ: {_examples(shapes)}"
    if compared and 2 * len(low) > compared:
        listed = [f"{name}: {sqnr:.1f} dB" for name, sqnr in low]
        return (
            f"{len(low)} of {compared} weighted layers checked below "
            f"{WEIGHT_SQNR_FLOOR:g} dB: {_examples(listed, count=False)}"
        )
    return ""


# --- helpers ------------------------------------------------------------------------


def _is_quantized_module(module: nn.Module) -> bool:
    # FloatFunctional lives among the quantized modules but computes in float.
    return _in_packages(module, _QUANTIZED_PACKAGES) and not isinstance(
        module, _float_functionals()
    )


def _float_functionals() -> tuple[type[nn.Module], ...]:
    from torch.ao.nn.quantized import FloatFunctional, FXFloatFunctional

    return (FloatFunctional, FXFloatFunctional)


def _module(name: str, module: nn.Module) -> str:
    return f"module '{name}' ({type(module).__name__})"


def _in_packages(module: nn.Module, packages: Iterable[str]) -> bool:
    where = type(module).__module__
    return any(where == p or where.startswith(f"{p}.") for p in packages)


def _quantized_node(node: fx.Node) -> str:
    """ "kernel", "op" (quantizes or casts to half) or "" for one fx node."""
    target = node.target
    if node.op == "call_function":
        if isinstance(target, torch._ops.OpOverloadPacket | torch._ops.OpOverload):
            name = _op_name(target)
            if name.split("::")[0] in _QUANTIZED_NAMESPACES:
                return "op" if "dynamic" in name or "prepack" in name else "kernel"
            return ""
        if getattr(target, "__name__", "") in _QUANTIZE_FUNCTIONS:
            return "op"
        if getattr(target, "__name__", "") == "to":
            return "op" if _casts_to_half(node) else ""
        return ""
    if node.op == "call_method":
        if target in ("half", "bfloat16"):
            return "op"
        if target == "to":
            return "op" if _casts_to_half(node) else ""
    return ""


def _casts_to_half(node: fx.Node) -> bool:
    values = [*node.args[1:], *node.kwargs.values()]
    return any(isinstance(v, torch.dtype) and v in _HALF_DTYPES for v in values)


def _tensors(gm: fx.GraphModule) -> Iterable[tuple[str, str, torch.Tensor]]:
    for name, parameter in gm.named_parameters():
        yield "parameter", name, parameter
    for name, buffer in gm.named_buffers():
        yield "buffer", name, buffer


def _op_name(op: torch._ops.OpOverloadPacket | torch._ops.OpOverload) -> str:
    """The qualified name of a torch op, "quantized::add_relu"."""
    if isinstance(op, torch._ops.OpOverload):
        return str(op._schema.name)
    return str(op._qualified_op_name)


def _target_name(target: object) -> str:
    if isinstance(target, torch._ops.OpOverloadPacket | torch._ops.OpOverload):
        return _op_name(target)
    if isinstance(target, str):
        return f".{target}()"
    return str(getattr(target, "__name__", target))


def _examples(items: list[str] | tuple[str, ...], count: bool = True) -> str:
    more = ""
    if len(items) > _EXAMPLES:
        more = f", ... ({len(items)} in all)" if count else ", ..."
    return ", ".join(items[:_EXAMPLES]) + more


def _type(model: nn.Module) -> str:
    return type(model).__name__
