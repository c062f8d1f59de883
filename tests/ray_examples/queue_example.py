# ray.util.queue.Queue shared between the driver and tasks.
import corral.compat.ray as ray
from corral.compat.ray.util.queue import Empty, Full, Queue

queue = Queue(maxsize=100)


@ray.remote
def consumer(queue, n):
    return [queue.get(block=True) for _ in range(n)]


ref = consumer.remote(queue, 5)
for i in range(5):
    queue.put(i)
print(ray.get(ref))
print(queue.empty(), queue.size())
queue.put_nowait_batch([1, 2, 3])
print(queue.qsize(), queue.get_nowait(), queue.get_nowait_batch(2))
try:
    queue.get(timeout=0.2)
except Empty:
    print("Empty")
small = Queue(maxsize=1)
small.put("x")
try:
    small.put("y", block=False)
except Full:
    print("Full")
print("ray.util.queue reachable:", ray.util.queue.Queue is Queue)
