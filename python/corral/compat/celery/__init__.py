"""Celery's API on Corral's durable tasks: change the imports, keep the code.

    from corral.compat.celery import Celery                 # was: from celery import Celery
    from corral.compat.celery.schedules import crontab      # was: from celery.schedules import crontab

    app = Celery("tasks", broker="redis://...")              # broker/backend accepted and ignored

    @app.task(bind=True, autoretry_for=(IOError,), retry_backoff=True, max_retries=5)
    def process_data(self, path): ...

    process_data.delay("/data/x.csv").get(timeout=60)
    process_data.apply_async(("/data/x.csv",), countdown=30, expires=3600, queue="etl", priority=5)
    AsyncResult(task_id).state                               # PENDING STARTED RETRY SUCCESS FAILURE REVOKED
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
corral.TaskError with the remote traceback); ``.result`` and ``.info`` are that exception.

Differences: the connection is Corral's (corral.init() or CORRAL_ADDRESS, made on first use), not
`broker=`. Priorities: higher runs first (as RabbitMQ; Celery on Redis runs 0 first).
"""
import datetime
import functools
import time

from ... import _runtime, durable, exceptions
from ...canvas import GroupResult, Signature, chain, chord, group
from .schedules import crontab

__all__ = ["Celery", "AsyncResult", "GroupResult", "Signature", "chain", "group", "chord", "signature", "crontab",
           "Retry", "states"]


class states:
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})


class Retry(durable.RetryIn):
    """Raised by ``self.retry()``: the task runs again (while retries remain), after `countdown`
    seconds if given, else after the task's backoff."""

    def __init__(self, message="retry requested", countdown=-1.0):
        super().__init__(message, countdown)


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

    def revoke(self, terminate=False, signal=None):
        _ensure_connected()
        super().revoke()

    def __repr__(self):
        return f"<AsyncResult: {self.id}>"


def signature(task, args=(), kwargs=None, **options):
    return Signature(task, args, kwargs, options)


class Task:
    """What @app.task returns: call it to run here, .delay()/.apply_async() to run as a durable task."""

    def __init__(self, app, fn, bind, autoretry_for, retry_backoff, max_retries, default_retry_delay, options):
        self.app = app
        self.run = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.autoretry_for = tuple(autoretry_for)
        self.max_retries = max_retries
        self._bind = bind
        backoff = 1.0 if retry_backoff is True else float(retry_backoff or 0) or float(default_retry_delay)
        self._durable = durable.DurableFunction(fn, dict(options, max_retries=max_retries or 0, retry_backoff=backoff))
        # What the worker runs: Celery's retry rules around the function.
        durable.registry[self._durable.name] = self._wrapped
        functools.update_wrapper(self, fn)

    @property
    def request(self):
        ctx = _runtime.current_task
        if ctx is None:
            return _Request(None, 0)
        run = ctx.task_id.decode() if isinstance(ctx.task_id, bytes) else str(ctx.task_id)
        task_id, _, attempt = run.rpartition("#")
        return _Request(task_id or run, int(attempt or 0))

    def _wrapped(self, *args, **kwargs):
        try:
            return self.run(self, *args, **kwargs) if self._bind else self.run(*args, **kwargs)
        except Retry:
            raise
        except self.autoretry_for or ():
            raise
        except Exception as e:  # noqa: BLE001 - Celery fails other exceptions without retrying
            raise durable.NoRetry(e) from e

    def retry(self, exc=None, countdown=None, max_retries=None, **options):
        """Runs the task again, while retries remain (then it fails with `exc`): after `countdown`
        seconds if given, else after the task's backoff."""
        message = str(exc) if exc else "retry requested"
        if countdown is not None:
            raise Retry(message, countdown)
        raise Retry(message)

    def __call__(self, *args, **kwargs):
        return self.run(self, *args, **kwargs) if self._bind else self.run(*args, **kwargs)

    def apply_async(self, args=None, kwargs=None, countdown=None, eta=None, expires=None, queue=None, priority=None,
                    task_id=None, **options):
        _ensure_connected()
        options = dict(countdown=countdown, eta=eta, expires=expires, queue=queue, priority=priority, task_id=task_id)
        spec = self._canvas_spec(tuple(args or ()), dict(kwargs or {}), options)
        return AsyncResult(durable._submit([spec])[0])

    def _canvas_spec(self, args, kwargs, options):
        _ensure_connected()
        countdown, eta, expires = options.get("countdown"), options.get("eta"), options.get("expires")
        queue, priority, task_id = options.get("queue"), options.get("priority"), options.get("task_id")
        opts = {}
        if countdown is not None:
            opts["countdown"] = countdown
        if eta is not None:
            opts["eta"] = eta
        if expires is not None:
            opts["expires"] = expires
        if queue is not None:
            opts["queue"] = queue
        if priority is not None:
            opts["priority"] = priority
        fn = self._durable.options(**opts) if opts else self._durable
        spec = fn._spec(tuple(args), dict(kwargs))
        if task_id:
            spec["id"] = str(task_id)
        return spec

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def s(self, *args, **kwargs):
        return Signature(self, args, kwargs)

    def si(self, *args, **kwargs):
        return Signature(self, args, kwargs, immutable=True)

    def AsyncResult(self, task_id):
        return AsyncResult(task_id)

    _result = AsyncResult  # what a canvas returns for this task


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


class Celery:
    def __init__(self, main=None, broker=None, backend=None, include=None, **kwargs):
        self.main = main
        self.conf = _Conf(beat_schedule={}, task_default_retry_delay=180)
        self.tasks = {}

    def task(self, *args, bind=False, autoretry_for=(), retry_backoff=False, max_retries=3, default_retry_delay=None,
             name=None, queue=None, **options):
        opts = _task_options(options)
        if queue:
            opts["queue"] = queue

        def wrap(fn):
            t = Task(self, fn, bind, autoretry_for, retry_backoff, max_retries,
                     default_retry_delay or self.conf.get("task_default_retry_delay", 180), opts)
            self.tasks[t.name] = t
            return t
        if len(args) == 1 and callable(args[0]) and not options and not name:
            return wrap(args[0])
        return wrap

    def AsyncResult(self, task_id):
        return AsyncResult(task_id)

    def send_task(self, name, args=None, kwargs=None, **options):
        t = self.tasks.get(name)
        if t is None:
            raise exceptions.InvalidArgumentError(f"send_task: no task named {name} in this app")
        return t.apply_async(args, kwargs, **options)

    def apply_beat_schedule(self):
        """Creates (or updates) a Corral schedule for every entry of conf.beat_schedule. Run it once,
        from any process: schedules live in the head, so only one scheduler ever fires them."""
        _ensure_connected()
        made = []
        for name, entry in self.conf.get("beat_schedule", {}).items():
            task = entry["task"]
            function = task if ":" in task else ":".join(task.rsplit(".", 1))
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
