"""Durable tasks: stored before submit() returns, run by name on workers that registered them,
results by id from any process, and across a head restart."""
import json
import os
import subprocess
import sys
import tempfile
import time

import cloudpickle
import pytest

import corral
from corral import durable
import celery_more
import durable_tasks
from corral.compat.celery import chain
import netns
from conftest import TESTS_DIR, Cluster, wait_until


@pytest.fixture
def durable_cluster(cluster):
    cluster.add_agent(num_cpus=2, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(1)
    return cluster


def counter(name):
    return corral.cluster_status()["counters"].get(name, 0)


def effect_lines(ledger):
    """The ledger's effects as "start KEY" / "end KEY", one per line written (times and pids left out)."""
    with open(ledger) as f:
        return [" ".join(line.split()[:2]) for line in f]


def test_submit_then_result_by_id_from_another_process(durable_cluster):
    task_id = durable_tasks.add.submit(2, 3)
    assert isinstance(task_id, str) and len(task_id) == 32
    assert task_id.id == task_id and task_id.get(timeout=30) == 5 and task_id.state == "SUCCESS"
    assert counter("durable_results_from_memory") >= 1  # a task finished lately is read without the store
    assert json.loads(json.dumps({"id": task_id}))["id"] == task_id  # storable as it is
    assert corral.result(task_id).get(timeout=30) == 5
    assert corral.result(task_id).state == "SUCCESS"
    code = ("import corral, sys; corral.init(address=sys.argv[1]); "
            "print(corral.result(sys.argv[2]).get(timeout=30))")
    out = subprocess.run([sys.executable, "-c", code, durable_cluster.address, task_id], capture_output=True,
                         text=True, timeout=60, env=dict(durable_cluster.env(), PYTHONPATH=TESTS_DIR))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_reexecutions_are_counted_and_visible(durable_cluster, tmp_path):
    task_id = durable_tasks.die_once.submit(str(tmp_path / "marker"))
    assert corral.result(task_id).get(timeout=60) == "survived"
    assert corral.result(task_id).runs == 2, "its worker was killed once: run again, and that is visible"
    assert counter("durable_reexecutions") == 1
    flaky = durable_tasks.flaky.submit(str(tmp_path / "count"), 2)
    assert corral.result(flaky).get(timeout=60) == 2
    assert corral.result(flaky).runs == 2  # a retry is a run too


def test_an_upgraded_task_module_takes_effect_at_the_next_run(cluster, tmp_path):
    code = tmp_path / "versioned.py"
    code.write_text("import corral\n\n@corral.task\ndef version():\n    return 1\n")
    cluster.add_agent(num_cpus=1, extra=("--tasks", "versioned"), python_path=f"{tmp_path}:{TESTS_DIR}")
    cluster.connect()
    cluster.wait_nodes(1)
    assert corral.send_task("versioned:version").get(timeout=30) == 1
    code.write_text("import corral\n\n@corral.task\ndef version():\n    return 'two'  # upgraded\n")
    assert corral.send_task("versioned:version").get(timeout=30) == "two"


def test_a_durable_task_fans_out_to_remote_tasks(durable_cluster):
    """The seed's pattern: a scheduled (durable) job that spreads its work over the cluster."""
    assert durable_tasks.fan_out.submit(50).get(timeout=120) == sum(i * i for i in range(50))


def test_native_canvas(durable_cluster):
    """chain/group/chord of @corral.task functions, run by the head."""
    add = durable_tasks.add
    assert corral.chain(add.s(1, 2), add.s(10)).apply_async().get(timeout=60) == 13
    assert corral.chord([add.s(i, i) for i in range(4)], durable_tasks.total.s()).apply_async().get(timeout=60) == 12
    assert corral.group(add.s(1, 1), add.s(2, 2)).apply_async().get(timeout=60) == [2, 4]
    r = corral.chain(add.s(1, 1), add.si(5, 5)).apply_async(queue="canvas")
    assert r.get(timeout=60) == 10 and {t["queue"] for t in corral.tasks(queue="canvas")} == {"canvas"}


def test_json_arguments_and_results(durable_cluster):
    task_id = durable_tasks.add.options(args_format="json").submit([1], [2])
    assert corral.result(task_id).get(timeout=30) == [1, 2]


def test_a_task_for_a_function_no_worker_has_yet_waits_for_one(cluster):
    """As Celery's broker keeps a task until a worker for it comes: stored, listed with what it waits
    for, and run once a node whose workers registered the name joins."""
    cluster.connect()
    task_id = durable_tasks.add.submit(2, 2)
    r = corral.result(task_id)
    assert r.state == "PENDING"
    [listed] = corral.tasks()
    assert "waits for a worker that runs durable_tasks:add" in listed["note"]
    out = subprocess.run([cluster.bin, "tasks", "--address", cluster.address], capture_output=True, text=True,
                         env=cluster.env(), timeout=30)
    assert "(waits for a worker that runs durable_tasks:add" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([cluster.bin, "status", "--address", cluster.address], capture_output=True, text=True,
                         env=cluster.env(), timeout=30)
    assert "durable tasks of durable_tasks:add: no connected node's workers registered it" in out.stdout, out.stdout
    cluster.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
    assert r.get(timeout=60) == 4
    assert corral.tasks()[0]["note"] == ""


def test_a_strict_head_refuses_unknown_functions_before_anything_is_stored():
    c = Cluster(head_args=("--strict-task-names",))
    try:
        c.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
        c.connect()
        c.wait_nodes(1)

        @corral.task
        def not_on_any_worker():
            return 1

        with pytest.raises(corral.exceptions.InvalidArgumentError, match="no worker registered the task function"):
            not_on_any_worker.submit()
        assert counter("durable_submitted") == 0
        assert counter("durable_submissions_refused") == 1
        assert corral.result(durable_tasks.add.submit(1, 2)).get(timeout=30) == 3
    finally:
        corral.shutdown()
        c.stop()


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


def test_a_failed_task_raises_its_own_exception(durable_cluster):
    """As a remote task's: `except ValueError` catches it, and it is a TaskError with the traceback."""
    task_id = durable_tasks.boom.submit("it broke")
    for get in (task_id.get, corral.result(task_id).get):
        with pytest.raises(ValueError, match="it broke") as info:
            get(timeout=30)
        assert isinstance(info.value, corral.TaskError) and "Remote traceback" in str(info.value)
        assert info.value.cause.args == ("it broke",)


def test_a_stored_exception_is_raised_as_it_was():
    """A failure whose pickled exception the head returns (in `result`) raises that exception,
    attributes and all; without it, the class named in the traceback, if this process has it."""
    err = durable.TaskResult("t")._exception({"state": "FAILURE", "function": "m:f", "error": "m:f raised X",
                                              "result": cloudpickle.dumps(durable_tasks.CodedError(7))})
    assert isinstance(err, durable_tasks.CodedError) and err.code == 7
    text = "m:f raised CodedError\n\nRemote traceback:\nTraceback (most recent call last):\n  File \"x\", line 1\n" \
           "durable_tasks.CodedError: 8\n"
    err = durable.TaskResult("t")._exception({"state": "FAILURE", "function": "m:f", "error": text, "result": b""})
    assert isinstance(err, durable_tasks.CodedError) and err.args == ("8",)
    err = durable.TaskResult("t")._exception({"state": "FAILURE", "function": "m:f", "result": b"",
                                              "error": text.replace("durable_tasks.", "not_imported.")})
    assert type(err) is corral.TaskError and "not_imported.CodedError: 8" in str(err)


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
    net = netns.NetCluster(agents=2, agent_args=("--tasks", "durable_tasks,celery_more"))
    try:
        net.connect()
        wait_until(lambda: sum(n["state"] == "alive" and bool(n["python_version"]) for n in corral.nodes()) == 2,
                   what="2 nodes")
        ledger = tempfile.mktemp(prefix="corral-durable-")
        ticks = tempfile.mktemp(prefix="corral-ticks-")
        corral.schedule("tick", durable_tasks.record, every=1, args=(ticks, "tick"))
        wait_until(lambda: len(corral.schedule_history("tick")) >= 2, what="the schedule firing")
        waiting = durable_tasks.record.options(countdown=2.0).submit(ledger, "after-restart")
        running = [durable_tasks.record.submit(ledger, f"r{i}", 2.0) for i in range(2)]
        # A chain whose first step waits behind them: its link lives in the store.
        canvas = chain(celery_more.slow_add.s(1, 2, 0.2), celery_more.add.s(10)).apply_async()
        wait_until(lambda: os.path.exists(ledger) and open(ledger).read().count("start") == 2, what="2 running")
        net.restart_head(down_s=0.3)
        assert corral.result(waiting).get(timeout=60) == "after-restart"
        assert [corral.result(i).get(timeout=60) for i in running] == ["r0", "r1"]
        assert canvas.get(timeout=60) == 13
        # The effect ledger, read whole. At-least-once allows a second run only where a run is lost
        # with its worker or node; none is here (the agents stay up, and the restarted head adopts the
        # runs they hold), so each task's effect is there exactly once, and the head counted one run.
        effects = effect_lines(ledger)
        runs = {key: corral.result(i).runs for key, i in [("after-restart", waiting), ("r0", running[0]),
                                                            ("r1", running[1])]}
        print(f"\n[durable head restart] submitted 3 / completed 3 / lost 0 / effects {len(effects)} / runs {runs}")
        assert sorted(effects) == sorted(f"{kind} {key}" for key in runs for kind in ("start", "end")), effects
        assert runs == {"after-restart": 1, "r0": 1, "r1": 1}
        # The schedule went on after the restart, each slot once: consecutive seconds, no gap, no repeat.
        before = len(corral.schedule_history("tick", 1000))
        wait_until(lambda: len(corral.schedule_history("tick", 1000)) >= before + 2, what="fires after the restart")
        corral.pause_schedule("tick")
        wait_until(lambda: all(f["state"] == "SUCCESS" for f in corral.schedule_history("tick", 1000)),
                   what="every fired tick done")
        fires = corral.schedule_history("tick", 1000)
        slots = sorted(f["slot_ns"] for f in fires)
        print(f"[schedule across a head restart] {len(slots)} slots fired, "
              f"{corral.cluster_status()['counters'].get('schedule_slots_already_fired', 0)} refused as fired before")
        assert all(b - a == 1_000_000_000 for a, b in zip(slots, slots[1:])), slots
        # One effect per fired slot (its task's start and end), none for a slot twice.
        assert sorted(effect_lines(ticks)) == ["end tick"] * len(fires) + ["start tick"] * len(fires)
        assert [corral.result(f["task_id"]).runs for f in fires] == [1] * len(fires)
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
    row = next(line for line in out.stdout.splitlines() if line.startswith(failed))
    assert row.split()[1:6] == ["FAILURE", "durable_tasks:boom", "default", "0", "1"], row  # attempt 0, 1 run
    out = subprocess.run([durable_cluster.bin, "tasks", "--state", "bogus", "--address", durable_cluster.address],
                         capture_output=True, text=True, env=durable_cluster.env(), timeout=30)
    assert out.returncode == 1 and "unknown state 'bogus'" in out.stderr


def test_schedule_fires_each_slot_once_and_can_be_paused(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    s = corral.schedule("tick", durable_tasks.record, every="1s", args=(ledger, "tick"))
    assert s["every_s"] == 1 and s["next_slot_ns"] > 0
    wait_until(lambda: len(corral.schedule_history("tick")) >= 3, timeout=30, what="3 fires")
    history = corral.schedule_history("tick", limit=100)
    slots = sorted(f["slot_ns"] for f in history)
    assert all(b - a == 1_000_000_000 for a, b in zip(slots, slots[1:])), "every slot once, none twice"
    assert [x["name"] for x in corral.schedules()] == ["tick"]
    corral.pause_schedule("tick")
    wait_until(lambda: all(f["state"] in ("SUCCESS",) for f in corral.schedule_history("tick", 100)),
               what="fired tasks done")
    paused_at = len(corral.schedule_history("tick", 100))
    time.sleep(1.5)
    assert len(corral.schedule_history("tick", 100)) == paused_at, "a paused schedule does not fire"
    task_id = corral.run_schedule_now("tick")
    assert corral.result(task_id).get(timeout=30) == "tick"
    corral.remove_schedule("tick")
    assert corral.schedules() == []
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="no schedule named 'tick'"):
        corral.pause_schedule("tick")


def test_bad_schedules_are_clear_errors(durable_cluster):
    cases = [
        (dict(cron="61 * * * *"), "minute 61 is out of range"),
        (dict(cron="0 2 * * *", tz="Asia/Nowhere"), "unknown time zone 'Asia/Nowhere'"),
        (dict(cron="0 0 30 2 *"), "never matches"),
        (dict(cron="0 2 * * *", misfire="sometimes"), "misfire 'sometimes'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(corral.exceptions.InvalidArgumentError, match=message):
            corral.schedule("bad", durable_tasks.add, args=(1, 2), **kwargs)
    # A name no worker registered is kept, as a task for it is, and never reaches code no worker offered.
    corral.schedule("unknown", "os:system", every=3600)
    fired = corral.result(corral.run_schedule_now("unknown"))
    assert fired.state == "PENDING" and "waits for a worker that runs os:system" in corral.tasks()[0]["note"]
    fired.revoke()
    corral.remove_schedule("unknown")
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="every="):
        corral.schedule("bad", durable_tasks.add, every="soon")
    assert corral.schedules() == []
    s = corral.schedule("daily-retraining", durable_tasks.add, cron="0 2 * * *", tz="Asia/Dhaka", args=(1, 2))
    assert s["tz"] == "Asia/Dhaka" and s["misfire"] == "run_once"
    # 02:00 in Dhaka is 20:00 UTC.
    assert time.gmtime(s["next_slot_ns"] // 1_000_000_000)[3:5] == (20, 0)


def test_schedule_cli(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")

    def cli(*args):
        return subprocess.run([durable_cluster.bin, "schedule", *args, "--address", durable_cluster.address],
                              capture_output=True, text=True, env=durable_cluster.env(), timeout=30)

    out = cli("add", "nightly", "--function", "durable_tasks:record", "--cron", "0 2 * * *", "--tz", "Asia/Dhaka",
              "--args", json.dumps([ledger, "cli"]))
    assert out.returncode == 0, out.stderr
    assert "nightly" in out.stdout and "Asia/Dhaka" in out.stdout
    out = cli("run-now", "nightly")
    assert out.returncode == 0 and "submitted task" in out.stdout
    task_id = out.stdout.split()[-1]
    assert corral.result(task_id).get(timeout=30) == "cli"
    out = cli("history", "nightly")
    assert task_id in out.stdout and "SUCCESS" in out.stdout
    assert cli("pause", "nightly").returncode == 0
    assert "yes" in cli("list").stdout
    out = cli("add", "broken", "--function", "durable_tasks:record", "--cron", "0 25 * * *")
    assert out.returncode == 1 and "hour 25 is out of range" in out.stderr
    assert cli("rm", "nightly").returncode == 0
    assert "No schedules" in cli("list").stdout


def test_finished_tasks_are_purged_after_the_result_ttl():
    from conftest import Cluster
    c = Cluster(head_args=("--heartbeat-ms", "200", "--result-ttl", "1"))
    try:
        c.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
        c.connect()
        c.wait_nodes(1)
        task_id = durable_tasks.add.submit(1, 1)
        assert corral.result(task_id).get(timeout=30) == 2
        # Kept for the TTL (1 s), then removed by the next purge (every 5 s at most).
        wait_until(lambda: corral.cluster_status()["counters"].get("durable_purged", 0) >= 1, timeout=30,
                   what="the purge")
        assert corral.result(task_id).state == "PENDING"  # unknown now, as Celery reports forgotten ids
        assert corral.tasks() == []
    finally:
        corral.shutdown()
        c.stop()


def test_soft_and_hard_time_limits(durable_cluster, tmp_path):
    ledger = str(tmp_path / "ledger")
    soft = durable_tasks.sleepy.options(soft_time_limit=0.3).submit(ledger, 10)
    assert corral.result(soft).get(timeout=30) == "cleaned up"
    hard = durable_tasks.sleepy.options(time_limit=0.5, max_retries=1).submit(ledger, 10)
    r = corral.result(hard)
    with pytest.raises(corral.TaskError, match="TimeLimitExceeded"):
        r.get(timeout=30)
    assert r.state == "FAILURE"
    assert counter("durable_retries") == 1, "a hard limit is a failed attempt: retried while retries remain"
    with open(ledger) as f:
        assert f.read().count("soft limit") == 1


def test_submit_by_name_from_the_cli(durable_cluster):
    def cli(*args):
        return subprocess.run([durable_cluster.bin, "submit", *args, "--address", durable_cluster.address],
                              capture_output=True, text=True, env=durable_cluster.env(), timeout=60)

    out = cli("durable_tasks.add", "--args", "[20, 22]", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    out = cli("durable_tasks:add", "--args", "[1, 2]")
    assert out.returncode == 0 and len(out.stdout.strip()) == 32
    assert corral.result(out.stdout.strip()).get(timeout=30) == 3
    out = cli("durable_tasks.boom", "--args", '["from the cli"]', "--wait")
    assert out.returncode == 1 and "ValueError: from the cli" in out.stderr
    # A name no worker registered is stored and waits; no worker runs a name it did not register.
    out = cli("os.system", "--args", '["touch pwned"]')
    assert out.returncode == 0, out.stderr
    waiting = corral.result(out.stdout.strip())
    assert corral.result(durable_tasks.add.submit(1, 1)).get(timeout=30) == 2  # ran after it, on the same node
    assert waiting.state == "PENDING" and not os.path.exists(os.path.join(durable_cluster.dir, "pwned"))
    waiting.revoke()
    out = cli("durable_tasks.add", "--args", "1, 2")
    assert out.returncode == 2 and "JSON array" in out.stderr
