"""Install the example plugin (pip install -e) once per session, then make it visible."""

from __future__ import annotations

import importlib
import importlib.util
import json
import site
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType

import pytest

from fb.backends import _registry as backend_registry
from fb.codecs import _registry as codec_registry

PLUGIN_DIR = Path(__file__).resolve().parent / "fb_plugin_example"
DIST_NAME = "fb-plugin-example"


def _installed_from_here() -> bool:
    """True if the plugin is installed, editable, from this very directory."""
    try:
        dist = distribution(DIST_NAME)
    except PackageNotFoundError:
        return False
    direct_url = dist.read_text("direct_url.json")
    if direct_url is None:
        return False
    return bool(json.loads(direct_url).get("url") == PLUGIN_DIR.as_uri())


@pytest.fixture(name="example_plugin", scope="session")
def fixture_example_plugin() -> ModuleType:
    """The fb-plugin-example distribution, installed editable into this environment."""
    if not _installed_from_here():
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        if all(importlib.util.find_spec(name) for name in ("hatchling", "editables")):
            command.append("--no-build-isolation")  # no download when the backend is here
        subprocess.run([*command, "-e", str(PLUGIN_DIR)], check=True, timeout=300)
        # The editable install adds a .pth file, read at start-up only: read it now.
        site.addsitedir(sysconfig.get_paths()["purelib"])
        importlib.invalidate_caches()
    # Entry points are read on the first miss; earlier tests may have read them already.
    codec_registry.REGISTRY.reload_entry_points()
    backend_registry.REGISTRY.reload_entry_points()
    return importlib.import_module("fb_plugin_example")
