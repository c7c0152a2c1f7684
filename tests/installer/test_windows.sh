#!/usr/bin/env bash
# test_windows.sh - the Windows build under wine64: common/platform.h's Windows semantics
# (platform_win_check.c); the daemon in console mode answers
# GET /healthz over HTTPS; the MSI registers the service; installed under wine it runs as the
# "easgate" service (sc query: RUNNING, /healthz answers) and uninstalling removes it.
#
# usage: tests/installer/test_windows.sh BUILD_DIR     (installer/windows/build.sh's output:
#        easgate.exe, easgate.msi). EG_WIN_SKIP_MSIEXEC=1 skips the install/uninstall part.
# Prints "N passed, M failed" and exits non-zero if a check failed.
set -uo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
BUILD=$(readlink -f "${1:?usage: $0 BUILD_DIR}")
EXE="$BUILD/easgate.exe"
MSI="$BUILD/easgate.msi"
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
nok() { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else nok "$what"; fi; }

for f in "$EXE" "$MSI"; do [ -f "$f" ] || { echo "missing $f (run installer/windows/build.sh)" >&2; exit 1; }; done
command -v wine >/dev/null || { echo "wine is not installed" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/eg-win.XXXXXX")
export WINEPREFIX="$T/prefix" WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null
  wineserver -k 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

# winpath PATH: the Unix path as the Windows program sees it (wine maps / to Z:).
winpath() { printf 'Z:%s' "$1"; }
# wait_port FILE: the port in a ports_file, waiting up to 30 s for it.
wait_port() {
  local i
  for i in $(seq 1 300); do
    if [ -s "$1" ]; then sed -n 's/.*"api": *\([0-9]*\).*/\1/p' "$1"; return 0; fi
    sleep 0.1
  done
  return 1
}
healthz() { # healthz PORT -> HTTP status of GET /healthz over HTTPS (the test CA)
  curl -sS -o "$T/healthz.body" -w '%{http_code}' --max-time 10 --cacert "$T/pki/ca.pem" \
    "https://localhost:$1/healthz" 2>"$T/curl.err" || true
}
write_config() { # write_config FILE STATE_DIR PORTS_FILE
  cat >"$1" <<JSON
{
  "listen": "127.0.0.1:0",
  "state_dir": "$2",
  "ports_file": "$3",
  "tls_cert": "$(winpath "$T/pki/server.pem")",
  "tls_key": "$(winpath "$T/pki/server-key.pem")",
  "token_file": "$(winpath "$T/token")",
  "bridge": "dryrun",
  "log_level": "info"
}
JSON
}

t0=$(date +%s)
wineboot -i >/dev/null 2>&1
wineserver -p 60 # one wine session for the whole test (services are not restarted each time)
sleep 5          # let the prefix's own services settle: an early StartService fails (1055)
echo "# wine prefix ready in $(( $(date +%s) - t0 )) s"
bash "$ROOT/tests/fixtures/gen-test-pki.sh" "$T/pki"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/token"

# --- 0. common/platform.h's semantics (compiled as the Windows build compiles) ----------------
if x86_64-w64-mingw32-gcc-posix -std=gnu11 -Wall -Wextra -Werror -Wno-format \
     -include "$ROOT/common/platform.h" -D_WIN32_WINNT=0x0A00 -DWIN32_LEAN_AND_MEAN -DNOMINMAX \
     -D__USE_MINGW_ANSI_STDIO=1 -I"$ROOT" -isystem "$ROOT/common/platform_win" \
     "$HERE/platform_win_check.c" "$ROOT/common/platform_win.c" -o "$T/platform_win_check.exe" \
     -static -lbcrypt -lws2_32 2>"$T/pwc.err"; then
  mkdir -p "$T/pwc"
  wine "$T/platform_win_check.exe" "$(winpath "$T/pwc")" >"$T/pwc.out" 2>&1
  cat "$T/pwc.out" | tr -d '\r'
  pass=$((pass + $(grep -c '^ok' "$T/pwc.out"))); fail=$((fail + $(grep -c '^FAIL' "$T/pwc.out")))
  grep -q '^ok' "$T/pwc.out" || nok "platform_win_check.exe did not run"
else
  nok "platform_win_check.c does not compile"; cat "$T/pwc.err"
fi

# --- 1. console mode -------------------------------------------------------------------------
check "easgate.exe --version runs under wine" bash -c "wine '$EXE' --version 2>&1 | grep -q '^easgate '"
mkdir -p "$T/console"
write_config "$T/console/easgate.conf" "$(winpath "$T/console/state")" "$(winpath "$T/console/ports.json")"
check "--check-config accepts the test configuration" \
  bash -c "wine '$EXE' --check-config '$(winpath "$T/console/easgate.conf")' >'$T/check.out' 2>&1"
wine "$EXE" --console --config "$(winpath "$T/console/easgate.conf")" >"$T/console.log" 2>&1 &
DAEMON_PID=$!
port=$(wait_port "$T/console/ports.json") || port=
if [ -n "$port" ]; then
  ok "console mode: listening (port $port from ports_file)"
  code=$(healthz "$port")
  check "console mode: GET /healthz over HTTPS answers 200 (got $code)" [ "$code" = 200 ]
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$T/pki/ca.pem" \
           "https://localhost:$port/api/v1/commands" || true)
  check "console mode: the API without the token is refused (got $code)" [ "$code" = 401 ]
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$T/pki/ca.pem" \
           -H "Authorization: Bearer $(cat "$T/token")" -H 'Content-Type: application/json' \
           -d '{"id":"w1","type":"device.block","mailbox":"alice@corp.example","device_id":"DEV1"}' \
           "https://localhost:$port/api/v1/commands" || true)
  check "console mode: a command is journalled (got $code)" [ "$code" = 202 ]
  check "console mode: the journal exists in state_dir" [ -f "$T/console/state/easgate.db" ]
else
  nok "console mode: the daemon did not write its ports_file"
fi
kill -INT "$DAEMON_PID" 2>/dev/null
for i in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$DAEMON_PID" 2>/dev/null && kill -9 "$DAEMON_PID" 2>/dev/null
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
if grep -q 'stopped' "$T/console.log"; then ok "console mode: stops in order on Ctrl-C"; else
  echo "# (no orderly stop seen after SIGINT; console log tail:)"; tail -n 5 "$T/console.log" | sed 's/^/#   /'; fi

# --- 2. the MSI's tables -----------------------------------------------------------------------
msiinfo export "$MSI" ServiceInstall >"$T/si.txt" 2>&1
check "MSI ServiceInstall: easgate, own process (16), automatic start (2)" \
  grep -qP '^EasgateService\teasgate\teasgate\t16\t2\t' "$T/si.txt"
msiinfo export "$MSI" ServiceControl >"$T/sc.txt" 2>&1
check "MSI ServiceControl: start on install (1), not waiting" \
  grep -qP '^EasgateServiceStart\teasgate\t1\t\t0\t' "$T/sc.txt"
check "MSI ServiceControl: stop on install and uninstall, remove on uninstall (162), waiting" \
  grep -qP '^EasgateServiceStop\teasgate\t162\t\t1\t' "$T/sc.txt"
msiinfo export "$MSI" File >"$T/files.txt" 2>&1
check "MSI File: easgate.exe and the sample configuration" \
  bash -c "grep -q 'easgate.exe' '$T/files.txt' && grep -q 'easgate.conf.sample' '$T/files.txt'"

# --- 3. install, run as a service, uninstall ----------------------------------------------------
if [ "${EG_WIN_SKIP_MSIEXEC:-0}" != 1 ]; then
  pd="$WINEPREFIX/drive_c/ProgramData/easgate"
  mkdir -p "$pd"
  # An easgate.conf that is already there is kept (the sample is only copied when there is none).
  write_config "$pd/easgate.conf" "C:/ProgramData/easgate/state" "C:/ProgramData/easgate/ports.json"
  check "msiexec /i easgate.msi /qn" env WINEDEBUG=err+msi,err+service \
    wine msiexec /i "$(winpath "$MSI")" /qn /l*v "$(winpath "$T/msi-install.log")" 2>"$T/msi.err"
  check "easgate.exe installed in Program Files" [ -f "$WINEPREFIX/drive_c/Program Files/easgate/easgate.exe" ]
  check "sample configuration installed in ProgramData" [ -f "$pd/easgate.conf.sample" ]
  port=$(wait_port "$pd/ports.json") || port=
  wine sc query easgate >"$T/scq.txt" 2>&1
  check "sc query easgate: RUNNING" grep -q 'RUNNING' "$T/scq.txt"
  if [ -n "$port" ]; then
    code=$(healthz "$port")
    check "service: GET /healthz answers 200 (got $code)" [ "$code" = 200 ]
  else
    nok "service: no ports_file (service log below)"
  fi
  check "service: its log file is written" [ -s "$pd/logs/easgate.log" ]
  check "msiexec /x easgate.msi /qn" wine msiexec /x "$(winpath "$MSI")" /qn
  for i in $(seq 1 50); do # the entry goes once the process has exited
    wine sc query easgate >"$T/scq2.txt" 2>&1
    grep -q 'RUNNING\|STOPPED\|PENDING' "$T/scq2.txt" || break
    sleep 0.2
  done
  check "sc query easgate after uninstall: the service is gone" \
    bash -c "! grep -q 'RUNNING\|STOPPED\|PENDING' '$T/scq2.txt'"
  grep -q 'RUNNING\|STOPPED\|PENDING' "$T/scq2.txt" && sed 's/^/#   /' "$T/scq2.txt"
  check "service: stopped in order on uninstall" grep -q 'stopped' "$pd/logs/easgate.log"
  check "uninstall kept the configuration and state" \
    bash -c "[ -f '$pd/easgate.conf' ] && [ -f '$pd/state/easgate.db' ]"
  if [ "$fail" -gt 0 ] && [ -f "$T/msi-install.log" ]; then
    echo "# msiexec errors:"; grep -a 'err:' "$T/msi.err" | head -n 10 | sed 's/^/#   /'
  fi
  if [ "$fail" -gt 0 ] && [ -f "$pd/logs/easgate.log" ]; then
    echo "# service log:"; sed 's/^/#   /' "$pd/logs/easgate.log" | tail -n 20
  fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
