/* log.c - levelled logging to stderr. */
#include "common/log.h"
#include "common/error.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int cur_level = EG_LOG_NOTICE;

static const char *level_name(enum eg_log_level l)
{
    switch (l) {
    case EG_LOG_ERR:
        return "error";
    case EG_LOG_WARN:
        return "warn";
    case EG_LOG_NOTICE:
        return "notice";
    case EG_LOG_INFO:
        return "info";
    case EG_LOG_DEBUG:
        return "debug";
    }
    return "?";
}

void eg_log_set_level(enum eg_log_level level)
{
    atomic_store(&cur_level, (int)level);
}

int eg_log_level_parse(const char *s, enum eg_log_level *ret)
{
    static const struct {
        const char *n;
        enum eg_log_level l;
    } t[] = {{"err", EG_LOG_ERR},      {"error", EG_LOG_ERR},     {"warn", EG_LOG_WARN},
             {"warning", EG_LOG_WARN}, {"notice", EG_LOG_NOTICE}, {"info", EG_LOG_INFO},
             {"debug", EG_LOG_DEBUG}};
    if (!s)
        return EG_EINVAL;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcasecmp(s, t[i].n) == 0) {
            *ret = t[i].l;
            return 0;
        }
    return EG_EINVAL;
}

bool eg_log_enabled(enum eg_log_level level)
{
    return (int)level <= atomic_load(&cur_level);
}

void eg_log(enum eg_log_level level, const char *fmt, ...)
{
    if (!eg_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One line per message: fold control characters so peers cannot forge log lines. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    if (getenv("JOURNAL_STREAM")) {
        fprintf(stderr, "<%d>%s\n", (int)level, msg);
        return;
    }
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-6s %s\n", when, ts.tv_nsec / 1000000, level_name(level), msg);
}
