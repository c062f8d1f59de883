# Objects: refs inside values are passed through, refs as arguments are resolved, arrays.
import numpy as np

import corral.compat.ray as ray


@ray.remote
def echo(x):
    return x


@ray.remote
def total(arr):
    return float(arr.sum())


@ray.remote
def make_ref():
    return [ray.put("made inside a task")]


inner = ray.put(41)
print(ray.get(echo.remote(inner)))                  # resolved: the value
wrapped = ray.get(echo.remote([inner]))             # inside a list: still a ref
print(type(wrapped[0]).__name__, ray.get(wrapped[0]))
arr = np.arange(10, dtype=np.float64)
ref = ray.put(arr)
print(ray.get(total.remote(ref)))
got = ray.get(ref)
print(got.flags.writeable)
print(ray.get(ray.get(make_ref.remote())[0]))
print(isinstance(ref, ray.ObjectRef))
