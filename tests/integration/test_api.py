#!/usr/bin/env python3
"""Integration test of the easgate daemon's console API.

Starts the real `easgate` binary on 127.0.0.1 with port 0 (the port comes back through
--ports-file), HTTPS with a throwaway test CA, client certificates and a bearer token, and drives
every endpoint with good and bad input. Then it SIGKILLs the daemon right after a burst of 202s,
restarts it on the same state directory and checks that every accepted command is still there and
reaches a final state.

Runtime configuration (PUT/GET /api/v1/config): a dry-run target, and, when the mock Exchange is
given, an on-prem target against easgate-mock-exchange.

Usage: test_api.py EASGATE_BINARY PKI_SCRIPT [MOCK_EXCHANGE]   (ctest passes them)
Standard library only.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

EASGATE = None
PKI_SCRIPT = None
MOCK = None
MOCK_PASSWORD = "Mock-Cfg-Passw0rd!"
TOKEN = "itest-token-0123456789abcdef"


def make_pki(directory):
    subprocess.run(["bash", PKI_SCRIPT, directory], check=True, stdout=subprocess.DEVNULL)
    return {name: os.path.join(directory, name + ".pem") for name in
            ("ca", "server", "server-key", "server2", "server2-key", "client", "client-key",
             "evil-client", "evil-client-key")}


class Agent:
    """One easgate process with its own state directory."""

    def __init__(self, workdir, pki, extra=(), plain=False):
        self.workdir = workdir
        self.pki = pki
        self.extra = list(extra)
        self.plain = plain
        self.state_dir = os.path.join(workdir, "state")
        self.ports_file = os.path.join(workdir, "ports.json")
        self.log_path = os.path.join(workdir, "agent.log")
        self.token_file = os.path.join(workdir, "token")
        os.makedirs(workdir, exist_ok=True)
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(self.token_file, 0o600)
        self.proc = None
        self.port = None

    def start(self):
        if os.path.exists(self.ports_file):
            os.unlink(self.ports_file)
        args = [EASGATE, "--listen", "127.0.0.1:0", "--state-dir", self.state_dir,
                "--ports-file", self.ports_file, "--token-file", self.token_file,
                "--log-level", "info"]
        if self.plain:
            args += ["--plain-http"]
        else:
            args += ["--tls-cert", self.pki["server"], "--tls-key", self.pki["server-key"],
                     "--client-ca", self.pki["ca"]]
        args += self.extra
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("easgate exited with %d:\n%s" % (self.proc.returncode,
                                                                       self.read_log()))
            try:
                with open(self.ports_file) as f:
                    self.port = json.load(f)["api"]
                return self
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
        raise AssertionError("easgate did not write its ports file:\n" + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def context(self, cert="client"):
        ctx = ssl.create_default_context(cafile=self.pki["ca"])
        if cert:
            ctx.load_cert_chain(self.pki[cert], self.pki[cert + "-key"])
        return ctx

    def request(self, method, path, body=None, token=TOKEN, cert="client", headers=None,
                content_type="application/json"):
        if self.plain:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=self.context(cert))
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            if content_type:
                h["Content-Type"] = content_type
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            ctype = r.getheader("Content-Type") or ""
            hdrs = dict(r.getheaders())
        finally:
            conn.close()
        parsed = None
        if "json" in ctype and data:
            parsed = json.loads(data)
        return r.status, parsed, ctype, hdrs, data

    def wait_final(self, ids, timeout=30):
        deadline = time.time() + timeout
        pending = set(ids)
        states = {}
        while pending and time.time() < deadline:
            for cid in list(pending):
                st, body, *_ = self.request("GET", "/api/v1/commands/" + cid)
                assert st == 200, (cid, st, body)
                states[cid] = body
                if body["state"] in ("succeeded", "failed", "cancelled"):
                    pending.discard(cid)
            if pending:
                time.sleep(0.05)
        if pending:
            raise AssertionError("not final after %ss: %s" % (timeout, sorted(pending)[:5]))
        return states

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("easgate did not stop within %ss" % timeout)
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None


def block(cid, mailbox="alice@corp.example", device="ApplF17A1"):
    return {"id": cid, "type": "device.block", "mailbox": mailbox, "device_id": device}


class ApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="easgate-itest-")
        cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
        cls.agent = Agent(os.path.join(cls.tmp, "main"), cls.pki,
                          extra=["--dryrun-latency-ms", "20", "--workers", "2"])
        os.makedirs(cls.agent.workdir, exist_ok=True)
        cls.agent.start()

    @classmethod
    def tearDownClass(cls):
        code = cls.agent.stop()
        log = cls.agent.read_log()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert code == 0, "easgate exited %s on SIGTERM:\n%s" % (code, log)
        assert TOKEN not in log, "the bearer token appears in the log"

    def assertProblem(self, resp, status, field=None):
        st, body, ctype, _, raw = resp
        self.assertEqual(st, status, raw)
        self.assertTrue(ctype.startswith("application/problem+json"), ctype)
        self.assertEqual(body["status"], status)
        self.assertIn("title", body)
        self.assertIn("detail", body)
        if field is not None:
            self.assertEqual(body.get("field"), field, body)
        return body

    def test_no_core_files(self):
        """Secrets are in the agent's memory: it sets its core file limit to 0 (and makes itself
        non-dumpable, which /proc cannot show to root)."""
        with open("/proc/%d/limits" % self.agent.proc.pid) as f:
            line = [x for x in f if x.startswith("Max core file size")][0]
        self.assertEqual(line.split()[4:6], ["0", "0"], line)

    # ---- authentication -------------------------------------------------------------------
    def test_health_endpoints_need_no_auth(self):
        st, body, *_ = self.agent.request("GET", "/healthz", token=None, cert=None)
        self.assertEqual((st, body["status"]), (200, "ok"))
        st, body, *_ = self.agent.request("GET", "/readyz", token=None, cert=None)
        self.assertEqual((st, body["status"]), (200, "ready"))

    def test_no_client_certificate_is_403(self):
        self.assertProblem(self.agent.request("GET", "/api/v1/status", cert=None), 403)

    def test_client_certificate_from_other_ca_is_403(self):
        try:
            resp = self.agent.request("GET", "/api/v1/status", cert="evil-client")
        except (ssl.SSLError, ConnectionError):
            return  # refusing the handshake is also a refusal
        self.assertProblem(resp, 403)

    def test_missing_and_wrong_token_are_401(self):
        r = self.agent.request("GET", "/api/v1/status", token=None)
        self.assertProblem(r, 401)
        self.assertIn("Bearer", r[3].get("WWW-Authenticate", ""))
        self.assertProblem(self.agent.request("GET", "/api/v1/status", token="x" * 28), 401)
        self.assertProblem(self.agent.request("GET", "/api/v1/status", token=TOKEN[:-1]), 401)

    def test_plain_http_on_tls_port_fails(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.agent.port, timeout=5)
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        conn.close()

    # ---- commands: good input ---------------------------------------------------------------
    def test_single_command_lifecycle(self):
        st, body, _, hdrs, raw = self.agent.request("POST", "/api/v1/commands",
                                                    block("life-1", device="ApplLife1"))
        self.assertEqual(st, 202, raw)
        self.assertEqual(body["id"], "life-1")
        self.assertEqual(body["type"], "device.block")
        self.assertIn(body["state"], ("queued", "running", "succeeded"))
        self.assertEqual(hdrs.get("Location"), "/api/v1/commands/life-1")
        self.assertEqual(body["command"]["device_id"], "ApplLife1")
        final = self.agent.wait_final(["life-1"])["life-1"]
        self.assertEqual(final["state"], "succeeded", final)
        self.assertEqual(final["attempts"], 1)
        cmdlets = [a["cmdlet"] for a in final["result"]["actions"]]
        self.assertIn("Set-CASMailbox", cmdlets)
        set_cas = [a for a in final["result"]["actions"] if a["cmdlet"] == "Set-CASMailbox"][0]
        self.assertEqual(set_cas["parameters"]["ActiveSyncBlockedDeviceIDs"]["Add"],
                         ["ApplLife1"])
        for key in ("created_at", "started_at", "finished_at"):
            self.assertRegex(final[key], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_every_command_type_is_accepted_and_applied(self):
        mbx = "types@corp.example"
        cmds = [
            {"id": "t-allow", "type": "device.allow", "mailbox": mbx, "device_id": "DevA"},
            {"id": "t-block", "type": "device.block", "mailbox": mbx, "device_id": "DevB"},
            {"id": "t-unlist", "type": "device.unlist", "mailbox": mbx, "device_id": "DevC"},
            {"id": "t-wipe", "type": "device.wipe", "mailbox": mbx, "device_id": "DevD",
             "account_only": True, "notify": ["admin@corp.example"]},
            {"id": "t-wipe-cancel", "type": "device.wipe_cancel", "mailbox": mbx,
             "device_id": "DevD"},
            {"id": "t-remove", "type": "device.remove", "mailbox": mbx, "device_id": "DevE"},
            {"id": "t-mbx", "type": "mailbox.set", "mailbox": mbx, "activesync_enabled": True,
             "policy": None},
            {"id": "t-setdev", "type": "mailbox.set_devices", "mailbox": "decl@corp.example",
             "allowed": ["DevX", "DevY"], "blocked": ["DevZ"]},
            {"id": "t-org", "type": "org.set_default_access", "level": "quarantine"},
            {"id": "t-sync", "type": "inventory.sync", "mode": "full"},
        ]
        st, body, _, _, raw = self.agent.request("POST", "/api/v1/commands", {"commands": cmds})
        self.assertEqual(st, 202, raw)
        self.assertEqual([c["id"] for c in body["commands"]], [c["id"] for c in cmds])
        self.assertTrue(all(c["duplicate"] is False for c in body["commands"]))
        final = self.agent.wait_final([c["id"] for c in cmds])
        for cid, rec in final.items():
            self.assertEqual(rec["state"], "succeeded", rec)
        org = final["t-org"]["result"]["actions"]
        self.assertEqual(org[-1]["cmdlet"], "Set-ActiveSyncOrganizationSettings")
        self.assertEqual(org[-1]["parameters"]["DefaultAccessLevel"], "Quarantine")
        wipe = [a for a in final["t-wipe"]["result"]["actions"]
                if a["cmdlet"] == "Clear-MobileDevice"][0]
        self.assertEqual(wipe["parameters"].get("Confirm"), False)
        self.assertEqual(wipe["parameters"].get("AccountOnly"), True)
        decl = [a for a in final["t-setdev"]["result"]["actions"]
                if a["cmdlet"] == "Set-CASMailbox"][0]["parameters"]
        self.assertEqual(sorted(decl["ActiveSyncAllowedDeviceIDs"]["Add"]), ["DevX", "DevY"])
        self.assertEqual(decl["ActiveSyncBlockedDeviceIDs"]["Add"], ["DevZ"])

    def test_injection_shaped_values_are_data(self):
        # Accepted and kept byte for byte (they travel as typed strings, never as script) ...
        for i, val in enumerate(("x'; Remove-Mailbox -Identity ceo", "a$(whoami)", "dev`id",
                                 "dev\nid", "d\u00e9v\u2603")):
            r = self.agent.request("POST", "/api/v1/commands",
                                   block("inj-d%d" % i, device=val))
            self.assertEqual(r[0], 202, r[4])
            self.assertEqual(r[1]["command"]["device_id"], val)
            r = self.agent.request("POST", "/api/v1/commands",
                                   block("inj-m%d" % i, mailbox=val + "@corp.example"))
            self.assertEqual(r[0], 202, r[4])
            self.assertEqual(r[1]["command"]["mailbox"], val + "@corp.example")
        # ... while over-long or empty values are refused, naming the field.
        r = self.agent.request("POST", "/api/v1/commands", block("inj-long", device="x" * 1024))
        self.assertProblem(r, 400, "device_id")
        r = self.agent.request("POST", "/api/v1/commands", block("inj-empty", mailbox=""))
        self.assertProblem(r, 400, "mailbox")

    def test_coalescing_one_exchange_call_per_mailbox(self):
        mbx = "coalesce@corp.example"
        cmds = [
            {"id": "co-1", "type": "device.allow", "mailbox": mbx, "device_id": "D1"},
            {"id": "co-2", "type": "device.block", "mailbox": mbx, "device_id": "D2"},
            {"id": "co-3", "type": "device.block", "mailbox": mbx, "device_id": "D1"},
            {"id": "co-4", "type": "device.allow", "mailbox": mbx, "device_id": "D3"},
            {"id": "co-5", "type": "device.unlist", "mailbox": mbx, "device_id": "D3"},
        ]
        st, _, _, _, raw = self.agent.request("POST", "/api/v1/commands", {"commands": cmds})
        self.assertEqual(st, 202, raw)
        final = self.agent.wait_final([c["id"] for c in cmds])
        # Later commands win: D1 ends blocked (co-3 over co-1), D3 on no list (co-5 over co-4).
        blocked, allowed = set(), set()
        calls = 0
        for cid in [c["id"] for c in cmds]:
            rec = final[cid]
            self.assertEqual(rec["state"], "succeeded", rec)
        seen = set()
        for rec in final.values():
            key = json.dumps(rec["result"]["actions"], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            for a in rec["result"]["actions"]:
                if a["cmdlet"] != "Set-CASMailbox":
                    continue
                calls += 1
                p = a["parameters"]
                blocked |= set(p.get("ActiveSyncBlockedDeviceIDs", {}).get("Add", []))
                allowed |= set(p.get("ActiveSyncAllowedDeviceIDs", {}).get("Add", []))
                blocked -= set(p.get("ActiveSyncBlockedDeviceIDs", {}).get("Remove", []))
                allowed -= set(p.get("ActiveSyncAllowedDeviceIDs", {}).get("Remove", []))
        self.assertEqual(blocked, {"D1", "D2"})
        self.assertNotIn("D3", allowed)
        self.assertNotIn("D1", allowed)
        # Five commands, at most a couple of Set-CASMailbox round trips (the first may have been
        # claimed alone before the rest arrived; the batch arrives in one transaction, so one).
        self.assertLessEqual(calls, 2)
        merged = [r for r in final.values() if r["result"].get("coalesced_with")]
        self.assertTrue(merged, "no command reports being coalesced")

    # ---- idempotency ------------------------------------------------------------------------
    def test_idempotent_replay_and_conflict(self):
        cmd = block("idem-1", device="ApplIdem1")
        st1, b1, *_ = self.agent.request("POST", "/api/v1/commands", cmd)
        self.assertEqual(st1, 202)
        # Same body, different key order and whitespace: same command, no new work.
        body = '{ "device_id":"ApplIdem1", "type":"device.block",\n "mailbox":"alice@corp.example","id":"idem-1"}'
        st2, b2, *_ = self.agent.request("POST", "/api/v1/commands", body)
        self.assertEqual(st2, 200)
        self.assertEqual(b2["id"], "idem-1")
        self.assertEqual(b2["created_at"], b1["created_at"])
        # Same id, different body: 409 and the stored command is unchanged.
        r = self.agent.request("POST", "/api/v1/commands", block("idem-1", device="Other"))
        self.assertProblem(r, 409, "id")
        st, got, *_ = self.agent.request("GET", "/api/v1/commands/idem-1")
        self.assertEqual(got["command"]["device_id"], "ApplIdem1")
        # In a batch, one conflict rejects the whole batch: the new item is not stored.
        r = self.agent.request("POST", "/api/v1/commands", {"commands": [
            block("idem-new", device="ApplNew"), block("idem-1", device="Other")]})
        body = self.assertProblem(r, 409, "commands[1].id")
        st, *_ = self.agent.request("GET", "/api/v1/commands/idem-new")
        self.assertEqual(st, 404)

    # ---- bad input --------------------------------------------------------------------------
    def test_malformed_json(self):
        body = self.assertProblem(self.agent.request("POST", "/api/v1/commands", "{\"id\": "),
                                  400)
        self.assertIn("line", body["detail"])
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", "[1,2]"), 400)
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", ""), 400)

    def test_wrong_types_and_unknown_fields(self):
        self.assertProblem(self.agent.request("POST", "/api/v1/commands",
                                              {"id": 5, "type": "device.block"}), 400, "id")
        c = block("wt-1")
        c["device_id"] = ["x"]
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", c), 400, "device_id")
        c = block("wt-2")
        c["colour"] = "blue"
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", c), 400, "colour")
        c = {"id": "wt-3", "type": "device.wipe", "mailbox": "a@b.example", "device_id": "D",
             "account_only": "yes"}
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", c), 400,
                           "account_only")
        c = {"id": "wt-4", "type": "org.set_default_access", "level": "maybe"}
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", c), 400, "level")
        r = self.agent.request("POST", "/api/v1/commands", {"commands": [
            block("wt-5"), {"id": "wt-6", "type": "device.allow", "mailbox": "",
                            "device_id": "D"}]})
        self.assertProblem(r, 400, "commands[1].mailbox")
        st, *_ = self.agent.request("GET", "/api/v1/commands/wt-5")
        self.assertEqual(st, 404, "a rejected batch must store nothing")

    def test_unknown_command_type(self):
        self.assertProblem(self.agent.request("POST", "/api/v1/commands",
                                              {"id": "u-1", "type": "device.explode"}), 400,
                           "type")

    def test_wrong_content_type(self):
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", block("ct-1"),
                                              content_type="text/plain"), 415)

    def test_oversized_body_is_413(self):
        big = json.dumps({"id": "big", "type": "device.block", "mailbox": "a@b.example",
                          "device_id": "D", "pad": "x" * (2 * 1024 * 1024)})
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", big), 413)
        st, *_ = self.agent.request("GET", "/api/v1/commands/big")
        self.assertEqual(st, 404)

    def test_oversized_batch_is_413(self):
        cmds = [block("ob-%d" % i, device="D%d" % i) for i in range(1001)]
        self.assertProblem(self.agent.request("POST", "/api/v1/commands", {"commands": cmds}),
                           413)

    def test_oversized_header_is_431(self):
        self.assertProblem(self.agent.request("GET", "/api/v1/status",
                                              headers={"X-Big": "y" * 20000}), 431)

    def test_routes_405_and_404(self):
        r = self.agent.request("PUT", "/api/v1/commands", block("m-1"))
        self.assertProblem(r, 405)
        self.assertIn("POST", r[3].get("Allow", ""))
        self.assertProblem(self.agent.request("GET", "/api/v1/nothing"), 404)
        self.assertProblem(self.agent.request("GET", "/api/v1/commands/does-not-exist"), 404)
        self.assertProblem(self.agent.request("GET", "/api/v1/commands/bad%20id"), 400, "id")

    # ---- listing, cancel, status, metrics ---------------------------------------------------
    def test_list_paging_and_filter(self):
        ids = ["pg-%02d" % i for i in range(7)]
        st, *_ = self.agent.request("POST", "/api/v1/commands", {"commands": [
            block(i, mailbox="pager@corp.example", device="P" + i[-2:]) for i in ids]})
        self.assertEqual(st, 202)
        self.agent.wait_final(ids)
        seen, after, pages = [], None, 0
        while True:
            q = "/api/v1/commands?limit=3" + ("&after=" + after if after else "")
            st, body, *_ = self.agent.request("GET", q)
            self.assertEqual(st, 200)
            self.assertLessEqual(len(body["commands"]), 3)
            seen += [c["id"] for c in body["commands"]]
            pages += 1
            after = body.get("next")
            if not after:
                break
        self.assertTrue(set(ids) <= set(seen))
        self.assertEqual(len(seen), len(set(seen)), "a command appeared on two pages")
        self.assertGreater(pages, 2)
        st, body, *_ = self.agent.request("GET", "/api/v1/commands?state=succeeded&limit=1000")
        self.assertTrue(all(c["state"] == "succeeded" for c in body["commands"]))
        self.assertProblem(self.agent.request("GET", "/api/v1/commands?state=bogus"), 400,
                           "state")
        self.assertProblem(self.agent.request("GET", "/api/v1/commands?limit=0"), 400, "limit")
        self.assertProblem(self.agent.request("GET", "/api/v1/commands?after=-3"), 400, "after")

    def test_status_and_metrics(self):
        st, body, *_ = self.agent.request("GET", "/api/v1/status")
        self.assertEqual(st, 200)
        self.assertEqual(body["service"], "easgate")
        self.assertEqual(body["bridge"]["backend"], "dryrun")
        self.assertIn("queued", body["queue"])
        st, _, ctype, _, raw = self.agent.request("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        text = raw.decode()
        self.assertIn("# TYPE easgate_http_requests_total counter", text)
        self.assertIn('easgate_http_requests_total{route="/api/v1/status",status="200"}', text)
        self.assertIn('easgate_queue_depth{state="queued"}', text)
        self.assertIn("# TYPE easgate_command_duration_seconds histogram", text)


class CancelTest(unittest.TestCase):
    """Cancel needs commands that stay queued: one worker and a slow dry-run Exchange."""

    def test_cancel_before_start(self):
        tmp = tempfile.mkdtemp(prefix="easgate-cancel-")
        try:
            pki = make_pki(os.path.join(tmp, "pki"))
            agent = Agent(os.path.join(tmp, "a"), pki,
                          extra=["--dryrun-latency-ms", "700", "--workers", "1"])
            os.makedirs(agent.workdir, exist_ok=True)
            agent.start()
            st, *_ = agent.request("POST", "/api/v1/commands", block("c-first", "one@x.example"))
            self.assertEqual(st, 202)
            time.sleep(0.2)  # the single worker is now busy with c-first for 700 ms
            st, *_ = agent.request("POST", "/api/v1/commands", block("c-second", "two@x.example"))
            self.assertEqual(st, 202)
            st, body, *_ = agent.request("DELETE", "/api/v1/commands/c-second")
            self.assertEqual(st, 200, body)
            self.assertEqual(body["state"], "cancelled")
            st, body, *_ = agent.request("DELETE", "/api/v1/commands/c-first")
            self.assertEqual(st, 409, body)
            self.assertEqual(agent.request("DELETE", "/api/v1/commands/c-nope")[0], 404)
            final = agent.wait_final(["c-first", "c-second"])
            self.assertEqual(final["c-first"]["state"], "succeeded")
            self.assertEqual(final["c-second"]["state"], "cancelled")
            self.assertEqual(agent.stop(), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class CrashTest(unittest.TestCase):
    def test_sigkill_after_burst_loses_nothing(self):
        tmp = tempfile.mkdtemp(prefix="easgate-crash-")
        try:
            pki = make_pki(os.path.join(tmp, "pki"))
            agent = Agent(os.path.join(tmp, "a"), pki,
                          extra=["--dryrun-latency-ms", "50", "--workers", "2"])
            os.makedirs(agent.workdir, exist_ok=True)
            agent.start()
            accepted = []
            for i in range(150):
                cid = "k-%03d" % i
                st, *_ = agent.request("POST", "/api/v1/commands",
                                       block(cid, "crash%d@corp.example" % (i % 13), "Dev%d" % i))
                self.assertEqual(st, 202)
                accepted.append(cid)
            batch = [block("kb-%03d" % i, "crashb%d@corp.example" % (i % 7), "B%d" % i)
                     for i in range(300)]
            st, *_ = agent.request("POST", "/api/v1/commands", {"commands": batch})
            self.assertEqual(st, 202)
            accepted += [c["id"] for c in batch]
            agent.proc.send_signal(signal.SIGKILL)  # right after the last 202
            agent.proc.wait()
            agent.log.close()
            agent.start()
            final = agent.wait_final(accepted, timeout=120)
            self.assertEqual(len(final), len(accepted))
            for cid, rec in final.items():
                self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(agent.stop(), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class ReloadTest(unittest.TestCase):
    def test_sighup_reloads_certificate(self):
        tmp = tempfile.mkdtemp(prefix="easgate-reload-")
        try:
            pki = make_pki(os.path.join(tmp, "pki"))
            live = dict(pki)
            live["server"] = os.path.join(tmp, "live-cert.pem")
            live["server-key"] = os.path.join(tmp, "live-key.pem")
            shutil.copy(pki["server"], live["server"])
            shutil.copy(pki["server-key"], live["server-key"])
            agent = Agent(os.path.join(tmp, "a"), live)
            os.makedirs(agent.workdir, exist_ok=True)
            agent.start()

            def served_cert():
                with socket.create_connection(("127.0.0.1", agent.port)) as s:
                    ctx = agent.context()
                    with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                        return t.getpeercert(binary_form=True)

            before = served_cert()
            shutil.copy(pki["server2"], live["server"])
            shutil.copy(pki["server2-key"], live["server-key"])
            agent.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            after = before
            while after == before and time.time() < deadline:
                time.sleep(0.1)
                after = served_cert()
            self.assertNotEqual(before, after, "SIGHUP did not change the served certificate")
            # A broken file is refused and the working material stays in force.
            with open(live["server"], "w") as f:
                f.write("not a certificate\n")
            agent.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            self.assertEqual(served_cert(), after)
            self.assertEqual(agent.request("GET", "/api/v1/status")[0], 200)
            self.assertEqual(agent.stop(), 0)
            self.assertIn("reload refused", agent.read_log())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def audit_verify(*args, env=None):
    """`easgate audit verify ARGS` -> (exit status, stdout + stderr)."""
    r = subprocess.run([EASGATE, "audit", "verify"] + list(args), capture_output=True, text=True,
                       timeout=60, env=env)
    return r.returncode, r.stdout + r.stderr


class AuditTest(unittest.TestCase):
    """Every Exchange change is in the hash-chained audit trail; `easgate audit verify`."""

    def test_commands_are_audited_and_the_chain_verifies(self):
        tmp = tempfile.mkdtemp(prefix="easgate-audit-")
        try:
            pki = make_pki(os.path.join(tmp, "pki"))
            agent = Agent(os.path.join(tmp, "a"), pki, extra=["--workers", "2"])
            os.makedirs(agent.workdir, exist_ok=True)
            agent.start()
            mbx = "audit@corp.example"
            cmds = [{"id": "au-allow", "type": "device.allow", "mailbox": mbx, "device_id": "A1"},
                    {"id": "au-block", "type": "device.block", "mailbox": mbx, "device_id": "B1"},
                    {"id": "au-wipe", "type": "device.wipe", "mailbox": mbx, "device_id": "W1"},
                    {"id": "au-org", "type": "org.set_default_access", "level": "block"},
                    {"id": "au-sync", "type": "inventory.sync", "mode": "quick"}]
            st, *_ = agent.request("POST", "/api/v1/commands", {"commands": cmds})
            self.assertEqual(st, 202)
            final = agent.wait_final([c["id"] for c in cmds])
            log_path = os.path.join(agent.state_dir, "audit.log")
            # The record is durable before the outcome is visible: no need to stop first.
            with open(log_path) as f:
                recs = [json.loads(line) for line in f]
            self.assertEqual(os.stat(log_path).st_mode & 0o777, 0o600)
            by_id = {}
            for r in recs:
                by_id.setdefault(r["command_id"], []).append(r)
                self.assertFalse(r["cmdlet"].startswith("Get-"), r)
                self.assertEqual(r["console"], "CN=console.test")
            for c in cmds:
                if c["id"] == "au-sync":
                    self.assertNotIn("au-sync", by_id)  # reads only
                    continue
                want = [a for a in final[c["id"]]["result"]["actions"]
                        if not a["cmdlet"].startswith("Get-")]
                got = by_id.get(c["id"], [])
                self.assertEqual([(r["cmdlet"], r["parameters"]) for r in got],
                                 [(a["cmdlet"], a["parameters"]) for a in want], c["id"])
                for r in got:
                    self.assertEqual((r["type"], r["outcome"], r["code"]),
                                     (c["type"], "succeeded", None))
            self.assertEqual([r["seq"] for r in recs], list(range(1, len(recs) + 1)))
            code, out = audit_verify(log_path)
            self.assertEqual(code, 0, out)
            self.assertIn("%d records, chain intact" % len(recs), out)
            # The default path comes from the configuration (state_dir).
            env = dict(os.environ, EASGATE_STATE_DIR=agent.state_dir)
            self.assertEqual(audit_verify(env=env)[0], 0)
            self.assertEqual(agent.stop(), 0)
            self.assertIn("audit trail closed: last seq %d" % len(recs), agent.read_log())

            # Tampered: one byte of the wipe's record changed -> exit 1 naming the line.
            with open(log_path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            wipe_line = [i for i, l in enumerate(lines) if b'"au-wipe"' in l][0]
            tampered = lines[wipe_line].replace(b'"Clear-MobileDevice"', b'"Clear-MobileDevicE"')
            self.assertNotEqual(tampered, lines[wipe_line])
            lines[wipe_line] = tampered
            with open(log_path, "wb") as f:
                f.write(b"\n".join(lines))
            code, out = audit_verify(log_path)
            self.assertEqual(code, 1, out)
            self.assertIn(":%d:" % (wipe_line + 1), out)
            # A removed line too (the first: cutting the tail end off leaves a valid, shorter
            # chain; the head logged at every stop is what exposes that).
            lines = data.split(b"\n")
            del lines[0]
            with open(log_path, "wb") as f:
                f.write(b"\n".join(lines))
            code, out = audit_verify(log_path)
            self.assertEqual(code, 1, out)
            self.assertIn(":1:", out)
            self.assertEqual(audit_verify(os.path.join(tmp, "none.log"))[0], 2)

            # A torn last line (a crash mid-write) is moved aside at the next start.
            with open(log_path, "wb") as f:
                f.write(data + b'{"seq":99,"ti')
            self.assertEqual(audit_verify(log_path)[0], 1)
            agent.start()
            st, *_ = agent.request("POST", "/api/v1/commands",
                                   block("au-after", mailbox=mbx, device="C1"))
            self.assertEqual(st, 202)
            agent.wait_final(["au-after"])
            self.assertEqual(agent.stop(), 0)
            self.assertIn("torn last line", agent.read_log())
            torn = [n for n in os.listdir(agent.state_dir) if n.startswith("audit.log.torn-")]
            self.assertEqual(len(torn), 1)
            code, out = audit_verify(log_path)
            self.assertEqual(code, 0, out)
            self.assertIn("%d records" % (len(recs) + 1), out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class ProtectionTest(unittest.TestCase):
    """Per-client rate and connection limits, and slow requests cut off (plain HTTP + token,
    so that the client identity is the peer address: 127.0.0.1 and 127.0.0.2 differ)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="easgate-protect-")
        cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
        cls.agent = Agent(os.path.join(cls.tmp, "a"), cls.pki, plain=True,
                          extra=["--api-rate", "1", "--api-burst", "5",
                                 "--max-connections-per-client", "3", "--conn-timeout-s", "1"])
        os.makedirs(cls.agent.workdir, exist_ok=True)
        cls.agent.start()

    @classmethod
    def tearDownClass(cls):
        code = cls.agent.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert code == 0, code

    def get_from(self, source, path="/api/v1/status"):
        conn = http.client.HTTPConnection("127.0.0.1", self.agent.port, timeout=10,
                                          source_address=(source, 0))
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
            r = conn.getresponse()
            body = r.read()
            return r.status, dict(r.getheaders()), body
        finally:
            conn.close()

    def burst_from(self, source, n, path="/api/v1/status"):
        """n requests over one kept-alive connection (a fresh connection per request could meet
        the per-client connection limit while the server still counts the ones just closed)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.agent.port, timeout=10,
                                          source_address=(source, 0))
        out = []
        try:
            for _ in range(n):
                conn.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
                r = conn.getresponse()
                out.append((r.status, dict(r.getheaders()), r.read()))
        finally:
            conn.close()
        return out

    def test_burst_then_429_with_retry_after(self):
        statuses = self.burst_from("127.0.0.3", 12)
        codes = [s for s, _, _ in statuses]
        self.assertEqual(codes[:5], [200] * 5, codes)
        self.assertIn(429, codes)
        st, hdrs, body = statuses[codes.index(429)]
        self.assertTrue(hdrs["Content-Type"].startswith("application/problem+json"))
        self.assertEqual(json.loads(body)["status"], 429)
        self.assertGreaterEqual(int(hdrs["Retry-After"]), 1)
        # Health probes are exempt; another client is not limited.
        self.assertEqual(self.get_from("127.0.0.3", "/healthz")[0], 200)
        self.assertEqual(self.get_from("127.0.0.4")[0], 200)
        # The limited client gets through again once a token is back.
        time.sleep(int(hdrs["Retry-After"]) + 0.2)
        self.assertEqual(self.get_from("127.0.0.3")[0], 200)

    def test_connections_per_client(self):
        def connect(source):
            s = socket.create_connection(("127.0.0.1", self.agent.port), timeout=5,
                                         source_address=(source, 0))
            return s

        def served(s):
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

        held = [connect("127.0.0.5") for _ in range(3)]
        try:
            self.assertTrue(all(served(s) for s in held))
            extra = connect("127.0.0.5")
            self.assertFalse(served(extra))  # closed at once
            extra.close()
            other = connect("127.0.0.6")
            self.assertTrue(served(other))
            other.close()
        finally:
            for s in held:
                s.close()

    def test_slow_loris_is_cut_after_conn_timeout(self):
        s = socket.create_connection(("127.0.0.1", self.agent.port), timeout=5,
                                     source_address=("127.0.0.7", 0))
        s.sendall(b"GET /api/v1/sta")
        t0 = time.time()
        cut = None
        s.settimeout(0.2)
        while time.time() - t0 < 10:
            try:
                if s.recv(64) == b"":
                    cut = time.time() - t0
                    break
            except socket.timeout:
                pass
            except OSError:
                cut = time.time() - t0
                break
            try:
                s.send(b"t")
            except OSError:
                cut = time.time() - t0
                break
        s.close()
        self.assertIsNotNone(cut, "a trickling client was never cut off")
        self.assertLess(cut, 3.0)  # conn_timeout_s = 1, checked every 250 ms

    def test_slow_loris_over_tls_is_cut(self):
        tmp = tempfile.mkdtemp(prefix="easgate-slowtls-", dir=self.tmp)
        agent = Agent(tmp, self.pki, extra=["--conn-timeout-s", "1"])
        agent.start()
        try:
            raw = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
            t = agent.context().wrap_socket(raw, server_hostname="127.0.0.1")
            t.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bea")
            t0 = time.time()
            cut = None
            t.settimeout(0.2)
            while time.time() - t0 < 10:
                try:
                    if t.recv(64) == b"":
                        cut = time.time() - t0
                        break
                except socket.timeout:
                    pass
                except (OSError, ssl.SSLError):
                    cut = time.time() - t0
                    break
                try:
                    t.send(b"r")
                except (OSError, ssl.SSLError):
                    cut = time.time() - t0
                    break
            t.close()
            self.assertIsNotNone(cut, "a trickling TLS client was never cut off")
            self.assertLess(cut, 3.0)
        finally:
            self.assertEqual(agent.stop(), 0)


class ConfigTest(unittest.TestCase):
    def test_check_config_reports_every_error_with_location(self):
        tmp = tempfile.mkdtemp(prefix="easgate-cfg-")
        try:
            path = os.path.join(tmp, "bad.json")
            with open(path, "w") as f:
                f.write('{\n  "listen": "127.0.0.1:99999",\n  "workers": 0,\n'
                        '  "colour": "blue"\n}\n')
            r = subprocess.run([EASGATE, "--check-config", path], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(path + ":2:", r.stderr)
            self.assertIn(path + ":3:", r.stderr)
            self.assertIn(path + ":4:", r.stderr)
            good = os.path.join(tmp, "good.json")
            with open(good, "w") as f:
                json.dump({"listen": "127.0.0.1:0", "plain_http": True, "no_auth": True,
                           "state_dir": tmp}, f)
            r = subprocess.run([EASGATE, "--check-config", good], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("configuration OK", r.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_plain_http_refused_on_non_loopback(self):
        tmp = tempfile.mkdtemp(prefix="easgate-cfg-")
        try:
            r = subprocess.run([EASGATE, "--listen", "0.0.0.0:0", "--plain-http", "--no-auth",
                                "--state-dir", tmp], capture_output=True, text=True, timeout=20)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("plain", r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class MockExchange:
    """easgate-mock-exchange on 127.0.0.1 (port 0), one account svc-easgate."""

    def __init__(self, workdir):
        os.makedirs(workdir, exist_ok=True)
        users = os.path.join(workdir, "users")
        with open(users, "w") as f:
            f.write("svc-easgate:%s\n" % MOCK_PASSWORD)
        ports = os.path.join(workdir, "mock-ports.json")
        self.log = os.path.join(workdir, "mock.log")
        self.proc = subprocess.Popen(
            [MOCK, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--profile", "2016",
             "--mailboxes", "20", "--devices", "40", "--seed", "3", "--users", users,
             "--ports-file", ports], stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("mock exited:\n" + open(self.log).read())
            try:
                with open(ports) as f:
                    p = json.load(f)
                break
            except (OSError, ValueError):
                if time.time() > deadline:
                    raise AssertionError("mock wrote no ports file")
                time.sleep(0.02)
        self.url = "http://127.0.0.1:%d/PowerShell" % p["exchange"]
        self.control = "http://127.0.0.1:%d" % p["control"]

    def get(self, path):
        with urllib.request.urlopen(self.control + path, timeout=10) as r:
            return json.loads(r.read())

    def calls(self):
        v = self.get("/control/calls")
        return v["calls"] if isinstance(v, dict) else v

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def file_mode(path):
    return os.stat(path).st_mode & 0o7777


class RuntimeConfigTest(unittest.TestCase):
    """PUT/GET /api/v1/config: validation, persistence, secrets, and the swap of the target."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="easgate-rtcfg-")
        self.pki = make_pki(os.path.join(self.tmp, "pki"))
        self.agent = Agent(os.path.join(self.tmp, "a"), self.pki,
                           extra=["--workers", "2", "--retry-base-ms", "50",
                                  "--retry-max-ms", "200"])
        self.agent.start()
        self.mock = None

    def tearDown(self):
        code = self.agent.stop()
        if self.mock:
            self.mock.stop()
        log = self.agent.read_log()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(code, 0, log)
        self.assertNotIn(MOCK_PASSWORD, log, "the Exchange password appears in the log")

    def problem(self, resp, status, field=None):
        st, body, ctype, _, raw = resp
        self.assertEqual(st, status, raw)
        self.assertTrue(ctype.startswith("application/problem+json"), ctype)
        if field is not None:
            self.assertEqual(body.get("field"), field, body)
        return body

    def put(self, doc):
        return self.agent.request("PUT", "/api/v1/config", doc)

    def run_cmd(self, cmd):
        st, body, *_ = self.agent.request("POST", "/api/v1/commands", cmd)
        self.assertEqual(st, 202, body)
        return self.agent.wait_final([cmd["id"]], timeout=60)[cmd["id"]]

    def target_status(self):
        st, body, *_ = self.agent.request("GET", "/api/v1/status")
        self.assertEqual(st, 200)
        return body["target"]

    def test_dryrun_config_validation_and_restart(self):
        a = self.agent
        self.problem(a.request("GET", "/api/v1/config"), 404)
        t = self.target_status()
        self.assertEqual((t["kind"], t["source"], t["revision"]), ("dryrun", "bootstrap", 0))
        key = os.path.join(a.state_dir, "secret.key")
        self.assertEqual(file_mode(key), 0o600, "the key file is created on first start, 0600")

        # Validation: every error names its field; nothing is stored.
        self.problem(self.put({"target": {"kind": "cloud"}}), 400, "target.kind")
        self.problem(self.put({"target": {"kind": "dryrun", "max_concurrency": 0}}), 400,
                     "target.max_concurrency")
        self.problem(self.put({"target": {"kind": "dryrun", "username": "x"}}), 400,
                     "target.username")
        self.problem(self.put({"target": {"kind": "onprem",
                                          "servers": [{"url": "https://cas1/PowerShell"}],
                                          "username": "svc"}}), 400, "target.password")
        self.problem(self.put({"target": {"kind": "dryrun"},
                               "schedule": {"quick_sync_interval_s": 5}}), 400,
                     "schedule.quick_sync_interval_s")
        body = self.problem(a.request("PUT", "/api/v1/config", '{"target": {"kind": '), 400)
        self.assertIn("line", body["detail"])
        self.problem(a.request("PUT", "/api/v1/config", {"target": {"kind": "dryrun"}},
                               content_type="text/plain"), 415)
        self.problem(a.request("PUT", "/api/v1/config",
                               '{"target":{"kind":"dryrun","x":[[[[[[[[1]]]]]]]]}}'), 413)
        self.problem(a.request("PUT", "/api/v1/config",
                               json.dumps({"target": {"kind": "dryrun",
                                                      "pad": "x" * (2 * 1024 * 1024)}})), 413)
        r = a.request("DELETE", "/api/v1/config")
        self.problem(r, 405)
        self.assertIn("PUT", r[3].get("Allow", ""))
        self.problem(a.request("GET", "/api/v1/config"), 404)
        self.assertFalse(os.path.exists(os.path.join(a.state_dir, "target.json")))

        # A good document: 200 with the stored document, defaults filled in.
        doc = {"target": {"kind": "dryrun", "latency_ms": 5, "max_concurrency": 3},
               "schedule": {"quick_sync_interval_s": 600},
               "upload": {"url": "https://console.example/inventory"}}
        st, got, *_ = self.put(doc)
        self.assertEqual(st, 200, got)
        self.assertEqual(got["revision"], 1)
        self.assertRegex(got["updated_at"], r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(got["target"]["latency_ms"], 5)
        self.assertEqual(got["target"]["scheduling"], "priority")
        self.assertEqual(got["schedule"], {"quick_sync_interval_s": 600,
                                           "full_sync_interval_s": 86400})
        self.assertEqual(got["upload"]["url"], "https://console.example/inventory")
        st, again, *_ = a.request("GET", "/api/v1/config")
        self.assertEqual((st, again), (200, got))
        path = os.path.join(a.state_dir, "target.json")
        self.assertEqual(file_mode(path), 0o600)
        t = self.target_status()
        self.assertEqual((t["kind"], t["source"], t["revision"]), ("dryrun", "console", 1))
        rec = self.run_cmd(block("rt-1", device="ApplRt1"))
        self.assertEqual(rec["state"], "succeeded", rec)
        # Read-only members of a GET are refused in a PUT.
        self.problem(self.put(got), 400, "revision")

        # It survives a restart.
        self.assertEqual(a.stop(), 0)
        a.start()
        st, after, *_ = a.request("GET", "/api/v1/config")
        self.assertEqual((st, after), (200, got))
        t = self.target_status()
        self.assertEqual((t["source"], t["revision"]), ("console", 1))
        self.assertIn("set by the console (revision 1)", a.read_log())

    def test_onprem_target_against_the_mock(self):
        if not MOCK:
            self.skipTest("needs easgate-mock-exchange")
        a = self.agent
        self.mock = MockExchange(os.path.join(self.tmp, "mock"))
        mbx = "user0004@contoso.example"

        # The bootstrap dry-run bridge answers first; the mock sees nothing.
        rec = self.run_cmd(block("op-0", mailbox=mbx, device="BootPhone"))
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual([c for c in self.mock.calls() if c["cmdlet"] == "Set-CASMailbox"], [])

        doc = {"target": {"kind": "onprem", "servers": [{"url": self.mock.url}],
                          "allow_http_basic": True, "username": "svc-easgate",
                          "password": MOCK_PASSWORD, "version": "auto", "max_concurrency": 2}}
        st, got, _, _, raw = self.put(doc)
        self.assertEqual(st, 200, raw)
        self.assertNotIn(MOCK_PASSWORD.encode(), raw)
        self.assertTrue(got["target"]["password_set"])
        self.assertNotIn("password", got["target"])

        # Commands now go to the mock, without a restart.
        rec = self.run_cmd(block("op-1", mailbox=mbx, device="CfgPhone1"))
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIn("CfgPhone1", self.mock.get("/control/state/mailbox/" + mbx)["blocked"])
        self.assertNotIn("BootPhone", self.mock.get("/control/state/mailbox/" + mbx)["blocked"])
        t = self.target_status()
        self.assertEqual(t["kind"], "onprem")
        self.assertEqual([(s["url"], s["state"]) for s in t["servers"]],
                         [(self.mock.url, "reachable")])

        # The password: never in GET, the state file or the log; files are 0600.
        st, body, _, _, raw = a.request("GET", "/api/v1/config")
        self.assertEqual(st, 200)
        self.assertNotIn(MOCK_PASSWORD.encode(), raw)
        self.assertTrue(body["target"]["password_set"])
        path = os.path.join(a.state_dir, "target.json")
        with open(path, "rb") as f:
            disk = f.read()
        self.assertNotIn(MOCK_PASSWORD.encode(), disk)
        self.assertIn(b"eg1:", disk)
        self.assertEqual(file_mode(path), 0o600)
        self.assertEqual(file_mode(os.path.join(a.state_dir, "secret.key")), 0o600)

        # A PUT without the password keeps it (same kind and username); a dead first server is
        # skipped and shown unreachable with its last error.
        doc2 = {"target": {"kind": "onprem",
                           "servers": [{"url": "http://127.0.0.1:1/PowerShell"},
                                       {"url": self.mock.url}],
                           "allow_http_basic": True, "username": "svc-easgate",
                           "dead_threshold": 1, "connect_timeout_ms": 2000}}
        st, got, *_ = self.put(doc2)
        self.assertEqual(st, 200, got)
        self.assertEqual(got["revision"], 2)
        rec = self.run_cmd(block("op-2", mailbox=mbx, device="CfgPhone2"))
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIn("CfgPhone2", self.mock.get("/control/state/mailbox/" + mbx)["blocked"])
        servers = self.target_status()["servers"]
        self.assertEqual(servers[0]["state"], "unreachable", servers)
        self.assertEqual(servers[0]["last_error"]["code"], "exchange_unreachable", servers)
        self.assertEqual(servers[1]["state"], "reachable", servers)

        # Another username without a password: refused, the running target stays.
        doc3 = json.loads(json.dumps(doc2))
        doc3["target"]["username"] = "someone-else"
        self.problem(self.put(doc3), 400, "target.password")
        self.assertEqual(self.target_status()["revision"], 2)

        # After a restart the sealed password opens again and commands reach the mock.
        self.assertEqual(a.stop(), 0)
        a.start()
        st, after, *_ = a.request("GET", "/api/v1/config")
        self.assertEqual(after["revision"], 2)
        rec = self.run_cmd(block("op-3", mailbox=mbx, device="CfgPhone3"))
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIn("CfgPhone3", self.mock.get("/control/state/mailbox/" + mbx)["blocked"])

        # Back to dry-run: the mock sees no further Set-CASMailbox.
        st, got, *_ = self.put({"target": {"kind": "dryrun"}})
        self.assertEqual(st, 200, got)
        before = len([c for c in self.mock.calls() if c["cmdlet"] == "Set-CASMailbox"])
        rec = self.run_cmd(block("op-4", mailbox=mbx, device="CfgPhone4"))
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(len([c for c in self.mock.calls() if c["cmdlet"] == "Set-CASMailbox"]),
                         before)
        self.assertNotIn(MOCK_PASSWORD, a.read_log())


if __name__ == "__main__":
    EASGATE = os.path.abspath(sys.argv.pop(1))
    PKI_SCRIPT = os.path.abspath(sys.argv.pop(1))
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        MOCK = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
