"""fxns never changes the caller's models, whatever the call and however it ends.

A property test draws a public call, a pair of models (FX- or eager-quantized,
a traced float model, a float model left in training mode) and a way for the
call to end (normally, on a bad batch, or interrupted by a KeyboardInterrupt
from the data or from ``input_fn``), and checks that each model's state dict,
parameter and buffer identity, training flags, hooks, attributes and graph
code are what they were. A successful call made twice gives two independent,
equal results (case 16).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

import fxns
from fxns.quantize import quiet_torch_ao
from fxns.report import Report

from .conftest import quantize_module, snapshot


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.fc(x)))


class Net(nn.Module):
    """Case 16's model: QuantStub → Block → Block → DeQuantStub."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.b1 = Block()
        self.b2 = Block()
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.b2(self.b1(self.quant(x))))


def _net() -> Net:
    torch.manual_seed(0)
    net = Net().eval()
    g = torch.Generator().manual_seed(1)
    for bn in (net.b1.bn, net.b2.bn):
        bn.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
    return net


@functools.cache
def _fx_quantized() -> fx.GraphModule:
    return quantize_module(_net(), torch.randn(4, 8))


@functools.cache
def _eager_quantized() -> nn.Module:
    model = _net()
    model.qconfig = tq.get_default_qconfig("x86")
    with quiet_torch_ao():
        fused = tq.fuse_modules(model, [["b1.fc", "b1.bn"], ["b2.fc", "b2.bn"]])
        prepared = tq.prepare(fused)
        prepared(torch.randn(4, 8))
        return tq.convert(prepared)


# Each builds fresh objects, so that one example cannot change the next.
PAIRS: dict[str, Callable[[], tuple[nn.Module, nn.Module]]] = {
    "fx": lambda: (_net(), copy.deepcopy(_fx_quantized())),
    "eager": lambda: (_net(), copy.deepcopy(_eager_quantized())),
    "traced-float": lambda: (fx.symbolic_trace(_net()), copy.deepcopy(_fx_quantized())),
    "training-float": lambda: (_net().train(), copy.deepcopy(_fx_quantized())),
}


def _run_loggers(f: nn.Module, q: nn.Module, data: Any, input_fn: Any) -> Report:
    f_log, q_log = fxns.add_loggers(f, q)
    with torch.no_grad():
        for batch in data:
            x = input_fn(batch) if input_fn else batch
            f_log(x)
            q_log(x)
    return fxns.collect(f_log, q_log)


def _run_shadows(f: nn.Module, q: nn.Module, data: Any, input_fn: Any) -> Report:
    s = fxns.add_shadows(f, q)
    with torch.no_grad():
        for batch in data:
            s(input_fn(batch) if input_fn else batch)
    return fxns.collect(s)


CALLS: dict[str, Callable[[nn.Module, nn.Module, Any, Any], Any]] = {
    "match": lambda f, q, data, fn: fxns.match(f, q),
    "diff": lambda f, q, data, fn: fxns.diff(f, q),
    "compare_weights": lambda f, q, data, fn: fxns.compare_weights(f, q),
    "shadow": lambda f, q, data, fn: fxns.compare_activations(
        f, q, data, mode="shadow", input_fn=fn
    ),
    "propagated": lambda f, q, data, fn: fxns.compare_activations(
        f, q, data, mode="propagated", input_fn=fn
    ),
    "variants": lambda f, q, data, fn: fxns.compare_variants(
        f, {"a": q, "b": q}, data, input_fn=fn
    ),
    "loggers": _run_loggers,
    "shadows": _run_shadows,
}
RUNS_DATA = {"shadow", "propagated", "variants", "loggers", "shadows"}

FAULTS = ("none", "bad-batch", "interrupt-in-data", "interrupt-in-input-fn")


@dataclass
class Data:
    """Batches as a generator, one of which may be bad or interrupt."""

    n: int
    fault: str
    at: int

    def batches(self) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(7)
        for i in range(self.n):
            if i == self.at and self.fault == "interrupt-in-data":
                raise KeyboardInterrupt
            if i == self.at and self.fault == "bad-batch":
                yield torch.randn(4, 3, generator=g)
            else:
                yield torch.randn(4, 8, generator=g)

    def input_fn(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if self.fault != "interrupt-in-input-fn":
            return None
        seen = [0]

        def pick(batch: torch.Tensor) -> torch.Tensor:
            seen[0] += 1
            if seen[0] > self.at:
                raise KeyboardInterrupt
            return batch

        return pick


def _global_state() -> tuple[Any, ...]:
    hooks = torch.nn.modules.module
    return (
        torch.is_grad_enabled(),
        torch.backends.quantized.engine,
        len(hooks._global_forward_hooks),
        len(hooks._global_forward_pre_hooks),
    )


@settings(max_examples=40, deadline=None)
@given(
    call=st.sampled_from(sorted(CALLS)),
    pair=st.sampled_from(sorted(PAIRS)),
    fault=st.sampled_from(FAULTS),
    n=st.integers(min_value=1, max_value=3),
    at=st.integers(min_value=0, max_value=2),
)
def test_no_public_call_changes_the_models_even_when_it_fails(
    call: str, pair: str, fault: str, n: int, at: int
) -> None:
    float_model, quant_model = PAIRS[pair]()
    checks = [snapshot(float_model), snapshot(quant_model)]
    before = _global_state()
    data = Data(n, fault if call in RUNS_DATA else "none", min(at, n - 1))

    expected: type[BaseException] | None = {
        "none": None,
        "bad-batch": fxns.DataError,
        "interrupt-in-data": KeyboardInterrupt,
        "interrupt-in-input-fn": KeyboardInterrupt,
    }[data.fault]
    if expected is fxns.DataError and call in ("loggers", "shadows"):
        expected = RuntimeError  # the user's own loop calls the models directly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # training mode, loggers left unbalanced
        if expected is None:
            first = CALLS[call](float_model, quant_model, data.batches(), None)
        else:
            with pytest.raises(expected):
                CALLS[call](float_model, quant_model, data.batches(), data.input_fn())

        for check in checks:
            check()
        assert _global_state() == before
        if expected is not None:
            return

        # Twice: equal, independent results.
        saved = _as_data(first)
        second = CALLS[call](float_model, quant_model, data.batches(), None)
        assert _as_data(first) == saved  # the second call left the first alone
        assert _as_data(second) == saved  # and got the same answer on its own
        for check in checks:
            check()


def _as_data(result: Any) -> Any:
    if isinstance(result, Report):
        return result.to_dict()
    if isinstance(result, fxns.VariantReport):
        return {k: r.to_dict() for k, r in result.reports.items()}
    if isinstance(result, fxns.GraphDiff):
        return str(result)
    assert isinstance(result, fxns.Matching)
    return [(p.name, p.kind, p.float_nodes, p.quant_nodes) for p in result.pairs]


def test_two_instrumented_copies_are_independent() -> None:
    float_model, quant_model = PAIRS["fx"]()
    s1 = fxns.add_shadows(float_model, quant_model)
    s2 = fxns.add_shadows(float_model, quant_model)
    f1, q1 = fxns.add_loggers(float_model, quant_model)
    f2, q2 = fxns.add_loggers(float_model, quant_model)
    x = torch.randn(4, 8)
    s1(x)
    f1(x)
    q1(x)
    assert fxns.collect(s1).meta["batches"] == 1
    assert fxns.collect(f1, q1).meta["batches"] == 1
    for models in ((s2,), (f2, q2)):
        with pytest.raises(fxns.DataError, match="nothing has run"):
            fxns.collect(*models)


def test_a_report_does_not_change_when_its_models_run_on() -> None:
    float_model, quant_model = PAIRS["fx"]()
    s = fxns.add_shadows(float_model, quant_model)
    s(torch.randn(4, 8))
    first = fxns.collect(s)
    saved = first.to_dict()
    s(torch.randn(4, 8))
    assert first.to_dict() == saved
    assert fxns.collect(s).meta["batches"] == 2


def test_an_interrupted_run_leaves_the_user_free_to_run_again() -> None:
    float_model, quant_model = PAIRS["eager"]()
    with pytest.raises(KeyboardInterrupt):
        fxns.compare_activations(
            float_model, quant_model, Data(3, "interrupt-in-data", 1).batches()
        )
    report = fxns.compare_activations(float_model, quant_model, torch.randn(4, 8))
    assert report.meta["batches"] == 1 and all(r.metrics for r in report.rows)


@pytest.mark.parametrize("fault", FAULTS)
def test_sensitivity_leaves_the_float_model_alone_however_it_ends(fault: str) -> None:
    # sensitivity is too slow for the property test above (it quantizes the
    # model once per layer), so its ways of ending are checked here, on one
    # layer.
    float_model = _net()
    check = snapshot(float_model)
    before = _global_state()
    data = Data(2, fault, 1)
    expected = {
        "none": None,
        "bad-batch": fxns.DataError,
        "interrupt-in-data": KeyboardInterrupt,
        "interrupt-in-input-fn": KeyboardInterrupt,
    }[fault]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if expected is None:
            first = fxns.sensitivity(float_model, data.batches(), layers=["b2.fc"])
            second = fxns.sensitivity(float_model, data.batches(), layers=["b2.fc"])
            assert first.to_dict() == second.to_dict()
            assert first is not second and first.rows[0] is not second.rows[0]
        else:
            with pytest.raises(expected):
                fxns.sensitivity(
                    float_model,
                    data.batches(),
                    layers=["b2.fc"],
                    input_fn=data.input_fn(),
                )
    check()
    assert _global_state() == before
