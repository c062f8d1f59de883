"""The examples run as a user would run them, and say what they did."""
import os
import subprocess
import sys

from conftest import TESTS_DIR

EXAMPLES = os.path.join(os.path.dirname(TESTS_DIR), "examples")


def run(name):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True, text=True, timeout=180,
                         env={k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_quickstart():
    out = run("quickstart.py")
    assert "pi ~ 3.1" in out and "caught the task's ValueError" in out


def test_durable_quickstart():
    out = run("durable_quickstart.py")
    assert "the same idempotency key is the same task: True" in out
    assert "after 2 runs" in out
    assert "30 reports (300000 rows) and 40 emails" in out
    assert "fired 2 times" in out or "fired 3 times" in out


def test_arrays():
    out = run("arrays.py")
    assert "a read-only view of the store (writeable=False), equal to the original: True" in out
    assert "(its argument writeable=False)" in out
    assert "after dropping the refs: 0 bytes used, 0 files left" in out


def test_actors():
    out = run("actors.py")
    assert "parameter server: 600 updates from 4 tasks, weights [2.0, -3.0, 0.5]" in out
    assert "served 16 predictions from the named async actor: 2.0 each" in out
    assert "restarted (1 restart) with its constructor's state: the next hit counts 1" in out
    assert "after kill(): ActorDiedError:" in out and "killed by corral.kill()" in out
