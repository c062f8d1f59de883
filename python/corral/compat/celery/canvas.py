"""celery.canvas for the facade: signatures, chain, group, chord, map/starmap/chunks.

Built on Corral's canvas (``corral.canvas``): a chain, group or chord is stored whole, in one
commit, and run by the head, also after the process that sent it exits. ``link=`` callbacks are
stored with their task the same way; ``link_error=`` errbacks run in the worker of the task that
failed (as Celery runs them), or are sent as tasks when they take only the task id.
"""
import itertools

from ... import canvas as _core
from . import task as _task
from .exceptions import NotRegistered


class _RemoteTask:
    """A task known here only by its Celery name: it can be sent, not called."""

    def __init__(self, name, app=None):
        self.name = name
        self.app = app

    def __call__(self, *args, **kwargs):
        raise NotRegistered(f"task {self.name!r} is not defined in this process: send it (delay, apply_async, "
                            f"app.send_task) and a worker that has it runs it")

    def _canvas_spec(self, args, kwargs, options):
        from .result import _ensure_connected
        _ensure_connected()
        return _task._spec(self.name, None, args, kwargs, options)

    def _result(self, task_id):
        from .result import AsyncResult
        return AsyncResult(task_id, task_name=self.name)

    def _get_app(self):
        from .app import current_app
        return self.app or current_app()

    def apply(self, *args, **kwargs):
        self()

    def __repr__(self):
        return f"<task by name: {self.name}>"


def _eager(app):
    return app is not None and bool(app.conf.get("task_always_eager"))


class Signature(_core.Signature):
    """One task with some of its arguments and options (``add.s(2)``, ``signature("tasks.add")``).
    Called, it runs here; ``delay``/``apply_async`` send it; ``|`` builds a chain."""

    def __init__(self, task=None, args=None, kwargs=None, options=None, type=None, subtask_type=None,
                 immutable=False, app=None, **ex):
        if isinstance(task, dict):
            d = task
            task, args, kwargs = d.get("task"), d.get("args"), d.get("kwargs")
            options, immutable = d.get("options"), d.get("immutable", False)
        if isinstance(task, str):
            task = _task._by_name(task)
        super().__init__(type or task, tuple(args or ()), dict(kwargs or {}), dict(options or {}, **ex),
                         immutable=immutable)
        self.subtask_type = subtask_type

    @property
    def name(self):
        return getattr(self.type, "name", None)

    @property
    def task(self):  # Celery's sig.task is the task's name
        return self.name

    @property
    def id(self):
        return self.options.get("task_id")

    def __getitem__(self, key):
        return self.as_dict()[key]

    def get(self, key, default=None):
        return self.as_dict().get(key, default)

    def as_dict(self):
        """The signature as Celery serializes it: task name, args, kwargs, options, immutable."""
        options = {k: v for k, v in self.options.items() if k not in ("link", "link_error")}
        return {"task": self.name, "args": list(self.args), "kwargs": dict(self.kwargs), "options": options,
                "subtask_type": self.subtask_type, "immutable": self.immutable}

    def clone(self, args=None, kwargs=None, **options):
        return super().clone(args or (), kwargs, **options)

    def set(self, immutable=None, **options):
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable):
        self.immutable = immutable

    def link_error(self, errback):
        """Runs `errback` when this task fails: called in the failed task's worker with
        (request, exc, traceback) if it takes them, else sent as a task with the failed task's id."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback):
        """link_error() that returns this signature (to chain calls), as Celery's."""
        self.link_error(errback)
        return self

    def freeze(self, _id=None, **kwargs):
        """Gives the task its id now; returns its result."""
        self.options.setdefault("task_id", _id or _new_id())
        return self.type._result(self.options["task_id"])

    def apply_async(self, args=None, kwargs=None, route_name=None, **options):
        """Sends the task: `args` before its own (unless immutable), `kwargs` added; options as
        Task.apply_async."""
        if _eager(self.type._get_app()):
            return self.apply(args, kwargs, **options)
        s = self.clone(args, kwargs)
        _task.check_arguments(s.type, s.args, s.kwargs)
        result = super().apply_async(tuple(args or ()), kwargs, **options)
        ignore = options.get("ignore_result", s.options.get("ignore_result"))
        if ignore is None and hasattr(s.type, "_option"):
            ignore = s.type._option("ignore_result")
        if ignore:
            result.ignored = True  # as Celery: get() returns None at once
        return result

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def apply(self, args=None, kwargs=None, **options):
        """Runs it here, now; an EagerResult."""
        s = self.clone(args, kwargs, **options)
        opts = {k: v for k, v in s.options.items() if k in ("task_id", "link", "link_error", "throw")}
        return s.type.apply(s.args, s.kwargs, **opts)

    def __invert__(self):
        return self.apply_async().get()

    def __or__(self, other):
        if isinstance(other, chain):
            return chain(self, *other.steps)
        return chain(self, other)

    def map(self, it):
        return _xfunc("celery.map", self, it)

    def starmap(self, it):
        return _xfunc("celery.starmap", self, it)

    def chunks(self, it, n):
        return chunks(self, it, n)

    def __repr__(self):
        args = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"{self.name}({args}){'!' if self.immutable else ''}"

    def __eq__(self, other):
        return isinstance(other, Signature) and other.as_dict() == self.as_dict()

    __hash__ = None


def signature(varies, *args, **kwargs):
    """Celery's signature(): from a task name ("tasks.add", also one not defined here), a task, a
    dict (as serialized), or a signature (returned as it is)."""
    if isinstance(varies, Signature):
        return varies
    if isinstance(varies, _core.Signature):
        return Signature(varies.type, varies.args, varies.kwargs, varies.options, immutable=varies.immutable)
    return Signature(varies, *args, **kwargs)


subtask = signature
maybe_signature = signature


def _unroll(step):
    """Celery 5 runs a group of one in a chain as that one task."""
    if isinstance(step, _core.group) and len(step.tasks) == 1 and isinstance(step.tasks[0], _core.Signature):
        return step.tasks[0]
    return step


class chain(_core.chain):
    """Each step gets the previous step's result first (unless immutable); a group in a chain
    becomes a chord. The result is the last step's, with ``.parent`` the one before."""

    def __init__(self, *tasks, **options):
        super().__init__(*tasks)
        steps = []
        for step in self.steps:  # a chain in a chain is its steps
            step = signature(step) if isinstance(step, dict) else step
            steps += step.steps if isinstance(step, _core.chain) else [_unroll(step)]
        self.steps = steps
        self.options = options

    @property
    def tasks(self):
        return tuple(self.steps)

    def apply_async(self, args=None, kwargs=None, **options):
        """Sends every step: `args` and `kwargs` go to the first; `link` to the last; other
        options to every step that does not set its own."""
        if not self.steps:
            return None
        options = dict(self.options, **options)
        steps = list(self.steps)
        first = steps[0]
        if args or kwargs:
            if not isinstance(first, _core.Signature):
                raise _core.exceptions.InvalidArgumentError(
                    "arguments for a chain go to its first task; this chain starts with a group or chord")
            steps[0] = first.clone(args, kwargs)
        link = options.pop("link", None)
        if link is not None:
            last = steps[-1]
            if not isinstance(last, _core.Signature):
                raise _core.exceptions.InvalidArgumentError("link= on a chain needs a task as its last step")
            steps[-1] = last.clone()
            for cb in link if isinstance(link, (list, tuple)) else [link]:
                steps[-1].link(cb)
        app = _first_app(steps)
        if _eager(app):
            return _eager_chain(steps)
        return _core._apply(_core.chain(*steps), (), options)

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def apply(self, args=None, kwargs=None, **options):
        """Runs the steps here, now, one after the other; the last step's EagerResult."""
        steps = list(self.steps)
        if args or kwargs:
            steps[0] = steps[0].clone(args, kwargs)
        return _eager_chain(steps)

    def __or__(self, other):
        if isinstance(other, chain):
            return chain(*self.steps, *other.steps)
        return chain(*self.steps, other)

    def link_error(self, errback):
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback):
        self.link_error(errback)
        return self

    def __repr__(self):
        return " | ".join(repr(s) for s in self.steps)


class group(_core.group):
    """Tasks that run in parallel; ``apply_async()`` gives a GroupResult (``get()``: their
    values in order)."""

    def __init__(self, *tasks, **options):
        super().__init__(*tasks)
        self.tasks = [signature(t) if isinstance(t, dict) else t for t in self.tasks]
        self.options = options

    def _group_result(self, results):
        from .result import GroupResult
        return GroupResult(self.options.get("group_id") or _new_id(), results)

    def apply_async(self, args=None, kwargs=None, **options):
        """Sends every member (`args` and `kwargs` go to each); a GroupResult whose id each
        member sees as ``request.group``."""
        options = dict(self.options, **options)
        group_id = options.pop("group_id", None) or _new_id()
        tasks = [t.clone(args, kwargs, group_id=group_id) if isinstance(t, _core.Signature) else t
                 for t in self.tasks]
        if _eager(_first_app(tasks)):
            from .result import GroupResult
            return GroupResult(group_id, [t.apply() for t in tasks])
        return _core._apply(group(*tasks, group_id=group_id), (), options)

    def __or__(self, other):
        return chord(self, other)

    def apply(self, args=None, kwargs=None, **options):
        """Runs every member here, now; a GroupResult of EagerResults."""
        from .result import GroupResult
        return GroupResult(_new_id(), [t.clone(args, kwargs).apply() if isinstance(t, _core.Signature) else t.apply()
                                       for t in self.tasks])

    def skew(self, start=1.0, stop=None, step=1.0):
        """Gives the members growing countdowns: start, start + step, ... (at most `stop`)."""
        for i, t in enumerate(self.tasks):
            countdown = start + i * step
            t.set(countdown=min(countdown, stop) if stop is not None else countdown)
        return self

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def link_error(self, errback):
        for t in self.tasks:
            t.link_error(errback)
        return errback

    def on_error(self, errback):
        self.link_error(errback)
        return self

    def __len__(self):
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __repr__(self):
        return f"group({list(self.tasks)!r})"


class chord(_core.chord):
    """A group whose values, as a list in order, go to the callback once all succeeded; if a
    member fails, the callback fails with ChordError naming it."""

    def __init__(self, header, body=None, **options):
        super().__init__(header if isinstance(header, group) else group(*_core._steps((header,))), body)
        self.options = options

    def apply_async(self, args=None, kwargs=None, **options):
        if self.body is None:
            raise _core.exceptions.InvalidArgumentError("chord needs a callback: chord(header, body) or "
                                                        "chord(header)(body)")
        header = self.header
        if args or kwargs:
            header = group(*[t.clone(args, kwargs) for t in header.tasks])
        if _eager(_first_app(header.tasks)):
            return chord(header, self.body).apply()
        return _core._apply(_core.chain(header, self.body), (), dict(self.options, **options))

    def __call__(self, body=None, **options):
        if body is not None:
            self.body = body
        return self.apply_async(**options)

    def apply(self, args=None, kwargs=None, **options):
        """Runs the header here, then the callback with its values; the callback's EagerResult."""
        values = [r.get() for r in group(*self.header.tasks).apply(args, kwargs).results]
        return self.body.clone((values,)).apply()

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)


def _first_app(steps):
    for s in steps:
        t = getattr(s, "type", None)
        if t is not None and hasattr(t, "_get_app"):
            return t._get_app()
        for inner in getattr(s, "tasks", None) or getattr(s, "steps", None) or ():
            app = _first_app([inner])
            if app is not None:
                return app
    from .app import current_app
    return current_app()


def _eager_chain(steps):
    """Runs a chain's steps here: each gets the previous one's value (a group's: the list)."""
    result = None
    for s in steps:
        if result is None:
            result = s.apply()
            continue
        value = result.get() if not hasattr(result, "results") else [r.get() for r in result.results]
        if isinstance(s, _core.Signature):
            result = s.apply() if s.immutable else s.clone((value,)).apply()
        elif isinstance(s, _core.group):
            result = s.apply((value,))
        else:
            result = s.apply((value,))
    return result


def _xfunc(name, sig, it):
    return Signature(name, (sig.name, [tuple(i) if name == "celery.starmap" else i for i in it]), {},
                     dict(sig.options), immutable=True)


class chunks:
    """``add.chunks(zip(xs, ys), 10)``: the calls split into tasks of 10 each (run one after the
    other in a worker); ``apply_async().get()`` gives a list of lists of values."""

    def __init__(self, task, it, n):
        self.task = signature(task)
        self.it = list(it)
        self.n = int(n)

    def group(self):
        it = iter(self.it)
        parts = iter(lambda: list(itertools.islice(it, self.n)), [])
        return group(*[self.task.starmap(part) for part in parts])

    def apply_async(self, args=None, kwargs=None, **options):
        return self.group().apply_async(**options)

    def __call__(self, **options):
        return self.apply_async(**options)

    def delay(self):
        return self.apply_async()


xmap = Signature.map
xstarmap = Signature.starmap


def _new_id():
    import uuid
    return str(uuid.uuid4())
