/* psrp_pool.h - a PowerShell runspace pool on a remote endpoint: WS-Management + MS-PSRP.
 *
 * One pool is one WS-Man shell (RunspacePool) on one endpoint, e.g. on-prem Exchange's
 * http(s)://server/PowerShell with configuration Microsoft.Exchange. Pipelines are structured
 * commands only (exchange/psrp_objects.h: cmdlet names and typed parameters), never script text.
 *
 * Concurrency: eg_psrp_pool_run may be called from several threads at once; up to max_pipelines
 * pipelines run in parallel (the pool is opened with MaxRunspaces = max_pipelines), each on its
 * own HTTP connection; further callers wait for a slot. Output objects are handed to the caller's
 * callback as each PSRP message completes, so a long output is never held whole.
 *
 * Shell life: the shell is opened by eg_psrp_pool_open. When it is lost (WS-Man InvalidSelectors,
 * a Broken or Closed RUNSPACEPOOL_STATE) the pool is marked broken and the next run opens a new
 * one first; a run whose Command itself hit the lost shell (so nothing ran) is retried once on the
 * new shell. After max_commands_per_shell pipelines the shell is recycled (a new one is opened
 * once the old one is idle, the old one deleted) to stay under Exchange's per-shell limits.
 *
 * Authentication: Basic, libcurl's Negotiate, or (EG_HTTP_CLIENT_AUTH_GSS) our own GSSAPI
 * handshake with the caller's eg_gss_cred, redone on each new connection; over http:// the
 * HTTP client seals every body. An authentication failure is EG_EAUTH with kind AUTH and the
 * GSSAPI reason in the message ("Kerberos: ...: Clock skew too great"); a reply whose seal does
 * not verify is a transport error (EG_EPROTO) that says so.
 *
 * Nothing here logs; no error text ever contains the password.
 */
#ifndef EG_PSRP_POOL_H
#define EG_PSRP_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "exchange/clixml.h"
#include "exchange/psrp_objects.h"
#include "transport/http_client.h"
#include "transport/wsman.h"

#define EG_PSRP_MAX_PIPELINES 64

struct eg_psrp_pool_opts {
    const char *url;           /* endpoint, e.g. "https://exch01.corp.example/PowerShell" */
    const char *configuration; /* shell configuration; NULL = "Microsoft.Exchange" (ResourceURI
                                  http://schemas.microsoft.com/powershell/<configuration>) */
    enum eg_http_client_auth auth;
    const char *username;
    const char *password;            /* secret: copied, wiped when the pool is freed */
    struct eg_gss_cred *gss_cred;    /* AUTH_GSS: the credentials (borrowed: must outlive the
                                        pool; shared by every connection of the pool) */
    enum eg_gss_scheme gss_scheme;   /* AUTH_GSS: Negotiate, Kerberos or NTLM */
    bool allow_cleartext_auth;       /* Basic over http:// (tests against a local mock only) */
    const char *ca_file;             /* PEM trust anchors for https; NULL = system store */
    bool insecure;                   /* https without verification (explicit opt-in) */
    unsigned max_pipelines;          /* 1..EG_PSRP_MAX_PIPELINES; 0 = 1 */
    unsigned max_commands_per_shell; /* recycle after this many pipelines; 0 = never */
    uint32_t
        operation_timeout_ms; /* Receive long-poll; 0 = EG_WSMAN_DEFAULT_OPERATION_TIMEOUT_MS */
    /* Timeouts (each 0 = default, else 1..EG_HTTP_CLIENT_MAX_TIMEOUT_MS): TCP + TLS connect
     * (default 10 s; a connect failure is a transport error with code EG_EUNAVAIL); io: no byte
     * sent or received for this long (default 10 s); response: one whole WS-Man request
     * (default 60 s). A Receive long-poll gets OperationTimeout on top of both io and response.
     * Either timing out is a transport error with code EG_ETIMEDOUT. */
    int64_t connect_timeout_ms;
    int64_t io_timeout_ms;
    int64_t response_timeout_ms;
    int64_t open_timeout_ms;  /* until the pool is Opened; 0 = 60 s */
    uint32_t idle_timeout_ms; /* rsp:IdleTimeOut asked for; 0 = server default */
};

/* What went wrong, for callers that classify errors (the bridge). */
enum eg_psrp_error_kind {
    EG_PSRP_ERR_NONE = 0,
    EG_PSRP_ERR_TRANSPORT, /* HTTP: connect, reset, timeout, TLS (code says which) */
    EG_PSRP_ERR_AUTH,      /* HTTP 401, or (AUTH_GSS) the Kerberos/NTLM exchange failed */
    EG_PSRP_ERR_FAULT,     /* a WS-Man fault (fault_kind, wsman_code say which) */
    EG_PSRP_ERR_POOL,      /* the runspace pool failed to open or broke */
    EG_PSRP_ERR_PIPELINE,  /* the pipeline failed (PIPELINE_STATE Failed; record set) */
    EG_PSRP_ERR_PROTOCOL,  /* the peer broke WS-Man or MS-PSRP (bad message, host call...) */
    EG_PSRP_ERR_LOCAL,     /* our side: bad arguments, out of memory, callback stop */
};

struct eg_psrp_error {
    enum eg_psrp_error_kind kind;
    int code; /* the EG_E* returned */
    enum eg_wsman_fault_kind fault_kind;
    uint32_t wsman_code;               /* 0 when none */
    long http_status;                  /* 0 when none */
    char message[1024];                /* what happened, never a secret */
    struct eg_ps_error_record *record; /* PIPELINE or POOL failure record, owned; may be NULL */
};

/* Free what an error holds (the record) and reset it. Accepts NULL. */
void eg_psrp_error_clear(struct eg_psrp_error *e);

/* Callbacks for one pipeline; each returns 0 to go on, or a negative EG_E* that stops the
 * pipeline (it is signalled to stop on the server) and is returned by eg_psrp_pool_run. Any of
 * them may be NULL (the item is dropped). */
struct eg_psrp_run_ops {
    /* One PIPELINE_OUTPUT value; ownership passes to the callee. */
    int (*output)(void *ctx, struct eg_ps_value *v);
    /* A non-terminating ERROR_RECORD (borrowed for the call). */
    int (*error)(void *ctx, const struct eg_ps_error_record *er);
    /* WARNING, VERBOSE or DEBUG record text (borrowed). */
    int (*info)(void *ctx, enum eg_ps_info_kind kind, const char *text);
};

struct eg_psrp_pool;

/* Open a pool: Create with creationXml (SESSION_CAPABILITY + INIT_RUNSPACEPOOL), then Receive
 * until RUNSPACEPOOL_STATE Opened. On success *ret is the pool (close with eg_psrp_pool_close).
 * On failure err is filled (clear it with eg_psrp_error_clear). Returns 0, EG_EINVAL, EG_EAUTH,
 * EG_EUNAVAIL, EG_ETIMEDOUT, EG_ETLS, EG_EREMOTE (fault or pool failure), EG_EPROTO, EG_ENOMEM. */
int eg_psrp_pool_open(const struct eg_psrp_pool_opts *o, struct eg_psrp_pool **ret,
                      struct eg_psrp_error *err) EG_MUST_CHECK;

/* Check o's timeouts as eg_psrp_pool_open does (also open_timeout_ms and operation_timeout_ms
 * <= EG_WSMAN_MAX_OPERATION_TIMEOUT_MS): 0 or EG_EINVAL. */
int eg_psrp_pool_check_timeouts(const struct eg_psrp_pool_opts *o) EG_MUST_CHECK;

/* Run one pipeline and stream its results to ops. Returns 0 when the pipeline Completed (errors
 * it reported as ERROR_RECORDs went to ops->error), EG_EREMOTE with err->kind PIPELINE and
 * err->record when it Failed, or another code as for open (err filled). Thread-safe. */
int eg_psrp_pool_run(struct eg_psrp_pool *p, const struct eg_ps_pipeline *pl,
                     const struct eg_psrp_run_ops *ops, void *ctx,
                     struct eg_psrp_error *err) EG_MUST_CHECK;

/* The server's protocol version from its SESSION_CAPABILITY (e.g. {2,3,0,0}). */
void eg_psrp_pool_protocol_version(const struct eg_psrp_pool *p, int32_t ret[4]);

/* Shells opened so far (1 after open; grows with reopen and recycling) - for tests and metrics. */
unsigned eg_psrp_pool_shells_opened(const struct eg_psrp_pool *p);

/* Delete the shell (best effort, waits for running pipelines to end) and free the pool.
 * Accepts NULL. */
void eg_psrp_pool_close(struct eg_psrp_pool *p);

#endif
