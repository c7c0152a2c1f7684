/* psrp_server.c - the mock's WS-Man shell provider: runspace pools (shells), pipelines on their
 * own engine threads, output queues with backpressure, Receive long-polls, fragmentation to the
 * client's MaxEnvelopeSize, signals, and the transport faults injected through the control API.
 *
 * Flow of one pipeline: Command (Arguments = CREATE_PIPELINE fragments, maybe continued by
 * Send) -> an engine thread parses it and runs each statement through mx_invoke; every output
 * object, warning and non-terminating error is encoded at once into one PSRP message and pushed
 * on the pipeline's queue (the thread sleeps while EG_MOCK_QUEUE_BYTES are waiting), then the
 * final PIPELINE_STATE; Receives cut the queued messages into fragments that fit the client's
 * envelope and add CommandState Done after the last fragment of the final message.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/log.h"
#include "common/util.h"
#include "exchange/clixml.h"
#include "fe_internal.h"

/* Budget kept free in every ReceiveResponse besides the computed envelope overhead. */
#define RECEIVE_SLACK 512
/* A Receive that finds a little output of a running pipeline waits this long for more. */
#define BATCH_WAIT_MS 25
/* At most this many rsp:Stream elements in one ReceiveResponse. */
#define MAX_OUT_STREAMS 512
/* A fragment smaller than this is not cut when other fragments are already in the response. */
#define MIN_FRAGMENT_BLOB 1024

#define TEXT_MAX_SHELLS                                                                            \
    "The WS-Management service cannot process the request. This user is allowed a maximum "        \
    "number of %u concurrent shells, which has been exceeded. Close existing shells or raise "     \
    "the quota for this user. "
#define TEXT_COMMANDS_PER_SHELL                                                                    \
    "The WS-Management service cannot process the request. The maximum number of concurrent "      \
    "commands per shell has been exceeded. Retry the request later or raise the Maximum "          \
    "Commands per Shell quota. "

/* =========================================================================================== */
/* Small helpers                                                                                */
/* =========================================================================================== */

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* Wait on c until woken or until the monotonic deadline (ms). False when the deadline passed. */
static bool cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000, .tv_nsec = (deadline_ms % 1000) * 1000000};
    return pthread_cond_timedwait(c, m, &ts) != ETIMEDOUT;
}

static void msg_free(struct fe_msg *m)
{
    if (!m)
        return;
    eg_free(m->data);
    eg_free(m->fault_text);
    eg_free(m);
}

static void queue_push(struct fe_queue *q, struct fe_msg *m)
{
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->bytes += m->len - m->off;
    q->count++;
}

static struct fe_msg *queue_pop(struct fe_queue *q)
{
    struct fe_msg *m = q->head;
    if (!m)
        return NULL;
    q->head = m->next;
    if (!q->head)
        q->tail = NULL;
    q->bytes -= m->len - m->off;
    q->count--;
    m->next = NULL;
    return m;
}

static void queue_clear(struct fe_queue *q)
{
    struct fe_msg *m;
    while ((m = queue_pop(q)))
        msg_free(m);
}

/* A server -> client message of this type carrying data (CLIXML text, no BOM). */
static int make_msg(uint32_t type, const struct eg_psrp_guid *rpid, const struct eg_psrp_guid *pid,
                    const char *data, size_t len, struct fe_msg **ret)
{
    struct eg_psrp_message m = {.destination = EG_PSRP_DEST_CLIENT,
                                .type = type,
                                .data = (const uint8_t *)data,
                                .data_len = len};
    if (rpid)
        m.rpid = *rpid;
    if (pid)
        m.pid = *pid;
    struct fe_msg *msg = eg_calloc(1, sizeof *msg);
    if (!msg)
        return EG_ENOMEM;
    int rc = eg_psrp_message_encode(&m, EG_PSRP_ENCODE_BOM, &msg->data, &msg->len);
    if (rc < 0) {
        eg_free(msg);
        return rc;
    }
    *ret = msg;
    return 0;
}

/* Same, taking over body (eg_free'd). */
static int make_msg_take(uint32_t type, const struct eg_psrp_guid *rpid,
                         const struct eg_psrp_guid *pid, char *body, size_t len,
                         struct fe_msg **ret)
{
    int rc = make_msg(type, rpid, pid, body, len, ret);
    eg_free(body);
    return rc;
}

/* =========================================================================================== */
/* Shells and pipelines (fe->lock held)                                                         */
/* =========================================================================================== */

static void shell_unref_locked(struct fe_shell *s)
{
    if (!s || --s->refs > 0)
        return;
    eg_psrp_defrag_free(s->defrag);
    queue_clear(&s->pool_out);
    pthread_cond_destroy(&s->cond);
    eg_free(s);
}

static void pipe_unref_locked(struct fe_pipeline *p)
{
    if (!p || --p->refs > 0)
        return;
    queue_clear(&p->out);
    eg_psrp_defrag_free(p->defrag);
    eg_free(p->create_msg);
    pthread_cond_destroy(&p->space);
    shell_unref_locked(p->shell);
    eg_free(p);
}

/* Remove p from its shell (terminated, pruned, shell gone): the engine thread, if any, is told
 * to discard everything; waiting Receives answer InvalidSelectors. */
static void pipe_unlink_locked(struct fe_pipeline *p)
{
    struct fe_shell *s = p->shell;
    p->abandoned = true;
    pthread_cond_broadcast(&p->space);
    pthread_cond_broadcast(&s->cond);
    if (!p->linked)
        return;
    for (struct fe_pipeline **pp = &s->pipes; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->next = NULL;
    p->linked = false;
    s->n_pipes--;
    pipe_unref_locked(p);
}

static void shell_gone_locked(struct mx_fe *fe, struct fe_shell *s)
{
    if (s->gone)
        return;
    s->gone = true;
    for (struct fe_shell **pp = &fe->shells; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->next = NULL;
    fe->n_shells--;
    while (s->pipes)
        pipe_unlink_locked(s->pipes);
    queue_clear(&s->pool_out);
    pthread_cond_broadcast(&s->cond);
    shell_unref_locked(s); /* the table's reference */
}

static struct fe_shell *shell_find_locked(struct mx_fe *fe, const char *id, int listener)
{
    if (!id)
        return NULL;
    for (struct fe_shell *s = fe->shells; s; s = s->next)
        if (strcasecmp(s->id, id) == 0 && (fe->shared_shells || s->listener == listener))
            return s;
    return NULL;
}

static struct fe_pipeline *pipe_find_locked(struct fe_shell *s, const char *id)
{
    if (!id)
        return NULL;
    for (struct fe_pipeline *p = s->pipes; p; p = p->next)
        if (strcasecmp(p->id, id) == 0)
            return p;
    return NULL;
}

/* Forget shells idle for longer than their IdleTimeOut (at most once a second). */
static void sweep_locked(struct mx_fe *fe)
{
    int64_t now = eg_mono_ms();
    if (now - fe->last_sweep_ms < 1000)
        return;
    fe->last_sweep_ms = now;
    struct fe_shell *s = fe->shells;
    while (s) {
        struct fe_shell *next = s->next;
        if (now - s->last_ms > s->idle_timeout_ms) {
            eg_log_info("shell %s of %s idle for %lld ms: removed", s->id, s->user,
                        (long long)(now - s->last_ms));
            shell_gone_locked(fe, s);
        }
        s = next;
    }
}

/* Keep at most EG_MOCK_KEEP_DONE finished (Done delivered) pipelines in a shell. */
static void prune_done_locked(struct fe_shell *s)
{
    size_t done = 0;
    for (struct fe_pipeline *p = s->pipes; p; p = p->next)
        done += p->state == PIPE_DONE;
    while (done > EG_MOCK_KEEP_DONE) {
        struct fe_pipeline *p = s->pipes;
        while (p && p->state != PIPE_DONE)
            p = p->next;
        if (!p)
            break;
        pipe_unlink_locked(p);
        done--;
    }
}

/* =========================================================================================== */
/* Replies                                                                                      */
/* =========================================================================================== */

struct req_ctx {
    struct mx_fe *fe;
    struct fe_listener *l;
    const struct mx_ws_request *rq;
    const char *user;
    const char *client_ip;
    const char *relates_to; /* when the request could not be parsed: its MessageID or NULL */
    unsigned status;
    char *body;
    size_t len;
    bool drop;
};

static struct mx_ws_reply reply_of(const struct req_ctx *c)
{
    return (struct mx_ws_reply){.relates_to = c->rq ? c->rq->message_id : c->relates_to,
                                .machine = c->l->host};
}

/* Keep a built envelope (or note the failure: 500 without body). */
static void set_body(struct req_ctx *c, int rc, unsigned status, char *xml, size_t len)
{
    if (rc < 0) {
        eg_log_warn("cannot build a WS-Man response: %s", eg_strerror(rc));
        c->status = 500;
        c->body = NULL;
        c->len = 0;
        return;
    }
    c->status = status;
    c->body = xml;
    c->len = len;
}

static void reply_fault(struct req_ctx *c, const struct mx_ws_fault *f)
{
    struct mx_ws_reply r = reply_of(c);
    char *xml = NULL;
    size_t len = 0;
    int rc = mx_ws_build_fault(&r, f, &xml, &len);
    eg_log_debug("fault %lu to %s: %s", (unsigned long)f->code,
                 c->rq ? mx_ws_action_name(c->rq->action) : "?", f->reason);
    set_body(c, rc, 500, xml, len);
}

static void reply_invalid_selectors(struct req_ctx *c)
{
    struct mx_ws_fault f;
    mx_ws_fault_invalid_selectors(&f);
    reply_fault(c, &f);
}

static void reply_timed_out(struct req_ctx *c)
{
    struct mx_ws_fault f;
    mx_ws_fault_timed_out(&f);
    reply_fault(c, &f);
}

/* s:Receiver with a subcode and code (quota and internal errors). */
static void reply_receiver(struct req_ctx *c, const char *subcode, uint32_t code, const char *text)
{
    struct mx_ws_fault f = {
        .sender = false, .subcode = subcode, .reason = text, .code = code, .message = text};
    reply_fault(c, &f);
}

static void reply_sender(struct req_ctx *c, const char *subcode, uint32_t code, const char *text)
{
    struct mx_ws_fault f = {
        .sender = true, .subcode = subcode, .reason = text, .code = code, .message = text};
    reply_fault(c, &f);
}

static void reply_body_error(struct req_ctx *c, const char *detail)
{
    struct mx_ws_parse_diag d = {.kind = MX_WS_PERR_BODY};
    snprintf(d.detail, sizeof d.detail, "%s", detail);
    char buf[512];
    struct mx_ws_fault f;
    mx_ws_fault_for_parse(&f, &d, buf, sizeof buf);
    reply_fault(c, &f);
}

static void reply_empty(struct req_ctx *c, enum mx_ws_action a)
{
    struct mx_ws_reply r = reply_of(c);
    char *xml = NULL;
    size_t len = 0;
    int rc = mx_ws_build_empty_response(&r, a, &xml, &len);
    set_body(c, rc, 200, xml, len);
}

static bool is_exchange_uri(const struct mx_ws_request *rq)
{
    return rq->resource_uri && strcasecmp(rq->resource_uri, EG_WSMAN_URI_EXCHANGE) == 0;
}

static void reply_resource_uri(struct req_ctx *c)
{
    char buf[1024];
    struct mx_ws_fault f;
    mx_ws_fault_resource_uri(&f, c->rq->resource_uri, buf, sizeof buf);
    reply_fault(c, &f);
}

static uint32_t envelope_of(const struct mx_ws_request *rq)
{
    return rq->max_envelope_size ? rq->max_envelope_size : EG_WSMAN_DEFAULT_MAX_ENVELOPE;
}

static int64_t hold_of(const struct mx_ws_request *rq)
{
    int64_t t = rq->operation_timeout_ms >= 0 ? rq->operation_timeout_ms
                                              : EG_WSMAN_DEFAULT_OPERATION_TIMEOUT_MS;
    return t > EG_MOCK_MAX_HOLD_MS ? EG_MOCK_MAX_HOLD_MS : t;
}

/* The shell named by the ShellId selector (a reference the caller drops), touched; NULL when
 * there is none (InvalidSelectors is then the answer). */
static struct fe_shell *shell_get_locked(struct req_ctx *c)
{
    struct fe_shell *s = shell_find_locked(c->fe, mx_ws_selector(c->rq, "ShellId"), c->l->index);
    if (!s)
        return NULL;
    s->refs++;
    s->last_ms = eg_mono_ms();
    return s;
}

/* =========================================================================================== */
/* The engine thread of a pipeline                                                              */
/* =========================================================================================== */

/* Push m on p's queue, sleeping while the queue is full (unless force: the final message).
 * Returns 0, or EG_ESHUTDOWN when the pipeline was stopped or abandoned (m is freed). */
static int pipe_emit(struct fe_pipeline *p, struct fe_msg *m, bool force)
{
    struct mx_fe *fe = p->shell->fe;
    pthread_mutex_lock(&fe->lock);
    while (!force && !p->abandoned && !p->stop && p->out.bytes >= EG_MOCK_QUEUE_BYTES)
        pthread_cond_wait(&p->space, &fe->lock);
    if (p->abandoned || (!force && p->stop)) {
        pthread_mutex_unlock(&fe->lock);
        msg_free(m);
        return EG_ESHUTDOWN;
    }
    queue_push(&p->out, m);
    if (m->final)
        p->state = PIPE_FINISHED;
    pthread_cond_broadcast(&p->shell->cond);
    pthread_mutex_unlock(&fe->lock);
    return 0;
}

static bool pipe_stopping(struct fe_pipeline *p)
{
    struct mx_fe *fe = p->shell->fe;
    pthread_mutex_lock(&fe->lock);
    bool r = p->stop || p->abandoned;
    pthread_mutex_unlock(&fe->lock);
    return r;
}

static int cb_object(void *ctx, struct eg_ps_value *obj)
{
    struct fe_pipeline *p = ctx;
    char *body = NULL;
    size_t len = 0;
    struct fe_msg *m = NULL;
    if (pipe_stopping(p)) {
        eg_ps_value_free(obj);
        return EG_ESHUTDOWN;
    }
    int rc = eg_psrp_body_encode(obj, &body, &len);
    if (rc < 0)
        return rc;
    if ((rc = make_msg_take(EG_PSRP_PIPELINE_OUTPUT, &p->shell->rpid, &p->pid, body, len, &m)) < 0)
        return rc;
    return pipe_emit(p, m, false);
}

static int cb_warning(void *ctx, const char *text)
{
    struct fe_pipeline *p = ctx;
    char *body = NULL;
    size_t len = 0;
    struct fe_msg *m = NULL;
    int rc = eg_psrp_build_informational(EG_PS_INFO_WARNING, text ? text : "", &body, &len);
    if (rc < 0)
        return rc;
    if ((rc = make_msg_take(EG_PSRP_WARNING_RECORD, &p->shell->rpid, &p->pid, body, len, &m)) < 0)
        return rc;
    return pipe_emit(p, m, false);
}

/* An error record for the wire from an engine error. */
static int record_of(const struct mx_error *e, bool write_stream, struct eg_ps_error_record **ret)
{
    struct eg_ps_error_record *er = NULL;
    const char *type =
        e->exception_type[0] ? e->exception_type : "System.Management.Automation.RuntimeException";
    const char *fqeid = e->fqeid[0] ? e->fqeid : "RuntimeException";
    int rc = eg_ps_error_record_new(type, e->message, fqeid, e->category, &er);
    if (rc < 0)
        return rc;
    er->write_error_stream = write_stream;
    er->activity = eg_strdup(e->activity);
    if (e->category_reason[0])
        er->reason = eg_strdup(e->category_reason);
    if (e->target[0])
        er->target_name = eg_strdup(e->target);
    if (e->target_type[0])
        er->target_type = eg_strdup(e->target_type);
    if (e->category_message[0])
        er->category_message = eg_strdup(e->category_message);
    if (!er->activity || (e->category_reason[0] && !er->reason) ||
        (e->target[0] && !er->target_name) || (e->target_type[0] && !er->target_type) ||
        (e->category_message[0] && !er->category_message)) {
        eg_ps_error_record_free(er);
        return EG_ENOMEM;
    }
    *ret = er;
    return 0;
}

static int cb_error(void *ctx, const struct mx_error *e)
{
    struct fe_pipeline *p = ctx;
    struct eg_ps_error_record *er = NULL;
    char *body = NULL;
    size_t len = 0;
    struct fe_msg *m = NULL;
    int rc = record_of(e, true, &er);
    if (rc == 0)
        rc = eg_psrp_build_error_record(er, &body, &len);
    eg_ps_error_record_free(er);
    if (rc < 0)
        return rc;
    if ((rc = make_msg_take(EG_PSRP_ERROR_RECORD, &p->shell->rpid, &p->pid, body, len, &m)) < 0)
        return rc;
    return pipe_emit(p, m, false);
}

static const struct mx_output_ops pipe_ops = {
    .object = cb_object, .warning = cb_warning, .error = cb_error};

/* Queue the final PIPELINE_STATE (or, for a quota error delivered as a transport failure, a
 * fault item). */
static void pipe_finish(struct fe_pipeline *p, int32_t state, const struct mx_error *e,
                        bool as_fault)
{
    struct fe_msg *m = NULL;
    int rc;
    if (as_fault) {
        if (!(m = eg_calloc(1, sizeof *m)) || !(m->fault_text = eg_strdup(e->message))) {
            msg_free(m);
            m = NULL;
            rc = EG_ENOMEM;
        } else {
            m->fault_code = MX_WS_CODE_MAX_OPERATIONS;
            m->final = true;
            rc = 0;
        }
    } else {
        struct eg_ps_error_record *er = NULL;
        char *body = NULL;
        size_t len = 0;
        rc = e ? record_of(e, false, &er) : 0;
        if (rc == 0)
            rc = eg_psrp_build_pipeline_state(state, er, &body, &len);
        eg_ps_error_record_free(er);
        if (rc == 0)
            rc = make_msg_take(EG_PSRP_PIPELINE_STATE, &p->shell->rpid, &p->pid, body, len, &m);
        if (rc == 0)
            m->final = true;
    }
    if (rc < 0) {
        /* Out of memory for the last message: at least let Receive report Done. */
        struct mx_fe *fe = p->shell->fe;
        eg_log_err("pipeline %s: cannot build its final state: %s", p->id, eg_strerror(rc));
        pthread_mutex_lock(&fe->lock);
        p->state = PIPE_DONE;
        pthread_cond_broadcast(&p->shell->cond);
        pthread_mutex_unlock(&fe->lock);
        return;
    }
    (void)pipe_emit(p, m, true);
}

static void error_set(struct mx_error *e, const char *type, const char *reason, const char *fqeid,
                      int category, const char *activity, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void error_set(struct mx_error *e, const char *type, const char *reason, const char *fqeid,
                      int category, const char *activity, const char *fmt, ...)
{
    memset(e, 0, sizeof *e);
    snprintf(e->exception_type, sizeof e->exception_type, "%s", type);
    snprintf(e->category_reason, sizeof e->category_reason, "%s", reason);
    snprintf(e->fqeid, sizeof e->fqeid, "%s", fqeid);
    snprintf(e->activity, sizeof e->activity, "%s", activity ? activity : "");
    e->category = category;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static void stopped_error(struct mx_error *e)
{
    error_set(e, "System.Management.Automation.PipelineStoppedException",
              "PipelineStoppedException", "PipelineStopped", EG_PS_ERR_OPERATION_STOPPED, NULL,
              "The pipeline has been stopped.");
}

/* The refusal of script text, as recorded (ParseException, ParserError, target = the text). */
static void script_error(struct mx_error *e, const char *script)
{
    mx_error_scripts_not_allowed(e);
    snprintf(e->target, sizeof e->target, "%s", script ? script : "");
    snprintf(e->target_type, sizeof e->target_type, "String");
    e->activity[0] = '\0';
    e->category_message[0] = '\0'; /* derived from the target, shortened as Windows does */
}

static void run_pipeline(struct fe_pipeline *p)
{
    struct mx_fe *fe = p->shell->fe;
    struct eg_psrp_message msg;
    struct eg_ps_value *v = NULL;
    struct eg_ps_pipeline *pl = NULL;
    struct mx_param *params = NULL;
    struct mx_error term;
    struct eg_clixml_error cerr = {{0}};
    int32_t final_state = EG_PS_PIPELINE_COMPLETED;
    bool failed = false, as_fault = false;
    int rc;

    memset(&term, 0, sizeof term);
    if ((rc = eg_psrp_message_decode(p->create_msg, p->create_len, &msg)) < 0 ||
        (rc = eg_clixml_decode(msg.data, msg.data_len, &v, &cerr)) < 0 ||
        (rc = eg_psrp_parse_create_pipeline(v, &pl)) < 0) {
        error_set(&term, "System.Management.Automation.Remoting.PSRemotingDataStructureException",
                  "PSRemotingDataStructureException", "CreatePipelineFailed",
                  EG_PS_ERR_INVALID_DATA, NULL, "The CREATE_PIPELINE message is not valid: %s%s%s",
                  eg_strerror(rc), cerr.msg[0] ? ": " : "", cerr.msg);
        failed = true;
        goto finish;
    }
    if (!pl->no_input) {
        /* PIPELINE_INPUT objects are accepted and dropped (no Exchange cmdlet used here takes
         * pipeline input); wait for the end of input. */
        pthread_mutex_lock(&fe->lock);
        while (!p->input_ended && !p->abandoned && !p->stop)
            pthread_cond_wait(&p->space, &fe->lock);
        pthread_mutex_unlock(&fe->lock);
    }

    size_t i = 0;
    while (i < pl->n_cmds) {
        /* one statement: commands i .. j (inclusive) */
        size_t j = i;
        while (j + 1 < pl->n_cmds && !pl->cmds[j]->end_of_statement)
            j++;
        if (pipe_stopping(p)) {
            final_state = EG_PS_PIPELINE_STOPPED;
            stopped_error(&term);
            break;
        }
        const struct eg_ps_command *cmd = pl->cmds[i];
        const struct eg_ps_command *script = NULL;
        for (size_t k = i; k <= j && !script; k++)
            if (pl->cmds[k]->is_script)
                script = pl->cmds[k];
        if (script) {
            script_error(&term, script->name);
            failed = true;
            break;
        }
        if (j > i) {
            error_set(&term, "System.NotSupportedException", "NotSupportedException",
                      "PipelineNotSupported", EG_PS_ERR_NOT_IMPLEMENTED, cmd->name,
                      "The mock Exchange server runs one command per statement; '%s' is piped "
                      "into '%s'.",
                      cmd->name, pl->cmds[i + 1]->name);
            failed = true;
            break;
        }
        eg_freep(&params);
        if (cmd->n_params && !(params = eg_calloc(cmd->n_params, sizeof *params))) {
            error_set(&term, "System.OutOfMemoryException", "OutOfMemoryException", "OutOfMemory",
                      EG_PS_ERR_RESOURCE_UNAVAILABLE, cmd->name, "Out of memory.");
            failed = true;
            break;
        }
        for (size_t k = 0; k < cmd->n_params; k++) {
            params[k].name =
                cmd->params[k].kind == EG_PS_PARAM_POSITIONAL ? NULL : cmd->params[k].name;
            params[k].value = cmd->params[k].value;
        }
        struct fe_org *org = fe_org_get(fe);
        memset(&term, 0, sizeof term);
        rc = mx_invoke(org->org, cmd->name, params, cmd->n_params, &pipe_ops, p, &term);
        fe_org_put(fe, org);
        if (rc == EG_EREMOTE) {
            pthread_mutex_lock(&fe->lock);
            as_fault = term.throttled && !fe->faults.quota_as_error;
            pthread_mutex_unlock(&fe->lock);
            failed = true;
            break;
        }
        if (rc == EG_ESHUTDOWN || (rc < 0 && pipe_stopping(p))) {
            final_state = EG_PS_PIPELINE_STOPPED;
            stopped_error(&term);
            break;
        }
        if (rc < 0) {
            error_set(&term, "System.InvalidOperationException", "InvalidOperationException",
                      "MockEngineFailure", EG_PS_ERR_NOT_SPECIFIED, cmd->name,
                      "The mock Exchange engine failed: %s", eg_strerror(rc));
            failed = true;
            break;
        }
        i = j + 1;
    }

finish:
    if (failed)
        final_state = EG_PS_PIPELINE_FAILED;
    eg_log_info("pipeline %s (%s%s): %s", p->id, pl && pl->n_cmds ? pl->cmds[0]->name : "?",
                pl && pl->n_cmds > 1 ? ", ..." : "",
                as_fault                                  ? "quota fault"
                : final_state == EG_PS_PIPELINE_COMPLETED ? "Completed"
                : final_state == EG_PS_PIPELINE_STOPPED   ? "Stopped"
                                                          : "Failed");
    pthread_mutex_lock(&fe->lock);
    bool abandoned = p->abandoned;
    pthread_mutex_unlock(&fe->lock);
    if (!abandoned)
        pipe_finish(p, final_state, final_state == EG_PS_PIPELINE_COMPLETED ? NULL : &term,
                    as_fault);
    eg_free(params);
    eg_ps_pipeline_free(pl);
    eg_ps_value_free(v);
}

static void *pipe_thread(void *arg)
{
    struct fe_pipeline *p = arg;
    struct mx_fe *fe = p->shell->fe;
    run_pipeline(p);
    pthread_mutex_lock(&fe->lock);
    p->thread = false;
    eg_freep(&p->create_msg);
    fe->running--;
    pthread_cond_broadcast(&fe->idle);
    pipe_unref_locked(p);
    pthread_mutex_unlock(&fe->lock);
    return NULL;
}

/* Start the engine thread of p (CREATE_PIPELINE complete). 0 or EG_ELIMIT / EG_ENOMEM. */
static int pipe_start_locked(struct mx_fe *fe, struct fe_pipeline *p)
{
    if (fe->running >= EG_MOCK_MAX_RUNNING)
        return EG_ELIMIT;
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    p->refs++;
    p->thread = true;
    p->state = PIPE_RUNNING;
    fe->running++;
    int e = pthread_create(&t, &a, pipe_thread, p);
    pthread_attr_destroy(&a);
    if (e) {
        p->refs--;
        p->thread = false;
        p->state = PIPE_ARGS;
        fe->running--;
        return EG_ENOMEM;
    }
    return 0;
}

/* =========================================================================================== */
/* Client -> server messages                                                                    */
/* =========================================================================================== */

/* Answer a pool-level message (SET_MAX/MIN_RUNSPACES, GET_AVAILABLE_RUNSPACES); others are
 * ignored (we announce a null host and never ask for a key). */
static void pool_message_locked(struct fe_shell *s, const uint8_t *data, size_t len)
{
    struct eg_psrp_message m;
    struct eg_ps_value *v = NULL;
    if (eg_psrp_message_decode(data, len, &m) < 0)
        return;
    if (m.type != EG_PSRP_SET_MAX_RUNSPACES && m.type != EG_PSRP_SET_MIN_RUNSPACES &&
        m.type != EG_PSRP_GET_AVAILABLE_RUNSPACES) {
        eg_log_debug("shell %s: %s ignored", s->id, eg_psrp_msg_type_name(m.type));
        return;
    }
    if (eg_clixml_decode(m.data, m.data_len, &v, NULL) < 0)
        return;
    struct eg_ps_availability a = {.is_count = m.type == EG_PSRP_GET_AVAILABLE_RUNSPACES,
                                   .set_ok = true};
    int64_t ci = 0;
    if (eg_ps_get_int64(eg_ps_obj_prop(v, "ci"), &ci) == 0)
        a.call_id = ci;
    int32_t n;
    if (m.type == EG_PSRP_SET_MAX_RUNSPACES &&
        eg_ps_get_i32(eg_ps_obj_prop(v, "MaxRunspaces"), &n) == 0 && n >= 1)
        s->max_runspaces = n;
    a.available = s->max_runspaces;
    eg_ps_value_free(v);
    char *body = NULL;
    size_t blen = 0;
    struct fe_msg *out = NULL;
    if (eg_psrp_build_runspace_availability(&a, &body, &blen) == 0 &&
        make_msg_take(EG_PSRP_RUNSPACE_AVAILABILITY, &s->rpid, NULL, body, blen, &out) == 0) {
        queue_push(&s->pool_out, out);
        pthread_cond_broadcast(&s->cond);
    }
}

/* Take every completed message of p's defragmenter. Returns 0 or EG_ELIMIT/EG_ENOMEM when the
 * engine thread cannot be started. */
static int pipe_messages_locked(struct mx_fe *fe, struct fe_pipeline *p)
{
    uint8_t *data;
    size_t len;
    while (eg_psrp_defrag_pop(p->defrag, &data, &len, NULL) == 0) {
        struct eg_psrp_message m;
        if (eg_psrp_message_decode(data, len, &m) < 0) {
            eg_free(data);
            continue;
        }
        if (m.type == EG_PSRP_CREATE_PIPELINE && p->state == PIPE_ARGS && !p->create_msg) {
            p->pid = m.pid;
            p->create_msg = data;
            p->create_len = len;
            int rc = pipe_start_locked(fe, p);
            if (rc < 0)
                return rc;
            continue;
        }
        if (m.type == EG_PSRP_END_OF_PIPELINE_INPUT) {
            p->input_ended = true;
            pthread_cond_broadcast(&p->space);
        } else if (m.type != EG_PSRP_PIPELINE_INPUT) {
            eg_log_debug("pipeline %s: %s ignored", p->id, eg_psrp_msg_type_name(m.type));
        }
        eg_free(data);
    }
    return 0;
}

static void pool_messages_locked(struct fe_shell *s)
{
    uint8_t *data;
    size_t len;
    while (eg_psrp_defrag_pop(s->defrag, &data, &len, NULL) == 0) {
        pool_message_locked(s, data, len);
        eg_free(data);
    }
}

/* =========================================================================================== */
/* Operations                                                                                   */
/* =========================================================================================== */

/* Decode creationXml: SESSION_CAPABILITY (its RPID) and INIT_RUNSPACEPOOL (MaxRunspaces). */
static int parse_creation(const struct mx_ws_request *rq, struct eg_psrp_defrag **ret_defrag,
                          struct eg_psrp_guid *ret_rpid, int32_t *ret_max, const char **why)
{
    struct eg_psrp_defrag *d = NULL;
    bool have_cap = false, have_init = false;
    uint8_t *data = NULL;
    size_t len;
    int rc;

    *why = "creationXml is missing";
    if (!rq->creation_xml)
        return EG_EPROTO;
    if ((rc = eg_psrp_defrag_new(NULL, &d)) < 0)
        return rc;
    *why = "creationXml does not hold whole PSRP fragments";
    if ((rc = eg_psrp_defrag_feed_buffer(d, rq->creation_xml, rq->creation_xml_len)) < 0)
        goto out;
    while (eg_psrp_defrag_pop(d, &data, &len, NULL) == 0) {
        struct eg_psrp_message m;
        struct eg_ps_value *v = NULL;
        rc = eg_psrp_message_decode(data, len, &m);
        if (rc == 0 &&
            (m.type == EG_PSRP_SESSION_CAPABILITY || m.type == EG_PSRP_INIT_RUNSPACEPOOL))
            rc = eg_clixml_decode(m.data, m.data_len, &v, NULL);
        if (rc == 0 && m.type == EG_PSRP_SESSION_CAPABILITY) {
            struct eg_ps_capability cap;
            *why = "SESSION_CAPABILITY is not valid";
            if ((rc = eg_psrp_parse_session_capability(v, &cap)) == 0) {
                have_cap = true;
                *ret_rpid = m.rpid;
            }
        } else if (rc == 0 && m.type == EG_PSRP_INIT_RUNSPACEPOOL) {
            struct eg_ps_pool_init init;
            *why = "INIT_RUNSPACEPOOL is not valid";
            if ((rc = eg_psrp_parse_init_runspacepool(v, &init)) == 0) {
                have_init = true;
                *ret_max = init.max_runspaces;
            }
        }
        eg_ps_value_free(v);
        eg_freep(&data);
        if (rc < 0)
            goto out;
    }
    if (!have_cap || !have_init) {
        *why = "creationXml must hold SESSION_CAPABILITY and INIT_RUNSPACEPOOL";
        rc = EG_EPROTO;
        goto out;
    }
    *ret_defrag = d;
    d = NULL;
out:
    eg_psrp_defrag_free(d);
    return rc;
}

static bool shell_id_in_use_locked(struct mx_fe *fe, const char *id)
{
    for (struct fe_shell *s = fe->shells; s; s = s->next)
        if (strcasecmp(s->id, id) == 0)
            return true;
    return false;
}

static void shell_info(const struct fe_shell *s, const char *address, bool get,
                       struct mx_ws_shell_info *ret)
{
    int64_t now = eg_mono_ms();
    *ret = (struct mx_ws_shell_info){.shell_id = s->id,
                                     .resource_uri = EG_WSMAN_URI_EXCHANGE,
                                     .address = address,
                                     .owner = s->user,
                                     .client_ip = s->client_ip,
                                     .process_id = s->fe->pid,
                                     .idle_timeout_ms = s->idle_timeout_ms,
                                     .locale = s->locale,
                                     .data_locale = s->data_locale,
                                     .run_time_ms = now - s->created_ms,
                                     .inactivity_ms = now - s->last_ms,
                                     .memory_used = get ? "58MB" : NULL};
}

static void do_create(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    const struct mx_ws_request *rq = c->rq;
    struct eg_psrp_defrag *d = NULL;
    struct eg_psrp_guid rpid = {{0}};
    int32_t max_runspaces = 1;
    const char *why = NULL;
    struct fe_msg *m_cap = NULL, *m_apd = NULL, *m_state = NULL;
    struct fe_shell *s = NULL;
    char *body = NULL;
    size_t blen = 0;
    int rc;

    if (!is_exchange_uri(rq)) {
        reply_resource_uri(c);
        return;
    }
    if (!rq->has_shell) {
        reply_body_error(c, "a Create needs rsp:Shell");
        return;
    }
    if ((rc = parse_creation(rq, &d, &rpid, &max_runspaces, &why)) < 0) {
        if (rc == EG_ENOMEM)
            set_body(c, rc, 500, NULL, 0);
        else
            reply_body_error(c, why);
        return;
    }
    struct eg_psrp_guid nil = {{0}};
    if ((rc = eg_psrp_build_session_capability(NULL, &body, &blen)) < 0 ||
        (rc = make_msg_take(EG_PSRP_SESSION_CAPABILITY, &nil, NULL, body, blen, &m_cap)) < 0 ||
        (body = NULL, rc = eg_psrp_build_application_private_data(&body, &blen)) < 0 ||
        (rc = make_msg_take(EG_PSRP_APPLICATION_PRIVATE_DATA, &rpid, NULL, body, blen, &m_apd)) <
            0 ||
        (body = NULL,
         rc = eg_psrp_build_runspacepool_state(EG_PS_POOL_OPENED, NULL, &body, &blen)) < 0 ||
        (rc = make_msg_take(EG_PSRP_RUNSPACEPOOL_STATE, &rpid, NULL, body, blen, &m_state)) < 0) {
        set_body(c, rc, 500, NULL, 0);
        goto out;
    }
    if (!(s = eg_calloc(1, sizeof *s))) {
        set_body(c, EG_ENOMEM, 500, NULL, 0);
        goto out;
    }
    s->fe = fe;
    s->refs = 1;
    s->listener = c->l->index;
    s->rpid = rpid;
    s->defrag = d;
    d = NULL;
    s->next_object_id = 1;
    s->max_runspaces = max_runspaces;
    snprintf(s->user, sizeof s->user, "%s", c->user);
    snprintf(s->client_ip, sizeof s->client_ip, "%s", c->client_ip);
    snprintf(s->locale, sizeof s->locale, "%s", rq->locale ? rq->locale : "en-US");
    snprintf(s->data_locale, sizeof s->data_locale, "%s",
             rq->data_locale ? rq->data_locale : s->locale);
    s->created_ms = s->last_ms = eg_mono_ms();
    s->idle_timeout_ms = rq->idle_timeout_ms > 0 ? rq->idle_timeout_ms : EG_MOCK_DEFAULT_IDLE_MS;
    cond_init_mono(&s->cond);

    pthread_mutex_lock(&fe->lock);
    unsigned ceiling = fe->faults.max_shells_per_user;
    size_t mine = 0;
    for (struct fe_shell *o = fe->shells; o; o = o->next)
        mine += strcasecmp(o->user, s->user) == 0;
    if (ceiling && mine >= ceiling) {
        pthread_mutex_unlock(&fe->lock);
        char text[512];
        snprintf(text, sizeof text, TEXT_MAX_SHELLS, ceiling);
        reply_receiver(c, "w:QuotaLimit", MX_WS_CODE_MAX_SHELLS, text);
        eg_log_info("Create by %s refused: %zu shells open (ceiling %u)", s->user, mine, ceiling);
        goto out;
    }
    if (fe->n_shells >= EG_MOCK_MAX_SHELLS) {
        pthread_mutex_unlock(&fe->lock);
        reply_receiver(c, "w:InternalError", MX_WS_CODE_MAX_SHELLS,
                       "The WS-Management service cannot process the request. The maximum "
                       "number of shells of the server has been reached. ");
        goto out;
    }
    struct eg_psrp_guid g;
    if (rq->shell_id_requested && eg_psrp_guid_from_string(rq->shell_id_requested, &g) == 0 &&
        strlen(rq->shell_id_requested) < sizeof s->id &&
        !shell_id_in_use_locked(fe, rq->shell_id_requested)) {
        snprintf(s->id, sizeof s->id, "%s", rq->shell_id_requested);
    } else {
        char id[EG_WSMAN_UUID_SIZE];
        do {
            if (eg_wsman_uuid(id) < 0) {
                pthread_mutex_unlock(&fe->lock);
                set_body(c, EG_EIO, 500, NULL, 0);
                goto out;
            }
        } while (shell_id_in_use_locked(fe, id));
        snprintf(s->id, sizeof s->id, "%s", id);
    }
    queue_push(&s->pool_out, m_cap);
    queue_push(&s->pool_out, m_apd);
    queue_push(&s->pool_out, m_state);
    m_cap = m_apd = m_state = NULL;
    s->next = fe->shells;
    fe->shells = s;
    fe->n_shells++;
    struct mx_ws_shell_info info;
    shell_info(s, rq->to, false, &info);
    struct mx_ws_reply r = reply_of(c);
    char *xml = NULL;
    size_t len = 0;
    rc = mx_ws_build_create_response(&r, &info, &xml, &len);
    if (rc < 0)
        shell_gone_locked(fe, s);
    else
        eg_log_info("shell %s created by %s from %s on listener %d", s->id, s->user, s->client_ip,
                    s->listener);
    s = NULL;
    pthread_mutex_unlock(&fe->lock);
    set_body(c, rc, 200, xml, len);
out:
    if (s) {
        eg_psrp_defrag_free(s->defrag);
        pthread_cond_destroy(&s->cond);
        eg_free(s);
    }
    eg_psrp_defrag_free(d);
    msg_free(m_cap);
    msg_free(m_apd);
    msg_free(m_state);
}

static void do_delete(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    if (!is_exchange_uri(c->rq)) {
        reply_resource_uri(c);
        return;
    }
    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = shell_find_locked(fe, mx_ws_selector(c->rq, "ShellId"), c->l->index);
    if (s) {
        eg_log_info("shell %s deleted", s->id);
        shell_gone_locked(fe, s);
    }
    pthread_mutex_unlock(&fe->lock);
    if (!s)
        reply_invalid_selectors(c);
    else
        reply_empty(c, MX_WS_DELETE);
}

static void do_get(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    const struct mx_ws_request *rq = c->rq;
    struct mx_ws_reply r = reply_of(c);
    char *xml = NULL;
    size_t len = 0;
    int rc;
    if (rq->resource_uri && strcasecmp(rq->resource_uri, EG_WSMAN_URI_CONFIG) == 0) {
        rc = mx_ws_build_get_config_response(&r, 500, 60000, &xml, &len);
        set_body(c, rc, 200, xml, len);
        return;
    }
    if (!rq->resource_uri ||
        (strcasecmp(rq->resource_uri, EG_WSMAN_URI_SHELL) != 0 && !is_exchange_uri(rq))) {
        reply_resource_uri(c);
        return;
    }
    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = shell_get_locked(c);
    if (!s) {
        pthread_mutex_unlock(&fe->lock);
        reply_invalid_selectors(c);
        return;
    }
    struct mx_ws_shell_info info;
    shell_info(s, rq->to, true, &info);
    rc = mx_ws_build_get_shell_response(&r, &info, &xml, &len);
    shell_unref_locked(s);
    pthread_mutex_unlock(&fe->lock);
    set_body(c, rc, 200, xml, len);
}

static void do_command(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    const struct mx_ws_request *rq = c->rq;
    struct fe_pipeline *p = NULL;
    char id[EG_WSMAN_UUID_SIZE];
    int rc;

    if (!is_exchange_uri(rq)) {
        reply_resource_uri(c);
        return;
    }
    if (rq->command_id && (strlen(rq->command_id) >= sizeof p->id || !*rq->command_id)) {
        reply_body_error(c, "CommandId is not valid");
        return;
    }
    if (!rq->command_id && eg_wsman_uuid(id) < 0) {
        set_body(c, EG_EIO, 500, NULL, 0);
        return;
    }
    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = shell_get_locked(c);
    if (!s) {
        pthread_mutex_unlock(&fe->lock);
        reply_invalid_selectors(c);
        return;
    }
    unsigned limit = fe->faults.commands_per_shell;
    if (s->n_pipes >= EG_MOCK_MAX_SHELL_PIPELINES)
        prune_done_locked(s);
    if ((limit && s->commands >= limit) || s->n_pipes >= EG_MOCK_MAX_SHELL_PIPELINES) {
        eg_log_info("Command on shell %s refused after %u commands", s->id, s->commands);
        shell_unref_locked(s);
        pthread_mutex_unlock(&fe->lock);
        reply_receiver(c, "w:InternalError", MX_WS_CODE_COMMANDS_PER_SHELL,
                       TEXT_COMMANDS_PER_SHELL);
        return;
    }
    const char *cid = rq->command_id ? rq->command_id : id;
    if (pipe_find_locked(s, cid)) {
        shell_unref_locked(s);
        pthread_mutex_unlock(&fe->lock);
        reply_sender(c, "w:InvalidParameter", MX_WS_CODE_INVALID_PARAMETER,
                     "The WS-Management service cannot process the request because the "
                     "CommandId is already in use. ");
        return;
    }
    if (!(p = eg_calloc(1, sizeof *p)) || eg_psrp_defrag_new(NULL, &p->defrag) < 0) {
        eg_free(p);
        shell_unref_locked(s);
        pthread_mutex_unlock(&fe->lock);
        set_body(c, EG_ENOMEM, 500, NULL, 0);
        return;
    }
    snprintf(p->id, sizeof p->id, "%s", cid);
    p->shell = s; /* takes over the reference of shell_get_locked */
    p->refs = 1;  /* the shell's list */
    p->state = PIPE_ARGS;
    p->seq = ++fe->pipe_seq;
    cond_init_mono(&p->space);
    /* append: creation order */
    struct fe_pipeline **pp = &s->pipes;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    p->linked = true;
    s->n_pipes++;
    s->commands++;
    rc = 0;
    if (rq->arguments)
        rc = eg_psrp_defrag_feed_buffer(p->defrag, rq->arguments, rq->arguments_len);
    if (rc == 0)
        rc = pipe_messages_locked(fe, p);
    if (rc < 0) {
        pipe_unlink_locked(p);
        pthread_mutex_unlock(&fe->lock);
        if (rc == EG_ELIMIT)
            reply_receiver(c, "w:InternalError", MX_WS_CODE_COMMANDS_PER_SHELL,
                           TEXT_COMMANDS_PER_SHELL);
        else if (rc == EG_ENOMEM)
            set_body(c, rc, 500, NULL, 0);
        else
            reply_body_error(c, "rsp:Arguments does not hold valid PSRP fragments");
        return;
    }
    pthread_mutex_unlock(&fe->lock);
    struct mx_ws_reply r = reply_of(c);
    char *xml = NULL;
    size_t len = 0;
    rc = mx_ws_build_command_response(&r, cid, &xml, &len);
    set_body(c, rc, 200, xml, len);
}

static void do_send(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    const struct mx_ws_request *rq = c->rq;
    int rc = 0;
    bool unknown = false;

    if (!is_exchange_uri(rq)) {
        reply_resource_uri(c);
        return;
    }
    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = shell_get_locked(c);
    if (!s) {
        pthread_mutex_unlock(&fe->lock);
        reply_invalid_selectors(c);
        return;
    }
    for (size_t i = 0; i < rq->n_streams && rc == 0; i++) {
        const struct mx_ws_in_stream *st = &rq->streams[i];
        if (st->command_id) {
            struct fe_pipeline *p = pipe_find_locked(s, st->command_id);
            if (!p) {
                unknown = true;
                break;
            }
            rc = eg_psrp_defrag_feed_buffer(p->defrag, st->data, st->len);
            if (rc == 0)
                rc = pipe_messages_locked(fe, p);
            if (rc < 0)
                pipe_unlink_locked(p); /* it can never start now */
        } else {
            rc = eg_psrp_defrag_feed_buffer(s->defrag, st->data, st->len);
            if (rc == 0)
                pool_messages_locked(s);
        }
    }
    shell_unref_locked(s);
    pthread_mutex_unlock(&fe->lock);
    if (unknown)
        reply_invalid_selectors(c);
    else if (rc == EG_ENOMEM)
        set_body(c, rc, 500, NULL, 0);
    else if (rc == EG_ELIMIT)
        reply_receiver(c, "w:InternalError", MX_WS_CODE_COMMANDS_PER_SHELL,
                       TEXT_COMMANDS_PER_SHELL);
    else if (rc < 0)
        reply_body_error(c, "rsp:Stream does not hold valid PSRP fragments");
    else
        reply_empty(c, MX_WS_SEND);
}

static bool ends_with_ci(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static void do_signal(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    const struct mx_ws_request *rq = c->rq;
    const char *code = rq->signal_code;
    /* powershell/signal/crtl_c (MS-PSRP spelling), powershell/signal/ctrl_c (MS-WSMV), with or
     * without the http://schemas.microsoft.com/ prefix; .../signal/terminate in any case. */
    bool stop = ends_with_ci(code, "powershell/signal/crtl_c") ||
                ends_with_ci(code, "powershell/signal/ctrl_c");
    bool terminate = ends_with_ci(code, "/signal/terminate");

    if (!is_exchange_uri(rq)) {
        reply_resource_uri(c);
        return;
    }
    if (!stop && !terminate) {
        reply_sender(c, "w:InvalidParameter", MX_WS_CODE_INVALID_PARAMETER,
                     "The WS-Management service cannot process the request because the signal "
                     "code is not supported. ");
        return;
    }
    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = shell_get_locked(c);
    struct fe_pipeline *p = s ? pipe_find_locked(s, rq->command_id) : NULL;
    if (p && stop) {
        p->stop = true;
        pthread_cond_broadcast(&p->space);
        eg_log_info("pipeline %s: stop requested", p->id);
    } else if (p) {
        eg_log_debug("pipeline %s terminated", p->id);
        pipe_unlink_locked(p);
    }
    shell_unref_locked(s);
    pthread_mutex_unlock(&fe->lock);
    if (!p)
        reply_invalid_selectors(c);
    else
        reply_empty(c, MX_WS_SIGNAL);
}

/* One fragment cut for a response (header + blob). */
struct out_frag {
    uint8_t *bytes;
    size_t len;
};

/* Cut fragments from q into frags (at most MAX_OUT_STREAMS) within budget bytes of stream
 * elements. *ret_final: the final message ended in this cut. */
static int cut_locked(struct fe_shell *s, struct fe_queue *q, size_t budget, const char *cid,
                      struct out_frag *frags, size_t *ret_n, bool *ret_final)
{
    size_t n = 0, so = mx_ws_stream_overhead(cid);
    *ret_final = false;
    while (q->head && !q->head->fault_text && n < MAX_OUT_STREAMS) {
        struct fe_msg *m = q->head;
        if (budget <= so + 64)
            break;
        size_t raw = (budget - so) / 4 * 3;
        if (raw <= EG_PSRP_FRAGMENT_HEADER_LEN)
            break;
        size_t maxblob = raw - EG_PSRP_FRAGMENT_HEADER_LEN;
        if (maxblob > EG_PSRP_MAX_FRAGMENT_BLOB)
            maxblob = EG_PSRP_MAX_FRAGMENT_BLOB;
        size_t left = m->len - m->off;
        size_t blob = left < maxblob ? left : maxblob;
        if (blob < left && blob < MIN_FRAGMENT_BLOB && n > 0)
            break;
        if (m->off == 0) {
            m->object_id = s->next_object_id++;
            m->next_fragment = 0;
        }
        struct eg_psrp_fragment f = {.object_id = m->object_id,
                                     .fragment_id = m->next_fragment,
                                     .start = m->off == 0,
                                     .end = m->off + blob == m->len,
                                     .blob = m->data + m->off,
                                     .blob_len = (uint32_t)blob};
        size_t flen = EG_PSRP_FRAGMENT_HEADER_LEN + blob;
        uint8_t *buf = eg_malloc(flen);
        if (!buf) {
            *ret_n = n;
            return EG_ENOMEM;
        }
        if (eg_psrp_fragment_encode(&f, buf, flen, NULL) < 0) {
            eg_free(buf);
            *ret_n = n;
            return EG_EINTERNAL;
        }
        frags[n].bytes = buf;
        frags[n].len = flen;
        n++;
        m->next_fragment++;
        m->off += blob;
        q->bytes -= blob;
        budget -= so + eg_base64_encoded_len(flen);
        if (f.end) {
            bool final = m->final;
            msg_free(queue_pop(q));
            if (final) {
                *ret_final = true;
                break;
            }
        }
    }
    *ret_n = n;
    return 0;
}

static void do_receive(struct req_ctx *c)
{
    struct mx_fe *fe = c->fe;
    const struct mx_ws_request *rq = c->rq;
    struct out_frag frags[MAX_OUT_STREAMS];
    struct mx_ws_out_stream streams[MAX_OUT_STREAMS];
    size_t n = 0;
    bool final = false, done = false, batched = false;
    char *fault_text = NULL;
    int rc = 0;

    if (!is_exchange_uri(rq)) {
        reply_resource_uri(c);
        return;
    }
    uint32_t env = envelope_of(rq);
    if (env < EG_MOCK_MIN_ENVELOPE) {
        struct mx_ws_parse_diag d = {.kind = MX_WS_PERR_HEADER};
        snprintf(d.detail, sizeof d.detail, "MaxEnvelopeSize %u is below %u", (unsigned)env,
                 (unsigned)EG_MOCK_MIN_ENVELOPE);
        char buf[512];
        struct mx_ws_fault f;
        mx_ws_fault_for_parse(&f, &d, buf, sizeof buf);
        reply_fault(c, &f);
        return;
    }
    const char *cid = rq->command_id;
    size_t overhead = mx_ws_receive_overhead(rq->message_id, cid) + RECEIVE_SLACK;
    size_t budget = env > overhead ? env - overhead : 0;
    int64_t deadline = eg_mono_ms() + hold_of(rq);

    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = shell_get_locked(c);
    struct fe_pipeline *p = NULL;
    if (!s || (cid && !(p = pipe_find_locked(s, cid)))) {
        shell_unref_locked(s);
        pthread_mutex_unlock(&fe->lock);
        reply_invalid_selectors(c);
        return;
    }
    if (p)
        p->refs++;
    struct fe_queue *q = p ? &p->out : &s->pool_out;
    enum { WAIT, DATA, INVALID, TIMEOUT, DROP, FAULT, DONE_ONLY } what = WAIT;
    while (what == WAIT) {
        if (fe->stopping || c->l->down) {
            what = DROP;
        } else if (s->gone || (p && p->abandoned)) {
            what = INVALID;
        } else if (q->head && q->head->fault_text) {
            struct fe_msg *m = queue_pop(q);
            fault_text = m->fault_text;
            m->fault_text = NULL;
            msg_free(m);
            what = FAULT;
        } else if (q->head) {
            if (p && p->state == PIPE_RUNNING && q->bytes < budget / 2 && !batched) {
                batched = true;
                int64_t until = eg_mono_ms() + BATCH_WAIT_MS;
                (void)cond_wait_until(&s->cond, &fe->lock, until < deadline ? until : deadline);
                continue;
            }
            rc = cut_locked(s, q, budget, cid, frags, &n, &final);
            what = DATA;
            if (p)
                pthread_cond_broadcast(&p->space);
        } else if (p && p->state == PIPE_DONE) {
            what = DONE_ONLY;
        } else if (!cond_wait_until(&s->cond, &fe->lock, deadline) && eg_mono_ms() >= deadline) {
            what = TIMEOUT;
        }
    }
    if (p && (final || what == DONE_ONLY)) {
        done = true;
        p->state = PIPE_DONE;
    }
    if (p && what == FAULT) {
        p->state = PIPE_DONE;
        pipe_unlink_locked(p); /* the command is gone with the transport failure */
    }
    if (p && done)
        prune_done_locked(s);
    pipe_unref_locked(p);
    shell_unref_locked(s);
    pthread_mutex_unlock(&fe->lock);

    switch (what) {
    case DROP:
        c->drop = true;
        return;
    case INVALID:
        reply_invalid_selectors(c);
        return;
    case TIMEOUT:
        reply_timed_out(c);
        return;
    case FAULT:
        reply_receiver(c, "w:QuotaLimit", MX_WS_CODE_MAX_OPERATIONS, fault_text);
        eg_free(fault_text);
        return;
    default:
        break;
    }
    /* DATA or DONE_ONLY: base64 outside the lock */
    for (size_t i = 0; i < n; i++)
        streams[i] = (struct mx_ws_out_stream){.name = "stdout", .command_id = cid, .b64 = NULL};
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *b64 = NULL;
        rc = eg_base64_encode(frags[i].bytes, frags[i].len, &b64, NULL);
        streams[i].b64 = b64;
    }
    struct mx_ws_command_state st = {
        .command_id = cid, .state_uri = EG_WSMAN_STATE_DONE, .has_exit_code = true, .exit_code = 0};
    char *xml = NULL;
    size_t len = 0;
    if (rc == 0) {
        struct mx_ws_reply r = reply_of(c);
        rc = mx_ws_build_receive_response(&r, streams, n, done ? &st : NULL, &xml, &len);
    }
    for (size_t i = 0; i < n; i++) {
        eg_free(frags[i].bytes);
        eg_free((char *)streams[i].b64);
    }
    set_body(c, rc, 200, xml, len);
}

/* =========================================================================================== */
/* Entry points                                                                                 */
/* =========================================================================================== */

enum fe_outcome fe_psrp_handle(struct mx_fe *fe, struct fe_listener *l, const char *user,
                               const char *client_ip, const char *body, size_t len,
                               unsigned *ret_status, char **ret_body, size_t *ret_len)
{
    struct mx_ws_request *rq = NULL;
    struct mx_ws_parse_diag diag;
    struct req_ctx c = {.fe = fe, .l = l, .user = user, .client_ip = client_ip};

    int rc = mx_ws_parse_request(body, len, &rq, &diag);
    if (rc < 0) {
        if (rc == EG_ENOMEM) {
            set_body(&c, rc, 500, NULL, 0);
        } else {
            char buf[512];
            struct mx_ws_fault f;
            mx_ws_fault_for_parse(&f, &diag, buf, sizeof buf);
            c.relates_to = diag.message_id[0] ? diag.message_id : NULL;
            eg_log_info("bad WS-Man request from %s: %s (%s)", client_ip, eg_strerror(rc),
                        diag.detail);
            reply_fault(&c, &f);
        }
        goto out;
    }
    c.rq = rq;
    pthread_mutex_lock(&fe->lock);
    sweep_locked(fe);
    pthread_mutex_unlock(&fe->lock);
    eg_log_debug("%s %s shell=%s command=%s from %s", mx_ws_action_name(rq->action), user,
                 mx_ws_selector(rq, "ShellId") ? mx_ws_selector(rq, "ShellId") : "-",
                 rq->command_id ? rq->command_id : "-", client_ip);
    switch (rq->action) {
    case MX_WS_CREATE:
        do_create(&c);
        break;
    case MX_WS_DELETE:
        do_delete(&c);
        break;
    case MX_WS_GET:
        do_get(&c);
        break;
    case MX_WS_COMMAND:
        do_command(&c);
        break;
    case MX_WS_SEND:
        do_send(&c);
        break;
    case MX_WS_RECEIVE:
        do_receive(&c);
        break;
    case MX_WS_SIGNAL:
        do_signal(&c);
        break;
    default: {
        char text[1024];
        snprintf(text, sizeof text,
                 "The WS-Management service cannot process the request because the action is "
                 "not supported: %s. ",
                 rq->action_uri);
        reply_sender(&c, "a:ActionNotSupported", MX_WS_CODE_ACTION, text);
        break;
    }
    }
out:
    mx_ws_request_free(rq);
    if (c.drop) {
        eg_free(c.body);
        return FE_DROP;
    }
    *ret_status = c.status;
    *ret_body = c.body;
    *ret_len = c.len;
    return FE_ANSWER;
}

size_t fe_lose_shells(struct mx_fe *fe, bool all, const char *shell_id, const char *user,
                      int listener)
{
    size_t n = 0;
    pthread_mutex_lock(&fe->lock);
    struct fe_shell *s = fe->shells;
    while (s) {
        struct fe_shell *next = s->next;
        if (all || ((!shell_id || strcasecmp(s->id, shell_id) == 0) &&
                    (!user || strcasecmp(s->user, user) == 0) &&
                    (listener < 0 || s->listener == listener))) {
            eg_log_info("shell %s of %s lost (fault injection)", s->id, s->user);
            shell_gone_locked(fe, s);
            n++;
        }
        s = next;
    }
    pthread_mutex_unlock(&fe->lock);
    return n;
}

void fe_listener_down_locked(struct mx_fe *fe, int i)
{
    struct fe_shell *s = fe->shells;
    while (s) {
        struct fe_shell *next = s->next;
        if (!fe->shared_shells && s->listener == i)
            shell_gone_locked(fe, s);
        else
            pthread_cond_broadcast(&s->cond);
        s = next;
    }
}

void fe_psrp_shutdown(struct mx_fe *fe)
{
    pthread_mutex_lock(&fe->lock);
    fe->stopping = true;
    while (fe->shells)
        shell_gone_locked(fe, fe->shells);
    int64_t deadline = eg_mono_ms() + 10000;
    while (fe->running > 0) {
        if (!cond_wait_until(&fe->idle, &fe->lock, deadline) && eg_mono_ms() >= deadline)
            break;
    }
    if (fe->running > 0)
        eg_log_warn("%u pipeline threads still running at shutdown", fe->running);
    pthread_mutex_unlock(&fe->lock);
}

json_t *fe_shells_json(struct mx_fe *fe)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    pthread_mutex_lock(&fe->lock);
    int64_t now = eg_mono_ms();
    for (struct fe_shell *s = fe->shells; s; s = s->next) {
        json_t *pipes = json_array();
        for (struct fe_pipeline *p = s->pipes; p && pipes; p = p->next) {
            static const char *const names[] = {"args", "input", "running", "finished", "done"};
            json_t *o = json_pack("{s:s, s:s, s:I}", "command_id", p->id, "state", names[p->state],
                                  "queued_bytes", (json_int_t)p->out.bytes);
            if (!o || json_array_append_new(pipes, o) < 0) {
                json_decref(pipes);
                pipes = NULL;
            }
        }
        json_t *o = pipes ? json_pack("{s:s, s:s, s:i, s:s, s:I, s:I, s:o}", "shell_id", s->id,
                                      "user", s->user, "listener", s->listener, "client_ip",
                                      s->client_ip, "commands", (json_int_t)s->commands, "idle_ms",
                                      (json_int_t)(now - s->last_ms), "pipelines", pipes)
                          : NULL;
        if (!o || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            arr = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&fe->lock);
    return arr;
}
