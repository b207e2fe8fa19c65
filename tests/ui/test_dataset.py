"""The Dataset tab's handlers on real files: folders, inspect, caption edits, bulk trigger edits."""
import pytest

from sdlora.errors import SdloraError
from sdlora.ui import dataset


def test_folders_parse_role_and_repeats_and_name_bad_lines(shapes, tmp_path):
    sources = dataset.parse_folders(f"{shapes}\n\n{shapes} | class | 3\n")
    assert [(s.role, s.repeats) for s in sources] == [("instance", 1), ("class", 3)]
    assert dataset.parse_folders(dataset.format_folders(sources)) == sources
    for text, word in ((f"{shapes} | teacher", "role"), (f"{shapes} | class | 0", "repeats"),
                       (str(tmp_path / "nope"), "not a folder"), ("", "no folder")):
        with pytest.raises(SdloraError, match=word):
            dataset.parse_folders(text)


def test_inspect_and_items_read_the_folder(shapes):
    (shapes / "broken.png").write_bytes(b"not an image")
    sources = dataset.parse_folders(str(shapes))
    report = dataset.inspect(sources, 64)
    assert report["totals"]["usable"] == 4 and report["skipped"][0]["path"].endswith("broken.png")
    items = dataset.items(sources)
    assert [i.caption for i in items] == [(shapes / f"style-00{n}.txt").read_text().strip() for n in range(4)]


def test_save_caption_writes_the_sidecar_only(shapes, tmp_path):
    sources = dataset.parse_folders(str(shapes))
    item = dataset.items(sources)[0]
    image_bytes = (shapes / "style-000.png").read_bytes()
    dataset.save_caption(item, "new words,\n more", sources)
    assert (shapes / "style-000.txt").read_text() == "new words, more\n"
    assert (shapes / "style-000.png").read_bytes() == image_bytes
    assert not [p for p in shapes.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    outside = dataset.Item(str(tmp_path / "x.png"), "", str(tmp_path / "x.txt"), 0)
    with pytest.raises(SdloraError, match="outside the chosen folders"):
        dataset.save_caption(outside, "x", sources)
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("mode, tag, new, before, after", [
    ("add first", "sks", "", "a, b", "sks, a, b"),
    ("add first", "sks", "", "b, sks, a", "sks, b, a"),
    ("add last", "sks", "", "a, b", "a, b, sks"),
    ("replace tag", "b", "c", "a, b", "a, c"),
    ("replace tag", "b", "a", "a, b", "a"),
    ("remove tag", "a", "", "a, b", "b"),
])
def test_edit_tags(mode, tag, new, before, after):
    assert dataset.edit_tags(before, mode, tag, new) == after


def test_bulk_edit_previews_then_writes(shapes):
    sources = dataset.parse_folders(str(shapes))
    items = dataset.items(sources)
    (shapes / "style-001.txt").write_text("sks, " + items[1].caption)
    items = dataset.items(sources)
    plan = dataset.plan_edit(items, "add first", "sks")
    assert [p[0] for p in plan] == [items[i].sidecar for i in (0, 2, 3)]  # style-001 already starts with it
    assert (shapes / "style-000.txt").read_text().strip() == items[0].caption  # preview wrote nothing
    assert dataset.apply_plan(plan, sources) == 3
    assert all(i.caption.startswith("sks, ") for i in dataset.items(sources))
    with pytest.raises(SdloraError, match="one tag"):
        dataset.plan_edit(items, "add first", "a, b")
