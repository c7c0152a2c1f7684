#!/usr/bin/env python3
"""test_frontend.py - integration test of easgate-mock-exchange's front end.

Starts the binary on 127.0.0.1 with port 0 (two PSRP listeners and the control API), then
speaks raw WS-Man/PSRP to it over HTTP with a small client written here (Python standard
library only): envelopes built by hand in the shape pypsrp sends (shared/vectors), PSRP
fragments and messages, CLIXML for CREATE_PIPELINE and a tolerant reader for the output.

Usage: test_frontend.py PATH/TO/easgate-mock-exchange [PATH/TO/gen-test-pki.sh]
                        [test-name-substring ...]
(the HTTPS test runs when the PKI generator is given)
"""

import base64
import http.client
import json
import os
import re
import signal
import ssl
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
}
EXCHANGE_URI = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
A_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
A_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
DONE = A_SHELL + "CommandState/Done"

# PSRP message types
SESSION_CAPABILITY = 0x00010002
INIT_RUNSPACEPOOL = 0x00010004
RUNSPACEPOOL_STATE = 0x00021005
CREATE_PIPELINE = 0x00021006
APPLICATION_PRIVATE_DATA = 0x00021009
SET_MAX_RUNSPACES = 0x00021002
RUNSPACE_AVAILABILITY = 0x00021004
PIPELINE_INPUT = 0x00041002
END_OF_PIPELINE_INPUT = 0x00041003
PIPELINE_OUTPUT = 0x00041004
ERROR_RECORD = 0x00041005
PIPELINE_STATE = 0x00041006
WARNING_RECORD = 0x00041009

BOM = b"\xef\xbb\xbf"


class TestFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise TestFailure(what)


def xesc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def clixml_esc(s):
    s = re.sub(r"_([xX])", r"_x005F_\1", s)
    out = []
    for ch in s:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            out.append("_x%04X_" % o)
        else:
            out.append(ch)
    return xesc("".join(out))


def clixml_unesc(s):
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), s)


# ---------------------------------------------------------------------------------------------
# PSRP fragments, messages, GUIDs
# ---------------------------------------------------------------------------------------------

def guid_bytes(u):
    return u.bytes_le  # .NET Guid.ToByteArray() layout


def fragment(obj_id, frag_id, start, end, blob):
    flags = (1 if start else 0) | (2 if end else 0)
    return struct.pack(">QQBI", obj_id, frag_id, flags, len(blob)) + blob


def split_fragments(data):
    out = []
    i = 0
    while i < len(data):
        check(len(data) - i >= 21, "truncated fragment header")
        oid, fid, fl, ln = struct.unpack(">QQBI", data[i:i + 21])
        blob = data[i + 21:i + 21 + ln]
        check(len(blob) == ln, "truncated fragment blob")
        out.append((oid, fid, fl, blob))
        i += 21 + ln
    return out


def message(dest, mtype, rpid, pid, data):
    return struct.pack("<II", dest, mtype) + rpid + pid + data


class Message:
    def __init__(self, raw):
        self.raw = raw
        self.dest, self.type = struct.unpack("<II", raw[:8])
        self.rpid = raw[8:24]
        self.pid = raw[24:40]
        data = raw[40:]
        self.had_bom = data.startswith(BOM)
        self.data = data[3:] if self.had_bom else data

    def xml(self):
        return ET.fromstring(self.data.decode("utf-8"))


class Defrag:
    """Reassembles server -> client messages, checks fragment order."""

    def __init__(self):
        self.partial = {}
        self.done = []
        self.split_across_responses = 0

    def feed(self, data, response_no):
        for oid, fid, fl, blob in split_fragments(data):
            start, end = bool(fl & 1), bool(fl & 2)
            if start:
                check(fid == 0 and oid not in self.partial, "S fragment out of order")
                self.partial[oid] = [0, bytearray(), response_no]
            else:
                check(oid in self.partial, "fragment of an unknown object")
                st = self.partial[oid]
                check(fid == st[0] + 1, "fragment id gap")
                st[0] = fid
            self.partial[oid][1] += blob
            if end:
                st = self.partial.pop(oid)
                if st[2] != response_no:
                    self.split_across_responses += 1
                self.done.append((oid, Message(bytes(st[1]))))


# ---------------------------------------------------------------------------------------------
# CLIXML writing (client side) and reading
# ---------------------------------------------------------------------------------------------

class Writer:
    def __init__(self):
        self.ref = 0
        self.tn = 0

    def obj_id(self):
        r = self.ref
        self.ref += 1
        return r

    def tn_id(self):
        r = self.tn
        self.tn += 1
        return r

    def value(self, v, name=None):
        n = ' N="%s"' % clixml_esc(name) if name is not None else ""
        if v is None:
            return "<Nil%s />" % n
        if isinstance(v, bool):
            return "<B%s>%s</B>" % (n, "true" if v else "false")
        if isinstance(v, int):
            tag = "I32" if -2**31 <= v < 2**31 else "I64"
            return "<%s%s>%d</%s>" % (tag, n, v, tag)
        if isinstance(v, str):
            return "<S%s>%s</S>" % (n, clixml_esc(v))
        if isinstance(v, (list, tuple)):
            return ('<Obj%s RefId="%d"><TN RefId="%d"><T>System.Object[]</T><T>System.Array</T>'
                    "<T>System.Object</T></TN><LST>%s</LST></Obj>"
                    % (n, self.obj_id(), self.tn_id(), "".join(self.value(x) for x in v)))
        if isinstance(v, dict):
            ents = "".join("<En>%s%s</En>" % (self.value(k, "Key"), self.value(x, "Value"))
                           for k, x in v.items())
            return ('<Obj%s RefId="%d"><TN RefId="%d"><T>System.Collections.Hashtable</T>'
                    "<T>System.Object</T></TN><DCT>%s</DCT></Obj>"
                    % (n, self.obj_id(), self.tn_id(), ents))
        raise TypeError(type(v))

    def enum(self, name, type_name, text, value):
        return ('<Obj N="%s" RefId="%d"><TN RefId="%d"><T>%s</T><T>System.Enum</T>'
                "<T>System.ValueType</T><T>System.Object</T></TN><ToString>%s</ToString>"
                "<I32>%d</I32></Obj>" % (name, self.obj_id(), self.tn_id(), type_name, text, value))


LIST_T = ("System.Collections.Generic.List`1[[System.Management.Automation.PSObject, "
          "System.Management.Automation, Version=1.0.0.0, Culture=neutral, "
          "PublicKeyToken=31bf3856ad364e35]]")
HOST_NULL = ('<MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B>'
             '<B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS>')


def session_capability():
    return ('<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version>'
            '<Version N="PSVersion">2.0</Version><Version N="SerializationVersion">1.1.0.1'
            "</Version></MS></Obj>")


def init_runspacepool(max_runspaces=1):
    w = Writer()
    w.obj_id()
    return ('<Obj RefId="0"><MS><I32 N="MinRunspaces">1</I32><I32 N="MaxRunspaces">%d</I32>%s%s'
            '<Obj N="HostInfo" RefId="%d">%s</Obj><Nil N="ApplicationArguments" /></MS></Obj>'
            % (max_runspaces,
               w.enum("PSThreadOptions", "System.Management.Automation.Runspaces.PSThreadOptions",
                      "Default", 0),
               w.enum("ApartmentState", "System.Threading.ApartmentState", "Unknown", 2),
               w.obj_id(), HOST_NULL))


def create_pipeline(statements, no_input=True):
    """statements: list of statements; each a list of commands (cmdlet, [(name, value)...],
    is_script). A parameter name None is positional."""
    w = Writer()
    w.obj_id()  # the root

    def command(cmd):
        name, params, is_script = cmd
        rid = w.obj_id()
        args = []
        for pn, pv in params:
            args.append('<Obj RefId="%d"><MS>%s%s</MS></Obj>' % (
                w.obj_id(), w.value(pn, "N"), w.value(pv, "V")))
        merge = w.enum("MergeMyResult",
                       "System.Management.Automation.Runspaces.PipelineResultTypes", "None", 0)
        return ('<Obj RefId="%d"><MS><S N="Cmd">%s</S><B N="IsScript">%s</B>'
                '<Nil N="UseLocalScope" />%s<Obj N="Args" RefId="%d"><TN RefId="%d"><T>%s</T>'
                "<T>System.Object</T></TN><LST>%s</LST></Obj></MS></Obj>"
                % (rid, clixml_esc(name), "true" if is_script else "false", merge, w.obj_id(),
                   w.tn_id(), LIST_T, "".join(args)))

    def cmds(name, stmt):
        return ('<Obj N="%s" RefId="%d"><TN RefId="%d"><T>%s</T><T>System.Object</T></TN>'
                "<LST>%s</LST></Obj>" % (name, w.obj_id(), w.tn_id(), LIST_T,
                                         "".join(command(c) for c in stmt)))

    extra = ""
    if len(statements) > 1:
        items = "".join('<Obj RefId="%d"><MS>%s</MS></Obj>' % (w.obj_id(), cmds("Cmds", st))
                        for st in statements)
        extra = ('<Obj N="ExtraCmds" RefId="%d"><TN RefId="%d"><T>%s</T><T>System.Object</T>'
                 "</TN><LST>%s</LST></Obj>" % (w.obj_id(), w.tn_id(), LIST_T, items))
    first = cmds("Cmds", statements[0])
    return ('<Obj RefId="0"><MS><B N="NoInput">%s</B>%s%s<B N="AddToHistory">false</B>'
            '<Obj N="HostInfo" RefId="%d">%s</Obj><Obj N="PowerShell" RefId="%d"><MS>'
            '<B N="IsNested">false</B>%s%s<Nil N="History" />'
            '<B N="RedirectShellErrorOutputPipe">false</B></MS></Obj>'
            '<B N="IsNested">false</B></MS></Obj>'
            % ("true" if no_input else "false",
               w.enum("ApartmentState", "System.Threading.ApartmentState", "Unknown", 2),
               w.enum("RemoteStreamOptions",
                      "System.Management.Automation.Runspaces.RemoteStreamOptions",
                      "AddInvocationInfo", 15),
               w.obj_id(), HOST_NULL, w.obj_id(), extra, first))


def member(el, name):
    """The Props/MS member called name of an <Obj> element (None when absent)."""
    for sect in ("Props", "MS"):
        s = el.find(sect)
        if s is None:
            continue
        for c in s:
            if c.get("N") is not None and c.get("N").lower() == name.lower():
                return c
    return None


def text_of(el):
    if el is None or el.tag == "Nil":
        return None
    if el.tag == "Obj":
        ts = el.find("ToString")
        return clixml_unesc(ts.text or "") if ts is not None else None
    return clixml_unesc(el.text or "")


def list_of(el):
    if el is None or el.tag == "Nil":
        return None
    lst = el.find("LST")
    return [text_of(x) for x in lst] if lst is not None else []


def state_of(msg):
    """(state, error-record element or None) of a PIPELINE_STATE / RUNSPACEPOOL_STATE."""
    root = msg.xml()
    st = member(root, "PipelineState")
    if st is None:
        st = member(root, "RunspaceState")
    return int(st.text), member(root, "ExceptionAsErrorRecord")


def error_fields(rec):
    exc = member(rec, "Exception")
    return {
        "fqeid": text_of(member(rec, "FullyQualifiedErrorId")),
        "category": int(member(rec, "ErrorCategory_Category").text),
        "reason": text_of(member(rec, "ErrorCategory_Reason")),
        "message": text_of(member(exc, "Message")) if exc is not None else text_of(rec),
        "types": [t.text for t in exc.find("TN")] if exc is not None and
        exc.find("TN") is not None else [],
        "category_message": text_of(member(rec, "ErrorCategory_Message")),
        "target": text_of(member(rec, "ErrorCategory_TargetName")),
    }


# ---------------------------------------------------------------------------------------------
# WS-Man client
# ---------------------------------------------------------------------------------------------

class Fault(Exception):
    def __init__(self, status, body):
        self.status = status
        self.body = body
        root = ET.fromstring(body)
        self.root = root
        v = root.find(".//s:Fault/s:Code/s:Value", NS)
        self.code = v.text if v is not None else None
        sc = root.find(".//s:Fault/s:Code/s:Subcode/s:Value", NS)
        self.subcode = sc.text if sc is not None else None
        r = root.find(".//s:Fault/s:Reason/s:Text", NS)
        self.reason = r.text if r is not None else None
        wf = root.find(".//f:WSManFault", NS)
        self.wsman_code = int(wf.get("Code")) if wf is not None else None
        msgs = [m.text for m in root.iter("{%s}Message" % NS["f"]) if m.text]
        self.message = msgs[-1] if msgs else None
        rel = root.find(".//a:RelatesTo", NS)
        self.relates_to = rel.text if rel is not None else None
        self.provider = root.find(".//f:ProviderFault", NS)
        fd = root.find(".//w:FaultDetail", NS)
        self.detail = fd.text if fd is not None else None
        Exception.__init__(self, "fault %s %s: %s" % (self.subcode, self.wsman_code,
                                                       self.reason))


class Conn:
    """One keep-alive HTTP connection to a listener, with Basic credentials."""

    def __init__(self, port, user="svc-eas", password="Secret-1", timeout=60, tls=None):
        self.port = port
        self.tls = tls  # an ssl.SSLContext for https
        self.auth = None
        if user is not None:
            self.auth = "Basic " + base64.b64encode(
                ("%s:%s" % (user, password)).encode()).decode()
        self.timeout = timeout
        self.c = None
        self.requests = 0

    def close(self):
        if self.c:
            self.c.close()
        self.c = None

    def post(self, body, path="/PowerShell", headers=None):
        if self.c is None and self.tls:
            self.c = http.client.HTTPSConnection("localhost", self.port, timeout=self.timeout,
                                                 context=self.tls)
        elif self.c is None:
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        h = {"Content-Type": "application/soap+xml;charset=UTF-8"}
        if self.auth:
            h["Authorization"] = self.auth
        h.update(headers or {})
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            self.c.request("POST", path, body=data, headers=h)
            r = self.c.getresponse()
            payload = r.read()
        except Exception:
            self.close()
            raise
        self.requests += 1
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), payload


def envelope(action, resource_uri=EXCHANGE_URI, shell_id=None, options=None, body="",
             max_env=512000, timeout="PT20S", message_id=None, to=None):
    mid = message_id or "uuid:" + str(uuid.uuid4()).upper()
    opts = ""
    if options:
        opts = '<wsman:OptionSet s:mustUnderstand="true">%s</wsman:OptionSet>' % "".join(
            '<wsman:Option%s Name="%s">%s</wsman:Option>' % (
                ' MustComply="true"' if mc else "", n, v) for n, v, mc in options)
    sel = ""
    if shell_id:
        sel = ('<wsman:SelectorSet><wsman:Selector Name="ShellId">%s</wsman:Selector>'
               "</wsman:SelectorSet>" % shell_id)
    xml = ('<s:Envelope xmlns:rsp="%s" xmlns:s="%s" xmlns:wsa="%s" xmlns:wsman="%s" '
           'xmlns:wsmv="%s"><s:Header><wsa:Action s:mustUnderstand="true">%s</wsa:Action>'
           '<wsmv:DataLocale s:mustUnderstand="false" xml:lang="en-US" />'
           '<wsman:Locale s:mustUnderstand="false" xml:lang="en-US" />'
           '<wsman:MaxEnvelopeSize s:mustUnderstand="true">%d</wsman:MaxEnvelopeSize>'
           "<wsa:MessageID>%s</wsa:MessageID><wsman:OperationTimeout>%s</wsman:OperationTimeout>"
           '<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">'
           "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address>"
           '</wsa:ReplyTo><wsman:ResourceURI s:mustUnderstand="true">%s</wsman:ResourceURI>'
           '<wsmv:SessionId s:mustUnderstand="false">uuid:%s</wsmv:SessionId>'
           "<wsa:To>%s</wsa:To>%s%s</s:Header><s:Body>%s</s:Body></s:Envelope>"
           % (NS["rsp"], NS["s"], NS["a"], NS["w"], NS["p"], action, max_env, mid, timeout,
              resource_uri, str(uuid.uuid4()).upper(), to or "http://127.0.0.1/PowerShell",
              opts, sel, body))
    return xml, mid


class Shell:
    """A runspace pool on the mock, driven by hand."""

    def __init__(self, port, user="svc-eas", password="Secret-1", max_env=512000,
                 timeout="PT20S", tls=None):
        self.conn = Conn(port, user, password, tls=tls)
        self.port = port
        self.max_env = max_env
        self.timeout = timeout
        self.rpid = guid_bytes(uuid.uuid4())
        self.obj = 1
        self.shell_id = None
        self.receives = 0
        self.pool_msgs = []
        self.pids = {}

    def call(self, action, body="", command=False, options=None, resource_uri=EXCHANGE_URI,
             shell=True, max_env=None, timeout=None, conn=None):
        xml, mid = envelope(action, resource_uri=resource_uri,
                            shell_id=self.shell_id if shell else None, options=options,
                            body=body, max_env=max_env or self.max_env,
                            timeout=timeout or self.timeout)
        status, headers, payload = (conn or self.conn).post(xml)
        if status == 500 and payload:
            f = Fault(status, payload)
            check(f.relates_to == mid, "fault RelatesTo %s != %s" % (f.relates_to, mid))
            raise f
        check(status == 200, "HTTP %d: %r" % (status, payload[:300]))
        check(len(payload) <= (max_env or self.max_env),
              "response of %d bytes over MaxEnvelopeSize %d" % (len(payload),
                                                                 max_env or self.max_env))
        check(headers.get("content-type", "").startswith("application/soap+xml"),
              "content type %s" % headers.get("content-type"))
        root = ET.fromstring(payload)
        rel = root.find("s:Header/a:RelatesTo", NS)
        check(rel is not None and rel.text == mid, "RelatesTo mismatch")
        return root

    def frags(self, mtype, data, pid=b"\0" * 16, max_blob=None):
        raw = message(2, mtype, self.rpid, pid, data.encode("utf-8"))
        oid = self.obj
        self.obj += 1
        if max_blob is None or len(raw) <= max_blob:
            return [fragment(oid, 0, True, True, raw)]
        out = []
        for i in range(0, len(raw), max_blob):
            out.append(fragment(oid, i // max_blob, i == 0, i + max_blob >= len(raw),
                                raw[i:i + max_blob]))
        return out

    def open(self, max_runspaces=1, shell_id=None, idle="PT60S", conn=None):
        creation = b"".join(self.frags(SESSION_CAPABILITY, session_capability()) +
                            self.frags(INIT_RUNSPACEPOOL, init_runspacepool(max_runspaces)))
        sid = ' ShellId="%s"' % shell_id if shell_id else ""
        body = ('<rsp:Shell%s><rsp:InputStreams>stdin pr</rsp:InputStreams>'
                "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
                "%s"
                '<creationXml xmlns="http://schemas.microsoft.com/powershell">%s</creationXml>'
                "</rsp:Shell>" % (sid, "<rsp:IdleTimeOut>%s</rsp:IdleTimeOut>" % idle
                                  if idle else "", base64.b64encode(creation).decode()))
        root = self.call(A_TRANSFER + "Create", body,
                         options=[("protocolversion", "2.3", True)], shell=False, conn=conn)
        sel = root.find(".//x:ResourceCreated/a:ReferenceParameters/w:SelectorSet/w:Selector", NS)
        check(sel is not None and sel.get("Name") == "ShellId", "no ShellId selector")
        self.shell_id = sel.text
        self.create_response = root
        d = Defrag()
        opened = False
        for _ in range(10):
            root = self.receive(None, d)
            for oid, m in d.done:
                self.pool_msgs.append(m)
                if m.type == RUNSPACEPOOL_STATE:
                    st, _ = state_of(m)
                    check(st == 2, "pool state %d" % st)
                    opened = True
            d.done = []
            if opened:
                break
        check(opened, "the pool never opened")
        return self

    def receive(self, command_id, defrag, timeout=None, max_env=None):
        attr = ' CommandId="%s"' % command_id if command_id else ""
        body = "<rsp:Receive><rsp:DesiredStream%s>stdout</rsp:DesiredStream></rsp:Receive>" % attr
        root = self.call(A_SHELL + "Receive", body,
                         options=[("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE", False)],
                         timeout=timeout, max_env=max_env)
        self.receives += 1
        for st in root.findall(".//rsp:ReceiveResponse/rsp:Stream", NS):
            check(st.get("Name") == "stdout", "stream name")
            check(st.get("CommandId") == command_id, "stream CommandId %s" % st.get("CommandId"))
            defrag.feed(base64.b64decode(st.text or ""), self.receives)
        return root

    def command(self, statements, command_id=None, split=None, no_input=True):
        cid = command_id or str(uuid.uuid4()).upper()
        pid = guid_bytes(uuid.UUID(cid))
        fr = self.frags(CREATE_PIPELINE, create_pipeline(statements, no_input), pid,
                        max_blob=split)
        body = ('<rsp:CommandLine CommandId="%s"><rsp:Command /><rsp:Arguments>%s'
                "</rsp:Arguments></rsp:CommandLine>" % (cid, base64.b64encode(fr[0]).decode()))
        root = self.call(A_SHELL + "Command", body,
                         options=[("WINRS_SKIP_CMD_SHELL", "False", False)])
        got = root.find(".//rsp:CommandResponse/rsp:CommandId", NS).text
        check(got == cid, "CommandId %s != %s" % (got, cid))
        for f in fr[1:]:
            self.send(cid, f)
        self.pids[cid] = pid
        return cid

    def send(self, cid, data, stream="stdin"):
        attr = ' CommandId="%s"' % cid if cid else ""
        body = '<rsp:Send><rsp:Stream Name="%s"%s>%s</rsp:Stream></rsp:Send>' % (
            stream, attr, base64.b64encode(data).decode())
        root = self.call(A_SHELL + "Send", body)
        check(root.find(".//rsp:SendResponse", NS) is not None, "no SendResponse")

    def signal(self, cid, code):
        body = '<rsp:Signal CommandId="%s"><rsp:Code>%s</rsp:Code></rsp:Signal>' % (cid, code)
        root = self.call(A_SHELL + "Signal", body)
        check(root.find(".//rsp:SignalResponse", NS) is not None, "no SignalResponse")

    def collect(self, cid, max_env=None, on_message=None, limit=100000):
        """Receive until CommandState Done. Returns a Result."""
        res = Result()
        d = Defrag()
        for _ in range(limit):
            try:
                root = self.receive(cid, d, max_env=max_env)
            except Fault as f:
                if f.subcode == "w:TimedOut":
                    continue
                raise
            res.receives += 1
            for oid, m in d.done:
                check(m.had_bom, "server data without BOM")
                check(m.dest == 1, "destination %d" % m.dest)
                check(m.rpid == self.rpid, "RPID not echoed")
                check(m.pid == self.pids.get(cid, m.pid), "PID not echoed")
                res.add(m)
                if on_message:
                    on_message(m)
            d.done = []
            cs = root.find(".//rsp:CommandState", NS)
            if cs is not None:
                check(cs.get("CommandId") == cid, "CommandState CommandId")
                check(cs.get("State") == DONE, "state %s" % cs.get("State"))
                ec = cs.find("rsp:ExitCode", NS)
                check(ec is not None and ec.text == "0", "ExitCode")
                check(res.state is not None, "Done before PIPELINE_STATE")
                res.split_across = d.split_across_responses
                return res
        raise TestFailure("the command never finished")

    def run(self, cmdlet, params=(), max_env=None, terminate=True):
        cid = self.command([[(cmdlet, list(params), False)]])
        res = self.collect(cid, max_env=max_env)
        if terminate:
            self.signal(cid, A_SHELL + "signal/terminate")
        return res

    def delete(self):
        root = self.call(A_TRANSFER + "Delete")
        check(root.find("s:Header/a:Action", NS).text == A_TRANSFER + "DeleteResponse",
              "DeleteResponse")
        self.conn.close()


class Result:
    def __init__(self):
        self.outputs = []
        self.errors = []
        self.warnings = []
        self.state = None
        self.failure = None
        self.receives = 0
        self.split_across = 0

    def add(self, m):
        if m.type == PIPELINE_OUTPUT:
            self.outputs.append(m.xml())
        elif m.type == ERROR_RECORD:
            self.errors.append(error_fields(m.xml()))
        elif m.type == WARNING_RECORD:
            self.warnings.append(text_of(member(m.xml(), "InformationalRecord_Message")))
        elif m.type == PIPELINE_STATE:
            st, rec = state_of(m)
            self.state = st
            self.failure = error_fields(rec) if rec is not None else None


# ---------------------------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------------------------

class Server:
    def __init__(self, binary, args=(), listeners=2, users=None):
        self.dir = tempfile.mkdtemp(prefix="mock-fe-")
        self.ports_file = os.path.join(self.dir, "ports.json")
        self.users_file = os.path.join(self.dir, "users")
        with open(self.users_file, "w") as f:
            f.write(users or "# test users\nsvc-eas:Secret-1\nother:Pass-2\n\n")
        cmd = [binary, "--control", "127.0.0.1:0", "--users", self.users_file,
               "--ports-file", self.ports_file, "--log-level",
               os.environ.get("MOCK_LOG_LEVEL", "warn")]
        for _ in range(listeners):
            cmd += ["--listen", "127.0.0.1:0"]
        cmd += list(args)
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not os.path.exists(self.ports_file):
            if self.p.poll() is not None:
                raise TestFailure("server exited: %s" % self.logtext())
            if time.time() > deadline:
                raise TestFailure("no ports file")
            time.sleep(0.05)
        with open(self.ports_file) as f:
            ports = json.load(f)
        self.ports = ports["exchange_all"]
        self.port = ports["exchange"]
        self.control = ports["control"]
        check(self.port == self.ports[0] and len(self.ports) == listeners, "ports file")

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

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                rc = self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise TestFailure("the server did not stop on SIGTERM")
            check(rc == 0, "exit status %d after SIGTERM: %s" % (rc, self.logtext()))


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

MBX = "user%04d@contoso.example"
TIMED_OUT_TEXT = ("The WS-Management service cannot complete the operation within the time "
                  "specified in OperationTimeout.  ")
INVALID_SELECTORS_TEXT = ("The WS-Management service cannot process the request because the "
                          "request contained invalid selectors for the resource. ")


def expect_fault(fn, subcode, code, status=500):
    try:
        fn()
    except Fault as f:
        check(f.status == status, "fault HTTP %d" % f.status)
        check(f.subcode == subcode, "subcode %s, want %s" % (f.subcode, subcode))
        check(f.wsman_code == code, "code %s, want %s" % (f.wsman_code, code))
        return f
    raise TestFailure("no %s fault" % subcode)


def t_auth(srv):
    for auth, why in ((None, "no credentials"), (("svc-eas", "wrong"), "bad password"),
                      (("nobody", "Secret-1"), "unknown user")):
        c = Conn(srv.port, *(auth or (None, None)))
        xml, _ = envelope(A_TRANSFER + "Create")
        status, headers, body = c.post(xml)
        check(status == 401, "%s: HTTP %d" % (why, status))
        check(headers.get("www-authenticate") == 'Basic realm="easgate-mock-exchange"',
              "WWW-Authenticate %s" % headers.get("www-authenticate"))
        c.close()
    c = Conn(srv.port)
    status, _, _ = c.post(envelope(A_TRANSFER + "Create")[0], path="/wsman")
    check(status == 404, "other path: HTTP %d" % status)
    c.close()
    # user names are case-insensitive, passwords are not
    Shell(srv.port, user="SVC-EAS").open().delete()


def t_open_pool(srv):
    sh = Shell(srv.port)
    want_id = str(uuid.uuid4()).upper()
    sh.open(shell_id=want_id, idle="PT60S")
    check(sh.shell_id == want_id, "the client's ShellId is used")
    shell = sh.create_response.find(".//rsp:Shell", NS)
    check(shell.find("rsp:ShellId", NS).text == want_id, "rsp:ShellId")
    check(shell.find("rsp:ResourceUri", NS).text == EXCHANGE_URI, "rsp:ResourceUri")
    check(shell.find("rsp:Owner", NS).text == "svc-eas", "rsp:Owner")
    check(shell.find("rsp:IdleTimeOut", NS).text == "PT60.000S", "rsp:IdleTimeOut")
    check(shell.find("rsp:State", NS).text == "Connected", "rsp:State")
    check(shell.find("rsp:ClientIP", NS).text == "127.0.0.1", "rsp:ClientIP")
    uri = sh.create_response.find(".//x:ResourceCreated/a:ReferenceParameters/w:ResourceURI", NS)
    check(uri.text == EXCHANGE_URI, "ReferenceParameters ResourceURI")
    types = [m.type for m in sh.pool_msgs]
    check(types == [SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE],
          "pool messages %s" % types)
    check(sh.pool_msgs[0].rpid == b"\0" * 16, "SESSION_CAPABILITY has a nil RPID")
    check(all(m.rpid == sh.rpid for m in sh.pool_msgs[1:]), "RPID echoed")
    check(all(m.had_bom for m in sh.pool_msgs), "BOM on server data")
    pv = member(sh.pool_msgs[0].xml(), "protocolversion")
    check(pv is not None and pv.text == "2.3", "protocolversion 2.3")
    # Get on the shell resource, and the WinRM config
    root = sh.call(A_TRANSFER + "Get", resource_uri=SHELL_URI)
    check(root.find(".//rsp:Shell/rsp:ShellId", NS).text == want_id, "Get shell")
    root = sh.call(A_TRANSFER + "Get", resource_uri="http://schemas.microsoft.com/wbem/wsman/1/"
                   "config", shell=False)
    check(root.find(".//cfg:Config/cfg:MaxEnvelopeSizekb", NS).text == "500", "Get config")
    # an action the mock does not implement
    expect_fault(lambda: sh.call(A_SHELL + "Disconnect", "<rsp:Disconnect/>"),
                 "a:ActionNotSupported", 2150858771)
    # SET_MAX_RUNSPACES on the pool -> RUNSPACE_AVAILABILITY
    data = ('<Obj RefId="0"><MS><I32 N="MaxRunspaces">4</I32><I64 N="ci">7</I64></MS></Obj>')
    sh.send(None, sh.frags(SET_MAX_RUNSPACES, data)[0], stream="stdin")
    d = Defrag()
    sh.receive(None, d)
    check([m.type for _, m in d.done] == [RUNSPACE_AVAILABILITY], "RUNSPACE_AVAILABILITY")
    ci = member(d.done[0][1].xml(), "ci")
    check(ci is not None and ci.text == "7", "availability call id")
    sh.delete()
    # the default IdleTimeOut of Exchange's /PowerShell, and a server-chosen ShellId
    sh = Shell(srv.port).open(idle=None)
    shell = sh.create_response.find(".//rsp:Shell", NS)
    check(shell.find("rsp:IdleTimeOut", NS).text == "PT900.000S", "default IdleTimeOut")
    check(re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", sh.shell_id), "ShellId")
    sh.delete()
    # wrong configuration (the plain PowerShell endpoint is not in this catalog)
    sh = Shell(srv.port)
    f = expect_fault(lambda: sh.call(A_TRANSFER + "Create", "<rsp:Shell/>",
                                     resource_uri="http://schemas.microsoft.com/powershell/"
                                                  "Microsoft.PowerShell", shell=False),
                     "a:DestinationUnreachable", 2150858811)
    check("was not found in the WS-Management catalog" in f.reason, "2150858811 text")


def t_cas_mailbox(srv):
    sh = Shell(srv.port).open()
    r = sh.run("Get-CASMailbox", [("Identity", MBX % 2)])
    check(r.state == 4 and len(r.outputs) == 1 and not r.errors, "Get-CASMailbox")
    o = r.outputs[0]
    check("Microsoft.Exchange.Data.Directory.Management.CASMailbox" in
          [t.text for t in o.find("TN")], "CASMailbox type")
    srv.ctl("DELETE", "/control/calls")
    r = sh.run("Set-CASMailbox", [("Identity", MBX % 2),
                                  ("ActiveSyncAllowedDeviceIDs",
                                   {"Add": ["ApplF17ABC", "androidc123"], "Remove": ["ApplOLD1"]})])
    check(r.state == 4 and not r.outputs and not r.errors, "Set-CASMailbox %s %s" % (
        r.state, r.errors or r.failure))
    st = srv.ctl("GET", "/control/state/mailbox/" + MBX % 2)
    check(set(st["allowed"]) >= {"ApplF17ABC", "androidc123"}, "allowed list %s" % st["allowed"])
    r = sh.run("Set-CASMailbox", [("Identity", MBX % 2),
                                  ("ActiveSyncAllowedDeviceIDs", {"Remove": ["androidc123"]}),
                                  ("ActiveSyncBlockedDeviceIDs", {"Add": ["BadPhone1"]})])
    check(r.state == 4, "second Set-CASMailbox")
    st = srv.ctl("GET", "/control/state/mailbox/" + MBX % 2)
    check("androidc123" not in st["allowed"] and "ApplF17ABC" in st["allowed"], "Remove")
    check("BadPhone1" in st["blocked"], "blocked list")
    r = sh.run("Get-CASMailbox", [("Identity", MBX % 2)])
    allowed = list_of(member(r.outputs[0], "ActiveSyncAllowedDeviceIDs"))
    check("ApplF17ABC" in allowed and "androidc123" not in allowed, "read back %s" % allowed)
    calls = srv.ctl("GET", "/control/calls")
    sets = [c for c in calls if c["cmdlet"] == "Set-CASMailbox"]
    check(len(sets) == 2, "calls recorded: %s" % calls)
    check(sets[0]["parameters"]["ActiveSyncAllowedDeviceIDs"] ==
          {"Add": ["ApplF17ABC", "androidc123"], "Remove": ["ApplOLD1"]},
          "recorded hashtable %s" % sets[0]["parameters"])
    # an unknown mailbox: a non-terminating error record, pipeline Completed
    r = sh.run("Get-CASMailbox", [("Identity", "nobody@contoso.example")])
    check(r.state == 4 and len(r.errors) == 1, "not found: %s %s" % (r.state, r.errors))
    check("ManagementObjectNotFoundException" in r.errors[0]["types"][0], "error type")
    # a switch sent as <Nil N="V"/> (pypsrp) and as <B>true</B> (.NET), positional identity
    for switch in (None, True):
        r = sh.run("Get-CASMailbox", [(None, MBX % 3), ("ActiveSyncDebugLogging", switch)])
        check(r.state == 4 and len(r.outputs) == 1, "switch %r: %s %s" % (switch, r.state,
                                                                         r.failure))
    sh.delete()


def t_stream_5000(srv):
    sh = Shell(srv.port, max_env=153600).open()
    cid = sh.command([[("Get-MobileDevice", [("ResultSize", "Unlimited")], False)]])
    # nobody receives for a while: the engine must be held by the bounded queue
    time.sleep(1.5)
    shells = srv.ctl("GET", "/control/shells")
    mine = [s for s in shells if s["shell_id"] == sh.shell_id][0]
    p = [x for x in mine["pipelines"] if x["command_id"] == cid][0]
    check(p["state"] == "running", "pipeline still running (backpressure): %s" % p)
    check(p["queued_bytes"] <= 1024 * 1024 + 65536, "queue bounded: %d" % p["queued_bytes"])
    t0 = time.time()
    r = sh.collect(cid)
    sh.signal(cid, A_SHELL + "signal/terminate")
    check(r.state == 4, "state %s %s" % (r.state, r.failure))
    check(len(r.outputs) == 5000, "outputs %d" % len(r.outputs))
    check(r.receives > 5, "several Receives: %d" % r.receives)
    ids = set(text_of(member(o, "DeviceId")) for o in r.outputs)
    check(len(ids) > 100, "distinct devices")
    print("    5000 devices in %d Receives, %.1f s" % (r.receives, time.time() - t0))
    # small envelopes: messages split across Receives
    r = sh.run("Get-MobileDevice", [("ResultSize", 50)], max_env=8192)
    check(r.state == 4 and len(r.outputs) == 50, "small envelope: %s %d" % (r.state,
                                                                         len(r.outputs)))
    check(r.split_across > 0, "a message split across Receives")
    check(r.receives >= 20, "many Receives with 8 KB envelopes: %d" % r.receives)
    sh.delete()


def t_timed_out(srv):
    sh = Shell(srv.port, timeout="PT1S").open()
    t0 = time.time()
    f = expect_fault(lambda: sh.receive(None, Defrag()), "w:TimedOut", 2150858793)
    el = time.time() - t0
    check(0.8 <= el < 5, "held for OperationTimeout: %.2f s" % el)
    check(f.code == "s:Receiver" and f.reason == TIMED_OUT_TEXT and f.message == TIMED_OUT_TEXT,
          "TimedOut text %r" % f.reason)
    check(f.root.find("s:Header/a:Action", NS).text ==
          "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", "fault action")
    # a bad timeout header
    f = expect_fault(lambda: sh.call(A_SHELL + "Receive", "<rsp:Receive/>", timeout="PT-1S"),
                     "a:InvalidMessageInformationHeader", 2150858767)
    check("invalid timeout field in the SOAP header: PT-1S" in f.reason, f.reason)
    sh.delete()


def t_invalid_selectors(srv):
    sh = Shell(srv.port).open()
    good = sh.shell_id
    sh.shell_id = str(uuid.uuid4()).upper()
    f = expect_fault(lambda: sh.receive(None, Defrag()), "w:InvalidSelectors", 2150858843)
    check(f.code == "s:Sender" and f.reason == INVALID_SELECTORS_TEXT, "reason")
    check(f.detail == "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"
          "UnexpectedSelectors", "FaultDetail")
    check(f.provider is not None and f.provider.get("provider") == "Shell provider",
          "ProviderFault")
    sh.shell_id = good
    expect_fault(lambda: sh.receive(str(uuid.uuid4()).upper(), Defrag()), "w:InvalidSelectors",
                 2150858843)
    # through another listener: another server, which does not know the shell
    other = Conn(srv.ports[1])
    expect_fault(lambda: sh.call(A_SHELL + "Receive", "<rsp:Receive/>", conn=other),
                 "w:InvalidSelectors", 2150858843)
    other.close()
    # a long-poll in progress wakes up when the shell is lost
    out = {}

    def poll():
        try:
            Shell.receive(sh2, None, Defrag())
            out["r"] = "data"
        except Exception as e:
            out["r"] = e

    sh2 = Shell(srv.port, timeout="PT20S").open()
    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    res = srv.ctl("POST", "/control/faults", {"lose_shells": {"shell_id": sh2.shell_id}})
    check(res["lost"] == 1, "one shell lost")
    th.join(10)
    check(isinstance(out.get("r"), Fault) and out["r"].subcode == "w:InvalidSelectors",
          "pending Receive: %r" % out.get("r"))
    expect_fault(lambda: sh2.run("Get-CASMailbox", []), "w:InvalidSelectors", 2150858843)
    res = srv.ctl("POST", "/control/faults", {"lose_shells": True})
    check(res["lost"] >= 1, "lose all")
    expect_fault(lambda: sh.delete(), "w:InvalidSelectors", 2150858843)


def t_scripts(srv):
    sh = Shell(srv.port).open()
    script = "Set-Item -Path WSMan:\\localhost\\Service\\AllowUnencrypted -Value $false"
    cid = sh.command([[("Get-CASMailbox", [("Identity", MBX % 1)], False)],
                      [(script, [], True)]])
    r = sh.collect(cid)
    check(len(r.outputs) == 1, "the first statement ran")
    check(r.state == 5 and r.failure, "Failed")
    f = r.failure
    check(f["fqeid"] == "ScriptsNotAllowed" and f["category"] == 17 and
          f["reason"] == "ParseException", "refusal %s" % f)
    check(f["message"] == "The syntax is not supported by this runspace. This can occur if the "
          "runspace is in no-language mode.", "text %r" % f["message"])
    check(f["types"][0] == "System.Management.Automation.ParseException", "exception type")
    check(f["target"] == script, "target is the script text")
    check(f["category_message"] ==
          "ParserError: (Set-Item -Path ...d -Value $false:String) [], ParseException",
          "category line %r" % f["category_message"])
    # an unknown cmdlet: CommandNotFoundException
    r = sh.run("Get-Nothing", [])
    check(r.state == 5 and "CommandNotFoundException" in r.failure["fqeid"], "unknown cmdlet")
    sh.delete()


def t_split_and_signals(srv):
    sh = Shell(srv.port).open()
    # CREATE_PIPELINE in several fragments: the first in Arguments, the rest by Send
    cid = sh.command([[("Get-CASMailbox", [("Identity", MBX % 4)], False)]], split=300)
    r = sh.collect(cid)
    check(r.state == 4 and len(r.outputs) == 1, "split CREATE_PIPELINE")
    sh.signal(cid, A_SHELL + "signal/Terminate")  # case-insensitive
    expect_fault(lambda: sh.receive(cid, Defrag()), "w:InvalidSelectors", 2150858843)
    # stop a long pipeline with both spellings of the PSRP stop code
    for code in ("powershell/signal/ctrl_c", "powershell/signal/crtl_c"):
        cid = sh.command([[("Get-MobileDevice", [("ResultSize", "Unlimited")], False)]])
        time.sleep(0.3)
        sh.signal(cid, code)
        r = sh.collect(cid)
        check(r.state == 3, "%s: state %s" % (code, r.state))
        check(len(r.outputs) < 5000, "stopped early (%d objects)" % len(r.outputs))
        check(r.failure and r.failure["fqeid"] == "PipelineStopped", "stop record")
        sh.signal(cid, A_SHELL + "signal/terminate")
    f = expect_fault(lambda: sh.signal(str(uuid.uuid4()).upper(), A_SHELL + "signal/terminate"),
                     "w:InvalidSelectors", 2150858843)
    # NoInput false: PIPELINE_INPUT then END_OF_PIPELINE_INPUT by Send
    cid = sh.command([[("Get-CASMailbox", [("Identity", MBX % 5)], False)]], no_input=False)
    pid = sh.pids[cid]
    sh.send(cid, b"".join(sh.frags(PIPELINE_INPUT, "<S>x</S>", pid) +
                          sh.frags(END_OF_PIPELINE_INPUT, "", pid)))
    r = sh.collect(cid)
    check(r.state == 4 and len(r.outputs) == 1, "pipeline with input")
    sh.delete()


def t_concurrency(srv):
    errors = []

    def worker(i):
        try:
            sh = Shell(srv.port).open()
            c1 = sh.command([[("Get-MobileDevice", [("ResultSize", 300)], False)]])
            c2 = sh.command([[("Get-CASMailbox", [("Identity", MBX % (i + 1))], False)]])
            r2 = sh.collect(c2)
            r1 = sh.collect(c1)
            check(r1.state == 4 and len(r1.outputs) == 300, "worker %d pipeline 1" % i)
            check(r2.state == 4 and len(r2.outputs) == 1, "worker %d pipeline 2" % i)
            sh.delete()
        except Exception as e:
            errors.append("worker %d: %r" % (i, e))

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(300)
    check(not errors, "; ".join(errors))


def t_control_state(srv):
    r = srv.ctl("POST", "/control/device-sync", {"mailbox": MBX % 6, "device_id": "TestDev123",
                                                 "device_type": "iPhone", "model": "iPhone15,2"})
    check("access_state" in r, "sync outcome %s" % r)
    d = srv.ctl("GET", "/control/state/device/%s/TestDev123" % (MBX % 6))
    check(d["device_id"] == "TestDev123" and d["device_type"] == "iPhone", "device state %s" % d)
    o = srv.ctl("GET", "/control/state/org")
    check(o["profile"] == "2016" or o["profile"], "org state")
    srv.ctl("GET", "/control/state/mailbox/nobody@contoso.example", expect=404)
    srv.ctl("GET", "/control/state/device/%s/NoSuchDevice" % (MBX % 6), expect=404)
    srv.ctl("GET", "/control/nothing", expect=404)
    srv.ctl("POST", "/control/faults", {"no_such_fault": 1}, expect=400)
    info = srv.ctl("GET", "/control/info")
    check(len(info["listeners"]) == 2 and info["listeners"][1]["port"] == srv.ports[1], "info")
    # the call log
    srv.ctl("DELETE", "/control/calls")
    check(srv.ctl("GET", "/control/calls") == [], "calls cleared")
    sh = Shell(srv.port).open()
    sh.run("Get-CASMailbox", [("Identity", MBX % 7)])
    calls = srv.ctl("GET", "/control/calls")
    check(len(calls) == 1 and calls[0]["cmdlet"] == "Get-CASMailbox" and
          calls[0]["parameters"] == {"Identity": MBX % 7}, "call log %s" % calls)
    sh.delete()


def timed_run(sh, cmdlet, params):
    t0 = time.time()
    r = sh.run(cmdlet, params)
    return r, time.time() - t0


def t_engine_faults(srv):
    sh = Shell(srv.port).open()
    cas = [("Identity", MBX % 8)]
    # latency
    srv.ctl("POST", "/control/faults", {"latency": {"cmdlet": "Get-CASMailbox", "ms": 1000}})
    r, el = timed_run(sh, "Get-CASMailbox", cas)
    check(r.state == 4 and el >= 1.0, "latency on: %.2f s" % el)
    srv.ctl("POST", "/control/faults", {"latency": {"cmdlet": "Get-CASMailbox", "ms": 0}})
    r, el = timed_run(sh, "Get-CASMailbox", cas)
    check(r.state == 4 and el < 0.8, "latency off: %.2f s" % el)
    # quota, delivered as a WS-Man fault (the default) ...
    srv.ctl("POST", "/control/faults",
            {"quota": {"cmdlet": "Get-CASMailbox", "next_k": 1, "delay_ms": 2500}})
    cid = sh.command([[("Get-CASMailbox", cas, False)]])
    f = expect_fault(lambda: sh.collect(cid), "w:QuotaLimit", 2150859174)
    check("user load quota" in f.message and "at least 2500 milliseconds" in f.message,
          "quota text %r" % f.message)
    expect_fault(lambda: sh.receive(cid, Defrag()), "w:InvalidSelectors", 2150858843)
    r = sh.run("Get-CASMailbox", cas)
    check(r.state == 4, "quota over after next_k")
    # ... or as a failed pipeline
    srv.ctl("POST", "/control/faults",
            {"quota": {"cmdlet": "Get-CASMailbox", "next_k": 1, "delay_ms": 1500, "as": "error"}})
    r = sh.run("Get-CASMailbox", cas)
    check(r.state == 5 and "1500 milliseconds" in r.failure["message"], "quota as error")
    check(srv.ctl("GET", "/control/faults")["quota_as"] == "error", "quota_as")
    # micro-delay warnings
    srv.ctl("POST", "/control/faults",
            {"micro_delay": {"cmdlet": "Get-CASMailbox", "every_nth": 1, "delay_ms": 40}})
    r = sh.run("Get-CASMailbox", cas)
    check(any(w and w.startswith("Micro delay applied") for w in r.warnings),
          "micro delay warning %s" % r.warnings)
    srv.ctl("POST", "/control/faults",
            {"micro_delay": {"cmdlet": "Get-CASMailbox", "every_nth": 0, "delay_ms": 0}})
    r = sh.run("Get-CASMailbox", cas)
    check(not r.warnings, "micro delay off")
    # write scope
    setp = [("Identity", MBX % 9), ("ActiveSyncBlockedDeviceIDs", {"Add": ["X1"]})]
    srv.ctl("POST", "/control/faults", {"write_scope": {"mailbox": MBX % 9, "on": True}})
    r = sh.run("Set-CASMailbox", setp)
    check(r.errors or r.state == 5, "write scope error")
    srv.ctl("POST", "/control/faults", {"write_scope": {"mailbox": MBX % 9, "on": False}})
    r = sh.run("Set-CASMailbox", setp)
    check(r.state == 4 and not r.errors, "write scope off: %s" % r.errors)
    # RBAC
    srv.ctl("POST", "/control/faults", {"rbac": {"hide_cmdlets": ["Get-MobileDevice"]}})
    r = sh.run("Get-MobileDevice", [("ResultSize", 1)])
    check(r.state == 5 and "CommandNotFoundException" in r.failure["fqeid"], "hidden cmdlet")
    srv.ctl("POST", "/control/faults",
            {"rbac": {"hide_parameters": [{"cmdlet": "Set-CASMailbox",
                                           "parameter": "ActiveSyncBlockedDeviceIDs"}]}})
    r = sh.run("Set-CASMailbox", setp)
    check(r.state == 5 and "NamedParameterNotFound" in r.failure["fqeid"], "hidden parameter")
    srv.ctl("POST", "/control/faults", {"rbac": {"reset": True}})
    r = sh.run("Get-MobileDevice", [("ResultSize", 1)])
    check(r.state == 4, "rbac reset")
    # DELETE resets everything
    srv.ctl("POST", "/control/faults", {"latency": {"cmdlet": None, "ms": 1000}})
    srv.ctl("DELETE", "/control/faults")
    r, el = timed_run(sh, "Get-CASMailbox", cas)
    check(r.state == 4 and el < 0.8, "all faults off: %.2f s" % el)
    check(srv.ctl("GET", "/control/faults")["quota_as"] == "fault", "quota_as reset")
    sh.delete()


def raw_post(port, body):
    c = Conn(port)
    try:
        return c.post(body)
    finally:
        c.close()


def t_transport_faults(srv):
    # the shell ceiling per user, with Exchange's default of 18
    srv.ctl("POST", "/control/faults", {"max_shells_per_user": 18})
    shells = [Shell(srv.port, user="other", password="Pass-2").open() for _ in range(18)]
    f = expect_fault(lambda: Shell(srv.port, user="other", password="Pass-2").open(),
                     "w:QuotaLimit", 2150859173)
    check("This user is allowed a maximum number of 18 concurrent shells, which has been "
          "exceeded." in f.message, "shell ceiling text %r" % f.message)
    Shell(srv.port).open().delete()  # another user is not affected
    shells.pop().delete()
    shells.append(Shell(srv.port, user="other", password="Pass-2").open())
    srv.ctl("POST", "/control/faults", {"max_shells_per_user": 0})
    shells.append(Shell(srv.port, user="other", password="Pass-2").open())
    for s in shells:
        s.delete()
    # commands per shell
    sh = Shell(srv.port).open()
    srv.ctl("POST", "/control/faults", {"commands_per_shell": 2})
    sh.run("Get-CASMailbox", [("Identity", MBX % 1)])
    sh.run("Get-CASMailbox", [("Identity", MBX % 1)])
    f = expect_fault(lambda: sh.run("Get-CASMailbox", [("Identity", MBX % 1)]),
                     "w:InternalError", 2150859241)
    check("maximum number of concurrent commands per shell has been exceeded" in f.message,
          "commands per shell text")
    srv.ctl("POST", "/control/faults", {"commands_per_shell": 0})
    check(sh.run("Get-CASMailbox", [("Identity", MBX % 1)]).state == 4, "limit off")
    # HTTP 503 for the next 2 requests
    srv.ctl("POST", "/control/faults", {"http_error": {"status": 503, "count": 2,
                                                       "retry_after": 3}})
    body = envelope(A_SHELL + "Receive", shell_id=sh.shell_id, timeout="PT1S",
                    body="<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream>"
                    "</rsp:Receive>")[0]
    for _ in range(2):
        st, hd, _ = raw_post(srv.port, body)
        check(st == 503 and hd.get("retry-after") == "3", "503: %d %s" % (st, hd))
    st, _, _ = raw_post(srv.port, body)
    check(st == 500, "after the 503s: the normal TimedOut fault (%d)" % st)
    srv.ctl("POST", "/control/faults", {"http_error": {"status": 500, "count": 1}})
    st, hd, payload = raw_post(srv.port, body)
    check(st == 500 and b"Fault" not in payload, "a bare 500")
    # dropped connections
    srv.ctl("POST", "/control/faults", {"drop_connections": 1})
    try:
        raw_post(srv.port, body)
        raise TestFailure("the connection was not dropped")
    except (http.client.HTTPException, ConnectionError, OSError) as e:
        check(not isinstance(e, TestFailure), "dropped")
    st, _, _ = raw_post(srv.port, body)
    check(st == 500, "next request answered")
    # dropped after processing: the shell exists although the client got no answer
    before = len(srv.ctl("GET", "/control/shells"))
    srv.ctl("POST", "/control/faults", {"drop_connections": {"count": 1, "when": "after"}})
    try:
        Shell(srv.port).open()
        raise TestFailure("the answer was not dropped")
    except (http.client.HTTPException, ConnectionError, OSError):
        pass
    check(len(srv.ctl("GET", "/control/shells")) == before + 1, "processed before the drop")
    check(srv.ctl("GET", "/control/faults")["drop_connections"]["count"] == 0, "count used up")
    srv.ctl("DELETE", "/control/faults")
    sh.delete()


def connect_refused(port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def t_listener_down_up(srv):
    sh0 = Shell(srv.ports[0]).open()
    sh1 = Shell(srv.ports[1]).open()
    out = {}

    def poll():
        try:
            sh1.receive(None, Defrag(), timeout="PT20S")
            out["r"] = "data"
        except Exception as e:
            out["r"] = e

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    r = srv.ctl("POST", "/control/listener/1/down")
    check(r["up"] is False and r["port"] == srv.ports[1], "down %s" % r)
    th.join(10)
    check(not th.is_alive() and not isinstance(out.get("r"), (str, Fault)),
          "the pending Receive's connection was closed: %r" % out.get("r"))
    check(connect_refused(srv.ports[1]), "connections refused while down")
    check(sh0.run("Get-CASMailbox", [("Identity", MBX % 1)]).state == 4, "listener 0 works")
    srv.ctl("POST", "/control/listener/1/up")
    check(not connect_refused(srv.ports[1]), "accepting again")
    sh1.conn.close()
    expect_fault(lambda: sh1.run("Get-CASMailbox", []), "w:InvalidSelectors", 2150858843)
    sh2 = Shell(srv.ports[1]).open()
    check(sh2.run("Get-CASMailbox", [("Identity", MBX % 1)]).state == 4, "new shell on 1")
    sh2.delete()
    sh0.delete()
    srv.ctl("POST", "/control/listener/9/down", expect=404)


def t_seed(srv):
    r = srv.ctl("POST", "/control/seed", {"mailboxes": 3, "devices": 4, "seed": 7,
                                          "profile": "2013"})
    check(r["mailboxes"] == 3 and r["profile"] == "2013", "seed %s" % r)
    sh = Shell(srv.port).open()
    r = sh.run("Get-MobileDevice", [("ResultSize", "Unlimited")])
    check(r.state == 4 and len(r.outputs) == 4, "reseeded org: %d devices" % len(r.outputs))
    r = sh.run("Get-CASMailbox", [("Identity", MBX % 4)])
    check(r.errors, "mailbox 4 is gone")
    sh.delete()
    srv.ctl("POST", "/control/seed", {"profile": "x"}, expect=400)


def t_sigterm(srv, binary):
    # a Receive pending and a pipeline held by backpressure: SIGTERM still stops at once
    sh = Shell(srv.port, timeout="PT30S").open()
    sh.command([[("Get-MobileDevice", [("ResultSize", "Unlimited")], False)]])
    th = threading.Thread(target=lambda: _swallow(lambda: sh.receive(None, Defrag())))
    th.start()
    time.sleep(0.5)
    t0 = time.time()
    srv.stop()
    check(time.time() - t0 < 15, "stopped in %.1f s" % (time.time() - t0))
    th.join(10)


def t_tls(binary, pki_script):
    """HTTPS with --tls-cert/--tls-key (a throwaway PKI), Basic over TLS, one listener."""
    d = tempfile.mkdtemp(prefix="mock-fe-pki-")
    subprocess.run(["bash", pki_script, d], check=True)
    srv = Server(binary, ["--tls-cert", os.path.join(d, "server.pem"), "--tls-key",
                          os.path.join(d, "server-key.pem"), "--mailboxes", "5", "--devices",
                          "5"], listeners=1)
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
        sh = Shell(srv.port, tls=ctx).open()
        r = sh.run("Get-CASMailbox", [("Identity", MBX % 1)])
        check(r.state == 4 and len(r.outputs) == 1, "Get-CASMailbox over HTTPS")
        sh.delete()
        c = Conn(srv.port, "svc-eas", "bad", tls=ctx)
        st, _, _ = c.post(envelope(A_TRANSFER + "Create")[0])
        check(st == 401, "401 over HTTPS")
        c.close()
        # plain HTTP to the HTTPS listener gets no SOAP answer
        try:
            st, _, _ = Conn(srv.port).post(envelope(A_TRANSFER + "Create")[0])
            check(st != 200, "plain HTTP refused")
        except (http.client.HTTPException, ConnectionError, OSError):
            pass
    finally:
        srv.stop()


def _swallow(fn):
    try:
        fn()
    except Exception:
        pass


TESTS = [
    ("auth", t_auth),
    ("open_pool", t_open_pool),
    ("cas_mailbox", t_cas_mailbox),
    ("stream_5000", t_stream_5000),
    ("timed_out", t_timed_out),
    ("invalid_selectors", t_invalid_selectors),
    ("scripts", t_scripts),
    ("split_and_signals", t_split_and_signals),
    ("concurrency", t_concurrency),
    ("control_state", t_control_state),
    ("engine_faults", t_engine_faults),
    ("transport_faults", t_transport_faults),
    ("listener_down_up", t_listener_down_up),
    ("seed", t_seed),
]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    binary = sys.argv[1]
    pki = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2].endswith(".sh") else None
    only = [a for a in sys.argv[2:] if a != pki]
    srv = Server(binary, ["--mailboxes", "100", "--devices", "5000", "--profile", "2016"])
    failed = []
    try:
        for name, fn in TESTS:
            if only and not any(o in name for o in only):
                continue
            t0 = time.time()
            try:
                fn(srv)
                print("ok   %-20s %.1f s" % (name, time.time() - t0))
            except Exception:
                failed.append(name)
                print("FAIL %-20s" % name)
                traceback.print_exc()
                srv.ctl("DELETE", "/control/faults")
        if pki and (not only or "tls" in only):
            try:
                t_tls(binary, pki)
                print("ok   tls")
            except Exception:
                failed.append("tls")
                traceback.print_exc()
        if not only or any(o in "sigterm" for o in only):
            try:
                t_sigterm(srv, binary)
                print("ok   sigterm")
            except Exception:
                failed.append("sigterm")
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
    if failed:
        print("FAILED: %s" % ", ".join(failed))
        return 1
    print("all front-end tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
