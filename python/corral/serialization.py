"""How Python values travel: pickle protocol 5, cloudpickle for what plain pickle cannot do.

Task arguments are pickled as ``(args, kwargs)``. An ObjectRef given directly as an argument
becomes a :class:`_Dep` placeholder and its id a dependency: the head waits for it and the
worker receives its value in place. ObjectRefs nested deeper travel as references.

Values of ``_store.THRESHOLD`` bytes or more (puts, results, and arguments, which are put for the
call) go into the node's shared-memory object store when the process has one (see _store.py);
smaller ones, and every value of a process without a store, travel inline (64 MiB at most).
"""
import builtins
import functools
import io
import os
import pickle
import re
import sys
import traceback

import cloudpickle

from . import _store, exceptions
from .object_ref import _tls, borrow

# One message carries at most this much (the frame limit less room for the envelope).
MAX_VALUE_BYTES = 64 * 1024 * 1024
_SIMPLE = frozenset((int, float, str, bytes, bool, type(None)))


class _Dep:
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __reduce__(self):
        return (_Dep, (self.index,))


# A pickle naming the script's own module refers to functions or classes that another process
# cannot import by that name: such values are pickled again by value, with cloudpickle.
BY_MAIN = b"__main__"


def dumps(value, what="value"):
    """Pickles `value`; a clear SerializationError if it cannot be, ValueTooLargeError if too big."""
    try:
        if type(value) in _SIMPLE:
            data = pickle.dumps(value, protocol=5)
        else:
            try:
                data = pickle.dumps(value, protocol=5)
            except Exception:
                data = None
            if data is None or data.find(BY_MAIN) >= 0:
                data = cloudpickle.dumps(value, protocol=5)
    except Exception as e:
        raise exceptions.SerializationError(f"{what} cannot be pickled: {type(e).__name__}: {e}") from e
    check_size(len(data), what)
    return data


def check_size(n, what):
    if n > MAX_VALUE_BYTES:
        raise exceptions.ValueTooLargeError(
            f"{what} is {n} bytes pickled; a value that travels in a message may be at most "
            f"{MAX_VALUE_BYTES} bytes ({MAX_VALUE_BYTES // (1 << 20)} MiB), and this process has no "
            f"node object store for larger ones (run it on a machine with a Corral agent, as the "
            f"same user). Split it, or pass a path to shared storage.")


def always_inline(v):
    """Small values of simple types (which hold no ObjectRef): pickled at once, never looked at
    for the store."""
    return type(v) in _SIMPLE and not (type(v) in (bytes, str) and len(v) >= _store.THRESHOLD // 4)


def encode(value, what, object_id=None, attempt=0, split=None):
    """Serializes a value to keep: ``(inline bytes, 0)``, or ``(b"", size)`` once it is written
    into this node's store as (object_id, attempt) (large values, when there is a store; the id is
    made by the client when not given). ``split``: ``_store.split(value)`` if the caller has it.
    Returns ``(data, stored_size, object_id)``."""
    if split is None and always_inline(value):
        return dumps(value, what), 0, object_id
    pickled, buffers, total = split or _store.split(value, what)
    if total >= _store.THRESHOLD:
        store = _store.local()
        if store is not None:
            if object_id is None:
                object_id = _new_id()
            return b"", _store.write(store, object_id, attempt, pickled, buffers), object_id
    if buffers:  # small, or no store: one in-band pickle
        pickled = dumps(value, what)
    check_size(len(pickled), what)
    return pickled, 0, object_id


def _new_id():
    from . import _runtime
    return _runtime.get_client().new_object_id()


def collecting_refs(values, dump, *args):
    """``(dump(*args), refs)``: `refs` are the ObjectRefs pickled meanwhile, to register with
    ``register_refs`` once the value is sent (they stay alive until then). When `values` (what
    `dump` pickles) are plain scalars and strings, which cannot hold a ref, nothing is collected."""
    if _holds_no_refs(values):
        return dump(*args), None
    prev = getattr(_tls, "contained", None)
    refs = _tls.contained = []
    try:
        return dump(*args), refs
    finally:
        _tls.contained = prev


def register_refs(client, container_id, refs):
    """Tells the head the object `container_id` (a put, a task's result, or a task whose arguments
    they are) holds `refs`: their objects live while it does."""
    if refs:
        client.contain_refs(container_id, [r.binary() for r in refs])


def _holds_no_refs(values):
    """True when none of `values` can hold an ObjectRef (plain scalars and strings)."""
    for v in values:
        if type(v) not in _SIMPLE:
            return False
    return True


def loads_borrowing(load, *args):
    """``load(*args)``, registering the ObjectRefs it unpickles as borrowed by this process, in
    one request, before they are used."""
    prev = getattr(_tls, "borrowed", None)
    mine = _tls.borrowed = []
    try:
        value = load(*args)
    finally:
        _tls.borrowed = prev
    if mine:
        borrow(mine)
    return value


# In every pickle that holds an ObjectRef (the name of its reconstructor): a value without it is
# loaded without registering borrows, which keeps small gets at their cost.
_REF_MARK = b"_unpickled"


def value_of(entry, client):
    """The value of an ObjectValue tuple (see module.cc ValueTuple) whose error kind is none."""
    data, _kind, _message, stored_size, locations, attempt, object_id = entry
    if stored_size:
        return loads_borrowing(_store.read, object_id, stored_size, locations, attempt, client)
    return loads(data)


def loads(data):
    # (bytes.find, not `in`: `in` first tries the marker as an int and formats the TypeError it
    # gets, a few percent of a small call's time in the caller and in the worker.)
    load = _loads_read_only if data.find(_NUMPY_IN_BAND) >= 0 else pickle.loads
    return loads_borrowing(load, data) if data.find(_REF_MARK) >= 0 else load(data)


# A numpy array pickled with its bytes in the pickle (a small one) names numpy's _frombuffer. Such
# arrays are made read-only, as those mapped from the object store are (and as in Ray): whether
# an array from the cluster may be written does not depend on its size.
_NUMPY_IN_BAND = b"_frombuffer"


class _ReadOnlyArrays(pickle.Unpickler):
    def find_class(self, module, name):
        found = super().find_class(module, name)
        if name == "_frombuffer" and module.startswith("numpy"):
            return functools.partial(_read_only, found)
        return found


def _read_only(make, *args):
    arr = make(*args)
    arr.flags.writeable = False
    return arr


def _loads_read_only(data):
    return _ReadOnlyArrays(io.BytesIO(data)).load()


def pack_args(args, kwargs, ref_type, name, put=None):
    """Returns (pickled (args, kwargs), [dependency ids], [refs held for the call]).

    When the arguments are large and `put` is given, each large one is put (``put(value, split)``
    returns an ObjectRef; `split` is the value's ``_store.split``, made here already) and passed as
    a dependency, as Ray does: the task reads it from the object store.
    The refs returned must live until the submission is sent; the head keeps the values while the
    task needs them."""
    deps = []

    def swap(v):
        if type(v) is ref_type:
            deps.append(v.binary())
            return _Dep(len(deps) - 1)
        return v

    if not args and not kwargs:
        return _EMPTY_ARGS, deps, ()
    a = tuple(swap(v) for v in args)
    k = {key: swap(v) for key, v in kwargs.items()} if kwargs else None
    what = f"the arguments of {name}"
    if put is None or _store.local() is None:
        return dumps((a, k), what=what), deps, ()
    pickled, buffers, total = _store.split((a, k), what)
    if total < _store.THRESHOLD:
        return (dumps((a, k), what=what) if buffers else pickled), deps, ()
    held = []

    def big(v):
        if type(v) is _Dep or always_inline(v):
            return v
        split = _store.split(v, what)
        if split[2] < _store.THRESHOLD:
            return v
        ref = put(v, split)
        held.append(ref)
        deps.append(ref.binary())
        return _Dep(len(deps) - 1)

    a = tuple(big(v) for v in a)
    k = {key: big(v) for key, v in k.items()} if k else None
    return dumps((a, k), what=what), deps, held


_EMPTY_ARGS = pickle.dumps(((), None), protocol=5)


class ArgumentRaised(Exception):
    """unpack_args(): an argument is a stored error (generators.Raised); `raised` is it."""

    def __init__(self, raised):
        super().__init__(raised.message)
        self.raised = raised


def unpack_args(data, dep_values, client=None):
    """(args, kwargs) from their pickle and the dependencies' values (tuples, see value_of)."""
    a, k = loads(data)
    if dep_values:
        vals = [value_of(d, client) for d in dep_values]
        from .generators import Raised
        for v in vals:
            if type(v) is Raised:  # a generator's error given as an argument: the call fails with it
                raise ArgumentRaised(v)
        a = tuple(vals[v.index] if type(v) is _Dep else v for v in a)
        if k:
            k = {key: (vals[v.index] if type(v) is _Dep else v) for key, v in k.items()}
    return a, (k or {})


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _from_user_code(tb):
    """The traceback less the worker's own frames that lead to the task's code (all of it if the
    error was Corral's own)."""
    first = tb
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return tb if tb is not None else first


def dump_exception(exc, task_name):
    """Returns (data, message) for an exception raised by a task."""
    tb = "".join(traceback.format_exception(type(exc), exc, _from_user_code(exc.__traceback__)))
    message = f"{task_name} raised {type(exc).__name__}\n\nRemote traceback:\n{tb}"
    try:
        data = cloudpickle.dumps(exc, protocol=5)
        pickle.loads(data)  # an exception that cannot be rebuilt is reported by its text
    except Exception:
        data = b""
    return data, message


_dual_classes = {}


def load_exception(data, message):
    """The exception to raise in the caller for a task that raised: an instance of a class that is
    both a TaskError (``remote_traceback``: `message`) and the task's exception class, with the
    task's exception as ``cause``: unpickled from `data`, or without it rebuilt from `message`
    (see _rebuild). A plain TaskError when neither works."""
    cause = None
    if data:
        try:
            cause = pickle.loads(data)
        except Exception:
            cause = None
    if not isinstance(cause, BaseException):
        cause = _rebuild(message)
    if cause is None:
        return exceptions.TaskError(message, None, message)
    cls = type(cause)
    if isinstance(cause, exceptions.TaskError):
        return cause
    dual = _dual_classes.get(cls)
    if dual is None:
        try:
            dual = type(cls.__name__, (exceptions.TaskError, cls), {
                "__init__": lambda self, *a, **k: None,
                "__str__": _dual_str,
                "__reduce__": lambda self: (load_exception, (b"", self.remote_traceback)),
            })
            dual.__module__ = cls.__module__
            dual.__qualname__ = getattr(cls, "__qualname__", cls.__name__)
        except TypeError:
            dual = False
        _dual_classes[cls] = dual
    if not dual:
        return exceptions.TaskError(message, cause, message)
    try:
        err = dual.__new__(dual)
    except TypeError:  # (OSError and its kind cannot be made this way)
        return exceptions.TaskError(message, cause, message)
    try:
        err.__dict__.update(getattr(cause, "__dict__", {}))
    except Exception:
        pass
    err.args = cause.args
    err.cause = cause
    err.remote_traceback = message
    return err


_RAISED = re.compile(r" raised (\w+)\n\nRemote traceback:\n")  # dump_exception's heading


def _rebuild(message):
    """The exception a dump_exception message reports, rebuilt from its text (as Celery rebuilds
    an exception from its type and message): for a failure kept without its pickle, as the head
    keeps a durable task's. Its class must be a builtin or in a module this process has imported
    (nothing is imported for it), and take the exception's text as its one argument; else None.
    The text is what follows the last line that starts with the class's name, so a message that
    itself has such a line comes back cut."""
    heading = _RAISED.search(message)
    if heading is None:
        return None
    named = re.compile(rf"(?:\w+\.)*{heading.group(1)}")
    lines = message[heading.end():].splitlines()
    for i in range(len(lines) - 1, -1, -1):
        qualname, colon, text = lines[i].partition(": ")
        if named.fullmatch(qualname):
            break
    else:
        return None
    module, _, name = qualname.rpartition(".")
    cls = getattr(sys.modules.get(module) if module else builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return None
    text = "\n".join([text] + lines[i + 1:]) if colon else ""
    try:
        return cls(text) if text else cls()
    except Exception:
        return None


def _dual_str(err):
    """The remote traceback, whose last line is the exception's own (formatted where it was
    raised); that line is added only to a message without a traceback."""
    tb = err.remote_traceback.rstrip("\n")
    return tb if "\nRemote traceback:\n" in tb else tb + "\n" + _safe_str(err.cause)


def _safe_str(e):
    try:
        return f"{type(e).__name__}: {e}"
    except Exception:
        return type(e).__name__
