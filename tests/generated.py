"""Random traceable models for the matcher's property tests.

A :class:`Spec` is a small DAG of operations on tensors of one shape
(1×4×8×8): conv, linear (over the last dimension), relu (functional, method
or module), add, mul, cat (followed by a 1×1 conv back to 4 channels), max
and average pooling, and reshape (out and back). :func:`build` writes its
``forward`` as Python source, one operation per line, in a chosen written
order and with chosen operand orders, so that two models of one spec differ
only in what the matcher must ignore. Each fx node records the source line it
came from (``stack_trace``), which identifies its operation in the spec on
both sides, through fusions and quantization: the test's ground truth.

By default no two nameless operations of one kind read the same inputs, so
every operation is told apart by structure and module paths alone;
``specs(distinct=False)`` repeats ops to make identical branches, and
:func:`changed` gives a spec with one op of another kind or removed (kind
``skip``: the value is another name for the op's input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st
from torch import fx, nn

from fxns.trace import LeafTracer

SHAPE = (1, 4, 8, 8)
KINDS = ("conv", "linear", "relu", "add", "mul", "cat", "maxpool", "avgpool", "reshape")
BINARY = frozenset({"add", "mul", "cat"})
# Kinds without a module, whose instances only their inputs tell apart.
NAMELESS = frozenset({"add", "mul", "cat", "maxpool", "reshape"})
RELU_FORMS = ("torch.relu({})", "F.relu({})", "{}.relu()", "module")


@dataclass(frozen=True)
class Op:
    kind: str
    # Indices of the values read: 0 is the input, i is the result of op i.
    inputs: tuple[int, ...]
    # How a relu is written (one of RELU_FORMS).
    form: str = ""


@dataclass(frozen=True)
class Spec:
    # Op i + 1 computes value i + 1.
    ops: tuple[Op, ...]


@dataclass
class Written:
    """One way of writing a spec: an order of the ops and of operands."""

    order: tuple[int, ...]
    swapped: frozenset[int] = field(default_factory=frozenset)


@st.composite
def specs(
    draw: st.DrawFn, min_ops: int = 3, max_ops: int = 12, distinct: bool = True
) -> Spec:
    """A random spec; every op's inputs are earlier values.

    With ``distinct``, no two nameless ops of one kind read the same inputs;
    without it, ops are often repeated, making identical parallel branches.
    """
    n = draw(st.integers(min_ops, max_ops))
    ops: list[Op] = []
    seen: set[tuple[str, tuple[int, ...]]] = set()
    for i in range(1, n + 1):
        if not distinct and ops and draw(st.booleans()):
            # Repeat an earlier op, or apply one to an input of its own kind.
            ops.append(draw(st.sampled_from(ops)))
            continue
        kind = draw(st.sampled_from(KINDS))
        arity = 2 if kind in BINARY else 1
        inputs = tuple(sorted(draw(st.integers(0, i - 1)) for _ in range(arity)))
        form = draw(st.sampled_from(RELU_FORMS)) if kind == "relu" else ""
        nameless = kind in NAMELESS or (kind == "relu" and form != "module")
        if distinct and nameless and (kind, inputs) in seen:
            # The same nameless op twice on the same inputs is the same value
            # twice: no matcher can tell which is which, nor needs to.
            kind, form = "conv", ""
        seen.add((kind, inputs))
        ops.append(Op(kind, inputs, form))
    return Spec(tuple(ops))


UNARY = tuple(k for k in KINDS if k not in BINARY)


@st.composite
def changed(draw: st.DrawFn, spec: Spec) -> Spec:
    """``spec`` with one op of another kind, or one op removed."""
    i = draw(st.integers(1, len(spec.ops)))
    op = spec.ops[i - 1]
    if draw(st.booleans()):
        kinds = BINARY if op.kind in BINARY else UNARY
        kind = draw(st.sampled_from(sorted(k for k in kinds if k != op.kind)))
        form = "module" if kind == "relu" else ""
        ops = list(spec.ops)
        ops[i - 1] = Op(kind, op.inputs, form)
        return Spec(tuple(ops))

    # Removed: the value becomes another name for the op's first input.
    ops = list(spec.ops)
    ops[i - 1] = Op("skip", op.inputs[:1])
    return Spec(tuple(ops))


@st.composite
def writings(draw: st.DrawFn, spec: Spec) -> Written:
    """A random topological order of the ops and random operand swaps."""
    done = {0}
    order = []
    waiting = set(range(1, len(spec.ops) + 1))
    while waiting:
        ready = sorted(
            i for i in waiting if all(j in done for j in spec.ops[i - 1].inputs)
        )
        i = draw(st.sampled_from(ready))
        order.append(i)
        done.add(i)
        waiting.remove(i)
    binary = [i for i in order if spec.ops[i - 1].kind in BINARY]
    swapped = draw(st.sets(st.sampled_from(binary))) if binary else set()
    return Written(tuple(order), frozenset(swapped))


def in_written_order(spec: Spec) -> Written:
    return Written(tuple(range(1, len(spec.ops) + 1)))


def build(
    spec: Spec, written: Written, seed: int = 0
) -> tuple[nn.Module, dict[int, int]]:
    """The model, and its source line → op index (value number)."""
    c, h, w = SHAPE[1], SHAPE[2], SHAPE[3]
    lines = ["def forward(self, v0):"]
    line_to_op: dict[int, int] = {}
    for i in written.order:
        op = spec.ops[i - 1]
        args = [f"v{j}" for j in op.inputs]
        if i in written.swapped:
            args.reverse()
        for text in _statements(i, op, args, c, h, w):
            lines.append(f"    {text}")
            line_to_op[len(lines)] = i
    consumed = {j for op in spec.ops for j in op.inputs}
    sinks = [i for i in range(1, len(spec.ops) + 1) if i not in consumed]
    lines.append(f"    return ({', '.join(f'v{i}' for i in sinks)},)")

    # fx traces type(model).forward, so each model gets a class of its own.
    namespace = {"torch": torch, "F": nn.functional}
    exec(compile("\n".join(lines), "<generated>", "exec"), namespace)
    model = type("Generated", (nn.Module,), {"forward": namespace["forward"]})()

    torch.manual_seed(seed)
    for i, op in enumerate(spec.ops, start=1):
        if op.kind == "conv":
            model.add_module(f"op{i}", nn.Conv2d(c, c, 3, padding=1))
        elif op.kind == "linear":
            model.add_module(f"op{i}", nn.Linear(w, w))
        elif op.kind == "relu" and op.form == "module":
            model.add_module(f"op{i}", nn.ReLU())
        elif op.kind == "avgpool":
            model.add_module(f"op{i}", nn.AvgPool2d(3, 1, 1))
        elif op.kind == "cat":
            model.add_module(f"op{i}_proj", nn.Conv2d(2 * c, c, 1))
    return model.eval(), line_to_op


def _statements(i: int, op: Op, args: list[str], c: int, h: int, w: int) -> list[str]:
    kind = op.kind
    if kind == "skip":
        return [f"v{i} = {args[0]}"]
    if kind in ("conv", "linear", "avgpool"):
        return [f"v{i} = self.op{i}({args[0]})"]
    if kind == "relu":
        if op.form == "module":
            return [f"v{i} = self.op{i}({args[0]})"]
        return [f"v{i} = " + op.form.format(args[0])]
    if kind == "add":
        return [f"v{i} = {args[0]} + {args[1]}"]
    if kind == "mul":
        return [f"v{i} = {args[0]} * {args[1]}"]
    if kind == "cat":
        return [f"v{i} = self.op{i}_proj(torch.cat([{args[0]}, {args[1]}], 1))"]
    if kind == "maxpool":
        return [f"v{i} = F.max_pool2d({args[0]}, 3, 1, 1)"]
    if kind == "reshape":
        return [
            f"t{i} = {args[0]}.reshape(1, {c}, {h * w})",
            f"v{i} = t{i}.reshape(1, {c}, {h}, {w})",
        ]
    raise AssertionError(kind)


def trace_with_lines(model: nn.Module) -> fx.GraphModule:
    """fxns's own tracing, recording each node's source line."""
    tracer = LeafTracer()
    tracer.record_stack_traces = True
    return fx.GraphModule(model, tracer.trace(model))


_LINE = re.compile(r'File "<generated>", line (\d+)')


def op_of(gm: fx.GraphModule, line_to_op: dict[int, int]) -> dict[str, int]:
    """fx node name → index of the spec op it computes (where it has one)."""
    found = {}
    for node in gm.graph.nodes:
        match = _LINE.search(node.meta.get("stack_trace") or "")
        if match and int(match.group(1)) in line_to_op:
            found[node.name] = line_to_op[int(match.group(1))]
    return found
