/* bridge_rest.c - the REST runner of the cmdlet catalogue for Exchange Online (contract:
 * bridge_rest.h; wire: psrp-wire.md §16; payloads: rest_json.h; token: eo_token.h). */
#include "exchange/bridge_rest.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/catalogue.h"
#include "exchange/eo_token.h"
#include "exchange/psrp_pool.h"
#include "exchange/rest_json.h"
#include "transport/http_client.h"

#define DEFAULT_API_URL     "https://outlook.office365.com/adminapi/beta"
#define DEFAULT_TOKEN_URL   "https://login.microsoftonline.com/%s/oauth2/v2.0/token"
#define DEFAULT_CONCURRENCY 4
#define ANCHOR_FMT          "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@%s"
#define JSON_TYPE           "application/json; charset=utf-8"
#define MAX_TENANT_LEN      253

struct conn {
    struct eg_http_client *http;
    struct conn *next;
};

struct rest_runner {
    char *invoke_url; /* <api_url>/<tenant>/InvokeCommand */
    char *anchor;     /* X-AnchorMailbox */
    char connection_id[37];
    char page_size[40]; /* Prefer */
    char *ca_file;
    bool insecure;
    int64_t connect_ms, io_ms, response_ms;
    struct eg_eo_token *token;
    pthread_mutex_t lock; /* guards idle */
    struct conn *idle;    /* one HTTP client per call in flight, kept for reuse */
};

static int uuid4(char out[37])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return EG_EINTERNAL;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* ---- connections ---------------------------------------------------------------------------- */

static int conn_get(struct rest_runner *r, struct conn **ret, struct eg_bridge_error *err)
{
    pthread_mutex_lock(&r->lock);
    struct conn *c = r->idle;
    if (c)
        r->idle = c->next;
    pthread_mutex_unlock(&r->lock);
    if (c) {
        *ret = c;
        return 0;
    }
    if (!(c = eg_calloc(1, sizeof *c))) {
        eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory");
        return EG_ENOMEM;
    }
    struct eg_http_client_opts ho = {.url = r->invoke_url,
                                     .ca_file = r->ca_file,
                                     .insecure = r->insecure,
                                     .connect_timeout_ms = r->connect_ms,
                                     .io_timeout_ms = r->io_ms,
                                     .response_timeout_ms = r->response_ms,
                                     .max_response_bytes = EG_REST_MAX_RESPONSE_BYTES};
    int rc = eg_http_client_new(&ho, &c->http);
    if (rc < 0) {
        eg_free(c);
        eg_bridge_error_set(err, rc == EG_ENOMEM ? EG_BERR_INTERNAL : EG_BERR_UNREACHABLE, true,
                            "cannot set up the HTTP client for Exchange Online: %s",
                            eg_strerror(rc));
        return rc;
    }
    *ret = c;
    return 0;
}

static void conn_put(struct rest_runner *r, struct conn *c, bool healthy)
{
    if (!c)
        return;
    if (!healthy) {
        eg_http_client_free(c->http);
        eg_free(c);
        return;
    }
    pthread_mutex_lock(&r->lock);
    c->next = r->idle;
    r->idle = c;
    pthread_mutex_unlock(&r->lock);
}

/* ---- one command ---------------------------------------------------------------------------- */

static void wipe_free(char *s)
{
    if (s) {
        eg_memzero(s, strlen(s));
        eg_free(s);
    }
}

/* POST body to url with a token; one retry with a new token after a 401. */
static int post_page(struct rest_runner *r, struct conn *c, const char *url, const char *cmdlet,
                     const char *body, size_t len, struct eg_http_client_response *hr,
                     struct eg_bridge_error *err)
{
    int rc = EG_EAUTH;
    for (int attempt = 0; attempt < 2 && rc == EG_EAUTH; attempt++) {
        char *token = NULL, *auth = NULL, request_id[37];
        if ((rc = eg_eo_token_get(r->token, &token, err)) < 0)
            return rc;
        if (uuid4(request_id) < 0 || !(auth = eg_asprintf("Bearer %s", token))) {
            wipe_free(token);
            eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory");
            return EG_ENOMEM;
        }
        const struct eg_http_client_header h[] = {
            {"Authorization", auth},
            {"Accept", "application/json"},
            {"Accept-Charset", "UTF-8"},
            {"X-CmdletName", cmdlet},
            {"X-ResponseFormat", "json"},
            {"X-ClientApplication", "ExoManagementModule"},
            {"X-SerializationLevel", "Partial"},
            {"X-AnchorMailbox", r->anchor},
            {"Prefer", r->page_size},
            {"connection-id", r->connection_id},
            {"client-request-id", request_id},
        };
        struct eg_http_client_req rq = {.method = "POST",
                                        .url = url,
                                        .headers = h,
                                        .n_headers = sizeof h / sizeof h[0],
                                        .content_type = JSON_TYPE,
                                        .body = body,
                                        .body_len = len};
        rc = eg_http_client_request(c->http, &rq, hr);
        wipe_free(auth);
        if (rc == EG_EAUTH) /* the token is no good (revoked, role removed): a new one, once */
            eg_eo_token_invalidate(r->token, token);
        wipe_free(token);
    }
    if (rc == EG_EAUTH) {
        eg_bridge_error_set(err, EG_BERR_PERMISSION_DENIED, false,
                            "Exchange Online refused the app's token (HTTP 401), also a new one");
        return rc;
    }
    if (rc < 0) {
        const char *code = rc == EG_ETIMEDOUT ? EG_BERR_TIMEOUT
                           : rc == EG_ENOMEM  ? EG_BERR_INTERNAL
                           : rc == EG_ELIMIT  ? EG_BERR_INTERNAL
                                              : EG_BERR_UNREACHABLE;
        eg_bridge_error_set(err, code, rc != EG_ELIMIT, "Exchange Online: %s%s%s", eg_strerror(rc),
                            eg_http_client_last_error(c->http)[0] ? ": " : "",
                            eg_http_client_last_error(c->http));
    }
    return rc;
}

static int rest_run(void *impl, struct eg_ps_command *cmd, enum eg_classify_target target,
                    eg_catalogue_output_fn out, void *out_ctx, struct eg_bridge_error *err)
{
    struct rest_runner *r = impl;
    struct conn *c = NULL;
    struct eg_http_client_response hr = {0};
    struct eg_rest_page page = {0};
    char *body = NULL, *next = NULL;
    size_t len = 0;
    bool healthy = true;
    int rc;

    if ((rc = eg_rest_command_body(cmd, &body, &len)) < 0) {
        eg_bridge_error_set(err, rc == EG_ENOMEM ? EG_BERR_INTERNAL : EG_BERR_INVALID_ARGUMENT,
                            rc == EG_ENOMEM, "%s cannot be expressed as a REST call: %s",
                            cmd ? cmd->name : "(none)", eg_strerror(rc));
        goto out;
    }
    if ((rc = conn_get(r, &c, err)) < 0)
        goto out;
    for (unsigned pages = 0;; pages++) {
        if (pages >= EG_REST_MAX_PAGES) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "%s: more than %d result pages",
                                cmd->name, EG_REST_MAX_PAGES);
            rc = EG_ELIMIT;
            goto out;
        }
        if ((rc = post_page(r, c, next ? next : r->invoke_url, cmd->name, body, len, &hr, err)) <
            0) {
            healthy = rc == EG_EAUTH;
            goto out;
        }
        if (hr.status < 200 || hr.status > 299) {
            struct eg_rest_answer a = {
                .status = hr.status,
                .content_type = hr.content_type,
                .exception_type = eg_http_client_response_header(&hr, "X-ExceptionType"),
                .retry_after = eg_http_client_response_header(&hr, "Retry-After"),
                .body = hr.body,
                .body_len = hr.body_len};
            eg_rest_classify(&a, target, err);
            rc = EG_EREMOTE;
            goto out;
        }
        if ((rc = eg_rest_parse_page(hr.body, hr.body_len, &page)) < 0) {
            eg_bridge_error_set(err, rc == EG_ENOMEM ? EG_BERR_INTERNAL : EG_BERR_UNREACHABLE, true,
                                "%s: Exchange Online's answer is not a result page: %s", cmd->name,
                                eg_strerror(rc));
            goto out;
        }
        size_t i;
        json_t *o;
        json_array_foreach(page.values, i, o)
        {
            struct eg_ps_value *v = NULL;
            if ((rc = eg_rest_object_to_value(o, &v)) < 0) {
                eg_bridge_error_set(err, rc == EG_ENOMEM ? EG_BERR_INTERNAL : EG_BERR_UNREACHABLE,
                                    true, "%s: an output object is unusable: %s", cmd->name,
                                    eg_strerror(rc));
                goto out;
            }
            if (!out) {
                eg_ps_value_free(v);
                continue;
            }
            if ((rc = out(out_ctx, v)) != 0) {
                eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "stopped by the caller");
                goto out;
            }
        }
        if (!page.next_link)
            break;
        if (!eg_rest_link_ok(r->invoke_url, page.next_link)) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false,
                                "%s: Exchange Online's next page is on another host; not "
                                "followed",
                                cmd->name);
            rc = EG_EPROTO;
            goto out;
        }
        eg_free(next);
        if (!(next = eg_strdup(page.next_link))) {
            eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory");
            rc = EG_ENOMEM;
            goto out;
        }
        eg_rest_page_clear(&page);
        eg_http_client_response_clear(&hr);
    }
    rc = 0;
out:
    eg_rest_page_clear(&page);
    eg_http_client_response_clear(&hr);
    conn_put(r, c, healthy);
    eg_free(next);
    eg_free(body);
    eg_ps_command_free(cmd);
    return rc;
}

static const char *rest_url(void *impl)
{
    struct rest_runner *r = impl;
    return r->invoke_url;
}

static void rest_destroy(void *impl)
{
    struct rest_runner *r = impl;
    if (!r)
        return;
    while (r->idle) {
        struct conn *c = r->idle;
        r->idle = c->next;
        eg_http_client_free(c->http);
        eg_free(c);
    }
    eg_eo_token_free(r->token);
    eg_free(r->invoke_url);
    eg_free(r->anchor);
    eg_free(r->ca_file);
    pthread_mutex_destroy(&r->lock);
    eg_free(r);
}

static const struct eg_catalogue_runner_ops rest_runner_ops = {
    .name = "rest",
    .run = rest_run,
    .url = rest_url,
    .destroy = rest_destroy,
};

/* A tenant GUID or domain: letters, digits, '-' and '.' only (it goes into URLs and headers). */
static bool tenant_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n > MAX_TENANT_LEN || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return false;
    return strstr(s, "..") == NULL;
}

int eg_bridge_rest_new(const struct eg_bridge_rest_opts *o, struct eg_bridge **ret)
{
    struct rest_runner *r = NULL;
    char *token_url = NULL, *api = NULL;
    int rc = EG_EINVAL;

    if (!o || !ret || !tenant_ok(o->tenant) || !o->app_id || !o->cert_pem || !o->key_pem ||
        o->max_concurrency > EG_PSRP_MAX_PIPELINES ||
        eg_http_client_check_timeouts(o->connect_timeout_ms, o->io_timeout_ms,
                                      o->response_timeout_ms) < 0)
        return EG_EINVAL;
    if (!(r = eg_calloc(1, sizeof *r)))
        return EG_ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    r->insecure = o->insecure;
    r->connect_ms = o->connect_timeout_ms;
    r->io_ms = o->io_timeout_ms;
    r->response_ms = o->response_timeout_ms;
    snprintf(r->page_size, sizeof r->page_size, "odata.maxpagesize=%d", EG_REST_MAX_PAGE_SIZE);
    rc = EG_ENOMEM;
    api = eg_strdup(o->api_url ? o->api_url : DEFAULT_API_URL);
    if (!api)
        goto fail;
    for (size_t n = strlen(api); n && api[n - 1] == '/'; n--)
        api[n - 1] = '\0';
    r->invoke_url = eg_asprintf("%s/%s/InvokeCommand", api, o->tenant);
    r->anchor = eg_asprintf(ANCHOR_FMT, o->tenant);
    token_url = o->token_url ? eg_strdup(o->token_url) : eg_asprintf(DEFAULT_TOKEN_URL, o->tenant);
    if (!r->invoke_url || !r->anchor || !token_url ||
        (o->ca_file && !(r->ca_file = eg_strdup(o->ca_file))))
        goto fail;
    rc = EG_EINVAL;
    if (strchr(api, '?') || strchr(api, '#') || !eg_rest_url_allowed(r->invoke_url, o->allow_http))
        goto fail;
    if ((rc = uuid4(r->connection_id)) < 0)
        goto fail;
    struct eg_eo_token_opts to = {.app_id = o->app_id,
                                  .cert_pem = o->cert_pem,
                                  .key_pem = o->key_pem,
                                  .token_url = token_url,
                                  .ca_file = o->ca_file,
                                  .insecure = o->insecure,
                                  .allow_http = o->allow_http,
                                  .connect_timeout_ms = o->connect_timeout_ms,
                                  .io_timeout_ms = o->io_timeout_ms,
                                  .response_timeout_ms = o->response_timeout_ms};
    if ((rc = eg_eo_token_new(&to, &r->token)) < 0)
        goto fail;
    eg_free(token_url);
    eg_free(api);
    struct eg_catalogue_opts co = {
        .ops = &rest_runner_ops,
        .runner = r,
        .version = EG_EXCHANGE_ONLINE,
        .online = true,
        .ceiling = o->max_concurrency ? o->max_concurrency : DEFAULT_CONCURRENCY,
    };
    return eg_catalogue_bridge_new(&co, ret);
fail:
    eg_free(token_url);
    eg_free(api);
    rest_destroy(r);
    return rc;
}
