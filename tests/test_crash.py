"""Crash safety: a child process persisting items is SIGKILLed at chosen points, then a restart.

The child (``tests/crash_child.py``) kills itself from inside a wrapper of ``os.link``,
``os.replace``, ``os.fsync``, ``os.unlink`` or ``shutil.copyfileobj`` that it installs in its own
process only, on the N-th call. After the kill a new store opens the same cache and persist
directories and checks what a restart would see:

- the cache directory was swept on open (no blob, no temporary file left);
- every key the child reported as persisted and fsynced registers and loads bit-exact;
- every key found at the location loads bit-exact: a half-written blob is never visible;
- with the save protocol, the manifest on disk is whole and every key it lists is there;
- the location stays usable: the new store can persist there.
"""

from __future__ import annotations

import json
import random
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec
from tests.crash_child import MANIFEST, WRAPPABLE, ChildRun, run_child, value_for

SEED = 7
SIZE = 200_000
ITEMS = 6
_TEMP = re.compile(r"^\.[0-9a-f]{32}\.[0-9a-f]+\.tmp$")


@dataclass(frozen=True)
class Kill:
    """One kill point: where the child dies and what the restart must then find."""

    mode: str
    device: str
    kill: str
    persisted: int | None = None
    found: int | None = None
    cache_temp: bool = False
    persist_temp: bool = False
    round_: int | None = None


@dataclass
class Restart:
    """What the new store saw after a crash."""

    leftovers: list[str]
    keys: frozenset[UUID]
    persist_temps: list[str]
    manifest: dict[str, Any] | None


def cache_files(cache: Path) -> list[str]:
    """Every file in a cache directory's shards (blobs and temporary files)."""
    return sorted(str(p.relative_to(cache)) for p in cache.glob("??/*"))


def check_restart(run: ChildRun, cache: Path, persist: Path, *, killed: bool = True) -> Restart:
    """Open a new store on the child's directories and check everything a restart relies on."""
    if killed:
        assert run.returncode == -signal.SIGKILL, f"not killed ({run.returncode}): {run.stderr}"
    else:
        assert run.returncode in (0, -signal.SIGKILL), run.stderr
    leftovers = cache_files(cache)
    store: BackingStore[bytes] = BackingStore(FBStore(PickleCodec(), PreparedPath(cache)))
    try:
        assert cache_files(cache) == [], "the cache directory was not swept on open"
        tracked = store.track_path(persist)
        keys = tracked.keys()
        assert set(run.persisted) <= keys, "a key reported persisted and fsynced is missing"
        assert keys <= set(run.inserted), "a key nobody inserted appeared"
        assert set(tracked.unknown) <= {MANIFEST, MANIFEST + ".tmp"}
        pool: FBPool[bytes] = FBPool(store, max_items=1)
        for key in sorted(keys):
            handle = pool.register(tracked, key)
            assert handle is not None, key
            with handle.load() as value:
                assert value == value_for(SEED, run.inserted[key], SIZE), key
            handle.close()
        manifest: dict[str, Any] | None = None
        if (persist / MANIFEST).exists():
            manifest = json.loads((persist / MANIFEST).read_text(encoding="utf-8"))
            assert {UUID(hex=k) for k in manifest["items"]} <= keys, "the last save is not whole"
            for hexkey, index in manifest["items"].items():
                assert run.inserted[UUID(hex=hexkey)] == index
        if run.committed:
            assert manifest is not None
            assert manifest["round"] >= run.committed[-1][0]
        # The location stays usable: a restart can go on persisting there.
        fresh = pool.insert(b"after the restart")
        key = fresh.persist(tracked)
        store.fsync(tracked)
        assert key in store.track_path(persist)
        store.finished()
    finally:
        store.close()
    assert cache_files(cache) == []
    temps = sorted(str(p.relative_to(persist)) for p in persist.glob("??/*") if _TEMP.match(p.name))
    return Restart(leftovers, keys, temps, manifest)


@pytest.fixture(name="locations")
def fixture_locations(
    request: pytest.FixtureRequest, tmp_path: Path, persist_dir: Path
) -> tuple[Path, Path]:
    """The child's cache directory and its persist location (on /dev/shm for ``shm`` cases)."""
    device = getattr(request, "param", "same")
    persist = request.getfixturevalue("shm_dir") if device == "shm" else persist_dir
    return tmp_path / "cache", persist


def _run(kill: Kill, cache: Path, persist: Path) -> ChildRun:
    spec = kill.kill.replace("{persist}", re.escape(str(persist)))
    options = ["--mode", kill.mode, "--items", str(ITEMS), "--size", str(SIZE), "--seed"]
    return run_child(cache, persist, *options, str(SEED), "--kill", spec)


KILLS = {
    # persist, one device: the ladder's hard link
    "before-a-link": Kill(
        "persist", "same", "os.link:3:before:/[0-9a-f]{2}/[0-9a-f]{32}$", persisted=2, found=2
    ),
    "after-a-link-before-fsync": Kill(
        "persist", "same", "os.link:3:after:/[0-9a-f]{2}/[0-9a-f]{32}$", persisted=2, found=3
    ),
    # The fifth write is persist's own write of item 4, after items 0-3 were written back.
    "mid-cache-write": Kill(
        "persist", "same", "os.replace:5:before", persisted=4, found=4, cache_temp=True
    ),
    "marker-created-not-written": Kill(
        "persist", "same", r"os.open:1:after:\.fb-persist\.[0-9a-f]+\.tmp$", persisted=0, found=0
    ),
    # persist across devices: the ladder's copy to a temporary name, fsync, rename
    "copy-started": Kill(
        "persist", "shm", "shutil.copyfileobj:2:before", persisted=1, found=1, persist_temp=True
    ),
    "copy-written-not-renamed": Kill(
        "persist", "shm", "os.replace:2:before:^{persist}/", persisted=1, found=1, persist_temp=True
    ),
    # the save protocol
    "before-the-second-commit": Kill(
        "save", "same", r"os.replace:2:before:manifest\.json", round_=0
    ),
    "after-the-second-commit": Kill("save", "same", r"os.replace:2:after:manifest\.json", round_=1),
    "after-the-first-delete": Kill(
        "save", "same", "os.unlink:1:after:^{persist}/[0-9a-f]{2}/", round_=1
    ),
    "save-copy-not-renamed": Kill(
        "save", "shm", "os.replace:3:before:^{persist}/[0-9a-f]{2}/", persist_temp=True
    ),
}


XFAIL: dict[str, pytest.MarkDecorator] = {}


@pytest.mark.parametrize(
    ("kill", "locations"),
    [
        pytest.param(kill, kill.device, id=name, marks=XFAIL.get(name, ()))
        for name, kill in KILLS.items()
    ],
    indirect=["locations"],
)
def test_a_restart_after_a_kill_finds_whole_blobs(kill: Kill, locations: tuple[Path, Path]) -> None:
    """After SIGKILL at this point, a new store sweeps the cache and every key loads bit-exact."""
    cache, persist = locations
    run = _run(kill, cache, persist)
    restart = check_restart(run, cache, persist)
    assert restart.leftovers, "the crash left nothing in the cache: the sweep went untested"
    if kill.persisted is not None:
        assert sorted(run.persisted.values()) == list(range(kill.persisted))
    if kill.found is not None:
        assert len(restart.keys) == kill.found
    if kill.cache_temp:
        assert any(_TEMP.match(Path(name).name) for name in restart.leftovers)
    if kill.persist_temp:
        # The temporary file stays where it was, under a name that is not a key.
        assert restart.persist_temps
    if kill.round_ is not None:
        assert restart.manifest is not None
        assert restart.manifest["round"] == kill.round_


def test_the_save_protocol_deletes_only_after_the_commit(tmp_path: Path, persist_dir: Path) -> None:
    """Killed right after a commit, the items the new manifest dropped are all still there."""
    cache = tmp_path / "cache"
    kill = KILLS["after-the-second-commit"]
    run = _run(kill, cache, persist_dir)
    restart = check_restart(run, cache, persist_dir)
    ((round_, first),) = run.committed
    assert round_ == 0
    assert restart.manifest is not None
    assert set(first) <= restart.keys  # dropped by round 1, not deleted yet


# -- stress: kills at random moments ---------------------------------------------------------


@pytest.fixture(name="call_counts", scope="module")
def fixture_call_counts() -> dict[tuple[str, str], dict[str, int]]:
    """How often a whole run calls each wrappable function, per mode and device (filled lazily)."""
    return {}


def _counts_for(
    counts: dict[tuple[str, str], dict[str, int]], mode: str, device: str, base: Path
) -> dict[str, int]:
    if (mode, device) not in counts:
        with tempfile.TemporaryDirectory(dir="/dev/shm" if device == "shm" else base) as tmp:
            options = ["--mode", mode, "--items", str(ITEMS), "--size", str(SIZE), "--count"]
            run = run_child(base / "count-cache", Path(tmp), *options)
            assert run.returncode == 0, run.stderr
            counts[mode, device] = run.counts
    return counts[mode, device]


@pytest.mark.stress
@pytest.mark.parametrize("trial", range(60))
def test_kills_at_random_moments(
    trial: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    persist_dir: Path,
    call_counts: dict[tuple[str, str], dict[str, int]],
) -> None:
    """A kill at a random call of a random function never leaves a broken blob under a key."""
    rng = random.Random(trial)
    mode = rng.choice(["persist", "save"])
    device = rng.choice(["same", "shm"])
    persist = request.getfixturevalue("shm_dir") if device == "shm" else persist_dir
    counts = _counts_for(call_counts, mode, device, tmp_path)
    name = rng.choice([n for n in WRAPPABLE if counts.get(n)])
    spec = f"{name}:{rng.randint(1, counts[name])}:{rng.choice(['before', 'after'])}"
    cache = tmp_path / "cache"
    options = ["--mode", mode, "--items", str(ITEMS), "--size", str(SIZE), "--seed", str(SEED)]
    run = run_child(cache, persist, *options, "--kill", spec)
    # The count run is the same program, so the N-th call is reached and the child dies; a
    # run that ends anyway (rc 0) must still leave everything it reported in place.
    check_restart(run, cache, persist, killed=False)
