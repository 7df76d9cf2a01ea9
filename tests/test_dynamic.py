"""Dynamic quantization, eager (``quantize_dynamic``) and FX (dynamic qconfig).

Linear, LSTM and GRU, multi-layer and bidirectional, called with and without
an initial state. Recurrent layers return tuples: their output and final
states each get a row, and each float weight (per gate matrix, layer and
direction) is paired with its own quantized weight. Expected values come from
calling the models' own modules directly.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fxns
from fxns.instrument import Probe

from .conftest import unaccounted_nodes
from .reference import Sums

STATES = {nn.LSTM: ("output", "h_n", "c_n"), nn.GRU: ("output", "h_n")}


def quantize_dynamic(
    model: nn.Module, flow: str, example: tuple[Any, ...], types: set[type]
) -> nn.Module:
    """Dynamic int8 quantization of ``types`` by the eager or the FX flow."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flow == "eager":
            return tq.quantize_dynamic(copy.deepcopy(model), types, dtype=torch.qint8)
        qconfig_mapping = QConfigMapping()
        for t in types:
            qconfig_mapping.set_object_type(t, default_dynamic_qconfig)
        return convert_fx(prepare_fx(copy.deepcopy(model), qconfig_mapping, example))


class Encoder(nn.Module):
    """Case 06: a 2-layer bidirectional LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 16, num_layers=2, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def test_case_06_every_lstm_weight_pairs_with_its_own_int8_weight() -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    quant = quantize_dynamic(model, "eager", (), {nn.LSTM})
    report = fxns.compare_weights(model, quant)

    names = [
        f"weight_{kind}_l{layer}{suffix}"
        for layer in range(2)
        for suffix in ("", "_reverse")
        for kind in ("ih", "hh")
    ]
    assert report.names == [f"rnn.{n}" for n in names]
    quant_weights = quant.rnn.get_weight()  # name → int8 tensor, from torch
    for name in names:
        sums = Sums()
        sums.add(getattr(model.rnn, name), quant_weights[name])
        row = report[f"rnn.{name}"]
        assert row.metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
        assert row.metrics["sqnr"] > 40, name


class Recurrent(nn.Module):
    """Linear → 2-layer bidirectional LSTM/GRU (optionally given a state) → Linear."""

    def __init__(self, cell: type[nn.RNNBase], with_state: bool) -> None:
        super().__init__()
        self.pre = nn.Linear(8, 8)
        self.rnn = cell(8, 16, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(32, 4)
        self.with_state = with_state

    def forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        h = self.pre(x)
        y, final = self.rnn(h, state) if self.with_state else self.rnn(h)
        return self.fc(y), final


def _state(cell: type[nn.RNNBase], g: torch.Generator) -> Any:
    h = torch.randn(4, 2, 16, generator=g)
    return (h, torch.randn(4, 2, 16, generator=g)) if cell is nn.LSTM else h


def _flatten(value: Any) -> list[torch.Tensor]:
    """``(out, (h, c))`` → ``[out, h, c]``."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in _flatten(v)]


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("flow", ["eager", "fx"])
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
def test_recurrent_output_and_states_each_get_a_row(
    cell: type[nn.RNNBase], flow: str, with_state: bool
) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = Recurrent(cell, with_state).eval()
    batches = [(torch.randn(5, 2, 8, generator=g), _state(cell, g)) for _ in range(2)]
    quant = quantize_dynamic(model, flow, batches[0], {cell, nn.Linear})
    rows = [f"rnn[{s}]" for s in STATES[cell]]

    m = fxns.match(model, quant)
    assert m.unmatched_float == m.unmatched_quant == ()
    assert unaccounted_nodes(m) == []

    shadow = fxns.compare_activations(model, quant, batches, mode="shadow")
    propagated = fxns.compare_activations(model, quant, batches, mode="propagated")
    assert shadow.names == propagated.names == ["pre", *rows, "fc"]

    f_rnn, q_rnn = model.rnn, quant.get_submodule("rnn")
    q_pre, q_fc = quant.get_submodule("pre"), quant.get_submodule("fc")
    expect_shadow = [Sums() for _ in rows]
    expect_propagated = [Sums() for _ in rows]
    linears = {name: (Sums(), Sums()) for name in ("pre", "fc")}  # shadow, propagated
    for x, state in batches:
        # An absent state is zeros on both sides, in both modes.
        args = (state,) if with_state else ()
        with torch.no_grad():
            f_in, q_in = model.pre(x), q_pre(x)
            q_all = q_rnn(q_in, *args)
            q_out = _flatten(q_all)
            local = _flatten(f_rnn(q_in, *args))
            upstream = _flatten(f_rnn(f_in, *args))
            q_y = q_fc(q_all[0])
            linears["pre"][0].add(f_in, q_in)  # the first layer: both modes alike
            linears["pre"][1].add(f_in, q_in)
            linears["fc"][0].add(model.fc(q_all[0]), q_y)
            linears["fc"][1].add(model.fc(upstream[0]), q_y)
        for i in range(len(rows)):
            expect_shadow[i].add(local[i], q_out[i])
            expect_propagated[i].add(upstream[i], q_out[i])
    for name, (local_sums, upstream_sums) in linears.items():
        assert shadow[name].metrics["sqnr"] == pytest.approx(
            local_sums.sqnr(), abs=0.01
        ), name
        assert propagated[name].metrics["sqnr"] == pytest.approx(
            upstream_sums.sqnr(), abs=0.01
        ), name
    for i, name in enumerate(rows):
        assert shadow[name].metrics["sqnr"] == pytest.approx(
            expect_shadow[i].sqnr(), abs=0.01
        )
        assert propagated[name].metrics["sqnr"] == pytest.approx(
            expect_propagated[i].sqnr(), abs=0.01
        )
        assert shadow[name].metrics["sqnr"] > 30, name

    weights = fxns.compare_weights(model, quant)
    names = [n for n, _ in f_rnn.named_parameters() if n.startswith("weight")]
    assert len(names) == 8  # ih and hh, for 2 layers and 2 directions
    assert weights.names == ["pre", *(f"rnn.{n}" for n in names), "fc"]
    # Each float weight against its own int8 weight, as torch hands it out.
    quant_weights = q_rnn.get_weight()
    expected = {f"rnn.{n}": (getattr(f_rnn, n), quant_weights[n]) for n in names}
    expected["pre"] = (model.pre.weight, q_pre.weight())
    expected["fc"] = (model.fc.weight, q_fc.weight())
    for name, (f_weight, q_weight) in expected.items():
        sums = Sums()
        sums.add(f_weight, q_weight)
        assert weights[name].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
        assert weights[name].metrics["sqnr"] > 40, name


class SeqModel(nn.Module):
    """Case 08: an LSTM called without a state, its h returned."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, (h, _c) = self.lstm(x)
        return self.fc(y), h


def test_case_08_fx_dynamic_lstm_without_state_is_shadowed() -> None:
    torch.manual_seed(0)
    model = SeqModel().eval()
    x = torch.randn(5, 2, 8)
    quant = quantize_dynamic(model, "fx", (x,), {nn.LSTM, nn.Linear})

    report = fxns.compare_activations(model, quant, x, mode="shadow")
    assert report.names == ["lstm[output]", "lstm[h_n]", "lstm[c_n]", "fc"]
    with torch.no_grad():
        f_out, (f_h, f_c) = model.lstm(x)
        q_out, (q_h, q_c) = quant.lstm(x)
        f_fc = model.fc(q_out)  # the Linear's own error: on the int8 LSTM's output
        q_fc = quant.fc(q_out)
    for name, f, q in (
        ("lstm[output]", f_out, q_out),
        ("lstm[h_n]", f_h, q_h),
        ("lstm[c_n]", f_c, q_c),
        ("fc", f_fc, q_fc),
    ):
        sums = Sums()
        sums.add(f, q)
        assert report[name].metrics["sqnr"] == pytest.approx(sums.sqnr(), abs=0.01)
        assert report[name].note == ""
    assert unaccounted_nodes(fxns.match(model, quant)) == []


def test_probe_compares_tuples_element_by_element() -> None:
    probe = Probe("lstm")
    f = (torch.ones(3), (torch.ones(2), torch.full((2,), 2.0)))
    q = (torch.ones(3), (torch.zeros(2), torch.full((2,), 2.0)))
    probe(f, q)
    probe(f, q)
    assert sorted(probe.elements) == [(0,), (1, 0), (1, 1)]
    assert probe.elements[(1, 0)].metrics()["sqnr"] == 0.0  # all of it is error
    assert probe.elements[(1, 1)].metrics()["sqnr"] == float("inf")
    assert probe.batches == 2 and probe.error == ""


def test_probe_says_why_differently_shaped_tuples_are_not_compared() -> None:
    probe = Probe("odd")
    probe((torch.ones(2), torch.ones(2)), (torch.ones(2),))
    assert "has 2 elements and the quantized one 1" in probe.error
    other = Probe("none")
    other((None, 3), (None, 3))
    assert other.error.startswith("not compared: the values are tuple and tuple")


def test_loggers_for_the_users_own_loop_handle_tuple_values() -> None:
    torch.manual_seed(0)
    model = SeqModel().eval()
    batches = [torch.randn(5, 2, 8) for _ in range(2)]
    quant = quantize_dynamic(model, "fx", (batches[0],), {nn.LSTM, nn.Linear})
    f_log, q_log = fxns.add_loggers(model, quant)
    for x in batches:
        f_log(x)
        q_log(x)
    mine = fxns.collect(f_log, q_log)
    theirs = fxns.compare_activations(model, quant, batches, mode="propagated")
    assert (
        mine.names
        == theirs.names
        == [
            "lstm[output]",
            "lstm[h_n]",
            "lstm[c_n]",
            "fc",
        ]
    )
    # The loop above runs the float LSTM with autograd on, compare_activations
    # under no_grad: on some CPUs the two kernels round differently (~1e-8).
    for a, b in zip(mine.rows, theirs.rows, strict=True):
        assert a.metrics["sqnr"] == pytest.approx(b.metrics["sqnr"], abs=1e-4)
