/* scheduler.h - runs the inventory syncs (agent/inventory) on one thread of their own: quick and
 * full syncs on the schedule of the target document, syncs on request, one at a time.
 *
 * The thread never runs on a worker thread and the workers never wait for it: a sync only reads
 * Exchange through the bridge (its own gate slots) and writes the inventory store and the outbox.
 * Each cycle it reads the configuration again (struct eg_scheduler_config through the config
 * callback; the daemon's reads the target document: a PUT /api/v1/config takes effect at the next
 * cycle, at most EG_SCHEDULER_CONFIG_POLL_MS later) and the store's meta data:
 *   - automatic syncs run only with a target stored by the console (config.automatic) that is
 *     not a dry run; with the bootstrap bridge of the command line, or a "dryrun" target, syncs
 *     run on request only;
 *   - a full sync is due full_interval after the last full sync started; a target revision
 *     without a completed full sync (a new target, or one changed by a PUT) gets its first one
 *     quick_interval after the scheduler saw it, so that a console that sets the target and then
 *     sends commands does not compete with the initial inventory (a request starts it at once);
 *   - a quick sync is due quick_interval after the last sync (quick or full) started;
 *   - a failed scheduled sync is due again EG_SCHEDULER_RETRY_MS later, not at once.
 * Requests (eg_scheduler_trigger) coalesce: with nothing running the request starts now; while a
 * sync runs it is queued to run right after; a request while one is queued merges into it (full
 * wins over quick; two different mailboxes, or a mailbox and the whole org, become the whole org)
 * and gets the queued sync's id. Sync ids grow for the life of the process (starting above the
 * store's generation).
 *
 * Stop (eg_scheduler_stop) asks the running sync to end at its next record - it then counts as
 * failed, without removals - and joins the thread. Thread-safe.
 */
#ifndef EG_SCHEDULER_H
#define EG_SCHEDULER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/inventory.h"
#include "agent/outbox.h"
#include "agent/queue.h"
#include "common/error.h"
#include "exchange/bridge.h"

struct eg_target;

/* What the scheduler reads every cycle. */
struct eg_scheduler_config {
    bool automatic;            /* false: syncs on request only */
    int64_t quick_interval_ms; /* > 0 */
    int64_t full_interval_ms;  /* > 0 */
    int64_t revision;          /* of the target document (0 = none) */
    bool heal_drift;           /* inventory.heal_drift */
    unsigned stats_per_sync;   /* inventory.stats_per_sync */
    int64_t stats_interval_ms; /* inventory.stats_interval_ms */
    unsigned mailbox_reads_per_sync;
};

/* Fill *ret. Returns 0 or a negative EG_E* code (the cycle then keeps the last good one). */
typedef int (*eg_scheduler_config_fn)(void *ctx, struct eg_scheduler_config *ret);

/* The daemon's configuration callback; ctx is a struct eg_target. From the stored document:
 * schedule.quick_sync_interval_s / full_sync_interval_s and inventory.heal_drift /
 * stats_per_sync / stats_interval_ms, automatic = a document is stored and its kind is not
 * "dryrun"; without one the defaults (EG_DEFAULT_*) and automatic = false. */
int eg_scheduler_config_from_target(void *ctx, struct eg_scheduler_config *ret) EG_MUST_CHECK;

struct eg_scheduler_opts {
    struct eg_inventory *inventory; /* required, borrowed */
    struct eg_bridge *bridge;       /* required, borrowed (the target's swappable bridge) */
    struct eg_outbox *outbox;       /* may be NULL: deltas counted, not emitted */
    struct eg_queue *queue;         /* where heal commands go; NULL = never heal */
    eg_scheduler_config_fn config;  /* required */
    void *config_ctx;
    void (*healed)(void *ctx); /* after a heal command was stored (wake the workers) */
    void *healed_ctx;
    int64_t poll_ms; /* how often an idle scheduler looks again; 0 = EG_SCHEDULER_CONFIG_POLL_MS */
};

struct eg_scheduler;

/* Start the thread. Returns 0, EG_EINVAL, EG_ENOMEM (nothing started). */
int eg_scheduler_start(const struct eg_scheduler_opts *o, struct eg_scheduler **ret) EG_MUST_CHECK;

/* Stop the running sync at its next record, join the thread, free. Accepts NULL. */
void eg_scheduler_stop(struct eg_scheduler *s);

/* The answer to a request. */
struct eg_sync_ticket {
    int64_t id;            /* the sync that will serve the request */
    bool queued;           /* true: it runs after the sync that runs now (running_id) */
    bool coalesced;        /* true: merged into a request that was already queued */
    int64_t running_id;    /* the sync running now (0 = none) */
    enum eg_inv_mode mode; /* of the sync that will serve it (after merging) */
    bool whole_org;        /* false: only the one mailbox */
};

/* Ask for a sync of mode, of one mailbox (NULL = every mailbox). Returns 0, EG_EINVAL,
 * EG_ESHUTDOWN (stopping), EG_ENOMEM. */
int eg_scheduler_trigger(struct eg_scheduler *s, enum eg_inv_mode mode, const char *mailbox,
                         struct eg_sync_ticket *ret) EG_MUST_CHECK;

/* Wait until sync id has finished (successfully or not) or timeout_ms passed. Returns 0,
 * EG_ETIMEDOUT, EG_EINVAL, EG_ESHUTDOWN. */
int eg_scheduler_wait(struct eg_scheduler *s, int64_t id, int64_t timeout_ms) EG_MUST_CHECK;

/* The result of a finished sync id, if it is the last one of its kind kept (the last sync, the
 * last full and the last quick one). Returns 0, EG_ENOTFOUND. */
int eg_scheduler_result(struct eg_scheduler *s, int64_t id,
                        struct eg_inv_sync_result *ret) EG_MUST_CHECK;

/* "inventory" of GET /api/v1/status: {"automatic", "running": {"id", "mode", "mailbox"?,
 * "started_at", "devices"} | null, "queued": {"id", "mode", "mailbox"?} | null, "last",
 * "last_full", "last_quick": {"id", "mode", "mailbox"?, "ok", "error"?, "started_at",
 * "finished_at", "duration_ms", "devices", "mailboxes", "added", "changed", "removed",
 * "unchanged", "drift", "healed", "stats", "refused", "resync"} | null, "next_full_at",
 * "next_quick_at" (null when not automatic), "devices" (rows in the store)}. New reference; NULL
 * on allocation failure. */
json_t *eg_scheduler_status(struct eg_scheduler *s);

/* Append the inventory series in the Prometheus text format to *text (as eg_uploader_metrics):
 *   easgate_inventory_syncs_total{mode,outcome} counter, easgate_inventory_sync_duration_seconds
 *   {mode} histogram, easgate_inventory_deltas_total{kind} counter (added, changed, removed,
 *   drift, healed), easgate_inventory_devices gauge (rows in the store after the last sync),
 *   easgate_inventory_sync_running gauge. Returns 0 or EG_ENOMEM (*text unchanged). */
int eg_scheduler_metrics(struct eg_scheduler *s, char **text) EG_MUST_CHECK;

#endif
