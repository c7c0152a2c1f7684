#!/usr/bin/env bash
# test_deb.sh - the Debian package end to end, on this machine:
#   build it with CPack; check its control data and contents (unit, conffile, man page with every
#   option of `easgate --help`, binaries, no test programs); systemd-analyze verify and the
#   offline security exposure (<= 2.0) of the unit; install it; check the easgate user, owners
#   and modes; run the installed daemon as the easgate user with the shipped configuration (TLS
#   material, token and password put where the configuration says; only listen address, ports
#   file and Exchange URL overridden) and check /healthz and the console authentication over
#   HTTPS; edit the configuration and reinstall (the edit is kept); remove (the configuration
#   stays) and purge (configuration, state, user, group and unit links go).
#
# Usage: test_deb.sh BUILD_DIR SOURCE_DIR
# Needs root and dpkg: otherwise exits 77 (ctest SKIP_RETURN_CODE) with the reason. Refuses, also
# with 77, to touch a machine that already has an easgate package, user or directory. Whatever
# happens, the EXIT trap stops the daemon it started and purges the package it installed.
set -euo pipefail

SKIP=77
build=${1:?usage: test_deb.sh BUILD_DIR SOURCE_DIR}
src=${2:?usage: test_deb.sh BUILD_DIR SOURCE_DIR}
build=$(readlink -f "$build")
src=$(readlink -f "$src")

skip() {
    echo "SKIP: $*"
    exit "$SKIP"
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { echo "==> $*"; }

[ "$(id -u)" -eq 0 ] || skip "installing a .deb needs root"
command -v dpkg >/dev/null 2>&1 || skip "dpkg is not available (not a Debian system)"
# The rest ./run installs (DEBS); missing, it is a broken set-up rather than a reason to skip.
for tool in dpkg-deb dpkg-query dpkg-statoverride dpkg-shlibdeps cpack systemd-analyze setpriv \
    runuser curl openssl groff gzip flock getent python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not available (./run installs it)"
done
[ -x "$build/easgate" ] || fail "$build/easgate is not built"

# One installer test at a time on this machine (several build directories may run the suite).
lockdir=/run/lock
[ -d "$lockdir" ] || lockdir=/tmp
exec 9>"$lockdir/easgate-installer-test.lock"
flock -w 600 9 || skip "another installer test held the lock for 10 minutes"

status=$(dpkg-query -W -f='${db:Status-Abbrev}' easgate 2>/dev/null || true)
case "$status" in "" | un*) ;; *) skip "an easgate package is on this machine ($status); not touching it" ;; esac
getent passwd easgate >/dev/null && skip "a user easgate exists already; not touching it"
getent group easgate >/dev/null && skip "a group easgate exists already; not touching it"
for p in /etc/easgate /var/lib/easgate /lib/systemd/system/easgate.service; do
    [ -e "$p" ] && skip "$p exists already; not touching it"
done

tmp=$(mktemp -d /tmp/eg-test-deb.XXXXXX)
chmod 0711 "$tmp" # the easgate user must reach $tmp/run
daemon_pid=""
listener_pid=""
installed=0

cleanup() {
    local rc=$?
    set +e
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    if [ -n "$listener_pid" ]; then
        kill -TERM "$listener_pid" 2>/dev/null
        wait "$listener_pid" 2>/dev/null
    fi
    # Files this test put under /etc/easgate, then the package with everything it made.
    rm -rf /etc/easgate/tls /etc/easgate/token /etc/easgate/exchange-password
    if [ "$installed" = 1 ]; then
        dpkg --purge easgate >"$tmp/cleanup.log" 2>&1 || cat "$tmp/cleanup.log" >&2
    fi
    # Anything the package scripts failed to remove (the checks above made sure none of it
    # existed before this test).
    if getent passwd easgate >/dev/null; then userdel easgate 2>/dev/null; fi
    if getent group easgate >/dev/null; then groupdel easgate 2>/dev/null; fi
    for p in /etc/easgate /etc/easgate/easgate.json; do
        dpkg-statoverride --list "$p" >/dev/null 2>&1 && dpkg-statoverride --remove "$p"
    done
    rm -rf /etc/easgate /var/lib/easgate /etc/systemd/system/multi-user.target.wants/easgate.service \
        /var/lib/systemd/deb-systemd-helper-enabled/easgate.service \
        /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/easgate.service
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# mode owner group of a path
perms() { stat -c '%a %U %G' "$1"; }
expect_perms() { # PATH "MODE OWNER GROUP"
    local got
    got=$(perms "$1")
    [ "$got" = "$2" ] || fail "$1 is '$got', expected '$2'"
}

# ---- the package --------------------------------------------------------------------------
step "cpack -G DEB"
(cd "$build" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg") >"$tmp/cpack.log" 2>&1 ||
    { cat "$tmp/cpack.log" >&2; fail "cpack failed"; }
debs=("$tmp"/pkg/easgate_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "expected one easgate_*.deb, got: ${debs[*]}"
deb=${debs[0]}

step "control data"
version=$("$build/easgate" --version)
[[ "$version" =~ ^easgate\ ([0-9][0-9A-Za-z.+~-]*)$ ]] || fail "easgate --version printed '$version'"
version=${BASH_REMATCH[1]}
[ "$(dpkg-deb -f "$deb" Package)" = easgate ] || fail "package name"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "package version is not $version"
depends=$(dpkg-deb -f "$deb" Depends)
for d in adduser libsystemd0 libmicrohttpd12 libsqlite3-0; do # adduser + shlibdeps
    [[ ", $depends," == *", $d"[\ ,]* ]] || fail "Depends lacks $d: $depends"
done
dpkg-deb -e "$deb" "$tmp/control"
[ "$(cat "$tmp/control/conffiles")" = /etc/easgate/easgate.json ] || fail "conffiles: $(cat "$tmp/control/conffiles")"
for s in postinst prerm postrm; do
    [ -x "$tmp/control/$s" ] || fail "maintainer script $s missing or not executable"
    sh -n "$tmp/control/$s" || fail "$s is not valid sh"
done

step "contents"
dpkg-deb -c "$deb" >"$tmp/contents"
has() { # MODE-PREFIX PATH
    awk -v m="$1" -v p="$2" '$1 ~ "^"m && $6 == p { found = 1 } END { exit !found }' "$tmp/contents" ||
        fail "package lacks $2 (mode $1): $(cat "$tmp/contents")"
}
has -rwxr-xr-x ./usr/sbin/easgate
has -rwxr-xr-x ./usr/bin/easgate-ps
has -rw-r--r-- ./lib/systemd/system/easgate.service
has -rw-r----- ./etc/easgate/easgate.json
has -rw-r--r-- ./usr/share/man/man8/easgate.8.gz
has -rw-r--r-- ./usr/share/doc/easgate/install.md
if grep -E 'mock|/test_|fuzz_' "$tmp/contents"; then fail "test programs in the package"; fi
dpkg-deb -x "$deb" "$tmp/root"

step "man page"
zcat "$tmp/root/usr/share/man/man8/easgate.8.gz" >"$tmp/easgate.8"
groff -t -man -Tutf8 -ww -z "$tmp/easgate.8" 2>"$tmp/groff.log"
[ ! -s "$tmp/groff.log" ] || fail "groff warnings: $(cat "$tmp/groff.log")"
groff -t -man -Tascii -rLL=250n -P-cbu "$tmp/easgate.8" 2>/dev/null >"$tmp/easgate.txt"
for section in NAME SYNOPSIS DESCRIPTION OPTIONS FILES SIGNALS "EXIT STATUS"; do
    grep -q "^$section\$" "$tmp/easgate.txt" || fail "man page has no $section section"
done
grep -q "easgate $version" "$tmp/easgate.txt" || fail "man page does not name version $version"
n=0
while read -r flag _; do
    grep -qF -- "$flag" "$tmp/easgate.txt" || fail "man page does not document $flag"
    n=$((n + 1))
done < <("$tmp/root/usr/sbin/easgate" --help | grep -E '^  --')
[ "$n" -ge 20 ] || fail "only $n options in easgate --help?"
for w in SIGHUP SIGTERM /etc/easgate/easgate.json /var/lib/easgate --check-config; do
    grep -qF -- "$w" "$tmp/easgate.txt" || fail "man page does not mention $w"
done

step "shipped configuration"
# Valid as it stands except for the files the administrator has to provide.
if "$build/easgate" --check-config "$tmp/root/etc/easgate/easgate.json" >"$tmp/check.out" 2>&1; then
    fail "the sample configuration passed --check-config without its TLS material"
fi
grep -v -e 'cannot be read: No such file or directory' -e '^[0-9]* errors*$' "$tmp/check.out" &&
    fail "sample configuration problems other than missing files: $(cat "$tmp/check.out")"
grep -q 'tls_cert /etc/easgate/tls/server.crt cannot be read' "$tmp/check.out" || fail "$(cat "$tmp/check.out")"

step "unit file"
unit=$tmp/root/lib/systemd/system/easgate.service
for want in Type=notify Restart=on-failure WatchdogSec= User=easgate Group=easgate \
    StateDirectory=easgate NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes RestrictAddressFamilies= SystemCallFilter=@system-service \
    'ExecStart=/usr/sbin/easgate --config /etc/easgate/easgate.json'; do
    grep -q "^$want" "$unit" || fail "unit lacks $want"
done
grep -qx 'CapabilityBoundingSet=' "$unit" || fail "unit keeps capabilities (CapabilityBoundingSet= must be empty)"
(cd "$tmp" && systemd-analyze security --offline=yes --no-pager "$unit") >"$tmp/security.txt" 2>&1 ||
    { cat "$tmp/security.txt" >&2; fail "systemd-analyze security failed"; }
exposure=$(sed -n 's/.*Overall exposure level for easgate.service: \([0-9.]*\).*/\1/p' "$tmp/security.txt")
[ -n "$exposure" ] || fail "no exposure level in: $(tail -3 "$tmp/security.txt")"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure > 2.0"
echo "exposure $exposure"

# ---- install ------------------------------------------------------------------------------
step "dpkg -i"
installed=1
dpkg -i "$deb" </dev/null >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "dpkg -i failed"; }
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' easgate)" = "ii " ] || fail "not installed: $(cat "$tmp/install.log")"

IFS=: read -r _ _ uid gid _ home shell < <(getent passwd easgate) || fail "no user easgate"
[ "$uid" -lt 1000 ] || fail "easgate is not a system user (uid $uid)"
[ "$(getent group easgate | cut -d: -f3)" = "$gid" ] || fail "easgate's primary group is not easgate"
[ "$home" = /var/lib/easgate ] || fail "home $home"
[ "$shell" = /usr/sbin/nologin ] || fail "shell $shell"
expect_perms /etc/easgate "750 root easgate"
expect_perms /etc/easgate/easgate.json "640 root easgate"
expect_perms /var/lib/easgate "750 easgate easgate"
expect_perms /lib/systemd/system/easgate.service "644 root root"
expect_perms /usr/sbin/easgate "755 root root"
expect_perms /usr/bin/easgate-ps "755 root root"
[ "$(/usr/sbin/easgate --version)" = "easgate $version" ] || fail "installed --version"
dpkg-query -W -f='${Conffiles}\n' easgate | grep -q '^ /etc/easgate/easgate.json [0-9a-f]\{32\}$' ||
    fail "dpkg does not record the conffile"
[ -L /etc/systemd/system/multi-user.target.wants/easgate.service ] || fail "unit not enabled"

step "systemd-analyze verify (installed unit)"
# Documentation=man:easgate(8) is checked too where man-db is there to look it up.
man_check=no
command -v man >/dev/null 2>&1 && man_check=yes
(cd "$tmp" && systemd-analyze verify --man="$man_check" /lib/systemd/system/easgate.service) >"$tmp/verify.log" 2>&1 ||
    { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify failed"; }
[ ! -s "$tmp/verify.log" ] || fail "systemd-analyze verify: $(cat "$tmp/verify.log")"

# ---- the daemon as the easgate user with the shipped configuration --------------------------
step "TLS material, token and password where the configuration names them"
bash "$src/tests/fixtures/gen-test-pki.sh" "$tmp/pki"
install -d -o root -g easgate -m 0750 /etc/easgate/tls
install -o root -g easgate -m 0640 "$tmp/pki/server.pem" /etc/easgate/tls/server.crt
install -o root -g easgate -m 0640 "$tmp/pki/server-key.pem" /etc/easgate/tls/server.key
install -o root -g easgate -m 0640 "$tmp/pki/ca.pem" /etc/easgate/tls/console-ca.crt
token=$(openssl rand -hex 24)
printf '%s\n' "$token" >"$tmp/token"
install -o root -g easgate -m 0640 "$tmp/token" /etc/easgate/token
printf 'not-a-real-password\n' >"$tmp/pw"
install -o root -g easgate -m 0640 "$tmp/pw" /etc/easgate/exchange-password
runuser -u easgate -- /usr/sbin/easgate --check-config /etc/easgate/easgate.json >"$tmp/check2.out" 2>&1 ||
    fail "as easgate: $(cat "$tmp/check2.out")"
grep -q 'configuration OK' "$tmp/check2.out" || fail "$(cat "$tmp/check2.out")"

# Other users cannot read the configuration or the key (the modes are what protect them).
for p in /etc/easgate/easgate.json /etc/easgate/tls/server.key; do
    if setpriv --reuid nobody --regid nogroup --clear-groups cat "$p" >/dev/null 2>&1; then
        fail "$p is readable by nobody:nogroup"
    fi
done

step "start the installed daemon as easgate, with a notification socket as systemd gives it"
install -d -o easgate -g easgate -m 0700 "$tmp/run"
# The service manager's side of sd_notify: one line per datagram (newlines as |), until
# STOPPING=1 or 120 s.
python3 - "$tmp/run/notify" "$tmp/notify.log" <<'PY' &
import os, socket, sys, time
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
end = time.monotonic() + 120
with open(out, "w", buffering=1) as f:
    f.write("listening\n")
    while time.monotonic() < end:
        s.settimeout(max(0.1, end - time.monotonic()))
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        f.write(msg.replace("\n", "|") + "\n")
        if msg.startswith("STOPPING=1"):
            break
PY
listener_pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/notify.log" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$tmp/notify.log" || fail "the notification listener did not start"
envs=(PATH=/usr/sbin:/usr/bin:/sbin:/bin NOTIFY_SOCKET="$tmp/run/notify" WATCHDOG_USEC=400000)
[ -n "${ASAN_OPTIONS:-}" ] && envs+=("ASAN_OPTIONS=$ASAN_OPTIONS")
[ -n "${UBSAN_OPTIONS:-}" ] && envs+=("UBSAN_OPTIONS=$UBSAN_OPTIONS")
setpriv --reuid easgate --regid easgate --init-groups --no-new-privs --inh-caps=-all \
    env -i "${envs[@]}" /usr/sbin/easgate --config /etc/easgate/easgate.json \
    --listen 127.0.0.1:0 --ports-file "$tmp/run/ports.json" \
    --exchange-url https://127.0.0.1:1/PowerShell >"$tmp/daemon.log" 2>&1 </dev/null &
daemon_pid=$!
for _ in $(seq 300); do
    [ -s "$tmp/run/ports.json" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited: $(cat "$tmp/daemon.log")"
    sleep 0.1
done
[ -s "$tmp/run/ports.json" ] || fail "no ports file after 30 s: $(cat "$tmp/daemon.log")"
port=$(sed -n 's/.*"api": *\([0-9]*\).*/\1/p' "$tmp/run/ports.json")
[ -n "$port" ] || fail "ports file: $(cat "$tmp/run/ports.json")"
[ "$(stat -c %u "/proc/$daemon_pid")" = "$uid" ] || fail "the daemon does not run as easgate"
awk -v u="$uid" '/^Uid:/ { exit !($2 == u && $3 == u && $4 == u && $5 == u) }' "/proc/$daemon_pid/status" ||
    fail "daemon uids: $(grep ^Uid: "/proc/$daemon_pid/status")"
awk '/^CapEff:/ { exit !($2 ~ /^0+$/) }' "/proc/$daemon_pid/status" || fail "the daemon has capabilities"

base=https://127.0.0.1:$port
tls=(--cacert "$tmp/pki/ca.pem" -s -o "$tmp/body" -w '%{http_code}' --max-time 10)
code=$(curl "${tls[@]}" "$base/healthz") || fail "curl /healthz failed"
[ "$code" = 200 ] || fail "/healthz answered $code: $(cat "$tmp/body")"
code=$(curl "${tls[@]}" --cert "$tmp/pki/client.pem" --key "$tmp/pki/client-key.pem" \
    "$base/api/v1/commands") || true
[ "$code" = 401 ] || fail "no token: expected 401, got $code"
code=$(curl "${tls[@]}" -H "Authorization: Bearer $token" "$base/api/v1/commands") || true
[ "$code" = 403 ] || fail "no client certificate: expected 403, got $code"
code=$(curl "${tls[@]}" --cert "$tmp/pki/client.pem" --key "$tmp/pki/client-key.pem" \
    -H "Authorization: Bearer $token" "$base/api/v1/commands") || fail "curl failed"
[ "$code" = 200 ] || fail "with certificate and token: expected 200, got $code: $(cat "$tmp/body")"

expect_perms /var/lib/easgate/easgate.db "600 easgate easgate"
expect_perms /var/lib/easgate/secret.key "600 easgate easgate"

kill -HUP "$daemon_pid"
for _ in $(seq 100); do grep -q '^STATUS=SIGHUP' "$tmp/notify.log" && break; sleep 0.1; done
code=$(curl "${tls[@]}" "$base/healthz") || true
[ "$code" = 200 ] || fail "after SIGHUP /healthz answered $code: $(cat "$tmp/daemon.log")"
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=""
[ "$rc" = 0 ] || fail "the daemon exited $rc after SIGTERM: $(cat "$tmp/daemon.log")"
grep -q 'stopped' "$tmp/daemon.log" || fail "no orderly stop: $(cat "$tmp/daemon.log")"
wait "$listener_pid" || true
listener_pid=""

step "what systemd was told"
notes=$(cat "$tmp/notify.log")
[[ "$(sed -n 2p "$tmp/notify.log")" == "READY=1|STATUS=listening on 127.0.0.1 port $port, "* ]] ||
    fail "first notification is not READY=1 with the listening status: $notes"
[ "$(grep -c '^READY=1' "$tmp/notify.log")" = 1 ] || fail "READY=1 not sent exactly once: $notes"
grep -qx 'WATCHDOG=1' "$tmp/notify.log" || fail "no watchdog ping (WATCHDOG_USEC set): $notes"
grep -qx 'STATUS=SIGHUP: TLS reload done' "$tmp/notify.log" || fail "no status after SIGHUP: $notes"
tail -1 "$tmp/notify.log" | grep -q '^STOPPING=1|STATUS=draining (up to 10000 ms) and stopping|EXTEND_TIMEOUT_USEC=20000000$' ||
    fail "last notification is not STOPPING=1 with the drain: $notes"

# ---- upgrade keeps the local configuration --------------------------------------------------
step "edit the configuration, reinstall"
sed -i 's/"log_level": "notice"/"log_level": "info"/' /etc/easgate/easgate.json
grep -q '"log_level": "info"' /etc/easgate/easgate.json || fail "could not edit the configuration"
dpkg -i "$deb" </dev/null >"$tmp/upgrade.log" 2>&1 || { cat "$tmp/upgrade.log" >&2; fail "reinstall failed"; }
grep -q '"log_level": "info"' /etc/easgate/easgate.json || fail "the upgrade replaced the edited configuration"
[ ! -e /etc/easgate/easgate.json.dpkg-new ] || fail "the upgrade left easgate.json.dpkg-new"
expect_perms /etc/easgate/easgate.json "640 root easgate"
expect_perms /etc/easgate "750 root easgate"
[ "$(id -u easgate)" = "$uid" ] || fail "the upgrade changed the easgate user"
[ -s /etc/easgate/tls/server.key ] || fail "the upgrade touched the TLS material"

# ---- remove, then purge ----------------------------------------------------------------------
step "dpkg -r"
dpkg -r easgate </dev/null >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log" >&2; fail "dpkg -r failed"; }
for p in /usr/sbin/easgate /usr/bin/easgate-ps /lib/systemd/system/easgate.service \
    /usr/share/man/man8/easgate.8.gz; do
    [ ! -e "$p" ] || fail "$p is still there after remove"
done
grep -q '"log_level": "info"' /etc/easgate/easgate.json || fail "remove deleted the configuration"
getent passwd easgate >/dev/null || fail "remove deleted the user (only purge may)"
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' easgate)" = "rc " ] || fail "not in config-files state after remove"

step "dpkg -P"
dpkg -P easgate </dev/null >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log" >&2; fail "dpkg -P failed"; }
installed=0
[ ! -e /etc/easgate/easgate.json ] || fail "purge kept the configuration"
[ ! -e /var/lib/easgate ] || fail "purge kept /var/lib/easgate"
getent passwd easgate >/dev/null && fail "purge kept the user easgate"
getent group easgate >/dev/null && fail "purge kept the group easgate"
for p in /etc/easgate /etc/easgate/easgate.json; do
    dpkg-statoverride --list "$p" >/dev/null 2>&1 && fail "purge kept the stat override of $p"
done
[ ! -e /etc/systemd/system/multi-user.target.wants/easgate.service ] || fail "purge kept the enable link"
status=$(dpkg-query -W -f='${db:Status-Abbrev}' easgate 2>/dev/null || true)
case "$status" in "" | un*) ;; *) fail "package state after purge: $status" ;; esac
# What the administrator added stays (it is theirs); the cleanup removes this test's copies.
[ -s /etc/easgate/tls/server.key ] || fail "purge deleted files it does not own"
echo "PASS"
