"""Progress bars on a terminal only, and one summary line at INFO."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from torch import nn

import fxns
from fxns.progress import FEW_STEPS, count_batches, progress

from .conftest import quantize_module


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_only_on_a_terminal_and_only_for_more_than_a_few_steps() -> None:
    tty, pipe = Terminal(), io.StringIO()
    assert list(progress(range(10), desc="work", file=tty)) == list(range(10))
    assert "work:" in tty.getvalue() and "/10 " in tty.getvalue()

    assert list(progress(range(10), desc="work", file=pipe)) == list(range(10))
    assert pipe.getvalue() == ""

    few = Terminal()
    list(progress(range(FEW_STEPS), desc="work", file=few))
    assert few.getvalue() == ""


def test_count_batches() -> None:
    x = torch.zeros(4, 3)
    assert count_batches(x) == 1  # one tensor is one batch, whatever its length
    assert count_batches((x, x)) == 1
    assert count_batches([x, x, x]) == 3
    assert count_batches(b for b in [x]) is None


def _small() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()).eval()
    return model, quantize_module(model, torch.randn(1, 3, 6, 6))


def test_comparisons_show_a_bar_on_a_terminal_and_stay_quiet_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model, quant = _small()
    many = [torch.randn(1, 3, 6, 6) for _ in range(FEW_STEPS + 2)]

    fxns.compare_activations(model, quant, many)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""

    tty = Terminal()
    monkeypatch.setattr("sys.stderr", tty)
    fxns.compare_activations(model, quant, many[:FEW_STEPS])
    assert tty.getvalue() == ""
    fxns.compare_activations(model, quant, many)
    assert "fxns: " in tty.getvalue() and f"/{len(many)} " in tty.getvalue()


def test_one_summary_line_at_info(caplog: pytest.LogCaptureFixture) -> None:
    model, quant = _small()
    with caplog.at_level(logging.INFO, logger="fxns"):
        report = fxns.compare_activations(model, quant, torch.randn(1, 3, 6, 6))
    lines = [r.getMessage() for r in caplog.records if r.name == "fxns.compare"]
    assert lines == [report.summary()]
    assert lines[0].startswith(
        "fxns shadow comparison: 2 layers, 1 batch; lowest SQNR:"
    )
