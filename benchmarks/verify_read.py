"""Loading a large blob, verified: fb's ways against ``open`` + ``pickle.load`` of a raw file.

    .venv/bin/python benchmarks/verify_read.py [--rounds 9] [--repeats 7] [--mib 4]

A float64 numpy array of ``--mib`` MiB is written once as a raw pickle (protocol 5) and once
per codec (pickle, numpy) through an `FBStore`; then, in every round, each variant loads it
``--repeats`` times and keeps its median. A variant's ratio is raw / variant *within the
same round*; the table shows the medians over the rounds (the machine is shared: ratios per
round are steadier than times). Page cache warm, one thread loading.

Variants (all but ``raw`` check the whole blob before returning the value):

- ``raw``: ``open`` + ``pickle.load`` of the raw pickle, no check;
- ``fb``: `FBStore.load` as built (streamed: the codec reads through a checksumming reader,
  whose large reads are one read, then one hash);
- ``pieces-256K``: the reader before this benchmark, which read and hashed in 256 KiB pieces
  (each hashed while still in the CPU cache);
- ``pipelined``: the streamed read with each 1 MiB piece handed to a helper thread that
  hashes it while the next piece is read (``xxhash`` releases the GIL);
- ``buffer-first``: the whole blob read into one buffer, checked, then decoded from it
  (the codec never sees unverified bytes): ``pickle.loads`` copies the array out of it;
  the numpy codec's array is a zero-copy view of the (aligned) buffer;
- ``signed fb``: `FBStore.load` of a signed blob as built: read once into a reused buffer,
  checksum and HMAC-SHA256 checked, decoded from the buffer;
- ``signed two-pass``: how fb loaded a large signed blob before: one pass over the file for
  the HMAC, then the streamed read for the codec (which let bytes written into the file
  between the two passes reach the codec).
"""

from __future__ import annotations

import argparse
import hmac
import io
import os
import pickle
import queue
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.lib.format as npy
import xxhash

import fb.backends._decode as decode
from fb._blob import (
    MAC_SIZE,
    TRAILER,
    ChecksumReader,
    decode_trailer,
    finish_mac,
    new_checksum,
    new_mac,
    read_header,
)
from fb.backends import FBStore


class _Hasher:
    """One daemon thread that applies ``digest.update(view)`` jobs in order."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            digest, view, done = self.jobs.get()
            if view is not None:
                digest.update(view)
            if done is not None:
                done.put(None)


_HASHER = _Hasher()


class _PiecesReader(ChecksumReader):
    """The `ChecksumReader` of fb 0.x before this benchmark: read and hash 256 KiB at a time."""

    PIECE = 256 << 10

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        size = min(len(view), self.remaining)
        got = 0
        while got < size:
            n = self._raw.readinto(view[got : min(size, got + self.PIECE)]) or 0  # type: ignore[attr-defined]
            if not n:
                break
            self.digest.update(view[got : got + n])
            got += n
        self.remaining -= got
        return got


class _PipelinedReader(ChecksumReader):
    """A `ChecksumReader` whose large reads are hashed on the helper thread, piece by piece."""

    PIECE = 1 << 20

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        size = min(len(view), self.remaining)
        if size < 2 * self.PIECE:
            return super().readinto(buffer)
        got = 0
        done: queue.SimpleQueue[None] = queue.SimpleQueue()
        while got < size:
            n = self._raw.readinto(view[got : min(size, got + self.PIECE)]) or 0  # type: ignore[attr-defined]
            if not n:
                break
            _HASHER.jobs.put((self.digest, view[got : got + n], None))
            got += n
        _HASHER.jobs.put((self.digest, None, done))
        done.get()
        self.remaining -= got
        return got


def _patched(reader: type[ChecksumReader], run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` with `FBStore.load`'s streamed path using ``reader``."""

    def patched() -> Any:
        decode.ChecksumReader = reader  # type: ignore[misc]
        try:
            return run()
        finally:
            decode.ChecksumReader = ChecksumReader  # type: ignore[misc]

    return patched


def _two_pass(store: FBStore[Any], key: uuid.UUID) -> Any:
    """Load a large signed blob as fb did before: check the HMAC, then stream to the codec."""
    assert store._secret is not None
    with open(store.path.blob_path(key), "rb") as file:
        size = os.fstat(file.fileno()).st_size
        header = read_header(file)
        payload = header.payload_length(size)
        file.seek(size - header.trailer_size)
        _, digest = decode_trailer(header.flags, file.read(header.trailer_size))
        file.seek(0)
        mac = new_mac(store._secret, file.read(header.size))
        left = payload
        while left:
            chunk = file.read(min(left, 1 << 20))
            mac.update(chunk)
            left -= len(chunk)
        if not hmac.compare_digest(finish_mac(mac, payload), file.read(MAC_SIZE)):
            raise ValueError("signature mismatch")
        file.seek(header.size)
        reader = ChecksumReader(file, payload, new_checksum(header.flags, header.raw))
        value = store.codec.load(reader)
        reader.finish()
        if reader.digest.intdigest() != digest:
            raise ValueError("checksum mismatch")
        return value


def _buffer_first(store: FBStore[Any], key: uuid.UUID) -> Any:
    """Read the whole blob into one aligned buffer, check it, decode from it."""
    header = store._header
    with open(store.path.blob_path(key), "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        pad = (-len(header)) % 64  # the .npy data then starts 64-byte aligned
        view = memoryview(np.empty(size + pad, np.uint8))[pad:]
        file.readinto(view)
    end = size - TRAILER.size
    if xxhash.xxh3_64_intdigest(view[:end]) != TRAILER.unpack_from(view, end)[1]:
        raise ValueError("checksum mismatch")
    body = view[len(header) : end]
    if store.codec.name == "pickle":
        return pickle.loads(body)
    head = io.BytesIO(body[:4096])
    npy.read_magic(head)
    shape, fortran, dtype = npy.read_array_header_1_0(head)
    count = int(np.prod(shape))
    array = np.frombuffer(body, dtype=dtype, count=count, offset=head.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mib", type=int, default=4)
    args = parser.parse_args()
    array = np.random.default_rng(1).random((args.mib << 20) // 8)
    with tempfile.TemporaryDirectory() as root:
        raw_path = os.path.join(root, "raw.pkl")
        with open(raw_path, "wb") as file:
            pickle.dump(array, file, protocol=5)

        def raw() -> Any:
            with open(raw_path, "rb") as file:
                return pickle.load(file)

        variants: dict[str, Callable[[], Any]] = {"raw": raw}
        stores = []
        for codec in ("pickle", "numpy"):
            store: FBStore[Any] = FBStore(codec, os.path.join(root, codec))
            stores.append(store)
            key = uuid.uuid4()
            store.store(key, array)

            def load(store: FBStore[Any] = store, key: uuid.UUID = key) -> Any:
                return store.load(key)

            variants[f"{codec} fb"] = load
            variants[f"{codec} pieces-256K"] = _patched(_PiecesReader, load)
            variants[f"{codec} pipelined"] = _patched(_PipelinedReader, load)
            variants[f"{codec} buffer-first"] = lambda s=store, k=key: _buffer_first(s, k)
            signed: FBStore[Any] = FBStore(
                codec, os.path.join(root, f"{codec}-signed"), secret_key=b"s" * 32
            )
            stores.append(signed)
            signed.store(key, array)
            variants[f"{codec} signed fb"] = lambda s=signed, k=key: s.load(k)
            variants[f"{codec} signed two-pass"] = lambda s=signed, k=key: _two_pass(s, k)
        for run in variants.values():
            if not np.array_equal(run(), array):
                raise AssertionError("a variant loaded something else")
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                samples = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    run()
                    samples.append(time.perf_counter() - start)
                times[name].append(statistics.median(samples))
        for store in stores:
            store.close()
    print(f"{args.mib} MiB float64, {args.rounds} rounds x {args.repeats} loads, warm cache")
    print("| variant | median µs | raw / variant (median of rounds) |")
    print("|---|--:|--:|")
    for name, values in times.items():
        ratios = [r / v for r, v in zip(times["raw"], values, strict=True)]
        micros = statistics.median(values) * 1e6
        print(f"| {name} | {micros:.0f} | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
