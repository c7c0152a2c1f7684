/* test_base64.c - strict base64 (common/base64): RFC 4648 vectors, strictness, cross-check with
 * OpenSSL's encoder, buffer limits and allocation failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"

static const struct {
    const char *plain, *b64;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_rfc4648_vectors(void **state)
{
    for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
        const char *p = rfc4648[i].plain, *b = rfc4648[i].b64;
        char *enc = NULL;
        size_t n = 99;
        assert_int_equal(eg_base64_encode(p, strlen(p), &enc, &n), 0);
        assert_string_equal(enc, b);
        assert_int_equal(n, strlen(b));
        assert_int_equal(eg_base64_encoded_len(strlen(p)), strlen(b));
        eg_free(enc);

        uint8_t *dec = NULL;
        n = 99;
        assert_int_equal(eg_base64_decode(b, strlen(b), 0, &dec, &n), 0);
        assert_non_null(dec);
        assert_int_equal(n, strlen(p));
        assert_memory_equal(dec, p, n);
        assert_int_equal(dec[n], 0);
        eg_free(dec);
    }
}

static int decode_rc(const char *s, unsigned flags)
{
    uint8_t *dec = NULL;
    size_t n = 0;
    int r = eg_base64_decode(s, strlen(s), flags, &dec, &n);
    eg_free(dec);
    return r;
}

static void test_strict_rejections(void **state)
{
    static const char *bad[] = {
        "Zg",                                    /* no padding */
        "Zg=",                                   /* truncated padding */
        "Z",        "Zm9vY",                     /* partial quantum */
        "Zh==",                                  /* non-zero unused bits (1 byte) */
        "Zm9=",                                  /* non-zero unused bits (2 bytes) */
        "Z===",     "====",  "=Zg=",             /* misplaced '=' */
        "Zg=a",                                  /* data after '=' in the quantum */
        "Zg==Zg==",                              /* data after the padding */
        "Zg===",                                 /* extra '=' */
        "Zm9v\n",   " Zm9v", "Zm 9v", "Zm9v\t",  /* whitespace without the flag */
        "Zm-v",     "Zm_v",  "Zm9*",  "Zm9\x80", /* outside the alphabet (incl. base64url) */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (decode_rc(bad[i], 0) != EG_EPARSE)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    /* An embedded NUL is not skipped. */
    uint8_t *dec = NULL;
    size_t n = 0;
    assert_int_equal(eg_base64_decode("Zm\0v", 4, 0, &dec, &n), EG_EPARSE);
    assert_null(dec);
}

static void test_whitespace_flag(void **state)
{
    uint8_t *dec = NULL;
    size_t n = 0;
    const char *s = " Zm9v\r\nYmFy\tZg = =\n";
    assert_int_equal(eg_base64_decode(s, strlen(s), EG_BASE64_IGNORE_WS, &dec, &n), 0);
    assert_int_equal(n, 7);
    assert_memory_equal(dec, "foobarf", 7);
    eg_free(dec);
    /* Whitespace does not relax anything else. */
    assert_int_equal(decode_rc("Zg= =x", EG_BASE64_IGNORE_WS), EG_EPARSE);
    assert_int_equal(decode_rc("Zg\n", EG_BASE64_IGNORE_WS), EG_EPARSE);
    assert_int_equal(decode_rc("  \n", EG_BASE64_IGNORE_WS), 0);
}

/* Every byte value at every position and length 0..300, compared with OpenSSL's encoder. */
static void test_roundtrip_against_openssl(void **state)
{
    uint8_t buf[300];
    unsigned seed = 12345;
    for (size_t len = 0; len <= sizeof buf; len++) {
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (uint8_t)((seed >> 16) ^ (i * 7));
        }
        char *enc = NULL;
        size_t n = 0;
        assert_int_equal(eg_base64_encode(buf, len, &enc, &n), 0);
        unsigned char ref[512];
        int rn = EVP_EncodeBlock(ref, buf, (int)len);
        assert_int_equal(n, (size_t)rn);
        assert_memory_equal(enc, ref, n);

        uint8_t *dec = NULL;
        size_t dn = 0;
        assert_int_equal(eg_base64_decode(enc, n, 0, &dec, &dn), 0);
        assert_int_equal(dn, len);
        if (len)
            assert_memory_equal(dec, buf, len);
        eg_free(dec);
        eg_free(enc);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *enc = NULL;
    assert_int_equal(eg_base64_encode(all, sizeof all, &enc, NULL), 0);
    uint8_t *dec = NULL;
    size_t dn = 0;
    assert_int_equal(eg_base64_decode(enc, strlen(enc), 0, &dec, &dn), 0);
    assert_int_equal(dn, 256);
    assert_memory_equal(dec, all, 256);
    eg_free(dec);
    eg_free(enc);
}

static void test_caller_buffers(void **state)
{
    char out[9];
    size_t n = 0;
    assert_int_equal(eg_base64_encode_to("foobar", 6, out, 8, &n), EG_ELIMIT); /* no room for NUL */
    assert_int_equal(eg_base64_encode_to("foobar", 6, out, 9, &n), 0);
    assert_string_equal(out, "Zm9vYmFy");
    assert_int_equal(n, 8);

    uint8_t d[6];
    assert_int_equal(eg_base64_decode_to("Zm9vYmFy", 8, 0, d, 5, &n), EG_ELIMIT);
    assert_int_equal(eg_base64_decode_to("Zm9vYmE=", 8, 0, d, 4, &n), EG_ELIMIT);
    assert_int_equal(eg_base64_decode_to("Zm9vYg==", 8, 0, d, 3, &n), EG_ELIMIT);
    n = 77;
    assert_int_equal(eg_base64_decode_to("Zm9vYg==", 8, 0, d, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(d, "foob", 4);
    assert_int_equal(eg_base64_decoded_max(8), 6);
    assert_int_equal(eg_base64_decoded_max(9), 9);
    assert_int_equal(eg_base64_decoded_max(0), 0);
    assert_int_equal(eg_base64_decode_to("", 0, 0, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(eg_base64_encoded_len(SIZE_MAX), SIZE_MAX);
}

static void test_allocation_failure(void **state)
{
    char *enc = NULL;
    uint8_t *dec = NULL;
    size_t n = 0;
    eg_alloc_fail_after(0);
    assert_int_equal(eg_base64_encode("foo", 3, &enc, &n), EG_ENOMEM);
    assert_int_equal(eg_base64_decode("Zm9v", 4, 0, &dec, &n), EG_ENOMEM);
    eg_alloc_fail_after(-1);
    assert_null(enc);
    assert_null(dec);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors), cmocka_unit_test(test_strict_rejections),
        cmocka_unit_test(test_whitespace_flag), cmocka_unit_test(test_roundtrip_against_openssl),
        cmocka_unit_test(test_caller_buffers),  cmocka_unit_test(test_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
