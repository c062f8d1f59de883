"""Durable tasks: stored by the head before submit() returns, run at least once, results by id.

    # tasks.py (workers import it: start agents with --tasks tasks)
    @corral.task(queue="reports", max_retries=5, retry_backoff=2.0)
    def report(day): ...

    task_id = report.submit("2026-11-26")                  # stored (fsync) when this returns
    task_id = report.options(idempotency_key="report-2026-11-26", countdown=30).submit(day)
    ids = report.map_submit(["2026-11-25", "2026-11-26"])  # many tasks, one commit
    corral.result(task_id).get(timeout=60)                 # from any process, even after a head restart

A durable task names its function by importable path ("module:qualname"); the workers of a node
started with ``--tasks MODULE`` import that module and register its ``@corral.task`` functions, and
a task for a name no worker registered yet waits for one that does (`corral tasks` says so; a head
started with --strict-task-names refuses it instead). Only workers that registered a name run it. Chains, groups and chords of them are in ``corral.canvas``.
"""
import datetime
import json
import os
import pickle
import time

from . import _core, _runtime, exceptions, serialization

# name ("module:qualname") -> (function, the module to reload it from), for the functions this
# process registered (with @task, or the Celery facade's @app.task).
registry = {}

_TASK_OPTIONS = {"queue", "priority", "max_retries", "retry_backoff", "idempotency_key", "countdown", "eta",
                 "expires", "args_format", "soft_time_limit", "time_limit"}


def _name(fn):
    return f"{fn.__module__}:{fn.__qualname__}"


def function_name(name):
    """The name the head knows a task by: "module:qualname" as it is; Celery's "module.name" as
    "module:name" (the head reads it so too); a Celery name without a module, as
    ``@app.task(name="sum-of-two")`` gives, as "celery:sum-of-two" (the head takes only names with
    a module part)."""
    if ":" in name:
        return name
    module, dot, rest = name.rpartition(".")
    return f"{module}:{rest}" if dot else f"celery:{name}"


def register(name, fn, module):
    """Makes `fn` the function that runs the durable task `name` in this worker; `module` is the one
    to reload when its file changes (see _current)."""
    registry[name] = (fn, module)


def _wall_ns(value, what):
    """eta/expires: a datetime, or seconds from now (a number)."""
    if value is None:
        return 0
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive: local time, as Celery
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)) and value >= 0:
        return time.time_ns() + int(value * 1e9)
    raise exceptions.InvalidArgumentError(f"{what}={value!r}: give a datetime or a number of seconds >= 0")


class DurableFunction:
    """A function registered as a durable task. Calling it runs it here, as a plain function."""

    def __init__(self, fn, options, name=None):
        unknown = set(options) - _TASK_OPTIONS
        if unknown:
            raise exceptions.InvalidArgumentError(
                f"unknown task option(s) {sorted(unknown)}; valid: {sorted(_TASK_OPTIONS)}")
        self._fn = fn
        self._options = dict(options)
        self.name = name or _name(fn)
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "task")

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def options(self, **options):
        """A copy with some options changed: queue, priority (higher runs first within its queue;
        see ``corral.queue`` for weights and limits between queues), max_retries, retry_backoff (seconds,
        doubled each retry, with jitter), idempotency_key, countdown (seconds) or eta (datetime),
        expires (seconds or datetime: not started after that), args_format ("pickle" or "json"),
        soft_time_limit (seconds: SoftTimeLimitExceeded is raised in the task), time_limit (seconds:
        the worker is stopped; a failed attempt, retried while retries remain)."""
        merged = dict(self._options)
        merged.update(options)
        return DurableFunction(self._fn, merged, self.name)

    def _spec(self, args, kwargs, key=None):
        return make_spec(self.name, self._options, args, kwargs, key)

    def s(self, *args, **kwargs):
        """A step for ``corral.chain``/``group``/``chord``: it gets the previous step's result first."""
        from .canvas import Signature  # the canvas builds on this module: imported when first used
        return Signature(self, args, kwargs)

    def si(self, *args, **kwargs):
        """A step that does not take the previous step's result (it only runs after it)."""
        from .canvas import Signature
        return Signature(self, args, kwargs, immutable=True)

    def _canvas_spec(self, args, kwargs, options):
        given = {k: v for k, v in options.items() if k in _TASK_OPTIONS and v is not None}
        spec = (self.options(**given) if given else self)._spec(tuple(args), dict(kwargs))
        if options.get("task_id"):
            spec["id"] = str(options["task_id"])
        return spec

    def _result(self, task_id):
        return TaskId(task_id)

    def submit(self, *args, **kwargs):
        """Stores the task and returns its id once it is on the head's disk: a ``TaskId``, a str
        (print it, store it, pass it to ``corral.result``) with ``.id``, ``.get()``, ``.state``."""
        return _submit([self._spec(args, kwargs)])[0]

    def map_submit(self, iterable):
        """One task per item (a tuple of positional arguments, or a single argument), stored in one
        commit. Returns their ids (``TaskId``) in order."""
        specs = [self._spec(item if isinstance(item, tuple) else (item,), {}) for item in iterable]
        return _submit(specs) if specs else []


def make_spec(name, o, args, kwargs, key=None):
    """The spec the head stores for one durable task of function `name` with options `o`."""
    fmt = o.get("args_format") or "pickle"
    if fmt == "json":
        try:
            data = json.dumps([list(args), kwargs]).encode()
        except TypeError as e:
            raise exceptions.SerializationError(f"arguments of {name} are not JSON: {e}") from None
    elif fmt == "pickle":
        data = pickle.dumps((args, kwargs), protocol=5)
    else:
        raise exceptions.InvalidArgumentError(f"args_format={fmt!r}: use 'pickle' or 'json'")
    if o.get("countdown") is not None and o.get("eta") is not None:
        raise exceptions.InvalidArgumentError("give countdown or eta, not both")
    eta = _wall_ns(o.get("eta"), "eta") if o.get("eta") is not None else _wall_ns(o.get("countdown"), "countdown")
    mr = o.get("max_retries", 0)
    if not isinstance(mr, int) or mr < -1:
        raise exceptions.InvalidArgumentError(f"max_retries={mr!r}: must be an int >= 0 (-1: as the task asks)")
    return {
        "id": os.urandom(16).hex(),
        "function": name,
        "args": data,
        "args_format": fmt,
        "queue": o.get("queue") or "default",
        "priority": int(o.get("priority") or 0),
        "idempotency_key": key if key is not None else (o.get("idempotency_key") or ""),
        "eta_ns": eta,
        "expires_ns": _wall_ns(o.get("expires"), "expires"),
        "max_retries": mr,
        "retry_backoff_s": float(o.get("retry_backoff") or 0.0),
        "soft_time_limit_s": float(o.get("soft_time_limit") or 0.0),
        "time_limit_s": float(o.get("time_limit") or 0.0),
    }


def by_name(name):
    """The durable task `name` ("module:qualname", or a Celery name: see function_name), for a
    process that does not import its module: it can be submitted (and be a canvas step), not called
    here. A name no worker registered yet waits for one that does."""
    if not isinstance(name, str) or not name:
        raise exceptions.InvalidArgumentError(f"task name must be 'module:qualname', not {name!r}")
    name = function_name(name)

    def elsewhere(*a, **k):
        raise exceptions.CorralError(f"{name} runs on the workers that registered it; submit it instead")

    return DurableFunction(elsewhere, {}, name)


def send_task(name, args=(), kwargs=None, **options):
    """Submits a durable task by its name from a process that does not import its module (see
    by_name); options as ``DurableFunction.options``. Returns its ``TaskId``."""
    return by_name(name).options(**options).submit(*tuple(args or ()), **dict(kwargs or {}))


class TaskId(str):
    """A durable task's id as submit() returns it: a str (printable, storable, JSON-able; give it
    to ``corral.result`` from any process, later) that also reads the task's result here."""

    __slots__ = ()

    @property
    def id(self):
        return str(self)

    def result(self):
        return TaskResult(self)

    def get(self, timeout=None):
        return TaskResult(self).get(timeout=timeout)

    @property
    def state(self):
        return TaskResult(self).state

    def ready(self):
        return TaskResult(self).ready()

    def revoke(self, terminate=True):
        return TaskResult(self).revoke(terminate)

    def __reduce__(self):  # pickles as the plain id: readable without Corral
        return (str, (str(self),))


def _submit(specs):
    """Sends until the head acknowledges (it stored them). A lost connection means the head may or
    may not have stored them: send again, same ids (the head keeps one task per id), as long as the
    client keeps reconnecting (CORRAL_RECONNECT_S)."""
    client = _runtime.get_client()
    lost_since = None
    while True:
        try:
            return [TaskId(task_id) for task_id, _ in client.durable_submit(specs)]
        except exceptions.ConnectionLostError:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > float(os.environ.get("CORRAL_RECONNECT_S", "60")):
                raise
            time.sleep(0.1)


def task(fn=None, **options):
    """Registers a function as a durable task: ``@corral.task`` or ``@corral.task(queue=..., ...)``.

    Options: see ``DurableFunction.options``. Workers run it by name, so its module must be
    importable on the nodes (start their agents with ``--tasks MODULE``)."""
    def wrap(f):
        d = DurableFunction(f, options)
        register(d.name, f, f.__module__)
        return d
    return wrap(fn) if fn is not None else wrap


class TaskResult:
    """A durable task's state and result, by id: ``corral.result(task_id)``."""

    def __init__(self, task_id):
        self.id = str(task_id)
        self._info = None

    def _fetch(self, wait_s=0.0, on_change=False, seen_changes=0):
        self._info = _runtime.get_client().durable_get(self.id, wait_s, on_change, seen_changes)
        return self._info

    @property
    def state(self):
        """PENDING (also for an id the head does not know), STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return self._fetch()["state"]

    def ready(self):
        return self.state in ("SUCCESS", "FAILURE", "REVOKED")

    @property
    def runs(self):
        """How many runs of it started: 1, plus retries, plus re-executions after a lost worker or
        node (at-least-once: a re-executed task's effects may have happened more than once)."""
        return self._fetch()["runs"]

    @property
    def traceback(self):
        info = self._info if self._info and self._info["state"] in ("FAILURE", "REVOKED") else self._fetch()
        return info["error"] or None

    def get(self, timeout=None):
        """Waits for the task to finish and returns its value. Raises the task's exception if it
        failed (see _exception), TaskCancelledError if it was revoked, GetTimeoutError after timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lost_since = None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                info = self._fetch(wait_s=10.0 if left is None else min(10.0, left))
            except exceptions.ConnectionLostError:
                # The head restarted or the network blinked: ask again once reconnected, as long as
                # the client keeps trying to reconnect (CORRAL_RECONNECT_S).
                lost_since = lost_since or time.monotonic()
                window = float(os.environ.get("CORRAL_RECONNECT_S", "60"))
                if (deadline is not None and time.monotonic() >= deadline) or time.monotonic() - lost_since > window:
                    raise
                time.sleep(0.1)
                continue
            lost_since = None
            state = info["state"]
            if state == "SUCCESS":
                return _decode(info["result"], info["result_format"])
            if state in ("FAILURE", "REVOKED"):
                raise self._exception(info)
            if left is not None and time.monotonic() >= deadline:
                raise exceptions.GetTimeoutError(
                    f"durable task {self.id} is {state} after {timeout}s (attempt {info['attempt']})")

    def _exception(self, info):
        """What get() raises for a task that ended FAILURE or REVOKED. A failure raises the task's
        own exception, as a remote task's does (a TaskError too, with the remote traceback): from
        its pickle when the head returns it in `result`, else rebuilt from the traceback
        (serialization.load_exception); a plain TaskError when neither can be had."""
        if info["state"] == "REVOKED":
            return exceptions.TaskCancelledError(f"durable task {self.id} was revoked: {info['error']}")
        return serialization.load_exception(
            info["result"], f"durable task {self.id} ({info['function']}) failed:\n{info['error']}")

    def revoke(self, terminate=True):
        """Revokes the task: one that has not started never runs (REVOKED). A running one is
        stopped (as corral.cancel) if `terminate`; else it runs on to its end, as Celery's revoke()
        without terminate=True. Returns its state after."""
        if not terminate and self._fetch()["state"] == "STARTED":
            # The head's revoke stops a running task, so it is asked only for one not running yet.
            # Not exact: a task that starts between these two calls is stopped, and a running one
            # is not kept from its retries (that needs a revoke that spares the run, in the head).
            return "STARTED"
        return _runtime.get_client().durable_cancel(self.id)["state"]

    def __repr__(self):
        return f"TaskResult({self.id!r})"


def tasks(state="", queue="", limit=100):
    """Stored durable tasks as dicts (id, function, state, attempt, queue, error, times), oldest
    first; state: "failure", "pending", ... or "" for any."""
    return _runtime.get_client().durable_list(state, queue, limit)


def result(task_id):
    """The state and result of a durable task, by the id submit() returned."""
    return TaskResult(task_id)


def import_task_modules():
    """In a worker: imports the modules named by CORRAL_TASK_MODULES and returns the registered
    function names. A module that fails to import is reported on stderr (the agent's worker log)."""
    import importlib
    import sys
    import traceback
    for module in filter(None, (m.strip() for m in os.environ.get("CORRAL_TASK_MODULES", "").split(","))):
        try:
            _module_mtimes[module] = _mtime(importlib.import_module(module))
        except Exception:
            print(f"corral worker: cannot import task module {module!r}; its tasks cannot run here:\n"
                  + traceback.format_exc(), file=sys.stderr, flush=True)
    return sorted(registry)


_module_mtimes = {}  # task module -> its file's mtime when this worker (re)loaded it


def _mtime(module):
    try:
        return os.stat(module.__file__).st_mtime_ns
    except (AttributeError, TypeError, OSError):
        return None


def _current(name):
    """The registered function `name` ("module:qualname"), after reloading its module if the file
    changed since this worker loaded it: an upgraded module takes effect at the next run, without
    restarting workers. A module that no longer imports keeps its old code, all of it (reported on
    stderr). Only the task module is reloaded, not modules it imports, and functions it gains
    become submittable when its agent restarts (workers announce their functions when they start)."""
    import importlib
    import sys
    entry = registry.get(name)
    if entry is None:
        return None  # never a module of a name this worker did not register
    module_name = entry[1]
    module = sys.modules.get(module_name)
    if module is not None:
        mtime = _mtime(module)
        seen = _module_mtimes.setdefault(module_name, mtime)
        if mtime is not None and mtime != seen:
            _module_mtimes[module_name] = mtime
            before = dict(registry)
            try:
                importlib.reload(module)  # its decorators register the new functions
            except Exception:
                registry.clear()
                registry.update(before)  # decorators that ran before the error must not mix in new code
                import traceback
                print(f"corral worker: task module {module_name!r} changed but does not import; running its "
                      f"previous code:\n" + traceback.format_exc(), file=sys.stderr, flush=True)
    entry = registry.get(name)
    return entry[0] if entry else None


class NoRetry(Exception):
    """Raised by a registered wrapper: the task failed with `cause` and must not be retried."""

    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause


class RetryIn(Exception):
    """Raised by a registered wrapper: retry (while retries remain) after `countdown` seconds
    (-1: after the task's backoff). `cause`, if given, is the exception the run ended with: the
    task's error while it waits to retry, and what it fails with when no retries remain."""

    def __init__(self, message, countdown, cause=None):
        super().__init__(message)
        self.countdown = float(countdown)
        self.cause = cause


def _encode(value, fmt):
    return json.dumps(value).encode() if fmt == "json" else pickle.dumps(value, protocol=5)


def _decode(data, fmt):
    return json.loads(data) if fmt == "json" else pickle.loads(data)


def run(name, args, args_format, parents=(), link=""):
    """In a worker: runs a registered durable function; returns its result encoded in args_format.
    A canvas step gets its parents' results first: "chain" the one result, "chord" a list."""
    fn = _current(name)
    if fn is None:
        raise exceptions.CorralError(f"durable task function {name} is not registered in this worker")
    a, k = _decode(args, args_format)
    a, k = list(a), dict(k or {})
    if link == "chain":
        a.insert(0, _decode(parents[0][1], parents[0][0]))
    elif link == "chord":
        a.insert(0, [_decode(data, fmt) for fmt, data in parents])
    return _encode(_runtime.call_task(fn, a, k), args_format)


# ---- schedules ----

_OPS = {"list": 0, "add": 1, "pause": 2, "resume": 3, "remove": 4, "run_now": 5, "history": 6}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _every_seconds(every):
    if isinstance(every, (int, float)) and every > 0:
        return int(every)
    if isinstance(every, datetime.timedelta) and every.total_seconds() >= 1:
        return int(every.total_seconds())
    if isinstance(every, str) and every[:-1].isdigit() and every[-1:] in _UNITS and int(every[:-1]) > 0:
        return int(every[:-1]) * _UNITS[every[-1]]
    raise exceptions.InvalidArgumentError(f"every={every!r}: give seconds, a timedelta, or '30s', '15m', '2h', '1d'")


def _op(op, name="", limit=20, **spec):
    return _runtime.get_client().schedule_op(_OPS[op], dict(spec, name=name), limit)


def schedule(name, fn, *, cron=None, every=None, tz="UTC", args=(), kwargs=None, misfire="run_once",
             queue="default", max_retries=0):
    """Creates (or replaces) a schedule that submits ``fn`` (a ``@corral.task`` function, or its name
    "module:qualname") at every slot of ``cron`` (five fields, in zone ``tz``) or ``every`` (seconds,
    a timedelta, or "15m"). Each slot fires once, also across head restarts; ``misfire`` says what
    slots missed while the head was down do: "run_once" (the latest, once), "skip", "run_all".
    A malformed cron or unknown zone fails here. Returns the schedule as a dict (with next_slot_ns)."""
    function = fn.name if isinstance(fn, DurableFunction) else function_name(str(fn))
    if (cron is None) == (every is None):
        raise exceptions.InvalidArgumentError("give cron or every, not both")
    spec = {"function": function, "args": pickle.dumps((tuple(args), dict(kwargs or {})), protocol=5),
            "args_format": "pickle", "tz": tz, "misfire": misfire, "queue": queue, "max_retries": max_retries}
    if cron is not None:
        spec["cron"] = cron
    else:
        spec["every_s"] = _every_seconds(every)
    return _op("add", name, **spec)["schedules"][0]


def schedules():
    """Every schedule, as dicts: name, function, cron/every_s, tz, misfire, paused, last and next slot."""
    return _op("list")["schedules"]


def pause_schedule(name):
    return _op("pause", name)["schedules"][0]


def resume_schedule(name):
    """Takes the schedule up again; slots that passed while it was paused are skipped."""
    return _op("resume", name)["schedules"][0]


def remove_schedule(name):
    _op("remove", name)


def run_schedule_now(name):
    """Submits the schedule's task now, outside its slots; returns the task id."""
    return _op("run_now", name)["task_id"]


def schedule_history(name, limit=20):
    """The latest fires, newest first: slot_ns, task_id, fired_ns and the task's state."""
    return _op("history", name, limit=limit)["fires"]


def _rate_per_s(rate):
    """Celery's rate strings: "10/s", "100/m", "5/h"; or a number per second."""
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate >= 0:
        return float(rate)
    if isinstance(rate, str):
        try:
            return _core.parse_rate(rate)  # the same parser as `corral queue set --rate`
        except exceptions.InvalidArgumentError:
            pass
    raise exceptions.InvalidArgumentError(
        f"rate_limit={rate!r}: give e.g. '10/s', '100/m', '5/h' or a number per second")


def _pairs(value, what):
    """{"gpu": "true"} or "gpu=true" -> "gpu=true" (the head parses it)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    raise exceptions.InvalidArgumentError(f"{what}={value!r}: give a dict or 'key=value,key=value'")


def queue(name, *, weight=None, concurrency=None, rate_limit=None, labels=None, resources=None):
    """Sets a queue's settings (only those given; stored by the head, kept across restarts) and
    returns the queue as a dict. Queues exist from their first task on; settings are optional:

    - ``weight``: its share when queues compete for the cluster (weights 3 and 1: starts 3:1).
    - ``concurrency``: at most this many of its tasks run at once, cluster-wide (0: no limit).
    - ``rate_limit``: at most this many starts, cluster-wide: "10/s", "100/m", "5/h" (0: no limit).
    - ``labels``: its tasks run only on nodes with these labels, e.g. {"gpu": "true"}.
    - ``resources``: each of its tasks asks for these, e.g. {"GPU": 1} (CPU defaults to 1).

    Within a queue, higher ``priority`` runs first; equal priorities run in the order they became due."""
    spec = {"name": name}
    if weight is not None:
        spec["weight"] = float(weight)
    if concurrency is not None:
        spec["concurrency"] = int(concurrency)
    if rate_limit is not None:
        spec["rate_per_s"] = _rate_per_s(rate_limit)
    if labels is not None:
        spec["labels"] = _pairs(labels, "labels")
    if resources is not None:
        spec["resources"] = _pairs(resources, "resources")
    return _runtime.get_client().queue_op(True, spec)[0]


def queues():
    """Every queue, as dicts: name, weight, concurrency, rate_per_s, labels, resources, and what it
    holds now: ready (due, waiting for a slot), waiting (eta, retry backoff, parents), running, and
    the runs that succeeded/failed since the head started (a retried task's failed runs count);
    slots: how many of its tasks the nodes can run at once."""
    return _runtime.get_client().queue_op(False, {})
