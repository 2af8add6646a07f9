"""Storage backends: `FBStore` keeps blobs as files under a `PreparedPath`."""

from ._fbstore import FBStore as FBStore
from ._prepared_path import PreparedPath as PreparedPath

__all__ = ["FBStore", "PreparedPath"]
