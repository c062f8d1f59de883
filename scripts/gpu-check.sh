#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and nothing of Corral installed (the user's Ubuntu 24.04 GPU box,
# Python 3.12, no compiler needed): installs the wheel from dist/ (made by `make wheel` and carried
# over with cloudpickle's wheel beside it) into a fresh venv that also sees the machine's own torch,
# then runs scripts/gpu_check.py: NVML's devices, torch on the GPU in tasks, a ddp with nccl.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=$(ls dist/corral-*-"$tag"-"$tag"-*.whl 2>/dev/null | head -n 1 || true)
[ -n "$wheel" ] || { echo "no wheel for $tag in dist/: run 'make wheel' where Corral builds and copy dist/ here" >&2; exit 1; }
echo "==> $(uname -srm), $("$py" -V), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
venv=$(mktemp -d)/venv
"$py" -m venv --system-site-packages "$venv"   # the machine's torch, if it has one
"$venv/bin/pip" install -q --no-index --find-links dist "$wheel"
echo "==> installed $(basename "$wheel")"
cd "$(dirname "$venv")"
"$venv/bin/python" "$OLDPWD/scripts/gpu_check.py"
