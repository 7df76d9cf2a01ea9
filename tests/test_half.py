"""float16 and bfloat16: fp16 dynamic qconfigs and half-precision models.

Both are compared, never skipped; the metrics are computed in float32 from
the half values, and checked here against float64 sums.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn
from torch.ao.quantization import QConfigMapping, float16_dynamic_qconfig
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fxns

from .conftest import _randomize_batch_norms, unaccounted_nodes
from .reference import Sums, activations


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(8, 8)
        self.lstm = nn.LSTM(8, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(self.pre(x))[0])


@pytest.mark.parametrize("flow", ["eager", "fx"])
def test_fp16_dynamic_quantization_is_compared(flow: str) -> None:
    torch.manual_seed(0)
    model = Tagger().eval()
    x = torch.randn(5, 2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flow == "eager":
            quant = tq.quantize_dynamic(
                copy.deepcopy(model), {nn.Linear, nn.LSTM}, dtype=torch.float16
            )
        else:
            mapping = (
                QConfigMapping()
                .set_object_type(nn.Linear, float16_dynamic_qconfig)
                .set_object_type(nn.LSTM, float16_dynamic_qconfig)
            )
            quant = convert_fx(prepare_fx(copy.deepcopy(model), mapping, (x,)))

    m = fxns.match(model, quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []
    report = fxns.compare_activations(model, quant, x, mode="propagated")
    names = ["pre", "lstm[output]", "lstm[h_n]", "lstm[c_n]", "fc"]
    assert report.names == names
    with torch.no_grad():
        f_pre, q_pre = model.pre(x), quant.get_submodule("pre")(x)
        f_out, (f_h, f_c) = model.lstm(f_pre)
        q_out, (q_h, q_c) = quant.get_submodule("lstm")(q_pre)
        f_fc, q_fc = model.fc(f_out), quant.get_submodule("fc")(q_out)
    expected = [(f_pre, q_pre), (f_out, q_out), (f_h, q_h), (f_c, q_c), (f_fc, q_fc)]
    for name, (f, q) in zip(names, expected, strict=True):
        sums = Sums()
        sums.add(f, q)
        assert report[name].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
        # fp16 weights: far more accurate than int8, but not exact.
        assert 50 < report[name].metrics["sqnr"] < 150, name

    shadow = fxns.compare_activations(model, quant, x, mode="shadow")
    assert shadow.names == names and all(row.note == "" for row in shadow.rows)
    weights = fxns.compare_weights(model, quant)
    assert weights.names == [
        "pre",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "fc",
    ]
    assert all(60 < row.metrics["sqnr"] < 100 for row in weights.rows), weights


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.conv2(x) + x
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_model_is_compared_in_float32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = Small().eval()
    _randomize_batch_norms(model)
    half = copy.deepcopy(model).to(dtype)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]

    m = fxns.match(model, half)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []

    # The half model gets the float batches in its own type.
    report = fxns.compare_activations(model, half, batches, mode="propagated")
    sums = {row.name: Sums() for row in report.rows}
    for x in batches:
        f_acts = activations(model, x)
        h_acts = activations(half, x.to(dtype))
        for row in report.rows:
            sums[row.name].add(f_acts[row.float_nodes[-1]], h_acts[row.quant_nodes[-1]])
    for row in report.rows:
        assert row.metrics["sqnr"] == pytest.approx(sums[row.name].sqnr(), abs=0.01)
        assert 35 < row.metrics["sqnr"] < 100, row.name

    # Shadow: the float layer on the half layer's own input, upcast.
    shadow = fxns.compare_activations(model, half, batches, mode="shadow")
    assert shadow.names == report.names
    fc = Sums()
    for x in batches:
        h_acts = activations(half, x.to(dtype))
        h_in = h_acts["mean"]
        with torch.no_grad():
            fc.add(model.fc(h_in.float()), half.fc(h_in))
    assert shadow["fc"].metrics["sqnr"] == pytest.approx(fc.sqnr(), abs=0.01)

    weights = fxns.compare_weights(model, half)
    expected = Sums()
    expected.add(model.conv2.weight, half.conv2.weight)
    assert weights["conv2"].metrics["sqnr"] == pytest.approx(expected.sqnr(), abs=0.01)
