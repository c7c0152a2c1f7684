/* target_config.c - the runtime Exchange target document: strict validation with JSON-path
 * errors, redaction for GET, and persistence with sealed secrets (see target_config.h). */
#include "agent/target_config.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/json.h"
#include "common/util.h"
#include "exchange/psrp_pool.h"

#define FORMAT_VERSION 1

/* How a document is read: from the console (plaintext secrets) or from the state file (sealed
 * secrets, plus bookkeeping members). */
struct mode {
    bool stored;
    const struct eg_secretbox *box;
};

static const char *const kind_names[] = {"onprem", "online", "dryrun"};

const char *eg_target_kind_name(enum eg_target_kind k)
{
    if ((unsigned)k >= sizeof kind_names / sizeof kind_names[0])
        return "?";
    return kind_names[k];
}

/* ---- errors --------------------------------------------------------------------------------- */

static int verr(struct eg_verr *err, int code, const char *path, const char *name, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));
static int verr(struct eg_verr *err, int code, const char *path, const char *name, const char *fmt,
                ...)
{
    va_list ap;
    if (!path)
        path = "";
    if (!name || !*name)
        snprintf(err->field, sizeof err->field, "%s", path);
    else if (!*path)
        snprintf(err->field, sizeof err->field, "%s", name);
    else
        snprintf(err->field, sizeof err->field, "%s.%s", path, name);
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    return code;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* ---- members of each object ----------------------------------------------------------------- */

static const char *const root_members[] = {"target", "schedule", "inventory",
                                           "upload", "retry",    NULL};
static const char *const stored_root_members[] = {"format", "revision", "updated_ms", NULL};
static const char *const readonly_members[] = {"revision", "updated_at", "password_set",
                                               "private_key_set", NULL};
static const char *const common_members[] = {"kind",
                                             "max_concurrency",
                                             "scheduling",
                                             "dead_threshold",
                                             "failure_window_ms",
                                             "dead_time_ms",
                                             "health_interval_s",
                                             "live_threshold",
                                             "connect_timeout_ms",
                                             "io_timeout_ms",
                                             "response_timeout_ms",
                                             NULL};
static const char *const onprem_members[] = {
    "servers", "auth",     "username", "principal",          "password",         "keytab",
    "ca_pem",  "insecure", "version",  "commands_per_shell", "allow_http_basic", NULL};
static const char *const online_members[] = {
    "tenant",    "app_id", "certificate", "private_key", "api_url",
    "token_url", "ca_pem", "insecure",    "allow_http",  NULL};
static const char *const dryrun_members[] = {"latency_ms", NULL};
static const char *const *const kind_members[] = {onprem_members, online_members, dryrun_members};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

static bool is_secret_name(const char *s)
{
    return strcmp(s, "password") == 0 || strcmp(s, "private_key") == 0;
}

/* The member name a key stands for: in the state file "password_sealed" is "password". */
static bool member_name(const struct mode *m, const char *key, char *out, size_t cap)
{
    size_t n = strlen(key), sl = strlen("_sealed");
    if (m->stored && n > sl && strcmp(key + n - sl, "_sealed") == 0 && n - sl < cap) {
        memcpy(out, key, n - sl);
        out[n - sl] = '\0';
        return is_secret_name(out);
    }
    if (m->stored && is_secret_name(key))
        return false; /* a plaintext secret in the state file */
    snprintf(out, cap, "%s", key);
    return true;
}

/* Refuse unknown members of a plain object (schedule, upload, retry, a server). */
static int check_plain_members(const json_t *obj, const char *path, const char *const *allowed,
                               struct eg_verr *err)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (!in_list(allowed, key))
            return verr(err, EG_EINVAL, path, key, "unknown field");
    }
    return 0;
}

/* Refuse members of the target object that do not belong to its kind. */
static int check_target_members(const json_t *t, const struct mode *m, enum eg_target_kind kind,
                                struct eg_verr *err)
{
    const char *key;
    json_t *val;
    char name[64];
    json_object_foreach((json_t *)t, key, val)
    {
        if (!member_name(m, key, name, sizeof name))
            return verr(err, EG_EINVAL, "target", key,
                        "unknown field (the state file holds secrets only sealed, as "
                        "<name>_sealed)");
        if (in_list(common_members, name) || in_list(kind_members[kind], name))
            continue;
        if (!m->stored && in_list(readonly_members, name))
            return verr(err, EG_EINVAL, "target", key,
                        "is read-only (GET shows it); leave it out of a PUT");
        for (int k = 0; k < 3; k++)
            if (k != (int)kind && in_list(kind_members[k], name))
                return verr(err, EG_EINVAL, "target", key,
                            "is not a field of an %s target (it belongs to kind \"%s\")",
                            kind_names[kind], kind_names[k]);
        return verr(err, EG_EINVAL, "target", key, "unknown field");
    }
    return 0;
}

/* ---- typed getters -------------------------------------------------------------------------- */

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7F)
            return true;
    return false;
}

/* A string member. Absent: *ret = NULL, or "is required". Empty strings are refused. */
static int get_str(const json_t *obj, const char *path, const char *name, size_t max, bool required,
                   const char **ret, struct eg_verr *err)
{
    const json_t *v = json_object_get(obj, name);
    *ret = NULL;
    if (!v) {
        if (required)
            return verr(err, EG_EINVAL, path, name, "is required");
        return 0;
    }
    if (!json_is_string(v))
        return verr(err, EG_EINVAL, path, name, "must be a string, not %s", json_type_name(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return verr(err, EG_EINVAL, path, name, "must not contain NUL characters");
    if (len > max)
        return verr(err, EG_ELIMIT, path, name, "is %zu bytes long; at most %zu are allowed", len,
                    max);
    if (len == 0)
        return verr(err, EG_EINVAL, path, name, "must not be empty");
    *ret = s;
    return 0;
}

/* A single-line string member (no control characters), copied. */
static int take_line(const json_t *obj, const char *path, const char *name, size_t max,
                     bool required, char **ret, struct eg_verr *err)
{
    const char *s = NULL;
    int rc = get_str(obj, path, name, max, required, &s, err);
    if (rc < 0 || !s)
        return rc;
    if (has_control(s))
        return verr(err, EG_EINVAL, path, name, "must not contain control characters");
    if (!(*ret = eg_strdup(s)))
        return EG_ENOMEM;
    return 0;
}

static int get_int(const json_t *obj, const char *path, const char *name, int64_t min, int64_t max,
                   int64_t def, const char *unit, int64_t *ret, struct eg_verr *err)
{
    const json_t *v = json_object_get(obj, name);
    if (!v) {
        *ret = def;
        return 0;
    }
    if (!json_is_integer(v))
        return verr(err, EG_EINVAL, path, name, "must be an integer, not %s",
                    json_is_real(v) ? "a fractional number" : json_type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return verr(err, EG_EINVAL, path, name, "is %lld; it must be between %lld and %lld%s%s",
                    (long long)x, (long long)min, (long long)max, unit ? " " : "",
                    unit ? unit : "");
    *ret = (int64_t)x;
    return 0;
}

static int get_bool(const json_t *obj, const char *path, const char *name, bool def, bool *ret,
                    struct eg_verr *err)
{
    const json_t *v = json_object_get(obj, name);
    if (!v) {
        *ret = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return verr(err, EG_EINVAL, path, name, "must be true or false, not %s", json_type_name(v));
    *ret = json_is_true(v);
    return 0;
}

/* An optional object member; absent -> *ret NULL. */
static int get_object(const json_t *obj, const char *path, const char *name, bool required,
                      const json_t **ret, struct eg_verr *err)
{
    const json_t *v = json_object_get(obj, name);
    *ret = NULL;
    if (!v) {
        if (required)
            return verr(err, EG_EINVAL, path, name, "is required");
        return 0;
    }
    if (!json_is_object(v))
        return verr(err, EG_EINVAL, path, name, "must be an object, not %s", json_type_name(v));
    *ret = v;
    return 0;
}

/* A write-only secret: "name" from the console, "name_sealed" (opened with the key) from the
 * state file. *ret stays NULL when absent. */
static int take_secret(const json_t *t, const struct mode *m, const char *name, size_t max,
                       bool multiline, char **ret, struct eg_verr *err)
{
    char key[64], aad[80];
    const char *s = NULL;
    char *plain = NULL;
    int rc;

    snprintf(key, sizeof key, "%s%s", name, m->stored ? "_sealed" : "");
    if (!m->stored) {
        rc = get_str(t, "target", key, max, false, &s, err);
        if (rc < 0 || !s)
            return rc;
        if (!multiline && has_control(s))
            return verr(err, EG_EINVAL, "target", key, "must not contain control characters");
        if (!(*ret = eg_strdup(s)))
            return EG_ENOMEM;
        return 0;
    }
    rc = get_str(t, "target", key, eg_base64_encoded_len(EG_MAX_SECRET_BYTES + 64) + 8, false, &s,
                 err);
    if (rc < 0 || !s)
        return rc;
    snprintf(aad, sizeof aad, "target.%s", name);
    rc = eg_secretbox_open(m->box, aad, s, &plain);
    switch (rc) {
    case 0:
        break;
    case EG_ENOMEM:
        return rc;
    case EG_EAUTH:
        return verr(err, EG_EAUTH, "target", key,
                    "does not decrypt with the key file %s: another key, or the stored value "
                    "was altered",
                    eg_secretbox_path(m->box));
    default:
        return verr(err, EG_EPARSE, "target", key, "is not a sealed secret (\"%s...\")",
                    EG_SECRETBOX_PREFIX);
    }
    if (strlen(plain) > max || (!multiline && has_control(plain))) {
        eg_secret_free(plain);
        return verr(err, EG_EINVAL, "target", key, "holds a secret that is not valid here");
    }
    *ret = plain;
    return 0;
}

/* ---- value checks --------------------------------------------------------------------------- */

struct url_parts {
    bool https;
    char host[256];
};

/* http(s)://host[:port][/path...]; no credentials, no spaces or control characters. */
static int check_url(const char *url, const char *path, const char *name, struct url_parts *u,
                     struct eg_verr *err)
{
    const char *p;
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, "https://", 8) == 0) {
        u->https = true;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        return verr(err, EG_EINVAL, path, name, "must be an http:// or https:// URL");
    }
    for (const unsigned char *q = (const unsigned char *)url; *q; q++)
        if (*q <= 0x20 || *q >= 0x7F || strchr("\"<>\\^`{|}", *q))
            return verr(err, EG_EINVAL, path, name,
                        "must be a URL of printable ASCII without spaces, quotes, <>, \\, ^, `, "
                        "{, | or }");
    size_t alen = strcspn(p, "/?#");
    if (memchr(p, '@', alen))
        return verr(err, EG_EINVAL, path, name,
                    "must not carry credentials (user@ or user:password@); give them as "
                    "separate fields");
    const char *hend, *h = p;
    size_t hlen;
    if (*h == '[') {
        hend = memchr(h, ']', alen);
        if (!hend)
            return verr(err, EG_EINVAL, path, name, "has an IPv6 address without its ']'");
        h++;
        hlen = (size_t)(hend - h);
        hend++;
    } else {
        hend = memchr(h, ':', alen);
        if (!hend)
            hend = p + alen;
        hlen = (size_t)(hend - h);
    }
    if (hlen == 0 || hlen >= sizeof u->host)
        return verr(err, EG_EINVAL, path, name, "must name a host");
    for (size_t i = 0; i < hlen; i++) {
        char c = h[i];
        bool v6 = *p == '[';
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || (v6 && c == ':')))
            return verr(err, EG_EINVAL, path, name,
                        "has a host that is not a DNS name or an IP address");
    }
    memcpy(u->host, h, hlen);
    u->host[hlen] = '\0';
    if (hend < p + alen) {
        if (*hend != ':')
            return verr(err, EG_EINVAL, path, name, "has garbage after the host");
        char port[8];
        size_t plen = (size_t)(p + alen - hend - 1);
        int64_t pv = 0;
        if (plen == 0 || plen >= sizeof port)
            return verr(err, EG_EINVAL, path, name, "has an invalid port");
        memcpy(port, hend + 1, plen);
        port[plen] = '\0';
        if (port[0] < '0' || port[0] > '9' || eg_parse_int64(port, 1, 65535, &pv) < 0)
            return verr(err, EG_EINVAL, path, name, "has a port that is not 1-65535");
    }
    return 0;
}

/* Number of "-----BEGIN " lines of a PEM text. */
static size_t pem_blocks(const char *pem)
{
    size_t n = 0;
    for (const char *p = pem; (p = strstr(p, "-----BEGIN ")); p += 11)
        n++;
    return n;
}

/* A PEM text of certificates only (at least one). *ret_first (may be NULL) gets the first. */
static int check_certs(const char *pem, const char *path, const char *name, X509 **ret_first,
                       struct eg_verr *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
    X509 *x = NULL, *first = NULL;
    size_t n = 0;
    if (!bio)
        return EG_ENOMEM;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        if (!first)
            first = x;
        else
            X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    size_t blocks = pem_blocks(pem);
    if (n == 0 || n != blocks) {
        X509_free(first);
        if (n == 0)
            return verr(err, EG_EINVAL, path, name,
                        "must be PEM text of one or more certificates (-----BEGIN "
                        "CERTIFICATE-----)");
        return verr(err, EG_EINVAL, path, name,
                    "holds %zu PEM blocks of which only %zu are certificates; it may hold "
                    "certificates only",
                    blocks, n);
    }
    if (ret_first)
        *ret_first = first;
    else
        X509_free(first);
    return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

/* An unencrypted PEM private key matching cert. The error never contains key bytes. */
static int check_key(const char *pem, X509 *cert, struct eg_verr *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
    EVP_PKEY *key = NULL;
    int rc = 0;
    if (!bio)
        return EG_ENOMEM;
    key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!key)
        return verr(err, EG_EINVAL, "target", "private_key",
                    "must be an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)");
    if (pem_blocks(pem) != 1)
        rc = verr(err, EG_EINVAL, "target", "private_key", "must hold exactly one PEM block");
    else if (cert && X509_check_private_key(cert, key) != 1)
        rc = verr(err, EG_EINVAL, "target", "private_key", "does not belong to target.certificate");
    ERR_clear_error();
    EVP_PKEY_free(key);
    return rc;
}

/* Tenant: a GUID or a domain name (contoso.onmicrosoft.com); it goes into URL paths. */
static bool valid_tenant(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return false;
        if (c == '.' && s[i + 1] == '.')
            return false;
    }
    return true;
}

static bool valid_guid(const char *s)
{
    static const int groups[] = {8, 4, 4, 4, 12};
    const char *p = s;
    for (int g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
                return false;
        if (g < 4 && *p++ != '-')
            return false;
    }
    return *p == '\0';
}

/* An account name for Basic: no ':' (RFC 7617). */
static bool valid_username(const char *s)
{
    return !strchr(s, ':');
}

/* ---- the document --------------------------------------------------------------------------- */

const char *eg_target_auth_name(enum eg_target_auth a)
{
    switch (a) {
    case EG_TARGET_AUTH_BASIC:
        return "basic";
    case EG_TARGET_AUTH_NEGOTIATE:
        return "negotiate";
    case EG_TARGET_AUTH_KERBEROS:
        return "kerberos";
    case EG_TARGET_AUTH_NTLM:
        return "ntlm";
    }
    return "basic";
}

bool eg_target_config_uses_gss(const struct eg_target_config *c)
{
    if (!c || c->kind != EG_TARGET_ONPREM)
        return false;
    return c->auth == EG_TARGET_AUTH_KERBEROS || c->auth == EG_TARGET_AUTH_NTLM ||
           (c->auth == EG_TARGET_AUTH_NEGOTIATE && c->username && (c->password || c->keytab));
}

void eg_target_config_free(struct eg_target_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_servers; i++)
        eg_free(c->servers[i]);
    eg_free(c->username);
    eg_secret_free(c->password);
    eg_free(c->keytab);
    eg_free(c->version);
    eg_free(c->tenant);
    eg_free(c->app_id);
    eg_free(c->certificate);
    eg_secret_free(c->private_key);
    eg_free(c->api_url);
    eg_free(c->token_url);
    eg_free(c->ca_pem);
    eg_free(c->upload_url);
    eg_secret_free(c->upload_hmac_key);
    eg_free(c);
}

static bool same_str(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* ca_pem / insecure, shared by onprem and online. */
static int parse_trust(const json_t *t, struct eg_target_config *c, struct eg_verr *err)
{
    int rc;
    if ((rc = get_bool(t, "target", "insecure", false, &c->insecure, err)) < 0)
        return rc;
    const char *pem = NULL;
    if ((rc = get_str(t, "target", "ca_pem", EG_MAX_PEM_BYTES, false, &pem, err)) < 0)
        return rc;
    if (!pem)
        return 0;
    if (c->insecure)
        return verr(err, EG_EINVAL, "target", "insecure",
                    "cannot be combined with ca_pem: either verify against ca_pem or not at all");
    if ((rc = check_certs(pem, "target", "ca_pem", NULL, err)) < 0)
        return rc;
    if (!(c->ca_pem = eg_strdup(pem)))
        return EG_ENOMEM;
    return 0;
}

static int parse_onprem(const json_t *t, const struct mode *m, const struct eg_target_config *prev,
                        struct eg_target_config *c, struct eg_verr *err)
{
    const json_t *servers = json_object_get(t, "servers");
    const char *s = NULL;
    struct url_parts u[EG_MAX_SERVERS_PER_TARGET];
    char path[48];
    int rc;

    if (!servers)
        return verr(err, EG_EINVAL, "target", "servers", "is required for an onprem target");
    if (!json_is_array(servers))
        return verr(err, EG_EINVAL, "target", "servers",
                    "must be an array of {\"url\": ...} objects, not %s", json_type_name(servers));
    size_t n = json_array_size(servers);
    if (n == 0)
        return verr(err, EG_EINVAL, "target", "servers", "must list at least one server");
    if (n > EG_MAX_SERVERS_PER_TARGET)
        return verr(err, EG_ELIMIT, "target", "servers",
                    "lists %zu servers; at most %d are allowed", n, EG_MAX_SERVERS_PER_TARGET);
    for (size_t i = 0; i < n; i++) {
        const json_t *sv = json_array_get(servers, i);
        snprintf(path, sizeof path, "target.servers[%zu]", i);
        if (!json_is_object(sv))
            return verr(err, EG_EINVAL, path, NULL, "must be an object {\"url\": ...}, not %s",
                        json_type_name(sv));
        static const char *const server_members[] = {"url", NULL};
        if ((rc = check_plain_members(sv, path, server_members, err)) < 0)
            return rc;
        if ((rc = get_str(sv, path, "url", EG_MAX_URL_LEN, true, &s, err)) < 0)
            return rc;
        if ((rc = check_url(s, path, "url", &u[i], err)) < 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(s, c->servers[j]) == 0)
                return verr(err, EG_EINVAL, path, "url", "duplicate of target.servers[%zu].url", j);
        if (!(c->servers[i] = eg_strdup(s)))
            return EG_ENOMEM;
        c->n_servers = i + 1;
    }

    if ((rc = get_str(t, "target", "auth", 16, false, &s, err)) < 0)
        return rc;
    if (!s || strcmp(s, "basic") == 0)
        c->auth = EG_TARGET_AUTH_BASIC;
    else if (strcmp(s, "negotiate") == 0)
        c->auth = EG_TARGET_AUTH_NEGOTIATE;
    else if (strcmp(s, "kerberos") == 0)
        c->auth = EG_TARGET_AUTH_KERBEROS;
    else if (strcmp(s, "ntlm") == 0)
        c->auth = EG_TARGET_AUTH_NTLM;
    else
        return verr(err, EG_EINVAL, "target", "auth",
                    "must be \"basic\", \"negotiate\", \"kerberos\" or \"ntlm\"");
    bool basic = c->auth == EG_TARGET_AUTH_BASIC;

    /* the account: "username", or "principal" (the same thing under its Kerberos name) */
    char *principal = NULL;
    if ((rc = take_line(t, "target", "username", EG_MAX_USERNAME_LEN, false, &c->username, err)) <
        0)
        return rc;
    if ((rc = take_line(t, "target", "principal", EG_MAX_USERNAME_LEN, false, &principal, err)) < 0)
        return rc;
    if (principal && c->username && strcmp(principal, c->username) != 0) {
        eg_free(principal);
        return verr(err, EG_EINVAL, "target", "principal",
                    "differs from target.username; give the account once");
    }
    if (principal) {
        eg_free(c->username);
        c->username = principal;
    }
    if (basic && !c->username)
        return verr(err, EG_EINVAL, "target", "username", "is required");
    if (c->username && basic && !valid_username(c->username))
        return verr(err, EG_EINVAL, "target", "username",
                    "must not contain ':' (Basic authentication cannot carry it)");
    if ((rc = take_line(t, "target", "keytab", EG_MAX_PATH_LEN, false, &c->keytab, err)) < 0)
        return rc;
    if (c->keytab) {
        if (c->auth != EG_TARGET_AUTH_KERBEROS && c->auth != EG_TARGET_AUTH_NEGOTIATE)
            return verr(err, EG_EINVAL, "target", "keytab",
                        "is only for Kerberos (auth \"kerberos\" or \"negotiate\"); %s takes a "
                        "password",
                        basic ? "Basic" : "NTLM");
        if (c->keytab[0] != '/')
            return verr(err, EG_EINVAL, "target", "keytab", "must be an absolute path");
        if (!m->stored && access(c->keytab, R_OK) != 0)
            return verr(err, EG_EINVAL, "target", "keytab", "cannot be read by the agent: %s",
                        strerror(errno));
    }
    if ((rc = take_secret(t, m, "password", EG_MAX_PASSWORD_LEN, false, &c->password, err)) < 0)
        return rc;
    if (c->password && c->keytab)
        return verr(err, EG_EINVAL, "target", "password",
                    "and target.keytab exclude each other: give one of them");
    if (!c->password && !c->keytab && prev && prev->kind == EG_TARGET_ONPREM && prev->password &&
        (same_str(prev->username, c->username) || (!prev->username && !c->username))) {
        if (!(c->password = eg_strdup(prev->password)))
            return EG_ENOMEM;
    }
    if (!c->password && basic)
        return verr(err, EG_EINVAL, "target", "password",
                    "is required (a stored password is kept only while the kind and the "
                    "username stay the same)");
    /* negotiate without an account: libcurl's SPNEGO with the process's own Kerberos tickets
     * (KRB5CCNAME), https only; with an account: our GSSAPI path, like kerberos and ntlm */
    if (c->auth == EG_TARGET_AUTH_NEGOTIATE && !c->username && (c->password || c->keytab))
        return verr(err, EG_EINVAL, "target", "username",
                    "is required with a password or keytab (the Kerberos principal or NTLM "
                    "DOMAIN\\user)");
    if ((c->auth == EG_TARGET_AUTH_KERBEROS || c->auth == EG_TARGET_AUTH_NTLM) && !c->username)
        return verr(err, EG_EINVAL, "target", "principal",
                    "is required with %s authentication (%s)",
                    c->auth == EG_TARGET_AUTH_KERBEROS ? "Kerberos" : "NTLM",
                    c->auth == EG_TARGET_AUTH_KERBEROS ? "user@REALM, or user in the default realm"
                                                       : "DOMAIN\\user, user@domain or user");
    if (c->auth == EG_TARGET_AUTH_KERBEROS && !c->password && !c->keytab)
        return verr(err, EG_EINVAL, "target", "password",
                    "or target.keytab is required with Kerberos authentication (a stored "
                    "password is kept only while the kind and the principal stay the same)");
    if (c->auth == EG_TARGET_AUTH_NTLM && !c->password)
        return verr(err, EG_EINVAL, "target", "password",
                    "is required with NTLM authentication (a stored password is kept only while "
                    "the kind and the principal stay the same)");
    bool gss = eg_target_config_uses_gss(c);

    if ((rc = get_bool(t, "target", "allow_http_basic", false, &c->allow_http_basic, err)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "target.servers[%zu]", i);
        if (u[i].https || gss)
            continue; /* Kerberos/NTLM over http: every message is sealed */
        if (!basic)
            return verr(err, EG_EINVAL, path, "url",
                        "must be https with negotiate and the agent's own tickets (WinRM needs "
                        "message encryption over plain http: give a username and password or "
                        "keytab, or use auth \"kerberos\" / \"ntlm\", to have it)");
        if (!c->allow_http_basic)
            return verr(err, EG_EINVAL, path, "url",
                        "is plain http, which would send the password in clear; use https (or, "
                        "for a local test server only, set allow_http_basic)");
        if (!eg_is_loopback(u[i].host))
            return verr(err, EG_EINVAL, path, "url",
                        "is plain http to a host that is not loopback; allow_http_basic permits "
                        "only 127.0.0.1, ::1 or localhost");
    }
    if ((rc = parse_trust(t, c, err)) < 0)
        return rc;

    if ((rc = get_str(t, "target", "version", 16, false, &s, err)) < 0)
        return rc;
    static const char *const versions[] = {"auto", "2010", "2013", "2016", "2019", "se", NULL};
    if (!s)
        s = "auto";
    if (!in_list(versions, s))
        return verr(err, EG_EINVAL, "target", "version",
                    "must be \"auto\", \"2010\", \"2013\", \"2016\", \"2019\" or \"se\"");
    if (!(c->version = eg_strdup(s)))
        return EG_ENOMEM;
    return get_int(t, "target", "commands_per_shell", 1, EG_MAX_COMMANDS_PER_SHELL,
                   EG_DEFAULT_COMMANDS_PER_SHELL, NULL, &c->commands_per_shell, err);
}

static int parse_online(const json_t *t, const struct mode *m, const struct eg_target_config *prev,
                        struct eg_target_config *c, struct eg_verr *err)
{
    X509 *cert = NULL;
    const char *s = NULL;
    struct url_parts u;
    int rc;

    if ((rc = take_line(t, "target", "tenant", 253, true, &c->tenant, err)) < 0)
        return rc;
    if (!valid_tenant(c->tenant))
        return verr(err, EG_EINVAL, "target", "tenant",
                    "must be the tenant's GUID or its domain (contoso.onmicrosoft.com)");
    if ((rc = take_line(t, "target", "app_id", 36, true, &c->app_id, err)) < 0)
        return rc;
    if (!valid_guid(c->app_id))
        return verr(err, EG_EINVAL, "target", "app_id",
                    "must be the application (client) id, a GUID "
                    "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
    if ((rc = get_str(t, "target", "certificate", EG_MAX_PEM_BYTES, true, &s, err)) < 0)
        return rc;
    if ((rc = check_certs(s, "target", "certificate", &cert, err)) < 0)
        return rc;
    if (!(c->certificate = eg_strdup(s))) {
        rc = EG_ENOMEM;
        goto out;
    }
    if ((rc = take_secret(t, m, "private_key", EG_MAX_PEM_BYTES, true, &c->private_key, err)) < 0)
        goto out;
    if (!c->private_key && prev && prev->kind == EG_TARGET_ONLINE && prev->private_key &&
        same_str(prev->app_id, c->app_id)) {
        if (!(c->private_key = eg_strdup(prev->private_key))) {
            rc = EG_ENOMEM;
            goto out;
        }
    }
    if (!c->private_key) {
        rc = verr(err, EG_EINVAL, "target", "private_key",
                  "is required (a stored private key is kept only while the kind and the app_id "
                  "stay the same)");
        goto out;
    }
    if ((rc = check_key(c->private_key, cert, err)) < 0)
        goto out;
    if ((rc = get_bool(t, "target", "allow_http", false, &c->allow_http, err)) < 0)
        goto out;
    static const char *const urls[] = {"api_url", "token_url"};
    for (int i = 0; i < 2; i++) {
        char **dst = i == 0 ? &c->api_url : &c->token_url;
        if ((rc = get_str(t, "target", urls[i], EG_MAX_URL_LEN, false, &s, err)) < 0)
            goto out;
        if (!s)
            continue;
        if ((rc = check_url(s, "target", urls[i], &u, err)) < 0)
            goto out;
        if (!u.https && !c->allow_http) {
            rc = verr(err, EG_EINVAL, "target", urls[i],
                      "must be https (plain http only with allow_http, for a local test server)");
            goto out;
        }
        if (!u.https && !eg_is_loopback(u.host)) {
            rc = verr(err, EG_EINVAL, "target", urls[i],
                      "is plain http to a host that is not loopback; allow_http permits only "
                      "127.0.0.1, ::1 or localhost");
            goto out;
        }
        if (!(*dst = eg_strdup(s))) {
            rc = EG_ENOMEM;
            goto out;
        }
    }
    rc = parse_trust(t, c, err);
out:
    X509_free(cert);
    return rc;
}

/* The server-list options: each member checked on its own with eg_bridge_multi_opts_check, so
 * that the error names it. */
static int parse_multi(const json_t *t, struct eg_target_config *c, struct eg_verr *err)
{
    static const struct {
        const char *name;
        int64_t min, max;
    } f[] = {
        {"dead_threshold", EG_MULTI_MIN_DEAD_THRESHOLD, EG_MULTI_MAX_DEAD_THRESHOLD},
        {"failure_window_ms", EG_MULTI_MIN_FAILURE_WINDOW_MS, EG_MULTI_MAX_FAILURE_WINDOW_MS},
        {"dead_time_ms", EG_MULTI_MIN_DEAD_TIME_MS, EG_MULTI_MAX_DEAD_TIME_MS},
        {"health_interval_s", EG_MULTI_MIN_HEALTH_INTERVAL_S, EG_MULTI_MAX_HEALTH_INTERVAL_S},
        {"live_threshold", EG_MULTI_MIN_LIVE_THRESHOLD, EG_MULTI_MAX_LIVE_THRESHOLD},
    };
    char why[256];
    const char *s = NULL;
    int rc;

    eg_bridge_multi_opts_default(&c->multi);
    if ((rc = get_str(t, "target", "scheduling", 16, false, &s, err)) < 0)
        return rc;
    if (s && eg_multi_policy_parse(s, &c->multi.policy) < 0)
        return verr(err, EG_EINVAL, "target", "scheduling",
                    "must be \"priority\" or \"round_robin\"");
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const json_t *v = json_object_get(t, f[i].name);
        if (!v)
            continue;
        if (!json_is_integer(v))
            return verr(err, EG_EINVAL, "target", f[i].name, "must be an integer, not %s",
                        json_is_real(v) ? "a fractional number" : json_type_name(v));
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > (json_int_t)UINT32_MAX) /* does not fit the option: same message */
            return verr(err, EG_EINVAL, "target", f[i].name,
                        "%s is %lld; it must be between %lld and %lld", f[i].name, (long long)x,
                        (long long)f[i].min, (long long)f[i].max);
        struct eg_bridge_multi_opts one;
        eg_bridge_multi_opts_default(&one);
        switch (i) {
        case 0:
            one.dead_threshold = c->multi.dead_threshold = (unsigned)x;
            break;
        case 1:
            one.failure_window_ms = c->multi.failure_window_ms = x;
            break;
        case 2:
            one.dead_time_ms = c->multi.dead_time_ms = x;
            break;
        case 3:
            one.health_interval_s = c->multi.health_interval_s = (unsigned)x;
            break;
        default:
            one.live_threshold = c->multi.live_threshold = (unsigned)x;
            break;
        }
        if (eg_bridge_multi_opts_check(&one, why, sizeof why) < 0)
            return verr(err, EG_EINVAL, "target", f[i].name, "%s", why);
    }
    if (eg_bridge_multi_opts_check(&c->multi, why, sizeof why) < 0)
        return verr(err, EG_EINVAL, "target", NULL, "%s", why);
    return 0;
}

static int parse_target(const json_t *t, const struct mode *m, const struct eg_target_config *prev,
                        struct eg_target_config *c, struct eg_verr *err)
{
    const char *s = NULL;
    int rc, k;

    if ((rc = get_str(t, "target", "kind", 16, true, &s, err)) < 0)
        return rc;
    for (k = 0; k < 3; k++)
        if (strcmp(s, kind_names[k]) == 0)
            break;
    if (k == 3)
        return verr(err, EG_EINVAL, "target", "kind",
                    "must be \"onprem\", \"online\" or \"dryrun\"");
    c->kind = (enum eg_target_kind)k;
    if ((rc = check_target_members(t, m, c->kind, err)) < 0)
        return rc;
    switch (c->kind) {
    case EG_TARGET_ONPREM:
        rc = parse_onprem(t, m, prev, c, err);
        break;
    case EG_TARGET_ONLINE:
        rc = parse_online(t, m, prev, c, err);
        break;
    case EG_TARGET_DRYRUN:
        rc = get_int(t, "target", "latency_ms", 0, EG_MAX_DRYRUN_LATENCY_MS, 0, "ms",
                     &c->latency_ms, err);
        break;
    }
    if (rc < 0)
        return rc;
    if ((rc = get_int(t, "target", "max_concurrency", 1, EG_PSRP_MAX_PIPELINES,
                      EG_DEFAULT_TARGET_CONCURRENCY, NULL, &c->max_concurrency, err)) < 0)
        return rc;
    if ((rc = parse_multi(t, c, err)) < 0)
        return rc;
    if ((rc = get_int(t, "target", "connect_timeout_ms", EG_MIN_TARGET_TIMEOUT_MS,
                      EG_MAX_TARGET_TIMEOUT_MS, EG_DEFAULT_TARGET_CONNECT_TIMEOUT_MS, "ms",
                      &c->connect_timeout_ms, err)) < 0 ||
        (rc = get_int(t, "target", "io_timeout_ms", EG_MIN_TARGET_TIMEOUT_MS,
                      EG_MAX_TARGET_TIMEOUT_MS, EG_DEFAULT_TARGET_IO_TIMEOUT_MS, "ms",
                      &c->io_timeout_ms, err)) < 0 ||
        (rc = get_int(t, "target", "response_timeout_ms", EG_MIN_TARGET_TIMEOUT_MS,
                      EG_MAX_TARGET_TIMEOUT_MS, EG_DEFAULT_TARGET_RESPONSE_TIMEOUT_MS, "ms",
                      &c->response_timeout_ms, err)) < 0)
        return rc;
    return 0;
}

static int parse_rest(const json_t *root, struct eg_target_config *c, struct eg_verr *err)
{
    static const char *const schedule_members[] = {"quick_sync_interval_s", "full_sync_interval_s",
                                                   NULL};
    /* hmac_key and its stored / redacted forms: parse_upload_key says which fits where. */
    static const char *const upload_members[] = {"url", "hmac_key", "hmac_key_sealed",
                                                 "hmac_key_set", NULL};
    static const char *const retry_members[] = {"deadline_ms", NULL};
    const json_t *o = NULL;
    int rc;

    if ((rc = get_object(root, "", "schedule", false, &o, err)) < 0)
        return rc;
    if (o && (rc = check_plain_members(o, "schedule", schedule_members, err)) < 0)
        return rc;
    if ((rc = get_int(o, "schedule", "quick_sync_interval_s", EG_MIN_QUICK_SYNC_INTERVAL_S,
                      EG_MAX_QUICK_SYNC_INTERVAL_S, EG_DEFAULT_QUICK_SYNC_INTERVAL_S, "s",
                      &c->quick_sync_interval_s, err)) < 0 ||
        (rc = get_int(o, "schedule", "full_sync_interval_s", EG_MIN_FULL_SYNC_INTERVAL_S,
                      EG_MAX_FULL_SYNC_INTERVAL_S, EG_DEFAULT_FULL_SYNC_INTERVAL_S, "s",
                      &c->full_sync_interval_s, err)) < 0)
        return rc;
    if (c->quick_sync_interval_s > c->full_sync_interval_s)
        return verr(err, EG_EINVAL, "schedule", "quick_sync_interval_s",
                    "is %lld; it must not be longer than full_sync_interval_s (%lld)",
                    (long long)c->quick_sync_interval_s, (long long)c->full_sync_interval_s);

    /* inventory (agent/scheduler reads it from the stored document) */
    static const char *const inventory_members[] = {"heal_drift", "stats_per_sync",
                                                    "stats_interval_ms", NULL};
    if ((rc = get_object(root, "", "inventory", false, &o, err)) < 0)
        return rc;
    if (o && (rc = check_plain_members(o, "inventory", inventory_members, err)) < 0)
        return rc;
    if ((rc = get_bool(o, "inventory", "heal_drift", false, &c->inventory_heal_drift, err)) < 0 ||
        (rc = get_int(o, "inventory", "stats_per_sync", 0, EG_INVENTORY_MAX_STATS,
                      EG_INVENTORY_DEFAULT_STATS, NULL, &c->inventory_stats_per_sync, err)) < 0 ||
        (rc = get_int(o, "inventory", "stats_interval_ms", 0, EG_INVENTORY_MAX_STATS_GAP,
                      EG_INVENTORY_DEFAULT_STATS_GAP, "ms", &c->inventory_stats_interval_ms, err)) <
            0)
        return rc;

    if ((rc = get_object(root, "", "upload", false, &o, err)) < 0)
        return rc;
    if (o) {
        const char *s = NULL;
        struct url_parts u;
        if ((rc = check_plain_members(o, "upload", upload_members, err)) < 0 ||
            (rc = get_str(o, "upload", "url", EG_MAX_URL_LEN, true, &s, err)) < 0 ||
            (rc = check_url(s, "upload", "url", &u, err)) < 0)
            return rc;
        if (!u.https && !eg_is_loopback(u.host))
            return verr(err, EG_EINVAL, "upload", "url",
                        "must be https (plain http only to a loopback host, for tests)");
        if (!(c->upload_url = eg_strdup(s)))
            return EG_ENOMEM;
    }

    if ((rc = get_object(root, "", "retry", false, &o, err)) < 0)
        return rc;
    if (o) {
        if ((rc = check_plain_members(o, "retry", retry_members, err)) < 0)
            return rc;
        c->has_retry_deadline = json_object_get(o, "deadline_ms") != NULL;
        if ((rc = get_int(o, "retry", "deadline_ms", EG_MIN_RETRY_DEADLINE_MS,
                          EG_MAX_RETRY_DEADLINE_MS, EG_DEFAULT_RETRY_DEADLINE_MS, "ms",
                          &c->retry_deadline_ms, err)) < 0)
            return rc;
    }
    return 0;
}

/* upload.hmac_key: a write-only secret like target.password ("hmac_key" from the console,
 * "hmac_key_sealed" in the state file, "hmac_key_set" in a GET). Left out of a PUT, the stored
 * key is kept while upload.url stays the same. */
static int parse_upload_key(const json_t *root, const struct mode *m,
                            const struct eg_target_config *prev, struct eg_target_config *c,
                            struct eg_verr *err)
{
    const json_t *o = json_object_get(root, "upload");
    const char *s = NULL;
    char *plain = NULL;
    int rc;

    if (!json_is_object(o))
        return 0; /* absent (parse_rest checked the type) */
    if (json_object_get(o, "hmac_key_set"))
        return verr(err, EG_EINVAL, "upload", "hmac_key_set",
                    m->stored ? "unknown field"
                              : "is read-only (GET shows it); leave it out of a PUT");
    if (json_object_get(o, m->stored ? "hmac_key" : "hmac_key_sealed"))
        return verr(err, EG_EINVAL, "upload", m->stored ? "hmac_key" : "hmac_key_sealed",
                    m->stored ? "unknown field (the state file holds secrets only sealed, as "
                                "<name>_sealed)"
                              : "unknown field");
    if (!m->stored) {
        if ((rc = get_str(o, "upload", "hmac_key", EG_UPLOAD_MAX_HMAC_KEY_LEN, false, &s, err)) < 0)
            return rc;
        if (s) {
            if (has_control(s))
                return verr(err, EG_EINVAL, "upload", "hmac_key",
                            "must not contain control characters");
            if (strlen(s) < EG_UPLOAD_MIN_HMAC_KEY_LEN)
                return verr(err, EG_EINVAL, "upload", "hmac_key",
                            "is %zu bytes long; at least %d are required (a random key)", strlen(s),
                            EG_UPLOAD_MIN_HMAC_KEY_LEN);
            if (!(c->upload_hmac_key = eg_strdup(s)))
                return EG_ENOMEM;
        } else if (prev && prev->upload_hmac_key && same_str(prev->upload_url, c->upload_url)) {
            if (!(c->upload_hmac_key = eg_strdup(prev->upload_hmac_key)))
                return EG_ENOMEM;
        }
        return 0;
    }
    rc = get_str(o, "upload", "hmac_key_sealed",
                 eg_base64_encoded_len(EG_MAX_SECRET_BYTES + 64) + 8, false, &s, err);
    if (rc < 0 || !s)
        return rc;
    rc = eg_secretbox_open(m->box, "upload.hmac_key", s, &plain);
    switch (rc) {
    case 0:
        break;
    case EG_ENOMEM:
        return rc;
    case EG_EAUTH:
        return verr(err, EG_EAUTH, "upload", "hmac_key_sealed",
                    "does not decrypt with the key file %s: another key, or the stored value "
                    "was altered",
                    eg_secretbox_path(m->box));
    default:
        return verr(err, EG_EPARSE, "upload", "hmac_key_sealed",
                    "is not a sealed secret (\"%s...\")", EG_SECRETBOX_PREFIX);
    }
    if (strlen(plain) > EG_UPLOAD_MAX_HMAC_KEY_LEN || strlen(plain) < EG_UPLOAD_MIN_HMAC_KEY_LEN ||
        has_control(plain)) {
        eg_secret_free(plain);
        return verr(err, EG_EINVAL, "upload", "hmac_key_sealed",
                    "holds a secret that is not valid here");
    }
    c->upload_hmac_key = plain;
    return 0;
}

static int parse_doc(const json_t *root, const struct mode *m, const struct eg_target_config *prev,
                     struct eg_target_config **ret, struct eg_verr *err)
{
    struct eg_target_config *c = NULL;
    const json_t *t = NULL;
    const char *key;
    json_t *val;
    int rc;

    if (!json_is_object(root))
        return verr(err, EG_EINVAL, "", NULL,
                    "the body must be a JSON object {\"target\": {...}, ...}, not %s",
                    json_type_name(root));
    json_object_foreach((json_t *)root, key, val)
    {
        if (in_list(root_members, key) || (m->stored && in_list(stored_root_members, key)))
            continue;
        if (!m->stored && in_list(readonly_members, key))
            return verr(err, EG_EINVAL, "", key,
                        "is read-only (GET shows it); leave it out of a PUT");
        return verr(err, EG_EINVAL, "", key, "unknown field");
    }
    if (m->stored) { /* the format first: a newer file is not read as if it were this one */
        int64_t fmt = 0;
        if (!json_object_get(root, "format"))
            return verr(err, EG_EINVAL, "", "format", "is required (%d)", FORMAT_VERSION);
        if ((rc = get_int(root, "", "format", FORMAT_VERSION, FORMAT_VERSION, 0, NULL, &fmt, err)) <
            0)
            return rc;
    }
    if ((rc = get_object(root, "", "target", true, &t, err)) < 0)
        return rc;
    if (!(c = eg_calloc(1, sizeof *c)))
        return EG_ENOMEM;
    if ((rc = parse_target(t, m, prev, c, err)) < 0 || (rc = parse_rest(root, c, err)) < 0 ||
        (rc = parse_upload_key(root, m, prev, c, err)) < 0)
        goto out;
    if (m->stored &&
        ((rc = get_int(root, "", "revision", 0, INT64_MAX, 0, NULL, &c->revision, err)) < 0 ||
         (rc = get_int(root, "", "updated_ms", 0, INT64_MAX, 0, NULL, &c->updated_ms, err)) < 0))
        goto out;
    *ret = c;
    c = NULL;
out:
    eg_target_config_free(c);
    return rc;
}

/* Nesting depth of the JSON text (brackets outside strings); tolerant of malformed input. */
static bool depth_over(const char *s, size_t len, int limit)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > limit)
                return true;
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            depth--;
        }
    }
    return false;
}

static int load_text(const char *body, size_t len, json_t **ret, struct eg_verr *err)
{
    json_error_t jerr;
    if (depth_over(body, len, EG_MAX_JSON_DEPTH))
        return verr(err, EG_ELIMIT, "", NULL, "JSON nesting is deeper than %d levels",
                    EG_MAX_JSON_DEPTH);
    int rc = eg_json_load(body, len, ret, &jerr);
    if (rc == EG_EPARSE) {
        /* jansson quotes the token it stopped at ("near '...'"): that may be part of a secret. */
        char *near = strstr(jerr.text, " near ");
        if (near)
            *near = '\0';
        return verr(err, EG_EPARSE, "", NULL, "invalid JSON at line %d, column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    }
    return rc;
}

int eg_target_config_from_json(const json_t *doc, const struct eg_target_config *prev,
                               struct eg_target_config **ret, struct eg_verr *err)
{
    struct eg_verr dummy;
    struct mode m = {.stored = false};
    if (!err)
        err = &dummy;
    err->field[0] = err->detail[0] = '\0';
    if (!ret)
        return EG_EINVAL;
    return parse_doc(doc, &m, prev, ret, err);
}

int eg_target_config_parse(const char *body, size_t len, const struct eg_target_config *prev,
                           struct eg_target_config **ret, struct eg_verr *err)
{
    struct eg_verr dummy;
    json_t *root = NULL;
    if (!err)
        err = &dummy;
    err->field[0] = err->detail[0] = '\0';
    if (!body)
        body = "", len = 0;
    int rc = load_text(body, len, &root, err);
    if (rc < 0)
        return rc;
    rc = eg_target_config_from_json(root, prev, ret, err);
    json_decref(root);
    return rc;
}

/* ---- output --------------------------------------------------------------------------------- */

static int set_str(json_t *o, const char *k, const char *v)
{
    return v ? json_object_set_new(o, k, json_string(v)) : 0;
}

static int set_int(json_t *o, const char *k, int64_t v)
{
    return json_object_set_new(o, k, json_integer((json_int_t)v));
}

static int set_bool(json_t *o, const char *k, bool v)
{
    return json_object_set_new(o, k, json_boolean(v));
}

/* A secret member: redacted ("<name>_set": bool) or sealed ("<name>_sealed": "eg1:..."). */
static int set_secret(json_t *o, const char *name, const char *secret,
                      const struct eg_secretbox *box)
{
    char key[64], aad[80];
    if (!box) {
        snprintf(key, sizeof key, "%s_set", name);
        return set_bool(o, key, secret != NULL);
    }
    if (!secret)
        return 0;
    char *sealed = NULL;
    snprintf(key, sizeof key, "%s_sealed", name);
    snprintf(aad, sizeof aad, "target.%s", name);
    int rc = eg_secretbox_seal(box, aad, secret, &sealed);
    if (rc < 0)
        return rc;
    rc = json_object_set_new(o, key, json_string(sealed)) ? EG_ENOMEM : 0;
    eg_free(sealed);
    return rc;
}

/* The document; box NULL = redacted for GET, else secrets sealed for the state file. */
static int doc_json(const struct eg_target_config *c, const struct eg_secretbox *box, json_t **ret)
{
    json_t *root = json_object(), *t = json_object();
    int rc = EG_ENOMEM, bad = 0;
    if (!root || !t || json_object_set(root, "target", t))
        goto out;
    bad |= set_str(t, "kind", eg_target_kind_name(c->kind));
    switch (c->kind) {
    case EG_TARGET_ONPREM: {
        json_t *servers = json_array();
        if (!servers || json_object_set_new(t, "servers", servers))
            goto out;
        for (size_t i = 0; i < c->n_servers; i++)
            bad |= json_array_append_new(servers, json_pack("{s:s}", "url", c->servers[i]));
        bad |= set_str(t, "auth", eg_target_auth_name(c->auth));
        bad |= set_str(t, "username", c->username);
        if ((rc = set_secret(t, "password", c->password, box)) < 0)
            goto out;
        if (c->keytab)
            bad |= set_str(t, "keytab", c->keytab);
        bad |= set_str(t, "version", c->version);
        bad |= set_int(t, "commands_per_shell", c->commands_per_shell);
        bad |= set_bool(t, "allow_http_basic", c->allow_http_basic);
        bad |= set_str(t, "ca_pem", c->ca_pem);
        bad |= set_bool(t, "insecure", c->insecure);
        break;
    }
    case EG_TARGET_ONLINE:
        bad |= set_str(t, "tenant", c->tenant);
        bad |= set_str(t, "app_id", c->app_id);
        bad |= set_str(t, "certificate", c->certificate);
        if ((rc = set_secret(t, "private_key", c->private_key, box)) < 0)
            goto out;
        bad |= set_str(t, "api_url", c->api_url);
        bad |= set_str(t, "token_url", c->token_url);
        bad |= set_bool(t, "allow_http", c->allow_http);
        bad |= set_str(t, "ca_pem", c->ca_pem);
        bad |= set_bool(t, "insecure", c->insecure);
        break;
    case EG_TARGET_DRYRUN:
        bad |= set_int(t, "latency_ms", c->latency_ms);
        break;
    }
    bad |= set_int(t, "max_concurrency", c->max_concurrency);
    bad |= set_str(t, "scheduling", eg_multi_policy_name(c->multi.policy));
    bad |= set_int(t, "dead_threshold", c->multi.dead_threshold);
    bad |= set_int(t, "failure_window_ms", c->multi.failure_window_ms);
    bad |= set_int(t, "dead_time_ms", c->multi.dead_time_ms);
    bad |= set_int(t, "health_interval_s", c->multi.health_interval_s);
    bad |= set_int(t, "live_threshold", c->multi.live_threshold);
    bad |= set_int(t, "connect_timeout_ms", c->connect_timeout_ms);
    bad |= set_int(t, "io_timeout_ms", c->io_timeout_ms);
    bad |= set_int(t, "response_timeout_ms", c->response_timeout_ms);

    bad |= json_object_set_new(
        root, "schedule",
        json_pack("{s:I, s:I}", "quick_sync_interval_s", (json_int_t)c->quick_sync_interval_s,
                  "full_sync_interval_s", (json_int_t)c->full_sync_interval_s));
    bad |= json_object_set_new(
        root, "inventory",
        json_pack("{s:b, s:I, s:I}", "heal_drift", (int)c->inventory_heal_drift, "stats_per_sync",
                  (json_int_t)c->inventory_stats_per_sync, "stats_interval_ms",
                  (json_int_t)c->inventory_stats_interval_ms));
    if (c->upload_url) {
        json_t *up = json_pack("{s:s}", "url", c->upload_url);
        if (!up || json_object_set_new(root, "upload", up)) {
            rc = EG_ENOMEM;
            goto out;
        }
        if (!box) {
            bad |= set_bool(up, "hmac_key_set", c->upload_hmac_key != NULL);
        } else if (c->upload_hmac_key) {
            char *sealed = NULL;
            if ((rc = eg_secretbox_seal(box, "upload.hmac_key", c->upload_hmac_key, &sealed)) < 0)
                goto out;
            bad |= json_object_set_new(up, "hmac_key_sealed", json_string(sealed));
            eg_free(sealed);
        }
    }
    if (c->has_retry_deadline)
        bad |= json_object_set_new(
            root, "retry", json_pack("{s:I}", "deadline_ms", (json_int_t)c->retry_deadline_ms));
    if (box) {
        bad |= set_int(root, "format", FORMAT_VERSION);
        bad |= set_int(root, "revision", c->revision);
        bad |= set_int(root, "updated_ms", c->updated_ms);
    } else {
        char at[40];
        bad |= set_int(root, "revision", c->revision);
        if (c->updated_ms > 0)
            bad |= set_str(root, "updated_at", eg_format_time(c->updated_ms, at, sizeof at));
    }
    if (bad) {
        rc = EG_ENOMEM;
        goto out;
    }
    *ret = root;
    root = NULL;
    rc = 0;
out:
    json_decref(t);
    json_decref(root);
    return rc;
}

json_t *eg_target_config_redacted(const struct eg_target_config *c)
{
    json_t *doc = NULL;
    if (!c || doc_json(c, NULL, &doc) < 0)
        return NULL;
    return doc;
}

int eg_target_config_save(const struct eg_target_config *c, const struct eg_secretbox *box,
                          const char *path)
{
    json_t *doc = NULL;
    char *text = NULL;
    int rc;
    if (!c || !box || !path)
        return EG_EINVAL;
    if ((rc = doc_json(c, box, &doc)) < 0)
        return rc;
    text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text)
        return EG_ENOMEM;
    size_t len = strlen(text);
    char *nl = eg_realloc(text, len + 2);
    if (!nl) {
        eg_free(text);
        return EG_ENOMEM;
    }
    text = nl;
    text[len++] = '\n';
    text[len] = '\0';
    rc = eg_write_file_atomic(path, text, len, 0600);
    eg_free(text);
    return rc;
}

int eg_target_config_load(const char *path, const struct eg_secretbox *box,
                          struct eg_target_config **ret, char *why, size_t whylen)
{
    struct eg_verr err = {{0}, {0}};
    struct mode m = {.stored = true, .box = box};
    json_t *root = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc;

    if (why && whylen)
        why[0] = '\0';
    if (!path || !box || !ret)
        return EG_EINVAL;
    rc = eg_read_file(path, EG_MAX_TARGET_FILE_BYTES, &text, &len);
    if (rc == EG_EIO && errno == ENOENT)
        return EG_ENOTFOUND;
    if (rc < 0) {
        if (why && whylen && rc == EG_ELIMIT)
            snprintf(why, whylen, "%s: larger than %d bytes", path, EG_MAX_TARGET_FILE_BYTES);
        else if (why && whylen)
            snprintf(why, whylen, "%s: %s", path, rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
        return rc;
    }
    rc = load_text(text, len, &root, &err);
    eg_free(text);
    if (rc == 0) {
        rc = parse_doc(root, &m, NULL, ret, &err);
        json_decref(root);
    }
    if (rc < 0 && rc != EG_ENOMEM && why && whylen)
        snprintf(why, whylen, "%s: %s%s%s", path, err.field, err.field[0] ? ": " : "", err.detail);
    return rc;
}
