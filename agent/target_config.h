/* target_config.h - the runtime configuration of the Exchange target, as the console sets it with
 * PUT /api/v1/config: parsing and validation, redaction for GET, persistence with sealed secrets.
 *
 * Document (docs/api.md "Runtime configuration"):
 *   {"target": {"kind": "onprem"|"online"|"dryrun", ...kind fields..., ...common fields...},
 *    "schedule": {"quick_sync_interval_s", "full_sync_interval_s"},   optional, defaults
 *    "inventory": {"heal_drift", "stats_per_sync", "stats_interval_ms"}, optional, defaults
 *    "upload": {"url", "hmac_key"},                                    optional
 *    "retry": {"deadline_ms"}}                                         optional
 * Every error names the offending member as a JSON path ("target.servers[1].url") and says what
 * is wrong; unknown members, and members of another kind, are refused. A PUT replaces the whole
 * document. Write-only secrets (target.password, target.private_key) left out of a PUT keep the
 * stored value while the kind and the account (username or principal / app_id) stay the same;
 * otherwise they are required (target.password not when a keytab is given). GET shows
 * "password_set" / "private_key_set" instead, never the secret.
 *
 * On disk (<state_dir>/target.json, mode 0600, written atomically) the document carries the
 * secrets sealed by the secretbox ("password_sealed": "eg1:..."), plus revision and update time.
 */
#ifndef EG_TARGET_CONFIG_H
#define EG_TARGET_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/command.h"
#include "agent/secretbox.h"
#include "common/error.h"
#include "common/limits.h"
#include "exchange/bridge_multi.h"

enum eg_target_kind { EG_TARGET_ONPREM, EG_TARGET_ONLINE, EG_TARGET_DRYRUN };
/* target.auth: "basic" (username + password), "negotiate" (SPNEGO: without an account
 * libcurl's with the agent's own Kerberos tickets, https only; with username + password or
 * keytab our GSSAPI path, which picks Kerberos or NTLM), "kerberos" (principal + password or
 * keytab), "ntlm" (principal + password). The GSSAPI path works over http:// too: every message
 * is then sealed (psrp-wire.md section 14). */
enum eg_target_auth {
    EG_TARGET_AUTH_BASIC,
    EG_TARGET_AUTH_NEGOTIATE,
    EG_TARGET_AUTH_KERBEROS,
    EG_TARGET_AUTH_NTLM,
};

/* "basic" / "negotiate" / "kerberos" / "ntlm". */
const char *eg_target_auth_name(enum eg_target_auth a);

/* "onprem" / "online" / "dryrun". */
const char *eg_target_kind_name(enum eg_target_kind k);

/* A validated document. Strings are owned; secrets are wiped by eg_target_config_free. */
struct eg_target_config {
    enum eg_target_kind kind;
    /* onprem */
    char *servers[EG_MAX_SERVERS_PER_TARGET]; /* http(s) URLs of /PowerShell endpoints */
    size_t n_servers;
    enum eg_target_auth auth;
    char *username;             /* required with basic, kerberos, ntlm ("principal" in the
                                   document means the same); NULL = none (negotiate with the
                                   agent's own tickets) */
    char *password;             /* secret; required with basic and ntlm; kerberos: this or
                                   keytab */
    char *keytab;               /* Kerberos client keytab path (absolute); NULL = none */
    char *version;              /* "auto", "2010", "2013", "2016", "2019", "se" */
    int64_t commands_per_shell; /* 1..EG_MAX_COMMANDS_PER_SHELL */
    bool allow_http_basic;      /* Basic over http:// to a loopback server (tests) */
    /* online */
    char *tenant;
    char *app_id;
    char *certificate; /* PEM */
    char *private_key; /* PEM, secret */
    char *api_url;     /* NULL = the backend's default */
    char *token_url;   /* NULL = the backend's default */
    bool allow_http;   /* http:// API and token URLs on a loopback host (tests) */
    /* onprem and online */
    char *ca_pem; /* PEM trust anchors; NULL = the system store */
    bool insecure;
    /* dryrun */
    int64_t latency_ms;
    /* every kind */
    int64_t max_concurrency; /* 1..EG_PSRP_MAX_PIPELINES */
    struct eg_bridge_multi_opts multi;
    int64_t connect_timeout_ms, io_timeout_ms, response_timeout_ms;
    /* schedule (stored for the scheduler), upload, retry */
    int64_t quick_sync_interval_s, full_sync_interval_s;
    /* inventory (agent/scheduler): heal drift of declared lists; statistics calls per sync
     * (0..EG_INVENTORY_MAX_STATS) and the pause between two (0..EG_INVENTORY_MAX_STATS_GAP ms) */
    bool inventory_heal_drift;
    int64_t inventory_stats_per_sync, inventory_stats_interval_ms;
    char *upload_url;      /* NULL = none */
    char *upload_hmac_key; /* secret: the key of the uploads' HMAC-SHA256 signature (NULL = none);
                              write-only like password ("hmac_key_set" in GET), sealed on disk,
                              kept across PUTs that leave it out while upload.url stays the same */
    bool has_retry_deadline;
    int64_t retry_deadline_ms;
    /* bookkeeping, set by whoever stores the document */
    int64_t revision;
    int64_t updated_ms;
};

/* Does c authenticate with easgate's own GSSAPI code (transport/gss.h; an eg_gss_cred made
 * from username + password / keytab): kerberos, ntlm, and negotiate with an account. */
bool eg_target_config_uses_gss(const struct eg_target_config *c);

/* Parse and validate a PUT body (len bytes, no NUL needed). prev is the stored document (NULL =
 * none) from which omitted secrets are kept (see above). On success *ret is a new config with
 * revision/updated_ms 0 (free with eg_target_config_free).
 * Returns 0, EG_EPARSE (malformed JSON: err->detail has line and column), EG_EINVAL (err names
 * the field), EG_ELIMIT (err->field "" = nesting of the whole body over EG_MAX_JSON_DEPTH;
 * otherwise a member over its limit), EG_ENOMEM. */
int eg_target_config_parse(const char *body, size_t len, const struct eg_target_config *prev,
                           struct eg_target_config **ret, struct eg_verr *err) EG_MUST_CHECK;

/* Validate an already parsed document (as for eg_target_config_parse). */
int eg_target_config_from_json(const json_t *doc, const struct eg_target_config *prev,
                               struct eg_target_config **ret, struct eg_verr *err) EG_MUST_CHECK;

/* The document as GET shows it: every member with defaults filled in, secrets replaced by
 * "password_set" / "private_key_set": true, plus "revision" and "updated_at" (RFC 3339).
 * New reference; NULL on allocation failure. */
json_t *eg_target_config_redacted(const struct eg_target_config *c);

/* Write c to path (mode 0600; temp file, fsync, rename) with its secrets sealed by box.
 * Returns 0, EG_EIO (errno meaningful), EG_ETLS, EG_ENOMEM. */
int eg_target_config_save(const struct eg_target_config *c, const struct eg_secretbox *box,
                          const char *path) EG_MUST_CHECK;

/* Read and validate a document written by eg_target_config_save, opening its secrets with box.
 * On success *ret is a new config with its revision and update time. On failure why (may be
 * NULL) says what is wrong with the file, naming it and the member (never a secret).
 * Returns 0, EG_ENOTFOUND (no such file), EG_EIO, EG_ELIMIT, EG_EPARSE, EG_EINVAL, EG_EAUTH (a
 * secret does not open with this key: wrong key file or tampering), EG_ENOMEM. */
int eg_target_config_load(const char *path, const struct eg_secretbox *box,
                          struct eg_target_config **ret, char *why, size_t whylen) EG_MUST_CHECK;

/* Free, wiping the secrets. Accepts NULL. */
void eg_target_config_free(struct eg_target_config *c);

#endif
