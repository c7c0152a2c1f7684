/* bridge_multi.h - several Exchange servers of one organisation behind one bridge.
 *
 * The server-list semantics admins know from Sentry: with EG_MULTI_PRIORITY every call goes to
 * the first live server of the list; with EG_MULTI_ROUND_ROBIN calls rotate over the live
 * servers. A server-level failure (code exchange_unreachable or timeout, i.e. the server rather
 * than the request is at fault) counts against that server and the same call is tried once on
 * each other live server before the error is returned; an error about the request itself
 * (mailbox_not_found, permission_denied, throttled, ...) is returned as it is and does not count.
 * A server is marked dead after dead_threshold failures within failure_window_ms and is skipped
 * for at least dead_time_ms. A background thread probes every server (eg_bridge_probe) every
 * health_interval_s; a dead server whose dead_time has passed is live again after live_threshold
 * consecutive successful probes, and probe failures of live servers count like call failures.
 * With no live server a call fails at once with a transient exchange_unreachable error naming
 * each server's last error. Thread-safe.
 */
#ifndef EG_BRIDGE_MULTI_H
#define EG_BRIDGE_MULTI_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/bridge.h"

enum eg_multi_policy { EG_MULTI_PRIORITY, EG_MULTI_ROUND_ROBIN };

/* "priority" / "round_robin"; 0 or EG_EINVAL. */
int eg_multi_policy_parse(const char *s, enum eg_multi_policy *ret) EG_MUST_CHECK;
const char *eg_multi_policy_name(enum eg_multi_policy p);

struct eg_bridge_multi_opts {
    enum eg_multi_policy policy;
    unsigned dead_threshold;    /* failures that mark a server dead, 1..100 (default 3) */
    int64_t failure_window_ms;  /* 1000..3600000 (default 60000) */
    int64_t dead_time_ms;       /* 1000..3600000 (default 30000) */
    unsigned health_interval_s; /* 10..600 (default 60) */
    unsigned live_threshold;    /* 1..10 (default 3) */
};

/* The defaults above. */
void eg_bridge_multi_opts_default(struct eg_bridge_multi_opts *o);

/* Validate o: 0, or EG_EINVAL with a sentence naming the field, its value and the allowed range
 * written to why (NUL-terminated, never truncated mid-word for whylen >= 128). */
int eg_bridge_multi_opts_check(const struct eg_bridge_multi_opts *o, char *why,
                               size_t whylen) EG_MUST_CHECK;

/* Create a multi-server bridge over servers[0..n-1] (1..EG_MAX_SERVERS_PER_TARGET), names[i]
 * being how server i is shown in status and errors (its URL; copied). Takes ownership of every
 * servers[i] on success and on failure (they are freed). Starts the health-check thread.
 * Returns 0, EG_EINVAL (bad opts, n out of range, NULL server), EG_ENOMEM. */
int eg_bridge_multi_new(const struct eg_bridge_multi_opts *o, struct eg_bridge **servers,
                        const char *const *names, size_t n, struct eg_bridge **ret) EG_MUST_CHECK;

/* Run one health-check round now, synchronously (tests; the thread does the same on its own). */
void eg_bridge_multi_check_now(struct eg_bridge *b);

/* Live servers right now (0..n). */
size_t eg_bridge_multi_live(struct eg_bridge *b);

/* ---- test hooks (unit tests only; call before other threads use b) ----
 * Replace the monotonic clock behind failure windows and dead times by now_ms(ctx), which must
 * be thread-safe (NULL = CLOCK_MONOTONIC again). Status timestamps stay wall-clock. */
void eg_bridge_multi_set_clock_for_test(struct eg_bridge *b, int64_t (*now_ms)(void *ctx),
                                        void *ctx);
/* Run the health-check thread every interval_ms (> 0) instead of every health_interval_s;
 * 0 = back to health_interval_s. Wakes the thread so the new interval applies at once. */
void eg_bridge_multi_set_interval_for_test(struct eg_bridge *b, int64_t interval_ms);

#endif
