"""Metric formulas and streaming, mergeable accumulators: step 5 of the pipeline.

A comparison never keeps activations. For each compared value it keeps a few
running sums over every element of every batch seen, from which every metric
follows exactly:

========  ==================================================================
``n``      number of elements compared
``ff``     Σ f²  (f: float value)
``qq``     Σ q²  (q: dequantized quantized value)
``fq``     Σ f·q
``dd``     Σ (f − q)²
``max``    max |f − q|
========  ==================================================================

The metrics, over all elements of all batches:

- ``sqnr`` = 10·log10(Σf² / Σ(f−q)²) in dB; ``+inf`` when Σ(f−q)² = 0
  (identical, all-zero included); ``-inf`` when the float value is all zero
  and the quantized one is not.
- ``cosine`` = Σfq / (√Σf² · √Σq²); 1.0 when both are all zero, 0.0 when
  exactly one is.
- ``mse`` = Σ(f−q)² / n.
- ``max_abs`` = max |f − q|.

Sums merge by addition and maxima by ``max``, so statistics gathered over
several batches, or several processes, combine into the statistics of all of
them (:meth:`ErrorStats.merge`).

NaN and ±Inf never enter the sums. An element pair in which either value is
not finite is left out and counted instead (``nonfinite_float``,
``nonfinite_quant``, ``excluded``), so the metrics describe the finite part
and stay finite. Finding such values costs nothing on clean data: a NaN or Inf
anywhere makes the sums already computed non-finite, and only then does a
slower pass mask and count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import _onepass

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "ErrorStats",
    "as_float",
    "flat_view",
    "metrics_from_sums",
]

# The metric names every result carries, in display order.
SQNR = "sqnr"
COSINE = "cosine"
MSE = "mse"
MAX_ABS = "max_abs"
METRICS: tuple[str, ...] = (SQNR, COSINE, MSE, MAX_ABS)

# Sorting "worst first" means ascending for these, descending for the others.
HIGHER_IS_BETTER: frozenset[str] = frozenset({SQNR, COSINE})


@dataclass
class ErrorStats:
    """Running sums of the difference between a float and a quantized value.

    Example:
        >>> s = ErrorStats()
        >>> s.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
        >>> round(s.metrics()["sqnr"], 2)
        13.01
    """

    # Element pairs in the sums (both values finite).
    n: int = 0
    ff: float = 0.0
    qq: float = 0.0
    fq: float = 0.0
    dd: float = 0.0
    max_abs: float = 0.0
    # Batches (update calls) seen.
    batches: int = 0
    # NaN or ±Inf elements seen on each side.
    nonfinite_float: int = 0
    nonfinite_quant: int = 0
    # Element pairs left out of the sums because either value is NaN or ±Inf.
    excluded: int = 0

    def update(self, f: torch.Tensor, q: torch.Tensor) -> None:
        """Add one batch: ``f`` float, ``q`` quantized (dequantized or not)."""
        if f.shape != q.shape:
            raise ValueError(
                f"cannot compare a float value of shape {tuple(f.shape)} "
                f"with a quantized value of shape {tuple(q.shape)}"
            )
        n = f.numel()
        if n == 0:
            self.batches += 1
            return
        # The compiled route first (one pass, float32 values on CPU); it
        # leaves non-finite and tiny sums to the careful route below.
        fast = _onepass.sums(f, q)
        if fast is not None:
            ff, qq, dd, max_abs = fast
            # A sum below _TINY may be zeros or float32 squares that lost
            # their digits; the careful route below tells them apart.
            if (
                math.isfinite(ff + qq + dd + max_abs)
                and ff >= _TINY
                and (qq >= _TINY or (qq == 0.0 and _zero_means_zeros(q)))
                and (dd >= _TINY or max_abs == 0.0)
            ):
                self.add_sums(n, ff, qq, (ff + qq - dd) / 2.0, dd, max_abs)
                return
        q_zeros = _zero_means_zeros(q)
        f = as_float(f.detach())
        q = as_float(q.detach())
        ff, qq, dd, max_abs = _sums(f, q)
        if not math.isfinite(ff + qq + dd):
            # A NaN or Inf in either value (or a float32 overflow) made the
            # sums non-finite: take them again over the finite pairs only.
            self._update_nonfinite(f, q)
            return
        if _tiny(ff, qq, dd, max_abs, q_zeros):
            # Squares of values near float32's smallest numbers lose their
            # digits or vanish (a difference of 1e-20 squares to 0): take the
            # sums again in float64. Values that are exactly zero do not.
            ff, qq, dd, max_abs = _sums(f.double(), q.double())
        # Σfq from the other three: exact algebra, no fourth pass over memory.
        fq = (ff + qq - dd) / 2.0
        self.add_sums(n, ff, qq, fq, dd, max_abs)

    def _update_nonfinite(self, f: torch.Tensor, q: torch.Tensor) -> None:
        """:meth:`update` for values with NaN/Inf, or whose sums overflow float32.

        Pairs with a non-finite value are zeroed on both sides, which takes
        them out of every sum, and counted. Sums that still overflow float32
        are taken again in float64.
        """
        # |x| < inf is False for NaN and ±Inf; about twice as fast as isfinite.
        finite_f = f.abs() < math.inf
        finite_q = q.abs() < math.inf
        both = finite_f & finite_q
        n_f, n_q, n = (
            int(c)
            for c in torch.stack(
                [torch.count_nonzero(m) for m in (finite_f, finite_q, both)]
            ).tolist()
        )
        f = torch.where(both, f, 0.0)
        q = torch.where(both, q, 0.0)
        sums = _sums(f, q)
        if not math.isfinite(sum(sums)):
            sums = _sums(f.double(), q.double())
        ff, qq, dd, max_abs = sums
        self.nonfinite_float += f.numel() - n_f
        self.nonfinite_quant += q.numel() - n_q
        self.excluded += f.numel() - n
        self.add_sums(n, ff, qq, (ff + qq - dd) / 2.0, dd, max_abs)

    def add_sums(
        self, n: int, ff: float, qq: float, fq: float, dd: float, max_abs: float
    ) -> None:
        """Add precomputed sums for one batch."""
        self.n += n
        self.ff += ff
        self.qq += qq
        self.fq += fq
        self.dd += dd
        self.max_abs = max(self.max_abs, max_abs)
        self.batches += 1

    def merge(self, other: ErrorStats) -> ErrorStats:
        """The statistics of both, as if every batch had been seen by one.

        Example:
            >>> a, b = ErrorStats(), ErrorStats()
            >>> a.update(torch.ones(3), torch.ones(3))
            >>> b.update(torch.ones(2), torch.zeros(2))
            >>> a.merge(b).n
            5
        """
        return ErrorStats(
            n=self.n + other.n,
            ff=self.ff + other.ff,
            qq=self.qq + other.qq,
            fq=self.fq + other.fq,
            dd=self.dd + other.dd,
            max_abs=max(self.max_abs, other.max_abs),
            batches=self.batches + other.batches,
            nonfinite_float=self.nonfinite_float + other.nonfinite_float,
            nonfinite_quant=self.nonfinite_quant + other.nonfinite_quant,
            excluded=self.excluded + other.excluded,
        )

    def metrics(self) -> dict[str, float]:
        """The metrics of everything seen so far (see the module docstring)."""
        return metrics_from_sums(
            self.n, self.ff, self.qq, self.fq, self.dd, self.max_abs
        )


# Sums of squares below this are taken again in float64 (see ErrorStats.update).
_TINY = 1e-25


def _tiny(
    ff: float, qq: float, dd: float, max_abs: float, q_zeros: bool = False
) -> bool:
    """Whether float32 squares may have lost these sums' digits: a sum below
    :data:`_TINY` while some value is not zero. A Σ(f−q)² of exactly zero
    beside a max|f−q| of zero is exact: the values are identical; so is a Σq²
    of exactly zero when ``q_zeros`` (:func:`_zero_means_zeros`)."""
    some = bool(ff or qq or max_abs)
    q_lost = qq < _TINY and some and not (qq == 0.0 and q_zeros)
    return (ff < _TINY and some) or q_lost or (max_abs > 0.0 and dd < _TINY)


def _zero_means_zeros(t: torch.Tensor) -> bool:
    """Whether a float32 Σt² of exactly 0 means every element of ``t`` is 0.

    True of a per-tensor quantized value whose scale squares to at least
    :data:`_TINY` (twice, for float32 rounding): its non-zero elements are
    whole multiples of the scale, so none squares to less. Deep layers of
    randomly initialized networks often quantize to all zeros (the float
    values are around 1e-8, the scale 1e-4); without this such values went
    to float64, at ten times the cost.

    Example:
        >>> zeros = torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.quint8)
        >>> _zero_means_zeros(zeros)
        True
        >>> _zero_means_zeros(torch.zeros(3))
        False
    """
    if not t.is_quantized or t.qscheme() not in _PER_TENSOR:
        return False
    return float(t.q_scale()) ** 2 >= 2.0 * _TINY


_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)


def _sums(f: torch.Tensor, q: torch.Tensor) -> tuple[float, float, float, float]:
    """Σf², Σq², Σ(f−q)² and max|f−q| of two tensors of the same shape.

    Five passes over memory, no copies. f and q may be laid out differently
    (quantized kernels favour channels-last): the subtraction pairs elements
    whatever the layout, and the sums of squares run over each tensor's own
    memory order.
    """
    d = torch.sub(f, q)
    f, q, d = flat_view(f), flat_view(q), flat_view(d)
    lo, hi = torch.aminmax(d)
    ff, qq, dd, lo_, hi_ = torch.stack(
        (torch.dot(f, f), torch.dot(q, q), torch.dot(d, d), lo, hi)
    ).tolist()
    return ff, qq, dd, max(-lo_, hi_)


def metrics_from_sums(
    n: int, ff: float, qq: float, fq: float, dd: float, max_abs: float
) -> dict[str, float]:
    """The four metrics from the sums, with the edge cases of DESIGN.md.

    Example:
        >>> metrics_from_sums(4, 0.0, 0.0, 0.0, 0.0, 0.0)["sqnr"]
        inf
    """
    if n == 0:
        nan = math.nan
        return {SQNR: nan, COSINE: nan, MSE: nan, MAX_ABS: nan}
    if dd == 0.0:
        sqnr = math.inf
    elif ff == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(ff / dd)

    if dd == 0.0:
        # Identical values (all-zero included): exactly 1, whatever rounding
        # the sums of squares picked up in different memory orders.
        cosine = 1.0
    elif ff == 0.0 or qq == 0.0:
        cosine = 0.0
    else:
        # Rounding can push |cos| a hair past 1 for identical tensors.
        cosine = max(-1.0, min(1.0, fq / (math.sqrt(ff) * math.sqrt(qq))))
    return {SQNR: sqnr, COSINE: cosine, MSE: dd / n, MAX_ABS: max_abs}


def as_float(value: torch.Tensor) -> torch.Tensor:
    """A float32 view of a tensor: dequantized if quantized, upcast if half.

    Example:
        >>> as_float(torch.quantize_per_tensor(torch.ones(2), 0.5, 0, torch.quint8))
        tensor([1., 1.])
    """
    if value.is_quantized:
        value = value.dequantize()
    if value.dtype != torch.float32:
        value = value.float()
    return value


def flat_view(t: torch.Tensor) -> torch.Tensor:
    """All elements of ``t`` as a 1-D tensor in memory order, without a copy
    when ``t`` is dense in any dimension order (contiguous, channels-last).

    Example:
        >>> x = torch.arange(6.0).reshape(1, 2, 3, 1)
        >>> x = x.to(memory_format=torch.channels_last)
        >>> flat_view(x).data_ptr() == x.data_ptr()
        True
    """
    if t.is_contiguous():
        return t.view(-1)
    strides = t.stride()
    dims = sorted(range(t.dim()), key=lambda i: -strides[i])
    return t.permute(dims).reshape(-1)
