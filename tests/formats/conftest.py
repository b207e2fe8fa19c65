"""Fixtures for the formats tests (helpers live in formats_helpers.py)."""
import pytest
from formats_helpers import Probe

from sdlora.models import tiny_components


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def tiny():
    return tiny_components(0)
