"""A head on a LAN address speaks TLS with a cluster CA it made; other machines verify it with the
CA file or its pinned fingerprint; plaintext from another machine gets a clear refusal; processes
on the head's own machine still come in over loopback. Real processes, the machine's own LAN address."""
import hashlib
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import textwrap

import psutil
import pytest

import wire
from conftest import wait_until
from corral import _cluster

BIN = _cluster.corral_binary()


def run(args, env, timeout=60):
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout)


def lan_address():
    """An IPv4 address of this machine that is not loopback (a dummy interface if it has none)."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                return a.address
    subprocess.run(["ip", "link", "add", "corral-lan0", "type", "dummy"], check=True)
    subprocess.run(["ip", "addr", "add", "198.18.7.1/32", "dev", "corral-lan0"], check=True)
    subprocess.run(["ip", "link", "set", "corral-lan0", "up"], check=True)
    return "198.18.7.1"


def environment(home):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS", "CORRAL_CA_CERT", "CORRAL_CA_FINGERPRINT")}
    env["CORRAL_HOME"] = str(home)
    env["CORRAL_PYTHON"] = sys.executable
    return env


def fingerprint(pem_path):
    der = ssl.PEM_cert_to_DER_cert(open(pem_path).read())
    return "sha256:" + hashlib.sha256(der).hexdigest()


class LanHead:
    def __init__(self, tmp_path, *flags):
        self.home = tmp_path / "head-machine"
        self.env = environment(self.home)
        self.lan = lan_address()
        out = run(["start", "--head", "--host", "0.0.0.0", "--port", "0", "--http-port", "0", "--num-cpus", "1",
                   *flags], self.env)
        assert out.returncode == 0, out.stderr
        self.banner = out.stdout
        self.join_token = re.search(r"--join-token (cj_\S+)", self.banner).group(1)
        self.state = self.home / "head"
        self.port = int(open(self.state / "address").read().strip().rsplit(":", 1)[1])
        self.token = open(self.state / "token").read().strip()
        self.address = f"{self.lan}:{self.port}"

    def machine(self, name, token=None):
        """The environment of a process on another machine: its own home, a token only."""
        env = environment(self.home.parent / name)
        env["CORRAL_TOKEN"] = token or self.token
        return env

    def join(self, name, *flags, token=None):
        """Starts an agent on machine `name` that joins with a join token (the printed one by default)."""
        env = environment(self.home.parent / name)
        return run(["start", "--address", self.address, "--join-token", token or self.join_token,
                    "--ca-fingerprint", fingerprint(self.state / "ca.crt"), "--num-cpus", "1",
                    "--python", sys.executable, *flags], env)

    def stop(self):
        run(["stop", "--timeout", "5"], self.env)


@pytest.fixture
def head(tmp_path):
    h = LanHead(tmp_path)
    yield h
    h.stop()


def test_first_start_makes_a_ca_and_prints_how_to_join(head):
    fp = fingerprint(head.state / "ca.crt")
    assert "TLS" in head.banner
    # The join line names a LAN address (not the wildcard), a join token and the CA's fingerprint.
    assert (f"corral start --address {head.address} --join-token {head.join_token} --ca-fingerprint {fp}"
            in head.banner), head.banner
    for secret in ("ca.key", "head.key", "token", "join-token"):
        assert stat.S_IMODE(os.stat(head.state / secret).st_mode) == 0o600, secret
    # The head's certificate chains to the CA and names the LAN address.
    ctx = ssl.create_default_context(cafile=str(head.state / "ca.crt"))
    with ctx.wrap_socket(wire.connect(head.address), server_hostname=head.lan) as s:
        assert s.getpeercert()["subjectAltName"]


def test_plaintext_from_another_machine_is_told_it_needs_tls(head):
    s, error = wire.handshake(head.address, head.token)  # the LAN address: not loopback to the head
    s.close()
    assert "accepts only TLS" in error and "--ca-fingerprint" in error, error
    log = open(head.state / "head.log").read()
    line = next(l for l in log.splitlines() if "plaintext connection from" in l)
    assert head.lan in line and "authentication failed" not in line  # not a fail2ban line


def test_this_machine_still_connects_over_loopback_without_tls(head):
    s, error = wire.handshake(f"127.0.0.1:{head.port}", head.token)
    s.close()
    assert error == ""
    out = run(["status"], head.env)  # the local CLI, through the address file (loopback)
    assert out.returncode == 0 and "alive" in out.stdout, out.stderr


def test_a_machine_without_the_ca_is_told_the_fingerprint_to_pin(head):
    out = run(["status", "--address", head.address], head.machine("laptop"))
    assert out.returncode != 0
    fp = fingerprint(head.state / "ca.crt")
    assert f"--ca-fingerprint {fp}" in out.stderr, out.stderr


def test_a_pinned_ca_is_used_again_and_a_machines_own_head_ca_is_not_forced_on_others(head, tmp_path):
    env = head.machine("laptop")
    fp = fingerprint(head.state / "ca.crt")
    out = run(["status", "--address", head.address, "--ca-fingerprint", fp], env)
    assert out.returncode == 0, out.stderr
    # Pinned once: later commands need no fingerprint.
    out = run(["status", "--address", head.address], env)
    assert out.returncode == 0, out.stderr
    assert f"Cluster at {head.address}" in out.stdout, out.stdout
    # A machine running a head of its own (another CA) reaching this head is told which CA this
    # head presents, not a bare verification failure against its own.
    other_env = environment(tmp_path / "other-head")
    other = run(["start", "--head", "--host", "127.0.0.1", "--port", "0", "--http-port", "-1", "--head-only"],
                other_env)
    assert other.returncode == 0, other.stderr
    try:
        other_env["CORRAL_TOKEN"] = head.token
        out = run(["status", "--address", head.address], other_env)
        assert out.returncode != 0
        assert f"--ca-fingerprint {fp}" in out.stderr, out.stderr
    finally:
        run(["stop", "--timeout", "5"], environment(tmp_path / "other-head"))


def test_a_wrong_pin_or_a_foreign_ca_is_refused(head, tmp_path):
    env = head.machine("laptop")
    out = run(["status", "--address", head.address, "--ca-fingerprint", "sha256:" + "00" * 32], env)
    assert out.returncode != 0 and "not the pinned" in out.stderr, out.stderr
    assert not (tmp_path / "laptop" / "known_cas").exists() or not os.listdir(tmp_path / "laptop" / "known_cas")
    other = run(["start", "--head", "--host", "127.0.0.1", "--port", "0", "--http-port", "-1", "--head-only"],
                environment(tmp_path / "other"))
    assert other.returncode == 0, other.stderr
    try:
        out = run(["status", "--address", head.address, "--ca-cert", str(tmp_path / "other" / "head" / "ca.crt")], env)
        assert out.returncode != 0 and "certificate verify failed" in out.stderr, out.stderr
    finally:
        run(["stop", "--timeout", "5"], environment(tmp_path / "other"))


def test_agent_and_driver_on_other_machines_run_tasks_over_tls(head, tmp_path):
    fp = fingerprint(head.state / "ca.crt")
    out = head.join("laptop", "--resources", "laptop=1")
    assert out.returncode == 0, out.stderr
    pinned = tmp_path / "laptop" / "known_cas" / (fp.split(":")[1] + ".crt")
    assert open(pinned).read() == open(head.state / "ca.crt").read()
    laptop_ca = tmp_path / "laptop" / "agent" / "head-ca.crt"  # kept with the node: restarts need no flag
    assert open(laptop_ca).read() == open(head.state / "ca.crt").read()
    try:
        # A driver on a third machine, with the CA file; its task runs on the laptop and submits a
        # nested task from there (the laptop's worker dials the head over TLS too).
        driver = textwrap.dedent(f"""
            import corral
            corral.init(address="{head.address}", ca_cert="{head.state / 'ca.crt'}")

            @corral.remote
            def double(x):
                return 2 * x

            @corral.remote(resources={{"laptop": 1}})
            def on_laptop(x):
                import os
                return os.environ["CORRAL_CA_CERT"], corral.get(double.remote(x))

            print(corral.get(on_laptop.remote(21), timeout=60))

            # An actor's calls go straight to the laptop's agent once it runs, in TLS keyed by
            # the caller's ticket (the first waits at the head for the constructor).
            @corral.remote(resources={{"laptop": 1}})
            class Counter:
                def __init__(self):
                    self.n = 0
                def incr(self):
                    self.n += 1
                    return self.n
            c = Counter.remote()
            print([corral.get(c.incr.remote()) for _ in range(3)],
                  all(n["call_address"] for n in corral.nodes()),
                  corral.cluster_status()["counters"].get("actor_calls_direct", 0))
            print(next(n["call_address"] for n in corral.nodes() if "laptop" in n["resources"]))
        """)
        p = subprocess.run([sys.executable, "-c", driver], env=head.machine("desk"), capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.strip().splitlines()
        assert lines[0] == repr((str(laptop_ca), 42))
        assert lines[1] == "[1, 2, 3] True 2", lines
        # Off loopback the call port takes TLS only: a caller in clear is told so.
        host, port = lines[2].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(wire.frame(wire.field_bytes(1, wire.field_varint(1, 2))))
            assert b"TLS only" in wire.read_until_closed(s)
    finally:
        run(["stop", "--timeout", "5"], head.machine("laptop"))


def test_insecure_is_gone_with_a_message(tmp_path):
    out = run(["start", "--head", "--host", "0.0.0.0", "--port", "0", "--insecure"], environment(tmp_path))
    assert out.returncode == 2 and "--insecure is gone" in out.stderr


def test_default_head_listens_on_loopback_only(tmp_path):
    env = environment(tmp_path / "home")
    out = run(["start", "--head", "--port", "0", "--http-port", "0", "--num-cpus", "1"], env)
    assert out.returncode == 0, out.stderr
    try:
        pid = int(open(tmp_path / "home" / "head" / "pid").read())
        ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
        mine = [l for l in ss.splitlines() if f"pid={pid}," in l]
        # The transport, the REST API, and its agent's object port and actor call port.
        assert len(mine) == 4, ss
        for line in mine:
            local = line.split()[3]
            assert re.match(r"^(127\.0\.0\.1|\[::1\]):\d+$", local), line
    finally:
        run(["stop", "--timeout", "5"], env)


def test_the_rest_api_off_loopback_speaks_https_with_the_cluster_ca(tmp_path):
    import http.client
    h = LanHead(tmp_path, "--http-host", "0.0.0.0")
    try:
        url = open(h.state / "http_url").read().strip()
        port = int(url.split("//")[1].split("/")[0].rsplit(":", 1)[1])
        assert url.startswith("https://"), url
        assert "https://" in h.banner
        ctx = ssl.create_default_context(cafile=str(h.state / "ca.crt"))

        def get(token, context=ctx):
            conn = http.client.HTTPSConnection(h.lan, port, timeout=10, context=context)
            headers = {"Authorization": f"Bearer {token}", "Host": h.lan} if token else {"Host": h.lan}
            conn.request("GET", "/api/v1/nodes", headers=headers)
            r = conn.getresponse()
            conn.close()
            return r.status, r

        assert get(h.token)[0] == 200
        assert get(None)[0] == 401
        # Plain HTTP gets no answer; a client that does not trust the CA does not get in.
        conn = http.client.HTTPConnection(h.lan, port, timeout=10)
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("GET", "/api/v1/nodes", headers={"Authorization": f"Bearer {h.token}"})
            conn.getresponse()
        with pytest.raises(ssl.SSLCertVerificationError):
            get(h.token, ssl.create_default_context())
        # A rotated head certificate is what new HTTPS connections get.
        assert run(["certs", "rotate"], h.env).returncode == 0
        with ctx.wrap_socket(wire.connect(f"{h.lan}:{port}"), server_hostname=h.lan) as s:
            served = s.getpeercert(binary_form=True)
        leaf = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n",
                         open(h.state / "head.crt").read(), re.S).group(0)  # the chain's first: the head's own
        current = ssl.PEM_cert_to_DER_cert(leaf)
        assert served == current
    finally:
        h.stop()
