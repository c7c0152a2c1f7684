/* test_list_plan.c - desired lists and Add/Remove differences (exchange/list_plan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "exchange/list_plan.h"

static void assert_strv(const struct eg_strv *v, const char *const *want, size_t n)
{
    assert_int_equal(v->n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(v->v[i], want[i]);
}

static void test_overrides_move_devices_between_lists(void **state)
{
    const char *allowed[] = {"A1", "A2"}, *blocked[] = {"B1"};
    struct eg_device_override ov[] = {
        {"A1", EG_LIST_BLOCK}, /* allowed -> blocked */
        {"B1", EG_LIST_NONE},  /* off the blocked list */
        {"N1", EG_LIST_ALLOW}, /* new on allowed */
    };
    struct eg_list_edit e = {.mailbox = "m@x.example", .overrides = ov, .n_overrides = 3};
    struct eg_list_plan *p = NULL;
    assert_int_equal(eg_list_plan_compute(&e, allowed, 2, blocked, 1, &p), 0);
    assert_strv(&p->allow_add, (const char *[]){"N1"}, 1);
    assert_strv(&p->allow_remove, (const char *[]){"A1"}, 1);
    assert_strv(&p->block_add, (const char *[]){"A1"}, 1);
    assert_strv(&p->block_remove, (const char *[]){"B1"}, 1);
    assert_strv(&p->final_allowed, (const char *[]){"A2", "N1"}, 2);
    assert_strv(&p->final_blocked, (const char *[]){"A1"}, 1);
    assert_false(eg_list_plan_empty(p));
    eg_list_plan_free(p);
}

static void test_no_change_is_empty_and_case_insensitive(void **state)
{
    const char *allowed[] = {"ApplABC"}, *blocked[] = {"androidX"};
    struct eg_device_override ov[] = {
        {"applabc", EG_LIST_ALLOW}, {"ANDROIDX", EG_LIST_BLOCK}, {"ghost", EG_LIST_NONE}};
    struct eg_list_edit e = {.mailbox = "m@x.example", .overrides = ov, .n_overrides = 3};
    struct eg_list_plan *p = NULL;
    assert_int_equal(eg_list_plan_compute(&e, allowed, 1, blocked, 1, &p), 0);
    assert_true(eg_list_plan_empty(p));
    eg_list_plan_free(p);
}

static void test_base_replaces_current(void **state)
{
    const char *allowed[] = {"Old1", "Keep"}, *blocked[] = {"OldB"};
    const char *base_a[] = {"keep", "New1"}, *base_b[] = {"NewB"};
    struct eg_device_override ov[] = {{"New1", EG_LIST_BLOCK}};
    struct eg_list_edit e = {.mailbox = "m@x.example",
                             .has_base = true,
                             .base_allowed = base_a,
                             .n_base_allowed = 2,
                             .base_blocked = base_b,
                             .n_base_blocked = 1,
                             .overrides = ov,
                             .n_overrides = 1};
    struct eg_list_plan *p = NULL;
    assert_int_equal(eg_list_plan_compute(&e, allowed, 2, blocked, 1, &p), 0);
    assert_int_equal(p->allow_add.n, 0);                        /* "keep" is "Keep" */
    assert_strv(&p->allow_remove, (const char *[]){"Old1"}, 1); /* current spelling */
    assert_strv(&p->block_add, (const char *[]){"NewB", "New1"}, 2);
    assert_strv(&p->block_remove, (const char *[]){"OldB"}, 1);
    eg_list_plan_free(p);
}

static void test_allocation_failures(void **state)
{
    const char *allowed[] = {"A1", "A2", "A3"}, *blocked[] = {"B1", "B2"};
    struct eg_device_override ov[] = {{"A1", EG_LIST_BLOCK}, {"C", EG_LIST_ALLOW}};
    struct eg_list_edit e = {.mailbox = "m", .overrides = ov, .n_overrides = 2};
    int ok = 0;
    for (long n = 0; n < 200 && !ok; n++) {
        struct eg_list_plan *p = NULL;
        eg_alloc_fail_after(n);
        int rc = eg_list_plan_compute(&e, allowed, 3, blocked, 2, &p);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            ok = 1;
            assert_int_equal(p->block_add.n, 1);
        } else {
            assert_int_equal(rc, EG_ENOMEM);
            assert_null(p);
        }
        eg_list_plan_free(p);
    }
    assert_true(ok);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overrides_move_devices_between_lists),
        cmocka_unit_test(test_no_change_is_empty_and_case_insensitive),
        cmocka_unit_test(test_base_replaces_current),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
