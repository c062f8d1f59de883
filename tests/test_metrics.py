"""/metrics as an operator meets it: a real Prometheus (Debian's) scrapes a running three-agent
cluster with a read token and the shipped alert rules; PromQL answers the task counts the test made,
NodeDown fires when an agent is killed; promtool checks the names and rules; the Grafana dashboard
asks only for metrics the head exports; label cardinality stays bounded."""
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request

import pytest

import corral
from conftest import Cluster, corral_cli, make_token, wait_until

DEPLOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy")
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def http_get(c, path, token):
    with open(f"{c.dir}/head/http_address") as f:
        address = f.read().strip()
    req = urllib.request.Request(f"http://{address}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def families(text):
    """Metric family names announced with # TYPE in an exposition."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def sample(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$', line)
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if m.group(1) == name and all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def c():
    cluster = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    for _ in range(3):
        cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(3)
    yield cluster
    corral.shutdown()
    cluster.stop()


def test_metrics_need_a_read_token_and_pass_promtool(c):
    status, _, body = http_get(c, "/metrics", None)
    assert status == 401, body
    status, ctype, text = http_get(c, "/metrics", make_token(c, "read", "metrics-reader"))
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    assert sample(text, "corral_nodes", state="alive") == 3
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # No task ids in labels: every label value is bounded (functions, queues, nodes, states).
    assert not re.search(r'="[0-9a-f]{32,}"', text)


def test_task_counts_and_histograms_by_function(c):
    @corral.remote
    def doubled(x):
        return 2 * x

    @corral.remote
    def broken():
        raise ValueError("broken on purpose")

    token = make_token(c, "read", "counts-reader")
    before = http_get(c, "/metrics", token)[2]
    assert sum(corral.get([doubled.remote(i) for i in range(30)])) == 2 * sum(range(30))
    for ref in [broken.remote() for _ in range(4)]:
        with pytest.raises(ValueError):
            corral.get(ref)
    text = http_get(c, "/metrics", token)[2]
    fn = next(m for m in re.findall(r'function="([^"]*doubled[^"]*)"', text))
    bad = next(m for m in re.findall(r'function="([^"]*broken[^"]*)"', text))

    def delta(metric, function):
        return (sample(text, metric, function=function) or 0) - (sample(before, metric, function=function) or 0)

    assert delta("corral_tasks_submitted_total", fn) == 30
    assert delta("corral_tasks_started_total", fn) == 30
    assert delta("corral_tasks_finished_total", fn) == 30
    assert delta("corral_tasks_failed_total", fn) == 0
    assert delta("corral_tasks_failed_total", bad) == 4
    assert delta("corral_tasks_finished_total", bad) == 0
    assert delta("corral_task_duration_seconds_count", fn) == 30
    assert delta("corral_task_queue_wait_seconds_count", fn) == 30
    assert sample(text, "corral_task_duration_seconds_bucket", function=fn, le="+Inf") >= 30


def test_grafana_dashboard_uses_only_exported_metrics(c):
    text = http_get(c, "/metrics", make_token(c, "read", "grafana-check"))[2]
    exported = families(text)
    with open(os.path.join(DEPLOY, "grafana", "corral.json")) as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    used = set()
    for e in exprs:
        for name in re.findall(r"\b(corral_[a-z_]+)", e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            used.add(base if base in exported else name)
    missing = sorted(used - exported)
    assert not missing, f"the dashboard asks for metrics the head does not export: {missing}"
    # And the alert rules too.
    with open(os.path.join(DEPLOY, "prometheus", "corral-alerts.yml")) as f:
        rules = f.read()
    in_rules = {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\b(corral_[a-z_]+)", rules)}
    assert not (in_rules - exported), sorted(in_rules - exported)


def test_alert_rules_check_and_unit_tests_pass(tmp_path):
    rules = os.path.join(DEPLOY, "prometheus")
    out = subprocess.run([PROMTOOL, "check", "rules", "corral-alerts.yml"], cwd=rules, capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 10 rules found" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([PROMTOOL, "test", "rules", "corral-alerts_test.yml"], cwd=rules, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    # The shipped config, with the files an operator puts in /etc/prometheus put here.
    with open(os.path.join(rules, "prometheus.yml")) as f:
        config = f.read().replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / "corral.token").write_text("ct_x\n")
    (tmp_path / "corral-ca.crt").write_text("")
    shutil.copy(os.path.join(rules, "corral-alerts.yml"), tmp_path)
    out = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def promql(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_a_real_prometheus_scrapes_the_cluster_and_node_down_fires(c, tmp_path):
    @corral.remote
    def scraped(x):
        return x + 1

    assert corral.get([scraped.remote(i) for i in range(25)]) == list(range(1, 26))
    token_file = tmp_path / "corral.token"
    token_file.write_text(make_token(c, "read", "prometheus") + "\n")
    token_file.chmod(0o600)
    with open(f"{c.dir}/head/http_address") as f:
        target = f.read().strip()
    # The shipped config and rules, pointed at this head (plain HTTP on loopback) and scraped often.
    with open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")) as f:
        config = f.read()
    config = (config.replace("scrape_interval: 15s", "scrape_interval: 1s")
              .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
              .replace("scheme: https", "scheme: http")
              .replace("    tls_config:\n      ca_file: /etc/prometheus/corral-ca.crt\n", "")
              .replace("/etc/prometheus/corral.token", str(token_file))
              .replace("head.example.lan:8265", target)
              .replace("  - corral-alerts.yml", "  - " + os.path.join(DEPLOY, "prometheus", "corral-alerts.yml")))
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        def answer(query):
            try:
                return promql(port, query)
            except (OSError, urllib.error.URLError):
                return None

        wait_until(lambda: answer('up{job="corral"} == 1'), timeout=60, what="Prometheus scraping the head")
        fn = wait_until(lambda: answer('corral_tasks_finished_total{function=~".*scraped"}'), timeout=30,
                        what="the task counter in Prometheus")[0]["metric"]["function"]
        result = promql(port, f'sum(corral_tasks_finished_total{{function="{fn}"}})')
        assert float(result[0]["value"][1]) == 25
        result = promql(port, 'sum(corral_nodes{state="alive"})')
        assert float(result[0]["value"][1]) == 3
        assert not promql(port, 'ALERTS{alertname="NodeDown"}')

        victim = c.agents[2]
        victim.kill()
        short = victim.node_id[:8]
        firing = wait_until(lambda: answer(f'ALERTS{{alertname="NodeDown",alertstate="firing",node="{short}"}}'),
                            timeout=60, what="NodeDown firing in Prometheus")
        assert firing[0]["metric"]["severity"] == "warning"
        assert float(promql(port, 'sum(corral_nodes{state="dead"})')[0]["value"][1]) == 1
        # A machine gone for good is revoked: it is no longer "dead", and NodeDown stops.
        out = corral_cli(c, "node", "revoke", short)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: answer(f'corral_node_state{{node="{short}",state="revoked"}} == 1'), timeout=30,
                   what="the node shown revoked")
        wait_until(lambda: not answer(f'ALERTS{{alertname="NodeDown",alertstate="firing",node="{short}"}}'),
                   timeout=30, what="NodeDown no longer firing")
    finally:
        prom.terminate()
        prom.wait(30)


def test_function_labels_are_capped_with_an_other_bucket(c):
    # Last in this module: past the cap, functions of later tests would count under "other".
    refs = []
    for i in range(110):
        def f(x):
            return x
        f.__qualname__ = f"many_{i}"
        refs.append(corral.remote(f).remote(i))
    assert corral.get(refs) == list(range(110))
    text = http_get(c, "/metrics", make_token(c, "read", "cap-reader"))[2]
    functions = set(re.findall(r'^corral_tasks_submitted_total\{function="([^"]*)"', text, re.M))
    assert "other" in functions
    assert len(functions) <= 101
    assert sample(text, "corral_tasks_submitted_total", function="other") >= 9
