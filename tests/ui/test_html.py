"""User text is always escaped in the page's HTML."""
from sdlora.ui import dataset, html

EVIL = "<img src=x onerror=alert(1)>"


def test_inspect_report_escapes_captions_and_paths(shapes):
    (shapes / "style-000.txt").write_text(EVIL)
    report = dataset.inspect(dataset.parse_folders(str(shapes)), 64)
    assert any(EVIL in tag for tag, _ in report["top_tags"])
    page = html.inspect_report(report)
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_every_fragment_escapes():
    for fragment in (html.table([EVIL], [[EVIL]]), html.pre(EVIL), html.message(EVIL, "error"),
                     html.pairs({EVIL: EVIL}), html.caption_diff([(EVIL, EVIL, EVIL)]), html.section(EVIL, "")):
        assert "<img" not in fragment and "&lt;img" in fragment
