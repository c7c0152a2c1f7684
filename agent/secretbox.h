/* secretbox.h - secrets at rest: one 32-byte key file and AES-256-GCM sealing of secret strings.
 *
 * The key file (default <state_dir>/secret.key) is created on first use with O_CREAT|O_EXCL and
 * mode 0600 from getrandom(); an existing key file is used only when it is a regular file of
 * exactly EG_SECRETBOX_KEY_BYTES bytes that neither group nor others may read or write.
 *
 * A sealed secret is the text "eg1:" + base64(nonce[12] | ciphertext | tag[16]) (common/base64.h)
 * with a fresh random 96-bit nonce per seal and the field name (e.g. "target.password") as the
 * additional authenticated data, so a sealed value moved to another field does not open.
 * Plaintexts and the key are wiped when freed. Nothing here logs; no error text contains a
 * secret or key bytes.
 */
#ifndef EG_SECRETBOX_H
#define EG_SECRETBOX_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define EG_SECRETBOX_PREFIX "eg1:"

struct eg_secretbox;

/* Load the key from path, creating the file first when it does not exist (create = true).
 * On success *ret is the box (free with eg_secretbox_free). On failure why (may be NULL) gets a
 * sentence naming the path and the problem. Returns 0, EG_EIO (open/read/create failed; errno
 * meaningful), EG_ENOTFOUND (missing and create = false), EG_EPERM (group/other may access the
 * file, or it is not a regular file), EG_EINVAL (not EG_SECRETBOX_KEY_BYTES bytes), EG_ENOMEM. */
int eg_secretbox_new(const char *path, bool create, struct eg_secretbox **ret, char *why,
                     size_t whylen) EG_MUST_CHECK;

/* Wipe the key and free. Accepts NULL. */
void eg_secretbox_free(struct eg_secretbox *b);

/* The key file's path (owned by b). */
const char *eg_secretbox_path(const struct eg_secretbox *b);

/* Seal plaintext (NUL-terminated, at most EG_MAX_SECRET_BYTES) bound to field (the AAD, not
 * empty). *ret is a new "eg1:..." text the caller frees with eg_free (it is not secret).
 * Returns 0, EG_EINVAL, EG_ELIMIT, EG_EIO (no randomness), EG_ETLS (cipher failure), EG_ENOMEM. */
int eg_secretbox_seal(const struct eg_secretbox *b, const char *field, const char *plaintext,
                      char **ret) EG_MUST_CHECK;

/* Open a sealed text for field. *ret is the NUL-terminated plaintext; the caller frees it with
 * eg_secret_free. Returns 0, EG_EPARSE (not an "eg1:" text or too short), EG_EAUTH (does not
 * authenticate: tampered, another key, or sealed for another field), EG_EINVAL (the plaintext
 * holds a NUL byte), EG_ETLS, EG_ENOMEM. */
int eg_secretbox_open(const struct eg_secretbox *b, const char *field, const char *sealed,
                      char **ret) EG_MUST_CHECK;

/* Wipe a NUL-terminated secret string and free it. Accepts NULL. */
void eg_secret_free(char *s);

#endif
