"""Embedding and EmbeddingBag, quantized weight-only: weights and outputs.

The quantized embedding computes a float output from int8 (or 4-bit) rows,
so its row reads the weight-only error; a ``quantize`` after it belongs to
its consumer. Integer index inputs reach the shadows unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import (
    QConfig,
    QConfigMapping,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import (
    convert_fx,
    convert_to_reference_fx,
    prepare_fx,
)

import fxns
from fxns.quantize import quiet_torch_ao

from .conftest import unaccounted_nodes
from .reference import Sums, activations


class BagClassifier(nn.Module):
    """Case 13: Embedding → mean → Linear → relu → Linear → softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).mean(1)
        h = F.relu(self.fc1(h))
        return F.softmax(self.fc2(h), dim=-1)


@pytest.mark.parametrize("convert", [convert_fx, convert_to_reference_fx])
def test_case_13_embedding_weight_and_output_and_every_node_accounted(
    convert: object,
) -> None:
    torch.manual_seed(0)
    model = BagClassifier().eval()
    batches = [torch.randint(0, 50, (4, 7)) for _ in range(2)]
    mapping = get_default_qconfig_mapping("x86").set_object_type(
        nn.Embedding, float_qparams_weight_only_qconfig
    )
    with quiet_torch_ao():
        prepared = prepare_fx(copy.deepcopy(model), mapping, (batches[0],))
        for idx in batches:
            prepared(idx)
        quant = convert(prepared)  # type: ignore[operator]

    m = fxns.match(model, quant)
    assert [p.name for p in m.pairs] == ["emb", "mean", "fc1", "fc2", "softmax"]
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []

    weights = fxns.compare_weights(model, quant)
    assert weights.names == ["emb", "fc1", "fc2"]
    q_emb = quant.get_submodule("emb")
    q_weight = q_emb.weight() if callable(q_emb.weight) else q_emb.get_weight()
    sums = Sums()
    sums.add(model.emb.weight, q_weight)
    assert weights["emb"].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)

    for mode in ("shadow", "propagated"):
        report = fxns.compare_activations(model, quant, batches, mode=mode)
        assert report.names == [p.name for p in m.pairs]
        assert all(row.note == "" for row in report.rows), report
        # Weight-only: the output error is the weight's, before any quantize.
        out = Sums()
        with torch.no_grad():
            for idx in batches:
                out.add(model.emb(idx), q_emb(idx))
        assert report["emb"].metrics["sqnr"] == pytest.approx(out.sqnr(), abs=0.01)


class Bags(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 16, mode="sum")
        self.emb = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 4)

    def forward(
        self, idx: torch.Tensor, offsets: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        return self.fc(self.bag(idx, offsets) + self.emb(tokens))


def _bags_quantized(flow: str, bag_qconfig: QConfig) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = Bags().eval()
    example = _bag_batch(0)
    with quiet_torch_ao():
        if flow == "eager":
            quant = copy.deepcopy(model)
            quant.bag.qconfig = bag_qconfig
            quant.emb.qconfig = float_qparams_weight_only_qconfig
            tq.prepare(quant, inplace=True)
            tq.convert(quant, inplace=True)
        else:
            mapping = (
                QConfigMapping()
                .set_object_type(nn.EmbeddingBag, bag_qconfig)
                .set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
            )
            quant = convert_fx(prepare_fx(copy.deepcopy(model), mapping, example))
    return model, quant


def _bag_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 50, (20,), generator=g)
    return idx, torch.tensor([0, 5, 12, 15]), torch.randint(0, 50, (4,), generator=g)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("flow", ["eager", "fx"])
def test_embedding_bag_weights_and_outputs(flow: str, bits: int) -> None:
    qconfig = (
        float_qparams_weight_only_qconfig
        if bits == 8
        else float_qparams_weight_only_qconfig_4bit
    )
    model, quant = _bags_quantized(flow, qconfig)
    batches = [_bag_batch(1), _bag_batch(2)]
    m = fxns.match(model, quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []

    weights = fxns.compare_weights(model, quant)
    assert weights.names == ["bag", "emb", "fc"]
    assert weights["fc"].metrics["sqnr"] == float("inf")  # left in float
    sums = Sums()
    sums.add(model.bag.weight, quant.get_submodule("bag").weight())
    assert weights["bag"].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)

    report = fxns.compare_activations(model, quant, batches, mode="propagated")
    assert report.names == ["bag", "emb", "add", "fc"]
    expected = {name: Sums() for name in report.names}
    for idx, offsets, tokens in batches:
        f_acts = activations(model, idx, offsets, tokens)
        with torch.no_grad():
            q_bag = quant.get_submodule("bag")(idx, offsets)
            q_emb = quant.get_submodule("emb")(tokens)
            q_fc = quant.get_submodule("fc")(q_bag + q_emb)
        for name, value in (
            ("bag", q_bag),
            ("emb", q_emb),
            ("add", q_bag + q_emb),
            ("fc", q_fc),
        ):
            expected[name].add(f_acts[name], value)
    for name in report.names:
        got = report[name].metrics["sqnr"]
        assert got == pytest.approx(expected[name].sqnr(), abs=0.01), name
    # 4-bit rows are coarser than 8-bit ones, and both are measured.
    assert (report["bag"].metrics["sqnr"] > 35) == (bits == 8)

    shadow = fxns.compare_activations(model, quant, batches, mode="shadow")
    assert shadow["bag"].metrics["sqnr"] == pytest.approx(
        expected["bag"].sqnr(), abs=0.01
    )
