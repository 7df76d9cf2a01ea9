"""The suite's memory section: resident memory after 1, 10 and 100 batches.

Each way of comparing runs in a fresh process (``python -m
benchmarks.suite_memory SPEC``), so that what one way allocated (or the
allocator kept) cannot hide what another does. A child quantizes the model
(:func:`harness.quantized_model`), builds what the way needs, and streams
fresh random batches (made on the fly, never kept) through it. After each
mark batch has run it collects garbage and records:

- its resident set size (``/proc/self/statm``);
- the same after ``malloc_trim(0)``, which hands the free memory glibc's
  allocator keeps for reuse back to the system: what the process holds in
  live objects. Between marks glibc keeps a varying amount of freed
  activation memory (tens to 120 MB at 8x3x224x224), which moved the raw
  ratio of the same way from 1.04 to 1.11 between two runs;
- for the ways whose instrumented models it holds, the bytes of tensors
  those models keep besides their parameters and buffers
  (:func:`harness.kept_tensor_bytes`): the activations a logger kept.

The ways:

- fxns, instrumented module: ``build_propagated`` / ``build_shadow`` of
  ``fxns.match``, called on each batch;
- fxns, ``compare_activations(..., mode=...)`` on a generator of batches;
- torch.ao.ns: ``add_loggers`` (both models called on each batch) and
  ``add_shadow_loggers``, with ``OutputLogger``, which keep every
  activation: never emptied here.

A child whose RSS passes ``limit_mb`` stops early (torch.ao.ns at large
inputs); its last figures are then lower bounds.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    first_line,
    kept_tensor_bytes,
    print_table,
    quantized_model,
    rss_mb,
)

__all__ = ["MARKS", "WAYS", "WAY_KEYS", "MemoryRow", "Way", "child", "run_memory"]

MARKS = (1, 10, 100)
ROOT = Path(__file__).resolve().parents[1]

FXNS = "fxns"
AO = "torch.ao.ns"


@dataclass(frozen=True)
class Way:
    """One way of comparing, measured in its own process."""

    tool: str
    mode: str
    via: str

    @property
    def key(self) -> str:
        """``fxns-propagated``, ``fxns-shadow-compare``, ``ao-shadow``, ..."""
        tool = "fxns" if self.tool == FXNS else "ao"
        tail = "-compare" if self.via.startswith("compare_activations") else ""
        if self.asks_to_keep:
            tail += "-keep"
        return f"{tool}-{self.mode}{tail}"

    @property
    def asks_to_keep(self) -> bool:
        """Whether this way asks fxns to keep the values it compares."""
        return KEEP in self.via


# The option that asks fxns to keep raw values (the only way it keeps any).
KEEP = "keep_tensors=True"

WAYS = (
    Way(FXNS, "propagated", "instrumented module"),
    Way(FXNS, "shadow", "instrumented module"),
    Way(FXNS, "propagated", "compare_activations"),
    Way(FXNS, "shadow", "compare_activations"),
    Way(FXNS, "propagated", f"compare_activations, {KEEP}"),
    Way(AO, "propagated", "add_loggers"),
    Way(AO, "shadow", "add_shadow_loggers"),
)
# Way by key, for the command line.
WAY_KEYS = {w.key: w for w in WAYS}


@dataclass
class MemoryRow:
    """What one child measured."""

    tool: str
    mode: str
    via: str
    # MiB after building, before the first batch.
    rss_before_mb: float = math.nan
    # Mark (batches run) → MiB.
    rss_mb: dict[int, float] = field(default_factory=dict)
    # Mark → MiB after malloc_trim(0) (glibc only; empty elsewhere).
    trimmed_mb: dict[int, float] = field(default_factory=dict)
    # Mark → MiB of tensors the instrumented models keep; empty when the way
    # does not give access to them.
    kept_mb: dict[int, float] = field(default_factory=dict)
    # Batches run (fewer than the last mark if stopped at the limit).
    batches: int = 0
    seconds: float = math.nan
    note: str = ""

    def ratio(self) -> float:
        """RSS at the last mark reached over RSS after the first."""
        return _first_last(self.rss_mb, lambda a, b: b / a)

    def trimmed_ratio(self) -> float:
        """:meth:`ratio` of the RSS after ``malloc_trim(0)``."""
        return _first_last(self.trimmed_mb, lambda a, b: b / a)

    def growth_mb(self) -> float:
        return _first_last(self.rss_mb, lambda a, b: b - a)

    def trimmed_growth_mb(self) -> float:
        return _first_last(self.trimmed_mb, lambda a, b: b - a)

    def kept_growth_mb(self) -> float:
        """Tensors kept at the last mark minus after the first batch."""
        return _first_last(self.kept_mb, lambda a, b: b - a)

    def keeps_raw(self) -> str:
        growth = self.kept_growth_mb()
        if math.isnan(growth):
            return ""
        return "yes" if growth > 0 else "no"


def _first_last(
    by_mark: dict[int, float], compare: Callable[[float, float], float]
) -> float:
    """``compare`` of the figures at the first and last mark; NaN with fewer
    than two marks."""
    marks = sorted(by_mark)
    if len(marks) < 2:
        return math.nan
    return compare(by_mark[marks[0]], by_mark[marks[-1]])


def run_memory(
    model: str,
    shape: Sequence[int],
    marks: Sequence[int],
    threads: int,
    calibration: int,
    limit_mb: float,
    title: str,
    ways: Sequence[Way] = WAYS,
    jobs: int = 1,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """One child per way, ``jobs`` at a time; print and return the table.

    Children running side by side do not change each other's resident
    memory; ``jobs`` above 1 only saves time (for quick runs).
    """
    marks = sorted(set(marks))
    specs = []
    for way in ways:
        spec = {
            "tool": way.tool,
            "mode": way.mode,
            "via": way.via,
            "model": model,
            "shape": list(shape),
            "marks": marks,
            "threads": threads,
            "calibration": calibration,
            "limit_mb": limit_mb,
        }
        specs.append(spec)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        rows = list(pool.map(lambda spec: _spawn(spec, timeout_s), specs))
    for row in rows:
        print(
            f"# {row.tool} {row.mode} ({row.via}): "
            + (row.note or f"{row.growth_mb():+.1f} MB over {row.batches} batches")
            + ("" if math.isnan(row.seconds) else f", {row.seconds:.1f} s"),
            flush=True,
        )
    headers = (
        "tool",
        "mode",
        "via",
        "RSS before (MB)",
        *(f"RSS after {m} (MB)" for m in marks),
        f"growth {marks[0]}→{marks[-1]} (MB)",
        f"{marks[-1]} / {marks[0]}",
        f"{marks[-1]} / {marks[0]}, trimmed",
        f"tensors kept after {marks[-1]} (MB)",
        "raw tensors kept",
        "note",
    )
    cells = []
    for r in rows:
        cells.append(
            [
                r.tool,
                r.mode,
                r.via,
                _num(r.rss_before_mb),
                *(_num(r.rss_mb.get(m, math.nan)) for m in marks),
                _num(r.growth_mb()),
                _num(r.ratio()),
                _num(r.trimmed_ratio()),
                _num(r.kept_mb.get(marks[-1], math.nan)),
                r.keeps_raw(),
                r.note,
            ]
        )
    table = print_table(cells, headers, title)
    return {
        "model": model,
        "input_shape": list(shape),
        "marks": marks,
        "rows": [
            {
                **asdict(r),
                "ratio": r.ratio(),
                "trimmed_ratio": r.trimmed_ratio(),
                "trimmed_growth_mb": r.trimmed_growth_mb(),
                "growth_mb": r.growth_mb(),
                "kept_growth_mb": r.kept_growth_mb(),
                "raw_tensors_kept": r.keeps_raw(),
            }
            for r in rows
        ],
        "table": table,
    }


def _spawn(spec: dict[str, Any], timeout_s: float) -> MemoryRow:
    row = MemoryRow(spec["tool"], spec["mode"], spec["via"])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.suite_memory", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        row.note = f"failed: no result within {timeout_s:.0f} s"
        return row
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        err = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        row.note = f"failed: {err[-1] if err else f'exit status {done.returncode}'}"
        return row
    out = json.loads(lines[-1])
    row.rss_before_mb = out["rss_before_mb"]
    row.rss_mb = {int(k): v for k, v in out["rss_mb"].items()}
    row.kept_mb = {int(k): v for k, v in out["kept_mb"].items()}
    row.trimmed_mb = {int(k): v for k, v in out.get("trimmed_mb", {}).items()}
    row.batches = out["batches"]
    row.seconds = out["seconds"]
    row.note = out["note"]
    return row


# --- the child ----------------------------------------------------------------


class _Stop(Exception):
    """The resident set passed the limit."""


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one way in this process; returns what :func:`_spawn` reads."""
    import warnings

    import fxns

    warnings.simplefilter("ignore")
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    qm = quantized_model(
        spec["model"], spec["shape"], calibration_batches=spec["calibration"]
    )
    f, q = qm.float_model, qm.quant_model
    shape = tuple(qm.batch.shape)
    marks: list[int] = spec["marks"]
    rss: dict[int, float] = {}
    trimmed: dict[int, float] = {}
    kept: dict[int, float] = {}
    trim = _malloc_trim()
    holders: list[torch.nn.Module] = []
    limit = spec["limit_mb"]
    note = ""
    seen = 0

    def batches() -> Iterator[torch.Tensor]:
        nonlocal seen
        g = torch.Generator().manual_seed(1)
        for i in range(1, marks[-1] + 1):
            yield torch.randn(shape, generator=g)
            # The consumer asks for the next batch once batch i has run.
            seen = i
            over = rss_mb() > limit
            if i in marks or over:
                gc.collect()
                rss[i] = rss_mb()
                if trim is not None:
                    trim(0)
                    trimmed[i] = rss_mb()
                if holders:
                    kept[i] = kept_tensor_bytes(*holders) / 2**20
                if over and i != marks[-1]:
                    raise _Stop

    def loop(*models: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for x in batches():
                    for m in models:
                        m(x)

        return run

    tool, mode, via = spec["tool"], spec["mode"], spec["via"]
    if tool == FXNS and via == "instrumented module":
        from fxns.instrument import build_propagated, build_shadow

        build = build_propagated if mode == "propagated" else build_shadow
        inst = build(fxns.match(f, q))
        holders.append(inst.module)
        run = loop(inst.module)
    elif tool == FXNS:
        keep = KEEP in via

        def run() -> None:
            fxns.compare_activations(f, q, batches(), mode=mode, keep_tensors=keep)

    else:
        import torch.ao.ns._numeric_suite_fx as ns

        with contextlib.redirect_stdout(io.StringIO()):
            if mode == "propagated":
                a, b = ns.add_loggers(
                    "a", copy.deepcopy(f), "b", copy.deepcopy(q), ns.OutputLogger
                )
                holders.extend([a, b])
                run = loop(a, b)
            else:
                s = ns.add_shadow_loggers(
                    "a", copy.deepcopy(f), "b", copy.deepcopy(q), ns.OutputLogger
                )
                holders.append(s)
                run = loop(s)

    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run()
    except _Stop:
        note = (
            f"stopped after {seen} batches: RSS over {limit:.0f} MB; the last "
            "figures are for that batch"
        )
    except Exception as err:
        note = f"failed: {first_line(err)}"
    return {
        "rss_before_mb": before,
        "rss_mb": rss,
        "trimmed_mb": trimmed,
        "kept_mb": kept,
        "batches": seen,
        "seconds": time.perf_counter() - start,
        "note": note,
    }


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where there is none."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _num(value: float) -> float | str:
    return "" if math.isnan(value) else value


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
