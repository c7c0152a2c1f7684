#!/usr/bin/env python3
"""test_rest.py - integration test of easgate-mock-exchange's Exchange Online REST front end
(rest_server.c): the OAuth2 token endpoint with a certificate-signed client assertion, and
POST /adminapi/beta/{tenant}/InvokeCommand with bearer tokens, paging, errors and faults.

Python standard library only; the RSA key, the self-signed certificate and the RS256 signature
of the client assertion are made with the openssl command-line tool.

Usage: test_rest.py PATH/TO/easgate-mock-exchange [test-name-substring ...]
"""

import base64
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid

TENANT_GUID = "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
APP_ID = "3c5d7e9f-1111-4222-8333-444455556666"
MBX = "user%04d@contoso.example"
TOO_MANY = "You have reached the maximum number of concurrent requests per tenant"


class TestFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise TestFailure(what)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Pki:
    """An RSA key and a self-signed certificate (the app's), plus a second unrelated pair."""

    def __init__(self, d):
        self.d = d
        self.key, self.cert = self.make("app")
        self.other_key, self.other_cert = self.make("other")
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5t = b64url(hashlib.sha1(der).digest())
        self.x5t256 = b64url(hashlib.sha256(der).digest())

    def make(self, name):
        key = os.path.join(self.d, name + ".key")
        cert = os.path.join(self.d, name + ".pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "2", "-subj", "/CN=easgate-test-" + name],
                       check=True, capture_output=True)
        return key, cert

    def sign(self, data, key):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data,
                              check=True, capture_output=True).stdout

    def assertion(self, aud, key=None, header=None, **claims):
        now = int(time.time())
        h = header or {"alg": "RS256", "typ": "JWT", "x5t": self.x5t}
        c = {"aud": aud, "iss": APP_ID, "sub": APP_ID, "jti": str(uuid.uuid4()),
             "nbf": now - 5, "exp": now + 600}
        for k, v in claims.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        signing = (b64url(json.dumps(h).encode()) + "." + b64url(json.dumps(c).encode()))
        sig = self.sign(signing.encode(), key or self.key)
        return signing + "." + b64url(sig)


class Server:
    def __init__(self, binary, pki, args=()):
        self.dir = tempfile.mkdtemp(prefix="mock-rest-")
        self.ports_file = os.path.join(self.dir, "ports.json")
        cmd = [binary, "--control", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--ports-file",
               self.ports_file, "--profile", "online", "--mailboxes", "20", "--devices", "2500",
               "--tenant", TENANT_GUID, "--app-id", APP_ID, "--app-cert", pki.cert,
               "--log-level", os.environ.get("MOCK_LOG_LEVEL", "warn")] + list(args)
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not os.path.exists(self.ports_file):
            if self.p.poll() is not None:
                raise TestFailure("server exited: %s" % self.logtext())
            if time.time() > deadline:
                raise TestFailure("no ports file")
            time.sleep(0.05)
        with open(self.ports_file) as f:
            ports = json.load(f)
        self.port = ports["exchange"]
        self.control = ports["control"]

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def ctl(self, method, path, body=None, expect=200):
        c = http.client.HTTPConnection("127.0.0.1", self.control, timeout=120)
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data,
                  headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        payload = r.read()
        c.close()
        check(r.status == expect, "%s %s: HTTP %d %s" % (method, path, r.status, payload[:400]))
        return json.loads(payload) if payload else None

    def request(self, path, body, headers):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request("POST", path, body=body, headers=headers)
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def token_url(self, tenant=TENANT_GUID):
        return "http://127.0.0.1:%d/%s/oauth2/v2.0/token" % (self.port, tenant)

    def token_request(self, tenant=TENANT_GUID, **fields):
        f = {"grant_type": "client_credentials", "client_id": APP_ID,
             "scope": "https://outlook.office365.com/.default",
             "client_assertion_type":
                 "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
        f.update(fields)
        f = {k: v for k, v in f.items() if v is not None}
        st, hdrs, body = self.request("/%s/oauth2/v2.0/token" % tenant,
                                      urllib.parse.urlencode(f),
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        return st, json.loads(body)

    def invoke(self, token, cmdlet, params=None, tenant=TENANT_GUID, path=None, page=None):
        body = json.dumps({"CmdletInput": {"CmdletName": cmdlet, "Parameters": params or {}}})
        h = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
             "X-CmdletName": cmdlet, "X-ResponseFormat": "json"}
        if token:
            h["Authorization"] = "Bearer " + token
        if page:
            h["Prefer"] = "odata.maxpagesize=%d" % page
        st, hdrs, raw = self.request(path or "/adminapi/beta/%s/InvokeCommand" % tenant, body, h)
        try:
            j = json.loads(raw)
        except ValueError:
            j = raw.decode("utf-8", "replace")
        return st, hdrs, j

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                rc = self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise TestFailure("the server did not stop on SIGTERM")
            check(rc == 0, "exit status %d after SIGTERM: %s" % (rc, self.logtext()))


def get_token(srv, pki, tenant=TENANT_GUID):
    st, j = srv.token_request(tenant, client_assertion=pki.assertion(srv.token_url(tenant)))
    check(st == 200, "token: HTTP %d %s" % (st, j))
    return j


def jwt_claims(tok):
    p = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def calls(srv):
    j = srv.ctl("GET", "/control/calls")
    return j["calls"] if isinstance(j, dict) else j


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def t_token(srv, pki):
    j = get_token(srv, pki)
    check(j["token_type"] == "Bearer" and j["expires_in"] == 3599 and
          j["ext_expires_in"] == 3599, "token response %s" % j)
    c = jwt_claims(j["access_token"])
    check(c["aud"] == "https://outlook.office365.com" and "Exchange.ManageAsApp" in c["roles"]
          and c["tid"] == TENANT_GUID and c["appid"] == APP_ID and c["exp"] > time.time(),
          "access token claims %s" % c)
    # by domain too, and with x5t#S256 instead of x5t
    get_token(srv, pki, TENANT_DOMAIN)
    a = pki.assertion(srv.token_url(), header={"alg": "RS256", "typ": "JWT",
                                               "x5t#S256": pki.x5t256})
    st, j = srv.token_request(client_assertion=a)
    check(st == 200, "x5t#S256: %d %s" % (st, j))


def t_token_errors(srv, pki):
    url = srv.token_url()
    # signed by another key, announced with the app certificate's x5t: bad signature
    st, j = srv.token_request(client_assertion=pki.assertion(url, key=pki.other_key))
    check(st == 400 and j["error"] == "invalid_client" and j["error_codes"] == [700027] and
          j["error_description"].startswith("AADSTS700027:"), "bad signature: %d %s" % (st, j))
    # an unknown certificate
    st, j = srv.token_request(client_assertion=pki.assertion(
        url, key=pki.other_key, header={"alg": "RS256", "x5t": b64url(b"x" * 20)}))
    check(st == 400 and j["error"] == "invalid_client" and 700027 in j["error_codes"],
          "unknown cert: %d %s" % (st, j))
    # a tampered payload keeps the signature of another one
    good = pki.assertion(url).split(".")
    other = pki.assertion(url, sub="someone-else").split(".")
    st, j = srv.token_request(client_assertion=".".join([good[0], other[1], good[2]]))
    check(st == 400 and j["error"] == "invalid_client", "tampered: %d %s" % (st, j))
    # wrong client_id, expired assertion, wrong audience, no jti, wrong scope, wrong grant
    st, j = srv.token_request(client_id=str(uuid.uuid4()), client_assertion=pki.assertion(url))
    check(st == 400 and j["error"] == "unauthorized_client", "client_id: %d %s" % (st, j))
    now = int(time.time())
    st, j = srv.token_request(client_assertion=pki.assertion(url, nbf=now - 7200,
                                                             exp=now - 3600))
    check(st == 400 and j["error"] == "invalid_grant" and 700024 in j["error_codes"],
          "expired assertion: %d %s" % (st, j))
    st, j = srv.token_request(client_assertion=pki.assertion(
        "http://127.0.0.1:1/other-tenant/oauth2/v2.0/token"))
    check(st == 400 and j["error"] == "invalid_grant", "aud: %d %s" % (st, j))
    st, j = srv.token_request(client_assertion=pki.assertion(url, jti=None))
    check(st == 400 and j["error"] == "invalid_grant", "jti: %d %s" % (st, j))
    st, j = srv.token_request(scope="https://graph.microsoft.com/.default",
                              client_assertion=pki.assertion(url))
    check(st == 400 and j["error"] == "invalid_scope", "scope: %d %s" % (st, j))
    st, j = srv.token_request(grant_type="password", client_assertion=pki.assertion(url))
    check(st == 400 and j["error"] == "unsupported_grant_type", "grant: %d %s" % (st, j))
    st, j = srv.token_request(client_assertion="not-a-jwt")
    check(st == 400 and j["error"] == "invalid_request", "malformed: %d %s" % (st, j))
    st, j = srv.token_request("other.onmicrosoft.com",
                              client_assertion=pki.assertion(
                                  srv.token_url("other.onmicrosoft.com")))
    check(st == 400 and 90002 in j["error_codes"], "unknown tenant: %d %s" % (st, j))


def t_cas_mailbox(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 200, "Get-CASMailbox: %d %s" % (st, j))
    check(h["content-type"].startswith("application/json;odata.metadata=minimal"),
          "content type %s" % h["content-type"])
    check(j["@odata.context"].endswith("/$metadata#Collection(Exchange.GenericHashTable)") and
          j["adminapi.warnings@odata.type"] == "#Collection(String)" and
          j["@adminapi.warnings"] == [] and "@odata.nextLink" not in j, "envelope %s" % j)
    check(len(j["value"]) == 1, "one mailbox: %s" % j["value"])
    m = j["value"][0]
    check(m.get("PrimarySmtpAddress") == MBX % 1 and "_types" not in m, "object %s" % m)
    # v1.0 and the domain in the URL work too
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1},
                          path="/adminapi/v1.0/%s/InvokeCommand" % TENANT_DOMAIN)
    check(st == 200 and len(j["value"]) == 1, "v1.0 by domain: %d %s" % (st, j))


def t_set_cas_mailbox(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    srv.ctl("DELETE", "/control/calls")
    before = srv.ctl("GET", "/control/state/mailbox/" + MBX % 2)
    st, h, j = srv.invoke(tok, "Set-CASMailbox", {
        "Identity": MBX % 2,
        "ActiveSyncAllowedDeviceIDs": {"@odata.type": "#Exchange.GenericHashTable",
                                       "Add": ["ApplF17ABC", "ApplF17DEF"]}})
    check(st == 200 and j["value"] == [], "Set-CASMailbox Add: %d %s" % (st, j))
    st, h, j = srv.invoke(tok, "Set-CASMailbox", {
        "Identity": MBX % 2,
        "ActiveSyncAllowedDeviceIDs": {"@odata.type": "#Exchange.GenericHashTable",
                                       "Remove": ["ApplF17ABC"]}})
    check(st == 200 and j["value"] == [], "Set-CASMailbox Remove: %d %s" % (st, j))
    after = srv.ctl("GET", "/control/state/mailbox/" + MBX % 2)
    check(sorted(after["allowed"]) == sorted(before["allowed"] + ["ApplF17DEF"]),
          "allowed list %s -> %s" % (before["allowed"], after["allowed"]))
    cs = [c for c in calls(srv) if c["cmdlet"] == "Set-CASMailbox"]
    check(len(cs) == 2, "recorded calls %s" % cs)
    check(cs[0]["parameters"]["ActiveSyncAllowedDeviceIDs"] == {"Add": ["ApplF17ABC",
                                                                        "ApplF17DEF"]},
          "recorded Add %s" % cs[0]["parameters"])
    check(cs[1]["parameters"]["ActiveSyncAllowedDeviceIDs"] == {"Remove": ["ApplF17ABC"]},
          "recorded Remove %s" % cs[1]["parameters"])
    check(cs[0]["parameters"]["Identity"] == MBX % 2 and cs[0]["status"] == "Completed",
          "recorded %s" % cs[0])
    # switches (true), numbers, null and arrays reach the engine as typed values
    srv.ctl("DELETE", "/control/calls")
    st, h, j = srv.invoke(tok, "Get-MobileDevice", {"Mailbox": MBX % 3, "ResultSize": 5})
    check(st == 200, "ResultSize 5: %d %s" % (st, j))
    c = calls(srv)[-1]
    check(c["parameters"]["ResultSize"] == 5, "number parameter %s" % c)


def t_paging(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    srv.ctl("DELETE", "/control/calls")
    seen = []
    pages = 0
    st, h, j = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": "Unlimited"}, page=1000)
    while True:
        check(st == 200, "page %d: %d %s" % (pages, st, j))
        pages += 1
        check(len(j["value"]) <= 1000, "page size %d" % len(j["value"]))
        seen += [d["Guid"] for d in j["value"]]
        link = j.get("@odata.nextLink")
        if not link:
            break
        check(len(j["value"]) == 1000, "a non-last page is full")
        u = urllib.parse.urlsplit(link)
        check(u.port == srv.port and u.path.endswith("/InvokeCommand"), "nextLink %s" % link)
        st, h, j = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": "Unlimited"},
                              path=u.path + "?" + u.query, page=1000)
        check(pages < 10, "too many pages")
    check(pages == 3, "pages %d" % pages)
    check(len(seen) == 2500 and len(set(seen)) == 2500, "devices %d (%d distinct)"
          % (len(seen), len(set(seen))))
    info = srv.ctl("GET", "/control/state/org")
    check(info["devices"] == 2500, "org devices %s" % info.get("devices"))
    # a replayed link serves the same page again; another body is refused
    st, h, j2 = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": "Unlimited"},
                           path=u.path + "?" + u.query, page=1000)
    check(st == 200 and [d["Guid"] for d in j2["value"]] == seen[2000:], "replay")
    st, h, j2 = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": 10},
                           path=u.path + "?" + u.query)
    check(st == 400, "other body on a cursor: %d" % st)
    st, h, j2 = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": "Unlimited"},
                           path=u.path + "?$skiptoken=00112233445566778899aabbccddeeff")
    check(st == 400, "unknown cursor: %d" % st)
    # small pages
    st, h, j = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": 25}, page=10)
    check(st == 200 and len(j["value"]) == 10 and "@odata.nextLink" in j, "maxpagesize 10")


def t_resultsize_warning(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    st, h, j = srv.invoke(tok, "Get-MobileDevice", {"ResultSize": 30})
    check(st == 200 and len(j["value"]) == 30 and "@odata.nextLink" not in j,
          "ResultSize 30: %d %s" % (st, str(j)[:300]))
    check(any("There are more results available" in w for w in j["@adminapi.warnings"]),
          "ResultSize warning %s" % j["@adminapi.warnings"])


def t_not_found(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": "nobody@contoso.example"})
    check(st == 404, "not found: %d %s" % (st, j))
    e = j["error"]
    d = e["details"][0]["message"].split("|")
    check(e["code"] == "NotFound" and len(d) == 3 and d[0].startswith("Ex") and
          d[1] == "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException" and
          "nobody@contoso.example" in d[2], "error %s" % e)
    check(e["innererror"]["type"] == "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
          and e["innererror"]["internalexception"]["message"], "innererror %s" % e)
    check("ManagementObjectNotFoundException" in h.get("x-exceptiontype", ""),
          "X-ExceptionType %s" % h)
    # a parameter error is 400
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"NoSuchParameter": "x"})
    check(st == 400 and "error" in j, "bad parameter: %d %s" % (st, j))


def t_unauthorized(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    for name, t, tenant in [("no token", None, TENANT_GUID),
                            ("garbage", "abc.def.ghi", TENANT_GUID),
                            ("wrong tenant", tok, "fabrikam.onmicrosoft.com"),
                            ("wrong tenant guid", tok, str(uuid.uuid4()))]:
        st, h, j = srv.invoke(t, "Get-CASMailbox", {"Identity": MBX % 1}, tenant=tenant)
        check(st == 401 and j["error"]["code"] == "Unauthorized",
              "%s: %d %s" % (name, st, j))
    # a token re-signed with another key is refused
    parts = tok.split(".")
    forged = parts[0] + "." + parts[1] + "." + b64url(b"\0" * 32)
    st, h, j = srv.invoke(forged, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 401, "forged: %d" % st)


def t_expired(binary, pki):
    srv = Server(binary, pki, ["--token-lifetime-s", "1", "--devices", "5"])
    try:
        j = get_token(srv, pki)
        check(j["expires_in"] == 1, "lifetime %s" % j)
        st, h, r = srv.invoke(j["access_token"], "Get-CASMailbox", {"Identity": MBX % 1})
        check(st == 200, "fresh token: %d %s" % (st, r))
        time.sleep(2.2)
        st, h, r = srv.invoke(j["access_token"], "Get-CASMailbox", {"Identity": MBX % 1})
        check(st == 401, "expired token: %d %s" % (st, r))
    finally:
        srv.stop()


def t_faults(srv, pki):
    tok = get_token(srv, pki)["access_token"]
    f = srv.ctl("POST", "/control/faults", {"rest_429": {"count": 2, "retry_after": 7}})
    check(f["rest_429"] == {"count": 2, "retry_after": 7}, "faults %s" % f)
    for _ in range(2):
        st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
        check(st == 429 and h.get("retry-after") == "7" and TOO_MANY in str(j),
              "429: %d %s %s" % (st, h, j))
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 200, "after the 429s: %d" % st)
    # the engine's quota fault becomes 429 too
    srv.ctl("POST", "/control/faults", {"quota": {"cmdlet": "Get-CASMailbox", "next_k": 1,
                                                  "delay_ms": 3000}})
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 429 and h.get("retry-after") == "3", "quota: %d %s %s" % (st, h, j))
    # http_error applies to REST
    srv.ctl("POST", "/control/faults", {"http_error": {"status": 503, "count": 1,
                                                       "retry_after": 2}})
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 503 and h.get("retry-after") == "2", "http_error: %d %s" % (st, h))
    # drop_connections applies to REST
    srv.ctl("POST", "/control/faults", {"drop_connections": 1})
    try:
        st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
        raise TestFailure("drop: got HTTP %d" % st)
    except (http.client.HTTPException, ConnectionError, OSError) as e:
        if isinstance(e, TestFailure):
            raise
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 200, "after the drop: %d" % st)
    # a listener taken down refuses REST as well
    srv.ctl("POST", "/control/listener/0/down")
    try:
        try:
            srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
            raise TestFailure("listener down: answered")
        except (ConnectionError, OSError, http.client.HTTPException):
            pass
    finally:
        srv.ctl("POST", "/control/listener/0/up")
    st, h, j = srv.invoke(tok, "Get-CASMailbox", {"Identity": MBX % 1})
    check(st == 200, "listener back up: %d" % st)


def main():
    binary = sys.argv[1]
    only = sys.argv[2:]
    d = tempfile.mkdtemp(prefix="mock-rest-pki-")
    pki = Pki(d)
    failed = []
    tests = [t_token, t_token_errors, t_cas_mailbox, t_set_cas_mailbox, t_paging,
             t_resultsize_warning, t_not_found, t_unauthorized, t_faults]
    srv = Server(binary, pki)
    n = 0
    try:
        for t in tests:
            name = t.__name__[2:]
            if only and not any(o in name for o in only):
                continue
            n += 1
            try:
                t(srv, pki)
                print("ok   %s" % name)
            except Exception:
                failed.append(name)
                print("FAIL %s" % name)
                traceback.print_exc()
                srv.ctl("DELETE", "/control/faults")
        if not only or any(o in "expired" for o in only):
            n += 1
            try:
                t_expired(binary, pki)
                print("ok   expired")
            except Exception:
                failed.append("expired")
                print("FAIL expired")
                traceback.print_exc()
    finally:
        try:
            srv.stop()
        except Exception:
            traceback.print_exc()
            failed.append("stop")
        if failed:
            print("--- server log (tail) ---")
            print(srv.logtext())
    print("%d passed, %d failed" % (n - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
