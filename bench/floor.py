"""Physical floors measured in the same run, so every figure can be read as a multiple of them:
loopback TCP round trip of 64 bytes between two processes (TCP_NODELAY), loopback TCP bandwidth,
memcpy bandwidth between pre-faulted buffers, one copy of 100 MB into fresh memory, and writing
1 GiB into new pages of the memory file system the object store lives on."""
import multiprocessing
import os
import socket
import time


def _echo(port_queue):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_queue.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(1 << 20)
        if not data:
            return
        if len(data) <= 64:
            conn.sendall(data)


def _peer():
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_echo, args=(q,), daemon=True)
    p.start()
    s = socket.create_connection(("127.0.0.1", q.get()))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return p, s


def tcp_rtt_us(count=1000):
    """Median round trip of 64 bytes, µs, after 100 warm-ups."""
    p, s = _peer()
    msg = b"x" * 64
    samples = []
    for i in range(count + 100):
        t = time.perf_counter()
        s.sendall(msg)
        got = 0
        while got < 64:
            got += len(s.recv(64 - got))
        if i >= 100:
            samples.append((time.perf_counter() - t) * 1e6)
    s.close()
    p.join(5)
    samples.sort()
    return samples[len(samples) // 2]


def tcp_bandwidth_gbs(total=1 << 30):
    """GB/s streaming `total` bytes over loopback to a process that discards them."""
    p, s = _peer()
    chunk = b"\0" * (1 << 20)
    t = time.perf_counter()
    sent = 0
    while sent < total:
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    p.join(30)
    return total / 1e9 / (time.perf_counter() - t)


def copy_fresh_s(nbytes=100_000_000):
    """Seconds for `a.copy()` of an nbytes float64 array: one copy into memory the process has not
    touched yet (page faults included), what a value must pay at least to cross into new memory."""
    import numpy as np
    a = np.ones(nbytes // 8)
    t = time.perf_counter()
    b = a.copy()
    took = time.perf_counter() - t
    del b
    return took


def memcpy_gbs(total=1 << 30):
    """GB/s copying between two pre-faulted buffers (fresh memory is far slower on this VM)."""
    import numpy as np
    a = np.ones(total, dtype=np.uint8)
    b = np.zeros(total, dtype=np.uint8)
    np.copyto(b, a)
    t = time.perf_counter()
    np.copyto(b, a)
    return total / 1e9 / (time.perf_counter() - t)


def shm_write_gbs(total=1 << 30, directory="/dev/shm"):
    """GB/s writing `total` bytes (32 MiB writes) into a new file of a memory file system: what
    landing that many bytes in a node's store costs at least when no freed pages are at hand (the
    kernel allocates and zeroes every page), whoever sends them."""
    import numpy as np
    chunk = np.ones(min(total, 32 << 20), dtype=np.uint8)
    path = os.path.join(directory if os.access(directory, os.W_OK) else "/tmp", f"corral-floor-{os.getpid()}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        t = time.perf_counter()
        for _ in range(total // chunk.nbytes):
            os.write(fd, chunk)
        took = time.perf_counter() - t
    finally:
        os.close(fd)
        os.unlink(path)
    return total / 1e9 / took
