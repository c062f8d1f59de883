"""ObjectRef: a future for a task's result or a value given to ``corral.put``."""
import os

from . import _core, _runtime

_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class ObjectRef:
    """A reference to a value that is, or will be, in the cluster.

    Pass it to ``corral.get`` for the value, to ``corral.wait`` to wait on several, or as an
    argument to another task: the task then runs once the value is ready, with the value in place.
    Holding the ref keeps the value in the cluster; dropping every ref lets it be freed.
    """

    __slots__ = ("_id", "_counted", "_pid", "__weakref__")

    def __init__(self, binary_id, _counted=False):
        self._id = binary_id
        self._counted = _counted   # this handle holds a count in the client's table
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
        # The reference escapes into a pickled value whose readers the head cannot track: keep
        # the object alive while its owner lives.
        c = _runtime.client
        if c is not None and self._pid == _PID[0]:
            c.pin(self._id)
        return (ObjectRef, (self._id,))

    def __del__(self):
        if self._counted and self._pid == _PID[0]:
            c = _runtime.client
            if c is not None:
                try:
                    c.release(self._id)
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
