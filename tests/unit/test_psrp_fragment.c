/* test_psrp_fragment.c - PSRP fragments (exchange/psrp_fragment): header codec, concatenated
 * buffers, fragmenter sizes, reassembly with interleaving, every protocol violation, limits, and
 * allocation failure. Real recorded traffic is exercised in test_psrp_message.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "exchange/psrp_fragment.h"

/* Append fragment (oid, fid, flags byte, blob) to buf at *pos; returns the new length. */
static size_t put_frag(uint8_t *buf, size_t pos, uint64_t oid, uint64_t fid, uint8_t flags,
                       const char *blob)
{
    size_t n = strlen(blob);
    for (int i = 0; i < 8; i++) {
        buf[pos + i] = (uint8_t)(oid >> (56 - 8 * i));
        buf[pos + 8 + i] = (uint8_t)(fid >> (56 - 8 * i));
    }
    buf[pos + 16] = flags;
    buf[pos + 17] = (uint8_t)(n >> 24);
    buf[pos + 18] = (uint8_t)(n >> 16);
    buf[pos + 19] = (uint8_t)(n >> 8);
    buf[pos + 20] = (uint8_t)n;
    memcpy(buf + pos + 21, blob, n);
    return pos + 21 + n;
}

static struct eg_psrp_fragment frag(uint64_t oid, uint64_t fid, bool s, bool e, const char *blob)
{
    return (struct eg_psrp_fragment){.object_id = oid,
                                     .fragment_id = fid,
                                     .start = s,
                                     .end = e,
                                     .blob = (const uint8_t *)blob,
                                     .blob_len = (uint32_t)strlen(blob)};
}

static struct eg_psrp_defrag *new_defrag(const struct eg_psrp_defrag_limits *lim)
{
    struct eg_psrp_defrag *d = NULL;
    assert_int_equal(eg_psrp_defrag_new(lim, &d), 0);
    assert_non_null(d);
    return d;
}

/* Pop the next message and check its bytes and ObjectId. */
static void expect_msg(struct eg_psrp_defrag *d, uint64_t oid, const char *want)
{
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t got_oid = 0;
    assert_int_equal(eg_psrp_defrag_pop(d, &data, &len, &got_oid), 0);
    assert_non_null(data);
    assert_int_equal(got_oid, oid);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(data, want, len);
    assert_int_equal(data[len], 0);
    eg_free(data);
}

/* ---- header codec ---- */

static void test_decode_header_fields(void **state)
{
    /* The worked example of psrp-wire.md section 7: ObjectId 4, FragmentId 0, S+E, 52 bytes. */
    uint8_t buf[21 + 52 + 5] = {0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x34};
    struct eg_psrp_fragment f;
    size_t used = 0;
    assert_int_equal(eg_psrp_fragment_decode(buf, 73, EG_PSRP_MAX_FRAGMENT_BLOB, &f, &used), 0);
    assert_int_equal(f.object_id, 4);
    assert_int_equal(f.fragment_id, 0);
    assert_true(f.start);
    assert_true(f.end);
    assert_int_equal(f.blob_len, 52);
    assert_ptr_equal(f.blob, buf + 21); /* no copy */
    assert_int_equal(used, 73);
    /* Extra bytes after the fragment are left alone. */
    assert_int_equal(eg_psrp_fragment_decode(buf, sizeof buf, 1000, &f, &used), 0);
    assert_int_equal(used, 73);

    /* Big-endian 64-bit ids use all eight bytes. */
    uint8_t big[21] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xF1, 0xF2, 0xF3,
                       0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0x00, 0,    0,    0,    0};
    assert_int_equal(eg_psrp_fragment_decode(big, 21, 0, &f, &used), 0);
    assert_true(f.object_id == 0x0102030405060708ull);
    assert_true(f.fragment_id == 0xF1F2F3F4F5F6F7F8ull);
    assert_false(f.start);
    assert_false(f.end);
    assert_int_equal(f.blob_len, 0);
    assert_int_equal(used, 21);
}

static void test_flags_other_bits_ignored(void **state)
{
    uint8_t buf[21] = {0};
    struct eg_psrp_fragment f;
    const struct {
        uint8_t flags;
        bool s, e;
    } cases[] = {{0xFC, false, false}, {0xFD, true, false}, {0xFE, false, true},
                 {0xFF, true, true},   {0x01, true, false}, {0x02, false, true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf[16] = cases[i].flags;
        assert_int_equal(eg_psrp_fragment_decode(buf, 21, 0, &f, NULL), 0);
        assert_int_equal(f.start, cases[i].s);
        assert_int_equal(f.end, cases[i].e);
        /* Re-encoding writes only S and E. */
        uint8_t out[21];
        eg_psrp_fragment_header_write(&f, out);
        assert_int_equal(out[16], (cases[i].s ? 1 : 0) | (cases[i].e ? 2 : 0));
    }
}

static void test_decode_errors(void **state)
{
    uint8_t buf[64] = {0};
    size_t len = put_frag(buf, 0, 1, 0, 3, "hello");
    struct eg_psrp_fragment f = {0};
    size_t used = 12345;
    for (size_t n = 0; n < 21; n++)
        assert_int_equal(eg_psrp_fragment_decode(buf, n, 1000, &f, &used), EG_EPARSE);
    for (size_t n = 21; n < len; n++)
        assert_int_equal(eg_psrp_fragment_decode(buf, n, 1000, &f, &used), EG_EPARSE);
    assert_int_equal(used, 12345); /* not written on failure */
    assert_int_equal(eg_psrp_fragment_decode(NULL, 0, 1000, &f, &used), EG_EPARSE);
    /* BlobLength over the limit: EG_ELIMIT, even when the buffer is also short. */
    assert_int_equal(eg_psrp_fragment_decode(buf, len, 4, &f, &used), EG_ELIMIT);
    assert_int_equal(eg_psrp_fragment_decode(buf, len, 5, &f, &used), 0);
    buf[17] = 0xFF; /* BlobLength 0xFF000005 */
    assert_int_equal(eg_psrp_fragment_decode(buf, len, EG_PSRP_MAX_FRAGMENT_BLOB, &f, &used),
                     EG_ELIMIT);
    assert_int_equal(eg_psrp_fragment_decode(buf, len, UINT32_MAX, &f, &used), EG_EPARSE);
}

static void test_encode(void **state)
{
    struct eg_psrp_fragment f = frag(0x0A67, 2, false, true, "abc");
    uint8_t out[24];
    size_t n = 0;
    assert_int_equal(eg_psrp_fragment_encode(&f, out, 23, &n), EG_ELIMIT);
    assert_int_equal(eg_psrp_fragment_encode(&f, out, 24, &n), 0);
    assert_int_equal(n, 24);
    static const uint8_t want[24] = {0, 0, 0, 0, 0, 0, 0x0A, 0x67, 0, 0,   0,   0,
                                     0, 0, 0, 2, 2, 0, 0,    0,    3, 'a', 'b', 'c'};
    assert_memory_equal(out, want, 24);
    struct eg_psrp_fragment bad = {.blob = NULL, .blob_len = 1};
    assert_int_equal(eg_psrp_fragment_encode(&bad, out, 24, &n), EG_EINVAL);
}

static void test_concatenated_buffer(void **state)
{
    uint8_t buf[256];
    size_t len = put_frag(buf, 0, 7, 0, 1, "first half ");
    size_t second = len;
    len = put_frag(buf, len, 8, 0, 3, "other message");
    size_t third = len;
    len = put_frag(buf, len, 7, 1, 2, "second half");

    /* Walk it by hand: views into buf, in order. */
    struct eg_psrp_fragment f;
    size_t pos = 0, used = 0, count = 0;
    const size_t starts[] = {0, second, third};
    while (pos < len) {
        assert_int_equal(eg_psrp_fragment_decode(buf + pos, len - pos, 1000, &f, &used), 0);
        assert_ptr_equal(f.blob, buf + starts[count] + 21);
        pos += used;
        count++;
    }
    assert_int_equal(count, 3);

    struct eg_psrp_defrag *d = new_defrag(NULL);
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, buf, len), 0);
    assert_int_equal(eg_psrp_defrag_ready(d), 2);
    assert_int_equal(eg_psrp_defrag_in_progress(d), 0);
    expect_msg(d, 8, "other message");
    expect_msg(d, 7, "first half second half");
    uint8_t *data = NULL;
    size_t dlen = 0;
    assert_int_equal(eg_psrp_defrag_pop(d, &data, &dlen, NULL), EG_ENOTFOUND);
    assert_null(data);
    assert_string_equal(eg_psrp_defrag_reason(d), "");
    eg_psrp_defrag_free(d);
}

static void test_feed_buffer_truncated_tail(void **state)
{
    uint8_t buf[128];
    size_t len = put_frag(buf, 0, 1, 0, 3, "complete");
    len = put_frag(buf, len, 2, 0, 3, "cut short");
    struct eg_psrp_defrag *d = new_defrag(NULL);
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, buf, len - 1), EG_EPARSE);
    assert_non_null(strstr(eg_psrp_defrag_reason(d), "truncated"));
    expect_msg(d, 1, "complete"); /* what came before the bad fragment is kept */
    assert_int_equal(eg_psrp_defrag_ready(d), 0);
    /* Sticky. */
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, buf, 29), EG_EPARSE);
    eg_psrp_defrag_free(d);

    /* BlobLength over the defragmenter's max_blob. */
    struct eg_psrp_defrag_limits lim = {.max_blob = 8};
    d = new_defrag(&lim);
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, buf, len), EG_ELIMIT);
    expect_msg(d, 1, "complete");
    eg_psrp_defrag_free(d);
    eg_psrp_defrag_free(NULL);
}

/* ---- fragmenter ---- */

/* Fragment msg with max, check the shape of every fragment, then reassemble and compare. */
static void fragment_and_check(const uint8_t *msg, size_t len, size_t max)
{
    uint64_t counter = 41;
    struct eg_psrp_fragments *fr = NULL;
    assert_int_equal(eg_psrp_fragment_message(msg, len, max, &counter, &fr), 0);
    assert_int_equal(counter, 42);
    assert_int_equal(fr->object_id, 41);
    size_t per = max - 21;
    size_t want_n = len == 0 ? 1 : (len + per - 1) / per;
    assert_int_equal(fr->n, want_n);
    assert_int_equal(eg_psrp_fragment_count(len, max), want_n);
    assert_int_equal(fr->len, want_n * 21 + len);
    assert_int_equal(fr->offsets[0], 0);
    assert_int_equal(fr->offsets[fr->n], fr->len);

    struct eg_psrp_defrag *d = new_defrag(NULL);
    size_t pos = 0;
    for (size_t i = 0; i < fr->n; i++) {
        size_t flen = fr->offsets[i + 1] - fr->offsets[i];
        assert_true(flen <= max);
        if (i + 1 < fr->n)
            assert_int_equal(flen, max); /* all but the last are full */
        struct eg_psrp_fragment f;
        size_t used = 0;
        assert_int_equal(
            eg_psrp_fragment_decode(fr->data + fr->offsets[i], flen, UINT32_MAX, &f, &used), 0);
        assert_int_equal(used, flen);
        assert_int_equal(f.object_id, 41);
        assert_int_equal(f.fragment_id, i);
        assert_int_equal(f.start, i == 0);
        assert_int_equal(f.end, i + 1 == fr->n);
        assert_int_equal(fr->data[fr->offsets[i] + 16] & ~3u, 0); /* no other flag bits */
        if (f.blob_len)
            assert_memory_equal(f.blob, msg + pos, f.blob_len);
        pos += f.blob_len;
        assert_int_equal(eg_psrp_defrag_feed(d, &f), 0);
        assert_int_equal(eg_psrp_defrag_ready(d), i + 1 == fr->n ? 1 : 0);
    }
    assert_int_equal(pos, len);
    uint8_t *out = NULL;
    size_t olen = 0;
    uint64_t oid = 0;
    assert_int_equal(eg_psrp_defrag_pop(d, &out, &olen, &oid), 0);
    assert_int_equal(oid, 41);
    assert_int_equal(olen, len);
    if (len)
        assert_memory_equal(out, msg, len);
    eg_free(out);
    assert_int_equal(eg_psrp_defrag_in_progress(d), 0);
    eg_psrp_defrag_free(d);

    /* The whole encoded run also reassembles through feed_buffer. */
    d = new_defrag(NULL);
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, fr->data, fr->len), 0);
    assert_int_equal(eg_psrp_defrag_pop(d, &out, &olen, NULL), 0);
    assert_int_equal(olen, len);
    if (len)
        assert_memory_equal(out, msg, len);
    eg_free(out);
    eg_psrp_defrag_free(d);
    eg_psrp_fragments_free(fr);
}

static void test_fragmenter_sizes(void **state)
{
    enum { MAX = 100, PER = MAX - 21 };
    uint8_t msg[3 * PER + 1];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 31 + 7);
    fragment_and_check(NULL, 0, MAX); /* empty: one S|E fragment, empty blob */
    fragment_and_check(msg, 0, MAX);
    fragment_and_check(msg, 1, MAX);
    fragment_and_check(msg, PER - 1, MAX);
    fragment_and_check(msg, PER, MAX);     /* exactly one fragment */
    fragment_and_check(msg, PER + 1, MAX); /* one byte over: two fragments */
    fragment_and_check(msg, 2 * PER, MAX);
    fragment_and_check(msg, 3 * PER + 1, MAX);
    fragment_and_check(msg, 1, 22); /* smallest legal fragment */
    fragment_and_check(msg, 5, 22);
}

static void test_fragmenter_large(void **state)
{
    size_t len = 1024 * 1024;
    uint8_t *msg = eg_malloc(len);
    assert_non_null(msg);
    for (size_t i = 0; i < len; i++)
        msg[i] = (uint8_t)(i ^ (i >> 8) ^ (i >> 16));
    const size_t maxes[] = {22, 23, 64, 1000, 4096, 32768 - 2000, 512000, 2 * 1024 * 1024};
    for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++)
        fragment_and_check(msg, len, maxes[i]);
    eg_free(msg);
}

static void test_fragmenter_errors(void **state)
{
    uint8_t msg[4] = {1, 2, 3, 4};
    uint64_t counter = 5;
    struct eg_psrp_fragments *fr = NULL;
    assert_int_equal(eg_psrp_fragment_message(msg, 4, 21, &counter, &fr), EG_EINVAL);
    assert_int_equal(eg_psrp_fragment_message(msg, 4, 0, &counter, &fr), EG_EINVAL);
    assert_int_equal(eg_psrp_fragment_message(NULL, 4, 100, &counter, &fr), EG_EINVAL);
    assert_int_equal(eg_psrp_fragment_message(msg, 4, 100, NULL, &fr), EG_EINVAL);
    /* Over the message limit: refused before the bytes are read. */
    assert_int_equal(
        eg_psrp_fragment_message(msg, (size_t)EG_PSRP_MAX_MESSAGE + 1, 100, &counter, &fr),
        EG_ELIMIT);
    assert_int_equal(eg_psrp_fragment_count(4, 21), 0);
    /* Allocation failure: no result, counter untouched. */
    for (long n = 0; n < 3; n++) {
        eg_alloc_fail_after(n);
        assert_int_equal(eg_psrp_fragment_message(msg, 4, 100, &counter, &fr), EG_ENOMEM);
        eg_alloc_fail_after(-1);
    }
    assert_null(fr);
    assert_int_equal(counter, 5);
    assert_int_equal(eg_psrp_fragment_message(msg, 4, 100, &counter, &fr), 0);
    assert_int_equal(counter, 6);
    eg_psrp_fragments_free(fr);
    eg_psrp_fragments_free(NULL);
}

/* ---- reassembly ---- */

static void test_interleaved_objects(void **state)
{
    struct eg_psrp_defrag *d = new_defrag(NULL);
    struct eg_psrp_fragment seq[] = {
        frag(10, 0, true, false, "A0"),  frag(11, 0, true, false, "B0"),
        frag(10, 1, false, false, "A1"), frag(12, 0, true, true, "C"),
        frag(11, 1, false, true, "B1"),  frag(10, 2, false, true, "A2"),
    };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(eg_psrp_defrag_feed(d, &seq[i]), 0);
    assert_int_equal(eg_psrp_defrag_in_progress(d), 2);
    assert_int_equal(eg_psrp_defrag_ready(d), 1);
    expect_msg(d, 12, "C"); /* taken before the others complete */
    for (size_t i = 4; i < 6; i++)
        assert_int_equal(eg_psrp_defrag_feed(d, &seq[i]), 0);
    assert_int_equal(eg_psrp_defrag_in_progress(d), 0);
    /* Completion order, not start order. */
    expect_msg(d, 11, "B0B1");
    expect_msg(d, 10, "A0A1A2");
    eg_psrp_defrag_free(d);

    /* The same across several buffers (several Receive responses), with objects split over
     * buffer boundaries, and an ObjectId reused once its message is complete. */
    d = new_defrag(NULL);
    uint8_t b1[128], b2[128], b3[128];
    size_t l1 = put_frag(b1, 0, 0x0A67, 0, 1, "x-");
    l1 = put_frag(b1, l1, 0x0A68, 0, 1, "y-");
    size_t l2 = put_frag(b2, 0, 0x0A68, 1, 0, "y-");
    l2 = put_frag(b2, l2, 0x0A67, 1, 2, "x.");
    size_t l3 = put_frag(b3, 0, 0x0A68, 2, 2, "y.");
    l3 = put_frag(b3, l3, 0x0A67, 0, 3, "again");
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, b1, l1), 0);
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, b2, l2), 0);
    expect_msg(d, 0x0A67, "x-x.");
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, b3, l3), 0);
    expect_msg(d, 0x0A68, "y-y-y.");
    expect_msg(d, 0x0A67, "again");
    eg_psrp_defrag_free(d);
}

/* Feed good[0..n_good), then bad; expect EG_EPROTO with reason containing want, then check that
 * the error sticks and that complete messages fed before can still be taken. */
static void expect_violation(const struct eg_psrp_fragment *good, size_t n_good,
                             struct eg_psrp_fragment bad, const char *want)
{
    struct eg_psrp_defrag *d = new_defrag(NULL);
    struct eg_psrp_fragment done = frag(999, 0, true, true, "done");
    assert_int_equal(eg_psrp_defrag_feed(d, &done), 0);
    for (size_t i = 0; i < n_good; i++)
        assert_int_equal(eg_psrp_defrag_feed(d, &good[i]), 0);
    assert_int_equal(eg_psrp_defrag_feed(d, &bad), EG_EPROTO);
    const char *reason = eg_psrp_defrag_reason(d);
    if (!strstr(reason, want))
        fail_msg("reason \"%s\" lacks \"%s\"", reason, want);
    struct eg_psrp_fragment fresh = frag(5000, 0, true, true, "fresh");
    assert_int_equal(eg_psrp_defrag_feed(d, &fresh), EG_EPROTO);
    uint8_t buf[64];
    size_t len = put_frag(buf, 0, 5001, 0, 3, "fresh");
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, buf, len), EG_EPROTO);
    expect_msg(d, 999, "done");
    if (n_good == 2 && good[1].end)
        expect_msg(d, good[0].object_id, "a0a1"); /* completed before the violation */
    assert_int_equal(eg_psrp_defrag_ready(d), 0);
    eg_psrp_defrag_free(d); /* frees the object left in progress */
}

static void test_protocol_violations(void **state)
{
    struct eg_psrp_fragment a0 = frag(3, 0, true, false, "a0");
    struct eg_psrp_fragment a01[] = {a0, frag(3, 1, false, false, "a1")};

    /* Fragment 1 before fragment 0 (unknown object, no S). */
    expect_violation(NULL, 0, frag(3, 1, false, false, "a1"), "unknown object");
    expect_violation(NULL, 0, frag(3, 1, false, true, "a1"), "unknown object");
    /* S missing on the first fragment. */
    expect_violation(NULL, 0, frag(3, 0, false, false, "a0"), "without S");
    expect_violation(NULL, 0, frag(3, 0, false, true, "a0"), "without S");
    /* S with a non-zero FragmentId on a new object. */
    expect_violation(NULL, 0, frag(3, 1, true, true, "a1"), "not 0");
    /* Duplicates. */
    expect_violation(&a0, 1, frag(3, 0, false, false, "a0"), "duplicate fragment 0");
    expect_violation(a01, 2, frag(3, 1, false, true, "a1"), "duplicate fragment 1");
    /* Gap. */
    expect_violation(&a0, 1, frag(3, 2, false, true, "a2"), "fragment 2 where 1 was expected");
    /* A new S for an object in progress (a restart or a repeated fragment 0). */
    expect_violation(&a0, 1, frag(3, 0, true, false, "a0"), "in progress");
    expect_violation(a01, 2, frag(3, 2, true, true, "a2"), "in progress");
    /* A fragment after the object completed (its E fragment repeated). */
    struct eg_psrp_fragment whole[] = {a0, frag(3, 1, false, true, "a1")};
    expect_violation(whole, 2, frag(3, 1, false, true, "a1"), "unknown object");

    /* The reason names the object and carries no message data. */
    struct eg_psrp_defrag *d = new_defrag(NULL);
    struct eg_psrp_fragment secret = frag(77, 4, false, false, "s3cr3t-data");
    assert_int_equal(eg_psrp_defrag_feed(d, &secret), EG_EPROTO);
    assert_non_null(strstr(eg_psrp_defrag_reason(d), "object 77"));
    assert_null(strstr(eg_psrp_defrag_reason(d), "s3cr3t"));
    eg_psrp_defrag_free(d);

    /* A NULL blob with a length is a caller bug, not a peer's: EG_EINVAL, not sticky. */
    d = new_defrag(NULL);
    struct eg_psrp_fragment bad = {.object_id = 1, .start = true, .end = true, .blob_len = 3};
    assert_int_equal(eg_psrp_defrag_feed(d, &bad), EG_EINVAL);
    struct eg_psrp_fragment ok = frag(1, 0, true, true, "ok");
    assert_int_equal(eg_psrp_defrag_feed(d, &ok), 0);
    expect_msg(d, 1, "ok");
    eg_psrp_defrag_free(d);
}

static void test_limit_message_size(void **state)
{
    struct eg_psrp_defrag_limits lim = {.max_message = 10};
    struct eg_psrp_defrag *d = new_defrag(&lim);
    /* Exactly at the limit is fine, single or multi-fragment. */
    struct eg_psrp_fragment f1 = frag(1, 0, true, true, "0123456789");
    struct eg_psrp_fragment f2a = frag(2, 0, true, false, "01234"),
                            f2b = frag(2, 1, false, true, "56789");
    assert_int_equal(eg_psrp_defrag_feed(d, &f1), 0);
    assert_int_equal(eg_psrp_defrag_feed(d, &f2a), 0);
    assert_int_equal(eg_psrp_defrag_feed(d, &f2b), 0);
    expect_msg(d, 1, "0123456789");
    expect_msg(d, 2, "0123456789");
    /* One byte over in a later fragment. */
    struct eg_psrp_fragment f3a = frag(3, 0, true, false, "01234"),
                            f3b = frag(3, 1, false, false, "567890");
    assert_int_equal(eg_psrp_defrag_feed(d, &f3a), 0);
    assert_int_equal(eg_psrp_defrag_feed(d, &f3b), EG_ELIMIT);
    assert_non_null(strstr(eg_psrp_defrag_reason(d), "over 10 bytes"));
    assert_int_equal(eg_psrp_defrag_feed(d, &f1), EG_ELIMIT); /* sticky */
    eg_psrp_defrag_free(d);

    /* One byte over in a single fragment, and in a first fragment. */
    d = new_defrag(&lim);
    struct eg_psrp_fragment big = frag(4, 0, true, true, "0123456789a");
    assert_int_equal(eg_psrp_defrag_feed(d, &big), EG_ELIMIT);
    eg_psrp_defrag_free(d);
    d = new_defrag(&lim);
    big.end = false;
    assert_int_equal(eg_psrp_defrag_feed(d, &big), EG_ELIMIT);
    eg_psrp_defrag_free(d);
}

static void test_limit_objects_in_progress(void **state)
{
    struct eg_psrp_defrag_limits lim = {.max_in_progress = 3};
    struct eg_psrp_defrag *d = new_defrag(&lim);
    for (uint64_t i = 0; i < 3; i++) {
        struct eg_psrp_fragment f = frag(100 + i, 0, true, false, "p");
        assert_int_equal(eg_psrp_defrag_feed(d, &f), 0);
    }
    /* Single-fragment messages never occupy a slot. */
    struct eg_psrp_fragment whole = frag(200, 0, true, true, "w");
    assert_int_equal(eg_psrp_defrag_feed(d, &whole), 0);
    /* Completing one frees its slot. */
    struct eg_psrp_fragment end = frag(101, 1, false, true, "e");
    assert_int_equal(eg_psrp_defrag_feed(d, &end), 0);
    struct eg_psrp_fragment again = frag(103, 0, true, false, "p");
    assert_int_equal(eg_psrp_defrag_feed(d, &again), 0);
    assert_int_equal(eg_psrp_defrag_in_progress(d), 3);
    struct eg_psrp_fragment one_more = frag(104, 0, true, false, "p");
    assert_int_equal(eg_psrp_defrag_feed(d, &one_more), EG_ELIMIT);
    assert_non_null(strstr(eg_psrp_defrag_reason(d), "objects in progress"));
    expect_msg(d, 200, "w");
    expect_msg(d, 101, "pe");
    eg_psrp_defrag_free(d);

    /* Default limit from limits.h. */
    d = new_defrag(NULL);
    size_t i = 0;
    int r = 0;
    for (; i <= EG_PSRP_MAX_IN_PROGRESS && r == 0; i++) {
        struct eg_psrp_fragment f = frag(i, 0, true, false, "p");
        r = eg_psrp_defrag_feed(d, &f);
    }
    assert_int_equal(r, EG_ELIMIT);
    assert_int_equal(i, EG_PSRP_MAX_IN_PROGRESS + 1);
    eg_psrp_defrag_free(d);
}

static void test_limit_buffered_bytes(void **state)
{
    struct eg_psrp_defrag_limits lim = {.max_buffered = 8};
    struct eg_psrp_defrag *d = new_defrag(&lim);
    struct eg_psrp_fragment a = frag(1, 0, true, false, "aaaa"),
                            b = frag(2, 0, true, false, "bbbb");
    assert_int_equal(eg_psrp_defrag_feed(d, &a), 0);
    assert_int_equal(eg_psrp_defrag_feed(d, &b), 0);
    /* Completing an object releases its bytes... */
    struct eg_psrp_fragment a_end = frag(1, 1, false, true, "");
    assert_int_equal(eg_psrp_defrag_feed(d, &a_end), 0);
    expect_msg(d, 1, "aaaa");
    struct eg_psrp_fragment b1 = frag(2, 1, false, false, "bbbb");
    assert_int_equal(eg_psrp_defrag_feed(d, &b1), 0);
    /* ...and one more byte goes over. */
    struct eg_psrp_fragment b2 = frag(2, 2, false, true, "b");
    assert_int_equal(eg_psrp_defrag_feed(d, &b2), EG_ELIMIT);
    assert_non_null(strstr(eg_psrp_defrag_reason(d), "buffered"));
    eg_psrp_defrag_free(d);
}

/* A defragmenter that preallocated its limit would fail here: the limits are absurdly high and
 * only the bytes actually received may be allocated. */
static void test_memory_follows_message(void **state)
{
    struct eg_psrp_defrag_limits lim = {.max_message = SIZE_MAX / 4, .max_buffered = SIZE_MAX / 4};
    struct eg_psrp_defrag *d = new_defrag(&lim);
    struct eg_psrp_fragment a = frag(1, 0, true, false, "small "),
                            b = frag(1, 1, false, true, "msg");
    assert_int_equal(eg_psrp_defrag_feed(d, &a), 0);
    assert_int_equal(eg_psrp_defrag_feed(d, &b), 0);
    expect_msg(d, 1, "small msg");
    eg_psrp_defrag_free(d);
}

/* Empty blobs are legal fragments: in the middle, at the end, and as a whole (empty) message. */
static void test_empty_blobs(void **state)
{
    struct eg_psrp_defrag *d = new_defrag(NULL);
    struct eg_psrp_fragment seq[] = {frag(1, 0, true, false, ""), frag(1, 1, false, false, "x"),
                                     frag(1, 2, false, false, ""), frag(1, 3, false, true, ""),
                                     frag(2, 0, true, true, "")};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(eg_psrp_defrag_feed(d, &seq[i]), 0);
    expect_msg(d, 1, "x");
    expect_msg(d, 2, "");
    eg_psrp_defrag_free(d);
}

/* One scenario, run with the n-th allocation failing for every n until it passes. */
static int alloc_scenario(void)
{
    struct eg_psrp_defrag *d = NULL;
    uint8_t *out = NULL;
    size_t olen = 0;
    int r = eg_psrp_defrag_new(NULL, &d);
    if (r < 0)
        return r;
    char big[3000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    struct eg_psrp_fragment seq[] = {
        frag(1, 0, true, false, "one-"), frag(2, 0, true, true, "two"),
        frag(3, 0, true, false, big),    frag(1, 1, false, false, big),
        frag(4, 0, true, false, "4"),    frag(5, 0, true, false, "5"),
        frag(6, 0, true, false, "6"),    frag(7, 0, true, false, "7"),
        frag(3, 1, false, true, big),    frag(1, 2, false, true, "-end"),
    };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        r = eg_psrp_defrag_feed(d, &seq[i]);
        if (r < 0)
            goto out;
        /* Once failed, the error sticks. */
    }
    const uint64_t want_oids[] = {2, 3, 1};
    const size_t want_lens[] = {3, 2 * (sizeof big - 1), 4 + sizeof big - 1 + 4};
    for (size_t i = 0; i < 3; i++) {
        uint64_t oid = 0;
        assert_int_equal(eg_psrp_defrag_pop(d, &out, &olen, &oid), 0);
        assert_int_equal(oid, want_oids[i]);
        assert_int_equal(olen, want_lens[i]);
        eg_freep(&out);
    }
    assert_int_equal(eg_psrp_defrag_in_progress(d), 4);
out:
    if (r < 0) {
        assert_int_equal(r, EG_ENOMEM);
        struct eg_psrp_fragment f = frag(50, 0, true, true, "x");
        assert_int_equal(eg_psrp_defrag_feed(d, &f), EG_ENOMEM);
        assert_string_equal(eg_psrp_defrag_reason(d), "out of memory");
    }
    eg_psrp_defrag_free(d);
    return r;
}

static void test_allocation_failure_loop(void **state)
{
    long n = 0;
    int r;
    for (;; n++) {
        eg_alloc_fail_after(n);
        r = alloc_scenario();
        long failures = eg_alloc_failures();
        eg_alloc_fail_after(-1);
        if (r == 0) {
            assert_int_equal(failures, 0);
            break;
        }
        assert_int_equal(r, EG_ENOMEM);
        assert_true(failures > 0);
        assert_true(n < 1000);
    }
    assert_true(n >= 5); /* the scenario does allocate several times */
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_header_fields),
        cmocka_unit_test(test_flags_other_bits_ignored),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_concatenated_buffer),
        cmocka_unit_test(test_feed_buffer_truncated_tail),
        cmocka_unit_test(test_fragmenter_sizes),
        cmocka_unit_test(test_fragmenter_large),
        cmocka_unit_test(test_fragmenter_errors),
        cmocka_unit_test(test_interleaved_objects),
        cmocka_unit_test(test_protocol_violations),
        cmocka_unit_test(test_limit_message_size),
        cmocka_unit_test(test_limit_objects_in_progress),
        cmocka_unit_test(test_limit_buffered_bytes),
        cmocka_unit_test(test_memory_follows_message),
        cmocka_unit_test(test_empty_blobs),
        cmocka_unit_test(test_allocation_failure_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
