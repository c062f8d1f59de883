"""``corral.ddp``: a function run with ``torch.distributed`` set up on a gang of processes.

    def train(cfg):
        model = torch.nn.parallel.DistributedDataParallel(make_model(cfg).to(device))
        ...                                      # torch.distributed is ready: all_reduce, DDP, ...
        return final_loss

    losses = corral.ddp(train, cfg, workers=4, gpus_per_worker=1)   # a list of 4 results, by rank
"""
import datetime
import os
import sys

from . import exceptions
from .gang import gang, stamp_failure


def ddp(train_fn, *args, workers=1, gpus_per_worker=0, cpus_per_worker=1, memory_per_worker=None, backend=None,
        strategy="pack", max_restarts=0, timeout=None, **kwargs):
    """Runs ``train_fn(*args, **kwargs)`` in ``workers`` processes at once, each holding
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs of its own (a gang, placed by
    ``strategy``), with ``torch.distributed`` initialised before and destroyed after: ``nccl`` when
    the workers have GPUs, else ``gloo`` (or ``backend``). On GPUs each process's device is
    ``cuda:0``, its own, since ``CUDA_VISIBLE_DEVICES`` names only its devices. Returns the results
    by rank. A worker that fails stops the others and raises GangMemberError; ``max_restarts`` starts
    them all again. ``timeout``: seconds to wait for the resources (None: as long as it takes,
    saying what it waits for every 30 s). The gang is removed at the end."""
    if not callable(train_fn):
        raise exceptions.InvalidArgumentError(f"ddp({train_fn!r}): give the training function")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise exceptions.InvalidArgumentError(f"workers={workers!r}: must be an int >= 1")
    if backend is not None and backend not in ("nccl", "gloo", "mpi", "ucc"):
        raise exceptions.InvalidArgumentError(f"backend={backend!r}: use nccl, gloo (or None: nccl on GPUs)")
    if 0 < gpus_per_worker < 1 and backend in (None, "nccl"):
        raise exceptions.InvalidArgumentError(
            f"gpus_per_worker={gpus_per_worker}: nccl needs a device of its own per rank; ask whole GPUs, or "
            "backend='gloo' to share one")
    g = gang(workers, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, memory=memory_per_worker,
             strategy=strategy, name=f"ddp:{getattr(train_fn, '__qualname__', 'train')}")
    try:
        _wait_ready(g, timeout)
        return g.run(_ddp_member, train_fn, backend, args, kwargs, max_restarts=max_restarts)
    finally:
        g.remove()


def _wait_ready(g, timeout):
    if timeout is not None:
        if not g.ready(timeout):
            raise exceptions.GangError(f"the {len(g)} ddp workers' resources were not free within {timeout} s: "
                                       f"{g.info()['reason']}")
        return
    while not g.ready(30):
        print(f"corral: ddp waits for its {len(g)} workers' resources: {g.info()['reason']}", file=sys.stderr,
              flush=True)


def _ddp_member(train_fn, backend, args, kwargs):
    try:
        import torch
        import torch.distributed as dist
    except ImportError as e:
        raise exceptions.CorralError(f"corral.ddp needs torch on every node running a worker: {e}") from e
    use_cuda = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) and torch.cuda.is_available()
    backend = backend or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(0)  # the first of its own devices
    dist.init_process_group(backend=backend, init_method="env://", rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), timeout=datetime.timedelta(minutes=10))
    try:
        return train_fn(*args, **kwargs)
    except BaseException as e:
        stamp_failure(e)  # before the teardown below, which makes the other ranks fail too
        raise
    finally:
        dist.destroy_process_group()
