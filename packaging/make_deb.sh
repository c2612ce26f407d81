#!/usr/bin/env bash
# Make dist/herald_<version>_<arch>.deb from the onedir build (packaging/build.sh first).
# It installs the bundle in /opt/herald, /usr/bin/herald as a symlink, a menu entry and the
# icon. Compression: zstd by default (67 MB in ~1 s; xz saves ~18 MB but takes ~90 s);
# DEB_COMPRESSION=xz to choose xz.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ONEDIR=dist/herald-onedir
[ -x "$ONEDIR/herald" ] || { echo "make_deb: no $ONEDIR/herald; run packaging/build.sh" >&2; exit 1; }
VERSION=$("$PYTHON" -c 'from importlib.metadata import version; print(version("herald"))')
ARCH=$(dpkg --print-architecture)
DEB=dist/herald_${VERSION}_${ARCH}.deb
COMPRESSION=${DEB_COMPRESSION:-zstd}

# The .desktop file must be valid; desktop-file-validate is in desktop-file-utils.
if ! command -v desktop-file-validate >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing desktop-file-utils (desktop-file-validate)"
    { apt-get install -y -qq desktop-file-utils || { apt-get update -qq &&
        apt-get install -y -qq desktop-file-utils; }; } >/dev/null 2>&1 || true
fi
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate packaging/herald.desktop
else
    echo "make_deb: desktop-file-validate not available; the .desktop file is unchecked" >&2
fi

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
chmod 755 "$ROOT"
mkdir -p "$ROOT/DEBIAN" "$ROOT/opt" "$ROOT/usr/bin" "$ROOT/usr/share/applications" \
    "$ROOT/usr/share/icons/hicolor/scalable/apps" "$ROOT/usr/share/doc/herald"
cp -a "$ONEDIR" "$ROOT/opt/herald"
ln -s /opt/herald/herald "$ROOT/usr/bin/herald"
install -m 644 packaging/herald.desktop "$ROOT/usr/share/applications/herald.desktop"
install -m 644 desktop/resources/herald.svg \
    "$ROOT/usr/share/icons/hicolor/scalable/apps/herald.svg"
cat > "$ROOT/usr/share/doc/herald/copyright" <<COPYRIGHT
Herald is distributed under the MIT license. The bundle in /opt/herald carries Python,
Qt for Python (PySide6, LGPLv3) and the Python libraries Herald depends on, each under
its own license.
COPYRIGHT
chmod -R u=rwX,go=rX "$ROOT/opt" "$ROOT/usr"
INSTALLED_KB=$(du -sk "$ROOT/opt" "$ROOT/usr" | awk '{s += $1} END {print s}')

# Qt loads libGL/libEGL itself; the bundle carries the rest but needs these from the system
# (fontconfig also brings its config and a font, so text renders).
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: herald
Version: $VERSION
Architecture: $ARCH
Maintainer: Herald developers <herald@localhost>
Installed-Size: $INSTALLED_KB
Section: utils
Priority: optional
Depends: libc6 (>= 2.31), libgl1, libegl1, libfontconfig1, libfreetype6, libxkbcommon0, libxcb1, libdbus-1-3, libglib2.0-0t64 | libglib2.0-0
Recommends: libxkbcommon-x11-0, libxcb-cursor0, libglib2.0-bin
Description: run slow jobs in the background, with live progress
 Herald runs slow jobs (file scans, reports, external commands) in the background
 and pushes their progress and results back live to its desktop app, its command
 line (herald submit --wait) and any WebSocket client.
CONTROL
# No maintainer scripts: the menu and icon caches are refreshed by dpkg triggers
# (desktop-file-utils, hicolor-icon-theme), and without a postrm `dpkg -r` removes all.

rm -f dist/herald_*.deb
start=$(date +%s.%N)
dpkg-deb --root-owner-group -Z"$COMPRESSION" --build "$ROOT" "$DEB" >/dev/null
end=$(date +%s.%N)
echo "$DEB: $(du -b "$DEB" | awk '{printf "%.1f MB", $1 / 1e6}'), $COMPRESSION in" \
    "$(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.1f s", e - s}')"
