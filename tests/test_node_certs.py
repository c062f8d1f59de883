"""Nodes join with a join token and get their own certificate, signed by the cluster CA; from then on
the certificate is the node's credential (mutual TLS), bound to its node id. Join tokens are
single-use unless made with a time to live; a revoked node's certificate stops working; the head's
certificate rotates without a restart; nodes renew theirs before they end. Real processes over the
machine's LAN address (see test_tls.py)."""
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import time

import pytest

import wire
from conftest import wait_until
from test_tls import LanHead, environment, fingerprint, run


@pytest.fixture
def head(tmp_path):
    h = LanHead(tmp_path)
    yield h
    h.stop()


def agent_dir(head, machine):
    return head.home.parent / machine / "agent"


def node_hex(head, machine):
    return open(agent_dir(head, machine) / "node_id").read().strip()


def alive_nodes(head):
    out = run(["status"], head.env)
    assert out.returncode == 0, out.stderr
    return out.stdout.count(" alive")


def stop_machine(head, machine):
    run(["stop", "--timeout", "5"], environment(head.home.parent / machine))


def start_again(head, machine):
    """Starts the machine's agent again with neither join token nor fingerprint (a restart)."""
    return run(["start", "--address", head.address, "--num-cpus", "1", "--python", sys.executable],
               environment(head.home.parent / machine))


def restart_head(head):
    """Stops the head and starts it again on the same port and state dir."""
    head.stop()
    again = run(["start", "--head", "--host", "0.0.0.0", "--port", str(head.port), "--http-port", "0",
                 "--num-cpus", "1"], head.env)
    assert again.returncode == 0, again.stderr


def head_log(head):
    return open(head.state / "head.log").read()


def serial_of(pem_text):
    """The serial number of the first certificate in `pem_text`, through the ssl module."""
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem_text, re.S).group(0)
    path = "/tmp/corral-test-cert-%d.pem" % os.getpid()
    with open(path, "w") as f:
        f.write(pem)
    try:
        return ssl._ssl._test_decode_cert(path)["serialNumber"]
    finally:
        os.unlink(path)


def test_a_node_joins_once_then_comes_back_with_its_certificate(head):
    out = head.join("laptop")
    assert out.returncode == 0, out.stderr
    try:
        pem = agent_dir(head, "laptop") / "node.pem"
        assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
        assert not (agent_dir(head, "laptop") / "node.key.pending").exists()  # kept only until the answer
        assert f"corral-node-{node_hex(head, 'laptop')}" in subprocess.run(
            ["openssl", "x509", "-noout", "-subject"], input=open(pem).read(), capture_output=True,
            text=True).stdout
        assert wait_until(lambda: alive_nodes(head) == 2, timeout=20)
        assert re.search(r"node \w+ joined with token 'join'", head_log(head))
        # The printed join token was for one machine.
        again = head.join("desk")
        assert again.returncode != 0
        assert "bad token" in again.stderr + again.stdout, again.stderr
        # A restart needs neither the join token nor the fingerprint: the certificate and the CA
        # are kept with the node.
        stop_machine(head, "laptop")
        assert wait_until(lambda: alive_nodes(head) == 1, timeout=20)
        back = start_again(head, "laptop")
        assert back.returncode == 0, back.stderr
        assert wait_until(lambda: alive_nodes(head) == 2, timeout=20)
    finally:
        stop_machine(head, "laptop")


def test_a_join_token_with_a_ttl_joins_several_and_is_no_client_token(head):
    made = run(["token", "create", "--role", "join", "--ttl", "1h", "--name", "rack"], head.env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("cj_")
    assert f"corral start --address {head.address} --join-token {token} --ca-fingerprint" in made.stderr, made.stderr
    try:
        for machine in ("a", "b"):
            out = head.join(machine, token=token)
            assert out.returncode == 0, out.stderr
        assert wait_until(lambda: alive_nodes(head) == 3, timeout=20)
        listed = run(["token", "list"], head.env).stdout
        assert re.search(r"^rack\s+join\s", listed, re.M), listed
        # It joins nodes and does nothing else.
        env = head.machine("desk", token=token)
        out = run(["status", "--address", head.address, "--ca-fingerprint", fingerprint(head.state / "ca.crt")], env)
        assert out.returncode != 0 and "is a join token" in out.stderr, out.stderr
    finally:
        for machine in ("a", "b"):
            stop_machine(head, machine)


def test_a_node_id_is_bound_to_its_certificate(head, tmp_path):
    out = head.join("laptop")
    assert out.returncode == 0, out.stderr
    try:
        made = run(["token", "create", "--role", "join", "--ttl", "1h", "--name", "more"], head.env)
        token = made.stdout.strip()
        # Another machine claiming the laptop's node id with a join token of its own.
        thief = agent_dir(head, "thief")
        thief.mkdir(parents=True, mode=0o700)
        shutil.copy(agent_dir(head, "laptop") / "node_id", thief / "node_id")
        out = head.join("thief", token=token)
        assert out.returncode != 0
        assert "already known to this cluster" in out.stderr + out.stdout, out.stderr
        # The laptop's certificate under another node id.
        other = agent_dir(head, "other")
        other.mkdir(parents=True, mode=0o700)
        shutil.copy(agent_dir(head, "laptop") / "node.pem", other / "node.pem")
        shutil.copy(agent_dir(head, "laptop") / "head-ca.crt", other / "head-ca.crt")
        out = start_again(head, "other")
        assert out.returncode != 0
        assert "this node certificate is for node" in out.stderr + out.stdout, out.stderr
        # Even the admin token, from the head's own machine without TLS, cannot register it.
        s = wire.connect(f"127.0.0.1:{head.port}")
        s.sendall(wire.frame(wire.agent_hello(head.token, bytes.fromhex(node_hex(head, "laptop")))))
        error = wire.welcome_error(wire.read_frame(s))
        s.close()
        assert "joined with a certificate and must present it" in error, error
        assert alive_nodes(head) == 2  # the laptop itself is untouched
    finally:
        stop_machine(head, "laptop")


def test_an_id_registered_over_loopback_stays_bound_after_a_head_restart(head):
    # An agent on the head's machine registers with a token (no TLS over loopback); its id must not
    # be free for another machine to join under once the head restarted and forgot who was online.
    local_env = environment(head.home / "second")
    local_env["CORRAL_TOKEN"] = head.token
    out = run(["start", "--address", f"127.0.0.1:{head.port}", "--state-dir", str(head.home / "second" / "agent"),
               "--num-cpus", "1", "--python", sys.executable], local_env)
    assert out.returncode == 0, out.stderr
    taken = open(head.home / "second" / "agent" / "node_id").read().strip()
    run(["stop", "--timeout", "5"], local_env)
    restart_head(head)
    made = run(["token", "create", "--role", "join", "--name", "intruder"], head.env)
    thief = agent_dir(head, "thief")
    thief.mkdir(parents=True, mode=0o700)
    (thief / "node_id").write_text(taken + "\n")
    out = head.join("thief", token=made.stdout.strip())
    assert out.returncode != 0
    assert "already known to this cluster" in out.stderr + out.stdout, out.stderr


def test_a_revoked_node_is_refused_and_its_tasks_run_elsewhere(head):
    out = head.join("laptop", "--resources", "laptop=1")
    assert out.returncode == 0, out.stderr
    try:
        assert wait_until(lambda: alive_nodes(head) == 2, timeout=20)
        pid = int(open(agent_dir(head, "laptop") / "pid").read())
        out = run(["node", "revoke", node_hex(head, "laptop")[:8]], head.env)
        assert out.returncode == 0, out.stderr
        # Its connection is closed; coming back with its certificate is refused, so it stops.
        assert wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
                          open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=30)
        log = open(agent_dir(head, "laptop") / "agent.log").read()
        assert "was revoked by the operator" in log, log[-2000:]
    finally:
        stop_machine(head, "laptop")


def test_an_offline_node_can_be_revoked_after_a_head_restart(head):
    out = head.join("laptop")
    assert out.returncode == 0, out.stderr
    hex_id = node_hex(head, "laptop")
    stop_machine(head, "laptop")  # the laptop is away (lost)
    restart_head(head)
    # The head has not seen the laptop since it started: it still knows the id it joined under.
    out = run(["node", "revoke", hex_id[:8]], head.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert hex_id[:8] in out.stdout
    back = start_again(head, "laptop")
    assert back.returncode != 0
    assert "was revoked by the operator" in back.stderr + back.stdout + open(
        agent_dir(head, "laptop") / "agent.log").read()


def test_certs_rotate_gives_the_head_a_new_certificate_without_a_restart(head):
    out = head.join("laptop")
    assert out.returncode == 0, out.stderr
    try:
        before = run(["certs", "status"], head.env)
        assert before.returncode == 0, before.stderr
        assert fingerprint(head.state / "ca.crt") in before.stdout
        old = serial_of(open(head.state / "head.crt").read())
        rotated = run(["certs", "rotate"], head.env)
        assert rotated.returncode == 0, rotated.stderr
        new = serial_of(open(head.state / "head.crt").read())
        assert new != old
        assert re.search(r"serial 0*" + new.lstrip("0"), rotated.stdout, re.I), rotated.stdout
        # A new connection gets the new certificate, verified with the unchanged CA.
        ctx = ssl.create_default_context(cafile=str(head.state / "ca.crt"))
        with ctx.wrap_socket(wire.connect(head.address), server_hostname=head.lan) as s:
            assert s.getpeercert()["serialNumber"] == new
        # The node stayed, and comes back after a restart of its own.
        assert alive_nodes(head) == 2
        stop_machine(head, "laptop")
        back = start_again(head, "laptop")
        assert back.returncode == 0, back.stderr
        assert wait_until(lambda: alive_nodes(head) == 2, timeout=20)
    finally:
        stop_machine(head, "laptop")


def test_a_node_renews_its_certificate_before_it_ends(tmp_path):
    head = LanHead(tmp_path, "--node-cert-validity", "60s")
    try:
        out = head.join("laptop")
        assert out.returncode == 0, out.stderr
        pem = agent_dir(head, "laptop") / "node.pem"
        first = serial_of(open(pem).read())
        # A third of 60 s left: after about 40 s it asks for a new one over its connection.
        assert wait_until(lambda: serial_of(open(pem).read()) != first, timeout=70)
        assert "certificate renewed" in head_log(head)
        assert alive_nodes(head) == 2
    finally:
        stop_machine(head, "laptop")
        head.stop()


def _join(head, node_id, request_pem, token):
    """Sends an agent's Hello with a certificate request over TLS; returns (error, certificate)."""
    hello = (wire.field_varint(1, 2) + wire.field_bytes(2, "0.1.0") + (wire.field_bytes(5, token) if token else b"")
             + wire.field_varint(6, 2) + wire.field_bytes(8, node_id) + wire.field_bytes(9, wire.field_bytes(1, node_id))
             + wire.field_bytes(14, request_pem))
    ctx = ssl.create_default_context(cafile=str(head.state / "ca.crt"))
    with ctx.wrap_socket(wire.connect(head.address), server_hostname=head.lan) as s:
        s.sendall(wire.frame(wire.field_bytes(1, hello)))
        reply = wire.read_frame(s)
    msg = reply[12:12 + int.from_bytes(reply[8:12], "little")]
    welcome = wire.fields(wire.fields(msg)[1][0])
    return (welcome.get(1, [b""])[0].decode(), welcome.get(9, [b""])[0].decode())


def _request(tmp_path, name):
    key, req = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-subj", "/CN=corral node", "-out", str(req)], check=True,
                   capture_output=True)
    return req.read_text()


def test_a_node_whose_certificate_was_lost_on_the_way_asks_again_with_the_same_key(head, tmp_path):
    # The join is recorded and its single-use token spent before the Welcome leaves; if that Welcome
    # is lost, the node asks again for the same key (kept in node.key.pending) and gets its certificate.
    token = run(["token", "create", "--role", "join", "--name", "once"], head.env).stdout.strip()
    node_id = os.urandom(8)
    first_request = _request(tmp_path, "first")
    error, cert = _join(head, node_id, first_request, token)
    assert error == "" and "BEGIN CERTIFICATE" in cert, error
    error, again = _join(head, node_id, first_request, None)  # no token: the key is the credential
    assert error == "" and "BEGIN CERTIFICATE" in again, error
    # Another key under that id gets nothing: not without a token, nor with a fresh one.
    other = _request(tmp_path, "other")
    error, cert = _join(head, node_id, other, None)
    assert "bad token" in error and cert == "", error
    fresh = run(["token", "create", "--role", "join", "--name", "fresh"], head.env).stdout.strip()
    error, cert = _join(head, node_id, other, fresh)
    assert "already known to this cluster" in error and cert == "", error
