"""The compiled one-pass sums agree with float64 sums over every layout.

``fxns._onepass`` reads the quantized tensor's integer bytes in memory order,
transposes tiles where the two sides are laid out differently, and copies
views it cannot walk. These tests check it against sums taken in float64
over the dequantized values, element by element, for layouts generated at
random: contiguous, channels-last, transposed, sliced, expanded.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from fxns import _onepass
from fxns import stats as fxns_stats
from fxns.stats import ErrorStats

pytestmark = pytest.mark.skipif(
    not _onepass.available(), reason="numba is not installed"
)

QDTYPES = (torch.quint8, torch.qint8, torch.qint32, None)  # None: float32


def _reference(f: torch.Tensor, q: torch.Tensor) -> tuple[float, ...]:
    fd = f.double()
    qd = (q.dequantize() if q.is_quantized else q).double()
    d = fd - qd
    return (
        float((fd * fd).sum()),
        float((qd * qd).sum()),
        float((d * d).sum()),
        float(d.abs().max()),
    )


def _quantize(x: torch.Tensor, dtype: torch.dtype | None, scale: float) -> torch.Tensor:
    if dtype is None:
        return x.clone()
    zero_point = {torch.quint8: 128, torch.qint8: 3, torch.qint32: -7}[dtype]
    return torch.quantize_per_tensor(x, scale, zero_point, dtype)


def _view(t: torch.Tensor, how: str) -> torch.Tensor:
    """``t`` laid out as ``how`` says, same shape and values."""
    if how == "contiguous":
        return t.contiguous()
    if how == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if how == "transposed" and t.dim() >= 2:
        # Values the same, memory order of the last two dimensions swapped.
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


layouts = st.sampled_from(("contiguous", "channels_last", "transposed"))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 37), min_size=1, max_size=4),
    qdtype=st.sampled_from(QDTYPES),
    f_layout=layouts,
    q_layout=layouts,
    sliced=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sums_match_float64_over_layouts(
    shape: list[int],
    qdtype: torch.dtype | None,
    f_layout: str,
    q_layout: str,
    sliced: bool,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g) * 3
    if sliced:
        # Every other element of the first dimension: not dense.
        base = torch.cat([base, base]).reshape(2, *shape).transpose(0, 1)[:, 0]
    f = _view(base, f_layout)
    q = _quantize(base + 0.05 * torch.randn(base.shape, generator=g), qdtype, 0.03)
    q = _view(q, q_layout)
    if sliced:
        f, q = f[::2] if f.shape[0] > 1 else f, q[::2] if q.shape[0] > 1 else q
    got = _onepass.sums(f, q)
    assert got is not None
    for name, a, b in zip(
        ("ff", "qq", "dd", "max"), got[:4], _reference(f, q), strict=True
    ):
        assert math.isclose(a, b, rel_tol=2e-6, abs_tol=1e-30), (name, a, b)


@pytest.mark.parametrize("qdtype", QDTYPES[:3])
@pytest.mark.parametrize(
    ("f_layout", "q_layout"),
    [
        ("contiguous", "contiguous"),
        ("channels_last", "channels_last"),
        ("contiguous", "channels_last"),
        ("channels_last", "contiguous"),
    ],
)
def test_a_float_value_equal_to_the_dequantized_one_has_no_error(
    qdtype: torch.dtype, f_layout: str, q_layout: str
) -> None:
    """The dequantization is torch's own, to the bit: no fused multiply-add."""
    q = _quantize(torch.randn(2, 40, 9, 7) * 2, qdtype, 0.0371)
    f = _view(q.dequantize(), f_layout)
    ff, qq, dd, max_abs = _onepass.sums(f, _view(q, q_layout)) or (0, 0, -1, -1)
    assert dd == 0.0 and max_abs == 0.0
    assert ff == pytest.approx(qq, rel=1e-6)


def test_the_compiled_route_and_the_tensor_route_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    f = torch.randn(2, 16, 8, 8)
    q = torch.quantize_per_tensor(
        f + 0.1 * torch.randn_like(f), 0.02, 120, torch.quint8
    )
    q = q.contiguous(memory_format=torch.channels_last)
    fast = ErrorStats()
    fast.update(f, q)
    monkeypatch.setattr(_onepass, "_kernels", None)
    monkeypatch.setattr(_onepass, "_tried", True)
    assert _onepass.sums(f, q) is None
    slow = ErrorStats()
    slow.update(f, q)
    for metric, value in slow.metrics().items():
        assert fast.metrics()[metric] == pytest.approx(value, rel=1e-6), metric


def test_per_channel_and_half_values_take_the_tensor_route() -> None:
    f = torch.randn(2, 3, 4, 4)
    q = torch.quantize_per_channel(
        f, torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0, 1, 2]), 1, torch.qint8
    )
    assert _onepass.sums(f, q) is None
    assert _onepass.sums(f.half(), f) is None
    s = ErrorStats()
    s.update(f, q)
    assert s.n == f.numel() and 10 < s.metrics()["sqnr"] < 60


def test_values_too_small_to_square_in_float32_are_taken_again() -> None:
    """A float value of 1e-30 squares to 0 in float32; ErrorStats sees the
    tiny sum and takes the sums again in float64."""
    f = torch.full((4, 5), 1e-30)
    q = torch.full((4, 5), 2.0)
    got = _onepass.sums(f, q)
    assert got is not None and got[0] == 0.0
    s = ErrorStats()
    s.update(f, q)
    assert s.ff == pytest.approx(20 * 1e-60, rel=1e-6)
    assert s.metrics()["sqnr"] == pytest.approx(10 * math.log10(1e-60 / 4), abs=1e-6)


def test_a_quantized_value_of_all_zeros_stays_on_the_compiled_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deep layers of random networks: float values near 1e-8 quantize to all
    zeros. Σq² = 0 is then exact (the scale squares far above float32's
    limits), so the compiled sums stand, and agree with float64."""
    torch.manual_seed(0)
    f = 1e-8 * torch.randn(2, 32, 7, 7)
    q = torch.quantize_per_tensor(torch.zeros_like(f), 1e-3, 0, torch.quint8)
    q = q.contiguous(memory_format=torch.channels_last)
    fast = _onepass.sums(f, q)
    assert fast is not None and fast[1] == 0.0
    calls = []
    real_sums = fxns_stats._sums
    monkeypatch.setattr(
        fxns_stats, "_sums", lambda *a: calls.append(a) or real_sums(*a)
    )
    s = ErrorStats()
    s.update(f, q)
    assert calls == []  # no tensor-op or float64 route
    ff, qq, dd, top = _reference(f, q)
    assert (s.ff, s.qq, s.max_abs) == (pytest.approx(ff, rel=1e-6), qq, top)
    assert s.dd == pytest.approx(dd, rel=1e-6)
    assert s.metrics()["sqnr"] == 0.0

    # A scale that itself squares below float32's reach: a zero sum may be
    # lost digits, so the careful route takes it again in float64.
    tiny = torch.quantize_per_tensor(torch.zeros_like(f), 1e-20, 0, torch.qint32)
    ErrorStats().update(f, tiny)
    assert calls and calls[-1][0].dtype == torch.float64


def test_dequantize_to_contiguous_transposes_exactly() -> None:
    q = torch.quantize_per_tensor(torch.randn(3, 45, 7, 5), 0.05, 7, torch.qint8)
    q = q.contiguous(memory_format=torch.channels_last)
    out = _onepass.dequantize_to(q, contiguous=True)
    assert out.is_contiguous() and torch.equal(out, q.dequantize())
    kept = _onepass.dequantize_to(q, contiguous=False)
    assert not kept.is_contiguous() and torch.equal(kept, q.dequantize())
