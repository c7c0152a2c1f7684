/* test_config.c - the bootstrap configuration: the option table, defaults, precedence
 * defaults < file < environment < command line, every fixture of tests/fixtures/config, the
 * command-line forms, strict integers, environment names, cross-field rules, file errors,
 * line numbers of the file scanner, token reading, usage text and allocation failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/config.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/eg-test-config.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

/* Write a file under tmpdir; returns its path in a static rotating buffer. */
static const char *write_tmp(const char *name, const char *text, size_t len)
{
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return p;
}

struct loaded {
    int rc;
    struct eg_config *cfg;
    struct eg_config_diags d;
};

/* Load with argv (argv[0] added) and a NULL-terminated envp (may be NULL). */
static struct loaded load(char *const *args, char *const *envp)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "easgate";
    for (size_t i = 0; args && args[i]; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    struct loaded l;
    memset(&l, 0, sizeof l);
    l.rc = eg_config_load(argc, argv, envp, &l.cfg, &l.d);
    assert_true(l.rc == 0 || l.rc == EG_EINVAL);
    assert_non_null(l.cfg);
    assert_int_equal(l.rc == 0, l.d.n == 0);
    return l;
}

static void loaded_free(struct loaded *l)
{
    eg_config_free(l->cfg);
    eg_config_diags_free(&l->d);
}

static void dump(const struct loaded *l)
{
    for (size_t i = 0; i < l->d.n; i++)
        fprintf(stderr, "  diag %zu: %s: %s\n", i, l->d.v[i].where, l->d.v[i].message);
}

/* Some diagnostic has exactly this where and a message containing substring. */
static bool has_diag(const struct loaded *l, const char *where, const char *substring)
{
    for (size_t i = 0; i < l->d.n; i++)
        if ((!where || strcmp(l->d.v[i].where, where) == 0) && strstr(l->d.v[i].message, substring))
            return true;
    return false;
}

static void expect_diag(const struct loaded *l, const char *where, const char *substring)
{
    if (!has_diag(l, where, substring)) {
        dump(l);
        fail_msg("no diagnostic at \"%s\" containing \"%s\"", where ? where : "*", substring);
    }
}

static void expect_clean(const struct loaded *l)
{
    if (l->d.n) {
        dump(l);
        fail_msg("expected no diagnostic, got %zu", l->d.n);
    }
}

/* Arguments that satisfy the cross-field rules without any file. */
#define LOOPBACK_PLAIN "--listen", "127.0.0.1:0", "--plain-http", "--no-auth"

/* ---- table and defaults --------------------------------------------------------------------- */

static void test_option_table(void **state)
{
    size_t n = 0;
    const struct eg_option *o = eg_config_options(&n);
    assert_non_null(o);
    assert_int_equal(n, 46);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(o[i].name);
        assert_non_null(o[i].help);
        assert_true(strlen(o[i].help) > 10);
        for (const char *p = o[i].name; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(o[i].name, o[j].name);
        if (o[i].type == EG_OPT_INT) {
            int64_t v = 0;
            assert_non_null(o[i].def);
            assert_true(o[i].min <= o[i].max);
            assert_int_equal(eg_parse_int64(o[i].def, o[i].min, o[i].max, &v), 0);
        }
        if (o[i].type == EG_OPT_ENUM)
            assert_non_null(o[i].choices);
        if (strcmp(o[i].name, "config") == 0)
            assert_true(o[i].flags & EG_OPT_CLI_ONLY);
        else
            assert_false(o[i].flags & EG_OPT_CLI_ONLY);
    }
    assert_int_equal(eg_config_options(NULL), o);
}

static void test_defaults(void **state)
{
    struct eg_config *c = NULL;
    assert_int_equal(eg_config_defaults(&c), 0);
    assert_int_equal(c->action, EG_ACTION_RUN);
    assert_null(c->config_file);
    assert_string_equal(c->listen, "0.0.0.0:9090");
    assert_string_equal(c->listen_addr, "0.0.0.0");
    assert_int_equal(c->listen_port, 9090);
    assert_string_equal(c->state_dir, "/var/lib/easgate");
    assert_null(c->tls_cert);
    assert_null(c->tls_key);
    assert_null(c->tls_priorities);
    assert_null(c->client_ca);
    assert_null(c->token_file);
    assert_false(c->plain_http);
    assert_false(c->plain_http_any_address);
    assert_false(c->no_auth);
    assert_null(c->ports_file);
    assert_string_equal(c->log_level, "notice");
    assert_int_equal(c->workers, EG_DEFAULT_WORKERS);
    assert_int_equal(c->max_body_bytes, EG_DEFAULT_MAX_BODY);
    assert_int_equal(c->max_batch, EG_DEFAULT_MAX_BATCH);
    assert_int_equal(c->max_connections, EG_DEFAULT_MAX_CONNECTIONS);
    assert_int_equal(c->conn_timeout_s, EG_DEFAULT_CONN_TIMEOUT_S);
    assert_int_equal(c->drain_timeout_ms, EG_DEFAULT_DRAIN_TIMEOUT_MS);
    assert_string_equal(c->bridge, "dryrun");
    assert_int_equal(c->dryrun_latency_ms, 0);
    assert_true(c->coalesce);
    assert_int_equal(c->max_coalesce, EG_MAX_COALESCE);
    assert_int_equal(c->max_attempts, EG_DEFAULT_MAX_ATTEMPTS);
    assert_int_equal(c->retry_base_ms, EG_DEFAULT_RETRY_BASE_MS);
    assert_int_equal(c->retry_max_ms, EG_DEFAULT_RETRY_MAX_MS);
    assert_int_equal(c->retry_deadline_ms, EG_DEFAULT_RETRY_DEADLINE_MS);
    assert_int_equal(c->upload_heartbeat_s, EG_UPLOAD_DEFAULT_HEARTBEAT_S);
    assert_int_equal(c->upload_retry_max_ms, EG_UPLOAD_MAX_BACKOFF_MS);
    assert_int_equal(c->outbox_max_records, EG_OUTBOX_MAX_RECORDS);
    assert_int_equal(c->outbox_max_bytes, EG_OUTBOX_MAX_BYTES);
    assert_int_equal(c->retry_deadline_ms, 15 * 60 * 1000);
    eg_config_free(c);
    eg_config_free(NULL);
    eg_config_diags_free(NULL);

    /* Bounds in the table come from limits.h. */
    size_t n = 0;
    const struct eg_option *o = eg_config_options(&n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(o[i].name, "max_body_bytes") == 0) {
            assert_int_equal(o[i].min, EG_MIN_MAX_BODY);
            assert_int_equal(o[i].max, EG_MAX_MAX_BODY);
        }
        if (strcmp(o[i].name, "max_batch") == 0)
            assert_int_equal(o[i].max, EG_MAX_BATCH);
        if (strcmp(o[i].name, "workers") == 0)
            assert_int_equal(o[i].max, EG_MAX_WORKERS);
        if (strcmp(o[i].name, "max_coalesce") == 0)
            assert_int_equal(o[i].max, EG_MAX_COALESCE);
        if (strcmp(o[i].name, "max_attempts") == 0)
            assert_int_equal(o[i].max, 100);
        if (strcmp(o[i].name, "dryrun_latency_ms") == 0)
            assert_int_equal(o[i].max, 60000);
        if (strcmp(o[i].name, "retry_deadline_ms") == 0) {
            assert_int_equal(o[i].min, EG_MIN_RETRY_DEADLINE_MS);
            assert_int_equal(o[i].max, EG_MAX_RETRY_DEADLINE_MS);
            assert_int_equal(o[i].max, 7LL * 24 * 3600 * 1000);
        }
    }
}

/* ---- precedence ----------------------------------------------------------------------------- */

static void test_precedence(void **state)
{
    make_tmpdir();
    char text[512];
    int n = snprintf(text, sizeof text,
                     "{\"workers\": 3, \"log_level\": \"info\", \"state_dir\": \"/from/file\",\n"
                     " \"listen\": \"127.0.0.1:7000\", \"plain_http\": true, \"no_auth\": true,\n"
                     " \"max_batch\": 10}\n");
    const char *file = write_tmp("p.json", text, (size_t)n);
    char env_config[600];
    snprintf(env_config, sizeof env_config, "EASGATE_CONFIG=%s", file);

    /* File only (named by --config). */
    char *a1[] = {"--config", (char *)file, NULL};
    struct loaded l = load(a1, NULL);
    expect_clean(&l);
    assert_string_equal(l.cfg->config_file, file);
    assert_int_equal(l.cfg->workers, 3);
    assert_int_equal(l.cfg->max_batch, 10);
    assert_string_equal(l.cfg->log_level, "info");
    assert_string_equal(l.cfg->state_dir, "/from/file");
    assert_string_equal(l.cfg->listen_addr, "127.0.0.1");
    assert_int_equal(l.cfg->listen_port, 7000);
    assert_int_equal(l.cfg->conn_timeout_s, EG_DEFAULT_CONN_TIMEOUT_S); /* default kept */
    loaded_free(&l);

    /* File named by EASGATE_CONFIG; environment beats the file. */
    char *e2[] = {env_config,      "EASGATE_WORKERS=5", "EASGATE_STATE_DIR=/from/env",
                  "PATH=/usr/bin", "EASGATEX=ignored",  NULL};
    l = load(NULL, e2);
    expect_clean(&l);
    assert_string_equal(l.cfg->config_file, file);
    assert_int_equal(l.cfg->workers, 5);
    assert_string_equal(l.cfg->state_dir, "/from/env");
    assert_string_equal(l.cfg->log_level, "info");
    loaded_free(&l);

    /* Command line beats both. */
    char *a3[] = {"--workers", "7", "--listen=127.0.0.1:7001", NULL};
    l = load(a3, e2);
    expect_clean(&l);
    assert_int_equal(l.cfg->workers, 7);
    assert_string_equal(l.cfg->state_dir, "/from/env");
    assert_int_equal(l.cfg->listen_port, 7001);
    assert_int_equal(l.cfg->max_batch, 10);
    loaded_free(&l);

    /* --config on the command line beats EASGATE_CONFIG. */
    const char *other = write_tmp("o.json",
                                  "{\"workers\": 9, \"listen\": \"127.0.0.1:0\", "
                                  "\"plain_http\": true, \"no_auth\": true}",
                                  strlen("{\"workers\": 9, \"listen\": \"127.0.0.1:0\", "
                                         "\"plain_http\": true, \"no_auth\": true}"));
    char *a4[] = {"--config", (char *)other, NULL};
    char *e4[] = {env_config, NULL};
    l = load(a4, e4);
    expect_clean(&l);
    assert_int_equal(l.cfg->workers, 9);
    assert_string_equal(l.cfg->config_file, other);
    loaded_free(&l);

    /* A bad value at a higher layer is reported and the lower layer's value stays. */
    char *a5[] = {"--workers", "0", NULL};
    l = load(a5, e2);
    expect_diag(&l, "command line --workers", "between 1 and 64");
    assert_int_equal(l.cfg->workers, 5);
    loaded_free(&l);

    /* Cross-field errors point at the layer that set the option they are about. */
    char *e6[] = {env_config, "EASGATE_LISTEN=0.0.0.0:0", NULL};
    char where[600];
    snprintf(where, sizeof where, "%s:2", file);
    l = load(NULL, e6);
    expect_diag(&l, where, "plain HTTP (plain_http) is refused");
    expect_diag(&l, where, "no_auth is only allowed on a loopback");
    assert_int_equal(l.d.n, 2);
    loaded_free(&l);
    char *a6[] = {"--config", (char *)file, "--listen", "0.0.0.0:0", "--plain-http", NULL};
    char *e6b[] = {"EASGATE_NO_AUTH=true", NULL};
    l = load(a6, e6b);
    expect_diag(&l, "command line --plain-http", "plain HTTP (plain_http) is refused");
    expect_diag(&l, "environment EASGATE_NO_AUTH", "no_auth is only allowed on a loopback");
    assert_int_equal(l.d.n, 2);
    loaded_free(&l);
    rm_tmpdir();
}

/* ---- fixtures ------------------------------------------------------------------------------- */

static const char *fixture_dir(void)
{
    static char dir[1024];
    const char *src = getenv("EG_SOURCE_DIR");
    if (!src)
        fail_msg("EG_SOURCE_DIR is not set (ctest sets it to the source tree)");
    snprintf(dir, sizeof dir, "%s/tests/fixtures/config", src);
    return dir;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted *.json names in dir (relative to the fixture dir); returns the count. */
static size_t list_json(const char *sub, char names[][512], size_t max)
{
    DIR *d = opendir(sub);
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) && n < max) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0)
            snprintf(names[n++], 512, "%.200s/%.255s", sub, e->d_name);
    }
    closedir(d);
    char *ptrs[64];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = names[i];
    qsort(ptrs, n, sizeof ptrs[0], name_cmp);
    static char sorted[64][512];
    for (size_t i = 0; i < n; i++)
        snprintf(sorted[i], 512, "%s", ptrs[i]);
    memcpy(names, sorted, n * sizeof sorted[0]);
    return n;
}

static void check_bad_fixture(const char *path)
{
    char expected_path[300];
    snprintf(expected_path, sizeof expected_path, "%.*s.expected", (int)(strlen(path) - 5), path);
    FILE *f = fopen(expected_path, "r");
    if (!f)
        fail_msg("%s has no %s", path, expected_path);
    char *argv[] = {"--check-config", (char *)path, NULL};
    struct loaded l = load(argv, NULL);
    assert_int_equal(l.cfg->action, EG_ACTION_CHECK);
    assert_string_equal(l.cfg->config_file, path);
    bool used[EG_MAX_CONFIG_ERRORS + 1] = {false};
    char line[600];
    size_t want = 0;
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s:", path);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0])
            continue;
        char *colon = strstr(line, ": ");
        if (!colon)
            fail_msg("%s: bad line \"%s\"", expected_path, line);
        *colon = '\0';
        const char *sub = colon + 2;
        char where[1000];
        bool any_where = strcmp(line, "-") == 0;
        snprintf(where, sizeof where, "%s:%s", path, line);
        bool found = false;
        for (size_t i = 0; i < l.d.n && !found; i++) {
            if (used[i] || !strstr(l.d.v[i].message, sub))
                continue;
            if (any_where ? strncmp(l.d.v[i].where, prefix, strlen(prefix)) == 0
                          : strcmp(l.d.v[i].where, where) != 0)
                continue;
            used[i] = found = true;
        }
        if (!found) {
            dump(&l);
            fail_msg("%s: no diagnostic for \"%s: %s\"", path, line, sub);
        }
        want++;
    }
    fclose(f);
    if (l.d.n != want) {
        dump(&l);
        fail_msg("%s: %zu diagnostics, %zu expected", path, l.d.n, want);
    }
    assert_int_equal(l.rc, EG_EINVAL);
    loaded_free(&l);
}

static void test_fixtures(void **state)
{
    char cwd[1024];
    assert_non_null(getcwd(cwd, sizeof cwd));
    /* Fixtures name their placeholder files relative to the fixture directory. */
    assert_int_equal(chdir(fixture_dir()), 0);

    static char names[64][512];
    size_t n = list_json("good", names, 64);
    assert_true(n >= 3);
    for (size_t i = 0; i < n; i++) {
        char *argv[] = {"--check-config", names[i], NULL};
        struct loaded l = load(argv, NULL);
        if (l.d.n) {
            dump(&l);
            fail_msg("good fixture %s has diagnostics", names[i]);
        }
        assert_int_equal(l.cfg->action, EG_ACTION_CHECK);
        assert_string_equal(l.cfg->config_file, names[i]);
        loaded_free(&l);
    }
    n = list_json("bad", names, 64);
    assert_true(n >= 10);
    for (size_t i = 0; i < n; i++)
        check_bad_fixture(names[i]);

    /* Spot checks of values from the good fixtures. */
    char *a1[] = {"--check-config", "good/tls-full.json", NULL};
    struct loaded l = load(a1, NULL);
    expect_clean(&l);
    assert_string_equal(l.cfg->tls_cert, "files/server.pem");
    assert_string_equal(l.cfg->tls_priorities, "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1");
    assert_int_equal(l.cfg->workers, 64);
    assert_int_equal(l.cfg->max_body_bytes, 4096);
    assert_false(l.cfg->coalesce);
    assert_int_equal(l.cfg->drain_timeout_ms, 0);
    loaded_free(&l);
    char *a2[] = {"--check-config", "good/nulls-and-escapes.json", NULL};
    l = load(a2, NULL);
    expect_clean(&l);
    assert_string_equal(l.cfg->log_level, "warn"); /* key written as "\u006cog_level" */
    assert_string_equal(l.cfg->state_dir,
                        "/tmp/with \"quotes\" and {braces} [and] brackets, commas: too");
    assert_null(l.cfg->ports_file);
    loaded_free(&l);
    char *a3[] = {"--check-config", "good/ipv6-token.json", NULL};
    l = load(a3, NULL);
    expect_clean(&l);
    assert_string_equal(l.cfg->listen_addr, "::1");
    assert_int_equal(l.cfg->listen_port, 9443);
    loaded_free(&l);

    assert_int_equal(chdir(cwd), 0);
}

/* ---- command line --------------------------------------------------------------------------- */

static void test_cli_forms(void **state)
{
    char *a1[] = {LOOPBACK_PLAIN,   "--workers",      "2",
                  "--max-batch=50", "--no-coalesce",  "--log-level",
                  "debug",          "--state-dir=/s", NULL};
    struct loaded l = load(a1, NULL);
    expect_clean(&l);
    assert_true(l.cfg->plain_http);
    assert_true(l.cfg->no_auth); /* "--no-auth" is the option no_auth, not "not auth" */
    assert_int_equal(l.cfg->workers, 2);
    assert_int_equal(l.cfg->max_batch, 50);
    assert_false(l.cfg->coalesce);
    assert_string_equal(l.cfg->log_level, "debug");
    assert_string_equal(l.cfg->state_dir, "/s");
    assert_int_equal(l.cfg->action, EG_ACTION_RUN);
    loaded_free(&l);

    char *a2[] = {"--listen",         "127.0.0.1:0", "--plain-http=yes",           "--no-auth=true",
                  "--coalesce=false", "--coalesce",  "--plain-http-any-address=0", NULL};
    l = load(a2, NULL);
    expect_clean(&l);
    assert_true(l.cfg->plain_http);
    assert_true(l.cfg->coalesce); /* later wins */
    assert_false(l.cfg->plain_http_any_address);
    loaded_free(&l);

    char *a3[] = {LOOPBACK_PLAIN, "--no-no-auth", "--token-file", "/dev/null", NULL};
    l = load(a3, NULL);
    expect_clean(&l);
    assert_false(l.cfg->no_auth);
    assert_string_equal(l.cfg->token_file, "/dev/null");
    loaded_free(&l);

    /* Mistakes, each reported with its location. */
    char *a4[] = {LOOPBACK_PLAIN,
                  "--colour",
                  "blue",
                  "--state_dir",
                  "/x",
                  "--no-workers",
                  "--no-coalesce=true",
                  "--plain-http=maybe",
                  "stray",
                  "--tls-cert",
                  "--tls-key",
                  "k",
                  "--workers",
                  NULL};
    l = load(a4, NULL);
    expect_diag(&l, "command line --colour", "unknown option");
    expect_diag(&l, "command line", "unexpected argument \"blue\"");
    expect_diag(&l, "command line --state_dir", "unknown option");
    expect_diag(&l, "command line", "unexpected argument \"/x\"");
    expect_diag(&l, "command line --no-workers", "unknown option");
    expect_diag(&l, "command line --no-coalesce", "takes no value");
    expect_diag(&l, "command line --plain-http", "must be true or false, not \"maybe\"");
    expect_diag(&l, "command line", "unexpected argument \"stray\"");
    expect_diag(&l, "command line --tls-cert", "needs a value");
    expect_diag(&l, "command line --workers", "needs a value");
    assert_null(l.cfg->tls_cert);
    assert_string_equal(l.cfg->tls_key, "k");
    assert_int_equal(l.rc, EG_EINVAL);
    loaded_free(&l);

    /* Special arguments. */
    char *a5[] = {"--help", "--colour", NULL};
    l = load(a5, NULL);
    assert_int_equal(l.cfg->action, EG_ACTION_HELP);
    loaded_free(&l);
    char *a5b[] = {"-h", NULL};
    l = load(a5b, NULL);
    assert_int_equal(l.cfg->action, EG_ACTION_HELP);
    loaded_free(&l);
    char *a6[] = {"--version", NULL};
    l = load(a6, NULL);
    assert_int_equal(l.cfg->action, EG_ACTION_VERSION);
    expect_clean(&l);
    loaded_free(&l);
    char *a7[] = {LOOPBACK_PLAIN, "--check-config", NULL};
    l = load(a7, NULL);
    expect_diag(&l, "command line --check-config", "needs the FILE");
    assert_int_equal(l.cfg->action, EG_ACTION_RUN);
    loaded_free(&l);
    char *a8[] = {"--check-config=/nonexistent/easgate.json", NULL};
    l = load(a8, NULL);
    assert_int_equal(l.cfg->action, EG_ACTION_CHECK);
    assert_string_equal(l.cfg->config_file, "/nonexistent/easgate.json");
    expect_diag(&l, "command line --check-config", "cannot read configuration file");
    assert_int_equal(l.d.n, 1); /* a file that cannot be read adds no cross-field noise */
    loaded_free(&l);
    char *a9[] = {"--config", "/nonexistent/a.json", NULL};
    l = load(a9, NULL);
    expect_diag(&l, "command line --config", "/nonexistent/a.json");
    loaded_free(&l);
}

static void test_strict_ints(void **state)
{
    static const char *const bad[] = {"4x",  " 4",  "4 ", "0x10", "",   "1e3",
                                      "4.0", "--4", "0",  "65",   "-1", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--workers=%s", bad[i]);
        char *argv[] = {LOOPBACK_PLAIN, arg, NULL};
        struct loaded l = load(argv, NULL);
        if (!has_diag(&l, "command line --workers", "must be an integer between 1 and 64")) {
            dump(&l);
            fail_msg("--workers=%s accepted", bad[i]);
        }
        assert_int_equal(l.cfg->workers, EG_DEFAULT_WORKERS);
        loaded_free(&l);

        char env[64];
        snprintf(env, sizeof env, "EASGATE_WORKERS=%s", bad[i]);
        char *envp[] = {env, NULL};
        char *argv2[] = {LOOPBACK_PLAIN, NULL};
        l = load(argv2, envp);
        expect_diag(&l, "environment EASGATE_WORKERS", "must be an integer between 1 and 64");
        loaded_free(&l);
    }
    char *ok[] = {LOOPBACK_PLAIN,
                  "--workers",
                  "64",
                  "--max-body-bytes",
                  "67108864",
                  "--drain-timeout-ms",
                  "0",
                  "--retry-base-ms",
                  "1",
                  NULL};
    struct loaded l = load(ok, NULL);
    expect_clean(&l);
    assert_int_equal(l.cfg->workers, 64);
    assert_int_equal(l.cfg->max_body_bytes, EG_MAX_MAX_BODY);
    assert_int_equal(l.cfg->drain_timeout_ms, 0);
    loaded_free(&l);
    char *over[] = {
        LOOPBACK_PLAIN, "--max-body-bytes",    "67108865", "--max-batch", "1001", "--max-attempts",
        "101",          "--dryrun-latency-ms", "60001",    NULL};
    l = load(over, NULL);
    expect_diag(&l, "command line --max-body-bytes", "between 4096 and 67108864");
    expect_diag(&l, "command line --max-batch", "between 1 and 1000");
    expect_diag(&l, "command line --max-attempts", "between 1 and 100");
    expect_diag(&l, "command line --dryrun-latency-ms", "between 0 and 60000");
    assert_int_equal(l.d.n, 4);
    loaded_free(&l);
}

/* retry_deadline_ms: 1 s .. 7 days from every layer, 0 and everything outside refused with the
 * option's name and range, in a file with its line. */
static void test_retry_deadline(void **state)
{
    const char *range = "retry_deadline_ms must be an integer between 1000 and 604800000";

    char *a1[] = {LOOPBACK_PLAIN, "--retry-deadline-ms", "1000", NULL};
    struct loaded l = load(a1, NULL);
    expect_clean(&l);
    assert_int_equal(l.cfg->retry_deadline_ms, 1000);
    loaded_free(&l);

    char *envp[] = {"EASGATE_RETRY_DEADLINE_MS=604800000", NULL};
    char *a2[] = {LOOPBACK_PLAIN, NULL};
    l = load(a2, envp);
    expect_clean(&l);
    assert_int_equal(l.cfg->retry_deadline_ms, EG_MAX_RETRY_DEADLINE_MS);
    loaded_free(&l);

    static const char *const bad[] = {"0", "999", "604800001", "-1", "15m", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char arg[64];
        snprintf(arg, sizeof arg, "--retry-deadline-ms=%s", bad[i]);
        char *a3[] = {LOOPBACK_PLAIN, arg, NULL};
        l = load(a3, NULL);
        if (!has_diag(&l, "command line --retry-deadline-ms", range)) {
            dump(&l);
            fail_msg("--retry-deadline-ms=%s accepted", bad[i]);
        }
        assert_int_equal(l.d.n, 1);
        assert_int_equal(l.cfg->retry_deadline_ms, EG_DEFAULT_RETRY_DEADLINE_MS);
        loaded_free(&l);
    }

    /* In a file: --check-config reports it at its line; a good value elsewhere is taken. */
    make_tmpdir();
    const char text[] = "{\n"
                        "  \"listen\": \"127.0.0.1:0\",\n"
                        "  \"plain_http\": true,\n"
                        "  \"no_auth\": true,\n"
                        "  \"retry_deadline_ms\": 0\n"
                        "}\n";
    const char *file = write_tmp("deadline.json", text, sizeof text - 1);
    char *a4[] = {"--check-config", (char *)file, NULL};
    l = load(a4, NULL);
    char where[600];
    snprintf(where, sizeof where, "%s:5", file);
    expect_diag(&l, where, range);
    assert_int_equal(l.d.n, 1);
    assert_int_equal(l.rc, EG_EINVAL);
    loaded_free(&l);

    const char good[] = "{\"listen\": \"127.0.0.1:0\", \"plain_http\": true, \"no_auth\": "
                        "true,\n \"retry_deadline_ms\": 3600000}\n";
    file = write_tmp("deadline-ok.json", good, sizeof good - 1);
    char *a5[] = {"--check-config", (char *)file, NULL};
    l = load(a5, NULL);
    expect_clean(&l);
    assert_int_equal(l.cfg->retry_deadline_ms, 3600000);
    loaded_free(&l);
    /* The command line wins over the file. */
    char *a6[] = {"--config", (char *)file, "--retry-deadline-ms", "5000", NULL};
    l = load(a6, NULL);
    expect_clean(&l);
    assert_int_equal(l.cfg->retry_deadline_ms, 5000);
    loaded_free(&l);
    rm_tmpdir();
}

static void test_psrp_bridge_rules(void **state)
{
    char *argv[] = {LOOPBACK_PLAIN, "--bridge", "psrp", NULL};
    struct loaded l = load(argv, NULL);
    expect_diag(&l, "command line --bridge", "needs exchange_url");
    expect_diag(&l, "command line --bridge", "needs exchange_user and exchange_password_file");
    loaded_free(&l);
    char *argv2[] = {LOOPBACK_PLAIN,       "--bridge",           "psrp", "--exchange-url",
                     "ftp://x/PowerShell", "--exchange-user",    "svc",  "--exchange-password-file",
                     "/nonexistent/pw",    "--exchange-version", "2013", NULL};
    l = load(argv2, NULL);
    expect_diag(&l, "command line --exchange-url", "must start with https:// or http://");
    expect_diag(&l, "command line --exchange-password-file", "cannot be read");
    assert_int_equal(l.d.n, 2);
    assert_string_equal(l.cfg->exchange_version, "2013");
    assert_int_equal(l.cfg->exchange_max_pipelines, 4);
    loaded_free(&l);
}

static void test_environment(void **state)
{
    char *envp[] = {"EASGATE_COLOUR=blue",
                    "EASGATE_workers=3",
                    "EASGATE_=x",
                    "EASGATE_PLAIN_HTTP=1",
                    "EASGATE_NO_AUTH=on",
                    "EASGATE_LISTEN=[::1]:0",
                    "EASGATE_STATE_DIR=",
                    "EASGATE_COALESCE=nope",
                    "HOME=/root",
                    "EASGATE_BRIDGE=online",
                    NULL};
    struct loaded l = load(NULL, envp);
    expect_diag(&l, "environment EASGATE_COLOUR", "unknown variable");
    expect_diag(&l, "environment EASGATE_workers", "unknown variable");
    expect_diag(&l, "environment EASGATE_", "unknown variable");
    expect_diag(&l, "environment EASGATE_STATE_DIR", "must not be empty");
    expect_diag(&l, "environment EASGATE_COALESCE", "must be true or false");
    expect_diag(&l, "environment EASGATE_BRIDGE", "must be one of dryrun, psrp");
    assert_int_equal(l.d.n, 6);
    assert_true(l.cfg->plain_http);
    assert_true(l.cfg->no_auth);
    assert_string_equal(l.cfg->listen_addr, "::1");
    assert_string_equal(l.cfg->state_dir, "/var/lib/easgate");
    loaded_free(&l);
}

/* ---- cross-field rules ---------------------------------------------------------------------- */

static void test_cross_field(void **state)
{
    make_tmpdir();
    const char *cert = write_tmp("cert.pem", "x\n", 2);
    const char *key = write_tmp("key.pem", "x\n", 2);
    const char *token = write_tmp("token", "0123456789abcdef0123\n", 21);

    /* HTTPS without material. */
    char *a1[] = {"--listen", "127.0.0.1:0", "--token-file", (char *)token, NULL};
    struct loaded l = load(a1, NULL);
    expect_diag(&l, "configuration", "tls_cert is required");
    expect_diag(&l, "configuration", "tls_key is required");
    assert_int_equal(l.d.n, 2);
    loaded_free(&l);
    char *a1b[] = {"--tls-cert", (char *)cert, "--token-file", (char *)token, NULL};
    l = load(a1b, NULL);
    expect_diag(&l, "command line --tls-cert", "tls_key is required");
    assert_int_equal(l.d.n, 1);
    loaded_free(&l);

    /* HTTPS on any address with a token: fine. */
    char *a2[] = {"--tls-cert",   (char *)cert,  "--tls-key", (char *)key,
                  "--token-file", (char *)token, NULL};
    l = load(a2, NULL);
    expect_clean(&l);
    loaded_free(&l);

    /* No authentication at all. */
    char *a3[] = {"--tls-cert", (char *)cert, "--tls-key", (char *)key, NULL};
    l = load(a3, NULL);
    expect_diag(&l, "configuration", "no console authentication configured");
    loaded_free(&l);

    /* Plain HTTP: loopback only unless forced; no_auth loopback only, even when forced. */
    char *a4[] = {"--listen", "0.0.0.0:0", "--plain-http", "--no-auth", NULL};
    l = load(a4, NULL);
    expect_diag(&l, "command line --plain-http", "plain");
    expect_diag(&l, "command line --no-auth", "loopback");
    assert_int_equal(l.d.n, 2);
    loaded_free(&l);
    char *a5[] = {
        "--listen",    "0.0.0.0:0", "--plain-http", "--plain-http-any-address", "--token-file",
        (char *)token, NULL};
    l = load(a5, NULL);
    expect_clean(&l);
    loaded_free(&l);
    char *a5b[] = {"--listen",  "0.0.0.0:0", "--plain-http", "--plain-http-any-address",
                   "--no-auth", NULL};
    l = load(a5b, NULL);
    expect_diag(&l, "command line --no-auth", "loopback");
    assert_int_equal(l.d.n, 1);
    loaded_free(&l);
    char *a5c[] = {"--listen", "localhost:0", "--plain-http", "--no-auth", NULL};
    l = load(a5c, NULL);
    expect_clean(&l);
    loaded_free(&l);

    /* Client certificates need TLS. */
    char *a6[] = {LOOPBACK_PLAIN, "--client-ca", (char *)cert, NULL};
    l = load(a6, NULL);
    expect_diag(&l, "command line --client-ca", "client_ca needs HTTPS");
    loaded_free(&l);

    /* Named files must be readable; each is reported at its location. */
    char *envp[] = {"EASGATE_TOKEN_FILE=/nonexistent/token", NULL};
    char *a7[] = {"--tls-cert", "/nonexistent/cert.pem", "--tls-key",
                  tmpdir,       "--client-ca",           (char *)cert,
                  NULL};
    l = load(a7, envp);
    expect_diag(&l, "command line --tls-cert", "tls_cert /nonexistent/cert.pem cannot be read");
    expect_diag(&l, "command line --tls-key", "is a directory");
    expect_diag(&l, "environment EASGATE_TOKEN_FILE", "token_file /nonexistent/token cannot");
    assert_int_equal(l.d.n, 3);
    loaded_free(&l);

    /* Retry bounds. */
    char *a8[] = {LOOPBACK_PLAIN, "--retry-base-ms", "2000", "--retry-max-ms", "1000", NULL};
    l = load(a8, NULL);
    expect_diag(&l, "command line --retry-base-ms", "must not exceed retry_max_ms");
    loaded_free(&l);

    /* A rejected value does not cascade into cross-field errors. */
    char *a9[] = {"--listen", "0.0.0.0:99999", "--plain-http", "--no-auth", NULL};
    l = load(a9, NULL);
    expect_diag(&l, "command line --listen", "PORT 0-65535");
    assert_int_equal(l.d.n, 1);
    loaded_free(&l);

    /* --check-config neither creates nor needs state_dir. */
    char sd[400];
    snprintf(sd, sizeof sd, "%s/state-not-created", tmpdir);
    char text[600];
    int n = snprintf(text, sizeof text,
                     "{\"listen\":\"127.0.0.1:0\",\"plain_http\":true,\"no_auth\":true,"
                     "\"state_dir\":\"%s\"}",
                     sd);
    const char *file = write_tmp("check.json", text, (size_t)n);
    char *a10[] = {"--check-config", (char *)file, NULL};
    l = load(a10, NULL);
    expect_clean(&l);
    assert_int_equal(l.cfg->action, EG_ACTION_CHECK);
    assert_string_equal(l.cfg->state_dir, sd);
    struct stat st;
    assert_int_not_equal(stat(sd, &st), 0);
    loaded_free(&l);
    rm_tmpdir();
}

static void test_listen_values(void **state)
{
    static const struct {
        const char *v;
        const char *addr;
        unsigned port;
    } good[] = {{"127.0.0.1:0", "127.0.0.1", 0},
                {"127.1.2.3:65535", "127.1.2.3", 65535},
                {"[::1]:8443", "::1", 8443},
                {"localhost:9090", "localhost", 9090}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *argv[] = {"--listen", (char *)good[i].v, "--plain-http", "--no-auth", NULL};
        struct loaded l = load(argv, NULL);
        expect_clean(&l);
        assert_string_equal(l.cfg->listen, good[i].v);
        assert_string_equal(l.cfg->listen_addr, good[i].addr);
        assert_int_equal(l.cfg->listen_port, good[i].port);
        loaded_free(&l);
    }
    static const char *const bad[] = {"127.0.0.1:99999", "127.0.0.1",      "example.com:80",
                                      "::1:80",          "[127.0.0.1]:80", ":80",
                                      "127.0.0.1:",      "127.0.0.1:8x",   "[::1]80",
                                      "999.1.1.1:80",    "LOCALHOST:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"--listen", (char *)bad[i], "--plain-http", "--no-auth", NULL};
        struct loaded l = load(argv, NULL);
        if (!has_diag(&l, "command line --listen", "listen must be ADDR:PORT")) {
            dump(&l);
            fail_msg("--listen %s accepted", bad[i]);
        }
        assert_string_equal(l.cfg->listen, "0.0.0.0:9090");
        assert_string_equal(l.cfg->listen_addr, "0.0.0.0");
        loaded_free(&l);
    }
}

/* ---- the file scanner ----------------------------------------------------------------------- */

static void test_parse_buffer_lines(void **state)
{
    struct eg_config *c = NULL;
    struct eg_config_diags d = {0};
    assert_int_equal(eg_config_defaults(&c), 0);
    const char *text = "{ \"workers\": \"x\",\n"                                 /* 1 */
                       "  \"a\": {\"workers\": 1, \"b\": [\"}\", \"\\\"{\"]},\n" /* 2 */
                       "  \"state_dir\": \"/ok\", \"c\n"                         /* 3: bad JSON? */
                       "}";
    /* (line 3 has a raw newline in a string: a JSON syntax error at line 3) */
    assert_int_equal(eg_config_parse_buffer(c, "t.json", text, strlen(text), &d), EG_EINVAL);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.v[0].where, "t.json:3");
    assert_non_null(strstr(d.v[0].message, "invalid JSON at line 3"));
    eg_config_diags_free(&d);

    text = "{ \"workers\": \"x\",\n"
           "  \"a\": {\"workers\": 1, \"b\": [\"}\", \"\\\"{\", {\"c\": 2}]},\n"
           "  \"state_dir\": \"/ok\", \"d\\n\": 1,\n"
           "\n"
           "  \"max_batch\":\n"
           "     0, \"tls_key\": null, \"bridge\": \"dryrun\"}";
    assert_int_equal(eg_config_parse_buffer(c, "t.json", text, strlen(text), &d), EG_EINVAL);
    assert_int_equal(d.n, 4);
    assert_string_equal(d.v[0].where, "t.json:1");
    assert_non_null(strstr(d.v[0].message, "workers must be an integer"));
    assert_string_equal(d.v[1].where, "t.json:2");
    assert_non_null(strstr(d.v[1].message, "unknown option \"a\""));
    assert_string_equal(d.v[2].where, "t.json:3");
    assert_non_null(strstr(d.v[2].message, "unknown option \"d?\"")); /* echo is sanitised */
    assert_string_equal(d.v[3].where, "t.json:5");
    assert_non_null(strstr(d.v[3].message, "max_batch"));
    assert_string_equal(c->state_dir, "/ok");
    assert_int_equal(c->workers, EG_DEFAULT_WORKERS);
    eg_config_diags_free(&d);

    /* A clean buffer; an accepted listen updates the derived address. */
    text = "{\"listen\": \"[::1]:1234\", \"tls_priorities\": \"NORMAL\"}";
    assert_int_equal(eg_config_parse_buffer(c, NULL, text, strlen(text), &d), 0);
    assert_int_equal(d.n, 0);
    assert_string_equal(c->listen_addr, "::1");
    assert_int_equal(c->listen_port, 1234);
    text = "{\"tls_priorities\": null}";
    assert_int_equal(eg_config_parse_buffer(c, NULL, text, strlen(text), &d), 0);
    assert_null(c->tls_priorities);

    /* Embedded NUL in the buffer, and over-large buffers. */
    static const char nul[] = "{\"workers\": 2}\0";
    assert_int_equal(eg_config_parse_buffer(c, "n", nul, sizeof nul - 1, &d), EG_EINVAL);
    eg_config_diags_free(&d);
    char *big = eg_malloc(EG_MAX_CONFIG_BYTES + 2);
    assert_non_null(big);
    memset(big, ' ', EG_MAX_CONFIG_BYTES + 1);
    big[0] = '{';
    big[EG_MAX_CONFIG_BYTES] = '}';
    big[EG_MAX_CONFIG_BYTES + 1] = '\0';
    assert_int_equal(eg_config_parse_buffer(c, "big", big, EG_MAX_CONFIG_BYTES + 1, &d), EG_EINVAL);
    assert_non_null(strstr(d.v[0].message, "larger than"));
    eg_config_diags_free(&d);
    assert_int_equal(eg_config_parse_buffer(c, "big", big, EG_MAX_CONFIG_BYTES, &d), EG_EINVAL);
    eg_config_diags_free(&d);
    big[EG_MAX_CONFIG_BYTES - 1] = '}';
    assert_int_equal(eg_config_parse_buffer(c, "big", big, EG_MAX_CONFIG_BYTES, &d), 0);
    eg_free(big);

    /* Every problem is reported, up to EG_MAX_CONFIG_ERRORS entries. */
    size_t cap = 200 * 32 + 16, len = 0;
    char *many = eg_malloc(cap);
    assert_non_null(many);
    len += (size_t)snprintf(many, cap, "{");
    for (int i = 0; i < 200; i++)
        len +=
            (size_t)snprintf(many + len, cap - len, "%s\n\"unknown_%d\": %d", i ? "," : "", i, i);
    snprintf(many + len, cap - len, "}");
    assert_int_equal(eg_config_parse_buffer(c, "m", many, strlen(many), &d), EG_EINVAL);
    assert_int_equal(d.n, EG_MAX_CONFIG_ERRORS);
    assert_string_equal(d.v[0].where, "m:2");
    assert_string_equal(d.v[98].where, "m:100");
    assert_non_null(strstr(d.v[EG_MAX_CONFIG_ERRORS - 1].message, "too many"));
    eg_config_diags_free(&d);
    eg_free(many);

    assert_int_equal(eg_config_parse_buffer(c, "x", NULL, 3, &d), EG_EINVAL);
    eg_config_free(c);
}

static void test_file_errors(void **state)
{
    make_tmpdir();
    char *big = eg_malloc(EG_MAX_CONFIG_BYTES + 10);
    assert_non_null(big);
    memset(big, ' ', EG_MAX_CONFIG_BYTES + 10);
    big[0] = '{';
    big[EG_MAX_CONFIG_BYTES + 9] = '}';
    const char *path = write_tmp("big.json", big, EG_MAX_CONFIG_BYTES + 10);
    eg_free(big);
    char *a1[] = {"--check-config", (char *)path, NULL};
    struct loaded l = load(a1, NULL);
    expect_diag(&l, "command line --check-config", "larger than 262144 bytes");
    assert_int_equal(l.d.n, 1);
    loaded_free(&l);

    char *a2[] = {"--check-config", tmpdir, NULL};
    l = load(a2, NULL);
    expect_diag(&l, "command line --check-config", "cannot read configuration file");
    loaded_free(&l);

    char env[400];
    snprintf(env, sizeof env, "EASGATE_CONFIG=%s/missing.json", tmpdir);
    char *envp[] = {env, NULL};
    l = load(NULL, envp);
    expect_diag(&l, "environment EASGATE_CONFIG", "missing.json");
    loaded_free(&l);

    char *envp2[] = {"EASGATE_CONFIG=", NULL};
    char *a3[] = {LOOPBACK_PLAIN, NULL};
    l = load(a3, envp2);
    expect_diag(&l, "environment EASGATE_CONFIG", "config must not be empty");
    loaded_free(&l);
    rm_tmpdir();
}

/* ---- token ---------------------------------------------------------------------------------- */

static int read_token_from(const char *text, size_t len, char **ret)
{
    const char *p = write_tmp("token", text, len);
    struct eg_config *c = NULL;
    assert_int_equal(eg_config_defaults(&c), 0);
    c->token_file = eg_strdup(p);
    int rc = eg_config_read_token(c, ret);
    eg_config_free(c);
    return rc;
}

static void test_read_token(void **state)
{
    make_tmpdir();
    char *tok = NULL;
    assert_int_equal(read_token_from("itest-token-0123456789abcdef\n", 29, &tok), 0);
    assert_string_equal(tok, "itest-token-0123456789abcdef");
    eg_memzero(tok, strlen(tok));
    eg_free(tok);
    tok = NULL;
    assert_int_equal(read_token_from("0123456789abcdef\r\n", 18, &tok), 0);
    assert_string_equal(tok, "0123456789abcdef");
    eg_free(tok);
    tok = NULL;
    assert_int_equal(read_token_from("0123456789abcdef", 16, &tok), 0); /* no newline */
    eg_free(tok);

    char *sentinel = (char *)"untouched";
    tok = sentinel;
    assert_int_equal(read_token_from("0123456789abcde\n", 16, &tok), EG_EINVAL); /* 15 */
    assert_ptr_equal(tok, sentinel);
    assert_int_equal(read_token_from("0123456789 abcdef\n", 18, &tok), EG_EINVAL);
    assert_int_equal(read_token_from("0123456789\tabcdef\n", 18, &tok), EG_EINVAL);
    assert_int_equal(read_token_from("0123456789\xc3\xa9"
                                     "abcdef\n",
                                     19, &tok),
                     EG_EINVAL);
    assert_int_equal(read_token_from("0123456789abcdef\n\n", 18, &tok), EG_EINVAL);
    assert_int_equal(read_token_from("", 0, &tok), EG_EINVAL);
    assert_ptr_equal(tok, sentinel);

    char *big = eg_malloc(EG_MAX_TOKEN_BYTES + 3);
    assert_non_null(big);
    memset(big, 'a', EG_MAX_TOKEN_BYTES + 2);
    big[EG_MAX_TOKEN_BYTES] = '\n';
    assert_int_equal(read_token_from(big, EG_MAX_TOKEN_BYTES + 1, &tok), 0);
    assert_int_equal(strlen(tok), EG_MAX_TOKEN_BYTES);
    eg_free(tok);
    tok = sentinel;
    big[EG_MAX_TOKEN_BYTES] = 'a';
    assert_int_equal(read_token_from(big, EG_MAX_TOKEN_BYTES + 1, &tok), EG_ELIMIT);
    assert_int_equal(read_token_from(big, EG_MAX_TOKEN_BYTES + 2, &tok), EG_ELIMIT);
    memset(big, 'a', EG_MAX_TOKEN_BYTES + 3);
    assert_int_equal(read_token_from(big, EG_MAX_TOKEN_BYTES + 3, &tok), EG_ELIMIT);
    assert_ptr_equal(tok, sentinel);
    eg_free(big);

    struct eg_config *c = NULL;
    assert_int_equal(eg_config_defaults(&c), 0);
    assert_int_equal(eg_config_read_token(c, &tok), EG_EINVAL); /* no token_file */
    c->token_file = eg_asprintf("%s/absent", tmpdir);
    assert_int_equal(eg_config_read_token(c, &tok), EG_EIO);
    assert_ptr_equal(tok, sentinel);
    eg_config_free(c);
    rm_tmpdir();
}

/* ---- usage ---------------------------------------------------------------------------------- */

static void test_usage(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    eg_config_usage(f, "easgate");
    fclose(f);
    assert_non_null(strstr(buf, "Usage: easgate"));
    assert_non_null(strstr(buf, "--check-config FILE"));
    size_t n = 0;
    const struct eg_option *o = eg_config_options(&n);
    for (size_t i = 0; i < n; i++) {
        char dashed[64], env[80];
        size_t k;
        for (k = 0; o[i].name[k]; k++)
            dashed[k] = o[i].name[k] == '_' ? '-' : o[i].name[k];
        dashed[k] = '\0';
        snprintf(env, sizeof env, "EASGATE_");
        for (k = 0; o[i].name[k]; k++)
            env[8 + k] = (char)(o[i].name[k] >= 'a' ? o[i].name[k] - 'a' + 'A' : o[i].name[k]);
        env[8 + k] = '\0';
        if (!strstr(buf, dashed) || !strstr(buf, env) || !strstr(buf, o[i].help))
            fail_msg("usage lacks %s / %s / its help", dashed, env);
        if (o[i].def) {
            char def[128];
            snprintf(def, sizeof def, "default: %s\n", o[i].def);
            assert_non_null(strstr(buf, def));
        }
    }
    assert_non_null(strstr(buf, "--[no-]plain-http"));
    assert_non_null(strstr(buf, "--workers N (1..64)"));
    assert_non_null(strstr(buf, "--log-level err|warn|notice|info|debug"));
    free(buf); /* open_memstream uses the C library allocator */
}

/* ---- allocation failure --------------------------------------------------------------------- */

static void test_alloc_failure(void **state)
{
    make_tmpdir();
    const char *text = "{\n\"workers\": 3,\n\"colour\": 1,\n\"state_dir\": \"/f\",\n"
                       "\"listen\": \"127.0.0.1:0\", \"plain_http\": true}";
    const char *file = write_tmp("a.json", text, strlen(text));
    char *argv[] = {"easgate",     "--config", (char *)file, "--no-auth",
                    "--workers=5", "--bogus",  NULL};
    char *envp[] = {"EASGATE_LOG_LEVEL=info", "EASGATE_X=1", NULL};
    struct eg_config *ref = NULL;
    struct eg_config_diags rd = {0};
    int rrc = eg_config_load(6, argv, envp, &ref, &rd);
    assert_int_equal(rrc, EG_EINVAL);
    assert_int_equal(rd.n, 3); /* colour, EASGATE_X, --bogus */

    bool completed = false;
    long n;
    for (n = 0; n < 100000 && !completed; n++) {
        struct eg_config *c = NULL;
        struct eg_config_diags d = {0};
        eg_alloc_fail_after(n);
        int rc = eg_config_load(6, argv, envp, &c, &d);
        long failures = eg_alloc_failures();
        eg_alloc_fail_after(-1);
        if (rc == EG_ENOMEM) {
            assert_null(c);
            assert_int_equal(d.n, 0);
            assert_null(d.v);
            continue;
        }
        assert_int_equal(rc, rrc);
        assert_non_null(c);
        assert_int_equal(d.n, rd.n);
        for (size_t i = 0; i < d.n; i++) {
            assert_string_equal(d.v[i].where, rd.v[i].where);
            assert_string_equal(d.v[i].message, rd.v[i].message);
        }
        assert_int_equal(c->workers, 5);
        assert_string_equal(c->log_level, "info");
        assert_string_equal(c->state_dir, "/f");
        eg_config_free(c);
        eg_config_diags_free(&d);
        completed = failures == 0;
    }
    assert_true(completed);
    assert_true(n > 10);
    eg_config_free(ref);
    eg_config_diags_free(&rd);
    rm_tmpdir();
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_option_table),       cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),         cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_cli_forms),          cmocka_unit_test(test_strict_ints),
        cmocka_unit_test(test_environment),        cmocka_unit_test(test_psrp_bridge_rules),
        cmocka_unit_test(test_cross_field),        cmocka_unit_test(test_listen_values),
        cmocka_unit_test(test_parse_buffer_lines), cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_read_token),         cmocka_unit_test(test_usage),
        cmocka_unit_test(test_alloc_failure),      cmocka_unit_test(test_retry_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
