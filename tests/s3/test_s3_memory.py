"""Writing a large blob to S3 buffers a bounded amount, not a copy (or two) of the blob.

The moto server runs in the test process, so the writer runs in a child process whose peak
resident memory (``ru_maxrss``) is its own: the value itself, plus what the upload buffers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from fb.backends._fbstore import UPLOAD_PART
from tests.s3.moto_fixtures import S3Bucket

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20

WRITER = textwrap.dedent(
    """
    import json, resource, sys, uuid
    from fb.backends import FBStore, PreparedPath

    url, options, size = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    store = FBStore("pickle", PreparedPath(url, storage_options=options))
    value = bytes(size)
    value = b"x" * size  # touched: its pages count before the baseline is taken
    store.store(uuid.uuid4(), b"warm-up")  # the client, its connection pool, the lease
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    key = uuid.uuid4()
    written = store.store(key, value)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert store.load(key) == value
    store.close()
    print(json.dumps({"extra_kib": after - before, "written": written}))
    """
)


def test_a_large_s3_write_buffers_about_two_parts_not_the_whole_blob(s3: S3Bucket) -> None:
    """A 64 MiB blob's upload grows the writer by well under one copy of the blob."""
    size = 64 * MIB
    done = subprocess.run(
        [sys.executable, "-c", WRITER, s3.url("big"), json.dumps(s3.options), str(size)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["written"] > size
    extra = report["extra_kib"] * 1024
    print(f"upload of {size // MIB} MiB grew the writer by {extra / MIB:.1f} MiB")
    # Before: the whole blob in s3fs's buffer, then a copy of it for the PUT (>= 128 MiB).
    assert extra < 4 * UPLOAD_PART + 8 * MIB, f"the upload grew the writer by {extra / MIB:.0f} MiB"


def _etag_parts(s3: S3Bucket, options: dict[str, object], size: int) -> str:
    """Write a blob of ``size`` bytes through a store with ``options``; return its ETag."""
    import uuid

    from fb.backends import FBStore, PreparedPath

    store: FBStore[bytes] = FBStore("pickle", PreparedPath(s3.url("etag"), storage_options=options))
    try:
        key = uuid.uuid4()
        store.store(key, bytes(size))
        etag = str(store.path.fs.info(store.blob_path(key))["ETag"]).strip('"')
        store.delete(key)
    finally:
        store.close()
    return etag


def test_a_blob_over_one_part_is_a_multipart_upload_unless_the_part_size_is_raised(
    s3: S3Bucket,
) -> None:
    """default_block_size in the storage options is the upload part size (docs/s3.md)."""
    size = 2 * UPLOAD_PART
    # A multipart upload's ETag ends in "-<number of parts>"; a single PUT's is an MD5.
    assert _etag_parts(s3, dict(s3.options), size).endswith("-3")
    raised = {**s3.options, "default_block_size": 8 * UPLOAD_PART}
    assert "-" not in _etag_parts(s3, raised, size)
