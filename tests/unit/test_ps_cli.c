/* test_ps_cli.c - easgate-ps parameter specs to typed commands (exchange/ps_cli). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "exchange/clixml_json.h"
#include "exchange/ps_cli.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct eg_ps_command *ok(char *const *w, size_t n)
{
    struct eg_ps_command *c = NULL;
    char why[256] = "";
    int rc = eg_ps_cli_parse(w, n, &c, why, sizeof why);
    if (rc != 0)
        fail_msg("parse failed: %s", why);
    return c;
}

static void expect_bad(char *const *w, size_t n, const char *needle)
{
    struct eg_ps_command *c = NULL;
    char why[256] = "";
    assert_int_equal(eg_ps_cli_parse(w, n, &c, why, sizeof why), EG_EINVAL);
    assert_null(c);
    if (!strstr(why, needle))
        fail_msg("error '%s' does not mention '%s'", why, needle);
}

static char *json_of(const struct eg_ps_value *v)
{
    char *t = NULL;
    assert_int_equal(eg_clixml_to_json_text(v, &t), 0);
    return t;
}

static void test_every_type(void **state)
{
    char *w[] = {"Set-CASMailbox",
                 "-p",
                 "Identity=alice@corp.example",
                 "-p",
                 "ResultSize:int=5",
                 "-p",
                 "Big:int=5000000000",
                 "-p",
                 "ActiveSyncEnabled:bool=false",
                 "-p",
                 "Confirm:bool=$false",
                 "-p",
                 "WhatIf:switch",
                 "-p",
                 "ActiveSyncMailboxPolicy:null",
                 "-p",
                 "Names:list=a,b",
                 "-p",
                 "ActiveSyncAllowedDeviceIDs:add=D1,D2",
                 "-p",
                 "ActiveSyncAllowedDeviceIDs:remove=D3",
                 "-p",
                 "ActiveSyncBlockedDeviceIDs:remove=X",
                 "-p",
                 "Weird=a=b;$(x)"};
    struct eg_ps_command *c = ok(w, N(w));
    assert_string_equal(c->name, "Set-CASMailbox");
    assert_int_equal(c->n_params, 11);
    const struct eg_ps_param *p = eg_ps_command_find_param(c, "identity");
    assert_non_null(p);
    assert_int_equal(p->value->kind, EG_PS_S);
    assert_int_equal(eg_ps_command_find_param(c, "ResultSize")->value->kind, EG_PS_I32);
    assert_int_equal(eg_ps_command_find_param(c, "Big")->value->kind, EG_PS_I64);
    assert_int_equal(eg_ps_command_find_param(c, "Big")->value->u.i, 5000000000LL);
    assert_false(eg_ps_command_find_param(c, "ActiveSyncEnabled")->value->u.b);
    assert_false(eg_ps_command_find_param(c, "Confirm")->value->u.b);
    assert_int_equal(eg_ps_command_find_param(c, "WhatIf")->kind, EG_PS_PARAM_SWITCH);
    assert_int_equal(eg_ps_command_find_param(c, "ActiveSyncMailboxPolicy")->value->kind,
                     EG_PS_NIL);
    char *t = json_of(eg_ps_command_find_param(c, "Names")->value);
    assert_string_equal(t, "[\"a\",\"b\"]");
    eg_free(t);
    t = json_of(eg_ps_command_find_param(c, "ActiveSyncAllowedDeviceIDs")->value);
    assert_string_equal(t, "{\"Add\":[\"D1\",\"D2\"],\"Remove\":[\"D3\"]}");
    eg_free(t);
    t = json_of(eg_ps_command_find_param(c, "ActiveSyncBlockedDeviceIDs")->value);
    assert_string_equal(t, "{\"Remove\":[\"X\"]}");
    eg_free(t);
    /* A value is data: everything after the first '=' is the string, verbatim. */
    const char *s = NULL;
    size_t len = 0;
    assert_int_equal(eg_ps_get_string(eg_ps_command_find_param(c, "Weird")->value, &s, &len), 0);
    assert_string_equal(s, "a=b;$(x)");
    eg_ps_command_free(c);
}

static void test_empty_list(void **state)
{
    char *w[] = {"Set-CASMailbox", "-p", "ActiveSyncAllowedDeviceIDs:list="};
    struct eg_ps_command *c = ok(w, N(w));
    char *t = json_of(c->params[0].value);
    assert_string_equal(t, "[]");
    eg_free(t);
    eg_ps_command_free(c);
}

static void test_refusals(void **state)
{
    char *a[] = {"Get-Mailbox; Remove-Mailbox"};
    expect_bad(a, N(a), "not a cmdlet name");
    char *b[] = {"Get-CASMailbox", "Identity=x"};
    expect_bad(b, N(b), "expected -p");
    char *c[] = {"Get-CASMailbox", "-p"};
    expect_bad(c, N(c), "needs a SPEC");
    char *d[] = {"Get-CASMailbox", "-p", "-Identity=x"};
    expect_bad(d, N(d), "not a parameter name");
    char *e[] = {"Get-CASMailbox", "-p", "ResultSize:int=lots"};
    expect_bad(e, N(e), "not an integer");
    char *f[] = {"Get-CASMailbox", "-p", "X:bool=yes"};
    expect_bad(f, N(f), "not true or false");
    char *g[] = {"Get-CASMailbox", "-p", "X:float=1"};
    expect_bad(g, N(g), "unknown type");
    char *h[] = {"Get-CASMailbox", "-p", "X:switch=1"};
    expect_bad(h, N(h), "takes no value");
    char *i[] = {"Get-CASMailbox", "-p", "X:int"};
    expect_bad(i, N(i), "needs =VALUE");
    char *j[] = {"Get-CASMailbox", "-p", "X=1", "-p", "x=2"};
    expect_bad(j, N(j), "twice");
    char *k[] = {"Get-CASMailbox", "-p", "X:list=a,,b"};
    expect_bad(k, N(k), "empty list item");
    char *l[] = {"Get-CASMailbox", "-p", "X:add=a", "-p", "X:add=b"};
    expect_bad(l, N(l), "given twice");
    char *m[] = {"Get-CASMailbox", "-p", "X=1", "-p", "X:add=b"};
    expect_bad(m, N(m), "both as a value and as add/remove");
}

static void test_allocation_failures(void **state)
{
    char *w[] = {"Set-CASMailbox", "-p", "Identity=a@b.example", "-p", "L:list=a,b", "-p",
                 "H:add=x,y",      "-p", "H:remove=z",           "-p", "S:switch"};
    bool done = false;
    for (long n = 0; n < 500 && !done; n++) {
        struct eg_ps_command *c = NULL;
        char why[128];
        eg_alloc_fail_after(n);
        int rc = eg_ps_cli_parse(w, N(w), &c, why, sizeof why);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            assert_int_equal(c->n_params, 4);
            done = true;
        } else {
            assert_int_equal(rc, EG_ENOMEM);
        }
        eg_ps_command_free(c);
    }
    assert_true(done);
    assert_int_equal(eg_ps_live_values(), 0);
}

/* --auth and its credentials: the transport picked, and every refused combination. */
static void check_auth(const struct eg_ps_cli_auth *a, int want_rc, enum eg_http_client_auth want,
                       enum eg_gss_scheme want_scheme, const char *needle)
{
    enum eg_http_client_auth got = EG_HTTP_CLIENT_AUTH_NONE;
    enum eg_gss_scheme scheme = 0;
    const char *acct = NULL;
    char why[256] = "";
    int rc = eg_ps_cli_auth_check(a, &got, &scheme, &acct, why, sizeof why);
    assert_int_equal(rc, want_rc);
    if (rc == 0) {
        assert_int_equal(got, want);
        if (want == EG_HTTP_CLIENT_AUTH_GSS)
            assert_int_equal(scheme, want_scheme);
        assert_ptr_equal(acct, a->principal ? a->principal : a->user);
    } else if (!strstr(why, needle)) {
        fail_msg("want '%s' in '%s'", needle, why);
    }
}

static void test_auth_options(void **state)
{
    const char *p = "svc@CORP.EXAMPLE";
    /* good combinations */
    check_auth(&(struct eg_ps_cli_auth){.user = "u", .password_file = true}, 0,
               EG_HTTP_CLIENT_AUTH_BASIC, 0, NULL);
    check_auth(&(struct eg_ps_cli_auth){.auth = "Kerberos", .principal = p, .password_file = true},
               0, EG_HTTP_CLIENT_AUTH_GSS, EG_GSS_KERBEROS, NULL);
    check_auth(&(struct eg_ps_cli_auth){.auth = "kerberos", .user = p, .keytab = "/k"}, 0,
               EG_HTTP_CLIENT_AUTH_GSS, EG_GSS_KERBEROS, NULL);
    check_auth(
        &(struct eg_ps_cli_auth){.auth = "ntlm", .principal = "CORP\\svc", .password_file = true},
        0, EG_HTTP_CLIENT_AUTH_GSS, EG_GSS_NTLM, NULL);
    check_auth(&(struct eg_ps_cli_auth){.auth = "negotiate", .principal = p, .keytab = "/k"}, 0,
               EG_HTTP_CLIENT_AUTH_GSS, EG_GSS_NEGOTIATE, NULL);
    check_auth(&(struct eg_ps_cli_auth){.auth = "negotiate"}, 0, EG_HTTP_CLIENT_AUTH_NEGOTIATE, 0,
               NULL);
    check_auth(
        &(struct eg_ps_cli_auth){
            .auth = "kerberos", .user = p, .principal = p, .password_file = true},
        0, EG_HTTP_CLIENT_AUTH_GSS, EG_GSS_KERBEROS, NULL);
    /* refusals */
    check_auth(&(struct eg_ps_cli_auth){.user = "u"}, EG_EINVAL, 0, 0, "--password-file");
    check_auth(&(struct eg_ps_cli_auth){.auth = "digest"}, EG_EINVAL, 0, 0,
               "basic, negotiate, kerberos or ntlm");
    check_auth(&(struct eg_ps_cli_auth){.auth = "kerberos", .password_file = true}, EG_EINVAL, 0, 0,
               "--principal");
    check_auth(&(struct eg_ps_cli_auth){.auth = "kerberos", .principal = p}, EG_EINVAL, 0, 0,
               "--password-file or --keytab");
    check_auth(
        &(struct eg_ps_cli_auth){
            .auth = "kerberos", .principal = p, .keytab = "/k", .password_file = true},
        EG_EINVAL, 0, 0, "exclude each other");
    check_auth(
        &(struct eg_ps_cli_auth){
            .auth = "ntlm", .principal = p, .keytab = "/k", .password_file = true},
        EG_EINVAL, 0, 0, "--keytab is for Kerberos");
    check_auth(&(struct eg_ps_cli_auth){.auth = "ntlm", .principal = p}, EG_EINVAL, 0, 0,
               "--password-file");
    check_auth(&(struct eg_ps_cli_auth){.user = "u", .password_file = true, .keytab = "/k"},
               EG_EINVAL, 0, 0, "--keytab");
    check_auth(
        &(struct eg_ps_cli_auth){
            .auth = "kerberos", .user = "a@X", .principal = "b@X", .password_file = true},
        EG_EINVAL, 0, 0, "different accounts");
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),   cmocka_unit_test(test_empty_list),
        cmocka_unit_test(test_refusals),     cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_auth_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
