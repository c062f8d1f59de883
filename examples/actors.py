"""Actors: a parameter server that workers update, a named model looked up by name, and a restart.

    python examples/actors.py

Starts a local cluster (2 CPUs), trains a tiny linear model with four tasks pushing gradients to one
actor, serves it from a named async actor, and shows what a crash does to an actor's state.
"""
import asyncio
import os
import random
import signal

import corral


@corral.remote
class ParameterServer:
    """Holds the weights; tasks read them and push gradients. Calls run one at a time, in order."""

    def __init__(self, dim):
        self.w = [0.0] * dim
        self.updates = 0

    def weights(self):
        return self.w

    def push(self, grad, lr=0.1):
        self.w = [w - lr * g for w, g in zip(self.w, grad)]
        self.updates += 1
        return self.updates


@corral.remote
def train_shard(ps, seed, steps, true_w):
    """One worker: fits y = true_w . x on its own data, pulling weights and pushing gradients."""
    rnd = random.Random(seed)
    for _ in range(steps):
        w = corral.get(ps.weights.remote())
        x = [rnd.uniform(-1, 1) for _ in true_w]
        err = sum(a * b for a, b in zip(w, x)) - sum(a * b for a, b in zip(true_w, x))
        corral.get(ps.push.remote([err * xi for xi in x]))
    return steps


@corral.remote(max_concurrency=8)
class Model:
    """Serves predictions; `async def` methods run as coroutines, up to 8 at once."""

    def __init__(self, weights):
        self.w = weights

    async def predict(self, x):
        await asyncio.sleep(0.05)  # a slow backend call: eight overlap
        return sum(a * b for a, b in zip(self.w, x))


@corral.remote(max_restarts=1, max_task_retries=1)
class Session:
    def __init__(self):
        self.seen = 0

    def hit(self):
        self.seen += 1
        return self.seen

    def pid(self):
        return os.getpid()


def main():
    corral.init(num_cpus=2)
    true_w = [2.0, -3.0, 0.5]
    ps = ParameterServer.remote(len(true_w))
    steps = corral.get([train_shard.remote(ps, seed, 150, true_w) for seed in range(4)])
    w = corral.get(ps.weights.remote())
    print(f"parameter server: {sum(steps)} updates from 4 tasks, weights {[round(v, 2) for v in w]} "
          f"(true {true_w})")

    creator = Model.options(name="model", namespace="demo").remote(w)  # (its first handle keeps it alive)
    model = corral.get_actor("model", namespace="demo")  # as another driver would find it
    preds = corral.get([model.predict.remote([1.0, 0.0, 0.0]) for _ in range(16)])
    print(f"served 16 predictions from the named async actor: {round(preds[0], 2)} each")

    s = Session.remote()
    corral.get([s.hit.remote() for _ in range(3)])
    os.kill(corral.get(s.pid.remote()), signal.SIGKILL)  # its worker crashes
    after = corral.get(s.hit.remote(), timeout=30)  # sent again to the restarted actor if it met the crash
    info = next(a for a in corral.list_actors() if a["actor_id"] == s.actor_id)
    print(f"after a crash the actor restarted ({info['restarts']} restart) with its constructor's state: "
          f"the next hit counts {after}")
    corral.kill(ps)
    try:
        corral.get(ps.weights.remote())
    except corral.ActorDiedError as e:
        print(f"after kill(): ActorDiedError: {str(e).splitlines()[0]}")
    corral.shutdown()


if __name__ == "__main__":
    main()
