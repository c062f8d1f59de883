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
                        r"View the dashboard|^\s*$|\(raylet\)|ray\.init\(|RAY_|Ray dashboard|^ray::|Unhandled error: |"
                        r"github\.com/ray-project/ray/issues|_raylet\.pyx|"
                        r"\[repeated \d+x across cluster\]|\bINFO worker\.py|Warning: |warnings\.warn\()")
_VARYING = re.compile(r"(0x[0-9a-f]+|[0-9a-f]{16,}|\d+(\.\d+)?(e-?\d+)?|pid=\d+|ip=[\d.]+)")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _strip_prefix(line):
    line = re.sub(r"^\(.*? pid=\d+(, ip=[\d.]+)?\)\s?", "", line)
    return re.sub(r"^\(\S+ pid=\d+ node=[0-9a-f]+\)\s?", "", line)


# The first line of a remote error's text: Ray's "ray::f() (pid=.., ip=..)", Corral's "mod.f raised E".
_ERROR_HEADER = re.compile(r"(ray::[\w.]+\(\) \(pid=\d+, ip=[\d.]+\)|\b[\w.]+ raised \w+)$")


def _normal(line):
    line = _ANSI.sub("", line)
    line = _ERROR_HEADER.sub("<remote error>", line)
    line = re.sub(r"<[\w.]*\.(\w+) object at 0x[0-9a-f]+>", r"<\1 object>", line)  # reprs name their module
    line = re.sub(r"^\(.*? pid=\d+(, ip=[\d.]+)?\)\s*", "", line)   # Ray's task prefix (an actor's repr)
    line = re.sub(r"^\(\S+ pid=\d+ node=[0-9a-f]+\)\s*", "", line)          # Corral's
    return _VARYING.sub("#", line).strip()


# Lines that continue a message of Ray's own (a retried task's traceback, under a "(raylet)" line).
_CONTINUED = re.compile(r"^(\s|ray::|[\w.]+(Error|Exception)(\(\w+\))?: |[\w.]+(Error|Exception)$)")


def _lines(text, noise):
    out, in_warning, in_raylet = [], 0, False
    for line in text.splitlines():
        plain = _ANSI.sub("", line)
        if noise and in_raylet and _CONTINUED.match(plain):
            continue
        in_raylet = "(raylet)" in plain
        if noise and in_warning:  # a warning's message lines, up to the source line it quotes
            in_warning = 0 if _strip_prefix(plain).startswith("  ") else in_warning - 1
            continue
        if noise and _RAY_NOISE.search(plain):
            in_warning = 3 if "Warning: " in plain else 0
            continue
        if line.strip():
            out.append(_normal(line))
    return out


def _runs(lines):
    """Consecutive equal lines as one: a polling loop prints a line as many times as it polls."""
    return [l for i, l in enumerate(lines) if i == 0 or lines[i - 1] != l]


def _raised(text):
    """The class name of the exception a failed script ended with (its last 'Name: message' line)."""
    for line in reversed(_ANSI.sub("", text).splitlines()):
        m = re.match(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt))\b", line.strip())
        if m:
            return m.group(1).rsplit(".", 1)[-1]
    return None


def matches(ray_text, ray_rc, corral_text, corral_rc):
    if ray_rc != corral_rc:
        return False, f"exit code {corral_rc} (Ray: {ray_rc})"
    if ray_rc != 0:  # both failed: with the same exception class
        want, have = _raised(ray_text), _raised(corral_text)
        return (want == have, "" if want == have else f"raised {have} (Ray: {want})")
    want = _runs([l for l in _lines(ray_text, True) if not l.startswith(("Traceback", "File ", "^"))])
    have = _runs(_lines(corral_text, False))
    i = 0
    for w in want:
        while i < len(have) and have[i] != w:
            i += 1
        if i == len(have):
            break
        i += 1
    else:
        return True, ""
    # Not in Ray's order: still a match if every line is there, for output whose order Ray does
    # not fix either (tasks and processes printing concurrently, a polling loop's count).
    present = set(have)
    for w in want:
        if w not in present:
            return False, f"missing line: {w!r}"
    return True, ""


def to_ray(source):
    """The inverse of rewrite() for this folder's examples: the script as Ray runs it."""
    source = source.replace("import corral.compat.ray as ray", "import ray")
    return re.sub(r"\bcorral\.compat\.ray\b", "ray", source)
