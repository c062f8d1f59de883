# num_returns: static, from options, from a generator, and on actor methods.
import corral.compat.ray as ray


@ray.remote(num_returns=3)
def three():
    return 1, 2, 3


@ray.remote
def pair():
    return "a", "b"


@ray.remote(num_returns=3)
def yielding():
    for i in range(3):
        yield i * 10


@ray.remote
class Splitter:
    @ray.method(num_returns=2)
    def split(self, s):
        return s[:2], s[2:]

    def halves(self, x):
        return x // 2, x - x // 2


a, b, c = three.remote()
print(ray.get(a), ray.get(b), ray.get(c))
x, y = pair.options(num_returns=2).remote()
print(ray.get([x, y]))
print(ray.get(yielding.remote()))
s = Splitter.remote()
left, right = s.split.remote("abcd")
print(ray.get(left), ray.get(right))
h1, h2 = s.halves.options(num_returns=2).remote(7)
print(ray.get(h1), ray.get(h2))
print(pair.options(num_returns=0).remote())
