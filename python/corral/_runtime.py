"""Process-wide state: the connection to the head, the embedded cluster, the running task.

A worker process also has a link to its agent and the context of the task it runs. After
``fork()`` the child drops the parent's connection (its IO thread does not exist there) and opens
its own on first use.
"""
import atexit
import contextvars
import inspect
import os
import platform
import sys
import threading
import time

import cloudpickle

from . import _core, exceptions

PYTHON_VERSION = platform.python_version()
CLOUDPICKLE_VERSION = cloudpickle.__version__

_lock = threading.RLock()
client = None            # _core.Client
cluster = None           # EmbeddedCluster started by init()
address = None
token = None
trust = ("", "")         # (CA file, CA fingerprint) given to init(); empty: CORRAL_CA_CERT / CORRAL_CA_FINGERPRINT
log_to_driver = True
_abandoned = []          # connections inherited over fork(): never destroyed in the child
generation = 0           # bumped by every new connection; caches keyed by it go stale with it

# Set in worker processes.
worker_link = None
worker_id = None
node_id = None
current_task = None      # TaskContext while a task runs
in_task_code = False     # True only while the task's own function runs (see call_task)
in_actor = False         # this worker hosts an actor (its calls do not give CPUs back while they wait)
namespace = None         # init(namespace=...): where get_actor and named actors look by default
job_env_vars = {}        # init(runtime_env={"env_vars": ...}): set for every task and actor this driver starts


current_call = contextvars.ContextVar("corral_current_call", default=None)  # an actor's call: its id
# The gang that tasks and actors started from here without gang= go into (gang_capture=True): set
# while such a task runs, or for an actor's whole life.
capture_gang = contextvars.ContextVar("corral_capture_gang", default=None)
actor_capture_gang = None


def captured_gang():
    return capture_gang.get() or actor_capture_gang
cancelled_calls = set()  # ids of an actor's running calls that were cancelled (see _actor_host.cancel)


class TaskContext:
    __slots__ = ("task_id", "attempt", "name", "resources", "gpu_ids", "seq", "owner")

    def __init__(self, task_id, attempt, name, resources, gpu_ids, seq=0, owner=b""):
        self.owner = owner   # the client id of the process that submitted it
        self.task_id = task_id
        self.attempt = attempt
        self.name = name
        self.resources = resources
        self.gpu_ids = gpu_ids
        self.seq = seq       # this worker's count of tasks received: what the agent's cancels name


def client_id_hex():
    c = client
    return c.client_id.hex() if c is not None else ""


def job_id():
    """The submitting process's client id (hex): the driver's for its tasks, a task's for nested ones."""
    ctx = current_task
    if ctx is not None and ctx.owner:
        return ctx.owner.hex()
    return client_id_hex()


def cancel_requested():
    """True if the agent asked to cancel the task now running in this worker."""
    t = current_task
    return t is not None and worker_link is not None and worker_link.interrupt_seq() == t.seq


def call_task(fn, args, kwargs):
    """Runs a task's own code in a worker. Interrupts (a cancel, a soft time limit) are raised only
    in here: a cancel that reached the worker before the task started is raised at its start, and
    one arriving after it returned is ignored, so neither is lost nor hits the worker's own loop.
    Whatever is raised leaves through the caller's ``except BaseException``."""
    global in_task_code
    try:
        in_task_code = True
        if cancel_requested():
            raise KeyboardInterrupt("the task was cancelled")
        result = fn(*args, **kwargs)
        if inspect.isgenerator(result):  # each value stored as it is yielded (generators.py)
            from . import generators
            result = generators.drain(result, current_task.name if current_task else "a task")
        return result
    finally:
        in_task_code = False


def connect(addr, tok, reconnect_s=None):
    """Connects to the head. reconnect_s: how long to keep reconnecting after losing it (then calls
    fail); default $CORRAL_RECONNECT_S or 60, but 0 for an embedded cluster's head (our own child)."""
    global client, address, token, generation
    if reconnect_s is None:
        reconnect_s = 0.0 if cluster is not None else float(os.environ.get("CORRAL_RECONNECT_S", "60"))
    c = _core.Client.connect(addr, tok, f"{'worker' if worker_link else 'driver'} pid {os.getpid()}",
                             PYTHON_VERSION, CLOUDPICKLE_VERSION, log_to_driver, 10.0, worker_link is not None,
                             reconnect_s, trust[0], trust[1])
    client, address, token = c, addr, tok
    generation += 1
    from . import _store
    _store.reset()  # maybe another cluster: its node's store is looked up again
    return c


def get_client(auto_init=True):
    """The connection to the head. Workers connect on first use. A driver that did not call init()
    gets one here as Ray does: ``init()`` with no arguments (a local cluster, or $CORRAL_ADDRESS),
    announced on stderr. ``auto_init=False``: raise instead (for what must not start a cluster)."""
    c = client
    if c is not None:
        return c
    with _lock:
        if client is not None:
            return client
        addr = os.environ.get("CORRAL_ADDRESS") if worker_link else address
        if worker_link and addr:
            return connect(addr, _core.find_token())  # the node's worker credential (CORRAL_TOKEN_FILE)
        if address and token is not None:  # a forked child of an initialised driver
            return connect(address, token)
        if worker_link or not auto_init or os.environ.get("CORRAL_NO_AUTO_INIT"):
            raise exceptions.CorralError("corral is not initialised: call corral.init() first")
        from . import api
        api.init()
        if cluster is not None:
            where = f"started a local cluster at {address} for this process"
        else:
            where = f"connected to the cluster at {address} ($CORRAL_ADDRESS)"
        print(f"corral: {where}; call corral.init() before first use to choose", file=sys.stderr, flush=True)
        return client


def _after_fork_in_child():
    global client, _lock
    _lock = threading.RLock()
    if client is not None:
        _abandoned.append(client)
        client = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown():
    global client, cluster, address, token, trust, job_env_vars
    with _lock:
        job_env_vars = {}
        client = None  # the connection closes once nothing else holds it
        if cluster is not None:
            cl, cluster = cluster, None
            cl.stop()
        address = token = None
        trust = ("", "")


def _busy(status):
    """Unfinished tasks and actor calls, not counting live actors themselves (they never finish)."""
    live = sum(1 for a in status.get("actors", ()) if a.get("state") != "DEAD")
    return status.get("counters", {}).get("unfinished_tasks", 0) - live


def _at_exit():
    """At interpreter exit: give this driver's unfinished tasks up to $CORRAL_EXIT_GRACE_S (default
    2) seconds to end when the cluster is our own (it stops with us), let the output they printed
    reach this terminal, then disconnect. Tasks still running after that are stopped with the
    embedded cluster (on a cluster joined by address, they are cancelled when this driver leaves)."""
    c = client
    if c is None or worker_link is not None:
        return shutdown()
    try:
        if cluster is not None:
            deadline = time.monotonic() + float(os.environ.get("CORRAL_EXIT_GRACE_S", "2"))
            while _busy(c.status()) > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(0.05)  # lines printed just before a task ended may still be in its node's pipe
        c.status()        # a round trip: the head forwarded this driver's lines before its reply
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
    shutdown()


atexit.register(_at_exit)
