"""Canvas: chains, groups and chords of durable tasks, stored whole and run by the head.

    corral.chain(fetch.s(url), parse.s(), store.s()).apply_async()          # each step gets the last result
    corral.group(report.s(d) for d in days).apply_async().get(timeout=60)   # in parallel: a list of results
    corral.chord([report.s(d) for d in days], summarize.s()).apply_async()  # that list goes to the callback

Steps are signatures: ``fn.s(*args)`` gets the previous step's result as its first argument,
``fn.si(*args)`` does not (it only runs after it). A canvas is one submission (one commit) whose
tasks name their parents; the head starts each step when its parents succeeded, so a canvas goes
on after the process that submitted it exits, and across head restarts. A step whose parent
failed fails too (a chord's callback when any member failed), with the parent's error.

A step's task is a ``@corral.task`` function or a Celery facade task: anything with
``_canvas_spec(args, kwargs, options)`` (its durable task spec) and ``_result(task_id)`` (what
apply_async returns for it). The Celery facade (``corral.compat.celery``) uses these classes as
its own.
"""
import time

from . import durable, exceptions

_START_OPTIONS = ("countdown", "eta")  # apply to a canvas's first steps only


class GroupResult:
    """The results of a group's tasks, in order; get() returns their values as a list."""

    def __init__(self, results):
        self.results = list(results)

    def get(self, timeout=None, **options):
        """Waits for every member (within `timeout` for all); `options` go to each member's get()
        (the Celery facade's take ``propagate``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(r.get(timeout=left, **options))
        return out

    def ready(self):
        return all(r.ready() for r in self.results)

    def successful(self):
        return all(r.state == "SUCCESS" for r in self.results)

    def __len__(self):
        return len(self.results)

    def __iter__(self):
        return iter(self.results)


class _Canvas:
    """What signatures, chains, groups and chords share: submitted whole (one commit), run by the head."""

    def apply_async(self, args=(), kwargs=None, **options):
        """Stores every task; `args` go to the first steps, `options` (queue, priority, countdown...)
        to every step that does not set its own (countdown and eta to the first steps only)."""
        if kwargs:
            raise exceptions.InvalidArgumentError("a chain, group or chord takes extra positional arguments only")
        return _apply(self, tuple(args), options)

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def __or__(self, other):
        return chain(self, other)


class Signature(_Canvas):
    """One task with some of its arguments (``fn.s(...)``, ``fn.si(...)``): a step of a canvas.
    Immutable: it does not take the previous step's result."""

    def __init__(self, task, args=(), kwargs=None, options=None, immutable=False):
        self.type = task  # the task object (as Celery's Signature.type)
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable

    @property
    def task(self):
        return self.type

    def clone(self, args=(), kwargs=None, **options):
        """A copy with `args` before its own and `kwargs` added (unless immutable), and `options`."""
        if self.immutable:
            args, kwargs = (), None
        merged = {k: list(v) if isinstance(v, list) else v for k, v in self.options.items()}  # (link lists)
        merged.update(options)
        return type(self)(self.type, tuple(args or ()) + self.args, dict(self.kwargs, **(kwargs or {})), merged,
                          immutable=self.immutable)

    def link(self, callback):
        """Runs `callback` (a signature) after this task succeeded, with its result first (unless
        the callback is immutable); the head runs it, stored with this task in one commit."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def set(self, **options):
        self.options.update(options)
        return self

    def apply_async(self, args=(), kwargs=None, **options):
        """Stores this one task; the arguments and options given here add to (and win over) its own."""
        return _apply(self.clone(args, kwargs, **options), (), {})

    def __call__(self, *args, **kwargs):
        """Runs the task here, as a plain function call."""
        s = self.clone(args, kwargs)
        return s.type(*s.args, **s.kwargs)


def _steps(items):
    """chain(a, b) or chain([a, b]); a single canvas (signature, group, chord, chain) is one step."""
    if len(items) == 1 and not isinstance(items[0], _Canvas):
        return list(items[0])
    return list(items)


class chain(_Canvas):
    """Each step gets the previous step's result as its first argument (unless immutable, .si());
    a step after a group gets the list of the group's results. The head runs the steps."""

    def __init__(self, *steps):
        self.steps = _steps(steps)

    def __or__(self, other):
        return chain(*self.steps, other)


class group(_Canvas):
    """Tasks that run in parallel; GroupResult.get() returns their results in order."""

    def __init__(self, *tasks):
        self.tasks = _steps(tasks)

    def __or__(self, other):
        return chord(self, other)

    def _group_result(self, results):
        return GroupResult(results)


class chord(_Canvas):
    """A group whose results, as a list in order, go to the callback when all succeeded (a member
    that fails fails the callback). The head runs the callback, also if this process exits."""

    def __init__(self, header, body=None):
        self.header = header if isinstance(header, group) else group(header)
        self.body = body

    def __call__(self, body=None, *args):
        if body is not None:
            self.body = body
        return self.apply_async(args)

    def apply_async(self, args=(), kwargs=None, **options):
        if self.body is None:
            raise exceptions.InvalidArgumentError("chord needs a callback: chord(header, body) or chord(header)(body)")
        return super().apply_async(args, kwargs, **options)


def _specs(node, parents, mode, args=(), options=None):
    """The durable task specs of a canvas node, linked to `parents` (ids) whose results it gets
    ("chain": one result first, "chord": a list of them). `options` (queue, priority, countdown...)
    apply to every step that does not set its own; countdown and eta only to the first steps.
    Returns (specs, the node's result, its last tasks' ids, the mode their children get)."""
    options = options or {}
    if isinstance(node, Signature):
        if mode == "empty":  # after an empty group: its results, an empty list, come first
            args, mode = ([],) + tuple(args), "after"
        s = node.clone(args)
        opts = {k: v for k, v in options.items() if not (parents and k in _START_OPTIONS)}
        opts.update(s.options)
        if parents:  # Celery's request.parent_id (the Celery facade puts it in its request)
            opts.setdefault("parent_id", parents[0])
        callbacks = opts.pop("link", None) or []
        spec = s.type._canvas_spec(s.args, s.kwargs, opts)
        if parents:
            spec["parents"] = list(parents)
            spec["link"] = "after" if node.immutable else mode
        result = s.type._result(spec["id"])
        specs = [spec]
        for callback in callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]:
            sp, child, _, _ = _specs(callback, [spec["id"]], "chain", (), {})
            specs += sp
            _add_child(result, child)
        return specs, result, [spec["id"]], "chain"
    if isinstance(node, chord):
        return _specs(chain(node.header, node.body), parents, mode, args, options)
    if isinstance(node, group):
        if not node.tasks:  # as Celery: its result is [], and what follows gets [] (after its parents)
            return [], node._group_result([]), parents, "empty"
        specs, results, tails = [], [], []
        for member in node.tasks:
            sp, r, t, _ = _specs(member, parents, mode, args, options)
            specs += sp
            results.append(r)
            tails += t
        return specs, node._group_result(results), tails, "chord"
    if isinstance(node, chain):
        if not node.steps:
            raise exceptions.InvalidArgumentError("an empty chain has no tasks to run")
        specs, result = [], None
        for i, step in enumerate(node.steps):
            previous = result
            sp, result, parents, mode = _specs(step, parents, mode, args if i == 0 else (), options)
            specs += sp
            if i == 0 and "root_id" not in options and len(sp) == 1:
                options = dict(options, root_id=sp[0]["id"])  # Celery's request.root_id
            if previous is not None:
                try:  # Celery's result.parent: the step before
                    result.parent = previous
                except AttributeError:
                    pass
        return specs, result, parents, mode
    raise exceptions.InvalidArgumentError(f"not a signature, chain, group or chord: {node!r}")


def _add_child(result, child):
    """Celery's AsyncResult.children: the results of the callbacks a task's link started."""
    add = getattr(result, "_add_child", None)
    if add is not None:  # (a result type without children, a str id, records nothing)
        add(child)


def _apply(node, args, options):
    """Stores every task of the canvas in one commit, linked in the head: each step runs when its
    parents succeeded, also if this process exits or the head restarts."""
    specs, result, _, _ = _specs(node, [], "chain", args, options)
    if specs:
        durable._submit(specs)
    return result
