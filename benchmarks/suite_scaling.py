"""The suite's matching section: match time against node count, both tools.

For each generated family of ``benchmarks/models.py`` (tiny widths: only the
structure matters) and each size, the model is quantized as
``bench_match.py`` does it (FX, x86, min/max observers, one calibration
batch: the observers decide scales, not the graph), both models are traced
once, and on that pair of ``GraphModule``s this times:

- fxns: ``build_op_graph`` of both sides and ``match_graphs`` (``fxns.match``
  without the tracing), ``repeat`` times, median and best;
- torch.ao.ns: ``get_matching_subgraph_pairs`` once, on graphs of at most
  ``ao_max_nodes`` nodes (it takes about 10 ms per node); larger ones are
  "skipped", with the time it would take at the per-node rate measured on
  the largest graph it ran on.

The growth exponent of a tool in a family is the slope of log(time) against
log(nodes) between its smallest and largest graph: 1.0 is linear.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.bench_match import fxns_match, quantized, torch_ns_match
from benchmarks.harness import first_line, median, print_table
from benchmarks.models import FAMILIES, model_with_about
from fxns.trace import trace

__all__ = ["DEFAULT_SIZES", "HEADERS", "ScalingRow", "exponent", "run_scaling"]

DEFAULT_SIZES = (100, 300, 1000, 3000, 10000)
# torch.ao.ns's matcher, seconds per node, before anything was measured.
AO_SECONDS_PER_NODE = 0.010

HEADERS = (
    "family",
    "fx nodes",
    "quant nodes",
    "pairs",
    "unmatched",
    "fxns match (ms)",
    "best (ms)",
    "µs / node",
    "torch.ao.ns match (ms)",
    "its pairs",
    "torch.ao.ns / fxns",
    "note",
)


@dataclass
class ScalingRow:
    """One family at one size."""

    family: str
    # The size asked for, and the fx nodes of the traced float and quantized
    # graphs.
    size: int
    float_nodes: int
    quant_nodes: int
    pairs: int
    unmatched: int
    # fxns's match: every timing, their median and minimum, in seconds.
    fxns_times: list[float] = field(default_factory=list)
    fxns_s: float = math.nan
    fxns_best_s: float = math.nan
    # torch.ao.ns's matcher, one timing; nan when skipped or failed.
    ao_s: float = math.nan
    ao_pairs: int | None = None
    # "skipped (...)", "failed: ..." or "".
    ao_note: str = ""
    # Seconds to quantize the model (not part of any figure).
    quantize_s: float = math.nan

    def cells(self) -> list[Any]:
        return [
            self.family,
            self.float_nodes,
            self.quant_nodes,
            self.pairs,
            self.unmatched,
            _num(self.fxns_s * 1e3),
            _num(self.fxns_best_s * 1e3),
            _num(self.fxns_s * 1e6 / self.float_nodes),
            _num(self.ao_s * 1e3),
            "" if self.ao_pairs is None else self.ao_pairs,
            _num(self.ao_s / self.fxns_s),
            self.ao_note,
        ]


def run_scaling(
    sizes: Sequence[int],
    families: Sequence[str],
    repeat: int,
    clock: Callable[[], float],
    ao_max_nodes: int,
    title: str,
) -> dict[str, Any]:
    """Measure every family at every size; print the table and the exponents."""
    rows: list[ScalingRow] = []
    for family in families:
        ao_rate = AO_SECONDS_PER_NODE
        for size in sorted(sizes):
            row = _measure(family, size, repeat, clock, ao_max_nodes, ao_rate)
            if not math.isnan(row.ao_s):
                ao_rate = row.ao_s / row.float_nodes
            rows.append(row)
            print(
                f"# {family}, {row.float_nodes} nodes: fxns {row.fxns_s * 1e3:.1f} ms"
                f", torch.ao.ns {_text_ms(row.ao_s, row.ao_note)}"
                f" (quantized in {row.quantize_s:.1f} s)",
                flush=True,
            )
            gc.collect()
    table = print_table([r.cells() for r in rows], HEADERS, title)
    growth: list[dict[str, Any]] = []
    for family in families:
        mine = [r for r in rows if r.family == family]
        theirs = [r for r in mine if not math.isnan(r.ao_s)]
        growth.append(
            {
                "family": family,
                "nodes": [mine[0].float_nodes, mine[-1].float_nodes] if mine else [],
                "fxns_exponent": exponent([(r.float_nodes, r.fxns_s) for r in mine]),
                "ao_nodes": (
                    [theirs[0].float_nodes, theirs[-1].float_nodes] if theirs else []
                ),
                "ao_exponent": exponent([(r.float_nodes, r.ao_s) for r in theirs]),
            }
        )
    growth_table = print_table(
        [
            [
                g["family"],
                _range(g["nodes"]),
                _num(g["fxns_exponent"]),
                _range(g["ao_nodes"]),
                _num(g["ao_exponent"]),
            ]
            for g in growth
        ],
        (
            "family",
            "fxns: nodes",
            "fxns: exponent",
            "torch.ao.ns: nodes",
            "torch.ao.ns: exponent",
        ),
        "\nGrowth of match time with node count (log-log slope; 1.00 is linear)",
    )
    return {
        "rows": [asdict(r) for r in rows],
        "growth": growth,
        "table": table,
        "growth_table": growth_table,
    }


def exponent(points: Sequence[tuple[float, float]]) -> float:
    """Slope of log(time) against log(nodes), first point to last; nan if
    fewer than two points or equal node counts."""
    if len(points) < 2:
        return math.nan
    (n0, t0), (n1, t1) = points[0], points[-1]
    if n0 == n1 or t0 <= 0 or t1 <= 0:
        return math.nan
    return math.log(t1 / t0) / math.log(n1 / n0)


def _measure(
    family: str,
    size: int,
    repeat: int,
    clock: Callable[[], float],
    ao_max_nodes: int,
    ao_rate: float,
) -> ScalingRow:
    model, example = model_with_about(family, size)
    start = time.perf_counter()
    quant = quantized(model, example)
    quantize_s = time.perf_counter() - start
    float_gm = trace(model, role="float model")
    quant_gm = trace(quant, role="quantized model")
    n_float = len(float_gm.graph.nodes)
    matching = fxns_match(float_gm, quant_gm)
    row = ScalingRow(
        family,
        size,
        n_float,
        len(quant_gm.graph.nodes),
        len(matching.pairs),
        len(matching.unmatched_float) + len(matching.unmatched_quant),
        quantize_s=quantize_s,
    )
    for _ in range(repeat):
        t0 = clock()
        fxns_match(float_gm, quant_gm)
        row.fxns_times.append(clock() - t0)
    row.fxns_s = median(row.fxns_times)
    row.fxns_best_s = min(row.fxns_times)

    if n_float > ao_max_nodes:
        row.ao_note = f"skipped (slower than {ao_rate * n_float:.0f} s)"
        return row
    t0 = clock()
    try:
        row.ao_pairs = torch_ns_match(float_gm, quant_gm)
        row.ao_s = clock() - t0
    except Exception as err:  # the prior art fails on some graphs
        row.ao_note = f"failed: {first_line(err)}"
    return row


def _text_ms(seconds: float, note: str) -> str:
    return note if math.isnan(seconds) else f"{seconds * 1e3:.0f} ms"


def _range(nodes: Sequence[int]) -> str:
    if not nodes:
        return ""
    return str(nodes[0]) if nodes[0] == nodes[-1] else f"{nodes[0]} → {nodes[-1]}"


def _num(value: float) -> float | str:
    return "" if math.isnan(value) else value


# The families a run may choose from.
FAMILY_NAMES = tuple(FAMILIES)
