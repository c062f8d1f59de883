"""The object store across nodes: a full store, values pulled agent to agent from a node that holds
them, and values lost with their node. Each test starts its own head and agents on this machine; two
agents are two nodes with their own stores, and a reader on one never opens the other's directory."""
import contextlib
import os
import shutil
import signal
import sys
import time

import numpy as np
import pytest

import corral
from conftest import Cluster, Process, wait_until
from test_object_store import MB, checksum_on_this_node, make, stored_files, total


@contextlib.contextmanager
def fresh_cluster(dead_after_ms=None):
    """A head of the test's own (it adds the agents); the driver disconnects and every process
    stops after. `dead_after_ms`: fast liveness (heartbeat 200 ms, suspect after 1 s)."""
    os.environ.pop("CORRAL_ADDRESS", None)
    liveness = ("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", str(dead_after_ms))
    c = Cluster(head_args=liveness if dead_after_ms else ())
    try:
        yield c
    finally:
        corral.shutdown()
        c.stop()


def test_a_value_larger_than_the_store_is_refused_with_a_clear_error():
    with fresh_cluster() as c:
        c.add_agent(num_cpus=1, extra=["--object-store-memory", "12MiB"])
        c.connect()
        first = corral.put(np.ones(MB))  # 8 MiB
        # A value larger than the whole store cannot go in, spilling or not.
        with pytest.raises(corral.ObjectStoreFullError, match="--object-store-memory"):
            corral.put(np.ones(2 * MB))
        assert corral.get(first).sum() == MB
        # A task's argument is put for the call: the call raises the same way.
        with pytest.raises(corral.ObjectStoreFullError):
            total.remote(np.ones(2 * MB))
        d = corral.nodes()[0]["object_store"]["dir"]
        wait_until(lambda: len(stored_files(d)) == 1, what="the refused value's file to be deleted")


def test_a_value_on_another_node_is_pulled_agent_to_agent():
    """Two agents on this machine are two nodes with their own stores: a reader on one that is
    given a value held by the other has its agent pull it from the other agent (it never opens the
    other node's directory, and the bytes do not pass through the head)."""
    with fresh_cluster() as c:
        a = c.add_agent(num_cpus=1, labels={"side": "a"})
        b = c.add_agent(num_cpus=1, labels={"side": "b"})
        c.connect()
        c.wait_nodes(2)
        made = make.options(label_selector={"side": "a"}).remote(20 * MB + 12345, 9)
        want = 9 * (20 * MB + 12345)
        s, where = corral.get(checksum_on_this_node.options(label_selector={"side": "b"}).remote(made))
        assert (s, where) == (want, b.node_id)
        # b's agent pulled it from a's agent (each counts its side); nothing was relayed by the head.
        counter = lambda node, name: {n["node_id"]: n["counters"].get(name, 0) for n in corral.nodes()}[node]  # noqa: E731
        wait_until(lambda: counter(a.node_id, "object_bytes_served") >= 20 * MB
                   and counter(b.node_id, "object_bytes_received") >= 20 * MB,
                   what="a's agent to report the bytes it served and b's those it received")
        assert counter(a.node_id, "object_bytes_sent") == 0 and counter(b.node_id, "object_bytes_sent") == 0
        # The copy is in b's store: the next reader there maps it.
        stores = {n["node_id"]: n["object_store"] for n in corral.nodes()}
        assert stores[b.node_id]["objects"] == 1 and stores[b.node_id]["used_bytes"] >= 20 * MB
        sent = lambda: counter(a.node_id, "object_bytes_served")  # noqa: E731
        before = sent()
        assert corral.get(checksum_on_this_node.options(label_selector={"side": "b"}).remote(made)) == (want, b.node_id)
        time.sleep(1.5)  # (counters come with heartbeats)
        assert sent() == before
        # Without a selector, a task goes where its argument's bytes are: b, registered second, where
        # a tie between two idle nodes would otherwise go to a.
        on_b = make.options(label_selector={"side": "b"}).remote(MB, 1)
        for _ in range(3):
            assert corral.get(checksum_on_this_node.remote(on_b)) == (MB, b.node_id)
        # The driver runs on this machine too: it maps the copy in a's store, the first node it found.
        got = corral.get(made)
        assert int(got.astype(np.uint64).sum()) == want and not got.flags.writeable
        # Freed: both copies go.
        del made, got, on_b
        import gc
        gc.collect()
        wait_until(lambda: all(stored_files(st["dir"]) == [] for st in stores.values()), what="every copy deleted")


@corral.remote
def checksum_after(a, gate):
    while not os.path.exists(gate):
        time.sleep(0.01)
    return int(a.astype(np.uint64).sum())


def test_readers_on_one_node_share_one_transfer():
    """Several readers on one node that need the same value at once: their agent pulls it once."""
    with fresh_cluster() as c:
        a = c.add_agent(num_cpus=1, labels={"side": "a"})
        b = c.add_agent(num_cpus=3, labels={"side": "b"})
        c.connect()
        c.wait_nodes(2)
        made = make.options(label_selector={"side": "a"}).remote(200 * MB, 3)  # long enough to overlap
        corral.wait([made], timeout=60)
        gate = os.path.join(c.dir, "go")
        # Three tasks wait on b for the value together (their arguments are fetched before they run).
        readers = [checksum_after.options(label_selector={"side": "b"}).remote(made, gate) for _ in range(3)]
        open(gate, "w").close()
        assert corral.get(readers, timeout=60) == [3 * 200 * MB] * 3
        counter = lambda node, name: {n["node_id"]: n["counters"].get(name, 0) for n in corral.nodes()}[node]  # noqa: E731
        wait_until(lambda: counter(b.node_id, "object_bytes_received") >= 200 * MB, what="b's counters")
        time.sleep(1.5)  # (counters come with heartbeats: let a second transfer show, if there was one)
        size = {n["node_id"]: n["object_store"] for n in corral.nodes()}[b.node_id]["used_bytes"]
        assert counter(b.node_id, "object_bytes_received") == size
        assert counter(a.node_id, "object_bytes_served") == size


def test_a_value_whose_only_node_died_raises_object_lost_naming_it():
    with fresh_cluster(dead_after_ms=3000) as c:
        a = c.add_agent(num_cpus=1, labels={"side": "a"})
        c.add_agent(num_cpus=1, labels={"side": "b"})
        c.connect()
        c.wait_nodes(2)
        ref = make.options(label_selector={"side": "a"}, max_retries=0).remote(MB, 1)  # not rebuildable
        corral.wait([ref], timeout=60)
        a.kill()
        shutil.rmtree(f"/dev/shm/corral-{a.node_id[:16]}")  # as if its machine were gone
        wait_until(lambda: any(n["state"] == "dead" for n in corral.nodes()), what="node a dead")
        with pytest.raises(corral.ObjectLostError, match=a.node_id[:8] + ".*cannot be rebuilt"):
            corral.get(ref)
        with pytest.raises(corral.ObjectLostError):
            corral.get(total.options(label_selector={"side": "b"}).remote(ref))


def test_a_full_store_spills_least_recently_used_values_to_disk_and_reads_them_back():
    with fresh_cluster() as c:
        spill = os.path.join(c.dir, "spill")
        os.makedirs(spill)
        with open(os.path.join(spill, "mine.txt"), "w") as f:  # the operator's own file stays untouched
            f.write("keep")
        c.add_agent(num_cpus=1, extra=["--object-store-memory", "24MiB", "--spill-dir", spill])
        c.connect()
        refs = [corral.put(np.full(MB, float(i))) for i in range(5)]  # 5 x 8 MiB into 24 MiB
        node = wait_until(lambda: [n for n in corral.nodes() if n["object_store"]["spilled_bytes"] >= 16 * MB
                                   and n["object_store"]["used_bytes"] <= 24 * MB], what="values spilled")[0]
        store = node["object_store"]
        assert store["spill_dir"].startswith(spill + "/corral-")  # ours, inside the directory given
        spill = store["spill_dir"]
        assert store["objects"] == 5
        # The oldest went to disk first; every value reads back whole, from memory or from disk.
        assert f"{refs[0].hex()}-0" in os.listdir(spill)
        assert f"{refs[4].hex()}-0" in stored_files(store["dir"])
        for i, r in enumerate(refs):
            got = corral.get(r)
            assert got.shape == (MB,) and float(got[0]) == i and float(got[-1]) == i
        # A task on the node reads a spilled value too.
        assert corral.get(total.remote(refs[0]))[0] == 0.0
        assert corral.get(total.remote(refs[1]))[0] == float(MB)
        del refs, got, r
        import gc
        gc.collect()
        wait_until(lambda: os.listdir(spill) == [] and stored_files(store["dir"]) == [],
                   what="both directories empty once the values are freed")
        assert open(os.path.join(os.path.dirname(spill), "mine.txt")).read() == "keep"


def test_a_put_past_capacity_when_spilling_fails_is_a_clear_error_not_a_hang():
    with fresh_cluster() as c:
        spill = os.path.join(c.dir, "spill")
        c.add_agent(num_cpus=1, extra=["--object-store-memory", "20MiB", "--spill-dir", spill])
        c.connect()
        shutil.rmtree(spill)
        open(spill, "w").close()  # the spill directory is now a file: every spill fails, as on a dead disk
        kept = [corral.put(np.ones(MB)), corral.put(np.ones(MB))]  # 16 MiB
        with pytest.raises(corral.ObjectStoreFullError):
            for _ in range(5):  # the first past capacity asks for a spill; it fails, and puts are refused
                kept.append(corral.put(np.ones(MB)))
                time.sleep(0.2)
        with pytest.raises(corral.ObjectStoreFullError, match="spilling to disk failed"):
            corral.put(np.ones(MB))
        assert all(corral.get(r).sum() == MB for r in kept)  # nothing lost


@corral.remote
def plus(a, k):
    return a + k


def test_results_lost_with_their_node_are_rebuilt_by_running_their_tasks_again():
    with fresh_cluster(dead_after_ms=3000) as c:
        a = c.add_agent(num_cpus=1)
        c.connect()
        c.wait_nodes(1)
        first = make.remote(MB, 4)        # on a, the only node
        second = plus.remote(first, 1)    # on a too (its argument is there)
        corral.wait([second], timeout=60)
        b = c.add_agent(num_cpus=1)
        c.wait_nodes(2)
        a.kill()
        shutil.rmtree(f"/dev/shm/corral-{a.node_id[:16]}")  # as if its machine were gone
        wait_until(lambda: any(n["state"] == "dead" for n in corral.nodes()), what="node a dead")
        got = corral.get(second, timeout=60)  # both tasks run again on b, the first one first
        assert got.shape == (MB,) and int(got[0]) == 5 and int(got[-1]) == 5
        assert int(corral.get(first, timeout=60)[0]) == 4
        counters = corral.cluster_status()["counters"]
        assert counters["tasks_reconstructed"] == 2
        assert corral.get(checksum_on_this_node.remote(second))[1] == b.node_id


@corral.remote
def hold(path):
    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"


def test_a_task_queued_on_a_value_being_rebuilt_waits_for_it():
    with fresh_cluster(dead_after_ms=3000) as c:
        a = c.add_agent(num_cpus=1)
        c.connect()
        c.wait_nodes(1)
        made = make.remote(MB, 6)  # on a
        corral.wait([made], timeout=60)
        c.add_agent(num_cpus=2, resources={"slot": 1})
        c.wait_nodes(2)
        gate = os.path.join(c.dir, "go")
        busy = hold.options(resources={"slot": 1}).remote(gate)  # b's only slot
        time.sleep(0.5)
        # Waits in the head's queue for the slot (not CPU-only: never sent ahead to the node).
        queued = checksum_on_this_node.options(resources={"slot": 1}).remote(made)
        a.kill()
        shutil.rmtree(f"/dev/shm/corral-{a.node_id[:16]}")
        wait_until(lambda: corral.cluster_status()["counters"].get("tasks_reconstructed", 0) == 1,
                   what="the value's task to run again")
        open(gate, "w").close()
        assert corral.get(busy, timeout=60) == "released"
        assert corral.get(queued, timeout=60)[0] == 6 * MB  # the rebuilt value, not an empty one


def test_values_an_agent_lost_when_it_restarted_are_rebuilt():
    """An agent killed and started again at once (as systemd would) comes back as the same node
    before it is declared dead, with its store emptied: the head finds out on the first read."""
    with fresh_cluster(dead_after_ms=30000) as c:
        a = c.add_agent(num_cpus=1)
        c.connect()
        c.wait_nodes(1)
        made = make.remote(2 * MB, 8)
        corral.wait([made], timeout=60)
        args, log = a.args, a.log_path
        a.kill()
        again = Process(args, log, env=a.env)
        c.agents[0] = again
        again.node_id = again.ready
        assert again.node_id == a.node_id  # the same node, registered again before it was declared dead
        got = corral.get(made, timeout=60)
        assert got.shape == (2 * MB,) and int(got[0]) == 8 and int(got[-1]) == 8
        counters = corral.cluster_status()["counters"]
        assert counters["stored_copies_missing"] == 1 and counters["tasks_reconstructed"] == 1


def test_a_node_that_comes_back_from_the_dead_drops_the_values_it_missed():
    """A node paused past the dead threshold (a laptop asleep) comes back holding a value the head
    gave up on meanwhile: when it registers again, the head has it deleted."""
    with fresh_cluster(dead_after_ms=3000) as c:
        a = c.add_agent(num_cpus=1, labels={"side": "a"})
        c.add_agent(num_cpus=1, labels={"side": "b"})
        c.connect()
        c.wait_nodes(2)
        ref = make.options(label_selector={"side": "a"}, max_retries=0).remote(MB, 1)
        corral.wait([ref], timeout=60)
        a_dir = {n["node_id"]: n["object_store"]["dir"] for n in corral.nodes()}[a.node_id]
        assert len(stored_files(a_dir)) == 1
        os.kill(a.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: {n["node_id"]: n["state"] for n in corral.nodes()}[a.node_id] == "dead",
                       what="node a declared dead")
            with pytest.raises(corral.ObjectLostError):
                corral.get(ref, timeout=30)
            del ref
            time.sleep(5)  # a node lists values written at least 5 s before it registers
        finally:
            os.kill(a.pid, signal.SIGCONT)
        wait_until(lambda: {n["node_id"]: n["state"] for n in corral.nodes()}[a.node_id] == "alive",
                   timeout=60, what="node a back")
        wait_until(lambda: stored_files(a_dir) == [], what="the value the head gave up on deleted on a")


def test_a_value_on_the_heads_own_node_is_pulled_from_the_agent_inside_the_head(tmp_path):
    """The head's machine runs its agent inside the head process, found by others at the head's
    address (its object port is advertised as ":PORT")."""
    os.environ.pop("CORRAL_ADDRESS", None)
    from corral import _cluster
    corral.init(num_cpus=1)
    try:
        c = corral._runtime.cluster
        head_node = corral.nodes()[0]
        assert head_node["peer_address"].startswith(":")
        made = corral.put(np.full(4 * MB, 5, dtype=np.uint8))  # the driver's store: the head's node
        proc = _cluster.start_process(
            [_cluster.corral_binary(), "start", "--address", c.address, "--block", "--exit-on-stdin-eof",
             "--state-dir", str(tmp_path / "b"), "--num-cpus", "1", "--labels", "side=b",
             "--python", sys.executable, "--python-path", os.path.dirname(os.path.abspath(__file__))],
            str(tmp_path / "b.log"), dict(os.environ, CORRAL_TOKEN=c.token))[0]
        try:
            wait_until(lambda: len(corral.nodes()) == 2, what="the second node")
            s, where = corral.get(checksum_on_this_node.options(label_selector={"side": "b"}).remote(made), timeout=60)
            assert s == 5 * 4 * MB and where != head_node["node_id"]
            counter = lambda node, name: {n["node_id"]: n["counters"].get(name, 0) for n in corral.nodes()}[node]  # noqa: E731
            wait_until(lambda: counter(head_node["node_id"], "object_bytes_served") >= 4 * MB,
                       what="the head's agent to report the bytes it served")
        finally:
            _cluster.stop_process(proc)
    finally:
        corral.shutdown()
