"""A reference console receiver for the agent's uploads (docs/internals/outbox.md), for tests.

ConsoleReceiver(key) serves POST /upload on 127.0.0.1 with an ephemeral port in a thread:

- verifies X-Easgate-Signature "t=<unix>,v1=<hex>" = HMAC-SHA256(key, "<t>." + body) in constant
  time and within `tolerance_s` of now (401 otherwise);
- checks the body: exactly {"agent_id", "seq", "sent_at", "records": [{"n", "kind", "at",
  "payload"}]}, the X-Easgate-Agent header equal to agent_id (400 otherwise);
- checks sequence continuity per agent: seq == last_acked + 1 is recorded and acknowledged
  ({"ack": seq}); seq == last_acked is a re-send, acknowledged again without recording anything
  (its record numbers must equal the recorded batch's); anything else is 409 {"expected":
  last_acked + 1}; record numbers must grow strictly across batches;
- records every record in order (records(), batches(), heartbeats()) and every violation in
  `errors` (a correct agent leaves it empty);
- can go down: down("refuse") closes the listening socket (connections are refused) and
  down("503") answers 503 with Retry-After; lose_acks(n) records the next n batches but answers
  500, as if the acknowledgement were lost; up() comes back on the same port;
- forget()/adopt() reset or set what it knows of an agent (a console that lost its state, or an
  operator who resets the expected sequence).

Standard library only. Importable by other tests; `python3 console_receiver.py KEY` serves until
interrupted (prints the URL).
"""
import hashlib
import hmac
import http.server
import json
import socketserver
import sys
import threading
import time

BODY_KEYS = {"agent_id", "seq", "sent_at", "records"}
RECORD_KEYS = {"n", "kind", "at", "payload"}
MAX_BODY = 64 * 1024 * 1024


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _answer(self, status, obj, headers=None):
        raw = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Connection", "close")  # no kept-alive connection outlives down()
        self.close_connection = True
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        rx = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self._answer(413, {"title": "too large"})
            return
        body = self.rfile.read(length)
        if rx.mode == "refuse":  # went down while this request was on its way: no answer
            self.close_connection = True
            return
        status, obj, headers = rx._handle(self.path, dict(self.headers.items()), body)
        self._answer(status, obj, headers)


class ConsoleReceiver:
    def __init__(self, key, path="/upload", tolerance_s=300):
        self.key = key.encode() if isinstance(key, str) else key
        self.path = path
        self.tolerance_s = tolerance_s
        self.lock = threading.Condition()
        self.agents = {}  # agent_id -> {"last_acked", "last_n", "batches": {seq: [n...]}}
        self._records = []  # (agent_id, seq, record) in order
        self._batches = []  # (agent_id, seq, number of records) recorded
        self.errors = []
        self.requests = 0
        self.bytes_received = 0  # request body bytes of every POST to the upload path
        self.bad_signatures = 0
        self.resends = 0
        self.conflicts = 0
        self.mode = "up"
        self._lose = 0
        self.port = 0
        self._srv = None
        self._thread = None
        self._start()

    # ---- lifecycle --------------------------------------------------------------------------
    def _start(self):
        self._srv = _Server(("127.0.0.1", self.port), _Handler)
        self._srv.receiver = self
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def _halt(self):
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    @property
    def url(self):
        return "http://127.0.0.1:%d%s" % (self.port, self.path)

    def down(self, how="refuse"):
        """how="refuse": no listener (connection refused); "503": answer 503 + Retry-After 1."""
        with self.lock:
            self.mode = how
        if how == "refuse":
            self._halt()

    def up(self):
        with self.lock:
            self.mode = "up"
        if not self._srv:
            for _ in range(100):  # the same port, once the kernel lets go of it
                try:
                    self._start()
                    return
                except OSError:
                    time.sleep(0.05)
            raise AssertionError("cannot listen on port %d again" % self.port)

    def lose_acks(self, n):
        with self.lock:
            self._lose = n

    def close(self):
        self._halt()

    def forget(self, agent_id=None):
        with self.lock:
            if agent_id:
                self.agents.pop(agent_id, None)
            else:
                self.agents.clear()

    def adopt(self, agent_id, last_acked):
        """Accept last_acked + 1 next from agent_id (an operator resetting the console)."""
        with self.lock:
            a = self.agents.setdefault(agent_id, {"last_acked": 0, "last_n": 0, "batches": {}})
            a["last_acked"] = last_acked
            a["batches"] = {}

    # ---- what was received ------------------------------------------------------------------
    def records(self, agent_id=None, kind=None):
        with self.lock:
            return [r for a, _, r in self._records
                    if (agent_id is None or a == agent_id) and (kind is None or r["kind"] == kind)]

    def batches(self, agent_id=None):
        with self.lock:
            return [(a, s, n) for a, s, n in self._batches if agent_id is None or a == agent_id]

    def heartbeats(self, agent_id=None):
        return [b for b in self.batches(agent_id) if b[2] == 0]

    def last_acked(self, agent_id):
        with self.lock:
            a = self.agents.get(agent_id)
            return a["last_acked"] if a else 0

    def wait(self, pred, timeout=30, what="condition"):
        deadline = time.time() + timeout
        with self.lock:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("receiver: %s not reached in %ss (errors: %s)" % (
                        what, timeout, self.errors))
                self.lock.wait(min(left, 0.1))

    # ---- the protocol -----------------------------------------------------------------------
    def _signature_ok(self, header, body):
        try:
            parts = dict(p.split("=", 1) for p in header.split(","))
            t = parts["t"]
            given = parts["v1"]
        except (KeyError, ValueError, AttributeError):
            return False
        if not t.isdigit() or abs(int(t) - time.time()) > self.tolerance_s:
            return False
        want = hmac.new(self.key, t.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, given)

    def _handle(self, path, headers, body):
        with self.lock:
            self.requests += 1
            try:
                return self._handle_locked(path, headers, body)
            finally:
                self.lock.notify_all()

    def _handle_locked(self, path, headers, body):
        self.bytes_received += len(body)
        if self.mode == "503":
            return 503, {"title": "console down for maintenance"}, {"Retry-After": "1"}
        if path != self.path:
            return 404, {"title": "no such resource"}, None
        sig = headers.get("X-Easgate-Signature")
        if not sig or not self._signature_ok(sig, body):
            self.bad_signatures += 1
            return 401, {"title": "bad signature"}, None
        if not headers.get("Content-Type", "").startswith("application/json"):
            self.errors.append("content type %r" % headers.get("Content-Type"))
            return 415, {"title": "not JSON"}, None
        try:
            doc = json.loads(body)
        except ValueError as e:
            self.errors.append("body is not JSON: %s" % e)
            return 400, {"title": "not JSON"}, None
        problem = self._shape(doc, headers)
        if problem:
            self.errors.append(problem)
            return 400, {"title": problem}, None
        agent, seq, recs = doc["agent_id"], doc["seq"], doc["records"]
        a = self.agents.setdefault(agent, {"last_acked": 0, "last_n": 0, "batches": {}})
        ns = [r["n"] for r in recs]
        if seq == a["last_acked"] and seq in a["batches"]:
            self.resends += 1
            if a["batches"][seq] != ns:
                self.errors.append("seq %d re-sent with other records %s, first %s" % (
                    seq, ns, a["batches"][seq]))
            return 200, {"ack": seq}, None
        if seq != a["last_acked"] + 1:
            self.conflicts += 1
            return 409, {"title": "sequence gap", "expected": a["last_acked"] + 1}, None
        if any(n <= a["last_n"] for n in ns) or ns != sorted(set(ns)):
            self.errors.append("seq %d: record numbers %s not above %d and increasing" % (
                seq, ns, a["last_n"]))
        for r in recs:
            self._records.append((agent, seq, r))
        self._batches.append((agent, seq, len(recs)))
        a["batches"] = {seq: ns}
        a["last_acked"] = seq
        if ns:
            a["last_n"] = ns[-1]
        if self._lose > 0:
            self._lose -= 1
            return 500, {"title": "acknowledgement lost"}, None
        return 200, {"ack": seq}, None

    @staticmethod
    def _shape(doc, headers):
        if not isinstance(doc, dict) or set(doc) != BODY_KEYS:
            return "body keys %s" % (sorted(doc) if isinstance(doc, dict) else type(doc))
        if not isinstance(doc["agent_id"], str) or len(doc["agent_id"]) != 36:
            return "agent_id %r" % doc["agent_id"]
        if headers.get("X-Easgate-Agent") != doc["agent_id"]:
            return "X-Easgate-Agent %r is not agent_id" % headers.get("X-Easgate-Agent")
        if not isinstance(doc["seq"], int) or doc["seq"] < 1:
            return "seq %r" % doc["seq"]
        if headers.get("X-Easgate-Seq") != str(doc["seq"]):
            return "X-Easgate-Seq %r is not seq" % headers.get("X-Easgate-Seq")
        if not isinstance(doc["sent_at"], str) or not doc["sent_at"].endswith("Z"):
            return "sent_at %r" % doc["sent_at"]
        if not isinstance(doc["records"], list):
            return "records is not a list"
        for r in doc["records"]:
            if not isinstance(r, dict) or set(r) != RECORD_KEYS:
                return "record keys %s" % (sorted(r) if isinstance(r, dict) else type(r))
            if not isinstance(r["n"], int) or not isinstance(r["kind"], str) or \
                    not isinstance(r["at"], str):
                return "record %r" % r
        return None


if __name__ == "__main__":
    rx = ConsoleReceiver(sys.argv[1] if len(sys.argv) > 1 else "x" * 32)
    print(rx.url, flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            batches = rx.batches()
            for b in batches[seen:]:
                print("batch seq %d: %d record(s)" % (b[1], b[2]), flush=True)
            if len(batches) != seen:
                counts = {}
                for r in rx.records():
                    counts[r["kind"]] = counts.get(r["kind"], 0) + 1
                print("  received so far: %s; sequence errors: %s" % (
                    ", ".join("%s %d" % kv for kv in sorted(counts.items())) or "nothing",
                    rx.errors or "none"), flush=True)
                seen = len(batches)
    except KeyboardInterrupt:
        rx.close()
