"""Headless Chromium for the HTML tests and the screenshots in docs/.

Chromium comes from the system packages (``apt-get install chromium
chromium-driver``) and is driven with selenium through the system
chromedriver, so nothing is downloaded. Where either is missing the browser
tests skip with the reason, unless ``FXNS_REQUIRE_BROWSER=1`` (set by
``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)


def missing() -> str:
    """Why the browser cannot run here, or "" if it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not _chromium() or not shutil.which("chromedriver"):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    return ""


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1600) -> Iterator[Any]:
    """A headless Chromium driven by selenium, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="fxns-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = _chromium()
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(
            service=Service(shutil.which("chromedriver") or "chromedriver"),
            options=options,
        )
        try:
            yield driver
        finally:
            driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The page's console errors and uncaught exceptions since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def full_page_png(driver: Any, path: str, width: int = 1280) -> None:
    """A screenshot of the whole page, not just the window."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 120)
    driver.save_screenshot(path)


def required() -> bool:
    return os.environ.get("FXNS_REQUIRE_BROWSER") == "1"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return ""
