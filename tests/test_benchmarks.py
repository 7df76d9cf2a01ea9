"""The benchmark scripts run: smallest settings, no timing asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import bench_end_to_end, harness, profile_run


def test_end_to_end_runs_and_reports_both_tools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "e2e.json"
    result = bench_end_to_end.main(
        [
            "--models",
            "demo",
            "--small",
            "--repeat",
            "1",
            "--setup-repeat",
            "1",
            "--warmup",
            "0",
            "--calibration",
            "1",
            "--sample-seconds",
            "0",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "run / floor" in printed and "fxns setup, step by step" in printed

    rows = {(r["tool"], r["mode"]): r for r in result["rows"]}
    for mode in ("propagated", "shadow"):
        fxns_row = rows[("fxns", mode)]
        assert fxns_row["ratio"] > 0 and math.isfinite(fxns_row["ratio"])
        assert fxns_row["setup_s"] > 0
        assert fxns_row["layers"] > 0
        # torch.ao.ns is measured beside fxns, or says why it could not be.
        for tool in ("torch.ao.ns", "torch.ao.ns (A = float)"):
            row = rows[(tool, mode)]
            assert row["note"].startswith("failed: ") or row["ratio"] > 0
    assert rows[("float fwd + quant fwd", "floor")]["ratio"] == 1.0
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_interleaved_rotates_and_drops_what_fails() -> None:
    calls: list[str] = []

    def boom() -> None:
        calls.append("c")
        raise RuntimeError("no kernel for this\nsecond line")

    timings = harness.interleaved(
        [
            harness.Candidate("a", lambda: calls.append("a")),
            harness.Candidate("b", lambda: calls.append("b")),
            harness.Candidate("c", boom, may_fail=True),
        ],
        repeat=2,
        warmup=1,
    )
    assert calls == ["a", "b", "c", "b", "a", "a", "b"]
    assert [len(timings.times[k]) for k in "abc"] == [2, 2, 0]
    assert timings.errors == {"c": "RuntimeError: no kernel for this"}


def test_interleaved_raises_for_the_tool_under_test() -> None:
    def boom() -> None:
        raise RuntimeError("fxns broke")

    with pytest.raises(RuntimeError, match="fxns broke"):
        harness.interleaved([harness.Candidate("fxns", boom)], repeat=1)


def test_profile_run_variants_run(capsys: pytest.CaptureFixture[str]) -> None:
    result = profile_run.main(
        [
            "--model",
            "demo",
            "--small",
            "--repeat",
            "1",
            "--mode",
            "shadow",
            "--sample-seconds",
            "0",
        ]
    )
    assert "Ablations: shadow" in capsys.readouterr().out
    variants = {r["variant"] for r in result["shadow_ablation"]}
    assert {"fxns as built", "comparator off", "shadow inputs: shared"} <= variants
    assert all(r["ratio"] > 0 for r in result["shadow_ablation"])
