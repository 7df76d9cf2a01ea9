"""Print the graph diff of torchvision models and their FX-quantized versions.

Builds each model with random weights (nothing is downloaded), quantizes a
copy with ``prepare_fx``/``convert_fx`` for x86, and prints
``fxns.diff(float_model, quant_model)``. With ``--out DIR`` it also writes
``DIR/diff-<model>.txt``, the command included. The examples in ``docs/``
were made with::

    python examples/diff_torchvision.py resnet18 --out docs
    python examples/diff_torchvision.py mobilenet_v3_large --out docs
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fxns
from fxns.quantize import quantize_fx


def diff_of(name: str) -> fxns.GraphDiff:
    """The diff of torchvision's ``name`` and its FX-quantized copy."""
    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        # torchvision warns about weights it does not download.
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models, name)().eval()
    quant = quantize_fx(model, [torch.randn(2, 3, 64, 64)], "x86")
    return fxns.diff(model, quant)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="torchvision model names")
    parser.add_argument("--width", type=int, default=80, help="line width")
    parser.add_argument("--out", type=Path, help="write DIR/diff-<model>.txt")
    args = parser.parse_args(argv)

    for name in args.models:
        text = diff_of(name).text(width=args.width)
        print(text)
        if args.out is not None:
            command = f"python examples/diff_torchvision.py {name}"
            if args.width != 80:
                command += f" --width {args.width}"
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"diff-{name}.txt").write_text(f"$ {command}\n\n{text}")


if __name__ == "__main__":
    main()
