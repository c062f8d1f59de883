"""``ray.util.ActorPool``: spread work over a fixed set of actors."""
import corral


class ActorPool:
    """Runs ``fn(actor, value)`` on whichever actor of `actors` is free, one call per actor at a time.

        pool = ActorPool([A.remote(), A.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))   # [2, 4, 6, 8], in order

    ``map`` yields results in submission order, ``map_unordered`` as they finish; ``submit`` and
    ``get_next``/``get_next_unordered`` do the same one value at a time."""

    def __init__(self, actors):
        self._idle = list(actors)
        self._future_to_actor = {}   # ref -> (index, actor)
        self._index_to_future = {}   # submission index -> ref
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending = []           # (fn, value) waiting for an idle actor

    def map(self, fn, values):
        return self._map(fn, values, self.get_next)

    def map_unordered(self, fn, values):
        return self._map(fn, values, self.get_next_unordered)

    def _map(self, fn, values, take):
        # Results of earlier submits are dropped, as Ray does (those still running are given up).
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield take()

    def submit(self, fn, value):
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            self._future_to_actor[ref] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = ref
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def has_next(self):
        return bool(self._future_to_actor) or bool(self._pending)

    def has_free(self):
        return bool(self._idle) and not self._pending

    def get_next(self, timeout=None, ignore_if_timedout=False):
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = corral.wait([ref], timeout=timeout)
            if not ready:
                if ignore_if_timedout:  # as Ray: that result is given up, and the next one is next
                    del self._index_to_future[self._next_return_index]
                    self._next_return_index += 1
                    _, actor = self._future_to_actor.pop(ref)
                    self._return_actor(actor)
                raise TimeoutError("Timed out waiting for result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(ref)
        self._return_actor(actor)
        return corral.get(ref)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = corral.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError("Timed out waiting for result")
        ref = ready[0]
        index, actor = self._future_to_actor.pop(ref)
        self._index_to_future.pop(index, None)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        return corral.get(ref)

    def _return_actor(self, actor):
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.pop(0))

    def push(self, actor):
        """Adds an actor to the pool."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def pop_idle(self):
        """Removes an idle actor from the pool and returns it, or None when all are busy."""
        return self._idle.pop() if self.has_free() else None
