#!/usr/bin/env bash
# Scripted console session against a local easgate (run through `./run demo`).
#
# Starts the agent on 127.0.0.1 (any free port) with HTTPS, a throwaway CA, a client certificate
# and a bearer token, exactly as a console would talk to it. Until the mock Exchange exists the
# agent uses its dry-run bridge: it applies every command to an in-memory model of Exchange and
# records the cmdlets it would run; those cmdlets are what each step prints under "Exchange".
set -euo pipefail
BUILD=${1:?usage: demo.sh BUILD_DIR}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
EASGATE="$BUILD/easgate"
WORK=$(mktemp -d /tmp/easgate-demo.XXXXXX)
AGENT_PID=
cleanup() {
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

bash "$SRC/tests/fixtures/gen-test-pki.sh" "$WORK/pki" >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$WORK/token"
chmod 600 "$WORK/token"
TOKEN=$(cat "$WORK/token")

bold "Starting easgate (dry-run Exchange bridge, 150 ms per Exchange call, 2 workers)"
"$EASGATE" --listen 127.0.0.1:0 --ports-file "$WORK/ports.json" --state-dir "$WORK/state" \
  --tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server-key.pem" \
  --client-ca "$WORK/pki/ca.pem" --token-file "$WORK/token" \
  --workers 2 --dryrun-latency-ms 150 --log-level info 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 100); do [ -s "$WORK/ports.json" ] && break; sleep 0.05; done
PORT=$(jq -r .api "$WORK/ports.json")
BASE="https://127.0.0.1:$PORT"
say "listening on $BASE (mutual TLS + bearer token)"

api() { # api METHOD PATH [JSON]
  local args=(-sS --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/client.pem"
              --key "$WORK/pki/client-key.pem" -H "Authorization: Bearer $TOKEN"
              -X "$1" -w '\n%{http_code}')
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}" "$BASE$2"
}
post() { # post JSON -> prints status and the state of each command
  local out code
  out=$(api POST /api/v1/commands "$1")
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  say "POST /api/v1/commands -> HTTP $code"
  if jq -e '.commands' >/dev/null 2>&1 <<<"$out"; then
    jq -r '.commands[] | "     \(.id): \(.type) -> \(.state)"' <<<"$out"
  elif jq -e '.id' >/dev/null 2>&1 <<<"$out"; then
    jq -r '"     \(.id): \(.type) -> \(.state)"' <<<"$out"
  else
    jq -r '"     \(.title): \(.detail)" + (if .field then " [field \(.field)]" else "" end)' <<<"$out"
  fi
}
wait_and_show() { # wait_and_show ID... -> final state and what was done in Exchange
  local id st out
  for id in "$@"; do
    for _ in $(seq 200); do
      out=$(api GET "/api/v1/commands/$id"); out=${out%$'\n'*}
      st=$(jq -r .state <<<"$out")
      case $st in succeeded|failed|cancelled) break ;; esac
      sleep 0.05
    done
    jq -r '"   \(.id) [\(.type)] -> \(.state) after \(.attempts) attempt(s)"
           + (if .result.coalesced_with and (.result.coalesced_with|length>0)
              then "  (one Exchange call together with \(.result.coalesced_with|join(", ")))" else "" end)' <<<"$out"
    jq -r '(.result.actions // [])[] | "       Exchange: \(.cmdlet) \(.parameters|tojson)"' <<<"$out"
    jq -r 'if .error then "       error: \(.error.code): \(.error.message)" else empty end' <<<"$out"
  done
}

bold "1. Block one device"
post '{"id":"demo-1","type":"device.block","mailbox":"alice@corp.example","device_id":"ApplF17ALICE1"}'
wait_and_show demo-1

bold "2. A burst for two mailboxes: coalesced into one Set-CASMailbox per mailbox"
post '{"commands":[
 {"id":"demo-2a","type":"device.allow","mailbox":"bob@corp.example","device_id":"androidc1001"},
 {"id":"demo-2b","type":"device.block","mailbox":"bob@corp.example","device_id":"androidc1002"},
 {"id":"demo-2c","type":"device.allow","mailbox":"bob@corp.example","device_id":"androidc1002"},
 {"id":"demo-2d","type":"device.unlist","mailbox":"alice@corp.example","device_id":"ApplF17ALICE1"},
 {"id":"demo-2e","type":"device.allow","mailbox":"alice@corp.example","device_id":"ApplF17ALICE2"}]}'
say "(demo-2c comes after demo-2b for the same device, so the device ends up allowed)"
wait_and_show demo-2a demo-2b demo-2c demo-2d demo-2e

bold "3. Declare a mailbox's full device sets: easgate sends only the difference"
post '{"id":"demo-3","type":"mailbox.set_devices","mailbox":"bob@corp.example","allowed":["androidc1001","ApplNEW9"],"blocked":["androidc1003"]}'
wait_and_show demo-3

bold "4. Wipe (account data only), then cancel it"
post '{"id":"demo-4a","type":"device.wipe","mailbox":"carol@corp.example","device_id":"ApplLOST77","account_only":true,"notify":["helpdesk@corp.example"]}'
wait_and_show demo-4a
post '{"id":"demo-4b","type":"device.wipe_cancel","mailbox":"carol@corp.example","device_id":"ApplLOST77"}'
wait_and_show demo-4b

bold "5. Org default access level -> quarantine; mailbox settings; remove a partnership"
post '{"commands":[
 {"id":"demo-5a","type":"org.set_default_access","level":"quarantine"},
 {"id":"demo-5b","type":"mailbox.set","mailbox":"dave@corp.example","activesync_enabled":false},
 {"id":"demo-5c","type":"device.remove","mailbox":"carol@corp.example","device_id":"ApplLOST77"}]}'
wait_and_show demo-5a demo-5b demo-5c

bold "6. Idempotency: the same id again returns the stored state; a different body is a conflict"
post '{"id":"demo-1","type":"device.block","mailbox":"alice@corp.example","device_id":"ApplF17ALICE1"}'
post '{"id":"demo-1","type":"device.block","mailbox":"alice@corp.example","device_id":"SOMETHINGELSE"}'

bold "7. Bad input is refused with the field named, and nothing is stored"
post '{"id":"demo-7","type":"device.block","mailbox":"alice@corp.example","device_id":"x'"'"'; Remove-Mailbox -Identity ceo"}'
post '{"id":"demo-7","type":"device.explode"}'
post '{"id": "demo-7", "type": '

bold "8. Status"
out=$(api GET /api/v1/status); jq . <<<"${out%$'\n'*}" | sed 's/^/   /'

bold "9. A few metrics"
out=$(api GET /metrics)
grep -E '^easgate_(queue_depth|commands_finished_total|http_requests_total\{route="/api/v1/commands")' <<<"${out%$'\n'*}" | head -12 | sed 's/^/   /'

bold "10. SIGTERM: drain and stop"
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" && say "agent exited cleanly"
AGENT_PID=
say "agent log:"; sed 's/^/     /' "$WORK/agent.log" | tail -8
