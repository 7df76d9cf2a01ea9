"""Tracing and the leaf policy."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

import fxns
from fxns.trace import trace


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = DataDependent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc(x))


def test_untraceable_module_is_named_with_the_fix() -> None:
    with pytest.raises(
        fxns.TraceError,
        match=r"module 'gate' \(DataDependent\).*leaf_module_names=\['gate'\]",
    ):
        trace(Outer())


def test_named_leaf_is_one_opaque_op_and_still_compared() -> None:
    model = Outer().eval()
    gm = trace(model, leaf_module_names=["gate"])
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["fc", "gate"]
    m = fxns.match(model, model, leaf_module_names=["gate"])
    assert [p.kind for p in m.pairs] == ["linear", "DataDependent"]
    r = fxns.compare_activations(
        model, model, torch.randn(2, 4), leaf_modules=[DataDependent]
    )
    assert r["gate"].metrics["sqnr"] == float("inf")


def test_graph_modules_are_used_as_they_are() -> None:
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    assert trace(gm) is gm


def test_not_a_module_is_a_model_error() -> None:
    with pytest.raises(
        fxns.ModelError, match=r"float model must be a torch\.nn\.Module, got dict"
    ):
        fxns.match({"weight": torch.ones(1)}, nn.Linear(1, 1))  # type: ignore[arg-type]


def test_tracing_does_not_change_the_model() -> None:
    model = Outer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(fxns.TraceError):
        trace(model)
    trace(model, leaf_modules=[DataDependent])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


def test_fused_float_modules_are_one_op() -> None:
    import copy

    import torch.ao.quantization as tq

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    fused = tq.fuse_modules(copy.deepcopy(model), [["0", "1"]])
    gm = trace(fused)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["0", "1"]
    m = fxns.match(fused, model)
    assert [(p.name, p.kind, p.quant_nodes) for p in m.pairs] == [
        ("0", "conv2d+relu", ("_0", "_1"))
    ]


def test_a_misspelt_leaf_name_is_pointed_out() -> None:
    with pytest.raises(
        fxns.TraceError,
        match=r"leaf_module_names has 'gat' \(did you mean 'gate'\?\), which the "
        r"model has no submodule of\.$",
    ):
        trace(Outer(), leaf_module_names=["gat"])


def test_traced_graph_modules_are_plain_ones_that_script() -> None:
    """The traced models fxns hands out (``Matching``'s graphs) are ordinary
    ``GraphModule``s: torch's lazy subclass would save a tenth of a trace,
    but ``torch.jit.script`` rejects it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    gm = trace(model)
    assert "Lazy" not in "".join(c.__name__ for c in type(gm).__mro__)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(torch.jit.script(gm)(x), model(x))
