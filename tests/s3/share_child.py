"""A separate "host" for the S3 sharing test: persists items to S3, or registers and loads them.

Run as ``python tests/s3/share_child.py write BUCKET COUNT SEED`` or
``python tests/s3/share_child.py read BUCKET HEX ...``; the moto endpoint comes from the
``FB_TEST_S3_ENDPOINT`` environment variable. Both modes open their own pool with
`fb.open_pool` on ``s3://BUCKET/spill`` (a session prefix of their own) and use
``s3://BUCKET/durable`` as the shared persist location.

``write`` prints one line ``<hex> <sha256>`` per item persisted (after the fsync);
``read`` prints the same line for each key it registered and loaded.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from typing import Any

import fb

SIZE = 300_000


def payload(seed: int, index: int) -> bytes:
    """The bytes of item ``index`` of a writer started with ``seed``."""
    return random.Random(seed * 1_000_003 + index).randbytes(SIZE + index)


def storage_options() -> dict[str, Any]:
    """Storage options for the moto server named by ``FB_TEST_S3_ENDPOINT``."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {
            "endpoint_url": os.environ["FB_TEST_S3_ENDPOINT"],
            "region_name": "us-east-1",
        },
    }


def write(bucket: str, count: int, seed: int) -> None:
    """Insert ``count`` payloads into a pool that keeps one resident, persist them all."""
    options = storage_options()
    with fb.open_pool(f"s3://{bucket}/spill", max_items=1, storage_options=options) as pool:
        tracked = pool.store.track_path(f"s3://{bucket}/durable")  # the pool's options
        handles = [pool.insert(payload(seed, index)) for index in range(count)]
        keys = [handle.persist(tracked) for handle in handles]
        pool.store.fsync(tracked)
        for index, key in enumerate(keys):
            print(key.hex, hashlib.sha256(payload(seed, index)).hexdigest(), flush=True)


def read(bucket: str, keys: list[str]) -> None:
    """Register every key from the shared location and print the digest of what loads."""
    options = storage_options()
    with fb.open_pool(f"s3://{bucket}/spill", max_items=1, storage_options=options) as pool:
        tracked = pool.store.track_path(f"s3://{bucket}/durable")  # the pool's options
        for key in keys:
            handle = pool.register(tracked, key)
            if handle is None:
                print(key, "missing", flush=True)
                continue
            with handle.load() as value:
                print(key, hashlib.sha256(value).hexdigest(), flush=True)


def main(argv: list[str]) -> None:
    """Dispatch on the mode named by the first argument."""
    mode, bucket, *rest = argv
    if mode == "write":
        write(bucket, int(rest[0]), int(rest[1]))
    elif mode == "read":
        read(bucket, rest)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
