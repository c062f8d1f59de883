"""What the direct call path gives an actor's calls: the same workloads against one actor, its
calls sent straight to the actor's agent (the default) and all through the head
(CORRAL_DIRECT_ACTOR_CALLS=0), interleaved A B A B, each mode in a fresh driver process.

    .venv/bin/python bench/actor_direct.py [--reps 5] [--smoke] [--embedded]

The actor runs on an agent process of its own (a second `corral start` on this machine, as a
node of the cluster on another machine would be, minus the network); --embedded puts it on the
agent inside the head process instead, where the head's path crosses as many processes as the
direct one. Workloads: actor_calls_sync (median round trip of one call then its get, µs) and
actor_calls_async (10,000 calls submitted one at a time, then every result: calls/s), as in
README.md beside this file. Prints each figure's median (min-max) per mode and direct/head.
"""
import argparse
import os
import statistics
import sys
import tempfile

from self_ab import fresh_head, run_driver

DRIVER = '''
import json, time, corral
corral.init(address="{address}")

@corral.remote
class Counter:
    def __init__(self):
        self.n = 0
    def inc(self):
        self.n += 1
        return self.n

c = Counter.options(label_selector={selector}).remote()
for _ in range(20):
    corral.get(c.inc.remote())
samples = []
for i in range({sync}):
    t = time.perf_counter()
    corral.get(c.inc.remote())
    samples.append((time.perf_counter() - t) * 1e6)
samples.sort()
corral.get([c.inc.remote() for _ in range(1000)])
t = time.perf_counter()
corral.get([c.inc.remote() for _ in range({calls})])
rate = {calls} / (time.perf_counter() - t)
direct = corral.cluster_status()["counters"].get("actor_calls_direct", 0)
print(json.dumps({{"sync_us": samples[len(samples) // 2], "async_rate": rate, "direct": direct}}))
'''


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (CI)")
    p.add_argument("--embedded", action="store_true", help="the actor on the agent inside the head process")
    args = p.parse_args()
    reps, sync, calls = (1, 30, 300) if args.smoke else (args.reps, 2000, 10000)
    from corral import _cluster
    results = {"direct": [], "head": []}
    with fresh_head(prefix="corral-bench-direct-") as (home, env):
        with open(os.path.join(home, "head", "address")) as f:
            address = f.read().strip()
        with open(os.path.join(home, "head", "token")) as f:
            env["CORRAL_TOKEN"] = f.read().strip()
        agent = None
        selector = {}
        if not args.embedded:
            work = tempfile.mkdtemp(prefix="corral-bench-agent-")
            agent = _cluster.start_process(
                [_cluster.corral_binary(), "start", "--address", address, "--block", "--exit-on-stdin-eof",
                 "--state-dir", f"{work}/agent", "--num-cpus", "1", "--labels", "bench=actor",
                 "--python", sys.executable], f"{work}/agent.log", env)[0]
            selector = {"bench": "actor"}
        try:
            code = DRIVER.format(address=address, selector=selector, sync=sync, calls=calls)
            for rep in range(reps):
                for mode in ("direct", "head") if rep % 2 == 0 else ("head", "direct"):
                    r = run_driver(code, dict(env, CORRAL_DIRECT_ACTOR_CALLS="1" if mode == "direct" else "0"), mode)
                    results[mode].append(r)
                    print(f"rep {rep + 1} {mode}: sync {r['sync_us']:.0f} µs, async {r['async_rate']:,.0f} calls/s",
                          flush=True)
        finally:
            if agent:
                _cluster.stop_process(agent)
    where = "the agent inside the head process" if args.embedded else "an agent process of its own"
    print(f"\nactor on {where}; {reps} repetition(s), modes interleaved; median (min - max)\n")
    print("| workload | direct | through the head | direct / head |")
    print("|---|---|---|---|")
    for key, name, unit in (("sync_us", "actor_calls_sync", "µs"), ("async_rate", "actor_calls_async", "calls/s")):
        d = [r[key] for r in results["direct"]]
        h = [r[key] for r in results["head"]]
        fmt = (lambda v: f"{v:,.0f}")
        print(f"| {name} ({unit}) | {fmt(statistics.median(d))} ({fmt(min(d))} - {fmt(max(d))}) | "
              f"{fmt(statistics.median(h))} ({fmt(min(h))} - {fmt(max(h))}) | "
              f"{statistics.median(d) / statistics.median(h):.2f} |")
    # The head counts calls its callers sent straight to an agent: the direct runs must have, and
    # the head runs not (their head is shared, so the count only grows in direct runs).
    grew = [r["direct"] for r in results["direct"]]
    if max(grew) < calls:
        raise SystemExit("the direct runs did not send their calls straight to the agent")


if __name__ == "__main__":
    main()
