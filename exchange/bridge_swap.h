/* bridge_swap.h - a bridge whose backend can be replaced while it is in use.
 *
 * Every operation forwards to the current inner bridge, holding a reference to it for the whole
 * call (reference count under a mutex). eg_bridge_swap_set installs a new inner bridge for the
 * calls that start afterwards; calls already in flight finish on the old one, which is freed by
 * whoever drops its last reference (the swap itself when it was idle, else the last call to
 * return). So the workers keep one bridge pointer for their whole life while the console changes
 * the Exchange target underneath.
 *
 * Inventory cursors are tagged with the generation of the inner bridge that made them: a cursor
 * handed back after a swap is refused with a transient exchange_unreachable error (the worker
 * then starts the inventory again, on the new target) instead of reaching a backend that never
 * issued it. Thread-safe.
 */
#ifndef EG_BRIDGE_SWAP_H
#define EG_BRIDGE_SWAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/bridge.h"

/* Create a swappable bridge over initial (ownership passes to it, also on failure). Free it
 * with eg_bridge_free once no call is in flight; that frees the current inner bridge.
 * Returns 0, EG_EINVAL (initial NULL or without ops), EG_ENOMEM. */
int eg_bridge_swap_new(struct eg_bridge *initial, struct eg_bridge **ret) EG_MUST_CHECK;

/* Install next (ownership passes, also on failure) for every call that starts from now on. The
 * previous inner bridge is freed now when no call uses it, else when its last call returns.
 * Returns 0, EG_EINVAL (swap is not a swappable bridge, next NULL or without ops). */
int eg_bridge_swap_set(struct eg_bridge *swap, struct eg_bridge *next) EG_MUST_CHECK;

/* How many times an inner bridge was installed (1 after eg_bridge_swap_new). 0 for NULL. */
uint64_t eg_bridge_swap_generation(struct eg_bridge *swap);

/* Replaced inner bridges that still have calls in flight (0 once they all returned). */
size_t eg_bridge_swap_retiring(struct eg_bridge *swap);

#endif
