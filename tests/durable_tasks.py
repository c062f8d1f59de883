"""Durable task functions the test agents register (started with --tasks durable_tasks)."""
import os
import time

import corral


@corral.task
def add(a, b):
    return a + b


@corral.task
def announce(message):
    """Prints `message` (for `corral logs` of a durable task)."""
    print(f"announcing: {message}", flush=True)
    return message


@corral.task(max_retries=3, retry_backoff=0.05)
def flaky(counter_path, succeed_on):
    """Fails until its attempt number `succeed_on` (counted in a file)."""
    with open(counter_path, "a") as f:
        f.write("x")
    with open(counter_path) as f:
        n = len(f.read())
    if n < succeed_on:
        raise RuntimeError(f"attempt {n} fails on purpose")
    return n


class CodedError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


@corral.task
def boom(message):
    raise ValueError(message)


@corral.task
def record(ledger, key, seconds=0.0):
    """Appends 'start key time' and 'end key time' to a ledger shared through the file system."""
    with open(ledger, "a") as f:
        f.write(f"start {key} {time.time()} {os.getpid()}\n")
    time.sleep(seconds)
    with open(ledger, "a") as f:
        f.write(f"end {key} {time.time()}\n")
    return key


@corral.task
def append(ledger, key):
    """One line per run: duplicates of effects are counted from it."""
    with open(ledger, "a") as f:
        f.write(key + "\n")
    return key


@corral.task
def sleepy(ledger, seconds):
    """Sleeps; notes whether the soft time limit interrupted it."""
    try:
        time.sleep(seconds)
    except corral.exceptions.SoftTimeLimitExceeded:
        with open(ledger, "a") as f:
            f.write("soft limit\n")
        return "cleaned up"
    return "slept"


@corral.task
def where():
    """The node this ran on, and the GPUs it was given."""
    ctx = corral.runtime_context()
    return {"node": ctx.node_id, "gpu_ids": ctx.gpu_ids}


@corral.task
def die_once(marker):
    """Kills its own worker the first time (as a crash or OOM kill would), then succeeds."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    return "survived"


@corral.task
def total(values):
    return sum(values)


@corral.remote
def square(x):
    return x * x


@corral.task
def fan_out(n):
    """A durable task that uses the cluster (as the seed's nightly distributed_training does)."""
    return sum(corral.get([square.remote(i) for i in range(n)], timeout=120))
