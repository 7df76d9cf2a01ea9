"""The matcher: structure first, names only to break ties, never order."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import fxns

from .conftest import quantize_module


class TwoConvs(nn.Module):
    def __init__(self, swapped: bool = False) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 3, padding=1)
        self.swapped = swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swapped:
            return self.conv_b(x) + self.conv_a(x)
        return self.conv_a(x) + self.conv_b(x)


def test_operand_order_of_add_does_not_change_the_pairs() -> None:
    float_model = TwoConvs().eval()
    quant_source = copy.deepcopy(float_model)
    quant_source.swapped = True
    quant = quantize_module(quant_source, torch.randn(1, 3, 8, 8))

    m = fxns.match(float_model, quant)
    by_name = {p.name: p for p in m.pairs}
    assert by_name["conv_a"].quant_nodes == ("conv_a",)
    assert by_name["conv_b"].quant_nodes == ("conv_b",)
    assert m.unmatched_float == m.unmatched_quant == ()


class Branches(nn.Module):
    """Two branches that differ only in which module they use."""

    def __init__(self, order: str = "ab") -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "ab":
            ya = self.a(x)
            yb = self.b(x)
        else:
            yb = self.b(x)
            ya = self.a(x)
        return ya * yb


def test_written_order_of_branches_does_not_change_the_pairs() -> None:
    float_model = Branches("ab").eval()
    source = copy.deepcopy(float_model)
    source.order = "ba"
    quant = quantize_module(source, torch.randn(1, 3, 8, 8))
    m = fxns.match(float_model, quant)
    for pair in m.pairs:
        if pair.kind.startswith("conv2d"):
            assert (
                pair.quant_nodes[0].split("_")[0] == pair.float_nodes[0].split("_")[0]
            )
    kinds = sorted(p.kind for p in m.pairs)
    assert kinds == ["conv2d+relu", "conv2d+relu", "mul"]


def test_fusion_pairs_unfused_float_with_fused_quantized() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    ).eval()
    quant = quantize_module(model, torch.randn(1, 3, 8, 8))
    m = fxns.match(model, quant)
    first = m.pairs[0]
    assert first.float_nodes == ("_0", "_1", "_2")
    assert first.kind == "conv2d+batch_norm+relu"
    assert first.quant_ops == ("nniq.ConvReLU2d",)
    assert first.name == "0"
    assert [p.kind for p in m.pairs] == ["conv2d+batch_norm+relu", "flatten", "linear"]


def test_functional_and_module_forms_match() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(nn.functional.linear(x, self.w))

    float_model = Functional().eval()
    quant = quantize_module(float_model, torch.randn(2, 4))
    m = fxns.match(float_model, quant)
    # FX quantizes the functional linear and leaves torch.relu in float.
    assert [p.kind for p in m.pairs] == ["linear", "relu"]
    assert m.pairs[0].float_ops == ("F.linear",)
    assert m.pairs[0].quant_ops == ("quantized::linear",)


def test_unrelated_models_give_a_mostly_unmatched_result_and_one_warning() -> None:
    a = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 4, 3), nn.Tanh()
    ).eval()
    b = nn.Sequential(
        nn.Linear(3, 5), nn.ReLU6(), nn.Linear(5, 2), nn.Softmax(dim=-1)
    ).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = fxns.match(a, b)
    relevant = [w for w in caught if "could be matched" in str(w.message)]
    assert len(relevant) == 1
    assert m.pairs == []
    assert len(m.unmatched_float) == 4
    assert len(m.unmatched_quant) == 4
    assert "no 'conv2d' op" in m.float_reasons["_0"]


def test_an_op_left_out_still_matches_the_rest() -> None:
    full = nn.Sequential(
        nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)
    )
    cut = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    cut.load_state_dict(
        {k.replace("4.", "3."): v for k, v in full.state_dict().items()}
    )
    m = fxns.match(full.eval(), cut.eval())
    assert m.unmatched_float == ("_3",)
    assert m.unmatched_quant == ()
    assert [p.kind for p in m.pairs] == ["linear", "relu", "linear", "linear"]


def test_matching_a_model_with_its_copy_is_the_identity() -> None:
    model = Branches().eval()
    m = fxns.match(model, copy.deepcopy(model))
    for pair in m.pairs:
        assert pair.float_nodes == pair.quant_nodes


def test_pairs_are_indexable_by_name() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    m = fxns.match(model, copy.deepcopy(model))
    assert m["0"].kind == "linear"
    with pytest.raises(KeyError, match="no pair named 'nope'"):
        m["nope"]


def test_a_module_called_twice_gets_one_row_per_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.Sigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(self.act(x)))

    model = Twice().eval()
    m = fxns.match(model, copy.deepcopy(model))
    assert [p.name for p in m.pairs] == ["act", "fc", "act:1"]
