"""``ray.util.scheduling_strategies``: where a task or actor may run."""


class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (a ``ray.get_runtime_context().get_node_id()`` or ``ray.nodes()``
    NodeID). ``soft=True``: anywhere if that node is not alive when the task is submitted;
    otherwise the task waits for that node (and is reported infeasible if it is gone)."""

    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        self.node_id = node_id
        self.soft = soft

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run in a placement group (a Corral gang): in bundle ``placement_group_bundle_index``, or in
    any of its bundles with -1; with ``placement_group_capture_child_tasks=True`` the tasks and
    actors it starts go into the group too (any bundle). ``placement_group=None``: in no group."""

    def __init__(self, placement_group, placement_group_bundle_index=-1, placement_group_capture_child_tasks=None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks


class NodeLabelSchedulingStrategy:
    def __init__(self, hard, soft=None):
        raise NotImplementedError("NodeLabelSchedulingStrategy: use the label_selector={'key': 'value'} option")
