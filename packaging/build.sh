#!/usr/bin/env bash
# Build the PyInstaller bundle: dist/herald (onefile) and dist/herald-onedir/ (onedir).
# Usage: packaging/build.sh [PYTHON]   (PYTHON: the venv's python with herald and
# pyinstaller installed; default .venv/bin/python). Prints the build time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
start=$(date +%s.%N)
rm -rf dist/herald dist/herald-onedir
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/herald.spec
end=$(date +%s.%N)
size() { du -sb "$1" | awk '{printf "%.1f MB", $1 / 1e6}'; }
echo "built in $(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.0f s", e - s}'):" \
    "dist/herald $(size dist/herald), dist/herald-onedir $(size dist/herald-onedir)"
