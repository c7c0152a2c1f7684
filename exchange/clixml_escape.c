/* clixml_escape.c - CLIXML string escaping both ways (MS-PSRP 2.2.5.1.1), matching pwsh:
 * InternalSerializer.EncodeString on the way out, XmlConvert.DecodeName on the way in. */
#include "exchange/clixml.h"

#include <stdint.h>
#include <string.h>

#include "common/alloc.h"

/* Decode one UTF-8 sequence at s[*pos] (strict: no overlongs, no surrogates, <= U+10FFFF).
 * Returns 0 and advances *pos, or -1. */
static int utf8_next(const unsigned char *s, size_t len, size_t *pos, uint32_t *ret)
{
    size_t i = *pos;
    unsigned char c = s[i];
    uint32_t cp;
    size_t n;

    if (c < 0x80) {
        *ret = c;
        *pos = i + 1;
        return 0;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        cp = c & 0x07;
    } else {
        return -1;
    }
    if (len - i - 1 < n)
        return -1;
    for (size_t k = 1; k <= n; k++) {
        unsigned char cc = s[i + k];
        if ((cc & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *ret = cp;
    *pos = i + 1 + n;
    return 0;
}

/* Write cp as UTF-8 at out (if not NULL); returns the byte count. */
static size_t utf8_put(char *out, uint32_t cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (out)
        memcpy(out, b, n);
    return n;
}

static const char hexdig[] = "0123456789ABCDEF";

/* Append "_xHHHH_" for one UTF-16 unit. */
static size_t put_unit(char *out, unsigned unit)
{
    if (out) {
        out[0] = '_';
        out[1] = 'x';
        out[2] = hexdig[(unit >> 12) & 0xF];
        out[3] = hexdig[(unit >> 8) & 0xF];
        out[4] = hexdig[(unit >> 4) & 0xF];
        out[5] = hexdig[unit & 0xF];
        out[6] = '_';
    }
    return 7;
}

static size_t put_str(char *out, const char *s)
{
    size_t n = strlen(s);
    if (out)
        memcpy(out, s, n);
    return n;
}

/* One pass of the escaper: with out == NULL only counts. Returns -1 on invalid UTF-8. */
static int escape_pass(const unsigned char *s, size_t len, unsigned flags, char *out,
                       size_t *ret_len)
{
    size_t pos = 0, o = 0;
    while (pos < len) {
        size_t start = pos;
        uint32_t cp;
        if (utf8_next(s, len, &pos, &cp) != 0)
            return -1;
        char *w = out ? out + o : NULL;
        if (cp == '_' && pos < len && (s[pos] == 'x' || s[pos] == 'X')) {
            o += put_unit(w, 0x5F);
        } else if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F) || cp == 0xFFFE || cp == 0xFFFF) {
            o += put_unit(w, cp);
        } else if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            o += put_unit(w, 0xD800 | (v >> 10));
            o += put_unit(out ? out + o : NULL, 0xDC00 | (v & 0x3FF));
        } else if ((flags & (EG_CLIXML_ESC_TEXT | EG_CLIXML_ESC_ATTR)) && cp == '&') {
            o += put_str(w, "&amp;");
        } else if ((flags & (EG_CLIXML_ESC_TEXT | EG_CLIXML_ESC_ATTR)) && cp == '<') {
            o += put_str(w, "&lt;");
        } else if ((flags & (EG_CLIXML_ESC_TEXT | EG_CLIXML_ESC_ATTR)) && cp == '>') {
            o += put_str(w, "&gt;");
        } else if ((flags & EG_CLIXML_ESC_ATTR) && cp == '"') {
            o += put_str(w, "&quot;");
        } else {
            if (w)
                memcpy(w, s + start, pos - start);
            o += pos - start;
        }
    }
    *ret_len = o;
    return 0;
}

int eg_clixml_escape(const char *s, size_t len, unsigned flags, char **ret, size_t *ret_len)
{
    size_t n = 0, n2 = 0;
    char *out = NULL;

    if ((!s && len) || !ret)
        return EG_EINVAL;
    if (!s)
        s = "";
    if (len > SIZE_MAX / 16) /* keeps every count below SIZE_MAX / 2 */
        return EG_ELIMIT;
    if (escape_pass((const unsigned char *)s, len, flags, NULL, &n) != 0)
        return EG_EINVAL;
    out = eg_malloc(n + 1);
    if (!out)
        return EG_ENOMEM;
    if (escape_pass((const unsigned char *)s, len, flags, out, &n2) != 0 || n2 != n) {
        eg_free(out);
        return EG_EINTERNAL;
    }
    out[n] = '\0';
    *ret = out;
    if (ret_len)
        *ret_len = n;
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* n hex digits at p, or -1 if one is not a hex digit. */
static long hexn(const unsigned char *p, size_t n)
{
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | h;
    }
    return v;
}

/* Surrogate joining state of the unescaper. */
struct unesc {
    char *out;
    size_t o;
    unsigned high; /* pending high surrogate, 0 if none */
};

static void flush_high(struct unesc *u)
{
    if (u->high) {
        u->o += utf8_put(u->out + u->o, 0xFFFD);
        u->high = 0;
    }
}

static void emit_unit(struct unesc *u, unsigned unit)
{
    if (unit >= 0xD800 && unit <= 0xDBFF) {
        flush_high(u);
        u->high = unit;
    } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
        if (u->high) {
            uint32_t cp = 0x10000 + (((uint32_t)u->high - 0xD800) << 10) + (unit - 0xDC00);
            u->high = 0;
            u->o += utf8_put(u->out + u->o, cp);
        } else {
            u->o += utf8_put(u->out + u->o, 0xFFFD);
        }
    } else {
        flush_high(u);
        u->o += utf8_put(u->out + u->o, unit);
    }
}

int eg_clixml_unescape(const char *str, size_t len, char **ret, size_t *ret_len)
{
    const unsigned char *s = (const unsigned char *)str;
    struct unesc u = {0};
    size_t pos = 0;

    if ((!str && len) || !ret)
        return EG_EINVAL;
    if (len == SIZE_MAX)
        return EG_ELIMIT;
    /* Every escape shrinks (7 -> <= 3 bytes, 14 -> 4, 11 -> <= 4, a lone half 7 -> 3), raw text is
     * copied: the result fits in len bytes. */
    u.out = eg_malloc(len + 1);
    if (!u.out)
        return EG_ENOMEM;
    while (pos < len) {
        if (s[pos] == '_' && len - pos >= 7 && (s[pos + 1] == 'x' || s[pos + 1] == 'X')) {
            long v4 = hexn(s + pos + 2, 4);
            if (v4 >= 0 && s[pos + 6] == '_') {
                emit_unit(&u, (unsigned)v4);
                pos += 7;
                continue;
            }
            if (v4 >= 0 && len - pos >= 11 && s[pos + 10] == '_') {
                long v8 = hexn(s + pos + 2, 8);
                if (v8 >= 0) {
                    if (v8 < 0x10000) {
                        emit_unit(&u, (unsigned)v8);
                    } else if (v8 <= 0x10FFFF) {
                        uint32_t x = (uint32_t)v8 - 0x10000;
                        emit_unit(&u, 0xD800 | (x >> 10));
                        emit_unit(&u, 0xDC00 | (x & 0x3FF));
                    } else {
                        /* .NET leaves an out-of-range UCS-4 escape as it is. */
                        flush_high(&u);
                        memcpy(u.out + u.o, s + pos, 11);
                        u.o += 11;
                    }
                    pos += 11;
                    continue;
                }
            }
        }
        size_t start = pos;
        uint32_t cp;
        if (utf8_next(s, len, &pos, &cp) != 0) {
            eg_free(u.out);
            return EG_EINVAL;
        }
        flush_high(&u);
        memcpy(u.out + u.o, s + start, pos - start);
        u.o += pos - start;
    }
    flush_high(&u);
    u.out[u.o] = '\0';
    *ret = u.out;
    if (ret_len)
        *ret_len = u.o;
    return 0;
}
