"""GPUs on real processes, with a stand-in NVML library (src/corral/agent/testing/fake_nvml.cc) that
reports the devices a test names: detection, CUDA_VISIBLE_DEVICES per task, whole and fractional
requests, no worker reuse across device sets, and CPU work kept off GPU nodes."""
import glob
import os
import subprocess

import pytest

import corral
from corral import _cluster
from conftest import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H200 = "NVIDIA H200|150754820096|GPU-aaaaaaaa-0000-4000-8000-000000000000"
RTX = "NVIDIA GeForce RTX 4090|25757220864|GPU-bbbbbbbb-0000-4000-8000-000000000001"


def fake_nvml():
    found = sorted(glob.glob(f"{ROOT}/build/*/fake_nvml/libnvidia-ml.so.1"))
    assert found, "the fake NVML library is built with the tests: run scripts/setup.sh --with-tests"
    return found[-1]


def gpu_env(*devices, fail=None):
    env = {"CORRAL_NVML_LIBRARY": fake_nvml(), "CORRAL_FAKE_NVML_DEVICES": ";".join(devices)}
    if fail:
        env["CORRAL_FAKE_NVML_FAIL"] = fail
    return env


def add_gpu_agent(cluster, *devices, num_cpus=4):
    return cluster.add_agent(num_cpus=num_cpus, num_gpus=None, env=gpu_env(*devices))


@corral.remote
def rendezvous(where, n, me, hold=0.0):
    """Arrives at `where`, waits until n tasks have: proof that they ran at the same time. Returns
    what the task saw."""
    import time
    open(os.path.join(where, me), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(where)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(where))} of {n} tasks arrived")
        time.sleep(0.01)
    time.sleep(hold)
    return {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "node": os.environ["CORRAL_NODE_ID"],
            "gpu_ids": corral.runtime_context().gpu_ids}


def test_devices_nvml_reports_show_in_nodes_and_status(cluster):
    agent = add_gpu_agent(cluster, H200, RTX)
    cluster.connect()
    node = next(n for n in cluster.wait_nodes(1) if n["node_id"] == agent.node_id)
    assert node["resources"]["GPU"] == 2
    assert [(g["index"], g["name"], g["uuid"]) for g in node["gpus"]] == [
        (0, "NVIDIA H200", "GPU-aaaaaaaa-0000-4000-8000-000000000000"),
        (1, "NVIDIA GeForce RTX 4090", "GPU-bbbbbbbb-0000-4000-8000-000000000001")]
    assert node["gpus"][0]["memory_bytes"] == 150754820096
    out = subprocess.run([_cluster.corral_binary(), "status", "--address", cluster.address], env=cluster.env(),
                         capture_output=True, text=True, timeout=30).stdout
    assert "GPUs (as NVML reports them)" in out and "NVIDIA H200" in out and "GPU-bbbbbbbb" in out, out


def test_agent_given_some_devices_by_uuid_reports_only_those(cluster):
    cluster.add_agent(num_cpus=2, num_gpus=None, env={**gpu_env(H200, RTX),
                                                    "CUDA_VISIBLE_DEVICES": "GPU-bbbbbbbb-0000-4000-8000-000000000001"})
    cluster.connect()
    node = cluster.wait_nodes(1)[0]
    assert node["resources"]["GPU"] == 1
    assert [g["index"] for g in node["gpus"]] == [1]

    @corral.remote(num_gpus=1)
    def seen():
        return os.environ["CUDA_VISIBLE_DEVICES"]
    assert corral.get(seen.remote(), timeout=60) == "1"


def test_failing_nvml_leaves_a_working_cpu_node_and_says_why(cluster):
    agent = cluster.add_agent(num_cpus=1, num_gpus=None, env=gpu_env(H200, fail="init"))
    cluster.connect()
    node = cluster.wait_nodes(1)[0]
    assert node["resources"].get("GPU", 0) == 0 and node["gpus"] == []

    @corral.remote
    def one():
        return 1
    assert corral.get(one.remote(), timeout=60) == 1
    with open(agent.log_path) as f:
        assert "Driver Not Loaded" in f.read()


def test_whole_gpu_tasks_see_exactly_their_devices(cluster, tmp_path):
    add_gpu_agent(cluster, H200, H200, H200, num_cpus=4)
    cluster.connect()
    cluster.wait_nodes(1)
    one = rendezvous.options(num_gpus=1, num_cpus=1)
    two = rendezvous.options(num_gpus=2, num_cpus=1)
    got = corral.get([one.remote(str(tmp_path), 2, "a"), two.remote(str(tmp_path), 2, "b")], timeout=60)
    assert len(got[0]["cvd"].split(",")) == 1 and len(got[1]["cvd"].split(",")) == 2, got
    assert set(got[0]["cvd"].split(",")) | set(got[1]["cvd"].split(",")) == {"0", "1", "2"}, got
    assert got[0]["gpu_ids"] == [int(got[0]["cvd"])]
    cpu_only = corral.get(rendezvous.remote(str(tmp_path), 0, "c"), timeout=60)
    assert cpu_only["cvd"] == "", "a task asking no GPU sees none"


def test_fractions_share_one_device_packed_and_leave_the_other_whole(cluster, tmp_path):
    add_gpu_agent(cluster, H200, H200, num_cpus=6)
    cluster.connect()
    cluster.wait_nodes(1)
    quarter = rendezvous.options(num_gpus=0.25, num_cpus=1)
    whole = rendezvous.options(num_gpus=1, num_cpus=1)
    refs = [quarter.remote(str(tmp_path), 5, f"q{i}") for i in range(4)] + [whole.remote(str(tmp_path), 5, "w")]
    got = corral.get(refs, timeout=90)
    quarters = {g["cvd"] for g in got[:4]}
    assert len(quarters) == 1, f"four quarters of a device shared one device: {got}"
    assert got[4]["cvd"] not in quarters, f"the whole-device task got the other device: {got}"
    assert len({g["pid"] for g in got[:4]}) == 4, "each quarter ran in its own worker, at the same time"


def test_a_gpu_worker_is_never_reused_with_another_device_set(cluster, tmp_path):
    add_gpu_agent(cluster, H200, H200, num_cpus=4)
    cluster.connect()
    cluster.wait_nodes(1)
    seen = {}
    for round_ in range(4):
        d = tmp_path / str(round_)
        d.mkdir()
        # Three at once: two take both devices (which gets which varies), one takes none.
        got = corral.get([rendezvous.options(num_gpus=1).remote(str(d), 3, "a"),
                          rendezvous.options(num_gpus=1).remote(str(d), 3, "b"),
                          rendezvous.remote(str(d), 3, "cpu")], timeout=60)
        for g in got:
            seen.setdefault(g["pid"], set()).add(g["cvd"])
    assert all(len(sets) == 1 for sets in seen.values()), f"a worker ran with two device sets: {seen}"
    assert {"0", "1", ""} <= {next(iter(s)) for s in seen.values()}


def test_cpu_work_keeps_off_the_gpu_node_while_another_has_room(cluster, tmp_path):
    gpu = add_gpu_agent(cluster, H200, num_cpus=2)
    cpu = cluster.add_agent(num_cpus=2)
    cluster.connect()
    cluster.wait_nodes(2)
    d1 = tmp_path / "two"
    d1.mkdir()
    got = corral.get([rendezvous.remote(str(d1), 2, str(i)) for i in range(2)], timeout=60)
    assert {g["node"] for g in got} == {cpu.node_id}, got
    d2 = tmp_path / "four"
    d2.mkdir()
    got = corral.get([rendezvous.remote(str(d2), 4, str(i)) for i in range(4)], timeout=60)
    nodes = [g["node"] for g in got]
    assert nodes.count(cpu.node_id) == 2 and nodes.count(gpu.node_id) == 2, "the GPU node takes what does not fit"
    on_gpu = corral.get(rendezvous.options(num_gpus=1).remote(str(d2), 0, "g"), timeout=60)
    assert on_gpu["node"] == gpu.node_id
