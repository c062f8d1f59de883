"""``ray._raylet``: the names Ray's documentation imports from it."""
from corral.generators import DynamicObjectRefGenerator, ObjectRefGenerator
from corral.object_ref import ObjectRef

__all__ = ["ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator"]
