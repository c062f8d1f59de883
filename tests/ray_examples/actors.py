# Actors: state, handles passed to tasks, ordering, kill, restarts.
import os

import corral.compat.ray as ray


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def increment(self):
        self.value += 1
        return self.value

    def get_counter(self):
        return self.value

    def pid(self):
        return os.getpid()


@ray.remote
def bump(counter, times):
    return ray.get([counter.increment.remote() for _ in range(times)])[-1]


c = Counter.remote()
print([ray.get(c.increment.remote()) for _ in range(3)])
print("from a task", ray.get(bump.remote(c, 2)))
print(ray.get(c.get_counter.remote()))
c2 = Counter.options(num_cpus=1).remote(100)
print(ray.get(c2.increment.remote()))
ray.kill(c2)
try:
    ray.get(c2.increment.remote())
except ray.exceptions.RayActorError:
    print("killed: RayActorError")


@ray.remote(max_restarts=1, max_task_retries=1)
class Phoenix:
    def __init__(self):
        self.calls = 0

    def pid(self):
        self.calls += 1
        return os.getpid(), self.calls

    def die(self):
        os._exit(1)


p = Phoenix.remote()
pid1, _ = ray.get(p.pid.remote())
try:
    ray.get(p.die.remote())  # retried once on the restarted actor, which dies again
except ray.exceptions.RayActorError:
    print("a call that kills its actor every time fails")
try:
    ray.get(p.pid.remote())
except ray.exceptions.RayActorError:
    print("restarts used up")
