"""What files this process holds open (Linux's /proc), for tests that nothing is leaked."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def open_files_under(directory: Path) -> list[str]:
    """Paths under ``directory`` that this process holds open, sorted."""
    opened = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{directory}/"):
                opened.append(target)
    return sorted(opened)
