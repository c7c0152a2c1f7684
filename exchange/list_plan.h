/* list_plan.h - the difference computation behind every allow/block list edit.
 *
 * Given a coalesced edit (struct eg_list_edit) and a mailbox's current
 * ActiveSyncAllowedDeviceIDs / ActiveSyncBlockedDeviceIDs, compute the desired lists and what must
 * be added to and removed from each, so that a backend sends one Set-CASMailbox with
 * @{Add=...;Remove=...} for both lists, or nothing at all when the lists are already right.
 * Device IDs compare case-insensitively (as Exchange compares them); removals use the spelling that
 * is in the current list, additions the spelling of the command. Shared by every backend.
 */
#ifndef EG_LIST_PLAN_H
#define EG_LIST_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "exchange/bridge.h"

/* A string vector; the strings are owned by the plan. */
struct eg_strv {
    char **v;
    size_t n;
};

struct eg_list_plan {
    struct eg_strv allow_add, allow_remove, block_add, block_remove;
    struct eg_strv final_allowed, final_blocked; /* the lists after the change */
};

/* Compute the plan. cur_* are the mailbox's current lists (borrowed). On success *ret is a new plan
 * (free with eg_list_plan_free). Returns 0, EG_EINVAL (NULL edit), EG_ENOMEM. */
int eg_list_plan_compute(const struct eg_list_edit *edit, const char *const *cur_allowed,
                         size_t n_cur_allowed, const char *const *cur_blocked, size_t n_cur_blocked,
                         struct eg_list_plan **ret) EG_MUST_CHECK;

/* True when the plan changes nothing (no Set-CASMailbox needed). */
bool eg_list_plan_empty(const struct eg_list_plan *p);

void eg_list_plan_free(struct eg_list_plan *p);

/* Append a copy of s to v. Returns 0 or EG_ENOMEM. */
int eg_strv_push(struct eg_strv *v, const char *s) EG_MUST_CHECK;
/* Index of s in v compared case-insensitively, or -1. */
long eg_strv_find(const struct eg_strv *v, const char *s);
/* Remove index i (order kept). */
void eg_strv_remove(struct eg_strv *v, size_t i);
/* Free the strings and the array; v is left empty. */
void eg_strv_clear(struct eg_strv *v);

#endif
