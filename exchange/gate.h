/* gate.h - an adaptive concurrency limit for calls into Exchange.
 *
 * At most `limit` calls run at once, limit starting at the configured ceiling. When Exchange says
 * it is overloaded (too many shells, a budget or quota, concurrent requests per tenant: a
 * throttled outcome) the limit is halved (never below 1); after `recover_after` consecutive
 * successful calls it grows by one again, never above the ceiling (additive increase,
 * multiplicative decrease). Thread-safe.
 */
#ifndef EG_GATE_H
#define EG_GATE_H

#include <stdint.h>

#include "common/error.h"

enum eg_gate_outcome {
    EG_GATE_OK,        /* the call succeeded (or failed for a reason that is not load) */
    EG_GATE_THROTTLED, /* Exchange pushed back: shells, quota, budget, 429 */
    EG_GATE_ERROR,     /* any other failure: neither grows nor shrinks the limit */
};

struct eg_gate;

/* ceiling 1..EG_PSRP_MAX_PIPELINES, recover_after >= 1. Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_gate_new(unsigned ceiling, unsigned recover_after, struct eg_gate **ret) EG_MUST_CHECK;
void eg_gate_free(struct eg_gate *g); /* accepts NULL; no call may be inside */

/* Wait until a slot is free under the current limit, up to timeout_ms (< 0 = forever).
 * Returns 0 or EG_ETIMEDOUT. */
int eg_gate_enter(struct eg_gate *g, int64_t timeout_ms) EG_MUST_CHECK;
/* Leave the slot taken by a successful eg_gate_enter, reporting how the call went. */
void eg_gate_leave(struct eg_gate *g, enum eg_gate_outcome outcome);

unsigned eg_gate_limit(const struct eg_gate *g);  /* current limit */
unsigned eg_gate_inside(const struct eg_gate *g); /* calls inside now */
unsigned eg_gate_ceiling(const struct eg_gate *g);
uint64_t eg_gate_throttles(const struct eg_gate *g); /* throttled outcomes so far */

#endif
