# The first example of the Rust crate file_backed, in fb's Python API.
# Run it with: python examples/simple_usage.py
import tempfile

from fb import BackingStore, FBPool
from fb.backends import FBStore, PreparedPath
from fb.codecs import PickleCodec

with tempfile.TemporaryDirectory() as tmp:
    store = BackingStore(FBStore(PickleCodec(), PreparedPath(tmp)))
    pool: FBPool[str] = FBPool(store, max_items=2)  # cache size 2

    items = [pool.insert("Hello"), pool.insert("World"), pool.insert("!")]  # "Hello" is evicted
    with items[0].load() as value:  # read guard: enters to the value
        assert value == "Hello"  # (reloaded from disk if needed)
        print(f"loaded {value!r}")
    with items[1].load_mut() as guard:  # write guard: enters to itself
        guard.value = guard.value.upper()  # replace or mutate; new key
    with items[1].load() as value:
        assert value == "WORLD"
        print(f"changed to {value!r}")
    items.clear()  # handles gone -> blobs deleted
    store.finished()  # wait for background work
    store.close()
