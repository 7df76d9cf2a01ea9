"""The matcher: which float operations correspond to which quantized ones.

:func:`match` traces both models, builds their canonical graphs
(:mod:`fxns.graph`) and aligns them. The alignment never looks at the order
in which operands or branches were written; it works on structure, uses
module paths and layer shapes to tell structurally interchangeable
operations apart, and falls back to execution order only where neither
structure nor names say anything.

The steps:

1. **Signatures.** Each operation gets a forward signature (its label and the
   signatures of its inputs, as a set for ``add``/``mul``/``cat``, by position
   otherwise) and a backward signature (the same over its consumers),
   computed in one pass each over the graph in execution order and interned
   in a table shared by the two graphs: equal signatures mean structurally
   equal neighbourhoods of the whole graph.
2. **Anchors.** A signature held by exactly one unmatched operation on each
   side pairs those two: first the pair of signatures (the whole graph
   around the node agrees), then the forward one alone (everything upstream
   agrees), then the backward one alone. Model inputs pair by position and
   the output with the output.
3. **Propagation.** From every pair, the unmatched neighbours of the two
   nodes are grouped by label and input position; a group with one member
   on each side pairs them. A larger group is split by the matched
   neighbours of each candidate, then by signature, then by module path and
   layer shape, and every part with one member on each side pairs. The
   candidates of one round are collected first and accepted only when no
   other candidate claims the same node, so the result does not depend on
   the order of the work. This is also what crosses a difference between
   the graphs (an op left out, a different fusion), where signatures
   disagree.
4. **Names.** Among operations with the same signatures, one module path on
   each side pairs them.
5. **Interchangeable regions.** What is left with signatures shared by both
   sides forms connected regions. Regions with the same contents and the
   same matched surroundings are paired by their module paths, or else by
   trying every pair while there are few, and solved with networkx's
   ``DiGraphMatcher``: an isomorphism that keeps module paths, else the best
   of a bounded number of isomorphisms scored by module path, layer shape
   and position. Regions without module paths are left to step 6: nothing
   but position tells them apart.
6. **Last resorts.** Leftovers with the same label and module path pair in
   call order; leftovers with equal signatures pair in execution order, each
   pair followed by propagation; then propagation runs once more, pairing
   equal groups in execution order.

Cost: steps 1 to 4 and 6 are linear in nodes and edges, apart from sorting
(``O(n log n)``). Step 5 is exponential in the worst case, so it is bounded:
regions of more than :data:`_MAX_REGION_NODES` operations are not searched
(``DiGraphMatcher`` recurses once per node), at most
:data:`_MAX_REGION_ISOMORPHISMS` isomorphisms of a region are scored, and
all searches together do at most :data:`_SEARCH_BUDGET` node visits. When a
bound is hit, what was found so far is kept, step 6 pairs the rest, and
:func:`match` warns once (:attr:`Matching.notes` says what happened).

Limits: operations of different labels are never paired, so an operation
that changes kind between the graphs (a ``linear`` made a ``conv2d``) stays
unmatched on both sides. Constant arguments are not part of the structure:
``x * 2`` and ``x * 3`` on the same ``x`` are interchangeable here and pair
in execution order. What stays unmatched is listed on its side with a
reason.

Fused modules are expanded into parts by the canonical graph, so a fusion
pairs part by part; :func:`match` then groups the parts that share fx nodes
into one :class:`Pair` (float ``conv, bn, relu`` ↔ quantized ``ConvReLU2d``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import networkx as nx
from networkx.algorithms.isomorphism import DiGraphMatcher
from torch import fx, nn

from .graph import INPUT, OUTPUT, OpGraph, build_op_graph
from .trace import trace

__all__ = ["Matching", "Pair", "align", "match", "match_graphs"]

logger = logging.getLogger(__name__)

# At most this many isomorphisms of one interchangeable region are scored.
_MAX_REGION_ISOMORPHISMS = 256
# Larger regions are not searched: DiGraphMatcher recurses once per node, and
# the number of isomorphisms of n identical branches grows as n!.
_MAX_REGION_NODES = 64
# Regions that look alike are compared pairwise only up to this many pairs.
_MAX_REGION_CANDIDATES = 64
# Work that all isomorphism searches together may do, in node visits: each
# candidate node pair DiGraphMatcher examines costs the region's size, as
# its state update does. This is a few hundred milliseconds.
_SEARCH_BUDGET = 30_000
# Scoring among equal candidates looks at no more than this many of them.
_MAX_SCORED_CANDIDATES = 32

_T = TypeVar("_T")


# How many pairs repr(Matching) shows.
_REPR_PAIRS = 5


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
    # What made the alignment less than certain (a search bound was hit).
    notes: tuple[str, ...] = ()
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

    def __repr__(self) -> str:
        shown = [
            f"  {p.name} ({p.kind}): {', '.join(p.float_nodes)} ↔ "
            f"{', '.join(p.quant_nodes)}"
            for p in self.pairs[:_REPR_PAIRS]
        ]
        if len(self.pairs) > _REPR_PAIRS:
            shown.append(f"  ... {len(self.pairs) - _REPR_PAIRS} more (matching.pairs)")
        return "\n".join([f"<Matching: {self.summary()}>", *shown])

    __str__ = __repr__

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

    Raises:
        ModelError: the float model has quantized operations and the
            quantized one has none (the two were passed the wrong way round).

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
    matching = match_graphs(build_op_graph(float_gm), build_op_graph(quant_gm))
    # Imported here: fxns.checks builds on this module.
    from .checks import check_direction

    check_direction(matching)
    return matching


def match_graphs(fg: OpGraph, qg: OpGraph) -> Matching:
    """Align two canonical graphs; :func:`match` without the tracing.

    Example:
        >>> from fxns.graph import build_op_graph  # doctest: +SKIP
        >>> match_graphs(build_op_graph(gm_a), build_op_graph(gm_b))  # doctest: +SKIP
    """
    aligner = _Aligner(fg, qg)
    mapping = aligner.run()
    matching = _group_pairs(fg, qg, mapping, tuple(aligner.notes()))
    logger.info(matching.summary())
    if matching.notes:
        warnings.warn(
            f"matching is uncertain: {'; '.join(matching.notes)}", stacklevel=3
        )

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

# A node's (forward, backward) signature.
_Sig = tuple[int, int]
# What identifies a node across the graphs: its label and structure, plus the
# matched nodes around it named by their float key.
_Tag = tuple[_Sig, tuple[tuple[int, str, tuple[int, ...]], ...]]


class _Side:
    """One canonical graph as plain dicts, which the aligner reads many times."""

    def __init__(self, og: OpGraph) -> None:
        self.og = og
        nodes = og.nodes
        self.keys = sorted(nodes, key=lambda k: nodes[k].order)
        self.rank = {k: i for i, k in enumerate(self.keys)}
        self.label = {k: nodes[k].label for k in self.keys}
        self.module = {k: nodes[k].module for k in self.keys}
        # The module a node is the whole or first part of ("" for the relu
        # part of a ConvReLU2d, which bears the conv's path), and every such
        # (label, module) of the graph.
        self.own_module = {
            k: nodes[k].module if nodes[k].order[1] == 0 else "" for k in self.keys
        }
        self.named = {(self.label[k], m) for k, m in self.own_module.items() if m}
        self.shape = {k: nodes[k].shape for k in self.keys}
        n_fx = max(len(og.fx_index), 1)
        self.position = {k: nodes[k].order[0] / n_fx for k in self.keys}
        # Neighbours with the input positions on the edge, in edge order.
        self.preds: dict[str, list[tuple[str, tuple[int, ...]]]] = {
            k: [] for k in self.keys
        }
        self.succs: dict[str, list[tuple[str, tuple[int, ...]]]] = {
            k: [] for k in self.keys
        }
        for a, b, ports in og.graph.edges(data="ports"):
            self.succs[a].append((b, ports))
            self.preds[b].append((a, ports))

    def is_end(self, key: str) -> bool:
        return self.og.nodes[key].parts[0] in (INPUT, OUTPUT)


def _signatures(f: _Side, q: _Side) -> tuple[dict[str, _Sig], dict[str, _Sig]]:
    """Forward and backward Merkle signatures of both graphs, in one table."""
    table: dict[Hashable, int] = {}
    result = []
    for side in (f, q):
        fwd: dict[str, int] = {}
        for key in side.keys:
            inputs = sorted(
                (port, fwd[pred]) for pred, ports in side.preds[key] for port in ports
            )
            fwd[key] = table.setdefault((side.label[key], *inputs), len(table))
        bwd: dict[str, int] = {}
        for key in reversed(side.keys):
            outputs = sorted(
                (port, bwd[succ]) for succ, ports in side.succs[key] for port in ports
            )
            bwd[key] = table.setdefault((side.label[key], *outputs), len(table))
        result.append({k: (fwd[k], bwd[k]) for k in side.keys})
    return result[0], result[1]


class _OutOfBudget(Exception):
    """The isomorphism searches have examined all the candidates they may."""


class _Region:
    """A connected group of unmatched nodes whose signatures both sides share."""

    def __init__(self, nodes: list[str], tags: dict[str, _Tag], modules: list[str]):
        # Nodes in execution order.
        self.nodes = nodes
        self.tags = tags
        # What must agree for two regions to be isomorphic.
        self.key: Hashable = tuple(sorted(tags.values()))
        # Module paths in the region: equal for the same layers on both sides.
        self.names: tuple[str, ...] = tuple(sorted(m for m in modules if m))
        self.graph = nx.DiGraph()


class _Aligner:
    """Steps 2 to 6 of the module docstring, on one pair of graphs."""

    def __init__(self, fg: OpGraph, qg: OpGraph) -> None:
        self.f, self.q = _Side(fg), _Side(qg)
        self.sig_f, self.sig_q = _signatures(self.f, self.q)
        self.f2q: dict[str, str] = {}
        self.q2f: dict[str, str] = {}
        self.budget = _SEARCH_BUDGET
        # Regions left to the fallbacks because a bound was hit.
        self.unsearched: list[str] = []
        self.out_of_budget = False

    def run(self) -> dict[str, str]:
        seeds = self._pair_ends() + self._pair_unique(lambda s: s)
        self._propagate(seeds)
        self._propagate(self._pair_unique(lambda s: s[0]))
        self._propagate(self._pair_unique(lambda s: s[1]))
        self._propagate(self._pair_named())
        self._solve_regions()
        self._propagate(self._pair_same_modules())
        self._pair_by_position()
        return dict(sorted(self.f2q.items(), key=lambda kv: self.f.rank[kv[0]]))

    def notes(self) -> list[str]:
        """What the user should know about how sure this alignment is."""
        notes = []
        if self.unsearched:
            first = ", ".join(sorted(self.unsearched, key=self.f.rank.__getitem__)[:3])
            notes.append(
                f"{len(self.unsearched)} float ops (first: {first}) sit in "
                "interchangeable regions too large or too many to search that "
                "module paths do not tell apart; they were paired by execution "
                "order, which can swap identical parallel branches"
            )
        if self.out_of_budget:
            notes.append(
                "the isomorphism search reached its work bound; the best "
                "correspondence found so far was kept"
            )
        return notes

    def _pair(self, f: str, q: str) -> None:
        assert f not in self.f2q and q not in self.q2f
        assert self.f.label[f] == self.q.label[q]
        self.f2q[f] = q
        self.q2f[q] = f

    def _names_differ(self, f: str, q: str) -> bool:
        """Module paths say ``f`` and ``q`` are different layers.

        They do when the two paths differ and one of them names a layer of
        the same label on the other side too: that layer is the partner.
        Structure gives way to this: when graphs differ, a signature can be
        unique on both sides and still join two different layers (an output
        tuple that grew by one shifts every later output's position).
        """
        a, b = self.f.own_module[f], self.q.own_module[q]
        if not a or not b or a == b:
            return False
        label = self.f.label[f]
        return (label, a) in self.q.named or (label, b) in self.f.named

    # -- 2. anchors -------------------------------------------------------------

    def _pair_ends(self) -> list[str]:
        # Model inputs pair by position and the output with the output,
        # whatever the rest of the graphs look like.
        ends_q = {self.q.label[k]: k for k in self.q.keys if self.q.is_end(k)}
        new = []
        for f in self.f.keys:
            q = ends_q.get(self.f.label[f]) if self.f.is_end(f) else None
            if q is not None:
                self._pair(f, q)
                new.append(f)
        return new

    def _pair_unique(self, part: Callable[[_Sig], Hashable]) -> list[str]:
        """Pair the nodes whose ``part`` of the signature is unique on both sides."""
        groups_f = _group(_left(self.f, self.f2q), lambda k: part(self.sig_f[k]))
        groups_q = _group(_left(self.q, self.q2f), lambda k: part(self.sig_q[k]))
        new = []
        for key, fs in groups_f.items():
            qs = groups_q.get(key)
            if (
                qs
                and len(fs) == 1
                and len(qs) == 1
                and not self._names_differ(fs[0], qs[0])
            ):
                self._pair(fs[0], qs[0])
                new.append(fs[0])
        return new

    # -- 3. propagation -------------------------------------------------------------

    def _propagate(self, seeds: list[str], by_position: bool = False) -> None:
        """Pair neighbours of pairs, in rounds, until nothing changes."""
        frontier = seeds
        while frontier:
            claims_f: dict[str, set[str]] = defaultdict(set)
            claims_q: dict[str, set[str]] = defaultdict(set)
            for f in frontier:
                for f_new, q_new in self._neighbour_pairs(f, self.f2q[f], by_position):
                    if self._names_differ(f_new, q_new):
                        continue
                    claims_f[f_new].add(q_new)
                    claims_q[q_new].add(f_new)
            frontier = []
            for f_new, qs in claims_f.items():
                q_new = next(iter(qs))
                if len(qs) == 1 and len(claims_q[q_new]) == 1:
                    self._pair(f_new, q_new)
                    frontier.append(f_new)

    def _neighbour_pairs(
        self, f: str, q: str, by_position: bool
    ) -> Iterator[tuple[str, str]]:
        for nbrs_f, nbrs_q in (
            (self.f.preds[f], self.q.preds[q]),
            (self.f.succs[f], self.q.succs[q]),
        ):
            groups_f: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
            for n, ports in nbrs_f:
                if n not in self.f2q:
                    groups_f[(self.f.label[n], ports)].append(n)
            if not groups_f:
                continue
            groups_q: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
            for n, ports in nbrs_q:
                if n not in self.q2f:
                    groups_q[(self.q.label[n], ports)].append(n)
            for key, fs in groups_f.items():
                qs = groups_q.get(key)
                if qs:
                    yield from self._split(fs, qs, by_position)

    def _split(
        self, fs: list[str], qs: list[str], by_position: bool
    ) -> list[tuple[str, str]]:
        """Pair candidates that some property tells apart, one-to-one."""
        if len(fs) == 1 and len(qs) == 1:
            return [(fs[0], qs[0])]
        found: list[tuple[str, str]] = []
        for key_f, key_q in self._refinements():
            buckets_f = _group(fs, key_f)
            buckets_q = _group(qs, key_q)
            for key, bucket in buckets_f.items():
                other = buckets_q.get(key)
                if key is not None and other and len(bucket) == 1 and len(other) == 1:
                    found.append((bucket[0], other[0]))
            if found:
                done_f = {a for a, _ in found}
                done_q = {b for _, b in found}
                fs = [n for n in fs if n not in done_f]
                qs = [n for n in qs if n not in done_q]
            if not fs or not qs:
                return found
        if by_position and len(fs) == len(qs):
            found.extend(
                zip(
                    sorted(fs, key=self.f.rank.__getitem__),
                    sorted(qs, key=self.q.rank.__getitem__),
                    strict=True,
                )
            )
        return found

    def _refinements(
        self,
    ) -> Iterator[tuple[Callable[[str], Hashable], Callable[[str], Hashable]]]:
        f, q = self.f, self.q
        # Already matched neighbours: the candidate that keeps the edges.
        yield (
            lambda n: self._around(f, n, None),
            lambda n: self._around(q, n, self.q2f),
        )
        yield self.sig_f.__getitem__, self.sig_q.__getitem__
        yield (lambda n: self.sig_f[n][0]), (lambda n: self.sig_q[n][0])
        yield (lambda n: self.sig_f[n][1]), (lambda n: self.sig_q[n][1])
        yield (lambda n: f.module[n] or None), (lambda n: q.module[n] or None)
        yield (lambda n: f.shape[n] or None), (lambda n: q.shape[n] or None)

    def _around(
        self, side: _Side, key: str, to_float: dict[str, str] | None
    ) -> tuple[tuple[int, str, tuple[int, ...]], ...]:
        """The matched neighbours of ``key``, named by their float key."""
        matched = self.f2q if to_float is None else to_float
        around = []
        for direction, nbrs in enumerate((side.preds[key], side.succs[key])):
            for n, ports in nbrs:
                if n in matched:
                    around.append(
                        (direction, n if to_float is None else matched[n], ports)
                    )
        return tuple(sorted(around))

    # -- 4. names ------------------------------------------------------------------

    def _pair_named(self) -> list[str]:
        """Among equal signatures, pair the nodes of the same module path."""
        groups_f = _group(
            _left(self.f, self.f2q),
            lambda k: (self.sig_f[k], self.f.module[k]) if self.f.module[k] else None,
        )
        groups_q = _group(
            _left(self.q, self.q2f),
            lambda k: (self.sig_q[k], self.q.module[k]) if self.q.module[k] else None,
        )
        new = []
        for key, fs in groups_f.items():
            qs = groups_q.get(key)
            if key is not None and qs and len(fs) == 1 and len(qs) == 1:
                self._pair(fs[0], qs[0])
                new.append(fs[0])
        return new

    # -- 5. interchangeable regions ------------------------------------------

    def _solve_regions(self) -> None:
        left_f = {self.sig_f[k] for k in self.f.keys if k not in self.f2q}
        left_q = {self.sig_q[k] for k in self.q.keys if k not in self.q2f}
        shared = left_f & left_q
        if not shared:
            return

        regions_f = self._regions(self.f, self.sig_f, shared, None)
        regions_q = self._regions(self.q, self.sig_q, shared, self.q2f)
        by_key_q: dict[Hashable, list[_Region]] = defaultdict(list)
        for region in regions_q:
            by_key_q[region.key].append(region)
        by_key_f: dict[Hashable, list[_Region]] = defaultdict(list)
        for region in regions_f:
            by_key_f[region.key].append(region)

        seeds: list[str] = []
        for key, group_f in by_key_f.items():
            for region_f, region_q, mapping in self._pair_regions(
                group_f, by_key_q.get(key, [])
            ):
                if mapping is None:
                    mapping = self._solve(region_f, region_q)
                for f, q in (mapping or {}).items():
                    if not self._names_differ(f, q):
                        self._pair(f, q)
                        seeds.append(f)
        self._propagate(seeds)

    def _regions(
        self,
        side: _Side,
        sigs: dict[str, _Sig],
        shared: set[_Sig],
        to_float: dict[str, str] | None,
    ) -> list[_Region]:
        matched = self.f2q if to_float is None else to_float
        inside = {k for k in side.keys if k not in matched and sigs[k] in shared}
        seen: set[str] = set()
        regions = []
        for start in side.keys:
            if start not in inside or start in seen:
                continue
            component = []
            stack = [start]
            seen.add(start)
            while stack:
                key = stack.pop()
                component.append(key)
                for n, _ in itertools.chain(side.preds[key], side.succs[key]):
                    if n in inside and n not in seen:
                        seen.add(n)
                        stack.append(n)
            component.sort(key=side.rank.__getitem__)
            tags = {k: (sigs[k], self._around(side, k, to_float)) for k in component}
            regions.append(
                _Region(component, tags, [side.module[k] for k in component])
            )
        return regions

    def _pair_regions(
        self, group_f: list[_Region], group_q: list[_Region]
    ) -> list[tuple[_Region, _Region, dict[str, str] | None]]:
        """Which float region goes with which quantized one, among equal keys.

        With each pair comes the node mapping when finding the pair already
        found it. Regions without module paths are left to the position
        fallback: nothing else tells them apart, and pairing them there needs
        no search.
        """
        named_f = [r for r in group_f if r.names]
        named_q = [r for r in group_q if r.names]
        if not named_f or not named_q:
            return []
        for region in named_f:
            if len(region.nodes) > _MAX_REGION_NODES:
                self.unsearched.extend(region.nodes)
        named_f = [r for r in named_f if len(r.nodes) <= _MAX_REGION_NODES]
        named_q = [r for r in named_q if len(r.nodes) <= _MAX_REGION_NODES]

        # The same module paths: the same layers. Several regions with the
        # same paths (a module called in each) differ only in position.
        pairs: list[tuple[_Region, _Region, dict[str, str] | None]] = []
        by_names_q = _group(named_q, lambda r: r.names)
        for names, regions in _group(named_f, lambda r: r.names).items():
            for region_f, region_q in zip(
                regions, by_names_q.get(names, []), strict=False
            ):
                pairs.append((region_f, region_q, None))
        taken = {id(r) for pair in pairs for r in pair[:2]}
        left_f = [r for r in named_f if id(r) not in taken]
        left_q = [r for r in named_q if id(r) not in taken]
        if not left_f or not left_q:
            return pairs

        # Few left: score every combination and take the best first.
        if len(left_f) * len(left_q) > _MAX_REGION_CANDIDATES:
            self.unsearched.extend(n for r in left_f for n in r.nodes)
            return pairs
        scored = []
        for i, region_f in enumerate(left_f):
            for j, region_q in enumerate(left_q):
                found = self._best_isomorphism(region_f, region_q)
                if found is not None:
                    scored.append((-found[0], i, j, found[1]))
        used_f: set[int] = set()
        used_q: set[int] = set()
        for _, i, j, mapping in sorted(scored, key=lambda s: s[:3]):
            if i not in used_f and j not in used_q:
                used_f.add(i)
                used_q.add(j)
                pairs.append((left_f[i], left_q[j], mapping))
        return pairs

    def _solve(self, region_f: _Region, region_q: _Region) -> dict[str, str] | None:
        """The node mapping between two regions: module paths kept if possible."""
        if region_f.names:
            try:
                first = next(self._matcher(region_f, region_q, names=True), None)
            except _OutOfBudget:
                self.out_of_budget = True
                first = None
            if first is not None:
                return first
        found = self._best_isomorphism(region_f, region_q)
        return None if found is None else found[1]

    def _best_isomorphism(
        self, region_f: _Region, region_q: _Region
    ) -> tuple[float, dict[str, str]] | None:
        best: tuple[float, dict[str, str]] | None = None
        try:
            for mapping in itertools.islice(
                self._matcher(region_f, region_q, names=False),
                _MAX_REGION_ISOMORPHISMS,
            ):
                score = sum(self._affinity(f, q) for f, q in mapping.items())
                if best is None or score > best[0]:
                    best = (score, mapping)
        except _OutOfBudget:
            # Keep the best isomorphism found so far: a partial answer.
            self.out_of_budget = True
        return best

    def _matcher(
        self, region_f: _Region, region_q: _Region, names: bool
    ) -> Iterator[dict[str, str]]:
        if self.budget <= 0:
            self.out_of_budget = True
            return iter(())
        for region, side in ((region_f, self.f), (region_q, self.q)):
            if not region.graph:
                _fill_region_graph(region, side)
        return (
            dict(m)
            for m in _BoundedMatcher(
                self, region_f.graph, region_q.graph, names
            ).isomorphisms_iter()
        )

    def _affinity(self, f: str, q: str) -> float:
        """How much besides structure says ``f`` and ``q`` are the same layer."""
        score = 0.0
        a, b = self.f.module[f], self.q.module[q]
        if a and a == b:
            score += 4.0
        elif a and b and (a.endswith("." + b) or b.endswith("." + a)):
            # One model wraps the other (QuantWrapper's "module." prefix).
            score += 3.0
        if self.f.shape[f] and self.f.shape[f] == self.q.shape[q]:
            score += 2.0
        # Closer relative positions in execution order win the last ties.
        return score - abs(self.f.position[f] - self.q.position[q])

    # -- 6. last resorts ----------------------------------------------------------

    def _pair_same_modules(self) -> list[str]:
        """Leftovers of the same label and module path, in call order."""
        left_q: dict[tuple[str, str], list[str]] = defaultdict(list)
        for q in self.q.keys:
            if q not in self.q2f and self.q.module[q]:
                left_q[(self.q.label[q], self.q.module[q])].append(q)
        new = []
        for f in self.f.keys:
            if f in self.f2q or not self.f.module[f]:
                continue
            candidates = left_q.get((self.f.label[f], self.f.module[f]))
            if candidates:
                self._pair(f, candidates.pop(0))
                new.append(f)
        return new

    def _pair_by_position(self) -> None:
        """Pair what is still ambiguous, structure first, then position."""
        classes_q = _group(_left(self.q, self.q2f), self.sig_q.__getitem__)
        classes_f = _group(_left(self.f, self.f2q), self.sig_f.__getitem__)
        guessed = 0
        for sig, fs in classes_f.items():
            qs = classes_q.get(sig, [])
            start = 0
            for f in fs:
                while start < len(qs) and qs[start] in self.q2f:
                    start += 1
                if f in self.f2q:
                    continue
                window = list(
                    itertools.islice(
                        (
                            qs[i]
                            for i in range(start, len(qs))
                            if qs[i] not in self.q2f
                            and not self._names_differ(f, qs[i])
                        ),
                        _MAX_SCORED_CANDIDATES,
                    )
                )
                if not window:
                    continue
                q = max(window, key=functools.partial(self._affinity, f))
                self._pair(f, q)
                guessed += 1
                self._propagate([f])
        self._propagate(list(self.f2q), by_position=True)
        if guessed:
            logger.debug("%d ops paired by position among equal candidates", guessed)


class _BoundedMatcher(DiGraphMatcher):
    """``DiGraphMatcher`` on region graphs, counting against a shared budget."""

    def __init__(
        self, aligner: _Aligner, g1: nx.DiGraph, g2: nx.DiGraph, names: bool
    ) -> None:
        super().__init__(g1, g2)
        self.aligner = aligner
        self.names = names

    def syntactic_feasibility(self, G1_node: Any, G2_node: Any) -> bool:
        a, b = self.G1.nodes[G1_node], self.G2.nodes[G2_node]
        if a["tag"] != b["tag"] or (self.names and a["module"] != b["module"]):
            return False
        self.aligner.budget -= len(self.G1)
        if self.aligner.budget < 0:
            raise _OutOfBudget
        return bool(super().syntactic_feasibility(G1_node, G2_node))

    def semantic_feasibility(self, G1_node: Any, G2_node: Any) -> bool:
        # Nodes were compared above; edges must carry the same input positions.
        for pred in self.G1.pred[G1_node]:
            if pred in self.core_1:
                other = self.G2.edges[self.core_1[pred], G2_node]
                if self.G1.edges[pred, G1_node]["ports"] != other["ports"]:
                    return False
        for succ in self.G1.succ[G1_node]:
            if succ in self.core_1:
                other = self.G2.edges[G2_node, self.core_1[succ]]
                if self.G1.edges[G1_node, succ]["ports"] != other["ports"]:
                    return False
        return True


def _fill_region_graph(region: _Region, side: _Side) -> None:
    inside = set(region.nodes)
    for key in region.nodes:
        region.graph.add_node(key, tag=region.tags[key], module=side.module[key])
    for key in region.nodes:
        for succ, ports in side.succs[key]:
            if succ in inside:
                region.graph.add_edge(key, succ, ports=ports)


def _group(
    items: Iterable[_T], key: Callable[[_T], Hashable]
) -> dict[Hashable, list[_T]]:
    """Items by key, each list in the items' order."""
    groups: dict[Hashable, list[_T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


def _left(side: _Side, matched: dict[str, str]) -> list[str]:
    """The unmatched nodes of ``side``, in execution order."""
    return [k for k in side.keys if k not in matched]


def _is_op(og: OpGraph, key: str) -> bool:
    return og.nodes[key].parts[0] not in (INPUT, OUTPUT)


# --- from node pairs to Pairs --------------------------------------------------


def _group_pairs(
    fg: OpGraph, qg: OpGraph, mapping: dict[str, str], notes: tuple[str, ...] = ()
) -> Matching:
    """Group node-level pairs that share fx nodes into one :class:`Pair` each."""
    # Union-find over fx nodes: op pairs that share an fx node form one Pair.
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(x: tuple[str, str]) -> tuple[str, str]:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for f, q in mapping.items():
        if not _is_op(fg, f):
            continue
        members = [("f", n) for n in fg.nodes[f].fx_nodes]
        members += [("q", n) for n in qg.nodes[q].fx_nodes]
        for member in members:
            parent.setdefault(member, member)
        for a, b in itertools.pairwise(members):
            parent[root(a)] = root(b)
    components: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for member in parent:
        components[root(member)].append(member)

    pairs = []
    inverse = {q: f for f, q in mapping.items()}
    for component in components.values():
        float_nodes = _in_order(fg, [n for side, n in component if side == "f"])
        quant_nodes = _in_order(qg, [n for side, n in component if side == "q"])
        pairs.append(_make_pair(fg, qg, mapping, inverse, float_nodes, quant_nodes))
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
        notes=notes,
        float_graph=fg,
        quant_graph=qg,
        op_pairs=dict(mapping),
    )


def _make_pair(
    fg: OpGraph,
    qg: OpGraph,
    mapping: dict[str, str],
    inverse: dict[str, str],
    float_nodes: tuple[str, ...],
    quant_nodes: tuple[str, ...],
) -> Pair:
    note = ""
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
