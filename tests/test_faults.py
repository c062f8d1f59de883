"""Workers that die, cancel, nesting deeper than the pool, a 10,000-task DAG, fork, orphans."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import corral
from corral import exceptions

pytestmark = pytest.mark.usefixtures("local_cluster")


@corral.remote
def echo(x):
    return x


def test_worker_death_is_retried_then_reported(tmp_path):
    marker = tmp_path / "attempts"

    @corral.remote(max_retries=2)
    def dies_twice(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            os._exit(1)
        return "third time lucky"

    assert corral.get(dies_twice.remote(str(marker)), timeout=60) == "third time lucky"
    assert marker.read_text() == "xxx"

    @corral.remote(max_retries=1)
    def segfaults():
        import ctypes
        ctypes.string_at(0)

    with pytest.raises(exceptions.WorkerCrashedError) as info:
        corral.get(segfaults.remote(), timeout=60)
    node = corral.nodes()[0]["node_id"]
    assert node[:8] in str(info.value) and "SIGSEGV" in str(info.value)
    assert corral.get(echo.remote("pool recovered"), timeout=60) == "pool recovered"


def test_killed_worker(tmp_path):
    pidfile = tmp_path / "pid"

    @corral.remote(max_retries=0)
    def hang(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)

    ref = hang.remote(str(pidfile))
    from conftest import wait_until
    wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="the task to start")
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    with pytest.raises(exceptions.WorkerCrashedError, match="SIGKILL"):
        corral.get(ref, timeout=60)


def test_cancel_pending_and_running(tmp_path):
    ran, started = tmp_path / "ran", tmp_path / "started"

    @corral.remote(num_cpus=2)
    def blocker(path):
        open(path, "w").close()
        time.sleep(60)

    @corral.remote
    def touch(path):
        open(path, "w").close()

    running = blocker.remote(str(started))
    from conftest import wait_until
    wait_until(started.exists, what="the blocking task to start")
    pending = touch.remote(str(ran))     # cannot start: blocker holds both CPUs
    corral.cancel(pending)
    with pytest.raises(exceptions.TaskCancelledError):
        corral.get(pending, timeout=30)
    corral.cancel(running)
    with pytest.raises(exceptions.TaskCancelledError):
        corral.get(running, timeout=30)
    assert corral.get(echo.remote(1), timeout=30) == 1   # CPUs are free again
    assert not ran.exists()
    corral.cancel(running)  # cancelling a finished task does nothing


@corral.remote
def nest(depth):
    if depth == 0:
        return 0
    return 1 + corral.get(nest.remote(depth - 1))


def test_nesting_deeper_than_the_pool():
    assert corral.get(nest.remote(8), timeout=120) == 8   # 2 CPUs, 9 tasks each waiting on the next


@corral.remote
def leaf(i):
    return i


@corral.remote
def combine(*xs):
    return sum(xs)


def test_ten_thousand_task_dag():
    level = [leaf.remote(i) for i in range(8192)]
    tasks = len(level)
    while len(level) > 1:
        level = [combine.remote(*level[i:i + 4]) for i in range(0, len(level), 4)]
        tasks += len(level)
    assert tasks >= 10000
    assert corral.get(level[0], timeout=300) == sum(range(8192))


def test_fork_in_driver():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            value = corral.get(echo.remote("from child"), timeout=60)
            os.write(w, value.encode())
        finally:
            os._exit(0)
    os.close(w)
    assert corral.get(echo.remote("from parent"), timeout=60) == "from parent"
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 100) == b"from child"
    assert status == 0
    assert corral.get(echo.remote("parent still works"), timeout=60) == "parent still works"


def test_worker_output_reaches_the_driver_and_the_log(capfd):
    @corral.remote
    def speak():
        print("hello from a task")
        import sys
        print("and on stderr", file=sys.stderr)
        return corral.runtime_context().node_id

    node = corral.get(speak.remote())
    from conftest import wait_until
    seen = {"out": "", "err": ""}

    def both():
        out, err = capfd.readouterr()
        seen["out"] += out
        seen["err"] += err
        return "hello from a task" in seen["out"] and "and on stderr" in seen["err"]

    wait_until(both, what="task output at the driver")
    line = [l for l in seen["out"].splitlines() if "hello from a task" in l][0]
    assert "speak" in line and f"node={node[:8]}" in line
    logs = os.path.join(corral._runtime.cluster.state_dir, "agent", "logs")
    assert any("hello from a task" in open(os.path.join(logs, f)).read() for f in os.listdir(logs))


def test_kill_9_of_driver_leaves_no_orphans(tmp_path):
    import psutil
    script = textwrap.dedent("""
        import corral, sys
        corral.init(num_cpus=1)
        @corral.remote
        def f():
            return 1
        corral.get(f.remote())
        print(corral._runtime.cluster.state_dir, flush=True)
        sys.stdin.read()
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    state_dir = p.stdout.readline().decode().strip()
    assert state_dir
    family = [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
    assert len(family) >= 2  # the head (with this machine's agent inside) and at least one worker
    p.kill()
    p.wait()
    from conftest import wait_until

    def gone():
        return not [pid for pid in family if psutil.pid_exists(pid) and
                    psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    wait_until(gone, timeout=20, what=f"processes {family} to exit")


@corral.remote
def fib(n):
    if n < 2:
        return n
    a, b = fib.remote(n - 1), fib.remote(n - 2)
    return corral.get(a) + corral.get(b)


def test_recursion_of_short_tasks_does_not_deadlock():
    # Most calls are quick leaves, so the function counts as short; a child must still never be
    # queued behind the parent that waits for it.
    assert corral.get(fib.remote(11), timeout=180) == 89


def test_oversized_arguments_fail_clearly_instead_of_hanging(monkeypatch):
    # Values inline in messages (a process without an object store) whose sum passes a message.
    from corral import _store
    monkeypatch.setattr(_store, "local", lambda: None)
    a = corral.put(b"a" * (40 << 20))
    b = corral.put(b"b" * (40 << 20))

    @corral.remote
    def both(x, y):
        return len(x) + len(y)

    with pytest.raises(exceptions.CorralError, match="over the .*limit of one message"):
        corral.get(both.remote(a, b), timeout=60)
    assert corral.get(echo.remote("still fine"), timeout=30) == "still fine"


def test_concurrent_gets_of_a_ref_that_arrived_pickled():
    import threading

    @corral.remote
    def make():
        return [corral.put("inner value")]

    inner = corral.get(make.remote())[0]
    results = []
    threads = [threading.Thread(target=lambda: results.append(corral.get(inner, timeout=30))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["inner value"] * 4


def test_cancel_force_kills_a_task_that_ignores_interrupts(tmp_path):
    started = tmp_path / "started"

    @corral.remote(max_retries=0)
    def stubborn(path):
        child = os.fork()
        if child == 0:  # something the task started: it ends with the task
            time.sleep(60)
            os._exit(0)
        announced = False
        while True:
            try:  # (an interrupt that comes while it announces itself is ignored too)
                if not announced:
                    with open(path + ".part", "w") as f:
                        f.write(str(child))
                    os.rename(path + ".part", path)  # whole, and only once the task ignores interrupts
                    announced = True
                time.sleep(60)
            except KeyboardInterrupt:
                pass

    ref = stubborn.remote(str(started))
    from conftest import wait_until
    wait_until(started.exists, what="the task to start")
    corral.cancel(ref)                     # interrupt: ignored by this task
    ready, _ = corral.wait([ref], timeout=1.0)
    assert not ready
    corral.cancel(ref, force=True)         # kill: always works
    with pytest.raises(exceptions.TaskCancelledError):
        corral.get(ref, timeout=30)
    from conftest import process_gone
    child = int(started.read_text())
    wait_until(lambda: process_gone(child), what="the process the task started to be stopped with it")
