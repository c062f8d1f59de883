"""The direct call path, on real processes: a caller sends an actor's calls straight to the agent
running the actor and gets the results from it; the head records the calls off the path."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest

import corral
import wire
from conftest import Cluster, corral_cli, make_token, wait_until
from test_actors import Counter, actor_info


def connect_with_one_agent(cluster, num_cpus=1):
    cluster.add_agent(num_cpus=num_cpus)
    cluster.connect()
    cluster.wait_nodes(1)


def head_counter(name):
    return corral.cluster_status()["counters"].get(name, 0)


def in_threads(fn, args):
    """fn(arg) for each of `args`, each on a thread of its own, all at once; returns when all have."""
    threads = [threading.Thread(target=fn, args=(a,)) for a in args]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def call_port(handle):
    node = actor_info(handle)["node_id"]
    address = next(n["call_address"] for n in corral.nodes() if n["node_id"].startswith(node))
    host, port = address.rsplit(":", 1)
    return host or "127.0.0.1", int(port)


@corral.remote(max_concurrency=1)
class Tally:
    def __init__(self):
        self.seen = {}

    def add(self, caller, i):
        self.seen.setdefault(caller, []).append(i)
        return i

    def seen_by(self):
        return self.seen


def test_calls_go_straight_to_the_agent_in_each_callers_order(cluster):
    connect_with_one_agent(cluster, num_cpus=2)
    t = Tally.remote()
    assert corral.get(t.add.remote("warm", 0)) == 0  # its first call waits at the head for the actor
    direct_before, sent_before = head_counter("actor_calls_direct"), head_counter("actor_calls_dispatched")
    results = {}

    def caller(name):
        refs = [t.add.remote(name, i) for i in range(300)]
        results[name] = corral.get(refs, timeout=60)

    in_threads(caller, [f"c{k}" for k in range(3)])
    for k in range(3):
        assert results[f"c{k}"] == list(range(300))
    seen = corral.get(t.seen_by.remote())
    for k in range(3):
        assert seen[f"c{k}"] == list(range(300))  # each caller's calls ran once, in its order
    # The head recorded them as sent by their caller; it sent (almost) none itself.
    assert head_counter("actor_calls_direct") - direct_before >= 900
    assert head_counter("actor_calls_dispatched") - sent_before < 50


@pytest.mark.parametrize("transport", ["tcp", "socket", "result channel"])
def test_a_forged_ticket_is_refused_and_its_call_never_runs(cluster, transport):
    connect_with_one_agent(cluster)
    c = Counter.remote(0)
    assert corral.get(c.incr.remote()) == 1
    actor_id = bytes.fromhex(actor_info(c)["actor_id"])
    hello = wire.field_varint(1, 2) + wire.field_bytes(2, actor_id) + wire.field_bytes(3, b"\x01" * 8) + \
        wire.field_bytes(4, b"\x00" * 32)
    if transport == "result channel":  # (CallHello.results: the same check before it is handed on)
        hello += wire.field_varint(5, 1)
    # (the call's id under the hello's client id: only the ticket is wrong)
    spec = wire.field_bytes(1, b"\x01" * 8 + b"\x00" * 7 + b"\x09") + wire.field_bytes(25, actor_id) + \
        wire.field_bytes(27, "incr")
    call = wire.field_bytes(2, wire.field_bytes(1, spec))
    if transport == "tcp":
        s = socket.create_connection(call_port(c), timeout=10)
    else:  # the agent's Unix socket checks the same ticket
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(next(n["call_socket"] for n in corral.nodes() if n["call_socket"]).removeprefix("unix:"))
    with s:
        s.sendall(wire.frame(wire.field_bytes(1, hello)) + wire.frame(call))
        reply = wire.read_until_closed(s)
    assert b"ticket" in reply  # AgentToCaller.refused says why, then the agent closes
    assert corral.get(c.value.remote()) == 1  # the forged call did not run


def _to_agent(handle):
    """This process's connections to the agent running `handle`'s actor, on its TCP call port or
    its Unix socket: [(fd, family, inode)]."""
    node = actor_info(handle)["node_id"]
    n = next(n for n in corral.nodes() if n["node_id"].startswith(node))
    port, path = int(n["call_address"].rsplit(":", 1)[1]), n["call_socket"].removeprefix("unix:")
    found = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            s = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with s:
            try:
                peer = s.getpeername()
            except OSError:  # listening, or not connected
                continue
            if (s.family == socket.AF_UNIX and path and peer == path) or \
                    (s.family in (socket.AF_INET, socket.AF_INET6) and peer[1] == port):
                found.append((fd, s.family, os.fstat(fd).st_ino))
    return found


def _drop_connections_to(handle):
    """Shuts this process's connections to the agent of `handle`'s actor (as a network fault
    would); their families."""
    dropped = []
    for fd, family, _ in _to_agent(handle):
        dropped.append(family)
        try:
            copy = os.dup(fd)
        except OSError:  # (a result channel the client closed with its call connection, shut just before)
            continue
        with socket.socket(fileno=copy) as s:
            s.shutdown(socket.SHUT_RDWR)
    return dropped


@corral.remote(max_concurrency=1)
class Slow:
    def __init__(self):
        self.n = 0

    def step(self, s):
        import time
        time.sleep(s)
        self.n += 1
        return self.n


@pytest.mark.parametrize("transport", ["socket", "tcp"])
def test_a_broken_connection_to_the_agent_loses_no_call_and_runs_none_twice(cluster, monkeypatch, transport):
    if transport == "tcp":  # (the caller is on the agent's machine: its Unix socket, unless told)
        monkeypatch.setenv("CORRAL_CALL_SOCKET", "0")
    connect_with_one_agent(cluster)
    s = Slow.remote()
    assert corral.get(s.step.remote(0)) == 1
    assert corral.get(s.step.remote(0)) == 2  # (its route is known now)
    lost_before = head_counter("actor_calls_direct")
    refs = [s.step.remote(0.05) for _ in range(20)]
    # (on the agent's Unix socket: the call connection and its result channel)
    assert _drop_connections_to(s) == ([socket.AF_UNIX] * 2 if transport == "socket" else [socket.AF_INET])
    # Their results come from the head instead; each ran once, in order. (A break only this side
    # sees, with results lost on the way, is the head unit test Actors.DirectCallsAreRecorded...'s.)
    assert corral.get(refs, timeout=60) == list(range(3, 23))
    # Later calls find the agent again.
    assert corral.get(s.step.remote(0), timeout=30) == 23
    wait_until(lambda: corral.get(s.step.remote(0)) and head_counter("actor_calls_direct") > lost_before + 20,
               what="calls to go straight to the agent again")


def test_an_agent_that_does_not_answer_holds_no_submission_up(cluster):
    """A caller dialing an actor's agent that takes the connection but never greets (a laptop
    asleep, here a stopped agent) sends its calls through the head meanwhile: `.remote()` returns
    at once instead of waiting out the greeting (2 s), and no call is lost."""
    agent = cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    c = Counter.remote(0)
    wait_until(lambda: corral.get(c.incr.remote()) and _to_agent(c), what="a direct connection")
    n = corral.get(c.incr.remote())
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        assert _drop_connections_to(c)  # the client lets it go, and asks for a route again on the next call
        wait_until(lambda: not _to_agent(c), what="the broken connection closed")
        started = time.monotonic()
        refs = [c.incr.remote() for _ in range(5)]
        took = time.monotonic() - started
        dialing = bool(_to_agent(c))
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    assert took < 1.0, f"5 submissions took {took:.2f} s while the actor's agent did not answer"
    assert dialing, "the first of them asked for a route and dialed the stopped agent (on another thread)"
    assert corral.get(refs, timeout=60) == list(range(n + 1, n + 6))


@pytest.fixture
def patient_cluster():
    """As `cluster`, with a node stopped for 10 s (not 3) before it is declared dead: a test that stops
    one for its dial timeouts (2 s each) holds on a machine whose other work slows the test."""
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "10000"))
    yield c
    corral.shutdown()
    c.stop()


def test_a_stopped_agent_holds_up_only_its_own_actors_route_and_is_dialed_again_soon(patient_cluster):
    """Routes are dialed on several threads: while the dial to a stopped agent waits for its
    greeting (2 s), another actor's route is made at once. Once the stopped agent runs again, its
    actor's calls go straight to it again after seconds (2, 4, 8 ... between tries), not 30."""
    cluster = patient_cluster
    asleep = cluster.add_agent(num_cpus=1, resources={"asleep": 1})
    cluster.add_agent(num_cpus=1, resources={"awake": 1})
    cluster.connect()
    cluster.wait_nodes(2)
    # (Stopped about as long as its lease lasts: the actor is kept through that, which is not what this
    # tests; a call the head sent it meanwhile may be lost with the connection the agent drops when
    # it finds its lease gone, and is then retried.)
    c = Counter.options(resources={"asleep": 1}, keep_running_on_partition=True, max_task_retries=1).remote(0)
    d = Counter.options(resources={"awake": 1}).remote(0)
    wait_until(lambda: corral.get([c.incr.remote(), d.incr.remote()]) and _to_agent(c) and _to_agent(d),
               what="direct connections to both agents")
    nc, nd = corral.get([c.value.remote(), d.value.remote()])
    os.kill(asleep.pid, signal.SIGSTOP)
    try:
        assert _drop_connections_to(c) and _drop_connections_to(d)
        wait_until(lambda: not _to_agent(c) and not _to_agent(d), what="the broken connections closed")
        refs = [c.incr.remote()]  # its route: a dial that is taken but never greeted
        wait_until(lambda: _to_agent(c), what="the dial to the stopped agent")
        refs_d = [d.incr.remote() for _ in range(3)]
        wait_until(lambda: _to_agent(d) or not _to_agent(c), what="the other actor's route")
        dialing = bool(_to_agent(c))
        assert dialing and _to_agent(d), "the other actor's route waited for the dial to the stopped agent"
        assert corral.get(refs_d, timeout=60) == [nd + 1, nd + 2, nd + 3]
        wait_until(lambda: not _to_agent(c), what="the unanswered dial given up")
    finally:
        os.kill(asleep.pid, signal.SIGCONT)
    assert corral.get(refs, timeout=60) == [nc + 1]
    # (The next route is asked 2 s after the dial was given up: 30 s before.)
    wait_until(lambda: corral.get(c.incr.remote()) and _to_agent(c), timeout=15,
               what="calls to the agent that woke to go straight to it again")


def test_waiting_for_direct_calls_times_out_waits_and_shares_the_connection(cluster):
    # A get waiting only for direct calls reads the agent's connection on its own thread; these are
    # the ways out of that read and its sharing between threads.
    connect_with_one_agent(cluster, num_cpus=2)
    s = Slow.remote()
    assert corral.get(s.step.remote(0)) == 1
    assert corral.get(s.step.remote(0)) == 2  # (its route is known now)
    direct_before = head_counter("actor_calls_direct")
    slow = s.step.remote(1.5)
    with pytest.raises(corral.GetTimeoutError):
        corral.get(slow, timeout=0.2)  # the read gives up at the deadline...
    assert corral.get(slow, timeout=30) == 3  # ...and the result is still taken when it comes
    # wait() returns as soon as enough are ready, the rest still running.
    first, second = s.step.remote(0), s.step.remote(2)
    ready, not_ready = corral.wait([second, first], num_returns=1, timeout=30)
    assert ready == [first] and not_ready == [second]
    assert corral.get(second, timeout=30) == 5
    # Several threads waiting on the same connection at once (one reads, the others are handed
    # their values), and a get that waits for a task through the head as well.
    c = Counter.remote(0)
    assert corral.get(c.incr.remote(0)) == 0
    results, errors = {}, []

    def caller(k):
        try:
            results[k] = [corral.get(c.value.remote(), timeout=60) >= 0 for _ in range(40)]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    mixed = corral.get([c.incr.remote(1), _plus_one.remote(41), c.incr.remote(1)], timeout=60)
    for th in threads:
        th.join()
    assert not errors and all(all(r) and len(r) == 40 for r in results.values()) and len(results) == 4
    assert mixed == [1, 42, 2]
    assert head_counter("actor_calls_direct") - direct_before >= 150


def test_a_connection_to_an_agent_lasts_past_its_greeting(cluster):
    # The caller's connection to the agent stays up while it is used, not only for a greeting's
    # deadline (10 s): no new connection, no call handed back, across a call running longer.
    connect_with_one_agent(cluster)
    s = Slow.remote()
    assert corral.get(s.step.remote(0)) == 1
    assert corral.get(s.step.remote(0)) == 2  # (its route is known now)
    def to_agent():
        return sorted(inode for _, _, inode in _to_agent(s))

    before, lost_before = to_agent(), head_counter("direct_calls_lost")
    assert len(before) == 2  # (on the agent's Unix socket: the call connection and its result channel)
    assert corral.get(s.step.remote(11), timeout=60) == 3
    assert to_agent() == before
    assert head_counter("direct_calls_lost") == lost_before


@corral.remote
def _plus_one(x):
    return x + 1


def test_calls_follow_a_restarted_actor_straight_to_it(cluster):
    connect_with_one_agent(cluster)
    c = Counter.options(max_restarts=1, max_task_retries=1).remote(0)
    assert corral.get(c.incr.remote()) == 1
    assert corral.get(c.incr.remote()) == 2
    pid = corral.get(c.pid.remote())
    running = c.sleep.remote(3)
    wait_until(lambda: actor_info(c)["running_calls"] == 1, what="the call to reach the actor")
    os.kill(pid, signal.SIGKILL)
    assert corral.get(running, timeout=60) == 0  # retried on the restarted actor (its constructor again)
    assert corral.get(c.incr.remote(), timeout=30) == 1
    info = actor_info(c)
    assert info["restarts"] == 1 and info["pid"] != pid
    direct = head_counter("actor_calls_direct")
    assert corral.get([c.incr.remote() for _ in range(50)], timeout=30) == list(range(2, 52))
    assert head_counter("actor_calls_direct") - direct >= 49


COUNTER_DRIVER = """
import gc, json, sys, time
import corral
corral.init(address=sys.argv[1])

@corral.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
"""

LONE_CALLS_DRIVER = COUNTER_DRIVER + """
def counters():
    return corral.cluster_status()["counters"]  # (a request: the head has every record sent before it)

c = Counter.remote()
deadline = time.monotonic() + 10
while corral.get(c.incr.remote()) and counters().get("actor_calls_direct", 0) == 0:
    assert time.monotonic() < deadline, "no route to the actor"
before = counters()
refs = []  # kept, and no collection meanwhile: a release is a message to the head, and takes the records
gc.disable()
for _ in range(100):
    refs.append(c.incr.remote())
    corral.get(refs[-1])
gc.enable()
time.sleep(0.2)  # (the worker reports ends it wrote to us itself in batches: the last one reaches the head)
after = counters()
print(json.dumps({k: after.get(k, 0) - before.get(k, 0) for k in ("actor_calls_direct", "direct_call_ends_early")}),
      flush=True)
corral.get(c.incr.remote())  # and nothing more said to the head
print(after["actor_calls_direct"] + 1, flush=True)
sys.stdin.readline()
"""


def test_the_record_of_a_lone_call_follows_its_end_and_still_reaches_the_head(cluster):
    """The head's record of a caller's only call under way waits for the caller's next message to
    the head, or a few ms (decision 47): the call's end gets there first, and the record still does."""
    connect_with_one_agent(cluster)
    # A caller of its own (no other test's threads or garbage), its records held up to 1 s, not
    # 2 ms: on a loaded machine a sync call can outlast 2 ms, and then each batch of records
    # carries the one just sent, ahead of its end.
    env = dict(cluster.env(), CORRAL_TOKEN=cluster.token, CORRAL_LATE_RECORD_US="1000000")
    driver = subprocess.Popen([sys.executable, "-c", LONE_CALLS_DRIVER, cluster.address], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        counted = json.loads(driver.stdout.readline())
        # Every record reached the head; all but those sent with a batch (one a second) after their
        # ends (sent at once, about 20 of 100 are, on a 2-core VM).
        assert counted["actor_calls_direct"] == 100
        assert counted["direct_call_ends_early"] >= 90, counted
        # With nothing else said to the head, the last record leaves on its own: another client sees it.
        last = int(driver.stdout.readline())

        def counted_elsewhere():
            out = corral_cli(cluster, "status", "--json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)["counters"].get("actor_calls_direct", 0) == last

        wait_until(counted_elsewhere, timeout=15, what="the last call's record at the head")
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)


def _head_connection_fd(cluster):
    """The descriptor of this process's TCP connection to the head (None while there is none)."""
    port = int(cluster.address.rsplit(":", 1)[1])
    return next((c.fd for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port),
                None)


def test_a_held_record_survives_a_broken_connection_to_the_same_head(cluster, monkeypatch):
    """A lone call's record held when the connection to the head breaks: the client sends it again
    once it has reconnected (the head kept its session), so the head still records the call."""
    monkeypatch.setenv("CORRAL_LATE_RECORD_US", "300000")  # (held 300 ms: well past the shutdown below)
    connect_with_one_agent(cluster)
    c = Counter.remote(0)
    corral.get(c.incr.remote())
    wait_until(lambda: corral.get(c.incr.remote()) and head_counter("actor_calls_direct") > 0, timeout=10,
               what="a route to the actor")
    direct = head_counter("actor_calls_direct")
    fd = _head_connection_fd(cluster)
    n = corral.get(c.incr.remote())  # its record is held now
    with socket.socket(fileno=os.dup(fd)) as s:
        s.shutdown(socket.SHUT_RDWR)  # as a network fault would
    wait_until(lambda: _head_connection_fd(cluster) is not None, timeout=30, what="a new connection to the head")
    assert head_counter("actor_calls_direct") == direct + 1  # (asked behind the records on the new connection)


def test_calls_go_through_the_head_when_asked(cluster, monkeypatch):
    monkeypatch.setenv("CORRAL_DIRECT_ACTOR_CALLS", "0")
    connect_with_one_agent(cluster)
    c = Counter.remote(0)
    assert corral.get([c.incr.remote() for _ in range(20)]) == list(range(1, 21))
    assert corral.get([c.incr.remote() for _ in range(20)]) == list(range(21, 41))
    assert head_counter("actor_calls_direct") == 0


REVOKED_DRIVER = COUNTER_DRIVER + """
c = Counter.remote()
print([corral.get(c.incr.remote()) for _ in range(5)], flush=True)
print(c.actor_id, flush=True)
sys.stdin.readline()  # held open until the test is done
"""


@pytest.mark.parametrize("transport", ["tcp", "socket"])
def test_a_revoked_tokens_connections_to_agents_are_closed(cluster, transport):
    agent = cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    secret = make_token(cluster, "submit", "visitor")
    env = dict(cluster.env(), CORRAL_TOKEN=secret, CORRAL_CALL_SOCKET="0" if transport == "tcp" else "1")
    driver = subprocess.Popen([sys.executable, "-c", REVOKED_DRIVER, cluster.address], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert driver.stdout.readline().strip() == "[1, 2, 3, 4, 5]"
        node = next(n for n in corral.nodes() if n["call_address"])
        port, path = int(node["call_address"].rsplit(":", 1)[1]), node["call_socket"].removeprefix("unix:")

        def to_agent():
            if transport == "tcp":  # the driver's end
                return [c for c in psutil.Process(driver.pid).net_connections(kind="tcp")
                        if c.raddr and c.raddr.port == port and c.status == "ESTABLISHED"]
            # The agent's end (a caller's end of a Unix socket does not name it); this process
            # calls no actor: every accepted connection there but the listener is the driver's.
            return [c for c in psutil.Process(agent.pid).net_connections(kind="unix") if c.laddr == path][1:]
        assert len(to_agent()) == 1  # its calls went straight to the agent
        out = corral_cli(cluster, "token", "revoke", "visitor")
        assert out.returncode == 0, out.stderr
        # The head tells every agent to drop its callers (a client that kept its connection open
        # would be cut off; this one closes it itself once the head refuses it).
        wait_until(lambda: not to_agent(), what="the revoked caller's connection to the agent to close")
        wait_until(lambda: any(n["counters"].get("callers_dropped") == 1 for n in corral.nodes()),
                   what="the agent to be told to drop the revoked caller")
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)


@pytest.mark.parametrize("transport,end", [("tcp", "revoke"), ("socket", "revoke"), ("tcp", "expire")])
def test_the_agent_cuts_off_a_revoked_tokens_caller(cluster, transport, end):
    # A caller speaking the protocol itself, which keeps its connection to the agent open after it
    # left the head: the agent closes it when the token it was routed with is revoked or expires.
    connect_with_one_agent(cluster)
    if end == "revoke":
        secret = make_token(cluster, "submit", "visitor")
    else:
        out = corral_cli(cluster, "token", "create", "--role", "submit", "--name", "visitor", "--ttl", "15s")
        assert out.returncode == 0, out.stderr
        secret = out.stdout.strip()
    # The token's actor, detached: it outlives the token's clients (an actor's callers are closed
    # when it exits, which would hide whether the agent drops them).
    script = REVOKED_DRIVER.replace("Counter.remote()", 'Counter.options(name="kept", lifetime="detached").remote()')
    driver = subprocess.Popen([sys.executable, "-c", script, cluster.address],
                              env=dict(cluster.env(), CORRAL_TOKEN=secret), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert driver.stdout.readline().strip() == "[1, 2, 3, 4, 5]"
        actor_id = bytes.fromhex(driver.stdout.readline().strip())
        client_id = os.urandom(8)
        head, error = wire.handshake(cluster.address, secret, client_id=client_id)
        assert error == ""
        with head:  # Request{request_id: 1, actor: {op: ROUTE, actor_id}}
            route_request = wire.field_varint(1, 1) + wire.field_bytes(23, wire.field_varint(1, 3) +
                                                                       wire.field_bytes(4, actor_id))
            head.sendall(wire.frame(wire.field_bytes(7, route_request)))
            reply = None
            while reply is None:
                for m in wire.messages(wire.read_frame(head)):
                    reply = wire.fields(m).get(3, [reply])[0]  # HeadToClient.reply
            ticket = wire.fields(wire.fields(reply)[24][0])[3][0]  # Reply.route.ticket
        node = next(n for n in corral.nodes() if n["call_address"])
        if transport == "tcp":
            host, port = node["call_address"].rsplit(":", 1)
            s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=10)
        else:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(node["call_socket"].removeprefix("unix:"))
        with s:
            hello = wire.field_varint(1, 2) + wire.field_bytes(2, actor_id) + wire.field_bytes(3, client_id) + \
                wire.field_bytes(4, ticket)
            s.sendall(wire.frame(wire.field_bytes(1, hello)))
            assert wire.messages(wire.read_frame(s)) == [wire.field_varint(4, 1)]  # AgentToCaller.welcome
            if end == "revoke":
                out = corral_cli(cluster, "token", "revoke", "visitor")
                assert out.returncode == 0, out.stderr
            wire.read_until_closed(s, timeout=30)  # (fails if the agent keeps it open)
        # (not because its actor exited: it runs on)
        assert next(a for a in corral.list_actors() if a["actor_id"] == actor_id.hex())["state"] == "ALIVE"
    finally:
        driver.stdin.close()
        driver.wait(timeout=30)


def agent_counter(name):
    return sum(n["counters"].get(name, 0) for n in corral.nodes())


def test_a_caller_on_the_actors_machine_calls_over_the_agents_unix_socket(cluster):
    # Same machine, same network namespace: the agent's Unix socket (mode 0600 in its state
    # directory), not its TCP call port; CORRAL_CALL_SOCKET=0 keeps a caller on TCP.
    connect_with_one_agent(cluster, num_cpus=3)
    node = next(n for n in corral.nodes() if n["call_address"])
    path = node["call_socket"].removeprefix("unix:")
    assert node["call_socket"].startswith("unix:") and os.stat(path).st_mode & 0o777 == 0o600
    c = Counter.remote(0)
    assert [corral.get(c.incr.remote()) for _ in range(5)] == [1, 2, 3, 4, 5]
    direct = head_counter("actor_calls_direct")
    # (the call connection and its result channel)
    assert direct >= 3 and [f for _, f, _ in _to_agent(c)] == [socket.AF_UNIX] * 2
    wait_until(lambda: agent_counter("callers_on_socket") == 2, what="the agent to report its caller on the socket")
    port = int(node["call_address"].rsplit(":", 1)[1])

    def run_driver(**env):
        p = subprocess.Popen([sys.executable, "-c", REVOKED_DRIVER, cluster.address], env=dict(cluster.env(), **env),
                             text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == "[1, 2, 3, 4, 5]"
        tcp = [x for x in psutil.Process(p.pid).net_connections(kind="tcp")
               if x.raddr and x.raddr.port == port and x.status == "ESTABLISHED"]
        p.stdin.close()
        p.wait(timeout=30)
        return len(tcp)

    assert run_driver(CORRAL_CALL_SOCKET="0") == 1  # its calls on the TCP call port
    assert run_driver() == 0  # and by default over the socket
    wait_until(lambda: agent_counter("callers_on_socket") == 4, what="the agent to report a second caller on it")
    assert head_counter("actor_calls_direct") >= direct + 6  # both drivers' calls went direct
    os.unlink(path)  # a socket that cannot be reached: the call port, straight all the same
    assert run_driver() == 1
    assert head_counter("actor_calls_direct") >= direct + 9


OTHER_USERS_LISTENER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.setgid(65534)
os.setuid(65534)  # (nobody) the listener's credentials are taken at listen(): SO_PEERCRED shows this user
s.listen(8)
print("ready", flush=True)
s.settimeout(60)
conn, _ = s.accept()
conn.settimeout(10)
got = b""
try:
    while chunk := conn.recv(4096):
        got += chunk
except OSError:
    pass
print(len(got), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the other user's listener is made by switching to nobody: needs root")
def test_the_ticket_is_not_sent_to_another_users_socket(cluster):
    # Someone else's listener at the agent's socket path: the caller sees by SO_PEERCRED that it is
    # not its own user's, sends it nothing (its hello would carry the ticket) and calls on the TCP
    # call port instead.
    connect_with_one_agent(cluster)
    node = next(n for n in corral.nodes() if n["call_address"])
    path = node["call_socket"].removeprefix("unix:")
    os.unlink(path)
    fake = subprocess.Popen([sys.executable, "-c", OTHER_USERS_LISTENER, path], text=True, stdout=subprocess.PIPE)
    try:
        assert fake.stdout.readline().strip() == "ready"
        c = Counter.remote(0)
        assert [corral.get(c.incr.remote()) for _ in range(5)] == [1, 2, 3, 4, 5]
        assert fake.stdout.readline().strip() == "0"  # it was connected to, and sent no byte
        wait_until(lambda: [f for _, f, _ in _to_agent(c)] == [socket.AF_INET], what="calls on the TCP call port")
    finally:
        fake.kill()
        fake.wait()
