/* alloc.h - the single allocation path of easgate.
 *
 * All project code allocates through these wrappers; eg_alloc_init() routes jansson, libxml2 and
 * SQLite through them too. Tests can make the n-th allocation fail (eg_alloc_fail_after) to check
 * that every caller turns allocation failure into EG_ENOMEM instead of crashing.
 */
#ifndef EG_ALLOC_H
#define EG_ALLOC_H

#include <stddef.h>
#include <stdarg.h>

/* Route jansson's, libxml2's and SQLite's allocations through eg_malloc/eg_free. Call once at
 * start, before any other thread runs and before SQLite is first used. Idempotent. */
void eg_alloc_init(void);

/* malloc/calloc/realloc lookalikes. Return NULL on failure (or injected failure).
 * eg_realloc never frees the old block on failure. eg_free accepts NULL. */
void *eg_malloc(size_t n);
void *eg_calloc(size_t nmemb, size_t size);
void *eg_realloc(void *p, size_t n);
/* realloc of nmemb*size with overflow check. */
void *eg_reallocarray(void *p, size_t nmemb, size_t size);
void eg_free(void *p);

/* String helpers. Return a new string the caller frees with eg_free, or NULL on failure.
 * eg_strdup(NULL) returns NULL. */
char *eg_strdup(const char *s);
char *eg_strndup(const char *s, size_t n);
char *eg_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *eg_vasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* Free *pp and set it to NULL. */
#define eg_freep(pp)                                                                               \
    do {                                                                                           \
        eg_free(*(pp));                                                                            \
        *(pp) = NULL;                                                                              \
    } while (0)

/* Test hook: after n more successful allocations, every allocation fails until reset with
 * n < 0 (the default, meaning never fail). Process-wide and thread-safe. */
void eg_alloc_fail_after(long n);
/* Number of allocations refused by the hook since the last eg_alloc_fail_after(). */
long eg_alloc_failures(void);

/* Overwrite n bytes at p with zeros in a way the compiler cannot elide (for secrets). */
void eg_memzero(void *p, size_t n);

#endif
