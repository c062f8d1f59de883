"""Actors across nodes and drivers, on real processes: detached names, agent loss, placement."""
import subprocess
import sys
import textwrap

import pytest

import corral
from conftest import Cluster, wait_until
from test_actors import Counter, actor_info


DRIVER = textwrap.dedent("""
    import sys, corral
    corral.init(address=sys.argv[1])

    @corral.remote
    class Store:
        def __init__(self): self.d = {}
        def set(self, k, v): self.d[k] = v
        def get(self, k): return self.d.get(k)

    s = Store.options(name="store", namespace="shop", lifetime="detached").remote()
    corral.get(s.set.remote("apples", 3))
    t = Store.options(name="scratch", namespace="shop").remote()
    corral.get(t.set.remote("x", 1))
    print("OK", flush=True)
""")


@pytest.fixture
def two_nodes():
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    yield c
    corral.shutdown()
    c.stop()


def test_detached_actor_outlives_its_creator_and_is_found_from_another_driver(two_nodes):
    two_nodes.add_agent(num_cpus=2)
    env = two_nodes.env()
    out = subprocess.run([sys.executable, "-c", DRIVER, two_nodes.address], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "OK", out.stderr
    two_nodes.connect()
    store = corral.get_actor("store", namespace="shop")
    assert corral.get(store.get.remote("apples")) == 3
    # The creator's other actor was not detached: it ended with its creator.
    with pytest.raises(corral.ActorNotFoundError):
        corral.get_actor("scratch", namespace="shop")
    dead = [a for a in corral.list_actors(include_dead=True) if a["name"] == "scratch"]
    assert dead and dead[0]["state"] == "DEAD" and "exited" in dead[0]["death_cause"]
    corral.kill(store)
    wait_until(lambda: not any(a["name"] == "store" for a in corral.list_actors()), what="the kill")


def test_restart_on_another_node_after_kill_9_of_its_agent(two_nodes):
    a = two_nodes.add_agent(num_cpus=1, labels={"box": "a"})
    b = two_nodes.add_agent(num_cpus=1, labels={"box": "b"})
    two_nodes.connect()
    two_nodes.wait_nodes(2)
    c = Counter.options(num_cpus=1, max_restarts=1, max_task_retries=1).remote(0)
    assert corral.get(c.incr.remote()) == 1
    first = actor_info(c)["node_id"]
    victim = a if a.node_id.startswith(first) else b
    running = c.sleep.remote(5)
    wait_until(lambda: actor_info(c)["running_calls"] == 1, what="the call to reach the actor")
    victim.kill()
    # Declared dead after the dead threshold (3 s): the actor restarts on the other node (its
    # constructor again: n is 0) and the running call runs again there.
    assert corral.get(running, timeout=60) == 0
    assert corral.get(c.incr.remote(), timeout=60) == 1
    info = actor_info(c)
    assert info["node_id"] != first and info["restarts"] == 1 and info["state"] == "ALIVE"


def test_actor_pinned_by_labels_and_gpus(two_nodes):
    two_nodes.add_agent(num_cpus=1, labels={"zone": "office"})
    gpu = two_nodes.add_agent(num_cpus=1, num_gpus=1, labels={"zone": "lab"})
    two_nodes.connect()
    two_nodes.wait_nodes(2)
    c = Counter.options(label_selector={"zone": "lab"}).remote(0)
    assert corral.get(c.incr.remote()) == 1
    assert gpu.node_id.startswith(actor_info(c)["node_id"])
    g = Counter.options(num_gpus=1).remote(0)
    assert corral.get(g.env.remote("CUDA_VISIBLE_DEVICES")) == "0"
    assert gpu.node_id.startswith(actor_info(g)["node_id"])
    # The GPU is held for the actor's life: a task asking for it waits.
    @corral.remote(num_gpus=1)
    def needs_gpu():
        return 1
    ref = needs_gpu.remote()
    ready, _ = corral.wait([ref], timeout=1.0)
    assert not ready
    corral.kill(g)
    assert corral.get(ref, timeout=30) == 1
