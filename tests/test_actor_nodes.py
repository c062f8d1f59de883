"""Actors across nodes and drivers, on real processes: detached names, agent loss, placement."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import corral
from conftest import Cluster, wait_until
from test_lease_fence import _ledger
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


def test_detached_actor_outlives_its_creator_and_is_found_from_another_driver(cluster):
    cluster.add_agent(num_cpus=2)
    env = cluster.env()
    out = subprocess.run([sys.executable, "-c", DRIVER, cluster.address], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "OK", out.stderr
    cluster.connect()
    store = corral.get_actor("store", namespace="shop")
    assert corral.get(store.get.remote("apples")) == 3
    from corral import _cluster
    status = subprocess.run([_cluster.corral_binary(), "status", "--address", cluster.address], env=env,
                            capture_output=True, text=True, timeout=30).stdout
    assert "Actors:" in status and "shop/store (detached)" in status and "ALIVE" in status, status
    # The creator's other actor was not detached: it ended with its creator.
    with pytest.raises(corral.ActorNotFoundError):
        corral.get_actor("scratch", namespace="shop")
    dead = [a for a in corral.list_actors(include_dead=True) if a["name"] == "scratch"]
    assert dead and dead[0]["state"] == "DEAD" and "exited" in dead[0]["death_cause"]
    def held():
        return corral.cluster_status()["counters"]["objects_held"]
    corral.kill(store)
    wait_until(lambda: not any(a["name"] == "store" for a in corral.list_actors()), what="the kill")
    # Its creator is gone, so nobody would release its end: the head does (no entry left behind;
    # this driver holds no values).
    wait_until(lambda: held() == 0, what="the dead detached actor's entry to go")


def test_restart_on_another_node_after_kill_9_of_its_agent(cluster):
    a = cluster.add_agent(num_cpus=1, labels={"box": "a"})
    b = cluster.add_agent(num_cpus=1, labels={"box": "b"})
    cluster.connect()
    cluster.wait_nodes(2)
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


def test_actor_pinned_by_labels_and_gpus(cluster):
    cluster.add_agent(num_cpus=1, labels={"zone": "office"})
    gpu = cluster.add_agent(num_cpus=1, num_gpus=1, labels={"zone": "lab"})
    cluster.connect()
    cluster.wait_nodes(2)
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


@corral.remote(max_restarts=1, max_task_retries=1)
class Effects:
    def effect(self, key, seconds, ledger):
        """Appends "start", sleeps, then "end" (the effect), with this attempt's node and pid."""
        import time
        node = corral.runtime_context().node_id
        with open(ledger, "a") as f:
            f.write(f"start {key} {node} {os.getpid()}\n")
        time.sleep(seconds)
        with open(ledger, "a") as f:
            f.write(f"end {key} {node}\n")
        return node

    def pid(self):
        return os.getpid()


def test_actor_on_a_frozen_node_restarts_elsewhere_and_its_call_never_completes_twice(tmp_path):
    # A laptop lid with an actor on it: the agent and the actor's worker are stopped together, past
    # the dead threshold, while a call runs. The actor restarts on the other node and the call runs
    # again there; the frozen worker is ended by the kernel at its lease's expiry, so the call's
    # effect never happens a second time after the thaw.
    import psutil
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "4000"))
    try:
        victim = c.add_agent(num_cpus=1)
        c.connect()
        c.wait_nodes(1)
        ledger = str(tmp_path / "ledger")
        a = Effects.remote()
        idle = Effects.remote()  # ready, with no call running: fenced all the same
        idle_pid = corral.get(idle.pid.remote())
        ref = a.effect.remote("k", 4.0, ledger)
        wait_until(lambda: os.path.exists(ledger) and _ledger(ledger, "start"), timeout=60, what="the call to start")
        c.add_agent(num_cpus=1)
        c.wait_nodes(2)
        frozen = [psutil.Process(victim.pid)] + psutil.Process(victim.pid).children(recursive=True)
        for p in frozen:
            p.send_signal(signal.SIGSTOP)
        try:
            node = corral.get(ref, timeout=60)
            assert not victim.node_id.startswith(node)
            info = actor_info(a)
            assert info["restarts"] == 1 and info["state"] == "ALIVE"
            (_, _, pid), = [s for s in _ledger(ledger, "start") if victim.node_id.startswith(s[1])]
            for wpid in (int(pid), idle_pid):
                assert not psutil.pid_exists(wpid) or psutil.Process(wpid).status() == psutil.STATUS_ZOMBIE, \
                    f"an actor's worker ({wpid}) outlived its node's lease while stopped"
        finally:
            for p in frozen:
                try:
                    p.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass
        wait_until(lambda: any(n["node_id"] == victim.node_id and n["state"] == "alive" for n in corral.nodes()),
                   timeout=30, what="the victim to come back")
        time.sleep(2.0)
        ends = _ledger(ledger, "end")
        assert [n for _, n in ends if victim.node_id.startswith(n)] == [], "the superseded call completed after the thaw"
        assert len(ends) == 1
        assert corral.get(a.effect.remote("k2", 0, ledger)) == node  # the restarted actor serves on
    finally:
        corral.shutdown()
        c.stop()


@corral.remote
class Tally:
    def __init__(self):
        self.calls = []

    def slow_add(self, x, seconds):
        time.sleep(seconds)
        self.calls.append(x)
        return len(self.calls)

    def seen(self):
        return self.calls


def test_a_head_restart_keeps_the_actor_and_runs_its_calls_once(cluster):
    # kill -9 of the head while a call runs and more wait: the agent keeps the actor's worker, the
    # driver sends its creation and calls again, and the head takes over what the agent still holds
    # instead of running it twice.
    cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    t = Tally.remote()
    pid = corral.get(t.seen.remote()) or actor_info(t)["pid"]
    running = t.slow_add.remote("a", 3)
    waiting = [t.slow_add.remote(x, 0) for x in "bcd"]
    wait_until(lambda: actor_info(t)["running_calls"] >= 1, what="the first call to run")
    cluster.restart_head()
    assert corral.get([running] + waiting, timeout=60) == [1, 2, 3, 4]
    assert corral.get(t.seen.remote(), timeout=30) == ["a", "b", "c", "d"]  # each ran once, in order
    assert actor_info(t)["restarts"] == 0 and actor_info(t)["pid"] == pid


def test_calls_made_while_the_actors_node_is_suspect_run_when_it_answers_again(cluster):
    # A network hiccup shorter than the dead threshold: the node is suspect for a while (no new
    # tasks go there), but its actor's calls must still reach it, and run once it answers.
    import psutil
    agent = cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    c = Counter.remote(0)
    assert corral.get(c.incr.remote()) == 1
    frozen = [psutil.Process(agent.pid)] + psutil.Process(agent.pid).children(recursive=True)
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: any(n["state"] == "suspect" for n in corral.nodes()), what="the node to be suspect")
        ref = c.incr.remote()
    finally:
        for p in frozen:
            p.send_signal(signal.SIGCONT)
    assert corral.get(ref, timeout=30) == 2
