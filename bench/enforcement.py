#!/usr/bin/env python3
"""Enforcement latency (issue 9): with latency L (100 ms) on every cmdlet of the mock Exchange and
a background load of R commands/s (100) for D seconds (30), sampled console commands (device.block
on mailboxes the background does not touch) are timed from the POST being sent to the device ID
being on the mailbox's ActiveSyncBlockedDeviceIDs in the mock's org (polled through the control
API every 5 ms). Reports p50/p99/max over the samples.

usage: enforcement.py [--latency-ms L] [--rate R] [--duration D] [--samples-per-s S]
                      [--concurrency C] [--name NAME]
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as B  # noqa: E402

H = B.H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--samples-per-s", type=float, default=4)
    ap.add_argument("--concurrency", type=int, default=18)
    ap.add_argument("--mailboxes", type=int, default=200,
                    help="mailboxes the background load is spread over")
    ap.add_argument("--name", default="enforcement")
    a = ap.parse_args()
    B.set_binaries()
    wd = B.workdir("enf")
    n_samples = int(a.duration * a.samples_per_s)
    m_bg = a.mailboxes
    mock = H.Mock(os.path.join(wd, "mock"), profile="2016", mailboxes=m_bg + n_samples + 1,
                  devices=m_bg, seed=5)
    agent = None
    try:
        mock.faults({"latency": {"cmdlet": None, "ms": a.latency_ms},
                     "max_shells_per_user": a.concurrency})
        agent = B.start_agent(wd, workers=max(a.concurrency, 18))
        B.put_target(agent, B.onprem_target(mock, a.concurrency))
        c = B.Client(agent.port)
        c.json("POST", "/api/v1/commands", {"id": "warm", "type": "device.allow",
                                            "mailbox": B.mailbox(m_bg + n_samples),
                                            "device_id": "warm"})
        B.wait_drained(c, 1, 60)
        stop = threading.Event()
        bg_sent = [0]

        def background():
            # R commands/s as 10 POSTs of R/10 per second, paced on a fixed schedule.
            bc = B.Client(agent.port)
            per = max(1, a.rate // 10)
            t0 = time.time()
            k = 0
            while not stop.is_set():
                due = t0 + k * 0.1
                d = due - time.time()
                if d > 0:
                    time.sleep(d)
                batch = [{"id": "bg-%07d" % (k * per + j), "type": "device.allow",
                          "mailbox": B.mailbox((k * per + j) % m_bg),
                          "device_id": "bg%07d" % (k * per + j)} for j in range(per)]
                st, raw = bc.request("POST", "/api/v1/commands", {"commands": batch})
                if st == 202:
                    bg_sent[0] += per
                k += 1
            bc.close()

        bg = threading.Thread(target=background, daemon=True)
        t_start = time.time()
        bg.start()
        time.sleep(2)  # let the background reach its steady state
        sc = B.Client(agent.port)
        lat = []
        t_sched = time.time()
        for i in range(n_samples):
            due = t_sched + i / a.samples_per_s
            d = due - time.time()
            if d > 0:
                time.sleep(d)
            mbx = B.mailbox(m_bg + i)
            dev = "enf%05d" % i
            t0 = time.perf_counter()
            st, _ = sc.request("POST", "/api/v1/commands", {"id": "enf-%05d" % i,
                                                             "type": "device.block",
                                                             "mailbox": mbx, "device_id": dev})
            if st != 202:
                raise RuntimeError("sample POST %d" % st)
            while True:
                state = mock.get("/control/state/mailbox/" + mbx)
                blocked = state.get("blocked") or []
                if dev in blocked:
                    break
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("sample %d not enforced after 30 s: %r" % (i, state))
                time.sleep(0.005)
            lat.append(time.perf_counter() - t0)
        stop.set()
        bg.join()
        bg_wall = time.time() - t_start
        _, q = B.wait_drained(c, 1 + bg_sent[0] + n_samples, 600)
    finally:
        if agent:
            agent.stop()
        mock.stop()
    res = {"latency_ms": a.latency_ms, "background_rate": a.rate,
           "background_mailboxes": m_bg,
           "background_sent": bg_sent[0], "background_wall_s": round(bg_wall, 2),
           "background_rate_achieved": round(bg_sent[0] / bg_wall, 1),
           "concurrency": a.concurrency, "samples": len(lat),
           "p50_ms": round(B.percentile(lat, 50) * 1000, 1),
           "p99_ms": round(B.percentile(lat, 99) * 1000, 1),
           "max_ms": round(max(lat) * 1000, 1), "min_ms": round(min(lat) * 1000, 1),
           "floor_ms": 2 * a.latency_ms, "target_p99_ms": 1000, "queue_after": q,
           "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    print("enforcement L=%d ms, background %.0f/s: %d samples  p50 %.0f ms  p99 %.0f ms  "
          "max %.0f ms (floor 2L = %d ms)" % (a.latency_ms, res["background_rate_achieved"],
                                              len(lat), res["p50_ms"], res["p99_ms"],
                                              res["max_ms"], 2 * a.latency_ms))
    print("wrote", B.write_result(a.name, res))


if __name__ == "__main__":
    main()
