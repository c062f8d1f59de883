"""The benchmark harness's statistics, and a smoke run of every workload (timings not judged)."""
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))

import harness  # noqa: E402


def test_median_min_max_and_ratios():
    lat = harness.Figure("rt", "µs", [5.0, 1.0, 3.0], "lower")
    assert lat.median == 3.0
    floor = harness.Figure("floor", "µs", [1.0, 1.5, 0.5], "lower")
    assert harness.ratio(lat, floor) == 3.0
    thr = harness.Figure("tput", "tasks/s", [100.0, 300.0, 200.0], "higher")
    best = harness.Figure("peer", "tasks/s", [400.0], "higher")
    assert harness.ratio(thr, best) == 2.0   # half the peer's throughput: 2x slower


def test_table_and_json(tmp_path):
    fig = harness.Figure("x", "µs", [1.0, 2.0, 3.0], "lower")
    text = harness.table([("x", fig, "note")])
    assert "| x | 2.00 | 1.00 – 3.00 | µs | note |" in text
    doc = harness.write_json(str(tmp_path / "r.json"), [fig])
    assert json.load(open(tmp_path / "r.json"))["figures"][0]["median"] == 2.0
    assert doc["machine"]["cpus"] >= 1


def test_smoke_run_of_every_workload(tmp_path):
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    names = {f["name"] for f in json.load(open(out))["figures"]}
    assert {"tasks_sync", "tasks_async", "loopback TCP RTT 64 B"} <= names
