"""Tokens with roles, as an operator uses them: `corral token create|list|revoke`, each role allowed
what it is for and refused the rest over TCP (CLI, drivers, agents) and HTTP, revocation and expiry
taking effect on open connections. Real head and agent processes."""
import http.client
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import corral
from conftest import Cluster, Process, wait_until
from corral import _cluster

BIN = _cluster.corral_binary()


@pytest.fixture(scope="module")
def c():
    cluster = Cluster()
    cluster.add_agent(num_cpus=1, extra=("--tasks", "durable_tasks"))
    yield cluster
    cluster.stop()


def cli(c, args, token, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")}
    env["CORRAL_TOKEN"] = token
    return subprocess.run([BIN, *args, "--address", c.address], env=env, capture_output=True, text=True,
                          timeout=timeout)


def create(c, role, name, *extra):
    out = cli(c, ["token", "create", "--role", role, "--name", name, *extra], c.token)
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip()
    assert secret.startswith("ct_") and "\n" not in secret
    return secret


def rest(c, method, path, token, body=None):
    with open(f"{c.dir}/head/http_address") as f:
        host, port = f.read().strip().rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, data


def driver(c, token, source, timeout=60):
    """Runs `source` in a driver process connected with `token`; returns (returncode, stdout, stderr)."""
    prelude = f"import corral\ncorral.init(address={c.address!r}, token={token!r})\n"
    env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")}
    p = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(source)], env=env, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_list_shows_tokens_but_never_a_secret(c):
    secret = create(c, "read", "lister-probe")
    out = cli(c, ["token", "list"], c.token)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:]}
    assert rows["admin"] == "admin" and rows["lister-probe"] == "read"
    assert secret not in out.stdout and secret[16:] not in out.stdout
    stored = open(f"{c.dir}/head/tokens.json").read()
    assert secret[16:] not in stored
    assert oct(os.stat(f"{c.dir}/head/tokens.json").st_mode & 0o777) == "0o600"


def test_read_token_reads_and_is_refused_everything_else(c):
    token = create(c, "read", "viewer")
    assert cli(c, ["status"], token).returncode == 0
    out = cli(c, ["submit", "durable_tasks:add", "--args", "[1, 2]"], token)
    assert out.returncode != 0 and "has role read" in out.stderr and "needs submit" in out.stderr, out.stderr
    code, _, err = driver(c, token, """
        @corral.remote
        def f():
            return 1
        try:
            corral.get(f.remote(), timeout=30)
        except corral.CorralError as e:
            print("refused:", e)
            raise SystemExit(3)
    """)
    assert code == 3, err
    assert rest(c, "GET", "/api/v1/status", token)[0] == 200
    status, body = rest(c, "POST", "/api/v1/tasks", token, {"function": "durable_tasks:add", "args": [1, 2]})
    assert status == 403 and "needs submit" in body["error"]["message"]


def test_submit_token_runs_work_but_cannot_administer(c):
    token = create(c, "submit", "worker-app")
    code, out, err = driver(c, token, """
        @corral.remote
        def f(x):
            return x + 1
        print(corral.get(f.remote(41), timeout=60))
    """)
    assert code == 0 and out.strip() == "42", err
    status, body = rest(c, "POST", "/api/v1/tasks", token, {"function": "durable_tasks:add", "args": [1, 2]})
    assert status == 201 and body["created"], body
    for args in (["drain", "0000"], ["queue", "set", "default", "--weight", "2"], ["token", "list"]):
        out = cli(c, args, token)
        assert out.returncode != 0 and "needs admin" in out.stderr, (args, out.stderr)
    assert rest(c, "POST", "/api/v1/nodes/0000/drain", token, {})[0] == 403


def test_revoked_token_is_refused_at_once_also_on_open_connections(c):
    token = create(c, "submit", "laptop-script")
    # A driver connected with it, waiting; the revoke closes its connection and it cannot come back.
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, corral
        corral.init(address={c.address!r}, token={token!r})
        @corral.remote
        def f(x):
            return x
        print(corral.get(f.remote(1)), flush=True)
        sys.stdin.readline()  # the revoke happens here
        try:
            corral.get(f.remote(2), timeout=30)
            print("still served", flush=True)
        except corral.CorralError as e:
            print("refused:", type(e).__name__, e, flush=True)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")})
    assert p.stdout.readline().strip() == "1"
    out = cli(c, ["token", "revoke", "laptop-script"], c.token)
    assert out.returncode == 0, out.stderr
    p.stdin.write("\n")
    p.stdin.flush()
    line = p.stdout.readline()
    p.wait(60)
    assert line.startswith("refused:"), line + p.stderr.read()
    assert rest(c, "GET", "/api/v1/status", token)[0] == 401
    assert cli(c, ["status"], token).returncode != 0


def test_expired_token_is_refused(c):
    token = create(c, "read", "short-lived", "--ttl", "2s")
    assert cli(c, ["status"], token).returncode == 0
    wait_until(lambda: rest(c, "GET", "/api/v1/status", token)[0] == 401, timeout=10, what="the token expired")
    out = cli(c, ["status"], token)
    assert out.returncode != 0 and "bad token" in out.stderr


def test_only_agent_or_admin_tokens_register_nodes(c):
    for role in ("read", "submit"):
        token = create(c, role, f"not-an-agent-{role}")
        env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")}
        env["CORRAL_TOKEN"] = token
        out = subprocess.run([BIN, "start", "--address", c.address, "--state-dir", f"{c.dir}/bad-{role}",
                              "--python", sys.executable], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "agent" in out.stderr, out.stderr
    token = create(c, "agent", "joiner")
    agent = c.add_agent(env={"CORRAL_TOKEN": token})
    assert agent.node_id
    # It registers nodes and does nothing else: not even read the cluster's status.
    out = cli(c, ["status"], token)
    assert out.returncode != 0 and "needs read" in out.stderr, out.stderr


def test_bad_role_and_ttl_are_refused_clearly(c):
    out = cli(c, ["token", "create", "--role", "root", "--name", "x"], c.token)
    assert out.returncode != 0 and "root" in out.stderr
    out = cli(c, ["token", "create", "--role", "read", "--name", "x", "--ttl", "soon"], c.token)
    assert out.returncode == 2 and "--ttl" in out.stderr
    create(c, "read", "dup")
    out = cli(c, ["token", "create", "--role", "read", "--name", "dup"], c.token)
    assert out.returncode != 0 and "exists" in out.stderr


def test_a_session_cannot_be_taken_over_by_its_client_id(c):
    # Every task id a client makes starts with its client id; holding a token and that id was
    # enough to take over its session (its results, its tasks). Now the session's secret is needed.
    import wire
    token = create(c, "submit", "hijacker")
    c.connect()
    try:
        @corral.remote
        def f(x):
            return x

        assert corral.get(f.remote(1), timeout=60) == 1
        victim = corral._runtime.client.client_id
        for secret in (None, b"\0" * 16):
            for who in (token, c.token):  # another token, and even the victim's own (admin) one
                s, error = wire.handshake(c.address, who, client_id=victim, resume_secret=secret)
                s.close()
                assert "belongs to another session" in error, error
        assert corral.get(f.remote(2), timeout=60) == 2  # the victim still has its session
    finally:
        corral.shutdown()


def test_a_client_cannot_cancel_another_clients_task(c):
    # Task ids are no secret (they are in logs and results); cancelling needs to be their owner
    # (or admin).
    token = create(c, "submit", "other-app")
    code, out, err = driver(c, token, """
        import subprocess, sys
        @corral.remote
        def slow(x):
            import time
            time.sleep(2)
            return x
        ref = slow.remote(7)
        victim_id = ref.hex() if hasattr(ref, "hex") else ref._id.hex()
        attacker = "\\n".join([
            "import corral",
            "corral.init(address=ADDRESS, token=TOKEN)",
            f"corral._runtime.client.cancel(bytes.fromhex('{victim_id}'), True)",
            "corral.get(corral.put(1))",  # the cancel reached the head before this answer
        ])
        p = subprocess.run([sys.executable, "-c", attacker], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        print(corral.get(ref, timeout=60))
    """.replace("ADDRESS", repr(repr(c.address))[1:-1]).replace("TOKEN", repr(repr(token))[1:-1]))
    assert code == 0 and out.strip() == "7", err
    status = rest(c, "GET", "/api/v1/status", c.token)[1]
    assert status["counters"]["cancels_refused_not_owner"] >= 1


def test_workers_get_their_own_credential_not_the_agents_token(c):
    # A task's code could read its worker's environment: it held the agent's (here the admin) token.
    code, out, err = driver(c, c.token, """
        import json, os
        @corral.remote
        def inner(x):
            return x * 2
        @corral.remote
        def look():
            token = open(os.environ["CORRAL_TOKEN_FILE"]).read().strip()
            return json.dumps({"env_token": os.environ.get("CORRAL_TOKEN"), "file_token": token,
                               "nested": corral.get(inner.remote(21))})
        print(corral.get(look.remote(), timeout=60))
    """)
    assert code == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["env_token"] is None
    assert seen["file_token"].startswith("cw_") and seen["file_token"] != c.token
    assert seen["nested"] == 42  # the worker credential submits nested tasks
    worker = seen["file_token"]
    assert cli(c, ["status"], worker).returncode == 0  # and reads
    out = cli(c, ["token", "list"], worker)
    assert out.returncode != 0 and "has role worker" in out.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_ADDRESS")}
    env["CORRAL_TOKEN"] = worker
    out = subprocess.run([BIN, "start", "--address", c.address, "--state-dir", f"{c.dir}/as-worker",
                          "--python", sys.executable], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "agent" in out.stderr  # it cannot register a node
    forged = worker[:-4] + ("0000" if not worker.endswith("0000") else "1111")
    assert cli(c, ["status"], forged).returncode != 0


def test_an_operator_caps_what_a_node_may_advertise():
    # A compromised (or misconfigured) machine claiming 64 GPUs would attract every GPU task.
    cl = Cluster()
    try:
        agent = cl.add_agent(num_cpus=4, resources={"accel": 64})
        submit = create(cl, "submit", "app")
        out = cli(cl, ["node", "set", agent.node_id[:8], "--max-resources", "accel=1,CPU=2"], submit)
        assert out.returncode != 0 and "needs admin" in out.stderr
        out = cli(cl, ["node", "set", agent.node_id[:8], "--max-resources", "accel=1,CPU=2"], cl.token)
        assert out.returncode == 0, out.stderr

        def resources():
            nodes = [n for n in rest(cl, "GET", "/api/v1/nodes", cl.token)[1] if n["state"] == "alive"]
            return nodes[0]["resources"] if nodes else {}

        assert resources()["accel"] == 1 and resources()["CPU"] == 2
        # Kept: across the agent's restart (it advertises 64 again) and the head's.
        node_id = agent.node_id
        agent.stop()
        agent = Process(agent.args, agent.log_path, env=agent.env)  # the same node: its state dir
        agent.node_id = agent.ready
        cl.agents = [agent]
        assert agent.node_id == node_id
        cl.restart_head()
        wait_until(lambda: resources().get("accel") == 1 and resources().get("CPU") == 2,
                   what="the caps after restarts")
        out = cli(cl, ["node", "set", agent.node_id[:8], "--max-resources", ""], cl.token)
        assert out.returncode == 0, out.stderr
        assert resources()["accel"] == 64
    finally:
        cl.stop()


@corral.remote(max_retries=3)
def where_slowly(seconds):
    import os
    import time
    time.sleep(seconds)
    return os.environ["CORRAL_NODE_ID"]


def test_a_revoked_node_is_cut_off_and_its_tasks_run_elsewhere():
    # A lost laptop: it must stop receiving work and results from it must not count.
    cl = Cluster()
    try:
        laptop = cl.add_agent(num_cpus=1)
        cl.connect()
        ref = where_slowly.remote(4)
        wait_until(lambda: any(n["running_tasks"] for n in rest(cl, "GET", "/api/v1/nodes", cl.token)[1]),
                   what="the task running on the laptop")
        server = cl.add_agent(num_cpus=1)
        laptop_workers = open(f"{cl.dir}/agent0/worker-token").read().strip()
        assert rest(cl, "GET", "/api/v1/status", laptop_workers)[0] == 200
        assert cli(cl, ["node", "revoke", laptop.node_id[:8]], create(cl, "submit", "app")).returncode != 0
        out = cli(cl, ["node", "revoke", laptop.node_id[:8]], cl.token)
        assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
        assert corral.get(ref, timeout=60) == server.node_id  # re-run on the other node
        assert rest(cl, "GET", "/api/v1/status", laptop_workers)[0] == 401  # its workers' credential too
        assert laptop.proc.wait(30) != 0  # its agent was refused when it tried to come back
        assert "was revoked by the operator" in open(laptop.log_path).read()
        states = {n["node_id"]: n["state"] for n in rest(cl, "GET", "/api/v1/nodes", cl.token)[1]}
        assert states[laptop.node_id] == "dead"
        # Still refused after a head restart (the id is kept in nodes.json).
        cl.restart_head()
        with pytest.raises(corral.CorralError, match="revoked"):
            Process(laptop.args, laptop.log_path, env=laptop.env)
    finally:
        corral.shutdown()
        cl.stop()


def test_a_client_reads_only_objects_of_its_own_token(c):
    # An object id is in every task a driver sends and may leak; another user's token must not read
    # its value. The same token (one user's drivers) and an admin token may.
    mine, theirs = create(c, "submit", "reader-a"), create(c, "submit", "reader-b")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, corral
            corral.init(address={c.address!r}, token={mine!r})
            ref = corral.put("the secret value")
            print(ref.hex(), flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ref_hex = holder.stdout.readline().strip()
        read = f"""
            from corral.object_ref import ObjectRef
            try:
                print(corral.get(ObjectRef(bytes.fromhex({ref_hex!r})), timeout=20))
            except corral.CorralError as e:
                print("refused:", type(e).__name__, e)
        """
        rc, out, err = driver(c, theirs, read)
        assert rc == 0, err
        assert out.startswith("refused:") and "another token" in out, out
        # Nor through a task: an argument is read like a get.
        rc, out, err = driver(c, theirs, f"""
            from corral.object_ref import ObjectRef
            @corral.remote
            def echo(x):
                return x
            try:
                print(corral.get(echo.remote(ObjectRef(bytes.fromhex({ref_hex!r}))), timeout=20))
            except corral.CorralError as e:
                print("refused:", type(e).__name__, e)
        """)
        assert rc == 0, err
        assert out.startswith("refused:") and "another token" in out, out
        for token in (mine, c.token):
            rc, out, err = driver(c, token, read)
            assert rc == 0 and out.strip() == "the secret value", (out, err)
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_a_workers_credential_expires_and_its_agent_gets_a_fresh_one():
    # The workers' credential was good forever: one copied off a laptop stayed valid. Now it carries
    # its expiry (under the head's MAC) and the agent receives a fresh one at half its life.
    cluster = Cluster(head_args=("--worker-credential-ttl", "60s", "--heartbeat-ms", "200"))
    try:
        cluster.add_agent(num_cpus=1)
        path = f"{cluster.dir}/agent0/worker-token"
        first = wait_until(lambda: os.path.exists(path) and open(path).read().strip(), what="the credential")
        node_hex, expires_s = first.split("_")[1], int(first.split("_")[2])
        assert abs(expires_s - (time.time() + 60)) < 15, (expires_s, time.time())
        stretched = first.replace(f"_{expires_s}_", f"_{expires_s + 86400}_")
        assert cli(cluster, ["status"], stretched).returncode != 0  # the expiry is under the MAC
        second = wait_until(lambda: open(path).read().strip() != first and open(path).read().strip(),
                            timeout=45, what="a fresh credential at half its life")
        assert second.split("_")[1] == node_hex and int(second.split("_")[2]) > expires_s
        # Workers that connect now present the fresh one: a nested task runs.
        code, out, err = driver(cluster, cluster.token, """
            @corral.remote
            def inner(x):
                return x + 1
            @corral.remote
            def outer(x):
                return corral.get(inner.remote(x))
            print(corral.get(outer.remote(1), timeout=60))
        """)
        assert code == 0 and out.strip() == "2", err
    finally:
        cluster.stop()
