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
             "put_gigabytes_held", "put_gigabytes", "numpy_100MB_arg", "cross_node_gigabytes", "actor_calls_sync", "actor_calls_async",
             "multi_client_actor_calls_async", "actor_create", "gang_start", "durable_tasks",
             "durable_tasks_8_clients", "queued_1M", "idle_memory"]

FULL = {"sync": 1000, "async": 10000, "clients": 2, "per_client": 5000, "puts": 1000, "gets": 1000,
        "put_array_mb": 800, "put_repeats": 8, "gigabytes": 1.0, "cross_gigabytes": 1.0, "chunk_mib": 32, "array_mb": 100, "array_calls": 5, "durable": 2000,
        "queued": 1_000_000, "queued_limit_s": 60, "queued_finish_limit_s": 600, "actors": 40,
        "gangs": 10}
SMOKE = {"sync": 30, "async": 200, "clients": 2, "per_client": 100, "puts": 50, "gets": 50,
         "put_array_mb": 16, "put_repeats": 2, "gigabytes": 0.0625, "cross_gigabytes": 0.0625, "chunk_mib": 16, "array_mb": 8, "array_calls": 1, "durable": 50,
         "queued": 2000, "queued_limit_s": 60, "queued_finish_limit_s": 600, "actors": 4,
         "gangs": 2}


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
    """Runs the requested workloads from `table` (name -> fn(size) or a string saying why not).
    "startup" starts the system, so it runs first even when not asked for (its figure then unsaid)."""
    if "startup" not in a.workloads and callable(table.get("startup")):
        global emit
        shown, emit = emit, lambda *args, **kw: None
        try:
            table["startup"](a.size)
        except Exception:  # the workloads then fail one by one, each reported
            pass
        finally:
            emit = shown
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


def run_clients(script, client_args, size, env=None, workload="multi_client_tasks_async", clients=None,
                per_client=None, **extra):
    """multi_client_tasks_async (and durable_tasks_8_clients): starts `clients` processes of
    `script --client *client_args BARRIER N`, lets them warm up, releases them together, and emits
    total tasks per wall second."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        barrier = os.path.join(d, "go")
        clients = clients or size["clients"]
        per_client = per_client or size["per_client"]
        procs = [subprocess.Popen([sys.executable, script, "--client", *client_args, barrier, str(per_client)],
                                  stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(clients)]
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a client process did not start (said {line!r})")
        open(barrier, "w").close()
        spans = [tuple(map(float, p.stdout.readline().split())) for p in procs]
        for p in procs:
            p.wait()
    n = clients * per_client
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    emit(workload, n / wall, "tasks/s", "higher", clients=clients, **extra)


def actor_create(make, call, size):
    """actor_create: actors started per second, each counted once its first call returned
    (`make()` starts one, `call(actors)` calls each once and waits)."""
    n = size["actors"]
    call([make()])  # the class is shipped and a worker warm before the clock starts
    t = time.perf_counter()
    actors = [make() for _ in range(n)]
    call(actors)
    emit("actor_create", n / (time.perf_counter() - t), "actors/s", "higher", actors=n)
    return actors


GANG_MEMBERS = 4


def gang_start(start, stop, size):
    """gang_start: a gang of GANG_MEMBERS members of 0.5 CPU each reserved all at once (Ray: a
    placement group), an actor started in each member's reservation and called once: ms from the
    request to the last answer, mean over size["gangs"] gangs. `start()` does one and returns what
    `stop()` removes (the gang and its actors) before the next."""
    stop(start())  # the class is shipped and a worker warm before the clock starts
    times = []
    for _ in range(size["gangs"]):
        t = time.perf_counter()
        made = start()
        times.append(time.perf_counter() - t)
        stop(made)
    emit("gang_start", 1000 * sum(times) / len(times), "ms", "lower", gangs=len(times), members=GANG_MEMBERS)


def client_process(run_batch, barrier, n, warmup=100):
    """The body of one client of run_clients: `run_batch(k)` submits k no-op tasks and waits for them."""
    run_batch(warmup)
    print("ready", flush=True)
    while not os.path.exists(barrier):
        time.sleep(0.001)
    t = time.time()
    run_batch(n)
    print(t, time.time(), flush=True)


def put_gigabytes(put, size, **extra):
    """put_gigabytes, as Ray's release microbenchmark defines it: one size["put_array_mb"] MiB array
    put again and again, each ref dropped at once (so a store may reuse the memory freed), after
    one untimed put. Ray's array is np.zeros, whose pages all read the kernel's one zero page;
    here it is filled with ones, so the source is real memory."""
    import numpy as np
    arr = np.ones((size["put_array_mb"] << 20) // 8, dtype=np.int64)
    put(arr)
    t = time.perf_counter()
    for _ in range(size["put_repeats"]):
        put(arr)
    emit("put_gigabytes", size["put_repeats"] * arr.nbytes / 1e9 / (time.perf_counter() - t), "GB/s", "higher",
         array_mib=size["put_array_mb"], **extra)


def put_gigabytes_held(put, size, **extra):
    """put_gigabytes_held: 1 GiB (smoke: less) put as size["chunk_mib"] MiB arrays, every ref kept:
    the store's memory is all new (it runs before put_gigabytes, whose freed memory a store could
    reuse for these). Returns the refs."""
    import numpy as np
    chunk = np.ones(size["chunk_mib"] << 20, dtype=np.uint8)
    count = int(size["gigabytes"] * 1024 / size["chunk_mib"])
    t = time.perf_counter()
    refs = [put(chunk) for _ in range(count)]
    emit("put_gigabytes_held", count * chunk.nbytes / 1e9 / (time.perf_counter() - t), "GB/s", "higher",
         chunk_mib=size["chunk_mib"], **extra)
    return refs


def numpy_arg(call, size, calls=None, **extra):
    """numpy_100MB_arg: seconds per `call(array)` that sums the array remotely, median after a warm-up."""
    import numpy as np
    arr = np.ones(size["array_mb"] * 1_000_000 // 8)
    call(arr)
    times = []
    for _ in range(calls or size["array_calls"]):
        t = time.perf_counter()
        call(arr)
        times.append(time.perf_counter() - t)
    emit("numpy_100MB_arg", median(times), "s/call", **extra)


def put_calls(put, size, **extra):
    """put_calls: size["puts"] calls of `put(small value)`, in calls/s. Returns the refs."""
    t = time.perf_counter()
    refs = [put(i) for i in range(size["puts"])]
    emit("put_calls", size["puts"] / (time.perf_counter() - t), "calls/s", "higher", **extra)
    return refs


def get_calls(get, size, **extra):
    """get_calls: size["gets"] calls of `get()` on one stored small value, in calls/s."""
    t = time.perf_counter()
    for _ in range(size["gets"]):
        get()
    emit("get_calls", size["gets"] / (time.perf_counter() - t), "calls/s", "higher", **extra)
