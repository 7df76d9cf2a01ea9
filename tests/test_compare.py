"""The one-call entry points: data handling, bad input, loggers and shadows."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import fxns

from .conftest import quantize_module, snapshot


def _small() -> tuple[nn.Module, torch.fx.GraphModule]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 5),
    )
    model.eval()
    return model, quantize_module(model, torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize(
    "data",
    [
        torch.randn(2, 3, 8, 8),
        (torch.randn(2, 3, 8, 8),),
        [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)],
        (x for x in [torch.randn(2, 3, 8, 8)]),
    ],
    ids=["tensor", "tuple", "list", "generator"],
)
def test_data_forms(data: object) -> None:
    model, quant = _small()
    report = fxns.compare_activations(model, quant, data)
    assert [r.kind for r in report.rows] == [
        "conv2d+batch_norm+relu",
        "flatten",
        "linear",
    ]
    assert all(
        math.isfinite(r.metrics["sqnr"]) or r.metrics["sqnr"] == math.inf
        for r in report.rows
    )


def test_input_fn_picks_inputs_out_of_labelled_batches() -> None:
    model, quant = _small()
    data = [(torch.randn(2, 3, 8, 8), torch.tensor([0, 1])) for _ in range(2)]
    with pytest.raises(fxns.DataError, match="input_fn=lambda b: b\\[0\\]"):
        fxns.compare_activations(model, quant, data)
    report = fxns.compare_activations(model, quant, data, input_fn=lambda b: b[0])
    assert report.meta["batches"] == 2


def test_empty_data_is_a_data_error() -> None:
    model, quant = _small()
    with pytest.raises(fxns.DataError, match="data is empty"):
        fxns.compare_activations(model, quant, [])


def test_wrong_shape_names_the_batch() -> None:
    model, quant = _small()
    with pytest.raises(fxns.DataError, match=r"batch 0 \(Tensor\[2, 5\] float32\)"):
        fxns.compare_activations(model, quant, torch.randn(2, 5))


def test_unknown_mode() -> None:
    model, quant = _small()
    with pytest.raises(fxns.FxnsError, match="unknown mode 'local'"):
        fxns.compare_activations(model, quant, torch.randn(2, 3, 8, 8), mode="local")


def test_training_mode_model_is_compared_in_eval_with_one_warning() -> None:
    model, quant = _small()
    model.train()
    check = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = fxns.compare_activations(model, quant, torch.randn(2, 3, 8, 8))
    messages = [str(w.message) for w in caught if "training mode" in str(w.message)]
    assert len(messages) == 1 and "float model" in messages[0]
    assert report.rows[0].metrics["sqnr"] > 20  # BN used running stats
    check()


def test_loggers_for_the_users_own_loop_match_compare_activations() -> None:
    model, quant = _small()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    f_log, q_log = fxns.add_loggers(model, quant)
    for b in batches:
        f_log(b)
        q_log(b)
    mine = fxns.collect(f_log, q_log)
    theirs = fxns.compare_activations(model, quant, batches, mode="propagated")
    # compare_activations runs each float conv with its batch norm folded in
    # (as quantization did), the loggers the float model as it is: the same
    # numbers up to float rounding.
    for a, b in zip(mine.rows, theirs.rows, strict=True):
        assert a.metrics["sqnr"] == pytest.approx(b.metrics["sqnr"], abs=1e-4)


def test_unbalanced_logger_runs_warn() -> None:
    model, quant = _small()
    f_log, q_log = fxns.add_loggers(model, quant)
    f_log(torch.randn(2, 3, 8, 8))
    with pytest.warns(UserWarning, match="no counterpart"):
        fxns.collect(f_log, q_log)


def test_shadow_model_is_a_drop_in_for_the_quantized_model() -> None:
    model, quant = _small()
    x = torch.randn(2, 3, 8, 8)
    s = fxns.add_shadows(model, quant)
    assert torch.equal(s(x), quant(x))
    report = fxns.collect(s)
    assert report.mode == "shadow" and report.meta["batches"] == 1


def test_two_calls_give_independent_results() -> None:
    model, quant = _small()
    a = fxns.compare_activations(model, quant, torch.randn(2, 3, 8, 8))
    a_rows = copy.deepcopy(a.rows)
    b = fxns.compare_activations(model, quant, [torch.randn(2, 3, 8, 8)] * 3)
    assert a.rows == a_rows
    assert b.meta["batches"] == 3 and a.meta["batches"] == 1


def test_collect_rejects_other_models() -> None:
    model, _ = _small()
    with pytest.raises(fxns.ModelError, match="add_loggers"):
        fxns.collect(model)


def test_compare_weights_rows() -> None:
    model, quant = _small()
    r = fxns.compare_weights(model, quant)
    assert [row.name for row in r.rows] == ["0", "4"]
    assert r.rows[0].note == "float weight with batch_norm folded in"
    assert r.rows[0].metrics["sqnr"] > 30


class Twice(nn.Module):
    """One module, called twice: one weight, two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Linear(8, 8)
        self.d = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(self.c(torch.relu(self.c(x))))


def test_a_module_called_twice_has_its_weight_listed_once() -> None:
    torch.manual_seed(0)
    model = Twice().eval()
    quant = quantize_module(model, torch.randn(2, 8))
    weights = fxns.compare_weights(model, quant)
    assert weights.names == ["c", "d"]
    assert weights["c"].note == (
        "the module serves 2 calls (c, c:1); its weight is listed once"
    )
    # Each call is still a layer of its own for the activations.
    assert fxns.compare_activations(model, quant, torch.randn(2, 8)).names == [
        "c",
        "relu",
        "c:1",
        "d",
    ]


def _net(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * 36, 5),
    ).eval()


def test_a_quantized_model_of_other_shapes_fails_in_shadow_mode_with_advice() -> None:
    model = _net(4)
    quant = quantize_module(_net(8), torch.randn(2, 3, 8, 8))
    with (
        pytest.warns(UserWarning, match="shapes differ"),
        pytest.raises(
            fxns.InstrumentError,
            match=r"the instrumented model \(shadow mode\) failed on batch 0 .*"
            r"although both models run on it on their own: RuntimeError: mat1 and "
            r"mat2 shapes cannot be multiplied .*\. Check that the quantized model is "
            r"made from this float model \(shapes differ: 0: \[4, 3, 3, 3\] vs "
            r"\[8, 3, 3, 3\].*\); if it is, this is a fault in fxns: compare in "
            r"propagated mode meanwhile",
        ),
    ):
        fxns.compare_activations(model, quant, torch.randn(2, 3, 8, 8))


def test_an_instrumentation_fault_names_the_other_mode_in_words() -> None:
    from fxns.compare import diagnose

    model, quant = _small()
    matching = fxns.match(model, quant)
    x = torch.randn(2, 3, 8, 8)
    for mode, other in (("shadow", "propagated"), ("propagated", "shadow")):
        err = diagnose(matching, (x,), 0, RuntimeError("boom"), mode)
        assert isinstance(err, fxns.InstrumentError)
        assert str(err).endswith(
            f"RuntimeError: boom. This is a fault in fxns: compare in {other} mode "
            "meanwhile, and report it with the two models"
        )
        assert "mode=" not in str(err)
