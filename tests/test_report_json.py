"""Reports that last: the JSON round trip is exact and says how the report was made."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxns
from fxns.report import SCHEMA_VERSION, LayerResult, Report

from .conftest import quantize_module


def _models() -> tuple[nn.Module, torch.fx.GraphModule]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    return model, quantize_module(model, torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("mode", ["shadow", "propagated", "weights"])
def test_a_real_report_round_trips_exactly(mode: str, tmp_path: Path) -> None:
    model, quant = _models()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    if mode == "weights":
        report = fxns.compare_weights(model, quant)
    else:
        report = fxns.compare_activations(model, quant, batches, mode=mode)

    for source in (report.to_json(), tmp_path / "r.json", str(tmp_path / "r.json")):
        report.to_json(tmp_path / "r.json")
        back = Report.from_json(source)
        assert back.rows == report.rows  # every field, every float bit
        assert back.meta == report.meta
        assert back.mode == report.mode
        assert back.to_json() == report.to_json()
    assert (tmp_path / "r.json").read_text().endswith("}\n")


def test_the_json_says_how_the_report_was_made() -> None:
    model, quant = _models()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    before = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "qnnpack"
        report = fxns.compare_activations(model, quant, batches, mode="propagated")
    finally:
        torch.backends.quantized.engine = before
    data = json.loads(report.to_json())

    assert data["schema"] == SCHEMA_VERSION == 2
    meta = data["meta"]
    assert meta["fxns_version"] == fxns.__version__
    assert meta["torch_version"] == torch.__version__
    assert meta["engine"] == "qnnpack"  # the engine the run used
    assert meta["batches"] == 4
    assert meta["processes"] == 1
    # Elements compared: every output element of every layer, of every batch.
    # (conv and its relu are one pair, fused on the quantized side)
    per_batch = {"0": 2 * 4 * 6 * 6, "2": 2 * 144, "3": 2 * 3}
    rows = {r["name"]: r for r in data["rows"]}
    for name, n in per_batch.items():
        assert rows[name]["elements"] == 4 * n, name
    assert meta["elements"] == 4 * sum(per_batch.values())
    assert meta["unmatched_float"] == [] and meta["unmatched_quant"] == []


def test_a_schema_1_report_still_reads() -> None:
    old = {
        "schema": 1,
        "mode": "shadow",
        "meta": {"batches": 2},
        "rows": [
            {
                "name": "fc",
                "kind": "linear",
                "float_nodes": ["fc"],
                "quant_nodes": ["fc"],
                "metrics": {"sqnr": "inf", "cosine": 1.0},
                "note": "",
                "elements": 8,
            }
        ],
    }
    report = Report.from_json(json.dumps(old))
    row = report["fc"]
    assert row.metrics["sqnr"] == math.inf
    assert (row.nonfinite_float, row.nonfinite_quant) == (0, 0)


names = st.text(min_size=1, max_size=12)
metric_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]),
)
rows = st.builds(
    LayerResult,
    name=names,
    kind=st.sampled_from(["conv2d", "linear+relu", "add"]),
    float_nodes=st.lists(names, max_size=3).map(tuple),
    quant_nodes=st.lists(names, max_size=3).map(tuple),
    metrics=st.dictionaries(
        st.sampled_from(["sqnr", "cosine", "mse", "max_abs", "extra"]), metric_values
    ),
    float_ops=st.lists(names, max_size=2).map(tuple),
    quant_ops=st.lists(names, max_size=2).map(tuple),
    note=st.text(max_size=20),
    elements=st.integers(min_value=0, max_value=2**62),
    nonfinite_float=st.integers(min_value=0, max_value=2**40),
    nonfinite_quant=st.integers(min_value=0, max_value=2**40),
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(rows, max_size=5), batches=st.integers(0, 10**9))
def test_any_report_round_trips_exactly(rows: list[LayerResult], batches: int) -> None:
    report = Report(rows, mode="shadow", meta={"batches": batches, "engine": "x86"})
    back = Report.from_json(report.to_json())
    assert back.to_dict() == report.to_dict()
    for a, b in zip(back.rows, report.rows, strict=True):
        for k, v in b.metrics.items():
            w = a.metrics[k]
            assert (math.isnan(v) and math.isnan(w)) or (
                v == w and math.copysign(1, v) == math.copysign(1, w)
            )
