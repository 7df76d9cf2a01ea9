"""The end-to-end comparison on real torchvision architectures (FX-quantized).

Every number is checked against an independent computation (reference.py):
activations read from the unmodified models with torch.fx.Interpreter, then
the metric formulas in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

import fxns
from fxns.ops import classify_function, classify_module

from .conftest import Quantized, snapshot
from .reference import Sums, activations

# Quantized ops that must always be matched: the layers users ask about.
MUST_MATCH = {"conv1d", "conv2d", "conv3d", "linear", "add", "mul", "cat", "hardswish"}


def _kinds_of_quant_node(q: Quantized, name: str) -> set[str]:
    node = next(n for n in q.quant_model.graph.nodes if n.name == name)
    if node.op == "call_module":
        return set(classify_module(q.quant_model.get_submodule(node.target)).parts)
    if node.op == "call_function":
        return set(classify_function(node.target, node.args).parts)
    if node.op == "call_method":
        return {node.target}
    return set()


def test_every_quantized_layer_is_matched(torchvision_model: Quantized) -> None:
    q = torchvision_model
    m = fxns.match(q.float_model, q.quant_model)
    paired = {n for p in m.pairs for n in p.quant_nodes}
    must = [
        n.name
        for n in q.quant_model.graph.nodes
        if n.op in ("call_module", "call_function")
        and _kinds_of_quant_node(q, n.name) & MUST_MATCH
    ]
    assert must, "the model has no quantized conv/linear?"
    assert [n for n in must if n not in paired] == []
    assert m.unmatched_quant == ()
    assert m.unmatched_float == ()
    # Pairs come in the float model's execution order.
    order = {n.name: i for i, n in enumerate(m.float_module.graph.nodes)}
    firsts = [order[p.float_nodes[0]] for p in m.pairs]
    assert firsts == sorted(firsts)


def test_propagated_sqnr_matches_independent_computation(
    torchvision_model: Quantized,
) -> None:
    q = torchvision_model
    report = fxns.compare_activations(
        q.float_model, q.quant_model, q.batches, mode="propagated"
    )

    sums: dict[str, Sums] = {row.name: Sums() for row in report.rows}
    outputs = Sums()
    for batch in q.batches:
        f_acts = activations(q.float_model, batch)
        q_acts = activations(q.quant_model, batch)
        for row in report.rows:
            sums[row.name].add(f_acts[row.float_nodes[-1]], q_acts[row.quant_nodes[-1]])
        with torch.no_grad():
            outputs.add(q.float_model(batch), q.quant_model(batch))

    assert len(report.rows) > 20
    for row in report.rows:
        expected = sums[row.name].sqnr()
        got = row.metrics["sqnr"]
        if math.isinf(expected):
            assert got == expected, row.name
        else:
            assert got == pytest.approx(expected, abs=0.01), row.name
        assert row.metrics["mse"] == pytest.approx(
            sums[row.name].mse(), rel=1e-3, abs=1e-12
        )
        assert row.metrics["cosine"] == pytest.approx(sums[row.name].cosine(), abs=1e-5)
    # The last row is the model output.
    assert report.rows[-1].metrics["sqnr"] == pytest.approx(outputs.sqnr(), abs=0.01)


def test_shadow_gives_a_finite_row_for_every_pair(torchvision_model: Quantized) -> None:
    q = torchvision_model
    report = fxns.compare_activations(
        q.float_model, q.quant_model, q.batches, mode="shadow"
    )
    m = fxns.match(q.float_model, q.quant_model)
    assert [r.name for r in report.rows] == [p.name for p in m.pairs]
    for row in report.rows:
        assert row.note == "", (row.name, row.note)
        sqnr = row.metrics["sqnr"]
        assert not math.isnan(sqnr), row.name
        # +inf is a real answer (pooling, flatten: exact in int8); -inf is not.
        assert sqnr > 0, row.name
    kinds = {r.kind.split("+")[0] for r in report.rows}
    assert {"add", "conv2d", "linear"} <= kinds


def test_shadow_of_a_layer_is_its_own_error() -> None:
    """Shadow SQNR of a conv equals float conv on the dequantized quantized input."""
    from .conftest import torchvision_quantized

    q = torchvision_quantized("resnet18")
    report = fxns.compare_activations(
        q.float_model, q.quant_model, q.batches[:1], mode="shadow"
    )
    row = report["layer2.0.conv1"]
    q_acts = activations(q.quant_model, q.batches[0])
    node = next(n for n in q.quant_model.graph.nodes if n.name == row.quant_nodes[0])
    quant_input = q_acts[node.args[0].name].dequantize()
    fused = q.float_model.layer2[0]
    with torch.no_grad():
        expected = fused.relu(fused.bn1(fused.conv1(quant_input)))
    sums = Sums()
    sums.add(expected, q_acts[row.quant_nodes[-1]])
    assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)


def test_models_are_unchanged_by_every_public_call(
    torchvision_model: Quantized,
) -> None:
    q = torchvision_model
    check_float, check_quant = snapshot(q.float_model), snapshot(q.quant_model)
    batches = q.batches[:1]
    fxns.match(q.float_model, q.quant_model)
    fxns.compare_weights(q.float_model, q.quant_model)
    fxns.compare_activations(q.float_model, q.quant_model, batches, mode="shadow")
    fxns.compare_activations(q.float_model, q.quant_model, batches, mode="propagated")
    f_log, q_log = fxns.add_loggers(q.float_model, q.quant_model)
    f_log(batches[0])
    q_log(batches[0])
    fxns.collect(f_log, q_log)
    s = fxns.add_shadows(q.float_model, q.quant_model)
    s(batches[0])
    fxns.collect(s)
    check_float()
    check_quant()


def test_weights_compare_bn_folded_conv_against_folded_float_weight() -> None:
    from .conftest import torchvision_quantized

    q = torchvision_quantized("resnet18")
    report = fxns.compare_weights(q.float_model, q.quant_model)
    names = [r.name for r in report.rows]
    assert names[0] == "conv1" and names[-1] == "fc"
    assert len(names) == 21  # 20 convs and the classifier

    # Independent: fold by hand, compare with the dequantized int8 weight.
    conv, bn = q.float_model.conv1, q.float_model.bn1
    folded = conv.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(
        -1, 1, 1, 1
    )
    qweight = q.quant_model.conv1.weight().dequantize()
    sums = Sums()
    sums.add(folded, qweight)
    assert report["conv1"].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
    assert report["conv1"].metrics["sqnr"] > 30
    # Against the unfolded weight the same layer reads as garbage.
    unfolded = Sums()
    unfolded.add(conv.weight, qweight)
    assert unfolded.sqnr() < report["conv1"].metrics["sqnr"] - 15
    for row in report.rows:
        assert row.metrics["sqnr"] > 30, row.name
