/* notify.h - systemd service notifications (sd_notify): readiness, status lines, the watchdog
 * and the stop announcement of a Type=notify service (installer/linux/easgate.service).
 *
 * Every function is a no-op that returns 0 when the process was not started by systemd with a
 * notification socket (NOTIFY_SOCKET unset), so the daemon calls them unconditionally. Status
 * texts are one line: control characters are sent as spaces; a text longer than
 * EG_MAX_NOTIFY_STATUS_BYTES is refused (EG_ELIMIT) and nothing is sent. Nothing here logs.
 * Thread-safe.
 */
#ifndef EG_NOTIFY_H
#define EG_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

/* READY=1 and STATUS=<fmt...>: call once the API listens and the workers run.
 * Returns 0 (sent, or no notification socket), EG_ELIMIT, EG_EIO (sending failed; errno set). */
int eg_notify_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STATUS=<fmt...> (shown by systemctl status). Returns as eg_notify_ready. */
int eg_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STOPPING=1 with STATUS=draining; with drain_ms > 0 also EXTEND_TIMEOUT_USEC of drain_ms plus
 * a margin, so a drain longer than TimeoutStopSec= is not cut short. Returns as
 * eg_notify_ready. */
int eg_notify_stopping(int64_t drain_ms);

/* Liveness check consulted before each watchdog ping; false skips the ping (systemd then
 * restarts the service once WatchdogSec= passes without one). Called from the watchdog thread. */
typedef bool (*eg_notify_alive_fn)(void *ctx);

struct eg_notify_watchdog;

/* Start the watchdog when systemd enabled it for this process (WATCHDOG_USEC, WATCHDOG_PID; see
 * sd_watchdog_enabled(3)): a thread sends WATCHDOG=1 at once and then every half of
 * WATCHDOG_USEC, each time alive(ctx) says true (alive NULL: always). Call it with the daemon's
 * signals blocked: the thread inherits the caller's signal mask.
 * *ret is the running watchdog (stop with eg_notify_watchdog_stop), or NULL when the watchdog
 * is not enabled. Returns 0, EG_EINVAL (ret NULL, or WATCHDOG_USEC malformed), EG_ENOMEM,
 * EG_EIO (the thread could not be started). */
int eg_notify_watchdog_start(eg_notify_alive_fn alive, void *ctx,
                             struct eg_notify_watchdog **ret) EG_MUST_CHECK;

/* Stop the thread (promptly: it is woken, not waited out) and free w. Accepts NULL. */
void eg_notify_watchdog_stop(struct eg_notify_watchdog *w);

/* The interval between two pings of w in microseconds (half of WATCHDOG_USEC); 0 for NULL. */
uint64_t eg_notify_watchdog_interval_us(const struct eg_notify_watchdog *w);

#endif
