"""A head with several agents of different resources and labels, as separate processes."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import corral
from conftest import wait_until


@corral.remote
def where(seconds=0.0):
    time.sleep(seconds)
    return corral.runtime_context().node_id


def test_tasks_land_only_where_they_fit(cluster):
    a = cluster.add_agent(num_cpus=2, labels={"zone": "office"})
    cluster.connect()
    cluster.wait_nodes(1)
    b = cluster.add_agent(num_cpus=1, resources={"gpu_box": 1})
    cluster.wait_nodes(2)
    c = cluster.add_agent(num_cpus=1, num_gpus=1, labels={"zone": "lab"})
    cluster.wait_nodes(3)

    assert set(corral.get([where.options(resources={"gpu_box": 1}).remote() for _ in range(5)])) == {b.node_id}
    assert set(corral.get([where.options(label_selector={"zone": "office"}).remote() for _ in range(5)])) == {a.node_id}

    @corral.remote(num_gpus=1)
    def gpu_task():
        return corral.runtime_context().node_id, os.environ["CUDA_VISIBLE_DEVICES"], corral.runtime_context().gpu_ids

    @corral.remote
    def cpu_task():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    node, visible, gpu_ids = corral.get(gpu_task.remote())
    assert node == c.node_id and visible == "0" and gpu_ids == [0]
    assert set(corral.get([cpu_task.remote() for _ in range(4)])) == {""}  # CPU tasks see no GPU

    # Placement policy: least utilised after placing, ties to the first registered node.
    # Four 1-CPU tasks at once on nodes of 2, 1 and 1 CPUs: a, a, b, c.
    refs = [where.remote(1.5) for _ in range(4)]
    assert sorted(corral.get(refs)) == sorted([a.node_id, a.node_id, b.node_id, c.node_id])

    nodes = {n["node_id"]: n for n in corral.nodes()}
    assert nodes[a.node_id]["labels"] == {"zone": "office"}
    assert nodes[b.node_id]["resources"]["gpu_box"] == 1
    assert nodes[c.node_id]["resources"]["GPU"] == 1


@corral.remote(num_cpus=0)
class Placed:
    def where(self):
        return os.environ.get("CORRAL_NODE_ID")


def test_infeasible_task_waits_and_does_not_block_others(cluster, capfd):
    cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    stuck = where.options(resources={"tpu": 1}).remote()
    assert corral.get([where.remote() for _ in range(10)], timeout=60)   # not blocked by it
    ready, _ = corral.wait([stuck], timeout=0.5)
    assert not ready
    status = corral.cluster_status()
    assert any("tpu=1" in s for s in status["infeasible"]), status["infeasible"]
    wait_until(lambda: "cannot be scheduled" in capfd.readouterr().err, what="the driver to be told")
    nowhere = where.options(num_cpus=0, label_selector={"role": "nope"}).remote()
    reason = wait_until(lambda: next((s for s in corral.cluster_status()["infeasible"] if "role=nope" in s), None),
                        what="the label-only task to be reported")
    assert "requires labels role=nope on Python" in reason, reason  # not "requires {} and labels"
    nowhere_actor = Placed.options(label_selector={"role": "nowhere"}).remote()
    reason = wait_until(lambda: next((s for s in corral.cluster_status()["infeasible"] if "role=nowhere" in s), None),
                        what="the actor that fits nowhere to be reported")
    assert reason.startswith("1 actor(s) like test_cluster.Placed"), reason

    out = subprocess.run([cluster.bin, "status", "--address", cluster.address], env=cluster.env(),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "tpu=1" in out.stdout and "Cannot be scheduled" in out.stdout

    tpu = cluster.add_agent(num_cpus=1, resources={"tpu": 1})
    assert corral.get(stuck, timeout=60) == tpu.node_id     # runs once a node that fits joins


def test_agent_killed_mid_task_reruns_elsewhere(cluster, tmp_path):
    cluster.add_agent(num_cpus=1, resources={"pool": 1})
    cluster.connect()
    cluster.wait_nodes(1)
    cluster.add_agent(num_cpus=1, resources={"pool": 1})
    cluster.wait_nodes(2)
    started = tmp_path / "started"

    @corral.remote(resources={"pool": 1}, max_retries=2)
    def long_task(path):
        with open(path, "a") as f:
            f.write(corral.runtime_context().node_id + "\n")
        time.sleep(2.0)
        return corral.runtime_context().node_id

    ref = long_task.remote(str(started))
    wait_until(lambda: started.exists() and started.read_text(), what="the task to start")
    first = started.read_text().split()[0]
    victim = next(a for a in cluster.agents if a.node_id == first)
    victim.kill(signal.SIGKILL)
    survivor = corral.get(ref, timeout=60)
    assert survivor != first
    assert started.read_text().split() == [first, survivor]
    states = {n["node_id"]: n["state"] for n in corral.nodes()}
    assert states[first] == "dead"
    status = corral.cluster_status()
    assert status["counters"]["tasks_retried"] >= 1


def test_status_command_shows_nodes(cluster):
    cluster.add_agent(num_cpus=2, labels={"zone": "office"}, resources={"laptop": 1})
    cluster.connect()
    cluster.wait_nodes(1)
    out = subprocess.run([cluster.bin, "status", "--address", cluster.address], env=cluster.env(),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "alive" in out.stdout and "zone=office" in out.stdout and "laptop 0/1" in out.stdout
    out = subprocess.run([cluster.bin, "status", "--address", cluster.address, "--json"], env=cluster.env(),
                         capture_output=True, text=True, timeout=30)
    import json
    doc = json.loads(out.stdout)
    assert doc["nodes"][0]["resources"]["CPU"] == 2


def test_flood_of_submissions_is_bounded_at_the_head():
    from conftest import Cluster
    c = Cluster(head_args=("--max-unfinished-tasks", "500"))
    try:
        c.add_agent(num_cpus=1)
        c.connect()
        c.wait_nodes(1)

        @corral.remote
        def tiny(i):
            return i

        n = 20000
        refs = [tiny.remote(i) for i in range(n)]   # the submitter is slowed, not the head's memory grown
        assert corral.get(refs, timeout=240) == list(range(n))
        counters = corral.cluster_status()["counters"]
        assert counters["tasks_succeeded"] == n
        # Above the limit the head stops reading; what was already read in that batch still counts.
        assert counters["peak_unfinished_tasks"] <= 500 + 2500, counters["peak_unfinished_tasks"]
    finally:
        corral.shutdown()
        c.stop()


def test_interruptible_only_node_takes_only_tasks_that_tolerate_it(cluster):
    laptop = cluster.add_agent(num_cpus=2, labels={"kind": "laptop"}, extra=("--interruptible-only",))
    cluster.connect()
    cluster.wait_nodes(1)
    assert {n["node_id"]: n["interruptible_only"] for n in corral.nodes()}[laptop.node_id] is True
    # Only the laptop exists: a plain task waits, and says why.
    plain = where.remote()
    ready, _ = corral.wait([plain], timeout=1.0)
    assert not ready
    infeasible = " ".join(corral.cluster_status()["infeasible"])
    assert "interruptible=True" in infeasible, infeasible
    # Tasks that tolerate interruption, or that select the laptop by label, run there.
    assert corral.get(where.options(interruptible=True).remote(), timeout=30) == laptop.node_id
    assert corral.get(where.options(label_selector={"kind": "laptop"}).remote(), timeout=30) == laptop.node_id
    server = cluster.add_agent(num_cpus=1)
    cluster.wait_nodes(2)
    assert corral.get(plain, timeout=30) == server.node_id
    assert set(corral.get([where.remote(0.05) for _ in range(8)], timeout=60)) == {server.node_id}
    flexible = corral.get([where.options(interruptible=True).remote(0.2) for _ in range(6)], timeout=60)
    assert laptop.node_id in flexible


def test_sigterm_drains_the_agent_then_it_leaves(cluster):
    a = cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    running = where.remote(1.5)
    wait_until(lambda: corral.nodes()[0]["running_tasks"] == 1, what="the task running")
    queued = where.remote()  # waits in the agent's queue (prefetch) or at the head
    a.proc.send_signal(signal.SIGTERM)
    assert corral.get(running, timeout=30) == a.node_id, "a running task finishes during the drain"
    assert a.proc.wait(15) == 0
    nodes = {n["node_id"]: n for n in corral.nodes()}
    assert nodes[a.node_id]["state"] == "left"
    with open(a.log_path) as f:
        log = f.read()
    assert "draining" in log and "left the cluster" in log
    b = cluster.add_agent(num_cpus=1)
    assert corral.get(queued, timeout=30) == b.node_id, "the handed-back task runs on the next node"
    assert corral.cluster_status()["counters"].get("tasks_retried", 0) == 0


def test_drain_on_sleep_holds_an_inhibitor_and_drains_before_suspend(cluster):
    from fake_logind import DBusDaemon, FakeLogind
    bus = DBusDaemon()
    logind = FakeLogind(bus.address, delay_max_usec=2_000_000)
    try:
        laptop = cluster.add_agent(num_cpus=1, extra=("--drain-on-sleep",),
                                   env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        cluster.connect()
        cluster.wait_nodes(1)
        logind.wait_locks(1)
        assert logind.last_inhibit[0] == "sleep" and logind.last_inhibit[3] == "delay"
        long = where.remote(4)
        wait_until(lambda: corral.nodes()[0]["running_tasks"] == 1, what="the task running")

        logind.sleep()  # the lid closes
        wait_until(lambda: corral.nodes()[0]["draining"], what="the node draining")
        waited = logind.wait_released()
        # It handed the running task back at its budget (logind allows 2 s; it keeps 0.5 s spare).
        assert waited < 5, waited
        server = cluster.add_agent(num_cpus=1)
        assert corral.get(long, timeout=60) == server.node_id, \
            "the task handed back before sleep runs elsewhere"

        logind.wake()  # the lid opens
        logind.wait_locks(2)
        wait_until(lambda: not {n["node_id"]: n for n in corral.nodes()}[laptop.node_id]["draining"],
                   what="the node taking work again")
        # Back to work: two 1-CPU tasks at once on two idle 1-CPU nodes run one on each, so the
        # laptop runs one (a laptop still refusing work would leave both to the server).
        ran = corral.get([where.remote(1.0) for _ in range(2)], timeout=30)
        assert sorted(ran) == sorted([laptop.node_id, server.node_id]), (ran, laptop.node_id)
        assert corral.cluster_status()["counters"].get("tasks_retried", 0) == 0

        # Asleep (drained, nothing running) when it is told to stop: it leaves at once.
        logind.sleep()
        logind.wait_released()
        laptop.proc.send_signal(signal.SIGTERM)
        assert laptop.proc.wait(15) == 0
        assert {n["node_id"]: n for n in corral.nodes()}[laptop.node_id]["state"] == "left"
    finally:
        logind.close()
        bus.stop()


def test_a_tasks_output_reaches_its_driver(cluster):
    # The head routes a worker's output by task (from the node it gave the task to) to the task's
    # submitter, including lines printed just before the task returned.
    cluster.add_agent(num_cpus=1)
    script = textwrap.dedent(f"""
        import corral, sys
        corral.init(address={cluster.address!r})

        @corral.remote
        def chatty(x):
            print("out line", x)
            print("err line", x, file=sys.stderr)
            return x

        print("result", corral.get(chatty.remote(7), timeout=60))
        import time; time.sleep(1)  # late output of the finished task still arrives
    """)
    p = subprocess.run([sys.executable, "-c", script], env=cluster.env(), capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr
    assert "result 7" in p.stdout
    assert re.search(r"\(\S*chatty pid=\d+ node=\w+\) out line 7", p.stdout), p.stdout
    assert re.search(r"\(\S*chatty pid=\d+ node=\w+\) err line 7", p.stderr), p.stderr
