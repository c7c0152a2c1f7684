/* test_audit.c - the hash-chained audit trail: record format (checked against an independent
 * SHA-256), verification of an intact chain and the first broken line of every kind of tampering,
 * restart, torn tail, concurrent appenders, secret-named parameters, limits and allocation
 * failures, the `easgate audit verify` subcommand, and the worker hook over a real journal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <gnutls/crypto.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/command.h"
#include "agent/queue.h"
#include "agent/worker.h"
#include "common/alloc.h"
#include "common/util.h"
#include "exchange/bridge.h"

/* ---- fixture: a temporary directory --------------------------------------------------------- */

struct fx {
    char dir[64];
    char log[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/eg-test-audit.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->log, sizeof f->log, "%s/audit.log", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static struct eg_audit *open_log(const char *path, struct eg_audit_open_info *info)
{
    struct eg_audit *a = NULL;
    char *why = NULL;
    int rc = eg_audit_open(path, &a, info, &why);
    if (rc != 0)
        fprintf(stderr, "eg_audit_open: %s: %s\n", eg_strerror(rc), why ? why : "");
    assert_int_equal(rc, 0);
    assert_null(why);
    assert_non_null(a);
    return a;
}

/* Append one record for command id (a Set-CASMailbox with some parameters). */
static int append_one(struct eg_audit *a, const char *id)
{
    json_t *p = json_pack("{s:s, s:{s:[s]}}", "Identity", "alice@corp.example",
                          "ActiveSyncBlockedDeviceIDs", "Add", id);
    struct eg_audit_record r = {.command_id = id,
                                .console = "CN=console.test",
                                .type = "device.block",
                                .cmdlet = "Set-CASMailbox",
                                .parameters = p,
                                .outcome = "succeeded"};
    int rc = eg_audit_append(a, &r, 1);
    json_decref(p);
    return rc;
}

static void write_chain(const char *path, int n)
{
    struct eg_audit *a = open_log(path, NULL);
    char id[32];
    for (int i = 1; i <= n; i++) {
        snprintf(id, sizeof id, "cmd-%03d", i);
        assert_int_equal(append_one(a, id), 0);
    }
    eg_audit_close(a);
}

__attribute__((noinline)) static char *slurp(const char *path, size_t *ret_len)
{
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(eg_read_file(path, 64 << 20, &data, &len), 0);
    if (ret_len)
        *ret_len = len;
    return data;
}

static void spit(const char *path, const char *data, size_t len)
{
    assert_int_equal(eg_write_file_atomic(path, data, len, 0600), 0);
}

/* The lines of a file (each without its newline), at most 256. */
struct lines {
    char *v[256];
    size_t n;
};

static void split(const char *path, struct lines *L)
{
    size_t len = 0;
    char *data = slurp(path, &len), *p = data;
    L->n = 0;
    while (p < data + len) {
        char *nl = memchr(p, '\n', (size_t)(data + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(data + len - p);
        assert_true(L->n < 256);
        L->v[L->n] = eg_strndup(p, n);
        assert_non_null(L->v[L->n]);
        L->n++;
        p += n + (nl ? 1 : 0);
    }
    eg_free(data);
}

static void join(const char *path, struct lines *L)
{
    size_t total = 0, off = 0;
    for (size_t i = 0; i < L->n; i++)
        total += strlen(L->v[i]) + 1;
    char *buf = eg_malloc(total + 1);
    assert_non_null(buf);
    for (size_t i = 0; i < L->n; i++) {
        size_t n = strlen(L->v[i]);
        memcpy(buf + off, L->v[i], n);
        off += n;
        buf[off++] = '\n';
    }
    spit(path, buf, off);
    eg_free(buf);
}

static void lines_free(struct lines *L)
{
    for (size_t i = 0; i < L->n; i++)
        eg_freep(&L->v[i]);
    L->n = 0;
}

/* Independent SHA-256 (gnutls' hash API directly, not the module's helper). */
static void sha256(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    assert_int_equal(gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n, d), 0);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* The hash a line should carry: SHA-256 of the line without its hash member. */
static void expected_hash(const char *line, char out[65])
{
    const char *h = strstr(line, ",\"hash\":\"");
    assert_non_null(h);
    size_t n = (size_t)(h - line);
    char *body = eg_malloc(n + 2);
    assert_non_null(body);
    memcpy(body, line, n);
    body[n] = '}';
    body[n + 1] = '\0';
    sha256(body, n + 1, out);
    eg_free(body);
}

static int64_t verify(const char *path, struct eg_audit_report *rep)
{
    int rc = eg_audit_verify(path, rep);
    if (rc == 0)
        return 0;
    assert_int_equal(rc, EG_EPARSE);
    assert_true(rep->why[0] != '\0');
    return rep->bad_line;
}

/* ---- format and an intact chain -------------------------------------------------------------- */

static void test_record_format(void **state)
{
    struct fx *f = *state;
    struct eg_audit_open_info info;
    struct eg_audit *a = open_log(f->log, &info);
    struct stat st;

    assert_int_equal(info.last_seq, 0);
    assert_int_equal(info.torn_bytes, 0);
    assert_string_equal(info.head,
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_int_equal(stat(f->log, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    const char *batch[] = {"c-1", "c-2", "c-3"};
    json_t *p = json_pack("{s:s, s:b}", "Identity", "dev-\xc3\xa9", "Confirm", 0);
    struct eg_audit_record r[2] = {
        {.command_id = "c-2",
         .console = "CN=console.test,O=\xc3\x89quipe",
         .type = "device.block",
         .cmdlet = "Set-CASMailbox",
         .parameters = p,
         .outcome = "retrying",
         .code = "throttled",
         .batch = batch,
         .n_batch = 3},
        {.command_id = "c-9", .type = "device.wipe", .outcome = "failed", .code = "not_found"},
    };
    assert_int_equal(eg_audit_append(a, r, 2), 0);
    json_decref(p);
    int64_t seq = 0;
    char head[EG_AUDIT_HASH_HEX];
    eg_audit_head(a, &seq, head);
    assert_int_equal(seq, 2);
    eg_audit_close(a);

    struct lines L;
    split(f->log, &L);
    assert_int_equal(L.n, 2);
    char want[65], prev[65];
    for (size_t i = 0; i < L.n; i++) {
        for (const char *c = L.v[i]; *c; c++)
            assert_true((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f); /* ASCII */
        json_error_t je;
        json_t *o = json_loads(L.v[i], JSON_REJECT_DUPLICATES, &je);
        assert_non_null(o);
        /* Member order is part of the format: seq first, prev and hash last. */
        assert_int_equal(strncmp(L.v[i], "{\"seq\":", 7), 0);
        assert_non_null(strstr(L.v[i], ",\"prev\":\""));
        assert_true(strstr(L.v[i], ",\"prev\":\"") < strstr(L.v[i], ",\"hash\":\""));
        assert_int_equal(json_integer_value(json_object_get(o, "seq")), (json_int_t)i + 1);
        const char *t = json_string_value(json_object_get(o, "time"));
        assert_non_null(t);
        assert_int_equal(strlen(t), 24); /* 2026-12-02T10:00:00.123Z */
        assert_int_equal(t[10], 'T');
        assert_int_equal(t[19], '.');
        assert_int_equal(t[23], 'Z');
        expected_hash(L.v[i], want);
        assert_string_equal(json_string_value(json_object_get(o, "hash")), want);
        if (i == 0)
            assert_string_equal(json_string_value(json_object_get(o, "prev")),
                                "0000000000000000000000000000000000000000000000000000000000000000");
        else
            assert_string_equal(json_string_value(json_object_get(o, "prev")), prev);
        sha256(L.v[i], strlen(L.v[i]), prev);
        if (i == 0) {
            assert_string_equal(json_string_value(json_object_get(o, "command_id")), "c-2");
            assert_string_equal(json_string_value(json_object_get(o, "console")),
                                "CN=console.test,O=\xc3\x89quipe");
            assert_string_equal(json_string_value(json_object_get(o, "type")), "device.block");
            assert_string_equal(json_string_value(json_object_get(o, "cmdlet")), "Set-CASMailbox");
            json_t *pp = json_object_get(o, "parameters");
            assert_string_equal(json_string_value(json_object_get(pp, "Identity")), "dev-\xc3\xa9");
            assert_true(json_is_false(json_object_get(pp, "Confirm")));
            assert_string_equal(json_string_value(json_object_get(o, "outcome")), "retrying");
            assert_string_equal(json_string_value(json_object_get(o, "code")), "throttled");
            json_t *sw = json_object_get(o, "shared_with");
            assert_int_equal(json_array_size(sw), 2);
            assert_string_equal(json_string_value(json_array_get(sw, 0)), "c-1");
            assert_string_equal(json_string_value(json_array_get(sw, 1)), "c-3");
            assert_null(json_object_get(o, "redacted"));
        } else {
            assert_string_equal(json_string_value(json_object_get(o, "console")), "anonymous");
            assert_string_equal(json_string_value(json_object_get(o, "cmdlet")), "(unknown)");
            assert_int_equal(json_object_size(json_object_get(o, "parameters")), 0);
            assert_string_equal(json_string_value(json_object_get(o, "outcome")), "failed");
            assert_null(json_object_get(o, "shared_with"));
        }
        json_decref(o);
    }
    assert_string_equal(head, prev); /* the head is the hash of the last line's bytes */
    lines_free(&L);

    struct eg_audit_report rep;
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 2);
    assert_int_equal(rep.last_seq, 2);
    assert_string_equal(rep.head, head);
}

static void test_chain_verifies(void **state)
{
    struct fx *f = *state;
    struct eg_audit_report rep;

    /* An empty (new) log is intact. */
    eg_audit_close(open_log(f->log, NULL));
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 0);

    write_chain(f->log, 60);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 60);
    assert_int_equal(rep.last_seq, 60);
    assert_int_equal(rep.bad_line, 0);

    /* A missing file cannot be checked. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nothing.log", f->dir);
    assert_int_equal(eg_audit_verify(missing, &rep), EG_EIO);
    assert_int_equal(eg_audit_verify(NULL, &rep), EG_EINVAL);
}

/* ---- tampering ------------------------------------------------------------------------------- */

static void restore(const char *path, const char *orig, size_t len)
{
    spit(path, orig, len);
}

static void test_tampering_is_found_at_the_right_line(void **state)
{
    struct fx *f = *state;
    struct eg_audit_report rep;
    struct lines L;
    size_t len = 0;

    write_chain(f->log, 12);
    char *orig = slurp(f->log, &len);

    /* One byte flipped in the parameters of line 5. */
    split(f->log, &L);
    char *d = strstr(L.v[4], "cmd-005");
    assert_non_null(d);
    d[4] = '9';
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 5);
    assert_non_null(strstr(rep.why, "hash"));
    assert_int_equal(rep.records, 4);
    restore(f->log, orig, len);

    /* A byte flipped in the seq digits of line 3: its hash no longer matches. */
    split(f->log, &L);
    L.v[2][7] = '7';
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 3);
    restore(f->log, orig, len);

    /* Line 7 deleted: line 7 is now seq 8. */
    split(f->log, &L);
    eg_free(L.v[6]);
    memmove(&L.v[6], &L.v[7], (L.n - 7) * sizeof L.v[0]);
    L.n--;
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 7);
    assert_non_null(strstr(rep.why, "seq 8 where 7 was expected"));
    restore(f->log, orig, len);

    /* The first line deleted. */
    split(f->log, &L);
    eg_free(L.v[0]);
    memmove(&L.v[0], &L.v[1], (L.n - 1) * sizeof L.v[0]);
    L.n--;
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 1);
    assert_non_null(strstr(rep.why, "does not start with its first record"));
    restore(f->log, orig, len);

    /* Lines 4 and 5 swapped. */
    split(f->log, &L);
    char *t = L.v[3];
    L.v[3] = L.v[4];
    L.v[4] = t;
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 4);
    restore(f->log, orig, len);

    /* Bytes cut out of the middle: from inside line 5 to inside line 9. */
    split(f->log, &L);
    size_t at5 = 0, at9 = 0;
    for (size_t i = 0; i < 4; i++)
        at5 += strlen(L.v[i]) + 1;
    for (size_t i = 0; i < 8; i++)
        at9 += strlen(L.v[i]) + 1;
    lines_free(&L);
    char *cut = eg_malloc(len);
    assert_non_null(cut);
    size_t a = at5 + 30, b = at9 + 40;
    memcpy(cut, orig, a);
    memcpy(cut + a, orig + b, len - b);
    spit(f->log, cut, len - (b - a));
    eg_free(cut);
    assert_int_equal(verify(f->log, &rep), 5);
    restore(f->log, orig, len);

    /* Line 6 altered and re-hashed consistently: line 6 verifies alone, line 7's prev does not. */
    split(f->log, &L);
    char *h = strstr(L.v[5], ",\"hash\":\"");
    char *p6 = strstr(L.v[5], "cmd-006");
    assert_non_null(h);
    assert_non_null(p6);
    p6[6] = 'X';
    char want[65];
    expected_hash(L.v[5], want);
    memcpy(h + 9, want, 64);
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 7);
    assert_non_null(strstr(rep.why, "\"prev\" does not match the previous line"));
    restore(f->log, orig, len);

    /* A line inserted (a copy of line 2 after line 2). */
    split(f->log, &L);
    memmove(&L.v[3], &L.v[2], (L.n - 2) * sizeof L.v[0]);
    L.v[2] = eg_strdup(L.v[1]);
    L.n++;
    join(f->log, &L);
    lines_free(&L);
    assert_int_equal(verify(f->log, &rep), 3);
    restore(f->log, orig, len);

    /* The newline of the last line removed: an incomplete line 12. */
    spit(f->log, orig, len - 1);
    assert_int_equal(verify(f->log, &rep), 12);
    assert_non_null(strstr(rep.why, "incomplete"));
    assert_int_equal(rep.records, 11);

    /* Not JSON at all. */
    spit(f->log, "hello\n", 6);
    assert_int_equal(verify(f->log, &rep), 1);

    /* Intact again. */
    restore(f->log, orig, len);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 12);
    eg_free(orig);
}

/* ---- restart and torn tails ------------------------------------------------------------------ */

static void test_restart_continues_the_chain(void **state)
{
    struct fx *f = *state;
    struct eg_audit_open_info info;
    struct eg_audit_report rep;
    char head[EG_AUDIT_HASH_HEX];
    int64_t seq = 0;

    write_chain(f->log, 10);
    assert_int_equal(verify(f->log, &rep), 0);
    struct eg_audit *a = open_log(f->log, &info);
    assert_int_equal(info.last_seq, 10);
    assert_string_equal(info.head, rep.head);
    eg_audit_head(a, &seq, head);
    assert_int_equal(seq, 10);
    assert_int_equal(append_one(a, "after-restart"), 0);
    eg_audit_close(a);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 11);
    assert_int_equal(rep.last_seq, 11);

    /* An existing log with loose permissions is tightened to 0600. */
    assert_int_equal(chmod(f->log, 0644), 0);
    a = open_log(f->log, NULL);
    eg_audit_close(a);
    struct stat st;
    assert_int_equal(stat(f->log, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_torn_tail_moved_aside(void **state)
{
    struct fx *f = *state;
    struct eg_audit_open_info info;
    struct eg_audit_report rep;
    static const char frag[] = "{\"seq\":6,\"time\":\"2026-12-02T1";

    write_chain(f->log, 5);
    int fd = open(f->log, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, frag, sizeof frag - 1), (ssize_t)(sizeof frag - 1));
    close(fd);
    assert_int_equal(verify(f->log, &rep), 6); /* verify reports it */

    struct eg_audit *a = open_log(f->log, &info);
    assert_int_equal(info.torn_bytes, sizeof frag - 1);
    assert_int_equal(info.last_seq, 5);
    assert_non_null(strstr(info.torn_path, "/audit.log.torn-"));
    size_t tl = 0;
    char *torn = slurp(info.torn_path, &tl);
    assert_int_equal(tl, sizeof frag - 1);
    assert_memory_equal(torn, frag, tl);
    eg_free(torn);
    struct stat st;
    assert_int_equal(stat(info.torn_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* The chain up to the last full line is intact and continues. */
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 5);
    assert_int_equal(append_one(a, "after-torn"), 0);
    eg_audit_close(a);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 6);

    /* A log that is nothing but a torn first line becomes empty. */
    spit(f->log, frag, sizeof frag - 1);
    a = open_log(f->log, &info);
    assert_int_equal(info.torn_bytes, sizeof frag - 1);
    assert_int_equal(info.last_seq, 0);
    assert_int_equal(append_one(a, "first"), 0);
    eg_audit_close(a);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 1);
}

static void test_open_refuses_a_bad_last_line(void **state)
{
    struct fx *f = *state;
    struct eg_audit *a = NULL;
    char *why = NULL;
    size_t len = 0;

    write_chain(f->log, 3);
    char *data = slurp(f->log, &len);
    char *x = strstr(data + len - 200, "cmd-003");
    assert_non_null(x);
    x[0] = 'C';
    spit(f->log, data, len);
    assert_int_equal(eg_audit_open(f->log, &a, NULL, &why), EG_EPARSE);
    assert_null(a);
    assert_non_null(why);
    assert_non_null(strstr(why, "does not verify"));
    assert_non_null(strstr(why, f->log));
    eg_freep(&why);

    /* Not a regular file. */
    assert_int_equal(eg_audit_open(f->dir, &a, NULL, &why), EG_EIO);
    eg_freep(&why);
    assert_int_equal(eg_audit_open(NULL, &a, NULL, NULL), EG_EINVAL);
    eg_free(data);
}

/* ---- concurrency ----------------------------------------------------------------------------- */

#define N_THREADS    8
#define N_PER_THREAD 40

struct worker_arg {
    struct eg_audit *a;
    int t;
};

static void *appender(void *p)
{
    struct worker_arg *w = p;
    char id[3][32];
    for (int i = 0; i < N_PER_THREAD; i++) {
        /* One to three records per call, like a coalesced batch. */
        int n = 1 + (i % 3);
        struct eg_audit_record r[3];
        const char *ids[3];
        for (int k = 0; k < n; k++) {
            snprintf(id[k], sizeof id[k], "t%d-%d-%d", w->t, i, k);
            ids[k] = id[k];
        }
        for (int k = 0; k < n; k++)
            r[k] = (struct eg_audit_record){.command_id = id[k],
                                            .type = "device.allow",
                                            .cmdlet = "Set-CASMailbox",
                                            .outcome = "succeeded",
                                            .batch = ids,
                                            .n_batch = (size_t)n};
        if (eg_audit_append(w->a, r, (size_t)n) != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_concurrent_appends(void **state)
{
    struct fx *f = *state;
    struct eg_audit *a = open_log(f->log, NULL);
    pthread_t th[N_THREADS];
    struct worker_arg args[N_THREADS];
    int expected = 0;

    for (int i = 0; i < N_PER_THREAD; i++)
        expected += 1 + (i % 3);
    expected *= N_THREADS;
    for (int t = 0; t < N_THREADS; t++) {
        args[t] = (struct worker_arg){a, t};
        assert_int_equal(pthread_create(&th[t], NULL, appender, &args[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        void *ret = NULL;
        pthread_join(th[t], &ret);
        assert_null(ret);
    }
    assert_int_equal(eg_audit_failures(a), 0);
    eg_audit_close(a);

    struct eg_audit_report rep;
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, expected);
    assert_int_equal(rep.last_seq, expected);

    /* Every record is there once, and the records of one call are consecutive. */
    size_t len = 0;
    char *data = slurp(f->log, &len);
    for (int t = 0; t < N_THREADS; t++)
        for (int i = 0; i < N_PER_THREAD; i++) {
            char needle[48];
            snprintf(needle, sizeof needle, "\"command_id\":\"t%d-%d-0\"", t, i);
            char *first = strstr(data, needle);
            assert_non_null(first);
            assert_null(strstr(first + 1, needle));
            if (i % 3) { /* the next line is the call's next record */
                char *nl = strchr(first, '\n');
                snprintf(needle, sizeof needle, "\"command_id\":\"t%d-%d-1\"", t, i);
                assert_non_null(nl);
                assert_true(strstr(nl, needle) == strstr(nl, "\"command_id\""));
            }
        }
    eg_free(data);
}

/* ---- what is recorded ------------------------------------------------------------------------ */

static void test_secret_parameters_dropped(void **state)
{
    struct fx *f = *state;
    struct eg_audit *a = open_log(f->log, NULL);
    json_t *p = json_loads("{\"Identity\":\"alice\",\"Password\":\"hunter2-zz\","
                           "\"Nested\":{\"PrivateKey\":\"pk-zz\",\"Keep\":1},"
                           "\"List\":[{\"SecureStringValue\":\"ss-zz\",\"Ok\":true}],"
                           "\"credential\":\"cred-zz\",\"AccessToken\":\"tok-zz\","
                           "\"ClientSecret\":\"cs-zz\"}",
                           0, NULL);
    assert_non_null(p);
    struct eg_audit_record r = {.command_id = "s-1",
                                .type = "mailbox.set",
                                .cmdlet = "Set-Something",
                                .parameters = p,
                                .outcome = "succeeded"};
    assert_int_equal(eg_audit_append(a, &r, 1), 0);
    /* The caller's parameters are not modified. */
    assert_string_equal(json_string_value(json_object_get(p, "Password")), "hunter2-zz");
    json_decref(p);
    eg_audit_close(a);

    size_t len = 0;
    char *data = slurp(f->log, &len);
    assert_null(strstr(data, "-zz"));
    json_t *o = json_loads(data, 0, NULL);
    assert_non_null(o);
    json_t *pp = json_object_get(o, "parameters");
    assert_string_equal(json_string_value(json_object_get(pp, "Identity")), "alice");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(pp, "Nested"), "Keep")), 1);
    assert_null(json_object_get(pp, "Password"));
    assert_null(json_object_get(json_object_get(pp, "Nested"), "PrivateKey"));
    json_t *item = json_array_get(json_object_get(pp, "List"), 0);
    assert_null(json_object_get(item, "SecureStringValue"));
    assert_true(json_is_true(json_object_get(item, "Ok")));
    json_t *red = json_object_get(o, "redacted");
    assert_int_equal(json_array_size(red), 6);
    json_decref(o);
    eg_free(data);

    struct eg_audit_report rep;
    assert_int_equal(verify(f->log, &rep), 0);

    assert_true(eg_audit_is_secret_name("Password"));
    assert_true(eg_audit_is_secret_name("NewPASSWORD"));
    assert_true(eg_audit_is_secret_name("SecureString"));
    assert_true(eg_audit_is_secret_name("Credential"));
    assert_true(eg_audit_is_secret_name("PrivateKey"));
    assert_false(eg_audit_is_secret_name("Identity"));
    assert_false(eg_audit_is_secret_name("ActiveSyncAllowedDeviceIDs"));
    assert_false(eg_audit_is_secret_name(NULL));
}

static void test_changing_cmdlets(void **state)
{
    assert_true(eg_audit_is_change("Set-CASMailbox"));
    assert_true(eg_audit_is_change("Clear-MobileDevice"));
    assert_true(eg_audit_is_change("Remove-MobileDevice"));
    assert_true(eg_audit_is_change("Set-ActiveSyncOrganizationSettings"));
    assert_true(eg_audit_is_change(NULL));
    assert_false(eg_audit_is_change("Get-CASMailbox"));
    assert_false(eg_audit_is_change("get-mobiledevice"));
    assert_false(eg_audit_is_change("Test-ActiveSyncConnectivity"));
    assert_false(eg_audit_is_change("Search-Mailbox"));
}

static void test_limits_and_bad_input(void **state)
{
    struct fx *f = *state;
    struct eg_audit *a = open_log(f->log, NULL);
    struct eg_audit_report rep;

    assert_int_equal(append_one(a, "before"), 0);
    /* A record over EG_MAX_AUDIT_LINE is refused whole, never truncated. */
    size_t big = EG_MAX_AUDIT_LINE;
    char *s = eg_malloc(big + 1);
    assert_non_null(s);
    memset(s, 'x', big);
    s[big] = '\0';
    json_t *p = json_pack("{s:s}", "Identity", s);
    eg_free(s);
    struct eg_audit_record r[2] = {
        {.command_id = "ok", .type = "t", .cmdlet = "Set-X", .outcome = "succeeded"},
        {.command_id = "huge",
         .type = "t",
         .cmdlet = "Set-X",
         .parameters = p,
         .outcome = "succeeded"},
    };
    assert_int_equal(eg_audit_append(a, r, 2), EG_ELIMIT);
    json_decref(p);
    /* Bad input. */
    struct eg_audit_record bad = {.command_id = "b", .type = "t", .outcome = "maybe"};
    assert_int_equal(eg_audit_append(a, &bad, 1), EG_EINVAL);
    bad.outcome = NULL;
    assert_int_equal(eg_audit_append(a, &bad, 1), EG_EINVAL);
    assert_int_equal(eg_audit_append(NULL, &bad, 1), EG_EINVAL);
    assert_int_equal(eg_audit_append(a, NULL, 1), EG_EINVAL);
    assert_int_equal(eg_audit_append(a, NULL, 0), 0);
    assert_int_equal(eg_audit_failures(a), 4);
    /* Nothing of the refused calls was written; the chain goes on. */
    assert_int_equal(append_one(a, "after"), 0);
    eg_audit_close(a);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 2);
    size_t len = 0;
    char *data = slurp(f->log, &len);
    assert_null(strstr(data, "\"ok\""));
    eg_free(data);
}

static void test_allocation_failures(void **state)
{
    struct fx *f = *state;
    struct eg_audit *a = open_log(f->log, NULL);
    int ok = 0, refused = 0;

    for (long i = 0; i < 200; i++) {
        char id[32];
        snprintf(id, sizeof id, "oom-%ld", i);
        eg_alloc_fail_after(i);
        int rc = append_one(a, id);
        eg_alloc_fail_after(-1);
        if (rc == 0)
            ok++;
        else {
            assert_int_equal(rc, EG_ENOMEM);
            refused++;
        }
    }
    assert_true(refused > 0);
    assert_true(ok > 0);
    eg_audit_close(a);
    struct eg_audit_report rep;
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, ok);

    /* Opening under allocation failure: an error, never a crash or a leak. */
    for (long i = 0; i < 20; i++) {
        struct eg_audit *b = NULL;
        char *why = NULL;
        eg_alloc_fail_after(i);
        int rc = eg_audit_open(f->log, &b, NULL, &why);
        eg_alloc_fail_after(-1);
        if (rc == 0)
            eg_audit_close(b);
        else
            assert_int_equal(rc, EG_ENOMEM);
        eg_free(why);
    }
}

/* ---- the subcommand -------------------------------------------------------------------------- */

static int cli(const char *a1, const char *a2, const char *a3, const char *a4, char *const env[])
{
    char *argv[6] = {"audit", (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};
    int argc = 1;
    while (argc < 5 && argv[argc])
        argc++;
    fflush(stdout);
    return eg_audit_cli(argc, argv, env);
}

static void test_cli(void **state)
{
    struct fx *f = *state;
    char cfg[160], missing[160], env_dir[200];
    char *const no_env[] = {NULL};

    write_chain(f->log, 4);
    assert_int_equal(cli("verify", f->log, NULL, NULL, no_env), 0);
    /* From the configuration: state_dir of a config file, or of the environment. */
    snprintf(cfg, sizeof cfg, "%s/easgate.json", f->dir);
    char text[300];
    snprintf(text, sizeof text, "{\"state_dir\": \"%s\", \"plain_http\": true}\n", f->dir);
    /* (plain_http on the default 0.0.0.0 breaks a serving rule: irrelevant for the audit.) */
    spit(cfg, text, strlen(text));
    assert_int_equal(cli("verify", "--config", cfg, NULL, no_env), 0);
    snprintf(env_dir, sizeof env_dir, "EASGATE_STATE_DIR=%s", f->dir);
    char *const env[] = {env_dir, NULL};
    assert_int_equal(cli("verify", NULL, NULL, NULL, env), 0);
    /* A broken configuration file is a usage error. */
    spit(cfg, "{\"state_dir\": 5}\n", 17);
    assert_int_equal(cli("verify", "--config", cfg, NULL, no_env), 2);

    /* Tampered: 1. */
    size_t len = 0;
    char *data = slurp(f->log, &len);
    data[len / 2] ^= 0x01;
    spit(f->log, data, len);
    assert_int_equal(cli("verify", f->log, NULL, NULL, no_env), 1);
    eg_free(data);

    /* Unreadable and usage errors: 2. */
    snprintf(missing, sizeof missing, "%s/none.log", f->dir);
    assert_int_equal(cli("verify", missing, NULL, NULL, no_env), 2);
    assert_int_equal(cli(NULL, NULL, NULL, NULL, no_env), 2);
    assert_int_equal(cli("frobnicate", NULL, NULL, NULL, no_env), 2);
    assert_int_equal(cli("verify", "--bogus", NULL, NULL, no_env), 2);
    assert_int_equal(cli("verify", f->log, missing, NULL, no_env), 2);
    assert_int_equal(cli("verify", "--help", NULL, NULL, no_env), 0);
    char *path = eg_audit_path(NULL, "/var/lib/easgate");
    assert_string_equal(path, "/var/lib/easgate/audit.log");
    eg_free(path);
    path = eg_audit_path("/srv/audit/x.log", "/var/lib/easgate");
    assert_string_equal(path, "/srv/audit/x.log");
    eg_free(path);
}

/* ---- the worker hook ------------------------------------------------------------------------- */

static void submit(struct eg_queue *q, const char *json, const char *client)
{
    struct eg_command **v = NULL;
    size_t n = 0;
    bool batch = false;
    struct eg_verr e;
    assert_int_equal(eg_command_parse_body(json, strlen(json), 10, &v, &n, &batch, &e), 0);
    assert_int_equal(n, 1);
    struct eg_command *c = v[0];
    eg_free(v);
    char *body = eg_command_canonical(c), *key = eg_command_mailbox_key(c);
    struct eg_submit s = {.id = c->id,
                          .type = eg_cmd_type_name(c->type),
                          .mailbox_key = key,
                          .body = body,
                          .client = client};
    enum eg_submit_outcome o;
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_submit(q, &s, 1, &o, &r), 0);
    eg_cmd_record_free(r);
    eg_free(body);
    eg_free(key);
    eg_command_free(c);
}

static void wait_final(struct eg_queue *q, const char *id, enum eg_cmd_state want)
{
    for (int i = 0; i < 1000; i++) {
        struct eg_cmd_record *r = NULL;
        assert_int_equal(eg_queue_get(q, id, &r), 0);
        bool fin = eg_cmd_state_is_final(r->state);
        enum eg_cmd_state st = r->state;
        eg_cmd_record_free(r);
        if (fin) {
            assert_int_equal(st, want);
            return;
        }
        usleep(10000);
    }
    fail_msg("command %s never reached a final state", id);
}

/* The records of the log as parsed JSON objects (caller decrefs the array). */
static json_t *records(const char *path)
{
    struct lines L;
    json_t *arr = json_array();
    split(path, &L);
    for (size_t i = 0; i < L.n; i++)
        json_array_append_new(arr, json_loads(L.v[i], 0, NULL));
    lines_free(&L);
    return arr;
}

static size_t count(json_t *recs, const char *id, const char *cmdlet, const char *outcome)
{
    size_t i, n = 0;
    json_t *o;
    json_array_foreach(
        recs, i,
        o) if (strcmp(json_string_value(json_object_get(o, "command_id")), id) == 0 &&
               (!cmdlet || strcmp(json_string_value(json_object_get(o, "cmdlet")), cmdlet) == 0) &&
               (!outcome || strcmp(json_string_value(json_object_get(o, "outcome")), outcome) == 0))
        n++;
    return n;
}

/* A bridge whose org call records a change (with a password) and fails transiently twice. */
static atomic_int org_calls;
static int flaky_org(void *impl, enum eg_access_level l, json_t *actions,
                     struct eg_bridge_error *err)
{
    json_array_append_new(actions, json_pack("{s:s, s:{s:s}}", "cmdlet", "Get-Organization",
                                             "parameters", "Identity", "x"));
    json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s}}", "cmdlet",
                                             "Set-ActiveSyncOrganizationSettings", "parameters",
                                             "DefaultAccessLevel", "Block", "Password", "pw-zz"));
    if (atomic_fetch_add(&org_calls, 1) < 2) {
        eg_bridge_error_set(err, EG_BERR_THROTTLED, true, "busy");
        return EG_EAGAIN;
    }
    return 0;
}
static const struct eg_bridge_ops flaky_ops = {.name = "flaky",
                                               .set_org_default_access = flaky_org};

static void test_worker_hook(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = NULL;
    struct eg_bridge *b = NULL;
    struct eg_workers *w = NULL;
    struct eg_audit *a = NULL;
    struct eg_audit_report rep;

    assert_int_equal(eg_queue_open(f->dir, &q), 0);
    a = open_log(f->log, NULL);
    assert_int_equal(eg_bridge_dryrun_new(0, &b), 0);
    /* Three list edits of one mailbox (one coalesced call), a wipe, an inventory (reads only). */
    submit(q,
           "{\"id\":\"h1\",\"type\":\"device.allow\",\"mailbox\":\"m@x.example\",\"device_id\":"
           "\"D1\"}",
           "CN=console.test");
    submit(q,
           "{\"id\":\"h2\",\"type\":\"device.block\",\"mailbox\":\"m@x.example\",\"device_id\":"
           "\"D2\"}",
           "CN=other.console");
    submit(q,
           "{\"id\":\"h3\",\"type\":\"device.block\",\"mailbox\":\"m@x.example\",\"device_id\":"
           "\"D3\"}",
           NULL);
    submit(q, "{\"id\":\"h4\",\"type\":\"inventory.sync\",\"mode\":\"full\"}", "token");
    struct eg_workers_opts o = {.threads = 2,
                                .coalesce = true,
                                .max_coalesce = 100,
                                .max_attempts = 4,
                                .retry_base_ms = 10,
                                .retry_max_ms = 50,
                                .audit = a};
    assert_int_equal(eg_workers_start(q, b, NULL, &o, &w), 0);
    wait_final(q, "h1", EG_STATE_SUCCEEDED);
    wait_final(q, "h2", EG_STATE_SUCCEEDED);
    wait_final(q, "h3", EG_STATE_SUCCEEDED);
    wait_final(q, "h4", EG_STATE_SUCCEEDED);
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    eg_bridge_free(b);

    json_t *recs = records(f->log);
    /* One Set-CASMailbox record per command; no Get-* record; nothing for the inventory. */
    for (const char *const *id = (const char *const[]){"h1", "h2", "h3", NULL}; *id; id++) {
        assert_int_equal(count(recs, *id, "Set-CASMailbox", "succeeded"), 1);
        assert_int_equal(count(recs, *id, NULL, NULL), 1);
    }
    assert_int_equal(count(recs, "h4", NULL, NULL), 0);
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r)
    {
        assert_int_not_equal(strncmp(json_string_value(json_object_get(r, "cmdlet")), "Get-", 4),
                             0);
        const char *id = json_string_value(json_object_get(r, "command_id"));
        const char *console = json_string_value(json_object_get(r, "console"));
        if (strcmp(id, "h1") == 0)
            assert_string_equal(console, "CN=console.test");
        if (strcmp(id, "h2") == 0)
            assert_string_equal(console, "CN=other.console");
        if (strcmp(id, "h3") == 0)
            assert_string_equal(console, "anonymous");
        /* Queued before the workers started: one coalesced call, each record names the others. */
        assert_int_equal(json_array_size(json_object_get(r, "shared_with")), 2);
    }
    json_decref(recs);

    /* Retries: every attempt that reached Exchange is in the trail, with its outcome. */
    struct eg_bridge fb = {&flaky_ops, NULL};
    submit(q, "{\"id\":\"h5\",\"type\":\"org.set_default_access\",\"level\":\"block\"}",
           "CN=console.test");
    assert_int_equal(eg_workers_start(q, &fb, NULL, &o, &w), 0);
    wait_final(q, "h5", EG_STATE_SUCCEEDED);
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    recs = records(f->log);
    assert_int_equal(count(recs, "h5", "Set-ActiveSyncOrganizationSettings", "retrying"), 2);
    assert_int_equal(count(recs, "h5", "Set-ActiveSyncOrganizationSettings", "succeeded"), 1);
    assert_int_equal(count(recs, "h5", "Get-Organization", NULL), 0);
    json_array_foreach(
        recs, i, r) if (strcmp(json_string_value(json_object_get(r, "outcome")), "retrying") == 0)
        assert_string_equal(json_string_value(json_object_get(r, "code")), "throttled");
    json_decref(recs);
    size_t len = 0;
    char *data = slurp(f->log, &len);
    assert_null(strstr(data, "pw-zz"));
    eg_free(data);

    assert_int_equal(eg_audit_failures(a), 0);
    eg_audit_close(a);
    eg_queue_close(q);
    assert_int_equal(verify(f->log, &rep), 0);
    assert_int_equal(rep.records, 6);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_record_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampering_is_found_at_the_right_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_continues_the_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_moved_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_a_bad_last_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_parameters_dropped, setup, teardown),
        cmocka_unit_test(test_changing_cmdlets),
        cmocka_unit_test_setup_teardown(test_limits_and_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_hook, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
