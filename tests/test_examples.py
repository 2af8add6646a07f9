"""The scripts in examples/ run to completion."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    """Each example exits with status 0 and prints something."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_simple_usage_is_there() -> None:
    """The crate's first example has its Python twin."""
    assert (EXAMPLES / "simple_usage.py").is_file()


def test_persistence_example_registers_in_a_new_process(tmp_path: Path) -> None:
    """The persistence example persists in one process and registers the item in another."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / "persistence.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    persisted = re.fullmatch(r"run 1 \(pid (\d+)\): persisted ([0-9a-f]{32})", first)
    registered = re.fullmatch(
        r"run 2 \(pid (\d+)\): registered ([0-9a-f]{32}) -> 'Persisted Data'", second
    )
    assert persisted is not None, first
    assert registered is not None, second
    first_pid, key = persisted.groups()
    second_pid, again = registered.groups()
    assert again == key
    assert first_pid != second_pid  # the "later" run really was another process
    assert list(tmp_path.iterdir()) == []  # it cleaned up after itself
