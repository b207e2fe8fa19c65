"""Third-party messages sdlora knows to be harmless, silenced in one place by their exact text.

Each entry names the exact logger and a regular expression the whole message must match; nothing
else from those libraries is hidden, so a new or real warning still shows. The one exception is
progress bars, which have no message: sdlora never downloads (everything is read from local files
or the cache), so the Hugging Face bars it meets are the "Loading weights" bars of local files.
`install()` is idempotent; the CLI (and the UI) call it once at start-up, before models load.
"""
from __future__ import annotations

import logging
import re
import sys

# (logger name, full-message pattern, why it is harmless)
LOG_MESSAGES: list[tuple[str, str, str]] = [
    ("diffusers.models.modeling_utils", r"There are modules in \w+ that should be kept in float32: \[\]\..*",
     "diffusers warns on every `.to(dtype)`, even when the list of fp32 modules is empty"),
    ("transformers.utils.import_utils", r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back .*",
     "sdlora preprocesses images itself (sdlora.evaluate.features) and never uses torchvision"),
    ("transformers.configuration_utils", r"`torch_dtype` is deprecated! Use `dtype` instead!",
     "diffusers passes `torch_dtype` on to transformers; the dtype is applied all the same"),
]


class MessageFilter(logging.Filter):
    """Drops records whose message fully matches one of `patterns`."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = [re.compile(p, re.DOTALL) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.fullmatch(message) for p in self.patterns)


_installed = False


def install() -> None:
    """Attach the filters (once)."""
    global _installed
    if _installed:
        return
    by_logger: dict[str, list[str]] = {}
    for name, pattern, _ in LOG_MESSAGES:
        by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logging.getLogger(name).addFilter(MessageFilter(patterns))
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # read by transformers when it is first imported
    if "transformers" in sys.modules:  # already imported (a library user, a test session)
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    _installed = True
