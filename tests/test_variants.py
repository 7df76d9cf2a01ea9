"""compare_variants: rows line up on the float layers whatever each variant fused."""

from __future__ import annotations

import csv
import io
import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

import fxns
from fxns.quantize import quantize_fx
from fxns.report import LEGEND, VariantReport
from fxns.variants import FUSED, float_layers

from .reference import Sums, activations

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    ).eval()
    model[1].running_mean.uniform_(-0.3, 0.3)
    model[1].running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def variants() -> tuple[nn.Module, dict[str, nn.Module], list[torch.Tensor]]:
    model = _net()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, 8, 8, generator=g) for _ in range(2)]
    quantized = {f: quantize_fx(model, batches, fusion=f) for f in ("all", "none")}
    return model, quantized, batches


def test_fusion_strategies_quantize_differently(variants) -> None:
    _, q, _ = variants
    assert type(q["all"].get_submodule("0")).__name__ == "ConvReLU2d"
    assert type(q["none"].get_submodule("0")).__name__ == "Conv2d"
    assert type(q["none"].get_submodule("1")).__name__ == "BatchNorm2d"
    assert "quantized" in type(q["none"].get_submodule("1")).__module__
    with pytest.raises(fxns.FxnsError, match="unknown fusion 'some'"):
        quantize_fx(_net(), [torch.randn(1, 3, 8, 8)], fusion="some")


def test_rows_are_the_float_layers_and_fused_groups_read_on_their_last(
    variants,
) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    assert [r.name for r in v.rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert [r.layer.kind for r in v.rows][:3] == ["conv2d", "batch_norm", "relu"]

    cells = {r.name: r.cells for r in v.rows}
    # Fused: conv+bn+relu is one group, read on the relu.
    assert [cells[n]["all"].reads_here for n in "012"] == [False, False, True]
    assert cells["0"]["all"].group == cells["2"]["all"].group == "0"
    # Unfused: conv+bn (kept together by fxns) read on the bn, relu on its own.
    assert [cells[n]["none"].reads_here for n in "012"] == [False, True, True]
    assert cells["2"]["none"].group == "2"
    # Where both read, both describe the relu's output: same number of elements.
    a, b = v.reports["all"]["0"], v.reports["none"]["2"]
    assert a.elements == b.elements


def test_numbers_on_a_row_are_the_error_of_that_layers_output(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    relu = next(r for r in v.rows if r.name == "2")
    for name, quant in q.items():
        # Independently: the float relu's output against the quantized node that
        # produces the same value, with everything upstream quantized.
        node = v.reports[name][relu.cells[name].group].quant_nodes[-1]
        sums = Sums()
        for x in batches:
            sums.add(activations(model, x)["_2"], activations(quant, x)[node])
        assert relu.value(name, "sqnr") == pytest.approx(sums.sqnr(), abs=1e-3)


def test_print_shows_the_variants_side_by_side(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    lines = str(v).splitlines()
    assert lines[0].startswith("fxns propagated comparison of 2 variants (all, none)")
    assert lines[1].split() == ["name", "kind", "all", "sqnr", "none", "sqnr"]
    assert lines[3].split() == ["0", "conv2d", FUSED, FUSED]
    assert lines[4].split()[:3] == ["1", "batch_norm", FUSED]
    assert lines[-1] == LEGEND
    wide = v.table(["sqnr", "cosine"], tablefmt="github")
    header = [h.strip() for h in wide.splitlines()[1].strip("|").split("|")]
    assert header == [
        "name",
        "kind",
        "all sqnr",
        "all cosine",
        "none sqnr",
        "none cosine",
    ]
    with pytest.raises(fxns.MetricError, match="unknown metric 'snr'"):
        v.table("snr")


def test_reports_exports_and_round_trip(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches, mode="shadow")
    assert set(v.reports) == {"all", "none"}
    assert all(isinstance(r, fxns.Report) for r in v.reports.values())
    assert v.mode == "shadow"

    data = json.loads(v.to_json())
    assert data["variants"] == ["all", "none"]
    assert data["rows"][0]["cells"]["all"]["reads_here"] is False
    back = VariantReport.from_dict(data)
    assert [r.name for r in back.rows] == [r.name for r in v.rows]
    assert str(back) == str(v)

    rows = list(csv.DictReader(io.StringIO(v.to_csv())))
    assert [r["name"] for r in rows] == [r.name for r in v.rows]
    assert rows[0]["all group"] == "0" and rows[0]["all sqnr"] == ""
    assert float(rows[2]["all sqnr"]) == pytest.approx(v.rows[2].value("all", "sqnr"))


def test_notebook_and_page_html(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    fragment = v._repr_html_()
    assert fragment.count("<tr>") == len(v.rows) + 1 and "<script" not in fragment
    assert f"title='fused into 0'>{FUSED}</td>" in fragment
    page = v.to_html()
    assert page.startswith("<!DOCTYPE html>") and page.count("<details>") == 2


def test_rows_without_the_model_come_from_the_reports(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    bare = VariantReport(v.reports)
    assert [r.layer.node for r in bare.rows] == [x.node for x in float_layers(model)]
    assert [r.value("none", "sqnr") for r in bare.rows] == [
        r.value("none", "sqnr") for r in v.rows
    ]


def test_no_variants_and_bad_mode_are_errors(variants) -> None:
    model, q, batches = variants
    with pytest.raises(fxns.ModelError, match="no variants"):
        fxns.compare_variants(model, {}, batches)
    with pytest.raises(fxns.FxnsError, match="unknown mode 'local'"):
        fxns.compare_variants(model, q, batches, mode="local")


def test_generator_data_is_read_once_for_all_variants(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, (b for b in batches))
    assert {r.meta["batches"] for r in v.reports.values()} == {2}


@pytest.mark.slow
def test_fusion_example_runs(capsys, tmp_path) -> None:
    module = runpy.run_path(str(EXAMPLES / "fusion_strategies.py"))
    html = tmp_path / "v.html"
    v = module["main"](
        ["--size", "32", "--fusion", "all", "--fusion", "none", "--html", str(html)]
    )
    out = capsys.readouterr().out
    assert "all sqnr" in out and "none sqnr" in out and "Output SQNR" in out
    assert html.read_text().startswith("<!DOCTYPE html>")
    fc = v.rows[-1]
    assert math.isfinite(fc.value("all", "sqnr")) and math.isfinite(
        fc.value("none", "sqnr")
    )


def test_dataframe_has_a_column_per_variant_and_metric(variants) -> None:
    pytest.importorskip("pandas")
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    df = v.to_dataframe()
    assert list(df.index) == [r.name for r in v.rows]
    assert "all sqnr" in df.columns and "none max_abs" in df.columns
    assert math.isnan(df.loc["1", "all sqnr"])  # fused into the group read on "2"
    assert df.loc["2", "all sqnr"] == v.rows[2].value("all", "sqnr")


def test_json_round_trip_and_the_wrong_reader_says_which_to_use(
    variants, tmp_path: Path
) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)
    path = tmp_path / "variants.json"
    v.to_json(path)
    for source in (path, v.to_json()):
        back = VariantReport.from_json(source)
        assert back.to_dict() == v.to_dict()
        assert str(back) == str(v)
    with pytest.raises(
        fxns.ReportError,
        match=r"this is a VariantReport's JSON \(the comparison of variants 'all', "
        r"'none'\); use fxns.VariantReport.from_json",
    ):
        fxns.Report.from_json(path)
    with pytest.raises(
        fxns.ReportError, match=r"this is a Report's JSON; use fxns.Report.from_json"
    ):
        VariantReport.from_json(v.reports["all"].to_json())


def test_table_sorts_by_the_worst_variant_or_one_column(variants) -> None:
    model, q, batches = variants
    v = fxns.compare_variants(model, q, batches)

    def worst(row) -> float:
        values = [row.value(name, "sqnr") for name in v.reports]
        return min(x for x in values if x is not None)

    ranked = [r for r in v.rows if any(r.value(n, "sqnr") is not None for n in q)]
    expected = sorted(ranked, key=worst)
    assert [r.name for r in v.sorted_rows("sqnr")][: len(expected)] == [
        r.name for r in expected
    ]
    by_none = [r.name for r in v.sorted_rows("none sqnr", top=2)]
    assert (
        by_none
        == [
            r.name
            for r in sorted(
                (r for r in v.rows if r.value("none", "sqnr") is not None),
                key=lambda r: r.value("none", "sqnr"),
            )
        ][:2]
    )
    lines = v.table(sort_by="sqnr", top=3).splitlines()
    assert lines[0].endswith(": 3 of 7 layers, worst first by sqnr, 2 batches")
    assert len(lines) == 1 + 2 + 3 + 1  # title, header, rule, rows, legend
    with pytest.raises(fxns.MetricError, match=r"unknown metric 'sqnr_'"):
        v.table(sort_by="sqnr_")
    with pytest.raises(fxns.ArgumentError, match="top must be"):
        v.table(top=-2)


def _quantized_on(model: nn.Module, batches: list[torch.Tensor], backend: str):
    """``model`` FX-quantized for ``backend``, converted on its own engine."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        return quantize_fx(model, batches, backend)
    finally:
        torch.backends.quantized.engine = before


@pytest.mark.skipif(
    not {"x86", "qnnpack"} <= set(torch.backends.quantized.supported_engines),
    reason="needs the x86 and qnnpack quantized engines",
)
def test_variants_of_different_backends_and_qconfigs_in_one_run(
    variants, tmp_path: Path, capsys
) -> None:
    model, _, batches = variants
    # x86 and qnnpack quantize with different qconfigs (x86 reduces the
    # range of activations, qnnpack does not), so their numbers differ.
    q = {b: _quantized_on(model, batches, b) for b in ("x86", "qnnpack")}
    v = fxns.compare_variants(model, q, batches)
    assert list(v.reports) == ["x86", "qnnpack"]
    assert str(v).splitlines()[1].split() == [
        "name",
        "kind",
        "x86",
        "sqnr",
        "qnnpack",
        "sqnr",
    ]
    # Each column is that variant's own comparison, run on its own engine.
    before = torch.backends.quantized.engine
    try:
        for backend, quant in q.items():
            torch.backends.quantized.engine = backend
            alone = fxns.compare_activations(model, quant, batches, mode="propagated")
            assert v.reports[backend].names == alone.names
            for row in alone.rows:
                assert v.reports[backend][row.name].metrics == pytest.approx(
                    row.metrics, rel=1e-6
                ), (backend, row.name)
    finally:
        torch.backends.quantized.engine = before
    last = v.rows[-1]
    assert last.value("x86", "sqnr") != last.value("qnnpack", "sqnr")

    # The command line quantizes one variant per --backend, on its engine.
    path = tmp_path / "factory.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\n"
        "def net():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()\n",
        encoding="utf-8",
    )
    from fxns.cli import main

    argv = ["variants", f"{path}:net", "--input-shape", "2,3,8,8", "--batches", "2"]
    assert main([*argv, "--backend", "x86", "--backend", "qnnpack"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("name"))
    assert header.split() == ["name", "kind", "x86", "sqnr", "qnnpack", "sqnr"]
    assert torch.backends.quantized.engine == before
