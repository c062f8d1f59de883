#!/usr/bin/env bash
# Developer shortcut: after `scripts/setup.sh` built everything once, rebuild the C++ incrementally
# and copy the extension, the `corral` command and the Python sources into .venv (seconds instead
# of a full `pip install`). The real install path stays scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(ls -d build/cp3*/ | head -n 1)
ninja -C "$build" corral _core >/dev/null   # the test binaries: ninja -C "$build"
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/corral
install -m 755 "$build"/src/corral/python/_core*.so "$site/"   # a new file: running workers keep the old one
install -m 755 "$build"/src/corral/cli/corral .venv/bin/corral
cp -r python/corral/. "$site/"
echo "==> installed into $site"
