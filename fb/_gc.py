"""Clean-up of fb's locations without a store: the plan ``fb gc`` shows, and its deletions.

Built on the listings of ``_inspect.py``. A plan deletes only names fb owns: temporary
files old enough to be a crashed writer's, and, given a manifest of the keys to keep, the
blobs of a persist location that no save names. Foreign names are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

import attrs

from ._inspect import Kind, Listing, StoredFile, _classify
from ._persist import parse_key
from .backends._locations import remote_errors
from .backends._prepared_path import PreparedPath

__all__ = ["GcItem", "GcPlan", "delete_files", "plan_gc", "read_manifest"]


@attrs.frozen(kw_only=True)
class GcItem:
    """A file `plan_gc` would delete, and why."""

    file: StoredFile
    reason: str


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
    """

    kind: Kind
    locked: bool | None
    delete: tuple[GcItem, ...]
    kept_recent: tuple[StoredFile, ...]
    kept_blobs: tuple[StoredFile, ...]
    missing: tuple[str, ...]
    foreign: tuple[StoredFile, ...]
    refused: str | None = None


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


def plan_gc(
    listing: Listing,
    *,
    locked: bool | None,
    manifest: frozenset[UUID] | None,
    min_age: float,
    now: float,
) -> GcPlan:
    """Decide what ``fb gc`` deletes at a listed location; no I/O.

    - A cache directory whose lock a live store holds (``locked`` True): nothing.
    - A cache directory whose lock was free (``locked`` False, held by the caller while it
      lists and deletes): every blob and temporary file, as the next store would sweep them.
    - Elsewhere: temporary files at least ``min_age`` seconds old (younger ones may be a
      write in progress), and with a ``manifest``, the blobs whose keys it does not list;
      but none if it lists none of the blobs there (``refused`` says so).

    Args:
        listing: what the location holds.
        locked: what `hold_lock` yielded.
        manifest: the keys to keep at a persist location, or None to keep every blob.
        min_age: how old a temporary file must be to be deleted where no lock tells.
        now: the current time, seconds since the epoch.
    """
    delete: list[GcItem] = []
    recent: list[StoredFile] = []
    kept: list[StoredFile] = []
    missing: list[str] = []
    refused = None
    if locked is True:
        kept = list(listing.blobs)
        recent = list(listing.temp_files)
    elif listing.kind == "cache" and locked is False:
        delete += [
            GcItem(file=f, reason="temporary file of a dead store") for f in listing.temp_files
        ]
        delete += [GcItem(file=f, reason="blob of a dead store") for f in listing.blobs]
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
    return GcPlan(
        kind=listing.kind,
        locked=locked,
        delete=tuple(sorted(delete, key=lambda item: item.file.name)),
        kept_recent=tuple(recent),
        kept_blobs=tuple(kept),
        missing=tuple(missing),
        foreign=listing.foreign,
        refused=refused,
    )


def delete_files(location: PreparedPath, files: Iterable[StoredFile]) -> list[tuple[str, str]]:
    """Delete ``files`` (blobs and temporary files only); return (name, error) of failures.

    A file already gone counts as deleted. A name fb does not own is refused, whatever the
    caller passed.
    """
    failures: list[tuple[str, str]] = []
    for file in files:
        if _classify(file.name, regular=True) not in ("blob", "temp"):
            failures.append((file.name, "not a name fb owns; refused"))
            continue
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
