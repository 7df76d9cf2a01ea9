"""The README's worked example is the example script, output and all."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = ROOT / "examples" / "resnet18_fx.py"


def _worked_example() -> tuple[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Worked example", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    output = re.search(r"\n```\n(fxns .*?)```", section, flags=re.DOTALL)
    assert code and output
    return code.group(1), output.group(1)


def test_the_readme_shows_the_scripts_calls_and_every_table_they_print() -> None:
    code, output = _worked_example()
    # The script separates the tables with blank lines; the README leaves
    # that out.
    script = SCRIPT.read_text(encoding="utf-8").replace(', end="\\n\\n")', ")")
    calls = [
        line.strip()
        for line in code.splitlines()
        if line.strip() and not line.startswith("import")
    ]
    assert all(call in script for call in calls), "README code is not the script's"
    printed = script.count("print(")
    titles = re.findall(r"^fxns \w+ comparison: ", output, flags=re.MULTILINE)
    assert len(titles) == printed == code.count("print(")


def test_the_readme_weights_table_is_what_the_script_prints() -> None:
    """The weights table depends only on the seeded weights, not on the
    calibration data or the machine: the pasted one must be a real run's."""
    import copy
    import warnings

    import torch
    import torchvision
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    import fxns

    _, output = _worked_example()
    pasted = output.split("\n\n")[0].strip()
    assert pasted.startswith("fxns weights comparison: 5 of 21 layers")

    torch.manual_seed(0)  # as the script: the model is built first
    float_model = torchvision.models.resnet18().eval()
    example = (torch.randn(1, 3, 64, 64),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(
            copy.deepcopy(float_model), get_default_qconfig_mapping("x86"), example
        )
        with torch.no_grad():
            prepared(*example)
        quant_model = convert_fx(prepared)
    table = fxns.compare_weights(float_model, quant_model).table(top=5)
    assert str(table).strip() == pasted
