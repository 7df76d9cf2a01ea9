"""Compare torchvision's ResNet-18 with its FX-quantized version, layer by layer.

Run: python examples/resnet18_fx.py
(random weights, random calibration data: nothing is downloaded)
"""

from __future__ import annotations

import copy
import warnings

import torch
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fxns


def main() -> None:
    torch.manual_seed(0)
    float_model = torchvision.models.resnet18().eval()
    batches = [torch.randn(8, 3, 224, 224) for _ in range(4)]

    # The usual FX graph-mode recipe: prepare, calibrate, convert.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        qconfig_mapping = get_default_qconfig_mapping("x86")
        example = (batches[0],)
        prepared = prepare_fx(copy.deepcopy(float_model), qconfig_mapping, example)
        with torch.no_grad():
            for b in batches:
                prepared(b)
        quant_model = convert_fx(prepared)

    print(fxns.compare_weights(float_model, quant_model).table(top=5), end="\n\n")
    shadow = fxns.compare_activations(float_model, quant_model, batches, mode="shadow")
    print(shadow.table(sort_by="sqnr", top=8), end="\n\n")
    propagated = fxns.compare_activations(
        float_model, quant_model, batches, mode="propagated"
    )
    print(propagated.table(top=6), end="\n\n")
    print(propagated.table(sort_by="sqnr", top=3))


if __name__ == "__main__":
    main()
