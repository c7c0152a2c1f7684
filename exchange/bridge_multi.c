/* bridge_multi.c - several Exchange servers of one organisation behind one bridge.
 *
 * One mutex guards every server's state (live/dead, the ring of its last dead_threshold failure
 * times, probe successes, last error) and the round-robin counter; it is never held across a
 * call into a server. A call snapshots the order in which it will try the live servers, then
 * tries them one by one; a server-level failure is recorded against the server (which may mark
 * it dead) and the next server of the snapshot that is still live is tried. The health-check
 * thread sleeps on a condition variable (CLOCK_MONOTONIC timed wait) so that destroy stops it at
 * once; a round mutex keeps the thread's rounds and eg_bridge_multi_check_now from interleaving.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/bridge_multi.h"

struct mserver {
    struct eg_bridge *b;
    char *name; /* URL without user info */
    bool dead;
    int64_t dead_since; /* monotonic ms */
    int64_t *fail_at;   /* ring of the last dead_threshold failure times (monotonic ms) */
    unsigned fail_n, fail_head;
    unsigned probe_ok; /* consecutive successful probes (dead: counted once dead_time passed) */
    bool has_error;
    char err_code[32];
    char err_message[512];
    int64_t err_at; /* wall-clock ms */
};

struct multi {
    struct eg_bridge_multi_opts o;
    struct mserver *s;
    size_t n;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    pthread_mutex_t round_lock;
    bool lock_ok, cv_ok, round_ok;
    bool stop;
    unsigned long wake_gen;
    int64_t test_interval_ms;
    int64_t (*clock)(void *ctx);
    void *clock_ctx;
    size_t rr;
    pthread_t thread;
    bool thread_started;
};

static const char *const policy_names[] = {"priority", "round_robin"};

int eg_multi_policy_parse(const char *s, enum eg_multi_policy *ret)
{
    if (!s || !ret)
        return EG_EINVAL;
    for (size_t i = 0; i < sizeof policy_names / sizeof policy_names[0]; i++)
        if (strcmp(s, policy_names[i]) == 0) {
            *ret = (enum eg_multi_policy)i;
            return 0;
        }
    return EG_EINVAL;
}

const char *eg_multi_policy_name(enum eg_multi_policy p)
{
    if ((unsigned)p >= sizeof policy_names / sizeof policy_names[0])
        return "?";
    return policy_names[p];
}

void eg_bridge_multi_opts_default(struct eg_bridge_multi_opts *o)
{
    if (!o)
        return;
    o->policy = EG_MULTI_PRIORITY;
    o->dead_threshold = EG_MULTI_DEFAULT_DEAD_THRESHOLD;
    o->failure_window_ms = EG_MULTI_DEFAULT_FAILURE_WINDOW_MS;
    o->dead_time_ms = EG_MULTI_DEFAULT_DEAD_TIME_MS;
    o->health_interval_s = EG_MULTI_DEFAULT_HEALTH_INTERVAL_S;
    o->live_threshold = EG_MULTI_DEFAULT_LIVE_THRESHOLD;
}

static int why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int why_set(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    if (why && whylen) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return EG_EINVAL;
}

int eg_bridge_multi_opts_check(const struct eg_bridge_multi_opts *o, char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (!o)
        return why_set(why, whylen, "no server-list options were given");
    if (o->policy != EG_MULTI_PRIORITY && o->policy != EG_MULTI_ROUND_ROBIN)
        return why_set(why, whylen, "policy is %d; it must be priority or round_robin",
                       (int)o->policy);
    if (o->dead_threshold < EG_MULTI_MIN_DEAD_THRESHOLD ||
        o->dead_threshold > EG_MULTI_MAX_DEAD_THRESHOLD)
        return why_set(why, whylen, "dead_threshold is %u; it must be between %d and %d",
                       o->dead_threshold, EG_MULTI_MIN_DEAD_THRESHOLD, EG_MULTI_MAX_DEAD_THRESHOLD);
    if (o->failure_window_ms < EG_MULTI_MIN_FAILURE_WINDOW_MS ||
        o->failure_window_ms > EG_MULTI_MAX_FAILURE_WINDOW_MS)
        return why_set(why, whylen, "failure_window_ms is %lld; it must be between %d and %d",
                       (long long)o->failure_window_ms, EG_MULTI_MIN_FAILURE_WINDOW_MS,
                       EG_MULTI_MAX_FAILURE_WINDOW_MS);
    if (o->dead_time_ms < EG_MULTI_MIN_DEAD_TIME_MS || o->dead_time_ms > EG_MULTI_MAX_DEAD_TIME_MS)
        return why_set(why, whylen, "dead_time_ms is %lld; it must be between %d and %d",
                       (long long)o->dead_time_ms, EG_MULTI_MIN_DEAD_TIME_MS,
                       EG_MULTI_MAX_DEAD_TIME_MS);
    if (o->health_interval_s < EG_MULTI_MIN_HEALTH_INTERVAL_S ||
        o->health_interval_s > EG_MULTI_MAX_HEALTH_INTERVAL_S)
        return why_set(why, whylen, "health_interval_s is %u; it must be between %d and %d",
                       o->health_interval_s, EG_MULTI_MIN_HEALTH_INTERVAL_S,
                       EG_MULTI_MAX_HEALTH_INTERVAL_S);
    if (o->live_threshold < EG_MULTI_MIN_LIVE_THRESHOLD ||
        o->live_threshold > EG_MULTI_MAX_LIVE_THRESHOLD)
        return why_set(why, whylen, "live_threshold is %u; it must be between %d and %d",
                       o->live_threshold, EG_MULTI_MIN_LIVE_THRESHOLD, EG_MULTI_MAX_LIVE_THRESHOLD);
    return 0;
}

/* ---- server state (callers hold m->lock) ---- */

static int64_t now_mono(struct multi *m)
{
    return m->clock ? m->clock(m->clock_ctx) : eg_mono_ms();
}

static unsigned failures_in_window(const struct multi *m, const struct mserver *s, int64_t now)
{
    unsigned c = 0;
    for (unsigned i = 0; i < s->fail_n; i++)
        if (now - s->fail_at[i] < m->o.failure_window_ms)
            c++;
    return c;
}

/* Keep what went wrong for status and the no-live-server message. */
static void note_error(struct mserver *s, int rc, const struct eg_bridge_error *e)
{
    s->has_error = true;
    snprintf(s->err_code, sizeof s->err_code, "%s", e->code[0] ? e->code : EG_BERR_INTERNAL);
    snprintf(s->err_message, sizeof s->err_message, "%s",
             e->message[0] ? e->message : eg_strerror(rc));
    s->err_at = eg_now_ms();
}

/* One failure of server s at now: into the ring; dead once the ring's dead_threshold failures
 * all lie within the window. */
static void count_failure(struct multi *m, struct mserver *s, int64_t now)
{
    unsigned cap = m->o.dead_threshold;
    s->fail_at[s->fail_head] = now;
    s->fail_head = (s->fail_head + 1) % cap;
    if (s->fail_n < cap)
        s->fail_n++;
    s->probe_ok = 0;
    if (!s->dead && failures_in_window(m, s, now) >= cap) {
        s->dead = true;
        s->dead_since = now;
    }
}

static void revive(struct mserver *s)
{
    s->dead = false;
    s->fail_n = 0;
    s->fail_head = 0;
}

static void record_failure(struct multi *m, size_t idx, int rc, const struct eg_bridge_error *e)
{
    pthread_mutex_lock(&m->lock);
    struct mserver *s = &m->s[idx];
    note_error(s, rc, e);
    count_failure(m, s, now_mono(m));
    pthread_mutex_unlock(&m->lock);
}

/* exchange_unreachable or timeout: the server, not the request, is at fault. */
static bool server_fault(int rc, const struct eg_bridge_error *e)
{
    return rc < 0 &&
           (strcmp(e->code, EG_BERR_UNREACHABLE) == 0 || strcmp(e->code, EG_BERR_TIMEOUT) == 0);
}

/* Append text to buf (length *len, capacity size) clipped to at most budget bytes, cut on a UTF-8
 * character boundary and marked with "..." when clipped. */
static void append_clipped(char *buf, size_t size, size_t *len, const char *text, size_t budget)
{
    size_t tl = strlen(text);
    if (*len + 1 >= size)
        return;
    if (budget > size - 1 - *len)
        budget = size - 1 - *len;
    if (tl <= budget) {
        memcpy(buf + *len, text, tl);
        *len += tl;
    } else if (budget >= 3) {
        size_t cut = budget - 3;
        while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(buf + *len, text, cut);
        memcpy(buf + *len + cut, "...", 3);
        *len += cut + 3;
    }
    buf[*len] = '\0';
}

/* The error of a call made while no server is live: each server's last error, bounded by the
 * size of err->message (every server gets an equal share). Caller holds the lock. */
static void no_live_error(struct multi *m, struct eg_bridge_error *err)
{
    char msg[sizeof err->message];
    char entry[1024];
    size_t len = 0;

    append_clipped(msg, sizeof msg, &len,
                   "no Exchange server of this target is reachable: ", sizeof msg);
    size_t budget = (sizeof msg - 1 - len) / m->n;
    for (size_t i = 0; i < m->n; i++) {
        const struct mserver *s = &m->s[i];
        if (s->has_error)
            snprintf(entry, sizeof entry, "%s%s: %s (%s)", i ? "; " : "", s->name, s->err_code,
                     s->err_message);
        else
            snprintf(entry, sizeof entry, "%s%s: no error recorded", i ? "; " : "", s->name);
        append_clipped(msg, sizeof msg, &len, entry, budget);
    }
    eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true, "%s", msg);
}

/* The live servers in the order this call tries them. Caller holds the lock. */
static size_t pick_order(struct multi *m, size_t *order)
{
    size_t live[EG_MAX_SERVERS_PER_TARGET];
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++)
        if (!m->s[i].dead)
            live[k++] = i;
    if (k == 0)
        return 0;
    size_t start = 0;
    if (m->o.policy == EG_MULTI_ROUND_ROBIN)
        start = m->rr++ % k;
    for (size_t i = 0; i < k; i++)
        order[i] = live[(start + i) % k];
    return k;
}

/* ---- forwarding ---- */

enum op {
    OP_LIST_EDIT,
    OP_WIPE,
    OP_WIPE_CANCEL,
    OP_REMOVE,
    OP_SET_MAILBOX,
    OP_SET_ORG,
    OP_PAGE,
    OP_LISTS,
    OP_STATS
};

/* One operation and its arguments, forwarded as they are to whichever server runs it. */
struct call {
    enum op op;
    const struct eg_list_edit *edit;
    const char *mailbox, *device_id;
    bool account_only;
    const char *const *notify;
    size_t n_notify;
    int activesync_enabled;
    bool set_policy;
    const char *policy;
    enum eg_access_level level;
    json_t *actions;
    const struct eg_inventory_query *q;
    const char *cursor; /* the server's own cursor */
    eg_device_cb cb;
    void *cb_ctx;
    size_t delivered; /* devices (mailboxes) passed to cb so far */
    char *next;       /* the server's next cursor */
    const struct eg_mailbox_query *mq;
    eg_mailbox_cb mcb;
    const char *identity;
};

static int page_cb(void *ctx, const struct eg_device_record *dev)
{
    struct call *c = ctx;
    c->delivered++;
    return c->cb(c->cb_ctx, dev);
}

static int lists_cb(void *ctx, const struct eg_mailbox_record *mbx)
{
    struct call *c = ctx;
    c->delivered++;
    return c->mcb(c->cb_ctx, mbx);
}

static int invoke(struct eg_bridge *s, struct call *c, struct eg_bridge_error *e)
{
    const struct eg_bridge_ops *ops = s->ops;
    switch (c->op) {
    case OP_LIST_EDIT:
        if (ops->list_edit)
            return ops->list_edit(s->impl, c->edit, c->actions, e);
        break;
    case OP_WIPE:
        if (ops->wipe)
            return ops->wipe(s->impl, c->mailbox, c->device_id, c->account_only, c->notify,
                             c->n_notify, c->actions, e);
        break;
    case OP_WIPE_CANCEL:
        if (ops->wipe_cancel)
            return ops->wipe_cancel(s->impl, c->mailbox, c->device_id, c->actions, e);
        break;
    case OP_REMOVE:
        if (ops->remove_device)
            return ops->remove_device(s->impl, c->mailbox, c->device_id, c->actions, e);
        break;
    case OP_SET_MAILBOX:
        if (ops->set_mailbox)
            return ops->set_mailbox(s->impl, c->mailbox, c->activesync_enabled, c->set_policy,
                                    c->policy, c->actions, e);
        break;
    case OP_SET_ORG:
        if (ops->set_org_default_access)
            return ops->set_org_default_access(s->impl, c->level, c->actions, e);
        break;
    case OP_PAGE:
        if (ops->inventory_page)
            return ops->inventory_page(s->impl, c->q, c->cursor, page_cb, c, &c->next, e);
        break;
    case OP_LISTS:
        if (ops->mailbox_lists)
            return ops->mailbox_lists(s->impl, c->mq, lists_cb, c, e);
        break;
    case OP_STATS:
        if (ops->device_stats)
            return ops->device_stats(s->impl, c->mailbox, c->device_id, c->identity, page_cb, c, e);
        break;
    }
    eg_bridge_error_set(e, EG_BERR_UNSUPPORTED, false, "the %s backend does not support this",
                        ops->name ? ops->name : "?");
    return EG_EUNSUPPORTED;
}

/* Run c on the first server of this call's order; on a server-level failure count it and go on
 * with the next server that is still live (each at most once). An inventory page that already
 * delivered devices is not repeated elsewhere. *ret_idx: the server that answered last. */
static int dispatch(struct multi *m, struct call *c, struct eg_bridge_error *err, size_t *ret_idx)
{
    size_t order[EG_MAX_SERVERS_PER_TARGET];
    struct eg_bridge_error e;
    int rc = 0;

    pthread_mutex_lock(&m->lock);
    size_t k = pick_order(m, order);
    if (k == 0) {
        no_live_error(m, err ? err : &e);
        pthread_mutex_unlock(&m->lock);
        return EG_EUNAVAIL;
    }
    pthread_mutex_unlock(&m->lock);

    for (size_t i = 0; i < k; i++) {
        size_t idx = order[i];
        if (i > 0) {
            pthread_mutex_lock(&m->lock);
            bool dead = m->s[idx].dead;
            pthread_mutex_unlock(&m->lock);
            if (dead)
                continue;
        }
        memset(&e, 0, sizeof e);
        eg_freep(&c->next);
        *ret_idx = idx;
        rc = invoke(m->s[idx].b, c, &e);
        if (!server_fault(rc, &e))
            break;
        record_failure(m, idx, rc, &e);
        if ((c->op == OP_PAGE || c->op == OP_LISTS || c->op == OP_STATS) && c->delivered)
            break; /* a stream that delivered something is not repeated elsewhere */
    }
    if (rc < 0 && err)
        *err = e;
    return rc;
}

static int run(void *impl, struct call *c, struct eg_bridge_error *err)
{
    size_t idx = 0;
    return dispatch(impl, c, err, &idx);
}

static int mu_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                        struct eg_bridge_error *err)
{
    struct call c = {.op = OP_LIST_EDIT, .edit = edit, .actions = actions};
    return run(impl, &c, err);
}

static int mu_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                   const char *const *notify, size_t n_notify, json_t *actions,
                   struct eg_bridge_error *err)
{
    struct call c = {.op = OP_WIPE,
                     .mailbox = mailbox,
                     .device_id = device_id,
                     .account_only = account_only,
                     .notify = notify,
                     .n_notify = n_notify,
                     .actions = actions};
    return run(impl, &c, err);
}

static int mu_wipe_cancel(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                          struct eg_bridge_error *err)
{
    struct call c = {
        .op = OP_WIPE_CANCEL, .mailbox = mailbox, .device_id = device_id, .actions = actions};
    return run(impl, &c, err);
}

static int mu_remove_device(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                            struct eg_bridge_error *err)
{
    struct call c = {
        .op = OP_REMOVE, .mailbox = mailbox, .device_id = device_id, .actions = actions};
    return run(impl, &c, err);
}

static int mu_set_mailbox(void *impl, const char *mailbox, int activesync_enabled, bool set_policy,
                          const char *policy, json_t *actions, struct eg_bridge_error *err)
{
    struct call c = {.op = OP_SET_MAILBOX,
                     .mailbox = mailbox,
                     .activesync_enabled = activesync_enabled,
                     .set_policy = set_policy,
                     .policy = policy,
                     .actions = actions};
    return run(impl, &c, err);
}

static int mu_set_org_default_access(void *impl, enum eg_access_level level, json_t *actions,
                                     struct eg_bridge_error *err)
{
    struct call c = {.op = OP_SET_ORG, .level = level, .actions = actions};
    return run(impl, &c, err);
}

/* "<index>:<server cursor>" -> index < n and the server's cursor. */
static int parse_cursor(const char *cursor, size_t n, size_t *ret_idx, const char **ret_inner)
{
    size_t idx = 0, digits = 0;
    const char *p = cursor;
    while (*p >= '0' && *p <= '9' && digits < 3) {
        idx = idx * 10 + (size_t)(*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || *p != ':' || idx >= n || (digits > 1 && cursor[0] == '0'))
        return EG_EINVAL;
    *ret_idx = idx;
    *ret_inner = p + 1;
    return 0;
}

static int mu_inventory_page(void *impl, const struct eg_inventory_query *q, const char *cursor,
                             eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                             struct eg_bridge_error *err)
{
    struct multi *m = impl;
    struct call c = {.op = OP_PAGE, .q = q, .cb = cb, .cb_ctx = cb_ctx};
    struct eg_bridge_error e;
    size_t idx = 0;
    int rc;

    if (!cb || !ret_next_cursor) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "no callback for the inventory");
        return EG_EINVAL;
    }
    if (!cursor) {
        rc = dispatch(m, &c, err, &idx);
    } else {
        if (parse_cursor(cursor, m->n, &idx, &c.cursor) < 0) {
            eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "bad inventory cursor");
            return EG_EINVAL;
        }
        /* The cursor belongs to the server that produced it: no failover. */
        pthread_mutex_lock(&m->lock);
        bool dead = m->s[idx].dead;
        pthread_mutex_unlock(&m->lock);
        if (dead) {
            eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true,
                                "%s, the server of this inventory cursor, is unreachable",
                                m->s[idx].name);
            return EG_EUNAVAIL;
        }
        memset(&e, 0, sizeof e);
        rc = invoke(m->s[idx].b, &c, &e);
        if (server_fault(rc, &e))
            record_failure(m, idx, rc, &e);
        if (rc < 0 && err)
            *err = e;
    }
    if (rc != 0)
        goto out;
    *ret_next_cursor = NULL;
    if (c.next) {
        char *next = eg_asprintf("%zu:%s", idx, c.next);
        if (!next) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "out of memory in the multi bridge");
            rc = EG_ENOMEM;
            goto out;
        }
        *ret_next_cursor = next;
    }
out:
    eg_free(c.next);
    return rc;
}

static int mu_mailbox_lists(void *impl, const struct eg_mailbox_query *q, eg_mailbox_cb cb,
                            void *cb_ctx, struct eg_bridge_error *err)
{
    if (!cb) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "no callback for the lists");
        return EG_EINVAL;
    }
    struct call c = {.op = OP_LISTS, .mq = q, .mcb = cb, .cb_ctx = cb_ctx};
    return run(impl, &c, err);
}

static int mu_device_stats(void *impl, const char *mailbox, const char *device_id,
                           const char *identity, eg_device_cb cb, void *cb_ctx,
                           struct eg_bridge_error *err)
{
    if (!cb) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "no callback for the stats");
        return EG_EINVAL;
    }
    struct call c = {.op = OP_STATS,
                     .mailbox = mailbox,
                     .device_id = device_id,
                     .identity = identity,
                     .cb = cb,
                     .cb_ctx = cb_ctx};
    return run(impl, &c, err);
}

/* ---- health check ---- */

/* Apply one probe result of server idx. Caller holds the lock. */
static void apply_probe(struct multi *m, size_t idx, int rc, const struct eg_bridge_error *e)
{
    struct mserver *s = &m->s[idx];
    int64_t now = now_mono(m);
    if (rc < 0) {
        note_error(s, rc, e);
        if (s->dead)
            s->probe_ok = 0;
        else
            count_failure(m, s, now);
        return;
    }
    if (!s->dead) {
        if (s->probe_ok < UINT_MAX)
            s->probe_ok++;
        return;
    }
    if (now - s->dead_since < m->o.dead_time_ms)
        return; /* still serving its dead time: successes do not count yet */
    if (++s->probe_ok >= m->o.live_threshold)
        revive(s);
}

static void health_round(struct multi *m)
{
    pthread_mutex_lock(&m->round_lock);
    for (size_t i = 0; i < m->n; i++) {
        struct eg_bridge_error e;
        pthread_mutex_lock(&m->lock);
        bool stop = m->stop;
        pthread_mutex_unlock(&m->lock);
        if (stop)
            break;
        memset(&e, 0, sizeof e);
        int rc = eg_bridge_probe(m->s[i].b, &e);
        pthread_mutex_lock(&m->lock);
        apply_probe(m, i, rc, &e);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&m->round_lock);
}

static void *health_main(void *arg)
{
    struct multi *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        int64_t interval =
            m->test_interval_ms > 0 ? m->test_interval_ms : (int64_t)m->o.health_interval_s * 1000;
        unsigned long gen = m->wake_gen;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(interval / 1000);
        until.tv_nsec += (long)(interval % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int w = 0;
        while (!m->stop && gen == m->wake_gen && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&m->cv, &m->lock, &until);
        if (m->stop)
            break;
        if (gen != m->wake_gen)
            continue; /* the interval changed: wait again with the new one */
        pthread_mutex_unlock(&m->lock);
        health_round(m);
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* ---- status ---- */

/* A JSON string of s; a message that is not valid UTF-8 is shown with '?' for its non-ASCII
 * bytes rather than making the whole status fail. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *c = eg_strdup(s);
    for (char *p = c; p && *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = c ? json_string(c) : NULL;
    eg_free(c);
    return j;
}

static json_t *server_state_json(struct multi *m, const struct mserver *s, int64_t now)
{
    json_t *o = json_object();
    json_t *le = NULL;
    if (!o)
        return NULL;
    if (s->has_error) {
        char at[40];
        eg_format_time(s->err_at, at, sizeof at);
        le = json_object();
        if (!le || json_object_set_new(le, "code", json_text(s->err_code)) < 0 ||
            json_object_set_new(le, "message", json_text(s->err_message)) < 0 ||
            json_object_set_new(le, "at", json_string(at)) < 0)
            goto fail;
    } else {
        le = json_null();
    }
    if (json_object_set_new(o, "url", json_text(s->name)) < 0 ||
        json_object_set_new(o, "state", json_string(s->dead ? "unreachable" : "reachable")) < 0 ||
        json_object_set_new(o, "last_error", le) < 0)
        goto fail_o;
    if (json_object_set_new(o, "failures_in_window", json_integer(failures_in_window(m, s, now))) <
            0 ||
        json_object_set_new(o, "consecutive_probe_successes", json_integer(s->probe_ok)) < 0)
        goto fail_o;
    return o;
fail:
    json_decref(le);
fail_o:
    json_decref(o);
    return NULL;
}

static json_t *mu_status(void *impl)
{
    struct multi *m = impl;
    json_t *out = json_object();
    json_t *servers = json_array();
    json_t *first = NULL;
    size_t live = 0;

    if (!out || !servers)
        goto fail;
    pthread_mutex_lock(&m->lock);
    int64_t now = now_mono(m);
    for (size_t i = 0; i < m->n; i++) {
        if (!m->s[i].dead)
            live++;
        if (json_array_append_new(servers, server_state_json(m, &m->s[i], now)) < 0) {
            pthread_mutex_unlock(&m->lock);
            goto fail;
        }
    }
    pthread_mutex_unlock(&m->lock);
    /* The backends' own status, outside the lock. */
    for (size_t i = 0; i < m->n; i++) {
        json_t *bs = eg_bridge_status(m->s[i].b);
        if (!bs || json_object_set_new(json_array_get(servers, i), "backend", bs) < 0)
            goto fail;
        if (i == 0)
            first = bs;
    }
    json_t *kind = json_object_get(first, "kind");
    json_t *version = json_object_get(first, "version");
    const char *kind_s = json_is_string(kind) ? json_string_value(kind) : "multi";
    if (json_object_set_new(out, "kind", json_string(kind_s)) < 0 ||
        (version && json_object_set(out, "version", version) < 0) ||
        json_object_set_new(out, "policy", json_string(eg_multi_policy_name(m->o.policy))) < 0 ||
        json_object_set_new(out, "live", json_integer((json_int_t)live)) < 0)
        goto fail;
    if (json_object_set_new(out, "servers", servers) < 0) {
        servers = NULL;
        goto fail;
    }
    return out;
fail:
    json_decref(servers);
    json_decref(out);
    return NULL;
}

/* ---- life cycle ---- */

static void mu_destroy(void *impl)
{
    struct multi *m = impl;
    if (!m)
        return;
    if (m->thread_started) {
        pthread_mutex_lock(&m->lock);
        m->stop = true;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->thread, NULL);
    }
    for (size_t i = 0; m->s && i < m->n; i++) {
        eg_bridge_free(m->s[i].b);
        eg_free(m->s[i].name);
        eg_free(m->s[i].fail_at);
    }
    eg_free(m->s);
    if (m->cv_ok)
        pthread_cond_destroy(&m->cv);
    if (m->lock_ok)
        pthread_mutex_destroy(&m->lock);
    if (m->round_ok)
        pthread_mutex_destroy(&m->round_lock);
    eg_free(m);
}

static const struct eg_bridge_ops multi_ops = {
    .name = "multi",
    .list_edit = mu_list_edit,
    .wipe = mu_wipe,
    .wipe_cancel = mu_wipe_cancel,
    .remove_device = mu_remove_device,
    .set_mailbox = mu_set_mailbox,
    .set_org_default_access = mu_set_org_default_access,
    .inventory_page = mu_inventory_page,
    .mailbox_lists = mu_mailbox_lists,
    .device_stats = mu_device_stats,
    .status = mu_status,
    .destroy = mu_destroy,
};

/* The URL as shown: any user info ("user:password@") before the host is left out. */
static char *display_name(const char *url)
{
    const char *sep = strstr(url, "://");
    size_t start = sep ? (size_t)(sep - url) + 3 : 0;
    size_t auth_len = strcspn(url + start, "/?#");
    const char *at = NULL;
    for (const char *p = url + start; p < url + start + auth_len; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return eg_strdup(url);
    return eg_asprintf("%.*s%s", (int)start, url, at + 1);
}

int eg_bridge_multi_new(const struct eg_bridge_multi_opts *o, struct eg_bridge **servers,
                        const char *const *names, size_t n, struct eg_bridge **ret)
{
    struct multi *m = NULL;
    struct eg_bridge *b = NULL;
    pthread_condattr_t ca;
    int rc = EG_EINVAL;

    bool ok = o && eg_bridge_multi_opts_check(o, NULL, 0) == 0 && servers && names && ret &&
              n >= 1 && n <= EG_MAX_SERVERS_PER_TARGET;
    for (size_t i = 0; ok && i < n; i++)
        if (!servers[i] || !names[i])
            ok = false;
    if (!ok)
        goto fail_servers;
    rc = EG_ENOMEM;
    m = eg_calloc(1, sizeof *m);
    if (!m)
        goto fail_servers;
    m->s = eg_calloc(n, sizeof *m->s);
    if (!m->s)
        goto fail_servers;
    /* From here on m owns the servers. */
    m->n = n;
    m->o = *o;
    for (size_t i = 0; i < n; i++)
        m->s[i].b = servers[i];
    for (size_t i = 0; i < n; i++) {
        m->s[i].name = display_name(names[i]);
        m->s[i].fail_at = eg_calloc(o->dead_threshold, sizeof *m->s[i].fail_at);
        if (!m->s[i].name || !m->s[i].fail_at)
            goto out;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        goto out;
    m->lock_ok = true;
    if (pthread_mutex_init(&m->round_lock, NULL) != 0)
        goto out;
    m->round_ok = true;
    if (pthread_condattr_init(&ca) != 0)
        goto out;
    int crc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (crc == 0)
        crc = pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (crc != 0)
        goto out;
    m->cv_ok = true;
    b = eg_calloc(1, sizeof *b);
    if (!b)
        goto out;
    if (pthread_create(&m->thread, NULL, health_main, m) != 0)
        goto out;
    m->thread_started = true;
    b->ops = &multi_ops;
    b->impl = m;
    *ret = b;
    return 0;
out:
    eg_free(b);
    mu_destroy(m);
    return rc;
fail_servers:
    if (m)
        eg_free(m->s);
    eg_free(m);
    for (size_t i = 0; servers && i < n; i++)
        eg_bridge_free(servers[i]);
    return rc;
}

static struct multi *multi_of(struct eg_bridge *b)
{
    return b && b->ops == &multi_ops ? b->impl : NULL;
}

void eg_bridge_multi_check_now(struct eg_bridge *b)
{
    struct multi *m = multi_of(b);
    if (m)
        health_round(m);
}

size_t eg_bridge_multi_live(struct eg_bridge *b)
{
    struct multi *m = multi_of(b);
    size_t live = 0;
    if (!m)
        return 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++)
        if (!m->s[i].dead)
            live++;
    pthread_mutex_unlock(&m->lock);
    return live;
}

void eg_bridge_multi_set_clock_for_test(struct eg_bridge *b, int64_t (*now_ms)(void *ctx),
                                        void *ctx)
{
    struct multi *m = multi_of(b);
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->clock = now_ms;
    m->clock_ctx = ctx;
    pthread_mutex_unlock(&m->lock);
}

void eg_bridge_multi_set_interval_for_test(struct eg_bridge *b, int64_t interval_ms)
{
    struct multi *m = multi_of(b);
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->test_interval_ms = interval_ms > 0 ? interval_ms : 0;
    m->wake_gen++;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->lock);
}
