"""Exceptions raised by Corral.

Every exception Corral raises derives from :class:`CorralError`. A task that raised re-raises in
the caller as a :class:`TaskError` that is *also* an instance of the original exception's class,
so ``except ValueError`` still catches a remote ``ValueError``.
"""


class CorralError(RuntimeError):
    """Base class of Corral's errors."""


class TaskError(CorralError):
    """The task's function raised. ``cause`` is the original exception; ``remote_traceback`` its traceback."""

    def __init__(self, message="", cause=None, remote_traceback=""):
        super().__init__(message)
        self.cause = cause
        self.remote_traceback = remote_traceback

    def as_instanceof_cause(self):
        """This error, which already is an instance of the original exception's class (Ray's name)."""
        return self


class WorkerCrashedError(CorralError):
    """The worker process running the task died (segfault, os._exit, killed) and no retries were left."""


class NodeDiedError(CorralError):
    """The node running the task went away and no retries were left."""


class TaskCancelledError(CorralError):
    """The task was cancelled with corral.cancel()."""


class ObjectLostError(CorralError):
    """The object is not known to the head any more (freed, or its owner exited)."""


class GetTimeoutError(CorralError, TimeoutError):
    """get() or wait() ran past its timeout."""


class ConnectionLostError(CorralError, ConnectionError):
    """The head cannot be reached, or the connection to it was lost."""


class AuthenticationError(CorralError, PermissionError):
    """The head refused this client (bad token, incompatible version)."""


class ValueTooLargeError(CorralError, ValueError):
    """A value is larger than one message may carry."""


class ObjectStoreFullError(CorralError, MemoryError):
    """A put() would take the head's object memory past its limit (``corral start --head --object-memory``):
    drop references to values no longer needed, or raise the limit."""


class OutOfMemoryError(CorralError, MemoryError):
    """The node stopped the task for its memory: its worker's own resident memory went past the
    task's ``memory=`` request, or the machine ran low on memory and it was the most recently
    started task there. The message names the task, the node and the figures. The task is retried
    like one whose worker died (``max_retries``) before this is raised."""


class InvalidArgumentError(CorralError, ValueError):
    """A call was given an argument it cannot use."""


class SerializationError(CorralError, TypeError):
    """An argument, result or exception could not be pickled or unpickled."""


class NotFoundError(CorralError, LookupError):
    """The head knows no such thing (an actor name, an id)."""


class ActorNotFoundError(NotFoundError, ValueError):
    """corral.get_actor(): no live actor has that name in that namespace."""


class ActorDiedError(CorralError):
    """The actor the call was made on is dead, or died while the call ran and the call had no
    retries left (``max_task_retries``). The message says which actor, on which node, and why: killed
    with corral.kill(), its worker's exit code or signal, out of memory, its node lost, its creator
    exited, or its restarts used up. (A call on an actor whose constructor raised raises that
    exception instead.)"""


# Error kinds on the wire (proto ErrorKind) -> exception class.
KIND_TASK_ERROR = 1
KIND_CANCELLED = 4
KIND_OBJECT_LOST = 5
KIND_SERIALIZATION = 6
KIND_RUNTIME = 7
KIND_TASK_ERROR_FINAL = 9  # a durable task's exception that must not be retried
KIND_OBJECT_STORE_FULL = 10
KIND_OUT_OF_MEMORY = 11
_BY_KIND = {
    2: WorkerCrashedError,
    3: NodeDiedError,
    4: TaskCancelledError,
    5: ObjectLostError,
    6: SerializationError,
    7: CorralError,
    10: ObjectStoreFullError,
    11: OutOfMemoryError,
    13: ActorDiedError,
}


def for_kind(kind):
    return _BY_KIND.get(kind, CorralError)


class GangError(CorralError):
    """A gang cannot do what was asked: it was removed (or its creator exited), or it did not become
    ready in time (the message says what it waits for)."""


class GangMemberError(GangError):
    """A member of a gang's run failed, so the whole run did: the other members were stopped.
    ``member`` (its rank), ``node_id`` and ``hostname`` (where it ran) and ``cause`` (the error of
    that member: a TaskError with its exception, WorkerCrashedError with the exit code or signal,
    NodeDiedError) say which and why."""

    def __init__(self, message="", member=None, node_id="", hostname="", cause=None):
        super().__init__(message)
        self.member = member
        self.node_id = node_id
        self.hostname = hostname
        self.cause = cause

    def __reduce__(self):
        return (type(self), (str(self), self.member, self.node_id, self.hostname, self.cause))


class SoftTimeLimitExceeded(CorralError):
    """Raised inside a durable task that ran past its soft_time_limit: clean up and return or raise."""
