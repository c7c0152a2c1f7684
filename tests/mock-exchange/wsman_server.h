/* wsman_server.h - the server side of WS-Management for the mock Exchange: parsing the request
 * envelopes a PowerShell remoting client sends (Create, Command, Send, Receive, Signal, Delete,
 * Get, ...) and building the responses and SOAP faults a Windows server returns.
 *
 * The mirror image of transport/wsman.h (which builds requests and parses responses). Shapes
 * follow the recorded Windows traffic in shared/vectors/ byte for byte: the namespace prefixes
 * and declarations of each response kind, the header order (Action, MessageID, ActivityId, To,
 * RelatesTo), rsp:Shell, rsp:ReceiveResponse with one rsp:Stream per fragment run, the fault
 * layout with the nested f:ProviderFault of InvalidSelectors.
 *
 * Parsing: libxml2 tree API, no network, no entity substitution, no DTD (refused), bounded input,
 * depth, node and attribute counts (EG_MOCK_WS_* in common/limits.h); every lookup matches
 * namespace URI and local name, never a prefix. Base64 payloads (creationXml, Arguments, Stream)
 * are decoded (strict base64, white space allowed). Texts are copied into eg_malloc'd memory.
 *
 * Thread-compatible, no shared state (call xmlInitParser() once before threads). Nothing here
 * logs.
 */
#ifndef MX_WSMAN_SERVER_H
#define MX_WSMAN_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/limits.h"
#include "transport/wsman.h"

/* ---- requests ---- */

/* The operation of a request, from wsa:Action. */
enum mx_ws_action {
    MX_WS_OTHER = 0, /* an action URI not listed below (action_uri says which) */
    MX_WS_CREATE,    /* transfer/Create */
    MX_WS_DELETE,    /* transfer/Delete */
    MX_WS_GET,       /* transfer/Get */
    MX_WS_PUT,       /* transfer/Put */
    MX_WS_COMMAND,   /* shell/Command */
    MX_WS_SEND,      /* shell/Send */
    MX_WS_RECEIVE,   /* shell/Receive */
    MX_WS_SIGNAL,    /* shell/Signal */
    MX_WS_CONNECT,   /* shell/Connect */
    MX_WS_DISCONNECT,
    MX_WS_RECONNECT,
    MX_WS_ENUMERATE, /* enumeration/Enumerate */
};

/* Name of an action ("Create", "Receive", ...; "Other"). Never NULL. */
const char *mx_ws_action_name(enum mx_ws_action a);

/* A wsman:Selector or wsman:Option (name and trimmed text). */
struct mx_ws_pair {
    char *name;
    char *value;
    bool must_comply; /* Option/@MustComply="true" */
};

/* One rsp:Stream of a Send, base64-decoded. */
struct mx_ws_in_stream {
    char *name;       /* @Name: "stdin", "pr"; never NULL */
    char *command_id; /* @CommandId; NULL for pool-level data */
    uint8_t *data;    /* decoded bytes (NUL after them); never NULL */
    size_t len;
    bool end; /* @End="true" */
};

/* A parsed request. Strings are eg_malloc'd, trimmed, NULL when absent. */
struct mx_ws_request {
    enum mx_ws_action action;
    char *action_uri;             /* wsa:Action, always set */
    char *message_id;             /* wsa:MessageID as sent (e.g. "uuid:F249...") - always set */
    char *to;                     /* wsa:To */
    char *resource_uri;           /* wsman:ResourceURI */
    char *session_id;             /* wsmv:SessionId */
    char *locale;                 /* wsman:Locale/@xml:lang */
    char *data_locale;            /* wsmv:DataLocale/@xml:lang */
    uint32_t max_envelope_size;   /* wsman:MaxEnvelopeSize; 0 when absent */
    int64_t operation_timeout_ms; /* wsman:OperationTimeout; -1 when absent */
    struct mx_ws_pair *selectors; /* wsman:SelectorSet/wsman:Selector, in order */
    size_t n_selectors;
    struct mx_ws_pair *options; /* wsman:OptionSet/wsman:Option, in order */
    size_t n_options;

    /* CREATE: rsp:Shell */
    bool has_shell;           /* the body holds an rsp:Shell */
    char *shell_id_requested; /* rsp:Shell/@ShellId (client's choice, optional) */
    char *shell_name;         /* rsp:Shell/@Name */
    char *input_streams;      /* rsp:InputStreams */
    char *output_streams;     /* rsp:OutputStreams */
    int64_t idle_timeout_ms;  /* rsp:IdleTimeOut; -1 when absent */
    uint8_t *creation_xml;    /* creationXml (powershell ns), decoded; NULL when absent */
    size_t creation_xml_len;

    /* COMMAND: rsp:CommandLine */
    char *command_id;   /* COMMAND: CommandLine/@CommandId; SIGNAL: Signal/@CommandId;
                           RECEIVE: DesiredStream/@CommandId */
    char *command;      /* rsp:Command text ("" for PSRP) */
    uint8_t *arguments; /* every rsp:Arguments decoded and concatenated; NULL when none */
    size_t arguments_len;

    /* SEND */
    struct mx_ws_in_stream *streams;
    size_t n_streams;

    /* RECEIVE */
    char *desired_stream; /* rsp:DesiredStream text, e.g. "stdout" */

    /* SIGNAL */
    char *signal_code; /* rsp:Code */
};

/* What went wrong in a request, to answer with the matching fault (mx_ws_fault_for_parse). */
enum mx_ws_parse_error {
    MX_WS_PERR_NONE = 0,
    MX_WS_PERR_XML,      /* not well-formed, DTD, not UTF-8, over a limit: "the XML is invalid" */
    MX_WS_PERR_ENVELOPE, /* not a SOAP 1.2 envelope with Header and Body */
    MX_WS_PERR_HEADER,   /* missing Action/MessageID, bad MaxEnvelopeSize */
    MX_WS_PERR_TIMEOUT,  /* bad OperationTimeout (text kept in detail) */
    MX_WS_PERR_BODY,     /* the body does not fit the action (bad base64, missing element) */
};

struct mx_ws_parse_diag {
    enum mx_ws_parse_error kind;
    char detail[128]; /* e.g. the offending timeout text "PT-1S" (from the request; no secret) */
    char message_id[128]; /* the request's wsa:MessageID when it could be read ("" if not), so
                             that the fault can still carry RelatesTo */
};

/* Parse one request body (xml, len bytes). On success *ret is the request (free with
 * mx_ws_request_free). On failure diag (may be NULL) says what to answer.
 * Returns 0, EG_EPARSE (malformed XML, DTD, bad base64, not UTF-8), EG_EPROTO (well-formed but
 * not a usable WS-Man request: no envelope/header/body, no Action or MessageID, bad
 * MaxEnvelopeSize or OperationTimeout, a Create without rsp:Shell, a Signal without a code),
 * EG_ELIMIT (len over EG_MOCK_WS_MAX_REQUEST_BYTES, depth, nodes, attributes, selectors, options
 * or streams over their limits), EG_EINVAL (xml NULL), EG_ENOMEM. */
int mx_ws_parse_request(const char *xml, size_t len, struct mx_ws_request **ret,
                        struct mx_ws_parse_diag *diag) EG_MUST_CHECK;

/* Accepts NULL. */
void mx_ws_request_free(struct mx_ws_request *r);

/* The value of the selector called name (ASCII case-insensitive), or NULL. Borrowed. */
const char *mx_ws_selector(const struct mx_ws_request *r, const char *name);
/* The option called name (ASCII case-insensitive), or NULL. Borrowed. */
const struct mx_ws_pair *mx_ws_option(const struct mx_ws_request *r, const char *name);

/* Parse an xs:duration of the day-time kind ("PT20S", "PT180.000S", "P0DT0H0M20S", "PT1M") into
 * milliseconds (fractions past the millisecond are truncated). Years and months are refused.
 * Returns 0, EG_EPARSE (not a duration, or negative), EG_ELIMIT (over 2^53 ms). */
int mx_ws_parse_duration(const char *s, int64_t *ret_ms) EG_MUST_CHECK;

/* Format ms as "PT<s>.<mmm>S" ("PT900.000S", as Windows writes IdleTimeOut) into out. */
void mx_ws_format_duration(int64_t ms, char *out, size_t size);

/* ---- responses ---- */

/* What every response echoes. Strings are borrowed for the call. */
struct mx_ws_reply {
    const char *relates_to; /* the request's MessageID, echoed in a:RelatesTo; NULL = no
                               RelatesTo (a fault for a request whose MessageID is unknown) */
    const char *machine;    /* f:WSManFault/@Machine of faults; NULL = "127.0.0.1" */
    const char *message_id; /* tests only: this a:MessageID instead of a new random one */
};

/* rsp:Shell as returned by Create (and by Get on the shell resource). */
struct mx_ws_shell_info {
    const char *shell_id;       /* required */
    const char *resource_uri;   /* required */
    const char *address;        /* x:ResourceCreated/a:Address (the request's wsa:To); NULL: "" */
    const char *owner;          /* user name */
    const char *client_ip;      /* peer address */
    long process_id;            /* our pid */
    int64_t idle_timeout_ms;    /* IdleTimeOut */
    const char *input_streams;  /* NULL = "stdin pr" */
    const char *output_streams; /* NULL = "stdout" */
    const char *locale;         /* NULL = "en-US" */
    const char *data_locale;    /* NULL = locale */
    int64_t run_time_ms;        /* ShellRunTime */
    int64_t inactivity_ms;      /* ShellInactivity */
    const char *memory_used;    /* Get only: MemoryUsed ("58MB"); NULL = omitted (Create) */
};

/* Every builder writes a NUL-terminated envelope to *ret (eg_free) and its length to *ret_len
 * (may be NULL), only on success. Texts are XML-escaped; each must be UTF-8 made of XML
 * characters (EG_EINVAL otherwise, as for a missing required string). Returns 0, EG_EINVAL,
 * EG_EIO (no randomness for the MessageID), EG_ENOMEM. */

/* CreateResponse: x:ResourceCreated (Address, ReferenceParameters with ResourceURI and the
 * ShellId selector) + rsp:Shell. */
int mx_ws_build_create_response(const struct mx_ws_reply *r, const struct mx_ws_shell_info *sh,
                                char **ret, size_t *ret_len) EG_MUST_CHECK;

/* GetResponse for the shell resource: rsp:Shell with MemoryUsed and ChildProcesses. */
int mx_ws_build_get_shell_response(const struct mx_ws_reply *r, const struct mx_ws_shell_info *sh,
                                   char **ret, size_t *ret_len) EG_MUST_CHECK;

/* GetResponse for the config resource: cfg:Config with MaxEnvelopeSizekb and MaxTimeoutms. */
int mx_ws_build_get_config_response(const struct mx_ws_reply *r, uint32_t max_envelope_kb,
                                    uint32_t max_timeout_ms, char **ret,
                                    size_t *ret_len) EG_MUST_CHECK;

/* CommandResponse with rsp:CommandId. */
int mx_ws_build_command_response(const struct mx_ws_reply *r, const char *command_id, char **ret,
                                 size_t *ret_len) EG_MUST_CHECK;

/* The responses without content: SendResponse (<rsp:SendResponse/>), SignalResponse
 * (<rsp:SignalResponse/>), DeleteResponse (empty body). Other actions: EG_EINVAL. */
int mx_ws_build_empty_response(const struct mx_ws_reply *r, enum mx_ws_action action, char **ret,
                               size_t *ret_len) EG_MUST_CHECK;

/* One rsp:Stream of a ReceiveResponse: b64 is the base64 of one or more whole fragments. */
struct mx_ws_out_stream {
    const char *name;       /* NULL = "stdout" */
    const char *command_id; /* NULL for pool-level streams */
    const char *b64;        /* required (may be "") */
};

/* rsp:CommandState of a ReceiveResponse. */
struct mx_ws_command_state {
    const char *command_id; /* required */
    const char *state_uri;  /* EG_WSMAN_STATE_DONE ... */
    bool has_exit_code;
    int64_t exit_code;
};

/* ReceiveResponse with the streams in order and an optional command state (NULL = none). */
int mx_ws_build_receive_response(const struct mx_ws_reply *r,
                                 const struct mx_ws_out_stream *streams, size_t n,
                                 const struct mx_ws_command_state *state, char **ret,
                                 size_t *ret_len) EG_MUST_CHECK;

/* Bytes of a ReceiveResponse envelope without streams (with a Done command state for
 * command_id when it is not NULL), and the bytes one rsp:Stream element adds around its base64
 * text: what a server subtracts from MaxEnvelopeSize to size its fragments. Upper bounds. */
size_t mx_ws_receive_overhead(const char *relates_to, const char *command_id);
size_t mx_ws_stream_overhead(const char *command_id);

/* ---- faults ---- */

/* A SOAP fault. Texts are borrowed for the call. */
struct mx_ws_fault {
    bool sender;            /* s:Code s:Sender (true) or s:Receiver (false) */
    const char *subcode;    /* s:Subcode QName with a prefix the fault envelope declares
                               ("w:TimedOut", "a:DestinationUnreachable", "w:InternalError");
                               NULL = no subcode */
    const char *reason;     /* s:Reason/s:Text (required) */
    const char *detail_uri; /* w:FaultDetail; NULL = none */
    uint32_t code;          /* f:WSManFault/@Code */
    const char *message;    /* f:Message; NULL = reason */
    bool provider_fault;    /* wrap the message in f:ProviderFault (Shell provider) holding a
                               second f:WSManFault, as InvalidSelectors is recorded */
};

/* The recorded and documented faults (texts as Windows writes them, trailing spaces included). */
#define MX_WS_CODE_TIMED_OUT          2150858793u /* 0x80338029 */
#define MX_WS_CODE_INVALID_SELECTORS  2150858843u /* 0x8033805B */
#define MX_WS_CODE_RESOURCE_URI       2150858811u /* 0x8033803B: not in the catalog */
#define MX_WS_CODE_INVALID_HEADER     2150858767u /* 0x8033800F: bad SOAP header field */
#define MX_WS_CODE_SCHEMA             2150858817u /* 0x80338041: request does not validate */
#define MX_WS_CODE_ACTION             2150858771u /* 0x80338013: action not supported */
#define MX_WS_CODE_MAX_SHELLS         2150859173u /* 0x803381A5: shells per user */
#define MX_WS_CODE_MAX_OPERATIONS     2150859174u /* 0x803381A6: operations per user */
#define MX_WS_CODE_COMMANDS_PER_SHELL 2150859241u /* 0x803381E9: commands per shell */
#define MX_WS_CODE_INVALID_PARAMETER  2150858810u /* 0x8033803A: e.g. a signal code */
#define MX_WS_CODE_INVALID_XML        2150858819u /* 0x80338043: request is not valid XML */
#define MX_WS_CODE_INVALID_BODY       2150858791u /* 0x80338027: body does not fit the action */

/* w:TimedOut, s:Receiver, 2150858793 (test_psrp_long_running_cmdlet.yml). */
void mx_ws_fault_timed_out(struct mx_ws_fault *f);
/* w:InvalidSelectors, s:Sender, FaultDetail UnexpectedSelectors, 2150858843 nested in a
 * ProviderFault (test_psrp_is_alive_invalid_selectors.yml). */
void mx_ws_fault_invalid_selectors(struct mx_ws_fault *f);
/* The resource URI is not in the catalog (2150858811): text names uri; buf holds the text
 * (at least 512 bytes). */
void mx_ws_fault_resource_uri(struct mx_ws_fault *f, const char *uri, char *buf, size_t size);
/* The fault matching a parse failure (InvalidMessageInformationHeader for header problems,
 * "The XML contains an invalid timeout field in the SOAP header: <t>." for a bad timeout,
 * SchemaValidationError for the body, ...). buf holds the text (at least 256 bytes). */
void mx_ws_fault_for_parse(struct mx_ws_fault *f, const struct mx_ws_parse_diag *d, char *buf,
                           size_t size);

/* A fault envelope (a:Action .../wsman/fault). HTTP status 500 goes with it. */
int mx_ws_build_fault(const struct mx_ws_reply *r, const struct mx_ws_fault *f, char **ret,
                      size_t *ret_len) EG_MUST_CHECK;

#endif
