/* filter.c - the -Filter (OPATH) subset of exchange-semantics §15: comparisons with -eq -ne
 * -like -notlike -gt -ge -lt -le, -and / -or / -not, parentheses, contains-semantics on
 * multi-valued properties. Parsed once per cmdlet call into a small tree, evaluated per object
 * through a property getter. -and binds tighter than -or. Everything is case-insensitive. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/util.h"
#include "mx_internal.h"

#define FILTER_MAX_LEN   4096
#define FILTER_MAX_DEPTH 32

enum node_type { N_AND, N_OR, N_NOT, N_CMP };
enum cmp_op { OP_EQ, OP_NE, OP_LIKE, OP_NOTLIKE, OP_GT, OP_GE, OP_LT, OP_LE };
enum val_kind { V_STR, V_BOOL, V_NULL };

struct node {
    enum node_type type;
    struct node *a, *b;
    /* N_CMP */
    const struct mx_filter_prop *prop;
    enum cmp_op op;
    enum val_kind vk;
    char *s;    /* V_STR */
    bool vb;    /* V_BOOL, or the string as bool for FV_BOOL properties */
    int64_t vi; /* the string as a number / date for FV_INT / FV_DATE properties */
};

struct mx_filter {
    struct node *root;
};

enum tok_type { T_END, T_LP, T_RP, T_OP, T_WORD, T_STR, T_VAR };

struct parser {
    const char *text;
    size_t pos;
    const struct mx_filter_prop *props;
    size_t n_props;
    char *err;
    size_t err_size;
    int depth;
    /* current token */
    enum tok_type tt;
    size_t tstart;
    char *tval; /* T_WORD T_STR T_OP (lower case, without '-') T_VAR (lower case, without '$') */
    int rc;
};

static void node_free(struct node *n)
{
    if (!n)
        return;
    node_free(n->a);
    node_free(n->b);
    eg_free(n->s);
    eg_free(n);
}

void mx_filter_free(struct mx_filter *f)
{
    if (!f)
        return;
    node_free(f->root);
    eg_free(f);
}

static void fail(struct parser *p, int rc, size_t at, const char *what)
{
    if (p->rc)
        return;
    p->rc = rc;
    if (!p->err || !p->err_size)
        return;
    if (rc == EG_EPARSE)
        snprintf(p->err, p->err_size,
                 "Invalid filter syntax. For a description of the filter parameter syntax see the "
                 "command help.\n\"%s\" at position %zu.",
                 p->text, at + 1);
    else
        snprintf(p->err, p->err_size, "%s", what);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* Read the next token into p->tt / p->tval. */
static void next(struct parser *p)
{
    eg_freep(&p->tval);
    if (p->rc) {
        p->tt = T_END;
        return;
    }
    const char *t = p->text;
    while (is_space(t[p->pos]))
        p->pos++;
    p->tstart = p->pos;
    char c = t[p->pos];
    if (c == '\0') {
        p->tt = T_END;
        return;
    }
    if (c == '(' || c == ')') {
        p->tt = c == '(' ? T_LP : T_RP;
        p->pos++;
        return;
    }
    if (c == '\'' || c == '"') {
        /* Quoted string; the quote doubled (or `" in double quotes) stands for itself. */
        size_t cap = strlen(t + p->pos) + 1, n = 0;
        char *out = eg_malloc(cap);
        if (!out) {
            fail(p, EG_ENOMEM, p->pos, "out of memory");
            p->tt = T_END;
            return;
        }
        size_t i = p->pos + 1;
        for (;;) {
            if (t[i] == '\0') {
                eg_free(out);
                fail(p, EG_EPARSE, p->tstart, NULL);
                p->tt = T_END;
                return;
            }
            if (t[i] == c && t[i + 1] == c) {
                out[n++] = c;
                i += 2;
            } else if (c == '"' && t[i] == '`' && t[i + 1]) {
                out[n++] = t[i + 1];
                i += 2;
            } else if (t[i] == c) {
                i++;
                break;
            } else {
                out[n++] = t[i++];
            }
        }
        out[n] = '\0';
        p->pos = i;
        p->tt = T_STR;
        p->tval = out;
        return;
    }
    size_t s = p->pos;
    while (t[p->pos] && !is_space(t[p->pos]) && t[p->pos] != '(' && t[p->pos] != ')')
        p->pos++;
    size_t len = p->pos - s;
    if (c == '-' && len > 1 &&
        ((t[s + 1] >= 'a' && t[s + 1] <= 'z') || (t[s + 1] >= 'A' && t[s + 1] <= 'Z'))) {
        p->tt = T_OP;
        p->tval = eg_strndup(t + s + 1, len - 1);
    } else if (c == '$' && len > 1) {
        p->tt = T_VAR;
        p->tval = eg_strndup(t + s + 1, len - 1);
    } else if (c == '!' && len == 1) {
        p->tt = T_OP;
        p->tval = eg_strdup("not");
    } else {
        p->tt = T_WORD;
        p->tval = eg_strndup(t + s, len);
    }
    if (!p->tval) {
        fail(p, EG_ENOMEM, s, "out of memory");
        p->tt = T_END;
        return;
    }
    if (p->tt == T_OP || p->tt == T_VAR)
        lower(p->tval);
}

static struct node *new_node(struct parser *p, enum node_type t)
{
    struct node *n = eg_calloc(1, sizeof *n);
    if (!n)
        fail(p, EG_ENOMEM, p->tstart, "out of memory");
    else
        n->type = t;
    return n;
}

static bool op_is(const struct parser *p, const char *name)
{
    return p->tt == T_OP && strcmp(p->tval, name) == 0;
}

static int cmp_op_parse(const char *s, enum cmp_op *ret)
{
    static const struct {
        const char *n;
        enum cmp_op op;
    } ops[] = {{"eq", OP_EQ}, {"ne", OP_NE}, {"like", OP_LIKE}, {"notlike", OP_NOTLIKE},
               {"gt", OP_GT}, {"ge", OP_GE}, {"lt", OP_LT},     {"le", OP_LE}};
    /* -ieq / -ceq and the like: accepted, compared case-insensitively all the same */
    if ((s[0] == 'i' || s[0] == 'c') && s[1])
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            if (strcmp(s + 1, ops[i].n) == 0) {
                *ret = ops[i].op;
                return 0;
            }
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(s, ops[i].n) == 0) {
            *ret = ops[i].op;
            return 0;
        }
    return EG_ENOTFOUND;
}

/* ---- dates: yyyy-mm-dd[Thh:mm[:ss[.fff]]][Z|+hh:mm] or m/d/yyyy[ h:mm[:ss][ AM|PM]] ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool read_num(const char **s, int min_digits, int max_digits, int *ret)
{
    int v = 0, n = 0;
    while (**s >= '0' && **s <= '9' && n < max_digits) {
        v = v * 10 + (**s - '0');
        (*s)++;
        n++;
    }
    if (n < min_digits)
        return false;
    *ret = v;
    return true;
}

static bool parse_date(const char *s, int64_t *ret)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, off = 0;
    const char *p = s;
    while (is_space(*p))
        p++;
    if (strchr(p, '/')) {
        if (!read_num(&p, 1, 2, &mo) || *p++ != '/' || !read_num(&p, 1, 2, &d) || *p++ != '/' ||
            !read_num(&p, 4, 4, &y))
            return false;
        if (*p == ' ') {
            p++;
            if (!read_num(&p, 1, 2, &h) || *p++ != ':' || !read_num(&p, 2, 2, &mi))
                return false;
            if (*p == ':' && (p++, !read_num(&p, 2, 2, &sec)))
                return false;
            while (*p == ' ')
                p++;
            if (strncasecmp(p, "PM", 2) == 0 || strncasecmp(p, "AM", 2) == 0) {
                if (h < 1 || h > 12)
                    return false;
                bool pm = (p[0] == 'P' || p[0] == 'p');
                h = h % 12 + (pm ? 12 : 0);
                p += 2;
            }
        }
    } else {
        if (!read_num(&p, 4, 4, &y) || *p++ != '-' || !read_num(&p, 2, 2, &mo) || *p++ != '-' ||
            !read_num(&p, 2, 2, &d))
            return false;
        if (*p == 'T' || *p == 't' || *p == ' ') {
            p++;
            if (!read_num(&p, 2, 2, &h) || *p++ != ':' || !read_num(&p, 2, 2, &mi))
                return false;
            if (*p == ':') {
                p++;
                if (!read_num(&p, 2, 2, &sec))
                    return false;
                if (*p == '.') {
                    p++;
                    int digits = 0, frac = 0;
                    while (*p >= '0' && *p <= '9') {
                        if (digits < 3)
                            frac = frac * 10 + (*p - '0');
                        digits++;
                        p++;
                    }
                    if (!digits)
                        return false;
                    for (; digits < 3; digits++)
                        frac *= 10;
                    ms = frac;
                }
            }
            if (*p == 'Z' || *p == 'z') {
                p++;
            } else if (*p == '+' || *p == '-') {
                int sign = *p++ == '-' ? -1 : 1, oh, om;
                if (!read_num(&p, 2, 2, &oh) || *p++ != ':' || !read_num(&p, 2, 2, &om))
                    return false;
                off = sign * (oh * 60 + om);
            }
        }
    }
    while (is_space(*p))
        p++;
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *ret = ((days * 24 + h) * 60 + mi) * INT64_C(60000) + sec * INT64_C(1000) + ms -
           off * INT64_C(60000);
    return true;
}

static bool bool_text(const char *s, bool *ret)
{
    if (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcasecmp(s, "$true") == 0)
        *ret = true;
    else if (strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcasecmp(s, "$false") == 0)
        *ret = false;
    else
        return false;
    return true;
}

static struct node *parse_or(struct parser *p);

static struct node *parse_cmp(struct parser *p)
{
    if (p->tt != T_WORD) {
        fail(p, EG_EPARSE, p->tstart, NULL);
        return NULL;
    }
    const struct mx_filter_prop *prop = NULL;
    for (size_t i = 0; i < p->n_props; i++)
        if (strcasecmp(p->props[i].name, p->tval) == 0)
            prop = &p->props[i];
    if (!prop) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "\"%s\" is not a recognized filterable property. For more information about the "
                 "filterable properties, see the command help.",
                 p->tval);
        fail(p, EG_ENOTFOUND, p->tstart, msg);
        return NULL;
    }
    next(p);
    enum cmp_op op;
    if (p->tt != T_OP || cmp_op_parse(p->tval, &op) != 0) {
        fail(p, EG_EPARSE, p->tstart, NULL);
        return NULL;
    }
    next(p);
    struct node *n = new_node(p, N_CMP);
    if (!n)
        return NULL;
    n->prop = prop;
    n->op = op;
    size_t vstart = p->tstart;
    if (p->tt == T_VAR) {
        if (strcmp(p->tval, "true") == 0 || strcmp(p->tval, "false") == 0) {
            n->vk = V_BOOL;
            n->vb = p->tval[0] == 't';
        } else if (strcmp(p->tval, "null") == 0) {
            n->vk = V_NULL;
        } else {
            fail(p, EG_EPARSE, vstart, NULL);
        }
    } else if (p->tt == T_WORD || p->tt == T_STR) {
        n->vk = V_STR;
        n->s = p->tval;
        p->tval = NULL;
    } else {
        fail(p, EG_EPARSE, vstart, NULL);
    }
    if (p->rc) {
        node_free(n);
        return NULL;
    }
    /* Convert the value once for the property's kind. */
    if (n->vk == V_STR && prop->kind == FV_BOOL) {
        if (!bool_text(n->s, &n->vb)) {
            fail(p, EG_EPARSE, vstart, NULL);
            node_free(n);
            return NULL;
        }
    } else if (n->vk == V_STR && prop->kind == FV_DATE) {
        if (!parse_date(n->s, &n->vi)) {
            fail(p, EG_EPARSE, vstart, NULL);
            node_free(n);
            return NULL;
        }
    } else if (n->vk == V_STR && prop->kind == FV_INT) {
        if (eg_parse_int64(n->s, INT64_MIN, INT64_MAX, &n->vi) != 0) {
            fail(p, EG_EPARSE, vstart, NULL);
            node_free(n);
            return NULL;
        }
    }
    next(p);
    return n;
}

static struct node *parse_unary(struct parser *p)
{
    if (++p->depth > FILTER_MAX_DEPTH) {
        fail(p, EG_ELIMIT, p->tstart, "The filter is nested too deeply.");
        return NULL;
    }
    struct node *r = NULL;
    if (op_is(p, "not")) {
        next(p);
        struct node *x = parse_unary(p);
        if (x) {
            r = new_node(p, N_NOT);
            if (r)
                r->a = x;
            else
                node_free(x);
        }
    } else if (p->tt == T_LP) {
        next(p);
        r = parse_or(p);
        if (r && p->tt != T_RP) {
            fail(p, EG_EPARSE, p->tstart, NULL);
            node_free(r);
            r = NULL;
        } else if (r) {
            next(p);
        }
    } else {
        r = parse_cmp(p);
    }
    p->depth--;
    return r;
}

static struct node *parse_and(struct parser *p)
{
    struct node *l = parse_unary(p);
    while (l && op_is(p, "and")) {
        next(p);
        struct node *r = parse_unary(p);
        struct node *n = r ? new_node(p, N_AND) : NULL;
        if (!n) {
            node_free(l);
            node_free(r);
            return NULL;
        }
        n->a = l;
        n->b = r;
        l = n;
    }
    return l;
}

static struct node *parse_or(struct parser *p)
{
    if (++p->depth > FILTER_MAX_DEPTH) {
        fail(p, EG_ELIMIT, p->tstart, "The filter is nested too deeply.");
        return NULL;
    }
    struct node *l = parse_and(p);
    while (l && op_is(p, "or")) {
        next(p);
        struct node *r = parse_and(p);
        struct node *n = r ? new_node(p, N_OR) : NULL;
        if (!n) {
            node_free(l);
            node_free(r);
            l = NULL;
            break;
        }
        n->a = l;
        n->b = r;
        l = n;
    }
    p->depth--;
    return l;
}

int mx_filter_parse(const char *text, const struct mx_filter_prop *props, size_t n_props,
                    struct mx_filter **ret, char *err, size_t err_size)
{
    if (err && err_size)
        err[0] = '\0';
    if (!text || !ret)
        return EG_EINVAL;
    if (strlen(text) > FILTER_MAX_LEN) {
        if (err && err_size)
            snprintf(err, err_size, "The filter is longer than %d characters.", FILTER_MAX_LEN);
        return EG_ELIMIT;
    }
    /* An outer script-block pair { ... } is accepted and dropped. */
    char *work = NULL;
    const char *t = text;
    while (is_space(*t))
        t++;
    size_t tl = strlen(t);
    while (tl && is_space(t[tl - 1]))
        tl--;
    if (tl >= 2 && t[0] == '{' && t[tl - 1] == '}') {
        work = eg_strndup(t + 1, tl - 2);
        if (!work)
            return EG_ENOMEM;
    }
    struct parser p = {.text = work ? work : text,
                       .props = props,
                       .n_props = n_props,
                       .err = err,
                       .err_size = err_size};
    next(&p);
    struct node *root = NULL;
    if (p.tt == T_END)
        fail(&p, EG_EPARSE, p.tstart, NULL);
    else
        root = parse_or(&p);
    if (!p.rc && p.tt != T_END)
        fail(&p, EG_EPARSE, p.tstart, NULL);
    eg_free(p.tval);
    int rc = p.rc;
    struct mx_filter *f = NULL;
    if (rc == 0) {
        f = eg_calloc(1, sizeof *f);
        if (!f)
            rc = EG_ENOMEM;
    }
    if (rc != 0) {
        node_free(root);
        eg_free(work);
        return rc;
    }
    eg_free(work);
    f->root = root;
    *ret = f;
    return 0;
}

/* ---- evaluation ---- */

static int cmp3(int c, enum cmp_op op)
{
    switch (op) {
    case OP_EQ:
        return c == 0;
    case OP_NE:
        return c != 0;
    case OP_GT:
        return c > 0;
    case OP_GE:
        return c >= 0;
    case OP_LT:
        return c < 0;
    case OP_LE:
        return c <= 0;
    default:
        return 0;
    }
}

static bool str_match(const char *have, const struct node *n)
{
    const char *want = n->vk == V_BOOL ? (n->vb ? "True" : "False") : n->s;
    switch (n->op) {
    case OP_LIKE:
        return mx_wildcard(want, have);
    case OP_NOTLIKE:
        return !mx_wildcard(want, have);
    default:
        return cmp3(strcasecmp(have, want), n->op);
    }
}

static bool eval_cmp(const struct node *n, const struct mx_fval *v)
{
    bool is_null = v->kind == FV_NULL || (v->kind == FV_STR && (!v->s || !*v->s)) ||
                   (v->kind == FV_LIST && v->n == 0);
    if (n->vk == V_NULL) {
        if (n->op == OP_EQ)
            return is_null;
        if (n->op == OP_NE)
            return !is_null;
        return false;
    }
    switch (v->kind) {
    case FV_NULL:
        return n->op == OP_NE || n->op == OP_NOTLIKE;
    case FV_STR:
        return str_match(v->s ? v->s : "", n);
    case FV_LIST: {
        /* contains semantics: -eq / -like: some element matches; -ne / -notlike: none does */
        struct node pos = *n;
        bool negate = n->op == OP_NE || n->op == OP_NOTLIKE;
        if (n->op == OP_NE)
            pos.op = OP_EQ;
        else if (n->op == OP_NOTLIKE)
            pos.op = OP_LIKE;
        bool any = false;
        for (size_t i = 0; i < v->n && !any; i++)
            any = str_match(v->list[i], &pos);
        return negate ? !any : any;
    }
    case FV_BOOL: {
        bool want = n->vb;
        if (n->vk == V_STR && n->prop->kind != FV_BOOL && !bool_text(n->s, &want))
            return n->op == OP_NE;
        if (n->op == OP_EQ)
            return v->b == want;
        if (n->op == OP_NE)
            return v->b != want;
        return false;
    }
    case FV_DATE:
    case FV_INT: {
        if (n->vk != V_STR)
            return false;
        int64_t want = n->vi;
        if (n->op == OP_LIKE || n->op == OP_NOTLIKE) {
            char b[32];
            snprintf(b, sizeof b, "%lld", (long long)v->i);
            return str_match(b, n);
        }
        return cmp3(v->i < want ? -1 : v->i > want ? 1 : 0, n->op);
    }
    }
    return false;
}

static bool eval(const struct node *n, mx_filter_get get, void *ctx)
{
    switch (n->type) {
    case N_AND:
        return eval(n->a, get, ctx) && eval(n->b, get, ctx);
    case N_OR:
        return eval(n->a, get, ctx) || eval(n->b, get, ctx);
    case N_NOT:
        return !eval(n->a, get, ctx);
    case N_CMP: {
        struct mx_fval v;
        memset(&v, 0, sizeof v);
        get(ctx, n->prop->id, &v);
        return eval_cmp(n, &v);
    }
    }
    return false;
}

bool mx_filter_eval(const struct mx_filter *f, mx_filter_get get, void *ctx)
{
    return f && f->root ? eval(f->root, get, ctx) : true;
}
