/* test_clixml.c - the CLIXML codec (exchange/clixml): escaping both ways, every primitive kind,
 * real PSRP and Exchange messages (decoded, checked by property, re-encoded byte for byte), Ref /
 * TNRef, ErrorRecords, the streaming decoder over <Objs> documents and concatenated messages in any
 * chunking, limits, malformed input, allocation failure at every step, and bounded memory over a
 * ~50 MB stream. Fixtures: tests/fixtures/clixml (see gen-fixtures.py there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libxml/xmlerror.h>
#include <libxml/xmlmemory.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/clixml.h"

/* ---- libxml2 memory accounting: every libxml2 allocation goes through these (and on through
 * eg_malloc, so failure injection still reaches libxml2); a header records the size. ---- */

#define HDR 16
static atomic_size_t xml_live_bytes, xml_peak_bytes;

static void xml_account(ptrdiff_t delta)
{
    size_t now = atomic_fetch_add(&xml_live_bytes, (size_t)delta) + (size_t)delta;
    size_t peak = atomic_load(&xml_peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&xml_peak_bytes, &peak, now))
        ;
}

static void *xml_malloc(size_t n)
{
    unsigned char *p = eg_malloc(n + HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    xml_account((ptrdiff_t)n);
    return p + HDR;
}

static void xml_free(void *q)
{
    if (!q)
        return;
    unsigned char *p = (unsigned char *)q - HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    xml_account(-(ptrdiff_t)n);
    eg_free(p);
}

static void *xml_realloc(void *q, size_t n)
{
    if (!q)
        return xml_malloc(n);
    unsigned char *p = (unsigned char *)q - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *np = eg_realloc(p, n + HDR);
    if (!np)
        return NULL;
    memcpy(np, &n, sizeof n);
    xml_account((ptrdiff_t)n - (ptrdiff_t)old);
    return np + HDR;
}

static char *xml_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xml_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- helpers (test scaffolding uses plain malloc/realloc, so that the allocation failure
 * injection never hits it; what the module returns is freed with eg_free) ---- */

static char *fixture(const char *name, size_t *len)
{
    const char *src = getenv("EG_SOURCE_DIR");
    char *path, *data = NULL;
    if (src) {
        path = eg_asprintf("%s/tests/fixtures/clixml/%s", src, name);
    } else {
        const char *f = __FILE__, *slash = strrchr(f, '/');
        path = eg_asprintf("%.*s/../fixtures/clixml/%s", slash ? (int)(slash - f) : 1,
                           slash ? f : ".", name);
    }
    assert_non_null(path);
    size_t n = 0;
    int rc = eg_read_file(path, 64 * 1024 * 1024, &data, &n);
    if (rc)
        fprintf(stderr, "cannot read fixture %s\n", path);
    assert_int_equal(rc, 0);
    eg_free(path);
    *len = n;
    return data;
}

static struct eg_ps_value *decode_ok(const char *xml)
{
    struct eg_ps_value *v = NULL;
    struct eg_clixml_error err;
    int rc = eg_clixml_decode(xml, strlen(xml), &v, &err);
    if (rc)
        fprintf(stderr, "decode failed (%s): %s\n  input: %.200s\n", eg_errname(rc), err.msg, xml);
    assert_int_equal(rc, 0);
    assert_non_null(v);
    assert_string_equal(err.msg, "");
    return v;
}

static void expect_decode_err(const char *xml, size_t len, int code)
{
    struct eg_ps_value *v = (struct eg_ps_value *)(uintptr_t)1;
    struct eg_clixml_error err;
    int rc = eg_clixml_decode(xml, len, &v, &err);
    if (rc != code)
        fprintf(stderr, "expected %s, got %s (%s) for: %.200s\n", eg_errname(code), eg_errname(rc),
                err.msg, xml);
    assert_int_equal(rc, code);
    assert_ptr_equal(v, (struct eg_ps_value *)(uintptr_t)1); /* ret untouched on failure */
    assert_true(err.msg[0] != '\0');
}

#define EXPECT_ERR(xml, code) expect_decode_err((xml), strlen(xml), (code))

static char *encode_ok(const struct eg_ps_value *v, size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    assert_int_equal(eg_clixml_encode(v, &s, &n), 0);
    assert_non_null(s);
    assert_int_equal(strlen(s), n);
    if (len)
        *len = n;
    return s;
}

/* Decode xml, re-encode, expect the same text back (canonical input). */
static void roundtrip_same(const char *xml)
{
    struct eg_ps_value *v = decode_ok(xml);
    char *s = encode_ok(v, NULL);
    assert_string_equal(s, xml);
    struct eg_ps_value *w = decode_ok(s);
    assert_true(eg_ps_value_equal(v, w));
    eg_free(s);
    eg_ps_value_free(w);
    eg_ps_value_free(v);
}

static const char *str_of(const struct eg_ps_value *v)
{
    const char *s = NULL;
    assert_int_equal(eg_ps_get_string(v, &s, NULL), 0);
    return s;
}

static void check_escape(const char *plain, size_t plain_len, const char *escaped)
{
    char *e = NULL, *u = NULL;
    size_t el = 0, ul = 0;
    assert_int_equal(eg_clixml_escape(plain, plain_len, 0, &e, &el), 0);
    assert_string_equal(e, escaped);
    assert_int_equal(el, strlen(escaped));
    assert_int_equal(eg_clixml_unescape(escaped, strlen(escaped), &u, &ul), 0);
    assert_int_equal(ul, plain_len);
    assert_memory_equal(u, plain, plain_len);
    assert_int_equal(u[ul], '\0');
    eg_free(e);
    eg_free(u);
}

static void check_unescape(const char *escaped, const char *plain)
{
    char *u = NULL;
    size_t ul = 0;
    assert_int_equal(eg_clixml_unescape(escaped, strlen(escaped), &u, &ul), 0);
    assert_string_equal(u, plain);
    assert_int_equal(ul, strlen(plain));
    eg_free(u);
}

/* ---- escaping ---- */

static void test_escape_recorded_string(void **state)
{
    /* test_psrp_multiple_commands.yml: what pwsh/pypsrp put on the wire for this string */
    static const char plain[] = "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf"
                                " - actual_x000A_string\nnewline: \xf0\x90\x90\xb7";
    static const char wire[] = "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf"
                               " - actual_x005F_x000A_string_x000A_newline: _xD801__xDC37_";
    check_escape(plain, strlen(plain), wire);

    /* and as a whole message, decoded from the recorded bytes (with BOM) */
    size_t len;
    char *data = fixture("output_unicode_string.clixml", &len);
    struct eg_ps_value *v = NULL;
    assert_int_equal(eg_clixml_decode(data, len, &v, NULL), 0);
    assert_int_equal(v->kind, EG_PS_S);
    assert_string_equal(str_of(v), plain);
    char *enc = encode_ok(v, NULL);
    assert_string_equal(enc, "<S>"
                             "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf"
                             " - actual_x005F_x000A_string_x000A_newline: _xD801__xDC37_</S>");
    eg_free(enc);
    eg_ps_value_free(v);
    eg_free(data);
}

static void test_escape_table(void **state)
{
    check_escape("a\r\nb", 4, "a_x000D__x000A_b");
    check_escape("_x005F_", 7, "_x005F_x005F_");
    check_escape("_X", 2, "_x005F_X");
    check_escape("_Xab_x", 6, "_x005F_Xab_x005F_x");
    check_escape("__x", 3, "__x005F_x");
    check_escape("_", 1, "_");
    check_escape("x_", 2, "x_");
    check_escape("_y_", 3, "_y_");
    check_escape("tab\there", 8, "tab_x0009_here");
    check_escape("a\0b", 3, "a_x0000_b");
    check_escape("\x1f\x20\x7e\x7f", 4, "_x001F_ ~_x007F_");
    check_escape("\xc2\x80\xc2\x9f\xc2\xa0\xc2\xa7", 8, "_x0080__x009F_\xc2\xa0\xc2\xa7");
    check_escape("\xef\xbf\xbe\xef\xbf\xbf\xef\xbf\xbd", 9, "_xFFFE__xFFFF_\xef\xbf\xbd");
    check_escape("\xf0\x9f\x98\x80", 4, "_xD83D__xDE00_");
    check_escape("\xf4\x8f\xbf\xbf", 4, "_xDBFF__xDFFF_");
    check_escape("<&>\"", 4, "<&>\"");
    check_escape("", 0, "");

    /* XML escaping on top, text and attribute flavours */
    char *e = NULL;
    assert_int_equal(eg_clixml_escape("a<b&c>\"_x", 9, EG_CLIXML_ESC_TEXT, &e, NULL), 0);
    assert_string_equal(e, "a&lt;b&amp;c&gt;\"_x005F_x");
    eg_free(e);
    assert_int_equal(eg_clixml_escape("a<b&c>\"\n", 8, EG_CLIXML_ESC_ATTR, &e, NULL), 0);
    assert_string_equal(e, "a&lt;b&amp;c&gt;&quot;_x000A_");
    eg_free(e);
}

static void test_unescape_rules(void **state)
{
    check_unescape("_x0041_", "A");
    check_unescape("_X0041_", "A"); /* .NET DecodeName accepts either case of x */
    check_unescape("_x004a__x004A_", "JJ");
    check_unescape("_x005F_x0041_", "_x0041_");
    check_unescape("_x0001F600_", "\xf0\x9f\x98\x80"); /* 8-digit UCS-4 form */
    check_unescape("_x00000041_", "A");
    check_unescape("_x00110000_", "_x00110000_"); /* above U+10FFFF: left alone */
    check_unescape("_xD83D__xDE00_", "\xf0\x9f\x98\x80");
    check_unescape("_xd83d__xde00_", "\xf0\x9f\x98\x80");
    /* unpaired surrogates become U+FFFD */
    check_unescape("_xD800_", "\xef\xbf\xbd");
    check_unescape("_xDC00_", "\xef\xbf\xbd");
    check_unescape("_xD800__x0041_", "\xef\xbf\xbd"
                                     "A");
    check_unescape("_xD800_z", "\xef\xbf\xbd"
                               "z");
    check_unescape("_xD800__xD801__xDC37_", "\xef\xbf\xbd\xf0\x90\x90\xb7");
    check_unescape("a_xDC37__xD801_", "a\xef\xbf\xbd\xef\xbf\xbd");
    /* not escapes */
    check_unescape("_x12_", "_x12_");
    check_unescape("_x123G_", "_x123G_");
    check_unescape("_x0041", "_x0041");
    check_unescape("_y0041_", "_y0041_");
    check_unescape("__x0041_", "_A");
    check_unescape("_x0041_x0042_", "Ax0042_");
    check_unescape("\xc2\xa7 raw", "\xc2\xa7 raw");

    /* a NUL from _x0000_ is kept, with the length */
    char *u = NULL;
    size_t ul = 0;
    assert_int_equal(eg_clixml_unescape("a_x0000_b", 9, &u, &ul), 0);
    assert_int_equal(ul, 3);
    assert_memory_equal(u, "a\0b", 3);
    eg_free(u);
}

static void test_escape_rejects_bad_utf8(void **state)
{
    static const char *const bad[] = {
        "\xff",     "\xc0\xaf",         "\xe0\x80\xaf", "\xed\xa0\x80",
        "\xe3\x81", "\xf4\x90\x80\x80", "a\x80",        "\xf8\x88\x80\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *e = (char *)1, *u = (char *)1;
        assert_int_equal(eg_clixml_escape(bad[i], strlen(bad[i]), 0, &e, NULL), EG_EINVAL);
        assert_ptr_equal(e, (char *)1);
        assert_int_equal(eg_clixml_unescape(bad[i], strlen(bad[i]), &u, NULL), EG_EINVAL);
        assert_ptr_equal(u, (char *)1);
    }
    /* and the encoder refuses them anywhere */
    struct eg_ps_value *s = eg_ps_new_string("bad \xff");
    char *out = NULL;
    assert_int_equal(eg_clixml_encode(s, &out, NULL), EG_EINVAL);
    assert_null(out);
    eg_ps_value_free(s);
    struct eg_ps_value *o = eg_ps_new_obj();
    assert_int_equal(eg_ps_obj_add_ms(o, "na\xc0me", eg_ps_new_i32(1)), 0);
    assert_int_equal(eg_clixml_encode(o, &out, NULL), EG_EINVAL);
    eg_ps_value_free(o);
    o = eg_ps_new_obj();
    const char *tn[] = {"Bad\xed\xa0\x80Type"};
    assert_int_equal(eg_ps_obj_set_types(o, tn, 1), 0);
    assert_int_equal(eg_clixml_encode(o, &out, NULL), EG_EINVAL);
    eg_ps_value_free(o);
    assert_int_equal(eg_clixml_escape(NULL, 1, 0, &out, NULL), EG_EINVAL);
}

/* ---- primitives ---- */

static void test_primitives_canonical_roundtrip(void **state)
{
    static const char *const xml[] = {
        "<S>hi</S>",
        "<S></S>",
        "<S>a &amp; &lt;b&gt; \"q\" 'a'</S>",
        "<S>a_x0000_b_x000D__x000A__x005F_x</S>",
        "<C>97</C>",
        "<C>65535</C>",
        "<B>true</B>",
        "<B>false</B>",
        "<DT>2022-10-19T20:31:31-07:00</DT>",
        "<DT>2018-06-13T23:45:29.4583203+00:00</DT>",
        "<DT>2022-10-31T01:01:36Z</DT>",
        "<DT>2024-02-29T12:00:00</DT>",
        "<By>0</By>",
        "<By>255</By>",
        "<SB>-128</SB>",
        "<SB>127</SB>",
        "<U16>65535</U16>",
        "<I16>-32768</I16>",
        "<U32>4294967295</U32>",
        "<I32>-2147483648</I32>",
        "<I32>2147483647</I32>",
        "<U64>18446744073709551615</U64>",
        "<I64>-9223372036854775808</I64>",
        "<I64>9223372036854775807</I64>",
        "<Sg>1.5</Sg>",
        "<Sg>0.1</Sg>",
        "<Sg>3.4028235E+38</Sg>",
        "<Db>0.1</Db>",
        "<Db>-2.5</Db>",
        "<Db>1E+20</Db>",
        "<Db>1E-05</Db>",
        "<Db>1.7976931348623157E+308</Db>",
        "<Db>-0</Db>",
        "<Db>INF</Db>",
        "<Db>-INF</Db>",
        "<Db>NaN</Db>",
        "<D>79228162514264337593543950335</D>",
        "<D>-1.50</D>",
        "<D>0.0000000000000000000000000001</D>",
        "<G>9b9387fe-e1b1-4695-97bd-b0a0bebe7ce2</G>",
        "<G>00000000-0000-0000-0000-000000000000</G>",
        "<URI>http://a.example/b?c=d&amp;e=f</URI>",
        "<Version>2.3</Version>",
        "<Version>5.1.14393.2248</Version>",
        "<XD>&lt;a x=\"1\"&gt;b&lt;/a&gt;</XD>",
        "<SBK>Get-Date | Out-String</SBK>",
        "<BA>AQID</BA>",
        "<BA></BA>",
        "<SS>rTm4n3bxaFOIgdjhDDV5OA==</SS>",
        "<TS>PT9.0269026S</TS>",
        "<TS>P1DT2H</TS>",
        "<TS>PT0S</TS>",
        "<TS>-PT1M30.5S</TS>",
        "<Nil />",
        "<PR><AV>Preparing</AV><AI>0</AI><Nil /><PI>-1</PI><PC>50</PC><T>Processing</T>"
        "<SR>-1</SR><SD>half _x000A_ done</SD></PR>",
        "<PR><AV>a</AV><AI>7</AI><S>copying</S><PI>3</PI><PC>-1</PC><T>Completed</T><SR>12</SR>"
        "<SD></SD></PR>",
        "<Obj RefId=\"0\" />",
        "<Obj RefId=\"0\"><ToString></ToString></Obj>",
    };
    for (size_t i = 0; i < sizeof xml / sizeof xml[0]; i++)
        roundtrip_same(xml[i]);
}

static void test_primitive_values(void **state)
{
    struct eg_ps_value *v;
    int64_t i64;
    uint64_t u64;
    int32_t i32, ver[4];
    double d;
    bool b;
    uint8_t g[16];

    v = decode_ok("<I32> 42\n</I32>"); /* XML white space around numbers is allowed */
    assert_int_equal(v->kind, EG_PS_I32);
    assert_int_equal(eg_ps_get_i32(v, &i32), 0);
    assert_int_equal(i32, 42);
    char *s = encode_ok(v, NULL);
    assert_string_equal(s, "<I32>42</I32>");
    eg_free(s);
    eg_ps_value_free(v);

    v = decode_ok("<I64>+17</I64>");
    assert_int_equal(eg_ps_get_int64(v, &i64), 0);
    assert_int_equal(i64, 17);
    eg_ps_value_free(v);

    v = decode_ok("<U64>18446744073709551615</U64>");
    assert_int_equal(eg_ps_get_uint64(v, &u64), 0);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(eg_ps_get_int64(v, &i64), EG_EINVAL); /* does not fit */
    eg_ps_value_free(v);

    v = decode_ok("<B>1</B>");
    assert_int_equal(eg_ps_get_bool(v, &b), 0);
    assert_true(b);
    eg_ps_value_free(v);

    v = decode_ok("<C>8364</C>");
    assert_int_equal(v->kind, EG_PS_C);
    assert_int_equal(eg_ps_get_uint64(v, &u64), 0);
    assert_int_equal(u64, 8364);
    eg_ps_value_free(v);

    v = decode_ok("<Db>1.5e3</Db>");
    assert_int_equal(eg_ps_get_double(v, &d), 0);
    assert_true(d == 1500.0);
    s = encode_ok(v, NULL);
    assert_string_equal(s, "<Db>1500</Db>");
    eg_free(s);
    eg_ps_value_free(v);

    v = decode_ok("<Sg>0.1</Sg>");
    assert_int_equal(eg_ps_get_double(v, &d), 0);
    assert_true(d == (double)0.1f);
    eg_ps_value_free(v);

    v = decode_ok("<G>{9B9387FE-E1B1-4695-97BD-B0A0BEBE7CE2}</G>");
    assert_int_equal(eg_ps_get_guid(v, g), 0);
    static const uint8_t want_g[16] = {0x9b, 0x93, 0x87, 0xfe, 0xe1, 0xb1, 0x46, 0x95,
                                       0x97, 0xbd, 0xb0, 0xa0, 0xbe, 0xbe, 0x7c, 0xe2};
    assert_memory_equal(g, want_g, 16);
    s = encode_ok(v, NULL);
    assert_string_equal(s, "<G>9b9387fe-e1b1-4695-97bd-b0a0bebe7ce2</G>");
    eg_free(s);
    eg_ps_value_free(v);
    v = decode_ok("<G>9b9387fee1b1469597bdb0a0bebe7ce2</G>");
    assert_int_equal(eg_ps_get_guid(v, g), 0);
    assert_memory_equal(g, want_g, 16);
    eg_ps_value_free(v);

    /* DateTime: offsets applied, fraction kept in the text */
    v = decode_ok("<DT>2022-10-30T18:01:36-07:00</DT>");
    assert_int_equal(eg_ps_get_datetime(v, &i64), 0);
    assert_int_equal(i64, INT64_C(1667178096000)); /* 2022-10-31T01:01:36Z */
    assert_int_equal(v->u.dt.tz, EG_PS_TZ_OFFSET);
    assert_int_equal(v->u.dt.offset_min, -420);
    eg_ps_value_free(v);
    v = decode_ok("<DT>2018-06-13T23:45:29.4583203+00:00</DT>");
    assert_int_equal(eg_ps_get_datetime(v, &i64), 0);
    assert_int_equal(i64, INT64_C(1528933529458));
    assert_string_equal(v->text.s, "2018-06-13T23:45:29.4583203+00:00");
    eg_ps_value_free(v);
    v = decode_ok("<DT>0001-01-01T00:00:00</DT>");
    assert_int_equal(eg_ps_get_datetime(v, &i64), 0);
    assert_int_equal(i64, INT64_C(-62135596800000));
    assert_int_equal(v->u.dt.tz, EG_PS_TZ_UNSPECIFIED);
    eg_ps_value_free(v);

    /* TimeSpan in ticks */
    v = decode_ok("<TS>PT9.0269026S</TS>");
    assert_int_equal(eg_ps_get_timespan(v, &i64), 0);
    assert_int_equal(i64, INT64_C(90269026));
    eg_ps_value_free(v);
    v = decode_ok("<TS>P1DT2H3M4S</TS>");
    assert_int_equal(eg_ps_get_timespan(v, &i64), 0);
    assert_int_equal(i64, INT64_C(937840000000));
    eg_ps_value_free(v);
    v = decode_ok("<TS>-PT0.000000123S</TS>"); /* past 7 digits: dropped */
    assert_int_equal(eg_ps_get_timespan(v, &i64), 0);
    assert_int_equal(i64, -1);
    eg_ps_value_free(v);

    v = decode_ok("<Version>5.1.14393.2248</Version>");
    assert_int_equal(eg_ps_get_version(v, ver), 0);
    assert_int_equal(ver[0], 5);
    assert_int_equal(ver[1], 1);
    assert_int_equal(ver[2], 14393);
    assert_int_equal(ver[3], 2248);
    eg_ps_value_free(v);
    v = decode_ok("<Version>2.3</Version>");
    assert_int_equal(eg_ps_get_version(v, ver), 0);
    assert_int_equal(ver[2], -1);
    eg_ps_value_free(v);

    v = decode_ok("<BA>AQID\n/w==</BA>");
    const uint8_t *bytes;
    size_t n;
    assert_int_equal(eg_ps_get_bytes(v, &bytes, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(bytes, "\x01\x02\x03\xff", 4);
    s = encode_ok(v, NULL);
    assert_string_equal(s, "<BA>AQID/w==</BA>");
    eg_free(s);
    eg_ps_value_free(v);

    v = decode_ok("<S>_xD800_ lone</S>");
    assert_string_equal(str_of(v), "\xef\xbf\xbd lone");
    eg_ps_value_free(v);

    v = decode_ok("<S><![CDATA[<raw> & _x0041_]]><!-- a comment -->&#65;&amp;</S>");
    assert_string_equal(str_of(v), "<raw> & AA&");
    eg_ps_value_free(v);

    /* an empty element of a string kind is the empty string */
    v = decode_ok("<S />");
    assert_string_equal(str_of(v), "");
    eg_ps_value_free(v);
}

static void test_constructors_roundtrip_every_kind(void **state)
{
    static const uint8_t guid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct eg_ps_value *o = eg_ps_new_obj(), *v = NULL;
    assert_non_null(o);
    assert_int_equal(eg_ps_obj_add_ms(o, "nil", eg_ps_new_nil()), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "s", eg_ps_new_string("x_xy\t\xc2\xa7")), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "sn", eg_ps_new_stringn("a\0b", 3)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "c", eg_ps_new_char(0x263A)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "b", eg_ps_new_bool(true)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "dt", eg_ps_new_datetime(INT64_C(1667178096123))), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "by", eg_ps_new_u8(200)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "sb", eg_ps_new_i8(-5)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "u16", eg_ps_new_u16(65000)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "i16", eg_ps_new_i16(-300)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "u32", eg_ps_new_u32(4000000000u)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "i32", eg_ps_new_i32(-7)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "u64", eg_ps_new_u64(UINT64_MAX)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "i64", eg_ps_new_i64(INT64_MIN)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "sg", eg_ps_new_float(3.14159f)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "db", eg_ps_new_double(2.718281828459045)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "db2", eg_ps_new_double(1e-300)), 0);
    assert_int_equal(eg_ps_new_text(EG_PS_D, "123.4500", 8, &v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "d", v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "g", eg_ps_new_guid(guid)), 0);
    assert_int_equal(eg_ps_new_text(EG_PS_URI, "https://x/?a=1&b=_x", 19, &v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "uri", v), 0);
    assert_int_equal(eg_ps_new_text(EG_PS_VERSION, "10.0.14393", 10, &v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "ver", v), 0);
    assert_int_equal(eg_ps_new_text(EG_PS_XD, "<doc>\n</doc>", 12, &v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "xd", v), 0);
    assert_int_equal(eg_ps_new_text(EG_PS_SBK, "{ $_ }", 6, &v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "sbk", v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "ba", eg_ps_new_bytes("\0\1\2\377", 4)), 0);
    assert_int_equal(eg_ps_new_text(EG_PS_SS, "AAEC", 4, &v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "ss", v), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "ts", eg_ps_new_timespan(INT64_C(-937840000123))), 0);
    struct eg_ps_value *pr = eg_ps_new_progress();
    assert_non_null(pr);
    assert_int_equal(eg_ps_str_set(&pr->u.pr->activity, "Act", 3), 0);
    pr->u.pr->percent_complete = 42;
    assert_int_equal(eg_ps_obj_add_ms(o, "pr", pr), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "enum", eg_ps_new_enum("My.Enum", "Two", 2)), 0);
    const char *items[] = {"a", "b"};
    assert_int_equal(eg_ps_obj_add_prop(o, "arr", eg_ps_new_string_array(items, 2)), 0);
    struct eg_ps_value *ht = eg_ps_new_hashtable();
    assert_int_equal(eg_ps_obj_add_entry(ht, eg_ps_new_string("Add"), eg_ps_new_i32(1)), 0);
    assert_int_equal(eg_ps_obj_add_entry(ht, eg_ps_new_i32(5), eg_ps_new_nil()), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "ht", ht), 0);
    struct eg_ps_value *stk = eg_ps_new_obj();
    assert_int_equal(eg_ps_obj_set_container(stk, EG_PS_CT_STK), 0);
    assert_int_equal(eg_ps_obj_add_item(stk, eg_ps_new_i32(1)), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "stk", stk), 0);
    struct eg_ps_value *que = eg_ps_new_obj();
    assert_int_equal(eg_ps_obj_set_container(que, EG_PS_CT_QUE), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "que", que), 0);
    struct eg_ps_value *ie = eg_ps_new_obj();
    assert_int_equal(eg_ps_obj_set_container(ie, EG_PS_CT_IE), 0);
    assert_int_equal(eg_ps_obj_add_item(ie, eg_ps_new_string("")), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "ie", ie), 0);
    assert_int_equal(eg_ps_obj_set_to_string(o, "all kinds", 9), 0);

    char *s1 = encode_ok(o, NULL);
    struct eg_ps_value *back = decode_ok(s1);
    assert_true(eg_ps_value_equal(o, back));
    char *s2 = encode_ok(back, NULL);
    assert_string_equal(s1, s2); /* deterministic and stable */
    char *s3 = encode_ok(o, NULL);
    assert_string_equal(s1, s3);

    /* spot checks of the text the constructors produce */
    assert_non_null(strstr(s1, "<DT N=\"dt\">2022-10-31T01:01:36.123Z</DT>"));
    assert_non_null(strstr(s1, "<TS N=\"ts\">-P1DT2H3M4.0000123S</TS>"));
    assert_non_null(strstr(s1, "<S N=\"s\">x_x005F_xy_x0009_\xc2\xa7</S>"));
    assert_non_null(strstr(s1, "<S N=\"sn\">a_x0000_b</S>"));
    assert_non_null(strstr(s1, "<Sg N=\"sg\">3.14159</Sg>"));
    assert_non_null(strstr(s1, "<Db N=\"db2\">1E-300</Db>"));
    assert_non_null(strstr(s1, "<G N=\"g\">01020304-0506-0708-090a-0b0c0d0e0f10</G>"));
    assert_non_null(strstr(s1, "<BA N=\"ba\">AAEC/w==</BA>"));
    assert_non_null(
        strstr(s1, "<T>My.Enum</T><T>System.Enum</T><T>System.ValueType</T><T>System.Object</T>"
                   "</TN><ToString>Two</ToString><I32>2</I32></Obj>"));
    assert_non_null(strstr(s1, "<En><I32 N=\"Key\">5</I32><Nil N=\"Value\" /></En>"));
    assert_non_null(strstr(s1, "<QUE />"));
    eg_free(s1);
    eg_free(s2);
    eg_free(s3);
    eg_ps_value_free(back);
    eg_ps_value_free(o);

    /* timespan / datetime text forms */
    struct {
        int64_t ticks;
        const char *text;
    } ts[] = {{0, "PT0S"},
              {INT64_C(864000000000), "P1D"},
              {INT64_C(36000000000), "PT1H"},
              {INT64_C(90269026), "PT9.0269026S"},
              {1, "PT0.0000001S"},
              {INT64_MIN, "-P10675199DT2H48M5.4775808S"}};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        v = eg_ps_new_timespan(ts[i].ticks);
        assert_string_equal(v->text.s, ts[i].text);
        struct eg_ps_value *w = NULL;
        assert_int_equal(eg_ps_new_text(EG_PS_TS, ts[i].text, strlen(ts[i].text), &w), 0);
        assert_true(w->u.ticks == ts[i].ticks);
        assert_true(eg_ps_value_equal(v, w));
        eg_ps_value_free(v);
        eg_ps_value_free(w);
    }
    v = eg_ps_new_datetime(0);
    assert_string_equal(v->text.s, "1970-01-01T00:00:00Z");
    eg_ps_value_free(v);
    v = eg_ps_new_datetime(-1);
    assert_string_equal(v->text.s, "1969-12-31T23:59:59.999Z");
    eg_ps_value_free(v);
    v = eg_ps_new_datetime(INT64_MAX); /* clamped */
    assert_string_equal(v->text.s, "9999-12-31T23:59:59.999Z");
    eg_ps_value_free(v);

    /* eg_ps_new_text is the decoder's parser */
    assert_int_equal(eg_ps_new_text(EG_PS_OBJ, "x", 1, &v), EG_EINVAL);
    assert_int_equal(eg_ps_new_text(EG_PS_NIL, "", 0, &v), EG_EINVAL);
    assert_int_equal(eg_ps_new_text(EG_PS_PR, "", 0, &v), EG_EINVAL);
    assert_int_equal(eg_ps_new_text((enum eg_ps_kind)99, "1", 1, &v), EG_EINVAL);
    assert_int_equal(eg_ps_new_text(EG_PS_I16, "40000", 5, &v), EG_EPARSE);
}

static void test_bad_primitives(void **state)
{
    static const char *const bad[] = {
        "<I32>12x</I32>",
        "<I32>2147483648</I32>",
        "<I32>-2147483649</I32>",
        "<I32></I32>",
        "<I32>1 2</I32>",
        "<I32>0x10</I32>",
        "<I32>--1</I32>",
        "<I32>+</I32>",
        "<I32>1.0</I32>",
        "<By>256</By>",
        "<By>-1</By>",
        "<SB>128</SB>",
        "<U16>65536</U16>",
        "<I16>32768</I16>",
        "<U32>4294967296</U32>",
        "<U64>18446744073709551616</U64>",
        "<I64>9223372036854775808</I64>",
        "<I64>99999999999999999999999</I64>",
        "<C>65536</C>",
        "<C>a</C>",
        "<B>yes</B>",
        "<B>True</B>",
        "<B></B>",
        "<Db>1.5.2</Db>",
        "<Db>1e999</Db>",
        "<Db>1e</Db>",
        "<Db>.</Db>",
        "<Db>0x1p3</Db>",
        "<Db>inf</Db>",
        "<Sg>1e39</Sg>",
        "<D>1e5</D>",
        "<D>79228162514264337593543950336</D>",
        "<D>1.2.3</D>",
        "<D></D>",
        "<G>9b9387fe-e1b1-4695-97bd-b0a0bebe7ce</G>",
        "<G>9b9387fe-e1b1-4695-97bd-b0a0bebe7cez</G>",
        "<G>9b9387fe+e1b1-4695-97bd-b0a0bebe7ce2</G>",
        "<G>{9b9387fe-e1b1-4695-97bd-b0a0bebe7ce2)</G>",
        "<G></G>",
        "<BA>AQI</BA>",
        "<BA>A===</BA>",
        "<BA>*AAA</BA>",
        "<BA>AQ==AQ==</BA>",
        "<SS>not base64!</SS>",
        "<DT>2022-02-30T00:00:00Z</DT>",
        "<DT>2022-10-19 20:31:31</DT>",
        "<DT>2022-10-19T24:00:00Z</DT>",
        "<DT>2022-13-01T00:00:00Z</DT>",
        "<DT>2022-10-19T20:31:31+15:00</DT>",
        "<DT>2022-10-19T20:31:31.Z</DT>",
        "<DT>22-10-19T20:31:31Z</DT>",
        "<DT>0000-01-01T00:00:00Z</DT>",
        "<DT>2022-10-19T20:31:31Zjunk</DT>",
        "<DT>2022-10-19</DT>",
        "<TS>P</TS>",
        "<TS>PT</TS>",
        "<TS>1D</TS>",
        "<TS>PT1H2H</TS>",
        "<TS>PT1S2M</TS>",
        "<TS>P1H</TS>",
        "<TS>PT1.S</TS>",
        "<TS>P99999999999999999999D</TS>",
        "<TS>P106751992D</TS>",
        "<Version>1</Version>",
        "<Version>1.2.3.4.5</Version>",
        "<Version>1.-2</Version>",
        "<Version>1..2</Version>",
        "<Version>1.2147483648</Version>",
        "<Version></Version>",
        "<PR><AV>a</AV><AI>x</AI></PR>",
        "<PR><PC>99999999999</PC></PR>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_ERR(bad[i], EG_EPARSE);
}

/* ---- real messages ---- */

static void test_recorded_messages_reencode_byte_for_byte(void **state)
{
    /* pwsh (server side, with BOM), pypsrp (client side) and Exchange 2016 messages: decoding and
     * encoding again gives the recorded bytes exactly (minus the BOM) */
    static const char *const files[] = {
        "session_capability_client.clixml",
        "session_capability_server.clixml",
        "init_runspacepool.clixml",
        "application_private_data.clixml",
        "runspacepool_state_opened.clixml",
        "create_pipeline_extracmds.clixml",
        "create_pipeline_multiple.clixml",
        "output_secure_string.clixml",
        "output_unicode_string.clixml",
        "output_service_controller.clixml",
        "pipeline_state_completed.clixml",
        "output_psvariable.clixml",
        "output_long_string.clixml",
        "output_wsman_leaf.clixml",
        "error_record_provider_not_found.clixml",
        "pipeline_state_failed.clixml",
        "exchange2016_get-mailbox_pipeline_output.clixml",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len, elen;
        char *data = fixture(files[i], &len);
        const char *body = data;
        size_t blen = len;
        if (blen >= 3 && memcmp(body, "\xef\xbb\xbf", 3) == 0) {
            body += 3;
            blen -= 3;
        }
        struct eg_ps_value *v = NULL;
        struct eg_clixml_error err;
        int rc = eg_clixml_decode(data, len, &v, &err);
        if (rc)
            fprintf(stderr, "%s: %s\n", files[i], err.msg);
        assert_int_equal(rc, 0);
        char *enc = encode_ok(v, &elen);
        if (elen != blen || memcmp(enc, body, blen) != 0)
            fprintf(stderr, "%s re-encodes differently\n", files[i]);
        assert_int_equal(elen, blen);
        assert_memory_equal(enc, body, blen);
        eg_free(enc);
        eg_ps_value_free(v);
        eg_free(data);
    }
}

static void test_exchange_get_mailbox(void **state)
{
    size_t len;
    char *data = fixture("exchange2016_get-mailbox_pipeline_output.clixml", &len);
    struct eg_ps_value *m = NULL;
    const char *s;
    bool b;
    int64_t ms;
    int32_t i32;
    uint8_t g[16];
    char **arr = NULL;
    size_t n = 0;

    assert_int_equal(eg_clixml_decode(data, len, &m, NULL), 0);
    assert_int_equal(m->kind, EG_PS_OBJ);
    assert_true(eg_ps_has_type(m, "Microsoft.Exchange.Data.Directory.Management.Mailbox"));
    assert_true(eg_ps_has_type(m, "Deserialized.Microsoft.Exchange.Data.Directory.ADObject"));
    assert_false(eg_ps_has_type(m, "Microsoft.Exchange.Data.Directory.Management.CASMailbox"));
    assert_string_equal(eg_ps_type_name(m, 0),
                        "Microsoft.Exchange.Data.Directory.Management.Mailbox");
    assert_string_equal(eg_ps_type_name(m, 7), "System.Object");
    assert_null(eg_ps_type_name(m, 8));
    assert_string_equal(eg_ps_to_string(m), "Administrator");
    assert_int_equal(m->u.obj->n_props, 228);
    assert_int_equal(m->u.obj->n_ms, 0);

    assert_string_equal(str_of(eg_ps_obj_prop(m, "Identity")), "test.com/Users/Administrator");
    assert_string_equal(str_of(eg_ps_obj_prop(m, "identity")), "test.com/Users/Administrator");
    assert_string_equal(str_of(eg_ps_obj_prop(m, "RecipientTypeDetails")), "UserMailbox");
    assert_string_equal(str_of(eg_ps_obj_prop(m, "PrimarySmtpAddress")), "Administrator@test.com");
    assert_string_equal(str_of(eg_ps_obj_prop(m, "ProhibitSendQuota")), "Unlimited");
    assert_string_equal(str_of(eg_ps_obj_prop(m, "RetentionComment")), "");

    assert_int_equal(eg_ps_get_bool(eg_ps_obj_prop(m, "IsMailboxEnabled"), &b), 0);
    assert_true(b);
    assert_int_equal(eg_ps_get_bool(eg_ps_obj_prop(m, "LitigationHoldEnabled"), &b), 0);
    assert_false(b);

    assert_int_equal(eg_ps_get_datetime(eg_ps_obj_prop(m, "WhenChangedUTC"), &ms), 0);
    assert_int_equal(ms, INT64_C(1667178096000));
    int64_t ms2;
    assert_int_equal(eg_ps_get_datetime(eg_ps_obj_prop(m, "WhenChanged"), &ms2), 0);
    assert_int_equal(ms2, ms); /* 2022-10-30T18:01:36-07:00 is the same instant */
    assert_int_equal(eg_ps_get_datetime(eg_ps_obj_prop(m, "WhenMailboxCreated"), &ms), 0);
    assert_int_equal(ms, INT64_C(1666236691000));

    assert_int_equal(eg_ps_get_guid(eg_ps_obj_prop(m, "ExchangeGuid"), g), 0);
    assert_int_equal(g[0], 0x9b);
    assert_int_equal(g[15], 0xe2);

    /* MultiValuedProperty / ProxyAddressCollection as string arrays */
    const struct eg_ps_value *ea = eg_ps_obj_prop(m, "EmailAddresses");
    assert_true(eg_ps_has_type(ea, "Microsoft.Exchange.Data.ProxyAddressCollection"));
    assert_int_equal(eg_ps_get_string_array(ea, &arr, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(arr[0], "SMTP:Administrator@test.com");
    assert_null(arr[1]);
    eg_ps_string_array_free(arr, n);
    assert_int_equal(eg_ps_get_string_array(eg_ps_obj_prop(m, "ProtocolSettings"), &arr, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(arr[0], "RemotePowerShell\xc2\xa7"
                                "1"); /* U+00A7 sent raw */
    eg_ps_string_array_free(arr, n);
    assert_int_equal(
        eg_ps_get_string_array(eg_ps_obj_prop(m, "MailboxProvisioningPreferences"), &arr, &n), 0);
    assert_int_equal(n, 0);
    assert_null(arr[0]);
    eg_ps_string_array_free(arr, n);
    assert_true(eg_ps_has_type(eg_ps_obj_prop(m, "MailboxProvisioningPreferences"),
                               "Microsoft.Exchange.Data.MultiValuedPropertyBase"));

    /* a list of objects: not a string array, but readable item by item */
    const struct eg_ps_value *langs = eg_ps_obj_prop(m, "Languages");
    assert_int_equal(eg_ps_get_string_array(langs, &arr, &n), EG_EINVAL);
    assert_int_equal(eg_ps_list_len(langs), 1);
    const struct eg_ps_value *ci = eg_ps_list_item(langs, 0);
    assert_null(eg_ps_list_item(langs, 1));
    assert_true(eg_ps_has_type(ci, "System.Globalization.CultureInfo"));
    assert_string_equal(eg_ps_to_string(ci), "en-US");
    assert_int_equal(eg_ps_get_i32(eg_ps_obj_prop(ci, "LCID"), &i32), 0);
    assert_int_equal(i32, 1033);

    /* missing / null / wrong type */
    assert_null(eg_ps_obj_prop(m, "NoSuchProperty"));
    assert_int_equal(eg_ps_get_string(eg_ps_obj_prop(m, "NoSuchProperty"), &s, NULL), EG_ENOTFOUND);
    assert_int_equal(eg_ps_get_string(eg_ps_obj_prop(m, "RetentionPolicy"), &s, NULL),
                     EG_ENOTFOUND); /* <Nil N="RetentionPolicy" /> */
    assert_non_null(eg_ps_obj_prop(m, "RetentionPolicy"));
    assert_int_equal(eg_ps_get_bool(eg_ps_obj_prop(m, "Identity"), &b), EG_EINVAL);
    assert_int_equal(eg_ps_get_string(eg_ps_obj_prop(m, "IsMailboxEnabled"), &s, NULL), EG_EINVAL);
    assert_int_equal(eg_ps_get_string_array(eg_ps_obj_prop(m, "Identity"), &arr, &n), EG_EINVAL);
    assert_int_equal(eg_ps_get_string_array(eg_ps_obj_prop(m, "RetentionPolicy"), &arr, &n),
                     EG_ENOTFOUND);

    eg_ps_value_free(m);
    eg_free(data);
}

static void test_error_records(void **state)
{
    size_t len;
    char *data = fixture("error_record_provider_not_found.clixml", &len);
    struct eg_ps_value *er = NULL;
    int32_t cat;
    bool b;

    assert_int_equal(eg_clixml_decode(data, len, &er, NULL), 0);
    assert_true(eg_ps_has_type(er, "System.Management.Automation.ErrorRecord"));
    assert_string_equal(eg_ps_to_string(er), "Cannot find a provider with the name 'FileSystem'.");
    assert_string_equal(str_of(eg_ps_obj_prop(er, "FullyQualifiedErrorId")),
                        "ProviderNotFound,Microsoft.PowerShell.Commands.GetItemCommand");
    assert_int_equal(eg_ps_get_i32(eg_ps_obj_prop(er, "ErrorCategory_Category"), &cat), 0);
    assert_int_equal(cat, 13);
    assert_string_equal(str_of(eg_ps_obj_prop(er, "ErrorCategory_Reason")),
                        "ProviderNotFoundException");
    assert_string_equal(
        str_of(eg_ps_obj_prop(er, "ErrorCategory_Message")),
        "ObjectNotFound: (FileSystem:String) [Get-Item], ProviderNotFoundException");
    assert_int_equal(eg_ps_get_bool(eg_ps_obj_prop(er, "writeErrorStream"), &b), 0);
    assert_true(b);
    const struct eg_ps_value *ex = eg_ps_obj_prop(er, "Exception");
    assert_true(eg_ps_has_type(ex, "System.Management.Automation.ProviderNotFoundException"));
    assert_true(eg_ps_has_type(ex, "System.Exception"));
    assert_string_equal(eg_ps_type_name(ex, 0),
                        "System.Management.Automation.ProviderNotFoundException");
    assert_string_equal(str_of(eg_ps_obj_prop(ex, "Message")),
                        "Cannot find a provider with the name 'FileSystem'.");
    int32_t hr;
    assert_int_equal(eg_ps_get_i32(eg_ps_obj_prop(ex, "HResult"), &hr), 0);
    assert_int_equal(hr, -2146233087);
    /* ToString carries CRLF as _x000D__x000A_ */
    assert_non_null(strstr(eg_ps_to_string(ex), "'FileSystem'.\r\n   at System.Management"));
    /* an enum object: its I32 is read through */
    const struct eg_ps_value *ct = eg_ps_obj_prop(er, "CommandInfo_CommandType");
    assert_int_equal(eg_ps_get_i32(ct, &cat), 0);
    assert_int_equal(cat, 8);
    assert_string_equal(eg_ps_to_string(ct), "Cmdlet");
    assert_true(eg_ps_has_type(ct, "System.Enum"));
    /* <Ref N="InvocationInfo_BoundParameters" RefId="4" /> is the very node defined earlier */
    const struct eg_ps_value *bp =
        eg_ps_obj_prop(eg_ps_obj_prop(er, "InvocationInfo"), "BoundParameters");
    assert_non_null(bp);
    assert_ptr_equal(eg_ps_obj_prop(er, "InvocationInfo_BoundParameters"), bp);
    assert_int_equal(bp->refs, 2); /* its place in InvocationInfo and the <Ref> */
    eg_ps_value_free(er);
    eg_free(data);

    data = fixture("pipeline_state_failed.clixml", &len);
    struct eg_ps_value *ps = NULL;
    assert_int_equal(eg_clixml_decode(data, len, &ps, NULL), 0);
    assert_int_equal(eg_ps_get_i32(eg_ps_obj_prop(ps, "PipelineState"), &cat), 0);
    assert_int_equal(cat, 5);
    er = (struct eg_ps_value *)eg_ps_obj_prop(ps, "ExceptionAsErrorRecord");
    assert_true(eg_ps_has_type(er, "System.Management.Automation.ErrorRecord"));
    assert_string_equal(str_of(eg_ps_obj_prop(er, "FullyQualifiedErrorId")), "ScriptsNotAllowed");
    assert_int_equal(eg_ps_get_i32(eg_ps_obj_prop(er, "ErrorCategory_Category"), &cat), 0);
    assert_int_equal(cat, 17);
    assert_string_equal(str_of(eg_ps_obj_prop(er, "ErrorCategory_Reason")), "ParseException");
    assert_true(eg_ps_has_type(eg_ps_obj_prop(er, "Exception"),
                               "System.Management.Automation.ParseException"));
    assert_string_equal(eg_ps_to_string(er), "The syntax is not supported by this runspace. This "
                                             "can occur if the runspace is in no-language mode.");
    eg_ps_value_free(ps);
    eg_free(data);
}

static void test_ref_and_tnref(void **state)
{
    size_t len;
    char *data = fixture("output_service_controller.clixml", &len);
    struct eg_ps_value *v = NULL;
    char **arr;
    size_t n;
    assert_int_equal(eg_clixml_decode(data, len, &v, NULL), 0);
    eg_free(data);
    const struct eg_ps_value *dep = eg_ps_obj_prop(v, "ServicesDependedOn");
    const struct eg_ps_value *req = eg_ps_obj_prop(v, "RequiredServices"); /* <Ref> in MS */
    assert_ptr_equal(dep, req);
    assert_int_equal(eg_ps_get_string_array(req, &arr, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(arr[0], "RPCSS");
    assert_string_equal(arr[1], "HTTP");
    eg_ps_string_array_free(arr, n);
    /* <TNRef RefId="1" /> shares the list of DependentServices */
    const struct eg_ps_value *ds = eg_ps_obj_prop(v, "DependentServices");
    assert_ptr_equal(ds->u.obj->types, dep->u.obj->types);
    assert_string_equal(eg_ps_type_name(dep, 0), "System.ServiceProcess.ServiceController[]");
    /* Props come before MS: "Name" exists only in MS here */
    assert_string_equal(str_of(eg_ps_obj_prop(v, "Name")), "winrm");
    eg_ps_value_free(v);

    /* an Obj whose base is another Obj (PSObject around PSObject), and Refs to it */
    data = fixture("output_wsman_leaf.clixml", &len);
    assert_int_equal(eg_clixml_decode(data, len, &v, NULL), 0);
    eg_free(data);
    assert_non_null(v->u.obj->base);
    assert_string_equal(str_of(eg_ps_obj_prop(v, "Value")), "true"); /* from the base's Props */
    assert_string_equal(str_of(eg_ps_obj_prop(v, "PSChildName")), "AllowUnencrypted");
    const struct eg_ps_value *drive = eg_ps_obj_prop(v, "PSDrive");
    assert_ptr_equal(drive, eg_ps_obj_prop(v->u.obj->base, "PSDrive"));
    assert_string_equal(eg_ps_to_string(drive), "WSMan");
    /* <Obj N="Used"><S></S></Obj>, and <Ref N="Free"> to it */
    assert_string_equal(str_of(eg_ps_obj_prop(drive, "Used")), "");
    assert_ptr_equal(eg_ps_obj_prop(drive, "Used"), eg_ps_obj_prop(drive, "Free"));
    /* Drives list holds a Ref to the drive object */
    const struct eg_ps_value *drives = eg_ps_obj_prop(eg_ps_obj_prop(v, "PSProvider"), "Drives");
    assert_ptr_equal(eg_ps_list_item(drives, 0), drive);
    eg_ps_value_free(v);

    /* errors */
    EXPECT_ERR("<Obj RefId=\"0\"><MS><Ref N=\"a\" RefId=\"7\" /></MS></Obj>", EG_EPARSE);
    EXPECT_ERR("<Obj RefId=\"0\"><MS><Ref N=\"a\" /></MS></Obj>", EG_EPARSE);
    EXPECT_ERR("<Obj RefId=\"0\"><TNRef RefId=\"0\" /></Obj>", EG_EPARSE);
    EXPECT_ERR("<Obj RefId=\"0\"><TNRef /></Obj>", EG_EPARSE);
    EXPECT_ERR("<Ref RefId=\"0\" />", EG_EPARSE);

    /* a Ref to an enclosing object (a cycle) is broken with $null */
    v = decode_ok("<Obj RefId=\"0\"><MS><Ref N=\"self\" RefId=\"0\" /><I32 N=\"x\">1</I32></MS>"
                  "</Obj>");
    assert_int_equal(eg_ps_obj_prop(v, "self")->kind, EG_PS_NIL);
    eg_ps_value_free(v);

    /* a later duplicate RefId wins (as in pwsh); TN RefIds are a separate counter */
    v = decode_ok("<Obj RefId=\"0\"><MS><Obj N=\"a\" RefId=\"1\"><TN RefId=\"1\"><T>A</T></TN>"
                  "</Obj><Obj N=\"b\" RefId=\"1\"><TN RefId=\"0\"><T>B</T></TN></Obj>"
                  "<Ref N=\"c\" RefId=\"1\" /><Obj N=\"d\" RefId=\"2\"><TNRef RefId=\"1\" />"
                  "</Obj></MS></Obj>");
    assert_ptr_equal(eg_ps_obj_prop(v, "c"), eg_ps_obj_prop(v, "b"));
    assert_string_equal(eg_ps_type_name(eg_ps_obj_prop(v, "d"), 0), "A");
    eg_ps_value_free(v);

    /* RefIds are per message */
    v = decode_ok("<Obj RefId=\"0\"><TN RefId=\"0\"><T>X</T></TN></Obj>");
    eg_ps_value_free(v);
    EXPECT_ERR("<Obj RefId=\"1\"><TNRef RefId=\"0\" /></Obj>", EG_EPARSE);

    /* the encoder writes a shared node once and <Ref> after, and reuses type lists by content */
    struct eg_ps_value *shared = eg_ps_new_string_array((const char *[]){"x"}, 1);
    struct eg_ps_value *o = eg_ps_new_obj();
    assert_int_equal(eg_ps_obj_add_prop(o, "first", eg_ps_value_ref(shared)), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "again", shared), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "other", eg_ps_new_string_array(NULL, 0)), 0);
    char *s = encode_ok(o, NULL);
    assert_string_equal(s, "<Obj RefId=\"0\"><Props><Obj N=\"first\" RefId=\"1\"><TN RefId=\"0\">"
                           "<T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN>"
                           "<LST><S>x</S></LST></Obj></Props><MS><Ref N=\"again\" RefId=\"1\" />"
                           "<Obj N=\"other\" RefId=\"2\"><TNRef RefId=\"0\" /><LST /></Obj></MS>"
                           "</Obj>");
    v = decode_ok(s);
    assert_ptr_equal(eg_ps_obj_prop(v, "first"), eg_ps_obj_prop(v, "again"));
    assert_true(eg_ps_value_equal(v, o));
    eg_ps_value_free(v);
    eg_free(s);
    eg_ps_value_free(o);
}

/* ---- client message bodies built with the API ---- */

static void test_build_client_messages(void **state)
{
    size_t len;
    char *want = fixture("session_capability_client.clixml", &len);
    struct eg_ps_value *v = NULL, *cap = eg_ps_new_obj();
    static const struct {
        const char *name, *ver;
    } vers[] = {
        {"protocolversion", "2.3"}, {"PSVersion", "2.0"}, {"SerializationVersion", "1.1.0.1"}};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(eg_ps_new_text(EG_PS_VERSION, vers[i].ver, strlen(vers[i].ver), &v), 0);
        assert_int_equal(eg_ps_obj_add_ms(cap, vers[i].name, v), 0);
    }
    char *s = encode_ok(cap, NULL);
    assert_int_equal(strlen(s), len);
    assert_memory_equal(s, want, len);
    eg_free(s);
    eg_free(want);
    eg_ps_value_free(cap);

    /* INIT_RUNSPACEPOOL exactly as pypsrp sends it */
    want = fixture("init_runspacepool.clixml", &len);
    struct eg_ps_value *init = eg_ps_new_obj(), *host = eg_ps_new_obj();
    assert_int_equal(eg_ps_obj_add_ms(init, "MinRunspaces", eg_ps_new_i32(1)), 0);
    assert_int_equal(eg_ps_obj_add_ms(init, "MaxRunspaces", eg_ps_new_i32(1)), 0);
    assert_int_equal(
        eg_ps_obj_add_ms(
            init, "PSThreadOptions",
            eg_ps_new_enum("System.Management.Automation.Runspaces.PSThreadOptions", "Default", 0)),
        0);
    assert_int_equal(
        eg_ps_obj_add_ms(
            init, "ApartmentState",
            eg_ps_new_enum("System.Management.Automation.Runspaces.ApartmentState", "UNKNOWN", 2)),
        0);
    static const char *const hostflags[] = {"_isHostNull", "_isHostUINull", "_isHostRawUINull",
                                            "_useRunspaceHost"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(eg_ps_obj_add_ms(host, hostflags[i], eg_ps_new_bool(true)), 0);
    assert_int_equal(eg_ps_obj_add_ms(init, "HostInfo", host), 0);
    assert_int_equal(eg_ps_obj_add_ms(init, "ApplicationArguments", eg_ps_new_nil()), 0);
    s = encode_ok(init, NULL);
    assert_int_equal(strlen(s), len);
    assert_memory_equal(s, want, len);
    eg_free(s);
    eg_free(want);
    eg_ps_value_free(init);

    /* a Set-CASMailbox argument list with the @{Add=...;Remove=...} hashtable of psrp-wire.md 12 */
    static const char *const list_tn[] = {
        "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, "
        "System.Management.Automation, Version=1.0.0.0, Culture=neutral, "
        "PublicKeyToken=31bf3856ad364e35]]",
        "System.Object"};
    struct eg_ps_value *args = eg_ps_new_list(list_tn, 2);
    struct eg_ps_value *p1 = eg_ps_new_obj(), *p2 = eg_ps_new_obj(), *ht = eg_ps_new_hashtable();
    assert_int_equal(eg_ps_obj_add_ms(p1, "N", eg_ps_new_string("Identity")), 0);
    assert_int_equal(eg_ps_obj_add_ms(p1, "V", eg_ps_new_string("alice@contoso.com")), 0);
    assert_int_equal(eg_ps_obj_add_item(args, p1), 0);
    assert_int_equal(eg_ps_obj_add_entry(
                         ht, eg_ps_new_string("Add"),
                         eg_ps_new_string_array((const char *[]){"ApplF17ABC", "androidc123"}, 2)),
                     0);
    assert_int_equal(
        eg_ps_obj_add_entry(ht, eg_ps_new_string("Remove"), eg_ps_new_string("ApplOLD1")), 0);
    assert_int_equal(eg_ps_obj_add_ms(p2, "N", eg_ps_new_string("ActiveSyncAllowedDeviceIDs")), 0);
    assert_int_equal(eg_ps_obj_add_ms(p2, "V", ht), 0);
    assert_int_equal(eg_ps_obj_add_item(args, p2), 0);
    s = encode_ok(args, NULL);
    assert_non_null(strstr(s, "<Obj RefId=\"2\"><MS><S N=\"N\">ActiveSyncAllowedDeviceIDs</S>"
                              "<Obj N=\"V\" RefId=\"3\"><TN RefId=\"1\"><T>System.Collections."
                              "Hashtable</T><T>System.Object</T></TN><DCT><En><S N=\"Key\">Add</S>"
                              "<Obj N=\"Value\" RefId=\"4\"><TN RefId=\"2\"><T>System.Object[]</T>"
                              "<T>System.Array</T><T>System.Object</T></TN><LST><S>ApplF17ABC</S>"
                              "<S>androidc123</S></LST></Obj></En><En><S N=\"Key\">Remove</S>"
                              "<S N=\"Value\">ApplOLD1</S></En></DCT></Obj></MS></Obj>"));
    v = decode_ok(s);
    const struct eg_ps_value *hv = eg_ps_obj_prop(eg_ps_list_item(v, 1), "V");
    char **arr;
    size_t n;
    assert_int_equal(eg_ps_get_string_array(eg_ps_dict_get(hv, "add"), &arr, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(arr[1], "androidc123");
    eg_ps_string_array_free(arr, n);
    assert_string_equal(str_of(eg_ps_dict_get(hv, "REMOVE")), "ApplOLD1");
    assert_null(eg_ps_dict_get(hv, "Other"));
    eg_ps_value_free(v);
    eg_free(s);
    eg_ps_value_free(args);
}

static void test_builder_rules(void **state)
{
    struct eg_ps_value *o = eg_ps_new_obj(), *s = eg_ps_new_string("x");
    long live = (long)eg_ps_live_values();
    /* wrong targets: the value is consumed anyway */
    assert_int_equal(eg_ps_obj_add_item(s, eg_ps_new_i32(1)), EG_EINVAL);
    assert_int_equal(eg_ps_obj_add_ms(s, "a", eg_ps_new_i32(1)), EG_EINVAL);
    assert_int_equal(eg_ps_obj_add_ms(o, "a", NULL), EG_ENOMEM);
    assert_int_equal(eg_ps_obj_set_base(o, eg_ps_new_nil()), EG_EINVAL);
    assert_int_equal(eg_ps_obj_add_entry(o, eg_ps_new_nil(), eg_ps_new_i32(1)), EG_EINVAL);
    assert_int_equal((long)eg_ps_live_values(), live);
    /* container kinds */
    assert_int_equal(eg_ps_obj_add_item(o, eg_ps_new_i32(1)), 0);
    assert_int_equal(o->u.obj->container, EG_PS_CT_LST);
    assert_int_equal(eg_ps_obj_add_entry(o, eg_ps_new_i32(1), eg_ps_new_i32(2)), EG_ESTATE);
    assert_int_equal(eg_ps_obj_set_container(o, EG_PS_CT_DCT), EG_ESTATE);
    assert_int_equal(eg_ps_obj_set_container(o, EG_PS_CT_QUE), 0);
    assert_int_equal(eg_ps_list_len(o), 1);
    assert_int_equal((long)eg_ps_live_values(), live + 1);
    /* typed getters on NULL / Nil / kinds */
    int32_t i32;
    int64_t i64;
    assert_int_equal(eg_ps_get_i32(NULL, &i32), EG_ENOTFOUND);
    struct eg_ps_value *nil = eg_ps_new_nil();
    assert_int_equal(eg_ps_get_i32(nil, &i32), EG_ENOTFOUND);
    assert_int_equal(eg_ps_get_i32(s, &i32), EG_EINVAL);
    struct eg_ps_value *big = eg_ps_new_i64(INT64_C(1) << 40);
    assert_int_equal(eg_ps_get_i32(big, &i32), EG_EINVAL);
    assert_int_equal(eg_ps_get_int64(big, &i64), 0);
    struct eg_ps_value *neg = eg_ps_new_i16(-1);
    uint64_t u64;
    assert_int_equal(eg_ps_get_uint64(neg, &u64), EG_EINVAL);
    assert_null(eg_ps_obj_prop(s, "x"));
    assert_null(eg_ps_obj_prop(NULL, "x"));
    assert_null(eg_ps_to_string(nil));
    assert_string_equal(eg_ps_to_string(s), "x");
    assert_false(eg_ps_has_type(s, "System.String"));
    assert_int_equal(eg_ps_list_len(s), 0);
    assert_null(eg_ps_dict_get(o, "a"));
    eg_ps_value_free(neg);
    eg_ps_value_free(big);
    eg_ps_value_free(nil);
    eg_ps_value_free(s);
    eg_ps_value_free(o);
    eg_ps_value_free(NULL);
    eg_ps_types_free(NULL);
    assert_null(eg_ps_value_ref(NULL));

    /* encoder refusals */
    char *out = NULL;
    assert_int_equal(eg_clixml_encode(NULL, &out, NULL), EG_EINVAL);
    struct eg_ps_value *deep = eg_ps_new_i32(0);
    for (int i = 0; i < EG_CLIXML_MAX_DEPTH + 2; i++) {
        struct eg_ps_value *w = eg_ps_new_obj();
        assert_int_equal(eg_ps_obj_add_item(w, deep), 0);
        deep = w;
    }
    assert_int_equal(eg_clixml_encode(deep, &out, NULL), EG_ELIMIT);
    assert_null(out);
    eg_ps_value_free(deep);
}

/* ---- streaming ---- */

struct collect {
    char **enc;     /* encoding of each value */
    char **streams; /* its stream name or "" */
    size_t n, cap;
    size_t stop_at; /* return stop_code when n reaches it (0: never) */
    int stop_code;
    size_t max_live; /* most value nodes alive during a callback */
    struct eg_ps_value *kept;
};

static int collect_cb(void *u, const char *stream, struct eg_ps_value *v)
{
    struct collect *c = u;
    if (eg_ps_live_values() > c->max_live)
        c->max_live = eg_ps_live_values();
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->enc = realloc(c->enc, c->cap * sizeof *c->enc);
        c->streams = realloc(c->streams, c->cap * sizeof *c->streams);
        assert_non_null(c->enc);
        assert_non_null(c->streams);
    }
    c->enc[c->n] = encode_ok(v, NULL);
    c->streams[c->n] = eg_strdup(stream ? stream : "");
    c->n++;
    if (!c->kept) /* keep the first one past the callback */
        c->kept = eg_ps_value_ref(v);
    if (c->stop_at && c->n == c->stop_at)
        return c->stop_code;
    return 0;
}

static void collect_free(struct collect *c)
{
    for (size_t i = 0; i < c->n; i++) {
        eg_free(c->enc[i]);
        eg_free(c->streams[i]);
    }
    free(c->enc);
    free(c->streams);
    eg_ps_value_free(c->kept);
    memset(c, 0, sizeof *c);
}

/* Feed data in chunks of `chunk` bytes (0: whole); returns the first non-zero code. */
static int stream_run(const char *data, size_t len, size_t chunk, struct collect *c)
{
    struct eg_clixml_stream *s = NULL;
    assert_int_equal(eg_clixml_stream_new(collect_cb, c, &s), 0);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0;) {
        size_t k = chunk && chunk < len - off ? chunk : len - off;
        rc = eg_clixml_stream_feed(s, data + off, k);
        off += k;
    }
    if (rc == 0)
        rc = eg_clixml_stream_finish(s);
    if (rc) {
        assert_true(eg_clixml_stream_errmsg(s)[0] != '\0');
        assert_int_equal(eg_clixml_stream_feed(s, "x", 1), rc); /* dead stream */
    } else {
        assert_int_equal(eg_clixml_stream_count(s), c->n);
        assert_int_equal(eg_clixml_stream_feed(s, "x", 1), EG_ESTATE);
        assert_int_equal(eg_clixml_stream_finish(s), EG_ESTATE);
    }
    eg_clixml_stream_free(s);
    return rc;
}

static void assert_same_collect(const struct collect *a, const struct collect *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->enc[i], b->enc[i]);
        assert_string_equal(a->streams[i], b->streams[i]);
    }
}

static void test_stream_objs_documents(void **state)
{
    size_t len;
    char *data = fixture("test_sanitise_clixml_with_error.xml", &len);
    static const size_t chunks[] = {1, 7, 0};
    struct collect ref = {0};

    assert_int_equal(stream_run(data, len, 0, &ref), 0);
    assert_int_equal(ref.n, 10);
    assert_string_equal(ref.streams[0], "progress");
    assert_string_equal(ref.streams[1], "progress");
    for (size_t i = 2; i < 10; i++)
        assert_string_equal(ref.streams[i], "Error");
    /* the first value survives the callback because it took a reference */
    const struct eg_ps_value *rec = eg_ps_obj_prop(ref.kept, "Record");
    assert_non_null(rec);
    assert_int_equal(rec->kind, EG_PS_PR);
    assert_string_equal(rec->u.pr->activity.s, "Preparing modules for first use.");
    assert_string_equal(rec->u.pr->record_type.s, "Completed");
    assert_int_equal(rec->u.pr->activity_id, 0);
    assert_int_equal(rec->u.pr->parent_activity_id, -1);
    assert_int_equal(rec->u.pr->percent_complete, -1);
    assert_int_equal(rec->u.pr->seconds_remaining, -1);
    assert_int_equal(rec->u.pr->current_operation->kind, EG_PS_NIL);
    assert_string_equal(rec->u.pr->status_description.s, "\n            ");
    assert_true(eg_ps_has_type(ref.kept, "System.Management.Automation.PSCustomObject"));
    /* the second object used <TNRef RefId="0"/> from the first: the TN table spans the document */
    assert_non_null(strstr(ref.enc[1], "<T>System.Management.Automation.PSCustomObject</T>"));
    assert_non_null(strstr(ref.enc[2], "<S>fake : The term 'fake' is not recognized"));
    assert_non_null(strstr(ref.enc[2], "Check _x000D__x000A_</S>"));

    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        struct collect c = {0};
        assert_int_equal(stream_run(data, len, chunks[i], &c), 0);
        assert_same_collect(&ref, &c);
        collect_free(&c);
    }
    collect_free(&ref);
    eg_free(data);

    data = fixture("test_sanitise_clixml_with_no_errors.xml", &len);
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        struct collect c = {0};
        assert_int_equal(stream_run(data, len, chunks[i], &c), 0);
        assert_int_equal(c.n, 2);
        assert_string_equal(c.streams[0], "progress");
        if (i == 0)
            ref = c;
        else {
            assert_same_collect(&ref, &c);
            collect_free(&c);
        }
    }
    collect_free(&ref);
    eg_free(data);
}

static void test_stream_concatenated_messages(void **state)
{
    /* several message datas back to back, each with its BOM, as a PSRP reader would pass them */
    static const char *const files[] = {"session_capability_server.clixml",
                                        "application_private_data.clixml",
                                        "runspacepool_state_opened.clixml",
                                        "error_record_provider_not_found.clixml",
                                        "exchange2016_get-mailbox_pipeline_output.clixml",
                                        "output_unicode_string.clixml"};
    size_t nf = sizeof files / sizeof files[0], total = 0;
    char *all = NULL;
    char *single[6];
    for (size_t i = 0; i < nf; i++) {
        size_t len;
        char *d = fixture(files[i], &len);
        struct eg_ps_value *v = NULL;
        assert_int_equal(eg_clixml_decode(d, len, &v, NULL), 0);
        single[i] = encode_ok(v, NULL);
        eg_ps_value_free(v);
        all = realloc(all, total + len + 2);
        assert_non_null(all);
        memcpy(all + total, d, len);
        total += len;
        all[total++] = '\r'; /* white space between messages is fine too */
        all[total++] = '\n';
        eg_free(d);
    }
    static const size_t chunks[] = {1, 7, 4096, 0};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        struct collect c = {0};
        assert_int_equal(stream_run(all, total, chunks[k], &c), 0);
        assert_int_equal(c.n, nf);
        for (size_t i = 0; i < nf; i++) {
            assert_string_equal(c.enc[i], single[i]);
            assert_string_equal(c.streams[i], "");
        }
        collect_free(&c);
    }
    /* each message has its own RefId scope: a Ref to the previous message's object fails */
    static const char two[] = "<Obj RefId=\"0\"><TN RefId=\"0\"><T>X</T></TN></Obj>"
                              "<Obj RefId=\"0\"><TNRef RefId=\"0\" /></Obj>";
    struct collect c = {0};
    assert_int_equal(stream_run(two, strlen(two), 0, &c), EG_EPARSE);
    assert_int_equal(c.n, 1);
    collect_free(&c);
    for (size_t i = 0; i < nf; i++)
        eg_free(single[i]);
    free(all);
}

static void test_stream_edges(void **state)
{
    struct collect c = {0};
    /* empty input and white space only: zero values */
    assert_int_equal(stream_run("", 0, 0, &c), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(stream_run("\xef\xbb\xbf  \n", 6, 1, &c), 0);
    assert_int_equal(c.n, 0);
    /* "#< CLIXML" header, declaration, Objs with two values */
    static const char doc[] = "#< CLIXML\r\n<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
                              "<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/"
                              "powershell/2004/04\"><S S=\"Output\">a</S><I32>5</I32></Objs>";
    assert_int_equal(stream_run(doc, strlen(doc), 3, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.enc[0], "<S>a</S>");
    assert_string_equal(c.streams[0], "Output");
    assert_string_equal(c.enc[1], "<I32>5</I32>");
    collect_free(&c);
    /* truncated */
    static const char trunc[] = "<Objs><S>a</S><S>b";
    assert_int_equal(stream_run(trunc, strlen(trunc), 0, &c), EG_EPARSE);
    assert_int_equal(c.n, 1);
    collect_free(&c);
    assert_int_equal(stream_run("<S>a</S><!-- open", 17, 0, &c), EG_EPARSE);
    collect_free(&c);
    /* the callback's code stops the stream */
    static const char three[] = "<S>1</S><S>2</S><S>3</S>";
    c.stop_at = 2;
    c.stop_code = EG_ESHUTDOWN;
    assert_int_equal(stream_run(three, strlen(three), 1, &c), EG_ESHUTDOWN);
    assert_int_equal(c.n, 2);
    collect_free(&c);
    /* a Ref to an earlier top-level object of an <Objs> document is not supported */
    static const char xref[] =
        "<Objs><Obj RefId=\"0\"><TN RefId=\"0\"><T>A</T></TN></Obj>"
        "<Obj RefId=\"1\"><TNRef RefId=\"0\" /><MS><Ref N=\"r\" RefId=\"0\" />"
        "</MS></Obj></Objs>";
    assert_int_equal(stream_run(xref, strlen(xref), 0, &c), EG_EPARSE);
    assert_int_equal(c.n, 1);
    collect_free(&c);
    /* prefix problems */
    static const char nonl[] = "#< CLIXML";
    assert_int_equal(stream_run(nonl, strlen(nonl), 0, &c), EG_EPARSE);
    static const char u16[] = "<?xml version=\"1.0\" encoding=\"utf-16\"?><S>a</S>";
    assert_int_equal(stream_run(u16, strlen(u16), 2, &c), EG_EPARSE);
    static const char text[] = "<S>a</S> stray <S>b</S>";
    assert_int_equal(stream_run(text, strlen(text), 0, &c), EG_EPARSE);
    collect_free(&c);
    /* arguments */
    struct eg_clixml_stream *s = NULL;
    assert_int_equal(eg_clixml_stream_new(NULL, NULL, &s), EG_EINVAL);
    assert_null(s);
    eg_clixml_stream_free(NULL);
    assert_string_equal(eg_clixml_stream_errmsg(NULL), "");
}

/* ---- malformed input and limits ---- */

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "   \n",
        "\xef\xbb\xbf",
        "<S>a</I32>",
        "<S>",
        "<Obj RefId=\"0\"><MS>",
        "<S>a</S><S>b</S>",
        "<S>a</S>x",
        "<Objs><S>a</S></Objs>",
        "<Foo />",
        "<s>lower case</s>",
        "<Obj RefId=\"0\"><LST><Foo /></LST></Obj>",
        "<Obj RefId=\"0\"><MS><Foo N=\"a\" /></MS></Obj>",
        "<Obj RefId=\"0\"><MS><S>no name</S></MS></Obj>",
        "<Obj RefId=\"0\"><Props><I32>1</I32></Props></Obj>",
        "<Obj RefId=\"0\"><DCT><En><S N=\"Key\">k</S></En></DCT></Obj>",
        "<Obj RefId=\"0\"><DCT><En><S N=\"Value\">v</S></En></DCT></Obj>",
        "<Obj RefId=\"0\"><DCT><En><Nil N=\"Key\" /><S N=\"Value\">v</S></En></DCT></Obj>",
        "<Obj RefId=\"0\"><DCT><En><S N=\"Key\">a</S><S N=\"Key\">b</S><S N=\"Value\">v</S></En>"
        "</DCT></Obj>",
        "<Obj RefId=\"0\"><DCT><En><S N=\"Other\">a</S></En></DCT></Obj>",
        "<Obj RefId=\"0\"><DCT><S N=\"Key\">a</S></DCT></Obj>",
        "<Obj RefId=\"0\"><LST><S>a</S></LST><DCT /></Obj>",
        "<Obj RefId=\"0\"><TN RefId=\"0\"><X /></TN></Obj>",
        "<Obj RefId=\"0\"><TN RefId=\"0\"><T>a<B>true</B></T></TN></Obj>",
        "<S>a<B>true</B></S>",
        "<Obj RefId=\"0\">text</Obj>",
        "<Obj RefId=\"0\"><LST>x</LST></Obj>",
        "<Obj RefId=\"0\"><TN RefId=\"0\"><T>a_x0000_b</T></TN></Obj>",
        "<!DOCTYPE S [<!ENTITY e \"x\">]><S>&e;</S>",
        "<!DOCTYPE S [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><S>&e;</S>",
        "<!DOCTYPE lolz [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>"
        "<S>&b;&b;&b;&b;</S>",
        "<S>&undefined;</S>",
        "<S>&#0;</S>",
        "<S>\xff\xfe</S>",
        "<S>\xc0\xaf</S>",
        "\xff\xfe<\0S\0>\0",
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><S>a</S>",
        "<S N=\"a\" N=\"b\">x</S>",
        "<x:S xmlns:x=\"urn:other\">a</x:S>",
        "<Obj RefId=\"0\"><MS><x:S xmlns:x=\"urn:other\" N=\"a\">b</x:S></MS></Obj>",
        "<PR><AV><S>x</S></AV></PR>",
        "<_egclixml_></_egclixml_>",
        "</_egclixml_><S>a</S>",
        "<Obj RefId=\"0\"><MS><S N=\"a\" RefId=\"x\">b</S></MS></Obj></_egclixml_>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_ERR(bad[i], EG_EPARSE);
    expect_decode_err("<S>a\0b</S>", 10, EG_EPARSE); /* a raw NUL byte */

    struct eg_ps_value *v = NULL;
    assert_int_equal(eg_clixml_decode(NULL, 1, &v, NULL), EG_EINVAL);
    assert_int_equal(eg_clixml_decode("<S/>", 4, NULL, NULL), EG_EINVAL);
    assert_int_equal(eg_clixml_decode("<S>x", 4, &v, NULL), EG_EPARSE); /* err may be NULL */
    assert_null(v);
}

static void test_tolerated_input(void **state)
{
    /* unknown elements directly inside an <Obj> are skipped (forward compatibility, documented),
     * also with content and in another namespace; so is the content of Nil / Ref / TNRef */
    struct eg_ps_value *v = decode_ok(
        "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Obj RefId=\"0\"><Future x=\"1\">"
        "<Deep><S>ignored</S></Deep></Future><y:Z xmlns:y=\"urn:y\"><S>no</S></y:Z>"
        "<TN RefId=\"0\"><T>T1</T><T></T><T>System.Object</T></TN>"
        "<MS><Nil N=\"n\"><S>ignored</S></Nil><S N=\"a\">b</S><MS N=\"Nested\"><I32 N=\"x\">1</I32>"
        "<MS N=\"Deeper\"><B N=\"y\">true</B></MS></MS></MS></Obj>\n\n");
    assert_int_equal(v->u.obj->n_ms, 3);
    assert_int_equal(v->u.obj->types->n, 2); /* the empty <T> is dropped */
    assert_string_equal(str_of(eg_ps_obj_prop(v, "a")), "b");
    const struct eg_ps_value *nested = eg_ps_obj_prop(v, "Nested");
    assert_true(nested->u.obj->member_set);
    int32_t x;
    assert_int_equal(eg_ps_get_i32(eg_ps_obj_prop(nested, "x"), &x), 0);
    assert_int_equal(x, 1);
    char *s = encode_ok(v, NULL);
    assert_string_equal(s,
                        "<Obj RefId=\"0\"><TN RefId=\"0\"><T>T1</T><T>System.Object</T></TN>"
                        "<MS><Nil N=\"n\" /><S N=\"a\">b</S><MS N=\"Nested\"><I32 N=\"x\">1</I32>"
                        "<MS N=\"Deeper\"><B N=\"y\">true</B></MS></MS></MS></Obj>");
    eg_free(s);
    eg_ps_value_free(v);

    /* the PowerShell namespace itself is fine; a Nil base object is no base */
    v = decode_ok("<Obj xmlns=\"http://schemas.microsoft.com/powershell/2004/04\" RefId=\"0\">"
                  "<Nil /><LST><S>a</S></LST></Obj>");
    assert_null(v->u.obj->base);
    assert_int_equal(eg_ps_list_len(v), 1);
    eg_ps_value_free(v);

    /* attribute escapes and entities in N */
    v = decode_ok("<Obj RefId=\"0\"><MS><S N=\"a&amp;b_x0020_c_x005F_x\">1</S></MS></Obj>");
    assert_string_equal(v->u.obj->ms[0].name.s, "a&b c_x");
    assert_non_null(eg_ps_obj_prop(v, "a&b c_x"));
    s = encode_ok(v, NULL);
    assert_string_equal(s, "<Obj RefId=\"0\"><MS><S N=\"a&amp;b c_x005F_x\">1</S></MS></Obj>");
    eg_free(s);
    eg_ps_value_free(v);
}

static char *repeat(const char *head, const char *unit, size_t n, const char *tail, size_t *len)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *b = malloc(hl + ul * n + tl + 1), *p = b;
    assert_non_null(b);
    memcpy(p, head, hl);
    p += hl;
    for (size_t i = 0; i < n; i++, p += ul)
        memcpy(p, unit, ul);
    memcpy(p, tail, tl);
    p[tl] = '\0';
    *len = (size_t)(p + tl - b);
    return b;
}

/* k objects nested through MS, the innermost holding one S: 2k + 1 element levels */
static char *nested(size_t k, size_t *len)
{
    size_t cap = k * 64 + 64, o = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    o += (size_t)snprintf(b + o, cap - o, "<Obj RefId=\"0\"><MS>");
    for (size_t i = 1; i < k; i++)
        o += (size_t)snprintf(b + o, cap - o, "<Obj N=\"o\" RefId=\"%zu\"><MS>", i);
    o += (size_t)snprintf(b + o, cap - o, "<S N=\"x\">deep</S>");
    for (size_t i = 0; i < k; i++)
        o += (size_t)snprintf(b + o, cap - o, "</MS></Obj>");
    *len = o;
    return b;
}

static void test_limits(void **state)
{
    size_t len;
    char *b;
    struct eg_ps_value *v = NULL;

    /* depth: 31 objects = 63 levels is fine, 32 = 65 is over */
    b = nested((EG_CLIXML_MAX_DEPTH - 1) / 2, &len);
    assert_int_equal(eg_clixml_decode(b, len, &v, NULL), 0);
    eg_ps_value_free(v);
    free(b);
    b = nested((EG_CLIXML_MAX_DEPTH + 1) / 2, &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);
    /* also when the deep part is being skipped */
    b = repeat("<Obj RefId=\"0\">", "<U>", EG_CLIXML_MAX_DEPTH + 5, "", &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);

    /* strings: over EG_CLIXML_MAX_STRING is EG_ELIMIT, 1 MiB is fine */
    b = repeat("<S>", "a", (size_t)EG_CLIXML_MAX_STRING + 1, "</S>", &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);
    b = repeat("<S>", "a", 1024 * 1024, "</S>", &len);
    assert_int_equal(eg_clixml_decode(b, len, &v, NULL), 0);
    assert_int_equal(v->text.len, 1024 * 1024);
    eg_ps_value_free(v);
    free(b);
    b = repeat("<Obj RefId=\"0\"><MS><S N=\"", "n", 1024 * 1024, "\">x</S></MS></Obj>", &len);
    assert_int_equal(eg_clixml_decode(b, len, &v, NULL), 0); /* long names are allowed too */
    eg_ps_value_free(v);
    free(b);

    /* members: EG_CLIXML_MAX_MEMBERS items / members / entries, one more is over */
    b = repeat("<Obj RefId=\"0\"><LST>", "<Nil />", EG_CLIXML_MAX_MEMBERS, "</LST></Obj>", &len);
    assert_int_equal(eg_clixml_decode(b, len, &v, NULL), 0);
    assert_int_equal(eg_ps_list_len(v), EG_CLIXML_MAX_MEMBERS);
    eg_ps_value_free(v);
    free(b);
    b = repeat("<Obj RefId=\"0\"><LST>", "<Nil />", EG_CLIXML_MAX_MEMBERS + 1, "</LST></Obj>",
               &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);
    b = repeat("<Obj RefId=\"0\"><MS>", "<B N=\"x\">true</B>", EG_CLIXML_MAX_MEMBERS + 1,
               "</MS></Obj>", &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);
    b = repeat("<Obj RefId=\"0\"><DCT>", "<En><I32 N=\"Key\">1</I32><Nil N=\"Value\" /></En>",
               EG_CLIXML_MAX_MEMBERS + 1, "</DCT></Obj>", &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);
    b = repeat("<Obj RefId=\"0\"><TN RefId=\"0\">", "<T>t</T>", EG_CLIXML_MAX_MEMBERS + 1,
               "</TN></Obj>", &len);
    expect_decode_err(b, len, EG_ELIMIT);
    free(b);

    /* objects per message: 5 lists of 60000 <Obj/> = 300000 objects */
    {
        size_t ul;
        char *list = repeat("<Obj N=\"l\"><LST>", "<Obj />", 60000, "</LST></Obj>", &ul);
        b = repeat("<Obj><MS>", list, 5, "</MS></Obj>", &len);
        expect_decode_err(b, len, EG_ELIMIT);
        free(b);
        free(list);
    }
    /* values per message: 17 lists of 65000 Nil */
    {
        size_t ul;
        char *list = repeat("<Obj N=\"l\"><LST>", "<Nil/>", 65000, "</LST></Obj>", &ul);
        b = repeat("<Obj><MS>", list, 17, "</MS></Obj>", &len);
        expect_decode_err(b, len, EG_ELIMIT);
        free(b);
        free(list);
    }
    /* RefId text */
    EXPECT_ERR("<Obj RefId=\"0123456789012345678901234567890123\" />", EG_ELIMIT);

    /* a message larger than EG_CLIXML_MAX_MESSAGE_BYTES is refused before parsing */
    b = calloc(1, (size_t)EG_CLIXML_MAX_MESSAGE_BYTES + 1);
    assert_non_null(b);
    struct eg_clixml_error err;
    assert_int_equal(eg_clixml_decode(b, (size_t)EG_CLIXML_MAX_MESSAGE_BYTES + 1, &v, &err),
                     EG_ELIMIT);
    assert_true(err.msg[0] != '\0');
    free(b);

    /* and in a stream, one top-level value is held to the same size (generated on the fly) */
    {
        struct collect c = {0};
        struct eg_clixml_stream *s = NULL;
        char unit[1100];
        memcpy(unit, "<S N=\"m\">", 9);
        memset(unit + 9, 'a', 1024);
        memcpy(unit + 9 + 1024, "</S>", 5);
        size_t unit_len = strlen(unit);
        assert_int_equal(eg_clixml_stream_new(collect_cb, &c, &s), 0);
        int rc = eg_clixml_stream_feed(s, "<S>small</S><Obj><MS>", 21);
        for (size_t i = 0; rc == 0 && i < (size_t)EG_CLIXML_MAX_MEMBERS; i++)
            rc = eg_clixml_stream_feed(s, unit, unit_len);
        assert_int_equal(rc, EG_ELIMIT);
        assert_int_equal(c.n, 1);
        assert_non_null(strstr(eg_clixml_stream_errmsg(s), "bytes"));
        eg_clixml_stream_free(s);
        collect_free(&c);
    }
}

/* ---- allocation failure ---- */

static void alloc_loop_decode(const char *data, size_t len)
{
    size_t live = eg_ps_live_values();
    for (long n = 0;; n++) {
        struct eg_ps_value *v = NULL;
        struct eg_clixml_error err;
        eg_alloc_fail_after(n);
        int rc = eg_clixml_decode(data, len, &v, &err);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            char *e1 = NULL, *e2 = NULL;
            /* the value is complete: it encodes like an unhindered decode */
            struct eg_ps_value *w = NULL;
            assert_int_equal(eg_clixml_decode(data, len, &w, NULL), 0);
            assert_true(eg_ps_value_equal(v, w));
            e1 = encode_ok(v, NULL);
            e2 = encode_ok(w, NULL);
            assert_string_equal(e1, e2);
            eg_free(e1);
            eg_free(e2);
            eg_ps_value_free(w);
            eg_ps_value_free(v);
            break;
        }
        if (rc != EG_ENOMEM)
            fprintf(stderr, "n=%ld: %s (%s)\n", n, eg_errname(rc), err.msg);
        assert_int_equal(rc, EG_ENOMEM);
        assert_null(v);
        assert_int_equal(eg_ps_live_values(), live);
        assert_true(n < 1000000);
    }
    assert_int_equal(eg_ps_live_values(), live);
}

static void test_alloc_failure_decode(void **state)
{
    static const char *const files[] = {
        "exchange2016_get-mailbox_pipeline_output.clixml", "error_record_provider_not_found.clixml",
        "output_unicode_string.clixml", "create_pipeline_multiple.clixml"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        char *data = fixture(files[i], &len);
        alloc_loop_decode(data, len);
        eg_free(data);
    }
    static const char pr[] = "<PR><AV>a</AV><AI>1</AI><S>op</S><PI>-1</PI><PC>5</PC><T>Processing"
                             "</T><SR>3</SR><SD>d</SD></PR>";
    alloc_loop_decode(pr, strlen(pr));
    static const char misc[] =
        "<Obj RefId=\"0\"><MS><MS N=\"m\"><BA N=\"b\">AQID</BA></MS>"
        "<Obj N=\"h\" RefId=\"1\"><DCT><En><S N=\"Key\">k</S><Ref N=\"Value\" "
        "RefId=\"0\" /></En></DCT></Obj><SS N=\"s\">AAAA</SS></MS></Obj>";
    alloc_loop_decode(misc, strlen(misc));
}

static int count_cb(void *u, const char *stream, struct eg_ps_value *v)
{
    if (!v || !stream)
        return EG_EINTERNAL;
    ++*(size_t *)u;
    return 0;
}

static void test_alloc_failure_encode_and_stream(void **state)
{
    size_t len;
    char *data = fixture("exchange2016_get-mailbox_pipeline_output.clixml", &len);
    struct eg_ps_value *v = NULL;
    assert_int_equal(eg_clixml_decode(data, len, &v, NULL), 0);
    char *want = encode_ok(v, NULL);
    for (long n = 0;; n++) {
        char *out = NULL;
        eg_alloc_fail_after(n);
        int rc = eg_clixml_encode(v, &out, NULL);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            assert_string_equal(out, want);
            eg_free(out);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_null(out);
    }
    eg_free(want);
    eg_ps_value_free(v);
    eg_free(data);

    /* the streaming decoder, creation included, over an <Objs> document fed in 5-byte chunks
     * (the callback only counts: it runs under the failure injection too) */
    data = fixture("test_sanitise_clixml_with_error.xml", &len);
    size_t live = eg_ps_live_values();
    for (long n = 0;; n++) {
        size_t count = 0;
        struct eg_clixml_stream *s = NULL;
        eg_alloc_fail_after(n);
        int rc = eg_clixml_stream_new(count_cb, &count, &s);
        for (size_t off = 0; rc == 0 && off < len; off += 5)
            rc = eg_clixml_stream_feed(s, data + off, len - off < 5 ? len - off : 5);
        if (rc == 0)
            rc = eg_clixml_stream_finish(s);
        eg_alloc_fail_after(-1);
        if (rc != 0 && rc != EG_ENOMEM)
            fprintf(stderr, "stream n=%ld: %s %s\n", n, eg_errname(rc), eg_clixml_stream_errmsg(s));
        eg_clixml_stream_free(s);
        if (rc == 0) {
            assert_int_equal(count, 10);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_int_equal(eg_ps_live_values(), live);
    }
    eg_free(data);
}

/* ---- bounded memory over a long stream ---- */

struct mem_watch {
    size_t n, max_live_values, max_xml_bytes;
    size_t base_values;
};

static int mem_cb(void *u, const char *stream, struct eg_ps_value *v)
{
    struct mem_watch *w = u;
    size_t lv = eg_ps_live_values() - w->base_values;
    if (lv > w->max_live_values)
        w->max_live_values = lv;
    size_t xb = atomic_load(&xml_live_bytes);
    if (xb > w->max_xml_bytes)
        w->max_xml_bytes = xb;
    const char *id = NULL;
    if (eg_ps_get_string(eg_ps_obj_prop(v, "DeviceId"), &id, NULL) != 0)
        return EG_EINVAL;
    char want[32];
    snprintf(want, sizeof want, "Appl%08zu", w->n);
    if (strcmp(id, want) != 0)
        return EG_EINVAL;
    w->n++;
    return 0;
}

static void test_stream_memory_bounded(void **state)
{
    /* ~50 MB Export-Clixml-like document of MobileDevice-like objects, generated on the fly and
     * fed in 64 KiB pieces: the values alive and libxml2's memory stay small throughout */
    static const char head[] = "<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/"
                               "powershell/2004/04\">";
    static const char tail[] = "</Objs>";
    const size_t target = 50u * 1024 * 1024;
    struct mem_watch w = {.base_values = eg_ps_live_values()};
    struct eg_clixml_stream *s = NULL;
    char *buf = malloc(64 * 1024 + 4096);
    size_t blen = 0, total = 0, i = 0;
    assert_non_null(buf);
    assert_int_equal(eg_clixml_stream_new(mem_cb, &w, &s), 0);
    memcpy(buf, head, sizeof head - 1);
    blen = sizeof head - 1;
    while (total < target) {
        blen += (size_t)snprintf(
            buf + blen, 4096,
            "<Obj RefId=\"%zu\">%s<ToString>dev%08zu</ToString><Props>"
            "<S N=\"DeviceId\">Appl%08zu</S><S N=\"DeviceModel\">iPhone</S>"
            "<S N=\"DeviceOS\">iOS 17.1 21B74</S><S N=\"DeviceAccessState\">Allowed</S>"
            "<DT N=\"FirstSyncTime\">2024-01-02T03:04:05.1234567Z</DT><B N=\"IsValid\">true</B>"
            "<G N=\"Guid\">9b9387fe-e1b1-4695-97bd-b0a0bebe7ce2</G>"
            "<Obj N=\"ClientVersions\" RefId=\"%zu\"><TN RefId=\"1\"><T>System.String[]</T>"
            "<T>System.Array</T><T>System.Object</T></TN><LST><S>16.1</S><S>14.1</S></LST></Obj>"
            "<S N=\"Identity\">contoso.com/Users/u%zu/ExchangeActiveSyncDevices/iPhone_x005F_"
            "%zu</S><S N=\"Padding\">%0400zu</S></Props></Obj>\r\n",
            i * 2,
            i == 0 ? "<TN RefId=\"0\"><T>Deserialized.Microsoft.Exchange.Data.Directory."
                     "Management.MobileDevice</T><T>System.Object</T></TN>"
                   : "<TNRef RefId=\"0\" />",
            i, i, i * 2 + 1, i, i, i);
        i++;
        if (blen >= 64 * 1024) {
            assert_int_equal(eg_clixml_stream_feed(s, buf, blen), 0);
            total += blen;
            blen = 0;
        }
    }
    memcpy(buf + blen, tail, sizeof tail - 1);
    blen += sizeof tail - 1;
    assert_int_equal(eg_clixml_stream_feed(s, buf, blen), 0);
    assert_int_equal(eg_clixml_stream_finish(s), 0);
    total += blen;
    assert_int_equal(w.n, i);
    assert_int_equal(eg_clixml_stream_count(s), i);
    assert_true(total >= target);
    assert_true(i > 40000);
    print_message("streamed %zu bytes, %zu objects: at most %zu value nodes alive, libxml2 peak "
                  "%zu bytes\n",
                  total, i, w.max_live_values, w.max_xml_bytes);
    /* one object has ~16 nodes; nothing accumulates */
    assert_true(w.max_live_values <= 32);
    /* libxml2 holds about one input slice plus its dictionary: far below the 50 MB */
    assert_true(w.max_xml_bytes < 2u * 1024 * 1024);
    eg_clixml_stream_free(s);
    assert_int_equal(eg_ps_live_values(), w.base_values);
    free(buf);
}

static int reset_alloc(void **state)
{
    eg_alloc_fail_after(-1);
    return 0;
}

static void quiet(void *ctx, const char *fmt, ...) {}

int main(void)
{
    eg_alloc_init();
    /* libxml2 prints "out of memory" for failures it meets before a parser context exists */
    xmlSetGenericErrorFunc(NULL, quiet);
    /* account libxml2's memory (before libxml2 allocates anything), still through eg_malloc */
    xmlMemSetup(xml_free, xml_malloc, xml_realloc, xml_strdup);
#define T(f) cmocka_unit_test_setup(f, reset_alloc)
    const struct CMUnitTest tests[] = {
        T(test_escape_recorded_string),
        T(test_escape_table),
        T(test_unescape_rules),
        T(test_escape_rejects_bad_utf8),
        T(test_primitives_canonical_roundtrip),
        T(test_primitive_values),
        T(test_constructors_roundtrip_every_kind),
        T(test_bad_primitives),
        T(test_recorded_messages_reencode_byte_for_byte),
        T(test_exchange_get_mailbox),
        T(test_error_records),
        T(test_ref_and_tnref),
        T(test_build_client_messages),
        T(test_builder_rules),
        T(test_stream_objs_documents),
        T(test_stream_concatenated_messages),
        T(test_stream_edges),
        T(test_malformed),
        T(test_tolerated_input),
        T(test_limits),
        T(test_alloc_failure_decode),
        T(test_alloc_failure_encode_and_stream),
        T(test_stream_memory_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
