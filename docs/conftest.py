"""Run every python block of the documentation pages as a test.

The blocks of one page share a namespace and run in order, as a reader would run them.
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import Any

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from fb import BackingStore


def _teardown(namespace: dict[str, Any]) -> None:
    """Close what a page left open after a failing block, so one failure stays one."""
    values = list(namespace.values())
    namespace.clear()
    for value in values:
        if isinstance(value, BackingStore) and not value.closed:
            # The block that failed has been reported; errors of the clean-up would be noise.
            with contextlib.suppress(Exception):
                value.close()
    for value in values:
        if isinstance(value, tempfile.TemporaryDirectory):
            value.cleanup()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["*.md"],
    teardown=_teardown,
    name="docs",
).pytest()
