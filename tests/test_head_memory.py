"""What the head holds for clients is bounded: functions nobody uses are forgotten (here, on the
agents and in the workers), and values past the object memory limit are refused with a clear error."""
import os
import subprocess
import sys
import textwrap

import pytest

import corral
from conftest import Cluster, wait_until

# Thirty distinct functions (distinct code, so distinct hashes), each run once, by a driver that
# then exits. The same source run twice gives the same hashes.
DRIVER = textwrap.dedent("""
    import corral, os
    corral.init(address=os.environ["ADDRESS"])
    fns = []
    for i in range(30):
        ns = {}
        exec(f"def f{i}(x):\\n    return x + {i}", ns)
        fns.append(corral.remote(ns[f"f{i}"]))
    print(sum(corral.get([f.remote(1) for f in fns])))
""")


@pytest.fixture
def small_head():
    c = Cluster(head_args=("--object-memory", "8MiB"))
    c.add_agent(num_cpus=1)
    c.connect()
    yield c
    corral.shutdown()
    c.stop()


def run_driver(c):
    p = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=120,
                       env={**c.env(), "ADDRESS": c.address})
    assert p.returncode == 0, p.stderr
    return int(p.stdout)


def counters():
    status = corral.cluster_status()
    return status["counters"], status["nodes"][0]["counters"]


def test_functions_no_client_uses_are_forgotten_everywhere(small_head):
    known_before = counters()[0].get("functions_known", 0)
    assert run_driver(small_head) == 30 + sum(range(30))
    # The driver is gone: the head forgets its 30 functions and tells the agent, which forgets them
    # too (its counter comes with its heartbeats).
    wait_until(lambda: counters()[0].get("functions_known", 0) == known_before, what="head forgot the functions")
    head, _ = counters()
    assert head["functions_forgotten"] >= 30
    wait_until(lambda: counters()[1].get("functions_forgotten", 0) >= 30, what="agent forgot the functions")
    # The same functions again (same hashes): shipped afresh to the agent and its worker, which
    # dropped them; a stale cache on either side would fail these tasks.
    assert run_driver(small_head) == 30 + sum(range(30))
    assert counters()[0]["functions_shipped_to_nodes"] >= 60


def test_a_function_is_kept_while_its_client_is_connected(small_head):
    @corral.remote
    def triple(x):
        return 3 * x

    assert corral.get(triple.remote(2)) == 6
    run_driver(small_head)  # another client comes and goes: its functions are forgotten, not ours
    wait_until(lambda: counters()[0]["functions_forgotten"] >= 30, what="the other client's functions forgotten")
    assert corral.get([triple.remote(i) for i in range(5)]) == [0, 3, 6, 9, 12]


@corral.remote
def size_of(blob):
    return len(blob)


def test_a_put_past_the_object_memory_is_refused_with_a_clear_error(small_head, monkeypatch):
    # Values the head holds itself: inline ones (small, or from a process without an object store).
    from corral import _store
    monkeypatch.setattr(_store, "local", lambda: None)
    first = corral.put(b"a" * (6 << 20))
    assert corral.get(size_of.remote(first)) == 6 << 20
    second = corral.put(b"b" * (6 << 20))  # 12 MiB held would pass the 8 MiB limit

    def refused():
        try:
            corral.get(second, timeout=10)
            return False
        except corral.ObjectStoreFullError as e:
            return str(e)

    message = wait_until(refused, what="the put refused")
    assert "--object-memory" in message and "8" in message
    with pytest.raises(corral.ObjectStoreFullError):
        corral.get(size_of.remote(second), timeout=30)
    # The first value is intact, and once its ref is gone the memory is free again.
    assert corral.get(first) == b"a" * (6 << 20)
    del first, second

    def third_fits():
        ref = corral.put(b"c" * (6 << 20))
        try:
            return corral.get(size_of.remote(ref), timeout=30) == 6 << 20
        except corral.ObjectStoreFullError:
            return False

    wait_until(third_fits, what="a put fits again after the refs were dropped")
