"""Durable tasks: stored before submit() returns, run by name on workers that registered them,
results by id from any process, and across a head restart."""
import os
import subprocess
import sys
import tempfile
import time

import pytest

import corral
import durable_tasks
import netns
from conftest import TESTS_DIR, wait_until


@pytest.fixture
def durable_cluster(cluster):
    cluster.add_agent(num_cpus=2, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(1)
    return cluster


def counter(name):
    return corral.cluster_status()["counters"].get(name, 0)


def test_submit_then_result_by_id_from_another_process(durable_cluster):
    task_id = durable_tasks.add.submit(2, 3)
    assert isinstance(task_id, str) and len(task_id) == 32
    assert corral.result(task_id).get(timeout=30) == 5
    assert corral.result(task_id).state == "SUCCESS"
    code = ("import corral, sys; corral.init(address=sys.argv[1]); "
            "print(corral.result(sys.argv[2]).get(timeout=30))")
    out = subprocess.run([sys.executable, "-c", code, durable_cluster.address, task_id], capture_output=True,
                         text=True, timeout=60, env=dict(durable_cluster.env(), PYTHONPATH=TESTS_DIR))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_json_arguments_and_results(durable_cluster):
    task_id = durable_tasks.add.options(args_format="json").submit([1], [2])
    assert corral.result(task_id).get(timeout=30) == [1, 2]


def test_unknown_function_is_refused_before_anything_is_stored(durable_cluster):
    @corral.task
    def not_on_any_worker():
        return 1

    with pytest.raises(corral.exceptions.InvalidArgumentError, match="no worker registered the task function"):
        not_on_any_worker.submit()
    assert counter("durable_submitted") == 0
    assert counter("durable_submissions_refused") == 1


def test_retries_with_backoff_then_success(durable_cluster, tmp_path):
    task_id = durable_tasks.flaky.submit(str(tmp_path / "count"), 3)
    assert corral.result(task_id).get(timeout=30) == 3
    assert counter("durable_retries") == 2


def test_failure_keeps_the_traceback(durable_cluster):
    task_id = durable_tasks.boom.submit("it broke")
    r = corral.result(task_id)
    with pytest.raises(corral.TaskError, match="ValueError: it broke"):
        r.get(timeout=30)
    assert r.state == "FAILURE"
    assert "Traceback" in r.traceback and "it broke" in r.traceback


def test_idempotency_key_makes_a_resubmission_the_same_task(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    keyed = durable_tasks.record.options(idempotency_key="report-2026-11-26")
    first = keyed.submit(ledger, "once")
    second = keyed.submit(ledger, "once")
    assert first == second
    assert corral.result(first).get(timeout=30) == "once"
    with open(ledger) as f:
        assert sum(line.startswith("start") for line in f) == 1
    assert counter("durable_duplicates") == 1


def test_countdown_waits_in_the_head(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    submitted = time.time()
    task_id = durable_tasks.record.options(countdown=1.0).submit(ledger, "later")
    assert corral.result(task_id).state == "PENDING"
    assert corral.result(task_id).get(timeout=30) == "later"
    with open(ledger) as f:
        started = float(f.readline().split()[2])
    assert started >= submitted + 1.0


def test_expired_task_never_starts(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    task_id = durable_tasks.record.options(countdown=0.5, expires=0.1).submit(ledger, "never")
    with pytest.raises(corral.TaskCancelledError, match="expired"):
        corral.result(task_id).get(timeout=30)
    assert not os.path.exists(ledger)


def test_map_submit_stores_many_in_one_request(durable_cluster):
    ids = durable_tasks.add.map_submit([(i, i) for i in range(50)])
    assert len(set(ids)) == 50
    assert [corral.result(i).get(timeout=60) for i in ids] == [2 * i for i in range(50)]


def test_unknown_id_looks_pending_as_in_celery(durable_cluster):
    assert corral.result("0" * 32).state == "PENDING"


@pytest.mark.skipif(bool(netns.available()), reason=netns.available() or "")
def test_durable_tasks_survive_a_head_restart():
    net = netns.NetCluster(agents=2, agent_args=("--tasks", "durable_tasks"))
    try:
        net.connect()
        wait_until(lambda: sum(n["state"] == "alive" and bool(n["python_version"]) for n in corral.nodes()) == 2,
                   what="2 nodes")
        ledger = tempfile.mktemp(prefix="corral-durable-")
        waiting = durable_tasks.record.options(countdown=2.0).submit(ledger, "after-restart")
        running = [durable_tasks.record.submit(ledger, f"r{i}", 2.0) for i in range(2)]
        wait_until(lambda: os.path.exists(ledger) and open(ledger).read().count("start") == 2, what="2 running")
        net.restart_head(down_s=0.3)
        assert corral.result(waiting).get(timeout=60) == "after-restart"
        assert [corral.result(i).get(timeout=60) for i in running] == ["r0", "r1"]
        with open(ledger) as f:
            starts = [l.split()[1] for l in f if l.startswith("start")]
        print(f"\n[durable head restart] submitted 3 / completed 3 / lost 0 / runs {len(starts)}")
        assert sorted(set(starts)) == ["after-restart", "r0", "r1"]
    finally:
        corral.shutdown()
        net.close()


def test_the_head_fsyncs_before_acknowledging(durable_cluster, tmp_path):
    """Counts fsync/fdatasync in the real head process (strace): sequential submissions each wait
    for their acknowledgement, so each needs its own sync; fewer syncs than acknowledgements would
    mean an acknowledged task could be lost on power loss."""
    trace = tmp_path / "trace"
    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=fsync,fdatasync", "-o", str(trace),
                               "-p", str(durable_cluster.head.pid)], stderr=subprocess.PIPE, text=True)
    try:
        assert "attached" in tracer.stderr.readline()
        acknowledged = 0
        later = durable_tasks.add.options(countdown=3600)  # none runs: no other writes to sync
        for i in range(20):
            later.submit(i, i)
            acknowledged += 1
    finally:
        tracer.terminate()
        tracer.wait(10)
    with open(trace) as f:
        syncs = sum(("fsync(" in line or "fdatasync(" in line) for line in f)
    print(f"\n[fsync] {acknowledged} acknowledged submissions, {syncs} syncs in the head")
    assert syncs >= acknowledged


def test_revoke_pending_and_running_and_list(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    pending = durable_tasks.record.options(countdown=3600).submit(ledger, "never")
    assert corral.cancel(pending) == "REVOKED"
    running = durable_tasks.record.submit(ledger, "stopped", 30.0)
    wait_until(lambda: os.path.exists(ledger), what="the task running")
    assert corral.result(running).revoke() == "REVOKED"
    with pytest.raises(corral.TaskCancelledError):
        corral.result(running).get(timeout=10)
    with open(ledger) as f:
        text = f.read()
    assert "start never" not in text and "end stopped" not in text
    failed = durable_tasks.boom.submit("listed")
    with pytest.raises(corral.TaskError):
        corral.result(failed).get(timeout=30)
    assert [t["id"] for t in corral.tasks(state="failure")] == [failed]
    assert {t["id"] for t in corral.tasks(state="revoked")} == {pending, running}
    out = subprocess.run([durable_cluster.bin, "tasks", "--state", "failed",
                          "--address", durable_cluster.address], capture_output=True, text=True,
                         env=durable_cluster.env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert failed in out.stdout and "ValueError: listed" in out.stdout
    out = subprocess.run([durable_cluster.bin, "tasks", "--state", "bogus", "--address", durable_cluster.address],
                         capture_output=True, text=True, env=durable_cluster.env(), timeout=30)
    assert out.returncode == 1 and "unknown state 'bogus'" in out.stderr
