"""Shared fixtures: real torchvision models, quantized once per session."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import fx, nn

import fxns
from fxns.quantize import quantize_fx

# Real architectures at small input sizes: big enough that every layer works
# on a real feature map, small enough for 2 CI cores.
INPUT_SHAPE = (2, 3, 64, 64)


@dataclass
class Quantized:
    float_model: nn.Module
    quant_model: fx.GraphModule
    batches: list[torch.Tensor]


def make_batches(
    n: int, shape: tuple[int, ...] = INPUT_SHAPE, seed: int = 0
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


@functools.cache
def torchvision_quantized(name: str) -> Quantized:
    """A torchvision model with random weights, FX-quantized for x86."""
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models, name)().eval()
    _randomize_batch_norms(model)
    batches = make_batches(3)
    return Quantized(model, quantize_fx(model, batches, "x86"), batches)


def _randomize_batch_norms(model: nn.Module) -> None:
    # Freshly built BNs are identities; real statistics make folding matter.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture(params=["resnet18", "mobilenet_v2", "mobilenet_v3_large"])
def torchvision_model(request: pytest.FixtureRequest) -> Quantized:
    return torchvision_quantized(request.param)


def quantize_module(
    model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], n: int = 2
) -> fx.GraphModule:
    """FX-quantize a small test model on a few batches like ``example``."""
    example = example if isinstance(example, tuple) else (example,)
    g = torch.Generator().manual_seed(0)
    batches = [
        tuple(
            torch.randn(e.shape, generator=g) if e.is_floating_point() else e
            for e in example
        )
        for _ in range(n)
    ]
    return quantize_fx(model.eval(), batches, "x86")


def snapshot(model: nn.Module) -> Callable[[], None]:
    """Record everything fxns must not change; the returned function checks it."""
    state = {k: _copy(v) for k, v in model.state_dict().items()}
    params = {k: id(v) for k, v in model.named_parameters()}
    buffers = {k: id(v) for k, v in model.named_buffers()}
    training = {k: m.training for k, m in model.named_modules()}
    hooks = _hooks(model)
    code = model.code if isinstance(model, fx.GraphModule) else None
    children = {k: id(m) for k, m in model.named_modules()}
    attributes = {k: set(m.__dict__) for k, m in model.named_modules()}

    def check() -> None:
        now = model.state_dict()
        assert now.keys() == state.keys()
        for k, v in state.items():
            assert _same(now[k], v), k
        assert {k: id(v) for k, v in model.named_parameters()} == params
        assert {k: id(v) for k, v in model.named_buffers()} == buffers
        assert {k: m.training for k, m in model.named_modules()} == training
        assert _hooks(model) == hooks
        assert {k: id(m) for k, m in model.named_modules()} == children
        assert {k: set(m.__dict__) for k, m in model.named_modules()} == attributes
        if code is not None:
            assert isinstance(model, fx.GraphModule)
            assert model.code == code

    return check


def _hooks(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """How many hooks of each kind every submodule has."""
    kinds = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return {
        k: tuple(len(getattr(m, kind, {})) for kind in kinds)
        for k, m in model.named_modules()
    }


def _copy(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple | list):
        return type(value)(_copy(v) for v in value)
    return value


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.is_quantized or b.is_quantized:
            return a.is_quantized == b.is_quantized and torch.equal(
                a.int_repr(), b.int_repr()
            )
        return torch.equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def unaccounted_nodes(matching: fxns.Matching) -> list[str]:
    """Compute nodes of either graph that are neither paired, nor unmatched
    with a reason, nor collapsed by the canonical graph (pass-through,
    metadata, constant). A complete comparison leaves this empty."""
    from fxns.ops import Role

    missing = []
    sides = (
        ("float", matching.float_graph, matching.float_reasons, "float_nodes"),
        ("quant", matching.quant_graph, matching.quant_reasons, "quant_nodes"),
    )
    for side, og, reasons, attr in sides:
        assert og is not None
        paired = {n for p in matching.pairs for n in getattr(p, attr)}
        for node in og.gm.graph.nodes:
            if node.op not in ("call_module", "call_function", "call_method"):
                continue
            if node.name in paired or reasons.get(node.name):
                continue
            if og.roles.get(node.name) in (Role.PASS, Role.META, Role.CONST):
                continue
            missing.append(f"{side}:{node.name}")
    return missing
