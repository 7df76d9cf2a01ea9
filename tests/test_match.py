"""The matcher: structure first, names only to break ties, never order."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import fxns

from .conftest import quantize_module


class TwoConvs(nn.Module):
    def __init__(self, swapped: bool = False) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 3, padding=1)
        self.swapped = swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swapped:
            return self.conv_b(x) + self.conv_a(x)
        return self.conv_a(x) + self.conv_b(x)


def test_operand_order_of_add_does_not_change_the_pairs() -> None:
    float_model = TwoConvs().eval()
    quant_source = copy.deepcopy(float_model)
    quant_source.swapped = True
    quant = quantize_module(quant_source, torch.randn(1, 3, 8, 8))

    m = fxns.match(float_model, quant)
    by_name = {p.name: p for p in m.pairs}
    assert by_name["conv_a"].quant_nodes == ("conv_a",)
    assert by_name["conv_b"].quant_nodes == ("conv_b",)
    assert m.unmatched_float == m.unmatched_quant == ()


class Branches(nn.Module):
    """Two branches that differ only in which module they use."""

    def __init__(self, order: str = "ab") -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "ab":
            ya = self.a(x)
            yb = self.b(x)
        else:
            yb = self.b(x)
            ya = self.a(x)
        return ya * yb


def test_written_order_of_branches_does_not_change_the_pairs() -> None:
    float_model = Branches("ab").eval()
    source = copy.deepcopy(float_model)
    source.order = "ba"
    quant = quantize_module(source, torch.randn(1, 3, 8, 8))
    m = fxns.match(float_model, quant)
    for pair in m.pairs:
        if pair.kind.startswith("conv2d"):
            assert (
                pair.quant_nodes[0].split("_")[0] == pair.float_nodes[0].split("_")[0]
            )
    kinds = sorted(p.kind for p in m.pairs)
    assert kinds == ["conv2d+relu", "conv2d+relu", "mul"]


def test_fusion_pairs_unfused_float_with_fused_quantized() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    ).eval()
    quant = quantize_module(model, torch.randn(1, 3, 8, 8))
    m = fxns.match(model, quant)
    first = m.pairs[0]
    assert first.float_nodes == ("_0", "_1", "_2")
    assert first.kind == "conv2d+batch_norm+relu"
    assert first.quant_ops == ("nniq.ConvReLU2d",)
    assert first.name == "0"
    assert [p.kind for p in m.pairs] == ["conv2d+batch_norm+relu", "flatten", "linear"]


def test_functional_and_module_forms_match() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(nn.functional.linear(x, self.w))

    float_model = Functional().eval()
    quant = quantize_module(float_model, torch.randn(2, 4))
    m = fxns.match(float_model, quant)
    # FX quantizes the functional linear and leaves torch.relu in float.
    assert [p.kind for p in m.pairs] == ["linear", "relu"]
    assert m.pairs[0].float_ops == ("F.linear",)
    assert m.pairs[0].quant_ops == ("quantized::linear",)


def test_unrelated_models_give_a_mostly_unmatched_result_and_one_warning() -> None:
    a = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 4, 3), nn.Tanh()
    ).eval()
    b = nn.Sequential(
        nn.Linear(3, 5), nn.ReLU6(), nn.Linear(5, 2), nn.Softmax(dim=-1)
    ).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = fxns.match(a, b)
    relevant = [w for w in caught if "could be matched" in str(w.message)]
    assert len(relevant) == 1
    assert m.pairs == []
    assert len(m.unmatched_float) == 4
    assert len(m.unmatched_quant) == 4
    assert "no 'conv2d' op" in m.float_reasons["_0"]


def test_an_op_left_out_still_matches_the_rest() -> None:
    full = nn.Sequential(
        nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)
    )
    cut = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    cut.load_state_dict(
        {k.replace("4.", "3."): v for k, v in full.state_dict().items()}
    )
    m = fxns.match(full.eval(), cut.eval())
    assert m.unmatched_float == ("_3",)
    assert m.unmatched_quant == ()
    assert [p.kind for p in m.pairs] == ["linear", "relu", "linear", "linear"]


def test_matching_a_model_with_its_copy_is_the_identity() -> None:
    model = Branches().eval()
    m = fxns.match(model, copy.deepcopy(model))
    for pair in m.pairs:
        assert pair.float_nodes == pair.quant_nodes


def test_pairs_are_indexable_by_name() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    m = fxns.match(model, copy.deepcopy(model))
    assert m["0"].kind == "linear"
    with pytest.raises(KeyError, match="no pair named 'nope'"):
        m["nope"]


def test_a_module_called_twice_gets_one_row_per_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.Sigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(self.act(x)))

    model = Twice().eval()
    m = fxns.match(model, copy.deepcopy(model))
    assert [p.name for p in m.pairs] == ["act", "fc", "act:1"]


# --- graphs that do not line up ---------------------------------------------------


def test_an_extra_op_on_the_quantized_side_is_listed_with_its_reason() -> None:
    def model(extra: bool) -> nn.Module:
        layers = [nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2)]
        if extra:
            layers.insert(3, nn.Hardswish())
        return nn.Sequential(*layers).eval()

    quant = quantize_module(model(extra=True), torch.randn(2, 4))
    m = fxns.match(model(extra=False), quant)
    assert m.unmatched_float == ()
    assert m.unmatched_quant == ("_3",)
    assert m.quant_reasons["_3"] == "no 'hardswish' op on the other side"
    assert [(p.name, p.quant_nodes) for p in m.pairs] == [
        ("0", ("_0",)),
        ("2", ("_2",)),
        ("3", ("_4",)),
    ]


def test_an_op_left_in_float_is_matched_like_any_other() -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
    ).eval()
    example = torch.randn(1, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping("x86").set_module_name("2", None)
        prepared = prepare_fx(copy.deepcopy(model), mapping, (example,))
        prepared(example)
        quant = convert_fx(prepared)
    assert type(quant.get_submodule("2")) is nn.Conv2d

    m = fxns.match(model, quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert [p.quant_ops for p in m.pairs] == [
        ("nniq.ConvReLU2d",),
        ("nn.Conv2d",),
        ("nnq.Conv2d",),
    ]


class Residual(nn.Module):
    """``relu(conv(x) + conv0(x))``, optionally with the add fused into conv."""

    def __init__(self, fused: bool = False) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(4, 4, 1)
        conv, relu = nn.Conv2d(4, 4, 1), nn.ReLU()
        self.fused = fused
        if fused:
            import torch.ao.nn.intrinsic as nni

            self.conv = nni.ConvAdd2d(conv, torch.add)
        else:
            self.conv = conv
        self.relu = relu
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv0(x)
        z = self.conv(x, y) if self.fused else self.conv(x) + y
        return self.head(self.relu(z))


def test_a_fusion_that_takes_a_second_input_still_matches() -> None:
    import torch.ao.nn.intrinsic as nni

    # ConvAdd2d reads the residual as its second argument: the canonical
    # graph feeds it to the conv part, so the two graphs differ in shape.
    m = fxns.match(Residual(), Residual(fused=True), leaf_modules=[nni.ConvAdd2d])
    assert m.unmatched_float == m.unmatched_quant == ()
    assert [(p.kind, p.quant_nodes) for p in m.pairs] == [
        ("conv2d", ("conv0",)),
        ("conv2d+add", ("conv",)),
        ("relu", ("relu",)),
        ("conv2d", ("head",)),
    ]


def test_a_module_called_twice_still_matches_each_call_across_a_difference() -> None:
    class Twice(nn.Module):
        def __init__(self, extra: bool) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.Sigmoid()
            self.extra = nn.Tanh() if extra else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.extra(self.act(self.fc(x))))

    float_model = Twice(extra=False).eval()
    other = Twice(extra=True).eval()
    other.load_state_dict(float_model.state_dict())
    m = fxns.match(float_model, other)
    assert [(p.name, p.quant_nodes) for p in m.pairs] == [
        ("fc", ("fc",)),
        ("act", ("act",)),
        ("fc:1", ("fc_1",)),
    ]
    assert m.unmatched_quant == ("extra",)


# --- order, symmetry and bounded search ---------------------------------------


class Wide(nn.Module):
    """``n`` parallel conv-relu branches of one input, concatenated."""

    def __init__(self, n: int = 12, prefix: str = "branch", reverse: bool = False):
        super().__init__()
        self.names = [f"{prefix}{i}" for i in range(n)]
        for name in self.names:
            self.add_module(name, nn.Conv2d(2, 2, 1))
        self.reverse = reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        names = self.names[::-1] if self.reverse else self.names
        return torch.cat([torch.relu(getattr(self, n)(x)) for n in names], 1)


def test_twelve_identical_branches_written_in_reverse_pair_by_module() -> None:
    quant = quantize_module(Wide(reverse=True), torch.randn(1, 2, 4, 4))
    m = fxns.match(Wide(), quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    for pair in m.pairs:
        if pair.kind == "conv2d":
            assert pair.quant_nodes == pair.float_nodes


def test_identical_nameless_branches_of_a_copy_pair_with_themselves() -> None:
    class Towers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            towers = []
            for _ in range(3):
                branches = []
                for _ in range(12):
                    y = x
                    for _ in range(6):
                        y = torch.sigmoid(y)
                    branches.append(y)
                towers.append(torch.cat(branches, 1))
            return towers[0] + towers[1] + towers[2]

    model = Towers()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fxns.match(model, copy.deepcopy(model))
    assert len(m.pairs) > 200
    assert all(p.float_nodes == p.quant_nodes for p in m.pairs)
    assert m.notes == ()


def test_a_pathological_pair_finishes_with_a_warning_and_related_pairs() -> None:
    class Towers(nn.Module):
        """Towers of identical branches whose module names differ per side."""

        def __init__(self, prefix: str) -> None:
            super().__init__()
            self.towers = nn.ModuleList(Wide(15, prefix) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = [tower(x) for tower in self.towers]
            return (y[0] + y[1]) + (y[2] + y[3])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = fxns.match(Towers("a"), Towers("b"))
    uncertain = [w for w in caught if "matching is uncertain" in str(w.message)]
    assert uncertain
    assert m.notes
    assert m.unmatched_float == m.unmatched_quant == ()
    graphs = (m.float_graph, m.quant_graph)
    assert graphs[0] is not None and graphs[1] is not None
    for f, q in m.op_pairs.items():
        assert graphs[0].nodes[f].label == graphs[1].nodes[q].label


def test_matching_prints_its_summary_and_first_pairs() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(8)]).eval()
    m = fxns.match(model, copy.deepcopy(model))
    lines = repr(m).splitlines()
    assert lines[0] == f"<Matching: {m.summary()}>"
    assert len(lines) == 7 and lines[-1] == "  ... 3 more (matching.pairs)"
    assert str(m) == repr(m)


# --- fusions: each float group pairs with its one fused quantized op ----------


class _AddRelu(nn.Module):
    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()
        self.functional = functional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + x
        return torch.relu(y) if self.functional else self.relu(y)


class _ThenRelu(nn.Module):
    """``F.relu(layer(x))``: the functional form of a fusable relu."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.layer(x))


_IMAGE = (2, 3, 8, 8)
_FUSIONS = {
    # id: (model, input shape, float kind, quantized op, quantized kind)
    "conv+bn": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)),
        _IMAGE,
        "conv2d+batch_norm",
        "nnq.Conv2d",
        "conv2d",
    ),
    "conv+bn+relu": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        _IMAGE,
        "conv2d+batch_norm+relu",
        "nniq.ConvReLU2d",
        "conv2d+relu",
    ),
    "conv1d+bn+relu": (
        lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.ReLU()),
        (2, 3, 16),
        "conv1d+batch_norm+relu",
        "nniq.ConvReLU1d",
        "conv1d+relu",
    ),
    "conv+relu": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        _IMAGE,
        "conv2d+relu",
        "nniq.ConvReLU2d",
        "conv2d+relu",
    ),
    "conv+F.relu": (
        lambda: _ThenRelu(nn.Conv2d(3, 4, 3)),
        _IMAGE,
        "conv2d+relu",
        "nniq.ConvReLU2d",
        "conv2d+relu",
    ),
    "linear+relu": (
        lambda: nn.Sequential(nn.Linear(8, 4), nn.ReLU()),
        (2, 8),
        "linear+relu",
        "nniq.LinearReLU",
        "linear+relu",
    ),
    "linear+F.relu": (
        lambda: _ThenRelu(nn.Linear(8, 4)),
        (2, 8),
        "linear+relu",
        "nniq.LinearReLU",
        "linear+relu",
    ),
    "add+relu": (
        lambda: _AddRelu(functional=False),
        _IMAGE,
        "add+relu",
        "quantized::add_relu",
        "add+relu",
    ),
    "add+torch.relu": (
        lambda: _AddRelu(functional=True),
        _IMAGE,
        "add+relu",
        "quantized::add_relu",
        "add+relu",
    ),
}


@pytest.mark.parametrize("case", sorted(_FUSIONS))
def test_each_fusion_pairs_its_float_parts_with_the_fused_quantized_op(
    case: str,
) -> None:
    make, shape, kind, quant_op, quant_kind = _FUSIONS[case]
    torch.manual_seed(0)
    model = make().eval()
    quant = quantize_module(model, torch.randn(shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fxns.match(model, quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    (pair,) = [p for p in m.pairs if p.quant_ops == (quant_op,)]
    assert pair.kind == kind
    assert pair.quant_kind == quant_kind
    assert len(pair.float_nodes) == len(kind.split("+"))
    assert len(pair.quant_nodes) == 1
    assert pair.note == ""
