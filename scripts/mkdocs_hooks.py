"""MkDocs hook (mkdocs.yml `hooks:`): links from docs/ to files outside it become repository links.

The guide links to the recipes (`../../examples/anime-style/README.md`) and to benchmarks/; those
files are not pages of the site, so MkDocs would report them as missing. On GitHub the relative
links work as they are; in the site they point at the same file in the repository (`repo_url`).
tests/test_docs.py checks that every such file exists, and the site build runs with --strict.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

LINK = re.compile(r"(?<!!)(\[[^\]]*\]\()([^)\s#]+)(#[^)\s]*)?\)")


def outside_link(target: str, page_path: str, docs_dir: Path, repo_url: str) -> str | None:
    """The repository URL for a relative link that leaves docs/, or None for any other link."""
    if re.match(r"^[a-z]+:", target) or target.startswith("/"):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_path), target))
    if not joined.startswith("../"):
        return None
    repo_path = posixpath.normpath(posixpath.join(docs_dir.name, joined))
    kind = "tree" if not posixpath.splitext(repo_path)[1] else "blob"
    return f"{repo_url.rstrip('/')}/{kind}/main/{repo_path}"


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs_dir, repo_url = Path(config["docs_dir"]), config["repo_url"]

    def replace(match: re.Match) -> str:
        url = outside_link(match.group(2), page.file.src_uri, docs_dir, repo_url)
        return match.group(0) if url is None else f"{match.group(1)}{url}{match.group(3) or ''})"

    return LINK.sub(replace, markdown)
