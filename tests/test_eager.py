"""Eager-mode static quantization compared with the original, unfused float model.

Models are quantized the way eager users do it: ``QuantStub``/``DeQuantStub``,
``FloatFunctional``, ``fuse_modules`` (or torchvision's ``fuse_model()``),
``prepare``, calibration, ``convert``. Every number is checked against a
replay of the models' own modules, or against activations read with
``torch.fx.Interpreter`` from a plain ``symbolic_trace``.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

import fxns

from .conftest import _randomize_batch_norms, unaccounted_nodes
from .reference import Sums, activations


def _eager_quantize(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """prepare → calibrate → convert on a model with fusions and a qconfig set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tq.prepare(model)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        return tq.convert(prepared)


class ConvBnRelu(nn.Module):
    """Case 05: eager QuantStub → Conv2d → BatchNorm2d → ReLU → DeQuantStub."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.relu(self.bn(self.conv(self.quant(x)))))


def test_case_05_unfused_float_conv_bn_relu_pairs_with_fused_int8() -> None:
    torch.manual_seed(0)
    float_model = ConvBnRelu().eval()
    with torch.no_grad():
        float_model.bn.running_mean.uniform_(-1, 1)
        float_model.bn.running_var.uniform_(0.2, 3.0)
        float_model.bn.weight.uniform_(0.3, 3.0)
        float_model.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    fused = tq.fuse_modules(copy.deepcopy(float_model), [["conv", "bn", "relu"]])
    fused.qconfig = tq.get_default_qconfig("x86")
    quant = _eager_quantize(fused, [x])

    m = fxns.match(float_model, quant)
    assert [(p.name, p.float_nodes, p.quant_ops) for p in m.pairs] == [
        ("conv", ("conv", "bn", "relu"), ("nniq.ConvReLU2d",))
    ]
    assert m.unmatched_float == m.unmatched_quant == ()

    # The block's own error: the float block on the int8 block's own input.
    q_in = quant.quant(x)
    sums = Sums()
    with torch.no_grad():
        f = float_model
        sums.add(f.relu(f.bn(f.conv(q_in.dequantize()))), quant.conv(q_in))
    row = fxns.compare_activations(float_model, quant, x)["conv"]
    assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
    assert 30 < row.metrics["sqnr"] < 50

    weight = fxns.compare_weights(float_model, quant)["conv"]
    assert weight.note == "float weight with batch_norm folded in"
    assert weight.metrics["sqnr"] > 35

    # The fused float model (where the eager suite found nothing) pairs too,
    # and measures the same block.
    fused_float = tq.fuse_modules(copy.deepcopy(float_model), [["conv", "bn", "relu"]])
    m = fxns.match(fused_float, quant)
    assert [(p.name, p.float_ops, p.quant_ops) for p in m.pairs] == [
        ("conv", ("nni.ConvReLU2d",), ("nniq.ConvReLU2d",))
    ]
    assert m.unmatched_float == m.unmatched_quant == ()
    row = fxns.compare_activations(fused_float, quant, x)["conv"]
    assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)


class Functional(nn.Module):
    """Every FloatFunctional method; ``ff`` serves six calls."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.ff = nnq.FloatFunctional()
        self.joint = nnq.FloatFunctional()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(steps(self, x)["joint"])


def steps(model: Functional, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Functional.forward one call at a time, keyed by the expected row names."""
    out: dict[str, torch.Tensor] = {"input": model.quant(x)}
    out["conv"] = model.relu(model.bn(model.conv(out["input"])))
    out["ff"] = model.ff.add(out["input"], out["conv"])
    out["ff:1"] = model.ff.add(out["ff"], out["conv"])
    out["ff:2"] = model.ff.mul(out["ff"], out["ff:1"])
    out["ff:3"] = model.ff.add_scalar(out["ff:2"], 0.5)
    out["ff:4"] = model.ff.mul_scalar(out["ff:3"], 2.0)
    out["ff:5"] = model.ff.add_relu(out["ff:4"], out["conv"])
    out["joint"] = model.joint.cat([out["ff:5"], out["ff"]], 1)
    return out


def _functional_models() -> tuple[Functional, nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    float_model = Functional().eval()
    _randomize_batch_norms(float_model)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    fused = tq.fuse_modules(copy.deepcopy(float_model), [["conv", "bn", "relu"]])
    fused.qconfig = tq.get_default_qconfig("x86")
    return float_model, _eager_quantize(fused, batches), batches


ROWS = ["conv", "ff", "ff:1", "ff:2", "ff:3", "ff:4", "ff:5", "joint"]


def test_each_float_functional_call_is_its_own_row() -> None:
    float_model, quant, _ = _functional_models()
    m = fxns.match(float_model, quant)
    assert [p.name for p in m.pairs] == ROWS
    assert [p.quant_ops for p in m.pairs][1:] == [
        ("quantized::add",),
        ("quantized::add",),
        ("quantized::mul",),
        ("quantized::add_scalar",),
        ("quantized::mul_scalar",),
        ("quantized::add_relu",),
        ("quantized::cat",),
    ]
    assert m["ff:5"].kind == "add+relu"
    assert unaccounted_nodes(m) == []

    # The observed calls of `ff` share its one scale and zero point; the
    # scalar ones do not use it, and `joint` has a single call.
    shared = "one of 4 calls of 'ff', which share one output scale and zero point"
    assert [p.name for p in m.pairs if p.note == shared] == [
        "ff",
        "ff:1",
        "ff:2",
        "ff:5",
    ]
    assert m["ff:3"].note == m["joint"].note == ""


def test_float_functional_rows_against_a_replay_of_the_modules() -> None:
    float_model, quant, batches = _functional_models()
    shadow = fxns.compare_activations(float_model, quant, batches, mode="shadow")
    propagated = fxns.compare_activations(
        float_model, quant, batches, mode="propagated"
    )

    expect_shadow = {name: Sums() for name in ROWS}
    expect_propagated = {name: Sums() for name in ROWS}
    f = float_model
    for x in batches:
        with torch.no_grad():
            fv, qv = steps(f, x), steps(quant, x)  # type: ignore[arg-type]
            d = {k: v.dequantize() for k, v in qv.items()}
            local = {
                "conv": f.relu(f.bn(f.conv(d["input"]))),
                "ff": d["input"] + d["conv"],
                "ff:1": d["ff"] + d["conv"],
                "ff:2": d["ff"] * d["ff:1"],
                "ff:3": d["ff:2"] + 0.5,
                "ff:4": d["ff:3"] * 2.0,
                "ff:5": torch.relu(d["ff:4"] + d["conv"]),
                "joint": torch.cat([d["ff:5"], d["ff"]], 1),
            }
        for name in ROWS:
            expect_shadow[name].add(local[name], qv[name])
            expect_propagated[name].add(fv[name], qv[name])

    shared = "one of 4 calls of 'ff', which share one output scale and zero point"
    for report, expected in ((shadow, expect_shadow), (propagated, expect_propagated)):
        assert report.names == ROWS
        # The row says when its call site shares quantization parameters.
        assert [r.name for r in report.rows if r.note == shared] == [
            "ff",
            "ff:1",
            "ff:2",
            "ff:5",
        ]
        for name in ROWS:
            _assert_sqnr(report[name].metrics["sqnr"], expected[name].sqnr(), name)


def _assert_sqnr(got: float, expected: float, name: str) -> None:
    if math.isinf(expected):
        assert got == expected, name
    else:
        assert got == pytest.approx(expected, abs=0.01), name


# --- torchvision's quantizable models -------------------------------------------

EAGER_MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "googlenet",
    "shufflenet_v2_x0_5",
]


@dataclass
class Eager:
    float_model: nn.Module
    quant_model: nn.Module
    batch: torch.Tensor


@functools.cache
def torchvision_eager(name: str) -> Eager:
    """A quantizable torchvision model, random weights, eager-quantized for x86."""
    import torchvision.models.quantization as qm

    torch.manual_seed(0)
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(qm, name)(weights=None, quantize=False, **kwargs).eval()
    _randomize_batch_norms(model)
    batch = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    quant = copy.deepcopy(model)
    quant.fuse_model()
    quant.qconfig = tq.get_default_qconfig("x86")
    return Eager(model, _eager_quantize(quant, [batch]), batch)


@pytest.mark.slow
@pytest.mark.parametrize("name", EAGER_MODELS)
def test_torchvision_eager_model_matches_and_measures_right(name: str) -> None:
    e = torchvision_eager(name)
    m = fxns.match(e.float_model, e.quant_model)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []
    _assert_pairs_join_the_same_modules(e, m)
    # Each FloatFunctional call site is a row named after its module.
    called = _called_functionals(e.quant_model, e.batch)
    names = {p.name for p in m.pairs}
    assert called and called <= names, called - names

    report = fxns.compare_activations(
        e.float_model, e.quant_model, e.batch, mode="propagated"
    )
    f_acts = activations(e.float_model, e.batch)
    q_acts = activations(e.quant_model, e.batch)
    for row in report.rows:
        sums = Sums()
        f_value = _element(f_acts[row.float_nodes[-1]], row.name)
        sums.add(f_value, _element(q_acts[row.quant_nodes[-1]], row.name))
        _assert_sqnr(row.metrics["sqnr"], sums.sqnr(), row.name)

    shadow = fxns.compare_activations(e.float_model, e.quant_model, e.batch)
    assert shadow.names == report.names
    for row in shadow.rows:
        assert row.note == "" and row.metrics["sqnr"] > 0, (row.name, row.note)
    _assert_shadow_rows_are_local(e, shadow, q_acts)


def _assert_pairs_join_the_same_modules(e: Eager, m: fxns.Matching) -> None:
    """Each pair joins the same code on both sides, read from torch's own
    record of which module each traced node ran in, not from fxns."""
    f_nodes = {n.name: n for n in torch.fx.symbolic_trace(e.float_model).graph.nodes}
    q_nodes = {n.name: n for n in torch.fx.symbolic_trace(e.quant_model).graph.nodes}
    for p in m.pairs:
        f_paths = {_module_path(f_nodes[n]) for n in p.float_nodes}
        q_paths = {_module_path(q_nodes[n]) for n in p.quant_nodes}
        # A fused int8 module keeps the name of the first float module it fused.
        assert q_paths <= f_paths, (p.name, f_paths, q_paths)
        for n in p.quant_nodes:
            if q_nodes[n].op == "call_module":
                assert q_nodes[n].target == f_nodes[p.float_nodes[0]].target, p.name


def _assert_shadow_rows_are_local(
    e: Eager, shadow: fxns.Report, q_acts: dict[str, Any]
) -> None:
    """Shadow rows against the float modules (or the float op of a
    FloatFunctional call) run by hand on the int8 layer's dequantized input."""
    f_nodes = {n.name: n for n in torch.fx.symbolic_trace(e.float_model).graph.nodes}
    q_nodes = {n.name: n for n in torch.fx.symbolic_trace(e.quant_model).graph.nodes}

    def dq(arg: object) -> torch.Tensor:
        assert isinstance(arg, torch.fx.Node)
        t = q_acts[arg.name]
        return t.dequantize() if t.is_quantized else t

    binary = {
        "add": lambda a, b: a + b,
        "add+relu": lambda a, b: torch.relu(a + b),
        "mul": lambda a, b: a * b,
    }
    checked: dict[str, int] = {}
    for row in shadow.rows:
        q = q_nodes[row.quant_nodes[-1]]
        floats = [f_nodes[n] for n in row.float_nodes]
        with torch.no_grad():
            if len(row.quant_nodes) == 1 and all(
                n.op == "call_module" for n in (q, *floats)
            ):
                local = dq(q.args[0])
                for n in floats:
                    local = e.float_model.get_submodule(str(n.target))(local)
            elif row.kind in binary:
                local = binary[row.kind](dq(q.args[0]), dq(q.args[1]))
            elif row.kind == "cat":
                dim = q.kwargs.get("dim", q.args[1] if len(q.args) > 1 else 0)
                parts = q.args[0]
                assert isinstance(parts, list | tuple)
                local = torch.cat([dq(a) for a in parts], dim)
            else:
                continue  # reshapes and selections: exact, and checked above
        sums = Sums()
        sums.add(local, q_acts[q.name])
        _assert_sqnr(row.metrics["sqnr"], sums.sqnr(), row.name)
        kind = row.kind.split("+")[0]
        checked[kind] = checked.get(kind, 0) + 1
    # Every conv and every FloatFunctional call of the model was checked.
    assert checked.get("conv2d", 0) > 10, checked
    for kind in ("add", "mul", "cat"):
        calls = sum(
            str(n.target).startswith(f"quantized.{kind}") for n in q_nodes.values()
        )
        assert checked.get(kind, 0) == calls, (kind, checked, calls)


def _module_path(node: torch.fx.Node) -> str:
    """The innermost module a traced node ran in: its target for a module
    call, else the last entry of the ``nn_module_stack`` torch.fx records."""
    if node.op == "call_module":
        return str(node.target)
    return list(node.meta.get("nn_module_stack", {"": None}))[-1]


def _element(value: object, row_name: str) -> torch.Tensor:
    """The tensor a row stands for: ``chunk_3[1]`` is element 1 of a tuple."""
    if isinstance(value, tuple):
        return value[int(row_name[row_name.rindex("[") + 1 : -1])]
    assert isinstance(value, torch.Tensor)
    return value


def _called_functionals(model: nn.Module, batch: torch.Tensor) -> set[str]:
    """Paths of the QFunctional modules that a forward pass calls.

    Each call ends in the module's ``activation_post_process``; a forward hook
    on it sees the call.
    """
    called: set[str] = set()
    handles = [
        module.activation_post_process.register_forward_hook(
            lambda *_, path=path: called.add(path)
        )
        for path, module in model.named_modules()
        if type(module).__name__ == "QFunctional"
    ]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return called


@pytest.mark.slow
def test_torchvision_eager_add_relu_shadow_is_its_own_error() -> None:
    e = torchvision_eager("resnet18")
    row = fxns.compare_activations(e.float_model, e.quant_model, e.batch)[
        "layer2.1.add_relu"
    ]
    assert row.kind == "add+relu" and row.quant_ops == ("quantized::add_relu",)
    q_acts = activations(e.quant_model, e.batch)
    graph = torch.fx.symbolic_trace(e.quant_model).graph
    node = next(n for n in graph.nodes if n.name == row.quant_nodes[0])
    a, b = (q_acts[arg.name].dequantize() for arg in node.args[:2])
    sums = Sums()
    sums.add(torch.relu(a + b), q_acts[node.name])
    assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
