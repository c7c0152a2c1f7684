/* notify.c - systemd service notifications through libsystemd's sd_notify(3).
 *
 * Messages are built in fixed buffers (no allocation on the notification path). The watchdog
 * is one thread that waits on a condition variable (CLOCK_MONOTONIC) between pings, so stopping
 * it wakes it at once.
 */
#include "agent/notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "common/alloc.h"
#include "common/limits.h"

/* Room for the fixed fields beside the status text. */
#define MSG_BYTES (EG_MAX_NOTIFY_STATUS_BYTES + 128)

/* Time given to the last steps after the drain (journal close, exit). */
#define STOP_MARGIN_MS 10000

struct eg_notify_watchdog {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    uint64_t interval_us;
    eg_notify_alive_fn alive;
    void *ctx;
};

static int send_msg(const char *msg)
{
    int r = sd_notify(0, msg);
    if (r < 0) {
        errno = -r;
        return EG_EIO;
    }
    return 0;
}

/* Append "STATUS=<text>" to buf (holding len bytes), control characters as spaces. */
static int format_status(char *buf, size_t size, size_t len, const char *fmt, va_list ap)
{
    char text[EG_MAX_NOTIFY_STATUS_BYTES + 1];
    int n = vsnprintf(text, sizeof text, fmt, ap);
    if (n < 0)
        return EG_EINVAL;
    if ((size_t)n > EG_MAX_NOTIFY_STATUS_BYTES)
        return EG_ELIMIT;
    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    n = snprintf(buf + len, size - len, "STATUS=%s", text);
    if (n < 0 || (size_t)n >= size - len)
        return EG_ELIMIT;
    return 0;
}

int eg_notify_ready(const char *fmt, ...)
{
    char msg[MSG_BYTES] = "READY=1\n";
    va_list ap;
    va_start(ap, fmt);
    int rc = format_status(msg, sizeof msg, strlen(msg), fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : send_msg(msg);
}

int eg_notify_status(const char *fmt, ...)
{
    char msg[MSG_BYTES] = "";
    va_list ap;
    va_start(ap, fmt);
    int rc = format_status(msg, sizeof msg, 0, fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : send_msg(msg);
}

int eg_notify_stopping(int64_t drain_ms)
{
    char msg[MSG_BYTES];
    if (drain_ms > 0)
        snprintf(msg, sizeof msg,
                 "STOPPING=1\nSTATUS=draining (up to %lld ms) and stopping\n"
                 "EXTEND_TIMEOUT_USEC=%llu",
                 (long long)drain_ms, (unsigned long long)(drain_ms + STOP_MARGIN_MS) * 1000ULL);
    else
        snprintf(msg, sizeof msg, "STOPPING=1\nSTATUS=stopping");
    return send_msg(msg);
}

static void *watchdog_main(void *arg)
{
    struct eg_notify_watchdog *w = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        pthread_mutex_unlock(&w->lock);
        if (!w->alive || w->alive(w->ctx))
            (void)sd_notify(0, "WATCHDOG=1");
        pthread_mutex_lock(&w->lock);
        uint64_t ns = (uint64_t)next.tv_nsec + (w->interval_us % 1000000ULL) * 1000ULL;
        next.tv_sec += (time_t)(w->interval_us / 1000000ULL + ns / 1000000000ULL);
        next.tv_nsec = (long)(ns % 1000000000ULL);
        while (!w->stop && pthread_cond_timedwait(&w->wake, &w->lock, &next) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int eg_notify_watchdog_start(eg_notify_alive_fn alive, void *ctx, struct eg_notify_watchdog **ret)
{
    struct eg_notify_watchdog *w = NULL;
    pthread_condattr_t ca;
    uint64_t usec = 0;
    int rc = 0;

    if (!ret)
        return EG_EINVAL;
    *ret = NULL;
    int r = sd_watchdog_enabled(0, &usec);
    if (r < 0)
        return EG_EINVAL;
    if (r == 0 || usec < 2)
        return 0;
    w = eg_calloc(1, sizeof *w);
    if (!w)
        return EG_ENOMEM;
    w->interval_us = usec / 2;
    w->alive = alive;
    w->ctx = ctx;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    if ((r = pthread_create(&w->thread, NULL, watchdog_main, w)) != 0) {
        errno = r;
        rc = EG_EIO;
        goto out;
    }
    *ret = w;
    w = NULL;
out:
    if (w) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        eg_free(w);
    }
    return rc;
}

void eg_notify_watchdog_stop(struct eg_notify_watchdog *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    eg_free(w);
}

uint64_t eg_notify_watchdog_interval_us(const struct eg_notify_watchdog *w)
{
    return w ? w->interval_us : 0;
}
