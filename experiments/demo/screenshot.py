"""Render a run's report.html in headless Chromium and check the screenshot is not blank.

Usage: python experiments/demo/screenshot.py reports/demo/report.html [out.png]
Needs Debian's chromium package (`apt-get install chromium`). Exits 1 if the page renders
blank (a single colour) or Chromium is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def screenshot(html: Path, out: Path, width: int = 1100, height: int = 2600) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        # flags: no sandbox as root, no GPU, and no background network (the machine has none)
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={out.resolve()}", html.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    return out


def main() -> int:
    html = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else html.with_name("report_screenshot.png")
    screenshot(html, out)
    arr = np.asarray(Image.open(out).convert("L"), dtype=float)
    dark = float((arr < 128).mean())
    print(f"{out}: {arr.shape[1]}x{arr.shape[0]} px, grey-level sd {arr.std():.1f}, dark pixels {dark:.1%}")
    if arr.std() < 5 or dark < 0.005:
        print("blank render")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
