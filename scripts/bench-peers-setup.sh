#!/usr/bin/env bash
# Installs the peers the benchmark compares Corral with, apart from the project's own environment:
# Ray, Dask (distributed), Celery with redis-py, matplotlib for the chart, into .venv-bench, and
# Debian's redis-server. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # The benchmark starts its own redis-server on a free port; the system one is not needed.
  $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
deps='ray "dask[distributed]" celery redis numpy psutil matplotlib'
stamp=.venv-bench/.deps
if [ ! -x .venv-bench/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$deps" ]; then
  echo "==> installing the peers into .venv-bench (Ray, Dask, Celery; a few minutes)"
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q --upgrade pip
  eval .venv-bench/bin/pip install -q "$deps"
  echo "$deps" > "$stamp"
fi
