"""Regressions: each test reproduces a defect found by trying Corral as a user or an attacker would."""
import os
import subprocess
import sys
import textwrap

import pytest

import corral
from conftest import wait_until


def run_script(source, timeout=120):
    """Runs `source` as a user's script (its functions live in __main__ and are pickled by value)."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True,
                       timeout=timeout, env={k: v for k, v in os.environ.items() if k != "CORRAL_ADDRESS"})
    assert p.returncode == 0, f"script failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_nested_task_after_the_driver_used_the_inner_function():
    # The driver's registration handle of `add` travelled inside `fan` (pickled by value) and the
    # worker used it on its own connection: "unknown function handle".
    out = run_script("""
        import corral
        corral.init(num_cpus=2)
        @corral.remote
        def add(a, b): return a + b
        @corral.remote
        def fan(n): return sum(corral.get([add.remote(i, i) for i in range(n)]))
        print(corral.get(add.remote(1, 2)))
        print(corral.get(fan.remote(5)))
        print(corral.get(fan.options(num_cpus=0.5).remote(3)))
    """)
    assert out.split() == ["3", "20", "6"]


@corral.remote
def sleeper(seconds, value):
    import time
    time.sleep(seconds)
    return value


def test_cancel_right_after_submission_is_not_lost(local_cluster):
    # The interrupt reached the worker before it marked the task current and was dropped: the task
    # ran to its end and get() returned its value.
    for _ in range(20):  # the race was timing-dependent: many tries
        ref = sleeper.remote(3, 42)
        corral.cancel(ref)
        with pytest.raises(corral.TaskCancelledError):
            corral.get(ref, timeout=30)
    # The workers survived the interrupts and still run tasks.
    assert corral.get([sleeper.remote(0, i) for i in range(4)], timeout=30) == [0, 1, 2, 3]


class SlowToPickle:
    """A result whose pickling takes a while: the task has returned, its worker is still busy."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        import time
        with open(self.marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(1.5)
        return (str, ("pickled",))


@corral.remote
def returns_slow_result(marker):
    return SlowToPickle(marker)


def test_cancel_after_the_task_returned_leaves_the_worker_alive(local_cluster, tmp_path):
    # A cancel that lands after the task's function returned (here while its result is pickled)
    # must not raise in the worker's own code: that ended the worker.
    import psutil
    marker = tmp_path / "pickling"
    ref = returns_slow_result.remote(str(marker))
    worker_pid = int(wait_until(lambda: marker.exists() and marker.read_text(), what="the result to be pickled"))
    corral.cancel(ref)
    try:
        assert corral.get(ref, timeout=30) == "pickled"
    except corral.TaskCancelledError:
        pass
    # The report reached us after the worker ended, if it did (the agent reaps it first).
    assert psutil.pid_exists(worker_pid) and psutil.Process(worker_pid).status() != psutil.STATUS_ZOMBIE, \
        "the worker that got the late cancel is gone"
