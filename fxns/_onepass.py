"""The error sums in one pass over memory, compiled with numba.

:func:`sums` reads a float value and a quantized value once, straight from
the quantized tensor's integer bytes, and accumulates Σf², Σq², Σ(f−q)² and
max|f−q|. The tensor-op route in :mod:`fxns.stats` needs a dequantized copy,
a difference tensor and four more passes for the same numbers, and about ten
op dispatches per compared value; on models whose float forward is cheap
(mobilenet_v2) that cost more than the forward itself
(``docs/performance.md``).

Two memory orders are read directly: the same order on both sides (both
contiguous, both channels-last: one flat loop), and a contiguous 4-D value
beside a channels-last one (the float model's NCHW output beside the
quantized kernel's NHWC output: tiles of 32 channels by 32 positions, the
channels-last side transposed through a small buffer). :func:`dequantize_to`
uses the same tiles to dequantize a channels-last quantized value into a
contiguous float tensor in one pass.

How the numbers are kept exact enough:

- a quantized element is dequantized as ``(float32(q) - zero_point) * scale``
  in float32, the formula of ``Tensor.dequantize``, with no fused
  multiply-add, so a float value equal to the dequantized one has a
  difference of exactly 0;
- squares are summed in float32 over blocks of at most 1,024 elements (16
  vector lanes of 64) and the block sums in float64;
- max|f−q| is taken on the float32 difference, through its bit pattern (for
  non-negative floats the integer order is the float order), which lets the
  loop vectorize.

Nothing here is needed for correctness: :func:`sums` returns ``None`` when
numba cannot be imported, when ``FXNS_NO_NUMBA=1`` is set, or when the values
are of a kind it does not read (per-channel quantized, float16 on either
side, strided in some other way), and the caller falls back to the tensor
ops. Sums that come out non-finite or tiny are for the caller to check
(float32 squares overflow past 1.8e19 and underflow below 1e-19): it then
takes them again the slow, careful way. The compiled code is cached on disk
by numba, so only the first process on a machine pays the compile (about a
second per kind of input).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Sums", "available", "dequantize_to", "sums"]

# Σf², Σq², Σ(f−q)² and max|f−q|.
Sums = tuple[float, float, float, float]

# Elements per float32 partial sum, and the side of a transposition tile.
_BLOCK = 1024
_TILE = 32


_kernels: _Kernels | None = None
_tried = False


def available() -> bool:
    """Whether the compiled one-pass comparison is in use.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _load() is not None


def _load() -> _Kernels | None:
    global _kernels, _tried
    if not _tried:
        _tried = True
        if os.environ.get("FXNS_NO_NUMBA", "") not in ("", "0"):
            return None
        try:
            _kernels = _Kernels()
        except ImportError:
            _kernels = None
    return _kernels


class _Kernels:
    """The compiled kernels, one set per pair of element types.

    Tensors reach a kernel as addresses (``Tensor.data_ptr()``), and the
    element types are constants of each compiled function: a call then costs
    about a microsecond, where wrapping each tensor as a numpy array, or
    passing the type as an argument, cost several.
    """

    def __init__(self) -> None:
        import numba  # noqa: F401 (ImportError here: no compiled route)
        import numpy as np

        # numpy scalar type of each element type the kernels read.
        self.kinds: dict[torch.dtype, Any] = {
            torch.float32: np.float32,
            torch.quint8: np.uint8,
            torch.qint8: np.int8,
            torch.qint32: np.int32,
        }
        self._sums: dict[tuple[Any, Any], tuple[Callable[..., Any], ...]] = {}
        self._transpose: dict[Any, Callable[..., Any]] = {}

    def sums(self, kx: Any, ky: Any) -> tuple[Callable[..., Any], ...]:
        """The (flat, mixed) kernels for elements of types ``kx`` and ``ky``."""
        if (kx, ky) not in self._sums:
            self._sums[kx, ky] = _sum_kernels(kx, ky)
        return self._sums[kx, ky]

    def transpose(self, ky: Any) -> Callable[..., Any]:
        """The dequantize-and-transpose kernel for elements of type ``ky``."""
        if ky not in self._transpose:
            self._transpose[ky] = _transpose_kernel(ky)
        return self._transpose[ky]


def _jit() -> Callable[..., Any]:
    import numba

    # reassoc lets LLVM split each sum into vector lanes; nsz is harmless.
    # No "contract" (a fused multiply-add would change the dequantized value),
    # no "nnan"/"ninf" (a NaN or Inf must still reach the sums).
    return numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})


def _intrinsics() -> tuple[Callable[..., Any], ...]:
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def pointer(typingctx, address, kind):
        """``address`` as a pointer to elements of the number type ``kind``."""
        ptr = types.CPointer(kind.instance_type)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(ptr))

        return ptr(types.intp, kind), codegen

    @intrinsic
    def bits(typingctx, value):
        """The int32 bit pattern of ``|value|`` (a float32): it orders as
        the magnitudes do, NaN above Inf. In the IR, so that it stays 32
        bits wide (numba widens ``int32 & int32`` to int64, which halves
        the vector lanes of the loop around it)."""

        def codegen(context, builder, signature, args):
            pattern = builder.bitcast(args[0], ir.IntType(32))
            return builder.and_(pattern, ir.Constant(ir.IntType(32), 0x7FFFFFFF))

        return types.int32(types.float32), codegen

    @intrinsic
    def unbits(typingctx, value):
        """The float32 of an int32 bit pattern, as a float64."""

        def codegen(context, builder, signature, args):
            single = builder.bitcast(args[0], ir.FloatType())
            return builder.fpext(single, ir.DoubleType())

        return types.float64(types.int32), codegen

    return pointer, bits, unbits


_INTRINSICS: tuple[Callable[..., Any], ...] | None = None


def _sum_kernels(kx: Any, ky: Any) -> tuple[Callable[..., Any], ...]:
    import numba
    import numpy as np

    global _INTRINSICS
    if _INTRINSICS is None:
        _INTRINSICS = _intrinsics()
    pointer, bits, unbits = _INTRINSICS
    jit = _jit()
    block, tile = _BLOCK, _TILE

    @jit
    def flat(px, py, n, zx, sx, zy, sy):
        # x, y: n elements each, the same elements in the same order. Each
        # side is dequantized as (v - z) * s (z = 0, s = 1 for a float side).
        x = numba.carray(pointer(px, kx), n)
        y = numba.carray(pointer(py, ky), n)
        zx, sx = np.float32(zx), np.float32(sx)
        zy, sy = np.float32(zy), np.float32(sy)
        xx = yy = dd = 0.0
        top = np.int32(0)
        for b0 in range(0, n, block):
            xb = x[b0 : b0 + block]
            yb = y[b0 : b0 + block]
            a = b = c = np.float32(0.0)
            for i in range(xb.shape[0]):
                xv = (np.float32(xb[i]) - zx) * sx
                yv = (np.float32(yb[i]) - zy) * sy
                d = xv - yv
                a += xv * xv
                b += yv * yv
                c += d * d
                m = bits(d)
                top = m if m > top else top
            xx += a
            yy += b
            dd += c
        return xx, yy, dd, unbits(top)

    @jit
    def mixed(px, py, n_, c_, p_, zx, sx, zy, sy):
        # x: (N, C, P) and y: (N, P, C), both C-ordered: the same 4-D value
        # contiguous and channels-last. Tile by tile, y's tile is dequantized
        # into buf transposed, then read beside x's rows.
        x = numba.carray(pointer(px, kx), (n_, c_, p_))
        y = numba.carray(pointer(py, ky), (n_, p_, c_))
        zx, sx = np.float32(zx), np.float32(sx)
        zy, sy = np.float32(zy), np.float32(sy)
        buf = np.empty((tile, tile), np.float32)
        xx = yy = dd = 0.0
        top = np.int32(0)
        for n in range(n_):
            xn = x[n]
            yn = y[n]
            for c0 in range(0, c_, tile):
                for p0 in range(0, p_, tile):
                    yt = yn[p0 : p0 + tile, c0 : c0 + tile]
                    tp, tc = yt.shape
                    for p in range(tp):
                        yr = yt[p]
                        for c in range(tc):
                            buf[c, p] = (np.float32(yr[c]) - zy) * sy
                    a = b = e = np.float32(0.0)
                    for c in range(tc):
                        xr = xn[c0 + c, p0 : p0 + tile]
                        br = buf[c]
                        for p in range(xr.shape[0]):
                            xv = (np.float32(xr[p]) - zx) * sx
                            yv = br[p]
                            d = xv - yv
                            a += xv * xv
                            b += yv * yv
                            e += d * d
                            m = bits(d)
                            top = m if m > top else top
                    xx += a
                    yy += b
                    dd += e
        return xx, yy, dd, unbits(top)

    return flat, mixed


def _transpose_kernel(ky: Any) -> Callable[..., Any]:
    import numba
    import numpy as np

    global _INTRINSICS
    if _INTRINSICS is None:
        _INTRINSICS = _intrinsics()
    pointer = _INTRINSICS[0]
    tile = _TILE

    @_jit()
    def transpose(py, pout, n_, c_, p_, zy, sy):
        # y: (N, P, C) values; out: (N, C, P) float32, dequantized.
        y = numba.carray(pointer(py, ky), (n_, p_, c_))
        out = numba.carray(pointer(pout, np.float32), (n_, c_, p_))
        zy, sy = np.float32(zy), np.float32(sy)
        for n in range(n_):
            yn = y[n]
            on = out[n]
            for c0 in range(0, c_, tile):
                for p0 in range(0, p_, tile):
                    yt = yn[p0 : p0 + tile, c0 : c0 + tile]
                    tp, tc = yt.shape
                    for p in range(tp):
                        yr = yt[p]
                        for c in range(tc):
                            on[c0 + c, p0 + p] = (np.float32(yr[c]) - zy) * sy

    return transpose


def _layout(t: torch.Tensor) -> str | None:
    """ "flat" when ``t`` is contiguous, "nhwc" when it is channels-last (and
    not contiguous), else ``None``."""
    if t.is_contiguous():
        return "flat"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    return None


def _scale(t: torch.Tensor) -> tuple[float, float] | None:
    """(zero point, scale) of a per-tensor quantized ``t``; ``None`` otherwise."""
    try:
        return float(t.q_zero_point()), float(t.q_scale())
    except RuntimeError:  # per-channel: no single scale
        return None


def sums(f: torch.Tensor, q: torch.Tensor) -> Sums | None:
    """Σf², Σq², Σ(f−q)² and max|f−q|, or ``None`` where this route does not apply.

    ``f`` is a float32 value, ``q`` its quantized (or float32) counterpart of
    the same shape, both non-empty; ``q`` is dequantized on the fly. Called
    once per compared value and batch, so it is kept short: a few
    microseconds of Python around the kernel.

    Example:
        >>> f = torch.tensor([1.0, 2.0])
        >>> q = torch.quantize_per_tensor(f, 0.5, 0, torch.quint8)
        >>> sums(f, q) in (None, (5.0, 5.0, 0.0, 0.0))
        True
    """
    kernels = _kernels if _tried else _load()
    if kernels is None or f.dtype is not torch.float32:
        return None
    kind = kernels.kinds.get(q.dtype)
    if kind is None or not (f.is_cpu and q.is_cpu):
        return None
    zq, sq = 0.0, 1.0
    if q.dtype is not torch.float32:
        scale = _scale(q)
        if scale is None:
            return None
        zq, sq = scale
    f32 = kernels.kinds[torch.float32]
    lf, lq = _layout(f), _layout(q)
    if lf is None or lq is None:
        # Other strides (transposed or sliced views): one layout for both.
        # The copies cost less than the general route's passes.
        if lf is None and lq is None and _same_dense_order(f, q):
            lf = lq = "dense"
        else:
            f, q, lf, lq = f.contiguous(), q.contiguous(), "flat", "flat"
    if lf == lq:
        flat = kernels.sums(f32, kind)[0]
        return flat(f.data_ptr(), q.data_ptr(), f.numel(), 0.0, 1.0, zq, sq)
    n, c, h, w = f.shape
    if lf == "flat":  # f contiguous (N, C, H, W), q channels-last
        mixed = kernels.sums(f32, kind)[1]
        return mixed(f.data_ptr(), q.data_ptr(), n, c, h * w, 0.0, 1.0, zq, sq)
    mixed = kernels.sums(kind, f32)[1]
    qq, ff, dd, top = mixed(q.data_ptr(), f.data_ptr(), n, c, h * w, zq, sq, 0.0, 1.0)
    return ff, qq, dd, top


def _same_dense_order(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (same shape) put every element at the same
    offset of a dense block of memory: their elements, read in memory order,
    then pair up one to one."""
    if a.stride() != b.stride():
        return False
    span = 1 + sum((n - 1) * s for n, s in zip(a.shape, a.stride(), strict=True))
    return span == a.numel() and all(s > 0 for s in a.stride())


def dequantize_to(value: torch.Tensor, contiguous: bool) -> torch.Tensor:
    """``value`` (quantized) dequantized, as a new float32 tensor.

    With ``contiguous``, a channels-last value comes out contiguous (the
    transposition and the dequantization are one pass); otherwise in the
    value's own layout, as ``Tensor.dequantize`` gives it.

    Example:
        >>> q = torch.quantize_per_tensor(torch.ones(1, 2, 3, 3), 0.5, 0,
        ...                               torch.quint8)
        >>> q = q.contiguous(memory_format=torch.channels_last)
        >>> dequantize_to(q, contiguous=True).is_contiguous()
        True
    """
    if not contiguous or _layout(value) != "nhwc":
        return value.dequantize()
    kernels = _load()
    kind = None if kernels is None else kernels.kinds.get(value.dtype)
    scale = _scale(value)
    if kernels is None or kind is None or scale is None or not value.is_cpu:
        return value.dequantize().contiguous()
    n, c, h, w = value.shape
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    transpose = kernels.transpose(kind)
    transpose(value.data_ptr(), out.data_ptr(), n, c, h * w, *scale)
    return out
