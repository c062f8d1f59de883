"""The worker side of an actor: builds the instance, then runs its calls until the worker is stopped.

The agent gave this worker the actor's creation task; from then on it sends the actor's calls
straight here, in the order the head sent them. How they run:

- a plain actor (``max_concurrency=1``, no ``async def`` methods, no concurrency groups): one at a
  time, in arrival order, on this thread;
- ``max_concurrency > 1`` or concurrency groups: a thread pool per group (the default group has
  ``max_concurrency`` threads);
- an async actor (any ``async def`` method): one event loop on its own thread; a group's semaphore
  bounds how many of its calls run at once (``max_concurrency`` for the default group, 1000 unless
  given). A sync method of an async actor runs on the loop's thread, as in Ray.

The constructor's exception ends the actor (the agent stops this worker); a method's exception
goes to that call's caller only.
"""
import asyncio
import concurrent.futures
import inspect
import os
import threading

from . import _runtime, exceptions, generators, worker

_ASYNC_DEFAULT_CONCURRENCY = 1000


def run(link, task, functions):
    (task_id, attempt, name, fn_hash, fn_bytes, args, deps, resources, gpu_ids, _owner, _durable, _fmt, _soft,
     _parents, _link, _forget, actor) = task
    actor_id, _method, _group, options = actor
    max_concurrency, groups, is_async = options
    cls, a, k, failed = worker.load_call(functions, name, fn_hash, fn_bytes, args, deps)
    if failed:
        link.finish(task_id, attempt, *failed[:3], stored_size=failed[3])
        return
    _runtime.in_actor = True
    try:
        instance = _runtime.call_task(cls, a, k)
    except BaseException as e:  # noqa: BLE001 - the actor's callers get it
        data, kind, message, _ = worker.raised(e, f"the constructor of {name}")
        link.finish(task_id, attempt, data, kind, message)
        return
    host = _Host(link, instance, name, max_concurrency, groups, is_async)
    link.actor_ready(actor_id, attempt)
    while True:
        try:
            call = link.next_task()
        except exceptions.ConnectionLostError:
            os._exit(0)  # the agent is gone; so is the actor
        host.submit(call)


class _Host:
    def __init__(self, link, instance, class_name, max_concurrency, groups, is_async):
        self.link, self.instance, self.class_name = link, instance, class_name
        self.methods = {n for n, _ in inspect.getmembers(type(instance), callable)
                        if not n.startswith("__") or n == "__call__"}
        self.functions = {}
        self.loop = None
        self.pools = None
        if is_async:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="corral-actor-loop", daemon=True).start()
            limits = {"": max_concurrency if max_concurrency > 0 else _ASYNC_DEFAULT_CONCURRENCY, **groups}
            self.semaphores = {}

            async def make():
                for g, n in limits.items():
                    self.semaphores[g] = asyncio.Semaphore(max(1, n))
            asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        elif max_concurrency > 1 or groups:
            limits = {"": max(1, max_concurrency), **groups}
            self.pools = {g: concurrent.futures.ThreadPoolExecutor(max(1, n), thread_name_prefix=f"corral-actor-{g}")
                          for g, n in limits.items()}

    def _group(self, method_name, group):
        if not group:
            group = getattr(getattr(type(self.instance), method_name, None), "__corral_concurrency_group__", "") or ""
        return group

    def submit(self, call):
        task_id, attempt, name, _hash, _fn, args, deps = call[:7]
        _aid, method_name, group, _opts = call[16]
        if self.loop is not None:
            sem = self.semaphores.get(self._group(method_name, group))
            if sem is None:
                return self._finish(task_id, attempt, self._unknown_group(name, group))
            asyncio.run_coroutine_threadsafe(self._run_async(sem, task_id, attempt, name, method_name, args, deps),
                                             self.loop)
        elif self.pools is not None:
            pool = self.pools.get(self._group(method_name, group))
            if pool is None:
                return self._finish(task_id, attempt, self._unknown_group(name, group))
            pool.submit(self._run_sync, task_id, attempt, name, method_name, args, deps)
        else:
            self._run_sync(task_id, attempt, name, method_name, args, deps)

    def _unknown_group(self, name, group):
        return (b"", exceptions.KIND_RUNTIME, f"{name}: actor {self.class_name} has no concurrency group {group!r}", 0)

    def _prepare(self, name, method_name, args, deps):
        _fn, a, k, failed = worker.load_call(self.functions, name, b"", b"", args, deps)
        if failed:
            return None, None, None, failed
        # Only the class's own methods (the head checks the name against them too): never
        # __setattr__ or other machinery of the instance.
        method = getattr(self.instance, method_name, None) if method_name in self.methods else None
        if method is None:
            return None, None, None, (b"", exceptions.KIND_RUNTIME,
                                      f"actor {self.class_name} has no method {method_name!r}", 0)
        return method, a, k, None

    def _run_sync(self, task_id, attempt, name, method_name, args, deps):
        _runtime.current_call.set(task_id)
        try:
            method, a, k, failed = self._prepare(name, method_name, args, deps)
            if failed:
                return self._finish(task_id, attempt, failed)
            try:
                result = generators.drain(method(*a, **k), name)
            except BaseException as e:  # noqa: BLE001 - the caller gets it
                return self._finish(task_id, attempt, worker.raised(e, name))
            outcome = worker.encode_result(result, name, task_id, attempt)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the call gets an answer
            outcome = _broken(name, e)
        self._finish(task_id, attempt, outcome)

    async def _run_async(self, sem, task_id, attempt, name, method_name, args, deps):
        _runtime.current_call.set(task_id)  # (each call is an asyncio task of its own context)
        try:
            async with sem:
                method, a, k, failed = self._prepare(name, method_name, args, deps)
                if failed:
                    return self._finish(task_id, attempt, failed)
                try:
                    result = method(*a, **k)
                    if inspect.isawaitable(result):
                        result = await result
                    result = await generators.drain_async(result, name)
                except BaseException as e:  # noqa: BLE001 - the caller gets it
                    return self._finish(task_id, attempt, worker.raised(e, name))
            outcome = worker.encode_result(result, name, task_id, attempt)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the call gets an answer
            outcome = _broken(name, e)
        self._finish(task_id, attempt, outcome)

    def _finish(self, task_id, attempt, outcome):
        data, kind, message, stored = outcome
        try:
            self.link.finish(task_id, attempt, data, kind, message, -1.0, stored)
        except exceptions.ConnectionLostError:
            os._exit(0)


def _broken(name, e):
    return (b"", exceptions.KIND_RUNTIME, f"{name}: the actor's worker could not run or answer the call: "
                                          f"{type(e).__name__}: {e}", 0)
