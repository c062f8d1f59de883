"""corral.get's progress bar, as a user meets it: on a terminal (a real pseudo-terminal), forced with
progress=True, and absent when output is piped or the wait is short."""
import os
import pty
import re
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time, corral
    corral.init(num_cpus=2)

    @corral.remote
    def slow(i):
        time.sleep(0.4 * (i + 1))
        return i

    progress = {"auto": None, "on": True, "off": False}[sys.argv[1]]
    print("values", corral.get([slow.remote(i) for i in range(6)], progress=progress), flush=True)
    print("quick", corral.get([corral.put(i) for i in range(3)], progress=progress), flush=True)
    corral.shutdown()
""")


def run_on_terminal(mode):
    """Runs SCRIPT with stdout and stderr on a pseudo-terminal: what a user at a terminal sees."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                         env=dict(os.environ, CORRAL_NO_AUTO_INIT="1"))
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal's other end closed: the script exited
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_a_long_wait_on_a_terminal_shows_the_bar():
    out = run_on_terminal("auto")
    assert "values [0, 1, 2, 3, 4, 5]" in out, out
    assert "corral: [" in out and "6/6 ready" in out, out
    bars = [line for line in out.replace("\r", "\n").splitlines() if line.startswith("corral: [")]
    counts = [int(re.search(r"(\d+)/6 ready", b).group(1)) for b in bars if "/6 ready" in b]
    assert counts and min(counts) < 6 and counts == sorted(counts), f"it showed the wait as it went: {bars}"
    assert "/3 ready" not in out, "a wait shorter than a second draws nothing"


def test_progress_false_draws_nothing_on_a_terminal():
    out = run_on_terminal("off")
    assert "values [0, 1, 2, 3, 4, 5]" in out and "corral: [" not in out, out


def test_piped_output_has_no_bar_unless_asked():
    for mode, expected in (("auto", False), ("on", True)):
        p = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, CORRAL_NO_AUTO_INIT="1"))
        assert p.returncode == 0, p.stderr
        assert ("6/6 ready" in p.stderr) == expected, (mode, p.stderr)
        if expected:
            assert "3/3 ready" in p.stderr, "progress=True draws even a short wait"
