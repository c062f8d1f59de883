"""Just enough of Corral's wire format to send hand-made (and broken) frames in tests."""
import socket
import struct


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


def client_hello(token, protocol_version=1):
    hello = field_varint(1, protocol_version) + field_bytes(2, "0.1.0") + field_bytes(5, token) + field_varint(6, 1)
    return field_bytes(1, hello)   # ClientToHead.hello


def connect(address):
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def read_until_closed(sock, limit=1 << 20):
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


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


def _length_delimited(buf, pos):
    n, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return buf[pos:pos + n]
