/* test_target.c - the daemon's Exchange target: bootstrap without a stored document, PUT (build,
 * persist, swap), failures that change nothing, and the document surviving a restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/target.h"
#include "common/alloc.h"
#include "common/util.h"
#include "exchange/bridge.h"

/* ---- a bootstrap bridge that records its calls and its end ---------------------------------- */

struct boot {
    atomic_int made, calls, destroyed;
};

static int boot_list_edit(void *impl, const struct eg_list_edit *e, json_t *actions,
                          struct eg_bridge_error *err)
{
    struct boot *b = impl;
    atomic_fetch_add(&b->calls, 1);
    return json_array_append_new(actions, json_pack("{s:s}", "cmdlet", "Boot-Call"));
}

static void boot_destroy(void *impl)
{
    atomic_fetch_add(&((struct boot *)impl)->destroyed, 1);
}

static const struct eg_bridge_ops boot_ops = {
    .name = "boot", .list_edit = boot_list_edit, .destroy = boot_destroy};

static int make_boot(void *ctx, struct eg_bridge **ret)
{
    struct boot *b = ctx;
    struct eg_bridge *br = eg_calloc(1, sizeof *br);
    if (!br)
        return EG_ENOMEM;
    br->ops = &boot_ops;
    br->impl = b;
    atomic_fetch_add(&b->made, 1);
    *ret = br;
    return 0;
}

static int failing_boot(void *ctx, struct eg_bridge **ret)
{
    return EG_EIO;
}

/* ---- fixture -------------------------------------------------------------------------------- */

struct fx {
    char dir[64], file[128], key[128];
    struct boot boot;
    struct eg_target_opts o;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/eg-test-target.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->file, sizeof f->file, "%s/target.json", f->dir);
    snprintf(f->key, sizeof f->key, "%s/secret.key", f->dir);
    f->o = (struct eg_target_opts){.state_dir = f->dir,
                                   .bootstrap = make_boot,
                                   .bootstrap_ctx = &f->boot,
                                   .bootstrap_kind = "dryrun"};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static struct eg_target *open_ok(struct fx *f)
{
    struct eg_target *t = NULL;
    char why[512];
    int rc = eg_target_open(&f->o, &t, why, sizeof why);
    if (rc != 0)
        fail_msg("eg_target_open: %d: %s", rc, why);
    return t;
}

static json_t *put_ok(struct eg_target *t, const char *body)
{
    struct eg_target_error e;
    json_t *doc = NULL;
    int rc = eg_target_put(t, body, strlen(body), &doc, &e);
    if (rc != 0)
        fail_msg("PUT refused (%d, stage %d) at '%s': %s", rc, (int)e.stage, e.v.field, e.v.detail);
    return doc;
}

static const char *first_cmdlet(struct eg_target *t)
{
    static char name[64];
    struct eg_bridge *b = eg_target_bridge(t);
    struct eg_bridge_error err;
    struct eg_device_override ov = {"Dev1", EG_LIST_BLOCK};
    struct eg_list_edit e = {.mailbox = "a@x.example", .overrides = &ov, .n_overrides = 1};
    json_t *a = json_array();
    assert_int_equal(b->ops->list_edit(b->impl, &e, a, &err), 0);
    snprintf(name, sizeof name, "%s",
             json_string_value(json_object_get(json_array_get(a, 0), "cmdlet")));
    json_decref(a);
    return name;
}

static char *file_text(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    if (eg_read_file(path, 1 << 22, &data, &len) != 0)
        fail_msg("cannot read %s", path);
    return data;
}

#define ONPREM                                                                                     \
    "{\"target\":{\"kind\":\"onprem\",\"servers\":[{\"url\":\"http://127.0.0.1:1/PowerShell\"},"   \
    "{\"url\":\"http://127.0.0.2:1/PowerShell\"}],\"allow_http_basic\":true,"                      \
    "\"username\":\"svc-easgate\",\"password\":\"Secr3t-Pw!\",\"health_interval_s\":600}}"
#define ONPREM_NO_PW                                                                               \
    "{\"target\":{\"kind\":\"onprem\",\"servers\":[{\"url\":\"http://127.0.0.1:1/PowerShell\"}],"  \
    "\"allow_http_basic\":true,\"username\":\"svc-easgate\",\"max_concurrency\":2,"                \
    "\"health_interval_s\":600}}"

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_bootstrap_then_put_swaps(void **state)
{
    struct fx *f = *state;
    struct eg_target *t = open_ok(f);
    struct stat st;
    json_t *doc = NULL;

    /* No stored document: the bootstrap bridge, created once; the key file exists, 0600. */
    assert_int_equal(atomic_load(&f->boot.made), 1);
    assert_int_equal(eg_target_source(t), EG_TARGET_SOURCE_BOOTSTRAP);
    assert_int_equal(eg_target_revision(t), 0);
    assert_int_equal(eg_target_get(t, &doc), EG_ENOTFOUND);
    assert_int_equal(stat(f->key, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(f->file, &st), -1);
    assert_string_equal(first_cmdlet(t), "Boot-Call");
    json_t *s = eg_target_status(t);
    assert_string_equal(json_string_value(json_object_get(s, "kind")), "dryrun");
    assert_string_equal(json_string_value(json_object_get(s, "source")), "bootstrap");
    json_decref(s);

    /* PUT a dry-run target: new calls go to it, the bootstrap bridge is freed. */
    struct eg_bridge *workers_bridge = eg_target_bridge(t);
    doc = put_ok(t, "{\"target\":{\"kind\":\"dryrun\",\"latency_ms\":0}}");
    assert_int_equal(json_integer_value(json_object_get(doc, "revision")), 1);
    assert_non_null(json_object_get(doc, "updated_at"));
    json_decref(doc);
    assert_ptr_equal(eg_target_bridge(t), workers_bridge); /* the workers keep their pointer */
    assert_int_equal(atomic_load(&f->boot.destroyed), 1);
    assert_string_equal(first_cmdlet(t), "Get-CASMailbox");
    assert_int_equal(atomic_load(&f->boot.calls), 1);
    assert_int_equal(eg_target_source(t), EG_TARGET_SOURCE_CONSOLE);
    assert_int_equal(stat(f->file, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    s = eg_target_status(t);
    assert_string_equal(json_string_value(json_object_get(s, "kind")), "dryrun");
    assert_string_equal(json_string_value(json_object_get(s, "source")), "console");
    assert_int_equal(json_integer_value(json_object_get(s, "revision")), 1);
    json_decref(s);

    /* PUT an on-prem target: status lists every server; the password is nowhere. */
    doc = put_ok(t, ONPREM);
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_null(strstr(text, "Secr3t-Pw!"));
    assert_non_null(strstr(text, "\"password_set\":true"));
    eg_free(text);
    json_decref(doc);
    s = eg_target_status(t);
    assert_string_equal(json_string_value(json_object_get(s, "kind")), "onprem");
    json_t *servers = json_object_get(s, "servers");
    assert_int_equal(json_array_size(servers), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(servers, 1), "url")),
                        "http://127.0.0.2:1/PowerShell");
    assert_non_null(json_object_get(json_array_get(servers, 0), "state"));
    text = json_dumps(s, JSON_COMPACT);
    assert_null(strstr(text, "Secr3t-Pw!"));
    eg_free(text);
    json_decref(s);
    text = file_text(f->file);
    assert_null(strstr(text, "Secr3t-Pw!"));
    eg_free(text);

    /* Without the password (same kind and username): kept. */
    doc = put_ok(t, ONPREM_NO_PW);
    assert_int_equal(json_integer_value(json_object_get(doc, "revision")), 3);
    assert_true(json_is_true(json_object_get(json_object_get(doc, "target"), "password_set")));
    json_decref(doc);
    eg_target_free(t);

    /* Restart: the stored document is used, the bootstrap is not made again. */
    t = open_ok(f);
    assert_int_equal(atomic_load(&f->boot.made), 1);
    assert_int_equal(eg_target_source(t), EG_TARGET_SOURCE_CONSOLE);
    assert_int_equal(eg_target_revision(t), 3);
    assert_int_equal(eg_target_get(t, &doc), 0);
    json_t *tg = json_object_get(doc, "target");
    assert_int_equal(json_integer_value(json_object_get(tg, "max_concurrency")), 2);
    assert_true(json_is_true(json_object_get(tg, "password_set")));
    json_decref(doc);
    /* ...with its password: the next PUT without one still keeps it. */
    doc = put_ok(t, ONPREM_NO_PW);
    assert_int_equal(json_integer_value(json_object_get(doc, "revision")), 4);
    json_decref(doc);
    eg_target_free(t);
    eg_target_free(NULL);
}

static void test_failed_puts_change_nothing(void **state)
{
    struct fx *f = *state;
    struct eg_target *t = open_ok(f);
    struct eg_target_error e;
    json_t *doc = put_ok(t, "{\"target\":{\"kind\":\"dryrun\"}}"), *before = NULL, *after = NULL;
    json_decref(doc);
    assert_int_equal(eg_target_get(t, &before), 0);

    /* Invalid: PARSE with the field. */
    const char *bad = "{\"target\":{\"kind\":\"dryrun\",\"latency_ms\":-5}}";
    assert_int_equal(eg_target_put(t, bad, strlen(bad), &doc, &e), EG_EINVAL);
    assert_int_equal(e.stage, EG_TARGET_STAGE_PARSE);
    assert_string_equal(e.v.field, "target.latency_ms");
    bad = "{\"target\":{\"kind\":\"onprem\",\"servers\":[{\"url\":\"https://a/P\"}],"
          "\"username\":\"u\"}}";
    assert_int_equal(eg_target_put(t, bad, strlen(bad), &doc, &e), EG_EINVAL);
    assert_string_equal(e.v.field, "target.password");

    /* Cannot be stored: STORE, the running target stays. */
    char *tmp = eg_asprintf("%s.moved", f->file);
    assert_int_equal(rename(f->file, tmp), 0);
    assert_int_equal(mkdir(f->file, 0700), 0);
    char *inside = eg_asprintf("%s/x", f->file);
    FILE *fp = fopen(inside, "w");
    fclose(fp);
    const char *good = "{\"target\":{\"kind\":\"dryrun\",\"latency_ms\":1}}";
    assert_int_equal(eg_target_put(t, good, strlen(good), &doc, &e), EG_EIO);
    assert_int_equal(e.stage, EG_TARGET_STAGE_STORE);
    assert_non_null(strstr(e.v.detail, "nothing was changed"));
    unlink(inside);
    rmdir(f->file);
    assert_int_equal(rename(tmp, f->file), 0);
    eg_free(inside);
    eg_free(tmp);

    /* Cannot be built (the CA file cannot be written): BUILD. */
    char *ca = NULL;
    {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509 *x = X509_new();
        X509_set_version(x, 2);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"ca", -1, -1, 0);
        X509_set_issuer_name(x, X509_get_subject_name(x));
        X509_set_pubkey(x, key);
        X509_sign(x, key, EVP_sha256());
        BIO *bio = BIO_new(BIO_s_mem());
        PEM_write_bio_X509(bio, x);
        char *p = NULL;
        long n = BIO_get_mem_data(bio, &p);
        ca = eg_strndup(p, (size_t)n);
        BIO_free(bio);
        X509_free(x);
        EVP_PKEY_free(key);
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(ca, strlen(ca), md, &mdlen, EVP_sha256(), NULL);
    char cadir[256];
    int k = snprintf(cadir, sizeof cadir, "%s/target-ca-", f->dir);
    for (int i = 0; i < 8; i++)
        k += snprintf(cadir + k, sizeof cadir - (size_t)k, "%02x", md[i]);
    snprintf(cadir + k, sizeof cadir - (size_t)k, ".pem");
    assert_int_equal(mkdir(cadir, 0700), 0);
    inside = eg_asprintf("%s/x", cadir);
    fp = fopen(inside, "w");
    fclose(fp);
    json_t *body = json_loads(ONPREM, 0, NULL);
    json_object_set_new(json_object_get(body, "target"), "ca_pem", json_string(ca));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_int_equal(eg_target_put(t, text, strlen(text), &doc, &e), EG_EIO);
    assert_int_equal(e.stage, EG_TARGET_STAGE_BUILD);
    assert_string_equal(e.v.field, "target");
    assert_non_null(strstr(e.v.detail, "target.ca_pem"));
    assert_null(strstr(e.v.detail, "Secr3t-Pw!"));
    unlink(inside);
    eg_free(inside);
    rmdir(cadir);
    /* Once the path is free the same document goes through and the CA file is 0600. */
    json_decref(put_ok(t, text));
    struct stat st;
    assert_int_equal(stat(cadir, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    eg_free(text);
    eg_free(ca);

    /* Everything before the last PUT left the stored document alone. */
    assert_int_equal(eg_target_revision(t), 2);
    eg_target_free(t);
    t = open_ok(f);
    assert_int_equal(eg_target_revision(t), 2);
    assert_int_equal(eg_target_get(t, &after), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(after, "target"), "kind")), "onprem");
    json_decref(before);
    json_decref(after);
    eg_target_free(t);
    /* A dry-run document again, then a restart removes the CA file nobody uses any more. */
    t = open_ok(f);
    json_decref(put_ok(t, "{\"target\":{\"kind\":\"dryrun\"}}"));
    eg_target_free(t);
    t = open_ok(f);
    assert_int_equal(stat(cadir, &st), -1);
    eg_target_free(t);
}

static void test_open_refusals(void **state)
{
    struct fx *f = *state;
    struct eg_target *t = open_ok(f);
    char why[512], other[160];
    json_decref(put_ok(t, ONPREM));
    eg_target_free(t);
    t = NULL;

    /* Another key file: the stored password does not open; nothing starts. */
    snprintf(other, sizeof other, "%s/other.key", f->dir);
    f->o.key_file = other;
    assert_int_equal(eg_target_open(&f->o, &t, why, sizeof why), EG_EAUTH);
    assert_null(t);
    assert_non_null(strstr(why, f->file));
    assert_non_null(strstr(why, "target.password_sealed"));
    assert_null(strstr(why, "Secr3t-Pw!"));

    /* The key file readable by others: refused, naming it. */
    f->o.key_file = NULL;
    assert_int_equal(chmod(f->key, 0644), 0);
    assert_int_equal(eg_target_open(&f->o, &t, why, sizeof why), EG_EPERM);
    assert_non_null(strstr(why, f->key));
    assert_int_equal(chmod(f->key, 0600), 0);

    /* No document and a bootstrap that fails. */
    unlink(f->file);
    f->o.bootstrap = failing_boot;
    assert_int_equal(eg_target_open(&f->o, &t, why, sizeof why), EG_EIO);
    assert_non_null(strstr(why, "bootstrap"));
    f->o.bootstrap = NULL;
    assert_int_equal(eg_target_open(&f->o, &t, why, sizeof why), EG_EINVAL);
}

/* Concurrent PUTs are serialised: every one gets its own revision. */
struct putter {
    struct eg_target *t;
    int ok;
};

static void *put_thread(void *arg)
{
    struct putter *p = arg;
    for (int i = 0; i < 20; i++) {
        char body[128];
        json_t *doc = NULL;
        struct eg_target_error e;
        snprintf(body, sizeof body, "{\"target\":{\"kind\":\"dryrun\",\"latency_ms\":%d}}", i);
        if (eg_target_put(p->t, body, strlen(body), &doc, &e) == 0)
            p->ok++;
        json_decref(doc);
    }
    return NULL;
}

static void test_concurrent_puts(void **state)
{
    struct fx *f = *state;
    struct eg_target *t = open_ok(f);
    struct putter p[4] = {{t, 0}, {t, 0}, {t, 0}, {t, 0}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, put_thread, &p[i]), 0);
    for (int i = 0; i < 20; i++)
        (void)first_cmdlet(t); /* calls while the target changes */
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(p[i].ok, 20);
    assert_int_equal(eg_target_revision(t), 80);
    eg_target_free(t);
    t = open_ok(f);
    assert_int_equal(eg_target_revision(t), 80);
    eg_target_free(t);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bootstrap_then_put_swaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_puts_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_puts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
