"""Regenerate docs/config.md from the config dataclasses (CI checks it is current)."""
from pathlib import Path

from sdlora.config import reference_markdown

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    out.write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {out}")
