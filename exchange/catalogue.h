/* catalogue.h - every bridge operation as Exchange cmdlets, independent of the transport.
 *
 * The catalogue turns each eg_bridge_ops operation into structured commands (eg_ps_command:
 * cmdlet name + typed parameters, never script text) for the Exchange version at hand, and hands
 * them one at a time to a runner: the PSRP runner (exchange/bridge_psrp.c, a runspace pool) or
 * the REST runner (exchange/bridge_rest.c, Exchange Online's InvokeCommand). A runner streams a
 * command's output objects back as eg_ps_value objects (REST turns its JSON into the same shape)
 * and reports failures as eg_bridge_error, classified with exchange/classify.h.
 *
 * Operations (exchange-semantics.md):
 *   list_edit      Get-CASMailbox -Identity, then only when something changes one Set-CASMailbox
 *                  with @{Add;Remove} for both lists (exchange/list_plan.h)
 *   wipe           Get-MobileDevice -Mailbox (resolves the device's Identity), then
 *                  Clear-MobileDevice -Identity [-AccountOnly] [-NotificationEmailAddresses]
 *                  -Confirm:$false
 *   wipe_cancel    the same with -Cancel
 *   remove_device  Get-MobileDevice -Mailbox, then Remove-MobileDevice -Identity -Confirm:$false
 *   set_mailbox    Set-CASMailbox -Identity [-ActiveSyncEnabled] [-ActiveSyncMailboxPolicy]
 *   set_org_default_access   Set-ActiveSyncOrganizationSettings -DefaultAccessLevel
 *   inventory_page Get-MobileDevice [-Mailbox] [-Filter "WhenChanged -gt '<UTC>'"]
 *                  -ResultSize Unlimited, streamed (one page)
 *   mailbox_lists  Get-CASMailbox -Identity, or -Filter "HasActiveSyncDevicePartnership -eq $true"
 *                  (with since: "WhenChanged -gt '<UTC>'") -ResultSize Unlimited, streamed
 *   device_stats   Get-MobileDeviceStatistics -Identity (2010: Get-ActiveSyncDeviceStatistics),
 *                  the Identity resolved with Get-MobileDevice -Mailbox when not given
 *   probe          Get-OrganizationConfig (read-only), which also connects when needed
 *   status         {"kind":"onprem"|"online","version":"2010"|"2013"|"2016"|"online"|"unknown",
 *                   "url":...,"concurrency":{"limit","ceiling","inside","throttles"}}
 * Versions: 2010 uses *-ActiveSyncDevice*, 2013+ and Online *-MobileDevice*; -AccountOnly exists
 * on 2016+ and Online only: elsewhere the wipe fails with `unsupported` before anything is sent.
 * An unknown version is detected before the first operation that depends on it, from
 * Get-ExchangeServer's AdminDisplayVersion (an account that may not run it is assumed 2016+).
 *
 * Concurrency: every runner call passes the adaptive gate (exchange/gate.h) whose ceiling the
 * backend names (PSRP: the pool's max_pipelines); a call whose error is load
 * (eg_classify_is_load) is reported EG_GATE_THROTTLED, a transport failure (unreachable,
 * timeout, internal) EG_GATE_ERROR, anything else EG_GATE_OK. Thread-safe.
 */
#ifndef EG_CATALOGUE_H
#define EG_CATALOGUE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/bridge.h"
#include "exchange/classify.h"
#include "exchange/clixml.h"
#include "exchange/psrp_objects.h"

enum eg_exchange_version {
    EG_EXCHANGE_UNKNOWN = 0,
    EG_EXCHANGE_2010,
    EG_EXCHANGE_2013,
    EG_EXCHANGE_2016, /* also 2019 and SE: the same cmdlets */
    EG_EXCHANGE_ONLINE,
};

/* "2010", "2013", "2016", "2019", "se" (case-insensitive); 0 or EG_EINVAL. (Online is not an
 * on-prem version to configure: it is the REST backend's.) */
int eg_exchange_version_parse(const char *s, enum eg_exchange_version *ret) EG_MUST_CHECK;
/* "2010", "2013", "2016", "online" or "unknown". */
const char *eg_exchange_version_name(enum eg_exchange_version v);
/* From an AdminDisplayVersion text ("Version 15.1 (Build 2507.6)", "15.2.1118.7", "Version 14.3
 * (Build 123.4)"): 14 -> 2010, 15.0 -> 2013, 15.1+ -> 2016. EG_EINVAL when unreadable. */
int eg_exchange_version_from_text(const char *text, enum eg_exchange_version *ret) EG_MUST_CHECK;

/* Receives one output object; ownership passes to the callee. 0 to go on; a non-zero value stops
 * the command and is what the runner returns. */
typedef int (*eg_catalogue_output_fn)(void *ctx, struct eg_ps_value *v);

/* What a transport implements for the catalogue. */
struct eg_catalogue_runner_ops {
    const char *name; /* the bridge's name: "psrp", "rest" */
    /* Run cmd (taken over, also on failure), connecting first when needed. Each output object
     * goes to out (which may be NULL: objects are dropped). A non-terminating error record also
     * fails the call (Exchange reports "not found" and scope problems that way). Returns 0; the
     * non-zero value out returned (err: internal "stopped by the caller"); or a negative EG_E*
     * with err filled in and classified for target. Called from several threads at once. */
    int (*run)(void *runner, struct eg_ps_command *cmd, enum eg_classify_target target,
               eg_catalogue_output_fn out, void *out_ctx, struct eg_bridge_error *err);
    /* The endpoint for status (borrowed, never a secret), or NULL. Optional. */
    const char *(*url)(void *runner);
    /* Free the runner. Accepts NULL. */
    void (*destroy)(void *runner);
};

struct eg_catalogue_opts {
    const struct eg_catalogue_runner_ops *ops; /* required: name, run, destroy */
    void *runner;                              /* taken over, also when creation fails */
    enum eg_exchange_version version;          /* UNKNOWN = detect at first use */
    bool online;                               /* status kind "online" instead of "onprem" */
    unsigned ceiling;                          /* calls at once, 1..EG_PSRP_MAX_PIPELINES */
    unsigned recover_after;                    /* successes before the gate grows again; 0 = 10 */
    int64_t gate_wait_ms; /* longest wait for a slot, then a transient `throttled` error;
                             0 = 300000 */
};

/* A bridge running every operation through o->runner. Returns 0, EG_EINVAL (missing ops,
 * ceiling out of range; the runner is destroyed), EG_ENOMEM. Free with eg_bridge_free. */
int eg_catalogue_bridge_new(const struct eg_catalogue_opts *o,
                            struct eg_bridge **ret) EG_MUST_CHECK;

/* The version in use: the configured one, else the detected one (UNKNOWN until detected, and for
 * a bridge that is not a catalogue's). */
enum eg_exchange_version eg_catalogue_version(struct eg_bridge *b);

/* The runner of a catalogue bridge whose runner has exactly these ops, else NULL (lets a backend
 * find its own state behind a bridge). */
void *eg_catalogue_runner(struct eg_bridge *b, const struct eg_catalogue_runner_ops *ops);

#endif
