"""The command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fxns.cli import main


def test_demo_prints_all_three_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--train-seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "fxns weights comparison" in out
    assert "fxns shadow comparison" in out
    assert "fxns propagated comparison" in out
    for kind in ("add+relu", "cat", "mul", "conv2d+batch_norm+relu"):
        assert kind in out


def test_python_dash_m_runs_and_errors_are_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fxns", "demo", "--train-seconds", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid float value" in done.stderr
