"""Queue semantics of durable tasks, measured on a real cluster: strict priority within a queue,
weighted shares between queues, per-queue concurrency limits, cluster-wide rate limits, and
queues pinned to node labels and resources. Each test prints what it measured."""
import subprocess

import pytest

import corral
import durable_tasks
from conftest import wait_until


@pytest.fixture
def two_agents(cluster):
    for _ in range(2):
        cluster.add_agent(num_cpus=2, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(2)
    return cluster


def starts(ledger):
    """(time, key) of each start in the ledger, in time order."""
    with open(ledger) as f:
        rows = [line.split() for line in f if line.startswith("start")]
    return sorted((float(r[2]), r[1]) for r in rows)


def intervals(ledger):
    begin, end = {}, {}
    with open(ledger) as f:
        for line in f:
            kind, key, at = line.split()[:3]
            (begin if kind == "start" else end)[key] = float(at)
    return [(begin[k], end[k]) for k in begin]


def max_overlap(spans):
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def wait_all(ids, timeout=120):
    return [corral.result(i).get(timeout=timeout) for i in ids]


def test_strict_priority_within_a_queue(two_agents, tmp_path):
    ledger = str(tmp_path / "ledger")
    corral.queue("prio", concurrency=1)  # one at a time: the start order is the queue's order
    blocker = durable_tasks.record.options(queue="prio").submit(ledger, "blocker", 1.0)
    wait_until(lambda: corral.result(blocker).state == "STARTED", what="the blocker running")
    ids = [durable_tasks.record.options(queue="prio", priority=0).submit(ledger, f"low{i}") for i in range(4)]
    ids += [durable_tasks.record.options(queue="prio", priority=9).submit(ledger, f"high{i}") for i in range(3)]
    ids += [durable_tasks.record.options(queue="prio", priority=5).submit(ledger, "mid0")]
    wait_all(ids + [blocker])
    order = [key for _, key in starts(ledger)]
    print(f"\n[priority] start order: {order}")
    assert order == ["blocker", "high0", "high1", "high2", "mid0", "low0", "low1", "low2", "low3"]


def test_a_task_that_expires_while_waiting_for_a_slot_never_starts(two_agents, tmp_path):
    ledger = str(tmp_path / "ledger")
    corral.queue("narrow", concurrency=1)
    blocker = durable_tasks.record.options(queue="narrow").submit(ledger, "blocker", 1.5)
    late = durable_tasks.record.options(queue="narrow", expires=0.5).submit(ledger, "late")
    with pytest.raises(corral.exceptions.TaskCancelledError, match="expired before it started"):
        corral.result(late).get(timeout=30)
    corral.result(blocker).get(timeout=30)
    assert [key for _, key in starts(ledger)] == ["blocker"]


def test_weighted_fairness_between_queues(two_agents, tmp_path):
    """Weights 3:1 with both queues saturated: starts 3:1 (within 10%)."""
    ledger = str(tmp_path / "ledger")
    corral.queue("heavy", weight=3)
    corral.queue("light", weight=1)
    ids = durable_tasks.record.options(queue="heavy").map_submit([(ledger, f"heavy{i}", 0.01) for i in range(250)])
    ids += durable_tasks.record.options(queue="light").map_submit([(ledger, f"light{i}", 0.01) for i in range(100)])
    wait_all(ids)
    order = [key for _, key in starts(ledger)]
    first_light = next(i for i, k in enumerate(order) if k.startswith("light"))
    window = order[first_light:first_light + 240]  # both queues have a backlog throughout
    heavy = sum(k.startswith("heavy") for k in window)
    light = len(window) - heavy
    print(f"\n[fairness] weights 3:1 -> starts {heavy}:{light} = {heavy / light:.2f} over {len(window)} starts")
    assert 2.7 <= heavy / light <= 3.3


def test_per_queue_concurrency_limit(two_agents, tmp_path):
    limited, free = str(tmp_path / "limited"), str(tmp_path / "free")
    corral.queue("limited", concurrency=2)
    ids = durable_tasks.record.options(queue="limited").map_submit([(limited, f"l{i}", 0.3) for i in range(10)])
    wait_all(ids)
    ids = durable_tasks.record.options(queue="free").map_submit([(free, f"f{i}", 0.3) for i in range(10)])
    wait_all(ids)
    peak_limited, peak_free = max_overlap(intervals(limited)), max_overlap(intervals(free))
    print(f"\n[concurrency] limit 2 on 4 CPUs: at most {peak_limited} at once (without a limit: {peak_free})")
    assert peak_limited == 2
    assert peak_free >= 3


def worker_node(pid, cluster):
    """The node whose agent started worker `pid` (workers are the agent's direct children)."""
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    return next(a.node_id for a in cluster.agents if a.pid == ppid)


def test_cluster_wide_rate_limit(two_agents, tmp_path):
    """10/s across two nodes: 10 starts/s (within 10%) cluster-wide, both nodes starting tasks (a
    per-node limit would give 20/s)."""
    ledger = str(tmp_path / "ledger")
    corral.queue("rated", rate_limit="10/s")
    n = 61  # 6 s of starts at 10/s
    # Each task lasts 0.3 s, so ~3 run at once and placement spreads them over both nodes.
    ids = durable_tasks.record.options(queue="rated").map_submit([(ledger, f"r{i}", 0.3) for i in range(n)])
    wait_all(ids)
    with open(ledger) as f:
        rows = sorted((float(r[2]), int(r[3])) for r in (line.split() for line in f) if r[0] == "start")
    assert len(rows) == n
    times = [t for t, _ in rows[1:]]  # the first start takes the bucket's one token at once: left out
    rate = (len(times) - 1) / (times[-1] - times[0])
    per_node = {}
    for _, pid in rows:
        node = worker_node(pid, two_agents)
        per_node[node] = per_node.get(node, 0) + 1
    print(f"\n[rate limit] 10/s over 2 nodes: {len(times)} starts in {times[-1] - times[0]:.2f}s = {rate:.2f}/s; "
          f"starts per node {sorted(per_node.values())}")
    assert 9.0 <= rate <= 11.0, rate
    assert len(per_node) == 2 and min(per_node.values()) >= n // 5, per_node


def test_queue_pinned_to_labels_and_resources(cluster):
    cluster.add_agent(num_cpus=2, labels={"kind": "cpu"}, extra=("--tasks", "durable_tasks"))
    cluster.add_agent(num_cpus=2, num_gpus=1, labels={"kind": "gpu"}, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(2)
    nodes = {n["labels"]["kind"]: n["node_id"] for n in corral.nodes()}
    q = corral.queue("gpu", labels={"kind": "gpu"}, resources={"GPU": 1})
    assert q["labels"] == "kind=gpu" and q["resources"] == "GPU=1"
    assert q["slots"] == 1, q  # one GPU in the cluster
    ran = wait_all(durable_tasks.where.options(queue="gpu").map_submit([()] * 6))
    unpinned = wait_all(durable_tasks.where.map_submit([()] * 20))
    print(f"\n[pinned] gpu queue ran on {sorted({r['node'][:8] for r in ran})}, "
          f"default queue on {sorted({r['node'][:8] for r in unpinned})}")
    assert {r["node"] for r in ran} == {nodes["gpu"]}
    assert all(r["gpu_ids"] == [0] for r in ran)
    assert {r["node"] for r in unpinned} == {nodes["cpu"], nodes["gpu"]}


def test_queue_settings_are_validated_and_listed(two_agents):
    with pytest.raises(corral.exceptions.CorralError, match="weight must be > 0"):
        corral.queue("bad", weight=0)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="rate_limit"):
        corral.queue("bad", rate_limit="10/fortnight")
    with pytest.raises(corral.exceptions.CorralError, match="queue name"):
        corral.queue("no spaces")
    corral.queue("reports", weight=2, concurrency=3, rate_limit="120/m")
    later = durable_tasks.add.options(queue="reports", countdown=3600).submit(1, 2)
    q = {q["name"]: q for q in corral.queues()}["reports"]
    assert (q["weight"], q["concurrency"], q["rate_per_s"], q["waiting"]) == (2, 3, 2.0, 1)
    out = subprocess.run([two_agents.bin, "queue", "list", "--address", two_agents.address],
                         capture_output=True, text=True, env=two_agents.env(), timeout=30)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("reports"))
    assert row.split()[:6] == ["reports", "2", "3", "2/s", "0", "1"], out.stdout
    out = subprocess.run([two_agents.bin, "status", "--address", two_agents.address],
                         capture_output=True, text=True, env=two_agents.env(), timeout=30)
    assert "Durable tasks: 1 unfinished, 0 schedule(s)" in out.stdout, out.stdout
    out = subprocess.run([two_agents.bin, "queue", "set", "reports", "--rate", "5/s", "--address", two_agents.address],
                         capture_output=True, text=True, env=two_agents.env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert {q["name"]: q for q in corral.queues()}["reports"]["rate_per_s"] == 5.0
    corral.cancel(later)
