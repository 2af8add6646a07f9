"""Dask's own SpillBuffer against fb's FbSpillBuffer (local disk, and S3 on moto).

    .venv/bin/python benchmarks/dask_spill.py [--n 4000] [--chunk 500] [--workers 2]
        [--threads 2] [--budget-mib 64] [--monitor] [--skip-s3]

One workload, three runs, each on a fresh ``LocalCluster`` of worker processes:

- ``x = random((n, n))`` persisted, ``y = x + x.T`` persisted (two arrays of ``8 n²`` bytes,
  several times the workers' budgets together), then ``y.sum()``, ``x.sum()`` and
  ``y.mean(axis=0)`` (each reads every chunk back), checked against each other;
- ``dask``: distributed's default ``SpillBuffer`` with ``target`` = the budget;
- ``fb local``: ``FbSpillBuffer`` with ``max_bytes`` = the budget, spilling to a local
  temporary directory;
- ``fb s3``: the same spilling to ``python -m moto.server`` in a separate process (so the
  server does not share the client's interpreter), through s3fs.

The memory limit is set so that the default ``SpillBuffer``'s target (60 % of it) equals the
budget. Spilling on process memory (the memory monitor calling ``evict``) is off unless
``--monitor`` is given, so both buffers spill by their budget alone. Prints the wall time of
the computation (cluster start-up excluded) and the bytes each buffer wrote and read back.
Moto is an in-memory emulator: the S3 row shows fb's overhead per request, not AWS speed.

    .venv/bin/python benchmarks/dask_spill.py --end-to-end [--runs 3] [--chunks 80]
        [--limit-mb 300] [--skip-s3]

The end-to-end run asks whether a worker stays alive: 2 worker processes x 1 thread with a
small memory limit and distributed's memory thresholds all on (spill 70 %, pause 80 %,
restart 95 %), ``--chunks`` results of 20 MB persisted and summed (1.6 GB by default).
``dask`` is distributed's default SpillBuffer; fb runs at the setting docs/dask.md gives
(``max_bytes`` = 60 % of the limit less 100 MB; on S3 less ``--s3-headroom-mb`` as well,
24 MB, for the upload parts in flight). Each configuration runs ``--runs`` times
on a fresh cluster; the table shows per run the wall time, the workers restarted (as the
scheduler saw them: workers removed), the workers that paused, the highest peak RSS of a
surviving worker, and the bytes written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait

from fb.integrations.dask import FbSpillBuffer, FbSpillPlugin
from fb.testing.moto import moto_server_process as moto_process

# The bucket helpers of the S3 benchmark next to this file.
sys.path.insert(0, str(Path(__file__).parent))
from s3 import make_bucket, options

TARGET_FRACTION = 0.6  # distributed.worker.memory.target's default


S3_HEADROOM_MB = 24
"""End-to-end: how much less ``max_bytes`` is on S3 than on local disk (see docs/dask.md)."""


def worker_counts(dask_worker: Any) -> dict[str, float]:
    """Bytes and counts a worker's data mapping wrote and read (run through Client.run)."""
    data = dask_worker.data
    if isinstance(data, FbSpillBuffer):
        stats = data.statistics()
        return {
            "written": stats.bytes_written,
            "read": stats.bytes_loaded,
            "stores": stats.stores,
            "loads": stats.loads,
        }
    metrics = data.cumulative_metrics
    return {
        "written": metrics.get(("disk-write", "bytes"), 0),
        "read": metrics.get(("disk-read", "bytes"), 0),
        "stores": metrics.get(("disk-write", "count"), 0),
        "loads": metrics.get(("disk-read", "count"), 0),
    }


def workload(client: Client, n: int, chunk: int) -> float:
    """Run the computation; return its wall time in seconds."""
    start = time.perf_counter()
    x = da.random.RandomState(0).random_sample((n, n), chunks=(chunk, chunk)).persist()
    wait(x)
    y = (x + x.T).persist()
    wait(y)
    total, half, means = client.compute([y.sum(), x.sum(), y.mean(axis=0)], sync=True)
    seconds = time.perf_counter() - start
    assert np.isclose(total, 2 * half), (total, half)
    assert np.isclose(means.sum() * n, total), (means.sum(), total)
    del x, y
    return seconds


def run(
    label: str, data: Any, args: argparse.Namespace, memory_limit: int
) -> dict[str, float | str]:
    """Start a cluster with ``data`` as each worker's mapping, time the workload."""
    config = {
        "distributed.worker.memory.spill": 0.7 if args.monitor else False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": False,
    }
    extra: dict[str, Any] = {} if data is None else {"data": data, "plugins": {FbSpillPlugin()}}
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=None,
            **extra,
        ) as cluster,
        Client(cluster) as client,
    ):
        seconds = workload(client, args.n, args.chunk)
        counts = client.run(worker_counts).values()
    summed = {key: sum(c[key] for c in counts) for key in ("written", "read", "stores", "loads")}
    return {"buffer": label, "seconds": seconds, **summed}


MB = 10**6


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (run on the workers)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lifecycle_events(dask_scheduler: Any) -> dict[str, int]:
    """Workers removed and pauses, from the scheduler's event log."""
    topics = ("all", *dask_scheduler.workers)
    events = [m for t in topics for _, m in dask_scheduler.get_events(t) if isinstance(m, dict)]
    return {
        "removed": sum(m.get("action") == "remove-worker" for m in events),
        "paused": sum(m.get("status") == "paused" for m in events),
    }


def end_to_end_run(label: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One run of the end-to-end workload on a fresh cluster."""
    extra: dict[str, Any] = {} if data is None else {"data": data, "plugins": {FbSpillPlugin()}}
    row: dict[str, Any] = {"buffer": label}
    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.limit_mb * MB,
            dashboard_address=None,
            **extra,
        ) as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter()
        x = da.random.RandomState(0).random_sample((args.chunks * 2500, 1000), chunks=(2500, 1000))
        try:
            x = x.persist()
            wait(x, timeout=args.timeout)
            total = client.compute(x.sum()).result(timeout=args.timeout)
            assert np.isclose(total, args.chunks * 2500 * 1000 / 2, rtol=1e-3), total
            row["seconds"] = time.perf_counter() - start
        except Exception as exc:  # a hung or failed run is a result too
            row["seconds"] = float("nan")
            row["error"] = type(exc).__name__
        row.update(client.run_on_scheduler(lifecycle_events))
        peaks = client.run(peak_rss_mib).values()
        row["peak_mib"] = max(peaks, default=float("nan"))
        counts = client.run(worker_counts).values()
        row["written"] = sum(c["written"] for c in counts)
        del x
    return row


def end_to_end(args: argparse.Namespace) -> None:
    """SpillBuffer, fb local and fb S3 on the end-to-end workload, ``--runs`` times each."""
    max_bytes = int(0.6 * args.limit_mb * MB) - 100 * MB
    s3_max_bytes = max_bytes - args.s3_headroom_mb * MB
    print(
        f"{args.chunks} x 20 MB results on 2 workers x 1 thread, memory limit "
        f"{args.limit_mb} MB; fb max_bytes {max_bytes / MB:.0f} MB (S3: "
        f"{s3_max_bytes / MB:.0f} MB); {args.runs} runs each",
        flush=True,
    )
    rows = []
    if not args.only_s3:
        rows += [end_to_end_run("dask SpillBuffer", None, args) for _ in range(args.runs)]
        with tempfile.TemporaryDirectory(prefix="fb-dask-bench-") as tmp:
            local = (FbSpillBuffer, {"url": tmp, "max_bytes": max_bytes})
            rows += [end_to_end_run("fb local", local, args) for _ in range(args.runs)]
    if not args.skip_s3:
        with moto_process() as endpoint:
            bucket = make_bucket(endpoint)
            s3 = (
                FbSpillBuffer,
                {
                    "url": f"s3://{bucket}/spill",
                    "max_bytes": s3_max_bytes,
                    "storage_options": options(endpoint),
                },
            )
            rows += [end_to_end_run("fb s3 (moto)", s3, args) for _ in range(args.runs)]
    print_table(
        rows,
        [
            ("buffer", "buffer", str),
            ("seconds", "wall s", lambda v: f"{v:.1f}"),
            ("removed", "restarts", lambda v: f"{v:.0f}"),
            ("paused", "pauses", lambda v: f"{v:.0f}"),
            ("peak_mib", "peak RSS MiB", lambda v: f"{v:.0f}"),
            ("written", "written MB", lambda v: f"{v / MB:.0f}"),
        ],
    )
    for row in rows:
        if "error" in row:
            print(f"{row['buffer']}: {row['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="array side (4000: 128 MB each)")
    parser.add_argument("--chunk", type=int, default=500, help="chunk side (500: 2 MB)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (2)")
    parser.add_argument("--budget-mib", type=float, default=64, help="per-worker budget (64)")
    parser.add_argument("--monitor", action="store_true", help="also spill on process memory")
    parser.add_argument("--skip-s3", action="store_true", help="no moto S3 run")
    parser.add_argument("--end-to-end", action="store_true", help="the memory-limit run")
    parser.add_argument("--runs", type=int, default=3, help="end-to-end runs per buffer (3)")
    parser.add_argument("--chunks", type=int, default=80, help="end-to-end 20 MB results (80)")
    parser.add_argument("--limit-mb", type=int, default=300, help="end-to-end memory limit")
    parser.add_argument("--timeout", type=float, default=300, help="end-to-end run timeout")
    parser.add_argument(
        "--s3-headroom-mb",
        type=int,
        default=S3_HEADROOM_MB,
        help=f"end-to-end: S3 max_bytes is the local one less this ({S3_HEADROOM_MB})",
    )
    parser.add_argument("--only-s3", action="store_true", help="end-to-end: the S3 runs only")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args)
        return

    budget = int(args.budget_mib * 2**20)
    memory_limit = int(budget / TARGET_FRACTION)
    size = 2 * 8 * args.n**2
    print(
        f"two arrays of {size / 2 / 1e6:.0f} MB; {args.workers} workers x {args.threads} "
        f"threads; budget {budget / 1e6:.0f} MB per worker (memory limit "
        f"{memory_limit / 1e6:.0f} MB); monitor spilling {'on' if args.monitor else 'off'}",
        flush=True,
    )
    rows = [run("dask SpillBuffer", None, args, memory_limit)]
    with tempfile.TemporaryDirectory(prefix="fb-dask-bench-") as tmp:
        fb_local = (FbSpillBuffer, {"url": tmp, "max_bytes": budget})
        rows.append(run("fb local", fb_local, args, memory_limit))
    if not args.skip_s3:
        with moto_process() as endpoint:
            bucket = make_bucket(endpoint)
            fb_s3 = (
                FbSpillBuffer,
                {
                    "url": f"s3://{bucket}/spill",
                    "max_bytes": budget,
                    "storage_options": options(endpoint),
                },
            )
            rows.append(run("fb s3 (moto)", fb_s3, args, memory_limit))
    print_table(rows)


Columns = list[tuple[str, str, Callable[[Any], str]]]


def print_table(rows: list[dict[str, Any]], columns: Columns | None = None) -> None:
    """Print ``rows`` as a Markdown table of ``columns`` (key, title, format)."""
    columns = columns or [
        ("buffer", "buffer", str),
        ("seconds", "wall s", lambda v: f"{v:.2f}"),
        ("written", "spilled MB", lambda v: f"{v / 1e6:.0f}"),
        ("read", "read back MB", lambda v: f"{v / 1e6:.0f}"),
        ("stores", "writes", lambda v: f"{v:.0f}"),
        ("loads", "reads", lambda v: f"{v:.0f}"),
    ]
    cells = [[title for _, title, _ in columns]]
    cells += [[fmt(row[key]) for key, _, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for number, line in enumerate(cells):
        print(
            " | ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if number == 0:
            print("-|-".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
