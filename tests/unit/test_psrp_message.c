/* test_psrp_message.c - PSRP messages (exchange/psrp_message): the worked example of psrp-wire.md
 * section 7 byte for byte, SESSION_CAPABILITY and RUNSPACEPOOL_STATE prefixes, every base64 blob
 * of the recorded traffic (tests/fixtures/psrp/NAME.b64, made by extract.py from shared/vectors)
 * decoded, reassembled and re-encoded, the small-envelope recording's split CREATE_PIPELINE,
 * header edge cases, type names, and GUID layout, parsing and generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/psrp_fragment.h"
#include "exchange/psrp_message.h"

static const char worked_b64[] =
    "AAAAAAAAAAQAAAAAAAAAAAMAAAA0AQAAAAQQBABJ7lxB6AZKRLGS2tSzruy1eVkLvUbiSGqFsHDqcEkjXu+7vzxTPmhp"
    "PC9TPg==";

static uint8_t *b64(const char *s, size_t *ret_len)
{
    uint8_t *out = NULL;
    assert_int_equal(eg_base64_decode(s, strlen(s), 0, &out, ret_len), 0);
    return out;
}

static void assert_guid_text(const struct eg_psrp_guid *g, const char *want)
{
    char buf[EG_PSRP_GUID_STRLEN];
    assert_string_equal(eg_psrp_guid_to_string(g, false, buf), want);
}

/* ---- the worked example (psrp-wire.md section 7) ---- */

static void test_worked_example_byte_for_byte(void **state)
{
    size_t len = 0;
    uint8_t *raw = b64(worked_b64, &len);
    assert_int_equal(len, 73);

    struct eg_psrp_fragment f;
    size_t used = 0;
    assert_int_equal(eg_psrp_fragment_decode(raw, len, EG_PSRP_MAX_FRAGMENT_BLOB, &f, &used), 0);
    assert_int_equal(used, 73);
    assert_int_equal(f.object_id, 4);
    assert_int_equal(f.fragment_id, 0);
    assert_true(f.start && f.end);
    assert_int_equal(f.blob_len, 0x34);

    struct eg_psrp_message m;
    assert_int_equal(eg_psrp_message_decode(f.blob, f.blob_len, &m), 0);
    assert_int_equal(m.destination, EG_PSRP_DEST_CLIENT);
    assert_int_equal(m.type, 0x00041004);
    assert_int_equal(m.type, EG_PSRP_PIPELINE_OUTPUT);
    assert_string_equal(eg_psrp_msg_type_name(m.type), "PIPELINE_OUTPUT");
    /* The recorded RPID is in RFC 4122 order: the raw bytes are kept exactly... */
    static const uint8_t rpid_raw[16] = {0x49, 0xee, 0x5c, 0x41, 0xe8, 0x06, 0x4a, 0x44,
                                         0xb1, 0x92, 0xda, 0xd4, 0xb3, 0xae, 0xec, 0xb5};
    static const uint8_t pid_raw[16] = {0x79, 0x59, 0x0b, 0xbd, 0x46, 0xe2, 0x48, 0x6a,
                                        0x85, 0xb0, 0x70, 0xea, 0x70, 0x49, 0x23, 0x5e};
    assert_memory_equal(m.rpid.b, rpid_raw, 16);
    assert_memory_equal(m.pid.b, pid_raw, 16);
    /* ...so read with .NET rules they are not the ShellId / CommandId (vectors README)... */
    assert_guid_text(&m.rpid, "415cee49-06e8-444a-b192-dad4b3aeecb5");
    assert_guid_text(&m.pid, "bd0b5979-e246-6a48-85b0-70ea7049235e");
    /* ...but swapping the byte order recovers them. */
    struct eg_psrp_guid g = m.rpid;
    eg_psrp_guid_swap_order(&g);
    assert_guid_text(&g, "49ee5c41-e806-4a44-b192-dad4b3aeecb5");
    g = m.pid;
    eg_psrp_guid_swap_order(&g);
    assert_guid_text(&g, "79590bbd-46e2-486a-85b0-70ea7049235e");
    assert_true(m.had_bom);
    assert_int_equal(m.data_len, 9);
    assert_memory_equal(m.data, "<S>hi</S>", 9);
    assert_ptr_equal(m.data, raw + 21 + 40 + 3); /* a view, not a copy */

    /* Re-encode: message (server side, BOM flag), fragment, base64 - all identical. */
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    assert_int_equal(eg_psrp_message_encode(&m, EG_PSRP_ENCODE_BOM, &enc, &enc_len), 0);
    assert_int_equal(enc_len, 52);
    assert_memory_equal(enc, f.blob, 52);
    uint8_t frag_out[73];
    struct eg_psrp_fragment f2 = f;
    f2.blob = enc;
    assert_int_equal(eg_psrp_fragment_encode(&f2, frag_out, sizeof frag_out, &used), 0);
    assert_int_equal(used, 73);
    assert_memory_equal(frag_out, raw, 73);
    char *text = NULL;
    assert_int_equal(eg_base64_encode(frag_out, 73, &text, NULL), 0);
    assert_string_equal(text, worked_b64);
    eg_free(text);

    /* Through the fragmenter too (ObjectId 4 from the counter). */
    uint64_t counter = 4;
    struct eg_psrp_fragments *fr = NULL;
    assert_int_equal(eg_psrp_message_fragment(&m, EG_PSRP_ENCODE_BOM, 512000, &counter, &fr), 0);
    assert_int_equal(fr->n, 1);
    assert_int_equal(fr->len, 73);
    assert_memory_equal(fr->data, raw, 73);
    assert_int_equal(counter, 5);
    eg_psrp_fragments_free(fr);

    /* Without the flag (client encode) no BOM is written. */
    eg_free(enc);
    assert_int_equal(eg_psrp_message_encode(&m, 0, &enc, &enc_len), 0);
    assert_int_equal(enc_len, 49);
    assert_memory_equal(enc + 40, "<S>hi</S>", 9);
    eg_free(enc);
    eg_free(raw);
}

/* ---- fixtures: every blob of every recording ---- */

struct blob {
    long exchange;
    bool c2s;
    char element[24];
    uint8_t *data;
    size_t len;
};

struct recording {
    char name[128];
    struct blob *v;
    size_t n;
};

static char *fixture_dir(void)
{
    const char *src = getenv("EG_SOURCE_DIR");
    char *p = eg_asprintf("%s/tests/fixtures/psrp", src ? src : ".");
    assert_non_null(p);
    return p;
}

/* Parse one .b64 file: "<exchange> <c2s|s2c> <element> <base64>" per line, '#' comments. */
static void load_recording(const char *path, struct recording *rec)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(eg_read_file(path, 4 * 1024 * 1024, &text, &len), 0);
    rec->v = NULL;
    rec->n = 0;
    char *line = text;
    while (line < text + len) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        char *end = nl ? nl : text + len;
        *end = 0;
        if (*line && *line != '#') {
            char *sp1 = strchr(line, ' ');
            assert_non_null(sp1);
            char *sp2 = strchr(sp1 + 1, ' ');
            assert_non_null(sp2);
            char *sp3 = strchr(sp2 + 1, ' ');
            assert_non_null(sp3);
            *sp1 = *sp2 = *sp3 = 0;
            struct blob b = {0};
            int64_t ex = 0;
            assert_int_equal(eg_parse_int64(line, 0, 1000, &ex), 0);
            b.exchange = (long)ex;
            assert_true(strcmp(sp1 + 1, "c2s") == 0 || strcmp(sp1 + 1, "s2c") == 0);
            b.c2s = strcmp(sp1 + 1, "c2s") == 0;
            snprintf(b.element, sizeof b.element, "%s", sp2 + 1);
            /* Strict decode: real traffic is canonical base64. */
            assert_int_equal(eg_base64_decode(sp3 + 1, strlen(sp3 + 1), 0, &b.data, &b.len), 0);
            struct blob *nv = eg_reallocarray(rec->v, rec->n + 1, sizeof *nv);
            assert_non_null(nv);
            rec->v = nv;
            rec->v[rec->n++] = b;
        }
        line = end + 1;
    }
    eg_free(text);
}

static void free_recording(struct recording *rec)
{
    for (size_t i = 0; i < rec->n; i++)
        eg_free(rec->v[i].data);
    eg_free(rec->v);
    rec->v = NULL;
    rec->n = 0;
}

static void load_named(const char *name, struct recording *rec)
{
    char *dir = fixture_dir();
    char *path = eg_asprintf("%s/%s.b64", dir, name);
    assert_non_null(path);
    load_recording(path, rec);
    snprintf(rec->name, sizeof rec->name, "%s", name);
    eg_free(path);
    eg_free(dir);
}

/* A reassembled message with its decoded header (data points into raw). */
struct got {
    uint8_t *raw;
    size_t len;
    uint64_t oid;
    struct eg_psrp_message m;
};

/* Check one message of a recording and that it survives re-encoding byte for byte. */
static void check_recorded_message(const char *file, bool c2s, const struct got *g)
{
    const struct eg_psrp_message *m = &g->m;
    if (!eg_psrp_msg_type_known(m->type))
        fail_msg("%s: unknown message type 0x%08x", file, (unsigned)m->type);
    assert_int_equal(m->destination, c2s ? EG_PSRP_DEST_SERVER : EG_PSRP_DEST_CLIENT);
    if (c2s) {
        assert_false(m->had_bom);
        if (m->type == EG_PSRP_END_OF_PIPELINE_INPUT)
            assert_int_equal(m->data_len, 0);
        else if (m->data_len == 0 || m->data[0] != '<')
            fail_msg("%s: client %s data does not start with '<'", file,
                     eg_psrp_msg_type_name(m->type));
    } else {
        if (!m->had_bom)
            fail_msg("%s: server %s data has no BOM", file, eg_psrp_msg_type_name(m->type));
        assert_true(m->data_len > 0);
        assert_int_equal(m->data[0], '<');
    }
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    assert_int_equal(eg_psrp_message_encode(m, m->had_bom ? EG_PSRP_ENCODE_BOM : 0, &enc, &enc_len),
                     0);
    assert_int_equal(enc_len, g->len);
    assert_memory_equal(enc, g->raw, enc_len);
    eg_free(enc);
}

/* Feed every blob of rec in wire order into one defragmenter per direction; collect messages. */
static void reassemble(const struct recording *rec, struct got **ret_c2s, size_t *n_c2s,
                       struct got **ret_s2c, size_t *n_s2c)
{
    struct eg_psrp_defrag *d[2] = {NULL, NULL}; /* [0] c2s, [1] s2c */
    struct got *out[2] = {NULL, NULL};
    size_t n[2] = {0, 0};
    assert_int_equal(eg_psrp_defrag_new(NULL, &d[0]), 0);
    assert_int_equal(eg_psrp_defrag_new(NULL, &d[1]), 0);
    for (size_t i = 0; i < rec->n; i++) {
        int k = rec->v[i].c2s ? 0 : 1;
        int r = eg_psrp_defrag_feed_buffer(d[k], rec->v[i].data, rec->v[i].len);
        if (r < 0)
            fail_msg("%s blob %zu: %s (%s)", rec->name, i, eg_strerror(r),
                     eg_psrp_defrag_reason(d[k]));
        struct got g = {0};
        while (eg_psrp_defrag_pop(d[k], &g.raw, &g.len, &g.oid) == 0) {
            assert_int_equal(eg_psrp_message_decode(g.raw, g.len, &g.m), 0);
            struct got *nv = eg_reallocarray(out[k], n[k] + 1, sizeof *nv);
            assert_non_null(nv);
            out[k] = nv;
            out[k][n[k]++] = g;
        }
    }
    /* Every object that started also finished. */
    assert_int_equal(eg_psrp_defrag_in_progress(d[0]), 0);
    assert_int_equal(eg_psrp_defrag_in_progress(d[1]), 0);
    eg_psrp_defrag_free(d[0]);
    eg_psrp_defrag_free(d[1]);
    *ret_c2s = out[0];
    *n_c2s = n[0];
    *ret_s2c = out[1];
    *n_s2c = n[1];
}

static void free_got(struct got *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        eg_free(v[i].raw);
    eg_free(v);
}

static void test_all_recorded_blobs(void **state)
{
    char *dir = fixture_dir();
    DIR *dh = opendir(dir);
    if (!dh)
        fail_msg("cannot open %s", dir);
    struct dirent *e;
    size_t files = 0, total = 0;
    while ((e = readdir(dh))) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".b64") != 0)
            continue;
        struct recording rec = {0};
        snprintf(rec.name, sizeof rec.name, "%.*s", (int)(nl - 4), e->d_name);
        char *path = eg_asprintf("%s/%s", dir, e->d_name);
        assert_non_null(path);
        load_recording(path, &rec);
        eg_free(path);
        assert_true(rec.n > 0);

        struct got *c2s = NULL, *s2c = NULL;
        size_t nc = 0, ns = 0;
        reassemble(&rec, &c2s, &nc, &s2c, &ns);
        /* Every pool opens with SESSION_CAPABILITY both ways, then INIT_RUNSPACEPOOL. */
        assert_true(nc >= 2 && ns >= 1);
        assert_int_equal(c2s[0].m.type, EG_PSRP_SESSION_CAPABILITY);
        assert_int_equal(c2s[1].m.type, EG_PSRP_INIT_RUNSPACEPOOL);
        assert_int_equal(s2c[0].m.type, EG_PSRP_SESSION_CAPABILITY);
        assert_true(eg_psrp_guid_is_nil(&s2c[0].m.rpid)); /* recorded: all-zero RPID */
        for (size_t i = 0; i < nc; i++)
            check_recorded_message(rec.name, true, &c2s[i]);
        for (size_t i = 0; i < ns; i++)
            check_recorded_message(rec.name, false, &s2c[i]);
        /* Client ObjectIds count from 1 in these recordings. */
        for (size_t i = 0; i < nc; i++)
            assert_int_equal(c2s[i].oid, i + 1);
        /* The server echoes the client's RPID bytes (whatever their order), except in the
         * all-zero RPID of its SESSION_CAPABILITY and ENCRYPTED_SESSION_KEY (recorded). */
        for (size_t i = 0; i < ns; i++) {
            if (eg_psrp_guid_is_nil(&s2c[i].m.rpid))
                assert_true(s2c[i].m.type == EG_PSRP_SESSION_CAPABILITY ||
                            s2c[i].m.type == EG_PSRP_ENCRYPTED_SESSION_KEY);
            else
                assert_true(eg_psrp_guid_equal(&s2c[i].m.rpid, &c2s[0].m.rpid));
        }
        for (size_t i = 0; i < nc; i++)
            assert_true(eg_psrp_guid_equal(&c2s[i].m.rpid, &c2s[0].m.rpid));
        total += nc + ns;
        free_got(c2s, nc);
        free_got(s2c, ns);
        free_recording(&rec);
        files++;
    }
    closedir(dh);
    eg_free(dir);
    assert_int_equal(files, 7);
    assert_true(total >= 40);
}

/* The SESSION_CAPABILITY prefix of psrp-wire.md section 7, from the same recording as the
 * worked example, and its RUNSPACEPOOL_STATE. */
static void test_session_capability_prefix(void **state)
{
    struct recording rec;
    load_named("test_psrp_long_running_cmdlet", &rec);
    assert_string_equal(rec.v[0].element, "creationXml");
    assert_true(rec.v[0].c2s);
    const uint8_t *p = rec.v[0].data;
    static const uint8_t prefix[29] = {0, 0, 0, 0, 0, 0,    0, 1, 0, 0, 0, 0, 0, 0, 0,
                                       0, 3, 0, 0, 0, 0xc7, 2, 0, 0, 0, 2, 0, 1, 0};
    assert_true(rec.v[0].len > sizeof prefix);
    assert_memory_equal(p, prefix, sizeof prefix);

    struct eg_psrp_fragment f;
    size_t used = 0;
    assert_int_equal(eg_psrp_fragment_decode(p, rec.v[0].len, EG_PSRP_MAX_FRAGMENT_BLOB, &f, &used),
                     0);
    assert_int_equal(f.blob_len, 199);
    struct eg_psrp_message m;
    assert_int_equal(eg_psrp_message_decode(f.blob, f.blob_len, &m), 0);
    assert_int_equal(m.destination, EG_PSRP_DEST_SERVER);
    assert_int_equal(m.type, EG_PSRP_SESSION_CAPABILITY);
    static const uint8_t rpid_raw[16] = {0x49, 0xee, 0x5c, 0x41, 0xe8, 0x06, 0x4a, 0x44,
                                         0xb1, 0x92, 0xda, 0xd4, 0xb3, 0xae, 0xec, 0xb5};
    assert_memory_equal(m.rpid.b, rpid_raw, 16);
    assert_true(eg_psrp_guid_is_nil(&m.pid));
    assert_false(m.had_bom);
    assert_int_equal(m.data_len, 159);
    assert_memory_equal(m.data, "<Obj RefId=\"0\">", 15);

    /* The second fragment of creationXml is INIT_RUNSPACEPOOL, object 2. */
    struct eg_psrp_fragment f2;
    assert_int_equal(eg_psrp_fragment_decode(p + used, rec.v[0].len - used, UINT32_MAX, &f2, NULL),
                     0);
    assert_int_equal(f2.object_id, 2);
    assert_true(f2.start && f2.end);
    assert_int_equal(eg_psrp_message_decode(f2.blob, f2.blob_len, &m), 0);
    assert_int_equal(m.type, EG_PSRP_INIT_RUNSPACEPOOL);
    assert_int_equal(used + 21 + f2.blob_len, rec.v[0].len);

    /* RUNSPACEPOOL_STATE: object 3, BlobLength 103, type 05 10 02 00, Opened. */
    struct got *c2s = NULL, *s2c = NULL;
    size_t nc = 0, ns = 0;
    reassemble(&rec, &c2s, &nc, &s2c, &ns);
    const struct got *st = NULL;
    for (size_t i = 0; i < ns && !st; i++)
        if (s2c[i].m.type == EG_PSRP_RUNSPACEPOOL_STATE)
            st = &s2c[i];
    assert_non_null(st);
    assert_int_equal(st->oid, 3);
    assert_int_equal(st->len, 103);
    assert_memory_equal(st->raw + 4, "\x05\x10\x02\x00", 4);
    static const char state_xml[] =
        "<Obj RefId=\"0\"><MS><I32 N=\"RunspaceState\">2</I32></MS></Obj>";
    assert_true(st->m.had_bom);
    assert_int_equal(st->m.data_len, strlen(state_xml));
    assert_memory_equal(st->m.data, state_xml, strlen(state_xml));
    /* The worked example is this recording's PIPELINE_OUTPUT. */
    bool found = false;
    for (size_t i = 0; i < ns; i++)
        if (s2c[i].m.type == EG_PSRP_PIPELINE_OUTPUT && s2c[i].oid == 4 && s2c[i].m.data_len == 9 &&
            memcmp(s2c[i].m.data, "<S>hi</S>", 9) == 0)
            found = true;
    assert_true(found);
    free_got(c2s, nc);
    free_got(s2c, ns);
    free_recording(&rec);
}

/* test_psrp_small_msg_size: CREATE_PIPELINE split over Command/Arguments and Send, and two large
 * outputs in two Receives. */
static void test_small_envelope_recording(void **state)
{
    struct recording rec;
    load_named("test_psrp_small_msg_size", &rec);
    struct eg_psrp_defrag *c2s = NULL, *s2c = NULL;
    assert_int_equal(eg_psrp_defrag_new(NULL, &c2s), 0);
    assert_int_equal(eg_psrp_defrag_new(NULL, &s2c), 0);
    bool seen_args = false, seen_pipeline = false;
    size_t outputs = 0;
    const size_t want_output_len[] = {20007, 10007}; /* the two large outputs, in order */
    for (size_t i = 0; i < rec.n; i++) {
        struct blob *b = &rec.v[i];
        struct eg_psrp_defrag *d = b->c2s ? c2s : s2c;
        assert_int_equal(eg_psrp_defrag_feed_buffer(d, b->data, b->len), 0);
        if (b->c2s && strcmp(b->element, "Arguments") == 0) {
            /* Only the S fragment of CREATE_PIPELINE went with the Command. */
            struct eg_psrp_fragment f;
            assert_int_equal(eg_psrp_fragment_decode(b->data, b->len, UINT32_MAX, &f, NULL), 0);
            assert_true(f.start);
            assert_false(f.end);
            assert_int_equal(f.fragment_id, 0);
            assert_int_equal(eg_psrp_defrag_in_progress(c2s), 1);
            assert_int_equal(eg_psrp_defrag_ready(c2s), 0);
            seen_args = true;
        }
        uint8_t *raw = NULL;
        size_t len = 0;
        uint64_t oid = 0;
        while (eg_psrp_defrag_pop(d, &raw, &len, &oid) == 0) {
            struct eg_psrp_message m;
            assert_int_equal(eg_psrp_message_decode(raw, len, &m), 0);
            if (m.type == EG_PSRP_CREATE_PIPELINE) {
                /* Completed by the first Send, after the Command. */
                assert_true(seen_args);
                assert_string_equal(b->element, "Stream");
                assert_int_equal(eg_psrp_defrag_in_progress(c2s), 0);
                assert_true(len > 32768 - 2000); /* more than one small envelope could carry */
                seen_pipeline = true;
            }
            if (m.type == EG_PSRP_PIPELINE_OUTPUT && m.data_len > 1000) {
                assert_true(outputs < 2);
                assert_int_equal(m.data_len, want_output_len[outputs]);
                assert_memory_equal(m.data, "<S>aaaa", 7);
                assert_memory_equal(m.data + m.data_len - 4, "</S>", 4);
                outputs++;
            }
            eg_free(raw);
        }
    }
    assert_true(seen_pipeline);
    assert_int_equal(outputs, 2);
    assert_int_equal(eg_psrp_defrag_in_progress(c2s), 0);
    assert_int_equal(eg_psrp_defrag_in_progress(s2c), 0);
    eg_psrp_defrag_free(c2s);
    eg_psrp_defrag_free(s2c);
    free_recording(&rec);
}

/* Every recorded message, re-fragmented with small fragments and interleaved across two objects,
 * reassembles to the same bytes. */
static void test_recorded_messages_refragmented(void **state)
{
    struct recording rec;
    load_named("test_psrp_multiple_commands", &rec);
    struct got *c2s = NULL, *s2c = NULL;
    size_t nc = 0, ns = 0;
    reassemble(&rec, &c2s, &nc, &s2c, &ns);
    struct eg_psrp_defrag *d = NULL;
    assert_int_equal(eg_psrp_defrag_new(NULL, &d), 0);
    uint64_t counter = 0x0A67;
    for (size_t i = 0; i + 1 < ns; i += 2) {
        struct eg_psrp_fragments *a = NULL, *b = NULL;
        assert_int_equal(eg_psrp_fragment_message(s2c[i].raw, s2c[i].len, 60, &counter, &a), 0);
        assert_int_equal(eg_psrp_fragment_message(s2c[i + 1].raw, s2c[i + 1].len, 97, &counter, &b),
                         0);
        size_t ia = 0, ib = 0;
        while (ia < a->n || ib < b->n) {
            if (ia < a->n) {
                assert_int_equal(eg_psrp_defrag_feed_buffer(d, a->data + a->offsets[ia],
                                                            a->offsets[ia + 1] - a->offsets[ia]),
                                 0);
                ia++;
            }
            if (ib < b->n) {
                assert_int_equal(eg_psrp_defrag_feed_buffer(d, b->data + b->offsets[ib],
                                                            b->offsets[ib + 1] - b->offsets[ib]),
                                 0);
                ib++;
            }
        }
        for (int k = 0; k < 2; k++) {
            uint8_t *raw = NULL;
            size_t len = 0;
            uint64_t oid = 0;
            assert_int_equal(eg_psrp_defrag_pop(d, &raw, &len, &oid), 0);
            const struct got *want = oid == a->object_id ? &s2c[i] : &s2c[i + 1];
            assert_true(oid == a->object_id || oid == b->object_id);
            assert_int_equal(len, want->len);
            assert_memory_equal(raw, want->raw, len);
            eg_free(raw);
        }
        eg_psrp_fragments_free(a);
        eg_psrp_fragments_free(b);
    }
    eg_psrp_defrag_free(d);
    free_got(c2s, nc);
    free_got(s2c, ns);
    free_recording(&rec);
}

/* ---- header edge cases ---- */

static void test_decode_edges(void **state)
{
    uint8_t buf[48] = {0};
    struct eg_psrp_message m = {0};
    for (size_t n = 0; n < 40; n++)
        assert_int_equal(eg_psrp_message_decode(buf, n, &m), EG_EPARSE);
    assert_int_equal(eg_psrp_message_decode(NULL, 0, &m), EG_EPARSE);

    /* Exactly the header: empty data (END_OF_PIPELINE_INPUT). */
    buf[0] = 2;
    buf[4] = 0x03, buf[5] = 0x10, buf[6] = 0x04;
    assert_int_equal(eg_psrp_message_decode(buf, 40, &m), 0);
    assert_int_equal(m.destination, 2);
    assert_int_equal(m.type, EG_PSRP_END_OF_PIPELINE_INPUT);
    assert_int_equal(m.data_len, 0);
    assert_false(m.had_bom);

    /* A BOM alone, a partial BOM, and a BOM followed by data. */
    buf[40] = 0xEF, buf[41] = 0xBB, buf[42] = 0xBF, buf[43] = '<';
    assert_int_equal(eg_psrp_message_decode(buf, 43, &m), 0);
    assert_true(m.had_bom);
    assert_int_equal(m.data_len, 0);
    assert_int_equal(eg_psrp_message_decode(buf, 42, &m), 0);
    assert_false(m.had_bom);
    assert_int_equal(m.data_len, 2);
    assert_int_equal(eg_psrp_message_decode(buf, 44, &m), 0);
    assert_true(m.had_bom);
    assert_int_equal(m.data_len, 1);
    assert_int_equal(m.data[0], '<');

    /* Unknown type and destination are kept as numbers. */
    buf[0] = 0x78, buf[1] = 0x56, buf[2] = 0x34, buf[3] = 0x12;
    buf[4] = 0xEF, buf[5] = 0xBE, buf[6] = 0xAD, buf[7] = 0xDE;
    assert_int_equal(eg_psrp_message_decode(buf, 44, &m), 0);
    assert_int_equal(m.destination, 0x12345678);
    assert_true(m.type == 0xDEADBEEFu);
    assert_false(eg_psrp_msg_type_known(m.type));
    assert_string_equal(eg_psrp_msg_type_name(m.type), "UNKNOWN");
}

static void test_encode_rules(void **state)
{
    struct eg_psrp_message m = {.destination = EG_PSRP_DEST_SERVER,
                                .type = EG_PSRP_CREATE_PIPELINE,
                                .data = (const uint8_t *)"<Obj/>",
                                .data_len = 6};
    assert_int_equal(eg_psrp_guid_from_string("49EE5C41-E806-4A44-B192-DAD4B3AEECB5", &m.rpid), 0);
    assert_int_equal(eg_psrp_guid_from_string("79590bbd-46e2-486a-85b0-70ea7049235e", &m.pid), 0);
    uint8_t out[64];
    size_t n = 0;
    assert_int_equal(eg_psrp_message_encoded_len(&m, 0), 46);
    assert_int_equal(eg_psrp_message_encoded_len(&m, EG_PSRP_ENCODE_BOM), 49);
    assert_int_equal(eg_psrp_message_encode_to(&m, 0, out, 45, &n), EG_ELIMIT);
    assert_int_equal(eg_psrp_message_encode_to(&m, 0, out, 46, &n), 0);
    assert_int_equal(n, 46);
    static const uint8_t want_hdr[40] = {
        2,    0,    0,    0,    0x06, 0x10, 0x02, 0x00, /* Destination, MessageType (LE) */
        0x41, 0x5c, 0xee, 0x49, 0x06, 0xe8, 0x44, 0x4a,
        0xb1, 0x92, 0xda, 0xd4, 0xb3, 0xae, 0xec, 0xb5, /* RPID, .NET order */
        0xbd, 0x0b, 0x59, 0x79, 0xe2, 0x46, 0x6a, 0x48,
        0x85, 0xb0, 0x70, 0xea, 0x70, 0x49, 0x23, 0x5e, /* PID, .NET order */
    };
    assert_memory_equal(out, want_hdr, 40);
    assert_memory_equal(out + 40, "<Obj/>", 6); /* client: no BOM */

    assert_int_equal(eg_psrp_message_encode_to(&m, EG_PSRP_ENCODE_BOM, out, sizeof out, &n), 0);
    assert_int_equal(n, 49);
    assert_memory_equal(out + 40, "\xEF\xBB\xBF<Obj/>", 9);
    struct eg_psrp_message back;
    assert_int_equal(eg_psrp_message_decode(out, n, &back), 0);
    assert_true(back.had_bom);
    assert_true(eg_psrp_guid_equal(&back.rpid, &m.rpid));
    assert_true(eg_psrp_guid_equal(&back.pid, &m.pid));

    /* Refusals. */
    struct eg_psrp_message bad = m;
    bad.destination = 0;
    assert_int_equal(eg_psrp_message_encode_to(&bad, 0, out, sizeof out, &n), EG_EINVAL);
    bad.destination = 3;
    assert_int_equal(eg_psrp_message_encode_to(&bad, 0, out, sizeof out, &n), EG_EINVAL);
    bad = m;
    bad.data = (const uint8_t *)"\xEF\xBB\xBF<S/>";
    bad.data_len = 7;
    assert_int_equal(eg_psrp_message_encode_to(&bad, 0, out, sizeof out, &n), EG_EINVAL);
    assert_int_equal(eg_psrp_message_encode_to(&bad, EG_PSRP_ENCODE_BOM, out, sizeof out, &n),
                     EG_EINVAL);
    bad = m;
    bad.data = NULL;
    assert_int_equal(eg_psrp_message_encode_to(&bad, 0, out, sizeof out, &n), EG_EINVAL);
    assert_int_equal(eg_psrp_message_encode_to(&m, 0x80, out, sizeof out, &n), EG_EINVAL);
    bad = m;
    bad.data_len = EG_PSRP_MAX_MESSAGE; /* never read: refused on size */
    uint8_t *heap = NULL;
    assert_int_equal(eg_psrp_message_encode(&bad, 0, &heap, &n), EG_ELIMIT);

    /* Empty data, unknown type: fine. */
    struct eg_psrp_message empty = {.destination = EG_PSRP_DEST_SERVER, .type = 0x00099999};
    assert_int_equal(eg_psrp_message_encode_to(&empty, 0, out, 40, &n), 0);
    assert_int_equal(n, 40);

    /* Allocation failure. */
    eg_alloc_fail_after(0);
    assert_int_equal(eg_psrp_message_encode(&m, 0, &heap, &n), EG_ENOMEM);
    struct eg_psrp_fragments *fr = NULL;
    uint64_t counter = 1;
    assert_int_equal(eg_psrp_message_fragment(&m, 0, 100, &counter, &fr), EG_ENOMEM);
    eg_alloc_fail_after(-1);
    assert_null(heap);
    assert_null(fr);
    assert_int_equal(counter, 1);
}

static void test_message_fragment_roundtrip(void **state)
{
    char data[5000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)('a' + i % 26);
    data[0] = '<';
    struct eg_psrp_message m = {.destination = EG_PSRP_DEST_SERVER,
                                .type = EG_PSRP_CREATE_PIPELINE,
                                .data = (const uint8_t *)data,
                                .data_len = sizeof data};
    assert_int_equal(eg_psrp_guid_generate(&m.rpid), 0);
    assert_int_equal(eg_psrp_guid_generate(&m.pid), 0);
    uint64_t counter = 1;
    struct eg_psrp_fragments *fr = NULL;
    assert_int_equal(eg_psrp_message_fragment(&m, 0, 1000, &counter, &fr), 0);
    assert_int_equal(fr->n, (40 + sizeof data + 978) / 979);
    assert_int_equal(counter, 2);
    struct eg_psrp_defrag *d = NULL;
    assert_int_equal(eg_psrp_defrag_new(NULL, &d), 0);
    assert_int_equal(eg_psrp_defrag_feed_buffer(d, fr->data, fr->len), 0);
    uint8_t *raw = NULL;
    size_t len = 0;
    assert_int_equal(eg_psrp_defrag_pop(d, &raw, &len, NULL), 0);
    struct eg_psrp_message back;
    assert_int_equal(eg_psrp_message_decode(raw, len, &back), 0);
    assert_int_equal(back.type, EG_PSRP_CREATE_PIPELINE);
    assert_int_equal(back.destination, EG_PSRP_DEST_SERVER);
    assert_true(eg_psrp_guid_equal(&back.rpid, &m.rpid));
    assert_true(eg_psrp_guid_equal(&back.pid, &m.pid));
    assert_false(back.had_bom);
    assert_int_equal(back.data_len, sizeof data);
    assert_memory_equal(back.data, data, sizeof data);
    eg_free(raw);
    eg_psrp_defrag_free(d);
    eg_psrp_fragments_free(fr);
}

/* ---- message types ---- */

static void test_type_names(void **state)
{
    static const struct {
        uint32_t v;
        const char *name;
    } all[] = {
        {0x00010002, "SESSION_CAPABILITY"},
        {0x00010004, "INIT_RUNSPACEPOOL"},
        {0x00010005, "PUBLIC_KEY"},
        {0x00010006, "ENCRYPTED_SESSION_KEY"},
        {0x00010007, "PUBLIC_KEY_REQUEST"},
        {0x00010008, "CONNECT_RUNSPACEPOOL"},
        {0x00021002, "SET_MAX_RUNSPACES"},
        {0x00021003, "SET_MIN_RUNSPACES"},
        {0x00021004, "RUNSPACE_AVAILABILITY"},
        {0x00021005, "RUNSPACEPOOL_STATE"},
        {0x00021006, "CREATE_PIPELINE"},
        {0x00021007, "GET_AVAILABLE_RUNSPACES"},
        {0x00021008, "USER_EVENT"},
        {0x00021009, "APPLICATION_PRIVATE_DATA"},
        {0x0002100A, "GET_COMMAND_METADATA"},
        {0x0002100B, "RUNSPACEPOOL_INIT_DATA"},
        {0x0002100C, "RESET_RUNSPACE_STATE"},
        {0x00021100, "RUNSPACEPOOL_HOST_CALL"},
        {0x00021101, "RUNSPACEPOOL_HOST_RESPONSE"},
        {0x00041002, "PIPELINE_INPUT"},
        {0x00041003, "END_OF_PIPELINE_INPUT"},
        {0x00041004, "PIPELINE_OUTPUT"},
        {0x00041005, "ERROR_RECORD"},
        {0x00041006, "PIPELINE_STATE"},
        {0x00041007, "DEBUG_RECORD"},
        {0x00041008, "VERBOSE_RECORD"},
        {0x00041009, "WARNING_RECORD"},
        {0x00041010, "PROGRESS_RECORD"},
        {0x00041011, "INFORMATION_RECORD"},
        {0x00041100, "PIPELINE_HOST_CALL"},
        {0x00041101, "PIPELINE_HOST_RESPONSE"},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        assert_true(eg_psrp_msg_type_known(all[i].v));
        assert_string_equal(eg_psrp_msg_type_name(all[i].v), all[i].name);
    }
    assert_int_equal(EG_PSRP_PIPELINE_HOST_RESPONSE, 0x00041101);
    assert_int_equal(EG_PSRP_PROGRESS_RECORD, 0x00041010);
    const uint32_t unknown[] = {0,          1,          0x00010001, 0x00010003, 0x0002100D,
                                0x0004100A, 0x00041012, 0x00041102, 0xFFFFFFFF};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_false(eg_psrp_msg_type_known(unknown[i]));
        assert_string_equal(eg_psrp_msg_type_name(unknown[i]), "UNKNOWN");
    }
}

/* ---- GUIDs ---- */

static void test_guid_layout(void **state)
{
    static const uint8_t wire[16] = {0x41, 0x5c, 0xee, 0x49, 0x06, 0xe8, 0x44, 0x4a,
                                     0xb1, 0x92, 0xda, 0xd4, 0xb3, 0xae, 0xec, 0xb5};
    struct eg_psrp_guid g;
    assert_int_equal(eg_psrp_guid_from_string("49EE5C41-E806-4A44-B192-DAD4B3AEECB5", &g), 0);
    assert_memory_equal(g.b, wire, 16);
    char buf[EG_PSRP_GUID_STRLEN];
    assert_string_equal(eg_psrp_guid_to_string(&g, false, buf),
                        "49ee5c41-e806-4a44-b192-dad4b3aeecb5");
    assert_string_equal(eg_psrp_guid_to_string(&g, true, buf),
                        "49EE5C41-E806-4A44-B192-DAD4B3AEECB5");
    struct eg_psrp_guid g2;
    assert_int_equal(eg_psrp_guid_from_string("49ee5c41-e806-4a44-b192-dad4b3aeecb5", &g2), 0);
    assert_true(eg_psrp_guid_equal(&g, &g2));
    assert_int_equal(eg_psrp_guid_from_string("{49ee5C41-E806-4a44-B192-dad4b3aeecb5}", &g2), 0);
    assert_true(eg_psrp_guid_equal(&g, &g2));
    /* Raw round trip of arbitrary bytes through text. */
    struct eg_psrp_guid raw;
    for (int i = 0; i < 16; i++)
        raw.b[i] = (uint8_t)(i * 17 + 3);
    assert_int_equal(eg_psrp_guid_from_string(eg_psrp_guid_to_string(&raw, false, buf), &g2), 0);
    assert_true(eg_psrp_guid_equal(&raw, &g2));
    /* swap_order is an involution and maps .NET order to RFC order. */
    g2 = g;
    eg_psrp_guid_swap_order(&g2);
    static const uint8_t rfc[16] = {0x49, 0xee, 0x5c, 0x41, 0xe8, 0x06, 0x4a, 0x44,
                                    0xb1, 0x92, 0xda, 0xd4, 0xb3, 0xae, 0xec, 0xb5};
    assert_memory_equal(g2.b, rfc, 16);
    eg_psrp_guid_swap_order(&g2);
    assert_true(eg_psrp_guid_equal(&g, &g2));

    struct eg_psrp_guid nil = {{0}};
    assert_true(eg_psrp_guid_is_nil(&nil));
    assert_false(eg_psrp_guid_is_nil(&g));
    assert_string_equal(eg_psrp_guid_to_string(&nil, false, buf),
                        "00000000-0000-0000-0000-000000000000");
}

static void test_guid_parse_rejections(void **state)
{
    static const char *bad[] = {
        "",
        "49EE5C41-E806-4A44-B192-DAD4B3AEECB",   /* short */
        "49EE5C41-E806-4A44-B192-DAD4B3AEECB5A", /* long */
        "49EE5C41E8064A44B192DAD4B3AEECB5",      /* no dashes */
        "49EE5C41-E8064-A44-B192-DAD4B3AEECB5",  /* dash misplaced */
        "49EE5C41-E806-4A44-B192_DAD4B3AEECB5",  /* wrong separator */
        "49EE5C4G-E806-4A44-B192-DAD4B3AEECB5",  /* not hex */
        " 9EE5C41-E806-4A44-B192-DAD4B3AEECB5",
        "{49EE5C41-E806-4A44-B192-DAD4B3AEECB5", /* unbalanced brace */
        "49EE5C41-E806-4A44-B192-DAD4B3AEECB5}",
        "(49EE5C41-E806-4A44-B192-DAD4B3AEECB5)",
        "uuid:49EE5C41-E806-4A44-B192-DAD4B3AEECB5",
        "+9EE5C41-E806-4A44-B192-DAD4B3AEECB5",
    };
    struct eg_psrp_guid g = {{0xAA}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (eg_psrp_guid_from_string(bad[i], &g) != EG_EPARSE)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(eg_psrp_guid_from_string(NULL, &g), EG_EPARSE);
    assert_int_equal(g.b[0], 0xAA); /* untouched on failure */
}

static int cmp_guid(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void test_guid_generate(void **state)
{
    enum { N = 2000 };
    struct eg_psrp_guid *v = eg_calloc(N, sizeof *v);
    assert_non_null(v);
    char buf[EG_PSRP_GUID_STRLEN];
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(eg_psrp_guid_generate(&v[i]), 0);
        eg_psrp_guid_to_string(&v[i], false, buf);
        assert_int_equal(buf[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", buf[19])); /* RFC 4122 variant */
        struct eg_psrp_guid back;
        assert_int_equal(eg_psrp_guid_from_string(buf, &back), 0);
        assert_true(eg_psrp_guid_equal(&back, &v[i]));
    }
    qsort(v, N, sizeof *v, cmp_guid);
    for (size_t i = 1; i < N; i++)
        assert_false(eg_psrp_guid_equal(&v[i - 1], &v[i]));
    eg_free(v);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worked_example_byte_for_byte),
        cmocka_unit_test(test_all_recorded_blobs),
        cmocka_unit_test(test_session_capability_prefix),
        cmocka_unit_test(test_small_envelope_recording),
        cmocka_unit_test(test_recorded_messages_refragmented),
        cmocka_unit_test(test_decode_edges),
        cmocka_unit_test(test_encode_rules),
        cmocka_unit_test(test_message_fragment_roundtrip),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_guid_layout),
        cmocka_unit_test(test_guid_parse_rejections),
        cmocka_unit_test(test_guid_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
