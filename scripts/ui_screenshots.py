"""Regenerate docs/images/ui-*.png: runs the browser test (tests/ui/test_browser.py) on sd-tiny, which
saves a screenshot of each tab into the folder named by SDLORA_UI_SCREENSHOTS.

    python scripts/ui_screenshots.py          (from the repository root; needs .[test] and chromium)
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SDLORA_UI_SCREENSHOTS=str(out), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "tests/ui/test_browser.py"]
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    print("screenshots:", ", ".join(sorted(p.name for p in out.glob("ui-*.png"))))
    return code


if __name__ == "__main__":
    sys.exit(main())
