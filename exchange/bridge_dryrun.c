/* bridge_dryrun.c - the dry-run Exchange backend.
 *
 * Runs nothing against Exchange. It keeps an in-memory model of what the cmdlets would change
 * (every mailbox's ActiveSyncAllowedDeviceIDs / ActiveSyncBlockedDeviceIDs, ActiveSync settings,
 * wipe requests, removed partnerships and the org's DefaultAccessLevel), computes the real
 * difference for each list edit with exchange/list_plan, and records each cmdlet it would run with
 * its parameters in the caller's `actions` array. Each operation sleeps latency_ms to stand in for
 * one Exchange round trip. Thread-safe: one mutex around the model (never held while sleeping).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "exchange/bridge.h"
#include "exchange/list_plan.h"

struct dr_device {
    char *device_id;
    bool wipe_pending;
    bool account_only;
    bool removed;
};

struct dr_mailbox {
    char *key; /* lower-cased identity */
    struct eg_strv allowed, blocked;
    int activesync_enabled; /* -1 never set */
    char *policy;           /* NULL = default */
    struct dr_device *devices;
    size_t n_devices;
};

struct dryrun {
    pthread_mutex_t lock;
    struct dr_mailbox *mbx;
    size_t n_mbx;
    enum eg_access_level org_level;
    int latency_ms;
    atomic_size_t calls;
};

static void simulate_latency(struct dryrun *d)
{
    atomic_fetch_add(&d->calls, 1);
    if (d->latency_ms <= 0)
        return;
    struct timespec ts = {d->latency_ms / 1000, (long)(d->latency_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static char *lower_dup(const char *s)
{
    char *k = eg_strdup(s);
    for (char *p = k; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return k;
}

/* Find (and with create, add) a mailbox. Caller holds the lock. NULL: not found or ENOMEM. */
static struct dr_mailbox *mailbox_get(struct dryrun *d, const char *mailbox, bool create)
{
    for (size_t i = 0; i < d->n_mbx; i++)
        if (strcasecmp(d->mbx[i].key, mailbox) == 0)
            return &d->mbx[i];
    if (!create)
        return NULL;
    struct dr_mailbox *nv = eg_reallocarray(d->mbx, d->n_mbx + 1, sizeof *nv);
    if (!nv)
        return NULL;
    d->mbx = nv;
    struct dr_mailbox *m = &d->mbx[d->n_mbx];
    memset(m, 0, sizeof *m);
    m->activesync_enabled = -1;
    m->key = lower_dup(mailbox);
    if (!m->key)
        return NULL;
    d->n_mbx++;
    return m;
}

static struct dr_device *device_get(struct dr_mailbox *m, const char *device_id)
{
    for (size_t i = 0; i < m->n_devices; i++)
        if (strcasecmp(m->devices[i].device_id, device_id) == 0)
            return &m->devices[i];
    struct dr_device *nv = eg_reallocarray(m->devices, m->n_devices + 1, sizeof *nv);
    if (!nv)
        return NULL;
    m->devices = nv;
    struct dr_device *dev = &m->devices[m->n_devices];
    memset(dev, 0, sizeof *dev);
    dev->device_id = eg_strdup(device_id);
    if (!dev->device_id)
        return NULL;
    m->n_devices++;
    return dev;
}

/* Append {"cmdlet": name, "parameters": params} to actions (steals params). */
static int record(json_t *actions, const char *cmdlet, json_t *params)
{
    json_t *a = params ? json_pack("{s:s, s:o}", "cmdlet", cmdlet, "parameters", params) : NULL;
    if (!a || !actions || json_array_append_new(actions, a) < 0) {
        json_decref(a);
        return EG_ENOMEM;
    }
    return 0;
}

static json_t *strv_json(const struct eg_strv *v)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < v->n; i++)
        if (json_array_append_new(a, json_string(v->v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* @{Add=...;Remove=...} for one list, only the keys that have entries. */
static json_t *add_remove_json(const struct eg_strv *add, const struct eg_strv *remove)
{
    json_t *h = json_object();
    if (!h)
        return NULL;
    if ((add->n && json_object_set_new(h, "Add", strv_json(add)) < 0) ||
        (remove->n && json_object_set_new(h, "Remove", strv_json(remove)) < 0)) {
        json_decref(h);
        return NULL;
    }
    return h;
}

static char *device_identity(const char *mailbox, const char *device_id)
{
    return eg_asprintf("%s\\ExchangeActiveSyncDevices\\%s", mailbox, device_id);
}

static int oom(struct eg_bridge_error *err)
{
    eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "out of memory in the dry-run bridge");
    return EG_ENOMEM;
}

static int dr_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                        struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    struct eg_list_plan *plan = NULL;
    int rc = 0;

    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    struct dr_mailbox *m = mailbox_get(d, edit->mailbox, true);
    if (!m) {
        rc = oom(err);
        goto out;
    }
    if ((rc = record(actions, "Get-CASMailbox", json_pack("{s:s}", "Identity", edit->mailbox))) < 0)
        goto nomem;
    rc = eg_list_plan_compute(edit, (const char *const *)m->allowed.v, m->allowed.n,
                              (const char *const *)m->blocked.v, m->blocked.n, &plan);
    if (rc < 0)
        goto nomem;
    if (!eg_list_plan_empty(plan)) {
        json_t *p = json_pack("{s:s}", "Identity", edit->mailbox);
        if (p && (plan->allow_add.n || plan->allow_remove.n))
            if (json_object_set_new(p, "ActiveSyncAllowedDeviceIDs",
                                    add_remove_json(&plan->allow_add, &plan->allow_remove)) < 0)
                json_decref(p), p = NULL;
        if (p && (plan->block_add.n || plan->block_remove.n))
            if (json_object_set_new(p, "ActiveSyncBlockedDeviceIDs",
                                    add_remove_json(&plan->block_add, &plan->block_remove)) < 0)
                json_decref(p), p = NULL;
        if ((rc = record(actions, "Set-CASMailbox", p)) < 0)
            goto nomem;
        /* Apply: the model's lists become the plan's final lists. */
        eg_strv_clear(&m->allowed);
        eg_strv_clear(&m->blocked);
        m->allowed = plan->final_allowed;
        m->blocked = plan->final_blocked;
        plan->final_allowed = (struct eg_strv){0};
        plan->final_blocked = (struct eg_strv){0};
    }
    goto out;
nomem:
    rc = oom(err);
out:
    pthread_mutex_unlock(&d->lock);
    eg_list_plan_free(plan);
    return rc;
}

/* Resolve the device (one Get-MobileDevice) and return its identity. Caller holds the lock. */
static int resolve(struct dryrun *d, const char *mailbox, const char *device_id, json_t *actions,
                   struct dr_device **ret_dev, char **ret_identity, struct eg_bridge_error *err)
{
    struct dr_mailbox *m = mailbox_get(d, mailbox, true);
    struct dr_device *dev = m ? device_get(m, device_id) : NULL;
    char *identity = dev ? device_identity(mailbox, device_id) : NULL;
    if (!identity ||
        record(actions, "Get-MobileDevice", json_pack("{s:s}", "Mailbox", mailbox)) < 0) {
        eg_free(identity);
        return oom(err);
    }
    *ret_dev = dev;
    *ret_identity = identity;
    return 0;
}

static int dr_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                   const char *const *notify, size_t n_notify, json_t *actions,
                   struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    struct dr_device *dev = NULL;
    char *identity = NULL;
    int rc;

    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    if ((rc = resolve(d, mailbox, device_id, actions, &dev, &identity, err)) < 0)
        goto out;
    json_t *p = json_pack("{s:s, s:b}", "Identity", identity, "Confirm", 0);
    if (p && account_only && json_object_set_new(p, "AccountOnly", json_true()) < 0)
        json_decref(p), p = NULL;
    if (p && n_notify) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n_notify; i++)
            if (json_array_append_new(a, json_string(notify[i])) < 0)
                json_decref(a), a = NULL;
        if (json_object_set_new(p, "NotificationEmailAddresses", a) < 0)
            json_decref(p), p = NULL;
    }
    if ((rc = record(actions, "Clear-MobileDevice", p)) < 0) {
        rc = oom(err);
        goto out;
    }
    dev->wipe_pending = true;
    dev->account_only = account_only;
out:
    pthread_mutex_unlock(&d->lock);
    eg_free(identity);
    return rc;
}

/* What a device operation does to the model once its cmdlet is recorded. */
enum dr_device_op { DR_WIPE_CANCEL, DR_REMOVE };

/* Resolve the device, record `cmdlet -Identity <identity> [-Cancel] -Confirm:$false`, apply. */
static int device_cmdlet(struct dryrun *d, const char *mailbox, const char *device_id,
                         enum dr_device_op op, json_t *actions, struct eg_bridge_error *err)
{
    struct dr_device *dev = NULL;
    char *identity = NULL;
    int rc;

    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    if ((rc = resolve(d, mailbox, device_id, actions, &dev, &identity, err)) < 0)
        goto out;
    json_t *p = json_pack("{s:s, s:b}", "Identity", identity, "Confirm", 0);
    if (p && op == DR_WIPE_CANCEL && json_object_set_new(p, "Cancel", json_true()) < 0)
        json_decref(p), p = NULL;
    if ((rc = record(actions, op == DR_REMOVE ? "Remove-MobileDevice" : "Clear-MobileDevice", p)) <
        0) {
        rc = oom(err);
        goto out;
    }
    dev->wipe_pending = false;
    if (op == DR_REMOVE)
        dev->removed = true;
out:
    pthread_mutex_unlock(&d->lock);
    eg_free(identity);
    return rc;
}

static int dr_wipe_cancel(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                          struct eg_bridge_error *err)
{
    return device_cmdlet(impl, mailbox, device_id, DR_WIPE_CANCEL, actions, err);
}

static int dr_remove_device(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                            struct eg_bridge_error *err)
{
    return device_cmdlet(impl, mailbox, device_id, DR_REMOVE, actions, err);
}

static int dr_set_mailbox(void *impl, const char *mailbox, int activesync_enabled, bool set_policy,
                          const char *policy, json_t *actions, struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    int rc = 0;

    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    struct dr_mailbox *m = mailbox_get(d, mailbox, true);
    json_t *p = m ? json_pack("{s:s}", "Identity", mailbox) : NULL;
    if (p && activesync_enabled >= 0 &&
        json_object_set_new(p, "ActiveSyncEnabled", json_boolean(activesync_enabled)) < 0)
        json_decref(p), p = NULL;
    if (p && set_policy &&
        json_object_set_new(p, "ActiveSyncMailboxPolicy",
                            policy ? json_string(policy) : json_null()) < 0)
        json_decref(p), p = NULL;
    char *pol = set_policy && policy ? eg_strdup(policy) : NULL;
    if ((set_policy && policy && !pol) || record(actions, "Set-CASMailbox", p) < 0) {
        eg_free(pol);
        rc = oom(err);
        goto out;
    }
    if (activesync_enabled >= 0)
        m->activesync_enabled = activesync_enabled;
    if (set_policy) {
        eg_free(m->policy);
        m->policy = pol;
    }
out:
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static const char *exchange_level(enum eg_access_level l)
{
    switch (l) {
    case EG_ACCESS_ALLOW:
        return "Allow";
    case EG_ACCESS_BLOCK:
        return "Block";
    case EG_ACCESS_QUARANTINE:
        return "Quarantine";
    }
    return "Allow";
}

static int dr_set_org_default_access(void *impl, enum eg_access_level level, json_t *actions,
                                     struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    int rc = 0;
    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    if (record(actions, "Set-ActiveSyncOrganizationSettings",
               json_pack("{s:s}", "DefaultAccessLevel", exchange_level(level))) < 0)
        rc = oom(err);
    else
        d->org_level = level;
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* The dry-run inventory: every device the model knows (named in a list or by a wipe/removal),
 * paged by a numeric cursor "mailbox-index:device-index". */
struct dr_item {
    char *mailbox, *device_id, *identity;
    const char *access_state, *access_reason, *wipe_status;
};

static int dr_inventory_page(void *impl, const struct eg_inventory_query *q, const char *cursor,
                             eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                             struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    struct dr_item *items = NULL;
    size_t n = 0, start = 0, page = q && q->page_size ? q->page_size : 1000;
    char *next = NULL;
    int rc = 0;

    if (cursor) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(cursor, &end, 10);
        if (errno || !end || *end || end == cursor) {
            eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "bad inventory cursor");
            return EG_EINVAL;
        }
        start = (size_t)v;
    }
    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    /* Snapshot the page under the lock, call back outside it. */
    size_t idx = 0;
    bool more = false;
    for (size_t i = 0; i < d->n_mbx && !rc; i++) {
        struct dr_mailbox *m = &d->mbx[i];
        if (q && q->mailbox && strcasecmp(q->mailbox, m->key) != 0)
            continue;
        struct eg_strv seen = {0};
        for (int pass = 0; pass < 3 && !rc; pass++) {
            size_t cnt = pass == 0 ? m->allowed.n : pass == 1 ? m->blocked.n : m->n_devices;
            for (size_t j = 0; j < cnt && !rc; j++) {
                const char *id = pass == 0   ? m->allowed.v[j]
                                 : pass == 1 ? m->blocked.v[j]
                                             : m->devices[j].device_id;
                if (eg_strv_find(&seen, id) >= 0)
                    continue;
                if (pass == 2 && m->devices[j].removed)
                    continue;
                if ((rc = eg_strv_push(&seen, id)) < 0)
                    break;
                if (idx++ < start)
                    continue;
                if (n == page) {
                    more = true;
                    continue;
                }
                struct dr_item *nv = eg_reallocarray(items, n + 1, sizeof *nv);
                if (!nv) {
                    rc = EG_ENOMEM;
                    break;
                }
                items = nv;
                struct dr_item *it = &items[n++];
                memset(it, 0, sizeof *it);
                it->mailbox = eg_strdup(m->key);
                it->device_id = eg_strdup(id);
                it->identity = device_identity(m->key, id);
                it->access_state = eg_strv_find(&m->blocked, id) >= 0     ? "Blocked"
                                   : eg_strv_find(&m->allowed, id) >= 0   ? "Allowed"
                                   : d->org_level == EG_ACCESS_BLOCK      ? "Blocked"
                                   : d->org_level == EG_ACCESS_QUARANTINE ? "Quarantined"
                                                                          : "Allowed";
                it->access_reason =
                    eg_strv_find(&m->blocked, id) >= 0 || eg_strv_find(&m->allowed, id) >= 0
                        ? "Individual"
                        : "Global";
                it->wipe_status = "DeviceOk";
                for (size_t k = 0; k < m->n_devices; k++)
                    if (strcasecmp(m->devices[k].device_id, id) == 0 && m->devices[k].wipe_pending)
                        it->wipe_status = "DeviceWipePending";
                if (!it->mailbox || !it->device_id || !it->identity)
                    rc = EG_ENOMEM;
            }
        }
        eg_strv_clear(&seen);
    }
    pthread_mutex_unlock(&d->lock);
    if (rc < 0) {
        oom(err);
        goto out;
    }
    if (more && !(next = eg_asprintf("%zu", start + n))) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct eg_device_record rec = {.mailbox = items[i].mailbox,
                                       .mailbox_identity = items[i].mailbox,
                                       .device_id = items[i].device_id,
                                       .identity = items[i].identity,
                                       .access_state = items[i].access_state,
                                       .access_reason = items[i].access_reason,
                                       .wipe_status = items[i].wipe_status};
        if ((rc = cb(cb_ctx, &rec)) != 0)
            goto out;
    }
    *ret_next_cursor = next;
    next = NULL;
out:
    for (size_t i = 0; i < n; i++) {
        eg_free(items[i].mailbox);
        eg_free(items[i].device_id);
        eg_free(items[i].identity);
    }
    eg_free(items);
    eg_free(next);
    return rc;
}

/* The lists of one mailbox (a mailbox the model never saw has empty lists) or of every mailbox
 * the model knows; copied under the lock, called back outside it. */
static int dr_mailbox_lists(void *impl, const struct eg_mailbox_query *q, eg_mailbox_cb cb,
                            void *cb_ctx, struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    struct eg_strv keys = {0};
    int rc = 0;
    if (!cb) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "no callback for the lists");
        return EG_EINVAL;
    }
    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    if (q && q->mailbox)
        rc = eg_strv_push(&keys, q->mailbox);
    for (size_t i = 0; !(q && q->mailbox) && i < d->n_mbx && rc == 0; i++)
        rc = eg_strv_push(&keys, d->mbx[i].key);
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < keys.n && rc == 0; i++) {
        struct eg_strv allowed = {0}, blocked = {0};
        char *key = lower_dup(keys.v[i]);
        pthread_mutex_lock(&d->lock);
        struct dr_mailbox *m = key ? mailbox_get(d, key, false) : NULL;
        for (size_t j = 0; m && j < m->allowed.n && rc == 0; j++)
            rc = eg_strv_push(&allowed, m->allowed.v[j]);
        for (size_t j = 0; m && j < m->blocked.n && rc == 0; j++)
            rc = eg_strv_push(&blocked, m->blocked.v[j]);
        pthread_mutex_unlock(&d->lock);
        if (!key)
            rc = EG_ENOMEM;
        if (rc == 0) {
            struct eg_mailbox_record r = {.identity = key,
                                          .primary_smtp = key,
                                          .allowed = (const char *const *)allowed.v,
                                          .n_allowed = allowed.n,
                                          .blocked = (const char *const *)blocked.v,
                                          .n_blocked = blocked.n};
            rc = cb(cb_ctx, &r);
        }
        eg_free(key);
        eg_strv_clear(&allowed);
        eg_strv_clear(&blocked);
    }
    eg_strv_clear(&keys);
    if (rc == EG_ENOMEM)
        return oom(err);
    return rc;
}

static int dr_device_stats(void *impl, const char *mailbox, const char *device_id,
                           const char *identity, eg_device_cb cb, void *cb_ctx,
                           struct eg_bridge_error *err)
{
    struct dryrun *d = impl;
    bool found = false, pending = false;
    if (!cb || !mailbox || !device_id) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                            "device statistics need a mailbox, a device id and a callback");
        return EG_EINVAL;
    }
    simulate_latency(d);
    pthread_mutex_lock(&d->lock);
    struct dr_mailbox *m = mailbox_get(d, mailbox, false);
    for (size_t i = 0; m && i < m->n_devices; i++)
        if (!m->devices[i].removed && strcasecmp(m->devices[i].device_id, device_id) == 0) {
            found = true;
            pending = m->devices[i].wipe_pending;
        }
    pthread_mutex_unlock(&d->lock);
    if (!found) {
        eg_bridge_error_set(err, EG_BERR_DEVICE_NOT_FOUND, false,
                            "mailbox '%s' has no partnership with device '%s'", mailbox, device_id);
        return EG_EREMOTE;
    }
    char *key = lower_dup(mailbox), *ident = device_identity(mailbox, device_id);
    int rc = EG_ENOMEM;
    if (key && ident) {
        struct eg_device_record r = {.mailbox = key,
                                     .mailbox_identity = key,
                                     .device_id = device_id,
                                     .identity = identity ? identity : ident,
                                     .wipe_status = pending ? "DeviceWipePending" : "DeviceOk"};
        rc = cb(cb_ctx, &r);
    }
    eg_free(key);
    eg_free(ident);
    return rc == EG_ENOMEM ? oom(err) : rc;
}

static void dr_destroy(void *impl)
{
    struct dryrun *d = impl;
    if (!d)
        return;
    for (size_t i = 0; i < d->n_mbx; i++) {
        struct dr_mailbox *m = &d->mbx[i];
        eg_free(m->key);
        eg_strv_clear(&m->allowed);
        eg_strv_clear(&m->blocked);
        eg_free(m->policy);
        for (size_t j = 0; j < m->n_devices; j++)
            eg_free(m->devices[j].device_id);
        eg_free(m->devices);
    }
    eg_free(d->mbx);
    pthread_mutex_destroy(&d->lock);
    eg_free(d);
}

static const struct eg_bridge_ops dryrun_ops = {
    .name = "dryrun",
    .list_edit = dr_list_edit,
    .wipe = dr_wipe,
    .wipe_cancel = dr_wipe_cancel,
    .remove_device = dr_remove_device,
    .set_mailbox = dr_set_mailbox,
    .set_org_default_access = dr_set_org_default_access,
    .inventory_page = dr_inventory_page,
    .mailbox_lists = dr_mailbox_lists,
    .device_stats = dr_device_stats,
    .destroy = dr_destroy,
};

int eg_bridge_dryrun_new(int latency_ms, struct eg_bridge **ret)
{
    struct dryrun *d = NULL;
    struct eg_bridge *b = NULL;
    if (latency_ms < 0 || !ret)
        return EG_EINVAL;
    d = eg_calloc(1, sizeof *d);
    b = eg_calloc(1, sizeof *b);
    if (!d || !b) {
        eg_free(d);
        eg_free(b);
        return EG_ENOMEM;
    }
    pthread_mutex_init(&d->lock, NULL);
    d->latency_ms = latency_ms;
    d->org_level = EG_ACCESS_ALLOW;
    atomic_init(&d->calls, 0);
    b->ops = &dryrun_ops;
    b->impl = d;
    *ret = b;
    return 0;
}

json_t *eg_bridge_dryrun_lists(struct eg_bridge *b, const char *mailbox)
{
    if (!b || b->ops != &dryrun_ops || !mailbox)
        return NULL;
    struct dryrun *d = b->impl;
    json_t *out = NULL;
    pthread_mutex_lock(&d->lock);
    struct dr_mailbox *m = mailbox_get(d, mailbox, false);
    if (m)
        out = json_pack("{s:o, s:o}", "allowed", strv_json(&m->allowed), "blocked",
                        strv_json(&m->blocked));
    pthread_mutex_unlock(&d->lock);
    return out;
}

size_t eg_bridge_dryrun_calls(struct eg_bridge *b)
{
    if (!b || b->ops != &dryrun_ops)
        return 0;
    return atomic_load(&((struct dryrun *)b->impl)->calls);
}
