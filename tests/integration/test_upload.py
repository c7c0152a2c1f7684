#!/usr/bin/env python3
"""Upload to the console, end to end: the daemon (dry-run target) -> outbox -> uploader -> the
reference console receiver (console_receiver.py), which checks the HMAC signature, the body and
the sequence continuity of every batch.

- command.final records arrive for every command (succeeded, failed, cancelled), once each, in
  the order of their record numbers, with the API view of the command as payload;
- a console outage across many commands, an agent SIGKILL + restart during it and lost
  acknowledgements lose nothing: no gap, no duplicate recorded by the receiver;
- heartbeats (empty batches with their own sequence numbers) when idle;
- a wrong HMAC key: the receiver refuses, the agent keeps retrying and reports last_error; the
  right key (a PUT) delivers everything;
- no upload URL: records wait, status says "not configured"; the outbox warning (status and
  metric) once they pile up past 80 % of a small outbox_max_records;
- a console that lost state answers 409 {"expected": 1}: nothing is skipped, status shows the
  conflict and resync_needed; once the console adopts the agent's sequence, delivery goes on.

Usage: test_upload.py EASGATE   (ctest passes it). Standard library only.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

import harness as H
from console_receiver import ConsoleReceiver

KEY = "console-upload-key-0123456789abcdef-0001"
WRONG_KEY = "not-the-console-key-0123456789abcdef-02"
MBX = ["alice@corp.example", "bob@corp.example", "carol@corp.example"]
FAST = ["--upload-retry-max-ms", "2000", "--upload-heartbeat-s", "3600"]


def allow(cid, mailbox, device):
    return {"id": cid, "type": "device.allow", "mailbox": mailbox, "device_id": device}


class UploadTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="eg-upload-")
        self.rx = ConsoleReceiver(KEY)
        self.agent = None

    def tearDown(self):
        rc = self.agent.stop() if self.agent else 0
        self.rx.close()
        # A clean SIGTERM exit (under ASan also: no leak, no error at exit).
        self.assertEqual(rc, 0, self.agent.read_log()[-3000:] if self.agent else "")
        if self._outcome_ok():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("\nkept %s" % self.tmp, file=sys.stderr)

    def _outcome_ok(self):
        res = getattr(self, "_outcome", None)
        errs = getattr(res, "errors", None) or getattr(getattr(res, "result", None), "errors", [])
        return not errs

    # ---- helpers -----------------------------------------------------------------------------
    def start(self, *extra):
        self.agent = H.Agent(os.path.join(self.tmp, "agent"), args=list(FAST) + list(extra))
        return self.agent

    def restart(self, kill=False, *extra):
        if kill:
            self.agent.proc.send_signal(signal.SIGKILL)
            self.agent.proc.wait(30)
            self.agent._logf.close()
        else:
            self.assertEqual(self.agent.stop(), 0)
        return self.start(*extra)

    def configure(self, key=KEY, url=None):
        doc = {"target": {"kind": "dryrun"}, "upload": {"url": url or self.rx.url}}
        if key:
            doc["upload"]["hmac_key"] = key
        st, body, raw, _ = self.agent.request("PUT", "/api/v1/config", doc)
        self.assertEqual(st, 200, raw)
        self.assertNotIn(KEY, raw.decode())
        self.assertIs(body["upload"]["hmac_key_set"], bool(key) or body["upload"]["hmac_key_set"])
        return body

    def status(self):
        st, body, raw, _ = self.agent.request("GET", "/api/v1/status")
        self.assertEqual(st, 200, raw)
        self.assertNotIn(KEY, raw.decode())
        return body["upload"]

    def metrics(self):
        st, _, raw, _ = self.agent.request("GET", "/metrics")
        self.assertEqual(st, 200)
        out = {}
        for line in raw.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def wait_status(self, pred, timeout=30, what="status"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status()
            if pred(s):
                return s
            time.sleep(0.1)
        self.fail("%s not reached: %s\n%s" % (what, self.status(), self.agent.read_log()[-3000:]))

    def agent_id(self):
        return self.status()["agent_id"]

    def finals(self):
        return [r for r in self.rx.records(self.agent_id(), "command.final")]

    def wait_finals(self, n, timeout=60):
        self.rx.wait(lambda: len(self.rx.records(kind="command.final")) >= n, timeout,
                     "%d command.final records" % n)
        return self.finals()

    def run_commands(self, prefix, n):
        cmds = [allow("%s-%03d" % (prefix, i), MBX[i % len(MBX)], "Dev%s%03d" % (prefix, i))
                for i in range(n)]
        for k in range(0, n, 10):
            st, body = self.agent.post({"commands": cmds[k:k + 10]})
            self.assertEqual(st, 202, body)
        self.agent.wait_final([c["id"] for c in cmds])
        return [c["id"] for c in cmds]

    def assert_delivered_once(self, ids):
        """Every id has exactly one command.final record, the receiver saw no violation, record
        numbers grow strictly in the order received and batches came as 1, 2, 3, ..."""
        self.assertEqual(self.rx.errors, [])
        recs = self.finals()
        got = [r["payload"]["id"] for r in recs]
        self.assertEqual(sorted(got), sorted(set(got)), "duplicate command.final records")
        self.assertEqual(set(got), set(ids))
        ns = [r["n"] for r in self.rx.records(self.agent_id())]
        self.assertEqual(ns, sorted(set(ns)))
        for r in recs:
            self.assertIn(r["payload"]["state"], H.FINAL)
            self.assertRegex(r["at"], r"^\d{4}-\d\d-\d\dT.*Z$")
        batches = self.rx.batches(self.agent_id())
        self.assertEqual([b[1] for b in batches], list(range(1, len(batches) + 1)))

    # ---- tests -------------------------------------------------------------------------------
    def test_command_results_in_order(self):
        a = self.start("--dryrun-latency-ms", "20")
        s = self.status()
        self.assertFalse(s["url_configured"])
        self.configure()
        ids = self.run_commands("ord", 30)
        # A failed command and a cancelled one are final too.
        rec = a.run({"id": "ord-fail", "type": "device.wipe", "mailbox": MBX[0],
                     "device_id": "NoSuchDevice"})
        self.assertIn(rec["state"], ("failed", "succeeded"))
        ids.append("ord-fail")
        slow = [allow("ord-slow-%d" % i, MBX[0], "Slow%d" % i) for i in range(1)]
        slow.append({"id": "ord-wipe", "type": "device.wipe", "mailbox": MBX[0],
                     "device_id": "Slow0"})
        st, _ = a.post({"commands": slow})
        self.assertEqual(st, 202)
        st, body, raw, _ = a.request("DELETE", "/api/v1/commands/ord-wipe")
        cancelled = st == 200
        a.wait_final(["ord-slow-0", "ord-wipe"])
        ids += ["ord-slow-0", "ord-wipe"]
        recs = self.wait_finals(len(ids))
        self.assert_delivered_once(ids)
        by_id = {r["payload"]["id"]: r["payload"] for r in recs}
        for cid in ids:
            view = a.command(cid)
            self.assertEqual(by_id[cid]["state"], view["state"])
            self.assertEqual(by_id[cid], view)  # the payload is the API view
        if cancelled:
            self.assertEqual(by_id["ord-wipe"]["state"], "cancelled")
        s = self.wait_status(lambda s: s["records"] == 0, what="outbox drained")
        self.assertTrue(s["url_configured"])
        self.assertEqual(s["url"], self.rx.url)
        self.assertEqual(s["acked_seq"], self.rx.last_acked(s["agent_id"]))
        self.assertEqual(s["next_seq"], s["acked_seq"] + 1)
        self.assertIsNone(s["last_error"])
        self.assertRegex(s["last_success_at"], r"^\d{4}-\d\d-\d\dT")
        self.assertFalse(s["warning"])
        m = self.metrics()
        self.assertGreaterEqual(m["easgate_upload_records_total"], len(ids))
        self.assertEqual(m["easgate_outbox_records"], 0)
        self.assertEqual(m["easgate_upload_acked_seq"], s["acked_seq"])

    def test_outage_restart_and_lost_acks_lose_nothing(self):
        a = self.start()
        self.configure()
        ids = self.run_commands("pre", 20)
        self.wait_finals(20)

        # Outage: the console refuses connections across many commands.
        self.rx.down("refuse")
        ids += self.run_commands("out", 40)
        s = self.wait_status(lambda s: s["records"] >= 40 and s["failures"] >= 1,
                             what="records waiting, failures")
        self.assertIsNotNone(s["last_error"])
        self.assertEqual(s["state"], "retrying")
        self.assertGreaterEqual(self.metrics()['easgate_upload_failures_total{reason="unreachable"}'],
                                1)

        # The agent is killed and restarted during the outage; more commands after it.
        a = self.restart(kill=True)
        ids += self.run_commands("post", 20)
        self.wait_status(lambda s: s["records"] >= 60, what="60 records waiting after restart")

        # 503 with Retry-After for a while, then up, losing two acknowledgements.
        self.rx.up()
        self.rx.down("503")
        time.sleep(1.5)
        self.rx.lose_acks(2)
        self.rx.up()
        self.wait_finals(len(ids), timeout=90)
        self.wait_status(lambda s: s["records"] == 0, what="outbox drained")
        self.assert_delivered_once(ids)
        self.assertGreaterEqual(self.rx.resends, 2)  # the batches whose acks were lost

    def test_heartbeat_when_idle(self):
        self.start("--upload-heartbeat-s", "1")
        self.configure()
        self.rx.wait(lambda: len(self.rx.heartbeats()) >= 3, 20, "3 heartbeats")
        hb = self.rx.heartbeats()
        self.assertEqual(self.rx.errors, [])
        seqs = [b[1] for b in self.rx.batches()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))  # each its own sequence number
        self.assertTrue(all(b[2] == 0 for b in hb))
        s = self.status()
        self.assertIsNotNone(s["last_success_at"])
        # The agent counts a heartbeat once it has read the console's acknowledgement, which can
        # come a moment after the receiver recorded it.
        end = time.time() + 10
        while self.metrics()["easgate_upload_heartbeats_total"] < 3 and time.time() < end:
            time.sleep(0.1)
        self.assertGreaterEqual(self.metrics()["easgate_upload_heartbeats_total"], 3)
        # Records interrupt the heartbeats and come in the next sequence.
        ids = self.run_commands("hb", 3)
        self.wait_finals(3)
        self.assert_delivered_once(ids)

    def test_wrong_key_is_refused_and_retried(self):
        self.start()
        self.configure(key=WRONG_KEY)
        ids = self.run_commands("key", 5)
        s = self.wait_status(lambda s: s["failures"] >= 2, what="two refused attempts")
        self.assertEqual(self.rx.records(), [])
        self.assertGreaterEqual(self.rx.bad_signatures, 2)
        self.assertIn("401", s["last_error"])
        self.assertIn("hmac_key", s["last_error"])
        self.assertEqual(s["records"], 5)
        self.assertNotIn(WRONG_KEY, self.agent.read_log())
        self.assertGreaterEqual(
            self.metrics()['easgate_upload_failures_total{reason="unauthorized"}'], 2)
        # The right key (same URL, so it must be given): everything arrives.
        self.configure(key=KEY)
        self.wait_finals(5)
        self.assert_delivered_once(ids)
        self.assertIsNone(self.wait_status(lambda s: s["records"] == 0)["last_error"])
        self.assertNotIn(KEY, self.agent.read_log())
        with open(os.path.join(self.agent.state_dir, "target.json")) as f:
            self.assertNotIn(KEY, f.read())

    def test_not_configured_and_outbox_warning(self):
        self.start("--outbox-max-records", "10")
        ids = self.run_commands("warn", 12)  # command results are kept even past the bound
        s = self.wait_status(lambda s: s["records"] == 12, what="12 records waiting")
        self.assertFalse(s["url_configured"])
        self.assertEqual(s["state"], "not_configured")
        self.assertIn("upload not configured", s["message"])
        self.assertTrue(s["warning"])
        self.assertGreater(s["oldest_age_s"], -1)
        m = self.metrics()
        self.assertEqual(m["easgate_outbox_warning"], 1)
        self.assertEqual(m["easgate_outbox_records"], 12)
        self.assertIn("above 80% of its bound", self.agent.read_log())
        # A URL without a key: still nothing is sent.
        self.configure(key=None)
        s = self.wait_status(lambda s: s["state"] == "no_key", what="no_key")
        self.assertTrue(s["url_configured"])
        time.sleep(1.2)
        self.assertEqual(self.rx.requests, 0)
        self.configure(key=KEY)
        self.wait_finals(12)
        self.assert_delivered_once(ids)
        s = self.wait_status(lambda s: s["records"] == 0 and not s["warning"], what="drained")
        self.assertEqual(self.metrics()["easgate_outbox_warning"], 0)

    def test_console_lost_state_conflict(self):
        self.start()
        self.configure()
        ids = self.run_commands("cf", 6)
        self.wait_finals(6)
        self.wait_status(lambda s: s["records"] == 0)
        agent = self.agent_id()
        acked = self.rx.last_acked(agent)
        self.assertGreaterEqual(acked, 1)
        kept = self.rx.records(agent)
        # The console forgets the agent (restored from an old backup): it expects 1.
        self.rx.forget(agent)
        more = self.run_commands("cf2", 4)
        s = self.wait_status(lambda s: "conflict" in s, what="conflict in status")
        self.assertEqual(s["conflict"]["expected"], 1)
        self.assertEqual(s["conflict"]["seq"], acked + 1)
        self.assertTrue(s["resync_needed"])
        self.assertIn("expects batch 1", s["last_error"])
        self.assertEqual(s["records"], 4)  # nothing skipped
        self.assertIn("expects batch 1", self.agent.read_log())
        # An operator resets the console's expectation: delivery goes on, nothing lost.
        self.rx.adopt(agent, acked)
        self.rx.wait(lambda: len(self.rx.records(agent)) >= 10, 30, "4 more records after adopt")
        got = [r["payload"]["id"] for r in self.rx.records(agent, "command.final")]
        self.assertEqual(sorted(got), sorted(ids + more))
        self.assertEqual(self.rx.errors, [])
        self.assertEqual(len(kept), 6)
        self.assertEqual(set(r["payload"]["id"] for r in kept), set(ids))
        self.assertNotIn("conflict", self.wait_status(lambda s: s["records"] == 0))


if __name__ == "__main__":
    H.set_binaries(easgate=sys.argv.pop(1))
    unittest.main(verbosity=2)
