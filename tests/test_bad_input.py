"""Bad input at the head's port: each case closes that connection with a logged reason, and the
head keeps serving everyone else."""
import struct
import time

import pytest

import corral
import wire
from conftest import Cluster, wait_until


@pytest.fixture(scope="module")
def head():
    c = Cluster(head_args=("--handshake-timeout-ms", "500"))
    c.add_agent(num_cpus=1)
    c.connect()
    c.wait_nodes(1)
    yield c
    corral.shutdown()
    c.stop()


@corral.remote
def ping():
    return "pong"


def still_serving():
    assert corral.get(ping.remote(), timeout=30) == "pong"


def head_log(c):
    return open(c.head.log_path).read()


def test_garbage_bytes(head):
    s = wire.connect(head.address)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wire.read_until_closed(s) == b""
    wait_until(lambda: "bad frame magic" in head_log(head), what="the reason in the head's log")
    still_serving()


def test_oversized_frame(head):
    s = wire.connect(head.address)
    s.sendall(b"CR\x01\x00" + struct.pack("<I", 0xFFFFFFF0))
    assert wire.read_until_closed(s) == b""
    wait_until(lambda: "exceeds the limit" in head_log(head), what="the reason in the head's log")
    still_serving()


def test_wrong_protocol_version(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello(head.token, protocol_version=99)))
    error = wire.welcome_error(wire.read_until_closed(s))
    assert "protocol version 99" in error and "install the same Corral version" in error
    still_serving()


def test_bad_token(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello("not-the-token")))
    error = wire.welcome_error(wire.read_until_closed(s))
    assert "bad token" in error
    wait_until(lambda: "bad token" in head_log(head), what="the refusal in the head's log")
    with pytest.raises(corral.exceptions.AuthenticationError, match="bad token"):
        corral._core.Client.connect(head.address, "wrong", "test", "3.11.0", "3.0", False, 10.0)
    still_serving()


def test_good_token_is_accepted(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello(head.token)))
    s.settimeout(10)
    reply = s.recv(65536)
    assert wire.welcome_error(reply) == ""
    s.close()


def test_client_stops_mid_frame(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello(head.token))[:5])
    t = time.monotonic()
    assert wire.read_until_closed(s) == b""           # closed by the handshake deadline
    assert time.monotonic() - t < 20
    wait_until(lambda: "no handshake within 500 ms" in head_log(head), what="the reason in the head's log")
    still_serving()


def test_garbage_after_handshake(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello(head.token)))
    s.settimeout(10)
    assert wire.welcome_error(s.recv(65536)) == ""
    s.sendall(wire.frame(b"\xff\xff\xff\xff"))        # not a ClientToHead message
    assert wire.read_until_closed(s) == b""
    still_serving()


def test_many_bad_clients_at_once(head):
    socks = []
    for i in range(50):
        s = wire.connect(head.address)
        s.sendall([b"junk", wire.frame(wire.client_hello("bad")), b"CR\x09\x00\x00\x00\x00\x00"][i % 3])
        socks.append(s)
    for s in socks:
        wire.read_until_closed(s)
    still_serving()
