"""benchmarks/bench_memory.py runs and prints its table (figures: docs/memory.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_memory.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_memory"] = module
    spec.loader.exec_module(module)
    return module


def test_the_memory_benchmark_prints_rss_at_each_mark(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = _load()
    assert bench.main(["--batches", "12", "--shape", "2x3x16x16"]) == 0
    out = capsys.readouterr().out
    assert "12 batches of 2x3x16x16" in out
    assert "RSS after 10 (MB)" in out and "RSS after 12 (MB)" in out
    for mode in ("shadow", "propagated", "add_loggers + collect"):
        assert mode in out


def test_the_marks_are_10_100_and_1000_batches() -> None:
    assert _load().MARKS == (10, 100, 1000)
