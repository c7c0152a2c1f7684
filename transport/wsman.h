/* wsman.h - WS-Management (DSP0226 + MS-WSMV) SOAP messages for the WinRS/PowerShell shell.
 *
 * Builds the request envelopes a PowerShell remoting client sends (Create, Receive, Command,
 * Send, Signal, Delete, Get) and parses the responses, including SOAP faults, which arrive with
 * HTTP 500 and must be parsed all the same. The PSRP payloads (creationXml, Arguments, Stream)
 * are opaque here: the caller hands in base64 text and gets decoded bytes back.
 *
 * Building: careful string building with XML escaping; the output is byte-for-byte the envelope
 * pypsrp sends for the same values (shared/vectors), header order of psrp-wire.md section 3,
 * except that a Create's IdleTimeOut comes first in rsp:Shell (MS-WSMV order, as Windows sends).
 * Every input string is checked to be UTF-8 made of XML 1.0 characters (EG_EINVAL otherwise), so
 * the output is always well-formed.
 *
 * Parsing: libxml2 tree API with XML_PARSE_NONET, no entity substitution, no DTD (a document
 * with a DOCTYPE is refused: SOAP 1.2 forbids it, and that rules out entity expansion), no error
 * output; input bounded by EG_WSMAN_MAX_RESPONSE_BYTES. Every lookup matches namespace URI and
 * local name, never a prefix. Texts are copied into eg_malloc'd memory.
 *
 * Thread-safe: no shared state of ours; libxml2's per-thread error handlers are borrowed during a
 * parse and restored. xmlInitParser() runs on first use; calling it (and eg_alloc_init()) once at
 * start-up, before threads, is still best. Nothing here logs.
 */
#ifndef EG_WSMAN_H
#define EG_WSMAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/limits.h"

/* ---- namespaces (match on these, never on prefixes) ---- */
#define EG_WSMAN_NS_SOAP       "http://www.w3.org/2003/05/soap-envelope"
#define EG_WSMAN_NS_ADDRESSING "http://schemas.xmlsoap.org/ws/2004/08/addressing"
#define EG_WSMAN_NS_WSMAN      "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
#define EG_WSMAN_NS_WSMV       "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
#define EG_WSMAN_NS_SHELL      "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
#define EG_WSMAN_NS_TRANSFER   "http://schemas.xmlsoap.org/ws/2004/09/transfer"
#define EG_WSMAN_NS_FAULT      "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
#define EG_WSMAN_NS_CONFIG     "http://schemas.microsoft.com/wbem/wsman/1/config"
#define EG_WSMAN_NS_POWERSHELL "http://schemas.microsoft.com/powershell"

/* ---- resource URIs ---- */
#define EG_WSMAN_URI_EXCHANGE   "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
#define EG_WSMAN_URI_POWERSHELL "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
#define EG_WSMAN_URI_SHELL      "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
#define EG_WSMAN_URI_CONFIG     "http://schemas.microsoft.com/wbem/wsman/1/config"

/* ---- signal codes (psrp-wire.md section 4 (5)) ---- */
/* Stop a running pipeline: MS-PSRP 3.1.5.3.9's spelling, the one Windows PowerShell sends. */
#define EG_WSMAN_SIGNAL_PS_STOP "powershell/signal/crtl_c"
/* Release a (finished) command: MS-WSMV spelling. */
#define EG_WSMAN_SIGNAL_TERMINATE                                                                  \
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"

/* ---- CommandState URIs ---- */
#define EG_WSMAN_STATE_DONE    EG_WSMAN_NS_SHELL "/CommandState/Done"
#define EG_WSMAN_STATE_RUNNING EG_WSMAN_NS_SHELL "/CommandState/Running"
#define EG_WSMAN_STATE_PENDING EG_WSMAN_NS_SHELL "/CommandState/Pending"

/* Text of a GUID, 8-4-4-4-12 upper-case hex, and of a "uuid:" MessageID, NUL included. */
#define EG_WSMAN_UUID_SIZE       37
#define EG_WSMAN_MESSAGE_ID_SIZE (5 + EG_WSMAN_UUID_SIZE)

/* Write a new random (version 4) GUID as upper-case text into out. Returns 0 or EG_EIO (no
 * randomness available). */
int eg_wsman_uuid(char out[EG_WSMAN_UUID_SIZE]) EG_MUST_CHECK;

/* =========================================================================================== */
/* Building requests                                                                            */
/* =========================================================================================== */

/* What stays the same for every request of one client session (the common header). Strings are
 * borrowed for the duration of the call. */
struct eg_wsman_target {
    /* wsa:To: the endpoint URL, e.g. "https://exch01/PowerShell" (a query string is allowed);
     * required. */
    const char *to;
    /* wsman:ResourceURI, e.g. EG_WSMAN_URI_EXCHANGE; required (the Get builders use their own). */
    const char *resource_uri;
    /* wsmv:SessionId GUID, with or without "uuid:"; NULL = omit. */
    const char *session_id;
    /* wsman:Locale and wsmv:DataLocale xml:lang; NULL = "en-US" and the same as locale. */
    const char *locale;
    const char *data_locale;
    /* wsman:MaxEnvelopeSize in bytes; 0 = EG_WSMAN_DEFAULT_MAX_ENVELOPE; at most
     * EG_WSMAN_MAX_MAX_ENVELOPE. */
    uint32_t max_envelope_size;
    /* wsman:OperationTimeout; 0 = EG_WSMAN_DEFAULT_OPERATION_TIMEOUT_MS; at most
     * EG_WSMAN_MAX_OPERATION_TIMEOUT_MS. */
    uint32_t operation_timeout_ms;
    /* Replay and tests only: use this wsa:MessageID (with or without "uuid:") instead of a new
     * random one. NULL normally. */
    const char *message_id;
};

/* A built request. */
struct eg_wsman_request {
    char *xml;  /* NUL-terminated UTF-8 envelope; freed by eg_wsman_request_clear */
    size_t len; /* strlen(xml): the HTTP body length */
    /* "uuid:XXXXXXXX-...": the response's RelatesTo must name it */
    char message_id[EG_WSMAN_MESSAGE_ID_SIZE];
};

/* Free r->xml and zero *r. Accepts NULL and an already cleared request. */
void eg_wsman_request_clear(struct eg_wsman_request *r);

struct eg_wsman_create_opts {
    /* base64 of the SESSION_CAPABILITY + INIT_RUNSPACEPOOL fragments; required, not empty */
    const char *creation_xml_b64;
    /* rsp:Shell/@ShellId chosen by the client; NULL = the server picks one (either way, use the
     * one the response returns) */
    const char *shell_id;
    /* rsp:IdleTimeOut; 0 = omit it (the server's default: 900 s on Exchange) */
    uint32_t idle_timeout_ms;
    /* the protocolversion option (MustComply); NULL = "2.3" */
    const char *protocol_version;
};

/* Every builder: validates its arguments (EG_EINVAL for a missing required string, an empty id,
 * text that is not UTF-8 XML characters, base64 text with characters outside A-Z a-z 0-9 + / =,
 * numbers out of range), then writes *ret (only on success; clear it with
 * eg_wsman_request_clear). Returns 0, EG_EINVAL, EG_EIO (no randomness for the MessageID) or
 * EG_ENOMEM. */

/* Create (transfer/Create) of a PowerShell runspace-pool shell: rsp:Shell with InputStreams
 * "stdin pr", OutputStreams "stdout", optional IdleTimeOut, creationXml; no SelectorSet. */
int eg_wsman_build_create(const struct eg_wsman_target *t, const struct eg_wsman_create_opts *o,
                          struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Receive of stdout, for the shell (command_id NULL: runspace-pool messages) or for one command.
 * Carries the WSMAN_CMDSHELL_OPTION_KEEPALIVE=True option. */
int eg_wsman_build_receive(const struct eg_wsman_target *t, const char *shell_id,
                           const char *command_id, struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Command: rsp:CommandLine with the client's CommandId (required: PSRP uses the pipeline id),
 * an empty rsp:Command and rsp:Arguments = arguments_b64 (the first CREATE_PIPELINE fragments;
 * required, non-empty). Carries WINRS_SKIP_CMD_SHELL=False, as pypsrp does. */
int eg_wsman_build_command(const struct eg_wsman_target *t, const char *shell_id,
                           const char *command_id, const char *arguments_b64,
                           struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Send: one rsp:Stream named stream ("stdin" for pipeline data, "pr" for host responses) with
 * data_b64 (may be "" - e.g. to measure the envelope overhead when sizing fragments);
 * command_id NULL for pool-level messages; end adds End="true". */
int eg_wsman_build_send(const struct eg_wsman_target *t, const char *shell_id,
                        const char *command_id, const char *stream, const char *data_b64, bool end,
                        struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Signal code (EG_WSMAN_SIGNAL_PS_STOP, EG_WSMAN_SIGNAL_TERMINATE, or any other code text) to
 * command_id (required). */
int eg_wsman_build_signal(const struct eg_wsman_target *t, const char *shell_id,
                          const char *command_id, const char *code,
                          struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Delete (transfer/Delete) of the shell: empty body. */
int eg_wsman_build_delete(const struct eg_wsman_target *t, const char *shell_id,
                          struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Get of the shell's status: ResourceURI EG_WSMAN_URI_SHELL (t->resource_uri is ignored). */
int eg_wsman_build_get_shell(const struct eg_wsman_target *t, const char *shell_id,
                             struct eg_wsman_request *ret) EG_MUST_CHECK;

/* Get of the WinRM configuration (MaxEnvelopeSizekb; administrators only): ResourceURI
 * EG_WSMAN_URI_CONFIG, no SelectorSet (t->resource_uri is ignored). */
int eg_wsman_build_get_config(const struct eg_wsman_target *t,
                              struct eg_wsman_request *ret) EG_MUST_CHECK;

/* =========================================================================================== */
/* Faults                                                                                       */
/* =========================================================================================== */

/* What the client should do about a fault. */
enum eg_wsman_fault_kind {
    EG_WSMAN_FAULT_OTHER = 0,         /* anything else: report it */
    EG_WSMAN_FAULT_TIMED_OUT,         /* w:TimedOut / 2150858793: nothing within OperationTimeout;
                                         normal for Receive, just send it again */
    EG_WSMAN_FAULT_INVALID_SELECTORS, /* w:InvalidSelectors / 2150858843 (or Exchange's
                                         "WSMan-InvalidShellID"): the shell or command is gone;
                                         rebuild the runspace pool */
    EG_WSMAN_FAULT_ACCESS_DENIED,     /* w:AccessDenied, code 5 / 0x80070005 */
    EG_WSMAN_FAULT_THROTTLED,         /* w:QuotaLimit, w:Concurrency, wsa:EndpointUnavailable,
                                         codes 2150859173 (shells per user) and 2150859174
                                         (operations per user), or a text with "quota",
                                         "concurrent shells", "concurrent operations", "maximum
                                         number of connections" or "exceeded your budget"
                                         (e.g. concurrent commands per shell): back off */
};

/* A parsed SOAP fault. Every string is eg_malloc'd, trimmed of surrounding white space, NULL when
 * absent. */
struct eg_wsman_fault {
    enum eg_wsman_fault_kind kind;
    /* s:Code/s:Value, a QName resolved to namespace URI (EG_WSMAN_NS_SOAP) and local name
     * ("Sender", "Receiver", "MustUnderstand"...) */
    char *code_ns;
    char *code;
    /* s:Code/s:Subcode/s:Value likewise: EG_WSMAN_NS_WSMAN for the WS-Man faults ("TimedOut",
     * "InvalidSelectors"...), EG_WSMAN_NS_ADDRESSING for the wsa: ones; NULL if none (or, for
     * the namespace, if its prefix is not declared) */
    char *subcode_ns;
    char *subcode;
    /* s:Reason/s:Text (the first one) */
    char *reason;
    /* f:WSManFault/@Code of the outermost fault that has a numeric one, e.g. 2150858793 */
    bool has_wsman_code;
    uint32_t wsman_code;
    /* f:WSManFault/@Machine (the first one) */
    char *machine;
    /* The first text in document order of: f:Message itself, a nested f:ProviderFault, the
     * f:Message of a f:WSManFault nested in that (Windows puts it at any of these levels);
     * else reason. */
    char *message;
    /* f:ProviderFault/@provider, e.g. "Shell provider" */
    char *provider;
    /* w:FaultDetail, a URI (e.g. .../faultDetail/UnexpectedSelectors) */
    char *fault_detail;
};

/* Free a fault and everything in it. Accepts NULL. */
void eg_wsman_fault_free(struct eg_wsman_fault *f);

/* Stable lower-case name of a kind ("timed_out", "invalid_selectors", "access_denied",
 * "throttled", "other"). Never NULL. */
const char *eg_wsman_fault_kind_name(enum eg_wsman_fault_kind kind);

/* The EG_E* code a caller should return for a fault of this kind: EG_ETIMEDOUT, EG_ENOTFOUND
 * (shell gone), EG_EPERM, EG_EAGAIN, EG_EREMOTE (other). */
int eg_wsman_fault_error(enum eg_wsman_fault_kind kind);

/* Parse xml (len bytes; the HTTP body whatever the status) as a SOAP envelope carrying a fault.
 * On success *ret is the fault (caller frees with eg_wsman_fault_free).
 * Returns 0, EG_ENOTFOUND (a well-formed SOAP envelope without s:Fault), EG_EPARSE (not
 * well-formed XML, or a DTD), EG_EPROTO (not a SOAP 1.2 envelope, or a malformed fault),
 * EG_ELIMIT (as for eg_wsman_parse_response), EG_EINVAL, EG_ENOMEM.
 */
int eg_wsman_parse_fault(const char *xml, size_t len, struct eg_wsman_fault **ret) EG_MUST_CHECK;

/* =========================================================================================== */
/* Parsing responses                                                                            */
/* =========================================================================================== */

/* The request a response answers. */
enum eg_wsman_op {
    EG_WSMAN_OP_CREATE = 0,
    EG_WSMAN_OP_RECEIVE,
    EG_WSMAN_OP_COMMAND,
    EG_WSMAN_OP_SEND,
    EG_WSMAN_OP_SIGNAL,
    EG_WSMAN_OP_DELETE,
    EG_WSMAN_OP_GET_SHELL,
    EG_WSMAN_OP_GET_CONFIG,
};

/* One rsp:Stream of a ReceiveResponse, base64-decoded (common/base64.h, strict, white space
 * allowed). */
struct eg_wsman_stream {
    char *name;       /* @Name, e.g. "stdout"; never NULL */
    char *command_id; /* @CommandId; NULL for shell-level output */
    uint8_t *data;    /* decoded bytes, a NUL after them; never NULL, len may be 0 */
    size_t len;
    bool end; /* @End="true": no more data on this stream */
};

enum eg_wsman_command_state {
    EG_WSMAN_CMD_NONE = 0, /* no rsp:CommandState in the response */
    EG_WSMAN_CMD_DONE,
    EG_WSMAN_CMD_RUNNING,
    EG_WSMAN_CMD_PENDING,
    EG_WSMAN_CMD_OTHER, /* a State URI not listed above (see state_uri) */
};

/* A parsed successful response. Strings are eg_malloc'd, trimmed, NULL when absent. */
struct eg_wsman_response {
    enum eg_wsman_op op;
    char *action;     /* wsa:Action */
    char *message_id; /* wsa:MessageID */
    char *relates_to; /* wsa:RelatesTo */

    /* CREATE, GET_SHELL. shell_id is never NULL for these: for CREATE the ShellId selector of
     * x:ResourceCreated (use it on every later request), else rsp:Shell/rsp:ShellId; for
     * GET_SHELL rsp:Shell/rsp:ShellId. The timeouts are -1 when absent or not a day-time
     * xs:duration. */
    char *shell_id;
    char *shell_state; /* rsp:Shell/rsp:State, e.g. "Connected" */
    int64_t idle_timeout_ms;
    int64_t max_idle_timeout_ms;

    /* COMMAND: rsp:CommandResponse/rsp:CommandId, never NULL for this op */
    char *command_id;

    /* RECEIVE: the streams in document order, then the optional rsp:CommandState (@State,
     * @CommandId, rsp:ExitCode) */
    struct eg_wsman_stream *streams;
    size_t n_streams;
    enum eg_wsman_command_state state;
    char *state_uri;
    char *state_command_id;
    bool has_exit_code;
    int64_t exit_code;

    /* GET_CONFIG: cfg:Config/cfg:MaxEnvelopeSizekb (never 0 for this op) and MaxTimeoutms (0
     * when absent) */
    uint32_t max_envelope_size_kb;
    uint32_t max_timeout_ms;
};

/* Free a response and everything in it. Accepts NULL. */
void eg_wsman_response_free(struct eg_wsman_response *r);

/* Parse the response (xml, len bytes: the HTTP body, whatever the HTTP status) to a request of
 * kind op. expect_message_id (may be NULL: no check) is the request's MessageID: a successful
 * response must carry it in wsa:RelatesTo (compared case-insensitively, "uuid:" optional); a
 * fault is only checked when it has a RelatesTo. A wsa:Action, when present, must be the
 * operation's response action (transfer/GetResponse for both Gets).
 *
 * On success *ret is the response (caller frees with eg_wsman_response_free).
 * Returns:
 *   0             success;
 *   EG_EREMOTE    the body is a SOAP fault: *ret_fault (if ret_fault is non-NULL) gets it,
 *                 caller frees with eg_wsman_fault_free; eg_wsman_fault_error(kind) says what to
 *                 return further up;
 *   EG_EPARSE     not well-formed XML (also: a NUL byte in UTF-8 text, UTF-16 without a byte
 *                 order mark or declaration), a DTD, base64 that is not strict base64, a number
 *                 that is not one;
 *   EG_EPROTO     well-formed but not what the operation answers: not a SOAP 1.2 envelope, no
 *                 body, wrong action, RelatesTo mismatch, a required element or attribute
 *                 missing or empty, a repeated rsp:CommandState, an End that is not xs:boolean;
 *   EG_ELIMIT     len over EG_WSMAN_MAX_RESPONSE_BYTES, a tag with more than
 *                 EG_WSMAN_MAX_ATTRIBUTES attributes, nesting over EG_WSMAN_MAX_DEPTH, more than
 *                 EG_WSMAN_MAX_NODES nodes or EG_WSMAN_MAX_STREAMS streams, faults nested over
 *                 EG_WSMAN_MAX_FAULT_DEPTH, a number out of range;
 *   EG_EINVAL     xml NULL, op unknown;
 *   EG_ENOMEM. */
int eg_wsman_parse_response(enum eg_wsman_op op, const char *expect_message_id, const char *xml,
                            size_t len, struct eg_wsman_response **ret,
                            struct eg_wsman_fault **ret_fault) EG_MUST_CHECK;

/* Name of an op ("create", "receive", ...), for messages. Never NULL. */
const char *eg_wsman_op_name(enum eg_wsman_op op);

#endif
