#!/usr/bin/env bash
# Scripted console session against a local easgate (run through `./run demo`).
#
# Starts the mock Exchange (easgate-mock-exchange: an in-memory Exchange 2016 org behind a real
# WS-Man/PSRP endpoint) and the agent on 127.0.0.1 (any free ports). The agent talks to the mock
# exactly as to a real on-prem Exchange (/PowerShell, Basic auth, structured cmdlets), and the
# console side talks to the agent over HTTPS with a throwaway CA, a client certificate and a
# bearer token. Each step prints the command posted, its state, the cmdlets that ran in
# "Exchange", and what the mock's org looks like afterwards.
set -euo pipefail
BUILD=${1:?usage: demo.sh BUILD_DIR}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
EASGATE="$BUILD/easgate"
MOCK="$BUILD/easgate-mock-exchange"
WORK=$(mktemp -d /tmp/easgate-demo.XXXXXX)
AGENT_PID=
MOCK_PID=
RX_PID=
cleanup() {
  if [ -n "$RX_PID" ]; then kill "$RX_PID" 2>/dev/null; wait "$RX_PID" 2>/dev/null || true; fi
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

bash "$SRC/tests/fixtures/gen-test-pki.sh" "$WORK/pki" >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$WORK/token"
chmod 600 "$WORK/token"
TOKEN=$(cat "$WORK/token")

bold "Starting the mock Exchange 2016 (50 mailboxes, 150 devices) and easgate (2 workers)"
echo "svc-easgate:Demo-Passw0rd" >"$WORK/exchange-users"
echo "Demo-Passw0rd" >"$WORK/exchange-password"
chmod 600 "$WORK/exchange-password"
"$MOCK" --listen 127.0.0.1:0 --listen 127.0.0.1:0 --control 127.0.0.1:0 --profile 2016 \
  --mailboxes 50 --devices 150 --seed 42 --users "$WORK/exchange-users" \
  --ports-file "$WORK/mock-ports.json" 2>"$WORK/mock.log" &
MOCK_PID=$!
for _ in $(seq 100); do [ -s "$WORK/mock-ports.json" ] && break; sleep 0.05; done
CAS1="http://127.0.0.1:$(jq -r '.exchange_all[0]' "$WORK/mock-ports.json")/PowerShell"
CAS2="http://127.0.0.1:$(jq -r '.exchange_all[1]' "$WORK/mock-ports.json")/PowerShell"
CONTROL="http://127.0.0.1:$(jq -r .control "$WORK/mock-ports.json")"
say "mock Exchange with two CAS servers $CAS1 and $CAS2 (test-only control API at $CONTROL)"
UPLOAD_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
python3 -u "$SRC/tests/integration/console_receiver.py" "$UPLOAD_KEY" >"$WORK/console.log" 2>&1 &
RX_PID=$!
for _ in $(seq 100); do [ -s "$WORK/console.log" ] && break; sleep 0.05; done
UPLOAD_URL=$(head -1 "$WORK/console.log")
say "reference console receiver (checks HMAC and sequence continuity) at $UPLOAD_URL"
"$EASGATE" --listen 127.0.0.1:0 --ports-file "$WORK/ports.json" --state-dir "$WORK/state" \
  --tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server-key.pem" \
  --client-ca "$WORK/pki/ca.pem" --token-file "$WORK/token" --workers 2 \
  --log-level info 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 100); do [ -s "$WORK/ports.json" ] && break; sleep 0.05; done
PORT=$(jq -r .api "$WORK/ports.json")
BASE="https://127.0.0.1:$PORT"
say "easgate listening on $BASE (mutual TLS + bearer token), no Exchange target yet (dry run)"
lists() { # lists MAILBOX -> the mailbox's lists as the mock Exchange holds them
  curl -s "$CONTROL/control/state/mailbox/$1" |
    jq -r '"       in Exchange now: \(.primary_smtp) allowed=\(.allowed) blocked=\(.blocked)"'
}
device_where() { # device_where JQ_TEST -> "MAILBOX DEVICE" of the first device passing the test
  local i m d
  for i in $(seq -w 3 50); do
    m="user00$i@contoso.example"
    for d in $(curl -s "$CONTROL/control/state/mailbox/$m" | jq -r '.devices[]'); do
      if curl -s "$CONTROL/control/state/device/$m/$d" | jq -e "$1" >/dev/null; then
        echo "$m $d"; return
      fi
    done
  done
}

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
    jq -r 'if .error.exchange then "       Exchange said: \(.error.exchange.type): \(.error.exchange.message)" else empty end' <<<"$out"
  done
}

bold "0. The console points easgate at Exchange: PUT /api/v1/config (applied at once, no restart)"
out=$(api PUT /api/v1/config '{"target":{"kind":"onprem","servers":[{"url":"'"$CAS1"'"},{"url":"'"$CAS2"'"}],
  "scheduling":"priority","auth":"basic","username":"svc-easgate","password":"Demo-Passw0rd",
  "allow_http_basic":true,"max_concurrency":4,"dead_threshold":1,"health_interval_s":10,"live_threshold":1},
  "upload":{"url":"'"$UPLOAD_URL"'","hmac_key":"'"$UPLOAD_KEY"'"}}')
say "PUT /api/v1/config -> HTTP ${out##*$'\n'}"
out=$(api GET /api/v1/config)
say "GET /api/v1/config (the password is write-only and stored sealed with AES-256-GCM):"
jq -c '.target | {kind, servers, username, password_set, scheduling, max_concurrency}' <<<"${out%$'\n'*}" | sed 's/^/     /'
if grep -q Demo-Passw0rd "$WORK/state/target.json" "$WORK/agent.log"; then say "PASSWORD LEAKED"; exit 1; fi
say "target.json holds no plaintext password: $(grep -c password_sealed "$WORK/state/target.json") sealed field"

bold "1. Block one device"
post '{"id":"demo-1","type":"device.block","mailbox":"user0001@contoso.example","device_id":"ApplF17ALICE1"}'
wait_and_show demo-1
lists user0001@contoso.example

bold "2. A burst for two mailboxes: coalesced into one Set-CASMailbox per mailbox"
post '{"commands":[
 {"id":"demo-2a","type":"device.allow","mailbox":"user0002@contoso.example","device_id":"androidc1001"},
 {"id":"demo-2b","type":"device.block","mailbox":"user0002@contoso.example","device_id":"androidc1002"},
 {"id":"demo-2c","type":"device.allow","mailbox":"user0002@contoso.example","device_id":"androidc1002"},
 {"id":"demo-2d","type":"device.unlist","mailbox":"user0001@contoso.example","device_id":"ApplF17ALICE1"},
 {"id":"demo-2e","type":"device.allow","mailbox":"user0001@contoso.example","device_id":"ApplF17ALICE2"}]}'
say "(demo-2c comes after demo-2b for the same device, so the device ends up allowed)"
wait_and_show demo-2a demo-2b demo-2c demo-2d demo-2e
lists user0002@contoso.example
lists user0001@contoso.example

bold "3. Declare a mailbox's full device sets: easgate sends only the difference"
post '{"id":"demo-3","type":"mailbox.set_devices","mailbox":"user0002@contoso.example","allowed":["androidc1001","ApplNEW9"],"blocked":["androidc1003"]}'
wait_and_show demo-3
lists user0002@contoso.example

read -r LOSTMBX LOST < <(device_where '.eas_version|tonumber >= 16.1')
read -r OLDMBX OLD < <(device_where '.eas_version|tonumber < 16.1')
bold "4. Wipe $LOST (account data only), then cancel it"
post '{"id":"demo-4a","type":"device.wipe","mailbox":"'"$LOSTMBX"'","device_id":"'"$LOST"'","account_only":true,"notify":["helpdesk@contoso.example"]}'
wait_and_show demo-4a
curl -s "$CONTROL/control/state/device/$LOSTMBX/$LOST" | jq -r '"       in Exchange now: \(.device_id) wipe status=\(.wipe.status) account_only=\(.wipe.account_only)"'
post '{"id":"demo-4b","type":"device.wipe_cancel","mailbox":"'"$LOSTMBX"'","device_id":"'"$LOST"'"}'
wait_and_show demo-4b
curl -s "$CONTROL/control/state/device/$LOSTMBX/$LOST" | jq -r '"       in Exchange now: \(.device_id) wipe status=\(.wipe.status) account_only=\(.wipe.account_only)"'

bold "5. Org default access level -> quarantine; mailbox settings; remove a partnership"
post '{"commands":[
 {"id":"demo-5a","type":"org.set_default_access","level":"quarantine"},
 {"id":"demo-5b","type":"mailbox.set","mailbox":"user0004@contoso.example","activesync_enabled":false},
 {"id":"demo-5c","type":"device.remove","mailbox":"'"$LOSTMBX"'","device_id":"'"$LOST"'"}]}'
wait_and_show demo-5a demo-5b demo-5c
curl -s "$CONTROL/control/state/org" | jq -r '"       in Exchange now: DefaultAccessLevel=\(.default_access_level)"'

bold "6. Exchange says no: an unknown mailbox, a device gone, an old phone asked for an account-only wipe"
post '{"commands":[
 {"id":"demo-6a","type":"device.block","mailbox":"nobody@contoso.example","device_id":"X1"},
 {"id":"demo-6b","type":"device.remove","mailbox":"'"$LOSTMBX"'","device_id":"'"$LOST"'"},
 {"id":"demo-6c","type":"device.wipe","mailbox":"'"$OLDMBX"'","device_id":"'"$OLD"'"}]}'
wait_and_show demo-6a demo-6b demo-6c

bold "7. Inventory: every device Exchange knows, streamed"
post '{"id":"demo-7","type":"inventory.sync","mode":"full"}'
wait_and_show demo-7
out=$(api GET /api/v1/commands/demo-7); jq -r '"   \(.result.devices) devices read in \(.result.pages) streamed page(s)"' <<<"${out%$'\n'*}"

bold "7b. Scheduled inventory: a full sync now, its deltas and every command result uploaded to the console"
out=$(api POST /api/v1/inventory/sync '{"mode":"full"}')
say "POST /api/v1/inventory/sync -> HTTP ${out##*$'\n'}"
for _ in $(seq 200); do
  out=$(api GET /api/v1/status); out=${out%$'\n'*}
  jq -e '.inventory.running == null and .inventory.last != null' >/dev/null 2>&1 <<<"$out" && break
  sleep 0.1
done
jq -c '.inventory.last | {mode, ok, duration_ms, devices, added, changed, removed, drift}' <<<"$out" | sed 's/^/     last sync: /'
sleep 2
out=$(api GET /api/v1/status); out=${out%$'\n'*}
jq -c '.upload | {records, next_seq, acked_seq, warning, last_error}' <<<"$out" | sed 's/^/     upload: /'
say "the console receiver's view:"; tail -2 "$WORK/console.log" | sed 's/^/     /'
out=$(api GET '/api/v1/inventory?limit=2')
say "GET /api/v1/inventory?limit=2 (the cached snapshot):"
jq -c '(.devices // .items // .)[:2][]? | {mailbox, device_id, device_type, access_state, list}' <<<"${out%$'\n'*}" | sed 's/^/     /'

bold "8. Idempotency: the same id again returns the stored state; a different body is a conflict"
post '{"id":"demo-1","type":"device.block","mailbox":"user0001@contoso.example","device_id":"ApplF17ALICE1"}'
post '{"id":"demo-1","type":"device.block","mailbox":"user0001@contoso.example","device_id":"SOMETHINGELSE"}'

bold "9. Injection-looking IDs are data, never script; malformed input is refused with the field named"
post '{"id":"demo-9a","type":"device.block","mailbox":"user0001@contoso.example","device_id":"x'"'"'; Remove-Mailbox -Identity ceo"}'
wait_and_show demo-9a
lists user0001@contoso.example
post '{"id":"demo-9b","type":"device.explode"}'
post '{"id": "demo-9c", "type": '

bold "9b. One CAS server goes down: commands fail over to the other, and the status page follows"
curl -s -X POST "$CONTROL/control/listener/0/down" >/dev/null
post '{"id":"demo-9d","type":"device.allow","mailbox":"user0003@contoso.example","device_id":"ApplFAILOVER1"}'
wait_and_show demo-9d
out=$(api GET /api/v1/status)
jq -r '.target.servers[] | "     \(.url): \(.state)" + (if .last_error then " (last error: \(.last_error.code))" else "" end)' <<<"${out%$'\n'*}"
curl -s -X POST "$CONTROL/control/listener/0/up" >/dev/null
say "(server 1 is back; the health check marks it reachable again after its probes succeed)"

bold "10. Status"
out=$(api GET /api/v1/status); jq . <<<"${out%$'\n'*}" | sed 's/^/   /'

bold "11. A few metrics"
out=$(api GET /metrics)
grep -E '^easgate_(queue_depth|commands_finished_total|http_requests_total\{route="/api/v1/commands")' <<<"${out%$'\n'*}" | head -12 | sed 's/^/   /'

bold "12. SIGTERM: drain and stop"
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" && say "agent exited cleanly"
AGENT_PID=
say "agent log:"; sed 's/^/     /' "$WORK/agent.log" | tail -8
say "cmdlets the mock Exchange received: $(curl -s "$CONTROL/control/calls" | jq length), e.g.:"
curl -s "$CONTROL/control/calls" | jq -r '.[] | select(.cmdlet=="Set-CASMailbox") | "     \(.cmdlet) \(.parameters|tojson)"' | head -3
kill -TERM "$MOCK_PID"; wait "$MOCK_PID" 2>/dev/null; MOCK_PID=
