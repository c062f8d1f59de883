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
import os
import statistics
import sys

from self_ab import TASKS_CODE, fresh_head, run_driver

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def one_run(tls, smoke):
    """Starts a head in a fresh home (plaintext or TLS), runs the workloads in a driver process,
    returns {workload: value}."""
    with fresh_head("--http-port", "-1", *(["--tls"] if tls else []), prefix="corral-tls-bench-") as (home, env):
        address = open(f"{home}/head/address").read().strip()
        code = DRIVER.format(address=address, ca=f"{home}/head/ca.crt" if tls else "") + TASKS_CODE.format(
            sync=30 if smoke else 1000, tasks=200 if smoke else 10000) + PUTS_CODE.format(puts=2 if smoke else 8)
        return run_driver(code, env, "tls" if tls else "plaintext")


DRIVER = '''
import json, time, corral
corral.init(address="{address}", ca_cert="{ca}" or None)
'''

PUTS_CODE = '''
@corral.remote
def size(b):
    return len(b)
blob = b"x" * (32 << 20)
corral.get(size.remote(corral.put(blob)))
t = time.perf_counter()
for _ in range({puts}):
    assert corral.get(size.remote(corral.put(blob))) == len(blob)
put_mb_s = {puts} * 32 * 1.048576 / (time.perf_counter() - t)
print(json.dumps({{"tasks_sync": sync_us, "tasks_async": async_rate, "put_bytes": put_mb_s}}))
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
