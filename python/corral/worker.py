"""The worker process: ``python -m corral.worker``, started by the node's agent.

It connects to the agent's Unix socket, then runs one task at a time: load the function (shipped
once per worker, by hash), unpickle the arguments with dependency values in place, call it, and
send back the pickled result or exception. Output goes to the agent through stdout/stderr.
"""
import math
import os
import pickle
import signal
import sys

from . import _core, _runtime, _task_output, durable, exceptions, serialization

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _set_threads(cpus):
    n = str(max(1, math.ceil(cpus)))
    for var in _THREAD_VARS:
        os.environ[var] = n
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.set_num_threads(int(n))
        except Exception:
            pass


def _soft_limit(signum, frame):
    # A durable task's soft time limit: an exception it may catch to clean up; never raised outside
    # the task's own code (it would end the worker).
    if _runtime.in_task_code:
        raise exceptions.SoftTimeLimitExceeded(
            f"{_runtime.current_task.name} ran past its soft time limit")


def _interrupt(signum, frame):
    # corral.cancel() of a running task: interrupt the task it names, never the worker's own loop
    # (one that came early is raised when the task starts: _runtime.call_task). In an actor's
    # worker it names one of the actor's calls, which is marked instead.
    if _runtime.in_actor:
        from . import _actor_host
        for seq in _runtime.worker_link.take_call_cancels():
            _actor_host.cancel(seq)
        return
    if _runtime.in_task_code and _runtime.cancel_requested():
        raise KeyboardInterrupt("the task was cancelled")


def main():
    # The agent's result-channel socket (decision 46): this process's alone, before any user code.
    results_fd = int(os.environ.pop("CORRAL_RESULTS_FD", "-1"))
    try:
        if results_fd >= 0:
            os.set_inheritable(results_fd, False)
    except OSError:  # (not open: results go through the agent)
        results_fd = -1
    _task_output.install()  # before any user code: tasks' output is marked for `corral logs`
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGALRM, _soft_limit)
    task_functions = durable.import_task_modules()  # before connecting: the agent learns them in the hello
    link = _core.WorkerLink.connect(os.environ["CORRAL_AGENT_SOCKET"], os.environ["CORRAL_WORKER_ID"],
                                    os.environ.get("CORRAL_WORKER_SECRET", ""), _runtime.PYTHON_VERSION,
                                    _runtime.CLOUDPICKLE_VERSION, task_functions, results_fd)
    _runtime.worker_link = link
    _runtime.worker_id = os.environ["CORRAL_WORKER_ID"]
    _runtime.node_id = os.environ.get("CORRAL_NODE_ID")
    functions = {}
    threads = None
    while True:
        try:
            task = link.next_task()
        except exceptions.ConnectionLostError:
            return 0
        (task_id, attempt, name, fn_hash, fn_bytes, args, deps, resources, gpu_ids, owner, durable_function,
         args_format, soft_time_limit, parents, link_mode, forget, actor, seq) = task  # seq: what a cancel names it by
        for h in forget:  # no client and no task uses it any more
            functions.pop(h, None)
        _task_output.begin_task(task_id, name, attempt)
        cpus = resources.get("CPU", 1.0)
        if cpus != threads:
            _set_threads(cpus)
            threads = cpus
        _runtime.current_task = _runtime.TaskContext(task_id, attempt, name, resources, gpu_ids, seq, owner)
        if actor is not None:  # an actor's creation: this worker is the actor's until it ends
            from . import _actor_host
            _actor_host.run(link, task, functions)
            _runtime.current_task = None
            continue
        if durable_function:
            if soft_time_limit > 0:
                signal.setitimer(signal.ITIMER_REAL, soft_time_limit)
            try:
                data, kind, message, retry_in = _run_durable(durable_function, args, args_format, parents, link_mode)
                stored = 0
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        else:
            data, kind, message, stored = _run(functions, name, fn_hash, fn_bytes, args, deps, task_id, attempt)
            retry_in = -1.0
        _runtime.current_task = None
        try:
            link.finish(task_id, attempt, data, kind, message, retry_in, stored)
        except exceptions.ConnectionLostError:
            return 0


def _run(functions, name, fn_hash, fn_bytes, args, deps, task_id, attempt):
    """Runs a task: (data, error kind, message, stored size). A large result is written into this
    node's object store as (task_id, attempt), and `data` is empty."""
    fn, a, k, failed = load_call(functions, name, fn_hash, fn_bytes, args, deps)
    if failed:
        return failed
    try:
        result = _runtime.call_task(fn, a, k)
    except BaseException as e:  # noqa: BLE001 - every exception goes back to the caller
        return raised(e, name)
    return encode_result(result, name, task_id, attempt)


def raised(e, name):
    """The outcome of a call whose code raised `e`: its caller re-raises it. ``sys.exit()`` in a
    task or an actor's method ends the worker instead, as in Ray: the task is then treated as one
    whose worker died (retried, or WorkerCrashedError; an actor restarts, or ActorDiedError)."""
    if isinstance(e, SystemExit):
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    data, message = serialization.dump_exception(e, name)
    return data, exceptions.KIND_TASK_ERROR, message, 0


def load_call(functions, name, fn_hash, fn_bytes, args, deps):
    """(function or None, args, kwargs, None), or (None, None, None, the failure to report) when the
    function or the arguments cannot be had. No function is wanted when `fn_hash` is empty (an actor's call)."""
    for d in deps:  # a dependency lost after the task was queued (its node died)
        if d[1] != 0:
            return None, None, None, (b"", d[1], f"an argument of {name} is not available: {d[2]}", 0)
    try:
        fn = functions.get(fn_hash) if fn_hash else None
        if fn is None and fn_hash:
            if not fn_bytes:
                return None, None, None, (b"", exceptions.KIND_RUNTIME,
                                          f"worker {os.getpid()} was not sent the function of {name}", 0)
            fn = functions[fn_hash] = pickle.loads(fn_bytes)
        a, k = serialization.unpack_args(args, deps, _DEP_CLIENT)
    except serialization.ArgumentRaised as e:
        return None, None, None, (e.raised.data, exceptions.KIND_TASK_ERROR, e.raised.message, 0)
    except exceptions.ObjectLostError as e:
        return None, None, None, (b"", exceptions.KIND_OBJECT_LOST, f"an argument of {name}: {e}", 0)
    except Exception as e:
        return None, None, None, (b"", exceptions.KIND_SERIALIZATION,
                                  f"cannot unpickle the function or arguments of {name} on this worker: "
                                  f"{type(e).__name__}: {e}. Is the module that defines it importable here?", 0)
    return fn, a, k, None


def encode_result(result, name, task_id, attempt):
    """(data, 0, "", stored size) for a returned value, or the failure to report."""
    if serialization.always_inline(result):  # a small plain value (no refs, no store): pickled at once
        data = pickle.dumps(result, protocol=5)
        if len(data) <= serialization.MAX_VALUE_BYTES:  # (else the general path says why not)
            return data, 0, "", 0
    try:
        (data, stored, _), inner = serialization.collecting_refs(
            (result,), serialization.encode, result, f"the result of {name}", task_id, attempt)
        if inner:  # registered before the result is reported
            serialization.register_refs(_runtime.get_client(), task_id, inner)
        return data, 0, "", stored
    except exceptions.ObjectStoreFullError as e:
        return b"", exceptions.KIND_OBJECT_STORE_FULL, f"the result of {name}: {e}", 0
    except exceptions.CorralError as e:
        return b"", exceptions.KIND_SERIALIZATION, str(e), 0


class _DepClient:
    """The worker's client connection, opened only when an argument must be fetched from another node."""

    def __getattr__(self, name):
        return getattr(_runtime.get_client(), name)


_DEP_CLIENT = _DepClient()  # (holds nothing: one for every call)


def _run_durable(name, args, args_format, parents, link_mode):
    """(data, error kind, message, retry in seconds or -1 for the task's backoff)."""
    try:
        return durable.run(name, args, args_format, parents, link_mode), 0, "", -1.0
    except durable.NoRetry as e:
        data, message = serialization.dump_exception(e.cause, name)
        return data, exceptions.KIND_TASK_ERROR_FINAL, message, -1.0
    except durable.RetryIn as e:  # its cause (if any) is the task's error now, and at the end
        data, message = serialization.dump_exception(e if e.cause is None else e.cause, name)
        return data, exceptions.KIND_TASK_ERROR, message, e.countdown
    except BaseException as e:  # noqa: BLE001 - every exception goes back to the caller
        data, message = serialization.dump_exception(e, name)
        return data, exceptions.KIND_TASK_ERROR, message, -1.0


if __name__ == "__main__":
    sys.exit(main())
