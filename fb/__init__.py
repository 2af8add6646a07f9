"""fb: keep the hot objects in memory, spill the cold ones to disk, S3 or any fsspec filesystem.

The public names live here; storage backends are in `fb.backends`, codecs in `fb.codecs`,
errors in `fb.exceptions` and the interfaces in `fb.typing`.
"""

import logging
from importlib.metadata import PackageNotFoundError, version

from ._guards import Acquisition as Acquisition
from ._handle import Fb as Fb
from ._handle import ReadGuard as ReadGuard
from ._handle import WriteGuard as WriteGuard
from ._open import open_pool as open_pool
from ._persist import TrackedPath as TrackedPath
from ._persist import asave as asave
from ._persist import save as save
from ._pool import FBPool as FBPool
from ._shelf import Shelf as Shelf
from ._sizeof import default_sizeof as default_sizeof
from ._stats import PoolStatistics as PoolStatistics
from ._stats import StoreStatistics as StoreStatistics
from ._store import BackingStore as BackingStore

# A library logs to "fb" and lets the application decide where that goes; background
# errors are never lost meanwhile: finished() raises them and on_error sees them.
logging.getLogger("fb").addHandler(logging.NullHandler())

try:
    __version__ = version("file-backed")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "Acquisition",
    "BackingStore",
    "FBPool",
    "Fb",
    "PoolStatistics",
    "ReadGuard",
    "Shelf",
    "StoreStatistics",
    "TrackedPath",
    "WriteGuard",
    "__version__",
    "asave",
    "default_sizeof",
    "open_pool",
    "save",
]
