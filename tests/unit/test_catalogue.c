/* test_catalogue.c - the cmdlet catalogue's inventory operations against easgate-mock-exchange,
 * through the on-prem backend (2010 and 2016 profiles) and the Online backend (REST): the
 * mailboxes' lists (every mailbox with a partnership in one streamed Get-CASMailbox with the
 * HasActiveSyncDevicePartnership filter, one mailbox by any identity, not found), the mailbox
 * Identity of each partnership matching Get-CASMailbox's, the WhenChanged window of a quick
 * inventory, and one device's statistics (wipe status and times; the Identity resolved when not
 * given), each checked against the mock's state and recorded calls. Skipped when the mock was
 * not built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "exchange/bridge_psrp.h"
#include "exchange/bridge_rest.h"
#include "mock_exchange_helper.h"

#define TENANT "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
#define APP_ID "3c5d7e9f-1111-4222-8333-444455556666"

static char tmp[PATH_MAX];
static char *users_file, *app_cert, *app_key, *app_cert_file;

static int group_setup(void **state)
{
    snprintf(tmp, sizeof tmp, "%.900s/eg-test-cat.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp))
        return -1;
    users_file = write_temp(tmp, "users", "svc-easgate:Mock-Passw0rd!\n");
    if (make_app_pki("easgate-test-app", &app_cert, &app_key, NULL) < 0)
        return -1;
    app_cert_file = write_temp(tmp, "app.pem", app_cert);
    return users_file && app_cert_file ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    eg_free(users_file);
    eg_free(app_cert);
    if (app_key) {
        eg_memzero(app_key, strlen(app_key));
        eg_free(app_key);
    }
    eg_free(app_cert_file);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* Devices streamed: {device id: {"mailbox_identity", "identity", "when_changed"}}. */
static int collect_dev(void *ctx, const struct eg_device_record *d)
{
    json_t *all = ctx;
    assert_non_null(d->device_id);
    assert_non_null(d->identity);
    assert_non_null(d->mailbox_identity);
    assert_true(d->when_changed_ms > 0);
    /* the Identity is the mailbox's, then its ExchangeActiveSyncDevices container */
    assert_int_equal(strncmp(d->identity, d->mailbox_identity, strlen(d->mailbox_identity)), 0);
    json_object_set_new(all, d->device_id,
                        json_pack("{s:s, s:s, s:I}", "mailbox_identity", d->mailbox_identity,
                                  "identity", d->identity, "when_changed",
                                  (json_int_t)d->when_changed_ms));
    return 0;
}

/* Mailboxes streamed: {identity: {"smtp", "allowed", "blocked"}}. */
static int collect_mbx(void *ctx, const struct eg_mailbox_record *m)
{
    json_t *all = ctx, *a = json_array(), *b = json_array();
    assert_non_null(m->identity);
    for (size_t i = 0; i < m->n_allowed; i++)
        json_array_append_new(a, json_string(m->allowed[i]));
    for (size_t i = 0; i < m->n_blocked; i++)
        json_array_append_new(b, json_string(m->blocked[i]));
    json_object_set_new(
        all, m->identity,
        json_pack("{s:s?, s:o, s:o}", "smtp", m->primary_smtp, "allowed", a, "blocked", b));
    return 0;
}

struct stats {
    int n;
    char status[64];
    int64_t req, ack;
};

static int collect_stats(void *ctx, const struct eg_device_record *d)
{
    struct stats *s = ctx;
    s->n++;
    snprintf(s->status, sizeof s->status, "%s", d->wipe_status ? d->wipe_status : "");
    s->req = d->wipe_request_ms;
    s->ack = d->wipe_ack_ms;
    return 0;
}

static const char *param(json_t *call, const char *name)
{
    return json_string_value(json_object_get(json_object_get(call, "parameters"), name));
}

static void sync_device(struct mockx *m, const char *mbx, const char *id)
{
    long st = 0;
    json_decref(mockx_ctl(
        m, "POST", "/control/device-sync",
        json_pack("{s:s, s:s, s:s}", "mailbox", mbx, "device_id", id, "device_type", "iPhone"),
        &st));
    assert_int_equal(st, 200);
}

static void run(struct mockx *m, struct eg_bridge *b, const char *domain, bool legacy)
{
    struct eg_bridge_error err;
    json_t *devs = json_object(), *mbxs = json_object(), *calls;
    const char *get = legacy ? "Get-ActiveSyncDevice" : "Get-MobileDevice";
    char mbx1[128];
    snprintf(mbx1, sizeof mbx1, "user0001@%s", domain);

    /* every partnership, then the lists of every mailbox that has one */
    struct eg_inventory_query q = {.full = true};
    char *next = (char *)"x";
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, collect_dev, devs, &next, &err), 0);
    assert_null(next);
    assert_true(json_object_size(devs) >= 12);
    mockx_calls_reset(m);
    struct eg_mailbox_query mq = {0};
    assert_int_equal(b->ops->mailbox_lists(b->impl, &mq, collect_mbx, mbxs, &err), 0);
    calls = mockx_calls(m);
    json_t *c = mockx_call(calls, "Get-CASMailbox", 0);
    assert_non_null(c);
    assert_string_equal(param(c, "Filter"), "HasActiveSyncDevicePartnership -eq $true");
    assert_string_equal(param(c, "ResultSize"), "Unlimited");
    json_decref(calls);
    /* each partnership's mailbox is one of the streamed mailboxes, and each of those has one */
    const char *id;
    json_t *v;
    json_object_foreach(devs, id, v)
    {
        const char *mi = json_string_value(json_object_get(v, "mailbox_identity"));
        if (!json_object_get(mbxs, mi))
            fail_msg("device %s: mailbox %s is not among the lists", id, mi);
    }
    json_object_foreach(mbxs, id, v)
    {
        bool has = false;
        const char *k;
        json_t *d;
        json_object_foreach(devs, k, d) has |=
            strcmp(json_string_value(json_object_get(d, "mailbox_identity")), id) == 0;
        assert_true(has);
        assert_non_null(json_string_value(json_object_get(v, "smtp")));
    }
    /* one mailbox by its SMTP address: the same Identity and the lists the mock holds */
    json_t *one = json_object();
    mq.mailbox = mbx1;
    assert_int_equal(b->ops->mailbox_lists(b->impl, &mq, collect_mbx, one, &err), 0);
    assert_int_equal(json_object_size(one), 1);
    json_object_foreach(one, id, v)
    {
        assert_non_null(json_object_get(mbxs, id));
        assert_string_equal(json_string_value(json_object_get(v, "smtp")), mbx1);
        char path[256];
        snprintf(path, sizeof path, "/control/state/mailbox/%s", mbx1);
        json_t *st = mockx_get(m, path);
        assert_true(json_equal(json_object_get(st, "allowed"), json_object_get(v, "allowed")));
        assert_true(json_equal(json_object_get(st, "blocked"), json_object_get(v, "blocked")));
        json_decref(st);
    }
    json_decref(one);
    mq.mailbox = "nobody@nowhere.example";
    one = json_object();
    assert_true(b->ops->mailbox_lists(b->impl, &mq, collect_mbx, one, &err) < 0);
    assert_string_equal(err.code, EG_BERR_MAILBOX_NOT_FOUND);
    assert_int_equal(json_object_size(one), 0);
    json_decref(one);

    /* the WhenChanged window: nothing changed in the last second, then one device synced */
    mockx_sleep_ms(1100);
    int64_t since = eg_now_ms();
    mockx_sleep_ms(1100); /* the filter has whole seconds */
    json_t *changed = json_object();
    q = (struct eg_inventory_query){.full = false, .since_ms = since};
    mockx_calls_reset(m);
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, collect_dev, changed, &next, &err),
                     0);
    assert_int_equal(json_object_size(changed), 0);
    calls = mockx_calls(m);
    const char *filter = param(mockx_call(calls, get, 0), "Filter");
    assert_non_null(filter);
    assert_int_equal(strncmp(filter, "WhenChanged -gt '20", 19), 0);
    assert_int_equal(filter[strlen(filter) - 2], 'Z');
    json_decref(calls);
    sync_device(m, mbx1, "ApplCAT0001");
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, collect_dev, changed, &next, &err),
                     0);
    assert_int_equal(json_object_size(changed), 1);
    assert_non_null(json_object_get(changed, "ApplCAT0001"));
    json_decref(changed);

    /* statistics of that device, by its Identity, before and after a wipe */
    json_t *fresh = json_object();
    q = (struct eg_inventory_query){.full = true, .mailbox = mbx1};
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, collect_dev, fresh, &next, &err), 0);
    const char *ident =
        json_string_value(json_object_get(json_object_get(fresh, "ApplCAT0001"), "identity"));
    assert_non_null(ident);
    struct stats s = {0};
    mockx_calls_reset(m);
    assert_int_equal(
        b->ops->device_stats(b->impl, mbx1, "ApplCAT0001", ident, collect_stats, &s, &err), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.status, "DeviceOk");
    assert_int_equal(s.req, 0);
    calls = mockx_calls(m);
    const char *scmd = legacy ? "Get-ActiveSyncDeviceStatistics" : "Get-MobileDeviceStatistics";
    assert_int_equal(mockx_count(calls, scmd), 1);
    assert_string_equal(param(mockx_call(calls, scmd, 0), "Identity"), ident);
    assert_int_equal(mockx_count(calls, get), 0); /* nothing resolved */
    json_decref(calls);
    assert_int_equal(b->ops->wipe(b->impl, mbx1, "ApplCAT0001", false, NULL, 0, NULL, &err), 0);
    s = (struct stats){0};
    mockx_calls_reset(m);
    assert_int_equal(
        b->ops->device_stats(b->impl, mbx1, "ApplCAT0001", NULL, collect_stats, &s, &err), 0);
    assert_string_equal(s.status, "DeviceWipePending");
    assert_true(s.req > 0);
    assert_int_equal(s.ack, 0);
    calls = mockx_calls(m);
    assert_int_equal(mockx_count(calls, get), 1); /* the Identity, resolved */
    json_decref(calls);
    s = (struct stats){0};
    assert_true(b->ops->device_stats(b->impl, mbx1, "NoSuchDevice", NULL, collect_stats, &s, &err) <
                0);
    assert_string_equal(err.code, EG_BERR_DEVICE_NOT_FOUND);
    assert_int_equal(s.n, 0);
    json_decref(fresh);
    json_decref(devs);
    json_decref(mbxs);
}

static void run_psrp(const char *profile, bool legacy)
{
    struct mockx m;
    struct eg_bridge *b = NULL;
    char url[128];
    const char *const args[] = {"--profile", profile,     "--users", users_file,     "--mailboxes",
                                "8",         "--devices", "30",      "--seed-lists", NULL};
    if (!mockx_binary())
        skip();
    assert_int_equal(mockx_start(&m, NULL, args), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/PowerShell", (unsigned)m.port);
    struct eg_bridge_psrp_opts o = {.pool = {.url = url,
                                             .auth = EG_HTTP_CLIENT_AUTH_BASIC,
                                             .username = "svc-easgate",
                                             .password = "Mock-Passw0rd!",
                                             .allow_cleartext_auth = true,
                                             .max_pipelines = 2,
                                             .operation_timeout_ms = 5000}};
    assert_int_equal(eg_bridge_psrp_new(&o, &b), 0);
    run(&m, b, "contoso.example", legacy);
    eg_bridge_free(b);
    mockx_stop(&m);
}

static void test_2010(void **state)
{
    run_psrp("2010", true);
}

static void test_2016(void **state)
{
    run_psrp("2016", false);
}

static void test_online(void **state)
{
    struct mockx m;
    struct eg_bridge *b = NULL;
    char api[128], token[160];
    const char *const args[] = {"--profile",    "online", "--tenant",   TENANT,
                                "--app-id",     APP_ID,   "--app-cert", app_cert_file,
                                "--mailboxes",  "8",      "--devices",  "30",
                                "--seed-lists", NULL};
    if (!mockx_binary())
        skip();
    assert_int_equal(mockx_start(&m, NULL, args), 0);
    snprintf(api, sizeof api, "http://127.0.0.1:%u/adminapi/beta", (unsigned)m.port);
    snprintf(token, sizeof token, "http://127.0.0.1:%u/%s/oauth2/v2.0/token", (unsigned)m.port,
             TENANT);
    struct eg_bridge_rest_opts o = {.tenant = TENANT,
                                    .app_id = APP_ID,
                                    .cert_pem = app_cert,
                                    .key_pem = app_key,
                                    .api_url = api,
                                    .token_url = token,
                                    .allow_http = true,
                                    .max_concurrency = 2};
    assert_int_equal(eg_bridge_rest_new(&o, &b), 0);
    run(&m, b, "contoso.example", false); /* PrimarySmtpAddress; the UPN is onmicrosoft */
    eg_bridge_free(b);
    mockx_stop(&m);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_2010),
        cmocka_unit_test(test_2016),
        cmocka_unit_test(test_online),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
