/* uploader.h - sends the outbox (agent/outbox) to the console: one thread that POSTs batches to
 * the upload URL of the runtime configuration, in sequence order, until each is acknowledged.
 *
 * Each round the thread re-reads the settings (upload.url, upload.hmac_key: a change applies at
 * the next round and resets the backoff). Without a URL records wait ("not configured"); without
 * a key nothing is sent either (uploads are never sent unsigned). It takes the pending batch, or
 * forms the next one (eg_outbox_next_batch), POSTs it as JSON
 *   {"agent_id": "<uuid>", "seq": N, "sent_at": "<RFC 3339>",
 *    "records": [{"n": 17, "kind": "command.final", "at": "<RFC 3339>", "payload": {...}}, ...]}
 * with Content-Type application/json and X-Easgate-Signature: t=<unix seconds>,v1=<hex> where
 * hex is HMAC-SHA256(key = upload.hmac_key, message = "<t>.<body>") (also X-Easgate-Agent and
 * X-Easgate-Seq, for logs). Only HTTP 200 with a JSON object {"ack": N} for this very N is an
 * acknowledgement: then the batch and its records are deleted and the next one goes. Anything
 * else is a failure and the same batch (same seq, same records) is sent again after a backoff:
 * exponential from retry_min_ms to retry_max_ms with jitter (uniform in [d/2, d], at least
 * retry_min_ms), never shorter than a Retry-After the console sent (up to
 * EG_UPLOAD_MAX_RETRY_AFTER_MS). A 409 {"expected": M} (the console lost state, or has more than
 * the agent) is a failure like the others: nothing is skipped, status shows both numbers, and when
 * the console is behind (M < N) the next full inventory sync is flagged as a complete snapshot
 * (resync). After heartbeat_ms without a successful POST and with nothing waiting, a batch
 * without records is sent (its own sequence number): the console sees the agent alive.
 *
 * The thread logs state changes (first failure, recovery, the outbox warning) through
 * common/log, never the key or a signature. Status and metrics never wait for a POST.
 */
#ifndef EG_UPLOADER_H
#define EG_UPLOADER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/outbox.h"
#include "common/error.h"

/* Settings of one round. Strings are owned by the struct; free with eg_upload_settings_clear. */
struct eg_upload_settings {
    char *url;        /* NULL = upload not configured */
    char *hmac_key;   /* secret (wiped by eg_upload_settings_clear); NULL = not set */
    int64_t revision; /* of the document they come from; a change resets the backoff */
};
void eg_upload_settings_clear(struct eg_upload_settings *s);

/* Fill *ret (zeroed by the caller) with the current settings. Returns 0 or a negative EG_E*
 * code (the round is skipped and retried a second later). */
typedef int (*eg_upload_settings_fn)(void *ctx, struct eg_upload_settings *ret);

struct eg_uploader_opts {
    struct eg_outbox *outbox; /* required, borrowed: must outlive the uploader */
    eg_upload_settings_fn settings;
    void *settings_ctx;
    int64_t heartbeat_ms; /* 0 = EG_UPLOAD_DEFAULT_HEARTBEAT_S; else 1000..MAX_HEARTBEAT_S s */
    int64_t retry_min_ms; /* 0 = EG_UPLOAD_MIN_BACKOFF_MS */
    int64_t retry_max_ms; /* 0 = EG_UPLOAD_MAX_BACKOFF_MS; >= retry_min_ms */
    int64_t timeout_ms;   /* one POST; 0 = EG_UPLOAD_TIMEOUT_MS */
    const char *ca_file;  /* PEM trust anchors for an https console; NULL = the system store */
};

struct eg_uploader;

/* Start the thread. Returns 0, EG_EINVAL (missing outbox or settings, options out of range),
 * EG_ENOMEM. */
int eg_uploader_start(const struct eg_uploader_opts *o, struct eg_uploader **ret) EG_MUST_CHECK;

/* Records were appended: send without waiting for the next poll (not during a backoff). */
void eg_uploader_notify(struct eg_uploader *u);

/* Stop: wait up to drain_ms for a POST in flight to end (its acknowledgement is recorded), join
 * the thread and free. Returns 0 (also for NULL) or EG_ETIMEDOUT: the POST outlived drain_ms and
 * the uploader is left running (it still uses the outbox: do not close it; exit the process).
 * An unacknowledged batch is sent again, with its sequence, after the next start. */
int eg_uploader_stop(struct eg_uploader *u, int64_t drain_ms);

/* Append a command.final record (payload: the command's API view, borrowed) and wake the thread.
 * view NULL means the caller could not build it (no memory): counted, EG_ENOMEM. Returns
 * eg_outbox_append's code; failures are counted (easgate_outbox_append_failures_total) and the
 * caller logs them. */
int eg_uploader_record_command(struct eg_uploader *u, const json_t *view) EG_MUST_CHECK;

/* Append the command.final records of views[0..n) (borrowed; a NULL entry is counted as
 * EG_ENOMEM and skipped) in one outbox transaction - one commit, one fsync, for a finished
 * batch - and wake the thread once. rcs[i] gets each record's own code (0 or what
 * eg_outbox_append returned); when the transaction cannot be opened or committed, the records
 * are appended one by one instead, so none is lost to a failed commit. Returns 0 when every
 * record was stored, otherwise the first failure's code. */
int eg_uploader_record_commands(struct eg_uploader *u, const json_t *const *views, size_t n,
                                int *rcs) EG_MUST_CHECK;

/* "upload" of GET /api/v1/status: {"url_configured", "url", "state", "message", "agent_id",
 * "records", "bytes", "next_seq", "acked_seq", "pending_seq", "oldest_age_s", "warning",
 * "resync_needed", "refused", "failures", "last_error", "last_error_at", "last_success_at",
 * "next_attempt_at", "conflict"}; state is one of "not_configured", "no_key", "idle",
 * "sending", "retrying". New reference; NULL on allocation failure. */
json_t *eg_uploader_status(struct eg_uploader *u);

/* Append the outbox and upload series in the Prometheus text format to *text (a string from
 * eg_malloc, may be NULL; replaced by a longer one). Returns 0 or EG_ENOMEM (*text unchanged).
 *   easgate_outbox_records, easgate_outbox_bytes, easgate_outbox_oldest_age_seconds,
 *   easgate_outbox_warning, easgate_outbox_resync_needed (gauges); easgate_outbox_refused_total,
 *   easgate_outbox_append_failures_total, easgate_upload_batches_total,
 *   easgate_upload_heartbeats_total, easgate_upload_records_total,
 *   easgate_upload_failures_total{reason} (counters); easgate_upload_acked_seq (gauge). */
int eg_uploader_metrics(struct eg_uploader *u, char **text) EG_MUST_CHECK;

/* ---- the wire format, exported for tests ---------------------------------------------------- */

/* The JSON body of batch b, sent at sent_ms. *ret is a new string (eg_free), *ret_len its
 * length. Returns 0 or EG_ENOMEM. */
int eg_upload_body(const struct eg_outbox_batch *b, int64_t sent_ms, char **ret,
                   size_t *ret_len) EG_MUST_CHECK;

/* The X-Easgate-Signature value "t=<t>,v1=<64 hex>" for body (len bytes) with key, into out
 * (at least EG_UPLOAD_SIGNATURE_LEN bytes). Returns 0, EG_EINVAL, EG_ETLS (HMAC failed). */
#define EG_UPLOAD_SIGNATURE_LEN 96
int eg_upload_sign(const char *key, int64_t t, const char *body, size_t len,
                   char out[EG_UPLOAD_SIGNATURE_LEN]) EG_MUST_CHECK;

/* Judge the console's answer to batch seq. Returns 0 (acknowledged), EG_ECONFLICT (409 with
 * {"expected": M}: *ret_expected = M), EG_EPROTO (200 that is not {"ack": seq}), EG_EREMOTE (any
 * other status). why (may be NULL) gets a sentence with the status and what was wrong. */
int eg_upload_judge(long status, const char *body, size_t len, uint64_t seq, uint64_t *ret_expected,
                    char *why, size_t whylen);

/* Delay before attempt failures + 1 (failures >= 1): d = min(max, min * 2^(failures-1)),
 * uniform in [d/2, d], at least min_ms, and never shorter than retry_after_ms (itself cut to
 * EG_UPLOAD_MAX_RETRY_AFTER_MS). */
int64_t eg_upload_backoff_ms(unsigned failures, int64_t min_ms, int64_t max_ms,
                             int64_t retry_after_ms);

/* A Retry-After value (delta-seconds or an IMF-fixdate) in ms from now_ms; -1 if absent or not
 * understood, 0 for a date in the past. */
int64_t eg_upload_retry_after_ms(const char *value, int64_t now_ms);

#endif
