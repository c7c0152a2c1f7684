/* bridge_psrp.h - the on-premises Exchange backend: the bridge operations over PowerShell
 * remoting (exchange/psrp_pool.h) to http(s)://server/PowerShell, configuration
 * Microsoft.Exchange.
 *
 * The pool is opened on first use, not at construction, so the daemon starts while Exchange is
 * unreachable; a failed open is a transient exchange_unreachable error and the next call tries
 * again. The Exchange version is detected once per opened pool (Get-ExchangeServer's
 * AdminDisplayVersion) unless configured, and picks the cmdlet catalogue: 2010
 * *-ActiveSyncDevice*, 2013+ *-MobileDevice*, -AccountOnly only on 2016+ (else the wipe fails
 * with `unsupported` before anything is sent). Every call is a cmdlet with typed parameters.
 */
#ifndef EG_BRIDGE_PSRP_H
#define EG_BRIDGE_PSRP_H

#include "common/error.h"
#include "exchange/bridge.h"
#include "exchange/psrp_pool.h"

enum eg_exchange_version {
    EG_EXCHANGE_UNKNOWN = 0,
    EG_EXCHANGE_2010,
    EG_EXCHANGE_2013,
    EG_EXCHANGE_2016, /* also 2019 and SE: the same cmdlets */
};

/* "2010", "2013", "2016", "2019", "se" (case-insensitive); 0 or EG_EINVAL. */
int eg_exchange_version_parse(const char *s, enum eg_exchange_version *ret) EG_MUST_CHECK;
const char *eg_exchange_version_name(enum eg_exchange_version v);
/* From an AdminDisplayVersion text ("Version 15.1 (Build 2507.6)", "15.2.1118.7", "Version 14.3
 * (Build 123.4)"): 14 -> 2010, 15.0 -> 2013, 15.1+ -> 2016. EG_EINVAL when unreadable. */
int eg_exchange_version_from_text(const char *text, enum eg_exchange_version *ret) EG_MUST_CHECK;

struct eg_bridge_psrp_opts {
    struct eg_psrp_pool_opts pool;    /* strings are copied */
    enum eg_exchange_version version; /* EG_EXCHANGE_UNKNOWN = detect */
};

/* Create the backend (nothing is connected yet). Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_bridge_psrp_new(const struct eg_bridge_psrp_opts *o, struct eg_bridge **ret) EG_MUST_CHECK;

/* The version in use (UNKNOWN until the first successful open). */
enum eg_exchange_version eg_bridge_psrp_version(struct eg_bridge *b);

#endif
