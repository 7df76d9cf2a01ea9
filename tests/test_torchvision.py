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


# --- the pairs are the right layers, checked without fxns's own tables ---------

# What convert_fx makes of the layers that must be matched, named without
# fxns.ops: quantized modules by class, quantized functions by target.
_QUANT_MODULES = {
    "Conv1d": "conv",
    "Conv2d": "conv",
    "Conv3d": "conv",
    "ConvReLU1d": "conv",
    "ConvReLU2d": "conv",
    "ConvReLU3d": "conv",
    "Linear": "linear",
    "LinearReLU": "linear",
    "Hardswish": "hardswish",
}
_QUANT_FUNCTIONS = {
    torch.ops.quantized.add: "add",
    torch.ops.quantized.add_relu: "add",
    torch.ops.quantized.mul: "mul",
    torch.ops.quantized.mul_relu: "mul",
    torch.ops.quantized.cat: "cat",
    torch.cat: "cat",
    torch.ops.quantized.hardswish: "hardswish",
}
# How many of each the float models have (torchvision's definitions).
_FLOAT_COUNTS = {
    "resnet18": {"conv": 20, "linear": 1, "add": 8},
    "mobilenet_v2": {"conv": 52, "linear": 1, "add": 10},
    "mobilenet_v3_large": {
        "conv": 62,
        "linear": 2,
        "add": 10,
        "mul": 8,
        "hardswish": 21,
    },
}


def _must_match(q: Quantized) -> dict[str, str]:
    """Quantized fx node name → what it is, for the layers users ask about."""
    found = {}
    for node in q.quant_model.graph.nodes:
        what = None
        if node.op == "call_module":
            module = q.quant_model.get_submodule(node.target)
            if type(module).__module__.startswith("torch.ao.nn.") and (
                ".quantized" in type(module).__module__
            ):
                what = _QUANT_MODULES.get(type(module).__name__)
        elif node.op == "call_function":
            what = _QUANT_FUNCTIONS.get(node.target)
        if what is not None:
            found[node.name] = what
    return found


@pytest.mark.parametrize("name", sorted(_FLOAT_COUNTS))
def test_every_quantized_layer_pairs_with_its_own_float_layer(name: str) -> None:
    from collections import Counter

    from .conftest import torchvision_quantized

    q = torchvision_quantized(name)
    must = _must_match(q)
    # Independent of fxns: the quantized graph has one of each float layer.
    assert dict(Counter(must.values())) == _FLOAT_COUNTS[name]

    m = fxns.match(q.float_model, q.quant_model)
    by_quant = {n: p for p in m.pairs for n in p.quant_nodes}
    assert sorted(n for n in must if n not in by_quant) == []

    float_nodes = {n.name: n for n in m.float_module.graph.nodes}
    quant_nodes = {n.name: n for n in q.quant_model.graph.nodes}
    order_f = {n: i for i, n in enumerate(float_nodes)}
    order_q = {n: i for i, n in enumerate(quant_nodes)}
    # Modules keep their paths through convert_fx: a quantized conv, linear
    # or hardswish module pairs with the float module of the same path.
    for qname in must:
        pair = by_quant[qname]
        node = quant_nodes[qname]
        if node.op == "call_module":
            targets = {
                float_nodes[f].target
                for f in pair.float_nodes
                if float_nodes[f].op == "call_module"
            }
            assert node.target in targets, (qname, pair)
    # convert_fx keeps the order of the graph: the k-th float add (mul, cat)
    # is the k-th quantized one, whatever the pairs' names.
    for what in ("add", "mul", "cat"):
        quant_ops = sorted(
            (n for n, w in must.items() if w == what), key=order_q.__getitem__
        )
        pairs = [by_quant[n] for n in quant_ops]
        assert all(p.kind.split("+")[0] == what for p in pairs), what
        float_ops = [p.float_nodes[0] for p in pairs]
        assert float_ops == sorted(float_ops, key=order_f.__getitem__), what
        assert len(set(float_ops)) == len(quant_ops), what


def _quant_inputs(q_acts: dict, node: torch.fx.Node) -> list[torch.Tensor]:
    args = node.args[0] if isinstance(node.args[0], list | tuple) else node.args[:2]
    return [q_acts[a.name].dequantize() for a in args]


@pytest.mark.parametrize(
    ("name", "kind"), [("resnet18", "add+relu"), ("mobilenet_v3_large", "mul")]
)
def test_shadow_of_a_binary_op_is_the_float_op_on_its_partners_inputs(
    name: str, kind: str
) -> None:
    """Every add (mul) row of shadow mode is float add (mul) of the two
    dequantized tensors its quantized partner read, computed by hand."""
    from .conftest import torchvision_quantized

    q = torchvision_quantized(name)
    batch = q.batches[:1]
    report = fxns.compare_activations(
        q.float_model, q.quant_model, batch, mode="shadow"
    )
    rows = [r for r in report.rows if r.kind == kind]
    assert len(rows) == _FLOAT_COUNTS[name][kind.split("+")[0]]
    q_acts = activations(q.quant_model, batch[0])
    nodes = {n.name: n for n in q.quant_model.graph.nodes}
    for row in rows:
        (qname,) = row.quant_nodes
        a, b = _quant_inputs(q_acts, nodes[qname])
        expected = torch.relu(a + b) if kind == "add+relu" else a * b
        sums = Sums()
        sums.add(expected, q_acts[qname])
        assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01), row.name


class _CatNet(torch.nn.Module):
    """The three models have no cat: two convs concatenated, then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 4, 1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_shadow_of_cat_is_float_cat_of_its_partners_inputs() -> None:
    from .conftest import make_batches, quantize_module

    torch.manual_seed(0)
    model = _CatNet().eval()
    batches = make_batches(2, (2, 3, 16, 16))
    quant = quantize_module(model, batches[0])
    report = fxns.compare_activations(model, quant, batches, mode="shadow")
    (row,) = [r for r in report.rows if r.kind == "cat"]
    nodes = {n.name: n for n in quant.graph.nodes}
    (qname,) = row.quant_nodes
    sums = Sums()
    for batch in batches:
        q_acts = activations(quant, batch)
        expected = torch.cat(_quant_inputs(q_acts, nodes[qname]), 1)
        sums.add(expected, q_acts[qname])
    assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
