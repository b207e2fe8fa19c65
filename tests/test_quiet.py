"""sdlora.quiet: the harmless third-party messages are dropped by exact text, others still show."""
import logging

import pytest
import torch

from sdlora import quiet
from sdlora.models.skeleton import tiny_vae


@pytest.fixture
def records():
    """Records reaching the named loggers' handlers (after their filters), by logger name."""
    seen: dict[str, list[str]] = {}

    class Collect(logging.Handler):
        def emit(self, record):
            seen.setdefault(record.name, []).append(record.getMessage())

    handler = Collect()
    names = {name for name, _, _ in quiet.LOG_MESSAGES}
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield seen
    for name in names:
        logging.getLogger(name).removeHandler(handler)


def test_the_real_diffusers_message_matches_and_is_dropped(records):
    name = "diffusers.models.modeling_utils"
    logger = logging.getLogger(name)
    saved, logger.filters = logger.filters, []
    try:
        tiny_vae(0).to(torch.float16)  # diffusers warns on every cast, with an empty list
    finally:
        logger.filters = saved
    real = records.pop(name)
    assert any("should be kept in float32: []" in m for m in real)
    quiet.install()
    quiet.install()  # idempotent: one filter per logger
    assert len([f for f in logger.filters if isinstance(f, quiet.MessageFilter)]) == 1
    for message in real:
        logger.warning(message)
    logger.warning("There are modules in X that should be kept in float32: ['norm']. Casting ...")
    assert records[name] == ["There are modules in X that should be kept in float32: ['norm']. Casting ..."]


@pytest.mark.parametrize("name, message", [
    ("transformers.utils.import_utils", "`CLIPImageProcessor` requires torchvision (not installed); falling back to "
     "`CLIPImageProcessorPil` for backward compatibility. Install torchvision to use the default backend."),
    ("transformers.configuration_utils", "`torch_dtype` is deprecated! Use `dtype` instead!"),
])
def test_listed_messages_are_dropped_and_neighbours_kept(records, name, message):
    quiet.install()
    logger = logging.getLogger(name)
    logger.warning(message)
    logger.warning("Something else went wrong")
    assert records[name] == ["Something else went wrong"]
