"""The graph diff printout: text, markdown and Graphviz.

Printouts are compared against golden files in tests/golden/; run with
FXNS_UPDATE_GOLDEN=1 to rewrite them after an intended change.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import fxns
from fxns.diff import FLOAT_ONLY, FUSED, MATCHED, QUANT_ONLY
from fxns.report import LayerResult, Report

from .conftest import quantize_module, torchvision_quantized

GOLDEN = Path(__file__).parent / "golden"
DOCS = Path(__file__).parents[1] / "docs"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FXNS_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; FXNS_UPDATE_GOLDEN=1 rewrites"


class Small(nn.Module):
    """conv-bn-relu (fused when quantized), an activation, pool, a head."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.act = act
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.act(self.relu(self.bn(self.conv(x)))))
        return self.fc(torch.flatten(y, 1))


@pytest.fixture(scope="module")
def small_diff() -> fxns.GraphDiff:
    # The quantized model has a hardswish where the float one has a sigmoid.
    float_model = Small(nn.Sigmoid()).eval()
    quant_model = quantize_module(Small(nn.Hardswish()), torch.randn(1, 3, 8, 8))
    return fxns.diff(float_model, quant_model)


def test_rows_in_execution_order_with_fusions_and_leftovers(
    small_diff: fxns.GraphDiff,
) -> None:
    rows = [(r.status, r.name) for r in small_diff.rows]
    assert rows == [
        (FUSED, "conv"),
        # A quantized-only op follows the quantized op that runs before it.
        (QUANT_ONLY, "act"),
        (FLOAT_ONLY, "act"),
        (MATCHED, "pool"),
        (MATCHED, "flatten"),
        (MATCHED, "fc"),
    ]
    fused = small_diff.rows[0]
    assert [n.kind for n in fused.float_side] == ["conv2d", "batch_norm", "relu"]
    assert [n.kind for n in fused.quant_side] == ["conv2d+relu"]
    assert small_diff.rows[1].reason == "no 'hardswish' op on the other side"
    assert small_diff.summary() == "matched 3, fused 1, float-only 1, quantized-only 1"


def test_printout(small_diff: fxns.GraphDiff) -> None:
    check_golden("diff_small.txt", str(small_diff))


def test_markdown(small_diff: fxns.GraphDiff) -> None:
    check_golden("diff_small.md", small_diff.to_markdown())


def test_dot_colours_unmatched_and_low_sqnr_nodes(small_diff: fxns.GraphDiff) -> None:
    plain = small_diff.to_dot()
    assert '"f:act" [label="act\\nsigmoid\\nfloat-only", fillcolor="#f6b26b"];' in plain
    assert '"q:act" [label="act\\nhardswish\\nquantized-only", fillcolor=' in plain
    assert '"f:relu" -> "q:conv" [style=dashed' in plain
    assert "SQNR" not in plain

    report = Report(
        rows=[
            LayerResult(
                "conv", "conv2d", ("conv", "bn", "relu"), ("conv",), {"sqnr": 9.5}
            ),
            LayerResult("pool", "max_pool2d", ("pool",), ("pool",), {"sqnr": 35.0}),
        ]
    )
    coloured = small_diff.to_dot(report, low_sqnr=20.0)
    assert (
        '"f:bn" [label="bn\\nbatch_norm\\nSQNR 9.5 dB", fillcolor="#e06666"];'
        in coloured
    )
    assert '"q:conv" [label="conv\\nconv2d+relu\\nSQNR 9.5 dB", fillcolor=' in coloured
    assert '"q:pool" [label="pool\\nmax_pool2d"];' in coloured
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg"], input=coloured, text=True, check=True)


def test_a_model_against_its_copy_is_all_matched() -> None:
    model = Small(nn.Sigmoid()).eval()
    d = fxns.diff(model, copy.deepcopy(model))
    assert {r.status for r in d.rows} == {MATCHED}
    assert "without a partner" not in str(d)


def test_long_names_are_abbreviated_to_fit() -> None:
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features_with_a_long_name = nn.Sequential(
                nn.Sequential(nn.Linear(4, 4), nn.AdaptiveAvgPool1d(4))
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features_with_a_long_name(x)

    model = Deep().eval()
    text = fxns.diff(model, copy.deepcopy(model)).text(width=40)
    table = text.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) <= 40
    assert table[2].split() == ["f.0.0", "linear", "───", "f.0.0", "linear"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
def test_torchvision_printouts_fit_80_columns_and_docs_are_current(name: str) -> None:
    q = torchvision_quantized(name)
    d = fxns.diff(q.float_model, q.quant_model)
    text = str(d)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert d.count(FLOAT_ONLY) == d.count(QUANT_ONLY) == 0
    assert d.count(MATCHED) + d.count(FUSED) == len(d.matching.pairs)

    # docs/ holds the example script's output: the command, a blank line,
    # the printout. The weights differ; the printout does not depend on them.
    example = (DOCS / f"diff-{name}.txt").read_text()
    command, blank, printout = example.split("\n", 2)
    assert command == f"$ python examples/diff_torchvision.py {name}"
    assert blank == ""
    assert printout == text, "regenerate with the command at the top of the file"
