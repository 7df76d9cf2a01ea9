"""Rearrangements (reshape, transpose, permute, flatten) are compared by derivation.

Their values hold the elements of a compared value in another order, so fxns
takes their numbers from that value's probe instead of passing over memory
again (``fxns.instrument.DerivedProbe``). These tests check the derived rows
against numbers computed independently from every node's activations, in
both modes, and that only true rearrangements are derived.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fxns
from fxns.instrument import DerivedProbe, build_propagated, rearranged_pairs

from .conftest import quantize_module
from .reference import Sums, activations


class Attention(nn.Module):
    """Projections, head split (reshape + transpose), scores, merge, flatten."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = self.k(x).reshape(b, t, self.heads, d // self.heads).permute(0, 2, 3, 1)
        scores = torch.matmul(q, k)
        merged = torch.softmax(scores, dim=-1).transpose(1, 2).reshape(b, t, -1)
        return torch.flatten(self.out(merged[..., :d]), 1)


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, torch.fx.GraphModule, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = Attention().eval()
    batches = [torch.randn(2, 8, 32) for _ in range(3)]
    return model, quantize_module(model, batches[0], n=3), batches


def test_rearrangements_of_compared_values_are_derived(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, _ = models
    m = fxns.match(model, quant)
    sources = rearranged_pairs(m)
    kinds = {m[name].kind for name in sources}
    assert {"reshape", "transpose", "permute", "flatten"} <= kinds
    # Not a rearrangement: softmax, matmul, the slice (a subset).
    for name in sources:
        assert m[name].kind in {"reshape", "transpose", "permute", "flatten"}
    inst = build_propagated(m)
    assert all(isinstance(inst.probes[name], DerivedProbe) for name in sources)
    # No probe call in the graph for them.
    calls = [n for n in inst.module.graph.nodes if n.op == "call_module"]
    assert sum(str(n.target).startswith("fxns_probe_") for n in calls) == len(
        m.pairs
    ) - len(sources)


def test_propagated_rows_of_rearrangements_match_independent_sums(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, batches = models
    m = fxns.match(model, quant)
    report = fxns.compare_activations(model, quant, batches, mode="propagated")
    derived = rearranged_pairs(m)
    assert derived
    for name in derived:
        sums = Sums()
        for x in batches:
            f_acts, q_acts = activations(model, x), activations(quant, x)
            sums.add(f_acts[m[name].float_nodes[-1]], q_acts[m[name].quant_nodes[-1]])
        row = report[name]
        assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=1e-4), name
        assert row.metrics["cosine"] == pytest.approx(sums.cosine(), abs=1e-7)
        assert row.metrics["mse"] == pytest.approx(sums.mse(), rel=1e-5)
        assert row.metrics["max_abs"] == pytest.approx(sums.max_abs, rel=1e-6)
        assert row.elements == sums.n


def test_shadow_rows_of_rearrangements_read_as_identical(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, batches = models
    m = fxns.match(model, quant)
    report = fxns.compare_activations(model, quant, batches, mode="shadow")
    derived = rearranged_pairs(m)
    for name in derived:
        row = report[name]
        assert row.metrics["sqnr"] == math.inf, name
        assert row.metrics["cosine"] == 1.0
        assert row.metrics["mse"] == row.metrics["max_abs"] == 0.0
        # Every element of every batch, as the probe would have counted.
        n = sum(activations(quant, x)[m[name].quant_nodes[-1]].numel() for x in batches)
        assert row.elements == n
    # What is not a rearrangement is measured, with a real error.
    assert 10 < report["q"].metrics["sqnr"] < 80
