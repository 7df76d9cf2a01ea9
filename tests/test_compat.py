"""fxns.compat against torch.ao.ns._numeric_suite, scenario by scenario.

Each scenario runs through both. Where the eager suite's answer is right, the
two agree tensor for tensor. Where it has one of its known faults (the first
sample logged instead of the batch, ``None`` or numbers passed to
``dequantize``, an unfused float layer paired with a fused quantized one, LSTM
weights overwritten and mis-paired, loggers left on the caller's models, the
calls of a shared ``FloatFunctional`` mixed in one entry), the test shows the
fault and checks fxns's answer against an independent computation: the
models' own modules called by hand, or an independent quantization.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

import fxns.compat as ns
from fxns.errors import ArgumentError, ModelError

from .conftest import _randomize_batch_norms, snapshot
from .reference import Sums

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.ns._numeric_suite as eager


def _quantize(model: nn.Module, batches: list[torch.Tensor], fuse: Any = None) -> Any:
    """Eager static quantization: fuse, prepare, calibrate, convert."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = copy.deepcopy(model)
        if fuse:
            model = tq.fuse_modules(model, fuse)
        model.qconfig = tq.get_default_qconfig("x86")
        prepared = tq.prepare(model)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        return tq.convert(prepared)


def _both(
    call: Callable[..., Any], f: nn.Module, q: nn.Module, *args: Any, **kw: Any
) -> tuple[Any, Any]:
    """``call`` of the eager suite on copies (it changes them), and of fxns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(eager, call.__name__)(
            copy.deepcopy(f), copy.deepcopy(q), *args, **kw
        )
    return theirs, call(f, q, *args, **kw)


def _sqnr(f: torch.Tensor, q: torch.Tensor) -> float:
    sums = Sums()
    sums.add(f, q)
    return sums.sqnr()


def _equal(a: Any, b: Any, exact: bool = True) -> bool:
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(
            _equal(x, y, exact) for x, y in zip(a, b, strict=True)
        )
    if a.is_quantized or b.is_quantized:
        return bool(a.is_quantized == b.is_quantized) and torch.equal(
            a.int_repr(), b.int_repr()
        )
    if exact:
        return torch.equal(a, b)
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def _same_result(
    theirs: dict[str, Any], ours: dict[str, Any], keys: list[str], exact: bool = True
) -> None:
    for key in keys:
        for side in ("float", "quantized"):
            assert _equal(theirs[key][side], ours[key][side], exact), (key, side)


# --- the public surface ---------------------------------------------------------------


def _default(param: inspect.Parameter) -> Any:
    """A parameter's default, an eager logger class read as its fxns twin's name."""
    default = param.default
    if inspect.isclass(default) and issubclass(default, eager.Logger):
        return ("logger class", default.__name__)
    if inspect.isclass(default) and issubclass(default, ns.Logger):
        return ("logger class", default.__name__)
    return default


def _assert_compatible(theirs: Callable[..., Any], ours: Callable[..., Any]) -> None:
    """The same parameters in the same order with the same defaults; fxns only
    adds keyword-only ones after them. A ``*args`` may be named differently
    (it cannot be passed by name)."""
    their_params = list(inspect.signature(theirs).parameters.values())
    our_params = list(inspect.signature(ours).parameters.values())
    assert len(our_params) >= len(their_params), ours

    def shown(p: inspect.Parameter) -> tuple[Any, ...]:
        name = "*" if p.kind is inspect.Parameter.VAR_POSITIONAL else p.name
        return (name, p.kind, _default(p))

    assert [shown(p) for p in their_params] == [
        shown(p) for p in our_params[: len(their_params)]
    ], ours
    for extra in our_params[len(their_params) :]:
        assert extra.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.VAR_KEYWORD,
        ), (ours, extra)


def test_every_eager_name_is_there_with_a_compatible_signature() -> None:
    assert set(dir(eager)) >= set(ns.__all__)
    public = {
        name
        for name, value in vars(eager).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == eager.__name__
    }
    assert public == set(ns.__all__)
    for name in ns.__all__:
        theirs, ours = getattr(eager, name), getattr(ns, name)
        if not inspect.isclass(theirs):
            _assert_compatible(theirs, ours)
            continue
        assert issubclass(ours, nn.Module)
        # The eager class hierarchy: every logger is a Logger.
        if issubclass(theirs, eager.Logger):
            assert issubclass(ours, ns.Logger), name
        for method in ("__init__", *(m for m in vars(theirs) if not m.startswith("_"))):
            _assert_compatible(getattr(theirs, method), getattr(ours, method))
    for method in ("add", "add_scalar", "mul", "mul_scalar", "cat", "add_relu"):
        assert method in vars(eager.Shadow), method
    # The attributes code written for the eager Shadow reads.
    shadow = ns.Shadow(nn.Identity(), nn.Identity(), ns.ShadowLogger)
    for attr in ("orig_module", "shadow_module", "dequant", "logger"):
        assert hasattr(shadow, attr), attr
    assert ns.Logger().dtype == eager.Logger().dtype
    assert (
        ns.ShadowLogger().stats
        == eager.ShadowLogger().stats
        == {
            "float": [],
            "quantized": [],
        }
    )
    assert ns.OutputLogger().stats == eager.OutputLogger().stats == {"tensor_val": []}


# --- weights --------------------------------------------------------------------------


class Plain(nn.Module):
    """Conv, linear, a quantized-only batch norm and a dynamic-style linear."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(torch.relu(self.conv(self.quant(x))))
        return self.dequant(self.fc(torch.flatten(x, 1)))


def test_compare_weights_agrees_where_names_pair_the_weights() -> None:
    torch.manual_seed(0)
    model = Plain().eval()
    _randomize_batch_norms(model)
    quant = _quantize(model, [torch.randn(2, 3, 8, 8)])
    f_sd, q_sd = model.state_dict(), quant.state_dict()
    theirs, ours = eager.compare_weights(f_sd, q_sd), ns.compare_weights(f_sd, q_sd)
    # The batch norm after the relu is quantized on its own: nothing folded.
    assert (
        list(ours)
        == list(theirs)
        == [
            "conv.weight",
            "bn.weight",
            "fc._packed_params._packed_params",
        ]
    )
    _same_result(theirs, ours, list(theirs))


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


def _case_05() -> tuple[ConvBnRelu, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvBnRelu().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.2, 3.0)
        model.bn.weight.uniform_(0.3, 3.0)
        model.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    return model, _quantize(model, [x], [["conv", "bn", "relu"]]), x


def test_case_05_weights_fold_the_batch_norm_like_quantization_did() -> None:
    model, quant, _ = _case_05()
    f_sd, q_sd = model.state_dict(), quant.state_dict()
    theirs, ours = eager.compare_weights(f_sd, q_sd), ns.compare_weights(f_sd, q_sd)
    q_weight = q_sd["conv.weight"]
    assert list(ours) == list(theirs) == ["conv.weight"]
    assert _equal(ours["conv.weight"]["quantized"], q_weight)

    # The eager suite pairs the unfolded float weight with the folded int8 one.
    assert _sqnr(theirs["conv.weight"]["float"], q_weight) < 5

    # The fold, computed here from its definition: w · γ / √(σ² + ε).
    bn = model.bn
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    folded = model.conv.weight.detach() * scale.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(ours["conv.weight"]["float"], folded)
    assert _sqnr(folded, q_weight) > 40


class Encoder(nn.Module):
    """Case 06: a 2-layer bidirectional LSTM, and a GRU cell after it."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
        self.cell = nn.GRUCell(32, 8)

    def forward(self, x: torch.Tensor, state: Any = None) -> torch.Tensor:
        out = self.rnn(x, state)[0]
        return self.cell(out[-1])


def _case_06() -> tuple[Encoder, nn.Module]:
    torch.manual_seed(0)
    model = Encoder().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant = tq.quantize_dynamic(
            copy.deepcopy(model), {nn.LSTM, nn.GRUCell}, dtype=torch.qint8
        )
    return model, quant


def test_case_06_each_lstm_weight_is_its_own_entry_paired_right() -> None:
    model, quant = _case_06()
    f_sd, q_sd = model.state_dict(), quant.state_dict()
    theirs = eager.compare_weights(f_sd, q_sd)
    ours = ns.compare_weights(f_sd, q_sd)

    # The eager suite: two of eight LSTM weights, one of them mis-paired.
    assert len([k for k in theirs if k.startswith("rnn")]) == 2
    assert min(_sqnr(p["float"], p["quantized"]) for p in theirs.values()) < 0

    float_weights = [k for k in f_sd if "weight" in k]
    assert list(ours) == float_weights
    for name, pair in ours.items():
        assert torch.equal(pair["float"], f_sd[name]), name
        q = pair["quantized"]
        # Independently: the int8 tensor is this float weight quantized with
        # the tensor's own scale, element for element.
        requantized = torch.quantize_per_tensor(
            f_sd[name], q.q_scale(), q.q_zero_point(), torch.qint8
        )
        assert torch.equal(requantized.int_repr(), q.int_repr()), name
        assert _sqnr(f_sd[name], q) > 40, name


def test_compare_weights_reads_quantized_embeddings() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4)).eval()
    quant = copy.deepcopy(model)
    quant[0].qconfig = tq.float_qparams_weight_only_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant = tq.convert(tq.prepare(quant))
    f_sd, q_sd = model.state_dict(), quant.state_dict()
    assert eager.compare_weights(f_sd, q_sd) == {}
    ours = ns.compare_weights(f_sd, q_sd)
    assert list(ours) == ["0._packed_params._packed_weight"]
    pair = ours["0._packed_params._packed_weight"]
    assert torch.equal(pair["float"], model[0].weight)
    assert _equal(pair["quantized"], quant[0].weight())
    assert _sqnr(pair["float"], pair["quantized"]) > 30


def test_compare_weights_takes_state_dicts_only() -> None:
    model, quant = _case_06()
    with pytest.raises(ArgumentError, match="pass its state_dict"):
        ns.compare_weights(model, quant.state_dict())  # type: ignore[arg-type]


# --- outputs --------------------------------------------------------------------------


def test_case_05_outputs_pair_the_float_block_with_the_fused_int8_one() -> None:
    model, quant, x = _case_05()
    theirs, ours = _both(ns.compare_model_outputs, model, quant, x)
    assert list(ours) == list(theirs) == ["quant.stats", "conv.stats"]
    # Where the eager suite pairs the right values (the input quantization),
    # both agree.
    _same_result(theirs, ours, ["quant.stats"])

    with torch.no_grad():
        conv_out = model.conv(x)
        block_out = model.relu(model.bn(conv_out))
        int8_out = quant.conv(quant.quant(x))
    # The eager suite logs the float conv alone, before its batch norm.
    assert torch.equal(theirs["conv.stats"]["float"][0], conv_out)
    assert _sqnr(conv_out, int8_out) < 5

    # fxns: the float block's output, the whole batch, next to the int8 one.
    assert torch.equal(ours["conv.stats"]["float"][0], block_out)
    assert _equal(ours["conv.stats"]["quantized"][0], int8_out)
    assert 30 < _sqnr(block_out, int8_out) < 50


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Blocks(nn.Module):
    """Case 16: QuantStub → Block(Linear) → Block(Linear) → DeQuantStub."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.b1 = Block()
        self.b2 = Block()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.b2(self.b1(self.quant(x))))


def test_case_16_calls_leave_the_models_alone_and_stand_alone() -> None:
    torch.manual_seed(0)
    model = Blocks().eval()
    quant = _quantize(model, [torch.randn(4, 8)])
    x1, x2 = torch.randn(4, 8), torch.randn(4, 8)

    # The eager suite, on the caller's own models: loggers stay, and the
    # first call's result grows when the second call runs.
    f_eager, q_eager = copy.deepcopy(model), copy.deepcopy(quant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r1 = eager.compare_model_outputs(f_eager, q_eager, x1)
        eager.compare_model_outputs(f_eager, q_eager, x2)
    assert any(isinstance(m, eager.OutputLogger) for m in f_eager.modules())
    assert len(r1["b1.fc.stats"]["float"]) == 2
    # Its compare_model_stub leaves Shadows in the caller's quantized model;
    # a second call shadows the shadows, and the first result grows too.
    q_eager = copy.deepcopy(quant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s1 = eager.compare_model_stub(copy.deepcopy(model), q_eager, {nn.Linear}, x1)
        s2 = eager.compare_model_stub(copy.deepcopy(model), q_eager, {nn.Linear}, x2)
    assert isinstance(q_eager.b1.fc, eager.Shadow)
    assert isinstance(q_eager.b1.fc.orig_module, eager.Shadow)
    assert len(s1["b1.fc.stats"]["float"]) == 2
    assert "b1.fc.orig_module.stats" in s2

    check_float, check_quant = snapshot(model), snapshot(quant)
    first = ns.compare_model_outputs(model, quant, x1)
    kept = {k: [t.clone() for t in v["float"]] for k, v in first.items()}
    second = ns.compare_model_outputs(model, quant, x2)
    stub = ns.compare_model_stub(model, quant, {nn.Linear}, x1)
    stub_2 = ns.compare_model_stub(model, quant, {nn.Linear}, x2)
    check_float()
    check_quant()

    assert list(first) == list(second) == ["quant.stats", "b1.fc.stats", "b2.fc.stats"]
    for key, pair in first.items():
        assert len(pair["float"]) == len(pair["quantized"]) == 1
        assert torch.equal(pair["float"][0], kept[key][0])
    for x, result in ((x1, first), (x2, second)):
        with torch.no_grad():
            f1 = model.b1(x)
            q1 = quant.b1(quant.quant(x))
            assert torch.equal(result["b1.fc.stats"]["float"][0], f1)
            assert torch.equal(result["b2.fc.stats"]["float"][0], model.b2(f1))
            assert _equal(result["b2.fc.stats"]["quantized"][0], quant.b2(q1))
    # Each stub result holds its own call's values only, the float layer on
    # the dequantized input of its int8 twin, computed here by hand.
    assert list(stub) == list(stub_2) == ["b1.fc.stats", "b2.fc.stats"]
    for x, result in ((x1, stub), (x2, stub_2)):
        with torch.no_grad():
            q_in = quant.quant(x)
            q1 = quant.b1.fc(q_in)
            local = {
                "b1.fc.stats": (model.b1.fc(q_in.dequantize()), q1),
                "b2.fc.stats": (model.b2.fc(q1.dequantize()), quant.b2.fc(q1)),
            }
        for key, (f_out, q_out) in local.items():
            assert len(result[key]["float"]) == len(result[key]["quantized"]) == 1
            assert torch.equal(result[key]["float"][0], f_out), key
            assert _equal(result[key]["quantized"][0], q_out), key


# --- shadows --------------------------------------------------------------------------


def test_case_05_stub_shadows_the_whole_batch_with_the_whole_float_block() -> None:
    model, quant, x = _case_05()
    theirs, ours = _both(ns.compare_model_stub, model, quant, {nn.Conv2d}, x)
    assert list(ours) == list(theirs) == ["conv.stats"]
    q_in = quant.quant(x)
    with torch.no_grad():
        int8_out = quant.conv(q_in)
        block = model.relu(model.bn(model.conv(q_in.dequantize())))

    # The eager suite: the float conv alone, and the first sample only.
    assert theirs["conv.stats"]["float"][0].shape == block.shape[1:]
    assert _sqnr(theirs["conv.stats"]["float"][0], int8_out[0]) < 5

    assert torch.equal(ours["conv.stats"]["float"][0], block)
    assert _equal(ours["conv.stats"]["quantized"][0], int8_out)
    assert _sqnr(block, int8_out) > 30

    # A fused float model: the eager suite finds no nn.Conv2d and says
    # nothing; fxns finds the fused module by its parts.
    fused = tq.fuse_modules(copy.deepcopy(model), [["conv", "bn", "relu"]])
    theirs, ours = _both(ns.compare_model_stub, fused, quant, {nn.Conv2d}, x)
    assert theirs == {}
    with torch.no_grad():
        expected = fused.conv(q_in.dequantize())
    assert torch.equal(ours["conv.stats"]["float"][0], expected)


class Head(nn.Module):
    """A block called with a number and ``None`` besides its input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.ff = nnq.FloatFunctional()

    def forward(
        self, x: torch.Tensor, scale: float, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = self.fc(x)
        if bias is not None:
            y = self.ff.add(y, bias)
        return self.ff.mul_scalar(y, scale)


class WithHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.head = Head()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.head(self.quant(x), 0.5, None))


def test_shadows_pass_none_and_numbers_through() -> None:
    torch.manual_seed(0)
    model = WithHead().eval()
    quant = _quantize(model, [torch.randn(4, 8)])
    x = torch.randn(4, 8)
    with pytest.raises(AttributeError, match="is_quantized"):
        _both(ns.compare_model_stub, model, quant, {Head}, x)

    ours = ns.compare_model_stub(model, quant, {Head}, x)
    q_in = quant.quant(x)
    with torch.no_grad():
        expected = model.head(q_in.dequantize(), 0.5, None)
        int8_out = quant.head(q_in, 0.5, None)
    assert torch.equal(ours["head.stats"]["float"][0], expected)
    assert _equal(ours["head.stats"]["quantized"][0], int8_out)

    # A dynamic LSTM called with an explicit None state.
    model, quant = _case_06()
    x = torch.randn(5, 3, 8)
    with pytest.raises(AttributeError, match="is_quantized"):
        _both(ns.compare_model_stub, model, quant, {nn.LSTM}, x, None)
    ours = ns.compare_model_stub(model, quant, {nn.LSTM}, x, None)
    with torch.no_grad():
        expected = model.rnn(x, None)[0]
        int8_out = quant.rnn(x, None)[0]
    assert torch.equal(ours["rnn.stats"]["float"][0], expected)
    assert torch.equal(ours["rnn.stats"]["quantized"][0], int8_out)
    assert _sqnr(expected, int8_out) > 30

    # Outputs of tuple-valued modules are logged as the tuple, by both.
    theirs, ours = _both(ns.compare_model_outputs, model, quant, x)
    assert list(ours) == list(theirs) == ["rnn.stats", "cell.stats"]
    # torch.ao.ns runs the float LSTM with autograd on, fxns under no_grad: on
    # some CPUs the two kernels round differently (by about 1e-8).
    _same_result(theirs, ours, list(theirs), exact=False)


class Shared(nn.Module):
    """One FloatFunctional serves four calls (the scalar one is not observed)."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.fc = nn.Linear(3, 3)
        self.ff = nnq.FloatFunctional()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(calls(self, x)["ff:3"])


def calls(model: Any, x: torch.Tensor) -> dict[str, Any]:
    """Shared.forward step by step, keyed by the expected entry names."""
    out = {"input": model.quant(x)}
    out["fc"] = model.fc(out["input"])
    out["ff"] = model.ff.add(out["input"], out["fc"])
    out["ff:1"] = model.ff.add_scalar(out["ff"], 1.0)
    out["ff:2"] = model.ff.mul(out["ff"], out["ff:1"])
    out["ff:3"] = model.ff.cat([out["ff:2"], out["ff"]], 1)
    return out


def test_each_call_of_a_shared_float_functional_is_its_own_entry() -> None:
    torch.manual_seed(0)
    model = Shared().eval()
    quant = _quantize(model, [torch.randn(4, 3)])
    x = torch.randn(4, 3)
    sites = ["ff", "ff:1", "ff:2", "ff:3"]
    theirs, ours = _both(ns.compare_model_stub, model, quant, {nnq.FloatFunctional}, x)
    # The eager suite: one entry, the first sample of each call in a list.
    assert list(theirs) == ["ff.stats"]
    assert [t.shape[0] for t in theirs["ff.stats"]["float"]] == [3, 3, 3, 6]

    with torch.no_grad():
        q = calls(quant, x)
        # Each float call on the dequantized inputs of its int8 twin.
        local = {
            "ff": q["input"].dequantize() + q["fc"].dequantize(),
            "ff:1": q["ff"].dequantize() + 1.0,
            "ff:2": q["ff"].dequantize() * q["ff:1"].dequantize(),
            "ff:3": torch.cat([q["ff:2"].dequantize(), q["ff"].dequantize()], 1),
        }
        f = calls(model, x)
    assert list(ours) == [f"{s}.stats" for s in sites]
    for site in sites:
        pair = ours[f"{site}.stats"]
        assert len(pair["float"]) == 1
        assert torch.equal(pair["float"][0], local[site]), site
        assert _equal(pair["quantized"][0], q[site]), site

    # Outputs: the eager suite lists the observed calls under one key.
    theirs, ours = _both(ns.compare_model_outputs, model, quant, x)
    assert len(theirs["ff.stats"]["float"]) == 3
    observed = ["ff", "ff:2", "ff:3"]
    assert sorted(ours) == sorted(
        ["quant.stats", "fc.stats", *[f"{s}.stats" for s in observed]]
    )
    _same_result(theirs, ours, ["quant.stats", "fc.stats"])
    for site in observed:
        assert torch.equal(ours[f"{site}.stats"]["float"][0], f[site]), site
        assert _equal(ours[f"{site}.stats"]["quantized"][0], q[site]), site


class Residual(nn.Module):
    """``add_relu`` and ``mul_scalar`` of FloatFunctionals, the last one
    unobserved and read by the ``DeQuantStub`` after it."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.fc = nn.Linear(6, 6)
        self.skip = nnq.FloatFunctional()
        self.scale = nnq.FloatFunctional()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        y = self.skip.add_relu(self.fc(x), x)
        return self.dequant(self.scale.mul_scalar(y, 0.5))


def test_shadow_add_relu_and_mul_scalar_agree_and_log_the_whole_batch() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    quant = _quantize(model, [torch.randn(8, 6)])
    swap = {nnq.FloatFunctional}
    for batch in (1, 3):
        x = torch.randn(batch, 6)
        theirs, ours = _both(ns.compare_model_stub, model, quant, swap, x)
        assert list(ours) == list(theirs) == ["skip.stats", "scale.stats"]
        with torch.no_grad():
            q_in = quant.quant(x)
            q_fc = quant.fc(q_in)
            q_skip = quant.skip.add_relu(q_fc, q_in)
            q_scale = quant.scale.mul_scalar(q_skip, 0.5)
        # Each float op on the dequantized inputs of its int8 twin.
        local = {
            "skip.stats": (torch.relu(q_fc.dequantize() + q_in.dequantize()), q_skip),
            "scale.stats": (q_skip.dequantize() * 0.5, q_scale),
        }
        for key, (f_out, q_out) in local.items():
            assert torch.equal(ours[key]["float"][0], f_out), key
            assert _equal(ours[key]["quantized"][0], q_out), key
            if batch == 1:
                # A batch of one: the eager suite logs all of it, and agrees.
                _same_result(theirs, ours, [key])
            else:
                # A larger batch: the eager suite keeps the first sample only.
                assert torch.equal(theirs[key]["float"][0], f_out[0]), key
                assert _equal(theirs[key]["quantized"][0], q_out[0]), key

    # Outputs: the same entries where the eager suite has one; the
    # unobserved mul_scalar is read at the DeQuantStub that follows it, so
    # its quantized value comes dequantized.
    theirs, ours = _both(ns.compare_model_outputs, model, quant, x)
    assert list(theirs) == ["quant.stats", "fc.stats", "skip.stats"]
    assert list(ours) == [*theirs, "scale.stats"]
    _same_result(theirs, ours, list(theirs))
    with torch.no_grad():
        f_skip = model.skip.add_relu(model.fc(x), x)
    assert torch.equal(ours["scale.stats"]["float"][0], f_skip * 0.5)
    assert torch.equal(ours["scale.stats"]["quantized"][0], q_scale.dequantize())


def test_torchvision_eager_resnet18_agrees_where_the_eager_suite_is_right() -> None:
    import torchvision.models.quantization as qm
    from torchvision.models.quantization.resnet import QuantizableBasicBlock

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = qm.resnet18(weights=None, quantize=False).eval()
    _randomize_batch_norms(model)
    x = torch.randn(1, 3, 64, 64)
    fused = copy.deepcopy(model)
    fused.fuse_model()
    quant = _quantize(fused, [x])

    # Whole blocks, one sample: the eager suite's own example, and right.
    theirs, ours = _both(
        ns.compare_model_stub, model, quant, [QuantizableBasicBlock], x
    )
    assert list(ours) == list(theirs) and len(ours) == 8
    _same_result(theirs, ours, list(theirs))

    # Outputs: the same keys, and the same values where no batch norm or
    # relu follows the logged float module. Where one does, the eager suite
    # logs the float conv before it, fxns the whole fused group's output.
    theirs, ours = _both(ns.compare_model_outputs, model, quant, x)
    assert sorted(ours) == sorted(theirs)
    right = [k for k in theirs if k.endswith("add_relu.stats")]
    _same_result(theirs, ours, [*right, "quant.stats", "fc.stats"])
    block = model.layer1[0]
    with torch.no_grad():
        stem = model.relu(model.bn1(model.conv1(x)))
        inner = block.relu(block.bn1(block.conv1(model.maxpool(stem))))
        conv2 = block.conv2(inner)
    assert torch.equal(ours["conv1.stats"]["float"][0], stem)
    assert torch.equal(theirs["conv1.stats"]["float"][0], model.conv1(x))
    assert torch.equal(ours["layer1.0.conv2.stats"]["float"][0], block.bn2(conv2))
    assert torch.equal(theirs["layer1.0.conv2.stats"]["float"][0], conv2)


# --- in place, and the pieces ---------------------------------------------------------


def test_prepare_functions_change_the_models_they_are_given() -> None:
    model, quant, x = _case_05()
    f_model, q_model = copy.deepcopy(model), copy.deepcopy(quant)
    ns.prepare_model_outputs(f_model, q_model)
    for _ in range(2):
        f_model(x)
        q_model(x)
    act = ns.get_matching_activations(f_model, q_model)
    assert [len(v["float"]) for v in act.values()] == [2, 2]
    with pytest.raises(ModelError, match="prepared already"):
        ns.prepare_model_outputs(f_model, q_model)

    q_model = copy.deepcopy(quant)
    ns.prepare_model_with_stubs(model, q_model, {nn.Conv2d}, ns.ShadowLogger)
    assert isinstance(q_model.conv, ns.Shadow)
    assert isinstance(q_model.conv.orig_module, type(quant.conv))
    for _ in range(2):
        q_model(x)
    logged = ns.get_logger_dict(q_model)
    assert list(logged) == ["conv.stats"]
    assert len(logged["conv.stats"]["float"]) == 2
    assert torch.equal(
        logged["conv.stats"]["float"][0], logged["conv.stats"]["float"][1]
    )


def test_prepared_shadows_log_each_call_in_its_own_entry_every_pass() -> None:
    torch.manual_seed(0)
    model = Shared().eval()
    quant = _quantize(model, [torch.randn(4, 3)])
    ns.prepare_model_with_stubs(model, quant, {nnq.FloatFunctional}, ns.ShadowLogger)
    batches = [torch.randn(4, 3), torch.randn(2, 3)]
    for x in batches:
        quant(x)
    logged = ns.get_logger_dict(quant)
    assert list(logged) == ["ff.stats", "ff:1.stats", "ff:2.stats", "ff:3.stats"]
    for key, stats in logged.items():
        width = 6 if key == "ff:3.stats" else 3
        assert [t.shape for t in stats["float"]] == [(4, width), (2, width)], key


def test_a_shadow_built_by_hand_logs_every_call_under_its_path() -> None:
    torch.manual_seed(0)
    model = Blocks().eval()
    quant = _quantize(model, [torch.randn(4, 8)])
    x = torch.randn(4, 8)
    quant.b1.fc = ns.Shadow(quant.b1.fc, model.b1.fc, ns.ShadowLogger)
    quant(x)
    quant(x)
    logged = ns.get_logger_dict(quant, prefix="net")
    assert list(logged) == ["net.b1.fc.stats"]
    assert len(logged["net.b1.fc.stats"]["quantized"]) == 2
    assert logged["net.b1.fc.stats"]["float"][0].shape == (4, 8)


def test_nothing_to_shadow_says_why() -> None:
    model, quant, x = _case_05()
    with pytest.warns(UserWarning, match="no module of the types in module_swap_list"):
        assert ns.compare_model_stub(model, quant, {nn.GRU}, x) == {}
    with pytest.raises(ArgumentError, match="set of module classes"):
        ns.compare_model_stub(model, quant, nn.Conv2d, x)  # type: ignore[arg-type]
