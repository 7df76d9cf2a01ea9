"""Partly quantized models: layers with qconfig ``None`` stay in float.

Those layers pair with their float twins and read as identical in shadow
mode (same input, same float computation), not as errors or gaps; in
propagated mode they carry the error that reaches them, computed here
independently.
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fxns
from fxns.quantize import quiet_torch_ao

from .conftest import _randomize_batch_norms, unaccounted_nodes
from .reference import Sums, activations


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.conv2(x) + x
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize(
    ("left_in_float", "row", "quant_op"),
    [
        ({"module_name": "conv2"}, "conv2", "nn.Conv2d"),
        ({"object_type": operator.add}, "add", "operator.add"),
    ],
    ids=["module", "function"],
)
def test_fx_layers_left_in_float_read_as_identical(
    left_in_float: dict[str, Any], row: str, quant_op: str
) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    _randomize_batch_norms(model)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    mapping = get_default_qconfig_mapping("x86")
    if "module_name" in left_in_float:
        mapping.set_module_name(left_in_float["module_name"], None)
    else:
        mapping.set_object_type(left_in_float["object_type"], None)
    with quiet_torch_ao():
        prepared = prepare_fx(copy.deepcopy(model), mapping, (batches[0],))
        for x in batches:
            prepared(x)
        quant = convert_fx(prepared)

    m = fxns.match(model, quant)
    assert m[row].quant_ops == (quant_op,)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []

    shadow = fxns.compare_activations(model, quant, batches, mode="shadow")
    assert shadow[row].metrics["sqnr"] == math.inf
    assert shadow[row].metrics["cosine"] == 1.0 and shadow[row].note == ""
    others = [r for r in shadow.rows if r.name != row]
    assert all(20 < r.metrics["sqnr"] < 60 for r in others), shadow

    propagated = fxns.compare_activations(model, quant, batches, mode="propagated")
    sums = Sums()
    for x in batches:
        f_acts, q_acts = activations(model, x), activations(quant, x)
        sums.add(f_acts[m[row].float_nodes[-1]], q_acts[m[row].quant_nodes[-1]])
    assert propagated[row].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
    assert propagated[row].metrics["sqnr"] < 60  # the error that reached it

    weights = fxns.compare_weights(model, quant)
    if row == "conv2":
        assert weights["conv2"].metrics["sqnr"] == math.inf


class EagerPartial(nn.Module):
    """Quantized conv, then a float head between DeQuantStub and QuantStub."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dequant = tq.DeQuantStub()
        self.head = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sigmoid())
        self.requant = tq.QuantStub()
        self.out = nn.Conv2d(8, 4, 1)
        self.final = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dequant(self.conv(self.quant(x)))
        x = self.requant(self.head(x))
        return self.final(self.out(x))


def test_eager_float_head_reads_as_identical() -> None:
    torch.manual_seed(0)
    model = EagerPartial().eval()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    quant = copy.deepcopy(model)
    quant.qconfig = tq.get_default_qconfig("x86")
    quant.head.qconfig = None
    with quiet_torch_ao():
        tq.prepare(quant, inplace=True)
        for x in batches:
            quant(x)
        tq.convert(quant, inplace=True)

    m = fxns.match(model, quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []
    shadow = fxns.compare_activations(model, quant, batches)
    assert shadow.names == ["conv", "head.0", "head.1", "out"]
    for name in ("head.0", "head.1"):
        assert shadow[name].metrics["sqnr"] == math.inf, name
    # The quantized layers around it do show their error.
    assert 20 < shadow["conv"].metrics["sqnr"] < 60
    assert 20 < shadow["out"].metrics["sqnr"] < 60

    # The QuantStub after the head belongs to `out`: its own error includes it.
    sums = Sums()
    with torch.no_grad():
        for x in batches:
            q_in = quant.requant(quant.head(quant.dequant(quant.conv(quant.quant(x)))))
            sums.add(model.out(q_in.dequantize()), quant.out(q_in))
    assert shadow["out"].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
