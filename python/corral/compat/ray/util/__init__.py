"""``ray.util``: ActorPool, and the queue, multiprocessing and scheduling_strategies modules."""
from . import scheduling_strategies
from ._actor_pool import ActorPool
# As in Ray, ray.util.placement_group is the function (the module stays importable by its name).
from .placement_group import (get_current_placement_group, get_placement_group, placement_group,
                              placement_group_table, remove_placement_group)


def get_node_ip_address():
    """This machine's address as the cluster sees it (127.0.0.1 for a local cluster)."""
    from .. import _ip, _local_node_id
    import corral
    me = _local_node_id()
    for n in corral.nodes():
        if n["node_id"] == me:
            return _ip(n)
    return "127.0.0.1"


def list_named_actors(all_namespaces=False):
    """Names of the live named actors: in this driver's namespace, or all as {name, namespace} dicts."""
    import corral
    from corral import _runtime
    from corral.actor import DEFAULT_NAMESPACE
    ns = _runtime.namespace or DEFAULT_NAMESPACE
    named = [a for a in corral.list_actors() if a.get("name")]
    if all_namespaces:
        return [{"name": a["name"], "namespace": a["namespace"]} for a in named]
    return [a["name"] for a in named if a["namespace"] == ns]


def __getattr__(name):
    # ray.util.queue and the others work after a plain `import ray`, as in Ray.
    if name in ("queue", "multiprocessing"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ActorPool", "scheduling_strategies", "get_node_ip_address", "list_named_actors", "placement_group",
           "remove_placement_group", "get_placement_group", "get_current_placement_group", "placement_group_table"]
