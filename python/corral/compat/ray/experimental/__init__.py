"""``ray.experimental``: only ``tqdm_ray``."""
