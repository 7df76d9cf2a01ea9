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

import copy
import dataclasses
import heapq
import itertools
import logging
import math
import operator
import re
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .errors import InstrumentError
from .graph import OpGraph, node_args
from .layout import AUTO, InputLayout, ShadowInputs, TunedGraphModule, shadow_input
from .match import Matching, Pair
from .ops import WEIGHT_ONLY_KINDS, Role
from .stats import ErrorStats

__all__ = [
    "DerivedProbe",
    "FoldedConv",
    "Instrumented",
    "Probe",
    "build_logger_pair",
    "build_propagated",
    "build_shadow",
    "shadow_input",
]

logger = logging.getLogger(__name__)

FLOAT_PREFIX = "f"
QUANT_PREFIX = "q"
PROBE_PREFIX = "fxns_probe_"
_NOT_IDENTIFIER = re.compile(r"\W")
# Conv module types whose following batch norm a shadow folds in, and that
# batch norm's type.
_FOLDABLE: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
}
# The submodule that sets the float side's memory layout (fxns.layout).
LAYOUT = "fxns_layout"


class Probe(nn.Module):
    """A comparison point: folds (float, quantized) values into running sums.

    A tuple value (the ``(output, (h_n, c_n))`` of an LSTM, the pieces of a
    ``chunk``) is compared tensor by tensor, each in :attr:`elements` under
    its path of indices; ``None`` and other non-tensor parts are skipped.

    Example:
        >>> probe = Probe("fc")
        >>> probe(torch.ones(3), torch.ones(3))
        >>> probe.stats.metrics()["sqnr"]
        inf
        >>> lstm = Probe("lstm")
        >>> f = (torch.ones(2), (torch.ones(1), None))
        >>> lstm(f, (torch.ones(2), (torch.zeros(1), None)))
        >>> sorted(lstm.elements)
        [(0,), (1, 0)]
    """

    def __init__(self, name: str, keep: bool = False) -> None:
        super().__init__()
        self.name = name
        self.stats = ErrorStats()
        # For a tuple value: the statistics of each tensor in it, by path.
        self.elements: dict[tuple[int, ...], ErrorStats] = {}
        # The first problem seen while comparing, if any.
        self.error = ""
        # Whether to keep copies of the values compared (only when asked:
        # memory then grows with every batch), and those copies.
        self.keep = keep
        self.kept: list[tuple[Any, Any]] = []

    def forward(self, f: Any, q: Any) -> None:
        if self.keep:
            self.kept.append((_kept(f), _kept(q, dequantize=True)))
        if self.error:
            return
        try:
            if isinstance(f, torch.Tensor) and isinstance(q, torch.Tensor):
                self.stats.update(f, q)
                return
            leaves = list(_tensor_pairs(f, q, ()))
            if not leaves:
                self.error = (
                    f"not compared: the values are {type(f).__name__} and "
                    f"{type(q).__name__}, not tensors"
                )
                return
            for path, f_leaf, q_leaf in leaves:
                self.elements.setdefault(path, ErrorStats()).update(f_leaf, q_leaf)
        except (ValueError, RuntimeError) as err:
            self.error = f"not compared: {err}"

    # Called hundreds of times a batch: straight to forward, past nn.Module's
    # hook machinery (an fxns module that nothing hooks).
    __call__ = forward

    @property
    def batches(self) -> int:
        """How many times values were compared."""
        counts = [s.batches for s in self.elements.values()]
        return max([self.stats.batches, *counts])

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.stats = ErrorStats()
        self.elements = {}
        self.error = ""
        self.kept = []

    def fxns_save(self) -> Callable[[], None]:
        """Save what was seen so far; return the function that puts it back."""
        saved = copy.deepcopy((self.stats, self.elements, self.error))
        kept = len(self.kept)

        def restore() -> None:
            self.stats, self.elements, self.error = saved
            del self.kept[kept:]

        return restore


class DerivedProbe(Probe):
    """The numbers of a pair whose values rearrange another pair's.

    A reshape, transpose or permute (and the like) of a compared value holds
    the same elements in another order, on both sides: its sums are those
    of ``source``, the probe of the pair that produced the value, and no
    pass over memory is needed. In shadow mode (``identical``) the float
    twin of a rearrangement, fed the dequantized value, computes exactly
    the dequantized result: the pair reads as identical, and its sums are
    the quantized side's sums of ``source`` on both sides.

    Example:
        >>> source = Probe("conv")
        >>> source(torch.ones(4), torch.zeros(4))
        >>> DerivedProbe("flatten", source).stats.n
        4
    """

    def __init__(self, name: str, source: Probe, identical: bool = False) -> None:
        nn.Module.__init__(self)
        self.name = name
        self.source = source
        self.identical = identical
        self.keep = False
        self.kept: list[tuple[Any, Any]] = []

    @property
    def stats(self) -> ErrorStats:
        s = self.source.stats
        if not self.identical:
            return dataclasses.replace(s)
        # Both sides equal the quantized value of the source; a non-finite
        # element of it is non-finite on both sides.
        return ErrorStats(
            n=s.n,
            ff=s.qq,
            qq=s.qq,
            fq=s.qq,
            dd=0.0,
            max_abs=0.0,
            batches=s.batches,
            nonfinite_float=s.nonfinite_quant,
            nonfinite_quant=s.nonfinite_quant,
            excluded=s.excluded,
        )

    @stats.setter
    def stats(self, value: ErrorStats) -> None:
        pass  # follows the source

    @property
    def elements(self) -> dict[tuple[int, ...], ErrorStats]:
        return {}

    @elements.setter
    def elements(self, value: dict[tuple[int, ...], ErrorStats]) -> None:
        pass

    @property
    def error(self) -> str:
        return self.source.error

    @error.setter
    def error(self, value: str) -> None:
        pass


# Kinds whose output holds exactly the elements of their one tensor input.
REARRANGEMENTS = frozenset(
    {
        "reshape",
        "flatten",
        "unflatten",
        "transpose",
        "permute",
        "t",
        "squeeze",
        "unsqueeze",
        "view_as",
        "reshape_as",
        "movedim",
        "swapaxes",
        "swapdims",
    }
)


def rearranged_pairs(matching: Matching) -> dict[str, str]:
    """Pair name → the earlier pair whose compared values it rearranges.

    A pair qualifies when each side is one node of a kind in
    :data:`REARRANGEMENTS` (the same kind on both), whose tensor input is,
    on each side, exactly the node whose value the other pair compares.
    """
    fg, qg = _graphs(matching)
    by_reads: dict[tuple[str, str], str] = {}
    sources: dict[str, str] = {}
    for pair in matching.pairs:
        reads = (_float_read(pair), _quant_read(qg, pair))
        if (
            len(pair.float_nodes) == len(pair.quant_nodes) == 1
            and pair.kind in REARRANGEMENTS
            and pair.quant_kind == pair.kind
        ):
            f_in = _tensor_inputs(fg, fg.fx_node(pair.float_nodes[0]))
            q_in = _tensor_inputs(qg, qg.fx_node(pair.quant_nodes[0]))
            if len(f_in) == len(q_in) == 1:
                source = by_reads.get((f_in[0], q_in[0]))
                if source is not None:
                    sources[pair.name] = source
        by_reads.setdefault(reads, pair.name)
    return sources


def _tensor_inputs(og: OpGraph, node: fx.Node) -> list[str]:
    """The names of the nodes whose values ``node`` reads as data."""
    return [
        a.name
        for _, a in node_args(node)
        if og.roles.get(a.name) in (Role.OP, Role.PASS)
    ]


class InputCheck(nn.Module):
    """Counts the NaN and ±Inf values in a model's floating-point inputs.

    In shadow mode every float layer is fed what the quantized model computed,
    and the quantized model's first ``quantize_per_tensor`` turns a NaN or
    Inf of the input into a finite number: no layer's value shows it. This
    module, called on the inputs, keeps the count (as ``stats.nonfinite_float``)
    so that the report can say so.

    Example:
        >>> check = InputCheck()
        >>> check(torch.tensor([1.0, float("nan")]), 3)
        >>> check.stats.nonfinite_float
        1
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats = ErrorStats()

    def forward(self, *values: Any) -> None:
        bad = 0
        for value in _tensors(values):
            # One pass on clean data: a NaN or Inf makes the sum non-finite
            # (so can a float32 overflow: then the count is what decides).
            if value.is_floating_point() and not math.isfinite(float(value.sum())):
                bad += value.numel() - int(torch.isfinite(value).sum())
        self.stats.nonfinite_float += bad
        self.stats.batches += 1

    def fxns_save(self) -> Callable[[], None]:
        """Save the counts so far; return the function that puts them back."""
        saved = copy.deepcopy(self.stats)

        def restore() -> None:
            self.stats = saved

        return restore


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _tensors(v)


def _tensor_pairs(
    f: Any, q: Any, path: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], torch.Tensor, torch.Tensor]]:
    """The tensors at the same places of two like-shaped (nested) tuples."""
    if isinstance(f, torch.Tensor) and isinstance(q, torch.Tensor):
        yield path, f, q
    elif isinstance(f, tuple | list) and isinstance(q, tuple | list):
        if len(f) != len(q):
            raise ValueError(
                f"the float value has {len(f)} elements and the quantized one "
                f"{len(q)} at {_path_text(path)}"
            )
        for i, (a, b) in enumerate(zip(f, q, strict=True)):
            yield from _tensor_pairs(a, b, (*path, i))
    elif isinstance(f, torch.Tensor) or isinstance(q, torch.Tensor):
        raise ValueError(
            f"the values are {type(f).__name__} and {type(q).__name__} at "
            f"{_path_text(path)}"
        )


def _path_text(path: tuple[int, ...]) -> str:
    return "".join(f"[{i}]" for i in path) or "the top"


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
    # Shadow mode: the count of NaN and Inf in the model inputs.
    input_check: InputCheck | None = None

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


def build_propagated(
    matching: Matching, layout: str = AUTO, keep: Collection[str] = ()
) -> Instrumented:
    """One ``GraphModule`` that runs both models and compares every pair.

    The module takes the models' inputs and returns the quantized model's
    output. ``layout`` is the memory layout of the float side
    (:mod:`fxns.layout`): ``"auto"`` measures which is faster on the first
    calls. The probes of the pairs named in ``keep`` also keep copies of the
    values they compare (:attr:`Probe.kept`).

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
    sources = rearranged_pairs(matching)
    for pair in matching.pairs:
        if pair.name in sources and pair.name not in keep:
            # The same element pairs as another pair's, in another order.
            probes[pair.name] = DerivedProbe(pair.name, probes[sources[pair.name]])
            continue
        probes[pair.name] = Probe(pair.name, keep=pair.name in keep)
        probe_inputs[pair.name] = (_float_read(pair), _quant_read(qg, pair))

    builder.copy_inputs()
    target = builder.add_module(LAYOUT, InputLayout(layout))
    for name, node in builder.float_env.items():
        builder.float_env[name] = builder.graph.call_module(target, (node,))
    # Where quantization folded a batch norm into its conv, the float side
    # runs the conv with the batch norm folded in (batch_norm_folds).
    folds = {
        bn: fold
        for pair in matching.pairs
        for bn, fold in batch_norm_folds(builder, pair).items()
    }
    folded_convs = {conv for conv, _ in folds.values()}
    for side, name in _interleave(fg, qg, matching, probe_inputs):
        if side == "f" and (name in builder.float_env or name in folded_convs):
            continue  # an input, already copied; a conv folded into its bn
        if side == "f" and name in folds:
            conv_name, folded = folds[name]
            conv = fg.fx_node(conv_name)
            folded_name = builder.folded_target(str(conv.target), name, folded)
            conv_input = conv.args[0]
            assert isinstance(conv_input, fx.Node)  # batch_norm_folds checked it
            source = builder.float_env[conv_input.name]
            builder.float_env[name] = builder.graph.call_module(folded_name, (source,))
        elif side == "f":
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
        modules = dict(og.gm.named_modules(remove_duplicate=False))
        mutated = {n.name: mutated_input(n, modules) for n in nodes}
        roots = _alias_roots(og, nodes, mutated)
        # The probes' readings by the memory they read: (position, probes).
        read_at: dict[str | None, list[tuple[int, list[tuple[str, str]]]]] = {}
        for (read_side, read_name), probe_keys in readers.items():
            if read_side == side:
                read_at.setdefault(roots.get(read_name), []).append(
                    (og.fx_index.get(read_name, 1 << 30), probe_keys)
                )
        for n in nodes:
            target = mutated[n.name]
            if target is None:
                continue
            position = og.fx_index[n.name]
            for at, probe_keys in read_at.get(roots.get(target.name), ()):
                if at < position:
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


def mutated_input(node: fx.Node, modules: Mapping[str, nn.Module]) -> fx.Node | None:
    """The argument ``node`` changes in place, if it does (``relu_``,
    ``nn.ReLU(inplace=True)``, ``x += y`` on tensors, ``x[i] = v``);
    ``modules`` are its model's submodules by path."""
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if first is None:
        return None
    if node.op == "call_module":
        inplace = getattr(modules[str(node.target)], "inplace", False)
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


def _alias_roots(
    og: OpGraph, nodes: list[fx.Node], mutated: Mapping[str, fx.Node | None]
) -> dict[str, str]:
    """For each node, the node whose memory its output may share.

    In-place ops (``mutated``: node → the input it changes) and every op
    that may return a view (reshape, flatten, pass-throughs, indexing) share
    their first input's memory; the rest own theirs.
    """
    roots: dict[str, str] = {}
    for n in nodes:
        first = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        shares = first is not None and (
            mutated[n.name] is not None
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


def build_shadow(
    matching: Matching, layout: str = AUTO, keep: Collection[str] = ()
) -> Instrumented:
    """The quantized graph with a float shadow of every matched pair.

    Each shadow is a copy of the pair's float nodes; its tensor inputs are the
    dequantized values the quantized nodes of the pair received, its other
    arguments (scalars, ``None``, shapes, parameters) those of the float
    model. A pair whose inputs cannot be traced back to the quantized graph is
    skipped with a reason; the others are unaffected. ``layout`` is the
    memory layout of the shadows' dequantized inputs (:mod:`fxns.layout`):
    ``"auto"`` measures which is faster on the first calls. The probes of the
    pairs named in ``keep`` also keep copies of the values they compare
    (:attr:`Probe.kept`).

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
    builder.add_module(LAYOUT, ShadowInputs(layout))
    input_check = InputCheck()
    builder.graph.call_module(
        builder.add_module("fxns_input_check", input_check),
        tuple(builder.float_env.values()),
    )
    # A rearrangement (reshape, transpose, ...) of a shadowed pair's quantized
    # value reads as identical by construction: its float twin on the
    # dequantized value computes exactly the dequantized result. Its numbers
    # follow from that pair's probe; no shadow runs.
    sources = rearranged_pairs(matching)
    for node in qg.gm.graph.nodes:
        if node.op in ("output", "placeholder"):
            continue
        for pair in before.get(node.name, []):
            source = probes.get(sources.get(pair.name, ""))
            if source is not None and pair.name not in keep:
                probes[pair.name] = DerivedProbe(pair.name, source, identical=True)
                continue
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
            probe = Probe(pair.name, keep=pair.name in keep)
            probes[pair.name] = probe
            target = builder.add_module(f"{PROBE_PREFIX}{len(probes) - 1}", probe)
            builder.graph.call_module(
                target, (shadow_out, builder.quant_env[node.name])
            )
    builder.output_from_quant()
    module = builder.finish("FxnsShadow")
    return _register(
        Instrumented(
            module, matching, probes, skipped, "shadow", input_check=input_check
        )
    )


def batch_norm_folds(
    builder: _GraphBuilder, pair: Pair
) -> dict[str, tuple[str, nn.Module]]:
    """Batch norm node → (its conv node, the conv with it folded in).

    For each ``nn.ConvNd`` module node of the pair followed by an
    ``nn.BatchNormNd`` module node that is its only reader, when the
    quantized side has no batch norm of its own (quantization folded it)
    and both modules are in eval mode with running statistics. Running the
    folded conv instead of the two gives the same numbers up to float
    rounding, with no separate batch-norm pass over the activation; a conv
    left in float with its batch norm is not folded, so that it still
    computes exactly what the quantized model computes.
    """
    if "batch_norm" in pair.quant_kind.split("+"):
        return {}
    fg = builder.fg
    folds: dict[str, tuple[str, nn.Module]] = {}
    for conv_name, bn_name in itertools.pairwise(pair.float_nodes):
        conv, bn = fg.fx_node(conv_name), fg.fx_node(bn_name)
        if not (
            conv.op == bn.op == "call_module"
            and len(conv.args) == 1
            and isinstance(conv.args[0], fx.Node)
            and not conv.kwargs
            and bn.args == (conv,)
            and not bn.kwargs
            and list(conv.users) == [bn]
        ):
            continue
        folded = builder.folded(str(conv.target), str(bn.target))
        if folded is not None:
            folds[bn_name] = (conv_name, folded)
    return folds


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
        """Emit the float nodes of the pair; return the node of its output.

        Where the quantized op has a batch norm folded into its conv, the
        shadow runs the float conv with the same batch norm folded in
        (:func:`batch_norm_folds`): the same numbers up to float rounding, and no
        separate batch-norm pass over the activations.
        """
        folds = batch_norm_folds(self.b, self.pair)
        folded_convs = {conv for conv, _ in folds.values()}
        for name in self.pair.float_nodes:
            if name in folded_convs:
                continue
            node = self.fg.fx_node(name)
            if name in folds:
                self._copy_folded(node, *folds[name])
            else:
                self._copy(node, inside=True)
        return self.env[self.pair.float_nodes[-1]]

    def _copy_folded(self, bn: fx.Node, conv_name: str, folded: nn.Module) -> None:
        conv = self.fg.fx_node(conv_name)
        target = self.b.folded_target(str(conv.target), str(bn.target), folded)
        source = self._value(conv.args[0], consumer=conv)  # type: ignore[arg-type]
        new = self.b.graph.call_module(target, (source,))
        self.created.append(new)
        self.env[bn.name] = new

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
        node = self.b.graph.call_module(LAYOUT, (self.b.quant_env[direct],))
        self.created.append(node)
        self.env[arg.name] = node
        return node

    def _quant_direct_input(self, arg: fx.Node, consumer: fx.Node | None) -> str:
        src = self.fg.sources.get(arg.name)
        q_src = self.f2q.get(src) if src is not None else None
        quant_nodes = set(self.pair.quant_nodes)
        if consumer is not None:
            f_use = next(
                (
                    u
                    for u in self.fg.uses
                    if u.consumer == consumer.name and u.direct == arg.name
                ),
                None,
            )
            # The same element of the same producer's value (h_n, not c_n).
            element = f_use.element if f_use is not None else ()
            uses = [u for u in self.qg.uses if u.consumer in quant_nodes]
            for use in uses:
                if q_src is not None and use.src == q_src and use.element == element:
                    return use.direct
            # The producer has no partner: fall back on the argument position.
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
            self.pending.setdefault((side, name), deque()).append(_kept(value))


def _kept(value: Any, dequantize: bool = False) -> Any:
    """A copy of the tensors in ``value`` (a tensor, or a tuple of them);
    with ``dequantize``, quantized ones as float tensors."""
    if isinstance(value, torch.Tensor):
        if dequantize and value.is_quantized:
            return value.detach().dequantize()
        return value.detach().clone()
    if isinstance(value, tuple | list):
        return type(value)(_kept(v, dequantize) for v in value)
    return value


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

    # Called hundreds of times a batch: straight to forward, past nn.Module's
    # hook machinery (an fxns module that nothing hooks).
    __call__ = forward


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
    modules = dict(og.gm.named_modules(remove_duplicate=False))
    dtype = model_dtype(og.gm)
    for node in og.gm.graph.nodes:
        new = graph.node_copy(node, lambda a: env[a.name])
        if node.op == "placeholder" and dtype is not None:
            new = graph.call_function(cast_floating, (new, dtype))
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
        # (prefix, target in its own model) → its flat name in the new root.
        self.flat_targets: dict[tuple[str, str], str] = {}
        self.flat_names: set[str] = set()
        # (conv, batch norm) targets → the conv with the batch norm folded in.
        self.folded_modules: dict[tuple[str, str], nn.Module | None] = {}
        self.f_modules = dict(fg.gm.named_modules(remove_duplicate=False))
        self.q_modules = dict(qg.gm.named_modules(remove_duplicate=False))

    def add_module(self, target: str, module: nn.Module) -> str:
        self.root[target] = module
        return target

    def folded(self, conv_target: str, bn_target: str) -> nn.Module | None:
        """The float model's conv with its batch norm folded in (a
        :class:`FoldedConv`), or ``None`` when these modules are not a conv
        and a batch norm that fold (see :func:`batch_norm_folds`)."""
        key = (conv_target, bn_target)
        if key not in self.folded_modules:
            conv, bn = self.f_modules[conv_target], self.f_modules[bn_target]
            folded = None
            if (
                type(conv) in _FOLDABLE
                and type(bn) is _FOLDABLE[type(conv)]
                and not (conv.training or bn.training)
                and bn.running_mean is not None
                and bn.running_var is not None
            ):
                folded = FoldedConv(conv, bn)
            self.folded_modules[key] = folded
        return self.folded_modules[key]

    def folded_target(self, conv_target: str, bn_target: str, folded: nn.Module) -> str:
        """The name of ``folded`` in the new root, registered on first use."""
        name = f"{FLOAT_PREFIX}_{_NOT_IDENTIFIER.sub('_', conv_target)}_folded"
        if self.root.get(name) is not folded:
            while name in self.root:
                name += "_"
            self.root[name] = folded
        return name

    def copy_inputs(self) -> None:
        """The float model's inputs; the quantized model reads the same ones.

        A model whose parameters are all float16 or bfloat16 gets its
        floating-point inputs in that type.
        """
        f_inputs = [n for n in self.fg.gm.graph.nodes if n.op == "placeholder"]
        q_inputs = [n for n in self.qg.gm.graph.nodes if n.op == "placeholder"]
        f_dtype, q_dtype = model_dtype(self.fg.gm), model_dtype(self.qg.gm)
        for f, q in zip(f_inputs, q_inputs, strict=True):
            new = self.graph.node_copy(f)
            self.float_env[f.name] = self._cast(new, f_dtype)
            self.quant_env[q.name] = self._cast(new, q_dtype)

    def _cast(self, node: fx.Node, dtype: torch.dtype | None) -> fx.Node:
        if dtype is None:
            return node
        return self.graph.call_function(cast_floating, (node, dtype))

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

        The object is registered in the new root under one flat name,
        ``prefix`` and its path with dots made underscores
        ("f_layer1_0_conv1"): the generated code then reaches it with one
        attribute lookup, not one per level of the path (a few microseconds
        per call on a deep path, hundreds of calls per batch).
        """
        if new.op not in ("call_module", "get_attr"):
            return
        target = str(new.target)
        if target in self.flat_names:
            return  # already the new root's own name
        key = (prefix, target)
        if key not in self.flat_targets:
            if new.op == "call_module":
                modules = self.f_modules if prefix == FLOAT_PREFIX else self.q_modules
                obj: Any = modules[target]
            else:
                og = self.fg if prefix == FLOAT_PREFIX else self.qg
                obj = _get_attr(og.gm, target)
            name = f"{prefix}_{_NOT_IDENTIFIER.sub('_', target)}"
            while name in self.root:
                name += "_"
            self.root[name] = obj
            self.flat_targets[key] = name
            self.flat_names.add(name)
        new.target = self.flat_targets[key]

    def output_from_quant(self) -> None:
        for node in self.qg.gm.graph.nodes:
            if node.op == "output":
                self.graph.node_copy(node, lambda a: self.quant_env[a.name])

    def finish(self, class_name: str) -> fx.GraphModule:
        self.graph.lint()
        gm = TunedGraphModule(self.root, self.graph, class_name)
        # Only the new root's own flag: its submodules are the caller's
        # objects, and .eval() would change their flags.
        gm.training = False
        return gm


class FoldedConv(nn.Module):
    """A float conv with the batch norm after it folded in, for a shadow.

    The float model's ``conv`` and ``bn`` are read, never changed: the folded
    weight and bias are fxns's own tensors, computed on the first call (so
    that building the instrumented model stays quick) and used with the
    conv's own stride, padding and groups.

    The weight follows the memory format of the input: a channels-last input
    gets a channels-last copy (a float conv with a contiguous weight reorders
    it on every call, which at small sizes costs more than the conv). Once
    the instrumented model has chosen its layout (:mod:`fxns.layout`),
    :meth:`fxns_settle` drops the copy it will not use.

    Example:
        >>> conv = FoldedConv(nn.Conv2d(3, 4, 1).eval(), nn.BatchNorm2d(4).eval())
        >>> x = torch.ones(1, 3, 2, 2).to(memory_format=torch.channels_last)
        >>> conv(x).shape
        torch.Size([1, 4, 2, 2])
    """

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        # Folded weight by "is the input channels-last", and the folded bias.
        self.weights: dict[bool, torch.Tensor] = {}
        self.bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = (
            x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        )
        weight = self.weights.get(channels_last)
        if weight is None:
            weight = self._fold(channels_last)
        return self.conv._conv_forward(x, weight, self.bias)  # type: ignore[operator]

    # Called hundreds of times a batch: straight to forward, past nn.Module's
    # hook machinery (an fxns module that nothing hooks).
    __call__ = forward

    def _fold(self, channels_last: bool) -> torch.Tensor:
        with torch.no_grad():
            if self.bias is None or not self.weights:
                conv: Any = self.conv
                bn: Any = self.bn
                weight, bias = fuse_conv_bn_weights(
                    conv.weight,
                    conv.bias,
                    bn.running_mean,
                    bn.running_var,
                    bn.eps,
                    bn.weight,
                    bn.bias,
                )
                self.bias = bias.detach()
                self.weights[False] = weight.detach()
            if channels_last not in self.weights:
                any_weight = next(iter(self.weights.values()))
                self.weights[channels_last] = any_weight.contiguous(
                    memory_format=(
                        torch.channels_last
                        if channels_last
                        else torch.contiguous_format
                    )
                )
        return self.weights[channels_last]

    def fxns_settle(self, layout: str) -> None:
        """Keep only the weight that inputs in ``layout`` use."""
        keep = layout == "channels_last"
        if keep in self.weights:
            self.weights = {keep: self.weights[keep]}


def model_dtype(gm: nn.Module) -> torch.dtype | None:
    """The floating-point type a model computes in, when it is not float32.

    That of its floating-point parameters (or buffers, if it has no
    parameters) when they all share one; ``None`` for float32, quantized
    and mixed models.

    Example:
        >>> model_dtype(torch.nn.Linear(2, 2).half())
        torch.float16
    """
    tensors: list[torch.Tensor] = [p for p in gm.parameters() if p.is_floating_point()]
    if not tensors:
        tensors = [b for b in gm.buffers() if b.is_floating_point()]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        return None
    (dtype,) = dtypes
    return None if dtype == torch.float32 else dtype


def cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """``value`` in ``dtype`` if it is a floating-point tensor, else as it is."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


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

    The pair's last node, or, when the value is quantized after it by a node
    that belongs to the pair, that node:

    - the fake-quant modules of a prepared model (observers too, which change
      nothing);
    - in a reference model, the ``quantize`` of a dq → op → q pattern (its
      users are all ``dequantize``), unless the op is quantized weight-only
      (embeddings): their output is float, and the quantize belongs to the
      consumer. In a lowered model a quantize after a float op feeds a
      quantized kernel, not a ``dequantize``: it is the consumer's input, so
      a layer left in float (qconfig ``None``) reads as identical there. In a
      reference model such a layer cannot be told from a quantized one (both
      are dq → float op → q), and its row includes that quantize.
    """
    node = qg.fx_node(pair.quant_nodes[-1])
    while (user := _only_pass_user(qg, node)) is not None:
        if not _is_observer_or_fake_quant(qg, user):
            break
        node = user
    user = _only_pass_user(qg, node)
    if (
        user is not None
        and _target_name(user).startswith("quantize_per_")
        and user.users
        and all(_target_name(u) == "dequantize" for u in user.users)
        and not set(pair.quant_kind.split("+")) & WEIGHT_ONLY_KINDS
    ):
        return user.name
    return node.name


def _only_pass_user(qg: OpGraph, node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    if len(users) == 1 and qg.roles.get(users[0].name) is Role.PASS:
        return users[0]
    return None


def _is_observer_or_fake_quant(qg: OpGraph, node: fx.Node) -> bool:
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    if node.op != "call_module":
        return False
    module = qg.gm.get_submodule(str(node.target))
    return isinstance(module, FakeQuantizeBase | ObserverBase)


def _target_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))
