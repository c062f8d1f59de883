"""Several results from one task: ``num_returns=k``, and generator tasks.

- ``@corral.remote(num_returns=3)`` (or ``f.options(num_returns=3)``): ``f.remote()`` returns a
  list of 3 ObjectRefs, one per item of the sequence the function returns (or yields). A function
  that returns another number of items fails each of them with ValueError. ``num_returns=0``
  returns None (the task still runs).
- A generator function (``yield``) returns an :class:`ObjectRefGenerator` by default (as Ray's
  ``num_returns="streaming"``): iterate it to get one ObjectRef per yielded value, in order.
- ``num_returns="dynamic"``: ``f.remote()`` returns one ObjectRef whose value is a
  :class:`DynamicObjectRefGenerator`, the ObjectRefs of every yielded value.

Each yielded value is stored as an object of its own as it is yielded, in the worker. If the
generator raises after yielding n values, the n refs hold them and the next ref holds the error:
``get`` of it raises it (an ObjectRefGenerator raises it from ``next``; with ``num_returns=k``, every
ref past n raises it).

Items reach the caller when the task ends, not one by one while it runs: a generator task's
ObjectRefGenerator yields its first ref once the generator is exhausted (Ray streams them).
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

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


class ObjectRefGenerator:
    """What calling a generator task returns: an iterator of ObjectRefs, one per yielded value.
    ``next()`` waits for the task; once the task raised, ``next()`` raises that error (after the
    refs of the values yielded before it). ``completed()`` is the ObjectRef of the whole task."""

    def __init__(self, ref):
        self._ref = ref
        self._items = None
        self._next = 0

    def __iter__(self):
        return self

    def __next__(self):
        from .api import get
        if self._items is None:
            value = get(self._ref)
            if isinstance(value, DynamicObjectRefGenerator):
                self._items, self._raised = list(value), value._raised
            else:
                self._items, self._raised = [_stored(value)], False
        if self._next >= len(self._items):
            raise StopIteration
        ref = self._items[self._next]
        self._next += 1
        if self._next == len(self._items) and self._raised:
            get(ref)  # the generator's error: raised here, as Ray raises it from next()
        return ref

    def __aiter__(self):
        return self

    async def __anext__(self):
        import asyncio
        ref = await asyncio.get_running_loop().run_in_executor(None, self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self):
        return next(self, None)  # (a StopIteration cannot cross into a future)

    def completed(self):
        return self._ref

    def __repr__(self):
        return f"ObjectRefGenerator({self._ref!r})"


def _stored(value):
    from .api import put
    return put(value)


class Raised:
    """A stored value that is an error: ``get`` of its ref raises it (a generator's exception)."""

    def __init__(self, data, message):
        self.data, self.message = data, message

    def error(self):
        return serialization.load_exception(self.data, self.message)


def drain(result, name):
    """In the worker, inside the task's code: a generator's values, each stored (put) as it is
    yielded, as a DynamicObjectRefGenerator. Other results pass through."""
    if not inspect.isgenerator(result):
        return result
    from .api import put
    refs = []
    try:
        for v in result:
            refs.append(put(v))
    except Exception as e:  # noqa: BLE001 - the caller reads it from the next ref
        return DynamicObjectRefGenerator(refs + [_error_ref(e, name)], raised=True)
    return DynamicObjectRefGenerator(refs)


async def drain_async(result, name):
    """drain() for an async generator (an async actor's method)."""
    if not inspect.isasyncgen(result):
        return drain(result, name)
    from .api import put
    refs = []
    try:
        async for v in result:
            refs.append(put(v))
    except Exception as e:  # noqa: BLE001 - the caller reads it from the next ref
        return DynamicObjectRefGenerator(refs + [_error_ref(e, name)], raised=True)
    return DynamicObjectRefGenerator(refs)


def _error_ref(e, name):
    from .api import put
    return put(Raised(*serialization.dump_exception(e, name)))


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
