/* base64.h - strict RFC 4648 section 4 base64 (standard alphabet, '=' padding).
 *
 * The decoder is strict where OpenSSL's EVP_DecodeBlock is lax: the text must be a whole number of
 * 4-character quanta, '=' may appear only as the last one or two characters of the last quantum,
 * nothing may follow the padding, and the unused low bits of the last quantum must be zero (so
 * every byte string has exactly one accepted encoding). Whitespace is an error unless
 * EG_BASE64_IGNORE_WS is given. Errors never echo the input.
 */
#ifndef EG_BASE64_H
#define EG_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Decode flag: skip ASCII space, TAB, CR and LF anywhere in the text (e.g. line-wrapped XML). */
#define EG_BASE64_IGNORE_WS 0x1u

/* Length of the encoding of n bytes, padding included, NUL excluded; SIZE_MAX if it would not fit
 * in a size_t. */
size_t eg_base64_encoded_len(size_t n);

/* Most bytes that a text of len characters can decode to (len / 4 * 3, rounded up). */
size_t eg_base64_decoded_max(size_t len);

/* Encode len bytes into out, which has cap bytes; the text is NUL-terminated, so cap must be at
 * least eg_base64_encoded_len(len) + 1. *ret_len (may be NULL) gets the text length.
 * Returns 0 or EG_ELIMIT (out too small). */
int eg_base64_encode_to(const void *data, size_t len, char *out, size_t cap,
                        size_t *ret_len) EG_MUST_CHECK;

/* Encode into a new NUL-terminated string the caller frees with eg_free. *ret_len (may be NULL)
 * gets its length. Returns 0, EG_ELIMIT (len too large) or EG_ENOMEM. */
int eg_base64_encode(const void *data, size_t len, char **ret, size_t *ret_len) EG_MUST_CHECK;

/* Decode len characters of s (no NUL needed) into out, which has cap bytes; out may be written
 * even when an error is returned. flags: 0 or EG_BASE64_IGNORE_WS.
 * Returns 0, EG_EPARSE (not strict base64) or EG_ELIMIT (out too small; a cap of
 * eg_base64_decoded_max(len) is always enough). */
int eg_base64_decode_to(const char *s, size_t len, unsigned flags, uint8_t *out, size_t cap,
                        size_t *ret_len) EG_MUST_CHECK;

/* Decode into a new buffer the caller frees with eg_free. The buffer is never NULL on success
 * (also for an empty text) and has a NUL byte after the data, for convenience.
 * Returns 0, EG_EPARSE or EG_ENOMEM. */
int eg_base64_decode(const char *s, size_t len, unsigned flags, uint8_t **ret,
                     size_t *ret_len) EG_MUST_CHECK;

#endif
