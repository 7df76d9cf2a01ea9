"""The matcher: which float operations correspond to which quantized ones.

:func:`match` traces both models, builds their canonical graphs
(:mod:`fxns.graph`) and aligns them. The alignment never looks at the order
in which operands or branches were written; it works on structure, and uses
names only to choose between structurally interchangeable candidates.

The steps:

1. **Signatures.** Each operation gets a forward signature (its label and the
   signatures of its inputs, as a set for ``add``/``mul``/``cat``, by position
   otherwise) and a backward signature (the same over its consumers). Both are
   computed in one pass each over the graph in execution order, interned in a
   table shared by the two graphs so that equal signatures mean structurally
   equal neighbourhoods of the whole graph. Cost: linear in nodes and edges.
2. **Anchors.** A signature held by exactly one operation on each side pairs
   those two. In graphs that line up this pairs nearly everything.
3. **Interchangeable regions.** Operations whose signature is shared by
   several on each side (``conv_a(x) + conv_b(x)``) form small connected
   regions. Regions with the same contents and the same anchored
   surroundings are solved with networkx's ``DiGraphMatcher``, enumerating a
   bounded number of isomorphisms and keeping the one whose module paths,
   layer shapes and execution order agree best.
4. **Extension.** Where the graphs differ (an op left in float, an extra op,
   a different fusion), signatures downstream or upstream of the difference
   disagree. Starting from every matched pair, unmatched neighbours with the
   same label on the same input position are paired when the choice is
   unambiguous, repeated until nothing changes. Finally, leftover operations
   of the same label and the same module path are paired.

Operations of different labels are never paired. What stays unmatched is
listed on its side with a reason.

Fused modules are expanded into parts by the canonical graph, so a fusion
pairs part by part; :func:`match` then groups the parts that share fx nodes
into one :class:`Pair` (float ``conv, bn, relu`` ↔ quantized ``ConvReLU2d``).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from networkx.algorithms.isomorphism import DiGraphMatcher
from torch import fx, nn

from .graph import INPUT, OUTPUT, OpGraph, build_op_graph
from .trace import trace

__all__ = ["Matching", "Pair", "align", "match", "match_graphs"]

logger = logging.getLogger(__name__)

# At most this many isomorphisms of one interchangeable region are scored.
_MAX_REGION_ISOMORPHISMS = 256


@dataclass(frozen=True)
class Pair:
    """Float operation(s) and the quantized operation(s) that compute the same thing.

    Example:
        >>> pair = matching.pairs[0]  # doctest: +SKIP
        >>> pair.name, pair.kind, pair.float_nodes, pair.quant_nodes  # doctest: +SKIP
        ('conv1', 'conv2d+batch_norm+relu', ('conv1', 'bn1', 'relu'), ('conv1',))
    """

    # Stable row name: the float side's module path ("layer1.0.conv1"), with
    # ":<k>" for the k-th call of a module called several times, else the
    # float fx node name ("add_3").
    name: str
    # Canonical kind of the float side, parts joined by "+".
    kind: str
    # fx node names in the traced float graph, in execution order; the last
    # one produces the value that is compared.
    float_nodes: tuple[str, ...]
    # fx node names in the quantized graph, in execution order.
    quant_nodes: tuple[str, ...]
    # Readable op names of those nodes ("nn.Conv2d", "quantized::add").
    float_ops: tuple[str, ...] = ()
    quant_ops: tuple[str, ...] = ()
    # Canonical kind of the quantized side ("conv2d+relu").
    quant_kind: str = ""
    # Why this pair's numbers need care (empty when they need none).
    note: str = ""


@dataclass
class Matching:
    """The result of :func:`match`: pairs in execution order, and what has no partner.

    Example:
        >>> m = fxns.match(float_model, quant_model)  # doctest: +SKIP
        >>> [p.name for p in m.pairs][:3]  # doctest: +SKIP
        ['conv1', 'maxpool', 'layer1.0.conv1']
    """

    # Matched operations, ordered by the float model's execution order.
    pairs: list[Pair]
    # fx node names of operations with no partner, in execution order.
    unmatched_float: tuple[str, ...]
    unmatched_quant: tuple[str, ...]
    # Why each unmatched node has no partner, keyed by fx node name.
    float_reasons: dict[str, str] = field(default_factory=dict)
    quant_reasons: dict[str, str] = field(default_factory=dict)
    # The canonical graphs and the node-level correspondence behind the pairs.
    float_graph: OpGraph | None = field(default=None, repr=False)
    quant_graph: OpGraph | None = field(default=None, repr=False)
    op_pairs: dict[str, str] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> Pair:
        for pair in self.pairs:
            if pair.name == name:
                return pair
        raise KeyError(
            f"no pair named {name!r}; names are {[p.name for p in self.pairs]}"
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def summary(self) -> str:
        """One line: how much of each side is matched.

        Example:
            >>> m.summary()  # doctest: +SKIP
            'matched 51 of 51 quantized ops (43 pairs); 0 float-only, 0 quantized-only'
        """
        qg = self.quant_graph
        n_quant = sum(1 for _ in qg.op_nodes()) if qg else 0
        matched = sum(1 for k in self.op_pairs.values() if qg and _is_op(qg, k))
        return (
            f"matched {matched} of {n_quant} quantized ops ({len(self.pairs)} pairs); "
            f"{len(self.unmatched_float)} float-only, "
            f"{len(self.unmatched_quant)} quantized-only"
        )

    @property
    def float_module(self) -> fx.GraphModule:
        """The traced float model the node names refer to."""
        assert self.float_graph is not None
        return self.float_graph.gm

    @property
    def quant_module(self) -> fx.GraphModule:
        """The traced quantized model the node names refer to."""
        assert self.quant_graph is not None
        return self.quant_graph.gm


def match(
    float_model: nn.Module,
    quant_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> Matching:
    """Align the operations of a float model and its quantized counterpart.

    Args:
        float_model: the float model, an ``nn.Module`` or ``GraphModule``.
        quant_model: the quantized model (``convert_fx`` output, an eager
            quantized model, ...), an ``nn.Module`` or ``GraphModule``.
        leaf_modules: module classes to keep as single operations when tracing.
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        A :class:`Matching`: pairs in execution order and the unmatched nodes
        of each side with reasons. Mismatched graphs never raise; when little
        matches, a warning says so.

    Example:
        >>> import copy, torch, fxns
        >>> float_model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> m = fxns.match(float_model, copy.deepcopy(float_model))
        >>> [(p.name, p.kind) for p in m.pairs]
        [('0', 'linear'), ('1', 'relu')]
    """
    float_gm = trace(
        float_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
        role="float model",
    )
    quant_gm = trace(
        quant_model,
        leaf_modules=leaf_modules,
        leaf_module_names=leaf_module_names,
        role="quantized model",
    )
    return match_graphs(build_op_graph(float_gm), build_op_graph(quant_gm))


def match_graphs(fg: OpGraph, qg: OpGraph) -> Matching:
    """Align two canonical graphs; :func:`match` without the tracing.

    Example:
        >>> from fxns.graph import build_op_graph  # doctest: +SKIP
        >>> match_graphs(build_op_graph(gm_a), build_op_graph(gm_b))  # doctest: +SKIP
    """
    mapping = align(fg, qg)
    matching = _group_pairs(fg, qg, mapping)
    logger.info(matching.summary())
    n_float = sum(1 for _ in fg.op_nodes())
    n_quant = sum(1 for _ in qg.op_nodes())
    matched = sum(1 for f in mapping if _is_op(fg, f))
    if min(n_float, n_quant) and matched < 0.5 * min(n_float, n_quant):
        warnings.warn(
            f"only {matched} of {n_float} float ops and {n_quant} quantized ops "
            "could be matched: are these two versions of the same model? "
            "Unmatched nodes are listed in Matching.unmatched_float/unmatched_quant.",
            stacklevel=3,
        )
    return matching


def align(fg: OpGraph, qg: OpGraph) -> dict[str, str]:
    """The node-level correspondence: float op key → quantized op key.

    Includes the ``input:<i>`` and ``output`` markers.

    Example:
        >>> align(build_op_graph(gm_a), build_op_graph(gm_b))  # doctest: +SKIP
        {'x': 'x', 'linear': 'linear', 'output': 'output'}
    """
    return _Aligner(fg, qg).run()


# --- the alignment -------------------------------------------------------------


class _Aligner:
    def __init__(self, fg: OpGraph, qg: OpGraph) -> None:
        self.fg, self.qg = fg, qg
        self.f2q: dict[str, str] = {}
        self.q2f: dict[str, str] = {}

    def run(self) -> dict[str, str]:
        sig_f, sig_q = self._signatures()
        self._pair_anchors(sig_f, sig_q)
        self._solve_regions(sig_f, sig_q)
        self._extend()
        self._pair_same_modules()
        return dict(sorted(self.f2q.items(), key=lambda kv: self.fg.nodes[kv[0]].order))

    def _pair(self, f: str, q: str) -> None:
        assert f not in self.f2q and q not in self.q2f
        assert self.fg.nodes[f].label == self.qg.nodes[q].label
        self.f2q[f] = q
        self.q2f[q] = f

    # -- 1. signatures --------------------------------------------------------

    def _signatures(
        self,
    ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        table: dict[Hashable, int] = {}
        result = []
        for og in (self.fg, self.qg):
            order = sorted(og.nodes, key=lambda k: og.nodes[k].order)
            fwd: dict[str, int] = {}
            for key in order:
                fwd[key] = _intern(
                    table, (og.nodes[key].label, _inputs_key(og, key, fwd))
                )
            bwd: dict[str, int] = {}
            for key in reversed(order):
                bwd[key] = _intern(
                    table, (og.nodes[key].label, _outputs_key(og, key, bwd))
                )
            result.append({k: (fwd[k], bwd[k]) for k in order})
        return result[0], result[1]

    # -- 2. anchors -------------------------------------------------------------

    def _pair_anchors(
        self, sig_f: dict[str, tuple[int, int]], sig_q: dict[str, tuple[int, int]]
    ) -> None:
        # Model inputs pair by position and the output with the output,
        # whatever the rest of the graphs look like.
        for f, node in self.fg.nodes.items():
            if node.parts[0] in (INPUT, OUTPUT):
                for q, other in self.qg.nodes.items():
                    if other.label == node.label and q not in self.q2f:
                        self._pair(f, q)
                        break

        by_sig_f = _group(sig_f)
        by_sig_q = _group(sig_q)
        for sig, fs in by_sig_f.items():
            qs = by_sig_q.get(sig, [])
            if (
                len(fs) == 1
                and len(qs) == 1
                and fs[0] not in self.f2q
                and qs[0] not in self.q2f
            ):
                self._pair(fs[0], qs[0])

    # -- 3. interchangeable regions ----------------------------------------

    def _solve_regions(
        self, sig_f: dict[str, tuple[int, int]], sig_q: dict[str, tuple[int, int]]
    ) -> None:
        left_f = {s for f, s in sig_f.items() if f not in self.f2q}
        left_q = {s for q, s in sig_q.items() if q not in self.q2f}
        shared = left_f & left_q
        ambiguous_f = [f for f, s in sig_f.items() if f not in self.f2q and s in shared]
        ambiguous_q = [q for q, s in sig_q.items() if q not in self.q2f and s in shared]
        if not ambiguous_f:
            return

        regions_f = self._regions(self.fg, ambiguous_f, sig_f, self.f2q, to_float=None)
        regions_q = self._regions(
            self.qg, ambiguous_q, sig_q, self.q2f, to_float=self.q2f
        )
        pool: dict[Hashable, list[nx.DiGraph]] = defaultdict(list)
        for key, region in regions_q:
            pool[key].append(region)

        for key, region_f in regions_f:
            candidates = pool.get(key, [])
            best: tuple[float, int, dict[str, str]] | None = None
            for i, region_q in enumerate(candidates):
                found = self._best_isomorphism(region_f, region_q)
                if found is not None and (best is None or found[0] > best[0]):
                    best = (found[0], i, found[1])
            if best is None:
                continue
            candidates.pop(best[1])
            for f, q in best[2].items():
                self._pair(f, q)

    def _regions(
        self,
        og: OpGraph,
        keys: list[str],
        sigs: dict[str, tuple[int, int]],
        anchored: dict[str, str],
        to_float: dict[str, str] | None,
    ) -> list[tuple[Hashable, nx.DiGraph]]:
        """Connected groups of unanchored nodes, each with a comparable key.

        A node's attribute ``tag`` holds its signature and the anchored nodes
        around it, named by their float key so both sides compare.
        """
        sub = og.graph.subgraph(keys).copy()
        for key in keys:
            around = []
            for pred in og.graph.predecessors(key):
                if pred in anchored:
                    name = pred if to_float is None else to_float[pred]
                    around.append(("in", name, og.graph.edges[pred, key]["ports"]))
            for succ in og.graph.successors(key):
                if succ in anchored:
                    name = succ if to_float is None else to_float[succ]
                    around.append(("out", name, og.graph.edges[key, succ]["ports"]))
            sub.nodes[key]["tag"] = (sigs[key], tuple(sorted(around, key=repr)))
        regions: list[tuple[Hashable, nx.DiGraph]] = []
        for component in nx.weakly_connected_components(sub):
            region = sub.subgraph(component).copy()
            tags = tuple(sorted(repr(region.nodes[n]["tag"]) for n in region))
            regions.append((tags, region))
        regions.sort(key=lambda kr: min(og.nodes[n].order for n in kr[1]))
        return regions

    def _best_isomorphism(
        self, region_f: nx.DiGraph, region_q: nx.DiGraph
    ) -> tuple[float, dict[str, str]] | None:
        matcher = DiGraphMatcher(
            region_f,
            region_q,
            node_match=lambda a, b: a["tag"] == b["tag"],
            edge_match=lambda a, b: a["ports"] == b["ports"],
        )
        best: tuple[float, dict[str, str]] | None = None
        for mapping in itertools.islice(
            matcher.isomorphisms_iter(), _MAX_REGION_ISOMORPHISMS
        ):
            score = sum(self._affinity(f, q) for f, q in mapping.items())
            if best is None or score > best[0]:
                best = (score, dict(mapping))
        return best

    def _affinity(self, f: str, q: str) -> float:
        """How much besides structure says ``f`` and ``q`` are the same layer."""
        a, b = self.fg.nodes[f], self.qg.nodes[q]
        score = 0.0
        if a.module and a.module == b.module:
            score += 4.0
        if a.shape and a.shape == b.shape:
            score += 2.0
        # Closer relative positions in execution order win the last ties.
        pos_a = a.order[0] / max(len(self.fg.fx_index), 1)
        pos_b = b.order[0] / max(len(self.qg.fx_index), 1)
        return score - abs(pos_a - pos_b)

    # -- 4. extension -----------------------------------------------------------

    def _extend(self) -> None:
        work = list(self.f2q.items())
        while work:
            f, q = work.pop()
            for direction in ("in", "out"):
                for f_new, q_new in self._neighbour_pairs(f, q, direction):
                    self._pair(f_new, q_new)
                    work.append((f_new, q_new))

    def _neighbour_pairs(self, f: str, q: str, direction: str) -> list[tuple[str, str]]:
        groups_f = self._neighbours(self.fg, f, direction, self.f2q)
        groups_q = self._neighbours(self.qg, q, direction, self.q2f)
        found = []
        for key, fs in groups_f.items():
            qs = groups_q.get(key, [])
            if len(fs) == 1 and len(qs) == 1:
                found.append((fs[0], qs[0]))
            elif fs and qs:
                found.extend(self._pair_by_module(fs, qs))
        return found

    def _neighbours(
        self, og: OpGraph, key: str, direction: str, taken: dict[str, str]
    ) -> dict[tuple[str, tuple[int, ...]], list[str]]:
        g = og.graph
        groups: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
        if direction == "in":
            for pred in g.predecessors(key):
                if pred not in taken:
                    groups[(og.nodes[pred].label, g.edges[pred, key]["ports"])].append(
                        pred
                    )
        else:
            for succ in g.successors(key):
                if succ not in taken:
                    groups[(og.nodes[succ].label, g.edges[key, succ]["ports"])].append(
                        succ
                    )
        return groups

    def _pair_by_module(self, fs: list[str], qs: list[str]) -> list[tuple[str, str]]:
        found = []
        left = list(qs)
        for f in fs:
            module = self.fg.nodes[f].module
            same = [q for q in left if module and self.qg.nodes[q].module == module]
            if len(same) == 1:
                found.append((f, same[0]))
                left.remove(same[0])
        return found

    # -- 5. same module, last resort --------------------------------------------

    def _pair_same_modules(self) -> None:
        left_q: dict[tuple[str, str], list[str]] = defaultdict(list)
        for q, node in self.qg.nodes.items():
            if q not in self.q2f and node.module:
                left_q[(node.label, node.module)].append(q)
        for f, node in sorted(self.fg.nodes.items(), key=lambda kv: kv[1].order):
            if f in self.f2q or not node.module:
                continue
            candidates = left_q.get((node.label, node.module))
            if candidates:
                self._pair(f, candidates.pop(0))
                self._extend_from(f)

    def _extend_from(self, f: str) -> None:
        work = [(f, self.f2q[f])]
        while work:
            a, b = work.pop()
            for direction in ("in", "out"):
                for f_new, q_new in self._neighbour_pairs(a, b, direction):
                    self._pair(f_new, q_new)
                    work.append((f_new, q_new))


def _intern(table: dict[Hashable, int], value: Hashable) -> int:
    return table.setdefault(value, len(table))


def _inputs_key(og: OpGraph, key: str, fwd: dict[str, int]) -> tuple[Any, ...]:
    g = og.graph
    items = []
    for pred in g.predecessors(key):
        for port in g.edges[pred, key]["ports"]:
            items.append((port, fwd[pred]))
    return tuple(sorted(items))


def _outputs_key(og: OpGraph, key: str, bwd: dict[str, int]) -> tuple[Any, ...]:
    g = og.graph
    items = []
    for succ in g.successors(key):
        for port in g.edges[key, succ]["ports"]:
            items.append((port, bwd[succ]))
    return tuple(sorted(items))


def _group(sigs: dict[str, tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for key, sig in sigs.items():
        groups[sig].append(key)
    return groups


def _is_op(og: OpGraph, key: str) -> bool:
    return og.nodes[key].parts[0] not in (INPUT, OUTPUT)


# --- from node pairs to Pairs --------------------------------------------------


def _group_pairs(fg: OpGraph, qg: OpGraph, mapping: dict[str, str]) -> Matching:
    """Group node-level pairs that share fx nodes into one :class:`Pair` each."""
    links = nx.Graph()
    for f, q in mapping.items():
        if not _is_op(fg, f):
            continue
        fx_f = [("f", n) for n in fg.nodes[f].fx_nodes]
        fx_q = [("q", n) for n in qg.nodes[q].fx_nodes]
        links.add_nodes_from(fx_f + fx_q)
        for a, b in itertools.pairwise(fx_f + fx_q):
            links.add_edge(a, b)

    pairs = []
    for component in nx.connected_components(links):
        float_nodes = _in_order(fg, [n for side, n in component if side == "f"])
        quant_nodes = _in_order(qg, [n for side, n in component if side == "q"])
        pairs.append(_make_pair(fg, qg, mapping, float_nodes, quant_nodes))
    pairs.sort(key=lambda p: fg.fx_index[p.float_nodes[0]])

    paired_f = {n for p in pairs for n in p.float_nodes}
    paired_q = {n for p in pairs for n in p.quant_nodes}
    reasons_f = _reasons(fg, qg, paired_f, set(mapping))
    reasons_q = _reasons(qg, fg, paired_q, set(mapping.values()))
    return Matching(
        pairs=pairs,
        unmatched_float=tuple(reasons_f),
        unmatched_quant=tuple(reasons_q),
        float_reasons=reasons_f,
        quant_reasons=reasons_q,
        float_graph=fg,
        quant_graph=qg,
        op_pairs=dict(mapping),
    )


def _make_pair(
    fg: OpGraph,
    qg: OpGraph,
    mapping: dict[str, str],
    float_nodes: tuple[str, ...],
    quant_nodes: tuple[str, ...],
) -> Pair:
    note = ""
    inverse = {q: f for f, q in mapping.items()}
    loose_f = [k for n in float_nodes for k in fg.fx_to_ops[n] if k not in mapping]
    loose_q = [k for n in quant_nodes for k in qg.fx_to_ops[n] if k not in inverse]
    if loose_f or loose_q:
        parts = [fg.nodes[k].label for k in loose_f] + [
            qg.nodes[k].label for k in loose_q
        ]
        note = (
            f"partly matched: {', '.join(parts)} has no counterpart inside this fusion"
        )
    # What the graphs say about these nodes (calls sharing quantization
    # parameters), each said once.
    graph_notes = [fg.notes.get(n, "") for n in float_nodes]
    graph_notes += [qg.notes.get(n, "") for n in quant_nodes]
    note = "; ".join(dict.fromkeys(n for n in (note, *graph_notes) if n))
    return Pair(
        name=fg.qualified_names[float_nodes[0]],
        kind=fg.kind_of(float_nodes),
        float_nodes=float_nodes,
        quant_nodes=quant_nodes,
        float_ops=tuple(fg.displays[n] for n in float_nodes),
        quant_ops=tuple(qg.displays[n] for n in quant_nodes),
        quant_kind=qg.kind_of(quant_nodes),
        note=note,
    )


def _in_order(og: OpGraph, names: list[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=og.fx_index.__getitem__))


def _reasons(
    og: OpGraph, other: OpGraph, paired_fx: set[str], matched_keys: set[str]
) -> dict[str, str]:
    labels_other = {n.label for n in other.nodes.values()}
    reasons: dict[str, str] = {}
    for node in og.op_nodes():
        if node.key in matched_keys:
            continue
        for name in node.fx_nodes:
            if name in paired_fx or name in reasons:
                continue
            if node.label not in labels_other:
                reasons[name] = f"no '{node.label}' op on the other side"
            else:
                reasons[name] = (
                    f"no '{node.label}' op in a corresponding place on the other side"
                )
    return dict(sorted(reasons.items(), key=lambda kv: og.fx_index[kv[0]]))
