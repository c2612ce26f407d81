#!/usr/bin/env bash
# Smoke test of what `make dist` built, run by CI: the onefile dist/herald, then the .deb.
#   - `herald --version` prints the project's version
#   - `herald serve` headless: time to "serving" (all services ready), RSS of the whole app,
#     `herald submit demo.answer seconds=0 --wait` prints 42
#   - kill -9 of the app (and, onefile, of its bootloader) leaves no child and no port held
#   - the GUI offscreen: `herald --self-check` exits 0; the GUI killed -9 leaves no child
#   - `dpkg -i` of the .deb, the same through /usr/bin/herald, `dpkg -r` leaves nothing
# Usage: packaging/smoke.sh [--no-deb]   (the .deb part needs root, or sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
ONEFILE=$PWD/dist/herald
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
DEB=$(ls dist/herald_"$VERSION"_*.deb 2>/dev/null | head -1 || true)
WITH_DEB=yes
[ "${1:-}" = --no-deb ] && WITH_DEB=no

WORK=$(mktemp -d /tmp/herald-smoke.XXXXXX)
mkdir -m 700 "$WORK/run" "$WORK/tmp" "$WORK/config"
# TMPDIR: where the onefile unpacks itself (a SIGKILLed bootloader leaves its _MEI dir).
export XDG_RUNTIME_DIR=$WORK/run TMPDIR=$WORK/tmp XDG_CONFIG_HOME=$WORK/config
unset DISPLAY WAYLAND_DISPLAY QT_QPA_PLATFORM HERALD_DATA_DIR
STARTED=()
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

cleanup() {
    local pid
    for pid in "${STARTED[@]}" $(pgrep -f -- "$WORK/" || true); do
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }
}
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
say() { echo "smoke: $*"; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN {printf "%.2f", e - s}'; }

# wait_for SECONDS COMMAND...: poll COMMAND until it succeeds; fail after SECONDS.
wait_for() {
    local limit=$1 end
    shift
    end=$(($(date +%s) + limit))
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.05
    done
}
# No process left whose command line mentions this data dir (the services do).
none_left() { ! pgrep -f -- "$1( |$)" >/dev/null; }
services_up() { [ "$(pgrep -f -- "service .* $1( |$)" | wc -l)" -ge 3 ]; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
# Whether dpkg knows the package in any state (installed, or config files left).
installed() { dpkg-query -W -f='${db:Status-Abbrev}' herald 2>/dev/null | grep -q '^[a-z][^n]'; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A process and all its descendants.
tree() {
    local child
    echo "$1"
    for child in $(pgrep -P "$1" || true); do tree "$child"; done
}
rss_mb() { ps -o rss= -p "$(tree "$1" | paste -sd,)" | awk '{s += $1} END {printf "%.0f", s / 1024}'; }

check_version() {
    local out
    out=$(timeout 30 "$1" --version) || fail "$1 --version"
    [ "$out" = "herald $VERSION" ] || fail "$1 --version printed '$out', not 'herald $VERSION'"
    say "$out"
}

# serve_kill HERALD LABEL VICTIM: serve, submit, then kill -9 VICTIM (app | bootloader).
serve_kill() {
    local herald=$1 label=$2 victim=$3 data=$WORK/$2 t0 pid app api ws out target
    mkdir -p "$data"
    t0=$(now)
    HERALD_DATA_DIR=$data "$herald" serve >"$data.log" 2>&1 &
    pid=$!
    disown "$pid"  # no "Killed" job notices from this shell
    STARTED+=("$pid")
    wait_for 60 grep -q "is serving" "$data.log" || { cat "$data.log"; fail "$label: not serving"; }
    say "$label: serving $(since "$t0") s after launch; RSS of the app and its services" \
        "$(rss_mb "$pid") MB"
    api=$(sed -n 's|^ *API *http://127.0.0.1:\([0-9]*\)/api$|\1|p' "$data.log")
    ws=$(sed -n 's|^ *WebSocket *ws://127.0.0.1:\([0-9]*\)/ws$|\1|p' "$data.log")
    [ -n "$api" ] && [ -n "$ws" ] || fail "$label: no ports in $(cat "$data.log")"
    out=$(HERALD_DATA_DIR=$data timeout 60 "$herald" submit demo.answer seconds=0 --wait) ||
        fail "$label: submit --wait failed: $out"
    [ "$out" = 42 ] || fail "$label: submit --wait printed '$out', not 42"
    say "$label: submit demo.answer --wait printed 42"

    target=$pid
    if [ "$victim" = app ]; then
        app=$(pgrep -P "$pid" -f "serve" || true)  # onefile: the Python child of the bootloader
        [ -n "$app" ] && target=$app
    fi
    kill -9 "$target"
    wait_for 20 none_left "$data" || { ps -ef | grep -- "$data" >&2; fail "$label: children survived"; }
    wait_for 20 pid_gone "$pid" || fail "$label: the bootloader survived its app"
    port_free "$api" && port_free "$ws" || fail "$label: a port is still held"
    say "$label: kill -9 of the $victim ($target) left no process and no port"
}

# gui_checks HERALD LABEL: --self-check, then the GUI killed -9 while its services run.
gui_checks() {
    local herald=$1 label=$2 data=$WORK/$2-gui t0 pid rc=0
    mkdir -p "$data"
    t0=$(now)
    HERALD_DATA_DIR=$data QT_QPA_PLATFORM=offscreen timeout 120 "$herald" --self-check \
        >"$data.check.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { cat "$data.check.log"; fail "$label: --self-check exited $rc"; }
    wait_for 20 none_left "$data" || fail "$label: the self-check left services behind"
    say "$label: --self-check passed in $(since "$t0") s"

    HERALD_DATA_DIR=$data QT_QPA_PLATFORM=offscreen "$herald" >"$data.log" 2>&1 &
    pid=$!
    disown "$pid"  # no "Killed" job notices from this shell
    STARTED+=("$pid")
    wait_for 60 services_up "$data" ||
        fail "$label: the GUI did not start its services"
    HERALD_DATA_DIR=$data wait_for 60 timeout 10 "$herald" catalog >/dev/null 2>&1 ||
        fail "$label: the GUI's services do not answer"
    say "$label: GUI running offscreen; RSS of the app and its services $(rss_mb "$pid") MB"
    local app
    app=$(pgrep -P "$pid" || true)
    [ "$(echo "$app" | wc -w)" = 1 ] && [ "$(ps -o args= -p "$app")" = "$(ps -o args= -p "$pid")" ] ||
        app=$pid  # onedir: no bootloader in between
    kill -9 "$app"
    wait_for 20 none_left "$data" || fail "$label: the GUI's services survived kill -9"
    wait_for 20 pid_gone "$pid" || fail "$label: the bootloader survived its app"
    say "$label: kill -9 of the GUI left no process"
}

[ -x "$ONEFILE" ] || fail "no $ONEFILE; run make dist"
say "onefile $ONEFILE ($(du -b "$ONEFILE" | awk '{printf "%.1f MB", $1 / 1e6}'))"
check_version "$ONEFILE"
serve_kill "$ONEFILE" onefile-app app
serve_kill "$ONEFILE" onefile-bootloader bootloader
gui_checks "$ONEFILE" onefile

if [ "$WITH_DEB" = no ]; then
    say "skipping the .deb (--no-deb)"
elif [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    fail "installing the .deb needs root or sudo (or pass --no-deb)"
else
    [ -n "$DEB" ] || fail "no dist/herald_${VERSION}_*.deb; run make dist"
    # Smoke runs on one machine take turns at the system's package (CI jobs side by side).
    exec 9>/tmp/herald-smoke-deb.lock
    flock -w 600 9 || fail "another smoke test holds /tmp/herald-smoke-deb.lock"
    case $(dpkg-query -W -f='${db:Status-Abbrev}' herald 2>/dev/null || true) in
        rc*) $SUDO dpkg -P herald >/dev/null ;;  # only the record of an earlier removal
        ii*|i*) fail "herald is already installed; not touching it" ;;
    esac
    trap '$SUDO dpkg -P herald >/dev/null 2>&1 || true; cleanup' EXIT
    say "installing $DEB ($(du -b "$DEB" | awk '{printf "%.1f MB", $1 / 1e6}'))"
    $SUDO timeout 120 dpkg -i "$DEB" >/dev/null || fail "dpkg -i $DEB"
    [ "$(readlink /usr/bin/herald)" = /opt/herald/herald ] || fail "no /usr/bin/herald link"
    [ -f /usr/share/applications/herald.desktop ] || fail "no menu entry"
    [ -f /usr/share/icons/hicolor/scalable/apps/herald.svg ] || fail "no icon"
    check_version /usr/bin/herald
    serve_kill /usr/bin/herald installed app
    gui_checks /usr/bin/herald installed
    $SUDO timeout 120 dpkg -r herald >/dev/null || fail "dpkg -r herald"
    for path in /opt/herald /usr/bin/herald /usr/share/applications/herald.desktop \
        /usr/share/icons/hicolor/scalable/apps/herald.svg; do
        [ ! -e "$path" ] && [ ! -L "$path" ] || fail "dpkg -r left $path behind"
    done
    ! installed || fail "dpkg -r left herald known to dpkg: $(dpkg-query -W herald)"
    say "dpkg -r herald left nothing behind"
fi
say "all checks passed"
