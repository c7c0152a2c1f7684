/* test_common.c - errors, allocation wrappers and failure injection, util helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/error.h"
#include "common/util.h"

static void test_strerror(void **state)
{
    assert_string_equal(eg_strerror(0), "success");
    assert_string_equal(eg_strerror(EG_ENOMEM), "out of memory");
    assert_string_equal(eg_strerror(-999), "unknown error");
    assert_string_equal(eg_errname(EG_ECONFLICT), "econflict");
    for (int c = 0; c > -EG__ECOUNT; c--)
        assert_non_null(eg_strerror(c));
}

static void test_alloc_failure_injection(void **state)
{
    eg_alloc_fail_after(2);
    void *a = eg_malloc(8), *b = eg_malloc(8), *c = eg_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_null(eg_strdup("x"));
    assert_int_equal(eg_alloc_failures(), 2);
    eg_alloc_fail_after(-1);
    c = eg_malloc(8);
    assert_non_null(c);
    eg_free(a);
    eg_free(b);
    eg_free(c);
}

static void test_asprintf(void **state)
{
    char *s = eg_asprintf("%s-%d", "a", 42);
    assert_string_equal(s, "a-42");
    eg_free(s);
    s = eg_strndup("abcdef", 3);
    assert_string_equal(s, "abc");
    eg_free(s);
}

static void test_parse_int(void **state)
{
    int64_t v = 0;
    assert_int_equal(eg_parse_int64("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(eg_parse_int64("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(eg_parse_int64("101", 0, 100, &v), EG_ELIMIT);
    assert_int_equal(eg_parse_int64("12x", 0, 100, &v), EG_EINVAL);
    assert_int_equal(eg_parse_int64("", 0, 100, &v), EG_EINVAL);
    assert_int_equal(eg_parse_int64(" 1", 0, 100, &v), EG_EINVAL);
    assert_int_equal(eg_parse_int64("99999999999999999999", 0, INT64_MAX, &v), EG_ELIMIT);
}

static void test_hostport(void **state)
{
    char *a = NULL;
    uint16_t p = 1;
    assert_int_equal(eg_parse_hostport("127.0.0.1:0", &a, &p), 0);
    assert_string_equal(a, "127.0.0.1");
    assert_int_equal(p, 0);
    eg_free(a);
    assert_int_equal(eg_parse_hostport("[::1]:9090", &a, &p), 0);
    assert_string_equal(a, "::1");
    assert_int_equal(p, 9090);
    eg_free(a);
    assert_int_equal(eg_parse_hostport("::1:9090", &a, &p), EG_EINVAL);
    assert_int_equal(eg_parse_hostport("host:65536", &a, &p), EG_EINVAL);
    assert_int_equal(eg_parse_hostport(":80", &a, &p), EG_EINVAL);
    assert_int_equal(eg_parse_hostport("host", &a, &p), EG_EINVAL);
    assert_true(eg_is_loopback("127.0.0.1"));
    assert_true(eg_is_loopback("127.5.0.1"));
    assert_true(eg_is_loopback("::1"));
    assert_false(eg_is_loopback("0.0.0.0"));
    assert_false(eg_is_loopback("10.0.0.1"));
}

static void test_ct_equal(void **state)
{
    assert_true(eg_ct_equal("secret", 6, "secret", 6));
    assert_false(eg_ct_equal("secret", 6, "secreT", 6));
    assert_false(eg_ct_equal("secret", 6, "secret2", 7));
    assert_false(eg_ct_equal("secret", 6, "", 0));
    assert_false(eg_ct_equal("", 0, "x", 1));
    assert_true(eg_ct_equal("", 0, "", 0));
}

static void test_read_file_limits(void **state)
{
    char path[] = "/tmp/eg_test_readXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    char *d = NULL;
    size_t n = 0;
    assert_int_equal(eg_read_file(path, 5, &d, &n), 0);
    assert_int_equal(n, 5);
    assert_string_equal(d, "hello");
    eg_free(d);
    d = NULL;
    assert_int_equal(eg_read_file(path, 4, &d, &n), EG_ELIMIT);
    assert_null(d);
    unlink(path);
    assert_int_equal(eg_read_file(path, 4, &d, &n), EG_EIO);
}

static void test_read_secret_line(void **state)
{
    char path[] = "/tmp/eg-test-secret.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "Pa55 word\r\nsecond line\n", 24), 24);
    close(fd);
    char *pw = NULL;
    assert_int_equal(eg_read_secret_line(path, 4096, &pw), 0);
    assert_string_equal(pw, "Pa55 word");
    /* everything after the first line is wiped, not just cut off */
    for (size_t i = strlen(pw); i < 24; i++)
        assert_int_equal(pw[i], 0);
    eg_memzero(pw, 24);
    eg_free(pw);
    assert_int_equal(eg_read_secret_line(path, 8, &pw), EG_ELIMIT);
    unlink(path);
    assert_int_equal(eg_read_secret_line(path, 4096, &pw), EG_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),         cmocka_unit_test(test_alloc_failure_injection),
        cmocka_unit_test(test_asprintf),         cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_hostport),         cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_read_file_limits), cmocka_unit_test(test_read_secret_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
