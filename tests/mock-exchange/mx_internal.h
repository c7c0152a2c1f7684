/* mx_internal.h - what the engine's own files share (org.c, cmdlets.c, filter.c, control.c):
 * the org's data structures, identity resolution, access evaluation, the -Filter evaluator and
 * the fault/recorder hooks of mx_invoke. Not for the front ends: they use engine.h only.
 *
 * Memory: a device is one fixed-size struct (about 230 bytes) whose repeated strings (type, model,
 * OS, user agent, ...) are interned and whose unique strings live in a bump arena; output objects
 * are built on demand and never kept. Devices and mailboxes are never moved between slots (removed
 * devices stay as tombstones), so an index stays valid while the lock is dropped.
 */
#ifndef MX_INTERNAL_H
#define MX_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

#define MX_NONE UINT32_MAX

/* Profile bit masks (cmdlet and parameter availability). */
#define PF_2010   1u
#define PF_2013   2u
#define PF_2016   4u
#define PF_ONLINE 8u
#define PF_ALL    15u
#define PF_ONPREM 7u  /* 2010, 2013, 2016 */
#define PF_2013UP 14u /* 2013, 2016, Online */
#define PF_2016UP 12u /* 2016, Online */
#define PF_13_16  6u  /* 2013, 2016 (on-prem 2013+) */

static inline unsigned mx_pf(enum mx_profile p)
{
    return 1u << (unsigned)p;
}

enum mx_state { ST_UNKNOWN, ST_ALLOWED, ST_BLOCKED, ST_QUARANTINED, ST_DISCOVERY };
enum mx_reason { RS_UNKNOWN, RS_GLOBAL, RS_INDIVIDUAL, RS_DEVICERULE, RS_UPGRADE, RS_POLICY };
enum mx_level { LV_ALLOW, LV_BLOCK, LV_QUARANTINE };
enum mx_charac { CH_DEVICETYPE, CH_DEVICEMODEL, CH_DEVICEOS, CH_USERAGENT, CH_XMSWLHEADER };

const char *mx_state_name(unsigned s);
const char *mx_reason_name(unsigned r);
const char *mx_level_name(unsigned l);
const char *mx_charac_name(unsigned c);

/* A growable string list (heap strings, owned). */
struct mx_strv {
    char **v;
    size_t n, cap;
};
int mx_strv_add(struct mx_strv *sv, const char *s) EG_MUST_CHECK;
void mx_strv_clear(struct mx_strv *sv);
/* Index of s (ASCII case-insensitive) or -1. */
long mx_strv_find(const struct mx_strv *sv, const char *s);
void mx_strv_remove_at(struct mx_strv *sv, size_t i);

struct mx_mailbox {
    /* arena strings */
    const char *alias, *name, *display, *smtp, *upn, *dn, *canonical, *legacy_dn, *identity;
    const char **proxies; /* extra SMTP addresses */
    uint32_t n_proxies;
    uint8_t guid[16], ext_id[16];
    struct mx_strv allowed, blocked;
    const char *policy; /* interned */
    bool policy_defaulted, as_enabled, debug_logging, suppress_rr;
    bool has_partnership; /* stored value (stale_partnership mode) */
    bool write_scope_fault;
    uint32_t dev_head, dev_tail; /* live partnerships, in creation order */
    uint32_t n_live;
    int64_t when_created, when_changed;
};

struct mx_device {
    uint32_t mailbox, next;
    const char *device_id; /* arena */
    /* interned */
    const char *type, *model, *os, *os_lang, *ua, *friendly, *oper, *eas, *client_type,
        *client_version, *rule, *requestor;
    struct mx_strv *notify; /* wipe notification addresses, NULL if none */
    uint8_t guid[16];
    int64_t first_sync, last_attempt, last_success, last_policy, wipe_request, wipe_sent, wipe_ack,
        created, changed, discovery_until;
    uint8_t state, reason;
    bool removed, wipe_supported, account_only, policy_failed;
};

struct mx_rule {
    char *name; /* "<QueryString> (<Characteristic>)" */
    char *query;
    uint8_t charac, level;
    uint8_t guid[16];
    int64_t created, changed;
};

#define MX_MAX_FAULT_KEYS 64

struct mx_fault {
    char *cmdlet; /* NULL = every cmdlet */
    /* which faults this key sets: a key's setting beats the every-cmdlet key's, also when it
     * sets the fault to off (latency 0, quota with every_nth = next_k = 0, micro-delay
     * every_nth 0; mx_fault_quota with f NULL) */
    bool has_latency, has_quota, has_md;
    int64_t latency_ms;
    struct mx_quota_fault quota;
    uint64_t quota_calls;
    unsigned quota_left;
    unsigned md_every;
    int64_t md_delay_ms;
    uint64_t md_calls;
};

struct mx_rbac {
    char *cmdlet;
    bool hidden;
    bool allow_only;
    struct mx_strv hidden_params;
    struct mx_strv allowed_params; /* allow_only */
};

struct mx_arena;

struct mx_org {
    pthread_mutex_t lock;
    enum mx_profile profile;
    uint64_t rng; /* splitmix64 state for everything random after seeding */
    char admin_version[64];

    struct mx_arena *arena;
    size_t arena_bytes;
    const char **intern; /* open-addressing set */
    size_t intern_cap, intern_n;

    struct mx_mailbox *mbx;
    size_t n_mbx, cap_mbx;
    struct mx_midx {
        uint64_t h;
        uint32_t m;
    } * midx;
    size_t midx_cap, midx_n;

    struct mx_device *dev;
    size_t n_dev, cap_dev, live_dev;
    uint32_t *gidx; /* device Guid -> index, open addressing */
    size_t gidx_cap, gidx_n;

    /* org settings */
    uint8_t org_guid[16];
    unsigned default_level;
    struct mx_strv admin_mail;
    char *user_mail_insert, *ota_insert;
    bool allow_unsupported, allow_rms, ca_policy;
    int64_t settings_changed;
    struct mx_rule *rules;
    size_t n_rules, cap_rules;
    struct mx_strv policies;

    struct mx_behaviour beh;
    int64_t clock_ms; /* 0 = real clock */

    struct mx_fault faults[MX_MAX_FAULT_KEYS];
    size_t n_faults;
    struct mx_rbac *rbac;
    size_t n_rbac;

    json_t *calls; /* up to calls_limit + calls_limit / 4 + 1 records; the last calls_limit count */
    size_t calls_limit;
    uint64_t calls_seq;

    uint64_t err_seq; /* atomic: RequestIds of error FQEIDs */
};

/* ---- org.c (callers hold the lock unless said otherwise) ---- */

int64_t mx_now(struct mx_org *org);
uint64_t mx_rand(struct mx_org *org);
void mx_rand_guid(uint64_t *state, uint8_t g[16]);
void mx_guid_text(const uint8_t g[16], char out[40]);
/* D, N, B or P form; true when s is a GUID. */
bool mx_guid_parse(const char *s, uint8_t out[16]);

const char *mx_intern(struct mx_org *org, const char *s); /* NULL on ENOMEM; NULL s -> NULL */

/* Resolve a §3 mailbox identity: 0 (*ret index), EG_ENOTFOUND, EG_ECONFLICT (several). */
int mx_find_mailbox(struct mx_org *org, const char *id, uint32_t *ret);
/* Resolve a device identity (Guid, <mailbox>\ExchangeActiveSyncDevices\<name>, the Identity as
 * output with '/', DN): 0, EG_ENOTFOUND, EG_ECONFLICT. Removed partnerships are not found. */
int mx_find_device(struct mx_org *org, const char *id, uint32_t *ret);
/* The live partnership of device_id (case-insensitive) in mailbox m, or MX_NONE. */
uint32_t mx_mailbox_device(struct mx_org *org, uint32_t m, const char *device_id);
/* Matches a Get-* wildcard pattern ('*' and '?') against the mailbox's Name, Alias,
 * PrimarySmtpAddress, UPN, DisplayName. */
bool mx_mailbox_wild(const struct mx_mailbox *m, const char *pattern);
bool mx_wildcard(const char *pattern, const char *s); /* case-insensitive */

/* Device names: Name (<DeviceType>§<DeviceId>, or REST§Outlook§<DeviceId>), Identity, DN. */
void mx_device_name(const struct mx_device *d, char *buf, size_t size);
void mx_device_identity(struct mx_org *org, const struct mx_device *d, char *buf, size_t size);
void mx_device_dn(struct mx_org *org, const struct mx_device *d, char *buf, size_t size);
/* Derived per-device values (deterministic from the Guid). */
void mx_device_imei(const struct mx_device *d, char *buf, size_t size);
void mx_device_phone(const struct mx_device *d, char *buf, size_t size);

/* §10.3 steps 3-9 for one device at time now (sets state, reason, rule). */
void mx_eval_device(struct mx_org *org, struct mx_device *d, int64_t now);
void mx_recompute_mailbox(struct mx_org *org, uint32_t m);
void mx_recompute_all(struct mx_org *org);
/* HasActiveSyncDevicePartnership as Get-CASMailbox shows it. */
bool mx_has_partnership(struct mx_org *org, const struct mx_mailbox *m);

/* §7 Status of a device. */
const char *mx_wipe_status(const struct mx_device *d);

/* Remove a partnership (tombstone, unlink). */
void mx_device_remove(struct mx_org *org, uint32_t di);

/* ---- filter.c ---- */

enum mx_fv_kind { FV_NULL, FV_STR, FV_LIST, FV_BOOL, FV_DATE, FV_INT };

/* A property value handed to the evaluator. Strings stay valid until the next getter call. */
struct mx_fval {
    enum mx_fv_kind kind;
    const char *s;
    char *const *list;
    size_t n;
    bool b;
    int64_t i; /* FV_INT value, FV_DATE ms since the epoch */
};

struct mx_filter_prop {
    const char *name;
    int id;
    enum mx_fv_kind kind; /* declared kind (FV_STR, FV_LIST, FV_BOOL, FV_DATE, FV_INT) */
};

typedef void (*mx_filter_get)(void *ctx, int prop_id, struct mx_fval *out);

struct mx_filter;

/* Parse the -Filter subset: comparisons "<Property> <op> <value>" with -eq -ne -like -notlike
 * -gt -ge -lt -le (also -ceq ... spelt with c or i: same, case-insensitive), joined with -and
 * -or, -not prefix, parentheses; values 'quoted', "quoted", bare words, $true $false $null,
 * numbers; an optional outer { } script-block pair. On a list property -eq/-like mean "contains
 * an element that matches". On failure the text in err tells why (English, no secret):
 * EG_EPARSE (syntax; err ends with the position), EG_ENOTFOUND (unknown property; err names it),
 * EG_ELIMIT (longer than 4096 bytes or deeper than 32), EG_ENOMEM. */
int mx_filter_parse(const char *text, const struct mx_filter_prop *props, size_t n_props,
                    struct mx_filter **ret, char *err, size_t err_size) EG_MUST_CHECK;
bool mx_filter_eval(const struct mx_filter *f, mx_filter_get get, void *ctx);
void mx_filter_free(struct mx_filter *f);

/* ---- cmdlets.c: the cmdlet table, for RBAC validation and Get-Command ---- */

/* 0 when cmdlet exists in the table (any profile); with parameter also that it is one of its
 * parameters (including Confirm/WhatIf for ShouldProcess cmdlets). The canonical spellings are
 * written to the buffers when not NULL (size 128). */
int mx_cmdlet_lookup(const char *cmdlet, const char *parameter, char *canon_cmdlet,
                     char *canon_param) EG_MUST_CHECK;

/* ---- control.c: hooks used by mx_invoke ---- */

/* Before a cmdlet runs (lock NOT held): applies latency (sleep), counts calls, decides a quota
 * error (fills term, returns EG_EREMOTE) and a micro-delay (sleeps, *ret_warning gets a new
 * string to emit, eg_free). Returns 0, EG_EREMOTE, EG_ENOMEM. */
int mx_fault_before(struct mx_org *org, const char *cmdlet, struct mx_error *term,
                    char **ret_warning) EG_MUST_CHECK;
/* RBAC checks (lock held). */
bool mx_rbac_cmdlet_hidden(struct mx_org *org, const char *cmdlet);
bool mx_rbac_param_hidden(struct mx_org *org, const char *cmdlet, const char *param);
/* Append a record (lock NOT held; takes over rec; sets its "seq"). */
void mx_recorder_add(struct mx_org *org, json_t *rec);

/* ---- cmdlets.c ---- */

/* True for the PowerShell common parameters (ErrorAction, Verbose, ...), which RBAC cannot hide. */
bool mx_common_parameter(const char *name);

#endif
