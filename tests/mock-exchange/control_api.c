/* control_api.c - the mock Exchange's control API: JSON over plain HTTP on a loopback listener,
 * for tests to seed the org, simulate device syncs, read state, read the cmdlet call log and
 * switch faults on and off. The route table is `routes` below; the JSON shapes are documented
 * in docs/internals/mock-exchange.md ("Front end"). Cmdlet-level faults go to the engine
 * (mx_control); transport faults live in fe->faults.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "fe_internal.h"

struct ctl_req {
    char *body;
    size_t len, cap;
    bool too_big;
};

/* A handler's answer: status and a JSON body (a new reference). */
struct ctl_out {
    unsigned status;
    json_t *json;
};

static void out_error(struct ctl_out *o, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void out_error(struct ctl_out *o, int rc, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->status = rc == EG_ENOTFOUND   ? 404
                : rc == EG_ECONFLICT ? 409
                : rc == EG_ENOMEM    ? 500
                : rc == EG_EIO       ? 500
                                     : 400;
    json_decref(o->json);
    o->json = json_pack("{s:s, s:s}", "error", msg, "code", eg_errname(rc));
}

static void out_json(struct ctl_out *o, json_t *j)
{
    if (!j) {
        out_error(o, EG_ENOMEM, "out of memory");
        return;
    }
    o->status = 200;
    json_decref(o->json);
    o->json = j;
}

static void out_ok(struct ctl_out *o)
{
    out_json(o, json_pack("{s:b}", "ok", 1));
}

/* Run one engine control request (req is borrowed). */
static int engine_control(struct mx_fe *fe, const json_t *req, json_t **ret, char *err,
                          size_t err_size)
{
    struct fe_org *org = fe_org_get(fe);
    int rc = mx_control(org->org, req, ret, err, err_size);
    fe_org_put(fe, org);
    return rc;
}

/* Forward obj (an object) to the engine as {"op": op, ...obj minus the keys in drop}. */
static int engine_forward(struct mx_fe *fe, const char *op, const json_t *obj,
                          const char *const *drop, json_t **ret, char *err, size_t err_size)
{
    json_t *req = obj ? json_deep_copy(obj) : json_object();
    if (!req || json_object_set_new(req, "op", json_string(op)) < 0) {
        json_decref(req);
        snprintf(err, err_size, "out of memory");
        return EG_ENOMEM;
    }
    for (size_t i = 0; drop && drop[i]; i++)
        (void)json_object_del(req, drop[i]);
    json_t *res = NULL;
    int rc = engine_control(fe, req, &res, err, err_size);
    json_decref(req);
    if (rc == 0 && ret)
        *ret = res;
    else
        json_decref(res);
    return rc;
}

/* ---- handlers ---- */

static void h_seed(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    pthread_mutex_lock(&fe->lock);
    struct mx_org_opts opts = fe->org_opts;
    pthread_mutex_unlock(&fe->lock);
    const char *key;
    json_t *v;
    if (!json_is_object(body)) {
        out_error(o, EG_EINVAL, "the body must be a JSON object");
        return;
    }
    json_object_foreach((json_t *)body, key, v)
    {
        if (strcmp(key, "profile") == 0) {
            if (!json_is_string(v) || mx_profile_parse(json_string_value(v), &opts.profile) < 0) {
                out_error(o, EG_EINVAL, "profile must be 2010, 2013, 2016 or online");
                return;
            }
        } else if (strcmp(key, "mailboxes") == 0 || strcmp(key, "devices") == 0 ||
                   strcmp(key, "seed") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                out_error(o, EG_EINVAL, "%s must be a non-negative integer", key);
                return;
            }
            json_int_t n = json_integer_value(v);
            if (key[0] == 'm')
                opts.mailboxes = (size_t)n;
            else if (key[0] == 'd')
                opts.devices = (size_t)n;
            else
                opts.seed = (uint64_t)n;
        } else if (strcmp(key, "seed_lists") == 0) {
            if (!json_is_boolean(v)) {
                out_error(o, EG_EINVAL, "seed_lists must be a boolean");
                return;
            }
            opts.seed_lists = json_is_true(v);
        } else if (strcmp(key, "admin_display_version") == 0) {
            if (!json_is_string(v) && !json_is_null(v)) {
                out_error(o, EG_EINVAL, "admin_display_version must be a string");
                return;
            }
            opts.admin_display_version = json_is_string(v) ? json_string_value(v) : NULL;
        } else {
            out_error(o, EG_EINVAL, "unknown seed field '%s'", key);
            return;
        }
    }
    int64_t t0 = eg_mono_ms();
    int rc = fe_org_reseed(fe, &opts);
    if (rc < 0) {
        out_error(o, rc, "cannot build the org: %s", eg_strerror(rc));
        return;
    }
    eg_log_notice("org reseeded: profile %s, %zu mailboxes, %zu devices, seed %llu (%lld ms)",
                  mx_profile_name(opts.profile), opts.mailboxes, opts.devices,
                  (unsigned long long)opts.seed, (long long)(eg_mono_ms() - t0));
    out_json(o, json_pack("{s:b, s:s, s:I, s:I, s:I}", "ok", 1, "profile",
                          mx_profile_name(opts.profile), "mailboxes", (json_int_t)opts.mailboxes,
                          "devices", (json_int_t)opts.devices, "seed", (json_int_t)opts.seed));
}

static void h_sync(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    char err[256] = "";
    json_t *res = NULL;
    if (!json_is_object(body)) {
        out_error(o, EG_EINVAL, "the body must be a JSON object");
        return;
    }
    int rc = engine_forward(fe, "sync", body, NULL, &res, err, sizeof err);
    if (rc < 0)
        out_error(o, rc, "%s", err[0] ? err : eg_strerror(rc));
    else
        out_json(o, res);
}

static void h_engine(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    char err[256] = "";
    json_t *res = NULL;
    if (!json_is_object(body)) {
        out_error(o, EG_EINVAL, "the body must be a JSON object with an \"op\"");
        return;
    }
    int rc = engine_control(fe, body, &res, err, sizeof err);
    if (rc < 0)
        out_error(o, rc, "%s", err[0] ? err : eg_strerror(rc));
    else
        out_json(o, res);
}

static void h_state_org(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    struct fe_org *org = fe_org_get(fe);
    json_t *res = NULL;
    int rc = mx_state_org(org->org, &res);
    fe_org_put(fe, org);
    if (rc < 0)
        out_error(o, rc, "%s", eg_strerror(rc));
    else
        out_json(o, res);
}

static void h_state_mailbox(struct mx_fe *fe, const json_t *body, const char *arg,
                            struct ctl_out *o)
{
    struct fe_org *org = fe_org_get(fe);
    json_t *res = NULL;
    int rc = mx_state_mailbox(org->org, arg, &res);
    fe_org_put(fe, org);
    if (rc < 0)
        out_error(o, rc, "mailbox '%s': %s", arg, eg_strerror(rc));
    else
        out_json(o, res);
}

static void h_state_device(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    /* {mailbox}/{deviceid}: a device id has no '/', a mailbox identity may */
    const char *slash = strrchr(arg, '/');
    if (!slash || slash == arg || !slash[1]) {
        out_error(o, EG_EINVAL, "want /control/state/device/{mailbox}/{deviceid}");
        return;
    }
    char *mbx = eg_strndup(arg, (size_t)(slash - arg));
    if (!mbx) {
        out_error(o, EG_ENOMEM, "out of memory");
        return;
    }
    struct fe_org *org = fe_org_get(fe);
    json_t *res = NULL;
    int rc = mx_state_device(org->org, mbx, slash + 1, &res);
    fe_org_put(fe, org);
    if (rc < 0)
        out_error(o, rc, "device '%s' of '%s': %s", slash + 1, mbx, eg_strerror(rc));
    else
        out_json(o, res);
    eg_free(mbx);
}

static void h_calls(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    struct fe_org *org = fe_org_get(fe);
    json_t *res = NULL;
    int rc = mx_recorder_get(org->org, &res);
    fe_org_put(fe, org);
    if (rc < 0)
        out_error(o, rc, "%s", eg_strerror(rc));
    else
        out_json(o, res);
}

static void h_calls_reset(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    struct fe_org *org = fe_org_get(fe);
    mx_recorder_reset(org->org);
    fe_org_put(fe, org);
    out_ok(o);
}

static json_t *faults_json(struct mx_fe *fe)
{
    pthread_mutex_lock(&fe->lock);
    struct fe_faults f = fe->faults;
    pthread_mutex_unlock(&fe->lock);
    return json_pack(
        "{s:I, s:I, s:{s:i, s:I, s:I}, s:{s:I, s:s}, s:s, s:{s:I, s:I}, s:I}",
        "max_shells_per_user", (json_int_t)f.max_shells_per_user, "commands_per_shell",
        (json_int_t)f.commands_per_shell, "http_error", "status", f.http_error_status, "count",
        (json_int_t)f.http_error_count, "retry_after", (json_int_t)f.http_retry_after_s,
        "drop_connections", "count", (json_int_t)f.drop_count, "when",
        f.drop_after ? "after" : "before", "quota_as", f.quota_as_error ? "error" : "fault",
        "rest_429", "count", (json_int_t)f.rest_429_count, "retry_after",
        (json_int_t)f.rest_429_retry_after_s, "gss_tamper", (json_int_t)f.gss_tamper_count);
}

static void h_faults_get(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    out_json(o, faults_json(fe));
}

static bool uint_of(const json_t *v, unsigned max, unsigned *ret)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return false;
    *ret = (unsigned)json_integer_value(v);
    return true;
}

/* Each item of v (an object or an array of objects) forwarded as engine op. */
static int forward_each(struct mx_fe *fe, const char *op, const json_t *v, const char *const *drop,
                        char *err, size_t err_size)
{
    if (json_is_object(v))
        return engine_forward(fe, op, v, drop, NULL, err, err_size);
    if (!json_is_array(v)) {
        snprintf(err, err_size, "%s: want an object or an array of objects", op);
        return EG_EINVAL;
    }
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_object(item)) {
            snprintf(err, err_size, "%s: want an object or an array of objects", op);
            return EG_EINVAL;
        }
        int rc = engine_forward(fe, op, item, drop, NULL, err, err_size);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int apply_rbac(struct mx_fe *fe, const json_t *v, char *err, size_t err_size)
{
    const char *key;
    json_t *x;
    int rc = 0;
    if (!json_is_object(v)) {
        snprintf(err, err_size, "rbac: want an object");
        return EG_EINVAL;
    }
    json_t *reset = json_object_get(v, "reset");
    if (json_is_true(reset) &&
        (rc = engine_forward(fe, "rbac_reset", NULL, NULL, NULL, err, err_size)) < 0)
        return rc;
    json_object_foreach((json_t *)v, key, x)
    {
        size_t i;
        json_t *item;
        if (strcmp(key, "reset") == 0)
            continue;
        if (!json_is_array(x)) {
            snprintf(err, err_size, "rbac.%s: want an array", key);
            return EG_EINVAL;
        }
        if (strcmp(key, "hide_cmdlets") == 0) {
            json_array_foreach(x, i, item)
            {
                json_t *req = json_pack("{s:O}", "cmdlet", item);
                rc = req ? engine_forward(fe, "rbac_hide_cmdlet", req, NULL, NULL, err, err_size)
                         : EG_ENOMEM;
                json_decref(req);
                if (rc < 0)
                    return rc;
            }
        } else if (strcmp(key, "hide_parameters") == 0 || strcmp(key, "allow_only") == 0) {
            const char *op = key[0] == 'h' ? "rbac_hide_parameter" : "rbac_allow_only";
            if ((rc = forward_each(fe, op, x, NULL, err, err_size)) < 0)
                return rc;
        } else {
            snprintf(err, err_size, "unknown rbac field '%s'", key);
            return EG_EINVAL;
        }
    }
    return 0;
}

static void h_faults_post(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    static const char *const drop_as[] = {"as", NULL};
    char err[512] = "";
    const char *key;
    json_t *v;
    size_t lost = 0;
    bool did_lose = false;
    int rc = 0;

    if (!json_is_object(body)) {
        out_error(o, EG_EINVAL, "the body must be a JSON object");
        return;
    }
    json_object_foreach((json_t *)body, key, v)
    {
        unsigned n;
        if (strcmp(key, "latency") == 0) {
            rc = forward_each(fe, "fault_latency", v, NULL, err, sizeof err);
        } else if (strcmp(key, "quota") == 0) {
            const json_t *first = json_is_array(v) ? json_array_get(v, 0) : v;
            const json_t *as = json_is_object(first) ? json_object_get(first, "as") : NULL;
            if (as && (!json_is_string(as) || (strcmp(json_string_value(as), "fault") != 0 &&
                                               strcmp(json_string_value(as), "error") != 0))) {
                snprintf(err, sizeof err, "quota.as must be \"fault\" or \"error\"");
                rc = EG_EINVAL;
            } else {
                rc = forward_each(fe, "fault_quota", v, drop_as, err, sizeof err);
                if (rc == 0 && as) {
                    pthread_mutex_lock(&fe->lock);
                    fe->faults.quota_as_error = strcmp(json_string_value(as), "error") == 0;
                    pthread_mutex_unlock(&fe->lock);
                }
            }
        } else if (strcmp(key, "micro_delay") == 0) {
            rc = forward_each(fe, "fault_micro_delay", v, NULL, err, sizeof err);
        } else if (strcmp(key, "write_scope") == 0) {
            rc = forward_each(fe, "fault_write_scope", v, NULL, err, sizeof err);
        } else if (strcmp(key, "rbac") == 0) {
            rc = apply_rbac(fe, v, err, sizeof err);
        } else if (strcmp(key, "max_shells_per_user") == 0 ||
                   strcmp(key, "commands_per_shell") == 0) {
            if (!uint_of(v, 1000000, &n)) {
                snprintf(err, sizeof err, "%s must be an integer 0..1000000 (0 = off)", key);
                rc = EG_EINVAL;
            } else {
                pthread_mutex_lock(&fe->lock);
                if (key[0] == 'm')
                    fe->faults.max_shells_per_user = n;
                else
                    fe->faults.commands_per_shell = n;
                pthread_mutex_unlock(&fe->lock);
            }
        } else if (strcmp(key, "http_error") == 0) {
            unsigned status = 503, count = 1, ra = 0;
            json_t *s = json_object_get(v, "status"), *c = json_object_get(v, "count"),
                   *r = json_object_get(v, "retry_after");
            if (!json_is_object(v) || (s && !uint_of(s, 599, &status)) || status < 400 ||
                (c && !uint_of(c, 1000000, &count)) || (r && !uint_of(r, 86400, &ra))) {
                snprintf(err, sizeof err,
                         "http_error: want {\"status\": 400..599, \"count\": n, "
                         "\"retry_after\": seconds}");
                rc = EG_EINVAL;
            } else {
                pthread_mutex_lock(&fe->lock);
                fe->faults.http_error_status = (int)status;
                fe->faults.http_error_count = count;
                fe->faults.http_retry_after_s = ra;
                pthread_mutex_unlock(&fe->lock);
            }
        } else if (strcmp(key, "rest_429") == 0) {
            unsigned count = 1, ra = 1;
            json_t *c = json_object_get(v, "count"), *r = json_object_get(v, "retry_after");
            if (!json_is_object(v) || (c && !uint_of(c, 1000000, &count)) ||
                (r && !uint_of(r, 86400, &ra))) {
                snprintf(err, sizeof err,
                         "rest_429: want {\"count\": n, \"retry_after\": seconds}");
                rc = EG_EINVAL;
            } else {
                pthread_mutex_lock(&fe->lock);
                fe->faults.rest_429_count = count;
                fe->faults.rest_429_retry_after_s = ra;
                pthread_mutex_unlock(&fe->lock);
            }
        } else if (strcmp(key, "drop_connections") == 0) {
            unsigned count = 0;
            bool after = false;
            if (json_is_integer(v)) {
                if (!uint_of(v, 1000000, &count))
                    rc = EG_EINVAL;
            } else if (json_is_object(v)) {
                json_t *c = json_object_get(v, "count"), *w = json_object_get(v, "when");
                if (!c || !uint_of(c, 1000000, &count))
                    rc = EG_EINVAL;
                if (w && (!json_is_string(w) || (strcmp(json_string_value(w), "before") != 0 &&
                                                 strcmp(json_string_value(w), "after") != 0)))
                    rc = EG_EINVAL;
                after = w && strcmp(json_string_value(w), "after") == 0;
            } else {
                rc = EG_EINVAL;
            }
            if (rc < 0) {
                snprintf(err, sizeof err,
                         "drop_connections: want n or {\"count\": n, \"when\": "
                         "\"before\"|\"after\"}");
            } else {
                pthread_mutex_lock(&fe->lock);
                fe->faults.drop_count = count;
                fe->faults.drop_after = after;
                pthread_mutex_unlock(&fe->lock);
            }
        } else if (strcmp(key, "gss_tamper") == 0) {
            unsigned count = 0;
            if (!uint_of(v, 1000000, &count)) {
                snprintf(err, sizeof err, "gss_tamper: want n (sealed replies to alter)");
                rc = EG_EINVAL;
            } else {
                pthread_mutex_lock(&fe->lock);
                fe->faults.gss_tamper_count = count;
                pthread_mutex_unlock(&fe->lock);
            }
        } else if (strcmp(key, "lose_shells") == 0) {
            did_lose = true;
            if (json_is_true(v)) {
                lost += fe_lose_shells(fe, true, NULL, NULL, -1);
            } else if (json_is_object(v)) {
                json_t *id = json_object_get(v, "shell_id"), *u = json_object_get(v, "user"),
                       *li = json_object_get(v, "listener");
                if ((id && !json_is_string(id)) || (u && !json_is_string(u)) ||
                    (li && !json_is_integer(li))) {
                    snprintf(err, sizeof err,
                             "lose_shells: want true or {\"shell_id\", \"user\", \"listener\"}");
                    rc = EG_EINVAL;
                } else {
                    lost += fe_lose_shells(fe, false, id ? json_string_value(id) : NULL,
                                           u ? json_string_value(u) : NULL,
                                           li ? (int)json_integer_value(li) : -1);
                }
            } else {
                snprintf(err, sizeof err, "lose_shells: want true or an object");
                rc = EG_EINVAL;
            }
        } else {
            snprintf(err, sizeof err, "unknown fault '%s'", key);
            rc = EG_EINVAL;
        }
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        out_error(o, rc, "%s", err[0] ? err : eg_strerror(rc));
        return;
    }
    json_t *j = faults_json(fe);
    if (j && did_lose)
        json_object_set_new(j, "lost", json_integer((json_int_t)lost));
    eg_log_info("faults set: %s", arg ? arg : "");
    out_json(o, j);
}

static void h_faults_reset(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    pthread_mutex_lock(&fe->lock);
    memset(&fe->faults, 0, sizeof fe->faults);
    pthread_mutex_unlock(&fe->lock);
    struct fe_org *org = fe_org_get(fe);
    mx_fault_reset(org->org);
    mx_rbac_reset(org->org);
    fe_org_put(fe, org);
    eg_log_info("every fault reset");
    out_ok(o);
}

static void h_listener(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    /* {index}/down or {index}/up */
    const char *slash = strchr(arg, '/');
    char idx[16];
    int64_t i;
    if (!slash || (size_t)(slash - arg) >= sizeof idx) {
        out_error(o, EG_EINVAL, "want /control/listener/{index}/down or /up");
        return;
    }
    memcpy(idx, arg, (size_t)(slash - arg));
    idx[slash - arg] = '\0';
    if (eg_parse_int64(idx, 0, EG_MOCK_MAX_LISTENERS - 1, &i) < 0 || (size_t)i >= fe->n_listeners) {
        out_error(o, EG_ENOTFOUND, "no listener %s", idx);
        return;
    }
    int rc;
    if (strcmp(slash + 1, "down") == 0)
        rc = fe_listener_down(fe, (size_t)i);
    else if (strcmp(slash + 1, "up") == 0)
        rc = fe_listener_up(fe, (size_t)i);
    else {
        out_error(o, EG_EINVAL, "want /control/listener/{index}/down or /up");
        return;
    }
    if (rc < 0) {
        out_error(o, rc, "listener %lld: %s", (long long)i, eg_strerror(rc));
        return;
    }
    pthread_mutex_lock(&fe->lock);
    bool up = !fe->listeners[i].down;
    pthread_mutex_unlock(&fe->lock);
    out_json(o, json_pack("{s:b, s:I, s:i, s:b}", "ok", 1, "index", (json_int_t)i, "port",
                          (int)fe->listeners[i].port, "up", up));
}

static void h_shells(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    out_json(o, fe_shells_json(fe));
}

static void h_info(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    json_t *ls = json_array();
    pthread_mutex_lock(&fe->lock);
    for (size_t i = 0; ls && i < fe->n_listeners; i++) {
        const struct fe_listener *l = &fe->listeners[i];
        json_t *x = json_pack("{s:I, s:s, s:i, s:b, s:b}", "index", (json_int_t)i, "host", l->host,
                              "port", (int)l->port, "up", !l->down, "tls", fe->tls_cert != NULL);
        if (!x || json_array_append_new(ls, x) < 0) {
            json_decref(ls);
            ls = NULL;
        }
    }
    size_t shells = fe->n_shells;
    unsigned running = fe->running;
    struct mx_org_opts opts = fe->org_opts;
    pthread_mutex_unlock(&fe->lock);
    json_t *req = json_pack("{s:s}", "op", "info"), *engine = NULL;
    char err[128];
    if (req && engine_control(fe, req, &engine, err, sizeof err) < 0)
        engine = json_null();
    json_decref(req);
    if (!ls || !engine) {
        json_decref(ls);
        json_decref(engine);
        out_error(o, EG_ENOMEM, "out of memory");
        return;
    }
    out_json(o, json_pack("{s:o, s:I, s:I, s:s, s:I, s:I, s:I, s:b, s:o}", "listeners", ls,
                          "shells", (json_int_t)shells, "running", (json_int_t)running, "profile",
                          mx_profile_name(opts.profile), "seed", (json_int_t)opts.seed, "mailboxes",
                          (json_int_t)opts.mailboxes, "devices", (json_int_t)opts.devices,
                          "shared_shells", fe->shared_shells, "engine", engine));
}

/* ---- the route table ---- */

typedef void (*ctl_handler)(struct mx_fe *fe, const json_t *body, const char *arg,
                            struct ctl_out *o);

static void h_auth_get(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    out_json(o, fe_gss_json(fe));
}

static void h_auth_reset(struct mx_fe *fe, const json_t *body, const char *arg, struct ctl_out *o)
{
    fe_gss_reset(fe);
    out_ok(o);
}

static const struct {
    const char *method;
    const char *path; /* exact, or a prefix ending in '/' whose rest is the handler's arg */
    bool prefix;
    bool body; /* expects a JSON body */
    ctl_handler h;
} routes[] = {
    {"POST", "/control/seed", false, true, h_seed},
    {"POST", "/control/device-sync", false, true, h_sync},
    {"POST", "/control/engine", false, true, h_engine},
    {"GET", "/control/state/org", false, false, h_state_org},
    {"GET", "/control/state/mailbox/", true, false, h_state_mailbox},
    {"GET", "/control/state/device/", true, false, h_state_device},
    {"GET", "/control/calls", false, false, h_calls},
    {"DELETE", "/control/calls", false, false, h_calls_reset},
    {"GET", "/control/faults", false, false, h_faults_get},
    {"POST", "/control/faults", false, true, h_faults_post},
    {"DELETE", "/control/faults", false, false, h_faults_reset},
    {"POST", "/control/listener/", true, false, h_listener},
    {"GET", "/control/shells", false, false, h_shells},
    {"GET", "/control/info", false, false, h_info},
    {"GET", "/control/auth", false, false, h_auth_get},
    {"DELETE", "/control/auth", false, false, h_auth_reset},
};

static enum MHD_Result send_json(struct MHD_Connection *c, struct ctl_out *o)
{
    char *text = o->json ? json_dumps(o->json, JSON_COMPACT) : NULL;
    json_decref(o->json);
    o->json = NULL;
    if (!text) {
        return fe_send(c, 500, "text/plain", eg_strdup("out of memory"), 13);
    }
    size_t len = strlen(text);
    return fe_send(c, o->status, "application/json", text, len);
}

static enum MHD_Result on_control(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    struct mx_fe *fe = cls;
    struct ctl_req *r = *req_cls;
    if (!r) {
        if (!(r = eg_calloc(1, sizeof *r)))
            return MHD_NO;
        *req_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->len + *upload_size > EG_MOCK_MAX_CONTROL_BODY) {
            r->too_big = true;
        } else {
            char *nb = eg_realloc(r->body, r->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            r->body = nb;
            memcpy(r->body + r->len, upload_data, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    struct ctl_out o = {0};
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t pl = strlen(routes[i].path);
        bool match = routes[i].prefix ? strncmp(url, routes[i].path, pl) == 0 && url[pl]
                                      : strcmp(url, routes[i].path) == 0;
        if (!match)
            continue;
        path_known = true;
        if (strcmp(method, routes[i].method) != 0)
            continue;
        if (r->too_big) {
            out_error(&o, EG_ELIMIT, "body over %d bytes", EG_MOCK_MAX_CONTROL_BODY);
            o.status = 413;
            return send_json(c, &o);
        }
        json_t *body = NULL;
        if (routes[i].body) {
            json_error_t jerr;
            int rc = eg_json_load(r->body ? r->body : "", r->len, &body, &jerr);
            if (rc < 0) {
                out_error(&o, rc, "the body is not JSON: %s", rc == EG_EPARSE ? jerr.text : "");
                return send_json(c, &o);
            }
        }
        routes[i].h(fe, body, routes[i].prefix ? url + pl : (routes[i].body ? r->body : NULL), &o);
        json_decref(body);
        eg_log_debug("control %s %s: %u", method, url, o.status);
        return send_json(c, &o);
    }
    if (path_known)
        out_error(&o, EG_EINVAL, "method %s not allowed on %s", method, url);
    else
        out_error(&o, EG_ENOTFOUND, "no route %s %s", method, url);
    if (path_known)
        o.status = 405;
    return send_json(c, &o);
}

static void on_control_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                                 enum MHD_RequestTerminationCode toe)
{
    struct ctl_req *r = *req_cls;
    if (!r)
        return;
    eg_free(r->body);
    eg_free(r);
    *req_cls = NULL;
}

int fe_control_start(struct mx_fe *fe, const char *hostport, char *err, size_t err_size)
{
    char *addr = NULL;
    uint16_t port;
    if (eg_parse_hostport(hostport, &addr, &port) < 0) {
        snprintf(err, err_size, "bad --control address '%s' (want ADDR:PORT)", hostport);
        return EG_EINVAL;
    }
    bool loop = eg_is_loopback(addr);
    eg_free(addr);
    if (!loop) {
        snprintf(err, err_size, "--control must be a loopback address (got %s)", hostport);
        return EG_EINVAL;
    }
    struct fe_listener l = {.fe = fe, .index = -1};
    int fd = -1;
    int rc = fe_open_listener(hostport, &l, &fd, err, err_size);
    if (rc < 0)
        return rc;
    fe->control =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                             MHD_USE_POLL | MHD_USE_ITC,
                         0, NULL, NULL, on_control, fe, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED,
                         on_control_completed, fe, MHD_OPTION_END);
    if (!fe->control) {
        close(fd);
        snprintf(err, err_size, "cannot start the control listener on %s", hostport);
        return EG_EIO;
    }
    fe->control_port = l.port;
    return 0;
}
