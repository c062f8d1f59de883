"""The benchmark harness's statistics and report, and a smoke run of every Corral workload
(it must work; its timings are not judged)."""
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))

import harness  # noqa: E402


def test_median_min_max_and_ratios():
    lat = harness.Figure("corral:rt", "µs", [5.0, 1.0, 3.0], "lower")
    assert lat.median == 3.0
    floor = harness.Figure("floor", "µs", [1.0, 1.5, 0.5], "lower")
    assert harness.ratio(lat, floor) == 3.0
    thr = harness.Figure("corral:t", "tasks/s", [100.0, 300.0, 200.0], "higher")
    peer = harness.Figure("ray:t", "tasks/s", [400.0], "higher")
    assert harness.ratio(thr, peer) == 2.0        # half the peer's throughput
    assert harness.versus(thr, peer) == 0.5       # Corral loses: below 1
    slow = harness.Figure("ray:rt", "µs", [30.0], "lower")
    assert harness.versus(lat, slow) == 10.0      # Corral 10x better


def test_report_pairs_corral_with_the_strongest_peer_and_says_why_not():
    figs = {("corral", "tasks_sync"): harness.Figure("corral:tasks_sync", "µs", [100.0, 90.0, 110.0], "lower"),
            ("ray", "tasks_sync"): harness.Figure("ray:tasks_sync", "µs", [1000.0], "lower"),
            ("dask", "tasks_sync"): harness.Figure("dask:tasks_sync", "µs", [400.0], "lower")}
    unavailable = {("dask", "put_calls"): "no object store"}
    floors = [harness.Figure("loopback TCP round trip, 64 B", "µs", [25.0], "lower")]
    text = harness.report(["corral", "ray", "dask"], ["tasks_sync", "put_calls"], figs, unavailable, {}, floors,
                          3, False)
    assert "| tasks_sync | µs ↓ | 100 (90.0 – 110) | 1,000 | 400 | 4.00× vs dask |" in text
    assert "dask / put_calls: no object store" in text
    assert "4.0× the loopback TCP round trip" in text


def test_json_file(tmp_path):
    fig = harness.Figure("x", "µs", [1.0, 2.0, 3.0], "lower")
    doc = harness.write_json(str(tmp_path / "r.json"), [fig])
    assert json.load(open(tmp_path / "r.json"))["figures"][0]["median"] == 2.0
    assert doc["machine"]["cpus"] >= 1


def test_smoke_run_of_every_corral_workload(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.load(open(tmp_path / "results.json"))
    measured = {f["name"] for f in doc["figures"]}
    for w in ("startup", "tasks_sync", "tasks_async", "multi_client_tasks_async", "put_calls", "get_calls",
              "put_gigabytes", "numpy_100MB_arg", "actor_calls_sync", "actor_calls_async",
              "multi_client_actor_calls_async", "actor_create", "durable_tasks", "durable_tasks_8_clients", "queued_1M",
              "idle_memory"):
        assert f"corral:{w}" in measured, (w, doc["unavailable"])
    assert "| durable_tasks |" in open(tmp_path / "results.md").read()


def test_smoke_run_of_the_observability_cost():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "observability.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for row in ("| tasks_sync |", "| tasks_async |", "| head_cpu_s |"):
        assert row in r.stdout, r.stdout


def test_smoke_run_of_the_direct_actor_call_path():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "actor_direct.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]  # (it fails itself if the direct runs did not go direct)
    for row in ("| actor_calls_sync (µs) |", "| actor_calls_async (calls/s) |"):
        assert row in r.stdout, r.stdout


def test_hop_trace_lines_up_every_process_on_a_direct_calls_path(tmp_path):
    # The driver, the agent and the actor's worker each stamp their points (CORRAL_HOP_TRACE): a
    # call counts only if it passed every one of them once, so a process that stamps nothing, or
    # a point left out of the path, leaves no call to report.
    out = tmp_path / "hops.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "hop_trace.py"), "--calls", "100",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.load(open(out))
    assert [s["to"] for s in doc["steps"]][-1] == "driver: get() returned to Python"
    assert all(s["median_us"] >= 0 for s in doc["steps"])
    # On the actor's machine the driver sends its calls to the worker and the worker writes results
    # back (decisions 46 and 50): the agent is off the call's way, both ways.
    assert len(doc["steps"]) == 8, doc["steps"]
    assert not any(s["from"].startswith("agent") or s["to"].startswith("agent") for s in doc["steps"])
    assert {"from": "worker: writing the result to the caller", "to": "driver: result decoded"}.items() <= \
        next(s for s in doc["steps"] if s["to"] == "driver: result decoded").items()
    assert "(hop)" in r.stdout and "of 100 calls passed every point once" in r.stdout
