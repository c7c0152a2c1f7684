/* frontend.h - the mock Exchange's network front ends: the WS-Man/PSRP endpoint at
 * POST /PowerShell on one or more listeners (HTTP or HTTPS; Basic, Negotiate, Kerberos or NTLM
 * authentication with message sealing over HTTP) and the JSON
 * control API on its own loopback listener. One org (engine.h) serves every listener.
 *
 * Used by main.c only; the design is described in docs/internals/mock-exchange.md ("Front end").
 * Shells belong to the listener that created them (each listener plays one Exchange server:
 * a request for a shell through another listener gets InvalidSelectors, and taking a listener
 * down loses its shells) unless shared_shells is set.
 */
#ifndef MX_FRONTEND_H
#define MX_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine.h"

struct mx_fe_opts {
    /* the org */
    enum mx_profile profile;
    uint64_t seed;
    size_t mailboxes, devices;
    bool seed_lists;
    /* listeners: "ADDR:PORT" (port 0 = any free port); at least one */
    const char *const *listen;
    size_t n_listen;
    const char *control;    /* "ADDR:PORT" of the control API (loopback only); NULL = none */
    const char *users_file; /* "user:password" lines; NULL = no authentication */
    const char *tls_cert;   /* PEM files: both or neither (HTTPS on every listener) */
    const char *tls_key;
    bool shared_shells; /* every listener sees every shell */
    const char *realm;  /* WWW-Authenticate realm; NULL = "easgate-mock-exchange" */
    /* REST front end (rest_server.c; zero/NULL = default) */
    const char *tenant;       /* tenant GUID or domain; NULL = the defaults (see --help) */
    const char *app_cert;     /* PEM certificate of the app's client assertions; NULL = none */
    const char *app_id;       /* the app's client_id; NULL = the default */
    int64_t token_lifetime_s; /* access token lifetime; 0 = 3599 */
    /* GSSAPI on /PowerShell (gss_auth.c): accepted schemes (MX_GSS_* bits; 0 = none) and the
     * service keytab (HTTP/<host>@REALM; NULL = KRB5_KTNAME). With schemes, a request that is
     * neither GSS-authenticated nor Basic against users_file gets 401; over http every body
     * after the handshake must be sealed and every reply is. */
    unsigned gss_schemes;
    const char *gss_keytab;
};

#define MX_GSS_NEGOTIATE 1u /* "Negotiate" (SPNEGO: Kerberos or NTLM) */
#define MX_GSS_KERBEROS  2u /* "Kerberos" */
#define MX_GSS_NTLM      4u /* NTLM (raw or inside "Negotiate") */

/* "negotiate,kerberos,ntlm" (any subset, any case) -> MX_GSS_* bits; 0 for an unknown name or
 * an empty list. */
unsigned mx_gss_parse_schemes(const char *list);

struct mx_fe;

/* Build the org, read the users and TLS files, bind every listener and start serving.
 * On failure err (err_size bytes) says why. On success *ret is the running front end (stop and
 * free with mx_fe_free). Returns 0, EG_EINVAL (bad option), EG_EIO (file or socket error),
 * EG_ETLS, EG_ELIMIT, EG_ENOMEM. */
int mx_fe_start(const struct mx_fe_opts *o, struct mx_fe **ret, char *err,
                size_t err_size) EG_MUST_CHECK;

/* Bound ports: listener i (kept while it is down: it comes back on the same port) and the
 * control listener (0 if none). */
uint16_t mx_fe_port(const struct mx_fe *fe, size_t i);
size_t mx_fe_listener_count(const struct mx_fe *fe);
uint16_t mx_fe_control_port(const struct mx_fe *fe);

/* Stop accepting, end every pipeline and connection, free everything. Accepts NULL. */
void mx_fe_free(struct mx_fe *fe);

#endif
