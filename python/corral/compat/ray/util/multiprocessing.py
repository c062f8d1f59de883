"""``ray.util.multiprocessing.Pool``: the standard library's Pool API, its processes being actors
spread over the cluster (one CPU each)."""
import itertools
import threading
from multiprocessing import TimeoutError  # noqa: A004 - the standard library's, which callers catch

import corral


class _PoolActor:
    def __init__(self, initializer=None, initargs=None):
        if initializer is not None:
            initializer(*(initargs or ()))

    def run_batch(self, fn, batch, star):
        return [fn(*a) if star else fn(a) for a in batch]

    def run(self, fn, args, kwargs):
        return fn(*args, **(kwargs or {}))


class AsyncResult:
    """What ``apply_async``/``map_async`` return: ``get(timeout)``, ``wait``, ``ready``, ``successful``."""

    def __init__(self, refs, single, callback=None, error_callback=None):
        self._refs, self._single = refs, single
        self._callback, self._error_callback = callback, error_callback
        self._done = False
        self._value = self._error = None
        self._lock = threading.Lock()
        if callback is not None or error_callback is not None:  # called when the result comes, as the stdlib does
            threading.Thread(target=self.wait, name="corral-pool-callback", daemon=True).start()

    def _collect(self, timeout):
        if self._done:
            return
        ready, not_ready = corral.wait(self._refs, num_returns=len(self._refs), timeout=timeout)
        if not_ready:
            raise TimeoutError("the result was not ready within the timeout")
        with self._lock:
            if not self._done:
                self._collect_ready()

    def _collect_ready(self):
        try:
            parts = corral.get(self._refs)
            self._value = parts[0] if self._single else list(itertools.chain.from_iterable(parts))
            if self._callback is not None:
                self._callback(self._value)
        except Exception as e:  # noqa: BLE001 - get() raises it
            self._error = e
            if self._error_callback is not None:
                self._error_callback(e)
        self._done = True

    def get(self, timeout=None):
        self._collect(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self, timeout=None):
        try:
            self._collect(timeout)
        except TimeoutError:
            pass

    def ready(self):
        ready, _ = corral.wait(self._refs, num_returns=len(self._refs), timeout=0)
        return len(ready) == len(self._refs)

    def successful(self):
        if not self.ready():
            raise ValueError("the result is not ready")
        self._collect(None)
        return self._error is None


class Pool:
    """``Pool(processes=None, initializer=None, initargs=None, maxtasksperchild=None)``: `processes`
    actors of one CPU each (default: the cluster's CPUs), each running ``initializer(*initargs)``
    once. ``map``/``starmap``/``imap``/``imap_unordered``/``apply``/``apply_async``/``map_async``
    work as in the standard library; functions and values must be picklable."""

    def __init__(self, processes=None, initializer=None, initargs=None, maxtasksperchild=None,
                 context=None, ray_address=None, ray_remote_args=None):
        if processes is None:
            processes = max(1, int(corral.nodes() and sum(
                n["resources"].get("CPU", 0) for n in corral.nodes() if n["state"] == "alive")))
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        opts = {"num_cpus": 1, **(ray_remote_args or {})}
        cls = corral.remote(**opts)(_PoolActor)
        self._actors = [cls.remote(initializer, initargs) for _ in range(processes)]
        self._next = itertools.cycle(range(processes))
        self._closed = False

    def _check(self):
        if self._closed:
            raise ValueError("Pool not running")

    def _batches(self, iterable, chunksize):
        items = list(iterable)
        if chunksize is None:
            chunksize = max(1, len(items) // (len(self._actors) * 4) or 1)
        return [items[i:i + chunksize] for i in range(0, len(items), chunksize)]

    def _submit(self, fn, iterable, chunksize, star):
        self._check()
        return [self._actors[next(self._next)].run_batch.remote(fn, b, star)
                for b in self._batches(iterable, chunksize)]

    def apply(self, func, args=(), kwds=None):
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
        self._check()
        ref = self._actors[next(self._next)].run.remote(func, tuple(args), kwds)
        return AsyncResult([ref], True, callback, error_callback)

    def map(self, func, iterable, chunksize=None):
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return AsyncResult(self._submit(func, iterable, chunksize, False), False, callback, error_callback)

    def starmap(self, func, iterable, chunksize=None):
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        return AsyncResult(self._submit(func, iterable, chunksize, True), False, callback, error_callback)

    def imap(self, func, iterable, chunksize=1):
        return self._in_order(self._submit(func, iterable, chunksize, False))  # submitted now, read lazily

    def imap_unordered(self, func, iterable, chunksize=1):
        return self._as_ready(self._submit(func, iterable, chunksize, False))

    @staticmethod
    def _in_order(refs):
        for ref in refs:
            yield from corral.get(ref)

    @staticmethod
    def _as_ready(pending):
        while pending:
            ready, pending = corral.wait(pending, num_returns=1)
            yield from corral.get(ready[0])

    def close(self):
        self._closed = True

    def terminate(self):
        self._closed = True
        for a in self._actors:
            corral.kill(a)
        self._actors = []

    def join(self):
        if not self._closed:
            raise ValueError("Pool is still running")
        if self._actors:  # the calls made so far have run once each actor answers
            corral.get([a.run.remote(len, ((),), None) for a in self._actors])

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.terminate()
