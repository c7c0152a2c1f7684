/* base64.c - strict RFC 4648 base64 encoder and decoder (see base64.h for the rules). */
#include "common/base64.h"
#include "common/alloc.h"

#include <stdbool.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 character, or -1. */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

size_t eg_base64_encoded_len(size_t n)
{
    size_t groups = n / 3 + (n % 3 != 0);
    if (groups > SIZE_MAX / 4)
        return SIZE_MAX;
    return groups * 4;
}

size_t eg_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + (len % 4 ? 3 : 0);
}

int eg_base64_encode_to(const void *data, size_t len, char *out, size_t cap, size_t *ret_len)
{
    const uint8_t *p = data;
    size_t need = eg_base64_encoded_len(len);
    if (need == SIZE_MAX || cap < need + 1)
        return EG_ELIMIT;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    if (ret_len)
        *ret_len = o;
    return 0;
}

int eg_base64_encode(const void *data, size_t len, char **ret, size_t *ret_len)
{
    size_t need = eg_base64_encoded_len(len);
    if (need == SIZE_MAX)
        return EG_ELIMIT;
    char *s = eg_malloc(need + 1);
    if (!s)
        return EG_ENOMEM;
    size_t n = 0;
    int r = eg_base64_encode_to(data, len, s, need + 1, &n);
    if (r < 0) {
        eg_free(s);
        return r;
    }
    *ret = s;
    if (ret_len)
        *ret_len = n;
    return 0;
}

int eg_base64_decode_to(const char *s, size_t len, unsigned flags, uint8_t *out, size_t cap,
                        size_t *ret_len)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t acc = 0;
    unsigned n = 0, pad = 0; /* characters and '=' seen in the current quantum */
    bool done = false;       /* the padded last quantum is complete */
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if ((flags & EG_BASE64_IGNORE_WS) && is_ws(c))
            continue;
        if (done)
            return EG_EPARSE; /* something after the padding */
        if (c == '=') {
            if (n < 2)
                return EG_EPARSE; /* "=" can only stand in positions 3 and 4 */
            pad++;
            n++;
            if (n == 4)
                done = true;
            continue;
        }
        if (pad)
            return EG_EPARSE; /* data after '=' inside the quantum */
        int v = sextet(c);
        if (v < 0)
            return EG_EPARSE;
        acc = acc << 6 | (uint32_t)v;
        if (++n == 4) {
            if (cap - o < 3)
                return EG_ELIMIT;
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
            n = 0;
        }
    }
    if (!done && n != 0)
        return EG_EPARSE; /* truncated quantum */
    if (done) {
        if (pad == 1) { /* 3 sextets = 18 bits: 2 bytes + 2 zero bits */
            if (acc & 0x3)
                return EG_EPARSE;
            if (cap - o < 2)
                return EG_ELIMIT;
            out[o++] = (uint8_t)(acc >> 10);
            out[o++] = (uint8_t)(acc >> 2);
        } else { /* 2 sextets = 12 bits: 1 byte + 4 zero bits */
            if (acc & 0xf)
                return EG_EPARSE;
            if (cap - o < 1)
                return EG_ELIMIT;
            out[o++] = (uint8_t)(acc >> 4);
        }
    }
    if (ret_len)
        *ret_len = o;
    return 0;
}

int eg_base64_decode(const char *s, size_t len, unsigned flags, uint8_t **ret, size_t *ret_len)
{
    size_t cap = eg_base64_decoded_max(len);
    uint8_t *buf = eg_malloc(cap + 1);
    if (!buf)
        return EG_ENOMEM;
    size_t n = 0;
    int r = eg_base64_decode_to(s, len, flags, buf, cap, &n);
    if (r < 0) {
        eg_free(buf);
        return r;
    }
    buf[n] = 0;
    *ret = buf;
    if (ret_len)
        *ret_len = n;
    return 0;
}
