"""Regressions: each test reproduces a defect found by trying Corral as a user or an attacker would."""
import os
import signal
import subprocess
import sys
import textwrap
import time

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


@pytest.fixture(scope="module")
def local():
    corral.init(num_cpus=2)
    yield
    corral.shutdown()


@corral.remote
def sleeper(seconds, value):
    import time
    time.sleep(seconds)
    return value


def test_cancel_right_after_submission_is_not_lost(local):
    # The interrupt reached the worker before it marked the task current and was dropped: the task
    # ran to its end and get() returned its value.
    for _ in range(5):
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


def test_cancel_after_the_task_returned_leaves_the_worker_alive(local, tmp_path):
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


@corral.remote
def effect(key, seconds, ledger):
    """Appends "start", sleeps, then appends "end" (the effect) with this attempt's node."""
    import time
    node = corral.runtime_context().node_id
    with open(ledger, "a") as f:
        f.write(f"start {key} {node} {os.getpid()}\n")
    time.sleep(seconds)
    with open(ledger, "a") as f:
        f.write(f"end {key} {node}\n")
    return node


def _ledger(path, kind):
    with open(path) as f:
        return [line.split()[1:] for line in f if line.startswith(kind + " ")]


def test_superseded_attempts_frozen_with_their_node_never_complete(tmp_path):
    # A laptop lid: the agent and its workers are stopped together, past the dead threshold, while
    # 20 attempts run; the head re-runs them elsewhere; then the node thaws. Before the fix, the
    # workers' watchdog thread raced the task threads after the thaw and the tasks often won:
    # their "end" effects happened a second time. Now the kernel ends each worker at the lease
    # expiry, while it is still stopped.
    import psutil
    from conftest import Cluster
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "6000"))
    try:
        victim = c.add_agent(num_cpus=20)
        c.connect()
        c.wait_nodes(1)
        ledger = str(tmp_path / "ledger")
        refs = [effect.remote(f"k{i}", 4.0, ledger) for i in range(20)]
        wait_until(lambda: os.path.exists(ledger) and len(_ledger(ledger, "start")) == 20, timeout=60,
                   what="20 attempts running on the victim")
        c.add_agent(num_cpus=20)
        frozen = [psutil.Process(victim.pid)] + psutil.Process(victim.pid).children(recursive=True)
        for p in frozen:
            p.send_signal(signal.SIGSTOP)
        try:
            nodes = corral.get(refs, timeout=60)        # re-run on the other node after the dead threshold
            assert victim.node_id not in nodes
            workers = {int(pid) for _, node, pid in _ledger(ledger, "start") if node == victim.node_id}
            assert len(workers) == 20
            # The kernel ended them while they were stopped (zombies: their frozen agent cannot reap).
            for pid in workers:
                assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, \
                    f"worker {pid} outlived its node's lease while stopped"
        finally:
            for p in frozen:
                try:
                    p.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass
        # Back: the victim reconnects; give any thawed attempt the time to finish its effect.
        wait_until(lambda: any(n["node_id"] == victim.node_id and n["state"] == "alive" for n in corral.nodes()),
                   timeout=30, what="the victim to come back")
        time.sleep(2.0)  # an effect would land within this: the tasks' sleeps ended long ago
        ends = _ledger(ledger, "end")
        late = [key for key, node in ends if node == victim.node_id]
        print(f"\n[frozen node] 20 attempts superseded: {len(late)} late effects, {len(ends)} effects in all")
        assert late == [], f"superseded attempts completed their effect after the thaw: {late}"
        assert sorted(key for key, _ in ends) == sorted(f"k{i}" for i in range(20))
    finally:
        corral.shutdown()
        c.stop()
