"""Reference models (``convert_to_reference_fx``) and their lowered twins.

In a reference model each quantized op is a pattern dq → float op → q; fxns
treats the pattern as one operation and reads its value after the ``q``, so a
reference model reports what its lowered twin (``convert_fx`` of the same
prepared model) reports. The lowered numbers are computed here independently.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import (
    convert_fx,
    convert_to_reference_fx,
    prepare_fx,
)

import fxns
from fxns.quantize import quiet_torch_ao

from .conftest import _randomize_batch_norms, unaccounted_nodes
from .reference import Sums, activations


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.act(self.conv2(x)) + x
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return torch.sigmoid(self.fc(self.norm(x)))


@pytest.fixture(scope="module")
def twins() -> tuple[nn.Module, torch.fx.GraphModule, torch.fx.GraphModule, list]:
    torch.manual_seed(0)
    model = Block().eval()
    _randomize_batch_norms(model)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    with quiet_torch_ao():
        prepared = prepare_fx(
            copy.deepcopy(model), get_default_qconfig_mapping("x86"), (batches[0],)
        )
        with torch.no_grad():
            for x in batches:
                prepared(x)
        lowered = convert_fx(copy.deepcopy(prepared))
        reference = convert_to_reference_fx(copy.deepcopy(prepared))
    return model, lowered, reference, batches


@pytest.mark.parametrize("mode", ["shadow", "propagated"])
def test_reference_model_reports_what_its_lowered_twin_reports(
    twins: tuple, mode: str
) -> None:
    model, lowered, reference, batches = twins
    m_ref = fxns.match(model, reference)
    m_low = fxns.match(model, lowered)
    assert m_ref.unmatched_float == m_ref.unmatched_quant == ()
    assert unaccounted_nodes(m_ref) == []
    # dq → op → q is one operation: the pairs line up with the lowered ones.
    assert [(p.name, p.kind, p.quant_kind) for p in m_ref.pairs] == [
        (p.name, p.kind, p.quant_kind) for p in m_low.pairs
    ]
    assert all(len(p.quant_nodes) == 1 for p in m_ref.pairs)

    ref = fxns.compare_activations(model, reference, batches, mode=mode)
    low = fxns.compare_activations(model, lowered, batches, mode=mode)
    assert ref.names == low.names
    for a, b in zip(ref.rows, low.rows, strict=True):
        assert a.metrics["sqnr"] == pytest.approx(b.metrics["sqnr"], abs=0.01), a.name


def test_reference_numbers_equal_the_lowered_model_computed_independently(
    twins: tuple,
) -> None:
    model, lowered, reference, batches = twins
    ref = fxns.compare_activations(model, reference, batches, mode="propagated")
    low_pairs = {p.name: p for p in fxns.match(model, lowered).pairs}
    sums = {row.name: Sums() for row in ref.rows}
    for x in batches:
        f_acts = activations(model, x)
        q_acts = activations(lowered, x)
        for row in ref.rows:
            q_node = low_pairs[row.name].quant_nodes[-1]
            sums[row.name].add(f_acts[row.float_nodes[-1]], q_acts[q_node])
    for row in ref.rows:
        expected = sums[row.name].sqnr()
        assert row.metrics["sqnr"] == pytest.approx(expected, abs=0.01), row.name
    # The quantization error is there: the reference model is not read as float.
    assert all(row.metrics["sqnr"] < 60 for row in ref.rows if row.kind != "flatten")


def test_reference_weights_are_extracted(twins: tuple) -> None:
    model, lowered, reference, _ = twins
    ref = fxns.compare_weights(model, reference)
    low = fxns.compare_weights(model, lowered)
    assert ref.names == low.names == ["conv", "conv2", "fc"]
    for a, b in zip(ref.rows, low.rows, strict=True):
        assert a.metrics["sqnr"] == pytest.approx(b.metrics["sqnr"], abs=0.01)
    # Independent: the reference conv2 holds its weight fake-quantized.
    sums = Sums()
    sums.add(model.conv2.weight, reference.conv2.get_weight())
    assert ref["conv2"].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
    assert ref["conv2"].metrics["sqnr"] > 40
