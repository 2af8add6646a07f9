"""FbSpillPlugin: closes a worker's FbSpillBuffer when the worker closes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from distributed.diagnostics.plugin import WorkerPlugin

from ._dask_buffer import FbSpillBuffer

if TYPE_CHECKING:
    from distributed import Worker

__all__ = ["FbSpillPlugin"]


class FbSpillPlugin(WorkerPlugin):
    """Closes a worker's `FbSpillBuffer` when the worker closes.

    Distributed never closes a worker's ``data`` mapping; without this plugin the blobs of
    a closed worker stay on storage (and fb warns about the unclosed store when it is
    garbage-collected). Give it to the workers
    (``LocalCluster(..., plugins={FbSpillPlugin()})``) or register it from a client
    (``client.register_plugin(FbSpillPlugin())``).

    Notes:
        Stateless and picklable. Its teardown waits (off the event loop) until fb's
        background work has drained and the blobs are deleted.
    """

    name = "fb-spill"

    async def teardown(self, worker: Worker) -> None:
        """Close the worker's data mapping if it is an `FbSpillBuffer` (off the event loop)."""
        data = worker.data
        if isinstance(data, FbSpillBuffer):
            await asyncio.to_thread(data.close)
