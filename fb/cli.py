"""The ``fb`` command line: the group, and the commands that write (demo) or delete (gc).

The read-only commands are in `fb._cli_read`, the options every command shares in
`fb._cli_ops`.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import click

from . import __version__, _gc, _inspect
from ._bench import bench
from ._cli_ops import (
    KIND_TEXT,
    PROBLEMS,
    emit_json,
    human_size,
    location_options,
    open_location,
    storage_errors,
)
from ._cli_read import COMMANDS
from ._handle import Fb
from ._pool import FBPool
from ._shelf_layout import shelf_names
from ._store import BackingStore
from .backends import FBStore, PreparedPath
from .backends._lease import DEFAULT_INTERVAL, GRACE_INTERVALS
from .codecs import get_codec
from .exceptions import FbError
from .typing import Codec

__all__ = ["main"]

MIB = 1 << 20
MAX_ITEM_KIB = 1 << 18  # 256 MiB: the demo holds a few objects' worth of noise in memory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fb")
def main() -> None:
    """fb: keep hot objects in memory, spill cold ones to disk.

    Run `fb demo` to see it work on your machine. The other commands look after the
    locations fb writes: ls, inspect and du read them, verify checks every blob, gc
    cleans up after crashed processes. Every command takes --help and --json; exit
    status 0 means all is well, 1 that problems were found, 2 a usage error or a
    location that cannot be read.
    """


for _command in COMMANDS:
    main.add_command(_command)
main.add_command(bench)


class _Payloads:
    """Deterministic, distinct objects that cost a memcpy to make and to check."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._noise = random.Random(seed).randbytes(max(size, 8 * MIB) + size)
        self._span = len(self._noise) - size

    def make(self, index: int) -> bytes:
        offset = (index * 7919 * 64) % self._span
        return index.to_bytes(8, "little") + self._noise[offset + 8 : offset + self.size]


@contextlib.contextmanager
def _workdir(directory: Path | None) -> Iterator[Path]:
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="fb-demo-") as tmp:
            yield Path(tmp)
        return
    with storage_errors():
        directory.mkdir(parents=True, exist_ok=True)
    yield directory.resolve()


def _demo_codec(ctx: click.Context, param: click.Parameter, spec: str) -> Codec[Any]:
    """Build the codec ``spec`` names, and refuse it up front unless it stores the demo's bytes."""
    try:
        codec = get_codec(spec)
    except (LookupError, ImportError, FbError) as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    sample = b"fb demo \x00\xff" * 8
    buffer = io.BytesIO()
    try:
        codec.dump(sample, buffer)
        buffer.seek(0)
        same = codec.load(buffer) == sample
    except Exception as exc:
        same, why = False, f": {exc}"
    else:
        why = ": it gives back another value"
    if not same:
        raise click.BadParameter(
            f"codec {spec!r} cannot store the demo's values, which are bytes objects{why}; "
            "try pickle, msgpack, zstd:pickle or lz4:msgpack",
            ctx,
            param,
        )
    return codec


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds if seconds > 0 else float("inf")


@main.command()
@click.option(
    "--total-mib",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="How much data the demo creates, in MiB.",
)
@click.option(
    "--item-kib",
    type=click.IntRange(1, MAX_ITEM_KIB),
    default=1024,
    show_default=True,
    help="Size of each object, in KiB.",
)
@click.option(
    "--budget",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="Share of the data allowed in memory (max_bytes = budget x total).",
)
@click.option(
    "--reads",
    type=click.IntRange(0),
    default=None,
    help="Random reads after the inserts (default: twice the number of objects).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the cache in DIR/cache (default: in a fresh temporary directory, removed "
    "afterwards).",
)
@click.option(
    "--codec",
    default="pickle",
    show_default=True,
    callback=_demo_codec,
    help="Codec name; one that stores bytes objects (pickle, msgpack, zstd:pickle, ...).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Worker threads for background write-back.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(
    total_mib: int,
    item_kib: int,
    budget: float,
    reads: int | None,
    directory: Path | None,
    codec: Codec[Any],
    workers: int,
    seed: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Push a realistic workload through a small memory budget and verify every value.

    The demo inserts TOTAL_MIB of distinct byte objects into a pool whose byte budget is
    BUDGET of that, so most objects are spilled to the cache directory; then it reads
    objects back in random order and compares each, byte for byte, with what was inserted.
    It ends with the pool's statistics, the throughput of each phase, and where the cache
    was (and what is left there). Progress bars go to standard error.
    """
    item_bytes = item_kib * 1024
    count = max(1, total_mib * MIB // item_bytes)
    total = count * item_bytes
    n_reads = 2 * count if reads is None else reads
    max_bytes = int(total * budget)
    rng = random.Random(seed)
    hidden = quiet or as_json

    with _workdir(directory) as work:
        cache_dir = work / "cache"
        with storage_errors():  # a cache directory that is a file, or that a live store owns
            strategy: FBStore[bytes] = FBStore(codec, PreparedPath(cache_dir))
        with BackingStore(strategy, max_workers=workers) as store:
            pool: FBPool[bytes] = FBPool(store, max_bytes=max_bytes)
            payloads = _Payloads(item_bytes, seed)
            handles: list[Fb[bytes]] = []
            start = time.perf_counter()
            with click.progressbar(
                length=count, label="insert", hidden=hidden, file=sys.stderr
            ) as bar:
                for _ in range(count):
                    handles.append(pool.insert(payloads.make(len(handles))))
                    bar.update(1)
            store.finished()
            insert_s = time.perf_counter() - start

            order = [rng.randrange(count) for _ in range(n_reads)]
            bad = 0
            start = time.perf_counter()
            with click.progressbar(
                length=n_reads, label="read  ", hidden=hidden, file=sys.stderr
            ) as bar:
                for index in order:
                    with handles[index].load() as value:
                        if value != payloads.make(index):
                            bad += 1
                    bar.update(1)
            read_s = time.perf_counter() - start
            stats = pool.statistics()
            for handle in handles:
                handle.close()
            store.finished()
        left = _inspect.list_location(PreparedPath(cache_dir)).blobs

    summary: dict[str, Any] = {
        "objects": count,
        "object_bytes": item_bytes,
        "total_bytes": total,
        "budget_bytes": max_bytes,
        "reads": n_reads,
        "verified": n_reads - bad,
        "corrupt": bad,
        "insert_seconds": insert_s,
        "insert_mib_s": _mbps(total, insert_s),
        "read_seconds": read_s,
        "read_mib_s": _mbps(n_reads * item_bytes, read_s),
        "cache": {
            "path": str(cache_dir),
            "kept": directory is not None,
            "blobs_left": len(left),
            "bytes_left": sum(file.size for file in left),
        },
        "statistics": {
            name: getattr(stats, name)
            for name in (
                "hits",
                "misses",
                "loads",
                "stores",
                "evictions_clean",
                "evictions_dirty",
                "bytes_written",
                "write_errors",
                "load_errors",
            )
        },
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        _demo_report(summary, item_kib, budget, stats.hit_ratio)
    if bad:
        raise SystemExit(1)


def _demo_report(summary: dict[str, Any], item_kib: int, budget: float, hit_ratio: float) -> None:
    s, cache = summary["statistics"], summary["cache"]
    if cache["kept"]:
        where = (
            f"kept, {cache['blobs_left']} blob(s) left, {human_size(cache['bytes_left'])} "
            "(closing a handle deletes its blob)"
        )
    else:
        where = "a temporary directory, now removed (--dir keeps it)"
    click.echo(
        f"{summary['objects']} objects x {item_kib} KiB = {human_size(summary['total_bytes'])} "
        f"through a {human_size(summary['budget_bytes'])} budget ({budget:.0%})\n"
        f"  insert: {summary['insert_seconds']:6.2f} s  {summary['insert_mib_s']:8.1f} MiB/s "
        f"(includes draining write-back)\n"
        f"  read:   {summary['read_seconds']:6.2f} s  {summary['read_mib_s']:8.1f} MiB/s  "
        f"{summary['reads']} random reads, hit ratio {hit_ratio:.0%}\n"
        f"  stores {s['stores']}, loads {s['loads']}, evictions "
        f"{s['evictions_dirty']} dirty + {s['evictions_clean']} clean, "
        f"{human_size(s['bytes_written'])} written\n"
        f"  verified {summary['verified']}/{summary['reads']} reads"
        + (f", {summary['corrupt']} CORRUPT" if summary["corrupt"] else "")
        + f"\n  cache:  {cache['path']} ({where})"
    )


@main.command("gc", short_help="Find leftovers of dead stores and orphans; --yes deletes.")
@click.argument("url")
@location_options
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Keys to keep at a persist location (a JSON list, or one 32-hex key per line); "
    "blobs it does not list are deleted.",
)
@click.option(
    "--min-age",
    type=click.FloatRange(0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Where no lock tells whether a writer is alive, delete only temporary files at "
    "least this old.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="Off local disk, a store is dead once its lease (or, without one, its newest "
    f"file) is this old.  [default: {GRACE_INTERVALS} refresh intervals of its lease, "
    f"{GRACE_INTERVALS * DEFAULT_INTERVAL:g} s without one]",
)
@click.option("--yes", is_flag=True, help="Delete (the default is a dry run).")
def gc_command(
    url: str,
    storage_option: tuple[str, ...],
    endpoint_url: str | None,
    as_json: bool,
    manifest: Path | None,
    min_age: float,
    grace: float | None,
    yes: bool,
) -> None:
    """Find (and with --yes delete) what crashed or finished processes left at URL.

    In a cache directory whose lock no live store holds: every blob and temporary file
    (what the next store to open it would sweep). The lock is held while gc works, so no
    store can open the directory meanwhile. If a live store holds it, nothing is touched.

    Off local disk (S3, memory://...), where no lock can tell, a store keeps a lease at its
    prefix, refreshed while it lives; URL may be a store's prefix, or an open_pool URL
    whose session prefixes (fb-<32 hex>, fb-dask-<32 hex>) are judged one by one. The
    files of a store whose lease is older than --grace (or that has none and no file
    younger than --grace) are deleted, its lease last. A store with a fresh lease is never
    touched.

    In a shelf (fb.Shelf): its blobs that no name points to and older than --min-age
    (left by a writer killed mid-set, or by two writers of one name), and temporary files
    older than --min-age.

    In a persist location: temporary files older than --min-age, and with --manifest the
    blobs whose keys it does not list (none if it lists none of them: a wrong manifest is
    likelier than an empty save). Run it only while no process saves there.

    Names fb does not own are listed and never deleted. A dry run exits with 1 when it finds
    something to delete; 1 also when a deletion fails, or the manifest lists missing keys
    or none of the blobs.
    """
    location = open_location(url, storage_option, endpoint_url)
    keep = None
    if manifest is not None:
        try:
            keep = _gc.read_manifest(manifest)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--manifest") from None
    now = time.time()
    with storage_errors(), _inspect.hold_lock(location) as locked:
        listing = _inspect.list_location(location)
        names = shelf_names(location)
        if names is not None:
            # A shelf: its records are the manifest. A blob younger than --min-age may be a
            # set whose record is not written yet, so it is kept too.
            if keep is not None:
                raise click.UsageError("a shelf's names are its manifest: drop --manifest")
            keep = frozenset(names) | {
                UUID(hex=f.key) for f in listing.blobs if f.mtime is None or now - f.mtime < min_age
            }
        sessions = _gc.find_sessions(location, listing, now=now, grace=grace)
        if keep is not None and (listing.kind == "cache" or any(not s.name for s in sessions)):
            raise click.UsageError("--manifest is for persist locations, not cache directories")
        plan = _gc.plan_gc(
            listing, locked=locked, manifest=keep, min_age=min_age, now=now, sessions=sessions
        )
        failures = _gc.delete_files(location, [i.file for i in plan.delete]) if yes else []
    _gc_report(listing.url, plan, yes, failures, as_json)
    if (plan.delete and not yes) or failures or plan.missing or plan.refused:
        sys.exit(PROBLEMS)


def _session_json(session: _gc.Session) -> dict[str, Any]:
    holder = session.holder
    return {
        "name": session.name,
        "alive": session.liveness.alive,
        "reason": session.liveness.reason,
        "last_seen": session.liveness.last_seen,
        "grace": session.liveness.grace,
        "holder": None if holder is None else attrs.asdict(holder),
        "blobs": len(session.blobs),
        "bytes": sum(file.size for file in session.files),
        "temp_files": len(session.temp_files),
        "leases": len(session.leases),
        "foreign": [file.name for file in session.foreign],
    }


def _gc_report(
    url: str, plan: _gc.GcPlan, yes: bool, failures: list[tuple[str, str]], as_json: bool
) -> None:
    if as_json:
        emit_json(
            {
                "url": url,
                "kind": plan.kind,
                "locked": plan.locked,
                "dry_run": not yes,
                "delete": [
                    {"name": i.file.name, "size": i.file.size, "reason": i.reason}
                    for i in plan.delete
                ],
                "deleted": len(plan.delete) - len(failures) if yes else 0,
                "failed": [{"name": name, "error": error} for name, error in failures],
                "kept_blobs": len(plan.kept_blobs),
                "kept_recent": [file.name for file in plan.kept_recent],
                "missing": list(plan.missing),
                "foreign": [file.name for file in plan.foreign],
                "refused": plan.refused,
                "sessions": [_session_json(session) for session in plan.sessions],
            }
        )
        return
    click.echo(f"{url}: {KIND_TEXT[plan.kind]}")
    if plan.locked:
        click.echo("a live store holds the lock: the directory is in use; nothing touched")
        return
    for session in plan.sessions:
        state = "live, left alone" if session.liveness.alive else "dead"
        size = human_size(sum(file.size for file in session.files))
        click.echo(
            f"{'session ' + session.name if session.name else 'store'}: {state}: "
            f"{session.liveness.reason}; {len(session.blobs)} blob(s), {size}"
        )
    verb = "deleted" if yes else "would delete"
    for item in plan.delete:
        click.echo(f"{verb} {item.file.name} ({human_size(item.file.size)}): {item.reason}")
    nbytes = sum(item.file.size for item in plan.delete)
    click.echo(f"{verb} {len(plan.delete)} file(s), {human_size(nbytes)}")
    for name, error in failures:
        click.echo(f"FAILED {name}: {error}", err=True)
    if plan.kept_blobs:
        click.echo(f"kept {len(plan.kept_blobs)} blob(s)")
    if plan.kept_recent:
        live = any(not session.name for session in plan.sessions)
        why = "of a live store" if live else "younger than --min-age"
        click.echo(f"kept {len(plan.kept_recent)} temporary file(s) {why}")
    if plan.refused:
        click.echo(f"REFUSED: {plan.refused}")
    for key in plan.missing:
        click.echo(f"MISSING {key}: listed in the manifest, no blob here")
    for file in plan.foreign:
        click.echo(f"left alone {file.name}: not a name fb owns")
    if plan.delete and not yes:
        click.echo("dry run: nothing deleted; run again with --yes to delete")
