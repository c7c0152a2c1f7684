/* config.c - bootstrap configuration: ONE option table feeding the JSON file, the EASGATE_*
 * environment and the command line (defaults < file < environment < command line), strict
 * value checking, cross-field rules, and `--check-config`.
 *
 * Every problem is collected with where it came from ("path:LINE", "environment EASGATE_X",
 * "command line --x"); nothing stops at the first error. jansson does not report the position
 * of object members, so a small scanner finds the line of each top-level key of the file.
 * This module never logs and never creates anything (state_dir is left to the journal).
 */
#include "agent/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/util.h"

#define OFF(f) offsetof(struct eg_config, f)

static const char *const log_levels[] = {"err", "warn", "notice", "info", "debug", NULL};
static const char *const bridges[] = {"dryrun", "psrp", NULL};
static const char *const exchange_versions[] = {"auto", "2010", "2013", "2016", NULL};

/* THE option table. Integer defaults are written as text (the table type says so); the unit
 * tests check that they equal the limits.h macros. */
static const struct eg_option options[] = {
    {.name = "config",
     .type = EG_OPT_PATH,
     .offset = OFF(config_file),
     .flags = EG_OPT_CLI_ONLY,
     .help = "JSON configuration file to read (command line or environment only)"},
    {.name = "listen",
     .type = EG_OPT_HOSTPORT,
     .offset = OFF(listen),
     .def = "0.0.0.0:9090",
     .help = "address and port of the console API: ADDR:PORT or [V6]:PORT; ADDR an IP literal "
             "or localhost; port 0 picks any free port"},
    {.name = "state_dir",
     .type = EG_OPT_PATH,
     .offset = OFF(state_dir),
     .def = "/var/lib/easgate",
     .help = "directory of the command journal"},
    {.name = "secret_key_file",
     .type = EG_OPT_PATH,
     .offset = OFF(secret_key_file),
     .help = "32-byte key that seals the secrets of the stored Exchange target, created with "
             "mode 0600 on first start (unset: <state_dir>/secret.key)"},
    {.name = "audit_log",
     .type = EG_OPT_PATH,
     .offset = OFF(audit_log),
     .help = "hash-chained audit trail of every change made in Exchange, created with mode 0600 "
             "(unset: <state_dir>/audit.log); check it with `easgate audit verify`"},
    {.name = "tls_cert",
     .type = EG_OPT_PATH,
     .offset = OFF(tls_cert),
     .help = "PEM server certificate (chain); required unless plain_http"},
    {.name = "tls_key",
     .type = EG_OPT_PATH,
     .offset = OFF(tls_key),
     .help = "PEM private key of tls_cert; required unless plain_http"},
    {.name = "tls_priorities",
     .type = EG_OPT_STRING,
     .offset = OFF(tls_priorities),
     .help = "GnuTLS priority string (unset: the server's modern default)"},
    {.name = "client_ca",
     .type = EG_OPT_PATH,
     .offset = OFF(client_ca),
     .help = "PEM CA bundle that console client certificates must chain to"},
    {.name = "token_file",
     .type = EG_OPT_PATH,
     .offset = OFF(token_file),
     .help = "file holding the console's bearer token (client_ca and/or token_file are required "
             "unless no_auth)"},
    {.name = "plain_http",
     .type = EG_OPT_BOOL,
     .offset = OFF(plain_http),
     .def = "false",
     .help = "serve plain HTTP instead of HTTPS (loopback only unless plain_http_any_address)"},
    {.name = "plain_http_any_address",
     .type = EG_OPT_BOOL,
     .offset = OFF(plain_http_any_address),
     .def = "false",
     .help = "allow plain_http on a non-loopback address (unsafe)"},
    {.name = "no_auth",
     .type = EG_OPT_BOOL,
     .offset = OFF(no_auth),
     .def = "false",
     .help = "allow running without console authentication (loopback address only)"},
    {.name = "ports_file",
     .type = EG_OPT_PATH,
     .offset = OFF(ports_file),
     .help = "write {\"api\": PORT} to this file once listening"},
    {.name = "log_level",
     .type = EG_OPT_ENUM,
     .offset = OFF(log_level),
     .def = "notice",
     .choices = log_levels,
     .help = "most verbose level logged"},
    {.name = "workers",
     .type = EG_OPT_INT,
     .offset = OFF(workers),
     .def = "4",
     .min = 1,
     .max = EG_MAX_WORKERS,
     .help = "worker threads applying commands to Exchange"},
    {.name = "max_body_bytes",
     .type = EG_OPT_INT,
     .offset = OFF(max_body_bytes),
     .def = "1048576",
     .min = EG_MIN_MAX_BODY,
     .max = EG_MAX_MAX_BODY,
     .help = "largest request body accepted (413 above)"},
    {.name = "max_batch",
     .type = EG_OPT_INT,
     .offset = OFF(max_batch),
     .def = "1000",
     .min = 1,
     .max = EG_MAX_BATCH,
     .help = "most commands in one POST (413 above)"},
    {.name = "max_connections",
     .type = EG_OPT_INT,
     .offset = OFF(max_connections),
     .def = "256",
     .min = 1,
     .max = EG_MAX_MAX_CONNECTIONS,
     .help = "most open console connections"},
    {.name = "conn_timeout_s",
     .type = EG_OPT_INT,
     .offset = OFF(conn_timeout_s),
     .def = "30",
     .min = 1,
     .max = EG_MAX_CONN_TIMEOUT_S,
     .help = "idle console connections, and requests (headers and body) still arriving, are "
             "closed after this many seconds"},
    {.name = "max_connections_per_client",
     .type = EG_OPT_INT,
     .offset = OFF(max_connections_per_client),
     .def = "32",
     .min = 1,
     .max = EG_MAX_MAX_CONNECTIONS,
     .help = "most open console connections from one IP address (within max_connections)"},
    {.name = "api_rate",
     .type = EG_OPT_INT,
     .offset = OFF(api_rate),
     .def = "200",
     .min = 0,
     .max = EG_MAX_API_RATE,
     .help = "requests per second allowed to each console client (certificate, else IP address) "
             "before 429 with Retry-After; /healthz and /readyz are exempt; 0 = no limit"},
    {.name = "api_burst",
     .type = EG_OPT_INT,
     .offset = OFF(api_burst),
     .def = "400",
     .min = 1,
     .max = EG_MAX_API_BURST,
     .help = "requests a console client may send at once above api_rate (token bucket size)"},
    {.name = "drain_timeout_ms",
     .type = EG_OPT_INT,
     .offset = OFF(drain_timeout_ms),
     .def = "10000",
     .min = 0,
     .max = EG_MAX_DRAIN_TIMEOUT_MS,
     .help = "on SIGTERM, how long in-flight requests and Exchange calls may take to finish"},
    {.name = "bridge",
     .type = EG_OPT_ENUM,
     .offset = OFF(bridge),
     .def = "dryrun",
     .choices = bridges,
     .help = "Exchange backend"},
    {.name = "exchange_url",
     .type = EG_OPT_STRING,
     .offset = OFF(exchange_url),
     .help = "psrp bridge: Exchange's remote PowerShell endpoint, http(s)://server/PowerShell"},
    {.name = "exchange_configuration",
     .type = EG_OPT_STRING,
     .offset = OFF(exchange_configuration),
     .def = "Microsoft.Exchange",
     .help = "psrp bridge: PowerShell session configuration"},
    {.name = "exchange_user",
     .type = EG_OPT_STRING,
     .offset = OFF(exchange_user),
     .help = "psrp bridge: the Exchange account (Basic authentication)"},
    {.name = "exchange_password_file",
     .type = EG_OPT_PATH,
     .offset = OFF(exchange_password_file),
     .help = "psrp bridge: file holding the account's password (first line)"},
    {.name = "exchange_ca",
     .type = EG_OPT_PATH,
     .offset = OFF(exchange_ca),
     .help = "psrp bridge: PEM trust anchors for an https endpoint (unset: system store)"},
    {.name = "exchange_insecure",
     .type = EG_OPT_BOOL,
     .offset = OFF(exchange_insecure),
     .def = "false",
     .help = "psrp bridge: do not verify the endpoint's certificate (unsafe)"},
    {.name = "exchange_allow_http_basic",
     .type = EG_OPT_BOOL,
     .offset = OFF(exchange_allow_http_basic),
     .def = "false",
     .help = "psrp bridge: allow Basic authentication over plain http (a local test server only)"},
    {.name = "exchange_version",
     .type = EG_OPT_ENUM,
     .offset = OFF(exchange_version),
     .def = "auto",
     .choices = exchange_versions,
     .help = "psrp bridge: Exchange version, or auto to detect it"},
    {.name = "exchange_max_pipelines",
     .type = EG_OPT_INT,
     .offset = OFF(exchange_max_pipelines),
     .def = "4",
     .min = 1,
     .max = 16,
     .help = "psrp bridge: pipelines run at once (Exchange allows 18 shells per user)"},
    {.name = "exchange_commands_per_shell",
     .type = EG_OPT_INT,
     .offset = OFF(exchange_commands_per_shell),
     .def = "500",
     .min = 1,
     .max = 100000,
     .help = "psrp bridge: open a fresh shell after this many pipelines (WinRM limits commands "
             "per shell)"},
    {.name = "dryrun_latency_ms",
     .type = EG_OPT_INT,
     .offset = OFF(dryrun_latency_ms),
     .def = "0",
     .min = 0,
     .max = EG_MAX_DRYRUN_LATENCY_MS,
     .help = "simulated latency of each Exchange call of the dryrun bridge"},
    {.name = "coalesce",
     .type = EG_OPT_BOOL,
     .offset = OFF(coalesce),
     .def = "true",
     .help = "merge the pending list edits of one mailbox into one Exchange call"},
    {.name = "max_coalesce",
     .type = EG_OPT_INT,
     .offset = OFF(max_coalesce),
     .def = "500",
     .min = 1,
     .max = EG_MAX_COALESCE,
     .help = "most commands merged into one Exchange call"},
    {.name = "max_attempts",
     .type = EG_OPT_INT,
     .offset = OFF(max_attempts),
     .def = "8",
     .min = 1,
     .max = EG_MAX_MAX_ATTEMPTS,
     .help = "attempts before a transient failure becomes final"},
    {.name = "retry_base_ms",
     .type = EG_OPT_INT,
     .offset = OFF(retry_base_ms),
     .def = "500",
     .min = 1,
     .max = EG_MAX_RETRY_MS,
     .help = "first retry delay (exponential backoff with full jitter)"},
    {.name = "retry_max_ms",
     .type = EG_OPT_INT,
     .offset = OFF(retry_max_ms),
     .def = "60000",
     .min = 1,
     .max = EG_MAX_RETRY_MS,
     .help = "longest retry delay"},
    {.name = "retry_deadline_ms",
     .type = EG_OPT_INT,
     .offset = OFF(retry_deadline_ms),
     .def = "900000",
     .min = EG_MIN_RETRY_DEADLINE_MS,
     .max = EG_MAX_RETRY_DEADLINE_MS,
     .help = "a transient failure becomes final once its next attempt would start later than "
             "this after the command was accepted (or max_attempts is reached first)"},
    {.name = "upload_heartbeat_s",
     .type = EG_OPT_INT,
     .offset = OFF(upload_heartbeat_s),
     .def = "60",
     .min = EG_UPLOAD_MIN_HEARTBEAT_S,
     .max = EG_UPLOAD_MAX_HEARTBEAT_S,
     .help = "after this long without an upload, send the console an empty batch (a heartbeat)"},
    {.name = "upload_retry_max_ms",
     .type = EG_OPT_INT,
     .offset = OFF(upload_retry_max_ms),
     .def = "300000",
     .min = EG_UPLOAD_MIN_BACKOFF_MS,
     .max = EG_UPLOAD_MAX_BACKOFF_MS,
     .help = "longest wait between upload attempts while the console does not acknowledge "
             "(exponential backoff with jitter from 1 s)"},
    {.name = "outbox_max_records",
     .type = EG_OPT_INT,
     .offset = OFF(outbox_max_records),
     .def = "1000000",
     .min = EG_OUTBOX_MIN_MAX_RECORDS,
     .max = EG_OUTBOX_MAX_RECORDS,
     .help = "records the upload outbox keeps for the console; at the bound inventory changes "
             "are not stored and the next full sync uploads a complete snapshot (warning from "
             "80 %)"},
    {.name = "outbox_max_bytes",
     .type = EG_OPT_INT,
     .offset = OFF(outbox_max_bytes),
     .def = "536870912",
     .min = EG_OUTBOX_MIN_MAX_BYTES,
     .max = EG_OUTBOX_MAX_BYTES,
     .help = "payload bytes the upload outbox keeps for the console (as outbox_max_records)"},
};

#define N_OPTS     (sizeof options / sizeof options[0])
#define WHERE_LEN  (EG_MAX_PATH_LEN + 32)
#define ENV_PREFIX "EASGATE_"

const struct eg_option *eg_config_options(size_t *ret_n)
{
    if (ret_n)
        *ret_n = N_OPTS;
    return options;
}

static size_t opt_index(const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(options[i].name, name) == 0)
            return i;
    return SIZE_MAX;
}

static bool is_string_type(enum eg_opt_type t)
{
    return t == EG_OPT_STRING || t == EG_OPT_PATH || t == EG_OPT_ENUM || t == EG_OPT_HOSTPORT;
}

static char **str_field(struct eg_config *c, const struct eg_option *o)
{
    return (char **)(void *)((char *)c + o->offset);
}

static bool *bool_field(struct eg_config *c, const struct eg_option *o)
{
    return (bool *)(void *)((char *)c + o->offset);
}

static int64_t *int_field(struct eg_config *c, const struct eg_option *o)
{
    return (int64_t *)(void *)((char *)c + o->offset);
}

/* ---- loader state and diagnostics ----------------------------------------------------------- */

struct loader {
    struct eg_config *cfg;
    struct eg_config_diags *diags;
    bool oom;
    bool capped;
    bool file_failed;              /* the file could not be used at all: skip cross-field rules */
    bool rejected[N_OPTS];         /* a layer offered a bad value (cross-field rules skip it) */
    char where[N_OPTS][WHERE_LEN]; /* where the value in force was set; "" = built-in default */
};

static void diag(struct loader *L, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void diag(struct loader *L, const char *where, const char *fmt, ...)
{
    struct eg_config_diags *d = L->diags;
    va_list ap;
    if (L->capped || L->oom)
        return;
    struct eg_config_diag *v = eg_reallocarray(d->v, d->n + 1, sizeof *v);
    if (!v) {
        L->oom = true;
        return;
    }
    d->v = v;
    struct eg_config_diag *e = &v[d->n++];
    if (d->n >= EG_MAX_CONFIG_ERRORS) {
        snprintf(e->where, sizeof e->where, "configuration");
        snprintf(e->message, sizeof e->message, "too many problems (%d); the rest are not reported",
                 EG_MAX_CONFIG_ERRORS);
        L->capped = true;
        return;
    }
    snprintf(e->where, sizeof e->where, "%s", where);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* A value made safe to echo: printable ASCII, others as '?', cut at 80 bytes. */
static const char *show(char *buf, size_t size, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < size; i++) {
        if (i == 80) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
    }
    buf[o] = '\0';
    return buf;
}

/* Location of the value in force for cross-field messages. */
static const char *loc(const struct loader *L, size_t i)
{
    return L->where[i][0] ? L->where[i] : "configuration";
}

/* ---- setting values ------------------------------------------------------------------------- */

static bool valid_listen_addr(const char *spec, const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (spec[0] == '[')
        return inet_pton(AF_INET6, addr, &a6) == 1;
    return inet_pton(AF_INET, addr, &a4) == 1 || strcmp(addr, "localhost") == 0;
}

/* Validate a string value for option i and put it in force. Returns false when refused. */
static bool set_string(struct loader *L, size_t i, const char *s, size_t len, const char *where)
{
    const struct eg_option *o = &options[i];
    char shown[100];
    char *addr = NULL;
    uint16_t port = 0;

    if (memchr(s, '\0', len)) {
        diag(L, where, "%s must not contain NUL characters", o->name);
        return false;
    }
    switch (o->type) {
    case EG_OPT_PATH:
        if (len == 0) {
            diag(L, where, "%s must not be empty", o->name);
            return false;
        }
        if (len > EG_MAX_PATH_LEN) {
            diag(L, where, "%s is longer than %d bytes", o->name, EG_MAX_PATH_LEN);
            return false;
        }
        break;
    case EG_OPT_STRING:
        if (len == 0 || len > EG_MAX_STRING_FIELD) {
            diag(L, where, "%s must be 1-%d bytes long", o->name, EG_MAX_STRING_FIELD);
            return false;
        }
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)s[k] < 0x20 || s[k] == 0x7F) {
                diag(L, where, "%s must not contain control characters", o->name);
                return false;
            }
        break;
    case EG_OPT_ENUM: {
        bool found = false;
        char list[200] = "";
        for (const char *const *ch = o->choices; ch && *ch; ch++) {
            found |= strlen(*ch) == len && memcmp(*ch, s, len) == 0;
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", *ch);
        }
        if (!found) {
            diag(L, where, "%s must be one of %s, not \"%s\"", o->name, list,
                 show(shown, sizeof shown, s, len));
            return false;
        }
        break;
    }
    case EG_OPT_HOSTPORT: {
        char *spec = eg_strndup(s, len);
        if (!spec) {
            L->oom = true;
            return false;
        }
        int rc = eg_parse_hostport(spec, &addr, &port);
        bool ok = rc == 0 && valid_listen_addr(spec, addr);
        eg_free(spec);
        if (rc == EG_ENOMEM) {
            L->oom = true;
            return false;
        }
        if (!ok) {
            eg_free(addr);
            diag(L, where,
                 "%s must be ADDR:PORT or [IPV6]:PORT with ADDR an IP address or localhost and "
                 "PORT 0-65535, not \"%s\"",
                 o->name, show(shown, sizeof shown, s, len));
            return false;
        }
        break;
    }
    default:
        return false;
    }
    char *copy = eg_strndup(s, len);
    if (!copy) {
        eg_free(addr);
        L->oom = true;
        return false;
    }
    char **f = str_field(L->cfg, o);
    eg_free(*f);
    *f = copy;
    if (o->type == EG_OPT_HOSTPORT) {
        eg_free(L->cfg->listen_addr);
        L->cfg->listen_addr = addr;
        L->cfg->listen_port = port;
    }
    return true;
}

static bool set_int(struct loader *L, size_t i, int64_t v, const char *where)
{
    const struct eg_option *o = &options[i];
    if (v < o->min || v > o->max) {
        diag(L, where, "%s must be an integer between %lld and %lld, not %lld", o->name,
             (long long)o->min, (long long)o->max, (long long)v);
        return false;
    }
    *int_field(L->cfg, o) = v;
    return true;
}

static int parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t k = 0; k < 4; k++) {
        if (strcasecmp(s, yes[k]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(s, no[k]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return EG_EINVAL;
}

/* Record the outcome of offering a value for option i at where. */
static void settle(struct loader *L, size_t i, bool ok, const char *where)
{
    if (ok) {
        L->rejected[i] = false;
        snprintf(L->where[i], WHERE_LEN, "%s", where);
    } else {
        L->rejected[i] = true;
    }
}

/* A value given as text (environment, command line). */
static void apply_text(struct loader *L, size_t i, const char *text, const char *where)
{
    const struct eg_option *o = &options[i];
    char shown[100];
    bool ok = false;

    switch (o->type) {
    case EG_OPT_BOOL: {
        bool b;
        if (parse_bool(text, &b) == 0) {
            *bool_field(L->cfg, o) = b;
            ok = true;
        } else {
            diag(L, where, "%s must be true or false, not \"%s\"", o->name,
                 show(shown, sizeof shown, text, strlen(text)));
        }
        break;
    }
    case EG_OPT_INT: {
        int64_t v = 0;
        int rc = eg_parse_int64(text, o->min, o->max, &v);
        if (rc == 0)
            ok = set_int(L, i, v, where);
        else
            diag(L, where, "%s must be an integer between %lld and %lld, not \"%s\"", o->name,
                 (long long)o->min, (long long)o->max,
                 show(shown, sizeof shown, text, strlen(text)));
        break;
    }
    default:
        ok = set_string(L, i, text, strlen(text), where);
        break;
    }
    settle(L, i, ok, where);
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction or exponent";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* A value from the JSON file. */
static void apply_json(struct loader *L, size_t i, const json_t *v, const char *where)
{
    const struct eg_option *o = &options[i];
    bool ok = false;

    if (o->flags & EG_OPT_CLI_ONLY) {
        diag(L, where,
             "%s cannot be set in the configuration file (only on the command line or in the "
             "environment)",
             o->name);
        L->rejected[i] = true;
        return;
    }
    switch (o->type) {
    case EG_OPT_BOOL:
        if (json_is_boolean(v)) {
            *bool_field(L->cfg, o) = json_is_true(v);
            ok = true;
        } else {
            diag(L, where, "%s must be true or false (a JSON boolean), not %s", o->name,
                 json_kind(v));
        }
        break;
    case EG_OPT_INT:
        if (json_is_integer(v))
            ok = set_int(L, i, (int64_t)json_integer_value(v), where);
        else
            diag(L, where, "%s must be an integer between %lld and %lld, not %s", o->name,
                 (long long)o->min, (long long)o->max, json_kind(v));
        break;
    default:
        if (json_is_string(v)) {
            ok = set_string(L, i, json_string_value(v), json_string_length(v), where);
        } else if (json_is_null(v) && !o->def) {
            char **f = str_field(L->cfg, o);
            eg_freep(f);
            ok = true;
        } else {
            diag(L, where, "%s must be a JSON string%s, not %s", o->name,
                 o->def ? "" : " (or null for unset)", json_kind(v));
        }
        break;
    }
    settle(L, i, ok, where);
}

/* ---- the file -------------------------------------------------------------------------------- */

/* Decode the body of a JSON string literal (between the quotes, already validated by jansson)
 * into out (room for len bytes; decoded text is never longer). Returns the decoded length. */
static size_t decode_json_string(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= len) {
            out[o++] = c;
            continue;
        }
        c = s[++i];
        switch (c) {
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            uint32_t cp = 0;
            size_t k;
            for (k = 0; k < 4 && i + 1 < len; k++) {
                char h = s[++i];
                cp <<= 4;
                if (h >= '0' && h <= '9')
                    cp |= (uint32_t)(h - '0');
                else if (h >= 'a' && h <= 'f')
                    cp |= (uint32_t)(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F')
                    cp |= (uint32_t)(h - 'A' + 10);
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < len && s[i + 1] == '\\' &&
                s[i + 2] == 'u') {
                uint32_t lo = 0;
                size_t j = i + 3;
                for (k = 0; k < 4; k++, j++) {
                    char h = s[j];
                    lo <<= 4;
                    if (h >= '0' && h <= '9')
                        lo |= (uint32_t)(h - '0');
                    else if (h >= 'a' && h <= 'f')
                        lo |= (uint32_t)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F')
                        lo |= (uint32_t)(h - 'A' + 10);
                }
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            /* 6 input bytes (or 12 for a pair) always cover the <= 4 bytes written. */
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | (cp >> 18));
                out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            out[o++] = c;
            break; /* \" \\ \/ */
        }
    }
    return o;
}

/* Apply every top-level member of the parsed file, in document order, each with the line of its
 * key. The scanner walks the text jansson has already accepted, so it only needs to track
 * strings, nesting and newlines. */
static void apply_members(struct loader *L, const char *name, const char *buf, size_t len,
                          const json_t *root)
{
    char *key = NULL;
    char where[WHERE_LEN];
    char shown[100];
    int depth = 0, line = 1;
    bool expect_key = false;
    size_t seen = 0;

    key = eg_malloc(len + 1);
    if (!key) {
        L->oom = true;
        return;
    }
    for (size_t i = 0; i < len && !L->oom; i++) {
        char c = buf[i];
        if (c == '\n') {
            line++;
        } else if (c == '"') {
            size_t start = ++i;
            while (i < len && buf[i] != '"') {
                if (buf[i] == '\\')
                    i++;
                i++;
            }
            if (i > len)
                i = len;
            if (depth != 1 || !expect_key)
                continue;
            expect_key = false;
            size_t klen = decode_json_string(buf + start, i - start, key);
            key[klen] = '\0';
            const json_t *v = json_object_getn(root, key, klen);
            if (!v)
                continue; /* cannot happen for text jansson accepted */
            seen++;
            snprintf(where, sizeof where, "%s:%d", name, line);
            size_t oi = memchr(key, '\0', klen) ? SIZE_MAX : opt_index(key);
            if (oi == SIZE_MAX)
                diag(L, where, "unknown option \"%s\"", show(shown, sizeof shown, key, klen));
            else
                apply_json(L, oi, v, where);
        } else if (c == '{' || c == '[') {
            depth++;
            if (depth == 1)
                expect_key = c == '{';
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = true;
        }
    }
    eg_free(key);
    if (!L->oom && seen != json_object_size(root))
        diag(L, name, "could not locate every option in the file (%zu of %zu)", seen,
             json_object_size(root));
}

static void parse_text(struct loader *L, const char *name, const char *buf, size_t len)
{
    json_error_t jerr;
    json_t *root = NULL;
    char where[WHERE_LEN];

    if (len > EG_MAX_CONFIG_BYTES) {
        L->file_failed = true;
        diag(L, name, "larger than %d bytes", EG_MAX_CONFIG_BYTES);
        return;
    }
    int rc = eg_json_load(buf, len, &root, &jerr);
    if (rc == EG_ENOMEM) {
        L->oom = true;
        return;
    }
    if (rc < 0) {
        L->file_failed = true;
        snprintf(where, sizeof where, "%s:%d", name, jerr.line > 0 ? jerr.line : 1);
        diag(L, where, "invalid JSON at line %d, column %d: %s", jerr.line > 0 ? jerr.line : 1,
             jerr.column > 0 ? jerr.column : 0, jerr.text);
        return;
    }
    if (!json_is_object(root)) {
        L->file_failed = true;
        snprintf(where, sizeof where, "%s:1", name);
        diag(L, where, "the configuration must be a JSON object of option names");
    } else {
        apply_members(L, name, buf, len, root);
    }
    json_decref(root);
}

static void load_file(struct loader *L, const char *path, const char *set_where)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = eg_read_file(path, EG_MAX_CONFIG_BYTES, &buf, &len);
    if (rc == EG_ENOMEM) {
        L->oom = true;
        return;
    }
    if (rc < 0)
        L->file_failed = true;
    if (rc == EG_ELIMIT) {
        diag(L, set_where, "configuration file %s is larger than %d bytes", path,
             EG_MAX_CONFIG_BYTES);
        return;
    }
    if (rc < 0) {
        diag(L, set_where, "cannot read configuration file %s: %s", path, strerror(errno));
        return;
    }
    parse_text(L, path, buf, len);
    eg_free(buf);
}

/* ---- defaults, free -------------------------------------------------------------------------- */

void eg_config_free(struct eg_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < N_OPTS; i++)
        if (is_string_type(options[i].type))
            eg_free(*str_field(c, &options[i]));
    eg_free(c->listen_addr);
    eg_free(c);
}

void eg_config_diags_free(struct eg_config_diags *d)
{
    if (!d)
        return;
    eg_free(d->v);
    d->v = NULL;
    d->n = 0;
}

int eg_config_defaults(struct eg_config **ret)
{
    struct eg_config *c = eg_calloc(1, sizeof *c);
    int rc = 0;
    if (!c)
        return EG_ENOMEM;
    c->action = EG_ACTION_RUN;
    for (size_t i = 0; i < N_OPTS && rc == 0; i++) {
        const struct eg_option *o = &options[i];
        if (!o->def)
            continue;
        switch (o->type) {
        case EG_OPT_BOOL:
            rc = parse_bool(o->def, bool_field(c, o)) < 0 ? EG_EINTERNAL : 0;
            break;
        case EG_OPT_INT:
            rc = eg_parse_int64(o->def, o->min, o->max, int_field(c, o)) < 0 ? EG_EINTERNAL : 0;
            break;
        default:
            if (!(*str_field(c, o) = eg_strdup(o->def)))
                rc = EG_ENOMEM;
            break;
        }
    }
    if (rc == 0) {
        rc = eg_parse_hostport(c->listen, &c->listen_addr, &c->listen_port);
        if (rc == EG_EINVAL)
            rc = EG_EINTERNAL;
    }
    if (rc < 0) {
        eg_config_free(c);
        return rc;
    }
    *ret = c;
    return 0;
}

int eg_config_parse_buffer(struct eg_config *c, const char *name, const char *buf, size_t len,
                           struct eg_config_diags *diags)
{
    struct loader *L = NULL;
    if (!c || !diags || (!buf && len))
        return EG_EINVAL;
    size_t before = diags->n;
    L = eg_calloc(1, sizeof *L);
    if (!L)
        return EG_ENOMEM;
    L->cfg = c;
    L->diags = diags;
    parse_text(L, name ? name : "(buffer)", buf ? buf : "", len);
    int rc = L->oom ? EG_ENOMEM : diags->n > before ? EG_EINVAL : 0;
    eg_free(L);
    return rc;
}

/* ---- environment and command line ------------------------------------------------------------ */

/* Option for an environment variable name after EASGATE_ (upper case only). */
static size_t env_option(const char *name, size_t len)
{
    char low[64];
    if (len == 0 || len >= sizeof low)
        return SIZE_MAX;
    for (size_t k = 0; k < len; k++) {
        char c = name[k];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return SIZE_MAX;
        low[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    low[len] = '\0';
    return opt_index(low);
}

/* Option for a command-line name (dashes), or SIZE_MAX. */
static size_t cli_option(const char *name, size_t len)
{
    char us[64];
    if (len == 0 || len >= sizeof us)
        return SIZE_MAX;
    for (size_t k = 0; k < len; k++) {
        if (name[k] == '_')
            return SIZE_MAX; /* the command line spells names with dashes only */
        us[k] = name[k] == '-' ? '_' : name[k];
    }
    us[len] = '\0';
    return opt_index(us);
}

static void apply_env(struct loader *L, char *const envp[])
{
    char where[WHERE_LEN];
    size_t plen = strlen(ENV_PREFIX);
    for (size_t k = 0; envp && envp[k]; k++) {
        const char *e = envp[k];
        if (strncmp(e, ENV_PREFIX, plen) != 0)
            continue;
        const char *eq = strchr(e, '=');
        size_t nlen = eq ? (size_t)(eq - e) : strlen(e);
        snprintf(where, sizeof where, "environment %.*s", (int)(nlen > 200 ? 200 : nlen), e);
        size_t oi = env_option(e + plen, nlen - plen);
        if (oi == SIZE_MAX) {
            diag(L, where, "unknown variable (easgate --help lists the EASGATE_* names)");
            continue;
        }
        apply_text(L, oi, eq ? eq + 1 : "", where);
    }
}

/* What the command line asks for, before anything is applied. */
struct cli {
    bool help, version;
    const char *check_file;  /* --check-config FILE */
    const char *config_file; /* last --config */
    const char *config_where;
};

/* Walk argv. With apply=false only note the special arguments and the config file; with
 * apply=true put every option in force and report every problem. */
static void walk_cli(struct loader *L, int argc, char *const argv[], bool apply, struct cli *cli)
{
    char where[WHERE_LEN];
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        if (!a)
            break;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli->help = true;
            continue;
        }
        if (strcmp(a, "--version") == 0) {
            cli->version = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (apply)
                diag(L, "command line", "unexpected argument \"%.200s\" (options start with --)",
                     a);
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        snprintf(where, sizeof where, "command line --%.*s", (int)(nlen > 200 ? 200 : nlen), name);
        const char *value = eq ? eq + 1 : NULL;
        bool consumed_next = false;

        if (nlen == strlen("check-config") && strncmp(name, "check-config", nlen) == 0) {
            if (!value && k + 1 < argc && strncmp(argv[k + 1], "--", 2) != 0) {
                value = argv[++k];
            }
            if (!value || !*value) {
                if (apply)
                    diag(L, where, "needs the FILE to check");
                continue;
            }
            cli->check_file = value;
            continue;
        }
        size_t oi = cli_option(name, nlen);
        bool negate = false;
        if (oi == SIZE_MAX && nlen > 3 && strncmp(name, "no-", 3) == 0) {
            size_t base = cli_option(name + 3, nlen - 3);
            if (base != SIZE_MAX && options[base].type == EG_OPT_BOOL) {
                oi = base;
                negate = true;
            }
        }
        if (oi == SIZE_MAX) {
            if (apply)
                diag(L, where, "unknown option (easgate --help lists them)");
            continue;
        }
        const struct eg_option *o = &options[oi];
        if (o->type == EG_OPT_BOOL) {
            if (negate && value) {
                if (apply)
                    diag(L, where, "takes no value");
                continue;
            }
            if (!value)
                value = negate ? "false" : "true";
        } else if (!value) {
            if (k + 1 < argc && argv[k + 1] && strncmp(argv[k + 1], "--", 2) != 0) {
                value = argv[k + 1];
                consumed_next = true;
            } else {
                if (apply)
                    diag(L, where, "needs a value (--%.*s VALUE or --%.*s=VALUE)",
                         (int)(nlen > 200 ? 200 : nlen), name, (int)(nlen > 200 ? 200 : nlen),
                         name);
                continue;
            }
        }
        if (consumed_next)
            k++;
        if (oi == opt_index("config")) {
            cli->config_file = value;
            cli->config_where = "command line --config";
        }
        if (apply)
            apply_text(L, oi, value, where);
    }
}

/* ---- cross-field rules ----------------------------------------------------------------------- */

static bool usable(const struct loader *L, size_t i)
{
    return !L->rejected[i];
}

static void check_readable(struct loader *L, size_t i)
{
    const struct eg_option *o = &options[i];
    const char *path = *str_field(L->cfg, o);
    char shown[100];
    struct stat st;
    if (!path || !usable(L, i))
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        diag(L, loc(L, i), "%s %s cannot be read: %s", o->name,
             show(shown, sizeof shown, path, strlen(path)), strerror(errno));
        return;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        diag(L, loc(L, i), "%s %s is a directory, not a file", o->name,
             show(shown, sizeof shown, path, strlen(path)));
    close(fd);
}

static void cross_checks(struct loader *L)
{
    struct eg_config *c = L->cfg;
    const size_t i_listen = opt_index("listen"), i_plain = opt_index("plain_http"),
                 i_any = opt_index("plain_http_any_address"), i_noauth = opt_index("no_auth"),
                 i_cert = opt_index("tls_cert"), i_key = opt_index("tls_key"),
                 i_ca = opt_index("client_ca"), i_token = opt_index("token_file"),
                 i_base = opt_index("retry_base_ms"), i_max = opt_index("retry_max_ms");
    bool listen_ok = usable(L, i_listen);
    bool loopback = eg_is_loopback(c->listen_addr);

    if (usable(L, i_plain) && !c->plain_http) {
        /* HTTPS: both halves of the TLS material are needed. Blame an explicit plain_http=false
         * first, else the half that was given. */
        if (!c->tls_cert && usable(L, i_cert))
            diag(L, loc(L, L->where[i_plain][0] ? i_plain : i_key),
                 "tls_cert is required for HTTPS (set tls_cert and tls_key, or plain_http on a "
                 "loopback address for testing)");
        if (!c->tls_key && usable(L, i_key))
            diag(L, loc(L, L->where[i_plain][0] ? i_plain : i_cert),
                 "tls_key is required for HTTPS (the private key of tls_cert)");
    }
    if (usable(L, i_plain) && c->plain_http && c->client_ca && usable(L, i_ca))
        diag(L, loc(L, i_ca),
             "client_ca needs HTTPS: client certificates cannot be checked with plain_http");
    if (usable(L, i_plain) && c->plain_http && listen_ok && !loopback && usable(L, i_any) &&
        !c->plain_http_any_address)
        diag(L, loc(L, i_plain),
             "plain HTTP (plain_http) is refused on the non-loopback address %s: use HTTPS, a "
             "loopback listen address, or set plain_http_any_address",
             c->listen_addr);
    if (usable(L, i_noauth) && !c->no_auth && usable(L, i_ca) && usable(L, i_token) &&
        !c->client_ca && !c->token_file)
        diag(L, loc(L, i_noauth),
             "no console authentication configured: set client_ca and/or token_file (or no_auth, "
             "loopback address only)");
    if (usable(L, i_noauth) && c->no_auth && listen_ok && !loopback)
        diag(L, loc(L, i_noauth), "no_auth is only allowed on a loopback listen address, not %s",
             c->listen_addr);
    if (usable(L, i_base) && usable(L, i_max) && c->retry_base_ms > c->retry_max_ms)
        diag(L, loc(L, L->where[i_base][0] ? i_base : i_max),
             "retry_base_ms (%lld) must not exceed retry_max_ms (%lld)",
             (long long)c->retry_base_ms, (long long)c->retry_max_ms);

    const size_t i_bridge = opt_index("bridge"), i_url = opt_index("exchange_url"),
                 i_user = opt_index("exchange_user"), i_pw = opt_index("exchange_password_file"),
                 i_xca = opt_index("exchange_ca");
    if (usable(L, i_bridge) && c->bridge && strcmp(c->bridge, "psrp") == 0) {
        if (!c->exchange_url && usable(L, i_url))
            diag(L, loc(L, i_bridge),
                 "bridge psrp needs exchange_url (http(s)://server/PowerShell)");
        if (c->exchange_url && usable(L, i_url) && strncmp(c->exchange_url, "https://", 8) != 0 &&
            strncmp(c->exchange_url, "http://", 7) != 0)
            diag(L, loc(L, i_url), "exchange_url must start with https:// or http://");
        if ((!c->exchange_user && usable(L, i_user)) ||
            (!c->exchange_password_file && usable(L, i_pw)))
            diag(L, loc(L, i_bridge),
                 "bridge psrp needs exchange_user and exchange_password_file (Basic)");
    }
    check_readable(L, i_pw);
    check_readable(L, i_xca);
    check_readable(L, i_cert);
    check_readable(L, i_key);
    check_readable(L, i_ca);
    check_readable(L, i_token);
}

/* ---- load ------------------------------------------------------------------------------------ */

int eg_config_load(int argc, char *const argv[], char *const envp[], struct eg_config **ret,
                   struct eg_config_diags *diags)
{
    struct loader *L = NULL;
    struct eg_config *c = NULL;
    struct cli cli = {0};
    int rc = 0;

    diags->v = NULL;
    diags->n = 0;
    if ((rc = eg_config_defaults(&c)) < 0)
        return rc;
    L = eg_calloc(1, sizeof *L);
    if (!L) {
        rc = EG_ENOMEM;
        goto out;
    }
    L->cfg = c;
    L->diags = diags;

    /* Which file, and what is asked: known before any layer is applied. */
    walk_cli(L, argc, argv, false, &cli);
    c->action = cli.help         ? EG_ACTION_HELP
                : cli.version    ? EG_ACTION_VERSION
                : cli.check_file ? EG_ACTION_CHECK
                                 : EG_ACTION_RUN;
    if (c->action == EG_ACTION_HELP || c->action == EG_ACTION_VERSION)
        goto done;

    const char *file = NULL, *file_where = NULL;
    for (size_t k = 0; envp && envp[k]; k++)
        if (strncmp(envp[k], ENV_PREFIX "CONFIG=", strlen(ENV_PREFIX "CONFIG=")) == 0) {
            file = envp[k] + strlen(ENV_PREFIX "CONFIG=");
            file_where = "environment " ENV_PREFIX "CONFIG";
        }
    if (cli.config_file)
        file = cli.config_file, file_where = cli.config_where;
    if (cli.check_file)
        file = cli.check_file, file_where = "command line --check-config";

    if (file && *file)
        load_file(L, file, file_where);
    apply_env(L, envp);
    walk_cli(L, argc, argv, true, &cli);
    if (cli.check_file && !L->oom) {
        size_t i = opt_index("config");
        L->rejected[i] = false;
        set_string(L, i, cli.check_file, strlen(cli.check_file), "command line --check-config");
    }
    /* Cross-field rules on a configuration whose file could not be used would only add noise. */
    if (!L->oom && !L->file_failed)
        cross_checks(L);

done:
    if (L->oom) {
        rc = EG_ENOMEM;
        goto out;
    }
    *ret = c;
    c = NULL;
    rc = diags->n ? EG_EINVAL : 0;
out:
    if (rc == EG_ENOMEM)
        eg_config_diags_free(diags);
    eg_config_free(c);
    eg_free(L);
    return rc;
}

/* ---- usage ----------------------------------------------------------------------------------- */

static void dashed(char *out, size_t size, const char *name)
{
    size_t k = 0;
    for (; name[k] && k + 1 < size; k++)
        out[k] = name[k] == '_' ? '-' : name[k];
    out[k] = '\0';
}

void eg_config_usage(FILE *out, const char *argv0)
{
    const char *prog = argv0 && *argv0 ? argv0 : "easgate";
    fprintf(out,
            "Usage: %s [OPTION...]\n"
            "       %s --check-config FILE   check a configuration (every problem, with its "
            "line)\n"
            "       %s --help | --version\n\n"
            "Every option can be set in the JSON configuration file (key NAME), in the "
            "environment\n"
            "(EASGATE_NAME) and on the command line (--name-with-dashes VALUE or --name=VALUE;\n"
            "booleans also bare or as --no-NAME). Later wins: defaults < file < environment <\n"
            "command line.\n\nOptions:\n",
            prog, prog, prog);
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct eg_option *o = &options[i];
        char d[64], env[80], arg[240] = "";
        dashed(d, sizeof d, o->name);
        snprintf(env, sizeof env, ENV_PREFIX "%s", o->name);
        for (char *p = env; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 'a' + 'A');
        switch (o->type) {
        case EG_OPT_BOOL:
            snprintf(arg, sizeof arg, "--[no-]%s", d);
            break;
        case EG_OPT_INT:
            snprintf(arg, sizeof arg, "--%s N (%lld..%lld)", d, (long long)o->min,
                     (long long)o->max);
            break;
        case EG_OPT_PATH:
            snprintf(arg, sizeof arg, "--%s PATH", d);
            break;
        case EG_OPT_HOSTPORT:
            snprintf(arg, sizeof arg, "--%s ADDR:PORT", d);
            break;
        case EG_OPT_ENUM: {
            size_t l = (size_t)snprintf(arg, sizeof arg, "--%s ", d);
            for (const char *const *ch = o->choices; ch && *ch && l < sizeof arg; ch++) {
                l += (size_t)snprintf(arg + l, sizeof arg - l, "%s%s", ch == o->choices ? "" : "|",
                                      *ch);
            }
            break;
        }
        default:
            snprintf(arg, sizeof arg, "--%s TEXT", d);
            break;
        }
        if (o->flags & EG_OPT_CLI_ONLY)
            fprintf(out, "  %s\n      %s\n      not in the file, env %s, default: %s\n", arg,
                    o->help, env, o->def ? o->def : "unset");
        else
            fprintf(out, "  %s\n      %s\n      file key \"%s\", env %s, default: %s\n", arg,
                    o->help, o->name, env, o->def ? o->def : "unset");
    }
}

/* ---- token ----------------------------------------------------------------------------------- */

/* "Printable ASCII" is taken as the visible characters 0x21..0x7E: a space or tab would not
 * survive an Authorization header. On every error the buffer is wiped before it is freed. */

int eg_config_read_token(const struct eg_config *c, char **ret)
{
    char *buf = NULL;
    size_t len = 0, raw = 0;
    int rc;

    if (!c || !c->token_file || !ret)
        return EG_EINVAL;
    rc = eg_read_file(c->token_file, EG_MAX_TOKEN_BYTES + 2, &buf, &len);
    if (rc < 0)
        return rc;
    raw = len;
    if (len && buf[len - 1] == '\n')
        len--;
    if (len && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (len > EG_MAX_TOKEN_BYTES) {
        rc = EG_ELIMIT;
    } else if (len < EG_MIN_TOKEN_BYTES) {
        rc = EG_EINVAL;
    } else {
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)buf[k] <= 0x20 || (unsigned char)buf[k] >= 0x7F) {
                rc = EG_EINVAL;
                break;
            }
    }
    if (rc < 0) {
        eg_memzero(buf, raw);
        eg_free(buf);
        return rc;
    }
    *ret = buf;
    return 0;
}
