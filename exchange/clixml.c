/* clixml.c - the CLIXML object model: value nodes, constructors (including the parsers of every
 * primitive's element text, shared with the decoder), object building, lookups, typed getters and
 * structural equality. The decoder is clixml_decode.c, the encoder clixml_encode.c. */
#include "exchange/clixml.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"

/* The shared empty string of every eg_ps_str of length 0 (never written, never freed). */
static char empty_str[1];

static atomic_size_t live_values;

static const char *const kind_tags[EG__PS_KIND_COUNT] = {
    [EG_PS_NIL] = "Nil",
    [EG_PS_S] = "S",
    [EG_PS_C] = "C",
    [EG_PS_B] = "B",
    [EG_PS_DT] = "DT",
    [EG_PS_BY] = "By",
    [EG_PS_SB] = "SB",
    [EG_PS_U16] = "U16",
    [EG_PS_I16] = "I16",
    [EG_PS_U32] = "U32",
    [EG_PS_I32] = "I32",
    [EG_PS_U64] = "U64",
    [EG_PS_I64] = "I64",
    [EG_PS_SG] = "Sg",
    [EG_PS_DB] = "Db",
    [EG_PS_D] = "D",
    [EG_PS_G] = "G",
    [EG_PS_URI] = "URI",
    [EG_PS_VERSION] = "Version",
    [EG_PS_XD] = "XD",
    [EG_PS_SBK] = "SBK",
    [EG_PS_BA] = "BA",
    [EG_PS_SS] = "SS",
    [EG_PS_TS] = "TS",
    [EG_PS_PR] = "PR",
    [EG_PS_OBJ] = "Obj",
};

const char *eg_ps_kind_tag(enum eg_ps_kind kind)
{
    if ((unsigned)kind >= EG__PS_KIND_COUNT)
        return "?";
    return kind_tags[kind];
}

size_t eg_ps_live_values(void)
{
    return atomic_load(&live_values);
}

/* ---- strings ---- */

static int str_set(struct eg_ps_str *d, const char *s, size_t len)
{
    char *p = empty_str;
    if (len) {
        if (len == SIZE_MAX)
            return EG_ENOMEM;
        p = eg_malloc(len + 1);
        if (!p)
            return EG_ENOMEM;
        memcpy(p, s, len);
        p[len] = '\0';
    }
    if (d->s && d->s != empty_str)
        eg_free(d->s);
    d->s = p;
    d->len = len;
    return 0;
}

static void str_free(struct eg_ps_str *d)
{
    if (d->s && d->s != empty_str)
        eg_free(d->s);
    d->s = empty_str;
    d->len = 0;
}

static bool str_eq(const struct eg_ps_str *a, const struct eg_ps_str *b)
{
    return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
}

int eg_ps_str_set(struct eg_ps_str *field, const char *s, size_t len)
{
    if (!field || (!s && len))
        return EG_EINVAL;
    return str_set(field, s, len);
}

/* ---- nodes ---- */

static struct eg_ps_value *value_alloc(enum eg_ps_kind kind)
{
    struct eg_ps_value *v = eg_calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->kind = kind;
    v->refs = 1;
    v->text.s = empty_str;
    atomic_fetch_add(&live_values, 1);
    return v;
}

static void types_unref(struct eg_ps_types *t)
{
    if (!t || --t->refs > 0)
        return;
    for (size_t i = 0; i < t->n; i++)
        eg_free(t->names[i]);
    eg_free(t->names);
    eg_free(t);
}

struct eg_ps_types *eg_ps_types_ref(struct eg_ps_types *t)
{
    if (t)
        t->refs++;
    return t;
}

void eg_ps_types_free(struct eg_ps_types *t)
{
    types_unref(t);
}

static void obj_destroy(struct eg_ps_obj *o)
{
    if (!o)
        return;
    types_unref(o->types);
    str_free(&o->to_string);
    eg_ps_value_free(o->base);
    for (size_t i = 0; i < o->n_items; i++)
        eg_ps_value_free(o->items[i]);
    eg_free(o->items);
    for (size_t i = 0; i < o->n_entries; i++) {
        eg_ps_value_free(o->entries[i].key);
        eg_ps_value_free(o->entries[i].value);
    }
    eg_free(o->entries);
    for (size_t i = 0; i < o->n_props; i++) {
        str_free(&o->props[i].name);
        eg_ps_value_free(o->props[i].value);
    }
    eg_free(o->props);
    for (size_t i = 0; i < o->n_ms; i++) {
        str_free(&o->ms[i].name);
        eg_ps_value_free(o->ms[i].value);
    }
    eg_free(o->ms);
    eg_free(o);
}

static void pr_destroy(struct eg_ps_progress *p)
{
    if (!p)
        return;
    str_free(&p->activity);
    str_free(&p->record_type);
    str_free(&p->status_description);
    eg_ps_value_free(p->current_operation);
    eg_free(p);
}

struct eg_ps_value *eg_ps_value_ref(struct eg_ps_value *v)
{
    if (v)
        v->refs++;
    return v;
}

void eg_ps_value_free(struct eg_ps_value *v)
{
    if (!v)
        return;
    if (v->refs > 1) {
        v->refs--;
        return;
    }
    if (v->kind == EG_PS_OBJ)
        obj_destroy(v->u.obj);
    else if (v->kind == EG_PS_PR)
        pr_destroy(v->u.pr);
    str_free(&v->text);
    atomic_fetch_sub(&live_values, 1);
    eg_free(v);
}

/* ---- simple constructors ---- */

struct eg_ps_value *eg_ps_new_nil(void)
{
    return value_alloc(EG_PS_NIL);
}

struct eg_ps_value *eg_ps_new_bool(bool b)
{
    struct eg_ps_value *v = value_alloc(EG_PS_B);
    if (v)
        v->u.b = b;
    return v;
}

static struct eg_ps_value *new_signed(enum eg_ps_kind k, int64_t x)
{
    struct eg_ps_value *v = value_alloc(k);
    if (v)
        v->u.i = x;
    return v;
}

static struct eg_ps_value *new_unsigned(enum eg_ps_kind k, uint64_t x)
{
    struct eg_ps_value *v = value_alloc(k);
    if (v)
        v->u.u = x;
    return v;
}

struct eg_ps_value *eg_ps_new_i8(int8_t v)
{
    return new_signed(EG_PS_SB, v);
}
struct eg_ps_value *eg_ps_new_i16(int16_t v)
{
    return new_signed(EG_PS_I16, v);
}
struct eg_ps_value *eg_ps_new_i32(int32_t v)
{
    return new_signed(EG_PS_I32, v);
}
struct eg_ps_value *eg_ps_new_i64(int64_t v)
{
    return new_signed(EG_PS_I64, v);
}
struct eg_ps_value *eg_ps_new_u8(uint8_t v)
{
    return new_unsigned(EG_PS_BY, v);
}
struct eg_ps_value *eg_ps_new_u16(uint16_t v)
{
    return new_unsigned(EG_PS_U16, v);
}
struct eg_ps_value *eg_ps_new_u32(uint32_t v)
{
    return new_unsigned(EG_PS_U32, v);
}
struct eg_ps_value *eg_ps_new_u64(uint64_t v)
{
    return new_unsigned(EG_PS_U64, v);
}
struct eg_ps_value *eg_ps_new_char(uint16_t unit)
{
    return new_unsigned(EG_PS_C, unit);
}

struct eg_ps_value *eg_ps_new_float(float f)
{
    struct eg_ps_value *v = value_alloc(EG_PS_SG);
    if (v)
        v->u.d = (double)f;
    return v;
}

struct eg_ps_value *eg_ps_new_double(double d)
{
    struct eg_ps_value *v = value_alloc(EG_PS_DB);
    if (v)
        v->u.d = d;
    return v;
}

static struct eg_ps_value *new_textual(enum eg_ps_kind k, const char *s, size_t len)
{
    struct eg_ps_value *v = value_alloc(k);
    if (v && str_set(&v->text, s ? s : "", s ? len : 0) != 0) {
        eg_ps_value_free(v);
        return NULL;
    }
    return v;
}

struct eg_ps_value *eg_ps_new_string(const char *s)
{
    return new_textual(EG_PS_S, s, s ? strlen(s) : 0);
}

struct eg_ps_value *eg_ps_new_stringn(const char *s, size_t len)
{
    return new_textual(EG_PS_S, s, len);
}

struct eg_ps_value *eg_ps_new_bytes(const void *data, size_t len)
{
    return new_textual(EG_PS_BA, data, data ? len : 0);
}

struct eg_ps_value *eg_ps_new_guid(const uint8_t guid[16])
{
    struct eg_ps_value *v = value_alloc(EG_PS_G);
    if (v && guid)
        memcpy(v->u.guid, guid, 16);
    return v;
}

/* ---- calendar (proleptic Gregorian, H. Hinnant's algorithms) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned mp = m > 2 ? m - 3 : m + 9;
    unsigned doy = (153 * mp + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dim[m - 1];
}

#define MS_PER_DAY INT64_C(86400000)
#define DT_MIN_MS  (days_from_civil(1, 1, 1) * MS_PER_DAY)
#define DT_MAX_MS  (days_from_civil(9999, 12, 31) * MS_PER_DAY + MS_PER_DAY - 1)

struct eg_ps_value *eg_ps_new_datetime(int64_t ms)
{
    char buf[40];
    int64_t y;
    unsigned mo, d;

    if (ms < DT_MIN_MS)
        ms = DT_MIN_MS;
    if (ms > DT_MAX_MS)
        ms = DT_MAX_MS;
    int64_t days = ms >= 0 ? ms / MS_PER_DAY : -((-ms + MS_PER_DAY - 1) / MS_PER_DAY);
    int64_t rem = ms - days * MS_PER_DAY;
    civil_from_days(days, &y, &mo, &d);
    unsigned frac = (unsigned)(rem % 1000);
    int64_t secs = rem / 1000;
    int n = snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02u:%02u:%02u", (long long)y, mo, d,
                     (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60), (unsigned)(secs % 60));
    if (frac) {
        char f[16];
        snprintf(f, sizeof f, ".%03u", frac % 1000);
        size_t fl = strlen(f);
        while (f[fl - 1] == '0')
            f[--fl] = '\0';
        snprintf(buf + n, sizeof buf - (size_t)n, "%sZ", f);
    } else {
        snprintf(buf + n, sizeof buf - (size_t)n, "Z");
    }
    struct eg_ps_value *v = new_textual(EG_PS_DT, buf, strlen(buf));
    if (v) {
        v->u.dt.ms = ms;
        v->u.dt.tz = EG_PS_TZ_UTC;
    }
    return v;
}

#define TICKS_PER_SEC INT64_C(10000000)

struct eg_ps_value *eg_ps_new_timespan(int64_t ticks)
{
    /* As .NET's XmlConvert.ToString(TimeSpan): [-]P[nD][T[nH][nM][n[.fffffff]S]], "PT0S" for 0. */
    char buf[64];
    size_t o = 0;
    uint64_t t = ticks < 0 ? (uint64_t)0 - (uint64_t)ticks : (uint64_t)ticks;
    uint64_t days = t / (uint64_t)(TICKS_PER_SEC * 86400);
    uint64_t r = t % (uint64_t)(TICKS_PER_SEC * 86400);
    unsigned hours = (unsigned)(r / (uint64_t)(TICKS_PER_SEC * 3600));
    r %= (uint64_t)(TICKS_PER_SEC * 3600);
    unsigned mins = (unsigned)(r / (uint64_t)(TICKS_PER_SEC * 60));
    r %= (uint64_t)(TICKS_PER_SEC * 60);
    unsigned secs = (unsigned)(r / (uint64_t)TICKS_PER_SEC);
    unsigned frac = (unsigned)(r % (uint64_t)TICKS_PER_SEC);

    if (ticks < 0)
        buf[o++] = '-';
    buf[o++] = 'P';
    if (days)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%lluD", (unsigned long long)days);
    if (hours || mins || secs || frac) {
        buf[o++] = 'T';
        if (hours)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%uH", hours);
        if (mins)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%uM", mins);
        if (secs || frac) {
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%u", secs);
            if (frac) {
                char f[16];
                snprintf(f, sizeof f, ".%07u", frac % 10000000);
                size_t fl = strlen(f);
                while (f[fl - 1] == '0')
                    f[--fl] = '\0';
                o += (size_t)snprintf(buf + o, sizeof buf - o, "%s", f);
            }
            buf[o++] = 'S';
        }
    }
    if (buf[o - 1] == 'P') {
        memcpy(buf + o, "T0S", 3);
        o += 3;
    }
    buf[o] = '\0';
    struct eg_ps_value *v = new_textual(EG_PS_TS, buf, o);
    if (v)
        v->u.ticks = ticks;
    return v;
}

struct eg_ps_value *eg_ps_new_obj(void)
{
    struct eg_ps_value *v = value_alloc(EG_PS_OBJ);
    if (!v)
        return NULL;
    v->u.obj = eg_calloc(1, sizeof *v->u.obj);
    if (!v->u.obj) {
        eg_free(v);
        atomic_fetch_sub(&live_values, 1);
        return NULL;
    }
    v->u.obj->to_string.s = empty_str;
    return v;
}

struct eg_ps_value *eg_ps_new_progress(void)
{
    struct eg_ps_value *v = value_alloc(EG_PS_PR);
    if (!v)
        return NULL;
    v->u.pr = eg_calloc(1, sizeof *v->u.pr);
    if (!v->u.pr) {
        eg_free(v);
        atomic_fetch_sub(&live_values, 1);
        return NULL;
    }
    v->u.pr->activity.s = v->u.pr->record_type.s = v->u.pr->status_description.s = empty_str;
    v->u.pr->current_operation = eg_ps_new_nil();
    if (!v->u.pr->current_operation) {
        eg_ps_value_free(v);
        return NULL;
    }
    return v;
}

/* ---- element text parsers ---- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void trim(const char **s, size_t *len)
{
    while (*len && is_ws(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len && is_ws((*s)[*len - 1]))
        (*len)--;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Optional sign, then decimal digits only; the magnitude into *mag (EG_EPARSE on overflow). */
static int parse_mag(const char *s, size_t len, bool *neg, uint64_t *mag)
{
    size_t i = 0;
    uint64_t v = 0;
    *neg = false;
    if (i < len && (s[i] == '+' || s[i] == '-')) {
        *neg = s[i] == '-';
        i++;
    }
    if (i == len)
        return EG_EPARSE;
    for (; i < len; i++) {
        if (!is_digit(s[i]))
            return EG_EPARSE;
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return EG_EPARSE;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *mag = v;
    return 0;
}

static int parse_signed(const char *s, size_t len, int64_t min, int64_t max, int64_t *ret)
{
    bool neg;
    uint64_t mag;
    if (parse_mag(s, len, &neg, &mag) != 0)
        return EG_EPARSE;
    if (neg) {
        if (mag > (uint64_t)(-(min + 1)) + 1)
            return EG_EPARSE;
        *ret = mag == 0 ? 0 : -(int64_t)(mag - 1) - 1;
    } else {
        if (mag > (uint64_t)max)
            return EG_EPARSE;
        *ret = (int64_t)mag;
    }
    return 0;
}

static int parse_unsigned(const char *s, size_t len, uint64_t max, uint64_t *ret)
{
    bool neg;
    uint64_t mag;
    if (parse_mag(s, len, &neg, &mag) != 0 || (neg && mag != 0) || mag > max)
        return EG_EPARSE;
    *ret = mag;
    return 0;
}

/* Exact-length, exact-case compare. */
static bool text_is(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

/* .NET Double.Parse syntax (AllowLeadingSign | AllowDecimalPoint | AllowExponent), plus "INF",
 * "-INF", "Infinity", "NaN". Overflow is an error (as on .NET Framework). */
static int parse_float(const char *s, size_t len, bool single, double *ret)
{
    char buf[128];
    size_t i = 0;
    bool digits = false;

    if (text_is(s, len, "INF") || text_is(s, len, "Infinity") || text_is(s, len, "+Infinity")) {
        *ret = INFINITY;
        return 0;
    }
    if (text_is(s, len, "-INF") || text_is(s, len, "-Infinity")) {
        *ret = -INFINITY;
        return 0;
    }
    if (text_is(s, len, "NaN")) {
        *ret = NAN;
        return 0;
    }
    if (i < len && (s[i] == '+' || s[i] == '-'))
        i++;
    while (i < len && is_digit(s[i])) {
        i++;
        digits = true;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && is_digit(s[i])) {
            i++;
            digits = true;
        }
    }
    if (!digits)
        return EG_EPARSE;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i == len || !is_digit(s[i]))
            return EG_EPARSE;
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i != len || len >= sizeof buf)
        return EG_EPARSE;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    double d;
    if (single) {
        float f = strtof(buf, NULL);
        if (errno == ERANGE && isinf(f))
            return EG_EPARSE;
        d = (double)f;
    } else {
        d = strtod(buf, NULL);
        if (errno == ERANGE && isinf(d))
            return EG_EPARSE;
    }
    *ret = d;
    return 0;
}

/* .NET Decimal: sign, digits, optional fraction, no exponent, |value| < 2^96. */
static int check_decimal(const char *s, size_t len)
{
    static const char dmax[] = "79228162514264337593543950335";
    size_t i = 0, int_start, int_len;
    bool digits = false;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        i++;
    while (i < len && s[i] == '0') {
        i++;
        digits = true;
    }
    int_start = i;
    while (i < len && is_digit(s[i]))
        i++;
    int_len = i - int_start;
    digits = digits || int_len > 0;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && is_digit(s[i])) {
            i++;
            digits = true;
        }
    }
    if (!digits || i != len)
        return EG_EPARSE;
    if (int_len > sizeof dmax - 1 ||
        (int_len == sizeof dmax - 1 && memcmp(s + int_start, dmax, int_len) > 0))
        return EG_EPARSE;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* GUID in the .NET "D" (8-4-4-4-12), "N" (32 digits), "B" ({D}) or "P" ((D)) form. */
static int parse_guid(const char *s, size_t len, uint8_t out[16])
{
    bool dashes;
    if (len == 38 && ((s[0] == '{' && s[37] == '}') || (s[0] == '(' && s[37] == ')'))) {
        s++;
        len = 36;
    }
    if (len == 36)
        dashes = true;
    else if (len == 32)
        dashes = false;
    else
        return EG_EPARSE;
    size_t p = 0;
    for (int b = 0; b < 16; b++) {
        if (dashes && (p == 8 || p == 13 || p == 18 || p == 23)) {
            if (s[p] != '-')
                return EG_EPARSE;
            p++;
        }
        int hi = hexval(s[p]), lo = hexval(s[p + 1]);
        if (hi < 0 || lo < 0)
            return EG_EPARSE;
        out[b] = (uint8_t)(hi << 4 | lo);
        p += 2;
    }
    return 0;
}

/* Exactly n digits at s[*i]. */
static int fixed_digits(const char *s, size_t len, size_t *i, size_t n, unsigned *ret)
{
    unsigned v = 0;
    if (len - *i < n)
        return EG_EPARSE;
    for (size_t k = 0; k < n; k++) {
        char c = s[*i + k];
        if (!is_digit(c))
            return EG_EPARSE;
        v = v * 10 + (unsigned)(c - '0');
    }
    *i += n;
    *ret = v;
    return 0;
}

static int expect(const char *s, size_t len, size_t *i, char c)
{
    if (*i >= len || s[*i] != c)
        return EG_EPARSE;
    (*i)++;
    return 0;
}

/* xs:dateTime: YYYY-MM-DDThh:mm:ss[.f+][Z|(+|-)hh:mm], years 0001..9999. */
static int parse_datetime(const char *s, size_t len, struct eg_ps_value *v)
{
    size_t i = 0;
    unsigned y, mo, d, h, mi, se, oh = 0, om = 0;
    int64_t frac_ms = 0;

    if (fixed_digits(s, len, &i, 4, &y) || expect(s, len, &i, '-') ||
        fixed_digits(s, len, &i, 2, &mo) || expect(s, len, &i, '-') ||
        fixed_digits(s, len, &i, 2, &d) || expect(s, len, &i, 'T') ||
        fixed_digits(s, len, &i, 2, &h) || expect(s, len, &i, ':') ||
        fixed_digits(s, len, &i, 2, &mi) || expect(s, len, &i, ':') ||
        fixed_digits(s, len, &i, 2, &se))
        return EG_EPARSE;
    if (i < len && s[i] == '.') {
        size_t n = 0;
        i++;
        while (i < len && is_digit(s[i])) {
            if (n < 3)
                frac_ms = frac_ms * 10 + (s[i] - '0');
            n++;
            i++;
        }
        if (n == 0)
            return EG_EPARSE;
        for (; n < 3; n++)
            frac_ms *= 10;
    }
    v->u.dt.tz = EG_PS_TZ_UNSPECIFIED;
    v->u.dt.offset_min = 0;
    if (i < len && s[i] == 'Z') {
        i++;
        v->u.dt.tz = EG_PS_TZ_UTC;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        bool neg = s[i] == '-';
        i++;
        if (fixed_digits(s, len, &i, 2, &oh) || expect(s, len, &i, ':') ||
            fixed_digits(s, len, &i, 2, &om))
            return EG_EPARSE;
        if (oh > 14 || om > 59 || (oh == 14 && om != 0))
            return EG_EPARSE;
        v->u.dt.tz = EG_PS_TZ_OFFSET;
        v->u.dt.offset_min = (int32_t)(oh * 60 + om) * (neg ? -1 : 1);
    }
    if (i != len)
        return EG_EPARSE;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
        se > 59)
        return EG_EPARSE;
    int64_t ms = days_from_civil(y, mo, d) * MS_PER_DAY +
                 ((int64_t)h * 3600 + mi * 60 + se) * 1000 + frac_ms;
    v->u.dt.ms = ms - (int64_t)v->u.dt.offset_min * 60000;
    return 0;
}

/* Unsigned decimal number at s[*i] (at least one digit), overflow checked. */
static int number_at(const char *s, size_t len, size_t *i, uint64_t *ret)
{
    uint64_t v = 0;
    size_t start = *i;
    while (*i < len && is_digit(s[*i])) {
        if (v > (UINT64_MAX - 9) / 10)
            return EG_EPARSE;
        v = v * 10 + (uint64_t)(s[*i] - '0');
        (*i)++;
    }
    if (*i == start)
        return EG_EPARSE;
    *ret = v;
    return 0;
}

static int add_scaled(uint64_t *acc, uint64_t n, uint64_t scale)
{
    uint64_t x;
    if (__builtin_mul_overflow(n, scale, &x) || __builtin_add_overflow(*acc, x, acc))
        return EG_EPARSE;
    return 0;
}

/* xs:duration as .NET reads it: [-]P[nY][nM][nD][T[nH][nM][n[.f]S]]; a year is 365 days and a
 * month 30 (XsdDuration's convention); fraction digits past the 7th are dropped. */
static int parse_duration(const char *s, size_t len, int64_t *ret)
{
    const uint64_t day = (uint64_t)TICKS_PER_SEC * 86400;
    size_t i = 0;
    bool neg = false, any = false;
    uint64_t acc = 0, n;

    if (i < len && s[i] == '-') {
        neg = true;
        i++;
    }
    if (expect(s, len, &i, 'P'))
        return EG_EPARSE;
    /* date part: Y, M, D in that order */
    static const struct {
        char unit;
        uint64_t scale;
    } dparts[] = {{'Y', 365}, {'M', 30}, {'D', 1}};
    size_t dp = 0;
    while (i < len && is_digit(s[i])) {
        if (number_at(s, len, &i, &n) || i >= len)
            return EG_EPARSE;
        while (dp < 3 && dparts[dp].unit != s[i])
            dp++;
        if (dp == 3)
            return EG_EPARSE;
        if (add_scaled(&acc, n, dparts[dp].scale * day))
            return EG_EPARSE;
        dp++;
        i++;
        any = true;
    }
    if (i < len && s[i] == 'T') {
        bool tany = false;
        int tp = 0; /* 0 = H next, 1 = M, 2 = S, 3 = done */
        i++;
        while (i < len && (is_digit(s[i]) || s[i] == '.')) {
            uint64_t whole = 0, frac = 0;
            size_t fd = 0;
            if (is_digit(s[i]) && number_at(s, len, &i, &whole))
                return EG_EPARSE;
            if (i < len && s[i] == '.') {
                i++;
                while (i < len && is_digit(s[i])) {
                    if (fd < 7) {
                        frac = frac * 10 + (uint64_t)(s[i] - '0');
                        fd++;
                    }
                    i++;
                }
                if (fd == 0)
                    return EG_EPARSE;
                for (size_t k = fd; k < 7; k++)
                    frac *= 10;
                if (i >= len || s[i] != 'S')
                    return EG_EPARSE;
            }
            if (i >= len)
                return EG_EPARSE;
            if (s[i] == 'H' && tp <= 0) {
                tp = 1;
                if (add_scaled(&acc, whole, (uint64_t)TICKS_PER_SEC * 3600))
                    return EG_EPARSE;
            } else if (s[i] == 'M' && tp <= 1) {
                tp = 2;
                if (add_scaled(&acc, whole, (uint64_t)TICKS_PER_SEC * 60))
                    return EG_EPARSE;
            } else if (s[i] == 'S' && tp <= 2) {
                tp = 3;
                if (add_scaled(&acc, whole, (uint64_t)TICKS_PER_SEC) || add_scaled(&acc, frac, 1))
                    return EG_EPARSE;
            } else {
                return EG_EPARSE;
            }
            i++;
            tany = true;
        }
        if (!tany)
            return EG_EPARSE;
        any = true;
    }
    if (!any || i != len || acc > (uint64_t)INT64_MAX + (neg ? 1 : 0))
        return EG_EPARSE;
    if (!neg)
        *ret = (int64_t)acc;
    else
        *ret = acc > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)acc;
    return 0;
}

/* Version: 2 to 4 dot-separated components, each 0..INT32_MAX. */
static int parse_version(const char *s, size_t len, int32_t out[4])
{
    size_t i = 0;
    int n = 0;
    for (int k = 0; k < 4; k++)
        out[k] = -1;
    while (n < 4) {
        uint64_t c;
        if (number_at(s, len, &i, &c) || c > INT32_MAX)
            return EG_EPARSE;
        out[n++] = (int32_t)c;
        if (i == len)
            break;
        if (s[i] != '.')
            return EG_EPARSE;
        i++;
    }
    if (i != len || n < 2)
        return EG_EPARSE;
    return 0;
}

int eg_ps_new_text(enum eg_ps_kind kind, const char *text, size_t len, struct eg_ps_value **ret)
{
    struct eg_ps_value *v = NULL;
    int rc = 0;
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    const char *t = text;
    size_t tl = len;

    if (!ret || (!text && len))
        return EG_EINVAL;
    if (!text)
        t = "";
    switch (kind) {
    case EG_PS_S:
    case EG_PS_URI:
    case EG_PS_XD:
    case EG_PS_SBK:
        v = new_textual(kind, t, tl);
        rc = v ? 0 : EG_ENOMEM;
        goto out;
    case EG_PS_NIL:
    case EG_PS_PR:
    case EG_PS_OBJ:
    case EG__PS_KIND_COUNT:
        return EG_EINVAL;
    default:
        if ((unsigned)kind >= EG__PS_KIND_COUNT)
            return EG_EINVAL;
        break;
    }
    trim(&t, &tl);
    switch (kind) {
    case EG_PS_B:
        if (text_is(t, tl, "true") || text_is(t, tl, "1"))
            v = eg_ps_new_bool(true);
        else if (text_is(t, tl, "false") || text_is(t, tl, "0"))
            v = eg_ps_new_bool(false);
        else
            return EG_EPARSE;
        break;
    case EG_PS_SB:
        rc = parse_signed(t, tl, INT8_MIN, INT8_MAX, &i);
        v = rc ? NULL : new_signed(kind, i);
        break;
    case EG_PS_I16:
        rc = parse_signed(t, tl, INT16_MIN, INT16_MAX, &i);
        v = rc ? NULL : new_signed(kind, i);
        break;
    case EG_PS_I32:
        rc = parse_signed(t, tl, INT32_MIN, INT32_MAX, &i);
        v = rc ? NULL : new_signed(kind, i);
        break;
    case EG_PS_I64:
        rc = parse_signed(t, tl, INT64_MIN, INT64_MAX, &i);
        v = rc ? NULL : new_signed(kind, i);
        break;
    case EG_PS_BY:
        rc = parse_unsigned(t, tl, UINT8_MAX, &u);
        v = rc ? NULL : new_unsigned(kind, u);
        break;
    case EG_PS_U16:
    case EG_PS_C:
        rc = parse_unsigned(t, tl, UINT16_MAX, &u);
        v = rc ? NULL : new_unsigned(kind, u);
        break;
    case EG_PS_U32:
        rc = parse_unsigned(t, tl, UINT32_MAX, &u);
        v = rc ? NULL : new_unsigned(kind, u);
        break;
    case EG_PS_U64:
        rc = parse_unsigned(t, tl, UINT64_MAX, &u);
        v = rc ? NULL : new_unsigned(kind, u);
        break;
    case EG_PS_SG:
    case EG_PS_DB:
        rc = parse_float(t, tl, kind == EG_PS_SG, &d);
        if (!rc && (v = value_alloc(kind)))
            v->u.d = d;
        break;
    case EG_PS_D:
        rc = check_decimal(t, tl);
        v = rc ? NULL : new_textual(kind, t, tl);
        break;
    case EG_PS_G: {
        uint8_t g[16];
        rc = parse_guid(t, tl, g);
        v = rc ? NULL : eg_ps_new_guid(g);
        break;
    }
    case EG_PS_DT:
        if (!(v = new_textual(kind, t, tl)))
            break;
        rc = parse_datetime(t, tl, v);
        break;
    case EG_PS_TS:
        if (!(v = new_textual(kind, t, tl)))
            break;
        rc = parse_duration(t, tl, &v->u.ticks);
        break;
    case EG_PS_VERSION:
        if (!(v = new_textual(kind, t, tl)))
            break;
        rc = parse_version(t, tl, v->u.version);
        break;
    case EG_PS_BA:
    case EG_PS_SS: {
        uint8_t *bytes = NULL;
        size_t n = 0;
        rc = eg_base64_decode(t, tl, EG_BASE64_IGNORE_WS, &bytes, &n);
        if (rc == 0) {
            v = kind == EG_PS_BA ? new_textual(kind, (const char *)bytes, n)
                                 : new_textual(kind, t, tl);
            eg_free(bytes);
        } else if (rc != EG_ENOMEM) {
            rc = EG_EPARSE;
        }
        break;
    }
    default:
        return EG_EINVAL;
    }
    if (rc == 0 && !v)
        rc = EG_ENOMEM;
out:
    if (rc) {
        eg_ps_value_free(v);
        return rc;
    }
    *ret = v;
    return 0;
}

/* ---- building objects ---- */

static int grow(void **arr, size_t *cap, size_t n, size_t elsize)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 4;
    if (ncap < *cap)
        return EG_ENOMEM;
    void *p = eg_reallocarray(*arr, ncap, elsize);
    if (!p)
        return EG_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static struct eg_ps_obj *as_obj(struct eg_ps_value *v)
{
    return v && v->kind == EG_PS_OBJ ? v->u.obj : NULL;
}

static const struct eg_ps_obj *as_cobj(const struct eg_ps_value *v)
{
    return v && v->kind == EG_PS_OBJ ? v->u.obj : NULL;
}

static struct eg_ps_types *types_new(const char *const *names, size_t n)
{
    struct eg_ps_types *t = eg_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->refs = 1;
    t->names = eg_calloc(n ? n : 1, sizeof *t->names);
    if (!t->names) {
        eg_free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        t->names[i] = eg_strdup(names[i] ? names[i] : "");
        if (!t->names[i]) {
            t->n = i;
            types_unref(t);
            return NULL;
        }
    }
    t->n = n;
    return t;
}

int eg_ps_obj_set_types(struct eg_ps_value *obj, const char *const *names, size_t n)
{
    struct eg_ps_obj *o = as_obj(obj);
    struct eg_ps_types *t = NULL;
    if (!o || (n && !names))
        return EG_EINVAL;
    if (n) {
        t = types_new(names, n);
        if (!t)
            return EG_ENOMEM;
    }
    types_unref(o->types);
    o->types = t;
    return 0;
}

int eg_ps_obj_share_types(struct eg_ps_value *obj, struct eg_ps_types *types)
{
    struct eg_ps_obj *o = as_obj(obj);
    if (!o)
        return EG_EINVAL;
    if (types)
        types->refs++;
    types_unref(o->types);
    o->types = types;
    return 0;
}

int eg_ps_obj_set_to_string(struct eg_ps_value *obj, const char *s, size_t len)
{
    struct eg_ps_obj *o = as_obj(obj);
    if (!o || (!s && len))
        return EG_EINVAL;
    int rc = str_set(&o->to_string, s, len);
    if (rc == 0)
        o->has_to_string = true;
    return rc;
}

int eg_ps_obj_set_base(struct eg_ps_value *obj, struct eg_ps_value *v)
{
    struct eg_ps_obj *o = as_obj(obj);
    if (!v)
        return EG_ENOMEM;
    if (!o || v->kind == EG_PS_NIL || v == obj) {
        eg_ps_value_free(v);
        return EG_EINVAL;
    }
    eg_ps_value_free(o->base);
    o->base = v;
    return 0;
}

static bool is_list_ct(enum eg_ps_container ct)
{
    return ct == EG_PS_CT_LST || ct == EG_PS_CT_IE || ct == EG_PS_CT_STK || ct == EG_PS_CT_QUE;
}

int eg_ps_obj_set_container(struct eg_ps_value *obj, enum eg_ps_container ct)
{
    struct eg_ps_obj *o = as_obj(obj);
    if (!o || (unsigned)ct > EG_PS_CT_DCT)
        return EG_EINVAL;
    if ((ct == EG_PS_CT_DCT && o->n_items) || (ct != EG_PS_CT_DCT && o->n_entries))
        return EG_ESTATE;
    o->container = ct;
    return 0;
}

int eg_ps_obj_add_item(struct eg_ps_value *obj, struct eg_ps_value *v)
{
    struct eg_ps_obj *o = as_obj(obj);
    int rc;
    if (!v)
        return EG_ENOMEM;
    if (!o) {
        rc = EG_EINVAL;
        goto fail;
    }
    if (o->container == EG_PS_CT_NONE)
        o->container = EG_PS_CT_LST;
    if (!is_list_ct(o->container)) {
        rc = EG_ESTATE;
        goto fail;
    }
    if ((rc = grow((void **)&o->items, &o->cap_items, o->n_items, sizeof *o->items)))
        goto fail;
    o->items[o->n_items++] = v;
    return 0;
fail:
    eg_ps_value_free(v);
    return rc;
}

int eg_ps_obj_add_entry(struct eg_ps_value *obj, struct eg_ps_value *key, struct eg_ps_value *value)
{
    struct eg_ps_obj *o = as_obj(obj);
    int rc;
    if (!key || !value) {
        rc = EG_ENOMEM;
        goto fail;
    }
    if (!o || key->kind == EG_PS_NIL) {
        rc = EG_EINVAL;
        goto fail;
    }
    if (o->container == EG_PS_CT_NONE)
        o->container = EG_PS_CT_DCT;
    if (o->container != EG_PS_CT_DCT) {
        rc = EG_ESTATE;
        goto fail;
    }
    if ((rc = grow((void **)&o->entries, &o->cap_entries, o->n_entries, sizeof *o->entries)))
        goto fail;
    o->entries[o->n_entries].key = key;
    o->entries[o->n_entries].value = value;
    o->n_entries++;
    return 0;
fail:
    eg_ps_value_free(key);
    eg_ps_value_free(value);
    return rc;
}

int eg_ps_obj_add_named(struct eg_ps_value *obj, enum eg_ps_section section, const char *name,
                        size_t name_len, struct eg_ps_value *v)
{
    struct eg_ps_obj *o = as_obj(obj);
    struct eg_ps_member **arr;
    size_t *n, *cap;
    int rc;
    if (!v)
        return EG_ENOMEM;
    if (!o || (!name && name_len) || (section != EG_PS_PROPS && section != EG_PS_MS)) {
        rc = EG_EINVAL;
        goto fail;
    }
    if (section == EG_PS_PROPS) {
        arr = &o->props;
        n = &o->n_props;
        cap = &o->cap_props;
    } else {
        arr = &o->ms;
        n = &o->n_ms;
        cap = &o->cap_ms;
    }
    if ((rc = grow((void **)arr, cap, *n, sizeof **arr)))
        goto fail;
    struct eg_ps_member *m = &(*arr)[*n];
    m->name.s = NULL;
    if ((rc = str_set(&m->name, name ? name : "", name ? name_len : 0)))
        goto fail;
    m->value = v;
    (*n)++;
    return 0;
fail:
    eg_ps_value_free(v);
    return rc;
}

int eg_ps_obj_add_prop(struct eg_ps_value *obj, const char *name, struct eg_ps_value *v)
{
    return eg_ps_obj_add_named(obj, EG_PS_PROPS, name, name ? strlen(name) : 0, v);
}

int eg_ps_obj_add_ms(struct eg_ps_value *obj, const char *name, struct eg_ps_value *v)
{
    return eg_ps_obj_add_named(obj, EG_PS_MS, name, name ? strlen(name) : 0, v);
}

/* ---- convenience objects ---- */

struct eg_ps_value *eg_ps_new_enum(const char *type_name, const char *name, int32_t value)
{
    const char *tn[] = {type_name ? type_name : "", "System.Enum", "System.ValueType",
                        "System.Object"};
    struct eg_ps_value *v = eg_ps_new_obj();
    if (!v || eg_ps_obj_set_types(v, tn, 4) != 0 ||
        eg_ps_obj_set_to_string(v, name ? name : "", name ? strlen(name) : 0) != 0 ||
        eg_ps_obj_set_base(v, eg_ps_new_i32(value)) != 0) {
        eg_ps_value_free(v);
        return NULL;
    }
    return v;
}

struct eg_ps_value *eg_ps_new_list(const char *const *type_names, size_t n_types)
{
    struct eg_ps_value *v = eg_ps_new_obj();
    if (!v || eg_ps_obj_set_types(v, type_names, type_names ? n_types : 0) != 0 ||
        eg_ps_obj_set_container(v, EG_PS_CT_LST) != 0) {
        eg_ps_value_free(v);
        return NULL;
    }
    return v;
}

struct eg_ps_value *eg_ps_new_string_array(const char *const *items, size_t n)
{
    static const char *const tn[] = {"System.Object[]", "System.Array", "System.Object"};
    struct eg_ps_value *v = eg_ps_new_list(tn, 3);
    for (size_t i = 0; v && i < n; i++) {
        if (eg_ps_obj_add_item(v, eg_ps_new_string(items[i])) != 0) {
            eg_ps_value_free(v);
            v = NULL;
        }
    }
    return v;
}

struct eg_ps_value *eg_ps_new_hashtable(void)
{
    static const char *const tn[] = {"System.Collections.Hashtable", "System.Object"};
    struct eg_ps_value *v = eg_ps_new_obj();
    if (!v || eg_ps_obj_set_types(v, tn, 2) != 0 || eg_ps_obj_set_container(v, EG_PS_CT_DCT) != 0) {
        eg_ps_value_free(v);
        return NULL;
    }
    return v;
}

/* ---- lookups ---- */

static bool name_is(const struct eg_ps_str *n, const char *name, size_t len)
{
    return n->len == len && strncasecmp(n->s, name, len) == 0 && memchr(n->s, 0, len) == NULL;
}

const struct eg_ps_value *eg_ps_obj_prop(const struct eg_ps_value *obj, const char *name)
{
    if (!name)
        return NULL;
    size_t len = strlen(name);
    for (int depth = 0; depth < EG_CLIXML_MAX_DEPTH; depth++) {
        const struct eg_ps_obj *o = as_cobj(obj);
        if (!o)
            return NULL;
        for (size_t i = 0; i < o->n_props; i++)
            if (name_is(&o->props[i].name, name, len))
                return o->props[i].value;
        for (size_t i = 0; i < o->n_ms; i++)
            if (name_is(&o->ms[i].name, name, len))
                return o->ms[i].value;
        obj = o->base;
    }
    return NULL;
}

static const char *strip_deserialized(const char *s)
{
    static const char pfx[] = "Deserialized.";
    if (strncmp(s, pfx, sizeof pfx - 1) == 0)
        return s + sizeof pfx - 1;
    return s;
}

bool eg_ps_has_type(const struct eg_ps_value *v, const char *type_name)
{
    const struct eg_ps_obj *o = as_cobj(v);
    if (!o || !o->types || !type_name)
        return false;
    const char *want = strip_deserialized(type_name);
    for (size_t i = 0; i < o->types->n; i++)
        if (strcmp(strip_deserialized(o->types->names[i]), want) == 0)
            return true;
    return false;
}

const char *eg_ps_type_name(const struct eg_ps_value *v, size_t i)
{
    const struct eg_ps_obj *o = as_cobj(v);
    if (!o || !o->types || i >= o->types->n)
        return NULL;
    return o->types->names[i];
}

const char *eg_ps_to_string(const struct eg_ps_value *v)
{
    if (!v)
        return NULL;
    if (v->kind == EG_PS_S)
        return v->text.s;
    if (v->kind == EG_PS_OBJ && v->u.obj->has_to_string)
        return v->u.obj->to_string.s;
    return NULL;
}

/* Read an OBJ through to its base value (extended primitives). */
static const struct eg_ps_value *through(const struct eg_ps_value *v)
{
    for (int i = 0; v && v->kind == EG_PS_OBJ && v->u.obj->base && i < EG_CLIXML_MAX_DEPTH; i++)
        v = v->u.obj->base;
    return v;
}

/* Common start of a getter: v resolved, EG_ENOTFOUND for NULL/Nil. */
#define GETTER_PROLOGUE(v)                                                                         \
    do {                                                                                           \
        (v) = through(v);                                                                          \
        if (!(v) || (v)->kind == EG_PS_NIL)                                                        \
            return EG_ENOTFOUND;                                                                   \
    } while (0)

int eg_ps_get_string(const struct eg_ps_value *v, const char **ret, size_t *ret_len)
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_S && v->kind != EG_PS_URI && v->kind != EG_PS_XD && v->kind != EG_PS_SBK)
        return EG_EINVAL;
    if (ret)
        *ret = v->text.s;
    if (ret_len)
        *ret_len = v->text.len;
    return 0;
}

int eg_ps_get_bool(const struct eg_ps_value *v, bool *ret)
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_B)
        return EG_EINVAL;
    *ret = v->u.b;
    return 0;
}

static bool is_signed_kind(enum eg_ps_kind k)
{
    return k == EG_PS_SB || k == EG_PS_I16 || k == EG_PS_I32 || k == EG_PS_I64;
}

static bool is_unsigned_kind(enum eg_ps_kind k)
{
    return k == EG_PS_BY || k == EG_PS_U16 || k == EG_PS_U32 || k == EG_PS_U64 || k == EG_PS_C;
}

int eg_ps_get_int64(const struct eg_ps_value *v, int64_t *ret)
{
    GETTER_PROLOGUE(v);
    if (is_signed_kind(v->kind)) {
        *ret = v->u.i;
        return 0;
    }
    if (is_unsigned_kind(v->kind) && v->u.u <= INT64_MAX) {
        *ret = (int64_t)v->u.u;
        return 0;
    }
    return EG_EINVAL;
}

int eg_ps_get_uint64(const struct eg_ps_value *v, uint64_t *ret)
{
    GETTER_PROLOGUE(v);
    if (is_unsigned_kind(v->kind)) {
        *ret = v->u.u;
        return 0;
    }
    if (is_signed_kind(v->kind) && v->u.i >= 0) {
        *ret = (uint64_t)v->u.i;
        return 0;
    }
    return EG_EINVAL;
}

int eg_ps_get_i32(const struct eg_ps_value *v, int32_t *ret)
{
    int64_t x;
    int rc = eg_ps_get_int64(v, &x);
    if (rc)
        return rc;
    if (x < INT32_MIN || x > INT32_MAX)
        return EG_EINVAL;
    *ret = (int32_t)x;
    return 0;
}

int eg_ps_get_double(const struct eg_ps_value *v, double *ret)
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_SG && v->kind != EG_PS_DB)
        return EG_EINVAL;
    *ret = v->u.d;
    return 0;
}

int eg_ps_get_guid(const struct eg_ps_value *v, uint8_t ret[16])
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_G)
        return EG_EINVAL;
    memcpy(ret, v->u.guid, 16);
    return 0;
}

int eg_ps_get_datetime(const struct eg_ps_value *v, int64_t *ret_ms)
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_DT)
        return EG_EINVAL;
    *ret_ms = v->u.dt.ms;
    return 0;
}

int eg_ps_get_timespan(const struct eg_ps_value *v, int64_t *ret_ticks)
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_TS)
        return EG_EINVAL;
    *ret_ticks = v->u.ticks;
    return 0;
}

int eg_ps_get_bytes(const struct eg_ps_value *v, const uint8_t **ret, size_t *ret_len)
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_BA)
        return EG_EINVAL;
    *ret = (const uint8_t *)v->text.s;
    *ret_len = v->text.len;
    return 0;
}

int eg_ps_get_version(const struct eg_ps_value *v, int32_t ret[4])
{
    GETTER_PROLOGUE(v);
    if (v->kind != EG_PS_VERSION)
        return EG_EINVAL;
    memcpy(ret, v->u.version, sizeof v->u.version);
    return 0;
}

size_t eg_ps_list_len(const struct eg_ps_value *v)
{
    const struct eg_ps_obj *o = as_cobj(v);
    return o && is_list_ct(o->container) ? o->n_items : 0;
}

const struct eg_ps_value *eg_ps_list_item(const struct eg_ps_value *v, size_t i)
{
    const struct eg_ps_obj *o = as_cobj(v);
    if (!o || !is_list_ct(o->container) || i >= o->n_items)
        return NULL;
    return o->items[i];
}

void eg_ps_string_array_free(char **a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++)
        eg_free(a[i]);
    eg_free(a);
}

int eg_ps_get_string_array(const struct eg_ps_value *v, char ***ret, size_t *ret_n)
{
    char **a = NULL;
    size_t n = 0;
    int rc = 0;

    if (!ret || !ret_n)
        return EG_EINVAL;
    if (!v || v->kind == EG_PS_NIL)
        return EG_ENOTFOUND;
    const struct eg_ps_obj *o = as_cobj(v);
    if (!o || !is_list_ct(o->container))
        return EG_EINVAL;
    a = eg_calloc(o->n_items + 1, sizeof *a);
    if (!a)
        return EG_ENOMEM;
    for (; n < o->n_items; n++) {
        const char *s;
        size_t len;
        if ((rc = eg_ps_get_string(o->items[n], &s, &len)) != 0) {
            rc = EG_EINVAL;
            goto out;
        }
        a[n] = eg_strndup(s, len);
        if (!a[n]) {
            rc = EG_ENOMEM;
            goto out;
        }
    }
out:
    if (rc) {
        eg_ps_string_array_free(a, n);
        return rc;
    }
    *ret = a;
    *ret_n = n;
    return 0;
}

const struct eg_ps_value *eg_ps_dict_get(const struct eg_ps_value *v, const char *key)
{
    const struct eg_ps_obj *o = as_cobj(v);
    if (!o || o->container != EG_PS_CT_DCT || !key)
        return NULL;
    size_t len = strlen(key);
    for (size_t i = 0; i < o->n_entries; i++) {
        const struct eg_ps_value *k = through(o->entries[i].key);
        if (k && k->kind == EG_PS_S && name_is(&k->text, key, len))
            return o->entries[i].value;
    }
    return NULL;
}

/* ---- equality ---- */

static bool types_eq(const struct eg_ps_types *a, const struct eg_ps_types *b)
{
    size_t na = a ? a->n : 0, nb = b ? b->n : 0;
    if (na != nb)
        return false;
    if (a == b)
        return true;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a->names[i], b->names[i]) != 0)
            return false;
    return true;
}

static bool members_eq(const struct eg_ps_member *a, size_t na, const struct eg_ps_member *b,
                       size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(&a[i].name, &b[i].name) || !eg_ps_value_equal(a[i].value, b[i].value))
            return false;
    return true;
}

static bool obj_eq(const struct eg_ps_obj *a, const struct eg_ps_obj *b)
{
    if (!types_eq(a->types, b->types) || a->has_to_string != b->has_to_string ||
        (a->has_to_string && !str_eq(&a->to_string, &b->to_string)) ||
        !eg_ps_value_equal(a->base, b->base) || a->container != b->container ||
        a->member_set != b->member_set || a->n_items != b->n_items || a->n_entries != b->n_entries)
        return false;
    for (size_t i = 0; i < a->n_items; i++)
        if (!eg_ps_value_equal(a->items[i], b->items[i]))
            return false;
    for (size_t i = 0; i < a->n_entries; i++)
        if (!eg_ps_value_equal(a->entries[i].key, b->entries[i].key) ||
            !eg_ps_value_equal(a->entries[i].value, b->entries[i].value))
            return false;
    return members_eq(a->props, a->n_props, b->props, b->n_props) &&
           members_eq(a->ms, a->n_ms, b->ms, b->n_ms);
}

bool eg_ps_value_equal(const struct eg_ps_value *a, const struct eg_ps_value *b)
{
    if (a == b)
        return true;
    if (!a || !b || a->kind != b->kind || !str_eq(&a->text, &b->text))
        return false;
    switch (a->kind) {
    case EG_PS_B:
        return a->u.b == b->u.b;
    case EG_PS_SB:
    case EG_PS_I16:
    case EG_PS_I32:
    case EG_PS_I64:
        return a->u.i == b->u.i;
    case EG_PS_BY:
    case EG_PS_U16:
    case EG_PS_U32:
    case EG_PS_U64:
    case EG_PS_C:
        return a->u.u == b->u.u;
    case EG_PS_SG:
    case EG_PS_DB:
        return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0 || (isnan(a->u.d) && isnan(b->u.d));
    case EG_PS_G:
        return memcmp(a->u.guid, b->u.guid, 16) == 0;
    case EG_PS_DT:
        return a->u.dt.ms == b->u.dt.ms && a->u.dt.tz == b->u.dt.tz &&
               a->u.dt.offset_min == b->u.dt.offset_min;
    case EG_PS_TS:
        return a->u.ticks == b->u.ticks;
    case EG_PS_VERSION:
        return memcmp(a->u.version, b->u.version, sizeof a->u.version) == 0;
    case EG_PS_PR: {
        const struct eg_ps_progress *x = a->u.pr, *y = b->u.pr;
        return str_eq(&x->activity, &y->activity) && x->activity_id == y->activity_id &&
               eg_ps_value_equal(x->current_operation, y->current_operation) &&
               x->parent_activity_id == y->parent_activity_id &&
               x->percent_complete == y->percent_complete &&
               str_eq(&x->record_type, &y->record_type) &&
               x->seconds_remaining == y->seconds_remaining &&
               str_eq(&x->status_description, &y->status_description);
    }
    case EG_PS_OBJ:
        return obj_eq(a->u.obj, b->u.obj);
    default:
        return true; /* Nil; text kinds compared above */
    }
}
