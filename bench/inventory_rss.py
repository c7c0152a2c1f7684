#!/usr/bin/env python3
"""Inventory memory benchmark (issue 6): the agent's peak resident memory while it runs a full
inventory sync of a large org, and the sync's wall time.

The mock Exchange is seeded with --devices partnerships over --mailboxes mailboxes (with seeded
allow/block lists); the agent (plain HTTP on loopback, RelWithDebInfo build) is pointed at it with
PUT /api/v1/config and asked for a full sync with POST /api/v1/inventory/sync. The agent's
VmHWM (/proc/<pid>/status: the peak resident set since it started) is read before the sync and
after it, VmRSS is sampled during it, and the sync's own duration is taken from GET
/api/v1/status. A second full sync of the unchanged org (every device compared, nothing emitted
but sync.completed) is measured the same way. The agent uploads to the reference console
receiver (tests/integration/console_receiver.py, HMAC-signed batches): for each sync the bytes
and records the console received until the outbox is empty are reported (the first sync: one
device.added per device; the unchanged one: only the sync summary). With --no-upload the outbox
keeps the deltas instead.

Usage: bench/inventory_rss.py [--build DIR] [--devices N] [--mailboxes M] [--json FILE]
                              [--no-upload]
(DIR defaults to $EG_BENCH_BUILD, else <repo>/build; it must hold easgate and
easgate-mock-exchange). Prints one line per measurement; --json also writes them.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness as H  # noqa: E402
from console_receiver import ConsoleReceiver  # noqa: E402

HMAC_KEY = "bench-inventory-upload-key-0123456789abcdef"


def proc_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("%s not in /proc/%d/status" % (field, pid))


def status(agent):
    st, body, raw, _ = agent.request("GET", "/api/v1/status")
    if st != 200:
        raise RuntimeError("GET /api/v1/status -> %d %r" % (st, raw))
    return body["inventory"]


def full_sync(agent, timeout):
    """Run one full sync; (summary from the status, max VmRSS sampled in kB, wall s)."""
    pid = agent.proc.pid
    peak = [proc_kb(pid, "VmRSS")]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], proc_kb(pid, "VmRSS"))
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.time()
    st, body, raw, _ = agent.request("POST", "/api/v1/inventory/sync", {"mode": "full"})
    if st != 202:
        raise RuntimeError("POST /api/v1/inventory/sync -> %d %r" % (st, raw))
    sid = body["sync"]["id"]
    deadline = t0 + timeout
    while time.time() < deadline:
        s = status(agent)
        last = s.get("last") or {}
        if last.get("id", 0) >= sid and not s["running"] and not s["queued"]:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("sync %d did not finish in %ss" % (sid, timeout))
    wall = time.time() - t0
    stop.set()
    t.join()
    if not last["ok"]:
        raise RuntimeError("the sync failed: %s" % last)
    return last, peak[0], wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("EG_BENCH_BUILD",
                                                      os.path.join(ROOT, "build")))
    ap.add_argument("--devices", type=int, default=200000)
    ap.add_argument("--mailboxes", type=int, default=50000)
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--no-upload", action="store_true", help="no console: the outbox keeps all")
    a = ap.parse_args()
    H.set_binaries(easgate=os.path.join(a.build, "easgate"),
                   mock=os.path.join(a.build, "easgate-mock-exchange"))
    work = tempfile.mkdtemp(prefix="eg-bench-inventory-", dir=a.build)
    mock = agent = rx = None
    try:
        mock = H.Mock(os.path.join(work, "mock"), profile="2016", mailboxes=a.mailboxes,
                      devices=a.devices, seed=9, extra=["--seed-lists", "--log-level", "warn"])
        agent = H.Agent(os.path.join(work, "agent"), ["--log-level", "warn", "--api-rate", "0"])
        doc = {"target": {"kind": "onprem", "servers": [{"url": mock.url}],
                          "allow_http_basic": True, "username": H.USER, "password": H.PASSWORD,
                          "version": "2016", "max_concurrency": 2}}
        if not a.no_upload:
            rx = ConsoleReceiver(HMAC_KEY)
            doc["upload"] = {"url": rx.url, "hmac_key": HMAC_KEY}
        st, _, raw, _ = agent.request("PUT", "/api/v1/config", doc)
        if st != 200:
            raise RuntimeError("PUT /api/v1/config -> %d %r" % (st, raw))
        pid = agent.proc.pid
        results = {"devices": a.devices, "mailboxes": a.mailboxes,
                   "hwm_before_kb": proc_kb(pid, "VmHWM")}
        for name in ("initial", "unchanged"):
            bytes0 = rx.bytes_received if rx else 0
            recs0 = len(rx.records()) if rx else 0
            last, rss_peak, wall = full_sync(agent, a.timeout)
            up = {}
            if rx:
                t_end = time.time()
                deadline = t_end + a.timeout
                while time.time() < deadline:
                    st, body, _, _ = agent.request("GET", "/api/v1/status")
                    if body["upload"]["records"] == 0:
                        break
                    time.sleep(0.2)
                recs = rx.records()[recs0:]
                kinds = {}
                for rec in recs:
                    kinds[rec["kind"]] = kinds.get(rec["kind"], 0) + 1
                up = {"uploaded_bytes": rx.bytes_received - bytes0,
                      "uploaded_records": len(recs), "uploaded_kinds": kinds,
                      "upload_drained_after_sync_s": round(time.time() - t_end, 2)}
            if last["devices"] != a.devices:
                raise RuntimeError("the sync saw %d devices, not %d" % (last["devices"],
                                                                        a.devices))
            r = {"wall_s": round(wall, 2), "sync_s": last["duration_ms"] / 1000.0,
                 "added": last["added"], "unchanged": last["unchanged"],
                 "rss_peak_kb": rss_peak, "hwm_after_kb": proc_kb(pid, "VmHWM")}
            r.update(up)
            results[name] = r
            print("%-9s full sync of %d devices: %.1f s (sync %.1f s), added %d, unchanged %d, "
                  "peak RSS %.1f MiB, VmHWM %.1f MiB (before the first sync %.1f MiB)" % (
                      name, a.devices, r["wall_s"], r["sync_s"], r["added"], r["unchanged"],
                      rss_peak / 1024.0, r["hwm_after_kb"] / 1024.0,
                      results["hwm_before_kb"] / 1024.0), flush=True)
            if up:
                print("%-9s uploaded %d bytes in %d records %s" % (
                    name, up["uploaded_bytes"], up["uploaded_records"], up["uploaded_kinds"]),
                    flush=True)
        db = os.path.join(agent.state_dir, "inventory.db")
        results["inventory_db_bytes"] = os.path.getsize(db)
        print("inventory.db: %.1f MiB" % (results["inventory_db_bytes"] / 1048576.0))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
    finally:
        if agent:
            agent.stop(timeout=120)
        if mock:
            mock.stop()
        if rx:
            rx.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
