"""Corral's side of the benchmark (run with the project's .venv)."""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

import corral  # noqa: E402


@corral.remote
def noop(i):
    return i


@corral.remote
def total(a):
    return float(a.sum())


@corral.remote
def make_bytes(n):
    import numpy as np
    return np.ones(n, dtype=np.uint8)


@corral.remote
def length(a):
    return a.nbytes


@corral.remote
def gate(path):
    return common.wait_for_file(path)


@corral.remote
class Counter:
    def inc(self):
        return 1


def one(i):  # a small caller
    return noop.remote(i)


def main():
    a = common.args()
    idle = {}

    def startup(size):
        t = time.perf_counter()
        # The node's workers also register the durable task functions of the benchmark.
        corral.init(num_cpus=2, tasks=["corral_bench_tasks"])
        corral.get(noop.remote(0))
        common.emit("startup", time.perf_counter() - t, "s")
        time.sleep(2)
        idle["mem"] = common.process_memory(common.descendants(), worker_match=("corral.worker",))

    def tasks_sync(size):
        med, p99 = common.timed_round_trips(lambda: corral.get(one(0)), size["sync"])
        common.emit("tasks_sync", med, "µs", p99_us=p99)

    def tasks_async(size):
        corral.get([one(i) for i in range(1000)])
        t = time.perf_counter()
        refs = [one(i) for i in range(size["async"])]
        corral.get(refs)
        common.emit("tasks_async", size["async"] / (time.perf_counter() - t), "tasks/s", "higher")

    def multi_client(size):
        c = corral._runtime.cluster
        common.run_clients(os.path.abspath(__file__), ["tasks", c.address], size, env=dict(os.environ, CORRAL_TOKEN=c.token))

    def put_calls(size):
        del common.put_calls(corral.put, size)[:]

    def get_calls(size):
        ref = corral.put(1)
        common.get_calls(lambda: corral.get(ref), size)

    def put_gigabytes(size):
        common.put_gigabytes(corral.put, size)

    def put_gigabytes_held(size):
        refs = common.put_gigabytes_held(corral.put, size)
        corral.get(refs[-1])
        del refs

    def numpy_arg(size):
        common.numpy_arg(lambda arr: corral.get(total.remote(arr)), size)

    def cross_node(size):
        # Two more agents on this machine are two nodes with their own stores: a value made on one
        # and read by a task on the other crosses between them, agent to agent.
        from corral import _cluster
        c = corral._runtime.cluster
        work = tempfile.mkdtemp(prefix="corral-bench-")
        env = dict(os.environ, CORRAL_TOKEN=c.token)
        procs = [_cluster.start_process(
            [_cluster.corral_binary(), "start", "--address", c.address, "--block", "--exit-on-stdin-eof",
             "--state-dir", f"{work}/{side}", "--num-cpus", "1", "--labels", f"side={side}",
             "--python", sys.executable, "--python-path", HERE], f"{work}/{side}.log", env)[0]
            for side in ("a", "b")]
        try:
            n = int(size["cross_gigabytes"] * (1 << 30))
            on = lambda side: {"label_selector": {"side": side}}  # noqa: E731
            corral.get(length.options(**on("a")).remote(make_bytes.options(**on("b")).remote(1 << 20)))  # warm
            ref = make_bytes.options(**on("b")).remote(n)
            corral.wait([ref], timeout=300)
            t = time.perf_counter()
            assert corral.get(length.options(**on("a")).remote(ref), timeout=600) == n
            common.emit("cross_node_gigabytes", n / 1e9 / (time.perf_counter() - t), "GB/s", "higher",
                        path="agent to agent (TLS 1.3)", nodes="two agents on this machine")
            del ref
        finally:
            for p in procs:
                _cluster.stop_process(p)

    def queued(size):
        import psutil
        head = psutil.Process(corral._runtime.cluster.proc.pid)
        before = head.memory_info().rss
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "go")
            g = gate.remote(path)
            t = time.perf_counter()
            refs = [noop.remote(g) for _ in range(size["queued"])]
            corral.wait([refs[-1]], timeout=0)  # flushes the last submissions
            submit_s = time.perf_counter() - t
            rss = head.memory_info().rss
            open(path, "w").close()
            corral.get(refs, timeout=size["queued_finish_limit_s"])
            total_s = time.perf_counter() - t
        common.emit("queued_1M", submit_s, "s", tasks=size["queued"], head_rss_mb=rss / 1e6,
                    head_growth_mb=(rss - before) / 1e6, head_bytes_per_task=round((rss - before) / size["queued"]),
                    total_s=total_s)
        del refs

    def durable(size):
        # Each submit() returns once the task is in SQLite (WAL, synchronous=FULL: fsync per
        # commit), as Celery's delay() returns once Redis (appendfsync always) has it; then every
        # result is awaited, as in Celery's figure. map_submit (one commit per batch) in the details.
        from corral_bench_tasks import durable_noop
        corral.result(durable_noop.submit(0)).get(timeout=60)
        n = size["durable"]
        t = time.perf_counter()
        ids = [durable_noop.submit(i) for i in range(n)]
        for task_id in ids:
            corral.result(task_id).get(timeout=300)
        one_by_one = n / (time.perf_counter() - t)
        t = time.perf_counter()
        ids = durable_noop.map_submit(range(n))
        for task_id in ids:
            corral.result(task_id).get(timeout=300)
        batched = n / (time.perf_counter() - t)
        common.emit("durable_tasks", one_by_one, "tasks/s", "higher", synchronous="FULL",
                    map_submit_tasks_per_s=batched)

    def durable_clients(size):
        # 8 client processes (a web app's workers), each submitting one durable task at a time and
        # waiting for its acknowledgement, then for the results: the group committer shares one
        # fsync among the submissions that arrive during a commit.
        c = corral._runtime.cluster
        common.run_clients(os.path.abspath(__file__), ["durable", c.address], size,
                           env=dict(os.environ, CORRAL_TOKEN=c.token), workload="durable_tasks_8_clients",
                           clients=8, per_client=max(1, size["durable"] // 8), synchronous="FULL")

    def actor_sync(size):
        c = Counter.remote()
        med, p99 = common.timed_round_trips(lambda: corral.get(c.inc.remote()), size["sync"])
        common.emit("actor_calls_sync", med, "µs", p99_us=p99)

    def actor_async(size):
        c = Counter.remote()
        corral.get([c.inc.remote() for _ in range(1000)])
        t = time.perf_counter()
        corral.get([c.inc.remote() for _ in range(size["async"])])
        common.emit("actor_calls_async", size["async"] / (time.perf_counter() - t), "calls/s", "higher")

    def actor_clients(size):
        # Several driver processes calling one actor, found by name.
        c = corral._runtime.cluster
        actor = Counter.options(name="bench_counter").remote()
        corral.get(actor.inc.remote())
        common.run_clients(os.path.abspath(__file__), ["actor", c.address], size,
                           env=dict(os.environ, CORRAL_TOKEN=c.token), workload="multi_client_actor_calls_async")
        corral.kill(actor)

    def actor_create(size):
        actors = common.actor_create(Counter.remote, lambda hs: corral.get([h.inc.remote() for h in hs]), size)
        for h in actors:
            corral.kill(h)

    def gang_start(size):
        def start():
            g = corral.gang(common.GANG_MEMBERS, num_cpus=0.5, strategy="pack")
            g.ready()
            members = [Counter.options(num_cpus=0.5, gang=g, member=i).remote() for i in range(common.GANG_MEMBERS)]
            corral.get([m.inc.remote() for m in members])
            return g, members

        def stop(made):
            g, members = made
            corral.remove_gang(g)  # its actors with it
        common.gang_start(start, stop, size)

    def idle_memory(size):
        rss, pss, workers = idle["mem"]
        common.emit("idle_memory", rss, "MB", pss_mb=pss, workers_rss_mb=workers, processes_rss_mb=rss - workers)

    common.run_all(a, {
        "startup": startup, "tasks_sync": tasks_sync, "tasks_async": tasks_async,
        "multi_client_tasks_async": multi_client, "put_calls": put_calls, "get_calls": get_calls,
        "put_gigabytes": put_gigabytes, "put_gigabytes_held": put_gigabytes_held, "numpy_100MB_arg": numpy_arg, "cross_node_gigabytes": cross_node,
        "actor_calls_sync": actor_sync, "actor_calls_async": actor_async,
        "multi_client_actor_calls_async": actor_clients, "actor_create": actor_create, "gang_start": gang_start,
        "durable_tasks": durable, "durable_tasks_8_clients": durable_clients, "queued_1M": queued, "idle_memory": idle_memory,
    })
    corral.shutdown()


def client(mode, address, barrier, n):
    corral.init(address=address)
    if mode == "durable":
        from corral_bench_tasks import durable_noop

        def batch(k):
            ids = [durable_noop.submit(i) for i in range(k)]
            for task_id in ids:
                corral.result(task_id).get(timeout=300)
        common.client_process(batch, barrier, n, warmup=5)
    elif mode == "actor":
        actor = corral.get_actor("bench_counter")
        common.client_process(lambda k: corral.get([actor.inc.remote() for _ in range(k)]), barrier, n)
    else:
        common.client_process(lambda k: corral.get([one(i) for i in range(k)]), barrier, n)
    corral.shutdown()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
