"""Celery-style tasks beyond the user's example: retries, canvas (tests/test_celery.py)."""
from corral.compat.celery import Celery

app = Celery("celery_more")


@app.task(bind=True, max_retries=3, retry_backoff=0.05)
def retries_twice(self):
    if self.request.retries < 2:
        raise self.retry(exc=RuntimeError("not yet"))
    return self.request.retries


@app.task(autoretry_for=(IOError,), retry_backoff=0.05, max_retries=5)
def flaky_io(counter_path, failures):
    with open(counter_path, "a") as f:
        f.write("x")
    with open(counter_path) as f:
        n = len(f.read())
    if n <= failures:
        raise IOError(f"transient failure {n}")
    return n


@app.task(autoretry_for=(IOError,), max_retries=5)
def wrong_kind(counter_path):
    with open(counter_path, "a") as f:
        f.write("x")
    raise ValueError("not retried: not in autoretry_for")


@app.task
def add(x, y):
    return x + y


@app.task
def total(values):
    return sum(values)
