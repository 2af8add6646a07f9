"""A process that never closes its S3 store leaves no cache blob in the bucket at exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

from tests.s3.moto_fixtures import S3Bucket

_BLOB = re.compile(r"(^|/)[0-9a-f]{2}/[0-9a-f]{32}$")

LEAKY = """
    import os, sys
    import fsspec
    from fb import BackingStore, FBPool
    from fb.backends import FBStore, PreparedPath

    bucket, endpoint = sys.argv[1:3]
    fs = fsspec.filesystem(
        "s3",
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
    )
    store = BackingStore(FBStore("pickle", PreparedPath(f"s3://{bucket}/spill", fs=fs)))
    pool = FBPool(store, max_items=1)
    handles = [pool.insert(os.urandom(100_000)) for _ in range(3)]
    tracked = store.track_path(PreparedPath(f"s3://{bucket}/durable", fs=fs))
    key = handles[0].persist(tracked)
    store.fsync(tracked)
    store.finished()
    print(key.hex)
    # no close(): the exit hook's turn
"""


def test_exit_deletes_the_s3_cache_blobs_of_an_unclosed_store(s3: S3Bucket) -> None:
    """Spilled blobs under the store's prefix are deleted at exit; the persisted one stays."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LEAKY), s3.name, s3.endpoint],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    key = result.stdout.strip()
    assert [name for name in s3.names("spill/") if _BLOB.search(name)] == []
    assert [name for name in s3.names("durable/") if _BLOB.search(name)] == [
        f"durable/{key[:2]}/{key}"
    ]
