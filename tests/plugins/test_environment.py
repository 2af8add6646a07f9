"""The plugin tests leave the Python environment as they found it: nothing is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SNAPSHOT = """
import importlib.metadata, json, site, os
dists = sorted(
    f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
)
files = sorted(
    name for path in site.getsitepackages() if os.path.isdir(path) for name in os.listdir(path)
)
print(json.dumps({"dists": dists, "files": files}))
"""


def _snapshot() -> dict[str, list[str]]:
    """The installed distributions and site-packages' names, seen by a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _SNAPSHOT], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_plugin_tests_leave_the_environment_unchanged() -> None:
    """Running the example plugin's tests installs nothing and leaves site-packages as it was."""
    before = _snapshot()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/plugins/test_example_plugin.py",
            "-k",
            "found_by_name or broken_entry_point",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert _snapshot() == before
