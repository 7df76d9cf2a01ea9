"""Which fusion strategy quantizes ResNet-18 best? fxns.compare_variants answers.

Three FX-quantized versions of the same float model, calibrated on the same
data, differ only in what ``prepare_fx`` fuses:

- ``all``: conv+bn+relu into one quantized ConvReLU2d, add+relu into
  quantized::add_relu (PyTorch's default);
- ``conv_bn``: batch norms folded into their convs, relus run on their own;
- ``none``: nothing fused, batch norms quantized as modules of their own.

The table has one row per float layer, so the variants line up even where one
fused three layers into one: a fused group's numbers sit on its last layer.

Run it (torchvision builds the model with random weights; nothing is
downloaded)::

    python examples/fusion_strategies.py
    python examples/fusion_strategies.py --html variants.html --size 224

The same comparison from the command line, with this file as the factory::

    fxns variants examples/fusion_strategies.py:resnet18_fusions
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn

import fxns
from fxns.quantize import quantize_fx

FUSIONS = ("all", "conv_bn", "none")


def resnet18_fusions(
    size: int = 64, n_batches: int = 2, fusions: tuple[str, ...] = FUSIONS
) -> tuple[nn.Module, dict[str, nn.Module], list[torch.Tensor]]:
    """ResNet-18, one quantized variant per fusion strategy, and the batches.

    A factory for ``fxns variants``: it returns (float model, {name:
    quantized model}, example batches).
    """
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.resnet18().eval()
    _pretend_trained(model)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, size, size, generator=g) for _ in range(n_batches)]
    variants = {f: quantize_fx(model, batches, "x86", fusion=f) for f in fusions}
    return model, variants, batches


def _pretend_trained(model: nn.Module) -> None:
    # A freshly built batch norm is the identity; give each one statistics
    # like a trained network's, so that folding it into the conv matters.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def main(argv: list[str] | None = None) -> fxns.VariantReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--html", help="also write the HTML page here")
    parser.add_argument(
        "--fusion",
        action="append",
        choices=FUSIONS,
        help="fusion strategies to compare (default: all three)",
    )
    args = parser.parse_args(argv)

    model, variants, batches = resnet18_fusions(
        args.size, fusions=tuple(args.fusion or FUSIONS)
    )
    v = fxns.compare_variants(model, variants, batches)
    print(v)
    out = {
        name: f"{report.rows[-1].metrics['sqnr']:.2f} dB"
        for name, report in v.reports.items()
    }
    print(f"\nOutput SQNR per strategy: {out}")
    if args.html:
        v.to_html(args.html)
        print(f"Wrote {args.html}")
    return v


if __name__ == "__main__":
    main()
