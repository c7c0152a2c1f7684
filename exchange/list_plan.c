/* list_plan.c - desired lists and the Add/Remove difference for one mailbox. */
#include "exchange/list_plan.h"

#include <string.h>
#include <strings.h>

#include "common/alloc.h"

int eg_strv_push(struct eg_strv *v, const char *s)
{
    char *copy = eg_strdup(s);
    if (!copy)
        return EG_ENOMEM;
    char **nv = eg_reallocarray(v->v, v->n + 1, sizeof *nv);
    if (!nv) {
        eg_free(copy);
        return EG_ENOMEM;
    }
    v->v = nv;
    v->v[v->n++] = copy;
    return 0;
}

long eg_strv_find(const struct eg_strv *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcasecmp(v->v[i], s) == 0)
            return (long)i;
    return -1;
}

void eg_strv_remove(struct eg_strv *v, size_t i)
{
    if (i >= v->n)
        return;
    eg_free(v->v[i]);
    memmove(&v->v[i], &v->v[i + 1], (v->n - i - 1) * sizeof v->v[0]);
    v->n--;
}

void eg_strv_clear(struct eg_strv *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        eg_free(v->v[i]);
    eg_free(v->v);
    v->v = NULL;
    v->n = 0;
}

void eg_list_plan_free(struct eg_list_plan *p)
{
    if (!p)
        return;
    eg_strv_clear(&p->allow_add);
    eg_strv_clear(&p->allow_remove);
    eg_strv_clear(&p->block_add);
    eg_strv_clear(&p->block_remove);
    eg_strv_clear(&p->final_allowed);
    eg_strv_clear(&p->final_blocked);
    eg_free(p);
}

bool eg_list_plan_empty(const struct eg_list_plan *p)
{
    return !p->allow_add.n && !p->allow_remove.n && !p->block_add.n && !p->block_remove.n;
}

/* Add s to v unless already there (case-insensitively). */
static int add_unique(struct eg_strv *v, const char *s)
{
    return eg_strv_find(v, s) >= 0 ? 0 : eg_strv_push(v, s);
}

static void drop(struct eg_strv *v, const char *s)
{
    long i = eg_strv_find(v, s);
    if (i >= 0)
        eg_strv_remove(v, (size_t)i);
}

static int load(struct eg_strv *v, const char *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = add_unique(v, items[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* to_add = desired - current; to_remove = current - desired (current spelling). */
static int diff(const struct eg_strv *desired, const struct eg_strv *current,
                struct eg_strv *to_add, struct eg_strv *to_remove)
{
    int rc;
    for (size_t i = 0; i < desired->n; i++)
        if (eg_strv_find(current, desired->v[i]) < 0 &&
            (rc = eg_strv_push(to_add, desired->v[i])) < 0)
            return rc;
    for (size_t i = 0; i < current->n; i++)
        if (eg_strv_find(desired, current->v[i]) < 0 &&
            (rc = eg_strv_push(to_remove, current->v[i])) < 0)
            return rc;
    return 0;
}

int eg_list_plan_compute(const struct eg_list_edit *edit, const char *const *cur_allowed,
                         size_t n_cur_allowed, const char *const *cur_blocked, size_t n_cur_blocked,
                         struct eg_list_plan **ret)
{
    struct eg_list_plan *p = NULL;
    struct eg_strv cur_a = {0}, cur_b = {0};
    int rc = 0;

    if (!edit || !ret)
        return EG_EINVAL;
    p = eg_calloc(1, sizeof *p);
    if (!p)
        return EG_ENOMEM;
    if ((rc = load(&cur_a, cur_allowed, n_cur_allowed)) < 0 ||
        (rc = load(&cur_b, cur_blocked, n_cur_blocked)) < 0)
        goto out;
    if (edit->has_base) {
        if ((rc = load(&p->final_allowed, edit->base_allowed, edit->n_base_allowed)) < 0 ||
            (rc = load(&p->final_blocked, edit->base_blocked, edit->n_base_blocked)) < 0)
            goto out;
    } else {
        if ((rc = load(&p->final_allowed, cur_allowed, n_cur_allowed)) < 0 ||
            (rc = load(&p->final_blocked, cur_blocked, n_cur_blocked)) < 0)
            goto out;
    }
    for (size_t i = 0; i < edit->n_overrides; i++) {
        const struct eg_device_override *o = &edit->overrides[i];
        drop(&p->final_allowed, o->device_id);
        drop(&p->final_blocked, o->device_id);
        if (o->target == EG_LIST_ALLOW)
            rc = eg_strv_push(&p->final_allowed, o->device_id);
        else if (o->target == EG_LIST_BLOCK)
            rc = eg_strv_push(&p->final_blocked, o->device_id);
        if (rc < 0)
            goto out;
    }
    if ((rc = diff(&p->final_allowed, &cur_a, &p->allow_add, &p->allow_remove)) < 0 ||
        (rc = diff(&p->final_blocked, &cur_b, &p->block_add, &p->block_remove)) < 0)
        goto out;
    *ret = p;
    p = NULL;
out:
    eg_strv_clear(&cur_a);
    eg_strv_clear(&cur_b);
    eg_list_plan_free(p);
    return rc;
}
