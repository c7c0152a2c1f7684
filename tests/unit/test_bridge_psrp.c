/* test_bridge_psrp.c - the on-prem backend (exchange/bridge_psrp over the cmdlet catalogue) end
 * to end against easgate-mock-exchange in the 2010, 2013 and 2016 profiles: version detection,
 * every bridge operation checked against the mock's final state and recorded calls (per-version
 * cmdlet names, -Confirm:$false, one Set-CASMailbox with @{Add;Remove}), -AccountOnly refused
 * with `unsupported` on 2010/2013 before anything is sent, a configured version used without
 * detection, status, probe; option and timeout validation; an unreachable server and one that
 * never answers (io timeout) classified as exchange_unreachable and timeout. Skipped when the
 * mock was not built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "exchange/bridge_psrp.h"
#include "mock_exchange_helper.h"

#define MBX  "user0001@contoso.example"
#define MBX2 "user0002@contoso.example"

static char tmp[PATH_MAX];
static char *users_file;

static int group_setup(void **state)
{
    snprintf(tmp, sizeof tmp, "%.900s/eg-test-psrp.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp))
        return -1;
    users_file = write_temp(tmp, "users", "svc-easgate:Mock-Passw0rd!\n");
    return users_file ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    eg_free(users_file);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static struct eg_bridge_psrp_opts popts(const struct mockx *m, char *url, size_t size)
{
    snprintf(url, size, "http://127.0.0.1:%u/PowerShell", (unsigned)m->port);
    return (struct eg_bridge_psrp_opts){.pool = {.url = url,
                                                 .auth = EG_HTTP_CLIENT_AUTH_BASIC,
                                                 .username = "svc-easgate",
                                                 .password = "Mock-Passw0rd!",
                                                 .allow_cleartext_auth = true,
                                                 .max_pipelines = 2,
                                                 .operation_timeout_ms = 5000}};
}

static bool has_string(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), s) == 0) return true;
    return false;
}

static json_t *state_mailbox(struct mockx *m, const char *mbx)
{
    char path[300];
    snprintf(path, sizeof path, "/control/state/mailbox/%s", mbx);
    return mockx_get(m, path);
}

static json_t *state_device(struct mockx *m, const char *mbx, const char *id)
{
    char path[300];
    snprintf(path, sizeof path, "/control/state/device/%s/%s", mbx, id);
    return mockx_get(m, path);
}

static int count_dev(void *ctx, const struct eg_device_record *d)
{
    size_t *n = ctx;
    assert_non_null(d->device_id);
    assert_non_null(d->identity);
    assert_true(d->first_sync_ms > 0);
    (*n)++;
    return 0;
}

static void run_profile(const char *profile, enum eg_exchange_version want)
{
    struct mockx m;
    struct eg_bridge *b = NULL;
    struct eg_bridge_error err;
    char url[128];
    const bool legacy = want == EG_EXCHANGE_2010;
    const char *get = legacy ? "Get-ActiveSyncDevice" : "Get-MobileDevice";
    const char *clear = legacy ? "Clear-ActiveSyncDevice" : "Clear-MobileDevice";
    const char *remove = legacy ? "Remove-ActiveSyncDevice" : "Remove-MobileDevice";
    const char *const args[] = {"--profile", profile,     "--users", users_file, "--mailboxes",
                                "8",         "--devices", "30",      NULL};
    if (!mockx_binary())
        skip();
    assert_int_equal(mockx_start(&m, NULL, args), 0);
    struct eg_bridge_psrp_opts o = popts(&m, url, sizeof url);
    assert_int_equal(eg_bridge_psrp_new(&o, &b), 0);
    assert_int_equal(eg_bridge_psrp_version(b), EG_EXCHANGE_UNKNOWN);

    /* the list edit (no version needed): Get-CASMailbox, then one Set-CASMailbox */
    const struct eg_device_override ov[] = {{"ApplPS0001", EG_LIST_ALLOW},
                                            {"andrPS0002", EG_LIST_BLOCK}};
    struct eg_list_edit e = {.mailbox = MBX, .overrides = ov, .n_overrides = 2};
    json_t *actions = json_array();
    assert_int_equal(b->ops->list_edit(b->impl, &e, actions, &err), 0);
    assert_int_equal(json_array_size(actions), 2);
    json_decref(actions);
    json_t *st = state_mailbox(&m, MBX);
    assert_true(has_string(json_object_get(st, "allowed"), "ApplPS0001"));
    assert_true(has_string(json_object_get(st, "blocked"), "andrPS0002"));
    json_decref(st);
    json_t *calls = mockx_calls(&m);
    json_t *set = json_object_get(mockx_call(calls, "Set-CASMailbox", 0), "parameters");
    assert_non_null(json_object_get(json_object_get(set, "ActiveSyncAllowedDeviceIDs"), "Add"));
    assert_non_null(json_object_get(json_object_get(set, "ActiveSyncBlockedDeviceIDs"), "Add"));
    json_decref(calls);

    /* a wipe detects the version first (Get-ExchangeServer) */
    long stc = 0;
    json_decref(mockx_ctl(&m, "POST", "/control/device-sync",
                          json_pack("{s:s, s:s, s:s}", "mailbox", MBX, "device_id", "EGPSDEV01",
                                    "device_type", "iPad"),
                          &stc));
    assert_int_equal(stc, 200);
    mockx_calls_reset(&m);
    const char *notify[] = {"helpdesk@contoso.example"};
    assert_int_equal(b->ops->wipe(b->impl, MBX, "EGPSDEV01", false, notify, 1, NULL, &err), 0);
    assert_int_equal(eg_bridge_psrp_version(b), want);
    calls = mockx_calls(&m);
    assert_int_equal(mockx_count(calls, "Get-ExchangeServer"), 1);
    assert_int_equal(mockx_count(calls, get), 1);
    json_t *clr = json_object_get(mockx_call(calls, clear, 0), "parameters");
    assert_non_null(clr);
    assert_true(json_is_false(json_object_get(clr, "Confirm")));
    assert_null(json_object_get(clr, "AccountOnly"));
    json_decref(calls);
    json_t *d = state_device(&m, MBX, "EGPSDEV01");
    json_t *w = json_object_get(d, "wipe");
    assert_non_null(json_string_value(json_object_get(w, "request_time")));
    assert_true(json_is_false(json_object_get(w, "account_only")));
    assert_true(has_string(json_object_get(w, "notify"), "helpdesk@contoso.example"));
    json_decref(d);

    /* -AccountOnly: 2016 sends it; 2010 and 2013 refuse before anything is sent */
    mockx_calls_reset(&m);
    int rc = b->ops->wipe(b->impl, MBX, "EGPSDEV01", true, NULL, 0, NULL, &err);
    calls = mockx_calls(&m);
    if (want == EG_EXCHANGE_2016) {
        assert_int_equal(rc, 0);
        assert_true(json_is_true(json_object_get(
            json_object_get(mockx_call(calls, clear, 0), "parameters"), "AccountOnly")));
    } else {
        assert_int_equal(rc, EG_EUNSUPPORTED);
        assert_string_equal(err.code, "unsupported");
        assert_false(err.transient);
        assert_int_equal(json_array_size(calls), 0);
    }
    json_decref(calls);

    assert_int_equal(b->ops->wipe_cancel(b->impl, MBX, "EGPSDEV01", NULL, &err), 0);
    d = state_device(&m, MBX, "EGPSDEV01");
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "wipe"), "status")),
                        "DeviceOk");
    json_decref(d);
    mockx_calls_reset(&m);
    assert_int_equal(b->ops->remove_device(b->impl, MBX, "EGPSDEV01", NULL, &err), 0);
    calls = mockx_calls(&m);
    assert_int_equal(mockx_count(calls, remove), 1);
    assert_true(json_is_false(
        json_object_get(json_object_get(mockx_call(calls, remove, 0), "parameters"), "Confirm")));
    json_decref(calls);
    st = state_mailbox(&m, MBX);
    assert_false(has_string(json_object_get(st, "devices"), "EGPSDEV01"));
    json_decref(st);
    assert_true(b->ops->remove_device(b->impl, MBX, "EGPSDEV01", NULL, &err) < 0);
    assert_string_equal(err.code, "device_not_found");

    /* settings */
    assert_int_equal(b->ops->set_mailbox(b->impl, MBX2, 0, false, NULL, NULL, &err), 0);
    st = state_mailbox(&m, MBX2);
    assert_true(json_is_false(json_object_get(st, "activesync_enabled")));
    json_decref(st);
    assert_int_equal(b->ops->set_org_default_access(b->impl, EG_ACCESS_BLOCK, NULL, &err), 0);
    json_t *org = mockx_get(&m, "/control/state/org");
    assert_string_equal(json_string_value(json_object_get(org, "default_access_level")), "Block");
    size_t devices = (size_t)json_integer_value(json_object_get(org, "devices"));
    json_decref(org);

    /* inventory */
    struct eg_inventory_query q = {.full = true};
    size_t n = 0;
    char *next = (char *)"x";
    mockx_calls_reset(&m);
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, count_dev, &n, &next, &err), 0);
    assert_null(next);
    assert_int_equal(n, devices);
    calls = mockx_calls(&m);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(mockx_call(calls, get, 0), "parameters"),
                                          "ResultSize")),
        "Unlimited");
    json_decref(calls);

    /* probe and status */
    mockx_calls_reset(&m);
    assert_int_equal(eg_bridge_probe(b, &err), 0);
    calls = mockx_calls(&m);
    assert_int_equal(mockx_count(calls, "Get-OrganizationConfig"), 1);
    json_decref(calls);
    json_t *s = eg_bridge_status(b);
    assert_string_equal(json_string_value(json_object_get(s, "kind")), "onprem");
    assert_string_equal(json_string_value(json_object_get(s, "version")),
                        eg_exchange_version_name(want));
    assert_string_equal(json_string_value(json_object_get(s, "url")), url);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(s, "concurrency"), "ceiling")), 2);
    json_decref(s);

    /* an unknown mailbox */
    struct eg_list_edit bad = {
        .mailbox = "nobody@contoso.example", .overrides = ov, .n_overrides = 1};
    assert_true(b->ops->list_edit(b->impl, &bad, NULL, &err) < 0);
    assert_string_equal(err.code, "mailbox_not_found");
    eg_bridge_free(b);

    /* a configured version is used as it is: no Get-ExchangeServer, and on a 2010/2013
     * configuration -AccountOnly is refused with no call at all */
    o = popts(&m, url, sizeof url);
    o.version = legacy ? EG_EXCHANGE_2010 : EG_EXCHANGE_2013;
    assert_int_equal(eg_bridge_psrp_new(&o, &b), 0);
    assert_int_equal(eg_bridge_psrp_version(b), o.version);
    mockx_calls_reset(&m);
    assert_int_equal(b->ops->wipe(b->impl, MBX, "whatever", true, NULL, 0, NULL, &err),
                     EG_EUNSUPPORTED);
    calls = mockx_calls(&m);
    assert_int_equal(json_array_size(calls), 0);
    json_decref(calls);
    eg_bridge_free(b);
    mockx_stop(&m);
}

static void test_2010(void **state)
{
    run_profile("2010", EG_EXCHANGE_2010);
}

static void test_2013(void **state)
{
    run_profile("2013", EG_EXCHANGE_2013);
}

static void test_2016(void **state)
{
    run_profile("2016", EG_EXCHANGE_2016);
}

static void test_options(void **state)
{
    struct eg_bridge *b = NULL;
    struct eg_bridge_psrp_opts o = {.pool = {.url = "http://127.0.0.1:1/PowerShell"}};
    assert_int_equal(eg_bridge_psrp_new(NULL, &b), EG_EINVAL);
    o.pool.url = NULL;
    assert_int_equal(eg_bridge_psrp_new(&o, &b), EG_EINVAL);
    o.pool.url = "http://127.0.0.1:1/PowerShell";
    o.version = EG_EXCHANGE_ONLINE;
    assert_int_equal(eg_bridge_psrp_new(&o, &b), EG_EINVAL);
    o.version = EG_EXCHANGE_UNKNOWN;
    o.pool.max_pipelines = 65;
    assert_int_equal(eg_bridge_psrp_new(&o, &b), EG_EINVAL);
    o.pool.max_pipelines = 0;
    const int64_t bad[] = {-1, (int64_t)EG_HTTP_CLIENT_MAX_TIMEOUT_MS + 1, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.pool.connect_timeout_ms = bad[i];
        assert_int_equal(eg_bridge_psrp_new(&o, &b), EG_EINVAL);
        o.pool.connect_timeout_ms = 0;
        o.pool.io_timeout_ms = bad[i];
        assert_int_equal(eg_bridge_psrp_new(&o, &b), EG_EINVAL);
        o.pool.io_timeout_ms = 0;
        o.pool.response_timeout_ms = bad[i];
        assert_int_equal(eg_bridge_psrp_new(&o, &b), EG_EINVAL);
        o.pool.response_timeout_ms = 0;
    }
    assert_null(b);
    o.pool.io_timeout_ms = 1000;
    assert_int_equal(eg_bridge_psrp_new(&o, &b), 0);
    assert_int_equal(eg_bridge_psrp_version(b), EG_EXCHANGE_UNKNOWN);
    json_t *s = eg_bridge_status(b);
    assert_string_equal(json_string_value(json_object_get(s, "version")), "unknown");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(s, "concurrency"), "ceiling")), 1);
    json_decref(s);
    eg_bridge_free(b);

    enum eg_exchange_version v;
    assert_int_equal(eg_exchange_version_parse("SE", &v), 0);
    assert_int_equal(v, EG_EXCHANGE_2016);
    assert_int_equal(eg_exchange_version_parse("online", &v), EG_EINVAL);
    assert_string_equal(eg_exchange_version_name(EG_EXCHANGE_ONLINE), "online");
    assert_int_equal(eg_exchange_version_from_text("Version 15.20 (Build 7762.25)", &v), 0);
    assert_int_equal(v, EG_EXCHANGE_2016);
}

/* A listening socket that accepts (the kernel does) but never answers. */
static int silent_listener(uint16_t *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *ret_port = ntohs(sa.sin_port);
    return fd;
}

static void test_unreachable_and_timeout(void **state)
{
    struct eg_bridge *b = NULL;
    struct eg_bridge_error err;
    char url[128];
    uint16_t port;
    int fd = silent_listener(&port);
    close(fd); /* now refused */
    snprintf(url, sizeof url, "http://127.0.0.1:%u/PowerShell", (unsigned)port);
    struct eg_bridge_psrp_opts o = {.pool = {.url = url}};
    assert_int_equal(eg_bridge_psrp_new(&o, &b), 0);
    assert_true(b->ops->set_org_default_access(b->impl, EG_ACCESS_ALLOW, NULL, &err) < 0);
    assert_string_equal(err.code, "exchange_unreachable");
    assert_true(err.transient);
    assert_true(eg_bridge_probe(b, &err) < 0);
    assert_string_equal(err.code, "exchange_unreachable");
    eg_bridge_free(b);

    /* accepted, never answered: the io timeout (1 s) ends the Create */
    fd = silent_listener(&port);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/PowerShell", (unsigned)port);
    o.pool.io_timeout_ms = 1000;
    o.pool.response_timeout_ms = 120000;
    assert_int_equal(eg_bridge_psrp_new(&o, &b), 0);
    assert_true(b->ops->set_org_default_access(b->impl, EG_ACCESS_ALLOW, NULL, &err) < 0);
    assert_string_equal(err.code, "timeout");
    assert_true(err.transient);
    eg_bridge_free(b);
    close(fd);
}

int main(int argc, char **argv)
{
    eg_alloc_init();
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options), cmocka_unit_test(test_unreachable_and_timeout),
        cmocka_unit_test(test_2010),    cmocka_unit_test(test_2013),
        cmocka_unit_test(test_2016),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
