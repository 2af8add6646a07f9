"""Leases without storage: their format, and how a store's liveness is judged from them."""

from __future__ import annotations

import math

import pytest

from fb.backends import PreparedPath
from fb.backends._lease import DEFAULT_INTERVAL, LeaseKeeper, LeaseRecord, judge

NOW = 1_800_000_000.0


def record(refreshed: float, interval: float = 10.0) -> LeaseRecord:
    """A lease of host ``h`` pid 7, created an hour before ``refreshed``."""
    return LeaseRecord(
        host="h", pid=7, created=refreshed - 3600, refreshed=refreshed, interval=interval
    )


def test_a_lease_round_trips_through_its_encoding() -> None:
    """What `encode` writes, `decode` reads back unchanged."""
    lease = record(NOW)
    assert LeaseRecord.decode(lease.encode()) == lease


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe",
        b"[1, 2]",
        b'{"host": "h"}',
        record(NOW).encode().replace(b"fb lease 1", b"fb lease 9"),
        record(NOW, interval=0.0).encode(),
        record(NOW).encode().replace(str(NOW).encode(), b"NaN"),
    ],
)
def test_decode_refuses_what_is_not_a_lease(data: bytes) -> None:
    """Garbage, another format, missing fields and impossible times are ValueErrors."""
    with pytest.raises(ValueError, match="not a lease"):
        LeaseRecord.decode(data)


@pytest.mark.parametrize("interval", [0.0, -1.0, math.inf, math.nan])
def test_a_keeper_refuses_an_impossible_interval(interval: float) -> None:
    """A refresh interval must be a positive finite number of seconds."""
    with pytest.raises(ValueError, match="interval"):
        LeaseKeeper(PreparedPath("memory://fb-lease-test"), interval=interval)


def test_a_fresh_lease_is_alive_and_a_stale_one_dead() -> None:
    """The default grace is three of the lease's intervals."""
    alive = judge([(record(NOW - 29), None)], None, now=NOW)
    assert alive.alive
    assert alive.grace == 30.0
    assert alive.holder == record(NOW - 29)
    dead = judge([(record(NOW - 31), None)], None, now=NOW)
    assert not dead.alive
    assert "lease of h pid 7" in dead.reason
    assert dead.last_seen == NOW - 31


def test_one_fresh_lease_keeps_a_prefix_alive() -> None:
    """Of several stores on one prefix, one live store is enough to keep it."""
    verdict = judge([(record(NOW - 500), None), (record(NOW - 1), None)], None, now=NOW)
    assert verdict.alive
    assert verdict.holder == record(NOW - 1)


def test_the_storage_clock_keeps_a_slow_holder_alive() -> None:
    """A lease whose holder's clock runs slow is judged by its file's newer mtime."""
    assert judge([(record(NOW - 3600), NOW - 2)], None, now=NOW).alive


def test_an_unreadable_lease_is_judged_by_its_mtime() -> None:
    """A lease that cannot be read still dates the store, with the default interval."""
    fresh = judge([(None, NOW - 10)], None, now=NOW)
    assert fresh.alive
    assert fresh.grace == 3 * DEFAULT_INTERVAL
    assert "unreadable" in fresh.reason
    assert not judge([(None, NOW - 1000)], None, now=NOW).alive


def test_a_recent_blob_is_a_sign_of_life() -> None:
    """A store whose lease is stale but which wrote a blob within the grace is kept."""
    assert judge([(record(NOW - 500), None)], NOW - 5, now=NOW).alive


def test_without_a_lease_the_newest_file_decides() -> None:
    """Blobs without a lease are dead once the newest is older than the grace."""
    assert judge([], NOW - 60, now=NOW).alive
    assert not judge([], NOW - 3 * DEFAULT_INTERVAL - 1, now=NOW).alive
    assert not judge([], NOW - 60, now=NOW, grace=30).alive


def test_a_store_with_no_time_to_judge_by_is_kept() -> None:
    """Without any modification time nothing says the store is dead: it is kept."""
    verdict = judge([], None, now=NOW, grace=0)
    assert verdict.alive
    assert verdict.last_seen is None


def test_an_explicit_grace_overrides_the_leases_interval() -> None:
    """``grace`` replaces three intervals, in either direction."""
    assert not judge([(record(NOW - 5), None)], None, now=NOW, grace=1).alive
    assert judge([(record(NOW - 500), None)], None, now=NOW, grace=1000).alive
