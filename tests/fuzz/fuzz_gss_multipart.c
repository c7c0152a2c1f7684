/* fuzz_gss_multipart.c - libFuzzer target for the multipart/encrypted parser of transport/gss
 * (eg_gss_multipart_parse, the context-free first step of eg_gss_unseal).
 *
 * The input is a sealed body. Invariants checked on success: every pointer lies inside the
 * input, the payload holds the u32 signature length and the signature, the protocol is one of
 * the two session-encrypted types, the declared Length is within EG_WSMAN_MAX_RESPONSE_BYTES;
 * parsing is deterministic; eg_gss_unseal without a context refuses it (EG_EINVAL). Any broken
 * invariant aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/limits.h"
#include "transport/gss.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const void *p, size_t n, const uint8_t *base, size_t size)
{
    const uint8_t *q = p;
    return q >= base && n <= size && (size_t)(q - base) <= size - n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eg_gss_multipart m, m2;
    int r = eg_gss_multipart_parse((const char *)data, size, &m);
    if (r != 0) {
        if (r != EG_EPARSE && r != EG_ELIMIT)
            abort();
        return 0;
    }
    if (!inside(m.payload, m.payload_len, data, size) || m.payload_len < 4 ||
        m.sig_len > m.payload_len - 4 || m.sig_len > EG_GSS_MAX_SIGNATURE)
        abort();
    uint32_t sl = (uint32_t)m.payload[0] | (uint32_t)m.payload[1] << 8 |
                  (uint32_t)m.payload[2] << 16 | (uint32_t)m.payload[3] << 24;
    if (sl != m.sig_len)
        abort();
    if (!m.protocol || !inside(m.protocol, m.protocol_len, data, size) ||
        (strncasecmp(m.protocol, eg_gss_protocol(EG_GSS_NEGOTIATE), m.protocol_len) != 0 &&
         strncasecmp(m.protocol, eg_gss_protocol(EG_GSS_KERBEROS), m.protocol_len) != 0))
        abort();
    if (!inside(m.orig_type, m.orig_type_len, data, size) || m.length > EG_WSMAN_MAX_RESPONSE_BYTES)
        abort();
    if (eg_gss_multipart_parse((const char *)data, size, &m2) != 0 || m2.payload != m.payload ||
        m2.payload_len != m.payload_len || m2.sig_len != m.sig_len || m2.length != m.length ||
        m2.orig_type != m.orig_type || m2.orig_type_len != m.orig_type_len ||
        m2.protocol != m.protocol || m2.protocol_len != m.protocol_len)
        abort();
    uint8_t *plain = NULL;
    size_t plen = 0;
    if (eg_gss_unseal(NULL, (const char *)data, size, &plain, &plen, NULL, NULL, 0) != EG_EINVAL)
        abort();
    return 0;
}
