"""Several results from one task, generator tasks streaming their values, cancelling a running
actor call, and the other Ray behaviours the native API took on (corral.generators)."""
import asyncio
import os
import threading
import time

import numpy as np
import pytest

import corral
from conftest import wait_until

pytestmark = pytest.mark.usefixtures("local_cluster")


@corral.remote
def gated(gate, n):
    """Yields 0 at once; the rest only once `gate` exists."""
    yield 0
    while not os.path.exists(gate):
        time.sleep(0.01)
    for i in range(1, n):
        yield i


def next_within(gen, seconds=60):
    """next(gen) on a thread, given `seconds` to return (it blocks for ever if streaming is broken)."""
    out = []
    t = threading.Thread(target=lambda: out.append(next(gen)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "next() did not return while the generator was still running"
    return out[0]


def test_a_generator_streams_its_values_while_it_runs(tmp_path):
    gate = str(tmp_path / "gate")
    gen = gated.remote(gate, 3)
    assert isinstance(gen, corral.ObjectRefGenerator)
    first = next_within(gen)  # the task is still waiting for the gate
    assert corral.get(first) == 0
    assert not corral.wait([gen.completed()], timeout=0)[0]
    open(gate, "w").close()
    assert [corral.get(r) for r in gen] == [1, 2]
    with pytest.raises(StopIteration):
        next(gen)


def test_an_actor_method_generator_streams_too(tmp_path):
    @corral.remote
    class Source:
        def items(self, gate):
            yield "first"
            while not os.path.exists(gate):
                time.sleep(0.01)
            yield "second"

    gate = str(tmp_path / "gate")
    s = Source.remote()
    gen = s.items.remote(gate)
    assert corral.get(next_within(gen)) == "first"
    open(gate, "w").close()
    assert [corral.get(r) for r in gen] == ["second"]


def test_streamed_refs_outlive_the_generator():
    @corral.remote
    def three():
        yield from ("a", "b", "c")

    gen = three.remote()
    refs = list(gen)
    del gen
    import gc
    gc.collect()
    assert corral.get(refs) == ["a", "b", "c"]


def test_async_for_over_a_generator():
    @corral.remote
    def count(n):
        yield from range(n)

    async def main():
        return [await ref async for ref in count.remote(3)]

    assert asyncio.run(main()) == [0, 1, 2]


def test_num_returns_gives_that_many_refs_and_a_wrong_count_fails_each():
    @corral.remote(num_returns=2)
    def pair(a, b):
        return a, b

    x, y = pair.remote(1, "one")
    assert corral.get([x, y]) == [1, "one"]
    p, q, r = pair.options(num_returns=3).remote(1, 2)
    for ref in (p, q, r):
        with pytest.raises(ValueError, match="returned 2 values but num_returns=3"):
            corral.get(ref)
    assert pair.options(num_returns=0).remote(1, 2) is None
    with pytest.raises(corral.exceptions.InvalidArgumentError):
        pair.options(num_returns="many")


def test_a_generator_error_is_in_the_ref_after_its_last_value():
    @corral.remote
    def breaks():
        yield 1
        raise KeyError("broke")

    refs = list(breaks.remote())
    assert len(refs) == 2
    assert corral.get(refs[0]) == 1
    with pytest.raises(KeyError):
        corral.get(refs[1])
    dyn = corral.get(breaks.options(num_returns="dynamic").remote())
    assert isinstance(dyn, corral.DynamicObjectRefGenerator) and len(dyn) == 2
    a, b, c = breaks.options(num_returns=3).remote()
    assert corral.get(a) == 1
    for ref in (b, c):
        with pytest.raises(KeyError):
            corral.get(ref)


def test_cancelling_a_running_async_call_cancels_its_coroutine_only(tmp_path):
    mark = str(tmp_path / "cancelled")

    @corral.remote
    class Sleeper:
        async def sleep(self, mark):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                open(mark, "w").close()
                raise

        async def ping(self):
            return "pong"

    s = Sleeper.remote()
    assert corral.get(s.ping.remote()) == "pong"
    ref = s.sleep.remote(mark)
    wait_until(lambda: any(a["running_calls"] for a in corral.list_actors()), what="the call to run")
    corral.cancel(ref)
    with pytest.raises(asyncio.CancelledError):
        corral.get(ref, timeout=60)
    assert os.path.exists(mark)
    assert corral.get(s.ping.remote()) == "pong"  # the actor lives on


def test_cancels_of_several_running_async_calls_all_arrive():
    @corral.remote
    class Sleeper:
        def __init__(self):
            self.started = 0

        async def sleep(self):
            self.started += 1
            await asyncio.sleep(60)

        async def started_count(self):
            return self.started

    s = Sleeper.remote()
    refs = [s.sleep.remote() for _ in range(6)]
    wait_until(lambda: corral.get(s.started_count.remote()) == 6, what="the calls to start")
    for r in refs:  # back to back: signals that merged would leave some running
        corral.cancel(r)
    for r in refs:
        with pytest.raises(asyncio.CancelledError):
            corral.get(r, timeout=60)


@pytest.mark.parametrize("where", ["head", "worker"])
def test_a_cancelled_sync_call_that_has_not_started_never_runs(tmp_path, where):
    ran = str(tmp_path / "ran")

    # A plain actor's calls wait at the head; those of a concurrency group are sent on and wait in
    # the worker's thread pool for their group's turn.
    opts = {} if where == "head" else {"concurrency_groups": {"one": 1}}

    @corral.remote(**opts)
    class Busy:
        @corral.method(concurrency_group="one" if where == "worker" else None)
        def block(self, gate):
            while not os.path.exists(gate):
                time.sleep(0.01)

        @corral.method(concurrency_group="one" if where == "worker" else None)
        def mark(self, path):
            open(path, "w").close()

    gate = str(tmp_path / "gate")
    b = Busy.remote()
    first = b.block.remote(gate)
    second = b.mark.remote(ran)  # queued behind the first
    if where == "worker":
        wait_until(lambda: any(a["running_calls"] == 2 for a in corral.list_actors()), what="both calls sent")
    signalled = sum(n["counters"].get("actor_call_cancels_signalled", 0) for n in corral.nodes())
    corral.cancel(second)
    if where == "worker":  # the cancel travels on to the worker; the gate opens only once it was signalled
        wait_until(lambda: sum(n["counters"].get("actor_call_cancels_signalled", 0) for n in corral.nodes())
                   > signalled, what="the cancel signalled to the actor's worker")
    open(gate, "w").close()
    corral.get(first, timeout=60)
    with pytest.raises(corral.TaskCancelledError):
        corral.get(second, timeout=60)
    assert corral.get(b.mark.remote(str(tmp_path / "later")), timeout=60) is None
    assert not os.path.exists(ran)


def test_a_generators_error_given_to_a_task_fails_it():
    @corral.remote
    def breaks():
        yield 1
        raise KeyError("broke")

    @corral.remote
    def use(x):
        return ("got", x)  # (a stored error passed on inside a value would not raise in get)

    refs = list(breaks.remote())
    assert corral.get(use.remote(refs[0])) == ("got", 1)
    with pytest.raises(KeyError):
        corral.get(use.remote(refs[1]))


def test_runtime_env_and_a_generator_body():
    @corral.remote(runtime_env={"env_vars": {"GEN_VAR": "set"}})
    def gen():
        yield os.environ.get("GEN_VAR")

    assert [corral.get(r) for r in gen.remote()] == ["set"]


def test_a_sync_call_sees_its_cancel_and_its_caller_gets_task_cancelled(tmp_path):
    import corral.compat.ray as ray

    @corral.remote
    class Worker:
        def __init__(self):
            self.saw = False

        def loop(self, started):
            open(started, "w").close()
            for _ in range(6000):
                if ray.get_runtime_context().is_canceled():
                    self.saw = True
                    return "stopped"
                time.sleep(0.01)
            return "ran out"

        def saw_cancel(self):
            return self.saw

    w = Worker.remote()
    started = str(tmp_path / "started")
    ref = w.loop.remote(started)
    wait_until(lambda: os.path.exists(started), what="the call to start")
    corral.cancel(ref)
    with pytest.raises(corral.TaskCancelledError):
        corral.get(ref, timeout=60)
    assert corral.get(w.saw_cancel.remote()) is True


def test_sys_exit_in_an_actor_method_ends_its_worker():
    @corral.remote(max_restarts=1)
    class Quitter:
        def quit(self):
            import sys
            sys.exit(1)

        def pid(self):
            return os.getpid()

    q = Quitter.remote()
    first = corral.get(q.pid.remote())
    with pytest.raises(corral.ActorDiedError):
        corral.get(q.quit.remote(), timeout=60)
    assert corral.get(q.pid.remote(), timeout=60) != first  # restarted, in a new worker


def test_numpy_arrays_from_the_cluster_are_read_only_whatever_their_size():
    @corral.remote
    def first(arr):
        try:
            arr[0] = 1
        except ValueError as e:
            return str(e)
        return "written"

    small = np.zeros(10)
    assert "read-only" in corral.get(first.remote(small))
    got = corral.get(corral.put(small))
    assert not got.flags.writeable
    assert small.flags.writeable  # the caller's own array is untouched


def test_wait_returns_at_most_num_returns_ready():
    @corral.remote
    def one():
        return 1

    refs = [one.remote() for _ in range(3)]
    corral.get(refs)
    ready, not_ready = corral.wait(refs, num_returns=1)
    assert ready == refs[:1] and not_ready == refs[1:]


def test_init_runtime_env_reaches_every_task_and_a_tasks_own_wins():
    corral.shutdown()
    corral.init(num_cpus=2, runtime_env={"env_vars": {"A": "job", "B": "job"}})

    @corral.remote(runtime_env={"env_vars": {"B": "task"}})
    def env():
        return os.environ.get("A"), os.environ.get("B")

    @corral.remote
    def plain():
        return os.environ.get("A")

    assert corral.get(env.remote()) == ("job", "task")
    assert corral.get(plain.remote()) == "job"
    corral.shutdown()
    corral.init(num_cpus=2)
    assert corral.get(plain.remote()) is None  # a new init: no job variables
