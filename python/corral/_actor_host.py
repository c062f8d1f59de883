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
import sys
import threading
import time
import traceback
import types

from . import _runtime, exceptions, generators, worker

_ASYNC_DEFAULT_CONCURRENCY = 1000


def run(link, task, functions):
    (task_id, attempt, name, fn_hash, fn_bytes, args, deps, resources, gpu_ids, _owner, _durable, _fmt, _soft,
     _parents, _link, _forget, actor, _seq) = task
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
    _HOST[0] = host
    link.actor_ready(actor_id, attempt)
    if host.loop is None and host.pools is None:
        _read_calls(link, host)  # calls run here, on the main thread, one by one
    # Calls run on other threads: the main thread is left free to take the agent's cancels (Python
    # runs signal handlers there only, and not while it waits in next_task).
    threading.Thread(target=_read_calls, args=(link, host), name="corral-actor-calls", daemon=True).start()
    while True:
        time.sleep(3600)


def _read_calls(link, host):
    try:
        while True:
            try:
                call = link.next_task()
            except exceptions.ConnectionLostError:
                os._exit(0)  # the agent is gone; so is the actor
            host.submit(call, call[17])  # (the number the agent's cancel names it by)
    except BaseException:  # noqa: BLE001 - no call could be answered any more: the actor dies, visibly
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


_HOST = [None]
_lock = threading.RLock()   # guards the host's calls, last_seq and early cancels, and cancelled_calls
_early_cancels = set()      # seqs of calls cancelled before they arrived (or before the actor was ready)


_CHANNEL_SEQ = 1 << 31  # seqs of calls that came from their callers themselves (call channels)


def cancel(seq):
    """The agent cancels the call numbered `seq` (from the SIGINT handler, on the main thread): an
    async call's coroutine gets CancelledError, which its caller gets as a task error (an instance
    of CancelledError, as Ray's RayTaskError); a sync one that has not started never runs, and one
    that runs is marked (``is_canceled()``); a sync call's caller gets TaskCancelledError."""
    with _lock:
        host = _HOST[0]
        call = host.calls.get(seq) if host is not None else None
        if call is not None:
            host.mark_cancelled(call)
        elif host is None or seq > (host.last_channel_seq if seq >= _CHANNEL_SEQ else host.last_seq):
            _early_cancels.add(seq)  # still on its way in: marked when it arrives
        # else: it has finished already; nothing to do


class _Host:
    def __init__(self, link, instance, class_name, max_concurrency, groups, is_async):
        self.link, self.instance, self.class_name = link, instance, class_name
        self.methods = {n for n, _ in inspect.getmembers(type(instance), callable)
                        if not n.startswith("__") or n == "__call__"}
        self.functions = {}
        self.calls = {}            # seq -> [task id, its asyncio task or None] while it runs
        self.last_seq = 0          # the last call received from the agent
        self.last_channel_seq = 0  # ...and from a call channel (the agent numbers those after the worker)
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

    def mark_cancelled(self, call):
        _runtime.cancelled_calls.add(call[0])
        if call[1] is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(call[1].cancel)

    def submit(self, call, seq):
        task_id, attempt, name, _hash, _fn, args, deps = call[:7]
        _aid, method_name, group, _opts = call[16]
        with _lock:
            entry = self.calls[seq] = [task_id, None]
            if seq >= _CHANNEL_SEQ:
                self.last_channel_seq = seq
            else:
                self.last_seq = seq
            if seq in _early_cancels:
                _early_cancels.discard(seq)
                self.mark_cancelled(entry)
        return self._submit(seq, task_id, attempt, name, method_name, group, args, deps)

    def _submit(self, seq, task_id, attempt, name, method_name, group, args, deps):
        if self.loop is not None:
            sem = self.semaphores.get(self._group(method_name, group))
            if sem is None:
                return self._finish(task_id, attempt, self._unknown_group(name, group), seq)
            asyncio.run_coroutine_threadsafe(self._run_async(sem, seq, task_id, attempt, name, method_name, args, deps),
                                             self.loop)
        elif self.pools is not None:
            pool = self.pools.get(self._group(method_name, group))
            if pool is None:
                return self._finish(task_id, attempt, self._unknown_group(name, group), seq)
            pool.submit(self._run_sync, seq, task_id, attempt, name, method_name, args, deps)
        else:
            self._run_sync(seq, task_id, attempt, name, method_name, args, deps)

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

    def _run_sync(self, seq, task_id, attempt, name, method_name, args, deps):
        _runtime.current_call.set(task_id)
        if task_id in _runtime.cancelled_calls:  # cancelled while it waited its turn: it never runs
            return self._finish(task_id, attempt, _cancelled(name), seq)
        try:
            method, a, k, failed = self._prepare(name, method_name, args, deps)
            if failed:
                return self._finish(task_id, attempt, failed, seq)
            try:
                result = method(*a, **k)
                if isinstance(result, types.GeneratorType):
                    result = generators.drain(result, name)
            except BaseException as e:  # noqa: BLE001 - the caller gets it
                return self._finish(task_id, attempt, worker.raised(e, name), seq)
            if task_id in _runtime.cancelled_calls:
                outcome = _cancelled(name)
            else:
                outcome = worker.encode_result(result, name, task_id, attempt)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the call gets an answer
            outcome = _broken(name, e)
        self._finish(task_id, attempt, outcome, seq)

    async def _run_async(self, sem, seq, task_id, attempt, name, method_name, args, deps):
        _runtime.current_call.set(task_id)  # (each call is an asyncio task of its own context)
        with _lock:
            entry = self.calls.get(seq)
            if entry is not None:
                entry[1] = asyncio.current_task()
                if task_id in _runtime.cancelled_calls:  # cancelled before it began
                    entry[1].cancel()
        try:
            async with sem:
                method, a, k, failed = self._prepare(name, method_name, args, deps)
                if failed:
                    return self._finish(task_id, attempt, failed, seq)
                try:
                    result = method(*a, **k)
                    if inspect.isawaitable(result):
                        result = await result
                    result = await generators.drain_async(result, name)
                except BaseException as e:  # noqa: BLE001 - the caller gets it
                    return self._finish(task_id, attempt, worker.raised(e, name), seq)
            if task_id in _runtime.cancelled_calls:  # it swallowed the CancelledError: still cancelled
                outcome = worker.raised(asyncio.CancelledError(), name)
            else:
                outcome = worker.encode_result(result, name, task_id, attempt)
        except asyncio.CancelledError as e:  # cancelled while waiting for its group's turn
            outcome = worker.raised(e, name)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the call gets an answer
            outcome = _broken(name, e)
        self._finish(task_id, attempt, outcome, seq)

    def _finish(self, task_id, attempt, outcome, seq):
        with _lock:
            self.calls.pop(seq, None)
            _runtime.cancelled_calls.discard(task_id)
        data, kind, message, stored = outcome
        try:
            self.link.finish(task_id, attempt, data, kind, message, -1.0, stored)
        except exceptions.ConnectionLostError:
            os._exit(0)


def _cancelled(name):
    return (b"", exceptions.KIND_CANCELLED, f"{name} was cancelled", 0)


def _broken(name, e):
    return (b"", exceptions.KIND_RUNTIME, f"{name}: the actor's worker could not run or answer the call: "
                                          f"{type(e).__name__}: {e}", 0)
