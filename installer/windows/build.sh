#!/usr/bin/env bash
# Build the Windows installer: static dependencies (build-deps.sh, cached), the easgate daemon
# cross-compiled with mingw-w64 (toolchain-mingw64.cmake), then the MSI with wixl.
#
# usage: installer/windows/build.sh [BUILD_DIR]     (default: build-win at the repository root)
# env:   EG_WIN_DEPS   dependency directory (default: build-win-deps at the repository root;
#                      kept between runs, a dependency already in it is not rebuilt)
#        EG_WIN_JOBS   parallel jobs (default nproc); everything runs under `nice -n 19`
# Result: BUILD_DIR/easgate.exe, BUILD_DIR/easgate-ps.exe, BUILD_DIR/easgate.msi
#         (also BUILD_DIR/easgate-<version>-x64.msi).
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
BUILD=$(readlink -f "${1:-$ROOT/build-win}")
DEPS=$(readlink -f "${EG_WIN_DEPS:-$ROOT/build-win-deps}")
JOBS=${EG_WIN_JOBS:-$(nproc 2>/dev/null || echo 2)}
NICE=(nice -n 19)
log() { printf '==> [windows %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

t0=$(date +%s)
EG_DEPS_JOBS=$JOBS "$HERE/build-deps.sh" "$DEPS"
t1=$(date +%s)
log "dependencies ready in $((t1 - t0)) s"

mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$HERE/toolchain-mingw64.cmake" \
  -DEG_WIN_DEPS="$DEPS" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/configure.log" 2>&1 ||
  { cat "$BUILD/configure.log" >&2; exit 1; }
"${NICE[@]}" cmake --build "$BUILD" -j"$JOBS" --target easgate easgate-ps
t2=$(date +%s)
log "easgate.exe built in $((t2 - t1)) s"

version=$(sed -n 's/^project(easgate VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
stage="$BUILD/msi"
rm -rf "$stage"; mkdir -p "$stage"
x86_64-w64-mingw32-strip -o "$stage/easgate.exe" "$BUILD/easgate.exe"
x86_64-w64-mingw32-strip -o "$stage/easgate-ps.exe" "$BUILD/easgate-ps.exe"
cp "$HERE/easgate.conf" "$stage/easgate.conf"
(cd "$stage" && wixl -a x64 -D Version="$version" -o "$BUILD/easgate-$version-x64.msi" \
   "$HERE/easgate.wxs" 2> >(grep -v -e '^$' -e 'GLib-GObject-WARNING' >&2))
cp "$BUILD/easgate-$version-x64.msi" "$BUILD/easgate.msi"
log "MSI $BUILD/easgate-$version-x64.msi ($(du -k "$BUILD/easgate.msi" | cut -f1) KiB) in $(( $(date +%s) - t2 )) s"
