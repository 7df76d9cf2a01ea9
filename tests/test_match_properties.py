"""The matcher's properties on generated models (hypothesis).

Models are random DAGs of conv, linear, relu, add, mul, cat, pooling and
reshape (tests/generated.py), FX-quantized. The ground truth for "which op is
which" is the source line each fx node was traced from.
"""

from __future__ import annotations

import copy
import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx

import fxns

from .conftest import quantize_module
from .generated import (
    SHAPE,
    Spec,
    build,
    changed,
    in_written_order,
    op_of,
    specs,
    trace_with_lines,
    writings,
)

# Each example quantizes one or two models (a fraction of a second each);
# FXNS_EXAMPLES=500 searches harder.
FEW = settings(
    max_examples=int(os.environ.get("FXNS_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Parts that a quantization flow folds away.
FOLDED = {"batch_norm"}


def related(pair: fxns.Pair) -> bool:
    """The same operation, allowing for folded parts and noted partial matches."""
    a = [p for p in pair.kind.split("+") if p not in FOLDED]
    b = [p for p in pair.quant_kind.split("+") if p not in FOLDED]
    if a == b:
        return True
    # A fusion matched in part (relu ↔ the relu of add_relu) says so.
    return pair.note.startswith("partly matched") and bool(set(a) & set(b))


def quantize(model: torch.nn.Module) -> fx.GraphModule:
    return quantize_module(model, torch.randn(SHAPE))


def pairs_by_op(
    m: fxns.Matching, float_ops: dict[str, int], quant_ops: dict[str, int]
) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The pairs, each side named by the spec ops its nodes compute."""
    return {
        (
            tuple(sorted({float_ops[n] for n in p.float_nodes})),
            tuple(sorted({quant_ops[n] for n in p.quant_nodes})),
        )
        for p in m.pairs
    }


@FEW
@given(specs(distinct=False))
def test_matching_a_model_with_its_copy_is_the_identity(spec: Spec) -> None:
    # Repeated ops make identical branches: a copy must still find itself.
    model, _ = build(spec, in_written_order(spec))
    for m in (
        fxns.match(model, copy.deepcopy(model)),
        fxns.match(quantize(model), copy.deepcopy(quantize(model))),
    ):
        assert m.unmatched_float == m.unmatched_quant == ()
        for pair in m.pairs:
            assert pair.float_nodes == pair.quant_nodes
            assert pair.kind == pair.quant_kind


@FEW
@given(st.data())
def test_written_order_and_operand_order_do_not_change_the_pairs(
    data: st.DataObject,
) -> None:
    spec = data.draw(specs())
    written = data.draw(writings(spec))
    model_a, lines_a = build(spec, in_written_order(spec))
    model_b, lines_b = build(spec, written)
    float_gm = trace_with_lines(model_a)
    float_ops = op_of(float_gm, lines_a)

    # Float against float: every op finds itself.
    other = trace_with_lines(model_b)
    m = fxns.match(float_gm, other)
    assert m.unmatched_float == m.unmatched_quant == ()
    for f_ops, q_ops in pairs_by_op(m, float_ops, op_of(other, lines_b)):
        assert f_ops == q_ops

    # Float against each quantized writing: the same pairs.
    quant_a, quant_b = quantize(model_a), quantize(model_b)
    m_a = fxns.match(float_gm, quant_a)
    m_b = fxns.match(float_gm, quant_b)
    assert pairs_by_op(m_a, float_ops, op_of(quant_a, lines_a)) == pairs_by_op(
        m_b, float_ops, op_of(quant_b, lines_b)
    )
    assert m_a.unmatched_float == m_b.unmatched_float
    for pair in m_a.pairs + m_b.pairs:
        assert related(pair), pair


@FEW
@given(st.data())
def test_a_changed_or_removed_op_leaves_every_layer_with_its_namesake(
    data: st.DataObject,
) -> None:
    spec = data.draw(specs())
    other_spec = data.draw(changed(spec))
    model, _ = build(spec, in_written_order(spec))
    other, _ = build(other_spec, in_written_order(other_spec))
    float_gm = fx.symbolic_trace(model)
    for target in (other, quantize(other)):
        m = fxns.match(float_gm, target)
        fg, qg = m.float_graph, m.quant_graph
        assert fg is not None and qg is not None
        for f, q in m.op_pairs.items():
            assert fg.nodes[f].label == qg.nodes[q].label
        for pair in m.pairs:
            assert related(pair), pair

        # A layer both models call, with the same kind, pairs with itself.
        layers_q = {
            (qg.nodes[k].label, qg.nodes[k].module)
            for k in qg.nodes
            if qg.nodes[k].module and qg.nodes[k].order[1] == 0
        }
        for key, node in fg.nodes.items():
            if node.module and (node.label, node.module) in layers_q:
                assert key in m.op_pairs, node
                assert qg.nodes[m.op_pairs[key]].module == node.module, node
