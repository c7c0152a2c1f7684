#!/usr/bin/env bash
# Cross-build the static Windows (x86_64, mingw-w64) libraries the easgate daemon links:
#   jansson, libxml2, sqlite3, OpenSSL 3, libcurl (Schannel + SSPI), libmicrohttpd with HTTPS
#   (GnuTLS 3.7 over nettle + gmp + libtasn1).
# Sources are Debian's own source packages (`apt-get source` through a private source list, so the
# system's apt configuration is not changed). Everything goes to OUT/{include,lib,lib/pkgconfig};
# a dependency already built in OUT (OUT/.built/<name>) is skipped.
#
# usage: installer/windows/build-deps.sh OUT
# env:   EG_DEPS_JOBS (default nproc), EG_DEPS_NICE (default 19), EG_DEPS_KEEP_WORK=1 keeps the
#        build tree under OUT/.work.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
mkdir -p "$1"
OUT=$(readlink -f "$1")
WORK="$OUT/.work"
HOST=x86_64-w64-mingw32
JOBS=${EG_DEPS_JOBS:-$(nproc 2>/dev/null || echo 2)}
NICE=(nice -n "${EG_DEPS_NICE:-19}")
HERE=$(dirname "$(readlink -f "$0")")
mkdir -p "$OUT/include" "$OUT/lib/pkgconfig" "$OUT/.built" "$WORK"

log() { printf '==> [deps %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# --- host packages ----------------------------------------------------------------------------
ensure_host_packages() {
  # build-essential and tcl: SQLite's amalgamation is generated with host tools; curl, openssl:
  # tests/installer/test_windows.sh
  local want=(mingw-w64 wine64 wine wixl msitools dpkg-dev build-essential make cmake pkg-config
              m4 tcl xz-utils bzip2 perl curl openssl ca-certificates) missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

# --- Debian source packages through a private source list ---------------------------------------
APT="$WORK/apt"
APT_OPTS=()
setup_apt_sources() {
  APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$APT/sources.list.d"
            -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache")
  [ -f "$APT/.updated" ] && return 0
  mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial"
  local src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ]; then
    sed -e 's/^Types:.*/Types: deb deb-src/' "$src" >"$APT/sources.list.d/debian.sources"
  elif [ -f /etc/apt/sources.list ]; then
    grep -E '^deb .*debian' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
      >"$APT/sources.list.d/debian.list"
  else
    echo "no Debian apt sources found" >&2; exit 1
  fi
  log "apt-get update (private deb-src list)"
  apt-get "${APT_OPTS[@]}" update -qq
  touch "$APT/.updated"
}

# fetch SRCPKG [--orig]: unpacks Debian's source (patched) into $WORK/src/SRCPKG, prints the dir
fetch() {
  local pkg=$1 mode=${2:-} dir="$WORK/src/$1"
  if [ ! -f "$dir/.unpacked" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    (cd "$dir" && apt-get "${APT_OPTS[@]}" source --download-only -qq "$pkg" >/dev/null)
    if [ "$mode" = --orig ]; then
      local tb
      tb=$(ls "$dir"/*.orig.tar.* | grep -v '\.asc$' | head -n1)
      (cd "$dir" && tar xf "$tb")
    else
      (cd "$dir" && dpkg-source --no-check -x ./*.dsc >/dev/null)
      # Debian's patches leave Makefile.am/configure.ac newer than the generated files, and the
      # shipped files come from another automake: keep the generated ones (touch, in order)
      # rather than regenerate.
      local now t=0 pat
      now=$(date +%s)
      find "$dir" -exec touch -h -d "@$((now - 100))" {} +
      for pat in aclocal.m4 configure config.h.in Makefile.in; do
        t=$((t + 1))
        find "$dir" -name "$pat" -exec touch -d "@$((now - 50 + t))" {} +
      done
    fi
    touch "$dir/.unpacked"
  fi
  find "$dir" -mindepth 1 -maxdepth 1 -type d | head -n1
}

done_mark() { touch "$OUT/.built/$1"; }
is_built() { [ -f "$OUT/.built/$1" ]; }

export PKG_CONFIG_LIBDIR="$OUT/lib/pkgconfig"
export PKG_CONFIG_PATH="$OUT/lib/pkgconfig"
unset PKG_CONFIG_SYSROOT_DIR || true
CROSS_ENV=(CC=$HOST-gcc AR=$HOST-ar RANLIB=$HOST-ranlib STRIP=$HOST-strip WINDRES=$HOST-windres
           "CPPFLAGS=-I$OUT/include" "LDFLAGS=-L$OUT/lib" "CFLAGS=-O2 -g0")
CONF_STD=(--host=$HOST --build="$(dpkg-architecture -qDEB_BUILD_GNU_TYPE 2>/dev/null || gcc -dumpmachine)"
          --prefix="$OUT" --enable-static --disable-shared)

timed() { # timed NAME cmd...
  local name=$1 t0 rc=0; shift
  t0=$(date +%s)
  log "building $name"
  # in the background so that `set -e` stays in force inside the build function
  "$@" >"$WORK/$name.log" 2>&1 &
  wait $! || rc=$?
  if [ $rc -ne 0 ]; then
    echo "build of $name failed (rc=$rc); last lines of $WORK/$name.log:" >&2
    tail -n 40 "$WORK/$name.log" >&2
    exit 1
  fi
  log "$name built in $(( $(date +%s) - t0 )) s"
  echo "$name $(( $(date +%s) - t0 ))" >>"$OUT/.built/times"
}

# --- the dependencies -------------------------------------------------------------------------
build_jansson() {
  local s; s=$(fetch jansson)
  rm -rf "$WORK/b-jansson"
  "${NICE[@]}" cmake -S "$s" -B "$WORK/b-jansson" -DCMAKE_TOOLCHAIN_FILE="$HERE/toolchain-mingw64.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$OUT" -DJANSSON_BUILD_DOCS=OFF \
    -DJANSSON_EXAMPLES=OFF -DJANSSON_WITHOUT_TESTS=ON -DJANSSON_BUILD_SHARED_LIBS=OFF
  "${NICE[@]}" cmake --build "$WORK/b-jansson" -j"$JOBS"
  cmake --install "$WORK/b-jansson"
}

build_libxml2() {
  local s; s=$(fetch libxml2)
  cd "$s"
  [ -x configure ] || "${NICE[@]}" autoreconf -fi
  "${NICE[@]}" env "${CROSS_ENV[@]}" ./configure "${CONF_STD[@]}" --without-iconv --without-python \
    --without-lzma --without-zlib --without-icu --without-http --without-ftp --without-debug
  "${NICE[@]}" make -j"$JOBS" libxml2.la
  make install-libLTLIBRARIES install-pkgconfigDATA
  make -C include install
  # the static lib needs LIBXML_STATIC defined by its users
  grep -q LIBXML_STATIC "$OUT/lib/pkgconfig/libxml-2.0.pc" ||
    sed -i 's/^Cflags:.*/& -DLIBXML_STATIC/' "$OUT/lib/pkgconfig/libxml-2.0.pc"
}

build_sqlite3() {
  local s; s=$(fetch sqlite3)
  rm -rf "$WORK/b-sqlite3"; mkdir -p "$WORK/b-sqlite3"; cd "$WORK/b-sqlite3"
  # the amalgamation is generated with host tools (tclsh, lemon), then cross-compiled alone
  "${NICE[@]}" "$s/configure" --disable-tcl --disable-readline >/dev/null
  "${NICE[@]}" make -j"$JOBS" sqlite3.c
  "${NICE[@]}" $HOST-gcc -O2 -c sqlite3.c -o sqlite3.o -DSQLITE_THREADSAFE=1 \
    -DSQLITE_ENABLE_FTS5 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_DQS=0
  rm -f libsqlite3.a; $HOST-ar rcs libsqlite3.a sqlite3.o
  cp libsqlite3.a "$OUT/lib/"; cp sqlite3.h sqlite3ext.h "$OUT/include/"
  local ver; ver=$(sed -n 's/^#define SQLITE_VERSION *"\(.*\)"/\1/p' sqlite3.h)
  cat >"$OUT/lib/pkgconfig/sqlite3.pc" <<PC
prefix=$OUT
libdir=\${prefix}/lib
includedir=\${prefix}/include
Name: SQLite
Description: SQL database engine (static, mingw-w64)
Version: $ver
Libs: -L\${libdir} -lsqlite3
Cflags: -I\${includedir}
PC
}

build_openssl() {
  local s; s=$(fetch openssl --orig)
  cd "$s"
  "${NICE[@]}" ./Configure mingw64 --cross-compile-prefix=$HOST- no-shared no-tests \
    no-engine no-module --prefix="$OUT" --libdir=lib
  "${NICE[@]}" make -j"$JOBS" build_libs
  make install_dev
}

build_curl() {
  local s; s=$(fetch curl)
  cd "$s"
  [ -x configure ] || "${NICE[@]}" autoreconf -fi
  "${NICE[@]}" env "${CROSS_ENV[@]}" ./configure "${CONF_STD[@]}" --with-schannel --enable-sspi \
    --without-openssl --without-gnutls --without-libssh2 --without-libpsl --without-brotli \
    --without-zstd --without-zlib --without-nghttp2 --without-librtmp --without-libidn2 \
    --disable-ldap --disable-ldaps --disable-manual --disable-docs --enable-ipv6 \
    --disable-rtsp --disable-dict --disable-telnet --disable-tftp --disable-pop3 --disable-imap \
    --disable-smtp --disable-gopher --disable-mqtt --disable-smb
  "${NICE[@]}" make -j"$JOBS" -C lib
  make -C lib install; make -C include install
  make install-pkgconfigDATA
}

build_gmp() {
  local s; s=$(fetch gmp)
  cd "$s"
  # Debian's gmp source is DFSG-stripped of the manual: a doc/ that builds nothing
  if [ ! -f doc/Makefile.in ]; then
    mkdir -p doc
    printf '%s\n' 'all install install-data install-exec uninstall clean distclean check installdirs:' \
      >doc/Makefile.in
  fi
  "${NICE[@]}" env "${CROSS_ENV[@]}" ./configure "${CONF_STD[@]}" --disable-cxx --enable-fat=no
  "${NICE[@]}" make -j"$JOBS"
  make install
}

build_nettle() {
  local s; s=$(fetch nettle)
  cd "$s"
  "${NICE[@]}" env "${CROSS_ENV[@]}" ./configure "${CONF_STD[@]}" --disable-documentation \
    --disable-openssl --enable-mini-gmp=no --disable-fat
  "${NICE[@]}" make -j"$JOBS"
  make install
}

build_libtasn1() {
  local s; s=$(fetch libtasn1-6)
  cd "$s"
  "${NICE[@]}" env "${CROSS_ENV[@]}" ./configure "${CONF_STD[@]}" --disable-doc --disable-valgrind-tests
  "${NICE[@]}" make -j"$JOBS" -C lib
  make -C lib install
}

build_gnutls() {
  local s; s=$(fetch gnutls28)
  cd "$s"
  # no p11-kit, no libidn2, bundled libunistring; libtasn1 comes from OUT
  "${NICE[@]}" env "${CROSS_ENV[@]}" ./configure "${CONF_STD[@]}" --without-p11-kit \
    --with-included-unistring --without-idn --without-tpm --without-tpm2 --without-zlib \
    --without-brotli --without-zstd --disable-doc --disable-manpages --disable-tests \
    --disable-tools --disable-cxx --disable-guile --disable-nls --disable-libdane \
    --disable-hardware-acceleration --disable-padlock --disable-full-test-suite
  "${NICE[@]}" make -j"$JOBS" -C gl
  "${NICE[@]}" make -j"$JOBS" -C lib
  make -C lib install
  # Debian's patch 51 adds gnulib's linkedhash-list to gl/Makefile.am only; the shipped
  # Makefile.in (kept, see fetch) lacks it: compile that one module into the static library.
  if ! grep -q gl_linkedhash_list gl/Makefile.in; then
    (cd gl && $HOST-gcc -DHAVE_CONFIG_H -I. -I.. -I../lib/includes -O2 -c gl_linkedhash_list.c \
       -o gl_linkedhash_list.o)
    $HOST-ar rs "$OUT/lib/libgnutls.a" gl/gl_linkedhash_list.o
  fi
  # A static libgnutls: its data symbols (gnutls_free, ...) are not dllimport'ed
  sed -i 's/^#if !defined(GNUTLS_INTERNAL_BUILD) && defined(_WIN32)$/& \&\& !defined(GNUTLS_STATIC)/' \
    "$OUT/include/gnutls/gnutls.h"
  sed -i 's/^Cflags:.*/& -DGNUTLS_STATIC/' "$OUT/lib/pkgconfig/gnutls.pc"
}

build_libmicrohttpd() {
  local s; s=$(fetch libmicrohttpd)
  cd "$s"
  # configure's link tests need GnuTLS's static dependencies (nettle, hogweed, gmp, tasn1, ...)
  "${NICE[@]}" env "${CROSS_ENV[@]}" "LIBS=$(pkg-config --static --libs gnutls)" \
    "CPPFLAGS=-I$OUT/include -DGNUTLS_STATIC" \
    ./configure "${CONF_STD[@]}" --enable-https \
    --with-gnutls="$OUT" --disable-doc --disable-examples --disable-curl --disable-nls \
    --disable-tools
  "${NICE[@]}" make -j"$JOBS" -C src/microhttpd
  make -C src/microhttpd install
  make -C src/include install
  make install-pkgconfigDATA
  grep -q 'HTTPS_SUPPORT 1' "$s/MHD_config.h" || { echo "libmicrohttpd built without HTTPS" >&2; exit 1; }
}

ensure_host_packages
setup_apt_sources
ORDER=(jansson libxml2 sqlite3 openssl curl gmp nettle libtasn1 gnutls libmicrohttpd)
[ -n "${EG_DEPS_ONLY:-}" ] && read -r -a ORDER <<<"$EG_DEPS_ONLY"
for d in "${ORDER[@]}"; do
  if is_built "$d"; then log "$d: already in $OUT"; continue; fi
  timed "$d" "build_$d"
  done_mark "$d"
done
[ "${EG_DEPS_KEEP_WORK:-1}" = 1 ] || rm -rf "$WORK/src" "$WORK"/b-*
log "all dependencies in $OUT"
