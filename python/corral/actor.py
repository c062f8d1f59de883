"""Actors: a class whose instance lives in a worker of its own and keeps its state between calls.

    @corral.remote(num_cpus=1, max_restarts=3, max_task_retries=2)
    class Counter:
        def __init__(self, start): self.n = start
        def incr(self, k=1): self.n += k; return self.n

    c = Counter.remote(10)               # a handle, at once; the constructor runs in a new worker
    corral.get(c.incr.remote())          # 11

See :class:`ActorClass` for the options and :class:`ActorHandle` for what a handle does.
"""
import inspect

from . import _in_worker, _runtime, exceptions, generators, serialization
from .object_ref import ObjectRef

_ACTOR_OPTIONS = {"num_cpus", "num_gpus", "memory", "resources", "label_selector", "max_restarts", "max_task_retries",
                  "max_concurrency", "concurrency_groups", "name", "namespace", "lifetime", "get_if_exists",
                  "interruptible", "keep_running_on_partition", "runtime_env", "gang", "member", "gang_capture"}
DEFAULT_NAMESPACE = "default"


def method(*, concurrency_group=None, num_returns=None):
    """Options for one actor method: ``@corral.method(concurrency_group="io")`` runs its calls in that
    group (declared in the class's ``concurrency_groups``) unless a call picks another with
    ``.options(concurrency_group=...)``. ``num_returns``: as for a task (corral.generators): a call
    returns that many ObjectRefs."""
    if num_returns is not None:
        generators.check_num_returns(num_returns)

    def wrap(fn):
        fn.__corral_concurrency_group__ = concurrency_group or ""
        if num_returns is not None:
            fn.__corral_num_returns__ = num_returns
        return fn
    return wrap


def _validate(cls_name, options):
    from .api import _parse_memory, _validate as validate_task_options
    unknown = set(options) - _ACTOR_OPTIONS
    if unknown:
        raise exceptions.InvalidArgumentError(
            f"unknown actor option(s) {sorted(unknown)} for {cls_name}; valid: {sorted(_ACTOR_OPTIONS)}")
    validate_task_options({k: v for k, v in options.items()
                           if k in ("num_cpus", "num_gpus", "memory", "resources", "interruptible",
                                    "keep_running_on_partition", "gang", "member", "gang_capture")})
    for k in ("max_restarts", "max_task_retries"):
        v = options.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < -1):
            raise exceptions.InvalidArgumentError(f"{k}={v!r}: must be an int >= 0 (or -1 for no limit)")
    mc = options.get("max_concurrency")
    if mc is not None and (not isinstance(mc, int) or isinstance(mc, bool) or mc < 1):
        raise exceptions.InvalidArgumentError(f"max_concurrency={mc!r}: must be an int >= 1")
    groups = options.get("concurrency_groups")
    if groups is not None and (not isinstance(groups, dict) or not all(
            isinstance(g, str) and g and isinstance(n, int) and n >= 1 for g, n in groups.items())):
        raise exceptions.InvalidArgumentError(
            f"concurrency_groups={groups!r}: must map group names to ints >= 1, e.g. {{'io': 4}}")
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise exceptions.InvalidArgumentError(f"lifetime={lifetime!r}: use 'detached' or leave it out")
    for k in ("name", "namespace"):
        v = options.get(k)
        if v is not None and (not isinstance(v, str) or not v):
            raise exceptions.InvalidArgumentError(f"{k}={v!r}: must be a non-empty string")
    if lifetime == "detached" and not options.get("name"):
        raise exceptions.InvalidArgumentError(
            "a detached actor needs a name (name=...): nothing else could find it once its creator exits")
    _parse_memory(options.get("memory"))
    _in_worker.check_runtime_env(options.get("runtime_env"))
    return options


def _limit(v):
    return 2**32 - 1 if v == -1 else int(v or 0)


class ActorClass:
    """A class made remote with ``@corral.remote``. ``Cls.remote(*args)`` starts an actor and returns
    its :class:`ActorHandle` at once; ``Cls.options(...)`` changes options for one creation.

    Options (all optional):

    - ``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``label_selector``: what the actor holds
      for its whole life, and where it may run. ``num_cpus`` defaults to 0, as in Ray: an actor that
      asks for no CPU holds none (its worker still needs a node). An actor with ``num_gpus=1`` gets
      its own device(s) through ``CUDA_VISIBLE_DEVICES``.
    - ``max_restarts`` (default 0; -1: no limit): when its worker or node dies, the actor is started
      again by running its constructor anew. **Its state is what the constructor builds**: nothing
      of the old instance survives a restart.
    - ``max_task_retries`` (default 0; -1: no limit): a call that was running when the actor died is
      sent again to the restarted actor this many times; otherwise it fails with ActorDiedError.
    - ``max_concurrency`` (default 1; 1000 for an async actor): calls that may run at once. Calls
      from one caller start in the order they were made; with ``max_concurrency=1`` they also run
      one after another in that order.
    - ``concurrency_groups={"io": 4, ...}``: named groups with their own limits; a method joins one
      with ``@corral.method(concurrency_group="io")`` or a call with ``.options(concurrency_group=...)``.
    - ``name``, ``namespace`` (default "default"): find it from any driver with ``corral.get_actor``.
      ``get_if_exists=True`` returns the live actor of that name instead of failing.
    - ``lifetime="detached"``: it outlives its creator (it needs a name) and ends only with
      ``corral.kill``. Otherwise it ends when its creator exits, or when no handle to it remains
      anywhere (after the calls already made have run).
    """

    def __init__(self, cls, options):
        self._cls = cls
        self._options = _validate(cls.__qualname__, dict(options))
        self._name = f"{getattr(cls, '__module__', '?')}.{cls.__qualname__}"
        self._methods = sorted(n for n, m in inspect.getmembers(cls, callable)
                               if not n.startswith("__") or n == "__call__")
        self._is_async = any(inspect.iscoroutinefunction(getattr(cls, n)) or inspect.isasyncgenfunction(getattr(cls, n))
                             for n in self._methods)
        self._returns = {}  # method -> num_returns, where not 1
        for n in self._methods:
            m = getattr(cls, n)
            r = generators.returns_of(m, {"num_returns": getattr(m, "__corral_num_returns__", None)})
            if r != 1:
                self._returns[n] = r
        self._pickled = self._hash = None
        self._job_env = {}
        self._handles = {}
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__wrapped__ = cls

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        state.pop("_captured", None)
        return state

    def _in_captured_gang(self):
        from .api import _in_captured_gang
        return _in_captured_gang(self)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self._name} must be started with {self.__name__}.remote(...)")

    def options(self, **options):
        """A copy with some options changed: ``Counter.options(name="c", lifetime="detached").remote(0)``."""
        merged = dict(self._options)
        merged.update(options)
        other = ActorClass(self._cls, merged)
        from .api import _captures
        if merged.get("runtime_env") == self._options.get("runtime_env") and _captures(merged) == _captures(self._options):
            other._pickled, other._hash, other._job_env = self._pickled, self._hash, self._job_env
        return other

    def _handle(self, client):
        h = self._handles.get(_runtime.generation)
        if h is not None:
            return h
        from .api import _gang_of, _pickle_by_value, _request
        if self._pickled is None or self._job_env != _runtime.job_env_vars:
            self._job_env = dict(_runtime.job_env_vars)
            self._pickled, self._hash = _pickle_by_value(_in_worker.wrap(self._cls, self._options, 0, keep_env=True),
                                                         f"actor class {self._name}")
        o = self._options
        resources, labels = _request(o, default_cpus=0)
        groups = dict(o.get("concurrency_groups") or {})
        for n in self._methods:  # a group named by a method must exist
            g = getattr(getattr(self._cls, n), "__corral_concurrency_group__", "")
            if g and g not in groups:
                raise exceptions.InvalidArgumentError(
                    f"{self._name}.{n} is in concurrency group {g!r}, which concurrency_groups does not declare")
        actor = {"class_name": self._name, "name": o.get("name") or "", "namespace": self._namespace(),
                 "detached": o.get("lifetime") == "detached", "max_task_retries": _limit(o.get("max_task_retries")),
                 "max_concurrency": int(o.get("max_concurrency") or 0), "concurrency_groups": groups,
                 "is_async": self._is_async, "methods": self._methods}
        handle = client.register_function(self._name, self._hash, self._pickled, resources, labels,
                                          _limit(o.get("max_restarts")), bool(o.get("interruptible")),
                                          bool(o.get("keep_running_on_partition")), actor, *_gang_of(o))
        self._handles = {_runtime.generation: handle}
        return handle

    def _namespace(self):
        return self._options.get("namespace") or _runtime.namespace or DEFAULT_NAMESPACE

    def remote(self, *args, **kwargs):
        """Starts the actor: its constructor runs with these arguments in a worker of its own. Returns
        its :class:`ActorHandle` at once; calls made before the constructor returns wait for it."""
        captured = self._in_captured_gang()
        if captured is not None:
            return captured.remote(*args, **kwargs)
        client = _runtime.get_client()
        handle = self._handle(client)
        name = self._options.get("name")
        if name and self._options.get("get_if_exists"):
            found = _lookup(client, name, self._namespace())
            if found:
                return _handle_from_info(found)
        (data, deps, held), inner = serialization.collecting_refs(
            args + tuple(kwargs.values()) if kwargs else args,
            serialization.pack_args, args, kwargs, ObjectRef, self._name, _put)
        actor_id = client.submit(handle, data, deps)
        ref = ObjectRef(actor_id, _counted=True)
        serialization.register_refs(client, actor_id, inner)
        del held
        if name:
            # The head refuses a second live actor of one name: learn now which one holds it.
            found = _lookup(client, name, self._namespace())
            if found and found["_id"] != actor_id:  # (none: ours already died, its calls will say why)
                if self._options.get("get_if_exists"):
                    return _handle_from_info(found)
                raise exceptions.InvalidArgumentError(
                    f"an actor named {name!r} already exists in namespace {self._namespace()!r}: get it with "
                    f"corral.get_actor({name!r}, namespace={self._namespace()!r}), pick another name, or pass "
                    f"get_if_exists=True")
        return ActorHandle(actor_id, self._name, self._methods, _limit(self._options.get("max_task_retries")), ref,
                           self._returns)


def _put(value, split=None):
    from .api import _put as put
    return put(value, split)


class ActorHandle:
    """A reference to a live actor: ``handle.method.remote(*args)`` calls a method and returns an
    ObjectRef to its result. Handles may be passed to tasks and other actors (as arguments, or inside
    values) and used there. An actor that is not detached ends once no handle to it remains anywhere
    (handles from ``get_actor`` do not count), after the calls made through them have run."""

    def __init__(self, actor_id, class_name, methods, max_task_retries, ref=None, returns=None):
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = frozenset(methods)
        self._max_task_retries = max_task_retries
        self._ref = ref  # the actor's creation result: holding it keeps the actor alive (see GC above)
        self._returns = returns or {}  # method -> num_returns where not 1 (unknown to get_actor's handles)

    def __getattr__(self, name):
        methods = self.__dict__.get("_methods", ())  # (absent while being unpickled)
        if name.startswith("__") and name != "__call__" or name.startswith("_") and name not in methods:
            raise AttributeError(name)
        if name not in self._methods:
            raise AttributeError(f"actor {self._class_name} has no method {name!r}; it has {sorted(self._methods)}")
        # Kept on the handle: the next ``handle.name`` is a plain attribute read, not a failed lookup
        # and a new object (a tenth of a caller's time per call, in a loop of calls). The method
        # holds what it needs of the handle, not the handle itself: no cycle delays the actor's end.
        method = self.__dict__[name] = ActorMethod(self, name, "", self._returns.get(name, 1))
        return method

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, sorted(self._methods), self._max_task_retries,
                              self._ref, self._returns))

    def __repr__(self):
        return f"ActorHandle({self._class_name}, {_core_hex(self._actor_id)})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    @property
    def actor_id(self):
        """The actor's id, in hex (as ``corral.list_actors()`` shows it)."""
        return _core_hex(self._actor_id)


def _core_hex(b):
    return b.hex()


class ActorMethod:
    """``handle.method``: call it with ``.remote(*args)``; ``.options(concurrency_group=...)`` first
    to run this call in another concurrency group, ``.options(num_returns=k)`` for k refs."""

    def __init__(self, handle, name, group="", returns=1):
        # The handle's parts, not the handle (which keeps its methods): the creation ref keeps the
        # actor alive while this method object lives, as the handle would.
        self._actor_id, self._class_name, self._max_task_retries = (handle._actor_id, handle._class_name,
                                                                    handle._max_task_retries)
        self._ref = handle._ref
        self._qual = f"{handle._class_name}.{name}"
        self._name, self._group, self._returns = name, group, returns

    def options(self, *, concurrency_group=None, num_returns=None):
        returns = self._returns if num_returns is None else generators.check_num_returns(num_returns)
        return ActorMethod(self, self._name, concurrency_group or self._group, returns)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor methods are called with .{self._name}.remote(...)")

    def remote(self, *args, **kwargs):
        client = _runtime.get_client()
        qual = self._qual
        (data, deps, held), inner = serialization.collecting_refs(
            args + tuple(kwargs.values()) if kwargs else args,
            serialization.pack_args, args, kwargs, ObjectRef, qual, _put)
        # Straight to the actor's agent where the cluster allows (a generator's values come through the head).
        ref = ObjectRef(client.submit_call(self._actor_id, qual, self._name, data, deps, self._max_task_retries,
                                           self._group, self._returns == 1), _counted=True)
        if inner:
            serialization.register_refs(client, ref._id, inner)
        del held
        return ref if self._returns == 1 else generators.split(ref, self._returns, qual)


def _lookup(client, name, namespace):
    try:
        return client.actor_request("get", name, namespace)[0]
    except exceptions.NotFoundError:
        return None


def _handle_from_info(info):
    return ActorHandle(info["_id"], info["class_name"], info["_methods"], info["_max_task_retries"])


def _public(info):
    return {k: v for k, v in info.items() if not k.startswith("_")}


def get_actor(name, namespace=None):
    """The handle of the live actor named ``name`` in ``namespace`` (default: the one given to
    ``corral.init``, else "default"), from any driver or task. Raises ActorNotFoundError (a
    ValueError) if there is none. This handle does not keep the actor alive."""
    if not isinstance(name, str) or not (namespace is None or isinstance(namespace, str)):
        raise exceptions.InvalidArgumentError(
            f"get_actor() takes a name and a namespace as strings, not {type(name).__name__} and "
            f"{type(namespace).__name__}")
    ns = namespace or _runtime.namespace or DEFAULT_NAMESPACE
    try:
        found = _runtime.get_client().actor_request("get", name, ns)
    except exceptions.NotFoundError as e:
        raise exceptions.ActorNotFoundError(str(e)) from None
    return _handle_from_info(found[0])


def kill(actor, *, no_restart=True):
    """Stops the actor's worker at once. Calls not yet run, and those running, fail with
    ActorDiedError. With ``no_restart=False`` it is restarted instead if it has restarts left (the
    running calls are then retried as ``max_task_retries`` allows)."""
    if not isinstance(actor, ActorHandle):
        raise exceptions.InvalidArgumentError(f"kill() takes an actor handle, not {type(actor).__name__}")
    _runtime.get_client().actor_request("kill", actor_id=actor._actor_id, restart=not no_restart)


def list_actors(*, include_dead=False):
    """The actors the head knows, as dicts: actor_id, class_name, name, namespace, state (PENDING,
    ALIVE, RESTARTING, DEAD), node_id, hostname, pid, restarts, max_restarts, death_cause, detached,
    pending_calls, running_calls, resources. ``include_dead``: also the last 1000 that died."""
    return [_public(a) for a in _runtime.get_client().actor_request("list", include_dead=include_dead)]
