/* util.h - small shared helpers: clocks, bounded file reading, constant-time compare, RFC 3339. */
#ifndef EG_UTIL_H
#define EG_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Wall-clock milliseconds since the Unix epoch. */
int64_t eg_now_ms(void);
/* Monotonic milliseconds (for timeouts and durations). */
int64_t eg_mono_ms(void);

/* Format ms-since-epoch as RFC 3339 UTC with milliseconds ("2026-11-22T10:00:00.123Z") into buf
 * (at least 32 bytes). Returns buf. */
char *eg_format_time(int64_t ms, char *buf, size_t size);

/* Read a whole file of at most max bytes. On success *ret_data is a NUL-terminated buffer the
 * caller frees with eg_free (secrets: eg_memzero first) and *ret_len its length.
 * Errors: EG_EIO (errno set), EG_ELIMIT (file larger than max), EG_ENOMEM. */
int eg_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len) EG_MUST_CHECK;

/* Read the first line of a secret file (a password) of at most max bytes: the line end (LF or
 * CRLF) and everything after it are wiped. *ret is NUL-terminated; the caller wipes it with
 * eg_memzero and frees it. Errors as eg_read_file; the error never contains file bytes. */
int eg_read_secret_line(const char *path, size_t max, char **ret) EG_MUST_CHECK;

/* Write data to path atomically (temp file + fsync + rename) with the given mode. */
int eg_write_file_atomic(const char *path, const void *data, size_t len,
                         unsigned mode) EG_MUST_CHECK;

/* Compare two byte strings in time that depends only on the lengths. */
bool eg_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Strict decimal integer parse of the whole string into [min,max]: no sign tricks, no trailing
 * garbage, no overflow. Returns 0, EG_EINVAL (not a number) or EG_ELIMIT (out of range). */
int eg_parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret) EG_MUST_CHECK;

/* Split "ADDR:PORT" or "[V6]:PORT" into a newly allocated address and a port.
 * Returns 0, EG_EINVAL or EG_ENOMEM. */
int eg_parse_hostport(const char *s, char **ret_addr, uint16_t *ret_port) EG_MUST_CHECK;

/* True for 127.0.0.0/8, ::1 and "localhost". */
bool eg_is_loopback(const char *addr);

#endif
