"""The table of op kinds: tuple-valued ops, the names of their elements, and
every kind the comparison must know, matched as a module and as a function,
float and quantized."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import fxns
from fxns.ops import element_name, is_tuple_element

from .conftest import quantize_module


@pytest.mark.parametrize(
    ("kind", "path", "is_tuple"),
    [
        ("lstm", (), True),
        ("lstm", (0,), False),
        ("lstm", (1,), True),
        ("lstm", (1, 0), False),
        ("gru", (1,), False),
        ("chunk", (), True),
        ("chunk", (3,), False),
        ("conv2d", (), False),
    ],
)
def test_a_getitem_selects_only_from_tuple_elements(
    kind: str, path: tuple[int, ...], is_tuple: bool
) -> None:
    assert is_tuple_element(kind, path) is is_tuple


@pytest.mark.parametrize(
    ("kind", "path", "name"),
    [
        ("lstm", (0,), "output"),
        ("lstm", (1, 0), "h_n"),
        ("lstm", (1, 1), "c_n"),
        ("gru", (1,), "h_n"),
        ("lstm_cell", (1,), "c_1"),
        ("chunk", (2,), "2"),
        ("MyLeaf", (1, 0), "1.0"),
    ],
)
def test_elements_are_named_as_pytorch_documents_them(
    kind: str, path: tuple[int, ...], name: str
) -> None:
    assert element_name(kind, path) == name


# --- every required kind, as a module and as a function, float and quantized --


class _Fn(nn.Module):
    """A function as a model, with a weight and bias for functional conv/linear."""

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        weight: tuple[int, ...] = (),
        n_inputs: int = 1,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.n_inputs = n_inputs
        if weight:
            self.weight = nn.Parameter(torch.randn(weight) * 0.3)
            self.bias = nn.Parameter(torch.randn(weight[0]) * 0.1)
            self.register_buffer("mean", torch.randn(weight[0]) * 0.1)
            self.register_buffer("var", torch.rand(weight[0]) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


class _After(nn.Module):
    """``op(pre(x))``: a quantized conv or linear first, so the op reads int8."""

    def __init__(self, op: nn.Module, pre: nn.Module) -> None:
        super().__init__()
        self.pre = pre
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(self.pre(x))


class _Wrap(nn.Module):
    """A root to trace: fx traces the root's forward, so a bare nn.Conv2d
    would not be a module call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


_IMG = (2, 3, 8, 8)
_CONV = lambda: nn.Conv2d(3, 3, 1)  # noqa: E731
# id: (kind, model, input shape, float op display)
_KIND_CASES: dict[str, tuple[str, Callable[[], nn.Module], tuple[int, ...], str]] = {
    "conv1d/module": ("conv1d", lambda: nn.Conv1d(3, 4, 3), (2, 3, 16), "nn.Conv1d"),
    "conv1d/function": (
        "conv1d",
        lambda: _Fn(
            lambda m, x: F.conv1d(x, m.weight, m.bias, [1], [0], [1], 1), (4, 3, 3)
        ),
        (2, 3, 16),
        "torch.conv1d",
    ),
    "conv2d/module": ("conv2d", lambda: nn.Conv2d(3, 4, 3), _IMG, "nn.Conv2d"),
    "conv2d/function": (
        "conv2d",
        lambda: _Fn(
            lambda m, x: F.conv2d(x, m.weight, m.bias, [1, 1], [0, 0], [1, 1], 1),
            (4, 3, 3, 3),
        ),
        _IMG,
        "torch.conv2d",
    ),
    "conv3d/module": (
        "conv3d",
        lambda: nn.Conv3d(3, 4, 3),
        (2, 3, 6, 6, 6),
        "nn.Conv3d",
    ),
    "conv3d/function": (
        "conv3d",
        lambda: _Fn(
            lambda m, x: F.conv3d(
                x, m.weight, m.bias, [1, 1, 1], [0, 0, 0], [1, 1, 1], 1
            ),
            (4, 3, 3, 3, 3),
        ),
        (2, 3, 6, 6, 6),
        "torch.conv3d",
    ),
    "linear/module": ("linear", lambda: nn.Linear(8, 4), (2, 8), "nn.Linear"),
    "linear/function": (
        "linear",
        lambda: _Fn(lambda m, x: F.linear(x, m.weight, m.bias), (4, 8)),
        (2, 8),
        "F.linear",
    ),
    "batch_norm/module": (
        "batch_norm",
        lambda: nn.BatchNorm2d(3),
        _IMG,
        "nn.BatchNorm2d",
    ),
    "batch_norm/function": (
        "batch_norm",
        lambda: _Fn(
            lambda m, x: F.batch_norm(x, m.mean, m.var, m.weight, m.bias), (3,)
        ),
        _IMG,
        "F.batch_norm",
    ),
    "relu/module": (
        "relu",
        lambda: _After(nn.ReLU(), nn.MaxPool2d(1)),
        _IMG,
        "nn.ReLU",
    ),
    "relu/function": ("relu", lambda: _Fn(lambda m, x: F.relu(x)), _IMG, "F.relu"),
    "relu6/module": ("relu6", lambda: _After(nn.ReLU6(), _CONV()), _IMG, "nn.ReLU6"),
    "relu6/function": ("relu6", lambda: _Fn(lambda m, x: F.relu6(x)), _IMG, "F.relu6"),
    "hardswish/module": (
        "hardswish",
        lambda: _After(nn.Hardswish(), _CONV()),
        _IMG,
        "nn.Hardswish",
    ),
    "hardswish/function": (
        "hardswish",
        lambda: _After(_Fn(lambda m, x: F.hardswish(x)), _CONV()),
        _IMG,
        "F.hardswish",
    ),
    "hardsigmoid/module": (
        "hardsigmoid",
        lambda: _After(nn.Hardsigmoid(), _CONV()),
        _IMG,
        "nn.Hardsigmoid",
    ),
    "hardsigmoid/function": (
        "hardsigmoid",
        lambda: _After(_Fn(lambda m, x: F.hardsigmoid(x)), _CONV()),
        _IMG,
        "F.hardsigmoid",
    ),
    "sigmoid/module": (
        "sigmoid",
        lambda: _After(nn.Sigmoid(), _CONV()),
        _IMG,
        "nn.Sigmoid",
    ),
    "sigmoid/function": (
        "sigmoid",
        lambda: _After(_Fn(lambda m, x: torch.sigmoid(x)), _CONV()),
        _IMG,
        "torch.sigmoid",
    ),
    "silu/module": ("silu", lambda: _After(nn.SiLU(), _CONV()), _IMG, "nn.SiLU"),
    "silu/function": (
        "silu",
        lambda: _After(_Fn(lambda m, x: F.silu(x)), _CONV()),
        _IMG,
        "F.silu",
    ),
    "tanh/module": ("tanh", lambda: _After(nn.Tanh(), _CONV()), _IMG, "nn.Tanh"),
    "tanh/function": (
        "tanh",
        lambda: _After(_Fn(lambda m, x: torch.tanh(x)), _CONV()),
        _IMG,
        "torch.tanh",
    ),
    "add/operator": (
        "add",
        lambda: _After(_Fn(lambda m, x: x + x.sigmoid()), _CONV()),
        _IMG,
        "operator.add",
    ),
    "add/function": (
        "add",
        lambda: _After(_Fn(lambda m, x: torch.add(x, x.sigmoid())), _CONV()),
        _IMG,
        "torch.add",
    ),
    "mul/operator": (
        "mul",
        lambda: _After(_Fn(lambda m, x: x * x.sigmoid()), _CONV()),
        _IMG,
        "operator.mul",
    ),
    "mul/function": (
        "mul",
        lambda: _After(_Fn(lambda m, x: torch.mul(x, x.sigmoid())), _CONV()),
        _IMG,
        "torch.mul",
    ),
    "cat/function": (
        "cat",
        lambda: _After(_Fn(lambda m, x: torch.cat([x, x.sigmoid()], 1)), _CONV()),
        _IMG,
        "torch.cat",
    ),
    "adaptive_avg_pool2d/module": (
        "adaptive_avg_pool2d",
        lambda: _After(nn.AdaptiveAvgPool2d(2), _CONV()),
        _IMG,
        "nn.AdaptiveAvgPool2d",
    ),
    "adaptive_avg_pool2d/function": (
        "adaptive_avg_pool2d",
        lambda: _After(_Fn(lambda m, x: F.adaptive_avg_pool2d(x, 2)), _CONV()),
        _IMG,
        "F.adaptive_avg_pool2d",
    ),
    "avg_pool2d/module": (
        "avg_pool2d",
        lambda: _After(nn.AvgPool2d(2), _CONV()),
        _IMG,
        "nn.AvgPool2d",
    ),
    "avg_pool2d/function": (
        "avg_pool2d",
        lambda: _After(_Fn(lambda m, x: F.avg_pool2d(x, 2)), _CONV()),
        _IMG,
        "F.avg_pool2d",
    ),
    "max_pool2d/module": (
        "max_pool2d",
        lambda: _After(nn.MaxPool2d(2), _CONV()),
        _IMG,
        "nn.MaxPool2d",
    ),
    "max_pool2d/function": (
        "max_pool2d",
        lambda: _After(_Fn(lambda m, x: F.max_pool2d(x, 2)), _CONV()),
        _IMG,
        "F.max_pool2d",
    ),
    "flatten/module": (
        "flatten",
        lambda: _After(nn.Flatten(), _CONV()),
        _IMG,
        "nn.Flatten",
    ),
    "flatten/function": (
        "flatten",
        lambda: _After(_Fn(lambda m, x: torch.flatten(x, 1)), _CONV()),
        _IMG,
        "torch.flatten",
    ),
    "reshape/method": (
        "reshape",
        lambda: _After(_Fn(lambda m, x: x.reshape(2, -1)), _CONV()),
        _IMG,
        "Tensor.reshape",
    ),
    "view/method": (
        "reshape",
        lambda: _After(_Fn(lambda m, x: x.view(2, -1)), _CONV()),
        _IMG,
        "Tensor.view",
    ),
    "matmul/function": (
        "matmul",
        lambda: _After(_Fn(lambda m, x: torch.matmul(x, x.sigmoid())), _CONV()),
        _IMG,
        "torch.matmul",
    ),
    "softmax/module": (
        "softmax",
        lambda: _After(nn.Softmax(dim=1), _CONV()),
        _IMG,
        "nn.Softmax",
    ),
    "softmax/function": (
        "softmax",
        lambda: _After(_Fn(lambda m, x: F.softmax(x, dim=1)), _CONV()),
        _IMG,
        "F.softmax",
    ),
    "layer_norm/module": (
        "layer_norm",
        lambda: _After(nn.LayerNorm(8), nn.Linear(8, 8)),
        (2, 8),
        "nn.LayerNorm",
    ),
    "layer_norm/function": (
        "layer_norm",
        lambda: _After(_Fn(lambda m, x: F.layer_norm(x, (8,))), nn.Linear(8, 8)),
        (2, 8),
        "F.layer_norm",
    ),
}


# The quantized forms convert_fx makes (the rest run the float op's own code
# on quantized tensors, or stay in float).
_QUANT_FORMS = {
    "conv1d/module": "nnq.Conv1d",
    "conv1d/function": "quantized::conv1d",
    "conv2d/module": "nnq.Conv2d",
    "conv2d/function": "quantized::conv2d",
    "conv3d/module": "nnq.Conv3d",
    "conv3d/function": "quantized::conv3d",
    "linear/module": "nnq.Linear",
    "linear/function": "quantized::linear",
    "batch_norm/module": "nnq.BatchNorm2d",
    "hardswish/module": "nnq.Hardswish",
    "hardswish/function": "quantized::hardswish",
    "add/operator": "quantized::add",
    "add/function": "quantized::add",
    "mul/operator": "quantized::mul",
    "mul/function": "quantized::mul",
    "matmul/function": "quantized::matmul",
    "softmax/module": "nnq.Softmax",
    "layer_norm/module": "nnq.LayerNorm",
    "layer_norm/function": "quantized::layer_norm",
}


@pytest.mark.parametrize("case", sorted(_KIND_CASES))
def test_every_kind_matches_as_module_and_function_float_and_quantized(
    case: str,
) -> None:
    kind, make, shape, display = _KIND_CASES[case]
    torch.manual_seed(0)
    model = _Wrap(make()).eval()
    quant = quantize_module(model, torch.randn(shape))
    for other in (copy.deepcopy(model), quant):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a clean match: no guesses
            m = fxns.match(model, other)
        assert m.unmatched_float == m.unmatched_quant == (), (case, m)
        # The op's own pair: the kind on both sides, in the form written.
        with_kind = [p for p in m.pairs if kind in p.kind.split("+")]
        assert len(with_kind) == 1, (case, m.pairs)
        (pair,) = with_kind
        assert pair.quant_kind == pair.kind == kind, (case, pair)
        assert pair.float_ops == (display,), (case, pair)
    assert pair.quant_ops == (_QUANT_FORMS.get(case, display),), (case, pair)
