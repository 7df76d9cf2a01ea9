"""Regenerate the figures of docs/: the ResNet-18 report and the fusion variants.

Writes ``docs/img/resnet18_report.png`` (the HTML report in headless
Chromium), ``docs/img/resnet18_variants.png`` and the text table between the
markers in ``docs/variants.md``. Needs torchvision, selenium and Chromium
(``apt-get install chromium chromium-driver``); nothing is downloaded, the
model has random weights with batch-norm statistics like a trained one's.

    python docs/make_figures.py
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxns  # noqa: E402
from examples.fusion_strategies import resnet18_fusions  # noqa: E402
from tests import browser  # noqa: E402

DOCS = ROOT / "docs"
IMAGES = DOCS / "img"


def main() -> None:
    reason = browser.missing()
    if reason:
        sys.exit(f"cannot take screenshots: {reason}")
    IMAGES.mkdir(exist_ok=True)

    model, variants, batches = resnet18_fusions(size=224, fusions=("all", "none"))
    report = fxns.compare_activations(model, variants["all"], batches)
    v = fxns.compare_variants(model, variants, batches)

    with tempfile.TemporaryDirectory() as tmp, browser.chromium(1280, 1700) as driver:
        for name, page in (("resnet18_report", report), ("resnet18_variants", v)):
            html = Path(tmp) / f"{name}.html"
            page.to_html(html)
            driver.get(html.as_uri())
            errors = browser.console_errors(driver)
            if errors:
                sys.exit(f"{name}.html has console errors: {errors}")
            driver.save_screenshot(str(IMAGES / f"{name}.png"))
            print(f"wrote docs/img/{name}.png")

    doc = DOCS / "variants.md"
    table = v.table(["sqnr"])
    text = re.sub(
        r"(<!-- table -->\n```text\n).*?(```\n<!-- /table -->)",
        lambda m: m.group(1) + table + "\n" + m.group(2),
        doc.read_text(encoding="utf-8"),
        flags=re.DOTALL,
    )
    doc.write_text(text, encoding="utf-8")
    print("updated docs/variants.md")
    print(report.summary())


if __name__ == "__main__":
    main()
