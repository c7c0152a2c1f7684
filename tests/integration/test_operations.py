#!/usr/bin/env python3
"""End to end: console API -> agent -> mock Exchange, per version profile.

The agent gets its Exchange target the way a console gives it, PUT /api/v1/config: on-prem
(PowerShell remoting) for the 2010, 2013 and 2016 profiles, Exchange Online (REST InvokeCommand
with an app-only token from a certificate-signed assertion) for the online profile.
For each profile one easgate-mock-exchange and one easgate (HTTPS, client
certificate + bearer token) serve a whole test class. Every command type is posted through the
API, its final state read back with GET /api/v1/commands/{id}, and checked against what the mock
recorded (/control/calls: cmdlet names per version, parameters byte for byte, -Confirm:$false,
one Set-CASMailbox carrying only the difference) and the mock's final state (lists, wipe state,
partnerships, ActiveSync settings, policy, org default). Error cases (unknown mailbox or device,
cmdlets or parameters hidden by RBAC, write scope, throttling with a named delay, transport
failures, lost shells) must end in the right stable code after a bounded number of attempts, and
hostile identifiers must be refused with a 400 or reach the mock exactly as sent.

Authentication: EG_OPS_AUTH=basic (default) | kerberos | ntlm. With kerberos or ntlm a throwaway
realm (tests/krb/realm.sh) is started, the mock accepts only GSSAPI on its plain-http listener
(every body sealed, multipart/encrypted), and the agent is configured with auth "kerberos" /
"ntlm"; the Online profile (OAuth, no Kerberos) is skipped then (ctest:
integration.operations.kerberos, integration.operations.ntlm).

Usage: test_operations.py EASGATE MOCK PKI_SCRIPT   (ctest passes all three)
Standard library only.
"""
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, timezone

import harness as H
from harness import ControlError

# Small retry settings keep the error cases fast: at most 3 attempts, backoff 50..200 ms.
MAX_ATTEMPTS = 3
RETRY_BASE_MS = 50
RETRY_MAX_MS = 200
# How much later than the retry decision the journal may stamp updated_at (ASan, fsync).
JOURNAL_SLACK_MS = 250
# Cmdlets the bridge runs on its own (version detection, readiness probe), not for a command.
HOUSEKEEPING = {"Get-ExchangeServer", "Get-OrganizationConfig"}
DOMAIN = "contoso.example"

_PKI = None
_TMP = None


def setUpModule():
    global _PKI, _TMP
    _TMP = tempfile.mkdtemp(prefix="easgate-ops-")
    _PKI = H.make_pki(os.path.join(_TMP, "pki"))
    if H.AUTH != "basic":
        H.realm(os.path.join(_TMP, "realm"))


def tearDownModule():
    H.stop_realm()
    shutil.rmtree(_TMP, ignore_errors=True)


def onprem_auth():
    """The target's authentication members for H.AUTH."""
    if H.AUTH == "basic":
        return {"auth": "basic", "username": H.USER, "password": H.PASSWORD,
                "allow_http_basic": True}
    return H.gss_target(H.AUTH)


# Exchange Online: the app the mock trusts (its certificate signs the client assertions).
TENANT = "contoso.onmicrosoft.com"
APP_ID = "6a1c9c8e-0d3e-4c53-9f0a-3b1e2f4d5c6b"
_APP = {}


def app_pki():
    """A throwaway RSA key and self-signed certificate for the Online app (made once)."""
    if not _APP:
        _APP.update(H.make_online_app(os.path.join(_TMP, "app")))
    return _APP


def target_document(mock, exchange_version="auto"):
    """The runtime configuration (PUT /api/v1/config) that points the agent at `mock`. The
    server-list thresholds are set so that the error tests, which fail one server on purpose,
    exercise the retry policy rather than the dead-server logic (tested in test_api.py)."""
    common = {"max_concurrency": 4, "dead_threshold": 100, "failure_window_ms": 1000}
    if mock.profile == "online":
        t = H.online_target(mock, app_pki(), TENANT, APP_ID)
    else:
        t = {"kind": "onprem", "servers": [{"url": mock.url}], "version": exchange_version}
        t.update(onprem_auth())
    t.update(common)
    return {"target": t}


def configure_agent(workdir, mock, *, exchange_version="auto", max_attempts=MAX_ATTEMPTS,
                    retry_base_ms=RETRY_BASE_MS, retry_max_ms=RETRY_MAX_MS, extra=()):
    """Start an agent on the HTTPS console API (client certificate + bearer token) with the given
    retry settings and no Exchange target, then point it at `mock` the way a console does:
    PUT /api/v1/config (applied without a restart). The one place that configures the agent's
    Exchange side."""
    args = [
        "--max-attempts", str(max_attempts),
        "--retry-base-ms", str(retry_base_ms),
        "--retry-max-ms", str(retry_max_ms),
    ] + list(extra)
    agent = H.Agent(workdir, args, pki=_PKI)
    st, body, raw, _ = agent.request("PUT", "/api/v1/config", target_document(mock, exchange_version))
    if st != 200:
        agent.stop()
        raise AssertionError("PUT /api/v1/config -> %d: %r" % (st, raw))
    return agent


def ms(ts):
    """An API timestamp ("2026-11-22T10:00:00.123Z") in milliseconds since the epoch."""
    t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return t.timestamp() * 1000.0


def addr(local):
    return "%s@%s" % (local, DOMAIN)


class Base:
    """Shared fixture: one mock and one agent per test class (subclasses set PROFILE)."""
    PROFILE = None

    @classmethod
    def setUpClass(cls):
        if cls.PROFILE == "online" and H.AUTH != "basic":
            raise unittest.SkipTest("Exchange Online authenticates with OAuth, not %s: its run "
                                    "is the same as in integration.operations" % H.AUTH)
        cls.tmp = tempfile.mkdtemp(prefix="ops-%s-" % cls.PROFILE, dir=_TMP)
        extra = []
        if cls.PROFILE == "online":
            extra = H.online_mock_args(app_pki(), TENANT, APP_ID)
        cls.mock = H.Mock(os.path.join(cls.tmp, "mock"), profile=cls.PROFILE, mailboxes=10,
                          devices=20, seed=11, extra=extra)
        cls.agent = None
        try:
            cls.agent = configure_agent(os.path.join(cls.tmp, "agent"), cls.mock)
        except BaseException:
            cls.mock.stop()
            raise
        cls.legacy = cls.PROFILE == "2010"
        noun = "ActiveSyncDevice" if cls.legacy else "MobileDevice"
        cls.GET, cls.CLEAR, cls.REMOVE = ("%s-%s" % (v, noun) for v in ("Get", "Clear", "Remove"))
        cls._ids = itertools.count(1)
        cls._boxes = itertools.count(1)
        # Let the bridge detect the version now, so that no test sees Get-ExchangeServer first.
        mbx = cls.new_mailbox_cls("warmup")
        rec = cls.agent.run({"id": "warmup", "type": "device.remove", "mailbox": mbx,
                             "device_id": "NoSuchDevice"})
        assert rec["state"] == "failed" and rec["error"]["code"] == "device_not_found", rec
        if cls.PROFILE != "online":  # Online has one cmdlet set: nothing to detect
            versions = [c for c in cls.mock.calls() if c["cmdlet"] == "Get-ExchangeServer"]
            assert versions, "the bridge did not detect the version"

    @classmethod
    def tearDownClass(cls):
        code = cls.agent.stop() if cls.agent else 0
        log = cls.agent.read_log() if cls.agent else ""
        mcode = cls.mock.stop()
        assert code == 0, "easgate exited %s on SIGTERM:\n%s" % (code, log[-4000:])
        assert mcode == 0, "the mock exited %s on SIGTERM:\n%s" % (
            mcode, H.read_text(cls.mock.log)[-4000:])
        assert H.PASSWORD not in log, "the Exchange password appears in the agent's log"
        assert H.TOKEN not in log, "the bearer token appears in the agent's log"

    def setUp(self):
        self.mock.faults_reset()
        self.mock.calls_reset()

    def tearDown(self):
        self.mock.faults_reset()

    # ---- fixtures in the mock ---------------------------------------------------------------
    @classmethod
    def new_mailbox_cls(cls, tag, smtp=None):
        alias = "%s%d" % (tag, next(cls._boxes))
        smtp = smtp or addr(alias)
        cls.mock.engine("add_mailbox", alias=alias, smtp=smtp)
        return smtp

    def new_mailbox(self, tag="mbx", smtp=None):
        return self.new_mailbox_cls(tag, smtp)

    def new_device(self, mailbox, device_id, eas_version="16.1", device_type="iPhone"):
        out = self.mock.sync(mailbox, device_id, eas_version=eas_version, device_type=device_type)
        self.assertTrue(out["created"], out)
        return self.mock.device(mailbox, device_id)

    def cid(self, tag):
        return "%s-%s-%d" % (self.PROFILE, tag, next(self._ids))

    # ---- what the mock recorded -------------------------------------------------------------
    def calls(self):
        return [c for c in self.mock.calls() if c["cmdlet"] not in HOUSEKEEPING]

    def cmdlets(self):
        return [c["cmdlet"] for c in self.calls()]

    def assertActionsRecorded(self, rec, calls=None):
        """The command's result actions are exactly the cmdlets the mock received, in order,
        with the same parameters."""
        calls = self.calls() if calls is None else calls
        got = [(c["cmdlet"], c["parameters"]) for c in calls]
        want = [(a["cmdlet"], a["parameters"]) for a in rec["result"]["actions"]]
        self.assertEqual(got, want)

    def assertVersionNames(self, calls=None):
        """No cmdlet of the other version's device family was sent."""
        for c in (self.calls() if calls is None else calls):
            name = c["cmdlet"]
            if self.legacy:
                self.assertNotIn("MobileDevice", name, c)
            else:
                self.assertNotIn("ActiveSyncDevice", name, c)

    def assertFailed(self, rec, code, attempts=1, exchange_type=None):
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(rec["error"]["code"], code, rec)
        self.assertTrue(rec["error"]["message"], rec)
        self.assertEqual(rec["attempts"], attempts, rec)
        self.assertIn("finished_at", rec)
        self.assertNotIn("next_attempt_at", rec)
        if exchange_type:
            self.assertIn("exchange", rec["error"], rec)
            self.assertTrue(rec["error"]["exchange"]["type"].endswith(exchange_type), rec)
            self.assertTrue(rec["error"]["exchange"]["message"], rec)

    def assertQuiet(self, seconds=None):
        """Nothing more reaches the mock: the retries really stopped."""
        before = len(self.mock.calls())
        time.sleep(seconds if seconds is not None else 3 * RETRY_MAX_MS / 1000.0)
        self.assertEqual(len(self.mock.calls()), before, self.mock.calls()[before:])

    def run_cmd(self, cmd, **kw):
        return self.agent.run(cmd, **kw)

    def lists(self, mailbox):
        """The mailbox's (allowed, blocked) lists in the mock, each sorted."""
        st = self.mock.mailbox(mailbox)
        return sorted(st["allowed"]), sorted(st["blocked"])

    def set_lists(self, mailbox, allowed, blocked):
        """Give a mailbox these lists (through the agent), then forget the calls it made."""
        rec = self.run_cmd({"id": self.cid("setup"), "type": "mailbox.set_devices",
                            "mailbox": mailbox, "allowed": allowed, "blocked": blocked})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.lists(mailbox), (sorted(allowed), sorted(blocked)))
        self.mock.calls_reset()


class Operations(Base):
    """Every command type, its cmdlets in this version and its effect in the mock."""

    def test_gss_every_message_sealed(self):
        """Under Kerberos/NTLM the mock authenticated the agent with that mechanism and every
        WS-Man body travelled sealed (none refused as unencrypted)."""
        if H.AUTH == "basic" or self.PROFILE == "online":
            self.skipTest("Basic authentication: nothing is sealed")
        mbx = self.new_mailbox()
        rec = self.run_cmd({"id": self.cid("sealed"), "type": "device.block", "mailbox": mbx,
                            "device_id": "PhoneSealed"})
        self.assertEqual(rec["state"], "succeeded", rec)
        st = self.mock.auth_stats()
        self.assertGreater(st["kerberos" if H.AUTH == "kerberos" else "ntlm"], 0, st)
        self.assertGreater(st["sealed_requests"], 0, st)
        self.assertGreater(st["sealed_replies"], 0, st)
        self.assertEqual(st["plain_rejected"], 0, st)
        self.assertEqual(st["last_user"].lower(), H.realm().credentials(H.AUTH)[0].lower(), st)

    def test_device_allow_moves_off_the_blocked_list(self):
        mbx = self.new_mailbox()
        self.set_lists(mbx, ["Keep1"], ["Phone1", "Keep2"])
        rec = self.run_cmd({"id": self.cid("allow"), "type": "device.allow", "mailbox": mbx,
                            "device_id": "Phone1"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], 1)
        self.assertActionsRecorded(rec)
        calls = self.calls()
        self.assertEqual([c["cmdlet"] for c in calls], ["Get-CASMailbox", "Set-CASMailbox"])
        self.assertEqual(calls[0]["parameters"], {"Identity": mbx})
        self.assertEqual(calls[1]["parameters"], {
            "Identity": mbx,
            "ActiveSyncAllowedDeviceIDs": {"Add": ["Phone1"]},
            "ActiveSyncBlockedDeviceIDs": {"Remove": ["Phone1"]}})
        self.assertEqual(calls[1]["status"], "Completed")
        self.assertEqual(self.lists(mbx), (["Keep1", "Phone1"], ["Keep2"]))

    def test_device_block_moves_off_the_allowed_list(self):
        mbx = self.new_mailbox()
        self.set_lists(mbx, ["Phone2", "Keep1"], [])
        rec = self.run_cmd({"id": self.cid("block"), "type": "device.block", "mailbox": mbx,
                            "device_id": "Phone2"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        self.assertEqual(self.calls()[1]["parameters"], {
            "Identity": mbx,
            "ActiveSyncAllowedDeviceIDs": {"Remove": ["Phone2"]},
            "ActiveSyncBlockedDeviceIDs": {"Add": ["Phone2"]}})
        self.assertEqual(self.lists(mbx), (["Keep1"], ["Phone2"]))

    def test_device_unlist_touches_only_the_list_it_is_on(self):
        mbx = self.new_mailbox()
        self.set_lists(mbx, ["Phone3"], ["Other"])
        rec = self.run_cmd({"id": self.cid("unlist"), "type": "device.unlist", "mailbox": mbx,
                            "device_id": "Phone3"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        self.assertEqual(self.calls()[1]["parameters"], {
            "Identity": mbx, "ActiveSyncAllowedDeviceIDs": {"Remove": ["Phone3"]}})
        self.assertEqual(self.lists(mbx), ([], ["Other"]))

    def test_edit_that_changes_nothing_sends_no_set(self):
        mbx = self.new_mailbox()
        self.set_lists(mbx, ["Phone4"], [])
        cmds = [{"id": self.cid("noop"), "type": "device.allow", "mailbox": mbx,
                 "device_id": "phone4"},  # device IDs compare case-insensitively
                {"id": self.cid("noop"), "type": "device.unlist", "mailbox": mbx,
                 "device_id": "NeverListed"}]
        final = self.agent.run_batch(cmds)
        for rec in final.values():
            self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.cmdlets(), ["Get-CASMailbox"])
        self.assertEqual(self.lists(mbx), (["Phone4"], []))

    def test_removal_uses_the_spelling_in_exchange(self):
        mbx = self.new_mailbox()
        self.set_lists(mbx, [], ["ApplMIXEDcase1"])
        rec = self.run_cmd({"id": self.cid("case"), "type": "device.allow", "mailbox": mbx,
                            "device_id": "applmixedCASE1"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.calls()[1]["parameters"], {
            "Identity": mbx,
            "ActiveSyncAllowedDeviceIDs": {"Add": ["applmixedCASE1"]},
            "ActiveSyncBlockedDeviceIDs": {"Remove": ["ApplMIXEDcase1"]}})
        self.assertEqual(self.lists(mbx), (["applmixedCASE1"], []))

    def test_set_devices_sends_only_the_difference(self):
        mbx = self.new_mailbox()
        self.set_lists(mbx, ["A1", "B1"], ["C1"])
        rec = self.run_cmd({"id": self.cid("decl"), "type": "mailbox.set_devices",
                            "mailbox": mbx, "allowed": ["D1", "B1"], "blocked": ["C1", "E1"]})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        self.assertEqual(self.calls()[1]["parameters"], {
            "Identity": mbx,
            "ActiveSyncAllowedDeviceIDs": {"Add": ["D1"], "Remove": ["A1"]},
            "ActiveSyncBlockedDeviceIDs": {"Add": ["E1"]}})
        allowed, blocked = self.lists(mbx)
        self.assertEqual(sorted(allowed), ["B1", "D1"])
        self.assertEqual(sorted(blocked), ["C1", "E1"])
        # Declaring the same sets again changes nothing and sends no Set-CASMailbox.
        self.mock.calls_reset()
        rec = self.run_cmd({"id": self.cid("decl"), "type": "mailbox.set_devices",
                            "mailbox": mbx, "allowed": ["B1", "D1"], "blocked": ["E1", "C1"]})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.cmdlets(), ["Get-CASMailbox"])
        # Empty sets clear both lists.
        self.mock.calls_reset()
        rec = self.run_cmd({"id": self.cid("decl"), "type": "mailbox.set_devices",
                            "mailbox": mbx, "allowed": [], "blocked": []})
        self.assertEqual(rec["state"], "succeeded", rec)
        params = self.calls()[1]["parameters"]
        self.assertEqual(sorted(params["ActiveSyncAllowedDeviceIDs"]["Remove"]), ["B1", "D1"])
        self.assertEqual(sorted(params["ActiveSyncBlockedDeviceIDs"]["Remove"]), ["C1", "E1"])
        self.assertNotIn("Add", params["ActiveSyncAllowedDeviceIDs"])
        self.assertEqual(self.lists(mbx), ([], []))

    def test_coalesced_edits_make_one_set(self):
        mbx = self.new_mailbox()
        other = self.new_mailbox()
        self.set_lists(mbx, ["Old1"], [])
        cmds = [
            {"type": "device.allow", "mailbox": mbx, "device_id": "D1"},
            {"type": "device.block", "mailbox": mbx, "device_id": "Old1"},
            {"type": "device.block", "mailbox": mbx, "device_id": "D1"},    # wins over allow
            {"type": "device.allow", "mailbox": mbx, "device_id": "D3"},
            {"type": "device.unlist", "mailbox": mbx, "device_id": "D3"},   # wins over allow
            {"type": "device.allow", "mailbox": mbx, "device_id": "D4"},
            {"type": "device.block", "mailbox": other, "device_id": "X1"},  # another mailbox
        ]
        for c in cmds:
            c["id"] = self.cid("co")
        final = self.agent.run_batch(cmds)
        ids = [c["id"] for c in cmds[:6]]
        for cid in ids:
            rec = final[cid]
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(sorted(rec["result"]["coalesced_with"]),
                             sorted(i for i in ids if i != cid))
            self.assertEqual(rec["result"]["actions"], final[ids[0]]["result"]["actions"])
        mine = [c for c in self.calls() if c["parameters"].get("Identity") == mbx]
        self.assertEqual([c["cmdlet"] for c in mine], ["Get-CASMailbox", "Set-CASMailbox"])
        self.assertActionsRecorded(final[ids[0]], mine)
        p = mine[1]["parameters"]
        self.assertEqual(p["ActiveSyncAllowedDeviceIDs"], {"Add": ["D4"], "Remove": ["Old1"]})
        self.assertEqual(sorted(p["ActiveSyncBlockedDeviceIDs"]["Add"]), ["D1", "Old1"])
        self.assertEqual(set(p["ActiveSyncBlockedDeviceIDs"]), {"Add"})
        allowed, blocked = self.lists(mbx)
        self.assertEqual(allowed, ["D4"])
        self.assertEqual(sorted(blocked), ["D1", "Old1"])
        self.assertEqual(self.lists(other), ([], ["X1"]))
        self.assertNotIn("coalesced_with", final[cmds[6]["id"]]["result"])

    def test_wipe_full_with_notification(self):
        mbx = self.new_mailbox()
        dev = self.new_device(mbx, "ApplWIPE0001")
        notify = [addr("helpdesk"), addr("security")]
        rec = self.run_cmd({"id": self.cid("wipe"), "type": "device.wipe", "mailbox": mbx,
                            "device_id": "applwipe0001", "account_only": False,
                            "notify": notify})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        calls = self.calls()
        self.assertEqual([c["cmdlet"] for c in calls], [self.GET, self.CLEAR])
        self.assertEqual(calls[0]["parameters"], {"Mailbox": mbx})
        self.assertEqual(calls[1]["parameters"], {"Identity": dev["identity"],
                                                  "NotificationEmailAddresses": notify,
                                                  "Confirm": False})
        self.assertEqual(calls[1]["status"], "Completed")
        w = self.mock.device(mbx, "ApplWIPE0001")["wipe"]
        self.assertEqual(w["status"], "DeviceWipePending")
        self.assertIsNotNone(w["request_time"])
        self.assertFalse(w["account_only"])
        self.assertEqual(w["notify"], notify)

    def test_wipe_account_only(self):
        mbx = self.new_mailbox()
        dev = self.new_device(mbx, "ApplACCT0001")
        cmd = {"id": self.cid("acct"), "type": "device.wipe", "mailbox": mbx,
               "device_id": "ApplACCT0001"}
        if self.PROFILE in ("2016", "online"):
            cmd["account_only"] = True
        # elsewhere account_only is left to its default, which is true
        rec = self.run_cmd(cmd)
        self.assertTrue(rec["command"]["account_only"])
        w = self.mock.device(mbx, "ApplACCT0001")["wipe"]
        if self.PROFILE in ("2016", "online"):
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertActionsRecorded(rec)
            self.assertEqual([c["parameters"] for c in self.calls()],
                             [{"Mailbox": mbx}, {"Identity": dev["identity"],
                                                 "AccountOnly": True, "Confirm": False}])
            self.assertEqual(w["status"], "DeviceWipePending")
            self.assertTrue(w["account_only"])
        else:
            self.assertFailed(rec, "unsupported")
            self.assertNotIn("result", rec)
            self.assertEqual([c for c in self.calls() if c["cmdlet"].startswith("Clear-")], [])
            self.assertEqual(w["status"], "DeviceOk")
            self.assertIsNone(w["request_time"])
            self.assertQuiet()

    def test_wipe_then_cancel(self):
        mbx = self.new_mailbox()
        dev = self.new_device(mbx, "ApplCANC0001")
        rec = self.run_cmd({"id": self.cid("wipe"), "type": "device.wipe", "mailbox": mbx,
                            "device_id": "ApplCANC0001", "account_only": False})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.mock.device(mbx, "ApplCANC0001")["wipe"]["status"],
                         "DeviceWipePending")
        self.mock.calls_reset()
        rec = self.run_cmd({"id": self.cid("cancel"), "type": "device.wipe_cancel",
                            "mailbox": mbx, "device_id": "ApplCANC0001"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        calls = self.calls()
        self.assertEqual([c["cmdlet"] for c in calls], [self.GET, self.CLEAR])
        self.assertEqual(calls[1]["parameters"], {"Identity": dev["identity"], "Cancel": True,
                                                  "Confirm": False})
        w = self.mock.device(mbx, "ApplCANC0001")["wipe"]
        self.assertEqual(w["status"], "DeviceOk")
        self.assertIsNone(w["request_time"])

    def test_remove_partnership(self):
        mbx = self.new_mailbox()
        dev = self.new_device(mbx, "ApplREMV0001")
        self.new_device(mbx, "ApplKEEP0001")
        self.set_lists(mbx, ["ApplREMV0001"], [])
        rec = self.run_cmd({"id": self.cid("remove"), "type": "device.remove", "mailbox": mbx,
                            "device_id": "ApplREMV0001"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        calls = self.calls()
        self.assertEqual([c["cmdlet"] for c in calls], [self.GET, self.REMOVE])
        self.assertEqual(calls[1]["parameters"], {"Identity": dev["identity"], "Confirm": False})
        with self.assertRaises(ControlError) as cm:
            self.mock.device(mbx, "ApplREMV0001")
        self.assertEqual(cm.exception.status, 404)
        st = self.mock.mailbox(mbx)
        self.assertEqual(st["devices"], ["ApplKEEP0001"])
        self.assertEqual(st["allowed"], ["ApplREMV0001"])  # list entries stay

    def test_mailbox_set(self):
        mbx = self.new_mailbox()
        self.mock.engine("add_policy", name="Ops Restricted")
        rec = self.run_cmd({"id": self.cid("mset"), "type": "mailbox.set", "mailbox": mbx,
                            "activesync_enabled": False, "policy": "Ops Restricted"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertActionsRecorded(rec)
        self.assertEqual(self.calls()[0]["parameters"], {
            "Identity": mbx, "ActiveSyncEnabled": False,
            "ActiveSyncMailboxPolicy": "Ops Restricted"})
        st = self.mock.mailbox(mbx)
        self.assertFalse(st["activesync_enabled"])
        self.assertEqual((st["policy"], st["policy_defaulted"]), ("Ops Restricted", False))
        # policy null = the default policy; only the fields given are sent
        self.mock.calls_reset()
        rec = self.run_cmd({"id": self.cid("mset"), "type": "mailbox.set", "mailbox": mbx,
                            "policy": None})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.calls()[0]["parameters"], {"Identity": mbx,
                                                         "ActiveSyncMailboxPolicy": None})
        st = self.mock.mailbox(mbx)
        self.assertEqual((st["policy"], st["policy_defaulted"]), ("Default", True))
        self.assertFalse(st["activesync_enabled"])
        self.mock.calls_reset()
        rec = self.run_cmd({"id": self.cid("mset"), "type": "mailbox.set", "mailbox": mbx,
                            "activesync_enabled": True})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.calls()[0]["parameters"], {"Identity": mbx,
                                                         "ActiveSyncEnabled": True})
        self.assertTrue(self.mock.mailbox(mbx)["activesync_enabled"])
        self.assertEqual(self.cmdlets(), ["Set-CASMailbox"])

    def test_org_default_access(self):
        try:
            for level, name in (("quarantine", "Quarantine"), ("block", "Block"),
                                ("allow", "Allow")):
                self.mock.calls_reset()
                rec = self.run_cmd({"id": self.cid("org"), "type": "org.set_default_access",
                                    "level": level})
                self.assertEqual(rec["state"], "succeeded", rec)
                self.assertActionsRecorded(rec)
                self.assertEqual(self.calls()[0]["cmdlet"], "Set-ActiveSyncOrganizationSettings")
                self.assertEqual(self.calls()[0]["parameters"], {"DefaultAccessLevel": name})
                self.assertEqual(self.mock.org()["default_access_level"], name)
        finally:
            self.run_cmd({"id": self.cid("org"), "type": "org.set_default_access",
                          "level": "allow"})

    def test_inventory_sync_of_one_mailbox(self):
        mbx = self.new_mailbox()
        for d in ("ApplINV00001", "androidinv02", "WinMailInv03"):
            self.new_device(mbx, d)
        rec = self.run_cmd({"id": self.cid("inv"), "type": "inventory.sync", "mode": "full",
                            "mailbox": mbx})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["result"]["devices"], 3, rec)
        self.assertEqual(rec["result"]["mode"], "full", rec)
        calls = self.calls()
        self.assertEqual([c["cmdlet"] for c in calls], [self.GET])
        self.assertEqual(calls[0]["parameters"], {"Mailbox": mbx, "ResultSize": "Unlimited"})

    def test_every_type_in_one_batch(self):
        """All command types at once over several mailboxes; only this version's cmdlets."""
        a, b = self.new_mailbox(), self.new_mailbox()
        self.new_device(a, "ApplBATCH001")
        self.new_device(a, "ApplBATCH002")
        self.new_device(b, "ApplBATCH003")
        cmds = [
            {"type": "device.allow", "mailbox": a, "device_id": "ApplBATCH001"},
            {"type": "device.block", "mailbox": a, "device_id": "Rogue1"},
            {"type": "device.unlist", "mailbox": a, "device_id": "Rogue2"},
            {"type": "device.wipe", "mailbox": a, "device_id": "ApplBATCH002",
             "account_only": False},
            {"type": "device.wipe_cancel", "mailbox": a, "device_id": "ApplBATCH002"},
            {"type": "device.remove", "mailbox": b, "device_id": "ApplBATCH003"},
            {"type": "mailbox.set", "mailbox": b, "activesync_enabled": False},
            {"type": "mailbox.set_devices", "mailbox": b, "allowed": ["Good1"],
             "blocked": ["Bad1"]},
            {"type": "org.set_default_access", "level": "allow"},
        ]
        for c in cmds:
            c["id"] = self.cid("all")
        final = self.agent.run_batch(cmds)
        for rec in final.values():
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(rec["attempts"], 1, rec)
        self.assertVersionNames()
        self.assertEqual(self.lists(a), (["ApplBATCH001"], ["Rogue1"]))
        self.assertEqual(self.lists(b), (["Good1"], ["Bad1"]))
        self.assertEqual(self.mock.device(a, "ApplBATCH002")["wipe"]["status"], "DeviceOk")
        self.assertEqual(self.mock.mailbox(b)["devices"], [])
        self.assertFalse(self.mock.mailbox(b)["activesync_enabled"])
        names = self.cmdlets()
        self.assertEqual(names.count(self.CLEAR), 2)
        self.assertEqual(names.count(self.REMOVE), 1)
        # a's three list edits are one Set-CASMailbox; b's mailbox.set and set_devices two
        self.assertEqual(names.count("Set-CASMailbox"), 3)


class Errors(Base):
    """Permanent errors fail at once with a stable code; transient ones retry, boundedly."""

    def test_unknown_mailbox(self):
        ghost = addr("ghost%d" % next(self._boxes))
        cmds = [
            {"type": "device.allow", "mailbox": ghost, "device_id": "G1"},
            {"type": "device.block", "mailbox": ghost, "device_id": "G2"},
            {"type": "device.unlist", "mailbox": ghost, "device_id": "G3"},
            {"type": "mailbox.set_devices", "mailbox": ghost, "allowed": ["G4"], "blocked": []},
            {"type": "device.wipe", "mailbox": ghost, "device_id": "G5", "account_only": False},
            {"type": "device.wipe_cancel", "mailbox": ghost, "device_id": "G5"},
            {"type": "device.remove", "mailbox": ghost, "device_id": "G5"},
            {"type": "mailbox.set", "mailbox": ghost, "activesync_enabled": True},
        ]
        for c in cmds:
            c["id"] = self.cid("ghost")
        final = self.agent.run_batch(cmds)
        for c in cmds:
            rec = final[c["id"]]
            self.assertFailed(rec, "mailbox_not_found",
                              exchange_type="ManagementObjectNotFoundException")
            self.assertIn(ghost, rec["error"]["exchange"]["message"])
        calls = self.calls()
        self.assertVersionNames(calls)
        for c in calls:
            self.assertIn(ghost, (c["parameters"].get("Identity"), c["parameters"].get("Mailbox")))
            self.assertNotIn(c["cmdlet"], (self.CLEAR, self.REMOVE))
        names = [c["cmdlet"] for c in calls]
        # the four list edits were read once together; each device command looked the mailbox up
        self.assertEqual(names.count("Get-CASMailbox"), 1)
        self.assertEqual(names.count(self.GET), 3)
        self.assertEqual(names.count("Set-CASMailbox"), 1)  # mailbox.set's own
        self.assertQuiet()

    def test_unknown_device(self):
        mbx = self.new_mailbox()
        self.new_device(mbx, "ApplKNOWN001")
        cmds = [
            {"type": "device.wipe", "mailbox": mbx, "device_id": "ApplNOPE0001",
             "account_only": False},
            {"type": "device.wipe_cancel", "mailbox": mbx, "device_id": "ApplNOPE0001"},
            {"type": "device.remove", "mailbox": mbx, "device_id": "ApplNOPE0001"},
        ]
        if self.PROFILE in ("2016", "online"):
            cmds.append({"type": "device.wipe", "mailbox": mbx, "device_id": "ApplNOPE0001",
                         "account_only": True})
        for c in cmds:
            c["id"] = self.cid("nodev")
        final = self.agent.run_batch(cmds)
        for c in cmds:
            rec = final[c["id"]]
            self.assertFailed(rec, "device_not_found")
            self.assertIn("ApplNOPE0001", rec["error"]["message"])
        self.assertEqual(self.cmdlets(), [self.GET] * len(cmds))
        self.assertEqual(self.mock.device(mbx, "ApplKNOWN001")["wipe"]["status"], "DeviceOk")
        self.assertEqual(self.mock.mailbox(mbx)["devices"], ["ApplKNOWN001"])
        self.assertQuiet()

    def test_unknown_policy_is_not_a_missing_mailbox(self):
        mbx = self.new_mailbox()
        rec = self.run_cmd({"id": self.cid("pol"), "type": "mailbox.set", "mailbox": mbx,
                            "policy": "No Such Policy"})
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(rec["attempts"], 1, rec)
        self.assertIn("No Such Policy", rec["error"]["exchange"]["message"])
        # The mailbox exists; the console must not be told it does not.
        self.assertNotEqual(rec["error"]["code"], "mailbox_not_found", rec)
        self.assertEqual(rec["error"]["code"], "invalid_argument", rec)

    def test_hidden_cmdlet(self):
        mbx = self.new_mailbox()
        self.new_device(mbx, "ApplRBAC0001")
        self.mock.faults({"rbac": {"hide_cmdlets": [self.CLEAR,
                                                    "Set-ActiveSyncOrganizationSettings"]}})
        before = self.mock.org()["default_access_level"]
        cmds = [{"id": self.cid("rbac"), "type": "device.wipe", "mailbox": mbx,
                 "device_id": "ApplRBAC0001", "account_only": False},
                {"id": self.cid("rbac"), "type": "org.set_default_access", "level": "block"}]
        final = self.agent.run_batch(cmds)
        for c in cmds:
            rec = final[c["id"]]
            self.assertFailed(rec, "unsupported", exchange_type="CommandNotFoundException")
        self.assertIn(self.CLEAR, final[cmds[0]["id"]]["error"]["exchange"]["message"])
        hidden = [c for c in self.calls() if c["cmdlet"] in (self.CLEAR,
                                                             "Set-ActiveSyncOrganizationSettings")]
        self.assertEqual(len(hidden), 2, hidden)
        self.assertTrue(all(c["status"] == "Failed" or c["errors"] for c in hidden), hidden)
        self.assertEqual(self.mock.device(mbx, "ApplRBAC0001")["wipe"]["status"], "DeviceOk")
        self.assertEqual(self.mock.org()["default_access_level"], before)
        self.assertQuiet()

    def test_hidden_parameters(self):
        mbx = self.new_mailbox()
        self.new_device(mbx, "ApplRBAC0002")
        # The role lacks -ActiveSyncMailboxPolicy, and Remove-* keeps only -Identity (no
        # -Confirm, as Set-ManagementRoleEntry -Parameters Identity would leave it).
        self.mock.faults({"rbac": {
            "hide_parameters": [{"cmdlet": "Set-CASMailbox",
                                 "parameter": "ActiveSyncMailboxPolicy"}],
            "allow_only": [{"cmdlet": self.REMOVE, "parameters": ["Identity"]}]}})
        cmds = [{"id": self.cid("param"), "type": "mailbox.set", "mailbox": mbx,
                 "activesync_enabled": False, "policy": None},
                {"id": self.cid("param"), "type": "device.remove", "mailbox": mbx,
                 "device_id": "ApplRBAC0002"}]
        final = self.agent.run_batch(cmds)
        r0, r1 = final[cmds[0]["id"]], final[cmds[1]["id"]]
        self.assertFailed(r0, "unsupported", exchange_type="ParameterBindingException")
        self.assertIn("'ActiveSyncMailboxPolicy'", r0["error"]["exchange"]["message"])
        self.assertFailed(r1, "unsupported", exchange_type="ParameterBindingException")
        self.assertIn("'Confirm'", r1["error"]["exchange"]["message"])
        self.assertTrue(self.mock.mailbox(mbx)["activesync_enabled"])  # nothing half-applied
        self.assertEqual(self.mock.mailbox(mbx)["devices"], ["ApplRBAC0002"])
        self.assertQuiet()

    def test_write_scope(self):
        mbx = self.new_mailbox()
        self.new_device(mbx, "ApplSCOP0001")
        self.mock.faults({"write_scope": {"mailbox": mbx, "on": True}})
        cmds = [{"id": self.cid("scope"), "type": "device.block", "mailbox": mbx,
                 "device_id": "ApplSCOP0001"},
                {"id": self.cid("scope"), "type": "device.wipe", "mailbox": mbx,
                 "device_id": "ApplSCOP0001", "account_only": False},
                {"id": self.cid("scope"), "type": "mailbox.set", "mailbox": mbx,
                 "activesync_enabled": False}]
        final = self.agent.run_batch(cmds)
        for c in cmds:
            rec = final[c["id"]]
            self.assertFailed(rec, "permission_denied", exchange_type="ADScopeException")
            self.assertIn("write scope", rec["error"]["exchange"]["message"])
        self.assertEqual(self.lists(mbx), ([], []))
        self.assertEqual(self.mock.device(mbx, "ApplSCOP0001")["wipe"]["status"], "DeviceOk")
        self.assertTrue(self.mock.mailbox(mbx)["activesync_enabled"])
        self.assertQuiet()

    def throttled_then_ok(self, cmd, cmdlet, next_k, delay_ms, as_):
        """cmdlet is refused with the quota text naming delay_ms for its next next_k calls."""
        self.mock.faults({"quota": {"cmdlet": cmdlet, "next_k": next_k, "delay_ms": delay_ms,
                                    "as": as_}})
        waits = []

        def watch(rec):
            if rec["state"] == "retrying" and rec.get("next_attempt_at"):
                waits.append(rec)
        rec = self.run_cmd(cmd, watch=watch)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], next_k + 1, rec)
        self.assertNotIn("error", rec)
        # while waiting the last error was shown, and the wait honoured the named delay
        self.assertTrue(waits, "never saw the command retrying")
        # (The retry is due delay_ms after the failure was seen; updated_at is written a little
        # later, so allow for that. Backoff alone would be at most RETRY_MAX_MS.)
        self.assertGreater(delay_ms - JOURNAL_SLACK_MS, RETRY_MAX_MS)
        for w in waits:
            self.assertEqual(w["error"]["code"], "throttled", w)
            self.assertIn("%d milliseconds" % delay_ms, json.dumps(w["error"]))
            self.assertGreaterEqual(ms(w["next_attempt_at"]) - ms(w["updated_at"]),
                                    delay_ms - JOURNAL_SLACK_MS, w)
            self.assertGreaterEqual(ms(w["next_attempt_at"]) - ms(w["started_at"]), delay_ms, w)
        self.assertGreaterEqual(ms(rec["finished_at"]) - ms(rec["created_at"]),
                                next_k * delay_ms - 10, rec)
        sent = [c for c in self.calls() if c["cmdlet"] == cmdlet]
        self.assertEqual([c["status"] for c in sent], ["Failed"] * next_k + ["Completed"], sent)
        # a failed pipeline carries Exchange's exception: the agent shows the type it raised
        if as_ == "error":
            for w in waits:
                self.assertEqual(w["error"]["exchange"]["type"],
                                 sent[0]["error"]["exception_type"], w)
        return rec

    def test_throttled_with_named_delay_then_succeeds(self):
        mbx = self.new_mailbox()
        rec = self.throttled_then_ok({"id": self.cid("thr"), "type": "device.block",
                                      "mailbox": mbx, "device_id": "ThrottledPhone"},
                                     "Set-CASMailbox", 2, 600, "fault")
        self.assertEqual(self.lists(mbx), ([], ["ThrottledPhone"]))
        # each attempt re-read the lists before its Set
        self.assertEqual(self.cmdlets(), ["Get-CASMailbox", "Set-CASMailbox"] * 3)
        self.assertActionsRecorded(rec, self.calls()[-2:])

    def test_throttled_pipeline_error_then_succeeds(self):
        try:
            self.throttled_then_ok({"id": self.cid("thr"), "type": "org.set_default_access",
                                    "level": "quarantine"},
                                   "Set-ActiveSyncOrganizationSettings", 1, 600, "error")
            self.assertEqual(self.mock.org()["default_access_level"], "Quarantine")
        finally:
            self.mock.faults_reset()
            self.run_cmd({"id": self.cid("org"), "type": "org.set_default_access",
                          "level": "allow"})

    def test_throttled_until_attempts_run_out(self):
        mbx = self.new_mailbox()
        self.new_device(mbx, "ApplTHRO0001")
        self.mock.faults({"quota": {"cmdlet": self.REMOVE, "next_k": 1000, "delay_ms": 40}})
        rec = self.run_cmd({"id": self.cid("thr"), "type": "device.remove", "mailbox": mbx,
                            "device_id": "ApplTHRO0001"})
        self.assertFailed(rec, "throttled", attempts=MAX_ATTEMPTS)
        if self.PROFILE != "online":  # Online names its delay in Retry-After, not in the text
            self.assertIn("40 milliseconds", rec["error"]["message"])
        self.assertEqual(self.cmdlets(), [self.GET, self.REMOVE] * MAX_ATTEMPTS)
        self.assertEqual(self.mock.mailbox(mbx)["devices"], ["ApplTHRO0001"])
        self.assertQuiet()

    def test_commands_per_shell_limit_recycles_the_shell(self):
        """WinRM's "maximum number of concurrent commands per shell has been exceeded" holds for
        as long as the shell lives (exchange-semantics.md 13: recycle the pool); retrying in the
        same shell can never succeed."""
        if self.PROFILE == "online":
            self.skipTest("Exchange Online (REST) has no shells")
        mbx = self.new_mailbox()
        self.mock.faults({"commands_per_shell": 2})
        cmds = [{"id": self.cid("cps"), "type": "device.allow", "mailbox": mbx,
                 "device_id": "PhoneCps%d" % i} for i in range(4)]
        final = {}
        for c in cmds:  # one at a time: each is at least one Command in the shell
            final[c["id"]] = self.run_cmd(c)
        for c in cmds:
            self.assertEqual(final[c["id"]]["state"], "succeeded", final[c["id"]])
        self.assertEqual(self.lists(mbx), (sorted(c["device_id"] for c in cmds), []))

    def test_micro_delay_warning_is_not_a_failure(self):
        mbx = self.new_mailbox()
        self.mock.faults({"micro_delay": {"cmdlet": "Set-CASMailbox", "every_nth": 1,
                                          "delay_ms": 150}})
        rec = self.run_cmd({"id": self.cid("micro"), "type": "device.block", "mailbox": mbx,
                            "device_id": "PhoneMicro"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], 1, rec)
        self.assertEqual(self.cmdlets(), ["Get-CASMailbox", "Set-CASMailbox"])
        self.assertEqual(self.lists(mbx), ([], ["PhoneMicro"]))

    def test_http_errors_are_retried(self):
        mbx = self.new_mailbox()
        self.mock.faults({"http_error": {"status": 503, "count": 1}})
        rec = self.run_cmd({"id": self.cid("503"), "type": "device.allow", "mailbox": mbx,
                            "device_id": "Phone503"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], 2, rec)
        self.assertEqual(self.lists(mbx), (["Phone503"], []))

    def test_unreachable_until_attempts_run_out(self):
        mbx = self.new_mailbox()
        self.mock.faults({"drop_connections": {"count": 1000, "when": "before"}})
        rec = self.run_cmd({"id": self.cid("drop"), "type": "device.allow", "mailbox": mbx,
                            "device_id": "PhoneDrop"})
        self.assertFailed(rec, "exchange_unreachable", attempts=MAX_ATTEMPTS)
        self.assertEqual(self.calls(), [])
        self.mock.faults_reset()
        self.assertQuiet()
        # Exchange is back: the next command goes through
        rec = self.run_cmd({"id": self.cid("drop"), "type": "device.allow", "mailbox": mbx,
                            "device_id": "PhoneDrop"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(self.lists(mbx), (["PhoneDrop"], []))

    def test_lost_shell_before_the_command(self):
        if self.PROFILE == "online":
            self.skipTest("Exchange Online (REST) has no shells")
        mbx = self.new_mailbox()
        self.mock.faults({"lose_shells": True})
        rec = self.run_cmd({"id": self.cid("lost"), "type": "device.block", "mailbox": mbx,
                            "device_id": "PhoneLost1"})
        # the Command met the lost shell, nothing ran: rerun at once on a new shell
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], 1, rec)
        self.assertEqual(self.lists(mbx), ([], ["PhoneLost1"]))

    def test_lost_shell_while_running(self):
        if self.PROFILE == "online":
            self.skipTest("Exchange Online (REST) has no shells")
        mbx = self.new_mailbox()
        self.set_lists(mbx, [], [])
        self.mock.faults({"latency": {"cmdlet": "Get-CASMailbox", "ms": 1500}})
        cmd = {"id": self.cid("lost"), "type": "device.block", "mailbox": mbx,
               "device_id": "PhoneLost2"}
        st, body = self.agent.post(cmd)
        self.assertEqual(st, 202, body)
        deadline = time.time() + 20
        while self.agent.command(cmd["id"])["state"] != "running" and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # inside the 1500 ms of Get-CASMailbox
        self.assertEqual(self.mock.faults({"lose_shells": True})["lost"], 1)
        self.mock.faults({"latency": {"cmdlet": "Get-CASMailbox", "ms": 0}})
        rec = self.agent.wait_final([cmd["id"]])[cmd["id"]]
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], 2, rec)
        self.assertEqual(self.lists(mbx), ([], ["PhoneLost2"]))
        # The first Get-CASMailbox still ends in the engine (the mock records it then); its
        # answer went nowhere, so only the second attempt's Set was sent.
        deadline = time.time() + 10
        while self.cmdlets().count("Get-CASMailbox") < 2 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.cmdlets().count("Get-CASMailbox"), 2, self.calls())
        self.assertEqual(self.cmdlets().count("Set-CASMailbox"), 1, self.calls())

    def test_lost_shell_every_attempt(self):
        if self.PROFILE == "online":
            self.skipTest("Exchange Online (REST) has no shells")
        mbx = self.new_mailbox()
        # Every attempt takes at least 500 ms in Exchange and shells are lost every 100 ms.
        self.mock.faults({"latency": {"cmdlet": None, "ms": 500}})
        stop = threading.Event()
        lost = []

        def loser():
            while not stop.is_set():
                try:
                    lost.append(self.mock.faults({"lose_shells": True}).get("lost", 0))
                except (OSError, ControlError):
                    pass
                stop.wait(0.1)
        th = threading.Thread(target=loser, daemon=True)
        th.start()
        try:
            rec = self.run_cmd({"id": self.cid("lost"), "type": "device.allow", "mailbox": mbx,
                                "device_id": "PhoneLost3"})
        finally:
            stop.set()
            th.join()
        self.assertFailed(rec, "exchange_unreachable", attempts=MAX_ATTEMPTS)
        self.assertGreater(sum(lost), 0)
        self.assertNotIn("Set-CASMailbox", self.cmdlets())
        self.mock.faults_reset()
        time.sleep(1.0)  # pipelines of lost shells still sleeping in the engine finish
        self.assertQuiet()
        rec = self.run_cmd({"id": self.cid("lost"), "type": "device.allow", "mailbox": mbx,
                            "device_id": "PhoneLost3"})
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["attempts"], 1, rec)
        self.assertEqual(self.lists(mbx), (["PhoneLost3"], []))


# Identifiers that carry PowerShell syntax, separators, control characters, Unicode or length.
HOSTILE_DEVICE_IDS = [
    "x'; Remove-Mailbox -Identity ceo -Confirm:$false; '",
    'x"; Remove-Mailbox ceo; "',
    "a;b", "$(Remove-Mailbox ceo)", "$x", "`$x", "a`nb", "a\nb", "a\r\nb", "a\rb", "a\tb",
    "a b", " a", "a ", "@{Add='x'}", "a|b", "a&b", "a>b", "a<b", "a,b", "a*", "a?", "a/b",
    "a\\b", "a@b", "a(b)", "a{b}", "a[b]", "a#b", "a%b", "a+b", "a=b", "a!b", "a~b", "a^b",
    "\u00e9t\u00e9", "\u0410ppl", "\u202egnp", "a\u00a0b", "a\u2028b", "\uff04(x)",
    "\U0001F600", "a\u0301", "\ufeffa", "x" * 65, "x" * 1024, "",
]
HOSTILE_MAILBOXES = [
    "o'brien@contoso.example", "o\u2019brien@contoso.example", '"a"@contoso.example',
    "a;b@contoso.example", "$(whoami)@contoso.example", "$a@contoso.example",
    "a`b@contoso.example", "a&b@contoso.example", "a|b@contoso.example", "{a}@contoso.example",
    "a(b)@contoso.example", "a<b>@contoso.example", "a,b@contoso.example",
    "a b@contoso.example", "a\n@contoso.example", "a\r\n@contoso.example",
    "user0001@contoso.example\n", "user0001@contoso.example; Remove-Mailbox ceo",
    "user0001@contoso.example'", "user0001@contoso.example`", " user0001@contoso.example",
    "\u00fc@contoso.example", "a@c\u00f6ntoso.example", "a@contoso.example\u202e",
    "a@b@contoso.example", "@contoso.example", "a@", ".a@contoso.example",
    "a.@contoso.example", "a..b@contoso.example", "a@-x.example", "a@x-.example",
    "a@x..example", "a@x_y.example", "a\\b@contoso.example", "a[b]@contoso.example",
    "a:b@contoso.example", "x" * 65 + "@contoso.example", "a@" + "b" * 64 + ".example",
    "a" * 1024 + "@contoso.example", "a@" + ("b" * 60 + ".") * 17 + "example", "",
]
HOSTILE_POLICIES = [
    "P'; Remove-Mailbox ceo; '", 'P"', "P;x", "P$x", "$(whoami)", "P`n", "P\n", "P\r",
    "P\t", "P\u0000", "P\u007f", "P\u0085", "P\u2018x\u2019", "P\u201cx\u201d", "P\u200bx",
    "P\u202ex", "P\u2028", "P\ufeff", " P", "P ", "", "x" * 257, "x" * 1024,
    "\u4e2d" * 86,  # 258 bytes
]
DEVICE_TYPES = ("device.allow", "device.block", "device.unlist", "device.wipe",
                "device.wipe_cancel", "device.remove")


class Hostile:
    """Hostile identifiers are either refused with a clear 400 naming the field (nothing stored,
    nothing sent to Exchange) or carried to Exchange exactly as sent: the mock records the same
    bytes, acts on the object of that name and on no other. Which of the two the validator
    chooses may differ per value; it must be the same for every command that takes the field."""

    def outcome(self, body, field, what):
        """POST body: True when refused (and the refusal checked), False when accepted (202)."""
        st, resp = self.agent.post(body)
        if st != 400:
            self.assertEqual(st, 202, "%r: %s %s" % (what, st, resp))
            return False
        self.assertIsInstance(resp, dict, resp)
        self.assertEqual(resp["status"], 400)
        self.assertTrue(resp.get("detail"), resp)
        if field is not None:
            self.assertEqual(resp.get("field"), field, "%r: %s" % (what, resp))
        ids = [c["id"] for c in body["commands"]] if "commands" in body else [body["id"]]
        for cid in ids:
            st, _, raw, _ = self.agent.request("GET", "/api/v1/commands/" + cid)
            self.assertEqual(st, 404, "%r was stored: %s" % (what, raw))
        return True

    def guard(self):
        """A mailbox with lists and a device that no hostile command may touch."""
        g = self.new_mailbox("guard")
        self.new_device(g, "GuardDev1")
        self.set_lists(g, ["GuardA"], ["GuardB"])
        return g

    def assertGuardIntact(self, g):
        self.assertEqual(self.lists(g), (["GuardA"], ["GuardB"]))
        self.assertEqual(self.mock.mailbox(g)["devices"], ["GuardDev1"])
        self.assertEqual(self.mock.device(g, "GuardDev1")["wipe"]["status"], "DeviceOk")

    def assertOnlyTouched(self, mailboxes, calls):
        """Every recorded call names one of these mailboxes or a device under one of them."""
        idents = {self.mock.mailbox(m)["identity"] for m in mailboxes}
        allowed = {self.GET, self.CLEAR, self.REMOVE, "Get-CASMailbox", "Set-CASMailbox"}
        for c in calls:
            self.assertIn(c["cmdlet"], allowed, c)
            p = c["parameters"]
            target = p.get("Mailbox", p.get("Identity"))
            if c["cmdlet"] in (self.CLEAR, self.REMOVE):
                # on-prem: <canonical name>/ExchangeActiveSyncDevices/...;
                # Online: <alias>\\ExchangeActiveSyncDevices\\...
                sep = "\\" if self.PROFILE == "online" else "/"
                self.assertTrue(any(target.startswith(i + sep + "ExchangeActiveSyncDevices" + sep)
                                    for i in idents), c)
            else:
                self.assertIn(target, mailboxes, c)

    def test_hostile_device_ids(self):
        g = self.guard()
        accepted, refused = {}, []  # mailbox -> (device id, command id); mailboxes
        for d in HOSTILE_DEVICE_IDS:
            mbx = self.new_mailbox("hd")
            first = {"id": self.cid("hd"), "type": "device.block", "mailbox": mbx,
                     "device_id": d}
            if not self.outcome(first, "device_id", d):
                accepted[mbx] = (d, first["id"])
                continue
            refused.append(mbx)
            for t in DEVICE_TYPES:
                self.assertTrue(self.outcome({"id": self.cid("hd"), "type": t, "mailbox": mbx,
                                              "device_id": d}, "device_id", d), (t, d))
            self.assertTrue(self.outcome({"id": self.cid("hd"), "type": "mailbox.set_devices",
                                          "mailbox": mbx, "allowed": ["Fine1", d],
                                          "blocked": []}, "allowed[1]", d))
            self.assertTrue(self.outcome({"id": self.cid("hd"), "type": "mailbox.set_devices",
                                          "mailbox": mbx, "allowed": [], "blocked": [d]},
                                         "blocked[0]", d))
            self.assertTrue(self.outcome({"commands": [
                {"id": self.cid("hd"), "type": "device.allow", "mailbox": mbx,
                 "device_id": "Fine2"},
                {"id": self.cid("hd"), "type": "device.block", "mailbox": mbx,
                 "device_id": d}]}, "commands[1].device_id", d))
        self.agent.wait_final([cid for _, cid in accepted.values()])
        self.assertEqual([c for c in self.calls() if c["parameters"].get("Identity") in refused],
                         [], "nothing refused may reach Exchange")
        self.check_device_ids_as_data(accepted)
        self.assertOnlyTouched(list(accepted) + [g], self.calls())
        self.assertGuardIntact(g)

    def check_device_ids_as_data(self, accepted):
        """accepted: {mailbox: (device id, id of its device.block, already posted)}. Every
        command type with that device ID, one batch per step over all the mailboxes."""
        def last_set(mbx):
            sets = [c for c in self.calls() if c["cmdlet"] == "Set-CASMailbox" and
                    c["parameters"]["Identity"] == mbx]
            return sets[-1]["parameters"]

        for mbx, (d, cid) in accepted.items():
            rec = self.agent.command(cid)
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(rec["command"]["device_id"], d)
            self.assertEqual(last_set(mbx), {"Identity": mbx, "ActiveSyncBlockedDeviceIDs":
                                             {"Add": [d]}}, repr(d))
            self.assertEqual(self.mock.mailbox(mbx)["blocked"], [d])
        steps = [
            ({"type": "device.allow"}, lambda d: {"ActiveSyncAllowedDeviceIDs": {"Add": [d]},
                                                  "ActiveSyncBlockedDeviceIDs": {"Remove": [d]}},
             lambda d: ([d], [])),
            ({"type": "device.unlist"}, lambda d: {"ActiveSyncAllowedDeviceIDs": {"Remove": [d]}},
             lambda d: ([], [])),
            ({"type": "mailbox.set_devices", "allowed": []},
             lambda d: {"ActiveSyncBlockedDeviceIDs": {"Add": [d]}}, lambda d: ([], [d])),
            ({"type": "mailbox.set_devices", "allowed": [], "blocked": []},
             lambda d: {"ActiveSyncBlockedDeviceIDs": {"Remove": [d]}}, lambda d: ([], [])),
        ]
        for extra, expect, state in steps:
            cmds = []
            for mbx, (d, _) in accepted.items():
                cmd = dict(extra, id=self.cid("hd"), mailbox=mbx)
                if extra["type"].startswith("device."):
                    cmd["device_id"] = d
                elif "blocked" not in extra:
                    cmd["blocked"] = [d]
                cmds.append(cmd)
            final = self.agent.run_batch(cmds)
            for cmd in cmds:
                self.assertEqual(final[cmd["id"]]["state"], "succeeded", final[cmd["id"]])
            for mbx, (d, _) in accepted.items():
                self.assertEqual(last_set(mbx), dict(expect(d), Identity=mbx), repr(d))
                st = self.mock.mailbox(mbx)
                self.assertEqual((st["allowed"], st["blocked"]), state(d), repr(d))
        # the device commands find the partnership of exactly that ID
        ident = {}
        for mbx, (d, _) in accepted.items():
            ident[mbx] = self.mock.sync(mbx, d, eas_version="16.1",
                                        device_type="iPhone")["identity"]
            self.assertTrue(ident[mbx].endswith("\u00a7" + d), ident[mbx])
        for t, status in (("device.wipe", "DeviceWipePending"), ("device.wipe_cancel", "DeviceOk"),
                          ("device.remove", None)):
            cmds = [{"id": self.cid("hd"), "type": t, "mailbox": mbx, "device_id": d}
                    for mbx, (d, _) in accepted.items()]
            if t == "device.wipe":
                for c in cmds:
                    c["account_only"] = False
            final = self.agent.run_batch(cmds)
            for cmd in cmds:
                self.assertEqual(final[cmd["id"]]["state"], "succeeded", final[cmd["id"]])
            want = self.REMOVE if t == "device.remove" else self.CLEAR
            for mbx, (d, _) in accepted.items():
                ops = [c for c in self.calls() if c["cmdlet"] == want and
                       c["parameters"]["Identity"] == ident[mbx]]
                self.assertTrue(ops, repr(d))
                p = dict(ops[-1]["parameters"])
                self.assertEqual(p.pop("Cancel", None), True if t == "device.wipe_cancel" else None)
                self.assertEqual(p, {"Identity": ident[mbx], "Confirm": False}, repr(d))
                if status:
                    self.assertEqual(self.mock.device(mbx, d)["wipe"]["status"], status, repr(d))
        for mbx in accepted:
            self.assertEqual(self.mock.mailbox(mbx)["devices"], [])

    def test_hostile_mailboxes(self):
        g = self.guard()
        accepted, refused = {}, []
        for v in HOSTILE_MAILBOXES:
            first = {"id": self.cid("hm"), "type": "device.block", "mailbox": v,
                     "device_id": "Dev1"}
            if v and len(v.encode()) <= 256:
                # the mailbox of exactly that name exists, for when it is accepted
                self.mock.engine("add_mailbox", alias="hm%d" % next(self._boxes), smtp=v)
            if not self.outcome(first, "mailbox", v):
                accepted[v] = first["id"]
                continue
            refused.append(v)
            for t in DEVICE_TYPES:
                self.assertTrue(self.outcome({"id": self.cid("hm"), "type": t, "mailbox": v,
                                              "device_id": "Fine1"}, "mailbox", v), (t, v))
            self.assertTrue(self.outcome({"id": self.cid("hm"), "type": "mailbox.set",
                                          "mailbox": v, "activesync_enabled": False},
                                         "mailbox", v))
            self.assertTrue(self.outcome({"id": self.cid("hm"), "type": "mailbox.set_devices",
                                          "mailbox": v, "allowed": [], "blocked": []},
                                         "mailbox", v))
        self.agent.wait_final(list(accepted.values()))
        self.assertEqual([c for c in self.calls() if c["parameters"].get("Identity") in refused],
                         [], "nothing refused may reach Exchange")
        for v, cid in accepted.items():
            rec = self.agent.command(cid)
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(rec["command"]["mailbox"], v)
            get, put = [c for c in self.calls() if c["parameters"].get("Identity") == v]
            self.assertEqual(get["parameters"], {"Identity": v})
            self.assertEqual(put["parameters"], {"Identity": v, "ActiveSyncBlockedDeviceIDs":
                                                 {"Add": ["Dev1"]}})
            self.assertEqual(self.mock.mailbox(v)["blocked"], ["Dev1"], repr(v))
            ident = self.mock.sync(v, "HostDev1", device_type="iPhone")["identity"]
            cmds = [{"type": "mailbox.set", "activesync_enabled": False},
                    {"type": "device.wipe", "device_id": "HostDev1", "account_only": False},
                    {"type": "device.remove", "device_id": "HostDev1"}]
            for c in cmds:
                c.update(id=self.cid("hm"), mailbox=v)
            final = self.agent.run_batch(cmds)
            for c in cmds:
                self.assertEqual(final[c["id"]]["state"], "succeeded", final[c["id"]])
            mine = [c for c in self.calls() if v in (c["parameters"].get("Identity"),
                                                     c["parameters"].get("Mailbox"))
                    or c["parameters"].get("Identity") == ident]
            self.assertEqual([(c["cmdlet"], c["parameters"]) for c in mine[2:]], [
                ("Set-CASMailbox", {"Identity": v, "ActiveSyncEnabled": False}),
                (self.GET, {"Mailbox": v}),
                (self.CLEAR, {"Identity": ident, "Confirm": False}),
                (self.GET, {"Mailbox": v}),
                (self.REMOVE, {"Identity": ident, "Confirm": False})], repr(v))
            st = self.mock.mailbox(v)
            self.assertFalse(st["activesync_enabled"])
            self.assertEqual(st["devices"], [])
        self.assertOnlyTouched(list(accepted) + [g], self.calls())
        self.assertGuardIntact(g)

    def test_hostile_notify_addresses(self):
        mbx = self.new_mailbox()
        self.new_device(mbx, "ApplNOTI0001")
        for v in HOSTILE_MAILBOXES:
            notify = [addr("ok"), v]
            cmd = {"id": self.cid("hn"), "type": "device.wipe", "mailbox": mbx,
                   "device_id": "ApplNOTI0001", "account_only": False, "notify": notify}
            if self.outcome(cmd, "notify[1]", v):
                continue
            rec = self.agent.wait_final([cmd["id"]])[cmd["id"]]
            self.assertEqual(rec["state"], "succeeded", rec)
            clear = [c for c in self.calls() if c["cmdlet"] == self.CLEAR][-1]
            self.assertEqual(clear["parameters"]["NotificationEmailAddresses"], notify)
            self.assertEqual(self.mock.device(mbx, "ApplNOTI0001")["wipe"]["notify"], notify)

    def test_hostile_policies(self):
        mbx = self.new_mailbox()
        for v in HOSTILE_POLICIES:
            cmd = {"id": self.cid("hp"), "type": "mailbox.set", "mailbox": mbx, "policy": v}
            if "\u0000" not in v and v and len(v.encode()) <= 256:
                self.mock.engine("add_policy", name=v)
            if self.outcome(cmd, None if "\u0000" in v else "policy", v):
                continue
            rec = self.agent.wait_final([cmd["id"]])[cmd["id"]]
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(self.calls()[-1]["parameters"], {"Identity": mbx,
                                                              "ActiveSyncMailboxPolicy": v})
            self.assertEqual(self.mock.mailbox(mbx)["policy"], v)

    def test_command_ids_are_strict(self):
        """The console's id never reaches Exchange, but it is held to its documented set."""
        for bad in ("a;b", "a'b", "a b", "$(x)", "a\nb", "\u00e9", "x" * 129, "x" * 1024, ""):
            st, resp = self.agent.post({"id": bad, "type": "device.allow",
                                        "mailbox": addr("a"), "device_id": "Fine1"})
            self.assertEqual(st, 400, (bad, resp))
            self.assertEqual(resp.get("field"), "id", (bad, resp))
        self.assertEqual(self.calls(), [])

    def test_wildcards_in_a_mailbox_are_not_patterns(self):
        """'*' and '?' are valid in an address but patterns to Exchange's -Identity: a command
        for one literal address must not read or change another mailbox."""
        base = "wild%d" % next(self._boxes)
        for local in (base + "a", base + "b"):
            self.mock.engine("add_mailbox", alias=local, smtp=addr(local))
        self.set_lists(addr(base + "a"), [], ["Victim1"])
        for pattern in (base + "*", base + "?"):
            cmd = {"id": self.cid("wild"), "type": "device.allow", "mailbox": addr(pattern),
                   "device_id": "Victim1"}
            st, resp = self.agent.post(cmd)
            if st == 400:
                self.assertEqual(resp.get("field"), "mailbox", resp)
                continue
            self.assertEqual(st, 202, resp)
            rec = self.agent.wait_final([cmd["id"]])[cmd["id"]]
            # no such mailbox: that is the only right answer for the literal address
            self.assertFailed(rec, "mailbox_not_found")
        self.assertEqual(self.lists(addr(base + "a")), ([], ["Victim1"]))
        self.assertEqual(self.lists(addr(base + "b")), ([], []))


# Identifiers that pass validation and must reach Exchange exactly as sent: every character the
# validator allows, lookalikes of CLIXML's _xHHHH_ escapes, maximum lengths, Unicode policies.
EDGE_LOCALS = ["q.!#%+-/=^_~", "_x0027__x003B__x0024_", "x" * 64]
EDGE_DEVICE_IDS = ["_x0024_x", "_x0027__x003B_", "_X000A_", ".", "-", "_", "a.b-c_D",
                   "Z" * 64, ("aZ09._-" * 10)[:64], "0"]
EDGE_POLICIES = [
    "Pol (whoami) & | < > { } [ ] @ # % ^ * ? ! ~ + = / \\ : , .",
    "\u00e9\u00e8 \u4e2d\u6587 \U0001F600 e\u0301 \u00a7 \u0410\u0411 \u05e9\u05dc\u05d5\u05dd",
    "_x0024_(x) _x0027_",
    "\u4e2d" * 85 + "x",  # 256 bytes of UTF-8
]


class AsData:
    """Values at the edge of what validation allows reach the mock byte for byte."""

    def edge_mailbox(self, local):
        n = next(self._boxes)
        alias = "edge%d" % n
        smtp = "%s@e%d.%s" % (local, n, DOMAIN)  # a domain of its own: the local part as given
        self.mock.engine("add_mailbox", alias=alias, smtp=smtp)
        self.assertEqual(self.mock.mailbox(smtp)["primary_smtp"], smtp)
        return smtp

    def test_edge_mailboxes_and_device_ids_reach_exchange_as_sent(self):
        long_domain = ".".join(["d" * 63, "e" * 63, "f" * 53, "example"])
        long_mbx = "m" * 64 + "@" + long_domain
        self.assertEqual(len(long_mbx), 254)
        mailboxes = [self.edge_mailbox(l) for l in EDGE_LOCALS]
        self.mock.engine("add_mailbox", alias="edge%d" % next(self._boxes), smtp=long_mbx)
        mailboxes.append(long_mbx)
        half = len(EDGE_DEVICE_IDS) // 2
        allowed, blocked = EDGE_DEVICE_IDS[:half], EDGE_DEVICE_IDS[half:]
        for mbx in mailboxes:
            self.mock.calls_reset()
            rec = self.run_cmd({"id": self.cid("edge"), "type": "mailbox.set_devices",
                                "mailbox": mbx, "allowed": allowed, "blocked": blocked})
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertActionsRecorded(rec)
            get, put = self.calls()
            self.assertEqual(get["parameters"], {"Identity": mbx})
            self.assertEqual(put["parameters"]["Identity"], mbx)
            self.assertEqual(sorted(put["parameters"]["ActiveSyncAllowedDeviceIDs"]["Add"]),
                             sorted(allowed))
            self.assertEqual(sorted(put["parameters"]["ActiveSyncBlockedDeviceIDs"]["Add"]),
                             sorted(blocked))
            st = self.mock.mailbox(mbx)
            self.assertEqual(sorted(st["allowed"]), sorted(allowed))
            self.assertEqual(sorted(st["blocked"]), sorted(blocked))
            # and back: each single-device command names the device exactly
            self.mock.calls_reset()
            cmds = [{"id": self.cid("edge"), "type": "device.unlist", "mailbox": mbx,
                     "device_id": d} for d in EDGE_DEVICE_IDS]
            final = self.agent.run_batch(cmds)
            for r in final.values():
                self.assertEqual(r["state"], "succeeded", r)
            put = [c for c in self.calls() if c["cmdlet"] == "Set-CASMailbox"]
            self.assertEqual(len(put), 1, put)
            self.assertEqual(sorted(put[0]["parameters"]["ActiveSyncAllowedDeviceIDs"]["Remove"]),
                             sorted(allowed))
            self.assertEqual(sorted(put[0]["parameters"]["ActiveSyncBlockedDeviceIDs"]["Remove"]),
                             sorted(blocked))
            self.assertEqual(self.lists(mbx), ([], []))

    def test_edge_device_ids_in_device_commands(self):
        mbx = self.edge_mailbox(EDGE_LOCALS[1])
        wiped, removed = "_x0024_x", ("aZ09._-" * 10)[:64]
        devs = {d: self.new_device(mbx, d) for d in (wiped, removed)}
        self.assertEqual(devs[wiped]["device_id"], wiped)
        for t, d in (("device.wipe", wiped), ("device.wipe_cancel", wiped),
                     ("device.remove", removed)):
            self.mock.calls_reset()
            cmd = {"id": self.cid("edge"), "type": t, "mailbox": mbx, "device_id": d}
            if t == "device.wipe":
                cmd.update(account_only=False, notify=[addr(EDGE_LOCALS[0]), addr("x" * 64)])
            rec = self.run_cmd(cmd)
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertActionsRecorded(rec)
            get, op = self.calls()
            self.assertEqual(get["parameters"], {"Mailbox": mbx})
            self.assertEqual(op["parameters"]["Identity"], devs[d]["identity"])
            if t == "device.wipe":
                self.assertEqual(op["parameters"]["NotificationEmailAddresses"], cmd["notify"])
                w = self.mock.device(mbx, wiped)["wipe"]
                self.assertEqual((w["status"], w["notify"]), ("DeviceWipePending", cmd["notify"]))
        self.assertEqual(self.mock.device(mbx, wiped)["wipe"]["status"], "DeviceOk")
        self.assertEqual(self.mock.mailbox(mbx)["devices"], [wiped])

    def test_unicode_policy_names_reach_exchange_as_sent(self):
        mbx = self.new_mailbox()
        for name in EDGE_POLICIES:
            self.assertLessEqual(len(name.encode()), 256)
            self.mock.engine("add_policy", name=name)
            self.mock.calls_reset()
            rec = self.run_cmd({"id": self.cid("upol"), "type": "mailbox.set", "mailbox": mbx,
                                "policy": name})
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(rec["command"]["policy"], name)
            self.assertActionsRecorded(rec)
            self.assertEqual(self.calls()[0]["parameters"]["ActiveSyncMailboxPolicy"], name)
            self.assertEqual(self.mock.mailbox(mbx)["policy"].encode(), name.encode())


class Ops2010(Operations, Errors, Hostile, AsData, unittest.TestCase):
    PROFILE = "2010"


class Ops2013(Operations, Errors, Hostile, AsData, unittest.TestCase):
    PROFILE = "2013"


class Ops2016(Operations, Errors, Hostile, AsData, unittest.TestCase):
    PROFILE = "2016"


class OpsOnline(Operations, Errors, Hostile, AsData, unittest.TestCase):
    """The same console commands against Exchange Online (REST InvokeCommand, app-only token)."""
    PROFILE = "online"


class Failover(unittest.TestCase):
    """Two CAS servers of one org behind one target (priority scheduling): one is taken down and
    brought back through the mock's control API while commands keep flowing; every command
    succeeds, the status page follows each server's state, and traffic returns to the first
    server once its health probes succeed again."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ops-failover-", dir=_TMP)
        mdir = os.path.join(self.tmp, "mock")
        self.mock = H.Mock(mdir, profile="2016", mailboxes=5, devices=5, seed=3,
                           extra=["--listen", "127.0.0.1:0"])
        with open(os.path.join(mdir, "mock-ports.json")) as f:
            ports = json.load(f)["exchange_all"]
        self.assertEqual(len(ports), 2)
        self.urls = ["http://%s:%d/PowerShell" % (self.mock.host, p) for p in ports]
        self.agent = H.Agent(os.path.join(self.tmp, "agent"),
                             ["--max-attempts", "5", "--retry-base-ms", "100",
                              "--retry-max-ms", "500"], pki=_PKI)
        doc = {"target": {"kind": "onprem", "servers": [{"url": u} for u in self.urls],
                          "scheduling": "priority", "dead_threshold": 1, "failure_window_ms": 10000, "dead_time_ms": 1000,
                          "health_interval_s": 10, "live_threshold": 1, "max_concurrency": 2,
                          "connect_timeout_ms": 2000}}
        doc["target"].update(onprem_auth())
        st, _, raw, _ = self.agent.request("PUT", "/api/v1/config", doc)
        self.assertEqual(st, 200, raw)

    def tearDown(self):
        self.agent.stop()
        self.mock.stop()

    def servers(self):
        st, body, raw, _ = self.agent.request("GET", "/api/v1/status")
        self.assertEqual(st, 200, raw)
        return {s["url"]: s for s in body["target"]["servers"]}

    def wait_state(self, url, state, timeout):
        end = time.time() + timeout
        while time.time() < end:
            s = self.servers()[url]
            if s["state"] == state:
                return s
            time.sleep(0.2)
        self.fail("%s never became %s: %r" % (url, state, self.servers()))

    def shells_on(self, listener):
        return [s for s in self.mock.get("/control/shells") if s["listener"] == listener]

    def test_one_server_down_and_back(self):
        mbx = "user0001@contoso.example"
        posted, stop = [], threading.Event()

        def flow():
            n = 0
            while not stop.is_set():
                cmd = {"id": "fo-%d" % n, "type": "device.allow" if n % 2 else "device.block",
                       "mailbox": mbx, "device_id": "FailDev%03d" % n}
                st, resp = self.agent.post(cmd)
                if st == 202:
                    posted.append(cmd)
                n += 1
                time.sleep(0.1)

        t = threading.Thread(target=flow)
        t.start()
        try:
            time.sleep(1.0)
            # (a slow build - sanitizers, Kerberos handshakes - may need longer for the first
            # shell)
            deadline = time.time() + 20
            while not self.shells_on(0) and time.time() < deadline:
                time.sleep(0.1)
            self.assertEqual({u: s["state"] for u, s in self.servers().items()},
                             {u: "reachable" for u in self.urls})
            self.assertTrue(self.shells_on(0), "priority: the first server takes the traffic")
            self.mock.call("POST", "/control/listener/0/down")
            down = self.wait_state(self.urls[0], "unreachable", 15)
            self.assertEqual(down["last_error"]["code"], "exchange_unreachable", down)
            self.assertEqual(self.servers()[self.urls[1]]["state"], "reachable")
            time.sleep(1.5)  # commands keep flowing on the second server
            on_second = len(posted)
            self.mock.call("POST", "/control/listener/0/up")
            self.wait_state(self.urls[0], "reachable", 25)  # the next health round revives it
            time.sleep(1.0)
        finally:
            stop.set()
            t.join()
        final = self.agent.wait_final([c["id"] for c in posted], timeout=60)
        for c in posted:
            self.assertEqual(final[c["id"]]["state"], "succeeded", final[c["id"]])
        self.assertGreater(on_second, 10)
        st = self.mock.mailbox(mbx)
        for c in posted:
            want = "allowed" if c["type"] == "device.allow" else "blocked"
            self.assertIn(c["device_id"], st[want], c)
        # Back on the first server: its listener has a shell again after coming up.
        self.assertTrue(self.shells_on(0), self.mock.get("/control/shells"))

if __name__ == "__main__":
    H.set_binaries(easgate=sys.argv.pop(1), mock=sys.argv.pop(1), pki_script=sys.argv.pop(1))
    unittest.main(verbosity=2)
