"""Ray's core API on Corral: change ``import ray`` to ``import corral.compat.ray as ray``.

    import corral.compat.ray as ray

    @ray.remote(num_cpus=1, max_retries=3)
    def f(x):
        return x * 2

    @ray.remote
    class Counter:
        def __init__(self): self.n = 0
        def incr(self): self.n += 1; return self.n

    print(ray.get([f.remote(i) for i in range(4)]))
    c = Counter.remote()
    print(ray.get(c.incr.remote()))

What each name does, and where it differs from Ray, is in docs/ray.md. Options Ray takes and
Corral has no use for are accepted and ignored only where ignoring them changes no result
(``max_calls``, ``fetch_local``, ``include_dashboard``, ``object_store_memory`` given to a running
cluster...); the others raise an error that says what to do instead.
"""
import time

import cloudpickle

import corral as _corral
from corral import _runtime, exceptions as _cexc
from corral.actor import ActorClass as _ActorClass, ActorHandle
from corral.api import RemoteFunction as _RemoteFunction
from corral.generators import DynamicObjectRefGenerator, ObjectRefGenerator
from corral.object_ref import ObjectRef

from . import actor, exceptions, util
from ._context import get_runtime_context, RuntimeContext
from ._options import SOFT_NODE as _SOFT_NODE, alive as _alive, translate as _translate

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "kill", "get_actor", "method",
    "nodes", "cluster_resources", "available_resources", "get_runtime_context", "get_gpu_ids", "ObjectRef",
    "ObjectRefGenerator", "DynamicObjectRefGenerator", "ActorHandle", "exceptions", "util", "cloudpickle", "actor",
]

_INIT_IGNORED = {"include_dashboard", "dashboard_host", "dashboard_port", "logging_level", "logging_format",
                 "configure_logging", "log_to_driver_level", "_temp_dir", "_system_config", "local_mode",
                 "object_store_memory", "_enable_object_reconstruction", "_metrics_export_port",
                 "_node_ip_address", "enable_resource_isolation", "_plasma_directory"}


class _Context:
    """What ``ray.init()`` returns: ``address_info`` and ``dashboard_url``, and ``with`` shuts down."""

    def __init__(self):
        self.address_info = {"address": _runtime.address, "node_id": _local_node_id(), "gcs_address": _runtime.address}
        self.dashboard_url = ""

    def __getitem__(self, key):
        return self.address_info[key]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    def disconnect(self):
        shutdown()


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, labels=None, namespace=None,
         ignore_reinit_error=False, log_to_driver=True, runtime_env=None, **kwargs):
    """``ray.init``: with no address, a local cluster (``num_cpus``, ``num_gpus``, ``resources``
    size it); ``address="auto"`` joins the head started on this machine; ``"host:port"`` joins that
    head (token and CA as corral.init finds them). ``ray://`` (Ray Client) is not supported: run the
    script on a machine of the cluster, or give the head's ``host:port``."""
    unknown = set(kwargs) - _INIT_IGNORED
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s) {sorted(unknown)}")
    if isinstance(address, str) and address.startswith("ray://"):
        raise _cexc.InvalidArgumentError(
            f"address={address!r}: Ray Client (ray://) is not supported; give the head's host:port "
            "(e.g. '10.0.0.1:7370') instead")
    if address == "local":
        address = None
    if _runtime.client is not None and ignore_reinit_error:
        return _Context()
    _corral.init(address, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, labels=labels,
                 namespace=namespace, log_to_driver=log_to_driver, ignore_reinit_error=ignore_reinit_error,
                 runtime_env=runtime_env)
    return _Context()


def shutdown(_exiting_interpreter=False):
    _corral.shutdown()


is_initialized = _corral.is_initialized


class _RayRemote:
    """Ray's options on Corral's remote functions and actor classes (the mixin of the two below),
    and NodeAffinitySchedulingStrategy(soft=True): that node when it is alive at submission, else any."""
    _soft_node = None
    _pinned = None
    _base = None    # corral's own class
    _actor = False

    @classmethod
    def _make(cls, obj, options):
        translated = _translate(options, actor=cls._actor)
        soft = translated.pop(_SOFT_NODE, None)
        made = cls(obj, translated)
        made._soft_node = soft
        return made

    def options(self, **options):
        translated = _translate(options, actor=self._actor)
        soft = translated.pop(_SOFT_NODE, None)
        other = self._base.options(self, **translated)
        other.__class__ = type(self)
        other._soft_node = soft if soft is not None else (None if "scheduling_strategy" in options else self._soft_node)
        return other

    def remote(self, *args, **kwargs):
        return self._base.remote(self._target(), *args, **kwargs)

    def _target(self):
        if self._soft_node is None or not _alive(self._soft_node):
            return self
        if self._pinned is None:
            selector = dict(self._options.get("label_selector") or {}, **{"corral.node_id": self._soft_node})
            self._pinned = self._base.options(self, label_selector=selector)
        return self._pinned


class _RayRemoteFunction(_RayRemote, _RemoteFunction):
    _base = _RemoteFunction


class _RayActorClass(_RayRemote, _ActorClass):
    _base = _ActorClass
    _actor = True


def remote(*args, **options):
    """``@ray.remote`` / ``@ray.remote(num_cpus=..., ...)`` on a function or a class."""
    def make(obj):
        import inspect
        if inspect.isclass(obj):
            return _RayActorClass._make(obj, options)
        if callable(obj):
            return _RayRemoteFunction._make(obj, options)
        raise TypeError("@ray.remote takes a function or a class")
    if len(args) == 1 and not options and callable(args[0]):
        return make(args[0])
    if args:
        raise TypeError("use @ray.remote or @ray.remote(option=value, ...)")
    return make


def method(*, num_returns=None, concurrency_group=None, **ignored):
    """``@ray.method(num_returns=..., concurrency_group=...)`` on an actor's method."""
    return _corral.method(num_returns=num_returns, concurrency_group=concurrency_group)


def get(object_refs, *, timeout=None):
    """``ray.get``: a value, or a list of values; raises the task's error (a RayTaskError that is
    also an instance of the original exception's class)."""
    if isinstance(object_refs, DynamicObjectRefGenerator):
        object_refs = list(object_refs)
    try:
        return _corral.get(object_refs, timeout=timeout, progress=False)  # (Ray draws no bar)
    except _corral.GetTimeoutError as e:  # this get's own timeout: Ray's words (code matches on them)
        if isinstance(e, _corral.TaskError):  # a task's own error, raised here: as it came
            raise
        raise _corral.GetTimeoutError("Get timed out: some object(s) not ready.") from e


def put(value, **_ignored):
    return _corral.put(value)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """``ray.wait``: (ready, not ready), each in the order given. A generator (ObjectRefGenerator) is
    ready when its next ref is, or its task has ended."""
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expected a list of ray.ObjectRef, got a single ray.ObjectRef")
    refs = list(object_refs)
    if not any(isinstance(r, ObjectRefGenerator) for r in refs):
        return _corral.wait(refs, num_returns=num_returns, timeout=timeout)
    if num_returns > len(refs):
        raise ValueError(f"num_returns={num_returns} but {len(refs)} refs were given")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        flags = [r._is_ready() if isinstance(r, ObjectRefGenerator) else bool(_corral.wait([r], timeout=0)[0])
                 for r in refs]
        if sum(flags) >= num_returns or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(0.005)
    ready, not_ready = [], []
    for r, f in zip(refs, flags):
        (ready if f and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


def cancel(ref, *, force=False, recursive=True):
    """``ray.cancel``: a task not started never runs; a running one gets KeyboardInterrupt (with
    ``force=True`` its worker is killed). Its ``get`` raises TaskCancelledError. On an actor call:
    a call not yet started is dropped (ActorDiedError is not raised; its get raises TaskCancelledError)."""
    if isinstance(ref, ObjectRefGenerator):
        ref = ref.completed()
    return _corral.cancel(ref, force=force)


def kill(actor, *, no_restart=True):
    return _corral.kill(actor, no_restart=no_restart)


def get_actor(name, namespace=None):
    return _corral.get_actor(name, namespace=namespace)


def _local_node_id():
    ctx = _runtime.node_id
    if ctx:
        return ctx
    try:
        from corral import _store
        store = _store.local()
        if store is not None and store.node:
            return store.node.hex()
    except Exception:  # noqa: BLE001 - no local node: the first alive one
        pass
    for n in _corral.nodes():
        if n["state"] == "alive":
            return n["node_id"]
    return None


def _ip(n):
    a = n.get("address") or ""
    if not a or a == "local agent" or a.startswith(":"):
        return "127.0.0.1"
    return a.rsplit(":", 1)[0].strip("[]")


def _resources(n, which):
    r = {k: float(v) for k, v in n[which].items() if v}
    store = n.get("object_store") or {}
    if store.get("capacity_bytes"):
        cap = float(store["capacity_bytes"])
        r["object_store_memory"] = cap if which == "resources" else max(0.0, cap - float(store.get("used_bytes", 0)))
    r[f"node:{_ip(n)}"] = 1.0
    return r


def nodes():
    """``ray.nodes()``: one dict per node in Ray's layout (NodeID, Alive, NodeManagerAddress,
    NodeManagerHostname, Resources, Labels, ...), plus Corral's ``State``."""
    out = []
    for n in _corral.nodes():
        alive = n["state"] in ("alive", "suspect")
        out.append({"NodeID": n["node_id"], "Alive": alive, "alive": alive, "NodeManagerAddress": _ip(n),
                    "NodeManagerHostname": n["hostname"], "NodeName": _ip(n), "NodeManagerPort": 0,
                    "ObjectManagerPort": 0, "Resources": _resources(n, "resources") if alive else {},
                    "Labels": dict(n.get("labels") or {}), "State": n["state"].upper()})
    return out


def _sum(which):
    total = {}
    for n in _corral.nodes():
        if n["state"] != "alive":
            continue
        for k, v in _resources(n, which).items():
            total[k] = total.get(k, 0.0) + v
    return total


def cluster_resources():
    """Total resources of the alive nodes: {"CPU": 8.0, "memory": ..., "GPU": 1.0, ...}."""
    return _sum("resources")


def available_resources():
    """Resources free now on the alive nodes."""
    return _sum("available")


def get_gpu_ids():
    """The GPU ids assigned to the calling task or actor (empty in a driver)."""
    return list(_corral.runtime_context().gpu_ids)


def timeline(filename=None):
    raise NotImplementedError("ray.timeline() has no Corral counterpart: `corral status` and the node logs "
                              "show what ran")
