/* catalogue.c - bridge operations as cmdlets for any runner (contract: catalogue.h). */
#include "exchange/catalogue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "exchange/clixml_json.h"
#include "exchange/gate.h"
#include "exchange/list_plan.h"
#include "exchange/psrp_pool.h"

#define DEFAULT_RECOVER_AFTER 10
#define DEFAULT_GATE_WAIT_MS  300000
#define MAX_PARTNERSHIPS      10000 /* devices of one mailbox looked at when resolving one */

struct catalogue {
    struct eg_bridge_ops ops; /* the bridge's ops (name from the runner) */
    const struct eg_catalogue_runner_ops *rops;
    void *runner;
    struct eg_gate *gate;
    int64_t gate_wait_ms;
    bool online;
    pthread_mutex_t lock; /* guards version */
    enum eg_exchange_version configured, version;
};

/* ---- versions ------------------------------------------------------------------------------- */

int eg_exchange_version_parse(const char *s, enum eg_exchange_version *ret)
{
    if (!s || !ret)
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
    case EG_EXCHANGE_ONLINE:
        return "online";
    default:
        return "unknown";
    }
}

int eg_exchange_version_from_text(const char *text, enum eg_exchange_version *ret)
{
    const char *p = text;
    if (!p || !ret)
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

/* ---- running one command through the gate --------------------------------------------------- */

static int oom(struct eg_bridge_error *err)
{
    eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory in the Exchange bridge");
    return EG_ENOMEM;
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
    if (!a || json_array_append_new(actions, a) < 0)
        return EG_ENOMEM;
    return 0;
}

static enum eg_gate_outcome outcome_of(int rc, const struct eg_bridge_error *err)
{
    if (rc >= 0 || !err)
        return EG_GATE_OK;
    if (eg_classify_is_load(err))
        return EG_GATE_THROTTLED;
    if (strcmp(err->code, EG_BERR_UNREACHABLE) == 0 || strcmp(err->code, EG_BERR_TIMEOUT) == 0 ||
        strcmp(err->code, EG_BERR_INTERNAL) == 0)
        return EG_GATE_ERROR;
    return EG_GATE_OK; /* Exchange answered: not found, permission, unsupported, ... */
}

/* Run one command (taken over). actions (may be NULL) gets it first. */
static int run(struct catalogue *c, struct eg_ps_command *cmd, enum eg_classify_target target,
               json_t *actions, eg_catalogue_output_fn out, void *out_ctx,
               struct eg_bridge_error *err)
{
    struct eg_bridge_error scratch;
    if (!err)
        err = &scratch;
    if (!cmd)
        return oom(err);
    if (actions && record_action(actions, cmd) < 0) {
        eg_ps_command_free(cmd);
        return oom(err);
    }
    if (eg_gate_enter(c->gate, c->gate_wait_ms) < 0) {
        eg_bridge_error_set(err, EG_BERR_THROTTLED, true,
                            "all %u Exchange call slots stayed busy for %lld ms",
                            eg_gate_limit(c->gate), (long long)c->gate_wait_ms);
        eg_ps_command_free(cmd);
        return EG_EAGAIN;
    }
    memset(err, 0, sizeof *err);
    int rc = c->rops->run(c->runner, cmd, target, out, out_ctx, err);
    eg_gate_leave(c->gate, outcome_of(rc, err));
    return rc;
}

/* Keep up to max output objects. */
struct collect {
    struct eg_ps_value **objs;
    size_t n, max;
};

static int collect_out(void *ctx, struct eg_ps_value *v)
{
    struct collect *k = ctx;
    if (k->n >= k->max) {
        eg_ps_value_free(v);
        return 0;
    }
    struct eg_ps_value **nv = eg_reallocarray(k->objs, k->n + 1, sizeof *nv);
    if (!nv) {
        eg_ps_value_free(v);
        return EG_ENOMEM;
    }
    k->objs = nv;
    k->objs[k->n++] = v;
    return 0;
}

static void collect_clear(struct collect *k)
{
    for (size_t i = 0; i < k->n; i++)
        eg_ps_value_free(k->objs[i]);
    eg_free(k->objs);
    memset(k, 0, sizeof *k);
}

static const char *str_prop(const struct eg_ps_value *o, const char *name)
{
    const char *s = NULL;
    size_t len = 0;
    return eg_ps_get_string(eg_ps_obj_prop(o, name), &s, &len) == 0 ? s : NULL;
}

/* A DateTime property; Exchange Online's JSON without a type annotation brings it as an ISO
 * 8601 string, which is parsed the way a CLIXML <DT> is. 0 when absent or unreadable. */
static int64_t time_prop(const struct eg_ps_value *o, const char *name)
{
    const struct eg_ps_value *p = eg_ps_obj_prop(o, name);
    int64_t ms = 0;
    if (eg_ps_get_datetime(p, &ms) == 0)
        return ms;
    const char *s = NULL;
    size_t len = 0;
    struct eg_ps_value *dt = NULL;
    if (eg_ps_get_string(p, &s, &len) == 0 && len && eg_ps_new_text(EG_PS_DT, s, len, &dt) == 0) {
        if (eg_ps_get_datetime(dt, &ms) < 0)
            ms = 0;
        eg_ps_value_free(dt);
        return ms;
    }
    return 0;
}

/* ---- the version ---------------------------------------------------------------------------- */

static enum eg_exchange_version version_now(struct catalogue *c)
{
    pthread_mutex_lock(&c->lock);
    enum eg_exchange_version v = c->configured ? c->configured : c->version;
    pthread_mutex_unlock(&c->lock);
    return v;
}

/* The version, detected when not known yet. */
static int get_version(struct catalogue *c, enum eg_exchange_version *ret,
                       struct eg_bridge_error *err)
{
    struct eg_bridge_error scratch;
    if (!err)
        err = &scratch;
    enum eg_exchange_version v = version_now(c);
    if (v != EG_EXCHANGE_UNKNOWN) {
        *ret = v;
        return 0;
    }
    /* Get-ExchangeServer's AdminDisplayVersion; if the account may not run it, assume the
     * current cmdlet set (2016+), which 2013 shares except -AccountOnly. A transport failure is
     * returned instead of guessed around. */
    struct collect k = {.max = 1};
    struct eg_ps_command *cmd = NULL;
    if (eg_ps_command_new("Get-ExchangeServer", &cmd) < 0)
        return oom(err);
    int rc = run(c, cmd, EG_TARGET_ORG, NULL, collect_out, &k, err);
    v = EG_EXCHANGE_2016;
    if (rc == 0 && k.n > 0) {
        const char *text = str_prop(k.objs[0], "AdminDisplayVersion");
        if (!text || eg_exchange_version_from_text(text, &v) < 0)
            v = EG_EXCHANGE_2016;
    }
    collect_clear(&k);
    if (rc < 0 &&
        (rc == EG_ENOMEM || strcmp(err->code, EG_BERR_UNREACHABLE) == 0 ||
         strcmp(err->code, EG_BERR_TIMEOUT) == 0 || strcmp(err->code, EG_BERR_THROTTLED) == 0 ||
         (strcmp(err->code, EG_BERR_INTERNAL) == 0 && err->transient)))
        return rc;
    pthread_mutex_lock(&c->lock);
    if (c->version == EG_EXCHANGE_UNKNOWN)
        c->version = v;
    v = c->version;
    pthread_mutex_unlock(&c->lock);
    *ret = v;
    return 0;
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

/* ---- list edits ----------------------------------------------------------------------------- */

/* The current lists of a mailbox (Get-CASMailbox). */
static int read_lists(struct catalogue *c, const char *mailbox, json_t *actions,
                      struct eg_strv *allowed, struct eg_strv *blocked, struct eg_bridge_error *err)
{
    struct collect k = {.max = 2};
    int rc = run(c, with(new_cmd("Get-CASMailbox"), "Identity", eg_ps_new_string(mailbox)),
                 EG_TARGET_MAILBOX, actions, collect_out, &k, err);
    if (rc < 0)
        goto out;
    if (k.n != 1) {
        eg_bridge_error_set(err, k.n ? EG_BERR_INVALID_ARGUMENT : EG_BERR_MAILBOX_NOT_FOUND, false,
                            k.n ? "the mailbox identity '%s' is ambiguous in Exchange"
                                : "Exchange returned no mailbox for '%s'",
                            mailbox);
        rc = EG_EREMOTE;
        goto out;
    }
    const char *names[2] = {"ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs"};
    struct eg_strv *dst[2] = {allowed, blocked};
    for (int i = 0; i < 2; i++) {
        const struct eg_ps_value *p = eg_ps_obj_prop(k.objs[0], names[i]);
        char **items = NULL;
        size_t n = 0;
        if (!p || p->kind == EG_PS_NIL)
            continue;
        if ((rc = eg_ps_get_string_array(p, &items, &n)) < 0) {
            if (rc == EG_ENOMEM) {
                rc = oom(err);
                goto out;
            }
            eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "%s of '%s' is not a string list",
                                names[i], mailbox);
            rc = EG_EPROTO;
            goto out;
        }
        for (size_t j = 0; j < n && rc == 0; j++)
            rc = eg_strv_push(dst[i], items[j]);
        eg_ps_string_array_free(items, n);
        if (rc < 0) {
            rc = oom(err);
            goto out;
        }
    }
out:
    collect_clear(&k);
    return rc;
}

static int cat_list_edit(void *impl, const struct eg_list_edit *edit, json_t *actions,
                         struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    struct eg_strv allowed = {0}, blocked = {0};
    struct eg_list_plan *plan = NULL;
    int rc;

    if (!edit || !edit->mailbox || !*edit->mailbox) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "a list edit needs a mailbox");
        return EG_EINVAL;
    }
    if ((rc = read_lists(c, edit->mailbox, actions, &allowed, &blocked, err)) < 0)
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
    rc = run(c, cmd, EG_TARGET_MAILBOX, actions, NULL, NULL, err);
out:
    eg_list_plan_free(plan);
    eg_strv_clear(&allowed);
    eg_strv_clear(&blocked);
    return rc;
}

/* ---- devices -------------------------------------------------------------------------------- */

struct find_device {
    const char *device_id;
    char *identity;
    size_t seen;
    bool nomem;
};

static int find_device_out(void *ctx, struct eg_ps_value *v)
{
    struct find_device *f = ctx;
    const char *id = str_prop(v, "DeviceId"), *identity = str_prop(v, "Identity");
    int rc = 0;
    if (++f->seen > MAX_PARTNERSHIPS)
        rc = EG_ELIMIT;
    else if (!f->identity && id && identity && strcasecmp(id, f->device_id) == 0 &&
             !(f->identity = eg_strdup(identity)))
        rc = EG_ENOMEM;
    eg_ps_value_free(v);
    return rc;
}

/* Find the device's Exchange Identity among the mailbox's partnerships (never construct one).
 * *ret is a new string. */
static int resolve_device(struct catalogue *c, enum eg_exchange_version v, const char *mailbox,
                          const char *device_id, json_t *actions, char **ret,
                          struct eg_bridge_error *err)
{
    struct find_device f = {.device_id = device_id};
    int rc = run(c, with(new_cmd(device_cmdlet(v, "Get")), "Mailbox", eg_ps_new_string(mailbox)),
                 EG_TARGET_MAILBOX, actions, find_device_out, &f, err);
    if (rc == EG_ENOMEM)
        rc = oom(err);
    else if (rc == EG_ELIMIT)
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                            "mailbox '%s' has more than %d partnerships", mailbox,
                            MAX_PARTNERSHIPS);
    if (rc != 0) {
        eg_free(f.identity);
        return rc < 0 ? rc : EG_EINTERNAL;
    }
    if (!f.identity) {
        eg_bridge_error_set(err, EG_BERR_DEVICE_NOT_FOUND, false,
                            "mailbox '%s' has no ActiveSync partnership with device '%s'", mailbox,
                            device_id);
        return EG_EREMOTE;
    }
    *ret = f.identity;
    return 0;
}

static bool device_args_ok(const char *mailbox, const char *device_id, struct eg_bridge_error *err)
{
    if (mailbox && *mailbox && device_id && *device_id)
        return true;
    eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                        "a device operation needs a mailbox and a device id");
    return false;
}

static int cat_wipe(void *impl, const char *mailbox, const char *device_id, bool account_only,
                    const char *const *notify, size_t n_notify, json_t *actions,
                    struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    enum eg_exchange_version v = EG_EXCHANGE_UNKNOWN;
    char *identity = NULL;
    int rc;

    if (!device_args_ok(mailbox, device_id, err))
        return EG_EINVAL;
    if ((rc = get_version(c, &v, err)) < 0)
        return rc;
    if (account_only && v != EG_EXCHANGE_2016 && v != EG_EXCHANGE_ONLINE) {
        eg_bridge_error_set(err, EG_BERR_UNSUPPORTED, false,
                            "an account-only wipe needs Exchange 2016 or later (this is %s); "
                            "nothing was sent",
                            eg_exchange_version_name(v));
        return EG_EUNSUPPORTED;
    }
    if ((rc = resolve_device(c, v, mailbox, device_id, actions, &identity, err)) < 0)
        return rc;
    struct eg_ps_command *cmd =
        with(new_cmd(device_cmdlet(v, "Clear")), "Identity", eg_ps_new_string(identity));
    if (account_only)
        cmd = with_switch(cmd, "AccountOnly");
    if (n_notify)
        cmd = with(cmd, "NotificationEmailAddresses", eg_ps_new_string_array(notify, n_notify));
    cmd = with(cmd, "Confirm", eg_ps_new_bool(false));
    eg_free(identity);
    return run(c, cmd, EG_TARGET_DEVICE, actions, NULL, NULL, err);
}

static int device_op(struct catalogue *c, const char *mailbox, const char *device_id, bool cancel,
                     json_t *actions, struct eg_bridge_error *err)
{
    enum eg_exchange_version v = EG_EXCHANGE_UNKNOWN;
    char *identity = NULL;
    int rc;
    if (!device_args_ok(mailbox, device_id, err))
        return EG_EINVAL;
    if ((rc = get_version(c, &v, err)) < 0)
        return rc;
    if ((rc = resolve_device(c, v, mailbox, device_id, actions, &identity, err)) < 0)
        return rc;
    struct eg_ps_command *cmd = with(new_cmd(device_cmdlet(v, cancel ? "Clear" : "Remove")),
                                     "Identity", eg_ps_new_string(identity));
    if (cancel)
        cmd = with_switch(cmd, "Cancel");
    cmd = with(cmd, "Confirm", eg_ps_new_bool(false));
    eg_free(identity);
    return run(c, cmd, EG_TARGET_DEVICE, actions, NULL, NULL, err);
}

static int cat_wipe_cancel(void *impl, const char *mailbox, const char *device_id, json_t *actions,
                           struct eg_bridge_error *err)
{
    return device_op(impl, mailbox, device_id, true, actions, err);
}

static int cat_remove_device(void *impl, const char *mailbox, const char *device_id,
                             json_t *actions, struct eg_bridge_error *err)
{
    return device_op(impl, mailbox, device_id, false, actions, err);
}

/* ---- mailbox and org settings --------------------------------------------------------------- */

/* True when Exchange's message quotes name ('<name>'), the object it could not find. */
static bool policy_named(const char *message, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = message; (p = strchr(p, '\'')) != NULL; p++)
        if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '\'')
            return true;
    return false;
}

static int cat_set_mailbox(void *impl, const char *mailbox, int activesync_enabled, bool set_policy,
                           const char *policy, json_t *actions, struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    if (!mailbox || !*mailbox) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "set_mailbox needs a mailbox");
        return EG_EINVAL;
    }
    struct eg_ps_command *cmd =
        with(new_cmd("Set-CASMailbox"), "Identity", eg_ps_new_string(mailbox));
    if (activesync_enabled >= 0)
        cmd = with(cmd, "ActiveSyncEnabled", eg_ps_new_bool(activesync_enabled > 0));
    if (set_policy)
        cmd = with(cmd, "ActiveSyncMailboxPolicy",
                   policy ? eg_ps_new_string(policy) : eg_ps_new_nil());
    int rc = run(c, cmd, EG_TARGET_MAILBOX, actions, NULL, NULL, err);
    /* "object '<name>' couldn't be found" about the policy, not the mailbox: a bad argument. */
    if (rc < 0 && policy && strcmp(err->code, EG_BERR_MAILBOX_NOT_FOUND) == 0 &&
        policy_named(err->exchange_message, policy) &&
        !policy_named(err->exchange_message, mailbox)) {
        /* keep Exchange's exception type and message */
        snprintf(err->code, sizeof err->code, "%s", EG_BERR_INVALID_ARGUMENT);
        err->transient = false;
        snprintf(err->message, sizeof err->message,
                 "Exchange has no mobile device mailbox policy '%s'", policy);
    }
    return rc;
}

static int cat_set_org_default_access(void *impl, enum eg_access_level level, json_t *actions,
                                      struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    const char *name = level == EG_ACCESS_BLOCK        ? "Block"
                       : level == EG_ACCESS_QUARANTINE ? "Quarantine"
                       : level == EG_ACCESS_ALLOW      ? "Allow"
                                                       : NULL;
    if (!name) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "unknown access level %d",
                            (int)level);
        return EG_EINVAL;
    }
    return run(c,
               with(new_cmd("Set-ActiveSyncOrganizationSettings"), "DefaultAccessLevel",
                    eg_ps_new_string(name)),
               EG_TARGET_ORG, actions, NULL, NULL, err);
}

/* ---- inventory: one streamed Get-MobileDevice ----------------------------------------------- */

struct inv {
    eg_device_cb cb;
    void *cb_ctx;
    bool nomem;
};

/* The mailbox part of a partnership's Identity: on-prem "<mailbox>/ExchangeActiveSyncDevices/
 * <Name>", Online "<mailbox>\ExchangeActiveSyncDevices\<Name>". The device Name (<type>§<id>)
 * is cut from the end when it is known, so that a DeviceId containing the separator does not
 * confuse it; otherwise the first separator counts. A new string, or NULL (no such shape, or no
 * memory: *nomem). */
static char *mailbox_of_identity(const char *identity, const char *name, bool *nomem)
{
    static const char seg[] = "ExchangeActiveSyncDevices";
    const size_t sl = sizeof seg - 1;
    size_t len = identity ? strlen(identity) : 0, cut = 0;
    bool found = false;
    if (!identity)
        return NULL;
    if (name) {
        size_t nl = strlen(name);
        if (len > nl + sl + 2) {
            size_t at = len - nl; /* identity[at - 1] is the separator before Name */
            char sep = identity[at - 1];
            if ((sep == '/' || sep == '\\') && strcmp(identity + at, name) == 0 &&
                strncasecmp(identity + at - 1 - sl, seg, sl) == 0 && identity[at - 2 - sl] == sep) {
                cut = at - 2 - sl;
                found = true;
            }
        }
    }
    for (size_t i = 1; !found && i + sl + 1 < len; i++) {
        char sep = identity[i - 1];
        if ((sep == '/' || sep == '\\') && strncasecmp(identity + i, seg, sl) == 0 &&
            identity[i + sl] == sep) {
            cut = i - 1;
            found = true;
        }
    }
    if (!found || cut == 0)
        return NULL;
    char *m = eg_strndup(identity, cut);
    if (!m)
        *nomem = true;
    return m;
}

/* One Get-MobileDevice / Get-MobileDeviceStatistics object as a record (stats spell DeviceID). */
static int each_device(void *ctx, struct eg_ps_value *o)
{
    struct inv *iv = ctx;
    const char *identity = str_prop(o, "Identity");
    char *mbx = mailbox_of_identity(identity, str_prop(o, "Name"), &iv->nomem);
    struct eg_device_record d = {
        .mailbox = str_prop(o, "UserPrincipalName") ? str_prop(o, "UserPrincipalName")
                                                    : str_prop(o, "UserDisplayName"),
        .device_id = str_prop(o, "DeviceId") ? str_prop(o, "DeviceId") : str_prop(o, "DeviceID"),
        .identity = identity,
        .device_type = str_prop(o, "DeviceType"),
        .model = str_prop(o, "DeviceModel"),
        .os = str_prop(o, "DeviceOS"),
        .user_agent = str_prop(o, "DeviceUserAgent"),
        .access_state = str_prop(o, "DeviceAccessState"),
        .access_reason = str_prop(o, "DeviceAccessStateReason"),
        .wipe_status = str_prop(o, "Status"),
        .first_sync_ms = time_prop(o, "FirstSyncTime"),
        .last_success_sync_ms = time_prop(o, "LastSuccessSync"),
        .mailbox_identity = mbx,
        .when_changed_ms = time_prop(o, "WhenChanged"),
        .wipe_request_ms = time_prop(o, "DeviceWipeRequestTime"),
        .wipe_sent_ms = time_prop(o, "DeviceWipeSentTime"),
        .wipe_ack_ms = time_prop(o, "DeviceWipeAckTime"),
    };
    if (!d.mailbox)
        d.mailbox = mbx;
    int rc = 0;
    if (iv->nomem)
        rc = EG_ENOMEM;
    else if (d.device_id) /* else not a device object */
        rc = iv->cb(iv->cb_ctx, &d);
    eg_free(mbx);
    eg_ps_value_free(o);
    return rc;
}

/* "<Property> -gt '<UTC time, whole seconds>'": a constant OPath template with a formatted date,
 * never anything from the console. ISO 8601 with Z reads the same in every server culture. */
static struct eg_ps_value *since_filter(const char *prefix, int64_t since_ms)
{
    char ts[40], f[128];
    time_t t = (time_t)(since_ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return NULL;
    snprintf(f, sizeof f, "%sWhenChanged -gt '%s'", prefix, ts);
    return eg_ps_new_string(f);
}

static int cat_inventory_page(void *impl, const struct eg_inventory_query *q, const char *cursor,
                              eg_device_cb cb, void *cb_ctx, char **ret_next_cursor,
                              struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    struct inv iv = {.cb = cb, .cb_ctx = cb_ctx};
    enum eg_exchange_version v = EG_EXCHANGE_UNKNOWN;
    int rc;
    if (!cb || !ret_next_cursor) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "inventory without a callback");
        return EG_EINVAL;
    }
    if (cursor) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                            "the Exchange inventory is one streamed page; no cursor");
        return EG_EINVAL;
    }
    if ((rc = get_version(c, &v, err)) < 0)
        return rc;
    struct eg_ps_command *cmd = new_cmd(device_cmdlet(v, "Get"));
    if (q && q->mailbox)
        cmd = with(cmd, "Mailbox", eg_ps_new_string(q->mailbox));
    if (q && q->since_ms > 0)
        cmd = with(cmd, "Filter", since_filter("", q->since_ms));
    cmd = with(cmd, "ResultSize", eg_ps_new_string("Unlimited"));
    rc = run(c, cmd, EG_TARGET_MAILBOX, NULL, each_device, &iv, err);
    if (rc == EG_ENOMEM)
        rc = oom(err);
    if (rc == 0)
        *ret_next_cursor = NULL;
    return rc;
}

/* ---- inventory: the mailboxes' lists (Get-CASMailbox) and one device's statistics ----------- */

struct mbx_stream {
    eg_mailbox_cb cb;
    void *cb_ctx;
    size_t seen;
    struct eg_bridge_error *err;
};

/* A list property as strings; absent or $null is empty. 0, EG_EPROTO (not a string list),
 * EG_ENOMEM. */
static int list_prop(const struct eg_ps_value *o, const char *name, char ***ret, size_t *ret_n)
{
    int rc = eg_ps_get_string_array(eg_ps_obj_prop(o, name), ret, ret_n);
    if (rc == EG_ENOTFOUND) {
        *ret = NULL;
        *ret_n = 0;
        return 0;
    }
    return rc == EG_EINVAL ? EG_EPROTO : rc;
}

static int each_mailbox(void *ctx, struct eg_ps_value *o)
{
    struct mbx_stream *ms = ctx;
    char **allowed = NULL, **blocked = NULL;
    size_t na = 0, nb = 0;
    const char *identity = str_prop(o, "Identity");
    int rc = 0;
    if (!identity)
        goto out; /* not a mailbox object */
    if ((rc = list_prop(o, "ActiveSyncAllowedDeviceIDs", &allowed, &na)) < 0 ||
        (rc = list_prop(o, "ActiveSyncBlockedDeviceIDs", &blocked, &nb)) < 0) {
        if (rc == EG_EPROTO)
            eg_bridge_error_set(ms->err, EG_BERR_INTERNAL, true,
                                "the device lists of '%s' are not string lists", identity);
        goto out;
    }
    struct eg_mailbox_record m = {
        .identity = identity,
        .primary_smtp = str_prop(o, "PrimarySmtpAddress"),
        .allowed = (const char *const *)allowed,
        .n_allowed = na,
        .blocked = (const char *const *)blocked,
        .n_blocked = nb,
        .when_changed_ms = time_prop(o, "WhenChanged"),
    };
    ms->seen++;
    rc = ms->cb(ms->cb_ctx, &m);
out:
    eg_ps_string_array_free(allowed, na);
    eg_ps_string_array_free(blocked, nb);
    eg_ps_value_free(o);
    return rc;
}

static int cat_mailbox_lists(void *impl, const struct eg_mailbox_query *q, eg_mailbox_cb cb,
                             void *cb_ctx, struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    struct eg_bridge_error scratch;
    if (!err)
        err = &scratch;
    struct mbx_stream ms = {.cb = cb, .cb_ctx = cb_ctx, .err = err};
    if (!cb) {
        eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                            "mailbox lists without a callback");
        return EG_EINVAL;
    }
    struct eg_ps_command *cmd = new_cmd("Get-CASMailbox");
    if (q && q->mailbox) {
        if (!*q->mailbox) {
            eg_ps_command_free(cmd);
            eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false, "an empty mailbox identity");
            return EG_EINVAL;
        }
        cmd = with(cmd, "Identity", eg_ps_new_string(q->mailbox));
    } else {
        /* Who has devices (exchange-semantics.md section 5), or who changed since. */
        cmd = with(cmd, "Filter",
                   q && q->since_ms > 0
                       ? since_filter("", q->since_ms)
                       : eg_ps_new_string("HasActiveSyncDevicePartnership -eq $true"));
        cmd = with(cmd, "ResultSize", eg_ps_new_string("Unlimited"));
    }
    int rc = run(c, cmd, EG_TARGET_MAILBOX, NULL, each_mailbox, &ms, err);
    if (rc == EG_ENOMEM)
        return oom(err);
    if (rc == 0 && q && q->mailbox && ms.seen == 0) {
        eg_bridge_error_set(err, EG_BERR_MAILBOX_NOT_FOUND, false,
                            "Exchange returned no mailbox for '%s'", q->mailbox);
        return EG_EREMOTE;
    }
    if (rc > 0) /* stopped by the callback: its value, with err said by the caller */
        return rc;
    if (rc < 0 && err->code[0] == '\0')
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "mailbox lists: %s", eg_strerror(rc));
    return rc;
}

static int cat_device_stats(void *impl, const char *mailbox, const char *device_id,
                            const char *identity, eg_device_cb cb, void *cb_ctx,
                            struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    struct inv iv = {.cb = cb, .cb_ctx = cb_ctx};
    enum eg_exchange_version v = EG_EXCHANGE_UNKNOWN;
    char *resolved = NULL;
    int rc;
    if (!cb || (!identity && !device_args_ok(mailbox, device_id, err))) {
        if (!cb)
            eg_bridge_error_set(err, EG_BERR_INVALID_ARGUMENT, false,
                                "device statistics without a callback");
        return EG_EINVAL;
    }
    if ((rc = get_version(c, &v, err)) < 0)
        return rc;
    if (!identity) {
        if ((rc = resolve_device(c, v, mailbox, device_id, NULL, &resolved, err)) < 0)
            return rc;
        identity = resolved;
    }
    struct eg_ps_command *cmd =
        with(new_cmd(v == EG_EXCHANGE_2010 ? "Get-ActiveSyncDeviceStatistics"
                                           : "Get-MobileDeviceStatistics"),
             "Identity", eg_ps_new_string(identity));
    rc = run(c, cmd, EG_TARGET_DEVICE, NULL, each_device, &iv, err);
    eg_free(resolved);
    if (rc == EG_ENOMEM)
        rc = oom(err);
    return rc;
}

/* ---- probe and status ----------------------------------------------------------------------- */

static int cat_probe(void *impl, struct eg_bridge_error *err)
{
    struct catalogue *c = impl;
    struct collect k = {.max = 1};
    int rc = run(c, new_cmd("Get-OrganizationConfig"), EG_TARGET_ORG, NULL, collect_out, &k, err);
    collect_clear(&k);
    return rc < 0 ? rc : 0;
}

static json_t *cat_status(void *impl)
{
    struct catalogue *c = impl;
    const char *url = c->rops->url ? c->rops->url(c->runner) : NULL;
    return json_pack("{s:s, s:s, s:s, s:s?, s:{s:i, s:i, s:i, s:I}}", "kind",
                     c->online ? "online" : "onprem", "bridge", c->rops->name, "version",
                     eg_exchange_version_name(version_now(c)), "url", url, "concurrency", "limit",
                     (int)eg_gate_limit(c->gate), "ceiling", (int)eg_gate_ceiling(c->gate),
                     "inside", (int)eg_gate_inside(c->gate), "throttles",
                     (json_int_t)eg_gate_throttles(c->gate));
}

/* ---- construction --------------------------------------------------------------------------- */

static void cat_destroy(void *impl)
{
    struct catalogue *c = impl;
    if (!c)
        return;
    if (c->rops && c->rops->destroy)
        c->rops->destroy(c->runner);
    eg_gate_free(c->gate);
    pthread_mutex_destroy(&c->lock);
    eg_free(c);
}

int eg_catalogue_bridge_new(const struct eg_catalogue_opts *o, struct eg_bridge **ret)
{
    struct catalogue *c = NULL;
    struct eg_bridge *br = NULL;
    int rc;
    if (!o || !o->ops || !o->ops->run || !o->ops->destroy || !o->ops->name || !ret) {
        if (o && o->ops && o->ops->destroy)
            o->ops->destroy(o->runner);
        return EG_EINVAL;
    }
    if (o->ceiling < 1 || o->ceiling > EG_PSRP_MAX_PIPELINES || o->gate_wait_ms < 0 ||
        (unsigned)o->version > EG_EXCHANGE_ONLINE) {
        o->ops->destroy(o->runner);
        return EG_EINVAL;
    }
    c = eg_calloc(1, sizeof *c);
    br = eg_calloc(1, sizeof *br);
    if (!c || !br) {
        eg_free(c);
        eg_free(br);
        o->ops->destroy(o->runner);
        return EG_ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->rops = o->ops;
    c->runner = o->runner;
    c->online = o->online;
    c->configured = o->version;
    c->gate_wait_ms = o->gate_wait_ms ? o->gate_wait_ms : DEFAULT_GATE_WAIT_MS;
    if ((rc = eg_gate_new(o->ceiling, o->recover_after ? o->recover_after : DEFAULT_RECOVER_AFTER,
                          &c->gate)) < 0) {
        cat_destroy(c);
        eg_free(br);
        return rc;
    }
    c->ops = (struct eg_bridge_ops){
        .name = o->ops->name,
        .list_edit = cat_list_edit,
        .wipe = cat_wipe,
        .wipe_cancel = cat_wipe_cancel,
        .remove_device = cat_remove_device,
        .set_mailbox = cat_set_mailbox,
        .set_org_default_access = cat_set_org_default_access,
        .inventory_page = cat_inventory_page,
        .mailbox_lists = cat_mailbox_lists,
        .device_stats = cat_device_stats,
        .probe = cat_probe,
        .status = cat_status,
        .destroy = cat_destroy,
    };
    br->ops = &c->ops;
    br->impl = c;
    *ret = br;
    return 0;
}

static struct catalogue *catalogue_of(struct eg_bridge *b)
{
    if (!b || !b->ops || b->ops->destroy != cat_destroy)
        return NULL;
    return b->impl;
}

enum eg_exchange_version eg_catalogue_version(struct eg_bridge *b)
{
    struct catalogue *c = catalogue_of(b);
    return c ? version_now(c) : EG_EXCHANGE_UNKNOWN;
}

void *eg_catalogue_runner(struct eg_bridge *b, const struct eg_catalogue_runner_ops *ops)
{
    struct catalogue *c = catalogue_of(b);
    return c && c->rops == ops ? c->runner : NULL;
}
