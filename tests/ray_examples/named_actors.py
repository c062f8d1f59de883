# Named actors, namespaces, get_if_exists, detached lifetime.
import corral.compat.ray as ray

ray.init(namespace="colors")


@ray.remote
class Store:
    def __init__(self):
        self.items = {}

    def set(self, k, v):
        self.items[k] = v

    def get(self, k):
        return self.items.get(k)


s = Store.options(name="store").remote()
ray.get(s.set.remote("sky", "blue"))
same = ray.get_actor("store")
print(ray.get(same.get.remote("sky")))
again = Store.options(name="store", get_if_exists=True).remote()
print(ray.get(again.get.remote("sky")))
try:
    ray.get_actor("store", namespace="other")
except ValueError:
    print("not in namespace 'other'")
d = Store.options(name="kept", namespace="shared", lifetime="detached").remote()
ray.get(d.set.remote("k", 1))
print(ray.get(ray.get_actor("kept", namespace="shared").get.remote("k")))
print(sorted(ray.util.list_named_actors()))
ray.kill(d)
print(ray.get_runtime_context().namespace)
