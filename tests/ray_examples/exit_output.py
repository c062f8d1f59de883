# A script that submits tasks and exits without waiting: their output still reaches the terminal.
import corral.compat.ray as ray


@ray.remote
def hello(i):
    print(f"hello from task {i}")


for i in range(5):
    hello.remote(i)
