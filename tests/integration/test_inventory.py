#!/usr/bin/env python3
"""The inventory end to end: the daemon against the mock Exchange (2016 profile, 10,000 devices
over 2,000 mailboxes with seeded lists), configured with PUT /api/v1/config, its deltas read from
the outbox through the reference console receiver (console_receiver.py, HMAC-checked uploads).

- the initial full sync of 10,000 devices lands in GET /api/v1/inventory (paged, every device
  once, list membership and access state as the mock has them) and reaches the console as
  exactly 10,000 device.added records;
- POST /api/v1/inventory/sync: 202 with the sync's id; requests while one runs are queued after
  it and coalesced into one;
- changes in the mock - a new partnership (control /device-sync), a wipe (through easgate)
  acknowledged by the device, a partnership removed and a declared mailbox's blocked list edited
  behind easgate's back (easgate-ps) - give exactly one device.added, one device.changed (the
  wipe status and times), one device.removed and one mailbox.drift in the next full sync, and
  GET /api/v1/inventory?changed_since= / ?mailbox= show them;
- with inventory.heal_drift the drift is healed through the journal (a mailbox.set_devices from
  client easgate:inventory) and the mock's list is the declared one again;
- a quick sync reports a changed OS (WhenChanged window) and never removals;
- bad parameters of both endpoints get problem+json with the field named.

Usage: test_inventory.py EASGATE MOCK EASGATE_PS   (ctest passes all three). Standard library.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import unittest
import urllib.parse

import harness as H
from console_receiver import ConsoleReceiver

KEY = "inventory-upload-key-0123456789abcdef-01"
DEVICES = 10000
MAILBOXES = 2000
DOMAIN = "contoso.example"


def mbx(i):
    return "user%04d@%s" % (i, DOMAIN)


class InventoryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="eg-inventory-")
        cls.mock = H.Mock(os.path.join(cls.tmp, "mock"), profile="2016", mailboxes=MAILBOXES,
                          devices=DEVICES, seed=5, extra=["--seed-lists"])
        cls.rx = ConsoleReceiver(KEY)
        cls.agent = H.Agent(os.path.join(cls.tmp, "agent"),
                            ["--workers", "2", "--upload-heartbeat-s", "3600",
                             "--upload-retry-max-ms", "2000"])

    @classmethod
    def tearDownClass(cls):
        code = cls.agent.stop(timeout=60)
        log = cls.agent.read_log()
        cls.mock.stop()
        cls.rx.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert code == 0, "easgate exited %s on SIGTERM:\n%s" % (code, log[-4000:])
        assert H.PASSWORD not in log

    # ---- helpers ---------------------------------------------------------------------------
    def doc(self, heal=False):
        return {"target": {"kind": "onprem", "servers": [{"url": self.mock.url}],
                           "allow_http_basic": True, "username": H.USER, "password": H.PASSWORD,
                           "version": "2016", "max_concurrency": 2},
                "inventory": {"heal_drift": heal, "stats_per_sync": 50, "stats_interval_ms": 0},
                "upload": {"url": self.rx.url, "hmac_key": KEY}}

    def put(self, doc):
        st, body, raw, _ = self.agent.request("PUT", "/api/v1/config", doc)
        self.assertEqual(st, 200, raw)
        return body

    def status(self):
        st, body, raw, _ = self.agent.request("GET", "/api/v1/status")
        self.assertEqual(st, 200, raw)
        return body["inventory"]

    def trigger(self, mode="full", mailbox=None):
        body = {"mode": mode}
        if mailbox:
            body["mailbox"] = mailbox
        st, out, raw, hdrs = self.agent.request("POST", "/api/v1/inventory/sync", body)
        self.assertEqual(st, 202, raw)
        self.assertEqual(hdrs.get("Location"), "/api/v1/status")
        return out["sync"]

    def wait_done(self, sync_id, timeout=300):
        """Until sync_id (and nothing after it) has finished; its summary (status "last")."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status()
            last = s.get("last") or {}
            if last.get("id", 0) >= sync_id and not s["running"] and not s["queued"]:
                return last
            time.sleep(0.2)
        self.fail("sync %d not done: %s\n%s" % (sync_id, self.status(),
                                                 self.agent.read_log()[-3000:]))

    def wait_completed(self, sync_id, timeout=120):
        """The console has the sync.completed record of sync_id: every record before it too."""
        return self.rx.wait(
            lambda: [r for r in self.rx.records(kind="sync.completed")
                     if r["payload"]["sync_id"] == sync_id], timeout,
            "sync.completed of sync %d" % sync_id)[0]

    def inventory(self, **query):
        """Every page of GET /api/v1/inventory with query; the devices."""
        out, cursor, pages = [], None, 0
        while True:
            q = dict(query)
            if cursor:
                q["cursor"] = cursor
            st, body, raw, _ = self.agent.request(
                "GET", "/api/v1/inventory?" + urllib.parse.urlencode(q))
            self.assertEqual(st, 200, raw)
            out += body["devices"]
            pages += 1
            cursor = body.get("next")
            if not cursor:
                return out, pages

    def problem(self, resp, status, field):
        st, body, raw, hdrs = resp
        self.assertEqual(st, status, raw)
        self.assertTrue(hdrs.get("Content-Type", "").startswith("application/problem+json"))
        self.assertEqual(body.get("field"), field, body)

    def records_between(self, first, last_n):
        """Records after index first of everything received, up to record number last_n."""
        return [r for r in self.rx.records()[first:] if r["n"] <= last_n]

    # ---- the test (one story: each step builds on the snapshot of the one before) ----------
    def test_inventory(self):
        a = self.agent
        # Nothing configured: syncs only on request; the endpoints answer.
        s = self.status()
        self.assertFalse(s["automatic"])
        devices, _ = self.inventory()
        self.assertEqual(devices, [])

        # Bad parameters.
        self.problem(a.request("POST", "/api/v1/inventory/sync", {"mode": "everything"}), 400,
                     "mode")
        self.problem(a.request("POST", "/api/v1/inventory/sync", {"mode": "full", "x": 1}), 400,
                     "x")
        self.problem(a.request("POST", "/api/v1/inventory/sync", {"mailbox": ""}), 400,
                     "mailbox")
        self.problem(a.request("GET", "/api/v1/inventory?limit=0"), 400, "limit")
        self.problem(a.request("GET", "/api/v1/inventory?limit=1001"), 400, "limit")
        self.problem(a.request("GET", "/api/v1/inventory?cursor=zz"), 400, "cursor")
        self.problem(a.request("GET", "/api/v1/inventory?changed_since=yesterday"), 400,
                     "changed_since")
        self.problem(a.request("GET", "/api/v1/inventory?page=2"), 400, "page")
        st, _, _, _ = a.request("GET", "/api/v1/inventory?changed_since=2026-01-02T03:04:05.5%2B01:00")
        self.assertEqual(st, 200)

        # The target; requests while a sync runs are queued after it and coalesced into one.
        self.put(self.doc())
        first = self.trigger("full")
        second = self.trigger("full")
        third = self.trigger("quick", mbx(3))
        if third["coalesced"]:  # merged into the sync queued for `second`
            self.assertEqual(third["id"], second["id"])
            self.assertEqual(third["mode"], "full")
            self.assertNotIn("mailbox", third)  # merged with a sync of every mailbox
        else:  # `second` had merged into a sync not yet started; this one queues after it
            self.assertTrue(second["coalesced"] and second["id"] == first["id"], (first, second))
            self.assertEqual((third["state"], third["after"]), ("queued", first["id"]), third)
        self.assertTrue((second["coalesced"] and second["id"] == first["id"]) or
                        (second["state"] == "queued" and second["after"] == first["id"]),
                        (first, second))
        # The full sync of the whole org that the requests ended in.
        full_id = third["id"] if third["coalesced"] else first["id"]
        self.wait_done(third["id"])
        last = self.status()["last_full"]
        self.assertEqual(last["id"], full_id, last)
        self.assertTrue(last["ok"], last)
        self.assertEqual(last["mode"], "full")
        self.assertEqual(last["devices"], DEVICES)
        s = self.status()
        self.assertTrue(s["automatic"])
        self.assertEqual(s["devices"], DEVICES)
        self.assertEqual(s["last_full"]["id"], full_id)
        self.assertIsNotNone(s["next_quick_at"])

        # Every device once, in pages of at most 1000, as the mock has them.
        devices, pages = self.inventory(limit=1000)
        self.assertEqual(len(devices), DEVICES)
        self.assertEqual(pages, DEVICES // 1000 + (1 if DEVICES % 1000 else 0))
        keys = {(d["mailbox"], d["device_id"]) for d in devices}
        self.assertEqual(len(keys), DEVICES)
        by_id = {d["device_id"]: d for d in devices}
        for i in (1, 2, 17, 1999):
            state = self.mock.mailbox(mbx(i))
            mine = [d for d in devices if d["mailbox"] == mbx(i)]
            self.assertEqual(len(mine), len(state["devices"]), (mbx(i), state))
            for d in mine:
                want = "blocked" if d["device_id"] in state["blocked"] else \
                    "allowed" if d["device_id"] in state["allowed"] else "none"
                self.assertEqual(d["list"], want, d)
                md = self.mock.device(mbx(i), d["device_id"])
                self.assertEqual(d["access_state"], md["access_state"], (d, md))
                self.assertEqual(d["os"], md["os"], (d, md))
                self.assertTrue(d["mailbox_identity"].startswith("contoso.example/Users/"), d)
        self.assertTrue(any(d["list"] == "allowed" for d in devices))
        self.assertTrue(any(d["list"] == "blocked" for d in devices))

        # The console got exactly one device.added per device (the coalesced sync: unchanged).
        self.wait_completed(third["id"])  # the last of the syncs, so every record before it
        added = self.rx.records(kind="device.added")
        self.assertEqual(len(added), DEVICES)
        self.assertEqual({(r["payload"]["mailbox"], r["payload"]["device_id"]) for r in added},
                         keys)
        self.assertEqual(self.rx.records(kind="device.removed"), [])
        self.assertEqual(self.rx.errors, [])

        # A declaration through easgate, then a sync so that the snapshot has it.
        decl = mbx(11)
        decl_dev = [d for d in devices if d["mailbox"] == decl][0]["device_id"]
        rec = a.run({"id": "inv-decl", "type": "mailbox.set_devices", "mailbox": decl,
                     "allowed": [decl_dev], "blocked": ["StolenPhone1"]})
        self.assertEqual(rec["state"], "succeeded", rec)
        # A wipe through easgate (the device has not synced since: pending).
        wipe_mbx = mbx(7)
        wiped = [d for d in devices if d["mailbox"] == wipe_mbx][0]
        rec = a.run({"id": "inv-wipe", "type": "device.wipe", "mailbox": wipe_mbx,
                     "device_id": wiped["device_id"], "account_only": False})
        self.assertEqual(rec["state"], "succeeded", rec)
        base = self.trigger("full")
        self.assertTrue(self.wait_done(base["id"])["ok"])
        self.wait_completed(base["id"])
        d = [x for x in self.inventory(mailbox=wipe_mbx)[0]
             if x["device_id"] == wiped["device_id"]][0]
        self.assertIn(d["wipe_status"], ("DeviceWipePending", "DeviceBlocked"), d)
        self.assertIsNotNone(d["wipe_requested_at"])
        self.assertIsNone(d["wipe_acknowledged_at"])

        # ---- changes in the mock ----
        checkpoint = len(self.rx.records())
        since_ms = int(time.time() * 1000)
        new_mbx, new_id = mbx(5), "ApplNEWINV0001"
        out = self.mock.sync(new_mbx, new_id, device_type="iPhone", model="iPhone16,1",
                             os="iOS 18.2", user_agent="Apple-iPhone16C1/2201.1")
        self.assertTrue(out["created"], out)
        out = self.mock.sync(wipe_mbx, wiped["device_id"], ack="success")  # the wipe is acked
        gone_mbx = mbx(9)
        gone = [x for x in devices if x["mailbox"] == gone_mbx][0]
        code, _, err = self.mock.ps("Remove-MobileDevice", "-p", "Identity=" + gone["identity"],
                                    "-p", "Confirm:bool=false")
        self.assertEqual(code, 0, err)
        code, _, err = self.mock.ps("Set-CASMailbox", "-p", "Identity=" + decl, "-p",
                                    "ActiveSyncBlockedDeviceIDs:add=RoguePhone9")
        self.assertEqual(code, 0, err)

        sync = self.trigger("full")
        last = self.wait_done(sync["id"])
        self.assertTrue(last["ok"], last)
        done = self.wait_completed(sync["id"])
        got = self.records_between(checkpoint, done["n"])
        kinds = sorted(r["kind"] for r in got)
        self.assertEqual(kinds, ["device.added", "device.changed", "device.removed",
                                 "mailbox.drift", "sync.completed"],
                         json.dumps(got, indent=1)[:4000])
        rec = {r["kind"]: r["payload"] for r in got}
        add = rec["device.added"]
        self.assertEqual((add["mailbox"], add["device_id"], add["os"], add["model"]),
                         (new_mbx, new_id, "iOS 18.2", "iPhone16,1"))
        self.assertIsNotNone(add["first_sync"])
        chg = rec["device.changed"]
        self.assertEqual(chg["device"]["device_id"], wiped["device_id"])
        self.assertEqual(chg["device"]["wipe_status"], "DeviceWipeSucceeded")
        self.assertIsNotNone(chg["device"]["wipe_acknowledged_at"])
        self.assertIn("wipe_status", chg["changed"])
        self.assertIn("wipe_acknowledged_at", chg["changed"])
        rem = rec["device.removed"]
        self.assertEqual((rem["mailbox"], rem["device_id"]), (gone_mbx, gone["device_id"]))
        drift = rec["mailbox.drift"]
        self.assertEqual(drift["mailbox"], decl)
        self.assertFalse(drift["healed"])
        self.assertEqual(drift["expected"], {"allowed": [decl_dev], "blocked": ["StolenPhone1"]})
        self.assertEqual(sorted(drift["actual"]["blocked"]), ["RoguePhone9", "StolenPhone1"])
        summary = rec["sync.completed"]
        self.assertEqual((summary["added"], summary["changed"], summary["removed"],
                          summary["drift"], summary["healed"]), (1, 1, 1, 1, 0))
        self.assertEqual(summary["devices"], DEVICES)  # one new, one gone

        # The read API agrees.
        changed, _ = self.inventory(changed_since=str(since_ms))
        self.assertEqual(sorted(x["device_id"] for x in changed),
                         sorted([new_id, wiped["device_id"]]))
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since_ms // 1000)) + \
            ".%03dZ" % (since_ms % 1000)
        self.assertEqual(len(self.inventory(changed_since=iso)[0]), 2)
        mine, _ = self.inventory(mailbox=new_mbx.upper())
        self.assertIn(new_id, [x["device_id"] for x in mine])
        self.assertNotIn(gone["device_id"],
                         [x["device_id"] for x in self.inventory(mailbox=gone_mbx)[0]])

        # Healing: a PUT with heal_drift (a new revision; its first automatic full sync would
        # come a quick interval later, a request runs it now).
        checkpoint = len(self.rx.records())
        self.put(self.doc(heal=True))
        sync = self.trigger("full")
        self.assertEqual(self.wait_done(sync["id"])["healed"], 1)
        self.wait_completed(sync["id"])
        healed = [r for r in self.rx.records()[checkpoint:] if r["kind"] == "mailbox.drift"]
        self.assertEqual(len(healed), 1, healed)
        self.assertTrue(healed[0]["payload"]["healed"])
        cid = healed[0]["payload"]["command_id"]
        rec = a.wait_final([cid], timeout=60)[cid]
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["type"], "mailbox.set_devices")
        self.assertEqual(rec["client"], "easgate:inventory")
        self.assertEqual(rec["command"]["blocked"], ["StolenPhone1"])
        self.assertEqual(sorted(self.mock.mailbox(decl)["blocked"]), ["StolenPhone1"])
        # ...after which a full sync finds no drift.
        quiet = self.trigger("full")
        self.wait_done(quiet["id"])
        done = self.wait_completed(quiet["id"])
        self.assertEqual(done["payload"]["drift"], 0, done)

        # A quick sync: a changed OS is found; a removed partnership is not reported.
        checkpoint = len(self.rx.records())
        e_mbx = mbx(13)
        e = [x for x in devices if x["mailbox"] == e_mbx][0]
        self.mock.sync(e_mbx, e["device_id"], os="iOS 99.1")
        other = [x for x in devices if x["mailbox"] == mbx(15)][0]
        code, _, err = self.mock.ps("Remove-MobileDevice", "-p", "Identity=" + other["identity"],
                                    "-p", "Confirm:bool=false")
        self.assertEqual(code, 0, err)
        q = self.trigger("quick")
        last = self.wait_done(q["id"])
        self.assertEqual(last["mode"], "quick", last)
        self.assertLess(last["devices"], DEVICES)  # only what changed lately
        done = self.wait_completed(q["id"])
        got = self.records_between(checkpoint, done["n"])
        changes = [r["payload"] for r in got if r["kind"] == "device.changed"]
        self.assertEqual([c["device"]["device_id"] for c in changes], [e["device_id"]],
                         json.dumps(got)[:3000])
        self.assertEqual(changes[0]["changed"], ["os"])
        self.assertEqual([r for r in got if r["kind"] == "device.removed"], [])
        self.assertEqual(self.rx.errors, [])

        # Metrics.
        st, _, raw, _ = a.request("GET", "/metrics")
        text = raw.decode()
        self.assertIn('easgate_inventory_syncs_total{mode="quick",outcome="ok"} 1', text)
        self.assertIn("easgate_inventory_devices %d" % DEVICES, text)  # the quick one removed none



class ConsoleOutage(unittest.TestCase):
    """The console is down during several syncs that find changes: once it is back, it gets
    every delta of every sync, in order, with no gap in the sequence and nothing twice."""
    doc, put, status, trigger, wait_done, wait_completed = (
        InventoryTest.doc, InventoryTest.put, InventoryTest.status, InventoryTest.trigger,
        InventoryTest.wait_done, InventoryTest.wait_completed)

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="eg-inventory-outage-")
        cls.mock = H.Mock(os.path.join(cls.tmp, "mock"), profile="2016", mailboxes=40,
                          devices=120, seed=9)
        cls.rx = ConsoleReceiver(KEY)
        cls.agent = H.Agent(os.path.join(cls.tmp, "agent"),
                            ["--workers", "2", "--upload-heartbeat-s", "3600",
                             "--upload-retry-max-ms", "1000"])

    @classmethod
    def tearDownClass(cls):
        code = cls.agent.stop(timeout=60)
        cls.mock.stop()
        cls.rx.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert code == 0, "easgate exited %s on SIGTERM" % code

    def test_outage_during_syncs_loses_nothing(self):
        self.put(self.doc())
        first = self.trigger("full")
        self.assertTrue(self.wait_done(first["id"])["ok"])
        self.wait_completed(first["id"])
        self.assertEqual(len(self.rx.records(kind="device.added")), 120)

        self.rx.down("refuse")
        new = []
        for k in range(3):  # three syncs, each finding a new device, while the console is down
            dev = "ApplOUTAGE%04d" % k
            self.assertTrue(self.mock.sync(mbx(k + 1), dev, device_type="iPhone")["created"])
            new.append((mbx(k + 1), dev))
            sync = self.trigger("full")
            self.assertTrue(self.wait_done(sync["id"])["ok"])
        time.sleep(1.0)  # a few refused upload attempts
        self.assertEqual(len(self.rx.records(kind="device.added")), 120)
        self.rx.up()
        self.wait_completed(sync["id"])
        added = [(r["payload"]["mailbox"], r["payload"]["device_id"])
                 for r in self.rx.records(kind="device.added")]
        self.assertEqual(added[120:], new)  # each once, in the order the syncs found them
        self.assertEqual(len(set(added)), len(added))
        ns = [r["n"] for r in self.rx.records()]
        self.assertEqual(ns, sorted(ns))
        self.assertEqual(len(set(ns)), len(ns))
        self.assertEqual(self.rx.errors, [])  # sequence continuity held throughout
        completed = [r["payload"]["sync_id"] for r in self.rx.records(kind="sync.completed")]
        self.assertEqual(len(completed), 4)

if __name__ == "__main__":
    H.set_binaries(easgate=sys.argv.pop(1), mock=sys.argv.pop(1), easgate_ps=sys.argv.pop(1))
    unittest.main(verbosity=2)
