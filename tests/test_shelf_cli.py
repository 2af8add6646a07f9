"""fb ls, du, verify and gc on a shelf's location: its blobs, with names beside keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fb import Shelf
from tests.cli_helpers import fb, fb_json


@pytest.fixture(name="shelf_dir", params=["sqlite", "files"])
def fixture_shelf_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A closed shelf holding two names and one blob no name points to (each name index)."""
    location = tmp_path / "shelf"
    with Shelf[Any](location, max_items=2, index=request.param) as shelf:
        shelf["alpha"] = b"a" * 5000
        shelf["beta"] = [1, 2, 3]
        shelf.pool.insert(b"orphan").persist(shelf._tracked)  # a set killed before its record
    return location


def test_ls_shows_names_beside_keys(shelf_dir: Path) -> None:
    """fb ls on a shelf lists its blobs with the names that point to each."""
    listing = fb_json("ls", str(shelf_dir))
    names = sorted(name for blob in listing["blobs"] for name in blob["names"])
    assert names == ["alpha", "beta"]
    assert len(listing["blobs"]) == 3
    text = fb("ls", str(shelf_dir)).stdout
    assert "NAME" in text
    assert "alpha" in text


def test_du_and_verify_read_a_shelfs_blobs(shelf_dir: Path) -> None:
    """fb du and fb verify see the shelf's blobs, and nothing foreign."""
    usage = fb_json("du", str(shelf_dir))
    assert "blobs" in str(usage)
    result = fb("verify", str(shelf_dir))
    assert result.returncode == 0, result.stderr
    assert "3/3" in result.stdout
    summary = fb_json("inspect", str(shelf_dir))
    assert summary["foreign"] == []


def test_gc_deletes_only_blobs_no_name_points_to(shelf_dir: Path) -> None:
    """fb gc --yes on a shelf removes unnamed blobs past --min-age and keeps the named ones."""
    young = fb("gc", str(shelf_dir))  # default --min-age: the unnamed blob is too young
    assert young.returncode == 0, young.stdout + young.stderr
    assert len(list((shelf_dir / "blobs").glob("??/*"))) == 3
    dry = fb("gc", str(shelf_dir), "--min-age", "0")
    assert dry.returncode == 1
    assert "would delete" in dry.stdout
    done = fb("gc", str(shelf_dir), "--min-age", "0", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((shelf_dir / "blobs").glob("??/*"))) == 2
    with Shelf[Any](shelf_dir, max_items=2) as shelf:
        assert shelf["alpha"] == b"a" * 5000
        assert shelf["beta"] == [1, 2, 3]
        assert sorted(shelf) == ["alpha", "beta"]


def test_gc_on_a_shelf_refuses_a_manifest(shelf_dir: Path, tmp_path: Path) -> None:
    """A shelf's names are its manifest: --manifest is a usage error."""
    manifest = tmp_path / "m.json"
    manifest.write_text("[]")
    result = fb("gc", str(shelf_dir), "--manifest", str(manifest))
    assert result.returncode == 2
    assert "drop --manifest" in result.stderr
