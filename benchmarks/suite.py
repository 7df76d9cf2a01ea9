"""The benchmark suite of issue #8: fxns beside torch.ao.ns, one command.

``python -m benchmarks`` runs, in one process run (the memory section in
child processes), these sections, prints one table per section and a final
targets table, and writes everything to JSON:

1. ``models``: setup, run and coverage, per model and quantization kind
   (torchvision resnet18, resnet50, mobilenet_v2, mobilenet_v3_large and
   generated ResNet-like and transformer-like models of realistic width,
   static; the transformer-like, an LSTM-like and resnet18, dynamic). For
   each: setup time of fxns (trace + match + ``build_propagated`` /
   ``build_shadow``) and of torch.ao.ns (``add_loggers`` /
   ``add_shadow_loggers`` on fresh copies, the float model as side A); run
   time per batch of each mode divided by (float forward + quantized
   forward) on the same batch, both tools, timed interleaved; and the rows
   each produces (coverage). This is ``bench_end_to_end.bench_model``.
2. ``scaling``: matching time against node count (``suite_scaling``).
3. ``memory``: resident memory after 1, 10 and 100 batches, each way in a
   fresh process (``suite_memory``).
4. ``targets``: the issue's targets, each from figures of this run; a target
   that applies to several models is met only if met on every one, and the
   worst case is shown.

Usage (from the repository root)::

    python -m benchmarks                        # 8x3x224x224, 1 thread, CPU clock
    python -m benchmarks --small                # 2x3x64x64
    python -m benchmarks --quick                # a smoke test, well under 1 min
    python -m benchmarks --sections scaling --max-nodes 1000
    python -m benchmarks --models resnet18 --kinds static --sections models

Timing follows ``bench_end_to_end``: one torch thread and the CPU time of
this process by default (steady on a shared machine), candidates called in
turn round by round, medians of per-round ratios. fxns's instrumented
modules choose their float side's memory layout by timing their first calls;
each is called on the batch until it has chosen before anything is timed,
and the layout is in its row's note.

Image models get ImageNet-sized batches by default (8x3x224x224; the
generated transformer-like and LSTM-like models the same batch of 8), the
size at which a comparison is usually run; ``--small`` measures 2x3x64x64
batches, where fxns's fixed cost per compared op weighs more
(``docs/performance.md`` has the default's figures). Run time on the 2-core
development machine: 25 to 30 minutes by default, 12 with ``--small``, 30
seconds with ``--quick``.
"""

from __future__ import annotations

import argparse
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_end_to_end as e2e
from benchmarks.harness import (
    CLOCKS,
    FULL_SHAPE,
    KINDS,
    MODELS,
    SMALL_SHAPE,
    add_timing_options,
    environment,
    first_line,
    input_shape,
    print_table,
    quantized_model,
    shape_text,
    steady_allocator,
    write_json,
)
from benchmarks.models import FAMILIES
from benchmarks.suite_memory import KEEP, MARKS, WAY_KEYS, run_memory
from benchmarks.suite_scaling import DEFAULT_SIZES, run_scaling

__all__ = ["DEFAULT_CASES", "SECTIONS", "Target", "main", "targets"]

SECTIONS = ("models", "scaling", "memory", "targets")

# (model, quantization kind) measured by the models section by default.
DEFAULT_CASES: tuple[tuple[str, str], ...] = (
    ("resnet18", "static"),
    ("resnet50", "static"),
    ("mobilenet_v2", "static"),
    ("mobilenet_v3_large", "static"),
    ("resnet-like", "static"),
    ("transformer-like", "static"),
    ("transformer-like", "dynamic"),
    ("lstm-like", "dynamic"),
    ("resnet18", "dynamic"),
)
QUICK_CASES: tuple[tuple[str, str], ...] = (
    ("demo", "static"),
    ("lstm-like", "dynamic"),
)

# What --quick changes; options given on the command line still win.
QUICK_DEFAULTS: dict[str, Any] = {
    "repeat": 1,
    "setup_repeat": 1,
    "warmup": 0,
    "sample_seconds": 0.0,
    "calibration": 1,
    "max_nodes": 300,
    "ao_max_nodes": 100,
    "memory_model": "demo",
    "memory_jobs": 2,
    # One of each code path: the instrumented module, compare_activations,
    # and both torch.ao.ns functions.
    "memory_ways": [
        "fxns-propagated",
        "fxns-shadow-compare",
        "ao-propagated",
        "ao-shadow",
    ],
}

AO_FLOAT = "torch.ao.ns (A = float)"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "suite.json"

# The limits.
SETUP_SPEEDUP = 20.0
MATCH_SECONDS = 2.0
MATCH_NODES = 10_000
GROWTH_EXPONENT = 1.2
PROPAGATED_RATIO = 1.10
SHADOW_RATIO = 1.20
MEMORY_RATIO = 1.10

MET, MISSED, NOT_MEASURED = "met", "MISSED", "not measured"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections, print their tables, write the JSON."""
    args = _parse(argv)
    steady_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = SMALL_SHAPE if args.small or args.quick else FULL_SHAPE
    start = time.perf_counter()
    sections: dict[str, Any] = {}
    result: dict[str, Any] = {
        "benchmark": "suite",
        "environment": environment(),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "json"},
            "input_shape": list(shape),
            "torch_threads": torch.get_num_threads(),
        },
        "sections": sections,
    }
    print(
        f"fxns benchmark suite: input {shape_text(shape)}, "
        f"{torch.get_num_threads()} thread(s), {args.clock} clock, "
        f"sections {', '.join(args.sections)}\n",
        flush=True,
    )
    durations: dict[str, float] = {}
    if "models" in args.sections:
        t0 = time.perf_counter()
        sections["models"] = _models_section(args, shape)
        durations["models"] = time.perf_counter() - t0
    if "scaling" in args.sections:
        t0 = time.perf_counter()
        sections["scaling"] = _scaling_section(args)
        durations["scaling"] = time.perf_counter() - t0
    if "memory" in args.sections:
        t0 = time.perf_counter()
        sections["memory"] = _memory_section(args, shape)
        durations["memory"] = time.perf_counter() - t0
    if "targets" in args.sections:
        found = targets(sections)
        print()
        table = print_table(
            [t.cells() for t in found],
            Target.HEADERS,
            f"4. Targets (issue #8): input {shape_text(shape)}, "
            f"{torch.get_num_threads()} thread(s), {args.clock} clock; "
            "worst case over the models measured",
        )
        sections["targets"] = {"rows": [asdict(t) for t in found], "table": table}
    result["seconds"] = {**durations, "total": time.perf_counter() - start}
    path = args.json or DEFAULT_JSON
    write_json(path, result)
    print(f"\nwrote {path} ({result['seconds']['total']:.0f} s)")
    return result


# --- command line ---------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smallest settings: a smoke test of every section, well under a "
        f"minute ({', '.join(f'{m} {k}' for m, k in QUICK_CASES)}; sizes up to "
        f"{QUICK_DEFAULTS['max_nodes']} nodes; memory on "
        f"{QUICK_DEFAULTS['memory_model']}, {len(QUICK_DEFAULTS['memory_ways'])} "
        "ways, 2 at a time; one round)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--small",
        action="store_true",
        help=f"image inputs {shape_text(SMALL_SHAPE)} (--quick's size)",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help=f"image inputs {shape_text(FULL_SHAPE)} (the default)",
    )
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="sections to run, in the suite's order (default: all)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=sorted(MODELS),
        metavar="MODEL",
        help=f"models for the models section, from {', '.join(sorted(MODELS))} "
        "(default: "
        + ", ".join(sorted({m for m, _ in DEFAULT_CASES}))
        + ", each with its default kinds)",
    )
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        help="quantization kinds for the models section (default: static for "
        "the CNNs, both for the transformer-like, dynamic for the LSTM-like, "
        "and resnet18 dynamic too)",
    )
    p.add_argument(
        "--ao-prepared",
        action="store_true",
        help="also measure torch.ao.ns with the prepared model as side A (its "
        "documented form; fails on resnet18)",
    )
    add_timing_options(p)
    p.add_argument(
        "--setup-repeat", type=int, default=3, help="timed setup rounds (default: 3)"
    )
    p.add_argument(
        "--calibration",
        type=int,
        default=3,
        help="calibration batches for static quantization (default: 3)",
    )
    p.add_argument(
        "--max-nodes",
        type=int,
        default=max(DEFAULT_SIZES),
        help="scaling: largest graph, from sizes "
        f"{', '.join(map(str, DEFAULT_SIZES))} fx nodes (default: %(default)s)",
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="scaling: the node counts to measure (overrides --max-nodes)",
    )
    p.add_argument(
        "--families",
        nargs="+",
        choices=tuple(FAMILIES),
        default=list(FAMILIES),
        metavar="FAMILY",
        help=f"scaling: generated families, from {', '.join(FAMILIES)} (default: both)",
    )
    p.add_argument(
        "--ao-max-nodes",
        type=int,
        default=2000,
        help="scaling: run torch.ao.ns's matcher (about 10 ms per node) only "
        "up to this many nodes (default: %(default)s)",
    )
    p.add_argument(
        "--memory-model",
        choices=sorted(MODELS),
        metavar="MODEL",
        default="resnet18",
        help="memory: the model (default: %(default)s)",
    )
    p.add_argument(
        "--marks",
        type=int,
        nargs="+",
        default=list(MARKS),
        help="memory: batch counts after which RSS is read (default: 1 10 100)",
    )
    p.add_argument(
        "--memory-ways",
        nargs="+",
        choices=tuple(WAY_KEYS),
        default=list(WAY_KEYS),
        metavar="WAY",
        help="memory: ways to measure, each in its own process: "
        f"{', '.join(WAY_KEYS)} (default: all)",
    )
    p.add_argument(
        "--memory-limit-mb",
        type=float,
        default=8000.0,
        help="memory: a child stops when its RSS passes this (torch.ao.ns "
        "keeps every activation; default: %(default)s)",
    )
    p.add_argument(
        "--memory-jobs",
        type=int,
        default=1,
        help="memory: children at a time (RSS is per process; default: 1)",
    )
    p.add_argument(
        "--json",
        type=Path,
        help=f"where to write the results (default: {DEFAULT_JSON.parent.name}/"
        f"{DEFAULT_JSON.name} in benchmarks/)",
    )
    first, _ = p.parse_known_args(argv)
    if first.quick:
        p.set_defaults(**QUICK_DEFAULTS)
    args = p.parse_args(argv)
    for opt in ("repeat", "setup_repeat"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    if not args.marks or min(args.marks) < 1:
        p.error("--marks must be positive batch counts")
    args.sections = [s for s in SECTIONS if s in args.sections]
    args.cases = _cases(args)
    if args.sizes is None:
        args.sizes = [s for s in DEFAULT_SIZES if s <= args.max_nodes] or [
            args.max_nodes
        ]
    return args


def _cases(args: argparse.Namespace) -> list[tuple[str, str]]:
    defaults = QUICK_CASES if args.quick else DEFAULT_CASES
    if args.models is None:
        return [(m, k) for m, k in defaults if args.kinds is None or k in args.kinds]
    cases: list[tuple[str, str]] = []
    for model in args.models:
        kinds = args.kinds or [k for m, k in DEFAULT_CASES if m == model] or ["static"]
        cases.extend((model, k) for k in KINDS if k in kinds)
    return cases


# --- 1. setup, run and coverage -------------------------------------------------

MODEL_HEADERS = ("model", "kind", *e2e.HEADERS[1:])
COVERAGE_HEADERS = (
    "model",
    "kind",
    "fxns pairs",
    "fxns propagated",
    "fxns shadow",
    "torch.ao.ns add_loggers",
    "torch.ao.ns add_shadow_loggers",
)


def _models_section(args: argparse.Namespace, shape: Sequence[int]) -> dict[str, Any]:
    settings = e2e.Settings(
        args.repeat, args.setup_repeat, args.warmup, args.sample_seconds, args.clock
    )
    ao_sides = ("float", "prepared") if args.ao_prepared else ("float",)
    rows: list[dict[str, Any]] = []
    splits: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for model, kind in args.cases:
        t0 = time.perf_counter()
        try:
            qm = quantized_model(
                model, shape, calibration_batches=args.calibration, kind=kind
            )
            quantize_s = time.perf_counter() - t0
            model_rows, split = e2e.bench_model(qm, settings, ao_sides)
        except Exception as err:
            traceback.print_exc()
            rows.append(
                {
                    **asdict(e2e.Row(model, "", "fxns")),
                    "kind": kind,
                    "note": f"failed: {first_line(err)}",
                }
            )
            continue
        seconds[f"{model} {kind}"] = time.perf_counter() - t0
        print(
            f"# {model} {kind}: quantized in {quantize_s:.1f} s, measured in "
            f"{seconds[f'{model} {kind}'] - quantize_s:.1f} s",
            flush=True,
        )
        rows.extend(
            {**asdict(r), "kind": kind, "ratio_with_collect": r.ratio_with_collect}
            for r in model_rows
        )
        splits.append({**asdict(split), "kind": kind})

    inputs = ", ".join(
        f"{shape_text(s)} ({', '.join(ms)})"
        for s, ms in _inputs(shape, [m for m, _ in args.cases]).items()
    )
    title = (
        f"1. Setup, run and coverage: input {inputs}; "
        f"{torch.get_num_threads()} thread(s), {args.clock} clock; run: median of "
        f"{args.repeat} rounds, setup: median of {args.setup_repeat}"
    )
    print()
    table = print_table([_model_cells(r) for r in rows], MODEL_HEADERS, title)
    print()
    coverage = print_table(
        _coverage(rows),
        COVERAGE_HEADERS,
        "Coverage: rows with numbers produced by each tool and mode",
    )
    print()
    split_table = print_table(
        [[s["model"], s["kind"], *list(s.values())[1:-1]] for s in splits],
        ("model", "kind", *e2e.SETUP_HEADERS[1:]),
        "fxns setup, step by step (median ms)",
    )
    return {
        "cases": [list(c) for c in args.cases],
        "rows": rows,
        "fxns_setup": splits,
        "seconds": seconds,
        "table": table,
        "coverage_table": coverage,
        "setup_table": split_table,
    }


def _inputs(shape: Sequence[int], models: Sequence[str]) -> dict[tuple[int, ...], Any]:
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for m in dict.fromkeys(models):
        by_shape.setdefault(input_shape(m, shape), []).append(m)
    return by_shape


def _model_cells(row: dict[str, Any]) -> list[Any]:
    r = e2e.Row(**{k: v for k, v in row.items() if k in e2e.Row.__dataclass_fields__})
    cells = r.cells()
    return [cells[0], row["kind"], *cells[1:]]


def _coverage(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    out = []
    cases = dict.fromkeys((r["model"], r["kind"]) for r in rows)
    for model, kind in cases:
        mine = {
            (r["tool"], r["mode"]): r
            for r in rows
            if r["model"] == model and r["kind"] == kind
        }

        def cell(tool: str, mode: str, mine: dict[tuple[str, str], Any] = mine) -> Any:
            r = mine.get((tool, mode))
            if r is None:
                return ""
            if r["note"].startswith("failed"):
                return r["note"]
            layers = r["layers"]
            if r.get("not_instrumented"):
                return f"{layers} ({r['not_instrumented']} pairs not shadowed)"
            return layers

        fxns_row = mine.get(("fxns", "propagated"))
        out.append(
            [
                model,
                kind,
                "" if fxns_row is None else fxns_row.get("pairs") or "",
                cell("fxns", "propagated"),
                cell("fxns", "shadow"),
                cell(AO_FLOAT, "propagated"),
                cell(AO_FLOAT, "shadow"),
            ]
        )
    return out


# --- 2. matching vs node count --------------------------------------------------


def _scaling_section(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.models import FAMILIES as families

    examples = ", ".join(
        f"{name} {shape_text(example().shape)}"
        for name, (_, example) in families.items()
        if name in args.families
    )
    title = (
        f"2. Matching vs node count: generated models of tiny width (input "
        f"{examples}), MinMax observers, 1 calibration batch; "
        f"{torch.get_num_threads()} thread(s), {args.clock} clock; fxns: median "
        f"of {args.repeat}, torch.ao.ns: once, up to {args.ao_max_nodes} nodes"
    )
    print()
    return run_scaling(
        args.sizes,
        args.families,
        args.repeat,
        CLOCKS[args.clock],
        args.ao_max_nodes,
        title,
    )


# --- 3. memory ------------------------------------------------------------------


def _memory_section(args: argparse.Namespace, shape: Sequence[int]) -> dict[str, Any]:
    marks = sorted(set(args.marks))
    threads = torch.get_num_threads()
    title = (
        f"3. Memory: {args.memory_model} static, input "
        f"{shape_text(input_shape(args.memory_model, shape))}, {threads} "
        f"thread(s); resident set after {', '.join(map(str, marks))} batches, "
        "each way in a fresh process"
    )
    print()
    return run_memory(
        args.memory_model,
        shape,
        marks,
        threads,
        args.calibration,
        args.memory_limit_mb,
        title,
        ways=[WAY_KEYS[k] for k in args.memory_ways],
        jobs=args.memory_jobs,
    )


# --- 4. targets -----------------------------------------------------------------


@dataclass
class Target:
    """One target of the issue, as measured in this run."""

    target: str
    measured: str
    limit: str
    status: str
    # Where the (worst) figure comes from.
    source: str
    note: str = ""
    # The figure itself (worst case), nan if not measured.
    value: float = math.nan

    HEADERS = ("target", "measured", "limit", "status", "from", "note")

    def cells(self) -> list[Any]:
        return [
            self.target,
            self.measured,
            self.limit,
            self.status,
            self.source,
            self.note,
        ]


def targets(sections: dict[str, Any]) -> list[Target]:
    """The issue's targets from what ``sections`` measured."""
    models = sections.get("models")
    scaling = sections.get("scaling")
    memory = sections.get("memory")
    return [
        _setup_target(models),
        _match_target(scaling),
        _growth_target(scaling),
        _run_target(models, "propagated", PROPAGATED_RATIO),
        _run_target(models, "shadow", SHADOW_RATIO),
        _memory_target(memory),
        _raw_target(memory),
    ]


def _not_run(target: str, limit: str, section: str) -> Target:
    return Target(target, "", limit, NOT_MEASURED, "", f"section {section} not run")


def _setup_target(models: dict[str, Any] | None) -> Target:
    name = "setup (trace + match + instrument), resnet50"
    limit = f">= {SETUP_SPEEDUP:.0f}x faster than add_loggers"
    if models is None:
        return _not_run(name, limit, "models")
    rows = models["rows"]
    ao = [r for r in rows if r["tool"] == AO_FLOAT and r["mode"] == "propagated"]
    wanted = [r for r in ao if r["model"] == "resnet50" and r["kind"] == "static"]
    note = ""
    # Without resnet50 the target is not measured; the worst of the models
    # run is shown for information.
    stand_in = not wanted
    if stand_in:
        wanted = ao
        note = "resnet50 not run; figure: worst of the models run"
    measured = [r for r in wanted if not math.isnan(r["setup_vs_fxns"])]
    failed = [r for r in wanted if r["note"].startswith("failed")]
    if not measured:
        why = failed[0]["note"] if failed else "no torch.ao.ns setup measured"
        return Target(name, "", limit, NOT_MEASURED, "", why)
    worst = min(measured, key=lambda r: r["setup_vs_fxns"])
    value = worst["setup_vs_fxns"]
    shadow = [
        r
        for r in rows
        if r["tool"] == AO_FLOAT
        and r["mode"] == "shadow"
        and (r["model"], r["kind"]) == (worst["model"], worst["kind"])
        and not math.isnan(r["setup_vs_fxns"])
    ]
    if shadow:
        note = _join(
            note, f"add_shadow_loggers: {shadow[0]['setup_vs_fxns']:.1f}x fxns shadow"
        )
    return Target(
        name,
        f"{value:.1f}x (fxns {worst['setup_s'] / value * 1e3:.0f} ms, "
        f"add_loggers {worst['setup_s'] * 1e3:.0f} ms)",
        limit,
        NOT_MEASURED if stand_in else MET if value >= SETUP_SPEEDUP else MISSED,
        f"{worst['model']} {worst['kind']}, fxns propagated vs add_loggers",
        note,
        value,
    )


def _match_target(scaling: dict[str, Any] | None) -> Target:
    name = f"matching, {MATCH_NODES:,}-node graph"
    limit = f"< {MATCH_SECONDS:.0f} s"
    if scaling is None:
        return _not_run(name, limit, "scaling")
    rows = scaling["rows"]
    big = [r for r in rows if r["float_nodes"] >= 0.9 * MATCH_NODES]
    if not big:
        largest = max((r["float_nodes"] for r in rows), default=0)
        return Target(
            name,
            "",
            limit,
            NOT_MEASURED,
            "",
            f"largest graph measured: {largest} nodes (--max-nodes)",
        )
    worst = max(big, key=lambda r: r["fxns_s"])
    return Target(
        name,
        f"{worst['fxns_s']:.2f} s",
        limit,
        MET if worst["fxns_s"] < MATCH_SECONDS else MISSED,
        f"{worst['family']}, {worst['float_nodes']} nodes",
        value=worst["fxns_s"],
    )


def _growth_target(scaling: dict[str, Any] | None) -> Target:
    name = "matching: growth with node count"
    limit = f"exponent <= {GROWTH_EXPONENT:.2f} (1.00 is linear)"
    if scaling is None:
        return _not_run(name, limit, "scaling")
    growth = [g for g in scaling["growth"] if not math.isnan(g["fxns_exponent"])]
    if not growth:
        return Target(name, "", limit, NOT_MEASURED, "", "fewer than two sizes")
    worst = max(growth, key=lambda g: g["fxns_exponent"])
    value = worst["fxns_exponent"]
    return Target(
        name,
        f"nodes^{value:.2f}",
        limit,
        MET if value <= GROWTH_EXPONENT else MISSED,
        f"{worst['family']}, {worst['nodes'][0]} → {worst['nodes'][1]} nodes",
        value=value,
    )


def _run_target(models: dict[str, Any] | None, mode: str, limit_x: float) -> Target:
    name = (
        "propagated run"
        if mode == "propagated"
        else "shadow run, every matched op shadowed"
    )
    limit = f"<= {limit_x:.2f} x (float fwd + quant fwd)"
    if models is None:
        return _not_run(name, limit, "models")
    rows = [r for r in models["rows"] if r["tool"] == "fxns"]
    failed = [r for r in rows if r["note"].startswith("failed")]
    measured = [r for r in rows if r["mode"] == mode and not math.isnan(r["ratio"])]
    if not measured:
        why = failed[0]["note"] if failed else "no fxns run measured"
        return Target(name, "", limit, NOT_MEASURED, "", why)
    worst = max(measured, key=lambda r: r["ratio"])
    value = worst["ratio"]
    met = value <= limit_x and not failed
    notes = [f"worst of {len(measured)} model+kind cases; {_layout(worst['note'])}"]
    if failed:
        notes.append(
            "failed on " + ", ".join(f"{r['model']} {r['kind']}" for r in failed)
        )
    if mode == "shadow":
        partial = [r for r in measured if r.get("not_instrumented")]
        if partial:
            met = False
            notes.append(
                "not every pair shadowed: "
                + ", ".join(
                    f"{r['model']} {r['kind']} ({r['not_instrumented']})"
                    for r in partial
                )
            )
    return Target(
        name,
        f"{value:.2f} x",
        limit,
        MET if met else MISSED,
        f"{worst['model']} {worst['kind']}, {mode}",
        "; ".join(n for n in notes if n),
        value,
    )


def _has(row: dict[str, Any], key: str) -> bool:
    value = row.get(key)
    return isinstance(value, float) and not math.isnan(value)


def _memory_target(memory: dict[str, Any] | None) -> Target:
    name = "memory after the last batch vs after the first"
    limit = f"<= {MEMORY_RATIO:.2f} (equal within 10%)"
    if memory is None:
        return _not_run(name, limit, "memory")
    marks = memory["marks"]
    name = f"memory after {marks[-1]} batches vs after {marks[0]}"
    # fxns as it runs unless asked to keep values.
    rows = [r for r in memory["rows"] if r["tool"] == "fxns" and KEEP not in r["via"]]
    # Judged on the RSS after malloc_trim where glibc gives it: the free
    # memory its allocator keeps between marks is not what fxns holds.
    trimmed = all(_has(r, "trimmed_ratio") for r in rows)
    prefix = "trimmed_" if trimmed else ""
    key, growth = f"{prefix}ratio", f"{prefix}growth_mb"
    measured = [r for r in rows if _has(r, key) and not r["note"]]
    failed = [r for r in rows if r["note"]]
    if not measured:
        return Target(name, "", limit, NOT_MEASURED, "", "no fxns way measured")
    worst = max(measured, key=lambda r: r[key])
    value = worst[key]
    ao = [
        r for r in memory["rows"] if r["tool"] != "fxns" and not math.isnan(r["ratio"])
    ]
    notes = [f"{memory['model']}; worst of {len(measured)} fxns ways"]
    if trimmed:
        raw = max(measured, key=lambda r: r["ratio"])
        notes.append(
            f"RSS after malloc_trim; untrimmed worst {raw['ratio']:.3f} "
            f"(fxns {raw['mode']}, {raw['via']})"
        )
    if ao:
        top = max(ao, key=lambda r: r["ratio"])
        notes.append(f"torch.ao.ns {top['mode']}: {top['ratio']:.2f}")
    if failed:
        notes.append("failed: " + ", ".join(f"{r['mode']} {r['via']}" for r in failed))
    return Target(
        name,
        f"{value:.3f} ({worst[growth]:+.1f} MB)",
        limit,
        MET if value <= MEMORY_RATIO and not failed else MISSED,
        f"fxns {worst['mode']} ({worst['via']})",
        "; ".join(notes),
        value,
    )


def _raw_target(memory: dict[str, Any] | None) -> Target:
    name = "raw tensors kept"
    limit = f"only when asked ({KEEP})"
    if memory is None:
        return _not_run(name, limit, "memory")
    rows = [r for r in memory["rows"] if r["raw_tensors_kept"]]
    mine = [r for r in rows if r["tool"] == "fxns"]
    if not mine:
        return Target(name, "", limit, NOT_MEASURED, "", "no fxns module measured")
    worst = max(mine, key=lambda r: r["kept_growth_mb"])
    value = worst["kept_growth_mb"]
    marks = memory["marks"]
    theirs = [r for r in rows if r["tool"] != "fxns"]
    asked = [
        r
        for r in memory["rows"]
        if r["tool"] == "fxns" and KEEP in r["via"] and not math.isnan(r["growth_mb"])
    ]
    note = ", ".join(
        [f"fxns asked ({KEEP}): RSS {r['growth_mb']:+.1f} MB" for r in asked]
        + [f"torch.ao.ns {r['mode']}: {r['kept_growth_mb']:+.1f} MB" for r in theirs]
    )
    return Target(
        name,
        f"fxns: {value:+.1f} MB of tensors from batch {marks[0]} to {marks[-1]}",
        limit,
        MET if value <= 0 else MISSED,
        f"fxns {worst['mode']} ({worst['via']})",
        note,
        value,
    )


def _layout(note: str) -> str:
    return next((p for p in note.split("; ") if p.startswith("layout")), "")


def _join(a: str, b: str) -> str:
    return "; ".join(p for p in (a, b) if p)
