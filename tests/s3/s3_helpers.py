"""Helpers shared by the S3 tests: a recorder of S3 requests and a store on the test's bucket.

The ``s3_store`` fixture is imported by the ``test_s3*`` modules that use it.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fb import BackingStore
from fb.backends import FBStore, PreparedPath
from tests.s3.moto_fixtures import S3Bucket


class S3Calls:
    """Records the S3 operations of the filesystems it watches, with the key each names.

    A handler on botocore's ``before-parameter-build`` event of the filesystem's own client
    sees every API call (``PutObject``, ``CopyObject``, ``GetObject``...) before it is sent.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def watch(self, location: PreparedPath) -> None:
        """Record the calls made through ``location``'s filesystem from now on."""
        fs = location.fs
        fs.connect()  # s3fs creates its client lazily; make it exist to hook it
        fs.s3.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append((str(model.name), str(params.get("Key", ""))))

    def clear(self) -> None:
        """Forget what was recorded."""
        with self._lock:
            self.calls.clear()

    def on(self, key: uuid.UUID) -> list[str]:
        """Return the operations, in order, on objects whose name holds ``key``."""
        with self._lock:
            return [name for name, target in self.calls if key.hex in target]

    def names(self) -> list[str]:
        """Return every operation recorded, in order."""
        with self._lock:
            return [name for name, _ in self.calls]


def closed_port() -> int:
    """Return a port of 127.0.0.1 on which nothing listens (a socket bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(name="s3_store")
def fixture_s3_store(s3: S3Bucket) -> Iterator[BackingStore[Any]]:
    """A `BackingStore` over an `FBStore` on ``s3://<bucket>/cache``; closed afterwards."""
    store: BackingStore[Any] = BackingStore(FBStore("pickle", s3.location("cache")))
    yield store
    store.close()
