#!/usr/bin/env python3
"""Kerberos and NTLM to on-prem Exchange with WinRM message encryption (psrp-wire.md section 14).

A throwaway MIT realm (tests/krb/realm.sh: KDC on 127.0.0.1, easgate@EASGATE.TEST with a
password and a client keytab, short@EASGATE.TEST whose tickets live 5 seconds, the service
keytab of HTTP/localhost, gss-ntlmssp's users file) and the mock Exchange as GSSAPI acceptor
(--gss-keytab; no Basic users, so nothing gets in any other way). Over its plain-http listener
every body after the handshake must be sealed (multipart/encrypted) and every reply is; the
mock's GET /control/auth counts handshakes per mechanism, sealed requests and replies, refused
unsealed bodies and failures.

- easgate-ps runs a cmdlet over HTTP+Kerberos (password, keytab; schemes Kerberos and
  Negotiate), HTTP+NTLM, and HTTPS+Kerberos with channel binding (plain bodies);
- the agent (PUT /api/v1/config with auth "kerberos" / "ntlm") runs commands over the same;
- failures end with a clear text in easgate-ps's stderr or the command's error: a wrong
  password, clock skew (the client under `faketime -f +1h`), a tampered sealed reply (the
  mock's gss_tamper fault), an expired ticket (renewed from the password; and when the
  password changed meanwhile, the renewal's refusal), an unsealed body (refused by the mock).

Usage: test_gss.py EASGATE EASGATE_PS MOCK PKI_SCRIPT   (ctest passes all four)
Exit 77 (skipped) when krb5kdc is not installed. Standard library only.
"""
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import harness as H

_TMP = None
_PKI = None
REALM = None
MAX_ATTEMPTS = 2
# A wrong password: MIT krb5 says "Decrypt integrity check failed" when it cannot decrypt the
# KDC's pre-authentication reply (easgate adds what that means), else "Password incorrect".
WRONG_PASSWORD = (r"(password incorrect|preauthentication failed|"
                  r"password or keytab does not match)")


def setUpModule():
    global _TMP, _PKI, REALM
    _TMP = tempfile.mkdtemp(prefix="easgate-gss-")
    _PKI = H.make_pki(os.path.join(_TMP, "pki"))
    REALM = H.realm(os.path.join(_TMP, "realm"))


def tearDownModule():
    H.stop_realm()
    shutil.rmtree(_TMP, ignore_errors=True)


FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/faketime/libfaketimeMT.so.1")


def have_faketime():
    return shutil.which("faketime") is not None and any(map(os.path.exists, FAKETIME_LIBS))


def faketime_env(offset):
    """A command prefix that runs a daemon with its clock moved by offset ("+1h"). The library
    is preloaded through env(1) rather than faketime(1), which stays as the parent process
    (a SIGTERM would end it, not the daemon)."""
    lib = next(p for p in FAKETIME_LIBS if os.path.exists(p))
    # under AddressSanitizer the preloaded library comes before the ASan runtime: allowed here
    asan = os.environ.get("ASAN_OPTIONS", "")
    asan = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return ["env", "LD_PRELOAD=" + lib, "FAKETIME=" + offset, "ASAN_OPTIONS=" + asan]


def write_secret_file(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)
    H.add_input(path)
    return path


def kadmin(query):
    """kadmin.local on the test realm (KRB5_CONFIG / KRB5_KDC_PROFILE are in os.environ)."""
    r = subprocess.run(["kadmin.local", "-r", REALM.env["EG_KRB_REALM"], "-q", query],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PATH="/usr/sbin:/sbin:" + os.environ["PATH"]))
    if r.returncode != 0:
        raise AssertionError("kadmin.local %r: %s %s" % (query, r.stdout, r.stderr))


class MockCase(unittest.TestCase):
    """One GSSAPI mock per test class (AUTH: kerberos or ntlm; TLS: https with the test PKI)."""
    AUTH = "kerberos"
    TLS = False

    @classmethod
    def setUpClass(cls):
        H.ntlm_leak_unwinding(cls.AUTH == "ntlm")  # sanitizer builds (harness.py)
        cls.tmp = tempfile.mkdtemp(prefix="gss-%s-" % cls.__name__, dir=_TMP)
        extra = ["--tls-cert", _PKI["server"], "--tls-key", _PKI["server-key"]] if cls.TLS else []
        cls.mock = H.Mock(os.path.join(cls.tmp, "mock"), mailboxes=5, devices=5, seed=5,
                          extra=extra, auth=cls.AUTH)
        if cls.TLS:
            cls.mock.url = cls.mock.url.replace("http://", "https://", 1)

    @classmethod
    def tearDownClass(cls):
        code = cls.mock.stop()
        assert code == 0, "the mock exited %s:\n%s" % (code, H.read_text(cls.mock.log)[-4000:])

    def setUp(self):
        self.mock.faults_reset()
        self.mock.calls_reset()
        self.mock.call("DELETE", "/control/auth")

    def ps_auth(self, auth=None, principal=None, password_file=None, keytab=None):
        args = ["--auth", auth or self.AUTH, "--principal", principal or self.mock.gss_principal]
        if keytab:
            args += ["--keytab", keytab]
        else:
            args += ["--password-file", password_file or self.mock.gss_pwfile]
        if self.TLS:
            args += ["--cacert", _PKI["ca"]]
        return args

    def ps_ok(self, *auth_args, wrapper=()):
        rc, objs, err = self.mock.ps("Get-CASMailbox", "-p", "Identity=user0001",
                                     auth_args=list(auth_args), wrapper=wrapper)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(objs), 1, objs)
        self.assertIn("user0001", str(objs[0]), objs)
        return objs

    def ps_fails(self, *auth_args, wrapper=()):
        rc, objs, err = self.mock.ps("Get-CASMailbox", "-p", "Identity=user0001",
                                     auth_args=list(auth_args), wrapper=wrapper)
        self.assertEqual(rc, 3, "expected 'endpoint unusable', got %d: %s" % (rc, err))
        self.assertEqual(objs, [])
        for s in H.SECRETS:
            self.assertNotIn(s, err)
        return err


class PsKerberosHttp(MockCase):
    AUTH = "kerberos"

    def test_password_sealed(self):
        self.ps_ok(*self.ps_auth())
        st = self.mock.auth_stats()
        self.assertGreaterEqual(st["kerberos"], 1, st)
        self.assertEqual(st["ntlm"], 0, st)
        self.assertGreater(st["sealed_requests"], 0, st)
        self.assertEqual(st["sealed_requests"], st["sealed_replies"], st)
        self.assertEqual(st["plain_rejected"], 0, st)
        self.assertEqual(st["last_user"], REALM.env["EG_KRB_USER"], st)
        # the mock ran the cmdlet for the authenticated principal
        self.assertTrue(self.mock.calls(), "no cmdlet reached the mock")

    def test_keytab(self):
        self.ps_ok(*self.ps_auth(keytab=REALM.client_keytab))
        self.assertGreater(self.mock.auth_stats()["sealed_requests"], 0)

    def test_negotiate_picks_kerberos(self):
        self.ps_ok(*self.ps_auth(auth="negotiate"))
        st = self.mock.auth_stats()
        self.assertGreaterEqual(st["kerberos"], 1, st)
        self.assertGreater(st["sealed_requests"], 0, st)

    def test_wrong_password(self):
        bad = write_secret_file(self.tmp, "bad-krb-pw", "not-the-password")
        err = self.ps_fails(*self.ps_auth(password_file=bad))
        self.assertIn("easgate@EASGATE.TEST", err)
        self.assertRegex(err, re.compile(WRONG_PASSWORD, re.I))
        self.assertEqual(self.mock.auth_stats()["sealed_requests"], 0)

    def test_unknown_principal(self):
        err = self.ps_fails(*self.ps_auth(principal="nobody@EASGATE.TEST"))
        self.assertIn("nobody@EASGATE.TEST", err)
        self.assertRegex(err, re.compile(r"not found|unknown", re.I))

    @unittest.skipUnless(have_faketime(), "faketime is not installed")
    def test_clock_skew(self):
        err = self.ps_fails(*self.ps_auth(), wrapper=faketime_env("+1h"))
        self.assertRegex(err, re.compile(r"clock skew", re.I))

    def test_tampered_reply(self):
        self.mock.faults({"gss_tamper": 1000})
        err = self.ps_fails(*self.ps_auth())
        self.assertRegex(err, re.compile(r"integrity|tamper|modified|signature|seal", re.I))
        self.assertGreater(self.mock.auth_stats()["tampered"], 0)

    def test_challenge_offers_gss_only(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.mock.ports["exchange"], timeout=30)
        try:
            conn.request("POST", "/PowerShell", body=b"<s:Envelope/>",
                         headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 401)
            offered = [v for k, v in r.getheaders() if k.lower() == "www-authenticate"]
            self.assertIn("Negotiate", offered)
            self.assertIn("Kerberos", offered)
            self.assertFalse([v for v in offered if v.startswith("Basic")], offered)
        finally:
            conn.close()

    @unittest.skipUnless(shutil.which("curl") and shutil.which("kinit"), "no curl or kinit")
    def test_unsealed_body_is_refused(self):
        """A client that authenticates (curl --negotiate: libcurl's SPNEGO, which cannot seal)
        and sends plain SOAP over http gets 400 with the reason, as WinRM answers with
        AllowUnencrypted = false."""
        cc = "FILE:" + os.path.join(self.tmp, "curl-ccache")
        env = dict(os.environ, KRB5CCNAME=cc)
        principal, password = REALM.credentials("kerberos")
        subprocess.run(["kinit", principal], input=password + "\n", env=env, check=True,
                       capture_output=True, text=True, timeout=60)
        r = subprocess.run(["curl", "-s", "--negotiate", "-u", ":", "-o", "-", "-w",
                            "\n%{http_code}", "-H",
                            "Content-Type: application/soap+xml;charset=UTF-8",
                            "--data-binary", "<s:Envelope/>", self.mock.url],
                           env=env, capture_output=True, text=True, timeout=60)
        body, _, code = r.stdout.rpartition("\n")
        if code == "401" and not self.mock.auth_stats()["handshakes"]:
            self.skipTest("this curl has no GSS-API Negotiate")
        self.assertEqual(code, "400", r.stdout + r.stderr)
        self.assertIn("unencrypted traffic is not allowed", body)
        st = self.mock.auth_stats()
        self.assertEqual(st["plain_rejected"], 1, st)
        self.assertEqual(self.mock.calls(), [])


class PsNtlmHttp(MockCase):
    AUTH = "ntlm"

    def test_password_sealed(self):
        self.ps_ok(*self.ps_auth())
        st = self.mock.auth_stats()
        self.assertGreaterEqual(st["ntlm"], 1, st)
        self.assertEqual(st["kerberos"], 0, st)
        self.assertGreater(st["sealed_requests"], 0, st)
        self.assertGreater(st["sealed_replies"], 0, st)
        self.assertEqual(st["plain_rejected"], 0, st)

    def test_wrong_password(self):
        bad = write_secret_file(self.tmp, "bad-ntlm-pw", "not-the-password")
        err = self.ps_fails(*self.ps_auth(password_file=bad))
        self.assertRegex(err, re.compile(r"authentication|refused|401", re.I))
        st = self.mock.auth_stats()
        self.assertGreater(st["failures"], 0, st)
        self.assertEqual(st["sealed_requests"], 0, st)

    def test_tampered_reply(self):
        self.mock.faults({"gss_tamper": 1000})
        err = self.ps_fails(*self.ps_auth())
        self.assertRegex(err, re.compile(r"integrity|tamper|modified|signature|seal", re.I))


class PsKerberosHttps(MockCase):
    """HTTPS: bodies plain, the context carries tls-server-end-point channel binding."""
    AUTH = "kerberos"
    TLS = True

    def test_channel_binding(self):
        self.ps_ok(*self.ps_auth())
        st = self.mock.auth_stats()
        self.assertGreaterEqual(st["kerberos"], 1, st)
        self.assertFalse(st["sealing"], st)
        self.assertEqual(st["sealed_requests"], 0, st)
        self.assertEqual(st["failures"], 0, st)


# ---- the agent ---------------------------------------------------------------------------------

class AgentCase(MockCase):
    """An agent per test, configured through PUT /api/v1/config against the class's mock."""

    def start_agent(self, target_auth, wrapper=()):
        wd = tempfile.mkdtemp(prefix="agent-", dir=self.tmp)
        agent = H.Agent(wd, ["--max-attempts", str(MAX_ATTEMPTS), "--retry-base-ms", "50",
                             "--retry-max-ms", "100"], pki=_PKI, wrapper=wrapper)
        self.addCleanup(self.stop_agent, agent)
        t = {"kind": "onprem", "servers": [{"url": self.mock.url}], "max_concurrency": 2,
             "dead_threshold": 100, "failure_window_ms": 1000}
        t.update(target_auth)
        st, body, raw, _ = agent.request("PUT", "/api/v1/config", {"target": t})
        self.assertEqual(st, 200, raw)
        # GET shows the method and never the secret
        st, body, raw, _ = agent.request("GET", "/api/v1/config")
        self.assertEqual(st, 200, raw)
        self.assertEqual(body["target"]["auth"], target_auth["auth"], body)
        self.assertNotIn("password", body["target"])
        return agent

    def stop_agent(self, agent):
        code = agent.stop()
        self.assertEqual(code, 0, agent.read_log()[-4000:])

    def block(self, agent, tag, device_id=None):
        return agent.run({"id": "%s-%d" % (tag, int(time.time() * 1000) % 10 ** 9),
                          "type": "device.block", "mailbox": "user0002@contoso.example",
                          "device_id": device_id or "Phone-" + tag}, timeout=90)

    def assertFailedWith(self, rec, code, pattern):
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(rec["error"]["code"], code, rec)
        self.assertRegex(rec["error"]["message"], re.compile(pattern, re.I), rec)
        for s in H.SECRETS:
            self.assertNotIn(s, str(rec))


class AgentKerberosHttp(AgentCase):
    AUTH = "kerberos"

    def test_password(self):
        principal, password = REALM.credentials("kerberos")
        agent = self.start_agent({"auth": "kerberos", "principal": principal,
                                  "password": password})
        rec = self.block(agent, "krbpw")
        self.assertEqual(rec["state"], "succeeded", rec)
        st = self.mock.auth_stats()
        self.assertGreaterEqual(st["kerberos"], 1, st)
        self.assertGreater(st["sealed_requests"], 0, st)
        self.assertEqual(st["plain_rejected"], 0, st)
        self.assertIn("Phone-krbpw", self.mock.mailbox("user0002@contoso.example")["blocked"])

    def test_keytab(self):
        agent = self.start_agent({"auth": "kerberos", "principal": REALM.env["EG_KRB_USER"],
                                  "keytab": REALM.client_keytab})
        rec = self.block(agent, "krbkt")
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertGreater(self.mock.auth_stats()["sealed_requests"], 0)

    def test_wrong_password(self):
        agent = self.start_agent({"auth": "kerberos", "principal": REALM.env["EG_KRB_USER"],
                                  "password": "not-the-password"})
        rec = self.block(agent, "krbbad")
        self.assertFailedWith(rec, "permission_denied",
                              r"easgate@EASGATE\.TEST.*" + WRONG_PASSWORD)
        self.assertEqual(rec["attempts"], 1, rec)  # not retried: it cannot get better alone
        self.assertEqual(self.mock.auth_stats()["sealed_requests"], 0)

    @unittest.skipUnless(have_faketime(), "faketime is not installed")
    def test_clock_skew(self):
        principal, password = REALM.credentials("kerberos")
        agent = self.start_agent({"auth": "kerberos", "principal": principal,
                                  "password": password}, wrapper=faketime_env("+1h"))
        rec = self.block(agent, "skew")
        self.assertFailedWith(rec, "permission_denied", r"clock skew")

    def test_tampered_reply(self):
        principal, password = REALM.credentials("kerberos")
        agent = self.start_agent({"auth": "kerberos", "principal": principal,
                                  "password": password})
        self.mock.faults({"gss_tamper": 100000})
        rec = self.block(agent, "tamper")
        self.assertEqual(rec["state"], "failed", rec)
        self.assertRegex(rec["error"]["message"],
                         re.compile(r"integrity|tamper|modified|signature|seal", re.I), rec)
        self.assertGreater(self.mock.auth_stats()["tampered"], 0)
        # the fault gone, the same agent works again
        self.mock.faults_reset()
        rec = self.block(agent, "tamper-after")
        self.assertEqual(rec["state"], "succeeded", rec)

    def test_expired_ticket_is_renewed(self):
        agent = self.start_agent({"auth": "kerberos", "principal": REALM.env["EG_KRB_SHORT_USER"],
                                  "password": REALM.env["EG_KRB_SHORT_PASSWORD"]})
        rec = self.block(agent, "short1")
        self.assertEqual(rec["state"], "succeeded", rec)
        before = self.mock.auth_stats()["handshakes"]
        time.sleep(6)  # the 5-second tickets are gone
        # A kept-alive connection stays authenticated (as with IIS); a new one needs a new
        # service ticket: drop the next connection so that the agent must connect again.
        self.mock.faults({"drop_connections": {"count": 1, "when": "before"}})
        rec = self.block(agent, "short2")
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertGreater(self.mock.auth_stats()["handshakes"], before)
        self.assertIn("Phone-short2", self.mock.mailbox("user0002@contoso.example")["blocked"])

    def test_expired_ticket_and_changed_password(self):
        """Tickets expire after the account's password changed: the renewal is refused with
        the KDC's reason, not an opaque 401."""
        short = REALM.env["EG_KRB_SHORT_USER"]
        agent = self.start_agent({"auth": "kerberos", "principal": short,
                                  "password": REALM.env["EG_KRB_SHORT_PASSWORD"]})
        rec = self.block(agent, "cpw1")
        self.assertEqual(rec["state"], "succeeded", rec)
        newpw = "Changed-%d" % os.getpid()
        H.add_secret(newpw)
        kadmin("cpw -pw %s %s" % (newpw, short))
        self.addCleanup(kadmin, "cpw -pw %s %s" % (REALM.env["EG_KRB_SHORT_PASSWORD"], short))
        time.sleep(6)
        self.mock.faults({"drop_connections": {"count": 1, "when": "before"}})
        rec = self.block(agent, "cpw2")
        self.assertEqual(rec["state"], "failed", rec)
        self.assertRegex(rec["error"]["message"],
                         re.compile(r"short@EASGATE\.TEST.*" + WRONG_PASSWORD, re.I),
                         rec)


class AgentNtlmHttp(AgentCase):
    AUTH = "ntlm"

    def test_password(self):
        principal, password = REALM.credentials("ntlm")
        agent = self.start_agent({"auth": "ntlm", "principal": principal, "password": password})
        rec = self.block(agent, "ntlm")
        self.assertEqual(rec["state"], "succeeded", rec)
        st = self.mock.auth_stats()
        self.assertGreaterEqual(st["ntlm"], 1, st)
        self.assertGreater(st["sealed_requests"], 0, st)
        self.assertEqual(st["plain_rejected"], 0, st)

    def test_wrong_password(self):
        principal, _ = REALM.credentials("ntlm")
        agent = self.start_agent({"auth": "ntlm", "principal": principal,
                                  "password": "not-the-password"})
        rec = self.block(agent, "ntlmbad")
        self.assertFailedWith(rec, "permission_denied", r"credentials|authentication")
        self.assertGreater(self.mock.auth_stats()["failures"], 0)


if __name__ == "__main__":
    H.set_binaries(easgate=sys.argv.pop(1), easgate_ps=sys.argv.pop(1), mock=sys.argv.pop(1),
                   pki_script=sys.argv.pop(1))
    if not shutil.which("krb5kdc") and not os.path.exists("/usr/sbin/krb5kdc"):
        print("krb5kdc is not installed: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
