"""Where an instrumented run spends its time, beyond the float and quantized forwards.

For one model, input size and mode this prints:

1. *ablations*: the instrumented model as fxns builds it, then with parts of
   the instrumentation taken out of a copy of its graph, each timed against
   the floor (float forward + quantized forward) with the harness's
   interleaving. The difference between two lines is what the removed part
   costs:

   - ``traced float, then traced quant``: the two GraphModules fxns works
     from, run one after the other (what fx itself costs);
   - ``comparator off``: every probe is a module that does nothing, so the
     running sums are not computed but the call remains;
   - ``probes removed``: the probe calls are taken out of the graph;
   - ``shadow inputs: no contiguous copy`` (shadow mode): shadows get the
     dequantized value in the layout the quantized kernel produced;
   - ``shadow inputs: shared`` (shadow mode): one dequantized copy per
     quantized value, shared by all the shadows that read it (and not
     dequantized again in the probe);
   - ``shadow inputs: shared, no contiguous copy``.

   These variants are for measurement only: some of them drop a safety
   property of fxns (a fresh tensor per shadow guards against in-place ops).

2. *comparator steps*: the values every probe saw in one batch are captured,
   and each step of ``ErrorStats.update`` is timed over all of them, so the
   comparator's cost splits into dequantize, subtract, dots, min/max and the
   scalar round trip, per batch.

3. with ``--torch-profiler``: the operators of one instrumented run and of
   one float + quantized run, by self CPU time.

With ``--spin SECONDS`` it only runs the instrumented model in a loop, for an
outside sampling profiler::

    py-spy record -f raw -o spy.txt -- \
        python -m benchmarks.profile_run --model mobilenet_v2 --small \
        --mode propagated --spin 20

Usage (from the repository root)::

    python -m benchmarks.profile_run --model resnet18 --small
    python -m benchmarks.profile_run --model mobilenet_v2 --mode shadow
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn

from benchmarks.harness import (
    CLOCKS,
    FULL_SHAPE,
    MODELS,
    SMALL_SHAPE,
    Candidate,
    add_timing_options,
    calls_per_sample,
    interleaved,
    median,
    print_table,
    quantized_model,
    settle_layout,
    steady_allocator,
)
from fxns.instrument import (
    PROBE_PREFIX,
    Instrumented,
    Probe,
    build_propagated,
    build_shadow,
    shadow_input,
)
from fxns.match import match
from fxns.stats import as_float, flat_view

MODES = ("propagated", "shadow")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Profile the runs; print the tables and return them."""
    args = _parse(argv)
    steady_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = SMALL_SHAPE if args.small else FULL_SHAPE
    qm = quantized_model(args.model, shape)
    matching = match(qm.float_model, qm.quant_model)
    x = qm.batch
    clock = CLOCKS[args.clock]
    where = (
        f"{args.model}, input {'x'.join(map(str, shape))}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock"
    )

    out: dict[str, Any] = {}
    for mode in args.mode:
        build = build_propagated if mode == "propagated" else build_shadow
        inst = build(matching)
        # Its first calls choose the float side's layout: not in the timings.
        settle_layout(inst.module, x)
        if args.spin:
            _spin(inst.module, x, args.spin)
            continue
        variants: dict[str, Callable[[torch.Tensor], Any]] = {
            "traced float, then traced quant": _one_after_the_other(
                matching.float_module, matching.quant_module
            ),
            **_variants(inst, mode),
        }
        out[f"{mode}_ablation"] = _ablation(
            qm.float_model, qm.quant_model, variants, x, args, clock, f"{mode}, {where}"
        )
        out[f"{mode}_comparator"] = _comparator_steps(
            inst, x, args.repeat, clock, f"{mode}, {where}", out[f"{mode}_ablation"]
        )
        if mode == "shadow":
            out["shadow_inputs"] = _shadow_input_steps(
                inst,
                x,
                args.repeat,
                clock,
                f"{mode}, {where}",
                out[f"{mode}_ablation"][0]["ms"],
            )
        out[f"{mode}_counts"] = _counts(inst, x, mode)
        if args.torch_profiler:
            _torch_profile(qm.float_model, qm.quant_model, inst.module, x, args.top)
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_run",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    p.add_argument("--mode", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--small", action="store_true", help=f"inputs {SMALL_SHAPE}")
    add_timing_options(p, warmup=False)
    p.add_argument(
        "--torch-profiler", action="store_true", help="also print operator tables"
    )
    p.add_argument("--top", type=int, default=25, help="operator rows to print")
    p.add_argument(
        "--spin",
        type=float,
        default=0.0,
        help="only run the instrumented model for this many seconds per mode, "
        "for an outside profiler such as py-spy",
    )
    return p.parse_args(argv)


# --- 1. ablations ------------------------------------------------------------------


class _NoComparison(nn.Module):
    """A probe that compares nothing: its call remains, its work does not."""

    def forward(self, f: Any, q: Any) -> None:
        return None


def _variants(inst: Instrumented, mode: str) -> dict[str, fx.GraphModule]:
    variants = {"fxns as built": inst.module}
    variants["comparator off"] = _edit(inst.module, _no_comparison)
    variants["probes removed"] = _edit(inst.module, _remove_probes)
    if mode == "shadow":
        variants["shadow inputs: no contiguous copy"] = _edit(
            inst.module, _retarget_shadow_inputs
        )
        variants["shadow inputs: shared"] = _edit(
            inst.module, lambda gm: _share_dequantized(gm, contiguous=True)
        )
        variants["shadow inputs: shared, no contiguous copy"] = _edit(
            inst.module, lambda gm: _share_dequantized(gm, contiguous=False)
        )
    return variants


def _edit(
    gm: fx.GraphModule, change: Callable[[fx.GraphModule], None]
) -> fx.GraphModule:
    # A new GraphModule over the same submodules; the probes are fresh copies
    # so that the variants do not add to the statistics of the original.
    new = fx.GraphModule(gm, copy.deepcopy(gm.graph), type(gm).__name__)
    for node in _probe_nodes(new):
        setattr(
            new, str(node.target), copy.deepcopy(gm.get_submodule(str(node.target)))
        )
    change(new)
    new.graph.lint()
    new.recompile()
    return new.eval()


def _probe_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and str(n.target).startswith(PROBE_PREFIX)
    ]


def _no_comparison(gm: fx.GraphModule) -> None:
    for node in _probe_nodes(gm):
        setattr(gm, str(node.target), _NoComparison())


def _remove_probes(gm: fx.GraphModule) -> None:
    for node in _probe_nodes(gm):
        gm.graph.erase_node(node)


def dequantized(value: Any) -> Any:
    """``shadow_input`` without the contiguous copy (measurement only)."""
    if not isinstance(value, torch.Tensor):
        return value
    fresh = as_float(value)
    return value.clone() if fresh is value else fresh


def _retarget_shadow_inputs(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is shadow_input:
            node.target = dequantized


def _share_dequantized(gm: fx.GraphModule, contiguous: bool) -> None:
    """One dequantized value per quantized value, for every shadow and probe."""
    convert = shadow_input if contiguous else dequantized
    shared: dict[fx.Node, fx.Node] = {}

    def shared_of(src: fx.Node, before: fx.Node) -> fx.Node:
        if src not in shared:
            with gm.graph.inserting_after(src):
                shared[src] = gm.graph.call_function(convert, (src,))
        return shared[src]

    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is shadow_input:
            src = node.args[0]
            assert isinstance(src, fx.Node)
            node.replace_all_uses_with(shared_of(src, node))
            gm.graph.erase_node(node)
    for node in _probe_nodes(gm):
        q = node.args[1]
        if isinstance(q, fx.Node) and q in shared:
            node.args = (node.args[0], shared[q])


def _ablation(
    float_model: nn.Module,
    quant_model: nn.Module,
    variants: dict[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    args: argparse.Namespace,
    clock: Callable[[], float],
    title: str,
) -> list[dict[str, Any]]:
    candidates = [
        Candidate("float", lambda: float_model(x)),
        Candidate("quant", lambda: quant_model(x)),
    ]
    for name, module in variants.items():
        candidates.append(Candidate(name, _caller(module, x)))
    with torch.no_grad():
        number = calls_per_sample(
            lambda: (float_model(x), quant_model(x)), args.sample_seconds
        )
        runs = interleaved(
            candidates, args.repeat, warmup=1, number=number, clock=clock
        )
    floor = [
        f + q for f, q in zip(runs.times["float"], runs.times["quant"], strict=True)
    ]
    rows: list[dict[str, Any]] = [
        {"variant": "floor (float + quant)", "ms": median(floor) * 1e3, "ratio": 1.0}
    ]
    for name in variants:
        ratios = [t / f for t, f in zip(runs.times[name], floor, strict=True)]
        rows.append(
            {
                "variant": name,
                "ms": median(runs.times[name]) * 1e3,
                "ratio": median(ratios),
            }
        )
    print_table(
        [list(r.values()) for r in rows],
        ("variant", "ms per batch", "ratio to floor"),
        f"\nAblations: {title}",
    )
    return rows


def _one_after_the_other(
    a: nn.Module, b: nn.Module
) -> Callable[[torch.Tensor], tuple[Any, Any]]:
    return lambda x: (a(x), b(x))


def _caller(
    module: Callable[[torch.Tensor], Any], x: torch.Tensor
) -> Callable[[], Any]:
    return lambda: module(x)


# --- 2. comparator steps -----------------------------------------------------------


def _capture(inst: Instrumented, x: torch.Tensor) -> list[tuple[torch.Tensor, Any]]:
    """The (float, quantized) values every probe saw in one run."""
    seen: list[tuple[torch.Tensor, Any]] = []
    original = Probe.forward

    def record(self: Probe, f: Any, q: Any) -> None:
        if isinstance(f, torch.Tensor) and isinstance(q, torch.Tensor):
            # clone() of a quantized tensor drops its layout; quantized ops
            # do not work in place, so the value itself can be kept.
            seen.append((_keep(f), q if q.is_quantized else _keep(q)))

    # A probe's __call__ is its forward (fxns.instrument.Probe): patch both.
    Probe.forward = Probe.__call__ = record  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            inst.module(x)
    finally:
        Probe.forward = Probe.__call__ = original  # type: ignore[method-assign]
    return seen


def _keep(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone(memory_format=torch.preserve_format)


def _comparator_steps(
    inst: Instrumented,
    x: torch.Tensor,
    repeat: int,
    clock: Callable[[], float],
    title: str,
    ablation: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    from fxns.stats import ErrorStats

    pairs = _capture(inst, x)
    floor_ms = ablation[0]["ms"]

    # The intermediate values of ErrorStats.update, so that each step can be
    # timed alone on every captured pair.
    deq = [(as_float(f), as_float(q)) for f, q in pairs]
    diffs = [torch.sub(f, q) for f, q in deq]
    flats = [
        (flat_view(f), flat_view(q), flat_view(d))
        for (f, q), d in zip(deq, diffs, strict=True)
    ]
    same_layout = [(f, q.contiguous(memory_format=_format_of(f))) for f, q in deq]
    scalars = [
        (torch.dot(f, f), torch.dot(q, q), torch.dot(d, d), *torch.aminmax(d))
        for f, q, d in flats
    ]

    def update() -> None:
        for f, q in pairs:
            ErrorStats().update(f, q)

    def dequantize() -> None:
        for _, q in pairs:
            as_float(q)

    def subtract() -> None:
        for f, q in deq:
            torch.sub(f, q)

    def subtract_same_layout() -> None:
        for f, q in same_layout:
            torch.sub(f, q)

    def dots() -> None:
        for f, q, d in flats:
            torch.dot(f, f), torch.dot(q, q), torch.dot(d, d)

    def minmax() -> None:
        for _, _, d in flats:
            torch.aminmax(d)

    def to_python() -> None:
        for sums in scalars:
            torch.stack(sums).tolist()

    def update_in_f_layout() -> None:
        for f, q in pairs:
            _update_in_f_layout(f, q)

    def read_f_once() -> None:
        for f, _, _ in flats:
            torch.dot(f, f)

    steps = [
        ("ErrorStats.update, whole", update),
        ("  dequantize q (as_float)", dequantize),
        ("  f - q, layouts as they come", subtract),
        ("  3 dots (ff, qq, dd)", dots),
        ("  aminmax(d)", minmax),
        ("  stack + tolist of the 5 sums", to_python),
        ("alt: f - q with q already in f's layout", subtract_same_layout),
        ("alt: update, q's bytes put in f's layout first", update_in_f_layout),
        ("bound: one read of f (dot(f, f))", read_f_once),
    ]
    rows = _time_steps(steps, repeat, clock, floor_ms)
    n_elems = sum(f.numel() for f, _ in pairs)
    layouts = Counter(
        (_layout(f), _layout(q) + (" quantized" if q.is_quantized else ""))
        for f, q in pairs
    )
    print_table(
        [[r["step"], r["ms"], f"{100 * r['of_floor']:.1f}%"] for r in rows],
        ("comparator step, all probes of one batch", "ms per batch", "of floor"),
        f"\nComparator steps: {title}; {len(pairs)} probes, "
        f"{n_elems / 1e6:.1f} M elements per batch; layouts (float, quant): "
        + ", ".join(f"{k}: {v}" for k, v in layouts.items()),
    )
    return rows


def _update_in_f_layout(f: torch.Tensor, q: torch.Tensor) -> list[float]:
    """ErrorStats.update's sums, with q dequantized in f's memory layout.

    Transposing the quantized value's bytes costs a quarter of transposing
    the dequantized floats, and the subtraction then runs on one layout.
    """
    if q.is_quantized:
        q = q.contiguous(memory_format=_format_of(f)).dequantize()
    d = torch.sub(f, q)
    f1, q1, d1 = flat_view(f), flat_view(q), flat_view(d)
    lo, hi = torch.aminmax(d1)
    sums = (torch.dot(f1, f1), torch.dot(q1, q1), torch.dot(d1, d1), lo, hi)
    return torch.stack(sums).tolist()


def _shadow_input_steps(
    inst: Instrumented,
    x: torch.Tensor,
    repeat: int,
    clock: Callable[[], float],
    title: str,
    floor_ms: float,
) -> list[dict[str, Any]]:
    seen: list[Any] = []

    def record(value: Any) -> Any:
        seen.append(value)
        return shadow_input(value)

    def retarget(gm: fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target is shadow_input:
                node.target = record

    with torch.no_grad():
        _edit(inst.module, retarget)(x)
    values = [v for v in seen if isinstance(v, torch.Tensor) and v.is_quantized]

    def as_built() -> None:
        for v in values:
            shadow_input(v)

    def dequantize_only() -> None:
        for v in values:
            v.dequantize()

    def bytes_first() -> None:
        for v in values:
            v.contiguous().dequantize()

    steps = [
        ("shadow_input as built (dequantize, then contiguous)", as_built),
        ("alt: dequantize only (quantized kernel's layout)", dequantize_only),
        ("alt: contiguous bytes, then dequantize", bytes_first),
    ]
    rows = _time_steps(steps, repeat, clock, floor_ms)
    layouts = Counter(_layout(v) for v in values)
    print_table(
        [[r["step"], r["ms"], f"{100 * r['of_floor']:.1f}%"] for r in rows],
        ("shadow inputs of one batch", "ms per batch", "of floor"),
        f"\nShadow inputs: {title}; {len(values)} quantized values, "
        f"{sum(v.numel() for v in values) / 1e6:.1f} M elements; layouts: "
        + ", ".join(f"{k}: {v}" for k, v in layouts.items()),
    )
    return rows


def _time_steps(
    steps: list[tuple[str, Callable[[], None]]],
    repeat: int,
    clock: Callable[[], float],
    floor_ms: float,
) -> list[dict[str, Any]]:
    candidates = [Candidate(name, fn) for name, fn in steps]
    with torch.no_grad():
        runs = interleaved(candidates, repeat, warmup=1, clock=clock)
    rows = []
    for name, _ in steps:
        ms = median(runs.times[name]) * 1e3
        rows.append({"step": name.strip(), "ms": ms, "of_floor": ms / floor_ms})
    return rows


def _format_of(t: torch.Tensor) -> torch.memory_format:
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def _layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def _spin(module: nn.Module, x: torch.Tensor, seconds: float) -> None:
    end = time.perf_counter() + seconds
    with torch.no_grad():
        while time.perf_counter() < end:
            module(x)


# --- 3. counts and operator tables ---------------------------------------------------


def _counts(inst: Instrumented, x: torch.Tensor, mode: str) -> dict[str, int]:
    nodes = list(inst.module.graph.nodes)
    shadow_inputs = [
        n for n in nodes if n.op == "call_function" and n.target is shadow_input
    ]
    sources = {n.args[0] for n in shadow_inputs}
    counts = {
        "graph nodes": len(nodes),
        "probes": len(_probe_nodes(inst.module)),
        "shadow_input calls": len(shadow_inputs),
        "distinct values they read": len(sources),
    }
    print_table([[k, v] for k, v in counts.items()], ("count", mode), "\nCounts")
    return counts


def _torch_profile(
    float_model: nn.Module,
    quant_model: nn.Module,
    module: nn.Module,
    x: torch.Tensor,
    top: int,
) -> None:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for label, fn in (
            ("float + quant", lambda: (float_model(x), quant_model(x))),
            ("instrumented", lambda: module(x)),
        ):
            fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            print(f"\nOperators, {label}:")
            print(
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
            )


if __name__ == "__main__":
    main()
