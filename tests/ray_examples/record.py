#!/usr/bin/env python3
"""Records what Ray prints for each example here: expected/NAME.txt and expected/NAME.rc.

    .venv-bench/bin/python tests/ray_examples/record.py [NAME ...]

Run with a Python that has Ray (``.venv-bench``, made by ``bench/run.py``). Each example is run
with its import changed back to ``import ray``. tests/test_ray_compat.py compares Corral's output
with these files.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import to_ray  # noqa: E402


def main(names):
    names = names or sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and f not in ("compare.py", "record.py"))
    os.makedirs(os.path.join(HERE, "expected"), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            script = os.path.join(tmp, n + ".py")
            with open(os.path.join(HERE, n + ".py")) as f, open(script, "w") as out:
                out.write(to_ray(f.read()))
            p = subprocess.run([sys.executable, script], cwd=tmp, capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1"))
            with open(os.path.join(HERE, "expected", n + ".txt"), "w") as f:
                f.write(p.stdout + p.stderr)
            with open(os.path.join(HERE, "expected", n + ".rc"), "w") as f:
                f.write(f"{p.returncode}\n")
            print(f"{n}: exit {p.returncode}", flush=True)
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "stop", "--force"],
                           capture_output=True)


if __name__ == "__main__":
    main(sys.argv[1:])
