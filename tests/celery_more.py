"""Celery-style tasks beyond the user's example: retries, canvas (tests/test_celery.py)."""
import time

from corral.compat.celery import Celery

app = Celery("celery_more")


@app.task(bind=True, max_retries=3, default_retry_delay=0.05)
def retries_twice(self):
    if self.request.retries < 2:
        raise self.retry(exc=RuntimeError("not yet"))
    return self.request.retries


@app.task(autoretry_for=(IOError,), retry_kwargs={"countdown": 0.05}, max_retries=5)
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


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def note(value, ledger):
    """Appends its value (the previous step's result in a chain) to a ledger and passes it on."""
    with open(ledger, "a") as f:
        f.write(f"{value}\n")
    return value


@app.task
def slow_add(x, y, seconds):
    time.sleep(seconds)
    return x + y


@app.task(bind=True, max_retries=2, default_retry_delay=0.01)
def retry_later(self, ledger, countdown):
    """Retries once after `countdown` seconds (not the 0.01 s default_retry_delay); notes when each attempt ran."""
    with open(ledger, "a") as f:
        f.write(f"{time.time()}\n")
    if self.request.retries == 0:
        raise self.retry(countdown=countdown)
    return self.request.retries


@app.task(name="sum-of-two-numbers")
def sum_of_two(x, y):
    return x + y


@app.task(bind=True, max_retries=5, default_retry_delay=0.01)
def retry_limited(self, ledger, countdown):
    """Asks retry() for at most one retry, `countdown` seconds later (the task allows 5); notes each run."""
    with open(ledger, "a") as f:
        f.write(f"{time.time()}\n")
    raise self.retry(exc=LookupError(f"gave up after {self.request.retries} retries"), max_retries=1,
                     countdown=countdown)


@app.task(bind=True, max_retries=2, default_retry_delay=0.01)
def always_retries(self):
    raise self.retry(exc=LookupError("still failing"))


@app.task(bind=True, max_retries=1, default_retry_delay=0.01)
def retries_past_its_limit(self, ledger):
    """Asks retry() for 5 retries, more than the task's own 1."""
    with open(ledger, "a") as f:
        f.write("run\n")
    raise self.retry(exc=LookupError("past the limit"), max_retries=5)


@app.task(bind=True)
def who_am_i(self):
    return {"id": self.request.id, "direct": self.request.called_directly}


@app.task(bind=True)
def calls_another_directly(self):
    """A task calling another as a function: the inner one has its own request, as in Celery."""
    return {"outer": self.request.id, "inner": who_am_i()}


@app.task(bind=True, autoretry_for=(IOError,), retry_kwargs={"countdown": 0}, max_retries=2)
def eager_flaky(self, ledger):
    with open(ledger, "a") as f:
        f.write("x")
    if self.request.retries < 2:
        raise IOError("not yet")
    return self.request.retries
