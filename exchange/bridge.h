/* bridge.h - the one interface between the agent and Exchange.
 *
 * Workers call these operations; a backend (dry-run now; PSRP on-prem and REST Online later)
 * implements them. Every operation is synchronous, may be called from several worker threads at
 * once (backends are thread-safe), and reports what it did in Exchange as a JSON array of
 * actions [{"cmdlet": "...", "parameters": {...}}, ...] appended to `actions`.
 *
 * Return: 0 on success; on failure a negative EG_E* code and `err` filled in with a stable
 * console error code (see eg_bridge_error.code), whether a retry may succeed, and Exchange's own
 * exception type and message where there is one.
 */
#ifndef EG_BRIDGE_H
#define EG_BRIDGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

enum eg_access_level { EG_ACCESS_ALLOW, EG_ACCESS_BLOCK, EG_ACCESS_QUARANTINE };
/* "allow" / "block" / "quarantine"; Exchange spells them Allow / Block / Quarantine. */
const char *eg_access_level_name(enum eg_access_level l);
int eg_access_level_parse(const char *s, enum eg_access_level *ret) EG_MUST_CHECK;

/* Where one device should end up after a coalesced list edit. */
enum eg_list_target { EG_LIST_NONE, EG_LIST_ALLOW, EG_LIST_BLOCK };

struct eg_device_override {
    const char *device_id;
    enum eg_list_target target;
};

/* All pending list edits of one mailbox, merged by the worker.
 * Desired lists = (has_base ? base sets : the mailbox's current lists), then every override
 * applied in order. The backend reads the current lists once and sends only the difference,
 * both lists in one Set-CASMailbox with @{Add=...;Remove=...}. */
struct eg_list_edit {
    const char *mailbox;
    bool has_base;
    const char *const *base_allowed;
    size_t n_base_allowed;
    const char *const *base_blocked;
    size_t n_base_blocked;
    const struct eg_device_override *overrides;
    size_t n_overrides;
};

/* Stable error codes for the console. */
#define EG_BERR_INVALID_ARGUMENT  "invalid_argument"
#define EG_BERR_MAILBOX_NOT_FOUND "mailbox_not_found"
#define EG_BERR_DEVICE_NOT_FOUND  "device_not_found"
#define EG_BERR_PERMISSION_DENIED "permission_denied"
#define EG_BERR_UNSUPPORTED       "unsupported"
#define EG_BERR_THROTTLED         "throttled"
#define EG_BERR_UNREACHABLE       "exchange_unreachable"
#define EG_BERR_TIMEOUT           "timeout"
#define EG_BERR_INTERNAL          "internal"

struct eg_bridge_error {
    char code[32];               /* one of EG_BERR_* */
    bool transient;              /* true: retry with backoff; false: fail at once */
    int64_t retry_after_ms;      /* delay Exchange named (0 = none) */
    char message[512];           /* what happened, for the console; never a secret */
    char exchange_type[256];     /* Exchange exception type, "" if none */
    char exchange_message[1024]; /* Exchange's message, "" if none */
};

/* Fill err (helper for backends). */
void eg_bridge_error_set(struct eg_bridge_error *err, const char *code, bool transient,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* One device as Exchange reports it (inventory). Strings may be NULL when unknown. */
struct eg_device_record {
    const char *mailbox;
    const char *device_id;
    const char *identity; /* Exchange Identity (use for wipe/remove) */
    const char *device_type;
    const char *model;
    const char *os;
    const char *user_agent;
    const char *access_state;  /* Allowed, Blocked, Quarantined, DeviceDiscovery */
    const char *access_reason; /* Global, Individual, DeviceRule, Policy, Upgrade */
    const char *wipe_status;
    int64_t first_sync_ms; /* 0 = unknown */
    int64_t last_success_sync_ms;
    /* The mailbox's Identity as Get-CASMailbox reports it (eg_mailbox_record.identity): the
     * device Identity before its ExchangeActiveSyncDevices part. NULL = unknown. */
    const char *mailbox_identity;
    int64_t when_changed_ms; /* WhenChanged of the partnership; 0 = unknown */
    /* Wipe request, directive sent, acknowledgement (Get-MobileDeviceStatistics); 0 = none or
     * unknown. */
    int64_t wipe_request_ms, wipe_sent_ms, wipe_ack_ms;
};

/* Called once per device; a non-zero return stops the page and is returned by inventory_page. */
typedef int (*eg_device_cb)(void *ctx, const struct eg_device_record *dev);

struct eg_inventory_query {
    bool full;
    const char *mailbox; /* NULL = every mailbox */
    size_t page_size;
    int64_t since_ms; /* > 0: only partnerships whose WhenChanged is later (a quick sync) */
};

/* One mailbox's ActiveSync lists as Exchange reports them (inventory). Borrowed for the call. */
struct eg_mailbox_record {
    const char *identity;     /* Exchange Identity (what eg_device_record.mailbox_identity names) */
    const char *primary_smtp; /* NULL = unknown */
    const char *const *allowed; /* ActiveSyncAllowedDeviceIDs */
    size_t n_allowed;
    const char *const *blocked; /* ActiveSyncBlockedDeviceIDs */
    size_t n_blocked;
    int64_t when_changed_ms; /* 0 = unknown */
};

/* Called once per mailbox; a non-zero return stops the stream and is returned. */
typedef int (*eg_mailbox_cb)(void *ctx, const struct eg_mailbox_record *m);

struct eg_mailbox_query {
    /* One mailbox (any identity form Exchange resolves). NULL = every mailbox with an ActiveSync
     * partnership, or with since_ms every mailbox changed since then. */
    const char *mailbox;
    int64_t since_ms; /* > 0: only mailboxes whose WhenChanged is later */
};

struct eg_bridge_ops {
    const char *name;
    int (*list_edit)(void *impl, const struct eg_list_edit *edit, json_t *actions,
                     struct eg_bridge_error *err);
    int (*wipe)(void *impl, const char *mailbox, const char *device_id, bool account_only,
                const char *const *notify, size_t n_notify, json_t *actions,
                struct eg_bridge_error *err);
    int (*wipe_cancel)(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                       struct eg_bridge_error *err);
    int (*remove_device)(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                         struct eg_bridge_error *err);
    /* activesync_enabled: -1 leave, 0/1 set. set_policy: change the policy; policy NULL = reset
     * to the default policy. */
    int (*set_mailbox)(void *impl, const char *mailbox, int activesync_enabled, bool set_policy,
                       const char *policy, json_t *actions, struct eg_bridge_error *err);
    int (*set_org_default_access)(void *impl, enum eg_access_level level, json_t *actions,
                                  struct eg_bridge_error *err);
    /* One page of the inventory starting at cursor (NULL = first page). *ret_next_cursor is a new
     * string (caller frees with eg_free) or NULL when this was the last page. */
    int (*inventory_page)(void *impl, const struct eg_inventory_query *q, const char *cursor,
                          eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                          struct eg_bridge_error *err);
    /* Optional (NULL = not supported). The allowed/blocked lists of the mailboxes q names,
     * streamed: cb once per mailbox. One mailbox that does not exist is mailbox_not_found. */
    int (*mailbox_lists)(void *impl, const struct eg_mailbox_query *q, eg_mailbox_cb cb,
                         void *cb_ctx, struct eg_bridge_error *err);
    /* Optional (NULL = not supported). The statistics of one device (Get-MobileDeviceStatistics:
     * last successful sync, wipe status and times, and what else it reports) as one record to cb.
     * identity is the device's Exchange Identity from the inventory, or NULL to resolve it from
     * mailbox + device_id. Costly in Exchange: call it only for devices that need it. */
    int (*device_stats)(void *impl, const char *mailbox, const char *device_id,
                        const char *identity, eg_device_cb cb, void *cb_ctx,
                        struct eg_bridge_error *err);
    /* Optional (NULL = the server counts as live). One cheap round trip proving the server is
     * usable now: connects (or reopens) if needed and runs a read-only cmdlet. Used by the
     * multi-server health check. 0, or a negative EG_E* code with err filled in. */
    int (*probe)(void *impl, struct eg_bridge_error *err);
    /* Optional (NULL = nothing to say). A new JSON object describing the backend for
     * GET /api/v1/status: at least {"kind": ..., "version": ...}; a multi-server backend adds
     * "servers": [{"url", "state": "reachable"|"unreachable", "last_error", ...}]. NULL on OOM. */
    json_t *(*status)(void *impl);
    void (*destroy)(void *impl);
};

struct eg_bridge {
    const struct eg_bridge_ops *ops;
    void *impl;
};

/* ops->probe, or 0 when the backend has none. EG_EINVAL for NULL. */
int eg_bridge_probe(struct eg_bridge *b, struct eg_bridge_error *err) EG_MUST_CHECK;
/* ops->status, or {"kind": ops->name} when the backend has none. New reference; NULL on OOM. */
json_t *eg_bridge_status(struct eg_bridge *b);

/* Destroy a bridge created by a backend constructor. Accepts NULL. */
void eg_bridge_free(struct eg_bridge *b);

/* ---- dry-run backend ----
 * Records the cmdlets it would run instead of running them, and keeps an in-memory model of
 * every mailbox's allowed/blocked lists, the org default and wipe requests so that the difference
 * computation is real. Safe for concurrent use. latency_ms (>= 0) simulates Exchange's per-call
 * latency. */
int eg_bridge_dryrun_new(int latency_ms, struct eg_bridge **ret) EG_MUST_CHECK;

/* Dry-run introspection for tests and the demo: the current lists of a mailbox as JSON
 * {"allowed":[...],"blocked":[...]} (new reference), or NULL if the mailbox was never touched. */
json_t *eg_bridge_dryrun_lists(struct eg_bridge *b, const char *mailbox);
/* Number of bridge calls made so far (each is one Exchange round trip). */
size_t eg_bridge_dryrun_calls(struct eg_bridge *b);

#endif
