/* test_uploader.c - the upload wire format (body, HMAC signature against a fixed vector, judging
 * the console's answer, backoff, Retry-After), and the uploader thread against a small console
 * on libmicrohttpd: batches acknowledged in order, a refused batch re-sent with the same sequence
 * and records, status and metrics, no URL / no key waits, stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/outbox.h"
#include "agent/uploader.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"

#define KEY "console-upload-key-0123456789abcdef-0001"

/* ---- the wire format ------------------------------------------------------------------------ */

static void test_signature_vector(void **state)
{
    char sig[EG_UPLOAD_SIGNATURE_LEN];
    const char *body = "{\"agent_id\":\"x\"}";
    /* python3: hmac.new(KEY, b"1700000000." + body, hashlib.sha256).hexdigest() */
    assert_int_equal(eg_upload_sign(KEY, 1700000000, body, strlen(body), sig), 0);
    assert_string_equal(sig, "t=1700000000,v1="
                             "09f5c6468247bddaf04f511d2626e3e3821ce3c49a0d25799a2a263516f44579");
    assert_int_equal(eg_upload_sign(KEY, 1700000001, body, strlen(body), sig), 0);
    assert_string_equal(sig, "t=1700000001,v1="
                             "d3be706d1601c6b013506e243ef3b0741ce4370dcdaa6ba500a1c8d620db5b61");
    assert_int_equal(eg_upload_sign("", 1, body, 1, sig), EG_EINVAL);
    assert_int_equal(eg_upload_sign(NULL, 1, body, 1, sig), EG_EINVAL);
    assert_int_equal(eg_upload_sign(KEY, 1, NULL, 1, sig), EG_EINVAL);
}

static void test_body(void **state)
{
    struct eg_outbox_record recs[2] = {
        {.n = 7, .kind = "command.final", .at_ms = 1796212800123, .payload = "{\"id\":\"c-1\"}"},
        {.n = 9, .kind = "device.removed", .at_ms = 1796212800456, .payload = "[1,\"two\"]"},
    };
    recs[0].payload_len = strlen(recs[0].payload);
    recs[1].payload_len = strlen(recs[1].payload);
    struct eg_outbox_batch b = {.agent_id = "3f2b8c1e-4d5a-4e6f-9a7b-1c2d3e4f5a6b",
                                .seq = 42,
                                .records = recs,
                                .n_records = 2};
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(eg_upload_body(&b, 1796212801000, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    json_error_t e;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    assert_non_null(v);
    assert_int_equal(json_object_size(v), 4);
    assert_string_equal(json_string_value(json_object_get(v, "agent_id")), b.agent_id);
    assert_int_equal(json_integer_value(json_object_get(v, "seq")), 42);
    assert_string_equal(json_string_value(json_object_get(v, "sent_at")),
                        "2026-12-02T12:00:01.000Z");
    json_t *r = json_object_get(v, "records");
    assert_int_equal(json_array_size(r), 2);
    json_t *r0 = json_array_get(r, 0), *r1 = json_array_get(r, 1);
    assert_int_equal(json_object_size(r0), 4);
    assert_int_equal(json_integer_value(json_object_get(r0, "n")), 7);
    assert_string_equal(json_string_value(json_object_get(r0, "kind")), "command.final");
    assert_string_equal(json_string_value(json_object_get(r0, "at")), "2026-12-02T12:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r0, "payload"), "id")),
                        "c-1");
    assert_true(json_is_array(json_object_get(r1, "payload")));
    json_decref(v);
    eg_free(text);

    /* A heartbeat. */
    b.n_records = 0;
    b.records = NULL;
    assert_int_equal(eg_upload_body(&b, 1796212801000, &text, &len), 0);
    v = json_loads(text, 0, &e);
    assert_non_null(v);
    assert_true(json_is_array(json_object_get(v, "records")));
    assert_int_equal(json_array_size(json_object_get(v, "records")), 0);
    json_decref(v);
    eg_free(text);
}

static void test_judge(void **state)
{
    uint64_t exp = 0;
    char why[512];
#define J(st, body, seq) eg_upload_judge(st, body, strlen(body), seq, &exp, why, sizeof why)
    assert_int_equal(J(200, "{\"ack\":5}", 5), 0);
    assert_int_equal(J(200, "{\"ack\":5,\"note\":\"x\"}", 5), 0);
    assert_int_equal(J(200, "{\"ack\":4}", 5), EG_EPROTO);
    assert_non_null(strstr(why, "ack 4"));
    assert_int_equal(J(200, "{\"ack\":\"5\"}", 5), EG_EPROTO);
    assert_int_equal(J(200, "ok", 5), EG_EPROTO);
    assert_int_equal(J(200, "", 5), EG_EPROTO);
    assert_int_equal(J(200, "{\"ack\":5,\"ack\":5}", 5), EG_EPROTO); /* duplicate keys */
    assert_int_equal(J(201, "{\"ack\":5}", 5), EG_EREMOTE);
    assert_int_equal(J(409, "{\"expected\":3}", 5), EG_ECONFLICT);
    assert_int_equal(exp, 3);
    assert_non_null(strstr(why, "expects batch 3"));
    assert_non_null(strstr(why, "lost"));
    assert_int_equal(J(409, "{\"expected\":9}", 5), EG_ECONFLICT);
    assert_int_equal(exp, 9);
    assert_int_equal(J(409, "{\"expected\":0}", 5), EG_EREMOTE);
    assert_int_equal(J(409, "conflict", 5), EG_EREMOTE);
    assert_int_equal(J(503, "{\"title\":\"down\"}", 5), EG_EREMOTE);
    assert_non_null(strstr(why, "HTTP 503"));
    assert_int_equal(J(500, "\x01\x02bin\n", 5), EG_EREMOTE);
    assert_null(strchr(why, '\n'));
#undef J
}

static void test_backoff(void **state)
{
    for (int round = 0; round < 200; round++) {
        for (unsigned n = 1; n <= 20; n++) {
            int64_t d = 1000;
            for (unsigned i = 1; i < n && d < 300000; i++)
                d *= 2;
            if (d > 300000)
                d = 300000;
            int64_t v = eg_upload_backoff_ms(n, 1000, 300000, -1);
            assert_true(v >= (d / 2 > 1000 ? d / 2 : 1000));
            assert_true(v <= d);
        }
    }
    assert_int_equal(eg_upload_backoff_ms(1, 1000, 300000, 7000), 7000); /* Retry-After wins */
    assert_int_equal(eg_upload_backoff_ms(1, 1000, 300000, 99LL * 3600 * 1000),
                     EG_UPLOAD_MAX_RETRY_AFTER_MS);
    assert_true(eg_upload_backoff_ms(30, 1000, 2000, -1) <= 2000);
}

static void test_retry_after(void **state)
{
    int64_t now = 1796212800000; /* Wed, 02 Dec 2026 12:00:00 GMT */
    assert_int_equal(eg_upload_retry_after_ms(NULL, now), -1);
    assert_int_equal(eg_upload_retry_after_ms("", now), -1);
    assert_int_equal(eg_upload_retry_after_ms("17", now), 17000);
    assert_int_equal(eg_upload_retry_after_ms("0", now), 0);
    assert_int_equal(eg_upload_retry_after_ms("99999999999999999999", now),
                     EG_UPLOAD_MAX_RETRY_AFTER_MS);
    assert_int_equal(eg_upload_retry_after_ms("12abc", now), -1);
    assert_int_equal(eg_upload_retry_after_ms("-5", now), -1);
    assert_int_equal(eg_upload_retry_after_ms("Wed, 02 Dec 2026 12:00:30 GMT", now), 30000);
    assert_int_equal(eg_upload_retry_after_ms("Wed, 02 Dec 2026 11:00:00 GMT", now), 0);
    assert_int_equal(eg_upload_retry_after_ms("tomorrow", now), -1);
}

/* ---- the thread against a console ----------------------------------------------------------- */

struct console {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    uint64_t last_acked;
    int refuse; /* answer 503 to this many requests */
    int requests, bad_sig, resends, gaps;
    int64_t last_n;
    int received; /* records recorded */
    int heartbeats;
    int64_t resend_first_n; /* first record number of the refused batch */
};

struct body {
    char *p;
    size_t len;
};

static void done_cb(void *cls, struct MHD_Connection *c, void **req_cls,
                    enum MHD_RequestTerminationCode toe)
{
    struct body *b = *req_cls;
    if (b) {
        free(b->p);
        free(b);
    }
    *req_cls = NULL;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **req_cls)
{
    struct console *s = cls;
    struct body *b = *req_cls;
    char text[64];
    if (!b) {
        if (!(b = calloc(1, sizeof *b)))
            return MHD_NO;
        *req_cls = b;
        return MHD_YES;
    }
    if (*upload_size) {
        char *nb = realloc(b->p, b->len + *upload_size + 1);
        if (!nb)
            return MHD_NO;
        b->p = nb;
        memcpy(b->p + b->len, upload, *upload_size);
        b->len += *upload_size;
        b->p[b->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Easgate-Signature");
    char want[EG_UPLOAD_SIGNATURE_LEN];
    long long t = sig ? atoll(sig + 2) : 0;
    json_t *v = b->p ? json_loadb(b->p, b->len, 0, NULL) : NULL;
    pthread_mutex_lock(&s->mu);
    s->requests++;
    enum MHD_Result ret;
    if (!sig || strncmp(sig, "t=", 2) != 0 || eg_upload_sign(KEY, t, b->p, b->len, want) != 0 ||
        strcmp(want, sig) != 0) {
        s->bad_sig++;
        ret = answer(c, 401, "{}");
        goto out;
    }
    uint64_t seq = (uint64_t)json_integer_value(json_object_get(v, "seq"));
    json_t *recs = json_object_get(v, "records");
    int64_t first = json_integer_value(json_object_get(json_array_get(recs, 0), "n"));
    if (s->refuse > 0) {
        s->refuse--;
        s->resend_first_n = json_array_size(recs) ? first : -1;
        ret = answer(c, 503, "{\"title\":\"down\"}");
        goto out;
    }
    if (seq == s->last_acked) {
        s->resends++;
    } else if (seq == s->last_acked + 1) {
        for (size_t i = 0; i < json_array_size(recs); i++) {
            int64_t n = json_integer_value(json_object_get(json_array_get(recs, i), "n"));
            if (n <= s->last_n)
                s->gaps++;
            s->last_n = n;
            s->received++;
        }
        if (!json_array_size(recs))
            s->heartbeats++;
        s->last_acked = seq;
    } else {
        s->gaps++;
        snprintf(text, sizeof text, "{\"expected\":%llu}", (unsigned long long)s->last_acked + 1);
        ret = answer(c, 409, text);
        goto out;
    }
    snprintf(text, sizeof text, "{\"ack\":%llu}", (unsigned long long)seq);
    ret = answer(c, 200, text);
out:
    pthread_mutex_unlock(&s->mu);
    json_decref(v);
    return ret;
}

struct fx {
    char dir[64];
    struct eg_outbox *o;
    struct console con;
    char url[64];
    const char *key;
    bool no_url;
};

static int settings(void *ctx, struct eg_upload_settings *ret)
{
    struct fx *f = ctx;
    if (!f->no_url && !(ret->url = eg_strdup(f->url)))
        return EG_ENOMEM;
    if (f->key && !(ret->hmac_key = eg_strdup(f->key))) {
        eg_free(ret->url);
        return EG_ENOMEM;
    }
    ret->revision = 1;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/eg_test_uploader_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(eg_outbox_open(f->dir, &f->o), 0);
    pthread_mutex_init(&f->con.mu, NULL);
    f->con.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                handler, &f->con, MHD_OPTION_NOTIFY_COMPLETED, done_cb, NULL,
                                MHD_OPTION_END);
    assert_non_null(f->con.d);
    f->con.port = MHD_get_daemon_info(f->con.d, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u/upload", (unsigned)f->con.port);
    f->key = KEY;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    MHD_stop_daemon(f->con.d);
    pthread_mutex_destroy(&f->con.mu);
    eg_outbox_close(f->o);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void add(struct eg_outbox *o, int i)
{
    json_t *p = json_pack("{s:i}", "i", i);
    assert_int_equal(eg_outbox_append(o, EG_OUTBOX_SYNC, p), 0);
    json_decref(p);
}

static int con_get(struct console *c, const int *field)
{
    pthread_mutex_lock(&c->mu);
    int v = *field;
    pthread_mutex_unlock(&c->mu);
    return v;
}

/* Poll until cond holds (no timing assertion: a generous cap only against hangs). */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        for (int w_ = 0; w_ < 3000 && !(cond); w_++)                                               \
            usleep(10 * 1000);                                                                     \
        assert_true(cond);                                                                         \
    } while (0)

static void test_thread_delivers_in_order(void **state)
{
    struct fx *f = *state;
    struct eg_uploader *u = NULL;
    struct eg_uploader_opts o = {.outbox = f->o, .settings = settings, .settings_ctx = f};

    for (int i = 0; i < 5; i++)
        add(f->o, i);
    f->con.refuse = 1; /* the first batch is refused once: re-sent with the same records */
    assert_int_equal(eg_uploader_start(&o, &u), 0);
    WAIT_FOR(con_get(&f->con, &f->con.received) == 5);
    struct eg_outbox_stats s;
    assert_int_equal(eg_outbox_stats(f->o, &s), 0);
    WAIT_FOR(eg_outbox_stats(f->o, &s) == 0 && s.records == 0);
    assert_int_equal(f->con.resend_first_n, 1);
    assert_int_equal(con_get(&f->con, &f->con.gaps), 0);
    assert_int_equal(con_get(&f->con, &f->con.bad_sig), 0);

    json_t *st = eg_uploader_status(u);
    assert_non_null(st);
    assert_true(json_is_true(json_object_get(st, "url_configured")));
    assert_int_equal(json_integer_value(json_object_get(st, "acked_seq")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "records")), 0);
    assert_non_null(json_string_value(json_object_get(st, "last_success_at")));
    assert_true(json_is_null(json_object_get(st, "last_error")));
    assert_string_equal(json_string_value(json_object_get(st, "agent_id")),
                        eg_outbox_agent_id(f->o));
    json_decref(st);

    /* More records, one by one with notify. */
    for (int i = 5; i < 25; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", i);
        json_t *p = json_pack("{s:s, s:s}", "id", id, "state", "succeeded");
        assert_int_equal(eg_uploader_record_command(u, p), 0);
        json_decref(p);
    }
    WAIT_FOR(con_get(&f->con, &f->con.received) == 25);
    assert_int_equal(con_get(&f->con, &f->con.gaps), 0);

    char *text = eg_strdup("# other series\n");
    assert_int_equal(eg_uploader_metrics(u, &text), 0);
    assert_non_null(strstr(text, "# other series\n"));
    assert_non_null(strstr(text, "easgate_upload_records_total 25\n"));
    assert_non_null(strstr(text, "easgate_upload_failures_total{reason=\"http_status\"} 1\n"));
    assert_non_null(strstr(text, "easgate_outbox_warning 0\n"));
    eg_free(text);
    assert_int_equal(eg_uploader_stop(u, 5000), 0);
}

static void test_thread_waits_without_url_or_key(void **state)
{
    struct fx *f = *state;
    struct eg_uploader *u = NULL;
    struct eg_uploader_opts o = {.outbox = f->o, .settings = settings, .settings_ctx = f};
    f->no_url = true;
    add(f->o, 1);
    assert_int_equal(eg_uploader_start(&o, &u), 0);
    json_t *st = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(st);
        st = eg_uploader_status(u);
        if (strcmp(json_string_value(json_object_get(st, "state")), "not_configured") == 0 &&
            strstr(json_string_value(json_object_get(st, "message")), "upload not configured"))
            break;
        usleep(10 * 1000);
    }
    assert_true(json_is_false(json_object_get(st, "url_configured")));
    assert_non_null(
        strstr(json_string_value(json_object_get(st, "message")), "upload not configured"));
    json_decref(st);
    f->key = NULL;
    f->no_url = false;
    eg_uploader_notify(u);
    st = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(st);
        st = eg_uploader_status(u);
        if (strcmp(json_string_value(json_object_get(st, "state")), "no_key") == 0)
            break;
        usleep(10 * 1000);
    }
    assert_string_equal(json_string_value(json_object_get(st, "state")), "no_key");
    json_decref(st);
    assert_int_equal(con_get(&f->con, &f->con.requests), 0); /* nothing unsigned */
    f->key = KEY;
    eg_uploader_notify(u);
    WAIT_FOR(con_get(&f->con, &f->con.received) == 1);
    assert_int_equal(eg_uploader_stop(u, 5000), 0);
}

/* A finished batch's command records go in with one call: all stored, in order, a NULL view
 * refused alone (counted), and delivered without a gap. */
static void test_record_commands_batch(void **state)
{
    struct fx *f = *state;
    struct eg_uploader *u = NULL;
    struct eg_uploader_opts o = {.outbox = f->o, .settings = settings, .settings_ctx = f};
    f->no_url = true; /* nothing is sent until the records are checked */
    assert_int_equal(eg_uploader_start(&o, &u), 0);
    json_t *v[4] = {json_pack("{s:s}", "id", "a"), json_pack("{s:s}", "id", "b"), NULL,
                    json_pack("{s:s}", "id", "d")};
    int rcs[4] = {1, 1, 1, 1};
    assert_int_equal(eg_uploader_record_commands(u, (const json_t *const *)v, 4, rcs), EG_ENOMEM);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(rcs[1], 0);
    assert_int_equal(rcs[2], EG_ENOMEM);
    assert_int_equal(rcs[3], 0);
    struct eg_outbox_stats s;
    assert_int_equal(eg_outbox_stats(f->o, &s), 0);
    assert_int_equal(s.records, 3);
    /* A command is reported once: the same ids again store nothing (a re-run after a crash). */
    assert_int_equal(eg_uploader_record_commands(u, (const json_t *const *)v, 2, rcs), 0);
    assert_int_equal(eg_outbox_stats(f->o, &s), 0);
    assert_int_equal(s.records, 3);
    json_t *w[2] = {json_pack("{s:s}", "id", "e"), json_pack("{s:s}", "id", "f")};
    assert_int_equal(eg_uploader_record_commands(u, (const json_t *const *)w, 2, rcs), 0);
    json_decref(w[0]);
    json_decref(w[1]);
    assert_int_equal(eg_outbox_stats(f->o, &s), 0);
    assert_int_equal(s.records, 5);
    assert_int_equal(eg_uploader_record_commands(u, NULL, 1, rcs), EG_EINVAL);
    assert_int_equal(eg_uploader_record_commands(u, NULL, 0, NULL), 0);

    char *text = eg_strdup("");
    assert_int_equal(eg_uploader_metrics(u, &text), 0);
    assert_non_null(strstr(text, "easgate_outbox_append_failures_total 1\n"));
    eg_free(text);
    f->no_url = false;
    eg_uploader_notify(u);
    WAIT_FOR(con_get(&f->con, &f->con.received) == 5);
    assert_int_equal(con_get(&f->con, &f->con.gaps), 0);
    assert_int_equal(eg_uploader_stop(u, 5000), 0);
    for (int i = 0; i < 4; i++)
        json_decref(v[i]);
}

static void test_start_refuses_bad_options(void **state)
{
    struct fx *f = *state;
    struct eg_uploader *u = NULL;
    struct eg_uploader_opts o = {.outbox = f->o, .settings = settings, .settings_ctx = f};
    o.heartbeat_ms = 10;
    assert_int_equal(eg_uploader_start(&o, &u), EG_EINVAL);
    o.heartbeat_ms = 0;
    o.retry_min_ms = 5000;
    o.retry_max_ms = 2000;
    assert_int_equal(eg_uploader_start(&o, &u), EG_EINVAL);
    o.retry_min_ms = 0;
    o.retry_max_ms = EG_UPLOAD_MAX_BACKOFF_MS + 1;
    assert_int_equal(eg_uploader_start(&o, &u), EG_EINVAL);
    o.retry_max_ms = 0;
    o.outbox = NULL;
    assert_int_equal(eg_uploader_start(&o, &u), EG_EINVAL);
    assert_null(u);
    assert_int_equal(eg_uploader_stop(NULL, 0), 0);
    assert_int_equal(eg_uploader_record_command(NULL, NULL), EG_EINVAL);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_vector),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_judge),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test_setup_teardown(test_thread_delivers_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_waits_without_url_or_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_commands_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_refuses_bad_options, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
