"""Celery's documented behaviour, one test each, on the Celery facade (corral.compat.celery).

Every test takes an example or a statement of Celery's own documentation (celery/celery:
docs/userguide/tasks.rst, calling.rst, canvas.rst, periodic-tasks.rst,
docs/getting-started/first-steps-with-celery.rst, next-steps.rst), changes its imports from
``celery`` to ``corral.compat.celery`` and asserts what the page says happens. The tasks are in
tests/celery_docs_tasks.py, imported by the workers of one cluster shared by the module. The
checklist, one row per test, is tests/celery_docs_behaviours.md.

Tasks that the tests observe write JSON lines into a ledger under the test's tmp dir; tasks that
must stay running wait for a gate file the test creates. Timing is only ever checked as a lower
bound (a countdown is not run sooner than asked), from the times the tasks wrote themselves.
"""
import datetime
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import zoneinfo

import pytest

import corral
from corral.compat.celery import Celery, Task, chain, chord, group, signature, states
from corral.compat.celery.exceptions import (ChordError, MaxRetriesExceededError, SoftTimeLimitExceeded,
                                             TaskRevokedError, TimeLimitExceeded)
from corral.compat.celery.result import AsyncResult, EagerResult, GroupResult
from corral.compat.celery.schedules import crontab
from corral.compat.celery.utils.log import get_task_logger

import celery_docs_tasks as t
from celery_docs_tasks import add, app, fail, mul, read, tsum
from conftest import TESTS_DIR, Cluster, wait_until

T = 30        # seconds: the longest a get() here waits for a result
SLOTS = 4     # tasks the agent runs at once (its --num-cpus)


# -- the cluster: one head and one agent whose workers import celery_docs_tasks, for the module --

@pytest.fixture(scope="module")
def workers():
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    try:
        c.add_agent(num_cpus=SLOTS, extra=("--tasks", "celery_docs_tasks"))
        c.connect()
        c.wait_nodes(1)
        yield c
    finally:
        corral.shutdown()
        c.stop()

# -- end of the cluster fixture --


@pytest.fixture
def ledger(tmp_path):
    return str(tmp_path / "ledger")


@pytest.fixture
def gates(tmp_path):
    """gates(name) -> a gate file path (or gates(path=...) for a given one); every gate handed out
    is opened when the test ends, so no gated task outlives its test (the workers are shared)."""
    handed = []

    def gate(name="gate", path=None):
        path = path or str(tmp_path / f"gate-{name}")
        handed.append(path)
        return path
    yield gate
    for path in handed:
        if os.path.isdir(os.path.dirname(path)):
            open_gate(path)


def open_gate(path):
    open(path, "a").close()


def times(path, **match):
    """The times of the ledger's entries (those with the given fields)."""
    return [e["t"] for e in read(path) if all(e.get(k) == v for k, v in match.items())]


def gaps(ts):
    return [b - a for a, b in zip(ts, ts[1:])]


def events(path):
    return [e["event"] for e in read(path)]


def invert(sig, timeout=T):
    """``~sig`` (sig.apply_async().get()), in a thread so that a hang fails the test after `timeout`."""
    out = {}

    def run():
        try:
            out["value"] = ~sig
        except BaseException as e:  # handed to the test below, which re-raises it
            out["error"] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    assert not th.is_alive(), f"~sig did not return within {timeout}s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def active_ids():
    return {e["id"] for entries in (app.control.inspect().active() or {}).values() for e in entries}


def apply_beat(a):
    """Makes the app's beat_schedule the cluster's schedules (the facade's one step for `celery beat`)."""
    a.apply_beat_schedule()
    return {s["name"]: s for s in corral.schedules()}


def next_slot(s, tz):
    return datetime.datetime.fromtimestamp(s["next_slot_ns"] / 1e9, zoneinfo.ZoneInfo(tz))


# ====================================================================================
# getting-started/first-steps-with-celery.rst
# ====================================================================================

def test_delay_returns_an_asyncresult_and_get_returns_the_value(workers):
    r = add.delay(4, 4)
    assert isinstance(r, AsyncResult)
    assert r.get(timeout=T) == 8


def test_ready_is_false_until_the_task_has_finished(workers, ledger, gates):
    gate = gates()
    r = t.gated.delay(ledger, gate, 8)
    wait_until(lambda: read(ledger), what="the task started")
    assert r.ready() is False
    open_gate(gate)
    assert r.get(timeout=T) == 8
    assert r.ready() is True


def test_get_reraises_the_tasks_own_exception(workers):
    r = fail.delay("it broke")
    with pytest.raises(ValueError) as e:
        r.get(timeout=T)
    assert type(e.value) is ValueError
    assert str(e.value) == "it broke"


def test_get_propagate_false_returns_the_exception(workers):
    r = add.delay(2, "2")   # next-steps.rst: TypeError: unsupported operand type(s) for +
    exc = r.get(timeout=T, propagate=False)
    assert type(exc) is TypeError and "unsupported operand" in str(exc)
    assert r.failed() is True and r.successful() is False
    assert r.state == "FAILURE"


def test_traceback_of_a_failed_task(workers):
    r = fail.delay("it broke")
    r.get(timeout=T, propagate=False)
    assert isinstance(r.traceback, str)
    assert "ValueError" in r.traceback and "it broke" in r.traceback


def test_conf_settings_set_directly_and_with_update():
    a = Celery("conf_docs")
    a.conf.task_serializer = "json"
    assert a.conf.task_serializer == "json"
    a.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                  timezone="Europe/Oslo", enable_utc=True)
    assert a.conf.timezone == "Europe/Oslo"
    assert a.conf.accept_content == ["json"] and a.conf.result_serializer == "json" and a.conf.enable_utc is True


def test_config_from_object_by_module_name(tmp_path, monkeypatch):
    (tmp_path / "celeryconfig_docs.py").write_text(
        "broker_url = 'pyamqp://'\nresult_backend = 'rpc://'\n\ntask_serializer = 'json'\n"
        "result_serializer = 'json'\naccept_content = ['json']\ntimezone = 'Europe/Oslo'\nenable_utc = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a = Celery("config_module_docs")
    a.config_from_object("celeryconfig_docs")
    assert a.conf.timezone == "Europe/Oslo"
    assert a.conf.task_serializer == "json" and a.conf.accept_content == ["json"]


def test_config_from_object_with_a_class():
    assert t.limits_app.conf.task_time_limit == 2
    assert t.limits_app.conf.task_soft_time_limit == 1
    assert t.limits_app.conf.timezone == "Europe/Oslo"


def test_task_routes_send_a_task_to_the_named_queue(workers):
    assert t.routed_low.delay().get(timeout=T) == "low-priority"


def test_task_annotations_set_a_rate_limit_and_sending_says_what_to_do_instead(workers, ledger):
    """Differs (docs/celery.md): Corral limits a queue, cluster-wide, not a task per worker."""
    assert t.annotated.rate_limit == "120/m"  # the annotation applies to the task, as in Celery
    with pytest.raises(corral.exceptions.InvalidArgumentError, match=r"corral.queue\(name, rate_limit='120/m'\)"):
        t.annotated.delay(ledger)


def test_unknown_task_id_is_pending(workers):
    # first-steps "Troubleshooting", next-steps "Calling Tasks": PENDING is the state of any unknown id.
    assert app.AsyncResult("this-id-does-not-exist").state == "PENDING"


def test_forget_releases_the_stored_result(workers):
    # "you must eventually call get() or forget() on EVERY AsyncResult": forget() drops the stored
    # state and result, so the id reads as unknown (PENDING) after it.
    r = add.delay(1, 1)
    assert r.get(timeout=T) == 2
    r.forget()
    assert AsyncResult(r.id).state == "PENDING"
    assert AsyncResult(r.id).result is None


def test_task_default_queue_setting(workers):
    assert t.default_queue_of.delay().get(timeout=T) == "docs-default"


# ====================================================================================
# getting-started/next-steps.rst
# ====================================================================================

def test_every_task_invocation_gets_a_unique_uuid(workers):
    r1, r2 = add.delay(2, 2), add.delay(2, 2)
    uuid.UUID(r1.id)
    uuid.UUID(r2.id)
    assert r1.id != r2.id
    assert r1.get(timeout=T) == r2.get(timeout=T) == 4


def test_apply_async_queue_and_countdown(workers, ledger):
    sent = time.time()
    r = t.stamp.apply_async((ledger, 4), queue="lopri", countdown=1)
    assert r.get(timeout=T) == 4
    assert times(ledger)[0] - sent >= 0.9, "countdown=1: the task ran no sooner than a second after the send"


def test_states_of_a_tracked_task_pending_started_success(workers, ledger, gates):
    gate = gates()
    r = t.tracked.apply_async((ledger, gate), countdown=1)
    assert r.state == "PENDING"
    wait_until(lambda: r.state == "STARTED" and read(ledger), what="STARTED")
    # tasks.rst "STARTED: meta-data: pid and hostname of the worker process executing the task".
    info = r.info
    assert info["pid"] == read(ledger)[0]["pid"]
    assert isinstance(info["hostname"], str) and info["hostname"]
    open_gate(gate)
    assert r.get(timeout=T) == "done"
    assert r.state == "SUCCESS"


def test_a_task_retried_twice_goes_started_retry_started_retry_started_success(workers):
    messages = []
    r = t.retries_twice_tracked.delay()
    assert r.get(timeout=T, on_message=messages.append) == 2
    seen = [m["status"] for m in messages if m["status"] != "PENDING"]
    seen = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert seen == ["STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "SUCCESS"]


def test_partial_signature_delay_prepends_its_arguments(workers):
    s2 = add.s(2)
    assert s2.delay(8).get(timeout=T) == 10
    partial = t.subtract.s(10)    # tasks.rst note: delay(30) -> subtract(30, 10)
    assert partial.delay(30).get(timeout=T) == 20
    assert partial.apply_async((30,)).get(timeout=T) == 20


def test_signature_keyword_arguments_merge_new_ones_win(workers):
    s3 = t.add_debug.s(2, 2, debug=True)
    assert s3.delay(debug=False).get(timeout=T) == [4, False]
    assert t.add_debug.s(2, 2).apply_async(kwargs={"debug": True}).get(timeout=T) == [4, True]


def test_partial_group(workers):
    g = group(add.s(i) for i in range(10))
    assert g(10).get(timeout=T) == [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]


def test_partial_chain(workers):
    assert chain(add.s(4, 4) | mul.s(8))().get(timeout=T) == 64
    g = chain(add.s(4) | mul.s(8))
    assert g(4).get(timeout=T) == 64
    assert (add.s(4, 4) | mul.s(8))().get(timeout=T) == 64


def test_task_routes_with_a_queue_and_the_queue_option(workers):
    assert t.routed_hipri.delay().get(timeout=T) == "hipri"
    assert t.routed_hipri.apply_async(queue="lopri").get(timeout=T) == "lopri"


def test_inspect_active_lists_the_running_task(workers, ledger, gates):
    gate = gates()
    r = t.gated.delay(ledger, gate, "x")
    wait_until(lambda: read(ledger), what="the task started")
    active = app.control.inspect().active()
    entries = [e for per_worker in active.values() for e in per_worker if e["id"] == r.id]
    assert len(entries) == 1
    assert entries[0]["name"] == "celery_docs_tasks.gated"
    assert list(entries[0]["args"]) == [ledger, gate, "x"]
    open_gate(gate)
    assert r.get(timeout=T) == "x"


def test_inspect_scheduled_lists_a_task_with_an_eta(workers):
    r = add.apply_async((1, 2), countdown=60)
    try:
        def listed():
            scheduled = app.control.inspect().scheduled() or {}
            return [e for per_worker in scheduled.values() for e in per_worker if e["request"]["id"] == r.id]
        entries = wait_until(listed, what="the task in inspect().scheduled()")
        assert entries[0]["request"]["name"] == "celery_docs_tasks.add"
    finally:
        r.revoke()   # not left for later tests


# ====================================================================================
# userguide/calling.rst
# ====================================================================================

def test_apply_async_takes_args_and_kwargs_delay_star_arguments(workers):
    assert t.add_debug.apply_async(args=[1, 2], kwargs={"debug": "x"}).get(timeout=T) == [3, "x"]
    assert t.add_debug.delay(1, 2, debug="x").get(timeout=T) == [3, "x"]
    assert t.add_debug.apply_async((1, 2), {"debug": "y"}).get(timeout=T) == [3, "y"]


def test_calling_a_task_runs_it_in_the_current_process():
    assert add(2, 2) == 4
    assert t.whereami() == os.getpid()


def test_countdown_runs_the_task_no_sooner(workers, ledger):
    sent = time.time()
    r = t.stamp.apply_async((ledger, 4), countdown=1)
    assert r.get(timeout=T) == 4
    assert times(ledger)[0] - sent >= 0.9


def test_eta_datetime_runs_the_task_no_sooner(workers, ledger):
    eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    r = t.stamp.apply_async((ledger, 4), eta=eta)
    assert r.get(timeout=T) == 4
    assert times(ledger)[0] >= eta.timestamp() - 0.1


def test_expires_in_seconds_marks_the_task_revoked(workers):
    r = add.apply_async((10, 10), countdown=2, expires=0.5)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)
    assert r.state == "REVOKED"


def test_expires_as_datetime_marks_the_task_revoked(workers):
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=0.5)
    r = add.apply_async((10, 10), countdown=2, expires=expires)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)
    assert r.state == "REVOKED"


def test_task_id_option_sets_the_tasks_id(workers):
    task_id = f"my_own_task_id-{uuid.uuid4().hex}"
    r = add.apply_async((1, 1), task_id=task_id)
    assert r.id == task_id
    assert AsyncResult(task_id).get(timeout=T) == 2


def test_send_task_calls_a_task_by_name(workers):
    assert app.send_task("celery_docs_tasks.add", args=(2, 2)).get(timeout=T) == 4
    assert app.send_task("celery_docs_tasks.add_debug", args=(1, 2), kwargs={"debug": True},
                         countdown=0.1).get(timeout=T) == [3, True]


def test_link_applies_the_callback_with_the_parents_result(workers):
    r = add.apply_async((2, 2), link=add.s(16))
    assert r.get(timeout=T) == 4
    assert len(r.children) == 1
    assert r.children[0].get(timeout=T) == 20     # (2 + 2) + 16


def test_link_list_calls_every_callback_with_the_result(workers, tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    r = add.apply_async((2, 2), link=[t.add_noted.s(16, first), t.record_value.s(second)])
    assert r.get(timeout=T) == 4
    wait_until(lambda: read(first) and read(second), what="both callbacks")
    assert [e["value"] for e in read(first)] == [20]      # add_noted(4, 16)
    assert [e["value"] for e in read(second)] == [4]      # record_value(4)


def test_link_error_calls_the_errback_with_request_exception_traceback(workers, ledger):
    r = fail.apply_async(("boom",), link_error=t.error_handler.s(ledger=ledger))
    with pytest.raises(ValueError):
        r.get(timeout=T)
    entry = wait_until(lambda: read(ledger), what="the errback")[0]
    assert entry["request_id"] == r.id
    assert (entry["exc_type"], entry["exc"]) == ("ValueError", "boom")
    assert entry["has_traceback"] is True


def test_on_message_callback_gets_every_state_change(workers):
    messages = []
    r = t.hello.apply_async(args=(1, 1))
    assert r.get(on_message=messages.append, propagate=False, timeout=T) == "hello world: 2"
    assert all(m["task_id"] == r.id for m in messages)
    seen = [(m["status"], m["result"]) for m in messages if m["status"] not in ("PENDING", "STARTED")]
    seen = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert seen == [("PROGRESS", {"progress": 50}), ("PROGRESS", {"progress": 90}), ("SUCCESS", "hello world: 2")]


def test_ignore_result_option_get_returns_none(workers):
    assert add.apply_async((1, 2), ignore_result=True).get(timeout=T) is None
    assert add.apply_async((1, 2), ignore_result=False).get(timeout=T) == 3


def test_serializer_json_option_and_task_attribute(workers):
    # JSON keys are always strings; tuples come back as lists.
    assert t.echo.apply_async(({1: "a"},), serializer="json").get(timeout=T) == {"1": "a"}
    assert t.echo_json.delay({1: "a", "t": (1, 2)}).get(timeout=T) == {"1": "a", "t": [1, 2]}


def test_default_serializer_is_json(workers):
    assert t.echo.delay({1: "a", "t": (1, 2)}).get(timeout=T) == {"1": "a", "t": [1, 2]}


def test_compression_option(workers):
    assert add.apply_async((2, 2), compression="zlib").get(timeout=T) == 4


def test_message_sending_retry_options(workers):
    assert add.apply_async((2, 2), retry=False).get(timeout=T) == 4
    assert add.apply_async((2, 2), retry=True, retry_policy={
        "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
        "retry_errors": None}).get(timeout=T) == 4


def test_connection_error_raises_operational_error(tmp_path):
    """With no broker (head) to reach, sending raises the task's OperationalError."""
    code = """
from celery_docs_tasks import add
try:
    add.delay(2, 2)
except add.OperationalError as exc:
    print("OperationalError", type(exc).__name__)
"""
    env = dict(os.environ, PYTHONPATH=TESTS_DIR, CORRAL_ADDRESS="127.0.0.1:1", CORRAL_TOKEN="x",
               CORRAL_RECONNECT_S="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OperationalError"), out.stdout + out.stderr


def test_group_of_signatures_instead_of_a_publisher_loop(workers):
    numbers = [(2, 2), (4, 4), (8, 8), (16, 16)]
    res = group(add.s(i, j) for i, j in numbers).apply_async()
    assert res.get(timeout=T) == [4, 8, 16, 32]


def test_queue_option_routes_the_task(workers):
    c = t.dump_context.apply_async((1, 2), queue="priority.high").get(timeout=T)
    assert c["delivery_info"]["routing_key"] == "priority.high"


# ====================================================================================
# userguide/tasks.rst
# ====================================================================================

def test_shared_task(workers):
    assert t.shared_add.name == "celery_docs_tasks.shared_add"
    assert t.shared_add.delay(2, 3).get(timeout=T) == 5


def test_task_decorator_applied_last_over_other_decorators(workers):
    assert t.decorated(1) == 4
    assert t.decorated.delay(1).get(timeout=T) == 4


def test_bound_task_gets_the_task_instance_as_self(workers):
    r = t.bound_self.delay()
    name, task_id, is_task = r.get(timeout=T)
    assert (name, task_id, is_task) == ("celery_docs_tasks.bound_self", r.id, True)


def test_task_inheritance_base_class_on_failure(workers, ledger):
    r = t.handled_fail.delay(ledger, "missing")
    with pytest.raises(KeyError):
        r.get(timeout=T)
    entry = wait_until(lambda: [e for e in read(ledger) if e["event"] == "on_failure"], what="on_failure")[0]
    assert entry["exc_type"] == "KeyError" and entry["task_id"] == r.id
    assert entry["args"] == [ledger, "missing"] and entry["einfo"] is True


def test_explicit_name_and_send_task_by_that_name(workers):
    assert t.sum_of_two.name == "sum-of-two-numbers"
    assert app.tasks["sum-of-two-numbers"].name == "sum-of-two-numbers"
    assert app.send_task("sum-of-two-numbers", args=(2, 3)).get(timeout=T) == 5
    assert t.sum_of_two.delay(4, 5).get(timeout=T) == 9


def test_explicit_module_style_name(workers):
    assert t.add_with_a_module_name.name == "celery_docs_tasks.named_add"
    assert app.send_task("celery_docs_tasks.named_add", args=(1, 2)).get(timeout=T) == 3


def test_automatic_name_is_module_and_function_name():
    assert add.name == "celery_docs_tasks.add"
    assert mul.name == "celery_docs_tasks.mul"


def test_gen_task_name_changes_the_automatic_names():
    class MyCelery(Celery):
        def gen_task_name(self, name, module):
            if module.endswith(".tasks"):
                module = module[:-6]
            return super().gen_task_name(name, module)

    a = MyCelery("main")

    def taskA():
        return "A"
    taskA.__module__ = "moduleA.tasks"
    assert a.task(taskA).name == "moduleA.taskA"


def test_app_tasks_is_the_registry_of_task_names():
    assert app.tasks["celery_docs_tasks.add"].name == "celery_docs_tasks.add"
    assert app.tasks["celery_docs_tasks.add"](2, 3) == 5
    assert app.tasks["celery_docs_tasks.tsum"]([1, 2]) == 3


def test_inspect_registered_names_the_workers_tasks(workers):
    registered = app.control.inspect().registered()
    assert any("celery_docs_tasks.add" in names for names in registered.values()), registered


def test_request_holds_the_current_tasks_id_args_kwargs_and_more(workers):
    r = t.dump_context.apply_async((1, 2), {"z": 3})
    c = r.get(timeout=T)
    assert c["id"] == r.id
    assert c["args"] == [1, 2] and c["kwargs"] == {"z": 3}
    assert c["retries"] == 0
    assert c["is_eager"] is False and c["called_directly"] is False
    assert isinstance(c["hostname"], str) and c["hostname"]
    assert isinstance(c["delivery_info"], dict) and "routing_key" in c["delivery_info"]
    assert c["eta"] is None and c["expires"] is None
    assert c["group"] is None and c["parent_id"] is None


def test_task_always_eager_runs_tasks_here_and_request_is_eager():
    eager = Celery("eager_docs")
    eager.conf.task_always_eager = True

    @eager.task(bind=True)
    def where(self, x, y):
        return [os.getpid(), self.request.is_eager, x + y, isinstance(self, Task)]

    r = where.delay(2, 2)
    assert isinstance(r, EagerResult)
    assert r.get(timeout=T) == [os.getpid(), True, 4, True]
    assert r.successful() and r.state == "SUCCESS"
    assert where.apply_async((3, 4)).get(timeout=T)[2] == 7


def test_request_eta_and_expires_when_given(workers):
    c = t.dump_context.apply_async((1, 2), countdown=0.1, expires=60).get(timeout=T)
    assert c["eta"] is not None and c["expires"] is not None


def test_request_called_directly_when_the_task_is_called_here():
    assert t.dump_context(1, 2)["called_directly"] is True
    # The custom-states example skips update_state when called directly.
    assert t.upload_files(["a", "b"]) == 2


def test_request_group_is_the_groups_id(workers):
    res = group(t.group_member.s(i) for i in range(2)).apply_async()
    assert res.get(timeout=T) == [res.id, res.id]


def test_request_root_id_and_parent_id_in_a_chain(workers):
    res = chain(t.chain_context.s(), t.chain_context.s(), t.chain_context.s()).apply_async()
    last = res.get(timeout=T)
    middle, first = res.parent.get(timeout=T), res.parent.parent.get(timeout=T)
    root = res.parent.parent.id
    assert (first["id"], middle["id"], last["id"]) == (root, res.parent.id, res.id)
    assert first["parent_id"] is None
    assert middle["parent_id"] == root and last["parent_id"] == res.parent.id
    assert first["root_id"] == middle["root_id"] == last["root_id"] == root


def test_request_time_limit_and_soft_time_limit(workers):
    assert t.limits_context.delay().get(timeout=T) == [30, 20]


def test_get_task_logger_in_a_task(workers, tmp_path):
    lg = get_task_logger("celery_docs_tasks")
    assert isinstance(lg, logging.Logger)
    parents, p = [], lg.parent
    while p is not None:
        parents.append(p.name)
        p = p.parent
    assert "celery.task" in parents, f"a task logger inherits from 'celery.task', not {parents}"
    logfile = str(tmp_path / "task.log")
    assert t.logs_a_line.delay(logfile, 2, 3).get(timeout=T) == 5
    with open(logfile) as f:
        assert "Adding 2 + 3" in f.read()


def test_arguments_are_checked_when_the_task_is_called(workers):
    with pytest.raises(TypeError):
        add.delay(8)


def test_typing_false_leaves_the_argument_error_to_the_worker(workers):
    r = t.add_untyped.delay(8)
    with pytest.raises(TypeError):
        r.get(timeout=T)


def test_retry_reruns_with_the_same_task_id_on_the_same_queue(workers, ledger):
    r = t.retry_once_noting_id_and_queue.apply_async((ledger,), queue="retry-queue")
    assert r.get(timeout=T) == 1
    runs = read(ledger)
    assert [e["retries"] for e in runs] == [0, 1]
    assert {e["id"] for e in runs} == {r.id}
    assert {e["routing_key"] for e in runs} == {"retry-queue"}


def test_retry_raises_the_retry_exception(workers, ledger):
    assert t.retry_without_raise.delay(ledger).get(timeout=T) == "done"
    assert "retry() raised Retry" in events(ledger)


def test_code_after_retry_is_not_reached(workers, ledger):
    assert t.retry_without_raise.delay(ledger).get(timeout=T) == "done"
    assert [(e["event"], e.get("retries")) for e in read(ledger) if e["event"] != "retry() raised Retry"] == \
        [("run", 0), ("run", 1), ("after", 1)]


def test_a_retry_is_recorded_as_the_retry_state_with_its_exception(workers, ledger):
    r = t.retry_with_state.delay(ledger)
    wait_until(lambda: r.state == "RETRY", what="the RETRY state")
    # tasks.rst "RETRY: result contains the exception that caused the retry, and traceback ..."
    assert isinstance(r.result, KeyError) and "rate limited" in str(r.result)
    assert r.traceback
    assert r.get(timeout=T) == "through"


def test_after_max_retries_the_exc_given_to_retry_is_raised(workers, ledger):
    r = t.retry_exc_until_max.delay(ledger)
    with pytest.raises(KeyError) as e:
        r.get(timeout=T)
    assert type(e.value) is KeyError and "still rate limited" in str(e.value)
    assert r.state == "FAILURE"
    assert [x["retries"] for x in read(ledger)] == [0, 1, 2], "max_retries=2: the first run and 2 retries"


def test_retry_without_exc_raises_max_retries_exceeded_error(workers, ledger):
    r = t.retry_no_exc_until_max.delay(ledger)
    with pytest.raises(MaxRetriesExceededError):
        r.get(timeout=T)
    assert len(read(ledger)) == 2
    assert t.retry_no_exc_until_max.MaxRetriesExceededError is MaxRetriesExceededError


def test_max_retries_defaults_to_3(workers, ledger):
    assert add.max_retries == 3
    r = t.retry_with_default_max.delay(ledger)
    with pytest.raises(MaxRetriesExceededError):
        r.get(timeout=T)
    assert [x["retries"] for x in read(ledger)] == [0, 1, 2, 3]


def test_default_retry_delay_defaults_to_3_minutes():
    assert add.default_retry_delay == 180


def test_default_retry_delay_is_the_wait_before_a_retry(workers, ledger):
    assert t.retry_default_delay.delay(ledger).get(timeout=T) == "ok"
    (gap,) = gaps(times(ledger))
    assert gap >= 0.9, f"default_retry_delay=1: the retry ran {gap:.2f} s after the first run"


def test_retry_countdown_overrides_default_retry_delay(workers, ledger):
    # default_retry_delay is 30 minutes: only the countdown gets this done within the timeout.
    assert t.retry_countdown_overrides.delay(ledger).get(timeout=T) == "ok"
    (gap,) = gaps(times(ledger))
    assert gap >= 0.45


def test_max_retries_none_retries_until_it_succeeds(workers, ledger):
    assert t.retry_forever.delay(ledger, 5).get(timeout=T) == 5
    assert len(read(ledger)) == 6


def test_autoretry_for_retries_the_listed_exceptions(workers, ledger):
    assert t.autoretry_io.delay(ledger, 2).get(timeout=T) == 3


def test_autoretry_for_does_not_retry_other_exceptions(workers, ledger):
    r = t.autoretry_wrong_kind.delay(ledger)
    with pytest.raises(ValueError):
        r.get(timeout=T)
    assert len(read(ledger)) == 1


def test_retry_kwargs_are_given_to_the_automatic_retry(workers, ledger):
    r = t.autoretry_with_kwargs.delay(ledger)
    with pytest.raises(OSError) as e:
        r.get(timeout=T)
    assert str(e.value) == "always"
    assert len(read(ledger)) == 3, "retry_kwargs={'max_retries': 2}: 3 runs, not the default 4"


def test_task_retry_on_the_task_object_inside_except(workers, ledger):
    r = t.refresh_timeline.delay(ledger)
    with pytest.raises(OSError, match="fail whale"):
        r.get(timeout=T)
    assert len(read(ledger)) == 3


def test_retry_backoff_true_doubles_the_delay(workers, ledger):
    assert t.backoff_true.delay(ledger, 2).get(timeout=T) == 3
    first, second = gaps(times(ledger))
    assert first >= 0.9 and second >= 1.9, f"retry_backoff=True: 1 s then 2 s, got {first:.2f}, {second:.2f}"


def test_retry_backoff_number_is_the_delay_factor(workers, ledger):
    assert t.backoff_factor.delay(ledger, 1).get(timeout=T) == 2
    (gap,) = gaps(times(ledger))
    assert gap >= 1.9, f"retry_backoff=2: the first retry 2 s later, got {gap:.2f}"


def test_retry_backoff_max_caps_the_delay(workers, ledger):
    # retry_backoff=600 alone would wait 10 and 20 minutes.
    assert t.backoff_capped.delay(ledger, 2).get(timeout=T) == 3
    assert all(g >= 0.9 for g in gaps(times(ledger)))


def test_retry_jitter_makes_the_delay_random_up_to_the_backoff(workers, ledger):
    assert t.backoff_jittered.delay(ledger, 10).get(timeout=60) == 11
    ten = gaps(times(ledger))
    assert len(ten) == 10
    assert any(g < 0.9 for g in ten), f"with jitter some delays are below the 1 s backoff, got {ten}"


def test_retry_options_as_task_class_attributes(workers, ledger):
    assert t.class_retry_options.delay(ledger, 1).get(timeout=T) == 2
    (gap,) = gaps(times(ledger))
    assert gap >= 0.9, "retry_backoff=True, retry_jitter=False from the base class: 1 s"


def test_dont_autoretry_for_excludes_exceptions(workers, tmp_path):
    value, key = str(tmp_path / "value"), str(tmp_path / "key")
    r = t.autoretry_except.delay(value, "value")
    with pytest.raises(ValueError):
        r.get(timeout=T)
    assert len(read(value)) == 1
    r = t.autoretry_except.delay(key, "key")
    with pytest.raises(KeyError):
        r.get(timeout=T)
    assert len(read(key)) == 3


def test_hard_time_limit_fails_the_task_with_time_limit_exceeded(workers, ledger):
    r = t.hard_limited.delay(ledger)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=T)
    assert r.state == "FAILURE"
    assert len(read(ledger)) == 1, "a task over its time limit is not run again"


def test_hard_time_limit_fails_the_task_at_once_without_a_retry(workers, ledger):
    """Differs (docs/celery.md): on_failure is not called, its worker process was stopped."""
    r = t.handled_hard_limit.delay(ledger)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=T)
    assert r.state == "FAILURE" and r.retries == 0
    assert [t_["runs"] for t_ in corral.tasks(state="failure", limit=10000) if t_["id"] == r.id] == [1]


def test_soft_time_limit_exceeded_can_be_caught_in_the_task(workers):
    assert t.soft_limited_cleanup.delay().get(timeout=T) == "cleaned up"


def test_soft_time_limit_uncaught_fails_and_runs_on_failure(workers, ledger):
    r = t.handled_soft_limit.delay(ledger)
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=T)
    entry = wait_until(lambda: [e for e in read(ledger) if e["event"] == "on_failure"], what="on_failure")[0]
    assert entry["exc_type"] == "SoftTimeLimitExceeded"


def test_task_time_limit_setting_applies_when_the_task_sets_none(workers, ledger):
    r = t.limits_hard.delay(ledger)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=T)
    assert events(ledger) == ["start", "soft"]


def test_task_soft_time_limit_setting_applies_when_the_task_sets_none(workers):
    assert t.limits_soft_caught.delay().get(timeout=T) == "soft limit from task_soft_time_limit"


def test_rate_limit_option_is_a_clear_error_at_definition(workers, ledger):
    """Differs (docs/celery.md): the refusal names what to do instead."""
    with pytest.raises(corral.exceptions.InvalidArgumentError, match=r"corral.queue\(name, rate_limit='120/m'\)"):
        t.rate_limited.delay(ledger)


def test_ignore_result_task_option_keeps_no_value(workers, ledger):
    """Differs (docs/celery.md): the value is not kept; the state reads SUCCESS (Celery: PENDING)."""
    r = t.not_stored.delay(ledger)
    wait_until(lambda: read(ledger), what="the task ran")
    wait_until(lambda: AsyncResult(r.id).state == "SUCCESS", what="the task done")
    assert AsyncResult(r.id).result is None and AsyncResult(r.id).get(timeout=T) is None


def test_state_sets():
    assert states.READY_STATES == frozenset({states.SUCCESS, states.FAILURE, states.REVOKED})
    assert states.PROPAGATE_STATES == frozenset({states.FAILURE, states.REVOKED})
    assert states.EXCEPTION_STATES == frozenset({states.FAILURE, states.RETRY, states.REVOKED})
    assert (states.PENDING, states.STARTED, states.RETRY) == ("PENDING", "STARTED", "RETRY")


def test_success_result_is_the_return_value(workers):
    r = add.delay(4, 4)
    assert r.get(timeout=T) == 8
    assert r.result == 8 and r.info == 8 and r.state == "SUCCESS"


def test_failure_result_is_the_exception(workers):
    r = fail.delay("it broke")
    r.get(timeout=T, propagate=False)
    for e in (r.result, r.info):
        assert type(e) is ValueError and e.args == ("it broke",)


def test_revoke_before_start_gives_revoked_and_task_revoked_error(workers):
    r = add.apply_async((1, 2), countdown=60)
    r.revoke()
    wait_until(lambda: r.state == "REVOKED", what="REVOKED")
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)


def test_app_control_revoke(workers):
    r = add.apply_async((1, 2), countdown=60)
    app.control.revoke(r.id)
    wait_until(lambda: r.state == "REVOKED", what="REVOKED")
    with pytest.raises(TaskRevokedError):
        r.get(timeout=T)


def test_update_state_custom_progress_state_and_meta(workers, tmp_path, gates):
    gate_dir = tmp_path / "gates"
    gate_dir.mkdir()
    for i in range(3):
        gates(path=str(gate_dir / str(i)))   # opened at teardown whatever happens
    r = t.upload_files.delay(["a", "b", "c"], str(gate_dir))
    for i in range(3):
        wait_until(lambda: r.state == "PROGRESS" and r.info == {"current": i, "total": 3},
                   what=f"PROGRESS current={i}")
        open_gate(str(gate_dir / str(i)))
    assert r.get(timeout=T) == 3
    assert r.state == "SUCCESS"


def test_pickleable_custom_exception_keeps_its_type_and_arguments(workers):
    r = t.raises_http_error.delay(404)
    with pytest.raises(t.HttpError) as e:
        r.get(timeout=T)
    assert type(e.value) is t.HttpError and e.value.status_code == 404


def test_throws_errors_still_fail_the_task(workers):
    r = t.expected_error.delay("k")
    with pytest.raises(KeyError):
        r.get(timeout=T)
    assert r.state == "FAILURE"


def test_ignore_ends_the_task_with_no_value(workers, ledger):
    """Differs (docs/celery.md): the head's task always ends; Ignore ends it in SUCCESS, no value."""
    r = t.ignored.delay(ledger)
    wait_until(lambda: read(ledger), what="the task ran")
    assert r.get(timeout=T) is None and r.state == "SUCCESS"


def test_ignore_after_storing_the_result_by_hand(workers, ledger):
    r = t.get_tweets.delay(ledger, "bob")
    timeline = ["bob: tweet 0", "bob: tweet 1", "bob: tweet 2"]
    assert r.get(timeout=T) == timeline
    assert r.state == "SUCCESS" and r.result == timeline


def test_reject_without_requeue_fails_with_the_reason(workers):
    r = t.render_scene.delay("scene.blend")
    wait_until(r.ready, what="the task done")
    assert r.failed() is True and r.state == "FAILURE"
    assert "scene.blend does not fit" in str(r.result)


def test_reject_with_requeue_runs_the_task_again(workers, ledger):
    assert t.requeues.delay(ledger).get(timeout=T) == "received two times"
    assert events(ledger) == ["received", "received"]


def test_task_instance_is_shared_by_the_requests_of_a_process(workers):
    results = [t.process_rows.delay().get(timeout=T) for _ in range(10)]
    tokens = {}
    for pid, token in results:
        tokens.setdefault(pid, set()).add(token)
    assert all(len(s) == 1 for s in tokens.values()), f"one cached db per process: {tokens}"
    assert len(tokens) < len(results), "a process served more than one request"


def test_task_cls_is_the_class_of_every_task_of_the_app(workers):
    assert isinstance(t.cls_rows, t.DatabaseTask)
    pid, token = t.cls_rows.delay().get(timeout=T)
    assert isinstance(pid, int) and isinstance(token, str)


def test_handlers_before_start_on_success_after_return(workers, ledger):
    r = t.handled_add.delay(ledger, 2, 3)
    assert r.get(timeout=T) == 5
    wait_until(lambda: "after_return" in events(ledger), what="after_return")
    assert events(ledger) == ["before_start", "on_success", "after_return"]
    before, success, after = read(ledger)
    assert before["task_id"] == success["task_id"] == after["task_id"] == r.id
    assert before["args"] == success["args"] == [ledger, 2, 3]
    assert success["retval"] == 5
    assert (after["status"], after["retval"]) == ("SUCCESS", 5)


def test_handlers_on_failure_then_after_return(workers, ledger):
    r = t.handled_fail.delay(ledger, "gone")
    with pytest.raises(KeyError):
        r.get(timeout=T)
    wait_until(lambda: "after_return" in events(ledger), what="after_return")
    assert events(ledger) == ["before_start", "on_failure", "after_return"]
    after = read(ledger)[-1]
    assert (after["status"], after["retval"]) == ("FAILURE", "KeyError")


def test_handlers_on_retry_and_no_after_return_for_the_retry(workers, ledger):
    r = t.handled_retry.delay(ledger)
    assert r.get(timeout=T) == "ok"
    wait_until(lambda: "after_return" in events(ledger), what="after_return")
    assert events(ledger) == ["before_start", "on_retry", "before_start", "on_success", "after_return"]
    on_retry = read(ledger)[1]
    assert on_retry["exc_type"] == "KeyError" and "once more" in on_retry["exc"] and on_retry["task_id"] == r.id


def test_a_task_sent_by_name_waits_for_a_worker_that_has_it(workers, tmp_path):
    """tasks.rst "How it works": only the name is sent; a worker looks it up when it gets the message."""
    (tmp_path / "late_docs_tasks.py").write_text(
        "from corral.compat.celery import Celery\n\napp = Celery('late_docs_tasks')\n\n\n"
        "@app.task\ndef late(x):\n    return x * 2\n")
    r = app.send_task("late_docs_tasks.late", args=(21,))
    assert r.state == "PENDING"
    agent = workers.add_agent(num_cpus=1, extra=("--tasks", "late_docs_tasks"),
                              python_path=f"{tmp_path}:{TESTS_DIR}")
    try:
        assert r.get(timeout=60) == 42
    finally:
        agent.stop()
        workers.agents.remove(agent)


# ====================================================================================
# userguide/canvas.rst
# ====================================================================================

def test_signature_by_task_name():
    s = signature("celery_docs_tasks.add", args=(2, 2), countdown=10)
    assert s.args == (2, 2) and s.options == {"countdown": 10}
    assert repr(s) == "celery_docs_tasks.add(2, 2)"


def test_signature_by_task_name_runs(workers):
    assert signature("celery_docs_tasks.add", args=(2, 2)).delay().get(timeout=T) == 4
    s = signature("celery_docs_tasks.add_debug", args=(1, 2), kwargs={"debug": True}, countdown=0.1)
    assert s.kwargs == {"debug": True}
    assert s.apply_async().get(timeout=T) == [3, True]


def test_task_signature_method_and_its_fields():
    s = add.signature((2, 2), {"debug": True}, countdown=10)
    assert s.args == (2, 2)
    assert s.kwargs == {"debug": True}
    assert s.options == {"countdown": 10}


def test_signature_repr():
    assert repr(add.s(2, 2)) == "celery_docs_tasks.add(2, 2)"
    assert repr(add.s(2, 2, debug=True)) == "celery_docs_tasks.add(2, 2, debug=True)"


def test_calling_a_signature_runs_the_task_here():
    assert add.s(2, 2)() == 4
    assert t.whereami.s()() == os.getpid()


def test_signature_delay_and_apply_async(workers):
    assert add.signature((2, 2)).delay().get(timeout=T) == 4
    assert add.s(2, 2).delay().get(timeout=T) == 4
    assert add.s(2, 2).apply_async().get(timeout=T) == 4


def test_set_adds_options_to_a_signature(workers, ledger):
    s = add.s(2, 2).set(countdown=1)
    assert s.options["countdown"] == 1
    sent = time.time()
    assert t.stamp.s(ledger, 1).set(countdown=1).delay().get(timeout=T) == 1
    assert times(ledger)[0] - sent >= 0.9


def test_apply_async_options_override_the_signatures(workers, ledger):
    s = t.stamp.signature((ledger, 1), countdown=10)
    sent = time.time()
    assert s.apply_async(countdown=1).get(timeout=8) == 1    # countdown is now 1, not 10
    assert times(ledger)[0] - sent >= 0.9


def test_clone_makes_a_derivative_signature():
    s = add.s(2)
    c = s.clone(args=(4,), kwargs={"debug": True})
    assert c.args == (4, 2) and c.kwargs == {"debug": True}
    assert s.args == (2,) and s.kwargs == {}


def test_immutable_signature_ignores_partial_arguments(workers):
    assert add.si(2, 2).delay(100).get(timeout=T) == 4
    s = add.signature((2, 2), immutable=True)
    assert s.immutable is True
    assert s.apply_async((100,)).get(timeout=T) == 4


def test_immutable_callback_gets_no_result(workers, tmp_path):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    add.apply_async((2, 2), link=t.reset_buffers.signature(kwargs={"ledger": first}, immutable=True)).get(timeout=T)
    add.apply_async((2, 2), link=t.reset_buffers.si(ledger=second)).get(timeout=T)
    wait_until(lambda: read(first) and read(second), what="both callbacks")
    assert read(first)[0]["args"] == [] and read(second)[0]["args"] == []


def test_invert_operator_applies_and_gets(workers):
    assert invert(add.s(2, 2)) == 4


def test_callback_only_applied_when_the_task_succeeds(workers, tmp_path):
    callback, errback = str(tmp_path / "callback"), str(tmp_path / "errback")
    r = fail.apply_async(("x",), link=t.record_value.s(callback), link_error=t.error_handler.s(ledger=errback))
    with pytest.raises(ValueError):
        r.get(timeout=T)
    wait_until(lambda: read(errback), what="the errback")
    assert read(callback) == []
    assert not r.children


def test_link_with_partial_arguments(workers):
    r = add.apply_async((2, 2), link=add.s(8))
    assert r.get(timeout=T) == 4
    assert r.children[0].get(timeout=T) == 12     # 4 + 8


def test_result_children_of_a_linked_task(workers):
    res = add.apply_async((2, 2), link=mul.s(16))
    assert res.get(timeout=T) == 4
    assert len(res.children) == 1 and isinstance(res.children[0], AsyncResult)
    assert res.children[0].get(timeout=T) == 64


def test_result_collect_iterates_the_graph(workers):
    res = add.apply_async((2, 2), link=mul.s(16))
    assert res.get(timeout=T) == 4
    res.children[0].get(timeout=T)
    assert [(r.id, v) for r, v in res.collect()] == [(res.id, 4), (res.children[0].id, 64)]


def test_signature_link_and_on_error(workers, tmp_path):
    values, errors = str(tmp_path / "values"), str(tmp_path / "errors")
    s = add.s(2, 2)
    s.link(t.add_noted.s(4, values))
    s.link(t.record_value.s(values))
    r = s.delay()
    assert r.get(timeout=T) == 4
    wait_until(lambda: len(read(values)) == 2, what="both linked tasks")
    assert sorted(e["value"] for e in read(values)) == [4, 8]    # record_value(4), add_noted(4, 4)
    r = fail.s("oops").on_error(t.error_handler.s(ledger=errors)).delay()
    with pytest.raises(ValueError):
        r.get(timeout=T)
    entry = wait_until(lambda: read(errors), what="the errback")[0]
    assert entry["request_id"] == r.id and entry["exc"] == "oops"


def test_simple_chain_and_pipes(workers):
    assert chain(add.s(2, 2), add.s(4), add.s(8))().get(timeout=T) == 16
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get(timeout=T) == 16


def test_chain_of_immutable_signatures_and_parents(workers):
    res = (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()
    assert res.get(timeout=T) == 16
    assert res.parent.get(timeout=T) == 8
    assert res.parent.parent.get(timeout=T) == 4


def test_chain_parent_attributes(workers):
    res = chain(add.s(4, 4), mul.s(8), mul.s(10))()
    assert res.get(timeout=T) == 640
    assert res.parent.get(timeout=T) == 64
    assert res.parent.parent.get(timeout=T) == 8
    assert isinstance(res.parent.parent, AsyncResult)


def test_chain_with_the_pipe_operator_apply_async(workers):
    assert (add.s(2, 2) | mul.s(8) | mul.s(10)).apply_async().get(timeout=T) == 320


def test_partial_chains_combine(workers):
    c1 = (add.s(4) | mul.s(8))
    assert c1(16).get(timeout=T) == 160                      # (16 + 4) * 8
    c2 = (add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8)))
    assert c2().get(timeout=T) == 352                        # ((4 + 16) * 2 + 4) * 8


def test_group_chained_to_a_task_becomes_a_chord(workers):
    c3 = (group(add.s(i, i) for i in range(10)) | tsum.s())
    assert c3().get(timeout=T) == 90


def test_chain_passes_its_kwargs_to_the_first_task_and_the_result_to_the_group(workers):
    new_user_workflow = (t.create_user.s() | group(t.import_contacts.s(), t.send_welcome_email.s()))
    res = new_user_workflow.delay(username="artv", first="Art", last="Vandelay", email="art@vandelay.com")
    assert res.get(timeout=T) == ["imported contacts of artv", "welcome artv"]


def test_chain_into_a_group_of_immutable_signatures(workers):
    res = (add.s(4, 4) | group(add.si(i, i) for i in range(10)))()
    assert res.get(timeout=T) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert res.parent.get(timeout=T) == 8


def test_simple_group(workers):
    res = group(add.s(i, i) for i in range(10))()
    assert isinstance(res, GroupResult)
    assert res.get(timeout=T) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert group(add.s(2, 2), add.s(4, 4))().get(timeout=T) == [4, 8]


def test_group_link_error_is_called_for_each_failed_task(workers, ledger):
    g = group(fail.s("a"), fail.s("b"))
    g.link_error(t.error_handler.s(ledger=ledger))
    res = g()
    wait_until(lambda: len(read(ledger)) == 2, what="two errback calls")
    assert sorted(e["exc"] for e in read(ledger)) == ["a", "b"]
    assert {e["request_id"] for e in read(ledger)} == {r.id for r in res.results}


def test_group_result_ready_successful_and_get(workers):
    job = group([add.s(2, 2), add.s(4, 4), add.s(8, 8), add.s(16, 16), add.s(32, 32)])
    result = job.apply_async()
    assert result.get(timeout=T) == [4, 8, 16, 32, 64]
    assert result.ready() is True
    assert result.successful() is True


def test_group_result_waiting_completed_count_and_join(workers, ledger, gates):
    holds = [gates(str(i)) for i in range(3)]
    result = group(t.gated.s(ledger, g, i) for i, g in enumerate(holds)).apply_async()
    wait_until(lambda: len(read(ledger)) == 3, what="all three running")
    assert result.waiting() is True and result.ready() is False
    assert result.completed_count() == 0
    open_gate(holds[1])
    wait_until(lambda: result.completed_count() == 1, what="one completed")
    assert result.waiting() is True
    open_gate(holds[0])
    open_gate(holds[2])
    assert result.join(timeout=T) == [0, 1, 2]
    assert result.waiting() is False and result.ready() is True and result.completed_count() == 3


def test_group_result_failed_and_completed_count_counts_successes(workers):
    result = group(add.s(1, 1), fail.s("x"), add.s(2, 2)).apply_async()
    wait_until(result.ready, what="every member done")
    assert result.failed() is True
    assert result.successful() is False
    assert result.completed_count() == 2


def test_group_result_revoke(workers):
    result = group(add.s(i, i) for i in range(3)).apply_async(countdown=60)
    result.revoke()
    wait_until(lambda: all(r.state == "REVOKED" for r in result.results), what="every member REVOKED")


def test_group_result_save_and_restore(workers):
    result = group(add.s(i, i) for i in range(3)).apply_async()
    result.save()
    restored = GroupResult.restore(result.id)
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.get(timeout=T) == [0, 2, 4]


def test_a_group_of_one_is_unrolled_in_a_chain(workers):
    assert chain(add.s(2, 2), group(add.s(1)), add.s(1))().get(timeout=T) == 6
    assert chain(group(add.s(1, 1)), add.s(2))().get(timeout=T) == 4


def test_simple_chord(workers):
    res = chord((add.s(i, i) for i in range(10)), tsum.s())()
    assert res.get(timeout=T) == 90
    # the id chord returns is the callback's
    assert AsyncResult(res.id).get(timeout=T) == 90
    callback = tsum.s()
    header = [add.s(i, i) for i in range(10)]
    assert chord(header)(callback).get(timeout=T) == 90


def test_chord_with_an_immutable_body(workers):
    res = chord((t.import_contact.s(c) for c in ["ann", "bob"]), t.notify_complete.si(7)).apply_async()
    assert res.get(timeout=T) == "import 7 complete"


def test_chord_error_when_a_header_task_fails(workers, ledger):
    failing_id = uuid.uuid4().hex
    c = chord([t.add_noted.s(4, 4, ledger), t.raising_task.s().set(task_id=failing_id),
               t.add_noted.s(8, 8, ledger)], tsum.s())
    result = c.apply_async()
    with pytest.raises(ChordError) as e:
        AsyncResult(result.id).get(timeout=T)
    # the description has the failed task's id and the original exception's repr
    assert failing_id in str(e.value)
    assert repr(ValueError("something something")) in str(e.value)
    assert result.state == "FAILURE" and result.traceback
    # the rest of the header still runs
    wait_until(lambda: sorted(x["value"] for x in read(ledger)) == [8, 16], what="the other header tasks")


def test_chord_header_errback_gets_request_exception_traceback(workers, ledger):
    """Differs (docs/celery.md): an errback on the callback is not called (it never reaches a
    worker); one on the header's tasks is, in the worker of the task that failed."""
    header = group(add.s(1, 1), t.raising_task.s()).on_error(t.error_handler.s(ledger=ledger))
    c = chord(header, tsum.s()).delay()
    entry = wait_until(lambda: read(ledger), what="the errback")[0]
    assert entry["request_id"] == c.parent.results[1].id
    with pytest.raises(ChordError):
        AsyncResult(c.id).get(timeout=T)


def test_chord_header_errback_with_one_argument_gets_the_failed_id(workers, ledger):
    header = group(add.s(1, 1), t.raising_task.s()).on_error(t.failed_id.s(ledger=ledger))
    c = chord(header, tsum.s()).delay()
    entry = wait_until(lambda: read(ledger), what="the errback")[0]
    assert entry["task_id"] == c.parent.results[1].id


def test_map(workers):
    assert invert(tsum.map([list(range(10)), list(range(100))])) == [45, 4950]
    assert tsum.map([[1, 2], [3]]).apply_async().get(timeout=T) == [3, 3]


def test_starmap(workers, ledger):
    assert invert(add.starmap(zip(range(10), range(10)))) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    sent = time.time()
    assert t.stamp.starmap([(ledger, 1), (ledger, 2)]).apply_async(countdown=1).get(timeout=T) == [1, 2]
    assert min(times(ledger)) - sent >= 0.9


def _chunked(n=100, size=10):
    pairs = [2 * i for i in range(n)]
    return [pairs[i:i + size] for i in range(0, n, size)]


def test_chunks_called_sends_the_chunks(workers):
    res = add.chunks(zip(range(100), range(100)), 10)()
    assert res.get(timeout=T) == _chunked()


def test_chunks_apply_async(workers):
    res = add.chunks(zip(range(100), range(100)), 10).apply_async()
    assert res.get(timeout=T) == _chunked()


def test_chunks_as_a_group_with_skewed_countdowns(workers, ledger):
    g = t.stamp_item.chunks([(i, ledger) for i in range(4)], 2).group()
    sent = time.time()
    res = g.skew(start=1, stop=2)()
    assert res.get(timeout=T) == [[0, 1], [2, 3]]
    ran = {e["item"]: e["t"] - sent for e in read(ledger)}
    assert ran[0] >= 0.9 and ran[1] >= 0.9, "the first chunk: countdown 1"
    assert ran[2] >= 1.9 and ran[3] >= 1.9, "the second chunk: countdown 2"


# ====================================================================================
# userguide/periodic-tasks.rst
# ====================================================================================

def test_beat_schedule_entry_every_30_seconds_with_args(workers):
    s = apply_beat(app)["add-every-30-seconds"]
    assert s["every_s"] == 30
    assert AsyncResult(corral.run_schedule_now("add-every-30-seconds")).get(timeout=T) == 32


def test_beat_schedule_entry_with_a_timedelta(workers):
    s = apply_beat(app)["add-every-45s-timedelta"]
    assert s["every_s"] == 45
    assert AsyncResult(corral.run_schedule_now("add-every-45s-timedelta")).get(timeout=T) == 3


def test_beat_schedule_entry_with_kwargs(workers):
    apply_beat(app)
    assert AsyncResult(corral.run_schedule_now("add-debug-with-kwargs")).get(timeout=T) == [3, True]


def test_beat_schedule_entry_options_are_execution_options(workers):
    apply_beat(app)
    c = AsyncResult(corral.run_schedule_now("context-with-options")).get(timeout=T)
    assert c["args"] == [1, 2]
    assert c["delivery_info"]["routing_key"] == "beat-queue"


def test_beat_schedule_crontab_entry(workers):
    s = apply_beat(app)["add-every-monday-morning"]
    assert s["cron"] == "30 7 * * 1"
    when = next_slot(s, "Europe/London")
    assert (when.weekday(), when.hour, when.minute) == (0, 7, 30), when
    assert AsyncResult(corral.run_schedule_now("add-every-monday-morning")).get(timeout=T) == 32


def test_schedules_use_utc_by_default_and_the_timezone_setting(workers):
    assert apply_beat(app)["add-every-monday-morning"]["tz"] == "Europe/London"
    monday = apply_beat(t.beat_app)["celery_docs_tasks.beat_test('Happy Mondays!')"]
    assert monday["tz"] == "UTC"
    when = next_slot(monday, "UTC")
    assert (when.weekday(), when.hour, when.minute) == (0, 7, 30), when


def test_add_periodic_task_in_on_after_configure(workers):
    entries = t.beat_app.conf.beat_schedule
    assert set(entries) == {"add every 10", "add every 30", "celery_docs_tasks.beat_test('world')",
                            "celery_docs_tasks.beat_test('Happy Mondays!')"}
    assert entries["add every 10"]["task"] == "celery_docs_tasks.beat_test"
    assert tuple(entries["add every 10"]["args"]) == ("hello",) and entries["add every 10"]["schedule"] == 10.0
    assert entries["celery_docs_tasks.beat_test('world')"]["options"] == {"expires": 10}
    made = apply_beat(t.beat_app)
    assert made["add every 10"]["every_s"] == 10 and made["add every 30"]["every_s"] == 30
    assert AsyncResult(corral.run_schedule_now("add every 10")).get(timeout=T) == "hello"


def test_add_periodic_task_with_the_same_signature_and_no_name_replaces_the_entry():
    a = Celery("dup_docs")

    @a.task
    def ping(arg):
        return arg
    a.add_periodic_task(10.0, ping.s("hello"))
    a.add_periodic_task(30.0, ping.s("hello"))
    assert len(a.conf.beat_schedule) == 1
    (entry,) = a.conf.beat_schedule.values()
    assert entry["schedule"] == 30.0


ALL_MINUTES, ALL_HOURS = set(range(60)), set(range(24))
ALL_DOW, ALL_DOM, ALL_MOY = set(range(7)), set(range(1, 32)), set(range(1, 13))


CRONTAB_TABLE = [
    # periodic-tasks.rst "Crontab schedules": the table of examples, each with what it means.
    (dict(), ALL_MINUTES, ALL_HOURS, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(minute=0, hour=0), {0}, {0}, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(minute=0, hour="*/3"), {0}, {0, 3, 6, 9, 12, 15, 18, 21}, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(minute=0, hour="0,3,6,9,12,15,18,21"), {0}, {0, 3, 6, 9, 12, 15, 18, 21}, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(minute="*/15"), {0, 15, 30, 45}, ALL_HOURS, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(day_of_week="sunday"), ALL_MINUTES, ALL_HOURS, {0}, ALL_DOM, ALL_MOY),
    (dict(minute="*", hour="*", day_of_week="sun"), ALL_MINUTES, ALL_HOURS, {0}, ALL_DOM, ALL_MOY),
    (dict(minute="*/10", hour="3,17,22", day_of_week="thu,fri"), {0, 10, 20, 30, 40, 50}, {3, 17, 22}, {4, 5},
     ALL_DOM, ALL_MOY),
    (dict(minute=0, hour="*/2,*/3"), {0}, ALL_HOURS - {1, 5, 7, 11, 13, 17, 19, 23}, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(minute=0, hour="*/5"), {0}, {0, 5, 10, 15, 20}, ALL_DOW, ALL_DOM, ALL_MOY),
    (dict(minute=0, hour="*/3,8-17"), {0}, {0, 3, 6, 9, 12, 15, 18, 21} | set(range(8, 18)), ALL_DOW, ALL_DOM,
     ALL_MOY),
    (dict(minute=0, hour=0, day_of_month="2"), {0}, {0}, ALL_DOW, {2}, ALL_MOY),
    (dict(minute=0, hour=0, day_of_month="2-30/2"), {0}, {0}, ALL_DOW, set(range(2, 31, 2)), ALL_MOY),
    (dict(minute=0, hour=0, day_of_month="1-7,15-21"), {0}, {0}, ALL_DOW, set(range(1, 8)) | set(range(15, 22)),
     ALL_MOY),
    (dict(minute=0, hour=0, day_of_month="11", month_of_year="5"), {0}, {0}, ALL_DOW, {11}, {5}),
    (dict(minute=0, hour=0, month_of_year="*/3"), {0}, {0}, ALL_DOW, ALL_DOM, {1, 4, 7, 10}),
]


@pytest.mark.parametrize("kwargs, minute, hour, day_of_week, day_of_month, month_of_year", CRONTAB_TABLE,
                         ids=[",".join(f"{k}={v}" for k, v in row[0].items()) or "every-minute"
                              for row in CRONTAB_TABLE])
def test_crontab_expressions_mean_what_the_table_says(kwargs, minute, hour, day_of_week, day_of_month,
                                                      month_of_year):
    c = crontab(**kwargs)
    assert (c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year) == \
        (minute, hour, day_of_week, day_of_month, month_of_year)


def test_crontab_positional_minute_and_hour():
    c = crontab(0, 0, day_of_month="2")     # the table's crontab(0, 0, day_of_month='2')
    assert (c.minute, c.hour, c.day_of_month) == ({0}, {0}, {2})


def test_crontab_entries_fire_in_their_slots(workers):
    made = apply_beat(app)
    quarter = next_slot(made["every-15-minutes"], "Europe/London")
    assert quarter.minute % 15 == 0 and quarter.second == 0
    three = next_slot(made["every-three-hours"], "Europe/London")
    assert three.minute == 0 and three.hour % 3 == 0
    sunday = next_slot(made["sundays"], "Europe/London")
    assert sunday.weekday() == 6
