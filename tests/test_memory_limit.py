"""memory= is enforced: the agent stops a task whose worker's own resident memory passes its request,
with OutOfMemoryError naming the task, node and figures, after the task's retries; its neighbours
finish; mapped object-store values do not count against it."""
import os
import time

import numpy as np
import pytest

import corral
from conftest import process_gone, wait_until

MB = 1 << 20


@corral.remote(memory="150MiB", max_retries=0)
def hog(mb):
    block = np.ones(mb * MB // 8)  # touched: resident
    time.sleep(3)
    return float(block[0])


@corral.remote(memory="150MiB", max_retries=1)
def hog_first_time(mb):
    if corral.runtime_context().attempt == 0:
        block = np.ones(mb * MB // 8)
        time.sleep(3)
        return float(block[0])
    return "second attempt fit"


@corral.remote
def neighbour(seconds):
    time.sleep(seconds)
    return "done"


@corral.remote(memory="100MiB", max_retries=0)
def reads_big(a):
    return float(a.sum())


@corral.remote(memory="300MiB", max_retries=0)
def hog_in_a_child(mb, pid_file):
    pid = os.fork()
    if pid == 0:  # the child holds the memory; the task's own worker stays small
        block = np.ones(mb * MB // 8)
        time.sleep(30)
        os._exit(int(block[0]))
    with open(pid_file, "w") as f:
        f.write(str(pid))
    os.waitpid(pid, 0)
    return "the child was not stopped"


@pytest.fixture(scope="module", autouse=True)
def embedded():
    corral.init(num_cpus=2)
    yield
    corral.shutdown()


def test_a_task_over_its_memory_request_is_stopped_and_its_neighbour_finishes():
    other = neighbour.remote(2)
    with pytest.raises(corral.OutOfMemoryError) as e:
        corral.get(hog.remote(400), timeout=60)
    message = str(e.value)
    assert "hog" in message and "over its request of 150" in message
    assert corral.nodes()[0]["node_id"][:8] in message
    assert isinstance(e.value, MemoryError)
    assert corral.get(other, timeout=30) == "done"
    assert corral.get(neighbour.remote(0)) == "done"  # the node goes on


def test_a_task_stopped_for_memory_is_retried_per_its_policy():
    assert corral.get(hog_first_time.remote(400), timeout=60) == "second attempt fit"


def test_values_mapped_from_the_object_store_do_not_count():
    arr = np.ones(300 * MB // 8)  # 300 MB argument, 100 MiB request
    assert corral.get(reads_big.remote(arr), timeout=60) == float(len(arr))


def test_memory_of_processes_a_task_started_counts_and_they_are_stopped_with_it(tmp_path):
    pid_file = tmp_path / "child"
    with pytest.raises(corral.OutOfMemoryError) as e:
        corral.get(hog_in_a_child.remote(600, str(pid_file)), timeout=60)
    assert "the processes it started were stopped" in str(e.value)
    child = int(pid_file.read_text())
    wait_until(lambda: process_gone(child), what="the task's child process to be stopped")
