/* util.c - small shared helpers. */
#include "common/util.h"
#include "common/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t eg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t eg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *eg_format_time(int64_t ms, char *buf, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    char tmp[24];
    gmtime_r(&s, &tm);
    strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03dZ", tmp, (int)(ms % 1000));
    return buf;
}

int eg_read_file(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
    int fd = -1, r = 0;
    char *buf = NULL;
    size_t len = 0, cap = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return EG_EIO;
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                r = EG_ELIMIT;
                goto out;
            }
            size_t ncap = cap ? cap * 2 : 4096;
            if (ncap > max + 1)
                ncap = max + 1;
            char *n = eg_realloc(buf, ncap + 1);
            if (!n) {
                r = EG_ENOMEM;
                goto out;
            }
            buf = n;
            cap = ncap;
        }
        ssize_t k = read(fd, buf + len, cap - len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = EG_EIO;
            goto out;
        }
        if (k == 0)
            break;
        len += (size_t)k;
        if (len > max) {
            r = EG_ELIMIT;
            goto out;
        }
    }
    if (!buf) {
        buf = eg_malloc(1);
        if (!buf) {
            r = EG_ENOMEM;
            goto out;
        }
    }
    buf[len] = '\0';
    *ret_data = buf;
    *ret_len = len;
    buf = NULL;
out:
    if (buf) {
        eg_memzero(buf, cap);
        eg_free(buf);
    }
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return r;
}

int eg_read_secret_line(const char *path, size_t max, char **ret)
{
    char *data = NULL;
    size_t len = 0;
    int rc = eg_read_file(path, max, &data, &len);
    if (rc < 0)
        return rc;
    char *nl = memchr(data, '\n', len);
    if (nl) {
        if (nl > data && nl[-1] == '\r')
            nl--;
        eg_memzero(nl, len - (size_t)(nl - data));
    }
    *ret = data;
    return 0;
}

int eg_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    char *tmp = eg_asprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = -1, r = 0;
    if (!tmp)
        return EG_ENOMEM;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        r = EG_EIO;
        goto out;
    }
    const char *p = data;
    while (len) {
        ssize_t k = write(fd, p, len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            r = EG_EIO;
            goto out;
        }
        p += k;
        len -= (size_t)k;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        r = EG_EIO;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        r = EG_EIO;
out:
    if (fd >= 0)
        close(fd);
    if (r)
        unlink(tmp);
    eg_free(tmp);
    return r;
}

bool eg_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = (unsigned char)(alen != blen);
    size_t n = alen < blen ? alen : blen;
    /* Walk the longer of the two lengths' worth of the shorter input so time tracks alen only. */
    for (size_t i = 0; i < alen; i++)
        d |= (unsigned char)(x[i] ^ (n ? y[i % n] : 0));
    return d == 0 && n == alen;
}

int eg_parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
    if (!s || !*s)
        return EG_EINVAL;
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (*p < '0' || *p > '9')
        return EG_EINVAL;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0')
        return EG_EINVAL;
    if (errno == ERANGE || v < min || v > max)
        return EG_ELIMIT;
    *ret = (int64_t)v;
    return 0;
}

int eg_parse_hostport(const char *s, char **ret_addr, uint16_t *ret_port)
{
    const char *colon, *host = s;
    size_t hlen;
    int64_t port;

    if (!s || !*s)
        return EG_EINVAL;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return EG_EINVAL;
        host = s + 1;
        hlen = (size_t)(rb - host);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return EG_EINVAL;
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen > 255)
        return EG_EINVAL;
    if (eg_parse_int64(colon + 1, 0, 65535, &port) < 0)
        return EG_EINVAL;
    char *addr = eg_strndup(host, hlen);
    if (!addr)
        return EG_ENOMEM;
    *ret_addr = addr;
    *ret_port = (uint16_t)port;
    return 0;
}

bool eg_is_loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!addr)
        return false;
    if (strcasecmp(addr, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}
