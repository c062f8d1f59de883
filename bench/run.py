"""Corral's microbenchmarks, each beside the physical floor measured in the same run.

    .venv/bin/python bench/run.py            # full run (a minute or two)
    .venv/bin/python bench/run.py --smoke    # every workload once at a tiny size (CI)

Workloads are named like Ray's release microbenchmark:
  tasks_sync   one no-op task at a time, submit and wait: median round trip (µs) of 1,000
  tasks_async  10,000 no-op tasks submitted one call at a time, then all results: tasks/s
Definitions match ../shared/PEERS.md. Results: a Markdown table on stdout and bench/out/results.json.
"""
import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import floor  # noqa: E402
import harness  # noqa: E402

import corral  # noqa: E402


@corral.remote
def noop(i):
    return i


def _submit_one(i):   # a small caller: PEERS.md notes submit cost can depend on the caller's size
    return noop.remote(i)


def tasks_sync(n):
    for _ in range(10):
        corral.get(_submit_one(0))
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        corral.get(_submit_one(0))
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return samples[len(samples) // 2]


def tasks_async(n):
    gc.collect()
    t = time.perf_counter()
    refs = [_submit_one(i) for i in range(n)]
    corral.get(refs)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="each workload once, tiny sizes")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "results.json"))
    args = ap.parse_args()
    reps = 1 if args.smoke else args.reps
    sync_n, async_n = (50, 200) if args.smoke else (1000, 10000)

    t = time.perf_counter()
    corral.init(num_cpus=2)
    startup = time.perf_counter() - t
    corral.get(noop.remote(0))
    first = time.perf_counter() - t
    corral.get([noop.remote(i) for i in range(min(2000, async_n))])   # warm the pool and the pipelining

    floor_fig = harness.Figure("loopback TCP RTT 64 B", "µs", harness.repeat(lambda: floor.tcp_rtt_us(
        100 if args.smoke else 1000), reps), "lower")
    sync_fig = harness.Figure("tasks_sync", "µs", [], "lower")
    async_fig = harness.Figure("tasks_async", "tasks/s", [], "higher")
    for _ in range(reps):   # interleaved so drift hits both alike
        sync_fig.samples.append(tasks_sync(sync_n))
        async_fig.samples.append(tasks_async(async_n))
    init_fig = harness.Figure("startup: init() to first result", "s", [first], "lower")
    corral.shutdown()

    rows = [
        ("floor: loopback TCP round trip", floor_fig, "measured now"),
        ("tasks_sync (round trip)", sync_fig,
         f"{harness.ratio(sync_fig, floor_fig):.1f}× the TCP round trip; target ≤150 µs"),
        ("tasks_async (10k no-op)", async_fig,
         f"{async_fig.median * floor_fig.median / 1e6:.2f} tasks per TCP round trip; target ≥30,000/s"),
        ("startup: init() to first result", init_fig, f"init() alone {startup:.3f} s; target ≤1 s"),
    ]
    print(harness.table(rows))
    harness.write_json(args.out, [floor_fig, sync_fig, async_fig, init_fig], {"smoke": args.smoke})
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
