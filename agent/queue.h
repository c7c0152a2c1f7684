/* queue.h - the durable command journal (SQLite, WAL) and its state machine.
 *
 * A command is on disk (committed with synchronous=FULL) before eg_queue_submit returns, so a
 * 202 is never given for something a crash can lose. Concurrent submitters share commits (group
 * commit). States:
 *
 *   queued -> running -> succeeded | failed
 *                     -> retrying -> running ...
 *   queued | retrying -> cancelled        (eg_queue_cancel)
 *   running -> queued                     (eg_queue_open after a crash)
 *
 * All functions are thread-safe. Records returned are owned by the caller
 * (eg_cmd_record_free / eg_cmd_records_free).
 */
#ifndef EG_QUEUE_H
#define EG_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

enum eg_cmd_state {
    EG_STATE_QUEUED,
    EG_STATE_RUNNING,
    EG_STATE_RETRYING,
    EG_STATE_SUCCEEDED,
    EG_STATE_FAILED,
    EG_STATE_CANCELLED,
    EG_STATE__COUNT
};

const char *eg_cmd_state_name(enum eg_cmd_state s);
int eg_cmd_state_parse(const char *s, enum eg_cmd_state *ret) EG_MUST_CHECK;
bool eg_cmd_state_is_final(enum eg_cmd_state s);

struct eg_cmd_record {
    int64_t seq;       /* acceptance order, unique, increasing */
    char *id;          /* console id */
    char *type;        /* "device.allow" ... */
    char *mailbox_key; /* lower-cased mailbox or NULL */
    char *body;        /* canonical command JSON */
    char *client;      /* console identity that submitted it (cert subject or "token") */
    enum eg_cmd_state state;
    int attempts; /* times a worker has started it */
    int64_t created_ms, updated_ms, started_ms, finished_ms, next_attempt_ms; /* 0 = never */
    char *result;        /* JSON text or NULL */
    char *error_code;    /* stable code or NULL */
    char *error_message; /* NULL when none */
    char *error_detail;  /* JSON text (Exchange exception type/message) or NULL */
};

struct eg_queue;

/* One command to submit. All strings are borrowed for the call. */
struct eg_submit {
    const char *id;
    const char *type;
    const char *mailbox_key; /* may be NULL */
    const char *body;        /* canonical JSON; idempotency compares it byte for byte */
    const char *client;      /* may be NULL */
};

enum eg_submit_outcome {
    EG_SUBMIT_CREATED, /* new command stored */
    EG_SUBMIT_EXISTS,  /* same id and same body already stored: nothing written */
    EG_SUBMIT_CONFLICT /* same id, different body */
};

/* Open (creating if needed, mode 0700 dir / 0600 files) the journal at state_dir/easgate.db.
 * Commands left `running` by a crash go back to `queued`. Errors: EG_EIO, EG_EDB, EG_ENOMEM. */
int eg_queue_open(const char *state_dir, struct eg_queue **ret) EG_MUST_CHECK;
/* Close; accepts NULL. No other call may be in progress. */
void eg_queue_close(struct eg_queue *q);

/* Submit n commands atomically and durably. outcomes[i] and records[i] (a new record with the
 * command's current state; caller frees with eg_cmd_records_free) are filled for every item.
 * If any item conflicts, nothing is written and EG_ECONFLICT is returned (outcomes still say
 * which; records[i] is then NULL for items that are not stored). An id repeated inside one call
 * is judged against its first occurrence. On other errors every records[i] is NULL.
 * Returns 0, EG_ECONFLICT, EG_EDB, EG_ENOMEM. */
int eg_queue_submit(struct eg_queue *q, const struct eg_submit *items, size_t n,
                    enum eg_submit_outcome *outcomes, struct eg_cmd_record **records) EG_MUST_CHECK;

/* Current record of id. Returns 0, EG_ENOTFOUND, EG_EDB, EG_ENOMEM. */
int eg_queue_get(struct eg_queue *q, const char *id, struct eg_cmd_record **ret) EG_MUST_CHECK;

/* Page of records with seq > after_seq in seq order, optionally only in one state
 * (state_filter < 0 = all), at most limit. *ret_next is the seq to pass as after_seq for the next
 * page, or 0 when there are no more. */
int eg_queue_list(struct eg_queue *q, int state_filter, int64_t after_seq, size_t limit,
                  struct eg_cmd_record ***ret, size_t *ret_n, int64_t *ret_next) EG_MUST_CHECK;

/* Cancel a command that is queued or retrying. *ret (optional) gets the new record.
 * Returns 0, EG_ENOTFOUND, EG_ESTATE (running or already final; *ret still filled), EG_EDB. */
int eg_queue_cancel(struct eg_queue *q, const char *id, struct eg_cmd_record **ret) EG_MUST_CHECK;

/* Claim work for one worker: the oldest eligible command (queued, or retrying with
 * next_attempt_ms <= now_ms) whose mailbox_key is not busy (is_busy may be NULL). If that
 * command's type is in coalesce_types (array of type names, NULL-terminated, may be NULL), also
 * claim every other eligible command with the same mailbox_key and a type in coalesce_types, in
 * seq order, up to max in all. Claimed commands become running, attempts+1, started_ms = now.
 * *ret_n = 0 when there is nothing to do. Per mailbox_key the queue keeps acceptance order and
 * one batch in flight: only the oldest non-final commands of a mailbox are taken (coalescing
 * stops at the first one that cannot be), never while one of its commands is running.
 * is_busy is called with the queue locked and must not call into the queue. */
int eg_queue_claim(struct eg_queue *q, int64_t now_ms,
                   bool (*is_busy)(const char *mailbox_key, void *ctx), void *busy_ctx,
                   const char *const *coalesce_types, size_t max, struct eg_cmd_record ***ret,
                   size_t *ret_n) EG_MUST_CHECK;

/* Final outcome of a running command: state is EG_STATE_SUCCEEDED or EG_STATE_FAILED.
 * result / error_* may be NULL. Returns 0, EG_ENOTFOUND, EG_ESTATE (not running), EG_EDB. */
int eg_queue_finish(struct eg_queue *q, const char *id, enum eg_cmd_state state, const char *result,
                    const char *error_code, const char *error_message,
                    const char *error_detail) EG_MUST_CHECK;

/* Running -> retrying, eligible again at next_attempt_ms; records the error that caused it. */
int eg_queue_retry(struct eg_queue *q, const char *id, int64_t next_attempt_ms,
                   const char *error_code, const char *error_message,
                   const char *error_detail) EG_MUST_CHECK;

/* The outcome of one running command: state EG_STATE_SUCCEEDED or EG_STATE_FAILED (with result
 * or error_*), or EG_STATE_RETRYING (eligible again at next_attempt_ms, with the error that
 * caused it). Strings are borrowed for the call. */
struct eg_queue_outcome {
    const char *id;
    enum eg_cmd_state state;
    int64_t next_attempt_ms;
    const char *result, *error_code, *error_message, *error_detail;
};

/* Record n outcomes in one transaction (one fsync for a coalesced batch). results (optional, n
 * entries) gets each item's own code: 0, EG_ENOTFOUND, EG_ESTATE (not running), EG_EINVAL. A
 * storage error rolls everything back and is returned (every results[i] set to it); otherwise
 * returns 0 even when some items were refused (see results). */
int eg_queue_record_outcomes(struct eg_queue *q, const struct eg_queue_outcome *v, size_t n,
                             int *results) EG_MUST_CHECK;

/* Number of commands in each state. */
int eg_queue_counts(struct eg_queue *q, int64_t counts[EG_STATE__COUNT]) EG_MUST_CHECK;

/* Earliest next_attempt_ms among retrying commands, or 0 if none (lets workers sleep).
 * Retrying commands blocked behind an older command of their mailbox are not counted. */
int64_t eg_queue_next_wakeup(struct eg_queue *q);

/* Statistic for tests and benchmarks: transactions committed by eg_queue_submit so far (with
 * group commit, fewer than the number of submit calls under concurrency). */
int64_t eg_queue_commits(struct eg_queue *q);

void eg_cmd_record_free(struct eg_cmd_record *r);
void eg_cmd_records_free(struct eg_cmd_record **v, size_t n);

#endif
