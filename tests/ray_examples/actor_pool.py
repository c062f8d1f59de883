# ray.util.ActorPool: map, map_unordered, submit/get_next.
import corral.compat.ray as ray
from corral.compat.ray.util import ActorPool


@ray.remote
class Doubler:
    def double(self, v):
        return 2 * v


pool = ActorPool([Doubler.remote(), Doubler.remote()])
print(list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])))
print(sorted(pool.map_unordered(lambda a, v: a.double.remote(v), [5, 6, 7])))
pool.submit(lambda a, v: a.double.remote(v), 10)
pool.submit(lambda a, v: a.double.remote(v), 20)
pool.submit(lambda a, v: a.double.remote(v), 30)
print(pool.has_next(), pool.get_next(), pool.get_next(), pool.get_next(), pool.has_next())
