"""Ray's side of the benchmark (run with .venv-bench). Configuration as in shared/PEERS.md:
ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1"), usage stats off."""
import os
import sys
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import ray  # noqa: E402


@ray.remote
def noop(i):
    return i


@ray.remote
def total(a):
    return float(a.sum())


@ray.remote
def gate(path):
    return common.wait_for_file(path)


@ray.remote
class Counter:
    def inc(self):
        return 1


def one(i):
    return noop.remote(i)


def main():
    a = common.args()
    idle = {}

    def startup(size):
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 namespace="bench")
        ray.get(noop.remote(0))
        common.emit("startup", time.perf_counter() - t, "s", ray=ray.__version__)
        time.sleep(2)
        idle["mem"] = common.process_memory(common.descendants(), worker_match=("default_worker",))

    def tasks_sync(size):
        med, p99 = common.timed_round_trips(lambda: ray.get(one(0)), size["sync"])
        common.emit("tasks_sync", med, "µs", p99_us=p99)

    def tasks_async(size):
        ray.get([one(i) for i in range(1000)])
        t = time.perf_counter()
        ray.get([one(i) for i in range(size["async"])])
        common.emit("tasks_async", size["async"] / (time.perf_counter() - t), "tasks/s", "higher")

    def multi_client(size):
        common.run_clients(os.path.abspath(__file__), ["tasks", ray.get_runtime_context().gcs_address], size)

    def put_calls(size):
        del common.put_calls(ray.put, size)[:]

    def get_calls(size):
        ref = ray.put(1)
        common.get_calls(lambda: ray.get(ref), size)

    def put_gigabytes(size):
        common.put_gigabytes(ray.put, size)

    def put_gigabytes_held(size):
        refs = common.put_gigabytes_held(ray.put, size)
        del refs

    def numpy_arg(size):
        common.numpy_arg(lambda arr: ray.get(total.remote(arr)), size)

    def actor_sync(size):
        c = Counter.remote()
        med, _ = common.timed_round_trips(lambda: ray.get(c.inc.remote()), size["sync"])
        common.emit("actor_calls_sync", med, "µs")

    def actor_async(size):
        c = Counter.remote()
        ray.get(c.inc.remote())
        t = time.perf_counter()
        ray.get([c.inc.remote() for _ in range(size["async"])])
        common.emit("actor_calls_async", size["async"] / (time.perf_counter() - t), "calls/s", "higher")

    def actor_clients(size):
        actor = Counter.options(name="bench_counter").remote()
        ray.get(actor.inc.remote())
        common.run_clients(os.path.abspath(__file__), ["actor", ray.get_runtime_context().gcs_address], size,
                           workload="multi_client_actor_calls_async")
        ray.kill(actor)

    def actor_create(size):
        actors = common.actor_create(Counter.remote, lambda hs: ray.get([h.inc.remote() for h in hs]), size)
        for h in actors:
            ray.kill(h)

    def gang_start(size):
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        def start():
            pg = placement_group([{"CPU": 0.5}] * common.GANG_MEMBERS, strategy="PACK")
            ray.get(pg.ready())
            members = [Counter.options(num_cpus=0.5, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote()
                       for i in range(common.GANG_MEMBERS)]
            ray.get([m.inc.remote() for m in members])
            return pg, members

        def stop(made):
            pg, members = made
            for m in members:
                ray.kill(m)
            remove_placement_group(pg)
        common.gang_start(start, stop, size)

    def queued(size):
        import psutil
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "go")
            g = gate.remote(path)
            t = time.perf_counter()
            refs = []
            for _ in range(size["queued"]):
                refs.append(noop.remote(g))
                if time.perf_counter() - t > size["queued_limit_s"]:
                    open(path, "w").close()
                    common.emit("queued_1M", unavailable=f"submitted {len(refs)} of {size['queued']} in the "
                                                         f"{size['queued_limit_s']} s limit")
                    return
            submit_s = time.perf_counter() - t
            rss = sum(psutil.Process(p).memory_info().rss for p in common.descendants() + [os.getpid()])
            open(path, "w").close()
            ray.get(refs, timeout=size["queued_finish_limit_s"])
            total_s = time.perf_counter() - t
        common.emit("queued_1M", submit_s, "s", tasks=size["queued"], all_processes_rss_mb=rss / 1e6,
                    total_s=total_s)

    def idle_memory(size):
        rss, pss, workers = idle["mem"]
        common.emit("idle_memory", rss, "MB", pss_mb=pss, workers_rss_mb=workers, processes_rss_mb=rss - workers)

    common.run_all(a, {
        "startup": startup, "tasks_sync": tasks_sync, "tasks_async": tasks_async,
        "multi_client_tasks_async": multi_client, "put_calls": put_calls, "get_calls": get_calls,
        "put_gigabytes": put_gigabytes, "put_gigabytes_held": put_gigabytes_held, "numpy_100MB_arg": numpy_arg, "cross_node_gigabytes": "the benchmark does not set up a second node of this system yet", "actor_calls_sync": actor_sync,
        "actor_calls_async": actor_async, "multi_client_actor_calls_async": actor_clients,
        "actor_create": actor_create, "gang_start": gang_start, "durable_tasks": "Ray has no durable task queue", "durable_tasks_8_clients": "Ray has no durable task queue",
        "queued_1M": queued, "idle_memory": idle_memory,
    })
    ray.shutdown()


def client(mode, address, barrier, n):
    ray.init(address=address, log_to_driver=False, namespace="bench")
    if mode == "actor":
        actor = ray.get_actor("bench_counter")
        common.client_process(lambda k: ray.get([actor.inc.remote() for _ in range(k)]), barrier, n)
    else:
        common.client_process(lambda k: ray.get([one(i) for i in range(k)]), barrier, n)
    ray.shutdown()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
