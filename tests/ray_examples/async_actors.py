# Async actors and threaded actors: calls run concurrently up to max_concurrency; concurrency groups.
import asyncio
import threading
import time

import corral.compat.ray as ray


@ray.remote
class AsyncActor:
    def __init__(self):
        self.running = 0
        self.peak = 0

    async def work(self, i):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.3)
        self.running -= 1
        return i

    def peak_running(self):
        return self.peak


@ray.remote(max_concurrency=3)
class Threaded:
    def __init__(self):
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def work(self):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.3)
        with self.lock:
            self.running -= 1

    def peak_running(self):
        return self.peak


@ray.remote(concurrency_groups={"io": 2, "compute": 1})
class Grouped:
    @ray.method(concurrency_group="io")
    async def io(self):
        await asyncio.sleep(0.1)
        return "io"

    @ray.method(concurrency_group="compute")
    async def compute(self):
        return "compute"

    async def default(self):
        return "default"


a = AsyncActor.remote()
print(ray.get([a.work.remote(i) for i in range(4)]))
print("async calls overlapped:", ray.get(a.peak_running.remote()) > 1)
t = Threaded.remote()
ray.get([t.work.remote() for _ in range(3)])
print("threaded peak:", ray.get(t.peak_running.remote()))
g = Grouped.remote()
print(ray.get([g.io.remote(), g.compute.remote(), g.default.remote(),
               g.default.options(concurrency_group="io").remote()]))
