#!/usr/bin/env python3
"""Crash safety: the agent SIGKILLed at random points under a steady load of console commands.

One mock Exchange (2016 profile), one agent pointed at it with PUT /api/v1/config (on-prem target
and an upload URL with an HMAC key: the reference console receiver). A poster thread sends
console commands one after another (device.allow/block/unlist, mailbox.set_devices, mailbox.set,
device.wipe) over a few mailboxes; the main thread SIGKILLs the agent after a random delay and
restarts it on the same state directory, EG_CRASH_KILLS times (25 by default; the seed is printed
and can be given as EG_CRASH_SEED). A post whose answer was lost in a crash is sent again with the
same id after the restart (idempotency: 200 if it had been stored, else 202), before anything
else, so the acceptance order is the order of posting. At the end:

- every accepted command is final and succeeded (nothing is lost in the journal);
- each mailbox's allowed/blocked lists and ActiveSync setting in the mock equal what its accepted
  commands give applied in acceptance order (docs/api.md "Ordering and coalescing": per mailbox
  in acceptance order, a later command for a device wins, set_devices replaces);
- every wipe request reached Exchange, is pending once, and Clear-MobileDevice completed for it
  at most as often as the command was attempted (a re-run after a crash may repeat the request,
  which Exchange keeps as one pending wipe; never more than one per attempt);
- the console got exactly one command.final record per accepted command, its batches came as
  1, 2, 3, ... without a gap and record numbers grew strictly (the receiver saw no violation).

Usage: test_crash.py EASGATE MOCK   (ctest passes both). Standard library only.
"""
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

import harness as H
from console_receiver import ConsoleReceiver

HMAC_KEY = "crash-upload-key-0123456789abcdef-000001"
KILLS = int(os.environ.get("EG_CRASH_KILLS", "25"))
SEED = int(os.environ.get("EG_CRASH_SEED", str(int(time.time() * 1000) % 1000000)))
DOMAIN = "crash.example"
N_MAILBOXES = 4
LIST_DEVICES = ["Dev%02d" % i for i in range(8)]
WIPE_DEVICES_PER_MAILBOX = 40
# An interrupted attempt counts: generous so that no command runs out of attempts by crashes.
AGENT_ARGS = ["--max-attempts", "60", "--retry-base-ms", "50", "--retry-max-ms", "300",
              "--upload-retry-max-ms", "1000", "--upload-heartbeat-s", "3600", "--workers", "4", "--api-rate", "0"]


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="eg-crash-")
        self.mock = H.Mock(os.path.join(self.tmp, "mock"), profile="2016", mailboxes=4,
                           devices=4, seed=5)
        self.rx = ConsoleReceiver(HMAC_KEY)
        self.agent = None
        self.lock = threading.Lock()
        self.up = threading.Event()

    def tearDown(self):
        rc = self.agent.stop() if self.agent else 0
        self.rx.close()
        mrc = self.mock.stop()
        self.assertEqual(rc, 0, self.agent.read_log()[-3000:] if self.agent else "")
        self.assertEqual(mrc, 0)
        # The known secrets appear in no log or state file (the sealed store aside).
        H.assert_no_secrets(self.tmp, extra=[HMAC_KEY])
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- agent lifecycle ---------------------------------------------------------------------
    def start_agent(self):
        a = H.Agent(os.path.join(self.tmp, "agent"), args=AGENT_ARGS)
        with self.lock:
            self.agent = a
        self.up.set()
        return a

    def kill_agent(self):
        self.up.clear()
        with self.lock:
            a = self.agent
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(30)
        a._logf.close()

    def current(self):
        self.up.wait(60)
        with self.lock:
            return self.agent

    # ---- the load ----------------------------------------------------------------------------
    def make_command(self, rng, n):
        mbx = self.mailboxes[rng.randrange(len(self.mailboxes))]
        cid = "crash-%05d" % n
        r = rng.random()
        if r < 0.08 and self.wipe_left[mbx]:
            dev = self.wipe_left[mbx].pop()
            return {"id": cid, "type": "device.wipe", "mailbox": mbx, "device_id": dev,
                    "account_only": True}
        if r < 0.16:
            devs = rng.sample(LIST_DEVICES, rng.randrange(0, 5))
            k = rng.randrange(len(devs) + 1)
            return {"id": cid, "type": "mailbox.set_devices", "mailbox": mbx,
                    "allowed": devs[:k], "blocked": devs[k:]}
        if r < 0.22:
            return {"id": cid, "type": "mailbox.set", "mailbox": mbx,
                    "activesync_enabled": rng.random() < 0.5}
        kind = rng.choice(["device.allow", "device.block", "device.unlist"])
        return {"id": cid, "type": kind, "mailbox": mbx, "device_id": rng.choice(LIST_DEVICES)}

    def poster(self, rng, stop):
        n = 0
        while not stop.is_set():
            cmd = self.make_command(rng, n)
            n += 1
            while True:  # until this command's fate is known
                a = self.current()
                try:
                    st, body = a.post(cmd)
                except (OSError, ValueError) as e:  # killed mid-request, or down
                    self.lost_answers += 1
                    time.sleep(0.02)
                    continue
                if st in (200, 202):
                    self.accepted.append(cmd)
                    break
                if st in (429, 503):
                    time.sleep(0.05)
                    continue
                self.poster_errors.append((cmd, st, body))
                return
            time.sleep(0.03)

    # ---- the model ---------------------------------------------------------------------------
    def expected(self):
        """{mailbox: (allowed, blocked, activesync_enabled)} from the accepted commands."""
        out = {}
        for mbx in self.mailboxes:
            allowed, blocked, enabled = set(), set(), True
            for c in self.accepted:
                if c["mailbox"] != mbx:
                    continue
                t = c["type"]
                if t == "device.allow":
                    allowed.add(c["device_id"])
                    blocked.discard(c["device_id"])
                elif t == "device.block":
                    blocked.add(c["device_id"])
                    allowed.discard(c["device_id"])
                elif t == "device.unlist":
                    allowed.discard(c["device_id"])
                    blocked.discard(c["device_id"])
                elif t == "mailbox.set_devices":
                    allowed, blocked = set(c["allowed"]), set(c["blocked"])
                elif t == "mailbox.set":
                    enabled = c["activesync_enabled"]
            out[mbx] = (sorted(allowed), sorted(blocked), enabled)
        return out

    def test_sigkill_under_load(self):
        print("\ncrash test: seed %d, %d kills (EG_CRASH_SEED, EG_CRASH_KILLS)" % (SEED, KILLS),
              file=sys.stderr, flush=True)
        rng = random.Random(SEED)
        kill_rng = random.Random(SEED + 1)
        self.mailboxes = []
        self.wipe_left = {}
        for i in range(N_MAILBOXES):
            alias = "crash%d" % i
            smtp = "%s@%s" % (alias, DOMAIN)
            self.mock.engine("add_mailbox", alias=alias, smtp=smtp)
            st = self.mock.mailbox(smtp)
            self.assertEqual((st["allowed"], st["blocked"]), ([], []), st)
            self.mailboxes.append(smtp)
            self.wipe_left[smtp] = []
            for k in range(WIPE_DEVICES_PER_MAILBOX):
                dev = "Wipe%d%03d" % (i, k)
                self.assertTrue(self.mock.sync(smtp, dev, eas_version="16.1",
                                               device_type="iPhone")["created"])
                self.wipe_left[smtp].append(dev)
            self.wipe_left[smtp].reverse()
        self.mock.calls_reset()

        a = self.start_agent()
        doc = {"target": {"kind": "onprem", "servers": [{"url": self.mock.url}], "auth": "basic",
                          "username": H.USER, "password": H.PASSWORD, "allow_http_basic": True,
                          "max_concurrency": 4, "dead_threshold": 100,
                          "failure_window_ms": 1000},
               "upload": {"url": self.rx.url, "hmac_key": HMAC_KEY}}
        st, _, raw, _ = a.request("PUT", "/api/v1/config", doc)
        self.assertEqual(st, 200, raw)

        self.accepted, self.poster_errors, self.lost_answers, self.wipe_repeats = [], [], 0, 0
        stop = threading.Event()
        th = threading.Thread(target=self.poster, args=(rng, stop), daemon=True)
        th.start()
        try:
            for _ in range(KILLS):
                time.sleep(kill_rng.uniform(0.05, 0.9))
                self.kill_agent()
                self.start_agent()
            time.sleep(0.5)
        finally:
            stop.set()
            self.up.set()
            th.join(60)
        self.assertFalse(th.is_alive())
        self.assertEqual(self.poster_errors, [])
        a = self.current()
        ids = [c["id"] for c in self.accepted]
        self.assertEqual(len(ids), len(set(ids)))
        print("crash test: %d commands accepted, %d answers lost in a crash" % (
            len(ids), self.lost_answers), file=sys.stderr, flush=True)
        self.assertGreater(len(ids), KILLS)

        # 1. every accepted command reached its final state, and succeeded
        final = a.wait_final(ids, timeout=120)
        bad = {i: r for i, r in final.items() if r["state"] != "succeeded"}
        self.assertEqual(bad, {})

        # 2. the mock's final state is what the commands require, in acceptance order
        want = self.expected()
        for mbx in self.mailboxes:
            st = self.mock.mailbox(mbx)
            got = (sorted(st["allowed"]), sorted(st["blocked"]), st["activesync_enabled"])
            self.assertEqual(got, want[mbx], mbx)

        # 3. wipes: each request is one pending wipe, sent at most once per attempt
        calls = self.mock.calls()
        wiped = set()
        for c in self.accepted:
            if c["type"] != "device.wipe":
                continue
            dev = self.mock.device(c["mailbox"], c["device_id"])
            wiped.add(dev["identity"])
            self.assertEqual(dev["wipe"]["status"], "DeviceWipePending", (c, dev))
            self.assertTrue(dev["wipe"]["account_only"], dev)
            done = [x for x in calls if x["cmdlet"] == "Clear-MobileDevice"
                    and x["status"] == "Completed"
                    and x["parameters"].get("Identity") == dev["identity"]]
            self.assertGreaterEqual(len(done), 1, c)
            self.assertLessEqual(len(done), final[c["id"]]["attempts"], (c, done))
            self.wipe_repeats += len(done) - 1
        unexpected = [x for x in calls if x["cmdlet"] == "Clear-MobileDevice"
                      and x["parameters"].get("Identity") not in wiped]
        self.assertEqual(unexpected, [])
        print("crash test: %d wipes, %d re-sent after a crash" % (len(wiped), self.wipe_repeats),
              file=sys.stderr, flush=True)

        # 4. the console: one command.final per command, batches 1, 2, 3, ... without a gap
        agent_id = a.request("GET", "/api/v1/status")[1]["upload"]["agent_id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            up = a.request("GET", "/api/v1/status")[1]["upload"]
            if up["records"] == 0 and up["state"] == "idle":
                break
            time.sleep(0.2)
        self.assertEqual(up["records"], 0, up)
        self.assertEqual(self.rx.errors, [])
        recs = self.rx.records(agent_id, "command.final")
        got = [r["payload"]["id"] for r in recs]
        dups = sorted({i for i in got if got.count(i) > 1})
        self.assertEqual(dups, [], "duplicate command.final records")
        missing = sorted(set(ids) - set(got))
        self.assertEqual(missing, [], "final commands the console never heard of")
        self.assertEqual(set(got), set(ids))
        for r in recs:
            self.assertEqual(r["payload"]["state"], "succeeded", r)
        ns = [r["n"] for r in self.rx.records(agent_id)]
        self.assertEqual(ns, sorted(set(ns)))
        seqs = [b[1] for b in self.rx.batches(agent_id)]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))

        # 5. the audit trail survived every kill
        r = H.run_audit_verify(a)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    H.set_binaries(easgate=sys.argv.pop(1), mock=sys.argv.pop(1))
    unittest.main(verbosity=2)
