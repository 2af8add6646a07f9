"""fb.Shelf on S3 (moto's server through s3fs): names, sharing between hosts, size limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fb import Shelf
from fb.exceptions import ForeignLocationError
from tests.cli_helpers import fb, fb_json
from tests.s3.moto_fixtures import S3Bucket
from tests.s3.s3_helpers import S3Calls
from tests.shelf_child import value_for

CHILD = str(Path(__file__).resolve().parents[1] / "shelf_child.py")


def test_a_set_on_s3_is_one_blob_and_one_record(s3: S3Bucket) -> None:
    """A set puts one blob under blobs/ and one record under names/; a get reads it back."""
    with Shelf[Any](s3.url("cache"), max_items=1, storage_options=s3.options) as shelf:
        shelf["features/2026-12"] = b"x" * 100_000
        assert shelf["features/2026-12"] == b"x" * 100_000
        assert sorted(shelf) == ["features/2026-12"]
    names = s3.names("cache/")
    assert "cache/.fb-shelf" in names
    assert len([n for n in names if n.startswith("cache/names/")]) == 1
    assert len([n for n in names if n.startswith("cache/blobs/") and "/." not in n]) == 1


def test_a_shelf_on_s3_cannot_keep_its_names_in_sqlite(s3: S3Bucket) -> None:
    """SQLite needs local disk: index="sqlite" on S3 is a ValueError naming the location,
    and nothing is written there."""
    with pytest.raises(ValueError, match=r"s3://.*/sq: index='sqlite' needs a shelf on local"):
        Shelf[Any](s3.url("sq"), storage_options=s3.options, index="sqlite")
    assert s3.names("sq/") == []


def test_a_second_host_sees_every_name(s3: S3Bucket) -> None:
    """Another shelf on the same prefix (another host) loads every value bit-exact."""
    values = {f"n{i}": os.urandom(5000 + i) for i in range(6)}
    with Shelf[Any](s3.url("shared"), max_items=1, storage_options=s3.options) as one:
        for name, value in values.items():
            one[name] = value
        with Shelf[Any](s3.url("shared"), max_items=1, storage_options=s3.options) as two:
            assert sorted(two) == sorted(values)
            for name, value in values.items():
                assert two[name] == value
            one["n0"] = b"replaced"
            assert two["n0"] == b"replaced"
            del two["n1"]
            assert "n1" not in one


def test_a_held_value_survives_its_replacement_on_s3(s3: S3Bucket) -> None:
    """A reader's guard keeps its value after another host replaced the name and its blob."""
    with (
        Shelf[Any](s3.url("s"), max_items=0, storage_options=s3.options) as writer,
        Shelf[Any](s3.url("s"), max_items=0, storage_options=s3.options) as reader,
    ):
        writer["x"] = b"old" * 1000
        with reader.load("x") as value:
            writer["x"] = b"new" * 1000
            assert value == b"old" * 1000
        assert reader["x"] == b"new" * 1000


def test_size_limit_on_s3_removes_the_oldest_sets(s3: S3Bucket) -> None:
    """Past size_limit, the names set least recently go first."""
    with Shelf[Any](
        s3.url("lim"), max_items=1, size_limit=7000, storage_options=s3.options
    ) as shelf:
        for i in range(4):
            shelf[f"n{i}"] = os.urandom(2000)
        assert len(shelf) == 3
        assert "n0" not in shelf
        assert "n3" in shelf


def test_a_prefix_in_use_is_refused(s3: S3Bucket) -> None:
    """A prefix that holds other objects and no shelf marker is never adopted."""
    s3.server.client.put_object(Bucket=s3.name, Key="used/report.csv", Body=b"a,b")
    with pytest.raises(ForeignLocationError, match=r"report\.csv"):
        Shelf[Any](s3.url("used"), max_items=1, storage_options=s3.options)


def test_a_writer_and_a_reader_process_share_an_s3_shelf(s3: S3Bucket) -> None:
    """One process sets names on S3 in a loop; another reads and checks every value."""
    options = ["--options", json.dumps(s3.options), "--names", "3"]
    rounds = 6
    reader = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "error",
            CHILD,
            s3.url("p"),
            "read",
            *options,
            "--until",
            str(rounds - 1),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "error",
            CHILD,
            s3.url("p"),
            "write",
            *options,
            "--rounds",
            str(rounds),
            "--size",
            "20000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = writer.communicate(timeout=100)
    assert writer.returncode == 0, err
    out, err = reader.communicate(timeout=100)
    assert reader.returncode == 0, err + out
    with Shelf[Any](s3.url("p"), max_items=1, storage_options=s3.options) as shelf:
        for index in range(3):
            assert shelf[f"n{index}"] == value_for(rounds - 1, index, 20000)


def test_fb_ls_and_gc_understand_an_s3_shelf(s3: S3Bucket) -> None:
    """fb ls names each key of a shelf on S3; fb gc deletes only the blob no name points to."""
    with Shelf[Any](s3.url("cli"), max_items=1, storage_options=s3.options) as shelf:
        shelf["alpha"] = b"a" * 3000
        shelf.pool.insert(b"orphan").persist(shelf._tracked)  # a set killed before its record
    listing = fb_json("ls", s3.url("cli"), "--endpoint-url", s3.endpoint)
    assert sorted(name for blob in listing["blobs"] for name in blob["names"]) == ["alpha"]
    assert len(listing["blobs"]) == 2
    done = fb("gc", s3.url("cli"), "--endpoint-url", s3.endpoint, "--min-age", "0", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len([n for n in s3.names("cli/blobs/") if "/." not in n]) == 1
    with Shelf[Any](s3.url("cli"), max_items=1, storage_options=s3.options) as shelf:
        assert shelf["alpha"] == b"a" * 3000


def test_requests_of_a_set_and_a_get_on_s3(s3: S3Bucket) -> None:
    """A set PUTs the blob, then the record; a get in memory reads only the record."""
    with Shelf[Any](s3.url("req"), max_items=4, storage_options=s3.options) as shelf:
        shelf["first"] = b"claims the location"
        calls = S3Calls()
        calls.watch(shelf.location)
        shelf["a"] = b"x" * 10_000
        puts = [key for name, key in calls.calls if name == "PutObject"]
        assert [key.split("/")[1] for key in puts] == ["blobs", "names"]
        calls.clear()
        assert shelf["a"] == b"x" * 10_000
        assert {key.split("/")[1] for _, key in calls.calls if key} == {"names"}
        assert "PutObject" not in calls.names()
