"""The embedded local cluster that ``corral.init()`` starts when given no address.

One ``corral start --head --block`` child process (the head, which starts this machine's agent as
its own child). The head reads its stdin: when this process exits (even by ``kill -9``) the pipe
closes, the head stops, and the agent and workers die with it (they hold PR_SET_PDEATHSIG).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from . import exceptions

READY_PREFIX = "CORRAL_READY "


def corral_binary():
    """Path of the ``corral`` command installed with this package."""
    env = os.environ.get("CORRAL_BIN")
    if env:
        return env
    candidates = [os.path.join(sysconfig.get_path("scripts"), "corral"),
                  os.path.join(os.path.dirname(sys.executable), "corral")]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which("corral")
    if found:
        return found
    raise exceptions.CorralError(
        "the `corral` command is not installed beside this Python; reinstall the package "
        "(`pip install .` in the corral checkout) or set CORRAL_BIN")


def start_process(args, log_path, env=None):
    """Starts a `corral start ... --block` process whose stdin we hold, and waits for its ready line.

    Returns (process, what it announced). The process exits when our end of its stdin closes.
    """
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                close_fds=True)
    line = proc.stdout.readline().decode(errors="replace").strip()
    if not line.startswith(READY_PREFIX):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise exceptions.CorralError(f"`{' '.join(args[1:4])} ...` did not start; its log {log_path} says:\n"
                                     + _tail(log_path))
    return proc, line[len(READY_PREFIX):]


def stop_process(proc, timeout=10):
    """Stops a process from start_process: closes its stdin, then SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


class EmbeddedCluster:
    def __init__(self, num_cpus=None, num_gpus=None, memory=None, resources=None, labels=None,
                 extra_args=()):
        self.state_dir = tempfile.mkdtemp(prefix="corral-")
        args = [corral_binary(), "start", "--head", "--block", "--port", "0", "--http-port", "0",
                "--state-dir", self.state_dir, "--exit-on-stdin-eof", "--python", sys.executable]
        if num_cpus is not None:
            args += ["--num-cpus", str(int(num_cpus))]
        if num_gpus is not None:
            args += ["--num-gpus", str(int(num_gpus))]
        if memory is not None:
            args += ["--memory", str(memory)]
        if resources:
            args += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        # Workers import what the driver can import (its script's folder, the test's rootdir).
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        cwd = os.getcwd()
        if cwd not in paths:
            paths.insert(0, cwd)
        args += ["--python-path", os.pathsep.join(paths)]
        args += list(extra_args)
        self.log_path = os.path.join(self.state_dir, "head.log")
        env = dict(os.environ)
        env.pop("CORRAL_TOKEN", None)
        env.pop("CORRAL_TOKEN_FILE", None)
        self.proc, self.address = start_process(args, self.log_path, env)
        with open(os.path.join(self.state_dir, "token")) as f:
            self.token = f.read().strip()
        self.owner_pid = os.getpid()

    def stop(self):
        if os.getpid() != self.owner_pid or self.proc.poll() is not None:
            return
        stop_process(self.proc)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"
