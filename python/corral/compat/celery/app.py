"""The Celery app for the facade: ``Celery(...)``, its settings (``conf``), ``@app.task``,
``send_task``, beat schedules, ``control``.

Settings that take effect: task_routes, task_annotations, task_default_queue,
task_time_limit, task_soft_time_limit, task_always_eager (with task_eager_propagates),
task_ignore_result, task_serializer ("json", Celery's default, or "pickle"), task_default_priority,
timezone, beat_schedule (with each entry's options). Broker, backend and worker settings are
accepted and have no use: Corral is the broker and the backend.
"""
import fnmatch
import importlib
import re
import threading

from ... import durable, exceptions
from . import task as _task
from .schedules import crontab, every_seconds

_apps = []
_current = threading.local()


def current_app():
    """The app tasks without one belong to: the last Celery() made (a default one if none)."""
    app = getattr(_current, "app", None)
    if app is None:
        app = _apps[-1] if _apps else Celery("default")
    return app


class Signal:
    """A Celery signal such as ``app.on_after_configure``: ``@signal.connect`` functions are
    called with ``sender`` and keyword arguments when it fires."""

    def __init__(self, name):
        self.name = name
        self.receivers = []

    def connect(self, fn=None, sender=None, weak=False, **kwargs):
        if fn is None:
            return lambda f: self.connect(f, sender=sender)
        self.receivers.append(fn)
        return fn

    def send(self, sender, **kwargs):
        return [(fn, fn(sender=sender, **kwargs)) for fn in list(self.receivers)]


class Settings(dict):
    """``app.conf``: settings by key or attribute."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def update(self, other=None, **kwargs):
        if other is not None:
            super().update(other)
        super().update(kwargs)

    def find_value_for_key(self, name, namespace="celery"):
        return self[name]


_DEFAULTS = {"task_default_queue": None, "task_routes": None, "task_annotations": None, "beat_schedule": {},
             "timezone": None, "enable_utc": True, "task_always_eager": False, "task_eager_propagates": False,
             "task_serializer": None, "result_serializer": None, "accept_content": None, "task_time_limit": None,
             "task_soft_time_limit": None, "task_ignore_result": False, "task_default_priority": None}


class _Inspect:
    """``app.control.inspect()``: what runs and waits, cluster-wide (Corral has one queue, in the head)."""

    def __init__(self, destination=None, timeout=1.0, **kwargs):
        self.destination = destination

    def _tasks(self, state):
        from .result import _ensure_connected
        _ensure_connected()
        return durable.tasks(state=state, limit=1000)

    @staticmethod
    def _entry(t):
        args, kwargs = [], {}
        if t["args"] and t["args_format"] == "json":  # small JSON arguments come with the listing
            try:
                args, kwargs = durable._decode(t["args"], "json")
                kwargs = {k: v for k, v in dict(kwargs or {}).items() if k != _task.META}
            except (ValueError, TypeError):
                args, kwargs = [], {}
        name = t["function"].replace(":", ".")
        if name.startswith("celery."):
            name = name[len("celery."):]
        return {"id": t["id"], "name": name, "args": list(args), "kwargs": kwargs, "type": name,
                "hostname": "corral", "acknowledged": True,
                "delivery_info": {"routing_key": t["queue"], "exchange": "", "redelivered": t["attempt"] > 0},
                "worker_pid": None, "time_start": None}

    def active(self, safe=None):
        """{"corral": [the tasks running now]} (one entry: the cluster)."""
        return {"corral": [self._entry(t) for t in self._tasks("started")]}

    def scheduled(self, safe=None):
        """{"corral": [tasks waiting for their eta, countdown or retry]}."""
        import datetime
        import time
        now = time.time_ns()
        out = []
        for t in self._tasks("pending") + self._tasks("retry"):
            if t["eta_ns"] > now:
                eta = datetime.datetime.fromtimestamp(t["eta_ns"] / 1e9, datetime.timezone.utc).isoformat()
                out.append({"eta": eta, "priority": 0, "request": self._entry(t)})
        return {"corral": out}

    def reserved(self, safe=None):
        """{"corral": [tasks stored, due and not started]}."""
        import time
        now = time.time_ns()
        return {"corral": [self._entry(t) for t in self._tasks("pending") if t["eta_ns"] <= now]}

    def registered(self, *taskinfoitems):
        return {"corral": sorted(_task.registry)}

    def ping(self):
        return {"corral": {"ok": "pong"}}


class Control:
    """``app.control``: revoke() and inspect()."""

    def __init__(self, app):
        self.app = app

    def revoke(self, task_id, destination=None, terminate=False, signal=None, **kwargs):
        """Revokes one task id or a list of them: not started, they never run; running, they are
        stopped only with terminate=True."""
        from .result import AsyncResult
        for one in [task_id] if isinstance(task_id, str) else task_id:
            AsyncResult(one).revoke(terminate=terminate)

    def terminate(self, task_id, signal="SIGTERM", **kwargs):
        return self.revoke(task_id, terminate=True)

    def inspect(self, destination=None, timeout=1.0, **kwargs):
        return _Inspect(destination, timeout)

    def ping(self, destination=None, timeout=1.0, **kwargs):
        return [{"corral": {"ok": "pong"}}]

    def purge(self):
        raise NotImplementedError("app.control.purge() is not supported: revoke the tasks (corral tasks --state "
                                  "pending lists them)")


class Celery:
    """The app: ``Celery("tasks", broker=...)``. The broker and backend are accepted and not used:
    tasks are Corral durable tasks (the connection: corral.init() or CORRAL_ADDRESS, made on first use)."""

    Task = _task.Task

    def __init__(self, main=None, broker=None, backend=None, include=None, config_source=None, set_as_current=True,
                 task_cls=None, **kwargs):
        self.main = main
        self.conf = Settings(_DEFAULTS, beat_schedule={})
        self.conf.update({k: v for k, v in kwargs.items() if k in _DEFAULTS or k.startswith(("task_", "beat_"))})
        self.tasks = {}
        self.control = Control(self)
        self.on_after_configure = Signal("on_after_configure")
        self.on_after_finalize = Signal("on_after_finalize")
        self.on_configure = Signal("on_configure")
        self._configured = False
        self._base = _symbol(task_cls) if task_cls is not None else _task.Task
        self.Task = self._base
        if config_source is not None:
            self.config_from_object(config_source)
        _apps.append(self)
        if set_as_current:
            _current.app = self

    def __repr__(self):
        return f"<Celery {self.main}>"

    # ---- configuration ----

    def config_from_object(self, obj, silent=False, force=False, namespace=None):
        """Settings from a module (or its name, "celeryconfig") or an object: its public attributes;
        with ``namespace="CELERY"`` only CELERY_-prefixed ones, lowercased without the prefix."""
        if isinstance(obj, str):
            try:
                obj = importlib.import_module(obj)
            except ImportError:
                if silent:
                    return False
                raise
        prefix = f"{namespace}_" if namespace else ""
        for key in dir(obj):
            if key.startswith("_") or not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if namespace:
                name = name.lower()
            self.conf[name] = getattr(obj, key)
        return True

    def config_from_envvar(self, variable_name, silent=False, force=False):
        import os
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return False
            raise exceptions.InvalidArgumentError(f"{variable_name} is not set: it should name a config module")
        return self.config_from_object(module, silent=silent)

    def autodiscover_tasks(self, packages=None, related_name="tasks", force=False):
        for package in (packages() if callable(packages) else packages) or ():
            try:
                importlib.import_module(f"{package}.{related_name}")
            except ModuleNotFoundError:
                pass

    def finalize(self, auto=False):
        """Fires on_after_configure once (Celery fires it when the settings are first read)."""
        if not self._configured:
            self._configured = True
            self.on_after_configure.send(sender=self, source=self.conf)
            self.on_after_finalize.send(sender=self)

    def _annotation(self, task_name, option):
        """The value task_annotations gives `option` of task `task_name` (None if none)."""
        annotations = self.conf.get("task_annotations")
        if not annotations:
            return None
        for a in annotations if isinstance(annotations, (list, tuple)) else [annotations]:
            if isinstance(a, dict):
                for key in (task_name, "*"):
                    if key in a and option in a[key]:
                        return a[key][option]
            elif hasattr(a, "annotate"):
                found = a.annotate(_task.registry.get(task_name)) or {}
                if option in found:
                    return found[option]
        return None

    def _route(self, name, args, kwargs, options, task=None):
        """The queue task_routes gives `name` (None if no route matches)."""
        routes = self.conf.get("task_routes")
        if not routes:
            return None
        for router in routes if isinstance(routes, (list, tuple)) else [routes]:
            found = None
            if callable(router) and not isinstance(router, dict):
                found = router(name, args, kwargs, options, task=task)
            elif isinstance(router, dict):
                for pattern, route in router.items():
                    matches = pattern.match(name) if isinstance(pattern, re.Pattern) else fnmatch.fnmatchcase(
                        name, pattern)
                    if matches:
                        found = route
                        break
            if isinstance(found, str):
                return found
            if isinstance(found, dict) and found.get("queue"):
                q = found["queue"]
                return q if isinstance(q, str) else getattr(q, "name", str(q))
        return None

    # ---- tasks ----

    def task(self, *args, **opts):
        """``@app.task`` or ``@app.task(bind=True, name=..., base=..., max_retries=..., ...)``."""
        if len(args) == 1 and callable(args[0]) and not opts:
            return self._make(args[0])
        return lambda fn: self._make(fn, **opts)

    def _make(self, fn, name=None, base=None, bind=False, **options):
        base = base or self._base
        if not (isinstance(base, type) and issubclass(base, _task.Task)):
            raise exceptions.InvalidArgumentError(f"base={base!r} must be a Task subclass (app.Task)")
        for key in ("rate_limit",):
            if options.get(key):
                raise exceptions.InvalidArgumentError(
                    "rate_limit on a task is per worker in Celery; Corral limits a queue, cluster-wide: route the task "
                    f"to its own queue and call corral.queue(name, rate_limit={options[key]!r}) once")
        unknown = [k for k in options if not hasattr(_task.Task, k) and k not in _ACCEPTED]
        if unknown:
            raise exceptions.InvalidArgumentError(
                f"@app.task option(s) {unknown} are not Task options corral.compat.celery knows")
        name = name or self.gen_task_name(fn.__name__, fn.__module__)
        attrs = {"name": name, "app": self, "run": fn if bind else staticmethod(fn), "__doc__": fn.__doc__,
                 "__module__": fn.__module__, "__wrapped__": fn, "_bind": bind}
        attrs.update({k: v for k, v in options.items() if k not in _ACCEPTED})
        if "autoretry_for" in options:
            attrs["autoretry_for"] = tuple(options["autoretry_for"])
        task = type(fn.__name__, (base,), attrs)()
        self.tasks[name] = task
        _task.registry[name] = task
        durable.register(durable.function_name(name), task._in_worker, fn.__module__)
        return task

    def gen_task_name(self, name, module):
        """The name a task gets when @app.task is not given one: "module.function" (a script's
        tasks are named after the app's main module); override it to name tasks your way."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def send_task(self, name, args=None, kwargs=None, countdown=None, eta=None, task_id=None, link=None,
                  link_error=None, **options):
        """Sends the task `name` (as @app.task named it), also from a process that does not define
        it: the head keeps it until a worker that has it runs it."""
        from .canvas import Signature
        task = _task._by_name(name, self)
        sig = Signature(task, args or (), kwargs or {}, dict(options, countdown=countdown, eta=eta, task_id=task_id))
        for cb in (link if isinstance(link, (list, tuple)) else [link]) if link is not None else ():
            sig.link(cb)
        for eb in (link_error if isinstance(link_error, (list, tuple)) else [link_error]) if link_error else ():
            sig.link_error(eb)
        from ... import canvas as _core
        return _core.Signature.apply_async(sig)  # as Celery's: sent, also under task_always_eager

    def signature(self, *args, **kwargs):
        from .canvas import signature
        return signature(*args, **kwargs)

    def AsyncResult(self, task_id, **kwargs):
        from .result import AsyncResult
        return AsyncResult(task_id, **kwargs)

    def GroupResult(self, group_id, results=None):
        from .result import GroupResult
        return GroupResult(group_id, results)

    # ---- beat ----

    def add_periodic_task(self, schedule, sig, args=(), kwargs=(), name=None, **opts):
        """Adds a beat_schedule entry for signature `sig` (as Celery: applied with the rest)."""
        from .canvas import signature
        sig = signature(sig)
        key = name or repr(sig)
        self.conf.beat_schedule[key] = {"task": sig.name, "schedule": schedule, "args": tuple(args) + sig.args,
                                        "kwargs": dict(dict(kwargs), **sig.kwargs),
                                        "options": dict(sig.options, **opts)}
        return key

    def apply_beat_schedule(self):
        """Makes (or updates) a Corral schedule in the head for every beat_schedule entry, after
        on_after_configure fired (add_periodic_task calls made there count). Run it once, from any
        process: the head fires each slot once, so there is no separate beat process to keep single."""
        from .result import _ensure_connected
        self.finalize()
        _ensure_connected()
        made = []
        for name, entry in self.conf.get("beat_schedule", {}).items():
            task_name = entry["task"]
            sched = entry["schedule"]
            options = dict(entry.get("options") or {})
            task = _task.registry.get(task_name)
            queue = options.pop("queue", None) or (task._option("queue") if task is not None else None) \
                or self._route(task_name, (), {}, options, task) or self.conf.get("task_default_queue") or "default"
            unknown = set(options) - {"priority", "expires", "routing_key", "exchange"}
            if unknown:
                raise exceptions.InvalidArgumentError(
                    f"beat_schedule {name}: options {sorted(unknown)} cannot apply to a Corral schedule (it takes "
                    "queue; priority, expires, routing_key and exchange are accepted and unused)")
            meta = {"format": "pickle", "queue": queue}
            kw = dict(args=tuple(entry.get("args", ())), kwargs=dict(entry.get("kwargs") or {}, **{_task.META: meta}),
                      queue=queue, max_retries=-1)
            if isinstance(sched, crontab):
                if sched._orig[2] != "*" and sched._orig[4] != "*":
                    raise exceptions.InvalidArgumentError(
                        f"beat_schedule {name}: {sched!r} gives both day_of_month and day_of_week; Celery runs it on "
                        "days that match both, cron (and Corral) on days that match either: give one of them, "
                        "and check the other inside the task")
                kw.update(cron=sched.expression, tz=sched.tz or self.conf.get("timezone") or "UTC")
            elif every_seconds(sched) is not None:
                kw.update(every=max(1, int(every_seconds(sched))))
            else:
                raise exceptions.InvalidArgumentError(f"beat_schedule {name}: schedule must be crontab(), schedule(), "
                                                      f"a timedelta or seconds, not {sched!r}")
            made.append(durable.schedule(name, durable.function_name(task_name), **kw))
        return made


_ACCEPTED = {"shared", "lazy", "filter", "trail", "send_events", "store_errors_even_if_ignored",
             "acks_on_failure_or_timeout", "pydantic", "rate_limit"}


def _symbol(value):
    """A class given as itself or as "module:Name" / "module.Name"."""
    if isinstance(value, str):
        module, _, attr = value.rpartition(":") if ":" in value else value.rpartition(".")
        value = getattr(importlib.import_module(module), attr)
    return value


def shared_task(*args, **opts):
    """``@shared_task``: a task of whichever app is current (the last Celery() made)."""
    def make(fn):
        return current_app()._make(fn, **opts)
    if len(args) == 1 and callable(args[0]) and not opts:
        return make(args[0])
    return make


def _xfunc(task_name, items, star):
    task = _task.registry.get(task_name)
    if task is None:
        raise exceptions.CorralError(f"task {task_name!r} is not defined in this worker (its module is not in this "
                                     "agent's --tasks)")
    return [task(*item) if star else task(item) for item in items]


def _builtin(name, fn):
    app = Celery("celery", set_as_current=False)
    _apps.remove(app)
    return app._make(fn, name=name)


_builtin("celery.map", lambda task, it: _xfunc(task, it, False))
_builtin("celery.starmap", lambda task, it: _xfunc(task, it, True))
