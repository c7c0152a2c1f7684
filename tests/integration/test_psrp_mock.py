#!/usr/bin/env python3
"""The PowerShell remoting client end to end against the mock Exchange.

Starts easgate-mock-exchange on 127.0.0.1 with port 0 (ports from its --ports-file) and drives it
with the real C client: easgate-ps for single cmdlets in each version profile, and the easgate
daemon with its psrp bridge for console commands. What the mock received is read back through
its control API.

Usage: test_psrp_mock.py EASGATE EASGATE_PS MOCK   (ctest passes all three)
Standard library only.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import harness as H
from harness import PASSWORD, Mock


class Profile2016(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="easgate-psrp-")
        cls.mock = Mock(os.path.join(cls.tmp, "mock"), devices=1500, mailboxes=300)

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_get_casmailbox_object(self):
        code, objs, err = self.mock.ps("Get-CASMailbox", "-p", "Identity=user0001@contoso.example")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(objs), 1)
        o = objs[0]
        self.assertIn("Microsoft.Exchange.Data.Directory.Management.CASMailbox", o["_types"])
        self.assertIn("SMTP:user0001@contoso.example", o["EmailAddresses"])
        self.assertIn("ActiveSyncAllowedDeviceIDs", o)

    def test_set_casmailbox_add_remove_hashtable(self):
        mbx = "user0002@contoso.example"
        code, _, err = self.mock.ps("Set-CASMailbox", "-p", "Identity=" + mbx, "-p",
                                    "ActiveSyncAllowedDeviceIDs:add=DevA,DevB", "-p",
                                    "ActiveSyncBlockedDeviceIDs:add=DevC")
        self.assertEqual(code, 0, err)
        code, _, err = self.mock.ps("Set-CASMailbox", "-p", "Identity=" + mbx, "-p",
                                    "ActiveSyncAllowedDeviceIDs:remove=DevA")
        self.assertEqual(code, 0, err)
        code, objs, err = self.mock.ps("Get-CASMailbox", "-p", "Identity=" + mbx)
        self.assertEqual(objs[0]["ActiveSyncAllowedDeviceIDs"], ["DevB"])
        self.assertEqual(objs[0]["ActiveSyncBlockedDeviceIDs"], ["DevC"])
        sets = [c for c in self.mock.calls() if c["cmdlet"] == "Set-CASMailbox"]
        self.assertEqual(sets[-1]["parameters"]["ActiveSyncAllowedDeviceIDs"], {"Remove": ["DevA"]})
        self.assertEqual(sets[-2]["parameters"]["ActiveSyncAllowedDeviceIDs"],
                         {"Add": ["DevA", "DevB"]})

    def test_get_mobiledevice_unlimited_streams_every_device(self):
        code, objs, err = self.mock.ps("Get-MobileDevice", "-p", "ResultSize=Unlimited")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(objs), 1500)
        self.assertEqual(len({o["DeviceId"] for o in objs}), 1500)

    def test_default_result_size_truncates_with_warning(self):
        code, objs, err = self.mock.ps("Get-MobileDevice")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(objs), 1000)
        self.assertIn("warning:", err)

    def test_not_found_is_an_error_record(self):
        code, objs, err = self.mock.ps("Get-CASMailbox", "-p", "Identity=nobody@contoso.example")
        self.assertEqual(code, 1)
        self.assertEqual(objs, [])
        self.assertIn("ManagementObjectNotFoundException", err)

    def test_wrong_password_is_refused(self):
        code, _, err = self.mock.ps("Get-CASMailbox", password_file=self.mock.badpw)
        self.assertEqual(code, 3, err)
        self.assertIn("401", err)
        self.assertNotIn("wrong", err)

    def test_clear_without_confirm_fails(self):
        dev = self.mock.ps("Get-MobileDevice", "-p", "ResultSize=1")[1][0]
        code, _, err = self.mock.ps("Clear-MobileDevice", "-p", "Identity=" + dev["Identity"])
        self.assertEqual(code, 1)
        self.assertIn("prompts the user failed", err)

    def test_parallel_pipelines(self):
        procs = [subprocess.Popen(
            [H.BIN["easgate_ps"], "--url", self.mock.url, "--user", H.USER, "--password-file",
             self.mock.pwfile, "--allow-http-basic", "--", "Get-MobileDevice", "-p",
             "ResultSize=200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, err)
            self.assertEqual(len(out.splitlines()), 200)


class CmdletMatrix(unittest.TestCase):
    """easgate-ps drives every cmdlet of the mock in each on-prem profile (Exchange Online is REST
    only; its front end is tested by the mock's own test_rest.py)."""

    VERSIONS = {"2010": "Version 14.3", "2013": "Version 15.0", "2016": "Version 15.1"}

    def run_profile(self, profile):
        tmp = tempfile.mkdtemp(prefix="easgate-matrix-")
        mock = Mock(os.path.join(tmp, "m"), profile=profile)
        legacy = profile == "2010"
        dev = "ActiveSyncDevice" if legacy else "MobileDevice"
        mbx = "user0001@contoso.example"

        def ok(*words):
            code, objs, err = mock.ps(*words)
            self.assertEqual(code, 0, "%s %s: %s" % (profile, words[0], err))
            return objs

        try:
            self.assertTrue(ok("Get-CASMailbox", "-p", "Identity=" + mbx))
            ok("Set-CASMailbox", "-p", "Identity=" + mbx, "-p",
               "ActiveSyncBlockedDeviceIDs:add=BadPhone1")
            self.assertIn("BadPhone1", ok("Get-CASMailbox", "-p", "Identity=" + mbx)[0]
                          ["ActiveSyncBlockedDeviceIDs"])
            devices = ok("Get-" + dev, "-p", "Mailbox=" + mbx)
            self.assertTrue(devices)
            self.assertTrue(ok("Get-%sStatistics" % dev, "-p", "Mailbox=" + mbx))
            ident = devices[0]["Identity"]
            ok("Clear-" + dev, "-p", "Identity=" + ident, "-p", "Confirm:bool=false")
            ok("Clear-" + dev, "-p", "Identity=" + ident, "-p", "Cancel:switch", "-p",
               "Confirm:bool=false")
            ok("Remove-" + dev, "-p", "Identity=" + ident, "-p", "Confirm:bool=false")
            self.assertEqual(len(ok("Get-" + dev, "-p", "Mailbox=" + mbx)), len(devices) - 1)
            self.assertEqual(len(ok("Get-ActiveSyncOrganizationSettings")), 1)
            ok("Set-ActiveSyncOrganizationSettings", "-p", "DefaultAccessLevel=Quarantine")
            self.assertEqual(mock.get("/control/state/org")["default_access_level"], "Quarantine")
            ok("New-ActiveSyncDeviceAccessRule", "-p", "QueryString=iPhone", "-p",
               "Characteristic=DeviceType", "-p", "AccessLevel=Allow")
            rules = ok("Get-ActiveSyncDeviceAccessRule")
            self.assertEqual(len(rules), 1)
            ok("Remove-ActiveSyncDeviceAccessRule", "-p", "Identity=" + rules[0]["Identity"],
               "-p", "Confirm:bool=false")
            self.assertEqual(ok("Get-ActiveSyncDeviceAccessRule"), [])
            server = ok("Get-ExchangeServer")
            self.assertTrue(server[0]["AdminDisplayVersion"].startswith(self.VERSIONS[profile]))
            if legacy:  # the 2013+ names do not exist on 2010
                code, _, err = mock.ps("Get-MobileDevice")
                self.assertEqual(code, 1)
                self.assertIn("CommandNotFoundException", err)
            recorded = {c["cmdlet"] for c in mock.calls()}
            self.assertGreaterEqual(len(recorded), 12, recorded)
        finally:
            mock.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_2010(self):
        self.run_profile("2010")

    def test_2013(self):
        self.run_profile("2013")

    def test_2016(self):
        self.run_profile("2016")


class OlderProfiles(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="easgate-psrp-old-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_2013_has_no_account_only(self):
        mock = Mock(os.path.join(self.tmp, "m2013"), profile="2013")
        try:
            dev = mock.ps("Get-MobileDevice", "-p", "ResultSize=1")[1][0]
            code, _, err = mock.ps("Clear-MobileDevice", "-p", "Identity=" + dev["Identity"],
                                   "-p", "AccountOnly:switch", "-p", "Confirm:bool=false")
            self.assertEqual(code, 1)
            self.assertIn("A parameter cannot be found that matches parameter name 'AccountOnly'",
                          err)
        finally:
            mock.stop()

    def test_2010_uses_activesync_names(self):
        mock = Mock(os.path.join(self.tmp, "m2010"), profile="2010")
        try:
            code, _, err = mock.ps("Get-MobileDevice", "-p", "ResultSize=1")
            self.assertEqual(code, 1)
            self.assertIn("CommandNotFoundException", err)
            code, objs, err = mock.ps("Get-ActiveSyncDevice", "-p", "ResultSize=3")
            self.assertEqual(code, 0, err)
            self.assertEqual(len(objs), 3)
        finally:
            mock.stop()


def Agent(tmp, mock, extra=()):
    """The daemon on plain HTTP without console authentication, its psrp bridge on mock."""
    return H.Agent(tmp, H.psrp_args(mock) + ["--retry-base-ms", "100", "--retry-max-ms", "500"]
                   + list(extra))


class PoolLife(unittest.TestCase):
    """A long-lived pool in the daemon: lost shells are reopened, shells are recycled."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="easgate-pool-")
        self.mock = Mock(os.path.join(self.tmp, "mock"))

    def tearDown(self):
        self.mock.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def block(self, cid, n):
        return {"id": cid, "type": "device.block", "mailbox": "user%04d@contoso.example" % n,
                "device_id": "Dev" + cid}

    def post_faults(self, faults):
        return self.mock.faults(faults)

    def shell_ids(self):
        return self.mock.shell_ids()

    def test_lost_shell_is_reopened(self):
        agent = Agent(self.tmp, self.mock)
        try:
            self.assertEqual(agent.run(self.block("l1", 1))["state"], "succeeded")
            before = self.shell_ids()
            self.assertEqual(len(before), 1)
            self.post_faults({"lose_shells": True})
            rec = agent.run(self.block("l2", 2))
            self.assertEqual(rec["state"], "succeeded", rec)
            # The Command met the lost shell, so nothing ran: retried at once on a new shell.
            self.assertEqual(rec["attempts"], 1, rec)
            after = self.shell_ids()
            self.assertEqual(len(after), 1)
            self.assertNotEqual(before, after, "a new shell should have been opened")
            self.assertEqual(agent.stop(), 0)
        finally:
            agent.stop()

    def test_shell_recycled_after_n_commands(self):
        agent = Agent(self.tmp, self.mock, ["--exchange-commands-per-shell", "2"])
        try:
            seen = set()
            for i in range(5):
                self.assertEqual(agent.run(self.block("r%d" % i, i + 1))["state"], "succeeded")
                ids = self.shell_ids()
                self.assertEqual(len(ids), 1, "the old shell must be deleted")
                seen |= ids
            # each list edit is 2 pipelines (read + set): 10 pipelines, 2 per shell
            self.assertGreaterEqual(len(seen), 4)
            self.assertEqual(agent.stop(), 0)
            self.assertEqual(self.shell_ids(), set(), "close deletes the shell")
        finally:
            agent.stop()

    def test_exchange_down_then_up(self):
        agent = Agent(self.tmp, self.mock)
        try:
            req = urllib.request.Request(self.mock.control + "/control/listener/0/down",
                                         b"", method="POST")
            urllib.request.urlopen(req, timeout=10).read()
            cmd = self.block("d1", 3)
            body = json.dumps(cmd).encode()
            r = urllib.request.urlopen(urllib.request.Request(
                agent.api + "/api/v1/commands", body, {"Content-Type": "application/json"}))
            self.assertEqual(r.status, 202)
            time.sleep(1.0)
            with urllib.request.urlopen(agent.api + "/api/v1/commands/d1") as r:
                rec = json.loads(r.read())
            self.assertEqual(rec["state"], "retrying", rec)
            self.assertEqual(rec["error"]["code"], "exchange_unreachable")
            req = urllib.request.Request(self.mock.control + "/control/listener/0/up",
                                         b"", method="POST")
            urllib.request.urlopen(req, timeout=10).read()
            deadline = time.time() + 30
            while time.time() < deadline and rec["state"] != "succeeded":
                time.sleep(0.1)
                with urllib.request.urlopen(agent.api + "/api/v1/commands/d1") as r:
                    rec = json.loads(r.read())
            self.assertEqual(rec["state"], "succeeded", rec)
        finally:
            agent.stop()


class AgentOverPsrp(unittest.TestCase):
    """The daemon with its psrp bridge: console commands become cmdlets in the mock."""

    def test_commands_reach_the_mock(self):
        tmp = tempfile.mkdtemp(prefix="easgate-agent-psrp-")
        mock = Mock(os.path.join(tmp, "mock"))
        agent = None
        try:
            agent = H.Agent(tmp, H.psrp_args(mock))
            api = agent.api
            # One device that can do an account-only wipe (ActiveSync 16.1) and one that cannot.
            new_dev = old_dev = None
            for i in range(1, 21):
                mbx = "user%04d@contoso.example" % i
                for d in mock.get("/control/state/mailbox/" + mbx)["devices"]:
                    info = mock.get("/control/state/device/%s/%s" % (mbx, d))
                    if float(info["eas_version"]) >= 16.1 and not new_dev:
                        new_dev = (mbx, d)
                    elif float(info["eas_version"]) < 16.1 and not old_dev:
                        old_dev = (mbx, d)
            cmds = [
                {"id": "p1", "type": "device.block", "mailbox": "user0004@contoso.example",
                 "device_id": "NewPhone1"},
                {"id": "p2", "type": "device.allow", "mailbox": "user0004@contoso.example",
                 "device_id": "NewPhone2"},
                {"id": "p3", "type": "device.wipe", "mailbox": new_dev[0],
                 "device_id": new_dev[1].lower()},
                {"id": "p6", "type": "device.wipe", "mailbox": old_dev[0],
                 "device_id": old_dev[1]},
                {"id": "p4", "type": "device.block", "mailbox": "ghost@contoso.example",
                 "device_id": "X"},
                {"id": "p5", "type": "org.set_default_access", "level": "quarantine"},
            ]
            req = urllib.request.Request(api + "/api/v1/commands",
                                         json.dumps({"commands": cmds}).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                self.assertEqual(r.status, 202)
            final = {}
            deadline = time.time() + 60
            while len(final) < len(cmds) and time.time() < deadline:
                for c in cmds:
                    with urllib.request.urlopen(api + "/api/v1/commands/" + c["id"]) as r:
                        rec = json.loads(r.read())
                    if rec["state"] in ("succeeded", "failed", "cancelled"):
                        final[c["id"]] = rec
                time.sleep(0.1)
            self.assertEqual(len(final), len(cmds), agent.read_log())
            for cid in ("p1", "p2", "p3", "p5"):
                self.assertEqual(final[cid]["state"], "succeeded", final[cid])
            self.assertEqual(final["p6"]["state"], "failed")
            self.assertEqual(final["p6"]["error"]["code"], "unsupported")
            self.assertEqual(final["p6"]["attempts"], 1)
            self.assertEqual(final["p4"]["state"], "failed")
            self.assertEqual(final["p4"]["error"]["code"], "mailbox_not_found")
            self.assertIn("ManagementObjectNotFoundException",
                          final["p4"]["error"]["exchange"]["type"])
            state = mock.get("/control/state/mailbox/user0004@contoso.example")
            self.assertIn("NewPhone1", state["blocked"])
            self.assertIn("NewPhone2", state["allowed"])
            self.assertEqual(mock.get("/control/state/org")["default_access_level"], "Quarantine")
            # p1 and p2 were coalesced: one Set-CASMailbox for the mailbox.
            sets = [c for c in mock.calls() if c["cmdlet"] == "Set-CASMailbox"]
            self.assertEqual(len(sets), 1, sets)
            clear = [c for c in mock.calls() if c["cmdlet"] == "Clear-MobileDevice"]
            self.assertEqual(clear[0]["parameters"]["Confirm"], False)
            self.assertTrue(clear[0]["parameters"]["AccountOnly"])
            self.assertEqual(agent.stop(), 0)
            self.assertNotIn(PASSWORD, agent.read_log())
        finally:
            if agent:
                agent.stop()
            mock.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    H.set_binaries(easgate=sys.argv.pop(1), easgate_ps=sys.argv.pop(1), mock=sys.argv.pop(1))
    unittest.main(verbosity=2)
