# Placement groups: bundles reserved together, tasks and actors placed in a bundle, a group that
# waits for room, removal.
import corral.compat.ray as ray
from corral.compat.ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from corral.compat.ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(num_cpus=2)

pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
ray.get(pg.ready(), timeout=60)
print("ready:", pg.wait(10))
print("bundles:", pg.bundle_count)
print("state:", placement_group_table(pg)["state"])


@ray.remote(num_cpus=1)
def double(x):
    return x * 2


@ray.remote(num_cpus=1)
class Pinger:
    def ping(self):
        return "pong"


in_bundle_0 = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=0)
print("task in bundle 0:", ray.get(double.options(scheduling_strategy=in_bundle_0).remote(21)))
pinger = Pinger.options(
    scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=1)).remote()
print("actor in bundle 1:", ray.get(pinger.ping.remote()))

# Both CPUs are held by pg: a group that needs both waits, holding nothing.
big = placement_group([{"CPU": 2}], strategy="STRICT_PACK")
print("big ready while pg holds the CPUs:", big.wait(1))
remove_placement_group(pg)
print("big ready after pg was removed:", big.wait(60))
remove_placement_group(big)
ray.shutdown()
print("done")
