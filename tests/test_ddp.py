"""corral.ddp on real processes: torch.distributed with gloo on CPUs, two workers in a gang, on one
node and across two. torch comes from scripts/setup-torch.sh (PyPI's wheel, used on CPUs only)."""
import os
import subprocess

import pytest

import corral
from conftest import Cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def torch_site():
    out = subprocess.run([f"{ROOT}/scripts/setup-torch.sh"], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, f"scripts/setup-torch.sh failed:\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def torch_cluster(torch_site):
    c = Cluster()
    c.torch_env = {"PYTHONPATH": torch_site}
    yield c
    corral.shutdown()
    c.stop()


def train(scale):
    import torch
    import torch.distributed as dist
    t = torch.tensor([float(dist.get_rank() + 1) * scale])
    dist.all_reduce(t)  # a sum over the ranks
    return {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": t.item(), "backend": dist.get_backend(),
            "node": os.environ["CORRAL_NODE_ID"]}


def test_ddp_all_reduces_with_gloo_on_one_node(torch_cluster):
    torch_cluster.add_agent(num_cpus=2, env=torch_cluster.torch_env)
    torch_cluster.connect()
    torch_cluster.wait_nodes(1)
    out = corral.ddp(train, 10.0, workers=2, timeout=60)
    assert [o["rank"] for o in out] == [0, 1]
    assert {o["world"] for o in out} == {2} and {o["backend"] for o in out} == {"gloo"}
    assert [o["sum"] for o in out] == [30.0, 30.0]
    assert corral.gangs() == [], "ddp removes the gang it made"


def test_ddp_across_two_nodes_and_a_failing_rank(torch_cluster):
    a = torch_cluster.add_agent(num_cpus=1, env=torch_cluster.torch_env)
    b = torch_cluster.add_agent(num_cpus=1, env=torch_cluster.torch_env)
    torch_cluster.connect()
    torch_cluster.wait_nodes(2)
    out = corral.ddp(train, 1.0, workers=2, strategy="strict_spread", timeout=60)
    assert {o["node"] for o in out} == {a.node_id, b.node_id}
    assert [o["sum"] for o in out] == [3.0, 3.0]

    def broken():
        import torch
        import torch.distributed as dist
        if dist.get_rank() == 1:
            raise ValueError("bad shard")
        dist.all_reduce(torch.ones(1))  # rank 0 waits for rank 1, which never comes: it is stopped
    with pytest.raises(corral.GangMemberError) as err:
        corral.ddp(broken, workers=2, strategy="strict_spread", timeout=60)
    assert err.value.member == 1 and "ValueError: bad shard" in str(err.value), str(err.value)
    assert corral.gangs() == []
