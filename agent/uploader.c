/* uploader.c - the thread that sends the outbox to the console, in sequence order, until each
 * batch is acknowledged (see uploader.h).
 *
 * One round: settings -> (client for the URL) -> backoff due? -> pending or next batch (or a
 * heartbeat) -> POST -> judge -> ack in the outbox, or count the failure and back off. Waits are
 * at most POLL_MS so that a settings change or a stop is seen within a second. `lock` guards the
 * status fields and the counters; the POST runs without it.
 */
#include "agent/uploader.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "agent/secretbox.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"
#include "transport/http_client.h"

#define POLL_MS 1000 /* longest wait before the settings are read again */

enum up_state { ST_NOT_CONFIGURED, ST_NO_KEY, ST_IDLE, ST_SENDING, ST_RETRYING };
static const char *const state_names[] = {"not_configured", "no_key", "idle", "sending",
                                          "retrying"};

/* Failure reasons (label values of easgate_upload_failures_total). */
enum reason {
    R_UNREACHABLE,
    R_TIMEOUT,
    R_TLS,
    R_UNAUTHORIZED,
    R_HTTP_STATUS,
    R_BAD_ACK,
    R_CONFLICT,
    R_STORAGE,
    R_OTHER,
    R__COUNT
};
static const char *const reason_names[R__COUNT] = {"unreachable",  "timeout",     "tls",
                                                   "unauthorized", "http_status", "bad_ack",
                                                   "conflict",     "storage",     "other"};

struct eg_uploader {
    struct eg_uploader_opts o;
    char *ca_file;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;   /* notify or stop */
    pthread_cond_t exited; /* the thread left its loop */
    bool stopping, done;
    uint64_t generation; /* bumped by every notify */
    /* status (lock) */
    enum up_state state;
    char *url; /* the configured URL (not secret: no credentials in it) */
    char message[256];
    char last_error[512];
    int64_t last_error_ms, last_success_ms, next_attempt_ms; /* wall clock */
    unsigned failures;                                       /* in a row */
    bool conflict;
    uint64_t conflict_expected, conflict_seq;
    bool warned; /* the outbox warning was logged */
    /* counters (lock) */
    uint64_t batches, heartbeats, records, append_failures;
    uint64_t failed[R__COUNT];
};

void eg_upload_settings_clear(struct eg_upload_settings *s)
{
    if (!s)
        return;
    eg_free(s->url);
    eg_secret_free(s->hmac_key);
    *s = (struct eg_upload_settings){0};
}

/* ---- the wire format ------------------------------------------------------------------------ */

int eg_upload_body(const struct eg_outbox_batch *b, int64_t sent_ms, char **ret, size_t *ret_len)
{
    char t[40];
    if (!b || !ret || !ret_len)
        return EG_EINVAL;
    /* Every piece but the payloads has a bounded size: kind <= EG_OUTBOX_MAX_KIND_LEN, numbers
     * <= 20 digits, times < 40. */
    size_t cap = 160 + sizeof b->agent_id;
    for (size_t i = 0; i < b->n_records; i++)
        cap += b->records[i].payload_len + EG_OUTBOX_MAX_KIND_LEN + 120;
    char *s = eg_malloc(cap);
    if (!s)
        return EG_ENOMEM;
    size_t len = 0;
    len += (size_t)snprintf(s + len, cap - len,
                            "{\"agent_id\":\"%s\",\"seq\":%" PRIu64 ",\"sent_at\":\"%s\","
                            "\"records\":[",
                            b->agent_id, b->seq, eg_format_time(sent_ms, t, sizeof t));
    for (size_t i = 0; i < b->n_records; i++) {
        const struct eg_outbox_record *r = &b->records[i];
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"n\":%" PRId64 ",\"kind\":\"%s\",\"at\":\"%s\",\"payload\":",
                                i ? "," : "", r->n, r->kind, eg_format_time(r->at_ms, t, sizeof t));
        memcpy(s + len, r->payload, r->payload_len);
        len += r->payload_len;
        s[len++] = '}';
    }
    len += (size_t)snprintf(s + len, cap - len, "]}");
    *ret = s;
    *ret_len = len;
    return 0;
}

int eg_upload_sign(const char *key, int64_t t, const char *body, size_t len,
                   char out[EG_UPLOAD_SIGNATURE_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen = 0;
    char ts[24];
    int rc = EG_ETLS;

    if (!key || !*key || (!body && len) || !out)
        return EG_EINVAL;
    int tn = snprintf(ts, sizeof ts, "%" PRId64 ".", t);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (ctx && EVP_MAC_init(ctx, (const unsigned char *)key, strlen(key), params) == 1 &&
        EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tn) == 1 &&
        EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1 &&
        EVP_MAC_final(ctx, md, &mdlen, sizeof md) == 1 && mdlen == 32) {
        int n = snprintf(out, EG_UPLOAD_SIGNATURE_LEN, "t=%" PRId64 ",v1=", t);
        for (size_t i = 0; i < mdlen; i++)
            snprintf(out + n + 2 * i, 3, "%02x", md[i]);
        rc = 0;
    }
    EVP_MAC_CTX_free(ctx); /* wipes the key schedule */
    EVP_MAC_free(mac);
    eg_memzero(md, sizeof md);
    return rc;
}

/* Up to 160 bytes of a body as printable ASCII, for an error message. */
static void snippet(const char *body, size_t len, char *out, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; body && i < len && j + 1 < cap && j < 160; i++) {
        unsigned char c = (unsigned char)body[i];
        out[j++] = c >= 0x20 && c < 0x7F ? (char)c : ' ';
    }
    out[j] = '\0';
}

static void why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || !whylen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

int eg_upload_judge(long status, const char *body, size_t len, uint64_t seq, uint64_t *ret_expected,
                    char *why, size_t whylen)
{
    char text[168];
    json_t *v = NULL;
    int rc;

    if (why && whylen)
        why[0] = '\0';
    if (status == 200 || status == 409)
        v = body && len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (status == 200) {
        json_t *ack = json_object_get(v, "ack");
        if (json_is_integer(ack) && json_integer_value(ack) >= 0 &&
            (uint64_t)json_integer_value(ack) == seq) {
            rc = 0;
        } else {
            rc = EG_EPROTO;
            if (json_is_integer(ack))
                why_set(why, whylen,
                        "the console answered 200 with ack %lld for batch %" PRIu64
                        " (only {\"ack\": %" PRIu64 "} acknowledges it)",
                        (long long)json_integer_value(ack), seq, seq);
            else {
                snippet(body, len, text, sizeof text);
                why_set(why, whylen,
                        "the console answered 200 without {\"ack\": %" PRIu64 "}: \"%s\"", seq,
                        text);
            }
        }
    } else if (status == 409) {
        json_t *exp = json_object_get(v, "expected");
        if (json_is_integer(exp) && json_integer_value(exp) >= 1) {
            uint64_t m = (uint64_t)json_integer_value(exp);
            if (ret_expected)
                *ret_expected = m;
            rc = EG_ECONFLICT;
            why_set(why, whylen,
                    "the console expects batch %" PRIu64 " but the agent's next batch is %" PRIu64
                    " (%s); nothing is skipped: batch %" PRIu64
                    " is sent again until the console accepts it",
                    m, seq,
                    m < seq ? "the console lost batches it had acknowledged"
                            : "the console has batches this agent does not know of",
                    seq);
        } else {
            snippet(body, len, text, sizeof text);
            rc = EG_EREMOTE;
            why_set(why, whylen, "the console answered 409 without {\"expected\": N}: \"%s\"",
                    text);
        }
    } else {
        snippet(body, len, text, sizeof text);
        rc = EG_EREMOTE;
        why_set(why, whylen, "the console answered HTTP %ld%s%s%s", status, text[0] ? ": \"" : "",
                text, text[0] ? "\"" : "");
    }
    json_decref(v);
    return rc;
}

int64_t eg_upload_backoff_ms(unsigned failures, int64_t min_ms, int64_t max_ms,
                             int64_t retry_after_ms)
{
    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    int64_t d = min_ms;
    for (unsigned i = 1; i < failures && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    int64_t half = d / 2;
    int64_t delay = half + (half > 0 ? (int64_t)arc4random_uniform((uint32_t)(half + 1)) : 0);
    if (delay < min_ms)
        delay = min_ms;
    if (retry_after_ms > EG_UPLOAD_MAX_RETRY_AFTER_MS)
        retry_after_ms = EG_UPLOAD_MAX_RETRY_AFTER_MS;
    return delay < retry_after_ms ? retry_after_ms : delay;
}

int64_t eg_upload_retry_after_ms(const char *value, int64_t now_ms)
{
    int64_t secs = 0;
    if (!value || !*value)
        return -1;
    if (value[0] >= '0' && value[0] <= '9') {
        int rc = eg_parse_int64(value, 0, EG_UPLOAD_MAX_RETRY_AFTER_MS / 1000, &secs);
        if (rc == EG_ELIMIT) { /* all digits, but more than we wait anyway */
            bool digits = true;
            for (const char *p = value; *p; p++)
                digits &= *p >= '0' && *p <= '9';
            return digits ? EG_UPLOAD_MAX_RETRY_AFTER_MS : -1;
        }
        return rc == 0 ? secs * 1000 : -1;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    int64_t at = (int64_t)timegm(&tm) * 1000;
    return at > now_ms ? at - now_ms : 0;
}

/* ---- status --------------------------------------------------------------------------------- */

static void set_state(struct eg_uploader *u, enum up_state st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_state(struct eg_uploader *u, enum up_state st, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&u->lock);
    u->state = st;
    va_start(ap, fmt);
    vsnprintf(u->message, sizeof u->message, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&u->lock);
}

static void set_url(struct eg_uploader *u, const char *url)
{
    pthread_mutex_lock(&u->lock);
    if (!url || !u->url || strcmp(url, u->url) != 0) {
        eg_free(u->url);
        u->url = url ? eg_strdup(url) : NULL; /* NULL without memory: status shows none */
    }
    pthread_mutex_unlock(&u->lock);
}

/* Log when the outbox crosses its warning level, either way. */
static void check_warning(struct eg_uploader *u)
{
    struct eg_outbox_stats s;
    if (eg_outbox_stats(u->o.outbox, &s) < 0)
        return;
    pthread_mutex_lock(&u->lock);
    bool was = u->warned;
    u->warned = s.warning;
    pthread_mutex_unlock(&u->lock);
    if (s.warning && !was)
        eg_log_warn("upload outbox: %" PRIu64 " records (%" PRIu64 " bytes) wait for the "
                    "console, above %.0f%% of its bound (%" PRIu64 " records, %" PRIu64
                    " bytes); at the bound inventory changes are no longer stored and the next "
                    "full sync uploads a complete snapshot",
                    s.records, s.bytes, EG_OUTBOX_WARN_FRACTION * 100, s.max_records, s.max_bytes);
    else if (!s.warning && was)
        eg_log_notice("upload outbox: back below its warning level (%" PRIu64 " records)",
                      s.records);
}

json_t *eg_uploader_status(struct eg_uploader *u)
{
    struct eg_outbox_stats s;
    char t1[40], t2[40], t3[40];
    if (!u || eg_outbox_stats(u->o.outbox, &s) < 0)
        return NULL;
    int64_t now = eg_now_ms();
    pthread_mutex_lock(&u->lock);
    json_t *st = json_pack(
        "{s:b, s:s?, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:I, s:s?, s:s?, "
        "s:s?, s:s?}",
        "url_configured", u->url != NULL, "url", u->url, "state", state_names[u->state], "message",
        u->message, "agent_id", eg_outbox_agent_id(u->o.outbox), "records", (json_int_t)s.records,
        "bytes", (json_int_t)s.bytes, "next_seq", (json_int_t)s.next_seq, "acked_seq",
        (json_int_t)s.acked_seq, "pending_seq", (json_int_t)s.pending_seq, "oldest_age_s",
        (json_int_t)(s.oldest_ms > 0 && now > s.oldest_ms ? (now - s.oldest_ms) / 1000 : 0),
        "warning", (int)s.warning, "resync_needed", (int)s.resync_needed, "refused",
        (json_int_t)s.refused, "failures", (json_int_t)u->failures, "last_error",
        u->last_error[0] ? u->last_error : NULL, "last_error_at",
        u->last_error_ms ? eg_format_time(u->last_error_ms, t1, sizeof t1) : NULL,
        "last_success_at",
        u->last_success_ms ? eg_format_time(u->last_success_ms, t2, sizeof t2) : NULL,
        "next_attempt_at",
        u->state == ST_RETRYING && u->next_attempt_ms
            ? eg_format_time(u->next_attempt_ms, t3, sizeof t3)
            : NULL);
    if (st && u->conflict &&
        json_object_set_new(st, "conflict",
                            json_pack("{s:I, s:I}", "expected", (json_int_t)u->conflict_expected,
                                      "seq", (json_int_t)u->conflict_seq)) < 0) {
        json_decref(st);
        st = NULL;
    }
    pthread_mutex_unlock(&u->lock);
    return st;
}

/* A growing text; remembers an allocation failure. */
struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->failed)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + (size_t)n + 1)
            ncap *= 2;
        char *np = eg_realloc(b->p, ncap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static void gauge(struct buf *b, const char *name, const char *help, double v)
{
    put(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.15g\n", name, help, name, name, v);
}

static void counter(struct buf *b, const char *name, const char *help, uint64_t v)
{
    put(b, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

int eg_uploader_metrics(struct eg_uploader *u, char **text)
{
    struct eg_outbox_stats s;
    struct buf b = {0};
    if (!u || !text)
        return EG_EINVAL;
    if (eg_outbox_stats(u->o.outbox, &s) < 0)
        return EG_EINVAL;
    int64_t now = eg_now_ms();
    if (*text)
        put(&b, "%s", *text);
    gauge(&b, "easgate_outbox_records", "Records waiting for the console's acknowledgement.",
          (double)s.records);
    gauge(&b, "easgate_outbox_bytes", "Payload bytes of the records waiting.", (double)s.bytes);
    gauge(&b, "easgate_outbox_oldest_age_seconds", "Age of the oldest waiting record.",
          s.oldest_ms > 0 && now > s.oldest_ms ? (double)(now - s.oldest_ms) / 1000.0 : 0);
    gauge(&b, "easgate_outbox_warning",
          "1 while the outbox holds more than its warning share of the bound.", s.warning ? 1 : 0);
    gauge(&b, "easgate_outbox_resync_needed",
          "1 while the next full sync must upload a complete snapshot.", s.resync_needed ? 1 : 0);
    counter(&b, "easgate_outbox_refused_total",
            "Records refused because the outbox was at its bound (or a record was too large).",
            s.refused);
    pthread_mutex_lock(&u->lock);
    counter(&b, "easgate_outbox_append_failures_total",
            "Command results that could not be stored in the outbox.", u->append_failures);
    counter(&b, "easgate_upload_batches_total",
            "Batches the console acknowledged (heartbeats included).", u->batches);
    counter(&b, "easgate_upload_heartbeats_total", "Acknowledged batches without records.",
            u->heartbeats);
    counter(&b, "easgate_upload_records_total", "Records the console acknowledged.", u->records);
    put(&b, "# HELP easgate_upload_failures_total Upload attempts that were not acknowledged, by "
            "reason.\n# TYPE easgate_upload_failures_total counter\n");
    for (int r = 0; r < R__COUNT; r++)
        put(&b, "easgate_upload_failures_total{reason=\"%s\"} %" PRIu64 "\n", reason_names[r],
            u->failed[r]);
    pthread_mutex_unlock(&u->lock);
    gauge(&b, "easgate_upload_acked_seq", "Last sequence number the console acknowledged.",
          (double)s.acked_seq);
    if (b.failed) {
        eg_free(b.p);
        return EG_ENOMEM;
    }
    eg_free(*text);
    *text = b.p;
    return 0;
}

static void count_append_failures(struct eg_uploader *u, unsigned long k)
{
    pthread_mutex_lock(&u->lock);
    u->append_failures += k;
    pthread_mutex_unlock(&u->lock);
}

int eg_uploader_record_commands(struct eg_uploader *u, const json_t *const *views, size_t n,
                                int *rcs)
{
    int first = 0;
    unsigned long failed = 0;
    if (!u || (n > 0 && (!views || !rcs)))
        return EG_EINVAL;
    bool txn = n > 1 && eg_outbox_begin(u->o.outbox) == 0;
    for (size_t i = 0; i < n; i++)
        rcs[i] = views[i] ? eg_outbox_append(u->o.outbox, EG_OUTBOX_COMMAND, views[i]) : EG_ENOMEM;
    if (txn && eg_outbox_commit(u->o.outbox) < 0) {
        /* The commit rolled the records back: store them one by one. */
        for (size_t i = 0; i < n; i++)
            if (rcs[i] == 0)
                rcs[i] = eg_outbox_append(u->o.outbox, EG_OUTBOX_COMMAND, views[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (rcs[i] < 0) {
            failed++;
            if (!first)
                first = rcs[i];
        }
    if (failed)
        count_append_failures(u, failed);
    if (failed < n)
        eg_uploader_notify(u);
    return first;
}

int eg_uploader_record_command(struct eg_uploader *u, const json_t *view)
{
    int rc = 0;
    if (!u)
        return EG_EINVAL;
    return eg_uploader_record_commands(u, &view, 1, &rc);
}

/* ---- the thread ----------------------------------------------------------------------------- */

void eg_uploader_notify(struct eg_uploader *u)
{
    if (!u)
        return;
    pthread_mutex_lock(&u->lock);
    u->generation++;
    pthread_cond_broadcast(&u->wake);
    pthread_mutex_unlock(&u->lock);
}

/* Sleep up to ms; a stop ends it, and a notify too when on_notify. Returns false when stopping. */
static bool nap(struct eg_uploader *u, int64_t ms, uint64_t seen_gen, bool on_notify)
{
    struct timespec ts;
    if (ms > POLL_MS)
        ms = POLL_MS;
    if (ms < 1)
        ms = 1;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&u->lock);
    while (!u->stopping && (!on_notify || u->generation == seen_gen))
        if (pthread_cond_timedwait(&u->wake, &u->lock, &ts) == ETIMEDOUT)
            break;
    bool go_on = !u->stopping;
    pthread_mutex_unlock(&u->lock);
    return go_on;
}

static enum reason reason_of(int rc)
{
    switch (rc) {
    case EG_EUNAVAIL:
        return R_UNREACHABLE;
    case EG_ETIMEDOUT:
        return R_TIMEOUT;
    case EG_ETLS:
        return R_TLS;
    case EG_EAUTH:
        return R_UNAUTHORIZED;
    case EG_EREMOTE:
        return R_HTTP_STATUS;
    case EG_EPROTO:
    case EG_ELIMIT:
        return R_BAD_ACK;
    case EG_ECONFLICT:
        return R_CONFLICT;
    default:
        return R_OTHER;
    }
}

/* POST batch b; 0 when the console acknowledged it. *retry_after_ms gets the console's
 * Retry-After (or -1), *expected a 409's expected sequence. why says what went wrong. */
static int post_batch(struct eg_uploader *u, struct eg_http_client *http, const char *key,
                      const struct eg_outbox_batch *b, int64_t *retry_after_ms, uint64_t *expected,
                      char *why, size_t whylen)
{
    struct eg_http_client_response resp = {0};
    char sig[EG_UPLOAD_SIGNATURE_LEN], seq[24];
    char *body = NULL;
    size_t len = 0;
    int64_t now = eg_now_ms();
    int rc;

    *retry_after_ms = -1;
    if ((rc = eg_upload_body(b, now, &body, &len)) < 0) {
        why_set(why, whylen, "the batch could not be encoded: %s", eg_strerror(rc));
        return rc;
    }
    if ((rc = eg_upload_sign(key, now / 1000, body, len, sig)) < 0) {
        why_set(why, whylen, "the batch could not be signed: %s", eg_strerror(rc));
        goto out;
    }
    snprintf(seq, sizeof seq, "%" PRIu64, b->seq);
    struct eg_http_client_header hdrs[] = {
        {"X-Easgate-Signature", sig}, {"X-Easgate-Agent", b->agent_id}, {"X-Easgate-Seq", seq}};
    struct eg_http_client_req rq = {.method = "POST",
                                    .headers = hdrs,
                                    .n_headers = sizeof hdrs / sizeof hdrs[0],
                                    .content_type = "application/json",
                                    .body = body,
                                    .body_len = len};
    rc = eg_http_client_request(http, &rq, &resp);
    if (rc < 0) {
        const char *detail = eg_http_client_last_error(http);
        if (rc == EG_EAUTH)
            why_set(why, whylen,
                    "the console refused the upload (HTTP 401): is upload.hmac_key the key the "
                    "console expects?");
        else
            why_set(why, whylen, "%s%s%s", eg_strerror(rc), detail[0] ? ": " : "", detail);
        goto out;
    }
    *retry_after_ms =
        eg_upload_retry_after_ms(eg_http_client_response_header(&resp, "Retry-After"), now);
    rc = eg_upload_judge(resp.status, resp.body, resp.body_len, b->seq, expected, why, whylen);
out:
    eg_http_client_response_clear(&resp);
    eg_memzero(sig, sizeof sig);
    eg_free(body);
    return rc;
}

/* A failed attempt: count it, remember why, schedule the next one. Returns the delay. */
static int64_t failed(struct eg_uploader *u, enum reason r, const char *why, int64_t retry_after,
                      uint64_t expected, uint64_t seq, const char *url)
{
    pthread_mutex_lock(&u->lock);
    unsigned n = ++u->failures;
    u->failed[r]++;
    bool new_conflict = r == R_CONFLICT && (!u->conflict || u->conflict_expected != expected ||
                                            u->conflict_seq != seq);
    if (r == R_CONFLICT) {
        u->conflict = true;
        u->conflict_expected = expected;
        u->conflict_seq = seq;
    }
    int64_t delay = eg_upload_backoff_ms(n, u->o.retry_min_ms, u->o.retry_max_ms, retry_after);
    snprintf(u->last_error, sizeof u->last_error, "%s", why);
    u->last_error_ms = eg_now_ms();
    u->next_attempt_ms = u->last_error_ms + delay;
    u->state = ST_RETRYING;
    snprintf(u->message, sizeof u->message,
             "batch %" PRIu64 " not acknowledged; retry %u in %lld ms", seq, n + 1,
             (long long)delay);
    pthread_mutex_unlock(&u->lock);
    if (new_conflict)
        eg_log_err("upload to %s: %s", url, why);
    else if (n == 1)
        eg_log_warn("upload to %s failed: %s; retrying with backoff (records wait in the outbox)",
                    url, why);
    else
        eg_log_debug("upload to %s failed again (%u in a row): %s", url, n, why);
    return delay;
}

static void succeeded(struct eg_uploader *u, const struct eg_outbox_batch *b, const char *url)
{
    pthread_mutex_lock(&u->lock);
    unsigned before = u->failures;
    u->failures = 0;
    u->conflict = false;
    u->last_error[0] = '\0';
    u->next_attempt_ms = 0;
    u->last_success_ms = eg_now_ms();
    u->batches++;
    u->records += b->n_records;
    if (b->n_records == 0)
        u->heartbeats++;
    u->state = ST_IDLE;
    snprintf(u->message, sizeof u->message, "batch %" PRIu64 " acknowledged", b->seq);
    pthread_mutex_unlock(&u->lock);
    if (before)
        eg_log_notice("upload to %s works again: batch %" PRIu64 " (%zu records) acknowledged "
                      "after %u failed attempt%s",
                      url, b->seq, b->n_records, before, before == 1 ? "" : "s");
}

static void *uploader_main(void *arg)
{
    struct eg_uploader *u = arg;
    struct eg_http_client *http = NULL;
    char *http_url = NULL, why[512];
    int64_t last_rev = -1, next_try = 0, idle_since = eg_mono_ms();

    for (;;) {
        struct eg_upload_settings s = {0};
        struct eg_outbox_batch *b = NULL;
        pthread_mutex_lock(&u->lock);
        bool stop = u->stopping;
        uint64_t gen = u->generation;
        pthread_mutex_unlock(&u->lock);
        if (stop)
            break;
        check_warning(u);

        int rc = u->o.settings(u->o.settings_ctx, &s);
        if (rc < 0) {
            set_state(u, ST_NOT_CONFIGURED, "the upload settings could not be read: %s",
                      eg_strerror(rc));
            goto wait_notify;
        }
        set_url(u, s.url);
        if (!s.url) {
            set_state(u, ST_NOT_CONFIGURED,
                      "upload not configured (no upload.url in the runtime configuration): "
                      "records wait in the outbox");
            goto wait_notify;
        }
        if (!s.hmac_key) {
            set_state(u, ST_NO_KEY,
                      "upload.hmac_key is not set: nothing is sent unsigned; records wait in "
                      "the outbox");
            goto wait_notify;
        }
        if (s.revision != last_rev) { /* new settings: try at once */
            last_rev = s.revision;
            next_try = 0;
            pthread_mutex_lock(&u->lock);
            u->failures = 0;
            u->conflict = false;
            pthread_mutex_unlock(&u->lock);
        }
        if (!http || strcmp(http_url, s.url) != 0) {
            eg_http_client_free(http);
            http = NULL;
            eg_freep(&http_url);
            struct eg_http_client_opts ho = {.url = s.url,
                                             .auth = EG_HTTP_CLIENT_AUTH_NONE,
                                             .ca_file = u->ca_file,
                                             .response_timeout_ms = u->o.timeout_ms,
                                             .max_response_bytes = EG_UPLOAD_MAX_RESPONSE_BYTES};
            if ((rc = eg_http_client_new(&ho, &http)) < 0 || !(http_url = eg_strdup(s.url))) {
                eg_http_client_free(http);
                http = NULL;
                snprintf(why, sizeof why, "no HTTP client for the upload URL: %s",
                         eg_strerror(rc < 0 ? rc : EG_ENOMEM));
                next_try = eg_mono_ms() + failed(u, R_OTHER, why, -1, 0, 0, s.url);
                goto next;
            }
        }
        int64_t now = eg_mono_ms();
        if (next_try > now) { /* backing off: a notify does not cut it short */
            eg_upload_settings_clear(&s);
            if (!nap(u, next_try - now, gen, false))
                break;
            continue;
        }
        bool heartbeat = now - idle_since >= u->o.heartbeat_ms;
        rc = eg_outbox_next_batch(u->o.outbox, heartbeat, &b);
        if (rc == EG_ENOTFOUND) {
            pthread_mutex_lock(&u->lock);
            if (u->state != ST_IDLE || !u->message[0])
                snprintf(u->message, sizeof u->message, "nothing waits");
            u->state = ST_IDLE;
            pthread_mutex_unlock(&u->lock);
            eg_upload_settings_clear(&s);
            if (!nap(u, idle_since + u->o.heartbeat_ms - now, gen, true))
                break;
            continue;
        }
        if (rc < 0) {
            snprintf(why, sizeof why, "the outbox could not be read: %s", eg_strerror(rc));
            next_try = eg_mono_ms() + failed(u, R_STORAGE, why, -1, 0, 0, s.url);
            goto next;
        }
        set_state(u, ST_SENDING, "sending batch %" PRIu64 " (%zu records)", b->seq, b->n_records);
        int64_t retry_after = -1;
        uint64_t expected = 0;
        rc = post_batch(u, http, s.hmac_key, b, &retry_after, &expected, why, sizeof why);
        if (rc == 0) {
            int arc = eg_outbox_ack(u->o.outbox, b->seq);
            if (arc < 0) { /* the console has it; the re-send is acknowledged again */
                snprintf(why, sizeof why,
                         "batch %" PRIu64 " was acknowledged but the outbox could not record "
                         "it: %s",
                         b->seq, eg_strerror(arc));
                next_try = eg_mono_ms() + failed(u, R_STORAGE, why, -1, 0, b->seq, s.url);
            } else {
                succeeded(u, b, s.url);
                idle_since = eg_mono_ms();
                next_try = 0;
            }
        } else {
            if (rc == EG_ECONFLICT && expected < b->seq)
                eg_outbox_request_resync(u->o.outbox);
            next_try =
                eg_mono_ms() + failed(u, reason_of(rc), why, retry_after, expected, b->seq, s.url);
        }
    next:
        eg_outbox_batch_free(b);
        eg_upload_settings_clear(&s);
        continue;
    wait_notify:
        eg_upload_settings_clear(&s);
        if (http) { /* the URL went away: drop the connection */
            eg_http_client_free(http);
            http = NULL;
            eg_freep(&http_url);
        }
        if (!nap(u, POLL_MS, gen, true))
            break;
    }
    eg_http_client_free(http);
    eg_free(http_url);
    pthread_mutex_lock(&u->lock);
    u->done = true;
    pthread_cond_broadcast(&u->exited);
    pthread_mutex_unlock(&u->lock);
    return NULL;
}

int eg_uploader_start(const struct eg_uploader_opts *o, struct eg_uploader **ret)
{
    struct eg_uploader *u = NULL;
    pthread_condattr_t ca;

    if (!o || !o->outbox || !o->settings || !ret || o->heartbeat_ms < 0 ||
        (o->heartbeat_ms && (o->heartbeat_ms < EG_UPLOAD_MIN_HEARTBEAT_S * 1000LL ||
                             o->heartbeat_ms > EG_UPLOAD_MAX_HEARTBEAT_S * 1000LL)) ||
        o->retry_min_ms < 0 || o->retry_max_ms < 0 || o->timeout_ms < 0 ||
        o->timeout_ms > EG_HTTP_CLIENT_MAX_TIMEOUT_MS || o->retry_max_ms > EG_UPLOAD_MAX_BACKOFF_MS)
        return EG_EINVAL;
    if (!(u = eg_calloc(1, sizeof *u)))
        return EG_ENOMEM;
    u->o = *o;
    if (!u->o.heartbeat_ms)
        u->o.heartbeat_ms = EG_UPLOAD_DEFAULT_HEARTBEAT_S * 1000LL;
    if (!u->o.retry_min_ms)
        u->o.retry_min_ms = EG_UPLOAD_MIN_BACKOFF_MS;
    if (!u->o.retry_max_ms)
        u->o.retry_max_ms = EG_UPLOAD_MAX_BACKOFF_MS;
    if (!u->o.timeout_ms)
        u->o.timeout_ms = EG_UPLOAD_TIMEOUT_MS;
    if (u->o.retry_max_ms < u->o.retry_min_ms ||
        (o->ca_file && !(u->ca_file = eg_strdup(o->ca_file)))) {
        int rc = u->o.retry_max_ms < u->o.retry_min_ms ? EG_EINVAL : EG_ENOMEM;
        eg_free(u);
        return rc;
    }
    u->o.ca_file = u->ca_file;
    u->state = ST_NOT_CONFIGURED;
    snprintf(u->message, sizeof u->message, "starting");
    pthread_mutex_init(&u->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->wake, &ca);
    pthread_cond_init(&u->exited, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&u->thread, NULL, uploader_main, u) != 0) {
        pthread_cond_destroy(&u->wake);
        pthread_cond_destroy(&u->exited);
        pthread_mutex_destroy(&u->lock);
        eg_free(u->ca_file);
        eg_free(u);
        return EG_ENOMEM;
    }
    *ret = u;
    return 0;
}

int eg_uploader_stop(struct eg_uploader *u, int64_t drain_ms)
{
    struct timespec ts;
    if (!u)
        return 0;
    if (drain_ms < 0)
        drain_ms = 0;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += drain_ms / 1000;
    ts.tv_nsec += (drain_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&u->lock);
    u->stopping = true;
    pthread_cond_broadcast(&u->wake);
    while (!u->done)
        if (pthread_cond_timedwait(&u->exited, &u->lock, &ts) == ETIMEDOUT)
            break;
    bool done = u->done;
    pthread_mutex_unlock(&u->lock);
    if (!done)
        return EG_ETIMEDOUT;
    pthread_join(u->thread, NULL);
    pthread_cond_destroy(&u->wake);
    pthread_cond_destroy(&u->exited);
    pthread_mutex_destroy(&u->lock);
    eg_free(u->url);
    eg_free(u->ca_file);
    eg_free(u);
    return 0;
}
