"""The read-only commands of ``fb``: ls, inspect, du and verify.

They read locations through `fb._inspect` and never decode a payload. The options, output
and exit codes every command shares are in `fb._cli_ops`; the commands that change storage
(demo, gc) are in `fb.cli`.
"""

from __future__ import annotations

import sys
import time
from typing import Literal
from uuid import UUID

import attrs
import click

from . import _inspect
from ._cli_ops import (
    KIND_TEXT,
    PROBLEMS,
    CannotRunError,
    _blob_json,
    _read_all,
    _secret,
    _table,
    emit_json,
    human_age,
    human_size,
    iso_time,
    jobs_option,
    location_options,
    name_list,
    open_location,
    quiet_option,
    secret_option,
    storage_errors,
)
from ._inspect import BlobInfo
from ._persist import parse_key
from ._shelf_layout import shelf_names
from .backends import PreparedPath
from .backends._fbstore import LOCK_NAME
from .backends._locations import MARKER_NAME
from .exceptions import InvalidKeyError

__all__ = ["COMMANDS"]


# -- commands -----------------------------------------------------------------------------------


@click.command("ls")
@click.argument("url")
@location_options
@jobs_option
def ls_command(
    url: str, storage_option: tuple[str, ...], endpoint_url: str | None, as_json: bool, jobs: int
) -> None:
    """List the blobs at URL: key, size, codec, signed or not, and age.

    URL is a cache directory, a persist location or a shelf (fb.Shelf; its names are shown
    beside their keys): a local path or any fsspec URL (s3://bucket/prefix, memory://…).
    Only each blob's header is read. Exits with 1 when a
    header cannot be read (fb verify tells more).
    """
    location = open_location(url, storage_option, endpoint_url)
    with storage_errors():
        listing = _inspect.list_location(location)
        names = shelf_names(location)  # a shelf's blobs: show each key's names
        infos, _ = _read_all(
            lambda file: _inspect.read_blob_header(location, file),
            listing.blobs,
            jobs=jobs,
            label="",
            show=False,
        )
    now = time.time()
    bad = [info for info in infos if not info.ok]
    named = {} if names is None else {key.hex: ", ".join(found) for key, found in names.items()}
    if as_json:
        blobs = [_blob_json(info, now) for info in infos]
        if names is not None:
            for blob, info in zip(blobs, infos, strict=True):
                blob["names"] = names.get(UUID(hex=info.key), [])
        emit_json({"url": listing.url, "blobs": blobs})
    else:
        rows = [
            [
                info.key,
                human_size(info.size),
                info.codec or "?",
                "-" if info.signed is None else ("yes" if info.signed else "no"),
                human_age(None if info.mtime is None else now - info.mtime),
            ]
            + ([named.get(info.key, "-")] if names is not None else [])
            for info in infos
        ]
        if rows and names is not None:
            _table(["KEY", "SIZE", "CODEC", "SIGNED", "AGE", "NAME"], rows, "<><<><")
        elif rows:
            _table(["KEY", "SIZE", "CODEC", "SIGNED", "AGE"], rows, "<><<>")
        click.echo(f"{len(infos)} blob(s), {human_size(sum(i.size for i in infos))}")
        for info in bad:
            click.echo(f"unreadable header: {info.name}: {info.error}", err=True)
    if bad:
        sys.exit(PROBLEMS)


def _summary(location: PreparedPath, as_json: bool) -> None:
    with storage_errors():
        listing = _inspect.list_location(location)
        with _inspect.hold_lock(location) as held:
            pass  # only probed: released at once
        pid = _inspect.lock_owner(location)
    temp_bytes = sum(file.size for file in listing.temp_files)
    if as_json:
        emit_json(
            {
                "url": listing.url,
                "kind": listing.kind,
                "lock": {"file": listing.lock_file, "held": held, "pid": pid},
                "marker": listing.marker,
                "blobs": len(listing.blobs),
                "blob_bytes": listing.blob_bytes,
                "temp_files": len(listing.temp_files),
                "temp_bytes": temp_bytes,
                "foreign": [file.name for file in listing.foreign],
                "sessions": list(listing.sessions),
            }
        )
        return
    if held is None:
        lock = "-" if not listing.lock_file else "cannot be checked on this filesystem"
    elif held:
        lock = f"held by a live store (pid {pid})" if pid else "held by a live store"
    else:
        lock = "free: no live store owns the directory" + (
            f" (last owner pid {pid})" if pid else ""
        )
    foreign = name_list([file.name for file in listing.foreign], limit=5)
    for label, value in (
        ("location", listing.url),
        ("kind", KIND_TEXT[listing.kind]),
        ("lock", lock),
        ("blobs", f"{len(listing.blobs)}, {human_size(listing.blob_bytes)}"),
        ("temporary", f"{len(listing.temp_files)}, {human_size(temp_bytes)}"),
        ("foreign", f"{len(listing.foreign)}" + (f": {foreign}" if foreign else "")),
    ):
        click.echo(f"{label:<10} {value}")
    if listing.sessions:
        click.echo(
            f"sessions   {len(listing.sessions)} open_pool prefix(es), each a location of its "
            f"own: {', '.join(listing.sessions[:3])}{', …' if len(listing.sessions) > 3 else ''}"
        )


@click.command("inspect")
@click.argument("url")
@click.argument("key", required=False)
@location_options
@secret_option
def inspect_command(
    url: str,
    key: str | None,
    storage_option: tuple[str, ...],
    endpoint_url: str | None,
    as_json: bool,
    secret_key_env: str | None,
) -> None:
    """Summarise the location URL, or check the blob KEY there.

    Without KEY: the kind of location (a cache directory, which has a lock file; a persist
    location, which has fb's marker; or unknown), whether a live store holds the lock, and
    how many blobs, temporary files and foreign names it holds.

    With KEY (32 hex digits): the blob's header (format version, flags, codec, signed),
    its trailer (payload length, checksum), its size, and whether its checksum (and, with
    --secret-key-env, its signature) holds. Exits with 1 when it does not, or when there is
    no blob KEY.
    """
    location = open_location(url, storage_option, endpoint_url)
    if key is None:
        _summary(location, as_json)
        return
    try:
        parse_key(key)
    except InvalidKeyError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from None
    secret = _secret(secret_key_env)
    with storage_errors():
        file = _inspect.find_blob(location, key)
    if file is None:
        click.echo(f"Error: no blob {key} at {location.url}", err=True)
        sys.exit(PROBLEMS)
    with storage_errors():
        info = _inspect.check_blob(location, file, secret=secret)
    if as_json:
        emit_json({"url": location.url, **_blob_json(info, time.time())})
    else:
        fields = attrs.asdict(info)
        for name, spec in (("checksum", "#018x"), ("flags", "#04x")):
            if fields[name] is not None:
                fields[name] = format(fields[name], spec)
        fields["mtime"] = iso_time(info.mtime)
        fields["status"] = "ok" if info.ok else info.status.upper()
        width = max(len(name) for name in fields)
        for name, value in fields.items():
            click.echo(f"{name:<{width}}  {'-' if value is None else value}")
    if not info.ok:
        sys.exit(PROBLEMS)


@click.command("du")
@click.argument("url")
@location_options
@click.option(
    "--by",
    type=click.Choice(["codec", "shard"]),
    default="codec",
    show_default=True,
    help="Group by the codec that wrote each blob (reads each header) or by shard.",
)
@jobs_option
@quiet_option
def du_command(
    url: str,
    storage_option: tuple[str, ...],
    endpoint_url: str | None,
    as_json: bool,
    by: Literal["codec", "shard"],
    jobs: int,
    quiet: bool,
) -> None:
    """Show how many blobs and bytes URL holds, by codec or by shard.

    Temporary files and foreign names are counted apart. Exits with 1 when a header
    cannot be read (its blob counts under the codec "?").
    """
    location = open_location(url, storage_option, endpoint_url)
    with storage_errors():
        listing = _inspect.list_location(location)
        if by == "codec":
            infos, _ = _read_all(
                lambda file: _inspect.read_blob_header(location, file),
                listing.blobs,
                jobs=jobs,
                label="headers",
                show=not (quiet or as_json),
            )
        else:
            infos = [
                BlobInfo(key=f.key, name=f.name, path=f.path, size=f.size, mtime=f.mtime)
                for f in listing.blobs
            ]
    groups = _inspect.usage(infos, by)
    extra = {
        "temp_files": (len(listing.temp_files), sum(f.size for f in listing.temp_files)),
        "foreign": (len(listing.foreign), sum(f.size for f in listing.foreign)),
    }
    total = (len(infos), sum(info.size for info in infos))
    if as_json:
        emit_json(
            {
                "url": listing.url,
                "by": by,
                "groups": [attrs.asdict(group) for group in groups],
                "total": {"blobs": total[0], "bytes": total[1]},
                **{name: {"count": n, "bytes": b} for name, (n, b) in extra.items()},
            }
        )
    else:
        rows = [[g.name, str(g.blobs), human_size(g.bytes), str(g.bytes)] for g in groups]
        rows.append(["total", str(total[0]), human_size(total[1]), str(total[1])])
        _table([by.upper(), "BLOBS", "SIZE", "BYTES"], rows, "<>>>")
        for name, (count, nbytes) in extra.items():
            if count:
                click.echo(f"and {count} {name.replace('_', ' ')}, {human_size(nbytes)}")
    if any(info.codec is None for info in infos) and by == "codec":
        sys.exit(PROBLEMS)


def _check_fb_location(listing: _inspect.Listing) -> None:
    """Refuse a location that holds nothing of fb's: most likely a wrong URL."""
    if listing.kind != "unknown" or listing.blobs or listing.temp_files:
        return
    sessions = (
        f"; it holds {len(listing.sessions)} open_pool session prefix(es), each a location "
        f"to verify on its own: {name_list(list(listing.sessions), limit=3)}"
        if listing.sessions
        else ""
    )
    raise CannotRunError(
        f"{listing.url} is not an fb location: no blob, no cache lock file ({LOCK_NAME}) and "
        f"no persist marker ({MARKER_NAME}){sessions}; check the URL, or pass --allow-empty"
    )


@click.command("verify", short_help="Check every blob's checksum (and signature).")
@click.argument("url")
@location_options
@secret_option
@jobs_option
@quiet_option
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Accept a location that holds nothing of fb's (no blob, lock file or persist "
    "marker). Without it, such a location is an error (status 2): a check pointed at the "
    "wrong place must not pass.",
)
def verify_command(
    url: str,
    storage_option: tuple[str, ...],
    endpoint_url: str | None,
    as_json: bool,
    secret_key_env: str | None,
    jobs: int,
    quiet: bool,
    allow_empty: bool,
) -> None:
    """Check every blob at URL: header, trailer and checksum, and signature with a key.

    Reads every byte of every blob (nothing is decoded). With --secret-key-env, signatures
    are checked too and unsigned blobs fail (as UNSIGNED). Files named like blobs that are
    not fb blobs fail (as CORRUPT); other names are listed as foreign and left alone.
    Exits with 1 and lists the blobs that fail when any does; with 2 when URL is not an fb
    location (see --allow-empty).
    """
    location = open_location(url, storage_option, endpoint_url)
    secret = _secret(secret_key_env)
    with storage_errors():
        listing = _inspect.list_location(location)
        if not allow_empty:
            _check_fb_location(listing)
        infos, vanished = _read_all(
            lambda file: _inspect.check_blob(location, file, secret=secret),
            listing.blobs,
            jobs=jobs,
            label="verify",
            show=not (quiet or as_json),
        )
    bad = [info for info in infos if not info.ok]
    failed = {
        status: [info for info in bad if info.status == status]
        for status in ("corrupt", "unsigned")
    }
    if as_json:
        emit_json(
            {
                "url": listing.url,
                "checked": len(infos),
                "bytes": sum(info.size for info in infos),
                "signatures": secret is not None,
                **{
                    status: [{"key": i.key, "name": i.name, "error": i.error} for i in group]
                    for status, group in failed.items()
                },
                "vanished": vanished,
                "foreign": [file.name for file in listing.foreign],
            }
        )
    else:
        for info in bad:
            click.echo(f"{info.status.upper()} {info.name}: {info.error}")
        what = "checksums and signatures" if secret is not None else "checksums"
        click.echo(
            f"{len(infos) - len(bad)}/{len(infos)} blob(s) sound ({what}), "
            f"{human_size(sum(info.size for info in infos))} read"
            + "".join(
                f"; {len(group)} {status.upper()}" for status, group in failed.items() if group
            )
        )
        if vanished:
            click.echo(f"{len(vanished)} blob(s) deleted while checking (a live store)")
        if listing.foreign:
            names = name_list([file.name for file in listing.foreign])
            click.echo(f"{len(listing.foreign)} foreign name(s) left alone (not fb's): {names}")
    if bad:
        sys.exit(PROBLEMS)


COMMANDS = (ls_command, inspect_command, du_command, verify_command)
