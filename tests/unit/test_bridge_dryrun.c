/* test_bridge_dryrun.c - the dry-run backend: recorded cmdlets, the model, the difference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "exchange/bridge.h"

static char *dump(json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
}

static void assert_json(json_t *v, const char *want)
{
    char *t = dump(v);
    assert_string_equal(t, want);
    eg_free(t);
}

static void test_list_edit_sends_only_the_difference(void **state)
{
    struct eg_bridge *b = NULL;
    struct eg_bridge_error err;
    assert_int_equal(eg_bridge_dryrun_new(0, &b), 0);

    struct eg_device_override ov1[] = {{"D1", EG_LIST_ALLOW}, {"D2", EG_LIST_BLOCK}};
    struct eg_list_edit e1 = {.mailbox = "alice@x.example", .overrides = ov1, .n_overrides = 2};
    json_t *a = json_array();
    assert_int_equal(b->ops->list_edit(b->impl, &e1, a, &err), 0);
    assert_json(
        a, "[{\"cmdlet\":\"Get-CASMailbox\",\"parameters\":{\"Identity\":\"alice@x.example\"}},"
           "{\"cmdlet\":\"Set-CASMailbox\",\"parameters\":{"
           "\"ActiveSyncAllowedDeviceIDs\":{\"Add\":[\"D1\"]},"
           "\"ActiveSyncBlockedDeviceIDs\":{\"Add\":[\"D2\"]},"
           "\"Identity\":\"alice@x.example\"}}]");
    json_decref(a);

    /* The same edit again changes nothing: read only, no Set-CASMailbox. */
    a = json_array();
    assert_int_equal(b->ops->list_edit(b->impl, &e1, a, &err), 0);
    assert_int_equal(json_array_size(a), 1);
    json_decref(a);

    /* Move D1 to blocked: one Set-CASMailbox with a Remove on one list and an Add on the other. */
    struct eg_device_override ov2[] = {{"d1", EG_LIST_BLOCK}};
    struct eg_list_edit e2 = {.mailbox = "ALICE@x.example", .overrides = ov2, .n_overrides = 1};
    a = json_array();
    assert_int_equal(b->ops->list_edit(b->impl, &e2, a, &err), 0);
    json_t *p = json_object_get(json_array_get(a, 1), "parameters");
    assert_json(json_object_get(p, "ActiveSyncAllowedDeviceIDs"), "{\"Remove\":[\"D1\"]}");
    assert_json(json_object_get(p, "ActiveSyncBlockedDeviceIDs"), "{\"Add\":[\"d1\"]}");
    json_decref(a);

    json_t *lists = eg_bridge_dryrun_lists(b, "alice@X.example");
    assert_json(lists, "{\"allowed\":[],\"blocked\":[\"D2\",\"d1\"]}");
    json_decref(lists);
    assert_null(eg_bridge_dryrun_lists(b, "nobody@x.example"));
    assert_int_equal(eg_bridge_dryrun_calls(b), 3);
    eg_bridge_free(b);
}

static void test_wipe_cancel_remove_and_settings(void **state)
{
    struct eg_bridge *b = NULL;
    struct eg_bridge_error err;
    assert_int_equal(eg_bridge_dryrun_new(0, &b), 0);
    const char *notify[] = {"helpdesk@x.example"};
    json_t *a = json_array();
    assert_int_equal(b->ops->wipe(b->impl, "carol@x.example", "ApplLOST", true, notify, 1, a, &err),
                     0);
    json_t *clear = json_array_get(a, 1);
    assert_string_equal(json_string_value(json_object_get(clear, "cmdlet")), "Clear-MobileDevice");
    json_t *p = json_object_get(clear, "parameters");
    assert_true(json_is_false(json_object_get(p, "Confirm")));
    assert_true(json_is_true(json_object_get(p, "AccountOnly")));
    assert_json(json_object_get(p, "NotificationEmailAddresses"), "[\"helpdesk@x.example\"]");
    json_decref(a);

    /* A full wipe has no AccountOnly parameter at all. */
    a = json_array();
    assert_int_equal(b->ops->wipe(b->impl, "carol@x.example", "ApplLOST", false, NULL, 0, a, &err),
                     0);
    assert_null(
        json_object_get(json_object_get(json_array_get(a, 1), "parameters"), "AccountOnly"));
    json_decref(a);

    a = json_array();
    assert_int_equal(b->ops->wipe_cancel(b->impl, "carol@x.example", "ApplLOST", a, &err), 0);
    p = json_object_get(json_array_get(a, 1), "parameters");
    assert_true(json_is_true(json_object_get(p, "Cancel")));
    json_decref(a);

    a = json_array();
    assert_int_equal(b->ops->remove_device(b->impl, "carol@x.example", "ApplLOST", a, &err), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "cmdlet")),
                        "Remove-MobileDevice");
    json_decref(a);

    a = json_array();
    assert_int_equal(b->ops->set_mailbox(b->impl, "dave@x.example", 0, true, NULL, a, &err), 0);
    assert_json(a, "[{\"cmdlet\":\"Set-CASMailbox\",\"parameters\":{\"ActiveSyncEnabled\":false,"
                   "\"ActiveSyncMailboxPolicy\":null,\"Identity\":\"dave@x.example\"}}]");
    json_decref(a);

    a = json_array();
    assert_int_equal(b->ops->set_org_default_access(b->impl, EG_ACCESS_QUARANTINE, a, &err), 0);
    assert_json(a, "[{\"cmdlet\":\"Set-ActiveSyncOrganizationSettings\",\"parameters\":"
                   "{\"DefaultAccessLevel\":\"Quarantine\"}}]");
    json_decref(a);
    eg_bridge_free(b);
}

struct collect {
    int n;
    char ids[16][64];
};

static int collect_cb(void *ctx, const struct eg_device_record *d)
{
    struct collect *c = ctx;
    if (c->n < 16)
        snprintf(c->ids[c->n], sizeof c->ids[0], "%s/%s/%s", d->mailbox, d->device_id,
                 d->access_state);
    c->n++;
    return 0;
}

static void test_inventory_pages(void **state)
{
    struct eg_bridge *b = NULL;
    struct eg_bridge_error err;
    assert_int_equal(eg_bridge_dryrun_new(0, &b), 0);
    struct eg_device_override ov[] = {
        {"A", EG_LIST_ALLOW}, {"B", EG_LIST_BLOCK}, {"C", EG_LIST_ALLOW}};
    struct eg_list_edit e = {.mailbox = "m@x.example", .overrides = ov, .n_overrides = 3};
    json_t *a = json_array();
    assert_int_equal(b->ops->list_edit(b->impl, &e, a, &err), 0);
    json_decref(a);

    struct eg_inventory_query q = {.full = true, .page_size = 2};
    struct collect c = {0};
    char *next = NULL;
    assert_int_equal(b->ops->inventory_page(b->impl, &q, NULL, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 2);
    assert_non_null(next);
    char *cursor = next;
    next = NULL;
    assert_int_equal(b->ops->inventory_page(b->impl, &q, cursor, collect_cb, &c, &next, &err), 0);
    eg_free(cursor);
    assert_null(next);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.ids[0], "m@x.example/A/Allowed");
    assert_string_equal(c.ids[1], "m@x.example/C/Allowed");
    assert_string_equal(c.ids[2], "m@x.example/B/Blocked");
    assert_int_equal(b->ops->inventory_page(b->impl, &q, "x1", collect_cb, &c, &next, &err),
                     EG_EINVAL);
    assert_string_equal(err.code, "invalid_argument");
    eg_bridge_free(b);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_edit_sends_only_the_difference),
        cmocka_unit_test(test_wipe_cancel_remove_and_settings),
        cmocka_unit_test(test_inventory_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
