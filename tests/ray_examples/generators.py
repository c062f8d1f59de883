# Generator tasks: streaming (ObjectRefGenerator) and num_returns="dynamic", errors mid-way.
import corral.compat.ray as ray


@ray.remote
def count(n):
    for i in range(n):
        yield i


@ray.remote(num_returns="dynamic")
def dynamic(n):
    for i in range(n):
        yield i * i


@ray.remote
def fails_after_one():
    yield 1
    raise ValueError("generator failed")


gen = count.remote(4)
print(type(gen).__name__)
print([ray.get(ref) for ref in gen])
dyn_ref = dynamic.remote(3)
dyn = ray.get(dyn_ref)
print(type(dyn).__name__, [ray.get(r) for r in dyn])
g = fails_after_one.remote()
print(ray.get(next(g)))
try:
    ray.get(next(g))
except ValueError as e:
    print("error after the first item:", "generator failed" in str(e))
ref1, ref2, ref3 = fails_after_one.options(num_returns=3).remote()
print(ray.get(ref1))
for r in (ref2, ref3):
    try:
        ray.get(r)
    except ValueError:
        print("the remaining refs hold the error")
d = ray.get(fails_after_one.options(num_returns="dynamic").remote())
r1, r2 = d
print(ray.get(r1))
try:
    ray.get(r2)
except ValueError:
    print("a dynamic generator's last ref holds the error")


@ray.remote
class Streamer:
    def stream(self, n):
        for i in range(n):
            yield f"item {i}"


st = Streamer.remote()
print([ray.get(r) for r in st.stream.remote(2)])


async def consume():
    return [await ref async for ref in count.remote(3)]

import asyncio  # noqa: E402
print("async for", asyncio.run(consume()))
gen = count.remote(2)
ready, _ = ray.wait([gen], timeout=60)
print("a generator is ready when its next value is:", len(ready))
print([ray.get(r) for r in gen])
