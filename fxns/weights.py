"""Weights of matched pairs, float and dequantized, ready to compare.

For each pair whose kind carries a weight (conv, linear, ...), the float
weight comes from the float module or the ``get_attr`` argument of a
functional call, and the quantized weight from the quantized module
(``module.weight()``), a reference module (``get_weight()``) or the packed
parameters of a quantized kernel, dequantized.

Where the float side of a pair contains a ``batch_norm`` that the quantized
side does not (quantization folded it into the conv), the float weight is
folded the same way before comparing: ``w · γ / √(σ² + ε)`` per output
channel. Comparing with the unfolded weight would report a near-0 dB error
for a layer that is fine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .graph import OpGraph
from .match import Matching, Pair
from .ops import WEIGHTED_KINDS
from .stats import as_float

__all__ = ["WeightPair", "weight_pairs"]


@dataclass(frozen=True)
class WeightPair:
    """One float weight and its quantized twin, both as float32 tensors."""

    pair: Pair
    float_weight: torch.Tensor
    quant_weight: torch.Tensor
    # What was done to the float weight before comparing ("" if nothing).
    note: str = ""


def weight_pairs(matching: Matching) -> Iterator[WeightPair]:
    """The weights of every weighted pair, in execution order.

    Example:
        >>> [w.pair.name for w in weight_pairs(fxns.match(f, q))][:2]  # doctest: +SKIP
        ['conv1', 'layer1.0.conv1']
    """
    fg, qg = matching.float_graph, matching.quant_graph
    assert fg is not None and qg is not None
    for pair in matching.pairs:
        if not any(part in WEIGHTED_KINDS for part in pair.kind.split("+")):
            continue
        f_weight = _first_weight(fg, pair.float_nodes)
        q_weight = _first_weight(qg, pair.quant_nodes)
        if f_weight is None or q_weight is None:
            continue
        note = ""
        float_parts = pair.kind.split("+")
        quant_parts = pair.quant_kind.split("+")
        if "batch_norm" in float_parts and "batch_norm" not in quant_parts:
            bn = _batch_norm_after(fg, pair.float_nodes)
            if bn is not None:
                f_weight = fold_batch_norm(f_weight, bn)
                note = "float weight with batch_norm folded in"
        yield WeightPair(
            pair, f_weight.detach().float(), as_float(q_weight.detach()), note
        )


def fold_batch_norm(weight: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """``weight`` scaled per output channel by ``γ / √(σ² + ε)`` of ``bn``.

    Example:
        >>> bn = torch.nn.BatchNorm2d(2).eval()
        >>> fold_batch_norm(torch.ones(2, 1, 1, 1), bn).flatten()
        tensor([1.0000, 1.0000])
    """
    running_var, eps, gamma = bn.running_var, bn.eps, bn.weight
    assert isinstance(running_var, torch.Tensor) and isinstance(eps, float)
    scale = torch.rsqrt(running_var + eps)
    if isinstance(gamma, torch.Tensor):
        scale = scale * gamma.detach()
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape)


def _first_weight(og: OpGraph, fx_nodes: tuple[str, ...]) -> torch.Tensor | None:
    modules = dict(og.gm.named_modules(remove_duplicate=False))
    for name in fx_nodes:
        node = og.fx_node(name)
        weight: Any = None
        if node.op == "call_module":
            weight = module_weight(modules[str(node.target)])
        elif node.op == "call_function":
            weight = _functional_weight(og.gm, node)
        if isinstance(weight, torch.Tensor):
            return weight
    return None


def module_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight of a float, fused, reference, quantized or dynamic module.

    Example:
        >>> module_weight(torch.nn.Linear(2, 3)).shape
        torch.Size([3, 2])
    """
    if isinstance(module, nn.Sequential) and len(module) > 0:
        # Float fused modules (nni.ConvReLU2d, nni.ConvBn2d) hold the conv first.
        return module_weight(module[0])
    get_weight = getattr(module, "get_weight", None)
    if callable(get_weight):
        value = get_weight()
        if isinstance(value, torch.Tensor):
            return value
    weight = getattr(module, "weight", None)
    if callable(weight) and not isinstance(weight, nn.Module | torch.Tensor):
        value = weight()
        return value if isinstance(value, torch.Tensor) else None
    return weight if isinstance(weight, torch.Tensor) else None


def _functional_weight(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor | None:
    if len(node.args) < 2 or not isinstance(node.args[1], fx.Node):
        return None
    arg = node.args[1]
    if arg.op != "get_attr":
        return None
    obj: Any = gm
    for part in str(arg.target).split("."):
        obj = getattr(obj, part)
    if isinstance(obj, torch.Tensor):
        return obj
    # Packed parameters of a quantized kernel.
    unpack = _UNPACK.get(getattr(node.target, "__name__", ""))
    if unpack is not None:
        weight = unpack(obj)[0]
        return weight if isinstance(weight, torch.Tensor) else None
    return None


def _unpack_conv(packed: Any) -> Any:
    return packed.unpack()


def _unpack_linear(packed: Any) -> Any:
    return torch.ops.quantized.linear_unpack(packed)


_UNPACK = {
    "conv1d": _unpack_conv,
    "conv2d": _unpack_conv,
    "conv3d": _unpack_conv,
    "conv1d_relu": _unpack_conv,
    "conv2d_relu": _unpack_conv,
    "conv3d_relu": _unpack_conv,
    "linear": _unpack_linear,
    "linear_relu": _unpack_linear,
    "linear_dynamic": _unpack_linear,
    "linear_relu_dynamic": _unpack_linear,
}


def _batch_norm_after(og: OpGraph, fx_nodes: tuple[str, ...]) -> nn.Module | None:
    modules = dict(og.gm.named_modules(remove_duplicate=False))
    for name in fx_nodes:
        node = og.fx_node(name)
        if node.op != "call_module":
            continue
        module = modules[str(node.target)]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return module
        if isinstance(module, nn.Sequential):
            for child in module:
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    return child
    return None
