/* metrics.c - counters and histograms in the Prometheus text exposition format (0.0.4).
 *
 * Series are kept in small fixed tables (label sets are bounded: route templates, command types,
 * states, bridge operations), found by linear search under one mutex. Recording allocates only the
 * first time a label set is seen.
 */
#include "agent/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#define MAX_SERIES 256
#define LABEL_LEN  64

static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1,     2.5,  5,     10,   30,  60,   300};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

struct counter {
    char a[LABEL_LEN], b[LABEL_LEN];
    int64_t value;
};

struct histogram {
    char type[LABEL_LEN];
    int64_t counts[N_BUCKETS + 1]; /* last = +Inf */
    int64_t count;
    double sum;
};

struct eg_metrics {
    pthread_mutex_t lock;
    struct counter http[MAX_SERIES];
    size_t n_http;
    struct counter finished[MAX_SERIES];
    size_t n_finished;
    struct counter bridge[MAX_SERIES];
    size_t n_bridge;
    struct histogram dur[64];
    size_t n_dur;
    int64_t dropped; /* label sets beyond the tables (should stay 0) */
};

int eg_metrics_new(struct eg_metrics **ret)
{
    struct eg_metrics *m = eg_calloc(1, sizeof *m);
    if (!m)
        return EG_ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    *ret = m;
    return 0;
}

void eg_metrics_free(struct eg_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    eg_free(m);
}

/* Find or add the counter (a, b) in a table; NULL when the table is full. */
static struct counter *counter_get(struct counter *t, size_t *n, const char *a, const char *b)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(t[i].a, a) == 0 && strcmp(t[i].b, b) == 0)
            return &t[i];
    if (*n >= MAX_SERIES)
        return NULL;
    struct counter *c = &t[(*n)++];
    snprintf(c->a, sizeof c->a, "%s", a);
    snprintf(c->b, sizeof c->b, "%s", b);
    c->value = 0;
    return c;
}

static void bump(struct eg_metrics *m, struct counter *t, size_t *n, const char *a, const char *b)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    struct counter *c = counter_get(t, n, a ? a : "", b ? b : "");
    if (c)
        c->value++;
    else
        m->dropped++;
    pthread_mutex_unlock(&m->lock);
}

void eg_metrics_http(struct eg_metrics *m, const char *route, int status)
{
    char st[16];
    if (!m)
        return;
    snprintf(st, sizeof st, "%d", status);
    bump(m, m->http, &m->n_http, route, st);
}

void eg_metrics_command_done(struct eg_metrics *m, const char *type, enum eg_cmd_state state,
                             double seconds)
{
    if (!m)
        return;
    bump(m, m->finished, &m->n_finished, type, eg_cmd_state_name(state));
    pthread_mutex_lock(&m->lock);
    struct histogram *h = NULL;
    for (size_t i = 0; i < m->n_dur; i++)
        if (strcmp(m->dur[i].type, type) == 0)
            h = &m->dur[i];
    if (!h && m->n_dur < sizeof m->dur / sizeof m->dur[0]) {
        h = &m->dur[m->n_dur++];
        memset(h, 0, sizeof *h);
        snprintf(h->type, sizeof h->type, "%s", type);
    }
    if (h) {
        size_t b = 0;
        while (b < N_BUCKETS && seconds > buckets[b])
            b++;
        h->counts[b]++;
        h->count++;
        h->sum += seconds < 0 ? 0 : seconds;
    } else {
        m->dropped++;
    }
    pthread_mutex_unlock(&m->lock);
}

void eg_metrics_bridge_call(struct eg_metrics *m, const char *op, const char *outcome)
{
    if (m)
        bump(m, m->bridge, &m->n_bridge, op, outcome);
}

/* A growing text buffer; on allocation failure it remembers the failure. */
struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->failed)
        return;
    for (;;) {
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

/* Label values here are route templates, type and state names: no quotes or backslashes can
 * occur, but escape anyway so the output is always valid. */
static const char *esc(const char *s, char *out, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; s[i] && j + 3 < size; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            out[j++] = '\\';
            out[j++] = s[i];
        } else if (s[i] == '\n') {
            out[j++] = '\\';
            out[j++] = 'n';
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    return out;
}

int eg_metrics_render(struct eg_metrics *m, const int64_t queue_counts[EG_STATE__COUNT], char **ret)
{
    struct buf b = {0};
    char e1[2 * LABEL_LEN + 4], e2[2 * LABEL_LEN + 4];

    if (!m || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&m->lock);
    put(&b, "# HELP easgate_http_requests_total HTTP requests answered, by route template and "
            "status.\n# TYPE easgate_http_requests_total counter\n");
    for (size_t i = 0; i < m->n_http; i++)
        put(&b, "easgate_http_requests_total{route=\"%s\",status=\"%s\"} %lld\n",
            esc(m->http[i].a, e1, sizeof e1), esc(m->http[i].b, e2, sizeof e2),
            (long long)m->http[i].value);
    if (queue_counts) {
        put(&b, "# HELP easgate_queue_depth Commands in the journal by state.\n"
                "# TYPE easgate_queue_depth gauge\n");
        for (int s = 0; s < EG_STATE__COUNT; s++)
            put(&b, "easgate_queue_depth{state=\"%s\"} %lld\n",
                eg_cmd_state_name((enum eg_cmd_state)s), (long long)queue_counts[s]);
    }
    put(&b, "# HELP easgate_command_duration_seconds Time from acceptance to the final state.\n"
            "# TYPE easgate_command_duration_seconds histogram\n");
    for (size_t i = 0; i < m->n_dur; i++) {
        const struct histogram *h = &m->dur[i];
        int64_t cum = 0;
        esc(h->type, e1, sizeof e1);
        for (size_t k = 0; k < N_BUCKETS; k++) {
            cum += h->counts[k];
            put(&b, "easgate_command_duration_seconds_bucket{type=\"%s\",le=\"%g\"} %lld\n", e1,
                buckets[k], (long long)cum);
        }
        cum += h->counts[N_BUCKETS];
        put(&b, "easgate_command_duration_seconds_bucket{type=\"%s\",le=\"+Inf\"} %lld\n", e1,
            (long long)cum);
        put(&b, "easgate_command_duration_seconds_sum{type=\"%s\"} %.6f\n", e1, h->sum);
        put(&b, "easgate_command_duration_seconds_count{type=\"%s\"} %lld\n", e1,
            (long long)h->count);
    }
    put(&b, "# HELP easgate_commands_finished_total Commands that reached a final state.\n"
            "# TYPE easgate_commands_finished_total counter\n");
    for (size_t i = 0; i < m->n_finished; i++)
        put(&b, "easgate_commands_finished_total{type=\"%s\",state=\"%s\"} %lld\n",
            esc(m->finished[i].a, e1, sizeof e1), esc(m->finished[i].b, e2, sizeof e2),
            (long long)m->finished[i].value);
    put(&b, "# HELP easgate_bridge_calls_total Exchange bridge operations by outcome.\n"
            "# TYPE easgate_bridge_calls_total counter\n");
    for (size_t i = 0; i < m->n_bridge; i++)
        put(&b, "easgate_bridge_calls_total{op=\"%s\",outcome=\"%s\"} %lld\n",
            esc(m->bridge[i].a, e1, sizeof e1), esc(m->bridge[i].b, e2, sizeof e2),
            (long long)m->bridge[i].value);
    put(&b,
        "# HELP easgate_metrics_dropped_total Label sets not recorded (tables full).\n"
        "# TYPE easgate_metrics_dropped_total counter\neasgate_metrics_dropped_total %lld\n",
        (long long)m->dropped);
    pthread_mutex_unlock(&m->lock);
    if (b.failed) {
        eg_free(b.p);
        return EG_ENOMEM;
    }
    *ret = b.p;
    return 0;
}
