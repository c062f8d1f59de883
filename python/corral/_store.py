"""Large values in a node's shared-memory object store.

A value whose pickle (with its out-of-band buffers: numpy arrays, pandas frames, bytes, Arrow and
torch CPU buffers, by pickle protocol 5) reaches ``THRESHOLD`` bytes is not sent to the head. The
process that made it writes it once into its node's store, a directory on a memory file system
(``/dev/shm/corral-<node>``), as one file named ``<hex id>-<attempt>``; the head learns only its size
and node. A reader on that node maps the file read-only and unpickles with its buffers pointing
into the mapping: a numpy array read back is a read-only view of the store, not a copy. A reader on
another node asks the head for a copy on its own node: its agent pulls the value from a holder's
agent (agent to agent, TLS with the cluster's key; the head only says who holds it) into the
node's store, once for every reader there, and the reader maps that copy. A driver on a machine
without an agent (or on a node whose store has no room) fetches the bytes part by part instead,
read by a holder and relayed by the head, into its own memory; each part carries the CRC-32
computed where it was read, checked here. A value spilled to disk (the store was full) is mapped
from the node's spill directory instead.

The agent deletes the file once nothing references the value, or, when no process has it open or
mapped, keeps it for reuse in the store's ``.free`` directory (as ``<size>-<name>``, up to a share
of the store): a writer takes such
a file and writes over its pages, about twice as fast as into new ones, which tmpfs must allocate
and zero. A reader that still maps it keeps
its pages (the kernel frees them with the last mapping), so a dropped reference never pulls memory
from under an array in use.

File layout (little-endian)::

    b"CORRALV1" | u32 buffer count | u32 0 | u64 pickle length | (u64 offset, u64 length) per buffer
    | pickle | each buffer at a 64-byte aligned offset
"""
import mmap
import os
import pickle
import struct
import time
import zlib

from . import _core, exceptions

THRESHOLD = 100 * 1024  # values smaller than this travel inline, in the message
_MAGIC = b"CORRALV1"
_HEAD = struct.Struct("<8sIIQ")
_SPAN = struct.Struct("<QQ")
_ALIGN = 64
_CHUNK = 8 << 20   # one fetch from another node (the agent's largest read)
_WINDOW = 4        # fetches in flight


class Local:
    """This process's node store: its directory, where spilled values are, and the node's id (bytes)."""
    __slots__ = ("dir", "spill_dir", "node")

    def __init__(self, directory, spill_dir, node):
        self.dir, self.spill_dir, self.node = directory, spill_dir, node


_local = [None, False]  # (Local or None, looked for)


def local():
    """The store of the node this process runs on, or None (a machine without an agent, another
    user's agent, or a store this process cannot write)."""
    if not _local[1]:
        _local[0] = _find_local()
        _local[1] = True
    return _local[0]


def reset():
    """Forget the store found (a new connection: maybe another cluster)."""
    _local[0], _local[1] = None, False


def _find_local():
    d, node = os.environ.get("CORRAL_OBJECT_DIR"), os.environ.get("CORRAL_NODE_ID")
    if d and node and _owns(d, node):  # a worker: its agent's store
        return Local(d, os.environ.get("CORRAL_SPILL_DIR", ""), bytes.fromhex(node))
    from . import _runtime
    client = _runtime.client
    if client is None:
        return None
    try:
        nodes = client.nodes()
    except Exception:
        return None
    for n in nodes:
        store = n.get("object_store") or {}
        if n.get("state") == "alive" and store.get("dir") and _owns(store["dir"], n["node_id"]):
            return Local(store["dir"], store.get("spill_dir", ""), bytes.fromhex(n["node_id"]))
    return None


def _owns(directory, node_hex):
    """Whether `directory` is node `node_hex`'s store on this machine, and ours to write."""
    try:
        with open(os.path.join(directory, ".node")) as f:
            marked = f.read().strip()
        return marked == node_hex and os.access(directory, os.W_OK | os.X_OK)
    except OSError:
        return False


def _name(object_id, attempt):
    """A value's file name in a store (as the agent's NodeStore::FileName makes it)."""
    return f"{object_id.hex()}-{attempt}"


def _layout(pickled, buffers):
    """(header bytes, [(offset, length)] of the buffers, total size)."""
    n = len(buffers)
    pos = _HEAD.size + n * _SPAN.size + len(pickled)
    spans = []
    for b in buffers:
        pos = -(-pos // _ALIGN) * _ALIGN
        spans.append((pos, b.nbytes))
        pos += b.nbytes
    header = _HEAD.pack(_MAGIC, n, 0, len(pickled)) + b"".join(_SPAN.pack(o, ln) for o, ln in spans)
    return header, spans, pos


def write(store, object_id, attempt, pickled, buffers):
    """Writes the value into `store` under (object_id, attempt); returns its size in bytes."""
    header, spans, total = _layout(pickled, buffers)
    final = os.path.join(store.dir, _name(object_id, attempt))
    tmp = f"{final}.tmp.{os.getpid()}"
    reuse = False
    try:
        if _core.take_pooled(store.dir, total, tmp):  # over a freed file's pages (NodeStore::TakePooled)
            fd = os.open(tmp, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            reuse = os.fstat(fd).st_size >= total
            os.ftruncate(fd, total)  # (a larger file gives back its tail)
        else:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise exceptions.ObjectStoreFullError(
            f"cannot write a {total}-byte value into the object store {store.dir}: {e}") from e
    try:
        parts = [header, pickled]
        pos = len(header) + len(pickled)
        for (offset, _), buf in zip(spans, buffers):
            if offset > pos:
                parts.append(bytes(offset - pos))
            parts.append(buf)
            pos = offset + buf.nbytes
        _core.write_value(fd, parts, reuse)
        os.rename(tmp, final)
    except (OSError, RuntimeError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise exceptions.ObjectStoreFullError(
            f"cannot write a {total}-byte value into the object store {store.dir}: {e}. The memory file "
            f"system holding it is full: free values (drop their refs) or give the node more room "
            f"(corral start --object-store-memory, a bigger /dev/shm)") from e
    finally:
        os.close(fd)
    return total


def _load(view):
    """Unpickles a stored value held by `view` (a read-only memoryview of the whole file)."""
    magic, n, _, plen = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise exceptions.ObjectLostError("a stored value has an unknown format (another Corral version?)")
    at = _HEAD.size
    buffers = []
    for i in range(n):
        offset, length = _SPAN.unpack_from(view, at + i * _SPAN.size)
        buffers.append(view[offset:offset + length])
    start = at + n * _SPAN.size
    return pickle.loads(view[start:start + plen], buffers=buffers)


_REBUILD_WAIT_S = 300.0  # how long a reader waits for a lost value's task to run again


def read(object_id, size, locations, attempt, client, _rebuilt=False):
    """The value of a stored object: mapped from this node's store, or copied here from another node."""
    store = local()
    if store is not None and store.node in locations:
        view = _map_local(store, object_id, attempt, size)
        if view is not None:
            return _load(view)
    try:
        view = _copy_here(client, object_id, size, attempt, store, locations)
    except exceptions.ObjectLostError:
        with _blocked():  # a task waiting here gives its CPUs back: the rebuild may need them
            return _after_failed_fetch(object_id, size, locations, attempt, client, store, _rebuilt)
    return _load(view)


def _map_local(store, object_id, attempt, size):
    """A read-only view of the value's file in this node's store, or None if it is not there."""
    fd = _open_local(store, _name(object_id, attempt))
    if fd is None:
        return None
    try:
        return memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))
    finally:
        os.close(fd)


def _copy_here(client, object_id, size, attempt, store, locations):
    """A view of the value's bytes, from a node that holds them: pulled into this node's store by
    its agent and mapped, or (no store here, or no room in it) relayed by the head into this process.
    Raises ObjectLostError when no holder could be read.

    When the head lists this node as a holder but the file is not here (its agent restarted and
    emptied the store), the relay asks a holder for it: a node that answers it has no such value
    loses that copy in the head's tables (the last one makes the value lost, and rebuilt)."""
    if store is not None and store.node not in locations:
        # The pull runs at network speed: allow for a slow link (10 MB/s) before giving up.
        kind, why = client.pull_to_node(object_id, store.node, 60.0 + size / 10e6)
        if kind == "ok":
            view = _map_local(store, object_id, attempt, size)
            if view is not None:
                return view
            kind, why = "lost", "it was deleted here as soon as it was copied"
        if kind == "lost":
            raise exceptions.ObjectLostError(f"object {object_id.hex()} ({size} bytes): {why}")
    return memoryview(fetch(client, object_id, size)).toreadonly()


class _blocked:
    """In a worker, tells the agent the running task waits (its CPUs are given back meanwhile)."""

    def __enter__(self):
        from . import _runtime
        ctx, link = _runtime.current_task, _runtime.worker_link
        self.task = ctx.task_id if ctx is not None and link is not None else None
        if self.task is not None:
            link.blocked(self.task, True)

    def __exit__(self, *exc):
        if self.task is not None:
            from . import _runtime
            _runtime.worker_link.blocked(self.task, False)


def _after_failed_fetch(object_id, size, locations, attempt, client, store, rebuilt):
    """Its holder went away mid-way or before. Asks the head again, until it knows another copy, has
    rebuilt the value (its task runs again once the holder is declared dead), or gave up on it (an
    error); a holder that is only disconnected may come back, so the fetch is tried again meanwhile."""
    deadline, delay, last = time.monotonic() + _REBUILD_WAIT_S, 0.2, None
    while True:
        entry = client.get([object_id], max(0.0, deadline - time.monotonic()))[0]
        if entry[1] != 0:
            raise exceptions.for_kind(entry[1])(entry[2]) from None
        if (entry[3], entry[4], entry[5]) != (size, locations, attempt) and not rebuilt:
            return read(object_id, entry[3], entry[4], entry[5], client, _rebuilt=True)
        if time.monotonic() + delay > deadline:
            raise exceptions.ObjectLostError(
                f"object {object_id.hex()} ({size} bytes): no node that holds it answered for {_REBUILD_WAIT_S:.0f}s"
                + (f"; the last attempt: {last}" if last else ""))
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
        try:
            return _load(_copy_here(client, object_id, size, attempt, store, locations))
        except exceptions.ObjectLostError as e:
            last = str(e)


def _open_local(store, name):
    """A descriptor of the value's file: in memory, else spilled to disk (it is complete there before
    it leaves memory, so one of the two is found); None if it is in neither (deleted meanwhile)."""
    for d in (store.dir, store.spill_dir):
        if d:
            try:
                return os.open(os.path.join(d, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
    return None


def fetch(client, object_id, size):
    """The bytes of a stored object from a node that holds them, relayed by the head part by part,
    into this process's memory: private anonymous memory, page-aligned (buffers keep their
    alignment), counted against a task's memory= request."""
    buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = memoryview(buf)

    def put(offset, chunk):
        view[offset:offset + len(chunk)] = chunk
    _fetch_parts(client, object_id, size, put)
    return view[:size]


def _fetch_parts(client, object_id, size, write):
    """Fetches every part (4 at a time), checks each one's CRC-32 and hands it to write(offset, bytes).
    A part that fails is asked for again (the head picks a node that holds a copy), twice."""
    import concurrent.futures

    def one(offset):
        want = min(_CHUNK, size - offset)
        for tries in range(3):
            try:
                chunk, total, crc = client.fetch(object_id, offset, want)
                problem = None
                if total != size or len(chunk) != want:
                    problem = f"its node sent {len(chunk)} bytes at offset {offset} of {total}, expected {size}"
                elif zlib.crc32(chunk) != crc:
                    problem = f"the part at offset {offset} arrived damaged (checksum mismatch)"
            except Exception as e:
                problem = f"it could not be read from a node that holds it: {e}"
            if problem is None:
                write(offset, chunk)
                return
        raise exceptions.ObjectLostError(f"object {object_id.hex()} ({size} bytes): {problem}")

    with concurrent.futures.ThreadPoolExecutor(_WINDOW) as pool:
        for f in [pool.submit(one, o) for o in range(0, size, _CHUNK)]:
            f.result()


def split(value, what):
    """Pickles `value` with out-of-band buffers: (pickle bytes, [PickleBuffer], total bytes)."""
    buffers = []
    pickled = _dumps(value, buffers.append, what)
    raws = []
    for b in buffers:
        try:
            raws.append(b.raw())
        except BufferError:  # not contiguous: in-band after all
            return _dumps(value, None, what), [], 0
    return pickled, raws, len(pickled) + sum(r.nbytes for r in raws)


def _dumps(value, callback, what):
    import cloudpickle
    from .serialization import BY_MAIN
    try:
        if callback is not None:
            buffers = []
            try:
                data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
            except Exception:
                data = None
            if data is not None and data.find(BY_MAIN) < 0:
                for b in buffers:
                    callback(b)
                return data
            return cloudpickle.dumps(value, protocol=5, buffer_callback=callback)
        try:
            data = pickle.dumps(value, protocol=5)
        except Exception:
            data = None
        return data if data is not None and data.find(BY_MAIN) < 0 else cloudpickle.dumps(value, protocol=5)
    except Exception as e:
        raise exceptions.SerializationError(f"{what} cannot be pickled: {type(e).__name__}: {e}") from e


