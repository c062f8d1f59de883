"""The tasks of Celery's own documentation (docs/userguide/tasks.rst, calling.rst, canvas.rst,
periodic-tasks.rst, docs/getting-started/*), with only their imports changed to corral.compat.celery.

The workers of tests/test_celery_docs.py import this module (an agent started with
``--tasks celery_docs_tasks``). Tasks that the tests must observe from outside write JSON lines
into a ledger file (a path under the test's tmp dir, given as an argument); tasks that must stay
running until the test lets them go wait for a gate file the test creates.
"""
import datetime
import functools
import json
import logging
import os
import time

from corral.compat.celery import Celery, Task, shared_task, states
from corral.compat.celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from corral.compat.celery.schedules import crontab
from corral.compat.celery.utils.log import get_task_logger

app = Celery("celery_docs_tasks")

# first-steps-with-celery.rst "Configuration" and next-steps.rst "Routing": app.conf.update(...)
app.conf.update(
    timezone="Europe/London",
    task_routes={
        "celery_docs_tasks.routed_low": "low-priority",           # first steps: 'tasks.add': 'low-priority'
        "celery_docs_tasks.routed_hipri": {"queue": "hipri"},     # next steps: {'queue': 'hipri'}
    },
    task_annotations={"celery_docs_tasks.annotated": {"rate_limit": "120/m"}},
)

# periodic-tasks.rst "Entries" and "Crontab schedules"
app.conf.beat_schedule = {
    "add-every-30-seconds": {"task": "celery_docs_tasks.add", "schedule": 30.0, "args": (16, 16)},
    "add-every-monday-morning": {"task": "celery_docs_tasks.add",
                                 "schedule": crontab(hour=7, minute=30, day_of_week=1), "args": (16, 16)},
    "add-every-45s-timedelta": {"task": "celery_docs_tasks.add", "schedule": datetime.timedelta(seconds=45),
                                "args": (1, 2)},
    "add-debug-with-kwargs": {"task": "celery_docs_tasks.add_debug", "schedule": 60,
                              "args": (1, 2), "kwargs": {"debug": True}},
    "context-with-options": {"task": "celery_docs_tasks.dump_context", "schedule": 60,
                             "args": (1, 2), "options": {"queue": "beat-queue"}},
    "every-15-minutes": {"task": "celery_docs_tasks.add", "schedule": crontab(minute="*/15"), "args": (1, 1)},
    "every-three-hours": {"task": "celery_docs_tasks.add", "schedule": crontab(minute=0, hour="*/3"),
                          "args": (1, 1)},
    "sundays": {"task": "celery_docs_tasks.add", "schedule": crontab(day_of_week="sunday"), "args": (1, 1)},
}

logger = get_task_logger(__name__)


# ---- helpers the tasks use (plain functions, not tasks) ----

def note(ledger, **fields):
    """Appends one JSON line to `ledger`: the fields, the time and this process's pid."""
    fields.setdefault("t", time.time())
    fields.setdefault("pid", os.getpid())
    with open(ledger, "a") as f:
        f.write(json.dumps(fields, default=repr) + "\n")


def read(ledger):
    if not os.path.exists(ledger):
        return []
    with open(ledger) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(gate, timeout=60.0):
    """Blocks until the test creates the file `gate`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.02)


class Refused:
    """Stands for a task whose definition the facade refused: using it raises that refusal."""

    def __init__(self, error):
        self.error = error

    def __getattr__(self, name):
        raise self.error

    def __call__(self, *args, **kwargs):
        raise self.error


def defined_or_refused(define):
    """Defines one task with an option the facade may refuse (define() returns the task). A refusal
    fails only the tests of that task, not the import of this module by every test and worker."""
    try:
        return define()
    except Exception as e:  # the tests that use the task raise it again (Refused)
        return Refused(e)


# ---- first steps / calling ----

@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def subtract(x, y):
    return x - y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def add_debug(x, y, debug=False):
    return [x + y, debug]


@app.task
def echo(value):
    return value


@app.task
def whereami():
    return os.getpid()


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def stamp(ledger, value=None):
    """Notes when it ran; returns `value`."""
    note(ledger, value=value)
    return value


@app.task(bind=True)
def gated(self, ledger, gate, value):
    """Notes that it started, then runs until the test opens `gate`."""
    note(ledger, event="start", id=self.request.id, value=value)
    wait_for(gate)
    return value


@app.task(bind=True, track_started=True)
def tracked(self, ledger, gate):
    note(ledger, event="start", id=self.request.id)
    wait_for(gate)
    return "done"


@app.task(name="sum-of-two-numbers")
def sum_of_two(x, y):
    return x + y


@app.task(name="celery_docs_tasks.named_add")
def add_with_a_module_name(x, y):
    return x + y


@app.task(typing=False)
def add_untyped(x, y):
    return x + y


@app.task(ignore_result=True)
def not_stored(ledger):
    note(ledger, event="ran")
    return 42


@app.task(serializer="json")
def echo_json(value):
    return value


@defined_or_refused
def rate_limited():
    @app.task(rate_limit="120/m", name="celery_docs_tasks.rate_limited")
    def rate_limited(ledger):
        note(ledger, event="start")
    return rate_limited


@app.task
def annotated(ledger):
    """Rate limited by the app's task_annotations."""
    note(ledger, event="start")


@app.task(bind=True)
def routed_low(self):
    return (self.request.delivery_info or {}).get("routing_key")


@app.task(bind=True)
def routed_hipri(self):
    return (self.request.delivery_info or {}).get("routing_key")


@app.task(bind=True)
def hello(self, a, b):
    """calling.rst "On message"."""
    time.sleep(0.5)
    self.update_state(state="PROGRESS", meta={"progress": 50})
    time.sleep(0.5)
    self.update_state(state="PROGRESS", meta={"progress": 90})
    time.sleep(0.5)
    return "hello world: %i" % (a + b)


@app.task(bind=True)
def upload_files(self, filenames, gate_dir=None):
    """tasks.rst "Custom states"; with `gate_dir`, waits for gate_dir/<i> after each update."""
    for i, file in enumerate(filenames):
        if not self.request.called_directly:
            self.update_state(state="PROGRESS", meta={"current": i, "total": len(filenames)})
        if gate_dir:
            wait_for(os.path.join(gate_dir, str(i)))
    return len(filenames)


@app.task(bind=True)
def dump_context(self, x, y, z=None):
    """tasks.rst "Task Request": what the request says, as plain data."""
    r = self.request
    return json.loads(json.dumps({
        "id": r.id, "args": list(r.args or ()), "kwargs": dict(r.kwargs or {}), "retries": r.retries,
        "is_eager": r.is_eager, "called_directly": r.called_directly, "hostname": r.hostname,
        "delivery_info": dict(r.delivery_info or {}), "eta": r.eta, "expires": r.expires, "group": r.group,
        "root_id": r.root_id, "parent_id": r.parent_id, "pid": os.getpid(),
    }, default=str))


@app.task(bind=True, time_limit=30, soft_time_limit=20)
def limits_context(self):
    return [self.request.time_limit, self.request.soft_time_limit]


@app.task(bind=True)
def chain_context(self, previous=None):
    return {"id": self.request.id, "parent_id": self.request.parent_id, "root_id": self.request.root_id}


@app.task(bind=True)
def group_member(self, i):
    return self.request.group


@app.task(bind=True)
def bound_self(self):
    return [self.name, self.request.id, isinstance(self, Task)]


@app.task
def logs_a_line(logfile, x, y):
    """tasks.rst "Logging": a module-level get_task_logger(__name__) logger, used in a task."""
    handler = logging.FileHandler(logfile)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("Adding {0} + {1}".format(x, y))
    finally:
        logger.removeHandler(handler)
        handler.close()
    return x + y


@shared_task
def shared_add(x, y):
    return x + y


def plus_one(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) + 1
    return wrapper


def doubled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return 2 * fn(*args, **kwargs)
    return wrapper


@app.task
@doubled
@plus_one
def decorated(x):
    """tasks.rst "Multiple decorators": the task decorator applied last (first in the list)."""
    return x


class HttpError(Exception):
    """tasks.rst "Creating pickleable exceptions": the OK form."""

    def __init__(self, status_code):
        self.status_code = status_code
        Exception.__init__(self, status_code)


@app.task
def raises_http_error(status_code):
    raise HttpError(status_code)


@defined_or_refused
def expected_error():
    @app.task(throws=(KeyError,), name="celery_docs_tasks.expected_error")
    def expected_error(key):
        raise KeyError(key)
    return expected_error


# ---- links, errbacks ----

@app.task
def record_value(value, ledger):
    note(ledger, value=value)
    return value


@app.task
def error_handler(request, exc, traceback, ledger=None):
    """calling.rst "Linking": an errback, called with the failed task's request, exception, traceback."""
    note(ledger, request_id=request.id, exc_type=type(exc).__name__, exc=str(exc),
         has_traceback=traceback is not None)


@app.task
def failed_id(task_id, *, ledger):
    """An errback with one argument: dispatched as a task, it gets the failed task's id."""
    note(ledger, task_id=task_id)


@app.task
def reset_buffers(*args, ledger=None):
    note(ledger, args=list(args))
    return "reset"


@app.task
def add_noted(x, y, ledger):
    note(ledger, value=x + y)
    return x + y


@app.task
def raising_task():
    raise ValueError("something something")


@app.task
def import_contact(contact):
    return contact


@app.task
def notify_complete(import_id):
    return f"import {import_id} complete"


@app.task
def create_user(username, first, last, email):
    return username


@app.task
def import_contacts(user):
    return f"imported contacts of {user}"


@app.task
def send_welcome_email(user):
    return f"welcome {user}"


@app.task
def stamp_item(i, ledger):
    note(ledger, item=i)
    return i


# ---- retries ----

@app.task(bind=True)
def retry_once_noting_id_and_queue(self, ledger):
    note(ledger, id=self.request.id, retries=self.request.retries,
         routing_key=(self.request.delivery_info or {}).get("routing_key"))
    if self.request.retries < 1:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(bind=True)
def retry_without_raise(self, ledger):
    """Calls self.retry() without `raise`: it raises Retry itself, so the line after is not reached."""
    note(ledger, event="run", retries=self.request.retries)
    if self.request.retries == 0:
        try:
            self.retry(countdown=0.1)
        except Retry:
            note(ledger, event="retry() raised Retry")
            raise
    note(ledger, event="after", retries=self.request.retries)
    return "done"


@app.task(bind=True)
def retry_with_state(self, ledger):
    note(ledger, retries=self.request.retries)
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("rate limited"), countdown=2)
    return "through"


@app.task(bind=True, track_started=True)
def retries_twice_tracked(self):
    time.sleep(0.3)
    if self.request.retries < 2:
        raise self.retry(countdown=0.5)
    return self.request.retries


@app.task(bind=True, max_retries=2)
def retry_exc_until_max(self, ledger):
    note(ledger, retries=self.request.retries)
    raise self.retry(exc=KeyError("still rate limited"), countdown=0.05)


@app.task(bind=True, max_retries=1)
def retry_no_exc_until_max(self, ledger):
    note(ledger, retries=self.request.retries)
    try:
        raise OSError("transient")
    except OSError:
        raise self.retry(countdown=0.05)


@app.task(bind=True)
def retry_with_default_max(self, ledger):
    note(ledger, retries=self.request.retries)
    raise self.retry(countdown=0.05)


@app.task(bind=True, max_retries=None)
def retry_forever(self, ledger, until):
    note(ledger, retries=self.request.retries)
    if self.request.retries < until:
        raise self.retry(countdown=0.05)
    return self.request.retries


@app.task(bind=True, default_retry_delay=1)
def retry_default_delay(self, ledger):
    note(ledger, retries=self.request.retries)
    if self.request.retries == 0:
        raise self.retry(exc=OSError("try again"))
    return "ok"


@app.task(bind=True, default_retry_delay=30 * 60)  # retry in 30 minutes.
def retry_countdown_overrides(self, ledger):
    note(ledger, retries=self.request.retries)
    if self.request.retries == 0:
        try:
            raise OSError("something raising")
        except Exception as exc:
            # overrides the default delay to retry after half a second
            raise self.retry(exc=exc, countdown=0.5)
    return "ok"


def _fails_first(ledger, failures, exc_type=OSError):
    """Notes a run; raises exc_type in the first `failures` runs; returns the run count."""
    note(ledger)
    runs = len(read(ledger))
    if runs <= failures:
        raise exc_type(f"failure {runs}")
    return runs


@app.task(autoretry_for=(OSError,), default_retry_delay=0.1)
def autoretry_io(ledger, failures):
    return _fails_first(ledger, failures)


@app.task(autoretry_for=(OSError,), default_retry_delay=0.1)
def autoretry_wrong_kind(ledger):
    note(ledger)
    raise ValueError("not in autoretry_for")


@app.task(autoretry_for=(OSError,), retry_kwargs={"max_retries": 2, "countdown": 0.05})
def autoretry_with_kwargs(ledger):
    note(ledger)
    raise OSError("always")


@app.task
def refresh_timeline(ledger):
    """tasks.rst: what autoretry_for with retry_kwargs does, written out: Task.retry on the task."""
    note(ledger)
    try:
        raise OSError("fail whale")
    except OSError as exc:
        raise refresh_timeline.retry(exc=exc, max_retries=2, countdown=0.05)


@app.task(autoretry_for=(OSError,), retry_backoff=True, retry_jitter=False)
def backoff_true(ledger, failures):
    return _fails_first(ledger, failures)


@app.task(autoretry_for=(OSError,), retry_backoff=2, retry_jitter=False)
def backoff_factor(ledger, failures):
    return _fails_first(ledger, failures)


@app.task(autoretry_for=(OSError,), retry_backoff=600, retry_backoff_max=1, retry_jitter=False)
def backoff_capped(ledger, failures):
    return _fails_first(ledger, failures)


@app.task(autoretry_for=(OSError,), retry_backoff=True, retry_backoff_max=1, max_retries=12)
def backoff_jittered(ledger, failures):
    return _fails_first(ledger, failures)


@app.task(autoretry_for=(Exception,), dont_autoretry_for=(ValueError,), default_retry_delay=0.05, max_retries=2)
def autoretry_except(ledger, kind):
    note(ledger, kind=kind)
    raise (ValueError if kind == "value" else KeyError)(kind)


class BaseTaskWithRetry(Task):
    autoretry_for = (TypeError,)
    max_retries = 5
    retry_backoff = True
    retry_backoff_max = 700
    retry_jitter = False


@app.task(base=BaseTaskWithRetry)
def class_retry_options(ledger, failures):
    return _fails_first(ledger, failures, TypeError)


# ---- time limits ----

@app.task(time_limit=1)
def hard_limited(ledger):
    note(ledger, event="start")
    time.sleep(30)
    return "not reached"


@app.task(soft_time_limit=0.5)
def soft_limited_cleanup():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not reached"


# ---- handlers (base classes) ----

def _ledger_of(args, kwargs):
    return args[0] if args else kwargs["ledger"]


class RecordingTask(Task):
    """Records every handler call in the ledger given as the task's first argument."""

    def before_start(self, task_id, args, kwargs):
        note(_ledger_of(args, kwargs), event="before_start", task_id=task_id, args=list(args))

    def on_success(self, retval, task_id, args, kwargs):
        note(_ledger_of(args, kwargs), event="on_success", retval=retval, task_id=task_id, args=list(args))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        note(_ledger_of(args, kwargs), event="on_retry", exc_type=type(exc).__name__, exc=str(exc),
             task_id=task_id, einfo=einfo is not None)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note(_ledger_of(args, kwargs), event="on_failure", exc_type=type(exc).__name__, exc=str(exc),
             task_id=task_id, args=list(args), einfo=einfo is not None)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note(_ledger_of(args, kwargs), event="after_return", status=status,
             retval=retval if status == states.SUCCESS else type(retval).__name__, task_id=task_id)


@app.task(base=RecordingTask)
def handled_add(ledger, x, y):
    return x + y


@app.task(base=RecordingTask)
def handled_fail(ledger, message):
    raise KeyError(message)


@app.task(base=RecordingTask, bind=True)
def handled_retry(self, ledger):
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("once more"), countdown=0.1)
    return "ok"


@app.task(base=RecordingTask, time_limit=1)
def handled_hard_limit(ledger):
    time.sleep(30)


@app.task(base=RecordingTask, soft_time_limit=0.5)
def handled_soft_limit(ledger):
    time.sleep(30)


class DatabaseTask(Task):
    """tasks.rst "Instantiation": one instance per process, so its cache lives across requests."""
    _db = None

    @property
    def db(self):
        if self._db is None:
            self._db = {"pid": os.getpid(), "token": os.urandom(8).hex()}
        return self._db


@app.task(base=DatabaseTask, bind=True)
def process_rows(self):
    return [os.getpid(), self.db["token"]]


# ---- semipredicates ----

@app.task(bind=True)
def ignored(self, ledger):
    note(ledger, event="ran")
    raise Ignore()


@app.task(bind=True)
def get_tweets(self, ledger, user):
    timeline = [f"{user}: tweet {i}" for i in range(3)]
    note(ledger, event="ran")
    if not self.request.called_directly:
        self.update_state(state=states.SUCCESS, meta=timeline)
    raise Ignore()


@app.task(bind=True, acks_late=True)
def render_scene(self, path):
    try:
        raise MemoryError(f"{path} does not fit")
    except MemoryError as exc:
        raise Reject(exc, requeue=False)


@app.task(bind=True, acks_late=True)
def requeues(self, ledger):
    note(ledger, event="received")
    if len(read(ledger)) == 1:
        raise Reject("no reason", requeue=True)
    return "received two times"


# ---- a second app: settings from config_from_object(a class) ----

class LimitsConfig:
    task_time_limit = 2
    task_soft_time_limit = 1
    timezone = "Europe/Oslo"


limits_app = Celery("celery_docs_limits")
limits_app.config_from_object(LimitsConfig)


@limits_app.task
def limits_soft_caught():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "soft limit from task_soft_time_limit"
    return "not reached"


@limits_app.task
def limits_hard(ledger):
    note(ledger, event="start")
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        note(ledger, event="soft")
        time.sleep(30)
    return "not reached"


# ---- a third app: task_default_queue ----

queue_app = Celery("celery_docs_queues")
queue_app.conf.task_default_queue = "docs-default"


@queue_app.task(bind=True)
def default_queue_of(self):
    return (self.request.delivery_info or {}).get("routing_key")


# ---- a fourth app: task_cls ----

cls_app = Celery("celery_docs_cls", task_cls="celery_docs_tasks:DatabaseTask")


@cls_app.task
def cls_rows():
    return [os.getpid(), cls_rows.db["token"]]


# ---- a fifth app: periodic tasks set up in on_after_configure (periodic-tasks.rst "Entries") ----

beat_app = Celery("celery_docs_beat")


@beat_app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    # Calls beat_test('hello') every 10 seconds.
    sender.add_periodic_task(10.0, beat_test.s("hello"), name="add every 10")
    # Calls beat_test('hello') every 30 seconds: the same signature, a name of its own.
    sender.add_periodic_task(30.0, beat_test.s("hello"), name="add every 30")
    # Calls beat_test('world') every 30 seconds
    sender.add_periodic_task(30.0, beat_test.s("world"), expires=10)
    # Executes every Monday morning at 7:30 a.m.
    sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), beat_test.s("Happy Mondays!"))


@beat_app.task
def beat_test(arg):
    return arg
