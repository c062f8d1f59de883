"""Where a sync actor call's time goes, hop by hop: a local cluster (corral.init()) with the hop
trace on (CORRAL_HOP_TRACE, src/corral/base/hop_trace.h), one actor, sync calls one after another.

    .venv/bin/python bench/hop_trace.py [--calls 3000] [--json FILE]

Every process on the call's path (driver, agent, the actor's worker) stamps the points it passes
with the machine's monotonic clock; this script lines them up call by call and prints the median
of each step along the call's path. A sender stamps a message just before writing it, so a step
that ends in another process than it starts in is a hop: the write itself, the receiver's wake-up
and its read. The
driver's own Python (before the call reaches the C++ client, and after its get returns) is marked
here with the same clock (time.perf_counter_ns is CLOCK_MONOTONIC on Linux).
"""
import argparse
import collections
import glob
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time

PY_BEFORE, PY_AFTER = 100, 101  # this script's own marks: before .remote(), after get() returned
NAMES = {
    PY_BEFORE: "driver: .remote() called",
    1: "driver: C++ submit entered",
    2: "driver: writing the call (to the agent, or the worker's call channel)",
    3: "driver: record handed to the head",
    4: "driver: C++ get entered",
    10: "agent: call decoded",
    11: "agent: writing the call to the worker",
    20: "worker: call handed to Python",
    21: "worker: method returned, finish entered",
    22: "worker: writing the result to the agent",
    23: "worker: writing the result to the caller",
    12: "agent: result decoded",
    13: "agent: writing the result to the caller",
    5: "driver: result decoded",
    6: "driver: C++ get returns",
    PY_AFTER: "driver: get() returned to Python",
}


def read_records(trace_dir):
    records = []
    for path in glob.glob(os.path.join(trace_dir, "hops.*")):
        with open(path, "rb") as f:
            data = f.read()
        count = min(struct.unpack_from("Q", data, 0)[0], (len(data) - 16) // 16)
        for i in range(count):
            point, ns = struct.unpack_from("QQ", data, 16 + 16 * i)
            records.append((ns, point))
    return records


# The call's own path, in causal order; the driver's other points (its record for the head, its
# get starting) happen beside it and are reported as offsets.
CHAIN = [PY_BEFORE, 1, 2, 10, 11, 20, 21, 22, 12, 13, 5, 6, PY_AFTER]
# ...where the worker writes the result to the caller's result channel itself (decision 46): the
# agent hears of the end after that, beside the path.
CHANNEL_CHAIN = [PY_BEFORE, 1, 2, 10, 11, 20, 21, 23, 5, 6, PY_AFTER]
# ...and where the driver sends the call to the worker too, on its call channel (decision 50).
CALL_CHANNEL_CHAIN = [PY_BEFORE, 1, 2, 20, 21, 23, 5, 6, PY_AFTER]
BESIDE = [3, 4]
WRITE = 2  # the driver writing the call: what BESIDE points are timed from


def breakdown(records, calls):
    """The median µs of each step of CHAIN and the median offset of each BESIDE point from the call's
    write to the agent, over the last `calls` calls that passed every point once."""
    records.sort()
    cycles, current = [], None
    for ns, point in records:
        if point == PY_BEFORE:
            current = [(ns, point)]
        elif current is not None:
            current.append((ns, point))
            if point == PY_AFTER:
                cycles.append(current)
                current = None
    # The path most calls took: through the agent, the worker writing to the caller itself, or the
    # caller and the worker alone.
    recent = cycles[-calls:]

    def most(test):
        return 2 * sum(1 for c in recent if test({p for _, p in c})) > len(recent)

    chain = (CALL_CHANNEL_CHAIN if most(lambda seen: 23 in seen and 10 not in seen)
             else CHANNEL_CHAIN if most(lambda seen: 23 in seen) else CHAIN)
    steps = collections.defaultdict(list)
    beside = collections.defaultdict(list)
    totals = []
    used = 0
    for c in recent:
        at = {}
        for ns, point in c:
            at.setdefault(point, []).append(ns)
        if any(len(at.get(point, ())) != 1 for point in chain):
            continue
        used += 1
        for a, b in zip(chain, chain[1:]):
            steps[(a, b)].append((at[b][0] - at[a][0]) / 1e3)
        for point in BESIDE:
            if len(at.get(point, ())) == 1:
                beside[point].append((at[point][0] - at[WRITE][0]) / 1e3)
        totals.append((at[PY_AFTER][0] - at[PY_BEFORE][0]) / 1e3)
    rows = [(a, b, statistics.median(steps[(a, b)])) for a, b in zip(chain, chain[1:])]
    offsets = {point: statistics.median(v) for point, v in beside.items()}
    return rows, offsets, statistics.median(totals), used, min(calls, len(cycles))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--json", help="write the segments here too")
    args = p.parse_args()
    trace_dir = tempfile.mkdtemp(prefix="corral-hops-")
    os.environ["CORRAL_HOP_TRACE"] = trace_dir  # before the cluster starts: its processes inherit it
    import corral

    corral.init()

    @corral.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

    c = Counter.remote()
    for _ in range(200):
        corral.get(c.inc.remote())
    marks = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for _ in range(args.calls):
        before = clock()
        corral.get(c.inc.remote())
        marks.append((before, PY_BEFORE))
        marks.append((clock(), PY_AFTER))
    per_call = (time.perf_counter() - start) / args.calls * 1e6
    corral.shutdown()
    rows, offsets, total, used, cycles = breakdown(read_records(trace_dir) + marks, args.calls)
    print(f"sync actor call: {per_call:.1f} µs mean per call; {total:.1f} µs median from .remote() to get()'s "
          f"return ({used} of {cycles} calls passed every point once)")
    for a, b, us in rows:
        hop = "  (hop)" if NAMES[a].split(":")[0] != NAMES[b].split(":")[0] else ""
        print(f"  {us:7.1f} µs  {NAMES[a]:<42} -> {NAMES[b]}{hop}")
    print(f"  sum of the medians: {sum(us for _, _, us in rows):.1f} µs")
    for point, us in sorted(offsets.items()):
        print(f"  beside the call: '{NAMES[point]}' {us:+.1f} µs from the call's write")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mean_per_call_us": per_call, "median_total_us": total,
                       "steps": [{"from": NAMES[a], "to": NAMES[b], "median_us": us} for a, b, us in rows],
                       "beside": {NAMES[point]: us for point, us in offsets.items()}}, f, indent=1)
    shutil.rmtree(trace_dir)


if __name__ == "__main__":
    sys.exit(main())
