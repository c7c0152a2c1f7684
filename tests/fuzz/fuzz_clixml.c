/* fuzz_clixml.c - libFuzzer target for the CLIXML decoders (exchange/clixml): arbitrary bytes as
 * the data of one PSRP message and as a stream fed in small chunks. Properties checked:
 *  - a failed decode leaves *ret alone and gives a diagnostic;
 *  - every decoded value encodes, decodes back to an equal value, and encodes to the same text
 *    again (the encoder is deterministic and the decoder reads what it writes);
 *  - what the single-message decoder accepts, the stream decoder accepts too, as one equal value;
 *  - no value node outlives its decode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "exchange/clixml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* encode -> decode -> equal -> encode again, identical */
static void check_roundtrip(const struct eg_ps_value *v)
{
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;
    struct eg_ps_value *w = NULL;
    if (eg_clixml_encode(v, &t1, &l1) != 0)
        abort();
    if (eg_clixml_decode(t1, l1, &w, NULL) != 0 || !eg_ps_value_equal(v, w))
        abort();
    if (eg_clixml_encode(w, &t2, &l2) != 0 || l1 != l2 || memcmp(t1, t2, l1) != 0)
        abort();
    eg_free(t1);
    eg_free(t2);
    eg_ps_value_free(w);
}

struct seen {
    size_t n;
    struct eg_ps_value *first;
};

static int on_value(void *u, const char *stream, struct eg_ps_value *v)
{
    struct seen *s = u;
    if (!v)
        abort();
    check_roundtrip(v);
    if (s->n++ == 0)
        s->first = eg_ps_value_ref(v);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    if (!initialised) {
        eg_alloc_init();
        initialised = 1;
    }
    /* keep re-encoded strings (escapes grow up to 7x) under the decoder's string limit */
    if (size > 1024 * 1024)
        return 0;
    size_t live = eg_ps_live_values();

    struct eg_ps_value *v = (struct eg_ps_value *)(uintptr_t)1;
    struct eg_clixml_error err;
    int rc = eg_clixml_decode(data, size, &v, &err);
    if (rc != 0) {
        if (v != (struct eg_ps_value *)(uintptr_t)1 || err.msg[0] == '\0' ||
            memchr(err.msg, '\0', sizeof err.msg) == NULL)
            abort();
        v = NULL;
    } else {
        check_roundtrip(v);
    }

    /* the same bytes through the stream decoder, in chunks of 1..16 bytes */
    struct seen seen = {0};
    struct eg_clixml_stream *s = NULL;
    if (eg_clixml_stream_new(on_value, &seen, &s) != 0)
        abort();
    size_t chunk = size ? (size_t)(data[0] % 16) + 1 : 1;
    int src = 0;
    for (size_t off = 0; off < size && src == 0; off += chunk)
        src = eg_clixml_stream_feed(s, data + off, size - off < chunk ? size - off : chunk);
    if (src == 0)
        src = eg_clixml_stream_finish(s);
    if (src != 0 && eg_clixml_stream_errmsg(s)[0] == '\0')
        abort();
    if (v && (src != 0 || seen.n != 1 || !eg_ps_value_equal(v, seen.first)))
        abort();
    eg_clixml_stream_free(s);
    eg_ps_value_free(seen.first);
    eg_ps_value_free(v);
    if (eg_ps_live_values() != live)
        abort();
    return 0;
}
