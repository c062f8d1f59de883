"""Celery's side of the benchmark (run with .venv-bench): Redis as broker and result backend on
its own port, `celery worker --pool=prefork --concurrency=2`, prefetch x4, JSON (pickle for the
numpy test), as in shared/PEERS.md. Finished AsyncResults are collected between phases (trap)."""
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Stack:
    """A redis-server and a Celery worker."""

    def __init__(self, fsync=None):
        self.dir = tempfile.mkdtemp(prefix="celery-bench-")
        port = free_port()
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", self.dir, "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", fsync] if fsync else ["--appendonly", "no"]
        self.redis = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
        os.environ["BENCH_REDIS_URL"] = self.url
        self.worker = None

    def start_worker(self):
        env = dict(os.environ, BENCH_REDIS_URL=self.url, C_FORCE_ROOT="1", PYTHONPATH=HERE)
        celery = os.path.join(os.path.dirname(sys.executable), "celery")
        self.worker = subprocess.Popen([celery, "-A", "celery_app", "worker", "--pool=prefork", "--concurrency=2",
                                        "--without-mingle", "--without-gossip", "--without-heartbeat",
                                        "--loglevel=WARNING"], cwd=HERE, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pids(self):
        return [self.redis.pid] + ([self.worker.pid] if self.worker else []) + common.descendants()

    def stop(self):
        for p in (self.worker, self.redis):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    a = common.args()
    stack = Stack()
    import celery_app
    celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = stack.url
    from celery_app import durable_noop, noop, total
    state = {}

    def startup(size):
        t = time.perf_counter()
        stack.start_worker()
        noop.delay(0).get(timeout=60)
        common.emit("startup", time.perf_counter() - t, "s", note="worker start to first result")
        time.sleep(2)
        state["mem"] = common.process_memory(stack.pids(), worker_match=("celery",))

    def tasks_sync(size):
        med, p99 = common.timed_round_trips(lambda: noop.delay(0).get(timeout=60), size["sync"])
        gc.collect()
        common.emit("tasks_sync", med, "µs", p99_us=p99)

    def tasks_async(size):
        t = time.perf_counter()
        rs = [noop.delay(i) for i in range(size["async"])]
        for r in rs:
            r.get(timeout=120)
        common.emit("tasks_async", size["async"] / (time.perf_counter() - t), "tasks/s", "higher")
        del rs
        gc.collect()

    def multi_client(size):
        common.run_clients(os.path.abspath(__file__), ["tasks", stack.url], size,
                           env=dict(os.environ, BENCH_REDIS_URL=stack.url))

    def get_calls(size):
        r = noop.delay(1)
        r.get(timeout=60)
        from celery.result import AsyncResult
        common.get_calls(lambda: AsyncResult(r.id, app=celery_app.app).get(timeout=60), size,
                         via="AsyncResult(id).get() of a finished task")
        gc.collect()

    def numpy_arg(size):
        common.numpy_arg(lambda arr: total.apply_async((arr,), serializer="pickle").get(timeout=300), size,
                         calls=max(1, min(3, size["array_calls"])), note="pickle serializer; median of up to 3")

    def durable(size):
        # A second Redis that fsyncs every write, tasks acknowledged after they ran (acks_late).
        results = {}
        for fsync in ("always", "everysec"):
            s = Stack(fsync=fsync)
            celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = s.url
            s.start_worker()
            durable_noop.delay(0).get(timeout=60)
            t = time.perf_counter()
            rs = [durable_noop.delay(i) for i in range(size["durable"])]
            for r in rs:
                r.get(timeout=300)
            results[fsync] = size["durable"] / (time.perf_counter() - t)
            del rs
            gc.collect()
            s.stop()
        celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = stack.url
        common.emit("durable_tasks", results["always"], "tasks/s", "higher", appendfsync="always",
                    everysec_tasks_per_s=results["everysec"], acks_late=True)

    def durable_clients(size):
        s = Stack(fsync="always")
        s.start_worker()
        celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = s.url
        durable_noop.delay(0).get(timeout=60)
        common.run_clients(os.path.abspath(__file__), ["durable", s.url], size,
                           env=dict(os.environ, BENCH_REDIS_URL=s.url), workload="durable_tasks_8_clients",
                           clients=8, per_client=max(1, size["durable"] // 8), appendfsync="always", acks_late=True)
        s.stop()
        celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = stack.url

    def idle_memory(size):
        rss, pss, workers = state["mem"]
        common.emit("idle_memory", rss, "MB", pss_mb=pss, workers_rss_mb=workers, processes_rss_mb=rss - workers)

    common.run_all(a, {
        "startup": startup, "tasks_sync": tasks_sync, "tasks_async": tasks_async,
        "multi_client_tasks_async": multi_client, "put_calls": "Celery has no object store",
        "get_calls": get_calls, "put_gigabytes": "Celery has no object store", "put_gigabytes_held": "Celery has no object store", "cross_node_gigabytes": "Celery has no object store", "numpy_100MB_arg": numpy_arg,
        "actor_calls_sync": "Celery has no actors", "actor_calls_async": "Celery has no actors",
        "multi_client_actor_calls_async": "Celery has no actors", "actor_create": "Celery has no actors", "gang_start": "Celery has no gangs",
        "durable_tasks": durable, "durable_tasks_8_clients": durable_clients,
        "queued_1M": "Celery tasks cannot wait on another task's result in the broker; not comparable",
        "idle_memory": idle_memory,
    })
    stack.stop()


def client(mode, url, barrier, n):
    import celery_app
    celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = url
    task = celery_app.durable_noop if mode == "durable" else celery_app.noop

    def batch(k):
        for r in [task.delay(i) for i in range(k)]:
            r.get(timeout=300)
    common.client_process(batch, barrier, n, warmup=5 if mode == "durable" else 100)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
