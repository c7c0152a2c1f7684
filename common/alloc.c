/* alloc.c - allocation wrappers with failure injection. */
#include "common/alloc.h"

#include <jansson.h>
#include <libxml/xmlmemory.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <malloc.h>
#define usable_size(p) _msize(p)
#else
#include <malloc.h>
#define usable_size(p) malloc_usable_size(p)
#endif

static atomic_long fail_countdown = -1;
static atomic_long fail_count = 0;

static int should_fail(void)
{
    long v = atomic_load(&fail_countdown);
    while (v >= 0) {
        if (v == 0) {
            atomic_fetch_add(&fail_count, 1);
            return 1;
        }
        if (atomic_compare_exchange_weak(&fail_countdown, &v, v - 1))
            return 0;
    }
    return 0;
}

void eg_alloc_fail_after(long n)
{
    atomic_store(&fail_count, 0);
    atomic_store(&fail_countdown, n < 0 ? -1 : n);
}

long eg_alloc_failures(void)
{
    return atomic_load(&fail_count);
}

void *eg_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *eg_calloc(size_t nmemb, size_t size)
{
    if (should_fail())
        return NULL;
    if (nmemb == 0 || size == 0)
        nmemb = size = 1;
    return calloc(nmemb, size);
}

void *eg_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void *eg_reallocarray(void *p, size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size)
        return NULL;
    return eg_realloc(p, nmemb * size);
}

void eg_free(void *p)
{
    free(p);
}

char *eg_strdup(const char *s)
{
    if (!s)
        return NULL;
    return eg_strndup(s, strlen(s));
}

char *eg_strndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    size_t len = strnlen(s, n);
    char *d = eg_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *eg_vasprintf(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *s = eg_malloc((size_t)n + 1);
    if (!s)
        return NULL;
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *eg_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = eg_vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

static char *xml_strdup(const char *s)
{
    return eg_strdup(s);
}

/* SQLite's memory methods on top of eg_malloc (so injected failures reach it too: it answers
 * SQLITE_NOMEM, which the stores map to EG_ENOMEM). SQLite asks for sizes as int. */
static void *sq_malloc(int n)
{
    return n > 0 ? eg_malloc((size_t)n) : NULL;
}

static void sq_free(void *p)
{
    eg_free(p);
}

static void *sq_realloc(void *p, int n)
{
    return n > 0 ? eg_realloc(p, (size_t)n) : NULL;
}

static int sq_size(void *p)
{
    return p ? (int)usable_size(p) : 0;
}

static int sq_roundup(int n)
{
    return (n + 7) & ~7;
}

static int sq_init(void *ctx)
{
    (void)ctx;
    return SQLITE_OK;
}

static void sq_shutdown(void *ctx)
{
    (void)ctx;
}

void eg_alloc_init(void)
{
    static atomic_int done = 0;
    if (atomic_exchange(&done, 1))
        return;
    json_set_alloc_funcs(eg_malloc, eg_free);
    xmlMemSetup(eg_free, eg_malloc, eg_realloc, xml_strdup);
    static const sqlite3_mem_methods sq = {sq_malloc,  sq_free, sq_realloc,  sq_size,
                                           sq_roundup, sq_init, sq_shutdown, NULL};
    /* Only before SQLite initializes; if something used it already it keeps its own. */
    (void)sqlite3_config(SQLITE_CONFIG_MALLOC, &sq);
}

void eg_memzero(void *p, size_t n)
{
    if (!p || !n)
        return;
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}
