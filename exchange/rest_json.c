/* rest_json.c - Exchange Online InvokeCommand payloads and errors (contract: rest_json.h). */
#include "exchange/rest_json.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/limits.h"
#include "common/util.h"

#define HASHTABLE_TYPE "#Exchange.GenericHashTable"

/* ---- limited parsing ------------------------------------------------------------------------ */

/* Deepest nesting of arrays and objects in text (strings skipped), stopping past max. */
static size_t json_depth(const char *text, size_t len, size_t max)
{
    size_t depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
            continue;
        }
        if (ch == '"') {
            in_string = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > deepest && (deepest = depth) > max)
                return deepest;
        } else if ((ch == '}' || ch == ']') && depth) {
            depth--;
        }
    }
    return deepest;
}

int eg_rest_json_load(const char *text, size_t len, json_t **ret)
{
    json_error_t jerr;
    if (!text || !ret)
        return EG_EINVAL;
    if (len > EG_REST_MAX_RESPONSE_BYTES)
        return EG_ELIMIT;
    if (json_depth(text, len, EG_REST_MAX_JSON_DEPTH) > EG_REST_MAX_JSON_DEPTH)
        return EG_ELIMIT;
    return eg_json_load(text, len, ret, &jerr);
}

/* ---- the request body ----------------------------------------------------------------------- */

static int value_to_json(const struct eg_ps_value *v, int depth, json_t **ret);

static int obj_to_json(const struct eg_ps_value *v, int depth, json_t **ret)
{
    const struct eg_ps_obj *o = v->u.obj;
    int rc = 0;
    if (o->container == EG_PS_CT_DCT) {
        json_t *h = json_pack("{s:s}", "@odata.type", HASHTABLE_TYPE);
        if (!h)
            return EG_ENOMEM;
        for (size_t i = 0; i < o->n_entries && rc == 0; i++) {
            const char *key = NULL;
            size_t klen = 0;
            json_t *x = NULL;
            if (eg_ps_get_string(o->entries[i].key, &key, &klen) < 0 || strlen(key) != klen ||
                strchr(key, '@')) {
                rc = EG_EINVAL;
                break;
            }
            if ((rc = value_to_json(o->entries[i].value, depth + 1, &x)) == 0 &&
                json_object_set_new(h, key, x) < 0)
                rc = EG_ENOMEM;
        }
        if (rc < 0) {
            json_decref(h);
            return rc;
        }
        *ret = h;
        return 0;
    }
    if (o->container != EG_PS_CT_NONE) {
        json_t *a = json_array();
        if (!a)
            return EG_ENOMEM;
        for (size_t i = 0; i < o->n_items && rc == 0; i++) {
            json_t *x = NULL;
            if ((rc = value_to_json(o->items[i], depth + 1, &x)) == 0 &&
                json_array_append_new(a, x) < 0)
                rc = EG_ENOMEM;
        }
        if (rc < 0) {
            json_decref(a);
            return rc;
        }
        *ret = a;
        return 0;
    }
    if (o->base && o->has_to_string) { /* an enum: Exchange binds its name */
        *ret = json_stringn(o->to_string.s, o->to_string.len);
        return *ret ? 0 : EG_EINVAL;
    }
    if (o->base)
        return value_to_json(o->base, depth + 1, ret);
    return EG_EINVAL; /* a property bag: REST parameters cannot carry one */
}

static int value_to_json(const struct eg_ps_value *v, int depth, json_t **ret)
{
    if (!v || depth > EG_REST_MAX_JSON_DEPTH)
        return EG_EINVAL;
    switch (v->kind) {
    case EG_PS_NIL:
        *ret = json_null();
        return 0;
    case EG_PS_S:
        /* json_stringn refuses invalid UTF-8 (NULL), which is EG_EINVAL here */
        *ret = json_stringn(v->text.s, v->text.len);
        return *ret ? 0 : EG_EINVAL;
    case EG_PS_B:
        *ret = json_boolean(v->u.b);
        return 0;
    case EG_PS_SB:
    case EG_PS_I16:
    case EG_PS_I32:
    case EG_PS_I64:
        *ret = json_integer((json_int_t)v->u.i);
        return *ret ? 0 : EG_ENOMEM;
    case EG_PS_BY:
    case EG_PS_U16:
    case EG_PS_U32:
    case EG_PS_U64:
        if (v->u.u > INT64_MAX)
            return EG_EINVAL;
        *ret = json_integer((json_int_t)v->u.u);
        return *ret ? 0 : EG_ENOMEM;
    case EG_PS_SG:
    case EG_PS_DB:
        *ret = json_real(v->u.d);
        return *ret ? 0 : EG_EINVAL; /* NaN, infinities */
    case EG_PS_OBJ:
        return obj_to_json(v, depth, ret);
    default:
        return EG_EINVAL;
    }
}

int eg_rest_command_body(const struct eg_ps_command *cmd, char **ret, size_t *ret_len)
{
    json_t *params = NULL, *doc = NULL;
    int rc = 0;
    if (!cmd || !cmd->name || !ret || !eg_ps_cmdlet_name_valid(cmd->name) || cmd->is_script)
        return EG_EINVAL;
    if (!(params = json_object()))
        return EG_ENOMEM;
    for (size_t i = 0; i < cmd->n_params && rc == 0; i++) {
        const struct eg_ps_param *p = &cmd->params[i];
        json_t *v = NULL;
        if (p->kind == EG_PS_PARAM_POSITIONAL || !p->name || !eg_ps_param_name_valid(p->name)) {
            rc = EG_EINVAL;
            break;
        }
        if (p->kind == EG_PS_PARAM_SWITCH)
            v = json_true();
        else if ((rc = value_to_json(p->value, 0, &v)) < 0)
            break;
        if (json_object_set_new(params, p->name, v) < 0)
            rc = EG_ENOMEM;
    }
    if (rc < 0) {
        json_decref(params);
        return rc;
    }
    doc = json_pack("{s:{s:s, s:o}}", "CmdletInput", "CmdletName", cmd->name, "Parameters", params);
    if (!doc)
        return EG_ENOMEM;
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text)
        return EG_ENOMEM;
    *ret = text;
    if (ret_len)
        *ret_len = strlen(text);
    return 0;
}

/* ---- pages ---------------------------------------------------------------------------------- */

int eg_rest_parse_page(const char *body, size_t len, struct eg_rest_page *ret)
{
    json_t *doc = NULL;
    int rc;
    if (!ret || (!body && len))
        return EG_EINVAL;
    memset(ret, 0, sizeof *ret);
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len) { /* 204-style: nothing */
        if (!(doc = json_pack("{s:[]}", "value")))
            return EG_ENOMEM;
    } else if ((rc = eg_rest_json_load(body, len, &doc)) < 0) {
        return rc;
    }
    json_t *values = json_object_get(doc, "value");
    json_t *next = json_object_get(doc, "@odata.nextLink");
    if (!json_is_object(doc) || !json_is_array(values) || (next && !json_is_string(next))) {
        json_decref(doc);
        return EG_EPROTO;
    }
    size_t k;
    json_t *it;
    json_array_foreach(values, k, it) if (!json_is_object(it))
    {
        json_decref(doc);
        return EG_EPROTO;
    }
    ret->doc = doc;
    ret->values = values;
    ret->next_link = next ? json_string_value(next) : NULL;
    return 0;
}

void eg_rest_page_clear(struct eg_rest_page *p)
{
    if (!p)
        return;
    json_decref(p->doc);
    memset(p, 0, sizeof *p);
}

static int json_to_value(const json_t *j, const char *annotation, int depth,
                         struct eg_ps_value **ret);

static int object_value(const json_t *obj, int depth, struct eg_ps_value **ret)
{
    static const char *const tn[] = {"Exchange.GenericHashTable"};
    struct eg_ps_value *o = NULL;
    const char *k;
    json_t *v;
    int rc = 0;
    if (depth > EG_REST_MAX_JSON_DEPTH)
        return EG_ELIMIT;
    if (!(o = eg_ps_new_obj()))
        return EG_ENOMEM;
    if ((rc = eg_ps_obj_set_types(o, tn, 1)) < 0)
        goto out;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (strchr(k, '@'))
            continue; /* "@odata.context", "X@odata.type", "X@data.type" */
        char ann_key[320];
        const char *ann = NULL;
        if (strlen(k) < 256) {
            snprintf(ann_key, sizeof ann_key, "%s@data.type", k);
            ann = json_string_value(json_object_get(obj, ann_key));
        }
        struct eg_ps_value *x = NULL;
        if ((rc = json_to_value(v, ann, depth + 1, &x)) < 0 ||
            (rc = eg_ps_obj_add_prop(o, k, x)) < 0)
            goto out;
    }
out:
    if (rc < 0) {
        eg_ps_value_free(o);
        return rc;
    }
    *ret = o;
    return 0;
}

static int array_value(const json_t *a, int depth, struct eg_ps_value **ret)
{
    size_t i, n = json_array_size(a);
    json_t *it;
    bool all_strings = true;
    json_array_foreach(a, i, it) all_strings &= json_is_string(it);
    if (all_strings) {
        const char **items = n ? eg_calloc(n, sizeof *items) : NULL;
        if (n && !items)
            return EG_ENOMEM;
        json_array_foreach(a, i, it) items[i] = json_string_value(it);
        *ret = eg_ps_new_string_array(items, n);
        eg_free(items);
        return *ret ? 0 : EG_ENOMEM;
    }
    static const char *const tn[] = {"System.Object[]", "System.Array", "System.Object"};
    struct eg_ps_value *l = eg_ps_new_list(tn, 3);
    if (!l)
        return EG_ENOMEM;
    json_array_foreach(a, i, it)
    {
        struct eg_ps_value *x = NULL;
        int rc = json_to_value(it, NULL, depth + 1, &x);
        if (rc == 0)
            rc = eg_ps_obj_add_item(l, x);
        if (rc < 0) {
            eg_ps_value_free(l);
            return rc;
        }
    }
    *ret = l;
    return 0;
}

static int json_to_value(const json_t *j, const char *annotation, int depth,
                         struct eg_ps_value **ret)
{
    if (depth > EG_REST_MAX_JSON_DEPTH)
        return EG_ELIMIT;
    switch (json_typeof(j)) {
    case JSON_STRING:
        if (annotation && strcmp(annotation, "System.DateTime") == 0 &&
            eg_ps_new_text(EG_PS_DT, json_string_value(j), json_string_length(j), ret) == 0)
            return 0;
        *ret = eg_ps_new_stringn(json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        *ret = v >= INT32_MIN && v <= INT32_MAX ? eg_ps_new_i32((int32_t)v) : eg_ps_new_i64(v);
        break;
    }
    case JSON_REAL:
        *ret = eg_ps_new_double(json_real_value(j));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        *ret = eg_ps_new_bool(json_is_true(j));
        break;
    case JSON_NULL:
        *ret = eg_ps_new_nil();
        break;
    case JSON_ARRAY:
        return array_value(j, depth, ret);
    case JSON_OBJECT:
        return object_value(j, depth, ret);
    default:
        return EG_EINVAL;
    }
    return *ret ? 0 : EG_ENOMEM;
}

int eg_rest_object_to_value(const json_t *obj, struct eg_ps_value **ret)
{
    if (!json_is_object(obj) || !ret)
        return EG_EINVAL;
    return object_value(obj, 0, ret);
}

/* ---- links and Retry-After ------------------------------------------------------------------ */

struct origin {
    char *scheme, *host, *port;
};

static void origin_clear(struct origin *o)
{
    curl_free(o->scheme);
    curl_free(o->host);
    curl_free(o->port);
    memset(o, 0, sizeof *o);
}

static bool origin_of(const char *url, struct origin *o)
{
    CURLU *u = curl_url();
    char *user = NULL;
    bool ok = false;
    memset(o, 0, sizeof *o);
    if (!u || !url || strpbrk(url, "\r\n"))
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &o->scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &o->host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &o->port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_USER, &user, 0) != CURLUE_NO_USER)
        goto out;
    ok = strcasecmp(o->scheme, "https") == 0 || strcasecmp(o->scheme, "http") == 0;
out:
    curl_free(user);
    curl_url_cleanup(u);
    if (!ok)
        origin_clear(o);
    return ok;
}

bool eg_rest_link_ok(const char *base, const char *link)
{
    struct origin a, b;
    bool ok = false;
    if (origin_of(base, &a)) {
        if (origin_of(link, &b)) {
            ok = strcasecmp(a.scheme, b.scheme) == 0 && strcasecmp(a.host, b.host) == 0 &&
                 strcmp(a.port, b.port) == 0;
            origin_clear(&b);
        }
        origin_clear(&a);
    }
    return ok;
}

bool eg_rest_url_allowed(const char *url, bool allow_http)
{
    struct origin o;
    if (!origin_of(url, &o))
        return false;
    bool ok = strcasecmp(o.scheme, "https") == 0;
    if (!ok && allow_http) {
        char host[256];
        size_t n = strlen(o.host);
        /* curl gives an IPv6 host in brackets */
        if (n >= 2 && o.host[0] == '[' && o.host[n - 1] == ']' && n - 2 < sizeof host)
            snprintf(host, sizeof host, "%.*s", (int)(n - 2), o.host + 1);
        else
            snprintf(host, sizeof host, "%s", o.host);
        ok = eg_is_loopback(host);
    }
    origin_clear(&o);
    return ok;
}

int64_t eg_rest_retry_after_ms(const char *value, int64_t now_ms)
{
    int64_t ms = -1, s = 0;
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    char num[24];
    size_t n = strspn(value, "0123456789");
    if (n && value[n + strspn(value + n, " \t")] == '\0') {
        if (n > 12)
            return EG_REST_MAX_RETRY_AFTER_MS;
        snprintf(num, sizeof num, "%.*s", (int)n, value);
        if (eg_parse_int64(num, 0, INT64_MAX / 1000, &s) == 0)
            ms = s * 1000;
    } else if (n == 0 && *value) {
        time_t t = curl_getdate(value, NULL);
        if (t != (time_t)-1) {
            ms = (int64_t)t * 1000 - now_ms;
            if (ms < 0)
                ms = 0;
        }
    }
    if (ms > EG_REST_MAX_RETRY_AFTER_MS)
        ms = EG_REST_MAX_RETRY_AFTER_MS;
    return ms;
}

/* ---- errors --------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (at most n bytes left), 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80             ? 1
                 : (p[0] & 0xe0) == 0xc0 ? 2
                 : (p[0] & 0xf0) == 0xe0 ? 3
                 : (p[0] & 0xf8) == 0xf0 ? 4
                                         : 0;
    if (!len || len > n || (len == 2 && p[0] < 0xc2) || (len == 4 && p[0] > 0xf4))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((len == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (len == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
        (len == 4 && p[0] == 0xf0 && p[1] < 0x90) || (len == 4 && p[0] == 0xf4 && p[1] >= 0x90))
        return 0; /* overlong, surrogate, above U+10FFFF */
    return len;
}

/* Copy text for a message: valid UTF-8 only (an invalid byte becomes '?'), control characters
 * become spaces, never cut inside a character, at most size - 1 and max bytes; trailing spaces
 * dropped. */
static void copy_text(char *out, size_t size, const char *text, size_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = 0, lim = size - 1 < max ? size - 1 : max;
    for (size_t i = 0; i < len;) {
        size_t l = utf8_seq(p + i, len - i);
        if (n + (l ? l : 1) > lim)
            break;
        if (!l) {
            out[n++] = '?';
            i++;
        } else if (l == 1) {
            out[n++] = p[i] < 0x20 || p[i] == 0x7f ? ' ' : (char)p[i];
            i++;
        } else {
            memcpy(out + n, p + i, l);
            n += l;
            i += l;
        }
    }
    while (n && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

#define COPY(dst, src) copy_text(dst, sizeof dst, src, strlen(src), sizeof dst)

static const char *jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* What an error answer says. */
struct said {
    char type[256];
    char message[1024];
    char code[64]; /* error.code */
};

/* "Code|Type|Message" (the message may itself hold '|'). */
static bool split_details(const char *d, struct said *s)
{
    const char *p1 = strchr(d, '|');
    const char *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
    if (!p2)
        return false;
    copy_text(s->type, sizeof s->type, p1 + 1, (size_t)(p2 - p1 - 1), sizeof s->type);
    COPY(s->message, p2 + 1);
    return true;
}

static void read_error(const struct eg_rest_answer *a, struct said *s)
{
    json_t *doc = NULL;
    memset(s, 0, sizeof *s);
    if (a->body && a->body_len && eg_rest_json_load(a->body, a->body_len, &doc) == 0 &&
        json_is_object(doc)) {
        json_t *e = json_object_get(doc, "error");
        const char *code = jstr(e, "code"), *msg = jstr(e, "message");
        json_t *inner = json_object_get(e, "innererror");
        if (code)
            COPY(s->code, code);
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(e, "details"), i, d)
        {
            const char *dm = jstr(d, "message");
            if (dm && split_details(dm, s))
                break;
        }
        if (!s->type[0] && a->exception_type)
            COPY(s->type, a->exception_type);
        if (!s->message[0] && msg)
            COPY(s->message, msg);
        if (!s->message[0] && jstr(inner, "message"))
            COPY(s->message, jstr(inner, "message"));
        if (!s->type[0] && jstr(inner, "type"))
            COPY(s->type, jstr(inner, "type"));
        /* Entra's token endpoint: {"error":"invalid_client","error_description":"AADSTS..."} */
        if (!e || json_is_string(e)) {
            if (json_is_string(e))
                COPY(s->code, json_string_value(e));
            if (jstr(doc, "error_description"))
                COPY(s->message, jstr(doc, "error_description"));
        }
    } else if (a->body && a->body_len) {
        copy_text(s->message, sizeof s->message, a->body, a->body_len, EG_REST_MAX_ERROR_TEXT);
        if (a->exception_type)
            COPY(s->type, a->exception_type);
    } else if (a->exception_type) {
        COPY(s->type, a->exception_type);
    }
    json_decref(doc);
}

static void keep_words(struct eg_bridge_error *out, const struct said *s)
{
    snprintf(out->exchange_type, sizeof out->exchange_type, "%s", s->type);
    snprintf(out->exchange_message, sizeof out->exchange_message, "%s", s->message);
}

void eg_rest_classify(const struct eg_rest_answer *a, enum eg_classify_target target,
                      struct eg_bridge_error *out)
{
    struct said s;
    if (!out)
        return;
    if (!a) {
        eg_bridge_error_set(out, EG_BERR_INTERNAL, true, "no answer to classify");
        return;
    }
    read_error(a, &s);
    int64_t retry = eg_rest_retry_after_ms(a->retry_after, (int64_t)time(NULL) * 1000);
    long st = a->status;

    if (st == 429 || eg_classify_is_throttle_text(s.message)) {
        eg_bridge_error_set(out, EG_BERR_THROTTLED, true,
                            "Exchange Online is throttling this app (HTTP %ld)", st);
        int64_t named = eg_classify_named_delay_ms(s.message);
        out->retry_after_ms = retry >= 0 ? retry : named > 0 ? named : 0;
        keep_words(out, &s);
        return;
    }
    if (s.type[0] || s.message[0]) {
        eg_classify_exception(s.type, s.message, target, out);
        /* the catch-all answer (internal, transient): the status says more */
        if (!(strcmp(out->code, EG_BERR_INTERNAL) == 0 && out->transient)) {
            if ((st == 503 || st == 504 || st == 408) && retry > 0)
                out->retry_after_ms = retry;
            return;
        }
    }
    const char *code = EG_BERR_INTERNAL;
    bool transient = true;
    const char *what = "Exchange Online failed the call";
    if (st == 400) {
        code = EG_BERR_INVALID_ARGUMENT, transient = false;
        what = "Exchange Online refused the request";
    } else if (st == 401 || st == 403) {
        code = EG_BERR_PERMISSION_DENIED, transient = false;
        what = "Exchange Online refused the app's token or role";
    } else if (st == 404) {
        bool device = target == EG_TARGET_DEVICE;
        code = device ? EG_BERR_DEVICE_NOT_FOUND : EG_BERR_MAILBOX_NOT_FOUND, transient = false;
        what = device ? "the device was not found in Exchange Online"
                      : "the mailbox was not found in Exchange Online";
    } else if (st == 408 || st == 504) {
        code = EG_BERR_TIMEOUT;
        what = "Exchange Online did not answer in time";
    } else if (st == 502 || st == 503) {
        code = EG_BERR_UNREACHABLE;
        what = "Exchange Online is unavailable";
    } else if (st >= 400 && st < 500) {
        transient = false;
        what = "Exchange Online refused the call";
    }
    eg_bridge_error_set(out, code, transient, "%s (HTTP %ld%s%s)", what, st, s.code[0] ? " " : "",
                        s.code);
    if (transient && retry > 0)
        out->retry_after_ms = retry;
    keep_words(out, &s);
}
