"""``ray.util.placement_group``: not supported yet; every function raises and says what to do."""
from corral import exceptions

_WHY = ("placement groups are not supported yet (Corral's gangs are a later feature); reserve with "
        "resources= and place with label_selector= meanwhile")


def placement_group(bundles, strategy="PACK", name="", lifetime=None, **_ignored):
    raise exceptions.InvalidArgumentError(_WHY)


def remove_placement_group(placement_group):
    raise exceptions.InvalidArgumentError(_WHY)


def get_placement_group(name):
    raise exceptions.InvalidArgumentError(_WHY)


def get_current_placement_group():
    return None
