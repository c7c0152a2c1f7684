"""Shared pieces of the easgate benchmarks (issue 9). Python standard library only.

- start the mock Exchange and the agent with tests/integration/harness.py (the same code the
  integration tests use), the agent on loopback with --plain-http --no-auth and --api-rate 0 so
  neither TLS nor the client rate limit is part of what is measured;
- point the agent at the mock with PUT /api/v1/config (as tests/integration/test_operations.py's
  configure_agent/target_document do);
- a keep-alive HTTP client per thread, status polling, paging through the command listing;
- writing bench/results/<name>.json.
"""
import datetime
import http.client
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness as H  # noqa: E402

FINAL = ("succeeded", "failed", "cancelled")
DOMAIN = "contoso.example"


def build_dir():
    return os.environ.get("EG_BENCH_BUILD", os.path.join(ROOT, "build-bench"))


def set_binaries():
    b = build_dir()
    H.set_binaries(easgate=os.path.join(b, "easgate"), easgate_ps=os.path.join(b, "easgate-ps"),
                   mock=os.path.join(b, "easgate-mock-exchange"),
                   pki_script=os.path.join(ROOT, "tests", "fixtures", "gen-test-pki.sh"))


def workdir(name):
    # Under the build directory (ext4 on the benchmark machine), not a tmpfs: fsync must cost
    # what it costs on a disk for the durability numbers to mean anything.
    base = os.path.join(build_dir(), "bench-work")
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=name + "-", dir=base)


def mailbox(i):
    return "user%04d@%s" % (i + 1, DOMAIN)


def start_agent(wd, workers, coalesce=True, extra=()):
    args = ["--workers", str(workers), "--api-rate", "0", "--max-connections", "1024",
            "--max-connections-per-client", "1024", "--log-level", "warn"]
    args += ["--coalesce"] if coalesce else ["--no-coalesce"]
    return H.Agent(os.path.join(wd, "agent"), args + list(extra), pki=None)


def put_target(agent, doc):
    st, body, raw, _ = agent.request("PUT", "/api/v1/config", doc)
    if st != 200:
        raise RuntimeError("PUT /api/v1/config -> %d: %r" % (st, raw))
    return body


def onprem_target(mock, concurrency):
    return {"target": {"kind": "onprem", "servers": [{"url": mock.url}], "auth": "basic",
                       "username": H.USER, "password": H.PASSWORD, "allow_http_basic": True,
                       "version": "2016", "max_concurrency": concurrency,
                       "dead_threshold": 100, "failure_window_ms": 1000,
                       "commands_per_shell": 100000}}


class Client:
    """One keep-alive HTTP/1.1 connection to the agent (plain HTTP, no authentication)."""

    def __init__(self, port, timeout=60):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None):
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, raw
            except (http.client.HTTPException, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None):
        st, raw = self.request(method, path, body)
        return st, (json.loads(raw) if raw else None)

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def queue_counts(client):
    st, body = client.json("GET", "/api/v1/status")
    if st != 200:
        raise RuntimeError("status %d" % st)
    return body["queue"]


def wait_drained(client, total, timeout, interval=0.05):
    """Poll /api/v1/status until the final states add up to total; returns the time.time()."""
    deadline = time.time() + timeout
    while True:
        q = queue_counts(client)
        done = q["succeeded"] + q["failed"] + q["cancelled"]
        if done >= total and q["queued"] == 0 and q["running"] == 0 and q["retrying"] == 0:
            return time.time(), q
        if time.time() > deadline:
            raise RuntimeError("not drained after %ss: %r" % (timeout, q))
        time.sleep(interval)


def ts_ms(ts):
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000.0


def list_all(client, state):
    """Every command in one state, by paging GET /api/v1/commands (1000 per page)."""
    out, after = [], None
    while True:
        path = "/api/v1/commands?state=%s&limit=1000" % state
        if after:
            path += "&after=" + after
        st, body = client.json("GET", path)
        if st != 200:
            raise RuntimeError("listing %d %r" % (st, body))
        out.extend(body["commands"])
        after = body.get("next")
        if not after:
            return out


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def write_result(name, data):
    d = os.environ.get("EG_BENCH_RESULTS", os.path.join(HERE, "results"))
    os.makedirs(d, exist_ok=True)
    data = dict(data)
    data.setdefault("benchmark", name)
    data.setdefault("at", datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"))
    path = os.path.join(d, name + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path
