/* test_bridge_rest.c - the Exchange Online backend (exchange/bridge_rest) end to end against the
 * mock Exchange's REST front end (easgate-mock-exchange --profile online): the token flow with a
 * certificate made here, every bridge operation through eg_bridge_rest_new, checked against the
 * mock's final state and recorded calls (control API /control/state, /control/calls); paging by
 * @odata.nextLink; not-found and 429 errors; a 401 after the mock restarted (a new signing key)
 * dropping the cached token and retrying once; option validation. Skipped when the mock was not
 * built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>

#include "exchange/bridge_rest.h"
#include "exchange/catalogue.h"
#include "mock_exchange_helper.h"

#define TENANT  "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
#define APP_ID  "3c5d7e9f-1111-4222-8333-444455556666"
#define MBX     "user0001@contoso.example"
#define DEVICES 2500

static struct {
    bool ok;
    char dir[PATH_MAX];
    char *cert, *key, *cert_file;
    struct mockx m;
    struct eg_bridge *b;
    char api[128], token_url[160];
} g;

static int start_mock(const char *listen)
{
    char devices[16];
    snprintf(devices, sizeof devices, "%d", DEVICES);
    const char *const args[] = {"--profile", "online",     "--tenant",  TENANT,        "--app-id",
                                APP_ID,      "--app-cert", g.cert_file, "--mailboxes", "10",
                                "--devices", devices,      NULL};
    if (mockx_start(&g.m, listen, args) < 0)
        return -1;
    snprintf(g.api, sizeof g.api, "http://127.0.0.1:%u/adminapi/beta", (unsigned)g.m.port);
    snprintf(g.token_url, sizeof g.token_url, "http://127.0.0.1:%u/%s/oauth2/v2.0/token",
             (unsigned)g.m.port, TENANT);
    return 0;
}

static struct eg_bridge_rest_opts opts(void)
{
    return (struct eg_bridge_rest_opts){.tenant = TENANT,
                                        .app_id = APP_ID,
                                        .cert_pem = g.cert,
                                        .key_pem = g.key,
                                        .api_url = g.api,
                                        .token_url = g.token_url,
                                        .allow_http = true,
                                        .max_concurrency = 3};
}

static int group_setup(void **state)
{
    snprintf(g.dir, sizeof g.dir, "%.900s/eg-test-rest.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g.dir))
        return -1;
    if (make_app_pki("easgate-test-app", &g.cert, &g.key, NULL) < 0 ||
        !(g.cert_file = write_temp(g.dir, "app.pem", g.cert)))
        return -1;
    if (!mockx_binary()) {
        fprintf(stderr, "easgate-mock-exchange not built: skipping\n");
        return 0;
    }
    if (start_mock(NULL) < 0)
        return -1;
    struct eg_bridge_rest_opts o = opts();
    if (eg_bridge_rest_new(&o, &g.b) < 0)
        return -1;
    g.ok = true;
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    eg_bridge_free(g.b);
    mockx_stop(&g.m);
    eg_free(g.cert);
    if (g.key) {
        eg_memzero(g.key, strlen(g.key));
        eg_free(g.key);
    }
    eg_free(g.cert_file);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g.dir);
    return system(cmd) == 0 ? 0 : -1;
}

#define NEED_MOCK()                                                                                \
    do {                                                                                           \
        if (!g.ok)                                                                                 \
            skip();                                                                                \
    } while (0)

static json_t *state_mailbox(const char *mbx)
{
    char path[256];
    snprintf(path, sizeof path, "/control/state/mailbox/%s", mbx);
    json_t *j = mockx_get(&g.m, path);
    assert_non_null(j);
    return j;
}

static bool has_string(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), s) == 0) return true;
    return false;
}

/* A new partnership (EAS 16.1) for mbx through the mock's device-sync. */
static void sync_device(const char *mbx, const char *id)
{
    long st = 0;
    json_t *r = mockx_ctl(
        &g.m, "POST", "/control/device-sync",
        json_pack("{s:s, s:s, s:s}", "mailbox", mbx, "device_id", id, "device_type", "iPhone"),
        &st);
    assert_int_equal(st, 200);
    json_decref(r);
}

/* ---- options -------------------------------------------------------------------------------- */

static void test_options(void **state)
{
    struct eg_bridge *b = NULL;
    struct eg_bridge_rest_opts o = opts();
    assert_int_equal(eg_bridge_rest_new(NULL, &b), EG_EINVAL);
    o.tenant = "contoso.onmicrosoft.com/../x";
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.tenant = "evil\r\nX-Injected: 1";
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.allow_http = false; /* http needs the explicit opt-in */
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.api_url = "http://exchange.example.com/adminapi/beta"; /* http only to loopback */
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.max_concurrency = 65;
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.io_timeout_ms = -1;
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.response_timeout_ms = INT64_MAX;
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    o = opts();
    o.cert_pem = "not a certificate";
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    /* a key that is not the certificate's */
    char *cert2 = NULL, *key2 = NULL;
    assert_int_equal(make_app_pki("other", &cert2, &key2, NULL), 0);
    o = opts();
    o.key_pem = key2;
    assert_int_equal(eg_bridge_rest_new(&o, &b), EG_EINVAL);
    assert_null(b);
    eg_free(cert2);
    eg_free(key2);
    /* the defaults are well-formed (nothing is connected at construction) */
    o = opts();
    o.api_url = o.token_url = NULL;
    o.allow_http = false;
    assert_int_equal(eg_bridge_rest_new(&o, &b), 0);
    json_t *st = eg_bridge_status(b);
    assert_string_equal(json_string_value(json_object_get(st, "url")),
                        "https://outlook.office365.com/adminapi/beta/" TENANT "/InvokeCommand");
    json_decref(st);
    eg_bridge_free(b);
}

/* ---- operations ----------------------------------------------------------------------------- */

static void test_list_edit(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    const struct eg_device_override ov[] = {{"ApplGOOD0001", EG_LIST_ALLOW},
                                            {"ApplGOOD0002", EG_LIST_ALLOW},
                                            {"andrBAD01", EG_LIST_BLOCK}};
    struct eg_list_edit e = {.mailbox = MBX, .overrides = ov, .n_overrides = 3};
    json_t *actions = json_array();
    mockx_calls_reset(&g.m);
    assert_int_equal(g.b->ops->list_edit(g.b->impl, &e, actions, &err), 0);
    json_t *st = state_mailbox(MBX);
    assert_true(has_string(json_object_get(st, "allowed"), "ApplGOOD0001"));
    assert_true(has_string(json_object_get(st, "allowed"), "ApplGOOD0002"));
    assert_true(has_string(json_object_get(st, "blocked"), "andrBAD01"));
    json_decref(st);
    assert_int_equal(json_array_size(actions), 2);
    json_t *calls = mockx_calls(&g.m);
    assert_int_equal(json_array_size(calls), 2);
    assert_non_null(mockx_call(calls, "Get-CASMailbox", 0));
    json_t *set = json_object_get(mockx_call(calls, "Set-CASMailbox", 0), "parameters");
    assert_non_null(set);
    assert_string_equal(json_string_value(json_object_get(set, "Identity")), MBX);
    json_t *allow = json_object_get(set, "ActiveSyncAllowedDeviceIDs");
    assert_int_equal(json_array_size(json_object_get(allow, "Add")), 2);
    assert_null(json_object_get(allow, "Remove"));
    assert_true(has_string(
        json_object_get(json_object_get(set, "ActiveSyncBlockedDeviceIDs"), "Add"), "andrBAD01"));
    json_decref(calls);
    json_decref(actions);

    /* the same edit again changes nothing: only the read */
    mockx_calls_reset(&g.m);
    assert_int_equal(g.b->ops->list_edit(g.b->impl, &e, NULL, &err), 0);
    calls = mockx_calls(&g.m);
    assert_int_equal(json_array_size(calls), 1);
    assert_int_equal(mockx_count(calls, "Set-CASMailbox"), 0);
    json_decref(calls);

    /* moving a device between the lists: Remove from one, Add to the other, in one call */
    const struct eg_device_override mv[] = {{"andrBAD01", EG_LIST_ALLOW},
                                            {"ApplGOOD0002", EG_LIST_NONE}};
    struct eg_list_edit e2 = {.mailbox = MBX, .overrides = mv, .n_overrides = 2};
    mockx_calls_reset(&g.m);
    assert_int_equal(g.b->ops->list_edit(g.b->impl, &e2, NULL, &err), 0);
    calls = mockx_calls(&g.m);
    assert_int_equal(mockx_count(calls, "Set-CASMailbox"), 1);
    set = json_object_get(mockx_call(calls, "Set-CASMailbox", 0), "parameters");
    assert_true(
        has_string(json_object_get(json_object_get(set, "ActiveSyncBlockedDeviceIDs"), "Remove"),
                   "andrBAD01"));
    assert_true(
        has_string(json_object_get(json_object_get(set, "ActiveSyncAllowedDeviceIDs"), "Remove"),
                   "ApplGOOD0002"));
    json_decref(calls);
    st = state_mailbox(MBX);
    assert_true(has_string(json_object_get(st, "allowed"), "andrBAD01"));
    assert_false(has_string(json_object_get(st, "allowed"), "ApplGOOD0002"));
    assert_int_equal(json_array_size(json_object_get(st, "blocked")), 0);
    json_decref(st);

    /* an unknown mailbox */
    struct eg_list_edit bad = {
        .mailbox = "nobody@contoso.example", .overrides = ov, .n_overrides = 1};
    assert_true(g.b->ops->list_edit(g.b->impl, &bad, NULL, &err) < 0);
    assert_string_equal(err.code, "mailbox_not_found");
    assert_false(err.transient);
    assert_string_equal(err.exchange_type,
                        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException");
}

static json_t *state_device(const char *mbx, const char *id)
{
    char path[256];
    snprintf(path, sizeof path, "/control/state/device/%s/%s", mbx, id);
    return mockx_get(&g.m, path);
}

static void test_wipe_cancel_remove(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    const char *notify[] = {"admin@contoso.example"};
    sync_device(MBX, "EGRESTDEV01");
    mockx_calls_reset(&g.m);
    json_t *actions = json_array();
    assert_int_equal(g.b->ops->wipe(g.b->impl, MBX, "egrestdev01", true, notify, 1, actions, &err),
                     0);
    json_t *d = state_device(MBX, "EGRESTDEV01");
    assert_non_null(d);
    json_t *w = json_object_get(d, "wipe");
    assert_true(json_is_true(json_object_get(w, "account_only")));
    assert_non_null(json_string_value(json_object_get(w, "request_time")));
    assert_true(has_string(json_object_get(w, "notify"), "admin@contoso.example"));
    const char *identity = json_string_value(json_object_get(d, "identity"));
    json_t *calls = mockx_calls(&g.m);
    assert_int_equal(json_array_size(calls), 2);
    json_t *get = json_object_get(mockx_call(calls, "Get-MobileDevice", 0), "parameters");
    assert_string_equal(json_string_value(json_object_get(get, "Mailbox")), MBX);
    json_t *clr = json_object_get(mockx_call(calls, "Clear-MobileDevice", 0), "parameters");
    assert_string_equal(json_string_value(json_object_get(clr, "Identity")), identity);
    assert_true(json_is_true(json_object_get(clr, "AccountOnly")));
    assert_true(json_is_false(json_object_get(clr, "Confirm")));
    json_decref(calls);
    json_decref(d);
    assert_int_equal(json_array_size(actions), 2);
    json_decref(actions);

    assert_int_equal(g.b->ops->wipe_cancel(g.b->impl, MBX, "EGRESTDEV01", NULL, &err), 0);
    d = state_device(MBX, "EGRESTDEV01");
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "wipe"), "status")),
                        "DeviceOk");
    json_decref(d);
    calls = mockx_calls(&g.m);
    clr = json_object_get(mockx_call(calls, "Clear-MobileDevice", 1), "parameters");
    assert_true(json_is_true(json_object_get(clr, "Cancel")));
    json_decref(calls);

    assert_int_equal(g.b->ops->remove_device(g.b->impl, MBX, "EGRESTDEV01", NULL, &err), 0);
    json_t *st = state_mailbox(MBX);
    assert_false(has_string(json_object_get(st, "devices"), "EGRESTDEV01"));
    json_decref(st);
    calls = mockx_calls(&g.m);
    assert_true(json_is_false(json_object_get(
        json_object_get(mockx_call(calls, "Remove-MobileDevice", 0), "parameters"), "Confirm")));
    json_decref(calls);

    /* gone: device_not_found, and nothing but the lookup was sent */
    mockx_calls_reset(&g.m);
    assert_true(g.b->ops->wipe(g.b->impl, MBX, "EGRESTDEV01", false, NULL, 0, NULL, &err) < 0);
    assert_string_equal(err.code, "device_not_found");
    calls = mockx_calls(&g.m);
    assert_int_equal(json_array_size(calls), 1);
    json_decref(calls);
}

static void test_set_mailbox_and_org(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    const char *mbx = "user0002@contoso.example";
    assert_int_equal(g.b->ops->set_mailbox(g.b->impl, mbx, 0, false, NULL, NULL, &err), 0);
    json_t *st = state_mailbox(mbx);
    assert_true(json_is_false(json_object_get(st, "activesync_enabled")));
    json_decref(st);
    assert_int_equal(g.b->ops->set_mailbox(g.b->impl, mbx, 1, true, NULL, NULL, &err), 0);
    st = state_mailbox(mbx);
    assert_true(json_is_true(json_object_get(st, "activesync_enabled")));
    assert_true(json_is_true(json_object_get(st, "policy_defaulted")));
    json_decref(st);
    /* an unknown policy */
    assert_true(g.b->ops->set_mailbox(g.b->impl, mbx, -1, true, "NoSuchPolicy", NULL, &err) < 0);
    assert_false(err.transient);

    assert_int_equal(g.b->ops->set_org_default_access(g.b->impl, EG_ACCESS_QUARANTINE, NULL, &err),
                     0);
    json_t *org = mockx_get(&g.m, "/control/state/org");
    assert_string_equal(json_string_value(json_object_get(org, "default_access_level")),
                        "Quarantine");
    json_decref(org);
    assert_int_equal(g.b->ops->set_org_default_access(g.b->impl, EG_ACCESS_ALLOW, NULL, &err), 0);
}

struct inv_count {
    size_t n, with_time;
    size_t stop_after;
};

static int count_dev(void *ctx, const struct eg_device_record *d)
{
    struct inv_count *c = ctx;
    assert_non_null(d->device_id);
    assert_non_null(d->identity);
    if (d->first_sync_ms > 0)
        c->with_time++;
    return ++c->n == c->stop_after ? 42 : 0;
}

static void test_inventory_paging(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    struct eg_inventory_query q = {.full = true};
    struct inv_count c = {0};
    char *next = (char *)"x";
    json_t *org = mockx_get(&g.m, "/control/state/org");
    size_t devices = (size_t)json_integer_value(json_object_get(org, "devices"));
    json_decref(org);
    assert_true(devices > 2000);
    mockx_calls_reset(&g.m);
    assert_int_equal(g.b->ops->inventory_page(g.b->impl, &q, NULL, count_dev, &c, &next, &err), 0);
    assert_null(next);
    assert_int_equal(c.n, devices);
    assert_int_equal(c.with_time, devices); /* FirstSyncTime read from the JSON */
    json_t *calls = mockx_calls(&g.m);
    /* one recorded run per page of 1000 (the mock re-runs the cmdlet for each nextLink) */
    assert_int_equal(mockx_count(calls, "Get-MobileDevice"), (devices + 999) / 1000);
    json_decref(calls);

    /* the callback stops the page: its value comes back */
    struct inv_count s = {.stop_after = 5};
    assert_int_equal(g.b->ops->inventory_page(g.b->impl, &q, NULL, count_dev, &s, &next, &err), 42);
    assert_int_equal(s.n, 5);
    /* one mailbox */
    struct eg_inventory_query q1 = {.mailbox = MBX};
    struct inv_count one = {0};
    assert_int_equal(g.b->ops->inventory_page(g.b->impl, &q1, NULL, count_dev, &one, &next, &err),
                     0);
    json_t *st = state_mailbox(MBX);
    assert_int_equal(one.n, json_array_size(json_object_get(st, "devices")));
    json_decref(st);
    /* a cursor is refused */
    assert_int_equal(g.b->ops->inventory_page(g.b->impl, &q, "abc", count_dev, &c, &next, &err),
                     EG_EINVAL);
}

static void test_probe_and_status(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    mockx_calls_reset(&g.m);
    assert_int_equal(eg_bridge_probe(g.b, &err), 0);
    json_t *calls = mockx_calls(&g.m);
    assert_int_equal(json_array_size(calls), 1);
    assert_non_null(mockx_call(calls, "Get-OrganizationConfig", 0));
    json_decref(calls);
    json_t *st = eg_bridge_status(g.b);
    assert_string_equal(json_string_value(json_object_get(st, "kind")), "online");
    assert_string_equal(json_string_value(json_object_get(st, "version")), "online");
    assert_non_null(strstr(json_string_value(json_object_get(st, "url")), "/InvokeCommand"));
    json_t *cc = json_object_get(st, "concurrency");
    assert_int_equal(json_integer_value(json_object_get(cc, "ceiling")), 3);
    assert_int_equal(json_integer_value(json_object_get(cc, "limit")), 3);
    json_decref(st);
    assert_int_equal(eg_catalogue_version(g.b), EG_EXCHANGE_ONLINE);
}

static void test_throttled(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    long stc = 0;
    json_decref(mockx_ctl(&g.m, "POST", "/control/faults",
                          json_pack("{s:{s:i, s:i}}", "rest_429", "count", 3, "retry_after", 2),
                          &stc));
    assert_int_equal(stc, 200);
    for (int i = 0; i < 3; i++) {
        assert_true(g.b->ops->set_org_default_access(g.b->impl, EG_ACCESS_ALLOW, NULL, &err) < 0);
        assert_string_equal(err.code, "throttled");
        assert_true(err.transient);
        assert_int_equal(err.retry_after_ms, 2000);
    }
    /* the gate halved its limit for each throttled answer (3 -> 1, never below) */
    json_t *st = eg_bridge_status(g.b);
    json_t *cc = json_object_get(st, "concurrency");
    assert_int_equal(json_integer_value(json_object_get(cc, "limit")), 1);
    assert_int_equal(json_integer_value(json_object_get(cc, "throttles")), 3);
    json_decref(st);
    assert_int_equal(g.b->ops->set_org_default_access(g.b->impl, EG_ACCESS_ALLOW, NULL, &err), 0);
    json_decref(mockx_ctl(&g.m, "DELETE", "/control/faults", NULL, &stc));
}

/* The mock restarts on the same port with a new token signing key: the cached token gets 401,
 * is dropped, a new one is fetched and the call succeeds. */
static void test_token_refused_then_renewed(void **state)
{
    NEED_MOCK();
    struct eg_bridge_error err;
    char listen[32];
    assert_int_equal(eg_bridge_probe(g.b, &err), 0); /* a token is cached */
    snprintf(listen, sizeof listen, "127.0.0.1:%u", (unsigned)g.m.port);
    mockx_stop(&g.m);
    int started = -1;
    for (int i = 0; i < 50 && started < 0; i++) {
        started = start_mock(listen);
        if (started < 0) {
            mockx_stop(&g.m);
            mockx_sleep_ms(100);
        }
    }
    assert_int_equal(started, 0);
    assert_int_equal(eg_bridge_probe(g.b, &err), 0);
    json_t *calls = mockx_calls(&g.m);
    assert_int_equal(mockx_count(calls, "Get-OrganizationConfig"), 1);
    json_decref(calls);
}

/* ---- the wire, against a scripted server ------------------------------------------------- */

/* A tiny Exchange Online stand-in: the token endpoint hands out "tok-<n>"; InvokeCommand answers
 * as `mode` says and keeps the last request's headers and body. */
struct fake {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    int tokens;       /* token requests */
    int invokes;      /* InvokeCommand requests */
    const char *mode; /* "ok", "page2", "foreign", "401", "garbage" */
    json_t *headers;  /* of the last InvokeCommand */
    char body[4096];  /* of the last InvokeCommand */
    char request_ids[8][64];
};

struct fake_req {
    char *body;
    size_t len;
};

static enum MHD_Result keep_header(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    json_object_set_new(cls, k, json_string(v ? v : ""));
    return MHD_YES;
}

static enum MHD_Result fake_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *upload,
                                    size_t *upload_size, void **req_cls)
{
    struct fake *f = cls;
    struct fake_req *r = *req_cls;
    if (!r) {
        *req_cls = calloc(1, sizeof *r);
        return *req_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        char *nb = realloc(r->body, r->len + *upload_size + 1);
        if (!nb)
            return MHD_NO;
        memcpy(nb + r->len, upload, *upload_size);
        r->body = nb;
        r->len += *upload_size;
        r->body[r->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    char text[1024];
    unsigned status = 200;
    const char *ctype = "application/json";
    pthread_mutex_lock(&f->mu);
    if (strstr(url, "/oauth2/v2.0/token")) {
        snprintf(text, sizeof text,
                 "{\"token_type\":\"Bearer\",\"expires_in\":3600,\"access_token\":\"tok-%d\"}",
                 ++f->tokens);
    } else {
        json_decref(f->headers);
        f->headers = json_object();
        MHD_get_connection_values(c, MHD_HEADER_KIND, keep_header, f->headers);
        snprintf(f->body, sizeof f->body, "%s", r->body ? r->body : "");
        const char *rid = json_string_value(json_object_get(f->headers, "client-request-id"));
        if (f->invokes < 8)
            snprintf(f->request_ids[f->invokes], sizeof f->request_ids[0], "%s", rid ? rid : "");
        f->invokes++;
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "page");
        bool second = q && strcmp(q, "2") == 0;
        if (strcmp(f->mode, "401") == 0) {
            status = 401;
            snprintf(text, sizeof text, "{\"error\":{\"code\":\"Unauthorized\"}}");
        } else if (strcmp(f->mode, "garbage") == 0) {
            snprintf(text, sizeof text, "<html>not json</html>");
            ctype = "text/html";
        } else if (strcmp(f->mode, "foreign") == 0) {
            snprintf(text, sizeof text,
                     "{\"value\":[],\"@odata.nextLink\":\"http://127.0.0.2:%u/x?page=2\"}",
                     (unsigned)f->port);
        } else if (strcmp(f->mode, "page2") == 0 && !second) {
            snprintf(text, sizeof text,
                     "{\"value\":[{\"DeviceId\":\"D1\",\"Identity\":\"u\\\\D1\"}],"
                     "\"@odata.nextLink\":\"http://127.0.0.1:%u/adminapi/beta/contoso.example/"
                     "InvokeCommand?page=2\"}",
                     (unsigned)f->port);
        } else {
            snprintf(text, sizeof text,
                     "{\"value\":[{\"DeviceId\":\"D2\",\"Identity\":\"u\\\\D2\","
                     "\"FirstSyncTime@data.type\":\"System.DateTime\","
                     "\"FirstSyncTime\":\"2022-09-21T08:07:47.0000000+00:00\"}]}");
        }
    }
    pthread_mutex_unlock(&f->mu);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void fake_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                           enum MHD_RequestTerminationCode toe)
{
    struct fake_req *r = *req_cls;
    if (r) {
        free(r->body);
        free(r);
    }
    *req_cls = NULL;
}

static struct eg_bridge *fake_bridge(struct fake *f)
{
    char api[96], tok[128];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->mode = "ok";
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_handler, f,
                            MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, fake_completed,
                            NULL, MHD_OPTION_END);
    assert_non_null(f->d);
    f->port = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(api, sizeof api, "http://127.0.0.1:%u/adminapi/beta/", (unsigned)f->port);
    snprintf(tok, sizeof tok, "http://127.0.0.1:%u/contoso.example/oauth2/v2.0/token",
             (unsigned)f->port);
    struct eg_bridge_rest_opts o = opts();
    o.tenant = "contoso.example";
    o.api_url = api;
    o.token_url = tok;
    struct eg_bridge *b = NULL;
    assert_int_equal(eg_bridge_rest_new(&o, &b), 0);
    return b;
}

static void fake_stop(struct fake *f)
{
    MHD_stop_daemon(f->d);
    json_decref(f->headers);
    pthread_mutex_destroy(&f->mu);
}

static const char *hdr(struct fake *f, const char *name)
{
    const char *v = json_string_value(json_object_get(f->headers, name));
    assert_non_null(v);
    return v;
}

static void test_wire_headers_and_paging(void **state)
{
    struct fake f;
    struct eg_bridge *b = fake_bridge(&f);
    struct eg_bridge_error err;
    assert_int_equal(b->ops->set_mailbox(b->impl, "a@contoso.example", 1, false, NULL, NULL, &err),
                     0);
    pthread_mutex_lock(&f.mu);
    assert_string_equal(f.body, "{\"CmdletInput\":{\"CmdletName\":\"Set-CASMailbox\","
                                "\"Parameters\":{\"Identity\":\"a@contoso.example\","
                                "\"ActiveSyncEnabled\":true}}}");
    assert_string_equal(hdr(&f, "Authorization"), "Bearer tok-1");
    assert_string_equal(hdr(&f, "Content-Type"), "application/json; charset=utf-8");
    assert_string_equal(hdr(&f, "Accept"), "application/json");
    assert_string_equal(hdr(&f, "Accept-Charset"), "UTF-8");
    assert_string_equal(hdr(&f, "X-CmdletName"), "Set-CASMailbox");
    assert_string_equal(hdr(&f, "X-ResponseFormat"), "json");
    assert_string_equal(hdr(&f, "X-ClientApplication"), "ExoManagementModule");
    assert_string_equal(hdr(&f, "X-SerializationLevel"), "Partial");
    assert_string_equal(hdr(&f, "X-AnchorMailbox"),
                        "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@contoso.example");
    assert_string_equal(hdr(&f, "Prefer"), "odata.maxpagesize=1000");
    char conn_id[64];
    snprintf(conn_id, sizeof conn_id, "%s", hdr(&f, "connection-id"));
    assert_int_equal(strlen(conn_id), 36);
    assert_int_equal(strlen(f.request_ids[0]), 36);
    pthread_mutex_unlock(&f.mu);

    /* two pages: the same body to the next link; the same connection-id, a new request id */
    f.mode = "page2";
    struct inv_count c = {0};
    struct eg_inventory_query q = {.mailbox = "a@contoso.example"};
    char *next = NULL;
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, count_dev, &c, &next, &err), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.with_time, 1);
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.invokes, 3);
    assert_string_equal(hdr(&f, "connection-id"), conn_id);
    assert_string_not_equal(f.request_ids[1], f.request_ids[2]);
    assert_string_not_equal(f.request_ids[0], f.request_ids[1]);
    assert_non_null(strstr(f.body, "\"CmdletName\":\"Get-MobileDevice\""));
    assert_int_equal(f.tokens, 1); /* cached */
    pthread_mutex_unlock(&f.mu);

    /* a next link to another host is not followed (the token would go there) */
    f.mode = "foreign";
    assert_true(b->ops->inventory_page(b->impl, &q, NULL, count_dev, &c, &next, &err) < 0);
    assert_int_equal(f.invokes, 4);
    /* a 200 that is not a page */
    f.mode = "garbage";
    assert_true(b->ops->set_mailbox(b->impl, "a@contoso.example", 1, false, NULL, NULL, &err) < 0);
    assert_true(err.transient);
    /* 401 twice: one new token, then permission_denied */
    f.mode = "401";
    int before = f.invokes;
    assert_true(b->ops->set_mailbox(b->impl, "a@contoso.example", 1, false, NULL, NULL, &err) < 0);
    assert_string_equal(err.code, "permission_denied");
    assert_false(err.transient);
    assert_null(strstr(err.message, "tok-"));
    assert_int_equal(f.invokes - before, 2);
    assert_int_equal(f.tokens, 2);
    eg_bridge_free(b);
    fake_stop(&f);
}

int main(int argc, char **argv)
{
    eg_alloc_init();
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_wire_headers_and_paging),
        cmocka_unit_test(test_list_edit),
        cmocka_unit_test(test_wipe_cancel_remove),
        cmocka_unit_test(test_set_mailbox_and_org),
        cmocka_unit_test(test_inventory_paging),
        cmocka_unit_test(test_probe_and_status),
        cmocka_unit_test(test_throttled),
        cmocka_unit_test(test_token_refused_then_renewed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
