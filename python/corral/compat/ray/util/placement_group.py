"""``ray.util.placement_group``: Ray's placement groups, as Corral's gangs (corral.gang)."""
import corral
from corral import exceptions
from corral.gang import Gang


class PlacementGroup:
    """A placement group: a gang of bundles reserved all at once. ``ready()`` is an ObjectRef that
    resolves once it is reserved; ``wait(timeout_seconds)`` says whether it is."""

    def __init__(self, gang):
        self._gang = gang

    @property
    def id(self):
        return self._gang.id.hex()

    @property
    def bundle_specs(self):
        return [dict(b) for b in self._gang.bundles]

    @property
    def bundle_count(self):
        return len(self._gang.bundles)

    def ready(self):
        return corral.remote(_reserved).options(gang=self._gang, member=0, num_cpus=0, max_retries=0,
                                                name="ray.placement_group.ready").remote(self)

    def wait(self, timeout_seconds=30):
        return self._gang.ready(timeout_seconds)

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other._gang.id == self._gang.id

    def __hash__(self):
        return hash(self._gang.id)

    def __repr__(self):
        return f"PlacementGroup(id={self.id[:16]}, bundles={self.bundle_count})"


def _reserved(pg):
    return pg


def placement_group(bundles, strategy="PACK", name="", lifetime=None, **_ignored):
    if lifetime not in (None, "detached"):
        raise exceptions.InvalidArgumentError(f"lifetime={lifetime!r}: use None or 'detached'")
    if not isinstance(bundles, list) or not bundles:
        raise exceptions.InvalidArgumentError("placement_group(bundles): give a non-empty list of dicts")
    bundles = [{("memory" if k == "memory" else k): v for k, v in b.items()} for b in bundles]
    return PlacementGroup(corral.gang(bundles=bundles, strategy=str(strategy).lower(), name=name,
                                      detached=lifetime == "detached"))


def remove_placement_group(placement_group):
    if not isinstance(placement_group, PlacementGroup):
        raise exceptions.InvalidArgumentError(f"remove_placement_group({placement_group!r}): give a PlacementGroup")
    corral.remove_gang(placement_group._gang)


def get_placement_group(name):
    for g in corral.gangs():
        if g["name"] == name:
            bundles = [dict(m["resources"]) for m in g["members"]]
            return PlacementGroup(Gang(g["gang_id"], bundles, g["strategy"], g["name"]))
    raise ValueError(f"Failed to look up placement group with name: {name}")


def placement_group_table(placement_group=None):
    """Ray's table of placement groups (by id), or one group's row; a removed group's row says
    REMOVED. Ray's scheduling ``stats`` are not kept."""
    rows = {g["gang_id"].hex(): _row(g) for g in corral.gangs()}
    if placement_group is None:
        return rows
    row = rows.get(placement_group.id)
    if row is None:  # removed (or its creator exited): Ray keeps the row, marked so
        row = dict(_row({"gang_id": placement_group._gang.id, "name": placement_group._gang.name,
                         "strategy": placement_group._gang.strategy, "state": "REMOVED",
                         "members": [{"index": i, "resources": b, "node_id": ""}
                                     for i, b in enumerate(placement_group._gang.bundles)]}))
    return row


def _row(g):
    state = {"READY": "CREATED", "PENDING": "PENDING"}.get(g["state"], g["state"])
    return {"placement_group_id": g["gang_id"].hex(), "name": g["name"],
            "bundles": {m["index"]: dict(m["resources"]) for m in g["members"]},
            "bundles_to_node_id": {m["index"]: m["node_id"] for m in g["members"] if m["node_id"]},
            "strategy": g["strategy"].upper(), "state": state}


def get_current_placement_group():
    return None
