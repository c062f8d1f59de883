"""Gangs: several processes started together, each with its resources held for it (Ray's placement
groups), for distributed training and anything else whose parts must run at the same time.

    g = corral.gang(4, num_cpus=2, num_gpus=1, strategy="spread")   # reserved all at once, or not at all
    g.ready(timeout=60)                  # True once every member's resources are held
    results = g.run(train, cfg)          # one process per member, at the same time: 4 results, by rank
    Trainer.options(gang=g, member=0).remote()   # an actor (or a task) placed in member 0's reservation
    corral.remove_gang(g)                # frees it; what runs in it is stopped

Strategies: ``pack`` (as few nodes as possible), ``spread`` (as many as possible), ``strict_pack``
(one node), ``strict_spread`` (a node per member). A gang that does not fit waits, holding
nothing (so two gangs never deadlock holding half each); ``corral status`` shows why it waits. A gang
ends when it is removed or when the driver that made it exits (unless ``detached=True``); if a node
under it dies, it is reserved again where it fits.

``run`` gives each member ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` (a free port on member 0's node) in its environment: what
``torch.distributed`` reads. :func:`corral.ddp` builds on it.
"""
import os
import socket
import sys
import time

from . import _runtime, exceptions

STRATEGIES = ("pack", "spread", "strict_pack", "strict_spread")


def gang(members=None, *, num_cpus=1, num_gpus=0, memory=None, resources=None, bundles=None, strategy="pack",
         name="", detached=False):
    """Reserves ``members`` bundles of ``num_cpus``/``num_gpus``/``memory``/``resources`` each (or the
    given ``bundles``, a list of dicts such as ``{"CPU": 2, "GPU": 1}``), all at once. Returns a
    :class:`Gang` at once; ``ready()`` says when the reservation holds."""
    from .api import _parse_memory
    if bundles is None:
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            raise exceptions.InvalidArgumentError(f"gang({members!r}): give the number of members (an int >= 1)")
        one = {"CPU": num_cpus, "GPU": num_gpus, "memory": _parse_memory(memory)}
        one.update(resources or {})
        bundles = [dict(one) for _ in range(members)]
    elif members is not None and members != len(bundles):
        raise exceptions.InvalidArgumentError(f"gang({members}, bundles=[{len(bundles)} bundles]): the counts differ")
    clean = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not
                                              isinstance(v, bool) and v >= 0 for k, v in b.items()):
            raise exceptions.InvalidArgumentError(f"bundle {i} = {b!r}: must map resource names to numbers >= 0")
        clean.append({k: float(v) for k, v in b.items() if v > 0})
    if not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
        raise exceptions.InvalidArgumentError(f"strategy={strategy!r}: use one of {', '.join(STRATEGIES)}")
    gang_id = os.urandom(16)
    client = _runtime.get_client()
    info = client.gang_request("create", gang_id, clean, strategy.lower(), str(name or ""), bool(detached))[0]
    return Gang(gang_id, clean, strategy.lower(), info["name"])


def remove_gang(g):
    """Frees the gang's reservation. Tasks and actors running in it are stopped (their gets raise);
    those waiting to start fail. Removing a removed gang does nothing."""
    if not isinstance(g, Gang):
        raise exceptions.InvalidArgumentError(f"remove_gang({g!r}): give the Gang that corral.gang() returned")
    _runtime.get_client().gang_request("remove", g.id)


def gangs():
    """Every gang not removed, as dicts: gang_id, name, state (PENDING or READY), strategy, reason
    (why it waits), age_s and members (index, resources, node_id, hostname, address)."""
    return _runtime.get_client().gang_request("list")


class Gang:
    """A gang's handle (see the module's doc). It can be passed to tasks and actors."""

    def __init__(self, gang_id, bundles, strategy, name=""):
        self.id = gang_id
        self.bundles = bundles
        self.strategy = strategy
        self.name = name

    def __reduce__(self):
        return (Gang, (self.id, self.bundles, self.strategy, self.name))

    def __eq__(self, other):
        return isinstance(other, Gang) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __len__(self):
        return len(self.bundles)

    def __repr__(self):
        return f"Gang({self.id.hex()[:16]}, {len(self.bundles)} members, {self.strategy})"

    def info(self):
        """The gang's state as a dict (see :func:`gangs`). Raises GangError if it was removed."""
        try:
            return _runtime.get_client().gang_request("get", self.id)[0]
        except exceptions.NotFoundError as e:
            raise exceptions.GangError(str(e)) from None

    def ready(self, timeout=None):
        """Waits until every member's resources are held: True; False if ``timeout`` seconds pass
        first (``info()["reason"]`` says why). Raises GangError if the gang was removed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            if self.info()["state"] == "READY":
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.2)

    wait = ready  # Ray's PlacementGroup.wait(timeout_seconds)

    def members(self):
        """Each member's index, resources, node_id, hostname and address (empty while pending)."""
        return self.info()["members"]

    def remove(self):
        remove_gang(self)

    def run(self, fn, *args, max_restarts=0, timeout=None, **kwargs):
        """Runs ``fn(*args, **kwargs)`` once in each member, all at the same time, each with its
        member's resources (its GPUs in ``CUDA_VISIBLE_DEVICES``) and the rank variables in its
        environment. Returns the results, by rank. If a member fails, the others are stopped and the
        run raises GangMemberError naming the member, its node and the cause; with
        ``max_restarts=n`` the whole gang is started again, up to n times (resuming from a
        checkpoint is the function's business). ``timeout``: seconds to wait for the gang to be ready."""
        from .api import RemoteFunction
        fn = fn.__wrapped__ if isinstance(fn, RemoteFunction) else fn
        if not callable(fn):
            raise exceptions.InvalidArgumentError(f"Gang.run({fn!r}): give a function")
        if not isinstance(max_restarts, int) or max_restarts < 0:
            raise exceptions.InvalidArgumentError(f"max_restarts={max_restarts!r}: must be an int >= 0")
        for attempt in range(max_restarts + 1):
            try:
                return self._run_once(fn, args, kwargs, timeout)
            except exceptions.GangMemberError as e:
                if attempt == max_restarts:
                    raise
                print(f"corral: {e}; starting the gang again ({attempt + 1} of {max_restarts}, max_restarts)",
                      file=sys.stderr, flush=True)

    def _run_once(self, fn, args, kwargs, timeout):
        from . import api
        if not self.ready(timeout):
            raise exceptions.GangError(f"gang {self.name or self.id.hex()[:16]} was not ready within {timeout} s: "
                                       f"{self.info()['reason']}")
        members = self.members()
        # MASTER_ADDR: the address member 0's node reaches the other members' nodes by.
        toward = [_host_of(m["address"]) for m in members if m["node_id"] != members[0]["node_id"]]
        try:
            host, port = api.get(api.remote(_free_port).options(
                gang=self, member=0, num_cpus=0, max_retries=0, name="corral.gang.free_port").remote(toward))
        except exceptions.CorralError as e:
            raise exceptions.GangError(f"could not find a free port on member 0's node: {e}") from e
        world = len(members)
        runner = api.remote(_run_member)
        refs = []
        for m in members:
            same_node = [o["index"] for o in members if o["node_id"] == m["node_id"]]
            env = {"RANK": str(m["index"]), "WORLD_SIZE": str(world), "LOCAL_RANK": str(same_node.index(m["index"])),
                   "LOCAL_WORLD_SIZE": str(len(same_node)), "MASTER_ADDR": host, "MASTER_PORT": str(port),
                   "CORRAL_GANG_ID": self.id.hex(), "CORRAL_GANG_MEMBER": str(m["index"])}
            res = dict(m["resources"])
            options = dict(gang=self, member=m["index"], max_retries=0, num_cpus=res.pop("CPU", 0),
                           num_gpus=res.pop("GPU", 0), memory=res.pop("memory", None) or None,
                           name=getattr(fn, "__qualname__", "member"))
            if res:
                options["resources"] = res
            refs.append(runner.options(**options).remote(fn, env, args, kwargs))
        pending = list(refs)
        try:
            while pending:
                done, pending = api.wait(pending, num_returns=1)
                failed = _failures(done)
                if failed:
                    # One member's failure often makes the others fail soon after (a collective
                    # whose peer is gone): give them a moment, and name the one that failed first.
                    more, pending = api.wait(pending, num_returns=len(pending), timeout=_SETTLE_S)
                    failed += _failures(more)
                    ref, e = min(failed, key=lambda f: _failed_at(f[1]))
                    m = members[refs.index(ref)]
                    raise exceptions.GangMemberError(
                        f"member {m['index']} of {world} of gang {self.name or self.id.hex()[:16]} failed on node "
                        f"{m['hostname']} ({m['node_id'][:8]}): {_describe(e)}; the other "
                        f"members were stopped", member=m["index"], node_id=m["node_id"], hostname=m["hostname"],
                        cause=e) from e
        except BaseException:  # a member failed, or Ctrl-C: none is left running in the gang
            self._stop(pending)
            raise
        return api.get(refs)

    @staticmethod
    def _stop(refs):
        from . import api
        for r in refs:
            api.cancel(r, force=True)
        if refs:  # their ends free the reservation for a restart
            api.wait(refs, num_returns=len(refs), timeout=60)


_SETTLE_S = 1.0


def _failures(refs):
    """(ref, error) of each of `refs` (all finished) that failed."""
    from . import api
    out = []
    for ref in refs:
        try:
            api.get(ref)
        except Exception as e:  # noqa: BLE001 - whatever a member died of ends the run
            out.append((ref, e))
    return out


def stamp_failure(e):
    """Marks when a member's code raised `e` (once: the first mark, nearest the cause, stays), so
    Gang.run can name the member that failed first."""
    if not hasattr(e, "__corral_failed_at__"):
        try:
            e.__corral_failed_at__ = time.time()
        except AttributeError:  # (an exception type without a __dict__)
            pass


def _failed_at(e):
    """When the member's code raised (time.time() on its node; the mark may sit on the error's
    cause). A member whose process or node died raised nothing and comes first: the others' errors
    usually follow from it. Any other error without a mark comes last."""
    for err in (e, getattr(e, "cause", None)):
        t = getattr(err, "__corral_failed_at__", None)
        if t is not None:
            return t
    if isinstance(e, (exceptions.WorkerCrashedError, exceptions.NodeDiedError)):
        return float("-inf")
    return float("inf")


def _describe(e):
    """"Type: message" of a member's error, on one line (a remote traceback's last line)."""
    text = str(e).strip()
    line = text.splitlines()[-1] if text else ""
    name = type(e).__name__
    return line if line.startswith(name) else f"{name}: {line}" if line else name


def _host_of(address):
    """"10.0.0.5:41234" -> "10.0.0.5", "[fe80::1]:41234" -> "fe80::1"; "" for anything else."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def _free_port(toward):
    """(address, port) on this node that the other members can reach, and a port free now: the
    address this node uses toward the other members' nodes (`toward`), else toward the head."""
    head = _host_of(os.environ.get("CORRAL_ADDRESS", "127.0.0.1:7370")) or "127.0.0.1"
    addr = None
    for host in [h for h in toward if h] + [head]:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, 9))  # no packet is sent: this only picks the route
                addr = s.getsockname()[0]
                break
        except (OSError, ValueError):
            continue
    addr = addr or "127.0.0.1"
    with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return addr, s.getsockname()[1]


def _run_member(fn, env, args, kwargs):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn(*args, **kwargs)
    except BaseException as e:
        stamp_failure(e)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
