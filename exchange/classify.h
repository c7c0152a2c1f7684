/* classify.h - Exchange errors to the console's stable codes (exchange-semantics.md §12, §13).
 *
 * Classification is on exception type names, FullyQualifiedErrorId, WS-Man fault kinds and
 * message patterns - never on the per-throw-site hex token. Throttling texts that name a delay
 * ("... at least Z milliseconds", "Please wait for N seconds", micro-delay warnings) give
 * retry_after_ms. Shared by every backend.
 */
#ifndef EG_CLASSIFY_H
#define EG_CLASSIFY_H

#include <stdint.h>

#include "exchange/bridge.h"
#include "exchange/psrp_objects.h"
#include "exchange/psrp_pool.h"

/* What the failing cmdlet was about, to tell mailbox_not_found from device_not_found. */
enum eg_classify_target { EG_TARGET_MAILBOX, EG_TARGET_DEVICE, EG_TARGET_ORG };

/* An Exchange error record (non-terminating, or a failed pipeline's) -> out. */
void eg_classify_record(const struct eg_ps_error_record *er, enum eg_classify_target target,
                        struct eg_bridge_error *out);

/* An exception type (full or short name; NULL or "" when unknown) and its message, as sources
 * without an error record report them (Exchange Online's REST errors: "Code|Type|Message",
 * X-ExceptionType) -> out, by the same rules as eg_classify_record (a record with that type and
 * message and no category). */
void eg_classify_exception(const char *exception_type, const char *message,
                           enum eg_classify_target target, struct eg_bridge_error *out);

/* True when err says Exchange is overloaded (code throttled because of a session ceiling, quota,
 * budget, micro-delay, HTTP 429 ...), false for everything else, including the throttled code
 * given to "the lists changed meanwhile" (a conflict, not load). For the concurrency gate. */
bool eg_classify_is_load(const struct eg_bridge_error *err);

/* A failed pool operation (transport, fault, pool, pipeline, protocol) -> out. Pipeline and pool
 * failures with a record are classified as eg_classify_record does. */
void eg_classify_psrp(const struct eg_psrp_error *e, enum eg_classify_target target,
                      struct eg_bridge_error *out);

/* The delay a throttling text names, in ms: "at least Z milliseconds", "wait for N seconds",
 * "Micro delay applied. Actual delayed: N msecs". -1 when the text names none. */
int64_t eg_classify_named_delay_ms(const char *text);

/* True for texts that mean "too much load, back off" (session ceiling, quota, commands per
 * shell, connection budget, concurrent requests per tenant). */
bool eg_classify_is_throttle_text(const char *text);

#endif
