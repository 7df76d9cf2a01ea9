"""Inputs on which earlier tools failed (../shared/cases), and the right answers."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import fxns

from .conftest import quantize_module
from .reference import Sums, activations


class SEBranchNet(nn.Module):
    """Case 01: a squeeze-excite mul, a residual add and a channel cat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.gate_fc1 = nn.Linear(8, 4)
        self.gate_fc2 = nn.Linear(4, 8)
        self.left = nn.Conv2d(8, 8, 1)
        self.right = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        g = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        g = torch.sigmoid(self.gate_fc2(torch.relu(self.gate_fc1(g))))
        x = x * g[:, :, None, None]
        y = self.left(x) + x
        return torch.cat([y, self.right(x)], 1)


def test_case_01_shadow_rows_for_mul_add_cat_with_readable_names() -> None:
    torch.manual_seed(0)
    model = SEBranchNet().eval()
    quant = quantize_module(model, torch.randn(2, 3, 8, 8), n=4)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    report = fxns.compare_activations(model, quant, batches, mode="shadow")

    by_kind = {r.kind: r for r in report.rows}
    for kind, quant_op in (
        ("mul", "quantized::mul"),
        ("add", "quantized::add"),
        ("cat", "torch.cat"),
    ):
        row = by_kind[kind]
        assert row.quant_ops == (quant_op,)
        assert not math.isnan(row.metrics["sqnr"]) and row.note == ""

    # The mul's own error: float mul of the dequantized inputs the int8 mul got.
    mul = by_kind["mul"]
    sums = Sums()
    graph_nodes = {n.name: n for n in quant.graph.nodes}
    for batch in batches:
        acts = activations(quant, batch)
        node = graph_nodes[mul.quant_nodes[0]]
        a, b = (acts[arg.name].dequantize() for arg in node.args[:2])
        sums.add(a * b, acts[node.name])
    assert mul.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
    assert "pybind11" not in str(report)


class DeadRelu(nn.Module):
    """Case 11: a ReLU whose output is exactly zero for every input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


@pytest.mark.parametrize("mode", ["shadow", "propagated"])
def test_case_11_all_zero_layers_read_as_identical_never_nan(mode: str) -> None:
    torch.manual_seed(0)
    model = DeadRelu().eval()
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)
    quant = quantize_module(model, torch.randn(4, 8))
    report = fxns.compare_activations(model, quant, torch.randn(4, 8), mode=mode)
    for row in report.rows:
        assert not any(math.isnan(v) for v in row.metrics.values()), row
    # fc1 and its ReLU are one fused pair; its output is zero on both sides.
    fused = report["fc1"]
    assert fused.kind == "linear+relu"
    assert fused.metrics["sqnr"] == math.inf
    assert fused.metrics["cosine"] == 1.0
    # Ranking worst-first works with +inf in the table.
    assert report.sorted_rows("sqnr")[-1].name == "fc1"


class TwoConv(nn.Module):
    """Case 12: conv → relu → conv, run over many batches."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.parametrize("mode", ["shadow", "propagated"])
def test_case_12_memory_does_not_grow_with_batches(mode: str) -> None:
    torch.manual_seed(0)
    model = TwoConv().eval()
    quant = quantize_module(model, torch.randn(8, 3, 32, 32))
    rss: dict[int, int] = {}

    def batches() -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        for i in range(1, 101):
            yield torch.randn(8, 3, 32, 32, generator=g)
            if i in (2, 100):
                rss[i] = _rss_bytes()

    report = fxns.compare_activations(model, quant, batches(), mode=mode)
    assert report.meta["batches"] == 100
    # Each batch is about 1 MB of activations per layer: 100 batches kept
    # would add ~300 MB. Allow 10% over the state after two batches, and
    # at most 32 MB in all (one kept batch of every layer is ~3 MB), so that
    # a slow leak cannot hide in the size of the process.
    assert rss[100] <= rss[2] * 1.10, (rss[2], rss[100])
    assert rss[100] - rss[2] < 32 * 2**20, (rss[2], rss[100])
