/* gate.c - the adaptive concurrency limit (AIMD) for calls into Exchange; see gate.h. */
#include "exchange/gate.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "common/alloc.h"
#include "exchange/psrp_pool.h"

struct eg_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC; broadcast whenever inside < limit after a leave */
    unsigned ceiling;
    unsigned recover_after;
    unsigned limit;     /* 1..ceiling */
    unsigned inside;    /* may exceed limit right after a halving; nobody is interrupted */
    unsigned ok_streak; /* consecutive EG_GATE_OK outcomes since the last change */
    uint64_t throttles;
};

int eg_gate_new(unsigned ceiling, unsigned recover_after, struct eg_gate **ret)
{
    struct eg_gate *g = NULL;
    pthread_condattr_t ca;
    bool ca_init = false, mu_init = false;
    int rc = EG_EINVAL;

    if (!ret || ceiling < 1 || ceiling > EG_PSRP_MAX_PIPELINES || recover_after < 1)
        goto out;
    rc = EG_ENOMEM;
    g = eg_calloc(1, sizeof(*g));
    if (!g)
        goto out;
    if (pthread_mutex_init(&g->mu, NULL) != 0)
        goto out;
    mu_init = true;
    if (pthread_condattr_init(&ca) != 0)
        goto out;
    ca_init = true;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 || pthread_cond_init(&g->cv, &ca) != 0)
        goto out;
    g->ceiling = ceiling;
    g->recover_after = recover_after;
    g->limit = ceiling;
    *ret = g;
    g = NULL;
    rc = 0;
out:
    if (ca_init)
        pthread_condattr_destroy(&ca);
    if (g) {
        if (mu_init)
            pthread_mutex_destroy(&g->mu);
        eg_free(g);
    }
    return rc;
}

void eg_gate_free(struct eg_gate *g)
{
    if (!g)
        return;
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    eg_free(g);
}

/* Absolute CLOCK_MONOTONIC time timeout_ms (>= 0) from now. */
static struct timespec deadline_after(int64_t timeout_ms)
{
    struct timespec ts;
    const int64_t max_s = (int64_t)1 << 40; /* ~35,000 years: no time_t overflow */
    int64_t s = timeout_ms / 1000, ns = (timeout_ms % 1000) * 1000000;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (s > max_s)
        s = max_s;
    ts.tv_sec += (time_t)s;
    ts.tv_nsec += (long)ns;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int eg_gate_enter(struct eg_gate *g, int64_t timeout_ms)
{
    struct timespec until = {0};
    int rc = 0;

    if (!g)
        return EG_EINVAL;
    if (timeout_ms > 0)
        until = deadline_after(timeout_ms);
    pthread_mutex_lock(&g->mu);
    while (g->inside >= g->limit) {
        if (timeout_ms == 0) {
            rc = EG_ETIMEDOUT;
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&g->cv, &g->mu);
            continue;
        }
        if (pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT && g->inside >= g->limit) {
            rc = EG_ETIMEDOUT;
            break;
        }
    }
    if (rc == 0)
        g->inside++;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void eg_gate_leave(struct eg_gate *g, enum eg_gate_outcome outcome)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    if (g->inside > 0)
        g->inside--;
    switch (outcome) {
    case EG_GATE_THROTTLED:
        g->throttles++;
        g->limit = g->limit / 2 > 0 ? g->limit / 2 : 1;
        g->ok_streak = 0;
        break;
    case EG_GATE_OK:
        if (g->limit >= g->ceiling) {
            g->ok_streak = 0;
            break;
        }
        if (++g->ok_streak >= g->recover_after) {
            g->limit++;
            g->ok_streak = 0;
        }
        break;
    case EG_GATE_ERROR:
    default:
        g->ok_streak = 0; /* not a success: the run of consecutive successes is broken */
        break;
    }
    /* A slot freed, the limit grew, or both: several waiters may fit now. */
    if (g->inside < g->limit)
        pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

#define GATE_READ(g, field)                                                                        \
    do {                                                                                           \
        struct eg_gate *mg_ = (struct eg_gate *)(g);                                               \
        pthread_mutex_lock(&mg_->mu);                                                              \
        v = mg_->field;                                                                            \
        pthread_mutex_unlock(&mg_->mu);                                                            \
    } while (0)

unsigned eg_gate_limit(const struct eg_gate *g)
{
    unsigned v = 0;

    if (g)
        GATE_READ(g, limit);
    return v;
}

unsigned eg_gate_inside(const struct eg_gate *g)
{
    unsigned v = 0;

    if (g)
        GATE_READ(g, inside);
    return v;
}

unsigned eg_gate_ceiling(const struct eg_gate *g)
{
    return g ? g->ceiling : 0; /* immutable after eg_gate_new */
}

uint64_t eg_gate_throttles(const struct eg_gate *g)
{
    uint64_t v = 0;

    if (g)
        GATE_READ(g, throttles);
    return v;
}
