"""What an operator looks at from a terminal and over HTTP, on a real cluster: `corral logs TASK_ID
[--follow]` (a task's output from its node's log files, by id), `corral top`, and the dashboard's
sessions at the HTTP level (cookie flags, CSRF, logout, revocation, the live event stream)."""
import http.client
import json
import os
import re
import subprocess
import threading
import time

import pytest

import corral
from conftest import Cluster, corral_cli, make_token, wait_until


def corral_bin():
    from corral import _cluster
    return _cluster.corral_binary()


def cli(c, *args, token=None, timeout=60):
    return corral_cli(c, *args, token=token, timeout=timeout)


@pytest.fixture(scope="module")
def c():
    cluster = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    cluster.add_agent(num_cpus=2, extra=("--tasks", "durable_tasks"))
    cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(2)
    with open(f"{cluster.dir}/head/http_address") as f:
        host, port = f.read().strip().rsplit(":", 1)
    cluster.http = (host, int(port))
    yield cluster
    corral.shutdown()
    cluster.stop()


@corral.remote
def chatty(n, tag):
    for i in range(n):
        print(f"{tag} line {i}", flush=True)
    return n


@corral.remote
def slow_chatty(tag, lines, pause):
    import sys
    import time as t
    for i in range(lines):
        print(f"{tag} step {i}", flush=True)
        print(f"{tag} warning {i}", file=sys.stderr, flush=True)
        t.sleep(pause)
    return lines


def test_logs_by_id_show_only_that_tasks_output(c):
    refs = [chatty.remote(3, f"task{k}") for k in range(4)]
    assert corral.get(refs) == [3] * 4
    for k, ref in enumerate(refs):
        out = cli(c, "logs", ref.hex())
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [f"task{k} line {i}" for i in range(3)], out.stdout


def test_logs_by_prefix_and_clear_errors(c):
    ref = chatty.remote(1, "prefixed")
    corral.get(ref)
    # A client's task ids share their first 16 hex digits: the counter at the end tells them apart.
    out = cli(c, "logs", ref.hex()[:6])
    assert out.returncode == 1 and "give more of it" in out.stderr, out.stderr
    out = cli(c, "logs", "0123456789abcdef0123456789abcdef")
    assert out.returncode == 1 and "no task" in out.stderr and "recent tasks" in out.stderr, out.stderr
    out = cli(c, "logs", "../../etc/passwd")
    assert out.returncode == 1 and "no task" in out.stderr and "root:" not in out.stdout


def test_logs_follow_prints_lines_as_they_come_and_ends_with_the_task(c):
    ref = slow_chatty.remote("followed", 4, 0.5)
    env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")}
    env["CORRAL_TOKEN"] = c.token
    proc = subprocess.Popen([corral_bin(), "logs", "--follow", ref.hex(), "--address", c.address], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    first_line_at = None
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if first_line_at is None:
            first_line_at = time.monotonic()
            # The first line arrives while the task still runs (its end is ~2 s away).
            assert not corral.wait([ref], timeout=0)[0], "the first line came only after the task ended"
    assert proc.wait(30) == 0, proc.stderr.read()
    assert corral.get(ref) == 4
    assert [l for l in seen if "step" in l] == [f"followed step {i}" for i in range(4)]
    assert [l for l in seen if "warning" in l] == [f"followed warning {i}" for i in range(4)]  # stderr too


def test_logs_of_a_durable_task_by_its_id(c):
    out = cli(c, "submit", "durable_tasks:announce", "--args", '["hello from a durable task"]', "--wait")
    assert out.returncode == 0, out.stderr
    task = [t for t in json.loads(cli(c, "tasks", "--json").stdout) if t["function"] == "durable_tasks:announce"][-1]
    logs = cli(c, "logs", task["id"])  # the id `corral tasks` shows: its latest run
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == ["announcing: hello from a durable task"], logs.stdout


def test_top_shows_nodes_workers_and_rates(c):
    refs = [chatty.remote(1, "top") for _ in range(20)]
    corral.get(refs)
    out = cli(c, "top", "-n", "2", "--interval", "0.5")
    assert out.returncode == 0, out.stderr
    screens = out.stdout.split("corral top - ")
    assert len(screens) == 3, out.stdout  # two screens
    last = screens[-1]
    for agent in c.agents:
        assert agent.node_id[:8] in last
    assert re.search(r"Tasks: [0-9.]+/s done", last)
    assert "BUSY/WORKERS" in last
    assert re.search(r"Failed: \d+ in all", last)


# The dashboard's sessions, over plain HTTP.

def request(c, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection(*c.http, timeout=10)
    h = {"Host": f"{c.http[0]}:{c.http[1]}", **(headers or {})}
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), (json.loads(data) if data and r.getheader("Content-Type", "").startswith("application/json") else data)


def login(c, token):
    status, headers, body = request(c, "POST", "/api/v1/login", {"Content-Type": "application/json"},
                                    json.dumps({"token": token}))
    assert status == 200, body
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    return cookie.split(";")[0], body["csrf"], body


def test_a_session_needs_its_csrf_token_for_changes(c):
    cookie, csrf, who = login(c, c.token)
    assert who["role"] == "admin"
    # Reads with the cookie alone.
    status, _, body = request(c, "GET", "/api/v1/nodes", {"Cookie": cookie})
    assert status == 200 and len(body) == 2
    # A change without the CSRF token, or with another one, is refused; with it, it is done.
    node = c.agents[1].node_id
    for headers in ({}, {"X-CSRF-Token": "0" * len(csrf)}, {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}):
        status, _, body = request(c, "POST", f"/api/v1/nodes/{node}/drain?leave=false", {"Cookie": cookie, **headers})
        assert status == 403, body
    assert not {n["node_id"]: n for n in corral.nodes()}[node]["draining"]
    status, _, body = request(c, "POST", f"/api/v1/nodes/{node}/drain?leave=false&timeout=1",
                              {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": f"http://{c.http[0]}:{c.http[1]}"})
    assert status == 202, body
    wait_until(lambda: {n["node_id"]: n for n in corral.nodes()}[node]["draining"], what="draining")


def test_logout_and_revocation_end_sessions(c):
    cookie, csrf, _ = login(c, c.token)
    status, _, _ = request(c, "POST", "/api/v1/logout", {"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200
    status, _, body = request(c, "GET", "/api/v1/nodes", {"Cookie": cookie})
    assert status == 401 and "log in again" in body["error"]["message"]

    secret = make_token(c, "read", "revoked-viewer")
    cookie, _, who = login(c, secret)
    assert who["role"] == "read"
    assert request(c, "GET", "/api/v1/status", {"Cookie": cookie})[0] == 200
    assert cli(c, "token", "revoke", "revoked-viewer").returncode == 0
    assert request(c, "GET", "/api/v1/status", {"Cookie": cookie})[0] == 401


def test_only_people_tokens_log_in_and_asking_is_not_a_failure(c):
    agent_token = make_token(c, "agent", "not-a-person")
    status, _, body = request(c, "POST", "/api/v1/login", {"Content-Type": "application/json"},
                              json.dumps({"token": agent_token}))
    assert status == 403 and "cannot log in" in body["error"]["message"]
    status, _, body = request(c, "POST", "/api/v1/login", {"Content-Type": "application/x-www-form-urlencoded"},
                              "token=wrong")
    assert status == 401
    with open(c.head.log_path) as f:
        before = f.read().count("authentication failed")
    status, _, body = request(c, "GET", "/api/v1/session")
    assert status == 200 and body == {"logged_in": False}
    for path in ("/", "/app.js", "/app.css", "/favicon.ico"):
        status, headers, _ = request(c, "GET", path)
        assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    time.sleep(0.3)
    with open(c.head.log_path) as f:
        assert f.read().count("authentication failed") == before


def test_the_event_stream_sends_snapshots_and_ends_with_the_token(c):
    secret = make_token(c, "read", "stream-viewer")
    cookie, _, _ = login(c, secret)
    conn = http.client.HTTPConnection(*c.http, timeout=10)
    conn.request("GET", "/api/v1/events", headers={"Host": f"{c.http[0]}:{c.http[1]}", "Cookie": cookie})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    events = []

    def read():
        try:
            while True:
                line = r.fp.readline()
                if not line:
                    break
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
        except OSError:
            pass
        events.append(None)  # the stream ended

    t = threading.Thread(target=read, daemon=True)
    t.start()
    wait_until(lambda: len(events) >= 2, what="two snapshots")
    snap = events[0]
    assert {n["node_id"] for n in snap["nodes"]} == {a.node_id for a in c.agents}
    assert {"point", "tasks", "queues", "actors", "gangs"} <= set(snap)
    assert cli(c, "token", "revoke", "stream-viewer").returncode == 0
    wait_until(lambda: events and events[-1] is None, timeout=10, what="the stream closed after revocation")
    conn.close()


def test_output_that_is_not_utf8_keeps_the_node_and_reads_back(c):
    @corral.remote
    def raw_bytes():
        import sys
        sys.stdout.buffer.write(b"caf\xc3\xa9 then a bad byte \xff here\n")
        sys.stdout.flush()
        return 1

    ref = raw_bytes.remote()
    assert corral.get(ref) == 1
    out = subprocess.run([corral_bin(), "logs", ref.hex(), "--address", c.address],
                         env={**{k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")},
                              "CORRAL_TOKEN": c.token}, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"caf\xc3\xa9 then a bad byte \xff here\n"
    # Starting in the middle of a character (offset 4) is fine too, over HTTP.
    status, _, body = request(c, "GET", f"/api/v1/runs/{ref.hex()}/log?offset=4",
                              {"Authorization": f"Bearer {c.token}"})
    assert status == 200 and body["text"].startswith("\ufffd then a bad byte"), body
    # The node never dropped: both are still connected and run tasks.
    assert all(n["connected"] for n in corral.nodes() if n["state"] == "alive")
    assert corral.get([chatty.remote(1, "after") for _ in range(4)]) == [1] * 4


def test_log_offsets_stay_inside_the_tasks_output(c):
    refs = [chatty.remote(2, f"bounded{k}") for k in range(6)]
    corral.get(refs)
    ref = refs[0]
    whole = cli(c, "logs", ref.hex()).stdout
    assert whole.splitlines() == ["bounded0 line 0", "bounded0 line 1"]
    headers = {"Authorization": f"Bearer {c.token}"}
    status, _, body = request(c, "GET", f"/api/v1/runs/{ref.hex()}/log?offset={len(whole)}", headers)
    assert status == 200 and body["text"] == "" and body["ended"] is True, body
    for bad in (len(whole) + 1, 2**63, 2**64 - 5):
        status, _, body = request(c, "GET", f"/api/v1/runs/{ref.hex()}/log?offset={bad}", headers)
        assert status in (400, 404), (bad, body)
        assert "bounded1" not in json.dumps(body)


def test_a_tasks_code_cannot_read_other_tasks_output(c):
    secret_ref = chatty.remote(1, "secret")
    corral.get(secret_ref)

    @corral.remote
    def snoop(binary, task_id, http_host, http_port):
        import http.client as hc
        import os as o
        import subprocess as sp
        out = sp.run([binary, "logs", task_id], capture_output=True, text=True, timeout=60)
        token = open(o.environ["CORRAL_TOKEN_FILE"]).read().strip()
        conn = hc.HTTPConnection(http_host, http_port, timeout=10)
        conn.request("GET", f"/api/v1/runs/{task_id}/log", headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        return out.returncode, out.stdout, out.stderr, r.status, r.read().decode()

    rc, stdout, stderr, status, body = corral.get(snoop.remote(corral_bin(), secret_ref.hex(), *c.http))
    assert rc == 1 and "secret" not in stdout and "may not read other tasks" in stderr, (rc, stdout, stderr)
    assert status == 403 and "secret line" not in body, (status, body)


def test_over_https_the_session_cookie_is_secure_and_host_only():
    import ssl
    head = Cluster(head_args=("--tls",))
    try:
        with open(f"{head.dir}/head/http_address") as f:
            host, port = f.read().strip().rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=f"{head.dir}/head/ca.crt")
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
        conn.request("POST", "/api/v1/login", body=json.dumps({"token": head.token}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        cookie = r.getheader("Set-Cookie")
        assert cookie.startswith("__Host-corral_session=") and "; Secure" in cookie and "HttpOnly" in cookie, cookie
        conn.request("GET", "/api/v1/session", headers={"Cookie": cookie.split(";")[0]})
        r = conn.getresponse()
        assert json.loads(r.read())["logged_in"] is True
        conn.close()
    finally:
        head.stop()
