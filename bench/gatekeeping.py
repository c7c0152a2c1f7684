#!/usr/bin/env python3
"""Gatekeeping throughput (issue 9): N allow/block commands over M mailboxes against the mock
Exchange with latency L on every cmdlet and a concurrency ceiling C; wall time from the first POST
to the last command final, against the floors M*L/C (one round trip per mailbox) and M*2L/C (the
Get-CASMailbox read plus the Set-CASMailbox write each coalesced mailbox needs), and against a
naive run of the same agent (--no-coalesce, one worker, max_concurrency 1) on a smaller N,
extrapolated linearly (a naive command costs two round trips whatever N and M are).

usage: gatekeeping.py [--n N] [--m M] [--latency-ms L] [--concurrency C] [--naive-n K]
                      [--sweep N:M,N:M,...] [--name NAME]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as B  # noqa: E402

H = B.H


def commands(n, m, prefix):
    """Round-robin over the mailboxes (each mailbox's commands are spread over the whole posting
    window: the hard case for coalescing), allow and block alternating."""
    out = []
    for k in range(n):
        out.append({"id": "%s-%06d" % (prefix, k),
                    "type": "device.allow" if k % 2 == 0 else "device.block",
                    "mailbox": B.mailbox(k % m), "device_id": "bd%06d" % k})
    return out


def post_all(port, cmds, batch, threads):
    """Post the commands in batches from `threads` keep-alive connections, in order (batch i goes
    to thread i % threads). Returns (t_first_post, t_last_accept, statuses)."""
    batches = [cmds[i:i + batch] for i in range(0, len(cmds), batch)]
    t_first = [None]
    t_last = [0.0]
    errors = []
    lock = threading.Lock()
    nxt = [0]

    def run():
        c = B.Client(port)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
                if t_first[0] is None:
                    t_first[0] = time.time()
            if i >= len(batches):
                break
            st, raw = c.request("POST", "/api/v1/commands", {"commands": batches[i]})
            if st not in (200, 202):
                errors.append((st, raw[:300]))
            with lock:
                t_last[0] = max(t_last[0], time.time())
        c.close()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("POST errors: %r" % errors[:3])
    return t_first[0], t_last[0]


class ConcurrencySampler(threading.Thread):
    """Samples the pipelines open in the mock's shells (GET /control/shells) every 50 ms."""

    def __init__(self, mock):
        super().__init__(daemon=True)
        self.mock = mock
        self.stop_ev = threading.Event()
        self.max_pipelines = 0
        self.max_shells = 0
        self.samples = []

    def run(self):
        while not self.stop_ev.is_set():
            try:
                v = self.mock.get("/control/shells")
            except Exception:
                v = None
            if v is not None:
                shells = v["shells"] if isinstance(v, dict) else v
                p = 0
                for s in shells:
                    pl = s.get("pipelines", [])
                    p += len(pl) if isinstance(pl, list) else int(pl)
                self.samples.append(p)
                self.max_pipelines = max(self.max_pipelines, p)
                self.max_shells = max(self.max_shells, len(shells))
            self.stop_ev.wait(0.05)


def run_once(n, m, latency_ms, concurrency, coalesce, workers, label, batch=1000, threads=4,
             sample=True):
    wd = B.workdir("gk-" + label)
    mock = H.Mock(os.path.join(wd, "mock"), profile="2016", mailboxes=m + 1, devices=m + 1,
                  seed=9)
    agent = None
    try:
        mock.faults({"latency": {"cmdlet": None, "ms": latency_ms},
                     "max_shells_per_user": concurrency})
        agent = B.start_agent(wd, workers=workers, coalesce=coalesce)
        B.put_target(agent, B.onprem_target(mock, concurrency))
        client = B.Client(agent.port)
        # Warm-up outside the measured set (mailbox m+1): opens the runspace pool, so shell
        # creation is not counted (it is a one-off per agent start).
        warm = {"id": "warm-%s" % label, "type": "device.allow", "mailbox": B.mailbox(m),
                "device_id": "warmup"}
        st, _ = client.json("POST", "/api/v1/commands", warm)
        B.wait_drained(client, 1, 120)
        mock.calls_reset()
        cmds = commands(n, m, label)
        sampler = ConcurrencySampler(mock) if sample else None
        if sampler:
            sampler.start()
        perf = None
        if os.environ.get("EG_BENCH_PERF") and label == "main":
            # cpu-clock samples of this agent (and the mock) during the measured window
            perf = [subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
                                      "-p", str(pr.proc.pid), "-o",
                                      os.path.join(os.environ.get("EG_BENCH_RESULTS", os.path.join(B.HERE, "results")), "perf-%s.data" % who),
                                      "--", "sleep", "8"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for who, pr in (("agent", agent), ("mock", mock))]
        load_before = os.getloadavg()[0]
        t_first, t_accept = post_all(agent.port, cmds, batch, threads)
        t_poll, q = B.wait_drained(client, n + 1, timeout=max(600, n * 2 * latency_ms / 1000 * 2))
        if sampler:
            sampler.stop_ev.set()
            sampler.join()
        done = [c for c in B.list_all(client, "succeeded") if not c["id"].startswith("warm-")]
        failed = B.list_all(client, "failed")
        last_final = max(B.ts_ms(c["finished_at"]) for c in done + failed) / 1000.0
        calls = mock.calls()
        gets = sum(1 for c in calls if c["cmdlet"] == "Get-CASMailbox")
        sets = sum(1 for c in calls if c["cmdlet"] == "Set-CASMailbox")
        client.close()
        for p in perf or ():
            p.wait()
        wall = last_final - t_first
        res = {"n": n, "m": m, "latency_ms": latency_ms, "concurrency": concurrency,
               "coalesce": coalesce, "workers": workers, "batch": batch, "post_threads": threads,
               "wall_s": round(wall, 3), "accept_s": round(t_accept - t_first, 3),
               "poll_detect_s": round(t_poll - t_first, 3),
               "succeeded": len(done), "failed": len(failed),
               "get_casmailbox_calls": gets, "set_casmailbox_calls": sets,
               "cmdlet_calls": len(calls),
               "commands_per_set": round(n / sets, 2) if sets else None,
               "loadavg_1m_before": round(load_before, 2),
               "loadavg_1m_after": round(os.getloadavg()[0], 2)}
        if sampler:
            res["mock_max_pipelines_seen"] = sampler.max_pipelines
            res["mock_max_shells_seen"] = sampler.max_shells
            busy = [s for s in sampler.samples if s > 0]
            res["mock_mean_pipelines_busy"] = round(sum(busy) / len(busy), 2) if busy else 0
        if failed:
            res["failed_example"] = failed[0].get("error")
        return res
    finally:
        if agent:
            agent.stop()
        mock.stop()


def floors(n, m, latency_ms, concurrency):
    L = latency_ms / 1000.0
    return {"floor_1L_s": round(m * L / concurrency, 3),
            "floor_2L_s": round(m * 2 * L / concurrency, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--m", type=int, default=5000)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=18)
    ap.add_argument("--naive-n", type=int, default=500)
    ap.add_argument("--sweep", default="", help="extra N:M sizes for the growth table")
    ap.add_argument("--name", default="gatekeeping")
    a = ap.parse_args()
    B.set_binaries()
    L, C = a.latency_ms, a.concurrency
    workers = max(C, 18)

    main_run = run_once(a.n, a.m, L, C, True, workers, "main")
    main_run.update(floors(a.n, a.m, L, C))
    main_run["ratio_to_floor_1L"] = round(main_run["wall_s"] / main_run["floor_1L_s"], 3)
    main_run["ratio_to_floor_2L"] = round(main_run["wall_s"] / main_run["floor_2L_s"], 3)
    print("coalesced  N=%d M=%d: %.2f s (floor 1L %.2f s -> %.2fx, 2L %.2f s -> %.2fx), "
          "%d Set-CASMailbox, max pipelines seen %s" % (
              a.n, a.m, main_run["wall_s"], main_run["floor_1L_s"], main_run["ratio_to_floor_1L"],
              main_run["floor_2L_s"], main_run["ratio_to_floor_2L"],
              main_run["set_casmailbox_calls"], main_run.get("mock_max_pipelines_seen")),
          flush=True)

    naive, speedup = None, None
    kn = min(a.naive_n, a.n)
    if kn > 0:  # --naive-n 0 skips the naive baseline (not for published numbers)
        naive = run_once(kn, min(a.m, kn), L, 1, False, 1, "naive", batch=min(1000, kn),
                         threads=1)
        naive["extrapolated_to_n"] = a.n
        naive["extrapolated_wall_s"] = round(naive["wall_s"] * a.n / kn, 1)
        naive["per_command_ms"] = round(naive["wall_s"] * 1000 / kn, 2)
        speedup = round(naive["extrapolated_wall_s"] / main_run["wall_s"], 1)
        print("naive      N=%d measured %.2f s (%.1f ms/command) -> N=%d extrapolated %.0f s; "
              "coalesced run is %.0fx faster" % (kn, naive["wall_s"], naive["per_command_ms"],
                                                 a.n, naive["extrapolated_wall_s"], speedup),
              flush=True)

    growth = []
    for spec in [s for s in a.sweep.split(",") if s]:
        n, m = (int(x) for x in spec.split(":"))
        r = run_once(n, m, L, C, True, workers, "g%d-%d" % (n, m), sample=False)
        r.update(floors(n, m, L, C))
        r["ratio_to_floor_2L"] = round(r["wall_s"] / r["floor_2L_s"], 3)
        r["ratio_to_floor_1L"] = round(r["wall_s"] / r["floor_1L_s"], 3)
        growth.append(r)
        print("growth     N=%6d M=%5d: %.2f s (2L floor %.2f s -> %.2fx), %d Set-CASMailbox, "
              "%.2f commands/Set" % (n, m, r["wall_s"], r["floor_2L_s"], r["ratio_to_floor_2L"],
                                     r["set_casmailbox_calls"], r["commands_per_set"]),
              flush=True)

    out = {"main": main_run, "naive": naive, "speedup_vs_naive": speedup,
           "growth": growth, "target_ratio": 1.25}
    print("wrote", B.write_result(a.name, out))


if __name__ == "__main__":
    main()
