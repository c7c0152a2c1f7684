/* outbox.h - what the agent owes the console: inventory deltas and command results, kept on disk
 * until the console acknowledges them, and uploaded in order (at least once) by the uploader.
 *
 * Records are appended durably (SQLite WAL, synchronous=FULL, in <state_dir>/outbox.db) and get a
 * strictly increasing record number. The uploader groups them into batches, each with the next
 * per-agent sequence number (1, 2, 3, ... never reused, survives restarts), POSTs them to the
 * upload URL and retries with backoff until the console acknowledges that sequence; only then are
 * the batch's records deleted. The outbox is bounded (EG_OUTBOX_MAX_RECORDS / _BYTES): at the
 * bound, new inventory deltas are not stored; instead the outbox remembers that the console's
 * picture is incomplete and the next full sync uploads a complete snapshot ("resync": true), so
 * nothing is silently lost. Command results are always stored (they are small and bounded by the
 * journal). Thread-safe.
 */
#ifndef EG_OUTBOX_H
#define EG_OUTBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct eg_outbox;

/* Record kinds. */
#define EG_OUTBOX_DEVICE_ADDED "device.added" /* payload: the device record */
#define EG_OUTBOX_DEVICE_CHANGED                                                                   \
    "device.changed" /* payload: {"device": record, "changed": [fields]} */
#define EG_OUTBOX_DEVICE_REMOVED "device.removed" /* payload: {"mailbox", "device_id"} */
#define EG_OUTBOX_DRIFT          "mailbox.drift" /* payload: {"mailbox", "expected", "actual", "healed"} */
#define EG_OUTBOX_SYNC           "sync.completed" /* payload: {"mode", "devices", "added", ...} */
#define EG_OUTBOX_COMMAND        "command.final"  /* payload: the command's API view when final */

/* Open or create <state_dir>/outbox.db (mode 0600). Returns 0, EG_EIO, EG_ENOMEM. */
int eg_outbox_open(const char *state_dir, struct eg_outbox **ret) EG_MUST_CHECK;
void eg_outbox_close(struct eg_outbox *o); /* accepts NULL */

/* Append one record (payload borrowed, serialised at once). Several appends between
 * eg_outbox_begin/eg_outbox_commit are one transaction (a sync's deltas). Returns 0,
 * EG_ELIMIT (the outbox is full: the record was not stored and resync is now flagged),
 * EG_EIO, EG_ENOMEM. */
int eg_outbox_append(struct eg_outbox *o, const char *kind, const json_t *payload) EG_MUST_CHECK;
int eg_outbox_begin(struct eg_outbox *o) EG_MUST_CHECK;

/* Command results are reported once per command id: an append of a command.final record whose
 * payload "id" was appended before (even if since acknowledged) stores nothing and returns 0.
 * eg_outbox_has_final: 1 when id's command.final record was appended, 0 when not, or EG_EIO /
 * EG_EINVAL. Start-up recovery uses it for the final commands of the journal whose record a
 * crash between the journal's commit and the append lost (agent/main.c). */
int eg_outbox_has_final(struct eg_outbox *o, const char *id) EG_MUST_CHECK;
/* The journal seq up to which recovery found every command final and reported (0 at first), and
 * setting it. Returns 0, EG_EIO, EG_EINVAL. */
int eg_outbox_finals_seq(struct eg_outbox *o, int64_t *ret) EG_MUST_CHECK;
int eg_outbox_set_finals_seq(struct eg_outbox *o, int64_t seq) EG_MUST_CHECK;
int eg_outbox_commit(struct eg_outbox *o) EG_MUST_CHECK;
int eg_outbox_rollback(struct eg_outbox *o);

/* True when records were refused since the last complete snapshot: the next full sync must
 * upload every device ("resync"). eg_outbox_resync_done clears it (after such a sync). */
bool eg_outbox_resync_needed(struct eg_outbox *o);
void eg_outbox_resync_done(struct eg_outbox *o);

struct eg_outbox_stats {
    uint64_t records;   /* waiting for an acknowledgement */
    uint64_t bytes;     /* their payload bytes */
    uint64_t next_seq;  /* sequence number the next batch will carry */
    uint64_t acked_seq; /* last sequence the console acknowledged (0 = none) */
    int64_t oldest_ms;  /* append time of the oldest waiting record (0 = none) */
    bool warning;       /* records or bytes above EG_OUTBOX_WARN_FRACTION of the bound */
    bool resync_needed;
    uint64_t refused;     /* records refused (EG_ELIMIT) since open */
    uint64_t pending_seq; /* sequence of the formed, unacknowledged batch (0 = none) */
    uint64_t max_records; /* the bounds in force */
    uint64_t max_bytes;
};
int eg_outbox_stats(struct eg_outbox *o, struct eg_outbox_stats *ret) EG_MUST_CHECK;

/* ---- for the uploader (agent/uploader) and the daemon -------------------------------------- *
 *
 * Batches. At most one batch is pending (formed, not yet acknowledged). Forming one assigns the
 * next sequence number and persists it with its exact record range [first_n, last_n] in the same
 * transaction, so a retry, also after a restart, sends the same sequence with the same records.
 * A batch holds up to EG_OUTBOX_BATCH_RECORDS records and EG_OUTBOX_BATCH_BYTES payload bytes
 * (always at least one record when any waits). A heartbeat is a batch without records: it gets
 * its own sequence number and is acknowledged like any other.
 *
 * Transactions: eg_outbox_begin belongs to the calling thread until its commit or rollback; other
 * threads' appends, batch forming and acks wait for it meanwhile (keep transactions short: a page
 * of a sync, not a whole sync). Statistics never wait. A nested begin is EG_ESTATE; commit or
 * rollback without a begin of this thread is EG_ESTATE.
 *
 * Bounds: only inventory kinds (everything but EG_OUTBOX_COMMAND) are refused at the bound; a
 * record whose payload is over EG_OUTBOX_MAX_RECORD_BYTES is refused (EG_ELIMIT) whatever its
 * kind (inventory kinds then flag resync too). eg_outbox_resync_done keeps the flag when a record
 * was refused in the caller's open transaction. Kinds: 1..EG_OUTBOX_MAX_KIND_LEN characters of
 * [a-z0-9._] (EG_EINVAL otherwise). Storage errors are EG_EIO (also for a database with a schema
 * newer than this build, or a corrupt one).
 */

/* Lower the bounds (default EG_OUTBOX_MAX_RECORDS / EG_OUTBOX_MAX_BYTES; the options
 * outbox_max_records / outbox_max_bytes). Records already stored stay. Returns 0 or EG_EINVAL
 * (0, or above the compiled bound). */
int eg_outbox_set_bounds(struct eg_outbox *o, uint64_t max_records,
                         uint64_t max_bytes) EG_MUST_CHECK;

/* The agent id: a random UUID (lower-case, 36 characters) made when outbox.db was created and
 * kept in it. Borrowed; valid until eg_outbox_close. */
const char *eg_outbox_agent_id(struct eg_outbox *o);

struct eg_outbox_record {
    int64_t n;     /* record number, strictly increasing, never reused */
    char *kind;    /* EG_OUTBOX_* */
    int64_t at_ms; /* append time (wall clock) */
    char *payload; /* compact JSON text of the payload */
    size_t payload_len;
};

struct eg_outbox_batch {
    char agent_id[40];
    uint64_t seq;
    int64_t created_ms; /* when the batch was formed */
    struct eg_outbox_record *records;
    size_t n_records; /* 0 = a heartbeat */
    uint64_t bytes;   /* payload bytes of its records */
};

/* The pending batch if there is one (the same sequence and records as before), else a new batch
 * of the oldest waiting records, else, with heartbeat, a new empty batch. On success *ret is the
 * batch (free with eg_outbox_batch_free). Returns 0, EG_ENOTFOUND (nothing to send), EG_EIO,
 * EG_ENOMEM. */
int eg_outbox_next_batch(struct eg_outbox *o, bool heartbeat,
                         struct eg_outbox_batch **ret) EG_MUST_CHECK;

/* The console acknowledged seq: delete the pending batch and its records, acked_seq = seq, in
 * one transaction. Returns 0, EG_ESTATE (seq is not the pending batch; nothing changed), EG_EIO. */
int eg_outbox_ack(struct eg_outbox *o, uint64_t seq) EG_MUST_CHECK;

void eg_outbox_batch_free(struct eg_outbox_batch *b); /* accepts NULL */

/* Flag resync without refusing a record: the console said it lost batches it had acknowledged
 * (a 409 from a console restored from a backup), so its picture needs a complete snapshot. */
void eg_outbox_request_resync(struct eg_outbox *o);

#endif
