/* clixml_encode.c - CLIXML encoder: one eg_ps_value as the data of one PSRP message.
 *
 * Element and attribute order follow pwsh's serializer (N before RefId; TN/TNRef, ToString, base
 * value, container, Props, MS inside an Obj; empty strings as <S></S>, empty lists as <LST />).
 * Obj RefIds count from 0 in document order; an object node met again (shared by reference) is
 * written as <Ref>. TN RefIds count from 0 separately; a type list equal (by content) to one
 * already written becomes <TNRef>. */
#include "exchange/clixml.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"

/* pointer -> RefId */
struct seen {
    const void *key;
    uint64_t id;
};

struct enc {
    char *buf;
    size_t len, cap;
    int rc;
    struct seen *objs; /* open addressing, cap a power of two */
    size_t n_objs, cap_objs;
    const struct eg_ps_types **tns; /* written type lists, index = TN RefId */
    size_t n_tns, cap_tns;
    unsigned depth;
};

static void put(struct enc *e, const char *s, size_t n)
{
    if (e->rc)
        return;
    if (n > (size_t)EG_CLIXML_MAX_MESSAGE_BYTES - e->len) {
        e->rc = EG_ELIMIT;
        return;
    }
    if (e->len + n + 1 > e->cap) {
        size_t ncap = e->cap ? e->cap : 1024;
        while (ncap < e->len + n + 1)
            ncap *= 2;
        char *nb = eg_realloc(e->buf, ncap);
        if (!nb) {
            e->rc = EG_ENOMEM;
            return;
        }
        e->buf = nb;
        e->cap = ncap;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = '\0';
}

static void puts_(struct enc *e, const char *s)
{
    put(e, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void putf(struct enc *e, const char *fmt, ...)
{
    char b[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof b) {
        if (!e->rc)
            e->rc = EG_EINTERNAL;
        return;
    }
    put(e, b, (size_t)n);
}

static void put_escaped(struct enc *e, const char *s, size_t len, unsigned flags)
{
    char *x = NULL;
    size_t xl = 0;
    if (e->rc)
        return;
    int rc = eg_clixml_escape(s, len, flags, &x, &xl);
    if (rc) {
        e->rc = rc;
        return;
    }
    put(e, x, xl);
    eg_free(x);
}

/* <Tag N="name" */
static void open_tag(struct enc *e, const char *tag, const struct eg_ps_str *name)
{
    put(e, "<", 1);
    puts_(e, tag);
    if (name) {
        puts_(e, " N=\"");
        put_escaped(e, name->s, name->len, EG_CLIXML_ESC_ATTR);
        put(e, "\"", 1);
    }
}

static void close_tag(struct enc *e, const char *tag)
{
    put(e, "</", 2);
    puts_(e, tag);
    put(e, ">", 1);
}

/* <Tag N="name">raw</Tag> */
static void raw_element(struct enc *e, const char *tag, const struct eg_ps_str *name,
                        const char *raw, size_t len)
{
    open_tag(e, tag, name);
    put(e, ">", 1);
    put(e, raw, len);
    close_tag(e, tag);
}

static void text_element(struct enc *e, const char *tag, const struct eg_ps_str *name,
                         const char *s, size_t len)
{
    open_tag(e, tag, name);
    put(e, ">", 1);
    put_escaped(e, s, len, EG_CLIXML_ESC_TEXT);
    close_tag(e, tag);
}

/* Shortest text that reads back to the same float/double, laid out like .NET Core's
 * XmlConvert.ToString: fixed notation unless the decimal exponent is below -4 or at least 15
 * (7 for a float), then "1.5E+20" / "1E-05"; "INF", "-INF", "NaN". */
static void format_float(double d, bool single, char *out, size_t size)
{
    char tmp[48], digits[24];
    int prec, exp10 = 0;
    size_t nd = 0, o = 0;

    if (isnan(d)) {
        snprintf(out, size, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(out, size, d < 0 ? "-INF" : "INF");
        return;
    }
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, d);
        if (single ? (double)strtof(tmp, NULL) == d : strtod(tmp, NULL) == d)
            break;
    }
    /* tmp is [-]D[.DDD]e[+-]XX */
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nd < sizeof digits - 1)
            digits[nd++] = *p;
    if (*p == 'e') {
        bool eneg = p[1] == '-';
        for (p += 2; *p >= '0' && *p <= '9'; p++)
            exp10 = exp10 * 10 + (*p - '0');
        if (eneg)
            exp10 = -exp10;
    }
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';

    char res[64];
    if (neg)
        res[o++] = '-';
    if (exp10 < -4 || exp10 >= (single ? 7 : 15)) {
        res[o++] = digits[0];
        if (nd > 1) {
            res[o++] = '.';
            memcpy(res + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)snprintf(res + o, sizeof res - o, "E%c%02d", exp10 < 0 ? '-' : '+',
                              exp10 < 0 ? -exp10 : exp10);
    } else if (exp10 >= 0) {
        for (int i = 0; i <= exp10; i++)
            res[o++] = (size_t)i < nd ? digits[i] : '0';
        if ((size_t)exp10 + 1 < nd) {
            res[o++] = '.';
            memcpy(res + o, digits + exp10 + 1, nd - (size_t)exp10 - 1);
            o += nd - (size_t)exp10 - 1;
        }
    } else {
        res[o++] = '0';
        res[o++] = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            res[o++] = '0';
        memcpy(res + o, digits, nd);
        o += nd;
    }
    res[o] = '\0';
    snprintf(out, size, "%s", res);
}

/* ---- RefId bookkeeping ---- */

static uint64_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static bool seen_get(const struct enc *e, const void *k, uint64_t *id)
{
    if (!e->cap_objs)
        return false;
    for (size_t i = (size_t)ptr_hash(k) & (e->cap_objs - 1); e->objs[i].key;
         i = (i + 1) & (e->cap_objs - 1)) {
        if (e->objs[i].key == k) {
            *id = e->objs[i].id;
            return true;
        }
    }
    return false;
}

static void seen_insert(struct seen *tab, size_t cap, const void *k, uint64_t id)
{
    size_t i = (size_t)ptr_hash(k) & (cap - 1);
    while (tab[i].key)
        i = (i + 1) & (cap - 1);
    tab[i].key = k;
    tab[i].id = id;
}

static void seen_add(struct enc *e, const void *k, uint64_t id)
{
    if (e->rc)
        return;
    if ((e->n_objs + 1) * 2 > e->cap_objs) {
        size_t ncap = e->cap_objs ? e->cap_objs * 2 : 64;
        struct seen *nt = eg_calloc(ncap, sizeof *nt);
        if (!nt) {
            e->rc = EG_ENOMEM;
            return;
        }
        for (size_t i = 0; i < e->cap_objs; i++)
            if (e->objs[i].key)
                seen_insert(nt, ncap, e->objs[i].key, e->objs[i].id);
        eg_free(e->objs);
        e->objs = nt;
        e->cap_objs = ncap;
    }
    seen_insert(e->objs, e->cap_objs, k, id);
    e->n_objs++;
}

static bool types_same(const struct eg_ps_types *a, const struct eg_ps_types *b)
{
    if (a == b)
        return true;
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->names[i], b->names[i]) != 0)
            return false;
    return true;
}

static void write_types(struct enc *e, const struct eg_ps_types *t)
{
    for (size_t i = 0; i < e->n_tns; i++) {
        if (types_same(e->tns[i], t)) {
            putf(e, "<TNRef RefId=\"%zu\" />", i);
            return;
        }
    }
    if (e->n_tns == e->cap_tns) {
        size_t ncap = e->cap_tns ? e->cap_tns * 2 : 16;
        const struct eg_ps_types **nt = eg_reallocarray(e->tns, ncap, sizeof *nt);
        if (!nt) {
            e->rc = EG_ENOMEM;
            return;
        }
        e->tns = nt;
        e->cap_tns = ncap;
    }
    putf(e, "<TN RefId=\"%zu\">", e->n_tns);
    e->tns[e->n_tns++] = t;
    for (size_t i = 0; i < t->n; i++)
        text_element(e, "T", NULL, t->names[i], strlen(t->names[i]));
    puts_(e, "</TN>");
}

/* ---- values ---- */

static void write_value(struct enc *e, const struct eg_ps_value *v, const struct eg_ps_str *name);

/* One member of Props / MS; a nested member set is written as <MS N="name">members</MS>. */
static void write_member(struct enc *e, const struct eg_ps_member *m)
{
    const struct eg_ps_value *v = m->value;
    if (!(v && v->kind == EG_PS_OBJ && v->u.obj->member_set)) {
        write_value(e, v, &m->name);
        return;
    }
    if (++e->depth > EG_CLIXML_MAX_DEPTH) {
        e->rc = EG_ELIMIT;
        return;
    }
    open_tag(e, "MS", &m->name);
    put(e, ">", 1);
    for (size_t k = 0; k < v->u.obj->n_ms && !e->rc; k++)
        write_member(e, &v->u.obj->ms[k]);
    close_tag(e, "MS");
    e->depth--;
}

static void write_members(struct enc *e, const char *tag, const struct eg_ps_member *m, size_t n)
{
    if (!n)
        return;
    put(e, "<", 1);
    puts_(e, tag);
    put(e, ">", 1);
    for (size_t i = 0; i < n && !e->rc; i++)
        write_member(e, &m[i]);
    close_tag(e, tag);
}

static bool obj_is_empty(const struct eg_ps_obj *o)
{
    return !(o->types && o->types->n) && !o->has_to_string && !o->base &&
           o->container == EG_PS_CT_NONE && !o->n_props && !o->n_ms;
}

static void write_obj(struct enc *e, const struct eg_ps_value *v, const struct eg_ps_str *name)
{
    static const char *const ct_tag[] = {[EG_PS_CT_LST] = "LST",
                                         [EG_PS_CT_IE] = "IE",
                                         [EG_PS_CT_STK] = "STK",
                                         [EG_PS_CT_QUE] = "QUE",
                                         [EG_PS_CT_DCT] = "DCT"};
    static const struct eg_ps_str key_name = {"Key", 3}, value_name = {"Value", 5};
    const struct eg_ps_obj *o = v->u.obj;
    uint64_t id;

    if (seen_get(e, v, &id)) {
        open_tag(e, "Ref", name);
        putf(e, " RefId=\"%" PRIu64 "\" />", id);
        return;
    }
    id = e->n_objs;
    seen_add(e, v, id);
    open_tag(e, "Obj", name);
    putf(e, " RefId=\"%" PRIu64 "\"", id);
    if (obj_is_empty(o)) {
        puts_(e, " />");
        return;
    }
    put(e, ">", 1);
    if (o->types && o->types->n)
        write_types(e, o->types);
    if (o->has_to_string)
        text_element(e, "ToString", NULL, o->to_string.s, o->to_string.len);
    if (o->base)
        write_value(e, o->base, NULL);
    if (o->container != EG_PS_CT_NONE) {
        if ((unsigned)o->container > EG_PS_CT_DCT) {
            e->rc = EG_EINVAL;
            return;
        }
        const char *tag = ct_tag[o->container];
        size_t n = o->container == EG_PS_CT_DCT ? o->n_entries : o->n_items;
        put(e, "<", 1);
        puts_(e, tag);
        if (!n) {
            puts_(e, " />");
        } else {
            put(e, ">", 1);
            if (o->container == EG_PS_CT_DCT) {
                for (size_t i = 0; i < n && !e->rc; i++) {
                    if (!o->entries[i].key || o->entries[i].key->kind == EG_PS_NIL) {
                        e->rc = EG_EINVAL; /* CLIXML has no null key */
                        return;
                    }
                    puts_(e, "<En>");
                    write_value(e, o->entries[i].key, &key_name);
                    write_value(e, o->entries[i].value, &value_name);
                    puts_(e, "</En>");
                }
            } else {
                for (size_t i = 0; i < n && !e->rc; i++)
                    write_value(e, o->items[i], NULL);
            }
            close_tag(e, tag);
        }
    }
    write_members(e, "Props", o->props, o->n_props);
    write_members(e, "MS", o->ms, o->n_ms);
    close_tag(e, "Obj");
}

static void write_pr(struct enc *e, const struct eg_ps_value *v, const struct eg_ps_str *name)
{
    const struct eg_ps_progress *p = v->u.pr;
    open_tag(e, "PR", name);
    put(e, ">", 1);
    text_element(e, "AV", NULL, p->activity.s, p->activity.len);
    putf(e, "<AI>%" PRId32 "</AI>", p->activity_id);
    if (p->current_operation)
        write_value(e, p->current_operation, NULL);
    else
        puts_(e, "<Nil />");
    putf(e, "<PI>%" PRId32 "</PI><PC>%" PRId32 "</PC>", p->parent_activity_id, p->percent_complete);
    text_element(e, "T", NULL, p->record_type.s, p->record_type.len);
    putf(e, "<SR>%" PRId32 "</SR>", p->seconds_remaining);
    text_element(e, "SD", NULL, p->status_description.s, p->status_description.len);
    close_tag(e, "PR");
}

static void write_value(struct enc *e, const struct eg_ps_value *v, const struct eg_ps_str *name)
{
    char num[64];
    if (e->rc)
        return;
    if (!v || (unsigned)v->kind >= EG__PS_KIND_COUNT) {
        e->rc = EG_EINVAL;
        return;
    }
    if (++e->depth > EG_CLIXML_MAX_DEPTH) {
        e->rc = EG_ELIMIT;
        return;
    }
    const char *tag = eg_ps_kind_tag(v->kind);
    switch (v->kind) {
    case EG_PS_NIL:
        open_tag(e, tag, name);
        puts_(e, " />");
        break;
    case EG_PS_S:
    case EG_PS_URI:
    case EG_PS_XD:
    case EG_PS_SBK:
        text_element(e, tag, name, v->text.s, v->text.len);
        break;
    case EG_PS_SS:
    case EG_PS_D:
    case EG_PS_DT:
    case EG_PS_TS:
    case EG_PS_VERSION:
        /* validated on construction: only ASCII digits, signs, letters and punctuation that
         * need no XML escaping */
        raw_element(e, tag, name, v->text.s, v->text.len);
        break;
    case EG_PS_B:
        raw_element(e, tag, name, v->u.b ? "true" : "false", v->u.b ? 4 : 5);
        break;
    case EG_PS_SB:
    case EG_PS_I16:
    case EG_PS_I32:
    case EG_PS_I64:
        snprintf(num, sizeof num, "%" PRId64, v->u.i);
        raw_element(e, tag, name, num, strlen(num));
        break;
    case EG_PS_BY:
    case EG_PS_U16:
    case EG_PS_U32:
    case EG_PS_U64:
    case EG_PS_C:
        snprintf(num, sizeof num, "%" PRIu64, v->u.u);
        raw_element(e, tag, name, num, strlen(num));
        break;
    case EG_PS_SG:
    case EG_PS_DB:
        format_float(v->u.d, v->kind == EG_PS_SG, num, sizeof num);
        raw_element(e, tag, name, num, strlen(num));
        break;
    case EG_PS_G: {
        const uint8_t *g = v->u.guid;
        snprintf(num, sizeof num,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", g[0], g[1],
                 g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13], g[14],
                 g[15]);
        raw_element(e, tag, name, num, strlen(num));
        break;
    }
    case EG_PS_BA: {
        char *b64 = NULL;
        size_t bl = 0;
        int rc = eg_base64_encode(v->text.s, v->text.len, &b64, &bl);
        if (rc) {
            e->rc = rc;
            break;
        }
        raw_element(e, tag, name, b64, bl);
        eg_free(b64);
        break;
    }
    case EG_PS_PR:
        write_pr(e, v, name);
        break;
    case EG_PS_OBJ:
        write_obj(e, v, name);
        break;
    default:
        e->rc = EG_EINVAL;
        break;
    }
    e->depth--;
}

int eg_clixml_encode(const struct eg_ps_value *v, char **ret, size_t *ret_len)
{
    struct enc e = {0};
    if (!v || !ret)
        return EG_EINVAL;
    write_value(&e, v, NULL);
    eg_free(e.objs);
    eg_free(e.tns);
    if (e.rc) {
        eg_free(e.buf);
        return e.rc;
    }
    *ret = e.buf;
    if (ret_len)
        *ret_len = e.len;
    return 0;
}
