/* mock_exchange_helper.h - for unit tests that run a bridge against easgate-mock-exchange:
 * spawn the mock (posix_spawn, port 0, the ports file), talk to its control API (with easgate's
 * own HTTP client), stop it; and make an RSA app key with a self-signed certificate (OpenSSL) for
 * the Exchange Online token flow. Included by one test file each; everything is static. */
#ifndef EG_TEST_MOCK_EXCHANGE_HELPER_H
#define EG_TEST_MOCK_EXCHANGE_HELPER_H

#include <jansson.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/util.h"
#include "transport/http_client.h"

extern char **environ;

#define MOCKX_FN static __attribute__((unused))

struct mockx {
    pid_t pid;
    char dir[PATH_MAX];
    uint16_t port, control;
};

/* The mock's binary, or NULL when it was not built. */
MOCKX_FN const char *mockx_binary(void)
{
    static char path[PATH_MAX];
    const char *bd = getenv("EG_BINARY_DIR");
    snprintf(path, sizeof path, "%s/easgate-mock-exchange", bd ? bd : ".");
    return access(path, X_OK) == 0 ? path : NULL;
}

MOCKX_FN void mockx_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Start the mock with the given extra arguments (NULL-terminated). listen: "127.0.0.1:0" or a
 * fixed address. Returns 0, or -1 (binary missing, no ports file within 30 s). */
MOCKX_FN int mockx_start(struct mockx *m, const char *listen, const char *const *extra)
{
    const char *bin = mockx_binary();
    char ports[PATH_MAX + 16], log[PATH_MAX + 16];
    const char *argv[64];
    size_t n = 0;
    memset(m, 0, sizeof *m);
    if (!bin)
        return -1;
    snprintf(m->dir, sizeof m->dir, "%.900s/eg-mockx.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(m->dir))
        return -1;
    snprintf(ports, sizeof ports, "%s/ports.json", m->dir);
    snprintf(log, sizeof log, "%s/mock.log", m->dir);
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = listen ? listen : "127.0.0.1:0";
    argv[n++] = "--control";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--ports-file";
    argv[n++] = ports;
    argv[n++] = "--log-level";
    argv[n++] = "warn";
    for (size_t i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&m->pid, bin, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    for (int i = 0; i < 3000; i++) {
        int st;
        if (waitpid(m->pid, &st, WNOHANG) == m->pid) {
            m->pid = 0;
            fprintf(stderr, "mock exited; see %s\n", log);
            return -1;
        }
        json_t *j = json_load_file(ports, 0, NULL);
        if (j) {
            m->port = (uint16_t)json_integer_value(json_object_get(j, "exchange"));
            m->control = (uint16_t)json_integer_value(json_object_get(j, "control"));
            json_decref(j);
            return m->port && m->control ? 0 : -1;
        }
        mockx_sleep_ms(10);
    }
    return -1;
}

MOCKX_FN void mockx_stop(struct mockx *m)
{
    char cmd[PATH_MAX + 16];
    if (m->pid > 0) {
        int st;
        kill(m->pid, SIGTERM);
        waitpid(m->pid, &st, 0);
        m->pid = 0;
    }
    if (m->dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", m->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", m->dir);
        m->dir[0] = '\0';
    }
}

/* One control API request; body (may be NULL) is stolen. Returns the answer's JSON (new
 * reference; NULL when it is not JSON) and *status. */
MOCKX_FN json_t *mockx_ctl(struct mockx *m, const char *method, const char *path, json_t *body,
                           long *status)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)m->control, path);
    struct eg_http_client_opts o = {.url = url, .response_timeout_ms = 60000};
    struct eg_http_client *c = NULL;
    struct eg_http_client_response r = {0};
    json_t *ret = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    *status = 0;
    if (eg_http_client_new(&o, &c) == 0) {
        struct eg_http_client_req rq = {.method = method,
                                        .content_type = text ? "application/json" : NULL,
                                        .body = text,
                                        .body_len = text ? strlen(text) : 0};
        if (eg_http_client_request(c, &rq, &r) == 0) {
            *status = r.status;
            ret = json_loadb(r.body, r.body_len, 0, NULL);
        }
        eg_http_client_response_clear(&r);
    }
    eg_http_client_free(c);
    eg_free(text);
    return ret;
}

/* GET path, expecting 200. */
MOCKX_FN json_t *mockx_get(struct mockx *m, const char *path)
{
    long st = 0;
    json_t *j = mockx_ctl(m, "GET", path, NULL, &st);
    if (st != 200) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* The recorded cmdlet calls (the array). New reference. */
MOCKX_FN json_t *mockx_calls(struct mockx *m)
{
    json_t *j = mockx_get(m, "/control/calls");
    if (json_is_object(j)) {
        json_t *a = json_incref(json_object_get(j, "calls"));
        json_decref(j);
        return a;
    }
    return j;
}

MOCKX_FN void mockx_calls_reset(struct mockx *m)
{
    long st = 0;
    json_decref(mockx_ctl(m, "DELETE", "/control/calls", NULL, &st));
}

/* The i-th recorded call named cmdlet (borrowed from calls), or NULL. */
MOCKX_FN json_t *mockx_call(json_t *calls, const char *cmdlet, size_t nth)
{
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "cmdlet"));
        if (name && strcmp(name, cmdlet) == 0 && nth-- == 0)
            return c;
    }
    return NULL;
}

MOCKX_FN size_t mockx_count(json_t *calls, const char *cmdlet)
{
    size_t n = 0;
    while (mockx_call(calls, cmdlet, n))
        n++;
    return n;
}

/* ---- an app key and certificate (RSA 2048, self-signed, PEM) ---- */

MOCKX_FN char *bio_text(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *s = n > 0 ? eg_strndup(p, (size_t)n) : NULL;
    BIO_free(b);
    return s;
}

MOCKX_FN int make_app_pki(const char *cn, char **ret_cert, char **ret_key, EVP_PKEY **ret_pkey)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    int rc = -1;
    if (!k || !x)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 2 * 86400);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, k);
    if (!X509_sign(x, k, EVP_sha256()))
        goto out;
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    if (!bc || !bk || !PEM_write_bio_X509(bc, x) ||
        !PEM_write_bio_PrivateKey(bk, k, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(bc);
        BIO_free(bk);
        goto out;
    }
    *ret_cert = bio_text(bc);
    *ret_key = bio_text(bk);
    if (ret_pkey) {
        *ret_pkey = k;
        k = NULL;
    }
    rc = *ret_cert && *ret_key ? 0 : -1;
out:
    EVP_PKEY_free(k);
    X509_free(x);
    return rc;
}

/* Write text to dir/name; returns the new path (eg_free) or NULL. */
MOCKX_FN char *write_temp(const char *dir, const char *name, const char *text)
{
    char *p = eg_asprintf("%s/%s", dir, name);
    if (p && eg_write_file_atomic(p, text, strlen(text), 0600) < 0)
        eg_freep(&p);
    return p;
}

#endif
