/* psrp_objects.h - the bodies of MS-PSRP messages (2.2.2.x, with the object types of 2.2.3.x):
 * builders that produce a message's CLIXML data and parsers that read a decoded body, for both
 * sides of a runspace pool.
 *
 *   client (exchange bridge)                        server (mock Exchange, tests)
 *   build SESSION_CAPABILITY, INIT_RUNSPACEPOOL,    parse SESSION_CAPABILITY, INIT_RUNSPACEPOOL,
 *         CREATE_PIPELINE, SET_MAX/MIN_RUNSPACES,         CREATE_PIPELINE (into the same command
 *         GET_AVAILABLE_RUNSPACES,                        model the client builds from)
 *         END_OF_PIPELINE_INPUT                   build SESSION_CAPABILITY,
 * APPLICATION_PRIVATE_DATA, parse SESSION_CAPABILITY, RUNSPACEPOOL_STATE, RUNSPACEPOOL_STATE,
 * PIPELINE_STATE, PIPELINE_STATE, ERROR_RECORD, WARNING/          ERROR_RECORD,
 * WARNING/VERBOSE/DEBUG_RECORD, VERBOSE/DEBUG/INFORMATION_RECORD, RUNSPACE_AVAILABILITY
 *         APPLICATION_PRIVATE_DATA,
 *         RUNSPACE_AVAILABILITY, *_HOST_CALL
 *
 * Builders return the message data as text (eg_clixml_encode of a value built here; no BOM: the
 * message layer adds one for server -> client data, see psrp_message.h). Parsers take the value
 * that eg_clixml_decode made of the data. Wire shapes: shared/docs/psrp-wire.md sections 9-12 and
 * MS-PSRP; where pwsh and the recordings differ the choice is documented next to the function and
 * in docs/internals/psrp.md ("Message bodies").
 *
 * NEVER SCRIPT TEXT. The client side cannot express a script: a command is a cmdlet name checked
 * by eg_ps_cmdlet_name_valid() (Verb-Noun of ASCII letters and digits), IsScript is always false,
 * and parameters travel as N/V objects whose values are CLIXML values, never source text. The
 * server-side parser reports whatever arrived (including IsScript = true and script text as the
 * name) so that a server can refuse it, as Exchange does with ScriptsNotAllowed.
 *
 * Errors: parsers return EG_EPROTO for a well-formed value of the wrong shape (missing mandatory
 * member, wrong kind), EG_ELIMIT over the EG_PSRP_MAX_* limits, EG_ENOMEM. Builders return
 * EG_EINVAL for arguments they cannot express, plus what eg_clixml_encode returns. Library code:
 * nothing here logs. Not thread-safe per object (values are reference counted, see clixml.h).
 */
#ifndef EG_PSRP_OBJECTS_H
#define EG_PSRP_OBJECTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/clixml.h"

/* ---- states and enums (MS-PSRP 2.2.3.x) ---- */

/* RunspacePoolState (RUNSPACEPOOL_STATE "RunspaceState"). 0-5 are the same in MS-PSRP 2.2.3.4
 * and .NET; above 5 the two lists differ (MS-PSRP: 6 NegotiationSent, 7 NegotiationSucceeded,
 * 8 Connecting, 9 Disconnected), so parsers report the number as it arrived. */
enum eg_ps_pool_state {
    EG_PS_POOL_BEFORE_OPEN = 0,
    EG_PS_POOL_OPENING = 1,
    EG_PS_POOL_OPENED = 2,
    EG_PS_POOL_CLOSED = 3,
    EG_PS_POOL_CLOSING = 4,
    EG_PS_POOL_BROKEN = 5,
};

/* PSInvocationState (PIPELINE_STATE "PipelineState", MS-PSRP 2.2.3.5). */
enum eg_ps_pipeline_state {
    EG_PS_PIPELINE_NOT_STARTED = 0,
    EG_PS_PIPELINE_RUNNING = 1,
    EG_PS_PIPELINE_STOPPING = 2,
    EG_PS_PIPELINE_STOPPED = 3,
    EG_PS_PIPELINE_COMPLETED = 4,
    EG_PS_PIPELINE_FAILED = 5,
    EG_PS_PIPELINE_DISCONNECTED = 6,
};

/* True for the terminal pipeline states: Stopped, Completed, Failed. */
bool eg_ps_pipeline_state_terminal(int32_t state);

/* PSThreadOptions (MS-PSRP 2.2.3.6). */
enum eg_ps_thread_options {
    EG_PS_THREAD_DEFAULT = 0,
    EG_PS_THREAD_USE_NEW_THREAD = 1,
    EG_PS_THREAD_REUSE_THREAD = 2,
    EG_PS_THREAD_USE_CURRENT_THREAD = 3,
};

/* ApartmentState (MS-PSRP 2.2.3.7, .NET System.Threading.ApartmentState). */
enum eg_ps_apartment_state {
    EG_PS_APARTMENT_STA = 0,
    EG_PS_APARTMENT_MTA = 1,
    EG_PS_APARTMENT_UNKNOWN = 2,
};

/* RemoteStreamOptions flags (MS-PSRP 2.2.3.8). */
#define EG_PS_STREAM_ADD_INVOCATION_INFO_TO_ERROR   0x01
#define EG_PS_STREAM_ADD_INVOCATION_INFO_TO_WARNING 0x02
#define EG_PS_STREAM_ADD_INVOCATION_INFO_TO_DEBUG   0x04
#define EG_PS_STREAM_ADD_INVOCATION_INFO_TO_VERBOSE 0x08
#define EG_PS_STREAM_ADD_INVOCATION_INFO            0x0F

/* ErrorCategory (MS-PSRP 2.2.3.9). */
enum eg_ps_error_category {
    EG_PS_ERR_NOT_SPECIFIED = 0,
    EG_PS_ERR_OPEN_ERROR = 1,
    EG_PS_ERR_CLOSE_ERROR = 2,
    EG_PS_ERR_DEVICE_ERROR = 3,
    EG_PS_ERR_DEADLOCK_DETECTED = 4,
    EG_PS_ERR_INVALID_ARGUMENT = 5,
    EG_PS_ERR_INVALID_DATA = 6,
    EG_PS_ERR_INVALID_OPERATION = 7,
    EG_PS_ERR_INVALID_RESULT = 8,
    EG_PS_ERR_INVALID_TYPE = 9,
    EG_PS_ERR_METADATA_ERROR = 10,
    EG_PS_ERR_NOT_IMPLEMENTED = 11,
    EG_PS_ERR_NOT_INSTALLED = 12,
    EG_PS_ERR_OBJECT_NOT_FOUND = 13,
    EG_PS_ERR_OPERATION_STOPPED = 14,
    EG_PS_ERR_OPERATION_TIMEOUT = 15,
    EG_PS_ERR_SYNTAX_ERROR = 16,
    EG_PS_ERR_PARSER_ERROR = 17,
    EG_PS_ERR_PERMISSION_DENIED = 18,
    EG_PS_ERR_RESOURCE_BUSY = 19,
    EG_PS_ERR_RESOURCE_EXISTS = 20,
    EG_PS_ERR_RESOURCE_UNAVAILABLE = 21,
    EG_PS_ERR_READ_ERROR = 22,
    EG_PS_ERR_WRITE_ERROR = 23,
    EG_PS_ERR_FROM_STDERR = 24,
    EG_PS_ERR_SECURITY_ERROR = 25,
    EG_PS_ERR_PROTOCOL_ERROR = 26,
    EG_PS_ERR_CONNECTION_ERROR = 27,
    EG_PS_ERR_AUTHENTICATION_ERROR = 28,
    EG_PS_ERR_LIMITS_EXCEEDED = 29,
    EG_PS_ERR_QUOTA_EXCEEDED = 30,
    EG_PS_ERR_NOT_ENABLED = 31,
};

/* The .NET name of an ErrorCategory ("ObjectNotFound"), or NULL for a number outside 0-31. */
const char *eg_ps_error_category_name(int32_t category);
/* The number of a category name (exact .NET spelling, ASCII case-insensitive), or -1. */
int32_t eg_ps_error_category_from_name(const char *name);

/* ---- small shared pieces ---- */

/* Serialize v as message data (eg_clixml_encode) and drop the reference passed in, also on
 * failure; a NULL v (a failed constructor) gives EG_ENOMEM. So a PIPELINE_OUTPUT or
 * PIPELINE_INPUT body is simply eg_psrp_body_encode(eg_ps_new_string("hi"), &data, &len).
 * *ret (eg_free) and *ret_len (may be NULL) as eg_clixml_encode. */
int eg_psrp_body_encode(struct eg_ps_value *v, char **ret, size_t *ret_len) EG_MUST_CHECK;

/* Compare version v (major, minor, build, revision; -1 = absent, read as 0) with major.minor:
 * negative, 0 or positive like strcmp. */
int eg_ps_version_cmp(const int32_t v[4], int32_t major, int32_t minor);

/* ---- SESSION_CAPABILITY (both directions, MS-PSRP 2.2.2.1) ---- */

/* Versions as in eg_ps_get_version: major, minor, build, revision, -1 when absent. */
struct eg_ps_capability {
    int32_t protocol_version[4];      /* "protocolversion" */
    int32_t ps_version[4];            /* "PSVersion" */
    int32_t serialization_version[4]; /* "SerializationVersion" */
};

/* What this implementation announces (and assumes of a peer whose capability is unknown):
 * protocolversion 2.3, PSVersion 2.0, SerializationVersion 1.1.0.1. */
extern const struct eg_ps_capability eg_ps_capability_default;

/* Body <Obj><MS><Version N="protocolversion">2.3</Version><Version N="PSVersion">2.0</Version>
 * <Version N="SerializationVersion">1.1.0.1</Version></MS></Obj> from cap (NULL: the default).
 * No TimeZone is sent (it is optional). EG_EINVAL for a negative major/minor, or a revision
 * without a build. */
int eg_psrp_build_session_capability(const struct eg_ps_capability *cap, char **ret,
                                     size_t *ret_len) EG_MUST_CHECK;
/* The three versions are mandatory (Version elements); TimeZone and other members are ignored.
 * *ret written only on success. */
int eg_psrp_parse_session_capability(const struct eg_ps_value *v,
                                     struct eg_ps_capability *ret) EG_MUST_CHECK;

/* ---- INIT_RUNSPACEPOOL (C->S, MS-PSRP 2.2.2.2) ---- */

struct eg_ps_pool_init {
    int32_t min_runspaces, max_runspaces; /* 1 <= min <= max */
    int32_t thread_options;               /* enum eg_ps_thread_options */
    int32_t apartment_state;              /* enum eg_ps_apartment_state */
    bool host_null; /* parse: HostInfo absent or _isHostNull true. Builders always send a null
                       host (the server then never makes host calls); the field is ignored. */
};

/* Body with MinRunspaces, MaxRunspaces, PSThreadOptions and ApartmentState as enum objects
 * (TN System.Management.Automation.Runspaces.PSThreadOptions / System.Threading.ApartmentState),
 * HostInfo for a null host (_isHostNull, _isHostUINull, _isHostRawUINull, _useRunspaceHost all
 * true) and ApplicationArguments Nil. init NULL: 1/1, Default, Unknown. EG_EINVAL for counts
 * out of order or enum values out of range. */
int eg_psrp_build_init_runspacepool(const struct eg_ps_pool_init *init, char **ret,
                                    size_t *ret_len) EG_MUST_CHECK;
/* Min/MaxRunspaces are mandatory I32s with 1 <= min <= max (else EG_EPROTO); PSThreadOptions and
 * ApartmentState are read as enums (I32 base) and default to Default/Unknown when absent;
 * ApplicationArguments is ignored. Accepts both the pypsrp and the Windows PowerShell shapes. */
int eg_psrp_parse_init_runspacepool(const struct eg_ps_value *v,
                                    struct eg_ps_pool_init *ret) EG_MUST_CHECK;

/* ---- SET_MAX_RUNSPACES / SET_MIN_RUNSPACES / GET_AVAILABLE_RUNSPACES (C->S, 2.2.2.3-2.2.2.5,
 * 2.2.2.11) and their answer RUNSPACE_AVAILABILITY (S->C, 2.2.2.6) ---- */

/* <Obj><MS><I32 N="MaxRunspaces">n</I32><I64 N="ci">call_id</I64></MS></Obj> (n >= 1). */
int eg_psrp_build_set_max_runspaces(int32_t max_runspaces, int64_t call_id, char **ret,
                                    size_t *ret_len) EG_MUST_CHECK;
/* Same with MinRunspaces. */
int eg_psrp_build_set_min_runspaces(int32_t min_runspaces, int64_t call_id, char **ret,
                                    size_t *ret_len) EG_MUST_CHECK;
/* <Obj><MS><I64 N="ci">call_id</I64></MS></Obj>. */
int eg_psrp_build_get_available_runspaces(int64_t call_id, char **ret,
                                          size_t *ret_len) EG_MUST_CHECK;

struct eg_ps_availability {
    int64_t call_id; /* "ci" of the request answered */
    bool is_count;   /* false: answer to SET_MAX/MIN (set_ok); true: to GET_AVAILABLE (available) */
    bool set_ok;     /* SetMinMaxRunspacesResponse as B */
    int64_t available; /* SetMinMaxRunspacesResponse as an integer */
};
/* SetMinMaxRunspacesResponse (B, or any integer kind) and ci (integer) are mandatory. */
int eg_psrp_parse_runspace_availability(const struct eg_ps_value *v,
                                        struct eg_ps_availability *ret) EG_MUST_CHECK;
/* The server's answer: B when !a->is_count, I64 otherwise. */
int eg_psrp_build_runspace_availability(const struct eg_ps_availability *a, char **ret,
                                        size_t *ret_len) EG_MUST_CHECK;

/* ---- APPLICATION_PRIVATE_DATA (S->C, 2.2.2.13) ---- */

/* On success *ret is a new reference to the "ApplicationPrivateData" member (a
 * PSPrimitiveDictionary Obj, or Nil); free with eg_ps_value_free. The client keeps or ignores it.
 * EG_EPROTO when the member is missing. */
int eg_psrp_parse_application_private_data(const struct eg_ps_value *v,
                                           struct eg_ps_value **ret) EG_MUST_CHECK;
/* A minimal body: ApplicationPrivateData = PSPrimitiveDictionary {PSVersionTable =
 * PSPrimitiveDictionary {PSVersion 5.1.14393.0, PSEdition Desktop, WSManStackVersion 3.0,
 * PSRemotingProtocolVersion 2.3, SerializationVersion 1.1.0.1}}. */
int eg_psrp_build_application_private_data(char **ret, size_t *ret_len) EG_MUST_CHECK;

/* ---- RUNSPACEPOOL_HOST_CALL / PIPELINE_HOST_CALL (S->C, 2.2.2.15 / 2.2.2.27) ----
 * We always announce a null host, so a well-behaved server never sends these; a client that
 * receives one reports it (and fails the operation) instead of answering with UI. */

struct eg_ps_host_call {
    int64_t call_id;         /* "ci" */
    int32_t method_id;       /* "mi" (RemoteHostMethodId, MS-PSRP 2.2.3.17), its I32 */
    const char *method_name; /* mi's ToString ("WriteLine2", "PromptForCredential1"...), borrowed
                                from v (valid while v lives); NULL when absent */
    size_t n_params;         /* items of "mp" (0 when absent or Nil) */
};
/* ci and mi are mandatory. */
int eg_psrp_parse_host_call(const struct eg_ps_value *v, struct eg_ps_host_call *ret) EG_MUST_CHECK;

/* ---- the command model (client builds it, server parser fills it) ---- */

/* The client-side naming rules, checked by the builders (the server parser does not apply them):
 *  - cmdlet name: Verb-Noun, i.e. one or more ASCII letters or digits, exactly one '-', one or
 *    more ASCII letters or digits ("Set-CASMailbox", "Get-MobileDeviceStatistics"), at most
 *    EG_PSRP_MAX_CMDLET_NAME bytes. No module qualifier, path, spaces, '$', ';', quotes,
 *    application names ("cmd.exe") or anything else a script could hide in.
 *  - parameter name: an ASCII letter followed by ASCII letters, digits or '_', without the
 *    leading dash, at most EG_PSRP_MAX_PARAM_NAME bytes. */
bool eg_ps_cmdlet_name_valid(const char *name);
bool eg_ps_param_name_valid(const char *name);

enum eg_ps_param_kind {
    EG_PS_PARAM_NAMED,      /* -Name value: name and value */
    EG_PS_PARAM_SWITCH,     /* -Name: name, no value (client side only, see the pipeline's
                               switches_as_nil; the parser reports a switch as NAMED with the
                               value that arrived, see eg_ps_param_switch_present) */
    EG_PS_PARAM_POSITIONAL, /* value: no name (N is Nil on the wire) */
};

struct eg_ps_param {
    enum eg_ps_param_kind kind;
    char *name;                /* NULL for POSITIONAL; as sent, without a dash (a parsed name is
                                  kept as it arrived, dash or colon included) */
    struct eg_ps_value *value; /* one owned reference; NULL only for SWITCH */
};

struct eg_ps_command {
    char *name;                 /* Cmd: the cmdlet name; parsed: as received (maybe script text) */
    bool is_script;             /* IsScript: false for every command the client builds */
    bool end_of_statement;      /* the last command of a statement (';' after it) */
    struct eg_ps_param *params; /* in order */
    size_t n_params, cap_params;
};

/* New command for a cmdlet. Returns 0, EG_EINVAL (name fails eg_ps_cmdlet_name_valid),
 * EG_ENOMEM. *ret: free with eg_ps_command_free. */
int eg_ps_command_new(const char *cmdlet, struct eg_ps_command **ret) EG_MUST_CHECK;
/* Append -name value. Takes over the reference to value, also on failure (a NULL value, i.e. a
 * failed constructor, is EG_ENOMEM), so calls nest: eg_ps_command_add_param(c, "Identity",
 * eg_ps_new_string(mbx)). Returns 0, EG_EINVAL (bad name, NULL command), EG_ECONFLICT (a
 * parameter or switch of that name, ASCII case-insensitive, is already there), EG_ELIMIT
 * (EG_PSRP_MAX_PARAMS), EG_ENOMEM. A Nil value means $null. */
int eg_ps_command_add_param(struct eg_ps_command *c, const char *name,
                            struct eg_ps_value *value) EG_MUST_CHECK;
/* Append the switch -name. Same errors. */
int eg_ps_command_add_switch(struct eg_ps_command *c, const char *name) EG_MUST_CHECK;
/* Append a positional argument (same ownership rule as add_param). EG_EINVAL (NULL command),
 * EG_ELIMIT, EG_ENOMEM. */
int eg_ps_command_add_positional(struct eg_ps_command *c, struct eg_ps_value *value) EG_MUST_CHECK;
/* The first NAMED or SWITCH parameter called name (ASCII case-insensitive; a parsed name's
 * leading '-' and trailing ':' are ignored), or NULL. Borrowed. */
const struct eg_ps_param *eg_ps_command_find_param(const struct eg_ps_command *c, const char *name);
/* True when p would make a [switch] parameter present: a SWITCH, or a NAMED value that is B true
 * or Nil (PowerShell binds -Name:$null to a switch as present, which pypsrp relies on). */
bool eg_ps_param_switch_present(const struct eg_ps_param *p);
/* Accepts NULL. */
void eg_ps_command_free(struct eg_ps_command *c);

/* The parameter value of @{Add=...; Remove=...} (multi-valued property edits): a Hashtable (TN
 * System.Collections.Hashtable, System.Object; DCT) whose Add and Remove entries are string
 * arrays (TN System.Object[], System.Array, System.Object; LST of S), arrays even for one item.
 * A side with no items is left out; both empty gives an empty hashtable. An array may be NULL
 * only with a count of 0. NULL on ENOMEM (or a NULL array with a count). */
struct eg_ps_value *eg_ps_new_add_remove(const char *const *add, size_t n_add,
                                         const char *const *remove, size_t n_remove);

/* A pipeline: commands in order, each piped into the next unless it ends a statement. */
struct eg_ps_pipeline {
    struct eg_ps_command **cmds;
    size_t n_cmds, cap_cmds;
    bool is_nested;                        /* IsNested (default false) */
    bool add_to_history;                   /* AddToHistory (default false) */
    bool redirect_shell_error_output_pipe; /* RedirectShellErrorOutputPipe (default true, .NET) */
    bool no_input;           /* NoInput (default true); false when PIPELINE_INPUT will follow */
    int32_t apartment_state; /* ApartmentState (default EG_PS_APARTMENT_UNKNOWN) */
    int32_t remote_stream_options; /* RemoteStreamOptions flags (default 0, .NET's default) */
    bool switches_as_nil;          /* build: send a switch as <Nil N="V"/> (pypsrp) instead of
                                      <B N="V">true</B> (.NET AddParameter(name)); default false */
    bool host_null; /* parse: HostInfo absent or _isHostNull true; build: always null */
};

/* New empty pipeline with the defaults above. Returns 0 or EG_ENOMEM. */
int eg_ps_pipeline_new(struct eg_ps_pipeline **ret) EG_MUST_CHECK;
/* Append a command (piped to the previous one unless that ended a statement). Takes over cmd,
 * also on failure (freed). Returns 0, EG_EINVAL (NULL), EG_ELIMIT (EG_PSRP_MAX_COMMANDS),
 * EG_ENOMEM. */
int eg_ps_pipeline_add(struct eg_ps_pipeline *p, struct eg_ps_command *cmd) EG_MUST_CHECK;
/* End the current statement (the next command starts a new one, as after ';'). EG_ESTATE when
 * there is no command yet or the statement is already ended. */
int eg_ps_pipeline_end_statement(struct eg_ps_pipeline *p) EG_MUST_CHECK;
/* Number of statements (0 for an empty pipeline). */
size_t eg_ps_pipeline_statements(const struct eg_ps_pipeline *p);
/* Accepts NULL; frees the commands. */
void eg_ps_pipeline_free(struct eg_ps_pipeline *p);

/* ---- CREATE_PIPELINE (C->S, MS-PSRP 2.2.2.10, 2.2.3.11-12) ---- */

/* Body of CREATE_PIPELINE for p, as pwsh writes it: NoInput, ApartmentState, RemoteStreamOptions,
 * AddToHistory, HostInfo (null host), PowerShell {[ExtraCmds,] Cmds, IsNested, History Nil,
 * RedirectShellErrorOutputPipe}, IsNested. Each command: Cmd, IsScript false, UseLocalScope Nil,
 * MergeMyResult/MergeToResult/MergePreviousResults None, and when peer's protocolversion >= 2.2
 * MergeError/MergeWarning/MergeVerbose/MergeDebug None (>= 2.3: MergeInformation None), all as
 * PipelineResultTypes enum objects, then Args: a List of {N, V} objects (positional: N Nil).
 * Several statements: Cmds holds the first, ExtraCmds every statement (the first included).
 * peer: the server's SESSION_CAPABILITY (NULL: eg_ps_capability_default).
 * Returns 0, EG_EINVAL (NULL, no command, a command that is a script or fails the naming rules,
 * enum values out of range), EG_EUNSUPPORTED (several statements for a peer below 2.2),
 * EG_ELIMIT, EG_ENOMEM. */
int eg_psrp_build_create_pipeline(const struct eg_ps_pipeline *p,
                                  const struct eg_ps_capability *peer, char **ret,
                                  size_t *ret_len) EG_MUST_CHECK;
/* Server side: the pipeline that v describes. Statements come from ExtraCmds when it is a
 * non-empty list, else from Cmds. Every command keeps its name and IsScript as received (check
 * is_script to refuse scripts); parameters: N Nil -> POSITIONAL, N a string -> NAMED with the
 * value (a reference into v). host_null, flags and enums are filled from the body.
 * Returns 0, EG_EPROTO (no PowerShell object, no commands, a command without Cmd/IsScript/Args,
 * a parameter without N or V, a name with a NUL byte), EG_ELIMIT (EG_PSRP_MAX_COMMANDS /
 * EG_PSRP_MAX_PARAMS), EG_ENOMEM. *ret: eg_ps_pipeline_free. */
int eg_psrp_parse_create_pipeline(const struct eg_ps_value *v,
                                  struct eg_ps_pipeline **ret) EG_MUST_CHECK;

/* END_OF_PIPELINE_INPUT (C->S, 2.2.2.18) has no data: *ret is a new empty string (eg_free),
 * *ret_len 0. */
int eg_psrp_build_end_of_pipeline_input(char **ret, size_t *ret_len) EG_MUST_CHECK;

/* ---- error records (ERROR_RECORD 2.2.2.20, ExceptionAsErrorRecord of 2.2.2.9 / 2.2.2.21,
 * ErrorRecord 2.2.3.15) ---- */

/* Every string is owned (eg_free'd by eg_ps_error_record_free; assign eg_strdup'ed copies) and
 * NULL when absent on the wire, except message, which a parser always sets. */
struct eg_ps_error_record {
    char *exception_type;   /* most derived type name of Exception, without "Deserialized." */
    char **exception_types; /* Exception's whole type list, most derived first, same form */
    size_t n_exception_types;
    char *message;     /* Exception's Message property, else the record's ToString, else "" */
    char *fqeid;       /* FullyQualifiedErrorId */
    int32_t category;  /* ErrorCategory_Category (enum eg_ps_error_category) */
    char *activity;    /* ErrorCategory_Activity */
    char *reason;      /* ErrorCategory_Reason */
    char *target_name; /* ErrorCategory_TargetName */
    char *target_type; /* ErrorCategory_TargetType */
    char *
        category_message; /* ErrorCategory_Message ("ObjectNotFound: (x:String) [Get-Item], ...") */
    char *details_message;   /* ErrorDetails_Message */
    bool write_error_stream; /* writeErrorStream (false when absent) */
};

/* New record with copies of the three mandatory strings (none may be NULL: EG_EINVAL) and the
 * category; everything else NULL/false. Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_ps_error_record_new(const char *exception_type, const char *message, const char *fqeid,
                           int32_t category, struct eg_ps_error_record **ret) EG_MUST_CHECK;
/* Accepts NULL. */
void eg_ps_error_record_free(struct eg_ps_error_record *er);

/* Parse an ErrorRecord object (the body of ERROR_RECORD, or an ExceptionAsErrorRecord). The
 * ErrorCategory_* members are read from the MS members, falling back to a CategoryInfo object
 * (Category as an enum or its name) when a server sent the adapted form. Returns 0, EG_EPROTO
 * (not an Obj, or neither Exception nor FullyQualifiedErrorId present), EG_ENOMEM.
 * *ret: eg_ps_error_record_free. */
int eg_psrp_parse_error_record(const struct eg_ps_value *v,
                               struct eg_ps_error_record **ret) EG_MUST_CHECK;
/* ERROR_RECORD body in the recorded pwsh shape: TN System.Management.Automation.ErrorRecord,
 * System.Object; ToString = details_message or message; MS writeErrorStream, Exception (TN =
 * exception_types, or {exception_type, System.Exception, System.Object} when there are none;
 * ToString "Type: message"; Props Message, InnerException Nil), TargetObject (target_name or
 * Nil), FullyQualifiedErrorId, InvocationInfo Nil, ErrorCategory_Category/_Activity/_Reason/
 * _TargetName/_TargetType/_Message, ErrorDetails_Message/_RecommendedAction when
 * details_message is set, SerializeExtendedInfo false. Missing optional fields are derived as
 * PowerShell does: reason = the exception's short type name, target_type "String" when there
 * is a target name, category_message "Category: (TargetName:TargetType) [Activity], Reason"
 * with a target name over 40 characters shortened to 15 + "..." + 15 (Windows PowerShell).
 * Returns 0, EG_EINVAL (NULL, no message, no fqeid, no exception type), EG_ENOMEM. */
int eg_psrp_build_error_record(const struct eg_ps_error_record *er, char **ret,
                               size_t *ret_len) EG_MUST_CHECK;

/* ---- RUNSPACEPOOL_STATE (S->C, 2.2.2.9) and PIPELINE_STATE (S->C, 2.2.2.21) ---- */

/* *ret_state = RunspaceState (mandatory I32). ret_error may be NULL; otherwise it gets NULL or
 * the parsed ExceptionAsErrorRecord (eg_ps_error_record_free). Returns 0, EG_EPROTO (no state,
 * or an ExceptionAsErrorRecord that is not an error record), EG_ENOMEM. */
int eg_psrp_parse_runspacepool_state(const struct eg_ps_value *v, int32_t *ret_state,
                                     struct eg_ps_error_record **ret_error) EG_MUST_CHECK;
/* Same for PipelineState. */
int eg_psrp_parse_pipeline_state(const struct eg_ps_value *v, int32_t *ret_state,
                                 struct eg_ps_error_record **ret_error) EG_MUST_CHECK;
/* <Obj><MS><I32 N="RunspaceState">state</I32>[ExceptionAsErrorRecord]</MS></Obj>; err may be
 * NULL. The embedded record has the ERROR_RECORD shape without writeErrorStream (as recorded). */
int eg_psrp_build_runspacepool_state(int32_t state, const struct eg_ps_error_record *err,
                                     char **ret, size_t *ret_len) EG_MUST_CHECK;
/* Same with PipelineState (e.g. 5 Failed with FQEID ScriptsNotAllowed, category 17). */
int eg_psrp_build_pipeline_state(int32_t state, const struct eg_ps_error_record *err, char **ret,
                                 size_t *ret_len) EG_MUST_CHECK;

/* ---- WARNING / VERBOSE / DEBUG_RECORD (2.2.2.22-24, InformationalRecord 2.2.3.16) and
 * INFORMATION_RECORD (2.2.2.26) ---- */

enum eg_ps_info_kind { EG_PS_INFO_WARNING, EG_PS_INFO_VERBOSE, EG_PS_INFO_DEBUG };

/* The text of an informational record: InformationalRecord_Message; else (INFORMATION_RECORD)
 * MessageData as a string, or its Message member, or its ToString; else a Message member; else
 * the record's ToString. A bare string body is its own text. On success *ret is a new string
 * (eg_free). Returns 0, EG_EPROTO (no text anywhere), EG_ENOMEM. */
int eg_psrp_parse_informational(const struct eg_ps_value *v, char **ret) EG_MUST_CHECK;
/* <Obj><TN>{Warning|Verbose|Debug}Record, InformationalRecord, Object</TN><ToString>message
 * </ToString><MS><S N="InformationalRecord_Message">message</S>
 * <B N="InformationalRecord_SerializeInvocationInfo">false</B></MS></Obj>.
 * EG_EINVAL for a NULL message or an unknown kind. */
int eg_psrp_build_informational(enum eg_ps_info_kind kind, const char *message, char **ret,
                                size_t *ret_len) EG_MUST_CHECK;

#endif
