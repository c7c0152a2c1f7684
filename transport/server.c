/* server.c - the console-facing HTTP(S) server on libmicrohttpd + GnuTLS (contract: server.h).
 *
 * Structure
 *   - The listening socket is ours: created, bound and listening before libmicrohttpd sees it
 *     (MHD_OPTION_LISTEN_SOCKET), so the bound port is known at once and the socket outlives
 *     any one daemon.
 *   - Each set of TLS material (certificate, key, client CA) is served by its own MHD daemon, a
 *     "generation". eg_server_reload_tls() parses and checks the new files, starts a new daemon
 *     on the same socket and then quiesces the old one: new connections get the new material,
 *     connections already open finish on the old daemon. A reaper thread stops a retired
 *     daemon once its last connection has closed (after EG_TLS_RETIRE_GRACE_MS), and at the
 *     latest EG_TLS_RETIRE_MAX_S after the reload. If anything about the new material is
 *     wrong, the old daemon is never touched.
 *   - libmicrohttpd only *requests* a client certificate (MHD_OPTION_HTTPS_MEM_TRUST). Every
 *     request that is not on a public path is checked here: the peer's chain is verified
 *     against the generation's own trust list for the TLS-client purpose; no certificate or a
 *     bad one gives 403. The bearer token is compared in constant time; failure gives 401 with
 *     WWW-Authenticate. With both configured, both are required.
 *   - Per-request state (struct req) hangs off *req_cls and is freed only in the
 *     request-completed callback. The handler sees a complete, authenticated request.
 *
 * Limits
 *   - Request line + header fields over max_header_bytes: 431 problem+json. The connection pool
 *     (EG_MHD_CONN_MEMORY) is larger than the header limit so that such requests reach us; a
 *     header block that does not fit the pool at all is refused by libmicrohttpd itself, with
 *     its own 431 and an HTML body.
 *   - Content-Length over max_body_bytes: 413 before any byte of the body is read when the
 *     client waits for it (Expect: 100-continue, as curl does) or when the excess is over
 *     EG_MAX_BODY_DISCARD; libmicrohttpd then closes the connection. A client that sends the
 *     body without waiting (Python's http.client) would only see a reset if we closed on it,
 *     so within EG_MAX_BODY_DISCARD its body is read, dropped, and then answered with 413.
 *     A chunked body is accumulated up to the limit; past it the rest is read and dropped (up
 *     to EG_MAX_BODY_DISCARD more bytes, beyond which the connection is simply closed) and the
 *     answer is 413: libmicrohttpd 0.9.75 cannot queue a response in the middle of an upload
 *     (MHD_queue_response refuses). Nothing is kept past the limit; a body is never truncated.
 *   - More than EG_MAX_QUERY_ARGS query arguments: 400. Connection count, connections per peer
 *     IP (MHD_OPTION_PER_IP_CONNECTION_LIMIT: more are closed right after accept) and idle
 *     timeout are libmicrohttpd options.
 *
 * Client protection
 *   - Rate: a token bucket per client identity, "c:<SHA-256 of the verified client
 *     certificate>" or else "ip:<peer address>" (token auth, no auth, or a certificate that did
 *     not verify). The bucket is charged before the authentication outcome is answered, so
 *     token guessing is slowed too; public paths are exempt. Over the limit: 429 with
 *     Retry-After (whole seconds until a token is back). The table is a fixed array of
 *     EG_MAX_RATE_CLIENTS buckets with a hash index and an LRU list: a new identity takes the
 *     least recently seen bucket when all are in use (an evicted client starts full again).
 *   - Slow requests: libmicrohttpd's timeout is an idle timeout, renewed by every byte, so a
 *     client that trickles a header or body a byte at a time would hold its connection for
 *     ever. Every connection is tracked (NOTIFY_CONNECTION) with the time its current request
 *     began: the accept (covering the TLS handshake) or the end of the previous response. A
 *     guard thread looks every EG_SLOW_REQUEST_CHECK_MS for requests still arriving after
 *     conn_timeout_s (plus one check period, so that idle connections are left to
 *     libmicrohttpd's idle timeout) and shuts their socket down (shutdown(2), under s->lock, which
 * the CLOSED notification also takes before libmicrohttpd closes the descriptor, so the fd cannot
 * have been reused); libmicrohttpd then sees the end of the stream and cleans up in its own thread.
 * The clock stops while the handler runs and the answer is sent.
 *
 * Percent-decoding: our unescape callback decodes %XX in the path and query like
 * libmicrohttpd's default, except that %00 is left as it is, so that a path can never be
 * silently shortened at an embedded NUL.
 */
#include "transport/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/util.h"

#define DEFAULT_PRIORITIES     "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%SERVER_PRECEDENCE"
#define PROBLEM_CTYPE          "application/problem+json"
#define JSON_CTYPE             "application/json"
#define AUTH_CHALLENGE         "Bearer realm=\"easgate\""
#define AUTH_CHALLENGE_INVALID "Bearer realm=\"easgate\", error=\"invalid_token\""

/* Metric route labels for answers the server gives itself. */
#define ROUTE_AUTH     "(auth)"
#define ROUTE_LIMITS   "(limits)"
#define ROUTE_ERROR    "(error)"
#define ROUTE_SHUTDOWN "(shutdown)"
#define ROUTE_RATE     "(rate)"
#define ROUTE_TIMEOUT  "(timeout)"

#define RATE_KEY_LEN 72 /* "c:" + 64 hex, or "ip:" + an IPv6 address */

/* One client's token bucket. */
struct bucket {
    char key[RATE_KEY_LEN];
    double tokens;
    int64_t last_ms;             /* monotonic time of the last refill */
    int32_t hnext, newer, older; /* hash chain; LRU list (-1 = none) */
};

/* The per-client rate limiter: a fixed table, a hash index, an LRU list. */
struct limiter {
    pthread_mutex_t lock;
    double rate, burst; /* tokens per second; bucket size */
    struct bucket *b;
    int32_t *heads;
    uint32_t n_heads;
    int32_t used, cap;
    int32_t newest, oldest;
};

/* One open connection (socket context), in s->conns. */
struct conn {
    struct conn *prev, *next;
    int fd;
    atomic_llong since_ms; /* monotonic start of the request being received; 0 = none */
    bool cut;
};

/* One MHD daemon and the TLS material it was started with. */
struct gen {
    struct eg_server *s;
    struct MHD_Daemon *d;
    struct gen *next;                  /* the next older generation */
    char *cert_pem, *key_pem, *ca_pem; /* handed to libmicrohttpd; key wiped on free */
    size_t key_len;
    gnutls_x509_trust_list_t trust; /* client CA; NULL = no client certificates */
    bool quiesced;                  /* no longer accepting (reload_lock) */
    unsigned conns;                 /* open connections (s->lock) */
    bool retired;                   /* replaced by a reload (s->lock) */
    int64_t retired_ms;
};

struct eg_server {
    int fd; /* the listening socket, -1 once handed over/closed */
    uint16_t port;
    bool tls;
    char *cert_file, *key_file, *ca_file, *priorities;
    char *token; /* secret, wiped on free */
    size_t token_len;
    char **public_paths;
    size_t n_public;
    size_t max_header, max_body;
    unsigned max_conns, timeout_s, threads, per_ip;
    struct limiter *limiter; /* NULL = no rate limit */
    eg_http_handler handler;
    eg_http_observer observer;
    void *ctx;

    bool locks_ready;
    pthread_mutex_t reload_lock; /* serialises reload and stop */
    pthread_mutex_t lock;        /* gens list, conns, inflight, reaper_quit */
    pthread_cond_t drained;      /* inflight dropped to 0 */
    pthread_cond_t reap;         /* wakes the reaper: generation retired or idle, quit */
    struct gen *gens;            /* newest (the one accepting) first */
    unsigned long inflight;      /* requests between first callback and completion */
    bool reaper_started, reaper_quit;
    pthread_t reaper;
    struct conn *conns; /* every open connection (s->lock) */
    pthread_cond_t guard_wake;
    bool guard_started, guard_quit;
    pthread_t guard;
    atomic_bool stopping;
};

/* Per-request state, *req_cls. */
struct req {
    bool counted;   /* included in s->inflight */
    bool answered;  /* the server answered itself (limits, auth) */
    bool body_over; /* body over max_body: reading and dropping it */
    bool body_oom;
    bool args_oom;
    size_t drop_left; /* body bytes we are still willing to drop */
    char *body;
    size_t body_len, body_cap;
    size_t n_args, n_seen_args;
    struct eg_http_query_arg args[EG_MAX_QUERY_ARGS];
    char *arg_keys[EG_MAX_QUERY_ARGS], *arg_values[EG_MAX_QUERY_ARGS];
    char *client_dn;
    const char *client;
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* Record the first error message of an operation in *why (later ones are dropped). */
static void set_error(char **why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **why, const char *fmt, ...)
{
    va_list ap;
    if (*why)
        return;
    va_start(ap, fmt);
    *why = eg_vasprintf(fmt, ap);
    va_end(ap);
}

static void deadline_after(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static const char *reason_phrase(int status)
{
    const char *p = status > 0 ? MHD_get_reason_phrase_for((unsigned)status) : NULL;
    return p && *p ? p : "Unknown";
}

/* A JSON string; bytes that are not valid UTF-8 text are replaced by '?'. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    char *copy = NULL;
    if (j)
        return j;
    if (!(copy = eg_strdup(s)))
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
            *p = '?';
    j = json_string(copy);
    eg_free(copy);
    return j;
}

/* ---- per-client rate limiter ---------------------------------------------------------------- */

static uint32_t key_hash(const char *k)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 16777619u;
    return h;
}

static void limiter_free(struct limiter *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->lock);
    eg_free(l->b);
    eg_free(l->heads);
    eg_free(l);
}

static struct limiter *limiter_new(unsigned rate, unsigned burst, int32_t cap)
{
    struct limiter *l = eg_calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->n_heads = (uint32_t)cap;
    l->b = eg_calloc((size_t)cap, sizeof *l->b);
    l->heads = eg_calloc(l->n_heads, sizeof *l->heads);
    if (!l->b || !l->heads || pthread_mutex_init(&l->lock, NULL) != 0) {
        eg_free(l->b);
        eg_free(l->heads);
        eg_free(l);
        return NULL;
    }
    for (uint32_t i = 0; i < l->n_heads; i++)
        l->heads[i] = -1;
    l->rate = rate;
    l->burst = burst;
    l->cap = cap;
    l->newest = l->oldest = -1;
    return l;
}

static void lru_unlink(struct limiter *l, int32_t i)
{
    struct bucket *b = &l->b[i];
    if (b->newer >= 0)
        l->b[b->newer].older = b->older;
    else
        l->newest = b->older;
    if (b->older >= 0)
        l->b[b->older].newer = b->newer;
    else
        l->oldest = b->newer;
    b->newer = b->older = -1;
}

static void lru_push(struct limiter *l, int32_t i)
{
    struct bucket *b = &l->b[i];
    b->newer = -1;
    b->older = l->newest;
    if (l->newest >= 0)
        l->b[l->newest].newer = i;
    l->newest = i;
    if (l->oldest < 0)
        l->oldest = i;
}

/* Take one token from key's bucket. false when there is none: *retry_s is then the number of
 * whole seconds until there is one again (at least 1). */
static bool limiter_take(struct limiter *l, const char *key, int64_t now_ms, unsigned *retry_s)
{
    uint32_t h = key_hash(key) % l->n_heads;
    int32_t i;
    bool ok;

    pthread_mutex_lock(&l->lock);
    for (i = l->heads[h]; i >= 0; i = l->b[i].hnext)
        if (strcmp(l->b[i].key, key) == 0)
            break;
    if (i >= 0) {
        struct bucket *b = &l->b[i];
        double t = b->tokens + (double)(now_ms - b->last_ms) * l->rate / 1000.0;
        b->tokens = t > l->burst ? l->burst : t;
        b->last_ms = now_ms;
        lru_unlink(l, i);
    } else {
        if (l->used < l->cap) {
            i = l->used++;
        } else { /* evict the least recently seen client */
            i = l->oldest;
            lru_unlink(l, i);
            for (int32_t *pp = &l->heads[key_hash(l->b[i].key) % l->n_heads]; *pp >= 0;
                 pp = &l->b[*pp].hnext)
                if (*pp == i) {
                    *pp = l->b[i].hnext;
                    break;
                }
        }
        struct bucket *b = &l->b[i];
        snprintf(b->key, sizeof b->key, "%s", key);
        b->tokens = l->burst;
        b->last_ms = now_ms;
        b->hnext = l->heads[h];
        l->heads[h] = i;
    }
    lru_push(l, i);
    struct bucket *b = &l->b[i];
    ok = b->tokens >= 1.0;
    if (ok) {
        b->tokens -= 1.0;
    } else {
        double secs = (1.0 - b->tokens) / l->rate;
        *retry_s = secs <= 1.0 ? 1u : (unsigned)secs + ((double)(unsigned)secs < secs ? 1u : 0u);
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

/* The rate-limit identity of a request: the certificate fingerprint, else the peer address. */
static void client_key(struct MHD_Connection *c, const char *fingerprint, char *key, size_t size)
{
    const union MHD_ConnectionInfo *ci;
    char addr[INET6_ADDRSTRLEN] = "unknown";

    if (fingerprint && *fingerprint) {
        snprintf(key, size, "c:%s", fingerprint);
        return;
    }
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, addr,
                      sizeof addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, addr,
                      sizeof addr);
    }
    snprintf(key, size, "ip:%s", addr);
}

/* ---- response helpers (public) -------------------------------------------------------------- */

void eg_http_respond_json(struct eg_http_response *resp, int status, char *text)
{
    if (!text) {
        eg_http_respond_problem(resp, 500, "out of memory", NULL);
        return;
    }
    if (resp->body != text)
        eg_free(resp->body);
    resp->status = status;
    resp->content_type = JSON_CTYPE;
    resp->body = text;
    resp->body_len = strlen(text);
}

void eg_http_respond_problem(struct eg_http_response *resp, int status, const char *detail,
                             const char *field)
{
    const char *title = reason_phrase(status);
    json_t *o = json_object();
    char *text = NULL;

    if (o && json_object_set_new(o, "type", json_string("about:blank")) == 0 &&
        json_object_set_new(o, "title", json_text(title)) == 0 &&
        json_object_set_new(o, "status", json_integer(status)) == 0 &&
        json_object_set_new(o, "detail", json_text(detail ? detail : title)) == 0 &&
        (!field || json_object_set_new(o, "field", json_text(field)) == 0))
        text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text) /* out of memory: a minimal body without the caller's strings */
        text = eg_asprintf("{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,"
                           "\"detail\":\"%s\"}",
                           title, status, title);
    eg_free(resp->body);
    resp->status = status;
    resp->content_type = PROBLEM_CTYPE;
    resp->body = text;
    resp->body_len = text ? strlen(text) : 0;
}

const char *eg_http_query(const struct eg_http_request *req, const char *key)
{
    for (size_t i = 0; req && key && i < req->n_args; i++)
        if (req->args[i].key && strcmp(req->args[i].key, key) == 0)
            return req->args[i].value;
    return NULL;
}

/* ---- TLS material --------------------------------------------------------------------------- */

static int read_pem(const char *what, const char *path, char **ret_data, size_t *ret_len,
                    char **why)
{
    int rc = eg_read_file(path, EG_MAX_TLS_FILE_BYTES, ret_data, ret_len);
    if (rc == EG_EIO) {
        set_error(why, "%s %s: %s", what, path, strerror(errno));
        return EG_ETLS;
    }
    if (rc == EG_ELIMIT) {
        set_error(why, "%s %s: larger than %d bytes", what, path, EG_MAX_TLS_FILE_BYTES);
        return EG_ETLS;
    }
    return rc;
}

static struct gen *gen_new(struct eg_server *s)
{
    struct gen *g = eg_calloc(1, sizeof *g);
    if (g)
        g->s = s;
    return g;
}

/* Frees a generation whose daemon is already stopped (or never started). */
static void gen_free(struct gen *g)
{
    if (!g)
        return;
    if (g->trust)
        gnutls_x509_trust_list_deinit(g->trust, 1);
    eg_free(g->cert_pem);
    if (g->key_pem) {
        eg_memzero(g->key_pem, g->key_len);
        eg_free(g->key_pem);
    }
    eg_free(g->ca_pem);
    eg_free(g);
}

/* Read and check certificate chain, key and client CA into g. Nothing is served yet. */
static int load_material(struct eg_server *s, struct gen *g, char **why)
{
    gnutls_x509_crt_t crts[EG_MAX_TLS_CHAIN];
    unsigned n_crts = 0;
    gnutls_x509_privkey_t key = NULL;
    unsigned char id_crt[64], id_key[64];
    size_t cert_len = 0, ca_len = 0, l_crt = sizeof id_crt, l_key = sizeof id_key;
    gnutls_datum_t d;
    int rc, gr;

    if ((rc = read_pem("cert_file", s->cert_file, &g->cert_pem, &cert_len, why)) < 0)
        goto out;
    d = (gnutls_datum_t){(unsigned char *)g->cert_pem, (unsigned)cert_len};
    n_crts = EG_MAX_TLS_CHAIN;
    gr = gnutls_x509_crt_list_import(crts, &n_crts, &d, GNUTLS_X509_FMT_PEM,
                                     GNUTLS_X509_CRT_LIST_IMPORT_FAIL_IF_EXCEED);
    if (gr <= 0) {
        n_crts = 0;
        set_error(why, "cert_file %s: no usable PEM certificate (%s)", s->cert_file,
                  gr == GNUTLS_E_SHORT_MEMORY_BUFFER ? "too many certificates"
                  : gr < 0                           ? gnutls_strerror(gr)
                                                     : "none found");
        rc = gr == GNUTLS_E_MEMORY_ERROR ? EG_ENOMEM : EG_ETLS;
        goto out;
    }
    n_crts = (unsigned)gr;

    if ((rc = read_pem("key_file", s->key_file, &g->key_pem, &g->key_len, why)) < 0)
        goto out;
    if (gnutls_x509_privkey_init(&key) < 0) {
        key = NULL;
        rc = EG_ENOMEM;
        goto out;
    }
    d = (gnutls_datum_t){(unsigned char *)g->key_pem, (unsigned)g->key_len};
    if ((gr = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        set_error(why, "key_file %s: no usable unencrypted PEM private key (%s)", s->key_file,
                  gnutls_strerror(gr));
        rc = EG_ETLS;
        goto out;
    }
    if (gnutls_x509_crt_get_key_id(crts[0], GNUTLS_KEYID_USE_SHA256, id_crt, &l_crt) < 0 ||
        gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, id_key, &l_key) < 0 ||
        l_crt != l_key || memcmp(id_crt, id_key, l_crt) != 0) {
        set_error(why, "key_file %s does not match the certificate in cert_file %s", s->key_file,
                  s->cert_file);
        rc = EG_ETLS;
        goto out;
    }

    if (s->ca_file) {
        if ((rc = read_pem("client_ca_file", s->ca_file, &g->ca_pem, &ca_len, why)) < 0)
            goto out;
        if (gnutls_x509_trust_list_init(&g->trust, 0) < 0) {
            g->trust = NULL;
            rc = EG_ENOMEM;
            goto out;
        }
        d = (gnutls_datum_t){(unsigned char *)g->ca_pem, (unsigned)ca_len};
        gr = gnutls_x509_trust_list_add_trust_mem(g->trust, &d, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
        if (gr <= 0) {
            set_error(why, "client_ca_file %s: no usable PEM CA certificate (%s)", s->ca_file,
                      gr < 0 ? gnutls_strerror(gr) : "none found");
            rc = EG_ETLS;
            goto out;
        }
    }
    rc = 0;
out:
    for (unsigned i = 0; i < n_crts; i++)
        gnutls_x509_crt_deinit(crts[i]);
    if (key)
        gnutls_x509_privkey_deinit(key);
    return rc;
}

/* ---- request authentication ----------------------------------------------------------------- */

/* Verify the client's certificate chain against g's trust list. On success *ret_dn is the
 * subject DN (eg_free) and fp the hex SHA-256 of the leaf certificate (DER). EG_EAUTH with detail
 * filled when there is no acceptable certificate. */
static int check_client_cert(struct gen *g, struct MHD_Connection *c, char **ret_dn, char fp[65],
                             char *detail, size_t dsize)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t sess = ci ? (gnutls_session_t)ci->tls_session : NULL;
    gnutls_x509_crt_t crts[EG_MAX_CLIENT_CHAIN];
    const gnutls_datum_t *peers = NULL;
    gnutls_datum_t dn = {NULL, 0}, text = {NULL, 0};
    gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID,
                                     (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
    unsigned n = 0, list_size = 0, status = 0;
    char *copy = NULL;
    int rc = EG_EAUTH, gr;

    if (sess && gnutls_certificate_type_get(sess) == GNUTLS_CRT_X509)
        peers = gnutls_certificate_get_peers(sess, &list_size);
    if (!peers || list_size == 0) {
        snprintf(detail, dsize, "a client certificate is required");
        goto out;
    }
    if (list_size > EG_MAX_CLIENT_CHAIN) {
        snprintf(detail, dsize, "the client certificate chain is longer than %d",
                 EG_MAX_CLIENT_CHAIN);
        goto out;
    }
    for (unsigned i = 0; i < list_size; i++) {
        if (gnutls_x509_crt_init(&crts[i]) < 0) {
            rc = EG_ENOMEM;
            goto out;
        }
        n = i + 1;
        if (gnutls_x509_crt_import(crts[i], &peers[i], GNUTLS_X509_FMT_DER) < 0) {
            snprintf(detail, dsize, "the client certificate cannot be parsed");
            goto out;
        }
    }
    gr = gnutls_x509_trust_list_verify_crt2(g->trust, crts, n, &purpose, 1, 0, &status, NULL);
    if (gr < 0 || status != 0) {
        if (gr >= 0 &&
            gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) >= 0)
            snprintf(detail, dsize, "the client certificate is not accepted: %.*s", (int)text.size,
                     (const char *)text.data);
        else
            snprintf(detail, dsize, "the client certificate is not accepted");
        goto out;
    }
    if (gnutls_x509_crt_get_dn3(crts[0], &dn, 0) < 0 || !dn.data) {
        snprintf(detail, dsize, "the client certificate subject cannot be read");
        goto out;
    }
    unsigned char digest[32];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, peers[0].data, peers[0].size, digest) < 0) {
        snprintf(detail, dsize, "the client certificate cannot be hashed");
        goto out;
    }
    for (size_t i = 0; i < sizeof digest; i++)
        snprintf(fp + 2 * i, 3, "%02x", digest[i]);
    if (!(copy = eg_strndup((const char *)dn.data, dn.size))) {
        rc = EG_ENOMEM;
        goto out;
    }
    *ret_dn = copy;
    rc = 0;
out:
    gnutls_free(text.data);
    gnutls_free(dn.data);
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    return rc;
}

/* 0 if the request carries the configured bearer token; otherwise EG_EAUTH with *detail set
 * and *invalid telling whether a token was presented (RFC 6750 error="invalid_token"). */
static int check_token(struct eg_server *s, struct MHD_Connection *c, const char **detail,
                       bool *invalid)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    *invalid = false;
    if (!h) {
        *detail = "a bearer token is required";
        return EG_EAUTH;
    }
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t')) {
        *detail = "the Authorization header must use the Bearer scheme";
        return EG_EAUTH;
    }
    h += 7;
    while (*h == ' ' || *h == '\t')
        h++;
    if (!eg_ct_equal(s->token, s->token_len, h, strlen(h))) {
        *detail = "the bearer token is not valid";
        *invalid = true;
        return EG_EAUTH;
    }
    return 0;
}

static bool is_public(const struct eg_server *s, const char *path)
{
    for (size_t i = 0; i < s->n_public; i++)
        if (strcmp(s->public_paths[i], path) == 0)
            return true;
    return false;
}

/* ---- request plumbing ------------------------------------------------------------------------ */

static struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The request of c is complete (or answered): its clock stops (since_ms 0), or a new request
 * may begin now (since_ms now). */
static void conn_mark(struct MHD_Connection *c, bool receiving)
{
    struct conn *k = conn_of(c);
    if (k)
        atomic_store(&k->since_ms, receiving ? (long long)eg_mono_ms() : 0);
}

static void req_free(struct req *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_args; i++) {
        eg_free(r->arg_keys[i]);
        eg_free(r->arg_values[i]);
    }
    eg_free(r->body);
    eg_free(r->client_dn);
    eg_free(r);
}

/* Send resp (consumed: body and header values are freed in every case). */
static enum MHD_Result send_response(struct MHD_Connection *c, struct eg_http_response *resp,
                                     bool close)
{
    struct MHD_Response *mr = NULL;
    enum MHD_Result ret = MHD_NO;

    if (resp->body && resp->body_len) {
        mr =
            MHD_create_response_from_buffer_with_free_callback(resp->body_len, resp->body, eg_free);
        if (mr)
            resp->body = NULL; /* owned by mr now */
    } else {
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!mr)
        goto out;
    if (resp->content_type &&
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type) != MHD_YES)
        goto out;
    for (size_t i = 0; i < resp->n_headers && i < EG_HTTP_MAX_RESP_HEADERS; i++)
        if (resp->headers[i].name && resp->headers[i].value)
            (void)MHD_add_response_header(mr, resp->headers[i].name, resp->headers[i].value);
    if (close)
        (void)MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(c, (unsigned)resp->status, mr);
out:
    if (mr)
        MHD_destroy_response(mr);
    eg_freep(&resp->body);
    for (size_t i = 0; i < resp->n_headers && i < EG_HTTP_MAX_RESP_HEADERS; i++)
        eg_freep(&resp->headers[i].value);
    resp->n_headers = 0;
    return ret;
}

/* The server answers by itself with a problem+json (and tells the observer). */
static enum MHD_Result answer(struct eg_server *s, struct MHD_Connection *c, struct req *r,
                              int status, const char *detail, const char *route, const char *hname,
                              const char *hvalue)
{
    struct eg_http_response resp = {0};
    enum MHD_Result ret;

    eg_http_respond_problem(&resp, status, detail, NULL);
    if (hname) {
        resp.headers[0].name = hname;
        resp.headers[0].value = eg_strdup(hvalue);
        resp.n_headers = 1;
    }
    r->answered = true;
    conn_mark(c, false);
    ret = send_response(c, &resp, status == 503);
    if (s->observer)
        s->observer(s->ctx, route, status);
    return ret;
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    size_t *n = cls;
    *n += strlen(key) + 2 + (value ? strlen(value) : 0) + 2; /* "key: value\r\n" */
    return MHD_YES;
}

static enum MHD_Result count_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    size_t *n = cls;
    *n += 1 + strlen(key) + (value ? 1 + strlen(value) : 0); /* "?key=value" / "&key" */
    return MHD_YES;
}

/* Size of the request line and header fields (as decoded by libmicrohttpd). */
static size_t header_bytes(struct MHD_Connection *c, const char *url, const char *method,
                           const char *version)
{
    size_t n = strlen(method) + 1 + strlen(url) + 1 + strlen(version) + 2;
    (void)MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, count_arg, &n);
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &n);
    return n + 2;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct req *r = cls;
    char *k = NULL, *v = NULL;

    if (++r->n_seen_args > EG_MAX_QUERY_ARGS)
        return MHD_NO;
    k = eg_strdup(key ? key : "");
    v = value ? eg_strdup(value) : NULL;
    if (!k || (value && !v)) {
        eg_free(k);
        eg_free(v);
        r->args_oom = true;
        return MHD_NO;
    }
    r->arg_keys[r->n_args] = k;
    r->arg_values[r->n_args] = v;
    r->args[r->n_args] = (struct eg_http_query_arg){k, v};
    r->n_args++;
    return MHD_YES;
}

/* First callback of a request: headers are complete, no body byte has been read yet.
 * Applies limits and authentication; may answer at once. */
static enum MHD_Result admit(struct gen *g, struct MHD_Connection *c, struct req *r,
                             const char *url, const char *method, const char *version)
{
    struct eg_server *s = g->s;
    char detail[512];
    const char *why = NULL;
    bool invalid = false;
    int rc;

    if (atomic_load(&s->stopping))
        return answer(s, c, r, 503, "the server is shutting down", ROUTE_SHUTDOWN, NULL, NULL);
    if (header_bytes(c, url, method, version) > s->max_header) {
        snprintf(detail, sizeof detail, "request line and header fields exceed %zu bytes",
                 s->max_header);
        return answer(s, c, r, 431, detail, ROUTE_LIMITS, NULL, NULL);
    }

    if (is_public(s, url)) {
        r->client = "anonymous";
    } else {
        char fp[65] = "";
        rc = 0;
        if (g->trust) {
            rc = check_client_cert(g, c, &r->client_dn, fp, detail, sizeof detail);
            if (rc == EG_ENOMEM)
                return answer(s, c, r, 500, "out of memory", ROUTE_ERROR, NULL, NULL);
        }
        if (s->limiter) {
            char key[RATE_KEY_LEN], retry[16];
            unsigned retry_s = 1;
            client_key(c, rc == 0 ? fp : NULL, key, sizeof key);
            if (!limiter_take(s->limiter, key, eg_mono_ms(), &retry_s)) {
                snprintf(detail, sizeof detail,
                         "too many requests from this client (over %.0f per second, burst %.0f); "
                         "retry after %u s",
                         s->limiter->rate, s->limiter->burst, retry_s);
                snprintf(retry, sizeof retry, "%u", retry_s);
                return answer(s, c, r, 429, detail, ROUTE_RATE, MHD_HTTP_HEADER_RETRY_AFTER, retry);
            }
        }
        if (rc < 0)
            return answer(s, c, r, 403, detail, ROUTE_AUTH, NULL, NULL);
        if (s->token && check_token(s, c, &why, &invalid) < 0)
            return answer(s, c, r, 401, why, ROUTE_AUTH, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                          invalid ? AUTH_CHALLENGE_INVALID : AUTH_CHALLENGE);
        r->client = r->client_dn ? r->client_dn : s->token ? "token" : "anonymous";
    }

    (void)MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, r);
    if (r->args_oom)
        return answer(s, c, r, 500, "out of memory", ROUTE_ERROR, NULL, NULL);
    if (r->n_seen_args > EG_MAX_QUERY_ARGS) {
        snprintf(detail, sizeof detail, "more than %d query parameters", EG_MAX_QUERY_ARGS);
        return answer(s, c, r, 400, detail, ROUTE_LIMITS, NULL, NULL);
    }

    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!te && cl) {
        int64_t len = 0;
        if (eg_parse_int64(cl, 0, INT64_MAX, &len) < 0)
            return answer(s, c, r, 400, "invalid Content-Length", ROUTE_LIMITS, NULL, NULL);
        if ((uint64_t)len > s->max_body) {
            const char *expect =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            bool waits = expect && strcasecmp(expect, "100-continue") == 0 &&
                         strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
            if (waits || (uint64_t)len - s->max_body > EG_MAX_BODY_DISCARD) {
                snprintf(detail, sizeof detail, "the request body exceeds %zu bytes", s->max_body);
                return answer(s, c, r, 413, detail, ROUTE_LIMITS, NULL, NULL);
            }
            r->body_over = true; /* already on its way: drop it, answer 413 at the end */
            r->drop_left = (size_t)len;
            return MHD_YES;
        }
        if (len > 0) {
            if (!(r->body = eg_malloc((size_t)len + 1)))
                return answer(s, c, r, 500, "out of memory", ROUTE_ERROR, NULL, NULL);
            r->body_cap = (size_t)len + 1;
        }
    }
    return MHD_YES;
}

/* Append a piece of the body, or drop it once the body is over the limit. */
static enum MHD_Result take_body(struct eg_server *s, struct req *r, const char *data, size_t n)
{
    if (r->body_over || r->body_oom) {
        if (n > r->drop_left)
            return MHD_NO; /* too much to read just to refuse it: close the connection */
        r->drop_left -= n;
        return MHD_YES;
    }
    if (n > s->max_body - r->body_len) {
        size_t excess = r->body_len + n - s->max_body;
        r->body_over = true;
        eg_freep(&r->body);
        r->body_len = r->body_cap = 0;
        if (excess > EG_MAX_BODY_DISCARD)
            return MHD_NO;
        r->drop_left = EG_MAX_BODY_DISCARD - excess;
        return MHD_YES;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t want = r->body_len + n + 1, cap = r->body_cap ? r->body_cap : 4096;
        while (cap < want)
            cap *= 2;
        if (cap > s->max_body + 1)
            cap = s->max_body + 1;
        char *nb = eg_realloc(r->body, cap);
        if (!nb) {
            r->body_oom = true; /* read the rest (bounded) and answer 500 */
            r->drop_left = s->max_body + EG_MAX_BODY_DISCARD;
            eg_freep(&r->body);
            r->body_len = r->body_cap = 0;
            return MHD_YES;
        }
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return MHD_YES;
}

/* The request is complete: hand it to the application. */
static enum MHD_Result dispatch(struct gen *g, struct MHD_Connection *c, struct req *r,
                                const char *url, const char *method)
{
    struct eg_server *s = g->s;
    char detail[128];

    if (r->body_over) {
        snprintf(detail, sizeof detail, "the request body exceeds %zu bytes", s->max_body);
        return answer(s, c, r, 413, detail, ROUTE_LIMITS, NULL, NULL);
    }
    if (r->body_oom)
        return answer(s, c, r, 500, "out of memory", ROUTE_ERROR, NULL, NULL);

    struct eg_http_request req = {
        .method = method,
        .path = url,
        .args = r->args,
        .n_args = r->n_args,
        .content_type =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .body = r->body_len ? r->body : NULL,
        .body_len = r->body_len,
        .client = r->client,
    };
    struct eg_http_response resp = {0};
    conn_mark(c, false);
    s->handler(s->ctx, &req, &resp);
    if (resp.status < 100 || resp.status > 599)
        eg_http_respond_problem(&resp, 500, "the request handler gave no response", NULL);
    return send_response(c, &resp, false);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct gen *g = cls;
    struct eg_server *s = g->s;
    struct req *r = *req_cls;
    enum MHD_Result ret;

    if (!r) {
        if (!(r = eg_calloc(1, sizeof *r)))
            return MHD_NO;
        *req_cls = r;
        pthread_mutex_lock(&s->lock);
        s->inflight++;
        pthread_mutex_unlock(&s->lock);
        r->counted = true;
        return admit(g, c, r, url, method, version);
    }
    if (r->answered) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        ret = take_body(s, r, upload, *upload_size);
        *upload_size = 0;
        return ret;
    }
    return dispatch(g, c, r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct gen *g = cls;
    struct eg_server *s = g->s;
    struct req *r = *req_cls;
    bool counted;

    if (!r)
        return;
    *req_cls = NULL;
    conn_mark(c, true); /* a kept-alive connection's next request starts now */
    counted = r->counted;
    req_free(r);
    if (counted) {
        pthread_mutex_lock(&s->lock);
        if (--s->inflight == 0)
            pthread_cond_broadcast(&s->drained);
        pthread_mutex_unlock(&s->lock);
    }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct gen *g = cls;
    struct eg_server *s = g->s;
    struct conn *k = NULL;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        /* Without memory the connection is served, only without the slow-request guard. */
        if (ci && (k = eg_calloc(1, sizeof *k))) {
            k->fd = ci->connect_fd;
            atomic_init(&k->since_ms, (long long)eg_mono_ms());
        }
        *socket_ctx = k;
    }
    pthread_mutex_lock(&s->lock);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        g->conns++;
        if (k) {
            k->next = s->conns;
            if (s->conns)
                s->conns->prev = k;
            else
                pthread_cond_signal(&s->guard_wake); /* the guard sleeps while there are none */
            s->conns = k;
        }
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if ((k = *socket_ctx)) {
            if (k->prev)
                k->prev->next = k->next;
            else
                s->conns = k->next;
            if (k->next)
                k->next->prev = k->prev;
            *socket_ctx = NULL;
        }
        if (g->conns > 0 && --g->conns == 0 && g->retired)
            pthread_cond_signal(&s->reap);
    }
    pthread_mutex_unlock(&s->lock);
    if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        eg_free(k);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decode %XX in place, leaving %00 and malformed escapes as they are. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *str)
{
    char *w = str;
    const char *p = str;
    while (*p) {
        int hi, lo;
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi * 16 + lo);
            p += 3;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    return (size_t)(w - str);
}

/* ---- daemons -------------------------------------------------------------------------------- */

#ifndef EG_MHD_INTERNAL_THREAD /* Windows: common/platform.h (no epoll there) */
#define EG_MHD_INTERNAL_THREAD MHD_USE_EPOLL_INTERNAL_THREAD
#endif

static int gen_start(struct eg_server *s, struct gen *g, char **why)
{
    unsigned flags = EG_MHD_INTERNAL_THREAD | MHD_USE_ITC | (s->tls ? MHD_USE_TLS : 0);
    struct MHD_OptionItem tls[5];
    size_t n = 0;

    if (s->tls) {
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, g->cert_pem};
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, g->key_pem};
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, s->priorities};
        if (g->ca_pem)
            tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, g->ca_pem};
    }
    tls[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    g->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, g, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->fd,
        MHD_OPTION_THREAD_POOL_SIZE, s->threads, MHD_OPTION_CONNECTION_LIMIT, s->max_conns,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->per_ip, MHD_OPTION_CONNECTION_TIMEOUT, s->timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)EG_MHD_CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, g, MHD_OPTION_NOTIFY_CONNECTION, on_connection, g,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!g->d) {
        if (s->tls) {
            set_error(why, "libmicrohttpd refused the TLS setup (cert_file %s, key_file %s%s%s)",
                      s->cert_file, s->key_file, s->ca_file ? ", client_ca_file " : "",
                      s->ca_file ? s->ca_file : "");
            return EG_ETLS;
        }
        set_error(why, "libmicrohttpd could not start");
        return EG_EIO;
    }
    return 0;
}

/* Stop a generation's daemon (quiescing it first so that it leaves our socket alone) and free
 * it. */
static void gen_destroy(struct eg_server *s, struct gen *g)
{
    if (!g)
        return;
    if (g->d) {
        if (!g->quiesced && MHD_quiesce_daemon(g->d) == MHD_INVALID_SOCKET)
            s->fd = -1; /* libmicrohttpd closes it in MHD_stop_daemon */
        MHD_stop_daemon(g->d);
        g->d = NULL;
    }
    gen_free(g);
}

/* Stops retired generations once idle (or too old). Runs only in TLS mode. */
static void *reaper_main(void *arg)
{
    struct eg_server *s = arg;

    pthread_mutex_lock(&s->lock);
    while (!s->reaper_quit) {
        int64_t now = eg_mono_ms(), wait_ms = -1;
        struct gen *victim = NULL;

        for (struct gen **pp = &s->gens; *pp; pp = &(*pp)->next) {
            struct gen *g = *pp;
            if (!g->retired)
                continue;
            int64_t age = now - g->retired_ms;
            if ((g->conns == 0 && age >= EG_TLS_RETIRE_GRACE_MS) ||
                age >= (int64_t)EG_TLS_RETIRE_MAX_S * 1000) {
                *pp = g->next;
                victim = g;
                break;
            }
            /* Woken when its last connection closes; otherwise wait for the next deadline. */
            int64_t left = g->conns == 0 ? EG_TLS_RETIRE_GRACE_MS - age
                                         : (int64_t)EG_TLS_RETIRE_MAX_S * 1000 - age;
            if (left < 1)
                left = 1;
            if (wait_ms < 0 || left < wait_ms)
                wait_ms = left;
        }
        if (victim) {
            pthread_mutex_unlock(&s->lock);
            gen_destroy(s, victim); /* quiesced already: leaves s->fd alone */
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (wait_ms < 0) {
            pthread_cond_wait(&s->reap, &s->lock);
        } else {
            struct timespec ts;
            deadline_after(&ts, wait_ms);
            pthread_cond_timedwait(&s->reap, &s->lock, &ts);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Cuts connections whose request is still arriving conn_timeout_s after it began. One check
 * period of grace lets libmicrohttpd's own idle timeout close the merely idle ones first, so
 * what is cut (and counted) here is a client that kept trickling. */
static void *guard_main(void *arg)
{
    struct eg_server *s = arg;
    const int64_t limit_ms = (int64_t)s->timeout_s * 1000 + EG_SLOW_REQUEST_CHECK_MS;

    pthread_mutex_lock(&s->lock);
    while (!s->guard_quit) {
        if (!s->conns) {
            pthread_cond_wait(&s->guard_wake, &s->lock);
            continue;
        }
        int64_t now = eg_mono_ms();
        unsigned cut = 0;
        for (struct conn *k = s->conns; k; k = k->next) {
            int64_t since = (int64_t)atomic_load(&k->since_ms);
            if (since > 0 && !k->cut && now - since >= limit_ms) {
                /* The descriptor is still this connection's: CLOSED needs s->lock first. */
                (void)shutdown(k->fd, SHUT_RDWR);
                k->cut = true;
                cut++;
            }
        }
        if (cut && s->observer) {
            pthread_mutex_unlock(&s->lock);
            while (cut--)
                s->observer(s->ctx, ROUTE_TIMEOUT, 408);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        struct timespec ts;
        deadline_after(&ts, EG_SLOW_REQUEST_CHECK_MS);
        pthread_cond_timedwait(&s->guard_wake, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- listening socket ----------------------------------------------------------------------- */

static int open_listener(struct eg_server *s, const char *addr, uint16_t port, char **why)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } u;
    socklen_t len;
    int fd = -1, one = 1, e;
    const char *a = strcmp(addr, "localhost") == 0 ? "127.0.0.1" : addr;

    memset(&u, 0, sizeof u);
    if (inet_pton(AF_INET, a, &u.in4.sin_addr) == 1) {
        u.in4.sin_family = AF_INET;
        u.in4.sin_port = htons(port);
        len = sizeof u.in4;
    } else if (inet_pton(AF_INET6, a, &u.in6.sin6_addr) == 1) {
        u.in6.sin6_family = AF_INET6;
        u.in6.sin6_port = htons(port);
        len = sizeof u.in6;
    } else {
        set_error(why, "listen address %s is not an IPv4 or IPv6 address", addr);
        return EG_EINVAL;
    }
    if ((fd = socket(u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    if (u.sa.sa_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        goto fail;
    if (bind(fd, &u.sa, len) < 0 || listen(fd, SOMAXCONN) < 0)
        goto fail;
    len = sizeof u;
    if (getsockname(fd, &u.sa, &len) < 0)
        goto fail;
    s->port = ntohs(u.sa.sa_family == AF_INET6 ? u.in6.sin6_port : u.in4.sin_port);
    s->fd = fd;
    return 0;
fail:
    e = errno;
    if (fd >= 0)
        close(fd);
    set_error(why, "cannot listen on %s port %u: %s", addr, (unsigned)port, strerror(e));
    return EG_EIO;
}

/* ---- public API ----------------------------------------------------------------------------- */

static int check_opts(const struct eg_server_opts *o, char **why)
{
    if (!o->listen_addr || !o->handler) {
        set_error(why, "listen_addr and handler are required");
        return EG_EINVAL;
    }
    if (o->tls && (!o->cert_file || !o->key_file)) {
        set_error(why, "TLS needs a cert_file and a key_file");
        return EG_EINVAL;
    }
    if (!o->tls && o->client_ca_file) {
        set_error(why, "client certificates need TLS");
        return EG_EINVAL;
    }
    if (o->token && (strlen(o->token) == 0 || strlen(o->token) > EG_MAX_TOKEN_BYTES)) {
        set_error(why, "the bearer token must have 1 to %d bytes", EG_MAX_TOKEN_BYTES);
        return EG_EINVAL;
    }
    if (o->max_header_bytes > EG_MHD_CONN_MEMORY / 2 || o->max_body_bytes > EG_MAX_MAX_BODY ||
        o->max_connections > EG_MAX_MAX_CONNECTIONS || o->threads > EG_MAX_SERVER_THREADS ||
        o->max_connections_per_client > EG_MAX_MAX_CONNECTIONS || o->rate_per_s > EG_MAX_API_RATE ||
        o->rate_burst > EG_MAX_API_BURST) {
        set_error(why, "a server limit is out of range");
        return EG_EINVAL;
    }
    return 0;
}

/* Mutexes and (monotonic-clock) condition variables of s; all or nothing. */
static bool locks_init(struct eg_server *s)
{
    pthread_condattr_t ca;
    int step = 0;

    if (pthread_condattr_init(&ca) != 0)
        return false;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&s->drained, &ca) == 0)
        step++;
    if (step == 1 && pthread_cond_init(&s->reap, &ca) == 0)
        step++;
    if (step == 2 && pthread_mutex_init(&s->lock, NULL) == 0)
        step++;
    if (step == 3 && pthread_mutex_init(&s->reload_lock, NULL) == 0)
        step++;
    if (step == 4 && pthread_cond_init(&s->guard_wake, &ca) == 0)
        step++;
    pthread_condattr_destroy(&ca);
    if (step == 5)
        return true;
    if (step > 3)
        pthread_mutex_destroy(&s->reload_lock);
    if (step > 2)
        pthread_mutex_destroy(&s->lock);
    if (step > 1)
        pthread_cond_destroy(&s->reap);
    if (step > 0)
        pthread_cond_destroy(&s->drained);
    return false;
}

int eg_server_start(const struct eg_server_opts *opts, struct eg_server **ret, char **ret_error)
{
    struct eg_server *s = NULL;
    struct gen *g = NULL;
    char *why = NULL;
    int rc;

    if (!opts || !ret) {
        rc = EG_EINVAL;
        goto out;
    }
    if ((rc = check_opts(opts, &why)) < 0)
        goto out;
    if (!(s = eg_calloc(1, sizeof *s))) {
        rc = EG_ENOMEM;
        goto out;
    }
    s->fd = -1;
    atomic_init(&s->stopping, false);
    if (!(s->locks_ready = locks_init(s))) {
        rc = EG_ENOMEM;
        goto out;
    }

    s->tls = opts->tls;
    s->max_header = opts->max_header_bytes ? opts->max_header_bytes : EG_MAX_HEADER_BYTES;
    s->max_body = opts->max_body_bytes ? opts->max_body_bytes : EG_DEFAULT_MAX_BODY;
    s->max_conns = opts->max_connections ? opts->max_connections : EG_DEFAULT_MAX_CONNECTIONS;
    s->timeout_s = opts->conn_timeout_s ? opts->conn_timeout_s : EG_DEFAULT_CONN_TIMEOUT_S;
    s->threads = opts->threads ? opts->threads : EG_DEFAULT_SERVER_THREADS;
    if (s->threads > s->max_conns) /* libmicrohttpd splits the limit among its threads */
        s->threads = s->max_conns;
    s->per_ip = opts->max_connections_per_client ? opts->max_connections_per_client
                                                 : EG_DEFAULT_MAX_CONN_PER_CLIENT;
    if (s->per_ip > s->max_conns)
        s->per_ip = s->max_conns;
    if (opts->rate_per_s &&
        !(s->limiter = limiter_new(opts->rate_per_s,
                                   opts->rate_burst ? opts->rate_burst : 2 * opts->rate_per_s,
                                   EG_MAX_RATE_CLIENTS))) {
        rc = EG_ENOMEM;
        goto out;
    }
    s->handler = opts->handler;
    s->observer = opts->observer;
    s->ctx = opts->ctx;
    rc = EG_ENOMEM;
    if (s->tls &&
        (!(s->cert_file = eg_strdup(opts->cert_file)) ||
         !(s->key_file = eg_strdup(opts->key_file)) ||
         !(s->priorities = eg_strdup(opts->priorities ? opts->priorities : DEFAULT_PRIORITIES)) ||
         (opts->client_ca_file && !(s->ca_file = eg_strdup(opts->client_ca_file)))))
        goto out;
    if (opts->token) {
        if (!(s->token = eg_strdup(opts->token)))
            goto out;
        s->token_len = strlen(s->token);
    }
    for (const char *const *p = opts->public_paths; p && *p; p++)
        s->n_public++;
    if (s->n_public) {
        if (!(s->public_paths = eg_calloc(s->n_public, sizeof *s->public_paths)))
            goto out;
        for (size_t i = 0; i < s->n_public; i++)
            if (!(s->public_paths[i] = eg_strdup(opts->public_paths[i])))
                goto out;
    }

    if (s->tls) {
        gnutls_priority_t prio = NULL;
        const char *err_pos = NULL;
        int gr = gnutls_priority_init(&prio, s->priorities, &err_pos);
        if (gr < 0) {
            set_error(&why, "invalid TLS priority string at \"%s\"",
                      err_pos ? err_pos : s->priorities);
            rc = EG_EINVAL;
            goto out;
        }
        gnutls_priority_deinit(prio);
    }
    if (!(g = gen_new(s))) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (s->tls && (rc = load_material(s, g, &why)) < 0)
        goto out;
    if ((rc = open_listener(s, opts->listen_addr, opts->port, &why)) < 0)
        goto out;
    if ((rc = gen_start(s, g, &why)) < 0)
        goto out;
    s->gens = g;
    g = NULL;
    if (pthread_create(&s->guard, NULL, guard_main, s) != 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    s->guard_started = true;
    if (s->tls) {
        if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
            rc = EG_ENOMEM;
            goto out;
        }
        s->reaper_started = true;
    }
    *ret = s;
    s = NULL;
    rc = 0;
out:
    gen_free(g);
    eg_server_stop(s, 0);
    if (rc < 0 && ret_error) {
        *ret_error = why;
        why = NULL;
    }
    eg_free(why);
    return rc;
}

uint16_t eg_server_port(const struct eg_server *s)
{
    return s ? s->port : 0;
}

int eg_server_reload_tls(struct eg_server *s, char **ret_error)
{
    struct gen *g = NULL, *old = NULL;
    char *why = NULL;
    int rc;

    if (!s)
        return EG_EINVAL;
    if (!s->tls)
        return EG_EUNSUPPORTED;
    pthread_mutex_lock(&s->reload_lock);
    if (atomic_load(&s->stopping)) {
        rc = EG_ESHUTDOWN;
        goto out;
    }
    if (!(g = gen_new(s))) {
        rc = EG_ENOMEM;
        goto out;
    }
    if ((rc = load_material(s, g, &why)) < 0 || (rc = gen_start(s, g, &why)) < 0)
        goto out;
    /* Both daemons accept on the socket for a moment; then the old one stops accepting. */
    pthread_mutex_lock(&s->lock);
    old = s->gens;
    g->next = old;
    s->gens = g;
    pthread_mutex_unlock(&s->lock);
    g = NULL;
    if (old && !old->quiesced) {
        if (MHD_quiesce_daemon(old->d) == MHD_INVALID_SOCKET) {
            /* Cannot happen with MHD_USE_ITC; the old daemon then keeps serving beside the
             * new one until eg_server_stop(). */
            set_error(&why, "the previous TLS listener could not be quiesced");
            rc = EG_EINTERNAL;
            goto out;
        }
        old->quiesced = true;
        pthread_mutex_lock(&s->lock);
        old->retired = true;
        old->retired_ms = eg_mono_ms();
        pthread_cond_signal(&s->reap);
        pthread_mutex_unlock(&s->lock);
    }
    rc = 0;
out:
    pthread_mutex_unlock(&s->reload_lock);
    gen_free(g); /* only ever a generation whose daemon did not start */
    if (rc < 0 && ret_error) {
        *ret_error = why;
        why = NULL;
    }
    eg_free(why);
    return rc;
}

void eg_server_stop(struct eg_server *s, int64_t drain_ms)
{
    if (!s)
        return;
    if (s->locks_ready) {
        pthread_mutex_lock(&s->reload_lock);
        atomic_store(&s->stopping, true);
        /* Stop accepting: only the newest generation still listens. */
        struct gen *cur = s->gens;
        if (cur && cur->d && !cur->quiesced) {
            if (MHD_quiesce_daemon(cur->d) == MHD_INVALID_SOCKET)
                s->fd = -1; /* libmicrohttpd will close it */
            cur->quiesced = true;
        }
        /* Let requests in flight finish. */
        pthread_mutex_lock(&s->lock);
        if (drain_ms > 0) {
            struct timespec ts;
            deadline_after(&ts, drain_ms);
            while (s->inflight > 0)
                if (pthread_cond_timedwait(&s->drained, &s->lock, &ts) == ETIMEDOUT)
                    break;
        }
        s->reaper_quit = true;
        pthread_cond_signal(&s->reap);
        s->guard_quit = true;
        pthread_cond_signal(&s->guard_wake);
        pthread_mutex_unlock(&s->lock);
        if (s->reaper_started)
            pthread_join(s->reaper, NULL);
        if (s->guard_started)
            pthread_join(s->guard, NULL);
        pthread_mutex_unlock(&s->reload_lock);
    }
    while (s->gens) {
        struct gen *g = s->gens;
        s->gens = g->next;
        gen_destroy(s, g);
    }
    if (s->fd >= 0)
        close(s->fd);
    if (s->token) {
        eg_memzero(s->token, s->token_len);
        eg_free(s->token);
    }
    for (size_t i = 0; s->public_paths && i < s->n_public; i++)
        eg_free(s->public_paths[i]);
    eg_free(s->public_paths);
    eg_free(s->cert_file);
    eg_free(s->key_file);
    eg_free(s->ca_file);
    eg_free(s->priorities);
    limiter_free(s->limiter);
    if (s->locks_ready) {
        pthread_mutex_destroy(&s->reload_lock);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->drained);
        pthread_cond_destroy(&s->reap);
        pthread_cond_destroy(&s->guard_wake);
    }
    eg_free(s);
}
