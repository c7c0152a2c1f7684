/* http_client.h - a small libcurl client for one HTTP endpoint (on-prem Exchange /PowerShell,
 * Exchange Online's REST API and its token endpoint).
 *
 * One client = one libcurl easy handle = at most one kept-alive connection to the target, reused
 * by every request (WS-Man sessions want that: Kerberos/NTLM authenticate the connection and
 * message encryption is bound to it; psrp-wire.md sections 1 and 14). eg_http_client_post is the
 * WS-Man POST; eg_http_client_request is the general form (method, another URL of the same
 * origin, extra request headers, response headers). The whole response body is returned,
 * whatever the HTTP status (SOAP faults come with 500, REST errors with 4xx/5xx).
 *
 * Timeouts: connect (TCP + TLS handshake), io (no byte sent or received for this long: libcurl's
 * low-speed limit of 1 byte/s over that time, in whole seconds, rounded up) and response (the
 * whole request). A connect that fails or times out is EG_EUNAVAIL (nothing was sent); any other
 * timeout is EG_ETIMEDOUT.
 *
 * Security defaults: TLS peer and host name verification on (system store, or ca_file), TLS 1.2
 * or newer; `insecure` turns verification off and must be asked for explicitly. Only http and
 * https, no redirects followed, no proxy unless one is configured (environment proxies are
 * ignored), credentials never in the URL. Basic authentication is refused over plain http
 * unless allow_cleartext_auth is set (tests). The password is handed to libcurl (which keeps
 * its own copy until eg_http_client_free) and is not kept by this module; it never appears in
 * an error text. Nothing here logs.
 *
 * Threads: a client is thread-compatible, not thread-safe: use one client per thread (or a
 * small pool, one request at a time per client). eg_http_client_new initialises libcurl
 * globally once (thread-safe, pthread_once).
 */
#ifndef EG_HTTP_CLIENT_H
#define EG_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/limits.h"
#include "transport/gss.h"

/* Content-Type of a SOAP 1.2 request (the default of eg_http_client_post). */
#define EG_HTTP_CLIENT_SOAP_TYPE "application/soap+xml;charset=UTF-8"

enum eg_http_client_auth {
    EG_HTTP_CLIENT_AUTH_NONE = 0,
    EG_HTTP_CLIENT_AUTH_BASIC,     /* Authorization: Basic, sent on the first request */
    EG_HTTP_CLIENT_AUTH_NEGOTIATE, /* SPNEGO (Kerberos) through libcurl's GSS-API support, with
                                      the process's Kerberos credentials (KRB5CCNAME); https
                                      only: WinRM requires message encryption over plain http,
                                      which libcurl cannot do (a sealing layer comes with issue
                                      7). username/password are not used. */
    EG_HTTP_CLIENT_AUTH_GSS,       /* our own GSSAPI handshake (transport/gss.h) with gss_cred
                                      and gss_scheme: the 401 token exchange on the one kept-alive
                                      connection, again after every reconnect; over http:// every
                                      body is sealed (multipart/encrypted) and every answer
                                      unsealed, over https:// bodies are plain and the context
                                      carries tls-server-end-point channel binding. Callers of
                                      eg_http_client_post/request see plain bodies either way.
                                      Handshake: an empty-body POST must get 401 offering the
                                      scheme, then empty-body POSTs with "Authorization:
                                      <Negotiate|Kerberos> <b64>" until done (the final non-401
                                      answer's token is stepped: mutual auth). A request answered
                                      401 later is authenticated again and resent once. A 2xx
                                      answer over http that is not multipart/encrypted, or one
                                      that does not unseal, is EG_EPROTO (the next request then
                                      authenticates on a new connection). See
                                      docs/internals/gss.md. */
};

struct eg_http_client_opts {
    /* http:// or https:// endpoint, e.g. "https://exch01/PowerShell"; no user:password@;
     * required */
    const char *url;
    enum eg_http_client_auth auth;
    const char *username;          /* required with AUTH_BASIC */
    const char *password;          /* required with AUTH_BASIC (may be ""); secret: not kept */
    struct eg_gss_cred *gss_cred;  /* AUTH_GSS: the credentials (borrowed: must outlive the
                                      client) */
    enum eg_gss_scheme gss_scheme; /* AUTH_GSS: Negotiate, Kerberos or NTLM */
    bool allow_cleartext_auth;     /* permit Basic over http:// (tests only) */
    const char *ca_file;           /* PEM trust anchors for https; NULL = the system store */
    bool insecure;                 /* https without certificate or host name verification */
    const char *proxy;             /* proxy URL; NULL = direct connection */
    /* Timeouts, each 0..EG_HTTP_CLIENT_MAX_TIMEOUT_MS (0 = the default; see
     * eg_http_client_check_timeouts). TCP + TLS connect; 0 =
     * EG_HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS */
    int64_t connect_timeout_ms;
    /* no byte sent or received for this long; 0 = EG_HTTP_CLIENT_DEFAULT_IO_TIMEOUT_MS */
    int64_t io_timeout_ms;
    /* a whole request unless the call says otherwise; 0 = EG_HTTP_CLIENT_DEFAULT_TIMEOUT_MS */
    int64_t response_timeout_ms;
    /* response body limit (after content decoding); 0 = EG_WSMAN_MAX_RESPONSE_BYTES */
    size_t max_response_bytes;
};

/* A response. body is NUL-terminated (and may contain NULs); content_type is NULL when the
 * server sent none. headers holds the final response's header fields as "Name: value" strings
 * one after the other, each NUL-terminated (headers_len bytes in all; read them with
 * eg_http_client_response_header). All are eg_malloc'd and freed by
 * eg_http_client_response_clear. */
struct eg_http_client_response {
    long status;
    char *body;
    size_t body_len;
    char *content_type;
    char *headers;
    size_t headers_len;
};

/* One extra request header. name: an HTTP token (letters, digits, !#$%&'*+-.^_`|~); value: no
 * CR, LF or NUL. */
struct eg_http_client_header {
    const char *name;
    const char *value;
};

/* A general request (eg_http_client_request). Zero-initialise and set what is needed. */
struct eg_http_client_req {
    const char *method; /* "GET", "POST", "PUT", "PATCH" or "DELETE"; NULL = "POST" */
    /* NULL = the client's URL. Otherwise an absolute http(s) URL without user info; when the
     * client authenticates (Basic, Negotiate) it must have the client URL's scheme, host and
     * port, so credentials never go to another origin (EG_EINVAL). Used for this request only. */
    const char *url;
    const struct eg_http_client_header *headers; /* extra headers (at most
                                             EG_HTTP_CLIENT_MAX_EXTRA_HEADERS) */
    size_t n_headers;
    const char *content_type; /* Content-Type of the body; NULL = none sent */
    const char *body;         /* with GET: must be empty */
    size_t body_len;
    int64_t response_timeout_ms; /* > 0 overrides the client's for this request; 0 = client's */
    int64_t io_timeout_ms;       /* same for the io timeout */
};

struct eg_http_client;

/* Create a client for opts->url (nothing is connected yet). Strings are copied (the password
 * only into libcurl). Returns 0, EG_EINVAL (bad URL or scheme, credentials in the URL, missing
 * username, Basic over http without allow_cleartext_auth, timeouts out of range, CR/LF in a
 * string; AUTH_GSS without gss_cred or with a bad gss_scheme), EG_ETLS (ca_file not readable),
 * EG_EUNSUPPORTED (libcurl could not be initialised or lacks a needed feature) or EG_ENOMEM. On
 * success *ret is the client; free it with eg_http_client_free. */
int eg_http_client_new(const struct eg_http_client_opts *opts,
                       struct eg_http_client **ret) EG_MUST_CHECK;

/* Check a set of timeouts as eg_http_client_new does: each 0 (the default) or
 * 1..EG_HTTP_CLIENT_MAX_TIMEOUT_MS. Returns 0 or EG_EINVAL. */
int eg_http_client_check_timeouts(int64_t connect_ms, int64_t io_ms,
                                  int64_t response_ms) EG_MUST_CHECK;

/* Close the connection and free the client. Accepts NULL. */
void eg_http_client_free(struct eg_http_client *c);

/* POST body (len bytes) with content_type (NULL = EG_HTTP_CLIENT_SOAP_TYPE), reusing the open
 * connection if there is one. timeout_ms > 0 overrides the client's total timeout for this
 * request (a Receive must wait longer than its OperationTimeout); 0 = the client's.
 * On success (any HTTP status except 401) *ret is the response; clear it with
 * eg_http_client_response_clear.
 * Returns 0, EG_EAUTH (HTTP 401: credentials refused), EG_EUNAVAIL (resolve or connect failed,
 * connection reset or closed without an answer), EG_ETIMEDOUT, EG_ETLS (handshake or
 * certificate verification failed), EG_ELIMIT (body over max_response_bytes: the transfer is
 * aborted and the connection dropped), EG_EPROTO (not HTTP, bad content encoding), EG_EINVAL,
 * EG_ENOMEM. eg_http_client_last_error() then says more. */
int eg_http_client_post(struct eg_http_client *c, const char *body, size_t len,
                        const char *content_type, int64_t timeout_ms,
                        struct eg_http_client_response *ret) EG_MUST_CHECK;

/* Send rq, reusing the open connection if there is one (also for another URL of the same
 * host). No "Expect: 100-continue" is sent. On success (any HTTP status except 401) *ret is the
 * response with its headers; clear it with eg_http_client_response_clear.
 * Returns what eg_http_client_post returns, plus EG_EINVAL for a bad method, URL, header name or
 * value, a body with GET, negative timeouts, and EG_ELIMIT for more than
 * EG_HTTP_CLIENT_MAX_EXTRA_HEADERS headers or response headers over
 * EG_HTTP_CLIENT_MAX_HEADER_BYTES. */
int eg_http_client_request(struct eg_http_client *c, const struct eg_http_client_req *rq,
                           struct eg_http_client_response *ret) EG_MUST_CHECK;

/* The value of the first response header called name (ASCII case-insensitive), without the
 * surrounding white space; NULL when absent. Borrowed from r. */
const char *eg_http_client_response_header(const struct eg_http_client_response *r,
                                           const char *name);

/* Free the response's strings and zero it. Accepts NULL and a cleared response. */
void eg_http_client_response_clear(struct eg_http_client_response *r);

/* libcurl's description of the last failure of this client ("" if none); valid until the next
 * call on the client. Never contains the password. */
const char *eg_http_client_last_error(const struct eg_http_client *c);

/* Number of connections this client has opened so far (a value that grows between requests
 * means the previous connection was lost: connection-bound authentication starts again). */
unsigned long eg_http_client_connections(const struct eg_http_client *c);

#endif
