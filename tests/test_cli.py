"""The command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fxns
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
    assert "invalid float value" in _one_line(done.stderr)


# --- errors: one line on stderr, non-zero exit ------------------------------------


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("fxns: error: ", "fxns demo: error: ")), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command (see fxns --help)"),
        (["nope"], "invalid choice: 'nope'"),
        (["demo", "--top", "x"], "argument --top: invalid int value: 'x'"),
        (["demo", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
    ids=["no-command", "unknown-command", "bad-value", "unknown-option"],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in _one_line(capsys.readouterr().err)


def _failing_demo(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def run_demo(**kwargs: object) -> None:
        raise error

    monkeypatch.setattr("fxns.demo.run_demo", run_demo)


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (
            fxns.DataError("batch 0 (Tensor[2, 5] float32) does not fit\nthe model"),
            2,
            "fxns: error: batch 0 (Tensor[2, 5] float32) does not fit the model",
        ),
        (
            fxns.EngineError("the quantized model's module 'fc' cannot run"),
            2,
            "fxns: error: the quantized model's module 'fc' cannot run",
        ),
        (
            RuntimeError("something\nunexpected"),
            1,
            "fxns: error: RuntimeError: something unexpected (run with -v for the "
            "traceback)",
        ),
        (OSError(28, "No space left on device"), 1, "No space left on device"),
    ],
    ids=["fxns-error", "engine-error", "unexpected", "os-error"],
)
def test_errors_of_a_command_are_one_line_with_a_nonzero_status(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    status: int,
    message: str,
) -> None:
    _failing_demo(monkeypatch, error)
    assert main(["demo"]) == status
    captured = capsys.readouterr()
    assert message in _one_line(captured.err)


def test_verbose_adds_the_traceback_of_an_unexpected_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_demo(monkeypatch, ValueError("boom"))
    assert main(["-v", "demo"]) == 1
    err = capsys.readouterr().err
    assert (
        "Traceback" in err and err.splitlines()[-1] == "fxns: error: ValueError: boom"
    )


def test_an_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_demo(monkeypatch, KeyboardInterrupt())
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "fxns: interrupted\n"
