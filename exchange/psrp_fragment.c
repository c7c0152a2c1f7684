/* psrp_fragment.c - MS-PSRP fragment codec, fragmenter and defragmenter (see psrp_fragment.h). */
#include "exchange/psrp_fragment.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/limits.h"

/* ---- big-endian helpers ---- */

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- single fragments ---- */

int eg_psrp_fragment_decode(const uint8_t *buf, size_t len, uint32_t max_blob,
                            struct eg_psrp_fragment *ret, size_t *ret_consumed)
{
    if (!buf || len < EG_PSRP_FRAGMENT_HEADER_LEN)
        return EG_EPARSE;
    uint32_t blob_len = get_be32(buf + 17);
    if (blob_len > max_blob)
        return EG_ELIMIT;
    if (len - EG_PSRP_FRAGMENT_HEADER_LEN < blob_len)
        return EG_EPARSE;
    ret->object_id = get_be64(buf);
    ret->fragment_id = get_be64(buf + 8);
    ret->start = (buf[16] & EG_PSRP_FRAG_START) != 0;
    ret->end = (buf[16] & EG_PSRP_FRAG_END) != 0;
    ret->blob = buf + EG_PSRP_FRAGMENT_HEADER_LEN;
    ret->blob_len = blob_len;
    if (ret_consumed)
        *ret_consumed = EG_PSRP_FRAGMENT_HEADER_LEN + (size_t)blob_len;
    return 0;
}

void eg_psrp_fragment_header_write(const struct eg_psrp_fragment *f,
                                   uint8_t out[EG_PSRP_FRAGMENT_HEADER_LEN])
{
    put_be64(out, f->object_id);
    put_be64(out + 8, f->fragment_id);
    out[16] = (uint8_t)((f->start ? EG_PSRP_FRAG_START : 0) | (f->end ? EG_PSRP_FRAG_END : 0));
    put_be32(out + 17, f->blob_len);
}

int eg_psrp_fragment_encode(const struct eg_psrp_fragment *f, uint8_t *out, size_t cap,
                            size_t *ret_len)
{
    if (!f->blob && f->blob_len)
        return EG_EINVAL;
    size_t need = EG_PSRP_FRAGMENT_HEADER_LEN + (size_t)f->blob_len;
    if (cap < need)
        return EG_ELIMIT;
    eg_psrp_fragment_header_write(f, out);
    if (f->blob_len)
        memcpy(out + EG_PSRP_FRAGMENT_HEADER_LEN, f->blob, f->blob_len);
    if (ret_len)
        *ret_len = need;
    return 0;
}

/* ---- fragmenter ---- */

static size_t blob_per_fragment(size_t max_fragment_size)
{
    size_t per = max_fragment_size - EG_PSRP_FRAGMENT_HEADER_LEN;
    return per > UINT32_MAX ? UINT32_MAX : per;
}

size_t eg_psrp_fragment_count(size_t msg_len, size_t max_fragment_size)
{
    if (max_fragment_size <= EG_PSRP_FRAGMENT_HEADER_LEN)
        return 0;
    size_t per = blob_per_fragment(max_fragment_size);
    if (msg_len == 0)
        return 1;
    return msg_len / per + (msg_len % per != 0);
}

int eg_psrp_fragment_message(const uint8_t *msg, size_t msg_len, size_t max_fragment_size,
                             uint64_t *next_object_id, struct eg_psrp_fragments **ret)
{
    struct eg_psrp_fragments *fr = NULL;
    int r = 0;

    if (!next_object_id || max_fragment_size <= EG_PSRP_FRAGMENT_HEADER_LEN || (!msg && msg_len))
        return EG_EINVAL;
    if (msg_len > EG_PSRP_MAX_MESSAGE)
        return EG_ELIMIT;

    size_t per = blob_per_fragment(max_fragment_size);
    size_t n = eg_psrp_fragment_count(msg_len, max_fragment_size);
    fr = eg_calloc(1, sizeof *fr);
    if (!fr) {
        r = EG_ENOMEM;
        goto out;
    }
    fr->n = n;
    fr->len = n * EG_PSRP_FRAGMENT_HEADER_LEN + msg_len;
    fr->object_id = *next_object_id;
    fr->data = eg_malloc(fr->len);
    fr->offsets = eg_reallocarray(NULL, n + 1, sizeof *fr->offsets);
    if (!fr->data || !fr->offsets) {
        r = EG_ENOMEM;
        goto out;
    }
    size_t pos = 0, off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t chunk = msg_len - pos < per ? msg_len - pos : per;
        struct eg_psrp_fragment f = {
            .object_id = fr->object_id,
            .fragment_id = i,
            .start = i == 0,
            .end = i == n - 1,
            .blob = chunk ? msg + pos : NULL,
            .blob_len = (uint32_t)chunk,
        };
        size_t wrote = 0;
        fr->offsets[i] = off;
        r = eg_psrp_fragment_encode(&f, fr->data + off, fr->len - off, &wrote);
        if (r < 0) {
            r = EG_EINTERNAL;
            goto out;
        }
        off += wrote;
        pos += chunk;
    }
    fr->offsets[n] = off;
    (*next_object_id)++;
    *ret = fr;
    fr = NULL;
out:
    eg_psrp_fragments_free(fr);
    return r;
}

void eg_psrp_fragments_free(struct eg_psrp_fragments *f)
{
    if (!f)
        return;
    eg_free(f->data);
    eg_free(f->offsets);
    eg_free(f);
}

/* ---- defragmenter ---- */

/* An object partly received. buf has cap + 1 bytes (room for a terminating NUL). */
struct partial {
    uint64_t object_id;
    uint64_t next_fragment_id;
    uint8_t *buf;
    size_t len, cap;
};

/* A completed message waiting in the FIFO. */
struct done_msg {
    struct done_msg *next;
    uint64_t object_id;
    uint8_t *data; /* len + 1 bytes, NUL-terminated */
    size_t len;
};

struct eg_psrp_defrag {
    struct eg_psrp_defrag_limits lim;
    struct partial *parts; /* unordered; at most lim.max_in_progress */
    size_t n_parts, cap_parts;
    size_t buffered; /* sum of parts[].len */
    struct done_msg *head, *tail;
    size_t n_ready;
    int err; /* sticky failure, 0 while healthy */
    char reason[112];
};

int eg_psrp_defrag_new(const struct eg_psrp_defrag_limits *lim, struct eg_psrp_defrag **ret)
{
    struct eg_psrp_defrag *d = eg_calloc(1, sizeof *d);
    if (!d)
        return EG_ENOMEM;
    if (lim)
        d->lim = *lim;
    if (!d->lim.max_message)
        d->lim.max_message = EG_PSRP_MAX_MESSAGE;
    if (!d->lim.max_in_progress)
        d->lim.max_in_progress = EG_PSRP_MAX_IN_PROGRESS;
    if (!d->lim.max_buffered)
        d->lim.max_buffered = EG_PSRP_MAX_BUFFERED;
    if (!d->lim.max_blob)
        d->lim.max_blob = EG_PSRP_MAX_FRAGMENT_BLOB;
    *ret = d;
    return 0;
}

void eg_psrp_defrag_free(struct eg_psrp_defrag *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_parts; i++)
        eg_free(d->parts[i].buf);
    eg_free(d->parts);
    struct done_msg *m = d->head;
    while (m) {
        struct done_msg *next = m->next;
        eg_free(m->data);
        eg_free(m);
        m = next;
    }
    eg_free(d);
}

/* Record a sticky failure with its reason and return the code. */
static int fail(struct eg_psrp_defrag *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct eg_psrp_defrag *d, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
    d->err = code;
    return code;
}

static struct partial *find_part(struct eg_psrp_defrag *d, uint64_t object_id)
{
    for (size_t i = 0; i < d->n_parts; i++)
        if (d->parts[i].object_id == object_id)
            return &d->parts[i];
    return NULL;
}

/* Remove parts[p] (order is not kept); its buffer must have been freed or handed on. */
static void drop_part(struct eg_psrp_defrag *d, struct partial *p)
{
    d->buffered -= p->len;
    *p = d->parts[--d->n_parts];
}

/* Queue a completed message; takes data (len + 1 bytes) on success only. */
static int enqueue(struct eg_psrp_defrag *d, uint64_t object_id, uint8_t *data, size_t len)
{
    struct done_msg *m = eg_malloc(sizeof *m);
    if (!m)
        return EG_ENOMEM;
    data[len] = 0;
    *m = (struct done_msg){.next = NULL, .object_id = object_id, .data = data, .len = len};
    if (d->tail)
        d->tail->next = m;
    else
        d->head = m;
    d->tail = m;
    d->n_ready++;
    return 0;
}

/* Make room for add more bytes in p, growing geometrically but never past max_message. */
static int part_reserve(struct eg_psrp_defrag *d, struct partial *p, size_t add)
{
    size_t need = p->len + add; /* no overflow: both bounded by max_message */
    if (need <= p->cap && p->buf)
        return 0;
    size_t cap = p->cap ? p->cap : 1024;
    while (cap < need)
        cap = cap > SIZE_MAX / 4 ? need : cap * 2;
    if (cap > d->lim.max_message)
        cap = d->lim.max_message > need ? d->lim.max_message : need;
    uint8_t *nb = eg_realloc(p->buf, cap + 1);
    if (!nb)
        return EG_ENOMEM;
    p->buf = nb;
    p->cap = cap;
    return 0;
}

/* The first fragment of an object: S set and FragmentId 0 (checked by the caller). */
static int start_object(struct eg_psrp_defrag *d, const struct eg_psrp_fragment *f)
{
    uint64_t oid = f->object_id;
    if (f->blob_len > d->lim.max_message)
        return fail(d, EG_ELIMIT, "object %" PRIu64 ": message over %zu bytes", oid,
                    d->lim.max_message);
    if (f->end) { /* whole message in one fragment: straight to the queue */
        uint8_t *data = eg_malloc((size_t)f->blob_len + 1);
        if (!data)
            return fail(d, EG_ENOMEM, "out of memory");
        if (f->blob_len)
            memcpy(data, f->blob, f->blob_len);
        int r = enqueue(d, oid, data, f->blob_len);
        if (r < 0) {
            eg_free(data);
            return fail(d, r, "out of memory");
        }
        return 0;
    }
    if (d->n_parts >= d->lim.max_in_progress)
        return fail(d, EG_ELIMIT, "object %" PRIu64 ": over %zu objects in progress", oid,
                    d->lim.max_in_progress);
    if (f->blob_len > d->lim.max_buffered - d->buffered)
        return fail(d, EG_ELIMIT, "object %" PRIu64 ": over %zu bytes buffered", oid,
                    d->lim.max_buffered);
    if (d->n_parts == d->cap_parts) {
        size_t ncap = d->cap_parts ? d->cap_parts * 2 : 4;
        if (ncap > d->lim.max_in_progress)
            ncap = d->lim.max_in_progress;
        struct partial *np = eg_reallocarray(d->parts, ncap, sizeof *np);
        if (!np)
            return fail(d, EG_ENOMEM, "out of memory");
        d->parts = np;
        d->cap_parts = ncap;
    }
    struct partial *p = &d->parts[d->n_parts];
    *p = (struct partial){.object_id = oid, .next_fragment_id = 1};
    if (part_reserve(d, p, f->blob_len) < 0) {
        eg_free(p->buf);
        return fail(d, EG_ENOMEM, "out of memory");
    }
    if (f->blob_len)
        memcpy(p->buf, f->blob, f->blob_len);
    p->len = f->blob_len;
    d->n_parts++;
    d->buffered += p->len;
    return 0;
}

/* A later fragment of an object in progress. */
static int continue_object(struct eg_psrp_defrag *d, struct partial *p,
                           const struct eg_psrp_fragment *f)
{
    uint64_t oid = f->object_id;
    if (f->start)
        return fail(d, EG_EPROTO,
                    "object %" PRIu64 ": S on fragment %" PRIu64 " of an object in progress", oid,
                    f->fragment_id);
    if (f->fragment_id < p->next_fragment_id)
        return fail(d, EG_EPROTO, "object %" PRIu64 ": duplicate fragment %" PRIu64, oid,
                    f->fragment_id);
    if (f->fragment_id > p->next_fragment_id)
        return fail(d, EG_EPROTO,
                    "object %" PRIu64 ": fragment %" PRIu64 " where %" PRIu64 " was expected", oid,
                    f->fragment_id, p->next_fragment_id);
    if (f->blob_len > d->lim.max_message - p->len)
        return fail(d, EG_ELIMIT, "object %" PRIu64 ": message over %zu bytes", oid,
                    d->lim.max_message);
    if (f->blob_len > d->lim.max_buffered - d->buffered)
        return fail(d, EG_ELIMIT, "object %" PRIu64 ": over %zu bytes buffered", oid,
                    d->lim.max_buffered);
    if (part_reserve(d, p, f->blob_len) < 0)
        return fail(d, EG_ENOMEM, "out of memory");
    if (f->blob_len)
        memcpy(p->buf + p->len, f->blob, f->blob_len);
    p->len += f->blob_len;
    d->buffered += f->blob_len;
    p->next_fragment_id++;
    if (!f->end)
        return 0;
    int r = enqueue(d, oid, p->buf, p->len);
    if (r < 0)
        return fail(d, r, "out of memory");
    p->buf = NULL;
    drop_part(d, p);
    return 0;
}

int eg_psrp_defrag_feed(struct eg_psrp_defrag *d, const struct eg_psrp_fragment *f)
{
    if (d->err)
        return d->err;
    if (!f->blob && f->blob_len)
        return EG_EINVAL;
    struct partial *p = find_part(d, f->object_id);
    if (p)
        return continue_object(d, p, f);
    if (!f->start) {
        if (f->fragment_id == 0)
            return fail(d, EG_EPROTO, "object %" PRIu64 ": first fragment without S", f->object_id);
        return fail(d, EG_EPROTO,
                    "object %" PRIu64 ": fragment %" PRIu64
                    " for an unknown object (no fragment 0 with S)",
                    f->object_id, f->fragment_id);
    }
    if (f->fragment_id != 0)
        return fail(d, EG_EPROTO, "object %" PRIu64 ": S on fragment %" PRIu64 ", not 0",
                    f->object_id, f->fragment_id);
    return start_object(d, f);
}

int eg_psrp_defrag_feed_buffer(struct eg_psrp_defrag *d, const uint8_t *buf, size_t len)
{
    size_t pos = 0;
    if (d->err)
        return d->err;
    while (pos < len) {
        struct eg_psrp_fragment f;
        size_t used = 0;
        int r = eg_psrp_fragment_decode(buf + pos, len - pos, d->lim.max_blob, &f, &used);
        if (r == EG_ELIMIT)
            return fail(d, r, "fragment at byte %zu: BlobLength over %" PRIu32, pos,
                        d->lim.max_blob);
        if (r < 0)
            return fail(d, r, "fragment at byte %zu: truncated", pos);
        r = eg_psrp_defrag_feed(d, &f);
        if (r < 0)
            return r;
        pos += used;
    }
    return 0;
}

int eg_psrp_defrag_pop(struct eg_psrp_defrag *d, uint8_t **ret_data, size_t *ret_len,
                       uint64_t *ret_object_id)
{
    struct done_msg *m = d->head;
    if (!m)
        return EG_ENOTFOUND;
    d->head = m->next;
    if (!d->head)
        d->tail = NULL;
    d->n_ready--;
    *ret_data = m->data;
    *ret_len = m->len;
    if (ret_object_id)
        *ret_object_id = m->object_id;
    eg_free(m);
    return 0;
}

size_t eg_psrp_defrag_ready(const struct eg_psrp_defrag *d)
{
    return d->n_ready;
}

size_t eg_psrp_defrag_in_progress(const struct eg_psrp_defrag *d)
{
    return d->n_parts;
}

const char *eg_psrp_defrag_reason(const struct eg_psrp_defrag *d)
{
    return d->reason;
}
