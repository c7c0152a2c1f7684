/* bridge_psrp.h - the on-premises Exchange backend: the cmdlet catalogue (exchange/catalogue.h)
 * run over PowerShell remoting (exchange/psrp_pool.h) to http(s)://server/PowerShell,
 * configuration Microsoft.Exchange.
 *
 * The pool is opened on first use, not at construction, so the daemon starts while Exchange is
 * unreachable; a failed open is a transient exchange_unreachable (or timeout) error and the next
 * call tries again. The Exchange version is detected once (Get-ExchangeServer's
 * AdminDisplayVersion) unless configured, and picks the cmdlets: 2010 *-ActiveSyncDevice*, 2013+
 * *-MobileDevice*, -AccountOnly only on 2016+ (else the wipe fails with `unsupported` before
 * anything is sent). Every call is a cmdlet with typed parameters, through the catalogue's
 * adaptive concurrency gate whose ceiling is the pool's max_pipelines.
 */
#ifndef EG_BRIDGE_PSRP_H
#define EG_BRIDGE_PSRP_H

#include "common/error.h"
#include "exchange/bridge.h"
#include "exchange/catalogue.h"
#include "exchange/psrp_pool.h"

/* Kerberos / NTLM credentials of the bridge (pool.auth EG_HTTP_CLIENT_AUTH_GSS with
 * pool.gss_cred NULL). The bridge makes one eg_gss_cred (scheme pool.gss_scheme) from them on
 * first use, not at construction, so that the daemon starts while the KDC is unreachable; the
 * credential then serves every connection and renews its tickets, and is freed with the bridge
 * (a new target configuration makes new bridges). A failure to get one (wrong password,
 * unknown principal, clock skew) fails the call with permission_denied and the GSSAPI reason;
 * an unreachable KDC with exchange_unreachable; the next call tries again. */
struct eg_bridge_psrp_gss {
    const char *principal; /* Kerberos "user@REALM" / NTLM "DOMAIN\user"; required */
    const char *password;  /* secret: copied, wiped when the bridge is freed */
    const char *keytab;    /* Kerberos client keytab path (instead of password) */
};

struct eg_bridge_psrp_opts {
    struct eg_psrp_pool_opts pool;    /* strings are copied; timeouts checked here already;
                                         pool.gss_cred, if set, is borrowed */
    enum eg_exchange_version version; /* EG_EXCHANGE_UNKNOWN = detect; not ONLINE */
    struct eg_bridge_psrp_gss gss;    /* with AUTH_GSS and no pool.gss_cred */
};

/* Create the backend (nothing is connected yet). Returns 0, EG_EINVAL (no URL, max_pipelines
 * or a timeout out of range, version ONLINE, AUTH_GSS without gss_cred or gss.principal),
 * EG_ENOMEM. */
int eg_bridge_psrp_new(const struct eg_bridge_psrp_opts *o, struct eg_bridge **ret) EG_MUST_CHECK;

/* The version in use: the configured one, else the detected one (UNKNOWN until detected, or for
 * a bridge that is not a PSRP one). */
enum eg_exchange_version eg_bridge_psrp_version(struct eg_bridge *b);

#endif
