/* test_eo_token.c - the Exchange Online app-only token (exchange/eo_token): the RS256 client
 * assertion (header, every claim, the signature verified here with the certificate's public
 * key), option checks (non-RSA, mismatched and encrypted keys, URLs), and against the mock's
 * token endpoint: the cache (a second call within the lifetime sends no request; expiry, with
 * the 5-minute and the 10 % margins, forces one), invalidation after a 401, one request for
 * several threads at once, and a refused app (no secret in the error). The cache's clock is the
 * test's own. The mock part is skipped when the mock was not built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "common/base64.h"
#include "exchange/eo_token.h"
#include "mock_exchange_helper.h"

#define TENANT  "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
#define APP_ID  "3c5d7e9f-1111-4222-8333-444455556666"
#define EXO_URL "https://login.microsoftonline.com/" TENANT "/oauth2/v2.0/token"

static struct {
    char dir[PATH_MAX];
    char *cert, *key, *cert_file;
    EVP_PKEY *pkey;
} g;

static int64_t fake_now;
static int64_t fake_clock(void)
{
    return fake_now;
}

static int group_setup(void **state)
{
    snprintf(g.dir, sizeof g.dir, "%.900s/eg-test-token.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g.dir) || make_app_pki("easgate-token-test", &g.cert, &g.key, &g.pkey) < 0 ||
        !(g.cert_file = write_temp(g.dir, "app.pem", g.cert)))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    eg_free(g.cert);
    eg_free(g.key);
    eg_free(g.cert_file);
    EVP_PKEY_free(g.pkey);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g.dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* base64url text -> bytes (NUL-terminated copy). */
static uint8_t *unb64url(const char *s, size_t len, size_t *ret_len)
{
    char *t = eg_malloc(len + 4);
    size_t n = 0;
    assert_non_null(t);
    for (size_t i = 0; i < len; i++) {
        assert_true(s[i] != '+' && s[i] != '/' && s[i] != '=');
        t[n++] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    }
    while (n % 4)
        t[n++] = '=';
    uint8_t *out = NULL;
    assert_int_equal(eg_base64_decode(t, n, 0, &out, ret_len), 0);
    eg_free(t);
    return out;
}

static json_t *part_json(const char *s, size_t len)
{
    size_t n = 0;
    uint8_t *raw = unb64url(s, len, &n);
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    eg_free(raw);
    assert_true(json_is_object(j));
    return j;
}

static struct eg_eo_token_opts topts(const char *url)
{
    return (struct eg_eo_token_opts){.app_id = APP_ID,
                                     .cert_pem = g.cert,
                                     .key_pem = g.key,
                                     .token_url = url,
                                     .allow_http = true,
                                     .clock_ms = fake_clock};
}

static void test_assertion(void **state)
{
    struct eg_eo_token *t = NULL;
    struct eg_eo_token_opts o = topts(EXO_URL);
    assert_int_equal(eg_eo_token_new(&o, &t), 0);
    char *jwt = NULL, *jwt2 = NULL;
    const int64_t now = 1700000000;
    assert_int_equal(eg_eo_token_assertion(t, now, &jwt), 0);
    assert_int_equal(eg_eo_token_assertion(t, now, &jwt2), 0);
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));

    json_t *h = part_json(jwt, (size_t)(d1 - jwt));
    assert_int_equal(json_object_size(h), 3);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
    /* x5t = base64url(SHA-1(certificate DER)), computed here independently */
    BIO *bio = BIO_new_mem_buf(g.cert, -1);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(x);
    unsigned char *der = NULL;
    int der_len = i2d_X509(x, &der);
    assert_true(der_len > 0);
    unsigned char sha1[20];
    unsigned int sl = 0;
    assert_int_equal(EVP_Digest(der, (size_t)der_len, sha1, &sl, EVP_sha1(), NULL), 1);
    OPENSSL_free(der);
    size_t xl = 0;
    const char *x5t = json_string_value(json_object_get(h, "x5t"));
    uint8_t *xd = unb64url(x5t, strlen(x5t), &xl);
    assert_int_equal(xl, 20);
    assert_memory_equal(xd, sha1, 20);
    eg_free(xd);
    json_decref(h);

    json_t *c = part_json(d1 + 1, (size_t)(d2 - d1 - 1));
    assert_int_equal(json_object_size(c), 6);
    assert_string_equal(json_string_value(json_object_get(c, "aud")), EXO_URL);
    assert_string_equal(json_string_value(json_object_get(c, "iss")), APP_ID);
    assert_string_equal(json_string_value(json_object_get(c, "sub")), APP_ID);
    assert_int_equal(json_integer_value(json_object_get(c, "nbf")), now);
    assert_int_equal(json_integer_value(json_object_get(c, "exp")), now + 600);
    const char *jti = json_string_value(json_object_get(c, "jti"));
    assert_non_null(jti);
    assert_int_equal(strlen(jti), 36);
    assert_int_equal(jti[14], '4'); /* version 4 */
    assert_true(strchr("89ab", jti[19]) != NULL);
    /* jti differs between assertions */
    const char *e1 = strchr(jwt2, '.'), *e2 = strchr(e1 + 1, '.');
    json_t *c2 = part_json(e1 + 1, (size_t)(e2 - e1 - 1));
    assert_string_not_equal(json_string_value(json_object_get(c2, "jti")), jti);
    json_decref(c2);
    json_decref(c);

    /* RS256 over "header.payload" with the certificate's public key */
    size_t sig_len = 0;
    uint8_t *sig = unb64url(d2 + 1, strlen(d2 + 1), &sig_len);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)), 1);
    assert_int_equal(
        EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    /* and a changed payload does not verify */
    EVP_MD_CTX_free(md);
    md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)), 1);
    jwt[(d1 - jwt) + 3] ^= 1;
    assert_int_not_equal(
        EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    EVP_MD_CTX_free(md);
    eg_free(sig);
    X509_free(x);
    eg_free(jwt);
    eg_free(jwt2);
    eg_eo_token_free(t);
}

static void test_options(void **state)
{
    struct eg_eo_token *t = NULL;
    struct eg_eo_token_opts o = topts(EXO_URL);
    o.app_id = "bad id";
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    o = topts("http://login.example.com/t/oauth2/v2.0/token"); /* http beyond loopback */
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    o = topts("http://127.0.0.1:9/t");
    o.allow_http = false;
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    o = topts(EXO_URL);
    o.key_pem = "-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n";
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    o = topts(EXO_URL);
    o.io_timeout_ms = -5;
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    /* another RSA key */
    char *c2 = NULL, *k2 = NULL;
    assert_int_equal(make_app_pki("other", &c2, &k2, NULL), 0);
    o = topts(EXO_URL);
    o.key_pem = k2;
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    eg_free(c2);
    eg_free(k2);
    /* an encrypted key is refused without prompting for a pass phrase */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, g.pkey, EVP_aes_256_cbc(),
                                              (unsigned char *)"secret", 6, NULL, NULL),
                     1);
    char *enc = bio_text(b);
    o = topts(EXO_URL);
    o.key_pem = enc;
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    eg_free(enc);
    /* an EC key and certificate */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, ec);
    assert_true(X509_sign(x, ec, EVP_sha256()) > 0);
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bc, x);
    PEM_write_bio_PrivateKey(bk, ec, NULL, NULL, 0, NULL, NULL);
    char *ecc = bio_text(bc), *eck = bio_text(bk);
    o = topts(EXO_URL);
    o.cert_pem = ecc;
    o.key_pem = eck;
    assert_int_equal(eg_eo_token_new(&o, &t), EG_EINVAL);
    assert_null(t);
    eg_free(ecc);
    eg_free(eck);
    X509_free(x);
    EVP_PKEY_free(ec);
}

/* ---- against the mock's token endpoint ------------------------------------------------------ */

static int start_mock(struct mockx *m, const char *lifetime, char *url, size_t size)
{
    const char *const args[] = {"--profile",          "online", "--tenant",   TENANT,
                                "--app-id",           APP_ID,   "--app-cert", g.cert_file,
                                "--token-lifetime-s", lifetime, NULL};
    if (mockx_start(m, NULL, args) < 0)
        return -1;
    snprintf(url, size, "http://127.0.0.1:%u/%s/oauth2/v2.0/token", (unsigned)m->port, TENANT);
    return 0;
}

static void cache_for(const char *lifetime_s, int64_t valid_ms)
{
    struct mockx m;
    struct eg_eo_token *t = NULL;
    struct eg_bridge_error err;
    char url[160];
    char *a = NULL, *b = NULL;
    if (!mockx_binary())
        skip();
    assert_int_equal(start_mock(&m, lifetime_s, url, sizeof url), 0);
    struct eg_eo_token_opts o = topts(url);
    assert_int_equal(eg_eo_token_new(&o, &t), 0);
    fake_now = 1000000;
    assert_int_equal(eg_eo_token_fetches(t), 0);
    assert_int_equal(eg_eo_token_get(t, &a, &err), 0);
    assert_int_equal(eg_eo_token_fetches(t), 1);
    assert_true(strlen(a) > 20);
    /* within the lifetime: no request, the same token */
    fake_now += valid_ms - 1;
    assert_int_equal(eg_eo_token_get(t, &b, &err), 0);
    assert_int_equal(eg_eo_token_fetches(t), 1);
    assert_string_equal(a, b);
    eg_free(b);
    /* at the refresh point: a new request */
    fake_now += 1;
    assert_int_equal(eg_eo_token_get(t, &b, &err), 0);
    assert_int_equal(eg_eo_token_fetches(t), 2);
    eg_free(b);
    /* invalidation: another token changes nothing, the current one forces a request */
    eg_eo_token_invalidate(t, "not-the-token");
    eg_eo_token_invalidate(t, NULL);
    assert_int_equal(eg_eo_token_get(t, &b, &err), 0);
    assert_int_equal(eg_eo_token_fetches(t), 2);
    eg_eo_token_invalidate(t, b);
    eg_free(b);
    assert_int_equal(eg_eo_token_get(t, &b, &err), 0);
    assert_int_equal(eg_eo_token_fetches(t), 3);
    eg_free(b);
    eg_free(a);
    eg_eo_token_free(t);
    mockx_stop(&m);
}

static void test_cache_five_minutes(void **state)
{
    /* 3599 s: 10 % would be 360 s, so the 5 minutes apply */
    cache_for("3599", (3599 - 300) * INT64_C(1000));
}

static void test_cache_ten_percent(void **state)
{
    /* 600 s: 10 % (60 s) is shorter than 5 minutes */
    cache_for("600", (600 - 60) * INT64_C(1000));
}

struct racer {
    struct eg_eo_token *t;
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char *tok = NULL;
    struct eg_bridge_error err;
    r->rc = eg_eo_token_get(r->t, &tok, &err);
    eg_free(tok);
    return NULL;
}

static void test_single_flight_and_refusal(void **state)
{
    struct mockx m;
    struct eg_eo_token *t = NULL;
    struct eg_bridge_error err;
    char url[160];
    if (!mockx_binary())
        skip();
    assert_int_equal(start_mock(&m, "3599", url, sizeof url), 0);
    struct eg_eo_token_opts o = topts(url);
    o.clock_ms = NULL; /* the real clock */
    assert_int_equal(eg_eo_token_new(&o, &t), 0);
    pthread_t th[6];
    struct racer r[6];
    for (int i = 0; i < 6; i++) {
        r[i] = (struct racer){.t = t, .rc = -99};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, 0);
    }
    assert_int_equal(eg_eo_token_fetches(t), 1);
    eg_eo_token_free(t);

    /* an app id the tenant does not know: refused, not transient, no secret in the error */
    o.app_id = "00000000-0000-0000-0000-000000000bad";
    assert_int_equal(eg_eo_token_new(&o, &t), 0);
    char *tok = NULL;
    assert_int_equal(eg_eo_token_get(t, &tok, &err), EG_EAUTH);
    assert_null(tok);
    assert_string_equal(err.code, "permission_denied");
    assert_false(err.transient);
    assert_non_null(strstr(err.message, "unauthorized_client"));
    assert_non_null(strstr(err.message, "AADSTS700016"));
    assert_null(strstr(err.message, "eyJ")); /* no JWT (base64url of '{"') anywhere */
    assert_null(strstr(err.exchange_message, "eyJ"));
    eg_eo_token_free(t);
    mockx_stop(&m);

    /* nothing listens any more: unreachable, transient */
    o = topts(url);
    assert_int_equal(eg_eo_token_new(&o, &t), 0);
    assert_true(eg_eo_token_get(t, &tok, &err) < 0);
    assert_string_equal(err.code, "exchange_unreachable");
    assert_true(err.transient);
    eg_eo_token_free(t);
}

int main(int argc, char **argv)
{
    eg_alloc_init();
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assertion),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_cache_five_minutes),
        cmocka_unit_test(test_cache_ten_percent),
        cmocka_unit_test(test_single_flight_and_refusal),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
