"""Leases and ``fb gc`` on object stores: a dead session's blobs go, a live one's never do."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import fb
from fb import _gc, _inspect
from fb.backends import FBStore, PreparedPath
from fb.backends._lease import DEFAULT_INTERVAL, GRACE_INTERVALS, LeaseKeeper, LeaseRecord
from tests.cli_helpers import fb as run_fb
from tests.conftest import TIMEOUT
from tests.s3.moto_fixtures import S3Bucket
from tests.s3.s3_helpers import S3Calls

GRACE = GRACE_INTERVALS * DEFAULT_INTERVAL
LATER = GRACE + 60.0
"""Seconds to add to the clock for a store that stopped refreshing to be past its grace."""


def leases(s3: S3Bucket, prefix: str) -> list[str]:
    """Return the lease objects directly under ``prefix`` (``spill/fb-…``)."""
    return [name for name in s3.names(prefix + "/") if "/.fb-lease." in "/" + name]


def plan_at(location: PreparedPath, now: float, grace: float | None = None) -> _gc.GcPlan:
    """List ``location`` and plan its gc as ``fb gc`` would at time ``now``."""
    listing = _inspect.list_location(location)
    sessions = _gc.find_sessions(location, listing, now=now, grace=grace)
    return _gc.plan_gc(
        listing, locked=None, manifest=None, min_age=3600, now=now, sessions=sessions
    )


def store_blobs(store: FBStore[Any], count: int) -> list[uuid.UUID]:
    """Store ``count`` small blobs through ``store``; return their keys."""
    keys = [uuid.uuid4() for _ in range(count)]
    for index, key in enumerate(keys):
        store.store(key, bytes([index]) * 1000)
    return keys


@pytest.fixture(name="memory_root")
def fixture_memory_root() -> Iterator[str]:
    """A fresh ``memory://`` URL, removed afterwards."""
    url = f"memory://fb-test-{uuid.uuid4().hex}"
    yield url
    location = PreparedPath(url)
    if location.fs.exists(location.root):
        location.fs.rm(location.root, recursive=True)


# -- the lease a store keeps -----------------------------------------------------------------


def test_a_store_on_s3_writes_a_lease_that_close_deletes(s3: S3Bucket) -> None:
    """Opening a store on S3 writes a lease naming this process; a clean close deletes it."""
    before = time.time()
    store: FBStore[Any] = FBStore("pickle", s3.location("cache"))
    try:
        (name,) = leases(s3, "cache")
        record = LeaseRecord.decode(s3.get(name))
        assert record.host == socket.gethostname()
        assert record.pid == os.getpid()
        assert record.interval == DEFAULT_INTERVAL
        assert before <= record.created == record.refreshed <= time.time()
    finally:
        store.close()
    assert s3.names() == []


def test_a_store_on_memory_writes_a_lease_that_close_deletes(memory_root: str) -> None:
    """The lease covers every filesystem but local disk: memory:// too."""
    location = PreparedPath(f"{memory_root}/cache")
    store: FBStore[Any] = FBStore("pickle", location)
    found = [path for path in location.fs.find(location.root) if "/.fb-lease." in path]
    assert len(found) == 1
    assert LeaseRecord.decode(location.fs.cat_file(found[0])).pid == os.getpid()
    store.close()
    assert location.fs.find(location.root) == []


def test_the_lease_is_refreshed_in_the_background_until_close(s3: S3Bucket) -> None:
    """The keeper's thread rewrites the lease every interval; close stops it and deletes it."""
    ticks = itertools.count(1000)
    keeper = LeaseKeeper(s3.location("cache"), interval=0.01, clock=lambda: float(next(ticks)))
    keeper.start()
    try:
        assert keeper.wait_written(3, timeout=TIMEOUT)
        (name,) = leases(s3, "cache")
        record = LeaseRecord.decode(s3.get(name))
        assert record.created == 1000.0
        assert record.refreshed >= 1002.0
        assert record.interval == 0.01
    finally:
        keeper.close()
    written = keeper.writes
    # A refresher still running would write again within a few of its 10 ms intervals.
    assert not keeper.wait_written(written + 1, timeout=0.2)
    assert s3.names() == []


def test_a_forked_child_leaves_its_parents_lease(s3: S3Bucket) -> None:
    """Closing a store in a forked child leaves the lease of the parent, which is alive."""
    store: FBStore[Any] = FBStore("pickle", s3.location("cache"))
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                store.close()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(leases(s3, "cache")) == 1
    finally:
        store.close()
    assert s3.names() == []


# -- gc judges sessions by their leases -------------------------------------------------------


def test_gc_leaves_a_live_session_alone(s3: S3Bucket) -> None:
    """A pool's session with a fresh lease is kept, seen from its parent and on its own."""
    with fb.open_pool(s3.url("spill"), max_items=0, storage_options=s3.options) as pool:
        handles = [pool.insert(f"value {i}") for i in range(3)]
        pool.store.finished()
        root = pool.store.strategy.path  # type: ignore[attr-defined]
        session = root.root.rpartition("/")[2]
        for location in (s3.location("spill"), root):
            plan = plan_at(location, now=time.time())
            assert plan.delete == ()
            assert plan.foreign == ()
            (found,) = plan.sessions
            assert found.name == ("" if location is root else session)
            assert found.liveness.alive
            assert len(found.blobs) == 3
            assert found.holder is not None
            assert found.holder.pid == os.getpid()
        assert [handle.load().value for handle in handles] == ["value 0", "value 1", "value 2"]


@pytest.mark.parametrize("form", ["fb-", "fb-dask-"])
def test_gc_deletes_an_abandoned_session_after_the_grace(s3: S3Bucket, form: str) -> None:
    """A store abandoned unclosed stays alive for the grace, then a dry run lists its files."""
    prefix = f"spill/{form}{uuid.uuid4().hex}"
    store: FBStore[Any] = FBStore("pickle", s3.location(prefix))
    try:
        keys = store_blobs(store, 3)
        s3.server.client.put_object(Bucket=s3.name, Key=f"{prefix}/notes.txt", Body=b"mine")
        now = time.time()
        assert plan_at(s3.location("spill"), now=now).delete == ()
        plan = plan_at(s3.location("spill"), now=now + LATER)
        (session,) = plan.sessions
        assert not session.liveness.alive
        assert "past the grace" in session.liveness.reason
        names = [item.file.name for item in plan.delete]
        blob_names = {f"{prefix[6:]}/{key.hex[:2]}/{key.hex}" for key in keys}
        assert set(names[:3]) == blob_names
        assert "/.fb-lease." in names[3]  # the lease goes last
        assert len(names) == 4
        assert [file.name for file in plan.foreign] == [f"{prefix[6:]}/notes.txt"]
        assert len(s3.names(prefix)) == 5  # a plan deletes nothing
        assert _gc.delete_files(s3.location("spill"), [i.file for i in plan.delete]) == []
        assert s3.names("spill/") == [f"{prefix}/notes.txt"]
    finally:
        store.close()


def test_a_dead_session_goes_in_bulk_requests(s3: S3Bucket) -> None:
    """Blobs of a dead session are deleted by one DeleteObjects, then the lease alone."""
    prefix = f"spill/fb-{uuid.uuid4().hex}"
    store: FBStore[Any] = FBStore("pickle", s3.location(prefix))
    try:
        store_blobs(store, 40)
        spill = s3.location("spill")
        plan = plan_at(spill, now=time.time() + LATER)
        assert len(plan.delete) == 41
        calls = S3Calls()
        calls.watch(spill)
        assert _gc.delete_files(spill, [item.file for item in plan.delete]) == []
        deletes = [(name, key) for name, key in calls.calls if name.startswith("Delete")]
        assert [name for name, _ in deletes] == ["DeleteObjects", "DeleteObject"]
        assert "/.fb-lease." in deletes[1][1]
        assert s3.names() == []
    finally:
        store.close()


def test_gc_judges_a_session_without_a_lease_by_its_newest_blob(s3: S3Bucket) -> None:
    """Blobs left without a lease (a closed store's) go once the newest is past the grace."""
    prefix = f"spill/fb-{uuid.uuid4().hex}"
    store: FBStore[Any] = FBStore("pickle", s3.location(prefix))
    keys = store_blobs(store, 2)
    store.close()  # deletes the lease; FBStore.close leaves blobs to the BackingStore
    assert leases(s3, prefix) == []
    for location in (s3.location("spill"), s3.location(prefix)):
        now = time.time()
        (young,) = plan_at(location, now=now).sessions
        assert young.liveness.alive
        assert young.liveness.reason.startswith("no lease")
        plan = plan_at(location, now=now + LATER)
        assert {item.file.key for item in plan.delete} == {key.hex for key in keys}
    assert plan_at(s3.location(prefix), now=time.time(), grace=0).delete != ()


def test_gc_of_a_store_on_memory_uses_its_lease(memory_root: str) -> None:
    """On memory:// a store's location is a cache with a lease: kept while fresh, then cleaned."""
    location = PreparedPath(f"{memory_root}/cache")
    store: FBStore[Any] = FBStore("pickle", location)
    try:
        store_blobs(store, 2)
        fresh = plan_at(location, now=time.time())
        assert fresh.kind == "cache"
        assert fresh.delete == ()
        assert len(fresh.kept_blobs) == 2
        stale = plan_at(location, now=time.time() + LATER)
        assert len(stale.delete) == 3
        assert _gc.delete_files(location, [i.file for i in stale.delete]) == []
        assert location.fs.find(location.root) == []
    finally:
        store.close()


# -- a process that really died ---------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    import fb
    from fb.backends import _lease
    if len(sys.argv) > 3:
        _lease.DEFAULT_INTERVAL = float(sys.argv[3])
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": sys.argv[2], "region_name": "us-east-1"}}
    pool = fb.open_pool(sys.argv[1], max_items=0, storage_options=options)
    handles = [pool.insert(b"x" * 1000) for _ in range(3)]
    pool.store.finished()
    print(pool.store.strategy.path.root.rpartition("/")[2], flush=True)
    sys.stdin.readline()
    """
)


def killed_child(s3: S3Bucket, *interval: str) -> str:
    """Run a pool in a child process on ``spill``, kill it; return its session's name."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, s3.url("spill"), s3.endpoint, *interval],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        session = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        for stream in (child.stdout, child.stdin):
            if stream is not None:
                stream.close()
    assert session.startswith("fb-"), session
    assert child.returncode == -signal.SIGKILL
    return session


def test_gc_tells_a_killed_process_from_a_live_one(s3: S3Bucket) -> None:
    """Seen from the parent prefix, a killed child's session is dead, this live pool's is not."""
    dead = killed_child(s3, "1.0")  # refreshed every second: dead 3 s after the kill
    with fb.open_pool(s3.url("spill"), max_items=0, storage_options=s3.options) as pool:
        handle = pool.insert("still needed")
        pool.store.finished()
        plan = plan_at(s3.location("spill"), now=time.time() + 30)
        verdicts = {session.name: session.liveness.alive for session in plan.sessions}
        live = pool.store.strategy.path.root.rpartition("/")[2]  # type: ignore[attr-defined]
        assert verdicts == {dead: False, live: True}
        assert {item.file.name.partition("/")[0] for item in plan.delete} == {dead}
        assert len(plan.delete) == 4
        assert _gc.delete_files(s3.location("spill"), [i.file for i in plan.delete]) == []
        assert not any(name.startswith(f"spill/{dead}/") for name in s3.names())
        with handle.load() as value:
            assert value == "still needed"
    assert s3.names() == []


def test_fb_gc_cleans_up_after_a_killed_process(s3: S3Bucket) -> None:
    """``fb gc`` keeps a killed child's session within the grace, then deletes it on --yes."""
    session = killed_child(s3)
    args = ("gc", s3.url("spill"), "--endpoint-url", s3.endpoint)
    kept = run_fb(*args, "--json")
    assert kept.returncode == 0, kept.stderr
    report = json.loads(kept.stdout)
    assert report["delete"] == []
    (found,) = report["sessions"]
    assert found["name"] == session
    assert found["alive"] is True
    assert found["blobs"] == 3
    assert found["holder"]["interval"] == DEFAULT_INTERVAL

    dry = run_fb(*args, "--grace", "0")
    assert dry.returncode == 1, dry.stderr
    assert f"session {session}: dead" in dry.stdout
    assert "would delete 4 file(s)" in dry.stdout
    assert len(s3.names("spill/")) == 4

    done = run_fb(*args, "--grace", "0", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == 4
    assert s3.names() == []


def test_fb_gc_refuses_a_manifest_for_a_session(s3: S3Bucket, tmp_path: Any) -> None:
    """A session is a store's, not a persist location: --manifest there is a usage error."""
    prefix = f"spill/fb-{uuid.uuid4().hex}"
    store: FBStore[Any] = FBStore("pickle", s3.location(prefix))
    try:
        (key,) = store_blobs(store, 1)
        manifest = tmp_path / "keep.txt"
        manifest.write_text(f"{key.hex}\n")
        args = ("gc", s3.url(prefix), "--endpoint-url", s3.endpoint, "--manifest", str(manifest))
        done = run_fb(*args, "--grace", "0", "--yes")
        assert done.returncode == 2
        assert "--manifest" in done.stderr
        assert len(s3.names(prefix)) == 2
    finally:
        store.close()
