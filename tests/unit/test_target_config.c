/* test_target_config.c - the runtime target document: every validation error with its JSON path,
 * defaults, redaction, secrets kept across PUTs, and persistence with sealed secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/secretbox.h"
#include "agent/target_config.h"
#include "common/alloc.h"
#include "common/util.h"

/* ---- test PKI, made in process ----------------------------------------------------------------
 */

static char *cert_pem, *key_pem, *cert2_pem, *key2_pem, *ca_pem;

static char *bio_text(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = eg_strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static void make_pair(const char *cn, char **ret_cert, char **ret_key)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL);
    *ret_cert = bio_text(cb);
    *ret_key = bio_text(kb);
    X509_free(x);
    EVP_PKEY_free(key);
}

static int group_setup(void **state)
{
    char *unused = NULL;
    make_pair("app.contoso.example", &cert_pem, &key_pem);
    make_pair("other.contoso.example", &cert2_pem, &key2_pem);
    make_pair("Test CA", &ca_pem, &unused);
    eg_free(unused);
    return 0;
}

static int group_teardown(void **state)
{
    eg_free(cert_pem);
    eg_free(key_pem);
    eg_free(cert2_pem);
    eg_free(key2_pem);
    eg_free(ca_pem);
    return 0;
}

/* ---- documents --------------------------------------------------------------------------------
 */

#define ONPREM_BASE                                                                                \
    "{\"kind\":\"onprem\",\"servers\":[{\"url\":\"https://cas1.corp.example/PowerShell\"}],"       \
    "\"username\":\"CORP\\\\svc-easgate\",\"password\":\"Pw-0nprem!\"}"
#define DRYRUN_BASE "{\"kind\":\"dryrun\"}"

static json_t *online_base(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind", "online", "tenant",
                     "contoso.onmicrosoft.com", "app_id", "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                     "certificate", cert_pem, "private_key", key_pem);
}

/* Merge patch (JSON text; a null value deletes the member) into obj. */
static void merge(json_t *obj, const char *patch)
{
    if (!patch)
        return;
    json_error_t e;
    json_t *p = json_loads(patch, 0, &e);
    if (!p)
        fail_msg("bad test patch %s: %s", patch, e.text);
    const char *k;
    json_t *v;
    json_object_foreach(p, k, v)
    {
        if (json_is_null(v))
            json_object_del(obj, k);
        else
            json_object_set(obj, k, v);
    }
    json_decref(p);
}

/* {"target": base+tpatch, ...rpatch} as text; caller frees with eg_free. */
static char *doc_text(json_t *target, const char *tpatch, const char *rpatch)
{
    merge(target, tpatch);
    json_t *root = json_pack("{s:o}", "target", target);
    merge(root, rpatch);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static json_t *parse_text(const char *s)
{
    json_t *v = json_loads(s, 0, NULL);
    assert_non_null(v);
    return v;
}

static char *doc(const char *base, const char *tpatch, const char *rpatch)
{
    return doc_text(parse_text(base), tpatch, rpatch);
}

static int parse(const char *text, const struct eg_target_config *prev,
                 struct eg_target_config **ret, struct eg_verr *err)
{
    return eg_target_config_parse(text, strlen(text), prev, ret, err);
}

static struct eg_target_config *parse_ok(const char *text, const struct eg_target_config *prev)
{
    struct eg_target_config *c = NULL;
    struct eg_verr e;
    int rc = parse(text, prev, &c, &e);
    if (rc != 0)
        fail_msg("rejected (%d) at '%s': %s\n%s", rc, e.field, e.detail, text);
    return c;
}

/* The body must be refused with rc at field, the detail containing want. */
static void expect_error(char *text, int rc, const char *field, const char *want)
{
    struct eg_target_config *c = NULL;
    struct eg_verr e;
    int got = parse(text, NULL, &c, &e);
    if (got != rc || strcmp(e.field, field) != 0 || !strstr(e.detail, want))
        fail_msg("body %s\nwant %d at '%s' (%s)\ngot %d at '%s': %s", text, rc, field, want, got,
                 e.field, e.detail);
    assert_null(c);
    eg_free(text);
}

/* ---- Kerberos and NTLM ---------------------------------------------------------------------- */

#define KRB_BASE                                                                                   \
    "{\"kind\":\"onprem\",\"servers\":[{\"url\":\"http://cas1.corp.example/PowerShell\"}],"        \
    "\"auth\":\"kerberos\",\"principal\":\"svc-easgate@CORP.EXAMPLE\",\"password\":\"Krb-Pw1!\"}"

static void test_kerberos_and_ntlm(void **state)
{
    /* kerberos with a password, over plain http (sealed): valid, principal = username */
    char *t = doc(KRB_BASE, NULL, NULL);
    struct eg_target_config *c = parse_ok(t, NULL);
    eg_free(t);
    assert_int_equal(c->auth, EG_TARGET_AUTH_KERBEROS);
    assert_string_equal(c->username, "svc-easgate@CORP.EXAMPLE");
    assert_string_equal(c->password, "Krb-Pw1!");
    assert_null(c->keytab);
    assert_true(eg_target_config_uses_gss(c));
    json_t *r = eg_target_config_redacted(c);
    json_t *rt = json_object_get(r, "target");
    assert_string_equal(json_string_value(json_object_get(rt, "auth")), "kerberos");
    assert_string_equal(json_string_value(json_object_get(rt, "username")),
                        "svc-easgate@CORP.EXAMPLE");
    assert_true(json_is_true(json_object_get(rt, "password_set")));
    assert_null(json_object_get(rt, "password"));
    char *dump = json_dumps(r, 0);
    assert_null(strstr(dump, "Krb-Pw1!"));
    eg_free(dump);
    json_decref(r);

    /* a later PUT without the password keeps it for the same principal (given as username) */
    t = doc(KRB_BASE,
            "{\"password\":null,\"principal\":null,"
            "\"username\":\"svc-easgate@CORP.EXAMPLE\"}",
            NULL);
    struct eg_target_config *c2 = parse_ok(t, c);
    eg_free(t);
    assert_string_equal(c2->password, "Krb-Pw1!");
    eg_target_config_free(c2);
    /* ... but not for another principal */
    t = doc(KRB_BASE, "{\"password\":null,\"principal\":\"other@CORP.EXAMPLE\"}", NULL);
    struct eg_verr e;
    assert_int_equal(parse(t, c, &c2, &e), EG_EINVAL);
    assert_string_equal(e.field, "target.password");
    assert_non_null(strstr(e.detail, "keytab is required with Kerberos"));
    eg_free(t);
    eg_target_config_free(c);

    /* kerberos with a keytab (an existing, readable file) */
    char kt[] = "/tmp/eg-test-keytab.XXXXXX";
    int fd = mkstemp(kt);
    assert_true(fd >= 0);
    close(fd);
    char patch[256];
    snprintf(patch, sizeof patch, "{\"password\":null,\"keytab\":\"%s\"}", kt);
    t = doc(KRB_BASE, patch, NULL);
    c = parse_ok(t, NULL);
    eg_free(t);
    assert_string_equal(c->keytab, kt);
    assert_null(c->password);
    assert_true(eg_target_config_uses_gss(c));
    r = eg_target_config_redacted(c);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "target"), "keytab")),
                        kt);
    json_decref(r);
    eg_target_config_free(c);
    snprintf(patch, sizeof patch, "{\"keytab\":\"%s\"}", kt);
    expect_error(doc(KRB_BASE, patch, NULL), EG_EINVAL, "target.password", "exclude each other");
    snprintf(patch, sizeof patch, "{\"auth\":\"ntlm\",\"password\":null,\"keytab\":\"%s\"}", kt);
    expect_error(doc(KRB_BASE, patch, NULL), EG_EINVAL, "target.keytab", "only for Kerberos");
    unlink(kt);
    expect_error(doc(KRB_BASE, "{\"password\":null,\"keytab\":\"/nonexistent/eg.keytab\"}", NULL),
                 EG_EINVAL, "target.keytab", "cannot be read");
    expect_error(doc(KRB_BASE, "{\"password\":null,\"keytab\":\"relative.keytab\"}", NULL),
                 EG_EINVAL, "target.keytab", "absolute path");

    /* the account is required, once */
    expect_error(doc(KRB_BASE, "{\"principal\":null}", NULL), EG_EINVAL, "target.principal",
                 "is required with Kerberos");
    expect_error(doc(KRB_BASE, "{\"username\":\"x@CORP.EXAMPLE\"}", NULL), EG_EINVAL,
                 "target.principal", "differs from target.username");
    expect_error(doc(KRB_BASE, "{\"password\":null}", NULL), EG_EINVAL, "target.password",
                 "or target.keytab is required");

    /* ntlm: DOMAIN\user and a password, over http too */
    t = doc(KRB_BASE, "{\"auth\":\"ntlm\",\"principal\":\"CORP\\\\svc-easgate\"}", NULL);
    c = parse_ok(t, NULL);
    eg_free(t);
    assert_int_equal(c->auth, EG_TARGET_AUTH_NTLM);
    assert_string_equal(c->username, "CORP\\svc-easgate");
    assert_true(eg_target_config_uses_gss(c));
    eg_target_config_free(c);
    expect_error(doc(KRB_BASE, "{\"auth\":\"ntlm\",\"password\":null}", NULL), EG_EINVAL,
                 "target.password", "is required with NTLM");
    expect_error(doc(KRB_BASE, "{\"auth\":\"ntlm\",\"principal\":null}", NULL), EG_EINVAL,
                 "target.principal", "DOMAIN\\user");

    /* negotiate: with an account our GSSAPI path (http allowed), without one libcurl's */
    t = doc(KRB_BASE, "{\"auth\":\"negotiate\"}", NULL);
    c = parse_ok(t, NULL);
    eg_free(t);
    assert_int_equal(c->auth, EG_TARGET_AUTH_NEGOTIATE);
    assert_true(eg_target_config_uses_gss(c));
    eg_target_config_free(c);
    t = doc(KRB_BASE,
            "{\"auth\":\"negotiate\",\"principal\":null,\"password\":null,"
            "\"servers\":[{\"url\":\"https://cas1.corp.example/PowerShell\"}]}",
            NULL);
    c = parse_ok(t, NULL);
    eg_free(t);
    assert_false(eg_target_config_uses_gss(c));
    eg_target_config_free(c);
    expect_error(doc(KRB_BASE, "{\"auth\":\"negotiate\",\"principal\":null}", NULL), EG_EINVAL,
                 "target.username", "is required with a password or keytab");
    /* negotiate with a username and no secret: libcurl's, as before (the name is not used) */
    t = doc(KRB_BASE,
            "{\"auth\":\"negotiate\",\"password\":null,"
            "\"servers\":[{\"url\":\"https://cas1.corp.example/PowerShell\"}]}",
            NULL);
    c = parse_ok(t, NULL);
    eg_free(t);
    assert_false(eg_target_config_uses_gss(c));
    eg_target_config_free(c);

    /* basic stays as it was: a principal member is its username, ':' refused, http refused */
    expect_error(doc(KRB_BASE, "{\"auth\":\"basic\"}", NULL), EG_EINVAL, "target.servers[0].url",
                 "in clear");
    assert_string_equal(eg_target_auth_name(EG_TARGET_AUTH_NTLM), "ntlm");
    assert_string_equal(eg_target_auth_name(EG_TARGET_AUTH_KERBEROS), "kerberos");
}

/* ---- good documents and defaults ----------------------------------------------------------- */

static void test_onprem_defaults(void **state)
{
    char *t = doc(ONPREM_BASE, NULL, NULL);
    struct eg_target_config *c = parse_ok(t, NULL);
    assert_int_equal(c->kind, EG_TARGET_ONPREM);
    assert_int_equal(c->n_servers, 1);
    assert_string_equal(c->servers[0], "https://cas1.corp.example/PowerShell");
    assert_int_equal(c->auth, EG_TARGET_AUTH_BASIC);
    assert_string_equal(c->username, "CORP\\svc-easgate");
    assert_string_equal(c->password, "Pw-0nprem!");
    assert_string_equal(c->version, "auto");
    assert_int_equal(c->commands_per_shell, 500);
    assert_int_equal(c->max_concurrency, 4);
    assert_int_equal(c->multi.policy, EG_MULTI_PRIORITY);
    assert_int_equal(c->multi.dead_threshold, 3);
    assert_int_equal(c->multi.failure_window_ms, 60000);
    assert_int_equal(c->multi.dead_time_ms, 30000);
    assert_int_equal(c->multi.health_interval_s, 60);
    assert_int_equal(c->multi.live_threshold, 3);
    assert_int_equal(c->connect_timeout_ms, 10000);
    assert_int_equal(c->io_timeout_ms, 10000);
    assert_int_equal(c->response_timeout_ms, 60000);
    assert_int_equal(c->quick_sync_interval_s, 900);
    assert_int_equal(c->full_sync_interval_s, 86400);
    assert_null(c->upload_url);
    assert_false(c->has_retry_deadline);
    assert_null(c->ca_pem);
    assert_false(c->insecure);
    eg_target_config_free(c);
    eg_free(t);
    eg_target_config_free(NULL);
}

static void test_full_documents(void **state)
{
    char patch[8192];
    snprintf(patch, sizeof patch,
             "{\"servers\":[{\"url\":\"https://cas1.corp.example/PowerShell\"},"
             "{\"url\":\"https://[2001:db8::1]:8443/PowerShell\"}],"
             "\"auth\":\"negotiate\",\"username\":null,\"password\":null,\"version\":\"2019\","
             "\"commands_per_shell\":50,\"max_concurrency\":64,\"scheduling\":\"round_robin\","
             "\"dead_threshold\":5,\"failure_window_ms\":1000,\"dead_time_ms\":3600000,"
             "\"health_interval_s\":10,\"live_threshold\":1,\"connect_timeout_ms\":100,"
             "\"io_timeout_ms\":3600000,\"response_timeout_ms\":120000}");
    char *t = doc(ONPREM_BASE, patch,
                  "{\"schedule\":{\"quick_sync_interval_s\":60,\"full_sync_interval_s\":3600},"
                  "\"upload\":{\"url\":\"https://console.example/api/inventory\"},"
                  "\"retry\":{\"deadline_ms\":60000}}");
    struct eg_target_config *c = parse_ok(t, NULL);
    assert_int_equal(c->n_servers, 2);
    assert_int_equal(c->auth, EG_TARGET_AUTH_NEGOTIATE);
    assert_null(c->username);
    assert_null(c->password);
    assert_string_equal(c->version, "2019");
    assert_int_equal(c->max_concurrency, 64);
    assert_int_equal(c->multi.policy, EG_MULTI_ROUND_ROBIN);
    assert_int_equal(c->multi.dead_threshold, 5);
    assert_int_equal(c->multi.live_threshold, 1);
    assert_int_equal(c->response_timeout_ms, 120000);
    assert_int_equal(c->quick_sync_interval_s, 60);
    assert_string_equal(c->upload_url, "https://console.example/api/inventory");
    assert_true(c->has_retry_deadline);
    assert_int_equal(c->retry_deadline_ms, 60000);
    eg_target_config_free(c);
    eg_free(t);

    /* Basic over http to the loopback mock, with allow_http_basic. */
    t = doc(
        ONPREM_BASE,
        "{\"servers\":[{\"url\":\"http://127.0.0.1:5985/PowerShell\"},"
        "{\"url\":\"http://localhost/PowerShell\"}],\"allow_http_basic\":true,\"version\":\"se\"}",
        NULL);
    c = parse_ok(t, NULL);
    assert_true(c->allow_http_basic);
    eg_target_config_free(c);
    eg_free(t);

    /* Online with a CA bundle and test URLs. */
    json_t *on = online_base();
    json_object_set_new(on, "ca_pem", json_string(ca_pem));
    t = doc_text(on,
                 "{\"api_url\":\"http://127.0.0.1:8080/adminapi/beta\",\"token_url\":"
                 "\"http://127.0.0.1:8080/token\",\"allow_http\":true}",
                 NULL);
    c = parse_ok(t, NULL);
    assert_int_equal(c->kind, EG_TARGET_ONLINE);
    assert_string_equal(c->tenant, "contoso.onmicrosoft.com");
    assert_string_equal(c->private_key, key_pem);
    assert_string_equal(c->ca_pem, ca_pem);
    assert_string_equal(c->api_url, "http://127.0.0.1:8080/adminapi/beta");
    eg_target_config_free(c);
    eg_free(t);

    t = doc(DRYRUN_BASE, "{\"latency_ms\":25}", NULL);
    c = parse_ok(t, NULL);
    assert_int_equal(c->kind, EG_TARGET_DRYRUN);
    assert_int_equal(c->latency_ms, 25);
    eg_target_config_free(c);
    eg_free(t);
}

/* ---- every validation error ---------------------------------------------------------------- */

static void test_errors_structure(void **state)
{
    expect_error(eg_strdup("[]"), EG_EINVAL, "", "must be a JSON object");
    expect_error(eg_strdup("{}"), EG_EINVAL, "target", "is required");
    expect_error(eg_strdup("{\"target\":[]}"), EG_EINVAL, "target", "must be an object");
    expect_error(eg_strdup("{\"target\":{}}"), EG_EINVAL, "target.kind", "is required");
    expect_error(eg_strdup("{\"target\":{\"kind\":7}}"), EG_EINVAL, "target.kind",
                 "must be a string");
    expect_error(doc(DRYRUN_BASE, "{\"kind\":\"cloud\"}", NULL), EG_EINVAL, "target.kind",
                 "\"onprem\", \"online\" or \"dryrun\"");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"colour\":\"blue\"}"), EG_EINVAL, "colour",
                 "unknown field");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"revision\":3}"), EG_EINVAL, "revision", "read-only");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"updated_at\":\"x\"}"), EG_EINVAL, "updated_at",
                 "read-only");
    expect_error(doc(ONPREM_BASE, "{\"password_set\":true}", NULL), EG_EINVAL,
                 "target.password_set", "read-only");
    expect_error(doc(ONPREM_BASE, "{\"tenant\":\"contoso.onmicrosoft.com\"}", NULL), EG_EINVAL,
                 "target.tenant", "belongs to kind \"online\"");
    expect_error(doc(DRYRUN_BASE, "{\"username\":\"svc\"}", NULL), EG_EINVAL, "target.username",
                 "belongs to kind \"onprem\"");
    expect_error(doc(DRYRUN_BASE, "{\"password_sealed\":\"eg1:AAAA\"}", NULL), EG_EINVAL,
                 "target.password_sealed", "unknown field");
    expect_error(doc(DRYRUN_BASE, "{\"weight\":1}", NULL), EG_EINVAL, "target.weight",
                 "unknown field");
    /* Nesting and syntax. */
    expect_error(eg_strdup("{\"target\":{\"kind\":\"dryrun\",\"x\":[[[[[[[[1]]]]]]]]}}"), EG_ELIMIT,
                 "", "deeper than 8");
    struct eg_target_config *c = NULL;
    struct eg_verr e;
    const char *bad = "{\"target\":{\"kind\":\"onprem\",\"password\":hunter2}}";
    assert_int_equal(parse(bad, NULL, &c, &e), EG_EPARSE);
    assert_string_equal(e.field, "");
    assert_non_null(strstr(e.detail, "line 1"));
    assert_null(strstr(e.detail, "hunter2"));
    assert_int_equal(parse("{\"target\":{\"kind\":\"dryrun\",\"kind\":\"onprem\"}}", NULL, &c, &e),
                     EG_EPARSE);
    assert_int_equal(eg_target_config_parse("{\"target\"", 9, NULL, &c, &e), EG_EPARSE);
    assert_int_equal(eg_target_config_parse(NULL, 0, NULL, &c, &e), EG_EPARSE);
}

static void test_errors_onprem(void **state)
{
    expect_error(doc(ONPREM_BASE, "{\"servers\":null}", NULL), EG_EINVAL, "target.servers",
                 "is required");
    expect_error(doc(ONPREM_BASE, "{\"servers\":{}}", NULL), EG_EINVAL, "target.servers",
                 "must be an array");
    expect_error(doc(ONPREM_BASE, "{\"servers\":[]}", NULL), EG_EINVAL, "target.servers",
                 "at least one");
    char many[4096] = "{\"servers\":[";
    for (int i = 0; i < 17; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many),
                 "%s{\"url\":\"https://cas%d.corp.example/PowerShell\"}", i ? "," : "", i);
    strcat(many, "]}");
    expect_error(doc(ONPREM_BASE, many, NULL), EG_ELIMIT, "target.servers", "at most 16");
    expect_error(doc(ONPREM_BASE, "{\"servers\":[\"https://x/\"]}", NULL), EG_EINVAL,
                 "target.servers[0]", "must be an object");
    expect_error(doc(ONPREM_BASE, "{\"servers\":[{}]}", NULL), EG_EINVAL, "target.servers[0].url",
                 "is required");
    expect_error(doc(ONPREM_BASE, "{\"servers\":[{\"url\":\"https://a/\",\"weight\":2}]}", NULL),
                 EG_EINVAL, "target.servers[0].weight", "unknown field");
    const char *bad_urls[][2] = {
        {"ftp://cas1/PowerShell", "http:// or https://"},
        {"https://svc:pw@cas1/PowerShell", "credentials"},
        {"https://cas 1/PowerShell", "printable ASCII"},
        {"https://cas1:99999/PowerShell", "port"},
        {"https://cas1:/PowerShell", "port"},
        {"https:///PowerShell", "must name a host"},
        {"https://[::1/PowerShell", "IPv6"},
        {"https://cas1$/PowerShell", "not a DNS name"},
    };
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "{\"servers\":[{\"url\":\"%s\"}]}", bad_urls[i][0]);
        expect_error(doc(ONPREM_BASE, p, NULL), EG_EINVAL, "target.servers[0].url", bad_urls[i][1]);
    }
    expect_error(doc(ONPREM_BASE,
                     "{\"servers\":[{\"url\":\"https://a/P\"},{\"url\":\"HTTPS://A/P\"}]}", NULL),
                 EG_EINVAL, "target.servers[1].url", "duplicate of target.servers[0].url");
    expect_error(
        doc(ONPREM_BASE, "{\"servers\":[{\"url\":\"http://127.0.0.1/PowerShell\"}]}", NULL),
        EG_EINVAL, "target.servers[0].url", "in clear");
    expect_error(doc(ONPREM_BASE,
                     "{\"servers\":[{\"url\":\"https://a/P\"},{\"url\":\"http://cas2/P\"}],"
                     "\"allow_http_basic\":true}",
                     NULL),
                 EG_EINVAL, "target.servers[1].url", "not loopback");
    expect_error(doc(ONPREM_BASE,
                     "{\"servers\":[{\"url\":\"http://127.0.0.1/P\"}],\"auth\":\"negotiate\","
                     "\"password\":null}",
                     NULL),
                 EG_EINVAL, "target.servers[0].url", "must be https with negotiate");
    expect_error(doc(ONPREM_BASE, "{\"auth\":\"digest\"}", NULL), EG_EINVAL, "target.auth",
                 "\"basic\", \"negotiate\", \"kerberos\" or \"ntlm\"");
    expect_error(doc(ONPREM_BASE, "{\"username\":null}", NULL), EG_EINVAL, "target.username",
                 "is required");
    expect_error(doc(ONPREM_BASE, "{\"username\":\"\"}", NULL), EG_EINVAL, "target.username",
                 "must not be empty");
    expect_error(doc(ONPREM_BASE, "{\"username\":\"a:b\"}", NULL), EG_EINVAL, "target.username",
                 "':'");
    expect_error(doc(ONPREM_BASE, "{\"username\":\"a\\nb\"}", NULL), EG_EINVAL, "target.username",
                 "control characters");
    expect_error(doc(ONPREM_BASE, "{\"password\":null}", NULL), EG_EINVAL, "target.password",
                 "is required");
    expect_error(doc(ONPREM_BASE, "{\"password\":5}", NULL), EG_EINVAL, "target.password",
                 "must be a string");
    expect_error(eg_strdup("{\"target\":{\"kind\":\"onprem\",\"password\":\"a\\u0000b\"}}"),
                 EG_EPARSE, "", "invalid JSON");
    expect_error(doc(ONPREM_BASE, "{\"password\":\"line\\r\\n\"}", NULL), EG_EINVAL,
                 "target.password", "control characters");
    char longpw[1200];
    snprintf(longpw, sizeof longpw, "{\"password\":\"%01025d\"}", 0);
    expect_error(doc(ONPREM_BASE, longpw, NULL), EG_ELIMIT, "target.password", "at most 1024");
    expect_error(doc(ONPREM_BASE, "{\"version\":\"2007\"}", NULL), EG_EINVAL, "target.version",
                 "\"auto\", \"2010\"");
    expect_error(doc(ONPREM_BASE, "{\"commands_per_shell\":0}", NULL), EG_EINVAL,
                 "target.commands_per_shell", "is 0; it must be between 1 and 100000");
    expect_error(doc(ONPREM_BASE, "{\"commands_per_shell\":1.5}", NULL), EG_EINVAL,
                 "target.commands_per_shell", "must be an integer");
    expect_error(doc(ONPREM_BASE, "{\"allow_http_basic\":\"yes\"}", NULL), EG_EINVAL,
                 "target.allow_http_basic", "true or false");
    expect_error(doc(ONPREM_BASE, "{\"insecure\":1}", NULL), EG_EINVAL, "target.insecure",
                 "true or false");
    expect_error(doc(ONPREM_BASE, "{\"ca_pem\":\"not a certificate\"}", NULL), EG_EINVAL,
                 "target.ca_pem", "PEM text of one or more certificates");

    json_t *t = parse_text(ONPREM_BASE);
    json_object_set_new(t, "ca_pem", json_string(ca_pem));
    expect_error(doc_text(t, "{\"insecure\":true}", NULL), EG_EINVAL, "target.insecure",
                 "cannot be combined with ca_pem");
    /* A private key pasted into the (unencrypted) CA bundle is refused. */
    char *mixed = eg_asprintf("%s%s", ca_pem, key_pem);
    t = parse_text(ONPREM_BASE);
    json_object_set_new(t, "ca_pem", json_string(mixed));
    expect_error(doc_text(t, NULL, NULL), EG_EINVAL, "target.ca_pem", "only 1 are certificates");
    eg_free(mixed);
}

static void test_errors_common(void **state)
{
    static const struct {
        const char *patch, *field, *want;
    } cases[] = {
        {"{\"max_concurrency\":0}", "target.max_concurrency", "between 1 and 64"},
        {"{\"max_concurrency\":65}", "target.max_concurrency", "between 1 and 64"},
        {"{\"max_concurrency\":\"4\"}", "target.max_concurrency", "must be an integer"},
        {"{\"scheduling\":\"random\"}", "target.scheduling", "\"priority\" or \"round_robin\""},
        {"{\"dead_threshold\":0}", "target.dead_threshold",
         "dead_threshold is 0; it must be between 1 and 100"},
        {"{\"dead_threshold\":-1}", "target.dead_threshold",
         "dead_threshold is -1; it must be between 1 and 100"},
        {"{\"dead_threshold\":5000000000}", "target.dead_threshold",
         "dead_threshold is 5000000000"},
        {"{\"failure_window_ms\":999}", "target.failure_window_ms",
         "failure_window_ms is 999; it must be between 1000 and 3600000"},
        {"{\"dead_time_ms\":3600001}", "target.dead_time_ms", "dead_time_ms is 3600001"},
        {"{\"health_interval_s\":9}", "target.health_interval_s",
         "health_interval_s is 9; it must be between 10 and 600"},
        {"{\"live_threshold\":11}", "target.live_threshold",
         "live_threshold is 11; it must be between 1 and 10"},
        {"{\"live_threshold\":true}", "target.live_threshold", "must be an integer"},
        {"{\"connect_timeout_ms\":99}", "target.connect_timeout_ms",
         "is 99; it must be between 100 and 3600000 ms"},
        {"{\"io_timeout_ms\":0}", "target.io_timeout_ms", "between 100 and 3600000 ms"},
        {"{\"response_timeout_ms\":3600001}", "target.response_timeout_ms",
         "between 100 and 3600000 ms"},
        {"{\"latency_ms\":-1}", "target.latency_ms", "between 0 and 60000 ms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(doc(DRYRUN_BASE, cases[i].patch, NULL), EG_EINVAL, cases[i].field,
                     cases[i].want);
    /* The same common members on the other kinds. */
    expect_error(doc(ONPREM_BASE, "{\"dead_threshold\":0}", NULL), EG_EINVAL,
                 "target.dead_threshold", "between 1 and 100");
    expect_error(doc_text(online_base(), "{\"io_timeout_ms\":1}", NULL), EG_EINVAL,
                 "target.io_timeout_ms", "between 100");

    static const struct {
        const char *rpatch, *field, *want;
    } rest[] = {
        {"{\"schedule\":5}", "schedule", "must be an object"},
        {"{\"schedule\":{\"hourly\":1}}", "schedule.hourly", "unknown field"},
        {"{\"schedule\":{\"quick_sync_interval_s\":59}}", "schedule.quick_sync_interval_s",
         "between 60 and 86400 s"},
        {"{\"schedule\":{\"full_sync_interval_s\":3599}}", "schedule.full_sync_interval_s",
         "between 3600 and 2592000 s"},
        {"{\"schedule\":{\"quick_sync_interval_s\":86400,\"full_sync_interval_s\":3600}}",
         "schedule.quick_sync_interval_s", "must not be longer than full_sync_interval_s"},
        {"{\"upload\":\"https://x/\"}", "upload", "must be an object"},
        {"{\"upload\":{}}", "upload.url", "is required"},
        {"{\"upload\":{\"url\":\"https://c/\",\"token\":\"t\"}}", "upload.token", "unknown field"},
        {"{\"upload\":{\"url\":\"http://console.example/up\"}}", "upload.url", "must be https"},
        {"{\"upload\":{\"url\":\"mailto:x\"}}", "upload.url", "http:// or https://"},
        {"{\"retry\":{\"deadline_ms\":999}}", "retry.deadline_ms", "between 1000 and 604800000"},
        {"{\"retry\":{\"attempts\":3}}", "retry.attempts", "unknown field"},
        {"{\"retry\":[]}", "retry", "must be an object"},
    };
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
        expect_error(doc(DRYRUN_BASE, NULL, rest[i].rpatch), EG_EINVAL, rest[i].field,
                     rest[i].want);
}

static void test_errors_online(void **state)
{
    expect_error(doc_text(online_base(), "{\"tenant\":null}", NULL), EG_EINVAL, "target.tenant",
                 "is required");
    expect_error(doc_text(online_base(), "{\"tenant\":\"contoso/../x\"}", NULL), EG_EINVAL,
                 "target.tenant", "GUID or its domain");
    expect_error(doc_text(online_base(), "{\"app_id\":\"my-app\"}", NULL), EG_EINVAL,
                 "target.app_id", "a GUID");
    expect_error(doc_text(online_base(), "{\"app_id\":null}", NULL), EG_EINVAL, "target.app_id",
                 "is required");
    expect_error(doc_text(online_base(), "{\"certificate\":null}", NULL), EG_EINVAL,
                 "target.certificate", "is required");
    expect_error(
        doc_text(online_base(), "{\"certificate\":\"-----BEGIN CERTIFICATE-----\\nx\"}", NULL),
        EG_EINVAL, "target.certificate", "PEM text of one or more certificates");
    expect_error(doc_text(online_base(), "{\"private_key\":null}", NULL), EG_EINVAL,
                 "target.private_key", "is required");
    expect_error(doc_text(online_base(), "{\"private_key\":\"secret-key-bytes\"}", NULL), EG_EINVAL,
                 "target.private_key", "unencrypted PEM private key");
    json_t *on = online_base();
    json_object_set_new(on, "private_key", json_string(key2_pem));
    expect_error(doc_text(on, NULL, NULL), EG_EINVAL, "target.private_key",
                 "does not belong to target.certificate");
    /* The certificate field is stored in clear: a key inside it is refused. */
    char *mixed = eg_asprintf("%s%s", cert_pem, key_pem);
    on = online_base();
    json_object_set_new(on, "certificate", json_string(mixed));
    expect_error(doc_text(on, NULL, NULL), EG_EINVAL, "target.certificate", "certificates only");
    eg_free(mixed);
    expect_error(doc_text(online_base(), "{\"api_url\":\"http://127.0.0.1/x\"}", NULL), EG_EINVAL,
                 "target.api_url", "must be https");
    expect_error(doc_text(online_base(),
                          "{\"token_url\":\"http://login.example/t\",\"allow_http\":true}", NULL),
                 EG_EINVAL, "target.token_url", "not loopback");
    expect_error(doc_text(online_base(), "{\"servers\":[]}", NULL), EG_EINVAL, "target.servers",
                 "belongs to kind \"onprem\"");
    expect_error(doc_text(online_base(), "{\"private_key_set\":true}", NULL), EG_EINVAL,
                 "target.private_key_set", "read-only");
}

/* ---- redaction and kept secrets ------------------------------------------------------------ */

static void test_redaction(void **state)
{
    char *t = doc(ONPREM_BASE, NULL, NULL);
    struct eg_target_config *c = parse_ok(t, NULL);
    c->revision = 7;
    c->updated_ms = 1790000000123;
    json_t *r = eg_target_config_redacted(c);
    char *text = json_dumps(r, JSON_COMPACT);
    assert_null(strstr(text, "Pw-0nprem!"));
    assert_null(strstr(text, "\"password\""));
    json_t *tg = json_object_get(r, "target");
    assert_true(json_is_true(json_object_get(tg, "password_set")));
    assert_string_equal(json_string_value(json_object_get(tg, "username")), "CORP\\svc-easgate");
    assert_int_equal(json_integer_value(json_object_get(tg, "max_concurrency")), 4);
    assert_int_equal(json_integer_value(json_object_get(r, "revision")), 7);
    assert_string_equal(json_string_value(json_object_get(r, "updated_at")),
                        "2026-09-21T14:13:20.123Z");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r, "schedule"), "full_sync_interval_s")),
        86400);
    eg_free(text);
    json_decref(r);
    eg_target_config_free(c);
    eg_free(t);

    json_t *on = online_base();
    t = doc_text(on, NULL, NULL);
    c = parse_ok(t, NULL);
    r = eg_target_config_redacted(c);
    text = json_dumps(r, JSON_COMPACT);
    assert_null(strstr(text, "PRIVATE KEY"));
    assert_true(json_is_true(json_object_get(json_object_get(r, "target"), "private_key_set")));
    assert_non_null(json_object_get(json_object_get(r, "target"), "certificate"));
    eg_free(text);
    json_decref(r);
    eg_target_config_free(c);
    eg_free(t);

    /* Negotiate without a password: password_set false. */
    t = doc(ONPREM_BASE, "{\"auth\":\"negotiate\",\"password\":null}", NULL);
    c = parse_ok(t, NULL);
    r = eg_target_config_redacted(c);
    assert_true(json_is_false(json_object_get(json_object_get(r, "target"), "password_set")));
    json_decref(r);
    eg_target_config_free(c);
    eg_free(t);
}

/* GET -> edit -> PUT works once the read-only members are dropped. */
static void test_redacted_round_trips(void **state)
{
    char *t = doc(ONPREM_BASE, "{\"max_concurrency\":8}", "{\"upload\":{\"url\":\"https://c/u\"}}");
    struct eg_target_config *c = parse_ok(t, NULL);
    json_t *r = eg_target_config_redacted(c);
    json_object_del(r, "revision");
    json_object_del(r, "updated_at");
    json_object_del(json_object_get(r, "target"), "password_set");
    json_object_del(json_object_get(r, "upload"), "hmac_key_set");
    char *again = json_dumps(r, JSON_COMPACT);
    struct eg_target_config *c2 = parse_ok(again, c);
    assert_string_equal(c2->password, "Pw-0nprem!");
    assert_int_equal(c2->max_concurrency, 8);
    json_t *r2 = eg_target_config_redacted(c2);
    json_object_del(r2, "revision");
    json_object_del(json_object_get(r2, "target"), "password_set");
    json_object_del(json_object_get(r2, "upload"), "hmac_key_set");
    assert_true(json_equal(r, r2));
    json_decref(r);
    json_decref(r2);
    eg_free(again);
    eg_free(t);
    eg_target_config_free(c);
    eg_target_config_free(c2);
}

static void test_secret_kept_without_it(void **state)
{
    char *t = doc(ONPREM_BASE, NULL, NULL);
    struct eg_target_config *prev = parse_ok(t, NULL), *c = NULL;
    eg_free(t);
    struct eg_verr e;

    /* Same kind and username: the stored password stays, other members change. */
    t = doc(ONPREM_BASE,
            "{\"password\":null,\"servers\":[{\"url\":\"https://cas2.corp.example/PowerShell\"}]}",
            NULL);
    c = parse_ok(t, prev);
    assert_string_equal(c->password, "Pw-0nprem!");
    assert_string_equal(c->servers[0], "https://cas2.corp.example/PowerShell");
    assert_ptr_not_equal(c->password, prev->password);
    eg_target_config_free(c);
    eg_free(t);

    /* A new password replaces it. */
    t = doc(ONPREM_BASE, "{\"password\":\"Neu-Passw0rt\"}", NULL);
    c = parse_ok(t, prev);
    assert_string_equal(c->password, "Neu-Passw0rt");
    eg_target_config_free(c);
    eg_free(t);

    /* Another username: required again. */
    t = doc(ONPREM_BASE, "{\"password\":null,\"username\":\"CORP\\\\other\"}", NULL);
    assert_int_equal(parse(t, prev, &c, &e), EG_EINVAL);
    assert_string_equal(e.field, "target.password");
    assert_non_null(strstr(e.detail, "is required"));
    eg_free(t);

    /* Another kind keeps nothing: dryrun in between, then onprem again without a password. */
    t = doc(DRYRUN_BASE, NULL, NULL);
    struct eg_target_config *dry = parse_ok(t, prev);
    eg_free(t);
    t = doc(ONPREM_BASE, "{\"password\":null}", NULL);
    assert_int_equal(parse(t, dry, &c, &e), EG_EINVAL);
    assert_string_equal(e.field, "target.password");
    eg_free(t);
    eg_target_config_free(dry);

    /* Online: the private key is kept while the app_id stays. */
    json_t *on = online_base();
    t = doc_text(on, NULL, NULL);
    struct eg_target_config *oprev = parse_ok(t, NULL);
    eg_free(t);
    t = doc_text(online_base(), "{\"private_key\":null,\"tenant\":\"fabrikam.onmicrosoft.com\"}",
                 NULL);
    c = parse_ok(t, oprev);
    assert_string_equal(c->private_key, key_pem);
    eg_target_config_free(c);
    eg_free(t);
    t = doc_text(online_base(),
                 "{\"private_key\":null,\"app_id\":\"00000000-0000-4000-8000-000000000001\"}",
                 NULL);
    assert_int_equal(parse(t, oprev, &c, &e), EG_EINVAL);
    assert_string_equal(e.field, "target.private_key");
    eg_free(t);
    /* An onprem previous document gives no private key. */
    t = doc_text(online_base(), "{\"private_key\":null}", NULL);
    assert_int_equal(parse(t, prev, &c, &e), EG_EINVAL);
    assert_string_equal(e.field, "target.private_key");
    eg_free(t);
    eg_target_config_free(oprev);
    eg_target_config_free(prev);
}

/* ---- persistence ----------------------------------------------------------------------------- */

struct fx {
    char dir[64];
    char key[128], file[128];
    struct eg_secretbox *box;
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char why[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/eg-test-tcfg.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->key, sizeof f->key, "%s/secret.key", f->dir);
    snprintf(f->file, sizeof f->file, "%s/target.json", f->dir);
    if (eg_secretbox_new(f->key, true, &f->box, why, sizeof why) < 0)
        return -1;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    char cmd[160];
    eg_secretbox_free(f->box);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

__attribute__((noinline)) static char *read_all(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    if (eg_read_file(path, 1 << 22, &data, &len) != 0)
        fail_msg("cannot read %s", path);
    return data;
}

static void write_all(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void assert_same(const struct eg_target_config *a, const struct eg_target_config *b)
{
    json_t *ra = eg_target_config_redacted(a), *rb = eg_target_config_redacted(b);
    assert_true(json_equal(ra, rb));
    json_decref(ra);
    json_decref(rb);
    if (a->password || b->password)
        assert_string_equal(a->password, b->password);
    if (a->private_key || b->private_key)
        assert_string_equal(a->private_key, b->private_key);
    if (a->upload_hmac_key || b->upload_hmac_key)
        assert_string_equal(a->upload_hmac_key, b->upload_hmac_key);
    assert_int_equal(a->revision, b->revision);
    assert_int_equal(a->updated_ms, b->updated_ms);
}

static void test_persistence_round_trip(void **state)
{
    struct fx *f = *state;
    struct eg_target_config *c = NULL, *back = NULL;
    char why[512];
    struct stat st;

    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_ENOTFOUND);

    json_t *t = parse_text(ONPREM_BASE);
    json_object_set_new(t, "ca_pem", json_string(ca_pem));
    char *text =
        doc_text(t,
                 "{\"servers\":[{\"url\":\"https://cas1.corp.example/PowerShell\"},"
                 "{\"url\":\"https://cas2.corp.example/PowerShell\"}],"
                 "\"scheduling\":\"round_robin\",\"version\":\"2013\"}",
                 "{\"retry\":{\"deadline_ms\":120000},\"upload\":{\"url\":\"https://c/\"}}");
    c = parse_ok(text, NULL);
    eg_free(text);
    c->revision = 3;
    c->updated_ms = eg_now_ms();
    assert_int_equal(eg_target_config_save(c, f->box, f->file), 0);
    assert_int_equal(stat(f->file, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    char *disk = read_all(f->file);
    assert_null(strstr(disk, "Pw-0nprem!"));
    assert_non_null(strstr(disk, "\"password_sealed\": \"eg1:"));
    eg_free(disk);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), 0);
    assert_same(c, back);
    eg_target_config_free(back);
    eg_target_config_free(c);

    /* Online: neither the private key nor any line of it is on disk. */
    text = doc_text(online_base(), NULL, NULL);
    c = parse_ok(text, NULL);
    eg_free(text);
    c->revision = 4;
    assert_int_equal(eg_target_config_save(c, f->box, f->file), 0);
    disk = read_all(f->file);
    assert_null(strstr(disk, "PRIVATE KEY"));
    char *line2 = strchr(key_pem, '\n') + 1;
    char probe[40];
    snprintf(probe, sizeof probe, "%.32s", line2);
    assert_null(strstr(disk, probe));
    assert_non_null(strstr(disk, "\"private_key_sealed\": \"eg1:"));
    eg_free(disk);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), 0);
    assert_same(c, back);
    eg_target_config_free(back);
    eg_target_config_free(c);

    /* Kerberos and NTLM: the password sealed like Basic's, method and keytab kept. */
    text = doc(KRB_BASE, NULL, NULL);
    c = parse_ok(text, NULL);
    eg_free(text);
    assert_int_equal(eg_target_config_save(c, f->box, f->file), 0);
    disk = read_all(f->file);
    assert_null(strstr(disk, "Krb-Pw1!"));
    assert_non_null(strstr(disk, "\"password_sealed\": \"eg1:"));
    assert_non_null(strstr(disk, "\"kerberos\""));
    eg_free(disk);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), 0);
    assert_same(c, back);
    assert_int_equal(back->auth, EG_TARGET_AUTH_KERBEROS);
    eg_target_config_free(back);
    eg_target_config_free(c);

    /* Dryrun has no secret. */
    text = doc(DRYRUN_BASE, "{\"latency_ms\":3}", NULL);
    c = parse_ok(text, NULL);
    eg_free(text);
    assert_int_equal(eg_target_config_save(c, f->box, f->file), 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), 0);
    assert_same(c, back);
    eg_target_config_free(back);
    eg_target_config_free(c);
}

static void test_load_refuses_bad_files(void **state)
{
    struct fx *f = *state;
    struct eg_target_config *c = NULL, *back = NULL;
    struct eg_secretbox *other = NULL;
    char why[512], k2[160];

    char *text = doc(ONPREM_BASE, NULL, NULL);
    c = parse_ok(text, NULL);
    eg_free(text);
    c->revision = 1;
    assert_int_equal(eg_target_config_save(c, f->box, f->file), 0);

    /* Another key: the sealed password does not open; the message names file and member. */
    snprintf(k2, sizeof k2, "%s/other.key", f->dir);
    assert_int_equal(eg_secretbox_new(k2, true, &other, why, sizeof why), 0);
    assert_int_equal(eg_target_config_load(f->file, other, &back, why, sizeof why), EG_EAUTH);
    assert_null(back);
    assert_non_null(strstr(why, f->file));
    assert_non_null(strstr(why, "target.password_sealed"));
    assert_non_null(strstr(why, k2));
    eg_secretbox_free(other);

    /* A sealed value tampered with. */
    char *disk = read_all(f->file);
    const char *eg1 = strstr(disk, "eg1:");
    assert_non_null(eg1);
    size_t off = (size_t)(eg1 - disk) + 10;
    disk[off] = disk[off] == 'A' ? 'B' : 'A';
    write_all(f->file, disk);
    eg_free(disk);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EAUTH);

    /* A sealed password moved into another field (AAD) does not open either: seal for
     * private_key and put it where the password goes. */
    char *sealed = NULL;
    assert_int_equal(eg_secretbox_seal(f->box, "target.private_key", "Pw-0nprem!", &sealed), 0);
    json_t *root = json_load_file(f->file, 0, NULL);
    json_object_set_new(json_object_get(root, "target"), "password_sealed", json_string(sealed));
    json_dump_file(root, f->file, 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EAUTH);
    eg_free(sealed);

    /* A plaintext secret in the file is refused, not used. */
    json_object_del(json_object_get(root, "target"), "password_sealed");
    json_object_set_new(json_object_get(root, "target"), "password", json_string("clear"));
    json_dump_file(root, f->file, 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, "target.password"));
    assert_null(strstr(why, "clear"));

    /* Invalid content, unknown format, not JSON. */
    json_object_del(json_object_get(root, "target"), "password");
    json_dump_file(root, f->file, 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, "target.password: is required"));
    json_object_set_new(root, "format", json_integer(2));
    json_dump_file(root, f->file, 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, "format"));
    json_decref(root);
    write_all(f->file, "{not json");
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EPARSE);
    assert_non_null(strstr(why, f->file));
    assert_null(back);
    eg_target_config_free(c);
}

#define HKEY  "console-hmac-key-0123456789abcdef-XYZ"
#define HKEY2 "another-console-key-fedcba9876543210-Q"

/* upload.hmac_key: validation, redaction, kept across PUTs while upload.url stays, sealed on
 * disk under its own AAD, plaintext in the state file refused. */
static void test_upload_hmac_key(void **state)
{
    struct fx *f = *state;
    struct eg_verr e;
    char why[512];

    /* Validation. */
    expect_error(
        doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":\"short\"}}"),
        EG_EINVAL, "upload.hmac_key", "at least 32");
    expect_error(doc(DRYRUN_BASE, NULL,
                     "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":\"" HKEY "\\n\"}}"),
                 EG_EINVAL, "upload.hmac_key", "control characters");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":7}}"),
                 EG_EINVAL, "upload.hmac_key", "must be a string");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":\"\"}}"),
                 EG_EINVAL, "upload.hmac_key", "must not be empty");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"upload\":{\"hmac_key\":\"" HKEY "\"}}"), EG_EINVAL,
                 "upload.url", "is required");
    expect_error(
        doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key_set\":true}}"),
        EG_EINVAL, "upload.hmac_key_set", "read-only");
    expect_error(doc(DRYRUN_BASE, NULL,
                     "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key_sealed\":\"eg1:AAAA\"}}"),
                 EG_EINVAL, "upload.hmac_key_sealed", "unknown field");
    expect_error(doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"key\":\"x\"}}"),
                 EG_EINVAL, "upload.key", "unknown field");
    char longkey[EG_UPLOAD_MAX_HMAC_KEY_LEN + 2], patch[EG_UPLOAD_MAX_HMAC_KEY_LEN + 96];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    snprintf(patch, sizeof patch, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":\"%s\"}}",
             longkey);
    expect_error(doc(DRYRUN_BASE, NULL, patch), EG_ELIMIT, "upload.hmac_key", "at most");

    /* Redaction: hmac_key_set, never the key. */
    char *t =
        doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":\"" HKEY "\"}}");
    struct eg_target_config *c = parse_ok(t, NULL), *c2 = NULL, *back = NULL;
    eg_free(t);
    assert_string_equal(c->upload_hmac_key, HKEY);
    json_t *r = eg_target_config_redacted(c);
    char *text = json_dumps(r, JSON_COMPACT);
    assert_null(strstr(text, HKEY));
    assert_null(strstr(text, "\"hmac_key\""));
    assert_true(json_is_true(json_object_get(json_object_get(r, "upload"), "hmac_key_set")));
    eg_free(text);
    json_decref(r);

    /* Left out of a PUT: kept while the URL stays the same, else gone. */
    t = doc(DRYRUN_BASE, "{\"latency_ms\":2}", "{\"upload\":{\"url\":\"https://c/u\"}}");
    c2 = parse_ok(t, c);
    eg_free(t);
    assert_string_equal(c2->upload_hmac_key, HKEY);
    eg_target_config_free(c2);
    t = doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://other/u\"}}");
    c2 = parse_ok(t, c);
    eg_free(t);
    assert_null(c2->upload_hmac_key);
    r = eg_target_config_redacted(c2);
    assert_true(json_is_false(json_object_get(json_object_get(r, "upload"), "hmac_key_set")));
    json_decref(r);
    eg_target_config_free(c2);
    t = doc(DRYRUN_BASE, NULL, "{\"upload\":{\"url\":\"https://c/u\",\"hmac_key\":\"" HKEY2 "\"}}");
    c2 = parse_ok(t, c);
    eg_free(t);
    assert_string_equal(c2->upload_hmac_key, HKEY2); /* replaced */
    eg_target_config_free(c2);
    t = doc(DRYRUN_BASE, NULL, NULL); /* no upload at all: no key */
    c2 = parse_ok(t, c);
    eg_free(t);
    assert_null(c2->upload_url);
    assert_null(c2->upload_hmac_key);
    eg_target_config_free(c2);

    /* On disk: sealed, never in clear; loads back. */
    c->revision = 2;
    assert_int_equal(eg_target_config_save(c, f->box, f->file), 0);
    char *disk = read_all(f->file);
    assert_null(strstr(disk, HKEY));
    assert_non_null(strstr(disk, "\"hmac_key_sealed\": \"eg1:"));
    eg_free(disk);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), 0);
    assert_same(c, back);
    eg_target_config_free(back);
    back = NULL;

    /* A plaintext key in the file is refused; a value sealed for another member does not open. */
    json_t *root = json_load_file(f->file, 0, NULL);
    json_t *up = json_object_get(root, "upload");
    json_object_del(up, "hmac_key_sealed");
    json_object_set_new(up, "hmac_key", json_string(HKEY));
    json_dump_file(root, f->file, 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, "upload.hmac_key"));
    assert_null(strstr(why, HKEY));
    char *sealed = NULL;
    assert_int_equal(eg_secretbox_seal(f->box, "target.password", HKEY, &sealed), 0);
    json_object_del(up, "hmac_key");
    json_object_set_new(up, "hmac_key_sealed", json_string(sealed));
    eg_free(sealed);
    json_dump_file(root, f->file, 0);
    assert_int_equal(eg_target_config_load(f->file, f->box, &back, why, sizeof why), EG_EAUTH);
    assert_non_null(strstr(why, "upload.hmac_key_sealed"));
    json_decref(root);
    assert_null(back);
    eg_target_config_free(c);
    (void)e;
}

/* "inventory": defaults, values, every refusal, and both serialised forms. */
static void test_inventory_member(void **state)
{
    char *t = doc(DRYRUN_BASE, NULL, NULL);
    struct eg_target_config *c = parse_ok(t, NULL);
    assert_false(c->inventory_heal_drift);
    assert_int_equal(c->inventory_stats_per_sync, EG_INVENTORY_DEFAULT_STATS);
    assert_int_equal(c->inventory_stats_interval_ms, EG_INVENTORY_DEFAULT_STATS_GAP);
    json_t *r = eg_target_config_redacted(c);
    json_t *inv = json_object_get(r, "inventory");
    assert_false(json_is_true(json_object_get(inv, "heal_drift")));
    assert_int_equal(json_integer_value(json_object_get(inv, "stats_per_sync")),
                     EG_INVENTORY_DEFAULT_STATS);
    json_decref(r);
    eg_target_config_free(c);
    eg_free(t);

    t = doc(DRYRUN_BASE, NULL,
            "{\"inventory\":{\"heal_drift\":true,\"stats_per_sync\":0,"
            "\"stats_interval_ms\":60000}}");
    c = parse_ok(t, NULL);
    assert_true(c->inventory_heal_drift);
    assert_int_equal(c->inventory_stats_per_sync, 0);
    assert_int_equal(c->inventory_stats_interval_ms, 60000);
    r = eg_target_config_redacted(c);
    inv = json_object_get(r, "inventory");
    assert_true(json_is_true(json_object_get(inv, "heal_drift")));
    assert_int_equal(json_integer_value(json_object_get(inv, "stats_interval_ms")), 60000);
    /* GET -> PUT keeps it */
    json_object_del(r, "revision");
    char *again = json_dumps(r, JSON_COMPACT);
    struct eg_target_config *c2 = parse_ok(again, NULL);
    assert_true(c2->inventory_heal_drift);
    assert_int_equal(c2->inventory_stats_per_sync, 0);
    eg_target_config_free(c2);
    eg_free(again);
    json_decref(r);
    eg_target_config_free(c);
    eg_free(t);

    static const struct {
        const char *rpatch, *field, *want;
    } bad[] = {
        {"{\"inventory\":true}", "inventory", "must be an object"},
        {"{\"inventory\":{\"heal\":true}}", "inventory.heal", "unknown field"},
        {"{\"inventory\":{\"heal_drift\":1}}", "inventory.heal_drift", "true or false"},
        {"{\"inventory\":{\"stats_per_sync\":-1}}", "inventory.stats_per_sync",
         "between 0 and 10000"},
        {"{\"inventory\":{\"stats_per_sync\":10001}}", "inventory.stats_per_sync",
         "between 0 and 10000"},
        {"{\"inventory\":{\"stats_interval_ms\":60001}}", "inventory.stats_interval_ms",
         "between 0 and 60000 ms"},
        {"{\"inventory\":{\"stats_interval_ms\":1.5}}", "inventory.stats_interval_ms",
         "must be an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error(doc(DRYRUN_BASE, NULL, bad[i].rpatch), EG_EINVAL, bad[i].field, bad[i].want);
}

static void test_allocation_failure(void **state)
{
    char *text =
        doc(ONPREM_BASE, "{\"servers\":[{\"url\":\"https://a/P\"},{\"url\":\"https://b/P\"}]}",
            "{\"upload\":{\"url\":\"https://c/\",\"hmac_key\":\"" HKEY "\"}}");
    for (long n = 0; n < 200; n++) {
        struct eg_target_config *c = NULL;
        struct eg_verr e;
        eg_alloc_fail_after(n);
        int rc = parse(text, NULL, &c, &e);
        json_t *r = rc == 0 ? eg_target_config_redacted(c) : NULL;
        eg_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == EG_ENOMEM);
        json_decref(r);
        eg_target_config_free(c);
    }
    eg_free(text);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_onprem_defaults),
        cmocka_unit_test(test_full_documents),
        cmocka_unit_test(test_errors_structure),
        cmocka_unit_test(test_errors_onprem),
        cmocka_unit_test(test_errors_common),
        cmocka_unit_test(test_errors_online),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_redacted_round_trips),
        cmocka_unit_test(test_secret_kept_without_it),
        cmocka_unit_test_setup_teardown(test_persistence_round_trip, fx_setup, fx_teardown),
        cmocka_unit_test(test_kerberos_and_ntlm),
        cmocka_unit_test_setup_teardown(test_load_refuses_bad_files, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_upload_hmac_key, fx_setup, fx_teardown),
        cmocka_unit_test(test_inventory_member),
        cmocka_unit_test(test_allocation_failure),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
