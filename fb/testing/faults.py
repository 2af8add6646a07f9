"""Fault injection: a backend wrapper that makes chosen calls fail, stall or slow down.

`FaultyStrategy` wraps any `fb.typing.Strategy` (an `FBStore` on a real directory, on S3,
or a third-party backend) and passes every call through, except those a rule matches::

    faulty = FaultyStrategy(FBStore("pickle", tmp_path))
    faulty.fail("store", ENOSPC, times=2)          # the next two writes: disk full
    faulty.fail("load", EIO, probability=0.1)      # one load in ten: I/O error
    faulty.block("store", event)                   # writes wait for an Event
    faulty.heal()                                  # back to normal

Injected errors are the ones real storage raises: ``OSError`` with ``ENOSPC``, ``EIO`` or
``EACCES``, S3-style ``503 Slow Down`` and connection errors; an injected error is raised
*before* the inner call, so storage is never left half-written by the wrapper itself.
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

import attrs

__all__ = [
    "EACCES",
    "EIO",
    "ENOSPC",
    "S3_CONNECTION",
    "S3_SLOW_DOWN",
    "FaultyStrategy",
]

T = TypeVar("T")

OPERATIONS = frozenset(
    {"store", "load", "delete", "scan", "persist", "register", "delete_persisted", "fsync"}
)


def ENOSPC(op: str, target: str) -> BaseException:  # noqa: N802 - reads like the errno
    """Disk full."""
    return OSError(errno.ENOSPC, f"No space left on device (injected into {op})", target)


def EIO(op: str, target: str) -> BaseException:  # noqa: N802 - reads like the errno
    """An I/O error."""
    return OSError(errno.EIO, f"Input/output error (injected into {op})", target)


def EACCES(op: str, target: str) -> BaseException:  # noqa: N802 - reads like the errno
    """Permission denied."""
    return PermissionError(errno.EACCES, f"Permission denied (injected into {op})", target)


def S3_SLOW_DOWN(op: str, target: str) -> BaseException:  # noqa: N802 - a constant-like name
    """What an overloaded S3 answers: 503 Slow Down, as fb maps it (an OSError)."""
    return OSError(errno.EIO, f"ServiceUnavailable: 503 Slow Down (injected into {op})", target)


def S3_CONNECTION(op: str, target: str) -> BaseException:  # noqa: N802 - a constant-like name
    """A dropped connection to the endpoint."""
    return ConnectionError(
        errno.ECONNRESET, f"Connection reset by peer (injected into {op})", target
    )


ErrorFactory = Callable[[str, str], BaseException]


@attrs.define(eq=False)
class _Rule:
    op: str
    error: ErrorFactory | None
    times: int | None
    probability: float
    after: int
    delay: float
    gate: threading.Event | None
    seen: int = 0


class FaultyStrategy(Generic[T]):
    """Wraps a strategy and injects faults into chosen operations.

    Args:
        inner: the real strategy.
        seed: seed for probabilistic faults (reproducible runs).

    Attributes:
        calls: how many times each operation was called.
        injected: how many faults were injected into each operation.

    Notes:
        Thread-safe. Rules are matched in the order they were added; the first that fires
        decides. Stalls (`block`, ``delay``) happen outside the wrapper's lock.
    """

    def __init__(self, inner: Any, *, seed: int | None = None) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def __repr__(self) -> str:
        return f"FaultyStrategy({self.inner!r}, rules={len(self._rules)})"

    def __getattr__(self, name: str) -> Any:
        # Everything else (codec, path, blob_path, exists, sweep ...) is the inner store's.
        return getattr(self.inner, name)

    # -- rules -----------------------------------------------------------------------------

    def fail(
        self,
        op: str,
        error: ErrorFactory | BaseException | type[BaseException] = EIO,
        *,
        times: int | None = None,
        probability: float = 1.0,
        after: int = 0,
    ) -> None:
        """Make ``op`` raise ``error``.

        Args:
            op: the operation (``"store"``, ``"load"``, ``"delete"``, ``"persist"``, …).
            error: a factory such as `ENOSPC`, an exception instance, or a class.
            times: fire at most this many times (None: until `heal`).
            probability: chance that a matching call fails.
            after: let this many matching calls through first.
        """
        self._add(op, _factory(error), times, probability, after, 0.0, None)

    def slow(self, op: str, seconds: float, *, times: int | None = None) -> None:
        """Make ``op`` take ``seconds`` longer (a slow disk or a slow network)."""
        self._add(op, None, times, 1.0, 0, seconds, None)

    def block(self, op: str, gate: threading.Event, *, times: int | None = None) -> None:
        """Make ``op`` wait until ``gate`` is set (to observe state during the call)."""
        self._add(op, None, times, 1.0, 0, 0.0, gate)

    def heal(self) -> None:
        """Remove every rule: all calls pass through again."""
        with self._lock:
            self._rules.clear()

    def _add(
        self,
        op: str,
        error: ErrorFactory | None,
        times: int | None,
        probability: float,
        after: int,
        delay: float,
        gate: threading.Event | None,
    ) -> None:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; one of {sorted(OPERATIONS)}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], not {probability}")
        rule = _Rule(op, error, times, probability, after, delay, gate)
        with self._lock:
            self._rules.append(rule)

    def _enter(self, op: str, target: str) -> None:
        fired: _Rule | None = None
        with self._lock:
            self.calls[op] += 1
            for rule in self._rules:
                if rule.op != op:
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.times is not None and rule.times <= 0:
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                fired = rule
                self.injected[op] += 1
                break
        if fired is None:
            return
        if fired.gate is not None:
            fired.gate.wait()
        if fired.delay:
            time.sleep(fired.delay)  # the injected fault *is* slowness
        if fired.error is not None:
            raise fired.error(op, target)

    # -- the strategy interface ------------------------------------------------------------

    def store(self, key: UUID, value: T) -> int:
        """Store, unless a rule says otherwise."""
        self._enter("store", key.hex)
        return int(self.inner.store(key, value))

    def load(self, key: UUID) -> T:
        """Load, unless a rule says otherwise."""
        self._enter("load", key.hex)
        return self.inner.load(key)  # type: ignore[no-any-return]

    def delete(self, key: UUID) -> None:
        """Delete, unless a rule says otherwise."""
        self._enter("delete", key.hex)
        self.inner.delete(key)

    def close(self) -> None:
        """Close the inner strategy (never faulted: closing must always work)."""
        self.inner.close()

    def scan(self, location: Any) -> tuple[set[UUID], list[str]]:
        """Scan, unless a rule says otherwise."""
        self._enter("scan", str(location))
        return self.inner.scan(location)  # type: ignore[no-any-return]

    def persist(self, key: UUID, location: Any) -> list[str]:
        """Persist, unless a rule says otherwise."""
        self._enter("persist", key.hex)
        return self.inner.persist(key, location)  # type: ignore[no-any-return]

    def register(self, key: UUID, location: Any) -> bool:
        """Register, unless a rule says otherwise."""
        self._enter("register", key.hex)
        return bool(self.inner.register(key, location))

    def delete_persisted(self, key: UUID, location: Any) -> list[str]:
        """Delete a persisted blob, unless a rule says otherwise."""
        self._enter("delete_persisted", key.hex)
        return self.inner.delete_persisted(key, location)  # type: ignore[no-any-return]

    def fsync(self, location: Any, paths: set[str]) -> None:
        """Fsync, unless a rule says otherwise."""
        self._enter("fsync", str(location))
        self.inner.fsync(location, paths)


def _factory(error: ErrorFactory | BaseException | type[BaseException]) -> ErrorFactory:
    if isinstance(error, BaseException):
        instance = error
        return lambda op, target: instance
    if isinstance(error, type) and issubclass(error, BaseException):
        cls = error
        return lambda op, target: cls(f"injected into {op} ({target})")
    if callable(error):
        return cast("ErrorFactory", error)
    raise TypeError(f"an error factory, exception or exception class is needed, not {error!r}")
