# The runtime context, nodes, resources and scheduling strategies.
import os

import corral.compat.ray as ray
from corral.compat.ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(num_cpus=2)
print("initialized", ray.is_initialized())


@ray.remote
def where():
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_task_id() is not None, ctx.get_assigned_resources()


@ray.remote(num_cpus=2)
def two_cpus():
    return ray.get_runtime_context().get_assigned_resources()["CPU"]


@ray.remote
class Who:
    def ids(self):
        ctx = ray.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_task_id() is not None


@ray.remote(runtime_env={"env_vars": {"GREETING": "hello"}})
def greeting():
    return os.environ.get("GREETING")


nodes = ray.nodes()
print(len(nodes), nodes[0]["Alive"], sorted(k for k in ("NodeID", "Alive", "NodeManagerAddress", "Resources",
                                                        "Labels") if k in nodes[0]))
print("CPU", ray.cluster_resources()["CPU"])
print("available CPU", ray.available_resources()["CPU"])
node_id, has_task_id, resources = ray.get(where.remote())
print(node_id == nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id(), has_task_id, resources)
print(ray.get(two_cpus.remote()))
w = Who.remote()
actor_id, has_call_id = ray.get(w.ids.remote())
print(actor_id is not None and actor_id == ray.get(w.ids.remote())[0], has_call_id)
print(ray.get(greeting.remote()))
pinned = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False))
print(ray.get(pinned.remote())[0] == node_id)
print(ray.get(where.options(scheduling_strategy="SPREAD").remote())[0] == node_id)
print(ray.get_runtime_context().get_task_id())
ray.shutdown()
print("initialized", ray.is_initialized())
