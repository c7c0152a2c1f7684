/* control.c - the test-control side of the mock Exchange engine: injected faults (latency,
 * quota errors, micro-delays, write scope), the RBAC profile, the call recorder, the org's state
 * as JSON for assertions, and mx_control(), the one JSON entry point a front end's control
 * endpoint forwards to. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/psrp_objects.h"
#include "mx_internal.h"

/* ================================================================ faults */

static struct mx_fault *fault_find(struct mx_org *org, const char *cmdlet)
{
    for (size_t i = 0; i < org->n_faults; i++) {
        const char *k = org->faults[i].cmdlet;
        if ((!k && !cmdlet) || (k && cmdlet && strcasecmp(k, cmdlet) == 0))
            return &org->faults[i];
    }
    return NULL;
}

/* The fault entry of a key, created when absent (lock held). */
static int fault_slot(struct mx_org *org, const char *cmdlet, struct mx_fault **ret)
{
    struct mx_fault *f = fault_find(org, cmdlet);
    if (!f) {
        if (org->n_faults >= MX_MAX_FAULT_KEYS)
            return EG_ELIMIT;
        char *k = NULL;
        if (cmdlet && !(k = eg_strdup(cmdlet)))
            return EG_ENOMEM;
        f = &org->faults[org->n_faults++];
        memset(f, 0, sizeof *f);
        f->cmdlet = k;
    }
    *ret = f;
    return 0;
}

static bool key_ok(const char *cmdlet)
{
    return !cmdlet || (*cmdlet && strlen(cmdlet) <= EG_PSRP_MAX_CMDLET_NAME);
}

int mx_fault_latency(struct mx_org *org, const char *cmdlet, int64_t ms)
{
    if (!org || !key_ok(cmdlet) || ms < 0)
        return EG_EINVAL;
    struct mx_fault *f;
    pthread_mutex_lock(&org->lock);
    int rc = fault_slot(org, cmdlet, &f);
    if (rc == 0) {
        f->has_latency = true;
        f->latency_ms = ms;
    }
    pthread_mutex_unlock(&org->lock);
    return rc;
}

int mx_fault_quota(struct mx_org *org, const char *cmdlet, const struct mx_quota_fault *q)
{
    static const struct mx_quota_fault off;
    if (!org || !key_ok(cmdlet) || (q && q->delay_ms < 0))
        return EG_EINVAL;
    struct mx_fault *f;
    pthread_mutex_lock(&org->lock);
    int rc = fault_slot(org, cmdlet, &f);
    if (rc == 0) {
        f->has_quota = true;
        f->quota = q ? *q : off;
        if (!f->quota.requests)
            f->quota.requests = 30;
        if (!f->quota.seconds)
            f->quota.seconds = 60;
        f->quota_calls = 0;
        f->quota_left = f->quota.next_k;
    }
    pthread_mutex_unlock(&org->lock);
    return rc;
}

int mx_fault_micro_delay(struct mx_org *org, const char *cmdlet, unsigned every_nth,
                         int64_t delay_ms)
{
    if (!org || !key_ok(cmdlet) || delay_ms < 0)
        return EG_EINVAL;
    struct mx_fault *f;
    pthread_mutex_lock(&org->lock);
    int rc = fault_slot(org, cmdlet, &f);
    if (rc == 0) {
        f->has_md = true;
        f->md_every = every_nth;
        f->md_delay_ms = delay_ms;
        f->md_calls = 0;
    }
    pthread_mutex_unlock(&org->lock);
    return rc;
}

int mx_fault_write_scope(struct mx_org *org, const char *mailbox, bool on)
{
    if (!org || !mailbox)
        return EG_EINVAL;
    uint32_t mi;
    pthread_mutex_lock(&org->lock);
    int rc = mx_find_mailbox(org, mailbox, &mi);
    if (rc == 0)
        org->mbx[mi].write_scope_fault = on;
    pthread_mutex_unlock(&org->lock);
    return rc;
}

void mx_fault_reset(struct mx_org *org)
{
    if (!org)
        return;
    pthread_mutex_lock(&org->lock);
    for (size_t i = 0; i < org->n_faults; i++)
        eg_free(org->faults[i].cmdlet);
    org->n_faults = 0;
    for (size_t i = 0; i < org->n_mbx; i++)
        org->mbx[i].write_scope_fault = false;
    pthread_mutex_unlock(&org->lock);
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static char *micro_delay_text(int64_t delay_ms)
{
    return eg_asprintf(
        "Micro delay applied. Actual delayed: %lld msecs, Enforced: True, Capped delay: %lld "
        "msecs, Required: False, Additional info: .;\r\n"
        "PolicyDN: CN=GlobalThrottlingPolicy_2f1a2c4e-7b55-4a77-9d43-0c1d3e5f6a7b,CN=Global "
        "Settings,CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,"
        "DC=example;\r\n"
        "Snapshot: Owner: Sid~S-1-5-21-3623811015-3361044348-30300820-1013~PowerShell~false\r\n"
        "BudgetType: PowerShell\r\n"
        "ActiveRunspaces: 0/20\r\n"
        "Balance: -1608289/2160000/-3000000\r\n"
        "PowerShellCmdletsLeft: 384/400\r\n"
        "ExchangeCmdletsLeft: 185/200\r\n"
        "CmdletTimePeriod: 5\r\n"
        "DestructiveCmdletsLeft: 120/120\r\n"
        "DestructiveCmdletTimePeriod: 60\r\n"
        "QueueDepth: 100\r\n"
        "MaxRunspacesTimePeriod: 60\r\n"
        "RunSpacesRemaining: 20/20\r\n"
        "Locked: False\r\n"
        "LockRemaining: 00:00:00",
        (long long)delay_ms, (long long)delay_ms);
}

static void quota_error(struct mx_error *e, const struct mx_quota_fault *q)
{
    memset(e, 0, sizeof *e);
    snprintf(e->exception_type, sizeof e->exception_type, "%s",
             "System.Management.Automation.Remoting.PSRemotingTransportException");
    snprintf(e->message, sizeof e->message,
             "The WS-Management service cannot process the request. The user load quota of %u "
             "requests per %u seconds has been exceeded. Send future requests at a slower rate or "
             "raise the quota for this user. The next request from this user will not be approved "
             "for at least %lld milliseconds.",
             q->requests, q->seconds, (long long)q->delay_ms);
    snprintf(e->fqeid, sizeof e->fqeid, "JobFailure");
    e->category = EG_PS_ERR_OPERATION_STOPPED;
    snprintf(e->category_reason, sizeof e->category_reason, "PSRemotingTransportException");
    snprintf(e->category_message, sizeof e->category_message,
             "OperationStopped: (:) [], PSRemotingTransportException");
    snprintf(e->rest_code, sizeof e->rest_code, "TooManyRequests");
    e->http_status = 429;
    e->throttled = true;
    e->retry_after_ms = q->delay_ms;
}

int mx_fault_before(struct mx_org *org, const char *cmdlet, struct mx_error *term,
                    char **ret_warning)
{
    int64_t latency = 0, md_delay = -1;
    bool fail = false;
    struct mx_quota_fault q;

    *ret_warning = NULL;
    pthread_mutex_lock(&org->lock);
    struct mx_fault *spec = fault_find(org, cmdlet), *glob = fault_find(org, NULL);
    struct mx_fault *lat = spec && spec->has_latency   ? spec
                           : glob && glob->has_latency ? glob
                                                       : NULL;
    struct mx_fault *qf = spec && spec->has_quota ? spec : glob && glob->has_quota ? glob : NULL;
    struct mx_fault *md = spec && spec->has_md ? spec : glob && glob->has_md ? glob : NULL;
    if (lat)
        latency = lat->latency_ms;
    if (qf) {
        qf->quota_calls++;
        if (qf->quota_left) {
            qf->quota_left--;
            fail = true;
        }
        if (qf->quota.every_nth && qf->quota_calls % qf->quota.every_nth == 0)
            fail = true;
        q = qf->quota;
    }
    if (md && !fail) {
        md->md_calls++;
        if (md->md_every && md->md_calls % md->md_every == 0)
            md_delay = md->md_delay_ms;
    }
    pthread_mutex_unlock(&org->lock);

    sleep_ms(latency);
    if (fail) {
        quota_error(term, &q);
        return EG_EREMOTE;
    }
    if (md_delay >= 0) {
        sleep_ms(md_delay);
        if (!(*ret_warning = micro_delay_text(md_delay)))
            return EG_ENOMEM;
    }
    return 0;
}

/* ================================================================ RBAC */

static struct mx_rbac *rbac_find(struct mx_org *org, const char *cmdlet)
{
    for (size_t i = 0; i < org->n_rbac; i++)
        if (strcasecmp(org->rbac[i].cmdlet, cmdlet) == 0)
            return &org->rbac[i];
    return NULL;
}

static int rbac_slot(struct mx_org *org, const char *canon, struct mx_rbac **ret)
{
    struct mx_rbac *r = rbac_find(org, canon);
    if (!r) {
        struct mx_rbac *nv = eg_reallocarray(org->rbac, org->n_rbac + 1, sizeof *nv);
        if (!nv)
            return EG_ENOMEM;
        org->rbac = nv;
        r = &org->rbac[org->n_rbac];
        memset(r, 0, sizeof *r);
        if (!(r->cmdlet = eg_strdup(canon)))
            return EG_ENOMEM;
        org->n_rbac++;
    }
    *ret = r;
    return 0;
}

int mx_rbac_hide_cmdlet(struct mx_org *org, const char *cmdlet)
{
    char canon[128];
    if (!org || !cmdlet)
        return EG_EINVAL;
    int rc = mx_cmdlet_lookup(cmdlet, NULL, canon, NULL);
    if (rc != 0)
        return rc;
    struct mx_rbac *r;
    pthread_mutex_lock(&org->lock);
    if ((rc = rbac_slot(org, canon, &r)) == 0)
        r->hidden = true;
    pthread_mutex_unlock(&org->lock);
    return rc;
}

int mx_rbac_hide_parameter(struct mx_org *org, const char *cmdlet, const char *parameter)
{
    char canon[128], pcanon[128];
    if (!org || !cmdlet || !parameter)
        return EG_EINVAL;
    int rc = mx_cmdlet_lookup(cmdlet, parameter, canon, pcanon);
    if (rc != 0)
        return rc;
    struct mx_rbac *r;
    pthread_mutex_lock(&org->lock);
    if ((rc = rbac_slot(org, canon, &r)) == 0 && mx_strv_find(&r->hidden_params, pcanon) < 0)
        rc = mx_strv_add(&r->hidden_params, pcanon);
    pthread_mutex_unlock(&org->lock);
    return rc;
}

int mx_rbac_allow_only(struct mx_org *org, const char *cmdlet, const char *const *parameters,
                       size_t n)
{
    char canon[128], pcanon[128];
    struct mx_strv keep = {0};
    if (!org || !cmdlet || (n && !parameters))
        return EG_EINVAL;
    int rc = mx_cmdlet_lookup(cmdlet, NULL, canon, NULL);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!parameters[i]) {
            rc = EG_EINVAL;
            break;
        }
        if ((rc = mx_cmdlet_lookup(cmdlet, parameters[i], NULL, pcanon)) == 0 &&
            mx_strv_find(&keep, pcanon) < 0)
            rc = mx_strv_add(&keep, pcanon);
    }
    if (rc != 0) {
        mx_strv_clear(&keep);
        return rc;
    }
    struct mx_rbac *r;
    pthread_mutex_lock(&org->lock);
    if ((rc = rbac_slot(org, canon, &r)) == 0) {
        mx_strv_clear(&r->allowed_params);
        r->allowed_params = keep;
        memset(&keep, 0, sizeof keep);
        r->allow_only = true;
    }
    pthread_mutex_unlock(&org->lock);
    mx_strv_clear(&keep);
    return rc;
}

void mx_rbac_reset(struct mx_org *org)
{
    if (!org)
        return;
    pthread_mutex_lock(&org->lock);
    for (size_t i = 0; i < org->n_rbac; i++) {
        eg_free(org->rbac[i].cmdlet);
        mx_strv_clear(&org->rbac[i].hidden_params);
        mx_strv_clear(&org->rbac[i].allowed_params);
    }
    eg_freep(&org->rbac);
    org->n_rbac = 0;
    pthread_mutex_unlock(&org->lock);
}

bool mx_rbac_cmdlet_hidden(struct mx_org *org, const char *cmdlet)
{
    const struct mx_rbac *r = rbac_find(org, cmdlet);
    return r && r->hidden;
}

bool mx_rbac_param_hidden(struct mx_org *org, const char *cmdlet, const char *param)
{
    const struct mx_rbac *r = rbac_find(org, cmdlet);
    if (!r)
        return false;
    if (mx_strv_find(&r->hidden_params, param) >= 0)
        return true;
    return r->allow_only && mx_strv_find(&r->allowed_params, param) < 0;
}

/* ================================================================ call recorder */

/* Keep the newest calls_limit records; trimmed in batches so appending stays O(1) amortized. */
static void recorder_trim(struct mx_org *org, bool force)
{
    size_t n = json_array_size(org->calls), lim = org->calls_limit;
    if (n <= lim || (!force && n <= lim + lim / 4 + 1))
        return;
    json_t *keep = json_array();
    if (!keep) {
        while (json_array_size(org->calls) > lim) /* slow path, still bounded */
            json_array_remove(org->calls, 0);
        return;
    }
    for (size_t i = n - lim; i < n; i++)
        json_array_append(keep, json_array_get(org->calls, i));
    json_decref(org->calls);
    org->calls = keep;
}

void mx_recorder_add(struct mx_org *org, json_t *rec)
{
    pthread_mutex_lock(&org->lock);
    json_object_set_new(rec, "seq", json_integer((json_int_t)++org->calls_seq));
    if (org->calls_limit > 0)
        json_array_append(org->calls, rec);
    recorder_trim(org, false);
    pthread_mutex_unlock(&org->lock);
    json_decref(rec);
}

int mx_recorder_get(struct mx_org *org, json_t **ret)
{
    if (!org || !ret)
        return EG_EINVAL;
    json_t *a = json_array();
    if (!a)
        return EG_ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&org->lock);
    size_t n = json_array_size(org->calls);
    size_t from = n > org->calls_limit ? n - org->calls_limit : 0;
    for (size_t i = from; i < n && rc == 0; i++) {
        json_t *c = json_deep_copy(json_array_get(org->calls, i));
        if (!c || json_array_append_new(a, c) != 0)
            rc = EG_ENOMEM;
    }
    pthread_mutex_unlock(&org->lock);
    if (rc != 0) {
        json_decref(a);
        return rc;
    }
    *ret = a;
    return 0;
}

size_t mx_recorder_count(struct mx_org *org)
{
    if (!org)
        return 0;
    pthread_mutex_lock(&org->lock);
    size_t n = json_array_size(org->calls);
    if (n > org->calls_limit)
        n = org->calls_limit;
    pthread_mutex_unlock(&org->lock);
    return n;
}

void mx_recorder_reset(struct mx_org *org)
{
    if (!org)
        return;
    pthread_mutex_lock(&org->lock);
    json_array_clear(org->calls);
    pthread_mutex_unlock(&org->lock);
}

void mx_recorder_set_limit(struct mx_org *org, size_t limit)
{
    if (!org)
        return;
    pthread_mutex_lock(&org->lock);
    org->calls_limit = limit;
    recorder_trim(org, true);
    pthread_mutex_unlock(&org->lock);
}

/* ================================================================ state as JSON */

static json_t *jtime(int64_t ms)
{
    char b[40];
    return ms ? json_string(eg_format_time(ms, b, sizeof b)) : json_null();
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *jstrv(const struct mx_strv *sv)
{
    json_t *a = json_array();
    for (size_t i = 0; a && sv && i < sv->n; i++)
        if (json_array_append_new(a, json_string(sv->v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Set every key; NULL values (ENOMEM) make the whole object fail. */
static int put(json_t *o, const char *k, json_t *v)
{
    if (!v)
        return EG_ENOMEM;
    return json_object_set_new(o, k, v) == 0 ? 0 : EG_ENOMEM;
}

static json_t *mailbox_json(struct mx_org *org, const struct mx_mailbox *m)
{
    json_t *o = json_object(), *devs = json_array();
    char g[40];
    int rc = o && devs ? 0 : EG_ENOMEM;
    mx_guid_text(m->guid, g);
    for (uint32_t x = m->dev_head; rc == 0 && x != MX_NONE; x = org->dev[x].next)
        if (json_array_append_new(devs, json_string(org->dev[x].device_id)) != 0)
            rc = EG_ENOMEM;
    if (rc == 0)
        rc = put(o, "identity", jstr(m->identity));
    if (rc == 0)
        rc = put(o, "name", jstr(m->name));
    if (rc == 0)
        rc = put(o, "alias", jstr(m->alias));
    if (rc == 0)
        rc = put(o, "primary_smtp", jstr(m->smtp));
    if (rc == 0)
        rc = put(o, "upn", jstr(m->upn));
    if (rc == 0)
        rc = put(o, "guid", json_string(g));
    if (rc == 0)
        rc = put(o, "activesync_enabled", json_boolean(m->as_enabled));
    if (rc == 0)
        rc = put(o, "allowed", jstrv(&m->allowed));
    if (rc == 0)
        rc = put(o, "blocked", jstrv(&m->blocked));
    if (rc == 0)
        rc = put(o, "policy", jstr(m->policy));
    if (rc == 0)
        rc = put(o, "policy_defaulted", json_boolean(m->policy_defaulted));
    if (rc == 0)
        rc = put(o, "debug_logging", json_boolean(m->debug_logging));
    if (rc == 0)
        rc = put(o, "suppress_read_receipt", json_boolean(m->suppress_rr));
    if (rc == 0)
        rc = put(o, "has_partnership", json_boolean(mx_has_partnership(org, m)));
    if (rc == 0) {
        rc = put(o, "devices", devs);
        devs = NULL;
    }
    if (rc != 0) {
        json_decref(o);
        json_decref(devs);
        return NULL;
    }
    return o;
}

static json_t *device_json(struct mx_org *org, const struct mx_device *d)
{
    json_t *o = json_object(), *w = json_object();
    char g[40], ident[768];
    int rc = o && w ? 0 : EG_ENOMEM;
    mx_guid_text(d->guid, g);
    mx_device_identity(org, d, ident, sizeof ident);
    if (rc == 0)
        rc = put(o, "identity", json_string(ident));
    if (rc == 0)
        rc = put(o, "guid", json_string(g));
    if (rc == 0)
        rc = put(o, "mailbox", jstr(org->mbx[d->mailbox].smtp));
    if (rc == 0)
        rc = put(o, "device_id", jstr(d->device_id));
    if (rc == 0)
        rc = put(o, "device_type", jstr(d->type));
    if (rc == 0)
        rc = put(o, "model", jstr(d->model));
    if (rc == 0)
        rc = put(o, "os", jstr(d->os));
    if (rc == 0)
        rc = put(o, "user_agent", jstr(d->ua));
    if (rc == 0)
        rc = put(o, "client_type", jstr(d->client_type));
    if (rc == 0)
        rc = put(o, "eas_version", jstr(d->eas));
    if (rc == 0)
        rc = put(o, "access_state", json_string(mx_state_name(d->state)));
    if (rc == 0)
        rc = put(o, "access_reason", json_string(mx_reason_name(d->reason)));
    if (rc == 0)
        rc = put(o, "access_rule", jstr(d->rule));
    if (rc == 0)
        rc = put(o, "first_sync_time", jtime(d->first_sync));
    if (rc == 0)
        rc = put(o, "last_sync_attempt_time", jtime(d->last_attempt));
    if (rc == 0)
        rc = put(o, "last_success_sync", jtime(d->last_success));
    if (rc == 0)
        rc = put(o, "wipe_supported", json_boolean(d->wipe_supported));
    if (rc == 0)
        rc = put(w, "status", json_string(mx_wipe_status(d)));
    if (rc == 0)
        rc = put(w, "request_time", jtime(d->wipe_request));
    if (rc == 0)
        rc = put(w, "sent_time", jtime(d->wipe_sent));
    if (rc == 0)
        rc = put(w, "ack_time", jtime(d->wipe_ack));
    if (rc == 0)
        rc = put(w, "requestor", jstr(d->requestor));
    if (rc == 0)
        rc = put(w, "account_only", json_boolean(d->account_only));
    if (rc == 0)
        rc = put(w, "notify", jstrv(d->notify));
    if (rc == 0) {
        rc = put(o, "wipe", w);
        w = NULL;
    }
    if (rc != 0) {
        json_decref(o);
        json_decref(w);
        return NULL;
    }
    return o;
}

int mx_state_mailbox(struct mx_org *org, const char *mailbox, json_t **ret)
{
    if (!org || !mailbox || !ret)
        return EG_EINVAL;
    uint32_t mi;
    json_t *j = NULL;
    pthread_mutex_lock(&org->lock);
    int rc = mx_find_mailbox(org, mailbox, &mi);
    if (rc == 0 && !(j = mailbox_json(org, &org->mbx[mi])))
        rc = EG_ENOMEM;
    pthread_mutex_unlock(&org->lock);
    if (rc == 0)
        *ret = j;
    return rc;
}

int mx_state_device(struct mx_org *org, const char *mailbox, const char *device_id, json_t **ret)
{
    if (!org || !mailbox || !device_id || !ret)
        return EG_EINVAL;
    uint32_t mi, di;
    json_t *j = NULL;
    pthread_mutex_lock(&org->lock);
    int rc = mx_find_mailbox(org, mailbox, &mi);
    if (rc == 0 && (di = mx_mailbox_device(org, mi, device_id)) == MX_NONE)
        rc = EG_ENOTFOUND;
    if (rc == 0 && !(j = device_json(org, &org->dev[di])))
        rc = EG_ENOMEM;
    pthread_mutex_unlock(&org->lock);
    if (rc == 0)
        *ret = j;
    return rc;
}

int mx_state_org(struct mx_org *org, json_t **ret)
{
    if (!org || !ret)
        return EG_EINVAL;
    json_t *o = json_object(), *rules = json_array();
    int rc = o && rules ? 0 : EG_ENOMEM;
    pthread_mutex_lock(&org->lock);
    for (size_t i = 0; rc == 0 && i < org->n_rules; i++) {
        const struct mx_rule *r = &org->rules[i];
        json_t *rj = json_pack("{s:s,s:s,s:s,s:s}", "name", r->name, "characteristic",
                               mx_charac_name(r->charac), "query_string", r->query, "access_level",
                               mx_level_name(r->level));
        if (!rj || json_array_append_new(rules, rj) != 0)
            rc = EG_ENOMEM;
    }
    if (rc == 0)
        rc = put(o, "profile", json_string(mx_profile_name(org->profile)));
    if (rc == 0)
        rc = put(o, "default_access_level", json_string(mx_level_name(org->default_level)));
    if (rc == 0)
        rc = put(o, "admin_mail_recipients", jstrv(&org->admin_mail));
    if (rc == 0)
        rc = put(o, "user_mail_insert", jstr(org->user_mail_insert));
    if (rc == 0)
        rc = put(o, "ota_notification_mail_insert", jstr(org->ota_insert));
    if (rc == 0)
        rc = put(o, "allow_unsupported_platform", json_boolean(org->allow_unsupported));
    if (rc == 0)
        rc = put(o, "policies", jstrv(&org->policies));
    if (rc == 0) {
        rc = put(o, "rules", rules);
        rules = NULL;
    }
    if (rc == 0)
        rc = put(o, "mailboxes", json_integer((json_int_t)org->n_mbx));
    if (rc == 0)
        rc = put(o, "devices", json_integer((json_int_t)org->live_dev));
    pthread_mutex_unlock(&org->lock);
    if (rc != 0) {
        json_decref(o);
        json_decref(rules);
        return rc;
    }
    *ret = o;
    return 0;
}

/* ================================================================ mx_control */

struct creq {
    const json_t *req;
    char *err;
    size_t err_size;
};

/* The error text "<name>: <what>" (or "<what>"), returns rc. */
static int cfail(struct creq *c, int rc, const char *what, const char *name)
{
    if (c->err && c->err_size) {
        if (name)
            snprintf(c->err, c->err_size, "%s: %s", name, what);
        else
            snprintf(c->err, c->err_size, "%s", what);
    }
    return rc;
}

/* A string member: 0 (*ret, NULL when absent or null), EG_EINVAL when of another type. */
static int c_str(struct creq *c, const char *key, const char **ret)
{
    const json_t *v = json_object_get(c->req, key);
    *ret = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return cfail(c, EG_EINVAL, "must be a string", key);
    *ret = json_string_value(v);
    return 0;
}

static int c_need_str(struct creq *c, const char *key, const char **ret)
{
    int rc = c_str(c, key, ret);
    if (rc == 0 && !*ret)
        return cfail(c, EG_EINVAL, "is required", key);
    return rc;
}

static int c_bool(struct creq *c, const char *key, bool *ret)
{
    const json_t *v = json_object_get(c->req, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return cfail(c, EG_EINVAL, "must be true or false", key);
    *ret = json_is_true(v);
    return 0;
}

static int c_int(struct creq *c, const char *key, int64_t min, int64_t max, int64_t *ret)
{
    const json_t *v = json_object_get(c->req, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return cfail(c, EG_EINVAL, "must be an integer in range", key);
    *ret = json_integer_value(v);
    return 0;
}

static const char *sync_result_name(enum mx_sync_result r)
{
    static const char *const names[] = {"allowed",   "blocked",       "quarantined",
                                        "discovery", "user_disabled", "wipe"};
    return (unsigned)r < 6 ? names[r] : "unknown";
}

static int c_sync(struct mx_org *org, struct creq *c, json_t **ret)
{
    const char *mbx, *dev, *ack = NULL;
    struct mx_sync_spec sp;
    struct mx_sync_outcome o;
    memset(&sp, 0, sizeof sp);
    int rc;
    if ((rc = c_need_str(c, "mailbox", &mbx)) || (rc = c_need_str(c, "device_id", &dev)) ||
        (rc = c_str(c, "device_type", &sp.device_type)) || (rc = c_str(c, "model", &sp.model)) ||
        (rc = c_str(c, "os", &sp.os)) || (rc = c_str(c, "os_language", &sp.os_language)) ||
        (rc = c_str(c, "user_agent", &sp.user_agent)) ||
        (rc = c_str(c, "friendly_name", &sp.friendly_name)) ||
        (rc = c_str(c, "mobile_operator", &sp.mobile_operator)) ||
        (rc = c_str(c, "eas_version", &sp.eas_version)) ||
        (rc = c_str(c, "client_type", &sp.client_type)) ||
        (rc = c_str(c, "client_version", &sp.client_version)) ||
        (rc = c_bool(c, "wipe_unsupported", &sp.wipe_unsupported)) ||
        (rc = c_bool(c, "fails_policy", &sp.fails_policy)) || (rc = c_str(c, "ack", &ack)))
        return rc;
    if (!ack || strcmp(ack, "success") == 0)
        sp.ack = MX_ACK_SUCCESS;
    else if (strcmp(ack, "failure") == 0)
        sp.ack = MX_ACK_FAILURE;
    else if (strcmp(ack, "never") == 0)
        sp.ack = MX_ACK_NEVER;
    else
        return cfail(c, EG_EINVAL, "\"ack\" must be success, failure or never", NULL);
    rc = mx_org_device_sync(org, mbx, dev, &sp, &o);
    if (rc == EG_ENOTFOUND)
        return cfail(c, rc, "no such mailbox", mbx);
    if (rc == EG_ECONFLICT)
        return cfail(c, rc, "ambiguous mailbox identity", mbx);
    if (rc == EG_EINVAL)
        return cfail(c, rc, "invalid device_id", NULL);
    if (rc != 0)
        return rc;
    json_t *j =
        json_pack("{s:s,s:b,s:b,s:b,s:s,s:s,s:s,s:s,s:s}", "result", sync_result_name(o.result),
                  "created", o.created, "account_only", o.account_only, "acked", o.acked,
                  "access_state", o.access_state, "access_reason", o.access_reason, "access_rule",
                  o.access_rule, "identity", o.identity, "guid", o.guid);
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

static int c_add_mailbox(struct mx_org *org, struct creq *c)
{
    struct mx_mailbox_spec sp;
    memset(&sp, 0, sizeof sp);
    const char *proxies[16];
    int rc;
    if ((rc = c_need_str(c, "alias", &sp.alias)) || (rc = c_str(c, "name", &sp.name)) ||
        (rc = c_str(c, "display_name", &sp.display_name)) || (rc = c_str(c, "smtp", &sp.smtp)) ||
        (rc = c_str(c, "upn", &sp.upn)) ||
        (rc = c_bool(c, "activesync_disabled", &sp.activesync_disabled)))
        return rc;
    const json_t *px = json_object_get(c->req, "proxies");
    if (px && !json_is_null(px)) {
        if (!json_is_array(px) || json_array_size(px) > 16)
            return cfail(c, EG_EINVAL, "\"proxies\" must be an array of at most 16 strings", NULL);
        for (size_t i = 0; i < json_array_size(px); i++) {
            if (!json_is_string(json_array_get(px, i)))
                return cfail(c, EG_EINVAL, "\"proxies\" must be an array of strings", NULL);
            proxies[i] = json_string_value(json_array_get(px, i));
        }
        sp.proxies = proxies;
        sp.n_proxies = json_array_size(px);
    }
    rc = mx_org_add_mailbox(org, &sp);
    if (rc == EG_EINVAL)
        return cfail(c, rc, "invalid mailbox or identity already taken", sp.alias);
    return rc;
}

static json_t *behaviour_json(const struct mx_behaviour *b)
{
    return json_pack("{s:b,s:b,s:b,s:b,s:b,s:I,s:I,s:s}", "strict_duplicates", b->strict_duplicates,
                     "recompute_on_set", b->recompute_on_set, "stale_partnership",
                     b->stale_partnership, "noop_warning", b->noop_warning,
                     "task_errors_terminating", b->task_errors_terminating, "discovery_ms",
                     (json_int_t)b->discovery_ms, "list_cap", (json_int_t)b->list_cap, "requestor",
                     b->requestor);
}

static int c_behaviour(struct mx_org *org, struct creq *c, json_t **ret)
{
    struct mx_behaviour b;
    int64_t cap = -1;
    const char *req = NULL;
    int rc;
    mx_org_get_behaviour(org, &b);
    if ((rc = c_bool(c, "strict_duplicates", &b.strict_duplicates)) ||
        (rc = c_bool(c, "recompute_on_set", &b.recompute_on_set)) ||
        (rc = c_bool(c, "stale_partnership", &b.stale_partnership)) ||
        (rc = c_bool(c, "noop_warning", &b.noop_warning)) ||
        (rc = c_bool(c, "task_errors_terminating", &b.task_errors_terminating)) ||
        (rc = c_int(c, "discovery_ms", 0, INT64_C(1) << 40, &b.discovery_ms)) ||
        (rc = c_int(c, "list_cap", 0, INT32_MAX, &cap)) || (rc = c_str(c, "requestor", &req)))
        return rc;
    if (cap >= 0)
        b.list_cap = (size_t)cap;
    if (req) {
        if (strlen(req) >= sizeof b.requestor)
            return cfail(c, EG_EINVAL, "\"requestor\" is too long", NULL);
        snprintf(b.requestor, sizeof b.requestor, "%s", req);
    }
    mx_org_set_behaviour(org, &b);
    mx_org_get_behaviour(org, &b);
    json_t *j = behaviour_json(&b);
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

static int c_fault(struct mx_org *org, struct creq *c, const char *op)
{
    const char *cmdlet = NULL;
    int rc = c_str(c, "cmdlet", &cmdlet);
    if (rc)
        return rc;
    if (strcmp(op, "fault_latency") == 0) {
        int64_t ms = 0;
        if ((rc = c_int(c, "ms", 0, INT64_C(3600000), &ms)))
            return rc;
        return mx_fault_latency(org, cmdlet, ms);
    }
    if (strcmp(op, "fault_quota") == 0) {
        int64_t every = 0, k = 0, delay = 0, req = 0, sec = 0;
        if ((rc = c_int(c, "every_nth", 0, UINT32_MAX, &every)) ||
            (rc = c_int(c, "next_k", 0, UINT32_MAX, &k)) ||
            (rc = c_int(c, "delay_ms", 0, INT64_C(86400000), &delay)) ||
            (rc = c_int(c, "requests", 0, UINT32_MAX, &req)) ||
            (rc = c_int(c, "seconds", 0, UINT32_MAX, &sec)))
            return rc;
        struct mx_quota_fault q = {.every_nth = (unsigned)every,
                                   .next_k = (unsigned)k,
                                   .delay_ms = delay,
                                   .requests = (unsigned)req,
                                   .seconds = (unsigned)sec};
        return mx_fault_quota(org, cmdlet, every || k ? &q : NULL);
    }
    int64_t every = 0, delay = 0;
    if ((rc = c_int(c, "every_nth", 0, UINT32_MAX, &every)) ||
        (rc = c_int(c, "delay_ms", 0, INT64_C(3600000), &delay)))
        return rc;
    return mx_fault_micro_delay(org, cmdlet, (unsigned)every, delay);
}

static int c_rbac(struct mx_org *org, struct creq *c, const char *op)
{
    const char *cmdlet = NULL, *param = NULL;
    int rc;
    if ((rc = c_need_str(c, "cmdlet", &cmdlet)))
        return rc;
    if (strcmp(op, "rbac_hide_cmdlet") == 0) {
        rc = mx_rbac_hide_cmdlet(org, cmdlet);
    } else if (strcmp(op, "rbac_hide_parameter") == 0) {
        if ((rc = c_need_str(c, "parameter", &param)))
            return rc;
        rc = mx_rbac_hide_parameter(org, cmdlet, param);
    } else {
        const json_t *a = json_object_get(c->req, "parameters");
        const char *names[64];
        if (!json_is_array(a) || json_array_size(a) > 64)
            return cfail(c, EG_EINVAL, "\"parameters\" must be an array of at most 64 names", NULL);
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!json_is_string(json_array_get(a, i)))
                return cfail(c, EG_EINVAL, "\"parameters\" must hold strings", NULL);
            names[i] = json_string_value(json_array_get(a, i));
        }
        rc = mx_rbac_allow_only(org, cmdlet, names, json_array_size(a));
    }
    if (rc == EG_ENOTFOUND)
        return cfail(c, rc, "unknown cmdlet or parameter", cmdlet);
    return rc;
}

static int c_info(struct mx_org *org, json_t **ret)
{
    json_t *j = json_pack(
        "{s:s,s:I,s:I,s:I,s:I}", "profile", mx_profile_name(org->profile), "mailboxes",
        (json_int_t)mx_org_mailbox_count(org), "devices", (json_int_t)mx_org_device_count(org),
        "memory", (json_int_t)mx_org_memory(org), "calls", (json_int_t)mx_recorder_count(org));
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

static int c_state(struct mx_org *org, struct creq *c, const char *op, json_t **ret)
{
    const char *mbx = NULL, *dev = NULL;
    int rc;
    if (strcmp(op, "state_org") == 0)
        return mx_state_org(org, ret);
    if ((rc = c_need_str(c, "mailbox", &mbx)))
        return rc;
    if (strcmp(op, "state_mailbox") == 0)
        rc = mx_state_mailbox(org, mbx, ret);
    else if ((rc = c_need_str(c, "device_id", &dev)) == 0)
        rc = mx_state_device(org, mbx, dev, ret);
    else
        return rc;
    if (rc == EG_ENOTFOUND)
        return cfail(c, rc, "not found", dev ? dev : mbx);
    if (rc == EG_ECONFLICT)
        return cfail(c, rc, "ambiguous mailbox identity", mbx);
    return rc;
}

int mx_control(struct mx_org *org, const json_t *req, json_t **ret, char *err, size_t err_size)
{
    struct creq c = {.req = req, .err = err, .err_size = err_size};
    json_t *out = NULL;
    int rc = 0;
    if (err && err_size)
        err[0] = '\0';
    if (!org || !ret)
        return EG_EINVAL;
    if (!json_is_object(req))
        return cfail(&c, EG_EINVAL, "the request must be a JSON object", NULL);
    const char *op = NULL;
    if ((rc = c_need_str(&c, "op", &op)))
        return rc;
    if (strcmp(op, "sync") == 0) {
        rc = c_sync(org, &c, &out);
    } else if (strncmp(op, "state_", 6) == 0 &&
               (strcmp(op, "state_mailbox") == 0 || strcmp(op, "state_device") == 0 ||
                strcmp(op, "state_org") == 0)) {
        rc = c_state(org, &c, op, &out);
    } else if (strcmp(op, "add_mailbox") == 0) {
        rc = c_add_mailbox(org, &c);
    } else if (strcmp(op, "add_policy") == 0) {
        const char *name;
        if ((rc = c_need_str(&c, "name", &name)) == 0 &&
            (rc = mx_org_add_policy(org, name)) == EG_EINVAL)
            rc = cfail(&c, rc, "invalid policy name", NULL);
    } else if (strcmp(op, "behaviour") == 0) {
        rc = c_behaviour(org, &c, &out);
    } else if (strcmp(op, "clock") == 0) {
        int64_t now = -1, adv = -1;
        if ((rc = c_int(&c, "now_ms", 0, INT64_MAX, &now)) == 0 &&
            (rc = c_int(&c, "advance_ms", 0, INT64_MAX, &adv)) == 0) {
            if (now >= 0)
                mx_org_set_clock(org, now);
            if (adv >= 0)
                mx_org_advance_clock(org, adv);
            if (now < 0 && adv < 0)
                rc = cfail(&c, EG_EINVAL, "\"now_ms\" or \"advance_ms\" is required", NULL);
        }
    } else if (strcmp(op, "fault_latency") == 0 || strcmp(op, "fault_quota") == 0 ||
               strcmp(op, "fault_micro_delay") == 0) {
        rc = c_fault(org, &c, op);
        if (rc == EG_ELIMIT)
            rc = cfail(&c, rc, "too many fault keys", NULL);
    } else if (strcmp(op, "fault_write_scope") == 0) {
        const char *mbx;
        bool on = true;
        if ((rc = c_need_str(&c, "mailbox", &mbx)) == 0 && (rc = c_bool(&c, "on", &on)) == 0) {
            rc = mx_fault_write_scope(org, mbx, on);
            if (rc == EG_ENOTFOUND || rc == EG_ECONFLICT)
                rc = cfail(&c, rc, "no such (or ambiguous) mailbox", mbx);
        }
    } else if (strcmp(op, "fault_reset") == 0) {
        mx_fault_reset(org);
    } else if (strcmp(op, "rbac_hide_cmdlet") == 0 || strcmp(op, "rbac_hide_parameter") == 0 ||
               strcmp(op, "rbac_allow_only") == 0) {
        rc = c_rbac(org, &c, op);
    } else if (strcmp(op, "rbac_reset") == 0) {
        mx_rbac_reset(org);
    } else if (strcmp(op, "calls") == 0) {
        rc = mx_recorder_get(org, &out);
    } else if (strcmp(op, "calls_reset") == 0) {
        mx_recorder_reset(org);
    } else if (strcmp(op, "calls_limit") == 0) {
        int64_t lim = -1;
        if ((rc = c_int(&c, "limit", 0, INT32_MAX, &lim)) == 0) {
            if (lim < 0)
                rc = cfail(&c, EG_EINVAL, "\"limit\" is required", NULL);
            else
                mx_recorder_set_limit(org, (size_t)lim);
        }
    } else if (strcmp(op, "info") == 0) {
        rc = c_info(org, &out);
    } else {
        rc = cfail(&c, EG_EINVAL, "unknown op", op);
    }
    if (rc != 0) {
        json_decref(out);
        if (err && err_size && !err[0])
            snprintf(err, err_size, "%s", eg_strerror(rc));
        return rc;
    }
    if (!out && !(out = json_pack("{s:b}", "ok", 1)))
        return EG_ENOMEM;
    *ret = out;
    return 0;
}
