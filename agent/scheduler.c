/* scheduler.c - the inventory sync thread: schedule, requests, coalescing, status, metrics
 * (contract: scheduler.h).
 *
 * One mutex guards the request slots (running, queued), the kept results and the counters; it
 * is never held while a sync runs or while the configuration or the store's meta data are read.
 * The thread sleeps on a condition variable (CLOCK_MONOTONIC) that a request or stop signals.
 * Sync ids are handed out in the order syncs start (a queued request's id is taken when it is
 * queued, after the running sync's), so they also finish in id order and "done" is one number.
 */
#include "agent/scheduler.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "agent/target.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"

static const double sync_buckets[] = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
#define N_SYNC_BUCKETS (sizeof sync_buckets / sizeof sync_buckets[0])

struct req {
    bool set;
    int64_t id;
    enum eg_inv_mode mode;
    char *mailbox; /* NULL = every mailbox */
    int64_t started_ms;
};

struct kept {
    bool set;
    int64_t id;
    char *mailbox;
    struct eg_inv_sync_result r;
};

struct hist {
    int64_t counts[N_SYNC_BUCKETS + 1];
    int64_t count;
    double sum;
};

struct eg_scheduler {
    struct eg_scheduler_opts o;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cv; /* a request, stop, or a finished sync */
    bool stopping;
    atomic_bool stop_sync;
    atomic_uint_least64_t progress;
    struct req running, queued;
    int64_t next_id, done_id;
    struct kept last, last_full, last_quick;
    struct eg_scheduler_config cfg;
    int64_t failed_full_ms, failed_quick_ms; /* last failed scheduled sync of each mode */
    int64_t new_rev, new_rev_ms; /* a revision without a full sync yet, and when it was seen */
    int64_t next_full_ms, next_quick_ms; /* for status; 0 = not scheduled */
    int64_t devices;
    /* metrics */
    int64_t syncs[2][2]; /* [mode][ok] */
    struct hist dur[2];
    int64_t deltas[5]; /* added, changed, removed, drift, healed */
};

static const char *const delta_names[5] = {"added", "changed", "removed", "drift", "healed"};

/* ---- configuration ------------------------------------------------------------------------ */

static void config_defaults(struct eg_scheduler_config *c)
{
    *c = (struct eg_scheduler_config){
        .automatic = false,
        .quick_interval_ms = (int64_t)EG_DEFAULT_QUICK_SYNC_INTERVAL_S * 1000,
        .full_interval_ms = (int64_t)EG_DEFAULT_FULL_SYNC_INTERVAL_S * 1000,
        .stats_per_sync = EG_INVENTORY_DEFAULT_STATS,
        .stats_interval_ms = EG_INVENTORY_DEFAULT_STATS_GAP,
        .mailbox_reads_per_sync = EG_INVENTORY_DEFAULT_MBX_READS,
    };
}

static int64_t member_int(const json_t *o, const char *k, int64_t dflt, int64_t lo, int64_t hi)
{
    const json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return dflt;
    int64_t n = (int64_t)json_integer_value(v);
    return n < lo || n > hi ? dflt : n;
}

int eg_scheduler_config_from_target(void *ctx, struct eg_scheduler_config *ret)
{
    struct eg_target *t = ctx;
    json_t *doc = NULL;
    if (!t || !ret)
        return EG_EINVAL;
    config_defaults(ret);
    int rc = eg_target_get(t, &doc);
    if (rc == EG_ENOTFOUND)
        return 0; /* the bootstrap bridge: syncs on request only */
    if (rc < 0)
        return rc;
    const json_t *sch = json_object_get(doc, "schedule"), *inv = json_object_get(doc, "inventory");
    const char *kind = json_string_value(json_object_get(json_object_get(doc, "target"), "kind"));
    /* A dry-run target has no Exchange to inventory: on request only. */
    ret->automatic = !kind || strcmp(kind, "dryrun") != 0;
    ret->revision = eg_target_revision(t);
    ret->quick_interval_ms =
        1000 * member_int(sch, "quick_sync_interval_s", EG_DEFAULT_QUICK_SYNC_INTERVAL_S,
                          EG_MIN_QUICK_SYNC_INTERVAL_S, EG_MAX_QUICK_SYNC_INTERVAL_S);
    ret->full_interval_ms =
        1000 * member_int(sch, "full_sync_interval_s", EG_DEFAULT_FULL_SYNC_INTERVAL_S,
                          EG_MIN_FULL_SYNC_INTERVAL_S, EG_MAX_FULL_SYNC_INTERVAL_S);
    ret->heal_drift = json_is_true(json_object_get(inv, "heal_drift"));
    ret->stats_per_sync = (unsigned)member_int(inv, "stats_per_sync", EG_INVENTORY_DEFAULT_STATS, 0,
                                               EG_INVENTORY_MAX_STATS);
    ret->stats_interval_ms = member_int(inv, "stats_interval_ms", EG_INVENTORY_DEFAULT_STATS_GAP, 0,
                                        EG_INVENTORY_MAX_STATS_GAP);
    json_decref(doc);
    return 0;
}

/* ---- running one sync ---------------------------------------------------------------------- */

static void kept_set(struct kept *k, const struct req *r, const struct eg_inv_sync_result *res)
{
    eg_free(k->mailbox);
    k->set = true;
    k->id = r->id;
    k->mailbox = r->mailbox ? eg_strdup(r->mailbox) : NULL; /* NULL without memory: shown org */
    k->r = *res;
}

static void kept_clear(struct kept *k)
{
    eg_free(k->mailbox);
    memset(k, 0, sizeof *k);
}

/* Run the sync in s->running (lock not held). */
static void run_sync(struct eg_scheduler *s, bool scheduled)
{
    struct eg_inv_sync_result res;
    struct eg_inventory_meta meta;
    /* The configuration as it is now (a PUT may have come since the last cycle): a requested
     * sync of a new target is its first full sync. */
    struct eg_scheduler_config fresh;
    bool have_cfg = s->o.config(s->o.config_ctx, &fresh) == 0;
    pthread_mutex_lock(&s->lock);
    if (have_cfg)
        s->cfg = fresh;
    struct req r = s->running;
    struct eg_scheduler_config cfg = s->cfg;
    pthread_mutex_unlock(&s->lock);

    atomic_store(&s->progress, 0);
    struct eg_inv_sync_opts so = {
        .mode = r.mode,
        .mailbox = r.mailbox,
        .bridge = s->o.bridge,
        .outbox = s->o.outbox,
        .queue = s->o.queue,
        .heal_drift = cfg.heal_drift,
        .healed = s->o.healed,
        .healed_ctx = s->o.healed_ctx,
        .stats_per_sync = cfg.stats_per_sync,
        .stats_interval_ms = cfg.stats_interval_ms,
        .mailbox_reads_per_sync = cfg.mailbox_reads_per_sync,
        .since_margin_ms = EG_INVENTORY_SINCE_MARGIN_MS,
        .target_revision = cfg.revision,
        .sync_id = r.id,
        .stop = &s->stop_sync,
        .progress = &s->progress,
    };
    int rc = eg_inventory_sync(s->o.inventory, &so, &res);
    bool have_meta = eg_inventory_meta(s->o.inventory, &meta) == 0;

    pthread_mutex_lock(&s->lock);
    int m = res.mode == EG_INV_FULL ? 1 : 0;
    double secs = (double)(res.finished_ms - res.started_ms) / 1000.0;
    s->syncs[m][rc == 0 ? 1 : 0]++;
    size_t b = 0;
    while (b < N_SYNC_BUCKETS && secs > sync_buckets[b])
        b++;
    s->dur[m].counts[b]++;
    s->dur[m].count++;
    s->dur[m].sum += secs > 0 ? secs : 0;
    s->deltas[0] += (int64_t)res.added;
    s->deltas[1] += (int64_t)res.changed;
    s->deltas[2] += (int64_t)res.removed;
    s->deltas[3] += (int64_t)res.drift;
    s->deltas[4] += (int64_t)res.healed;
    if (have_meta)
        s->devices = meta.devices;
    kept_set(&s->last, &r, &res);
    if (!r.mailbox)
        kept_set(res.mode == EG_INV_FULL ? &s->last_full : &s->last_quick, &r, &res);
    if (scheduled && rc != 0) {
        if (res.mode == EG_INV_FULL)
            s->failed_full_ms = eg_now_ms();
        else
            s->failed_quick_ms = eg_now_ms();
    }
    if (s->done_id < r.id)
        s->done_id = r.id;
    eg_free(s->running.mailbox);
    memset(&s->running, 0, sizeof s->running);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* When each automatic sync is due (wall-clock ms), from the store and the configuration. Lock
 * held. */
static void due_times(struct eg_scheduler *s, const struct eg_inventory_meta *meta, int64_t now)
{
    const struct eg_scheduler_config *c = &s->cfg;
    if (!c->automatic) {
        s->next_full_ms = s->next_quick_ms = 0;
        return;
    }
    int64_t full = meta->last_full_start_ms + c->full_interval_ms;
    int64_t quick =
        max64(meta->last_full_start_ms, meta->last_quick_start_ms) + c->quick_interval_ms;
    if (!meta->baseline || meta->synced_revision != c->revision) {
        /* A target without a full sync yet (new, or changed by a PUT): its first full sync one
         * quick interval after it was seen, so that a console that sets the target and then
         * sends commands does not compete with the initial inventory (a request starts it at
         * once). Until then there is nothing for a quick sync to compare with. */
        if (s->new_rev != c->revision || !s->new_rev_ms) {
            s->new_rev = c->revision;
            s->new_rev_ms = now;
        }
        full = quick = s->new_rev_ms + c->quick_interval_ms;
    }
    if (s->failed_full_ms)
        full = max64(full, s->failed_full_ms + EG_SCHEDULER_RETRY_MS);
    if (s->failed_quick_ms)
        quick = max64(quick, s->failed_quick_ms + EG_SCHEDULER_RETRY_MS);
    s->next_full_ms = full;
    s->next_quick_ms = quick;
}

static void timed_wait(struct eg_scheduler *s, int64_t ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cv, &s->lock, &ts);
}

static void *sched_main(void *arg)
{
    struct eg_scheduler *s = arg;
    int64_t poll = s->o.poll_ms > 0 ? s->o.poll_ms : EG_SCHEDULER_CONFIG_POLL_MS;

    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        if (s->queued.set) {
            s->running = s->queued;
            s->running.started_ms = eg_now_ms();
            memset(&s->queued, 0, sizeof s->queued);
            pthread_mutex_unlock(&s->lock);
            run_sync(s, false);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        pthread_mutex_unlock(&s->lock);
        struct eg_scheduler_config cfg;
        struct eg_inventory_meta meta;
        bool have_cfg = s->o.config(s->o.config_ctx, &cfg) == 0;
        bool have_meta = eg_inventory_meta(s->o.inventory, &meta) == 0;
        pthread_mutex_lock(&s->lock);
        if (s->stopping)
            break;
        if (s->queued.set)
            continue;
        if (have_cfg)
            s->cfg = cfg;
        int64_t now = eg_now_ms(), wait = poll;
        if (have_meta) {
            s->devices = meta.devices;
            due_times(s, &meta, now);
        }
        if (have_meta && s->cfg.automatic) {
            bool full = now >= s->next_full_ms, quick = now >= s->next_quick_ms;
            if (full || quick) {
                s->running = (struct req){.set = true,
                                          .id = s->next_id++,
                                          .mode = full ? EG_INV_FULL : EG_INV_QUICK,
                                          .started_ms = now};
                pthread_mutex_unlock(&s->lock);
                run_sync(s, true);
                pthread_mutex_lock(&s->lock);
                continue;
            }
            int64_t next = s->next_full_ms < s->next_quick_ms ? s->next_full_ms : s->next_quick_ms;
            if (next - now < wait)
                wait = next - now;
        }
        timed_wait(s, wait);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- life ----------------------------------------------------------------------------------- */

int eg_scheduler_start(const struct eg_scheduler_opts *o, struct eg_scheduler **ret)
{
    struct eg_scheduler *s = NULL;
    struct eg_inventory_meta meta;
    pthread_condattr_t ca;
    if (!o || !o->inventory || !o->bridge || !o->bridge->ops || !o->config || !ret ||
        o->poll_ms < 0)
        return EG_EINVAL;
    if (!(s = eg_calloc(1, sizeof *s)))
        return EG_ENOMEM;
    s->o = *o;
    config_defaults(&s->cfg);
    struct eg_scheduler_config cfg;
    if (o->config(o->config_ctx, &cfg) == 0)
        s->cfg = cfg;
    s->next_id = 1;
    if (eg_inventory_meta(o->inventory, &meta) == 0) {
        s->next_id = meta.generation + 1;
        s->devices = meta.devices;
    }
    s->done_id = s->next_id - 1;
    atomic_init(&s->stop_sync, false);
    atomic_init(&s->progress, 0);
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->lock);
        eg_free(s);
        return EG_ENOMEM;
    }
    s->started = true;
    *ret = s;
    return 0;
}

void eg_scheduler_stop(struct eg_scheduler *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    atomic_store(&s->stop_sync, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
    if (s->started)
        pthread_join(s->thread, NULL);
    eg_free(s->queued.mailbox);
    eg_free(s->running.mailbox);
    kept_clear(&s->last);
    kept_clear(&s->last_full);
    kept_clear(&s->last_quick);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->lock);
    eg_free(s);
}

/* ---- requests ------------------------------------------------------------------------------ */

int eg_scheduler_trigger(struct eg_scheduler *s, enum eg_inv_mode mode, const char *mailbox,
                         struct eg_sync_ticket *ret)
{
    if (!s || !ret || (mode != EG_INV_QUICK && mode != EG_INV_FULL) || (mailbox && !*mailbox))
        return EG_EINVAL;
    char *copy = mailbox ? eg_strdup(mailbox) : NULL;
    if (mailbox && !copy)
        return EG_ENOMEM;
    memset(ret, 0, sizeof *ret);
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        eg_free(copy);
        return EG_ESHUTDOWN;
    }
    struct req *q = &s->queued;
    if (q->set) {
        /* Merge: full wins; another scope (or the org) makes it the whole org. */
        ret->coalesced = true;
        if (mode == EG_INV_FULL)
            q->mode = EG_INV_FULL;
        if (q->mailbox && (!copy || strcasecmp(q->mailbox, copy) != 0))
            eg_freep(&q->mailbox);
        eg_free(copy);
    } else {
        *q = (struct req){.set = true, .id = s->next_id++, .mode = mode, .mailbox = copy};
    }
    ret->id = q->id;
    ret->mode = q->mode;
    ret->whole_org = q->mailbox == NULL;
    ret->queued = s->running.set;
    ret->running_id = s->running.set ? s->running.id : 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int eg_scheduler_wait(struct eg_scheduler *s, int64_t id, int64_t timeout_ms)
{
    if (!s || id <= 0 || timeout_ms < 0)
        return EG_EINVAL;
    int64_t end = eg_mono_ms() + timeout_ms;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (s->done_id < id) {
        if (s->stopping) {
            rc = EG_ESHUTDOWN;
            break;
        }
        int64_t left = end - eg_mono_ms();
        if (left <= 0) {
            rc = EG_ETIMEDOUT;
            break;
        }
        timed_wait(s, left);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int eg_scheduler_result(struct eg_scheduler *s, int64_t id, struct eg_inv_sync_result *ret)
{
    int rc = EG_ENOTFOUND;
    if (!s || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&s->lock);
    const struct kept *k[3] = {&s->last, &s->last_full, &s->last_quick};
    for (int i = 0; i < 3 && rc; i++)
        if (k[i]->set && k[i]->id == id) {
            *ret = k[i]->r;
            rc = 0;
        }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- status and metrics -------------------------------------------------------------------- */

static json_t *time_or_null(int64_t ms)
{
    char buf[40];
    return ms > 0 ? json_string(eg_format_time(ms, buf, sizeof buf)) : json_null();
}

static json_t *kept_json(const struct kept *k)
{
    if (!k->set)
        return json_null();
    const struct eg_inv_sync_result *r = &k->r;
    json_t *o = json_pack(
        "{s:I, s:s, s:b, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:b}",
        "id", (json_int_t)k->id, "mode", eg_inv_mode_name(r->mode), "ok", r->rc == 0, "started_at",
        time_or_null(r->started_ms), "finished_at", time_or_null(r->finished_ms), "duration_ms",
        (json_int_t)(r->finished_ms - r->started_ms), "devices", (json_int_t)r->devices,
        "mailboxes", (json_int_t)r->mailboxes, "added", (json_int_t)r->added, "changed",
        (json_int_t)r->changed, "removed", (json_int_t)r->removed, "unchanged",
        (json_int_t)r->unchanged, "drift", (json_int_t)r->drift, "healed", (json_int_t)r->healed,
        "stats", (json_int_t)r->stats, "refused", (json_int_t)r->refused, "resync", r->resync);
    if (o && k->mailbox && json_object_set_new(o, "mailbox", json_string(k->mailbox)) < 0)
        json_decref(o), o = NULL;
    if (o && r->rc != 0 &&
        json_object_set_new(
            o, "error", json_pack("{s:s, s:s}", "code", r->error_code, "message", r->error)) < 0)
        json_decref(o), o = NULL;
    return o;
}

static json_t *req_json(const struct req *r, bool running, uint64_t progress)
{
    if (!r->set)
        return json_null();
    json_t *o = json_pack("{s:I, s:s}", "id", (json_int_t)r->id, "mode", eg_inv_mode_name(r->mode));
    if (o && r->mailbox && json_object_set_new(o, "mailbox", json_string(r->mailbox)) < 0)
        json_decref(o), o = NULL;
    if (o && running &&
        (json_object_set_new(o, "started_at", time_or_null(r->started_ms)) < 0 ||
         json_object_set_new(o, "devices", json_integer((json_int_t)progress)) < 0))
        json_decref(o), o = NULL;
    return o;
}

json_t *eg_scheduler_status(struct eg_scheduler *s)
{
    if (!s)
        return NULL;
    pthread_mutex_lock(&s->lock);
    bool automatic = s->cfg.automatic;
    json_t *o =
        json_pack("{s:b, s:o*, s:o*, s:o*, s:o*, s:o*, s:o, s:o, s:I}", "automatic", automatic,
                  "running", req_json(&s->running, true, atomic_load(&s->progress)), "queued",
                  req_json(&s->queued, false, 0), "last", kept_json(&s->last), "last_full",
                  kept_json(&s->last_full), "last_quick", kept_json(&s->last_quick), "next_full_at",
                  automatic ? time_or_null(s->next_full_ms) : json_null(), "next_quick_at",
                  automatic ? time_or_null(s->next_quick_ms) : json_null(), "devices",
                  (json_int_t)s->devices);
    pthread_mutex_unlock(&s->lock);
    return o;
}

/* A growing text buffer (as in agent/metrics.c). */
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

int eg_scheduler_metrics(struct eg_scheduler *s, char **text)
{
    struct buf b = {0};
    static const char *const modes[2] = {"quick", "full"};
    if (!s || !text)
        return EG_EINVAL;
    if (*text)
        put(&b, "%s", *text);
    pthread_mutex_lock(&s->lock);
    put(&b, "# HELP easgate_inventory_syncs_total Inventory syncs by mode and outcome.\n"
            "# TYPE easgate_inventory_syncs_total counter\n");
    for (int m = 0; m < 2; m++)
        for (int ok = 1; ok >= 0; ok--)
            put(&b, "easgate_inventory_syncs_total{mode=\"%s\",outcome=\"%s\"} %" PRId64 "\n",
                modes[m], ok ? "ok" : "failed", s->syncs[m][ok]);
    put(&b, "# HELP easgate_inventory_sync_duration_seconds Duration of inventory syncs.\n"
            "# TYPE easgate_inventory_sync_duration_seconds histogram\n");
    for (int m = 0; m < 2; m++) {
        int64_t cum = 0;
        for (size_t k = 0; k < N_SYNC_BUCKETS; k++) {
            cum += s->dur[m].counts[k];
            put(&b,
                "easgate_inventory_sync_duration_seconds_bucket{mode=\"%s\",le=\"%g\"} %" PRId64
                "\n",
                modes[m], sync_buckets[k], cum);
        }
        cum += s->dur[m].counts[N_SYNC_BUCKETS];
        put(&b,
            "easgate_inventory_sync_duration_seconds_bucket{mode=\"%s\",le=\"+Inf\"} %" PRId64 "\n",
            modes[m], cum);
        put(&b, "easgate_inventory_sync_duration_seconds_sum{mode=\"%s\"} %.3f\n", modes[m],
            s->dur[m].sum);
        put(&b, "easgate_inventory_sync_duration_seconds_count{mode=\"%s\"} %" PRId64 "\n",
            modes[m], s->dur[m].count);
    }
    put(&b, "# HELP easgate_inventory_deltas_total Differences the inventory syncs found.\n"
            "# TYPE easgate_inventory_deltas_total counter\n");
    for (int i = 0; i < 5; i++)
        put(&b, "easgate_inventory_deltas_total{kind=\"%s\"} %" PRId64 "\n", delta_names[i],
            s->deltas[i]);
    put(&b,
        "# HELP easgate_inventory_devices Devices in the inventory store.\n"
        "# TYPE easgate_inventory_devices gauge\neasgate_inventory_devices %" PRId64 "\n"
        "# HELP easgate_inventory_sync_running 1 while an inventory sync runs.\n"
        "# TYPE easgate_inventory_sync_running gauge\neasgate_inventory_sync_running %d\n",
        s->devices, s->running.set ? 1 : 0);
    pthread_mutex_unlock(&s->lock);
    if (b.failed) {
        eg_free(b.p);
        return EG_ENOMEM;
    }
    eg_free(*text);
    *text = b.p;
    return 0;
}
