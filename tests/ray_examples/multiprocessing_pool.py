# ray.util.multiprocessing.Pool: the standard library's Pool API on the cluster.
from corral.compat.ray.util.multiprocessing import Pool


def square(x):
    return x * x


def add(a, b):
    return a + b


with Pool(2) as pool:
    print(pool.map(square, range(8)))
    print(pool.starmap(add, [(1, 2), (3, 4)]))
    print(pool.apply(square, (9,)))
    r = pool.apply_async(add, (5, 6))
    print(r.get(timeout=30), r.successful())
    print(list(pool.imap(square, [1, 2, 3])))
    print(sorted(pool.imap_unordered(square, [4, 5, 6])))
