/* bridge_swap.c - a bridge whose backend can be replaced while calls are in flight (see
 * bridge_swap.h). */
#include "exchange/bridge_swap.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/util.h"

/* One installed inner bridge. refs counts the calls using it plus one while it is current. */
struct slot {
    struct eg_bridge *b;
    uint64_t gen;
    size_t refs;
};

struct swap {
    pthread_mutex_t lock;
    struct slot *cur;
    uint64_t gen;
    size_t retiring; /* replaced slots whose calls have not all returned */
};

static const struct eg_bridge_ops swap_ops;

static struct slot *acquire(struct swap *s)
{
    pthread_mutex_lock(&s->lock);
    struct slot *sl = s->cur;
    sl->refs++;
    pthread_mutex_unlock(&s->lock);
    return sl;
}

static void slot_free(struct slot *sl)
{
    eg_bridge_free(sl->b);
    eg_free(sl);
}

/* Drop one reference; the slot is freed (outside the lock) with its last one. */
static void release(struct swap *s, struct slot *sl)
{
    bool last;
    pthread_mutex_lock(&s->lock);
    last = --sl->refs == 0;
    if (last && sl != s->cur && s->retiring > 0)
        s->retiring--;
    pthread_mutex_unlock(&s->lock);
    if (last)
        slot_free(sl);
}

static int missing_op(struct eg_bridge_error *err, const char *op)
{
    eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "the Exchange backend has no %s operation",
                        op);
    return EG_EUNSUPPORTED;
}

static int sw_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                        struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->list_edit ? sl->b->ops->list_edit(sl->b->impl, edit, actions, err)
                                   : missing_op(err, "list_edit");
    release(impl, sl);
    return rc;
}

static int sw_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                   const char *const *notify, size_t n_notify, json_t *actions,
                   struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->wipe ? sl->b->ops->wipe(sl->b->impl, mailbox, device_id, account_only,
                                                 notify, n_notify, actions, err)
                              : missing_op(err, "wipe");
    release(impl, sl);
    return rc;
}

static int sw_wipe_cancel(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                          struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->wipe_cancel
                 ? sl->b->ops->wipe_cancel(sl->b->impl, mailbox, device_id, actions, err)
                 : missing_op(err, "wipe_cancel");
    release(impl, sl);
    return rc;
}

static int sw_remove_device(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                            struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->remove_device
                 ? sl->b->ops->remove_device(sl->b->impl, mailbox, device_id, actions, err)
                 : missing_op(err, "remove_device");
    release(impl, sl);
    return rc;
}

static int sw_set_mailbox(void *impl, const char *mailbox, int activesync_enabled, bool set_policy,
                          const char *policy, json_t *actions, struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->set_mailbox
                 ? sl->b->ops->set_mailbox(sl->b->impl, mailbox, activesync_enabled, set_policy,
                                           policy, actions, err)
                 : missing_op(err, "set_mailbox");
    release(impl, sl);
    return rc;
}

static int sw_set_org_default_access(void *impl, enum eg_access_level level, json_t *actions,
                                     struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->set_org_default_access
                 ? sl->b->ops->set_org_default_access(sl->b->impl, level, actions, err)
                 : missing_op(err, "set_org_default_access");
    release(impl, sl);
    return rc;
}

/* Cursors are "<generation>:<inner cursor>". */
static int sw_inventory_page(void *impl, const struct eg_inventory_query *q, const char *cursor,
                             eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                             struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    const char *inner = NULL;
    char *next = NULL;
    int rc;

    if (!sl->b->ops->inventory_page) {
        rc = missing_op(err, "inventory_page");
        goto out;
    }
    if (cursor) {
        char gen[24];
        const char *colon = strchr(cursor, ':');
        int64_t g = -1;
        size_t glen = colon ? (size_t)(colon - cursor) : 0;
        if (glen > 0 && glen < sizeof gen) {
            memcpy(gen, cursor, glen);
            gen[glen] = '\0';
            if (eg_parse_int64(gen, 1, INT64_MAX, &g) < 0)
                g = -1;
        }
        if (g < 0) {
            eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                                "not an inventory cursor of this agent");
            rc = EG_EINVAL;
            goto out;
        }
        if ((uint64_t)g != sl->gen) {
            eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true,
                                "the Exchange target was changed during the inventory; it "
                                "starts again on the new target");
            rc = EG_EAGAIN;
            goto out;
        }
        inner = colon + 1;
    }
    rc = sl->b->ops->inventory_page(sl->b->impl, q, inner, cb, cb_ctx, &next, err);
    if (rc == 0) {
        *ret_next_cursor = NULL;
        if (next) {
            char *tagged = eg_asprintf("%" PRIu64 ":%s", sl->gen, next);
            if (!tagged) {
                eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "out of memory");
                rc = EG_ENOMEM;
                goto out;
            }
            *ret_next_cursor = tagged;
        }
    }
out:
    eg_free(next);
    release(impl, sl);
    return rc;
}

static int sw_mailbox_lists(void *impl, const struct eg_mailbox_query *q, eg_mailbox_cb cb,
                            void *cb_ctx, struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->mailbox_lists ? sl->b->ops->mailbox_lists(sl->b->impl, q, cb, cb_ctx, err)
                                       : missing_op(err, "mailbox_lists");
    release(impl, sl);
    return rc;
}

static int sw_device_stats(void *impl, const char *mailbox, const char *device_id,
                           const char *identity, eg_device_cb cb, void *cb_ctx,
                           struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = sl->b->ops->device_stats ? sl->b->ops->device_stats(sl->b->impl, mailbox, device_id,
                                                                 identity, cb, cb_ctx, err)
                                      : missing_op(err, "device_stats");
    release(impl, sl);
    return rc;
}

static int sw_probe(void *impl, struct eg_bridge_error *err)
{
    struct slot *sl = acquire(impl);
    int rc = eg_bridge_probe(sl->b, err);
    release(impl, sl);
    return rc;
}

static json_t *sw_status(void *impl)
{
    struct slot *sl = acquire(impl);
    json_t *st = eg_bridge_status(sl->b);
    release(impl, sl);
    return st;
}

static void sw_destroy(void *impl)
{
    struct swap *s = impl;
    if (!s)
        return;
    if (s->cur)
        release(s, s->cur); /* the "current" reference; no call may be in flight now */
    pthread_mutex_destroy(&s->lock);
    eg_free(s);
}

static const struct eg_bridge_ops swap_ops = {
    .name = "swap",
    .list_edit = sw_list_edit,
    .wipe = sw_wipe,
    .wipe_cancel = sw_wipe_cancel,
    .remove_device = sw_remove_device,
    .set_mailbox = sw_set_mailbox,
    .set_org_default_access = sw_set_org_default_access,
    .inventory_page = sw_inventory_page,
    .mailbox_lists = sw_mailbox_lists,
    .device_stats = sw_device_stats,
    .probe = sw_probe,
    .status = sw_status,
    .destroy = sw_destroy,
};

static struct slot *slot_new(struct eg_bridge *b, uint64_t gen)
{
    struct slot *sl = eg_calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    sl->b = b;
    sl->gen = gen;
    sl->refs = 1;
    return sl;
}

int eg_bridge_swap_new(struct eg_bridge *initial, struct eg_bridge **ret)
{
    struct swap *s = NULL;
    struct eg_bridge *b = NULL;
    if (!initial || !initial->ops || !ret) {
        eg_bridge_free(initial);
        return EG_EINVAL;
    }
    s = eg_calloc(1, sizeof *s);
    b = eg_calloc(1, sizeof *b);
    if (!s || !b || !(s->cur = slot_new(initial, 1))) {
        eg_free(s);
        eg_free(b);
        eg_bridge_free(initial);
        return EG_ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->gen = 1;
    b->ops = &swap_ops;
    b->impl = s;
    *ret = b;
    return 0;
}

int eg_bridge_swap_set(struct eg_bridge *swap, struct eg_bridge *next)
{
    if (!swap || swap->ops != &swap_ops || !next || !next->ops) {
        eg_bridge_free(next);
        return EG_EINVAL;
    }
    struct swap *s = swap->impl;
    struct slot *sl = slot_new(next, 0), *old;
    bool last;
    if (!sl) {
        eg_bridge_free(next);
        return EG_ENOMEM;
    }
    pthread_mutex_lock(&s->lock);
    sl->gen = ++s->gen;
    old = s->cur;
    s->cur = sl;
    last = --old->refs == 0;
    if (!last)
        s->retiring++;
    pthread_mutex_unlock(&s->lock);
    if (last)
        slot_free(old);
    return 0;
}

uint64_t eg_bridge_swap_generation(struct eg_bridge *swap)
{
    if (!swap || swap->ops != &swap_ops)
        return 0;
    struct swap *s = swap->impl;
    pthread_mutex_lock(&s->lock);
    uint64_t g = s->gen;
    pthread_mutex_unlock(&s->lock);
    return g;
}

size_t eg_bridge_swap_retiring(struct eg_bridge *swap)
{
    if (!swap || swap->ops != &swap_ops)
        return 0;
    struct swap *s = swap->impl;
    pthread_mutex_lock(&s->lock);
    size_t n = s->retiring;
    pthread_mutex_unlock(&s->lock);
    return n;
}
