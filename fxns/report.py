"""Per-layer results and their renderings: step 6 of the pipeline.

A :class:`Report` is a list of :class:`LayerResult` rows in the float model's
execution order. It prints as a table (tabulate), sorts and filters
(:meth:`Report.table`), and exports to a JSON-ready dict, JSON, CSV, a
self-contained HTML page (:mod:`fxns.html`) and a pandas ``DataFrame``.
:class:`VariantReport` holds one report per quantized variant of the same
float model and prints them side by side, lined up on the float model's
layers (:mod:`fxns.variants`).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from .errors import ArgumentError, FxnsError, MetricError, ReportError, RowError
from .stats import HIGHER_IS_BETTER, METRICS
from .variants import (
    FUSED,
    FloatLayer,
    VariantRow,
    align,
    layers_from_reports,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GAIN",
    "SCHEMA_VERSION",
    "SENSITIVITY_METRICS",
    "SQNR_ALONE",
    "SQNR_FLOAT",
    "LayerResult",
    "Report",
    "VariantReport",
    "higher_is_better",
]

# Version of the JSON layout written by Report.to_dict; readers accept this
# version and older ones. 2 added the non-finite counts.
SCHEMA_VERSION = 2

# The metrics of a sensitivity report (fxns.sensitivity), in display order:
# dB of end-to-end SQNR gained by keeping a layer in float, the output SQNR
# with only that layer in float, and with only that layer quantized.
GAIN = "gain"
SQNR_FLOAT = "sqnr_float"
SQNR_ALONE = "sqnr_alone"
SENSITIVITY_METRICS = (GAIN, SQNR_FLOAT, SQNR_ALONE)

# Column names of the table and the exports.
NAME = "name"
KIND = "kind"
FLOAT_OPS = "float op"
QUANT_OPS = "quant op"
NONFINITE = "nan/inf f/q"
NOTE = "note"


@dataclass(frozen=True)
class LayerResult:
    """The comparison of one matched pair.

    Example:
        >>> row = report["layer1.0.conv1"]  # doctest: +SKIP
        >>> row.kind, round(row.metrics["sqnr"], 1)  # doctest: +SKIP
        ('conv2d+batch_norm+relu', 31.2)
    """

    # The pair's stable name (float side's module path or fx node name); for
    # one tensor of a tuple-valued op, with the element (``rnn[h_n]``), and
    # for one of a layer's several weights, with the weight (``rnn.weight_hh_l0``).
    name: str
    # Canonical kind of the float side ("conv2d+batch_norm+relu").
    kind: str
    # fx node names on each side, in execution order.
    float_nodes: tuple[str, ...]
    quant_nodes: tuple[str, ...]
    # Metric name → value; at least "sqnr" (dB), "cosine", "mse", "max_abs".
    # Empty when the pair could not be compared (see ``note``).
    metrics: Mapping[str, float]
    # Readable op names on each side ("nn.Conv2d", "quantized::add").
    float_ops: tuple[str, ...] = ()
    quant_ops: tuple[str, ...] = ()
    # Why the numbers are missing or need care; empty otherwise.
    note: str = ""
    # Elements compared, over all batches (0 for weights compared once).
    elements: int = 0
    # NaN or ±Inf values seen on each side, over all batches; the metrics
    # cover only the element pairs in which both values are finite.
    nonfinite_float: int = 0
    nonfinite_quant: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; non-finite metrics become "inf", "-inf", "nan"."""
        return {
            "name": self.name,
            "kind": self.kind,
            "float_nodes": list(self.float_nodes),
            "quant_nodes": list(self.quant_nodes),
            "float_ops": list(self.float_ops),
            "quant_ops": list(self.quant_ops),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "note": self.note,
            "elements": self.elements,
            "nonfinite_float": self.nonfinite_float,
            "nonfinite_quant": self.nonfinite_quant,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerResult:
        """The inverse of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            float_nodes=tuple(data["float_nodes"]),
            quant_nodes=tuple(data["quant_nodes"]),
            metrics={k: float(v) for k, v in data["metrics"].items()},
            float_ops=tuple(data.get("float_ops", ())),
            quant_ops=tuple(data.get("quant_ops", ())),
            note=data.get("note", ""),
            elements=int(data.get("elements", 0)),
            nonfinite_float=int(data.get("nonfinite_float", 0)),
            nonfinite_quant=int(data.get("nonfinite_quant", 0)),
        )


@dataclass
class Report:
    """Per-layer comparison results, in the float model's execution order.

    Example:
        >>> r = fxns.compare_activations(f, q, batches)  # doctest: +SKIP
        >>> print(r)  # doctest: +SKIP
        >>> r.table(sort_by="sqnr", top=5)  # doctest: +SKIP
        >>> r.to_json("report.json")  # doctest: +SKIP
    """

    rows: list[LayerResult]
    # "weights", "propagated" or "shadow".
    mode: str = ""
    # Facts about the run (batches seen, torch version, engine, ...).
    meta: dict[str, Any] = field(default_factory=dict)
    # Copies of the compared values of the rows named in compare_activations'
    # keep_tensors, one (float, quantized-as-float) pair per batch; empty
    # unless asked for. Not part of the JSON or CSV.
    tensors: dict[str, list[tuple[Any, Any]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __getitem__(self, name: str) -> LayerResult:
        for row in self.rows:
            if row.name == name:
                return row
        close = difflib.get_close_matches(str(name), self.names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise RowError(
            f"no row named {name!r} in this report{hint} (report.names lists them all)"
        )

    def get(self, name: str) -> LayerResult | None:
        """The row called ``name``, or ``None``."""
        return next((row for row in self.rows if row.name == name), None)

    def __contains__(self, name: object) -> bool:
        return any(row.name == name for row in self.rows)

    def __iter__(self) -> Iterator[LayerResult]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        return self.table()

    @property
    def names(self) -> list[str]:
        """Row names in execution order."""
        return [row.name for row in self.rows]

    def sorted_rows(
        self, sort_by: str | None = None, top: int | None = None
    ) -> list[LayerResult]:
        """Rows ordered worst first by a metric, optionally only the first ``top``.

        "Worst" is the lowest ``sqnr``/``cosine`` or the highest
        ``mse``/``max_abs``. Rows without that metric, or with NaN, go last.

        Example:
            >>> [r.name for r in report.sorted_rows("sqnr", top=3)]  # doctest: +SKIP
            ['fc', 'layer4.1.conv2', 'add_7']
        """
        _check_top(top)
        rows = list(self.rows)
        if sort_by is not None:
            self._check_metric(sort_by)
            sign = 1.0 if higher_is_better(sort_by) else -1.0

            def key(row: LayerResult) -> tuple[int, float]:
                value = row.metrics.get(sort_by, math.nan)
                if math.isnan(value):
                    return (1, 0.0)
                return (0, sign * value)

            rows.sort(key=key)
        if top is not None:
            rows = rows[: max(top, 0)]
        return rows

    def table(
        self,
        sort_by: str | None = None,
        top: int | None = None,
        *,
        metrics: Sequence[str] | None = None,
        tablefmt: str = "simple",
        floatfmt: str | None = None,
    ) -> str:
        """The report as a text table.

        Args:
            sort_by: a metric name; rows are sorted worst first.
            top: keep only the first ``top`` rows (after sorting).
            metrics: the metric columns to show (default: all four).
            tablefmt: any tabulate format ("simple", "github", "grid", ...).
            floatfmt: format of the metric values (default: per metric,
                ``.2f`` for dB, ``.6f`` for cosine, ``.3g`` otherwise).

        Example:
            >>> text = report.table(sort_by="sqnr", top=3)  # doctest: +SKIP
        """
        if isinstance(metrics, str):
            raise ArgumentError(
                f"metrics={metrics!r} is one name; pass a list, "
                f"e.g. metrics=[{metrics!r}]"
            )
        columns = list(metrics) if metrics is not None else self.metric_names()
        for metric in columns:
            self._check_metric(metric)
        rows = self.sorted_rows(sort_by, top)
        has_notes = any(row.note for row in rows)
        has_nonfinite = any(row.nonfinite_float or row.nonfinite_quant for row in rows)
        headers = (
            [NAME, KIND, FLOAT_OPS, QUANT_OPS, *columns]
            + ([NONFINITE] if has_nonfinite else [])
            + ([NOTE] if has_notes else [])
        )
        body = []
        for row in rows:
            line: list[Any] = [
                row.name,
                row.kind,
                _ops_cell(row.float_ops),
                _ops_cell(row.quant_ops),
            ]
            line += [row.metrics.get(m, "") for m in columns]
            if has_nonfinite:
                line.append(f"{row.nonfinite_float}/{row.nonfinite_quant}")
            if has_notes:
                line.append(row.note)
            body.append(line)
        title = self._title(len(rows), sort_by)
        formats = (
            [""] * 4 + [floatfmt or _FORMATS.get(m, ".4g") for m in columns] + [""] * 2
        )
        # Text columns stay text: a layer named "0" is a name, not a number.
        text_columns = [i for i, h in enumerate(headers) if h not in columns]
        text = tabulate(
            body,
            headers=headers,
            tablefmt=tablefmt,
            floatfmt=formats,
            disable_numparse=text_columns,
        )
        return f"{title}\n{text}" if title else text

    def metric_names(self) -> list[str]:
        """The metrics present in this report, standard ones first.

        A report with no numbers at all (every row has a note instead) names
        the metrics of its kind: those of a sensitivity report, or the four
        standard ones.
        """
        seen = dict.fromkeys(METRICS)
        for row in self.rows:
            seen.update(dict.fromkeys(row.metrics))
        present = {m for row in self.rows for m in row.metrics}
        if present:
            return [m for m in seen if m in present]
        return list(SENSITIVITY_METRICS if self.mode == "sensitivity" else METRICS)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers as "inf", "-inf", "nan").

        Example:
            >>> report.to_dict()["rows"][0]["metrics"]["sqnr"]  # doctest: +SKIP
            31.2
        """
        return {
            "schema": SCHEMA_VERSION,
            "mode": self.mode,
            "meta": dict(self.meta),
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """The inverse of :meth:`to_dict`.

        Raises:
            ReportError: ``data`` is not a report, or was written by a newer
                fxns (its ``schema`` is above :data:`SCHEMA_VERSION`).
        """
        if _is_variant_report(data):
            raise ReportError(
                "this is a VariantReport's JSON (the comparison of variants "
                f"{', '.join(map(repr, data['variants']))}); use "
                "fxns.VariantReport.from_json to read it"
            )
        if not isinstance(data, Mapping) or not isinstance(data.get("rows"), list):
            raise ReportError(
                f"not an fxns report: expected a JSON object with a 'rows' list, "
                f"got {_summary(data)}; read files written by Report.to_json"
            )
        _check_schema(data, "Report.to_json")
        try:
            rows = [LayerResult.from_dict(r) for r in data["rows"]]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ReportError(
                f"a row of this report is malformed ({type(err).__name__}: {err}); "
                "read files written by Report.to_json"
            ) from err
        return cls(
            rows=rows,
            mode=data.get("mode", ""),
            meta=dict(data.get("meta", {})),
        )

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """Write the report as JSON to ``path`` (if given) and return the text.

        Example:
            >>> report.to_json("report.json")  # doctest: +SKIP
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Report:
        """Read a report written by :meth:`to_json` (a path or the JSON text).

        The round trip is exact: every number, name, note and ``meta`` entry
        comes back as it was written.

        Raises:
            ReportError: the text is not JSON, or not an fxns report.

        Example:
            >>> back = Report.from_json(report.to_json())  # doctest: +SKIP
            >>> back.to_dict() == report.to_dict()  # doctest: +SKIP
            True
        """
        return cls.from_dict(_read_json(source, "Report.to_json"))

    def to_csv(self, path: str | Path | None = None) -> str:
        """Write the report as CSV to ``path`` (if given) and return the text.

        One line per row: name, kind, ops and nodes of each side (joined with
        "+"), then one column per metric, then the note.

        Example:
            >>> report.to_csv("report.csv")  # doctest: +SKIP
        """
        metrics = self.metric_names()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "name",
                "kind",
                "float_ops",
                "quant_ops",
                "float_nodes",
                "quant_nodes",
                *metrics,
                "nonfinite_float",
                "nonfinite_quant",
                "note",
            ]
        )
        for row in self.rows:
            writer.writerow(
                [
                    row.name,
                    row.kind,
                    "+".join(row.float_ops),
                    "+".join(row.quant_ops),
                    "+".join(row.float_nodes),
                    "+".join(row.quant_nodes),
                ]
                + [
                    _json_float(row.metrics[m]) if m in row.metrics else ""
                    for m in metrics
                ]
                + [row.nonfinite_float, row.nonfinite_quant, row.note]
            )
        text = out.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def summary(self) -> str:
        """One line: what was compared and the layer with the lowest SQNR.

        Example:
            >>> report.summary()  # doctest: +SKIP
            'fxns shadow comparison: 42 layers, 3 batches; lowest SQNR: fc 18.2 dB'
        """
        head = self._title() or f"fxns report: {len(self.rows)} layers"
        has_sqnr = any("sqnr" in r.metrics for r in self.rows)
        worst = self.sorted_rows("sqnr", top=1) if has_sqnr else []
        if worst and not math.isnan(worst[0].metrics["sqnr"]):
            row = worst[0]
            head += f"; lowest SQNR: {row.name} {row.metrics['sqnr']:.1f} dB"
        # A sensitivity report: the fully quantized output and the best gain.
        if "baseline_sqnr" in self.meta:
            head += f"; fully quantized output {self.meta['baseline_sqnr']:.1f} dB"
        gains = [
            r for r in self.rows if not math.isnan(r.metrics.get("gain", math.nan))
        ]
        best = sorted(gains, key=lambda r: -r.metrics["gain"])[:1]
        if best:
            row = best[0]
            head += f"; keeping {row.name} in float gains {row.metrics['gain']:+.2f} dB"
        return head

    def to_html(self, path: str | Path | None = None, *, diff: Any = None) -> str:
        """Write the report as one self-contained HTML page; return the HTML.

        The page has the sortable table, SQNR along the network, the error of
        the worst layers and the pairs of both graphs; it needs nothing but a
        browser (no network, no files next to it).

        Args:
            path: where to write the page (not written if ``None``).
            diff: a graph diff to show instead of the plain listing of pairs:
                anything with ``_repr_html_`` or a readable ``str``.

        Example:
            >>> report.to_html("report.html")  # doctest: +SKIP
        """
        from .html import report_page

        text = report_page(self, diff=diff)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def _repr_html_(self) -> str:
        from .html import report_fragment

        return report_fragment(self)

    def to_dataframe(self) -> pd.DataFrame:
        """The rows as a ``pandas.DataFrame`` indexed by layer name.

        Columns: ``kind``, ``float_op``, ``quant_op``, one per metric, and
        ``note``. Needs pandas (``pip install fxns[pandas]``).

        Example:
            >>> report.to_dataframe().sort_values("sqnr").head()  # doctest: +SKIP
        """
        pandas = _import_pandas()
        metrics = self.metric_names()
        records = [
            {
                NAME: row.name,
                KIND: row.kind,
                "float_op": _ops_cell(row.float_ops),
                "quant_op": _ops_cell(row.quant_ops),
                **{m: row.metrics.get(m, math.nan) for m in metrics},
                NOTE: row.note,
            }
            for row in self.rows
        ]
        columns = [NAME, KIND, "float_op", "quant_op", *metrics, NOTE]
        return pandas.DataFrame.from_records(records, columns=columns).set_index(NAME)

    def _check_metric(self, name: str) -> None:
        _check_metric(name, set(self.metric_names()), "this report has")

    def _title(self, shown: int | None = None, sort_by: str | None = None) -> str:
        """ "fxns shadow comparison: 3 of 13 layers, worst first by sqnr, 2
        batches": what the table shows of the report."""
        if not self.mode:
            return ""
        batches = self.meta.get("batches")
        seen = f", {_count(batches, 'batch', 'batches')}" if batches else ""
        return (
            f"fxns {self.mode} comparison: "
            f"{_shown(shown, len(self.rows), sort_by)}{seen}"
        )


@dataclass
class VariantReport:
    """Reports of several quantized variants of one float model, side by side.

    The rows are the float model's layers (:attr:`layers`), so they line up
    whatever each variant fused: a fused group's numbers are read on its last
    float layer, and its other layers show :data:`fxns.variants.FUSED`.

    Example:
        >>> v = fxns.compare_variants(f, {"a": q1, "b": q2}, data)  # doctest: +SKIP
        >>> print(v)  # doctest: +SKIP
        >>> v.reports["a"]["layer1.0.conv1"].metrics["sqnr"]  # doctest: +SKIP
    """

    # Variant name → its report, in the order given.
    reports: dict[str, Report]
    # The float model's layers in execution order: the rows. When empty,
    # they are worked out from the reports' rows.
    layers: list[FloatLayer] = field(default_factory=list)

    def __str__(self) -> str:
        return self.table()

    @property
    def variants(self) -> list[str]:
        """Variant names, in the order given."""
        return list(self.reports)

    @property
    def mode(self) -> str:
        """The comparison mode of the reports ("propagated", "shadow", ...)."""
        modes = dict.fromkeys(r.mode for r in self.reports.values())
        return "/".join(m for m in modes if m)

    @property
    def rows(self) -> list[VariantRow]:
        """One row per float layer, with each variant's cell."""
        return align(self.reports, self.layers or layers_from_reports(self.reports))

    def metric_names(self) -> list[str]:
        """The metrics present in any variant, standard ones first."""
        names: dict[str, None] = {}
        for report in self.reports.values():
            names.update(dict.fromkeys(report.metric_names()))
        return list(names)

    def sorted_rows(
        self, sort_by: str | None = None, top: int | None = None
    ) -> list[VariantRow]:
        """Rows ordered worst first, optionally only the first ``top``.

        Args:
            sort_by: a metric (``"sqnr"``): each row ranks by its worst value
                in any variant; or one column, ``"<variant> <metric>"``
                (``"x86 sqnr"``). Rows with no value go last, in order.
            top: keep only the first ``top`` rows (after sorting).

        Example:
            >>> [r.name for r in v.sorted_rows("sqnr", top=3)]  # doctest: +SKIP
            ['layer4.1.conv2', 'fc', 'add_7']
        """
        _check_top(top)
        rows = self.rows
        if sort_by is not None:
            variants, metric = self._sort_key(sort_by)
            sign = 1.0 if higher_is_better(metric) else -1.0

            def key(row: VariantRow) -> tuple[int, float]:
                values = [row.value(v, metric) for v in variants]
                ranked = [
                    sign * x for x in values if x is not None and not math.isnan(x)
                ]
                return (0, min(ranked)) if ranked else (1, 0.0)

            rows = sorted(rows, key=key)
        return rows if top is None else rows[:top]

    def table(
        self,
        metrics: str | Sequence[str] = ("sqnr",),
        *,
        sort_by: str | None = None,
        top: int | None = None,
        tablefmt: str = "simple",
        floatfmt: str | None = None,
        legend: bool = True,
    ) -> str:
        """One row per float layer, one column per variant and metric.

        Args:
            metrics: the metric(s) to show for each variant.
            sort_by: sort worst first by a metric (each row's worst value in
                any variant) or by one column ("x86 sqnr"); see
                :meth:`sorted_rows`.
            top: keep only the first ``top`` rows (after sorting).
            tablefmt: any tabulate format ("simple", "github", ...).
            floatfmt: format of the values (default: per metric).
            legend: add the line that explains the fused-layer mark.

        Example:
            >>> print(v.table(["sqnr", "cosine"], tablefmt="github"))  # doctest: +SKIP
            >>> print(v.table(sort_by="sqnr", top=5))  # doctest: +SKIP
        """
        columns = [metrics] if isinstance(metrics, str) else list(metrics)
        known = set(self.metric_names())
        for metric in columns:
            _check_metric(metric, known, "these reports have")
        rows = self.sorted_rows(sort_by, top)
        headers = [NAME, KIND, *(f"{v} {m}" for v in self.reports for m in columns)]
        body = []
        for row in rows:
            line: list[str] = [row.name, row.layer.kind]
            for variant in self.reports:
                cell = row.cells[variant]
                for metric in columns:
                    if cell is None:
                        line.append("-")
                    elif not cell.reads_here:
                        line.append(FUSED)
                    elif metric in cell.metrics:
                        fmt = floatfmt or _FORMATS.get(metric, ".4g")
                        line.append(format(cell.metrics[metric], fmt))
                    else:
                        line.append("")
            body.append(line)
        # Values are formatted above: the marks would stop tabulate's own
        # number formatting for the whole column.
        align = ["left", "left"] + ["right"] * (len(headers) - 2)
        text = tabulate(
            body,
            headers=headers,
            tablefmt=tablefmt,
            disable_numparse=True,
            colalign=align,
        )
        parts = [self._title(len(rows), sort_by), text]
        if legend:
            parts.append(LEGEND)
        return "\n".join(p for p in parts if p)

    def _sort_key(self, sort_by: str) -> tuple[list[str], str]:
        """The variants and the metric that ``sort_by`` names."""
        for variant in self.reports:
            prefix = f"{variant} "
            if sort_by.startswith(prefix):
                metric = sort_by.removeprefix(prefix)
                _check_metric(metric, set(self.metric_names()), "these reports have")
                return [variant], metric
        known = set(self.metric_names())
        if sort_by not in known:
            columns = {f"{v} {m}" for v in self.reports for m in known}
            _check_metric(sort_by, known | columns, "these reports have")
        return list(self.reports), sort_by

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the aligned rows and every variant's report.

        Example:
            >>> v.to_dict()["rows"][0]["cells"]["fused"]["group"]  # doctest: +SKIP
            'conv1'
        """
        return {
            "schema": SCHEMA_VERSION,
            "variants": self.variants,
            "rows": [
                {
                    **row.layer.to_dict(),
                    "cells": {
                        v: (c.to_dict() if c is not None else None)
                        for v, c in row.cells.items()
                    },
                }
                for row in self.rows
            ],
            "reports": {v: r.to_dict() for v, r in self.reports.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantReport:
        """The inverse of :meth:`to_dict`.

        Raises:
            ReportError: ``data`` is not a variant report (a
                :class:`Report`'s dict, say), or was written by a newer fxns.

        Example:
            >>> back = VariantReport.from_dict(v.to_dict())  # doctest: +SKIP
        """
        if not _is_variant_report(data):
            hint = (
                "this is a Report's JSON; use fxns.Report.from_json to read it"
                if isinstance(data, Mapping) and isinstance(data.get("rows"), list)
                else "read files written by VariantReport.to_json"
            )
            raise ReportError(
                "not an fxns variant report: expected a JSON object with a "
                f"'reports' object and a 'variants' list, got {_summary(data)}; "
                f"{hint}"
            )
        _check_schema(data, "VariantReport.to_json")
        reports = {v: Report.from_dict(r) for v, r in data["reports"].items()}
        try:
            layers = [
                FloatLayer(name=r["name"], node=r["node"], kind=r["kind"])
                for r in data.get("rows", ())
            ]
        except (KeyError, TypeError) as err:
            raise ReportError(
                f"a row of this variant report is malformed ({type(err).__name__}: "
                f"{err}); read files written by VariantReport.to_json"
            ) from err
        return cls(reports=reports, layers=layers)

    @classmethod
    def from_json(cls, source: str | Path) -> VariantReport:
        """Read a variant report written by :meth:`to_json` (a path or the JSON).

        Raises:
            ReportError: the text is not JSON, or not an fxns variant report.

        Example:
            >>> back = VariantReport.from_json(v.to_json())  # doctest: +SKIP
            >>> back.to_dict() == v.to_dict()  # doctest: +SKIP
            True
        """
        return cls.from_dict(_read_json(source, "VariantReport.to_json"))

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """Write :meth:`to_dict` as JSON to ``path`` (if given); return the text.

        Example:
            >>> v.to_json("variants.json")  # doctest: +SKIP
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """Write the aligned table as CSV to ``path`` (if given); return the text.

        Columns: ``name``, ``kind``, then for each variant ``<variant> group``
        (the variant's row that covers the layer) and ``<variant> <metric>``
        for every metric, empty where the group is not read on this layer.

        Example:
            >>> v.to_csv("variants.csv")  # doctest: +SKIP
        """
        metrics = self.metric_names()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header = [NAME, KIND]
        for variant in self.reports:
            header += [f"{variant} group", *(f"{variant} {m}" for m in metrics)]
        writer.writerow(header)
        for row in self.rows:
            line: list[Any] = [row.name, row.layer.kind]
            for variant in self.reports:
                cell = row.cells[variant]
                line.append(cell.group if cell is not None else "")
                for metric in metrics:
                    value = row.value(variant, metric)
                    line.append(_json_float(value) if value is not None else "")
            writer.writerow(line)
        text = out.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_html(self, path: str | Path | None = None) -> str:
        """Write the side-by-side comparison as one self-contained HTML page.

        The page has SQNR along the network for every variant and the
        aligned, sortable table.

        Example:
            >>> v.to_html("variants.html")  # doctest: +SKIP
        """
        from .html import variants_page

        text = variants_page(self)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def _repr_html_(self) -> str:
        from .html import variants_fragment

        return variants_fragment(self)

    def to_dataframe(self) -> pd.DataFrame:
        """The aligned table as a ``pandas.DataFrame`` indexed by layer name.

        Columns: ``kind``, then ``<variant> <metric>`` for every variant and
        metric (NaN where the variant's group is not read on that layer).
        Needs pandas (``pip install fxns[pandas]``).

        Example:
            >>> v.to_dataframe()[["fused sqnr", "unfused sqnr"]]  # doctest: +SKIP
        """
        pandas = _import_pandas()
        metrics = self.metric_names()
        records = []
        for row in self.rows:
            record: dict[str, Any] = {NAME: row.name, KIND: row.layer.kind}
            for variant in self.reports:
                for metric in metrics:
                    value = row.value(variant, metric)
                    record[f"{variant} {metric}"] = (
                        value if value is not None else math.nan
                    )
            records.append(record)
        columns = [NAME, KIND] + [f"{v} {m}" for v in self.reports for m in metrics]
        return pandas.DataFrame.from_records(records, columns=columns).set_index(NAME)

    def _title(self, shown: int | None = None, sort_by: str | None = None) -> str:
        names = ", ".join(self.reports)
        mode = f" {self.mode}" if self.mode else ""
        batches: set[int] = {
            r.meta["batches"] for r in self.reports.values() if "batches" in r.meta
        }
        seen = ""
        if len(batches) == 1:
            (n,) = batches
            seen = f", {_count(n, 'batch', 'batches')}"
        return (
            f"fxns{mode} comparison of {len(self.reports)} variants ({names}): "
            f"{_shown(shown, len(self.rows), sort_by)}{seen}"
        )


# Explains the marks of the side-by-side table.
LEGEND = (
    f"{FUSED} fused into a group whose numbers are on a layer below; "
    "- no counterpart in that variant"
)


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` mean less error.

    True for ``sqnr`` and ``cosine`` and for metrics derived from them
    (``sqnr_float``: an SQNR measured in another setting).

    Example:
        >>> higher_is_better("sqnr"), higher_is_better("mse")
        (True, False)
    """
    return metric in HIGHER_IS_BETTER or metric.split("_", 1)[0] in HIGHER_IS_BETTER


def _import_pandas() -> Any:
    try:
        import pandas
    except ImportError as err:
        raise FxnsError(
            "to_dataframe needs pandas, which is not installed; "
            "install it with: pip install fxns[pandas]"
        ) from err
    return pandas


# Default display format per metric: enough digits to tell layers apart; dB
# with two decimals.
_FORMATS = {
    "sqnr": ".2f",
    "cosine": ".6f",
    "mse": ".3g",
    "max_abs": ".3g",
    GAIN: ".2f",
    SQNR_FLOAT: ".2f",
    SQNR_ALONE: ".2f",
}


def _ops_cell(ops: tuple[str, ...]) -> str:
    return "+".join(ops)


def _check_metric(name: object, known: set[str], where: str) -> None:
    if not isinstance(name, str):
        raise MetricError(
            f"a metric is named by one string, got {type(name).__name__} "
            f"{name!r}; {where} {', '.join(sorted(known))}"
        )
    if name not in known:
        close = difflib.get_close_matches(str(name).lower(), sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise MetricError(
            f"unknown metric {name!r}; {hint}{where} {', '.join(sorted(known))}"
        )


def _check_top(top: object) -> None:
    if top is not None and (not isinstance(top, int) or isinstance(top, bool)):
        raise ArgumentError(f"top must be a whole number of rows or None, got {top!r}")
    if isinstance(top, int) and top < 0:
        raise ArgumentError(
            f"top must be a number of rows (0 or more) or None, got {top}; "
            "e.g. top=10 for the ten worst layers"
        )


def _shown(shown: int | None, total: int, sort_by: str | None) -> str:
    """ "3 of 13 layers, worst first by sqnr": which rows a table shows."""
    layers = (
        _count(total, "layer", "layers")
        if shown is None or shown == total
        else f"{shown} of {_count(total, 'layer', 'layers')}"
    )
    return f"{layers}, worst first by {sort_by}" if sort_by else layers


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _read_json(source: str | Path, writer: str) -> Any:
    """The JSON value in ``source``: a path, or the JSON text itself."""
    text = str(source)
    if isinstance(source, Path) or not text.lstrip().startswith(("{", "[")):
        text = Path(source).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = "" if text.lstrip().startswith("{") else f" in {str(source)!r}"
        raise ReportError(
            f"not JSON{where}: {err}; read files written by {writer}"
        ) from err


def _is_variant_report(data: object) -> bool:
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("reports"), Mapping)
        and isinstance(data.get("variants"), list)
    )


def _check_schema(data: Mapping[str, Any], writer: str) -> None:
    schema = data.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ReportError(
            f"this report's schema version {schema!r} is not a whole number; "
            f"read files written by {writer}"
        )
    if schema > SCHEMA_VERSION:
        raise ReportError(
            f"this report has schema version {schema!r}, newer than the "
            f"{SCHEMA_VERSION} this fxns reads; upgrade fxns to read it"
        )


def _summary(value: object) -> str:
    if isinstance(value, Mapping):
        keys = ", ".join(map(repr, list(value)[:5]))
        return f"an object with keys {keys}" if keys else "an empty object"
    return f"a JSON {type(value).__name__}"


def _json_float(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
