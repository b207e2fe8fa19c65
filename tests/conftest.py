"""Suite-wide settings: never touch the network, keep runs deterministic."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# One intra-op thread from the start: module- and session-scoped fixtures (a trained run shared by a
# file's tests) are set up before the per-test fixture below runs, and trained at torch's default
# thread count otherwise (64 s instead of 11 s for one of them on the shared 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread for every test: the suite runs tiny models whose ops are too small to gain
    from a second thread, and on a shared 2-core machine two spinning OpenMP threads made tiny-model
    steps 6-100x slower. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Tests that share an expensive session fixture run on one xdist worker (`./dev.sh test` runs the suite
# over the cores with `--dist loadgroup`); every other test is grouped by its file, so module-scoped
# fixtures (a trained run shared by one file's tests) are built once. Groups listed in HEAVY_FIRST start
# first, longest first (seconds measured on the 2-core machine), so that a long one does not end up alone
# at the tail of the run while the other worker idles; the many short files fill in behind them.
SHARED_GROUPS = {"tests/tiny/test_demo.py": "demo", "tests/tiny/test_learning.py": "demo"}
HEAVY_FIRST = [
    "tests/tiny/test_subject_learning.py",  # ~155 s: the subject task trained twice (with and without prior)
    "demo",  # ~105 s: the shortened demo run
    "tests/tiny/test_task_learning.py",  # ~70 s: the art-style run
    "tests/tiny/test_concept_learning.py",  # ~70 s: the concept run
    "tests/ui/test_browser.py",  # ~65 s
    "tests/train/test_loop.py",  # ~50 s
    "tests/tiny/test_base_quality.py",  # ~45 s
    "tests/models/test_single_file.py",  # ~40 s
    "tests/train/test_distributed.py",  # ~23 s
    "tests/tiny/test_checker.py",  # ~22 s
    "tests/test_package.py",  # ~21 s
    "tests/test_examples.py",  # ~19 s
]


def _group(item) -> str:
    path = item.nodeid.split("::", 1)[0]
    return SHARED_GROUPS.get(path, path)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: file order otherwise kept


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    _check_grouped(session.config, session.items)


def _check_grouped(config, items):
    """Under `--dist loadgroup` xdist must have put the group into every node id (it does so through a
    private attribute of pytest's nodes): otherwise the demo would silently run once per worker."""
    if getattr(config.option, "loadgroup", False) and items and not all("@" in item.nodeid for item in items):
        raise pytest.UsageError("pytest-xdist did not group the tests (pytest/pytest-xdist versions that do not "
                                "fit together: see the pytest pin in pyproject.toml)")
