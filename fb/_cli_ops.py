"""What every ``fb`` command shares: errors, storage options, output, reading many blobs.

The read-only commands (ls, inspect, du, verify) live in `fb._cli_read`; the commands that
change storage (demo, gc) in `fb.cli`. They all read locations through `fb._inspect` and
never decode a payload. Exit codes: 0 when all is well, 1 when problems were found (corrupt
blobs, leftovers to clean up, a missing blob), 2 for a usage error or when the command could
not run (a location that does not exist, storage that cannot be reached).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import attrs
import click

from ._blob import check_secret
from ._inspect import BlobInfo, StoredFile
from ._shelf_layout import shelf_blobs
from .backends import PreparedPath
from .exceptions import FbError

__all__ = [
    "KIND_TEXT",
    "PROBLEMS",
    "CannotRunError",
    "emit_json",
    "human_age",
    "human_size",
    "iso_time",
    "location_options",
    "name_list",
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
    """Return the location ``url`` with the storage options of the command line.

    For a shelf's root, return its blob location.
    """
    options = storage_options(url, pairs, endpoint_url)
    try:
        location = PreparedPath(url, storage_options=options)
    except Exception as exc:
        # A filesystem's constructor can raise anything for a URL or an option it does not
        # take (zip:// on a file that is not a zip, fs=1): bad input all the same.
        shown = _USERINFO.sub(r"\1***@", url)  # a password in the URL is not echoed
        what = (
            ""
            if isinstance(exc, TypeError | ValueError | ImportError)
            else f"{type(exc).__name__}: "
        )
        raise click.UsageError(f"cannot open {shown}: {what}{exc}") from exc
    # A shelf (fb.Shelf) keeps its blobs in a persist location below its root, beside its
    # name records: the commands work on the blobs, and ls and gc read the names too.
    return shelf_blobs(location) or location


def _secret(variable: str | None) -> bytes | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise click.BadParameter(f"${variable} is not set", param_hint="--secret-key-env")
    try:
        return check_secret(value)
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
    data["status"] = info.status
    return data


def iso_time(timestamp: float | None) -> str:
    """Return a POSIX time as ISO 8601 local time with its UTC offset (``-`` when unknown)."""
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def name_list(names: Sequence[str], limit: int = 10) -> str:
    """Return ``names`` comma-separated, the first ``limit`` of them and ``… and N more``."""
    shown = ", ".join(names[:limit])
    return shown + (f", … and {len(names) - limit} more" if len(names) > limit else "")


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
