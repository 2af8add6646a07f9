"""Dask integration: a worker ``data`` mapping whose task results live in an `fb.FBPool`.

Install the ``dask`` extra (``pip install 'file-backed[dask]'``), then give the workers an
`FbSpillBuffer` and the `FbSpillPlugin` that closes it::

    from distributed import LocalCluster
    from fb.integrations.dask import FbSpillBuffer, FbSpillPlugin

    cluster = LocalCluster(
        data=(FbSpillBuffer, {"url": "s3://bucket/spill", "max_bytes": 2 * 2**30}),
        plugins={FbSpillPlugin()},
    )

See the "Using fb with Dask" page of the documentation.
"""

try:
    import distributed as _distributed  # noqa: F401 - fail early with an install hint
except ImportError as exc:  # pragma: no cover - the extra is installed in the test env
    raise ImportError(
        "fb.integrations.dask needs dask and distributed: pip install 'file-backed[dask]'"
    ) from exc

from ._dask_buffer import FbSpillBuffer
from ._dask_plugin import FbSpillPlugin
from ._dask_views import SpilledSize

__all__ = ["FbSpillBuffer", "FbSpillPlugin", "SpilledSize"]
