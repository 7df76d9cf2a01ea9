"""Bad input, entry point by entry point: each gets a typed error that names the
culprit and the fix, or a result and a warning where a result still makes sense.

Every case here has a row in docs/bad-input.md (checked below).
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.ao.nn.quantized.functional as qF
from torch import nn
from torch.nn import functional as F

import fxns
from fxns.quantize import quantize_fx, quiet_torch_ao
from fxns.report import LayerResult, Report, VariantReport

from .conftest import quantize_module

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"


def _float() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 5),
    ).eval()


@functools.cache
def _models() -> tuple[nn.Module, torch.fx.GraphModule]:
    model = _float()
    return model, quantize_module(model, torch.randn(2, 3, 8, 8))


@functools.cache
def _unrelated() -> torch.fx.GraphModule:
    """A quantized model with no operation kind in common with _float()."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(4), nn.Hardswish()).eval()
    return quantize_module(model, torch.randn(2, 4))


@functools.cache
def _other_linear() -> torch.fx.GraphModule:
    """A quantized model that shares one op kind (linear) with _float()."""
    torch.manual_seed(0)
    return quantize_module(nn.Sequential(nn.Linear(4, 4)).eval(), torch.randn(2, 4))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8)


def _f() -> nn.Module:
    return _models()[0]


def _q() -> torch.fx.GraphModule:
    return _models()[1]


class ReturnsNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> None:
        self.a(x)
        return None


class FloatLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(4, 8))
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)


class PrepackingLinear(nn.Module):
    """Quantized twin of FloatLinear that packs its weight on every call, for
    whatever engine is selected; its weight has a non-zero zero point, which
    the onednn engine cannot pack."""

    def __init__(self, f: FloatLinear) -> None:
        super().__init__()
        w = torch.quantize_per_tensor(f.w.detach(), 0.02, 3, torch.qint8)
        self.register_buffer("qw", w)
        self.b = f.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qx = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
        return qF.linear(qx, self.qw, self.b, 0.1, 128).dequantize()


class Fc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@functools.cache
def _fp16_dynamic() -> tuple[nn.Module, nn.Module]:
    """A float16 dynamic-quantized model, packed on the x86 engine."""
    torch.manual_seed(0)
    model = Fc().eval()
    with quiet_torch_ao():
        quant = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, dtype=torch.float16
        )
    return model, quant


def _eager_without_stub() -> nn.Module:
    """Eager-mode quantized, without the QuantStub its first layer needs."""
    model = Fc().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    with quiet_torch_ao():
        prepared = torch.ao.quantization.prepare(model)
        prepared(torch.randn(2, 8))
        return torch.ao.quantization.convert(prepared)


@pytest.fixture
def engine() -> Iterator[Callable[[str], None]]:
    """Set the quantized engine for one test; the old one comes back after."""
    before = torch.backends.quantized.engine

    def select(name: str) -> None:
        torch.backends.quantized.engine = name

    yield select
    torch.backends.quantized.engine = before


def _loggers_of_two_calls() -> tuple[nn.Module, nn.Module]:
    f_log, _ = fxns.add_loggers(_f(), _q())
    _, q_log = fxns.add_loggers(_f(), _q())
    return f_log, q_log


def _loggers_run_on_different_batches() -> Report:
    f_log, q_log = fxns.add_loggers(_f(), _q())
    f_log(torch.randn(4, 3, 8, 8))
    q_log(torch.randn(2, 3, 8, 8))
    return fxns.collect(f_log, q_log)


def _sensitivity_report() -> Report:
    metrics = {"gain": 1.5, "sqnr_float": 31.5}
    return Report(
        [LayerResult("fc", "linear", ("fc",), ("fc",), metrics)], "sensitivity"
    )


def _report() -> Report:
    row = LayerResult("conv1", "conv2d", ("conv1",), ("conv1",), {"sqnr": 30.0})
    return Report([row], mode="shadow")


@dataclass(frozen=True)
class Bad:
    """One bad input: the call, the error it must raise and what the message says."""

    id: str
    call: Callable[[], Any]
    error: type[Exception]
    match: str


CASES = [
    # --- objects that are not modules --------------------------------------
    Bad(
        "match/float-not-a-module",
        lambda: fxns.match({"weight": 1}, _q()),
        fxns.ModelError,
        r"float model must be a torch.nn.Module, got dict; pass the model object",
    ),
    Bad(
        "match/quant-is-a-path",
        lambda: fxns.match(_f(), "model_int8.pt"),
        fxns.ModelError,
        r"quantized model must be a torch.nn.Module, got str",
    ),
    Bad(
        "compare_weights/not-a-module",
        lambda: fxns.compare_weights(None, _q()),
        fxns.ModelError,
        r"float model must be a torch.nn.Module, got NoneType",
    ),
    Bad(
        "compare_activations/state-dict",
        lambda: fxns.compare_activations(_f(), _q().state_dict(), _x()),
        fxns.ModelError,
        r"quantized model .* got OrderedDict; pass the model object itself "
        r"\(not its state_dict",
    ),
    Bad(
        "compare_variants/list-of-models",
        lambda: fxns.compare_variants(_f(), [_q()], _x()),
        fxns.ModelError,
        r"variants must be a dict of name → quantized model, got list",
    ),
    Bad(
        "compare_variants/variant-not-a-module",
        lambda: fxns.compare_variants(_f(), {"x86": "q.pt"}, _x()),
        fxns.ModelError,
        r"variant 'x86' is a str, not a torch.nn.Module",
    ),
    Bad(
        "compare_variants/no-variants",
        lambda: fxns.compare_variants(_f(), {}, _x()),
        fxns.ModelError,
        r"no variants given",
    ),
    Bad(
        "add_loggers/not-a-module",
        lambda: fxns.add_loggers(_f(), 3),
        fxns.ModelError,
        r"quantized model must be a torch.nn.Module, got int",
    ),
    Bad(
        "add_shadows/not-a-module",
        lambda: fxns.add_shadows([], _q()),
        fxns.ModelError,
        r"float model must be a torch.nn.Module, got list",
    ),
    Bad(
        "collect/user-model",
        lambda: fxns.collect(_f()),
        fxns.ModelError,
        r"collect\(\) takes the two models returned by add_loggers",
    ),
    Bad(
        "collect/not-a-module",
        lambda: fxns.collect("shadow.pt"),
        fxns.ModelError,
        r"collect\(\) takes models, got a str",
    ),
    Bad(
        "collect/nothing",
        lambda: fxns.collect(),
        fxns.ModelError,
        r"collect\(\) takes the two models",
    ),
    Bad(
        "collect/one-logger",
        lambda: fxns.collect(fxns.add_loggers(_f(), _q())[0]),
        fxns.ModelError,
        r"collect\(\) takes the two models returned by add_loggers",
    ),
    Bad(
        "collect/loggers-of-two-calls",
        lambda: fxns.collect(*_loggers_of_two_calls()),
        fxns.ModelError,
        r"different add_loggers calls",
    ),
    # --- a quantized model not made from the float one ------------------------
    Bad(
        "compare_activations/unrelated-model",
        lambda: fxns.compare_activations(_f(), _unrelated(), _x()),
        fxns.ModelError,
        r"no operation of the quantized model matches one of the float model "
        r"\(operations: 4 in the float model \(Sequential\), 2 in the quantized "
        r"model.*is the quantized model made from this float model\?",
    ),
    Bad(
        "compare_weights/unrelated-model",
        lambda: fxns.compare_weights(_f(), _unrelated()),
        fxns.ModelError,
        r"no operation of the quantized model matches",
    ),
    Bad(
        "add_shadows/unrelated-model",
        lambda: fxns.add_shadows(_f(), _unrelated()),
        fxns.ModelError,
        r"no operation of the quantized model matches",
    ),
    Bad(
        "compare_activations/partly-related-model",
        lambda: fxns.compare_activations(_f(), _other_linear(), _x()),
        fxns.ModelError,
        r"the quantized model fails on batch 0 .* although the float model runs "
        r"on it: its module '0' \(Linear\) fails .*is it made from this float "
        r"model\? \(matched 1 of 1 quantized ops",
    ),
    Bad(
        "compare_activations/swapped-models",
        lambda: fxns.compare_activations(_q(), _f(), _x()),
        fxns.ModelError,
        r"the float model \(GraphModule\) has quantized operations \(module '0' "
        r"\(ConvReLU2d\).*and the quantized model \(Sequential\) has none: the two "
        r"models look swapped; pass the float model first and the quantized model "
        r"second",
    ),
    Bad(
        "compare_weights/swapped-models",
        lambda: fxns.compare_weights(_q(), _f()),
        fxns.ModelError,
        r"the two models look swapped; pass the float model first",
    ),
    Bad(
        "match/swapped-models",
        lambda: fxns.match(_q(), _f()),
        fxns.ModelError,
        r"the two models look swapped; pass the float model first",
    ),
    Bad(
        "add_shadows/swapped-models",
        lambda: fxns.add_shadows(_q(), _f()),
        fxns.ModelError,
        r"the two models look swapped",
    ),
    Bad(
        "compare_activations/quantized-float-model-in-shadow-mode",
        lambda: fxns.compare_activations(_q(), _q(), _x()),
        fxns.ModelError,
        r"the float model \(GraphModule\) has quantized kernels \(module '0' "
        r"\(ConvReLU2d\).*shadow mode runs each float layer on float inputs, which "
        r"they cannot take.*to compare two quantized models, use propagated mode",
    ),
    Bad(
        "sensitivity/quantized-model",
        lambda: fxns.sensitivity(_q(), _x()),
        fxns.ModelError,
        r"the float model \(GraphModule\) has quantized operations .*and "
        r"sensitivity quantizes the float model itself: pass the float model it "
        r"was made from",
    ),
    Bad(
        "compare_activations/quantized-model-returns-none",
        lambda: fxns.compare_activations(
            ReturnsNone().eval(),
            quantize_module(ReturnsNone().eval(), torch.randn(2, 8)),
            torch.randn(2, 8),
        ),
        fxns.ModelError,
        r"the quantized model has no operations torch.fx can see and returns None"
        r".*return the values to compare",
    ),
    # --- empty data -----------------------------------------------------------
    Bad(
        "compare_activations/empty-list",
        lambda: fxns.compare_activations(_f(), _q(), []),
        fxns.DataError,
        r"data is empty: give at least one batch",
    ),
    Bad(
        "compare_activations/empty-generator",
        lambda: fxns.compare_activations(_f(), _q(), (x for x in [])),
        fxns.DataError,
        r"data is empty",
    ),
    Bad(
        "compare_activations/empty-batch",
        lambda: fxns.compare_activations(_f(), _q(), torch.randn(0, 3, 8, 8)),
        fxns.DataError,
        r"batch 0 is empty \(Tensor\[0, 3, 8, 8\] float32\); drop empty batches",
    ),
    Bad(
        "compare_activations/data-is-none",
        lambda: fxns.compare_activations(_f(), _q(), None),
        fxns.DataError,
        r"data must be a Tensor, a tuple of model arguments, or an iterable of "
        r"batches, got NoneType",
    ),
    Bad(
        "compare_activations/data-is-a-path",
        lambda: fxns.compare_activations(_f(), _q(), "images/"),
        fxns.DataError,
        r"data must be a Tensor.*got str",
    ),
    Bad(
        "compare_variants/empty-list",
        lambda: fxns.compare_variants(_f(), {"x86": _q()}, []),
        fxns.DataError,
        r"data is empty",
    ),
    Bad(
        "collect/nothing-run-yet",
        lambda: fxns.collect(fxns.add_shadows(_f(), _q())),
        fxns.DataError,
        r"nothing has run through these models yet: call them on your batches",
    ),
    # --- batches of the wrong shape or type -----------------------------------
    Bad(
        "compare_activations/wrong-shape",
        lambda: fxns.compare_activations(_f(), _q(), torch.randn(2, 3, 5, 5)),
        fxns.DataError,
        r"batch 0 \(Tensor\[2, 3, 5, 5\] float32\) does not fit the float model: "
        r"its module '4' \(Linear\) fails with RuntimeError: mat1 and mat2 shapes"
        r".*Give batches of the shape and dtype the model takes",
    ),
    Bad(
        "compare_activations/wrong-shape-later-batch",
        lambda: fxns.compare_activations(_f(), _q(), [_x(), torch.randn(2, 8, 8)]),
        fxns.DataError,
        r"batch 1 \(Tensor\[2, 8, 8\] float32\) does not fit the float model: "
        r"its module '0' \(Conv2d\)",
    ),
    Bad(
        "compare_activations/wrong-dtype",
        lambda: fxns.compare_activations(_f(), _q(), _x().double()),
        fxns.DataError,
        r"batch 0 \(Tensor\[2, 3, 8, 8\] float64\) does not fit the float model: "
        r"its module '0' \(Conv2d\)",
    ),
    Bad(
        "compare_activations/dict-batch",
        lambda: fxns.compare_activations(_f(), _q(), [{"image": _x()}]),
        fxns.DataError,
        r"batch 0 is a dict; a batch must be a Tensor or a tuple of model "
        r"arguments \(use input_fn= to convert yours\)",
    ),
    Bad(
        "compare_activations/numpy-batch",
        lambda: fxns.compare_activations(_f(), _q(), [np.zeros((2, 3, 8, 8))]),
        fxns.DataError,
        r"batch 0 is a ndarray",
    ),
    Bad(
        "compare_activations/labelled-batches",
        lambda: fxns.compare_activations(_f(), _q(), [(_x(), torch.tensor([0, 1]))]),
        fxns.DataError,
        r"batch 0 gives 2 model argument\(s\) but the model takes 1; pass "
        r"input_fn=.*input_fn=lambda b: b\[0\]",
    ),
    Bad(
        "compare_activations/tuple-of-batches",
        lambda: fxns.compare_activations(_f(), _q(), (_x(), _x(), _x())),
        fxns.DataError,
        r"batch 0 gives 3 model argument\(s\) but the model takes 1; a tuple is one "
        r"batch of positional arguments; pass a list of batches",
    ),
    Bad(
        "sensitivity/labelled-batches",
        lambda: fxns.sensitivity(_f(), [(_x(), 0)]),
        fxns.DataError,
        r"batch 0 gives 2 model argument\(s\) but the model takes 1; pass "
        r"input_fn=",
    ),
    Bad(
        "sensitivity/input-fn-not-callable",
        lambda: fxns.sensitivity(_f(), [_x()], input_fn="image"),
        fxns.ArgumentError,
        r"input_fn must be a function from a batch to the model's arguments, got "
        r"a str",
    ),
    Bad(
        "collect/loggers-run-on-different-batches",
        lambda: _loggers_run_on_different_batches(),
        fxns.DataError,
        r"both logger models ran, but not on the same batches, so their values "
        r"could not be compared \(at '0': cannot compare a float value of shape "
        r"\(4, 8, 6, 6\) with a quantized value of shape \(2, 8, 6, 6\)\); make "
        r"new ones with add_loggers",
    ),
    Bad(
        "compare_activations/input-fn-fails",
        lambda: fxns.compare_activations(
            _f(), _q(), [_x()], input_fn=lambda b: b["image"]
        ),
        fxns.DataError,
        r"input_fn failed on batch 0 \(Tensor\[2, 3, 8, 8\] float32\)",
    ),
    Bad(
        "compare_activations/input-fn-returns-none",
        lambda: fxns.compare_activations(_f(), _q(), [_x()], input_fn=lambda b: None),
        fxns.DataError,
        r"input_fn returned for batch 0 a NoneType",
    ),
    Bad(
        "compare_activations/input-fn-not-callable",
        lambda: fxns.compare_activations(_f(), _q(), [_x()], input_fn=0),
        fxns.ArgumentError,
        r"input_fn must be a function from a batch to the model's arguments, got "
        r"a int",
    ),
    Bad(
        "compare_activations/float-into-quantized-op",
        lambda: fxns.compare_activations(
            Fc().eval(), _eager_without_stub(), torch.randn(2, 8)
        ),
        fxns.ModelError,
        r"its module 'fc' \(Linear\) fails with NotImplementedError: Could not "
        r"run 'quantized::linear'.*put a QuantStub",
    ),
    # --- options ----------------------------------------------------------------
    Bad(
        "compare_activations/unknown-mode",
        lambda: fxns.compare_activations(_f(), _q(), _x(), mode="local"),
        fxns.ArgumentError,
        r"unknown mode 'local'; use one of 'shadow', 'propagated'",
    ),
    Bad(
        "compare_variants/unknown-mode",
        lambda: fxns.compare_variants(_f(), {"a": _q()}, _x(), mode="loggers"),
        fxns.ArgumentError,
        r"unknown mode 'loggers'",
    ),
    Bad(
        "compare_activations/unknown-layout",
        lambda: fxns.compare_activations(_f(), _q(), _x(), layout="nhwc"),
        fxns.ArgumentError,
        r"layout must be one of 'auto', 'contiguous', 'channels_last', got 'nhwc'",
    ),
    Bad(
        "compare_activations/keep-tensors-unknown-row",
        lambda: fxns.compare_activations(_f(), _q(), _x(), keep_tensors=["fc"]),
        fxns.ArgumentError,
        r"keep_tensors names 'fc', which is not a row of this comparison "
        r"\(fxns.match\(...\).pairs lists the rows\)",
    ),
    Bad(
        "compare_activations/keep-tensors-is-a-string",
        lambda: fxns.compare_activations(_f(), _q(), _x(), keep_tensors="fc"),
        fxns.ArgumentError,
        r"keep_tensors must be True or a list of row names, got 'fc'",
    ),
    Bad(
        "sensitivity/unknown-backend",
        lambda: fxns.sensitivity(_f(), _x(), backend="x68"),
        fxns.ArgumentError,
        r"unknown backend 'x68'; use one of x86, fbgemm, qnnpack, onednn, dynamic",
    ),
    Bad(
        "quantize_fx/unknown-backend",
        lambda: quantize_fx(_f(), [_x()], "x68"),
        fxns.ArgumentError,
        r"unknown backend 'x68'",
    ),
    Bad(
        "match/leaf-names-is-a-string",
        lambda: fxns.match(_f(), _q(), leaf_module_names="0"),
        fxns.ArgumentError,
        r"leaf_module_names must be a list of submodule names, got '0'; e.g. "
        r"leaf_module_names=\['0'\]",
    ),
    Bad(
        "match/leaf-modules-is-a-class",
        lambda: fxns.match(_f(), _q(), leaf_modules=nn.Conv2d),  # type: ignore[arg-type]
        fxns.ArgumentError,
        r"leaf_modules must be a list of module classes, got Conv2d; e.g. "
        r"leaf_modules=\[Conv2d\]",
    ),
    Bad(
        "compare_activations/leaf-module-instance",
        lambda: fxns.compare_activations(
            _f(),
            _q(),
            _x(),
            leaf_modules=[nn.ReLU()],  # type: ignore[list-item]
        ),
        fxns.ArgumentError,
        r"leaf_modules holds ReLU\(\), not an nn.Module subclass; give the class",
    ),
    # --- metric and row names, report options, saved reports -------------------
    Bad(
        "Report.table/unknown-metric",
        lambda: _report().table(sort_by="snr"),
        fxns.MetricError,
        r"unknown metric 'snr'; did you mean 'sqnr'\? this report has .*sqnr",
    ),
    Bad(
        "Report.table/sort-by-a-list",
        lambda: _report().table(sort_by=["sqnr"]),  # type: ignore[arg-type]
        fxns.MetricError,
        r"a metric is named by one string, got list \['sqnr'\]; this report has",
    ),
    Bad(
        "Report.sorted_rows/unknown-metric",
        lambda: _report().sorted_rows("SQNR"),
        fxns.MetricError,
        r"unknown metric 'SQNR'",
    ),
    Bad(
        "Report.table/unknown-metric-column",
        lambda: _report().table(metrics=["psnr"]),
        fxns.MetricError,
        r"unknown metric 'psnr'",
    ),
    Bad(
        "Report.table/metrics-is-a-string",
        lambda: _report().table(metrics="sqnr"),
        fxns.ArgumentError,
        r"metrics='sqnr' is one name; pass a list, e.g. metrics=\['sqnr'\]",
    ),
    Bad(
        "Report.table/metric-the-report-lacks",
        lambda: _sensitivity_report().table(sort_by="sqnr"),
        fxns.MetricError,
        r"unknown metric 'sqnr'; this report has gain, sqnr_float$",
    ),
    Bad(
        "Report.table/negative-top",
        lambda: _report().table(top=-1),
        fxns.ArgumentError,
        r"top must be a number of rows \(0 or more\) or None, got -1",
    ),
    Bad(
        "Report.table/top-not-a-number",
        lambda: _report().table(top="5"),  # type: ignore[arg-type]
        fxns.ArgumentError,
        r"top must be a whole number of rows or None, got '5'",
    ),
    Bad(
        "VariantReport.table/unknown-metric",
        lambda: VariantReport({"a": _report()}).table(metrics="snr"),
        fxns.MetricError,
        r"unknown metric 'snr'; did you mean 'sqnr'\?",
    ),
    Bad(
        "Report[]/unknown-row",
        lambda: _report()["conv"],
        fxns.RowError,
        r"no row named 'conv' in this report; did you mean 'conv1'\?",
    ),
    Bad(
        "Report.from_json/not-json",
        lambda: Report.from_json("{not json"),
        fxns.ReportError,
        r"not JSON: .*read files written by Report.to_json",
    ),
    Bad(
        "Report.from_json/not-a-report",
        lambda: Report.from_json('{"layers": []}'),
        fxns.ReportError,
        r"not an fxns report: expected a JSON object with a 'rows' list, got an "
        r"object with keys 'layers'",
    ),
    Bad(
        "Report.from_json/newer-schema",
        lambda: Report.from_json('{"schema": 99, "rows": []}'),
        fxns.ReportError,
        r"schema version 99, newer than the 2 this fxns reads; upgrade fxns",
    ),
    Bad(
        "Report.from_json/variant-report",
        lambda: Report.from_json(VariantReport({"x86": _report()}).to_json()),
        fxns.ReportError,
        r"this is a VariantReport's JSON \(the comparison of variants 'x86'\); use "
        r"fxns.VariantReport.from_json to read it",
    ),
    Bad(
        "VariantReport.from_json/a-report",
        lambda: VariantReport.from_json(_report().to_json()),
        fxns.ReportError,
        r"not an fxns variant report: .*this is a Report's JSON; use "
        r"fxns.Report.from_json to read it",
    ),
    Bad(
        "Report.from_json/malformed-row",
        lambda: Report.from_json('{"schema": 2, "rows": [{"name": "a"}]}'),
        fxns.ReportError,
        r"a row of this report is malformed \(KeyError: 'kind'\)",
    ),
    # --- entry points the sections above do not reach ---------------------
    Bad(
        "diff/float-not-a-module",
        lambda: fxns.diff({"weight": 1}, _q()),
        fxns.ModelError,
        r"float model must be a torch.nn.Module, got dict; pass the model object",
    ),
    Bad(
        "diff/quant-is-a-path",
        lambda: fxns.diff(_f(), "quant.pt"),
        fxns.ModelError,
        r"quantized model must be a torch.nn.Module, got str",
    ),
    Bad(
        "sensitivity/state-dict",
        lambda: fxns.sensitivity(_f().state_dict(), [_x()]),
        fxns.ModelError,
        r"float model must be a torch.nn.Module, got OrderedDict; .*not its "
        r"state_dict",
    ),
    Bad(
        "sensitivity/empty-list",
        lambda: fxns.sensitivity(_f(), []),
        fxns.DataError,
        r"data is empty: give at least one batch",
    ),
    Bad(
        "sensitivity/wrong-shape",
        lambda: fxns.sensitivity(_f(), [torch.randn(2, 3, 5, 5)]),
        fxns.DataError,
        r"calibration batch 0 \(Tensor\[2, 3, 5, 5\] float32\) does not fit the "
        r"float model: RuntimeError: mat1 and mat2 .*Give batches of the shape and "
        r"dtype the model takes, or pass input_fn=",
    ),
    Bad(
        "compare_variants/wrong-shape",
        lambda: fxns.compare_variants(_f(), {"x86": _q()}, [torch.randn(2, 3, 5, 5)]),
        fxns.DataError,
        r"batch 0 \(Tensor\[2, 3, 5, 5\] float32\) does not fit the float model: "
        r"its module '4' \(Linear\)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_typed_error_naming_the_culprit_and_the_fix(
    case: Bad,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warnings have tests of their own
        with pytest.raises(case.error, match=case.match) as caught:
            case.call()
    assert isinstance(caught.value, fxns.FxnsError)


# --- where a result still makes sense: the result, and a warning ---------------


def test_match_of_unrelated_models_warns_and_returns_what_matched() -> None:
    with pytest.warns(UserWarning, match="are these two versions of the same model"):
        m = fxns.match(_f(), _unrelated())
    assert m.pairs == [] and len(m.unmatched_quant) == 2


def test_training_mode_warns_once_per_model_even_across_variants() -> None:
    model = _float().train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = fxns.compare_variants(model, {"a": _q(), "b": _q()}, _x())
    messages = [str(w.message) for w in caught if "training mode" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("the float model")
    assert "Call .eval() on it" in messages[0]
    assert caught[0].filename == __file__  # points at the caller's line
    assert model.training  # the caller's model is left as it was
    assert v.reports["a"].rows[0].metrics["sqnr"] > 20  # eval-mode batch norm


def test_training_mode_loggers_compare_the_eval_copy() -> None:
    model = _float().train()
    with pytest.warns(UserWarning, match="float model is in training mode"):
        f_log, q_log = fxns.add_loggers(model, _q())
    x = _x()
    f_log(x)
    q_log(x)
    mine = fxns.collect(f_log, q_log).to_dict()["rows"]
    theirs = fxns.compare_activations(_f(), _q(), x, mode="propagated")
    # compare_activations runs the float convs with their batch norms folded
    # in (as quantization did): the same numbers up to float rounding.
    for a, b in zip(mine, theirs.to_dict()["rows"], strict=True):
        assert {k: v for k, v in a.items() if k != "metrics"} == {
            k: v for k, v in b.items() if k != "metrics"
        }
        for metric, value in b["metrics"].items():
            assert a["metrics"][metric] == pytest.approx(value, rel=1e-5), metric


class Tup(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> Any:
        y = self.a(x)
        return y, self.b(y)


class Dict(Tup):
    def forward(self, x: torch.Tensor) -> Any:
        y = self.a(x)
        return {"hidden": y, "out": self.b(y)}


class Shape(Tup):
    def forward(self, x: torch.Tensor) -> Any:
        return self.b(self.a(x)).shape


class Number(Tup):
    def forward(self, x: torch.Tensor) -> Any:
        self.b(self.a(x))
        return 3


@pytest.mark.parametrize("cls", [Tup, Dict, Shape, Number])
@pytest.mark.parametrize("mode", ["shadow", "propagated"])
def test_models_returning_tuples_dicts_and_non_tensors_are_compared(
    cls: type[nn.Module], mode: str
) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(4, 8)
    try:
        quant: nn.Module = quantize_fx(model, [x])
    except Exception:
        # prepare_fx cannot quantize a model that returns a plain number;
        # compare it with itself, which must read as identical.
        quant = copy.deepcopy(model)
    report = fxns.compare_activations(model, quant, x, mode=mode)
    assert report.names == ["a", "b"]
    for row in report.rows:
        assert row.note == "" and row.metrics["sqnr"] > 20


def test_a_later_bad_batch_leaves_no_half_result_behind() -> None:
    with pytest.raises(fxns.DataError, match="batch 2"):
        fxns.compare_activations(_f(), _q(), [_x(), _x(), torch.randn(1)])
    # The next call is unaffected.
    assert fxns.compare_activations(_f(), _q(), _x()).meta["batches"] == 1


# --- the quantized engine ---------------------------------------------------------


def test_an_op_the_engine_cannot_run_is_an_engine_error(
    engine: Callable[[str], None],
) -> None:
    model = FloatLinear().eval()
    quant = PrepackingLinear(model).eval()
    x = torch.randn(2, 8)
    assert fxns.compare_activations(model, quant, x).rows[0].metrics["sqnr"] > 20
    engine("onednn")
    with pytest.raises(
        fxns.EngineError,
        match=r"the quantized model's node 'linear_prepack' \(quantized.linear_"
        r"prepack\) cannot run on the 'onednn' quantized engine: RuntimeError: "
        r".*ONEDNN only supports symmetric.*Set torch.backends.quantized.engine "
        r"to the engine the model was quantized for",
    ):
        fxns.compare_activations(model, quant, x)


@pytest.mark.parametrize("name", ["qnnpack", "onednn"])
def test_copying_weights_the_engine_cannot_pack_is_an_engine_error(
    engine: Callable[[str], None], name: str
) -> None:
    model, quant = _fp16_dynamic()
    engine(name)
    pattern = (
        rf"the quantized model's module 'fc' \(Linear\) cannot run "
        rf"on the '{name}' quantized engine: RuntimeError: {name.upper()} only "
        r"supports INT8"
    )
    with pytest.raises(fxns.EngineError, match=pattern):
        fxns.add_shadows(model, quant)
    with pytest.raises(fxns.EngineError, match=pattern):
        fxns.add_loggers(model, quant)


def test_the_engine_the_model_was_packed_for_runs_it(
    engine: Callable[[str], None],
) -> None:
    model, quant = _fp16_dynamic()
    engine("x86")
    s = fxns.add_shadows(model, quant)
    s(torch.randn(2, 8))
    assert fxns.collect(s)["fc"].metrics["sqnr"] > 40


# --- the table in docs/ -------------------------------------------------------------


def test_every_case_has_a_row_in_the_bad_input_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([\w.\[\]]+/[\w-]+)`", text))
    ids = {case.id for case in CASES}
    assert ids - documented == set(), "add these cases to docs/bad-input.md"
    assert documented - ids == set(), "these rows of docs/bad-input.md have no test"
