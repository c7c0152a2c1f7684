#!/usr/bin/env python3
"""Ingest (issue 9): commands accepted per second and accept latency (POST sent -> 202 read),
single POSTs from K client threads and batches of 500 and 1000, durability on (the journal's
synchronous=FULL commit before every 202; the state directory is on the build directory's disk).

Only the accept path is measured: the agent runs the dry-run target (no Exchange in the loop)
with one worker and a simulated Exchange latency of 60 s, so the pool claims one batch and then
sleeps through the measurement instead of competing for the two cores.

The load client is Python: each client thread is one keep-alive connection. To keep the client
from being the bottleneck the client threads run in separate processes (fork), and the
accept rate is total accepted / wall time over all of them.

usage: ingest.py [--single N] [--threads K] [--procs P] [--batches N] [--name NAME]
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as B  # noqa: E402


def worker(port, prefix, n, batch, threads, q, start_at):
    """One process: `threads` threads, each posting n//threads requests of `batch` commands."""
    import threading
    lat = []
    lock = threading.Lock()
    errors = []

    def run(t):
        c = B.Client(port)
        mine = []
        count = n // threads
        # Pre-encode the bodies so JSON encoding is not timed.
        bodies = []
        for i in range(count):
            base = "%s-%d-%d" % (prefix, t, i)
            if batch == 1:
                body = {"id": base, "type": "device.block", "mailbox": B.mailbox(i % 5000),
                        "device_id": "in%d" % i}
            else:
                body = {"commands": [{"id": "%s-%d" % (base, j), "type": "device.block",
                                      "mailbox": B.mailbox((i * batch + j) % 5000),
                                      "device_id": "in%d" % j} for j in range(batch)]}
            bodies.append(json.dumps(body, separators=(",", ":")).encode())
        while time.time() < start_at:
            time.sleep(0.001)
        for body in bodies:
            t0 = time.perf_counter()
            st, raw = c.request("POST", "/api/v1/commands", body)
            mine.append(time.perf_counter() - t0)
            if st != 202:
                errors.append((st, raw[:200]))
        c.close()
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put((lat, time.time(), errors))


def measure(port, label, total_requests, batch, procs, threads_per_proc):
    q = mp.Queue()
    start_at = time.time() + 1.5  # every process has its bodies ready by then
    per_proc = total_requests // procs
    ps = [mp.Process(target=worker, args=(port, "%s-p%d" % (label, p), per_proc, batch,
                                          threads_per_proc, q, start_at))
          for p in range(procs)]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    lat = [x for r in results for x in r[0]]
    end = max(r[1] for r in results)
    errors = [e for r in results for e in r[2]]
    if errors:
        raise RuntimeError("%s: %d errors, e.g. %r" % (label, len(errors), errors[:2]))
    wall = end - start_at
    cmds = len(lat) * batch
    return {"mode": label, "batch": batch, "client_procs": procs,
            "client_threads": procs * threads_per_proc, "requests": len(lat), "commands": cmds,
            "wall_s": round(wall, 3), "commands_per_s": round(cmds / wall, 1),
            "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(B.percentile(lat, 50) * 1000, 2),
            "p99_ms": round(B.percentile(lat, 99) * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--single", type=int, default=20000, help="single-command POSTs")
    ap.add_argument("--procs", type=int, default=4, help="client processes")
    ap.add_argument("--threads", type=int, default=4, help="client threads per process")
    ap.add_argument("--batches", type=int, default=100, help="batch POSTs per batch size")
    ap.add_argument("--name", default="ingest")
    a = ap.parse_args()
    B.set_binaries()
    wd = B.workdir("ingest")
    agent = B.start_agent(wd, workers=1, extra=["--dryrun-latency-ms", "60000",
                                                "--drain-timeout-ms", "0"])
    runs = []
    try:
        B.put_target(agent, {"target": {"kind": "dryrun", "latency_ms": 60000,
                                        "max_concurrency": 1}})
        # warm-up (connections, SQLite page cache)
        runs_warm = measure(agent.port, "warm", 200, 1, 1, 2)
        del runs_warm
        for label, batch, total in (("single", 1, a.single), ("batch500", 500, a.batches),
                                    ("batch1000", 1000, a.batches)):
            procs = a.procs if batch == 1 else min(a.procs, 2)
            threads = a.threads if batch == 1 else 1
            r = measure(agent.port, label, total, batch, procs, threads)
            runs.append(r)
            print("%-10s %7d commands  %9.0f commands/s  p50 %6.2f ms  p99 %6.2f ms  "
                  "(%d client threads)" % (label, r["commands"], r["commands_per_s"],
                                           r["p50_ms"], r["p99_ms"], r["client_threads"]),
                  flush=True)
        st, status = B.Client(agent.port).json("GET", "/api/v1/status")
        queue = status["queue"]
    finally:
        agent.stop(timeout=60)
    out = {"runs": runs, "queue_after": queue, "durability": "synchronous=FULL (WAL)",
           "state_dir_fs": os.popen("df -T %s | tail -1" % wd).read().split()[1],
           "targets": {"single_per_s": 3000, "batched_per_s": 20000, "p99_ms": 10}}
    print("wrote", B.write_result(a.name, out))


if __name__ == "__main__":
    main()
