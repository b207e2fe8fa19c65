"""A screenshot of the README as a browser shows it (for release notes and reviews), or of any HTML page
sdlora writes (--page: e.g. the summary page of `sdlora demo --task all`, shown in the README).

    python scripts/readme_screenshot.py [--out runs/readme.png] [--width 1000]
    python scripts/readme_screenshot.py --page runs/demo-all/summary.html --height 250 \
        --out docs/images/demo-summary.png

Renders README.md with Python-Markdown (installed with the `docs` extra) next to the repository, so
relative images load, and takes a full-page screenshot with headless Chromium through Playwright
(Debian's `chromium` package; set CHROMIUM to another browser binary).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STYLE = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:880px;margin:24px auto;
padding:0 24px;line-height:1.5;color:#1f2328}code,pre{font-family:ui-monospace,Menlo,monospace;font-size:85%;
background:#f6f8fa;border-radius:6px}pre{padding:12px;overflow:auto}code{padding:.2em .4em}pre code{padding:0}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:6px 12px}img{max-width:100%}
h1,h2{border-bottom:1px solid #d0d7de;padding-bottom:.3em}a{color:#0969da}"""


def render(readme: Path) -> Path:
    """README.md -> README.screenshot.html beside it (deleted by the caller)."""
    import markdown

    body = markdown.markdown(readme.read_text(encoding="utf-8"), extensions=["fenced_code", "tables"])
    page = readme.with_name("README.screenshot.html")
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{STYLE}</style>{body}", encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "readme.png")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--page", type=Path, help="an HTML file to shoot instead of the README")
    parser.add_argument("--height", type=int, help="shoot only the top HEIGHT pixels (default: the whole page)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    page_file = args.page.resolve() if args.page else render(ROOT / "README.md")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
            page = browser.new_page(viewport={"width": args.width, "height": args.height or 800})
            page.goto(page_file.as_uri())
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=not args.height)
            browser.close()
    finally:
        if not args.page:
            page_file.unlink()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
