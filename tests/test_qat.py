"""QAT (``prepare_qat_fx`` → ``convert_fx``, conv+bn fused during training) and
prepared models (observers or fake-quants in the graph) compared with float.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic.qat as nniqat
import torch.nn.functional as F
from torch import fx, nn
from torch.ao.quantization import (
    disable_observer,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

import fxns
from fxns.quantize import quiet_torch_ao

from .conftest import _randomize_batch_norms, snapshot, unaccounted_nodes
from .reference import Sums, activations


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.conv2(x) + x
        return self.fc(x.mean((2, 3)))


def _batches(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 8, 8, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def qat() -> tuple[nn.Module, fx.GraphModule, fx.GraphModule]:
    """The float model, its QAT-prepared twin after a few training steps (batch
    norm statistics frozen, so both share them) and the converted model."""
    torch.manual_seed(0)
    model = Net().eval()
    _randomize_batch_norms(model)
    with quiet_torch_ao():
        prepared = prepare_qat_fx(
            copy.deepcopy(model).train(),
            get_default_qat_qconfig_mapping("x86"),
            (torch.randn(2, 3, 8, 8),),
        )
        prepared.apply(nniqat.freeze_bn_stats)
        with torch.no_grad():
            for x in _batches(4, seed=1):
                prepared(x)
        prepared.eval()
        converted = convert_fx(copy.deepcopy(prepared))
    return model, prepared, converted


def test_qat_prepared_model_fuses_conv_bn_during_training(qat: tuple) -> None:
    _, prepared, _ = qat
    assert isinstance(prepared.conv, nniqat.ConvBnReLU2d)


def test_fake_quant_model_is_compared_after_each_fake_quant(qat: tuple) -> None:
    model, prepared, _ = qat
    check = snapshot(prepared)
    batches = _batches(2, seed=2)
    m = fxns.match(model, prepared)
    assert [(p.name, p.kind) for p in m.pairs] == [
        ("conv", "conv2d+batch_norm+relu"),
        ("conv2", "conv2d"),
        ("add", "add"),
        ("mean", "mean"),
        ("fc", "linear"),
    ]
    assert unaccounted_nodes(m) == []
    report = fxns.compare_activations(model, prepared, batches, mode="propagated")
    shadow = fxns.compare_activations(model, prepared, batches, mode="shadow")

    # Independent: the value after the fake-quant that follows each op, read
    # from a copy whose observers are off (a run must not move the scales).
    frozen = copy.deepcopy(prepared)
    frozen.apply(disable_observer)
    nodes = {n.name: n for n in frozen.graph.nodes}
    sums = {row.name: Sums() for row in report.rows}
    for x in batches:
        f_acts = activations(model, x)
        q_acts = activations(frozen, x)
        for row in report.rows:
            read = nodes[row.quant_nodes[-1]]
            fake_quants = [u for u in read.users if u.op == "call_module"]
            if fake_quants and "activation_post_process" in str(fake_quants[0].target):
                read = fake_quants[0]
            sums[row.name].add(f_acts[row.float_nodes[-1]], q_acts[read.name])
    for row in report.rows:
        assert row.metrics["sqnr"] == pytest.approx(sums[row.name].sqnr(), abs=0.01)
        assert row.metrics["sqnr"] < 60, row.name  # the fake-quant error is seen
    # Each layer's own fake-quant error, also for ops without weights.
    for row in shadow.rows:
        assert row.note == "" and 15 < row.metrics["sqnr"] < 60, row.name
    check()


def test_qat_converted_model_against_the_float_model(qat: tuple) -> None:
    model, _, converted = qat
    batches = _batches(2, seed=3)
    m = fxns.match(model, converted)
    assert m["conv"].quant_ops == ("nniq.ConvReLU2d",)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []
    report = fxns.compare_activations(model, converted, batches, mode="propagated")
    sums = {row.name: Sums() for row in report.rows}
    for x in batches:
        f_acts = activations(model, x)
        q_acts = activations(converted, x)
        for row in report.rows:
            sums[row.name].add(f_acts[row.float_nodes[-1]], q_acts[row.quant_nodes[-1]])
    for row in report.rows:
        assert row.metrics["sqnr"] == pytest.approx(sums[row.name].sqnr(), abs=0.01)

    # The weight trained with batch norm folded in, against the folded float one.
    weights = fxns.compare_weights(model, converted)
    bn = model.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = model.conv.weight * scale.reshape(-1, 1, 1, 1)
    expected = Sums()
    expected.add(folded, converted.conv.weight().dequantize())
    assert weights["conv"].note == "float weight with batch_norm folded in"
    assert weights["conv"].metrics["sqnr"] == pytest.approx(expected.sqnr(), abs=0.01)
    assert weights["conv"].metrics["sqnr"] > 35


def test_observed_model_reads_as_its_float_twin() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    batches = _batches(2, seed=4)
    with quiet_torch_ao():
        prepared = prepare_fx(
            copy.deepcopy(model), get_default_qconfig_mapping("x86"), (batches[0],)
        )
        prepared(batches[0])
    check = snapshot(prepared)
    report = fxns.compare_activations(model, prepared, batches, mode="shadow")
    # Observers do not change numbers: only the conv+bn folding shows.
    assert all(row.metrics["sqnr"] > 100 for row in report.rows), report
    check()  # the observers recorded nothing
