/* engine.h - the mock Exchange's cmdlet engine: an in-memory org and the cmdlets that act on it.
 *
 * The front ends (WS-Man/PSRP at /PowerShell, REST InvokeCommand) decode a request into a cmdlet
 * name and typed parameters (CLIXML values, exchange/clixml.h) and call mx_invoke(); the engine
 * streams output objects, warnings and non-terminating errors back through callbacks and returns
 * a terminating error when the pipeline fails. Behaviour, texts and types follow
 * ../shared/docs/exchange-semantics.md ("Mock checklist" and the sections it points to).
 * Transport-level faults (HTTP 500/503, dropped connections, lost shells, the shell ceiling,
 * per-shell command limits, REST 429) belong to the front ends; cmdlet-level faults (latency,
 * quota errors naming a delay, micro-delay warnings, RBAC hiding) are applied here.
 *
 * Thread-safe: several pipelines may invoke at once; the org has one lock that is never held
 * while sleeping for injected latency or while calling back.
 *
 * Everything below the first block ("additions") was added by the engine's implementation; the
 * design is described in docs/internals/mock-exchange.md.
 */
#ifndef MX_ENGINE_H
#define MX_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/clixml.h"

enum mx_profile { MX_PROFILE_2010, MX_PROFILE_2013, MX_PROFILE_2016, MX_PROFILE_ONLINE };

/* "2010", "2013", "2016" (also "2019", "se"), "online". 0 or EG_EINVAL. */
int mx_profile_parse(const char *s, enum mx_profile *ret) EG_MUST_CHECK;
const char *mx_profile_name(enum mx_profile p);

/* One parameter as received. name NULL = positional argument. value NULL = a switch given
 * without a value (present, i.e. $true). */
struct mx_param {
    const char *name;
    const struct eg_ps_value *value;
};

/* An error record as Exchange would produce it. */
struct mx_error {
    char exception_type
        [256]; /* e.g. Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException */
    char message[1024];        /* the exception's Message */
    char fqeid[512];           /* FullyQualifiedErrorId, in the profile's shape */
    int category;              /* ErrorCategory_Category (psrp-wire.md §9) */
    char category_reason[128]; /* ErrorCategory_Reason: the exception's short type name */
    char target[256];          /* ErrorCategory_TargetName, may be "" */
    char activity[128];        /* ErrorCategory_Activity: the cmdlet name */
    /* -- additions -- */
    char target_type[64]; /* ErrorCategory_TargetType ("String" for CommandNotFound), may be "" */
    /* Online profile, Exchange task errors only: "Ex<6 hex>|<exception type>|<message>", the text
     * EXO REST puts in error.details[].message (and the V3 module shows); "" otherwise. */
    char details_message[1400];
    /* For the REST front end: the OData error.code ("NotFound", "BadRequest", "Forbidden",
     * "TooManyRequests", "InternalServerError") and the HTTP status that goes with it. Set for
     * every error, whatever the profile. */
    char rest_code[32];
    int http_status;
    /* Throttling (the "user load quota" fault): the error names a delay. A front end may deliver
     * it as a WS-Man fault / REST 429 instead of an error record. */
    bool throttled;
    int64_t retry_after_ms;
    /* The CategoryInfo line, e.g. "NotSpecified: (:) [Get-CASMailbox],
     * ManagementObjectNotFoundException" (ErrorCategory_Message). */
    char category_message[512];
};

/* Output callbacks; each returns 0 to go on or a negative EG_E* to stop the cmdlet (the front
 * end could not deliver: the engine returns that code). */
struct mx_output_ops {
    /* One output object; ownership passes to the callee. */
    int (*object)(void *ctx, struct eg_ps_value *obj);
    int (*warning)(void *ctx, const char *text);
    /* A non-terminating error (ERROR_RECORD; the pipeline can still complete). */
    int (*error)(void *ctx, const struct mx_error *e);
};
/* Additions to the callback contract: the object callback owns the object also when it returns
 * an error. A NULL ops pointer or a NULL member discards that stream. Callbacks run on the
 * invoking thread, without the org lock, so they may call any mx_* function (also mx_invoke).
 * Every object is built for that one callback and shares no node (not even a type-name list)
 * with another object, so the callee may hand it to another thread. The cmdlets, their
 * parameters per profile and the output shapes are listed in docs/internals/mock-exchange.md. */

struct mx_org;

struct mx_org_opts {
    enum mx_profile profile;
    uint64_t seed;    /* deterministic org for the same seed and sizes */
    size_t mailboxes; /* seeded mailboxes (user0001@contoso.example, ...) */
    size_t devices;   /* seeded devices spread over the mailboxes */
    /* -- additions (zero = default) -- */
    /* Put about 10% of the seeded devices on their mailbox's ActiveSyncAllowedDeviceIDs and about
     * 3% on ActiveSyncBlockedDeviceIDs (default: every list empty). */
    bool seed_lists;
    /* AdminDisplayVersion reported by Get-ExchangeServer; NULL = the profile's ("Version 14.3
     * (Build 123.4)", "Version 15.0 (Build 1497.2)", "Version 15.1 (Build 2507.6)"). Copied. */
    const char *admin_display_version;
};

/* Seeding: mailbox i (1-based, at least 4 digits: user0001) has alias/SamAccountName "user0001",
 * Name and DisplayName "User 0001" (Online: Name "user0001"), PrimarySmtpAddress and UPN
 * "user0001@contoso.example", a second proxy address (smtp:user0001@mail.contoso.example,
 * Online smtp:user0001@contoso.onmicrosoft.com). Device j goes to mailbox j (j < mailboxes),
 * then to a seeded-random mailbox; types iPhone/iPad/Android/Outlook/WindowsMail. Two orgs built
 * from the same options are identical (GUIDs, ids, times).
 * Returns 0, EG_EINVAL (NULL, bad profile, devices without mailboxes, over 2^31 objects),
 * EG_ENOMEM. Free with mx_org_free (accepts NULL). */
int mx_org_new(const struct mx_org_opts *o, struct mx_org **ret) EG_MUST_CHECK;
void mx_org_free(struct mx_org *org);

/* Run one cmdlet. Returns 0 when the pipeline completes (errors reported through out->error
 * included), EG_EREMOTE with *term filled when it fails (a terminating error: Failed pipeline
 * with ExceptionAsErrorRecord), or the negative code an output callback returned. */
int mx_invoke(struct mx_org *org, const char *cmdlet, const struct mx_param *params, size_t n,
              const struct mx_output_ops *out, void *ctx, struct mx_error *term) EG_MUST_CHECK;
/* Additions to mx_invoke's contract: EG_EINVAL for NULL org/cmdlet/term or params NULL with n > 0;
 * EG_ENOMEM. Terminating: unknown or RBAC-hidden cmdlet (CommandNotFoundException), every
 * parameter-binding error (NamedParameterNotFound, AmbiguousParameter, ParameterAlreadyBound,
 * PositionalParameterNotFound, MissingMandatoryParameter, null/transformation errors,
 * AmbiguousParameterSet, bad -Filter), the confirmation prompt failure, an injected quota error,
 * and Exchange task errors when -ErrorAction Stop is given or task errors are set terminating
 * (struct mx_behaviour). Exchange task errors (object not found, ambiguous, write scope,
 * duplicate value, ...) are otherwise non-terminating (out->error, return 0). */

/* The script-text refusal of the no-language endpoint (ParseException, ScriptsNotAllowed). */
void mx_error_scripts_not_allowed(struct mx_error *e);

/* ======================= additions: org information ======================= */

enum mx_profile mx_org_profile(const struct mx_org *org);
/* Live (not removed) partnerships and mailboxes. */
size_t mx_org_device_count(struct mx_org *org);
size_t mx_org_mailbox_count(struct mx_org *org);
/* Approximate bytes the org holds (arrays, string arena, indexes, lists), excluding malloc
 * overhead. */
size_t mx_org_memory(struct mx_org *org);

/* ======================= additions: behaviour knobs ======================= */

struct mx_behaviour {
    /* Duplicates in a MultiValuedProperty write (a replace list with the same value twice, or
     * @{Add=<present>}): true (default) = InvalidOperationException 'The value "<v>" is already
     * present in the collection.'; false = silently ignored. @{Remove=<absent>} is always a
     * silent no-op. */
    bool strict_duplicates;
    /* true (default): Set-CASMailbox, rule and org-default changes recompute DeviceAccessState of
     * the affected devices at once; false: only at the device's next simulated sync. */
    bool recompute_on_set;
    /* true: HasActiveSyncDevicePartnership is stored, set when a partnership is created and
     * recomputed only by Get-CASMailbox -RecalculateHasActiveSyncDevicePartnership (so it stays
     * stale after Remove-MobileDevice); false (default): always computed. */
    bool stale_partnership;
    /* Set-CASMailbox that changes nothing warns "The command completed successfully but no
     * settings of '<identity>' have been modified." (default false). */
    bool noop_warning;
    /* Exchange task errors become terminating (Failed pipeline) as with -ErrorAction Stop. */
    bool task_errors_terminating;
    /* A new partnership is in DeviceDiscovery for this long (ms; default 0 = never) unless a
     * personal list entry decides it. */
    int64_t discovery_ms;
    /* Maximum entries of ActiveSyncAllowedDeviceIDs / ActiveSyncBlockedDeviceIDs /
     * AdminMailRecipients (0 = none, the default); over it the write fails with an AD
     * administrative-limit error (ADOperationException). */
    size_t list_cap;
    /* Identity of the caller, written to LastDeviceWipeRequestor (default
     * "contoso.example/Users/Administrator", Online "admin@contoso.onmicrosoft.com"). */
    char requestor[256];
};
void mx_org_get_behaviour(struct mx_org *org, struct mx_behaviour *ret);
void mx_org_set_behaviour(struct mx_org *org, const struct mx_behaviour *b);

/* The org's clock: now_ms > 0 freezes it at that time (ms since the epoch), 0 returns to the real
 * clock. Advance moves a frozen clock forward (no effect on the real clock). */
void mx_org_set_clock(struct mx_org *org, int64_t now_ms);
void mx_org_advance_clock(struct mx_org *org, int64_t ms);

/* ======================= additions: directory ======================= */

/* A mailbox added by a test. alias is required (also SamAccountName); the rest may be NULL:
 * name/display_name default to alias, smtp to alias@contoso.example, upn to smtp. proxies are
 * extra SMTP addresses (without "smtp:"). Every identity of §3 is derived as for seeded
 * mailboxes. All strings copied. */
struct mx_mailbox_spec {
    const char *alias;
    const char *name;
    const char *display_name;
    const char *smtp;
    const char *upn;
    const char *const *proxies;
    size_t n_proxies;
    bool activesync_disabled; /* ActiveSyncEnabled = false */
};
/* Returns 0, EG_EINVAL (no alias, or an identity form already taken: alias, name, smtp, upn),
 * EG_ELIMIT (over 2^31 mailboxes), EG_ENOMEM. */
int mx_org_add_mailbox(struct mx_org *org, const struct mx_mailbox_spec *spec) EG_MUST_CHECK;

/* Mobile mailbox policies known to Set-CASMailbox -ActiveSyncMailboxPolicy ("Default" always
 * exists). Returns 0 (also if it exists), EG_EINVAL, EG_ENOMEM. */
int mx_org_add_policy(struct mx_org *org, const char *name) EG_MUST_CHECK;

/* ======================= additions: device sync ======================= */

/* What a device answers to a remote-wipe directive. */
enum mx_wipe_ack {
    MX_ACK_SUCCESS = 0, /* Provision <RemoteWipe><Status>1: DeviceWipeAckTime set (never Online) */
    MX_ACK_FAILURE,     /* Status 2: no ack, the directive is repeated next time */
    MX_ACK_NEVER        /* the device wipes silently or goes away: no ack */
};

/* The device side of one simulated EAS request. NULL strings: on creation a default (DeviceType
 * "EASDevice", model = type, ClientType "EAS", DeviceActiveSyncVersion "16.1", others ""); on a
 * later sync, keep the stored value. All strings copied (interned). */
struct mx_sync_spec {
    const char *device_type;
    const char *model;
    const char *os;
    const char *os_language;
    const char *user_agent;
    const char *friendly_name;
    const char *mobile_operator;
    const char *eas_version;    /* DeviceActiveSyncVersion, e.g. "14.1", "16.1" */
    const char *client_type;    /* EAS, Outlook, MOWA, UniversalOutlook */
    const char *client_version; /* e.g. "15.1 (Build 2507.6)" */
    bool wipe_unsupported;      /* IsRemoteWipeSupported = false */
    bool fails_policy;          /* fails policy enforcement: Blocked / Policy (§10.3 step 3) */
    enum mx_wipe_ack ack;
};

enum mx_sync_result {
    MX_SYNC_ALLOWED = 0,   /* Allowed: the device syncs */
    MX_SYNC_BLOCKED,       /* Blocked (EAS 129), also a pending wipe on a wipe-unsupported device */
    MX_SYNC_QUARANTINED,   /* Quarantined */
    MX_SYNC_DISCOVERY,     /* DeviceDiscovery */
    MX_SYNC_USER_DISABLED, /* ActiveSyncEnabled false (EAS 126); partnership not touched */
    MX_SYNC_WIPE           /* a wipe directive was delivered (DeviceWipeSentTime set) */
};

struct mx_sync_outcome {
    enum mx_sync_result result;
    bool created;           /* the partnership was created by this request */
    bool account_only;      /* MX_SYNC_WIPE: <AccountOnlyRemoteWipe/> instead of <RemoteWipe/> */
    bool acked;             /* MX_SYNC_WIPE: DeviceWipeAckTime was set */
    char access_state[24];  /* DeviceAccessState after the request */
    char access_reason[32]; /* DeviceAccessStateReason */
    char access_rule[300];  /* DeviceAccessControlRule, "" if none */
    char identity[768];     /* the device's Identity */
    char guid[40];          /* its Guid */
};

/* Simulate one EAS request of device_id for mailbox (any §3 mailbox identity): create the
 * partnership if absent (also after Remove-MobileDevice: a new Guid and FirstSyncTime), refresh
 * its properties from spec (NULL = defaults), evaluate the access state (§10.3), deliver a
 * pending wipe and answer it per spec->ack (§8.1), update sync times.
 * Returns 0 (ret filled), EG_ENOTFOUND (no such mailbox), EG_ECONFLICT (ambiguous identity),
 * EG_EINVAL (NULL or empty device_id, longer than EG_MAX_DEVICE_ID_LEN), EG_ENOMEM. */
int mx_org_device_sync(struct mx_org *org, const char *mailbox, const char *device_id,
                       const struct mx_sync_spec *spec, struct mx_sync_outcome *ret) EG_MUST_CHECK;

/* ======================= additions: state for assertions (JSON) ======================= */

/* Each returns 0 with *ret a new jansson reference, EG_ENOTFOUND, EG_ECONFLICT (ambiguous
 * identity) or EG_ENOMEM.
 * mailbox: {"identity","name","alias","primary_smtp","upn","guid","activesync_enabled",
 *   "allowed":[...],"blocked":[...],"policy","policy_defaulted","debug_logging",
 *   "suppress_read_receipt","has_partnership","devices":[device ids of live partnerships]}
 * device (the live partnership of device_id under mailbox): {"identity","guid","mailbox",
 *   "device_id","device_type","model","os","user_agent","client_type","eas_version",
 *   "access_state","access_reason","access_rule","first_sync_time","last_sync_attempt_time",
 *   "last_success_sync","wipe_supported","wipe":{"status","request_time","sent_time",
 *   "ack_time","requestor","account_only","notify":[...]}} (times RFC 3339 or null;
 *   "mailbox" is the owner's PrimarySmtpAddress)
 * org: {"profile","default_access_level","admin_mail_recipients":[...],"user_mail_insert",
 *   "ota_notification_mail_insert","allow_unsupported_platform","policies":[...],
 *   "rules":[{"name","characteristic","query_string","access_level"}],"mailboxes","devices"} */
int mx_state_mailbox(struct mx_org *org, const char *mailbox, json_t **ret) EG_MUST_CHECK;
int mx_state_device(struct mx_org *org, const char *mailbox, const char *device_id,
                    json_t **ret) EG_MUST_CHECK;
int mx_state_org(struct mx_org *org, json_t **ret) EG_MUST_CHECK;

/* ======================= additions: faults ======================= */

/* Every fault is keyed by cmdlet name (case-insensitive) or NULL for every cmdlet; a fault set
 * for a cmdlet takes precedence over the one for every cmdlet. Calls are counted per key from the
 * moment the fault is set. Returns 0, EG_EINVAL, EG_ELIMIT (more than 64 keys), EG_ENOMEM.
 * (Addition: precedence is per fault kind, and a cmdlet's setting wins also when it is "off":
 * mx_fault_latency(org, "Get-X", 0) exempts Get-X from an every-cmdlet latency; an unknown
 * cmdlet name is a valid key. Faults apply before the cmdlet is looked up, so they also hit
 * unknown and RBAC-hidden cmdlets, like the WinRM quota they model.) */

/* Sleep ms (0 = off) before running the cmdlet, outside the lock. */
int mx_fault_latency(struct mx_org *org, const char *cmdlet, int64_t ms) EG_MUST_CHECK;

/* The §13 rate error as a terminating error (mx_error.throttled, retry_after_ms = delay_ms):
 * "The WS-Management service cannot process the request. The user load quota of <requests>
 * requests per <seconds> seconds has been exceeded. Send future requests at a slower rate or raise
 * the quota for this user. The next request from this user will not be approved for at least
 * <delay_ms> milliseconds." on every every_nth-th call (0 = off) and on the next next_k calls
 * (0 = none). NULL f turns it off. requests/seconds 0 = 30 / 60. (Addition: the error is
 * PSRemotingTransportException, FQEID "JobFailure", category OperationStopped, REST
 * TooManyRequests/429; a micro-delay is not counted on a call that fails with it.) */
struct mx_quota_fault {
    unsigned every_nth;
    unsigned next_k;
    int64_t delay_ms;
    unsigned requests;
    unsigned seconds;
};
int mx_fault_quota(struct mx_org *org, const char *cmdlet,
                   const struct mx_quota_fault *f) EG_MUST_CHECK;

/* On every every_nth-th call (0 = off) sleep delay_ms (outside the lock) and then emit the
 * micro-delay warning naming that delay ("Micro delay applied. Actual delayed: <d> msecs, ..."). */
int mx_fault_micro_delay(struct mx_org *org, const char *cmdlet, unsigned every_nth,
                         int64_t delay_ms) EG_MUST_CHECK;

/* Writes to this mailbox (Set-CASMailbox, Clear-/Remove-MobileDevice of its devices) fail with
 * the §12 write-scope error while on. Returns 0, EG_ENOTFOUND, EG_ECONFLICT, EG_EINVAL. */
int mx_fault_write_scope(struct mx_org *org, const char *mailbox, bool on) EG_MUST_CHECK;

/* Remove every latency, quota, micro-delay and write-scope fault. */
void mx_fault_reset(struct mx_org *org);

/* RBAC profile. A hidden cmdlet does not exist (CommandNotFoundException, also for Get-Command);
 * a hidden parameter gives NamedParameterNotFound (Confirm and WhatIf are entry parameters and can
 * be hidden; common parameters such as ErrorAction cannot). allow_only keeps exactly the listed
 * parameters of the cmdlet (Set-ManagementRoleEntry -Parameters). Names are checked against the
 * cmdlet table: EG_ENOTFOUND for an unknown cmdlet or parameter. */
int mx_rbac_hide_cmdlet(struct mx_org *org, const char *cmdlet) EG_MUST_CHECK;
int mx_rbac_hide_parameter(struct mx_org *org, const char *cmdlet,
                           const char *parameter) EG_MUST_CHECK;
int mx_rbac_allow_only(struct mx_org *org, const char *cmdlet, const char *const *parameters,
                       size_t n) EG_MUST_CHECK;
void mx_rbac_reset(struct mx_org *org);

/* ======================= additions: call recorder ======================= */

/* Every mx_invoke is recorded after it ends, in order of completion:
 *   {"seq":n,"cmdlet":"<name as received>","parameters":{"<name as received>":<value>,...},
 *    "positional":[...] (only when there are positional arguments),
 *    "status":"Completed"|"Failed"|"Stopped","errors":<non-terminating errors>}
 * (additions: each error is {"exception_type","message","fqeid"}; a Failed call also has
 * "error":{"exception_type","message","fqeid"}, its terminating error; "Stopped" = an output
 * callback returned an error; errors dropped by -ErrorAction SilentlyContinue are listed too)
 * Values are rendered with eg_clixml_to_json (exchange/clixml_json.h): a switch without value is
 * true, a string array is an array, @{Add=..;Remove=..} is {"Add":[..],"Remove":[..]} (a scalar
 * Add/Remove value stays a scalar: as received). A repeated parameter name keeps the last value.
 * At most `limit` records are kept (default 100000; the oldest are dropped). */
/* A new array (deep copy) of the records. 0 or EG_ENOMEM. */
int mx_recorder_get(struct mx_org *org, json_t **ret) EG_MUST_CHECK;
size_t mx_recorder_count(struct mx_org *org);
void mx_recorder_reset(struct mx_org *org);
void mx_recorder_set_limit(struct mx_org *org, size_t limit);

/* ======================= additions: JSON control ======================= */

/* One control request as JSON, for a front end's control endpoint:
 *   {"op":"sync","mailbox":..,"device_id":..,"device_type":..,"model":..,"os":..,
 *       "user_agent":..,"eas_version":..,"client_type":..,"wipe_unsupported":b,
 *       "fails_policy":b,"ack":"success"|"failure"|"never"}     -> the outcome as JSON
 *   {"op":"state_mailbox","mailbox":..} / {"op":"state_device","mailbox":..,"device_id":..}
 *   / {"op":"state_org"}                                         -> the state JSON above
 *   {"op":"add_mailbox","alias":..,"name":..,"display_name":..,"smtp":..,"upn":..,
 *       "proxies":[..],"activesync_disabled":b} / {"op":"add_policy","name":..}
 *   {"op":"behaviour", <any struct mx_behaviour field by its name>}  -> the behaviour after
 *   {"op":"clock","now_ms":n} / {"op":"clock","advance_ms":n}
 *   {"op":"fault_latency","cmdlet":..|null,"ms":n}
 *   {"op":"fault_quota","cmdlet":..,"every_nth":n,"next_k":n,"delay_ms":n,"requests":n,
 *       "seconds":n} (all zero/absent = off)
 *   {"op":"fault_micro_delay","cmdlet":..,"every_nth":n,"delay_ms":n}
 *   {"op":"fault_write_scope","mailbox":..,"on":b} / {"op":"fault_reset"}
 *   {"op":"rbac_hide_cmdlet","cmdlet":..} / {"op":"rbac_hide_parameter","cmdlet":..,
 *       "parameter":..} / {"op":"rbac_allow_only","cmdlet":..,"parameters":[..]}
 *   / {"op":"rbac_reset"}
 *   {"op":"calls"} -> the records / {"op":"calls_reset"} / {"op":"info"} -> counts, memory
 *   {"op":"calls_limit","limit":n} (addition: mx_recorder_set_limit)
 * On success *ret is a new reference ({"ok":true} when there is nothing to return). On failure
 * the code is returned and err (if not NULL) gets a short English text.
 * Returns 0, EG_EINVAL (bad request), EG_ENOTFOUND, EG_ECONFLICT, EG_ELIMIT, EG_ENOMEM. */
int mx_control(struct mx_org *org, const json_t *req, json_t **ret, char *err,
               size_t err_size) EG_MUST_CHECK;

#endif
