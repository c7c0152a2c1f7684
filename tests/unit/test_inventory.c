/* test_inventory.c - the inventory store and its syncs against a fake bridge, with the real
 * outbox and journal: added / changed / removed / unchanged deltas, a failed sync that must not
 * report removals, quick syncs (WhenChanged window, list membership of changed mailboxes),
 * drift and its healing through the journal, the worker hooks, device statistics (new devices,
 * pending wipes, the budget), resync snapshots, paging of the read API, and the scheduler's
 * coalescing and stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/command.h"
#include "agent/inventory.h"
#include "agent/outbox.h"
#include "agent/queue.h"
#include "agent/scheduler.h"
#include "agent/worker.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/bridge.h"

/* ---- a fake Exchange ------------------------------------------------------------------------ */

#define MAXD 64
#define MAXM 8
#define MAXL 8

struct fdev {
    bool present;
    char mbx[64], id[64], os[32], state[32];
    int64_t first_sync, when_changed;
    /* statistics */
    char wipe[32];
    int64_t last_success, wreq, wack;
};

struct fmbx {
    char identity[64], smtp[64];
    char allowed[MAXL][64], blocked[MAXL][64];
    size_t na, nb;
    int64_t when_changed;
};

struct fake {
    pthread_mutex_t lock;
    struct fdev dev[MAXD];
    size_t n_dev;
    struct fmbx mbx[MAXM];
    size_t n_mbx;
    int fail_after;     /* the device stream fails after this many devices (-1 = never) */
    int delay_ms;       /* per device streamed */
    bool no_lists;      /* mailbox_lists answers unsupported */
    int64_t page_since; /* since_ms of the last inventory_page */
    int64_t lists_since;
    int pages, lists, stats;
    char last_stats_identity[200];
};

static struct fdev *fake_add(struct fake *f, const char *mbx, const char *id, const char *os)
{
    struct fdev *d = &f->dev[f->n_dev++];
    memset(d, 0, sizeof *d);
    d->present = true;
    snprintf(d->mbx, sizeof d->mbx, "%s", mbx);
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->os, sizeof d->os, "%s", os);
    snprintf(d->state, sizeof d->state, "Allowed");
    snprintf(d->wipe, sizeof d->wipe, "DeviceOk");
    d->first_sync = 1700000000000LL + (int64_t)f->n_dev * 1000;
    d->when_changed = 1700000000000LL;
    d->last_success = 1700000500000LL;
    return d;
}

static struct fdev *fake_find(struct fake *f, const char *id)
{
    for (size_t i = 0; i < f->n_dev; i++)
        if (strcmp(f->dev[i].id, id) == 0)
            return &f->dev[i];
    return NULL;
}

/* A device the test set up (aborts when there is none). */
static struct fdev *dev_of(struct fake *f, const char *id)
{
    struct fdev *d = fake_find(f, id);
    if (!d)
        abort();
    return d;
}

static struct fmbx *fake_mbx(struct fake *f, const char *identity, const char *smtp)
{
    struct fmbx *m = &f->mbx[f->n_mbx++];
    memset(m, 0, sizeof *m);
    snprintf(m->identity, sizeof m->identity, "%s", identity);
    snprintf(m->smtp, sizeof m->smtp, "%s", smtp);
    m->when_changed = 1700000000000LL;
    return m;
}

static struct fmbx *mbx_find(struct fake *f, const char *name)
{
    for (size_t i = 0; i < f->n_mbx; i++)
        if (strcasecmp(f->mbx[i].identity, name) == 0 || strcasecmp(f->mbx[i].smtp, name) == 0)
            return &f->mbx[i];
    abort();
}

static void record_of(const struct fdev *d, char *ident, size_t size, struct eg_device_record *r)
{
    snprintf(ident, size, "%s/ExchangeActiveSyncDevices/iPhone\xc2\xa7%s", d->mbx, d->id);
    *r = (struct eg_device_record){.mailbox = d->mbx,
                                   .mailbox_identity = d->mbx,
                                   .device_id = d->id,
                                   .identity = ident,
                                   .device_type = "iPhone",
                                   .model = "iPhone15,2",
                                   .os = d->os,
                                   .user_agent = "Apple-iPhone15C2/2104.2",
                                   .access_state = d->state,
                                   .access_reason = "Global",
                                   .first_sync_ms = d->first_sync,
                                   .when_changed_ms = d->when_changed};
}

/* Does name (any identity form) name the mailbox with this Identity? */
static bool same_mailbox(struct fake *f, const char *name, const char *identity)
{
    if (strcasecmp(name, identity) == 0)
        return true;
    pthread_mutex_lock(&f->lock);
    bool same = false;
    for (size_t i = 0; i < f->n_mbx && !same; i++)
        same =
            strcasecmp(f->mbx[i].smtp, name) == 0 && strcasecmp(f->mbx[i].identity, identity) == 0;
    pthread_mutex_unlock(&f->lock);
    return same;
}

static int f_page(void *impl, const struct eg_inventory_query *q, const char *cursor,
                  eg_device_cb cb, void *cb_ctx, char **ret_next, struct eg_bridge_error *err)
{
    struct fake *f = impl;
    int delivered = 0, rc = 0;
    pthread_mutex_lock(&f->lock);
    f->pages++;
    f->page_since = q->since_ms;
    size_t n = f->n_dev;
    pthread_mutex_unlock(&f->lock);
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct fdev d;
        pthread_mutex_lock(&f->lock);
        d = f->dev[i];
        int fail_after = f->fail_after, delay = f->delay_ms;
        pthread_mutex_unlock(&f->lock);
        if (!d.present || (q->mailbox && !same_mailbox(f, q->mailbox, d.mbx)))
            continue;
        if (q->since_ms > 0 && d.when_changed <= q->since_ms)
            continue;
        if (fail_after >= 0 && delivered >= fail_after) {
            eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true, "the fake lost its connection");
            return EG_EUNAVAIL;
        }
        if (delay)
            usleep((useconds_t)delay * 1000);
        char ident[200];
        struct eg_device_record r;
        record_of(&d, ident, sizeof ident, &r);
        rc = cb(cb_ctx, &r);
        delivered++;
    }
    if (rc == 0)
        *ret_next = NULL;
    return rc;
}

static int f_lists(void *impl, const struct eg_mailbox_query *q, eg_mailbox_cb cb, void *cb_ctx,
                   struct eg_bridge_error *err)
{
    struct fake *f = impl;
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    f->lists++;
    f->lists_since = q->since_ms;
    if (f->no_lists) {
        pthread_mutex_unlock(&f->lock);
        eg_bridge_error_set(err, EG_BERR_UNSUPPORTED, false, "no lists here");
        return EG_EUNSUPPORTED;
    }
    struct fmbx copy[MAXM];
    size_t n = f->n_mbx;
    memcpy(copy, f->mbx, sizeof copy);
    pthread_mutex_unlock(&f->lock);
    bool any = false;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct fmbx *m = &copy[i];
        if (q->mailbox && strcasecmp(q->mailbox, m->identity) && strcasecmp(q->mailbox, m->smtp))
            continue;
        if (q->since_ms > 0 && m->when_changed <= q->since_ms)
            continue;
        const char *a[MAXL], *b[MAXL];
        for (size_t k = 0; k < m->na; k++)
            a[k] = m->allowed[k];
        for (size_t k = 0; k < m->nb; k++)
            b[k] = m->blocked[k];
        struct eg_mailbox_record r = {.identity = m->identity,
                                      .primary_smtp = m->smtp,
                                      .allowed = a,
                                      .n_allowed = m->na,
                                      .blocked = b,
                                      .n_blocked = m->nb,
                                      .when_changed_ms = m->when_changed};
        rc = cb(cb_ctx, &r);
        any = true;
    }
    if (rc == 0 && q->mailbox && !any) {
        eg_bridge_error_set(err, EG_BERR_MAILBOX_NOT_FOUND, false, "no mailbox %s", q->mailbox);
        return EG_EREMOTE;
    }
    return rc;
}

static int f_stats(void *impl, const char *mailbox, const char *device_id, const char *identity,
                   eg_device_cb cb, void *cb_ctx, struct eg_bridge_error *err)
{
    struct fake *f = impl;
    pthread_mutex_lock(&f->lock);
    f->stats++;
    snprintf(f->last_stats_identity, sizeof f->last_stats_identity, "%s", identity ? identity : "");
    struct fdev *p = fake_find(f, device_id);
    struct fdev d = p ? *p : (struct fdev){0};
    pthread_mutex_unlock(&f->lock);
    if (!p || !d.present) {
        eg_bridge_error_set(err, EG_BERR_DEVICE_NOT_FOUND, false, "no device %s", device_id);
        return EG_EREMOTE;
    }
    char ident[200];
    struct eg_device_record r;
    record_of(&d, ident, sizeof ident, &r);
    r.wipe_status = d.wipe;
    r.last_success_sync_ms = d.last_success;
    r.wipe_request_ms = d.wreq;
    r.wipe_ack_ms = d.wack;
    return cb(cb_ctx, &r);
}

/* List edits and wipes always succeed (for the worker-hook test). */
static int f_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                       struct eg_bridge_error *err)
{
    return 0;
}

static int f_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                  const char *const *notify, size_t n_notify, json_t *actions,
                  struct eg_bridge_error *err)
{
    return 0;
}

static const struct eg_bridge_ops fake_ops = {.name = "fake",
                                              .list_edit = f_list_edit,
                                              .wipe = f_wipe,
                                              .inventory_page = f_page,
                                              .mailbox_lists = f_lists,
                                              .device_stats = f_stats};

/* ---- fixture -------------------------------------------------------------------------------- */

struct fx {
    char dir[64];
    struct eg_inventory *inv;
    struct eg_outbox *ob;
    struct eg_queue *q;
    struct fake f;
    struct eg_bridge b;
    int healed_calls;
};

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    snprintf(x->dir, sizeof x->dir, "/tmp/eg-test-inv.XXXXXX");
    if (!x || !mkdtemp(x->dir))
        return -1;
    if (eg_inventory_open(x->dir, &x->inv) < 0 || eg_outbox_open(x->dir, &x->ob) < 0 ||
        eg_queue_open(x->dir, &x->q) < 0)
        return -1;
    pthread_mutex_init(&x->f.lock, NULL);
    x->f.fail_after = -1;
    x->b = (struct eg_bridge){&fake_ops, &x->f};
    /* Two mailboxes with lists, three devices. */
    struct fmbx *m = fake_mbx(&x->f, "corp/Users/Alice", "alice@corp.example");
    snprintf(m->allowed[m->na++], 64, "DEVA1");
    struct fmbx *n = fake_mbx(&x->f, "corp/Users/Bob", "bob@corp.example");
    snprintf(n->blocked[n->nb++], 64, "devb1");
    fake_add(&x->f, "corp/Users/Alice", "DevA1", "iOS 17.1");
    fake_add(&x->f, "corp/Users/Alice", "DevA2", "iOS 17.2");
    fake_add(&x->f, "corp/Users/Bob", "DevB1", "Android 14");
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    char cmd[128];
    eg_inventory_close(x->inv);
    eg_outbox_close(x->ob);
    eg_queue_close(x->q);
    pthread_mutex_destroy(&x->f.lock);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", x->dir);
    if (system(cmd) != 0)
        return -1;
    free(x);
    return 0;
}

static void on_healed(void *ctx)
{
    ((struct fx *)ctx)->healed_calls++;
}

static struct eg_inv_sync_opts opts(struct fx *x, enum eg_inv_mode mode)
{
    return (struct eg_inv_sync_opts){.mode = mode,
                                     .bridge = &x->b,
                                     .outbox = x->ob,
                                     .queue = x->q,
                                     .healed = on_healed,
                                     .healed_ctx = x,
                                     .stats_per_sync = 10,
                                     .mailbox_reads_per_sync = 10,
                                     .since_margin_ms = 1000,
                                     .target_revision = 1,
                                     .sync_id = 7};
}

static void sync_ok(struct fx *x, enum eg_inv_mode mode, struct eg_inv_sync_result *r)
{
    struct eg_inv_sync_opts o = opts(x, mode);
    int rc = eg_inventory_sync(x->inv, &o, r);
    if (rc != 0)
        fail_msg("sync failed: %s: %s (%s)", eg_strerror(rc), r->error_code, r->error);
}

/* Every record waiting in the outbox, in order: [{"kind", "payload"}], acknowledged. */
static json_t *drain(struct fx *x)
{
    json_t *all = json_array();
    for (;;) {
        struct eg_outbox_batch *b = NULL;
        int rc = eg_outbox_next_batch(x->ob, false, &b);
        if (rc == EG_ENOTFOUND)
            break;
        assert_int_equal(rc, 0);
        for (size_t i = 0; i < b->n_records; i++) {
            json_t *p = json_loads(b->records[i].payload, 0, NULL);
            assert_non_null(p);
            json_array_append_new(
                all, json_pack("{s:s, s:o}", "kind", b->records[i].kind, "payload", p));
        }
        assert_int_equal(eg_outbox_ack(x->ob, b->seq), 0);
        eg_outbox_batch_free(b);
    }
    return all;
}

/* The records of one kind. */
static json_t *of_kind(const json_t *all, const char *kind)
{
    json_t *v = json_array(), *e;
    size_t i;
    json_array_foreach(all, i, e) if (strcmp(json_string_value(json_object_get(e, "kind")), kind) ==
                                      0) json_array_append(v, json_object_get(e, "payload"));
    return v;
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The device record of device_id in a page of the read API. */
static json_t *listed(struct fx *x, const char *device_id)
{
    struct eg_inv_query q = {.limit = 1000};
    json_t *arr = NULL, *e, *hit = NULL;
    char *next = NULL;
    size_t i;
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), 0);
    assert_null(next);
    json_array_foreach(arr, i, e) if (strcmp(str(e, "device_id"), device_id) == 0) hit =
        json_incref(e);
    json_decref(arr);
    return hit;
}

static size_t listed_count(struct fx *x)
{
    struct eg_inv_query q = {.limit = 1000};
    json_t *arr = NULL;
    char *next = NULL;
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), 0);
    size_t n = json_array_size(arr);
    json_decref(arr);
    return n;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_initial_full_sync(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_QUICK, &r); /* no baseline: runs as full */
    assert_int_equal(r.mode, EG_INV_FULL);
    assert_int_equal(r.devices, 3);
    assert_int_equal(r.added, 3);
    assert_int_equal(r.changed + r.removed + r.unchanged, 0);
    assert_int_equal(r.mailboxes, 2);
    assert_int_equal(r.stats, 0); /* the first full sync fetches no statistics */
    json_t *all = drain(x), *added = of_kind(all, EG_OUTBOX_DEVICE_ADDED);
    json_t *done = of_kind(all, EG_OUTBOX_SYNC);
    assert_int_equal(json_array_size(added), 3);
    assert_int_equal(json_array_size(done), 1);
    json_t *sc = json_array_get(done, 0);
    assert_true(json_is_true(json_object_get(sc, "ok")));
    assert_int_equal(json_integer_value(json_object_get(sc, "added")), 3);
    assert_int_equal(json_integer_value(json_object_get(sc, "sync_id")), 7);
    assert_string_equal(str(sc, "mode"), "full");
    /* the last record is sync.completed */
    assert_string_equal(str(json_array_get(all, json_array_size(all) - 1), "kind"), EG_OUTBOX_SYNC);
    json_t *a1 = listed(x, "DevA1"), *b1 = listed(x, "DevB1"), *a2 = listed(x, "DevA2");
    assert_string_equal(str(a1, "mailbox"), "alice@corp.example");
    assert_string_equal(str(a1, "mailbox_identity"), "corp/Users/Alice");
    assert_string_equal(str(a1, "list"), "allowed"); /* DEVA1 on the list, case ignored */
    assert_string_equal(str(b1, "list"), "blocked");
    assert_string_equal(str(a2, "list"), "none");
    assert_string_equal(str(a2, "os"), "iOS 17.2");
    assert_true(json_is_string(json_object_get(a2, "first_sync")));
    assert_true(json_is_null(json_object_get(a2, "wipe_requested_at")));
    assert_non_null(str(a2, "first_seen"));
    json_decref(a1);
    json_decref(a2);
    json_decref(b1);
    json_decref(added);
    json_decref(done);
    json_decref(all);
    struct eg_inventory_meta m;
    assert_int_equal(eg_inventory_meta(x->inv, &m), 0);
    assert_true(m.baseline);
    assert_int_equal(m.devices, 3);
    assert_int_equal(m.synced_revision, 1);
}

static void test_added_changed_removed_unchanged(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    /* In Exchange: A2 upgraded, B1 removed, a new device for Bob. */
    snprintf(dev_of(&x->f, "DevA2")->os, 32, "iOS 18.0");
    dev_of(&x->f, "DevB1")->present = false;
    fake_add(&x->f, "corp/Users/Bob", "DevB2", "Android 15");
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.added, 1);
    assert_int_equal(r.changed, 1);
    assert_int_equal(r.removed, 1);
    assert_int_equal(r.unchanged, 1);
    json_t *all = drain(x);
    json_t *add = of_kind(all, EG_OUTBOX_DEVICE_ADDED),
           *chg = of_kind(all, EG_OUTBOX_DEVICE_CHANGED),
           *rem = of_kind(all, EG_OUTBOX_DEVICE_REMOVED);
    assert_int_equal(json_array_size(add), 1);
    assert_string_equal(str(json_array_get(add, 0), "device_id"), "DevB2");
    assert_int_equal(json_array_size(chg), 1);
    json_t *c = json_array_get(chg, 0);
    assert_string_equal(str(json_object_get(c, "device"), "device_id"), "DevA2");
    assert_string_equal(str(json_object_get(c, "device"), "os"), "iOS 18.0");
    json_t *fields = json_object_get(c, "changed");
    assert_int_equal(json_array_size(fields), 1);
    assert_string_equal(json_string_value(json_array_get(fields, 0)), "os");
    assert_int_equal(json_array_size(rem), 1);
    assert_string_equal(str(json_array_get(rem, 0), "device_id"), "DevB1");
    assert_string_equal(str(json_array_get(rem, 0), "mailbox"), "bob@corp.example");
    json_decref(add);
    json_decref(chg);
    json_decref(rem);
    json_decref(all);
    assert_int_equal(listed_count(x), 3);
    json_t *gone = listed(x, "DevB1");
    assert_null(gone);
    /* Nothing changes: nothing but sync.completed. */
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.unchanged, 3);
    all = drain(x);
    assert_int_equal(json_array_size(all), 1);
    json_decref(all);
}

static void test_failed_sync_reports_no_removals(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    dev_of(&x->f, "DevA1")->present = false; /* gone in Exchange... */
    snprintf(dev_of(&x->f, "DevA2")->os, 32, "iOS 18.1");
    x->f.fail_after = 1; /* ...but the stream breaks after one device */
    struct eg_inv_sync_opts o = opts(x, EG_INV_FULL);
    int rc = eg_inventory_sync(x->inv, &o, &r);
    assert_int_equal(rc, EG_EUNAVAIL);
    assert_string_equal(r.error_code, EG_BERR_UNREACHABLE);
    assert_int_equal(r.removed, 0);
    json_t *all = drain(x), *rem = of_kind(all, EG_OUTBOX_DEVICE_REMOVED),
           *done = of_kind(all, EG_OUTBOX_SYNC);
    assert_int_equal(json_array_size(rem), 0);
    assert_int_equal(json_array_size(done), 1);
    assert_true(json_is_false(json_object_get(json_array_get(done, 0), "ok")));
    assert_string_equal(str(json_object_get(json_array_get(done, 0), "error"), "code"),
                        EG_BERR_UNREACHABLE);
    json_decref(rem);
    json_decref(done);
    json_decref(all);
    json_t *still = listed(x, "DevA1");
    assert_non_null(still);
    json_decref(still);
    /* The next good sync removes it. */
    x->f.fail_after = -1;
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.removed, 1);
    all = drain(x);
    rem = of_kind(all, EG_OUTBOX_DEVICE_REMOVED);
    assert_int_equal(json_array_size(rem), 1);
    assert_string_equal(str(json_array_get(rem, 0), "device_id"), "DevA1");
    json_decref(rem);
    json_decref(all);
}

static void test_quick_sync(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    int64_t now = eg_now_ms();
    /* A device changed just now, one vanished (a quick sync cannot tell), Alice's lists were
     * edited: DevA2 is now blocked. */
    struct fdev *a1 = dev_of(&x->f, "DevA1");
    snprintf(a1->state, sizeof a1->state, "Quarantined");
    a1->when_changed = now;
    dev_of(&x->f, "DevB1")->present = false;
    struct fmbx *alice = mbx_find(&x->f, "alice@corp.example");
    snprintf(alice->blocked[alice->nb++], 64, "DevA2");
    alice->when_changed = now;
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.mode, EG_INV_QUICK);
    assert_true(x->f.page_since > 0 && x->f.page_since < now);
    assert_true(x->f.lists_since > 0 && x->f.lists_since < now);
    assert_int_equal(r.removed, 0);
    assert_int_equal(r.devices, 1); /* only what changed since the last sync */
    assert_int_equal(r.mailboxes, 1);
    assert_int_equal(r.changed, 2);
    json_t *all = drain(x), *chg = of_kind(all, EG_OUTBOX_DEVICE_CHANGED),
           *rem = of_kind(all, EG_OUTBOX_DEVICE_REMOVED);
    assert_int_equal(json_array_size(rem), 0);
    assert_int_equal(json_array_size(chg), 2);
    json_t *e;
    size_t i;
    bool saw_a1 = false, saw_a2 = false;
    json_array_foreach(chg, i, e)
    {
        json_t *d = json_object_get(e, "device"), *f = json_object_get(e, "changed");
        if (strcmp(str(d, "device_id"), "DevA1") == 0) {
            saw_a1 = true;
            assert_string_equal(str(d, "access_state"), "Quarantined");
            assert_string_equal(json_string_value(json_array_get(f, 0)), "access_state");
        } else {
            saw_a2 = true;
            assert_string_equal(str(d, "device_id"), "DevA2");
            assert_string_equal(str(d, "list"), "blocked");
            assert_int_equal(json_array_size(f), 1);
            assert_string_equal(json_string_value(json_array_get(f, 0)), "list");
        }
    }
    assert_true(saw_a1 && saw_a2);
    json_decref(chg);
    json_decref(rem);
    json_decref(all);
    json_t *b1 = listed(x, "DevB1");
    assert_non_null(b1); /* only a full sync removes */
    json_decref(b1);
    /* A change of target revision makes the next quick sync a full one. */
    struct eg_inv_sync_opts o = opts(x, EG_INV_QUICK);
    o.target_revision = 2;
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.mode, EG_INV_FULL);
    assert_int_equal(r.removed, 1);
    json_decref(drain(x));
}

static void test_drift_and_heal(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    const char *allowed[] = {"DEVA1", "DevA2"}, *blocked[] = {"Rogue"};
    /* The console declared Alice's lists (by her SMTP address); Exchange has other lists. */
    assert_int_equal(
        eg_inventory_note_desired(x->inv, "Alice@corp.example", allowed, 2, blocked, 1), 0);
    /* declared just now: a sync that read the lists before that does not judge them */
    usleep(5000);
    struct eg_inv_sync_opts o = opts(x, EG_INV_FULL);
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.drift, 1);
    assert_int_equal(r.healed, 0);
    json_t *all = drain(x), *drift = of_kind(all, EG_OUTBOX_DRIFT);
    assert_int_equal(json_array_size(drift), 1);
    json_t *d = json_array_get(drift, 0);
    assert_string_equal(str(d, "mailbox"), "Alice@corp.example");
    assert_true(json_is_false(json_object_get(d, "healed")));
    json_t *exp = json_object_get(d, "expected"), *act = json_object_get(d, "actual");
    assert_int_equal(json_array_size(json_object_get(exp, "allowed")), 2);
    assert_int_equal(json_array_size(json_object_get(act, "allowed")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(exp, "blocked"), 0)),
                        "Rogue");
    assert_int_equal(json_array_size(json_object_get(act, "blocked")), 0);
    json_decref(drift);
    json_decref(all);
    int64_t counts[EG_STATE__COUNT];
    assert_int_equal(eg_queue_counts(x->q, counts), 0);
    assert_int_equal(counts[EG_STATE_QUEUED], 0); /* no healing without heal_drift */

    /* With heal_drift: a mailbox.set_devices with the declared sets goes to the journal. */
    o.heal_drift = true;
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.drift, 1);
    assert_int_equal(r.healed, 1);
    assert_int_equal(x->healed_calls, 1);
    all = drain(x);
    drift = of_kind(all, EG_OUTBOX_DRIFT);
    d = json_array_get(drift, 0);
    assert_true(json_is_true(json_object_get(d, "healed")));
    const char *cid = str(d, "command_id");
    assert_non_null(cid);
    struct eg_cmd_record *rec = NULL;
    assert_int_equal(eg_queue_get(x->q, cid, &rec), 0);
    assert_string_equal(rec->type, "mailbox.set_devices");
    assert_string_equal(rec->mailbox_key, "alice@corp.example");
    assert_string_equal(rec->client, "easgate:inventory");
    json_t *body = json_loads(rec->body, 0, NULL);
    struct eg_command *c = NULL;
    struct eg_verr ve;
    assert_int_equal(eg_command_from_json(body, "", &c, &ve), 0); /* what the worker will parse */
    assert_int_equal(c->n_allowed, 2);
    assert_string_equal(c->allowed[0], "DEVA1");
    assert_string_equal(c->allowed[1], "DevA2");
    assert_int_equal(c->n_blocked, 1);
    assert_string_equal(c->blocked[0], "Rogue");
    eg_command_free(c);
    json_decref(body);
    eg_cmd_record_free(rec);
    json_decref(drift);
    json_decref(all);

    /* Exchange now matches (the heal applied): no drift. */
    struct fmbx *alice = mbx_find(&x->f, "alice@corp.example");
    alice->na = 0;
    snprintf(alice->allowed[alice->na++], 64, "deva1");
    snprintf(alice->allowed[alice->na++], 64, "DEVA2");
    snprintf(alice->blocked[alice->nb++], 64, "rogue");
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.drift, 0);
    json_decref(drain(x));

    /* A list edit in flight is not judged; its end moves the device in the declaration. */
    eg_inventory_edit_begin(x->inv, "alice@corp.example");
    snprintf(alice->allowed[alice->na++], 64, "NewPhone");
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.drift, 0);
    const struct eg_device_override ov[] = {{"NewPhone", EG_LIST_ALLOW}};
    struct eg_list_edit e = {.mailbox = "alice@corp.example", .overrides = ov, .n_overrides = 1};
    assert_int_equal(eg_inventory_edit_end(x->inv, &e, true), 0);
    json_t *des = NULL;
    assert_int_equal(eg_inventory_desired(x->inv, "ALICE@corp.example", &des), 0);
    assert_int_equal(json_array_size(json_object_get(des, "allowed")), 3);
    json_decref(des);
    usleep(5000);
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.drift, 0);
    json_decref(drain(x));
    /* A failed edit changes nothing; overrides on a mailbox without declaration add none. */
    assert_int_equal(eg_inventory_edit_end(x->inv, &e, false), 0);
    struct eg_list_edit other = {.mailbox = "bob@corp.example", .overrides = ov, .n_overrides = 1};
    assert_int_equal(eg_inventory_edit_end(x->inv, &other, true), 0);
    assert_int_equal(eg_inventory_desired(x->inv, "bob@corp.example", &des), EG_ENOTFOUND);
}

static void test_declared_mailbox_outside_the_stream(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    /* Carol has no partnership (not in the lists stream filter of a real Exchange; here the fake
     * streams every mailbox, so the declaration names her by an alias the stream does not
     * carry): she is read on her own, by the name the console used. */
    struct fmbx *carol = fake_mbx(&x->f, "corp/Users/Carol", "carol@corp.example");
    snprintf(carol->blocked[carol->nb++], 64, "Stolen1");
    const char *blocked[] = {"Stolen1", "Stolen2"};
    assert_int_equal(eg_inventory_note_desired(x->inv, "corp/Users/Carol", NULL, 0, blocked, 2), 0);
    usleep(5000);
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.drift, 1);
    json_t *all = drain(x), *drift = of_kind(all, EG_OUTBOX_DRIFT);
    assert_string_equal(str(json_array_get(drift, 0), "mailbox"), "corp/Users/Carol");
    json_decref(drift);
    json_decref(all);
    /* Unknown to Exchange: judged without a drift, not read again and again. */
    assert_int_equal(eg_inventory_note_desired(x->inv, "nobody@corp.example", NULL, 0, NULL, 0), 0);
    int lists_before = x->f.lists;
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(x->f.lists - lists_before, 2); /* the stream + nobody */
    assert_int_equal(r.drift, 1);                   /* Carol still differs */
    json_decref(drain(x));
}

static void test_statistics(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.stats, 0);
    json_decref(drain(x));
    /* After the baseline a new device gets its statistics in the sync that adds it, and its one
     * device.added carries them. */
    struct fdev *n = fake_add(&x->f, "corp/Users/Bob", "DevB9", "Android 15");
    n->last_success = 1700000900000LL;
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.added, 1);
    assert_int_equal(r.stats, 1);
    assert_int_equal(r.changed, 0);
    assert_non_null(strstr(x->f.last_stats_identity, "DevB9")); /* the Identity, not resolved */
    json_t *all = drain(x), *chg = of_kind(all, EG_OUTBOX_DEVICE_CHANGED),
           *add = of_kind(all, EG_OUTBOX_DEVICE_ADDED), *fields = NULL;
    assert_int_equal(json_array_size(chg), 0);
    assert_int_equal(json_array_size(add), 1);
    assert_true(json_is_string(json_object_get(json_array_get(add, 0), "last_success_sync")));
    assert_string_equal(str(json_array_get(add, 0), "wipe_status"), "DeviceOk");
    json_decref(add);
    json_decref(chg);
    json_decref(all);
    /* Out of budget: device.added goes out without statistics; they follow in a later sync as
     * device.changed. */
    fake_add(&x->f, "corp/Users/Bob", "DevB10", "Android 15");
    struct eg_inv_sync_opts o0 = opts(x, EG_INV_FULL);
    o0.stats_per_sync = 0;
    assert_int_equal(eg_inventory_sync(x->inv, &o0, &r), 0);
    all = drain(x);
    add = of_kind(all, EG_OUTBOX_DEVICE_ADDED);
    assert_int_equal(json_array_size(add), 1);
    assert_true(json_is_null(json_object_get(json_array_get(add, 0), "last_success_sync")));
    json_decref(add);
    json_decref(all);
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 1);
    assert_int_equal(r.changed, 1);
    json_decref(drain(x));
    /* Not again when nothing is due. */
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 0);
    json_decref(drain(x));

    /* A wipe the worker applied: due at once, re-checked while pending, then resolved. */
    struct fdev *a2 = dev_of(&x->f, "DevA2");
    snprintf(a2->wipe, sizeof a2->wipe, "DeviceWipePending");
    a2->wreq = eg_now_ms() - 1000;
    assert_int_equal(eg_inventory_note_wipe(x->inv, "ALICE@corp.example", "deva2"), 0);
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 1);
    json_t *d = listed(x, "DevA2");
    assert_string_equal(str(d, "wipe_status"), "DeviceWipePending");
    assert_true(json_is_string(json_object_get(d, "wipe_requested_at")));
    json_decref(d);
    all = drain(x);
    chg = of_kind(all, EG_OUTBOX_DEVICE_CHANGED);
    assert_int_equal(json_array_size(chg), 1);
    json_decref(chg);
    json_decref(all);
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 1); /* still pending: asked again */
    assert_int_equal(r.changed, 0);
    json_decref(drain(x));
    snprintf(a2->wipe, sizeof a2->wipe, "DeviceWipeSucceeded");
    a2->wack = eg_now_ms();
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 1);
    assert_int_equal(r.changed, 1);
    all = drain(x);
    chg = of_kind(all, EG_OUTBOX_DEVICE_CHANGED);
    json_t *c = json_array_get(chg, 0);
    assert_string_equal(str(json_object_get(c, "device"), "wipe_status"), "DeviceWipeSucceeded");
    fields = json_object_get(c, "changed");
    assert_int_equal(json_array_size(fields), 2);
    assert_string_equal(json_string_value(json_array_get(fields, 0)), "wipe_status");
    assert_string_equal(json_string_value(json_array_get(fields, 1)), "wipe_acknowledged_at");
    json_decref(chg);
    json_decref(all);
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 0); /* resolved: no longer due */
    json_decref(drain(x));
    /* The stream's unknown wipe fields do not erase what the statistics said. */
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.changed, 0);
    json_decref(drain(x));

    /* The budget: three new devices, one call per sync. */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "DevN%d", i);
        fake_add(&x->f, "corp/Users/Alice", id, "iOS 17");
    }
    struct eg_inv_sync_opts o = opts(x, EG_INV_FULL);
    o.stats_per_sync = 1;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
        assert_int_equal(r.stats, 1);
    }
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.stats, 0);
    json_decref(drain(x));
}

static void test_lists_unsupported_and_resync(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    /* A backend without lists: membership is kept as it was, the sync works. */
    x->f.no_lists = true;
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.changed, 0);
    json_t *a1 = listed(x, "DevA1");
    assert_string_equal(str(a1, "list"), "allowed");
    json_decref(a1);
    json_decref(drain(x));
    /* The outbox asks for a complete snapshot: every device as device.added, "resync": true,
     * and the flag is cleared. */
    eg_outbox_request_resync(x->ob);
    assert_true(eg_outbox_resync_needed(x->ob));
    sync_ok(x, EG_INV_FULL, &r);
    assert_true(r.resync);
    assert_false(eg_outbox_resync_needed(x->ob));
    json_t *all = drain(x), *add = of_kind(all, EG_OUTBOX_DEVICE_ADDED),
           *done = of_kind(all, EG_OUTBOX_SYNC);
    assert_int_equal(json_array_size(add), 3);
    assert_true(json_is_true(json_object_get(json_array_get(done, 0), "resync")));
    json_decref(add);
    json_decref(done);
    json_decref(all);
    /* A quick sync never is one. */
    eg_outbox_request_resync(x->ob);
    sync_ok(x, EG_INV_QUICK, &r);
    assert_false(r.resync);
    assert_true(eg_outbox_resync_needed(x->ob));
    json_decref(drain(x));
}

static void test_scoped_sync(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    dev_of(&x->f, "DevA2")->present = false;
    dev_of(&x->f, "DevB1")->present = false;
    struct eg_inv_sync_opts o = opts(x, EG_INV_QUICK);
    o.mailbox = "alice@corp.example";
    assert_int_equal(eg_inventory_sync(x->inv, &o, &r), 0);
    assert_int_equal(r.mode, EG_INV_FULL);
    assert_int_equal(r.devices, 1);
    assert_int_equal(r.removed, 1); /* Alice's DevA2 only; Bob's DevB1 is not in scope */
    json_t *b1 = listed(x, "DevB1");
    assert_non_null(b1);
    json_decref(b1);
    json_t *all = drain(x), *done = of_kind(all, EG_OUTBOX_SYNC);
    assert_string_equal(str(json_array_get(done, 0), "mailbox"), "alice@corp.example");
    json_decref(done);
    json_decref(all);
}

static void test_read_api_paging(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    for (int i = 0; i < 22; i++) {
        char id[16];
        snprintf(id, sizeof id, "Page%02d", i);
        fake_add(&x->f, i % 2 ? "corp/Users/Alice" : "corp/Users/Bob", id, "iOS");
    }
    sync_ok(x, EG_INV_FULL, &r);
    assert_int_equal(r.added, 25);
    /* Statistics come 10 devices a sync (stats_per_sync), in an order that depends on the
     * timestamps of the first sync: get them all before t_mid, so that only Page03 changes
     * after it. */
    for (int k = 0; k < 3; k++)
        sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    int64_t t_mid = eg_now_ms();
    usleep(5000);
    snprintf(dev_of(&x->f, "Page03")->os, 32, "iOS 19");
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));

    /* 25 devices in pages of 10: 10, 10, 5, each device once. */
    char *cursor = NULL;
    size_t total = 0, pages = 0;
    json_t *seen = json_object();
    do {
        struct eg_inv_query q = {.cursor = cursor, .limit = 10};
        json_t *arr = NULL, *e;
        char *next = NULL;
        size_t i;
        assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), 0);
        json_array_foreach(arr, i, e)
        {
            assert_null(json_object_get(seen, str(e, "device_id")));
            json_object_set_new(seen, str(e, "device_id"), json_true());
        }
        total += json_array_size(arr);
        pages++;
        assert_true(json_array_size(arr) == 10 || !next);
        json_decref(arr);
        eg_free(cursor);
        cursor = next;
    } while (cursor);
    assert_int_equal(total, 25);
    assert_int_equal(pages, 3);
    json_decref(seen);

    /* Filters: one mailbox (by SMTP address or Identity, any case), changed since. */
    struct eg_inv_query q = {.mailbox = "BOB@corp.example", .limit = 100};
    json_t *arr = NULL;
    char *next = NULL;
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), 0);
    assert_int_equal(json_array_size(arr), 12); /* DevB1 + 11 */
    json_decref(arr);
    q.mailbox = "corp/users/alice";
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), 0);
    assert_int_equal(json_array_size(arr), 13);
    json_decref(arr);
    q = (struct eg_inv_query){.changed_since_ms = t_mid, .limit = 100};
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), 0);
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(str(json_array_get(arr, 0), "device_id"), "Page03");
    json_decref(arr);
    /* Bad input. */
    q = (struct eg_inv_query){.cursor = "x12", .limit = 10};
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), EG_EINVAL);
    q.cursor = "c";
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), EG_EINVAL);
    q.cursor = "c1234567890abcdef0";
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), EG_EINVAL);
    q = (struct eg_inv_query){.limit = 0};
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), EG_EINVAL);
    q.limit = EG_MAX_PAGE_SIZE + 1;
    assert_int_equal(eg_inventory_list(x->inv, &q, &arr, &next), EG_EINVAL);
}

static void test_reopen_keeps_the_snapshot(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    eg_inventory_close(x->inv);
    x->inv = NULL;
    assert_int_equal(eg_inventory_open(x->dir, &x->inv), 0);
    sync_ok(x, EG_INV_QUICK, &r); /* the baseline survived: a real quick sync */
    assert_int_equal(r.mode, EG_INV_QUICK);
    assert_int_equal(r.added, 0);
    json_decref(drain(x));
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "%s/inventory.db", x->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

/* ---- the worker's hooks ---- */

static void submit(struct eg_queue *q, const char *json)
{
    struct eg_command **v = NULL;
    size_t n = 0;
    bool batch = false;
    struct eg_verr e;
    assert_int_equal(eg_command_parse_body(json, strlen(json), 10, &v, &n, &batch, &e), 0);
    char *body = eg_command_canonical(v[0]), *key = eg_command_mailbox_key(v[0]);
    struct eg_submit it = {.id = v[0]->id,
                           .type = eg_cmd_type_name(v[0]->type),
                           .mailbox_key = key,
                           .body = body,
                           .client = "test"};
    enum eg_submit_outcome o;
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_submit(q, &it, 1, &o, &r), 0);
    eg_cmd_record_free(r);
    eg_free(body);
    eg_free(key);
    eg_commands_free(v, n);
}

static void wait_succeeded(struct eg_queue *q, const char *id)
{
    for (int i = 0; i < 1000; i++) {
        struct eg_cmd_record *r = NULL;
        assert_int_equal(eg_queue_get(q, id, &r), 0);
        enum eg_cmd_state st = r->state;
        eg_cmd_record_free(r);
        if (st == EG_STATE_SUCCEEDED)
            return;
        assert_false(eg_cmd_state_is_final(st));
        usleep(5000);
    }
    fail_msg("%s did not succeed", id);
}

/* The worker pool with the inventory (agent/worker.c's hooks). */
static void test_worker_hooks(void **state)
{
    struct fx *x = *state;
    struct eg_inv_sync_result r;
    struct eg_workers *w = NULL;
    sync_ok(x, EG_INV_FULL, &r);
    json_decref(drain(x));
    struct eg_workers_opts wo = {.threads = 2,
                                 .coalesce = true,
                                 .max_coalesce = 10,
                                 .max_attempts = 1,
                                 .retry_base_ms = 10,
                                 .retry_max_ms = 10,
                                 .inventory = x->inv};
    assert_int_equal(eg_workers_start(x->q, &x->b, NULL, &wo, &w), 0);
    /* A succeeded mailbox.set_devices declares the lists... */
    submit(x->q, "{\"id\":\"w1\",\"type\":\"mailbox.set_devices\",\"mailbox\":"
                 "\"alice@corp.example\",\"allowed\":[\"DevA1\"],\"blocked\":[\"Bad1\"]}");
    eg_workers_notify(w);
    wait_succeeded(x->q, "w1");
    json_t *des = NULL;
    assert_int_equal(eg_inventory_desired(x->inv, "alice@corp.example", &des), 0);
    json_t *want = json_pack("{s:[s], s:[s]}", "allowed", "DevA1", "blocked", "Bad1");
    assert_true(json_equal(des, want));
    json_decref(want);
    json_decref(des);
    /* ...a later device.block moves a device in the declaration... */
    submit(x->q, "{\"id\":\"w2\",\"type\":\"device.block\",\"mailbox\":"
                 "\"alice@corp.example\",\"device_id\":\"DevA1\"}");
    eg_workers_notify(w);
    wait_succeeded(x->q, "w2");
    assert_int_equal(eg_inventory_desired(x->inv, "alice@corp.example", &des), 0);
    assert_int_equal(json_array_size(json_object_get(des, "allowed")), 0);
    assert_int_equal(json_array_size(json_object_get(des, "blocked")), 2);
    json_decref(des);
    /* ...and an applied wipe makes the device's statistics due at the next sync. */
    submit(x->q, "{\"id\":\"w3\",\"type\":\"device.wipe\",\"mailbox\":"
                 "\"alice@corp.example\",\"device_id\":\"DevA2\"}");
    eg_workers_notify(w);
    wait_succeeded(x->q, "w3");
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    int before = x->f.stats;
    sync_ok(x, EG_INV_QUICK, &r);
    assert_int_equal(r.stats, 1);
    assert_int_equal(x->f.stats - before, 1);
    json_decref(drain(x));
}

/* ---- the scheduler -------------------------------------------------------------------------- */

static int fixed_config(void *ctx, struct eg_scheduler_config *ret)
{
    *ret = (struct eg_scheduler_config){.automatic = false,
                                        .quick_interval_ms = 900000,
                                        .full_interval_ms = 86400000,
                                        .revision = 1,
                                        .stats_per_sync = 5,
                                        .mailbox_reads_per_sync = 5};
    (void)ctx;
    return 0;
}

static void test_scheduler_coalesces(void **state)
{
    struct fx *x = *state;
    struct eg_scheduler *s = NULL;
    struct eg_scheduler_opts so = {.inventory = x->inv,
                                   .bridge = &x->b,
                                   .outbox = x->ob,
                                   .queue = x->q,
                                   .config = fixed_config,
                                   .poll_ms = 50};
    x->f.delay_ms = 100; /* 3 devices: a sync takes about 300 ms */
    assert_int_equal(eg_scheduler_start(&so, &s), 0);
    struct eg_sync_ticket t1, t2, t3, t4;
    assert_int_equal(eg_scheduler_trigger(s, EG_INV_QUICK, NULL, &t1), 0);
    /* wait until it runs */
    for (int i = 0; i < 200; i++) {
        json_t *st = eg_scheduler_status(s);
        bool running = json_is_object(json_object_get(st, "running"));
        json_decref(st);
        if (running)
            break;
        usleep(5000);
    }
    assert_int_equal(eg_scheduler_trigger(s, EG_INV_QUICK, "alice@corp.example", &t2), 0);
    assert_true(t2.queued);
    assert_false(t2.coalesced);
    assert_int_equal(t2.running_id, t1.id);
    assert_true(t2.id > t1.id);
    assert_false(t2.whole_org);
    assert_int_equal(eg_scheduler_trigger(s, EG_INV_FULL, "bob@corp.example", &t3), 0);
    assert_true(t3.coalesced);
    assert_int_equal(t3.id, t2.id);
    assert_int_equal(t3.mode, EG_INV_FULL);
    assert_true(t3.whole_org); /* two mailboxes: the whole org */
    json_t *st = eg_scheduler_status(s);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "queued"), "id")),
                     t2.id);
    assert_string_equal(str(json_object_get(st, "queued"), "mode"), "full");
    json_decref(st);
    assert_int_equal(eg_scheduler_wait(s, t2.id, 20000), 0);
    struct eg_inv_sync_result r2;
    assert_int_equal(eg_scheduler_result(s, t2.id, &r2), 0);
    assert_int_equal(r2.mode, EG_INV_FULL);
    assert_int_equal(r2.devices, 3);
    assert_int_equal(r2.unchanged, 3); /* t1 (a quick request, run as full: no baseline) added */
    st = eg_scheduler_status(s);
    assert_true(json_is_null(json_object_get(st, "running")));
    assert_true(json_is_null(json_object_get(st, "queued")));
    assert_false(json_is_true(json_object_get(st, "automatic")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "last"), "id")), t2.id);
    assert_int_equal(json_integer_value(json_object_get(st, "devices")), 3);
    json_decref(st);
    char *text = NULL;
    assert_int_equal(eg_scheduler_metrics(s, &text), 0);
    assert_non_null(strstr(text, "easgate_inventory_syncs_total{mode=\"full\",outcome=\"ok\"} 2"));
    assert_non_null(strstr(text, "easgate_inventory_deltas_total{kind=\"added\"} 3"));
    assert_non_null(strstr(text, "easgate_inventory_devices 3"));
    eg_free(text);

    /* Stop in the middle of a sync: it ends as failed and reports no removals. */
    json_decref(drain(x));
    dev_of(&x->f, "DevB1")->present = false;
    x->f.delay_ms = 300;
    assert_int_equal(eg_scheduler_trigger(s, EG_INV_FULL, NULL, &t4), 0);
    usleep(100000);
    eg_scheduler_stop(s);
    json_t *all = drain(x), *rem = of_kind(all, EG_OUTBOX_DEVICE_REMOVED),
           *done = of_kind(all, EG_OUTBOX_SYNC);
    assert_int_equal(json_array_size(rem), 0);
    assert_int_equal(json_array_size(done), 1);
    assert_true(json_is_false(json_object_get(json_array_get(done, 0), "ok")));
    json_decref(rem);
    json_decref(done);
    json_decref(all);
}

/* The configuration the scheduler reads every cycle, changed by the test as a PUT would. */
struct auto_cfg {
    atomic_llong revision, quick_ms;
};

static int auto_config(void *ctx, struct eg_scheduler_config *ret)
{
    struct auto_cfg *a = ctx;
    fixed_config(ctx, ret);
    ret->automatic = true;
    ret->revision = atomic_load(&a->revision);
    ret->quick_interval_ms = atomic_load(&a->quick_ms);
    return 0;
}

static void test_scheduler_automatic(void **state)
{
    struct fx *x = *state;
    struct eg_scheduler *s = NULL;
    struct auto_cfg cfg;
    atomic_init(&cfg.revision, 3);
    atomic_init(&cfg.quick_ms, 60000);
    struct eg_scheduler_opts so = {.inventory = x->inv,
                                   .bridge = &x->b,
                                   .outbox = x->ob,
                                   .config = auto_config,
                                   .config_ctx = &cfg,
                                   .poll_ms = 20};
    struct eg_inventory_meta m = {0};
    assert_int_equal(eg_scheduler_start(&so, &s), 0);
    /* A revision without a full sync: its first one is due a quick interval (a minute) after
     * the scheduler saw it, not at once. */
    usleep(200000);
    assert_int_equal(eg_inventory_meta(x->inv, &m), 0);
    assert_int_equal(m.generation, 0);
    json_t *st = eg_scheduler_status(s);
    assert_true(json_is_true(json_object_get(st, "automatic")));
    assert_true(json_is_string(json_object_get(st, "next_full_at")));
    json_decref(st);
    /* The configuration is read again each cycle: with a short interval the full sync runs. */
    atomic_store(&cfg.quick_ms, 100);
    for (int i = 0; i < 1000 && m.synced_revision != 3; i++) {
        usleep(10000);
        assert_int_equal(eg_inventory_meta(x->inv, &m), 0);
    }
    assert_int_equal(m.synced_revision, 3);
    assert_true(m.baseline);
    /* ...and quick syncs follow it while the interval is short. */
    int64_t gen = m.generation;
    for (int i = 0; i < 1000 && m.last_quick_end_ms == 0; i++) {
        usleep(10000);
        assert_int_equal(eg_inventory_meta(x->inv, &m), 0);
    }
    assert_true(m.last_quick_end_ms > 0);
    assert_true(m.generation > gen);
    /* A long interval again: nothing more is due. */
    atomic_store(&cfg.quick_ms, 60000);
    usleep(100000); /* a sync running now ends */
    assert_int_equal(eg_inventory_meta(x->inv, &m), 0);
    gen = m.generation;
    usleep(200000);
    assert_int_equal(eg_inventory_meta(x->inv, &m), 0);
    assert_int_equal(m.generation, gen);
    eg_scheduler_stop(s);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_initial_full_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_added_changed_removed_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_reports_no_removals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quick_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drift_and_heal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declared_mailbox_outside_the_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statistics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_unsupported_and_resync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scoped_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_api_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_the_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_hooks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_coalesces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_automatic, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
