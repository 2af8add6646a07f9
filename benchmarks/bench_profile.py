"""Profile the fb rows of `fb bench`: each phase of a workload under cProfile.

    .venv/bin/python benchmarks/bench_profile.py [--workload small|large] [--quick]
        [--system fb|raw-wt|zict|diskcache] [--top 25] [--sort tottime|cumtime]

Runs one system (fb by default) through the same phases as ``fb bench`` (N inserts drained,
N uniform reads, N Zipf reads, every read checked) and prints, per phase, the wall time
with and without the profiler and the functions that took the most time. Background work
(fb's write-back threads) is not seen by cProfile, which profiles the calling thread only;
the "drain" line of the insert phase shows how long the caller waited for it.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

from fb import _bench_systems as _bench
from fb import _bench_timing as _timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(_bench.WORKLOADS), default="small")
    parser.add_argument("--system", choices=sorted(_bench.FACTORIES), default="fb")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", choices=("tottime", "cumtime"), default="tottime")
    args = parser.parse_args()
    workload = (_bench.QUICK if args.quick else _bench.WORKLOADS)[args.workload]
    values = _bench._Values(workload, seed=0)
    orders = _bench._orders(workload.count, seed=0)
    root = Path(tempfile.mkdtemp(prefix="fb-bench-profile-"))
    systems = []
    try:
        for profiled in (False, True):
            system = _bench.FACTORIES[args.system](root / f"{profiled}", workload.budget)
            systems.append(system)
            items = [values.make(index) for index in range(workload.count)]
            phases = {
                "insert": partial(_timing._insert_all, system, items),
                "uniform": partial(_read, system, values, orders["uniform"]),
                "zipf": partial(_read, system, values, orders["zipf"]),
            }
            for name, action in phases.items():
                gc.collect()
                _timing._pretouch(workload.total_bytes)
                profile = cProfile.Profile() if profiled else None
                start = time.perf_counter()
                if profile is not None:
                    profile.enable()
                action()
                if profile is not None:
                    profile.disable()
                seconds = time.perf_counter() - start
                if name == "insert":
                    items.clear()
                mbs = workload.total_bytes / _bench.MB / seconds
                label = "profiled" if profiled else "plain"
                per_op = seconds / workload.count * 1e6
                print(
                    f"== {workload.name} {args.system} {name} ({label}): {seconds:.3f} s, "
                    f"{mbs:.1f} MB/s, {per_op:.1f} us/op"
                )
                if profile is not None:
                    out = io.StringIO()
                    stats = pstats.Stats(profile, stream=out)
                    stats.sort_stats(args.sort).print_stats(args.top)
                    print(out.getvalue())
            system.park()
    finally:
        for system in systems:
            system.close()
        shutil.rmtree(root, ignore_errors=True)


def _read(system: _bench._System, values: _bench._Values, order: list[int]) -> None:
    for index in order:
        if not system.read(index, values.check):
            raise SystemExit(f"{system.name}: wrong value for item {index}")
    system.drain()


if __name__ == "__main__":
    main()
