"""End to end: what fxns and torch.ao.ns cost to set up and to run, side by side.

For each model (torchvision, random weights, FX-quantized for x86 on a few
random batches) this measures, in one process run:

- setup time: trace + match + instrument. For fxns, ``fxns.match`` (split
  into its steps) and ``build_propagated`` / ``build_shadow``; for
  ``torch.ao.ns``, ``add_loggers`` and ``add_shadow_loggers`` with
  ``OutputLogger``;
- run time per batch of every instrumented model, divided by the time of one
  float forward plus one quantized forward on the same batch in the same
  round (the floor: a comparison cannot cost less);
- collect time: turning what the run left into per-layer numbers (fxns's
  report; torch.ao.ns's ``extract_*_logger_info`` and SQNR after one batch).

``torch.ao.ns`` documents its functions for the prepared (observed) model
against the converted one; they are measured that way (``torch.ao.ns``
rows), and, since that form fails on some models and runs the observers on
every batch, also with the float model as side A (``A = float`` rows). Its
loggers keep every activation and compute nothing until collected: they are
emptied at the start of each timed call (freeing the last batch counts), and
the table also gives the ratio with one batch's collect added.

Timing on a shared machine: candidates run call by call in turn (A B C A B C
..., the first one rotating), short calls are grouped until the floor has
run ``--sample-seconds`` per round, warm-up rounds are discarded, and the
ratio is the median of the per-round ratios. By default torch runs one
thread and the clock is the CPU time of this process, which other jobs on
the machine barely disturb; ``--threads 0 --clock wall`` measures wall time
at torch's default threads on a quiet machine. Absolute numbers move with
the machine; ratios are what to compare.

Usage (from the repository root)::

    python -m benchmarks.bench_end_to_end                  # 8x3x224x224
    python -m benchmarks.bench_end_to_end --small --repeat 3
    python -m benchmarks.bench_end_to_end --json benchmarks/results/e2e.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from benchmarks.harness import (
    CLOCKS,
    FULL_SHAPE,
    KINDS,
    MODELS,
    SMALL_SHAPE,
    Candidate,
    QuantizedModel,
    add_timing_options,
    calls_per_sample,
    environment,
    input_shape,
    interleaved,
    median,
    print_table,
    quantized_model,
    rss_mb,
    settle_layout,
    shape_text,
    steady_allocator,
    write_json,
)
from fxns.compare import report_from
from fxns.graph import build_op_graph
from fxns.instrument import Instrumented, build_propagated, build_shadow
from fxns.match import match_graphs
from fxns.quantize import quiet_torch_ao
from fxns.trace import trace

DEFAULT_MODELS = ("resnet18", "mobilenet_v2")
MODES = ("propagated", "shadow")
AO_SIDES = ("prepared", "float")

FXNS = "fxns"
AO = "torch.ao.ns"
FLOOR = "float fwd + quant fwd"

HEADERS = (
    "model",
    "mode",
    "tool",
    "setup (ms)",
    "setup / fxns setup",
    "run (ms)",
    "run / floor",
    "collect (ms)",
    "(run + collect) / floor",
    "layers",
    "note",
)
SETUP_HEADERS = (
    "model",
    "float nodes",
    "quant nodes",
    "trace (ms)",
    "op graphs (ms)",
    "match (ms)",
    "build propagated (ms)",
    "build shadow (ms)",
)


@dataclass
class Row:
    """One measured tool and mode on one model."""

    model: str
    mode: str
    tool: str
    # Median seconds of setup (trace + match + instrument); nan if failed.
    setup_s: float = math.nan
    # setup_s divided by fxns's setup_s for the same mode.
    setup_vs_fxns: float = math.nan
    # Median seconds of one instrumented run on the batch.
    run_s: float = math.nan
    # Median over rounds of run / (float forward + quantized forward).
    ratio: float = math.nan
    # Layers with a number after a run.
    layers: int | None = None
    # Median seconds of the floor (float forward + quantized forward).
    floor_s: float = math.nan
    # Seconds to turn one run's leftovers into per-layer numbers.
    collect_s: float = math.nan
    # "failed: ..." or what to know about the figures.
    note: str = ""
    # The layers with a number (fxns: report rows; torch.ao.ns: the keys of
    # its extracted results).
    layer_names: list[str] = field(default_factory=list)
    # fxns: matched pairs, and those left without a probe or shadow.
    pairs: int | None = None
    not_instrumented: int | None = None
    # Per-round raw timings, for the JSON.
    setup_times: list[float] = field(default_factory=list)
    run_times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def cells(self) -> list[Any]:
        return [
            self.model,
            self.mode,
            self.tool,
            _num(self.setup_s * 1e3),
            _num(self.setup_vs_fxns),
            _num(self.run_s * 1e3),
            _num(self.ratio),
            _num(self.collect_s * 1e3),
            _num(self.ratio_with_collect),
            self.layers if self.layers is not None else "",
            self.note,
        ]

    @property
    def ratio_with_collect(self) -> float:
        """The ratio with one batch's collect added: fxns computes its
        statistics during the run, torch.ao.ns only when they are collected."""
        if math.isnan(self.collect_s):
            return self.ratio
        return self.ratio + self.collect_s / self.floor_s


@dataclass
class SetupSplit:
    """fxns's setup, step by step (median milliseconds)."""

    model: str
    float_nodes: int
    quant_nodes: int
    trace_ms: float
    op_graphs_ms: float
    match_ms: float
    build_propagated_ms: float
    build_shadow_ms: float

    def cells(self) -> list[Any]:
        return list(asdict(self).values())


@dataclass
class Settings:
    """How :func:`bench_model` times (see the command-line options)."""

    repeat: int = 5
    setup_repeat: int = 3
    warmup: int = 1
    sample_seconds: float = 0.5
    clock: str = "cpu"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(
            args.repeat, args.setup_repeat, args.warmup, args.sample_seconds, args.clock
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, and return what was measured."""
    args = _parse(argv)
    steady_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = SMALL_SHAPE if args.small else FULL_SHAPE
    ao_sides = {"both": AO_SIDES, "none": ()}.get(args.ao, (args.ao,))

    rows: list[Row] = []
    splits: list[SetupSplit] = []
    for name in args.models:
        start = time.perf_counter()
        qm = quantized_model(
            name, shape, calibration_batches=args.calibration, kind=args.kind
        )
        print(f"# {name}: quantized in {time.perf_counter() - start:.1f} s")
        model_rows, split = bench_model(qm, Settings.from_args(args), ao_sides)
        rows.extend(model_rows)
        splits.append(split)

    inputs = sorted({shape_text(input_shape(n, shape)) for n in args.models})
    title = (
        f"End to end ({args.kind}), input {', '.join(inputs)}, median of "
        f"{args.repeat} rounds, {torch.get_num_threads()} threads, "
        f"{args.clock} clock"
    )
    print()
    table = print_table([r.cells() for r in rows], HEADERS, title)
    print()
    setup_table = print_table(
        [s.cells() for s in splits], SETUP_HEADERS, "fxns setup, step by step"
    )
    result = {
        "benchmark": "end_to_end",
        "environment": environment(),
        "input_shape": list(shape),
        "kind": args.kind,
        "repeat": args.repeat,
        "setup_repeat": args.setup_repeat,
        "warmup": args.warmup,
        "clock": args.clock,
        "rows": [
            {**asdict(r), "ratio_with_collect": r.ratio_with_collect} for r in rows
        ],
        "fxns_setup": [asdict(s) for s in splits],
        "rss_mb": rss_mb(),
        "table": table,
        "setup_table": setup_table,
    }
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return result


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_end_to_end",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        choices=sorted(MODELS),
        help="models to measure (default: %(default)s)",
    )
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="static",
        help="static or dynamic quantization (default: %(default)s)",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help=f"inputs {SMALL_SHAPE} instead of {FULL_SHAPE}",
    )
    add_timing_options(p)
    p.add_argument(
        "--setup-repeat", type=int, default=3, help="timed setup rounds (default: 3)"
    )
    p.add_argument(
        "--calibration",
        type=int,
        default=3,
        help="calibration batches for quantization (default: 3)",
    )
    p.add_argument(
        "--ao",
        choices=(*AO_SIDES, "both", "none"),
        default="both",
        help="what torch.ao.ns gets as its float side (default: both)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    for opt in ("repeat", "setup_repeat"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    return args


# --- one model ------------------------------------------------------------------


def bench_model(
    qm: QuantizedModel, settings: Settings, ao_sides: Sequence[str] = ("float",)
) -> tuple[list[Row], SetupSplit]:
    """Setup, run and collect of fxns and torch.ao.ns on one quantized model.

    Returns the floor row, one row per (tool, mode), and fxns's setup step
    by step. ``ao_sides`` says what torch.ao.ns gets as its float side
    (``"prepared"``, ``"float"``, both or none). fxns's instrumented models
    are called on the batch until they have chosen their layout before
    anything is timed; the layout is in the row's note.
    """
    rows = {(FXNS, mode): Row(qm.name, mode, FXNS) for mode in MODES}
    for side in ao_sides:
        for mode in MODES:
            rows[(_ao_tool(side), mode)] = Row(qm.name, mode, _ao_tool(side))

    # Setup: each candidate builds a fresh instrumented model; the last one
    # built is kept for the run.
    built: dict[tuple[str, str], Any] = {}
    steps: dict[str, list[float]] = {}
    clock = CLOCKS[settings.clock]
    candidates = [
        Candidate(
            f"{FXNS}|{mode}",
            _fxns_setup(qm, mode, built, steps, clock),
        )
        for mode in MODES
    ]
    for side in ao_sides:
        side_a = qm.prepared if side == "prepared" else qm.float_model
        for mode in MODES:
            candidates.append(
                Candidate(
                    f"{_ao_tool(side)}|{mode}",
                    _ao_setup(mode, built, (_ao_tool(side), mode)),
                    prepare=_copies(side_a, qm.quant_model),
                    may_fail=True,
                )
            )
    setup = interleaved(candidates, settings.setup_repeat, warmup=0, clock=clock)
    for key, row in rows.items():
        times = setup.times[f"{key[0]}|{key[1]}"]
        row.setup_times = times
        row.setup_s = median(times)
        if f"{key[0]}|{key[1]}" in setup.errors:
            row.note = f"failed: {setup.errors[f'{key[0]}|{key[1]}']}"

    for key, row in rows.items():
        row.setup_vs_fxns = row.setup_s / rows[(FXNS, key[1])].setup_s

    # Run: the floor and every instrumented model that was built, on one batch.
    x = qm.batch
    # fxns's modules time their first calls to choose a layout: out of the
    # timed rounds with them.
    layouts = {
        key: settle_layout(obj.module, x)
        for key, obj in built.items()
        if key[0] == FXNS and not rows[key].note
    }
    run_candidates = [
        Candidate("float", lambda: qm.float_model(x)),
        Candidate("quant", lambda: qm.quant_model(x)),
    ]
    for key, obj in built.items():
        if rows[key].note:
            continue
        run_candidates.append(_run_candidate(key, obj, x))
    with torch.no_grad():
        number = calls_per_sample(
            lambda: (qm.float_model(x), qm.quant_model(x)), settings.sample_seconds
        )
        runs = interleaved(
            run_candidates,
            settings.repeat,
            warmup=settings.warmup,
            number=number,
            clock=clock,
        )
    floor = [
        f + q for f, q in zip(runs.times["float"], runs.times["quant"], strict=True)
    ]
    for key, row in rows.items():
        name = f"{key[0]}|{key[1]}"
        if name in runs.errors:
            row.note = f"failed: {runs.errors[name]}"
        if row.note.startswith("failed") or name not in runs.times:
            continue
        row.run_times = runs.times[name]
        row.run_s = median(row.run_times)
        row.ratios = [t / f for t, f in zip(row.run_times, floor, strict=True)]
        row.ratio = median(row.ratios)
        row.floor_s = median(floor)
        row.layer_names, row.collect_s = _collect(key, built[key], x, clock)
        row.layers = len(row.layer_names)
        if key[0] == FXNS:
            row.pairs = len(built[key].pairs)
            row.not_instrumented = len(built[key].skipped)
        row.note = _note(key, built[key], layouts.get(key))

    floor_row = Row(
        qm.name,
        "floor",
        FLOOR,
        run_s=median(floor),
        ratio=1.0,
        run_times=floor,
        note=(
            f"float {median(runs.times['float']) * 1e3:.0f} ms, "
            f"quant {median(runs.times['quant']) * 1e3:.0f} ms"
        ),
    )
    split = _split(qm.name, steps, built)
    return [floor_row, *rows.values()], split


def _note(key: tuple[str, str], obj: Any, layout: tuple[str, int] | None = None) -> str:
    if key[0] == FXNS:
        assert isinstance(obj, Instrumented)
        notes = []
        if layout is not None:
            notes.append(f"layout {layout[0]} after {layout[1]} trial calls")
        if obj.skipped:
            notes.append(f"{len(obj.skipped)} pairs not shadowed")
        return "; ".join(notes)
    if key[0] == AO:
        return "side A runs its observers; keeps every activation"
    return "keeps every activation"


def _ao_tool(side: str) -> str:
    return AO if side == "prepared" else f"{AO} (A = float)"


def _fxns_setup(
    qm: QuantizedModel,
    mode: str,
    built: dict[tuple[str, str], Any],
    steps: dict[str, list[float]],
    clock: Callable[[], float],
) -> Callable[[], None]:
    """fxns.match, step by step, then the builder of ``mode``."""
    build = build_propagated if mode == "propagated" else build_shadow

    def run() -> None:
        t0 = clock()
        fgm = trace(qm.float_model, role="float model")
        qgm = trace(qm.quant_model, role="quantized model")
        t1 = clock()
        fg, qg = build_op_graph(fgm), build_op_graph(qgm)
        t2 = clock()
        matching = match_graphs(fg, qg)
        t3 = clock()
        built[(FXNS, mode)] = build(matching)
        t4 = clock()
        for step, seconds in (
            ("trace", t1 - t0),
            ("op_graphs", t2 - t1),
            ("match", t3 - t2),
            (f"build_{mode}", t4 - t3),
        ):
            steps.setdefault(step, []).append(seconds)

    return run


def _copies(side_a: nn.Module, quant: nn.Module) -> Callable[[], tuple[Any, Any]]:
    # torch.ao.ns instruments the models it is given in place.
    return lambda: (copy.deepcopy(side_a), copy.deepcopy(quant))


def _ao_setup(
    mode: str, built: dict[tuple[str, str], Any], key: tuple[str, str]
) -> Callable[[tuple[Any, Any]], None]:
    import torch.ao.ns._numeric_suite_fx as ns

    def run(models: tuple[Any, Any]) -> None:
        a, b = models
        # add_shadow_loggers prints every node it skips.
        with quiet_torch_ao(), contextlib.redirect_stdout(io.StringIO()):
            if mode == "propagated":
                built[key] = ns.add_loggers("a", a, "b", b, ns.OutputLogger)
            else:
                built[key] = ns.add_shadow_loggers("a", a, "b", b, ns.OutputLogger)

    return run


def _run_candidate(key: tuple[str, str], obj: Any, x: torch.Tensor) -> Candidate:
    name = f"{key[0]}|{key[1]}"
    if key[0] == FXNS:
        module = obj.module
        return Candidate(name, lambda: module(x))
    models = obj if isinstance(obj, tuple) else (obj,)

    def run() -> None:
        # Emptying the loggers frees the last batch's activations: that is
        # part of what each batch costs, so it is inside the timing.
        _clear_loggers(models)
        for m in models:
            m(x)

    return Candidate(name, run, may_fail=True)


def _clear_loggers(models: Sequence[nn.Module]) -> None:
    from torch.ao.ns._numeric_suite_fx import OutputLogger

    for model in models:
        for m in model.modules():
            if isinstance(m, OutputLogger):
                m.stats.clear()
                m.stats_rnn.clear()


def _collect(
    key: tuple[str, str], obj: Any, x: torch.Tensor, clock: Callable[[], float]
) -> tuple[list[str], float]:
    """Layers with a number, and the seconds it takes to get them."""
    if key[0] == FXNS:
        assert isinstance(obj, Instrumented)
        start = clock()
        report = report_from(obj)
        elapsed = clock() - start
        return [r.name for r in report.rows if r.metrics], elapsed

    import torch.ao.ns._numeric_suite_fx as ns
    from torch.ao.ns.fx.utils import compute_sqnr

    models = obj if isinstance(obj, tuple) else (obj,)
    _clear_loggers(models)
    with torch.no_grad():
        for m in models:
            m(x)
    start = clock()
    if len(models) == 2:
        results = ns.extract_logger_info(*models, ns.OutputLogger, "b")
    else:
        results = ns.extract_shadow_logger_info(models[0], ns.OutputLogger, "b")
    ns.extend_logger_results_with_comparison(results, "a", "b", compute_sqnr, "sqnr")
    elapsed = clock() - start
    _clear_loggers(models)
    return list(results), elapsed


def _split(
    name: str, steps: dict[str, list[float]], built: dict[tuple[str, str], Any]
) -> SetupSplit:
    inst = built[(FXNS, MODES[0])]
    n_float = len(inst.matching.float_module.graph.nodes)
    n_quant = len(inst.matching.quant_module.graph.nodes)

    def ms(step: str) -> float:
        return median(steps.get(step, [])) * 1e3

    return SetupSplit(
        name,
        n_float,
        n_quant,
        ms("trace"),
        ms("op_graphs"),
        ms("match"),
        ms("build_propagated"),
        ms("build_shadow"),
    )


def _num(value: float) -> float | str:
    return "" if math.isnan(value) else value


if __name__ == "__main__":
    main()
