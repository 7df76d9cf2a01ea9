"""Reports as self-contained HTML pages: step 6 of the pipeline, for the eye.

:func:`report_page` turns a :class:`~fxns.report.Report` into one HTML file
that needs nothing but a browser (no network, no files beside it):

1. what was compared (mode, batches, versions) and the one-line summary;
2. SQNR along the network: one point per row in execution order
   (matplotlib, embedded as SVG), the line joining finite values only; exact
   layers (+inf dB) are marks on the top edge, layers with error but no
   signal (−inf dB) on the bottom edge; the worst points are named where
   their names do not overlap;
3. the error of the worst layers (−inf dB first): for each, the typical
   error (RMS of f − q), the largest one (max |f − q|) and, for scale, the
   RMS of the float value itself, all of which follow exactly from the
   running sums;
4. the table, sortable by clicking a column header (worst first on the
   first click), with a few lines of inline JavaScript;
5. the graph diff: the matched operations of both graphs side by side and
   what has no partner, or any diff object passed in (see
   :func:`graph_diff_section`).

:func:`variants_page` does the same for a :class:`~fxns.report.VariantReport`
(one SQNR line per variant over the aligned rows), and a sensitivity report
(``mode="sensitivity"``) gets a chart of the gain of keeping each layer in
float. :func:`report_fragment` and :func:`variants_fragment` are the tables
alone, for notebooks.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from .report import _FORMATS, LEGEND, higher_is_better
from .variants import FUSED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .report import LayerResult, Report, VariantReport

__all__ = [
    "diff_page",
    "graph_diff_section",
    "report_fragment",
    "report_page",
    "variants_fragment",
    "variants_page",
]

# How many of the worst layers get a bar in the error plot.
WORST_LAYERS = 12
# How many layers the sensitivity chart shows.
GAIN_LAYERS = 30


def report_page(report: Report, *, diff: Any = None, title: str | None = None) -> str:
    """The whole HTML page of ``report`` (see the module docstring).

    Args:
        report: the report.
        diff: shown as the graph diff instead of the listing of pairs.
        title: the page title (default: from the report's mode).

    Example:
        >>> text = report_page(report)  # doctest: +SKIP
        >>> text.startswith("<!DOCTYPE html>")  # doctest: +SKIP
        True
    """
    title = title or f"fxns {report.mode or 'report'}: {len(report.rows)} layers"
    sections = [f"<p class='summary'>{escape(report.summary())}</p>"]
    sections.append(_meta_list(report.meta))
    if report.mode == "sensitivity":
        sections.append(
            _figure("Gain from keeping one layer in float", _gain_svg(report))
        )
    elif _has(report, "sqnr"):
        sections.append(
            _figure(
                "SQNR along the network",
                _sqnr_svg(
                    {"": [r.metrics.get("sqnr") for r in report.rows]},
                    [r.name for r in report.rows],
                ),
            )
        )
        sections.append(_worst_figure(report))
    sections.append("<h2>Layers</h2>")
    sections.append(_report_table(report, table_id="layers", sortable=True))
    sections.append("<h2>Graph diff</h2>")
    sections.append(graph_diff_section(report, diff))
    return _page(title, sections)


def variants_page(v: VariantReport, *, title: str | None = None) -> str:
    """The whole HTML page of a :class:`~fxns.report.VariantReport`.

    It shows SQNR along the network for every variant, the aligned table,
    and for each variant its worst layers and its pairs.

    Example:
        >>> text = variants_page(v)  # doctest: +SKIP
    """
    title = title or f"fxns: {len(v.reports)} variants compared"
    rows = v.rows
    sections = [f"<p class='summary'>{escape(v._title())}</p>"]
    if any(_has(r, "sqnr") for r in v.reports.values()):
        series = {name: [row.value(name, "sqnr") for row in rows] for name in v.reports}
        sections.append(
            _figure("SQNR along the network", _sqnr_svg(series, [r.name for r in rows]))
        )
    sections.append("<h2>Layers</h2>")
    sections.append(_variants_table(v, table_id="layers", sortable=True))
    sections.append(f"<p class='legend'>{escape(_legend())}</p>")
    for name, report in v.reports.items():
        parts = [f"<p>{escape(report.summary())}</p>", _meta_list(report.meta)]
        if _has(report, "sqnr"):
            parts.append(_worst_figure(report))
        parts.append(graph_diff_section(report))
        sections.append(
            f"<details><summary>Variant <b>{escape(name)}</b>: its worst layers "
            f"and its pairs</summary>{''.join(parts)}</details>"
        )
    return _page(title, sections)


def diff_page(diff: Any, *, title: str = "fxns graph diff") -> str:
    """A graph diff (:class:`~fxns.diff.GraphDiff`) as an HTML page of its own.

    Example:
        >>> text = diff_page(fxns.diff(float_model, quant_model))  # doctest: +SKIP
    """
    return _page(title, [f"<div class='diff'>{diff._repr_html_()}</div>"])


def report_fragment(report: Report) -> str:
    """The report's summary and table as an HTML fragment (for notebooks).

    Example:
        >>> report._repr_html_() == report_fragment(report)  # doctest: +SKIP
        True
    """
    return (
        f"<div class='fxns'>{_STYLE_TAG}<p>{escape(report.summary())}</p>"
        f"{_report_table(report, table_id=None, sortable=False)}</div>"
    )


def variants_fragment(v: VariantReport) -> str:
    """The side-by-side table as an HTML fragment (for notebooks).

    Example:
        >>> v._repr_html_() == variants_fragment(v)  # doctest: +SKIP
        True
    """
    return (
        f"<div class='fxns'>{_STYLE_TAG}<p>{escape(v._title())}</p>"
        f"{_variants_table(v, table_id=None, sortable=False)}"
        f"<p class='legend'>{escape(_legend())}</p></div>"
    )


def graph_diff_section(report: Report, diff: Any = None) -> str:
    """The graph diff of a page: ``diff`` if given, else the pairs of ``report``.

    ``diff`` may be anything with ``_repr_html_`` (used as it is) or a
    readable ``str`` (shown preformatted), such as a graph diff object. Without
    one, the section lists each matched pair, float operations beside their
    quantized partners, and the operations of each side with no partner.

    Example:
        >>> html = graph_diff_section(report)  # doctest: +SKIP
    """
    if diff is not None:
        to_html = getattr(diff, "_repr_html_", None)
        if callable(to_html):
            return f"<div class='diff'>{to_html()}</div>"
        return f"<pre class='diff'>{escape(str(diff))}</pre>"

    lines = []
    for index, row in enumerate(report.rows):
        lines.append(
            "<tr>"
            f"<td class='num'>{index}</td>"
            f"<td>{escape(row.name)}</td>"
            f"<td>{escape(' + '.join(row.float_ops) or row.kind)}"
            f"<div class='nodes'>{escape(', '.join(row.float_nodes))}</div></td>"
            "<td class='arrow'>↔</td>"
            f"<td>{escape(' + '.join(row.quant_ops))}"
            f"<div class='nodes'>{escape(', '.join(row.quant_nodes))}</div></td>"
            "</tr>"
        )
    table = (
        "<table class='pairs'><thead><tr><th>#</th><th>pair</th>"
        "<th>float operations</th><th></th><th>quantized operations</th>"
        f"</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    )
    unmatched = []
    for side, key in (("float", "unmatched_float"), ("quantized", "unmatched_quant")):
        nodes = list(report.meta.get(key, ()))
        text = ", ".join(nodes) if nodes else "none"
        unmatched.append(
            f"<p class='unmatched'><b>Only in the {side} graph</b> "
            f"({len(nodes)}): {escape(text)}</p>"
        )
    return table + "".join(unmatched)


# --- tables --------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    label: str
    # "num" columns sort by each cell's data-value, "text" ones by its text.
    type: str = "text"
    # "higher" or "lower": which way is better, for the first click's order.
    better: str = ""


@dataclass(frozen=True)
class _Cell:
    text: str
    value: float | None = None
    title: str = ""


def _report_table(report: Report, *, table_id: str | None, sortable: bool) -> str:
    metrics = report.metric_names()
    columns = [
        _Column("#", "num"),
        _Column("name"),
        _Column("kind"),
        _Column("float op"),
        _Column("quant op"),
        *(_metric_column(m) for m in metrics),
        _Column("note"),
    ]
    body = []
    for index, row in enumerate(report.rows):
        cells = [
            _Cell(str(index), float(index)),
            _Cell(row.name),
            _Cell(row.kind),
            _Cell("+".join(row.float_ops)),
            _Cell("+".join(row.quant_ops)),
        ]
        cells += [_metric_cell(m, row.metrics.get(m)) for m in metrics]
        cells.append(_Cell(row.note))
        body.append(cells)
    return _table(columns, body, table_id=table_id, sortable=sortable)


def _variants_table(v: VariantReport, *, table_id: str | None, sortable: bool) -> str:
    metrics = v.metric_names()
    columns = [_Column("#", "num"), _Column("name"), _Column("kind")]
    columns += [
        _metric_column(m, prefix=f"{name} ") for name in v.reports for m in metrics
    ]
    body = []
    for index, row in enumerate(v.rows):
        cells = [
            _Cell(str(index), float(index)),
            _Cell(row.name),
            _Cell(row.layer.kind),
        ]
        for name in v.reports:
            cell = row.cells[name]
            for metric in metrics:
                if cell is None:
                    cells.append(_Cell("-", title="no counterpart in this variant"))
                elif not cell.reads_here:
                    cells.append(_Cell(FUSED, title=f"fused into {cell.group}"))
                else:
                    value = cell.metrics.get(metric)
                    cells.append(
                        _metric_cell(
                            metric, value, title=f"{cell.group}: {cell.group_kind}"
                        )
                    )
        body.append(cells)
    return _table(columns, body, table_id=table_id, sortable=sortable)


def _metric_column(metric: str, prefix: str = "") -> _Column:
    unit = (
        " (dB)"
        if metric == "sqnr" or metric.startswith("sqnr_") or metric == "gain"
        else ""
    )
    better = "higher" if higher_is_better(metric) or metric == "gain" else "lower"
    return _Column(f"{prefix}{metric}{unit}", "num", better)


def _metric_cell(metric: str, value: float | None, title: str = "") -> _Cell:
    if value is None:
        return _Cell("", None, title)
    return _Cell(format(value, _FORMATS.get(metric, ".4g")), value, title)


def _table(
    columns: Sequence[_Column],
    body: Sequence[Sequence[_Cell]],
    *,
    table_id: str | None,
    sortable: bool,
) -> str:
    head = []
    for col in columns:
        attrs = f" data-type='{col.type}'"
        if col.better:
            attrs += f" data-better='{col.better}'"
        if sortable:
            attrs += " aria-sort='none' title='click to sort'"
        head.append(f"<th scope='col'{attrs}>{escape(col.label)}</th>")
    rows = []
    for cells in body:
        tds = []
        for col, cell in zip(columns, cells, strict=True):
            attrs = ""
            if col.type == "num":
                attrs += f" class='num' data-value='{_data_value(cell.value)}'"
            if cell.title:
                attrs += f" title='{escape(cell.title, quote=True)}'"
            tds.append(f"<td{attrs}>{escape(cell.text)}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    classes = "fxns-table" + (" sortable" if sortable else "")
    ident = f" id='{table_id}'" if table_id else ""
    return (
        f"<div class='scroll'><table class='{classes}'{ident}>"
        f"<thead><tr>{''.join(head)}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _data_value(value: float | None) -> str:
    # Empty sorts last; JavaScript's parseFloat reads "Infinity".
    if value is None or math.isnan(value):
        return ""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def _meta_list(meta: Mapping[str, Any]) -> str:
    items = []
    for key in ("batches", "fxns_version", "torch_version", "engine", "backend"):
        if key in meta:
            items.append(f"<li><b>{escape(key)}</b>: {escape(str(meta[key]))}</li>")
    for key in ("unmatched_float", "unmatched_quant"):
        if key in meta:
            items.append(f"<li><b>{escape(key)}</b>: {len(meta[key])}</li>")
    return f"<ul class='meta'>{''.join(items)}</ul>" if items else ""


def _has(report: Report, metric: str) -> bool:
    return any(metric in row.metrics for row in report.rows)


def _legend() -> str:
    return LEGEND


# --- plots ---------------------------------------------------------------------


def _sqnr_svg(
    series: Mapping[str, Sequence[float | None]], names: Sequence[str]
) -> str:
    """SQNR against position in the network, one line per series."""
    finite = [
        x
        for values in series.values()
        for x in values
        if x is not None and math.isfinite(x)
    ]
    top = max(finite, default=40.0)
    bottom = min(finite, default=0.0)
    span = max(top - bottom, 1.0)
    ceiling = top + 0.08 * span

    floor = bottom - 0.08 * span
    low, high = floor - 0.02 * span, ceiling + 0.06 * span

    fig = _figure_object(width=9.0, height=3.4)
    ax = fig.subplots()
    for label, values in series.items():
        points = [
            (i, x) for i, x in enumerate(values) if x is not None and not math.isnan(x)
        ]
        # The line joins finite values only: ±inf are marks on the edges,
        # not values a line could run to.
        xs = [i for i, _ in points]
        ys = [x if math.isfinite(x) else math.nan for _, x in points]
        (line,) = ax.plot(
            xs, ys, marker="o", markersize=3, linewidth=1.2, label=label or None
        )
        for edge, y, marker in ((math.inf, ceiling, "^"), (-math.inf, floor, "v")):
            marks = [i for i, x in points if x == edge]
            if marks:
                ax.plot(
                    marks,
                    [y] * len(marks),
                    linestyle="none",
                    marker=marker,
                    markersize=5,
                    color=line.get_color(),
                )
    _name_worst_points(ax, series, names, (low, high))
    ax.set_ylim(low, high)
    ax.set_xlabel("layer (execution order; the # column of the table)")
    ax.set_ylabel("SQNR (dB)")
    ax.grid(True, alpha=0.3)
    if any(series):
        ax.legend(fontsize=8, loc="lower left")
    edges = {x for values in series.values() for x in values if x is not None}
    legend = [
        text
        for edge, text in (
            (math.inf, "▲ exact (+inf dB)"),
            (-math.inf, "▼ all error, no signal (−inf dB)"),
        )
        if edge in edges
    ]
    if legend:
        ax.text(
            1.0,
            1.0,
            "   ".join(legend),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
        )
    return _svg(fig)


# The plot area of the SQNR chart in points (a 9 × 3.4 inch figure less its
# axes labels), and the size of a 7-point label, to keep names apart.
_PLOT_POINTS = (590.0, 190.0)
_CHAR_POINTS = 4.2
_LINE_POINTS = 9.0


def _name_worst_points(
    ax: Any,
    series: Mapping[str, Sequence[float | None]],
    names: Sequence[str],
    ylim: tuple[float, float],
) -> None:
    """Name the worst points, at most three, where their names do not overlap.

    On a long network the worst layers often sit side by side; a name is
    left out when its box would overlap one already placed.
    """
    width, height = _PLOT_POINTS
    last = max(len(names) - 1, 1)
    low, high = ylim
    boxes: list[tuple[float, float, float, float]] = []
    named: set[int] = set()
    for value, index in sorted(
        (x, i)
        for values in series.values()
        for i, x in enumerate(values)
        if x is not None and math.isfinite(x)
    ):
        if len(boxes) == 3:
            break
        if index in named:
            continue
        x = index / last * width + 4
        y = (value - low) / (high - low) * height - 10
        box = (x, y, x + _CHAR_POINTS * len(names[index]), y + _LINE_POINTS)
        if any(_overlap(box, other) for other in boxes):
            continue
        boxes.append(box)
        named.add(index)
        ax.annotate(
            names[index],
            (index, value),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _worst_figure(report: Report) -> str:
    """The chart of the worst layers, its caption counting them."""
    rows = _worst_rows(report)
    count = f"{len(rows)} worst layers" if len(rows) > 1 else "worst layer"
    return _figure(f"Error of the {count}", _worst_svg(rows))


def _worst_rows(report: Report) -> list[LayerResult]:
    """The layers with an error, worst first: −inf dB (an error where the
    float value is all zero) before any finite SQNR."""
    return [
        r
        for r in report.sorted_rows("sqnr")
        if r.metrics.get("mse", 0.0) > 0.0
        and not math.isnan(r.metrics.get("sqnr", math.nan))
    ][:WORST_LAYERS]


def _worst_svg(rows: Sequence[LayerResult]) -> str:
    """Typical and largest error of the worst layers, against the signal."""
    fig = _figure_object(width=9.0, height=0.36 * max(len(rows), 3) + 1.0)
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no layer has an error", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig)
    ys = list(range(len(rows)))
    rms = [math.sqrt(r.metrics["mse"]) for r in rows]
    largest = [r.metrics.get("max_abs", math.nan) for r in rows]
    # Σf²/n = mse · 10^(sqnr/10): the float value's own RMS, for scale (none
    # to draw on a log scale at −inf dB, where it is 0).
    signal = [
        math.sqrt(r.metrics["mse"] * 10 ** (r.metrics["sqnr"] / 10))
        if math.isfinite(r.metrics["sqnr"])
        else math.nan
        for r in rows
    ]
    ax.barh(ys, rms, color="#d62728", alpha=0.75, label="RMS of f − q")
    ax.plot(
        largest,
        ys,
        linestyle="none",
        marker="|",
        markersize=12,
        color="black",
        label="max |f − q|",
    )
    ax.plot(
        signal,
        ys,
        linestyle="none",
        marker="o",
        markersize=4,
        color="#1f77b4",
        label="RMS of f (signal)",
    )
    ax.set_yticks(
        ys, [f"{r.name}  ({r.metrics['sqnr']:.1f} dB)" for r in rows], fontsize=7
    )
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("magnitude (log scale)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncols=3,
        frameon=False,
    )
    return _svg(fig)


def _gain_svg(report: Report) -> str:
    """Bars of the gain of keeping each layer in float, largest first."""
    rows = [r for r in report.rows if math.isfinite(r.metrics.get("gain", math.nan))]
    rows = sorted(rows, key=lambda r: -r.metrics["gain"])[:GAIN_LAYERS]
    fig = _figure_object(width=9.0, height=0.3 * max(len(rows), 3) + 1.0)
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no finite gain", ha="center", va="center")
        ax.set_axis_off()
        return _svg(fig)
    ys = list(range(len(rows)))
    gains = [r.metrics["gain"] for r in rows]
    ax.barh(ys, gains, color=["#2ca02c" if g > 0 else "#7f7f7f" for g in gains])
    ax.set_yticks(ys, [r.name for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("end-to-end SQNR gained by keeping the layer in float (dB)")
    ax.grid(True, axis="x", alpha=0.3)
    return _svg(fig)


def _figure_object(width: float, height: float) -> Figure:
    # A bare Figure: no pyplot, so no global state and no GUI backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure) -> str:
    """The figure as inline SVG (text kept as text, ids deterministic)."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "fxns"}):
        fig.savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg") :]


def _unique_ids(html: str) -> str:
    """Prefix the ids inside each SVG so that two plots never share one."""
    count = 0

    def prefix(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        p = f"f{count}-"
        svg = match.group(0)
        svg = re.sub(r'id="([^"]+)"', rf'id="{p}\1"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{p}\1)", svg)
        return re.sub(r'href="#([^"]+)"', rf'href="#{p}\1"', svg)

    return re.sub(r"<svg\b.*?</svg>", prefix, html, flags=re.DOTALL)


def _figure(caption: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


# --- the page ------------------------------------------------------------------


def _page(title: str, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title>{_STYLE_TAG}</head>"
        f"<body><main class='fxns'><h1>{escape(title)}</h1>"
        f"{_unique_ids(''.join(sections))}"
        f"</main><script>{_SCRIPT}</script></body></html>\n"
    )


_STYLE = """
.fxns { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
  max-width: 1200px; margin: 0 auto; padding: 0 1em; }
.fxns h1 { font-size: 1.4em; } .fxns h2 { font-size: 1.15em; margin-top: 1.6em; }
.fxns .summary { font-weight: 600; }
.fxns ul.meta { display: flex; flex-wrap: wrap; gap: 0.3em 1.5em; padding: 0;
  list-style: none; font-size: 0.85em; color: #555; }
.fxns figure { margin: 1em 0; } .fxns figure svg { max-width: 100%; height: auto; }
.fxns figcaption { font-size: 0.85em; color: #555; }
.fxns .scroll { overflow-x: auto; }
.fxns table { border-collapse: collapse; font-size: 0.85em; }
.fxns th, .fxns td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e4e4;
  text-align: left; white-space: nowrap; }
.fxns td.num { text-align: right; font-variant-numeric: tabular-nums; }
.fxns thead th { position: sticky; top: 0; background: #f4f4f4; }
.fxns table.sortable th { cursor: pointer; user-select: none; }
.fxns th[aria-sort="ascending"]::after { content: " \\25B2"; }
.fxns th[aria-sort="descending"]::after { content: " \\25BC"; }
.fxns tbody tr:nth-child(even) { background: #fafafa; }
.fxns tbody tr:hover { background: #eef4ff; }
.fxns .nodes { font-size: 0.8em; color: #777; }
.fxns td.arrow { color: #999; }
.fxns .legend, .fxns .unmatched { font-size: 0.85em; color: #555; }
.fxns pre.diff { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.fxns details { margin: 1em 0; }
"""

_STYLE_TAG = f"<style>{_STYLE}</style>"

# Sorting: the first click on a numeric column puts the worst rows first
# (lowest SQNR, highest MSE); the next click reverses. Empty cells stay last.
_SCRIPT = """
(function () {
  "use strict";
  function key(cell, numeric) {
    if (!numeric) { return cell.textContent; }
    var text = cell.getAttribute("data-value");
    return text === "" ? null : parseFloat(text);
  }
  function sortTable(table, index, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    var ascending;
    if (current === "ascending") { ascending = false; }
    else if (current === "descending") { ascending = true; }
    else { ascending = !numeric || th.getAttribute("data-better") !== "lower"; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = numeric ? (x < y ? -1 : x > y ? 1 : 0)
                          : x.localeCompare(y, undefined, {numeric: true});
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(th.parentNode.cells, function (other) {
      other.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener("click", function () { sortTable(table, index, th); });
    });
  });
})();
"""
