"""Corral's benchmarks, side by side with Ray, Dask and Celery, beside physical floors.

    .venv/bin/python bench/run.py                  # Corral and the floors (make bench)
    .venv/bin/python bench/run.py --peers          # and Ray, Dask, Celery (make bench-peers)
    .venv/bin/python bench/run.py --smoke          # every workload once at a tiny size (CI)

Each system runs in its own process per repetition (its cluster started once per repetition), in
an order rotated each repetition (A B C, B C A, ...) so machine drift hits all alike; each figure
is the median of the repetitions, with min and max. Workloads and their definitions: README.md
beside this file. Output: bench/out/results.{md,json,png}; --record also keeps a dated copy in
bench/results/.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "systems"))

import common  # noqa: E402
import floor  # noqa: E402
import harness  # noqa: E402

PEERS = ["ray", "dask", "celery"]
CORRAL_PY = os.path.join(ROOT, ".venv", "bin", "python")
PEERS_PY = os.path.join(ROOT, ".venv-bench", "bin", "python")


def run_system(system, workloads, smoke, timeout):
    py = CORRAL_PY if system == "corral" else PEERS_PY
    cmd = [py, os.path.join(HERE, "systems", f"{system}_sys.py"), "--workloads", ",".join(workloads)]
    if smoke:
        cmd.append("--smoke")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    t = time.perf_counter()
    # Its own process group: on a timeout, the system's servers (redis, workers) go with it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        out = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
        records = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
        done = {r["workload"] for r in records}
        records += [{"workload": w, "unavailable": f"not finished within the {timeout} s limit"}
                    for w in workloads if w not in done]
        return records
    records = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 and not records:
        raise RuntimeError(f"{system} failed:\n{out.stderr[-3000:]}")
    print(f"  {system}: {len(records)} figures in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", action="store_true", help="also run Ray, Dask and Celery (needs .venv-bench)")
    ap.add_argument("--systems", help="comma-separated subset of corral,ray,dask,celery")
    ap.add_argument("--workloads", default=",".join(common.WORKLOADS))
    ap.add_argument("--smoke", action="store_true", help="each workload once, tiny sizes")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--record", action="store_true", help="keep a dated copy in bench/results/")
    args = ap.parse_args()
    systems = args.systems.split(",") if args.systems else ["corral"] + (PEERS if args.peers else [])
    if any(s != "corral" for s in systems) and not os.path.exists(PEERS_PY):
        sys.exit("the peers are not installed: run `make bench-peers` (it installs them into .venv-bench)")
    workloads = args.workloads.split(",")
    reps = 1 if args.smoke else args.reps
    timeout = 300 if args.smoke else 1800

    samples, extras, unavailable, floors = {}, {}, {}, {"tcp_rtt": [], "tcp_bw": [], "memcpy": [], "copy100": [], "shm_write": []}
    for rep in range(reps):
        print(f"repetition {rep + 1} of {reps}", file=sys.stderr, flush=True)
        floors["tcp_rtt"].append(floor.tcp_rtt_us(100 if args.smoke else 1000))
        floors["tcp_bw"].append(floor.tcp_bandwidth_gbs((64 if args.smoke else 1024) << 20))
        floors["memcpy"].append(floor.memcpy_gbs((64 if args.smoke else 1024) << 20))
        floors["copy100"].append(floor.copy_fresh_s((8 if args.smoke else 100) * 1_000_000))
        floors["shm_write"].append(floor.shm_write_gbs((64 if args.smoke else 1024) << 20))
        order = systems[rep % len(systems):] + systems[:rep % len(systems)]
        for system in order:
            for r in run_system(system, workloads, args.smoke, timeout):
                key = (system, r["workload"])
                if "unavailable" in r:
                    unavailable[key] = r["unavailable"]
                    continue
                samples.setdefault(key, []).append(r["value"])
                extras.setdefault(key, []).append(r)

    figures = {k: harness.Figure(f"{k[0]}:{k[1]}", extras[k][0]["unit"], v, extras[k][0]["better"])
               for k, v in samples.items()}
    floor_figs = [harness.Figure("loopback TCP round trip, 64 B", "µs", floors["tcp_rtt"], "lower"),
                  harness.Figure("loopback TCP bandwidth", "GB/s", floors["tcp_bw"], "higher"),
                  harness.Figure("memcpy, pre-faulted buffers", "GB/s", floors["memcpy"], "higher"),
                  harness.Figure("one copy of the numpy_100MB_arg array into fresh memory", "s",
                                 floors["copy100"], "lower"),
                  harness.Figure("writing 1 GiB into new pages of /dev/shm (the object store's file system)", "GB/s",
                                 floors["shm_write"], "higher")]
    report = harness.report(systems, workloads, figures, unavailable, extras, floor_figs, reps, args.smoke)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(report)
    doc = harness.write_json(os.path.join(args.out, "results.json"), list(figures.values()) + floor_figs, {
        "smoke": args.smoke, "reps": reps, "systems": systems,
        "unavailable": {f"{s}:{w}": why for (s, w), why in unavailable.items()},
        "extras": {f"{s}:{w}": v for (s, w), v in extras.items()},
    })
    print(report)
    chart = os.path.join(args.out, "results.png")
    if os.path.exists(PEERS_PY):
        subprocess.run([PEERS_PY, os.path.join(HERE, "chart.py"), os.path.join(args.out, "results.json"), chart],
                       timeout=120)
    if args.record:
        dest = os.path.join(HERE, "results", time.strftime("%Y-%m-%d"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        for ext in ("md", "json", "png"):
            src = os.path.join(args.out, f"results.{ext}")
            if os.path.exists(src):
                shutil.copy(src, f"{dest}.{ext}")
        print(f"recorded: {dest}.md", file=sys.stderr)
    return doc


if __name__ == "__main__":
    main()
