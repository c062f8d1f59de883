"""What Corral does with this machine's GPUs, end to end (run by scripts/gpu-check.sh on a machine
with an NVIDIA GPU): what NVML detected, a num_gpus=1 task computing with torch on its device,
four num_gpus=0.25 tasks sharing one device at the same time, and a one-member corral.ddp with nccl."""
import os
import subprocess
import sys
import tempfile
import time

import corral


def section(title):
    print(f"\n=== {title}", flush=True)


def devices_seen():
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
            "gpu_ids": corral.runtime_context().gpu_ids}


def on_gpu(n):
    import torch
    x = torch.arange(n * n, dtype=torch.float32, device="cuda").reshape(n, n) / (n * n)
    y = (x @ x.T).sum().item()
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": torch.cuda.get_device_name(0),
            "device_count": torch.cuda.device_count(), "checksum": round(y, 3), "pid": os.getpid()}


def quarter(where, n):
    import torch
    open(os.path.join(where, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(where)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    together = len(os.listdir(where)) >= n
    t = torch.ones(1024, device="cuda").sum().item()
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "sum": t,
            "ran_together": together}


def ddp_step():
    import torch
    import torch.distributed as dist
    t = torch.ones(4, device="cuda") * (dist.get_rank() + 1)
    dist.all_reduce(t)
    return {"backend": dist.get_backend(), "world": dist.get_world_size(), "all_reduce": t.tolist(),
            "device": torch.cuda.get_device_name(0)}


def main():
    corral.init()
    section("what NVML detected (corral.nodes())")
    node = corral.nodes()[0]
    print("resources:", {k: v for k, v in node["resources"].items() if k != "memory"})
    for g in node["gpus"]:
        print(f"GPU {g['index']}: {g['name']}, {g['memory_bytes'] / 2**30:.1f} GiB, {g['uuid']}")
    if not node["gpus"]:
        print("no GPU detected: is the NVIDIA driver installed (nvidia-smi)?")
        return 1
    section("corral status")
    local = corral._runtime.cluster  # the local cluster init() started: its address and token
    out = subprocess.run([corral._cluster.corral_binary(), "status", "--address", local.address],
                         env=dict(os.environ, CORRAL_TOKEN=local.token), capture_output=True, text=True)
    print(out.stdout or out.stderr)
    section("what tasks see: num_gpus=1 tasks, then a task asking no GPU")
    whole = corral.remote(num_gpus=1, num_cpus=0)(devices_seen)
    print(corral.get([whole.remote() for _ in node["gpus"]], timeout=120))
    print(corral.get(corral.remote(devices_seen).remote(), timeout=120))
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not importable here: the torch tasks (on the GPU, shared, ddp with nccl) need it")
        return 1
    section("a num_gpus=1 task computing with torch on its device")
    print(corral.get(corral.remote(num_gpus=1)(on_gpu).remote(2048), timeout=300))
    section("four num_gpus=0.25 tasks sharing one device at the same time")
    with tempfile.TemporaryDirectory() as where:
        task = corral.remote(num_gpus=0.25, num_cpus=0)(quarter)
        for r in corral.get([task.remote(where, 4) for _ in range(4)], timeout=300):
            print(r)
    section("corral.ddp with one member (nccl)")
    print(corral.ddp(ddp_step, workers=1, gpus_per_worker=1, timeout=120))
    corral.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
