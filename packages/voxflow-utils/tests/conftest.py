"""Every test leaves the root logger as it found it.

``setup_logging`` attaches handlers to the root logger that write to the ``sys.stderr`` of
the moment, which under pytest is a capture stream closed after the test: left attached, they
would fail ("I/O operation on closed file") in every later test that logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
