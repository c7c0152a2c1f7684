/* bridge_psrp.c - bridge operations as cmdlets over a runspace pool (contract: bridge_psrp.h). */
#include "exchange/bridge_psrp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/util.h"
#include "exchange/classify.h"
#include "exchange/clixml_json.h"
#include "exchange/list_plan.h"

struct psrp_backend {
    pthread_mutex_t lock; /* guards pool creation and version */
    struct eg_psrp_pool *pool;
    struct eg_psrp_pool_opts o;
    char *url, *configuration, *username, *password, *ca_file;
    enum eg_exchange_version configured, version;
};

/* ---- versions ------------------------------------------------------------------------------- */

int eg_exchange_version_parse(const char *s, enum eg_exchange_version *ret)
{
    if (!s)
        return EG_EINVAL;
    if (strcasecmp(s, "2010") == 0)
        *ret = EG_EXCHANGE_2010;
    else if (strcasecmp(s, "2013") == 0)
        *ret = EG_EXCHANGE_2013;
    else if (strcasecmp(s, "2016") == 0 || strcasecmp(s, "2019") == 0 || strcasecmp(s, "se") == 0)
        *ret = EG_EXCHANGE_2016;
    else
        return EG_EINVAL;
    return 0;
}

const char *eg_exchange_version_name(enum eg_exchange_version v)
{
    switch (v) {
    case EG_EXCHANGE_2010:
        return "2010";
    case EG_EXCHANGE_2013:
        return "2013";
    case EG_EXCHANGE_2016:
        return "2016";
    default:
        return "unknown";
    }
}

int eg_exchange_version_from_text(const char *text, enum eg_exchange_version *ret)
{
    const char *p = text;
    if (!p)
        return EG_EINVAL;
    while (*p && !(*p >= '0' && *p <= '9'))
        p++;
    char *end = NULL;
    long major = strtol(p, &end, 10);
    if (end == p)
        return EG_EINVAL;
    long minor = 0;
    if (*end == '.')
        minor = strtol(end + 1, NULL, 10);
    if (major == 14)
        *ret = EG_EXCHANGE_2010;
    else if (major == 15 && minor == 0)
        *ret = EG_EXCHANGE_2013;
    else if (major == 15 && minor >= 1)
        *ret = EG_EXCHANGE_2016;
    else
        return EG_EINVAL;
    return 0;
}

/* ---- running one cmdlet --------------------------------------------------------------------- */

/* Output collection for one cmdlet. */
struct collect {
    struct eg_ps_value **objs;
    size_t n;
    size_t max; /* keep at most this many objects (0 = none) */
    struct eg_ps_error_record *first_error;
    /* streaming mode */
    int (*each)(void *ctx, const struct eg_ps_value *v);
    void *each_ctx;
    int each_rc;
};

static int on_output(void *ctx, struct eg_ps_value *v)
{
    struct collect *c = ctx;
    if (c->each) {
        int rc = c->each(c->each_ctx, v);
        eg_ps_value_free(v);
        if (rc != 0) {
            c->each_rc = rc;
            return EG_ESHUTDOWN;
        }
        return 0;
    }
    if (c->n >= c->max) {
        eg_ps_value_free(v);
        return 0;
    }
    struct eg_ps_value **nv = eg_reallocarray(c->objs, c->n + 1, sizeof *nv);
    if (!nv) {
        eg_ps_value_free(v);
        return EG_ENOMEM;
    }
    c->objs = nv;
    c->objs[c->n++] = v;
    return 0;
}

static int copy_record(const struct eg_ps_error_record *er, struct eg_ps_error_record **ret)
{
    struct eg_ps_error_record *c = NULL;
    int rc = eg_ps_error_record_new(er->exception_type ? er->exception_type : "",
                                    er->message ? er->message : "", er->fqeid ? er->fqeid : "",
                                    er->category, &c);
    if (rc < 0)
        return rc;
    c->reason = er->reason ? eg_strdup(er->reason) : NULL;
    *ret = c;
    return 0;
}

static int on_error(void *ctx, const struct eg_ps_error_record *er)
{
    struct collect *c = ctx;
    if (!c->first_error && copy_record(er, &c->first_error) < 0)
        return EG_ENOMEM;
    return 0;
}

static void collect_clear(struct collect *c)
{
    for (size_t i = 0; i < c->n; i++)
        eg_ps_value_free(c->objs[i]);
    eg_free(c->objs);
    eg_ps_error_record_free(c->first_error);
    memset(c, 0, sizeof *c);
}

/* {"cmdlet": name, "parameters": {...}} of what is sent. */
static int record_action(json_t *actions, const struct eg_ps_command *cmd)
{
    json_t *params = json_object(), *a = NULL;
    if (!params)
        return EG_ENOMEM;
    for (size_t i = 0; i < cmd->n_params; i++) {
        const struct eg_ps_param *p = &cmd->params[i];
        json_t *v = NULL;
        if (p->kind == EG_PS_PARAM_SWITCH)
            v = json_true();
        else if (eg_clixml_to_json(p->value, &v) < 0)
            v = NULL;
        if (!v || json_object_set_new(params, p->name ? p->name : "(positional)", v) < 0) {
            json_decref(params);
            return EG_ENOMEM;
        }
    }
    a = json_pack("{s:s, s:o}", "cmdlet", cmd->name, "parameters", params);
    if (!a || !actions || json_array_append_new(actions, a) < 0)
        return EG_ENOMEM;
    return 0;
}

static int oom(struct eg_bridge_error *err)
{
    eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory in the PSRP bridge");
    return EG_ENOMEM;
}

/* Open the pool if needed (and detect the version). */
static int get_pool(struct psrp_backend *b, struct eg_psrp_pool **ret, struct eg_bridge_error *err);

/* Run one command (takes it over). Output collected in c (c->max objects kept or streamed).
 * A non-terminating error fails the call too: Exchange's device cmdlets report "not found" and
 * scope problems that way. */
static int run_on_pool(struct eg_psrp_pool *pool, struct eg_ps_command *cmd,
                       enum eg_classify_target target, json_t *actions, struct collect *c,
                       struct eg_bridge_error *err)
{
    struct eg_ps_pipeline *pl = NULL;
    struct eg_psrp_error perr;
    int rc;

    memset(&perr, 0, sizeof perr);
    if (actions && record_action(actions, cmd) < 0) {
        eg_ps_command_free(cmd);
        return oom(err);
    }
    if ((rc = eg_ps_pipeline_new(&pl)) < 0) {
        eg_ps_command_free(cmd);
        return oom(err);
    }
    if ((rc = eg_ps_pipeline_add(pl, cmd)) < 0) {
        eg_ps_pipeline_free(pl);
        return oom(err);
    }
    struct eg_psrp_run_ops ops = {.output = on_output, .error = on_error};
    rc = eg_psrp_pool_run(pool, pl, &ops, c, &perr);
    if (rc < 0) {
        if (c->each_rc) {
            rc = c->each_rc;
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "stopped by the caller");
        } else {
            eg_classify_psrp(&perr, target, err);
        }
        goto out;
    }
    if (c->first_error) {
        eg_classify_record(c->first_error, target, err);
        rc = EG_EREMOTE;
    }
out:
    eg_psrp_error_clear(&perr);
    eg_ps_pipeline_free(pl);
    return rc;
}

static int run(struct psrp_backend *b, struct eg_ps_command *cmd, enum eg_classify_target target,
               json_t *actions, struct collect *c, struct eg_bridge_error *err)
{
    struct eg_psrp_pool *pool = NULL;
    int rc = get_pool(b, &pool, err);
    if (rc < 0) {
        eg_ps_command_free(cmd);
        return rc;
    }
    return run_on_pool(pool, cmd, target, actions, c, err);
}

static int get_pool(struct psrp_backend *b, struct eg_psrp_pool **ret, struct eg_bridge_error *err)
{
    struct eg_psrp_error perr;
    int rc = 0;
    memset(&perr, 0, sizeof perr);
    pthread_mutex_lock(&b->lock);
    if (!b->pool) {
        rc = eg_psrp_pool_open(&b->o, &b->pool, &perr);
        if (rc < 0) {
            eg_classify_psrp(&perr, EG_TARGET_ORG, err);
            eg_psrp_error_clear(&perr);
            /* Not reaching Exchange is transient even when the cause looks permanent: the
             * configuration may be fixed meanwhile; attempts stay bounded by the worker. */
            if (strcmp(err->code, EG_BERR_PERMISSION_DENIED) != 0)
                err->transient = true;
            pthread_mutex_unlock(&b->lock);
            return rc;
        }
        b->version = b->configured;
    }
    *ret = b->pool;
    bool detect = b->version == EG_EXCHANGE_UNKNOWN;
    pthread_mutex_unlock(&b->lock);
    if (detect) {
        /* Get-ExchangeServer's AdminDisplayVersion; if the account may not run it, assume the
         * current cmdlet set (2016+), which 2013 shares except -AccountOnly. */
        struct collect c = {.max = 1};
        struct eg_ps_command *cmd = NULL;
        struct eg_bridge_error ignored;
        enum eg_exchange_version v = EG_EXCHANGE_2016;
        const char *text = NULL;
        size_t len = 0;
        if (eg_ps_command_new("Get-ExchangeServer", &cmd) < 0)
            return oom(err);
        if (run_on_pool(*ret, cmd, EG_TARGET_ORG, NULL, &c, &ignored) == 0 && c.n > 0 &&
            eg_ps_get_string(eg_ps_obj_prop(c.objs[0], "AdminDisplayVersion"), &text, &len) == 0 &&
            eg_exchange_version_from_text(text, &v) < 0)
            v = EG_EXCHANGE_2016;
        collect_clear(&c);
        pthread_mutex_lock(&b->lock);
        if (b->version == EG_EXCHANGE_UNKNOWN)
            b->version = v;
        pthread_mutex_unlock(&b->lock);
    }
    return rc;
}

static enum eg_exchange_version version_of(struct psrp_backend *b)
{
    pthread_mutex_lock(&b->lock);
    enum eg_exchange_version v = b->version;
    pthread_mutex_unlock(&b->lock);
    return v;
}

/* ---- helpers for building commands ---------------------------------------------------------- */

static struct eg_ps_command *new_cmd(const char *name)
{
    struct eg_ps_command *c = NULL;
    return eg_ps_command_new(name, &c) == 0 ? c : NULL;
}

/* Add a parameter; on failure free the command and return NULL (so calls chain). */
static struct eg_ps_command *with(struct eg_ps_command *c, const char *name, struct eg_ps_value *v)
{
    if (!c) {
        eg_ps_value_free(v);
        return NULL;
    }
    if (eg_ps_command_add_param(c, name, v) < 0) {
        eg_ps_command_free(c);
        return NULL;
    }
    return c;
}

static struct eg_ps_command *with_switch(struct eg_ps_command *c, const char *name)
{
    if (c && eg_ps_command_add_switch(c, name) < 0) {
        eg_ps_command_free(c);
        return NULL;
    }
    return c;
}

/* The current lists of a mailbox (Get-CASMailbox). */
static int read_lists(struct psrp_backend *b, const char *mailbox, json_t *actions,
                      struct eg_strv *allowed, struct eg_strv *blocked, struct eg_bridge_error *err)
{
    struct collect c = {.max = 2};
    struct eg_ps_command *cmd =
        with(new_cmd("Get-CASMailbox"), "Identity", eg_ps_new_string(mailbox));
    int rc;
    if (!cmd)
        return oom(err);
    if ((rc = run(b, cmd, EG_TARGET_MAILBOX, actions, &c, err)) < 0)
        goto out;
    if (c.n != 1) {
        eg_bridge_error_set(err, c.n ? EG_BERR_INVALID_ARGUMENT : EG_BERR_MAILBOX_NOT_FOUND, false,
                            c.n ? "the mailbox identity '%s' is ambiguous in Exchange"
                                : "Exchange returned no mailbox for '%s'",
                            mailbox);
        rc = EG_EREMOTE;
        goto out;
    }
    const char *names[2] = {"ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs"};
    struct eg_strv *dst[2] = {allowed, blocked};
    for (int k = 0; k < 2; k++) {
        const struct eg_ps_value *p = eg_ps_obj_prop(c.objs[0], names[k]);
        char **items = NULL;
        size_t n = 0;
        if (!p || p->kind == EG_PS_NIL)
            continue;
        if ((rc = eg_ps_get_string_array(p, &items, &n)) < 0) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "%s of '%s' is not a string list",
                                names[k], mailbox);
            goto out;
        }
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = eg_strv_push(dst[k], items[i]);
        eg_ps_string_array_free(items, n);
        if (rc < 0) {
            rc = oom(err);
            goto out;
        }
    }
out:
    collect_clear(&c);
    return rc;
}

/* ---- the operations ------------------------------------------------------------------------- */

static int ps_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                        struct eg_bridge_error *err)
{
    struct psrp_backend *b = impl;
    struct eg_strv allowed = {0}, blocked = {0};
    struct eg_list_plan *plan = NULL;
    int rc;

    if ((rc = read_lists(b, edit->mailbox, actions, &allowed, &blocked, err)) < 0)
        goto out;
    rc = eg_list_plan_compute(edit, (const char *const *)allowed.v, allowed.n,
                              (const char *const *)blocked.v, blocked.n, &plan);
    if (rc < 0) {
        rc = oom(err);
        goto out;
    }
    if (eg_list_plan_empty(plan))
        goto out;
    struct eg_ps_command *cmd =
        with(new_cmd("Set-CASMailbox"), "Identity", eg_ps_new_string(edit->mailbox));
    if (plan->allow_add.n || plan->allow_remove.n)
        cmd = with(cmd, "ActiveSyncAllowedDeviceIDs",
                   eg_ps_new_add_remove((const char *const *)plan->allow_add.v, plan->allow_add.n,
                                        (const char *const *)plan->allow_remove.v,
                                        plan->allow_remove.n));
    if (plan->block_add.n || plan->block_remove.n)
        cmd = with(cmd, "ActiveSyncBlockedDeviceIDs",
                   eg_ps_new_add_remove((const char *const *)plan->block_add.v, plan->block_add.n,
                                        (const char *const *)plan->block_remove.v,
                                        plan->block_remove.n));
    if (!cmd) {
        rc = oom(err);
        goto out;
    }
    struct collect c = {.max = 0};
    rc = run(b, cmd, EG_TARGET_MAILBOX, actions, &c, err);
    collect_clear(&c);
out:
    eg_list_plan_free(plan);
    eg_strv_clear(&allowed);
    eg_strv_clear(&blocked);
    return rc;
}

static const char *device_cmdlet(enum eg_exchange_version v, const char *verb)
{
    static const char *const names[][2] = {
        {"Get-MobileDevice", "Get-ActiveSyncDevice"},
        {"Clear-MobileDevice", "Clear-ActiveSyncDevice"},
        {"Remove-MobileDevice", "Remove-ActiveSyncDevice"},
    };
    int row = strcmp(verb, "Get") == 0 ? 0 : strcmp(verb, "Clear") == 0 ? 1 : 2;
    return names[row][v == EG_EXCHANGE_2010 ? 1 : 0];
}

/* Find the device's Exchange Identity among the mailbox's partnerships. *ret is a new string. */
static int resolve_device(struct psrp_backend *b, const char *mailbox, const char *device_id,
                          json_t *actions, char **ret, struct eg_bridge_error *err)
{
    struct collect c = {.max = 1000};
    struct eg_ps_command *cmd =
        with(new_cmd(device_cmdlet(version_of(b), "Get")), "Mailbox", eg_ps_new_string(mailbox));
    int rc;
    if (!cmd)
        return oom(err);
    if ((rc = run(b, cmd, EG_TARGET_MAILBOX, actions, &c, err)) < 0)
        goto out;
    rc = EG_ENOTFOUND;
    for (size_t i = 0; i < c.n; i++) {
        const char *id = NULL, *identity = NULL;
        size_t len = 0;
        if (eg_ps_get_string(eg_ps_obj_prop(c.objs[i], "DeviceId"), &id, &len) < 0 ||
            strcasecmp(id, device_id) != 0)
            continue;
        if (eg_ps_get_string(eg_ps_obj_prop(c.objs[i], "Identity"), &identity, &len) < 0)
            continue;
        *ret = eg_strdup(identity);
        rc = *ret ? 0 : oom(err);
        goto out;
    }
    eg_bridge_error_set(err, EG_BERR_DEVICE_NOT_FOUND, false,
                        "mailbox '%s' has no ActiveSync partnership with device '%s'", mailbox,
                        device_id);
    rc = EG_EREMOTE;
out:
    collect_clear(&c);
    return rc;
}

static int ps_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                   const char *const *notify, size_t n_notify, json_t *actions,
                   struct eg_bridge_error *err)
{
    struct psrp_backend *b = impl;
    struct eg_psrp_pool *pool = NULL;
    char *identity = NULL;
    int rc;

    if ((rc = get_pool(b, &pool, err)) < 0)
        return rc;
    enum eg_exchange_version v = version_of(b);
    if (account_only && v != EG_EXCHANGE_2016) {
        eg_bridge_error_set(err, EG_BERR_UNSUPPORTED, false,
                            "an account-only wipe needs Exchange 2016 or later (this is %s); "
                            "nothing was sent",
                            eg_exchange_version_name(v));
        return EG_EUNSUPPORTED;
    }
    if ((rc = resolve_device(b, mailbox, device_id, actions, &identity, err)) < 0)
        return rc;
    struct eg_ps_command *cmd =
        with(new_cmd(device_cmdlet(v, "Clear")), "Identity", eg_ps_new_string(identity));
    if (account_only)
        cmd = with_switch(cmd, "AccountOnly");
    if (n_notify)
        cmd = with(cmd, "NotificationEmailAddresses", eg_ps_new_string_array(notify, n_notify));
    cmd = with(cmd, "Confirm", eg_ps_new_bool(false));
    eg_free(identity);
    if (!cmd)
        return oom(err);
    struct collect c = {.max = 0};
    rc = run(b, cmd, EG_TARGET_DEVICE, actions, &c, err);
    collect_clear(&c);
    return rc;
}

static int device_op(struct psrp_backend *b, const char *mailbox, const char *device_id,
                     bool cancel, json_t *actions, struct eg_bridge_error *err)
{
    struct eg_psrp_pool *pool = NULL;
    char *identity = NULL;
    int rc;
    if ((rc = get_pool(b, &pool, err)) < 0)
        return rc;
    if ((rc = resolve_device(b, mailbox, device_id, actions, &identity, err)) < 0)
        return rc;
    struct eg_ps_command *cmd =
        with(new_cmd(device_cmdlet(version_of(b), cancel ? "Clear" : "Remove")), "Identity",
             eg_ps_new_string(identity));
    if (cancel)
        cmd = with_switch(cmd, "Cancel");
    cmd = with(cmd, "Confirm", eg_ps_new_bool(false));
    eg_free(identity);
    if (!cmd)
        return oom(err);
    struct collect c = {.max = 0};
    rc = run(b, cmd, EG_TARGET_DEVICE, actions, &c, err);
    collect_clear(&c);
    return rc;
}

static int ps_wipe_cancel(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                          struct eg_bridge_error *err)
{
    return device_op(impl, mailbox, device_id, true, actions, err);
}

static int ps_remove_device(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                            struct eg_bridge_error *err)
{
    return device_op(impl, mailbox, device_id, false, actions, err);
}

static int ps_set_mailbox(void *impl, const char *mailbox, int activesync_enabled, bool set_policy,
                          const char *policy, json_t *actions, struct eg_bridge_error *err)
{
    struct psrp_backend *b = impl;
    struct eg_ps_command *cmd =
        with(new_cmd("Set-CASMailbox"), "Identity", eg_ps_new_string(mailbox));
    if (activesync_enabled >= 0)
        cmd = with(cmd, "ActiveSyncEnabled", eg_ps_new_bool(activesync_enabled > 0));
    if (set_policy)
        cmd = with(cmd, "ActiveSyncMailboxPolicy",
                   policy ? eg_ps_new_string(policy) : eg_ps_new_nil());
    if (!cmd)
        return oom(err);
    struct collect c = {.max = 0};
    int rc = run(b, cmd, EG_TARGET_MAILBOX, actions, &c, err);
    collect_clear(&c);
    return rc;
}

static int ps_set_org_default_access(void *impl, enum eg_access_level level, json_t *actions,
                                     struct eg_bridge_error *err)
{
    struct psrp_backend *b = impl;
    const char *name = level == EG_ACCESS_BLOCK        ? "Block"
                       : level == EG_ACCESS_QUARANTINE ? "Quarantine"
                                                       : "Allow";
    struct eg_ps_command *cmd = with(new_cmd("Set-ActiveSyncOrganizationSettings"),
                                     "DefaultAccessLevel", eg_ps_new_string(name));
    if (!cmd)
        return oom(err);
    struct collect c = {.max = 0};
    int rc = run(b, cmd, EG_TARGET_ORG, actions, &c, err);
    collect_clear(&c);
    return rc;
}

/* ---- inventory: one streamed Get-MobileDevice ----------------------------------------------- */

struct inv {
    eg_device_cb cb;
    void *cb_ctx;
};

static const char *str_prop(const struct eg_ps_value *o, const char *name)
{
    const char *s = NULL;
    size_t len = 0;
    return eg_ps_get_string(eg_ps_obj_prop(o, name), &s, &len) == 0 ? s : NULL;
}

static int64_t time_prop(const struct eg_ps_value *o, const char *name)
{
    int64_t ms = 0;
    return eg_ps_get_datetime(eg_ps_obj_prop(o, name), &ms) == 0 ? ms : 0;
}

static int each_device(void *ctx, const struct eg_ps_value *o)
{
    struct inv *iv = ctx;
    struct eg_device_record d = {
        .mailbox = str_prop(o, "UserPrincipalName") ? str_prop(o, "UserPrincipalName")
                                                    : str_prop(o, "UserDisplayName"),
        .device_id = str_prop(o, "DeviceId"),
        .identity = str_prop(o, "Identity"),
        .device_type = str_prop(o, "DeviceType"),
        .model = str_prop(o, "DeviceModel"),
        .os = str_prop(o, "DeviceOS"),
        .user_agent = str_prop(o, "DeviceUserAgent"),
        .access_state = str_prop(o, "DeviceAccessState"),
        .access_reason = str_prop(o, "DeviceAccessStateReason"),
        .wipe_status = str_prop(o, "Status"),
        .first_sync_ms = time_prop(o, "FirstSyncTime"),
        .last_success_sync_ms = time_prop(o, "LastSuccessSync"),
    };
    if (!d.device_id)
        return 0; /* not a device object */
    return iv->cb(iv->cb_ctx, &d);
}

static int ps_inventory_page(void *impl, const struct eg_inventory_query *q, const char *cursor,
                             eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                             struct eg_bridge_error *err)
{
    struct psrp_backend *b = impl;
    struct eg_psrp_pool *pool = NULL;
    struct inv iv = {.cb = cb, .cb_ctx = cb_ctx};
    int rc;
    if (cursor) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                            "the PSRP inventory is one streamed page; no cursor");
        return EG_EINVAL;
    }
    if ((rc = get_pool(b, &pool, err)) < 0)
        return rc;
    struct eg_ps_command *cmd = new_cmd(device_cmdlet(version_of(b), "Get"));
    if (q && q->mailbox)
        cmd = with(cmd, "Mailbox", eg_ps_new_string(q->mailbox));
    cmd = with(cmd, "ResultSize", eg_ps_new_string("Unlimited"));
    if (!cmd)
        return oom(err);
    struct collect c = {.each = each_device, .each_ctx = &iv};
    rc = run(b, cmd, EG_TARGET_MAILBOX, NULL, &c, err);
    collect_clear(&c);
    if (rc == 0)
        *ret_next_cursor = NULL;
    return rc;
}

/* ---- construction --------------------------------------------------------------------------- */

static void ps_destroy(void *impl)
{
    struct psrp_backend *b = impl;
    if (!b)
        return;
    eg_psrp_pool_close(b->pool);
    if (b->password) {
        eg_memzero(b->password, strlen(b->password));
        eg_free(b->password);
    }
    eg_free(b->url);
    eg_free(b->configuration);
    eg_free(b->username);
    eg_free(b->ca_file);
    pthread_mutex_destroy(&b->lock);
    eg_free(b);
}

static const struct eg_bridge_ops psrp_ops = {
    .name = "psrp",
    .list_edit = ps_list_edit,
    .wipe = ps_wipe,
    .wipe_cancel = ps_wipe_cancel,
    .remove_device = ps_remove_device,
    .set_mailbox = ps_set_mailbox,
    .set_org_default_access = ps_set_org_default_access,
    .inventory_page = ps_inventory_page,
    .destroy = ps_destroy,
};

static bool dup_opt(const char *s, char **dst)
{
    if (!s)
        return true;
    *dst = eg_strdup(s);
    return *dst != NULL;
}

int eg_bridge_psrp_new(const struct eg_bridge_psrp_opts *o, struct eg_bridge **ret)
{
    struct psrp_backend *b = NULL;
    struct eg_bridge *br = NULL;
    if (!o || !ret || !o->pool.url)
        return EG_EINVAL;
    b = eg_calloc(1, sizeof *b);
    br = eg_calloc(1, sizeof *br);
    if (!b || !br) {
        eg_free(b);
        eg_free(br);
        return EG_ENOMEM;
    }
    pthread_mutex_init(&b->lock, NULL);
    b->o = o->pool;
    if (!dup_opt(o->pool.url, &b->url) || !dup_opt(o->pool.configuration, &b->configuration) ||
        !dup_opt(o->pool.username, &b->username) || !dup_opt(o->pool.password, &b->password) ||
        !dup_opt(o->pool.ca_file, &b->ca_file)) {
        ps_destroy(b);
        eg_free(br);
        return EG_ENOMEM;
    }
    b->o.url = b->url;
    b->o.configuration = b->configuration;
    b->o.username = b->username;
    b->o.password = b->password;
    b->o.ca_file = b->ca_file;
    b->configured = o->version;
    br->ops = &psrp_ops;
    br->impl = b;
    *ret = br;
    return 0;
}

enum eg_exchange_version eg_bridge_psrp_version(struct eg_bridge *b)
{
    if (!b || b->ops != &psrp_ops)
        return EG_EXCHANGE_UNKNOWN;
    return version_of(b->impl);
}
