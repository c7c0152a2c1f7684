/* test_rest_json.c - Exchange Online REST payloads (exchange/rest_json): the InvokeCommand body
 * of a command (switches, $null, arrays, @{Add;Remove} as GenericHashTable), result pages (the
 * recorded 200 answer: annotations, DateTime, string arrays, numbers, null), the parse limits
 * (depth, size, shapes), error classification (not found for mailbox and device, permission,
 * binding errors, 429 with and without Retry-After, 5xx with Retry-After, timeouts, non-JSON
 * bodies, X-ExceptionType, Entra errors, invalid UTF-8), Retry-After forms, next-link origin and
 * URL checks, and eg_classify_exception / eg_classify_is_load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/rest_json.h"

static char *fixture(const char *name, size_t *len)
{
    char path[PATH_MAX];
    char *data = NULL;
    const char *src = getenv("EG_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/fixtures/rest/%s", src ? src : ".", name);
    assert_int_equal(eg_read_file(path, 1 << 20, &data, len), 0);
    return data;
}

/* ---- request bodies ------------------------------------------------------------------------- */

static void test_command_body(void **state)
{
    struct eg_ps_command *c = NULL;
    const char *add[] = {"ApplNEW1", "ApplNEW2"}, *rem[] = {"ApplOLD1"};
    const char *notify[] = {"a@contoso.example"};
    assert_int_equal(eg_ps_command_new("Set-CASMailbox", &c), 0);
    assert_int_equal(eg_ps_command_add_param(c, "Identity", eg_ps_new_string("alice@contoso")), 0);
    assert_int_equal(eg_ps_command_add_param(c, "ActiveSyncAllowedDeviceIDs",
                                             eg_ps_new_add_remove(add, 2, rem, 1)),
                     0);
    assert_int_equal(eg_ps_command_add_param(c, "ActiveSyncEnabled", eg_ps_new_bool(false)), 0);
    assert_int_equal(eg_ps_command_add_param(c, "ActiveSyncMailboxPolicy", eg_ps_new_nil()), 0);
    assert_int_equal(eg_ps_command_add_switch(c, "AccountOnly"), 0);
    assert_int_equal(
        eg_ps_command_add_param(c, "NotificationEmailAddresses", eg_ps_new_string_array(notify, 1)),
        0);
    assert_int_equal(eg_ps_command_add_param(c, "ResultSize", eg_ps_new_i32(1000)), 0);
    char *body = NULL;
    size_t len = 0;
    assert_int_equal(eg_rest_command_body(c, &body, &len), 0);
    assert_int_equal(len, strlen(body));
    assert_string_equal(
        body, "{\"CmdletInput\":{\"CmdletName\":\"Set-CASMailbox\",\"Parameters\":{"
              "\"Identity\":\"alice@contoso\",\"ActiveSyncAllowedDeviceIDs\":{\"@odata.type\":"
              "\"#Exchange.GenericHashTable\",\"Add\":[\"ApplNEW1\",\"ApplNEW2\"],\"Remove\":["
              "\"ApplOLD1\"]},\"ActiveSyncEnabled\":false,\"ActiveSyncMailboxPolicy\":null,"
              "\"AccountOnly\":true,\"NotificationEmailAddresses\":[\"a@contoso.example\"],"
              "\"ResultSize\":1000}}}");
    eg_free(body);
    /* a positional argument has no name to send */
    assert_int_equal(eg_ps_command_add_positional(c, eg_ps_new_string("x")), 0);
    assert_int_equal(eg_rest_command_body(c, &body, &len), EG_EINVAL);
    eg_ps_command_free(c);
    /* a property bag cannot be a parameter; an enum goes by name */
    assert_int_equal(eg_ps_command_new("Get-Thing", &c), 0);
    assert_int_equal(
        eg_ps_command_add_param(c, "Level", eg_ps_new_enum("X.Level", "Quarantine", 2)), 0);
    assert_int_equal(eg_rest_command_body(c, &body, &len), 0);
    assert_non_null(strstr(body, "\"Level\":\"Quarantine\""));
    eg_free(body);
    assert_int_equal(eg_ps_command_add_param(c, "Bag", eg_ps_new_obj()), 0);
    assert_int_equal(eg_rest_command_body(c, &body, &len), EG_EINVAL);
    eg_ps_command_free(c);
    assert_int_equal(eg_rest_command_body(NULL, &body, &len), EG_EINVAL);
}

/* ---- pages ---------------------------------------------------------------------------------- */

static void test_page_recorded(void **state)
{
    size_t len = 0;
    char *body = fixture("invokecommand_200.json", &len);
    struct eg_rest_page p;
    assert_int_equal(eg_rest_parse_page(body, len, &p), 0);
    assert_null(p.next_link);
    assert_int_equal(json_array_size(p.values), 1);
    struct eg_ps_value *v = NULL;
    assert_int_equal(eg_rest_object_to_value(json_array_get(p.values, 0), &v), 0);
    const char *s = NULL;
    int64_t ms = 0, i = 0;
    assert_int_equal(eg_ps_get_string(eg_ps_obj_prop(v, "UserPrincipalName"), &s, NULL), 0);
    assert_string_equal(s, "alice@contoso.test");
    /* "WhenMailboxCreated@data.type":"System.DateTime" */
    assert_int_equal(eg_ps_get_datetime(eg_ps_obj_prop(v, "WhenMailboxCreated"), &ms), 0);
    assert_int_equal(ms, INT64_C(1663747667000)); /* 2022-09-21T08:07:47Z */
    char **items = NULL;
    size_t n = 0;
    assert_int_equal(eg_ps_get_string_array(eg_ps_obj_prop(v, "ProtocolSettings"), &items, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(items[0], "ECP\xc2\xa7"
                                  "1");
    eg_ps_string_array_free(items, n);
    assert_int_equal(eg_ps_get_int64(eg_ps_obj_prop(v, "PitrCopyIntervalInSeconds"), &i), 0);
    assert_int_equal(i, 0);
    assert_int_equal(eg_ps_obj_prop(v, "MailboxProvisioningConstraint")->kind, EG_PS_NIL);
    /* annotations are not properties */
    assert_null(eg_ps_obj_prop(v, "DatabaseGuid@data.type"));
    assert_int_equal(eg_ps_get_string(eg_ps_obj_prop(v, "DatabaseGuid"), &s, NULL), 0);
    eg_ps_value_free(v);
    eg_rest_page_clear(&p);
    eg_free(body);
}

static void test_page_shapes_and_limits(void **state)
{
    struct eg_rest_page p;
    const char *next =
        "{\"value\":[{\"a\":1},{\"b\":[1,\"x\"]}],\"@odata.nextLink\":\"https://h/x\"}";
    assert_int_equal(eg_rest_parse_page(next, strlen(next), &p), 0);
    assert_string_equal(p.next_link, "https://h/x");
    assert_int_equal(json_array_size(p.values), 2);
    struct eg_ps_value *v = NULL;
    assert_int_equal(eg_rest_object_to_value(json_array_get(p.values, 1), &v), 0);
    assert_int_equal(eg_ps_list_len(eg_ps_obj_prop(v, "b")), 2); /* a mixed list */
    eg_ps_value_free(v);
    eg_rest_page_clear(&p);
    /* an empty body is an empty page (a write cmdlet may answer 204) */
    assert_int_equal(eg_rest_parse_page("  ", 2, &p), 0);
    assert_int_equal(json_array_size(p.values), 0);
    eg_rest_page_clear(&p);

    static const char *const proto[] = {"[]", "{\"value\":{}}", "{\"value\":[1]}",
                                        "{\"value\":[],\"@odata.nextLink\":5}", "{}"};
    for (size_t i = 0; i < sizeof proto / sizeof proto[0]; i++)
        assert_int_equal(eg_rest_parse_page(proto[i], strlen(proto[i]), &p), EG_EPROTO);
    assert_int_equal(eg_rest_parse_page("{\"value\":[", 10, &p), EG_EPARSE);
    assert_int_equal(eg_rest_parse_page("{\"a\":1,\"a\":2}", 13, &p), EG_EPARSE); /* duplicate */
    /* nesting: the limit passes, one more level is refused */
    char deep[256];
    int d = EG_REST_MAX_JSON_DEPTH;
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "{\"value\":[");
    for (int k = 2; k < d; k++)
        deep[n++] = '[';
    for (int k = 2; k < d; k++)
        deep[n++] = ']';
    n += (size_t)snprintf(deep + n, sizeof deep - n, "]}");
    json_t *j = NULL;
    assert_int_equal(eg_rest_json_load(deep, n, &j), 0);
    json_decref(j);
    char deeper[300];
    int m = snprintf(deeper, sizeof deeper, "[%.*s]", (int)n, deep);
    assert_int_equal(eg_rest_json_load(deeper, (size_t)m, &j), EG_ELIMIT);
    /* brackets inside strings do not count */
    char str[200];
    m = snprintf(str, sizeof str, "{\"value\":[],\"x\":\"%s\"}",
                 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[[[[");
    assert_int_equal(eg_rest_parse_page(str, (size_t)m, &p), 0);
    eg_rest_page_clear(&p);
    /* size */
    size_t big = EG_REST_MAX_RESPONSE_BYTES + 1;
    char *huge = eg_malloc(big);
    assert_non_null(huge);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    assert_int_equal(eg_rest_parse_page(huge, big, &p), EG_ELIMIT);
    eg_free(huge);
    /* object conversion depth */
    assert_int_equal(eg_rest_object_to_value(json_array_get(NULL, 0), &v), EG_EINVAL);
}

/* ---- errors --------------------------------------------------------------------------------- */

static struct eg_bridge_error classify(long status, const char *body, const char *retry_after,
                                       const char *xtype, enum eg_classify_target t)
{
    struct eg_bridge_error e;
    struct eg_rest_answer a = {.status = status,
                               .content_type = "application/json",
                               .exception_type = xtype,
                               .retry_after = retry_after,
                               .body = body,
                               .body_len = body ? strlen(body) : 0};
    eg_rest_classify(&a, t, &e);
    return e;
}

static void test_classify_errors(void **state)
{
    size_t len = 0;
    char *nf = fixture("invokecommand_404.json", &len);
    struct eg_bridge_error e = classify(404, nf, NULL, NULL, EG_TARGET_MAILBOX);
    assert_string_equal(e.code, "mailbox_not_found");
    assert_false(e.transient);
    assert_string_equal(e.exchange_type,
                        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException");
    assert_non_null(strstr(e.exchange_message, "nobody@contoso.test"));
    e = classify(404, nf, NULL, NULL, EG_TARGET_DEVICE);
    assert_string_equal(e.code, "device_not_found");
    eg_free(nf);

    e = classify(404,
                 "{\"error\":{\"code\":\"NotFound\",\"message\":\"The mobile device cannot be "
                 "found.\",\"details\":[{\"message\":\"Ex0FBD0C|Microsoft.Exchange.Configuration."
                 "Tasks.ManagementObjectNotFoundException|The mobile device cannot be found.\"}]}}",
                 NULL, NULL, EG_TARGET_MAILBOX);
    assert_string_equal(e.code, "device_not_found");

    /* permission: the write-scope text, and a bare 403 */
    e = classify(403,
                 "{\"error\":{\"code\":\"Forbidden\",\"message\":\"x\",\"details\":[{\"message\":"
                 "\"Ex1|Microsoft.Exchange.Data.Directory.ADScopeException|The operation on "
                 "mailbox \\\"ceo\\\" failed because it's out of the current user's write "
                 "scope.\"}]}}",
                 NULL, NULL, EG_TARGET_MAILBOX);
    assert_string_equal(e.code, "permission_denied");
    assert_false(e.transient);
    e = classify(403, "", NULL, NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "permission_denied");

    /* a binding error, as the mock words it ("|Type|Message") */
    e = classify(400,
                 "{\"error\":{\"code\":\"BadRequest\",\"message\":\"m\",\"details\":[{\"message\":"
                 "\"|System.Management.Automation.ParameterBindingException|A parameter cannot be "
                 "found that matches parameter name 'AccountOnly'.\"}]}}",
                 NULL, NULL, EG_TARGET_DEVICE);
    assert_string_equal(e.code, "unsupported");
    assert_string_equal(e.exchange_type, "System.Management.Automation.ParameterBindingException");
    /* 400 whose words say nothing known: invalid_argument */
    e = classify(400, "{\"error\":{\"code\":\"BadRequest\",\"message\":\"Something odd.\"}}", NULL,
                 NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "invalid_argument");
    assert_false(e.transient);

    /* throttling: 429 with Retry-After; the text without it; the text under another status */
    e = classify(429, "{\"error\":{\"code\":\"TooManyRequests\",\"message\":\"slow down\"}}", "7",
                 NULL, EG_TARGET_MAILBOX);
    assert_string_equal(e.code, "throttled");
    assert_true(e.transient);
    assert_int_equal(e.retry_after_ms, 7000);
    e = classify(429,
                 "You have reached the maximum number of concurrent requests per tenant. Please "
                 "wait and try again",
                 NULL, NULL, EG_TARGET_MAILBOX);
    assert_string_equal(e.code, "throttled");
    assert_int_equal(e.retry_after_ms, 0);
    assert_non_null(strstr(e.exchange_message, "maximum number of concurrent requests"));
    e = classify(500,
                 "{\"error\":{\"code\":\"InternalServerError\",\"message\":\"The user load quota "
                 "of 20 requests per 30 seconds has been exceeded. The next request from this user "
                 "will not be approved for at least 1500 milliseconds.\"}}",
                 NULL, NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "throttled");
    assert_int_equal(e.retry_after_ms, 1500);

    /* 5xx */
    e = classify(503, "<html><body>Service Unavailable</body></html>", "3", NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "exchange_unreachable");
    assert_true(e.transient);
    assert_int_equal(e.retry_after_ms, 3000);
    assert_non_null(strstr(e.exchange_message, "Service Unavailable"));
    e = classify(504, NULL, NULL, NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "timeout");
    assert_true(e.transient);
    e = classify(408, "", "2", NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "timeout");
    assert_int_equal(e.retry_after_ms, 2000);
    e = classify(500, "{\"error\":{\"code\":\"InternalServerError\",\"message\":\"Boom.\"}}", NULL,
                 NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "internal");
    assert_true(e.transient);
    e = classify(502, "Bad gateway", NULL, NULL, EG_TARGET_ORG);
    assert_string_equal(e.code, "exchange_unreachable");

    /* X-ExceptionType with an error that has no details */
    e = classify(500, "{\"error\":{\"code\":\"x\",\"message\":\"The object wasn't found.\"}}", NULL,
                 "ManagementObjectNotFoundException", EG_TARGET_MAILBOX);
    assert_string_equal(e.code, "mailbox_not_found");
    assert_string_equal(e.exchange_type, "ManagementObjectNotFoundException");

    /* a non-JSON body with control characters and invalid UTF-8: printable, valid UTF-8 */
    e = classify(500, "bad\x01\xff\xfetext \xc2\xa7 ok\n\n", NULL, NULL, EG_TARGET_ORG);
    assert_string_equal(e.exchange_message, "bad ??text \xc2\xa7 ok");
    json_t *js = json_string(e.message);
    assert_non_null(js);
    json_decref(js);
    /* a long body is cut, never inside a character */
    char longbody[3000];
    for (size_t i = 0; i + 1 < sizeof longbody; i += 2)
        memcpy(longbody + i, "\xc2\xa7", 2);
    longbody[sizeof longbody - 1] = '\0';
    e = classify(500, longbody, NULL, NULL, EG_TARGET_ORG);
    assert_true(strlen(e.exchange_message) <= EG_REST_MAX_ERROR_TEXT);
    assert_int_equal(strlen(e.exchange_message) % 2, 0);
    js = json_string(e.exchange_message);
    assert_non_null(js);
    json_decref(js);
}

static void test_retry_after_and_links(void **state)
{
    int64_t now = 1700000000000;
    assert_int_equal(eg_rest_retry_after_ms("120", now), 120000);
    assert_int_equal(eg_rest_retry_after_ms(" 5 ", now), 5000);
    assert_int_equal(eg_rest_retry_after_ms("99999999999999", now), EG_REST_MAX_RETRY_AFTER_MS);
    assert_int_equal(eg_rest_retry_after_ms("soon", now), -1);
    assert_int_equal(eg_rest_retry_after_ms("-4", now), -1);
    assert_int_equal(eg_rest_retry_after_ms(NULL, now), -1);
    /* 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT */
    assert_int_equal(eg_rest_retry_after_ms("Tue, 14 Nov 2023 22:13:50 GMT", now), 30000);
    assert_int_equal(eg_rest_retry_after_ms("Tue, 14 Nov 2023 22:00:00 GMT", now), 0);

    const char *base = "https://outlook.office365.com/adminapi/beta/t/InvokeCommand";
    assert_true(eg_rest_link_ok(base, "https://outlook.office365.com/adminapi/beta/t/"
                                      "InvokeCommand?$skiptoken=1"));
    assert_true(eg_rest_link_ok(base, "https://OUTLOOK.office365.com:443/x"));
    assert_false(eg_rest_link_ok(base, "https://evil.example/adminapi"));
    assert_false(eg_rest_link_ok(base, "http://outlook.office365.com/adminapi"));
    assert_false(eg_rest_link_ok(base, "https://outlook.office365.com:8443/adminapi"));
    assert_false(eg_rest_link_ok(base, "https://u:p@outlook.office365.com/adminapi"));
    assert_false(eg_rest_link_ok(base, "/relative"));
    assert_false(eg_rest_link_ok(base, "https://outlook.office365.com/x\r\nHost: y"));

    assert_true(eg_rest_url_allowed("https://login.microsoftonline.com/t/oauth2", false));
    assert_false(eg_rest_url_allowed("http://127.0.0.1:1/x", false));
    assert_true(eg_rest_url_allowed("http://127.0.0.1:1/x", true));
    assert_true(eg_rest_url_allowed("http://[::1]:1/x", true));
    assert_false(eg_rest_url_allowed("http://10.0.0.1/x", true));
    assert_false(eg_rest_url_allowed("ftp://127.0.0.1/x", true));
}

static void test_classify_shared(void **state)
{
    struct eg_bridge_error e;
    eg_classify_exception(
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        "The operation couldn't be performed because object 'x' couldn't be "
        "found on 'dc'.",
        EG_TARGET_MAILBOX, &e);
    assert_string_equal(e.code, "mailbox_not_found");
    eg_classify_exception(NULL, NULL, EG_TARGET_ORG, &e);
    assert_string_equal(e.code, "internal");
    eg_classify_exception("System.InvalidOperationException",
                          "The value \"X\" is already present in the collection.",
                          EG_TARGET_MAILBOX, &e);
    assert_string_equal(e.code, "throttled");
    assert_false(eg_classify_is_load(&e)); /* a conflict, not load */
    eg_classify_exception("", "Micro delay applied. Actual delayed: 2000 msecs", EG_TARGET_ORG, &e);
    assert_true(eg_classify_is_load(&e));
    assert_int_equal(e.retry_after_ms, 2000);
    eg_bridge_error_set(&e, EG_BERR_TIMEOUT, true, "x");
    assert_false(eg_classify_is_load(&e));
    assert_false(eg_classify_is_load(NULL));
}

int main(int argc, char **argv)
{
    eg_alloc_init();
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_body),           cmocka_unit_test(test_page_recorded),
        cmocka_unit_test(test_page_shapes_and_limits), cmocka_unit_test(test_classify_errors),
        cmocka_unit_test(test_retry_after_and_links),  cmocka_unit_test(test_classify_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
