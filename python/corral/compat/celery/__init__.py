"""Celery's API on Corral's durable tasks: change the imports, keep the code.

    from corral.compat.celery import Celery                 # was: from celery import Celery
    from corral.compat.celery.schedules import crontab      # was: from celery.schedules import crontab

    app = Celery("tasks", broker="redis://...")              # broker/backend accepted and ignored

    @app.task(bind=True, autoretry_for=(IOError,), retry_backoff=True, max_retries=5)
    def process_data(self, path): ...

    process_data.delay("/data/x.csv").get(timeout=60)
    process_data.apply_async(("/data/x.csv",), countdown=30, expires=3600, queue="etl", priority=5)
    AsyncResult(task_id).state                               # PENDING STARTED RETRY SUCCESS FAILURE REVOKED
    app.send_task("tasks.process_data", args=(path,))        # by name, also from a process without tasks.py
    chain(a.s(1), b.s()).apply_async(); group(a.s(i) for i in range(10)).apply_async().get()
    chord([a.s(i) for i in range(10)], total.s()).apply_async().get()
    app.conf.beat_schedule = {"nightly": {"task": "tasks.train", "schedule": crontab(hour=2, minute=0)}}
    app.apply_beat_schedule()                                # once, from any process: becomes Corral schedules

Tasks are Corral durable tasks: stored before delay() returns, run by workers that import the
module (start agents with --tasks tasks), results by id from any process. As in Celery, a task is
retried only on `autoretry_for` exceptions and `self.retry()`; other exceptions fail it at once.

chain, group and chord are Corral's own (``corral.canvas``): stored whole, in one commit, and run
by the head, also after the process that submitted them exits.

A failed task's get() raises its own exception (``except ValueError`` works; it is also a
corral.TaskError with the remote traceback); ``.result`` and ``.info`` are that exception. revoke()
keeps a task that has not started from running; a running one goes on unless terminate=True.

Differences: the connection is Corral's (corral.init() or CORRAL_ADDRESS, made on first use), not
`broker=`. Priorities: higher runs first (as RabbitMQ; Celery on Redis runs 0 first). A task named
without a module (``@app.task(name="sum-of-two")``) is "celery:sum-of-two" in Corral's listings.
The options of @app.task (max_retries, time limits, queue) travel with each submission, so a
send_task() from a process without the task's module submits with Corral's defaults (no retries).
"""
import datetime
import functools
import time

from ... import _runtime, durable, exceptions
from ...canvas import GroupResult, Signature, chain, chord, group
from .schedules import crontab

__all__ = ["Celery", "AsyncResult", "GroupResult", "Signature", "chain", "group", "chord", "signature", "crontab",
           "Retry", "MaxRetriesExceededError", "states"]


class states:
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})


class Retry(durable.RetryIn):
    """Raised by ``self.retry()``: the task runs again (while retries remain) after `when` seconds
    (or at `when`, a datetime), else after the task's backoff. `exc`: why; the task fails with it
    when no retries remain."""

    def __init__(self, message=None, exc=None, when=None, **kwargs):
        if isinstance(when, datetime.datetime):
            when = (durable._wall_ns(when, "eta") - time.time_ns()) / 1e9
        super().__init__(message or repr(exc), -1.0 if when is None else max(0.0, when), exc)


class MaxRetriesExceededError(exceptions.CorralError):
    """Raised by ``self.retry()`` without `exc` when no retries remain."""


def _ensure_connected():
    if _runtime.client is None and not _runtime.worker_link:
        import os
        import corral
        corral.init(address=os.environ.get("CORRAL_ADDRESS") or "auto")


class _Conf(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _plain(error):
    """The task's own exception in what get() raises (Celery gives it as it was raised)."""
    return error.cause if getattr(error, "cause", None) is not None else error


class AsyncResult(durable.TaskResult):
    """A task's state and result by id, as Celery's; connects on first use."""

    def __init__(self, id, app=None):
        super().__init__(id)

    def _fetch(self, wait_s=0.0):
        _ensure_connected()
        return super()._fetch(wait_s)

    status = durable.TaskResult.state

    def successful(self):
        return self.state == states.SUCCESS

    def failed(self):
        return self.state == states.FAILURE

    def get(self, timeout=None, propagate=True, interval=0.5, **options):
        """The task's value; if it failed, raises its exception (returns it if not `propagate`)."""
        try:
            return super().get(timeout=timeout)
        except (exceptions.TaskError, exceptions.TaskCancelledError) as e:
            if propagate:
                raise
            return _plain(e)

    @property
    def result(self):
        """The task's value; for a task that failed or was revoked, its exception; else None."""
        info = self._fetch()
        if info["state"] == states.SUCCESS:
            return durable._decode(info["result"], info["result_format"])
        if info["state"] in (states.FAILURE, states.REVOKED):
            return _plain(self._exception(info))
        return None

    info = result

    def revoke(self, connection=None, terminate=False, signal=None, wait=False, timeout=None):
        """Keeps the task from starting; stops it if running only with `terminate` (as Celery)."""
        _ensure_connected()
        super().revoke(terminate=terminate)

    def __repr__(self):
        return f"<AsyncResult: {self.id}>"


def signature(task, args=(), kwargs=None, **options):
    return Signature(task, args, kwargs, options)


class Task:
    """What @app.task returns: call it to run here, .delay()/.apply_async() to run as a durable task.
    `name` is Celery's (``module.name`` unless given); the head knows it as durable.function_name(name)."""

    MaxRetriesExceededError = MaxRetriesExceededError

    def __init__(self, app, fn, name, bind, autoretry_for, retry_backoff, max_retries, default_retry_delay, options):
        self.app = app
        self.run = fn
        self.autoretry_for = tuple(autoretry_for)
        self.max_retries = max_retries
        self._bind = bind
        backoff = 1.0 if retry_backoff is True else float(retry_backoff or 0) or float(default_retry_delay)
        self._durable = durable.DurableFunction(fn, dict(options, max_retries=max_retries or 0, retry_backoff=backoff),
                                                durable.function_name(name) if name else None)
        durable.register(self._durable.name, self._in_worker, fn.__module__)
        functools.update_wrapper(self, fn)
        self.name = name or f"{fn.__module__}.{fn.__qualname__}"

    @property
    def request(self):
        ctx = _runtime.current_task
        if ctx is None:
            return _Request(None, 0)
        run = ctx.task_id.decode() if isinstance(ctx.task_id, bytes) else str(ctx.task_id)
        task_id, _, attempt = run.rpartition("#")
        return _Request(task_id or run, int(attempt or 0))

    def _in_worker(self, *args, **kwargs):
        """What a worker runs: the function under Celery's rules. Only self.retry() retries (an
        `autoretry_for` exception goes through it); any other exception fails the task at once."""
        try:
            try:
                return self(*args, **kwargs)
            except Retry:
                raise
            except self.autoretry_for as e:
                raise self.retry(exc=e)
        except Retry:
            raise
        except Exception as e:  # noqa: BLE001 - Celery fails other exceptions without retrying
            raise durable.NoRetry(e) from e

    def retry(self, exc=None, countdown=None, eta=None, max_retries=None, **options):
        """Runs the task again after `countdown` seconds (or at `eta`; else after the task's backoff)
        while retries remain: `max_retries` if given here, else the task's. When none remain,
        raises `exc` (the task fails with it) or MaxRetriesExceededError, as Celery. (The head keeps
        to the task's own max_retries: a larger one given here cannot add retries.)"""
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and self.request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(f"cannot retry {self.name}[{self.request.id}]: {limit} retries used")
        raise Retry(exc=exc, when=countdown if countdown is not None else eta)

    def __call__(self, *args, **kwargs):
        return self.run(self, *args, **kwargs) if self._bind else self.run(*args, **kwargs)

    def apply_async(self, args=None, kwargs=None, countdown=None, eta=None, expires=None, queue=None, priority=None,
                    task_id=None, **options):
        """Stores the task; Celery's other options (routing_key, headers, ...) have no use here."""
        return self.s(*(args or ()), **(kwargs or {})).apply_async(
            countdown=countdown, eta=eta, expires=expires, queue=queue, priority=priority, task_id=task_id)

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def s(self, *args, **kwargs):
        return Signature(self, args, kwargs)

    def si(self, *args, **kwargs):
        return Signature(self, args, kwargs, immutable=True)

    def AsyncResult(self, task_id):
        return AsyncResult(task_id)

    _result = AsyncResult  # what a canvas returns for this task

    def _canvas_spec(self, args, kwargs, options):
        _ensure_connected()
        return self._durable._canvas_spec(args, kwargs, options)


class _Request:
    def __init__(self, id, retries):
        self.id = id
        self.retries = retries


# Celery task options that hold on Corral without a setting: tasks are acknowledged late and
# re-run when a worker is lost, results are kept, STARTED is shown, retries have jitter.
_IGNORED_OPTIONS = {"acks_late", "ignore_result", "track_started", "retry_jitter", "typing", "trail", "shared",
                    "store_errors_even_if_ignored", "reject_on_worker_lost", "send_events",
                    "acks_on_failure_or_timeout"}


def _task_options(options):
    """@app.task options -> Corral durable task options."""
    out = {}
    for key, value in options.items():
        if key in ("time_limit", "soft_time_limit", "priority", "expires"):
            out[key] = value
        elif key == "serializer":
            if value not in ("json", "pickle"):
                raise exceptions.InvalidArgumentError(
                    f"serializer={value!r}: Corral encodes arguments as 'json' or 'pickle'")
            out["args_format"] = value
        elif key == "rate_limit":
            raise exceptions.InvalidArgumentError(
                "rate_limit on a task is per worker in Celery; Corral limits a queue, cluster-wide: route the task "
                f"to its own queue and call corral.queue(name, rate_limit={value!r}) once")
        elif key not in _IGNORED_OPTIONS:
            raise exceptions.InvalidArgumentError(
                f"@app.task option {key}={value!r} is not supported by corral.compat.celery; supported: bind, "
                "autoretry_for, retry_backoff, max_retries, default_retry_delay, name, queue, time_limit, "
                "soft_time_limit, priority, expires, serializer, and the Celery options that always hold here: "
                + ", ".join(sorted(_IGNORED_OPTIONS)))
    return out


class _Control:
    """app.control: revoke() (Corral has no worker broadcast commands)."""

    def revoke(self, task_id, destination=None, terminate=False, signal=None, **kwargs):
        for one in [task_id] if isinstance(task_id, str) else task_id:
            AsyncResult(one).revoke(terminate=terminate)


class Celery:
    def __init__(self, main=None, broker=None, backend=None, include=None, **kwargs):
        self.main = main
        self.conf = _Conf(beat_schedule={}, task_default_retry_delay=180)
        self.tasks = {}
        self.control = _Control()

    def task(self, *args, bind=False, autoretry_for=(), retry_backoff=False, max_retries=3, default_retry_delay=None,
             name=None, queue=None, **options):
        opts = _task_options(options)
        if queue:
            opts["queue"] = queue

        def wrap(fn):
            t = Task(self, fn, name, bind, autoretry_for, retry_backoff, max_retries,
                     default_retry_delay or self.conf.get("task_default_retry_delay", 180), opts)
            self.tasks[t.name] = t
            return t
        if len(args) == 1 and callable(args[0]) and not options and not name:
            return wrap(args[0])
        return wrap

    def AsyncResult(self, task_id):
        return AsyncResult(task_id)

    def send_task(self, name, args=None, kwargs=None, **options):
        """Submits the task `name` (Celery's, as @app.task gave it), also from a process that does
        not import it: the head accepts the names its workers registered."""
        task = self.tasks.get(name)
        if task is not None:
            return task.apply_async(args, kwargs, **options)
        _ensure_connected()
        return AsyncResult(durable.by_name(name).s(*(args or ()), **(kwargs or {})).apply_async(**options))

    def apply_beat_schedule(self):
        """Creates (or updates) a Corral schedule for every entry of conf.beat_schedule. Run it once,
        from any process: schedules live in the head, so only one scheduler ever fires them."""
        _ensure_connected()
        made = []
        for name, entry in self.conf.get("beat_schedule", {}).items():
            function = durable.function_name(entry["task"])
            sched = entry["schedule"]
            kw = dict(args=tuple(entry.get("args", ())), kwargs=dict(entry.get("kwargs", {})))
            if isinstance(sched, crontab):
                kw.update(cron=sched.expression, tz=sched.tz or self.conf.get("timezone") or "UTC")
            elif isinstance(sched, datetime.timedelta):
                kw.update(every=sched)
            elif isinstance(sched, (int, float)):
                kw.update(every=sched)
            else:
                raise exceptions.InvalidArgumentError(f"beat_schedule {name}: schedule must be crontab(), a "
                                                      f"timedelta or seconds, not {sched!r}")
            made.append(durable.schedule(name, function, **kw))
        return made
