"""Headless Chromium driven by Playwright for Python: the report's screenshot and its browser test.

It runs the system's `chromium` (Debian's package; scripts/setup.sh installs it as root) through
`executable_path`: Playwright never downloads a browser here (`playwright install` is not run)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import UserError
from ..io import atomic_write_bytes
from ..png import array_png_bytes

DESKTOP = (1400, 900)  # viewport width and height, CSS pixels
SHOT_MAX_HEIGHT = 2600  # the screenshot: the top of the page, summary to the first errors


def browser_missing() -> str | None:
    """Why no headless browser can run here, or None when one can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install playwright; the test extras " \
               "have it)"
    exe = shutil.which("chromium")
    if exe is None:
        return "no chromium on PATH (apt-get install chromium; scripts/setup.sh does it as root)"
    try:  # a stub (Ubuntu's snap transition package in a container) is there but cannot run
        ok = subprocess.run([exe, "--version"], capture_output=True,
                            timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return None if ok else "chromium on PATH does not run (chromium --version fails)"


@contextlib.contextmanager
def chromium_page(width: int = DESKTOP[0], height: int = DESKTOP[1]) -> Iterator:
    """A Playwright page in headless Chromium at the given viewport; the browser is closed after."""
    from playwright.sync_api import sync_playwright
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root's sandbox
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=args)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


# The page's height, or when taller than `max`, the bottom of the last table row that fits whole
_CUT = """(max) => {
  const h = document.documentElement.scrollHeight;
  if (h <= max) return h;
  const ends = [...document.querySelectorAll("tr")].map(
    r => r.getBoundingClientRect().bottom + window.scrollY).filter(b => b <= max);
  return Math.ceil(ends.length ? Math.max(...ends) : max);
}"""


def screenshot(page_path: Path, out: Path, run_id: str | None = None) -> None:
    """A desktop-width PNG of the top of a page (atomically, with the run id in a text chunk)."""
    from PIL import Image
    with chromium_page() as page:
        page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
        height = page.evaluate(_CUT, SHOT_MAX_HEIGHT)
        png = page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": DESKTOP[0],
                                                    "height": height})
    with Image.open(io.BytesIO(png)) as im:
        atomic_write_bytes(Path(out), array_png_bytes(np.asarray(im.convert("RGB")), run_id))


def screenshot_skipped(mode: str) -> str | None:
    """Why explain will take no screenshot in `mode` (auto, on, off), or None when it will; a
    UserError for 'on' without a browser, raised before any work is done."""
    if mode == "off":
        return "--explain.screenshot off"
    missing = browser_missing()
    if missing and mode == "on":
        raise UserError(f"--explain.screenshot on: {missing}")
    return missing


def screenshot_report(page_path: Path, out: Path, run_id: str, mode: str,
                      skipped: str | None) -> str:
    """Take the report's screenshot unless `skipped`; the line to print. A stale one is removed
    when none is taken; a browser failure is a UserError only in mode 'on'."""
    if not skipped:
        from playwright.sync_api import Error as BrowserError
        try:
            start = time.perf_counter()
            screenshot(page_path, out, run_id)
            seconds = time.perf_counter() - start
            return f"screenshot: {out} ({DESKTOP[0]} px wide) in {seconds:.1f} s"
        except BrowserError as e:
            skipped = f"the browser failed: {str(e).strip().splitlines()[0]}"
            if mode == "on":
                raise UserError(f"{out}: {skipped}") from None
    Path(out).unlink(missing_ok=True)
    return f"screenshot: none ({skipped})"
