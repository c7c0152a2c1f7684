/* server.h - the console-facing HTTP(S) server on port 9090 (libmicrohttpd + GnuTLS).
 *
 * Owns everything below the application: TLS, client-certificate enforcement (libmicrohttpd only
 * requests a certificate; this module verifies it against the configured CA and refuses requests
 * without a valid one), bearer-token checking in constant time, request limits (header bytes ->
 * 431, body bytes -> 413, both application/problem+json; connection count; idle timeout), and
 * reload of TLS material. The application sees complete, authenticated requests through one
 * handler callback.
 *
 * Client protection: a token bucket per client identity (the SHA-256 fingerprint of a verified
 * client certificate, else the peer IP address; at most EG_MAX_RATE_CLIENTS kept, the least
 * recently seen evicted) answers 429 problem+json with Retry-After once a client is over
 * rate_per_s (public paths are exempt); at most max_connections_per_client connections per peer
 * IP address (more are closed at once), max_connections in all; a connection is cut when a
 * request (TLS handshake, headers and body) is still arriving conn_timeout_s after it began (or
 * after the previous response on a kept-alive connection), however slowly it trickles in, and
 * when it is idle that long.
 *
 * Authentication policy: each configured method is required (client_ca set -> a verified client
 * certificate; token set -> "Authorization: Bearer <token>"). Paths listed in public_paths
 * (e.g. "/healthz") skip authentication. Failures: 403 for certificate problems, 401 with
 * WWW-Authenticate for token problems.
 */
#ifndef EG_SERVER_H
#define EG_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/limits.h"

struct eg_http_query_arg {
    const char *key;
    const char *value; /* NULL for "?flag" */
};

struct eg_http_request {
    const char *method;
    const char *path; /* without the query string */
    const struct eg_http_query_arg *args;
    size_t n_args;
    const char *content_type; /* may be NULL */
    const char *body;         /* NUL-terminated, may contain NULs; NULL if no body */
    size_t body_len;
    const char *client; /* authenticated identity: client cert subject DN, or "token",
                           or "anonymous" for public paths / no-auth mode */
};

/* A header the handler adds to its response. */
struct eg_http_header {
    const char *name;
    char *value; /* owned by the response, eg_free'd */
};

#define EG_HTTP_MAX_RESP_HEADERS 4

struct eg_http_response {
    int status;
    const char *content_type; /* static string */
    char *body;               /* owned, freed by the server with eg_free */
    size_t body_len;
    struct eg_http_header headers[EG_HTTP_MAX_RESP_HEADERS];
    size_t n_headers;
    const char *route; /* route template for metrics, static string */
};

/* Called for each complete request from a server thread (several at once). Must fill resp. */
typedef void (*eg_http_handler)(void *ctx, const struct eg_http_request *req,
                                struct eg_http_response *resp);
/* Called after the server itself answered (limits, auth), for metrics. May be NULL. */
typedef void (*eg_http_observer)(void *ctx, const char *route, int status);

struct eg_server_opts {
    const char *listen_addr;             /* IPv4 or IPv6 literal, or "localhost" */
    uint16_t port;                       /* 0 = any free port */
    bool tls;                            /* false = plain HTTP */
    const char *cert_file, *key_file;    /* required with tls */
    const char *client_ca_file;          /* NULL = no client certificates */
    const char *priorities;              /* GnuTLS priority string, NULL = a modern default */
    const char *token;                   /* bearer token (secret, copied), NULL = no token auth */
    const char *const *public_paths;     /* NULL-terminated, may be NULL */
    size_t max_header_bytes;             /* 0 = EG_MAX_HEADER_BYTES */
    size_t max_body_bytes;               /* 0 = EG_DEFAULT_MAX_BODY */
    unsigned max_connections;            /* 0 = EG_DEFAULT_MAX_CONNECTIONS */
    unsigned conn_timeout_s;             /* 0 = EG_DEFAULT_CONN_TIMEOUT_S */
    unsigned max_connections_per_client; /* per peer IP; 0 = EG_DEFAULT_MAX_CONN_PER_CLIENT */
    unsigned rate_per_s; /* requests per second per client identity; 0 = no rate limit */
    unsigned rate_burst; /* token bucket size; 0 = 2 * rate_per_s */
    unsigned threads;    /* 0 = 4 */
    eg_http_handler handler;
    eg_http_observer observer;
    void *ctx;
};

struct eg_server;

/* Bind, listen and start serving. Files are read now. Returns 0, EG_EINVAL, EG_ETLS (bad
 * certificate/key/CA; *ret_error says which file and why when non-NULL, caller frees with
 * eg_free), EG_EIO (bind failed), EG_ENOMEM. */
int eg_server_start(const struct eg_server_opts *opts, struct eg_server **ret,
                    char **ret_error) EG_MUST_CHECK;

/* The bound port (useful with port 0). */
uint16_t eg_server_port(const struct eg_server *s);

/* Re-read certificate, key and client CA from the same paths and serve new connections with
 * them, keeping the listening socket; connections in progress finish with the old material.
 * On failure the old material stays in force. Returns 0, EG_ETLS, EG_ENOMEM, EG_EUNSUPPORTED
 * (plain HTTP). */
int eg_server_reload_tls(struct eg_server *s, char **ret_error) EG_MUST_CHECK;

/* Stop accepting, give in-flight requests up to drain_ms to finish, then close everything and
 * free. Accepts NULL. */
void eg_server_stop(struct eg_server *s, int64_t drain_ms);

/* Helpers for handlers: set resp to a JSON body (takes ownership of text) or an RFC 9457
 * problem+json (title derived from status; field may be NULL). */
void eg_http_respond_json(struct eg_http_response *resp, int status, char *text);
void eg_http_respond_problem(struct eg_http_response *resp, int status, const char *detail,
                             const char *field);
/* Value of query argument key, or NULL. */
const char *eg_http_query(const struct eg_http_request *req, const char *key);

#endif
