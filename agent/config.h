/* config.h - bootstrap configuration: one option table feeding the JSON file, the environment
 * and the command line (in that order of precedence, lowest first; built-in defaults below all).
 *
 * File: a JSON object whose keys are option names ("listen", "state_dir", ...).
 * Environment: EASGATE_<NAME> (upper case), e.g. EASGATE_STATE_DIR.
 * Command line: --<name with dashes> VALUE or --name=VALUE; booleans also bare (--plain-http)
 * or --no-<name>.
 * Every problem is collected (not just the first) with its location: "file:line" for the file,
 * "environment EASGATE_X" or "command line --x".
 */
#ifndef EG_CONFIG_H
#define EG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "common/limits.h"

enum eg_config_action { EG_ACTION_RUN, EG_ACTION_CHECK, EG_ACTION_HELP, EG_ACTION_VERSION };

struct eg_config {
    enum eg_config_action action;
    char *config_file;     /* --config / EASGATE_CONFIG; for --check-config the file checked */
    char *listen;          /* "ADDR:PORT", default "0.0.0.0:9090" */
    char *listen_addr;     /* derived from listen */
    uint16_t listen_port;  /* derived from listen; 0 = any free port */
    char *state_dir;       /* default /var/lib/easgate */
    char *secret_key_file; /* key sealing stored secrets; NULL = <state_dir>/secret.key */
    char *audit_log;       /* audit trail; NULL = <state_dir>/audit.log */
    char *tls_cert;        /* PEM server certificate (chain) */
    char *tls_key;         /* PEM private key */
    char *tls_priorities;  /* GnuTLS priority string */
    char *client_ca;       /* PEM CA bundle that client certificates must chain to */
    char *token_file;      /* file holding the console's bearer token */
    bool plain_http;       /* serve HTTP instead of HTTPS (loopback only unless forced) */
    bool plain_http_any_address; /* force: allow plain HTTP on a non-loopback address */
    bool no_auth;                /* allow no console authentication (loopback only) */
    char *ports_file;            /* write {"api": PORT} here once listening */
    char *log_level;             /* err|warn|notice|info|debug */
    int64_t workers;
    int64_t max_body_bytes;
    int64_t max_batch;
    int64_t max_connections;
    int64_t conn_timeout_s;
    int64_t max_connections_per_client; /* per peer IP address */
    int64_t api_rate;                   /* requests/s per client; 0 = no rate limit */
    int64_t api_burst;                  /* token bucket size */
    int64_t drain_timeout_ms;
    char *bridge;                   /* "dryrun" or "psrp" (on-prem Exchange, PowerShell remoting) */
    char *exchange_url;             /* psrp: http(s)://server/PowerShell */
    char *exchange_configuration;   /* psrp: shell configuration, default Microsoft.Exchange */
    char *exchange_user;            /* psrp: account (CORP\\svc or svc@corp.example) */
    char *exchange_password_file;   /* psrp: file holding its password */
    char *exchange_ca;              /* psrp: PEM trust anchors for https */
    bool exchange_insecure;         /* psrp: https without certificate verification */
    bool exchange_allow_http_basic; /* psrp: Basic over plain http (a local mock only) */
    char *exchange_version;         /* psrp: auto|2010|2013|2016 */
    int64_t exchange_max_pipelines; /* psrp: concurrent pipelines (Exchange allows 18 shells) */
    int64_t exchange_commands_per_shell; /* psrp: recycle the shell after this many pipelines */
    int64_t dryrun_latency_ms;
    bool coalesce;
    int64_t max_coalesce;
    int64_t max_attempts;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    int64_t retry_deadline_ms;   /* no retry starts later than this after acceptance */
    int64_t upload_heartbeat_s;  /* empty upload batch after this long idle */
    int64_t upload_retry_max_ms; /* longest backoff between upload attempts */
    int64_t outbox_max_records;  /* outbox bound: records waiting for the console */
    int64_t outbox_max_bytes;    /* outbox bound: their payload bytes */
};

enum eg_opt_type {
    EG_OPT_STRING,
    EG_OPT_PATH,
    EG_OPT_BOOL,
    EG_OPT_INT,
    EG_OPT_ENUM,
    EG_OPT_HOSTPORT
};

#define EG_OPT_CLI_ONLY 1u /* not accepted in the file (e.g. "config" itself) */

struct eg_option {
    const char *name; /* file key; env EASGATE_<NAME>; CLI --name-with-dashes */
    enum eg_opt_type type;
    size_t offset;              /* into struct eg_config */
    const char *def;            /* default as text, NULL = unset */
    int64_t min, max;           /* EG_OPT_INT bounds */
    const char *const *choices; /* EG_OPT_ENUM, NULL-terminated */
    unsigned flags;
    const char *help;
};

/* The option table and its length. */
const struct eg_option *eg_config_options(size_t *ret_n);

struct eg_config_diag {
    char where[EG_MAX_PATH_LEN + 32]; /* "path:line", "environment EASGATE_X", "command line --x" */
    char message[512];
};

struct eg_config_diags {
    struct eg_config_diag *v;
    size_t n;
};

/* Build the configuration from defaults, the file (--config, or EASGATE_CONFIG), envp
 * (NULL-terminated "K=V" strings; may be NULL) and argv. Special arguments: --check-config FILE
 * (action CHECK, file checked = FILE), --help, --version.
 * Always returns a config in *ret (caller frees with eg_config_free) unless EG_ENOMEM; returns 0
 * when there were no problems, EG_EINVAL when diags has at least one entry (caller frees diags
 * with eg_config_diags_free). Cross-field rules (TLS material needed unless plain_http, plain
 * HTTP only on loopback unless forced, files readable...) are checked here too. */
int eg_config_load(int argc, char *const argv[], char *const envp[], struct eg_config **ret,
                   struct eg_config_diags *diags) EG_MUST_CHECK;

void eg_config_free(struct eg_config *c);
void eg_config_diags_free(struct eg_config_diags *d);

/* A new config holding the built-in defaults only (listen_addr/listen_port derived).
 * Caller frees with eg_config_free. Returns 0 or EG_ENOMEM. */
int eg_config_defaults(struct eg_config **ret) EG_MUST_CHECK;

/* Apply the text of a configuration file (a JSON object of option names, at most
 * EG_MAX_CONFIG_BYTES) to c, as eg_config_load does for the file layer: every problem is
 * appended to diags with where = "<name>:<line>". No cross-field checks and no file access; c
 * keeps its previous value for every rejected option (an accepted "listen" also updates
 * listen_addr/listen_port). Returns 0, EG_EINVAL (diags has entries) or EG_ENOMEM (c may then
 * be partly updated; it stays valid for eg_config_free). Used by eg_config_load and the fuzz
 * target. */
int eg_config_parse_buffer(struct eg_config *c, const char *name, const char *buf, size_t len,
                           struct eg_config_diags *diags) EG_MUST_CHECK;

/* Print usage generated from the option table. */
void eg_config_usage(FILE *out, const char *argv0);

/* Read the bearer token from c->token_file: trailing newline stripped, length between
 * EG_MIN_TOKEN_BYTES and EG_MAX_TOKEN_BYTES, printable ASCII only. *ret is a new string the
 * caller wipes with eg_memzero and frees. Returns 0, EG_EIO, EG_EINVAL, EG_ELIMIT, EG_ENOMEM.
 * The error never contains token bytes. */
int eg_config_read_token(const struct eg_config *c, char **ret) EG_MUST_CHECK;

#endif
