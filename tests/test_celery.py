"""The Celery facade: the user's tasks.py runs with only its imports changed, plus retries and canvas."""
import os
import subprocess
import sys

import pytest

import corral
from corral.compat.celery import AsyncResult, Celery, chain, chord, group
from corral.compat.celery.exceptions import ChordError, TaskRevokedError

import celery_more
import tasks
from conftest import TESTS_DIR, wait_until


@pytest.fixture
def celery_cluster(cluster):
    cluster.add_agent(num_cpus=2, extra=("--tasks", "tasks,celery_more"))
    cluster.connect()
    cluster.wait_nodes(1)
    return cluster


def test_the_users_tasks_py_runs_with_its_imports_changed(celery_cluster):
    r = tasks.process_data.delay("/data/x.csv")
    assert r.get(timeout=30) == {"processed": True}
    assert AsyncResult(r.id).state == "SUCCESS" and AsyncResult(r.id).ready()
    r = tasks.train_model.apply_async(("/data/latest.csv",), countdown=0.2, expires=3600, queue="ml", priority=5)
    assert r.get(timeout=30) == {"status": "complete", "accuracy": 0.95}
    # beat_schedule becomes a Corral schedule in the head (one scheduler, each slot once).
    made = tasks.app.apply_beat_schedule()
    assert [(s["name"], s["cron"], s["function"]) for s in made] == \
        [("daily-retraining", "0 2 * * *", "tasks:train_model")]
    task_id = corral.run_schedule_now("daily-retraining")
    assert AsyncResult(task_id).get(timeout=30)["status"] == "complete"


def test_retries_as_in_celery(celery_cluster, tmp_path):
    assert celery_more.retries_twice.delay().get(timeout=30) == 2
    assert celery_more.flaky_io.delay(str(tmp_path / "io"), 2).get(timeout=30) == 3
    r = celery_more.wrong_kind.delay(str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match="not retried"):
        r.get(timeout=30)
    assert r.state == "FAILURE"
    with open(tmp_path / "wrong") as f:
        assert f.read() == "x", "an exception outside autoretry_for is not retried"
    assert r.get(timeout=5, propagate=False) is not None


def test_canvas(celery_cluster):
    add, total = celery_more.add, celery_more.total
    assert chain(add.s(1, 2), add.s(3), add.s(4)).apply_async().get(timeout=60) == 10
    assert (add.s(1, 1) | add.si(5, 5)).apply_async().get(timeout=60) == 10
    assert group(add.s(i, i) for i in range(5)).apply_async().get(timeout=60) == [0, 2, 4, 6, 8]
    # The callback sees every result of the header, in order.
    assert chord([add.s(i, 1) for i in range(10)], total.s()).apply_async().get(timeout=60) == sum(range(1, 11))
    # A group inside a chain is a chord; `|` builds the same; options reach every step.
    assert chain(group(add.s(i, i) for i in range(3)), total.s()).apply_async().get(timeout=60) == 6
    r = (group(add.s(1, 1), add.s(2, 2)) | total.s() | add.s(100)).apply_async(queue="canvas", priority=3)
    assert r.get(timeout=60) == 106
    assert {t["queue"] for t in corral.tasks(queue="canvas")} == {"canvas"} and len(corral.tasks(queue="canvas")) == 4
    # An empty header, as in Celery: the callback gets [] (a list built from no input is common).
    assert chord([], total.s()).apply_async().get(timeout=60) == 0
    assert chain(add.s(1, 1), group([]), total.s()).apply_async().get(timeout=60) == 0
    assert group([]).apply_async().get(timeout=10) == []


def test_a_failed_step_fails_the_rest_of_the_canvas(celery_cluster):
    add, fail, total = celery_more.add, celery_more.fail, celery_more.total
    r = chain(add.s(1, 2), fail.si("step two broke"), add.s(4)).apply_async()
    with pytest.raises(ValueError, match="step two broke"):  # Celery 5: the failed step's exception
        r.get(timeout=60)
    assert "its parent task" in r.traceback and r.parent.parent.get(timeout=5) == 3
    r = chord([add.s(1, 1), fail.si("member broke"), add.s(2, 2)], total.s()).apply_async()
    with pytest.raises(ValueError, match="member broke"):  # as Celery: the failed member's, through .parent
        r.get(timeout=60)
    with pytest.raises(ChordError, match=r"Dependency \S+ raised ValueError\('member broke'\)"):
        AsyncResult(r.id).get(timeout=5)  # the callback's own error
    assert r.state == "FAILURE"


def test_canvas_goes_on_after_its_submitter_exits(celery_cluster, tmp_path):
    """A chain and a chord submitted by a process that exits at once: the head runs every step."""
    ledger = tmp_path / "ledger"
    code = f"""
import celery_more
from corral.compat.celery import chain, chord
add, note, slow_add, total = celery_more.add, celery_more.note, celery_more.slow_add, celery_more.total
c = chain(slow_add.s(1, 2, 0.5), note.s({str(ledger)!r}), add.s(10)).apply_async()
d = chord([slow_add.s(i, 0, 0.3) for i in range(4)], total.s()).apply_async()
print(c.id, d.id)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(celery_cluster.env(), PYTHONPATH=TESTS_DIR, CORRAL_ADDRESS=celery_cluster.address))
    assert out.returncode == 0, out.stderr
    chain_id, chord_id = out.stdout.split()
    assert AsyncResult(chain_id).get(timeout=60) == 13
    assert AsyncResult(chord_id).get(timeout=60) == 6
    assert ledger.read_text() == "3\n", "the middle step ran once, with the first step's result"


def test_retry_countdown_is_honoured(celery_cluster, tmp_path):
    ledger = tmp_path / "attempts"
    assert celery_more.retry_later.delay(str(ledger), 1.5).get(timeout=60) == 1
    first, second = (float(x) for x in ledger.read_text().split())
    print(f"\n[retry countdown] asked 1.5 s, the retry ran {second - first:.2f} s after the first attempt")
    assert second - first >= 1.4  # the task's own backoff (0.01 s) would have retried at once


def test_revoke(celery_cluster):
    r = celery_more.add.apply_async((1, 2), countdown=3600)
    r.revoke()
    assert r.state == "REVOKED"


def test_task_options_map_or_say_what_to_do_instead(monkeypatch):
    from corral.compat.celery import Celery
    from corral.compat.celery import result
    monkeypatch.setattr(result, "_ensure_connected", lambda: None)
    app = Celery("opts")

    @app.task(acks_late=True, time_limit=30, serializer="json")
    def fine(x):
        return x

    spec = fine._canvas_spec((1,), {}, {})
    assert (spec["time_limit_s"], spec["args_format"], spec["max_retries"]) == (30, "json", -1)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match=r"corral.queue\(name, rate_limit='10/m'\)"):
        app.task(rate_limit="10/m")(fine.run)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="must be a Task subclass"):
        app.task(base=object)(fine.run)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match=r"\['colour'\] are not Task options"):
        app.task(colour="blue")(fine.run)


def test_a_task_is_reachable_by_the_name_it_was_given(celery_cluster):
    """@app.task(name=...): the name Celery code sends it by, also a name without a module."""
    assert celery_more.sum_of_two.name == "sum-of-two-numbers"
    assert celery_more.app.tasks["sum-of-two-numbers"] is celery_more.sum_of_two
    assert celery_more.app.send_task("sum-of-two-numbers", args=(2, 3)).get(timeout=30) == 5
    assert celery_more.sum_of_two.delay(4, 5).get(timeout=30) == 9
    assert corral.send_task("sum-of-two-numbers", args=(1, 1)).get(timeout=30) == 2


def test_send_task_by_name_from_a_process_without_the_tasks_module(celery_cluster):
    """A client app that never imports the tasks module (nor could: it is not on its path)."""
    code = """
import sys
from corral.compat.celery import Celery
app = Celery("client")
print(app.send_task("tasks.process_data", args=("/data/x.csv",)).get(timeout=30))
print(app.send_task("sum-of-two-numbers", args=(2, 3), countdown=0.1).get(timeout=30))
assert not {"tasks", "celery_more"} & set(sys.modules), "the client imported a tasks module"
"""
    env = dict(celery_cluster.env(), CORRAL_ADDRESS=celery_cluster.address)
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                         cwd=celery_cluster.dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["{'processed': True}", "5"]
    # A name no worker has yet is kept (as Celery's broker keeps it) and says what it waits for.
    waiting = Celery("client").send_task("tasks.not_a_task")
    assert waiting.state == "PENDING"
    [listed] = [t for t in corral.tasks(state="pending") if t["id"] == waiting.id]
    assert "waits for a worker that runs tasks:not_a_task" in listed["note"]


def test_a_failed_task_gives_its_exception_as_in_celery(celery_cluster):
    r = celery_more.fail.delay("it broke")
    with pytest.raises(ValueError, match="it broke"):
        r.get(timeout=30)
    for e in (r.result, r.info, r.get(timeout=5, propagate=False)):
        assert type(e) is ValueError and e.args == ("it broke",)
    assert "Traceback" in r.traceback and r.state == "FAILURE"


def test_retry_honours_its_max_retries_countdown_and_exc(celery_cluster, tmp_path):
    ledger = tmp_path / "runs"
    r = celery_more.retry_limited.delay(str(ledger), 0.5)
    with pytest.raises(LookupError, match="gave up after 1 retries"):
        r.get(timeout=60)
    runs = [float(x) for x in ledger.read_text().split()]
    assert len(runs) == 2, "retry(max_retries=1): one retry, not the task's 5"
    assert runs[1] - runs[0] >= 0.45, "retry(countdown=0.5)"
    # The task's own max_retries (2), then the exc given to retry().
    with pytest.raises(LookupError, match="still failing"):
        celery_more.always_retries.delay().get(timeout=60)
    # retry(max_retries=5) overrides the task's own 1 (as Celery), then fails with exc.
    with pytest.raises(LookupError, match="past the limit"):
        celery_more.retries_past_its_limit.delay(str(tmp_path / "past")).get(timeout=60)
    assert (tmp_path / "past").read_text() == "run\n" * 6


def test_revoke_stops_a_running_task_only_with_terminate(celery_cluster):
    """As Celery: revoke() keeps a task that has not started from running; a running one goes on
    unless terminate=True."""
    running = [celery_more.slow_add.delay(i, 1, 3) for i in range(2)]
    wait_until(lambda: all(r.state == "STARTED" for r in running), what="both running")
    running[0].revoke()
    celery_more.app.control.revoke(running[1].id)
    assert [r.get(timeout=30) for r in running] == [1, 2]
    assert [r.state for r in running] == ["SUCCESS", "SUCCESS"]
    later = celery_more.add.apply_async((1, 2), countdown=3600)
    celery_more.app.control.revoke(later.id)
    assert later.state == "REVOKED"
    stopped = celery_more.slow_add.delay(0, 0, 60)
    wait_until(lambda: stopped.state == "STARTED", what="the task running")
    stopped.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        stopped.get(timeout=30)
    assert stopped.state == "REVOKED"


def test_import_corral_does_not_import_the_celery_facade():
    """The facade builds on the core (its canvas is corral.canvas), never the other way round."""
    code = "import corral, sys; assert 'corral.compat.celery' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    from corral import canvas
    assert (corral.chain, corral.group, corral.chord) == (canvas.chain, canvas.group, canvas.chord)
    assert issubclass(chain, canvas.chain) and issubclass(group, canvas.group) and issubclass(chord, canvas.chord)


def test_a_task_called_directly_inside_another_has_its_own_request(celery_cluster):
    r = celery_more.calls_another_directly.delay()
    out = r.get(timeout=30)
    assert out["outer"] == r.id and out["inner"] == {"id": None, "direct": True}


def test_eager_mode_runs_the_workers_rules_and_canvases_in_process(monkeypatch, tmp_path):
    """task_always_eager: nothing is sent (no cluster here); autoretry, groups and chords run here."""
    app = celery_more.app
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    ledger = tmp_path / "runs"
    r = celery_more.eager_flaky.delay(str(ledger))
    assert r.get() == 2 and ledger.read_text() == "xxx", "autoretry_for retried at once, in process"
    assert (group(celery_more.add.s(i, i) for i in range(3)) | celery_more.total.s()).apply_async().get() == 6
    assert chain(celery_more.add.s(1, 1), group(celery_more.add.s(1), celery_more.add.s(2)),
                 celery_more.total.s()).apply_async().get() == 7
    failed = celery_more.fail.delay("eagerly")
    assert failed.state == "FAILURE" and isinstance(failed.result, ValueError)


def test_a_chord_with_an_immutable_callback_still_gives_chord_error(celery_cluster):
    add, fail = celery_more.add, celery_more.fail
    r = chord([add.s(1, 1), fail.si("member broke")], add.si(0, 0)).apply_async()
    with pytest.raises(ChordError, match="member broke"):
        AsyncResult(r.id).get(timeout=60)


def test_a_chains_link_does_not_change_the_chain(celery_cluster):
    add = celery_more.add
    last = add.s(1)
    last.link(add.s(1000))  # a link of its own already
    c = chain(add.s(1, 1), last)
    first = c.apply_async(link=add.s(10))
    second = c.apply_async(link=add.s(100))
    assert first.get(timeout=30) == 3 and second.get(timeout=30) == 3
    assert sorted(x.get(timeout=30) for x in first.children) == [13, 1003]
    assert sorted(x.get(timeout=30) for x in second.children) == [103, 1003], "the first call's link stayed out"
    assert len(c.steps[-1].options["link"]) == 1


def test_crontab_with_both_day_fields_is_refused_where_celery_and_cron_differ(celery_cluster):
    from corral.compat.celery.schedules import crontab
    app = Celery("both_days")
    app.conf.beat_schedule = {"x": {"task": "celery_more.add", "schedule": crontab(0, 0, day_of_week="mon",
                                                                                  day_of_month="1-7")}}
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="both day_of_month and day_of_week"):
        app.apply_beat_schedule()


def test_inspect_shows_json_arguments_and_never_unpickles(celery_cluster):
    slow = celery_more.slow_add
    json_run = slow.delay(1, 2, 3)
    pickled_run = slow.apply_async((4, 5, 3), serializer="pickle")
    wait_until(lambda: json_run.state == "STARTED" and pickled_run.state == "STARTED", what="both running")
    entries = {e["id"]: e for e in celery_more.app.control.inspect().active()["corral"]}
    assert entries[json_run.id]["args"] == [1, 2, 3]
    assert entries[pickled_run.id]["args"] == [], "pickled arguments are not sent to readers"
    assert [json_run.get(timeout=30), pickled_run.get(timeout=30)] == [3, 9]
