"""Clean-up of fb's locations without a store: the plan ``fb gc`` shows, and its deletions.

Built on the listings of ``_inspect.py``. A plan deletes only names fb owns: the files of a
dead store (a local cache directory whose lock is free; on other filesystems a store whose
lease has expired, see `fb.backends._lease`), temporary files old enough to be a crashed
writer's, and, given a manifest of the keys to keep, the blobs of a persist location that no
save names. Foreign names are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

import attrs

from ._inspect import _SESSION, Kind, Listing, StoredFile, _classify
from ._persist import parse_key
from .backends._lease import LEASE_NAME, LeaseRecord, Liveness, judge, read_lease
from .backends._locations import remote_errors
from .backends._prepared_path import PreparedPath

__all__ = [
    "GcItem",
    "GcPlan",
    "Session",
    "delete_files",
    "find_sessions",
    "plan_gc",
    "read_manifest",
]


@attrs.frozen(kw_only=True)
class GcItem:
    """A file `plan_gc` would delete, and why."""

    file: StoredFile
    reason: str


@attrs.frozen(kw_only=True)
class Session:
    """The files of one store on a filesystem without locks, and whether it is alive.

    Names are relative to the location ``fb gc`` looks at: a session is either that location
    itself (a store's prefix, ``name`` empty) or an `fb.open_pool` session prefix
    ``fb-<32 hex>`` right below it.

    Attributes:
        name: the session's prefix, or ``""`` for the location itself.
        blobs: its blobs.
        temp_files: its temporary files.
        leases: its lease files (deleted last).
        foreign: other names under its prefix (never deleted).
        liveness: the verdict on its store, and why.
    """

    name: str
    blobs: tuple[StoredFile, ...]
    temp_files: tuple[StoredFile, ...]
    leases: tuple[StoredFile, ...]
    foreign: tuple[StoredFile, ...]
    liveness: Liveness

    @property
    def files(self) -> tuple[StoredFile, ...]:
        """Every file fb owns in the session, its leases last."""
        return self.blobs + self.temp_files + self.leases

    @property
    def holder(self) -> LeaseRecord | None:
        """The freshest readable lease."""
        return self.liveness.holder


@attrs.frozen(kw_only=True)
class GcPlan:
    """What ``fb gc`` deletes at a location, and what it leaves alone.

    Attributes:
        kind: the location's kind.
        locked: True when a live store owns the location (then nothing is deleted), False
            when its lock was free, None when there is no lock to check.
        delete: the files to delete, with the reason for each.
        kept_recent: temporary files younger than the minimum age (maybe a write in
            progress), or of unknown age.
        kept_blobs: blobs left alone.
        missing: keys the manifest lists that have no blob here.
        foreign: names fb does not own (never deleted).
        refused: why no blob is deleted although a manifest was given, if that is so.
        sessions: the stores found on a filesystem without locks (the location itself, or
            session prefixes below it), live and dead; a dead one's files are in ``delete``.
    """

    kind: Kind
    locked: bool | None
    delete: tuple[GcItem, ...]
    kept_recent: tuple[StoredFile, ...]
    kept_blobs: tuple[StoredFile, ...]
    missing: tuple[str, ...]
    foreign: tuple[StoredFile, ...]
    refused: str | None = None
    sessions: tuple[Session, ...] = ()


def read_manifest(path: str | os.PathLike[str]) -> frozenset[UUID]:
    """Read the keys a manifest lists: a JSON list of keys, or one key per line.

    In the text form, blank lines and lines starting with ``#`` are skipped. Keys are 32 hex
    digits (or the hyphenated form of a UUID).

    Raises:
        ValueError: the file holds something that is not a key (named in the message).
        OSError: the file cannot be read.
    """
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        if not all(isinstance(entry, str) for entry in entries):
            raise ValueError(f"{path}: a JSON manifest is a list of key strings")
    else:
        lines = (line.strip() for line in text.splitlines())
        entries = [line for line in lines if line and not line.startswith("#")]
    keys: set[UUID] = set()
    for entry in entries:
        try:
            keys.add(parse_key(entry))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return frozenset(keys)


def _newest(files: Iterable[StoredFile]) -> float | None:
    return max((file.mtime for file in files if file.mtime is not None), default=None)


def _session(
    location: PreparedPath,
    name: str,
    groups: dict[str, list[StoredFile]],
    *,
    now: float,
    grace: float | None,
) -> Session:
    leases: list[tuple[LeaseRecord | None, float | None]] = []
    for file in groups["lease"]:
        try:
            record = read_lease(location, file.path)
        except FileNotFoundError:
            record = None  # deleted since the listing: its store is closing, or just closed
        leases.append((record, file.mtime))
    owned = groups["blob"] + groups["temp"]
    return Session(
        name=name,
        blobs=tuple(groups["blob"]),
        temp_files=tuple(groups["temp"]),
        leases=tuple(groups["lease"]),
        foreign=tuple(groups["foreign"]),
        liveness=judge(leases, _newest(owned), now=now, grace=grace),
    )


def find_sessions(
    location: PreparedPath, listing: Listing, *, now: float, grace: float | None = None
) -> tuple[Session, ...]:
    """Find the stores at a location on a filesystem without locks, and judge each.

    A store is the location itself when it holds leases or is named like a session
    (``fb-<32 hex>``), and each session prefix right below it. Local disk has none (its
    lock file tells), nor has a persist location (its marker). Reads each lease (one small
    GET each on an object store).

    Args:
        location: the location listed.
        listing: what `fb._inspect.list_location` found there.
        now: the current time, seconds since the epoch.
        grace: seconds without a sign of life after which a store is dead (default: three
            of its lease's refresh intervals; see `fb.backends._lease.judge`).

    Raises:
        OSError: a lease cannot be read; the message names it.
    """
    if listing.local:
        return ()
    sessions: list[Session] = []
    base = location.root.rstrip("/").rpartition("/")[2]
    if not listing.marker and (listing.leases or _SESSION.match(base)):
        groups = {
            "blob": list(listing.blobs),
            "temp": list(listing.temp_files),
            "lease": list(listing.leases),
            "foreign": [],
        }
        sessions.append(_session(location, "", groups, now=now, grace=grace))
    for name in listing.sessions:
        groups = {"blob": [], "temp": [], "lease": [], "foreign": []}
        marked = False
        for file in listing.foreign:
            if file.name.startswith(name + "/"):
                kind = _classify(file.name[len(name) + 1 :], regular=True)
                marked = marked or kind == "marker"
                groups.get(kind, groups["foreign"]).append(file)
        if marked:
            continue  # also a persist location: its blobs may be a save's, never collected
        sessions.append(_session(location, name, groups, now=now, grace=grace))
    return tuple(sessions)


def plan_gc(
    listing: Listing,
    *,
    locked: bool | None,
    manifest: frozenset[UUID] | None,
    min_age: float,
    now: float,
    sessions: tuple[Session, ...] = (),
) -> GcPlan:
    """Decide what ``fb gc`` deletes at a listed location; no I/O.

    - A cache directory whose lock a live store holds (``locked`` True): nothing.
    - A cache directory whose lock was free (``locked`` False, held by the caller while it
      lists and deletes): every blob and temporary file, as the next store would sweep them.
    - A store's location on a filesystem without locks (``sessions`` holds one named
      ``""``): every file of it once its store is dead, nothing while it is alive.
    - Elsewhere: temporary files at least ``min_age`` seconds old (younger ones may be a
      write in progress), and with a ``manifest``, the blobs whose keys it does not list;
      but none if it lists none of the blobs there (``refused`` says so).
    - In each session prefix below the location (the other ``sessions``): every file of a
      dead store; a live one's are left alone, as are foreign names there.

    Args:
        listing: what the location holds.
        locked: what `hold_lock` yielded.
        manifest: the keys to keep at a persist location, or None to keep every blob.
        min_age: how old a temporary file must be to be deleted where no lock tells.
        now: the current time, seconds since the epoch.
        sessions: what `find_sessions` found at the location.
    """
    delete: list[GcItem] = []
    recent: list[StoredFile] = []
    kept: list[StoredFile] = []
    missing: list[str] = []
    refused = None
    itself = next((session for session in sessions if not session.name), None)
    for session in sessions:
        if not session.liveness.alive:
            # Why the store is dead is said once, with the session (``sessions``).
            for kind, files in (
                ("blob", session.blobs),
                ("temporary file", session.temp_files),
                ("lease", session.leases),
            ):
                delete += [GcItem(file=f, reason=f"{kind} of a dead store") for f in files]
    if itself is not None:
        if itself.liveness.alive:
            kept = list(itself.blobs)
            recent = list(itself.temp_files)
    elif locked is True:
        kept = list(listing.blobs)
        recent = list(listing.temp_files)
    elif listing.kind == "cache" and locked is False:
        delete += [
            GcItem(file=f, reason="temporary file of a dead store") for f in listing.temp_files
        ]
        # Blobs in segment files go with their files.
        delete += [
            GcItem(file=f, reason="blob of a dead store") for f in listing.blobs if f.offset is None
        ]
        delete += [GcItem(file=f, reason="segment file of a dead store") for f in listing.segments]
    else:
        for file in listing.temp_files:
            if file.mtime is not None and now - file.mtime >= min_age:
                delete.append(GcItem(file=file, reason="leftover temporary file"))
            else:
                recent.append(file)
        present = {UUID(hex=file.key) for file in listing.blobs}
        if manifest is not None and present and not manifest & present:
            # Keeping none of the blobs is far more often a wrong manifest (or a wrong URL)
            # than a save of nothing: refuse rather than empty the location.
            refused = (
                f"the manifest lists none of the {len(present)} blob(s) here (a wrong "
                "manifest or location?): no blob deleted"
            )
            manifest = None
        if manifest is None:
            kept = list(listing.blobs)
        else:
            for file in listing.blobs:
                if UUID(hex=file.key) in manifest:
                    kept.append(file)
                else:
                    delete.append(GcItem(file=file, reason="not in the manifest"))
            missing = sorted(key.hex for key in manifest - present)
    # Leases go last: a deletion cut short leaves a store that still looks dead, not one
    # whose remaining blobs have lost the lease that dates them.
    order = {file.name: 1 for session in sessions for file in session.leases}
    in_sessions = {f.name for session in sessions if session.name for f in session.files}
    return GcPlan(
        kind=listing.kind,
        locked=locked,
        delete=tuple(sorted(delete, key=lambda i: (order.get(i.file.name, 0), i.file.name))),
        kept_recent=tuple(recent),
        kept_blobs=tuple(kept),
        missing=tuple(missing),
        foreign=tuple(file for file in listing.foreign if file.name not in in_sessions),
        refused=refused,
        sessions=sessions,
    )


def delete_files(location: PreparedPath, files: Iterable[StoredFile]) -> list[tuple[str, str]]:
    """Delete ``files`` (blobs, temporary files, leases); return (name, error) of failures.

    A file already gone counts as deleted. A name fb does not own is refused, whatever the
    caller passed. Names in a session prefix (``fb-<32 hex>/…``) are judged within it. On
    an object store, blobs go by bulk requests (a thousand keys each, on S3), then the
    leases one by one.
    """
    failures: list[tuple[str, str]] = []
    owned: list[StoredFile] = []
    for file in files:
        top, sep, rest = file.name.partition("/")
        name = rest if sep and _SESSION.match(top) else file.name
        if _classify(name, regular=True) not in ("blob", "temp", "lease", "segment"):
            failures.append((file.name, "not a name fb owns; refused"))
        else:
            owned.append(file)
    if location.is_object_store:
        leases = [file for file in owned if LEASE_NAME.match(file.name.rpartition("/")[2])]
        owned = _delete_bulk(location, [file for file in owned if file not in leases]) + leases
    for file in owned:
        try:
            if location.is_local:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file.path)
            else:
                url = location.fs.unstrip_protocol(file.path)
                with remote_errors(url), contextlib.suppress(FileNotFoundError):
                    location.fs.rm_file(file.path)
        except OSError as exc:
            failures.append((file.name, str(exc)))
    return failures


def _delete_bulk(location: PreparedPath, files: list[StoredFile]) -> list[StoredFile]:
    """Delete ``files`` from an object store in bulk; return those still to delete one by one.

    One request per thousand keys instead of one per key: a dead session may hold many
    thousands of blobs. S3 answers a bulk delete key by key and s3fs drops the failures, so
    what is left is found by listing the sessions again, and goes one by one (which reports
    its error); so does everything if the bulk request fails.
    """
    paths = {file.path for file in files}
    if not paths or any(char in path for path in paths for char in "*?["):
        return files  # fsspec would expand a glob character in a path: never in bulk
    fs = location.fs
    try:
        with remote_errors(location.url):
            fs.rm(sorted(paths))
            # A path is ``<session root>/xx/<key>``: list each session root once.
            roots = {path.rsplit("/", 2)[0] for path in paths}
            left = {found for root in roots for found in fs.find(root)} & paths
    except OSError:
        return files
    return [file for file in files if file.path in left]
