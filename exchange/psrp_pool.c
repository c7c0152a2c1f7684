/* psrp_pool.c - runspace pool over WS-Man: open, run pipelines in parallel, reopen, recycle.
 *
 * Layers used: transport/http_client (one connection per pipeline in flight), transport/wsman
 * (envelopes and faults), exchange/psrp_fragment + psrp_message (framing), exchange/clixml and
 * psrp_objects (message bodies). Sequence per psrp-wire.md section 4.
 */
#include "exchange/psrp_pool.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/util.h"
#include "exchange/psrp_fragment.h"
#include "exchange/psrp_message.h"

#define RESOURCE_PREFIX            "http://schemas.microsoft.com/powershell/"
#define DEFAULT_CONFIGURATION      "Microsoft.Exchange"
#define DEFAULT_OPEN_TIMEOUT_MS    60000
#define ENVELOPE_AFTER_NEGOTIATION 512000u /* protocolversion >= 2.2 (psrp-wire.md section 13) */
#define ENVELOPE_OVERHEAD          2048    /* bytes of a Send envelope around its base64 stream */
#define MAX_RECEIVE_LOOPS          1000000 /* Receives for one pipeline before giving up (a guard) */

struct conn {
    struct eg_http_client *http;
    struct conn *next;
};

struct eg_psrp_pool {
    /* settings (owned copies) */
    char *url, *resource_uri, *username, *password, *ca_file;
    enum eg_http_client_auth auth;
    struct eg_gss_cred *gss_cred; /* borrowed */
    enum eg_gss_scheme gss_scheme;
    bool allow_cleartext_auth, insecure;
    unsigned max_pipelines, max_commands_per_shell;
    uint32_t operation_timeout_ms, idle_timeout_ms;
    int64_t connect_timeout_ms, io_timeout_ms, response_timeout_ms, open_timeout_ms;
    char session_id[EG_PSRP_GUID_STRLEN];

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct conn *idle; /* connections not in use */
    unsigned running;  /* pipelines in flight */
    bool opening;      /* a thread is replacing the shell */
    /* the current shell (under lock) */
    char *shell_id;
    struct eg_psrp_guid rpid;
    bool broken;
    unsigned commands_on_shell;
    unsigned generation; /* bumped each time a shell is opened */
    unsigned shells_opened;
    uint64_t next_object_id;
    uint32_t max_envelope;
    int32_t protocol_version[4];
};

/* ---- errors --------------------------------------------------------------------------------- */

void eg_psrp_error_clear(struct eg_psrp_error *e)
{
    if (!e)
        return;
    eg_ps_error_record_free(e->record);
    memset(e, 0, sizeof *e);
}

__attribute__((format(printf, 4, 5))) static int
fail(struct eg_psrp_error *e, enum eg_psrp_error_kind kind, int code, const char *fmt, ...)
{
    va_list ap;
    if (!e)
        return code;
    eg_psrp_error_clear(e);
    e->kind = kind;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return code;
}

static int fail_fault(struct eg_psrp_error *e, const char *what, struct eg_wsman_fault *f,
                      long status)
{
    int code = eg_wsman_fault_error(f->kind);
    fail(e, EG_PSRP_ERR_FAULT, code, "%s: WS-Man fault %s%s%s (%u): %s", what,
         eg_wsman_fault_kind_name(f->kind), f->subcode ? " " : "", f->subcode ? f->subcode : "",
         f->has_wsman_code ? f->wsman_code : 0u,
         f->message  ? f->message
         : f->reason ? f->reason
                     : "no message");
    if (e) {
        e->fault_kind = f->kind;
        e->wsman_code = f->has_wsman_code ? f->wsman_code : 0;
        e->http_status = status;
    }
    return code;
}

static int fail_http(struct eg_psrp_error *e, const char *what, int rc, struct eg_http_client *c,
                     bool gss)
{
    /* with GSSAPI an EG_EAUTH may come from the KDC or the acceptor, not only from a 401: the
     * client's text says which (wrong password, clock skew, expired ticket...) */
    const char *detail = c ? eg_http_client_last_error(c) : "";
    fail(e, rc == EG_EAUTH ? EG_PSRP_ERR_AUTH : EG_PSRP_ERR_TRANSPORT, rc, "%s: %s%s%s", what,
         rc == EG_EAUTH
             ? (gss ? "Kerberos/NTLM authentication failed" : "credentials refused (HTTP 401)")
             : eg_strerror(rc),
         detail[0] ? ": " : "", detail);
    if (e && rc == EG_EAUTH)
        e->http_status = 401;
    return rc;
}

/* ---- connections ---------------------------------------------------------------------------- */

static int conn_get(struct eg_psrp_pool *p, struct conn **ret, struct eg_psrp_error *err)
{
    pthread_mutex_lock(&p->lock);
    struct conn *c = p->idle;
    if (c)
        p->idle = c->next;
    pthread_mutex_unlock(&p->lock);
    if (c) {
        *ret = c;
        return 0;
    }
    c = eg_calloc(1, sizeof *c);
    if (!c)
        return fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
    struct eg_http_client_opts ho = {.url = p->url,
                                     .auth = p->auth,
                                     .username = p->username,
                                     .password = p->password,
                                     .gss_cred = p->gss_cred,
                                     .gss_scheme = p->gss_scheme,
                                     .allow_cleartext_auth = p->allow_cleartext_auth,
                                     .ca_file = p->ca_file,
                                     .insecure = p->insecure,
                                     .connect_timeout_ms = p->connect_timeout_ms,
                                     .io_timeout_ms = p->io_timeout_ms,
                                     .response_timeout_ms = p->response_timeout_ms};
    int rc = eg_http_client_new(&ho, &c->http);
    if (rc < 0) {
        eg_free(c);
        return fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot set up the HTTP client for %s: %s", p->url,
                    eg_strerror(rc));
    }
    *ret = c;
    return 0;
}

static void conn_put(struct eg_psrp_pool *p, struct conn *c, bool healthy)
{
    if (!c)
        return;
    if (!healthy) {
        eg_http_client_free(c->http);
        eg_free(c);
        return;
    }
    pthread_mutex_lock(&p->lock);
    c->next = p->idle;
    p->idle = c;
    pthread_mutex_unlock(&p->lock);
}

/* ---- one WS-Man exchange -------------------------------------------------------------------- */

struct shell_ref {
    char *shell_id;
    struct eg_psrp_guid rpid;
    unsigned generation;
    uint32_t max_envelope;
};

static void target_for(const struct eg_psrp_pool *p, uint32_t max_envelope,
                       struct eg_wsman_target *t)
{
    *t = (struct eg_wsman_target){.to = p->url,
                                  .resource_uri = p->resource_uri,
                                  .session_id = p->session_id,
                                  .max_envelope_size = max_envelope,
                                  .operation_timeout_ms = p->operation_timeout_ms};
}

/* POST a built request and parse the answer. *ret_resp on success; on EG_EREMOTE err has the
 * fault (and *ret_fault_kind its kind). */
static int exchange(struct eg_psrp_pool *p, struct conn *c, enum eg_wsman_op op,
                    struct eg_wsman_request *req, const char *what,
                    struct eg_wsman_response **ret_resp, enum eg_wsman_fault_kind *ret_fault_kind,
                    struct eg_psrp_error *err)
{
    struct eg_http_client_response hr = {0};
    struct eg_wsman_fault *fault = NULL;
    /* A Receive is a long-poll: the server may hold it for OperationTimeout without sending a
     * byte, so it gets that on top of both the io and the response timeout. */
    int64_t hold = op == EG_WSMAN_OP_RECEIVE ? (int64_t)p->operation_timeout_ms : 0;
    struct eg_http_client_req rq = {.method = "POST",
                                    .content_type = EG_HTTP_CLIENT_SOAP_TYPE,
                                    .body = req->xml,
                                    .body_len = req->len,
                                    .response_timeout_ms = hold + p->response_timeout_ms,
                                    .io_timeout_ms = hold + p->io_timeout_ms};
    int rc = eg_http_client_request(c->http, &rq, &hr);
    if (rc < 0)
        return fail_http(err, what, rc, c->http, p->auth == EG_HTTP_CLIENT_AUTH_GSS);
    rc = eg_wsman_parse_response(op, req->message_id, hr.body, hr.body_len, ret_resp, &fault);
    if (rc == EG_EREMOTE) {
        if (ret_fault_kind)
            *ret_fault_kind = fault->kind;
        fail_fault(err, what, fault, hr.status);
        eg_wsman_fault_free(fault);
    } else if (rc < 0) {
        if (hr.status >= 500 || hr.status == 429 || hr.status == 408)
            rc = fail(err, EG_PSRP_ERR_TRANSPORT, EG_EUNAVAIL, "%s: HTTP %ld without a SOAP answer",
                      what, hr.status);
        else
            fail(err, EG_PSRP_ERR_PROTOCOL, rc, "%s: HTTP %ld, unusable answer: %s", what,
                 hr.status, eg_strerror(rc));
        if (err)
            err->http_status = hr.status;
    }
    eg_http_client_response_clear(&hr);
    return rc;
}

/* ---- framing helpers ------------------------------------------------------------------------ */

/* Largest fragment (header + blob) whose base64 fits one envelope of max_envelope bytes. */
static size_t max_fragment_for(uint32_t max_envelope)
{
    size_t room = max_envelope > ENVELOPE_OVERHEAD + 256 ? max_envelope - ENVELOPE_OVERHEAD : 256;
    return room / 4 * 3;
}

/* Encode one client message (destination server) into fragments. */
static int frame(struct eg_psrp_pool *p, uint32_t type, const struct eg_psrp_guid *rpid,
                 const struct eg_psrp_guid *pid, const char *body, size_t len, uint32_t max_env,
                 struct eg_psrp_fragments **ret)
{
    struct eg_psrp_message m = {.destination = EG_PSRP_DEST_SERVER,
                                .type = type,
                                .rpid = *rpid,
                                .data = (const uint8_t *)body,
                                .data_len = len};
    if (pid)
        m.pid = *pid;
    pthread_mutex_lock(&p->lock);
    int rc = eg_psrp_message_fragment(&m, 0, max_fragment_for(max_env), &p->next_object_id, ret);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* base64 of fragments [from, to) of f. */
static int b64_range(const struct eg_psrp_fragments *f, size_t from, size_t to, char **ret)
{
    size_t n = 0;
    return eg_base64_encode(f->data + f->offsets[from], f->offsets[to] - f->offsets[from], ret, &n);
}

/* Decoded server messages of one Receive, handed to a handler one by one. */
typedef int (*msg_handler)(void *ctx, const struct eg_psrp_message *m, struct eg_ps_value *v,
                           struct eg_psrp_error *err);

/* Feed the response's streams (for command_id, or shell-level when NULL) to the defragmenter and
 * hand every completed message to h. */
static int dispatch(struct eg_psrp_defrag *d, const struct eg_wsman_response *r,
                    const char *command_id, msg_handler h, void *ctx, struct eg_psrp_error *err)
{
    int rc;
    for (size_t i = 0; i < r->n_streams; i++) {
        const struct eg_wsman_stream *s = &r->streams[i];
        if (strcmp(s->name, "stdout") != 0)
            continue;
        if (command_id && s->command_id && strcasecmp(s->command_id, command_id) != 0)
            continue;
        if ((rc = eg_psrp_defrag_feed_buffer(d, s->data, s->len)) < 0)
            return fail(err, EG_PSRP_ERR_PROTOCOL, rc, "bad PSRP fragments from the server: %s",
                        eg_psrp_defrag_reason(d));
    }
    for (;;) {
        uint8_t *data = NULL;
        size_t len = 0;
        uint64_t oid = 0;
        rc = eg_psrp_defrag_pop(d, &data, &len, &oid);
        if (rc == EG_ENOTFOUND)
            return 0;
        if (rc < 0)
            return fail(err, EG_PSRP_ERR_LOCAL, rc, "reassembly failed: %s", eg_strerror(rc));
        struct eg_psrp_message m;
        struct eg_ps_value *v = NULL;
        rc = eg_psrp_message_decode(data, len, &m);
        if (rc == 0 && m.data_len > 0) {
            struct eg_clixml_error cerr;
            memset(&cerr, 0, sizeof cerr);
            rc = eg_clixml_decode(m.data, m.data_len, &v, &cerr);
            if (rc < 0)
                fail(err, rc == EG_ENOMEM ? EG_PSRP_ERR_LOCAL : EG_PSRP_ERR_PROTOCOL, rc,
                     "undecodable %s message from the server: %s", eg_psrp_msg_type_name(m.type),
                     eg_strerror(rc));
        } else if (rc < 0) {
            fail(err, EG_PSRP_ERR_PROTOCOL, rc, "malformed PSRP message from the server");
        }
        if (rc == 0)
            rc = h(ctx, &m, v, err);
        eg_ps_value_free(v);
        eg_free(data);
        if (rc != 0)
            return rc;
    }
}

/* ---- opening a shell ------------------------------------------------------------------------ */

struct open_state {
    struct eg_psrp_pool *p;
    int32_t state;
    bool have_state;
    bool have_capability;
    struct eg_ps_capability cap;
};

static int open_handler(void *ctx, const struct eg_psrp_message *m, struct eg_ps_value *v,
                        struct eg_psrp_error *err)
{
    struct open_state *os = ctx;
    struct eg_ps_error_record *er = NULL;
    int rc;
    switch (m->type) {
    case EG_PSRP_SESSION_CAPABILITY:
        if (!v || eg_psrp_parse_session_capability(v, &os->cap) < 0)
            return fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO,
                        "the server's SESSION_CAPABILITY is malformed");
        os->have_capability = true;
        return 0;
    case EG_PSRP_RUNSPACEPOOL_STATE:
        if (!v || (rc = eg_psrp_parse_runspacepool_state(v, &os->state, &er)) < 0)
            return fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO,
                        "the server's RUNSPACEPOOL_STATE is malformed");
        if (os->state == EG_PS_POOL_OPENED) {
            os->have_state = true;
            eg_ps_error_record_free(er);
            return 0;
        }
        if (os->state == EG_PS_POOL_BROKEN || os->state == EG_PS_POOL_CLOSED) {
            fail(err, EG_PSRP_ERR_POOL, EG_EREMOTE, "the server refused the runspace pool (%s)%s%s",
                 os->state == EG_PS_POOL_BROKEN ? "Broken" : "Closed", er ? ": " : "",
                 er ? er->message : "");
            if (err)
                err->record = er;
            else
                eg_ps_error_record_free(er);
            return EG_EREMOTE;
        }
        eg_ps_error_record_free(er);
        return 0; /* Opening, NegotiationSucceeded...: keep receiving */
    default:
        return 0; /* APPLICATION_PRIVATE_DATA, ENCRYPTED_SESSION_KEY...: nothing to do */
    }
}

/* Delete a shell, best effort. */
static void delete_shell(struct eg_psrp_pool *p, struct conn *c, const char *shell_id,
                         uint32_t max_env)
{
    struct eg_wsman_target t;
    struct eg_wsman_request req = {0};
    struct eg_wsman_response *resp = NULL;
    target_for(p, max_env, &t);
    if (eg_wsman_build_delete(&t, shell_id, &req) == 0)
        (void)exchange(p, c, EG_WSMAN_OP_DELETE, &req, "Delete", &resp, NULL, NULL);
    eg_wsman_response_free(resp);
    eg_wsman_request_clear(&req);
}

/* Open a new shell; on success install it as the pool's current one (deleting the old shell if
 * there was one). Called with no lock held, by one thread at a time (p->opening). */
static int open_shell(struct eg_psrp_pool *p, struct conn *c, struct eg_psrp_error *err)
{
    struct eg_psrp_guid rpid;
    char *cap_xml = NULL, *init_xml = NULL, *b64 = NULL, *old_shell = NULL;
    size_t cap_len = 0, init_len = 0;
    struct eg_psrp_fragments *f1 = NULL, *f2 = NULL;
    uint8_t *both = NULL;
    struct eg_wsman_target t;
    struct eg_wsman_request req = {0};
    struct eg_wsman_response *resp = NULL;
    struct eg_psrp_defrag *d = NULL;
    char *shell_id = NULL;
    uint32_t env = EG_WSMAN_DEFAULT_MAX_ENVELOPE;
    int rc;

    struct eg_ps_capability cap = {{2, 3, 0, 0}, {2, 0, 0, 0}, {1, 1, 0, 1}};
    struct eg_ps_pool_init init = {.min_runspaces = 1,
                                   .max_runspaces = (int32_t)p->max_pipelines,
                                   .thread_options = 0,
                                   .apartment_state = 2};
    if ((rc = eg_psrp_guid_generate(&rpid)) < 0 ||
        (rc = eg_psrp_build_session_capability(&cap, &cap_xml, &cap_len)) < 0 ||
        (rc = eg_psrp_build_init_runspacepool(&init, &init_xml, &init_len)) < 0 ||
        (rc = frame(p, EG_PSRP_SESSION_CAPABILITY, &rpid, NULL, cap_xml, cap_len, env, &f1)) < 0 ||
        (rc = frame(p, EG_PSRP_INIT_RUNSPACEPOOL, &rpid, NULL, init_xml, init_len, env, &f2)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build the pool's opening messages: %s",
             eg_strerror(rc));
        goto out;
    }
    if (f1->n != 1 || f2->n != 1) {
        rc = fail(err, EG_PSRP_ERR_LOCAL, EG_ELIMIT, "opening messages do not fit one envelope");
        goto out;
    }
    both = eg_malloc(f1->len + f2->len);
    if (!both) {
        rc = fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(both, f1->data, f1->len);
    memcpy(both + f1->len, f2->data, f2->len);
    size_t b64_len = 0;
    if ((rc = eg_base64_encode(both, f1->len + f2->len, &b64, &b64_len)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "out of memory");
        goto out;
    }
    target_for(p, env, &t);
    struct eg_wsman_create_opts co = {.creation_xml_b64 = b64,
                                      .idle_timeout_ms = p->idle_timeout_ms};
    if ((rc = eg_wsman_build_create(&t, &co, &req)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build Create: %s", eg_strerror(rc));
        goto out;
    }
    if ((rc = exchange(p, c, EG_WSMAN_OP_CREATE, &req, "Create (open the runspace pool)", &resp,
                       NULL, err)) < 0)
        goto out;
    shell_id = eg_strdup(resp->shell_id);
    eg_wsman_response_free(resp);
    resp = NULL;
    eg_wsman_request_clear(&req);
    if (!shell_id) {
        rc = fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
        goto out;
    }

    /* Receive on the pool until Opened. */
    struct open_state os = {.p = p};
    int64_t deadline = eg_mono_ms() + p->open_timeout_ms;
    if ((rc = eg_psrp_defrag_new(NULL, &d)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "out of memory");
        goto out_delete;
    }
    while (!os.have_state) {
        enum eg_wsman_fault_kind fk = EG_WSMAN_FAULT_OTHER;
        if (eg_mono_ms() > deadline) {
            rc = fail(err, EG_PSRP_ERR_POOL, EG_ETIMEDOUT,
                      "the runspace pool did not open within %lld ms",
                      (long long)p->open_timeout_ms);
            goto out_delete;
        }
        if ((rc = eg_wsman_build_receive(&t, shell_id, NULL, &req)) < 0) {
            fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build Receive: %s", eg_strerror(rc));
            goto out_delete;
        }
        rc = exchange(p, c, EG_WSMAN_OP_RECEIVE, &req, "Receive (runspace pool)", &resp, &fk, err);
        eg_wsman_request_clear(&req);
        if (rc == EG_EREMOTE && fk == EG_WSMAN_FAULT_TIMED_OUT) {
            eg_psrp_error_clear(err);
            continue;
        }
        if (rc < 0)
            goto out_delete;
        rc = dispatch(d, resp, NULL, open_handler, &os, err);
        eg_wsman_response_free(resp);
        resp = NULL;
        if (rc < 0)
            goto out_delete;
    }
    if (os.have_capability && eg_ps_version_cmp(os.cap.protocol_version, 2, 2) >= 0)
        env = ENVELOPE_AFTER_NEGOTIATION;

    pthread_mutex_lock(&p->lock);
    old_shell = p->shell_id;
    p->shell_id = shell_id;
    shell_id = NULL;
    p->rpid = rpid;
    p->broken = false;
    p->commands_on_shell = 0;
    p->generation++;
    p->shells_opened++;
    p->max_envelope = env;
    if (os.have_capability)
        memcpy(p->protocol_version, os.cap.protocol_version, sizeof p->protocol_version);
    pthread_mutex_unlock(&p->lock);
    if (old_shell)
        delete_shell(p, c, old_shell, EG_WSMAN_DEFAULT_MAX_ENVELOPE);
    rc = 0;
    goto out;

out_delete:
    delete_shell(p, c, shell_id, env);
out:
    eg_psrp_defrag_free(d);
    eg_wsman_response_free(resp);
    eg_wsman_request_clear(&req);
    eg_psrp_fragments_free(f1);
    eg_psrp_fragments_free(f2);
    eg_free(both);
    eg_free(b64);
    eg_free(cap_xml);
    eg_free(init_xml);
    eg_free(shell_id);
    eg_free(old_shell);
    return rc;
}

/* ---- running one pipeline ------------------------------------------------------------------- */

struct run_state {
    const struct eg_psrp_run_ops *ops;
    void *ctx;
    int32_t state;
    bool done;
    int stop_rc; /* a callback asked to stop */
    struct eg_ps_error_record *failure;
};

static int run_handler(void *ctx, const struct eg_psrp_message *m, struct eg_ps_value *v,
                       struct eg_psrp_error *err)
{
    struct run_state *rs = ctx;
    struct eg_ps_error_record *er = NULL;
    char *text = NULL;
    int rc = 0;

    if (rs->done)
        return 0;
    switch (m->type) {
    case EG_PSRP_PIPELINE_OUTPUT:
        if (rs->ops && rs->ops->output && v) {
            rc = rs->ops->output(rs->ctx, eg_ps_value_ref(v));
        }
        break;
    case EG_PSRP_ERROR_RECORD:
        if (!v || (rc = eg_psrp_parse_error_record(v, &er)) < 0)
            return fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO, "malformed ERROR_RECORD");
        if (rs->ops && rs->ops->error)
            rc = rs->ops->error(rs->ctx, er);
        eg_ps_error_record_free(er);
        break;
    case EG_PSRP_WARNING_RECORD:
    case EG_PSRP_VERBOSE_RECORD:
    case EG_PSRP_DEBUG_RECORD:
        if (!v || (rc = eg_psrp_parse_informational(v, &text)) < 0)
            return fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO, "malformed %s",
                        eg_psrp_msg_type_name(m->type));
        if (rs->ops && rs->ops->info)
            rc = rs->ops->info(rs->ctx,
                               m->type == EG_PSRP_WARNING_RECORD   ? EG_PS_INFO_WARNING
                               : m->type == EG_PSRP_VERBOSE_RECORD ? EG_PS_INFO_VERBOSE
                                                                   : EG_PS_INFO_DEBUG,
                               text);
        eg_free(text);
        break;
    case EG_PSRP_PIPELINE_STATE:
        if (!v || (rc = eg_psrp_parse_pipeline_state(v, &rs->state, &er)) < 0)
            return fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO, "malformed PIPELINE_STATE");
        if (eg_ps_pipeline_state_terminal(rs->state)) {
            rs->done = true;
            rs->failure = er;
        } else {
            eg_ps_error_record_free(er);
        }
        return 0;
    case EG_PSRP_PIPELINE_HOST_CALL:
    case EG_PSRP_RUNSPACEPOOL_HOST_CALL:
        return fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO,
                    "the server asked the (null) host for input; a cmdlet wants confirmation "
                    "or credentials that easgate never gives interactively");
    default:
        return 0; /* PROGRESS_RECORD, INFORMATION_RECORD...: ignored */
    }
    if (rc < 0) {
        rs->stop_rc = rc;
        return fail(err, EG_PSRP_ERR_LOCAL, rc, "stopped by the caller: %s", eg_strerror(rc));
    }
    return 0;
}

static void signal_command(struct eg_psrp_pool *p, struct conn *c, const struct shell_ref *sh,
                           const char *command_id, const char *code)
{
    struct eg_wsman_target t;
    struct eg_wsman_request req = {0};
    struct eg_wsman_response *resp = NULL;
    target_for(p, sh->max_envelope, &t);
    if (eg_wsman_build_signal(&t, sh->shell_id, command_id, code, &req) == 0)
        (void)exchange(p, c, EG_WSMAN_OP_SIGNAL, &req, "Signal", &resp, NULL, NULL);
    eg_wsman_response_free(resp);
    eg_wsman_request_clear(&req);
}

/* *ret_started says whether the server accepted the Command (so the pipeline may have run). */
/* The fault WinRM gives once a shell reached its Maximum Commands per Shell quota
 * (exchange-semantics.md §13: recycle the pool). */
static bool shell_exhausted(const struct eg_psrp_error *err)
{
    return err && strcasestr(err->message, "commands per shell") != NULL;
}

static int run_on_shell(struct eg_psrp_pool *p, struct conn *c, const struct shell_ref *sh,
                        const struct eg_ps_pipeline *pl, const struct eg_psrp_run_ops *ops,
                        void *ctx, bool *ret_started, bool *ret_shell_lost,
                        struct eg_psrp_error *err)
{
    struct eg_psrp_guid pid;
    char pid_text[EG_PSRP_GUID_STRLEN];
    char *body = NULL, *b64 = NULL, *command_id = NULL;
    size_t body_len = 0;
    struct eg_psrp_fragments *f = NULL;
    struct eg_wsman_target t;
    struct eg_wsman_request req = {0};
    struct eg_wsman_response *resp = NULL;
    struct eg_psrp_defrag *d = NULL;
    struct run_state rs = {.ops = ops, .ctx = ctx, .state = -1};
    enum eg_wsman_fault_kind fk = EG_WSMAN_FAULT_OTHER;
    struct eg_ps_capability peer = {{2, 3, 0, 0}, {2, 0, 0, 0}, {1, 1, 0, 1}};
    int rc;

    *ret_started = false;
    *ret_shell_lost = false;
    pthread_mutex_lock(&p->lock);
    memcpy(peer.protocol_version, p->protocol_version, sizeof peer.protocol_version);
    pthread_mutex_unlock(&p->lock);
    target_for(p, sh->max_envelope, &t);
    if ((rc = eg_psrp_guid_generate(&pid)) < 0 ||
        (rc = eg_psrp_build_create_pipeline(pl, &peer, &body, &body_len)) < 0 ||
        (rc = frame(p, EG_PSRP_CREATE_PIPELINE, &sh->rpid, &pid, body, body_len, sh->max_envelope,
                    &f)) < 0 ||
        (rc = b64_range(f, 0, 1, &b64)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build CREATE_PIPELINE: %s", eg_strerror(rc));
        goto out;
    }
    eg_psrp_guid_to_string(&pid, true, pid_text);
    if ((rc = eg_wsman_build_command(&t, sh->shell_id, pid_text, b64, &req)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build Command: %s", eg_strerror(rc));
        goto out;
    }
    rc = exchange(p, c, EG_WSMAN_OP_COMMAND, &req, "Command", &resp, &fk, err);
    eg_wsman_request_clear(&req);
    if (rc < 0) {
        /* A shell that has used up WinRM's commands-per-shell quota refuses every further
         * Command: treat it like a lost shell, so the pool is recycled (and the Command, which
         * never ran, retried once on the new shell). */
        *ret_shell_lost =
            rc == EG_EREMOTE && (fk == EG_WSMAN_FAULT_INVALID_SELECTORS || shell_exhausted(err));
        goto out;
    }
    *ret_started = true;
    command_id = eg_strdup(resp->command_id);
    eg_wsman_response_free(resp);
    resp = NULL;
    if (!command_id) {
        rc = fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
        goto out;
    }
    /* The remaining fragments of CREATE_PIPELINE, one Send each. */
    for (size_t i = 1; i < f->n; i++) {
        eg_freep(&b64);
        if ((rc = b64_range(f, i, i + 1, &b64)) < 0 ||
            (rc = eg_wsman_build_send(&t, sh->shell_id, command_id, "stdin", b64, false, &req)) <
                0) {
            fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build Send: %s", eg_strerror(rc));
            goto out_signal;
        }
        rc = exchange(p, c, EG_WSMAN_OP_SEND, &req, "Send", &resp, &fk, err);
        eg_wsman_request_clear(&req);
        eg_wsman_response_free(resp);
        resp = NULL;
        if (rc < 0) {
            *ret_shell_lost = rc == EG_EREMOTE && fk == EG_WSMAN_FAULT_INVALID_SELECTORS;
            goto out_signal;
        }
    }
    /* Receive until the pipeline reaches a final state. */
    if ((rc = eg_psrp_defrag_new(NULL, &d)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "out of memory");
        goto out_signal;
    }
    for (long loops = 0; !rs.done; loops++) {
        if (loops >= MAX_RECEIVE_LOOPS) {
            rc = fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO, "the pipeline never finished");
            goto out_signal;
        }
        if ((rc = eg_wsman_build_receive(&t, sh->shell_id, command_id, &req)) < 0) {
            fail(err, EG_PSRP_ERR_LOCAL, rc, "cannot build Receive: %s", eg_strerror(rc));
            goto out_signal;
        }
        rc = exchange(p, c, EG_WSMAN_OP_RECEIVE, &req, "Receive", &resp, &fk, err);
        eg_wsman_request_clear(&req);
        if (rc == EG_EREMOTE && fk == EG_WSMAN_FAULT_TIMED_OUT) {
            eg_psrp_error_clear(err);
            continue;
        }
        if (rc < 0) {
            *ret_shell_lost = rc == EG_EREMOTE && fk == EG_WSMAN_FAULT_INVALID_SELECTORS;
            goto out_signal;
        }
        rc = dispatch(d, resp, command_id, run_handler, &rs, err);
        bool command_done = resp->state == EG_WSMAN_CMD_DONE;
        eg_wsman_response_free(resp);
        resp = NULL;
        if (rc < 0)
            goto out_signal;
        if (command_done && !rs.done) {
            rc = fail(err, EG_PSRP_ERR_PROTOCOL, EG_EPROTO,
                      "the command ended without a final PIPELINE_STATE");
            goto out;
        }
    }
    if (rs.state == EG_PS_PIPELINE_COMPLETED) {
        rc = 0;
    } else {
        rc = fail(err, EG_PSRP_ERR_PIPELINE, EG_EREMOTE, "the pipeline %s%s%s",
                  rs.state == EG_PS_PIPELINE_FAILED    ? "failed"
                  : rs.state == EG_PS_PIPELINE_STOPPED ? "was stopped"
                                                       : "ended abnormally",
                  rs.failure ? ": " : "", rs.failure ? rs.failure->message : "");
        if (err) {
            err->record = rs.failure;
            rs.failure = NULL;
        }
    }
    /* Release the finished command on the server. */
    signal_command(p, c, sh, command_id, EG_WSMAN_SIGNAL_TERMINATE);
    goto out;

out_signal:
    if (command_id && !*ret_shell_lost) {
        signal_command(p, c, sh, command_id, EG_WSMAN_SIGNAL_PS_STOP);
        signal_command(p, c, sh, command_id, EG_WSMAN_SIGNAL_TERMINATE);
    }
out:
    eg_ps_error_record_free(rs.failure);
    eg_psrp_defrag_free(d);
    eg_wsman_response_free(resp);
    eg_wsman_request_clear(&req);
    eg_psrp_fragments_free(f);
    eg_free(body);
    eg_free(b64);
    eg_free(command_id);
    return rc;
}

/* Take a pipeline slot, (re)opening the shell first when it is broken or due for recycling.
 * On success *sh is a copy of the current shell's identity. */
static int acquire(struct eg_psrp_pool *p, struct conn *c, struct shell_ref *sh,
                   struct eg_psrp_error *err)
{
    pthread_mutex_lock(&p->lock);
    for (;;) {
        bool due = p->broken || !p->shell_id ||
                   (p->max_commands_per_shell && p->commands_on_shell >= p->max_commands_per_shell);
        if (p->opening || p->running >= p->max_pipelines || (due && p->running > 0 && !p->broken)) {
            pthread_cond_wait(&p->cond, &p->lock);
            continue;
        }
        if (due) {
            p->opening = true;
            pthread_mutex_unlock(&p->lock);
            int rc = open_shell(p, c, err);
            pthread_mutex_lock(&p->lock);
            p->opening = false;
            pthread_cond_broadcast(&p->cond);
            if (rc < 0) {
                pthread_mutex_unlock(&p->lock);
                return rc;
            }
            continue;
        }
        sh->shell_id = eg_strdup(p->shell_id);
        if (!sh->shell_id) {
            pthread_mutex_unlock(&p->lock);
            return fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
        }
        sh->rpid = p->rpid;
        sh->generation = p->generation;
        sh->max_envelope = p->max_envelope;
        p->running++;
        p->commands_on_shell++;
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
}

static void release(struct eg_psrp_pool *p, struct shell_ref *sh, bool shell_lost)
{
    pthread_mutex_lock(&p->lock);
    p->running--;
    if (shell_lost && sh->generation == p->generation)
        p->broken = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    eg_freep(&sh->shell_id);
}

int eg_psrp_pool_run(struct eg_psrp_pool *p, const struct eg_ps_pipeline *pl,
                     const struct eg_psrp_run_ops *ops, void *ctx, struct eg_psrp_error *err)
{
    struct conn *c = NULL;
    int rc;

    if (err)
        eg_psrp_error_clear(err);
    if (!p || !pl || pl->n_cmds == 0)
        return fail(err, EG_PSRP_ERR_LOCAL, EG_EINVAL, "no pool or an empty pipeline");
    if ((rc = conn_get(p, &c, err)) < 0)
        return rc;
    for (int attempt = 0;; attempt++) {
        struct shell_ref sh = {0};
        bool started = false, lost = false;
        if ((rc = acquire(p, c, &sh, err)) < 0)
            break;
        rc = run_on_shell(p, c, &sh, pl, ops, ctx, &started, &lost, err);
        release(p, &sh, lost);
        /* The Command itself met a lost shell: nothing ran, so run it once more on a new one. */
        if (rc < 0 && lost && !started && attempt == 0) {
            eg_psrp_error_clear(err);
            continue;
        }
        if (rc < 0 && lost) {
            /* keep the fault, but say what it means */
            if (err)
                err->kind = EG_PSRP_ERR_POOL;
        }
        break;
    }
    conn_put(p, c, rc >= 0 || (err && err->kind != EG_PSRP_ERR_TRANSPORT));
    return rc;
}

/* ---- open / close --------------------------------------------------------------------------- */

static void pool_free(struct eg_psrp_pool *p)
{
    if (!p)
        return;
    while (p->idle) {
        struct conn *c = p->idle;
        p->idle = c->next;
        eg_http_client_free(c->http);
        eg_free(c);
    }
    if (p->password) {
        eg_memzero(p->password, strlen(p->password));
        eg_free(p->password);
    }
    eg_free(p->url);
    eg_free(p->resource_uri);
    eg_free(p->username);
    eg_free(p->ca_file);
    eg_free(p->shell_id);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    eg_free(p);
}

int eg_psrp_pool_open(const struct eg_psrp_pool_opts *o, struct eg_psrp_pool **ret,
                      struct eg_psrp_error *err)
{
    struct eg_psrp_pool *p = NULL;
    struct conn *c = NULL;
    struct eg_psrp_guid sid;
    int rc;

    if (err)
        memset(err, 0, sizeof *err);
    if (!o || !ret || !o->url || o->max_pipelines > EG_PSRP_MAX_PIPELINES)
        return fail(err, EG_PSRP_ERR_LOCAL, EG_EINVAL, "invalid pool options");
    if (eg_psrp_pool_check_timeouts(o) < 0)
        return fail(err, EG_PSRP_ERR_LOCAL, EG_EINVAL, "a pool timeout is negative or above %d ms",
                    EG_HTTP_CLIENT_MAX_TIMEOUT_MS);
    const char *conf = o->configuration ? o->configuration : DEFAULT_CONFIGURATION;
    for (const char *s = conf; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return fail(err, EG_PSRP_ERR_LOCAL, EG_EINVAL,
                        "configuration name may only hold letters, digits, '.', '_' and '-'");
    p = eg_calloc(1, sizeof *p);
    if (!p)
        return fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->url = eg_strdup(o->url);
    p->resource_uri = eg_asprintf(RESOURCE_PREFIX "%s", conf);
    p->username = o->username ? eg_strdup(o->username) : NULL;
    p->password = o->password ? eg_strdup(o->password) : NULL;
    p->ca_file = o->ca_file ? eg_strdup(o->ca_file) : NULL;
    if (!p->url || !p->resource_uri || (o->username && !p->username) ||
        (o->password && !p->password) || (o->ca_file && !p->ca_file)) {
        rc = fail(err, EG_PSRP_ERR_LOCAL, EG_ENOMEM, "out of memory");
        goto fail_out;
    }
    p->auth = o->auth;
    p->gss_cred = o->gss_cred;
    p->gss_scheme = o->gss_scheme;
    p->allow_cleartext_auth = o->allow_cleartext_auth;
    p->insecure = o->insecure;
    p->max_pipelines = o->max_pipelines ? o->max_pipelines : 1;
    p->max_commands_per_shell = o->max_commands_per_shell;
    p->operation_timeout_ms =
        o->operation_timeout_ms ? o->operation_timeout_ms : EG_WSMAN_DEFAULT_OPERATION_TIMEOUT_MS;
    p->idle_timeout_ms = o->idle_timeout_ms;
    p->connect_timeout_ms =
        o->connect_timeout_ms ? o->connect_timeout_ms : EG_HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    p->io_timeout_ms = o->io_timeout_ms ? o->io_timeout_ms : EG_HTTP_CLIENT_DEFAULT_IO_TIMEOUT_MS;
    p->response_timeout_ms =
        o->response_timeout_ms ? o->response_timeout_ms : EG_HTTP_CLIENT_DEFAULT_TIMEOUT_MS;
    p->open_timeout_ms = o->open_timeout_ms > 0 ? o->open_timeout_ms : DEFAULT_OPEN_TIMEOUT_MS;
    p->next_object_id = 1;
    p->max_envelope = EG_WSMAN_DEFAULT_MAX_ENVELOPE;
    if ((rc = eg_psrp_guid_generate(&sid)) < 0) {
        fail(err, EG_PSRP_ERR_LOCAL, rc, "no randomness for the session id");
        goto fail_out;
    }
    eg_psrp_guid_to_string(&sid, true, p->session_id);
    if ((rc = conn_get(p, &c, err)) < 0)
        goto fail_out;
    if ((rc = open_shell(p, c, err)) < 0)
        goto fail_out;
    conn_put(p, c, true);
    *ret = p;
    return 0;
fail_out:
    if (c) {
        eg_http_client_free(c->http);
        eg_free(c);
    }
    pool_free(p);
    return rc;
}

int eg_psrp_pool_check_timeouts(const struct eg_psrp_pool_opts *o)
{
    if (!o || o->open_timeout_ms < 0 || o->open_timeout_ms > EG_HTTP_CLIENT_MAX_TIMEOUT_MS ||
        o->operation_timeout_ms > EG_WSMAN_MAX_OPERATION_TIMEOUT_MS)
        return EG_EINVAL;
    return eg_http_client_check_timeouts(o->connect_timeout_ms, o->io_timeout_ms,
                                         o->response_timeout_ms);
}

void eg_psrp_pool_protocol_version(const struct eg_psrp_pool *p, int32_t ret[4])
{
    memcpy(ret, p->protocol_version, sizeof p->protocol_version);
}

unsigned eg_psrp_pool_shells_opened(const struct eg_psrp_pool *p)
{
    return p ? p->shells_opened : 0;
}

void eg_psrp_pool_close(struct eg_psrp_pool *p)
{
    struct conn *c = NULL;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    while (p->running > 0 || p->opening)
        pthread_cond_wait(&p->cond, &p->lock);
    char *shell = p->shell_id;
    p->shell_id = NULL;
    uint32_t env = p->max_envelope;
    pthread_mutex_unlock(&p->lock);
    if (shell && conn_get(p, &c, NULL) == 0) {
        delete_shell(p, c, shell, env);
        conn_put(p, c, true);
    }
    eg_free(shell);
    pool_free(p);
}
