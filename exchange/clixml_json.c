/* clixml_json.c - CLIXML value -> JSON (mapping documented in clixml_json.h). */
#include "exchange/clixml_json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"

struct render {
    size_t budget; /* nodes still allowed */
};

static bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

/* A JSON string from bytes; EG_EINVAL for invalid UTF-8. */
static int mk_string(const char *s, size_t len, json_t **ret)
{
    if (!utf8_valid(s, len))
        return EG_EINVAL;
    json_t *j = json_stringn(s, len);
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

static int mk_cstring(const char *s, json_t **ret)
{
    return mk_string(s, strlen(s), ret);
}

static int mk_double(double d, json_t **ret)
{
    json_t *j;
    if (isnan(d))
        j = json_string("NaN");
    else if (isinf(d))
        j = json_string(d > 0 ? "Infinity" : "-Infinity");
    else
        j = json_real(d);
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

/* One UTF-16 unit as a UTF-8 string (a surrogate half alone is U+FFFD). */
static int mk_char(uint64_t unit, json_t **ret)
{
    char b[4];
    size_t n;
    unsigned c = (unsigned)unit;
    if (unit > 0xFFFF || (c >= 0xD800 && c <= 0xDFFF))
        c = 0xFFFD;
    if (c < 0x80) {
        b[0] = (char)c;
        n = 1;
    } else if (c < 0x800) {
        b[0] = (char)(0xC0 | (c >> 6));
        b[1] = (char)(0x80 | (c & 0x3F));
        n = 2;
    } else {
        b[0] = (char)(0xE0 | (c >> 12));
        b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F));
        n = 3;
    }
    json_t *j = json_stringn(b, n);
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

static int mk_guid(const uint8_t g[16], json_t **ret)
{
    char b[40];
    snprintf(b, sizeof b, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13],
             g[14], g[15]);
    return mk_cstring(b, ret);
}

static int mk_datetime(const struct eg_ps_value *v, json_t **ret)
{
    if (v->u.dt.tz != EG_PS_TZ_UNSPECIFIED)
        return mk_string(v->text.s, v->text.len, ret);
    char *s = eg_asprintf("%sZ", v->text.s);
    if (!s)
        return EG_ENOMEM;
    int rc = mk_cstring(s, ret);
    eg_free(s);
    return rc;
}

static int mk_bytes(const struct eg_ps_value *v, json_t **ret)
{
    char *b64 = NULL;
    size_t n = 0;
    int rc = eg_base64_encode(v->text.s, v->text.len, &b64, &n);
    if (rc == 0)
        rc = mk_string(b64, n, ret);
    eg_free(b64);
    return rc;
}

static int render_value(struct render *r, const struct eg_ps_value *v, int depth, json_t **ret);

/* Set key (bytes, validated) in obj, taking over val. */
static int obj_set(json_t *obj, const char *key, size_t klen, json_t *val)
{
    if (!utf8_valid(key, klen) || memchr(key, 0, klen)) {
        json_decref(val);
        return EG_EINVAL;
    }
    if (json_object_setn_new(obj, key, klen, val) != 0)
        return EG_ENOMEM;
    return 0;
}

static int render_progress(struct render *r, const struct eg_ps_progress *pr, int depth,
                           json_t **ret)
{
    json_t *o = json_object(), *x = NULL;
    int rc = o ? 0 : EG_ENOMEM;
    if (rc == 0)
        rc = json_object_set_new(o, "_type", json_string("ProgressRecord")) ? EG_ENOMEM : 0;
    if (rc == 0 && (rc = mk_string(pr->activity.s, pr->activity.len, &x)) == 0)
        rc = obj_set(o, "activity", 8, x);
    if (rc == 0)
        rc = obj_set(o, "activity_id", 11, json_integer(pr->activity_id));
    if (rc == 0 && (rc = render_value(r, pr->current_operation, depth + 1, &x)) == 0)
        rc = obj_set(o, "current_operation", 17, x);
    if (rc == 0)
        rc = obj_set(o, "parent_activity_id", 18, json_integer(pr->parent_activity_id));
    if (rc == 0)
        rc = obj_set(o, "percent_complete", 16, json_integer(pr->percent_complete));
    if (rc == 0 && (rc = mk_string(pr->record_type.s, pr->record_type.len, &x)) == 0)
        rc = obj_set(o, "record_type", 11, x);
    if (rc == 0)
        rc = obj_set(o, "seconds_remaining", 17, json_integer(pr->seconds_remaining));
    if (rc == 0 && (rc = mk_string(pr->status_description.s, pr->status_description.len, &x)) == 0)
        rc = obj_set(o, "status_description", 18, x);
    if (rc != 0) {
        json_decref(o);
        return rc;
    }
    *ret = o;
    return 0;
}

/* The string form of a dictionary key: S/URI/... as is, an object's ToString, else the compact
 * JSON text of the rendered key. */
static int key_text(struct render *r, const struct eg_ps_value *k, int depth, char **ret)
{
    if (k->kind == EG_PS_S || k->kind == EG_PS_URI || k->kind == EG_PS_XD || k->kind == EG_PS_SBK) {
        if (!utf8_valid(k->text.s, k->text.len) || memchr(k->text.s, 0, k->text.len))
            return EG_EINVAL;
        *ret = eg_strndup(k->text.s, k->text.len);
        return *ret ? 0 : EG_ENOMEM;
    }
    if (k->kind == EG_PS_OBJ && k->u.obj->has_to_string) {
        const struct eg_ps_str *t = &k->u.obj->to_string;
        if (!utf8_valid(t->s, t->len) || memchr(t->s, 0, t->len))
            return EG_EINVAL;
        *ret = eg_strndup(t->s, t->len);
        return *ret ? 0 : EG_ENOMEM;
    }
    json_t *j = NULL;
    int rc = render_value(r, k, depth + 1, &j);
    if (rc != 0)
        return rc;
    char *s = NULL;
    if (json_is_string(j))
        s = eg_strdup(json_string_value(j));
    else {
        char *d = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (d) {
            s = eg_strdup(d);
            json_free_t f = NULL;
            json_get_alloc_funcs(NULL, &f);
            f(d);
        }
    }
    json_decref(j);
    if (!s)
        return EG_ENOMEM;
    *ret = s;
    return 0;
}

static int render_obj(struct render *r, const struct eg_ps_value *v, int depth, json_t **ret)
{
    const struct eg_ps_obj *o = v->u.obj;
    json_t *j = NULL, *x = NULL;
    int rc = 0;

    if (o->container == EG_PS_CT_LST || o->container == EG_PS_CT_IE ||
        o->container == EG_PS_CT_STK || o->container == EG_PS_CT_QUE) {
        j = json_array();
        if (!j)
            return EG_ENOMEM;
        for (size_t i = 0; rc == 0 && i < o->n_items; i++) {
            if ((rc = render_value(r, o->items[i], depth + 1, &x)) == 0 &&
                json_array_append_new(j, x) != 0)
                rc = EG_ENOMEM;
        }
        goto out;
    }
    j = json_object();
    if (!j)
        return EG_ENOMEM;
    if (o->container == EG_PS_CT_DCT) {
        for (size_t i = 0; rc == 0 && i < o->n_entries; i++) {
            char *k = NULL;
            if ((rc = key_text(r, o->entries[i].key, depth, &k)) != 0)
                break;
            if ((rc = render_value(r, o->entries[i].value, depth + 1, &x)) == 0)
                rc = obj_set(j, k, strlen(k), x);
            eg_free(k);
        }
        goto out;
    }
    if (o->types && o->types->n) {
        json_t *t = json_array();
        if (!t || json_object_set_new(j, "_types", t) != 0) {
            rc = EG_ENOMEM;
            goto out;
        }
        for (size_t i = 0; rc == 0 && i < o->types->n; i++)
            if ((rc = mk_cstring(o->types->names[i], &x)) == 0 && json_array_append_new(t, x))
                rc = EG_ENOMEM;
    }
    if (rc == 0 && o->has_to_string && (rc = mk_string(o->to_string.s, o->to_string.len, &x)) == 0)
        rc = obj_set(j, "_tostring", 9, x);
    if (rc == 0 && o->base && (rc = render_value(r, o->base, depth + 1, &x)) == 0)
        rc = obj_set(j, "_value", 6, x);
    for (size_t i = 0; rc == 0 && i < o->n_props; i++)
        if ((rc = render_value(r, o->props[i].value, depth + 1, &x)) == 0)
            rc = obj_set(j, o->props[i].name.s, o->props[i].name.len, x);
    for (size_t i = 0; rc == 0 && i < o->n_ms; i++)
        if ((rc = render_value(r, o->ms[i].value, depth + 1, &x)) == 0)
            rc = obj_set(j, o->ms[i].name.s, o->ms[i].name.len, x);
out:
    if (rc != 0) {
        json_decref(j);
        return rc;
    }
    *ret = j;
    return 0;
}

static int render_value(struct render *r, const struct eg_ps_value *v, int depth, json_t **ret)
{
    json_t *j = NULL;
    if (!v)
        return EG_EINVAL;
    if (depth > EG_CLIXML_MAX_DEPTH || r->budget == 0)
        return EG_ELIMIT;
    r->budget--;
    switch (v->kind) {
    case EG_PS_NIL:
        j = json_null();
        break;
    case EG_PS_S:
    case EG_PS_URI:
    case EG_PS_XD:
    case EG_PS_SBK:
    case EG_PS_D:
    case EG_PS_TS:
    case EG_PS_VERSION:
        return mk_string(v->text.s, v->text.len, ret);
    case EG_PS_B:
        j = json_boolean(v->u.b);
        break;
    case EG_PS_SB:
    case EG_PS_I16:
    case EG_PS_I32:
    case EG_PS_I64:
        j = json_integer((json_int_t)v->u.i);
        break;
    case EG_PS_BY:
    case EG_PS_U16:
    case EG_PS_U32:
    case EG_PS_U64:
        if (v->u.u > (uint64_t)INT64_MAX) {
            char b[24];
            snprintf(b, sizeof b, "%llu", (unsigned long long)v->u.u);
            j = json_string(b);
        } else {
            j = json_integer((json_int_t)v->u.u);
        }
        break;
    case EG_PS_C:
        return mk_char(v->u.u, ret);
    case EG_PS_SG:
    case EG_PS_DB:
        return mk_double(v->u.d, ret);
    case EG_PS_G:
        return mk_guid(v->u.guid, ret);
    case EG_PS_DT:
        return mk_datetime(v, ret);
    case EG_PS_BA:
        return mk_bytes(v, ret);
    case EG_PS_SS:
        j = json_string("[SecureString]");
        break;
    case EG_PS_PR:
        return render_progress(r, v->u.pr, depth, ret);
    case EG_PS_OBJ:
        return render_obj(r, v, depth, ret);
    default:
        return EG_EINVAL;
    }
    if (!j)
        return EG_ENOMEM;
    *ret = j;
    return 0;
}

int eg_clixml_to_json(const struct eg_ps_value *v, json_t **ret)
{
    if (!v || !ret)
        return EG_EINVAL;
    struct render r = {.budget = EG_CLIXML_MAX_VALUES};
    json_t *j = NULL;
    int rc = render_value(&r, v, 0, &j);
    if (rc != 0)
        return rc;
    *ret = j;
    return 0;
}

int eg_clixml_to_json_text(const struct eg_ps_value *v, char **ret)
{
    if (!v || !ret)
        return EG_EINVAL;
    json_t *j = NULL;
    int rc = eg_clixml_to_json(v, &j);
    if (rc != 0)
        return rc;
    char *d = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!d)
        return EG_ENOMEM;
    char *s = eg_strdup(d);
    json_free_t f = NULL;
    json_get_alloc_funcs(NULL, &f);
    f(d);
    if (!s)
        return EG_ENOMEM;
    *ret = s;
    return 0;
}
