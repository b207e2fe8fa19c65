"""Suite-wide settings: never touch the network, keep runs deterministic."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread for every test: the suite runs tiny models whose ops are too small to gain
    from a second thread, and on a shared 2-core machine two spinning OpenMP threads made tiny-model
    steps 6-100x slower. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
