"""HTML pages: self-contained, one row per layer; checked in headless Chromium."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fxns
from fxns.html import graph_diff_section, report_page
from fxns.report import LayerResult, Report
from fxns.variants import float_layers

from . import browser
from .conftest import torchvision_quantized


def _report() -> Report:
    def row(name: str, sqnr: float) -> LayerResult:
        return LayerResult(
            name=name,
            kind="conv2d",
            float_nodes=(name,),
            quant_nodes=(name,),
            metrics={"sqnr": sqnr, "cosine": 0.99, "mse": 1e-3, "max_abs": 0.1},
            float_ops=("nn.Conv2d",),
            quant_ops=("nnq.Conv2d",),
        )

    return Report(
        [row("a<b>", 30.0), row("b", math.inf), row("c", 12.5), row("d", math.nan)],
        mode="shadow",
        meta={"batches": 3, "unmatched_float": ["x"], "unmatched_quant": []},
    )


def _ids(html: str) -> list[str]:
    return re.findall(r'\bid=["\']([^"\']+)["\']', html)


def test_page_is_self_contained_with_a_row_per_layer(tmp_path: Path) -> None:
    report = _report()
    text = report.to_html(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == text
    assert text.startswith("<!DOCTYPE html>")
    # Nothing loaded from elsewhere: no external scripts, styles or images.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)
    assert "@import" not in text
    body = text.split("<table class='fxns-table sortable' id='layers'>")[1]
    body = body.split("</table>")[0]
    assert body.count("<tr>") == len(report.rows) + 1  # header + one per layer
    assert "a&lt;b&gt;" in text and "<b>a<b>" not in text  # names are escaped
    assert text.count("<svg") == 2  # SQNR along the network, worst layers
    ids = _ids(text)
    assert len(ids) == len(set(ids)), "two elements share an id"
    assert "Only in the float graph</b> (1): x" in text


def test_diff_hook_takes_html_or_text() -> None:
    class Html:
        def _repr_html_(self) -> str:
            return "<p class='gd'>graph diff</p>"

    class Text:
        def __str__(self) -> str:
            return "conv1 <-> conv1"

    report = _report()
    assert "<p class='gd'>graph diff</p>" in report_page(report, diff=Html())
    assert "<pre class='diff'>conv1 &lt;-&gt; conv1</pre>" in report.to_html(
        diff=Text()
    )
    listing = graph_diff_section(report)
    assert listing.count("↔") == len(report.rows)


def test_notebook_html_is_the_table() -> None:
    report = _report()
    html = report._repr_html_()
    assert html.startswith("<div class='fxns'>") and "<script" not in html
    assert html.count("<tr>") == len(report.rows) + 1


def test_sensitivity_report_gets_a_gain_chart() -> None:
    rows = [
        LayerResult(
            "fc", "linear", ("fc",), ("fc",), {"gain": 3.0, "sqnr_float": 30.0}
        ),
        LayerResult("c", "conv2d", ("c",), ("c",), {"gain": 0.0, "sqnr_float": 27.0}),
    ]
    text = Report(rows, mode="sensitivity").to_html()
    assert "Gain from keeping one layer in float" in text
    assert "SQNR along the network" not in text


def _rows(
    values: list[float], mse: float = 1e-3, prefix: str = "layer"
) -> list[LayerResult]:
    return [
        LayerResult(
            f"{prefix}{i}",
            "conv2d",
            (f"n{i}",),
            (f"n{i}",),
            {"sqnr": x, "mse": 0.0 if x == math.inf else mse, "max_abs": 0.1},
        )
        for i, x in enumerate(values)
    ]


def test_the_worst_layers_chart_starts_with_minus_inf() -> None:
    # -inf dB: an error where the float value is all zero, the worst there is.
    text = Report(_rows([20.0, -math.inf, math.inf]), mode="shadow").to_html()
    assert "Error of the 2 worst layers" in text
    assert "layer1  (-inf dB)" in text and "layer0  (20.0 dB)" in text
    assert "layer2  (" not in text  # exact: no error to draw
    assert "−inf dB" in text  # the SQNR chart marks it on its bottom edge


def _line_paths(svg: str) -> list[str]:
    """The drawing of the SQNR line (its 1.2-point stroke)."""
    return re.findall(r'<path d="([^"]+)"[^>]*stroke-width: 1\.2', svg)


def test_the_sqnr_line_does_not_run_to_inf_marks() -> None:
    finite = report_page(Report(_rows([10.0, 11.0, 12.0, 13.0]), mode="shadow"))
    broken = report_page(
        Report(_rows([10.0, 11.0, math.inf, 12.0, 13.0]), mode="shadow")
    )
    (whole,) = _line_paths(finite)
    (parts,) = _line_paths(broken)
    assert whole.count("M") == 1
    assert parts.count("M") == 2  # two pieces, none reaching the inf mark


def test_names_of_the_worst_points_do_not_overlap() -> None:
    # Long names of points 30 layers apart on a 200-layer network, at the same
    # height, would overlap; a point far below the others has room.
    values = [30.0] * 200
    values[100], values[130], values[132] = 5.0, 5.1, 20.0
    prefix = "features.block.expand.conv."
    text = report_page(Report(_rows(values, prefix=prefix), mode="shadow"))
    chart = text.split("SQNR along the network")[0]
    named = re.findall(rf">{re.escape(prefix)}(\d+)<", chart)
    assert named[:2] == ["100", "132"] and "130" not in named


@pytest.fixture(scope="module")
def resnet18_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    q = torchvision_quantized("resnet18")
    report = fxns.compare_activations(q.float_model, q.quant_model, q.batches[:2])
    v = fxns.VariantReport(
        {
            "x86": report,
            "propagated": fxns.compare_activations(
                q.float_model, q.quant_model, q.batches[:2], mode="propagated"
            ),
        },
        float_layers(q.float_model),
    )
    root = tmp_path_factory.mktemp("html")
    report.to_html(root / "report.html")
    v.to_html(root / "variants.html")
    return {"report": report, "variants": v, "root": root}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    reason = browser.missing()
    if reason:
        if browser.required():
            pytest.fail(f"FXNS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    with browser.chromium() as d:
        yield d


def _column(d: Any, index: int) -> list[str]:
    return d.execute_script(
        "return Array.from(document.querySelectorAll('#layers tbody tr'))"
        ".map(r => r.cells[arguments[0]].getAttribute('data-value') ?? "
        "r.cells[arguments[0]].textContent);",
        index,
    )


def _header(d: Any, label: str) -> tuple[int, Any]:
    from selenium.webdriver.common.by import By

    heads = d.find_elements(By.CSS_SELECTOR, "#layers thead th")
    index = next(i for i, h in enumerate(heads) if h.text.startswith(label))
    return index, heads[index]


def _numbers(values: list[str]) -> list[float]:
    return [float(v) if v else math.nan for v in values]


@pytest.mark.slow
def test_report_page_in_chromium(driver: Any, resnet18_pages: dict[str, Any]) -> None:
    report = resnet18_pages["report"]
    driver.get((resnet18_pages["root"] / "report.html").as_uri())
    assert browser.console_errors(driver) == []
    assert driver.title.startswith("fxns shadow")

    rows = driver.execute_script(
        "return document.querySelectorAll('#layers tbody tr').length"
    )
    assert rows == len(report.rows)
    index, sqnr = _header(driver, "sqnr")
    names = _column(driver, 1)
    assert names == report.names  # execution order before any click

    # First click: worst (lowest SQNR) first; exact layers (+inf) last.
    sqnr.click()
    values = _numbers(_column(driver, index))
    finite = [x for x in values if math.isfinite(x)]
    assert finite == sorted(finite)
    assert values[0] == min(r.metrics["sqnr"] for r in report.rows)
    assert _column(driver, 1)[0] == report.sorted_rows("sqnr", top=1)[0].name
    assert sqnr.get_attribute("aria-sort") == "ascending"

    # Second click: best first.
    sqnr.click()
    values = _numbers(_column(driver, index))
    assert values == sorted(values, reverse=True)

    # Back to execution order with the # column.
    _header(driver, "#")[1].click()
    assert _column(driver, 1) == report.names
    assert browser.console_errors(driver) == []


@pytest.mark.slow
def test_variants_page_in_chromium(driver: Any, resnet18_pages: dict[str, Any]) -> None:
    v = resnet18_pages["variants"]
    driver.get((resnet18_pages["root"] / "variants.html").as_uri())
    assert browser.console_errors(driver) == []
    rows = driver.execute_script(
        "return document.querySelectorAll('#layers tbody tr').length"
    )
    assert rows == len(v.rows)
    index, head = _header(driver, "propagated sqnr")
    head.click()
    values = _column(driver, index)
    read = [float(x) for x in values if x]
    assert read == sorted(read)
    # Fused layers have no number of their own: they sort after every number.
    assert all(not x for x in values[len(read) :])
    assert browser.console_errors(driver) == []
