"""fx graph → labelled networkx graph of operations: step 2 of the pipeline.

:func:`build_op_graph` turns a ``GraphModule`` into an :class:`OpGraph`, a
``networkx.DiGraph`` whose nodes are *operations* with a canonical kind (see
:mod:`fxns.ops`), whatever form the operation takes in the fx graph:

1. Every fx node is classified as an operation, a pass-through (observers,
   ``quantize_per_tensor``, ``dequantize``, ``Identity``, eval dropout, ...),
   metadata (``x.size(0)``) or a constant (``get_attr``). Pass-throughs are
   collapsed into the edges; metadata and constants are not part of the graph.
2. A fused module is expanded into its parts, chained: ``nniq.ConvReLU2d``
   becomes ``conv2d → relu``. A ``batch_norm`` that directly follows a conv or
   linear (and is its only consumer) stays attached to it, on both sides,
   because every quantization flow folds it into the weights.
3. An op whose value is a tuple (LSTM, ``chunk``; see
   :data:`fxns.ops.MULTI_OUTPUT`) stays one operation: the ``getitem`` nodes
   that take it apart only select elements, and are collapsed into the edges
   like pass-throughs, each edge remembering which element it carries.
4. Each edge records, for every place the producer's value is used, which
   argument of which fx node receives it and through which fx node (the
   *direct argument*, for instance a ``quantize_per_tensor`` in front of a
   quantized conv). Shadows are built from exactly this record.

Model inputs become nodes labelled ``input:<i>`` and the model output a node
labelled ``output``, so that matching can anchor on both ends.

Rows are named after modules: a module's path, with ``:<k>`` for its k-th
call; the calls of an eager ``FloatFunctional`` (``self.skip.add(x, y)``) are
named after the ``FloatFunctional`` the same way. Quantized calls that share
one scale and zero point (several calls of one quantized module or
``QFunctional``) say so in :attr:`OpGraph.notes`.

The cost is linear in the number of fx nodes.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from torch import fx, nn

from . import ops
from .ops import Role
from .trace import CALL_SITE

__all__ = ["INPUT", "OUTPUT", "OpGraph", "OpNode", "Use", "build_op_graph", "node_args"]

INPUT = "input"
OUTPUT = "output"

# Module attributes that describe a layer's shape: tie-breakers when matching.
_SHAPE_ATTRS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "normalized_shape",
    "num_embeddings",
    "embedding_dim",
    "input_size",
    "hidden_size",
    "num_layers",
)


@dataclass
class OpNode:
    """One operation of the canonical graph."""

    # Unique key in the graph: the fx node name, with ":<i>" for the i-th
    # part (i >= 1) of an expanded fused module.
    key: str
    # What matching compares: the first part's kind, qualified for a few kinds
    # (``getitem[1]``, ``input:0``).
    label: str
    # Canonical kinds of everything in this node, e.g. ("conv2d", "batch_norm").
    parts: tuple[str, ...]
    # fx node names that make up this node, in execution order.
    fx_nodes: tuple[str, ...]
    # Position in execution order (fx node index, part index).
    order: tuple[int, int]
    # The module path for a call_module node, "" otherwise.
    module: str = ""
    # Layer dimensions (channels, features, kernel) used to break ties.
    shape: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Use:
    """One place where the value of ``src`` is read by an fx node of ``dst``."""

    src: str
    dst: str
    # Position of this value among the data arguments of the consumer.
    port: int
    # The fx node that reads the value, and where in its arguments.
    consumer: str
    arg_path: tuple[int | str, ...]
    # The fx node actually written in that argument (``src``'s output or the
    # last pass-through after it, such as a quantize_per_tensor).
    direct: str
    # Which element of ``src``'s value is read, as indices into it, when that
    # value is a tuple (``(1, 0)``: h_n of an LSTM); ``()`` for the value.
    element: tuple[int, ...] = ()


@dataclass
class OpGraph:
    """A canonical graph of operations built from one ``GraphModule``."""

    gm: fx.GraphModule
    graph: nx.DiGraph
    nodes: dict[str, OpNode]
    uses: list[Use]
    # fx node name → keys of the op nodes it belongs to (several for a fused
    # module, one otherwise).
    fx_to_ops: dict[str, tuple[str, ...]]
    # fx node name → its role and, for data nodes, the op node whose value it
    # carries (for a pass-through: the op it forwards).
    roles: dict[str, Role]
    sources: dict[str, str]
    # Row names: module path for call_module (with ":<k>" for the k-th call
    # of a module called several times), else the fx node name.
    qualified_names: dict[str, str]
    # Readable op name per fx node ("nn.Conv2d", "quantized::add").
    displays: dict[str, str]
    # fx node name → position in the fx graph.
    fx_index: dict[str, int]
    # fx node name → what a row for it should say (calls that share
    # quantization parameters); absent for most nodes.
    notes: dict[str, str] = field(default_factory=dict)
    _fx_nodes: dict[str, fx.Node] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._fx_nodes = {n.name: n for n in self.gm.graph.nodes}

    def fx_node(self, name: str) -> fx.Node:
        """The fx node called ``name``."""
        return self._fx_nodes[name]

    def op_nodes(self) -> Iterator[OpNode]:
        """The operations, without the input and output markers, in order."""
        for node in sorted(self.nodes.values(), key=lambda n: n.order):
            if node.parts[0] not in (INPUT, OUTPUT):
                yield node

    def kind_of(self, fx_names: tuple[str, ...]) -> str:
        """The composite kind ("conv2d+batch_norm+relu") of some fx nodes."""
        parts: list[str] = []
        for key in dict.fromkeys(k for name in fx_names for k in self.fx_to_ops[name]):
            parts.extend(self.nodes[key].parts)
        return "+".join(parts)


def build_op_graph(gm: fx.GraphModule) -> OpGraph:
    """Build the canonical graph of ``gm``.

    Example:
        >>> import torch
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
        >>> og = build_op_graph(gm)
        >>> [(n.label, n.parts) for n in og.op_nodes()]
        [('conv2d', ('conv2d', 'batch_norm')), ('relu', ('relu',))]
    """
    return _Builder(gm).build()


class _Builder:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules(remove_duplicate=False))
        self.nodes: dict[str, OpNode] = {}
        self.uses: list[Use] = []
        self.internal: list[tuple[str, str]] = []
        self.fx_to_ops: dict[str, tuple[str, ...]] = {}
        self.roles: dict[str, Role] = {}
        self.sources: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.displays: dict[str, str] = {}
        self.fx_index: dict[str, int] = {}
        # Data node → the element of its source op's value it carries.
        self.elements: dict[str, tuple[int, ...]] = {}
        self.notes: dict[str, str] = {}

    def build(self) -> OpGraph:
        calls: dict[Any, int] = {}
        n_inputs = 0
        for index, node in enumerate(self.gm.graph.nodes):
            self.fx_index[node.name] = index
            self.names[node.name] = self._qualified_name(node, calls)
            if node.op == "placeholder":
                self._add_op(node, index, (INPUT,), f"{INPUT}:{n_inputs}")
                n_inputs += 1
            elif node.op == "output":
                self._add_op(node, index, (OUTPUT,), OUTPUT)
            elif node.op == "get_attr":
                self.roles[node.name] = Role.CONST
            else:
                self._add_call(node, index)

        self._fold_batch_norms()
        self._note_shared_qparams()
        return OpGraph(
            gm=self.gm,
            graph=self._to_networkx(),
            nodes=self.nodes,
            uses=self.uses,
            fx_to_ops=self.fx_to_ops,
            roles=self.roles,
            sources=self.sources,
            qualified_names=self.names,
            displays=self.displays,
            fx_index=self.fx_index,
            notes=self.notes,
        )

    # -- classification -------------------------------------------------------

    def _add_call(self, node: fx.Node, index: int) -> None:
        data_args = [a for _, a in node_args(node) if self._is_data(a)]
        if not data_args and node.op != "call_module":
            # Computed from constants and shapes only: not data.
            has_meta = any(
                self.roles.get(a.name) is Role.META for _, a in node_args(node)
            )
            self.roles[node.name] = Role.META if has_meta else Role.CONST
            return

        element = self._selected_element(node)
        if element is not None:
            self.roles[node.name] = Role.PASS
            self.sources[node.name] = self.sources[data_args[0].name]
            self.elements[node.name] = element
            self.displays[node.name] = self._display(node)
            return

        info = self._classify(node)
        if info.role is Role.PASS and data_args:
            self.roles[node.name] = Role.PASS
            self.sources[node.name] = self.sources[data_args[0].name]
            self.elements[node.name] = self.elements.get(data_args[0].name, ())
            self.displays[node.name] = self._display(node)
            return
        if info.role in (Role.META, Role.CONST):
            self.roles[node.name] = info.role
            return

        label = info.parts[0] if info.parts else node.name
        if label == "getitem" and len(node.args) > 1 and isinstance(node.args[1], int):
            label = f"getitem[{node.args[1]}]"
        self._add_op(node, index, info.parts or (label,), label)

    def _classify(self, node: fx.Node) -> ops.Classification:
        if node.op == "call_module":
            return ops.classify_module(self.modules[str(node.target)])
        if node.op == "call_method":
            return ops.classify_method(str(node.target))
        target = node.target
        assert callable(target)
        return ops.classify_function(target, node.args)

    def _is_data(self, arg: fx.Node) -> bool:
        return self.roles.get(arg.name) in (Role.OP, Role.PASS)

    def _selected_element(self, node: fx.Node) -> tuple[int, ...] | None:
        """The element path a ``getitem`` selects from a tuple-valued op, if it
        is one (``lstm(x)[1][0]`` → ``(1, 0)``); ``None`` for other nodes."""
        if node.op != "call_function" or node.target is not operator.getitem:
            return None
        if len(node.args) != 2 or not isinstance(node.args[1], int):
            return None
        value = node.args[0]
        if not isinstance(value, fx.Node) or not self._is_data(value):
            return None
        source = self.nodes[self.sources[value.name]]
        path = self.elements.get(value.name, ())
        if not ops.is_tuple_element(source.parts[-1], path):
            return None
        return (*path, node.args[1])

    # -- op nodes --------------------------------------------------------------

    def _add_op(
        self, node: fx.Node, index: int, parts: tuple[str, ...], label: str
    ) -> None:
        self.roles[node.name] = Role.OP
        self.displays[node.name] = self._display(node)
        groups = _group_parts(parts)
        keys = tuple(
            node.name if i == 0 else f"{node.name}:{i}" for i in range(len(groups))
        )
        module = str(node.target) if node.op == "call_module" else ""
        shape = _shape_of(self.modules.get(module)) if module else ()
        for i, (key, group) in enumerate(zip(keys, groups, strict=True)):
            self.nodes[key] = OpNode(
                key=key,
                label=label if i == 0 else group[0],
                parts=group,
                fx_nodes=(node.name,),
                order=(index, i),
                module=module,
                shape=shape,
            )
        for a, b in itertools.pairwise(keys):
            self.internal.append((a, b))
        self.fx_to_ops[node.name] = keys
        # Consumers read the value of the last part.
        self.sources[node.name] = keys[-1]

        port = 0
        for path, arg in node_args(node):
            if not self._is_data(arg):
                continue
            self.uses.append(
                Use(
                    src=self.sources[arg.name],
                    dst=keys[0],
                    port=port,
                    consumer=node.name,
                    arg_path=path,
                    direct=arg.name,
                    element=self.elements.get(arg.name, ()),
                )
            )
            port += 1

    def _fold_batch_norms(self) -> None:
        """Attach each batch_norm to the conv or linear it follows."""
        consumers: dict[str, set[str]] = {}
        producers: dict[str, set[str]] = {}
        for use in self.uses:
            consumers.setdefault(use.src, set()).add(use.dst)
            producers.setdefault(use.dst, set()).add(use.src)
        for a, b in self.internal:
            consumers.setdefault(a, set()).add(b)
            producers.setdefault(b, set()).add(a)

        # Decide every merge first, then rewrite the records once: rewriting
        # them per batch_norm costs time quadratic in the graph's size.
        merged: dict[str, str] = {}
        for key in [k for k, n in self.nodes.items() if n.parts[0] == "batch_norm"]:
            bn = self.nodes[key]
            srcs = producers.get(key, set())
            if len(srcs) != 1:
                continue
            (src,) = srcs
            prev = self.nodes[src]
            if prev.parts[-1] not in ops.FOLDABLE_INTO or consumers.get(src) != {key}:
                continue
            prev.parts = prev.parts + bn.parts
            prev.fx_nodes = tuple(dict.fromkeys(prev.fx_nodes + bn.fx_nodes))
            del self.nodes[key]
            merged[key] = src
            consumers[src] = consumers.pop(key, set())
            for consumer in consumers[src]:
                producers[consumer].discard(key)
                producers[consumer].add(src)
            producers.pop(key, None)
        if merged:
            self._rename_merged(merged)

    def _rename_merged(self, merged: dict[str, str]) -> None:
        """Point every record at the node each merged key was folded into."""

        def final(key: str) -> str:
            while key in merged:
                key = merged[key]
            return key

        uses = []
        for u in self.uses:
            src, dst = final(u.src), final(u.dst)
            if src == dst:
                continue  # the edge from a conv into its folded batch_norm
            if (src, dst) != (u.src, u.dst):
                u = dataclasses.replace(u, src=src, dst=dst)
            uses.append(u)
        self.uses = uses
        internal = ((final(a), final(b)) for a, b in self.internal)
        self.internal = [(a, b) for a, b in internal if a != b]
        for name, keys in self.fx_to_ops.items():
            if any(k in merged for k in keys):
                self.fx_to_ops[name] = tuple(dict.fromkeys(final(k) for k in keys))
        for name, src in self.sources.items():
            if src in merged:
                self.sources[name] = final(src)

    def _to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for node in self.nodes.values():
            g.add_node(node.key, label=node.label)
        ports: dict[tuple[str, str], list[int]] = {}
        for use in self.uses:
            ports.setdefault((use.src, use.dst), []).append(use.port)
        for a, b in self.internal:
            ports.setdefault((a, b), []).append(0)
        for (a, b), p in ports.items():
            unordered = self.nodes[b].label in ops.UNORDERED_INPUTS
            g.add_edge(a, b, ports=(-1,) * len(p) if unordered else tuple(sorted(p)))
        return g

    # -- names -----------------------------------------------------------------

    def _qualified_name(self, node: fx.Node, calls: dict[Any, int]) -> str:
        site = node.meta.get(CALL_SITE)
        if node.op != "call_module" and site is not None:
            # The first node made by a FloatFunctional call is named after it;
            # the others (the relu of add_relu) keep their own names.
            if site in calls:
                return node.name
            calls[site] = 1
            path, k = site
            return path if k == 0 else f"{path}:{k}"
        if node.op != "call_module":
            return node.name
        target = str(node.target)
        k = calls.get(target, 0)
        calls[target] = k + 1
        return target if k == 0 else f"{target}:{k}"

    def _note_shared_qparams(self) -> None:
        """Note the calls that share one output scale and zero point.

        A quantized module (it has an output ``scale``) called several times, a
        ``FloatFunctional``/``QFunctional`` whose observer sees several calls,
        quantize every call's output with the same parameters, fitted to the
        range of all of them.
        """
        calls: dict[str, dict[Any, list[str]]] = defaultdict(dict)
        observed: dict[str, set[Any]] = defaultdict(set)
        for node in self.gm.graph.nodes:
            site = node.meta.get(CALL_SITE)
            if site is not None:
                path, k = site
                calls[path].setdefault(k, []).append(node.name)
                if node.op == "call_module" and str(node.target) == (
                    f"{path}.activation_post_process"
                ):
                    observed[path].add(k)
            elif node.op == "call_module" and self.roles.get(node.name) is Role.OP:
                target = str(node.target)
                if _is_quantized_module(self.modules[target]):
                    k = len(calls[target])
                    calls[target][k] = [node.name]
                    observed[target].add(k)
        for path, ks in observed.items():
            if len(ks) < 2:
                continue
            note = (
                f"one of {len(ks)} calls of '{path}', which share one output "
                "scale and zero point"
            )
            for k in ks:
                for name in calls[path][k]:
                    if self.roles.get(name) is Role.OP:
                        self.notes[name] = note

    def _display(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return ops.display_name(type(self.modules[str(node.target)]))
        if node.op in ("call_function", "call_method"):
            return ops.display_name(node.target)
        return node.op


def _is_quantized_module(module: nn.Module) -> bool:
    """A torch module with an output scale (``nnq.Conv2d``, ``nniq.ConvReLU2d``)."""
    return type(module).__module__.startswith("torch.ao.nn.") and hasattr(
        module, "scale"
    )


def _group_parts(parts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Split a fused module's kinds into nodes, keeping batch_norm with its conv."""
    groups: list[tuple[str, ...]] = []
    for part in parts:
        if part == "batch_norm" and groups and groups[-1][-1] in ops.FOLDABLE_INTO:
            groups[-1] = groups[-1] + (part,)
        else:
            groups.append((part,))
    return groups


def node_args(node: fx.Node) -> Iterator[tuple[tuple[int | str, ...], fx.Node]]:
    """Every fx node among ``node``'s arguments, with its path in them."""

    def walk(
        value: Any, path: tuple[int | str, ...]
    ) -> Iterator[tuple[tuple[int | str, ...], fx.Node]]:
        if isinstance(value, fx.Node):
            yield path, value
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(item, (*path, i))
        elif isinstance(value, dict):
            for k, item in value.items():
                yield from walk(item, (*path, str(k)))
        elif isinstance(value, slice):
            for i, item in enumerate((value.start, value.stop, value.step)):
                yield from walk(item, (*path, i))

    for i, arg in enumerate(node.args):
        yield from walk(arg, (i,))
    for k, arg in node.kwargs.items():
        yield from walk(arg, (k,))


def _shape_of(module: nn.Module | None) -> tuple[Any, ...]:
    if module is None:
        return ()
    # Look in the instance dict first: hasattr on a module goes through
    # nn.Module.__getattr__, which is slow when the attribute is missing.
    own = vars(module)
    cls = type(module)
    return tuple(
        (attr, own[attr] if attr in own else getattr(module, attr))
        for attr in _SHAPE_ATTRS
        if attr in own or hasattr(cls, attr)
    )
