"""The graph diff: both models' operations side by side, in execution order.

:func:`diff` matches two models (:func:`fxns.match`) and lays the result out
as rows: a matched pair of operations, a fusion (several fx nodes on one or
both sides), or an operation that only one side has. A :class:`GraphDiff`
prints as two aligned columns, float on the left and quantized on the
right::

      float model                          quantized model
      conv1       conv2d             ─┬─   conv1       conv2d+relu
      bn1         batch_norm         ─┤
      relu        relu               ─┘
      maxpool     max_pool2d         ───   maxpool     max_pool2d
    - dropout_1   sigmoid
    +                                      hardswish   hardswish

``-`` marks a float-only operation and ``+`` a quantized-only one; the
reasons are listed under the table. Rows follow the float model's execution
order, and a quantized-only operation comes right after the row of the
quantized operation that runs before it. :meth:`GraphDiff.to_markdown` gives
a table and :meth:`GraphDiff.to_dot` a Graphviz drawing, coloured by a
:class:`~fxns.report.Report` when one is given.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tabulate import tabulate
from torch import nn

from . import ops
from .graph import OpGraph
from .match import Matching, match
from .ops import Role
from .report import Report

__all__ = [
    "FLOAT_ONLY",
    "FUSED",
    "MATCHED",
    "QUANT_ONLY",
    "DiffNode",
    "DiffRow",
    "GraphDiff",
    "diff",
]

# Row statuses.
MATCHED = "matched"
FUSED = "fused"
FLOAT_ONLY = "float-only"
QUANT_ONLY = "quantized-only"

# In the text printout: the marks in the first column and the headings.
_MARKS = {MATCHED: " ", FUSED: " ", FLOAT_ONLY: "-", QUANT_ONLY: "+"}
_MARKDOWN_STATUS = {MATCHED: "", FUSED: "fused", FLOAT_ONLY: "-", QUANT_ONLY: "+"}
_FLOAT_HEADING = "float model"
_QUANT_HEADING = "quantized model"
# Narrowest columns the printout shrinks names and kinds to.
_MIN_NAME = 8
_MIN_KIND = 6

# In the Graphviz drawing.
_UNMATCHED_COLOUR = "#f6b26b"
_LOW_SQNR_COLOUR = "#e06666"
_PAIR_EDGE_COLOUR = "#999999"


@dataclass(frozen=True)
class DiffNode:
    """One fx node of one side, as the printout shows it."""

    # The fx node's name in its traced graph.
    node: str
    # Module path ("layer1.0.conv1", ":<k>" for the k-th call), else the fx
    # node name.
    name: str
    # Canonical kind of this node alone ("conv2d", "conv2d+relu").
    kind: str
    # Readable op name ("nn.Conv2d", "quantized::add_relu").
    op: str


@dataclass(frozen=True)
class DiffRow:
    """A matched pair, a fusion, or an operation only one side has."""

    # MATCHED, FUSED (the sides have different numbers of fx nodes),
    # FLOAT_ONLY or QUANT_ONLY.
    status: str
    # The row's name: the pair's name, or the unmatched node's name.
    name: str
    # The fx nodes of each side, in execution order; one side is empty for
    # FLOAT_ONLY and QUANT_ONLY rows.
    float_side: tuple[DiffNode, ...]
    quant_side: tuple[DiffNode, ...]
    # Why an unmatched node has no partner, or what is odd about a pair.
    reason: str = ""


@dataclass
class GraphDiff:
    """Two models' operations side by side; ``print`` it for the printout.

    Example:
        >>> d = fxns.diff(float_model, quant_model)  # doctest: +SKIP
        >>> print(d)  # doctest: +SKIP
        >>> d.summary()  # doctest: +SKIP
        'matched 23, fused 20, float-only 0, quantized-only 0'
        >>> open("diff.dot", "w").write(d.to_dot(report))  # doctest: +SKIP
    """

    # Rows in execution order (see the module docstring).
    rows: list[DiffRow]
    # The matching the rows come from.
    matching: Matching = field(repr=False)

    @classmethod
    def from_matching(cls, matching: Matching) -> GraphDiff:
        """The diff of an existing :class:`~fxns.Matching`.

        Example:
            >>> GraphDiff.from_matching(fxns.match(f, q))  # doctest: +SKIP
        """
        return cls(rows=_rows(matching), matching=matching)

    def count(self, status: str) -> int:
        """How many rows have ``status`` (MATCHED, FUSED, ...)."""
        return sum(1 for row in self.rows if row.status == status)

    def summary(self) -> str:
        """One line: pairs one-to-one, fusions, and each side's leftovers.

        Example:
            >>> d.summary()  # doctest: +SKIP
            'matched 23, fused 20, float-only 0, quantized-only 0'
        """
        return (
            f"matched {self.count(MATCHED)}, fused {self.count(FUSED)}, "
            f"float-only {self.count(FLOAT_ONLY)}, "
            f"quantized-only {self.count(QUANT_ONLY)}"
        )

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        """The printout as preformatted HTML (notebooks, the HTML report)."""
        return f"<pre class='fxns-diff'>{html.escape(self.text(width=120))}</pre>"

    def text(self, width: int = 80) -> str:
        """The printout, at most ``width`` characters a line.

        Where the columns would not fit otherwise, long module paths are
        abbreviated ("features.4.block.2.fc1" → "f.4.b.2.fc1") and long kinds
        lose their end ("…").

        Example:
            >>> print(d.text(width=100))  # doctest: +SKIP
        """
        return _Text(self, width).render()

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table, one row per pair or leftover.

        Example:
            >>> print(d.to_markdown())  # doctest: +SKIP
            |   | float | kind | quantized | kind |
            ...
        """
        table = []
        for row in self.rows:
            table.append(
                [
                    _MARKDOWN_STATUS[row.status],
                    "<br>".join(f"`{n.name}`" for n in row.float_side),
                    "<br>".join(n.kind for n in row.float_side),
                    "<br>".join(f"`{n.name}`" for n in row.quant_side),
                    "<br>".join(n.kind for n in row.quant_side),
                    row.reason,
                ]
            )
        body = tabulate(
            table,
            headers=["", "float", "kind", "quantized", "kind", "note"],
            tablefmt="github",
        )
        return f"{body}\n\n{self.summary()}\n"

    def to_dot(self, report: Report | None = None, low_sqnr: float = 20.0) -> str:
        """Graphviz text: the two graphs side by side, pairs joined by dashes.

        Args:
            report: a comparison of the same two models; nodes of rows whose
                SQNR is below ``low_sqnr`` are coloured red and labelled
                with it.
            low_sqnr: the SQNR (dB) under which a row counts as low.

        Unmatched nodes are orange. Render with ``dot -Tsvg diff.dot``.

        Example:
            >>> report = fxns.compare_activations(f, q, data)  # doctest: +SKIP
            >>> Path("diff.dot").write_text(d.to_dot(report))  # doctest: +SKIP
        """
        return _dot(self, report, low_sqnr)


def diff(
    float_model: nn.Module,
    quant_model: nn.Module,
    *,
    leaf_modules: Sequence[type[nn.Module]] = (),
    leaf_module_names: Sequence[str] = (),
) -> GraphDiff:
    """Match two models and lay their operations out side by side.

    Args:
        float_model: the float model, an ``nn.Module`` or ``GraphModule``.
        quant_model: its quantized counterpart.
        leaf_modules: module classes to keep as single operations.
        leaf_module_names: submodule names to keep as single operations.

    Returns:
        A :class:`GraphDiff`; ``print`` it for two aligned columns.

    Example:
        >>> import copy, torch, fxns
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> print(fxns.diff(model, copy.deepcopy(model)).summary())
        matched 2, fused 0, float-only 0, quantized-only 0
    """
    return GraphDiff.from_matching(
        match(
            float_model,
            quant_model,
            leaf_modules=leaf_modules,
            leaf_module_names=leaf_module_names,
        )
    )


# --- rows ------------------------------------------------------------------------


def _rows(matching: Matching) -> list[DiffRow]:
    fg, qg = matching.float_graph, matching.quant_graph
    assert fg is not None and qg is not None

    # Each row sorts by a float position; a quantized-only row goes after
    # the row holding the quantized node that runs just before it.
    keyed: list[tuple[tuple[int, int, int], DiffRow]] = []
    quant_row_key: dict[str, tuple[int, int, int]] = {}
    for pair in matching.pairs:
        key = (fg.fx_index[pair.float_nodes[0]], 0, 0)
        # conv+bn on both sides is a pair of groups, not a fusion.
        fused = len(pair.float_nodes) != len(pair.quant_nodes)
        row = DiffRow(
            status=FUSED if fused else MATCHED,
            name=pair.name,
            float_side=tuple(_node(fg, n) for n in pair.float_nodes),
            quant_side=tuple(_node(qg, n) for n in pair.quant_nodes),
            reason=pair.note,
        )
        keyed.append((key, row))
        for n in pair.quant_nodes:
            quant_row_key[n] = key
    for name, reason in matching.float_reasons.items():
        node = _node(fg, name)
        row = DiffRow(FLOAT_ONLY, node.name, (node,), (), reason)
        keyed.append(((fg.fx_index[name], 0, 0), row))

    previous = (-1, 0, 0)
    unmatched_q = matching.quant_reasons
    for fx_node in qg.gm.graph.nodes:
        name = fx_node.name
        if name in quant_row_key:
            previous = quant_row_key[name]
        elif name in unmatched_q:
            node = _node(qg, name)
            row = DiffRow(QUANT_ONLY, node.name, (), (node,), unmatched_q[name])
            keyed.append(((previous[0], 1, qg.fx_index[name]), row))
    keyed.sort(key=lambda kr: kr[0])
    return [row for _, row in keyed]


def _node(og: OpGraph, name: str) -> DiffNode:
    return DiffNode(
        node=name,
        name=og.qualified_names[name],
        kind=_own_kind(og, name),
        op=og.displays.get(name, ""),
    )


def _own_kind(og: OpGraph, name: str) -> str:
    """The kind of one fx node by itself (a folded batch_norm apart)."""
    node = og.fx_node(name)
    if node.op == "call_module":
        found = ops.classify_module(og.gm.get_submodule(str(node.target)))
    elif node.op == "call_method":
        found = ops.classify_method(str(node.target))
    elif node.op == "call_function" and callable(node.target):
        found = ops.classify_function(node.target, node.args)
    else:
        return og.kind_of((name,))
    if found.role is not Role.OP or not found.parts:
        return og.kind_of((name,))
    return "+".join(found.parts)


# --- text --------------------------------------------------------------------------


class _Text:
    """The printout: widths chosen to fit, then one line per node."""

    def __init__(self, d: GraphDiff, width: int) -> None:
        self.d = d
        self.width = width
        nodes = [n for row in d.rows for n in (*row.float_side, *row.quant_side)]
        names = sorted(len(n.name) for n in nodes) or [0]
        kinds = sorted(len(n.kind) for n in nodes) or [0]
        self.name_w, self.kind_w = _fit(names, kinds, width)

    def render(self) -> str:
        side = self.name_w + 1 + self.kind_w
        rest = self.width - side - 7
        lines = [
            f"  {_FLOAT_HEADING:<{side}}     {_QUANT_HEADING}",
            f"  {'─' * side}     {'─' * min(side, rest)}",
        ]
        for row in self.d.rows:
            lines.extend(self._row(row))
        lines.append("")
        lines.append(self.d.summary())
        lines.extend(self._footer())
        return "\n".join(lines) + "\n"

    def _row(self, row: DiffRow) -> list[str]:
        height = max(len(row.float_side), len(row.quant_side))
        out = []
        for i in range(height):
            f = row.float_side[i] if i < len(row.float_side) else None
            q = row.quant_side[i] if i < len(row.quant_side) else None
            paired = bool(row.float_side and row.quant_side)
            link = _link(i, height, f is not None, q is not None) if paired else ""
            left = self._cell(f, self.kind_w)
            right = self._cell(q, self.width - 9 - 2 * self.name_w - self.kind_w)
            mark = _MARKS[row.status] if i == 0 else " "
            out.append(f"{mark} {left} {link:3} {right}".rstrip())
        return out

    def _cell(self, node: DiffNode | None, kind_w: int) -> str:
        if node is None:
            return " " * (self.name_w + 1 + self.kind_w)
        name = _shorten_path(node.name, self.name_w)
        kind = _shorten_end(node.kind, max(kind_w, _MIN_KIND))
        return f"{name:<{self.name_w}} {kind:<{self.kind_w}}"

    def _footer(self) -> list[str]:
        lines = []
        leftovers = [r for r in self.d.rows if r.status in (FLOAT_ONLY, QUANT_ONLY)]
        if leftovers:
            lines.append("")
            lines.append("without a partner:")
            for row in leftovers:
                lines.append(f"  {_MARKS[row.status]} {row.name}: {row.reason}")
        odd = [r for r in self.d.rows if r.reason and r.status in (MATCHED, FUSED)]
        if odd:
            lines.append("")
            lines.append("notes:")
            lines.extend(f"  {row.name}: {row.reason}" for row in odd)
        for note in self.d.matching.notes:
            lines.append("")
            lines.append(f"uncertain: {note}")
        return lines


def _fit(names: list[int], kinds: list[int], width: int) -> tuple[int, int]:
    """Column widths that fit ``width`` and cut the fewest characters.

    A line is ``m name kind ─── name kind``: 9 characters besides the two
    names and two kinds. ``names`` and ``kinds`` are sorted lengths.
    """
    best: tuple[int, int, int] | None = None
    for name_w in range(max(names[-1], _MIN_NAME), _MIN_NAME - 1, -1):
        kind_w = min(kinds[-1], (width - 9 - 2 * name_w) // 2)
        if kind_w < _MIN_KIND:
            continue
        cut = sum(max(n - name_w, 0) for n in names) + sum(
            max(k - kind_w, 0) for k in kinds
        )
        if best is None or cut < best[0]:
            best = (cut, name_w, kind_w)
    if best is None:
        return _MIN_NAME, _MIN_KIND
    return best[1], best[2]


def _link(i: int, height: int, left: bool, right: bool) -> str:
    """The connector on line ``i`` of a row ``height`` lines tall."""
    l_ = "─" if left else " "
    r_ = "─" if right else " "
    if height == 1:
        return "───"
    if i == 0:
        return f"{l_}┬{r_}"
    if i == height - 1:
        middle = {(True, True): "┴", (True, False): "┘", (False, True): "└"}
        return f"{l_}{middle[(left, right)]}{r_}"
    middle = {
        (True, True): "┼",
        (True, False): "┤",
        (False, True): "├",
        (False, False): "│",
    }
    return f"{l_}{middle[(left, right)]}{r_}"


def _shorten_path(text: str, width: int) -> str:
    """Fit a module path into ``width``, keeping its last component whole.

    Components are cut to their initial and trailing digits from the left
    ("features.4.block.2.fc1" → "f.4.b.2.fc1", "layer2" → "l2") until it fits;
    failing that, the middle makes way for "…".
    """
    parts = text.split(".")
    for i in range(len(parts) - 1):
        if len(".".join(parts)) <= width:
            break
        part = parts[i]
        letters = len(part.rstrip("0123456789"))
        if letters > 1:
            parts[i] = part[0] + part[letters:]
    text = ".".join(parts)
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{text[:head]}…{text[len(text) - tail :]}"


def _shorten_end(text: str, width: int) -> str:
    return text if len(text) <= width else f"{text[: width - 1]}…"


# --- Graphviz --------------------------------------------------------------------


def _dot(d: GraphDiff, report: Report | None, low_sqnr: float) -> str:
    fg, qg = d.matching.float_graph, d.matching.quant_graph
    assert fg is not None and qg is not None

    # fx node → (fill colour, extra label line) from the report.
    marks: dict[tuple[str, str], tuple[str, str]] = {}
    for row in d.rows:
        if row.status in (FLOAT_ONLY, QUANT_ONLY):
            for side, nodes in (("f", row.float_side), ("q", row.quant_side)):
                for n in nodes:
                    marks[(side, n.node)] = (_UNMATCHED_COLOUR, row.status)
    if report is not None:
        for result in report.rows:
            sqnr = result.metrics.get("sqnr")
            if sqnr is None or math.isnan(sqnr) or sqnr >= low_sqnr:
                continue
            for side, names in (("f", result.float_nodes), ("q", result.quant_nodes)):
                for name in names:
                    marks[(side, name)] = (_LOW_SQNR_COLOUR, f"SQNR {sqnr:.1f} dB")

    lines = [
        "digraph fxns_diff {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, '
        'fontname="Helvetica", fontsize=10];',
        '  edge [color="#444444"];',
    ]
    for side, og, title in (("f", fg, _FLOAT_HEADING), ("q", qg, _QUANT_HEADING)):
        lines.append(f"  subgraph cluster_{side} {{")
        lines.append(f"    label={_quote(title)};")
        lines.extend(f"    {line}" for line in _dot_side(side, og, marks))
        lines.append("  }")
    for row in d.rows:
        if row.float_side and row.quant_side:
            a = _dot_id("f", row.float_side[-1].node)
            b = _dot_id("q", row.quant_side[-1].node)
            lines.append(
                f"  {a} -> {b} [style=dashed, arrowhead=none, constraint=false, "
                f'color="{_PAIR_EDGE_COLOUR}"];'
            )
    lines.append(f"  label={_quote(d.summary())};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_side(
    side: str, og: OpGraph, marks: dict[tuple[str, str], tuple[str, str]]
) -> list[str]:
    fx_nodes = list(
        dict.fromkeys(n for node in og.nodes.values() for n in node.fx_nodes)
    )
    fx_nodes.sort(key=og.fx_index.__getitem__)
    lines = []
    for name in fx_nodes:
        label = f"{og.qualified_names[name]}\n{_own_kind(og, name)}"
        attrs = ""
        if (side, name) in marks:
            colour, extra = marks[(side, name)]
            label += f"\n{extra}"
            attrs = f', fillcolor="{colour}"'
        shape = (
            ", shape=ellipse"
            if og.fx_node(name).op in ("placeholder", "output")
            else ""
        )
        lines.append(f"{_dot_id(side, name)} [label={_quote(label)}{attrs}{shape}];")

    edges: dict[tuple[str, str], None] = {}
    for node in og.nodes.values():
        for a, b in zip(node.fx_nodes, node.fx_nodes[1:], strict=False):
            edges[(a, b)] = None
    for a, b in og.graph.edges:
        src, dst = og.nodes[a].fx_nodes[-1], og.nodes[b].fx_nodes[0]
        if src != dst:
            edges[(src, dst)] = None
    for a, b in edges:
        lines.append(f"{_dot_id(side, a)} -> {_dot_id(side, b)};")
    return lines


def _dot_id(side: str, name: str) -> str:
    return _quote(f"{side}:{name}")


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
