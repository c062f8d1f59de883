# Tasks: remote functions, options, refs passed to tasks, nested tasks, wait, put.
import corral.compat.ray as ray


@ray.remote
def square(x):
    return x * x


@ray.remote(num_cpus=1, max_retries=2)
def add(a, b):
    return a + b


@ray.remote
def sum_squares(n):
    return sum(ray.get([square.remote(i) for i in range(n)]))  # nested tasks


refs = [square.remote(i) for i in range(5)]
print("squares", ray.get(refs))
print("chained", ray.get(add.remote(square.remote(3), square.remote(4))))
print("options", ray.get(add.options(num_cpus=0.5, name="adder").remote(1, 2)))
print("nested", ray.get(sum_squares.remote(4)))
big = ray.put(list(range(1000)))
print("put", ray.get(big)[-1], ray.get(add.remote(ray.get(big)[1], 1)))
ready, not_ready = ray.wait(refs, num_returns=2, timeout=30)
print("wait", len(ready), len(not_ready))
print("in a list", ray.get([ray.put(1), ray.put("two")]))
try:
    square(3)
except TypeError:
    print("calling a remote function directly raises TypeError")
