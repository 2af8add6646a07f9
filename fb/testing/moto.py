"""A moto S3 server in its own process, for tests and benchmarks of S3 backends.

Needs ``moto[s3]`` with flask and flask-cors (fb's ``test`` extra). The server binds to
127.0.0.1 on a free port and stops when the context ends::

    with moto_server_process() as endpoint:
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": endpoint}}
        pool = fb.open_pool("s3://bucket/spill", max_items=100, storage_options=options)
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["moto_server_process"]

_READY = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


@contextmanager
def moto_server_process(
    env: Mapping[str, str] | None = None, *, timeout: float = 60.0
) -> Iterator[str]:
    """Run ``python -m moto.server`` in a child process; yield its endpoint URL.

    Args:
        env: extra environment for the server (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT`` to make
            it enforce IAM after that many requests).
        timeout: how long to wait for the server to start.

    Raises:
        RuntimeError: the server exited or did not start in time.
    """
    child_env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env,
        text=True,
    )
    assert process.stderr is not None
    stderr = process.stderr
    ready: queue.Queue[str | None] = queue.Queue()

    def watch() -> None:
        # Keep reading moto's log after the endpoint line so the pipe never fills and
        # blocks the server.
        found = False
        for line in stderr:
            match = None if found else _READY.search(line)
            if match:
                found = True
                ready.put(match.group(1))
        if not found:
            ready.put(None)

    threading.Thread(target=watch, daemon=True).start()
    try:
        try:
            endpoint = ready.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError("moto.server did not start in time") from None
        if endpoint is None:
            raise RuntimeError(f"moto.server exited with status {process.wait()}")
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()
