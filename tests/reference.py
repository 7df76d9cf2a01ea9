"""Independent computations that the tests check fxns's numbers against.

Nothing here uses fxns: activations are read with ``torch.fx.Interpreter``
from graphs traced by plain ``torch.fx.symbolic_trace`` (or the converted
``GraphModule`` itself), and metrics are computed in float64 from their
definitions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx, nn


class Recorder(fx.Interpreter):
    """Runs a GraphModule and keeps every node's output (for small tests only)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        # A copy: a later in-place op (ReLU(inplace=True)) must not change it.
        self.values[n.name] = (
            value.clone() if isinstance(value, torch.Tensor) else value
        )
        return value


def activations(model: nn.Module, *args: torch.Tensor) -> dict[str, Any]:
    gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    rec = Recorder(gm)
    with torch.no_grad():
        rec.run(*args)
    return rec.values


def to_float64(t: torch.Tensor) -> torch.Tensor:
    if t.is_quantized:
        t = t.dequantize()
    return t.detach().to(torch.float64)


class Sums:
    """Σf², Σ(f−q)², Σfq, Σq², n and max|f−q| in float64, over several batches."""

    def __init__(self) -> None:
        self.ff = self.dd = self.fq = self.qq = 0.0
        self.n = 0
        self.max_abs = 0.0

    def add(self, f: torch.Tensor, q: torch.Tensor) -> None:
        f, q = to_float64(f), to_float64(q)
        d = f - q
        self.ff += float((f * f).sum())
        self.qq += float((q * q).sum())
        self.fq += float((f * q).sum())
        self.dd += float((d * d).sum())
        self.n += f.numel()
        self.max_abs = (
            max(self.max_abs, float(d.abs().max())) if d.numel() else self.max_abs
        )

    def sqnr(self) -> float:
        if self.dd == 0:
            return math.inf
        return 10 * math.log10(self.ff / self.dd)

    def cosine(self) -> float:
        if self.ff == 0 and self.qq == 0:
            return 1.0
        return self.fq / math.sqrt(self.ff * self.qq)

    def mse(self) -> float:
        return self.dd / self.n
