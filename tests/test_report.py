"""Report: ordering, sorting, rendering, exports."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest

import fxns
from fxns.report import LayerResult, Report


def _report() -> Report:
    def row(name: str, sqnr: float, kind: str = "conv2d") -> LayerResult:
        return LayerResult(
            name=name,
            kind=kind,
            float_nodes=(name.replace(".", "_"),),
            quant_nodes=(name.replace(".", "_"),),
            metrics={"sqnr": sqnr, "cosine": 0.99, "mse": 1e-3, "max_abs": 0.1},
            float_ops=("nn.Conv2d",),
            quant_ops=("nnq.Conv2d",),
        )

    return Report(
        [row("a", 30.0), row("b", math.inf), row("c", 12.5), row("d", math.nan)],
        mode="shadow",
        meta={"batches": 3},
    )


def test_rows_keep_execution_order_and_index_by_name() -> None:
    r = _report()
    assert r.names == ["a", "b", "c", "d"]
    assert r["c"].metrics["sqnr"] == 12.5
    assert "a" in r and "z" not in r
    with pytest.raises(KeyError, match="no row named 'z'"):
        r["z"]


def test_sort_puts_worst_first_and_nan_last() -> None:
    r = _report()
    assert [x.name for x in r.sorted_rows("sqnr")] == ["c", "a", "b", "d"]
    assert [x.name for x in r.sorted_rows("sqnr", top=2)] == ["c", "a"]
    assert [x.name for x in r.sorted_rows("mse")][-1] == "d"


def test_unknown_metric_is_a_clear_error() -> None:
    with pytest.raises(fxns.MetricError, match=r"unknown metric 'snr'.*sqnr"):
        _report().table(sort_by="snr")


def test_table_shows_names_kinds_ops_and_metrics() -> None:
    text = str(_report())
    assert text.splitlines()[0] == "fxns shadow comparison: 4 layers, 3 batches"
    header = text.splitlines()[1].split()
    assert header[:6] == ["name", "kind", "float", "op", "quant", "op"]
    assert "nnq.Conv2d" in text and "12.50" in text and "inf" in text


def test_json_round_trip_is_exact_and_strict() -> None:
    r = _report()
    text = r.to_json()
    data = json.loads(text)  # strict JSON: no bare NaN or Infinity
    assert data["rows"][1]["metrics"]["sqnr"] == "inf"
    back = Report.from_json(text)
    assert back.names == r.names
    for a, b in zip(back.rows, r.rows, strict=True):
        for k, v in a.metrics.items():
            assert (math.isnan(v) and math.isnan(b.metrics[k])) or v == b.metrics[k]


def test_csv_has_a_header_and_a_line_per_row(tmp_path) -> None:
    path = tmp_path / "r.csv"
    _report().to_csv(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1]["sqnr"] == "inf"
    assert rows[0]["float_ops"] == "nn.Conv2d"


def test_summary_names_the_worst_layer() -> None:
    assert _report().summary() == (
        "fxns shadow comparison: 4 layers, 3 batches; lowest SQNR: c 12.5 dB"
    )


def test_sqnr_like_metrics_sort_lowest_first() -> None:
    from fxns.report import higher_is_better

    assert higher_is_better("sqnr") and higher_is_better("sqnr_float")
    assert not higher_is_better("mse") and not higher_is_better("gain")


def test_dataframe_has_a_row_per_layer() -> None:
    pytest.importorskip("pandas")
    df = _report().to_dataframe()
    assert list(df.index) == ["a", "b", "c", "d"]
    assert list(df.columns) == [
        "kind",
        "float_op",
        "quant_op",
        "sqnr",
        "cosine",
        "mse",
        "max_abs",
        "note",
    ]
    assert df.loc["c", "sqnr"] == 12.5 and df.loc["b", "sqnr"] == math.inf
    assert math.isnan(df.loc["d", "sqnr"])
    assert df.sort_values("sqnr").index[0] == "c"


def test_dataframe_without_pandas_says_how_to_install_it(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # makes the import fail
    with pytest.raises(fxns.FxnsError, match=r"pip install fxns\[pandas\]"):
        _report().to_dataframe()


# --- metrics a report has, titles, alignment ------------------------------------


def _sensitivity() -> Report:
    def row(name: str, gain: float) -> LayerResult:
        metrics = {"gain": gain, "sqnr_float": 20.0 + gain, "sqnr_alone": 30.0}
        return LayerResult(name, "conv2d", (name,), (name,), metrics)

    return Report([row("fc", 3.0), row("conv", 0.25)], mode="sensitivity")


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.table(sort_by="sqnr"),
        lambda r: r.sorted_rows("cosine"),
        lambda r: r.table(metrics=["sqnr"]),
    ],
    ids=["sort_by", "sorted_rows", "metrics"],
)
def test_a_report_accepts_only_the_metrics_it_has(call) -> None:
    with pytest.raises(
        fxns.MetricError, match=r"this report has gain, sqnr_alone, sqnr_float$"
    ):
        call(_sensitivity())


def test_a_typo_is_matched_against_the_reports_own_metrics() -> None:
    with pytest.raises(
        fxns.MetricError,
        match=r"unknown metric 'gian'; did you mean 'gain'\? this report has gain, "
        r"sqnr_alone, sqnr_float$",
    ):
        _sensitivity().table(sort_by="gian")
    only_sqnr = Report([LayerResult("a", "add", ("a",), ("a",), {"sqnr": 1.0})])
    with pytest.raises(fxns.MetricError, match=r"this report has sqnr$"):
        only_sqnr.table(metrics=["mse"])


def test_a_report_without_numbers_still_knows_its_kind_of_metrics() -> None:
    row = LayerResult("fc", "linear", ("fc",), ("fc",), {}, note="not measured")
    assert Report([row], mode="sensitivity").metric_names() == [
        "gain",
        "sqnr_float",
        "sqnr_alone",
    ]
    assert Report([row], mode="shadow").metric_names() == list(fxns.METRICS)
    Report([row], mode="shadow").table(sort_by="sqnr")  # no error


def test_gain_and_sqnr_columns_have_two_decimals() -> None:
    text = _sensitivity().table()
    assert re.search(r"fc\s+conv2d\s+3\.00\s+23\.00\s+30\.00", text), text
    assert re.search(r"conv\s+conv2d\s+0\.25\s+20\.25\s+30\.00", text), text


def test_negative_top_is_an_argument_error() -> None:
    with pytest.raises(fxns.ArgumentError, match=r"top must be a number of rows"):
        _report().table(top=-1)
    assert _report().sorted_rows("sqnr", top=0) == []


def test_the_title_says_which_rows_a_table_shows() -> None:
    r = _report()
    assert r.table(sort_by="sqnr", top=2).splitlines()[0] == (
        "fxns shadow comparison: 2 of 4 layers, worst first by sqnr, 3 batches"
    )
    assert r.table(top=3).splitlines()[0] == (
        "fxns shadow comparison: 3 of 4 layers, 3 batches"
    )
    assert r.table(sort_by="mse").splitlines()[0] == (
        "fxns shadow comparison: 4 layers, worst first by mse, 3 batches"
    )
    one = Report(r.rows[:1], mode="shadow", meta={"batches": 1})
    assert one.table().splitlines()[0] == "fxns shadow comparison: 1 layer, 1 batch"


def test_names_that_look_like_numbers_stay_text() -> None:
    rows = [
        LayerResult(name, "linear", (name,), (name,), {"sqnr": 20.0})
        for name in ("0", "10", "fc")
    ]
    lines = Report(rows, mode="shadow").table().splitlines()
    # Left-aligned like any name; the metric column stays numeric.
    assert [line.split()[0] for line in lines[3:]] == ["0", "10", "fc"]
    assert lines[3].startswith("0 ") and lines[4].startswith("10 ")
    assert lines[3].endswith("20.00")
