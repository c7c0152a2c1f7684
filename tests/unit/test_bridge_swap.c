/* test_bridge_swap.c - the swappable bridge: calls in flight finish on the old backend, which is
 * freed after its last call; new calls go to the new one; cursors do not cross a swap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "exchange/bridge.h"
#include "exchange/bridge_swap.h"

/* ---- a fake backend whose calls can be held open ----------------------------------------- */

struct fake {
    const char *name;
    atomic_int calls;
    atomic_int *destroyed; /* incremented by destroy (owned by the test) */
    bool hold;             /* calls wait until released */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int inside;
    bool released;
    char last_cursor[64];
};

static int fake_enter(struct fake *f, json_t *actions)
{
    atomic_fetch_add(&f->calls, 1);
    pthread_mutex_lock(&f->lock);
    f->inside++;
    pthread_cond_broadcast(&f->cv);
    while (f->hold && !f->released)
        pthread_cond_wait(&f->cv, &f->lock);
    f->inside--;
    pthread_mutex_unlock(&f->lock);
    if (actions)
        json_array_append_new(actions, json_pack("{s:s}", "cmdlet", f->name));
    return 0;
}

static int fake_list_edit(void *impl, const struct eg_list_edit *e, json_t *actions,
                          struct eg_bridge_error *err)
{
    return fake_enter(impl, actions);
}

static int fake_wipe(void *impl, const char *m, const char *d, bool ao, const char *const *n,
                     size_t nn, json_t *actions, struct eg_bridge_error *err)
{
    return fake_enter(impl, actions);
}

static int fake_two(void *impl, const char *m, const char *d, json_t *actions,
                    struct eg_bridge_error *err)
{
    return fake_enter(impl, actions);
}

static int fake_set_mailbox(void *impl, const char *m, int ae, bool sp, const char *p,
                            json_t *actions, struct eg_bridge_error *err)
{
    return fake_enter(impl, actions);
}

static int fake_org(void *impl, enum eg_access_level l, json_t *actions,
                    struct eg_bridge_error *err)
{
    return fake_enter(impl, actions);
}

static int fake_inventory(void *impl, const struct eg_inventory_query *q, const char *cursor,
                          eg_device_cb cb, void *ctx, char **ret_next, struct eg_bridge_error *err)
{
    struct fake *f = impl;
    fake_enter(f, NULL);
    snprintf(f->last_cursor, sizeof f->last_cursor, "%s", cursor ? cursor : "(none)");
    *ret_next = cursor ? NULL : eg_strdup("page2");
    return 0;
}

static int fake_probe(void *impl, struct eg_bridge_error *err)
{
    struct fake *f = impl;
    eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true, "probe of %s", f->name);
    return EG_EUNAVAIL;
}

static json_t *fake_status(void *impl)
{
    struct fake *f = impl;
    return json_pack("{s:s, s:s}", "kind", "fake", "name", f->name);
}

static void fake_destroy(void *impl)
{
    struct fake *f = impl;
    atomic_fetch_add(f->destroyed, 1);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cv);
    eg_free(f);
}

static const struct eg_bridge_ops fake_ops = {
    .name = "fake",
    .list_edit = fake_list_edit,
    .wipe = fake_wipe,
    .wipe_cancel = fake_two,
    .remove_device = fake_two,
    .set_mailbox = fake_set_mailbox,
    .set_org_default_access = fake_org,
    .inventory_page = fake_inventory,
    .probe = fake_probe,
    .status = fake_status,
    .destroy = fake_destroy,
};

static struct eg_bridge *fake_new(const char *name, bool hold, atomic_int *destroyed,
                                  struct fake **ret)
{
    struct fake *f = eg_calloc(1, sizeof *f);
    struct eg_bridge *b = eg_calloc(1, sizeof *b);
    assert_non_null(f);
    assert_non_null(b);
    f->name = name;
    f->hold = hold;
    f->destroyed = destroyed;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cv, NULL);
    b->ops = &fake_ops;
    b->impl = f;
    if (ret)
        *ret = f;
    return b;
}

static void wait_inside(struct fake *f, int n)
{
    pthread_mutex_lock(&f->lock);
    while (f->inside < n)
        pthread_cond_wait(&f->cv, &f->lock);
    pthread_mutex_unlock(&f->lock);
}

static void release_all(struct fake *f)
{
    pthread_mutex_lock(&f->lock);
    f->released = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->lock);
}

struct call {
    struct eg_bridge *b;
    int rc;
    json_t *actions;
};

static void *call_thread(void *arg)
{
    struct call *c = arg;
    struct eg_bridge_error err;
    struct eg_list_edit e = {.mailbox = "a@x.example"};
    c->actions = json_array();
    c->rc = c->b->ops->list_edit(c->b->impl, &e, c->actions, &err);
    return NULL;
}

static const char *first_cmdlet(json_t *actions)
{
    return json_string_value(json_object_get(json_array_get(actions, 0), "cmdlet"));
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_in_flight_calls_finish_on_the_old_bridge(void **state)
{
    atomic_int dead_a = 0, dead_b = 0;
    struct fake *fa = NULL, *fb = NULL;
    struct eg_bridge *swap = NULL;
    assert_int_equal(eg_bridge_swap_new(fake_new("A", true, &dead_a, &fa), &swap), 0);
    assert_int_equal(eg_bridge_swap_generation(swap), 1);

    /* Two calls enter A and are held there. */
    struct call c1 = {.b = swap}, c2 = {.b = swap};
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, call_thread, &c1), 0);
    assert_int_equal(pthread_create(&t2, NULL, call_thread, &c2), 0);
    wait_inside(fa, 2);

    /* Swap to B: A stays alive while its calls are in flight. */
    assert_int_equal(eg_bridge_swap_set(swap, fake_new("B", false, &dead_b, &fb)), 0);
    assert_int_equal(eg_bridge_swap_generation(swap), 2);
    assert_int_equal(atomic_load(&dead_a), 0);
    assert_int_equal(eg_bridge_swap_retiring(swap), 1);

    /* A new call goes to B, and B only. */
    struct call c3 = {.b = swap};
    call_thread(&c3);
    assert_int_equal(c3.rc, 0);
    assert_string_equal(first_cmdlet(c3.actions), "B");
    assert_int_equal(atomic_load(&fb->calls), 1);
    assert_int_equal(atomic_load(&fa->calls), 2);
    json_t *st = eg_bridge_status(swap);
    assert_string_equal(json_string_value(json_object_get(st, "name")), "B");
    json_decref(st);

    /* Release A: both held calls complete there, then A is freed, exactly once. */
    release_all(fa);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(c1.rc, 0);
    assert_int_equal(c2.rc, 0);
    assert_string_equal(first_cmdlet(c1.actions), "A");
    assert_string_equal(first_cmdlet(c2.actions), "A");
    assert_int_equal(atomic_load(&dead_a), 1);
    assert_int_equal(eg_bridge_swap_retiring(swap), 0);
    assert_int_equal(atomic_load(&dead_b), 0);
    json_decref(c1.actions);
    json_decref(c2.actions);
    json_decref(c3.actions);

    eg_bridge_free(swap);
    assert_int_equal(atomic_load(&dead_b), 1);
    assert_int_equal(atomic_load(&dead_a), 1);
}

static void test_idle_swap_frees_at_once_and_forwards_everything(void **state)
{
    atomic_int dead_a = 0, dead_b = 0;
    struct fake *fb = NULL;
    struct eg_bridge *swap = NULL;
    struct eg_bridge_error err;
    assert_int_equal(eg_bridge_swap_new(fake_new("A", false, &dead_a, NULL), &swap), 0);
    assert_int_equal(eg_bridge_swap_set(swap, fake_new("B", false, &dead_b, &fb)), 0);
    assert_int_equal(atomic_load(&dead_a), 1);
    assert_int_equal(eg_bridge_swap_retiring(swap), 0);

    json_t *a = json_array();
    const struct eg_bridge_ops *o = swap->ops;
    assert_int_equal(o->wipe(swap->impl, "m@x.example", "D", true, NULL, 0, a, &err), 0);
    assert_int_equal(o->wipe_cancel(swap->impl, "m@x.example", "D", a, &err), 0);
    assert_int_equal(o->remove_device(swap->impl, "m@x.example", "D", a, &err), 0);
    assert_int_equal(o->set_mailbox(swap->impl, "m@x.example", 1, false, NULL, a, &err), 0);
    assert_int_equal(o->set_org_default_access(swap->impl, EG_ACCESS_BLOCK, a, &err), 0);
    assert_int_equal(json_array_size(a), 5);
    assert_int_equal(atomic_load(&fb->calls), 5);
    json_decref(a);
    assert_int_equal(eg_bridge_probe(swap, &err), EG_EUNAVAIL);
    assert_string_equal(err.message, "probe of B");

    /* Not a swap, or nothing to install: refused, and what was passed is freed. */
    atomic_int dead_c = 0;
    assert_int_equal(eg_bridge_swap_set(fb ? swap : NULL, NULL), EG_EINVAL);
    struct eg_bridge *plain = fake_new("P", false, &dead_c, NULL);
    assert_int_equal(eg_bridge_swap_set(plain, fake_new("C", false, &dead_c, NULL)), EG_EINVAL);
    assert_int_equal(atomic_load(&dead_c), 1);
    eg_bridge_free(plain);
    assert_int_equal(eg_bridge_swap_new(NULL, &plain), EG_EINVAL);
    assert_int_equal(eg_bridge_swap_generation(NULL), 0);

    eg_bridge_free(swap);
    assert_int_equal(atomic_load(&dead_b), 1);
}

static int count_cb(void *ctx, const struct eg_device_record *d)
{
    return 0;
}

static void test_inventory_cursor_does_not_cross_a_swap(void **state)
{
    atomic_int dead = 0;
    struct fake *fa = NULL, *fb = NULL;
    struct eg_bridge *swap = NULL;
    struct eg_bridge_error err;
    struct eg_inventory_query q = {.full = true, .page_size = 10};
    char *next = NULL, *next2 = NULL;
    assert_int_equal(eg_bridge_swap_new(fake_new("A", false, &dead, &fa), &swap), 0);

    assert_int_equal(swap->ops->inventory_page(swap->impl, &q, NULL, count_cb, NULL, &next, &err),
                     0);
    assert_string_equal(fa->last_cursor, "(none)");
    assert_string_equal(next, "1:page2");
    /* Same generation: the inner cursor goes through unchanged. */
    assert_int_equal(swap->ops->inventory_page(swap->impl, &q, next, count_cb, NULL, &next2, &err),
                     0);
    assert_string_equal(fa->last_cursor, "page2");
    assert_null(next2);

    /* After a swap the old cursor is refused as transient, and B never sees it. */
    assert_int_equal(eg_bridge_swap_set(swap, fake_new("B", false, &dead, &fb)), 0);
    assert_int_equal(swap->ops->inventory_page(swap->impl, &q, next, count_cb, NULL, &next2, &err),
                     EG_EAGAIN);
    assert_true(err.transient);
    assert_string_equal(err.code, EG_BERR_UNREACHABLE);
    assert_int_equal(atomic_load(&fb->calls), 0);
    /* A cursor that is not ours at all. */
    assert_int_equal(
        swap->ops->inventory_page(swap->impl, &q, "page2", count_cb, NULL, &next2, &err),
        EG_EINVAL);
    assert_false(err.transient);
    assert_int_equal(swap->ops->inventory_page(swap->impl, &q, NULL, count_cb, NULL, &next2, &err),
                     0);
    assert_string_equal(next2, "2:page2");
    eg_free(next);
    eg_free(next2);
    eg_bridge_free(swap);
    assert_int_equal(atomic_load(&dead), 2);
}

/* Many callers while the backend is replaced over and over: every backend is freed exactly once
 * and every call lands on some backend. */
struct storm {
    struct eg_bridge *swap;
    atomic_int done;
};

static void *storm_thread(void *arg)
{
    struct storm *s = arg;
    struct eg_bridge_error err;
    struct eg_list_edit e = {.mailbox = "a@x.example"};
    for (int i = 0; i < 2000; i++) {
        json_t *a = json_array();
        if (s->swap->ops->list_edit(s->swap->impl, &e, a, &err) == 0 && json_array_size(a) == 1)
            atomic_fetch_add(&s->done, 1);
        json_decref(a);
    }
    return NULL;
}

static void test_swap_storm(void **state)
{
    atomic_int dead = 0;
    struct storm s = {0};
    pthread_t t[4];
    assert_int_equal(eg_bridge_swap_new(fake_new("S0", false, &dead, NULL), &s.swap), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, storm_thread, &s), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(eg_bridge_swap_set(s.swap, fake_new("Sn", false, &dead, NULL)), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&s.done), 4 * 2000);
    assert_int_equal(atomic_load(&dead), 300);
    assert_int_equal(eg_bridge_swap_retiring(s.swap), 0);
    assert_int_equal(eg_bridge_swap_generation(s.swap), 301);
    eg_bridge_free(s.swap);
    assert_int_equal(atomic_load(&dead), 301);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_flight_calls_finish_on_the_old_bridge),
        cmocka_unit_test(test_idle_swap_frees_at_once_and_forwards_everything),
        cmocka_unit_test(test_inventory_cursor_does_not_cross_a_swap),
        cmocka_unit_test(test_swap_storm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
