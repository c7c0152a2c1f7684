/* inventory.h - the device inventory: a snapshot of Exchange's ActiveSync partnerships in SQLite,
 * the syncs that compare Exchange with it and emit the differences into the outbox, drift of the
 * lists the console declared, and the paged read behind GET /api/v1/inventory.
 *
 * Store: <state_dir>/inventory.db (SQLite, WAL, synchronous=FULL, mode 0600), one connection
 * behind a mutex. A device row is keyed by (mailbox key, device id), both lower-cased; the
 * mailbox key is the mailbox's Exchange Identity (eg_device_record.mailbox_identity, else
 * .mailbox). Each row keeps the device's fields, a content hash, first_seen / changed_at, the
 * generation of the sync that last saw it and whether its statistics are due. The mailboxes'
 * lists (Get-CASMailbox) are kept beside the devices; the console's declared lists
 * (mailbox.set_devices, noted by the worker) in a third table.
 *
 * A sync never holds the whole result in memory: the bridge streams devices (and mailboxes) into
 * a buffer of EG_INVENTORY_CHUNK records; each full buffer is compared with the store and
 * committed in one short transaction, together with its deltas in one outbox transaction (the
 * outbox commits first: after a crash a chunk's deltas may be sent twice, never lost). The lock
 * is not held while the bridge streams.
 *
 * Full sync (every mailbox, or one): the mailboxes' lists (every mailbox with a partnership, one
 * stream), then every partnership (one stream), then the rows this sync did not see are removed
 * (device.removed) - only when both streams ended without error: a partial full sync never
 * reports unseen devices as removed. Then the declared mailboxes the stream did not cover are
 * read one by one (at most mailbox_reads_per_sync), then device statistics.
 * Quick sync: the mailboxes changed since the last sync (WhenChanged, with since_margin_ms of
 * overlap) and, where their lists changed, the list membership of their stored devices; the
 * partnerships changed since then; then device statistics. No removals. A quick sync before the
 * first full sync (or after a change of target revision) runs as a full one.
 * Device statistics (Get-MobileDeviceStatistics: last successful sync, wipe status and times)
 * are fetched only where they matter, at most stats_per_sync per sync with stats_interval_ms
 * between two calls: pending wipes (also every wipe the worker applied), then devices added
 * after the first full sync, then devices whose WhenChanged moved; a pending wipe stays due until
 * it resolves (or EG_INVENTORY_WIPE_WATCH_MS after its request).
 *
 * Deltas (agent/outbox.h kinds): device.added (the record), device.changed ({"device": record,
 * "changed": [field names]}), device.removed ({"mailbox", "device_id"}), mailbox.drift
 * ({"mailbox", "expected": {"allowed", "blocked"}, "actual": {...}, "healed", "command_id"?}) and
 * one sync.completed per sync ({"sync_id", "mode", "mailbox"?, "ok", "error"?, "started_at",
 * "finished_at", "devices", "mailboxes", "added", "changed", "removed", "unchanged", "drift",
 * "healed", "stats", "resync"}). A device record: {"mailbox" (PrimarySmtpAddress when known),
 * "mailbox_identity", "device_id", "identity", "device_type", "model", "os", "user_agent",
 * "access_state", "access_reason", "first_sync", "last_success_sync", "wipe_status",
 * "wipe_requested_at", "wipe_sent_at", "wipe_acknowledged_at", "list" ("allowed" | "blocked" |
 * "none"), "first_seen", "changed_at"}; times RFC 3339, null when unknown. When the outbox asks
 * for a resync (eg_outbox_resync_needed), an unscoped full sync emits every device as
 * device.added, says "resync": true and calls eg_outbox_resync_done in its last transaction -
 * unless the outbox refused one of its records.
 *
 * Drift: where the console declared a mailbox's lists, a sync that reads the mailbox's lists
 * compares them (case-insensitively, as sets) and emits mailbox.drift when they differ; with
 * heal_drift it submits a mailbox.set_devices command with the declared sets to the journal
 * ("inventory-heal-<generation>-<n>", client "easgate:inventory"), so the normal worker path
 * applies and journals it. A mailbox with a list edit in flight, or whose declaration is newer
 * than the lists read, is not judged in that sync.
 *
 * Thread-safe: one sync at a time (the scheduler's thread), reads and the worker's hooks from any
 * thread. Nothing here logs.
 */
#ifndef EG_INVENTORY_H
#define EG_INVENTORY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/outbox.h"
#include "agent/queue.h"
#include "common/error.h"
#include "exchange/bridge.h"

enum eg_inv_mode { EG_INV_QUICK, EG_INV_FULL };
/* "quick" / "full". */
const char *eg_inv_mode_name(enum eg_inv_mode m);

struct eg_inventory;

/* Open or create <state_dir>/inventory.db (directory 0700, files 0600). Returns 0, EG_EINVAL,
 * EG_EIO (errno meaningful), EG_EDB (also a schema newer than this build), EG_ENOMEM. */
int eg_inventory_open(const char *state_dir, struct eg_inventory **ret) EG_MUST_CHECK;
/* No sync, read or hook may be in progress. Accepts NULL. */
void eg_inventory_close(struct eg_inventory *inv);

/* ---- hooks for the worker (all accept inv NULL and then do nothing) ---- */

/* A list edit of mailbox is about to be applied: until the matching eg_inventory_edit_end, no
 * sync judges the mailbox's drift. In memory only; never fails. */
void eg_inventory_edit_begin(struct eg_inventory *inv, const char *mailbox);
/* The edit begun for edit->mailbox ended. applied: Exchange now has the edit's lists; then, when
 * the edit declares lists (has_base) or the mailbox already has declared lists, the declared
 * lists become the edit applied to them (a device.allow after a set_devices moves the device in
 * the declaration too). Returns 0, EG_EINVAL, EG_EDB, EG_ENOMEM (the in-flight mark is dropped in
 * every case). */
int eg_inventory_edit_end(struct eg_inventory *inv, const struct eg_list_edit *edit,
                          bool applied) EG_MUST_CHECK;
/* Record the console's declared lists of mailbox (what a succeeded mailbox.set_devices made
 * them), durably. Strings are borrowed. Returns 0, EG_EINVAL, EG_ELIMIT (a set over
 * EG_MAX_DEVICE_SET), EG_EDB, EG_ENOMEM. */
int eg_inventory_note_desired(struct eg_inventory *inv, const char *mailbox,
                              const char *const *allowed, size_t n_allowed,
                              const char *const *blocked, size_t n_blocked) EG_MUST_CHECK;
/* A wipe (or wipe cancel) of the device was applied: its statistics are due at the next sync
 * (first in line). A device the store does not know yet is left to the next sync. Returns 0,
 * EG_EINVAL, EG_EDB, EG_ENOMEM. */
int eg_inventory_note_wipe(struct eg_inventory *inv, const char *mailbox,
                           const char *device_id) EG_MUST_CHECK;

/* The declared lists of mailbox as {"allowed": [...], "blocked": [...]} (new reference).
 * Returns 0, EG_ENOTFOUND (none declared), EG_EINVAL, EG_EDB, EG_ENOMEM. */
int eg_inventory_desired(struct eg_inventory *inv, const char *mailbox, json_t **ret) EG_MUST_CHECK;

/* ---- syncs ---- */

struct eg_inv_sync_opts {
    enum eg_inv_mode mode;
    const char *mailbox;      /* NULL = every mailbox; else a full sync of that one mailbox */
    struct eg_bridge *bridge; /* required */
    struct eg_outbox *outbox; /* NULL = deltas are counted, not emitted */
    struct eg_queue *queue;   /* where heal commands go; NULL = never heal */
    bool heal_drift;
    void (*healed)(void *ctx); /* called after a heal command was stored (wake the workers) */
    void *healed_ctx;
    unsigned stats_per_sync;         /* statistics calls at most; 0 = none */
    int64_t stats_interval_ms;       /* pause before each statistics call, >= 0 */
    unsigned mailbox_reads_per_sync; /* one-mailbox list reads for declarations; 0 = none */
    int64_t since_margin_ms;         /* overlap of a quick sync's WhenChanged window, >= 0 */
    int64_t target_revision;         /* stored with a completed unscoped full sync */
    int64_t sync_id;                 /* carried into sync.completed */
    atomic_bool *stop;               /* may be NULL; once true the sync ends at the next record */
    atomic_uint_least64_t *progress; /* may be NULL; devices processed so far */
};

struct eg_inv_sync_result {
    enum eg_inv_mode mode; /* what ran (a quick sync may have run as full) */
    int rc;                /* 0, or why the sync failed */
    char error_code[32];   /* the bridge's stable code ("" on success) */
    char error[512];       /* what failed ("" on success) */
    int64_t started_ms, finished_ms;
    uint64_t devices, mailboxes, added, changed, removed, unchanged;
    uint64_t drift, healed, stats, refused; /* refused: records the outbox did not take */
    bool resync;
};

/* Run one sync. ret (required) is filled in every case. Returns 0; EG_EINVAL (options);
 * EG_ESHUTDOWN (stopped through o->stop); the bridge's code when a stream failed (nothing was
 * removed; what earlier chunks found stays committed and emitted); EG_EDB, EG_EIO (the outbox),
 * EG_ENOMEM. A failed sync still emits sync.completed with "ok": false. */
int eg_inventory_sync(struct eg_inventory *inv, const struct eg_inv_sync_opts *o,
                      struct eg_inv_sync_result *ret) EG_MUST_CHECK;

/* What the scheduler needs from the store. */
struct eg_inventory_meta {
    int64_t devices;                                /* rows now */
    int64_t generation;                             /* of the last sync started */
    int64_t last_full_start_ms, last_full_end_ms;   /* last completed unscoped full sync */
    int64_t last_quick_start_ms, last_quick_end_ms; /* last completed unscoped quick sync */
    int64_t synced_revision; /* target revision of the last completed unscoped full sync */
    bool baseline;           /* an unscoped full sync has completed */
};
int eg_inventory_meta(struct eg_inventory *inv, struct eg_inventory_meta *ret) EG_MUST_CHECK;

/* ---- the read API ---- */

struct eg_inv_query {
    const char *mailbox;      /* NULL = all; else PrimarySmtpAddress or Identity, any case */
    int64_t changed_since_ms; /* > 0: only devices added or changed at or after this time */
    const char *cursor;       /* NULL = first page; else a next cursor of an earlier page */
    size_t limit;             /* 1..EG_MAX_PAGE_SIZE */
};

/* One page of device records (the JSON of the deltas), in a stable order. *ret_devices is a new
 * array; *ret_next a new string (eg_free) or NULL on the last page. Returns 0, EG_EINVAL (a bad
 * cursor or limit), EG_EDB, EG_ENOMEM. */
int eg_inventory_list(struct eg_inventory *inv, const struct eg_inv_query *q, json_t **ret_devices,
                      char **ret_next) EG_MUST_CHECK;

#endif
