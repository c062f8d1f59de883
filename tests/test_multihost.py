"""Multi-host scenarios: a head and agents on separate hosts (network namespaces, see netns.py).

Liveness settings for every scenario: heartbeat 200 ms, suspect after 1 s, dead after 3 s, so an
agent's lease is 2.25 s. Every scenario prints submitted / completed / lost / re-executed /
discarded and asserts 0 lost.

Tasks write a ledger (one file per run, shared by all hosts through the file system): a "start"
line when an attempt begins and an "end" line when it completed its effect. "Re-executed" counts
starts beyond one per task; "effects" counts ends: more ends than tasks would be duplicated effects.
"""
import collections
import os
import subprocess
import tempfile
import time

import psutil
import pytest

import corral
import netns
from conftest import wait_until
from test_actors import Counter

pytestmark = pytest.mark.skipif(bool(netns.available()), reason=netns.available() or "")


@corral.remote
def work(key, seconds, ledger):
    ctx = corral.runtime_context()
    line = f"{key} {ctx.node_id} {os.getpid()} {ctx.attempt}\n"
    with open(ledger, "a") as f:
        f.write("start " + line)
    time.sleep(seconds)
    with open(ledger, "a") as f:
        f.write("end " + line)
    return key, ctx.node_id, ctx.attempt


@corral.remote
def where():
    """The node, the addresses this host has, and what its /dev/shm holds after writing to it."""
    ctx = corral.runtime_context()
    marker = f"/dev/shm/corral-test-{ctx.node_id}"
    with open(marker, "w") as f:
        f.write("x")
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                           text=True).stdout
    return ctx.node_id, addrs, sorted(n for n in os.listdir("/dev/shm") if n.startswith("corral-test-"))


def ledger_counts(path):
    starts, ends = collections.Counter(), collections.Counter()
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                kind, key = line.split()[:2]
                (starts if kind == "start" else ends)[key] += 1
    return starts, ends


def head_counter(name):
    return corral.cluster_status()["counters"].get(name, 0)


def report(name, submitted, results, ledger):
    starts, ends = ledger_counts(ledger)
    completed = len(results)
    counts = {
        "submitted": submitted,
        "completed": completed,
        "lost": submitted - completed,
        "re-executed": sum(starts.values()) - len(starts),
        "duplicate effects": sum(ends.values()) - len(ends),
        "discarded": head_counter("stale_results_discarded"),
    }
    print(f"\n[{name}] " + " / ".join(f"{k} {v}" for k, v in counts.items()))
    assert counts["lost"] == 0, counts
    return counts, starts, ends


def node_of(net, host):
    return host.node_id


def worker_pids(ledger, node_id):
    """Pids of the workers that started attempts on the node."""
    with open(ledger) as f:
        return {int(l.split()[3]) for l in f if l.startswith("start") and l.split()[2] == node_id}


def worker_alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running_on(ledger, node_id):
    starts, _ = ledger_counts(ledger)
    with open(ledger) as f:
        return [l.split()[1] for l in f if l.startswith("start") and l.split()[2] == node_id]


@pytest.fixture
def net():
    c = netns.NetCluster(agents=3)
    c.connect()
    c.ledger = tempfile.mktemp(prefix="corral-ledger-")
    yield c
    corral.shutdown()
    c.close()


def wait_alive(count):
    wait_until(lambda: sum(n["state"] == "alive" and bool(n["python_version"]) for n in corral.nodes()) >= count,
               timeout=30, what=f"{count} live nodes")


def test_tasks_spread_over_hosts_with_their_own_addresses_and_shm(net):
    wait_alive(3)
    results = corral.get([where.options(name=f"where{i}").remote() for i in range(12)], timeout=60)
    by_node = {node: (addrs, shm) for node, addrs, shm in results}
    assert len(by_node) == 3, "12 tasks on 3 one-CPU hosts should reach every host"
    addresses = {n["node_id"]: n["address"] for n in corral.nodes()}
    seen_ips = set()
    for node, (addrs, shm) in by_node.items():
        ip = addresses[node].rsplit(":", 1)[0]
        assert ip.startswith(net.subnet + "."), addresses
        assert ip in addrs, f"node {node} registered from {ip} but its host has {addrs}"
        seen_ips.add(ip)
        assert shm == [f"corral-test-{node}"], f"/dev/shm of {node} shows {shm}: hosts must not share it"
    assert len(seen_ips) == 3


def test_an_actor_on_another_host_is_called_on_its_agents_tcp_port(net):
    # The agents' Unix sockets are for callers on their own machine (and network namespace): a
    # driver on another host calls over the network, straight to the agent all the same.
    wait_alive(3)
    c = Counter.remote(0)
    assert [corral.get(c.incr.remote(), timeout=30) for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    nodes = [n for n in corral.nodes() if n["call_address"]]
    assert nodes and all(n["call_socket"].startswith("unix:") for n in nodes)
    assert corral.cluster_status()["counters"].get("actor_calls_direct", 0) >= 4
    # (Agents report their counters with their heartbeats: both of these come in the same one.)
    wait_until(lambda: sum(n["counters"].get("callers_connected", 0) for n in corral.nodes()) >= 1,
               what="the actor's agent to report its caller")
    assert sum(n["counters"].get("callers_on_socket", 0) for n in corral.nodes()) == 0


def test_agent_paused_past_dead_threshold_is_fenced_and_comes_back(net):
    wait_alive(3)
    victim = net.agents[0]
    refs = [work.remote(f"k{i}", 6.0, net.ledger) for i in range(3)]
    wait_until(lambda: os.path.exists(net.ledger) and running_on(net.ledger, victim.node_id),
               what="a task started on the victim")
    net.pause(victim)  # frozen: it can neither heartbeat nor stop its worker itself
    time.sleep(4.5)    # past the dead threshold (3 s); its lease (2.25 s) ran out before that
    states = {n["node_id"]: n["state"] for n in corral.nodes()}
    assert states[victim.node_id] == "dead", states
    # The worker ended itself when the lease ran out, while its agent was frozen (a zombie: the
    # frozen agent cannot reap it).
    for pid in worker_pids(net.ledger, victim.node_id):
        assert not worker_alive(pid), f"worker {pid} outlived the lease of its frozen agent"
    net.resume(victim)
    results = corral.get(refs, timeout=60)
    counts, starts, ends = report("pause past dead", 3, results, net.ledger)
    assert counts["re-executed"] >= 1, "the victim's task must have run again elsewhere"
    assert counts["duplicate effects"] == 0, f"a superseded attempt completed its effect: {ends}"
    for key, node, attempt in results:
        if starts[key] > 1:
            assert node != victim.node_id and attempt >= 1
    wait_until(lambda: {n["node_id"]: n["state"] for n in corral.nodes()}[victim.node_id] == "alive",
               timeout=30, what="the resumed node back as alive")
    assert corral.get(work.options(label_selector={}).remote("after", 0.0, net.ledger), timeout=30)[0] == "after"


def test_pause_shorter_than_suspect_changes_nothing(net):
    wait_alive(3)
    victim = net.agents[1]
    refs = [work.remote(f"s{i}", 2.0, net.ledger) for i in range(3)]
    wait_until(lambda: os.path.exists(net.ledger) and running_on(net.ledger, victim.node_id),
               what="a task started on the victim")
    retried_before = head_counter("tasks_retried") + head_counter("tasks_handed_back")
    net.pause(victim)
    time.sleep(0.5)
    net.resume(victim)
    results = corral.get(refs, timeout=60)
    counts, _, _ = report("short pause", 3, results, net.ledger)
    assert counts["re-executed"] == 0
    assert head_counter("tasks_retried") + head_counter("tasks_handed_back") == retried_before
    assert {n["node_id"]: n["state"] for n in corral.nodes()}[victim.node_id] == "alive"


def test_link_cut_briefly_keeps_tasks_and_long_cut_moves_them(net):
    wait_alive(3)
    victim = net.agents[2]
    # Brief: shorter than the lease; the agent keeps its attempts, results arrive after the restore.
    refs = [work.remote(f"b{i}", 1.5, net.ledger) for i in range(3)]
    wait_until(lambda: os.path.exists(net.ledger) and running_on(net.ledger, victim.node_id),
               what="a task started on the victim")
    net.cut(victim)
    time.sleep(0.8)
    net.restore(victim)
    results = corral.get(refs, timeout=60)
    counts, _, _ = report("brief cut", 3, results, net.ledger)
    assert counts["re-executed"] == 0

    # Long: past the dead threshold; the victim stops its attempt, others run it, it comes back.
    ledger2 = net.ledger + "-long"
    refs = [work.remote(f"l{i}", 5.0, ledger2) for i in range(3)]
    wait_until(lambda: os.path.exists(ledger2) and running_on(ledger2, victim.node_id),
               what="a task started on the victim")
    net.cut(victim)
    time.sleep(4.0)
    net.restore(victim)
    results = corral.get(refs, timeout=60)
    counts, _, ends = report("long cut", 3, results, ledger2)
    assert counts["re-executed"] >= 1
    assert counts["duplicate effects"] == 0, ends
    wait_until(lambda: {n["node_id"]: n["state"] for n in corral.nodes()}[victim.node_id] == "alive",
               timeout=30, what="the cut node back as alive")


def test_address_change_keeps_the_node_identity(net):
    wait_alive(3)
    victim = net.agents[0]
    old = {n["node_id"]: n["address"] for n in corral.nodes()}[victim.node_id]
    refs = [work.remote(f"a{i}", 0.5, net.ledger) for i in range(6)]
    new_ip = net.readdress(victim)
    # Its connection from the old address is dead; the agent notices (no acks) and dials again.
    wait_until(lambda: {n["node_id"]: n["address"] for n in corral.nodes()}[victim.node_id].startswith(new_ip + ":"),
               timeout=30, what="the node registered from its new address")
    nodes = {n["node_id"]: n for n in corral.nodes()}
    assert nodes[victim.node_id]["state"] == "alive"
    assert len([n for n in nodes.values() if n["state"] != "dead"]) == 3, "same node id, not a new node"
    refs += [work.remote(f"a{i}", 0.2, net.ledger) for i in range(6, 12)]
    results = corral.get(refs, timeout=60)
    report("address change", 12, results, net.ledger)
    assert old != nodes[victim.node_id]["address"]


@corral.remote
def length(value):
    return len(value)


def test_head_restart_in_flight_tasks_complete(net):
    wait_alive(3)
    held = corral.put("x" * 1000)
    done_before = work.remote("before", 0.0, net.ledger)
    corral.get(done_before, timeout=30)
    refs = [work.remote(f"h{i}", 3.0, net.ledger) for i in range(3)]
    wait_until(lambda: os.path.exists(net.ledger) and len(ledger_counts(net.ledger)[0]) == 4,
               what="all three tasks running")
    net.restart_head(down_s=0.3)
    results = corral.get(refs, timeout=60)
    counts, _, ends = report("head restart", 4, results + [corral.get(done_before)], net.ledger)
    # The agents held their attempts through the restart and the new head adopted them.
    assert counts["re-executed"] == 0, ledger_counts(net.ledger)
    assert counts["duplicate effects"] == 0
    assert head_counter("attempts_adopted_after_restart") == 3
    # What the driver held before the restart (a put, a result) is usable after it.
    assert corral.get(length.remote(held), timeout=30) == 1000
    assert corral.get(length.remote(done_before), timeout=30) == 3  # ("before", node, attempt)
    wait_alive(3)
    # And the cluster works as before.
    assert corral.get(work.remote("after", 0.0, net.ledger), timeout=30)[0] == "after"


def test_a_cancel_made_while_the_head_is_down_reaches_it_after_the_reconnect(net):
    wait_alive(3)
    ref = work.remote("long", 30.0, net.ledger)
    wait_until(lambda: os.path.exists(net.ledger) and "start long" in open(net.ledger).read(), what="the task running")
    net.kill(net.head)
    wait_until(lambda: corral._runtime.client.reconnecting, what="the driver to notice")
    corral.cancel(ref, force=True)  # while disconnected: kept, sent after the replay
    net.start_head()
    with pytest.raises(corral.TaskCancelledError):
        corral.get(ref, timeout=60)
    print(f"\n[cancel while disconnected] delivered after the reconnect; the task was stopped")


def test_drain_under_load(net):
    wait_alive(3)
    victim = net.agents[1]
    refs = [work.remote(f"d{i}", 0.3, net.ledger) for i in range(30)]
    wait_until(lambda: os.path.exists(net.ledger) and running_on(net.ledger, victim.node_id),
               what="the victim took work")
    env = dict(os.environ, CORRAL_TOKEN=net.token, CORRAL_CA_CERT=net.ca_cert)
    out = subprocess.run([net.bin, "drain", victim.node_id[:8], "--timeout", "20", "--address", net.head_address()],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "drained and left the cluster" in out.stdout
    assert victim.proc.wait(15) == 0, "a drained agent exits cleanly"
    state = {n["node_id"]: n["state"] for n in corral.nodes()}[victim.node_id]
    assert state == "left"
    results = corral.get(refs, timeout=60)
    counts, _, _ = report("drain under load", 30, results, net.ledger)
    assert counts["duplicate effects"] == 0
    # New work goes only to the others.
    later = corral.get([work.remote(f"x{i}", 0.0, net.ledger) for i in range(6)], timeout=30)
    assert victim.node_id not in {node for _, node, _ in later}


def test_agents_joined_with_join_tokens_and_a_revoked_node_is_cut_off_mid_run(net):
    wait_alive(3)
    for host in net.agents:  # each joined with a token of its own and holds its certificate now
        assert os.path.exists(os.path.join(host.state_dir, "node.pem"))
        assert f"joined with token '{host.name}'" in net.head.log()
    listed = net.admin("token", "list").stdout
    assert not any(host.name in listed for host in net.agents), "single-use join tokens are spent"
    victim = net.agents[2]
    refs = [work.remote(f"r{i}", 3.0, net.ledger) for i in range(6)]
    wait_until(lambda: os.path.exists(net.ledger) and running_on(net.ledger, victim.node_id),
               what="the victim took work")
    out = net.admin("node", "revoke", victim.node_id[:8])
    assert out.returncode == 0, out.stdout + out.stderr
    # The head closes its connection; the agent's certificate is refused when it comes back.
    assert victim.proc.wait(30) != 0
    assert "was revoked by the operator" in victim.log()
    results = corral.get(refs, timeout=90)
    report("revoked mid-run", 6, results, net.ledger)
    assert {n["node_id"]: n["state"] for n in corral.nodes()}[victim.node_id] == "dead"
    assert all(node != victim.node_id for _, node, _ in results), "its tasks finished elsewhere"


def test_keep_running_on_partition_is_not_stopped(net):
    wait_alive(3)
    victim = net.agents[0]
    keep = work.options(keep_running_on_partition=True)
    refs = [keep.remote(f"p{i}", 3.0, net.ledger) for i in range(3)]
    wait_until(lambda: os.path.exists(net.ledger) and running_on(net.ledger, victim.node_id),
               what="a task started on the victim")
    net.pause(victim)
    # Its lease runs out (2.25 s) but the worker goes on and finishes (3 s); the head declares the
    # node dead (3 s) and runs the task again elsewhere. On reconnecting, superseded attempts that
    # still run are stopped: the partition is over.
    time.sleep(2.6)
    pids = worker_pids(net.ledger, victim.node_id)
    assert pids and all(worker_alive(pid) for pid in pids), "a keep_running_on_partition attempt was stopped"
    time.sleep(1.4)
    net.resume(victim)
    results = corral.get(refs, timeout=60)
    counts, starts, ends = report("keep running through a partition", 3, results, net.ledger)
    assert counts["re-executed"] >= 1
    # The user asked for it: the victim's attempt was not stopped, so its effect happened as well.
    wait_until(lambda: sum(ledger_counts(net.ledger)[1].values()) > 3, timeout=10,
               what="the victim's attempt to finish as well")


def test_packet_loss_on_a_host_loses_no_task(net):
    wait_alive(3)
    lossy = net.agents[1]
    net.drop(lossy, 20)  # TCP retransmits; heartbeats may be late, never lost for good
    try:
        refs = [work.remote(f"q{i}", 0.05, net.ledger) for i in range(30)]
        results = corral.get(refs, timeout=120)
    finally:
        net.drop(lossy, 0)
    counts, _, _ = report("20% packet loss on one host", 30, results, net.ledger)
    assert counts["duplicate effects"] == 0


def test_delay_and_jitter_keep_nodes_alive(net):
    wait_alive(3)
    slow = net.agents[2]
    try:
        net.delay(slow, 100, jitter_ms=50)
    except netns.Unsupported as e:
        pytest.skip(f"this kernel cannot delay packets: {e}")
    refs = [work.remote(f"j{i}", 0.05, net.ledger) for i in range(12)]
    results = corral.get(refs, timeout=120)
    report("100 ms ± 50 ms delay on one host", 12, results, net.ledger)
    assert {n["node_id"]: n["state"] for n in corral.nodes()}[slow.node_id] == "alive"


@corral.remote
def pattern(n):
    import numpy as np
    return np.resize(np.arange(251, dtype=np.uint8), n)  # n bytes, no temporaries larger than it


@corral.remote
def crc_here(a):
    import zlib
    return zlib.crc32(a), corral.runtime_context().node_id


def expected_crc(n):
    import zlib

    import numpy as np
    return zlib.crc32(np.resize(np.arange(251, dtype=np.uint8), n))


@pytest.fixture
def two_hosts():
    c = netns.NetCluster(agents=0, shm_size="2500m")
    c.connect()
    yield c
    corral.shutdown()
    c.close()


def test_a_gigabyte_crosses_between_hosts_whole(two_hosts):
    a = two_hosts.add_agent(labels={"side": "a"})
    b = two_hosts.add_agent(labels={"side": "b"})
    wait_alive(2)
    n = 1 << 30
    made = pattern.options(label_selector={"side": "a"}).remote(n)
    want = expected_crc(n)
    assert corral.get(crc_here.options(label_selector={"side": "a"}).remote(made), timeout=120) == (want, a.node_id)
    t = time.monotonic()
    assert corral.get(crc_here.options(label_selector={"side": "b"}).remote(made), timeout=300) == (want, b.node_id)
    print(f"\n[1 GiB host a -> host b] {n / 1e9 / (time.monotonic() - t):.2f} GB/s (agent to agent, with the task)")
    served = {x["node_id"]: x["counters"] for x in corral.nodes()}
    assert served[a.node_id].get("object_bytes_sent", 0) == 0  # nothing relayed through the head
    got = corral.get(made, timeout=300)  # the driver is on neither host
    import zlib
    assert zlib.crc32(got) == want


def test_a_transfer_whose_source_dies_mid_way_is_rebuilt_and_read(two_hosts):
    a = two_hosts.add_agent()
    wait_alive(1)
    n = 768 << 20
    made = pattern.remote(n)  # on a, the only host (max_retries 3: rebuildable)
    corral.wait([made], timeout=120)
    b = two_hosts.add_agent(labels={"side": "b"})
    wait_alive(2)
    two_hosts.limit_rate(a, 200)  # 768 MiB then take about 30 s: long enough to kill its source mid-way
    reader = crc_here.options(label_selector={"side": "b"}).remote(made)
    sent = lambda: {x["node_id"]: x["counters"].get("object_bytes_served", 0) for x in corral.nodes()}.get(a.node_id, 0)  # noqa: E731
    wait_until(lambda: sent() > 0, timeout=60, what="the transfer to start")
    assert not corral.wait([reader], timeout=0)[0]
    two_hosts.kill(a)
    crc, where = corral.get(reader, timeout=300)
    assert crc == expected_crc(n)
    assert where == b.node_id
    assert corral.cluster_status()["counters"].get("tasks_reconstructed", 0) >= 1
