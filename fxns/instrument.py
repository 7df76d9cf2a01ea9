"""Logger and shadow insertion, on copies: step 4 of the pipeline.

Two ways to measure a matched pair:

*propagated* (loggers)
    Both models run on the same input; the value each side computes for the
    pair is compared. The error at a layer includes everything upstream.
*shadow* (local error)
    The quantized model runs; next to each quantized operation a copy of its
    float twin is fed the *dequantized inputs the quantized operation actually
    received*, with its non-tensor arguments as they are. The error at a layer
    is that layer's own.

Both are built as a new ``GraphModule`` whose graph is assembled from the
nodes of the two traced models. The callers' modules are referenced, never
modified: nothing is inserted into their graphs, no hook is registered, no
attribute is set. Each comparison point is a :class:`Probe` that keeps
running sums (:class:`fxns.stats.ErrorStats`), never activations.

For the propagated mode :func:`build_propagated` interleaves the float and
the quantized graph in one ``GraphModule``: each probe runs as soon as both
of its values exist, and fx frees every value after its last use, so the
memory held is that of one forward pass, not of all activations.
:func:`add_loggers` gives the same measurement as two separate models for
users who run them in their own loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import operator
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .errors import InstrumentError
from .graph import OpGraph, node_args
from .match import Matching, Pair
from .ops import Role
from .stats import ErrorStats, as_float

__all__ = [
    "Instrumented",
    "Probe",
    "build_logger_pair",
    "build_propagated",
    "build_shadow",
]

logger = logging.getLogger(__name__)

FLOAT_PREFIX = "f"
QUANT_PREFIX = "q"
PROBE_PREFIX = "fxns_probe_"


class Probe(nn.Module):
    """A comparison point: folds (float, quantized) values into running sums.

    Example:
        >>> probe = Probe("fc")
        >>> probe(torch.ones(3), torch.ones(3))
        >>> probe.stats.metrics()["sqnr"]
        inf
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.stats = ErrorStats()
        # The first problem seen while comparing, if any.
        self.error = ""

    def forward(self, f: Any, q: Any) -> None:
        if self.error:
            return
        if not isinstance(f, torch.Tensor) or not isinstance(q, torch.Tensor):
            self.error = (
                f"not compared: the values are {type(f).__name__} and "
                f"{type(q).__name__}, not tensors"
            )
            return
        try:
            self.stats.update(f, q)
        except (ValueError, RuntimeError) as err:
            self.error = f"not compared: {err}"

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.stats = ErrorStats()
        self.error = ""


@dataclass
class Instrumented:
    """An instrumented model, the pairs it measures and the probe of each."""

    module: fx.GraphModule
    matching: Matching
    # Probe per pair name; pairs that could not be instrumented have none.
    probes: dict[str, Probe]
    # Why a pair has no probe, by pair name.
    skipped: dict[str, str]
    # "propagated" or "shadow".
    mode: str
    # For a pair of logger models: what pairs their values.
    exchange: _Exchange | None = None

    @property
    def pairs(self) -> list[Pair]:
        return self.matching.pairs


# What fxns knows about the models it built, without setting attributes on
# them; entries go away with the models.
_STATE: weakref.WeakKeyDictionary[nn.Module, Instrumented] = weakref.WeakKeyDictionary()


def state_of(module: nn.Module) -> Instrumented | None:
    """The instrumentation behind a model made by fxns, or ``None``."""
    return _STATE.get(module)


# --- propagated: both graphs interleaved in one module ---------------------------


def build_propagated(matching: Matching) -> Instrumented:
    """One ``GraphModule`` that runs both models and compares every pair.

    The module takes the models' inputs and returns the quantized model's
    output.

    Example:
        >>> matching = fxns.match(float_model, quant_model)  # doctest: +SKIP
        >>> inst = build_propagated(matching)  # doctest: +SKIP
        >>> inst.module(batch)  # doctest: +SKIP
    """
    fg, qg = _graphs(matching)
    _check_inputs(fg, qg)
    builder = _GraphBuilder(fg, qg)

    probes: dict[str, Probe] = {}
    probe_inputs: dict[str, tuple[str, str]] = {}
    for pair in matching.pairs:
        probes[pair.name] = Probe(pair.name)
        probe_inputs[pair.name] = (_float_read(pair), _quant_read(qg, pair))

    builder.copy_inputs()
    for side, name in _interleave(fg, qg, matching, probe_inputs):
        if side == "f" and name in builder.float_env:
            continue  # an input, already copied
        if side == "f":
            builder.copy_float(name)
        elif side == "q":
            builder.copy_quant(name)
        else:
            f_name, q_name = probe_inputs[name]
            target = builder.add_module(
                f"{PROBE_PREFIX}{len(builder.probe_targets)}", probes[name]
            )
            builder.probe_targets.append(target)
            builder.graph.call_module(
                target, (builder.float_env[f_name], builder.quant_env[q_name])
            )
    builder.output_from_quant()
    module = builder.finish("FxnsPropagated")
    return _register(Instrumented(module, matching, probes, {}, "propagated"))


def _interleave(
    fg: OpGraph,
    qg: OpGraph,
    matching: Matching,
    probe_inputs: dict[str, tuple[str, str]],
) -> list[tuple[str, str]]:
    """A topological order of both graphs and the probes that keeps them in step.

    Each quantized node is ranked at the float position of its pair (or of its
    inputs), each float node at its own position; probes run the moment both
    of their inputs exist. Values are then freed soon after they are made.
    """
    f_nodes = [n for n in fg.gm.graph.nodes if n.op != "output"]
    q_nodes = [n for n in qg.gm.graph.nodes if n.op != "output"]
    rank: dict[tuple[str, str], int] = {}
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}

    f_placeholders = [n.name for n in f_nodes if n.op == "placeholder"]
    q_placeholders = [n.name for n in q_nodes if n.op == "placeholder"]
    q_alias = dict(zip(q_placeholders, f_placeholders, strict=False))

    for n in f_nodes:
        rank[("f", n.name)] = fg.fx_index[n.name]
        deps[("f", n.name)] = {("f", a.name) for _, a in node_args(n)}

    pair_rank = {}
    for pair in matching.pairs:
        for q in pair.quant_nodes:
            pair_rank[q] = fg.fx_index[pair.float_nodes[-1]]
    for n in q_nodes:
        if n.op == "placeholder":
            continue
        key = ("q", n.name)
        deps[key] = {
            ("f", q_alias[a.name]) if a.name in q_alias else ("q", a.name)
            for _, a in node_args(n)
        }
        ranks = [rank[d] for d in deps[key]]
        rank[key] = pair_rank.get(n.name, max(ranks, default=0))

    readers: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name, (f_name, q_name) in probe_inputs.items():
        q_key = ("f", q_alias[q_name]) if q_name in q_alias else ("q", q_name)
        deps[("p", name)] = {("f", f_name), q_key}
        rank[("p", name)] = -1  # a probe runs as soon as it can
        readers.setdefault(("f", f_name), []).append(("p", name))
        readers.setdefault(q_key, []).append(("p", name))

    # An op that changes a tensor in place waits for the probes reading that
    # tensor (or a view of it) earlier in its graph.
    for side, og, nodes in (("f", fg, f_nodes), ("q", qg, q_nodes)):
        roots = _alias_roots(og, nodes)
        for n in nodes:
            target = mutated_input(n, og.gm)
            if target is None:
                continue
            for key, probe_keys in readers.items():
                read_side, read_name = key
                if (
                    read_side == side
                    and og.fx_index.get(read_name, 1 << 30) < og.fx_index[n.name]
                    and roots.get(read_name) == roots.get(target.name)
                ):
                    deps[(side, n.name)].update(probe_keys)

    users: dict[tuple[str, str], list[tuple[str, str]]] = {k: [] for k in deps}
    missing = {k: len(v) for k, v in deps.items()}
    for k, ds in deps.items():
        for d in ds:
            users[d].append(k)
    counter = itertools.count()
    ready = [(rank[k], next(counter), k) for k, m in missing.items() if m == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, key = heapq.heappop(ready)
        order.append(key)
        for user in users[key]:
            missing[user] -= 1
            if missing[user] == 0:
                heapq.heappush(ready, (rank[user], next(counter), user))
    if len(order) != len(deps):
        raise InstrumentError("internal error: the combined graph has a cycle")
    return order


def mutated_input(node: fx.Node, gm: fx.GraphModule) -> fx.Node | None:
    """The argument ``node`` changes in place, if it does (``relu_``,
    ``nn.ReLU(inplace=True)``, ``x += y`` on tensors, ``x[i] = v``)."""
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if first is None:
        return None
    if node.op == "call_module":
        inplace = getattr(gm.get_submodule(str(node.target)), "inplace", False)
        return first if inplace is True else None
    if node.op == "call_method":
        return first if _is_inplace_name(str(node.target)) else None
    if node.op == "call_function":
        if node.kwargs.get("inplace") is True or node.target in _INPLACE_OPERATORS:
            return first
        return first if _is_inplace_name(getattr(node.target, "__name__", "")) else None
    return None


def _is_inplace_name(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__")


_INPLACE_OPERATORS = frozenset(
    {
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
        operator.setitem,
    }
)


def _alias_roots(og: OpGraph, nodes: list[fx.Node]) -> dict[str, str]:
    """For each node, the node whose memory its output may share.

    In-place ops and every op that may return a view (reshape, flatten,
    pass-throughs, indexing) share their first input's memory; the rest own
    theirs.
    """
    roots: dict[str, str] = {}
    for n in nodes:
        first = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        shares = first is not None and (
            mutated_input(n, og.gm) is not None
            or og.roles.get(n.name) is Role.PASS
            or _may_be_view(og, n)
        )
        if shares and first is not None:
            roots[n.name] = roots.get(first.name, first.name)
        else:
            roots[n.name] = n.name
    return roots


def _may_be_view(og: OpGraph, n: fx.Node) -> bool:
    keys = og.fx_to_ops.get(n.name, ())
    return any(og.nodes[k].label.split("[")[0] in _VIEW_KINDS for k in keys)


# Kinds whose result may be a view of the input.
_VIEW_KINDS = frozenset(
    {
        "reshape",
        "flatten",
        "squeeze",
        "unsqueeze",
        "transpose",
        "permute",
        "expand",
        "getitem",
        "narrow",
        "select",
        "chunk",
        "split",
        "t",
        "unflatten",
        "view_as",
        "expand_as",
    }
)


# --- shadow: float copies fed from the quantized graph ---------------------------


def build_shadow(matching: Matching) -> Instrumented:
    """The quantized graph with a float shadow of every matched pair.

    Each shadow is a copy of the pair's float nodes; its tensor inputs are the
    dequantized values the quantized nodes of the pair received, its other
    arguments (scalars, ``None``, shapes, parameters) those of the float
    model. A pair whose inputs cannot be traced back to the quantized graph is
    skipped with a reason; the others are unaffected.

    Example:
        >>> matching = fxns.match(float_model, quant_model)  # doctest: +SKIP
        >>> inst = build_shadow(matching)  # doctest: +SKIP
        >>> inst.module(batch)  # doctest: +SKIP
    """
    fg, qg = _graphs(matching)
    _check_inputs(fg, qg)
    builder = _GraphBuilder(fg, qg)

    # A shadow's inputs are copied just before its quantized twin runs (a
    # later in-place op cannot change them); its float nodes and its probe
    # are emitted right after the quantized value they are compared with.
    before: dict[str, list[Pair]] = {}
    after: dict[str, list[Pair]] = {}
    for pair in matching.pairs:
        before.setdefault(pair.quant_nodes[0], []).append(pair)
        after.setdefault(_quant_read(qg, pair), []).append(pair)

    shadows: dict[str, _Shadow] = {}
    probes: dict[str, Probe] = {}
    skipped: dict[str, str] = {}
    builder.copy_inputs()
    for node in qg.gm.graph.nodes:
        if node.op in ("output", "placeholder"):
            continue
        for pair in before.get(node.name, []):
            shadow = _Shadow(builder, matching, pair)
            try:
                shadow.capture_inputs()
            except _ShadowSkip as skip:
                shadow.roll_back()
                skipped[pair.name] = str(skip)
                logger.debug("no shadow for %s: %s", pair.name, skip)
            else:
                shadows[pair.name] = shadow
        builder.copy_quant(node.name)
        for pair in after.get(node.name, []):
            if pair.name not in shadows:
                continue
            try:
                shadow_out = shadows[pair.name].emit()
            except _ShadowSkip as skip:
                shadows[pair.name].roll_back()
                skipped[pair.name] = str(skip)
                logger.debug("no shadow for %s: %s", pair.name, skip)
                continue
            probe = Probe(pair.name)
            probes[pair.name] = probe
            target = builder.add_module(f"{PROBE_PREFIX}{len(probes) - 1}", probe)
            builder.graph.call_module(
                target, (shadow_out, builder.quant_env[node.name])
            )
    builder.output_from_quant()
    module = builder.finish("FxnsShadow")
    return _register(Instrumented(module, matching, probes, skipped, "shadow"))


class _ShadowSkip(Exception):
    """This pair cannot be shadowed; the message says why."""


class _Shadow:
    """Emits the float copy of one pair into the combined graph."""

    def __init__(self, builder: _GraphBuilder, matching: Matching, pair: Pair) -> None:
        self.b = builder
        self.fg, self.qg = builder.fg, builder.qg
        self.f2q = matching.op_pairs
        self.pair = pair
        self.env: dict[str, fx.Node] = {}
        self.created: list[fx.Node] = []

    def capture_inputs(self) -> None:
        """Emit the float copies of the pair's tensor inputs, before its twin runs."""
        inside = set(self.pair.float_nodes)
        for name in self.pair.float_nodes:
            node = self.fg.fx_node(name)
            for _, arg in node_args(node):
                is_data = self.fg.roles.get(arg.name) in (Role.OP, Role.PASS)
                if arg.name not in inside and is_data:
                    self._value(arg, consumer=node)

    def emit(self) -> fx.Node:
        """Emit the float nodes of the pair; return the node of its output."""
        for name in self.pair.float_nodes:
            self._copy(self.fg.fx_node(name), inside=True)
        return self.env[self.pair.float_nodes[-1]]

    def roll_back(self) -> None:
        """Remove every node this shadow emitted."""
        for node in reversed(self.created):
            self.b.graph.erase_node(node)
        self.created.clear()

    def _copy(self, node: fx.Node, inside: bool) -> fx.Node:
        def resolve(arg: fx.Node) -> fx.Node:
            return self._value(arg, consumer=node if inside else None)

        new = self.b.graph.node_copy(node, resolve)
        self.b.retarget(new, FLOAT_PREFIX)
        self.created.append(new)
        self.env[node.name] = new
        return new

    def _value(self, arg: fx.Node, consumer: fx.Node | None) -> fx.Node:
        """The shadow-side node for float node ``arg`` read by ``consumer``."""
        if arg.name in self.env:
            return self.env[arg.name]
        role = self.fg.roles.get(arg.name)
        if role is Role.CONST:
            return self.b.float_const(arg)
        if role is Role.META:
            # Shapes and sizes: recompute them on the shadow side.
            return self._copy(arg, inside=False)

        # A tensor from outside the pair: the quantized side's own input.
        direct = self._quant_direct_input(arg, consumer)
        if direct not in self.b.quant_env:
            raise _ShadowSkip(
                f"its input '{arg.name}' is computed after the pair starts running"
            )
        node = self.b.graph.call_function(shadow_input, (self.b.quant_env[direct],))
        self.created.append(node)
        self.env[arg.name] = node
        return node

    def _quant_direct_input(self, arg: fx.Node, consumer: fx.Node | None) -> str:
        src = self.fg.sources.get(arg.name)
        q_src = self.f2q.get(src) if src is not None else None
        quant_nodes = set(self.pair.quant_nodes)
        if consumer is not None:
            uses = [u for u in self.qg.uses if u.consumer in quant_nodes]
            for use in uses:
                if q_src is not None and use.src == q_src:
                    return use.direct
            # The producer has no partner: fall back on the argument position.
            f_use = next(
                (
                    u
                    for u in self.fg.uses
                    if u.consumer == consumer.name and u.direct == arg.name
                ),
                None,
            )
            first = self.pair.quant_nodes[0]
            for use in uses:
                if (
                    f_use is not None
                    and use.consumer == first
                    and use.port == f_use.port
                ):
                    return use.direct
            raise _ShadowSkip(
                f"its input '{arg.name}' has no counterpart among the inputs "
                f"of {', '.join(self.pair.quant_nodes)}"
            )
        # Read only for its shape (through a size() call): any twin will do.
        if q_src is None:
            raise _ShadowSkip(f"'{arg.name}' has no counterpart in the quantized model")
        return self.qg.nodes[q_src].fx_nodes[-1]


def shadow_input(value: Any) -> Any:
    """What a float shadow receives for a quantized-model value.

    A new contiguous float32 tensor: new, so that in-place ops on either side
    cannot reach the other; contiguous, because float kernels are fastest on
    the layout the float model uses (quantized kernels favour channels-last).
    """
    if not isinstance(value, torch.Tensor):
        return value
    fresh = as_float(value)
    if fresh is value:
        return value.contiguous().clone()
    return fresh.contiguous()


# --- two separate models, for the user's own loop -----------------------------------


class _Exchange:
    """Pairs the values of the two logger models in the order they arrive."""

    def __init__(self, matching: Matching) -> None:
        self.matching = matching
        self.probes = {p.name: Probe(p.name) for p in matching.pairs}
        self.pending: dict[tuple[str, str], deque[Any]] = {}

    def pending_values(self) -> int:
        """How many values wait for their counterpart from the other model."""
        return sum(len(q) for q in self.pending.values())

    def put(self, side: str, name: str, value: Any) -> None:
        other = "quant" if side == "float" else "float"
        waiting = self.pending.setdefault((other, name), deque())
        if waiting:
            theirs = waiting.popleft()
            f, q = (value, theirs) if side == "float" else (theirs, value)
            self.probes[name](f, q)
        else:
            # Kept until the other model runs: copy it, since later in-place
            # ops of this forward pass may change the tensor.
            if isinstance(value, torch.Tensor):
                value = value.detach().clone()
            self.pending.setdefault((side, name), deque()).append(value)


class SideLogger(nn.Module):
    """Hands one side's value of one pair to the shared exchange."""

    def __init__(self, exchange: _Exchange, side: str, name: str) -> None:
        super().__init__()
        self.exchange = exchange
        self.side = side
        self.name = name

    def forward(self, value: Any) -> Any:
        self.exchange.put(self.side, self.name, value)
        return value


def build_logger_pair(matching: Matching) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Two models, float and quantized, each logging its side of every pair.

    Run both on the same batches, in any order that alternates; each pair's
    values are compared as soon as both sides have produced them.

    Example:
        >>> f_log, q_log = build_logger_pair(matching)  # doctest: +SKIP
    """
    fg, qg = _graphs(matching)
    exchange = _Exchange(matching)
    reads_f = {_float_read(p): p.name for p in matching.pairs}
    reads_q = {_quant_read(qg, p): p.name for p in matching.pairs}
    f_log = _with_loggers(fg, reads_f, exchange, "float")
    q_log = _with_loggers(qg, reads_q, exchange, "quant")
    inst = Instrumented(q_log, matching, exchange.probes, {}, "propagated", exchange)
    _STATE[f_log] = _STATE[q_log] = inst
    return f_log, q_log


def _with_loggers(
    og: OpGraph, reads: dict[str, str], exchange: _Exchange, side: str
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    root: dict[str, Any] = {}
    modules = dict(og.gm.named_modules())
    for node in og.gm.graph.nodes:
        new = graph.node_copy(node, lambda a: env[a.name])
        env[node.name] = new
        if node.op == "call_module":
            root[str(node.target)] = modules[str(node.target)]
        elif node.op == "get_attr":
            root[str(node.target)] = _get_attr(og.gm, str(node.target))
        if node.name in reads:
            target = f"fxns_logger_{len(root)}"
            root[target] = SideLogger(exchange, side, reads[node.name])
            graph.call_module(target, (new,))
    return fx.GraphModule(root, graph, f"Fxns{side.capitalize()}Loggers")


# --- shared helpers -------------------------------------------------------------


class _GraphBuilder:
    """Copies nodes of the two traced models into one new graph."""

    def __init__(self, fg: OpGraph, qg: OpGraph) -> None:
        self.fg, self.qg = fg, qg
        self.graph = fx.Graph()
        self.root: dict[str, Any] = {}
        self.float_env: dict[str, fx.Node] = {}
        self.quant_env: dict[str, fx.Node] = {}
        self.float_consts: dict[str, fx.Node] = {}
        self.probe_targets: list[str] = []
        self.f_modules = dict(fg.gm.named_modules())
        self.q_modules = dict(qg.gm.named_modules())

    def add_module(self, target: str, module: nn.Module) -> str:
        self.root[target] = module
        return target

    def copy_inputs(self) -> None:
        """The float model's inputs; the quantized model reads the same ones."""
        f_inputs = [n for n in self.fg.gm.graph.nodes if n.op == "placeholder"]
        q_inputs = [n for n in self.qg.gm.graph.nodes if n.op == "placeholder"]
        for f, q in zip(f_inputs, q_inputs, strict=True):
            new = self.graph.node_copy(f)
            self.float_env[f.name] = new
            self.quant_env[q.name] = new

    def copy_float(self, name: str) -> fx.Node:
        node = self.fg.fx_node(name)
        new = self.graph.node_copy(node, lambda a: self.float_env[a.name])
        self.retarget(new, FLOAT_PREFIX)
        self.float_env[name] = new
        return new

    def copy_quant(self, name: str) -> fx.Node:
        node = self.qg.fx_node(name)
        new = self.graph.node_copy(node, lambda a: self.quant_env[a.name])
        self.retarget(new, QUANT_PREFIX)
        self.quant_env[name] = new
        return new

    def float_const(self, node: fx.Node) -> fx.Node:
        """A float-side constant (get_attr, or computed from get_attrs only)."""
        if node.name not in self.float_consts:

            def resolve(arg: fx.Node) -> fx.Node:
                return self.float_const(arg)

            new = self.graph.node_copy(node, resolve)
            self.retarget(new, FLOAT_PREFIX)
            self.float_consts[node.name] = new
        return self.float_consts[node.name]

    def retarget(self, new: fx.Node, prefix: str) -> None:
        """Point a copied call_module/get_attr at the original object.

        The object is registered in the new root under ``prefix``.
        """
        if new.op not in ("call_module", "get_attr"):
            return
        og = self.fg if prefix == FLOAT_PREFIX else self.qg
        target = str(new.target)
        if not target.startswith(prefix + "."):
            if new.op == "call_module":
                modules = self.f_modules if prefix == FLOAT_PREFIX else self.q_modules
                obj: Any = modules[target]
            else:
                obj = _get_attr(og.gm, target)
            target = f"{prefix}.{target}"
            self.root[target] = obj
            new.target = target

    def output_from_quant(self) -> None:
        for node in self.qg.gm.graph.nodes:
            if node.op == "output":
                self.graph.node_copy(node, lambda a: self.quant_env[a.name])

    def finish(self, class_name: str) -> fx.GraphModule:
        self.graph.lint()
        gm = fx.GraphModule(self.root, self.graph, class_name)
        # Only the new root: .eval() would also flip the training flag of the
        # caller's submodules, which the new module shares.
        gm.training = False
        return gm


def _register(inst: Instrumented) -> Instrumented:
    _STATE[inst.module] = inst
    return inst


def _get_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _graphs(matching: Matching) -> tuple[OpGraph, OpGraph]:
    if matching.float_graph is None or matching.quant_graph is None:
        raise InstrumentError(
            "this Matching carries no graphs; build it with fxns.match"
        )
    return matching.float_graph, matching.quant_graph


def _check_inputs(fg: OpGraph, qg: OpGraph) -> None:
    n_f = sum(1 for n in fg.gm.graph.nodes if n.op == "placeholder")
    n_q = sum(1 for n in qg.gm.graph.nodes if n.op == "placeholder")
    if n_f != n_q:
        raise InstrumentError(
            f"the float model takes {n_f} inputs and the quantized model {n_q}; "
            "both must be called with the same arguments"
        )


def _float_read(pair: Pair) -> str:
    """The float fx node whose value stands for the pair: its last node."""
    return pair.float_nodes[-1]


def _quant_read(qg: OpGraph, pair: Pair) -> str:
    """The quantized fx node whose value stands for the pair.

    The pair's last node, or the quantize node right after it when the pair
    computes in float and quantizes its output (reference models).
    """
    name = pair.quant_nodes[-1]
    node = qg.fx_node(name)
    users = list(node.users)
    if len(users) == 1 and qg.roles.get(users[0].name) is Role.PASS:
        user = users[0]
        target = getattr(user.target, "__name__", str(user.target))
        if target.startswith("quantize_per_"):
            return user.name
    return name
