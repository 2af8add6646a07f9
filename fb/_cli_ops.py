"""The read-only commands of ``fb`` (ls, inspect, du, verify) and what every command shares.

The commands that change storage (demo, gc) live in `fb.cli`. They all read locations
through `fb._inspect` and never decode a payload. Exit codes: 0 when all is well, 1 when
problems were found (corrupt blobs, leftovers to clean up, a missing blob), 2 for a usage
error or when the command could not run (a location that does not exist, storage that
cannot be reached).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import attrs
import click

from . import _inspect
from ._inspect import BlobInfo, StoredFile
from ._persist import parse_key
from .backends import PreparedPath
from .backends._fbstore import _check_secret
from .exceptions import FbError, InvalidKeyError

__all__ = [
    "COMMANDS",
    "KIND_TEXT",
    "PROBLEMS",
    "CannotRunError",
    "emit_json",
    "human_age",
    "human_size",
    "location_options",
    "open_location",
    "storage_errors",
    "storage_options",
]

F = TypeVar("F", bound=Callable[..., Any])

ENV_OPTIONS = "FB_STORAGE_OPTIONS"
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)
PROBLEMS = 1
KIND_TEXT = {
    "cache": "cache directory",
    "persist": "persist location",
    "unknown": "unknown (neither a cache directory's lock file nor a persist marker)",
}


class CannotRunError(click.ClickException):
    """The command could not run: a location that does not exist, storage unreachable."""

    exit_code = 2


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn storage errors into `CannotRunError` (status 2), keeping their message."""
    try:
        yield
    except (OSError, FbError) as exc:
        raise CannotRunError(str(exc)) from exc


# -- options shared by every command ------------------------------------------------------------


def _set(options: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = options
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise click.UsageError(f"storage option {name!r} is not an object; cannot set {dotted}")
        node = child
    node[last] = value


def storage_options(url: str, pairs: Sequence[str], endpoint_url: str | None) -> dict[str, Any]:
    """Merge ``FB_STORAGE_OPTIONS``, ``--storage-option`` pairs and ``--endpoint-url``.

    Values are never echoed in errors: they may be credentials.
    """
    options: dict[str, Any] = {}
    env = os.environ.get(ENV_OPTIONS)
    if env:
        try:
            loaded = json.loads(env)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"{ENV_OPTIONS} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise click.UsageError(f"{ENV_OPTIONS} must hold a JSON object")
        options.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                "expected KEY=VALUE (the value is not shown)", param_hint="--storage-option"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        _set(options, key, value)
    if endpoint_url is not None:
        if not url.startswith(("s3://", "s3a://")):
            raise click.BadParameter("only for s3:// URLs", param_hint="--endpoint-url")
        _set(options, "client_kwargs.endpoint_url", endpoint_url)
    return options


def location_options(command: F) -> F:
    """Add the storage options and ``--json`` to a command taking a URL."""
    for decorator in reversed(
        (
            click.option(
                "--storage-option",
                "storage_option",
                multiple=True,
                metavar="KEY=VALUE",
                help="An fsspec storage option (repeatable). VALUE is parsed as JSON when it "
                "can be (true, 3, {...}), else taken as a string; a dotted KEY sets a nested "
                f"value (client_kwargs.region_name=eu-west-1). Merged over {ENV_OPTIONS}, "
                "a JSON object in the environment.",
            ),
            click.option(
                "--endpoint-url",
                metavar="URL",
                help="S3 only: the endpoint to reach (sets client_kwargs.endpoint_url).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        )
    ):
        command = decorator(command)
    return command


def open_location(url: str, pairs: Sequence[str], endpoint_url: str | None) -> PreparedPath:
    """Return the location ``url`` with the storage options of the command line."""
    options = storage_options(url, pairs, endpoint_url)
    try:
        return PreparedPath(url, **options)
    except (TypeError, ValueError, ImportError) as exc:
        shown = _USERINFO.sub(r"\1***@", url)  # a password in the URL is not echoed
        raise click.UsageError(f"cannot open {shown}: {exc}") from exc


def _secret(variable: str | None) -> bytes | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise click.BadParameter(f"${variable} is not set", param_hint="--secret-key-env")
    try:
        return _check_secret(value)
    except ValueError as exc:
        raise click.BadParameter(f"${variable}: {exc}", param_hint="--secret-key-env") from None


secret_option = click.option(
    "--secret-key-env",
    metavar="VAR",
    help="Check signatures with the secret key held by environment variable VAR (the key "
    "itself is never taken from the command line). Unsigned blobs then fail.",
)
jobs_option = click.option(
    "--jobs",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Blobs read at once (more helps on object stores).",
)
quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")


# -- output -------------------------------------------------------------------------------------


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on standard output."""
    click.echo(json.dumps(value, indent=2))


def human_size(nbytes: int) -> str:
    """Return ``nbytes`` as ``123 B``, ``1.5 KiB``, ``2.0 MiB`` and so on."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{nbytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(seconds: float | None) -> str:
    """Return an age as ``42s``, ``5m``, ``3h`` or ``12d`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for limit, unit, div in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // div)}{unit}"
    return f"{int(seconds // 86400)}d"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> None:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if side == ">" else cell.ljust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


def _blob_json(info: BlobInfo, now: float) -> dict[str, Any]:
    data = attrs.asdict(info)
    data["age_seconds"] = None if info.mtime is None else now - info.mtime
    data["ok"] = info.ok
    return data


# -- reading many blobs -------------------------------------------------------------------------


def _read_all(
    read: Callable[[StoredFile], BlobInfo],
    files: Sequence[StoredFile],
    *,
    jobs: int,
    label: str,
    show: bool,
) -> tuple[list[BlobInfo], list[str]]:
    """Read ``files`` with ``jobs`` threads; return the records and the names that vanished."""

    def one(file: StoredFile) -> BlobInfo | None:
        try:
            return read(file)
        except FileNotFoundError:
            return None  # deleted since the listing: a live store dropped it
        except OSError as exc:
            fields = {name: getattr(file, name) for name in ("name", "path", "size", "mtime")}
            return BlobInfo(key=file.key, **fields, error=f"cannot read: {exc}")

    infos: list[BlobInfo] = []
    vanished: list[str] = []
    with contextlib.ExitStack() as stack:
        bar = None
        if show and files:
            bar = stack.enter_context(
                click.progressbar(length=len(files), label=label, file=sys.stderr)
            )
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fb-cli")
        # On Ctrl-C, drop the reads not started rather than wait for all of them.
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        for file, info in zip(files, pool.map(one, files), strict=True):
            if info is None:
                vanished.append(file.name)
            else:
                infos.append(info)
            if bar is not None:
                bar.update(1)
    return infos, vanished


# -- commands -----------------------------------------------------------------------------------


@click.command("ls")
@click.argument("url")
@location_options
@jobs_option
def ls_command(
    url: str, storage_option: tuple[str, ...], endpoint_url: str | None, as_json: bool, jobs: int
) -> None:
    """List the blobs at URL: key, size, codec, signed or not, and age.

    URL is a cache directory or a persist location: a local path or any fsspec URL
    (s3://bucket/prefix, memory://…). Only each blob's header is read. Exits with 1 when a
    header cannot be read (fb verify tells more).
    """
    location = open_location(url, storage_option, endpoint_url)
    with storage_errors():
        listing = _inspect.list_location(location)
        infos, _ = _read_all(
            lambda file: _inspect.read_blob_header(location, file),
            listing.blobs,
            jobs=jobs,
            label="",
            show=False,
        )
    now = time.time()
    bad = [info for info in infos if not info.ok]
    if as_json:
        emit_json({"url": listing.url, "blobs": [_blob_json(info, now) for info in infos]})
    else:
        rows = [
            [
                info.key,
                human_size(info.size),
                info.codec or "?",
                "-" if info.signed is None else ("yes" if info.signed else "no"),
                human_age(None if info.mtime is None else now - info.mtime),
            ]
            for info in infos
        ]
        if rows:
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
    foreign = ", ".join(file.name for file in listing.foreign[:5])
    more = ", …" if len(listing.foreign) > 5 else ""
    for label, value in (
        ("location", listing.url),
        ("kind", KIND_TEXT[listing.kind]),
        ("lock", lock),
        ("blobs", f"{len(listing.blobs)}, {human_size(listing.blob_bytes)}"),
        ("temporary", f"{len(listing.temp_files)}, {human_size(temp_bytes)}"),
        ("foreign", f"{len(listing.foreign)}" + (f": {foreign}{more}" if foreign else "")),
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
        for name, value in fields.items():
            click.echo(f"{name:<15} {'-' if value is None else value}")
        click.echo(f"{'status':<15} {'ok' if info.ok else 'CORRUPT'}")
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


@click.command("verify", short_help="Check every blob's checksum (and signature).")
@click.argument("url")
@location_options
@secret_option
@jobs_option
@quiet_option
def verify_command(
    url: str,
    storage_option: tuple[str, ...],
    endpoint_url: str | None,
    as_json: bool,
    secret_key_env: str | None,
    jobs: int,
    quiet: bool,
) -> None:
    """Check every blob at URL: header, trailer and checksum, and signature with a key.

    Reads every byte of every blob (nothing is decoded). With --secret-key-env, signatures
    are checked too and unsigned blobs fail. Files named like blobs that are not fb blobs
    fail; other names are listed as foreign and left alone. Exits with 1 and lists the
    blobs that fail when any does.
    """
    location = open_location(url, storage_option, endpoint_url)
    secret = _secret(secret_key_env)
    with storage_errors():
        listing = _inspect.list_location(location)
        infos, vanished = _read_all(
            lambda file: _inspect.check_blob(location, file, secret=secret),
            listing.blobs,
            jobs=jobs,
            label="verify",
            show=not (quiet or as_json),
        )
    bad = [info for info in infos if not info.ok]
    if as_json:
        emit_json(
            {
                "url": listing.url,
                "checked": len(infos),
                "bytes": sum(info.size for info in infos),
                "signatures": secret is not None,
                "corrupt": [{"key": i.key, "name": i.name, "error": i.error} for i in bad],
                "vanished": vanished,
                "foreign": [file.name for file in listing.foreign],
            }
        )
    else:
        for info in bad:
            click.echo(f"CORRUPT {info.name}: {info.error}")
        what = "checksums and signatures" if secret is not None else "checksums"
        click.echo(
            f"{len(infos) - len(bad)}/{len(infos)} blob(s) sound ({what}), "
            f"{human_size(sum(info.size for info in infos))} read"
            + (f"; {len(bad)} CORRUPT" if bad else "")
        )
        if vanished:
            click.echo(f"{len(vanished)} blob(s) deleted while checking (a live store)")
        if listing.foreign:
            click.echo(f"{len(listing.foreign)} foreign name(s) left alone (not fb's)")
    if bad:
        sys.exit(PROBLEMS)


COMMANDS = (ls_command, inspect_command, du_command, verify_command)
