/* worker.c - the worker pool: claim from the queue, coalesce, call the bridge, record outcomes.
 *
 * Each thread loops: claim a batch (all pending list edits of one mailbox, or one other command),
 * apply it through the bridge, then finish, retry or fail every command of the batch. The queue
 * guarantees that a mailbox has at most one batch in flight and that per-mailbox acceptance order
 * holds across retries, so workers need no locking of their own around Exchange work. Idle threads
 * sleep on a condition variable until eg_workers_notify() or the next retry is due.
 */
#include "agent/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "agent/audit.h"
#include "agent/inventory.h"
#include "agent/metrics.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"

#define IDLE_POLL_MS        1000   /* an idle worker re-checks the queue at least this often */
#define DB_ERROR_PAUSE_MS   200    /* pause after a journal error before claiming again */
#define MAX_INVENTORY_PAGES 100000 /* guard against a backend that never ends its paging */

static const char *const list_edit_types[] = {"device.allow", "device.block", "device.unlist",
                                              "mailbox.set_devices", NULL};

struct eg_workers {
    struct eg_queue *q;
    struct eg_bridge *bridge;
    struct eg_metrics *metrics;
    struct eg_workers_opts o;
    int64_t start_deadline_ms; /* o.retry_deadline_ms as started; o's copy may be overridden */
    pthread_t *threads;
    unsigned n_threads;
    pthread_mutex_t lock;
    pthread_cond_t wake;   /* new work or stop */
    pthread_cond_t exited; /* a thread left its loop */
    bool stopping;
    uint64_t generation; /* bumped by every notify, so a wake-up between claim and wait is kept */
    unsigned live;       /* threads still in their loop */
    atomic_size_t in_flight;
};

/* ---- coalescing ----------------------------------------------------------------------------- */

void eg_list_edit_free(struct eg_list_edit *e)
{
    if (!e)
        return;
    eg_free((void *)e->overrides);
    eg_free(e);
}

int eg_coalesce(const struct eg_command *const *cmds, size_t n, struct eg_list_edit **ret)
{
    struct eg_list_edit *e = NULL;
    struct eg_device_override *ov = NULL;
    size_t n_ov = 0;

    if (!cmds || n == 0 || !ret)
        return EG_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!cmds[i] || !eg_cmd_type_is_list_edit(cmds[i]->type) || !cmds[i]->mailbox ||
            strcasecmp(cmds[i]->mailbox, cmds[0]->mailbox) != 0)
            return EG_EINVAL;
    e = eg_calloc(1, sizeof *e);
    ov = eg_calloc(n, sizeof *ov);
    if (!e || !ov) {
        eg_free(e);
        eg_free(ov);
        return EG_ENOMEM;
    }
    e->mailbox = cmds[0]->mailbox;
    for (size_t i = 0; i < n; i++) {
        const struct eg_command *c = cmds[i];
        if (c->type == EG_CMD_MAILBOX_SET_DEVICES) {
            /* A declaration replaces everything before it. */
            e->has_base = true;
            e->base_allowed = (const char *const *)c->allowed;
            e->n_base_allowed = c->n_allowed;
            e->base_blocked = (const char *const *)c->blocked;
            e->n_base_blocked = c->n_blocked;
            n_ov = 0;
            continue;
        }
        enum eg_list_target t = c->type == EG_CMD_DEVICE_ALLOW   ? EG_LIST_ALLOW
                                : c->type == EG_CMD_DEVICE_BLOCK ? EG_LIST_BLOCK
                                                                 : EG_LIST_NONE;
        /* A later command for the same device wins: drop the earlier override. */
        for (size_t k = 0; k < n_ov; k++)
            if (strcasecmp(ov[k].device_id, c->device_id) == 0) {
                memmove(&ov[k], &ov[k + 1], (n_ov - k - 1) * sizeof ov[0]);
                n_ov--;
                break;
            }
        ov[n_ov++] = (struct eg_device_override){.device_id = c->device_id, .target = t};
    }
    e->overrides = ov;
    e->n_overrides = n_ov;
    *ret = e;
    return 0;
}

/* ---- applying one batch --------------------------------------------------------------------- */

struct inv_count {
    int64_t devices;
};

static int count_device(void *ctx, const struct eg_device_record *dev)
{
    ((struct inv_count *)ctx)->devices++;
    return 0;
}

/* Call the bridge for a batch. On success *ret_result is the JSON result shared by the batch.
 * *ret_actions gets the Exchange calls attempted (success or not; NULL without memory). */
static int apply(struct eg_workers *w, const struct eg_command *const *cmds, size_t n,
                 const char **ret_op, json_t **ret_result, json_t **ret_actions,
                 struct eg_bridge_error *err)
{
    const struct eg_bridge_ops *ops = w->bridge->ops;
    void *impl = w->bridge->impl;
    const struct eg_command *c = cmds[0];
    json_t *actions = json_array(), *result = NULL;
    struct eg_list_edit *edit = NULL;
    int rc = 0;

    if (!actions) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "out of memory");
        return EG_ENOMEM;
    }
    if (eg_cmd_type_is_list_edit(c->type)) {
        *ret_op = "list_edit";
        if ((rc = eg_coalesce(cmds, n, &edit)) < 0) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "cannot merge the list edits: %s",
                                eg_strerror(rc));
            goto out;
        }
        rc = ops->list_edit(impl, edit, actions, err);
        goto out;
    }
    if (n != 1) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "only list edits are coalesced");
        rc = EG_EINTERNAL;
        goto out;
    }
    switch (c->type) {
    case EG_CMD_DEVICE_WIPE:
        *ret_op = "wipe";
        rc = ops->wipe(impl, c->mailbox, c->device_id, c->account_only,
                       (const char *const *)c->notify, c->n_notify, actions, err);
        break;
    case EG_CMD_DEVICE_WIPE_CANCEL:
        *ret_op = "wipe_cancel";
        rc = ops->wipe_cancel(impl, c->mailbox, c->device_id, actions, err);
        break;
    case EG_CMD_DEVICE_REMOVE:
        *ret_op = "remove_device";
        rc = ops->remove_device(impl, c->mailbox, c->device_id, actions, err);
        break;
    case EG_CMD_MAILBOX_SET:
        *ret_op = "set_mailbox";
        rc = ops->set_mailbox(impl, c->mailbox, c->activesync_enabled, c->policy_given, c->policy,
                              actions, err);
        break;
    case EG_CMD_ORG_SET_DEFAULT_ACCESS:
        *ret_op = "set_org_default_access";
        rc = ops->set_org_default_access(impl, c->level, actions, err);
        break;
    case EG_CMD_INVENTORY_SYNC: {
        *ret_op = "inventory_page";
        struct eg_inventory_query q = {
            .full = c->mode == EG_SYNC_FULL, .mailbox = c->mailbox, .page_size = 1000};
        struct inv_count cnt = {0};
        char *cursor = NULL;
        int64_t pages = 0;
        do {
            char *next = NULL;
            rc = ops->inventory_page(impl, &q, cursor, count_device, &cnt, &next, err);
            eg_free(cursor);
            cursor = next;
            pages++;
        } while (rc == 0 && cursor && pages < MAX_INVENTORY_PAGES);
        if (rc == 0 && cursor) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false,
                                "inventory paging did not end after %d pages", MAX_INVENTORY_PAGES);
            rc = EG_EPROTO;
        }
        eg_free(cursor);
        if (rc == 0) {
            result =
                json_pack("{s:I, s:I, s:s}", "devices", (json_int_t)cnt.devices, "pages",
                          (json_int_t)pages, "mode", c->mode == EG_SYNC_FULL ? "full" : "quick");
            if (!result) {
                eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "out of memory");
                rc = EG_ENOMEM;
            }
        }
        goto out;
    }
    default:
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "no bridge operation for %s",
                            eg_cmd_type_name(c->type));
        rc = EG_EINTERNAL;
        break;
    }
out:
    if (rc == 0 && !result) {
        result = json_pack("{s:O}", "actions", actions);
        if (!result) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "out of memory");
            rc = EG_ENOMEM;
        }
    }
    if (rc < 0 && err->code[0] == '\0')
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "bridge failed: %s", eg_strerror(rc));
    *ret_actions = json_incref(actions);
    json_decref(actions);
    eg_list_edit_free(edit);
    if (rc == 0)
        *ret_result = result;
    else
        json_decref(result);
    return rc;
}

/* Backoff before attempt `attempts + 1`: uniform in [d/2, d], d = min(max, base * 2^(attempts-1)),
 * never below what Exchange asked for. */
static int64_t backoff_ms(const struct eg_workers_opts *o, int attempts, int64_t retry_after_ms)
{
    int64_t d = o->retry_base_ms;
    for (int i = 1; i < attempts && d < o->retry_max_ms; i++)
        d *= 2;
    if (d > o->retry_max_ms)
        d = o->retry_max_ms;
    int64_t half = d / 2;
    int64_t delay = half + (half > 0 ? (int64_t)arc4random_uniform((uint32_t)(half + 1)) : 0);
    return delay < retry_after_ms ? retry_after_ms : delay;
}

/* Per-command result: the shared result plus the other commands merged into the same call. */
static char *command_result(json_t *shared, const struct eg_cmd_record *const *recs, size_t n,
                            size_t self)
{
    json_t *r = json_deep_copy(shared), *with = NULL;
    char *text = NULL;
    if (!r)
        return NULL;
    if (n > 1) {
        with = json_array();
        for (size_t i = 0; with && i < n; i++)
            if (i != self && json_array_append_new(with, json_string(recs[i]->id)) < 0)
                json_decref(with), with = NULL;
        if (!with || json_object_set_new(r, "coalesced_with", with) < 0)
            goto out;
    }
    text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
out:
    json_decref(r);
    return text;
}

static char *error_detail(const struct eg_bridge_error *err)
{
    if (!err->exchange_type[0] && !err->exchange_message[0])
        return NULL;
    json_t *d =
        json_pack("{s:s, s:s}", "type", err->exchange_type, "message", err->exchange_message);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    return text;
}

/* Metrics of a command that became final (the console hook is called per batch). */
static void record_final(struct eg_workers *w, const struct eg_cmd_record *r, enum eg_cmd_state st)
{
    double secs = (double)(eg_now_ms() - r->created_ms) / 1000.0;
    eg_metrics_command_done(w->metrics, r->type, st, secs < 0 ? 0 : secs);
}

static void finals_hook(struct eg_workers *w, const char *const *ids, size_t n)
{
    if (w->o.on_final && n > 0)
        w->o.on_final(w->o.on_final_ctx, ids, n);
}

/* "850 ms", "12.5 s", "15.0 min", "26.0 h". */
static void format_duration(int64_t ms, char *buf, size_t size)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1000)
        snprintf(buf, size, "%lld ms", (long long)ms);
    else if (ms < 120 * 1000)
        snprintf(buf, size, "%.1f s", (double)ms / 1000.0);
    else if (ms < 120 * 60 * 1000)
        snprintf(buf, size, "%.1f min", (double)ms / 60000.0);
    else
        snprintf(buf, size, "%.1f h", (double)ms / 3600000.0);
}

/* What becomes of command i of a batch whose bridge call returned rc. *ret_res is a text the
 * caller frees: the result on success, or the final message of a transient error whose retries
 * stopped (the bridge's message plus why). A transient error retries while attempts remain and
 * the next attempt starts no later than created_ms + retry_deadline_ms (created_ms is the
 * acceptance time kept in the journal, so the deadline holds across restarts); a delay Exchange
 * named that would pass the deadline stops the retries at once. */
static void outcome_of(struct eg_workers *w, const struct eg_cmd_record *const *recs, size_t n,
                       size_t i, int rc, json_t *shared, const struct eg_bridge_error *err,
                       const char *detail, struct eg_queue_outcome *o, char **ret_res)
{
    const struct eg_cmd_record *r = recs[i];
    *o = (struct eg_queue_outcome){.id = r->id};
    *ret_res = NULL;
    if (rc == 0) {
        *ret_res = command_result(shared, recs, n, i);
        o->state = EG_STATE_SUCCEEDED;
        o->result = *ret_res;
        return;
    }
    o->error_code = err->code;
    o->error_message = err->message;
    o->error_detail = detail;
    o->state = EG_STATE_FAILED;
    if (!err->transient)
        return;

    int64_t limit = __atomic_load_n(&w->o.retry_deadline_ms, __ATOMIC_RELAXED);
    int64_t now = eg_now_ms(), deadline = r->created_ms + limit;
    char why[160], d1[32], d2[32];
    format_duration(limit, d1, sizeof d1);
    if ((unsigned)r->attempts >= w->o.max_attempts) {
        snprintf(why, sizeof why, "max_attempts (%u) reached", w->o.max_attempts);
    } else if (err->retry_after_ms > 0 && now + err->retry_after_ms > deadline) {
        format_duration(err->retry_after_ms, d2, sizeof d2);
        snprintf(why, sizeof why, "Exchange asked to wait %s, past the retry deadline of %s", d2,
                 d1);
    } else {
        int64_t next = now + backoff_ms(&w->o, r->attempts, err->retry_after_ms);
        if (next <= deadline) {
            o->state = EG_STATE_RETRYING;
            o->next_attempt_ms = next;
            return;
        }
        snprintf(why, sizeof why, "the next attempt would start after the retry deadline of %s",
                 d1);
    }
    format_duration(now - r->created_ms, d2, sizeof d2);
    *ret_res = eg_asprintf("%s (retries stopped after %d attempt%s, %s after acceptance: %s)",
                           err->message, r->attempts, r->attempts == 1 ? "" : "s", d2, why);
    if (*ret_res) /* without memory the bridge's message alone is recorded */
        o->error_message = *ret_res;
}

/* Log (and count) the recorded outcome of r; true when r is now final in the journal. */
static bool log_outcome(struct eg_workers *w, const struct eg_cmd_record *r,
                        const struct eg_queue_outcome *o, size_t n, int qrc)
{
    if (qrc < 0) {
        eg_log_err("command %s: cannot record its outcome in the journal: %s (it stays running "
                   "and is re-queued at the next start)",
                   r->id, eg_strerror(qrc));
        return false;
    }
    if (o->state == EG_STATE_SUCCEEDED) {
        record_final(w, r, EG_STATE_SUCCEEDED);
        eg_log_info("command %s (%s) succeeded, attempt %d%s", r->id, r->type, r->attempts,
                    n > 1 ? ", coalesced" : "");
    } else if (o->state == EG_STATE_RETRYING) {
        eg_log_warn("command %s (%s): %s: %s; retry %d in %lld ms", r->id, r->type, o->error_code,
                    o->error_message, r->attempts + 1,
                    (long long)(o->next_attempt_ms - eg_now_ms()));
        return false;
    } else {
        record_final(w, r, EG_STATE_FAILED);
        eg_log_info("command %s (%s) failed after %d attempt%s: %s: %s", r->id, r->type,
                    r->attempts, r->attempts == 1 ? "" : "s", o->error_code, o->error_message);
    }
    return true;
}

/* Audit trail: one record per changing Exchange call of this attempt and command recs[i] for i
 * in [from, to), with that command's outcome (ov[i - from]). Appended (and durable) before the
 * outcomes reach the journal, so a console never sees a final state whose Exchange change is not
 * in the trail yet. A failed write is logged and counted; the command goes on. */
static void audit_attempt(struct eg_workers *w, struct eg_cmd_record **recs, size_t n, size_t from,
                          size_t to, const struct eg_queue_outcome *ov, json_t *actions)
{
    size_t n_act = json_array_size(actions), n_change = 0, k = 0;
    struct eg_audit_record *v = NULL;
    const char **ids = NULL;
    int rc = EG_ENOMEM;

    if (!w->o.audit || !actions || from >= to)
        return; /* no actions: the bridge was never called */
    for (size_t a = 0; a < n_act; a++)
        if (eg_audit_is_change(
                json_string_value(json_object_get(json_array_get(actions, a), "cmdlet"))))
            n_change++;
    if (n_change == 0)
        return; /* only reads: nothing changed in Exchange */
    if (!(ids = eg_calloc(n, sizeof *ids)) || !(v = eg_calloc((to - from) * n_change, sizeof *v)))
        goto out;
    for (size_t i = 0; i < n; i++)
        ids[i] = recs[i]->id;
    for (size_t i = from; i < to; i++) {
        const struct eg_queue_outcome *o = &ov[i - from];
        for (size_t a = 0; a < n_act; a++) {
            json_t *act = json_array_get(actions, a);
            const char *cmdlet = json_string_value(json_object_get(act, "cmdlet"));
            if (!eg_audit_is_change(cmdlet))
                continue;
            json_t *params = json_object_get(act, "parameters");
            v[k++] = (struct eg_audit_record){
                .command_id = recs[i]->id,
                .console = recs[i]->client,
                .type = recs[i]->type,
                .cmdlet = cmdlet,
                .parameters = json_is_object(params) ? params : NULL,
                .outcome = eg_cmd_state_name(o->state),
                .code = o->state == EG_STATE_SUCCEEDED ? NULL : o->error_code,
                .batch = ids,
                .n_batch = n,
            };
        }
    }
    rc = eg_audit_append(w->o.audit, v, k);
out:
    if (rc < 0) {
        eg_log_err("audit: cannot record %zu Exchange call%s of command %s%s in the audit "
                   "trail: %s%s%s",
                   n_change, n_change == 1 ? "" : "s", recs[from]->id,
                   to - from > 1 ? " and the commands coalesced with it" : "", eg_strerror(rc),
                   rc == EG_EIO ? ": " : "", rc == EG_EIO ? strerror(errno) : "");
        eg_metrics_bridge_call(w->metrics, "audit_append", eg_errname(rc));
    }
    eg_free(v);
    eg_free(ids);
}

/* Record the outcome of every command of a batch in one journal transaction (one fsync), or one
 * by one when there is no memory for the batch. The audit trail gets the attempt first. */
static void record_batch(struct eg_workers *w, struct eg_cmd_record **recs, size_t n, int rc,
                         json_t *shared, json_t *actions, const struct eg_bridge_error *err)
{
    const struct eg_cmd_record *const *cr = (const struct eg_cmd_record *const *)recs;
    char *detail = rc == 0 ? NULL : error_detail(err);
    struct eg_queue_outcome *ov = eg_calloc(n, sizeof *ov);
    char **res = eg_calloc(n, sizeof *res);
    int *qr = eg_calloc(n, sizeof *qr);
    const char **finals = eg_calloc(n, sizeof *finals);

    if (ov && res && qr && finals) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            outcome_of(w, cr, n, i, rc, shared, err, detail, &ov[i], &res[i]);
        audit_attempt(w, recs, n, 0, n, ov, actions);
        /* Every item's own code is in qr (a storage error is copied into all of them). */
        int brc = eg_queue_record_outcomes(w->q, ov, n, qr);
        (void)brc;
        for (size_t i = 0; i < n; i++)
            if (log_outcome(w, recs[i], &ov[i], n, qr[i]))
                finals[k++] = recs[i]->id;
        finals_hook(w, finals, k);
    } else {
        for (size_t i = 0; i < n; i++) {
            struct eg_queue_outcome o;
            char *one = NULL;
            int r1 = 0;
            outcome_of(w, cr, n, i, rc, shared, err, detail, &o, &one);
            audit_attempt(w, recs, n, i, i + 1, &o, actions);
            int qrc = eg_queue_record_outcomes(w->q, &o, 1, &r1);
            if (log_outcome(w, recs[i], &o, n, qrc < 0 ? qrc : r1))
                finals_hook(w, (const char *const *)&recs[i]->id, 1);
            eg_free(one);
        }
    }
    eg_free(finals);
    for (size_t i = 0; res && i < n; i++)
        eg_free(res[i]);
    eg_free(res);
    eg_free(ov);
    eg_free(qr);
    eg_free(detail);
}

/* The inventory's view of what this batch did (agent/inventory.h): the end of a list edit
 * (applied or not; when applied, the declared lists follow it), or a wipe that makes the
 * device's statistics due. */
static void inventory_hooks(struct eg_workers *w, const struct eg_command *const *cmds, size_t n,
                            bool list_edit, bool applied)
{
    struct eg_list_edit *edit = NULL;
    const struct eg_command *c = cmds[0];
    int rc = 0;
    if (!w->o.inventory)
        return;
    if (list_edit) {
        struct eg_list_edit bare = {.mailbox = c->mailbox};
        int crc = eg_coalesce(cmds, n, &edit);
        /* Without the merged edit the in-flight mark is still dropped. */
        rc = eg_inventory_edit_end(w->o.inventory, crc == 0 ? edit : &bare, crc == 0 && applied);
        if (crc < 0)
            rc = crc;
        eg_list_edit_free(edit);
    } else if (applied && (c->type == EG_CMD_DEVICE_WIPE || c->type == EG_CMD_DEVICE_WIPE_CANCEL)) {
        rc = eg_inventory_note_wipe(w->o.inventory, c->mailbox, c->device_id);
    }
    if (rc < 0)
        eg_log_err("inventory: cannot note command %s for drift and statistics: %s", c->id,
                   eg_strerror(rc));
}

static void process(struct eg_workers *w, struct eg_cmd_record **recs, size_t n)
{
    struct eg_command **cmds = eg_calloc(n, sizeof *cmds);
    struct eg_bridge_error err;
    json_t *shared = NULL, *actions = NULL;
    const char *op = "unknown";
    size_t good = 0;
    int rc;

    memset(&err, 0, sizeof err);
    if (!cmds) {
        eg_bridge_error_set(&err, EG_BERR_INTERNAL, true, "out of memory");
        rc = EG_ENOMEM;
        goto outcome;
    }
    /* Bodies were validated at acceptance; a body that no longer parses fails alone. */
    for (size_t i = 0; i < n; i++) {
        json_error_t je;
        struct eg_verr ve;
        json_t *obj = json_loads(recs[i]->body, JSON_REJECT_DUPLICATES, &je);
        rc = obj ? eg_command_from_json(obj, "", &cmds[good], &ve) : EG_EPARSE;
        json_decref(obj);
        if (rc < 0) {
            eg_log_err("command %s: stored body does not validate (%s); failing it", recs[i]->id,
                       eg_strerror(rc));
            if (eg_queue_finish(w->q, recs[i]->id, EG_STATE_FAILED, NULL, EG_BERR_INTERNAL,
                                "the stored command no longer validates", NULL) < 0)
                eg_log_err("command %s: cannot record its failure", recs[i]->id);
            record_final(w, recs[i], EG_STATE_FAILED);
            finals_hook(w, (const char *const *)&recs[i]->id, 1);
            eg_cmd_record_free(recs[i]);
            recs[i] = NULL; /* handled */
            continue;
        }
        good++;
    }
    /* Compact the records to match cmds. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (recs[i])
            recs[k++] = recs[i];
    for (size_t i = k; i < n; i++)
        recs[i] = NULL;
    n = k;
    if (n == 0)
        goto done;
    bool list_edit = eg_cmd_type_is_list_edit(cmds[0]->type);
    if (list_edit)
        eg_inventory_edit_begin(w->o.inventory, cmds[0]->mailbox);
    rc = apply(w, (const struct eg_command *const *)cmds, n, &op, &shared, &actions, &err);
    inventory_hooks(w, (const struct eg_command *const *)cmds, n, list_edit, rc == 0);

outcome:
    eg_metrics_bridge_call(w->metrics, op, rc == 0 ? "ok" : err.code);
    record_batch(w, recs, n, rc, shared, actions, &err);
done:
    json_decref(actions);
    json_decref(shared);
    if (cmds)
        eg_commands_free(cmds, good);
}

/* ---- the threads ---------------------------------------------------------------------------- */

static void wait_for_work(struct eg_workers *w, uint64_t seen_gen, int64_t max_ms)
{
    int64_t wake = eg_queue_next_wakeup(w->q), now = eg_now_ms();
    int64_t ms = max_ms;
    if (wake > 0 && wake - now < ms)
        ms = wake - now;
    if (ms <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->stopping && w->generation == seen_gen)
        if (pthread_cond_timedwait(&w->wake, &w->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *arg)
{
    struct eg_workers *w = arg;
    const char *const *types = w->o.coalesce ? list_edit_types : NULL;
    size_t max = w->o.coalesce ? w->o.max_coalesce : 1;

    for (;;) {
        pthread_mutex_lock(&w->lock);
        bool stop = w->stopping;
        uint64_t gen = w->generation;
        pthread_mutex_unlock(&w->lock);
        if (stop)
            break;
        struct eg_cmd_record **recs = NULL;
        size_t n = 0;
        int rc = eg_queue_claim(w->q, eg_now_ms(), NULL, NULL, types, max, &recs, &n);
        if (rc < 0) {
            eg_log_err("workers: cannot claim commands from the journal: %s", eg_strerror(rc));
            wait_for_work(w, gen, DB_ERROR_PAUSE_MS);
            continue;
        }
        if (n == 0) {
            eg_free(recs);
            wait_for_work(w, gen, IDLE_POLL_MS);
            continue;
        }
        atomic_fetch_add(&w->in_flight, 1);
        process(w, recs, n);
        atomic_fetch_sub(&w->in_flight, 1);
        /* process() freed and NULLed the entries it handled alone; free the rest. */
        for (size_t i = 0; i < n; i++)
            eg_cmd_record_free(recs[i]);
        eg_free(recs);
    }
    pthread_mutex_lock(&w->lock);
    w->live--;
    pthread_cond_broadcast(&w->exited);
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int eg_workers_start(struct eg_queue *q, struct eg_bridge *bridge, struct eg_metrics *metrics,
                     const struct eg_workers_opts *opts, struct eg_workers **ret)
{
    struct eg_workers *w = NULL;
    pthread_condattr_t ca;

    if (!q || !bridge || !bridge->ops || !opts || !ret || opts->threads < 1 ||
        opts->threads > EG_MAX_WORKERS || opts->max_coalesce < 1 ||
        opts->max_coalesce > EG_MAX_COALESCE || opts->max_attempts < 1 || opts->retry_base_ms < 0 ||
        opts->retry_max_ms < opts->retry_base_ms || opts->retry_deadline_ms < 0 ||
        opts->retry_deadline_ms > EG_MAX_RETRY_DEADLINE_MS)
        return EG_EINVAL;
    w = eg_calloc(1, sizeof *w);
    if (!w)
        return EG_ENOMEM;
    w->threads = eg_calloc(opts->threads, sizeof *w->threads);
    if (!w->threads) {
        eg_free(w);
        return EG_ENOMEM;
    }
    w->q = q;
    w->bridge = bridge;
    w->metrics = metrics;
    w->o = *opts;
    if (w->o.retry_deadline_ms == 0)
        w->o.retry_deadline_ms = EG_DEFAULT_RETRY_DEADLINE_MS;
    w->start_deadline_ms = w->o.retry_deadline_ms;
    atomic_init(&w->in_flight, 0);
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_cond_init(&w->exited, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned i = 0; i < opts->threads; i++) {
        pthread_mutex_lock(&w->lock);
        w->live++;
        pthread_mutex_unlock(&w->lock);
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0) {
            pthread_mutex_lock(&w->lock);
            w->live--;
            pthread_mutex_unlock(&w->lock);
            (void)eg_workers_stop(w, 0);
            return EG_ENOMEM;
        }
        w->n_threads++;
    }
    *ret = w;
    return 0;
}

void eg_workers_notify(struct eg_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->generation++;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

size_t eg_workers_in_flight(struct eg_workers *w)
{
    return w ? atomic_load(&w->in_flight) : 0;
}

int eg_workers_stop(struct eg_workers *w, int64_t drain_ms)
{
    struct timespec ts;
    if (!w)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (drain_ms < 0)
        drain_ms = 0;
    ts.tv_sec += drain_ms / 1000;
    ts.tv_nsec += (drain_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->wake);
    while (w->live > 0)
        if (pthread_cond_timedwait(&w->exited, &w->lock, &ts) == ETIMEDOUT)
            break;
    bool all_out = w->live == 0;
    pthread_mutex_unlock(&w->lock);
    if (!all_out)
        return EG_ETIMEDOUT;
    for (unsigned i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->exited);
    pthread_mutex_destroy(&w->lock);
    eg_free(w->threads);
    eg_free(w);
    return 0;
}

int eg_workers_set_retry_deadline(struct eg_workers *w, int64_t ms)
{
    if (!w || ms < 0 || ms > EG_MAX_RETRY_DEADLINE_MS || (ms > 0 && ms < EG_MIN_RETRY_DEADLINE_MS))
        return EG_EINVAL;
    __atomic_store_n(&w->o.retry_deadline_ms, ms ? ms : w->start_deadline_ms, __ATOMIC_RELAXED);
    return 0;
}
