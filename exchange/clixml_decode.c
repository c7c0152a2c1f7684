/* clixml_decode.c - CLIXML decoder on the libxml2 SAX2 push parser.
 *
 * One engine serves both entry points. The input is wrapped in a synthetic root element that we
 * feed ourselves (so a stream of several bare elements is one well-formed document, and no DTD can
 * ever appear: the prolog is ours), then handed to libxml2 in slices of at most FEED_SLICE bytes.
 * SAX events drive a stack of frames that build eg_ps_value trees; a complete top-level value is
 * either kept (eg_clixml_decode) or handed to the callback and freed (eg_clixml_stream_*).
 * libxml2 never builds a tree, never expands custom entities (none can be declared) and never
 * touches the network (XML_PARSE_NONET). */
#include "exchange/clixml.h"

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/limits.h"

#define PS_NS     "http://schemas.microsoft.com/powershell/2004/04"
#define ROOT_NAME "_egclixml_"
static const char root_open[] = "<" ROOT_NAME ">";
static const char root_close[] = "</" ROOT_NAME ">";

#define FEED_SLICE (64 * 1024) /* most bytes handed to libxml2 at once */
#define PREFIX_MAX 1024        /* bytes looked at for BOM / "#< CLIXML" / XML declaration */
#define TEXT_KEEP  (64 * 1024) /* text buffer capacity kept between strings */
#define TABLE_KEEP 1024        /* RefId table capacity kept between messages */

/* ---- string-keyed table (RefId -> object, RefId -> type list), holding a reference ---- */

struct tab_ent {
    char *key;
    void *val;
};

struct tab {
    struct tab_ent *e;
    size_t cap, n;
    void (*release)(void *);
};

static uint64_t fnv1a(const char *k)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *k; k++) {
        h ^= (unsigned char)*k;
        h *= 1099511628211ULL;
    }
    return h;
}

static struct tab_ent *tab_slot(struct tab_ent *e, size_t cap, const char *k)
{
    size_t i = (size_t)fnv1a(k) & (cap - 1);
    while (e[i].key && strcmp(e[i].key, k) != 0)
        i = (i + 1) & (cap - 1);
    return &e[i];
}

/* Store val (a reference the table takes over, released also on failure) under k. */
static int tab_put(struct tab *t, const char *k, void *val)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        struct tab_ent *ne = eg_calloc(ncap, sizeof *ne);
        if (!ne) {
            t->release(val);
            return EG_ENOMEM;
        }
        for (size_t i = 0; i < t->cap; i++)
            if (t->e[i].key)
                *tab_slot(ne, ncap, t->e[i].key) = t->e[i];
        eg_free(t->e);
        t->e = ne;
        t->cap = ncap;
    }
    struct tab_ent *s = tab_slot(t->e, t->cap, k);
    if (s->key) { /* a duplicate RefId: the later one wins, as in pwsh */
        t->release(s->val);
        s->val = val;
        return 0;
    }
    s->key = eg_strdup(k);
    if (!s->key) {
        t->release(val);
        return EG_ENOMEM;
    }
    s->val = val;
    t->n++;
    return 0;
}

static bool tab_get(const struct tab *t, const char *k, void **ret)
{
    if (!t->cap)
        return false;
    struct tab_ent *s = tab_slot(t->e, t->cap, k);
    if (!s->key)
        return false;
    *ret = s->val;
    return true;
}

static void tab_clear(struct tab *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        if (t->e[i].key) {
            eg_free(t->e[i].key);
            t->release(t->e[i].val);
        }
    }
    if (t->cap > TABLE_KEEP) {
        eg_free(t->e);
        t->e = NULL;
        t->cap = 0;
    } else if (t->cap) {
        memset(t->e, 0, t->cap * sizeof *t->e);
    }
    t->n = 0;
}

static void release_value(void *p)
{
    eg_ps_value_free(p);
}

static void release_types(void *p)
{
    eg_ps_types_free(p);
}

/* ---- frames ---- */

enum fr_type {
    FR_ROOT,    /* our synthetic root */
    FR_OBJS,    /* <Objs> */
    FR_TEXT,    /* an element whose text is collected: primitives, T, ToString, PR fields */
    FR_OBJ,     /* <Obj> */
    FR_TN,      /* <TN> */
    FR_LIST,    /* <LST> <IE> <STK> <QUE> */
    FR_DCT,     /* <DCT> */
    FR_EN,      /* <En> */
    FR_MEMBERS, /* <Props> <MS>, also a nested <MS N="..."> */
    FR_PR       /* <PR> */
};

enum text_role { TX_PRIM, TX_TYPE, TX_TOSTRING, TX_AV, TX_AI, TX_PI, TX_PC, TX_T, TX_SR, TX_SD };

struct frame {
    enum fr_type type;
    const char *tag; /* static text, for diagnostics */
    enum text_role role;
    enum eg_ps_kind kind; /* FR_TEXT / TX_PRIM */
    bool has_name;        /* N attribute present */
    char *name;           /* decoded N (owned) */
    size_t name_len;
    char *refid;                /* RefId attribute (owned): Obj, TN */
    char *stream;               /* S attribute (owned): top-level values */
    struct eg_ps_value *val;    /* owned: the Obj / PR being built, or a nested member set */
    struct eg_ps_value *target; /* borrowed: the object a LIST / DCT / EN / MEMBERS frame fills */
    enum eg_ps_section section; /* FR_MEMBERS */
    char **tnames;              /* FR_TN: names so far (owned) */
    size_t n_tnames, cap_tnames;
    struct eg_ps_value *key, *evalue; /* FR_EN (owned) */
};

struct eg_clixml_stream {
    xmlParserCtxtPtr xml;
    bool single; /* eg_clixml_decode: exactly one value, no <Objs> */
    eg_clixml_cb cb;
    void *userdata;
    struct eg_ps_value *result; /* single mode */
    int rc;
    char errmsg[sizeof(((struct eg_clixml_error *)0)->msg)];
    bool started, finished, root_closed;
    unsigned char prefix[PREFIX_MAX];
    size_t prefix_len;
    int line_offset; /* lines dropped with the prefix */
    struct frame frames[EG_CLIXML_MAX_DEPTH + 3];
    size_t depth; /* frames in use */
    size_t base;  /* depth of the frame that top-level values go into + 1 */
    size_t skip;  /* > 0: inside an element that is being skipped */
    char *text;   /* text of the current FR_TEXT element */
    size_t text_len, text_cap;
    struct tab objs, types;
    size_t n_objects, n_values; /* in the current top-level value */
    uint64_t fed;               /* bytes handed to libxml2 */
    uint64_t value_start;       /* fed when the current top-level value started */
    size_t delivered;
};

static void frame_clear(struct frame *f)
{
    eg_free(f->name);
    eg_free(f->refid);
    eg_free(f->stream);
    eg_ps_value_free(f->val);
    for (size_t i = 0; i < f->n_tnames; i++)
        eg_free(f->tnames[i]);
    eg_free(f->tnames);
    eg_ps_value_free(f->key);
    eg_ps_value_free(f->evalue);
    memset(f, 0, sizeof *f);
}

__attribute__((format(printf, 3, 4))) static void fail(struct eg_clixml_stream *s, int code,
                                                       const char *fmt, ...)
{
    char m[128];
    va_list ap;
    if (s->rc)
        return;
    s->rc = code;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    int line = s->xml ? xmlSAX2GetLineNumber(s->xml) : 0;
    if (line > 0)
        snprintf(s->errmsg, sizeof s->errmsg, "line %d: %s", line + s->line_offset, m);
    else
        snprintf(s->errmsg, sizeof s->errmsg, "%s", m);
    if (s->xml)
        xmlStopParser(s->xml);
}

static void fail_nomem(struct eg_clixml_stream *s)
{
    fail(s, EG_ENOMEM, "out of memory");
}

static struct frame *top(struct eg_clixml_stream *s)
{
    return &s->frames[s->depth - 1];
}

/* Level (1 = a top-level value) of an element starting now. */
static size_t level_now(const struct eg_clixml_stream *s)
{
    return s->depth - s->base + s->skip + 1;
}

static struct frame *push(struct eg_clixml_stream *s, enum fr_type type, const char *tag)
{
    if (s->depth >= sizeof s->frames / sizeof s->frames[0]) {
        fail(s, EG_ELIMIT, "nesting deeper than %d elements", EG_CLIXML_MAX_DEPTH);
        return NULL;
    }
    struct frame *f = &s->frames[s->depth++];
    memset(f, 0, sizeof *f);
    f->type = type;
    f->tag = tag;
    return f;
}

/* ---- attributes ---- */

static const char *attr(const xmlChar **attrs, int n, const char *name, size_t *ret_len)
{
    for (int i = 0; i < n; i++) {
        const xmlChar **a = attrs + 5 * i;
        if (a[1] == NULL && strcmp((const char *)a[0], name) == 0) {
            *ret_len = (size_t)(a[4] - a[3]);
            return (const char *)a[3];
        }
    }
    return NULL;
}

static bool copy_attr(struct eg_clixml_stream *s, const char *v, size_t len, const char *name,
                      bool unescape, char **ret, size_t *ret_len);

/* Copy attribute name (NULL if absent) into *ret; unescape for N. Returns false after fail(). */
static bool get_attr(struct eg_clixml_stream *s, const xmlChar **attrs, int n, const char *name,
                     size_t max, bool unescape, char **ret, size_t *ret_len)
{
    size_t len = 0;
    const char *v = attr(attrs, n, name, &len);
    *ret = NULL;
    *ret_len = 0;
    if (!v)
        return true;
    if (len > max) {
        fail(s, EG_ELIMIT, "%s attribute longer than %zu bytes", name, max);
        return false;
    }
    /* Without entity substitution libxml2 hands an '&' in an attribute value over as "&#38;"
     * (every one of them, so the replacement is exact) */
    char *amp = NULL;
    if (memmem(v, len, "&#38;", 5)) {
        amp = eg_malloc(len + 1);
        if (!amp) {
            fail_nomem(s);
            return false;
        }
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            amp[o++] = v[i];
            if (v[i] == '&' && len - i >= 5 && memcmp(v + i, "&#38;", 5) == 0)
                i += 4;
        }
        v = amp;
        len = o;
    }
    bool ok = copy_attr(s, v, len, name, unescape, ret, ret_len);
    eg_free(amp);
    return ok;
}

static bool copy_attr(struct eg_clixml_stream *s, const char *v, size_t len, const char *name,
                      bool unescape, char **ret, size_t *ret_len)
{
    if (unescape) {
        int rc = eg_clixml_unescape(v, len, ret, ret_len);
        if (rc == EG_ENOMEM)
            fail_nomem(s);
        else if (rc)
            fail(s, EG_EPARSE, "bad %s attribute", name);
        return rc == 0;
    }
    if (memchr(v, 0, len)) {
        fail(s, EG_EPARSE, "NUL in %s attribute", name);
        return false;
    }
    *ret = eg_strndup(v, len);
    if (!*ret) {
        fail_nomem(s);
        return false;
    }
    *ret_len = len;
    return true;
}

/* ---- delivering a finished value to its parent frame ---- */

static void reset_message_scope(struct eg_clixml_stream *s, bool types_too)
{
    tab_clear(&s->objs);
    if (types_too)
        tab_clear(&s->types);
}

static void top_level(struct eg_clixml_stream *s, struct eg_ps_value *v, const char *stream)
{
    if (s->single) {
        if (s->result) {
            eg_ps_value_free(v);
            fail(s, EG_EPARSE, "more than one element in the message");
            return;
        }
        s->result = v;
        return;
    }
    bool in_objs = s->frames[s->depth - 1].type == FR_OBJS;
    s->delivered++;
    int rc = s->cb(s->userdata, stream, v);
    eg_ps_value_free(v);
    reset_message_scope(s, !in_objs);
    if (rc)
        fail(s, rc < 0 ? rc : EG_EINVAL, "stopped by the callback (%s)", eg_errname(rc));
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* Give v (owned) to the frame on top; name/stream are borrowed. */
static void deliver(struct eg_clixml_stream *s, struct eg_ps_value *v, bool has_name,
                    const char *name, size_t name_len, const char *stream)
{
    struct frame *p = top(s);
    int rc = 0;

    switch (p->type) {
    case FR_ROOT:
    case FR_OBJS:
        top_level(s, v, stream);
        return;
    case FR_OBJ:
        if (v->kind == EG_PS_NIL) { /* a null base object is no base object (pwsh) */
            eg_ps_value_free(v);
            return;
        }
        rc = eg_ps_obj_set_base(p->val, v);
        break;
    case FR_LIST:
        if (p->target->u.obj->n_items >= EG_CLIXML_MAX_MEMBERS) {
            eg_ps_value_free(v);
            fail(s, EG_ELIMIT, "more than %d items in one <%s>", EG_CLIXML_MAX_MEMBERS, p->tag);
            return;
        }
        rc = eg_ps_obj_add_item(p->target, v);
        break;
    case FR_EN:
        if (has_name && ieq(name, name_len, "Key") && !p->key) {
            if (v->kind == EG_PS_NIL) {
                eg_ps_value_free(v);
                fail(s, EG_EPARSE, "null dictionary key");
                return;
            }
            p->key = v;
        } else if (has_name && ieq(name, name_len, "Value") && !p->evalue) {
            p->evalue = v;
        } else {
            eg_ps_value_free(v);
            fail(s, EG_EPARSE, "<En> takes one N=\"Key\" and one N=\"Value\" element");
            return;
        }
        return;
    case FR_MEMBERS: {
        struct eg_ps_obj *o = p->target->u.obj;
        size_t n = p->section == EG_PS_PROPS ? o->n_props : o->n_ms;
        if (!has_name) {
            fail(s, EG_EPARSE, "<%s> member without an N attribute", eg_ps_kind_tag(v->kind));
            eg_ps_value_free(v);
            return;
        }
        if (n >= EG_CLIXML_MAX_MEMBERS) {
            eg_ps_value_free(v);
            fail(s, EG_ELIMIT, "more than %d members in one <%s>", EG_CLIXML_MAX_MEMBERS, p->tag);
            return;
        }
        rc = eg_ps_obj_add_named(p->target, p->section, name, name_len, v);
        break;
    }
    case FR_PR:
        eg_ps_value_free(p->val->u.pr->current_operation);
        p->val->u.pr->current_operation = v;
        return;
    default:
        eg_ps_value_free(v);
        fail(s, EG_EINTERNAL, "value delivered to <%s>", p->tag);
        return;
    }
    if (rc == EG_ENOMEM)
        fail_nomem(s);
    else if (rc)
        fail(s, EG_EPARSE, "cannot place a value in <%s>", p->tag);
}

/* ---- element start ---- */

static bool count_value(struct eg_clixml_stream *s)
{
    if (++s->n_values > EG_CLIXML_MAX_VALUES) {
        fail(s, EG_ELIMIT, "more than %d values in one message", EG_CLIXML_MAX_VALUES);
        return false;
    }
    return true;
}

static bool tag_kind(const char *tag, enum eg_ps_kind *ret)
{
    for (int k = EG_PS_S; k < EG__PS_KIND_COUNT; k++) {
        if (k == EG_PS_PR || k == EG_PS_OBJ)
            continue;
        if (strcmp(tag, eg_ps_kind_tag((enum eg_ps_kind)k)) == 0) {
            *ret = (enum eg_ps_kind)k;
            return true;
        }
    }
    return false;
}

static bool ancestor_has_refid(const struct eg_clixml_stream *s, const char *refid)
{
    for (size_t i = 0; i < s->depth; i++)
        if (s->frames[i].type == FR_OBJ && s->frames[i].refid &&
            strcmp(s->frames[i].refid, refid) == 0)
            return true;
    return false;
}

/* Start a value element (Nil, Ref, Obj, PR, a primitive). Returns false, doing nothing, for any
 * other tag. */
static bool start_value(struct eg_clixml_stream *s, const char *tag, const xmlChar **attrs,
                        int n_attrs)
{
    enum eg_ps_kind kind = EG_PS_NIL;
    bool is_nil = strcmp(tag, "Nil") == 0, is_ref = strcmp(tag, "Ref") == 0;
    bool is_obj = strcmp(tag, "Obj") == 0, is_pr = strcmp(tag, "PR") == 0;
    char *name = NULL, *stream = NULL, *refid = NULL;
    size_t name_len = 0, slen = 0, rlen = 0;
    struct eg_ps_value *v = NULL;
    struct frame *f;

    if (!is_nil && !is_ref && !is_obj && !is_pr && !tag_kind(tag, &kind))
        return false;
    enum fr_type pt = top(s)->type;
    if (pt == FR_ROOT || pt == FR_OBJS) { /* a new top-level value: a new message */
        s->value_start = s->fed;
        s->n_objects = s->n_values = 0;
        if (!get_attr(s, attrs, n_attrs, "S", EG_CLIXML_MAX_STRING, false, &stream, &slen))
            goto out;
    }
    if (!count_value(s))
        goto out;
    if (!get_attr(s, attrs, n_attrs, "N", EG_CLIXML_MAX_STRING, true, &name, &name_len))
        goto out;
    bool has_name = name != NULL;

    if (is_nil || is_ref) {
        if (is_ref) {
            void *found = NULL;
            if (!get_attr(s, attrs, n_attrs, "RefId", EG_CLIXML_MAX_REFID_LEN, false, &refid,
                          &rlen))
                goto out;
            if (!refid) {
                fail(s, EG_EPARSE, "<Ref> without RefId");
                goto out;
            }
            if (tab_get(&s->objs, refid, &found)) {
                v = eg_ps_value_ref(found);
            } else if (ancestor_has_refid(s, refid)) {
                v = eg_ps_new_nil(); /* a cycle: broken with $null (documented) */
            } else {
                fail(s, EG_EPARSE, "<Ref> to unknown RefId \"%.32s\"", refid);
                goto out;
            }
        } else {
            v = eg_ps_new_nil();
        }
        if (!v) {
            fail_nomem(s);
            goto out;
        }
        s->skip = 1; /* ignore whatever the element contains */
        deliver(s, v, has_name, name, name_len, stream);
        goto out;
    }
    if (is_obj) {
        if (++s->n_objects > EG_CLIXML_MAX_OBJECTS) {
            fail(s, EG_ELIMIT, "more than %d objects in one message", EG_CLIXML_MAX_OBJECTS);
            goto out;
        }
        if (!get_attr(s, attrs, n_attrs, "RefId", EG_CLIXML_MAX_REFID_LEN, false, &refid, &rlen))
            goto out;
        v = eg_ps_new_obj();
    } else if (is_pr) {
        v = eg_ps_new_progress();
    }
    if ((is_obj || is_pr) && !v) {
        fail_nomem(s);
        goto out;
    }
    if (!(f = push(s,
                   is_obj  ? FR_OBJ
                   : is_pr ? FR_PR
                           : FR_TEXT,
                   is_obj  ? "Obj"
                   : is_pr ? "PR"
                           : eg_ps_kind_tag(kind))))
        goto out;
    f->kind = kind;
    f->role = TX_PRIM;
    f->has_name = has_name;
    f->name = name;
    f->name_len = name_len;
    f->refid = refid;
    f->stream = stream;
    f->val = v;
    f->target = v;
    return true;
out:
    eg_ps_value_free(is_obj || is_pr ? v : NULL);
    eg_free(name);
    eg_free(stream);
    eg_free(refid);
    return true;
}

static struct frame *push_child(struct eg_clixml_stream *s, enum fr_type type, const char *tag,
                                struct eg_ps_value *target)
{
    struct frame *f = push(s, type, tag);
    if (f)
        f->target = target;
    return f;
}

static void start_in_obj(struct eg_clixml_stream *s, struct frame *p, const char *tag,
                         const xmlChar **attrs, int n_attrs)
{
    static const struct {
        const char *tag;
        enum eg_ps_container ct;
    } containers[] = {{"LST", EG_PS_CT_LST},
                      {"IE", EG_PS_CT_IE},
                      {"STK", EG_PS_CT_STK},
                      {"QUE", EG_PS_CT_QUE},
                      {"DCT", EG_PS_CT_DCT}};
    struct frame *f;
    char *refid = NULL;
    size_t rlen;

    if (!tag) { /* another namespace: unknown */
        s->skip = 1;
        return;
    }
    if (strcmp(tag, "TN") == 0) {
        if (!get_attr(s, attrs, n_attrs, "RefId", EG_CLIXML_MAX_REFID_LEN, false, &refid, &rlen))
            return;
        if (!(f = push_child(s, FR_TN, "TN", p->val))) {
            eg_free(refid);
            return;
        }
        f->refid = refid;
        return;
    }
    if (strcmp(tag, "TNRef") == 0) {
        void *t = NULL;
        if (!get_attr(s, attrs, n_attrs, "RefId", EG_CLIXML_MAX_REFID_LEN, false, &refid, &rlen))
            return;
        if (!refid)
            fail(s, EG_EPARSE, "<TNRef> without RefId");
        else if (!tab_get(&s->types, refid, &t))
            fail(s, EG_EPARSE, "<TNRef> to unknown RefId \"%.32s\"", refid);
        else if (eg_ps_obj_share_types(p->val, t) != 0)
            fail(s, EG_EINTERNAL, "cannot share a type list");
        eg_free(refid);
        s->skip = 1;
        return;
    }
    if (strcmp(tag, "ToString") == 0) {
        if ((f = push_child(s, FR_TEXT, "ToString", p->val)))
            f->role = TX_TOSTRING;
        return;
    }
    if (strcmp(tag, "Props") == 0 || strcmp(tag, "MS") == 0) {
        bool props = tag[0] == 'P';
        if ((f = push_child(s, FR_MEMBERS, props ? "Props" : "MS", p->val)))
            f->section = props ? EG_PS_PROPS : EG_PS_MS;
        return;
    }
    for (size_t i = 0; i < sizeof containers / sizeof containers[0]; i++) {
        if (strcmp(tag, containers[i].tag) != 0)
            continue;
        if (eg_ps_obj_set_container(p->val, containers[i].ct) != 0) {
            fail(s, EG_EPARSE, "list and dictionary content in one <Obj>");
            return;
        }
        push_child(s, containers[i].ct == EG_PS_CT_DCT ? FR_DCT : FR_LIST, containers[i].tag,
                   p->val);
        return;
    }
    if (!start_value(s, tag, attrs, n_attrs))
        s->skip = 1; /* an unknown element inside an <Obj> is skipped (forward compatibility) */
}

static bool pr_field(const char *tag, enum text_role *role, const char **stag)
{
    static const struct {
        const char *tag;
        enum text_role role;
    } f[] = {{"AV", TX_AV}, {"AI", TX_AI}, {"PI", TX_PI}, {"PC", TX_PC},
             {"T", TX_T},   {"SR", TX_SR}, {"SD", TX_SD}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (strcmp(tag, f[i].tag) == 0) {
            *role = f[i].role;
            *stag = f[i].tag;
            return true;
        }
    }
    return false;
}

static void on_start(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri,
                     int nb_namespaces, const xmlChar **namespaces, int nb_attributes,
                     int nb_defaulted, const xmlChar **attributes)
{
    struct eg_clixml_stream *s = ctx;
    const char *lname = (const char *)localname;
    const char *tag = lname;
    struct frame *f;

    if (s->rc)
        return;
    if (s->depth == 0) {
        if (strcmp(lname, ROOT_NAME) != 0 || uri)
            fail(s, EG_EINTERNAL, "lost the document root");
        else if ((f = push(s, FR_ROOT, "document")))
            s->base = 1;
        return;
    }
    if (level_now(s) > EG_CLIXML_MAX_DEPTH) {
        fail(s, EG_ELIMIT, "nesting deeper than %d elements", EG_CLIXML_MAX_DEPTH);
        return;
    }
    if (s->skip) {
        s->skip++;
        return;
    }
    if (!s->single && s->depth > s->base &&
        s->fed - s->value_start > (uint64_t)EG_CLIXML_MAX_MESSAGE_BYTES) {
        fail(s, EG_ELIMIT, "one value longer than %d bytes", EG_CLIXML_MAX_MESSAGE_BYTES);
        return;
    }
    if ((uri && strcmp((const char *)uri, PS_NS) != 0) || (prefix && !uri))
        tag = NULL; /* another namespace (or an undeclared prefix): not a CLIXML element */
    struct frame *p = top(s);
    switch (p->type) {
    case FR_TEXT:
        fail(s, EG_EPARSE, "element <%.40s> inside <%s>", lname, p->tag);
        return;
    case FR_TN:
        if (tag && strcmp(tag, "T") == 0) {
            if ((f = push_child(s, FR_TEXT, "T", p->target)))
                f->role = TX_TYPE;
        } else {
            fail(s, EG_EPARSE, "element <%.40s> inside <TN>", lname);
        }
        return;
    case FR_DCT:
        if (tag && strcmp(tag, "En") == 0)
            push_child(s, FR_EN, "En", p->target);
        else
            fail(s, EG_EPARSE, "element <%.40s> inside <DCT>", lname);
        return;
    case FR_OBJ:
        start_in_obj(s, p, tag, attributes, nb_attributes);
        return;
    case FR_PR: {
        enum text_role role;
        const char *stag;
        if (tag && pr_field(tag, &role, &stag)) {
            if ((f = push_child(s, FR_TEXT, stag, p->val)))
                f->role = role;
            return;
        }
        break;
    }
    case FR_MEMBERS:
        if (tag && strcmp(tag, "MS") == 0) { /* a nested member set: <MS N="name"> */
            char *name = NULL;
            size_t nlen = 0;
            if (!count_value(s) || !get_attr(s, attributes, nb_attributes, "N",
                                             EG_CLIXML_MAX_STRING, true, &name, &nlen))
                return;
            struct eg_ps_value *o = eg_ps_new_obj();
            if (!o || !(f = push(s, FR_MEMBERS, "MS"))) {
                if (!o)
                    fail_nomem(s);
                eg_ps_value_free(o);
                eg_free(name);
                return;
            }
            o->u.obj->member_set = true;
            f->section = EG_PS_MS;
            f->val = o;
            f->target = o;
            f->has_name = name != NULL;
            f->name = name;
            f->name_len = nlen;
            return;
        }
        break;
    case FR_ROOT:
        if (tag && strcmp(tag, "Objs") == 0) {
            if (s->single)
                fail(s, EG_EPARSE, "<Objs> is a document, not message data");
            else if (push(s, FR_OBJS, "Objs"))
                s->base = 2;
            return;
        }
        break;
    default:
        break;
    }
    if (!tag || !start_value(s, tag, attributes, nb_attributes))
        fail(s, EG_EPARSE, "unknown element <%.40s> inside <%s>", lname, p->tag);
}

/* ---- element end ---- */

static char *unescape_text(struct eg_clixml_stream *s, size_t *ret_len)
{
    char *u = NULL;
    int rc = eg_clixml_unescape(s->text ? s->text : "", s->text_len, &u, ret_len);
    if (rc == EG_ENOMEM)
        fail_nomem(s);
    else if (rc)
        fail(s, EG_EPARSE, "bad text");
    return rc ? NULL : u;
}

static bool is_string_kind(enum eg_ps_kind k)
{
    return k == EG_PS_S || k == EG_PS_URI || k == EG_PS_XD || k == EG_PS_SBK;
}

static void end_text(struct eg_clixml_stream *s, struct frame *f)
{
    struct frame *p = top(s);
    struct eg_ps_value *v = NULL;
    char *u = NULL;
    size_t ul = 0;
    int rc;

    if (f->role == TX_PRIM && !is_string_kind(f->kind)) {
        rc = eg_ps_new_text(f->kind, s->text ? s->text : "", s->text_len, &v);
    } else {
        if (!(u = unescape_text(s, &ul)))
            return;
        switch (f->role) {
        case TX_PRIM:
            rc = eg_ps_new_text(f->kind, u, ul, &v);
            break;
        case TX_TYPE:
            rc = 0;
            if (memchr(u, 0, ul)) {
                fail(s, EG_EPARSE, "NUL in a type name");
            } else if (ul == 0) {
                /* empty names are dropped, as pwsh does */
            } else if (p->n_tnames >= EG_CLIXML_MAX_MEMBERS) {
                fail(s, EG_ELIMIT, "more than %d names in one <TN>", EG_CLIXML_MAX_MEMBERS);
            } else if (p->n_tnames == p->cap_tnames) {
                size_t ncap = p->cap_tnames ? p->cap_tnames * 2 : 8;
                char **nt = eg_reallocarray(p->tnames, ncap, sizeof *nt);
                if (!nt) {
                    rc = EG_ENOMEM;
                } else {
                    p->tnames = nt;
                    p->cap_tnames = ncap;
                }
            }
            if (!s->rc && rc == 0 && ul) {
                p->tnames[p->n_tnames++] = u;
                u = NULL;
            }
            break;
        case TX_TOSTRING:
            rc = eg_ps_obj_set_to_string(p->val, u, ul);
            break;
        case TX_AV:
            rc = eg_ps_str_set(&p->val->u.pr->activity, u, ul);
            break;
        case TX_T:
            rc = eg_ps_str_set(&p->val->u.pr->record_type, u, ul);
            break;
        case TX_SD:
            rc = eg_ps_str_set(&p->val->u.pr->status_description, u, ul);
            break;
        default: { /* AI PI PC SR: Int32 */
            int32_t x = 0;
            rc = eg_ps_new_text(EG_PS_I32, u, ul, &v);
            if (rc == 0) {
                x = (int32_t)v->u.i;
                eg_ps_value_free(v);
                v = NULL;
            }
            struct eg_ps_progress *pr = p->val->u.pr;
            if (f->role == TX_AI)
                pr->activity_id = x;
            else if (f->role == TX_PI)
                pr->parent_activity_id = x;
            else if (f->role == TX_PC)
                pr->percent_complete = x;
            else
                pr->seconds_remaining = x;
            break;
        }
        }
        eg_free(u);
    }
    if (rc == EG_ENOMEM) {
        fail_nomem(s);
    } else if (rc) {
        fail(s, EG_EPARSE, "<%s> text is not a valid %s value", f->tag, f->tag);
    } else if (v) {
        deliver(s, v, f->has_name, f->name, f->name_len, f->stream);
        v = NULL;
    }
    eg_ps_value_free(v);
}

static void end_tn(struct eg_clixml_stream *s, struct frame *f)
{
    struct frame *p = top(s);
    int rc = eg_ps_obj_set_types(p->val, (const char *const *)f->tnames, f->n_tnames);
    if (rc) {
        fail_nomem(s);
        return;
    }
    if (!f->refid)
        return;
    if (tab_put(&s->types, f->refid, eg_ps_types_ref(p->val->u.obj->types)) != 0)
        fail_nomem(s);
    else if (s->types.n > EG_CLIXML_MAX_TYPENAMES)
        fail(s, EG_ELIMIT, "more than %d type lists", EG_CLIXML_MAX_TYPENAMES);
}

static void on_end(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri)
{
    struct eg_clixml_stream *s = ctx;
    struct frame f;

    if (s->rc)
        return;
    if (s->skip) {
        s->skip--;
        return;
    }
    if (s->depth == 0)
        return;
    f = s->frames[--s->depth];
    memset(&s->frames[s->depth], 0, sizeof f);
    switch (f.type) {
    case FR_ROOT:
        s->root_closed = true;
        break;
    case FR_OBJS:
        s->base = 1;
        reset_message_scope(s, true);
        break;
    case FR_TEXT:
        end_text(s, &f);
        s->text_len = 0;
        if (s->text_cap > TEXT_KEEP) {
            eg_free(s->text);
            s->text = NULL;
            s->text_cap = 0;
        }
        break;
    case FR_OBJ:
        if (f.refid && tab_put(&s->objs, f.refid, eg_ps_value_ref(f.val)) != 0) {
            fail_nomem(s);
            break;
        }
        /* fall through */
    case FR_PR:
        deliver(s, f.val, f.has_name, f.name, f.name_len, f.stream);
        f.val = NULL;
        break;
    case FR_MEMBERS:
        if (f.val) { /* nested member set */
            deliver(s, f.val, f.has_name, f.name, f.name_len, NULL);
            f.val = NULL;
        }
        break;
    case FR_TN:
        end_tn(s, &f);
        break;
    case FR_EN: {
        struct eg_ps_obj *o = f.target->u.obj;
        if (!f.key || !f.evalue) {
            fail(s, EG_EPARSE, "<En> without a Key and a Value");
        } else if (o->n_entries >= EG_CLIXML_MAX_MEMBERS) {
            fail(s, EG_ELIMIT, "more than %d entries in one <DCT>", EG_CLIXML_MAX_MEMBERS);
        } else {
            int rc = eg_ps_obj_add_entry(f.target, f.key, f.evalue);
            f.key = f.evalue = NULL;
            if (rc == EG_ENOMEM)
                fail_nomem(s);
            else if (rc)
                fail(s, EG_EPARSE, "bad dictionary entry");
        }
        break;
    }
    default:
        break;
    }
    frame_clear(&f);
}

/* ---- text ---- */

static void on_chars(void *ctx, const xmlChar *ch, int len)
{
    struct eg_clixml_stream *s = ctx;
    size_t n = len > 0 ? (size_t)len : 0;

    if (s->rc || s->skip || s->depth == 0)
        return;
    struct frame *f = top(s);
    if (f->type == FR_TEXT) {
        if (n > (size_t)EG_CLIXML_MAX_STRING - s->text_len) {
            fail(s, EG_ELIMIT, "<%s> text longer than %d bytes", f->tag, EG_CLIXML_MAX_STRING);
            return;
        }
        if (s->text_len + n + 1 > s->text_cap) {
            size_t ncap = s->text_cap ? s->text_cap : 256;
            while (ncap < s->text_len + n + 1)
                ncap *= 2;
            char *nt = eg_realloc(s->text, ncap);
            if (!nt) {
                fail_nomem(s);
                return;
            }
            s->text = nt;
            s->text_cap = ncap;
        }
        memcpy(s->text + s->text_len, ch, n);
        s->text_len += n;
        s->text[s->text_len] = '\0';
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = ch[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        /* a BOM between concatenated messages */
        if ((f->type == FR_ROOT || f->type == FR_OBJS) && c == 0xEF && n - i >= 3 &&
            ch[i + 1] == 0xBB && ch[i + 2] == 0xBF) {
            i += 2;
            continue;
        }
        fail(s, EG_EPARSE, "text content inside <%s>", f->tag);
        return;
    }
}

static void on_serror(void *ctx, xmlErrorPtr e)
{
    struct eg_clixml_stream *s = ctx;
    char m[100];
    if (!e || e->level < XML_ERR_ERROR || s->rc)
        return;
    /* Namespace problems (an undeclared prefix, a relative namespace URI) leave the document
     * well-formed; such elements are simply not ours (see on_start). Ignoring them also keeps
     * libxml2 from turning a failed allocation in its URI check into a parse error. */
    if (e->domain == XML_FROM_NAMESPACE && e->level != XML_ERR_FATAL)
        return;
    s->rc = e->code == XML_ERR_NO_MEMORY ? EG_ENOMEM : EG_EPARSE;
    snprintf(m, sizeof m, "%s", e->message ? e->message : "error");
    for (char *q = m; *q; q++)
        if (*q == '\n' || *q == '\r' || *q == '\t')
            *q = ' ';
    size_t ml = strlen(m);
    while (ml && (m[ml - 1] == '\n' || m[ml - 1] == ' '))
        m[--ml] = '\0';
    if (e->line > 0)
        snprintf(s->errmsg, sizeof s->errmsg, "line %d: XML: %s", e->line + s->line_offset, m);
    else
        snprintf(s->errmsg, sizeof s->errmsg, "XML: %s", m);
}

/* ---- driving libxml2 ---- */

static xmlSAXHandler sax;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    xmlInitParser();
    memset(&sax, 0, sizeof sax);
    sax.initialized = XML_SAX2_MAGIC;
    sax.startElementNs = on_start;
    sax.endElementNs = on_end;
    sax.characters = on_chars;
    sax.cdataBlock = on_chars;
    sax.ignorableWhitespace = on_chars;
    sax.serror = on_serror;
}

static struct eg_clixml_stream *ctx_new(bool single, eg_clixml_cb cb, void *userdata)
{
    pthread_once(&lib_once, lib_init);
    struct eg_clixml_stream *s = eg_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->single = single;
    s->cb = cb;
    s->userdata = userdata;
    s->objs.release = release_value;
    s->types.release = release_types;
    s->xml = xmlCreatePushParserCtxt(&sax, s, NULL, 0, NULL);
    if (!s->xml) {
        eg_free(s);
        return NULL;
    }
    xmlCtxtUseOptions(s->xml, XML_PARSE_NONET);
    return s;
}

/* Hand n bytes to libxml2 in slices; terminate with the last one if asked. */
static int feed_xml(struct eg_clixml_stream *s, const char *p, size_t n, bool terminate)
{
    do {
        size_t k = n > FEED_SLICE ? FEED_SLICE : n;
        s->fed += k;
        int r = xmlParseChunk(s->xml, p, (int)k, terminate && k == n);
        if (s->rc)
            return s->rc;
        if (r != 0) {
            /* XML_PARSER_EOF (-1) without an error report: libxml2 could not grow its input
             * buffer, which (no encoding conversion being involved) means out of memory */
            s->rc = r == XML_ERR_NO_MEMORY || r == -1 ? EG_ENOMEM : EG_EPARSE;
            snprintf(s->errmsg, sizeof s->errmsg, "XML error %d", r);
            return s->rc;
        }
        p += k;
        n -= k;
    } while (n);
    return 0;
}

static bool is_sp(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Look at the start of the input: BOM, white space, "#< CLIXML" line (streams), XML declaration.
 * Returns 1 (done; *skip bytes to drop, *lines newlines in them), 0 (need more bytes; never when
 * final) or -1 (*why set). */
static int detect_prefix(const unsigned char *b, size_t n, bool final, bool header, size_t *skip,
                         int *lines, const char **why)
{
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    static const char hdr[] = "#< CLIXML", decl[] = "<?xml";
    size_t i = 0, m;

    m = n < 3 ? n : 3;
    if (memcmp(b, bom, m) == 0) {
        if (m < 3 && !final)
            return 0;
        if (m == 3)
            i = 3;
    }
    for (int pass = 0; pass < 2; pass++) {
        while (i < n && is_sp(b[i]))
            i++;
        if (i == n && !final)
            return 0;
        m = n - i < sizeof hdr - 1 ? n - i : sizeof hdr - 1;
        if (!header || pass > 0 || m == 0 || memcmp(b + i, hdr, m) != 0)
            break;
        if (m < sizeof hdr - 1) {
            if (!final)
                return 0;
            break; /* the parser will reject it */
        }
        const unsigned char *nl = memchr(b + i, '\n', n - i);
        if (!nl) {
            if (!final)
                return 0;
            *why = "\"#< CLIXML\" without a line end";
            return -1;
        }
        i = (size_t)(nl - b) + 1;
    }
    m = n - i < sizeof decl - 1 ? n - i : sizeof decl - 1;
    if (m && memcmp(b + i, decl, m) == 0) {
        if (m < sizeof decl - 1) {
            if (!final)
                return 0;
        } else {
            size_t e = i + 5;
            while (e + 1 < n && !(b[e] == '?' && b[e + 1] == '>'))
                e++;
            if (e + 1 >= n) {
                if (!final)
                    return 0;
                *why = "unterminated XML declaration";
                return -1;
            }
            /* encoding="..." must say UTF-8 */
            for (size_t k = i + 5; k + 8 < e; k++) {
                if (memcmp(b + k, "encoding", 8) != 0)
                    continue;
                size_t q = k + 8;
                while (q < e && (is_sp(b[q]) || b[q] == '='))
                    q++;
                if (q < e && (b[q] == '"' || b[q] == '\'')) {
                    char quote = (char)b[q++];
                    size_t vs = q;
                    while (q < e && b[q] != (unsigned char)quote)
                        q++;
                    if (!((q - vs == 5 && strncasecmp((const char *)b + vs, "utf-8", 5) == 0) ||
                          (q - vs == 4 && strncasecmp((const char *)b + vs, "utf8", 4) == 0))) {
                        *why = "only UTF-8 input is supported";
                        return -1;
                    }
                }
                break;
            }
            i = e + 2;
        }
    }
    *lines = 0;
    for (size_t k = 0; k < i; k++)
        *lines += b[k] == '\n';
    *skip = i;
    return 1;
}

/* Run the prefix detection on b[0..n) and start the parser with what follows it. */
static int start(struct eg_clixml_stream *s, const unsigned char *b, size_t n, bool header)
{
    size_t skip = 0;
    const char *why = "bad input start";
    int d = detect_prefix(b, n, true, header, &skip, &s->line_offset, &why);
    if (d < 0) {
        s->rc = EG_EPARSE;
        snprintf(s->errmsg, sizeof s->errmsg, "%s", why);
        return s->rc;
    }
    s->started = true;
    int rc = feed_xml(s, root_open, sizeof root_open - 1, false);
    if (rc == 0 && n > skip)
        rc = feed_xml(s, (const char *)b + skip, n - skip, false);
    return rc;
}

static int finish(struct eg_clixml_stream *s)
{
    int rc = feed_xml(s, root_close, sizeof root_close - 1, true);
    s->finished = true;
    if (rc)
        return rc;
    if (!s->root_closed || !s->xml->wellFormed) {
        s->rc = EG_EPARSE;
        snprintf(s->errmsg, sizeof s->errmsg, "truncated input");
        return s->rc;
    }
    return 0;
}

static void ctx_free(struct eg_clixml_stream *s)
{
    if (!s)
        return;
    while (s->depth)
        frame_clear(&s->frames[--s->depth]);
    tab_clear(&s->objs);
    tab_clear(&s->types);
    eg_free(s->objs.e);
    eg_free(s->types.e);
    eg_free(s->text);
    eg_ps_value_free(s->result);
    if (s->xml)
        xmlFreeParserCtxt(s->xml);
    eg_free(s);
}

/* ---- public entry points ---- */

int eg_clixml_decode(const void *data, size_t len, struct eg_ps_value **ret,
                     struct eg_clixml_error *err)
{
    struct eg_clixml_stream *s = NULL;
    int rc;

    if (err)
        err->msg[0] = '\0';
    if ((!data && len) || !ret)
        return EG_EINVAL;
    if (len > (size_t)EG_CLIXML_MAX_MESSAGE_BYTES) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "message larger than %d bytes",
                     EG_CLIXML_MAX_MESSAGE_BYTES);
        return EG_ELIMIT;
    }
    s = ctx_new(true, NULL, NULL);
    if (!s)
        return EG_ENOMEM;
    rc = start(s, data ? data : "", len, false);
    if (rc == 0)
        rc = finish(s);
    if (rc == 0 && !s->result) {
        rc = EG_EPARSE;
        snprintf(s->errmsg, sizeof s->errmsg, "no element in the message");
    }
    if (rc == 0) {
        *ret = s->result;
        s->result = NULL;
    } else if (err) {
        snprintf(err->msg, sizeof err->msg, "%s", s->errmsg[0] ? s->errmsg : eg_strerror(rc));
    }
    ctx_free(s);
    return rc;
}

int eg_clixml_stream_new(eg_clixml_cb cb, void *userdata, struct eg_clixml_stream **ret)
{
    if (!cb || !ret)
        return EG_EINVAL;
    struct eg_clixml_stream *s = ctx_new(false, cb, userdata);
    if (!s)
        return EG_ENOMEM;
    *ret = s;
    return 0;
}

int eg_clixml_stream_feed(struct eg_clixml_stream *s, const void *data, size_t len)
{
    const unsigned char *p = data;

    if (!s || (!data && len))
        return EG_EINVAL;
    if (s->rc)
        return s->rc;
    if (s->finished)
        return EG_ESTATE;
    if (!s->started) {
        size_t take = PREFIX_MAX - s->prefix_len;
        if (take > len)
            take = len;
        memcpy(s->prefix + s->prefix_len, p, take);
        s->prefix_len += take;
        p += take;
        len -= take;
        size_t skip;
        int lines;
        const char *why = NULL;
        if (s->prefix_len < PREFIX_MAX &&
            detect_prefix(s->prefix, s->prefix_len, false, true, &skip, &lines, &why) == 0)
            return 0; /* wait for more of the start */
        int rc = start(s, s->prefix, s->prefix_len, true);
        if (rc)
            return rc;
    }
    return len ? feed_xml(s, (const char *)p, len, false) : 0;
}

int eg_clixml_stream_finish(struct eg_clixml_stream *s)
{
    if (!s)
        return EG_EINVAL;
    if (s->rc)
        return s->rc;
    if (s->finished)
        return EG_ESTATE;
    if (!s->started) {
        int rc = start(s, s->prefix, s->prefix_len, true);
        if (rc)
            return rc;
    }
    return finish(s);
}

const char *eg_clixml_stream_errmsg(const struct eg_clixml_stream *s)
{
    return s ? s->errmsg : "";
}

size_t eg_clixml_stream_count(const struct eg_clixml_stream *s)
{
    return s ? s->delivered : 0;
}

void eg_clixml_stream_free(struct eg_clixml_stream *s)
{
    ctx_free(s);
}
