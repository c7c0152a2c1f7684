/* test_secretbox.c - the key file (creation, mode and size checks) and AES-256-GCM sealing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/secretbox.h"
#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"

struct fx {
    char dir[64];
    char key[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/eg-test-secretbox.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->key, sizeof f->key, "%s/secret.key", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_key_created_0600_and_reused(void **state)
{
    struct fx *f = *state;
    struct eg_secretbox *b = NULL, *b2 = NULL;
    char why[512];
    struct stat st;
    char *sealed = NULL, *plain = NULL;

    /* Not there and create = false: a clear "does not exist". */
    assert_int_equal(eg_secretbox_new(f->key, false, &b, why, sizeof why), EG_ENOTFOUND);
    assert_non_null(strstr(why, f->key));
    assert_int_equal(stat(f->key, &st), -1);

    mode_t old = umask(0); /* a permissive umask must not widen the key file */
    int rc = eg_secretbox_new(f->key, true, &b, why, sizeof why);
    umask(old);
    assert_int_equal(rc, 0);
    assert_string_equal(eg_secretbox_path(b), f->key);
    assert_int_equal(stat(f->key, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, EG_SECRETBOX_KEY_BYTES);

    /* A second open reads the same key: what one sealed the other opens. */
    assert_int_equal(eg_secretbox_seal(b, "target.password", "s3cret", &sealed), 0);
    assert_int_equal(eg_secretbox_new(f->key, true, &b2, why, sizeof why), 0);
    assert_int_equal(eg_secretbox_open(b2, "target.password", sealed, &plain), 0);
    assert_string_equal(plain, "s3cret");
    eg_secret_free(plain);
    eg_free(sealed);
    eg_secretbox_free(b);
    eg_secretbox_free(b2);
    eg_secretbox_free(NULL);
}

static void test_two_keys_differ(void **state)
{
    struct fx *f = *state;
    char k2[160], why[512];
    unsigned char a[64], c[64];
    struct eg_secretbox *b = NULL;
    snprintf(k2, sizeof k2, "%s/other.key", f->dir);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), 0);
    eg_secretbox_free(b);
    assert_int_equal(eg_secretbox_new(k2, true, &b, why, sizeof why), 0);
    eg_secretbox_free(b);
    FILE *fa = fopen(f->key, "rb"), *fc = fopen(k2, "rb");
    assert_int_equal(fread(a, 1, sizeof a, fa), EG_SECRETBOX_KEY_BYTES);
    assert_int_equal(fread(c, 1, sizeof c, fc), EG_SECRETBOX_KEY_BYTES);
    fclose(fa);
    fclose(fc);
    assert_memory_not_equal(a, c, EG_SECRETBOX_KEY_BYTES);
}

static void test_refuses_readable_key_file(void **state)
{
    struct fx *f = *state;
    unsigned char key[EG_SECRETBOX_KEY_BYTES] = {1, 2, 3};
    struct eg_secretbox *b = NULL;
    char why[512];

    write_file(f->key, key, sizeof key, 0644);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), EG_EPERM);
    assert_null(b);
    assert_non_null(strstr(why, f->key));
    assert_non_null(strstr(why, "0644"));
    assert_non_null(strstr(why, "group or others"));

    /* Group-readable only, and other-writable only, are refused the same way. */
    assert_int_equal(chmod(f->key, 0640), 0);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), EG_EPERM);
    assert_int_equal(chmod(f->key, 0602), 0);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), EG_EPERM);
    /* It was not replaced by a new key either. */
    unsigned char got[EG_SECRETBOX_KEY_BYTES];
    FILE *fp = fopen(f->key, "rb");
    assert_int_equal(fread(got, 1, sizeof got, fp), sizeof got);
    fclose(fp);
    assert_memory_equal(got, key, sizeof key);

    assert_int_equal(chmod(f->key, 0400), 0);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), 0);
    eg_secretbox_free(b);
}

static void test_refuses_wrong_size_and_non_files(void **state)
{
    struct fx *f = *state;
    unsigned char key[EG_SECRETBOX_KEY_BYTES + 1] = {0};
    struct eg_secretbox *b = NULL;
    char why[512], link[160];

    write_file(f->key, key, 31, 0600);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, f->key));
    assert_non_null(strstr(why, "31 bytes"));
    write_file(f->key, key, 33, 0600);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, "not 32"));
    write_file(f->key, key, 0, 0600);
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), EG_EINVAL);
    assert_non_null(strstr(why, "0 bytes"));

    /* A directory, and a symbolic link, are not key files. */
    assert_int_equal(eg_secretbox_new(f->dir, true, &b, why, sizeof why), EG_EPERM);
    write_file(f->key, key, 32, 0600);
    snprintf(link, sizeof link, "%s/link.key", f->dir);
    assert_int_equal(symlink(f->key, link), 0);
    assert_int_equal(eg_secretbox_new(link, true, &b, why, sizeof why), EG_EPERM);
    assert_non_null(strstr(why, "symbolic link"));
    assert_null(b);

    /* No directory to create it in. */
    char missing[200];
    snprintf(missing, sizeof missing, "%s/no/such/dir/secret.key", f->dir);
    assert_int_equal(eg_secretbox_new(missing, true, &b, why, sizeof why), EG_EIO);
    assert_non_null(strstr(why, missing));
}

static void test_round_trip_and_nonce(void **state)
{
    struct fx *f = *state;
    struct eg_secretbox *b = NULL;
    char *s1 = NULL, *s2 = NULL, *p = NULL, why[256];
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), 0);

    const char *secrets[] = {"", "x", "Mock-Passw0rd!", "-----BEGIN PRIVATE KEY-----\nAAAA\n"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        assert_int_equal(eg_secretbox_seal(b, "target.password", secrets[i], &s1), 0);
        assert_true(strncmp(s1, "eg1:", 4) == 0);
        /* nonce (12) + ciphertext (same length as the text) + tag (16) */
        uint8_t *raw = NULL;
        size_t rlen = 0;
        assert_int_equal(eg_base64_decode(s1 + 4, strlen(s1 + 4), 0, &raw, &rlen), 0);
        assert_int_equal(rlen, 12 + strlen(secrets[i]) + 16);
        if (strlen(secrets[i]) >= 8) /* shorter ones may occur in random bytes by chance */
            assert_null(memmem(raw, rlen, secrets[i], strlen(secrets[i])));
        eg_free(raw);
        assert_int_equal(eg_secretbox_open(b, "target.password", s1, &p), 0);
        assert_string_equal(p, secrets[i]);
        eg_secret_free(p);
        eg_free(s1);
    }
    /* A fresh nonce each time: the same secret seals to different texts. */
    assert_int_equal(eg_secretbox_seal(b, "target.password", "same", &s1), 0);
    assert_int_equal(eg_secretbox_seal(b, "target.password", "same", &s2), 0);
    assert_string_not_equal(s1, s2);
    assert_memory_not_equal(s1 + 4, s2 + 4, 16);
    eg_free(s1);
    eg_free(s2);

    /* Limits and arguments. */
    char *big = eg_malloc(EG_MAX_SECRET_BYTES + 2);
    memset(big, 'k', EG_MAX_SECRET_BYTES + 1);
    big[EG_MAX_SECRET_BYTES + 1] = '\0';
    assert_int_equal(eg_secretbox_seal(b, "f", big, &s1), EG_ELIMIT);
    big[EG_MAX_SECRET_BYTES] = '\0';
    assert_int_equal(eg_secretbox_seal(b, "f", big, &s1), 0);
    assert_int_equal(eg_secretbox_open(b, "f", s1, &p), 0);
    assert_string_equal(p, big);
    eg_secret_free(p);
    eg_free(s1);
    eg_free(big);
    assert_int_equal(eg_secretbox_seal(b, "", "x", &s1), EG_EINVAL);
    assert_int_equal(eg_secretbox_seal(NULL, "f", "x", &s1), EG_EINVAL);
    eg_secretbox_free(b);
}

static void test_tamper_wrong_aad_wrong_key(void **state)
{
    struct fx *f = *state;
    struct eg_secretbox *b = NULL, *other = NULL;
    char *s = NULL, *p = NULL, why[256], k2[160];
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), 0);
    assert_int_equal(eg_secretbox_seal(b, "target.password", "hunter22", &s), 0);

    /* Wrong field (AAD): does not authenticate. */
    assert_int_equal(eg_secretbox_open(b, "target.private_key", s, &p), EG_EAUTH);
    assert_null(p);

    /* Every single-bit flip of the decoded blob (nonce, ciphertext, tag) is detected. */
    uint8_t *raw = NULL;
    size_t rlen = 0;
    assert_int_equal(eg_base64_decode(s + 4, strlen(s + 4), 0, &raw, &rlen), 0);
    for (size_t i = 0; i < rlen; i++) {
        char *b64 = NULL, *t = NULL;
        raw[i] ^= 0x01;
        assert_int_equal(eg_base64_encode(raw, rlen, &b64, NULL), 0);
        raw[i] ^= 0x01;
        t = eg_asprintf("eg1:%s", b64);
        assert_int_equal(eg_secretbox_open(b, "target.password", t, &p), EG_EAUTH);
        assert_null(p);
        eg_free(t);
        eg_free(b64);
    }
    /* Truncated (no room for nonce + tag), not base64, wrong prefix. */
    char *b64 = NULL, *t = NULL;
    assert_int_equal(eg_base64_encode(raw, 27, &b64, NULL), 0);
    t = eg_asprintf("eg1:%s", b64);
    assert_int_equal(eg_secretbox_open(b, "target.password", t, &p), EG_EPARSE);
    eg_free(t);
    eg_free(b64);
    eg_free(raw);
    assert_int_equal(eg_secretbox_open(b, "target.password", "eg1:!!!!", &p), EG_EPARSE);
    assert_int_equal(eg_secretbox_open(b, "target.password", "hunter22", &p), EG_EPARSE);
    assert_int_equal(eg_secretbox_open(b, "target.password", s + 4, &p), EG_EPARSE);

    /* Another key: does not authenticate. */
    snprintf(k2, sizeof k2, "%s/other.key", f->dir);
    assert_int_equal(eg_secretbox_new(k2, true, &other, why, sizeof why), 0);
    assert_int_equal(eg_secretbox_open(other, "target.password", s, &p), EG_EAUTH);
    assert_null(p);
    assert_int_equal(eg_secretbox_open(b, "target.password", s, &p), 0);
    assert_string_equal(p, "hunter22");
    eg_secret_free(p);
    eg_secret_free(NULL);
    eg_free(s);
    eg_secretbox_free(other);
    eg_secretbox_free(b);
}

static void test_allocation_failure(void **state)
{
    struct fx *f = *state;
    struct eg_secretbox *b = NULL;
    char *s = NULL, *p = NULL, why[256];
    assert_int_equal(eg_secretbox_new(f->key, true, &b, why, sizeof why), 0);
    assert_int_equal(eg_secretbox_seal(b, "f", "value", &s), 0);
    for (long n = 0; n < 8; n++) {
        char *s2 = NULL;
        eg_alloc_fail_after(n);
        int rc = eg_secretbox_seal(b, "f", "value", &s2);
        eg_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == EG_ENOMEM);
        eg_free(s2);
        eg_alloc_fail_after(n);
        rc = eg_secretbox_open(b, "f", s, &p);
        eg_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == EG_ENOMEM);
        if (rc == 0)
            assert_string_equal(p, "value");
        eg_secret_free(p);
        p = NULL;
    }
    eg_free(s);
    eg_secretbox_free(b);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_created_0600_and_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_keys_differ, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_readable_key_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_wrong_size_and_non_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_and_nonce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_wrong_aad_wrong_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
