/* secretbox.c - the key file and AES-256-GCM sealing of secret strings (see secretbox.h). */
#include "agent/secretbox.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"

#define NONCE_BYTES 12
#define TAG_BYTES   16

struct eg_secretbox {
    unsigned char key[EG_SECRETBOX_KEY_BYTES];
    char *path;
};

static int why_set(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int why_set(char *why, size_t whylen, int code, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int fill_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return EG_EIO;
        }
        got += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len) {
        ssize_t k = write(fd, p, len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return EG_EIO;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

/* Create the key file; EG_ECONFLICT when it appeared meanwhile (someone else created it). */
static int create_key(const char *path, unsigned char key[EG_SECRETBOX_KEY_BYTES], char *why,
                      size_t whylen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = 0, e;
    if (fd < 0) {
        if (errno == EEXIST)
            return EG_ECONFLICT;
        e = errno;
        rc = why_set(why, whylen, EG_EIO, "cannot create the key file %s: %s", path, strerror(e));
        errno = e;
        return rc;
    }
    if (fill_random(key, EG_SECRETBOX_KEY_BYTES) < 0) {
        e = errno;
        rc = why_set(why, whylen, EG_EIO, "cannot draw a key for %s: getrandom: %s", path,
                     strerror(e));
        goto fail;
    }
    /* The mode asked for is 0600; make sure no umask oddity or ACL default widened it. */
    if (fchmod(fd, 0600) < 0 || write_all(fd, key, EG_SECRETBOX_KEY_BYTES) < 0 || fsync(fd) < 0) {
        e = errno;
        rc = why_set(why, whylen, EG_EIO, "cannot write the key file %s: %s", path, strerror(e));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        e = errno;
        rc = why_set(why, whylen, EG_EIO, "cannot write the key file %s: %s", path, strerror(e));
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(path); /* a half-written key must not be used at the next start */
    eg_memzero(key, EG_SECRETBOX_KEY_BYTES);
    errno = e;
    return rc;
}

static int read_key(const char *path, unsigned char key[EG_SECRETBOX_KEY_BYTES], char *why,
                    size_t whylen)
{
    struct stat st;
    unsigned char buf[EG_SECRETBOX_KEY_BYTES + 1];
    size_t got = 0;
    int rc = 0, e;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        e = errno;
        if (e == ENOENT)
            rc = why_set(why, whylen, EG_ENOTFOUND, "the key file %s does not exist", path);
        else if (e == ELOOP)
            rc = why_set(why, whylen, EG_EPERM, "the key file %s is a symbolic link; refusing it",
                         path);
        else
            rc = why_set(why, whylen, EG_EIO, "cannot open the key file %s: %s", path, strerror(e));
        errno = e;
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        e = errno;
        rc = why_set(why, whylen, EG_EIO, "cannot stat the key file %s: %s", path, strerror(e));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = why_set(why, whylen, EG_EPERM, "the key file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        rc = why_set(why, whylen, EG_EPERM,
                     "the key file %s has mode %04o: group or others may access it; refusing "
                     "to use it (it must be 0600 or stricter: chmod 600 it, or remove it and "
                     "every secret sealed with it)",
                     path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    while (got < sizeof buf) {
        ssize_t k = read(fd, buf + got, sizeof buf - got);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            rc = why_set(why, whylen, EG_EIO, "cannot read the key file %s: %s", path, strerror(e));
            goto out;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    if (got != EG_SECRETBOX_KEY_BYTES) {
        rc = why_set(why, whylen, EG_EINVAL, "the key file %s is %s%zu bytes long, not %d", path,
                     got > EG_SECRETBOX_KEY_BYTES ? "more than " : "",
                     got > EG_SECRETBOX_KEY_BYTES ? (size_t)EG_SECRETBOX_KEY_BYTES : got,
                     EG_SECRETBOX_KEY_BYTES);
        goto out;
    }
    memcpy(key, buf, EG_SECRETBOX_KEY_BYTES);
out:
    eg_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

int eg_secretbox_new(const char *path, bool create, struct eg_secretbox **ret, char *why,
                     size_t whylen)
{
    struct eg_secretbox *b = NULL;
    int rc;
    if (why && whylen)
        why[0] = '\0';
    if (!path || !*path || !ret)
        return why_set(why, whylen, EG_EINVAL, "no key file path was given");
    b = eg_calloc(1, sizeof *b);
    if (!b || !(b->path = eg_strdup(path))) {
        eg_free(b);
        return why_set(why, whylen, EG_ENOMEM, "out of memory");
    }
    rc = read_key(path, b->key, why, whylen);
    if (rc == EG_ENOTFOUND && create) {
        rc = create_key(path, b->key, why, whylen);
        if (rc == EG_ECONFLICT) /* created by someone else since: use theirs */
            rc = read_key(path, b->key, why, whylen);
    }
    if (rc < 0) {
        eg_secretbox_free(b);
        return rc;
    }
    if (why && whylen)
        why[0] = '\0';
    *ret = b;
    return 0;
}

void eg_secretbox_free(struct eg_secretbox *b)
{
    if (!b)
        return;
    eg_memzero(b->key, sizeof b->key);
    eg_free(b->path);
    eg_free(b);
}

const char *eg_secretbox_path(const struct eg_secretbox *b)
{
    return b ? b->path : NULL;
}

/* One AES-256-GCM pass. encrypt: in -> out and tag written; decrypt: tag checked. */
static int gcm(const struct eg_secretbox *b, bool encrypt, const unsigned char *nonce,
               const char *aad, const unsigned char *in, size_t len, unsigned char *out,
               unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, rc = EG_ETLS;
    if (!ctx)
        return EG_ENOMEM;
    if (len > INT32_MAX)
        goto out;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, b->key, nonce, encrypt ? 1 : 0) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1)
        goto out;
    if (len && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        goto out;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1) {
        rc = encrypt ? EG_ETLS : EG_EAUTH;
        goto out;
    }
    if (encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int eg_secretbox_seal(const struct eg_secretbox *b, const char *field, const char *plaintext,
                      char **ret)
{
    unsigned char *blob = NULL;
    char *text = NULL, *b64 = NULL;
    size_t len, b64len = 0;
    int rc;

    if (!b || !field || !*field || !plaintext || !ret)
        return EG_EINVAL;
    len = strlen(plaintext);
    if (len > EG_MAX_SECRET_BYTES)
        return EG_ELIMIT;
    blob = eg_malloc(NONCE_BYTES + len + TAG_BYTES);
    if (!blob)
        return EG_ENOMEM;
    if ((rc = fill_random(blob, NONCE_BYTES)) < 0)
        goto out;
    rc = gcm(b, true, blob, field, (const unsigned char *)plaintext, len, blob + NONCE_BYTES,
             blob + NONCE_BYTES + len);
    if (rc < 0)
        goto out;
    if ((rc = eg_base64_encode(blob, NONCE_BYTES + len + TAG_BYTES, &b64, &b64len)) < 0)
        goto out;
    text = eg_asprintf("%s%s", EG_SECRETBOX_PREFIX, b64);
    if (!text) {
        rc = EG_ENOMEM;
        goto out;
    }
    *ret = text;
out:
    eg_free(b64);
    eg_free(blob);
    return rc;
}

int eg_secretbox_open(const struct eg_secretbox *b, const char *field, const char *sealed,
                      char **ret)
{
    uint8_t *blob = NULL;
    char *plain = NULL;
    size_t blen = 0, plen;
    const size_t prefix = strlen(EG_SECRETBOX_PREFIX);
    int rc;

    if (!b || !field || !*field || !sealed || !ret)
        return EG_EINVAL;
    if (strncmp(sealed, EG_SECRETBOX_PREFIX, prefix) != 0)
        return EG_EPARSE;
    size_t tlen = strlen(sealed + prefix);
    if (tlen > eg_base64_encoded_len(NONCE_BYTES + EG_MAX_SECRET_BYTES + TAG_BYTES))
        return EG_ELIMIT;
    rc = eg_base64_decode(sealed + prefix, tlen, 0, &blob, &blen);
    if (rc < 0)
        return rc == EG_ENOMEM ? rc : EG_EPARSE;
    if (blen < NONCE_BYTES + TAG_BYTES) {
        rc = EG_EPARSE;
        goto out;
    }
    plen = blen - NONCE_BYTES - TAG_BYTES;
    plain = eg_malloc(plen + 1);
    if (!plain) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = gcm(b, false, blob, field, blob + NONCE_BYTES, plen, (unsigned char *)plain,
             blob + NONCE_BYTES + plen);
    if (rc < 0)
        goto out;
    plain[plen] = '\0';
    if (strlen(plain) != plen) {
        rc = EG_EINVAL;
        goto out;
    }
    *ret = plain;
    plain = NULL;
out:
    if (plain) { /* GCM writes the plaintext before it checks the tag */
        eg_memzero(plain, plen + 1);
        eg_free(plain);
    }
    eg_free(blob);
    return rc;
}

void eg_secret_free(char *s)
{
    if (!s)
        return;
    eg_memzero(s, strlen(s));
    eg_free(s);
}
