"""The `corral` command as an operator uses it: start a head, join an agent, status, stop."""
import os
import stat
import subprocess
import sys
import textwrap

import psutil
import pytest

from conftest import wait_until
from corral import _cluster

BIN = _cluster.corral_binary()


def run(args, env, timeout=60):
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def home(tmp_path):
    env = dict(os.environ)
    env["CORRAL_HOME"] = str(tmp_path / "home")
    env.pop("CORRAL_TOKEN", None)
    env.pop("CORRAL_ADDRESS", None)
    env["CORRAL_PYTHON"] = sys.executable
    yield env
    run(["stop", "--timeout", "5"], env)


def test_help():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for word in ("start", "status", "stop", "drain"):
        assert word in out.stdout
    out = subprocess.run([BIN, "start", "--help"], capture_output=True, text=True)
    assert "--num-cpus" in out.stdout and "--labels" in out.stdout and "--resources" in out.stdout
    assert "--interruptible-only" in out.stdout and "--drain-on-sleep" in out.stdout
    out = subprocess.run([BIN, "drain", "--help"], capture_output=True, text=True)
    assert "--timeout" in out.stdout and "NODE" in out.stdout


def test_start_status_join_stop(home, tmp_path):
    out = run(["start", "--head", "--port", "0", "--http-port", "0", "--num-cpus", "1"], home)
    assert out.returncode == 0, out.stderr
    assert "corral start --address 127.0.0.1:" in out.stdout and "CORRAL_TOKEN=" in out.stdout
    head_dir = os.path.join(home["CORRAL_HOME"], "head")
    token_path = os.path.join(head_dir, "token")
    assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
    address = open(os.path.join(head_dir, "address")).read().strip()
    assert address.startswith("127.0.0.1:")

    wait_until(lambda: "alive" in run(["status"], home).stdout, what="the head's own node")

    join = [l for l in out.stdout.splitlines() if "corral start --address" in l][0].strip()
    token = join.split()[0].split("=", 1)[1]
    # Other machines join with the agents' token, not the admin one.
    assert token.startswith("ct_") and token != open(token_path).read().strip()
    assert stat.S_IMODE(os.stat(os.path.join(head_dir, "agent-token")).st_mode) == 0o600
    env = dict(home, CORRAL_TOKEN=token)
    agent_dir = os.path.join(home["CORRAL_HOME"], "agent2")  # under CORRAL_HOME: `corral stop` finds it
    out = run(["start", "--address", address, "--state-dir", agent_dir, "--num-cpus", "1",
               "--labels", "zone=lab"], env)
    assert out.returncode == 0, out.stderr
    assert "joined the head" in out.stdout
    status = run(["status"], home).stdout
    assert status.count("alive") == 2 and "zone=lab" in status
    denied = run(["token", "list"], env)  # the agents' token joins nodes; it cannot administer
    assert denied.returncode != 0 and "needs admin" in denied.stderr

    script = textwrap.dedent("""
        import corral
        corral.init(address="auto")
        @corral.remote
        def f(x):
            return x + 1
        print(corral.get(f.remote(41)))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=home, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "42", done.stderr

    pids = [int(open(os.path.join(d, "pid")).read()) for d in (head_dir, agent_dir)]
    out = run(["stop"], home)
    assert out.returncode == 0 and "Stopped" in out.stdout
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in pids), what="the head and the agent to exit")
    assert "Nothing to stop" in run(["stop"], home).stdout


def test_stop_a_head_started_with_its_own_state_dir(home, tmp_path):
    state = str(tmp_path / "elsewhere")
    out = run(["start", "--head", "--port", "0", "--http-port", "0", "--num-cpus", "1", "--state-dir", state], home)
    assert out.returncode == 0, out.stderr
    pid = int(open(os.path.join(state, "pid")).read())
    # What it prints to reach it works as printed: the token is not where commands look by default.
    printed = out.stdout
    status_cmd = next(line for line in printed.splitlines() if line.startswith("See the cluster:"))
    status_cmd = status_cmd.removeprefix("See the cluster:").split("Stop it:")[0].strip()
    assert "CORRAL_TOKEN_FILE=" in status_cmd, printed
    status = subprocess.run(status_cmd.replace("corral ", BIN + " ", 1), shell=True, env=home, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0 and "Cluster at" in status.stdout, status.stderr
    token_file = status_cmd.split("CORRAL_TOKEN_FILE=")[1].split()[0]
    address = printed.split('corral.init(address="')[1].split('"')[0]
    driver = subprocess.run([sys.executable, "-c", f"import corral; corral.init(address={address!r}); print(corral.nodes()[0]['state'])"],
                            env=dict(home, CORRAL_TOKEN_FILE=token_file), capture_output=True, text=True, timeout=60)
    assert driver.stdout.strip() == "alive", driver.stderr
    assert f"corral stop --state-dir {state}" in printed
    out = run(["stop"], home)  # not under CORRAL_HOME: says how to reach it
    assert "Nothing to stop" in out.stdout and "--state-dir" in out.stdout
    assert psutil.pid_exists(pid)
    out = run(["stop", "--state-dir", state], home)
    assert out.returncode == 0 and "Stopped" in out.stdout, out.stdout
    wait_until(lambda: not (psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE),
               what="the head to exit")


def test_agent_with_bad_token_fails_clearly(home, tmp_path):
    out = run(["start", "--head", "--port", "0", "--http-port", "0", "--head-only"], home)
    assert out.returncode == 0, out.stderr
    address = open(os.path.join(home["CORRAL_HOME"], "head", "address")).read().strip()
    out = run(["start", "--address", address, "--state-dir", str(tmp_path / "a")], dict(home, CORRAL_TOKEN="nope"))
    assert out.returncode != 0
    assert "bad token" in out.stderr



def test_second_head_on_same_state_dir_is_refused(home):
    assert run(["start", "--head", "--port", "0", "--http-port", "0", "--head-only"], home).returncode == 0
    out = run(["start", "--head", "--port", "0", "--http-port", "0", "--head-only"], home)
    assert out.returncode != 0 and "state dir" in out.stderr


def test_drain_on_sleep_without_logind_fails_clearly(home, tmp_path):
    env = dict(home, CORRAL_TOKEN="x", DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus")
    out = run(["start", "--address", "127.0.0.1:9", "--block", "--drain-on-sleep", "--state-dir", str(tmp_path / "a")],
              env, timeout=30)
    assert out.returncode == 1
    assert "--drain-on-sleep cannot reach the system D-Bus" in out.stderr and "systemd-logind" in out.stderr


def test_drain_of_unknown_node_says_what_to_give(home):
    assert run(["start", "--head", "--port", "0", "--http-port", "0", "--head-only"], home).returncode == 0
    out = run(["drain", "ffffffff", "--timeout", "1"], home)
    assert out.returncode == 1
    assert "no live node matches 'ffffffff'" in out.stderr and "corral status" in out.stderr


def _submit_script(home, code, timeout=60):
    """Runs `code` in a fresh driver connected to the head under CORRAL_HOME; returns its stdout."""
    script = "import corral, durable_tasks\ncorral.init(address='auto')\n" + textwrap.dedent(code)
    env = dict(home, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_start_with_tasks_is_ready_for_them_and_a_restart_does_not_hold_new_work(home):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    start = ["start", "--head", "--port", "0", "--http-port", "0", "--num-cpus", "2", "--tasks", "durable_tasks",
             "--python-path", tests_dir]
    out = run(start, home)
    assert out.returncode == 0, out.stderr
    # Ready means ready for what it was asked to run: a by-name submission of its tasks at once.
    sub = run(["submit", "durable_tasks:add", "--args", "[1, 2]"], home)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    # Tasks waiting for their countdown when the head stops, then a restart on the same state dir.
    _submit_script(home, "durable_tasks.add.options(countdown=2).submit(5, 5)")
    assert run(["stop", "--timeout", "10"], home).returncode == 0
    out = run(start, home)
    assert out.returncode == 0, out.stderr
    # No agent holds anything from before: neither new work nor the waiting tasks wait for the
    # grace meant for runs that returning agents hold (the dead threshold, 30 s here).
    got = _submit_script(home, """
        import time
        t0 = time.monotonic()
        print(durable_tasks.add.submit(20, 22).get(timeout=60), round(time.monotonic() - t0, 1))
        while any(t["state"] != "SUCCESS" for t in corral.tasks()):
            time.sleep(0.1)
        print(round(time.monotonic() - t0, 1))
    """)
    first, everything = got.split("\n")[:2]
    value, seconds = first.split()
    print(f"\n[after a restart] a new task took {seconds}s, all tasks done after {everything}s")
    assert value == "42" and float(seconds) < 10, got
    assert float(everything) < 10, got


def test_a_node_whose_workers_cannot_start_still_starts_and_says_why(home):
    # Ready waits for the first worker; a broken interpreter must not make `corral start` hang.
    out = run(["start", "--head", "--port", "0", "--http-port", "0", "--num-cpus", "1", "--python", "/bin/false"],
              home, timeout=90)
    assert out.returncode == 0, out.stderr
    log = os.path.join(home["CORRAL_HOME"], "head", "head.log")
    with open(log) as f:
        assert "exited with status 1 before it connected" in f.read()


def test_state_dir_open_to_others_or_not_ours_is_refused(home, tmp_path):
    # The state dir holds the CA key and tokens: one others may read, or a link planted in its
    # place, is refused with what to do, and nothing is written into it.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    out = run(["start", "--head", "--port", "0", "--http-port", "-1", "--state-dir", str(shared), "--block"], home)
    assert out.returncode != 0 and "chmod 700" in out.stderr, out.stderr
    assert not (shared / "ca.key").exists() and not (shared / "token").exists()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    out = run(["start", "--head", "--port", "0", "--http-port", "-1", "--state-dir", str(tmp_path / "link"),
               "--block"], home)
    assert out.returncode != 0 and "not a directory" in out.stderr, out.stderr
