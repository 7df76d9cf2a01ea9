"""Sensitivity: one layer at a time on real quantized kernels, checked against
models quantized independently with plain prepare_fx/convert_fx."""

from __future__ import annotations

import copy
import io
import math
import operator

import pytest
import torch
from torch import nn
from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fxns
from fxns.quantize import quiet_torch_ao
from fxns.sensitivity import GAIN, SQNR_ALONE, SQNR_FLOAT

from .conftest import snapshot
from .reference import Sums


class Tiny(nn.Module):
    """conv+bn+relu, a module called twice, a residual add, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.MaxPool2d(3, stride=1, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.act(self.conv2(x))
        z = self.act(self.conv3(y))
        # cat shares one observer between its inputs and its output.
        x = torch.cat([x + z, y], dim=1)
        return self.fc(torch.flatten(self.pool(x), 1))


class SharedHardswish(nn.Module):
    """A module that convert_fx swaps, called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))))


def _tiny() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = Tiny().eval()
    model.bn1.running_mean.uniform_(-0.2, 0.2)
    model.bn1.running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(0)
    return model, [torch.randn(2, 3, 12, 12, generator=g) for _ in range(3)]


def _independent_sqnr(
    model: nn.Module, mapping: QConfigMapping, batches: list[torch.Tensor]
) -> float:
    """Output SQNR of a model quantized from scratch, in float64."""
    with quiet_torch_ao():
        prepared = prepare_fx(copy.deepcopy(model), mapping, (batches[0],))
        with torch.no_grad():
            for b in batches:
                prepared(b)
        quant = convert_fx(prepared)
    sums = Sums()
    with torch.no_grad():
        for b in batches:
            sums.add(model(b), quant(b))
    return sums.sqnr()


@pytest.fixture(scope="module")
def tiny_report() -> tuple[nn.Module, list[torch.Tensor], fxns.Report]:
    model, batches = _tiny()
    return model, batches, fxns.sensitivity(model, batches)


def test_every_layer_is_measured_and_ranked_by_gain(tiny_report) -> None:
    _, _, report = tiny_report
    assert report.mode == "sensitivity"
    assert set(report.names) == {
        "conv1",
        "conv2",
        "act",
        "conv3",
        "act:1",
        "add",
        "cat",
        "pool",
        "flatten",
        "fc",
    }
    assert all(row.note == "" for row in report.rows), [r.note for r in report.rows]
    gains = [row.metrics[GAIN] for row in report.rows]
    assert gains == sorted(gains, reverse=True)
    baseline = report.meta["baseline_sqnr"]
    for row in report.rows:
        assert list(row.metrics) == [GAIN, SQNR_FLOAT, SQNR_ALONE]
        assert row.metrics[GAIN] == pytest.approx(row.metrics[SQNR_FLOAT] - baseline)


# How a user addresses each layer of Tiny in a QConfigMapping, written out by
# hand: modules called once by name, functions and the second call of a
# module by (parent, type, call index).
_BY_HAND = {
    "conv1": ("name", "conv1"),
    "conv2": ("name", "conv2"),
    "act": ("order", nn.MaxPool2d, 0),
    "conv3": ("name", "conv3"),
    "act:1": ("order", nn.MaxPool2d, 1),
    "add": ("order", operator.add, 0),
    "cat": ("order", torch.cat, 0),
    "pool": ("name", "pool"),
    "flatten": ("order", torch.flatten, 0),
    "fc": ("name", "fc"),
}


def _set(mapping: QConfigMapping, layer: str, qconfig: object) -> QConfigMapping:
    how = _BY_HAND[layer]
    if how[0] == "name":
        return mapping.set_module_name(how[1], qconfig)
    return mapping.set_module_name_object_type_order("", how[1], how[2], qconfig)


@pytest.mark.filterwarnings("ignore:All inputs of this cat operator")
def test_numbers_match_models_quantized_independently(tiny_report) -> None:
    model, batches, report = tiny_report
    qconfig = get_default_qconfig_mapping("x86").global_qconfig

    full = _independent_sqnr(model, get_default_qconfig_mapping("x86"), batches)
    assert report.meta["baseline_sqnr"] == pytest.approx(full, abs=1e-4)

    # Every layer, both ways, against a model quantized and calibrated from
    # scratch: this also checks that reused calibration is exact.
    assert set(report.names) == set(_BY_HAND)
    for row in report.rows:
        only_float = _set(get_default_qconfig_mapping("x86"), row.name, None)
        only_quant = _set(QConfigMapping(), row.name, qconfig)
        assert row.metrics[SQNR_FLOAT] == pytest.approx(
            _independent_sqnr(model, only_float, batches), abs=1e-4
        ), row.name
        assert row.metrics[SQNR_ALONE] == pytest.approx(
            _independent_sqnr(model, only_quant, batches), abs=1e-4
        ), row.name
    assert report["act"].metrics[SQNR_ALONE] != report["act:1"].metrics[SQNR_ALONE]


def test_a_swapped_module_called_twice_is_noted_not_measured() -> None:
    model = SharedHardswish().eval()
    batches = [torch.randn(2, 3, 10, 10) for _ in range(2)]
    report = fxns.sensitivity(model, batches)
    for name in ("act", "act:1"):
        assert "called 2 times" in report[name].note
        assert report[name].metrics == {}
    assert math.isfinite(report["conv1"].metrics[GAIN])
    assert report.rows[-1].name in ("act", "act:1")  # unmeasured rows go last


def test_cost_is_as_documented(tiny_report) -> None:
    _, batches, report = tiny_report
    n_layers, b = len(report.rows), len(batches)
    calibrations = report.meta["calibrations"]
    assert 1 <= calibrations < 2 * n_layers  # most calibrations were reused
    assert report.meta["model_runs"] == (2 * n_layers + 2) * b + calibrations * b


def test_layers_restricts_the_work_and_unknown_names_fail() -> None:
    model, batches = _tiny()
    report = fxns.sensitivity(model, batches, layers=["fc"])
    assert report.names == ["fc"]
    with pytest.raises(fxns.ModelError, match=r"no layer named 'conv9'.*conv1"):
        fxns.sensitivity(model, batches, layers=["conv9"])


def test_the_model_is_not_changed_and_a_bar_shows_on_a_terminal(monkeypatch) -> None:
    model, batches = _tiny()
    check = snapshot(model)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    fxns.sensitivity(model, batches, layers=["conv1", "fc"])
    check()
    assert "fxns sensitivity" in stream.getvalue()


def test_dynamic_backend_measures_the_linear_layers() -> None:
    model, batches = _tiny()
    report = fxns.sensitivity(model, batches, backend="dynamic", layers=["conv1", "fc"])
    assert report.names == ["fc", "conv1"]
    assert math.isfinite(report["fc"].metrics[SQNR_ALONE])
    # Dynamic quantization leaves convs in float: nothing to gain or lose
    # beyond the float rounding of folding the batch norm.
    assert report["conv1"].metrics[GAIN] == 0.0
    assert report["conv1"].metrics[SQNR_ALONE] > 100.0


def test_sorting_sqnr_metrics_puts_the_lowest_first(tiny_report) -> None:
    _, _, report = tiny_report
    alone = [r.metrics[SQNR_ALONE] for r in report.sorted_rows(SQNR_ALONE)]
    assert alone == sorted(alone)


def test_summary_gives_the_baseline_and_the_best_gain(tiny_report) -> None:
    _, _, report = tiny_report
    best = report.rows[0]
    assert report.summary() == (
        f"fxns sensitivity comparison: 10 layers, 3 batches; fully quantized output "
        f"{report.meta['baseline_sqnr']:.1f} dB; keeping {best.name} in float gains "
        f"{best.metrics[GAIN]:+.2f} dB"
    )
