"""``ray.get_runtime_context()``."""
from corral import _core, _runtime
from corral.actor import DEFAULT_NAMESPACE


class RuntimeContext:
    """Where the calling code runs: ids of its node, task, actor, worker and job, and its resources."""

    def get_node_id(self):
        from . import _local_node_id
        return _local_node_id()

    def get_task_id(self):
        """The running task's id (hex); None in a driver. In an actor's method: the call's id."""
        call = _runtime.current_call.get()
        if call is not None:
            return _core.hex(call)
        ctx = _runtime.current_task
        return _core.hex(ctx.task_id) if ctx is not None else None

    def get_actor_id(self):
        """The actor's id (as ``handle.actor_id``) inside an actor; else None."""
        ctx = _runtime.current_task
        return _core.hex(ctx.task_id) if (ctx is not None and _runtime.in_actor) else None

    def get_worker_id(self):
        return _runtime.worker_id or f"driver-{_runtime.client_id_hex()}"

    def get_job_id(self):
        """The id of the driver whose work this is (Corral's client id of the submitting process)."""
        return _runtime.job_id()

    def get_assigned_resources(self):
        ctx = _runtime.current_task
        return {k: v for k, v in ctx.resources.items() if v} if ctx is not None else {}

    def get_accelerator_ids(self):
        ctx = _runtime.current_task
        return {"GPU": [str(g) for g in ctx.gpu_ids] if ctx is not None else []}

    def is_canceled(self):
        """In an actor's sync method: whether its call was cancelled (``ray.cancel``) while running."""
        call = _runtime.current_call.get()
        return call is not None and call in _runtime.cancelled_calls

    def get_actor_name(self):
        return None

    def get_placement_group_id(self):
        return None

    # Ray's older attribute names.
    node_id = property(lambda self: self.get_node_id())
    task_id = property(lambda self: self.get_task_id())
    actor_id = property(lambda self: self.get_actor_id())
    job_id = property(lambda self: self.get_job_id())

    @property
    def namespace(self):
        return _runtime.namespace or DEFAULT_NAMESPACE

    @property
    def was_current_actor_reconstructed(self):
        ctx = _runtime.current_task
        return bool(ctx is not None and _runtime.in_actor and ctx.attempt > 0)

    @property
    def current_actor(self):
        raise NotImplementedError("current_actor: pass the handle to the actor instead (self cannot hold one yet)")

    @property
    def gcs_address(self):
        return _runtime.address

    def get(self):
        return {"node_id": self.get_node_id(), "task_id": self.get_task_id(), "actor_id": self.get_actor_id(),
                "job_id": self.get_job_id(), "namespace": self.namespace}


def get_runtime_context():
    return RuntimeContext()
