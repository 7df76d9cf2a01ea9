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
