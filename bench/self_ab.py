"""What bench/tls.py and bench/observability.py share: a fresh head in its own CORRAL_HOME, and a
driver process that measures the sync round trip and async throughput against it (definitions in
README.md beside this file)."""
import contextlib
import json
import os
import subprocess
import sys
import tempfile

# The driver's measuring part: after `corral.init(...)`, sets `sync_us` (median round trip) and
# `async_rate` (tasks/s). Format with sync= and tasks=.
TASKS_CODE = '''
@corral.remote
def noop(i):
    return i
for _ in range(10):
    corral.get(noop.remote(0))
samples = []
for i in range({sync}):
    t = time.perf_counter()
    corral.get(noop.remote(i))
    samples.append((time.perf_counter() - t) * 1e6)
samples.sort()
sync_us = samples[len(samples) // 2]
corral.get([noop.remote(i) for i in range(1000)])
t = time.perf_counter()
refs = [noop.remote(i) for i in range({tasks})]
corral.get(refs)
async_rate = {tasks} / (time.perf_counter() - t)
'''


@contextlib.contextmanager
def fresh_head(*args, prefix="corral-bench-"):
    """A head (`corral start --head --num-cpus 2` plus `args`) in a fresh home, stopped after; yields
    (home, env) with env naming that home and no other cluster's token or address."""
    from corral import _cluster
    home = tempfile.mkdtemp(prefix=prefix)
    env = dict(os.environ, CORRAL_HOME=home)
    for k in ("CORRAL_TOKEN", "CORRAL_ADDRESS", "CORRAL_CA_CERT", "CORRAL_CA_FINGERPRINT"):
        env.pop(k, None)
    binary = _cluster.corral_binary()
    subprocess.run([binary, "start", "--head", "--port", "0", "--num-cpus", "2", "--python", sys.executable, *args],
                   env=env, check=True, capture_output=True, text=True)
    try:
        yield home, env
    finally:
        subprocess.run([binary, "stop", "--timeout", "5"], env=env, capture_output=True)


def run_driver(code, env, what):
    """Runs `code` in a fresh Python; the JSON object its last line prints."""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the driver failed ({what}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])
