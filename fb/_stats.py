"""Statistics records: frozen snapshots of counters."""

from __future__ import annotations

import attrs

__all__ = ["PoolStatistics", "StoreStatistics"]

_nonneg = attrs.validators.ge(0)


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """A snapshot of a pool's counters, taken by `FBPool.statistics`.

    Attributes:
        items: live handles in the pool.
        resident_items: handles whose value is in memory now.
        resident_bytes: the ``sizeof`` total of the values in memory now.
        hits: loads served from memory.
        misses: loads that had to wait for a load from storage.
        loads: values read back from storage.
        stores: blobs written (eviction write-backs and explicit writes).
        evictions_clean: values dropped from memory without I/O (a blob existed).
        evictions_dirty: values dropped from memory after a write-back.
        bytes_written: encoded bytes written by ``stores``.
        bytes_loaded: the ``sizeof`` total of the values ``loads`` brought back.
        pending_writes: writes in flight now.
        pending_bytes: the ``sizeof`` total of values waiting for their eviction write.
        insert_waits: inserts that waited for write-back to drain (backpressure).
        write_errors: writes that failed (the value stayed in memory).
        load_errors: loads that failed.
        background_errors: errors collected by the store and not yet raised by ``finished``.
        load_seconds: time spent in the backend's ``load``.
        store_seconds: time spent in the backend's ``store``.
    """

    items: int = attrs.field(validator=_nonneg)
    resident_items: int = attrs.field(validator=_nonneg)
    resident_bytes: int = attrs.field(validator=_nonneg)
    hits: int = attrs.field(validator=_nonneg)
    misses: int = attrs.field(validator=_nonneg)
    loads: int = attrs.field(validator=_nonneg)
    stores: int = attrs.field(validator=_nonneg)
    evictions_clean: int = attrs.field(validator=_nonneg)
    evictions_dirty: int = attrs.field(validator=_nonneg)
    bytes_written: int = attrs.field(validator=_nonneg)
    bytes_loaded: int = attrs.field(validator=_nonneg)
    pending_writes: int = attrs.field(validator=_nonneg)
    pending_bytes: int = attrs.field(validator=_nonneg)
    insert_waits: int = attrs.field(validator=_nonneg)
    write_errors: int = attrs.field(validator=_nonneg)
    load_errors: int = attrs.field(validator=_nonneg)
    background_errors: int = attrs.field(validator=_nonneg)
    load_seconds: float = attrs.field(validator=_nonneg)
    store_seconds: float = attrs.field(validator=_nonneg)

    @property
    def evictions(self) -> int:
        """All evictions, clean and dirty."""
        return self.evictions_clean + self.evictions_dirty

    @property
    def hit_ratio(self) -> float:
        """Hits / (hits + misses), or 0.0 before the first load."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """A snapshot of a store's state, taken by `BackingStore.statistics`.

    Attributes:
        blobs: blobs referenced by live handles.
        pending_tasks: background tasks queued or running.
        pending_errors: background errors not yet raised by ``finished``.
        deletes: blobs deleted in the background so far.
        max_workers: worker threads for background work.
        closed: whether the store was closed.
    """

    blobs: int = attrs.field(validator=_nonneg)
    pending_tasks: int = attrs.field(validator=_nonneg)
    pending_errors: int = attrs.field(validator=_nonneg)
    deletes: int = attrs.field(validator=_nonneg)
    max_workers: int = attrs.field(validator=_nonneg)
    closed: bool
