"""What each of fxns's run-time choices is worth, measured in one run.

fxns's instrumented modules make four choices for speed: statistics in one
compiled pass over both values (``fxns._onepass``), the float side's memory
layout (``fxns.layout``, ``"auto"`` by default), batch norms folded into
their convs where quantization folded them (``FoldedConv``), and
rearrangements (reshape, transpose, ...) that take their numbers from their
source's probe. This script builds, for each mode, the module as fxns builds
it and one variant per choice with that choice undone, and times them all
interleaved with the float and quantized models (the floor), round by round:

- ``as built``: what ``build_propagated`` / ``build_shadow`` give;
- ``layout contiguous`` / ``layout channels_last``: the layout forced;
- ``no one-pass kernel``: statistics through torch tensor ops, as before
  the kernels (``FXNS_NO_NUMBA=1`` does the same for a whole process);
- ``no batch-norm folding``: the float conv and batch norm run apart;
- ``no derived rows``: every rearrangement gets its own probe (and, in
  shadow mode, its own shadow).

Each variant is built with fxns's own code, with one of its functions
replaced while it builds (or, for the kernel, while it runs), so the
variants differ from ``as built`` in that one choice only.

Usage (from the repository root)::

    python -m benchmarks.ablate                          # mobilenet_v2, 8x3x224x224
    python -m benchmarks.ablate --model resnet18 --small
    python -m benchmarks.ablate --model transformer-like --modes propagated
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import torch

import fxns
from benchmarks.harness import (
    CLOCKS,
    FULL_SHAPE,
    KINDS,
    MODELS,
    SMALL_SHAPE,
    Candidate,
    add_timing_options,
    calls_per_sample,
    environment,
    interleaved,
    median,
    print_table,
    quantized_model,
    settle_layout,
    shape_text,
    steady_allocator,
    write_json,
)
from fxns import _onepass
from fxns import instrument as fxns_instrument

__all__ = ["VARIANTS", "main"]

MODES = ("propagated", "shadow")


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _no_folding() -> contextlib.AbstractContextManager[Any]:
    return mock.patch.object(
        fxns_instrument._GraphBuilder, "folded", lambda self, conv, bn: None
    )


def _no_derived() -> contextlib.AbstractContextManager[Any]:
    return mock.patch.object(fxns_instrument, "rearranged_pairs", lambda matching: {})


def _no_kernel() -> contextlib.AbstractContextManager[Any]:
    return mock.patch.object(_onepass, "sums", lambda f, q: None)


# Variant → (layout, context while building, context while running).
VARIANTS: dict[
    str,
    tuple[
        str,
        Callable[[], contextlib.AbstractContextManager[Any]],
        Callable[[], contextlib.AbstractContextManager[Any]],
    ],
] = {
    "as built": ("auto", _nothing, _nothing),
    "layout contiguous": ("contiguous", _nothing, _nothing),
    "layout channels_last": ("channels_last", _nothing, _nothing),
    "no one-pass kernel": ("auto", _nothing, _no_kernel),
    "no batch-norm folding": ("auto", _no_folding, _nothing),
    "no derived rows": ("auto", _no_derived, _nothing),
}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    steady_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    shape = SMALL_SHAPE if args.small else FULL_SHAPE
    qm = quantized_model(args.model, shape, kind=args.kind)
    x = qm.batch
    matching = fxns.match(qm.float_model, qm.quant_model)

    candidates = [
        Candidate("float", lambda: qm.float_model(x)),
        Candidate("quant", lambda: qm.quant_model(x)),
    ]
    layouts: dict[str, str] = {}
    for mode in args.modes:
        build = (
            fxns_instrument.build_propagated
            if mode == "propagated"
            else fxns_instrument.build_shadow
        )
        for variant in args.variants:
            layout, building, running = VARIANTS[variant]
            with building():
                module = build(matching, layout=layout).module
            name = f"{mode}|{variant}"
            with torch.no_grad(), running():
                layouts[name] = settle_layout(module, x)[0]
            candidates.append(Candidate(name, _runner(module, x, running)))

    with torch.no_grad():
        number = calls_per_sample(
            lambda: (qm.float_model(x), qm.quant_model(x)), args.sample_seconds
        )
        runs = interleaved(
            candidates, args.repeat, warmup=args.warmup, number=number, clock=clock
        )
    floor = [
        f + q for f, q in zip(runs.times["float"], runs.times["quant"], strict=True)
    ]
    rows = []
    for name, times in runs.times.items():
        if name in ("float", "quant"):
            continue
        mode, variant = name.split("|")
        ratio = median([t / f for t, f in zip(times, floor, strict=True)])
        rows.append([mode, variant, median(times) * 1e3, ratio, layouts[name]])
    title = (
        f"{args.model} {args.kind}, input {shape_text(x.shape)}, floor "
        f"{median(floor) * 1e3:.1f} ms (float {median(runs.times['float']) * 1e3:.1f}"
        f" + quant {median(runs.times['quant']) * 1e3:.1f}), median of "
        f"{args.repeat} rounds, {torch.get_num_threads()} thread(s), "
        f"{args.clock} clock"
    )
    print_table(
        rows, ("mode", "variant", "run (ms)", "run / floor", "layout"), title=title
    )
    payload = {
        "environment": environment(),
        "model": args.model,
        "kind": args.kind,
        "input": list(x.shape),
        "floor_ms": median(floor) * 1e3,
        "rows": [
            dict(zip(("mode", "variant", "run_ms", "ratio", "layout"), r, strict=True))
            for r in rows
        ],
    }
    if args.json:
        write_json(args.json, payload)
    return payload


def _runner(
    module: Any,
    x: torch.Tensor,
    running: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Callable[[], None]:
    def run() -> None:
        with running():
            module(x)

    return run


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ablate",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS))
    p.add_argument("--kind", default="static", choices=KINDS)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS)
    )
    p.add_argument("--small", action="store_true", help="2x3x64x64 inputs")
    add_timing_options(p)
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


if __name__ == "__main__":
    main()
