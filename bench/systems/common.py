"""What every system's benchmark script shares: the workload names and sizes, the output format,
and process-memory accounting.

A system script runs in its own process (and virtual environment), starts its system once, runs
the workloads it is asked for in order, and prints one JSON line per figure:
  {"workload": "tasks_sync", "value": 152.0, "unit": "µs", "better": "lower"}
or, where the system cannot do the workload:
  {"workload": "put_calls", "unavailable": "Celery has no object store"}
"""
import argparse
import json
import os
import sys
import time

WORKLOADS = ["startup", "tasks_sync", "tasks_async", "multi_client_tasks_async", "put_calls", "get_calls",
             "put_gigabytes", "numpy_100MB_arg", "actor_calls_sync", "actor_calls_async", "durable_tasks",
             "queued_1M", "idle_memory"]

FULL = {"sync": 1000, "async": 10000, "clients": 2, "per_client": 5000, "puts": 1000, "gets": 1000,
        "gigabytes": 1.0, "chunk_mib": 32, "array_mb": 100, "array_calls": 5, "durable": 2000,
        "queued": 1_000_000, "queued_limit_s": 60}
SMOKE = {"sync": 30, "async": 200, "clients": 2, "per_client": 100, "puts": 50, "gets": 50,
         "gigabytes": 0.0625, "chunk_mib": 16, "array_mb": 8, "array_calls": 1, "durable": 50,
         "queued": 2000, "queued_limit_s": 60}


def args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.size = SMOKE if a.smoke else FULL
    return a


def emit(workload, value=None, unit="", better="lower", unavailable=None, **extra):
    rec = {"workload": workload}
    if unavailable is not None:
        rec["unavailable"] = unavailable
    else:
        rec.update(value=value, unit=unit, better=better)
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def run_all(a, table):
    """Runs the requested workloads from `table` (name -> fn(size) or a string saying why not)."""
    for w in a.workloads:
        what = table.get(w, "not implemented for this system")
        if isinstance(what, str):
            emit(w, unavailable=what)
            continue
        try:
            what(a.size)
        except Exception as e:  # a failed workload is reported, the others still run
            emit(w, unavailable=f"failed: {type(e).__name__}: {e}"[:300])


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def timed_round_trips(call, n):
    for _ in range(10):
        call()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def process_memory(pids, worker_match=()):
    """(rss_mb, pss_mb, worker_rss_mb) summed over `pids`; workers are those whose command line
    contains one of `worker_match`."""
    import psutil
    rss = pss = workers = 0.0
    for pid in set(pids):
        try:
            p = psutil.Process(pid)
            info = p.memory_full_info()
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
        if any(m in cmd for m in worker_match):
            workers += info.rss
    return rss / 1e6, pss / 1e6, workers / 1e6


def descendants():
    import psutil
    return [c.pid for c in psutil.Process().children(recursive=True)]


def wait_for_file(path, limit=600):
    """Task body used to hold back queued tasks: returns once `path` exists."""
    deadline = time.time() + limit
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.01)
    return 0


def versions(*modules):
    out = {"python": sys.version.split()[0]}
    for m in modules:
        mod = sys.modules.get(m)
        if mod is not None:
            out[m] = getattr(mod, "__version__", "?")
    return out
