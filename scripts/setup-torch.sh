#!/usr/bin/env bash
# Installs PyTorch (CPU use only) into a virtual environment outside the checkout, for the tests of
# corral.ddp (torch.distributed with gloo on CPUs). Prints the environment's site-packages folder.
#
# PyPI has no CPU-only torch for Linux: its wheel links the CUDA libraries, so the few of them that
# `import torch` loads come too (about 2.3 GB in all, downloaded once; the venv is shared by every
# checkout on this machine, and pip's cache keeps the wheels). Nothing here needs a GPU.
#   CORRAL_TORCH_VENV   where the environment goes (default: ~/.cache/corral/torch-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CORRAL_TORCH_VENV:-$HOME/.cache/corral/torch-venv}
# The same interpreter as .venv's, so that workers started from .venv can import this torch.
base=$(.venv/bin/python -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
torch="torch==2.15.0"
cuda="nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 nvidia-cuda-nvrtc==13.2.86 nvidia-cublas==13.4.1.3
      nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22 nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37
      nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-cudnn-cu13==9.26.0.51 nvidia-nvshmem-cu13==3.7.2"
pure="numpy filelock typing-extensions>=4.13.0 sympy>=1.13.3 mpmath<1.4 networkx>=2.5.1 jinja2 MarkupSafe fsspec>=0.8.5"
wanted="$($base -V 2>&1) $torch $cuda $pure"
stamp=$venv/.corral-torch
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
  exit 0
fi
echo "==> installing PyTorch (CPU use) into $venv: about 2.3 GB the first time" >&2
rm -rf "$venv"
"$base" -m venv "$venv"
# --no-deps: torch's own requirements name every CUDA library (and triton), which `import torch`
# does not load; these are the ones it does.
# shellcheck disable=SC2086
"$venv/bin/pip" install -q --no-deps $torch $cuda $pure >&2
"$venv/bin/python" -c 'import torch, torch.distributed as d; assert d.is_gloo_available()' >&2
echo "$wanted" > "$stamp"
"$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
