"""The head's REST API (HTTP on --http-port): the gate (Host, bearer token), JSON errors, and the
read-only endpoints, against a real head process."""
import http.client
import json
import socket

import pytest

import corral
from conftest import wait_until


def http_address(cluster):
    with open(f"{cluster.dir}/head/http_address") as f:
        host, port = f.read().strip().rsplit(":", 1)
    return host, int(port)


def request(cluster, method, path, token="default", body=None, headers=None):
    host, port = http_address(cluster)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    h = dict(headers or {})
    if token == "default":
        token = cluster.token
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), json.loads(data) if data else None


def test_health_is_public_and_everything_else_needs_the_token(cluster):
    status, ctype, body = request(cluster, "GET", "/api/v1/health", token=None)
    assert status == 200 and ctype == "application/json" and body["status"] == "ok"
    status, _, body = request(cluster, "GET", "/api/v1/nodes", token=None)
    assert status == 401
    assert "Authorization: Bearer" in body["error"]["message"]
    status, _, body = request(cluster, "GET", "/api/v1/nodes", token="not-the-token")
    assert status == 401 and body["error"]["message"].startswith("wrong token")
    with open(cluster.head.log_path) as f:
        assert "authentication failed from 127.0.0.1 via http: wrong token on GET /api/v1/nodes" in f.read()


def test_nodes_and_status(cluster):
    a = cluster.add_agent(num_cpus=2, labels={"zone": "office"})
    cluster.connect()
    cluster.wait_nodes(1)
    status, _, nodes = request(cluster, "GET", "/api/v1/nodes")
    assert status == 200
    assert [n["node_id"] for n in nodes] == [a.node_id]
    assert nodes[0]["labels"] == {"zone": "office"} and nodes[0]["resources"]["CPU"] == 2
    assert nodes[0]["state"] == "alive" and nodes[0]["connected"] is True
    status, _, st = request(cluster, "GET", "/api/v1/status")
    assert status == 200 and st["nodes"][0]["node_id"] == a.node_id and "counters" in st


def test_errors_are_json(cluster):
    status, _, body = request(cluster, "GET", "/api/v1/nope")
    assert status == 404 and "/api/v1/nope" in body["error"]["message"]
    status, _, body = request(cluster, "DELETE", "/api/v1/nodes")
    assert status == 405 and "DELETE is not allowed" in body["error"]["message"]
    status, _, body = request(cluster, "POST", "/api/v1/nodes/ffff/drain")
    assert status == 404 and "no live node matches 'ffff'" in body["error"]["message"]
    status, _, body = request(cluster, "POST", "/api/v1/nodes/ffff/drain?timeout=soon")
    assert status == 400 and "timeout" in body["error"]["message"]


def test_foreign_host_header_is_refused(cluster):
    # A page on another site that resolves its name to this machine (DNS rebinding) sends its own Host.
    status, _, body = request(cluster, "GET", "/api/v1/health", headers={"Host": "evil.example:8370"})
    assert status == 421 and "--http-allowed-host evil.example" in body["error"]["message"]


def test_oversized_and_malformed_requests(cluster):
    host, port = http_address(cluster)
    # Headers announcing a body over the 8 MiB limit, and no body: the head answers 413 from the
    # headers alone (it must not wait for, or read, 9 MiB first), then closes.
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall((f"POST /api/v1/nodes HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Authorization: Bearer {cluster.token}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {9 << 20}\r\n\r\n").encode())
        r = http.client.HTTPResponse(s)
        r.begin()
        body = json.loads(r.read())
        assert r.status == 413, (r.status, body)
        assert body["error"] == {"status": 413, "message": f"the request body is over the {8 << 20}-byte limit"}
        assert r.getheader("Connection", "").lower() == "close"
        assert s.recv(1) == b"", "the head closes the connection after the 413"
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    # The server still serves.
    assert request(cluster, "GET", "/api/v1/health", token=None)[0] == 200


def test_drain_over_http(cluster):
    a = cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(1)
    status, _, body = request(cluster, "POST", f"/api/v1/nodes/{a.node_id[:8]}/drain?timeout=5")
    assert status == 202 and body == {"draining": True}
    assert a.proc.wait(15) == 0
    wait_until(lambda: corral.nodes()[0]["state"] == "left", what="the node gone")


def test_durable_tasks_over_rest(cluster):
    cluster.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(1)
    body = json.dumps({"function": "durable_tasks.add", "args": [2, 3]})  # Celery-style dotted name
    status, _, created = request(cluster, "POST", "/api/v1/tasks", body=body,
                                 headers={"Content-Type": "application/json"})
    assert status == 201 and created["created"] is True
    task_id = created["id"]
    wait_until(lambda: request(cluster, "GET", f"/api/v1/tasks/{task_id}")[2]["state"] == "SUCCESS",
               what="the task to finish")
    status, _, info = request(cluster, "GET", f"/api/v1/tasks/{task_id}")
    assert status == 200 and info["result"] == 5 and info["error"] is None
    # The same task from Python, by id.
    assert corral.result(task_id).get(timeout=10) == 5

    keyed = json.dumps({"function": "durable_tasks:add", "args": [1, 1], "idempotency_key": "k"})
    first = request(cluster, "POST", "/api/v1/tasks", body=keyed)
    second = request(cluster, "POST", "/api/v1/tasks", body=keyed)
    assert first[0] == 201 and second[0] == 200 and second[2] == {"id": first[2]["id"], "created": False}

    failing = json.dumps({"function": "durable_tasks.boom", "args": ["bad input"]})
    task_id = request(cluster, "POST", "/api/v1/tasks", body=failing)[2]["id"]
    wait_until(lambda: request(cluster, "GET", f"/api/v1/tasks/{task_id}")[2]["state"] == "FAILURE",
               what="the task to fail")
    assert "ValueError: bad input" in request(cluster, "GET", f"/api/v1/tasks/{task_id}")[2]["error"]

    status, _, failed = request(cluster, "GET", "/api/v1/tasks?state=failed")
    assert status == 200 and [t["id"] for t in failed] == [task_id]
    assert request(cluster, "GET", "/api/v1/tasks?state=nonsense")[0] == 400
    status, _, queues = request(cluster, "GET", "/api/v1/queues")
    assert status == 200
    default = {q["name"]: q for q in queues}["default"]
    assert (default["succeeded"], default["failed"], default["slots"]) == (2, 1, 1)

    later = json.dumps({"function": "durable_tasks.add", "args": [1, 2], "countdown": 3600, "priority": 4})
    later_id = request(cluster, "POST", "/api/v1/tasks", body=later)[2]["id"]
    assert request(cluster, "POST", f"/api/v1/tasks/{later_id}/revoke")[2] == {"id": later_id, "state": "REVOKED"}
    assert request(cluster, "POST", "/api/v1/tasks/0123456789abcdef/revoke")[0] == 404
    corral.schedule("nightly", "durable_tasks:add", cron="0 2 * * *", tz="Asia/Dhaka", args=(1, 2))
    status, _, schedules = request(cluster, "GET", "/api/v1/schedules")
    assert status == 200 and [(s["name"], s["cron"], s["tz"]) for s in schedules] == [("nightly", "0 2 * * *", "Asia/Dhaka")]


def test_bad_durable_submissions_store_nothing(cluster):
    cluster.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
    cluster.connect()
    cluster.wait_nodes(1)
    cases = [
        ("{not json", 400, "JSON object"),
        (json.dumps({"args": [1]}), 400, "'function'"),
        (json.dumps({"function": "os:", "args": ["echo pwned"]}), 400, "must be named 'module:qualname'"),
        (json.dumps({"function": "durable_tasks.add", "args": "1, 2"}), 400, "'args' must be a JSON array"),
        (json.dumps({"function": "durable_tasks.add", "queue": 7}), 400, "wrong type"),
        (json.dumps({"function": "durable_tasks.add", "queue": "bad queue!"}), 400, "queue name"),
    ]
    for body, code, message in cases:
        status, _, reply = request(cluster, "POST", "/api/v1/tasks", body=body)
        assert status == code and message in reply["error"]["message"], (body, reply)
    assert corral.cluster_status()["counters"].get("durable_submitted", 0) == 0
    assert request(cluster, "GET", "/api/v1/tasks/0123")[0] == 404


def test_numbers_out_of_range_are_a_clear_400(cluster):
    # Found by fuzzing: a priority of 7.7e98 was converted to an int unchecked (undefined behaviour).
    for field, value in (("priority", 7.7e98), ("max_retries", -1), ("priority", 1.5), ("max_retries", "3")):
        body = json.dumps({"function": "durable_tasks:add", "args": [1, 2], field: value})
        status, _, reply = request(cluster, "POST", "/api/v1/tasks", body=body,
                                   headers={"Content-Type": "application/json"})
        assert status == 400, (field, value, status, reply)
        assert field in reply["error"]["message"], reply
