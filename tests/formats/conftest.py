"""Fixtures for the formats tests (helpers live in formats_helpers.py)."""
import pytest
import torch
from formats_helpers import Probe

from sdlora.models import tiny_components


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def tiny():
    return tiny_components(0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads made these tests 6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
