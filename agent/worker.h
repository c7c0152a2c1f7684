/* worker.h - the worker pool: takes commands from the queue and applies them through the bridge.
 *
 * Coalescing lives here: a worker claims all pending list edits of one mailbox at once
 * (device.allow/block/unlist, mailbox.set_devices) and turns them into one eg_list_edit, later
 * commands for the same device winning over earlier ones and a later set_devices replacing
 * everything before it. At most one batch per mailbox is in flight, so per-mailbox order holds.
 * Transient bridge errors are retried with exponential backoff and jitter (the delay is drawn
 * uniformly from [d/2, d] with d = min(retry_max_ms, retry_base_ms * 2^(attempt-1)), and never
 * shorter than a delay Exchange names) up to max_attempts and up to a deadline: a transient error
 * is final once the next attempt would start later than retry_deadline_ms after the command was
 * accepted (created_ms, stored in the journal, so the deadline survives a restart); a delay named
 * by Exchange that would overshoot it ends the retries at once. The final error keeps the
 * bridge's code, message and Exchange detail, its message extended with why retries stopped
 * ("... (retries stopped after 3 attempts in 12.5 s: ...)"). Permanent errors fail at once.
 * Each command's result is JSON {"actions": [...], "coalesced_with": [ids]} (inventory.sync:
 * {"devices": N, "pages": P}); errors carry the bridge's stable code, message and, when Exchange
 * gave one, {"type": ..., "message": ...} as error_detail.
 * With an audit trail (opts.audit, agent/audit.h), every Exchange call of an attempt that may
 * change something (not Get-/Test-/Search-) is appended to it, one record per command it served,
 * with the attempt's outcome, and made durable before that outcome is written to the journal. A
 * failed audit write does not hold up the command: it is logged and counted.
 */
#ifndef EG_WORKER_H
#define EG_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/command.h"
#include "agent/queue.h"
#include "common/error.h"
#include "exchange/bridge.h"

struct eg_metrics;
struct eg_audit;
struct eg_inventory;

struct eg_workers_opts {
    unsigned threads;          /* 1..EG_MAX_WORKERS */
    bool coalesce;             /* false: one bridge call per command (baseline for benchmarks) */
    size_t max_coalesce;       /* commands per coalesced call, 1..EG_MAX_COALESCE */
    unsigned max_attempts;     /* attempts before a transient error becomes final */
    int64_t retry_base_ms;     /* first backoff */
    int64_t retry_max_ms;      /* backoff ceiling */
    int64_t retry_deadline_ms; /* no attempt starts later than this after acceptance;
                                  0..EG_MAX_RETRY_DEADLINE_MS, 0 = EG_DEFAULT_RETRY_DEADLINE_MS */
    struct eg_audit *audit;    /* audit trail of Exchange changes (borrowed), NULL = none */
    /* Called once per batch with the ids of its commands that reached a final state here
     * (succeeded or failed; n >= 1, ids borrowed for the call), after their outcomes are in the
     * journal, from the worker's thread; NULL = none. It cannot fail a command (the daemon uses
     * it to queue the results for upload in one outbox transaction, agent/uploader). */
    void (*on_final)(void *ctx, const char *const *ids, size_t n);
    void *on_final_ctx;
    /* The inventory (borrowed), NULL = none: a list edit is marked in flight around its bridge
     * call and, when applied, moves the console's declared lists (eg_inventory_edit_begin/_end:
     * mailbox.set_devices declares them); an applied wipe or wipe cancel makes the device's
     * statistics due (eg_inventory_note_wipe). A failure there is logged; the command goes on. */
    struct eg_inventory *inventory;
};

struct eg_workers;

/* Start the pool. queue, bridge and metrics (may be NULL) are borrowed and must outlive it.
 * Returns 0, EG_EINVAL (an option out of range), EG_ENOMEM. */
int eg_workers_start(struct eg_queue *q, struct eg_bridge *bridge, struct eg_metrics *metrics,
                     const struct eg_workers_opts *opts, struct eg_workers **ret) EG_MUST_CHECK;

/* Change the retry deadline for the next retry decisions (the console's retry.deadline_ms);
 * 0 = back to the value the pool was started with. Thread-safe. Returns 0 or EG_EINVAL (NULL,
 * or outside EG_MIN_RETRY_DEADLINE_MS..EG_MAX_RETRY_DEADLINE_MS). */
int eg_workers_set_retry_deadline(struct eg_workers *w, int64_t ms) EG_MUST_CHECK;

/* Wake idle workers: new commands were queued. Thread-safe, cheap. */
void eg_workers_notify(struct eg_workers *w);

/* Number of command batches being applied right now. */
size_t eg_workers_in_flight(struct eg_workers *w);

/* Stop taking new work, let in-flight bridge calls finish (up to drain_ms), join the threads and
 * free the pool. Returns 0 (also for NULL), or EG_ETIMEDOUT when some bridge call was still in
 * progress after drain_ms: then the pool is left allocated and its threads running (they still
 * use the queue and the bridge, so the caller must not free those; it should exit the process).
 * Commands still running return to `queued` on the next start. */
int eg_workers_stop(struct eg_workers *w, int64_t drain_ms);

/* The pure coalescing step, exported for tests: merge list-edit commands (all for one mailbox,
 * in acceptance order) into one edit. On success *ret is a new edit whose strings point into
 * cmds (valid while cmds live); free with eg_list_edit_free. Returns 0, EG_EINVAL (a command is
 * not a list edit or mailboxes differ), EG_ENOMEM. */
int eg_coalesce(const struct eg_command *const *cmds, size_t n,
                struct eg_list_edit **ret) EG_MUST_CHECK;
void eg_list_edit_free(struct eg_list_edit *e);

#endif
