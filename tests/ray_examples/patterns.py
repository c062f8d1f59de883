# Patterns from Ray's guide: map-reduce, a tree of tasks, pipelining with wait, limiting pending tasks.
import corral.compat.ray as ray


@ray.remote
def map_words(text):
    counts = {}
    for w in text.split():
        counts[w] = counts.get(w, 0) + 1
    return counts


@ray.remote
def reduce_counts(*parts):
    total = {}
    for p in parts:
        for k, v in p.items():
            total[k] = total.get(k, 0) + v
    return total


@ray.remote
def quick_sum(xs):
    if len(xs) <= 2:
        return sum(xs)
    mid = len(xs) // 2
    return sum(ray.get([quick_sum.remote(xs[:mid]), quick_sum.remote(xs[mid:])]))


@ray.remote
def work(i):
    return i * 2


texts = ["a b a", "b c", "c c a"]
print(sorted(ray.get(reduce_counts.remote(*[map_words.remote(t) for t in texts])).items()))
print(ray.get(quick_sum.remote(list(range(8)))))
pending = [work.remote(i) for i in range(10)]
done = []
while pending:
    ready, pending = ray.wait(pending, num_returns=1)
    done.append(ray.get(ready[0]))
print(sorted(done))
in_flight, results = [], []
for i in range(20):
    if len(in_flight) >= 4:
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        results += ray.get(ready)
    in_flight.append(work.remote(i))
results += ray.get(in_flight)
print(len(results), sum(results))
