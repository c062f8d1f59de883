"""``ray.util.queue.Queue``: a first-in, first-out queue that tasks and actors share, held by an actor."""
import asyncio
import queue as _stdlib_queue

import corral


class Empty(_stdlib_queue.Empty):
    pass


class Full(_stdlib_queue.Full):
    pass


class _QueueActor:
    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._queue = None

    @property
    def queue(self):
        if self._queue is None:  # made on the actor's event loop, not in the constructor
            self._queue = asyncio.Queue(self.maxsize)
        return self._queue

    def qsize(self):
        return self.queue.qsize()

    def empty(self):
        return self.queue.empty()

    def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def put_batch(self, items, timeout=None):
        for item in items:
            if not await self.put(item, timeout):
                return False
        return True

    async def get(self, timeout=None):
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, None

    def put_nowait(self, item):
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            return False

    def put_nowait_batch(self, items):
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return False
        for item in items:
            self.queue.put_nowait(item)
        return True

    def get_nowait(self):
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    def get_nowait_batch(self, n):
        if n > self.queue.qsize():
            return False, None
        return True, [self.queue.get_nowait() for _ in range(n)]


class Queue:
    """``Queue(maxsize=0, actor_options=None)``: ``put``/``get`` block (at most ``timeout``
    seconds, then Full/Empty) unless ``block=False``. The queue can be passed to tasks and actors;
    its items live in one actor (``actor_options`` are that actor's options)."""

    def __init__(self, maxsize=0, actor_options=None):
        actor_options = dict(actor_options or {})
        actor_options.setdefault("num_cpus", 0)
        self.maxsize = maxsize
        self.actor = corral.remote(**actor_options)(_QueueActor).remote(maxsize)

    def __len__(self):
        return self.size()

    def size(self):
        return corral.get(self.actor.qsize.remote())

    def qsize(self):
        return self.size()

    def empty(self):
        return corral.get(self.actor.empty.remote())

    def full(self):
        return corral.get(self.actor.full.remote())

    def put(self, item, block=True, timeout=None):
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if not block:
            if not corral.get(self.actor.put_nowait.remote(item)):
                raise Full
            return
        if not corral.get(self.actor.put.remote(item, timeout)):
            raise Full

    async def put_async(self, item, block=True, timeout=None):
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        ref = self.actor.put.remote(item, timeout) if block else self.actor.put_nowait.remote(item)
        if not await ref:
            raise Full

    def get(self, block=True, timeout=None):
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        ok, item = corral.get(self.actor.get_nowait.remote() if not block else self.actor.get.remote(timeout))
        if not ok:
            raise Empty
        return item

    async def get_async(self, block=True, timeout=None):
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        ok, item = await (self.actor.get.remote(timeout) if block else self.actor.get_nowait.remote())
        if not ok:
            raise Empty
        return item

    def put_nowait(self, item):
        return self.put(item, block=False)

    def put_nowait_batch(self, items):
        if not isinstance(items, list):
            raise TypeError("Argument 'items' must be a list")
        if not corral.get(self.actor.put_nowait_batch.remote(items)):
            raise Full(f"Cannot add {len(items)} items to queue of size {self.size()} and maxsize {self.maxsize}.")

    def get_nowait(self):
        return self.get(block=False)

    def get_nowait_batch(self, num_items):
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("'num_items' must be a nonnegative integer")
        ok, items = corral.get(self.actor.get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(f"Cannot get {num_items} items from queue of size {self.size()}.")
        return items

    def shutdown(self, force=False, grace_period_s=5):
        if self.actor is not None:
            corral.kill(self.actor)
        self.actor = None
