"""Dask's side of the benchmark (run with .venv-bench). Configuration as in shared/PEERS.md:
LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
dashboard_address=None); the scheduler and nannies live in the driver process."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def noop(i):
    return i


def total(a):
    return float(a.sum())


def submit_one(client, i):
    # A small caller: Dask inspects the caller's source on submit (shared/PEERS.md, traps).
    return client.submit(noop, i, pure=False)


def main():
    a = common.args()
    import psutil
    from dask.distributed import Client, LocalCluster
    state = {}

    def startup(size):
        before = psutil.Process().memory_info().rss
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
        submit_one(client, 0).result()
        common.emit("startup", time.perf_counter() - t, "s")
        state.update(cluster=cluster, client=client)
        time.sleep(2)
        rss, pss, workers = common.process_memory(common.descendants(), worker_match=("spawn_main", "worker"))
        growth = (psutil.Process().memory_info().rss - before) / 1e6  # scheduler and nannies are in the driver
        state["mem"] = (rss + growth, pss + growth, workers, growth)

    def tasks_sync(size):
        c = state["client"]
        med, p99 = common.timed_round_trips(lambda: submit_one(c, 0).result(), size["sync"])
        common.emit("tasks_sync", med, "µs", p99_us=p99)

    def tasks_async(size):
        c = state["client"]
        c.gather([submit_one(c, i) for i in range(200)])
        t = time.perf_counter()
        c.gather([submit_one(c, i) for i in range(size["async"])])
        common.emit("tasks_async", size["async"] / (time.perf_counter() - t), "tasks/s", "higher")

    def multi_client(size):
        common.run_clients(os.path.abspath(__file__), [state["cluster"].scheduler_address], size)

    def put_calls(size):
        c = state["client"]
        del common.put_calls(lambda i: c.scatter(i, hash=False), size, via="scatter")[:]

    def get_calls(size):
        fut = state["client"].scatter(1, hash=False)
        common.get_calls(fut.result, size, via="result")

    def put_gigabytes(size):
        c = state["client"]
        common.put_gigabytes(lambda arr: c.scatter(arr, hash=False), size, via="scatter")

    def put_gigabytes_held(size):
        c = state["client"]
        futs = common.put_gigabytes_held(lambda chunk: c.scatter(chunk, hash=False), size, via="scatter")
        del futs

    def numpy_arg(size):
        c = state["client"]
        common.numpy_arg(lambda arr: c.submit(total, arr, pure=False).result(), size)

    def queued(size):
        c = state["client"]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "go")
            g = c.submit(common.wait_for_file, path, pure=False)
            t = time.perf_counter()
            futs = []
            for _ in range(size["queued"]):
                futs.append(c.submit(noop, g, pure=False))
                if time.perf_counter() - t > size["queued_limit_s"]:
                    open(path, "w").close()
                    common.emit("queued_1M", unavailable=f"submitted {len(futs)} of {size['queued']} in the "
                                                         f"{size['queued_limit_s']} s limit")
                    return
            submit_s = time.perf_counter() - t
            open(path, "w").close()
            c.gather(futs)
            total_s = time.perf_counter() - t
        common.emit("queued_1M", submit_s, "s", tasks=size["queued"], total_s=total_s)

    def idle_memory(size):
        rss, pss, workers, growth = state["mem"]
        common.emit("idle_memory", rss, "MB", pss_mb=pss, workers_rss_mb=workers, driver_growth_mb=growth)

    common.run_all(a, {
        "startup": startup, "tasks_sync": tasks_sync, "tasks_async": tasks_async,
        "multi_client_tasks_async": multi_client, "put_calls": put_calls, "get_calls": get_calls,
        "put_gigabytes": put_gigabytes, "put_gigabytes_held": put_gigabytes_held, "numpy_100MB_arg": numpy_arg, "cross_node_gigabytes": "the benchmark does not set up a second node of this system yet",
        "actor_calls_sync": "Dask actors are experimental; not measured",
        "actor_calls_async": "Dask actors are experimental; not measured",
        "multi_client_actor_calls_async": "Dask actors are experimental; not measured",
        "actor_create": "Dask actors are experimental; not measured",
        "gang_start": "Dask has no gangs (placement groups)",
        "durable_tasks": "Dask has no durable task queue", "durable_tasks_8_clients": "Dask has no durable task queue", "queued_1M": queued, "idle_memory": idle_memory,
    })
    state["client"].close()
    state["cluster"].close()


def client_main(address, barrier, n):
    from dask.distributed import Client
    c = Client(address)
    common.client_process(lambda k: c.gather([submit_one(c, i) for i in range(k)]), barrier, n)
    c.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
