"""The public API: init, remote, get, put, wait, cancel, nodes, runtime_context."""
import collections
import hashlib
import inspect
import io
import os
import sys
import time
import types

import cloudpickle

from . import _cluster, _core, _in_worker, _runtime, _store, exceptions, generators, serialization
from .object_ref import ObjectRef

_UNSET = object()


def init(address=None, *, token=None, ca_cert=None, ca_fingerprint=None, num_cpus=None, num_gpus=None, memory=None,
         resources=None, labels=None, tasks=None, log_to_driver=True, ignore_reinit_error=False, namespace=None,
         runtime_env=None, _system_args=()):
    """Connects this process to a Corral cluster, starting a local one if needed.

    With no ``address`` and no ``CORRAL_ADDRESS`` in the environment, starts an embedded cluster
    on this machine (a head and an agent as child processes) that stops when this process exits.
    ``num_cpus``, ``num_gpus``, ``memory`` (bytes or "4GiB"), ``resources`` and ``labels`` size
    that local node. With an address (``"host:7370"``, or ``"auto"`` for the head started by
    ``corral start --head`` on this machine), connects to that head with the token from
    ``CORRAL_TOKEN``, ``CORRAL_TOKEN_FILE`` or the local head's state dir (``token=`` overrides them).

    A head on another machine speaks only TLS. Its certificate is checked against the cluster's CA:
    ``ca_cert`` (a path; default ``CORRAL_CA_CERT``), the ca.crt in the head's state dir, or
    ``ca_fingerprint`` (default ``CORRAL_CA_FINGERPRINT``; ``"sha256:..."`` as ``corral start --head``
    prints it), which fetches and keeps the head's CA on first use. On this machine's own head
    nothing needs to be given.

    ``tasks``: modules whose ``@corral.task`` functions the local node runs (its workers import
    them), for an embedded cluster; agents of a running cluster take ``--tasks`` instead.

    ``log_to_driver``: print the output of this driver's tasks here, prefixed with task and node.

    ``namespace``: where this driver's named actors live and ``get_actor`` looks (default "default").

    ``runtime_env={"env_vars": {...}}``: variables set for every task and actor this driver starts
    (a task's own ``runtime_env`` wins for the names it gives).

    If the connection to a head at an address drops (the head restarted, the network went away),
    this process reconnects for up to ``CORRAL_RECONNECT_S`` seconds (default 60) and sends again
    its unfinished tasks and the values it put; waiting calls simply wait. Tasks it has not got a
    result for may then run again (at-least-once), unless an agent still held them.
    """
    with _runtime._lock:
        if _runtime.client is not None:
            if ignore_reinit_error:
                return
            raise exceptions.CorralError("corral.init() was already called; call corral.shutdown() first, "
                                         "or pass ignore_reinit_error=True")
        _runtime.log_to_driver = log_to_driver
        _runtime.namespace = namespace
        _runtime.job_env_vars = dict((_in_worker.check_runtime_env(runtime_env) or {}).get("env_vars") or {})
        if address is None:
            address = os.environ.get("CORRAL_ADDRESS") or None
        if address is None:
            extra = list(_system_args)
            if tasks:
                extra += ["--tasks", ",".join([tasks] if isinstance(tasks, str) else list(tasks))]
            cluster = _cluster.EmbeddedCluster(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
                                               resources=resources, labels=labels, extra_args=extra)
            try:
                _runtime.connect(cluster.address, cluster.token, reconnect_s=0)  # our own child: nothing to wait for
                _wait_for_local_node(cluster)
            except BaseException:
                _runtime.client = None
                cluster.stop()
                raise
            _runtime.cluster = cluster
            return
        if address == "auto":
            path = os.path.join(os.environ.get("CORRAL_HOME", os.path.expanduser("~/.corral")), "head", "address")
            try:
                with open(path) as f:
                    address = f.read().strip()
            except OSError:
                raise exceptions.ConnectionLostError(
                    f"address='auto' but no head was started on this machine ({path} is missing); "
                    "run `corral start --head`") from None
        if any(v is not None for v in (num_cpus, num_gpus, memory, resources, labels, tasks)):
            raise exceptions.InvalidArgumentError(
                "num_cpus/num_gpus/memory/resources/labels/tasks size a new local cluster; they cannot be given "
                "with an address (start the agent with `corral start --address ... --num-cpus N` instead)")
        _runtime.trust = (ca_cert or "", ca_fingerprint or "")
        try:
            _runtime.connect(address, token if token is not None else _core.find_token())
        except BaseException:
            _runtime.trust = ("", "")
            raise


def _wait_for_local_node(cluster, timeout=30.0):
    """Returns once the embedded cluster's node has registered and its workers run Python."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(n["state"] == "alive" and n["python_version"] for n in _runtime.client.nodes()):
            return
        if cluster.proc.poll() is not None:
            break
        time.sleep(0.005)
    raise exceptions.CorralError(
        f"the local node did not come up within {timeout:.0f}s; see {cluster.log_path} "
        f"and the worker logs in {cluster.state_dir}/agent/logs")


def shutdown():
    """Disconnects, and stops the local cluster if init() started one."""
    _runtime.shutdown()


def is_initialized():
    return _runtime.client is not None


def _timeout(t):
    return -1.0 if t is None else float(t)


def _value(entry, client=None):
    data, kind, message = entry[:3]
    if kind == 0:
        v = serialization.value_of(entry, client) if entry[3] else serialization.loads(data)  # (stored, or inline)
        if type(v) is generators.Raised:  # a generator's error, stored in its place
            raise v.error()
        return v
    if kind == exceptions.KIND_TASK_ERROR:
        raise serialization.load_exception(data, message)
    raise exceptions.for_kind(kind)(message)


class _Blocking:
    """In a worker, a task waiting in get()/wait() gives its CPU back while it waits."""

    def __init__(self, client, ids, n, ready=None):
        """`ready()`: whether the wait would end at once (default: n of `ids` are ready)."""
        self.task = None
        ctx = _runtime.current_task
        if ctx is not None and _runtime.worker_link is not None and not _runtime.in_actor:
            if not (ready() if ready is not None else sum(client.wait(ids, n, 0.0)) >= n):
                self.task = ctx.task_id

    def __enter__(self):
        if self.task is not None:
            _runtime.worker_link.blocked(self.task, True)

    def __exit__(self, *exc):
        if self.task is not None:
            _runtime.worker_link.blocked(self.task, False)


def get(refs, *, timeout=None, progress=None):
    """The value of an ObjectRef, or a list of values for a list of refs.

    Waits until they are ready, at most ``timeout`` seconds (GetTimeoutError after that). A task
    that raised re-raises here with its remote traceback.

    ``progress``: a progress bar on stderr while a list of refs is waited for (how many are ready,
    and for how long). ``None`` (the default): shown on a terminal or in a notebook once the wait
    passes a second; ``True``: always, from the start; ``False``: never. Never inside a task.
    """
    client = _runtime.get_client()
    if type(refs) is ObjectRef and _runtime.current_task is None:
        # One ref, in a driver (no CPU to give back while waiting): the same steps as below, fewer
        # of them (a sync call's get runs cold, right after its wait).
        return _value(client.get([refs._id], _timeout(timeout))[0], client)
    single = isinstance(refs, ObjectRef)
    if single:
        ids = [refs._id]
    else:
        if not isinstance(refs, (list, tuple)):
            raise exceptions.InvalidArgumentError(
                f"get() takes an ObjectRef or a list of them, not {type(refs).__name__}")
        ids = []
        for r in refs:
            if not isinstance(r, ObjectRef):
                raise exceptions.InvalidArgumentError(
                    f"get() takes ObjectRefs; the list holds a {type(r).__name__}")
            ids.append(r._id)
    show = _progress_wanted(progress) if len(ids) > 1 else False
    if show:
        timeout = _wait_showing_progress(client, ids, timeout, quiet_s=0.0 if progress else _PROGRESS_AFTER_S)
    with _Blocking(client, ids, len(ids)):
        entries = client.get(ids, _timeout(timeout))
    if single:
        return _value(entries[0], client)
    return [_value(e, client) for e in entries]


_PROGRESS_AFTER_S = 1.0  # an automatic bar appears only for waits longer than this
_PROGRESS_EVERY_S = 0.2


def _progress_wanted(progress):
    if _runtime.worker_id is not None:  # inside a task or actor: its stderr is the driver's output
        return False
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty() or "ipykernel" in sys.modules
    except (AttributeError, ValueError):
        return False


def _wait_showing_progress(client, ids, timeout, quiet_s):
    """Waits for every id, drawing a bar on stderr after `quiet_s` seconds. Returns what is left of
    `timeout` for the get that follows (GetTimeoutError if nothing is)."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    n, drawn, last = len(ids), False, -1
    try:
        redraw = sys.stderr.isatty()  # a terminal redraws its line; a file or pipe gets a line per change
    except (AttributeError, ValueError):
        redraw = False
    while True:
        now = time.monotonic()
        step = _PROGRESS_EVERY_S if drawn or quiet_s <= 0 else max(quiet_s - (now - start), 0.0)
        if deadline is not None:
            step = min(step, max(deadline - now, 0.0))
        with _Blocking(client, ids, n):
            flags = client.wait(ids, n, step)
        done = sum(1 for f in flags if f)
        elapsed = time.monotonic() - start
        if done < n and (drawn or elapsed >= quiet_s) and (redraw or done != last):
            _draw_progress(done, n, elapsed, redraw)
            drawn, last = True, done
        if done == n or (deadline is not None and time.monotonic() >= deadline):
            if drawn or quiet_s <= 0:
                _draw_progress(done, n, time.monotonic() - start, redraw, end=True)
            if deadline is None:
                return None
            return max(deadline - time.monotonic(), 0.0)


def _draw_progress(done, total, elapsed, redraw, end=False):
    width = 30
    filled = width * done // total
    bar = "#" * filled + "." * (width - filled)
    line = f"corral: [{bar}] {done}/{total} ready, {elapsed:.1f} s"
    sys.stderr.write(f"\r{line}" + ("\n" if end else "") if redraw else line + "\n")
    sys.stderr.flush()


def wait(refs, *, num_returns=1, timeout=None):
    """Waits until ``num_returns`` of ``refs`` are ready or ``timeout`` seconds pass.

    Returns ``(ready, not_ready)``, two lists that keep the order of ``refs``; ``ready`` holds at
    most ``num_returns`` refs (the first ready ones in that order).
    """
    refs = list(refs)
    if not all(isinstance(r, ObjectRef) for r in refs):
        raise exceptions.InvalidArgumentError("wait() takes a list of ObjectRefs")
    if num_returns < 0 or num_returns > len(refs):
        raise exceptions.InvalidArgumentError(
            f"num_returns={num_returns} but {len(refs)} refs were given")
    client = _runtime.get_client()
    ids = [r._id for r in refs]
    with _Blocking(client, ids, num_returns):
        flags = client.wait(ids, num_returns, _timeout(timeout))
    ready, not_ready = [], []
    for r, f in zip(refs, flags):  # at most num_returns ready, as Ray: the first in the order given
        (ready if f and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


def put(value):
    """Stores ``value`` in the cluster and returns an ObjectRef to it.

    A large value (100 KiB or more pickled, numpy arrays and other buffers included) is written
    once into this node's shared-memory object store, and ``get`` on this node returns a read-only
    view of it (a numpy array is not copied); tasks on other nodes fetch it from this one. Its
    store's capacity is the node's ``--object-store-memory`` (``corral status`` shows it). Small
    values travel to the head, which holds up to its ``--object-memory``. A value the node's store
    cannot take even after spilling raises :class:`ObjectStoreFullError` here; a small put past the
    head's limit is refused later: ``get`` of its ref, and every task given it, raise it. Values are
    freed when no ref to them is left.
    """
    if isinstance(value, ObjectRef):
        raise exceptions.InvalidArgumentError("put() of an ObjectRef: pass the ref itself instead")
    return _put(value)


def _put(value, split=None):
    client = _runtime.get_client()
    # (A split was made, and its refs collected, by the caller: pack_args, for a task's argument.)
    (data, stored, object_id), inner = serialization.collecting_refs(
        () if split else (value,), serialization.encode, value, "the value given to put()", None, 0, split)
    if stored:
        ref = ObjectRef(client.put_stored(object_id, stored, _store.local().node), _counted=True)
    else:
        ref = ObjectRef(client.put(data), _counted=True)
    serialization.register_refs(client, ref.binary(), inner)
    return ref


def cancel(ref, *, force=False):
    """Cancels the task behind ``ref``.

    A task that has not started never runs. A running task gets ``KeyboardInterrupt`` raised in it
    (its worker lives on); with ``force=True`` its worker process is killed instead, which also stops
    code that ignores the interrupt or is stuck in C. ``get(ref)`` then raises TaskCancelledError,
    unless the task finished first. Cancelling a finished task does nothing.

    With a durable task's id (a string): a task that has not started is revoked and never runs; a
    running one is stopped; either way it is stored as REVOKED. Returns the task's state after.
    """
    if isinstance(ref, str):  # a durable task's id
        return _runtime.get_client().durable_cancel(ref)["state"]
    if not isinstance(ref, ObjectRef):
        raise exceptions.InvalidArgumentError(
            "cancel() takes the ObjectRef a .remote() call returned, or a durable task's id")
    _runtime.get_client().cancel(ref._id, force)


def nodes():
    """Every node the head knows, as dicts: node_id, hostname, address (where it connects from),
    state ("alive", "suspect": silent or disconnected, takes no new work; "dead": its tasks were
    re-run elsewhere; "left": drained and gone), connected, draining, interruptible_only,
    resources (total) and available, labels, python_version, running_tasks, last_heartbeat_age_s,
    gpus (each device NVML reported: index, name, memory_bytes, uuid), and the agent's counters."""
    return _runtime.get_client().nodes()


def cluster_status():
    """Nodes, tasks by state, infeasible tasks and the head's counters, as a dict."""
    return _runtime.get_client().status()


class RuntimeContext:
    """Where the calling code runs. Inside a task: its id, attempt, node, worker and resources."""

    def __init__(self):
        ctx = _runtime.current_task
        self.node_id = _runtime.node_id
        self.worker_id = _runtime.worker_id
        self.task_id = _core.hex(ctx.task_id) if ctx else None
        self.attempt = ctx.attempt if ctx else None
        self.task_name = ctx.name if ctx else None
        self.assigned_resources = dict(ctx.resources) if ctx else {}
        self.gpu_ids = list(ctx.gpu_ids) if ctx else []
        self.pid = os.getpid()

    def __repr__(self):
        return (f"RuntimeContext(task_id={self.task_id!r}, attempt={self.attempt}, node_id={self.node_id!r}, "
                f"worker_id={self.worker_id!r}, assigned_resources={self.assigned_resources}, "
                f"gpu_ids={self.gpu_ids})")


def runtime_context():
    return RuntimeContext()


# ---- remote functions ----

_OPTION_NAMES = {"num_cpus", "num_gpus", "memory", "resources", "label_selector", "max_retries", "name",
                 "interruptible", "keep_running_on_partition", "num_returns", "retry_exceptions", "runtime_env",
                 "gang", "member", "gang_capture"}
_IN_WORKER_OPTIONS = ("retry_exceptions", "runtime_env", "max_retries", "gang_capture")  # change what is shipped


def _captures(options):
    """The gang the shipped function puts its children into (gang_capture): part of what is shipped."""
    return options.get("gang") if options.get("gang_capture") else None


def _parse_memory(m):
    if m is None:
        return 0
    if isinstance(m, (int, float)):
        if m < 0:
            raise exceptions.InvalidArgumentError("memory must be >= 0")
        return float(m)
    s = str(m).strip()
    units = [("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4),
             ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1)]
    for suffix, mult in units:
        if s.endswith(suffix):
            try:
                return float(s[: -len(suffix)]) * mult
            except ValueError:
                break
    try:
        return float(s)
    except ValueError:
        raise exceptions.InvalidArgumentError(
            f"memory={m!r}: use bytes or a size like '512MiB' or '4GiB'") from None


def _validate(options):
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise exceptions.InvalidArgumentError(
            f"unknown option(s) {sorted(unknown)}; valid: {sorted(_OPTION_NAMES)}")
    for k in ("num_cpus", "num_gpus"):
        v = options.get(k)
        if v is not None and (not isinstance(v, (int, float)) or v < 0):
            raise exceptions.InvalidArgumentError(f"{k}={v!r}: must be a number >= 0")
    num_gpus = options.get("num_gpus")
    if num_gpus is not None and num_gpus > 1 and num_gpus != int(num_gpus):
        raise exceptions.InvalidArgumentError(
            f"num_gpus={num_gpus}: a fraction shares one device; above 1, ask whole devices")
    r = options.get("resources")
    if r is not None:
        if not isinstance(r, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and v >= 0
                                              for k, v in r.items()):
            raise exceptions.InvalidArgumentError(f"resources={r!r}: must map names to numbers >= 0")
        for k in ("CPU", "GPU", "memory"):
            if k in r:
                raise exceptions.InvalidArgumentError(f"use num_cpus/num_gpus/memory, not resources={{{k!r}: ...}}")
    mr = options.get("max_retries")
    if mr is not None and (not isinstance(mr, int) or mr < 0):
        raise exceptions.InvalidArgumentError(f"max_retries={mr!r}: must be an int >= 0")
    for k in ("interruptible", "keep_running_on_partition"):
        v = options.get(k)
        if v is not None and not isinstance(v, bool):
            raise exceptions.InvalidArgumentError(f"{k}={v!r}: must be True or False")
    _parse_memory(options.get("memory"))
    if options.get("num_returns") is not None:
        generators.check_num_returns(options["num_returns"])
    _in_worker.check_retry_exceptions(options.get("retry_exceptions"))
    _in_worker.check_runtime_env(options.get("runtime_env"))
    _check_gang(options)
    return options


def _check_gang(options):
    from .gang import Gang
    g, member = options.get("gang"), options.get("member")
    capture = options.get("gang_capture")
    if capture is not None and not isinstance(capture, bool):
        raise exceptions.InvalidArgumentError(f"gang_capture={capture!r}: must be True or False")
    if g is None:
        if member is not None or capture:
            raise exceptions.InvalidArgumentError(
                f"{'member' if member is not None else 'gang_capture'}= without gang=: give the gang too")
        return
    if not isinstance(g, Gang):
        raise exceptions.InvalidArgumentError(f"gang={g!r}: give the Gang that corral.gang() returned")
    if member is not None and (not isinstance(member, int) or isinstance(member, bool) or not -1 <= member < len(g)):
        raise exceptions.InvalidArgumentError(
            f"member={member!r}: the gang has members 0..{len(g) - 1} (or -1 / None: any of them)")


def _gang_of(options):
    """(gang id, member) as the client registers them: (b"", -1) outside a gang."""
    g = options.get("gang")
    if g is None:
        return b"", -1
    member = options.get("member")
    return g.id, -1 if member is None else member


def _code_keeping_filename(code):
    # cloudpickle names every code object it ships "<dynamic-code>": a remote traceback would then
    # show neither the user's file nor its lines. Keep the real file name (lines are kept anyway).
    cls, args = _code_reduce(code)
    return cls, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


# (cloudpickle 2 keeps it in cloudpickle_fast, and keeps file names itself.)
_code_reduce = (getattr(cloudpickle.cloudpickle, "_code_reduce", None)
                or getattr(getattr(cloudpickle, "cloudpickle_fast", None), "_code_reduce", None))


class _Pickler(cloudpickle.Pickler):
    if _code_reduce is not None:
        dispatch_table = collections.ChainMap({types.CodeType: _code_keeping_filename},
                                              cloudpickle.Pickler.dispatch_table)


def _pickle_by_value(obj, what):
    """(pickled, hash): `obj` pickled by value, and the hash the head checks it against (the first
    16 bytes of its SHA-256)."""
    try:
        buf = io.BytesIO()
        _Pickler(buf, protocol=5).dump(obj)
        pickled = buf.getvalue()
    except Exception as e:
        raise exceptions.SerializationError(f"{what} cannot be pickled: {e}") from e
    return pickled, hashlib.sha256(pickled).digest()[:16]


def _request(options, default_cpus):
    """(resources, label selector) of a function's or actor's options, as the client registers them."""
    resources = {"CPU": float(default_cpus if options.get("num_cpus") is None else options["num_cpus"]),
                 "GPU": float(options.get("num_gpus") or 0), "memory": _parse_memory(options.get("memory"))}
    for k, v in (options.get("resources") or {}).items():
        resources[k] = float(v)
    return resources, {str(k): str(v) for k, v in (options.get("label_selector") or {}).items()}


def _in_captured_gang(remote):
    """A remote function or actor class with gang= set, if it has no gang= of its own and is started
    from a task or actor started with gang_capture=True (Ray's placement_group_capture_child_tasks);
    else None. Kept per gang on the object (not pickled with it)."""
    g = None if "gang" in remote._options else _runtime.captured_gang()
    if g is None:
        return None
    cache = remote.__dict__.setdefault("_captured", {})
    if g.id not in cache:
        cache[g.id] = remote.options(gang=g, gang_capture=True)
    return cache[g.id]


class RemoteFunction:
    """A function that runs as a task: ``f.remote(*args)`` returns an ObjectRef at once."""

    def __init__(self, fn, options):
        self._fn = fn
        self._options = _validate(dict(options))
        self._name = options.get("name") or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
        self._returns = generators.returns_of(fn, self._options)
        self._job_env = {}   # init(runtime_env=)'s variables when _pickled was made
        self._pickled = None
        self._hash = None
        self._handles = {}   # connection generation -> handle (no reference to the connection itself)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "remote_function")
        self.__wrapped__ = fn

    def __getstate__(self):
        # A function pickled by value (into a task, or a function that refers to this one) must not
        # carry this process's handles: they name registrations on this process's connection only.
        state = self.__dict__.copy()
        state["_handles"] = {}
        state.pop("_captured", None)
        return state

    def _in_captured_gang(self):
        return _in_captured_gang(self)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self._name} must be called with {self.__name__}.remote(...); "
                        f"the plain function is {self.__name__}.__wrapped__")

    def options(self, **options):
        """A copy with some options changed: ``f.options(num_cpus=2).remote(x)``."""
        merged = dict(self._options)
        merged.update(options)
        other = RemoteFunction(self._fn, merged)
        if (all(merged.get(k) == self._options.get(k) for k in _IN_WORKER_OPTIONS) and
                _captures(merged) == _captures(self._options)):
            other._pickled, other._hash, other._job_env = self._pickled, self._hash, self._job_env
        return other

    def _handle(self, client):
        h = self._handles.get(_runtime.generation)
        if h is not None:
            return h
        o = self._options
        retries = 3 if o.get("max_retries") is None else o["max_retries"]
        if self._pickled is None or self._job_env != _runtime.job_env_vars:
            self._job_env = dict(_runtime.job_env_vars)
            self._pickled, self._hash = _pickle_by_value(_in_worker.wrap(self._fn, o, retries),
                                                         f"function {self._name}")
        resources, labels = _request(o, default_cpus=1)
        gang_id, member = _gang_of(o)
        handle = client.register_function(self._name, self._hash, self._pickled, resources, labels, retries,
                                          bool(o.get("interruptible")), bool(o.get("keep_running_on_partition")),
                                          gang_id=gang_id, gang_member=member)
        self._handles = {_runtime.generation: handle}
        return handle

    def remote(self, *args, **kwargs):
        captured = self._in_captured_gang()
        if captured is not None:
            return captured.remote(*args, **kwargs)
        client = _runtime.get_client()
        handle = self._handle(client)
        (data, deps, held), inner = serialization.collecting_refs(
            args + tuple(kwargs.values()) if kwargs else args,
            serialization.pack_args, args, kwargs, ObjectRef, self._name, _put)
        ref = ObjectRef(client.submit(handle, data, deps), _counted=True)
        serialization.register_refs(client, ref.binary(), inner)  # they live while the task's result does
        del held  # large arguments put for the call: the head keeps them while the task needs them
        return generators.split(ref, self._returns, self._name)


def remote(*args, **options):
    """Makes a function a remote function (a task), or a class an actor class (see
    :class:`corral.actor.ActorClass` for an actor's options: ``max_restarts``, ``max_concurrency``,
    ``name``, ``lifetime``...).

        @corral.remote
        def f(x): ...

        @corral.remote(num_cpus=2, num_gpus=1, memory="4GiB", resources={"ssd": 1},
                       label_selector={"zone": "office"}, max_retries=3)
        def g(x): ...

    ``num_cpus`` defaults to 1; ``max_retries`` (re-runs after the worker or node died) to 3.

    ``interruptible=True``: the task may run on nodes started with ``--interruptible-only`` (laptops
    that may sleep); other tasks never go there unless their ``label_selector`` picks such a node.

    ``keep_running_on_partition=True``: when its node loses the head for longer than its lease,
    the task is not stopped. By default it is, so that when the head runs it again elsewhere the
    two attempts never overlap; with this option they may, and duplicate effects are yours to
    handle. A node that drains or a task that is cancelled still stops it.

    ``gang=g, member=i`` (see :func:`corral.gang`): the task runs in member i's reservation (any
    member's when ``member`` is None), with what it asks taken from that member's share.
    ``gang_capture=True``: the tasks and actors it starts without a ``gang=`` of their own run in the
    same gang too (``gang=None`` keeps one out).

    ``num_gpus``: whole devices (``CUDA_VISIBLE_DEVICES`` names them), or a fraction below 1 that
    shares a device with other fractions.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise exceptions.InvalidArgumentError("use @corral.remote or @corral.remote(option=value, ...)")
    from .actor import _ACTOR_OPTIONS
    unknown = set(options) - _OPTION_NAMES - _ACTOR_OPTIONS  # the rest is checked once it is known which
    if unknown:
        raise exceptions.InvalidArgumentError(
            f"unknown option(s) {sorted(unknown)}; valid for functions: {sorted(_OPTION_NAMES)}; for actor "
            f"classes: {sorted(_ACTOR_OPTIONS)}")
    return lambda fn: _make_remote(fn, options)


def _make_remote(fn, options):
    if inspect.isclass(fn):
        from .actor import ActorClass
        return ActorClass(fn, options)
    return RemoteFunction(fn, _validate(dict(options)))
