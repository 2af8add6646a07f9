"""The first hour's pages say what main does: install, the command line, Dask, packaging."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("bench", "demo", "du", "gc", "inspect", "ls", "verify")


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_index_says_the_cli_page_covers_every_command() -> None:
    """docs/index.md's link to the CLI page names every command, not only ``fb demo``."""
    (line,) = [line for line in read("docs/index.md").split("\n- ") if "(cli.md)" in line]
    assert all(re.search(rf"\b{name}\b", line) for name in COMMANDS), line


def test_comparison_knows_the_dask_integration() -> None:
    """docs/comparison.md links the Dask integration instead of calling it planned."""
    text = " ".join(read("docs/comparison.md").split())
    assert "no Dask integration" not in text
    assert "](dask.md)" in text
    assert "FbSpillBuffer" in text


def test_readme_says_how_to_install_extras_from_a_clone() -> None:
    """Until a release exists the README installs extras from a clone, and says so."""
    text = read("README.md")
    assert ".venv/bin/pip install -q -e '.[s3]'" in text
    assert "no release on PyPI" in text


def test_dev_extra_builds_and_checks_the_release_files() -> None:
    """``dev`` pulls in build and twine, and CI builds the sdist and wheel and checks them."""
    project = tomllib.loads(read("pyproject.toml"))
    extras = project["project"]["optional-dependencies"]
    dev = {re.split(r"[<>=\[]", spec)[0] for spec in extras["dev"]}
    assert {"build", "twine"} <= dev
    ci = read(".ci/run")
    assert ci.index("mkdocs build --strict") < ci.index('python -m build --outdir "$dist"')
    assert 'twine check --strict "$dist"/*' in ci
    assert 'dist="$(mktemp -d)"' in ci


def test_sdist_holds_what_the_tests_need() -> None:
    """The sdist takes the package, tests, docs, examples, the licence and the conftest.py."""
    sdist = tomllib.loads(read("pyproject.toml"))["tool"]["hatch"]["build"]["targets"]["sdist"]
    for name in (
        "fb",
        "tests",
        "docs",
        "examples",
        "README.md",
        "LICENSE",
        "conftest.py",
        "mkdocs.yml",
    ):
        assert name in sdist["include"]
        assert (ROOT / name).exists()
    assert ".ci" not in sdist["include"]
    assert tomllib.loads(read("pyproject.toml"))["project"]["license-files"] == ["LICENSE"]
