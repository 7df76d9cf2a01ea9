"""Metric formulas and accumulators, checked against float64 definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxns.stats import ErrorStats, flat_view, metrics_from_sums

from .reference import Sums


def test_identical_and_all_zero_tensors_read_as_identical() -> None:
    for value in (torch.zeros(3, 4), torch.randn(3, 4)):
        s = ErrorStats()
        s.update(value, value.clone())
        m = s.metrics()
        assert m["sqnr"] == math.inf
        assert m["cosine"] == 1.0
        assert m["mse"] == 0.0
        assert m["max_abs"] == 0.0


def test_zero_float_value_with_nonzero_error_is_minus_inf_not_nan() -> None:
    s = ErrorStats()
    s.update(torch.zeros(4), torch.ones(4))
    m = s.metrics()
    assert m["sqnr"] == -math.inf
    assert m["cosine"] == 0.0
    assert m["mse"] == 1.0


def test_quantized_values_are_dequantized() -> None:
    f = torch.linspace(-1, 1, 50)
    q = torch.quantize_per_tensor(f, 0.05, 128, torch.quint8)
    s = ErrorStats()
    s.update(f, q)
    ref = Sums()
    ref.add(f, q)
    assert s.metrics()["sqnr"] == pytest.approx(ref.sqnr(), abs=1e-4)


def test_channels_last_and_contiguous_pair_elementwise() -> None:
    f = torch.randn(2, 3, 5, 5)
    q = (f + 0.01 * torch.randn_like(f)).to(memory_format=torch.channels_last)
    s = ErrorStats()
    s.update(f, q)
    ref = Sums()
    ref.add(f, q)
    assert s.metrics()["sqnr"] == pytest.approx(ref.sqnr(), abs=1e-4)
    assert s.metrics()["max_abs"] == pytest.approx(ref.max_abs, rel=1e-6)


def test_flat_view_does_not_copy_dense_tensors() -> None:
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    assert flat_view(x).data_ptr() == x.data_ptr()
    assert flat_view(x).numel() == x.numel()


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        ErrorStats().update(torch.zeros(3), torch.zeros(4))


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(finite, finite), min_size=1, max_size=40),
        min_size=1,
        max_size=4,
    )
)
def test_streaming_sums_equal_one_pass_over_everything(
    batches: list[list[tuple[float, float]]],
) -> None:
    s = ErrorStats()
    ref = Sums()
    for batch in batches:
        f = torch.tensor([a for a, _ in batch])
        q = torch.tensor([b for _, b in batch])
        s.update(f, q)
        ref.add(f, q)
    m = s.metrics()
    assert not math.isnan(m["sqnr"])
    assert not math.isnan(m["cosine"])
    assert m["mse"] == pytest.approx(ref.mse(), rel=1e-4, abs=1e-6)
    assert m["max_abs"] == pytest.approx(ref.max_abs, rel=1e-6, abs=1e-6)
    if ref.dd > 1e-6 * ref.ff and ref.ff > 0:
        assert m["sqnr"] == pytest.approx(ref.sqnr(), abs=0.01)


def test_merge_is_the_same_as_seeing_everything() -> None:
    f1, q1 = torch.randn(10), torch.randn(10)
    f2, q2 = torch.randn(7), torch.randn(7)
    a, b, both = ErrorStats(), ErrorStats(), ErrorStats()
    a.update(f1, q1)
    b.update(f2, q2)
    both.update(f1, q1)
    both.update(f2, q2)
    merged = a.merge(b).metrics()
    for k, v in both.metrics().items():
        assert merged[k] == pytest.approx(v, rel=1e-9)


def test_no_data_is_nan_not_a_number_pretending() -> None:
    m = metrics_from_sums(0, 0, 0, 0, 0, 0)
    assert all(math.isnan(v) for v in m.values())


def test_tiny_values_do_not_underflow_into_a_wrong_sqnr() -> None:
    # Squares of 1e-20 vanish in float32; the sums must still see them.
    f = torch.tensor([2e-20, 0.0, 1e-20])
    q = torch.tensor([0.0, 0.0, 1e-20])
    s = ErrorStats()
    s.update(f, q)
    ref = Sums()
    ref.add(f, q)
    assert s.metrics()["sqnr"] == pytest.approx(ref.sqnr(), abs=0.01)
    assert s.metrics()["cosine"] == pytest.approx(ref.cosine(), abs=1e-6)
