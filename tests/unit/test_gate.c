/* test_gate.c - the adaptive concurrency gate: halving, recovery, bounds, waiting, timeouts, and
 * the limit held under concurrent entries while throttled outcomes arrive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "common/alloc.h"
#include "exchange/gate.h"
#include "exchange/psrp_pool.h"

static struct eg_gate *gate(unsigned ceiling, unsigned recover_after)
{
    struct eg_gate *g = NULL;
    assert_int_equal(eg_gate_new(ceiling, recover_after, &g), 0);
    assert_non_null(g);
    return g;
}

/* One call in and out with the given outcome. */
static void call(struct eg_gate *g, enum eg_gate_outcome o)
{
    assert_int_equal(eg_gate_enter(g, 0), 0);
    eg_gate_leave(g, o);
}

static void test_new_args(void **state)
{
    struct eg_gate *g = NULL;
    (void)state;
    assert_int_equal(eg_gate_new(0, 1, &g), EG_EINVAL);
    assert_int_equal(eg_gate_new(EG_PSRP_MAX_PIPELINES + 1, 1, &g), EG_EINVAL);
    assert_int_equal(eg_gate_new(4, 0, &g), EG_EINVAL);
    assert_int_equal(eg_gate_new(4, 1, NULL), EG_EINVAL);
    assert_null(g);

    eg_alloc_fail_after(0);
    int rc = eg_gate_new(4, 1, &g);
    eg_alloc_fail_after(-1);
    assert_int_equal(rc, EG_ENOMEM);
    assert_null(g);

    g = gate(EG_PSRP_MAX_PIPELINES, 1);
    assert_int_equal(eg_gate_ceiling(g), EG_PSRP_MAX_PIPELINES);
    assert_int_equal(eg_gate_limit(g), EG_PSRP_MAX_PIPELINES); /* starts at the ceiling */
    assert_int_equal(eg_gate_inside(g), 0);
    assert_int_equal(eg_gate_throttles(g), 0);
    eg_gate_free(g);
    eg_gate_free(NULL);
}

/* 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1 -> 1: halving, never below 1. */
static void test_halves_not_below_one(void **state)
{
    (void)state;
    struct eg_gate *g = gate(64, 3);
    unsigned expect = 64;
    for (int i = 0; i < 10; i++) {
        call(g, EG_GATE_THROTTLED);
        expect = expect / 2 ? expect / 2 : 1;
        assert_int_equal(eg_gate_limit(g), expect);
        assert_int_equal(eg_gate_throttles(g), (uint64_t)i + 1);
    }
    assert_int_equal(eg_gate_limit(g), 1);
    /* Odd limits round down: 7 -> 3. */
    eg_gate_free(g);
    g = gate(7, 1);
    call(g, EG_GATE_THROTTLED);
    assert_int_equal(eg_gate_limit(g), 3);
    call(g, EG_GATE_THROTTLED);
    assert_int_equal(eg_gate_limit(g), 1);
    eg_gate_free(g);
}

/* +1 after exactly recover_after consecutive OKs, up to the ceiling and never above it. */
static void test_recovers_to_ceiling(void **state)
{
    (void)state;
    struct eg_gate *g = gate(5, 3);
    call(g, EG_GATE_THROTTLED);
    call(g, EG_GATE_THROTTLED);
    assert_int_equal(eg_gate_limit(g), 1);
    for (unsigned want = 2; want <= 5; want++) {
        call(g, EG_GATE_OK);
        call(g, EG_GATE_OK);
        assert_int_equal(eg_gate_limit(g), want - 1); /* 2 OKs: not yet */
        call(g, EG_GATE_OK);
        assert_int_equal(eg_gate_limit(g), want); /* the 3rd: +1 */
    }
    for (int i = 0; i < 30; i++) {
        call(g, EG_GATE_OK);
        assert_int_equal(eg_gate_limit(g), 5);
    }
    eg_gate_free(g);
}

/* A throttle or an error breaks the run of OKs; errors never move the limit. */
static void test_streak_broken(void **state)
{
    (void)state;
    struct eg_gate *g = gate(8, 3);
    call(g, EG_GATE_THROTTLED); /* 4 */
    call(g, EG_GATE_OK);
    call(g, EG_GATE_OK);
    call(g, EG_GATE_ERROR);
    assert_int_equal(eg_gate_limit(g), 4);
    call(g, EG_GATE_OK);
    call(g, EG_GATE_OK);
    assert_int_equal(eg_gate_limit(g), 4); /* 2 since the error */
    call(g, EG_GATE_OK);
    assert_int_equal(eg_gate_limit(g), 5);
    call(g, EG_GATE_OK);
    call(g, EG_GATE_OK);
    call(g, EG_GATE_THROTTLED); /* 5 -> 2, the 2 OKs forgotten */
    assert_int_equal(eg_gate_limit(g), 2);
    call(g, EG_GATE_OK);
    assert_int_equal(eg_gate_limit(g), 2);
    for (int i = 0; i < 20; i++)
        call(g, EG_GATE_ERROR);
    assert_int_equal(eg_gate_limit(g), 2);
    assert_int_equal(eg_gate_throttles(g), 2);
    eg_gate_free(g);
}

/* Full: enter times out with EG_ETIMEDOUT, both at once (0) and after a wait. */
static void test_timeout_when_full(void **state)
{
    (void)state;
    struct eg_gate *g = gate(2, 1);
    assert_int_equal(eg_gate_enter(g, 0), 0);
    assert_int_equal(eg_gate_enter(g, 100), 0);
    assert_int_equal(eg_gate_inside(g), 2);
    assert_int_equal(eg_gate_enter(g, 0), EG_ETIMEDOUT);
    assert_int_equal(eg_gate_enter(g, 30), EG_ETIMEDOUT);
    assert_int_equal(eg_gate_inside(g), 2); /* a timed-out enter takes nothing */
    eg_gate_leave(g, EG_GATE_OK);
    assert_int_equal(eg_gate_enter(g, 30), 0);
    eg_gate_leave(g, EG_GATE_OK);
    eg_gate_leave(g, EG_GATE_OK);
    assert_int_equal(eg_gate_inside(g), 0);
    eg_gate_free(g);
}

/* A halving does not interrupt anyone, but new entries wait until inside < limit; a grown
 * limit lets them in. */
static void test_shrink_below_inside(void **state)
{
    (void)state;
    struct eg_gate *g = gate(4, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(eg_gate_enter(g, 0), 0);
    eg_gate_leave(g, EG_GATE_THROTTLED); /* limit 2, inside 3 */
    eg_gate_leave(g, EG_GATE_THROTTLED); /* limit 1, inside 2 */
    assert_int_equal(eg_gate_limit(g), 1);
    assert_int_equal(eg_gate_inside(g), 2);
    assert_int_equal(eg_gate_enter(g, 0), EG_ETIMEDOUT);
    eg_gate_leave(g, EG_GATE_OK); /* limit 2, inside 1: room for one */
    assert_int_equal(eg_gate_limit(g), 2);
    assert_int_equal(eg_gate_enter(g, 0), 0);
    assert_int_equal(eg_gate_enter(g, 0), EG_ETIMEDOUT);
    eg_gate_leave(g, EG_GATE_ERROR);
    eg_gate_leave(g, EG_GATE_ERROR);
    assert_int_equal(eg_gate_inside(g), 0);
    eg_gate_free(g);
}

struct waiter {
    struct eg_gate *g;
    int64_t timeout_ms;
    atomic_int done;
    int rc;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = eg_gate_enter(w->g, w->timeout_ms);
    atomic_store(&w->done, 1);
    return NULL;
}

/* A waiter (no timeout, and with a long one) wakes when the slot frees. */
static void test_waiter_wakes(void **state)
{
    (void)state;
    struct eg_gate *g = gate(1, 1);
    const int64_t timeouts[] = {-1, 60000};
    for (size_t i = 0; i < 2; i++) {
        struct waiter w = {.g = g, .timeout_ms = timeouts[i]};
        pthread_t t;
        assert_int_equal(eg_gate_enter(g, 0), 0);
        assert_int_equal(pthread_create(&t, NULL, waiter_main, &w), 0);
        usleep(50000);
        assert_int_equal(atomic_load(&w.done), 0); /* cannot be in: the only slot is taken */
        eg_gate_leave(g, EG_GATE_OK);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(w.rc, 0);
        assert_int_equal(eg_gate_inside(g), 1);
        eg_gate_leave(g, EG_GATE_OK);
    }
    eg_gate_free(g);
}

/* ---- concurrency: inside never exceeds the limit in force --------------------------------- */

#define N_THREADS 12
#define N_ROUNDS  1500
#define CEILING   6

/* Every limit change (eg_gate_leave) happens under mu, so the test sees each limit in force.
 * Each thread records, from just before it calls eg_gate_enter until it leaves, the highest limit
 * in force since then (win_max). A call admitted at time t had inside <= limit(t); all the calls
 * inside at a check were admitted after the earliest of them started entering, so their number is
 * bounded by the highest win_max among them. */
struct conc {
    struct eg_gate *g;
    pthread_mutex_t mu;
    unsigned in;            /* calls between enter and leave, as counted here */
    bool active[N_THREADS]; /* entering or inside */
    bool inside[N_THREADS];
    unsigned win_max[N_THREADS];
    unsigned max_in, max_excess, violations, limit_bad;
    uint64_t injected;
};

struct worker_arg {
    struct conc *c;
    int idx;
};

static void note_limit(struct conc *c)
{
    unsigned l = eg_gate_limit(c->g);
    if (l < 1 || l > CEILING)
        c->limit_bad++;
    for (int i = 0; i < N_THREADS; i++)
        if (c->active[i] && l > c->win_max[i])
            c->win_max[i] = l;
}

static void *conc_main(void *arg)
{
    struct worker_arg *a = arg;
    struct conc *c = a->c;
    int me = a->idx;
    bool injector = me == 0;
    unsigned seed = (unsigned)me * 2654435761u;

    for (int r = 0; r < N_ROUNDS; r++) {
        pthread_mutex_lock(&c->mu);
        c->active[me] = true;
        c->win_max[me] = eg_gate_limit(c->g);
        pthread_mutex_unlock(&c->mu);

        if (eg_gate_enter(c->g, -1) != 0) {
            pthread_mutex_lock(&c->mu);
            c->violations++;
            c->active[me] = false;
            pthread_mutex_unlock(&c->mu);
            break;
        }

        pthread_mutex_lock(&c->mu);
        c->inside[me] = true;
        c->in++;
        unsigned bound = 0;
        for (int i = 0; i < N_THREADS; i++)
            if (c->inside[i] && c->win_max[i] > bound)
                bound = c->win_max[i];
        if (c->in > bound) {
            c->violations++;
            if (c->in - bound > c->max_excess)
                c->max_excess = c->in - bound;
        }
        if (c->in > CEILING)
            c->violations++;
        if (c->in > c->max_in)
            c->max_in = c->in;
        pthread_mutex_unlock(&c->mu);

        seed = seed * 1103515245u + 12345u;
        if ((seed >> 16) % 4 == 0)
            usleep(50);
        else
            sched_yield();

        enum eg_gate_outcome o = EG_GATE_OK;
        if (injector && r % 3 == 0)
            o = EG_GATE_THROTTLED;
        else if ((seed >> 20) % 16 == 0)
            o = EG_GATE_ERROR;

        pthread_mutex_lock(&c->mu);
        c->in--;
        c->inside[me] = false;
        c->active[me] = false;
        eg_gate_leave(c->g, o);
        if (o == EG_GATE_THROTTLED)
            c->injected++;
        note_limit(c);
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

static void test_concurrent_limit_held(void **state)
{
    (void)state;
    struct conc c = {.g = gate(CEILING, 2)};
    struct worker_arg args[N_THREADS];
    pthread_t t[N_THREADS];
    assert_int_equal(pthread_mutex_init(&c.mu, NULL), 0);
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (struct worker_arg){.c = &c, .idx = i};
        assert_int_equal(pthread_create(&t[i], NULL, conc_main, &args[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    assert_int_equal(c.violations, 0);
    assert_int_equal(c.max_excess, 0);
    assert_int_equal(c.limit_bad, 0);
    assert_true(c.max_in >= 1 && c.max_in <= CEILING);
    assert_int_equal(c.injected, (N_ROUNDS + 2) / 3);
    assert_int_equal(eg_gate_throttles(c.g), c.injected);
    assert_int_equal(eg_gate_inside(c.g), 0);
    assert_true(eg_gate_limit(c.g) >= 1 && eg_gate_limit(c.g) <= CEILING);
    pthread_mutex_destroy(&c.mu);
    eg_gate_free(c.g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_args),
        cmocka_unit_test(test_halves_not_below_one),
        cmocka_unit_test(test_recovers_to_ceiling),
        cmocka_unit_test(test_streak_broken),
        cmocka_unit_test(test_timeout_when_full),
        cmocka_unit_test(test_shrink_below_inside),
        cmocka_unit_test(test_waiter_wakes),
        cmocka_unit_test(test_concurrent_limit_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
