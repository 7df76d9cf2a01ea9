"""Weights of matched pairs, float and dequantized, ready to compare.

For each pair whose kind carries a weight (conv, linear, ...), the float
weight comes from the float module or the ``get_attr`` argument of a
functional call, and the quantized weight from the quantized module
(``module.weight()``), a reference module (``get_weight()``) or the packed
parameters of a quantized kernel, dequantized.

Recurrent layers (LSTM, GRU, RNN and their cells) hold one weight per gate
matrix, layer and direction (``weight_ih_l1_reverse``); each is compared
with the quantized weight of the same name, in a row of its own.

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

__all__ = ["WeightPair", "module_weight", "module_weights", "weight_pairs"]


@dataclass(frozen=True)
class WeightPair:
    """One float weight and its quantized twin, both as float32 tensors."""

    pair: Pair
    float_weight: torch.Tensor
    # ``None`` when the quantized side holds no weight of that name (see note).
    quant_weight: torch.Tensor | None
    # What was done to the float weight before comparing, or why it could
    # not be compared ("" if nothing).
    note: str = ""
    # The weight's name within its layer when the layer has several
    # (``weight_hh_l0``); "" for the one weight of a conv or linear.
    element: str = ""

    @property
    def name(self) -> str:
        """The row name: the pair's name, and the weight's if it has several."""
        return f"{self.pair.name}.{self.element}" if self.element else self.pair.name


def weight_pairs(matching: Matching) -> Iterator[WeightPair]:
    """The weights of every weighted pair, in execution order.

    Example:
        >>> [w.name for w in weight_pairs(fxns.match(f, q))][:2]  # doctest: +SKIP
        ['conv1', 'layer1.0.conv1']
    """
    fg, qg = matching.float_graph, matching.quant_graph
    assert fg is not None and qg is not None
    for pair in matching.pairs:
        if not any(part in WEIGHTED_KINDS for part in pair.kind.split("+")):
            continue
        f_weights = _weights(fg, pair.float_nodes)
        q_weights = _weights(qg, pair.quant_nodes)
        if set(f_weights) == {_WEIGHT} and len(q_weights) == 1:
            yield _single(fg, pair, f_weights[_WEIGHT], next(iter(q_weights.values())))
            continue
        for name, f_weight in f_weights.items():
            q_weight = q_weights.get(name)
            yield WeightPair(
                pair,
                as_float(f_weight.detach()),
                None if q_weight is None else as_float(q_weight.detach()),
                ""
                if q_weight is not None
                else f"not compared: the quantized model has no weight '{name}' "
                f"in {', '.join(pair.quant_nodes)}",
                element="" if name == _WEIGHT else name,
            )


def _single(
    fg: OpGraph, pair: Pair, f_weight: torch.Tensor, q_weight: torch.Tensor
) -> WeightPair:
    """The weight pair of a conv or linear, batch norm folded in if needed."""
    note = ""
    float_parts = pair.kind.split("+")
    quant_parts = pair.quant_kind.split("+")
    if "batch_norm" in float_parts and "batch_norm" not in quant_parts:
        bn = _batch_norm_after(fg, pair.float_nodes)
        if bn is not None:
            f_weight = fold_batch_norm(f_weight, bn)
            note = "float weight with batch_norm folded in"
    return WeightPair(
        pair, as_float(f_weight.detach()), as_float(q_weight.detach()), note
    )


# The name of the one weight of a conv, linear or embedding.
_WEIGHT = "weight"


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


def _weights(og: OpGraph, fx_nodes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The weights of the first of ``fx_nodes`` that has any, by name."""
    modules = dict(og.gm.named_modules(remove_duplicate=False))
    for name in fx_nodes:
        node = og.fx_node(name)
        if node.op == "call_module":
            found = module_weights(modules[str(node.target)])
            if found:
                return found
        elif node.op == "call_function":
            weight = _functional_weight(og.gm, node)
            if weight is not None:
                return {_WEIGHT: weight}
    return {}


def module_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of a module by name: ``{"weight": w}`` for a conv or linear,
    ``weight_ih_l0``, ``weight_hh_l0``, ... for a float or dynamic-quantized
    recurrent layer.

    Example:
        >>> sorted(module_weights(torch.nn.LSTM(2, 3)))
        ['weight_hh_l0', 'weight_ih_l0']
    """
    if isinstance(module, nn.RNNBase | nn.RNNCellBase):
        return {
            name: value
            for name, value in module.named_parameters(recurse=False)
            if name.startswith(_WEIGHT)
        }
    get_weight = getattr(module, "get_weight", None)
    if callable(get_weight):
        value = get_weight()
        if isinstance(value, dict):
            # Dynamic-quantized recurrent layers: name → quantized weight.
            return {k: v for k, v in value.items() if isinstance(v, torch.Tensor)}
    weight = module_weight(module)
    return {} if weight is None else {_WEIGHT: weight}


def module_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight of a float, fused, reference, quantized or dynamic module.

    Example:
        >>> module_weight(torch.nn.Linear(2, 3)).shape
        torch.Size([3, 2])
    """
    own = getattr(module, "weight", None)
    if isinstance(module, nn.Sequential) and len(module) > 0 and own is None:
        # Float fused modules (nni.ConvReLU2d, nni.ConvBn2d) hold the conv
        # first; QAT fused modules (nniqat.ConvBnReLU2d) are sequences too,
        # but hold the weight themselves, and their batch norm first.
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
