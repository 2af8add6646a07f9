# The persistence example of the Rust crate file_backed, in fb's Python API.
# Run it with: python examples/persistence.py
#
# Two runs over the same cache and persist directories. The second run really is a new
# process: this script starts itself again with the key and the directories, and that
# process finds the item persisted by the first one.
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec


def first_run(cache_dir: str, persist_dir: str) -> uuid.UUID:
    store = BackingStore(FBStore(PickleCodec(), PreparedPath(cache_dir)))
    pool: FBPool[str] = FBPool(store, max_items=1)
    tracked = store.track_path(PreparedPath(persist_dir))  # a path or URL works too
    item = pool.insert("Persisted Data")
    key = item.key  # uuid.UUID
    item.persist(tracked)  # hard link (same device) / copy
    store.fsync(tracked)  # durability barrier
    print(f"run 1 (pid {os.getpid()}): persisted {key.hex}")
    store.finished()
    store.close()  # the cache blob goes; the persisted one stays
    return key


def second_run(cache_dir: str, persist_dir: str, key: str) -> None:
    store = BackingStore(FBStore(PickleCodec(), PreparedPath(cache_dir)))
    pool: FBPool[str] = FBPool(store, max_items=1)
    tracked = store.track_path(PreparedPath(persist_dir))
    item = pool.register(tracked, key)  # None if the key is not there
    assert item is not None
    with item.load() as value:
        assert value == "Persisted Data"
        print(f"run 2 (pid {os.getpid()}): registered {item.key.hex} -> {value!r}")
    assert pool.register(tracked, uuid.uuid4()) is None  # an unknown key
    store.finished()
    store.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--second-run"]:
        second_run(*sys.argv[2:5])
    else:
        tmp = tempfile.mkdtemp()
        try:
            cache_dir, persist_dir = os.path.join(tmp, "cache"), os.path.join(tmp, "persist")
            os.mkdir(persist_dir)
            key = first_run(cache_dir, persist_dir)
            # ... later, in a new process ...
            subprocess.run(
                [sys.executable, __file__, "--second-run", cache_dir, persist_dir, key.hex],
                check=True,
            )
        finally:
            shutil.rmtree(tmp)
