#!/usr/bin/env bash
# Sets up everything Corral needs on a fresh Debian 12 / Ubuntu 24.04 machine, idempotently:
# Debian packages (compiler, CMake, Boost, protobuf, OpenSSL, ...), a virtual environment at .venv,
# and the corral package (Python SDK + the `corral` command) built and installed into it.
#   scripts/setup.sh              build and install
#   scripts/setup.sh --with-tests also build the C++ test binaries (into the same build tree)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=OFF
[ "${1:-}" = "--with-tests" ] && with_tests=ON

packages=(g++ cmake ninja-build make pkg-config libboost1.81-dev libprotobuf-dev protobuf-compiler libssl-dev zlib1g-dev
          nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev python3 python3-venv python3-dev ccache
          libsystemd-dev libsqlite3-dev libhowardhinnant-date-dev)
# The multi-host tests build hosts from network namespaces (iproute2) and drop packets with nftables.
# libfaketime steps the head's wall clock in the schedule tests; fail2ban-regex checks the shipped filter.
# Prometheus (and promtool) scrape a test cluster and check the shipped rules; headless Chromium
# with its WebDriver drives the dashboard.
[ "$with_tests" = ON ] && packages+=(iproute2 nftables util-linux procps dbus-daemon strace faketime fail2ban
                                     prometheus chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.corral-deps
deps="scikit-build-core>=0.10 nanobind>=2.0 cloudpickle>=2.0 pytest>=7 pytest-timeout psutil numpy jeepney>=0.8 croniter>=2 selenium>=4.20"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$deps" ]; then
  echo "==> installing Python build and test dependencies"
  .venv/bin/pip install -q --upgrade pip
  # shellcheck disable=SC2086
  .venv/bin/pip install -q $deps
  echo "$deps" > "$stamp"
fi

echo "==> building and installing corral into .venv (incremental; first build takes a few minutes)"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if ! .venv/bin/pip install -q --no-build-isolation --no-deps -Ccmake.define.CORRAL_BUILD_TESTS=$with_tests .; then
  echo "build failed; see the compiler output above (rerun: .venv/bin/pip install -v --no-build-isolation .)" >&2
  exit 1
fi
# The tests of corral.ddp run torch.distributed (gloo) on CPUs, with torch from PyPI.
[ "$with_tests" = ON ] && scripts/setup-torch.sh >/dev/null
echo "==> ready: .venv/bin/corral and 'import corral' in .venv/bin/python"
