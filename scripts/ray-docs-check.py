#!/usr/bin/env python3
"""Runs Ray's own documentation examples on Corral with only the import changed, and compares
each one's output with what Ray printed for it.

    scripts/ray-docs-check.py EXAMPLES_DIR RAY_OUTPUT_DIR [--only NAME ...] [--out DIR]

EXAMPLES_DIR holds the example scripts (Ray's doc/source/ray-core/doc_code/*.py, from a checkout
of ray-project/ray). RAY_OUTPUT_DIR holds NAME.txt (stdout and stderr) and NAME.rc (or NAME.py.txt, NAME.py.rc) (exit code) of
each one run on Ray. Each script is rewritten so that ``import ray`` is
``import corral.compat.ray as ray`` (``from ray.x import y`` likewise) and run with .venv's Python,
120 s at most. A script matches when its exit code is Ray's and every line it printed on Ray, less
Ray's own log lines and numbers that vary from run to run (ids, times, addresses), appears on
Corral in the same order. Prints one line per example and the share that matched.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")

sys.path.insert(0, os.path.join(ROOT, "tests", "ray_examples"))
from compare import _raised, matches, rewrite  # noqa: E402

# Examples that fail on Ray on purpose (they show an error); the others that fail or time out on
# Ray (a package or service this machine lacks, an API this Ray lacks, too big for it) are skipped.
FAIL_BY_DESIGN = {"deser"}
# Examples whose output depends on random draws (how many attempts fail): compared on exit code.
RANDOM_OUTPUT = {"tasks_fault_tolerance"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("examples")
    ap.add_argument("ray_output")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default="/tmp/corral-ray-docs")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    names = sorted(f[:-3] for f in os.listdir(a.examples) if f.endswith(".py"))
    if a.only:
        names = [n for n in names if n in a.only]
    ok = 0
    rows = []
    for n in names:
        base = next((os.path.join(a.ray_output, n + ext) for ext in ("", ".py")
                     if os.path.exists(os.path.join(a.ray_output, n + ext + ".rc"))), None)
        if base is None:
            continue
        ray_rc = int(open(base + ".rc").read().strip() or 1)
        ray_text = open(base + ".txt", errors="replace").read()
        if ray_rc != 0 and n not in FAIL_BY_DESIGN:
            why = "timed out" if ray_rc in (124, 137) else f"raised {_raised(ray_text)}"
            print(f"skip {n:55s}        fails on Ray itself: {why}", flush=True)
            continue
        script = os.path.join(a.out, n + ".py")
        with open(os.path.join(a.examples, n + ".py")) as f:
            src = rewrite(f.read())
        with open(script, "w") as f:
            f.write(src)
        t = time.monotonic()
        try:
            p = subprocess.run([PYTHON, script], cwd=a.out, capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
            rc, text = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc, text = 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        with open(os.path.join(a.out, n + ".txt"), "w") as f:
            f.write(text)
        if n in RANDOM_OUTPUT:
            good, why = rc == ray_rc, f"(random output: exit code {rc}, Ray {ray_rc})"
        else:
            good, why = matches(ray_text, ray_rc, text, rc)
        ok += good
        rows.append((n, good, why, time.monotonic() - t))
        print(f"{'ok  ' if good else 'DIFF'} {n:55s} {time.monotonic() - t:5.1f}s {why}", flush=True)
    print(f"\n{ok} of {len(rows)} examples behave as on Ray ({100 * ok / max(1, len(rows)):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
