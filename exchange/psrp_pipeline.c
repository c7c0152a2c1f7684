/* psrp_pipeline.c - the command model (commands, parameters, pipelines) and the two messages
 * that create things on the server: INIT_RUNSPACEPOOL (MS-PSRP 2.2.2.2) and CREATE_PIPELINE
 * (2.2.2.10, with Command 2.2.3.11 and CommandParameter 2.2.3.12), built on the client and parsed
 * on the server. The client side refuses anything that is not a Verb-Noun cmdlet name, so no
 * script text can be sent; the server side reports what arrived. */
#include "exchange/psrp_objects.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/limits.h"

/* ---- enum objects ---- */

#define TN_THREAD_OPTIONS "System.Management.Automation.Runspaces.PSThreadOptions"
#define TN_APARTMENT      "System.Threading.ApartmentState"
#define TN_STREAM_OPTIONS "System.Management.Automation.RemoteStreamOptions"
#define TN_RESULT_TYPES   "System.Management.Automation.Runspaces.PipelineResultTypes"

/* List`1[PSObject]: the type of Cmds, ExtraCmds and Args (as pypsrp and MS-PSRP write it). */
static const char *const k_psobject_list_tn[] = {
    "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, "
    "System.Management.Automation, Version=1.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35]]",
    "System.Object"};

static const char *const k_thread_option_names[] = {"Default", "UseNewThread", "ReuseThread",
                                                    "UseCurrentThread"};
static const char *const k_apartment_names[] = {"STA", "MTA", "Unknown"};

static struct eg_ps_value *new_thread_options(int32_t v)
{
    return eg_ps_new_enum(TN_THREAD_OPTIONS, k_thread_option_names[v], v);
}

static struct eg_ps_value *new_apartment(int32_t v)
{
    return eg_ps_new_enum(TN_APARTMENT, k_apartment_names[v], v);
}

/* RemoteStreamOptions is a [Flags] enum without a 0 member: .NET's ToString gives "0" for 0,
 * "AddInvocationInfo" for 15, and the set flags joined by ", " otherwise. */
static struct eg_ps_value *new_stream_options(int32_t v)
{
    static const char *const flag_names[] = {
        "AddInvocationInfoToErrorRecord", "AddInvocationInfoToWarningRecord",
        "AddInvocationInfoToDebugRecord", "AddInvocationInfoToVerboseRecord"};
    char buf[160] = "0";
    if (v == EG_PS_STREAM_ADD_INVOCATION_INFO) {
        snprintf(buf, sizeof buf, "AddInvocationInfo");
    } else if (v != 0) {
        size_t len = 0;
        for (int i = 0; i < 4; i++) {
            if (v & (1 << i))
                len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len ? ", " : "",
                                        flag_names[i]);
        }
    }
    return eg_ps_new_enum(TN_STREAM_OPTIONS, buf, v);
}

static struct eg_ps_value *new_merge_none(void)
{
    return eg_ps_new_enum(TN_RESULT_TYPES, "None", 0);
}

/* HostInfo of a null host (MS-PSRP 2.2.3.14): the server makes no host calls. */
static struct eg_ps_value *new_null_host(void)
{
    static const char *const flags[] = {"_isHostNull", "_isHostUINull", "_isHostRawUINull",
                                        "_useRunspaceHost"};
    struct eg_ps_value *h = eg_ps_new_obj();
    for (size_t i = 0; h && i < 4; i++) {
        if (eg_ps_obj_add_ms(h, flags[i], eg_ps_new_bool(true)) != 0) {
            eg_ps_value_free(h);
            h = NULL;
        }
    }
    return h;
}

/* ---- reading helpers (server side) ---- */

/* An optional bool member: absent or Nil keeps def; present but not a bool is EG_EPROTO. */
static int opt_bool(const struct eg_ps_value *v, const char *name, bool def, bool *out)
{
    int rc = eg_ps_get_bool(eg_ps_obj_prop(v, name), out);
    if (rc == EG_ENOTFOUND) {
        *out = def;
        return 0;
    }
    return rc == 0 ? 0 : EG_EPROTO;
}

/* An optional enum or integer member, read through the enum's I32. */
static int opt_i32(const struct eg_ps_value *v, const char *name, int32_t def, int32_t *out)
{
    int rc = eg_ps_get_i32(eg_ps_obj_prop(v, name), out);
    if (rc == EG_ENOTFOUND) {
        *out = def;
        return 0;
    }
    return rc == 0 ? 0 : EG_EPROTO;
}

/* HostInfo absent, Nil, or with _isHostNull true. */
static int host_is_null(const struct eg_ps_value *v, bool *out)
{
    const struct eg_ps_value *h = eg_ps_obj_prop(v, "HostInfo");
    if (!h || h->kind == EG_PS_NIL) {
        *out = true;
        return 0;
    }
    if (h->kind != EG_PS_OBJ)
        return EG_EPROTO;
    return opt_bool(h, "_isHostNull", false, out);
}

/* ---- naming rules ---- */

static bool ascii_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool ascii_alnum(char c)
{
    return ascii_alpha(c) || (c >= '0' && c <= '9');
}

bool eg_ps_cmdlet_name_valid(const char *name)
{
    if (!name)
        return false;
    size_t len = strlen(name), dashes = 0;
    if (len == 0 || len > EG_PSRP_MAX_CMDLET_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '-') {
            if (i == 0 || i == len - 1)
                return false;
            dashes++;
        } else if (!ascii_alnum(name[i])) {
            return false;
        }
    }
    return dashes == 1;
}

bool eg_ps_param_name_valid(const char *name)
{
    if (!name || !ascii_alpha(name[0]))
        return false;
    size_t len = strlen(name);
    if (len > EG_PSRP_MAX_PARAM_NAME)
        return false;
    for (size_t i = 1; i < len; i++)
        if (!ascii_alnum(name[i]) && name[i] != '_')
            return false;
    return true;
}

/* ---- commands ---- */

static struct eg_ps_command *command_alloc(const char *name, size_t len)
{
    struct eg_ps_command *c = eg_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->name = eg_strndup(name, len);
    if (!c->name) {
        eg_free(c);
        return NULL;
    }
    return c;
}

int eg_ps_command_new(const char *cmdlet, struct eg_ps_command **ret)
{
    if (!ret || !eg_ps_cmdlet_name_valid(cmdlet))
        return EG_EINVAL;
    struct eg_ps_command *c = command_alloc(cmdlet, strlen(cmdlet));
    if (!c)
        return EG_ENOMEM;
    *ret = c;
    return 0;
}

void eg_ps_command_free(struct eg_ps_command *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_params; i++) {
        eg_free(c->params[i].name);
        eg_ps_value_free(c->params[i].value);
    }
    eg_free(c->params);
    eg_free(c->name);
    eg_free(c);
}

/* A parsed name's "-" prefix and ":" suffix are not part of the parameter's name. */
static bool param_name_is(const char *have, const char *want)
{
    if (*have == '-')
        have++;
    size_t len = strlen(have), wlen = strlen(want);
    if (len > 0 && have[len - 1] == ':')
        len--;
    return len == wlen && strncasecmp(have, want, len) == 0;
}

const struct eg_ps_param *eg_ps_command_find_param(const struct eg_ps_command *c, const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->n_params; i++)
        if (c->params[i].name && param_name_is(c->params[i].name, name))
            return &c->params[i];
    return NULL;
}

/* Append a parameter; takes over name (an eg_ alloc'd copy or NULL) and value, also on failure. */
static int command_push(struct eg_ps_command *c, enum eg_ps_param_kind kind, char *name,
                        struct eg_ps_value *value)
{
    int rc = 0;
    if (c->n_params >= EG_PSRP_MAX_PARAMS) {
        rc = EG_ELIMIT;
        goto out;
    }
    if (c->n_params == c->cap_params) {
        size_t ncap = c->cap_params ? c->cap_params * 2 : 4;
        struct eg_ps_param *np = eg_reallocarray(c->params, ncap, sizeof *np);
        if (!np) {
            rc = EG_ENOMEM;
            goto out;
        }
        c->params = np;
        c->cap_params = ncap;
    }
    c->params[c->n_params++] = (struct eg_ps_param){.kind = kind, .name = name, .value = value};
    return 0;
out:
    eg_free(name);
    eg_ps_value_free(value);
    return rc;
}

/* Shared by add_param and add_switch: checks, then appends (value taken over). */
static int command_add_named(struct eg_ps_command *c, enum eg_ps_param_kind kind, const char *name,
                             struct eg_ps_value *value)
{
    char *copy = NULL;
    int rc;

    if (!c || !eg_ps_param_name_valid(name)) {
        rc = EG_EINVAL;
        goto out;
    }
    if (kind == EG_PS_PARAM_NAMED && !value) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (eg_ps_command_find_param(c, name)) {
        rc = EG_ECONFLICT;
        goto out;
    }
    copy = eg_strdup(name);
    if (!copy) {
        rc = EG_ENOMEM;
        goto out;
    }
    return command_push(c, kind, copy, value);
out:
    eg_ps_value_free(value);
    return rc;
}

int eg_ps_command_add_param(struct eg_ps_command *c, const char *name, struct eg_ps_value *value)
{
    return command_add_named(c, EG_PS_PARAM_NAMED, name, value);
}

int eg_ps_command_add_switch(struct eg_ps_command *c, const char *name)
{
    return command_add_named(c, EG_PS_PARAM_SWITCH, name, NULL);
}

int eg_ps_command_add_positional(struct eg_ps_command *c, struct eg_ps_value *value)
{
    if (!c) {
        eg_ps_value_free(value);
        return EG_EINVAL;
    }
    if (!value)
        return EG_ENOMEM;
    return command_push(c, EG_PS_PARAM_POSITIONAL, NULL, value);
}

bool eg_ps_param_switch_present(const struct eg_ps_param *p)
{
    if (!p)
        return false;
    if (p->kind == EG_PS_PARAM_SWITCH)
        return true;
    if (p->kind != EG_PS_PARAM_NAMED || !p->value)
        return false;
    if (p->value->kind == EG_PS_NIL)
        return true;
    bool b = false;
    if (eg_ps_get_bool(p->value, &b) == 0)
        return b;
    /* A [switch] object passed on (e.g. from $PSBoundParameters): its IsPresent. */
    if (eg_ps_has_type(p->value, "System.Management.Automation.SwitchParameter") &&
        eg_ps_get_bool(eg_ps_obj_prop(p->value, "IsPresent"), &b) == 0)
        return b;
    return false;
}

struct eg_ps_value *eg_ps_new_add_remove(const char *const *add, size_t n_add,
                                         const char *const *remove, size_t n_remove)
{
    if ((n_add > 0 && !add) || (n_remove > 0 && !remove))
        return NULL;
    struct eg_ps_value *h = eg_ps_new_hashtable();
    if (h && n_add > 0 &&
        eg_ps_obj_add_entry(h, eg_ps_new_string("Add"), eg_ps_new_string_array(add, n_add)) != 0)
        goto fail;
    if (h && n_remove > 0 &&
        eg_ps_obj_add_entry(h, eg_ps_new_string("Remove"),
                            eg_ps_new_string_array(remove, n_remove)) != 0)
        goto fail;
    return h;
fail:
    eg_ps_value_free(h);
    return NULL;
}

/* ---- pipelines ---- */

int eg_ps_pipeline_new(struct eg_ps_pipeline **ret)
{
    if (!ret)
        return EG_EINVAL;
    struct eg_ps_pipeline *p = eg_calloc(1, sizeof *p);
    if (!p)
        return EG_ENOMEM;
    p->redirect_shell_error_output_pipe = true;
    p->no_input = true;
    p->apartment_state = EG_PS_APARTMENT_UNKNOWN;
    p->remote_stream_options = 0;
    p->host_null = true;
    *ret = p;
    return 0;
}

void eg_ps_pipeline_free(struct eg_ps_pipeline *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_cmds; i++)
        eg_ps_command_free(p->cmds[i]);
    eg_free(p->cmds);
    eg_free(p);
}

int eg_ps_pipeline_add(struct eg_ps_pipeline *p, struct eg_ps_command *cmd)
{
    int rc;
    if (!p || !cmd) {
        rc = EG_EINVAL;
        goto out;
    }
    if (p->n_cmds >= EG_PSRP_MAX_COMMANDS) {
        rc = EG_ELIMIT;
        goto out;
    }
    if (p->n_cmds == p->cap_cmds) {
        size_t ncap = p->cap_cmds ? p->cap_cmds * 2 : 4;
        struct eg_ps_command **nc = eg_reallocarray(p->cmds, ncap, sizeof *nc);
        if (!nc) {
            rc = EG_ENOMEM;
            goto out;
        }
        p->cmds = nc;
        p->cap_cmds = ncap;
    }
    p->cmds[p->n_cmds++] = cmd;
    return 0;
out:
    eg_ps_command_free(cmd);
    return rc;
}

int eg_ps_pipeline_end_statement(struct eg_ps_pipeline *p)
{
    if (!p)
        return EG_EINVAL;
    if (p->n_cmds == 0 || p->cmds[p->n_cmds - 1]->end_of_statement)
        return EG_ESTATE;
    p->cmds[p->n_cmds - 1]->end_of_statement = true;
    return 0;
}

size_t eg_ps_pipeline_statements(const struct eg_ps_pipeline *p)
{
    if (!p || p->n_cmds == 0)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < p->n_cmds; i++)
        if (p->cmds[i]->end_of_statement || i == p->n_cmds - 1)
            n++;
    return n;
}

/* ---- INIT_RUNSPACEPOOL ---- */

static bool pool_init_ok(const struct eg_ps_pool_init *in)
{
    return in->min_runspaces >= 1 && in->max_runspaces >= in->min_runspaces &&
           in->thread_options >= EG_PS_THREAD_DEFAULT &&
           in->thread_options <= EG_PS_THREAD_USE_CURRENT_THREAD &&
           in->apartment_state >= EG_PS_APARTMENT_STA &&
           in->apartment_state <= EG_PS_APARTMENT_UNKNOWN;
}

int eg_psrp_build_init_runspacepool(const struct eg_ps_pool_init *init, char **ret, size_t *ret_len)
{
    static const struct eg_ps_pool_init defaults = {
        .min_runspaces = 1,
        .max_runspaces = 1,
        .thread_options = EG_PS_THREAD_DEFAULT,
        .apartment_state = EG_PS_APARTMENT_UNKNOWN,
        .host_null = true,
    };
    struct eg_ps_value *o = NULL;
    int rc;

    if (!init)
        init = &defaults;
    if (!ret || !pool_init_ok(init)) {
        rc = EG_EINVAL;
        goto out;
    }
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = eg_ps_obj_add_ms(o, "MinRunspaces", eg_ps_new_i32(init->min_runspaces));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "MaxRunspaces", eg_ps_new_i32(init->max_runspaces));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "PSThreadOptions", new_thread_options(init->thread_options));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ApartmentState", new_apartment(init->apartment_state));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "HostInfo", new_null_host());
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ApplicationArguments", eg_ps_new_nil());
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(o);
    return rc;
}

int eg_psrp_parse_init_runspacepool(const struct eg_ps_value *v, struct eg_ps_pool_init *ret)
{
    struct eg_ps_pool_init in = {0};
    int rc;

    if (!ret)
        return EG_EINVAL;
    if (eg_ps_get_i32(eg_ps_obj_prop(v, "MinRunspaces"), &in.min_runspaces) != 0 ||
        eg_ps_get_i32(eg_ps_obj_prop(v, "MaxRunspaces"), &in.max_runspaces) != 0 ||
        in.min_runspaces < 1 || in.max_runspaces < in.min_runspaces)
        return EG_EPROTO;
    rc = opt_i32(v, "PSThreadOptions", EG_PS_THREAD_DEFAULT, &in.thread_options);
    if (rc == 0)
        rc = opt_i32(v, "ApartmentState", EG_PS_APARTMENT_UNKNOWN, &in.apartment_state);
    if (rc == 0)
        rc = host_is_null(v, &in.host_null);
    if (rc == 0)
        *ret = in;
    return rc;
}

/* ---- CREATE_PIPELINE: building ---- */

static bool param_ok(const struct eg_ps_param *pa)
{
    switch (pa->kind) {
    case EG_PS_PARAM_NAMED:
        return eg_ps_param_name_valid(pa->name) && pa->value;
    case EG_PS_PARAM_SWITCH:
        return eg_ps_param_name_valid(pa->name);
    case EG_PS_PARAM_POSITIONAL:
        return pa->value != NULL;
    }
    return false;
}

/* Everything the builder relies on, checked again here: the struct is public, so a caller could
 * have changed a field after the builders checked it. */
static int pipeline_check(const struct eg_ps_pipeline *p)
{
    if (p->n_cmds == 0 || !p->cmds)
        return EG_EINVAL;
    if (p->n_cmds > EG_PSRP_MAX_COMMANDS)
        return EG_ELIMIT;
    if (p->apartment_state < EG_PS_APARTMENT_STA || p->apartment_state > EG_PS_APARTMENT_UNKNOWN ||
        p->remote_stream_options < 0 || p->remote_stream_options > EG_PS_STREAM_ADD_INVOCATION_INFO)
        return EG_EINVAL;
    for (size_t i = 0; i < p->n_cmds; i++) {
        const struct eg_ps_command *c = p->cmds[i];
        if (!c || c->is_script || !eg_ps_cmdlet_name_valid(c->name))
            return EG_EINVAL;
        if (c->n_params > EG_PSRP_MAX_PARAMS)
            return EG_ELIMIT;
        for (size_t j = 0; j < c->n_params; j++)
            if (!param_ok(&c->params[j]))
                return EG_EINVAL;
    }
    return 0;
}

/* One Args entry: <Obj><MS><S N="N">name</S> | <Nil N="N"/>, then V. */
static struct eg_ps_value *build_arg(const struct eg_ps_param *pa, bool switches_as_nil)
{
    struct eg_ps_value *a = eg_ps_new_obj(), *val;
    if (!a)
        return NULL;
    if (pa->kind == EG_PS_PARAM_SWITCH)
        val = switches_as_nil ? eg_ps_new_nil() : eg_ps_new_bool(true);
    else
        val = eg_ps_value_ref(pa->value);
    int rc = eg_ps_obj_add_ms(a, "N", pa->name ? eg_ps_new_string(pa->name) : eg_ps_new_nil());
    if (rc == 0) {
        rc = eg_ps_obj_add_ms(a, "V", val);
        val = NULL;
    }
    eg_ps_value_free(val);
    if (rc != 0) {
        eg_ps_value_free(a);
        return NULL;
    }
    return a;
}

/* One Command object (MS-PSRP 2.2.3.11), members in the order .NET writes them. */
static struct eg_ps_value *build_command(const struct eg_ps_command *c,
                                         const struct eg_ps_pipeline *p, bool merge_streams,
                                         bool merge_information)
{
    static const char *const merges[] = {"MergeMyResult", "MergeToResult", "MergePreviousResults"};
    static const char *const stream_merges[] = {"MergeError", "MergeWarning", "MergeVerbose",
                                                "MergeDebug"};
    struct eg_ps_value *o = eg_ps_new_obj(), *args = NULL;
    int rc = o ? 0 : EG_ENOMEM;

    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "Cmd", eg_ps_new_string(c->name));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "IsScript", eg_ps_new_bool(false));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "UseLocalScope", eg_ps_new_nil());
    for (size_t i = 0; rc == 0 && i < 3; i++)
        rc = eg_ps_obj_add_ms(o, merges[i], new_merge_none());
    for (size_t i = 0; rc == 0 && merge_streams && i < 4; i++)
        rc = eg_ps_obj_add_ms(o, stream_merges[i], new_merge_none());
    if (rc == 0 && merge_information)
        rc = eg_ps_obj_add_ms(o, "MergeInformation", new_merge_none());
    if (rc == 0) {
        args = eg_ps_new_list(k_psobject_list_tn, 2);
        rc = args ? 0 : EG_ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < c->n_params; i++)
        rc = eg_ps_obj_add_item(args, build_arg(&c->params[i], p->switches_as_nil));
    if (rc == 0) {
        rc = eg_ps_obj_add_ms(o, "Args", args);
        args = NULL;
    }
    eg_ps_value_free(args);
    if (rc != 0) {
        eg_ps_value_free(o);
        return NULL;
    }
    return o;
}

/* The Cmds list of commands [from, to). */
static struct eg_ps_value *build_cmd_list(const struct eg_ps_pipeline *p, size_t from, size_t to,
                                          bool merge_streams, bool merge_information)
{
    struct eg_ps_value *l = eg_ps_new_list(k_psobject_list_tn, 2);
    for (size_t i = from; l && i < to; i++) {
        if (eg_ps_obj_add_item(l, build_command(p->cmds[i], p, merge_streams, merge_information)) !=
            0) {
            eg_ps_value_free(l);
            l = NULL;
        }
    }
    return l;
}

/* Index one past the last command of the statement that starts at from. */
static size_t statement_end(const struct eg_ps_pipeline *p, size_t from)
{
    size_t i = from;
    while (i < p->n_cmds - 1 && !p->cmds[i]->end_of_statement)
        i++;
    return i + 1;
}

/* ExtraCmds: one {Cmds} object per statement, every statement included. */
static struct eg_ps_value *build_extra_cmds(const struct eg_ps_pipeline *p, bool merge_streams,
                                            bool merge_information)
{
    struct eg_ps_value *l = eg_ps_new_list(k_psobject_list_tn, 2);
    for (size_t from = 0; l && from < p->n_cmds;) {
        size_t to = statement_end(p, from);
        struct eg_ps_value *st = eg_ps_new_obj();
        int rc = st ? 0 : EG_ENOMEM;
        if (rc == 0)
            rc = eg_ps_obj_add_ms(st, "Cmds",
                                  build_cmd_list(p, from, to, merge_streams, merge_information));
        if (rc == 0) {
            rc = eg_ps_obj_add_item(l, st);
            st = NULL;
        }
        eg_ps_value_free(st);
        if (rc != 0) {
            eg_ps_value_free(l);
            l = NULL;
        }
        from = to;
    }
    return l;
}

/* The PowerShell object (MS-PSRP 2.2.3.11 "PowerShell"), in .NET's member order. */
static struct eg_ps_value *build_powershell(const struct eg_ps_pipeline *p, bool merge_streams,
                                            bool merge_information)
{
    struct eg_ps_value *o = eg_ps_new_obj();
    int rc = o ? 0 : EG_ENOMEM;
    if (rc == 0 && eg_ps_pipeline_statements(p) > 1)
        rc =
            eg_ps_obj_add_ms(o, "ExtraCmds", build_extra_cmds(p, merge_streams, merge_information));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(
            o, "Cmds", build_cmd_list(p, 0, statement_end(p, 0), merge_streams, merge_information));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "IsNested", eg_ps_new_bool(p->is_nested));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "History", eg_ps_new_nil());
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "RedirectShellErrorOutputPipe",
                              eg_ps_new_bool(p->redirect_shell_error_output_pipe));
    if (rc != 0) {
        eg_ps_value_free(o);
        return NULL;
    }
    return o;
}

int eg_psrp_build_create_pipeline(const struct eg_ps_pipeline *p,
                                  const struct eg_ps_capability *peer, char **ret, size_t *ret_len)
{
    struct eg_ps_value *o = NULL;
    int rc;

    if (!peer)
        peer = &eg_ps_capability_default;
    if (!p || !ret) {
        rc = EG_EINVAL;
        goto out;
    }
    rc = pipeline_check(p);
    if (rc != 0)
        goto out;
    /* Per-stream merges exist from protocol 2.2 (Windows 8), MergeInformation from 2.3; batches
     * of statements (ExtraCmds) need 2.2 too. */
    bool merge_streams = eg_ps_version_cmp(peer->protocol_version, 2, 2) >= 0;
    bool merge_information = eg_ps_version_cmp(peer->protocol_version, 2, 3) >= 0;
    if (!merge_streams && eg_ps_pipeline_statements(p) > 1) {
        rc = EG_EUNSUPPORTED;
        goto out;
    }
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = eg_ps_obj_add_ms(o, "NoInput", eg_ps_new_bool(p->no_input));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ApartmentState", new_apartment(p->apartment_state));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "RemoteStreamOptions",
                              new_stream_options(p->remote_stream_options));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "AddToHistory", eg_ps_new_bool(p->add_to_history));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "HostInfo", new_null_host());
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "PowerShell",
                              build_powershell(p, merge_streams, merge_information));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "IsNested", eg_ps_new_bool(p->is_nested));
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(o);
    return rc;
}

/* ---- CREATE_PIPELINE: parsing (server side) ---- */

/* A string member without NUL bytes, copied. EG_EPROTO when absent or not a string. */
static int member_string_copy(const struct eg_ps_value *v, const char *name, char **out)
{
    const char *s = NULL;
    size_t len = 0;
    if (eg_ps_get_string(eg_ps_obj_prop(v, name), &s, &len) != 0 || memchr(s, 0, len))
        return EG_EPROTO;
    *out = eg_strndup(s, len);
    return *out ? 0 : EG_ENOMEM;
}

static int parse_arg(struct eg_ps_command *c, const struct eg_ps_value *a)
{
    const struct eg_ps_value *n = eg_ps_obj_prop(a, "N");
    const struct eg_ps_value *val = eg_ps_obj_prop(a, "V");
    char *name = NULL;
    int rc;

    if (!a || a->kind != EG_PS_OBJ || !n || !val)
        return EG_EPROTO;
    if (n->kind == EG_PS_NIL)
        return command_push(c, EG_PS_PARAM_POSITIONAL, NULL,
                            eg_ps_value_ref((struct eg_ps_value *)val));
    rc = member_string_copy(a, "N", &name);
    if (rc != 0)
        return rc;
    /* The tree is read-only for us; the reference keeps the value alive after v is freed. */
    return command_push(c, EG_PS_PARAM_NAMED, name, eg_ps_value_ref((struct eg_ps_value *)val));
}

static int parse_command(struct eg_ps_pipeline *p, const struct eg_ps_value *cv)
{
    struct eg_ps_command *c = NULL;
    char *name = NULL;
    int rc;

    if (!cv || cv->kind != EG_PS_OBJ)
        return EG_EPROTO;
    if (p->n_cmds >= EG_PSRP_MAX_COMMANDS)
        return EG_ELIMIT;
    rc = member_string_copy(cv, "Cmd", &name);
    if (rc != 0)
        goto out;
    c = eg_calloc(1, sizeof *c);
    if (!c) {
        rc = EG_ENOMEM;
        goto out;
    }
    c->name = name;
    name = NULL;
    if (eg_ps_get_bool(eg_ps_obj_prop(cv, "IsScript"), &c->is_script) != 0) {
        rc = EG_EPROTO;
        goto out;
    }
    const struct eg_ps_value *args = eg_ps_obj_prop(cv, "Args");
    if (!args || (args->kind != EG_PS_NIL &&
                  (args->kind != EG_PS_OBJ || args->u.obj->container == EG_PS_CT_NONE ||
                   args->u.obj->container == EG_PS_CT_DCT))) {
        rc = EG_EPROTO;
        goto out;
    }
    size_t n = eg_ps_list_len(args);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = parse_arg(c, eg_ps_list_item(args, i));
    if (rc != 0)
        goto out;
    rc = eg_ps_pipeline_add(p, c);
    c = NULL; /* taken over */
out:
    eg_free(name);
    eg_ps_command_free(c);
    return rc;
}

/* One statement: a non-empty list of commands; its last command ends the statement. */
static int parse_statement(struct eg_ps_pipeline *p, const struct eg_ps_value *cmds)
{
    size_t n = eg_ps_list_len(cmds);
    if (n == 0)
        return EG_EPROTO;
    for (size_t i = 0; i < n; i++) {
        int rc = parse_command(p, eg_ps_list_item(cmds, i));
        if (rc != 0)
            return rc;
    }
    p->cmds[p->n_cmds - 1]->end_of_statement = true;
    return 0;
}

int eg_psrp_parse_create_pipeline(const struct eg_ps_value *v, struct eg_ps_pipeline **ret)
{
    struct eg_ps_pipeline *p = NULL;
    int rc;

    if (!ret)
        return EG_EINVAL;
    const struct eg_ps_value *ps = eg_ps_obj_prop(v, "PowerShell");
    if (!ps || ps->kind != EG_PS_OBJ)
        return EG_EPROTO;
    rc = eg_ps_pipeline_new(&p);
    if (rc != 0)
        goto out;
    bool nested_ps = false;
    rc = opt_bool(v, "NoInput", true, &p->no_input);
    if (rc == 0)
        rc = opt_bool(v, "AddToHistory", false, &p->add_to_history);
    if (rc == 0)
        rc = opt_bool(ps, "IsNested", false, &nested_ps);
    if (rc == 0)
        rc = opt_bool(v, "IsNested", nested_ps, &p->is_nested);
    if (rc == 0)
        rc = opt_bool(ps, "RedirectShellErrorOutputPipe", true,
                      &p->redirect_shell_error_output_pipe);
    if (rc == 0)
        rc = opt_i32(v, "ApartmentState", EG_PS_APARTMENT_UNKNOWN, &p->apartment_state);
    if (rc == 0)
        rc = opt_i32(v, "RemoteStreamOptions", 0, &p->remote_stream_options);
    if (rc == 0)
        rc = host_is_null(v, &p->host_null);
    if (rc != 0)
        goto out;

    const struct eg_ps_value *extra = eg_ps_obj_prop(ps, "ExtraCmds");
    size_t n_extra = eg_ps_list_len(extra);
    if (n_extra > 0) {
        for (size_t i = 0; rc == 0 && i < n_extra; i++)
            rc = parse_statement(p, eg_ps_obj_prop(eg_ps_list_item(extra, i), "Cmds"));
    } else {
        rc = parse_statement(p, eg_ps_obj_prop(ps, "Cmds"));
    }
    if (rc != 0)
        goto out;
    *ret = p;
    p = NULL;
out:
    eg_ps_pipeline_free(p);
    return rc;
}
