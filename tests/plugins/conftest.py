"""Make the example plugin's entry points visible for these tests, installing nothing.

The entry points declared in ``fb_plugin_example/pyproject.toml`` are written to a
temporary ``.dist-info`` directory that goes on ``sys.path`` beside the plugin's source, as
an installed distribution's metadata would; both leave ``sys.path`` when the tests of this
directory are done, and the registries forget the plugin. The environment (site-packages)
is never touched: ``test_environment.py`` checks it.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fb.backends import _registry as backend_registry
from fb.codecs import _registry as codec_registry

PLUGIN_DIR = Path(__file__).resolve().parent / "fb_plugin_example"
DIST_NAME = "fb-plugin-example"


def write_dist_info(target: Path) -> Path:
    """Write the metadata of the example plugin, as pip would install it, under ``target``."""
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    sections = [
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in project["entry-points"].items()
    ]
    (dist_info / "entry_points.txt").write_text("\n".join(sections))
    return dist_info


def _reload_registries() -> None:
    # Entry points are read on the first miss; earlier tests may have read them already.
    codec_registry.REGISTRY.reload_entry_points()
    backend_registry.REGISTRY.reload_entry_points()


@pytest.fixture(name="example_plugin", scope="package")
def fixture_example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The fb-plugin-example distribution, visible on sys.path for this directory's tests."""
    metadata = tmp_path_factory.mktemp("fb-plugin-example-metadata")
    write_dist_info(metadata)
    with pytest.MonkeyPatch.context() as patch:
        # syspath_prepend also invalidates importlib's caches, so the new entries are seen.
        patch.syspath_prepend(str(PLUGIN_DIR))
        patch.syspath_prepend(str(metadata))
        _reload_registries()
        try:
            yield importlib.import_module("fb_plugin_example")
        finally:
            sys.modules.pop("fb_plugin_example", None)
    importlib.invalidate_caches()
    _reload_registries()
