"""celery.exceptions for the facade: the names Celery code raises and catches.

    from corral.compat.celery.exceptions import Retry, Ignore, Reject, SoftTimeLimitExceeded, ...

``SoftTimeLimitExceeded`` is Corral's own (raised in a task past its soft limit), so catching
either name works; ``TimeoutError`` (from ``get(timeout=...)``) is also Corral's GetTimeoutError
and the builtin TimeoutError.
"""
from ... import durable
from ... import exceptions as _corral

SoftTimeLimitExceeded = _corral.SoftTimeLimitExceeded


class CeleryError(Exception):
    """Base of the facade's own errors (as Celery's)."""


class TaskPredicate(CeleryError):
    """Base of the exceptions a task raises to say what happens to it (Retry, Ignore, Reject)."""


class Retry(TaskPredicate, durable.RetryIn):
    """Raised by ``self.retry()``: the task runs again after `when` seconds (or at `when`, a
    datetime). `exc`: why (the task's error while it waits)."""

    def __init__(self, message=None, exc=None, when=None, is_eager=False, sig=None, **kwargs):
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        countdown = _seconds_until(when)
        durable.RetryIn.__init__(self, message or (f"Retry in {countdown:g}s" + (f": {exc!r}" if exc else "")),
                                 countdown, exc)

    def humanize(self):
        return f"in {self.when}s" if isinstance(self.when, (int, float)) else f"at {self.when}"

    def __reduce__(self):
        return type(self), (self.message, self.exc, self.when)


def _seconds_until(when):
    import datetime
    import time
    if when is None:
        return 0.0
    if isinstance(when, datetime.datetime):
        return max(0.0, (durable._wall_ns(when, "eta") - time.time_ns()) / 1e9)
    return max(0.0, float(when))


class Ignore(TaskPredicate):
    """Raised by a task: its state stays as the task left it (no result is stored)."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message; `requeue=True` runs it again."""

    def __init__(self, reason=None, requeue=False):
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class TimeLimitExceeded(CeleryError):
    """The task ran past its hard time limit: its worker was stopped, the task failed."""


class MaxRetriesExceededError(CeleryError):
    """``self.retry()`` without `exc` when no retries remain."""

    def __init__(self, *args, task_args=None, task_kwargs=None, **kwargs):
        self.task_args = task_args
        self.task_kwargs = task_kwargs
        super().__init__(*args)


class TaskRevokedError(CeleryError):
    """The task was revoked (or expired) before it finished."""


class ChordError(CeleryError):
    """A chord's callback did not run: a task of its header failed."""


class TimeoutError(CeleryError, _corral.GetTimeoutError):  # noqa: A001 - Celery's name
    """get() ran past its timeout."""


class NotRegistered(CeleryError, KeyError):
    """No task of that name in this process (call it by name with send_task instead)."""


class ImproperlyConfigured(CeleryError, ValueError):
    """A setting or option Corral cannot apply."""


class QueueNotFound(CeleryError, KeyError):
    """A route names a queue that cannot exist."""


OperationalError = _corral.ConnectionLostError  # kombu's: the broker (here the head) cannot be reached


__all__ = ["CeleryError", "TaskPredicate", "Retry", "Ignore", "Reject", "SoftTimeLimitExceeded", "TimeLimitExceeded",
           "MaxRetriesExceededError", "TaskRevokedError", "ChordError", "TimeoutError", "NotRegistered",
           "ImproperlyConfigured", "QueueNotFound", "OperationalError"]
