"""Shadows of ops with scalar or ``None`` arguments, and of norms and
activations: the float copy always gets dequantized tensors and the original
non-tensor arguments (cases 02 and 03).

Each expected value is the float op applied by hand to the dequantized input
that the quantized op received, read with ``torch.fx.Interpreter``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import fxns

from .conftest import quantize_module, unaccounted_nodes
from .reference import Sums, activations


class LinearNormLinear(nn.Module):
    """Case 02: a transformer-style Linear → LayerNorm → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_in = nn.Linear(16, 16)
        self.op = nn.LayerNorm(16)
        self.fc_out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.op(self.fc_in(x)))


class ConvOpConv(nn.Module):
    """Case 02 and 03: conv → op → conv."""

    def __init__(self, op: nn.Module, channels: int = 8) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.op = op
        self.c2 = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(self.op(self.c1(x)))


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, -1.0, 1.0)


class Tanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


class LinearOpLinear(nn.Module):
    """Case 03: Linear → a function with scalar arguments → Linear."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.op = op
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.op(self.a(x)))


IMAGE = (2, 3, 8, 8)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str]] = {
    # name: (model, input shape, row of the op)
    "layer_norm": (LinearNormLinear, (2, 5, 16), "op"),
    "softmax": (lambda: ConvOpConv(nn.Softmax(dim=1)), IMAGE, "op"),
    "elu": (lambda: ConvOpConv(nn.ELU()), IMAGE, "op"),
    "hardswish": (lambda: ConvOpConv(nn.Hardswish()), IMAGE, "op"),
    "instance_norm": (
        lambda: ConvOpConv(nn.InstanceNorm2d(8, affine=True)),
        IMAGE,
        "op",
    ),
    "tanh": (lambda: LinearOpLinear(Tanh()), (4, 8), "tanh"),
    "clamp": (lambda: LinearOpLinear(Clamp()), (4, 8), "clamp"),
    "conv_transpose2d": (
        lambda: ConvOpConv(nn.ConvTranspose2d(8, 8, 2, stride=2)),
        IMAGE,
        "op",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cases_02_03_shadow_gets_dequantized_tensors_and_original_scalars(
    case: str,
) -> None:
    make, shape, row_name = CASES[case]
    torch.manual_seed(0)
    model = make().eval()
    quant = quantize_module(model, torch.randn(shape), n=3)
    batches = [torch.randn(shape) for _ in range(2)]

    report = fxns.compare_activations(model, quant, batches, mode="shadow")
    assert len(report.rows) == 3, report
    assert all(row.note == "" for row in report.rows), report
    row = report[row_name]
    assert row.kind == case

    expected = Sums()
    nodes = {n.name: n for n in quant.graph.nodes}
    for x in batches:
        q_acts = activations(quant, x)
        q_in = q_acts[nodes[row.quant_nodes[0]].args[0].name]
        with torch.no_grad():
            local = model.op(q_in.dequantize())
        expected.add(local, q_acts[row.quant_nodes[-1]])
    assert row.metrics["sqnr"] == pytest.approx(expected.sqnr(), abs=0.01)
    assert row.metrics["sqnr"] > 20
    assert unaccounted_nodes(fxns.match(model, quant)) == []
