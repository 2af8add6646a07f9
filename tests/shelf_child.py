"""A child process for the shelf's sharing and crash tests: writes or reads a shelf.

Run as ``python tests/shelf_child.py LOCATION write|read [options]``. Every value is
self-describing, `value_for` ``(round, index, size)``: a reader checks each value it gets is
one a writer set, whole, without knowing which round it is.

- ``write``: for each round, for each name ``n<i>``, set it and print ``set <round> <i>``
  (flushed, so what was printed before a kill reaches the parent); ``--kill`` as in
  ``crash_child.py`` kills the process inside a chosen call.
- ``read``: read every name again and again until each has shown round ``--until`` (or the
  time runs out), checking each value; print ``read <count> <rounds seen>``, or exit 1
  naming the bad value.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fb
from tests.crash_child import Wrappers


def value_for(round_: int, index: int, size: int) -> bytes:
    """Return the value of name ``index`` in ``round_``: a header, random bytes, a digest."""
    header = b"r=%08d i=%08d;" % (round_, index)
    body = random.Random(round_ * 1_000_003 + index).randbytes(size)
    return header + body + hashlib.sha256(header + body).digest()


def check_value(value: Any, index: int) -> int:
    """Return the round of ``value`` if it is whole and belongs to name ``index``; else raise."""
    if not isinstance(value, bytes) or len(value) < 50:
        raise AssertionError(f"n{index}: not a value: {value!r:.80}")
    header, body, digest = value[:22], value[22:-32], value[-32:]
    if hashlib.sha256(header + body).digest() != digest:
        raise AssertionError(f"n{index}: torn or altered value (header {header!r})")
    round_, got = int(header[2:10]), int(header[13:21])
    if got != index:
        raise AssertionError(f"n{index}: holds the value of n{got}")
    return round_


def _open(location: str, options: str | None, index: str = "auto") -> fb.Shelf[bytes]:
    storage = json.loads(options) if options else None
    return fb.Shelf[bytes](location, max_items=2, storage_options=storage, index=index)


def write(args: argparse.Namespace) -> None:
    """Set every name in every round, printing each set."""
    Wrappers(trace=False, kill=args.kill)
    with _open(args.location, args.options, args.index) as shelf:
        for round_ in range(args.rounds):
            for index in range(args.names):
                shelf[f"n{index}"] = value_for(round_, index, args.size)
                sys.stdout.write(f"set {round_} {index}\n")
                sys.stdout.flush()
        shelf.sync()


def read(args: argparse.Namespace) -> None:
    """Read every name until each showed round ``--until``, checking every value."""
    deadline = time.monotonic() + args.seconds
    seen: dict[int, set[int]] = {index: set() for index in range(args.names)}
    count = 0
    with _open(args.location, args.options) as shelf:
        while time.monotonic() < deadline:
            for index in range(args.names):
                value = shelf.get(f"n{index}")
                if value is None:
                    continue  # not set yet
                seen[index].add(check_value(value, index))
                count += 1
            if all(args.until in rounds for rounds in seen.values()):
                break
    rounds = len(set().union(*seen.values()))
    sys.stdout.write(f"read {count} {rounds}\n")
    if not all(args.until in r for r in seen.values()):
        raise SystemExit(
            f"timed out; rounds seen: {json.dumps({k: sorted(v) for k, v in seen.items()})}"
        )


def main(argv: list[str]) -> None:
    """Parse the command line and run the chosen mode."""
    parser = argparse.ArgumentParser()
    parser.add_argument("location")
    parser.add_argument("mode", choices=("write", "read"))
    parser.add_argument("--names", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--until", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kill")
    parser.add_argument("--options", help="storage options as JSON")
    parser.add_argument("--index", default="auto", help="the shelf's name index, if new")
    args = parser.parse_args(argv)
    write(args) if args.mode == "write" else read(args)


if __name__ == "__main__":
    main(sys.argv[1:])
