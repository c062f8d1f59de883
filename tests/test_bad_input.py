"""Bad input at the head's port: each case closes that connection with a logged reason, and the
head keeps serving everyone else. Every read of a connection the head should close fails if it is
still open after wire.CLOSE_TIMEOUT_S; "still serving" is a fresh hand-made handshake."""
import struct

import pytest

import corral
import wire
from conftest import Cluster, wait_until


@pytest.fixture(scope="module")
def head():
    c = Cluster(head_args=("--handshake-timeout-ms", "500"))
    yield c
    c.stop()


def still_serving(head):
    """A new connection with a good Hello gets a Welcome without error (no reconnecting driver)."""
    s, error = wire.handshake(head.address, head.token)
    s.close()
    assert error == "", error


def head_log(c):
    return open(c.head.log_path).read()


def test_garbage_bytes(head):
    s = wire.connect(head.address)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wire.read_until_closed(s) == b""
    wait_until(lambda: "bad frame magic" in head_log(head), what="the reason in the head's log")
    still_serving(head)


def test_oversized_frame(head):
    s = wire.connect(head.address)
    s.sendall(b"CR\x01\x00" + struct.pack("<I", 0xFFFFFFF0))
    assert wire.read_until_closed(s) == b""
    wait_until(lambda: "exceeds the limit" in head_log(head), what="the reason in the head's log")
    still_serving(head)


def test_wrong_protocol_version(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello(head.token, protocol_version=99)))
    error = wire.welcome_error(wire.read_until_closed(s))
    assert "protocol version 99" in error and "install the same Corral version" in error
    still_serving(head)


def test_bad_token(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello("not-the-token")))
    error = wire.welcome_error(wire.read_until_closed(s))
    assert "bad token" in error
    wait_until(lambda: "bad token" in head_log(head), what="the refusal in the head's log")
    with pytest.raises(corral.exceptions.AuthenticationError, match="bad token"):
        corral._core.Client.connect(head.address, "wrong", "test", "3.11.0", "3.0", False, 10.0)
    still_serving(head)


def test_good_token_is_accepted(head):
    s, error = wire.handshake(head.address, head.token)
    assert error == ""
    s.close()


def test_client_stops_mid_frame(head):
    s = wire.connect(head.address)
    s.sendall(wire.frame(wire.client_hello(head.token))[:5])
    assert wire.read_until_closed(s, timeout=5) == b""           # closed by the handshake deadline (500 ms)
    wait_until(lambda: "no handshake within 500 ms" in head_log(head), what="the reason in the head's log")
    still_serving(head)


def test_garbage_after_handshake(head):
    s, error = wire.handshake(head.address, head.token)
    assert error == ""
    s.sendall(wire.frame(b"\xff\xff\xff\xff"))        # not a ClientToHead message
    assert wire.read_until_closed(s) == b"", "the head closes the connection, sending nothing more"
    still_serving(head)


def test_many_bad_clients_at_once(head):
    kinds = [b"junk", wire.frame(wire.client_hello("bad")), b"CR\x09\x00\x00\x00\x00\x00"]
    socks = []
    for i in range(50):
        s = wire.connect(head.address)
        s.sendall(kinds[i % 3])
        socks.append(s)
    for i, s in enumerate(socks):
        reply = wire.read_until_closed(s)   # fails unless the head closed this connection
        s.close()
        if i % 3 == 1:
            assert "bad token" in wire.welcome_error(reply), (i, reply[:64])
        else:
            assert reply == b"", (i, reply[:64])
    still_serving(head)
