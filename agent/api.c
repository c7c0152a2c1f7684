/* api.c - the console API v1: route table and thin handlers (parse -> agent -> status). */
#include "agent/api.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "agent/command.h"
#include "common/alloc.h"
#include "common/json.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"

typedef void (*route_fn)(struct eg_api *api, const struct eg_http_request *req, const char *param,
                         struct eg_http_response *resp);

static void h_post_commands(struct eg_api *, const struct eg_http_request *, const char *,
                            struct eg_http_response *);
static void h_list_commands(struct eg_api *, const struct eg_http_request *, const char *,
                            struct eg_http_response *);
static void h_get_command(struct eg_api *, const struct eg_http_request *, const char *,
                          struct eg_http_response *);
static void h_cancel_command(struct eg_api *, const struct eg_http_request *, const char *,
                             struct eg_http_response *);
static void h_status(struct eg_api *, const struct eg_http_request *, const char *,
                     struct eg_http_response *);
static void h_put_config(struct eg_api *, const struct eg_http_request *, const char *,
                         struct eg_http_response *);
static void h_get_config(struct eg_api *, const struct eg_http_request *, const char *,
                         struct eg_http_response *);
static void h_inventory_sync(struct eg_api *, const struct eg_http_request *, const char *,
                             struct eg_http_response *);
static void h_inventory(struct eg_api *, const struct eg_http_request *, const char *,
                        struct eg_http_response *);
static void h_healthz(struct eg_api *, const struct eg_http_request *, const char *,
                      struct eg_http_response *);
static void h_readyz(struct eg_api *, const struct eg_http_request *, const char *,
                     struct eg_http_response *);
static void h_metrics(struct eg_api *, const struct eg_http_request *, const char *,
                      struct eg_http_response *);

/* The one table of every endpoint. "{id}" matches one non-empty path segment. */
static const struct route {
    const char *method;
    const char *tmpl;
    route_fn fn;
} routes[] = {
    {"POST", "/api/v1/commands", h_post_commands},
    {"GET", "/api/v1/commands", h_list_commands},
    {"GET", "/api/v1/commands/{id}", h_get_command},
    {"DELETE", "/api/v1/commands/{id}", h_cancel_command},
    {"GET", "/api/v1/status", h_status},
    {"PUT", "/api/v1/config", h_put_config},
    {"GET", "/api/v1/config", h_get_config},
    {"POST", "/api/v1/inventory/sync", h_inventory_sync},
    {"GET", "/api/v1/inventory", h_inventory},
    {"GET", "/healthz", h_healthz},
    {"GET", "/readyz", h_readyz},
    {"GET", "/metrics", h_metrics},
};

const char *const eg_api_public_paths[] = {"/healthz", "/readyz", NULL};

/* Match path against a template; on a "{id}" match *param points into path. */
static bool route_match(const char *tmpl, const char *path, const char **param)
{
    const char *brace = strstr(tmpl, "{id}");
    *param = NULL;
    if (!brace)
        return strcmp(tmpl, path) == 0;
    size_t pre = (size_t)(brace - tmpl);
    if (strncmp(tmpl, path, pre) != 0)
        return false;
    const char *seg = path + pre;
    if (!*seg || strchr(seg, '/'))
        return false;
    *param = seg;
    return true;
}

static void respond_text(struct eg_http_response *resp, int status, const char *ctype, char *text)
{
    resp->status = status;
    resp->content_type = ctype;
    resp->body = text;
    resp->body_len = text ? strlen(text) : 0;
}

static void add_header(struct eg_http_response *resp, const char *name, char *value)
{
    if (!value)
        return;
    if (resp->n_headers >= EG_HTTP_MAX_RESP_HEADERS) {
        eg_free(value);
        return;
    }
    resp->headers[resp->n_headers].name = name;
    resp->headers[resp->n_headers].value = value;
    resp->n_headers++;
}

static void respond_json_value(struct eg_http_response *resp, int status, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!text) {
        eg_http_respond_problem(resp, 500, "out of memory", NULL);
        return;
    }
    eg_http_respond_json(resp, status, text);
}

static int set_time(json_t *o, const char *key, int64_t ms)
{
    char buf[40];
    if (ms <= 0)
        return 0;
    return json_object_set_new(o, key, json_string(eg_format_time(ms, buf, sizeof buf)));
}

/* Parse stored JSON text; NULL text or bad JSON gives NULL. */
static json_t *parse_stored(const char *text)
{
    return text ? json_loads(text, 0, NULL) : NULL;
}

/* Public representation of one command record. NULL on allocation failure. */
static json_t *record_json(const struct eg_cmd_record *r)
{
    return eg_api_command_view(r);
}

json_t *eg_api_command_view(const struct eg_cmd_record *r)
{
    json_t *o = json_object(), *err = NULL, *cmd = NULL, *res = NULL;
    int rc = 0;
    if (!o)
        return NULL;
    rc |= json_object_set_new(o, "id", json_string(r->id));
    rc |= json_object_set_new(o, "type", json_string(r->type));
    rc |= json_object_set_new(o, "state", json_string(eg_cmd_state_name(r->state)));
    rc |= json_object_set_new(o, "attempts", json_integer(r->attempts));
    rc |= set_time(o, "created_at", r->created_ms);
    rc |= set_time(o, "updated_at", r->updated_ms);
    rc |= set_time(o, "started_at", r->started_ms);
    rc |= set_time(o, "finished_at", r->finished_ms);
    if (r->state == EG_STATE_RETRYING)
        rc |= set_time(o, "next_attempt_at", r->next_attempt_ms);
    if (r->client)
        rc |= json_object_set_new(o, "client", json_string(r->client));
    cmd = parse_stored(r->body);
    if (cmd)
        rc |= json_object_set_new(o, "command", cmd);
    res = parse_stored(r->result);
    if (res)
        rc |= json_object_set_new(o, "result", res);
    if (r->error_code) {
        err = json_object();
        if (!err) {
            json_decref(o);
            return NULL;
        }
        rc |= json_object_set_new(err, "code", json_string(r->error_code));
        if (r->error_message)
            rc |= json_object_set_new(err, "message", json_string(r->error_message));
        json_t *detail = parse_stored(r->error_detail);
        if (detail)
            rc |= json_object_set_new(err, "exchange", detail);
        rc |= json_object_set_new(o, "error", err);
    }
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void respond_record(struct eg_http_response *resp, int status, const struct eg_cmd_record *r)
{
    respond_json_value(resp, status, record_json(r));
}

static bool is_json_content(const char *ct)
{
    if (!ct)
        return false;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

/* Map a command-parse failure to a problem response. Over-limit at the level of the whole body
 * (batch size, nesting) is 413; an over-long field is a validation error (400). */
static void respond_parse_error(struct eg_http_response *resp, int rc, const struct eg_verr *e)
{
    switch (rc) {
    case EG_ENOMEM:
        eg_http_respond_problem(resp, 500, "out of memory", NULL);
        return;
    case EG_EPARSE:
        eg_http_respond_problem(resp, 400, e->detail, e->field[0] ? e->field : NULL);
        return;
    case EG_ELIMIT:
        if (e->field[0] == '\0' || strcmp(e->field, "commands") == 0) {
            eg_http_respond_problem(resp, 413, e->detail, e->field[0] ? e->field : NULL);
            return;
        }
        /* fall through */
    default:
        eg_http_respond_problem(resp, 400, e->detail, e->field[0] ? e->field : NULL);
    }
}

static void h_post_commands(struct eg_api *api, const struct eg_http_request *req,
                            const char *param, struct eg_http_response *resp)
{
    struct eg_command **cmds = NULL;
    struct eg_submit *items = NULL;
    enum eg_submit_outcome *outcomes = NULL;
    struct eg_cmd_record **records = NULL;
    char **owned = NULL; /* canonical bodies and mailbox keys, 2 per command */
    size_t n = 0;
    bool batch = false;
    struct eg_verr verr = {{0}, {0}};
    int rc;

    if (!is_json_content(req->content_type)) {
        eg_http_respond_problem(resp, 415, "Content-Type must be application/json", NULL);
        return;
    }
    rc = eg_command_parse_body(req->body ? req->body : "", req->body_len, api->max_batch, &cmds, &n,
                               &batch, &verr);
    if (rc < 0) {
        respond_parse_error(resp, rc, &verr);
        return;
    }
    items = eg_calloc(n, sizeof *items);
    outcomes = eg_calloc(n, sizeof *outcomes);
    records = eg_calloc(n, sizeof *records);
    owned = eg_calloc(2 * n, sizeof *owned);
    if (!items || !outcomes || !records || !owned)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        owned[2 * i] = eg_command_canonical(cmds[i]);
        if (!owned[2 * i])
            goto oom;
        owned[2 * i + 1] = eg_command_mailbox_key(cmds[i]);
        if (cmds[i]->mailbox && !owned[2 * i + 1])
            goto oom;
        items[i] = (struct eg_submit){.id = cmds[i]->id,
                                      .type = eg_cmd_type_name(cmds[i]->type),
                                      .mailbox_key = owned[2 * i + 1],
                                      .body = owned[2 * i],
                                      .client = req->client};
    }

    rc = eg_queue_submit(api->queue, items, n, outcomes, records);
    if (rc == EG_ECONFLICT) {
        for (size_t i = 0; i < n; i++) {
            if (outcomes[i] != EG_SUBMIT_CONFLICT)
                continue;
            char field[64], detail[EG_MAX_ID_LEN + 128];
            if (batch)
                snprintf(field, sizeof field, "commands[%zu].id", i);
            else
                snprintf(field, sizeof field, "id");
            snprintf(detail, sizeof detail,
                     "command id '%s' was already accepted with a different body; nothing in "
                     "this request was stored",
                     cmds[i]->id);
            eg_http_respond_problem(resp, 409, detail, field);
            break;
        }
        if (!resp->status)
            eg_http_respond_problem(resp, 409, "command id conflict", "id");
        goto out;
    }
    if (rc < 0) {
        eg_http_respond_problem(resp, rc == EG_ENOMEM ? 500 : 503,
                                "the command journal could not store the request; nothing was "
                                "accepted, retry later",
                                NULL);
        goto out;
    }

    bool any_created = false;
    for (size_t i = 0; i < n; i++)
        any_created |= outcomes[i] == EG_SUBMIT_CREATED;
    if (any_created && api->workers)
        eg_workers_notify(api->workers);
    int status = any_created ? 202 : 200;

    if (!batch) {
        add_header(resp, "Location", eg_asprintf("/api/v1/commands/%s", cmds[0]->id));
        respond_record(resp, status, records[0]);
        goto out;
    }
    json_t *arr = json_array(), *top = json_object();
    if (!arr || !top || json_object_set_new(top, "commands", arr)) {
        json_decref(top);
        goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *r = record_json(records[i]);
        if (!r || json_array_append_new(arr, r) ||
            json_object_set_new(r, "duplicate", json_boolean(outcomes[i] == EG_SUBMIT_EXISTS))) {
            json_decref(top);
            goto oom;
        }
    }
    respond_json_value(resp, status, top);
    goto out;

oom:
    eg_http_respond_problem(resp, 500, "out of memory", NULL);
out:
    if (records)
        eg_cmd_records_free(records, n);
    if (owned)
        for (size_t i = 0; i < 2 * n; i++)
            eg_free(owned[i]);
    eg_free(owned);
    eg_free(outcomes);
    eg_free(items);
    eg_commands_free(cmds, n);
}

static void h_list_commands(struct eg_api *api, const struct eg_http_request *req,
                            const char *param, struct eg_http_response *resp)
{
    int state = -1;
    int64_t after = 0, limit = EG_DEFAULT_PAGE_SIZE, next = 0;
    struct eg_cmd_record **recs = NULL;
    size_t n = 0;
    const char *v;

    for (size_t i = 0; i < req->n_args; i++) {
        const char *k = req->args[i].key;
        if (strcmp(k, "state") && strcmp(k, "after") && strcmp(k, "limit")) {
            eg_http_respond_problem(resp, 400, "unknown query parameter", k);
            return;
        }
    }
    if ((v = eg_http_query(req, "state"))) {
        enum eg_cmd_state s;
        if (eg_cmd_state_parse(v, &s) < 0) {
            eg_http_respond_problem(resp, 400,
                                    "must be one of queued, running, retrying, succeeded, "
                                    "failed, cancelled",
                                    "state");
            return;
        }
        state = (int)s;
    }
    if ((v = eg_http_query(req, "after")) && eg_parse_int64(v, 0, INT64_MAX, &after) < 0) {
        eg_http_respond_problem(resp, 400, "must be a cursor returned as \"next\"", "after");
        return;
    }
    if ((v = eg_http_query(req, "limit")) && eg_parse_int64(v, 1, EG_MAX_PAGE_SIZE, &limit) < 0) {
        char d[64];
        snprintf(d, sizeof d, "must be an integer between 1 and %d", EG_MAX_PAGE_SIZE);
        eg_http_respond_problem(resp, 400, d, "limit");
        return;
    }
    int rc = eg_queue_list(api->queue, state, after, (size_t)limit, &recs, &n, &next);
    if (rc < 0) {
        eg_http_respond_problem(resp, 500, "the command journal could not be read", NULL);
        return;
    }
    json_t *top = json_object(), *arr = json_array();
    if (!top || !arr || json_object_set_new(top, "commands", arr))
        goto oom;
    arr = json_object_get(top, "commands");
    for (size_t i = 0; i < n; i++) {
        if (json_array_append_new(arr, record_json(recs[i])))
            goto oom;
    }
    if (next > 0) {
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRId64, next);
        if (json_object_set_new(top, "next", json_string(buf)))
            goto oom;
    }
    eg_cmd_records_free(recs, n);
    respond_json_value(resp, 200, top);
    return;
oom:
    json_decref(top);
    eg_cmd_records_free(recs, n);
    eg_http_respond_problem(resp, 500, "out of memory", NULL);
}

static bool check_id_param(const char *id, struct eg_http_response *resp)
{
    if (eg_valid_command_id(id))
        return true;
    eg_http_respond_problem(resp, 400, "not a valid command id", "id");
    return false;
}

static void h_get_command(struct eg_api *api, const struct eg_http_request *req, const char *id,
                          struct eg_http_response *resp)
{
    struct eg_cmd_record *r = NULL;
    if (!check_id_param(id, resp))
        return;
    int rc = eg_queue_get(api->queue, id, &r);
    if (rc == EG_ENOTFOUND) {
        eg_http_respond_problem(resp, 404, "no command with this id", "id");
        return;
    }
    if (rc < 0) {
        eg_http_respond_problem(resp, 500, "the command journal could not be read", NULL);
        return;
    }
    respond_record(resp, 200, r);
    eg_cmd_record_free(r);
}

static void h_cancel_command(struct eg_api *api, const struct eg_http_request *req, const char *id,
                             struct eg_http_response *resp)
{
    struct eg_cmd_record *r = NULL;
    if (!check_id_param(id, resp))
        return;
    int rc = eg_queue_cancel(api->queue, id, &r);
    if (rc == EG_ENOTFOUND) {
        eg_http_respond_problem(resp, 404, "no command with this id", "id");
    } else if (rc == EG_ESTATE) {
        char d[160];
        snprintf(d, sizeof d,
                 "the command is %s; only queued or retrying commands can be cancelled",
                 r ? eg_cmd_state_name(r->state) : "no longer pending");
        eg_http_respond_problem(resp, 409, d, "id");
    } else if (rc < 0) {
        eg_http_respond_problem(resp, 500, "the command journal could not be updated", NULL);
    } else {
        respond_record(resp, 200, r);
        /* Final now: its result goes to the console like the workers' (agent/uploader). */
        json_t *view = api->uploader ? record_json(r) : NULL;
        int urc = api->uploader ? eg_uploader_record_command(api->uploader, view) : 0;
        if (urc < 0)
            eg_log_err("command %s: cancelled, but its result could not be queued for upload: %s",
                       id, eg_strerror(urc));
        json_decref(view);
    }
    eg_cmd_record_free(r);
}

static void h_status(struct eg_api *api, const struct eg_http_request *req, const char *param,
                     struct eg_http_response *resp)
{
    int64_t counts[EG_STATE__COUNT] = {0};
    char started[40];
    if (eg_queue_counts(api->queue, counts) < 0) {
        eg_http_respond_problem(resp, 500, "the command journal could not be read", NULL);
        return;
    }
    json_t *q = json_object();
    for (int s = 0; q && s < EG_STATE__COUNT; s++)
        json_object_set_new(q, eg_cmd_state_name((enum eg_cmd_state)s), json_integer(counts[s]));
    json_t *top = json_pack(
        "{s:s, s:s, s:I, s:b, s:{s:s}, s:o, s:{s:I}}", "service", "easgate", "version", EG_VERSION,
        "uptime_s", (json_int_t)((eg_now_ms() - api->started_ms) / 1000), "ready", (int)api->ready,
        "bridge", "backend", api->bridge_name ? api->bridge_name : "none", "queue", q, "workers",
        "in_flight", (json_int_t)(api->workers ? eg_workers_in_flight(api->workers) : 0));
    if (top)
        json_object_set_new(top, "started_at",
                            json_string(eg_format_time(api->started_ms, started, sizeof started)));
    if (top && api->target) {
        json_t *target = eg_target_status(api->target);
        /* "bridge.backend" follows the running target (the bootstrap name until a PUT). */
        const char *kind = json_string_value(json_object_get(target, "kind"));
        if (kind)
            json_object_set_new(json_object_get(top, "bridge"), "backend", json_string(kind));
        if (!target || json_object_set_new(top, "target", target) < 0) {
            json_decref(top);
            top = NULL;
        }
    }
    if (top && api->scheduler) {
        json_t *inv = eg_scheduler_status(api->scheduler);
        if (!inv || json_object_set_new(top, "inventory", inv) < 0) {
            json_decref(top);
            top = NULL;
        }
    }
    if (top && api->uploader) {
        json_t *upload = eg_uploader_status(api->uploader);
        if (!upload || json_object_set_new(top, "upload", upload) < 0) {
            json_decref(top);
            top = NULL;
        }
    }
    respond_json_value(resp, top ? 200 : 500, top);
}

static void h_put_config(struct eg_api *api, const struct eg_http_request *req, const char *param,
                         struct eg_http_response *resp)
{
    struct eg_target_error err;
    json_t *doc = NULL;

    if (!api->target) {
        eg_http_respond_problem(resp, 503, "the Exchange target cannot be configured", NULL);
        return;
    }
    if (!is_json_content(req->content_type)) {
        eg_http_respond_problem(resp, 415, "Content-Type must be application/json", NULL);
        return;
    }
    int rc = eg_target_put(api->target, req->body ? req->body : "", req->body_len, &doc, &err);
    const char *field = err.v.field[0] ? err.v.field : NULL;
    if (rc == 0) {
        eg_log_notice("Exchange target set by %s: kind %s, revision %lld", req->client,
                      json_string_value(json_object_get(json_object_get(doc, "target"), "kind")),
                      (long long)json_integer_value(json_object_get(doc, "revision")));
        if (api->workers && eg_workers_set_retry_deadline(
                                api->workers, eg_target_retry_deadline_ms(api->target)) < 0)
            eg_log_warn("retry.deadline_ms out of range; the previous deadline stays");
        respond_json_value(resp, 200, doc);
        return;
    }
    if (rc == EG_ENOMEM && err.stage == EG_TARGET_STAGE_PARSE) {
        eg_http_respond_problem(resp, 500, "out of memory", NULL);
        return;
    }
    switch (err.stage) {
    case EG_TARGET_STAGE_PARSE:
        /* Nesting of the whole body over the limit is 413; a member over its limit is 400. */
        eg_http_respond_problem(resp, rc == EG_ELIMIT && !field ? 413 : 400, err.v.detail, field);
        return;
    case EG_TARGET_STAGE_BUILD:
        eg_log_warn("Exchange target from %s refused: %s", req->client, err.v.detail);
        eg_http_respond_problem(resp, rc == EG_ENOMEM ? 500 : 422, err.v.detail, field);
        return;
    case EG_TARGET_STAGE_STORE:
        eg_log_err("Exchange target from %s not stored: %s", req->client, err.v.detail);
        eg_http_respond_problem(resp, 500, err.v.detail, NULL);
        return;
    case EG_TARGET_STAGE_APPLY:
        eg_log_err("Exchange target from %s: %s", req->client, err.v.detail);
        eg_http_respond_problem(resp, 500, err.v.detail, NULL);
        return;
    }
    eg_http_respond_problem(resp, 500, "internal error", NULL);
}

static void h_get_config(struct eg_api *api, const struct eg_http_request *req, const char *param,
                         struct eg_http_response *resp)
{
    json_t *doc = NULL;
    int rc = api->target ? eg_target_get(api->target, &doc) : EG_ENOTFOUND;
    if (rc == EG_ENOTFOUND) {
        eg_http_respond_problem(resp, 404,
                                "no Exchange target was set through the API; the agent uses "
                                "the bridge of its command line or configuration file",
                                NULL);
        return;
    }
    if (rc < 0) {
        eg_http_respond_problem(resp, 500, "out of memory", NULL);
        return;
    }
    respond_json_value(resp, 200, doc);
}

/* ---- inventory ---- */

/* POST /api/v1/inventory/sync {"mode": "full"|"quick", "mailbox"?}: 202 with the sync that will
 * serve the request (started now, or queued after the running one; coalesced into one already
 * queued). An empty body is a quick sync of every mailbox. */
static void h_inventory_sync(struct eg_api *api, const struct eg_http_request *req,
                             const char *param, struct eg_http_response *resp)
{
    static const char *const members[] = {"mode", "mailbox", NULL};
    enum eg_inv_mode mode = EG_INV_QUICK;
    const char *mailbox = NULL, *key;
    json_t *body = NULL, *v;
    json_error_t jerr;
    struct eg_sync_ticket t;

    if (!api->scheduler) {
        eg_http_respond_problem(resp, 503, "the inventory is not available", NULL);
        return;
    }
    if (req->body_len > 0) {
        if (!is_json_content(req->content_type)) {
            eg_http_respond_problem(resp, 415, "Content-Type must be application/json", NULL);
            return;
        }
        int rc = eg_json_load(req->body, req->body_len, &body, &jerr);
        if (rc == EG_ENOMEM) {
            eg_http_respond_problem(resp, 500, "out of memory", NULL);
            return;
        }
        if (rc < 0) {
            char d[256];
            snprintf(d, sizeof d, "malformed JSON at line %d, column %d", jerr.line, jerr.column);
            eg_http_respond_problem(resp, 400, d, NULL);
            return;
        }
        if (!json_is_object(body)) {
            json_decref(body);
            eg_http_respond_problem(resp, 400, "the body must be a JSON object", NULL);
            return;
        }
    }
    json_object_foreach(body, key, v)
    {
        bool known = false;
        for (size_t i = 0; members[i]; i++)
            known |= strcmp(key, members[i]) == 0;
        if (!known) {
            eg_http_respond_problem(resp, 400, "unknown field", key);
            goto out;
        }
    }
    if ((v = json_object_get(body, "mode"))) {
        const char *m = json_string_value(v);
        if (m && strcmp(m, "full") == 0)
            mode = EG_INV_FULL;
        else if (!m || strcmp(m, "quick") != 0) {
            eg_http_respond_problem(resp, 400, "must be \"full\" or \"quick\"", "mode");
            goto out;
        }
    }
    if ((v = json_object_get(body, "mailbox")) && !json_is_null(v)) {
        mailbox = json_string_value(v);
        if (!mailbox || !eg_valid_mailbox(mailbox)) {
            eg_http_respond_problem(resp, 400, "must be a mailbox identity (1..256 bytes of UTF-8)",
                                    "mailbox");
            goto out;
        }
    }
    int rc = eg_scheduler_trigger(api->scheduler, mode, mailbox, &t);
    if (rc < 0) {
        eg_http_respond_problem(resp, rc == EG_ENOMEM ? 500 : 503,
                                rc == EG_ESHUTDOWN ? "the agent is shutting down"
                                                   : "the sync could not be requested",
                                NULL);
        goto out;
    }
    json_t *sync =
        json_pack("{s:I, s:s, s:s, s:b}", "id", (json_int_t)t.id, "mode", eg_inv_mode_name(t.mode),
                  "state", t.queued ? "queued" : "started", "coalesced", (int)t.coalesced);
    if (sync && !t.whole_org && mailbox)
        json_object_set_new(sync, "mailbox", json_string(mailbox));
    if (sync && t.running_id)
        json_object_set_new(sync, "after", json_integer((json_int_t)t.running_id));
    add_header(resp, "Location", eg_strdup("/api/v1/status"));
    respond_json_value(resp, 202, sync ? json_pack("{s:o}", "sync", sync) : NULL);
out:
    json_decref(body);
}

/* "2026-11-22T10:00:00Z", with optional fraction and offset (+hh:mm, or " hh:mm" where a query
 * decoder turned '+' into a space), or a number of milliseconds since the epoch. */
static int parse_since(const char *s, int64_t *ret)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (eg_parse_int64(s, 0, INT64_MAX / 2, ret) == 0)
        return 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19 ||
        mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return EG_EINVAL;
    const char *p = s + n;
    int64_t frac_ms = 0, scale = 100;
    if (*p == '.') {
        if (!(p[1] >= '0' && p[1] <= '9'))
            return EG_EINVAL;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac_ms += scale > 0 ? (*p - '0') * scale : 0;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-' || *p == ' ') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
            return EG_EINVAL;
        off = (int64_t)(oh * 60 + om) * 60000 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return EG_EINVAL;
    }
    if (*p)
        return EG_EINVAL;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return EG_EINVAL;
    *ret = (int64_t)t * 1000 + frac_ms - off;
    return 0;
}

/* GET /api/v1/inventory?mailbox=&changed_since=&cursor=&limit= */
static void h_inventory(struct eg_api *api, const struct eg_http_request *req, const char *param,
                        struct eg_http_response *resp)
{
    struct eg_inv_query q = {.limit = EG_DEFAULT_PAGE_SIZE};
    json_t *devices = NULL;
    char *next = NULL;
    int64_t limit = EG_DEFAULT_PAGE_SIZE;
    const char *v;

    if (!api->inventory) {
        eg_http_respond_problem(resp, 503, "the inventory is not available", NULL);
        return;
    }
    for (size_t i = 0; i < req->n_args; i++) {
        const char *k = req->args[i].key;
        if (strcmp(k, "mailbox") && strcmp(k, "changed_since") && strcmp(k, "cursor") &&
            strcmp(k, "limit")) {
            eg_http_respond_problem(resp, 400, "unknown query parameter", k);
            return;
        }
    }
    if ((v = eg_http_query(req, "limit")) && eg_parse_int64(v, 1, EG_MAX_PAGE_SIZE, &limit) < 0) {
        char d[64];
        snprintf(d, sizeof d, "must be an integer between 1 and %d", EG_MAX_PAGE_SIZE);
        eg_http_respond_problem(resp, 400, d, "limit");
        return;
    }
    q.limit = (size_t)limit;
    if ((v = eg_http_query(req, "mailbox"))) {
        if (!eg_valid_mailbox(v)) {
            eg_http_respond_problem(resp, 400, "must be a mailbox identity (1..256 bytes of UTF-8)",
                                    "mailbox");
            return;
        }
        q.mailbox = v;
    }
    if ((v = eg_http_query(req, "changed_since")) && parse_since(v, &q.changed_since_ms) < 0) {
        eg_http_respond_problem(
            resp, 400,
            "must be an RFC 3339 time (2026-11-22T10:00:00Z) or milliseconds since the epoch",
            "changed_since");
        return;
    }
    q.cursor = eg_http_query(req, "cursor");
    int rc = eg_inventory_list(api->inventory, &q, &devices, &next);
    if (rc == EG_EINVAL) {
        eg_http_respond_problem(resp, 400, "must be a cursor returned as \"next\"", "cursor");
        return;
    }
    if (rc < 0) {
        eg_http_respond_problem(resp, rc == EG_ENOMEM ? 500 : 503,
                                "the inventory could not be read", NULL);
        return;
    }
    json_t *top = json_pack("{s:o}", "devices", devices);
    if (top && next && json_object_set_new(top, "next", json_string(next)) < 0) {
        json_decref(top);
        top = NULL;
    }
    eg_free(next);
    respond_json_value(resp, top ? 200 : 500, top);
}

static void h_healthz(struct eg_api *api, const struct eg_http_request *req, const char *param,
                      struct eg_http_response *resp)
{
    respond_json_value(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_readyz(struct eg_api *api, const struct eg_http_request *req, const char *param,
                     struct eg_http_response *resp)
{
    bool ready = api->ready;
    respond_json_value(resp, ready ? 200 : 503,
                       json_pack("{s:s}", "status", ready ? "ready" : "not ready"));
}

static void h_metrics(struct eg_api *api, const struct eg_http_request *req, const char *param,
                      struct eg_http_response *resp)
{
    int64_t counts[EG_STATE__COUNT];
    char *text = NULL;
    bool have = eg_queue_counts(api->queue, counts) == 0;
    if (eg_metrics_render(api->metrics, have ? counts : NULL, &text) < 0 ||
        (api->uploader && eg_uploader_metrics(api->uploader, &text) < 0) ||
        (api->scheduler && eg_scheduler_metrics(api->scheduler, &text) < 0)) {
        eg_free(text);
        eg_http_respond_problem(resp, 500, "metrics could not be rendered", NULL);
        return;
    }
    respond_text(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}

void eg_api_handle(void *ctx, const struct eg_http_request *req, struct eg_http_response *resp)
{
    struct eg_api *api = ctx;
    const struct route *path_match = NULL;
    char allow[64] = "";

    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const char *param = NULL;
        if (!route_match(routes[i].tmpl, req->path, &param))
            continue;
        path_match = &routes[i];
        if (strcmp(routes[i].method, req->method) == 0) {
            resp->route = routes[i].tmpl;
            routes[i].fn(api, req, param, resp);
            goto out;
        }
        size_t len = strlen(allow);
        snprintf(allow + len, sizeof allow - len, "%s%s", len ? ", " : "", routes[i].method);
    }
    if (path_match) {
        resp->route = path_match->tmpl;
        add_header(resp, "Allow", eg_strdup(allow));
        eg_http_respond_problem(resp, 405, "method not allowed on this resource", NULL);
    } else {
        resp->route = "(unknown)";
        eg_http_respond_problem(resp, 404, "no such resource", NULL);
    }
out:
    if (api->metrics)
        eg_metrics_http(api->metrics, resp->route, resp->status);
}

void eg_api_observe(void *ctx, const char *route, int status)
{
    struct eg_api *api = ctx;
    if (api->metrics)
        eg_metrics_http(api->metrics, route, status);
}
