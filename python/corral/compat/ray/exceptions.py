"""``ray.exceptions``: Ray's names for the errors Corral raises.

A task that raised re-raises in ``get`` as a :class:`RayTaskError` (Corral's TaskError) that is
also an instance of the task's own exception class, so ``except ValueError`` and
``except RayTaskError`` both catch it; ``as_instanceof_cause()`` returns it as is.
"""
from corral.exceptions import (ActorDiedError, CorralError, GetTimeoutError, NodeDiedError, ObjectLostError,
                               ObjectStoreFullError, OutOfMemoryError, SerializationError, TaskCancelledError,
                               TaskError, WorkerCrashedError, ActorNotFoundError)

RayError = CorralError
RayTaskError = TaskError
RayActorError = ActorDiedError          # Ray's base of actor errors; Corral raises ActorDiedError
# Corral tells these apart in the message only: the object is gone (freed, its owner exited, its node lost).
OwnerDiedError = ObjectLostError
ObjectReconstructionFailedError = ObjectLostError
ObjectFetchTimedOutError = GetTimeoutError
RaySerializationError = SerializationError


# Ray's names for what Corral does not raise: classes of their own, so catching them catches nothing else.
class RaySystemError(CorralError):
    """Not raised by Corral (its own failures are CorralError with a message)."""


class ActorUnavailableError(CorralError):
    """Not raised by Corral: a call on an actor that is restarting waits for it (or fails with
    ActorDiedError once it cannot restart)."""


class TaskUnschedulableError(CorralError):
    """Not raised by Corral: a task no node can run waits, and the driver is told why."""


class ActorUnschedulableError(CorralError):
    """Not raised by Corral: an actor no node can host waits, and the driver is told why."""


class RuntimeEnvSetupError(CorralError):
    """Not raised by Corral (runtime_env's env_vars need no setup); here for code that catches it."""


class PendingCallsLimitExceeded(CorralError):
    """Not raised by Corral (no max_pending_calls); here for code that catches it."""


__all__ = ["RayError", "RaySystemError", "RayTaskError", "RayActorError", "ActorDiedError", "ActorUnavailableError",
           "TaskCancelledError", "GetTimeoutError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
           "OwnerDiedError", "ObjectReconstructionFailedError", "ObjectFetchTimedOutError", "ObjectStoreFullError",
           "OutOfMemoryError", "TaskUnschedulableError", "ActorUnschedulableError", "RaySerializationError",
           "RuntimeEnvSetupError", "PendingCallsLimitExceeded", "ActorNotFoundError"]
