"""Resident memory over a long comparison: does it stay flat in the number of batches?

Streams batches from a generator (made on the fly, never kept) through
``fxns.compare_activations`` in both modes, and through the user's own loop
with ``fxns.add_loggers`` and ``fxns.collect``, and prints the resident set
size of this process after 10, 100 and 1,000 batches. fxns keeps running sums,
never activations, so the figures should not grow with the number of batches
(case 12 in ../shared/cases: the numeric suite's loggers grow by ~2.5 MB per
batch on this model).

Run it from the repository root:

    python benchmarks/bench_memory.py                 # 1,000 batches
    python benchmarks/bench_memory.py --batches 200   # quicker

The figures are in docs/memory.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fxns
from fxns.quantize import quantize_fx

MARKS = (10, 100, 1000)
MB = 2**20


class TwoConv(nn.Module):
    """Case 12's model: conv → relu → conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def rss_bytes() -> int:
    """This process's resident set size now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def stream(
    n: int, shape: tuple[int, ...], marks: Sequence[int], rss: dict[int, int]
) -> Iterator[torch.Tensor]:
    """``n`` fresh batches; after batch ``i`` in ``marks`` has run, record RSS."""
    g = torch.Generator().manual_seed(0)
    for i in range(1, n + 1):
        yield torch.randn(shape, generator=g)
        # The consumer asks for the next batch only when batch i is done.
        if i in marks:
            gc.collect()
            rss[i] = rss_bytes()


def run(
    batches: int, shape: tuple[int, ...]
) -> tuple[list[int], dict[str, dict[int, int]], dict[str, float]]:
    torch.manual_seed(0)
    model = TwoConv().eval()
    g = torch.Generator().manual_seed(1)
    calibration = [torch.randn(shape, generator=g) for _ in range(4)]
    quant = quantize_fx(model, calibration, "x86")
    marks = sorted({m for m in MARKS if m <= batches} | {batches})

    def compare(mode: str) -> Callable[[Iterator[torch.Tensor]], fxns.Report]:
        return lambda data: fxns.compare_activations(model, quant, data, mode=mode)

    def own_loop(data: Iterator[torch.Tensor]) -> fxns.Report:
        f_log, q_log = fxns.add_loggers(model, quant)
        with torch.no_grad():
            for x in data:
                f_log(x)
                q_log(x)
        return fxns.collect(f_log, q_log)

    ways = {
        "shadow": compare("shadow"),
        "propagated": compare("propagated"),
        "add_loggers + collect": own_loop,
    }
    figures: dict[str, dict[int, int]] = {}
    seconds: dict[str, float] = {}
    for name, way in ways.items():
        rss: dict[int, int] = {}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = way(stream(batches, shape, marks, rss))
        seconds[name] = time.perf_counter() - start
        assert report.meta["batches"] == batches, report.meta
        figures[name] = rss
    return marks, figures, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument(
        "--shape",
        type=lambda s: tuple(int(d) for d in s.split("x")),
        default=(8, 3, 32, 32),
        help="batch shape, e.g. 8x3x32x32 (the default)",
    )
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier timings on a shared machine
    try:
        marks, figures, seconds = run(args.batches, args.shape)
    finally:
        torch.set_num_threads(threads)
    headers = [
        "mode",
        *(f"RSS after {m} (MB)" for m in marks),
        f"growth {marks[0]}→{marks[-1]} (MB)",
        "time (s)",
    ]
    rows = []
    for name, rss in figures.items():
        growth = (rss[marks[-1]] - rss[marks[0]]) / MB
        rows.append(
            [name, *(rss[m] / MB for m in marks), growth, round(seconds[name], 1)]
        )
    shape = "x".join(map(str, args.shape))
    print(
        f"fxns {fxns.__version__}, torch {torch.__version__}, "
        f"{args.batches} batches of {shape}, model: conv→relu→conv (case 12)"
    )
    print(tabulate(rows, headers=headers, floatfmt=".1f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
