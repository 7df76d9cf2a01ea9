"""Raw values are kept only when asked: ``compare_activations(keep_tensors=...)``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxns

from .conftest import quantize_module
from .reference import activations


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, torch.fx.GraphModule, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = Net().eval()
    batches = [torch.randn(2, 3, 6, 6) for _ in range(3)]
    return model, quantize_module(model, batches[0], n=3), batches


def test_nothing_is_kept_unless_asked(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, batches = models
    for mode in ("shadow", "propagated"):
        report = fxns.compare_activations(model, quant, batches, mode=mode)
        assert report.tensors == {}


def test_kept_values_are_the_models_own(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, batches = models
    m = fxns.match(model, quant)
    report = fxns.compare_activations(
        model, quant, batches, mode="propagated", keep_tensors=["conv", "flatten"]
    )
    assert set(report.tensors) == {"conv", "flatten"}
    for name in report.tensors:
        kept = report.tensors[name]
        assert len(kept) == len(batches)
        for (f, q), x in zip(kept, batches, strict=True):
            f_ref = activations(model, x)[m[name].float_nodes[-1]]
            q_ref = activations(quant, x)[m[name].quant_nodes[-1]]
            assert torch.allclose(f, f_ref, atol=1e-5)
            assert not q.is_quantized
            assert torch.equal(q, q_ref.dequantize() if q_ref.is_quantized else q_ref)


def test_every_row_is_kept_with_true_in_shadow_mode(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, batches = models
    report = fxns.compare_activations(
        model, quant, batches, mode="shadow", keep_tensors=True
    )
    assert set(report.tensors) == set(report.names)
    # A shadow is fed the quantized model's own values: the flatten of a
    # dequantized value is that value, flattened.
    for f, q in report.tensors["flatten"]:
        assert torch.equal(f, q)


def test_unknown_names_and_wrong_types_are_errors(models) -> None:  # type: ignore[no-untyped-def]
    model, quant, batches = models
    with pytest.raises(fxns.ArgumentError, match=r"'conv1'.*did you mean 'conv'"):
        fxns.compare_activations(model, quant, batches, keep_tensors=["conv1"])
    with pytest.raises(fxns.ArgumentError, match="list of row names, got 'conv'"):
        fxns.compare_activations(model, quant, batches, keep_tensors="conv")
