"""Ray's task and actor options, as Corral's."""
from corral import exceptions

from .util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

NO_LIMIT = 1_000_000   # max_retries=-1: Ray's "retry forever"
_IGNORED = {"max_calls", "_metadata", "max_pending_calls", "enable_task_events", "_labels", "object_store_memory",
            "_generator_backpressure_num_objects"}


SOFT_NODE = "corral.soft_node_id"   # in translate()'s result: a node preferred when alive at submission


def translate(options, actor):
    """A copy of Ray's `options` that Corral's remote()/options() take (and SOFT_NODE, which the
    facade's classes take out)."""
    out = {}
    for k, v in options.items():
        if k in _IGNORED:
            continue
        if k == "placement_group":  # (Ray's older form of PlacementGroupSchedulingStrategy)
            if v != "default":
                _in_gang(v, options.get("placement_group_bundle_index", -1),
                         options.get("placement_group_capture_child_tasks"), out)
            continue
        if k in ("placement_group_bundle_index", "placement_group_capture_child_tasks"):
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


def _in_gang(pg, index, capture, out):
    from .util.placement_group import PlacementGroup
    if pg is None:  # explicitly in no group: not captured into its parent's either
        out["gang"] = None
        return
    if not isinstance(pg, PlacementGroup):
        raise exceptions.InvalidArgumentError(f"placement_group={pg!r}: give what ray.util.placement_group() returned")
    out["gang"] = pg._gang
    out["member"] = None if index is None or index < 0 else index
    if capture:
        out["gang_capture"] = True


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
        _in_gang(s.placement_group, s.placement_group_bundle_index, s.placement_group_capture_child_tasks, out)
        return
    raise exceptions.InvalidArgumentError(
        f"scheduling_strategy={s!r}: use 'DEFAULT', 'SPREAD' or NodeAffinitySchedulingStrategy(node_id, soft=)")


def alive(node_id):
    import corral
    return any(n["node_id"] == node_id and n["state"] == "alive" for n in corral.nodes())
