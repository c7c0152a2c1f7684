/* fe_internal.h - what the front end's files share (frontend.c: listeners, HTTP, auth;
 * psrp_server.c: shells, pipelines and the WS-Man operations; control_api.c: the control
 * listener). Not for other users: main.c uses frontend.h.
 *
 * Locking: one mutex (fe->lock) guards the shell table, every shell and pipeline, the output
 * queues and the transport fault state. It is never held while calling the engine, encoding
 * CLIXML or doing I/O. Waiting Receives sleep on their shell's condition variable; an engine
 * thread whose output queue is full sleeps on its pipeline's (backpressure).
 */
#ifndef MX_FE_INTERNAL_H
#define MX_FE_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine.h"
#include "exchange/psrp_fragment.h"
#include "exchange/psrp_message.h"
#include "exchange/psrp_objects.h"
#include "frontend.h"
#include "transport/gss.h"
#include "wsman_server.h"

/* ---- output queues ---- */

/* One server -> client PSRP message waiting to be sent, possibly partly sent already. */
struct fe_msg {
    struct fe_msg *next;
    uint8_t *data; /* the encoded message (header + BOM + data); NULL for a fault item */
    size_t len;
    size_t off;             /* bytes already sent in fragments */
    uint64_t object_id;     /* given when the first fragment is cut (0 = not yet) */
    uint64_t next_fragment; /* FragmentId of the next fragment */
    bool final;             /* the terminal PIPELINE_STATE: CommandState Done after it */
    /* a WS-Man fault to answer the Receive with instead of data (quota delivered as fault) */
    char *fault_text;
    uint32_t fault_code;
};

struct fe_queue {
    struct fe_msg *head, *tail;
    size_t bytes; /* sum of len - off */
    size_t count;
};

/* ---- shells and pipelines ---- */

enum fe_pipe_state {
    PIPE_ARGS,     /* CREATE_PIPELINE not complete yet (fragments continue in Send) */
    PIPE_INPUT,    /* NoInput false: waiting for END_OF_PIPELINE_INPUT */
    PIPE_RUNNING,  /* the engine thread runs */
    PIPE_FINISHED, /* the final message is queued (thread may still be ending) */
    PIPE_DONE,     /* CommandState Done delivered (or the command failed with a fault) */
};

struct fe_shell;

struct fe_pipeline {
    struct fe_pipeline *next;        /* in the shell's list (creation order) */
    struct fe_shell *shell;          /* holds a reference */
    unsigned refs;                   /* shell list, engine thread, Receives in progress */
    char id[EG_WSMAN_UUID_SIZE + 8]; /* CommandId as the client knows it */
    enum fe_pipe_state state;
    bool linked;                   /* in the shell's list */
    bool stop;                     /* ctrl_c: the engine's next callback stops it */
    bool abandoned;                /* terminated, shell gone: the thread discards everything */
    bool thread;                   /* an engine thread runs for it */
    struct eg_psrp_defrag *defrag; /* client -> server messages of this command */
    struct eg_psrp_guid pid;       /* PID of CREATE_PIPELINE (echoed) */
    uint8_t *create_msg;           /* the CREATE_PIPELINE message, until the thread parses it */
    size_t create_len;
    bool input_ended; /* END_OF_PIPELINE_INPUT arrived */
    struct fe_queue out;
    pthread_cond_t space; /* the engine thread waits here for queue room */
    uint64_t seq;         /* creation order, for pruning */
};

struct fe_shell {
    struct mx_fe *fe;
    struct fe_shell *next; /* in fe->shells */
    unsigned refs;         /* the table, pipelines, requests in progress */
    bool gone;             /* deleted, lost or timed out: answer InvalidSelectors */
    char id[EG_WSMAN_UUID_SIZE + 8];
    char user[128];
    int listener; /* index of the listener that created it */
    char client_ip[64];
    char locale[32], data_locale[32];
    struct eg_psrp_guid rpid;      /* RPID bytes as the client sent them (echoed) */
    struct eg_psrp_defrag *defrag; /* pool-level client -> server messages */
    uint64_t next_object_id;       /* server -> client ObjectIds */
    int32_t max_runspaces;
    struct fe_queue pool_out;
    struct fe_pipeline *pipes;
    size_t n_pipes;
    unsigned commands; /* Command requests accepted (per-shell command limit) */
    int64_t created_ms, last_ms, idle_timeout_ms;
    pthread_cond_t cond; /* output arrived or state changed */
};

/* ---- listeners ---- */

struct fe_listener {
    struct mx_fe *fe;
    int index;
    struct sockaddr_storage ss; /* bound address (port resolved) */
    socklen_t ss_len;
    char host[64]; /* numeric address text (Machine of faults) */
    uint16_t port;
    struct MHD_Daemon *d; /* NULL while down */
    bool down;            /* under fe->lock */
};

/* ---- transport faults injected through the control API (under fe->lock) ---- */

struct fe_faults {
    unsigned max_shells_per_user; /* 0 = no ceiling */
    unsigned commands_per_shell;  /* 0 = no limit */
    unsigned http_error_count;    /* answer the next N requests with http_error_status */
    int http_error_status;
    int64_t http_retry_after_s; /* Retry-After header; 0 = none */
    unsigned drop_count;        /* close the next N connections without answer */
    bool drop_after;            /* ... after processing the request (else before) */
    bool quota_as_error;        /* quota errors as a Failed pipeline (default: WS-Man fault) */
    unsigned rest_429_count;    /* answer the next N REST InvokeCommand requests with 429 */
    int64_t rest_429_retry_after_s;
    unsigned gss_tamper_count; /* flip a byte in the next N sealed replies */
};

/* ---- the org, reference counted so that /control/seed can replace it ---- */

struct fe_org {
    struct mx_org *org;
    unsigned refs;
};

/* ---- GSSAPI authentication counters (gss_auth.c, under fe->lock) ---- */

struct fe_gss_stats {
    uint64_t handshakes;      /* completed token exchanges */
    uint64_t krb5, ntlm;      /* ... by mechanism */
    uint64_t failures;        /* refused tokens, undecryptable bodies */
    uint64_t sealed_requests; /* multipart/encrypted request bodies unsealed */
    uint64_t sealed_replies;  /* replies sealed */
    uint64_t plain_rejected;  /* unsealed bodies refused over http */
    uint64_t tampered;        /* sealed replies altered by the gss_tamper fault */
    char last_failure[1024];
    char last_user[128];
};

struct fe_user {
    char *name;
    char *password; /* wiped when freed */
};

struct mx_fe {
    pthread_mutex_t lock;
    pthread_mutex_t admin; /* serialises listener down/up and seeding */
    struct fe_org *org;
    struct mx_org_opts org_opts; /* what the current org was built from */
    struct fe_shell *shells;
    size_t n_shells;
    unsigned running;    /* engine threads alive */
    pthread_cond_t idle; /* running dropped */
    uint64_t pipe_seq;
    int64_t last_sweep_ms;
    bool stopping;
    struct fe_faults faults;
    struct fe_user *users; /* NULL: no authentication */
    size_t n_users;
    char realm[128];
    bool shared_shells;
    char *tls_cert, *tls_key; /* PEM text, or NULL for plain HTTP */
    struct fe_listener listeners[EG_MOCK_MAX_LISTENERS];
    size_t n_listeners;
    struct MHD_Daemon *control;
    uint16_t control_port;
    long pid;
    struct fe_rest *rest; /* rest_server.c state (never NULL while running) */
    /* GSSAPI (gss_auth.c): accepted schemes (MX_GSS_* bits, 0 = none), service keytab (NULL =
     * KRB5_KTNAME), channel binding expected over https (NULL over http) */
    unsigned gss_schemes;
    char *gss_keytab;
    uint8_t *gss_cb;
    size_t gss_cb_len;
    struct fe_gss_stats gss;
};

/* ---- frontend.c ---- */

/* Take / drop a reference to the current org (never NULL while the front end runs). */
struct fe_org *fe_org_get(struct mx_fe *fe);
void fe_org_put(struct mx_fe *fe, struct fe_org *o);
/* Replace the org with a new one built from opts. 0 or the mx_org_new error. */
int fe_org_reseed(struct mx_fe *fe, const struct mx_org_opts *opts) EG_MUST_CHECK;
/* Take listener i down (stop accepting: connections refused; its connections are closed and,
 * unless shells are shared, its shells lost) or bring it back on the same port.
 * 0, EG_ENOTFOUND (no such listener), EG_EIO (cannot bind again). */
int fe_listener_down(struct mx_fe *fe, size_t i) EG_MUST_CHECK;
int fe_listener_up(struct mx_fe *fe, size_t i) EG_MUST_CHECK;
/* Resolve hostport ("ADDR:PORT", port 0 allowed), bind and listen: *ret_fd, l->ss, l->port,
 * l->host. 0, EG_EINVAL (bad address), EG_EIO (err says why). */
int fe_open_listener(const char *hostport, struct fe_listener *l, int *ret_fd, char *err,
                     size_t err_size) EG_MUST_CHECK;
/* A MHD response for a buffer the callee takes over (eg_free'd by MHD). */
enum MHD_Result fe_send(struct MHD_Connection *c, unsigned status, const char *content_type,
                        char *body, size_t len);

/* ---- psrp_server.c ---- */

/* What to do with the connection after a WS-Man request. */
enum fe_outcome {
    FE_ANSWER, /* send *ret_body with *ret_status */
    FE_DROP,   /* close the connection without answer (listener went down, server stops) */
};

/* Handle one WS-Man request (the POST body) that arrived on listener l from user (already
 * authenticated) at client_ip. Fills *ret_status and *ret_body (eg_free) for FE_ANSWER. */
enum fe_outcome fe_psrp_handle(struct mx_fe *fe, struct fe_listener *l, const char *user,
                               const char *client_ip, const char *body, size_t len,
                               unsigned *ret_status, char **ret_body, size_t *ret_len);

/* Lose shells (under no lock): all of them (all true), or those matching shell_id / user /
 * listener (NULL / NULL / -1 = any). Returns how many were lost. */
size_t fe_lose_shells(struct mx_fe *fe, bool all, const char *shell_id, const char *user,
                      int listener);
/* With fe->lock held: lose the shells of listener i (none when shells are shared) and wake
 * every waiting Receive so that those on a down listener drop their connection. */
void fe_listener_down_locked(struct mx_fe *fe, int i);
/* Stop: lose every shell and wait until every engine thread has ended. */
void fe_psrp_shutdown(struct mx_fe *fe);
/* JSON array describing the open shells (for GET /control/shells). */
json_t *fe_shells_json(struct mx_fe *fe);

/* ---- rest_server.c ---- */

struct fe_rest;
/* Load the app certificate, make the token signing key. 0, EG_EIO, EG_ETLS, EG_EINVAL,
 * EG_ENOMEM (err says why). */
int fe_rest_init(struct mx_fe *fe, const struct mx_fe_opts *o, char *err,
                 size_t err_size) EG_MUST_CHECK;
void fe_rest_free(struct fe_rest *r);
/* Is url one of the REST paths (InvokeCommand or the token endpoint)? */
bool fe_rest_path(const char *url);
/* Answer one complete REST request (transport faults other than rest_429 already applied).
 * drop_after: process it, then close the connection without answer. */
enum MHD_Result fe_rest_request(struct fe_listener *l, struct MHD_Connection *c, const char *url,
                                const char *body, size_t len, bool too_big, bool drop_after);

/* ---- gss_auth.c: Negotiate / Kerberos / NTLM acceptor and message sealing ---- */

/* "negotiate,kerberos,ntlm" (any subset, any case) -> MX_GSS_* bits (those of frontend.h);
 * 0 for an unknown name or an empty list. */
unsigned fe_gss_parse_schemes(const char *list);
/* Take the options' schemes and keytab; over https compute the channel binding of the
 * listener certificate (fe->tls_cert must be loaded). 0, EG_ENOMEM, EG_ETLS (err says why). */
int fe_gss_init(struct mx_fe *fe, const struct mx_fe_opts *o, char *err,
                size_t err_size) EG_MUST_CHECK;
void fe_gss_free(struct mx_fe *fe);
/* MHD_OPTION_NOTIFY_CONNECTION: one security context per connection (socket context). */
void fe_gss_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                   enum MHD_ConnectionNotificationCode toe);
/* Add the WWW-Authenticate challenges of the accepted GSS schemes to a 401. */
void fe_gss_challenge(struct mx_fe *fe, struct MHD_Response *r);

enum fe_gss_verdict {
    FE_GSS_NONE,     /* no GSS request and no authenticated connection: Basic's business */
    FE_GSS_ANSWERED, /* a response is queued (401 step or refusal, 400 unsealed): return mhd */
    FE_GSS_OK,       /* authenticated as user; the body to handle is plain (NULL = as sent) */
};

struct fe_gss_result {
    char user[128]; /* the authenticated peer name */
    bool seal;      /* plain http: seal the reply */
    bool handshake; /* the request carried the last token of a handshake */
    uint8_t *plain; /* unsealed request body (NUL-terminated), NULL = use the body as sent */
    size_t plain_len;
    char *final_header;  /* "Negotiate <last server token>" for the reply, or NULL */
    enum MHD_Result mhd; /* with FE_GSS_ANSWERED */
};

/* Authenticate one complete request on l: run a handshake step for an Authorization header,
 * or take the connection's established context; over http unseal the body (refusing an
 * unsealed one with 400). Counts in fe->gss. Clear res with fe_gss_result_clear. */
enum fe_gss_verdict fe_gss_request(struct fe_listener *l, struct MHD_Connection *c,
                                   const char *body, size_t len, struct fe_gss_result *res);
/* Answer an authenticated request: soap (eg_malloc'd, taken over; NULL = empty body) sealed
 * when res->seal (the gss_tamper fault applies here), with res->final_header. */
enum MHD_Result fe_gss_reply(struct fe_listener *l, struct MHD_Connection *c,
                             struct fe_gss_result *res, unsigned status, char *soap, size_t len);
void fe_gss_result_clear(struct fe_gss_result *res);
/* {"schemes", "basic", "sealing", the counters, "last_failure", "last_user"} for GET
 * /control/auth; reset for DELETE. */
json_t *fe_gss_json(struct mx_fe *fe);
void fe_gss_reset(struct mx_fe *fe);

/* ---- control_api.c ---- */

/* Start the control listener on addr:port (plain HTTP). 0, EG_EINVAL (not loopback),
 * EG_EIO. */
int fe_control_start(struct mx_fe *fe, const char *hostport, char *err,
                     size_t err_size) EG_MUST_CHECK;

#endif
