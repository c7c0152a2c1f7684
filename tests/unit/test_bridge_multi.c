/* test_bridge_multi.c - the multi-server bridge over scripted fake servers: policies, failover,
 * dead/live states on a test clock, the health check, inventory cursors, status, options,
 * ownership and concurrent use while servers flap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "exchange/bridge_multi.h"

/* ---- the fake server ---- */

enum fmode {
    F_OK,
    F_UNREACHABLE,
    F_TIMEOUT,
    F_NOTFOUND,
    F_PARTIAL /* inventory: one device, then unreachable */
};

struct fake {
    char name[32];
    atomic_int mode;       /* enum fmode for every operation */
    atomic_int probe_mode; /* F_OK or a failure */
    atomic_int calls;      /* operations received (not probes) */
    atomic_int ok_calls;   /* operations that succeeded */
    atomic_int probes;
    int pages;          /* inventory pages it serves */
    int probe_sleep_ms; /* each probe takes this long */
    bool long_message;  /* failures carry a long (multi-byte) message */
    const char *status_kind;
    pthread_mutex_t lock;
    char last_cursor[64]; /* "" = first page */
};

static atomic_int g_destroyed;
static _Atomic int64_t g_now;

static int64_t test_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&g_now);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int fail_as(struct fake *f, int mode, struct eg_bridge_error *err)
{
    char msg[400] = "";
    if (f->long_message)
        for (size_t i = 0; i + 2 < sizeof msg - 1; i += 2)
            memcpy(msg + i, "\xc3\xa9", 2); /* e acute */
    switch (mode) {
    case F_TIMEOUT:
        eg_bridge_error_set(err, EG_BERR_TIMEOUT, true, "%s did not answer in time%s", f->name,
                            msg);
        return EG_ETIMEDOUT;
    case F_NOTFOUND:
        eg_bridge_error_set(err, EG_BERR_MAILBOX_NOT_FOUND, false, "no such mailbox on %s",
                            f->name);
        return EG_ENOTFOUND;
    default:
        eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true, "%s refused the connection%s", f->name,
                            msg);
        return EG_EUNAVAIL;
    }
}

static int fake_do(void *impl, json_t *actions, struct eg_bridge_error *err)
{
    struct fake *f = impl;
    atomic_fetch_add(&f->calls, 1);
    int mode = atomic_load(&f->mode);
    if (mode != F_OK)
        return fail_as(f, mode, err);
    if (actions)
        json_array_append_new(actions, json_pack("{s:s, s:{s:s}}", "cmdlet", "Fake-Op",
                                                 "parameters", "server", f->name));
    atomic_fetch_add(&f->ok_calls, 1);
    return 0;
}

static int fake_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                          struct eg_bridge_error *err)
{
    (void)edit;
    return fake_do(impl, actions, err);
}

static int fake_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                     const char *const *notify, size_t n_notify, json_t *actions,
                     struct eg_bridge_error *err)
{
    (void)mailbox, (void)device_id, (void)account_only, (void)notify, (void)n_notify;
    return fake_do(impl, actions, err);
}

static int fake_device(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                       struct eg_bridge_error *err)
{
    (void)mailbox, (void)device_id;
    return fake_do(impl, actions, err);
}

static int fake_set_mailbox(void *impl, const char *mailbox, int activesync_enabled,
                            bool set_policy, const char *policy, json_t *actions,
                            struct eg_bridge_error *err)
{
    (void)mailbox, (void)activesync_enabled, (void)set_policy, (void)policy;
    return fake_do(impl, actions, err);
}

static int fake_set_org(void *impl, enum eg_access_level level, json_t *actions,
                        struct eg_bridge_error *err)
{
    (void)level;
    return fake_do(impl, actions, err);
}

/* Pages "p0" (cursor NULL), "p1", ... of two devices "<name>-p<k>-<j>" each. */
static int fake_inventory(void *impl, const struct eg_inventory_query *q, const char *cursor,
                          eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                          struct eg_bridge_error *err)
{
    struct fake *f = impl;
    (void)q;
    atomic_fetch_add(&f->calls, 1);
    pthread_mutex_lock(&f->lock);
    snprintf(f->last_cursor, sizeof f->last_cursor, "%s", cursor ? cursor : "");
    pthread_mutex_unlock(&f->lock);
    int mode = atomic_load(&f->mode);
    if (mode != F_OK && mode != F_PARTIAL)
        return fail_as(f, mode, err);
    int page = 0;
    if (cursor && sscanf(cursor, "p%d", &page) != 1) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "bad cursor");
        return EG_EINVAL;
    }
    for (int j = 0; j < 2; j++) {
        char id[64];
        snprintf(id, sizeof id, "%s-p%d-%d", f->name, page, j);
        struct eg_device_record rec = {.mailbox = "m@x.example", .device_id = id};
        int rc = cb(cb_ctx, &rec);
        if (rc)
            return rc;
        if (mode == F_PARTIAL)
            return fail_as(f, F_UNREACHABLE, err);
    }
    *ret_next_cursor = page + 1 < f->pages ? eg_asprintf("p%d", page + 1) : NULL;
    atomic_fetch_add(&f->ok_calls, 1);
    return 0;
}

static int fake_probe(void *impl, struct eg_bridge_error *err)
{
    struct fake *f = impl;
    atomic_fetch_add(&f->probes, 1);
    if (f->probe_sleep_ms)
        sleep_ms(f->probe_sleep_ms);
    int mode = atomic_load(&f->probe_mode);
    return mode == F_OK ? 0 : fail_as(f, mode, err);
}

static json_t *fake_status(void *impl)
{
    struct fake *f = impl;
    json_t *o = json_pack("{s:s, s:s}", "version", "15.2", "server", f->name);
    if (o && f->status_kind)
        json_object_set_new(o, "kind", json_string(f->status_kind));
    return o;
}

static void fake_destroy(void *impl)
{
    (void)impl;
    atomic_fetch_add(&g_destroyed, 1);
}

static const struct eg_bridge_ops fake_ops = {
    .name = "fake",
    .list_edit = fake_list_edit,
    .wipe = fake_wipe,
    .wipe_cancel = fake_device,
    .remove_device = fake_device,
    .set_mailbox = fake_set_mailbox,
    .set_org_default_access = fake_set_org,
    .inventory_page = fake_inventory,
    .probe = fake_probe,
    .status = fake_status,
    .destroy = fake_destroy,
};

/* No probe and no status: counts as live, described as {"kind": "fake-plain"}. */
static const struct eg_bridge_ops plain_ops = {
    .name = "fake-plain",
    .list_edit = fake_list_edit,
    .wipe = fake_wipe,
    .wipe_cancel = fake_device,
    .remove_device = fake_device,
    .set_mailbox = fake_set_mailbox,
    .set_org_default_access = fake_set_org,
    .inventory_page = fake_inventory,
    .destroy = fake_destroy,
};

static void fake_init(struct fake *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memset(&f[i], 0, sizeof f[i]);
        snprintf(f[i].name, sizeof f[i].name, "cas%zu", i + 1);
        f[i].pages = 3;
        f[i].status_kind = "fake";
        pthread_mutex_init(&f[i].lock, NULL);
    }
}

static void fake_fini(struct fake *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pthread_mutex_destroy(&f[i].lock);
}

static struct eg_bridge *fake_bridge(struct fake *f, const struct eg_bridge_ops *ops)
{
    struct eg_bridge *b = eg_calloc(1, sizeof *b);
    assert_non_null(b);
    b->ops = ops;
    b->impl = f;
    return b;
}

static char g_names[EG_MAX_SERVERS_PER_TARGET + 1][256];
static const char *g_name_ptrs[EG_MAX_SERVERS_PER_TARGET + 1];

/* A multi bridge over f[0..n-1] named https://casN.example/PowerShell, test clock at 0, health
 * thread at its longest interval (rounds only through eg_bridge_multi_check_now). */
static struct eg_bridge *make_multi(struct fake *f, size_t n, const struct eg_bridge_multi_opts *o)
{
    struct eg_bridge *servers[EG_MAX_SERVERS_PER_TARGET];
    struct eg_bridge *m = NULL;
    for (size_t i = 0; i < n; i++) {
        servers[i] = fake_bridge(&f[i], &fake_ops);
        snprintf(g_names[i], sizeof g_names[i], "https://cas%zu.example/PowerShell", i + 1);
        g_name_ptrs[i] = g_names[i];
    }
    assert_int_equal(eg_bridge_multi_new(o, servers, g_name_ptrs, n, &m), 0);
    atomic_store(&g_now, 0);
    eg_bridge_multi_set_clock_for_test(m, test_clock, NULL);
    return m;
}

static struct eg_bridge_multi_opts opts(enum eg_multi_policy p, unsigned dead_threshold)
{
    struct eg_bridge_multi_opts o;
    eg_bridge_multi_opts_default(&o);
    o.policy = p;
    o.dead_threshold = dead_threshold;
    o.health_interval_s = EG_MULTI_MAX_HEALTH_INTERVAL_S;
    return o;
}

static const struct eg_list_edit g_edit = {.mailbox = "m@x.example"};

/* One list edit; returns its rc and the server that did it ("" if none). */
static int edit(struct eg_bridge *m, char *served, size_t len, struct eg_bridge_error *err)
{
    json_t *a = json_array();
    memset(err, 0, sizeof *err);
    int rc = m->ops->list_edit(m->impl, &g_edit, a, err);
    json_t *srv = json_object_get(json_object_get(json_array_get(a, 0), "parameters"), "server");
    snprintf(served, len, "%s", json_is_string(srv) ? json_string_value(srv) : "");
    if (rc == 0)
        assert_int_equal(json_array_size(a), 1);
    json_decref(a);
    return rc;
}

static json_t *server_status(struct eg_bridge *m, size_t i)
{
    json_t *st = eg_bridge_status(m);
    assert_non_null(st);
    json_t *s = json_incref(json_array_get(json_object_get(st, "servers"), i));
    json_decref(st);
    assert_non_null(s);
    return s;
}

static json_int_t server_int(struct eg_bridge *m, size_t i, const char *key)
{
    json_t *s = server_status(m, i);
    json_t *v = json_object_get(s, key);
    assert_true(json_is_integer(v));
    json_int_t r = json_integer_value(v);
    json_decref(s);
    return r;
}

/* ---- policies and options ---- */

static void test_policy_names(void **state)
{
    (void)state;
    enum eg_multi_policy p = EG_MULTI_PRIORITY;
    assert_int_equal(eg_multi_policy_parse("round_robin", &p), 0);
    assert_int_equal(p, EG_MULTI_ROUND_ROBIN);
    assert_int_equal(eg_multi_policy_parse("priority", &p), 0);
    assert_int_equal(p, EG_MULTI_PRIORITY);
    assert_int_equal(eg_multi_policy_parse("Priority", &p), EG_EINVAL);
    assert_int_equal(eg_multi_policy_parse("", &p), EG_EINVAL);
    assert_int_equal(eg_multi_policy_parse(NULL, &p), EG_EINVAL);
    assert_string_equal(eg_multi_policy_name(EG_MULTI_ROUND_ROBIN), "round_robin");
    assert_string_equal(eg_multi_policy_name(EG_MULTI_PRIORITY), "priority");
    assert_string_equal(eg_multi_policy_name((enum eg_multi_policy)9), "?");
}

static void check_msg(const struct eg_bridge_multi_opts *o, const char *want)
{
    char why[128];
    memset(why, 'x', sizeof why);
    assert_int_equal(eg_bridge_multi_opts_check(o, why, sizeof why), EG_EINVAL);
    assert_string_equal(why, want);
}

static void test_options_validation(void **state)
{
    (void)state;
    struct eg_bridge_multi_opts o, d;
    char why[128] = "stale";
    eg_bridge_multi_opts_default(&d);
    assert_int_equal(d.policy, EG_MULTI_PRIORITY);
    assert_int_equal(d.dead_threshold, 3);
    assert_int_equal(d.failure_window_ms, 60000);
    assert_int_equal(d.dead_time_ms, 30000);
    assert_int_equal(d.health_interval_s, 60);
    assert_int_equal(d.live_threshold, 3);
    assert_int_equal(eg_bridge_multi_opts_check(&d, why, sizeof why), 0);
    assert_string_equal(why, "");

    o = d, o.health_interval_s = 5;
    check_msg(&o, "health_interval_s is 5; it must be between 10 and 600");
    o = d, o.health_interval_s = 601;
    check_msg(&o, "health_interval_s is 601; it must be between 10 and 600");
    o = d, o.dead_threshold = 0;
    check_msg(&o, "dead_threshold is 0; it must be between 1 and 100");
    o = d, o.dead_threshold = 101;
    check_msg(&o, "dead_threshold is 101; it must be between 1 and 100");
    o = d, o.failure_window_ms = 999;
    check_msg(&o, "failure_window_ms is 999; it must be between 1000 and 3600000");
    o = d, o.failure_window_ms = -1;
    check_msg(&o, "failure_window_ms is -1; it must be between 1000 and 3600000");
    o = d, o.dead_time_ms = 3600001;
    check_msg(&o, "dead_time_ms is 3600001; it must be between 1000 and 3600000");
    o = d, o.live_threshold = 0;
    check_msg(&o, "live_threshold is 0; it must be between 1 and 10");
    o = d, o.live_threshold = 11;
    check_msg(&o, "live_threshold is 11; it must be between 1 and 10");
    o = d, o.policy = (enum eg_multi_policy)7;
    check_msg(&o, "policy is 7; it must be priority or round_robin");
    o = d, o.health_interval_s = 10, o.live_threshold = 10, o.dead_threshold = 100;
    assert_int_equal(eg_bridge_multi_opts_check(&o, NULL, 0), 0);
    o = d, o.live_threshold = 0;
    assert_int_equal(eg_bridge_multi_opts_check(&o, NULL, 0), EG_EINVAL);
}

/* Every failing constructor still takes (and frees) every server. */
static void test_new_rejects_and_owns(void **state)
{
    (void)state;
    struct fake f[EG_MAX_SERVERS_PER_TARGET + 1];
    struct eg_bridge *servers[EG_MAX_SERVERS_PER_TARGET + 1];
    struct eg_bridge *m = NULL;
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 3);
    const char *names[EG_MAX_SERVERS_PER_TARGET + 1];
    fake_init(f, EG_MAX_SERVERS_PER_TARGET + 1);
    for (size_t i = 0; i <= EG_MAX_SERVERS_PER_TARGET; i++)
        names[i] = "https://cas.example/PowerShell";

    int before = atomic_load(&g_destroyed);
    struct eg_bridge_multi_opts bad = o;
    bad.health_interval_s = 5;
    for (size_t i = 0; i < 2; i++)
        servers[i] = fake_bridge(&f[i], &fake_ops);
    assert_int_equal(eg_bridge_multi_new(&bad, servers, names, 2, &m), EG_EINVAL);
    assert_null(m);
    assert_int_equal(atomic_load(&g_destroyed), before + 2);

    for (size_t i = 0; i <= EG_MAX_SERVERS_PER_TARGET; i++)
        servers[i] = fake_bridge(&f[i], &fake_ops);
    assert_int_equal(eg_bridge_multi_new(&o, servers, names, EG_MAX_SERVERS_PER_TARGET + 1, &m),
                     EG_EINVAL);
    assert_int_equal(atomic_load(&g_destroyed), before + 2 + EG_MAX_SERVERS_PER_TARGET + 1);

    assert_int_equal(eg_bridge_multi_new(&o, servers, names, 0, &m), EG_EINVAL);
    assert_int_equal(eg_bridge_multi_new(NULL, NULL, names, 1, &m), EG_EINVAL);

    before = atomic_load(&g_destroyed);
    servers[0] = fake_bridge(&f[0], &fake_ops);
    servers[1] = NULL;
    servers[2] = fake_bridge(&f[2], &fake_ops);
    assert_int_equal(eg_bridge_multi_new(&o, servers, names, 3, &m), EG_EINVAL);
    assert_int_equal(atomic_load(&g_destroyed), before + 2);

    servers[0] = fake_bridge(&f[0], &fake_ops);
    assert_int_equal(eg_bridge_multi_new(&o, servers, NULL, 1, &m), EG_EINVAL);
    assert_int_equal(atomic_load(&g_destroyed), before + 3);
    assert_null(m);

    /* A multi bridge's helpers ignore other backends. */
    struct eg_bridge *plain = fake_bridge(&f[0], &plain_ops);
    eg_bridge_multi_check_now(plain);
    assert_int_equal(eg_bridge_multi_live(plain), 0);
    assert_int_equal(atomic_load(&f[0].probes), 0);
    eg_bridge_free(plain);
    fake_fini(f, EG_MAX_SERVERS_PER_TARGET + 1);
}

static void test_new_out_of_memory(void **state)
{
    (void)state;
    struct fake f[2];
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 3);
    const char *names[2] = {"https://a:pw@cas1.example/PowerShell", "https://cas2.example/x"};
    fake_init(f, 2);
    int rc = EG_ENOMEM;
    for (long k = 0; rc == EG_ENOMEM && k < 100; k++) {
        struct eg_bridge *servers[2] = {fake_bridge(&f[0], &fake_ops),
                                        fake_bridge(&f[1], &fake_ops)};
        struct eg_bridge *m = NULL;
        int before = atomic_load(&g_destroyed);
        eg_alloc_fail_after(k);
        rc = eg_bridge_multi_new(&o, servers, names, 2, &m);
        eg_alloc_fail_after(-1);
        if (rc == EG_ENOMEM) {
            assert_null(m);
            assert_int_equal(atomic_load(&g_destroyed), before + 2);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(eg_bridge_multi_live(m), 2);
            eg_bridge_free(m);
            assert_int_equal(atomic_load(&g_destroyed), before + 2);
        }
    }
    assert_int_equal(rc, 0);
    fake_fini(f, 2);
}

/* ---- routing ---- */

static void test_priority_uses_first_live(void **state)
{
    (void)state;
    struct fake f[3];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 3);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 3);
    struct eg_bridge *m = make_multi(f, 3, &o);

    for (int i = 0; i < 5; i++) {
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_equal(served, "cas1");
    }
    json_t *a = json_array();
    const char *notify[] = {"it@x.example"};
    assert_int_equal(m->ops->wipe(m->impl, "m@x.example", "D1", true, notify, 1, a, &err), 0);
    assert_int_equal(m->ops->wipe_cancel(m->impl, "m@x.example", "D1", a, &err), 0);
    assert_int_equal(m->ops->remove_device(m->impl, "m@x.example", "D1", a, &err), 0);
    assert_int_equal(m->ops->set_mailbox(m->impl, "m@x.example", 1, true, "P", a, &err), 0);
    assert_int_equal(m->ops->set_org_default_access(m->impl, EG_ACCESS_BLOCK, a, &err), 0);
    assert_int_equal(json_array_size(a), 5);
    json_decref(a);
    assert_int_equal(atomic_load(&f[0].calls), 10);
    assert_int_equal(atomic_load(&f[1].calls) + atomic_load(&f[2].calls), 0);

    /* cas1 goes down: every call fails over to cas2 until cas1 is dead, then cas1 is skipped. */
    atomic_store(&f[0].mode, F_UNREACHABLE);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_equal(served, "cas2");
    }
    assert_int_equal(eg_bridge_multi_live(m), 2);
    assert_int_equal(atomic_load(&f[0].calls), 13);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_equal(served, "cas2");
    }
    assert_int_equal(atomic_load(&f[0].calls), 13);
    assert_int_equal(atomic_load(&f[1].calls), 7);
    assert_int_equal(atomic_load(&f[2].calls), 0);
    eg_bridge_free(m);
    fake_fini(f, 3);
}

static void test_round_robin_alternates(void **state)
{
    (void)state;
    struct fake f[3];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 3);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 2);
    struct eg_bridge *m = make_multi(f, 3, &o);

    const char *want[] = {"cas1", "cas2", "cas3", "cas1", "cas2", "cas3"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_equal(served, want[i]);
    }
    /* cas2 dies (its turns fail over); then calls alternate between cas1 and cas3. */
    atomic_store(&f[1].mode, F_TIMEOUT);
    for (int i = 0; i < 10 && eg_bridge_multi_live(m) == 3; i++)
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_int_equal(eg_bridge_multi_live(m), 2);
    int cas2_calls = atomic_load(&f[1].calls);
    char prev[32] = "";
    int n1 = 0, n3 = 0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_not_equal(served, prev);
        n1 += strcmp(served, "cas1") == 0;
        n3 += strcmp(served, "cas3") == 0;
        snprintf(prev, sizeof prev, "%s", served);
    }
    assert_int_equal(n1, 4);
    assert_int_equal(n3, 4);
    assert_int_equal(atomic_load(&f[1].calls), cas2_calls);
    eg_bridge_free(m);
    fake_fini(f, 3);
}

static void test_failover_within_one_call(void **state)
{
    (void)state;
    struct fake f[3];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 3);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 100);
    struct eg_bridge *m = make_multi(f, 3, &o);

    atomic_store(&f[0].mode, F_UNREACHABLE);
    atomic_store(&f[1].mode, F_TIMEOUT);
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_string_equal(served, "cas3");
    assert_int_equal(atomic_load(&f[0].calls), 1);
    assert_int_equal(atomic_load(&f[1].calls), 1);
    assert_int_equal(atomic_load(&f[2].calls), 1);

    /* Every server fails: each is tried exactly once, the last server-level error comes back. */
    atomic_store(&f[2].mode, F_UNREACHABLE);
    assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
    assert_string_equal(err.code, EG_BERR_UNREACHABLE);
    assert_true(err.transient);
    assert_string_equal(err.message, "cas3 refused the connection");
    assert_int_equal(atomic_load(&f[0].calls), 2);
    assert_int_equal(atomic_load(&f[1].calls), 2);
    assert_int_equal(atomic_load(&f[2].calls), 2);

    /* A request-level error on the second server ends the call there. */
    atomic_store(&f[1].mode, F_NOTFOUND);
    assert_int_equal(edit(m, served, sizeof served, &err), EG_ENOTFOUND);
    assert_string_equal(err.code, EG_BERR_MAILBOX_NOT_FOUND);
    assert_int_equal(atomic_load(&f[2].calls), 2);
    assert_int_equal(server_int(m, 0, "failures_in_window"), 3);
    assert_int_equal(server_int(m, 1, "failures_in_window"), 2);
    eg_bridge_free(m);
    fake_fini(f, 3);
}

static void test_request_errors_pass_through(void **state)
{
    (void)state;
    struct fake f[2];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 2);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 1);
    struct eg_bridge *m = make_multi(f, 2, &o);

    atomic_store(&f[0].mode, F_NOTFOUND);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(edit(m, served, sizeof served, &err), EG_ENOTFOUND);
        assert_string_equal(err.code, EG_BERR_MAILBOX_NOT_FOUND);
        assert_false(err.transient);
        assert_string_equal(err.message, "no such mailbox on cas1");
    }
    assert_int_equal(atomic_load(&f[0].calls), 10);
    assert_int_equal(atomic_load(&f[1].calls), 0);
    assert_int_equal(eg_bridge_multi_live(m), 2);
    json_t *s = server_status(m, 0);
    assert_true(json_is_null(json_object_get(s, "last_error")));
    assert_int_equal(json_integer_value(json_object_get(s, "failures_in_window")), 0);
    json_decref(s);
    eg_bridge_free(m);
    fake_fini(f, 2);
}

/* ---- dead and live ---- */

static void test_dead_only_within_window(void **state)
{
    (void)state;
    struct fake f[2];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 2);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 3);
    struct eg_bridge *m = make_multi(f, 2, &o); /* window 60 s, dead time 30 s */

    atomic_store(&f[0].mode, F_UNREACHABLE);
    int64_t spread[] = {0, 35000, 70000}; /* three failures over more than the window */
    for (int i = 0; i < 3; i++) {
        atomic_store(&g_now, spread[i]);
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_equal(served, "cas2");
    }
    assert_int_equal(eg_bridge_multi_live(m), 2);
    assert_int_equal(server_int(m, 0, "failures_in_window"), 2);

    atomic_store(&g_now, 80000); /* 35 s, 70 s, 80 s: three within 60 s */
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_int_equal(eg_bridge_multi_live(m), 1);
    json_t *s = server_status(m, 0);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "unreachable");
    json_decref(s);

    /* Skipped while dead, also after its dead time until probes revive it. */
    atomic_store(&f[0].mode, F_OK);
    for (int64_t t = 80000; t <= 200000; t += 40000) {
        atomic_store(&g_now, t);
        assert_int_equal(edit(m, served, sizeof served, &err), 0);
        assert_string_equal(served, "cas2");
    }
    assert_int_equal(atomic_load(&f[0].calls), 4);
    eg_bridge_free(m);
    fake_fini(f, 2);
}

static void test_revived_after_live_threshold_probes(void **state)
{
    (void)state;
    struct fake f[2];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 2);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 2);
    o.dead_time_ms = 30000;
    o.live_threshold = 3;
    struct eg_bridge *m = make_multi(f, 2, &o);

    atomic_store(&f[0].mode, F_UNREACHABLE);
    atomic_store(&f[0].probe_mode, F_UNREACHABLE);
    atomic_store(&g_now, 1000);
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_int_equal(eg_bridge_multi_live(m), 1);

    atomic_store(&f[0].mode, F_OK);
    atomic_store(&f[0].probe_mode, F_OK);
    atomic_store(&g_now, 11000); /* within its dead time: successes do not count */
    eg_bridge_multi_check_now(m);
    eg_bridge_multi_check_now(m);
    eg_bridge_multi_check_now(m);
    assert_int_equal(eg_bridge_multi_live(m), 1);
    assert_int_equal(server_int(m, 0, "consecutive_probe_successes"), 0);
    assert_int_equal(atomic_load(&f[0].probes), 3);
    assert_int_equal(atomic_load(&f[1].probes), 3); /* every server is probed each round */

    atomic_store(&g_now, 31000);
    eg_bridge_multi_check_now(m);
    eg_bridge_multi_check_now(m);
    assert_int_equal(eg_bridge_multi_live(m), 1);
    assert_int_equal(server_int(m, 0, "consecutive_probe_successes"), 2);
    atomic_store(&f[0].probe_mode, F_TIMEOUT); /* a failure starts the count again */
    eg_bridge_multi_check_now(m);
    assert_int_equal(server_int(m, 0, "consecutive_probe_successes"), 0);
    atomic_store(&f[0].probe_mode, F_OK);
    eg_bridge_multi_check_now(m);
    eg_bridge_multi_check_now(m);
    assert_int_equal(eg_bridge_multi_live(m), 1);
    eg_bridge_multi_check_now(m);
    assert_int_equal(eg_bridge_multi_live(m), 2);
    json_t *s = server_status(m, 0);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "reachable");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s, "last_error"), "code")),
        EG_BERR_TIMEOUT);
    json_decref(s);

    /* Back in front; its old failures are forgotten, so one new failure does not kill it. */
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_string_equal(served, "cas1");
    atomic_store(&f[0].mode, F_UNREACHABLE);
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_string_equal(served, "cas2");
    assert_int_equal(eg_bridge_multi_live(m), 2);
    eg_bridge_free(m);
    fake_fini(f, 2);
}

static void test_probe_failures_count(void **state)
{
    (void)state;
    struct fake f[3];
    fake_init(f, 3);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 3);
    struct eg_bridge *m = make_multi(f, 3, &o);

    atomic_store(&f[1].probe_mode, F_UNREACHABLE);
    eg_bridge_multi_check_now(m);
    eg_bridge_multi_check_now(m);
    assert_int_equal(eg_bridge_multi_live(m), 3);
    assert_int_equal(server_int(m, 1, "failures_in_window"), 2);
    assert_int_equal(server_int(m, 0, "consecutive_probe_successes"), 2);
    eg_bridge_multi_check_now(m);
    assert_int_equal(eg_bridge_multi_live(m), 2);
    json_t *s = server_status(m, 1);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "unreachable");
    json_decref(s);
    s = server_status(m, 0);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "reachable");
    json_decref(s);
    assert_int_equal(atomic_load(&f[0].calls) + atomic_load(&f[1].calls), 0);
    eg_bridge_free(m);
    fake_fini(f, 3);
}

static int no_device_cb(void *ctx, const struct eg_device_record *dev)
{
    (void)ctx, (void)dev;
    fail_msg("no device expected");
    return -1;
}

static void test_no_live_server_fails_at_once(void **state)
{
    (void)state;
    struct fake f[EG_MAX_SERVERS_PER_TARGET];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 2);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 1);
    struct eg_bridge *m = make_multi(f, 2, &o);

    atomic_store(&f[0].mode, F_UNREACHABLE);
    atomic_store(&f[1].mode, F_TIMEOUT);
    assert_int_equal(edit(m, served, sizeof served, &err), EG_ETIMEDOUT);
    assert_int_equal(eg_bridge_multi_live(m), 0);
    int calls = atomic_load(&f[0].calls) + atomic_load(&f[1].calls);
    assert_int_equal(calls, 2);

    assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
    assert_string_equal(err.code, EG_BERR_UNREACHABLE);
    assert_true(err.transient);
    assert_non_null(strstr(err.message, "https://cas1.example/PowerShell: exchange_unreachable "
                                        "(cas1 refused the connection)"));
    assert_non_null(
        strstr(err.message, "https://cas2.example/PowerShell: timeout (cas2 did not answer"));
    char *next = NULL;
    memset(&err, 0, sizeof err);
    assert_int_equal(m->ops->inventory_page(m->impl, NULL, NULL, no_device_cb, NULL, &next, &err),
                     EG_EUNAVAIL);
    assert_string_equal(err.code, EG_BERR_UNREACHABLE);
    assert_null(next);
    assert_int_equal(atomic_load(&f[0].calls) + atomic_load(&f[1].calls), calls);
    eg_bridge_free(m);
    fake_fini(f, 2);

    /* Long multi-byte messages are clipped on character boundaries, whatever the name length. */
    for (int k = 0; k < 4; k++) {
        fake_init(f, 2);
        struct eg_bridge *two[2];
        for (size_t i = 0; i < 2; i++) {
            f[i].long_message = true;
            atomic_store(&f[i].mode, F_UNREACHABLE);
            two[i] = fake_bridge(&f[i], &fake_ops);
            snprintf(g_names[i], sizeof g_names[i], "https://cas%zu%.*s.example/PowerShell", i,
                     k * (int)i, "xxxx");
            g_name_ptrs[i] = g_names[i];
        }
        assert_int_equal(eg_bridge_multi_new(&o, two, g_name_ptrs, 2, &m), 0);
        assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
        assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
        assert_non_null(strstr(err.message, "..."));
        json_t *j = json_string(err.message);
        assert_non_null(j);
        json_decref(j);
        eg_bridge_free(m);
        fake_fini(f, 2);
    }

    /* Sixteen servers with long names and long multi-byte messages: bounded, valid UTF-8. */
    fake_init(f, EG_MAX_SERVERS_PER_TARGET);
    struct eg_bridge *servers[EG_MAX_SERVERS_PER_TARGET];
    for (size_t i = 0; i < EG_MAX_SERVERS_PER_TARGET; i++) {
        f[i].long_message = true;
        atomic_store(&f[i].mode, F_UNREACHABLE);
        servers[i] = fake_bridge(&f[i], &fake_ops);
        snprintf(g_names[i], sizeof g_names[i], "https://cas%zu.%0200d.example/PowerShell", i, 0);
        g_name_ptrs[i] = g_names[i];
    }
    assert_int_equal(eg_bridge_multi_new(&o, servers, g_name_ptrs, EG_MAX_SERVERS_PER_TARGET, &m),
                     0);
    assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
    assert_int_equal(eg_bridge_multi_live(m), 0);
    assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
    assert_true(strlen(err.message) < sizeof err.message);
    assert_non_null(strstr(err.message, "no Exchange server of this target is reachable: "));
    assert_non_null(strstr(err.message, "https://cas0."));
    json_t *js = json_string(err.message);
    assert_non_null(js); /* clipped on character boundaries */
    json_decref(js);
    json_t *st = eg_bridge_status(m); /* long messages also make valid status JSON */
    assert_non_null(st);
    json_decref(st);
    eg_bridge_free(m);
    fake_fini(f, EG_MAX_SERVERS_PER_TARGET);
}

/* ---- inventory ---- */

struct collect {
    int n;
    char ids[16][64];
};

static int collect_cb(void *ctx, const struct eg_device_record *dev)
{
    struct collect *c = ctx;
    if (c->n < 16)
        snprintf(c->ids[c->n], sizeof c->ids[0], "%s", dev->device_id);
    c->n++;
    return 0;
}

static int page(struct eg_bridge *m, const char *cursor, struct collect *c, char **next,
                struct eg_bridge_error *err)
{
    struct eg_inventory_query q = {.full = true, .page_size = 2};
    *next = NULL;
    memset(err, 0, sizeof *err);
    return m->ops->inventory_page(m->impl, &q, cursor, collect_cb, c, next, err);
}

static void test_inventory_cursor_routing(void **state)
{
    (void)state;
    struct fake f[2];
    struct eg_bridge_error err;
    struct collect c = {0};
    char *next = NULL, served[32];
    fake_init(f, 2);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 1);
    struct eg_bridge *m = make_multi(f, 2, &o);

    assert_int_equal(page(m, NULL, &c, &next, &err), 0);
    assert_string_equal(next, "0:p1");
    /* A round-robin turn in between does not move the inventory off its server. */
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_string_equal(served, "cas2");
    char *cur = next;
    assert_int_equal(page(m, cur, &c, &next, &err), 0);
    eg_free(cur);
    assert_string_equal(f[0].last_cursor, "p1");
    assert_string_equal(next, "0:p2");
    cur = next;
    assert_int_equal(page(m, cur, &c, &next, &err), 0);
    eg_free(cur);
    assert_null(next);
    assert_int_equal(c.n, 6);
    assert_string_equal(c.ids[0], "cas1-p0-0");
    assert_string_equal(c.ids[5], "cas1-p2-1");
    assert_int_equal(atomic_load(&f[0].calls), 3);
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_string_equal(served, "cas1");

    c.n = 0;
    assert_int_equal(page(m, NULL, &c, &next, &err), 0);
    assert_string_equal(c.ids[0], "cas2-p0-0");
    assert_string_equal(next, "1:p1");
    eg_free(next);

    const char *bad[] = {"p1", "2:p1", ":p1", "01:p1", "-1:p1", "", "1p1", "1000:p1"};
    int calls = atomic_load(&f[0].calls) + atomic_load(&f[1].calls);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(page(m, bad[i], &c, &next, &err), EG_EINVAL);
        assert_string_equal(err.code, EG_BERR_INVALID_ARGUMENT);
        assert_null(next);
    }
    assert_int_equal(atomic_load(&f[0].calls) + atomic_load(&f[1].calls), calls);

    /* The owner of a cursor fails: no failover (the cursor means nothing elsewhere). */
    atomic_store(&f[1].mode, F_UNREACHABLE);
    assert_int_equal(page(m, "1:p1", &c, &next, &err), EG_EUNAVAIL);
    assert_string_equal(f[1].last_cursor, "p1");
    assert_int_equal(atomic_load(&f[0].calls), 4);
    assert_int_equal(eg_bridge_multi_live(m), 1);
    /* ... and once it is dead, its cursors fail at once. */
    calls = atomic_load(&f[1].calls);
    assert_int_equal(page(m, "1:p1", &c, &next, &err), EG_EUNAVAIL);
    assert_string_equal(err.code, EG_BERR_UNREACHABLE);
    assert_true(err.transient);
    assert_non_null(strstr(err.message, "https://cas2.example/PowerShell"));
    assert_int_equal(atomic_load(&f[1].calls), calls);
    /* A first page fails over. */
    c.n = 0;
    assert_int_equal(page(m, NULL, &c, &next, &err), 0);
    assert_string_equal(next, "0:p1");
    eg_free(next);
    eg_bridge_free(m);

    /* A first page fails over only if no device was delivered yet. */
    fake_fini(f, 2);
    fake_init(f, 2);
    o = opts(EG_MULTI_PRIORITY, 3);
    m = make_multi(f, 2, &o);
    atomic_store(&f[0].mode, F_UNREACHABLE);
    c.n = 0;
    assert_int_equal(page(m, NULL, &c, &next, &err), 0);
    assert_string_equal(next, "1:p1");
    assert_string_equal(c.ids[0], "cas2-p0-0");
    eg_free(next);
    atomic_store(&f[0].mode, F_PARTIAL);
    c.n = 0;
    calls = atomic_load(&f[1].calls);
    assert_int_equal(page(m, NULL, &c, &next, &err), EG_EUNAVAIL);
    assert_int_equal(c.n, 1);
    assert_null(next);
    assert_int_equal(atomic_load(&f[1].calls), calls);
    assert_int_equal(server_int(m, 0, "failures_in_window"), 2);
    eg_bridge_free(m);
    fake_fini(f, 2);
}

/* ---- status ---- */

static void test_status_contents(void **state)
{
    (void)state;
    struct fake f[2];
    struct eg_bridge_error err;
    char served[32];
    fake_init(f, 2);
    struct eg_bridge *servers[2] = {fake_bridge(&f[0], &fake_ops), fake_bridge(&f[1], &plain_ops)};
    const char *names[2] = {"https://admin:S3cret@cas1.example/PowerShell",
                            "https://cas2.example/PowerShell"};
    struct eg_bridge *m = NULL;
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 3);
    assert_int_equal(eg_bridge_multi_new(&o, servers, names, 2, &m), 0);

    atomic_store(&f[0].mode, F_UNREACHABLE);
    assert_int_equal(edit(m, served, sizeof served, &err), 0);
    assert_string_equal(served, "cas2");
    atomic_store(&f[1].mode, F_NOTFOUND);

    json_t *st = eg_bridge_status(m);
    assert_non_null(st);
    assert_string_equal(json_string_value(json_object_get(st, "kind")), "fake");
    assert_string_equal(json_string_value(json_object_get(st, "version")), "15.2");
    assert_string_equal(json_string_value(json_object_get(st, "policy")), "round_robin");
    assert_int_equal(json_integer_value(json_object_get(st, "live")), 2);
    json_t *sv = json_object_get(st, "servers");
    assert_int_equal(json_array_size(sv), 2);
    json_t *s0 = json_array_get(sv, 0), *s1 = json_array_get(sv, 1);
    assert_string_equal(json_string_value(json_object_get(s0, "url")),
                        "https://cas1.example/PowerShell");
    assert_string_equal(json_string_value(json_object_get(s0, "state")), "reachable");
    json_t *le = json_object_get(s0, "last_error");
    assert_string_equal(json_string_value(json_object_get(le, "code")), EG_BERR_UNREACHABLE);
    assert_string_equal(json_string_value(json_object_get(le, "message")),
                        "cas1 refused the connection");
    const char *at = json_string_value(json_object_get(le, "at"));
    assert_non_null(at);
    assert_int_equal(strlen(at), 24); /* 2026-11-22T10:00:00.123Z */
    assert_int_equal(at[10], 'T');
    assert_int_equal(at[23], 'Z');
    assert_int_equal(json_integer_value(json_object_get(s0, "failures_in_window")), 1);
    assert_int_equal(json_integer_value(json_object_get(s0, "consecutive_probe_successes")), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s0, "backend"), "server")), "cas1");
    assert_string_equal(json_string_value(json_object_get(s1, "url")),
                        "https://cas2.example/PowerShell");
    assert_true(json_is_null(json_object_get(s1, "last_error")));
    char *bs = json_dumps(json_object_get(s1, "backend"), JSON_COMPACT);
    assert_string_equal(bs, "{\"kind\":\"fake-plain\"}");
    eg_free(bs);
    char *all = json_dumps(st, JSON_COMPACT);
    assert_null(strstr(all, "S3cret"));
    assert_null(strstr(all, "admin"));
    eg_free(all);
    json_decref(st);

    /* Dead: unreachable, and "live" drops; the name in errors has no user info either. */
    assert_int_equal(edit(m, served, sizeof served, &err), EG_ENOTFOUND);
    atomic_store(&f[1].mode, F_UNREACHABLE);
    for (int i = 0; i < 8 && eg_bridge_multi_live(m) > 0; i++)
        (void)edit(m, served, sizeof served, &err);
    assert_int_equal(eg_bridge_multi_live(m), 0);
    assert_int_equal(edit(m, served, sizeof served, &err), EG_EUNAVAIL);
    assert_null(strstr(err.message, "S3cret"));
    assert_non_null(strstr(err.message, "https://cas1.example/PowerShell"));
    st = eg_bridge_status(m);
    assert_int_equal(json_integer_value(json_object_get(st, "live")), 0);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(st, "servers"), 0), "state")),
                        "unreachable");
    json_decref(st);
    eg_bridge_free(m);

    /* The first server's status has no kind: "multi". */
    fake_fini(f, 2);
    fake_init(f, 2);
    f[0].status_kind = NULL;
    m = make_multi(f, 2, &o);
    st = eg_bridge_status(m);
    assert_string_equal(json_string_value(json_object_get(st, "kind")), "multi");
    json_decref(st);
    eg_bridge_free(m);
    fake_fini(f, 2);
}

/* ---- the health thread ---- */

static void test_free_while_health_thread_runs(void **state)
{
    (void)state;
    struct fake f[2];
    fake_init(f, 2);
    f[0].probe_sleep_ms = f[1].probe_sleep_ms = 2;
    struct eg_bridge_multi_opts o = opts(EG_MULTI_PRIORITY, 3);
    o.health_interval_s = 10;
    struct eg_bridge *m = make_multi(f, 2, &o);
    eg_bridge_multi_set_clock_for_test(m, NULL, NULL);
    assert_int_equal(atomic_load(&f[0].probes), 0);

    /* The thread runs rounds on its own: wait (bounded) until it has done a few. */
    eg_bridge_multi_set_interval_for_test(m, 3);
    for (int i = 0; i < 10000 && atomic_load(&f[1].probes) < 3; i++)
        sleep_ms(1);
    assert_true(atomic_load(&f[1].probes) >= 3);
    /* Its probe failures count: three within the window mark cas1 dead. */
    atomic_store(&f[0].probe_mode, F_UNREACHABLE);
    for (int i = 0; i < 10000 && eg_bridge_multi_live(m) == 2; i++)
        sleep_ms(1);
    assert_int_equal(eg_bridge_multi_live(m), 1);

    int before = atomic_load(&g_destroyed);
    eg_bridge_free(m); /* stops the thread, mid-probe or waiting */
    assert_int_equal(atomic_load(&g_destroyed), before + 2);
    int probes = atomic_load(&f[0].probes) + atomic_load(&f[1].probes);
    sleep_ms(20);
    assert_int_equal(atomic_load(&f[0].probes) + atomic_load(&f[1].probes), probes);

    /* Freed right after creation, with the thread in its first (long) wait. */
    fake_fini(f, 2);
    fake_init(f, 2);
    m = make_multi(f, 2, &o);
    eg_bridge_free(m);
    assert_int_equal(atomic_load(&f[0].probes) + atomic_load(&f[1].probes), 0);
    fake_fini(f, 2);
}

/* ---- concurrency ---- */

#define N_WORKERS     6
#define CALLS_PER_WKR 400 /* at least; workers go on until the flapper is done */
#define N_FLAP        4
#define FLAP_ROUNDS   300

struct shared {
    struct eg_bridge *m;
    struct fake *f;
    atomic_int ok;
    atomic_int calls; /* made by all workers so far */
    atomic_int bad;
    atomic_bool flap_done;
};

static int count_cb(void *ctx, const struct eg_device_record *dev)
{
    (void)dev;
    (void)ctx;
    return 0;
}

static void *worker(void *arg)
{
    struct shared *sh = arg;
    for (int i = 0; i < CALLS_PER_WKR || !atomic_load(&sh->flap_done); i++) {
        struct eg_bridge_error err;
        json_t *a = json_array();
        int rc;
        memset(&err, 0, sizeof err);
        if (i % 3 == 0) {
            rc = sh->m->ops->list_edit(sh->m->impl, &g_edit, a, &err);
        } else if (i % 3 == 1) {
            rc = sh->m->ops->wipe(sh->m->impl, "m@x.example", "D", false, NULL, 0, a, &err);
        } else {
            char *next = NULL;
            rc = sh->m->ops->inventory_page(sh->m->impl, NULL, NULL, count_cb, NULL, &next, &err);
            if (rc == 0 && (!next || next[1] != ':'))
                atomic_fetch_add(&sh->bad, 1);
            eg_free(next);
        }
        if (rc == 0) {
            atomic_fetch_add(&sh->ok, 1);
            if (i % 3 != 2 && json_array_size(a) != 1)
                atomic_fetch_add(&sh->bad, 1);
        } else if (!((rc == EG_EUNAVAIL && strcmp(err.code, EG_BERR_UNREACHABLE) == 0) ||
                     (rc == EG_ETIMEDOUT && strcmp(err.code, EG_BERR_TIMEOUT) == 0))) {
            atomic_fetch_add(&sh->bad, 1);
        }
        json_decref(a);
        atomic_fetch_add(&sh->calls, 1);
    }
    return NULL;
}

static void *flapper(void *arg)
{
    struct shared *sh = arg;
    unsigned x = 12345;
    for (int round = 0; round < FLAP_ROUNDS; round++) {
        /* Let the workers make some calls in every state. */
        for (int seen = atomic_load(&sh->calls); atomic_load(&sh->calls) < seen + 8;)
            sched_yield();
        x = x * 1103515245u + 12345u;
        size_t i = (x >> 8) % N_FLAP;
        /* Calls and probes flap independently: F_OK, F_UNREACHABLE or F_TIMEOUT each. */
        atomic_store(&sh->f[i].mode, (int)((x >> 16) % 3));
        atomic_store(&sh->f[i].probe_mode, (int)((x >> 20) % 3));
        atomic_fetch_add(&g_now, 250);
        eg_bridge_multi_check_now(sh->m);
        if (eg_bridge_multi_live(sh->m) > N_FLAP)
            atomic_fetch_add(&sh->bad, 1);
        json_t *st = eg_bridge_status(sh->m);
        if (!st || json_array_size(json_object_get(st, "servers")) != N_FLAP)
            atomic_fetch_add(&sh->bad, 1);
        json_decref(st);
    }
    atomic_store(&sh->flap_done, true);
    return NULL;
}

static void test_concurrent_calls_while_servers_flap(void **state)
{
    (void)state;
    struct fake f[N_FLAP];
    pthread_t w[N_WORKERS], fl;
    fake_init(f, N_FLAP);
    struct eg_bridge_multi_opts o = opts(EG_MULTI_ROUND_ROBIN, 2);
    o.failure_window_ms = 1000;
    o.dead_time_ms = 1000;
    o.live_threshold = 1;
    struct shared sh = {.m = make_multi(f, N_FLAP, &o), .f = f};
    eg_bridge_multi_set_interval_for_test(sh.m, 1); /* the thread probes too */

    assert_int_equal(pthread_create(&fl, NULL, flapper, &sh), 0);
    for (int i = 0; i < N_WORKERS; i++)
        assert_int_equal(pthread_create(&w[i], NULL, worker, &sh), 0);
    for (int i = 0; i < N_WORKERS; i++)
        pthread_join(w[i], NULL);
    pthread_join(fl, NULL);

    assert_int_equal(atomic_load(&sh.bad), 0);
    /* Each successful call is exactly one successful call of one server. */
    int inner_ok = 0, inner_calls = 0;
    for (int i = 0; i < N_FLAP; i++) {
        inner_ok += atomic_load(&f[i].ok_calls);
        inner_calls += atomic_load(&f[i].calls);
    }
    assert_int_equal(inner_ok, atomic_load(&sh.ok));
    assert_true(inner_calls <= atomic_load(&sh.calls) * N_FLAP); /* at most once per server */
    /* The servers did flap under the calls: some attempts failed, some calls got through. */
    assert_true(inner_calls > inner_ok);
    assert_true(atomic_load(&sh.ok) > 0);
    eg_bridge_free(sh.m);
    fake_fini(f, N_FLAP);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_names),
        cmocka_unit_test(test_options_validation),
        cmocka_unit_test(test_new_rejects_and_owns),
        cmocka_unit_test(test_new_out_of_memory),
        cmocka_unit_test(test_priority_uses_first_live),
        cmocka_unit_test(test_round_robin_alternates),
        cmocka_unit_test(test_failover_within_one_call),
        cmocka_unit_test(test_request_errors_pass_through),
        cmocka_unit_test(test_dead_only_within_window),
        cmocka_unit_test(test_revived_after_live_threshold_probes),
        cmocka_unit_test(test_probe_failures_count),
        cmocka_unit_test(test_no_live_server_fails_at_once),
        cmocka_unit_test(test_inventory_cursor_routing),
        cmocka_unit_test(test_status_contents),
        cmocka_unit_test(test_free_while_health_thread_runs),
        cmocka_unit_test(test_concurrent_calls_while_servers_flap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
