"""``fxns demo``: the whole job on a built-in model, with nothing to download.

A small CNN with the structures that quantization gets wrong most often (a
conv+bn+relu to fuse, a residual ``add``, a ``cat`` of two branches, a
squeeze-excite ``mul``) is trained for a few seconds on synthetic images,
quantized with ``prepare_fx``/``convert_fx``, and compared with fxns in both
modes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import fx, nn

from .compare import compare_activations, compare_weights
from .quantize import quantize_fx
from .report import Report

__all__ = ["DemoNet", "DemoResult", "make_data", "run_demo"]

N_CLASSES = 4
IMAGE = 32


class DemoNet(nn.Module):
    """A small CNN: stem, residual block, two-branch cat, squeeze-excite, head.

    Example:
        >>> DemoNet()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 4])
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        )
        self.conv1 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.branch_a = nn.Conv2d(w, w, 1)
        self.branch_b = nn.Conv2d(w, w, 3, padding=1)
        self.se_pool = nn.AdaptiveAvgPool2d(1)
        self.se_fc = nn.Conv2d(2 * w, 2 * w, 1)
        self.se_gate = nn.Sigmoid()
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        x = self.relu2(x + y)
        x = self.pool(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = x * self.se_gate(self.se_fc(self.se_pool(x)))
        return self.fc(torch.flatten(self.head_pool(x), 1))


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic images of 4 classes (stripes, checks, blob, ring) and labels.

    Example:
        >>> x, y = make_data(8)
        >>> x.shape, y.shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8]))
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, N_CLASSES, (n,), generator=g)
    coords = torch.arange(IMAGE, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    r = ((yy - IMAGE / 2) ** 2 + (xx - IMAGE / 2) ** 2).sqrt()
    patterns = torch.stack(
        [
            torch.sin(yy * 0.8),
            torch.sign(torch.sin(yy * 0.5)) * torch.sign(torch.sin(xx * 0.5)),
            torch.exp(-(r**2) / 60.0) * 2 - 0.5,
            torch.cos(r * 0.6),
        ]
    )
    images = patterns[labels].unsqueeze(1).repeat(1, 3, 1, 1)
    tint = torch.rand(n, 3, 1, 1, generator=g) * 0.8 + 0.6
    noise = torch.randn(n, 3, IMAGE, IMAGE, generator=g) * 0.4
    return images * tint + noise, labels


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    float_model: nn.Module
    quant_model: fx.GraphModule
    float_accuracy: float
    quant_accuracy: float
    weights: Report
    shadow: Report
    propagated: Report
    seconds: float


def run_demo(train_seconds: float = 8.0, seed: int = 0) -> DemoResult:
    """Train, quantize and compare the demo network; return everything.

    Example:
        >>> result = run_demo(train_seconds=1.0)  # doctest: +SKIP
        >>> print(result.shadow)  # doctest: +SKIP
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = DemoNet()
    x_train, y_train = make_data(2048, seed)
    x_test, y_test = make_data(512, seed + 1)

    # A few seconds of training are enough for this task.
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    deadline = time.perf_counter() + train_seconds
    step = 0
    while time.perf_counter() < deadline and step < 2000:
        idx = torch.randint(0, len(x_train), (64,))
        optimizer.zero_grad()
        loss_fn(model(x_train[idx]), y_train[idx]).backward()
        optimizer.step()
        step += 1
    model.eval()

    calibration = list(x_train[:512].split(64))
    quant_model = quantize_fx(model, calibration, backend="x86")
    batches = list(x_test.split(64))
    with torch.no_grad():
        f_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        q_acc = (quant_model(x_test).argmax(1) == y_test).float().mean().item()

    return DemoResult(
        float_model=model,
        quant_model=quant_model,
        float_accuracy=f_acc,
        quant_accuracy=q_acc,
        weights=compare_weights(model, quant_model),
        shadow=compare_activations(model, quant_model, batches, mode="shadow"),
        propagated=compare_activations(model, quant_model, batches, mode="propagated"),
        seconds=time.perf_counter() - start,
    )
