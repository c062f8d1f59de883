# Errors: RayTaskError with the cause's class, as_instanceof_cause, timeouts, cancel, crashes.
import os
import time

import corral.compat.ray as ray
from corral.compat.ray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError, WorkerCrashedError


class MyError(Exception):
    pass


@ray.remote
def fail():
    raise MyError("my message")


@ray.remote
def slow():
    time.sleep(30)


@ray.remote(max_retries=0)
def crash():
    os._exit(1)


try:
    ray.get(fail.remote())
except MyError as e:
    print("caught as MyError:", isinstance(e, RayTaskError), "my message" in str(e))
try:
    ray.get(fail.remote())
except RayTaskError as e:
    print("as_instanceof_cause:", isinstance(e.as_instanceof_cause(), MyError))
try:
    ray.get(slow.remote(), timeout=0.5)
except GetTimeoutError:
    print("GetTimeoutError")
ref = slow.remote()
ray.cancel(ref)
try:
    ray.get(ref)
except TaskCancelledError:
    print("TaskCancelledError")
try:
    ray.get(crash.remote())
except WorkerCrashedError:
    print("WorkerCrashedError")
print(issubclass(ray.exceptions.RayActorError, ray.exceptions.RayError),
      issubclass(ray.exceptions.GetTimeoutError, ray.exceptions.RayError))
