"""Corral: run Python functions and tasks across your machines.

    import corral
    corral.init()                      # a local cluster, or corral.init(address="host:7370")

    @corral.remote
    def square(x):
        return x * x

    refs = [square.remote(i) for i in range(10)]
    print(corral.get(refs))
"""
from . import exceptions
from .api import (RemoteFunction, RuntimeContext, cancel, cluster_status, get, init, is_initialized, nodes, put,
                  remote, runtime_context, shutdown, wait)
from .exceptions import (ActorDiedError, ActorNotFoundError, CorralError, GangError, GangMemberError, GetTimeoutError, NodeDiedError, ObjectLostError, ObjectStoreFullError,
                         OutOfMemoryError, TaskCancelledError, TaskError, WorkerCrashedError)
from .durable import (DurableFunction, TaskId, TaskResult, pause_schedule, queue, queues, remove_schedule, result,
                      resume_schedule, run_schedule_now, schedule, schedule_history, schedules, send_task, task,
                      tasks)
from .object_ref import ObjectRef
from .generators import DynamicObjectRefGenerator, ObjectRefGenerator
from .actor import ActorClass, ActorHandle, get_actor, kill, list_actors, method
from .canvas import chain, chord, group  # canvases of durable tasks: fn.s(...) steps
from .gang import Gang, gang, gangs, remove_gang
from .ddp import ddp

__version__ = "0.1.0"

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "nodes", "cluster_status",
    "runtime_context", "RuntimeContext", "ObjectRef", "RemoteFunction", "ObjectRefGenerator", "DynamicObjectRefGenerator", "exceptions", "CorralError", "TaskError",
    "WorkerCrashedError", "NodeDiedError", "TaskCancelledError", "ObjectLostError", "ObjectStoreFullError",
    "OutOfMemoryError", "GetTimeoutError",
    "ActorClass", "ActorHandle", "get_actor", "kill", "list_actors", "method", "ActorDiedError", "ActorNotFoundError",
    "task", "result", "tasks", "DurableFunction", "TaskId", "TaskResult", "schedule", "schedules", "pause_schedule",
    "resume_schedule", "remove_schedule", "run_schedule_now", "schedule_history", "queue", "queues", "send_task",
    "chain", "group", "chord", "gang", "gangs", "remove_gang", "Gang", "GangError", "GangMemberError", "ddp",
]
