"""fxns.checks: which model is quantized, and is the quantized one made from the
float one? Prepared, float, swapped and foreign models are caught before the
comparison; every legitimately quantized kind of model passes silently."""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from torch import fx, nn
from torch.ao.quantization import (
    QConfigMapping,
    float16_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import (
    convert_fx,
    convert_to_reference_fx,
    prepare_fx,
    prepare_qat_fx,
)

import fxns
from fxns.checks import WEIGHT_SAMPLE, quantization_of, weight_mismatch_warning
from fxns.quantize import quiet_torch_ao
from fxns.trace import trace
from fxns.weights import weight_pairs

from .conftest import quantize_module


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Net().eval()


@functools.cache
def _quantized(seed: int = 0) -> fx.GraphModule:
    return quantize_module(_net(seed), _x())


def _prepared(mapping: QConfigMapping, qat: bool = False) -> fx.GraphModule:
    model = _net()
    with quiet_torch_ao():
        if qat:
            prepared = prepare_qat_fx(model.train(), mapping, (_x(),))
        else:
            prepared = prepare_fx(model, mapping, (_x(),))
        with torch.no_grad():
            prepared(_x())
    return prepared.eval()


def _static(convert: Callable[[fx.GraphModule], fx.GraphModule]) -> nn.Module:
    prepared = _prepared(get_default_qconfig_mapping("x86"))
    with quiet_torch_ao():
        return convert(prepared)


def _fp16_dynamic_fx() -> nn.Module:
    mapping = QConfigMapping().set_object_type(nn.Linear, float16_dynamic_qconfig)
    with quiet_torch_ao():
        return convert_fx(_prepared(mapping))


def _fp16_dynamic_eager() -> nn.Module:
    with quiet_torch_ao():
        return tq.quantize_dynamic(_net(), {nn.Linear}, dtype=torch.float16)


def _qat_prepared() -> nn.Module:
    return _prepared(get_default_qat_qconfig_mapping("x86"), qat=True)


# Every kind of model that really is quantized (or simulates it).
QUANTIZED = {
    "convert_fx": lambda: _static(convert_fx),
    "reference": lambda: _static(convert_to_reference_fx),
    "qat-prepared (fake-quant)": _qat_prepared,
    "fp16 dynamic (fx)": _fp16_dynamic_fx,
    "fp16 dynamic (eager)": _fp16_dynamic_eager,
    "half precision": lambda: copy.deepcopy(_net()).half(),
}


@pytest.mark.parametrize("name", list(QUANTIZED))
def test_quantized_models_of_every_kind_count_as_quantized(name: str) -> None:
    model = QUANTIZED[name]()
    assert quantization_of(trace(model)).quantized


@pytest.mark.parametrize("name", ["convert_fx", "qat-prepared (fake-quant)"])
def test_quantized_models_compare_without_a_warning(name: str) -> None:
    model = QUANTIZED[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fxns.compare_activations(_net(), model, _x(), mode="propagated")


def test_fp16_dynamic_models_compare_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model in (_fp16_dynamic_fx(), _fp16_dynamic_eager()):
            fxns.compare_activations(_net(), model, _x(), mode="propagated")


def test_float_and_prepared_models_count_as_unquantized() -> None:
    assert not quantization_of(trace(_net())).quantized
    prepared = quantization_of(_prepared(get_default_qconfig_mapping("x86")))
    assert not prepared.quantized and prepared.observers > 0


def test_a_prepared_model_warns_that_convert_fx_is_missing() -> None:
    prepared = _prepared(get_default_qconfig_mapping("x86"))
    with pytest.warns(
        UserWarning,
        match=r"the quantized model \(GraphModule\) has no quantized operation.*"
        r"observer\(s\) and looks like a prepared model: did you forget convert_fx",
    ) as caught:
        report = fxns.compare_activations(_net(), prepared, _x())
    assert caught[0].filename == __file__  # points at the caller's line
    assert report.rows  # still compared


def test_a_float_model_as_the_quantized_one_warns() -> None:
    with pytest.warns(UserWarning, match=r"it looks like a float model"):
        fxns.compare_weights(_net(), _net())
    with pytest.warns(UserWarning, match=r"it looks like a float model"):
        fxns.add_loggers(_net(), _net())


def test_a_variant_that_is_not_quantized_is_named() -> None:
    with pytest.warns(UserWarning, match=r"the quantized model 'b' \(Net\) has no"):
        fxns.compare_variants(_net(), {"a": _quantized(), "b": _net()}, _x())


SWAPPED = {
    "compare_weights": lambda f, q: fxns.compare_weights(q, f),
    "compare_activations": lambda f, q: fxns.compare_activations(q, f, _x()),
    "compare_variants": lambda f, q: fxns.compare_variants(q, {"a": f}, _x()),
    "add_loggers": lambda f, q: fxns.add_loggers(q, f),
    "add_shadows": lambda f, q: fxns.add_shadows(q, f),
}


@pytest.mark.parametrize("entry", list(SWAPPED))
def test_swapped_models_are_a_model_error_at_every_entry_point(entry: str) -> None:
    with pytest.raises(
        fxns.ModelError,
        match=r"the float model \(GraphModule\) has quantized operations "
        r"\(module 'conv' \(Conv2d\).*and the quantized model \(Net\) has none: "
        r"the two models look swapped; pass the float model first",
    ):
        SWAPPED[entry](_net(), _quantized())


def test_sensitivity_of_a_quantized_model_is_a_model_error() -> None:
    with pytest.raises(
        fxns.ModelError,
        match=r"the float model \(GraphModule\) has quantized operations .*"
        r"sensitivity quantizes the float model itself: pass the float model",
    ):
        fxns.sensitivity(_quantized(), _x())


def test_two_quantized_models_compare_in_propagated_mode_only() -> None:
    q = _quantized()
    report = fxns.compare_activations(q, q, _x(), mode="propagated")
    assert all(row.metrics["sqnr"] == float("inf") for row in report.rows)
    with pytest.raises(
        fxns.ModelError,
        match=r"the float model \(GraphModule\) has quantized kernels \(module "
        r"'conv' \(Conv2d\).*shadow mode runs each float layer on float "
        r"inputs.*to compare two quantized models, use propagated mode",
    ):
        fxns.compare_activations(q, q, _x(), mode="shadow")


def test_a_model_quantized_from_other_weights_warns() -> None:
    with pytest.warns(
        UserWarning,
        match=r"the quantized model's weights do not match the float model's "
        r"\(2 of 2 weighted layers checked below 5 dB: conv: -?\d+\.\d dB, fc: "
        r"-?\d+\.\d dB\): is it made from this float model\?",
    ):
        fxns.compare_activations(_net(0), _quantized(1), _x())
    with pytest.warns(UserWarning, match="weights do not match"):
        fxns.add_shadows(_net(0), _quantized(1))


class Wider(Net):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4 * 6 * 6, 7)


def test_a_model_of_another_shape_warns_with_the_shapes() -> None:
    torch.manual_seed(0)
    other = quantize_module(Wider().eval(), _x())
    with pytest.warns(
        UserWarning, match=r"shapes differ: fc: \[5, 144\] vs \[7, 144\]"
    ):
        fxns.compare_activations(_net(), other, _x(), mode="propagated")


def test_the_weights_of_its_own_float_model_pass() -> None:
    matching = fxns.match(_net(), _quantized())
    assert weight_mismatch_warning(matching) == ""


def test_the_weight_check_reads_a_few_layers_spread_over_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(8, 8) for _ in range(20))).eval()
    matching = fxns.match(model, quantize_module(model, torch.randn(2, 8)))
    read: list[str] = []

    def spy(m: fxns.Matching) -> Any:
        read.extend(p.name for p in m.pairs)
        return weight_pairs(m)

    monkeypatch.setattr("fxns.checks.weight_pairs", spy)
    assert weight_mismatch_warning(matching) == ""
    # Every third of the 20 layers: the first, the middle, the last ones.
    assert read == [str(i) for i in range(0, 20, 3)]
    assert len(read) <= WEIGHT_SAMPLE
