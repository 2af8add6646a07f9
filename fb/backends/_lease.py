"""Leases: how a store on a filesystem without locks shows that it is alive.

On local disk a cache directory's owner holds an ``flock``, which the kernel releases when
the process dies, so ``fb gc`` can tell a dead store from a live one. An object store (or any
other non-local filesystem) has no such lock. There a store writes a *lease* instead: a small
JSON object ``<root>/.fb-lease.<16 hex>`` naming its host and process, when it was created
and last refreshed, and how often it is refreshed. A daemon thread rewrites it every
``interval`` seconds; a clean close deletes it (after the store's blobs). A process that dies
stops refreshing it, and once it is older than a grace period (by default three intervals)
``fb gc`` treats the store's blobs as a dead store's.

Each store names its lease with a random token, so two stores that (against advice) share a
prefix never delete each other's lease: the prefix is alive while any lease there is fresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._locations import remote_errors
from ._prepared_path import PreparedPath

__all__ = [
    "DEFAULT_INTERVAL",
    "GRACE_INTERVALS",
    "LEASE_NAME",
    "LeaseKeeper",
    "LeaseRecord",
    "Liveness",
    "judge",
    "read_lease",
]

_log = logging.getLogger("fb")

LEASE_NAME = re.compile(r"^\.fb-lease\.[0-9a-f]{16}$")
"""The name of a lease file, at the top of the location it covers."""
DEFAULT_INTERVAL = 60.0
"""Seconds between two refreshes of a store's lease (one small PUT each on S3)."""
GRACE_INTERVALS = 3
"""A lease not refreshed for this many of its intervals is a dead store's."""
_FORMAT = "fb lease 1"
_MAX_LEASE = 4096
"""Bytes of a lease file read at most: a lease is about 150 bytes."""


@attrs.frozen(kw_only=True)
class LeaseRecord:
    """What a lease says: who holds it, since when, how fresh, and how often it is refreshed.

    Attributes:
        host: the host name of the process that holds the lease.
        pid: its process ID.
        created: when the store opened (seconds since the epoch, the holder's clock).
        refreshed: when the lease was last written (the holder's clock).
        interval: seconds between two refreshes.
    """

    host: str
    pid: int
    created: float
    refreshed: float
    interval: float

    def encode(self) -> bytes:
        """Return the lease as the JSON bytes written to storage."""
        return json.dumps({"format": _FORMAT, **attrs.asdict(self)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaseRecord:
        """Parse a lease written by `encode`.

        Raises:
            ValueError: ``data`` is not a lease (the message says what is wrong).
        """
        try:
            fields: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a lease: {exc}") from exc
        if not isinstance(fields, dict) or fields.get("format") != _FORMAT:
            raise ValueError("not a lease: no lease format tag")
        try:
            record = cls(
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                created=float(fields["created"]),
                refreshed=float(fields["refreshed"]),
                interval=float(fields["interval"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a lease: bad or missing field {exc}") from exc
        numbers = (record.created, record.refreshed, record.interval)
        if not all(math.isfinite(x) for x in numbers) or record.interval <= 0:
            raise ValueError("not a lease: times must be finite and the interval positive")
        return record


def read_lease(location: PreparedPath, path: str) -> LeaseRecord | None:
    """Read the lease at ``path`` in ``location``'s filesystem; None if it is not a lease.

    Raises:
        FileNotFoundError: the lease is gone (its store closed meanwhile).
        OSError: storage failed; the message names the lease.
    """
    with remote_errors(location.fs.unstrip_protocol(path)):
        data: bytes = location.fs.cat_file(path, start=0, end=_MAX_LEASE)
    try:
        return LeaseRecord.decode(data)
    except ValueError:
        return None


class LeaseKeeper:
    """Writes a store's lease at `start`, refreshes it on a daemon thread, deletes it at `close`.

    Args:
        location: the store's location (not on local disk: there the lock file serves).
        interval: seconds between two refreshes (default: `DEFAULT_INTERVAL`).
        clock: returns the current time, seconds since the epoch (tests pass their own).

    Notes:
        Thread-safe. `start` and `refresh` block on one write; `close` on one delete (and on
        a refresh in progress). In a process forked from the one that started it, `close`
        and `stop` do nothing: the lease is the parent's, which is still alive.
    """

    def __init__(
        self,
        location: PreparedPath,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval is None:
            interval = DEFAULT_INTERVAL  # read now, so that a process may change the default
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"a lease interval must be a positive number, not {interval!r}")
        self.location = location
        self.interval = float(interval)
        self.path = f"{location.root}/.fb-lease.{secrets.token_hex(8)}"
        self._clock = clock
        self._pid = os.getpid()
        self._created: float | None = None
        self._stop = threading.Event()
        self._written = threading.Condition()
        self._writes = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "stopped" if self._stop.is_set() else f"every {self.interval:g} s"
        return f"LeaseKeeper({self.location.fs.unstrip_protocol(self.path)!r}, {state})"

    @property
    def writes(self) -> int:
        """How many times the lease was written (the first write at `start` counts)."""
        with self._written:
            return self._writes

    def start(self) -> None:
        """Write the lease, then refresh it every ``interval`` seconds in the background.

        Raises:
            OSError: the lease cannot be written; the message names it.
        """
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="fb-lease", daemon=True)
        self._thread.start()

    def refresh(self) -> LeaseRecord:
        """Write the lease now, saying it was refreshed at the clock's current time."""
        now = self._clock()
        if self._created is None:
            self._created = now  # the first write: when the store opened
        record = LeaseRecord(
            host=socket.gethostname(),
            pid=os.getpid(),
            created=self._created,
            refreshed=now,
            interval=self.interval,
        )
        fs = self.location.fs
        with remote_errors(fs.unstrip_protocol(self.path)):
            # One PUT on an object store: readers see the old lease or the new one, whole.
            fs.pipe_file(self.path, record.encode())
        with self._written:
            self._writes += 1
            self._written.notify_all()
        return record

    def wait_written(self, writes: int, timeout: float) -> bool:
        """Wait until the lease was written ``writes`` times in all; False on timeout."""
        with self._written:
            return self._written.wait_for(lambda: self._writes >= writes, timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:
                # A missed refresh is not fatal: the lease stays fresh for a grace period of
                # several intervals, and the next refresh may get through.
                _log.warning("fb: cannot refresh the lease %s: %s", self.path, exc)

    def stop(self, *, wait: bool = True) -> None:
        """Stop refreshing, leaving the lease as it is (as a process that died would).

        Args:
            wait: wait for a refresh in progress to end (a garbage-collection finalizer
                passes False: it must not block on storage).
        """
        if self._pid != os.getpid():
            return
        self._stop.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        """Stop refreshing and delete the lease. Idempotent.

        Errors are logged, not raised: a lease left behind only makes ``fb gc`` wait for
        its grace period before it deletes what the store left.
        """
        if self._pid != os.getpid():
            return  # a forked child: the lease is its parent's
        self.stop()
        with self._written:
            if self._closed:
                return
            self._closed = True
        fs = self.location.fs
        try:
            with (
                remote_errors(fs.unstrip_protocol(self.path)),
                contextlib.suppress(FileNotFoundError),
            ):
                fs.rm_file(self.path)
        except OSError as exc:
            _log.warning("fb: cannot delete the lease %s: %s", self.path, exc)


@attrs.frozen(kw_only=True)
class Liveness:
    """Whether a store's files belong to a live store, and why ``fb gc`` thinks so.

    Attributes:
        alive: True unless the store is dead beyond doubt (its files may then go).
        reason: the evidence, in words.
        last_seen: when the store last showed life (a lease refreshed, a file written), if
            known.
        grace: the grace period applied, in seconds.
        holder: the freshest readable lease, if any.
    """

    alive: bool
    reason: str
    last_seen: float | None
    grace: float
    holder: LeaseRecord | None = None


def _span(seconds: float) -> str:
    """Return a duration as ``42 s``, ``17 min``, ``5 h`` or ``3 d``."""
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if abs(seconds) < limit:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def judge(
    leases: Sequence[tuple[LeaseRecord | None, float | None]],
    newest_file: float | None,
    *,
    now: float,
    grace: float | None = None,
) -> Liveness:
    """Decide whether the store behind a location is alive; no I/O.

    A store showed life when a lease of it was refreshed (by the time it says, or by the
    lease file's modification time if later: the storage's clock guards against a holder
    whose clock runs slow) or when it wrote a file. It is dead when that is longer ago than
    the grace period; a store that shows no sign of age is kept.

    Args:
        leases: each lease there (its record, None if unreadable) with its file's
            modification time (None if the filesystem gives none).
        newest_file: the newest modification time of the location's other files.
        now: the current time, seconds since the epoch.
        grace: seconds without a sign of life after which a store is dead; by default
            `GRACE_INTERVALS` of the freshest lease's interval (of `DEFAULT_INTERVAL`
            without a readable lease).
    """
    records = [record for record, _ in leases if record is not None]
    times = [record.refreshed for record in records]
    times += [mtime for _, mtime in leases if mtime is not None]
    holder = max(records, key=lambda record: record.refreshed, default=None)
    if grace is None:
        interval = max((record.interval for record in records), default=DEFAULT_INTERVAL)
        grace = GRACE_INTERVALS * interval
    if newest_file is not None:
        times.append(newest_file)
    if leases:
        who = f"lease of {holder.host} pid {holder.pid}" if holder else "an unreadable lease"
    else:
        who = "no lease"
    if not times:
        return Liveness(
            alive=True,
            reason=f"{who}, and no time to judge by: kept",
            last_seen=None,
            grace=grace,
            holder=holder,
        )
    last = max(times)
    age = now - last
    alive = age <= grace
    if leases:
        what = f"{who}: last sign of life {_span(age)} ago"
    else:
        what = f"{who}; newest file written {_span(age)} ago"
    verdict = "within" if alive else "past"
    return Liveness(
        alive=alive,
        reason=f"{what}, {verdict} the grace of {_span(grace)}",
        last_seen=last,
        grace=grace,
        holder=holder,
    )
