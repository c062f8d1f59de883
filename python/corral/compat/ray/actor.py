"""``ray.actor``: ActorHandle (for type hints), ActorClass, ActorMethod, exit_actor."""
from corral import _runtime, exceptions
from corral.actor import ActorClass, ActorHandle, ActorMethod

__all__ = ["ActorHandle", "ActorClass", "ActorMethod", "exit_actor"]


def exit_actor():
    """Ends the calling actor, as ``ray.kill`` would: it is not restarted, and calls not yet answered
    (this one included) raise RayActorError. Only inside an actor's method."""
    ctx = _runtime.current_task
    if not _runtime.in_actor or ctx is None:
        raise TypeError("exit_actor() is called only inside an actor's method")
    _runtime.get_client().actor_request("kill", actor_id=ctx.task_id, restart=False)
    raise exceptions.ActorDiedError("the actor called exit_actor()")
