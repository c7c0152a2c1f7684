/* log.h - levelled logging to stderr (journald picks it up).
 *
 * Levels and their meaning:
 *   EG_LOG_ERR     the daemon cannot do something it must (a command failed permanently for an
 *                  internal reason, storage failed, a listener died). An operator should act.
 *   EG_LOG_WARN    something went wrong but was handled (retry, rejected input from a peer,
 *                  reload refused and old state kept).
 *   EG_LOG_NOTICE  normal but significant: start, stop, reload, config in force.
 *   EG_LOG_INFO    one line per unit of work (command accepted, command finished).
 *   EG_LOG_DEBUG   detail for developers.
 * Library-like modules do not log; they return errors and the daemon logs them once.
 * Never pass a secret to these functions.
 */
#ifndef EG_LOG_H
#define EG_LOG_H

#include <stdbool.h>

enum eg_log_level {
    EG_LOG_ERR = 3,
    EG_LOG_WARN = 4,
    EG_LOG_NOTICE = 5,
    EG_LOG_INFO = 6,
    EG_LOG_DEBUG = 7
};

/* Set the most verbose level that is printed (default EG_LOG_NOTICE). */
void eg_log_set_level(enum eg_log_level level);
/* Parse "err|error|warn|warning|notice|info|debug"; 0 or EG_EINVAL. */
int eg_log_level_parse(const char *s, enum eg_log_level *ret);
/* True when a message at level would be printed: check before costly formatting. */
bool eg_log_enabled(enum eg_log_level level);

/* Print one line. When stderr is journald (JOURNAL_STREAM set) the line gets a <N> priority
 * prefix, otherwise a UTC timestamp and the level name. Thread-safe. */
void eg_log(enum eg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define eg_log_err(...)    eg_log(EG_LOG_ERR, __VA_ARGS__)
#define eg_log_warn(...)   eg_log(EG_LOG_WARN, __VA_ARGS__)
#define eg_log_notice(...) eg_log(EG_LOG_NOTICE, __VA_ARGS__)
#define eg_log_info(...)   eg_log(EG_LOG_INFO, __VA_ARGS__)
#define eg_log_debug(...)                                                                          \
    do {                                                                                           \
        if (eg_log_enabled(EG_LOG_DEBUG))                                                          \
            eg_log(EG_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
