"""ObjectRef: a future for a task's result or a value given to ``corral.put``."""
import os
import threading

from . import _core, _runtime

_PID = [os.getpid()]
# Per thread: the list that collects refs pickled into a value (serialization.collecting_refs), and the one
# that collects refs unpickled from a value (serialization.loads_borrowing); None outside them.
_tls = threading.local()
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class ObjectRef:
    """A reference to a value that is, or will be, in the cluster.

    Pass it to ``corral.get`` for the value, to ``corral.wait`` to wait on several, or as an
    argument to another task: the task then runs once the value is ready, with the value in place.
    Holding the ref keeps the value in the cluster; dropping every ref lets it be freed.
    """

    __slots__ = ("_id", "_counted", "_borrowed", "_pid", "__weakref__")

    def __init__(self, binary_id, _counted=False):
        self._id = binary_id
        self._counted = _counted   # this handle holds a count in the client's table
        self._borrowed = False     # this handle was unpickled and holds a borrow at the head
        self._pid = _PID[0]

    def binary(self):
        return self._id

    def hex(self):
        return _core.hex(self._id)

    def task_id(self):
        return self.hex()

    def __repr__(self):
        return f"ObjectRef({self.hex()})"

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self):
        return hash(self._id)

    def __reduce__(self):
        found = getattr(_tls, "contained", None)
        if found is not None:
            # Pickled into a value Corral sends (a put, a task's arguments or result): the head is
            # told, and keeps the object while that value lives.
            found.append(self)
        else:
            # Pickled by other code, into bytes whose readers nobody tracks: kept while its owner lives.
            c = _runtime.client
            if c is not None and self._pid == _PID[0]:
                c.pin(self._id)
        return (_unpickled, (self._id,))

    def __del__(self):
        if self._pid != _PID[0] or not (self._counted or self._borrowed):
            return
        c = _runtime.client
        if c is not None:
            try:
                if self._counted:
                    c.release(self._id)
                if self._borrowed:
                    c.unborrow(self._id)
            except Exception:
                pass

    def future(self):
        """A concurrent.futures.Future completed with the value (or the task's exception)."""
        import concurrent.futures
        import threading

        from . import api

        fut = concurrent.futures.Future()

        def run():
            try:
                fut.set_result(api.get(self))
            except BaseException as e:  # noqa: BLE001 - handed to the future
                fut.set_exception(e)

        threading.Thread(target=run, daemon=True).start()
        return fut

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()


def _unpickled(binary_id):
    """An ObjectRef read from a pickled value: this process borrows it (the head keeps the object
    while the ref lives here)."""
    ref = ObjectRef(binary_id)
    found = getattr(_tls, "borrowed", None)
    if found is not None:
        found.append(ref)  # registered with the others of its value, in one request
    else:
        borrow([ref])
    return ref


def borrow(refs):
    """Tells the head this process holds `refs` (unpickled): their objects live until they go."""
    if not refs:
        return
    try:
        c = _runtime.get_client(auto_init=False)
    except Exception:
        return  # not connected: the refs are ids only here
    c.borrow_refs([r._id for r in refs])
    pid = _PID[0]
    for r in refs:
        r._borrowed = True
        r._pid = pid
