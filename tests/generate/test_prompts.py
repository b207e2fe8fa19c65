import pytest

from sdlora.errors import SdloraError
from sdlora.generate.prompts import PromptSpec, parse_prompt_line, read_prompt_file

DEFAULTS = PromptSpec(prompt="", negative_prompt="", seed=7, steps=20, cfg=5.0, width=256, height=256)

# line -> fields expected to differ from DEFAULTS
CASES = [
    ("a cat", {"prompt": "a cat"}),
    ("  a cat on a mat  ", {"prompt": "a cat on a mat"}),
    ("a cat --n blurry, lowres", {"prompt": "a cat", "negative_prompt": "blurry, lowres"}),
    ("a cat --n blurry --d 42 --s 30 --l 7.5 --w 512 --h 768",
     {"prompt": "a cat", "negative_prompt": "blurry", "seed": 42, "steps": 30, "cfg": 7.5,
      "width": 512, "height": 768}),
    ("a cat --l 3 --n", {"prompt": "a cat", "cfg": 3.0, "negative_prompt": ""}),
    ("a cat --n --d 3", {"prompt": "a cat", "negative_prompt": "", "seed": 3}),
    ("a cat --ss euler_a", {"prompt": "a cat", "scheduler": "euler_a"}),
    ("well--lit room, 1980s--style --d 1", {"prompt": "well--lit room, 1980s--style", "seed": 1}),
    ("a cat --d 5 --d 6", {"prompt": "a cat", "seed": 6}),  # last one wins, as in kohya
]


@pytest.mark.parametrize("line, changes", CASES)
def test_parse_prompt_line(line, changes):
    assert parse_prompt_line(line, DEFAULTS) == DEFAULTS.replace(**changes)


@pytest.mark.parametrize("line, message", [
    ("a cat --seed 4", "unknown option --seed"),
    ("a cat --d four", "--d expects an integer"),
    ("a cat --l high", "--l expects a number"),
    ("a cat --w 500", "width 500 is not a positive multiple of 8"),
    ("a cat --h 0", "height 0"),
    ("a cat --s 0", "steps must be at least 1"),
    ("a cat --ss dpm_fancy", "unknown scheduler 'dpm_fancy'"),
    ("--d 4", "prompt text is empty"),
])
def test_bad_lines_name_the_problem(line, message):
    with pytest.raises(SdloraError, match=message.replace("(", r"\(")):
        parse_prompt_line(line, DEFAULTS, where="x.txt:3")


def test_prompt_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\n\na cat --d 1\n   \n  # indented comment\na dog --n ugly\n", encoding="utf-8")
    specs = read_prompt_file(path, DEFAULTS)
    assert specs == [DEFAULTS.replace(prompt="a cat", seed=1),
                     DEFAULTS.replace(prompt="a dog", negative_prompt="ugly")]


def test_prompt_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat\na dog --w 33\n", encoding="utf-8")
    with pytest.raises(SdloraError, match=r"p\.txt:2: width 33"):
        read_prompt_file(path, DEFAULTS)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(SdloraError, match="no prompts found"):
        read_prompt_file(empty)
    with pytest.raises(SdloraError, match="not found"):
        read_prompt_file(tmp_path / "missing.txt")
