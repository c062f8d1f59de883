"""celery.app.task.Task for the facade: what ``@app.task`` makes, its options, its request, retries.

A task is an instance of a class made from ``base`` (``Task`` unless given) with the function as
``run``, as in Celery; its options are class attributes, and the app's settings
(``task_annotations``, ``task_time_limit``, ...) apply when it is sent, so settings made after the
decorator still count.

In a worker, ``_in_worker`` runs it under Celery's rules: ``self.retry()`` (and ``autoretry_for``)
asks the head for another run after the countdown Celery would wait; any other exception fails
the task at once (the head stores it; its errbacks run here); the hooks ``before_start``,
``on_success``, ``on_failure``, ``on_retry`` and ``after_return`` run in the worker.
"""
import inspect
import os
import random
import socket
import sys
import threading
import traceback as _traceback
import uuid

from ... import _runtime, durable, exceptions
from . import states
from .exceptions import Ignore, MaxRetriesExceededError, Reject, Retry, SoftTimeLimitExceeded

META = "__celery__"  # the keyword argument that carries a call's Celery options to the worker

# Every task this process defined, by its Celery name (every app's: shared tasks included).
registry = {}

_local = threading.local()


class Context:
    """``self.request``: what Celery tells a task about its call."""

    def __init__(self, **fields):
        self.id = None
        self.task = None
        self.args = ()
        self.kwargs = {}
        self.retries = 0
        self.called_directly = True
        self.is_eager = False
        self.hostname = None
        self.delivery_info = {}
        self.eta = None
        self.expires = None
        self.group = None
        self.root_id = None
        self.parent_id = None
        self.errbacks = None
        self.callbacks = None
        self.time_limit = None
        self.soft_time_limit = None
        self.__dict__.update(fields)
        self.timelimit = (self.time_limit, self.soft_time_limit)

    def get(self, key, default=None):
        return getattr(self, key, default)

    def __repr__(self):
        return f"<Context: {self.__dict__}>"


def current_request():
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


class _Pushed:
    def __init__(self, request):
        self.request = request

    def __enter__(self):
        _local.__dict__.setdefault("stack", []).append(self.request)

    def __exit__(self, *exc):
        _local.stack.pop()


def backoff_countdown(factor, retries, maximum, full_jitter):
    """Celery's get_exponential_backoff_interval: factor x 2^retries, at most `maximum`; with full
    jitter a whole number of seconds drawn from 0 to that."""
    countdown = min(maximum, factor * (2 ** retries))
    if full_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0, countdown)


class Task:
    """A Celery task: ``run`` is the function; the class attributes are its options."""

    name = None
    app = None
    typing = True
    max_retries = 3
    default_retry_delay = 180
    retry_backoff = False
    retry_backoff_max = 600
    retry_jitter = True
    retry_kwargs = {}
    autoretry_for = ()
    dont_autoretry_for = ()
    rate_limit = None
    ignore_result = None
    time_limit = None
    soft_time_limit = None
    serializer = None
    queue = None
    priority = None
    expires = None
    acks_late = None
    track_started = None
    reject_on_worker_lost = None
    store_errors_even_if_ignored = False
    abstract = True
    throws = ()
    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = exceptions.ConnectionLostError
    Request = Context

    def run(self, *args, **kwargs):
        raise NotImplementedError(f"task {self.name} has no run()")

    def __getattribute__(self, name):
        # task_annotations apply to the task's attributes, as Celery applies them.
        if name in _ANNOTATABLE:
            app = object.__getattribute__(self, "app")
            if app is not None:
                value = app._annotation(object.__getattribute__(self, "name"), name)
                if value is not None:
                    return value
        return object.__getattribute__(self, name)

    # ---- the call here ----

    def __call__(self, *args, **kwargs):
        """Runs the task in this process, as a function (``request.called_directly`` is True)."""
        with _Pushed(Context(task=self.name, args=args, kwargs=kwargs)):
            return self.run(*args, **kwargs)

    @property
    def request(self):
        """The call being run: id, args, kwargs, retries, hostname, delivery_info, called_directly..."""
        return current_request() or Context()

    # ---- options, with the app's settings ----

    def _option(self, name):
        """A task option: annotations (task_annotations) win over the task's own, then the app's
        task_* setting, then Celery's default."""
        app = self._get_app()
        value = app._annotation(self.name, name) if app is not None else None
        if value is not None:
            return value
        value = getattr(self, name, None)
        if value is None and app is not None and name in _SETTINGS:
            value = app.conf.get(_SETTINGS[name])
        return value

    def _get_app(self):
        if self.app is not None:
            return self.app
        from .app import current_app
        return current_app()

    # ---- sending ----

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def apply_async(self, args=None, kwargs=None, task_id=None, link=None, link_error=None, **options):
        """Stores the task for a worker; returns its AsyncResult. Options: countdown, eta, expires,
        queue, priority, time_limit, soft_time_limit, ignore_result, serializer, link, link_error,
        headers and Celery's transport options (routing_key, exchange, ...: no use here)."""
        from .canvas import Signature
        sig = Signature(self, args or (), kwargs or {}, dict(options, task_id=task_id))
        if link is not None:
            for cb in link if isinstance(link, (list, tuple)) else [link]:
                sig.link(cb)
        if link_error is not None:
            for eb in link_error if isinstance(link_error, (list, tuple)) else [link_error]:
                sig.link_error(eb)
        return sig.apply_async()

    def apply(self, args=None, kwargs=None, task_id=None, link=None, link_error=None, throw=None, **options):
        """Runs the task here, now, under the rules a worker applies (retries run at once, hooks
        and errbacks run); an EagerResult. ``throw`` (default: task_eager_propagates) re-raises
        its exception here."""
        from .result import EagerResult
        task_id = task_id or str(uuid.uuid4())
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        errbacks = link_error if isinstance(link_error, (list, tuple)) else [link_error] if link_error else []
        retries = 0
        while True:
            request = Context(id=task_id, task=self.name, args=args, kwargs=kwargs, retries=retries,
                              called_directly=False, is_eager=True, hostname=_hostname(), root_id=task_id,
                              delivery_info={"is_eager": True}, errbacks=[_as_dict(e) for e in errbacks],
                              _ended=None)
            try:
                with _Pushed(request):
                    value = self._run_in_worker(request, args, kwargs, {"ignore_result": False})
            except Retry:
                retries += 1
                continue
            except durable.NoRetry as e:
                app = self._get_app()
                propagate = throw if throw is not None else bool(app and app.conf.get("task_eager_propagates"))
                if propagate:
                    raise e.cause from None
                return EagerResult(task_id, e.cause, states.FAILURE,
                                   "".join(_traceback.format_exception(e.cause)), self.name)
            if link is not None:
                for cb in link if isinstance(link, (list, tuple)) else [link]:
                    cb.clone((value,)).apply()
            return EagerResult(task_id, value, states.SUCCESS, None, self.name)

    def s(self, *args, **kwargs):
        from .canvas import Signature
        return Signature(self, args, kwargs)

    def si(self, *args, **kwargs):
        from .canvas import Signature
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args=None, *starargs, **starkwargs):
        """Celery's Task.signature(args, kwargs, options) or .signature((2, 2), countdown=10)."""
        from .canvas import Signature
        return Signature(self, args, *starargs, **starkwargs)

    subtask = signature

    def map(self, it):
        return self.s().map(it)

    def starmap(self, it):
        return self.s().starmap(it)

    def chunks(self, it, n):
        return self.s().chunks(it, n)

    def AsyncResult(self, task_id, **kwargs):
        from .result import AsyncResult
        return AsyncResult(task_id, task_name=self.name)

    def _result(self, task_id):
        from .result import AsyncResult
        return AsyncResult(task_id, task_name=self.name)

    def _canvas_spec(self, args, kwargs, options):
        """The durable task spec of one call (canvas.Signature builds it)."""
        from .result import _ensure_connected
        _ensure_connected()
        return _spec(self.name, self, args, kwargs, options)

    # ---- in a running task ----

    def retry(self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None,
              **options):
        """Runs the task again, after `countdown` seconds (or at `eta`; else after
        ``default_retry_delay``), while retries remain (`max_retries` if given here, else the
        task's; None: no limit). When none remain, raises `exc`, or MaxRetriesExceededError.
        Raises Retry (``raise self.retry(...)`` reads as Celery's)."""
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise Retry("Task can be retried", None)
        if args is not None or kwargs is not None:
            raise exceptions.InvalidArgumentError(
                "retry(args=..., kwargs=...) is not supported by corral.compat.celery: a retry runs the stored "
                "task again with its arguments; send a new task instead")
        limit = self._option("max_retries") if max_retries is None else max_retries
        if limit is not None and request.retries + 1 > limit:
            if exc is not None:
                raise exc
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}",
                task_args=request.args, task_kwargs=request.kwargs)
        if eta is None and countdown is None:
            countdown = self._option("default_retry_delay")
        retry = Retry(exc=exc, when=eta if eta is not None else countdown, is_eager=request.is_eager)
        if throw:
            raise retry
        return retry

    def update_state(self, task_id=None, state=None, meta=None, **kwargs):
        """Sets this task's state (a name of your own, e.g. "PROGRESS") and meta while it runs:
        what ``AsyncResult.state``/``.info`` and ``get(on_message=...)`` show. Only the running
        task's own state can be set."""
        request = self.request
        if request.called_directly or request.is_eager:
            return
        if task_id is not None and task_id != request.id:
            raise exceptions.InvalidArgumentError(
                f"update_state(task_id={task_id!r}): a task sets only its own state ({request.id})")
        if state in (states.SUCCESS, states.FAILURE):
            request._ended = (state, meta)  # the task's end, if it then raises Ignore (as in Celery)
            return
        run_id = request._run_id
        fmt = request._format
        data = durable._encode(meta, fmt)
        _runtime.get_client().durable_progress(run_id, str(state), data, fmt)

    def send_event(self, *args, **kwargs):
        pass  # Celery's monitoring events: Corral's dashboard reads the head instead

    def replace(self, sig):
        raise NotImplementedError("Task.replace() is not supported by corral.compat.celery: return "
                                  "sig.apply_async().id, or build the canvas before sending")

    def add_to_chord(self, sig, lazy=False):
        raise NotImplementedError("Task.add_to_chord() is not supported by corral.compat.celery")

    # ---- hooks: override in a base class ----

    def before_start(self, task_id, args, kwargs):
        pass

    def on_success(self, retval, task_id, args, kwargs):
        pass

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        pass

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        pass

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        pass

    def __repr__(self):
        return f"<@task: {self.name}>"

    def __reduce__(self):
        return _by_name, (self.name,)

    # ---- in a worker ----

    def _in_worker(self, *args, **kwargs):
        """What a worker runs for this task (registered by its name with the durable queue)."""
        meta = kwargs.pop(META, None) or {}
        ctx = _runtime.current_task
        run_id = ctx.task_id.decode() if isinstance(ctx.task_id, bytes) else str(ctx.task_id)
        task_id, _, attempt = run_id.rpartition("#")
        request = Context(id=task_id, task=self.name, args=args, kwargs=kwargs, retries=int(attempt or 0),
                          called_directly=False, hostname=_hostname(), eta=meta.get("eta"),
                          expires=meta.get("expires"), errbacks=meta.get("link_error"), group=meta.get("group"),
                          root_id=meta.get("root_id") or task_id, parent_id=meta.get("parent_id"),
                          delivery_info={"exchange": "", "routing_key": meta.get("queue", ""),
                                         "priority": meta.get("priority"), "redelivered": False},
                          time_limit=meta.get("time_limit"), soft_time_limit=meta.get("soft_time_limit"),
                          _run_id=run_id, _format=meta.get("format", "json"), _ended=None)
        with _Pushed(request):
            if self._option("track_started"):  # Celery's STARTED meta: who runs it
                self.update_state(state=states.STARTED, meta={"pid": os.getpid(), "hostname": request.hostname})
            return self._run_in_worker(request, args, kwargs, meta)

    def _run_in_worker(self, request, args, kwargs, meta):
        try:
            self.before_start(request.id, args, kwargs)
            try:
                value = self.run(*args, **kwargs)
            except (Retry, Ignore, Reject):
                raise
            except tuple(self._option("dont_autoretry_for") or ()):
                raise
            except tuple(self._option("autoretry_for") or ()) as e:
                raise self._autoretry(e)
        except Retry as r:  # (Celery calls no after_return for a retry, an Ignore or a Reject)
            self.on_retry(r.exc or r, request.id, args, kwargs, _Einfo(r.exc or r))
            raise
        except Ignore as e:
            return _ended_by_hand(request, e)
        except Reject as e:
            if e.requeue:
                raise Retry(exc=e, when=0) from e
            raise durable.NoRetry(e) from e
        except Exception as e:  # noqa: BLE001 - Celery fails the task with it, without retrying
            einfo = _Einfo(e)
            _run_errbacks(request, e, einfo)
            self.on_failure(e, request.id, args, kwargs, einfo)
            self.after_return(states.FAILURE, e, request.id, args, kwargs, einfo)
            raise durable.NoRetry(e) from e
        self.on_success(value, request.id, args, kwargs)
        self.after_return(states.SUCCESS, value, request.id, args, kwargs, None)
        ignore = meta["ignore_result"] if "ignore_result" in meta else self._option("ignore_result")
        return None if ignore else value

    def _autoretry(self, exc):
        """Celery's autoretry: retry_kwargs, and with retry_backoff its exponential countdown."""
        retry_kwargs = dict(self._option("retry_kwargs") or {})
        backoff = self._option("retry_backoff")
        if backoff:
            retry_kwargs["countdown"] = backoff_countdown(int(max(1.0, float(backoff))), self.request.retries,
                                                          self._option("retry_backoff_max"),
                                                          self._option("retry_jitter"))
        return self.retry(exc=exc, throw=False, **retry_kwargs)


_ANNOTATABLE = frozenset({"max_retries", "default_retry_delay", "retry_backoff", "retry_backoff_max", "retry_jitter",
                          "retry_kwargs", "autoretry_for", "dont_autoretry_for", "rate_limit", "ignore_result",
                          "time_limit", "soft_time_limit", "serializer", "queue", "priority", "expires", "acks_late",
                          "track_started"})

# Task option -> the app setting that gives it when the task does not.
_SETTINGS = {"time_limit": "task_time_limit", "soft_time_limit": "task_soft_time_limit",
             "ignore_result": "task_ignore_result", "serializer": "task_serializer",
             "priority": "task_default_priority", "acks_late": "task_acks_late",
             "track_started": "task_track_started", "default_retry_delay": "task_default_retry_delay"}


def _ended_by_hand(request, ignore):
    """``raise Ignore()`` after update_state(SUCCESS or FAILURE): the task ends as it said. Any
    other Ignore ends it as SUCCESS with no value (the head has no state that is never final)."""
    state, meta = request._ended or (states.SUCCESS, None)
    if state == states.FAILURE:
        if isinstance(meta, BaseException):
            raise durable.NoRetry(meta)
        if isinstance(meta, dict) and "exc_type" in meta:
            import builtins
            cls = getattr(builtins, str(meta["exc_type"]), None)
            message = meta.get("exc_message", ())
            args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
            if isinstance(cls, type) and issubclass(cls, Exception):
                raise durable.NoRetry(cls(*args))
        raise durable.NoRetry(exceptions.CorralError(f"task {request.id} failed: {meta!r}"))
    return meta


def check_arguments(task, args, kwargs):
    """Celery's `typing`: arguments that the task's function cannot take are a TypeError at sending."""
    if not getattr(task, "typing", False) or not hasattr(task, "run"):
        return
    try:
        params = inspect.signature(task.run)
    except (TypeError, ValueError):
        return
    kwargs = {k: v for k, v in kwargs.items() if k != META}
    try:
        params.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{task.name}{params}: {e}") from None


def _hostname():
    return f"celery@{socket.gethostname()}"


class _Einfo:
    """Celery's ExceptionInfo: the exception, its type and its formatted traceback."""

    def __init__(self, exc):
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))

    def __str__(self):
        return self.traceback


def _run_errbacks(request, exc, einfo):
    """Celery's errbacks: one taking (request, exc, traceback) runs here, in this worker; one taking
    the task id only is sent as a task."""
    from .canvas import signature
    for entry in request.errbacks or ():
        try:
            sig = signature(entry)
            task = registry.get(sig.name)
            fn = getattr(task, "run", None)
            if task is not None and _takes_three(fn):
                sig(request, exc, einfo.traceback)
            else:
                sig.clone((request.id,)).apply_async()
        except Exception:  # an errback's failure must not hide the task's own
            print(f"corral: errback {entry!r} of task {request.id} failed:\n{_traceback.format_exc()}",
                  file=sys.stderr, flush=True)


def _takes_three(fn):
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_POSITIONAL for p in params) or len(params) > 1


def _when(options):
    """Celery's request.eta and request.expires: ISO times (a countdown or seconds become times)."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    out = {}
    for key, value in (("eta", options.get("eta")), ("expires", options.get("expires"))):
        if value is None and key == "eta" and options.get("countdown") is not None:
            value = float(options["countdown"])
        if isinstance(value, (int, float)):
            value = now + datetime.timedelta(seconds=value)
        if isinstance(value, datetime.datetime):
            out[key] = value.isoformat()
        elif value is not None:
            out[key] = str(value)
    return out


def _as_dict(sig):
    from .canvas import signature
    return signature(sig).as_dict()


def _by_name(name, app=None):
    task = registry.get(name)
    if task is None:
        from .canvas import _RemoteTask
        return _RemoteTask(name, app)
    return task


def _spec(name, task, args, kwargs, options):
    """The durable task spec of a call of the Celery task `name` (`task`: its object here, or None
    when only the name is known). Retries are the task's business (max_retries -1: the head runs
    it again only when a run asks), so a task sent by name retries as its code says."""
    from .app import current_app
    app = (task._get_app() if task is not None else None) or current_app()
    opt = (lambda key: task._option(key)) if task is not None else (lambda key: app._annotation(name, key)
                                                                    if app is not None else None)
    fmt = options.get("serializer") or opt("serializer") or (app.conf.get("task_serializer") if app else None) \
        or "json"  # Celery's default
    if fmt not in ("json", "pickle"):
        raise exceptions.InvalidArgumentError(f"serializer={fmt!r}: Corral encodes arguments as 'json' or 'pickle'")
    if opt("rate_limit"):
        raise exceptions.InvalidArgumentError(
            f"{name}: rate_limit={opt('rate_limit')!r} is per worker in Celery; Corral limits a queue, cluster-wide: "
            f"route the task to its own queue and call corral.queue(name, rate_limit={opt('rate_limit')!r}) once")
    queue = options.get("queue") or opt("queue") or (app._route(name, args, kwargs, options, task) if app else None) \
        or (app.conf.get("task_default_queue") if app else None)
    meta = {"format": fmt}
    for key in ("queue", "group", "root_id", "parent_id"):
        value = queue if key == "queue" else options.get({"group": "group_id"}.get(key, key))
        if value:
            meta[key] = value
    for key in ("time_limit", "soft_time_limit", "priority"):
        value = options.get(key) or opt(key)
        if value:
            meta[key] = value
    if options.get("ignore_result") is not None:  # the call's own choice wins over the task's
        meta["ignore_result"] = bool(options["ignore_result"])
    errbacks = options.get("link_error")
    if errbacks:
        meta["link_error"] = [_as_dict(e) for e in (errbacks if isinstance(errbacks, (list, tuple)) else [errbacks])]
    meta.update(_when(options))
    given = {
        "queue": queue,
        "priority": options.get("priority") if options.get("priority") is not None else opt("priority"),
        "countdown": options.get("countdown"),
        "eta": options.get("eta"),
        "expires": options.get("expires") if options.get("expires") is not None else opt("expires"),
        "time_limit": options.get("time_limit") or opt("time_limit"),
        "soft_time_limit": options.get("soft_time_limit") or opt("soft_time_limit"),
        "args_format": fmt,
        "max_retries": -1,
    }
    spec = durable.make_spec(durable.function_name(name), {k: v for k, v in given.items() if v is not None},
                             tuple(args), dict(kwargs, **{META: meta}))
    if options.get("task_id"):
        spec["id"] = str(options["task_id"])
    return spec
