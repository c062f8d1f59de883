"""``ray.experimental.tqdm_ray.tqdm``: accepted so that code using it runs; it counts and draws
nothing (a task's output reaches the driver line by line, where a redrawn bar would be noise)."""


class tqdm:  # noqa: N801 - Ray's name
    def __init__(self, iterable=None, desc=None, total=None, position=None, unit="it", **_ignored):
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = 0

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.n += 1

    def update(self, n=1):
        self.n += n

    def set_description(self, desc):
        self.desc = desc

    def refresh(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def safe_print(*args, **kwargs):
    print(*args, **kwargs)
