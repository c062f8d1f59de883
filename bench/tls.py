"""What TLS costs Corral: the same workloads against one head, once over plaintext (loopback, as
processes on the head's machine connect) and once over TLS (the head started with --tls, the
driver and the node's workers verifying it with the cluster CA), interleaved A B A B in one run.

    .venv/bin/python bench/tls.py [--reps 5] [--smoke]

Workloads (definitions as in README.md beside this file): tasks_sync (median round trip, µs),
tasks_async (10,000 no-op tasks submitted one at a time, then every result: tasks/s), put_bytes
(32 MiB values put and fetched back through a task: MB/s). Prints each figure's median (min–max)
per mode and TLS/plaintext, the cost the issue bounds at 15% for the round trip.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def one_run(tls, smoke):
    """Starts a head in a fresh home (plaintext or TLS), runs the workloads in a driver process,
    returns {workload: value}."""
    from corral import _cluster
    home = tempfile.mkdtemp(prefix="corral-tls-bench-")
    env = dict(os.environ, CORRAL_HOME=home)
    for k in ("CORRAL_TOKEN", "CORRAL_ADDRESS", "CORRAL_CA_CERT", "CORRAL_CA_FINGERPRINT"):
        env.pop(k, None)
    bin_ = _cluster.corral_binary()
    args = [bin_, "start", "--head", "--port", "0", "--http-port", "-1", "--num-cpus", "2",
            "--python", sys.executable]
    if tls:
        args.append("--tls")
    subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    try:
        address = open(f"{home}/head/address").read().strip()
        code = DRIVER.format(address=address, ca=f"{home}/head/ca.crt" if tls else "",
                             sync=30 if smoke else 1000, tasks=200 if smoke else 10000, puts=2 if smoke else 8)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"the driver failed ({'tls' if tls else 'plaintext'}):\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([bin_, "stop", "--timeout", "5"], env=env, capture_output=True)


DRIVER = '''
import json, time, corral
corral.init(address="{address}", ca_cert="{ca}" or None)
@corral.remote
def noop(i):
    return i
@corral.remote
def size(b):
    return len(b)
for _ in range(10):
    corral.get(noop.remote(0))
samples = []
for i in range({sync}):
    t = time.perf_counter()
    corral.get(noop.remote(i))
    samples.append((time.perf_counter() - t) * 1e6)
samples.sort()
corral.get([noop.remote(i) for i in range(1000)])
t = time.perf_counter()
refs = [noop.remote(i) for i in range({tasks})]
corral.get(refs)
async_rate = {tasks} / (time.perf_counter() - t)
blob = b"x" * (32 << 20)
corral.get(size.remote(corral.put(blob)))
t = time.perf_counter()
for _ in range({puts}):
    assert corral.get(size.remote(corral.put(blob))) == len(blob)
put_mb_s = {puts} * 32 * 1.048576 / (time.perf_counter() - t)
print(json.dumps({{"tasks_sync": samples[len(samples) // 2], "tasks_async": async_rate, "put_bytes": put_mb_s}}))
'''

UNITS = {"tasks_sync": ("µs", "lower"), "tasks_async": ("tasks/s", "higher"), "put_bytes": ("MB/s", "higher")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    runs = {False: [], True: []}
    for rep in range(a.reps):
        for tls in ((False, True) if rep % 2 == 0 else (True, False)):  # A B, B A, ...
            runs[tls].append(one_run(tls, a.smoke))
            print(f"  repetition {rep + 1}: {'TLS' if tls else 'plaintext'} {runs[tls][-1]}", file=sys.stderr)
    print(f"| workload | unit | plaintext | TLS | TLS cost |")
    print(f"|---|---|---|---|---|")
    for w, (unit, better) in UNITS.items():
        plain = [r[w] for r in runs[False]]
        tls = [r[w] for r in runs[True]]
        mp, mt = statistics.median(plain), statistics.median(tls)
        cost = (mt / mp - 1) if better == "lower" else (mp / mt - 1)
        fmt = lambda xs: f"{statistics.median(xs):,.1f} ({min(xs):,.1f} – {max(xs):,.1f})"
        print(f"| {w} | {unit} | {fmt(plain)} | {fmt(tls)} | {cost * 100:+.1f}% |")


if __name__ == "__main__":
    main()
