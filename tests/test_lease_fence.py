"""The lease fence against a frozen node: attempts stopped together with their agent (a laptop lid,
SIGSTOP of the whole node) must never complete their effect after the node thaws."""
import os
import signal
import time

import corral
from conftest import Cluster, wait_until


@corral.remote
def effect(key, seconds, ledger):
    """Appends "start", sleeps, then appends "end" (the effect) with this attempt's node."""
    import time
    node = corral.runtime_context().node_id
    with open(ledger, "a") as f:
        f.write(f"start {key} {node} {os.getpid()}\n")
    time.sleep(seconds)
    with open(ledger, "a") as f:
        f.write(f"end {key} {node}\n")
    return node


def _ledger(path, kind):
    with open(path) as f:
        return [line.split()[1:] for line in f if line.startswith(kind + " ")]


def test_superseded_attempts_frozen_with_their_node_never_complete(tmp_path):
    # A laptop lid: the agent and its workers are stopped together, past the dead threshold, while
    # 20 attempts run; the head re-runs them elsewhere; then the node thaws. Before the fix, the
    # workers' watchdog thread raced the task threads after the thaw and the tasks often won:
    # their "end" effects happened a second time. Now the kernel ends each worker at the lease
    # expiry, while it is still stopped.
    import psutil
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "6000"))
    try:
        victim = c.add_agent(num_cpus=20)
        c.connect()
        c.wait_nodes(1)
        ledger = str(tmp_path / "ledger")
        refs = [effect.remote(f"k{i}", 4.0, ledger) for i in range(20)]
        wait_until(lambda: os.path.exists(ledger) and len(_ledger(ledger, "start")) == 20, timeout=60,
                   what="20 attempts running on the victim")
        c.add_agent(num_cpus=20)
        frozen = [psutil.Process(victim.pid)] + psutil.Process(victim.pid).children(recursive=True)
        for p in frozen:
            p.send_signal(signal.SIGSTOP)
        try:
            nodes = corral.get(refs, timeout=60)        # re-run on the other node after the dead threshold
            assert victim.node_id not in nodes
            workers = {int(pid) for _, node, pid in _ledger(ledger, "start") if node == victim.node_id}
            assert len(workers) == 20
            # The kernel ended them while they were stopped (zombies: their frozen agent cannot reap).
            for pid in workers:
                assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, \
                    f"worker {pid} outlived its node's lease while stopped"
        finally:
            for p in frozen:
                try:
                    p.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass
        # Back: the victim reconnects; give any thawed attempt the time to finish its effect.
        wait_until(lambda: any(n["node_id"] == victim.node_id and n["state"] == "alive" for n in corral.nodes()),
                   timeout=30, what="the victim to come back")
        time.sleep(2.0)  # an effect would land within this: the tasks' sleeps ended long ago
        ends = _ledger(ledger, "end")
        late = [key for key, node in ends if node == victim.node_id]
        print(f"\n[frozen node] 20 attempts superseded: {len(late)} late effects, {len(ends)} effects in all")
        assert late == [], f"superseded attempts completed their effect after the thaw: {late}"
        assert sorted(key for key, _ in ends) == sorted(f"k{i}" for i in range(20))
    finally:
        corral.shutdown()
        c.stop()
