/* eo_token.h - app-only OAuth2 access tokens for Exchange Online (psrp-wire.md §16).
 *
 * The client-credentials grant with a certificate: a client assertion JWT signed RS256 with the
 * app's private key (header {"alg":"RS256","typ":"JWT","x5t":base64url(SHA-1 of the certificate
 * DER)}; claims aud = the token URL, iss = sub = the app id, jti a random UUID, nbf = now, exp =
 * now + EG_EO_ASSERTION_LIFETIME_S) is POSTed form-urlencoded to the token URL with
 * scope=https://outlook.office365.com/.default. The access token is cached until
 * min(EG_EO_REFRESH_MARGIN_S, 10 % of its lifetime) before it expires; at most one request for a
 * new one is in flight (callers wait for it under a mutex). A caller whose token was refused
 * (HTTP 401) drops it with eg_eo_token_invalidate. Tokens and assertions are secrets: never
 * logged, never in an error text, wiped when freed. Nothing here logs. Thread-safe.
 */
#ifndef EG_EO_TOKEN_H
#define EG_EO_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/bridge.h"

#define EG_EO_SCOPE "https://outlook.office365.com/.default"

struct eg_eo_token_opts {
    const char *app_id;    /* client_id; required (letters, digits, '-', '.', '_') */
    const char *cert_pem;  /* the app's certificate (PEM); required */
    const char *key_pem;   /* its RSA private key (PEM, unencrypted); secret: not kept */
    const char *token_url; /* required, http(s) (http only with allow_http) */
    const char *ca_file;   /* PEM trust anchors for https; NULL = the system store */
    bool insecure;         /* https without verification (tests) */
    bool allow_http;       /* permit an http:// token URL (loopback tests only) */
    int64_t connect_timeout_ms, io_timeout_ms, response_timeout_ms; /* 0 = defaults */
    /* Monotonic clock in ms for the cache (NULL = eg_mono_ms); a test hook. */
    int64_t (*clock_ms)(void);
};

struct eg_eo_token;

/* Parse and check the certificate and key (an RSA key matching the certificate). Nothing is
 * fetched yet. Returns 0, EG_EINVAL (missing or malformed field, not RSA, mismatched key, bad
 * URL), EG_ENOMEM. Free with eg_eo_token_free. */
int eg_eo_token_new(const struct eg_eo_token_opts *o, struct eg_eo_token **ret) EG_MUST_CHECK;

/* Wipe the cached token and free. Accepts NULL. */
void eg_eo_token_free(struct eg_eo_token *t);

/* A fresh client assertion for wall-clock time now_s (seconds since the epoch). On success *ret
 * is a new string (a secret: wipe with eg_memzero before eg_free). Returns 0, EG_ENOMEM,
 * EG_EINTERNAL (OpenSSL failed). */
int eg_eo_token_assertion(struct eg_eo_token *t, int64_t now_s, char **ret) EG_MUST_CHECK;

/* A valid access token: the cached one, or a new one fetched now. On success *ret is a new
 * copy (wipe and free it). On failure err says why: permission_denied for a refused app
 * (AADSTS errors; not transient), throttled (429), exchange_unreachable / timeout (transient).
 * Returns 0, EG_EAUTH, EG_EAGAIN, EG_EUNAVAIL, EG_ETIMEDOUT, EG_EPROTO, EG_ENOMEM. */
int eg_eo_token_get(struct eg_eo_token *t, char **ret, struct eg_bridge_error *err) EG_MUST_CHECK;

/* Forget the cached token if it still is `token` (a request with it got HTTP 401). */
void eg_eo_token_invalidate(struct eg_eo_token *t, const char *token);

/* Token requests sent so far (tests, metrics). */
unsigned long eg_eo_token_fetches(const struct eg_eo_token *t);

#endif
