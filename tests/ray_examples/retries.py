# retry_exceptions and max_retries: application errors retried when asked, crashes retried by default.
import os
import tempfile

import corral.compat.ray as ray

counter = os.path.join(tempfile.mkdtemp(), "count")


@ray.remote(max_retries=3, retry_exceptions=True)
def flaky(path):
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    if n < 2:
        raise RuntimeError("not yet")
    return n


@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def wrong_kind():
    raise ValueError("not retried")


@ray.remote(max_retries=1)
def crash_once(path):
    if not os.path.exists(path):
        open(path, "w").close()
        os._exit(1)
    return "survived a crash"


print("flaky returned", ray.get(flaky.remote(counter)))
try:
    ray.get(wrong_kind.remote())
except ValueError as e:
    print("not retried:", isinstance(e, ValueError))
print(ray.get(crash_once.remote(counter + ".crash")))
