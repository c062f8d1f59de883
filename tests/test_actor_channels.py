"""Actor calls on the actor's machine: the worker writes results to its caller itself (result
channels, decision 46) and takes the caller's calls itself (call channels, decision 50)."""
import os
import signal
import time

import pytest

import corral
from conftest import wait_until
from test_actor_direct import agent_counter, connect_with_one_agent, in_threads
from test_actors import actor_info


@corral.remote
class Echo:
    def __init__(self):
        self.pid = os.getpid()

    def echo(self, x):
        return x

    def pid_and(self, x):
        return self.pid, x


def test_the_actors_worker_writes_results_to_a_caller_on_its_machine(cluster):
    # Decision 46: beside its call connection the caller opens a result channel, which the agent
    # hands to the actor's worker; results come on it, the agent hearing of each end after.
    connect_with_one_agent(cluster, num_cpus=2)
    e = Echo.remote()
    assert corral.get(e.echo.remote(0)) == 0
    by_worker = agent_counter("actor_results_by_worker")
    assert [corral.get(e.echo.remote(i)) for i in range(100)] == list(range(100))
    big = os.urandom(300 << 10)  # in the node's store, found by the node the worker names
    assert corral.get(e.echo.remote(big), timeout=60) == big
    # Each sync call finds the worker with nothing queued: its result goes on the channel (but a
    # first one or two, sent before the agent handed the channel over).
    wait_until(lambda: agent_counter("actor_results_by_worker") - by_worker >= 95, timeout=10,
               what="the worker's deliveries counted")
    assert agent_counter("result_channels") == 1
    # Pipelined calls (their results partly by the agent, many to a frame) and several threads.
    assert corral.get([e.echo.remote(i) for i in range(200)], timeout=60) == list(range(200))
    results = {}

    def caller(k):
        results[k] = corral.get([e.echo.remote((k, i)) for i in range(100)], timeout=60)

    in_threads(caller, range(3))
    assert all(results[k] == [(k, i) for i in range(100)] for k in range(3))


@corral.remote(max_concurrency=4)
class ThreadedEcho:
    def echo(self, x):
        return x


@corral.remote(max_concurrency=4)
class AsyncEcho:
    async def echo(self, x):
        return x


@pytest.mark.parametrize("cls", [ThreadedEcho, AsyncEcho], ids=["threaded", "async"])
def test_threaded_and_async_actors_write_results_on_the_channel_too(cluster, cls):
    # Their calls finish on other threads than the one reading calls: results from several at once.
    connect_with_one_agent(cluster, num_cpus=2)
    e = cls.remote()
    assert corral.get(e.echo.remote(0)) == 0
    by_worker = agent_counter("actor_results_by_worker")
    assert [corral.get(e.echo.remote(i)) for i in range(60)] == list(range(60))
    wait_until(lambda: agent_counter("actor_results_by_worker") - by_worker >= 55, timeout=10,
               what="the worker's deliveries counted")
    results = {}

    def caller(k):
        results[k] = [corral.get(e.echo.remote((k, i)), timeout=30) for i in range(60)]

    in_threads(caller, range(4))
    assert all(results[k] == [(k, i) for i in range(60)] for k in range(4))


def test_a_result_channel_broken_by_its_workers_death_loses_no_result(cluster):
    connect_with_one_agent(cluster, num_cpus=2)
    e = Echo.options(max_restarts=1, max_task_retries=1).remote()
    pid, _ = corral.get(e.pid_and.remote(0))
    assert [corral.get(e.echo.remote(i)) for i in range(20)] == list(range(20))
    os.kill(pid, signal.SIGKILL)
    # Calls go on: to the restarted actor, whose results come by whichever way is open.
    assert corral.get([e.echo.remote(i) for i in range(50)], timeout=60) == list(range(50))
    new_pid, _ = corral.get(e.pid_and.remote(0), timeout=30)
    assert new_pid != pid
    by_worker = agent_counter("actor_results_by_worker")
    wait_until(lambda: corral.get(e.echo.remote(1)) == 1 and agent_counter("actor_results_by_worker") > by_worker + 20,
               timeout=30, what="results from the restarted actor's worker on a new result channel")


def test_results_come_through_the_agent_when_asked(cluster, monkeypatch):
    monkeypatch.setenv("CORRAL_RESULT_CHANNEL", "0")
    connect_with_one_agent(cluster)
    e = Echo.remote()
    assert corral.get([e.echo.remote(i) for i in range(50)]) == list(range(50))
    assert [corral.get(e.echo.remote(i)) for i in range(50)] == list(range(50))
    wait_until(lambda: agent_counter("actor_calls_direct") >= 40, timeout=10, what="the direct calls counted")
    assert agent_counter("actor_results_by_worker") == 0 and agent_counter("result_channels") == 0


@corral.remote(max_restarts=1, max_task_retries=0)
class Journal:
    """Appends what its calls do to a file, so a test sees each call run (and how often)."""

    def __init__(self, path):
        self.path = path

    def pid(self):
        return os.getpid()

    def step(self, i, seconds=0.0):
        with open(self.path, "a") as f:
            f.write(f"start {i}\n")
        time.sleep(seconds)
        with open(self.path, "a") as f:
            f.write(f"end {i}\n")
        return i


def _lines(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


def settled_agent_counter(name):
    """The agents' counter once it stopped moving (agents send theirs with each heartbeat)."""
    def settled():
        now = agent_counter(name)
        time.sleep(0.5)
        return agent_counter(name) == now

    wait_until(settled, timeout=30, what=f"the agents' {name} counter to settle")
    return agent_counter(name)


def _calls_on_channels_from_now(handle):
    """Sync calls until the caller sends them to the actor's worker itself (decision 50)."""
    wait_until(lambda: handle.pid.remote() and corral.get(handle.pid.remote())
               and agent_counter("actor_calls_on_channels") > 0, timeout=30,
               what="calls on the worker's call channel")


def test_a_caller_on_the_actors_machine_sends_its_calls_to_the_actors_worker_itself(cluster, tmp_path):
    # Decision 50: once the worker welcomes the caller on its result channel, calls go there too;
    # the agent hears of each only from the worker's reports (after the result), not from the caller.
    connect_with_one_agent(cluster, num_cpus=2)
    j = Journal.remote(str(tmp_path / "journal"))
    _calls_on_channels_from_now(j)
    on_channels, via_agent = settled_agent_counter("actor_calls_on_channels"), agent_counter("actor_calls_direct")
    assert [corral.get(j.step.remote(i)) for i in range(100)] == list(range(100))
    assert corral.get([j.step.remote(i) for i in range(100, 400)], timeout=60) == list(range(100, 400))
    assert settled_agent_counter("actor_calls_on_channels") - on_channels == 400
    assert agent_counter("actor_calls_direct") == via_agent
    steps = [line for line in _lines(tmp_path / "journal") if line.startswith("start")]
    assert steps == [f"start {i}" for i in range(400)]  # once each, in order


def test_calls_go_to_the_agent_when_asked(cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("CORRAL_CALL_CHANNEL", "0")
    connect_with_one_agent(cluster, num_cpus=2)
    j = Journal.remote(str(tmp_path / "journal"))
    wait_until(lambda: corral.get(j.pid.remote()) and agent_counter("actor_calls_direct") > 0, what="direct calls")
    via_agent = settled_agent_counter("actor_calls_direct")
    assert [corral.get(j.step.remote(i)) for i in range(50)] == list(range(50))
    assert settled_agent_counter("actor_calls_direct") - via_agent == 50
    assert agent_counter("actor_calls_on_channels") == 0


@pytest.mark.parametrize("retries", [0, 1])
def test_channel_calls_die_with_the_actors_worker_whether_it_read_them_or_not(cluster, tmp_path, retries):
    # As in Ray, a call sent to the actor counts as an attempt when its worker dies, the one running
    # and those queued behind it (here unread on the call channel): with max_task_retries=0 each
    # fails naming the cause; with 1 each runs again on the restarted actor, in order.
    connect_with_one_agent(cluster, num_cpus=2)
    journal = tmp_path / "journal"
    j = Journal.options(max_task_retries=retries).remote(str(journal))
    _calls_on_channels_from_now(j)
    pid = corral.get(j.pid.remote())
    running = j.step.remote(0, 30 if retries == 0 else 2)
    queued = [j.step.remote(i) for i in range(1, 6)]
    wait_until(lambda: journal.exists() and "start 0" in _lines(journal), what="the first call running")
    os.kill(pid, signal.SIGKILL)
    if retries == 0:
        for ref in [running] + queued:
            with pytest.raises(corral.ActorDiedError, match="SIGKILL"):
                corral.get(ref, timeout=60)
        assert _lines(journal) == ["start 0"]
    else:
        assert corral.get([running] + queued, timeout=60) == [0, 1, 2, 3, 4, 5]
        assert _lines(journal) == ["start 0"] + [f"{what} {i}" for i in range(6) for what in ("start", "end")]
    assert actor_info(j)["restarts"] == 1
    assert corral.get(j.pid.remote(), timeout=30) != pid


def test_a_cancelled_channel_call_never_runs_unless_the_worker_took_it_and_then_is_marked(cluster, tmp_path):
    connect_with_one_agent(cluster, num_cpus=2)
    journal = tmp_path / "journal"
    j = Journal.remote(str(journal))
    _calls_on_channels_from_now(j)
    running = j.step.remote(0, 2)
    queued = j.step.remote(1)
    wait_until(lambda: journal.exists() and "start 0" in _lines(journal), what="the first call running")
    corral.cancel(queued)
    wait_until(lambda: agent_counter("channel_calls_cancelled_unread") == 1, what="the agent refusing it")
    with pytest.raises(corral.TaskCancelledError):
        corral.get(queued, timeout=60)
    # The running one, taken from the channel, is found by the number the worker gave it: marked
    # cancelled (a sync method runs on; its caller gets TaskCancelledError).
    signalled = agent_counter("actor_call_cancels_signalled")
    corral.cancel(running)
    wait_until(lambda: agent_counter("actor_call_cancels_signalled") > signalled, what="the cancel signalled")
    with pytest.raises(corral.TaskCancelledError):
        corral.get(running, timeout=60)
    assert corral.get(j.step.remote(2), timeout=60) == 2
    assert [line for line in _lines(journal) if line.startswith("start")] == ["start 0", "start 2"]


@pytest.mark.parametrize("cls", [ThreadedEcho, AsyncEcho], ids=["threaded", "async"])
def test_threaded_and_async_actors_take_calls_on_the_channel_too(cluster, cls):
    # Their calls run on other threads than the one reading the channels: a channel handed over
    # while that thread waits is still read.
    connect_with_one_agent(cluster, num_cpus=2)
    e = cls.remote()
    wait_until(lambda: corral.get(e.echo.remote(1)) == 1 and agent_counter("actor_calls_on_channels") > 0,
               timeout=30, what="calls on the worker's call channel")
    assert [corral.get(e.echo.remote(i)) for i in range(50)] == list(range(50))
    assert corral.get([e.echo.remote(i) for i in range(300)], timeout=60) == list(range(300))


@corral.remote
class Gate:
    def echo(self, x):
        return x

    def sleep(self, seconds):
        time.sleep(seconds)

    def wait_for(self, path, seconds):
        deadline = time.monotonic() + seconds
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.path.exists(path)


def test_a_result_held_for_a_pipelining_caller_does_not_wait_for_the_next_call(cluster, tmp_path):
    # Results of calls read together from a channel leave many to a frame; one whose next call runs
    # long still reaches its caller meanwhile: here that next call waits for what the caller does
    # once it has the result.
    connect_with_one_agent(cluster, num_cpus=2)
    g = Gate.remote()
    wait_until(lambda: corral.get(g.echo.remote(1)) == 1 and agent_counter("actor_calls_on_channels") > 0,
               timeout=30, what="calls on the worker's call channel")
    gate = tmp_path / "gate"
    busy = g.sleep.remote(0.5)  # (the calls below reach the worker together, while it sleeps)
    quick = [g.echo.remote(i) for i in range(10)]
    waiter = g.wait_for.remote(str(gate), 30)
    assert corral.get(quick, timeout=20) == list(range(10))
    gate.touch()
    assert corral.get(waiter, timeout=60) is True
    corral.get(busy)
