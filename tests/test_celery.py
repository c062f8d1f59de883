"""The Celery facade: the user's tasks.py runs with only its imports changed, plus retries and canvas."""
import os

import pytest

import corral
from corral.compat.celery import AsyncResult, chain, chord, group

import celery_more
import tasks


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
    with pytest.raises(corral.TaskError, match="ValueError: not retried"):
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


def test_revoke(celery_cluster):
    r = celery_more.add.apply_async((1, 2), countdown=3600)
    r.revoke()
    assert r.state == "REVOKED"
