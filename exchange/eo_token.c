/* eo_token.c - client assertion and cached app-only token (contract: eo_token.h). */
#include "exchange/eo_token.h"

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/rest_json.h"
#include "transport/http_client.h"

#define ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define FORM_TYPE      "application/x-www-form-urlencoded"

struct eg_eo_token {
    EVP_PKEY *key;
    char x5t[64];
    char *app_id, *token_url, *ca_file;
    bool insecure;
    int64_t connect_ms, io_ms, response_ms;
    int64_t (*clock_ms)(void);

    pthread_mutex_t lock; /* guards everything below; held during a fetch (single flight) */
    struct eg_http_client *http;
    char *token;
    int64_t valid_until_ms;
    unsigned long fetches;
};

static void wipe_free(char *s)
{
    if (s) {
        eg_memzero(s, strlen(s));
        eg_free(s);
    }
}

/* ---- base64url, JSON parts ------------------------------------------------------------------ */

static char *b64url(const void *data, size_t len)
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

static char *b64url_json(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!text)
        return NULL;
    char *s = b64url(text, strlen(text));
    eg_free(text);
    return s;
}

static bool id_chars_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 256)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '.' || *s == '_'))
            return false;
    return true;
}

/* A random (version 4) UUID in its 36-character text form. */
static int uuid4(char out[37])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return EG_EINTERNAL;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* ---- construction --------------------------------------------------------------------------- */

/* Never prompt for a pass phrase (the default callback reads the terminal). */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

void eg_eo_token_free(struct eg_eo_token *t)
{
    if (!t)
        return;
    EVP_PKEY_free(t->key);
    eg_http_client_free(t->http);
    wipe_free(t->token);
    eg_free(t->app_id);
    eg_free(t->token_url);
    eg_free(t->ca_file);
    pthread_mutex_destroy(&t->lock);
    eg_free(t);
}

int eg_eo_token_new(const struct eg_eo_token_opts *o, struct eg_eo_token **ret)
{
    struct eg_eo_token *t = NULL;
    BIO *bio = NULL;
    X509 *cert = NULL;
    int rc = EG_EINVAL;

    if (!o || !ret || !id_chars_ok(o->app_id) || !o->cert_pem || !o->key_pem || !o->token_url ||
        !eg_rest_url_allowed(o->token_url, o->allow_http) ||
        eg_http_client_check_timeouts(o->connect_timeout_ms, o->io_timeout_ms,
                                      o->response_timeout_ms) < 0 ||
        strlen(o->cert_pem) > EG_MAX_PEM_BYTES || strlen(o->key_pem) > EG_MAX_PEM_BYTES)
        return EG_EINVAL;
    if (!(t = eg_calloc(1, sizeof *t)))
        return EG_ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    t->insecure = o->insecure;
    t->connect_ms = o->connect_timeout_ms;
    t->io_ms = o->io_timeout_ms;
    t->response_ms = o->response_timeout_ms;
    t->clock_ms = o->clock_ms ? o->clock_ms : eg_mono_ms;
    t->app_id = eg_strdup(o->app_id);
    t->token_url = eg_strdup(o->token_url);
    t->ca_file = o->ca_file ? eg_strdup(o->ca_file) : NULL;
    if (!t->app_id || !t->token_url || (o->ca_file && !t->ca_file)) {
        rc = EG_ENOMEM;
        goto out;
    }
    /* the certificate and its x5t */
    if (!(bio = BIO_new_mem_buf(o->cert_pem, (int)strlen(o->cert_pem)))) {
        rc = EG_ENOMEM;
        goto out;
    }
    cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    bio = NULL;
    if (!cert)
        goto out;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;
    char *x5t = NULL;
    if (X509_digest(cert, EVP_sha1(), d, &dn) != 1 || !(x5t = b64url(d, dn))) {
        rc = EG_ENOMEM;
        goto out;
    }
    snprintf(t->x5t, sizeof t->x5t, "%s", x5t);
    eg_free(x5t);
    /* the key: RSA, and the certificate's */
    if (!(bio = BIO_new_mem_buf(o->key_pem, (int)strlen(o->key_pem)))) {
        rc = EG_ENOMEM;
        goto out;
    }
    t->key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (!t->key || EVP_PKEY_get_base_id(t->key) != EVP_PKEY_RSA ||
        X509_check_private_key(cert, t->key) != 1)
        goto out;
    *ret = t;
    t = NULL;
    rc = 0;
out:
    if (rc < 0)
        ERR_clear_error(); /* leave no OpenSSL error behind for this thread's next TLS call */
    BIO_free(bio);
    X509_free(cert);
    eg_eo_token_free(t);
    return rc;
}

/* ---- the client assertion ------------------------------------------------------------------- */

int eg_eo_token_assertion(struct eg_eo_token *t, int64_t now_s, char **ret)
{
    char jti[37];
    char *h64 = NULL, *c64 = NULL, *s64 = NULL, *signing = NULL;
    unsigned char *sig = NULL;
    EVP_MD_CTX *md = NULL;
    int rc = EG_ENOMEM;

    if (!t || !ret)
        return EG_EINVAL;
    if (uuid4(jti) < 0)
        return EG_EINTERNAL;
    h64 = b64url_json(json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "x5t", t->x5t));
    c64 = b64url_json(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "aud", t->token_url, "iss",
                                t->app_id, "sub", t->app_id, "jti", jti, "nbf", (json_int_t)now_s,
                                "exp", (json_int_t)(now_s + EG_EO_ASSERTION_LIFETIME_S)));
    if (!h64 || !c64 || !(signing = eg_asprintf("%s.%s", h64, c64)))
        goto out;
    size_t sig_len = 0;
    rc = EG_EINTERNAL;
    if (!(md = EVP_MD_CTX_new()) || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, t->key) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)signing, strlen(signing)) != 1)
        goto out;
    rc = EG_ENOMEM;
    if (!(sig = eg_malloc(sig_len)))
        goto out;
    rc = EG_EINTERNAL;
    if (EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)signing, strlen(signing)) != 1)
        goto out;
    rc = EG_ENOMEM;
    if (!(s64 = b64url(sig, sig_len)) || !(*ret = eg_asprintf("%s.%s", signing, s64)))
        goto out;
    rc = 0;
out:
    if (rc == EG_EINTERNAL)
        ERR_clear_error();
    EVP_MD_CTX_free(md);
    eg_free(h64);
    eg_free(c64);
    eg_free(signing);
    eg_free(sig);
    eg_free(s64);
    return rc;
}

/* ---- fetching ------------------------------------------------------------------------------- */

/* Append name=value (percent-encoded) to a form body. */
static char *form_add(char *body, const char *name, const char *value)
{
    size_t vlen = strlen(value), have = body ? strlen(body) : 0;
    size_t need = have + 1 + strlen(name) + 1 + vlen * 3 + 1;
    char *nb = eg_malloc(need);
    if (!nb) {
        wipe_free(body);
        return NULL;
    }
    size_t n = 0;
    if (have) {
        memcpy(nb, body, have);
        n = have;
        nb[n++] = '&';
    }
    wipe_free(body);
    n += (size_t)snprintf(nb + n, need - n, "%s=", name);
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            nb[n++] = (char)ch;
        } else {
            nb[n++] = '%';
            nb[n++] = hex[ch >> 4];
            nb[n++] = hex[ch & 15];
        }
    }
    nb[n] = '\0';
    return nb;
}

static bool token_chars_ok(const char *s, size_t len)
{
    if (!len || len > EG_EO_MAX_TOKEN_BYTES)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

/* An Entra refusal (4xx other than 429) -> err. */
static void refused(const struct eg_http_client_response *hr, struct eg_bridge_error *err)
{
    json_t *doc = NULL;
    const char *code = NULL, *desc = NULL;
    if (eg_rest_json_load(hr->body, hr->body_len, &doc) == 0) {
        code = json_string_value(json_object_get(doc, "error"));
        desc = json_string_value(json_object_get(doc, "error_description"));
    }
    /* the description's first line ("AADSTS700027: Client assertion ...") */
    int dl = desc ? (int)strcspn(desc, "\r\n") : 0;
    eg_bridge_error_set(err, EG_BERR_PERMISSION_DENIED, false,
                        "Entra ID refused the app's token request (HTTP %ld%s%s)%s%.*s", hr->status,
                        code ? ", " : "", code ? code : "", dl ? ": " : "", dl > 300 ? 300 : dl,
                        desc ? desc : "");
    snprintf(err->exchange_type, sizeof err->exchange_type, "%s", code ? code : "");
    snprintf(err->exchange_message, sizeof err->exchange_message, "%.*s", dl, desc ? desc : "");
    json_decref(doc);
}

/* Read a 200 answer: the token and its lifetime in seconds. */
static int read_token(const struct eg_http_client_response *hr, char **ret, int64_t *ret_life_s)
{
    json_t *doc = NULL;
    int rc = eg_rest_json_load(hr->body, hr->body_len, &doc);
    if (rc < 0)
        return rc == EG_ENOMEM ? rc : EG_EPROTO;
    json_t *at = json_object_get(doc, "access_token"), *ex = json_object_get(doc, "expires_in");
    const char *tt = json_string_value(json_object_get(doc, "token_type"));
    int64_t life = 0;
    rc = EG_EPROTO;
    if (json_is_integer(ex))
        life = json_integer_value(ex);
    else if (!json_is_string(ex) || eg_parse_int64(json_string_value(ex), 1, INT64_MAX, &life) < 0)
        goto out;
    if (life < 1 || !json_is_string(at) ||
        !token_chars_ok(json_string_value(at), json_string_length(at)) ||
        (tt && strcasecmp(tt, "Bearer") != 0))
        goto out;
    if (life > EG_EO_MAX_TOKEN_LIFETIME_S)
        life = EG_EO_MAX_TOKEN_LIFETIME_S;
    if (!(*ret = eg_strdup(json_string_value(at)))) {
        rc = EG_ENOMEM;
        goto out;
    }
    *ret_life_s = life;
    rc = 0;
out:
    if (json_is_string(at)) /* jansson frees without wiping */
        eg_memzero((char *)json_string_value(at), json_string_length(at));
    json_decref(doc);
    return rc;
}

/* Fetch a new token (lock held). */
static int fetch(struct eg_eo_token *t, struct eg_bridge_error *err)
{
    struct eg_http_client_response hr = {0};
    char *assertion = NULL, *body = NULL, *token = NULL;
    int64_t life = 0;
    int rc;

    if (!t->http) {
        struct eg_http_client_opts ho = {.url = t->token_url,
                                         .ca_file = t->ca_file,
                                         .insecure = t->insecure,
                                         .connect_timeout_ms = t->connect_ms,
                                         .io_timeout_ms = t->io_ms,
                                         .response_timeout_ms = t->response_ms,
                                         .max_response_bytes = EG_REST_MAX_RESPONSE_BYTES};
        if ((rc = eg_http_client_new(&ho, &t->http)) < 0) {
            eg_bridge_error_set(err, rc == EG_ENOMEM ? EG_BERR_INTERNAL : EG_BERR_UNREACHABLE, true,
                                "cannot set up the HTTP client for the token endpoint: %s",
                                eg_strerror(rc));
            return rc;
        }
    }
    if ((rc = eg_eo_token_assertion(t, eg_now_ms() / 1000, &assertion)) < 0) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "cannot sign the client assertion: %s",
                            eg_strerror(rc));
        return rc;
    }
    body = form_add(NULL, "grant_type", "client_credentials");
    body = body ? form_add(body, "client_id", t->app_id) : NULL;
    body = body ? form_add(body, "scope", EG_EO_SCOPE) : NULL;
    body = body ? form_add(body, "client_assertion_type", ASSERTION_TYPE) : NULL;
    body = body ? form_add(body, "client_assertion", assertion) : NULL;
    wipe_free(assertion);
    if (!body) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory");
        return EG_ENOMEM;
    }
    static const struct eg_http_client_header accept[] = {{"Accept", "application/json"}};
    struct eg_http_client_req rq = {.method = "POST",
                                    .headers = accept,
                                    .n_headers = 1,
                                    .content_type = FORM_TYPE,
                                    .body = body,
                                    .body_len = strlen(body)};
    t->fetches++;
    rc = eg_http_client_request(t->http, &rq, &hr);
    wipe_free(body);
    if (rc == EG_EAUTH) {
        eg_bridge_error_set(err, EG_BERR_PERMISSION_DENIED, false,
                            "Entra ID refused the app's token request (HTTP 401)");
        goto out;
    }
    if (rc < 0) {
        eg_bridge_error_set(err,
                            rc == EG_ETIMEDOUT ? EG_BERR_TIMEOUT
                            : rc == EG_ENOMEM  ? EG_BERR_INTERNAL
                                               : EG_BERR_UNREACHABLE,
                            true, "token endpoint: %s: %s", eg_strerror(rc),
                            eg_http_client_last_error(t->http));
        goto out;
    }
    if (hr.status == 200) {
        if ((rc = read_token(&hr, &token, &life)) < 0) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, true,
                                "the token endpoint's answer holds no usable token");
            goto out;
        }
        int64_t margin =
            life / 10 < EG_EO_REFRESH_MARGIN_S ? life * 100 : EG_EO_REFRESH_MARGIN_S * 1000;
        wipe_free(t->token);
        t->token = token;
        t->valid_until_ms = t->clock_ms() + life * 1000 - margin;
        goto out;
    }
    if (hr.status == 429 || hr.status >= 500 || hr.status < 400) {
        struct eg_rest_answer a = {.status = hr.status,
                                   .content_type = hr.content_type,
                                   .retry_after =
                                       eg_http_client_response_header(&hr, "Retry-After"),
                                   .body = hr.body,
                                   .body_len = hr.body_len};
        eg_rest_classify(&a, EG_TARGET_ORG, err);
        if (hr.status < 400) /* 1xx/3xx (no redirects are followed) */
            eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true,
                                "the token endpoint answered HTTP %ld", hr.status);
        rc = hr.status == 429 ? EG_EAGAIN : EG_EUNAVAIL;
        goto out;
    }
    refused(&hr, err);
    rc = EG_EAUTH;
out:
    if (hr.body)
        eg_memzero(hr.body, hr.body_len);
    eg_http_client_response_clear(&hr);
    return rc;
}

int eg_eo_token_get(struct eg_eo_token *t, char **ret, struct eg_bridge_error *err)
{
    struct eg_bridge_error scratch;
    int rc = 0;
    if (!err)
        err = &scratch;
    if (!t || !ret) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "no token source");
        return EG_EINVAL;
    }
    pthread_mutex_lock(&t->lock);
    if (!t->token || t->clock_ms() >= t->valid_until_ms)
        rc = fetch(t, err);
    if (rc == 0 && !(*ret = eg_strdup(t->token))) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory");
        rc = EG_ENOMEM;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void eg_eo_token_invalidate(struct eg_eo_token *t, const char *token)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->token && token && strcmp(t->token, token) == 0) {
        wipe_free(t->token);
        t->token = NULL;
    }
    pthread_mutex_unlock(&t->lock);
}

unsigned long eg_eo_token_fetches(const struct eg_eo_token *t)
{
    if (!t)
        return 0;
    pthread_mutex_lock((pthread_mutex_t *)&t->lock);
    unsigned long n = t->fetches;
    pthread_mutex_unlock((pthread_mutex_t *)&t->lock);
    return n;
}
