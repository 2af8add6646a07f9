"""Backpressure: peak memory of a producer ten times faster than its storage.

    .venv/bin/python benchmarks/backpressure.py [--count 200] [--size-mib 1] [--max-mib 16]
        [--pending-mib 16] [--store-ms 20] [--produce-ms 2]

A producer makes one ``size``-byte value every ``produce-ms`` and inserts it into an `FBPool`
with ``max_bytes`` and ``max_pending_bytes`` budgets. Storage is a real `FBStore` on a
temporary directory, slowed by `fb.testing.faults.FaultyStrategy` to ``store-ms`` per write
with one worker thread, so it drains ten times slower than the producer fills (with the
defaults). Each configuration runs in a fresh child process, which reports its peak resident
set size (``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss``) above its baseline:

- with backpressure, the peak stays within ``max_bytes + max_pending_bytes`` plus a small
  overhead: ``insert`` waits for write-back to drain;
- without (``max_pending_bytes`` as large as the whole run), every value the slow store has
  not written yet stays in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

MIB = 2**20
OVERHEAD_MIB = 16
"""What "a small overhead" allows: the interpreter's own growth, buffers, a value in flight."""


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_now() -> int:
    """This process's resident set size in bytes (VmRSS), or the peak where that is unknown."""
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_peak() -> int:
    """This process's peak resident set size in bytes (VmHWM, else ru_maxrss)."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def child(args: argparse.Namespace) -> None:
    """Run one configuration in this process and print its figures as JSON."""
    from fb import BackingStore, FBPool
    from fb.backends import FBStore, PreparedPath
    from fb.testing.faults import FaultyStrategy

    size = int(args.size_mib * MIB)
    with tempfile.TemporaryDirectory(prefix="fb-backpressure-") as tmp:
        faulty: FaultyStrategy[bytes] = FaultyStrategy(FBStore("pickle", PreparedPath(tmp)))
        faulty.slow("store", args.store_ms / 1000)
        store: BackingStore[bytes] = BackingStore(faulty, max_workers=1)
        pool: FBPool[bytes] = FBPool(
            store, max_bytes=int(args.max_mib * MIB), max_pending_bytes=args.pending
        )
        handles = []
        baseline = rss_now()
        start = time.perf_counter()
        for index in range(args.count):
            time.sleep(args.produce_ms / 1000)  # the producer's own work
            handles.append(pool.insert(index.to_bytes(8, "little") * (size // 8)))
        produced = time.perf_counter() - start
        stats = pool.statistics()
        store.finished()
        drained = time.perf_counter() - start
        peak = rss_peak()
        pool.close()
        store.finished()
        store.close()
    print(
        json.dumps(
            {
                "peak_above_baseline": peak - baseline,
                "produce_seconds": produced,
                "drain_seconds": drained,
                "insert_waits": stats.insert_waits,
            }
        )
    )


def run(args: argparse.Namespace, pending: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", "--pending", str(pending)]
    for name in ("count", "size_mib", "max_mib", "store_ms", "produce_ms"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size-mib", type=float, default=1.0)
    parser.add_argument("--max-mib", type=float, default=16.0)
    parser.add_argument("--pending-mib", type=float, default=16.0)
    parser.add_argument("--store-ms", type=float, default=20.0)
    parser.add_argument("--produce-ms", type=float, default=2.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pending", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    size = int(args.size_mib * MIB)
    pending = int(args.pending_mib * MIB)
    bound = int(args.max_mib * MIB) + pending + OVERHEAD_MIB * MIB
    print(
        f"producer: {args.count} values of {args.size_mib:g} MiB, one every "
        f"{args.produce_ms:g} ms; storage: {args.store_ms:g} ms per write, one worker "
        f"({args.store_ms / args.produce_ms:.0f}x slower than the producer)"
    )
    print(f"budgets: max_bytes {args.max_mib:g} MiB, max_pending_bytes {args.pending_mib:g} MiB")
    rows = [
        ("with backpressure", run(args, pending)),
        ("without (unbounded pending)", run(args, args.count * size * 2)),
    ]
    print(f"{'':30} {'peak RSS above baseline':>24} {'insert waits':>13} {'produce s':>10}")
    for name, figures in rows:
        print(
            f"{name:30} {figures['peak_above_baseline'] / MIB:20.1f} MiB "
            f"{figures['insert_waits']:13.0f} {figures['produce_seconds']:10.2f}"
        )
    peak = rows[0][1]["peak_above_baseline"]
    verdict = "within" if peak <= bound else "ABOVE"
    print(
        f"with backpressure the peak is {verdict} max_bytes + max_pending_bytes + "
        f"{OVERHEAD_MIB} MiB = {bound / MIB:.0f} MiB"
    )
    if peak > bound:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "error")
    main()
