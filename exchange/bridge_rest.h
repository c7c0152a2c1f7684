/* bridge_rest.h - the Exchange Online backend: the bridge operations over the REST InvokeCommand
 * call (psrp-wire.md §16) with an app-only OAuth2 token obtained with a certificate-signed client
 * assertion (exchange/eo_token.h).
 *
 * The same cmdlet catalogue as on-prem (exchange/catalogue.h) in its Online flavour
 * (*-MobileDevice*, -AccountOnly allowed). Requests carry the headers of the wire reference,
 * follow @odata.nextLink, honour 429/503/504 with Retry-After, and error JSON is classified into
 * the same stable codes as on-prem. Nothing is connected at construction. Thread-safe.
 */
#ifndef EG_BRIDGE_REST_H
#define EG_BRIDGE_REST_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/bridge.h"

struct eg_bridge_rest_opts {
    const char *tenant;   /* tenant GUID or contoso.onmicrosoft.com; required */
    const char *app_id;   /* Entra application (client) id; required */
    const char *cert_pem; /* the app's certificate, PEM text; required */
    const char *key_pem;  /* its private key, PEM text; secret: copied, wiped on free */
    const char *api_url;  /* NULL = "https://outlook.office365.com/adminapi/beta"; the call
                             goes to <api_url>/<tenant>/InvokeCommand */
    const char
        *token_url;      /* NULL = "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token" */
    const char *ca_file; /* PEM trust anchors for https; NULL = the system store */
    bool insecure;       /* https without verification (explicit opt-in, tests) */
    bool allow_http;     /* permit http:// URLs (loopback tests against the mock only) */
    unsigned max_concurrency;    /* calls at once, 1..EG_PSRP_MAX_PIPELINES; 0 = 4 */
    int64_t connect_timeout_ms;  /* 0 = 10000 */
    int64_t io_timeout_ms;       /* no byte received or sent for this long; 0 = 10000 */
    int64_t response_timeout_ms; /* one whole request; 0 = 60000 */
};

/* Create the backend. Checks the options and parses the certificate and key (they must match);
 * returns 0, EG_EINVAL (a missing or malformed field, mismatched key), EG_ENOMEM. */
int eg_bridge_rest_new(const struct eg_bridge_rest_opts *o, struct eg_bridge **ret) EG_MUST_CHECK;

#endif
