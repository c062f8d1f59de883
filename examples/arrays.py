"""Large arrays through Corral's shared-memory object store: put once, read without copying, pass to
tasks, get large results back, free with the last ref.

Needs numpy. Run with `.venv/bin/python examples/arrays.py` after `make demo` (or scripts/setup.sh).
"""
import gc
import os
import time

import numpy as np

import corral


@corral.remote
def column_means(frame):
    # `frame` is a read-only view of the node's shared memory: no copy was made for this task.
    return frame.mean(axis=0), frame.flags.writeable


@corral.remote
def normalise(frame, means):
    return frame - means  # a 64 MB result: written once into the store, not sent to the head


def store_usage():
    store = corral.nodes()[0]["object_store"]
    return store["used_bytes"], store["capacity_bytes"], store["dir"]


def main():
    corral.init()
    rng = np.random.default_rng(7)
    frame = rng.standard_normal((1_000_000, 8))  # 64 MB

    t = time.perf_counter()
    ref = corral.put(frame)
    print(f"put 64 MB in {(time.perf_counter() - t) * 1000:.1f} ms")
    t = time.perf_counter()
    view = corral.get(ref)
    print(f"get in {(time.perf_counter() - t) * 1000:.2f} ms: a read-only view of the store "
          f"(writeable={view.flags.writeable}), equal to the original: {np.array_equal(view, frame)}")

    means, writeable = corral.get(column_means.remote(ref))
    print(f"column means from a task: {np.round(means, 3)} (its argument writeable={writeable})")

    centred = corral.get(normalise.remote(ref, means))
    print(f"a 64 MB result back: max |column mean| after normalising = {np.abs(centred.mean(axis=0)).max():.2e}")

    used, capacity, where = store_usage()
    print(f"object store {where}: {used / 1e6:.0f} MB used of {capacity / 1e9:.1f} GB")
    del ref, view, centred
    gc.collect()
    for _ in range(100):
        if store_usage()[0] == 0:
            break
        time.sleep(0.05)
    values = [n for n in os.listdir(where) if not n.startswith(".")]  # (.node, and .free: freed files kept for reuse)
    print(f"after dropping the refs: {store_usage()[0]} bytes used, {len(values)} files left")
    corral.shutdown()


if __name__ == "__main__":
    main()
