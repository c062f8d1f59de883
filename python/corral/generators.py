"""Several results from one task: ``num_returns=k``, and generator tasks.

- ``@corral.remote(num_returns=3)`` (or ``f.options(num_returns=3)``): ``f.remote()`` returns a
  list of 3 ObjectRefs, one per item of the sequence the function returns (or yields). A function
  that returns another number of items fails each of them with ValueError. ``num_returns=0``
  returns None (the task still runs).
- A generator function (``yield``) returns an :class:`ObjectRefGenerator` by default (as Ray's
  ``num_returns="streaming"``): iterate it to get one ObjectRef per yielded value, in order.
- ``num_returns="dynamic"``: ``f.remote()`` returns one ObjectRef whose value is a
  :class:`DynamicObjectRefGenerator`, the ObjectRefs of every yielded value.

Each yielded value is stored as an object of its own as it is yielded, in the worker, and an
ObjectRefGenerator gets its ref then, while the task runs on (the worker tells the task's owner
through its agent and the head). If the generator raises after yielding n values, the n refs hold
them and the next ref holds the error: ``get`` of it raises it (with ``num_returns=k``, every ref
past n raises it).
"""
import inspect

from . import exceptions, serialization


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: iterate it for the ObjectRefs of the values the
    task yielded, in order (and a last one holding the error, if the generator raised)."""

    def __init__(self, refs, raised=False):
        self._refs = list(refs)
        self._raised = raised  # the last ref holds the generator's error

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)


class ObjectRefGenerator:
    """What calling a generator task returns: an iterator of ObjectRefs, one per yielded value, each
    as soon as the task's worker stored it (``next()`` waits for the next one). If the generator
    raised, the ref after the last value holds the error (``get`` raises it). ``async for`` works
    too. ``completed()`` is the ObjectRef of the whole task (ready when it has ended)."""

    def __init__(self, ref):
        self._ref = ref
        self._items = None   # once the task has ended: every ref, from its result
        self._next = 0

    def __iter__(self):
        return self

    def __next__(self):
        ref = self._next_ref(None)
        if ref is None:
            raise StopIteration
        return ref

    def _next_ref(self, timeout):
        """The next ref, or None at the end; raises GetTimeoutError after `timeout` seconds."""
        from . import _runtime
        from .api import get
        from .object_ref import _unpickled
        if self._items is None:
            from .api import _Blocking
            client, tid = _runtime.get_client(), self._ref.binary()
            with _Blocking(client, None, 0, ready=self._is_ready):  # a task waiting here gives its CPU back
                told = client.generator_item(tid, self._next, -1.0 if timeout is None else float(timeout))
            if told is not None:
                self._next += 1
                return _unpickled(told)  # (borrowed: it outlives this generator if kept)
            value = get(self._ref, timeout=timeout)
            self._items = list(value) if isinstance(value, DynamicObjectRefGenerator) else [_stored(value)]
        if self._next >= len(self._items):
            return None
        ref = self._items[self._next]
        self._next += 1
        return ref

    def _is_ready(self):
        """Whether next() would return at once."""
        from . import _runtime
        if self._items is not None:
            return True
        client, tid = _runtime.get_client(), self._ref.binary()
        return client.generator_item(tid, self._next, 0.0) is not None or bool(client.wait([tid], 1, 0.0)[0])

    def __aiter__(self):
        return self

    async def __anext__(self):
        import asyncio
        ref = await asyncio.get_running_loop().run_in_executor(None, self._next_ref, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def completed(self):
        return self._ref


def _stored(value):
    from .api import put
    return put(value)


class Raised:
    """A stored value that is an error: ``get`` of its ref raises it (a generator's exception)."""

    def __init__(self, data, message):
        self.data, self.message = data, message

    def error(self):
        return serialization.load_exception(self.data, self.message)


class _Teller:
    """Stores a generator's values one by one in the worker and tells the task's owner each ref
    (through the agent and the head) as soon as it is stored."""

    def __init__(self, name):
        from . import _runtime
        self.name = name
        self.refs = []
        call = _runtime.current_call.get()
        ctx = _runtime.current_task
        self.task_id = call if call is not None else (ctx.task_id if ctx is not None else None)
        self.link = _runtime.worker_link

    def add(self, value):
        from . import _runtime
        from .api import put
        ref = put(value)
        self.refs.append(ref)
        if self.task_id is not None and self.link is not None:
            # Kept while the task's result is (the result lists it too), then told.
            serialization.register_refs(_runtime.get_client(), self.task_id, [ref])
            self.link.generator_item(self.task_id, len(self.refs) - 1, ref.binary())

    def failed(self, e):
        self.add(Raised(*serialization.dump_exception(e, self.name)))
        return DynamicObjectRefGenerator(self.refs, raised=True)

    def done(self):
        return DynamicObjectRefGenerator(self.refs)


def drain(result, name):
    """In the worker, inside the task's code: a generator's values, each stored (put) and told to
    the caller as it is yielded, as a DynamicObjectRefGenerator. Other results pass through."""
    if not inspect.isgenerator(result):
        return result
    teller = _Teller(name)
    try:
        for v in result:
            teller.add(v)
    except Exception as e:  # noqa: BLE001 - the caller reads it from the next ref
        return teller.failed(e)
    return teller.done()


async def drain_async(result, name):
    """drain() for an async generator (an async actor's method)."""
    if not inspect.isasyncgen(result):
        return drain(result, name)
    teller = _Teller(name)
    try:
        async for v in result:
            teller.add(v)
    except Exception as e:  # noqa: BLE001 - the caller reads it from the next ref
        return teller.failed(e)
    return teller.done()


def check_num_returns(n):
    if n in ("dynamic", "streaming") or (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        return n
    raise exceptions.InvalidArgumentError(
        f"num_returns={n!r}: must be an int >= 0, 'dynamic' or 'streaming'")


def returns_of(fn, options):
    """The num_returns a call of `fn` with `options` has: the option, else 'streaming' for a
    generator function and 1 for the rest."""
    n = options.get("num_returns")
    if n is None:
        return "streaming" if (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)) else 1
    return n


def split(ref, n, name):
    """What ``.remote()`` returns for a task or call whose result is `ref`, by its num_returns."""
    if n == 1 or n == "dynamic":
        return ref
    if n == "streaming":
        return ObjectRefGenerator(ref)
    if n == 0:
        return None
    return [_pick_task().remote(ref, i, n, name) for i in range(n)]


_PICK = []


def _pick_task():
    if not _PICK:
        from .api import RemoteFunction
        _PICK.append(RemoteFunction(_pick, {"num_cpus": 0, "max_retries": 0, "name": "corral.num_returns"}))
    return _PICK[0]


def _pick(value, i, n, name):
    """Item `i` of a task's `n` results (a task of its own, next to the values)."""
    from .api import get
    if isinstance(value, DynamicObjectRefGenerator):
        refs = value._refs
        if value._raised:  # the values yielded before the error, then the error for the rest
            return get(refs[min(i, len(refs) - 1)])
        if len(refs) != n:
            raise ValueError(f"{name} yielded {len(refs)} values but num_returns={n}")
        return get(refs[i])
    try:
        count = len(value)
    except TypeError:
        raise ValueError(f"{name} returned a {type(value).__name__}, not a sequence of num_returns={n} "
                         "values") from None
    if count != n:
        raise ValueError(f"{name} returned {count} values but num_returns={n}")
    return value[i]
