"""Parts fx cannot trace: named leaves, or the GraphModule prepare_fx made.

The untraceable part is one opaque operation; its output is compared in a
row of its own, its input in the row of the layer that produces it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fxns
from fxns.quantize import quiet_torch_ao
from fxns.trace import leaves_of

from .conftest import unaccounted_nodes
from .reference import Sums


class Gate(nn.Module):
    """Control flow on the data: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return torch.relu(self.fc(x))
        return self.fc(x) * 0.5


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.gate = Gate()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.gate(self.fc1(x)))


CONFIGS = {
    "names": PrepareCustomConfig().set_non_traceable_module_names(["gate"]),
    "classes": PrepareCustomConfig().set_non_traceable_module_classes([Gate]),
}


def _quantized(
    config: PrepareCustomConfig,
) -> tuple[Net, fx.GraphModule, fx.GraphModule]:
    torch.manual_seed(0)
    model = Net().eval()
    with quiet_torch_ao():
        prepared = prepare_fx(
            copy.deepcopy(model),
            get_default_qconfig_mapping("x86"),
            (torch.randn(4, 8),),
            prepare_custom_config=config,
        )
        for _ in range(3):
            prepared(torch.randn(4, 8))
        quant = convert_fx(copy.deepcopy(prepared))
    return model, prepared, quant


def test_untraceable_float_model_says_what_to_name() -> None:
    model, _, quant = _quantized(CONFIGS["names"])
    with pytest.raises(fxns.TraceError, match=r"leaf_module_names=\['gate'\]"):
        fxns.compare_activations(model, quant, torch.randn(4, 8))


@pytest.mark.parametrize("how", sorted(CONFIGS))
def test_the_leaves_prepare_fx_was_given_make_one_opaque_op(how: str) -> None:
    model, _, quant = _quantized(CONFIGS[how])
    classes, names = leaves_of(CONFIGS[how])
    batches = [torch.randn(4, 8) for _ in range(2)]

    m = fxns.match(model, quant, leaf_modules=classes, leaf_module_names=names)
    assert [(p.name, p.kind) for p in m.pairs] == [
        ("fc1", "linear"),
        ("gate", "Gate"),
        ("fc2", "linear"),
    ]
    assert unaccounted_nodes(m) == []

    propagated = fxns.compare_activations(
        model,
        quant,
        batches,
        mode="propagated",
        leaf_modules=classes,
        leaf_module_names=names,
    )
    gate_in, gate_out = Sums(), Sums()
    with torch.no_grad():
        for x in batches:
            f_in = model.fc1(x)
            q_in = quant.fc1(
                torch.quantize_per_tensor(
                    x,
                    quant.fc1_input_scale_0,
                    quant.fc1_input_zero_point_0,
                    torch.quint8,
                )
            ).dequantize()
            gate_in.add(f_in, q_in)
            gate_out.add(model.gate(f_in), quant.gate(q_in))
    # Its input is fc1's output; its output is its own row.
    assert propagated["fc1"].metrics["sqnr"] == pytest.approx(gate_in.sqnr(), abs=0.01)
    assert propagated["gate"].metrics["sqnr"] == pytest.approx(
        gate_out.sqnr(), abs=0.01
    )
    # Left in float on both sides, it adds no error of its own.
    shadow = fxns.compare_activations(
        model, quant, batches, leaf_modules=classes, leaf_module_names=names
    )
    assert shadow["gate"].metrics["sqnr"] == float("inf")


def test_the_graph_module_prepare_fx_made_is_reused() -> None:
    model, prepared, quant = _quantized(CONFIGS["names"])
    batches = [torch.randn(4, 8) for _ in range(2)]
    m = fxns.match(prepared, quant)
    assert m.float_module is prepared  # not traced again
    assert [p.name for p in m.pairs] == ["fc1", "gate", "fc2"]

    mine = fxns.compare_activations(prepared, quant, batches, mode="propagated")
    theirs = fxns.compare_activations(
        model, quant, batches, mode="propagated", leaf_module_names=["gate"]
    )
    for a, b in zip(mine.rows, theirs.rows, strict=True):
        assert a.name == b.name
        assert a.metrics["sqnr"] == pytest.approx(b.metrics["sqnr"], abs=0.01)


def test_leaves_of_reads_the_dict_form_too() -> None:
    config = {"non_traceable_module_name": ["gate"], "non_traceable_module_class": []}
    assert leaves_of(config) == ((), ("gate",))
    with pytest.raises(fxns.ModelError, match="PrepareCustomConfig"):
        leaves_of(["gate"])
