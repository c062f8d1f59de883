"""celery.result for the facade: AsyncResult, GroupResult, EagerResult.

A result reads its task's state from the head by id (any process, also after the submitter
exited). ``get()`` raises what Celery raises: the task's own exception (its class, its message; the
remote traceback is in ``.traceback``), TaskRevokedError for a revoked or expired task, ChordError
for a chord callback whose header failed, TimeLimitExceeded for a task stopped at its hard limit.
"""
import json
import pickle
import re
import time

from ... import _runtime, durable, exceptions, serialization
from ...canvas import GroupResult as _CoreGroupResult
from . import states
from .exceptions import ChordError, TaskRevokedError, TimeLimitExceeded, TimeoutError

_CHORD_HEADER = re.compile(r"its chord header task (\S+) ended FAILURE")


def _ensure_connected():
    if _runtime.client is None and not _runtime.worker_link:
        import os
        import corral
        corral.init(address=os.environ.get("CORRAL_ADDRESS") or "auto")


def _decode(data, fmt):
    return json.loads(data) if fmt == "json" else pickle.loads(data)


def exception_of(info):
    """The exception a task that ended FAILURE or REVOKED gives, as Celery gives it."""
    task_id, error = info["id"], info["error"] or ""
    if info["state"] == states.REVOKED:
        return TaskRevokedError(error if error and error != "revoked" else f"task {task_id} was revoked")
    if error.startswith("TimeLimitExceeded"):
        return TimeLimitExceeded(error.partition(": ")[2] or error)
    raised = serialization.load_exception(info["result"] if info["result_format"] == "pickle" else b"",
                                          f"{info['function']} [{task_id}] failed:\n{error}")
    exc = getattr(raised, "cause", None) or raised
    chord = _CHORD_HEADER.search(error)
    if chord:
        return ChordError(f"Dependency {chord.group(1)} raised {exc!r}")
    if exc is not raised and isinstance(exc, BaseException):
        try:
            exc.add_note(f"(raised by task {task_id} on a worker; its traceback is in the result's .traceback)")
        except Exception:
            pass
    return exc


class AsyncResult:
    """A task's state and result by id, as Celery's; connects on first use."""

    def __init__(self, id, backend=None, task_name=None, app=None, parent=None):
        self.id = str(id)
        self.task_id = self.id
        self.name = task_name
        self.parent = parent
        self._children = []
        self.ignored = False
        self._info = None

    @property
    def children(self):
        """The results of the callbacks this task's link= started: known once it succeeded."""
        if not self._children or self.state != states.SUCCESS:
            return []
        return list(self._children)

    @children.setter
    def children(self, value):
        self._children = list(value or [])

    def _add_child(self, child):
        self._children.append(child)

    def _fetch(self, wait_s=0.0, on_change=False, seen_changes=0):
        if self._info is not None and self._info["state"] in states.READY_STATES:
            return self._info
        _ensure_connected()
        self._info = durable.TaskResult(self.id)._fetch(wait_s, on_change, seen_changes)
        return self._info

    @property
    def state(self):
        """PENDING (also for an unknown id), STARTED, RETRY, SUCCESS, FAILURE, REVOKED, or the
        task's own (update_state)."""
        return self._fetch()["state"]

    status = state

    def ready(self):
        return self.state in states.READY_STATES

    def successful(self):
        return self.state == states.SUCCESS

    def failed(self):
        return self.state == states.FAILURE

    @property
    def result(self):
        """The value (SUCCESS); the exception (FAILURE, REVOKED, RETRY); the task's meta (a state
        of its own); else None."""
        return self._value(self._fetch())

    info = result

    def _value(self, info):
        state = info["state"]
        if state == states.SUCCESS:
            return _decode(info["result"], info["result_format"])
        if state in (states.FAILURE, states.REVOKED):
            return exception_of(info)
        if state == states.RETRY:
            return exception_of(dict(info, state=states.FAILURE)) if info["result"] or info["error"] else None
        if info["result"] and state != states.PENDING:  # a state of the task's own (STARTED with track_started)
            return _decode(info["result"], info["result_format"])
        return None

    @property
    def traceback(self):
        info = self._fetch()
        return (info["error"] or None) if info["state"] in (states.FAILURE, states.RETRY) else None

    @property
    def date_done(self):
        info = self._fetch()
        import datetime
        return datetime.datetime.fromtimestamp(info["finished_ns"] / 1e9, datetime.timezone.utc) \
            if info["finished_ns"] else None

    @property
    def retries(self):
        return self._fetch()["attempt"]

    def get(self, timeout=None, propagate=True, interval=0.5, no_ack=True, follow_parents=True, callback=None,
            on_message=None, on_interval=None, disable_sync_subtasks=True, **kwargs):
        """Waits for the task and returns its value. A failed task raises its exception (returns it
        with ``propagate=False``); TimeoutError after `timeout` seconds. ``on_message(meta)`` is
        called with each state the task reports (``{"status", "result", "task_id"}``)."""
        if self.ignored:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            # With on_message the head answers at each state the task reports, not only at its end.
            wait = 0.0 if seen is None and on_message else 0.0 if on_interval else \
                (10.0 if left is None else min(10.0, left))
            asked = time.monotonic()
            try:
                info = self._fetch(wait_s=wait, on_change=on_message is not None,
                                   seen_changes=self._info["changes"] if seen is not None and self._info else 0)
            except exceptions.ConnectionLostError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
                continue
            state = info["state"]
            if on_message is not None and (state, info["result"]) != seen:
                seen = (state, info["result"])
                on_message({"status": state, "result": self._value(info), "task_id": self.id,
                            "traceback": info["error"] or None, "children": []})
            if state == states.SUCCESS:
                value = _decode(info["result"], info["result_format"])
                if callback is not None:
                    callback(self.id, value)
                return value
            if state in (states.FAILURE, states.REVOKED):
                exc = (follow_parents and self._parent_error()) or exception_of(info)
                if propagate:
                    raise exc
                return exc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            if on_interval is not None:
                on_interval()
            if on_interval is not None or (not info["found"] and time.monotonic() - asked < wait / 2):
                # (an id the head does not know, or not yet: it answers at once; ask again later)
                time.sleep(min(interval, left) if left is not None else interval)

    wait = get

    def _parent_error(self):
        """As Celery's get(follow_parents=True): the exception of a failed task this one came after
        (a chain's earlier step, a chord's header), when this process knows them; else None."""
        node = self.parent
        while node is not None:
            for r in getattr(node, "results", None) or [node]:
                try:
                    info = r._fetch()
                except Exception:
                    continue
                if info.get("state") == states.FAILURE and not str(info.get("error", "")).startswith("its "):
                    return exception_of(info)
            node = getattr(node, "parent", None)
        return None

    def forget(self):
        """Removes the task's state and result from the head: the id reads PENDING afterwards. A
        task that has not finished is refused (revoke it first)."""
        _ensure_connected()
        _runtime.get_client().durable_forget(self.id)
        self._info = None

    def revoke(self, connection=None, terminate=False, signal=None, wait=False, timeout=None):
        """Keeps the task from starting; stops it if running only with `terminate` (as Celery)."""
        _ensure_connected()
        durable.TaskResult(self.id).revoke(terminate=terminate)
        self._info = None
        if wait:
            self.get(timeout=timeout, propagate=False)

    def build_graph(self, intermediate=False, formatter=None):
        raise NotImplementedError("AsyncResult.build_graph() is not supported by corral.compat.celery")

    def collect(self, intermediate=False, **kwargs):
        """(result, value) for this result and its children, depth first."""
        yield self, self.get(**kwargs)
        for child in self.children:
            yield from child.collect(intermediate, **kwargs)

    def as_tuple(self):
        return (self.id, self.parent and self.parent.as_tuple()), None

    def __eq__(self, other):
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return isinstance(other, str) and other == self.id

    def __hash__(self):
        return hash(self.id)

    def __str__(self):
        return self.id

    def __repr__(self):
        return f"<{type(self).__name__}: {self.id}>"

    def __reduce__(self):
        return AsyncResult, (self.id,)


class ResultSet(_CoreGroupResult):
    """Several results: waits for all, counts them, revokes them."""

    def __init__(self, results, app=None, **kwargs):
        super().__init__(results)

    def add(self, result):
        if result not in self.results:
            self.results.append(result)

    def completed_count(self):
        """How many succeeded (as Celery counts)."""
        return sum(r.successful() for r in self.results)

    def failed(self):
        return any(r.failed() for r in self.results)

    def waiting(self):
        return any(not r.ready() for r in self.results)

    def successful(self):
        return all(r.successful() for r in self.results)

    def revoke(self, connection=None, terminate=False, signal=None, wait=False, timeout=None):
        for r in self.results:
            r.revoke(terminate=terminate)

    def get(self, timeout=None, propagate=True, interval=0.5, callback=None, **kwargs):
        """Every member's value, in order (waits for all within `timeout`)."""
        return self.join(timeout=timeout, propagate=propagate, interval=interval, callback=callback, **kwargs)

    def join(self, timeout=None, propagate=True, interval=0.5, callback=None, on_message=None, on_interval=None,
             disable_sync_subtasks=True, **kwargs):
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = r.get(timeout=left, propagate=propagate, interval=interval)
            if callback is not None:
                callback(r.id, value)
            else:
                out.append(value)
        return out if callback is None else None

    join_native = join

    def ready(self):
        return all(r.ready() for r in self.results)

    def __getitem__(self, index):
        return self.results[index]

    def __repr__(self):
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """A group's results (``group(...).apply_async()``), in order; ``id`` names the group."""

    def __init__(self, id=None, results=None, parent=None, **kwargs):
        super().__init__(results or [])
        self.id = id or _new_id()
        self.parent = parent
        self.children = self.results

    def save(self, backend=None):
        """Keeps the group's member ids in the head under the group's id, for restore() from any
        process (until --result-ttl, or delete())."""
        _ensure_connected()
        value = json.dumps([r.id for r in self.results]).encode()
        _runtime.get_client().durable_store(self.id, value, "json")
        return self

    @classmethod
    def restore(cls, id, backend=None, app=None):
        """The GroupResult save() kept under `id`; None if there is none."""
        _ensure_connected()
        info = durable.TaskResult(id)._fetch()
        if info["state"] != states.SUCCESS or info["function"] != "corral:stored":
            return None
        return cls(id, [AsyncResult(i) for i in _decode(info["result"], info["result_format"])])

    def delete(self, backend=None):
        """Removes what save() kept."""
        _ensure_connected()
        _runtime.get_client().durable_forget(self.id)

    def forget(self):
        """Forgets every member's result, and what save() kept."""
        for r in self.results:
            r.forget()
        self.delete()

    def __eq__(self, other):
        return isinstance(other, GroupResult) and other.id == self.id and other.results == self.results

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


class EagerResult(AsyncResult):
    """The result of a task run in this process (``apply()``, or ``task_always_eager``)."""

    def __init__(self, id, ret_value, state, traceback=None, name=None):
        super().__init__(id, task_name=name)
        self._value_ = ret_value
        self._state = state
        self._traceback = traceback

    def _fetch(self, wait_s=0.0):
        return {"id": self.id, "state": self._state, "error": self._traceback or ""}

    @property
    def state(self):
        return self._state

    status = state

    @property
    def result(self):
        return self._value_

    info = result

    @property
    def traceback(self):
        return self._traceback

    def get(self, timeout=None, propagate=True, disable_sync_subtasks=True, **kwargs):
        if self._state == states.SUCCESS:
            return self._value_
        if self._state in states.PROPAGATE_STATES and propagate:
            raise self._value_
        return self._value_

    wait = get

    def revoke(self, *args, **kwargs):
        self._state = states.REVOKED

    def __repr__(self):
        return f"<EagerResult: {self.id}>"


def _new_id():
    import uuid
    return str(uuid.uuid4())
