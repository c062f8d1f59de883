#!/usr/bin/env bash
# Installs a Corral wheel into a fresh venv of the Python it was built for, with no compiler and
# none of the build's libraries on its paths, and runs a local cluster with a task and an actor.
#   scripts/wheel-check.sh dist/corral-0.1.0-cp312-cp312-manylinux_2_36_x86_64.whl
set -euo pipefail
wheel=$(realpath "$1")
dir=$(dirname "$wheel")
v=$(basename "$wheel" | sed -E 's/.*-cp3([0-9]+)-cp3.*/3.\1/')
py=""
for c in "$(command -v "python$v" || true)" "$HOME"/.pyenv/versions/"$v".*/bin/python"$v"; do
  if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys' 2>/dev/null; then py=$c; break; fi
done
[ -n "$py" ] || { echo "no Python $v here to check $wheel with" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --no-index --find-links "$dir" "$wheel"
# What the command and the extension load must come from the wheel or from the base system.
# (auditwheel moves the command into corral.scripts/ and leaves a small launcher in bin/)
for elf in "$tmp"/venv/lib/python*/site-packages/corral.scripts/corral "$tmp"/venv/lib/python*/site-packages/corral/_core*.so; do
  if ldd "$elf" | grep -E 'not found|/usr/lib/x86_64-linux-gnu/lib(protobuf|ssl|crypto|sqlite3|fmt|date-tz|boost)'; then
    echo "$elf loads a library the wheel should carry" >&2
    exit 1
  fi
done
cd "$tmp"
"$tmp/venv/bin/corral" --help >/dev/null
CORRAL_NO_AUTO_INIT= "$tmp/venv/bin/python" - <<'PY'
import corral
corral.init(num_cpus=2)

@corral.remote
def square(x):
    return x * x

@corral.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

assert corral.get([square.remote(i) for i in range(10)]) == [i * i for i in range(10)]
c = Counter.remote()
assert corral.get([c.incr.remote() for _ in range(3)]) == [1, 2, 3]
import sys
print(f"wheel works on Python {sys.version.split()[0]}: tasks and an actor ran")
corral.shutdown()
PY
