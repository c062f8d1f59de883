"""Ray's task and actor options, as Corral's."""
from corral import exceptions

from .util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

NO_LIMIT = 1_000_000   # max_retries=-1: Ray's "retry forever"
_IGNORED = {"max_calls", "_metadata", "max_pending_calls", "enable_task_events", "_labels", "object_store_memory",
            "placement_group", "placement_group_bundle_index", "placement_group_capture_child_tasks",
            "_generator_backpressure_num_objects"}


SOFT_NODE = "corral.soft_node_id"   # in translate()'s result: a node preferred when alive at submission


def translate(options, actor):
    """A copy of Ray's `options` that Corral's remote()/options() take (and SOFT_NODE, which the
    facade's classes take out)."""
    out = {}
    for k, v in options.items():
        if k in _IGNORED:
            if k == "placement_group" and v not in (None, "default"):
                raise exceptions.InvalidArgumentError(_NO_GANGS)
            continue
        if k == "scheduling_strategy":
            _strategy(v, out)
        elif k == "max_retries" and v == -1:
            out[k] = NO_LIMIT
        elif k == "accelerator_type":
            if v:
                out.setdefault("label_selector", {})["accelerator_type"] = str(v)
        elif k == "label_selector" and v:
            out.setdefault("label_selector", {}).update(v)
        elif k == "retry_exceptions" and actor:
            continue  # on an actor's methods: not supported; calls are retried only when the actor died
        else:
            out[k] = v
    return out


_NO_GANGS = ("placement groups are not supported yet (Corral's gangs are a later feature); "
             "use resources= and label_selector= to place work")


def _strategy(s, out):
    if s is None or s in ("DEFAULT", "SPREAD"):  # Corral's placement spreads by utilisation already
        return
    if isinstance(s, NodeAffinitySchedulingStrategy):
        if s.soft:
            out[SOFT_NODE] = s.node_id  # decided at each submission: that node if it is alive then
        else:
            out.setdefault("label_selector", {})["corral.node_id"] = s.node_id
        return
    if isinstance(s, PlacementGroupSchedulingStrategy):
        raise exceptions.InvalidArgumentError(_NO_GANGS)
    raise exceptions.InvalidArgumentError(
        f"scheduling_strategy={s!r}: use 'DEFAULT', 'SPREAD' or NodeAffinitySchedulingStrategy(node_id, soft=)")


def alive(node_id):
    import corral
    return any(n["node_id"] == node_id and n["state"] == "alive" for n in corral.nodes())
