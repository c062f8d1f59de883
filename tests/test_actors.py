"""Actors end to end, on real processes: state, order, concurrency, names, kill, restarts, GC."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import corral
from conftest import process_gone, wait_until


@corral.remote(max_restarts=0)
class Counter:
    def __init__(self, start=0):
        self.n = start
        self.started = os.getpid()

    def incr(self, k=1):
        self.n += k
        return self.n

    def value(self):
        return self.n

    def pid(self):
        return os.getpid()

    def env(self, name):
        return os.environ.get(name)

    def sleep(self, s):
        time.sleep(s)
        return self.n


def actor_info(handle, include_dead=True):
    return next(a for a in corral.list_actors(include_dead=include_dead) if a["actor_id"] == handle.actor_id)


@pytest.fixture(scope="module")
def local():
    corral.init(num_cpus=2)
    yield
    corral.shutdown()


def test_state_is_kept_across_calls(local):
    c = Counter.remote(10)
    assert corral.get(c.incr.remote()) == 11
    assert corral.get([c.incr.remote(2) for _ in range(50)])[-1] == 111
    assert corral.get(c.value.remote()) == 111
    pids = {corral.get(c.pid.remote()) for _ in range(5)}
    assert len(pids) == 1 and pids != {os.getpid()}
    info = actor_info(c)
    assert info["state"] == "ALIVE" and info["class_name"].endswith("Counter") and info["pid"] in pids


@corral.remote
class Log:
    def __init__(self):
        self.entries = []

    def add(self, caller, i):
        time.sleep(random.random() * 0.002)  # calls run concurrently would finish out of order
        self.entries.append((caller, i))

    def get(self):
        return self.entries


@corral.remote(num_cpus=0)
def call_many(log, caller, n):
    return corral.get([log.add.remote(caller, i) for i in range(n)])


@corral.remote
def slow_value(x, s):
    time.sleep(s)
    return x


def test_calls_from_each_caller_run_in_submission_order(local):
    log = Log.remote()
    # A call waiting for its argument holds back its caller's later calls, not other callers'.
    held = log.add.remote("driver", slow_value.remote(0, 0.5))
    mine = [log.add.remote("driver", i) for i in range(1, 200)]
    others = [call_many.remote(log, f"task{t}", 200) for t in range(3)]
    corral.get(others + mine + [held])
    entries = corral.get(log.get.remote())
    assert len(entries) == 800
    for caller in ["driver", "task0", "task1", "task2"]:
        seq = [i for c, i in entries if c == caller]
        assert seq == list(range(200)), caller


@corral.remote(max_concurrency=3)
class Threaded:
    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.now = self.peak = 0

    def work(self, s):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(s)
        with self.lock:
            self.now -= 1
        return self.peak

    def peak_seen(self):
        return self.peak


@corral.remote(max_concurrency=4)
class AsyncActor:
    def __init__(self):
        self.now = self.peak = 0

    async def work(self, s):
        import asyncio
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(s)
        self.now -= 1
        return self.peak

    async def peak_seen(self):
        return self.peak


def test_threaded_actor_runs_up_to_max_concurrency_at_once(local):
    a = Threaded.remote()
    corral.get([a.work.remote(0.3) for _ in range(9)])
    assert corral.get(a.peak_seen.remote()) == 3


def test_async_actor_runs_up_to_max_concurrency_coroutines(local):
    a = AsyncActor.remote()
    corral.get([a.work.remote(0.3) for _ in range(10)])
    assert corral.get(a.peak_seen.remote()) == 4
    b = AsyncActor.options(max_concurrency=2).remote()
    corral.get([b.work.remote(0.3) for _ in range(6)])
    assert corral.get(b.peak_seen.remote()) == 2


@corral.remote(concurrency_groups={"io": 2})
class Grouped:
    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.now = {}
        self.peak = {}

    def _enter(self, g):
        with self.lock:
            self.now[g] = self.now.get(g, 0) + 1
            self.peak[g] = max(self.peak.get(g, 0), self.now[g])

    def _leave(self, g):
        with self.lock:
            self.now[g] -= 1

    @corral.method(concurrency_group="io")
    def fetch(self, s):
        self._enter("io")
        time.sleep(s)
        self._leave("io")

    def compute(self, s):
        self._enter("default")
        time.sleep(s)
        self._leave("default")

    def peaks(self):
        return self.peak


def test_concurrency_groups_have_their_own_limits(local):
    g = Grouped.remote()
    refs = [g.fetch.remote(0.3) for _ in range(6)] + [g.compute.remote(0.2) for _ in range(3)]
    refs += [g.compute.options(concurrency_group="io").remote(0.3) for _ in range(2)]
    corral.get(refs)
    peaks = corral.get(g.peaks.remote())
    assert peaks["io"] == 2 and peaks["default"] in (1, 2)  # "default" counts compute() runs in "io" too
    with pytest.raises(corral.CorralError, match="no concurrency group 'nope'"):
        corral.get(g.compute.options(concurrency_group="nope").remote(0))


@corral.remote
def use(handle, k):
    return corral.get(handle.incr.remote(k))


def test_handles_pass_to_tasks_and_actors(local):
    c = Counter.remote(0)
    assert corral.get(use.remote(c, 5)) == 5

    @corral.remote
    class Relay:
        def __init__(self, target):
            self.target = target

        def bump(self):
            return corral.get(self.target.incr.remote(100))

    r = Relay.remote(c)
    assert corral.get(r.bump.remote()) == 105
    assert corral.get(c.value.remote()) == 105


def test_constructor_exception_fails_every_call_with_it(local):
    @corral.remote
    class Broken:
        def __init__(self):
            raise KeyError("no model file")

        def f(self):
            return 1

    b = Broken.remote()
    with pytest.raises(KeyError, match="no model file"):
        corral.get(b.f.remote())
    with pytest.raises(KeyError):
        corral.get(b.f.remote())
    assert "constructor" in actor_info(b)["death_cause"]


def test_kill_fails_pending_calls_with_actor_died_error(local):
    c = Counter.remote(0)
    corral.get(c.incr.remote())
    pid = corral.get(c.pid.remote())
    running = c.sleep.remote(30)
    queued = [c.incr.remote() for _ in range(5)]
    corral.kill(c)
    for ref in [running] + queued:
        with pytest.raises(corral.ActorDiedError, match="killed by corral.kill"):
            corral.get(ref, timeout=20)
    with pytest.raises(corral.ActorDiedError):
        corral.get(c.incr.remote(), timeout=20)
    wait_until(lambda: process_gone(pid), what="the actor's worker to exit")
    assert actor_info(c)["state"] == "DEAD"


def test_restart_after_kill_9_of_its_worker_retries_the_running_call(local):
    c = Counter.options(max_restarts=2, max_task_retries=1).remote(7)
    assert corral.get(c.incr.remote()) == 8
    pid = corral.get(c.pid.remote())
    running = c.sleep.remote(2)
    wait_until(lambda: actor_info(c)["running_calls"] == 1 and actor_info(c)["pending_calls"] == 0,
               what="the call to reach the actor")
    time.sleep(0.3)  # into the call's sleep
    os.kill(pid, signal.SIGKILL)
    # Retried on the restarted actor, whose state is what its constructor built.
    assert corral.get(running, timeout=30) == 7
    info = actor_info(c)
    assert info["state"] == "ALIVE" and info["restarts"] == 1 and info["pid"] != pid
    assert corral.get(c.incr.remote()) == 8


NO_LIMIT_DRIVER = """
import os, signal, corral
corral.init(num_cpus=1)

@corral.remote(max_restarts=-1)
class A:
    def pid(self):
        return os.getpid()

a = A.remote()
pid = corral.get(a.pid.remote())
os.kill(pid, signal.SIGKILL)
while True:  # (a call sent before the agent saw the death fails: no call retries)
    try:
        assert corral.get(a.pid.remote(), timeout=60) != pid
        break
    except corral.ActorDiedError:
        pass
corral.shutdown()
"""


def test_an_actor_with_no_restart_limit_says_so_when_it_restarts():
    # The driver's notice of a restart: "restart 1, no limit", not "of 4294967295" (-1 as stored).
    r = subprocess.run([sys.executable, "-c", NO_LIMIT_DRIVER], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "restart 1, no limit" in r.stderr and "4294967295" not in r.stderr, r.stderr[-2000:]


def test_out_of_restarts_gives_actor_died_error_naming_the_cause(local):
    c = Counter.options(max_restarts=1).remote(0)
    for expected_restarts in (1, None):
        pid = corral.get(c.pid.remote())
        running = c.sleep.remote(30)
        wait_until(lambda: actor_info(c)["running_calls"] == 1, what="the call to reach the actor")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(corral.ActorDiedError, match="signal 9"):  # no call retries: it fails at once
            corral.get(running, timeout=30)
        if expected_restarts:
            wait_until(lambda: actor_info(c)["state"] == "ALIVE", what="the restart")
            assert actor_info(c)["restarts"] == 1
    info = wait_until(lambda: actor_info(c)["state"] == "DEAD" and actor_info(c), what="the actor to die")
    assert "signal 9" in info["death_cause"] and "restarts used: 1 of 1" in info["death_cause"]
    assert "while hosting actor test_actors.Counter" in info["death_cause"], info["death_cause"]
    with pytest.raises(corral.ActorDiedError, match="restarts used"):
        corral.get(c.incr.remote(), timeout=20)


def test_handle_gc_ends_the_actor_and_frees_its_resources(local):
    def free_cpus():
        return sum(n["available"].get("CPU", 0) for n in corral.nodes())

    before = free_cpus()
    c = Counter.options(num_cpus=1).remote(0)
    ref = c.sleep.remote(0.5)  # made before the handle goes: it still runs
    actor_id = c.actor_id
    wait_until(lambda: free_cpus() == before - 1, what="the actor to hold its CPU")
    del c
    assert corral.get(ref) == 0
    wait_until(lambda: free_cpus() == before, what="the CPU to come back")
    info = next(a for a in corral.list_actors(include_dead=True) if a["actor_id"] == actor_id)
    assert info["state"] == "DEAD" and "no handle" in info["death_cause"]


@corral.remote(max_restarts=0)
class Keeper:
    def __init__(self, handle=None):
        self.handle = handle

    def keep(self, handle):
        self.handle = handle

    def make(self):
        self.handle = Counter.remote(0)
        corral.get(self.handle.incr.remote())
        return self.handle

    def poke(self):
        return corral.get(self.handle.incr.remote())


@pytest.mark.parametrize("given", ["to its constructor", "to a method"])
def test_a_handle_held_by_an_actor_that_is_killed_lets_its_actor_end(local, given):
    # The keeper's worker is gone for good: its session at the head ends with it, not a reconnect
    # grace (30 s here, past wait_until's 20 s) later; and a dead actor's constructor arguments are
    # no longer kept for restarts, though a handle to it (k) remains.
    c = Counter.remote(0)
    if given == "to its constructor":
        k = Keeper.remote(c)
    else:
        k = Keeper.remote()
        corral.get(k.keep.remote(c))
    assert corral.get(k.poke.remote()) == 1
    actor_id = c.actor_id
    del c
    corral.kill(k)
    state = lambda: next(a for a in corral.list_actors(include_dead=True) if a["actor_id"] == actor_id)["state"]
    wait_until(lambda: state() == "DEAD", what="the actor whose last handle the killed keeper held to end")
    assert actor_info(k)["state"] == "DEAD"  # (k is held until here)


def test_an_actor_created_by_an_actor_ends_with_its_creator(local):
    k = Keeper.remote()
    child = corral.get(k.make.remote())
    assert corral.get(child.incr.remote()) == 2
    corral.kill(k)
    def ended():
        try:
            corral.get(child.incr.remote(), timeout=10)
            return False
        except corral.ActorDiedError as e:
            return str(e)
    assert "its creator" in wait_until(ended, what="the child actor to end with its creator")


def test_a_method_kept_from_a_handle_outlives_it_and_holds_no_cycle(local):
    # handle.method is kept on the handle after its first use; the method must not point back at
    # the handle (a cycle would leave the actor's end to the cyclic collector).
    import gc
    import weakref

    c = Counter.remote(5)
    incr = c.incr
    assert c.incr is incr and corral.get(c.incr.remote()) == 6
    actor_id = c.actor_id
    gone = weakref.ref(c)
    gc.disable()
    try:
        del c
        assert gone() is None  # freed by reference counting alone
    finally:
        gc.enable()
    # The method alone keeps the actor alive, as the handle did: past the time a handle's release
    # takes to end an actor (its release is sent within milliseconds), it still runs.
    time.sleep(1.0)
    info = next(a for a in corral.list_actors(include_dead=True) if a["actor_id"] == actor_id)
    assert info["state"] == "ALIVE", info
    assert corral.get(incr.remote(2)) == 8
    assert corral.get(incr.options(num_returns=1).remote()) == 9


def _explode():
    raise ValueError("this value cannot be rebuilt here")


class Unloadable:
    """Pickles in the driver; unpickling it (in the worker) raises."""

    def __reduce__(self):
        return (_explode, ())


@corral.remote
def echo(x):
    return x


def test_arguments_that_cannot_be_unpickled_fail_the_call_and_say_why(local):
    c = Counter.remote(1)
    for ref in (c.incr.remote(Unloadable()), c.incr.remote(k=Unloadable()), echo.remote(Unloadable())):
        with pytest.raises(corral.exceptions.SerializationError, match="cannot unpickle .*this value cannot be rebuilt"):
            corral.get(ref, timeout=30)
    assert corral.get(c.incr.remote()) == 2  # the actor lives on, its state untouched


def test_bad_options_are_refused_at_once(local):
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="needs a name"):
        Counter.options(lifetime="detached").remote()
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="unknown actor option"):
        Counter.options(num_returns=2)
    with pytest.raises(AttributeError, match="no method 'nope'"):
        Counter.remote().nope
    with pytest.raises(TypeError, match=r"\.remote"):
        Counter(1)


def test_names_are_unique_per_namespace(local):
    a = Counter.options(name="dup", namespace="ns1").remote(1)
    with pytest.raises(corral.exceptions.InvalidArgumentError, match="already exists"):
        Counter.options(name="dup", namespace="ns1").remote(2)
    same = Counter.options(name="dup", namespace="ns1", get_if_exists=True).remote(3)
    assert same == a and corral.get(same.value.remote()) == 1
    other = Counter.options(name="dup", namespace="ns2").remote(4)
    assert corral.get(other.value.remote()) == 4
    assert corral.get(corral.get_actor("dup", namespace="ns1").value.remote()) == 1
    with pytest.raises(corral.ActorNotFoundError):
        corral.get_actor("dup", namespace="ns3")
    corral.kill(a)
    wait_until(lambda: actor_info(a)["state"] == "DEAD", what="the kill")
    with pytest.raises(ValueError):  # a dead actor's name is free again
        corral.get_actor("dup", namespace="ns1")
    b = Counter.options(name="dup", namespace="ns1").remote(5)
    assert corral.get(b.value.remote()) == 5


def test_large_arguments_and_results_go_through_the_object_store(local):
    import numpy as np

    @corral.remote
    class Model:
        def __init__(self, w):
            self.w = w

        def weights(self):
            return self.w

        def scale(self, x):
            return x * self.w[0]

    m = Model.remote(np.full(5_000_000, 2.0))  # 40 MB: over the inline limit, put for the call
    w = corral.get(m.weights.remote())
    assert w.shape == (5_000_000,) and not w.flags.writeable  # mapped from the store, not copied
    out = corral.get(m.scale.remote(np.full(3_000_000, 3.0)))
    assert out.shape == (3_000_000,) and out[0] == 6.0 and out[-1] == 6.0
