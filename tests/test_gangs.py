"""Gangs on real processes: three agents of two CPUs each (as the issue's check asks): strategies,
all-or-nothing reservations, competing gangs, what each member of a run sees, a member killed
mid-run, restarts, actors placed in a member's reservation, and the gang's end."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import corral
from conftest import Cluster, wait_until
from test_gpus import rendezvous


@pytest.fixture
def three():
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    for _ in range(3):
        c.add_agent(num_cpus=2)
    c.connect()
    c.wait_nodes(3)
    yield c
    corral.shutdown()
    c.stop()


def nodes_of(g):
    return [m["node_id"] for m in g.members()]


def test_each_strategy_places_members_as_it_says(three):
    g = corral.gang(3, num_cpus=2, strategy="strict_spread")
    assert g.ready(timeout=30)
    assert len(set(nodes_of(g))) == 3
    corral.remove_gang(g)
    g = corral.gang(2, num_cpus=1, strategy="strict_pack")
    assert g.ready(timeout=30)
    assert len(set(nodes_of(g))) == 1
    corral.remove_gang(g)
    g = corral.gang(3, num_cpus=1, strategy="pack")
    assert g.ready(timeout=30)
    packed = nodes_of(g)
    assert len(set(packed)) == 2 and packed[0] == packed[1], packed
    corral.remove_gang(g)
    g = corral.gang(3, num_cpus=1, strategy="spread")
    assert g.ready(timeout=30)
    assert len(set(nodes_of(g))) == 3
    corral.remove_gang(g)
    assert corral.gangs() == []


def test_a_gang_that_does_not_fit_waits_holding_nothing(three, tmp_path):
    @corral.remote(num_cpus=2)
    class Hog:
        def node(self):
            return os.environ["CORRAL_NODE_ID"]
    hog = Hog.remote()
    busy = corral.get(hog.node.remote(), timeout=60)
    g = corral.gang(3, num_cpus=2, strategy="strict_spread", name="needs-all-three")
    assert not g.ready(timeout=1.5)
    info = g.info()
    assert info["state"] == "PENDING" and "waiting for free resources" in info["reason"], info
    assert all(m["node_id"] == "" for m in info["members"]), "nothing is held for part of it"
    # The two free nodes are not held by the waiting gang: plain tasks use all four of their CPUs.
    got = corral.get([rendezvous.remote(str(tmp_path), 4, str(i)) for i in range(4)], timeout=60)
    assert busy not in {x["node"] for x in got}
    status = subprocess.run([corral._cluster.corral_binary(), "status", "--address", three.address],
                            env=three.env(), capture_output=True, text=True, timeout=30).stdout
    assert "Gangs:" in status and "needs-all-three" in status and "PENDING" in status, status
    assert "waiting for free resources" in status, status
    corral.kill(hog)
    assert g.ready(timeout=30), g.info()
    assert len(set(nodes_of(g))) == 3


def test_two_competing_gangs_never_hold_half_each(three):
    a = corral.gang(2, num_cpus=2, strategy="strict_spread", name="a")
    b = corral.gang(2, num_cpus=2, strategy="strict_spread", name="b")
    assert a.ready(timeout=30)
    assert not b.ready(timeout=1), "three nodes cannot hold both: the second waits whole"
    assert all(m["node_id"] == "" for m in b.members())
    corral.remove_gang(a)
    assert b.ready(timeout=30)


def test_run_starts_every_member_at_once_with_its_rank_environment(three, tmp_path):
    g = corral.gang(3, num_cpus=1, strategy="pack")
    assert g.ready(timeout=30)

    def member(where):
        open(os.path.join(where, os.environ["RANK"]), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(where)) < int(os.environ["WORLD_SIZE"]):
            assert time.monotonic() < deadline, "not every member was running at once"
            time.sleep(0.01)
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        return {**{k: os.environ[k] for k in keys}, "node": os.environ["CORRAL_NODE_ID"], "pid": os.getpid()}

    out = g.run(member, str(tmp_path))
    assert [o["RANK"] for o in out] == ["0", "1", "2"]
    assert {o["WORLD_SIZE"] for o in out} == {"3"}
    assert len({o["pid"] for o in out}) == 3
    assert [o["node"] for o in out] == nodes_of(g), "each member ran in its own reservation"
    assert out[0]["node"] == out[1]["node"] != out[2]["node"]  # pack: two on the first node
    assert [(o["LOCAL_RANK"], o["LOCAL_WORLD_SIZE"]) for o in out] == [("0", "2"), ("1", "2"), ("0", "1")]
    assert len({(o["MASTER_ADDR"], o["MASTER_PORT"]) for o in out}) == 1 and int(out[0]["MASTER_PORT"]) > 0
    for k in ("RANK", "MASTER_PORT"):
        assert k not in os.environ


def test_a_member_killed_mid_run_fails_the_run_naming_it_and_stops_the_others(three, tmp_path):
    g = corral.gang(3, num_cpus=1, strategy="spread", name="trainers")
    assert g.ready(timeout=30)

    def member(where):
        rank = os.environ["RANK"]
        with open(os.path.join(where, f"pid{rank}"), "w") as f:
            f.write(str(os.getpid()))
        if rank == "1":
            while len([n for n in os.listdir(where) if n.startswith("pid")]) < 3:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(300)

    started = time.monotonic()
    with pytest.raises(corral.GangMemberError) as err:
        g.run(member, str(tmp_path))
    e = err.value
    assert e.member == 1 and e.node_id == nodes_of(g)[1] and e.hostname
    assert "member 1 of 3 of gang trainers" in str(e) and "WorkerCrashedError" in str(e), str(e)
    assert "signal 9" in str(e) or "SIGKILL" in str(e), str(e)
    assert time.monotonic() - started < 120, "the others were stopped, not waited for"
    for rank in ("0", "2"):
        pid = int((tmp_path / f"pid{rank}").read_text())
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                   what=f"member {rank}'s process to be stopped")
    assert g.info()["state"] == "READY", "the reservation outlives a failed run"


def test_max_restarts_starts_the_whole_gang_again(three, tmp_path):
    g = corral.gang(2, num_cpus=1, strategy="strict_spread")

    def member(where):
        rank = os.environ["RANK"]
        open(os.path.join(where, f"start-{rank}-{time.monotonic_ns()}"), "w").close()
        if rank == "0" and not os.path.exists(os.path.join(where, "failed-once")):
            while len(os.listdir(where)) < 2:  # both members run before this one fails
                time.sleep(0.01)
            open(os.path.join(where, "failed-once"), "w").close()
            raise RuntimeError("lost the checkpoint")
        return int(rank) * 10

    assert g.run(member, str(tmp_path), max_restarts=2, timeout=30) == [0, 10]
    starts = [n for n in os.listdir(tmp_path) if n.startswith("start-")]
    assert sorted(n.split("-")[1] for n in starts) == ["0", "0", "1", "1"], starts
    with pytest.raises(corral.GangMemberError) as err:
        g.run(lambda: 1 / 0, max_restarts=0)
    assert err.value.member in (0, 1) and "ZeroDivisionError" in str(err.value)
    assert "ZeroDivisionError: ZeroDivisionError" not in str(err.value), str(err.value)


def test_actors_and_tasks_run_in_a_members_reservation(three):
    g = corral.gang(2, num_cpus=2, strategy="strict_spread")
    assert g.ready(timeout=30)

    @corral.remote(num_cpus=2)
    class Trainer:
        def node(self):
            return os.environ["CORRAL_NODE_ID"]

    @corral.remote(num_cpus=1)
    def where():
        return os.environ["CORRAL_NODE_ID"]

    t = Trainer.options(gang=g, member=1).remote()
    assert corral.get(t.node.remote(), timeout=60) == nodes_of(g)[1]
    assert corral.get(where.options(gang=g, member=0).remote(), timeout=60) == nodes_of(g)[0]
    assert corral.get(where.options(gang=g).remote(), timeout=60) == nodes_of(g)[0], "only member 0 has room"
    with pytest.raises(corral.CorralError) as err:
        corral.get(where.options(gang=g, member=0, num_cpus=3).remote(), timeout=60)
    assert "member 0 of gang" in str(err.value) and "CPU=2" in str(err.value), str(err.value)
    corral.remove_gang(g)
    with pytest.raises(corral.ActorDiedError) as err:
        corral.get(t.node.remote(), timeout=60)
    assert "gang" in str(err.value) and "removed" in str(err.value), str(err.value)
    with pytest.raises(corral.CorralError) as err:
        corral.get(where.options(gang=g, member=0).remote(), timeout=60)
    assert "was removed" in str(err.value)
    # Its CPUs came back: the whole cluster's six are free for plain tasks.
    wait_until(lambda: sum(n["available"].get("CPU", 0) for n in corral.nodes()) == 6, what="the CPUs back")


def test_a_gang_ends_with_the_driver_that_made_it_unless_detached(three):
    driver = textwrap.dedent("""
        import sys, corral
        corral.init(address=sys.argv[1])
        g = corral.gang(1, num_cpus=2, name="mine")
        d = corral.gang(1, num_cpus=2, name="kept", detached=True)
        assert g.ready(30) and d.ready(30)
        print("OK", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", driver, three.address], env=three.env(), capture_output=True,
                         text=True, timeout=90)
    assert out.stdout.strip() == "OK", out.stderr
    wait_until(lambda: [g["name"] for g in corral.gangs()] == ["kept"], what="the driver's own gang to go")
    kept = corral.gangs()[0]
    corral.remove_gang(corral.Gang(kept["gang_id"], [{"CPU": 2}], "pack"))
    assert corral.gangs() == []


def test_a_dead_node_under_a_gang_gives_it_back_and_it_is_reserved_again(three):
    extra = three.add_agent(num_cpus=2)
    three.wait_nodes(4)
    g = corral.gang(4, num_cpus=2, strategy="strict_spread")
    assert g.ready(timeout=30)
    victim = next(a for a in three.agents if a.node_id == nodes_of(g)[2])
    victim.kill()
    wait_until(lambda: g.info()["state"] == "PENDING", timeout=30, what="the gang to lose its reservation")
    assert "died" in g.info()["reason"]
    three.add_agent(num_cpus=2)
    assert g.ready(timeout=30)
    assert victim.node_id not in nodes_of(g)
    del extra


def test_bad_gangs_are_refused_with_what_to_do(three):
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="number of members"):
        corral.gang(0)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="strict_spread"):
        corral.gang(2, strategy="round_robin")
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="no resources"):
        corral.gang(bundles=[{"CPU": 0}])
    g = corral.gang(2, num_cpus=1)

    @corral.remote
    def f():
        return 1
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="members 0..1"):
        f.options(gang=g, member=2)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="without gang"):
        f.options(member=0)
    corral.remove_gang(g)
    with pytest.raises(corral.GangError):
        g.ready(1)


def test_gang_capture_puts_what_a_task_starts_into_its_gang(three):
    g = corral.gang(3, num_cpus=2, strategy="strict_spread")  # every CPU of the cluster
    assert g.ready(timeout=30)

    @corral.remote(num_cpus=1)
    def child():
        return os.environ["CORRAL_NODE_ID"]

    @corral.remote(num_cpus=1)
    def parent(opt_out):
        c = child.options(gang=None) if opt_out else child
        return corral.get(c.remote(), timeout=3)

    captured = parent.options(gang=g, member=1, gang_capture=True)
    assert corral.get(captured.remote(False), timeout=60) in nodes_of(g), "the child ran in the gang"
    with pytest.raises(corral.TaskError, match="GetTimeoutError"):  # kept out of the gang: no free CPU
        corral.get(captured.remote(True), timeout=60)
    with pytest.raises(corral.TaskError, match="GetTimeoutError"):  # not captured: the same
        corral.get(parent.options(gang=g, member=1).remote(False), timeout=60)


def test_plain_tasks_never_run_on_a_gangs_share_of_a_node(cluster, tmp_path):
    cluster.add_agent(num_cpus=2)
    cluster.connect()
    cluster.wait_nodes(1)
    g = corral.gang(1, num_cpus=2)
    assert g.ready(timeout=30)

    @corral.remote
    def plain(i):
        return i
    refs = [plain.remote(i) for i in range(4)]
    ready, _ = corral.wait(refs, num_returns=1, timeout=2)
    assert ready == [], "the node's two CPUs are the gang's: nothing else runs on them (nor is queued there)"
    corral.remove_gang(g)
    assert corral.get(refs, timeout=60) == [0, 1, 2, 3]


def test_a_drivers_gangs_are_created_again_on_a_restarted_head(cluster):
    cluster.add_agent(num_cpus=2)
    cluster.add_agent(num_cpus=2)
    cluster.connect()
    cluster.wait_nodes(2)
    g = corral.gang(2, num_cpus=1, strategy="strict_spread", name="survivor")
    assert g.ready(timeout=30)

    @corral.remote(num_cpus=1)
    def where(pause):
        time.sleep(pause)
        return os.environ["CORRAL_NODE_ID"]
    running = where.options(gang=g, member=0).remote(1.0)
    cluster.restart_head()
    assert g.ready(timeout=60), "the driver sent its gang to the new head"
    assert corral.get(running, timeout=60)  # it ran once, and its result came
    assert corral.get(where.options(gang=g, member=1).remote(0), timeout=60) == nodes_of(g)[1]
    assert [x["name"] for x in corral.gangs()] == ["survivor"]


def test_the_member_named_is_the_one_that_failed_first():
    from corral.gang import _failed_at, stamp_failure
    first, later = ValueError("bad shard"), ConnectionResetError("peer closed")
    stamp_failure(first)
    time.sleep(0.01)
    stamp_failure(later)
    stamp_failure(first)  # a second mark (on the way out) does not move the first
    wrapped = corral.TaskError("peer closed", cause=later)  # how OSErrors come back from a task
    crash = corral.WorkerCrashedError("worker killed by signal 9")
    unmarked = RuntimeError("raised where nothing marked it")
    ranked = sorted([unmarked, wrapped, first, crash], key=_failed_at)
    assert ranked == [crash, first, wrapped, unmarked]
