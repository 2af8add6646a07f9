"""NumpyCodec: numpy arrays in the ``.npy`` format, never pickled."""

from __future__ import annotations

import io
import threading
from typing import IO, Any

import attrs
import numpy as np
import numpy.lib.format as npy

from ._stream import Prepend, read_into

__all__ = ["NumpyCodec"]

# numpy parses headers with ast.literal_eval; before CPython 3.11.8 (gh-106905) compile()
# in two threads at once could fail with "AST constructor recursion depth mismatch".
_HEADER_LOCK = threading.Lock()
_HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}


@attrs.frozen
class NumpyCodec:
    """Encodes a `numpy.ndarray` in the ``.npy`` format, as `numpy.save` does.

    Any shape, C or Fortran order, and every dtype but object arrays (which would need
    pickle: they are refused both ways, so loading never runs code). A payload is a valid
    ``.npy`` file. Subclasses (``np.matrix``, masked arrays) come back as plain arrays.

    Streaming: a contiguous array (C or Fortran order) is written straight from its memory;
    `numpy.lib.format.write_array` writes any other in slices of at most 16 MiB. Loading
    allocates the array once and reads the data straight into it (``readinto``), so an
    array is never held twice.

    Notes:
        Stateless and thread-safe; headers are parsed one at a time (a short lock, see
        ``_HEADER_LOCK``), data is read concurrently.
    """

    @property
    def name(self) -> str:
        """``"numpy"``."""
        return "numpy"

    def dump(self, value: np.ndarray[Any, Any], file: IO[bytes]) -> None:
        """Write ``value`` as ``.npy`` to ``file``.

        Raises:
            TypeError: ``value`` is not a numpy array.
            ValueError: an object (or user-defined) dtype, which would need pickle.
        """
        if not isinstance(value, np.ndarray):
            raise TypeError(f"NumpyCodec stores numpy arrays, not {type(value).__name__}")
        header = _direct_header(value)
        if header is None:
            npy.write_array(file, value, allow_pickle=False)
            return
        file.write(header)
        if value.size and value.itemsize:
            # order="A" flattens a Fortran-ordered array in its own order: a view, no copy.
            file.write(value.reshape(-1, order="A").view(np.uint8).data)

    def load(self, file: IO[bytes]) -> np.ndarray[Any, Any]:
        """Read one ``.npy`` array from ``file``.

        Raises:
            ValueError: the bytes are not an ``.npy`` array, hold an object array, or are
                truncated.
        """
        magic = file.read(npy.MAGIC_LEN)
        version = npy.read_magic(io.BytesIO(magic))
        reader = _HEADER_READERS.get(version)
        if reader is None:
            # Format 3.0 (utf-8 field names) is rare: numpy's own reader handles it.
            array: np.ndarray[Any, Any] = npy.read_array(Prepend(magic, file), allow_pickle=False)
        else:
            with _HEADER_LOCK:
                header = reader(file)
            array = _read_data(file, *header)
        if file.read(1):
            raise ValueError("unexpected bytes after the array data")
        return array


def _direct_header(array: np.ndarray[Any, Any]) -> bytes | None:
    """Return the ``.npy`` header of an array whose memory can be written as it is.

    None for what `numpy.lib.format.write_array` must handle: arrays that are not contiguous
    (it copies them in 16 MiB slices), object dtypes (it refuses them), and headers that
    need format 3.0.
    """
    contiguous = array.flags.c_contiguous or array.flags.f_contiguous
    # Only the classic dtypes are plain memory (write_array checks the same private flag).
    legacy = getattr(type(array.dtype), "_legacy", False)
    if not contiguous or array.dtype.hasobject or not legacy:
        return None
    fields = npy.header_data_from_array_1_0(array)
    buffer = io.BytesIO()
    try:
        npy.write_array_header_1_0(buffer, fields)
    except ValueError:  # a header of more than 64 KiB (a dtype with very many fields)
        buffer = io.BytesIO()
        try:
            npy.write_array_header_2_0(buffer, fields)
        except (ValueError, UnicodeError):
            return None
    except UnicodeError:
        return None
    return buffer.getvalue()


def _read_data(
    file: IO[bytes], shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype[Any]
) -> np.ndarray[Any, Any]:
    """Allocate the array once and read its data straight into it."""
    if dtype.hasobject:
        raise ValueError("object arrays need pickle and are refused by NumpyCodec")
    count = 1
    for side in shape:
        count *= side
    # np.ndarray, not np.empty: the latter mishandles zero-width string dtypes.
    flat: np.ndarray[Any, Any] = np.ndarray(count, dtype=dtype)
    if dtype.itemsize and count:
        view = flat.view(np.uint8).data
        got = read_into(file, view)
        if got != view.nbytes:
            raise ValueError(f"array data is truncated: {got} of {view.nbytes} bytes")
    if fortran_order:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)
