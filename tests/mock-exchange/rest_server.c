/* rest_server.c - the mock Exchange's Exchange Online REST front end (psrp-wire.md §16), served
 * on the same listeners as /PowerShell:
 *   POST /{tenant}/oauth2/v2.0/token            Entra's client-credentials grant with a
 *        certificate-signed client assertion (RS256, verified with OpenSSL against --app-cert);
 *        answers an access token the mock signs itself (HS256, random per-process key);
 *   POST /adminapi/{beta|v1.0}/{tenant}/InvokeCommand   {"CmdletInput":{"CmdletName","Parameters"}}
 *        with Authorization: Bearer <that token>: the parameters become CLIXML values, the cmdlet
 *        runs through mx_invoke, output objects come back as OData JSON pages.
 * Paging: a page holds at most Prefer: odata.maxpagesize=N objects (default and maximum 1000);
 * when there are more, "@odata.nextLink" carries a cursor token ($skiptoken). The server keeps
 * only {token, offset, body hash, time} per cursor (bounded in number and age) and serves the
 * next page by re-running the cmdlet (the engine is deterministic) and skipping `offset`
 * objects; the run stops as soon as the page is full and one more object proves there is a
 * next page, so at most one page of objects is held. See docs/internals/mock-exchange.md
 * ("REST front end").
 */
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"
#include "exchange/clixml_json.h"
#include "fe_internal.h"

#define DEFAULT_TENANT_GUID   "5f4ea0e5-8a2b-4c3d-9e1f-0a1b2c3d4e5f"
#define DEFAULT_TENANT_DOMAIN "contoso.onmicrosoft.com"
#define DEFAULT_APP_ID        "a1b2c3d4-0000-4000-8000-00000000e0a5"
#define DEFAULT_LIFETIME_S    3599
#define RESOURCE              "https://outlook.office365.com"
#define SCOPE                 "https://outlook.office365.com/.default"
#define ROLE                  "Exchange.ManageAsApp"
#define ASSERTION_TYPE        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define SKEW_S                60 /* clock skew allowed on the assertion's nbf/exp */
#define ODATA_CT                                                                                   \
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"        \
    "charset=utf-8"
#define ODATA_EXC "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"
#define TOO_MANY                                                                                   \
    "You have reached the maximum number of concurrent requests per tenant. Please wait and try "  \
    "again"
#define PAGE_FULL EG_ELIMIT /* the object callback's "stop: the page is full" */

struct cursor {
    bool used;
    char token[33];
    uint8_t body_hash[32];
    size_t offset;
    int64_t created_ms;
};

struct fe_rest {
    char tenant_guid[64];
    char tenant_domain[256];
    char app_id[128];
    EVP_PKEY *app_key; /* public key of --app-cert; NULL = no app certificate */
    char x5t[64], x5t256[64];
    uint8_t key[32]; /* HS256 key of the access tokens (wiped when freed) */
    int64_t lifetime_s;
    struct cursor cursors[EG_MOCK_REST_MAX_CURSORS]; /* under fe->lock */
};

/* =========================================================================================== */
/* base64url, JWT pieces                                                                        */
/* =========================================================================================== */

static char *b64url_encode(const void *data, size_t len)
{
    char *s = NULL;
    size_t n = 0;
    if (eg_base64_encode(data, len, &s, &n) < 0)
        return NULL;
    while (n && s[n - 1] == '=')
        s[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        s[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    return s;
}

static int b64url_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len)
{
    if (len % 4 == 1)
        return EG_EPARSE;
    char *t = eg_malloc(len + 4);
    if (!t)
        return EG_ENOMEM;
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '+' || ch == '/' || ch == '=') {
            rc = EG_EPARSE;
            goto out;
        }
        t[n++] = ch == '-' ? '+' : ch == '_' ? '/' : ch;
    }
    while (n % 4)
        t[n++] = '=';
    rc = eg_base64_decode(t, n, 0, ret, ret_len);
out:
    eg_free(t);
    return rc;
}

/* A JWT split into its parts; header and claims decoded. */
struct jwt {
    json_t *header, *claims;
    const char *signed_part; /* "header.payload" */
    size_t signed_len;
    uint8_t *sig;
    size_t sig_len;
};

static void jwt_clear(struct jwt *j)
{
    json_decref(j->header);
    json_decref(j->claims);
    eg_free(j->sig);
    memset(j, 0, sizeof *j);
}

static json_t *decode_json_part(const char *s, size_t len)
{
    uint8_t *raw = NULL;
    size_t n = 0;
    if (b64url_decode(s, len, &raw, &n) < 0)
        return NULL;
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    eg_free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static int jwt_parse(const char *tok, struct jwt *ret)
{
    struct jwt j = {0};
    const char *d1 = strchr(tok, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2 || strchr(d2 + 1, '.'))
        return EG_EPARSE;
    j.header = decode_json_part(tok, (size_t)(d1 - tok));
    j.claims = decode_json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!j.header || !j.claims || b64url_decode(d2 + 1, strlen(d2 + 1), &j.sig, &j.sig_len) < 0) {
        jwt_clear(&j);
        return EG_EPARSE;
    }
    j.signed_part = tok;
    j.signed_len = (size_t)(d2 - tok);
    *ret = j;
    return 0;
}

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* =========================================================================================== */
/* Set-up                                                                                       */
/* =========================================================================================== */

static bool is_guid(const char *s)
{
    static const char pat[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if (strlen(s) != sizeof pat - 1)
        return false;
    for (size_t i = 0; pat[i]; i++)
        if (pat[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int cert_thumbprint(X509 *x, const EVP_MD *md, char *out, size_t size)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(x, md, d, &n) != 1)
        return EG_ETLS;
    char *s = b64url_encode(d, n);
    if (!s)
        return EG_ENOMEM;
    snprintf(out, size, "%s", s);
    eg_free(s);
    return 0;
}

int fe_rest_init(struct mx_fe *fe, const struct mx_fe_opts *o, char *err, size_t err_size)
{
    struct fe_rest *r = eg_calloc(1, sizeof *r);
    char *pem = NULL;
    BIO *bio = NULL;
    X509 *x = NULL;
    int rc = 0;
    if (!r)
        return EG_ENOMEM;
    snprintf(r->tenant_guid, sizeof r->tenant_guid, "%s", DEFAULT_TENANT_GUID);
    snprintf(r->tenant_domain, sizeof r->tenant_domain, "%s", DEFAULT_TENANT_DOMAIN);
    if (o->tenant) {
        if (!o->tenant[0] || strlen(o->tenant) >= sizeof r->tenant_domain ||
            strpbrk(o->tenant, "/?#%\"\\ ")) {
            snprintf(err, err_size, "bad --tenant '%s'", o->tenant);
            rc = EG_EINVAL;
            goto out;
        }
        if (is_guid(o->tenant)) {
            snprintf(r->tenant_guid, sizeof r->tenant_guid, "%s", o->tenant);
            for (char *p = r->tenant_guid; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        } else {
            snprintf(r->tenant_domain, sizeof r->tenant_domain, "%s", o->tenant);
        }
    }
    if (o->app_id && (!o->app_id[0] || strlen(o->app_id) >= sizeof r->app_id)) {
        snprintf(err, err_size, "bad --app-id");
        rc = EG_EINVAL;
        goto out;
    }
    snprintf(r->app_id, sizeof r->app_id, "%s", o->app_id ? o->app_id : DEFAULT_APP_ID);
    if (o->token_lifetime_s < 0 || o->token_lifetime_s > 86400) {
        snprintf(err, err_size, "--token-lifetime-s wants 1..86400");
        rc = EG_EINVAL;
        goto out;
    }
    r->lifetime_s = o->token_lifetime_s ? o->token_lifetime_s : DEFAULT_LIFETIME_S;
    if (RAND_bytes(r->key, sizeof r->key) != 1) {
        snprintf(err, err_size, "no random bytes for the token key");
        rc = EG_ETLS;
        goto out;
    }
    if (o->app_cert) {
        size_t len = 0;
        if ((rc = eg_read_file(o->app_cert, EG_MAX_TLS_FILE_BYTES, &pem, &len)) < 0) {
            snprintf(err, err_size, "cannot read --app-cert %s: %s", o->app_cert, eg_strerror(rc));
            goto out;
        }
        if (!(bio = BIO_new_mem_buf(pem, (int)len)) ||
            !(x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) || !(r->app_key = X509_get_pubkey(x)) ||
            EVP_PKEY_base_id(r->app_key) != EVP_PKEY_RSA) {
            snprintf(err, err_size, "--app-cert %s: not a PEM certificate with an RSA key",
                     o->app_cert);
            rc = EG_ETLS;
            goto out;
        }
        if ((rc = cert_thumbprint(x, EVP_sha1(), r->x5t, sizeof r->x5t)) < 0 ||
            (rc = cert_thumbprint(x, EVP_sha256(), r->x5t256, sizeof r->x5t256)) < 0) {
            snprintf(err, err_size, "--app-cert %s: cannot compute its thumbprint", o->app_cert);
            goto out;
        }
    }
    fe->rest = r;
    r = NULL;
out:
    X509_free(x);
    BIO_free(bio);
    eg_free(pem);
    fe_rest_free(r);
    return rc;
}

void fe_rest_free(struct fe_rest *r)
{
    if (!r)
        return;
    EVP_PKEY_free(r->app_key);
    eg_memzero(r->key, sizeof r->key);
    eg_free(r);
}

/* =========================================================================================== */
/* Paths                                                                                        */
/* =========================================================================================== */

enum rest_kind { RK_NONE, RK_TOKEN, RK_INVOKE };

/* Classify url; tenant (size bytes) gets the {tenant} segment, ver the API version. */
static enum rest_kind classify(const char *url, char *tenant, size_t size, char *ver,
                               size_t ver_size)
{
    size_t n = strlen(url);
    while (n > 1 && url[n - 1] == '/')
        n--;
    static const char tok_tail[] = "/oauth2/v2.0/token";
    static const char inv_head[] = "/adminapi/";
    static const char inv_tail[] = "/InvokeCommand";
    if (n > strlen(inv_head) + strlen(inv_tail) && strncasecmp(url, inv_head, 10) == 0 &&
        strncasecmp(url + n - strlen(inv_tail), inv_tail, strlen(inv_tail)) == 0) {
        const char *v = url + strlen(inv_head);
        const char *end = url + n - strlen(inv_tail);
        const char *slash = memchr(v, '/', (size_t)(end - v));
        if (!slash || slash + 1 >= end || memchr(slash + 1, '/', (size_t)(end - slash - 1)))
            return RK_NONE;
        size_t vl = (size_t)(slash - v);
        if (!((vl == 4 && strncasecmp(v, "beta", 4) == 0) ||
              (vl == 4 && strncasecmp(v, "v1.0", 4) == 0)))
            return RK_NONE;
        if ((size_t)(end - slash - 1) >= size)
            return RK_NONE;
        snprintf(ver, ver_size, "%.*s", (int)vl, v);
        snprintf(tenant, size, "%.*s", (int)(end - slash - 1), slash + 1);
        return RK_INVOKE;
    }
    if (n > strlen(tok_tail) + 1 && url[0] == '/' &&
        strncasecmp(url + n - strlen(tok_tail), tok_tail, strlen(tok_tail)) == 0) {
        size_t tl = n - strlen(tok_tail) - 1;
        if (tl == 0 || tl >= size || memchr(url + 1, '/', tl))
            return RK_NONE;
        snprintf(tenant, size, "%.*s", (int)tl, url + 1);
        return RK_TOKEN;
    }
    return RK_NONE;
}

bool fe_rest_path(const char *url)
{
    char t[256], v[8];
    return classify(url, t, sizeof t, v, sizeof v) != RK_NONE;
}

static bool our_tenant(const struct fe_rest *r, const char *t)
{
    return strcasecmp(t, r->tenant_guid) == 0 || strcasecmp(t, r->tenant_domain) == 0;
}

/* =========================================================================================== */
/* Responses                                                                                    */
/* =========================================================================================== */

struct hdr {
    const char *name, *value;
};

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, const char *ctype,
                                 char *body, const struct hdr *h, size_t nh)
{
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer_with_free_callback(strlen(body), body, eg_free)
             : NULL;
    if (!resp) {
        eg_free(body);
        return MHD_NO;
    }
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_SERVER, "Microsoft-IIS/10.0");
    for (size_t i = 0; i < nh; i++)
        if (h[i].value)
            (void)MHD_add_response_header(resp, h[i].name, h[i].value);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, const char *ctype,
                                 json_t *j, const struct hdr *h, size_t nh)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_body(c, status, ctype, text, h, nh);
}

/* Entra's error shape: {"error","error_description","error_codes",...}. */
static enum MHD_Result send_entra_error(struct MHD_Connection *c, unsigned status,
                                        const char *error, int code, const char *text)
{
    char ts[40], desc[700], uri[80];
    eg_format_time(eg_now_ms(), ts, sizeof ts);
    snprintf(desc, sizeof desc,
             "AADSTS%d: %s Trace ID: 00000000-0000-0000-0000-000000000000 "
             "Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: %s",
             code, text, ts);
    snprintf(uri, sizeof uri, "https://login.microsoftonline.com/error?code=%d", code);
    json_t *j = json_pack("{s:s, s:s, s:[i], s:s, s:s, s:s, s:s}", "error", error,
                          "error_description", desc, "error_codes", code, "timestamp", ts,
                          "trace_id", "00000000-0000-0000-0000-000000000000", "correlation_id",
                          "00000000-0000-0000-0000-000000000000", "error_uri", uri);
    eg_log_info("POST token: %u %s AADSTS%d", status, error, code);
    return send_json(c, status, "application/json; charset=utf-8", j, NULL, 0);
}

/* The EXO error shape. */
static enum MHD_Result send_exo_error(struct MHD_Connection *c, unsigned status, const char *code,
                                      const char *message, const char *details,
                                      const char *exc_type, const char *retry_after)
{
    const char *short_type = exc_type ? strrchr(exc_type, '.') : NULL;
    short_type = short_type ? short_type + 1 : exc_type;
    json_t *j =
        json_pack("{s:{s:s, s:s, s:[{s:s}], s:{s:s, s:s, s:{s:s}}}}", "error", "code", code,
                  "message", message, "details", "message", details, "innererror", "message",
                  message, "type", ODATA_EXC, "internalexception", "message", message);
    struct hdr h[] = {{"X-ExceptionType", short_type},
                      {MHD_HTTP_HEADER_RETRY_AFTER, retry_after},
                      {"OData-Version", "4.0"},
                      {MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                       status == 401 ? "Bearer authorization_uri=\"https://login."
                                       "microsoftonline.com/common\""
                                     : NULL}};
    return send_json(c, status, "application/json; charset=utf-8", j, h, sizeof h / sizeof *h);
}

static enum MHD_Result send_unauthorized(struct MHD_Connection *c, const char *why)
{
    eg_log_info("POST InvokeCommand: 401 (%s)", why);
    return send_exo_error(c, 401, "Unauthorized", "The access token is invalid or has expired.",
                          "|System.UnauthorizedAccessException|The access token is invalid or has "
                          "expired.",
                          "System.UnauthorizedAccessException", NULL);
}

/* =========================================================================================== */
/* The token endpoint                                                                           */
/* =========================================================================================== */

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* The decoded value of field name in an x-www-form-urlencoded body, or NULL (absent, bad
 * escape, no memory). eg_free the result. */
static char *form_get(const char *body, size_t len, const char *name)
{
    size_t nl = strlen(name);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fe_ = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fe_ - p));
        if (eq && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
            char *out = eg_malloc((size_t)(fe_ - eq));
            if (!out)
                return NULL;
            size_t n = 0;
            for (const char *q = eq + 1; q < fe_; q++) {
                if (*q == '+') {
                    out[n++] = ' ';
                } else if (*q == '%') {
                    int hi = q + 2 < fe_ ? hexval(q[1]) : -1, lo = q + 2 < fe_ ? hexval(q[2]) : -1;
                    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                        eg_free(out);
                        return NULL;
                    }
                    out[n++] = (char)(hi * 16 + lo);
                    q += 2;
                } else {
                    out[n++] = *q;
                }
            }
            out[n] = '\0';
            return out;
        }
        p = fe_ + 1;
    }
    return NULL;
}

/* Does aud (a URL) name the token endpoint of tenant? Only the path is compared (any scheme,
 * host and port: the mock is reached at 127.0.0.1:PORT, Entra at login.microsoftonline.com). */
static bool aud_matches(const char *aud, const char *tenant)
{
    const char *p = NULL;
    if (strncasecmp(aud, "https://", 8) == 0)
        p = aud + 8;
    else if (strncasecmp(aud, "http://", 7) == 0)
        p = aud + 7;
    p = p ? strchr(p, '/') : NULL;
    if (!p)
        return false;
    char want[400];
    snprintf(want, sizeof want, "/%s/oauth2/v2.0/token", tenant);
    size_t n = strcspn(p, "?#");
    while (n > 1 && p[n - 1] == '/')
        n--;
    return n == strlen(want) && strncasecmp(p, want, n) == 0;
}

static bool num_claim(const json_t *claims, const char *k, int64_t *ret)
{
    const json_t *v = json_object_get(claims, k);
    if (json_is_integer(v))
        *ret = json_integer_value(v);
    else if (json_is_real(v))
        *ret = (int64_t)json_real_value(v);
    else
        return false;
    return true;
}

static char *make_access_token(const struct fe_rest *r)
{
    int64_t now = eg_now_ms() / 1000;
    char iss[128];
    snprintf(iss, sizeof iss, "https://sts.windows.net/%s/", r->tenant_guid);
    json_t *claims =
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:[s], s:s, s:s}", "aud", RESOURCE, "iss",
                  iss, "iat", (json_int_t)now, "nbf", (json_int_t)now, "exp",
                  (json_int_t)(now + r->lifetime_s), "appid", r->app_id, "app_displayname",
                  "easgate", "roles", ROLE, "tid", r->tenant_guid, "ver", "1.0");
    char *ctext = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *h64 = b64url_encode(header, strlen(header));
    char *c64 = ctext ? b64url_encode(ctext, strlen(ctext)) : NULL;
    char *signing = h64 && c64 ? eg_asprintf("%s.%s", h64, c64) : NULL;
    char *out = NULL;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    if (signing && HMAC(EVP_sha256(), r->key, sizeof r->key, (const unsigned char *)signing,
                        strlen(signing), mac, &ml)) {
        char *s64 = b64url_encode(mac, ml);
        if (s64)
            out = eg_asprintf("%s.%s", signing, s64);
        eg_free(s64);
    }
    eg_free(ctext);
    eg_free(h64);
    eg_free(c64);
    eg_free(signing);
    return out;
}

static enum MHD_Result token_request(struct mx_fe *fe, struct MHD_Connection *c, const char *tenant,
                                     const char *body, size_t len)
{
    struct fe_rest *r = fe->rest;
    char *grant = form_get(body, len, "grant_type"), *cid = form_get(body, len, "client_id"),
         *scope = form_get(body, len, "scope"),
         *atype = form_get(body, len, "client_assertion_type"),
         *assertion = form_get(body, len, "client_assertion");
    struct jwt j = {0};
    EVP_MD_CTX *md = NULL;
    enum MHD_Result ret;
    char msg[600];

    if (!our_tenant(r, tenant)) {
        snprintf(msg, sizeof msg, "Tenant '%.200s' not found.", tenant);
        ret = send_entra_error(c, 400, "invalid_request", 90002, msg);
        goto out;
    }
    if (!grant || strcmp(grant, "client_credentials") != 0) {
        ret = send_entra_error(c, 400, "unsupported_grant_type", 70003,
                               "The app requested an unsupported grant type.");
        goto out;
    }
    if (!cid || strcasecmp(cid, r->app_id) != 0) {
        snprintf(msg, sizeof msg,
                 "Application with identifier '%.100s' was not found in the directory.",
                 cid ? cid : "");
        ret = send_entra_error(c, 400, "unauthorized_client", 700016, msg);
        goto out;
    }
    if (!scope || strcasecmp(scope, SCOPE) != 0) {
        ret = send_entra_error(c, 400, "invalid_scope", 1002012,
                               "The provided value for scope is not valid.");
        goto out;
    }
    if (!atype || strcmp(atype, ASSERTION_TYPE) != 0 || !assertion) {
        ret = send_entra_error(c, 400, "invalid_request", 7000218,
                               "The request body must contain the following parameter: "
                               "'client_assertion' or 'client_secret'.");
        goto out;
    }
    if (jwt_parse(assertion, &j) < 0) {
        ret = send_entra_error(c, 400, "invalid_request", 50027,
                               "JWT token is invalid or malformed.");
        goto out;
    }
    const char *alg = jstr(j.header, "alg"), *x5t = jstr(j.header, "x5t"),
               *x5t256 = jstr(j.header, "x5t#S256");
    if (!alg || strcmp(alg, "RS256") != 0) {
        ret =
            send_entra_error(c, 400, "invalid_request", 5002738,
                             "Invalid JWT token. The client assertion must be signed with RS256.");
        goto out;
    }
    bool known = r->app_key &&
                 ((x5t && strcmp(x5t, r->x5t) == 0) || (x5t256 && strcmp(x5t256, r->x5t256) == 0));
    bool sig_ok = false;
    if (known && (md = EVP_MD_CTX_new()) &&
        EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, r->app_key) == 1)
        sig_ok = EVP_DigestVerify(md, j.sig, j.sig_len, (const unsigned char *)j.signed_part,
                                  j.signed_len) == 1;
    if (!sig_ok) {
        snprintf(msg, sizeof msg,
                 "Client assertion contains an invalid signature. [Reason - %s, Thumbprint of key "
                 "used by client: '%.64s']",
                 known ? "The signature is not valid." : "The key was not found.",
                 x5t      ? x5t
                 : x5t256 ? x5t256
                          : "");
        ret = send_entra_error(c, 400, "invalid_client", 700027, msg);
        goto out;
    }
    const char *iss = jstr(j.claims, "iss"), *sub = jstr(j.claims, "sub"),
               *aud = jstr(j.claims, "aud"), *jti = jstr(j.claims, "jti");
    int64_t nbf = 0, exp = 0, now = eg_now_ms() / 1000;
    if (!iss || !sub || strcasecmp(iss, cid) != 0 || strcasecmp(sub, cid) != 0) {
        ret = send_entra_error(c, 400, "unauthorized_client", 700021,
                               "Client assertion application identifier doesn't match "
                               "'client_id' parameter.");
        goto out;
    }
    if (!aud || !aud_matches(aud, tenant)) {
        ret = send_entra_error(c, 400, "invalid_grant", 700212,
                               "No matching federated identity record found for presented "
                               "assertion audience.");
        goto out;
    }
    if (!num_claim(j.claims, "exp", &exp) ||
        (num_claim(j.claims, "nbf", &nbf) && nbf > now + SKEW_S) || exp < now - SKEW_S) {
        ret = send_entra_error(c, 400, "invalid_grant", 700024,
                               "Client assertion is not within its valid time range.");
        goto out;
    }
    if (!jti || !jti[0]) {
        ret = send_entra_error(c, 400, "invalid_grant", 700025,
                               "Client assertion has no 'jti' claim.");
        goto out;
    }
    char *at = make_access_token(r);
    json_t *resp = at ? json_pack("{s:s, s:I, s:I, s:s}", "token_type", "Bearer", "expires_in",
                                  (json_int_t)r->lifetime_s, "ext_expires_in",
                                  (json_int_t)r->lifetime_s, "access_token", at)
                      : NULL;
    if (at) {
        eg_memzero(at, strlen(at));
        eg_free(at);
    }
    eg_log_info("POST token: 200 (app %s)", r->app_id);
    ret = send_json(c, 200, "application/json; charset=utf-8", resp, NULL, 0);
out:
    EVP_MD_CTX_free(md);
    jwt_clear(&j);
    eg_free(grant);
    eg_free(cid);
    eg_free(scope);
    eg_free(atype);
    if (assertion) {
        eg_memzero(assertion, strlen(assertion));
        eg_free(assertion);
    }
    return ret;
}

/* Check "Bearer <token>" against our key and claims. NULL = valid, else the reason (logged). */
static const char *bearer_check(const struct fe_rest *r, const char *auth, const char *url_tenant)
{
    struct jwt j = {0};
    const char *why = NULL;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return "no bearer token";
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    if (jwt_parse(tok, &j) < 0)
        return "malformed token";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    const char *alg = jstr(j.header, "alg");
    const json_t *roles = json_object_get(j.claims, "roles");
    const char *aud = jstr(j.claims, "aud"), *tid = jstr(j.claims, "tid");
    int64_t exp = 0;
    bool has_role = false;
    size_t i;
    json_t *v;
    json_array_foreach(roles, i, v) has_role |=
        json_is_string(v) && strcmp(json_string_value(v), ROLE) == 0;
    if (!alg || strcmp(alg, "HS256") != 0 ||
        !HMAC(EVP_sha256(), r->key, sizeof r->key, (const unsigned char *)j.signed_part,
              j.signed_len, mac, &ml) ||
        j.sig_len != ml || CRYPTO_memcmp(mac, j.sig, ml) != 0)
        why = "bad signature";
    else if (!aud || strcmp(aud, RESOURCE) != 0)
        why = "wrong audience";
    else if (!has_role)
        why = "no Exchange.ManageAsApp role";
    else if (!tid || strcasecmp(tid, r->tenant_guid) != 0 || !our_tenant(r, url_tenant))
        why = "tenant mismatch";
    else if (!num_claim(j.claims, "exp", &exp) || exp <= eg_now_ms() / 1000)
        why = "expired";
    jwt_clear(&j);
    return why;
}

/* =========================================================================================== */
/* InvokeCommand: parameters                                                                    */
/* =========================================================================================== */

static int to_value(const json_t *j, int depth, struct eg_ps_value **ret);

static int array_value(const json_t *j, int depth, struct eg_ps_value **ret)
{
    size_t i, n = json_array_size(j);
    json_t *it;
    bool all_str = true;
    json_array_foreach(j, i, it) all_str &= json_is_string(it);
    if (all_str) {
        const char **items = n ? eg_calloc(n, sizeof *items) : NULL;
        if (n && !items)
            return EG_ENOMEM;
        json_array_foreach(j, i, it) items[i] = json_string_value(it);
        *ret = eg_ps_new_string_array(items, n);
        eg_free(items);
        return *ret ? 0 : EG_ENOMEM;
    }
    static const char *const tn[] = {"System.Object[]", "System.Array", "System.Object"};
    struct eg_ps_value *l = eg_ps_new_list(tn, 3);
    if (!l)
        return EG_ENOMEM;
    json_array_foreach(j, i, it)
    {
        struct eg_ps_value *x = NULL;
        int rc = to_value(it, depth + 1, &x);
        if (rc == 0)
            rc = eg_ps_obj_add_item(l, x);
        if (rc < 0) {
            eg_ps_value_free(l);
            return rc;
        }
    }
    *ret = l;
    return 0;
}

/* A JSON parameter value as CLIXML: strings, numbers, booleans, null, arrays (of strings:
 * string[]), objects (GenericHashTable: a hashtable without the "@odata.*" annotations). */
static int to_value(const json_t *j, int depth, struct eg_ps_value **ret)
{
    if (depth > EG_MOCK_REST_MAX_DEPTH)
        return EG_ELIMIT;
    switch (json_typeof(j)) {
    case JSON_STRING:
        *ret = eg_ps_new_stringn(json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        *ret = v >= INT32_MIN && v <= INT32_MAX ? eg_ps_new_i32((int32_t)v) : eg_ps_new_i64(v);
        break;
    }
    case JSON_REAL:
        *ret = eg_ps_new_double(json_real_value(j));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        *ret = eg_ps_new_bool(json_is_true(j));
        break;
    case JSON_NULL:
        *ret = eg_ps_new_nil();
        break;
    case JSON_ARRAY:
        return array_value(j, depth, ret);
    case JSON_OBJECT: {
        struct eg_ps_value *h = eg_ps_new_hashtable();
        const char *k;
        json_t *v;
        if (!h)
            return EG_ENOMEM;
        json_object_foreach((json_t *)j, k, v)
        {
            if (strchr(k, '@'))
                continue; /* "@odata.type" and "X@odata.type" annotations */
            struct eg_ps_value *x = NULL;
            int rc = to_value(v, depth + 1, &x);
            if (rc == 0)
                rc = eg_ps_obj_add_entry(h, eg_ps_new_string(k), x);
            if (rc < 0) {
                eg_ps_value_free(h);
                return rc;
            }
        }
        *ret = h;
        return 0;
    }
    default:
        return EG_EINVAL;
    }
    return *ret ? 0 : EG_ENOMEM;
}

/* =========================================================================================== */
/* InvokeCommand: running and paging                                                            */
/* =========================================================================================== */

struct run_ctx {
    size_t skip, page, seen;
    json_t *values, *warnings;
    bool more;
    bool have_err;
    struct mx_error err;
};

/* An output object as EXO renders it: the properties, without the CLIXML type names and
 * ToString, a "#Collection(String)" annotation before each string array. */
static json_t *exo_object(json_t *src)
{
    if (!json_is_object(src))
        return json_incref(src);
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(src, k, v)
    {
        if (!o)
            break;
        if (strcmp(k, "_types") == 0 || strcmp(k, "_tostring") == 0 || strcmp(k, "_value") == 0)
            continue;
        if (json_is_array(v)) {
            char *ak = eg_asprintf("%s@odata.type", k);
            if (!ak || json_object_set_new(o, ak, json_string("#Collection(String)")) < 0) {
                eg_free(ak);
                json_decref(o);
                return NULL;
            }
            eg_free(ak);
        }
        if (json_object_set(o, k, v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static int cb_object(void *vctx, struct eg_ps_value *obj)
{
    struct run_ctx *x = vctx;
    int rc = 0;
    if (x->seen < x->skip) {
        x->seen++;
        goto out;
    }
    if (json_array_size(x->values) >= x->page) {
        x->more = true;
        rc = PAGE_FULL;
        goto out;
    }
    json_t *j = NULL, *o = NULL;
    if ((rc = eg_clixml_to_json(obj, &j)) < 0)
        goto out;
    o = exo_object(j);
    json_decref(j);
    if (!o || json_array_append_new(x->values, o) < 0)
        rc = EG_ENOMEM;
    x->seen++;
out:
    eg_ps_value_free(obj);
    return rc;
}

static int cb_warning(void *vctx, const char *text)
{
    struct run_ctx *x = vctx;
    if (x->seen < x->skip)
        return 0; /* said while producing an earlier page */
    return json_array_append_new(x->warnings, json_string(text)) < 0 ? EG_ENOMEM : 0;
}

static int cb_error(void *vctx, const struct mx_error *e)
{
    struct run_ctx *x = vctx;
    if (!x->have_err) {
        x->err = *e;
        x->have_err = true;
    }
    return 0;
}

static const struct mx_output_ops rest_ops = {
    .object = cb_object, .warning = cb_warning, .error = cb_error};

static enum MHD_Result send_mx_error(struct MHD_Connection *c, const struct mx_error *e)
{
    char details[1600], ra[32];
    const char *retry = NULL;
    if (e->details_message[0])
        snprintf(details, sizeof details, "%s", e->details_message);
    else
        snprintf(details, sizeof details, "|%s|%s", e->exception_type, e->message);
    int status = e->http_status >= 400 && e->http_status <= 599 ? e->http_status : 500;
    if (e->throttled) {
        status = 429;
        snprintf(ra, sizeof ra, "%lld", (long long)((e->retry_after_ms + 999) / 1000));
        retry = ra;
    }
    const char *code = e->rest_code[0] ? e->rest_code
                       : status == 429 ? "TooManyRequests"
                                       : "InternalServerError";
    eg_log_info("POST InvokeCommand (%s): %d %s", e->activity, status, e->exception_type);
    return send_exo_error(c, (unsigned)status, code, e->message, details, e->exception_type, retry);
}

static void cursor_sweep_locked(struct fe_rest *r, int64_t now)
{
    for (size_t i = 0; i < EG_MOCK_REST_MAX_CURSORS; i++)
        if (r->cursors[i].used && now - r->cursors[i].created_ms > EG_MOCK_REST_CURSOR_TTL_MS)
            r->cursors[i].used = false;
}

/* A new cursor for offset; token (33 bytes) gets its text. */
static int cursor_new(struct mx_fe *fe, const uint8_t hash[32], size_t offset, char *token)
{
    uint8_t rnd[16];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return EG_EINTERNAL;
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
    int64_t now = eg_mono_ms();
    pthread_mutex_lock(&fe->lock);
    struct fe_rest *r = fe->rest;
    cursor_sweep_locked(r, now);
    size_t slot = 0;
    for (size_t i = 0; i < EG_MOCK_REST_MAX_CURSORS; i++) {
        if (!r->cursors[i].used) {
            slot = i;
            break;
        }
        if (r->cursors[i].created_ms < r->cursors[slot].created_ms)
            slot = i; /* all in use: evict the oldest */
    }
    struct cursor *cu = &r->cursors[slot];
    cu->used = true;
    snprintf(cu->token, sizeof cu->token, "%s", token);
    memcpy(cu->body_hash, hash, 32);
    cu->offset = offset;
    cu->created_ms = now;
    pthread_mutex_unlock(&fe->lock);
    return 0;
}

/* The offset of cursor token for this body. EG_ENOTFOUND (unknown or expired), EG_ECONFLICT
 * (another body). The cursor stays (a client may retry the same page). */
static int cursor_get(struct mx_fe *fe, const char *token, const uint8_t hash[32], size_t *ret)
{
    int rc = EG_ENOTFOUND;
    pthread_mutex_lock(&fe->lock);
    struct fe_rest *r = fe->rest;
    cursor_sweep_locked(r, eg_mono_ms());
    for (size_t i = 0; i < EG_MOCK_REST_MAX_CURSORS; i++) {
        struct cursor *cu = &r->cursors[i];
        if (cu->used && strcmp(cu->token, token) == 0) {
            if (memcmp(cu->body_hash, hash, 32) != 0) {
                rc = EG_ECONFLICT;
            } else {
                *ret = cu->offset;
                rc = 0;
            }
            break;
        }
    }
    pthread_mutex_unlock(&fe->lock);
    return rc;
}

static size_t page_size_of(struct MHD_Connection *c)
{
    const char *p = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Prefer");
    const char *m = p ? strcasestr(p, "odata.maxpagesize=") : NULL;
    int64_t n = EG_MOCK_REST_MAX_PAGE_SIZE;
    if (m) {
        char num[24];
        m += strlen("odata.maxpagesize=");
        size_t l = strspn(m, "0123456789");
        snprintf(num, sizeof num, "%.*s", (int)(l < 20 ? l : 20), m);
        if (eg_parse_int64(num, 1, INT64_MAX, &n) < 0 || n > EG_MOCK_REST_MAX_PAGE_SIZE)
            n = EG_MOCK_REST_MAX_PAGE_SIZE;
    }
    return (size_t)n;
}

/* "scheme://host" of this request (the Host header when it is sane, else the listener). */
static void base_url(struct fe_listener *l, struct MHD_Connection *c, char *out, size_t size)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *scheme = l->fe->tls_cert ? "https" : "http";
    if (h && h[0] && strlen(h) < 200 && !strpbrk(h, " \t\"\\/?#<>"))
        snprintf(out, size, "%s://%s", scheme, h);
    else if (strchr(l->host, ':'))
        snprintf(out, size, "%s://[%s]:%u", scheme, l->host, (unsigned)l->port);
    else
        snprintf(out, size, "%s://%s:%u", scheme, l->host, (unsigned)l->port);
}

static enum MHD_Result invoke_request(struct fe_listener *l, struct MHD_Connection *c,
                                      const char *tenant, const char *ver, const char *body,
                                      size_t len)
{
    struct mx_fe *fe = l->fe;
    struct run_ctx x = {0};
    struct mx_param *params = NULL;
    size_t n_params = 0;
    json_t *req = NULL, *resp = NULL;
    struct mx_error term;
    enum MHD_Result ret;
    char msg[600];
    uint8_t hash[32];
    unsigned int hl = 0;

    memset(&term, 0, sizeof term);
    const char *auth =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *why = bearer_check(fe->rest, auth, tenant);
    if (why)
        return send_unauthorized(c, why);

    pthread_mutex_lock(&fe->lock);
    int64_t ra_s = -1;
    if (fe->faults.rest_429_count) {
        fe->faults.rest_429_count--;
        ra_s = fe->faults.rest_429_retry_after_s;
    }
    pthread_mutex_unlock(&fe->lock);
    if (ra_s >= 0) {
        char ra[32];
        snprintf(ra, sizeof ra, "%lld", (long long)ra_s);
        struct hdr h[] = {{MHD_HTTP_HEADER_RETRY_AFTER, ra}};
        eg_log_info("POST InvokeCommand: 429 (fault injection)");
        return send_body(c, 429, "text/plain; charset=utf-8", eg_strdup(TOO_MANY), h, 1);
    }

    json_error_t jerr;
    req = json_loadb(body, len, 0, &jerr);
    const json_t *in = json_object_get(req, "CmdletInput");
    const json_t *name = json_object_get(in, "CmdletName");
    const json_t *ps = json_object_get(in, "Parameters");
    if (!json_is_string(name) || !json_string_length(name) ||
        json_string_length(name) > EG_PSRP_MAX_CMDLET_NAME ||
        (ps && !json_is_object(ps) && !json_is_null(ps))) {
        ret = send_exo_error(c, 400, "BadRequest",
                             "The request body is not a valid InvokeCommand input "
                             "({\"CmdletInput\":{\"CmdletName\":..., \"Parameters\":{...}}}).",
                             "|Microsoft.Exchange.Admin.OData.Core.ODataServiceException|"
                             "Invalid request body.",
                             ODATA_EXC, NULL);
        goto out;
    }
    if (json_is_object(ps) && json_object_size(ps) > EG_MOCK_REST_MAX_PARAMS) {
        ret = send_exo_error(c, 400, "BadRequest", "Too many parameters.",
                             "|System.ArgumentException|Too many parameters.",
                             "System.ArgumentException", NULL);
        goto out;
    }
    if (EVP_Digest(body, len, hash, &hl, EVP_sha256(), NULL) != 1) {
        ret = MHD_NO;
        goto out;
    }
    const char *skiptoken = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "$skiptoken");
    if (skiptoken) {
        int rc = cursor_get(fe, skiptoken, hash, &x.skip);
        if (rc < 0) {
            snprintf(msg, sizeof msg, "%s",
                     rc == EG_ECONFLICT
                         ? "The request body differs from the one that started this paging."
                         : "The skip token is not valid or has expired.");
            ret = send_exo_error(c, 400, "BadRequest", msg,
                                 rc == EG_ECONFLICT ? "|System.ArgumentException|Body mismatch."
                                                    : "|System.ArgumentException|Bad skip token.",
                                 "System.ArgumentException", NULL);
            goto out;
        }
    }
    if (json_is_object(ps) && json_object_size(ps)) {
        if (!(params = eg_calloc(json_object_size(ps), sizeof *params))) {
            ret = MHD_NO;
            goto out;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)ps, k, v)
        {
            if (strchr(k, '@'))
                continue; /* annotations such as "X@odata.type" */
            struct eg_ps_value *pv = NULL;
            int rc = to_value(v, 0, &pv);
            if (rc < 0) {
                snprintf(msg, sizeof msg, "Cannot convert the value of parameter '%.128s': %s.", k,
                         eg_strerror(rc));
                ret =
                    send_exo_error(c, 400, "BadRequest", msg,
                                   "|System.Management.Automation.ParameterBindingException|"
                                   "Bad parameter value.",
                                   "System.Management.Automation.ParameterBindingException", NULL);
                goto out;
            }
            params[n_params].name = k;
            params[n_params++].value = pv;
        }
    }

    x.page = page_size_of(c);
    x.values = json_array();
    x.warnings = json_array();
    if (!x.values || !x.warnings) {
        ret = MHD_NO;
        goto out;
    }
    struct fe_org *org = fe_org_get(fe);
    int rc = mx_invoke(org->org, json_string_value(name), params, n_params, &rest_ops, &x, &term);
    fe_org_put(fe, org);
    if (rc == EG_EREMOTE) {
        ret = send_mx_error(c, &term);
        goto out;
    }
    if (rc < 0 && !(rc == PAGE_FULL && x.more)) {
        snprintf(msg, sizeof msg, "The mock Exchange engine failed: %s", eg_strerror(rc));
        ret = send_exo_error(c, 500, "InternalServerError", msg,
                             "|System.InvalidOperationException|The mock Exchange engine failed.",
                             "System.InvalidOperationException", NULL);
        goto out;
    }
    if (x.have_err) {
        ret = send_mx_error(c, &x.err);
        goto out;
    }
    char base[300], ctx[700];
    base_url(l, c, base, sizeof base);
    snprintf(ctx, sizeof ctx, "%s/adminapi/%s/%s/$metadata#Collection(Exchange.GenericHashTable)",
             base, ver, tenant);
    resp = json_pack("{s:s, s:s, s:O, s:O}", "@odata.context", ctx, "adminapi.warnings@odata.type",
                     "#Collection(String)", "@adminapi.warnings", x.warnings, "value", x.values);
    if (resp && x.more) {
        char token[33], link[900];
        if ((rc = cursor_new(fe, hash, x.skip + x.page, token)) < 0) {
            ret = MHD_NO;
            goto out;
        }
        snprintf(link, sizeof link, "%s/adminapi/%s/%s/InvokeCommand?$skiptoken=%s", base, ver,
                 tenant, token);
        (void)json_object_set_new(resp, "@odata.nextLink", json_string(link));
    }
    eg_log_info("POST InvokeCommand (%s): 200, %zu objects from %zu%s", json_string_value(name),
                json_array_size(x.values), x.skip, x.more ? ", more" : "");
    struct hdr h[] = {{"OData-Version", "4.0"},
                      {"Preference-Applied", "odata.include-annotations=\"*\""},
                      {"Rate-Limit-Limit", "30000"}};
    ret = send_json(c, 200, ODATA_CT, resp, h, sizeof h / sizeof *h);
    resp = NULL;
out:
    for (size_t i = 0; i < n_params; i++)
        eg_ps_value_free((struct eg_ps_value *)params[i].value);
    eg_free(params);
    json_decref(x.values);
    json_decref(x.warnings);
    json_decref(resp);
    json_decref(req);
    return ret;
}

enum MHD_Result fe_rest_request(struct fe_listener *l, struct MHD_Connection *c, const char *url,
                                const char *body, size_t len, bool too_big, bool drop_after)
{
    char tenant[256], ver[8];
    enum rest_kind k = classify(url, tenant, sizeof tenant, ver, sizeof ver);
    if (too_big)
        return send_body(c, 413, "text/html", eg_strdup("<h1>Request Entity Too Large</h1>"), NULL,
                         0);
    /* drop_after: the request is processed (the cmdlet runs), then MHD_NO closes the
     * connection before the queued answer is sent */
    if (drop_after)
        eg_log_info("POST %s: answer dropped after processing (fault injection)", url);
    enum MHD_Result ret = k == RK_TOKEN ? token_request(l->fe, c, tenant, body, len)
                                        : invoke_request(l, c, tenant, ver, body, len);
    return drop_after ? MHD_NO : ret;
}
