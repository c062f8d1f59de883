"""Options that act inside the worker, around the task's own code: ``retry_exceptions`` and
``runtime_env={"env_vars": ...}``. The function is shipped wrapped in a :class:`Wrapped`."""
import inspect
import os
import sys

from . import exceptions

RUNTIME_ENV_KEYS = ("env_vars",)


def check_retry_exceptions(v):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(t, type) and issubclass(t, BaseException) for t in v):
        return tuple(v)
    raise exceptions.InvalidArgumentError(
        f"retry_exceptions={v!r}: use True (any exception), False, or a list of exception classes")


def check_runtime_env(env):
    if env is None:
        return None
    if not isinstance(env, dict):
        raise exceptions.InvalidArgumentError(f"runtime_env={env!r}: must be a dict such as {{'env_vars': {{...}}}}")
    other = sorted(set(env) - set(RUNTIME_ENV_KEYS))
    if other:
        raise exceptions.InvalidArgumentError(
            f"runtime_env keys {other} are not supported: only 'env_vars' is. Install packages on every node "
            "(or in the venv the agents use) and ship code as modules the workers can import")
    ev = env.get("env_vars") or {}
    if not isinstance(ev, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ev.items()):
        raise exceptions.InvalidArgumentError(f"runtime_env['env_vars']={ev!r}: must map str to str")
    return env


class Wrapped:
    """A task's function with the options that run in its worker. The environment variables are set
    while the function runs (and stay set in an actor's worker, which is the actor's alone);
    exceptions that ``retry_exceptions`` names re-run the function, at most ``retries`` times."""

    def __init__(self, fn, retry_exceptions=None, retries=0, env_vars=None, keep_env=False, capture_gang=None):
        self.fn = fn
        self.capture_gang = capture_gang
        self.retry_exceptions = tuple(retry_exceptions) if isinstance(retry_exceptions, list) else retry_exceptions
        self.retries = retries
        self.env_vars = dict(env_vars or {})
        self.keep_env = keep_env
        self.__name__ = getattr(fn, "__name__", "task")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", None)

    def _retryable(self, e):
        r = self.retry_exceptions
        if r is True:
            return isinstance(e, Exception)
        return bool(r) and isinstance(e, r)

    def __call__(self, *args, **kwargs):
        from . import _runtime
        saved = {k: os.environ.get(k) for k in self.env_vars}
        os.environ.update(self.env_vars)
        captured = None
        if self.capture_gang is not None:
            if self.keep_env:  # an actor: its worker is its own, for its whole life
                _runtime.actor_capture_gang = self.capture_gang
            else:
                captured = _runtime.capture_gang.set(self.capture_gang)
        try:
            tries = 0
            while True:
                try:
                    result = self.fn(*args, **kwargs)
                    if inspect.isgenerator(result):  # its body runs here, with the variables set
                        from .generators import drain  # (its errors are stored as values: not retried)
                        result = drain(result, self.__qualname__)
                    return result
                except Exception as e:
                    if tries >= self.retries or not self._retryable(e):
                        raise
                    tries += 1
                    print(f"corral: {self.__qualname__} raised {type(e).__name__}: {e}; retrying "
                          f"({tries} of {self.retries}, retry_exceptions)", file=sys.stderr, flush=True)
        finally:
            if captured is not None:
                _runtime.capture_gang.reset(captured)
            if not self.keep_env:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


def wrap(fn, options, retries, keep_env=False):
    """`fn` as the worker should call it under `options`: itself when no option acts in the worker."""
    from . import _runtime
    retry = options.get("retry_exceptions")
    env_vars = dict(_runtime.job_env_vars)
    env_vars.update((options.get("runtime_env") or {}).get("env_vars") or {})
    capture = options.get("gang") if options.get("gang_capture") else None
    if not retry and not env_vars and capture is None:
        return fn
    return Wrapped(fn, retry, retries if retry else 0, env_vars, keep_env, capture)
