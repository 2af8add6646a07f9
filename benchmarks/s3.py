"""fb's S3 spill tier against raw s3fs batches, on one moto server in a separate process.

    .venv/bin/python benchmarks/s3.py [--count 200] [--size-mib 1] [--workers 16] [--rounds 3]

Starts ``python -m moto.server`` on a free port of 127.0.0.1 (its own process, so the server
does not compete with the client for this interpreter's GIL), then, against that one server
in the same run:

- fb: an `fb.open_pool` with ``max_items=0`` (every insert is written back), ``count``
  inserts of ``size`` random bytes, ``store.finished()`` (write-back drained), then every
  handle loaded back (by ``workers`` threads, and by one thread);
- raw: ``fs.pipe({path: data, ...})`` and ``fs.cat([path, ...])`` of the same payloads with
  one s3fs filesystem (s3fs runs each batch concurrently on its event loop).

Prints MB/s (10^6 bytes per second) for each, best of ``rounds`` alternating rounds, and the
ratio fb/raw. Moto is an in-memory
emulator: absolute numbers say little about AWS; the ratio shows fb's overhead per request.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import s3fs

import fb
from fb.testing.moto import moto_server_process


def options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


def make_bucket(endpoint: str) -> str:
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options(endpoint))
    name = f"fb-bench-{uuid.uuid4().hex[:12]}"
    # s3fs's mkdir sends a LocationConstraint, which us-east-1 (moto's default) refuses.
    fs.call_s3("create_bucket", Bucket=name)
    return name


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def bench_fb(endpoint: str, bucket: str, payloads: list[bytes], workers: int) -> dict[str, float]:
    total = sum(map(len, payloads))
    expected = [hashlib.sha256(payload).digest() for payload in payloads]

    def digest_of(handle: fb.Fb[bytes]) -> bytes:
        with handle.load() as value:
            return hashlib.sha256(value).digest()

    with fb.open_pool(
        f"s3://{bucket}/fb", max_items=0, max_workers=workers, storage_options=options(endpoint)
    ) as pool:

        def write() -> list[fb.Fb[bytes]]:
            handles = [pool.insert(payload) for payload in payloads]
            pool.store.finished()
            return handles

        write_s, handles = timed(write)
        assert not any(handle.resident for handle in handles)

        def read_parallel() -> list[bytes]:
            with ThreadPoolExecutor(workers) as threads:
                return list(threads.map(digest_of, handles))

        read_s, digests = timed(read_parallel)
        assert digests == expected, "fb loaded something else than it stored"
        serial_s, digests = timed(lambda: [digest_of(handle) for handle in handles])
        assert digests == expected
    return {
        "write": mbps(total, write_s),
        "read": mbps(total, read_s),
        "read_1": mbps(total, serial_s),
    }


def bench_raw(endpoint: str, bucket: str, payloads: list[bytes]) -> dict[str, float]:
    total = sum(map(len, payloads))
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **options(endpoint))
    paths = [f"{bucket}/raw/{uuid.uuid4().hex}" for _ in payloads]
    write_s, _ = timed(lambda: fs.pipe(dict(zip(paths, payloads, strict=True))))
    read_s, loaded = timed(lambda: fs.cat(paths))
    assert [loaded[path] for path in paths] == payloads, "s3fs read something else back"
    fs.rm(paths)
    return {"write": mbps(total, write_s), "read": mbps(total, read_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="objects per run (200)")
    parser.add_argument("--size-mib", type=float, default=1.0, help="object size in MiB (1)")
    parser.add_argument("--workers", type=int, default=16, help="fb's worker threads (16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; best of each kept (3)")
    args = parser.parse_args()
    size = int(args.size_mib * 2**20)
    payloads = [os.urandom(size) for _ in range(args.count)]
    total_mb = args.count * size / 1e6
    print(f"{args.count} objects of {size} bytes ({total_mb:.0f} MB), fb workers={args.workers}")
    with moto_server_process() as endpoint:
        print(f"moto.server (separate process) at {endpoint}")
        bucket = make_bucket(endpoint)
        raw: dict[str, float] = {}
        fbr: dict[str, float] = {}
        # Rounds alternate raw and fb so neither always meets a cold (or a tired) server;
        # each figure is the best of the rounds.
        for _ in range(args.rounds):
            for name, value in bench_raw(endpoint, bucket, payloads).items():
                raw[name] = max(raw.get(name, 0.0), value)
            for name, value in bench_fb(endpoint, bucket, payloads, args.workers).items():
                fbr[name] = max(fbr.get(name, 0.0), value)
    print()
    print(f"{'':32}{'MB/s':>10}")
    print(f"{'raw s3fs pipe (one batch)':32}{raw['write']:10.1f}")
    print(f"{'fb write-back (max_items=0)':32}{fbr['write']:10.1f}")
    print(f"{'raw s3fs cat (one batch)':32}{raw['read']:10.1f}")
    print(f"{'fb load, ' + str(args.workers) + ' threads':32}{fbr['read']:10.1f}")
    print(f"{'fb load, 1 thread':32}{fbr['read_1']:10.1f}")
    print()
    print(f"ratio fb/raw  write: {fbr['write'] / raw['write']:.2f}")
    print(f"ratio fb/raw  read:  {fbr['read'] / raw['read']:.2f}  ({args.workers} threads)")


if __name__ == "__main__":
    main()
