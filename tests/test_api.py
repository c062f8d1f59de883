"""The Python API on the embedded local cluster: what a user of corral.init() does first."""
import os
import threading
import time

import pytest

import corral
from corral import exceptions

pytestmark = pytest.mark.usefixtures("local_cluster")


@corral.remote
def echo(x):
    return x


@corral.remote
def add(a, b=0):
    return a + b


@corral.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


class Unpicklable:
    def __reduce__(self):
        raise TypeError("I refuse to be pickled")


class CustomError(Exception):
    def __init__(self, code):
        super().__init__(f"code {code}")
        self.code = code


def test_get_single_and_list():
    assert corral.get(echo.remote(5)) == 5
    assert corral.get([echo.remote(i) for i in range(20)]) == list(range(20))
    assert corral.get([]) == []


def test_kwargs_and_rich_values():
    assert corral.get(add.remote(2, b=3)) == 5
    value = {"a": [1, 2, {3}], "b": (None, b"x"), "c": 1.5}
    assert corral.get(echo.remote(value)) == value
    assert corral.get(echo.remote(lambda: 7))() == 7   # closures travel through cloudpickle


def test_put_and_refs_as_arguments():
    ref = corral.put([1, 2, 3])
    assert corral.get(ref) == [1, 2, 3]
    assert corral.get(add.remote(echo.remote(10), b=echo.remote(5))) == 15
    assert corral.get(echo.remote(ref)) == [1, 2, 3]          # resolved before the task runs
    nested = corral.get(echo.remote([ref]))                   # nested refs travel as refs
    assert isinstance(nested[0], corral.ObjectRef)
    assert corral.get(nested[0]) == [1, 2, 3]


def test_wait_orders_and_times_out():
    slow = sleep_then.remote(30, "slow")
    fast = echo.remote("fast")
    ready, pending = corral.wait([slow, fast], num_returns=1, timeout=20)
    assert ready == [fast] and pending == [slow]
    ready, pending = corral.wait([slow], timeout=0.1)
    assert ready == [] and pending == [slow]
    corral.cancel(slow)
    with pytest.raises(exceptions.InvalidArgumentError):
        corral.wait([fast], num_returns=2)


def test_get_timeout():
    ref = sleep_then.remote(30, 1)
    t = time.monotonic()
    with pytest.raises(exceptions.GetTimeoutError) as info:
        corral.get(ref, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - t < 10
    corral.cancel(ref)


def test_remote_exception_keeps_its_type_and_traceback():
    @corral.remote
    def fails(x):
        raise CustomError(x)

    with pytest.raises(CustomError) as info:
        corral.get(fails.remote(7))
    err = info.value
    assert isinstance(err, corral.TaskError)
    assert err.code == 7
    text = str(err)
    assert "fails raised CustomError" in text and "Remote traceback" in text and ", in fails" in text
    assert text.endswith("test_api.CustomError: code 7"), text  # the traceback's last line, nothing after it

    @corral.remote
    def value_error():
        int("not a number")

    with pytest.raises(ValueError):
        corral.get(value_error.remote())


def test_errors_propagate_to_dependents():
    @corral.remote
    def fails():
        raise KeyError("missing")

    with pytest.raises(KeyError):
        corral.get(add.remote(fails.remote(), 1))


def test_unpicklable_argument_is_a_clear_error_at_once():
    with pytest.raises(exceptions.SerializationError, match="arguments of .*echo cannot be pickled"):
        echo.remote(Unpicklable())


def test_unpicklable_result_is_a_clear_error():
    @corral.remote
    def returns_unpicklable():
        return Unpicklable()

    with pytest.raises(exceptions.SerializationError, match="result of .*returns_unpicklable cannot be pickled"):
        corral.get(returns_unpicklable.remote(), timeout=30)


def test_unpicklable_exception_still_reports():
    @corral.remote
    def raises_unpicklable():
        class Local(Exception):
            pass
        err = Local("local class")
        err.payload = threading.Lock()
        raise err

    with pytest.raises(corral.TaskError, match="Local"):
        corral.get(raises_unpicklable.remote(), timeout=30)


def test_too_large_value_without_an_object_store_names_the_limit(monkeypatch):
    # A process on a machine without an agent (or another user's) has no store: values travel in
    # messages, 64 MiB at most (test_object_store.py has the store's side).
    from corral import _store
    monkeypatch.setattr(_store, "local", lambda: None)
    big = b"x" * (65 * 1024 * 1024)
    with pytest.raises(exceptions.ValueTooLargeError, match="at most 67108864 bytes.*no node object store"):
        corral.put(big)
    with pytest.raises(exceptions.ValueTooLargeError):
        echo.remote(big)


def test_remote_on_a_class_makes_an_actor_class_and_checks_its_options_at_once():
    @corral.remote
    class Counter:
        def incr(self):
            return 1
    assert isinstance(Counter, corral.ActorClass)
    assert isinstance(corral.remote(num_cpus=1)(type("Counter", (), {})), corral.ActorClass)
    with pytest.raises(exceptions.InvalidArgumentError, match="max_restarts"):
        corral.remote(max_restarts="3")(type("Counter", (), {}))
    with pytest.raises(exceptions.InvalidArgumentError, match="unknown option"):
        corral.remote(max_restarts=1)(lambda: 1)  # an actor's option on a function


def test_bad_options_are_clear_errors():
    with pytest.raises(exceptions.InvalidArgumentError, match="unknown option"):
        corral.remote(num_cpu=1)
    with pytest.raises(exceptions.InvalidArgumentError, match="num_cpus"):
        echo.options(num_cpus=-1)
    with pytest.raises(exceptions.InvalidArgumentError, match="memory"):
        echo.options(memory="lots")
    with pytest.raises(TypeError, match=r"\.remote\("):
        echo(1)
    with pytest.raises(exceptions.InvalidArgumentError):
        corral.get(5)


def test_runtime_context_inside_a_task():
    @corral.remote(num_cpus=1)
    def ctx():
        c = corral.runtime_context()
        return c.task_id, c.attempt, c.node_id, c.worker_id, c.assigned_resources, os.environ["OMP_NUM_THREADS"]

    ref = ctx.remote()
    task_id, attempt, node_id, worker_id, resources, omp = corral.get(ref)
    assert task_id == ref.hex()
    assert attempt == 0
    assert node_id == corral.nodes()[0]["node_id"]
    assert worker_id
    assert resources["CPU"] == 1
    assert omp == "1"
    assert corral.runtime_context().task_id is None


def test_threads_follow_the_tasks_cpus():
    @corral.remote(num_cpus=2)
    def omp():
        return os.environ["OMP_NUM_THREADS"], os.environ["OPENBLAS_NUM_THREADS"]

    assert corral.get(omp.remote()) == ("2", "2")


def test_nodes_and_status():
    nodes = corral.nodes()
    assert len(nodes) == 1
    n = nodes[0]
    assert n["state"] == "alive"
    assert n["resources"]["CPU"] == 2
    assert n["python_version"].startswith("3.")
    status = corral.cluster_status()
    assert status["counters"]["tasks_submitted"] > 0


def test_future_and_asyncio():
    import asyncio
    assert echo.remote(3).future().result(timeout=30) == 3

    async def main():
        return await echo.remote(4)

    assert asyncio.run(main()) == 4


def _settled_agent_counters():
    """The agent's counters once its heartbeat has caught up with every task the head dispatched."""
    from conftest import wait_until

    def settled():
        status = corral.cluster_status()
        agent = status["nodes"][0]["counters"]
        if agent.get("tasks_started", 0) == status["counters"].get("tasks_dispatched", 0):
            return agent
        return None
    return wait_until(settled, what="the agent's heartbeat to report every dispatched task")


def test_function_ships_once_per_worker():
    @corral.remote
    def shipped(i):
        return i

    before = _settled_agent_counters()
    assert corral.get([shipped.remote(i) for i in range(200)]) == list(range(200))
    after = _settled_agent_counters()
    assert after["tasks_started"] - before["tasks_started"] == 200
    shipped_count = after["functions_shipped_to_workers"] - before.get("functions_shipped_to_workers", 0)
    assert 1 <= shipped_count <= after["workers_alive"]


def test_messages_are_coalesced_under_load():
    before = corral.cluster_status()["counters"]
    corral.get([echo.remote(i) for i in range(3000)])
    after = corral.cluster_status()["counters"]
    frames = after["net_frames_received"] - before["net_frames_received"]
    messages = after["net_messages_received"] - before["net_messages_received"]
    assert messages >= 6000  # 3000 submissions + 3000 results at least
    assert messages > frames * 1.2, (messages, frames)   # several messages share a frame


def test_objects_are_freed_when_refs_drop():
    refs = [echo.remote(i) for i in range(500)]
    corral.get(refs)
    held = corral.cluster_status()["counters"]["objects_held"]
    del refs
    import gc
    gc.collect()
    from conftest import wait_until
    wait_until(lambda: corral.cluster_status()["counters"]["objects_held"] <= held - 500,
               what="the head to free 500 released objects")
