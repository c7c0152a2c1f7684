/* fuzz_psrp.c - libFuzzer target for the PSRP codecs (exchange/psrp_fragment, psrp_message) and
 * the strict base64 decoder (common/base64).
 *
 * The input is treated as:
 *   1. a run of concatenated fragments fed to a defragmenter with small limits; every message it
 *      completes is decoded and must re-encode to the same bytes;
 *   2. the same bytes split in two feeds at a point chosen by the first byte (state carried
 *      across feeds must not matter);
 *   3. one message decoded directly;
 *   4. a message body cut by the fragmenter (size from the first byte) and reassembled, which
 *      must give the input back;
 *   5. base64 text: if the strict decoder accepts it, encoding the result must give the input
 *      back exactly (one accepted spelling per byte string); and a GUID string.
 * Any broken invariant aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "exchange/psrp_fragment.h"
#include "exchange/psrp_message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct eg_psrp_defrag_limits fuzz_limits = {
    .max_message = 1 << 20,
    .max_in_progress = 8,
    .max_buffered = 2 << 20,
    .max_blob = 1 << 20,
};

/* A decoded message must re-encode to exactly its bytes (when it is encodable at all). */
static void check_message(const uint8_t *raw, size_t len)
{
    struct eg_psrp_message m;
    if (eg_psrp_message_decode(raw, len, &m) != 0) {
        if (len >= EG_PSRP_MESSAGE_HEADER_LEN)
            abort();
        return;
    }
    (void)eg_psrp_msg_type_name(m.type);
    char text[EG_PSRP_GUID_STRLEN];
    struct eg_psrp_guid back;
    if (eg_psrp_guid_from_string(eg_psrp_guid_to_string(&m.rpid, false, text), &back) != 0 ||
        !eg_psrp_guid_equal(&back, &m.rpid))
        abort();
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    int r = eg_psrp_message_encode(&m, m.had_bom ? EG_PSRP_ENCODE_BOM : 0, &enc, &enc_len);
    if (r == 0) {
        if (enc_len != len || memcmp(enc, raw, len) != 0)
            abort();
        eg_free(enc);
    } else if (r != EG_EINVAL && r != EG_ELIMIT && r != EG_ENOMEM) {
        abort();
    }
}

/* Feed data in the given pieces; check every completed message; return the feed result. */
static int defrag_run(const uint8_t *data, size_t size, size_t split)
{
    struct eg_psrp_defrag *d = NULL;
    if (eg_psrp_defrag_new(&fuzz_limits, &d) != 0)
        return EG_ENOMEM;
    int r = eg_psrp_defrag_feed_buffer(d, data, split);
    if (r == 0)
        r = eg_psrp_defrag_feed_buffer(d, data + split, size - split);
    if (r < 0 && eg_psrp_defrag_reason(d)[0] == '\0')
        abort(); /* every failure has a reason */
    uint8_t *msg = NULL;
    size_t len = 0;
    while (eg_psrp_defrag_pop(d, &msg, &len, NULL) == 0) {
        check_message(msg, len);
        eg_free(msg);
    }
    if (eg_psrp_defrag_ready(d) != 0)
        abort();
    eg_psrp_defrag_free(d);
    return r;
}

static void fragmenter_roundtrip(const uint8_t *data, size_t size)
{
    size_t max = EG_PSRP_FRAGMENT_HEADER_LEN + 1 + (size ? data[0] : 0);
    uint64_t counter = size ? data[size - 1] : 0;
    struct eg_psrp_fragments *fr = NULL;
    if (eg_psrp_fragment_message(data, size, max, &counter, &fr) != 0)
        return;
    struct eg_psrp_defrag *d = NULL;
    if (eg_psrp_defrag_new(NULL, &d) != 0) {
        eg_psrp_fragments_free(fr);
        return;
    }
    if (eg_psrp_defrag_feed_buffer(d, fr->data, fr->len) != 0)
        abort();
    uint8_t *msg = NULL;
    size_t len = 0;
    if (eg_psrp_defrag_pop(d, &msg, &len, NULL) != 0 || len != size ||
        (size && memcmp(msg, data, size) != 0))
        abort();
    eg_free(msg);
    eg_psrp_defrag_free(d);
    eg_psrp_fragments_free(fr);
}

static void base64_and_guid(const uint8_t *data, size_t size)
{
    uint8_t *dec = NULL;
    size_t dlen = 0;
    if (eg_base64_decode((const char *)data, size, 0, &dec, &dlen) == 0) {
        char *enc = NULL;
        size_t elen = 0;
        if (eg_base64_encode(dec, dlen, &enc, &elen) != 0 || elen != size ||
            memcmp(enc, data, size) != 0)
            abort();
        eg_free(enc);
        eg_free(dec);
    }
    if (eg_base64_decode((const char *)data, size, EG_BASE64_IGNORE_WS, &dec, &dlen) == 0)
        eg_free(dec);
    if (size <= 64) {
        char s[65];
        memcpy(s, data, size);
        s[size] = 0;
        struct eg_psrp_guid g;
        char back[EG_PSRP_GUID_STRLEN];
        const char *core = size == 38 ? s + 1 : s; /* accepted: 36 chars, or 38 in braces */
        if (eg_psrp_guid_from_string(s, &g) == 0 &&
            strncasecmp(eg_psrp_guid_to_string(&g, false, back), core, 36) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int whole = defrag_run(data, size, size);
    size_t split = size ? (data[0] * size) / 256 : 0;
    int pieces = defrag_run(data, size, split);
    /* Fragments are self-delimiting: where the input is cut between feeds changes nothing. */
    if (whole != pieces && whole != EG_ENOMEM && pieces != EG_ENOMEM) {
        /* A cut inside a fragment makes the first feed fail as truncated. */
        if (pieces != EG_EPARSE)
            abort();
    }
    check_message(data, size);
    if (size <= (1u << 20))
        fragmenter_roundtrip(data, size);
    base64_and_guid(data, size);
    return 0;
}
