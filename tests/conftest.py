"""Fixtures: real clusters of real processes on this machine.

`Cluster` starts a head (`corral start --head --block --head-only`) and agents with their own state
dirs, resources and labels, each a child that exits when its stdin closes, so nothing outlives the
test run. Drivers connect with corral.init(address=...).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import corral
from corral import _cluster

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def wait_until(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def corral_cli(cluster, *args, token=None, timeout=60):
    """`corral ARGS --address <the cluster's head>` as its own process, with `token` (default: the
    cluster's admin token) and no other cluster's address or token in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")}
    env["CORRAL_TOKEN"] = token or cluster.token
    return subprocess.run([_cluster.corral_binary(), *args, "--address", cluster.address], env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_token(cluster, role, name):
    """A new token of `role` named `name` (`corral token create`): its secret."""
    out = corral_cli(cluster, "token", "create", "--role", role, "--name", name)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def process_gone(pid):
    """Whether process `pid` has exited (a zombie not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (ProcessLookupError, FileNotFoundError):
        return True


class Process:
    """A `corral start ... --block` child of the test (see corral._cluster.start_process)."""

    def __init__(self, args, log_path, env=None):
        self.args, self.env = list(args), env
        self.log_path = log_path
        self.proc, self.ready = _cluster.start_process(args, log_path, env)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        _cluster.stop_process(self.proc)

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(10)


class Cluster:
    """A head and any number of agents, as separate processes."""

    def __init__(self, head_args=(), head_env=None):
        self.dir = tempfile.mkdtemp(prefix="corral-test-")
        self.bin = _cluster.corral_binary()
        self.head = Process([self.bin, "start", "--head", "--block", "--head-only", "--port", "0", "--http-port", "0",
                             "--state-dir", f"{self.dir}/head", "--exit-on-stdin-eof", *head_args],
                            f"{self.dir}/head.log", env=dict(os.environ, **head_env) if head_env else None)
        self.address = self.head.ready
        with open(f"{self.dir}/head/token") as f:
            self.token = f.read().strip()
        self.agents = []

    def env(self):
        env = dict(os.environ)
        env["CORRAL_TOKEN"] = self.token
        env.pop("CORRAL_ADDRESS", None)
        return env

    def add_agent(self, num_cpus=1, num_gpus=0, resources=None, labels=None, extra=(), env=None, python_path=TESTS_DIR):
        n = len(self.agents)
        args = [self.bin, "start", "--address", self.address, "--block", "--exit-on-stdin-eof",
                "--state-dir", f"{self.dir}/agent{n}", "--num-cpus", str(num_cpus),
                *(["--num-gpus", str(num_gpus)] if num_gpus is not None else []),  # None: what NVML finds
                "--python", sys.executable, "--python-path", python_path, *extra]
        if resources:
            args += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        agent = Process(args, f"{self.dir}/agent{n}.log", env={**self.env(), **(env or {})})
        agent.node_id = agent.ready
        self.agents.append(agent)
        return agent

    def connect(self):
        os.environ["CORRAL_TOKEN"] = self.token
        corral.init(address=self.address)
        del os.environ["CORRAL_TOKEN"]

    def wait_nodes(self, count):
        return wait_until(lambda: [n for n in corral.nodes() if n["state"] == "alive" and n["python_version"]]
                          if sum(n["state"] == "alive" and bool(n["python_version"]) for n in corral.nodes()) >= count
                          else None, what=f"{count} live nodes")

    def restart_head(self, while_down=None):
        """kill -9 the head, call `while_down()`, and start it again on the same port and state dir;
        agents and drivers reconnect to it."""
        with open(f"{self.dir}/head/pid") as f:
            assert int(f.read()) == self.head.pid, "the process signalled is the head itself"
        self.head.kill()
        self.head.proc.stdin.close()
        self.head.proc.stdout.close()
        if while_down:
            while_down()
        args = self.head.args
        args[args.index("--port") + 1] = self.address.rsplit(":", 1)[1]
        self.head = Process(args, self.head.log_path, env=self.head.env)
        assert self.head.ready == self.address, (self.head.ready, self.address)

    def stop(self):
        for a in self.agents:
            a.stop()
            # An agent that was killed left its object store behind.
            if getattr(a, "node_id", None):
                shutil.rmtree(f"/dev/shm/corral-{a.node_id[:16]}", ignore_errors=True)
        self.head.stop()


@pytest.fixture(scope="module")
def local_cluster():
    """An embedded cluster with 2 CPUs (what `corral.init()` gives)."""
    corral.init(num_cpus=2)
    yield
    corral.shutdown()


@pytest.fixture
def cluster():
    """A fresh head with no agents; the test adds them. The driver connects after."""
    c = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    yield c
    corral.shutdown()
    c.stop()
