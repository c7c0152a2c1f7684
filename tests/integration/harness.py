"""Shared helpers of the integration tests that run the mock Exchange and the easgate daemon.

- Mock: one easgate-mock-exchange process on 127.0.0.1 with port 0 (ports from its --ports-file),
  a Basic-auth user, and its control API (state, recorded calls, faults, seeding, device sync).
- Agent: one easgate process on 127.0.0.1 with port 0, either plain HTTP without authentication
  or HTTPS with a client certificate and a bearer token (the test PKI of gen-test-pki.sh), and a
  small console client (post, get, wait for a final state).
- make_pki: the throwaway test CA and certificates.
- Realm / realm(): a throwaway MIT Kerberos realm (tests/krb/realm.sh) with an NTLM users file,
  for Kerberos and NTLM. AUTH (environment EG_OPS_AUTH: basic | kerberos | ntlm, default basic)
  is how Mock and Agent talk by default: with kerberos or ntlm the mock accepts only GSSAPI
  (--gss-keytab, no Basic users), its URL names "localhost" (the SPN is HTTP/localhost), and
  every body over its plain-http listener is sealed.

The binaries are set once by the test's main through set_binaries(). Standard library only.
"""
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request

BIN = {"easgate": None, "easgate_ps": None, "mock": None, "pki_script": None}
PASSWORD = "Mock-Passw0rd!"
USER = "svc-easgate"
TOKEN = "itest-ops-token-0123456789abcdef"
FINAL = ("succeeded", "failed", "cancelled")

# Secrets the tests hand to the agent (PASSWORD, TOKEN and whatever a test adds with
# add_secret: HMAC keys, private keys). No log, error output or state file may contain one:
# Agent.stop() and Mock.stop() check their own work directories (assert_no_secrets); the files
# the tests themselves wrote to hand a secret over are registered with add_input and skipped.
SECRETS = {PASSWORD, TOKEN}
INPUTS = set()


def add_secret(value):
    """A secret that must never show up in anything the agent or the mock writes. For a PEM
    private key every base64 line of its body counts (JSON would escape its newlines)."""
    if "-----BEGIN" in value:
        SECRETS.update(line for line in value.splitlines()
                       if len(line) >= 40 and not line.startswith("-----"))
    elif value:
        SECRETS.add(value)


def add_input(path):
    """A file a test wrote to pass a secret to a process (a password file, a key file)."""
    INPUTS.add(os.path.realpath(path))


def secret_leaks(root, extra=()):
    """[(path, secret)] for every file under root, other than the registered inputs, that holds
    one of SECRETS or extra (compared as bytes; also in JSON-escaped form)."""
    needles = set()
    for s in list(SECRETS) + list(extra):
        needles.add(s.encode())
        needles.add(json.dumps(s)[1:-1].encode())
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.realpath(path) in INPUTS or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            for n in needles:
                if n in data:
                    found.append((path, n.decode("utf-8", "replace")[:12] + "..."))
    return found


def assert_no_secrets(root, extra=()):
    leaks = secret_leaks(root, extra)
    if leaks:
        raise AssertionError("secrets written to disk: %r" % leaks)


def state_mode_problems(state_dir):
    """[(path, mode)] where the state directory is not 0700 or a file in it is not 0600."""
    bad = []
    if not os.path.isdir(state_dir):
        return bad
    mode = os.stat(state_dir).st_mode & 0o777
    if mode != 0o700:
        bad.append((state_dir, oct(mode)))
    for dirpath, dirs, files in os.walk(state_dir):
        for d in dirs:
            p = os.path.join(dirpath, d)
            if os.stat(p).st_mode & 0o077:
                bad.append((p, oct(os.stat(p).st_mode & 0o777)))
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                m = os.lstat(p).st_mode & 0o777
            except OSError:
                continue
            if m & 0o177:
                bad.append((p, oct(m)))
    return bad


def run_audit_verify(agent):
    """`easgate audit verify` on the agent's audit trail: the CompletedProcess."""
    return subprocess.run([BIN["easgate"], "audit", "verify",
                           os.path.join(agent.state_dir, "audit.log")],
                          capture_output=True, text=True, timeout=60)


# ---- Kerberos / NTLM (GSSAPI) -------------------------------------------------------------------

AUTH = (os.environ.get("EG_OPS_AUTH") or "basic").strip().lower()
if AUTH not in ("basic", "kerberos", "ntlm"):
    raise SystemExit("EG_OPS_AUTH must be basic, kerberos or ntlm, not %r" % AUTH)
REALM_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "krb", "realm.sh")
_REALM = None


class Realm:
    """tests/krb/realm.sh in `directory`: a KDC on 127.0.0.1 (realm EASGATE.TEST), principals
    easgate (password and client keytab) and short (5-second tickets), the service keytab of
    HTTP/localhost, and gss-ntlmssp's users file. Its KRB5_CONFIG, KRB5_KDC_PROFILE and
    NTLM_USER_FILE go into os.environ, so every process started afterwards uses the realm; its
    passwords are registered with add_secret."""

    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        r = subprocess.run(["bash", REALM_SCRIPT, self.dir], capture_output=True, text=True,
                           timeout=120)
        if r.returncode == 77:
            raise unittest_skip("realm.sh: " + r.stderr.strip())
        if r.returncode != 0:
            raise AssertionError("realm.sh failed (%d): %s %s" % (r.returncode, r.stdout,
                                                                  r.stderr))
        self.env = {}
        for line in read_text(os.path.join(self.dir, "env")).splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                self.env[k] = v
        for k in ("EG_KRB_PASSWORD", "EG_KRB_SHORT_PASSWORD", "EG_NTLM_PASSWORD"):
            add_secret(self.env[k])
        for name in os.listdir(self.dir):
            add_input(os.path.join(self.dir, name))
        for k in ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "NTLM_USER_FILE"):
            os.environ[k] = self.env[k]
        os.environ.pop("KRB5CCNAME", None)  # the realm's krb5.conf uses a MEMORY: default
        os.environ.pop("KRB5_KTNAME", None)
        # sanitizer builds: gss-ntlmssp's own per-context leak is not ours (lsan-gss.supp)
        lsan = os.environ.get("LSAN_OPTIONS", "")
        if "suppressions=" not in lsan:
            os.environ["LSAN_OPTIONS"] = (lsan + ":" if lsan else "") + "suppressions=" + LSAN_SUPP
        if AUTH == "ntlm":
            ntlm_leak_unwinding(True)
        self.service_keytab = self.env["EG_KRB_SERVICE_KEYTAB"]
        self.client_keytab = self.env["EG_KRB_CLIENT_KEYTAB"]

    def credentials(self, auth):
        """(principal, password) of the test account for "kerberos" or "ntlm"."""
        if auth == "ntlm":
            return self.env["EG_NTLM_USER"].replace("\\\\", "\\"), self.env["EG_NTLM_PASSWORD"]
        return self.env["EG_KRB_USER"], self.env["EG_KRB_PASSWORD"]

    def stop(self):
        subprocess.run(["bash", REALM_SCRIPT, "stop", self.dir], capture_output=True, timeout=60)


LSAN_SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan-gss.supp")


def ntlm_leak_unwinding(on):
    """gss-ntlmssp allocates through libcrypto, which has no frame pointers: only with slow
    unwinding does LeakSanitizer see gssntlmssp.so in the stack and apply lsan-gss.supp. It
    slows every allocation of a sanitizer build, so processes started while it is on (the NTLM
    tests) get it, the others not."""
    opts = [o for o in os.environ.get("LSAN_OPTIONS", "").split(":")
            if o and not o.startswith("fast_unwind_on_malloc=")]
    if on:
        opts.append("fast_unwind_on_malloc=0")
    os.environ["LSAN_OPTIONS"] = ":".join(opts)


def unittest_skip(msg):
    import unittest
    return unittest.SkipTest(msg)


def realm(directory=None):
    """The realm of this process, started on first use in `directory` (required then)."""
    global _REALM
    if _REALM is None:
        if directory is None:
            raise AssertionError("realm(): no realm yet and no directory to make one in")
        _REALM = Realm(directory)
    return _REALM


def stop_realm():
    global _REALM
    if _REALM is not None:
        _REALM.stop()
        _REALM = None


def gss_target(auth):
    """The target.auth members (PUT /api/v1/config) for the realm's test account."""
    principal, password = realm().credentials(auth)
    return {"auth": auth, "principal": principal, "password": password}


def make_online_app(directory):
    """A throwaway RSA key and self-signed certificate for an Exchange Online app (the mock trusts
    the certificate given with --app-cert; the agent signs its client assertions with the key):
    {"cert_file", "key_file", "cert", "key"}. The key counts as a secret."""
    os.makedirs(directory, exist_ok=True)
    key, cert = os.path.join(directory, "app-key.pem"), os.path.join(directory, "app.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=easgate-test-app"],
                   check=True, capture_output=True)
    add_input(key)
    app = {"cert_file": cert, "key_file": key, "cert": read_text(cert), "key": read_text(key)}
    add_secret(app["key"])
    return app


def online_mock_args(app, tenant, app_id):
    """The mock's command-line options for an Online profile that trusts `app`."""
    return ["--tenant", tenant, "--app-id", app_id, "--app-cert", app["cert_file"]]


def online_target(mock, app, tenant, app_id):
    """The target members (PUT /api/v1/config) that point the agent at an Online-profile mock."""
    base = mock.url.rsplit("/PowerShell", 1)[0]
    return {"kind": "online", "tenant": tenant, "app_id": app_id, "certificate": app["cert"],
            "private_key": app["key"], "api_url": base + "/adminapi/beta",
            "token_url": "%s/%s/oauth2/v2.0/token" % (base, tenant), "allow_http": True}


def set_binaries(**paths):
    """easgate=, easgate_ps=, mock=, pki_script= (absolute paths)."""
    for k, v in paths.items():
        if k not in BIN:
            raise KeyError(k)
        BIN[k] = os.path.abspath(v) if v else None


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def wait_ports(path, proc, log, timeout=30):
    """The JSON a process writes to its --ports-file once it listens."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("exited %d:\n%s" % (proc.returncode, read_text(log)))
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError("no ports file:\n" + read_text(log))


def make_pki(directory):
    subprocess.run(["bash", BIN["pki_script"], directory], check=True, stdout=subprocess.DEVNULL)
    for name in os.listdir(directory):
        add_input(os.path.join(directory, name))
    return {name: os.path.join(directory, name + ".pem") for name in
            ("ca", "server", "server-key", "client", "client-key")}


class ControlError(Exception):
    def __init__(self, status, body):
        super().__init__("control API %d: %s" % (status, body))
        self.status = status
        self.body = body


class Mock:
    """easgate-mock-exchange with its control API."""

    def __init__(self, workdir, profile="2016", mailboxes=20, devices=60, seed=7, extra=(),
                 auth=None, gss_schemes=None):
        """auth: None = AUTH; "basic" (the --users file), or "kerberos" / "ntlm": GSSAPI only,
        with the realm() service keytab (gss_schemes: the --gss-schemes list, default all)."""
        self.auth = auth or AUTH
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.users = os.path.join(workdir, "users")
        with open(self.users, "w") as f:
            f.write("%s:%s\n" % (USER, PASSWORD))
        self.pwfile = os.path.join(workdir, "pw")
        with open(self.pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        self.badpw = os.path.join(workdir, "badpw")
        with open(self.badpw, "w") as f:
            f.write("wrong\n")
        for p in (self.users, self.pwfile, self.badpw):
            add_input(p)
        self.profile = profile
        ports = os.path.join(workdir, "mock-ports.json")
        self.log = os.path.join(workdir, "mock.log")
        self._logf = open(self.log, "ab")
        auth_args = ["--users", self.users]
        self.host = "127.0.0.1"
        if self.auth != "basic":
            r = realm()
            auth_args = ["--gss-keytab", r.service_keytab]
            if gss_schemes:
                auth_args += ["--gss-schemes", gss_schemes]
            self.host = "localhost"  # the service principal is HTTP/localhost
            self.gss_principal, gss_password = r.credentials(self.auth)
            self.gss_pwfile = os.path.join(workdir, "gss-pw")
            with open(self.gss_pwfile, "w") as f:
                f.write(gss_password + "\n")
            add_input(self.gss_pwfile)
        self.proc = subprocess.Popen(
            [BIN["mock"], "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--profile",
             profile, "--mailboxes", str(mailboxes), "--devices", str(devices), "--seed",
             str(seed), "--ports-file", ports] + auth_args + list(extra),
            stdout=self._logf, stderr=subprocess.STDOUT)
        p = wait_ports(ports, self.proc, self.log)
        self.ports = p
        self.url = "http://%s:%d/PowerShell" % (self.host, p["exchange"])
        self.control = "http://127.0.0.1:%d" % p["control"]

    # ---- control API ----------------------------------------------------------------------
    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.control + path, data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw
            raise ControlError(e.code, parsed) from None
        return json.loads(raw) if raw else {}

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body):
        return self.call("POST", path, body)

    def calls(self):
        v = self.get("/control/calls")
        return v["calls"] if isinstance(v, dict) else v

    def calls_reset(self):
        self.call("DELETE", "/control/calls")

    def faults(self, body):
        return self.post("/control/faults", body)

    def faults_reset(self):
        return self.call("DELETE", "/control/faults")

    def engine(self, op, **fields):
        return self.post("/control/engine", dict(op=op, **fields))

    def sync(self, mailbox, device_id, **fields):
        return self.post("/control/device-sync", dict(mailbox=mailbox, device_id=device_id,
                                                      **fields))

    # State through the engine's JSON ops rather than the GET routes: identities travel as JSON
    # strings, byte for byte, whatever they contain (a device ID with '/', a newline, ...).
    def mailbox(self, ident):
        return self.engine("state_mailbox", mailbox=ident)

    def device(self, mailbox, device_id):
        return self.engine("state_device", mailbox=mailbox, device_id=device_id)

    def org(self):
        return self.get("/control/state/org")

    def shell_ids(self):
        v = self.get("/control/shells")
        shells = v["shells"] if isinstance(v, dict) else v
        return {s["shell_id"] for s in shells}

    # ---- easgate-ps against the mock ------------------------------------------------------
    def ps(self, *words, password_file=None, timeout=120, auth_args=None, wrapper=()):
        """easgate-ps against the mock: (exit code, objects, stderr). auth_args replaces the
        authentication options (default: Basic as USER, or the realm's account under GSS)."""
        if auth_args is None and self.auth != "basic":
            auth_args = ["--auth", self.auth, "--principal", self.gss_principal,
                         "--password-file", password_file or self.gss_pwfile]
        if auth_args is None:
            auth_args = ["--user", USER, "--password-file", password_file or self.pwfile,
                         "--allow-http-basic"]
        args = list(wrapper) + [BIN["easgate_ps"], "--url", self.url] + list(auth_args) + [
            "--operation-timeout-ms", "5000", "--"] + list(words)
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        objs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return r.returncode, objs, r.stderr

    def auth_stats(self):
        """GET /control/auth: the GSSAPI counters (handshakes by mechanism, sealed requests and
        replies, refused unsealed bodies, failures and the last failure's text)."""
        return self.get("/control/auth")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        assert_no_secrets(self.dir)
        return self.proc.returncode


def psrp_args(mock, password_file=None):
    """The bootstrap flags that point the daemon's psrp bridge at a mock."""
    return ["--bridge", "psrp", "--exchange-url", mock.url, "--exchange-user", USER,
            "--exchange-password-file", password_file or mock.pwfile,
            "--exchange-allow-http-basic"]


class Agent:
    """One easgate process. pki=None: plain HTTP without authentication (loopback); else HTTPS
    with pki's server certificate, the client certificate required (client_ca) and TOKEN."""

    def __init__(self, workdir, args=(), pki=None, token=TOKEN, log_level="info", wrapper=()):
        """wrapper: a command prefix, e.g. ["faketime", "-f", "+1h"]."""
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.pki = pki
        self.token = token if pki else None
        self.state_dir = os.path.join(workdir, "state")
        self.ports_file = os.path.join(workdir, "agent-ports.json")
        self.log = os.path.join(workdir, "agent.log")
        cmd = list(wrapper) + [BIN["easgate"], "--listen", "127.0.0.1:0", "--state-dir",
                               self.state_dir,
                               "--ports-file", self.ports_file, "--log-level", log_level]
        if pki:
            self.token_file = os.path.join(workdir, "token")
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
            os.chmod(self.token_file, 0o600)
            add_input(self.token_file)
            add_secret(token)
            cmd += ["--tls-cert", pki["server"], "--tls-key", pki["server-key"], "--client-ca",
                    pki["ca"], "--token-file", self.token_file]
            self._ctx = ssl.create_default_context(cafile=pki["ca"])
            self._ctx.load_cert_chain(pki["client"], pki["client-key"])
        else:
            cmd += ["--plain-http", "--no-auth"]
        cmd += list(args)
        if os.path.exists(self.ports_file):
            os.unlink(self.ports_file)
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT)
        self.port = wait_ports(self.ports_file, self.proc, self.log)["api"]
        self.api = "%s://127.0.0.1:%d" % ("https" if pki else "http", self.port)

    def read_log(self):
        return read_text(self.log)

    def request(self, method, path, body=None):
        """-> (status, parsed JSON or None, raw bytes, headers)."""
        if self.pki:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=self._ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            raw = r.read()
            hdrs = dict(r.getheaders())
        finally:
            conn.close()
        ctype = hdrs.get("Content-Type", "")
        parsed = json.loads(raw) if raw and "json" in ctype else None
        return r.status, parsed, raw, hdrs

    def post(self, cmd):
        """POST one command or a {"commands": [...]} batch: (status, body)."""
        st, body, raw, _ = self.request("POST", "/api/v1/commands", cmd)
        return st, body if body is not None else raw

    def command(self, cid):
        st, body, raw, _ = self.request("GET", "/api/v1/commands/" + cid)
        if st != 200:
            raise AssertionError("GET %s: %d %s" % (cid, st, raw))
        return body

    def wait_final(self, ids, timeout=60, watch=None):
        """Poll GET /api/v1/commands/{id} until every id is final; {id: state}. watch(rec) is
        called with every intermediate state seen."""
        deadline = time.time() + timeout
        pending, states = list(ids), {}
        while pending and time.time() < deadline:
            for cid in list(pending):
                rec = self.command(cid)
                states[cid] = rec
                if rec["state"] in FINAL:
                    pending.remove(cid)
                elif watch:
                    watch(rec)
            if pending:
                time.sleep(0.03)
        if pending:
            raise AssertionError("not final after %ss: %s\n%s\n%s" % (
                timeout, pending, [states.get(c) for c in pending], self.read_log()[-4000:]))
        return states

    def run(self, cmd, timeout=60, watch=None):
        """Post one command (expects 202) and return its final state."""
        st, body = self.post(cmd)
        if st != 202:
            raise AssertionError("POST %s: %d %s" % (cmd.get("id"), st, body))
        return self.wait_final([cmd["id"]], timeout, watch)[cmd["id"]]

    def run_batch(self, cmds, timeout=60):
        st, body = self.post({"commands": cmds})
        if st != 202:
            raise AssertionError("POST batch: %d %s" % (st, body))
        return self.wait_final([c["id"] for c in cmds], timeout)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._logf.closed:
            self._logf.close()
        self.check_state()
        return self.proc.returncode

    def check_state(self):
        """After a stop: no known secret in anything under the work directory (log, state
        files, ports file) and the state directory 0700 with files 0600. AssertionError."""
        assert_no_secrets(self.workdir)
        bad = state_mode_problems(self.state_dir)
        if bad:
            raise AssertionError("state files too open: %r" % bad)
