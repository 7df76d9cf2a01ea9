"""NaN and Inf: counted per layer, left out of the sums, never in a ranking."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxns
from fxns.report import Report
from fxns.stats import ErrorStats

from .conftest import quantize_module
from .reference import Sums

NAN, INF = math.nan, math.inf


def _finite_reference(f: torch.Tensor, q: torch.Tensor) -> Sums:
    """float64 sums over the element pairs where both values are finite."""
    both = torch.isfinite(f) & torch.isfinite(q)
    ref = Sums()
    ref.add(f[both], q[both])
    return ref


def _check_against(s: ErrorStats, ref: Sums) -> None:
    m = s.metrics()
    assert s.n == ref.n
    assert m["mse"] == pytest.approx(ref.mse(), rel=1e-5)
    assert m["sqnr"] == pytest.approx(ref.sqnr(), abs=1e-4)
    assert m["cosine"] == pytest.approx(ref.cosine(), abs=1e-6)
    assert m["max_abs"] == pytest.approx(ref.max_abs, rel=1e-6)


@pytest.mark.parametrize(
    ("f_bad", "q_bad", "n_float", "n_quant", "excluded"),
    [
        ([NAN], [], 1, 0, 1),
        ([], [INF], 0, 1, 1),
        ([-INF, NAN], [INF], 2, 1, 2),  # one pair non-finite on both sides
        ([INF], [INF], 1, 1, 1),
    ],
    ids=["nan-in-float", "inf-in-quant", "both-sides", "same-inf"],
)
def test_nonfinite_values_are_counted_and_left_out_of_the_sums(
    f_bad: list[float], q_bad: list[float], n_float: int, n_quant: int, excluded: int
) -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 6, generator=g)
    q = f + 0.05 * torch.randn(4, 6, generator=g)
    for i, v in enumerate(f_bad):
        f[0, i] = v
    for i, v in enumerate(q_bad):
        q[0, i] = v
    s = ErrorStats()
    s.update(f, q)
    assert (s.nonfinite_float, s.nonfinite_quant, s.excluded) == (
        n_float,
        n_quant,
        excluded,
    )
    assert all(math.isfinite(v) for v in s.metrics().values())
    _check_against(s, _finite_reference(f, q))


def test_channels_last_and_contiguous_pair_elementwise_with_nan() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 5, 5, generator=g)
    q = (f + 0.01 * torch.randn(2, 3, 5, 5, generator=g)).contiguous(
        memory_format=torch.channels_last
    )
    f[1, 2, 0, 3] = NAN
    q[0, 1, 4, 4] = -INF
    s = ErrorStats()
    s.update(f, q)
    assert (s.nonfinite_float, s.nonfinite_quant, s.excluded) == (1, 1, 2)
    _check_against(s, _finite_reference(f, q))


def test_values_whose_squares_overflow_float32_are_summed_in_float64() -> None:
    f = torch.tensor([3e20, -2e20, 1.0])
    q = torch.tensor([3.1e20, -2e20, 1.0])
    s = ErrorStats()
    s.update(f, q)
    assert (s.nonfinite_float, s.nonfinite_quant, s.excluded) == (0, 0, 0)
    _check_against(s, _finite_reference(f, q))


def test_all_nonfinite_gives_no_sums_and_merge_keeps_every_count() -> None:
    a, b = ErrorStats(), ErrorStats()
    a.update(torch.full((3,), NAN), torch.zeros(3))
    b.update(torch.tensor([1.0, INF]), torch.tensor([1.5, 2.0]))
    assert a.n == 0 and a.excluded == 3 and a.batches == 1
    merged = a.merge(b)
    assert (merged.n, merged.batches) == (1, 2)
    assert (merged.nonfinite_float, merged.nonfinite_quant, merged.excluded) == (
        4,
        0,
        4,
    )
    assert merged.metrics()["mse"] == 0.25


values = st.one_of(
    st.floats(min_value=-1e3, max_value=1e3, width=32),
    st.sampled_from([NAN, INF, -INF]),
)


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(values, values), min_size=1, max_size=30),
        min_size=1,
        max_size=4,
    ),
    split=st.integers(min_value=0, max_value=4),
)
def test_streaming_and_merging_match_one_pass_over_the_finite_part(
    batches: list[list[tuple[float, float]]], split: int
) -> None:
    whole, left, right = ErrorStats(), ErrorStats(), ErrorStats()
    fs = [torch.tensor([a for a, _ in b]) for b in batches]
    qs = [torch.tensor([c for _, c in b]) for b in batches]
    for i, (f, q) in enumerate(zip(fs, qs, strict=True)):
        whole.update(f, q)
        (left if i < split else right).update(f, q)
    f_all, q_all = torch.cat(fs), torch.cat(qs)

    assert whole.nonfinite_float == int((~torch.isfinite(f_all)).sum())
    assert whole.nonfinite_quant == int((~torch.isfinite(q_all)).sum())
    ref = _finite_reference(f_all, q_all)
    assert whole.n == ref.n and whole.excluded == f_all.numel() - ref.n
    m = whole.metrics()
    if whole.n:
        assert not any(math.isnan(v) for v in m.values())
        assert m["mse"] == pytest.approx(ref.mse(), rel=1e-4, abs=1e-6)
        assert m["max_abs"] == pytest.approx(ref.max_abs, rel=1e-6, abs=1e-6)

    # Merging is exact: the counts are equal, the sums equal up to rounding.
    merged = left.merge(right)
    for field in ("n", "batches", "nonfinite_float", "nonfinite_quant", "excluded"):
        assert getattr(merged, field) == getattr(whole, field), field
    assert merged.max_abs == whole.max_abs
    for field in ("ff", "qq", "fq", "dd"):
        assert getattr(merged, field) == pytest.approx(
            getattr(whole, field), rel=1e-12, abs=1e-9
        )


# --- end to end -------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


@functools.cache
def _models() -> tuple[nn.Module, torch.fx.GraphModule]:
    torch.manual_seed(0)
    model = Net().eval()
    return model, quantize_module(model, torch.randn(4, 8))


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(4, 8, generator=g)
    dirty = torch.randn(4, 8, generator=g)
    dirty[1, 2] = NAN  # one sample's float activations become NaN downstream
    return [clean, dirty]


def test_nan_in_the_input_is_counted_per_layer_and_shown_in_the_report() -> None:
    model, quant = _models()
    with pytest.warns(UserWarning, match=r"NaN or Inf values in 2 layer\(s\)") as w:
        report = fxns.compare_activations(model, quant, _batches(), mode="propagated")
    assert len([x for x in w if "NaN or Inf" in str(x.message)]) == 1
    fc1, fc2 = report["fc1"], report["fc2"]
    # The NaN reaches every output of sample 1 on the float side only: the
    # quantized model quantizes its input first, and int8 has no NaN.
    assert (fc1.nonfinite_float, fc1.nonfinite_quant) == (16, 0)
    assert (fc2.nonfinite_float, fc2.nonfinite_quant) == (4, 0)
    assert fc1.elements == 2 * 4 * 16 - 16
    assert "metrics over the 112 of 128 value pairs with no NaN or Inf" in fc1.note
    for row in report.rows:
        assert all(math.isfinite(v) for k, v in row.metrics.items() if k != "sqnr")
        assert not math.isnan(row.metrics["sqnr"])
    table = str(report)
    assert "nan/inf f/q" in table and "16/0" in table
    back = Report.from_json(report.to_json())
    assert (back["fc1"].nonfinite_float, back["fc1"].nonfinite_quant) == (16, 0)


def test_metrics_over_the_finite_part_equal_those_without_the_bad_sample() -> None:
    model, quant = _models()
    batches = _batches()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dirty = fxns.compare_activations(model, quant, batches, mode="propagated")
    keep = torch.ones(4, dtype=torch.bool)
    keep[1] = False
    clean = fxns.compare_activations(
        model, quant, [batches[0], batches[1][keep]], mode="propagated"
    )
    # fc1+relu are fused on the quantized side: the ReLU's output stands for
    # fc1, whose NaN row is the only difference between the two runs.
    for name in ("fc1", "fc2"):
        for metric in ("sqnr", "cosine", "mse", "max_abs"):
            assert dirty[name].metrics[metric] == pytest.approx(
                clean[name].metrics[metric], rel=1e-5
            ), (name, metric)


def test_a_layer_with_only_nonfinite_values_has_no_metrics_and_ranks_last() -> None:
    model, quant = _models()
    x = torch.full((4, 8), NAN)
    with pytest.warns(UserWarning, match="NaN or Inf"):
        report = fxns.compare_activations(model, quant, x, mode="propagated")
    for row in report.rows:
        assert row.metrics == {}
        assert row.note.startswith("not compared: every one of the")
    clean = fxns.compare_activations(model, quant, torch.randn(4, 8))
    mixed = Report(clean.rows + report.rows, mode="shadow")
    for metric in ("sqnr", "cosine", "mse", "max_abs"):
        ranked = mixed.sorted_rows(metric)
        values = [r.metrics.get(metric) for r in ranked]
        assert values[-2:] == [None, None]  # unranked rows last
        assert not any(v is not None and math.isnan(v) for v in values)


@pytest.mark.parametrize("mode", ["shadow", "propagated"])
def test_clean_data_has_no_nonfinite_column_and_no_warning(mode: str) -> None:
    model, quant = _models()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = fxns.compare_activations(model, quant, torch.randn(4, 8), mode=mode)
    assert all(r.nonfinite_float == r.nonfinite_quant == 0 for r in report.rows)
    assert "nan/inf" not in str(report)
    assert "nonfinite_inputs" not in report.meta


def test_nan_in_the_input_is_counted_and_warned_about_in_shadow_mode() -> None:
    # The quantized model quantizes its input first, which makes a NaN
    # finite: no shadow sees it, so only the input check can say so.
    model, quant = _models()
    batches = _batches()
    batches[0][3, :3] = INF
    with pytest.warns(UserWarning, match=r"model inputs hold 4 NaN or Inf") as w:
        report = fxns.compare_activations(model, quant, batches, mode="shadow")
    assert len([x for x in w if "model inputs hold" in str(x.message)]) == 1
    assert report.meta["nonfinite_inputs"] == 4
    assert Report.from_json(report.to_json()).meta["nonfinite_inputs"] == 4
    # The user's own loop reads the same.
    shadow = fxns.add_shadows(model, quant)
    with torch.no_grad():
        for batch in batches:
            shadow(batch)
    with pytest.warns(UserWarning, match="mode='propagated'"):
        assert fxns.collect(shadow).meta["nonfinite_inputs"] == 4
