"""Just enough of Corral's wire format to send hand-made (and broken) frames in tests."""
import socket
import struct
import time


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def frame(*messages, version=1):
    payload = b"".join(struct.pack("<I", len(m)) + m for m in messages)
    return b"CR" + bytes([version, 0]) + struct.pack("<I", len(payload)) + payload


def client_hello(token, protocol_version=2, client_id=None, resume_secret=None):
    hello = field_varint(1, protocol_version) + field_bytes(2, "0.1.0") + field_bytes(5, token) + field_varint(6, 1)
    if client_id is not None:
        hello += field_bytes(8, client_id)
    if resume_secret is not None:
        hello += field_bytes(13, resume_secret)
    return field_bytes(1, hello)   # ClientToHead.hello


def agent_hello(token, node_id, protocol_version=2):
    """An agent's Hello registering node `node_id` (bytes) with only a token."""
    hello = (field_varint(1, protocol_version) + field_bytes(2, "0.1.0") + field_bytes(5, token) + field_varint(6, 2)
             + field_bytes(8, node_id) + field_bytes(9, field_bytes(1, node_id)))
    return field_bytes(1, hello)   # AgentToHead.hello


CLOSE_TIMEOUT_S = 8.0


def connect(address, timeout=10):
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)


def read_until_closed(sock, timeout=CLOSE_TIMEOUT_S, limit=1 << 20):
    """Everything the peer sends until it closes the connection (an orderly close or a reset).

    The peer must close within `timeout` seconds: a timeout is a failure, not a close."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the peer did not close the connection within {timeout}s "
                                 f"(it sent {len(data)} bytes: {data[:32]!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            continue  # the deadline check above fails
        if not chunk:
            return data
        data += chunk
        if len(data) > limit:
            raise AssertionError(f"the peer sent over {limit} bytes without closing")


def read_frame(sock, timeout=CLOSE_TIMEOUT_S):
    """One whole frame (header and payload) from the peer, within `timeout` seconds."""
    deadline = time.monotonic() + timeout

    def exactly(n):
        out = b""
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no whole frame within {timeout}s (got {out[:32]!r})")
            sock.settimeout(left)
            try:
                chunk = sock.recv(n - len(out))
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError(f"the peer closed the connection mid-frame (got {out[:32]!r})")
            out += chunk
        return out

    header = exactly(8)
    assert header[:2] == b"CR", header
    return header + exactly(struct.unpack("<I", header[4:8])[0])


def messages(frame):
    """The messages in one whole frame (as read_frame returns it)."""
    payload, out = frame[8:], []
    while payload:
        n = struct.unpack("<I", payload[:4])[0]
        out.append(payload[4:4 + n])
        payload = payload[4 + n:]
    return out


def handshake(address, token, timeout=CLOSE_TIMEOUT_S, **hello):
    """A fresh connection that sends a hand-made Hello; returns (socket, the Welcome's error text)."""
    s = connect(address, timeout=timeout)
    s.sendall(frame(client_hello(token, **hello)))
    return s, welcome_error(read_frame(s, timeout))


def welcome_error(reply):
    """The error text of the Welcome in the head's first frame ("" if accepted)."""
    assert reply[:2] == b"CR", reply[:16]
    msg_len = struct.unpack("<I", reply[8:12])[0]
    msg = reply[12:12 + msg_len]
    assert msg[0] == 0x0A  # HeadToClient.welcome
    welcome = _length_delimited(msg, 1)
    if not welcome or welcome[0] != 0x0A:
        return ""
    return _length_delimited(welcome, 1).decode()


def read_varint(buf, pos):
    """The varint at `pos` and the position after it."""
    n, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def _length_delimited(buf, pos):
    n, pos = read_varint(buf, pos)
    return buf[pos:pos + n]


def fields(buf):
    """A protobuf message's length-delimited fields: {number: [bytes, ...]} (varints skipped)."""
    out, pos = {}, 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        num, kind = key >> 3, key & 7
        if kind == 0:
            _, pos = read_varint(buf, pos)
        elif kind == 2:
            n, pos = read_varint(buf, pos)
            out.setdefault(num, []).append(buf[pos:pos + n])
            pos += n
        else:
            raise AssertionError(f"unexpected wire type {kind}")
    return out
