"""Corral quickstart: a local cluster, remote functions, futures as arguments, errors.

Run with `make demo` (or `.venv/bin/python examples/quickstart.py` after setup).
"""
import time

import corral


@corral.remote
def estimate_pi(samples, seed):
    """Monte Carlo estimate of pi from `samples` random points."""
    import random
    rng = random.Random(seed)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return 4.0 * inside / samples


@corral.remote
def average(*estimates):
    return sum(estimates) / len(estimates)


@corral.remote(num_cpus=1)
def where_am_i():
    ctx = corral.runtime_context()
    print(f"hello from task {ctx.task_id[:8]} on node {ctx.node_id[:8]}")
    return ctx.node_id


@corral.remote
def fails(x):
    raise ValueError(f"{x} is not acceptable")


def main():
    started = time.perf_counter()
    corral.init()
    print(f"local cluster up and connected in {time.perf_counter() - started:.2f}s")
    for node in corral.nodes():
        print(f"  node {node['node_id'][:8]} on {node['hostname']}: {node['resources']}")

    t = time.perf_counter()
    parts = [estimate_pi.remote(200_000, seed) for seed in range(8)]
    pi = corral.get(average.remote(*parts))        # futures as arguments
    print(f"pi ~ {pi:.4f} from 8 tasks in {time.perf_counter() - t:.2f}s")

    corral.get(where_am_i.remote())

    try:
        corral.get(fails.remote(42))
    except ValueError as e:                          # a remote ValueError is still a ValueError
        print(f"caught the task's ValueError: {e.cause}")

    t = time.perf_counter()
    n = 5000
    refs = [estimate_pi.remote(1, i) for i in range(n)]
    corral.get(refs)
    print(f"{n} tiny tasks in {time.perf_counter() - t:.2f}s")
    corral.shutdown()


if __name__ == "__main__":
    main()
