"""Storage backends: `FBStore` keeps blobs as files under a `PreparedPath`.

A registry maps URL protocols (``file``, ``memory``, ``s3``) to backend factories; plugins
add more through the ``fb.backends`` entry points.
"""

from ._fbstore import FBStore as FBStore
from ._prepared_path import PreparedPath as PreparedPath
from ._registry import BackendFactory as BackendFactory
from ._registry import available_backends as available_backends
from ._registry import fbstore_backend as fbstore_backend
from ._registry import get_backend as get_backend
from ._registry import open_backend as open_backend
from ._registry import register_backend as register_backend

__all__ = [
    "BackendFactory",
    "FBStore",
    "PreparedPath",
    "available_backends",
    "fbstore_backend",
    "get_backend",
    "open_backend",
    "register_backend",
]
