"""The shared-memory object store, end to end on real processes.

Large values (puts, results, arguments) are written once into the node's store under /dev/shm and
read back as read-only views of it; readers on another node get a copy pulled from a node that holds
them; the head keeps only where they are. Values are freed (their files deleted) when no ref is left.
"""
import gc
import os
import signal

import numpy as np
import pytest

import corral
from conftest import Cluster, wait_until

MB = 1 << 20


@corral.remote
def total(a):
    return float(a.sum()), a.flags.writeable, a.nbytes


@corral.remote
def make(n, value):
    return np.full(n, value, dtype=np.uint8)


@corral.remote
def node_of():
    return corral.runtime_context().node_id


@corral.remote
def checksum_on_this_node(a):
    return int(a.astype(np.uint64).sum()), corral.runtime_context().node_id


@corral.remote
def hold_and_die(a, partial_path):
    """Maps its argument, leaves a half-written store file behind, and dies by SIGKILL."""
    open(partial_path + f".tmp.{os.getpid()}", "wb").write(b"half")
    assert a[0] == 7
    os.kill(os.getpid(), signal.SIGKILL)


def store_dir():
    nodes = corral.nodes()
    assert len(nodes) == 1
    return nodes[0]["object_store"]["dir"]


def stored_files(d):
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def mapped_file(address):
    """The file whose mapping in this process holds `address`, or None (anonymous memory)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else None
    return None


def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


@pytest.fixture(scope="module")
def embedded():
    corral.init(num_cpus=2)
    yield store_dir()
    corral.shutdown()


def test_a_put_array_is_read_back_as_a_read_only_view_of_the_store(embedded):
    empty(embedded)
    arr = np.arange(8 * MB // 8, dtype=np.float64)
    ref = corral.put(arr)
    assert stored_files(embedded) == [f"{ref.hex()}-0"]
    anon_before = rss_anon()
    got = corral.get(ref)
    assert np.array_equal(got, arr)
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1
    # Zero copy: the array's memory is the store's file, mapped; nothing of its size was copied
    # into this process's own (anonymous) memory.
    assert mapped_file(got.ctypes.data) == os.path.join(embedded, f"{ref.hex()}-0")
    assert float(got.sum()) == float(arr.sum())
    assert rss_anon() - anon_before < arr.nbytes // 4


def empty(d):
    gc.collect()
    wait_until(lambda: stored_files(d) == [], what="the store to be empty")


def test_small_values_stay_inline(embedded):
    empty(embedded)  # (the refs of earlier tests are released in batches)
    ref = corral.put(np.zeros(100, dtype=np.uint8))
    assert stored_files(embedded) == []
    assert corral.get(ref).sum() == 0


def test_values_over_the_64_mib_message_limit_and_numpy_arguments(embedded):
    arr = np.ones(100_000_000 // 8)  # 100 MB: once refused, now put for the call
    s, writeable, nbytes = corral.get(total.remote(arr))
    assert (s, writeable, nbytes) == (float(len(arr)), False, arr.nbytes)
    blob = b"x" * (70 * MB)  # plain bytes, pickled in-band, over the message limit
    assert corral.get(corral.put(blob)) == blob


def test_a_large_result_stays_in_the_store_and_is_mapped_by_the_driver(embedded):
    ref = make.remote(5 * MB, 3)
    got = corral.get(ref)
    assert got.shape == (5 * MB,) and int(got[0]) == 3 and int(got[-1]) == 3
    assert mapped_file(got.ctypes.data).startswith(embedded + "/")
    # A task given the result reads it from the store too.
    assert corral.get(total.remote(ref))[0] == 15.0 * MB


def test_dropping_the_last_ref_deletes_the_file_and_status_shows_the_usage(embedded):
    empty(embedded)
    refs = [corral.put(np.ones(MB)) for _ in range(3)]  # 8 MB each
    node = corral.nodes()[0]
    assert node["object_store"]["objects"] == 3
    assert node["object_store"]["used_bytes"] >= 3 * 8 * MB
    assert 0 < node["object_store"]["capacity_bytes"]
    del refs
    empty(embedded)
    wait_until(lambda: corral.nodes()[0]["object_store"]["used_bytes"] == 0, what="usage back to 0")


def test_an_array_in_use_survives_its_ref(embedded):
    ref = corral.put(np.full(MB, 5.0))
    arr = corral.get(ref)
    name = f"{ref.hex()}-0"
    del ref
    empty(embedded)
    assert float(arr.sum()) == 5.0 * MB  # the mapping keeps its pages
    # Its file is not kept for reuse while mapped: the next value of its size gets new pages.
    assert not any(n.endswith("-" + name) for n in os.listdir(os.path.join(embedded, ".free")))
    others = [corral.put(np.full(MB, 9.0)) for _ in range(2)]
    assert float(arr.sum()) == 5.0 * MB
    assert [float(corral.get(r)[0]) for r in others] == [9.0, 9.0]


def test_a_worker_killed_holding_a_mapping_leaks_nothing(embedded):
    ref = corral.put(np.full(2 * MB, 7, dtype=np.uint8))
    partial = os.path.join(embedded, "deadbeef-0")
    with pytest.raises(corral.WorkerCrashedError):
        corral.get(hold_and_die.options(max_retries=0).remote(ref, partial))
    # The agent removes what the dead worker left half-written.
    wait_until(lambda: not [n for n in os.listdir(embedded) if ".tmp." in n], what="the partial file to go")
    del ref
    empty(embedded)


def test_a_freed_file_is_written_over_by_the_next_value_of_its_size(embedded):
    pool = os.path.join(embedded, ".free")
    odd = 5 * MB + 777  # a size no other test leaves in the pool
    ref = corral.put(np.ones(odd, dtype=np.uint8))
    name = f"{ref.hex()}-0"
    inode = os.stat(os.path.join(embedded, name)).st_ino
    del ref
    wait_until(lambda: any(n.endswith("-" + name) for n in os.listdir(pool)), what="its file kept in the pool")
    arr = np.arange(odd - 100, dtype=np.uint8)
    ref = corral.put(arr)
    path = os.path.join(embedded, f"{ref.hex()}-0")
    assert os.stat(path).st_ino == inode  # the same file, and so the same pages
    assert not any(n.endswith("-" + name) for n in os.listdir(pool))
    got = corral.get(ref)
    assert np.array_equal(got, arr)
    assert os.stat(path).st_size < odd + 4096  # cut to its new size
    # A task's result is written into a freed file too.
    del got, ref
    wait_until(lambda: len(os.listdir(pool)) > 0, what="a file in the pool")
    assert int(corral.get(make.remote(odd, 9))[-1]) == 9


def test_a_large_value_written_over_a_freed_file_reads_back_whole(embedded):
    # Large enough to be copied by several threads into the freed file's pages (value_writer.cc).
    pool = os.path.join(embedded, ".free")
    size = 24 * MB + 4099
    ref = corral.put(np.zeros(size, dtype=np.uint8))
    name = f"{ref.hex()}-0"
    del ref
    wait_until(lambda: any(n.endswith("-" + name) for n in os.listdir(pool)), what="its file kept in the pool")
    arr = (np.arange(size, dtype=np.uint64) * 2654435761 % 251).astype(np.uint8)
    ref = corral.put(arr)
    assert not any(n.endswith("-" + name) for n in os.listdir(pool))  # it was taken
    assert np.array_equal(corral.get(ref), arr)


# ---- references inside values: containers and borrowers ----

@corral.remote
def sum_of_refs(refs):
    return sum(int(corral.get(r)[0]) for r in refs)


@corral.remote
def put_inside_a_list(value):
    return [corral.put(np.full(MB, value, dtype=np.uint8))]  # the worker owns it, and drops its handle


def test_refs_inside_an_argument_are_freed_once_the_task_and_the_caller_are_done(embedded):
    empty(embedded)
    refs = [corral.put(np.full(MB, i, dtype=np.uint8)) for i in range(3)]
    assert corral.get(sum_of_refs.remote(refs)) == 0 + 1 + 2
    assert len(stored_files(embedded)) == 3
    del refs
    empty(embedded)  # not kept until the driver exits: nothing holds them any more


def test_a_ref_in_a_result_lives_while_a_borrower_holds_it(embedded):
    empty(embedded)
    outer = put_inside_a_list.remote(7)
    inner = corral.get(outer)  # the driver now borrows the worker's value
    del outer
    gc.collect()
    import time
    time.sleep(0.5)  # (releases go in batches): the container is gone, the borrow keeps the value
    assert len(stored_files(embedded)) == 1
    assert int(corral.get(inner[0])[0]) == 7
    del inner
    empty(embedded)


def test_a_ref_put_inside_a_put_lives_with_it(embedded):
    empty(embedded)
    outer = corral.put({"inner": corral.put(np.full(MB, 3, dtype=np.uint8))})  # the inner handle goes at once
    gc.collect()
    inner = corral.get(outer)["inner"]
    assert int(corral.get(inner)[0]) == 3
    del outer, inner
    empty(embedded)
