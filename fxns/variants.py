"""Lining up several quantized variants of one float model, layer by layer.

Each variant's :class:`~fxns.report.Report` has a row per matched *pair*, and
the pairs differ between variants: a variant that fused conv, batch norm and
relu into one quantized module has one row for the three (``conv1``), a
variant that did not has two (``conv1`` for conv+bn, ``relu``). A pair's
numbers describe the value its *last* float operation produces, so
:func:`align` writes them on that layer's row; the group's other layers are
marked as fused into it. The rows are the float model's layers, so they are
the same for every variant::

    name   kind         all sqnr   none sqnr
    conv1  conv2d              ↓           ↓
    bn1    batch_norm          ↓       29.78    <- none: conv+bn, read on bn1
    relu   relu            33.72       30.11    <- all: conv+bn+relu, read on relu

Read this way, the numbers of one row describe the same float tensor in every
variant; in ``propagated`` mode they are directly comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
from torch import nn

from .graph import build_op_graph
from .ops import Role
from .trace import trace

if TYPE_CHECKING:
    from .report import LayerResult, Report

__all__ = [
    "FUSED",
    "FloatLayer",
    "VariantCell",
    "VariantRow",
    "align",
    "float_layers",
    "layers_from_reports",
]

# Shown in a layer's cell when the layer is part of a group read further down.
FUSED = "↓"


@dataclass(frozen=True)
class FloatLayer:
    """One operation of the float model: a row of the side-by-side table.

    Example:
        >>> [layer.name for layer in float_layers(model)][:3]  # doctest: +SKIP
        ['conv1', 'bn1', 'relu']
    """

    # Row name: the module path ("layer1.0.relu:1" for the second call of a
    # module), else the fx node name ("add_3").
    name: str
    # The fx node name in the traced float graph.
    node: str
    # Canonical kind of this operation alone ("conv2d", "batch_norm").
    kind: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {"name": self.name, "node": self.node, "kind": self.kind}


@dataclass(frozen=True)
class VariantCell:
    """What one variant says about one float layer."""

    # The variant's row (pair) that covers this layer.
    group: str
    # Canonical kind of that group ("conv2d+batch_norm+relu").
    group_kind: str
    # True when the group's compared value is this layer's output, so that
    # ``metrics`` hold the group's numbers; False for the group's other
    # layers, which were fused into it.
    reads_here: bool
    # The group's metrics where it reads here, empty otherwise.
    metrics: Mapping[str, float]
    # The group's note ("not compared: ...") where it reads here.
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite metrics as strings)."""
        from .report import _json_float

        return {
            "group": self.group,
            "group_kind": self.group_kind,
            "reads_here": self.reads_here,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "note": self.note,
        }


@dataclass(frozen=True)
class VariantRow:
    """One float layer and what each variant says about it."""

    layer: FloatLayer
    # Variant name → its cell; ``None`` where no pair of that variant covers
    # the layer (it has no partner in that quantized model).
    cells: Mapping[str, VariantCell | None]

    @property
    def name(self) -> str:
        """The layer's row name."""
        return self.layer.name

    def value(self, variant: str, metric: str) -> float | None:
        """The metric of ``variant`` on this row, or ``None`` if not read here."""
        cell = self.cells.get(variant)
        if cell is None or not cell.reads_here:
            return None
        return cell.metrics.get(metric)


def float_layers(
    float_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> list[FloatLayer]:
    """The operations of the float model in execution order, one per fx node.

    Observers, ``Identity``, eval-mode dropout and other pass-throughs are
    not layers; a batch norm is its own layer even though comparisons keep
    it with the conv before it.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
        ...                             torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        >>> [(x.name, x.kind) for x in float_layers(model)]
        [('0', 'conv2d'), ('1', 'batch_norm'), ('2', 'relu')]
    """
    og = build_op_graph(
        trace(
            float_model,
            leaf_modules=leaf_modules,
            leaf_module_names=leaf_module_names,
            role="float model",
        )
    )
    layers = []
    for node in og.gm.graph.nodes:
        if node.op in ("placeholder", "output") or og.roles.get(node.name) != Role.OP:
            continue
        kinds: list[str] = []
        for key in og.fx_to_ops[node.name]:
            op = og.nodes[key]
            if len(op.fx_nodes) == len(op.parts):
                kinds.append(op.parts[op.fx_nodes.index(node.name)])
            else:
                kinds.extend(op.parts)
        layers.append(
            FloatLayer(
                name=og.qualified_names[node.name],
                node=node.name,
                kind="+".join(kinds),
            )
        )
    return layers


def layers_from_reports(reports: Mapping[str, Report]) -> list[FloatLayer]:
    """The float layers the reports' rows cover, when the model is not at hand.

    Execution order is merged from the reports' row orders. A layer alone in
    its pair is named like the pair; a layer known only as part of a group
    is named by its fx node name.

    Example:
        >>> [x.name for x in layers_from_reports(v.reports)]  # doctest: +SKIP
        ['conv1', 'bn1', 'relu', 'maxpool']
    """
    order = nx.DiGraph()
    first_seen: dict[str, int] = {}
    named: dict[str, tuple[str, str]] = {}
    for report in reports.values():
        previous: str | None = None
        for row in report.rows:
            for node in row.float_nodes:
                first_seen.setdefault(node, len(first_seen))
                order.add_node(node)
                if previous is not None and previous != node:
                    order.add_edge(previous, node)
                previous = node
            if len(row.float_nodes) == 1:
                named.setdefault(row.float_nodes[0], (row.name, row.kind))
    try:
        nodes = list(
            nx.lexicographical_topological_sort(order, key=lambda n: first_seen[n])
        )
    except nx.NetworkXUnfeasible:
        # The reports disagree on the order: fall back to first appearance.
        nodes = sorted(first_seen, key=first_seen.__getitem__)
    return [
        FloatLayer(
            name=named.get(n, (n, ""))[0], node=n, kind=named.get(n, ("", ""))[1]
        )
        for n in nodes
    ]


def align(
    reports: Mapping[str, Report], layers: Sequence[FloatLayer]
) -> list[VariantRow]:
    """One :class:`VariantRow` per float layer, with each variant's cell.

    Example:
        >>> rows = align(v.reports, float_layers(float_model))  # doctest: +SKIP
        >>> rows[2].value("fused", "sqnr")  # doctest: +SKIP
        38.4
    """
    cells: dict[str, dict[str, VariantCell]] = {layer.node: {} for layer in layers}
    for variant, report in reports.items():
        for row in report.rows:
            for node in row.float_nodes:
                if node in cells:
                    cells[node][variant] = _cell(
                        row, reads_here=node == row.float_nodes[-1]
                    )
    return [
        VariantRow(layer, {v: cells[layer.node].get(v) for v in reports})
        for layer in layers
    ]


def _cell(row: LayerResult, *, reads_here: bool) -> VariantCell:
    return VariantCell(
        group=row.name,
        group_kind=row.kind,
        reads_here=reads_here,
        metrics=dict(row.metrics) if reads_here else {},
        note=row.note if reads_here else "",
    )
