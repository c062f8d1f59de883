"""Ray-compatibility checks: rewriting a script's imports, and comparing its output with Ray's.

Used by tests/test_ray_compat.py (this folder's examples) and scripts/ray-docs-check.py (Ray's own
documentation examples).
"""
import re

_IMPORTS = [
    (re.compile(r"^(\s*)import ray(\s*(#.*)?)$", re.M), r"\1import corral.compat.ray as ray\2"),
    (re.compile(r"^(\s*)import ray\.([\w.]+)(\s+as\s+\w+)", re.M), r"\1import corral.compat.ray.\2\3"),
    (re.compile(r"^(\s*)import ray\.([\w.]+)\s*$", re.M), r"\1import corral.compat.ray as ray; import corral.compat.ray.\2"),
    (re.compile(r"^(\s*)from ray(\.[\w.]+)? import", re.M), r"\1from corral.compat.ray\2 import"),
]


def rewrite(source):
    for pattern, repl in _IMPORTS:
        source = pattern.sub(repl, source)
    return source


# Lines Ray's runtime prints itself, not the example.
_RAY_NOISE = re.compile(r"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)|Started a local Ray instance|"
                        r"View the dashboard|^\s*$|\(raylet\)|ray\.init\(|RAY_|Ray dashboard|"
                        r"\[repeated \d+x across cluster\]|\bINFO worker\.py)")
_VARYING = re.compile(r"(0x[0-9a-f]+|[0-9a-f]{16,}|\d+(\.\d+)?(e-?\d+)?|pid=\d+|ip=[\d.]+)")


def _normal(line):
    line = re.sub(r"^\((\w[\w.]*) pid=\d+(, ip=[\d.]+)?\)\s*", "", line)   # Ray's task prefix
    line = re.sub(r"^\(\S+ pid=\d+ node=[0-9a-f]+\)\s*", "", line)          # Corral's
    return _VARYING.sub("#", line).strip()


def _lines(text, noise):
    return [_normal(l) for l in text.splitlines() if not (noise and _RAY_NOISE.search(l)) and l.strip()]


def matches(ray_text, ray_rc, corral_text, corral_rc):
    if ray_rc != corral_rc:
        return False, f"exit code {corral_rc} (Ray: {ray_rc})"
    if ray_rc != 0:  # both failed: compare nothing more
        return True, ""
    want = [l for l in _lines(ray_text, True) if not l.startswith(("Traceback", "File ", "^"))]
    have = _lines(corral_text, False)
    i = 0
    for w in want:
        while i < len(have) and have[i] != w:
            i += 1
        if i == len(have):
            return False, f"missing line: {w!r}"
        i += 1
    return True, ""


def to_ray(source):
    """The inverse of rewrite() for this folder's examples: the script as Ray runs it."""
    source = source.replace("import corral.compat.ray as ray", "import ray")
    return re.sub(r"\bcorral\.compat\.ray\b", "ray", source)
