"""Generated models for the benchmarks: ResNet-like, transformer-like, LSTM-like.

Two uses:

- *scaling* (``bench_match.py``, the suite's matching section): tiny widths
  (4 channels, dimension 8), so that graphs of up to 10,000 fx nodes quantize
  and trace quickly; only their structure matters. :func:`model_with_about`
  picks the depth for a node count.
- *run time* (the suite's first section): realistic widths, so that the
  float and quantized forwards cost what they cost in a real model:
  :class:`StagedResNetLike` (32 and 64 channels, two stages, on
  2x3x64x64 images), :class:`TransformerLike` at dimension 128 with 4 heads
  on sequences of 64, and :class:`LSTMLike` (for dynamic quantization).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

__all__ = [
    "FAMILIES",
    "BasicBlock",
    "EncoderLayer",
    "LSTMLike",
    "ResNetLike",
    "StagedResNetLike",
    "TransformerLike",
    "model_with_about",
]


class BasicBlock(nn.Module):
    """conv-bn-relu, conv-bn, optional 1x1 downsample, add, relu: ~9 fx nodes.

    ``in_channels`` (default ``channels``) and ``stride`` give the first
    block of a stage; the downsample then maps the input to the block's
    shape.
    """

    def __init__(
        self,
        channels: int,
        downsample: bool,
        in_channels: int | None = None,
        stride: int = 1,
    ) -> None:
        super().__init__()
        c = channels
        c_in = c if in_channels is None else in_channels
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(c_in, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c)
            )
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetLike(nn.Module):
    """A stem, ``n_blocks`` basic blocks (a downsample every fourth), a head.

    All at the input's resolution: meant for tiny widths and inputs (the
    scaling family).
    """

    def __init__(self, n_blocks: int, channels: int = 4) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            *(BasicBlock(c, downsample=i % 4 == 0) for i in range(n_blocks))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class StagedResNetLike(nn.Module):
    """A ResNet of realistic width: stem to 1/4 resolution, then stages.

    Stem: 3x3 conv with stride 2, batch norm, ReLU, 2x2 max pool. Each stage
    has ``blocks_per_stage`` basic blocks of its width in ``widths``; every
    stage after the first starts with a stride-2 block (with a 1x1
    downsample). On 2x3x64x64 inputs with the default
    widths every block costs about 9.4 M multiply-adds; 36 blocks per stage
    make about 510 fx nodes (7 per block).
    """

    def __init__(
        self, blocks_per_stage: int = 36, widths: Sequence[int] = (32, 64)
    ) -> None:
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, w0, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        blocks: list[nn.Module] = []
        c_in = w0
        for stage, width in enumerate(widths):
            for i in range(blocks_per_stage):
                first = i == 0 and stage > 0
                blocks.append(
                    BasicBlock(
                        width,
                        downsample=first,
                        in_channels=c_in,
                        stride=2 if first else 1,
                    )
                )
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class EncoderLayer(nn.Module):
    """Multi-head self-attention and an MLP, post-norm: ~30 fx nodes."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(2 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = torch.matmul(torch.softmax(scores, dim=-1), v)
        attn = attn.transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.out(attn))
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class TransformerLike(nn.Module):
    """An input projection, ``n_layers`` encoder layers, a head.

    Takes ``(batch, sequence, dim)``.
    """

    def __init__(self, n_layers: int, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.layers = nn.Sequential(
            *(EncoderLayer(dim, heads) for _ in range(n_layers))
        )
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.embed(x)))


class LSTMLike(nn.Module):
    """Linear, a 2-layer LSTM, linear: what dynamic quantization is for.

    Takes ``(sequence, batch, dim)``.
    """

    def __init__(self, dim: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.rnn = nn.LSTM(dim, dim, num_layers=layers)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(x))[0])


# Scaling family → (model for a unit count, example input).
FAMILIES: dict[str, tuple[Callable[[int], nn.Module], Callable[[], torch.Tensor]]] = {
    "resnet-like": (ResNetLike, lambda: torch.randn(1, 3, 4, 4)),
    "transformer-like": (TransformerLike, lambda: torch.randn(1, 4, 8)),
}


def model_with_about(family: str, nodes: int) -> tuple[nn.Module, torch.Tensor]:
    """A model of ``family`` whose traced float graph has about ``nodes`` nodes."""
    make, example = FAMILIES[family]
    per_unit = (len(fx.symbolic_trace(make(11)).graph.nodes)) - len(
        fx.symbolic_trace(make(1)).graph.nodes
    )
    fixed = len(fx.symbolic_trace(make(1)).graph.nodes) - per_unit / 10
    units = max(1, round((nodes - fixed) / (per_unit / 10)))
    return make(units).eval(), example()
