"""A durable task's `runs` counts every run that started, as its effects show: also a run lost
together with the head (the head's machine dies with its agent, then both come back)."""
import os

import corral
import durable_tasks
from conftest import Process, wait_until


def test_a_run_lost_with_the_head_and_its_agent_is_counted(cluster, tmp_path):
    agent = cluster.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(1)
    ledger = str(tmp_path / "ledger")
    task = durable_tasks.record.submit(ledger, "x", 3.0)
    wait_until(lambda: os.path.exists(ledger), what="the first run started")
    agent.kill()             # the run dies with its agent and worker...
    cluster.restart_head()   # ...and the head with it, then the head comes back on its state dir
    cluster.agents[0] = Process(agent.args, agent.log_path, agent.env)  # and the agent, same node id
    assert corral.result(task).get(timeout=60) == "x"
    with open(ledger) as f:
        starts = sum(line.startswith("start x") for line in f)
    runs = corral.result(task).runs
    print(f"\n[runs across a head restart] {starts} starts in the ledger, runs {runs}, durable_reexecutions "
          f"{corral.cluster_status()['counters'].get('durable_reexecutions', 0)}")
    assert starts == 2, "the lost run ran again (at least once)"
    assert runs == starts, "every run that started is counted"
