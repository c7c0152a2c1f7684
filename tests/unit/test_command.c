/* test_command.c - the command model: every type good and bad, every field validator (with
 * injection-shaped strings), batch error paths, nesting and batch limits, duplicate ids,
 * canonical round trip and key-order independence, allocation failure injection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/command.h"
#include "common/alloc.h"
#include "common/limits.h"

/* ---- helpers -------------------------------------------------------------------------------- */

struct parsed {
    int rc;
    struct eg_command **cmds;
    size_t n;
    bool batch;
    struct eg_verr err;
};

static struct parsed parse_n(const char *body, size_t len, size_t max_batch)
{
    struct parsed p;
    memset(&p, 0, sizeof p);
    p.rc = eg_command_parse_body(body, len, max_batch, &p.cmds, &p.n, &p.batch, &p.err);
    if (p.rc < 0) {
        assert_null(p.cmds); /* ret_ parameters are written only on success */
        assert_int_equal(p.n, 0);
    }
    return p;
}

static struct parsed parse(const char *body)
{
    return parse_n(body, strlen(body), EG_MAX_BATCH);
}

static void parsed_free(struct parsed *p)
{
    eg_commands_free(p->cmds, p->n);
    p->cmds = NULL;
    p->n = 0;
}

/* The body must be refused with rc at exactly field. */
static void expect_bad(const char *body, int rc, const char *field)
{
    struct parsed p = parse(body);
    if (p.rc != rc || strcmp(p.err.field, field) != 0)
        fail_msg("body %s: expected rc %d field \"%s\", got rc %d field \"%s\" (%s)", body, rc,
                 field, p.rc, p.err.field, p.err.detail);
    assert_true(p.err.detail[0] != '\0');
    parsed_free(&p);
}

/* The body must parse as one command; caller frees. */
static struct eg_command *expect_one(const char *body)
{
    struct parsed p = parse(body);
    if (p.rc != 0)
        fail_msg("body %s: rc %d field \"%s\": %s", body, p.rc, p.err.field, p.err.detail);
    assert_int_equal(p.n, 1);
    assert_false(p.batch);
    struct eg_command *c = p.cmds[0];
    eg_free(p.cmds);
    return c;
}

/* A device command body with the given device_id / mailbox JSON values. */
static char *device_body(const char *type, const char *mailbox_json, const char *device_json)
{
    return eg_asprintf("{\"id\":\"c1\",\"type\":\"%s\",\"mailbox\":%s,\"device_id\":%s}", type,
                       mailbox_json, device_json);
}

static char *json_quote(const char *s)
{
    json_t *j = json_string(s);
    assert_non_null(j);
    char *t = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    assert_non_null(t);
    return t;
}

/* Set equality: device sets and notify lists are sets (validated free of duplicates), and the
 * canonical form sorts them. */
static bool strv_equal(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        bool found = false;
        for (size_t j = 0; j < nb && !found; j++)
            found = strcmp(a[i], b[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static bool str_equal(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool cmd_equal(const struct eg_command *a, const struct eg_command *b)
{
    return str_equal(a->id, b->id) && a->type == b->type && str_equal(a->mailbox, b->mailbox) &&
           str_equal(a->device_id, b->device_id) && a->account_only == b->account_only &&
           strv_equal(a->notify, a->n_notify, b->notify, b->n_notify) &&
           a->activesync_enabled == b->activesync_enabled && a->policy_given == b->policy_given &&
           str_equal(a->policy, b->policy) &&
           strv_equal(a->allowed, a->n_allowed, b->allowed, b->n_allowed) &&
           strv_equal(a->blocked, a->n_blocked, b->blocked, b->n_blocked) && a->level == b->level &&
           a->mode == b->mode;
}

static char *repeat(char ch, size_t n)
{
    char *s = eg_malloc(n + 1);
    assert_non_null(s);
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

/* Injection-shaped values that must never pass as an identifier of any kind. */
static const char *const injections[] = {
    "x'; Remove-Mailbox -Identity ceo",
    "a$(whoami)",
    "dev$id",
    "$PSHOME",
    "dev`id",
    "a'b",
    "a(b)",
    "a,b",
    "dev\nid",
    "d\xc3\xa9v", /* non-ASCII */
    "a;b",
    "a|b",
    "a&b",
    "a\"b",
    "a b",
    "a{b}",
    "a<b>",
    "a\tb",
    "",
};

/* ---- types ---------------------------------------------------------------------------------- */

static void test_type_names(void **state)
{
    for (int t = 0; t < EG_CMD__COUNT; t++) {
        enum eg_cmd_type back;
        const char *name = eg_cmd_type_name((enum eg_cmd_type)t);
        assert_non_null(name);
        assert_int_equal(eg_cmd_type_parse(name, &back), 0);
        assert_int_equal(back, t);
    }
    enum eg_cmd_type t = EG_CMD_DEVICE_WIPE;
    assert_int_equal(eg_cmd_type_parse("device.explode", &t), EG_EINVAL);
    assert_int_equal(eg_cmd_type_parse("DEVICE.ALLOW", &t), EG_EINVAL);
    assert_int_equal(eg_cmd_type_parse(NULL, &t), EG_EINVAL);
    assert_int_equal(t, EG_CMD_DEVICE_WIPE);
    assert_string_equal(eg_cmd_type_name(EG_CMD_ORG_SET_DEFAULT_ACCESS), "org.set_default_access");

    assert_true(eg_cmd_type_is_list_edit(EG_CMD_DEVICE_ALLOW));
    assert_true(eg_cmd_type_is_list_edit(EG_CMD_DEVICE_BLOCK));
    assert_true(eg_cmd_type_is_list_edit(EG_CMD_DEVICE_UNLIST));
    assert_true(eg_cmd_type_is_list_edit(EG_CMD_MAILBOX_SET_DEVICES));
    assert_false(eg_cmd_type_is_list_edit(EG_CMD_DEVICE_WIPE));
    assert_false(eg_cmd_type_is_list_edit(EG_CMD_DEVICE_WIPE_CANCEL));
    assert_false(eg_cmd_type_is_list_edit(EG_CMD_DEVICE_REMOVE));
    assert_false(eg_cmd_type_is_list_edit(EG_CMD_MAILBOX_SET));
    assert_false(eg_cmd_type_is_list_edit(EG_CMD_ORG_SET_DEFAULT_ACCESS));
    assert_false(eg_cmd_type_is_list_edit(EG_CMD_INVENTORY_SYNC));
}

/* ---- validators ----------------------------------------------------------------------------- */

static void test_valid_command_id(void **state)
{
    assert_true(eg_valid_command_id("c-1001"));
    assert_true(eg_valid_command_id("A.b_c:d-9"));
    assert_true(eg_valid_command_id("x"));
    char *s = repeat('a', EG_MAX_ID_LEN);
    assert_true(eg_valid_command_id(s));
    eg_free(s);
    s = repeat('a', EG_MAX_ID_LEN + 1);
    assert_false(eg_valid_command_id(s));
    eg_free(s);
    assert_false(eg_valid_command_id(NULL));
    assert_false(eg_valid_command_id("bad id"));
    assert_false(eg_valid_command_id("a/b"));
    for (size_t i = 0; i < sizeof injections / sizeof injections[0]; i++)
        assert_false(eg_valid_command_id(injections[i]));
}

/* Mailbox identities and DeviceIds are literal data: every injection-looking value is accepted
 * as it is (it travels as a typed string, never as script); only emptiness, length and broken
 * UTF-8 are refused. */
static void test_valid_device_id(void **state)
{
    assert_true(eg_valid_device_id("ApplF17A1"));
    assert_true(eg_valid_device_id("androidc1234567"));
    assert_true(eg_valid_device_id("a.b_c-D9"));
    assert_true(eg_valid_device_id("a:b"));
    char *s = repeat('D', EG_MAX_DEVICE_ID_LEN);
    assert_true(eg_valid_device_id(s));
    eg_free(s);
    s = repeat('D', EG_MAX_DEVICE_ID_LEN + 1);
    assert_false(eg_valid_device_id(s));
    eg_free(s);
    s = repeat('x', 1024);
    assert_false(eg_valid_device_id(s));
    eg_free(s);
    assert_false(eg_valid_device_id(NULL));
    assert_false(eg_valid_device_id(""));
    assert_false(eg_valid_device_id("bad\xc3"));      /* truncated sequence */
    assert_false(eg_valid_device_id("\xc0\xafx"));    /* overlong */
    assert_false(eg_valid_device_id("\xed\xa0\x80")); /* surrogate */
    assert_false(eg_valid_device_id("\xff"));
    for (size_t i = 0; i < sizeof injections / sizeof injections[0]; i++)
        if (injections[i][0] && !eg_valid_device_id(injections[i]))
            fail_msg("should be accepted as data: %s", injections[i]);
}

static void test_valid_mailbox(void **state)
{
    static const char *const good[] = {
        "alice@corp.example",
        "Alice.Smith@Corp.Example",
        "o'brien@corp.example",
        "x'; Remove-Mailbox -Identity ceo",
        "a$(whoami)@corp.example",
        "dev`id",
        "a\nb",
        "CONTOSO\\alice",
        "al\xc3\xa9@corp.example",
        "User 0001",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!eg_valid_mailbox(good[i]))
            fail_msg("should be valid: %s", good[i]);
    assert_false(eg_valid_mailbox(NULL));
    assert_false(eg_valid_mailbox(""));
    assert_false(eg_valid_mailbox("al\xe9@corp.example")); /* Latin-1, not UTF-8 */
    assert_false(eg_valid_mailbox("user*@corp.example"));  /* -Identity wildcards */
    assert_false(eg_valid_mailbox("user?@corp.example"));
    char *s = repeat('m', EG_MAX_MAILBOX_LEN);
    assert_true(eg_valid_mailbox(s));
    eg_free(s);
    s = repeat('m', EG_MAX_MAILBOX_LEN + 1);
    assert_false(eg_valid_mailbox(s));
    eg_free(s);
}

static void test_valid_smtp(void **state)
{
    static const char *const good[] = {
        "alice@corp.example",
        "Alice.Smith@Corp.Example",
        "a+tag@b.example",
        "x@y",
        "first.last@sub-domain.example.com",
        "o/u=x?y^z~w!#%*@a.example",
        "1@2.3",
        "a_b-c@x-y.example",
    };
    static const char *const bad[] = {
        "not-an-address",
        "@corp.example",
        "alice@",
        "alice@@corp.example",
        "a@b@c.example",
        ".alice@corp.example",
        "alice.@corp.example",
        "al..ice@corp.example",
        "alice@corp..example",
        "alice@.corp.example",
        "alice@corp.example.",
        "alice@-corp.example",
        "alice@corp-.example",
        "alice@corp_x.example",
        "alice@corp.example; Remove-Mailbox",
        "alice@[127.0.0.1]",
        "a b@corp.example",
        "a\nb@corp.example",
        "alice@corp.\xc3\xa9xample",
        "",
        "alice@corp.example\r",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!eg_valid_smtp(good[i]))
            fail_msg("should be valid: %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (eg_valid_smtp(bad[i]))
            fail_msg("should be invalid: %s", bad[i]);
    assert_false(eg_valid_smtp(NULL));

    /* Length limits: local part 64, label 63, whole address 254. */
    char buf[600];
    char *l64 = repeat('l', 64), *l65 = repeat('l', 65), *d63 = repeat('d', 63),
         *d64 = repeat('d', 64);
    snprintf(buf, sizeof buf, "%s@corp.example", l64);
    assert_true(eg_valid_smtp(buf));
    snprintf(buf, sizeof buf, "%s@corp.example", l65);
    assert_false(eg_valid_smtp(buf));
    snprintf(buf, sizeof buf, "a@%s.example", d63);
    assert_true(eg_valid_smtp(buf));
    snprintf(buf, sizeof buf, "a@%s.example", d64);
    assert_false(eg_valid_smtp(buf));
    /* 64 + 1 + 63.63.61 = 254 */
    char *d61 = repeat('e', 61);
    snprintf(buf, sizeof buf, "%s@%s.%s.%s", l64, d63, d63, d61);
    assert_int_equal(strlen(buf), 254);
    assert_true(eg_valid_smtp(buf));
    snprintf(buf, sizeof buf, "%s@%s.%s.%se", l64, d63, d63, d61);
    assert_int_equal(strlen(buf), 255);
    assert_false(eg_valid_smtp(buf));
    eg_free(l64);
    eg_free(l65);
    eg_free(d63);
    eg_free(d64);
    eg_free(d61);
    char *big = repeat('x', 1024);
    assert_false(eg_valid_smtp(big));
    eg_free(big);
}

static void test_valid_policy_name(void **state)
{
    static const char *const good[] = {
        "Default", "Sales Phones", "Pol-1 (strict)",           "R&D", "Ünïcödé policy",
        "a",       "x#y@z!",       "\xe6\x97\xa5\xe6\x9c\xac", /* CJK */
    };
    static const char *const bad[] = {
        "",
        " leading",
        "trailing ",
        "x'; Remove-Mailbox -Identity ceo",
        "a$(whoami)",
        "dev`id",
        "dev\nid",
        "tab\there",
        "semi;colon",
        "dq\"uote",
        "del\x7f",
        "c1\xc2\x85",               /* U+0085 NEL */
        "smart\xe2\x80\x98quote",   /* U+2018 */
        "smart\xe2\x80\x9cquote",   /* U+201C */
        "bidi\xe2\x80\xaeoverride", /* U+202E */
        "zw\xe2\x80\x8bsp",         /* U+200B */
        "bad\xc3",                  /* truncated UTF-8 */
        "over\xc0\xaflong",         /* overlong '/' */
        "sur\xed\xa0\x80rogate",    /* U+D800 */
        "big\xf4\x90\x80\x80",      /* > U+10FFFF */
        "\xff",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!eg_valid_policy_name(good[i]))
            fail_msg("policy should be valid: %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (eg_valid_policy_name(bad[i]))
            fail_msg("policy should be invalid: %s", bad[i]);
    assert_false(eg_valid_policy_name(NULL));
    char *s = repeat('p', EG_MAX_POLICY_LEN);
    assert_true(eg_valid_policy_name(s));
    eg_free(s);
    s = repeat('p', EG_MAX_POLICY_LEN + 1);
    assert_false(eg_valid_policy_name(s));
    eg_free(s);
}

/* ---- every type, good ----------------------------------------------------------------------- */

static void test_device_types_good(void **state)
{
    static const enum eg_cmd_type types[] = {EG_CMD_DEVICE_ALLOW,  EG_CMD_DEVICE_BLOCK,
                                             EG_CMD_DEVICE_UNLIST, EG_CMD_DEVICE_WIPE_CANCEL,
                                             EG_CMD_DEVICE_REMOVE, EG_CMD_DEVICE_WIPE};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char *body =
            device_body(eg_cmd_type_name(types[i]), "\"Alice@Corp.Example\"", "\"ApplF17A1\"");
        struct eg_command *c = expect_one(body);
        assert_int_equal(c->type, types[i]);
        assert_string_equal(c->id, "c1");
        assert_string_equal(c->mailbox, "Alice@Corp.Example");
        assert_string_equal(c->device_id, "ApplF17A1");
        assert_int_equal(c->activesync_enabled, -1);
        assert_false(c->policy_given);
        char *key = eg_command_mailbox_key(c);
        assert_string_equal(key, "alice@corp.example");
        eg_free(key);
        eg_command_free(c);
        eg_free(body);
    }
}

static void test_wipe_defaults_and_fields(void **state)
{
    struct eg_command *c = expect_one(
        "{\"id\":\"w1\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\",\"device_id\":\"D\"}");
    assert_true(c->account_only); /* the safe default */
    assert_int_equal(c->n_notify, 0);
    char *canon = eg_command_canonical(c);
    assert_string_equal(canon,
                        "{\"account_only\":true,\"device_id\":\"D\",\"id\":\"w1\","
                        "\"mailbox\":\"a@b.example\",\"notify\":[],\"type\":\"device.wipe\"}");
    eg_free(canon);
    eg_command_free(c);

    c = expect_one("{\"id\":\"w2\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\","
                   "\"device_id\":\"D\",\"account_only\":false,"
                   "\"notify\":[\"admin@corp.example\",\"sec@corp.example\"]}");
    assert_false(c->account_only);
    assert_int_equal(c->n_notify, 2);
    assert_string_equal(c->notify[0], "admin@corp.example");
    assert_string_equal(c->notify[1], "sec@corp.example");
    eg_command_free(c);
}

static void test_mailbox_set_good(void **state)
{
    struct eg_command *c = expect_one("{\"id\":\"m1\",\"type\":\"mailbox.set\",\"mailbox\":"
                                      "\"a@b.example\",\"activesync_enabled\":false}");
    assert_int_equal(c->activesync_enabled, 0);
    assert_false(c->policy_given);
    assert_null(c->policy);
    eg_command_free(c);

    c = expect_one("{\"id\":\"m2\",\"type\":\"mailbox.set\",\"mailbox\":\"a@b.example\","
                   "\"policy\":null}");
    assert_int_equal(c->activesync_enabled, -1);
    assert_true(c->policy_given);
    assert_null(c->policy);
    char *canon = eg_command_canonical(c);
    assert_string_equal(canon, "{\"id\":\"m2\",\"mailbox\":\"a@b.example\",\"policy\":null,"
                               "\"type\":\"mailbox.set\"}");
    eg_free(canon);
    eg_command_free(c);

    c = expect_one("{\"id\":\"m3\",\"type\":\"mailbox.set\",\"mailbox\":\"a@b.example\","
                   "\"activesync_enabled\":true,\"policy\":\"Sales Phones\"}");
    assert_int_equal(c->activesync_enabled, 1);
    assert_true(c->policy_given);
    assert_string_equal(c->policy, "Sales Phones");
    eg_command_free(c);
}

static void test_set_devices_good(void **state)
{
    struct eg_command *c =
        expect_one("{\"id\":\"s1\",\"type\":\"mailbox.set_devices\",\"mailbox\":\"d@corp.example\","
                   "\"allowed\":[\"DevX\",\"DevY\"],\"blocked\":[\"DevZ\"]}");
    assert_int_equal(c->n_allowed, 2);
    assert_string_equal(c->allowed[1], "DevY");
    assert_int_equal(c->n_blocked, 1);
    assert_string_equal(c->blocked[0], "DevZ");
    assert_null(c->device_id);
    eg_command_free(c);
    /* Empty declared sets clear both lists. */
    c = expect_one("{\"id\":\"s2\",\"type\":\"mailbox.set_devices\",\"mailbox\":"
                   "\"d@corp.example\",\"allowed\":[],\"blocked\":[]}");
    assert_int_equal(c->n_allowed, 0);
    assert_int_equal(c->n_blocked, 0);
    char *canon = eg_command_canonical(c);
    assert_string_equal(canon, "{\"allowed\":[],\"blocked\":[],\"id\":\"s2\",\"mailbox\":"
                               "\"d@corp.example\",\"type\":\"mailbox.set_devices\"}");
    eg_free(canon);
    eg_command_free(c);
}

static void test_org_and_inventory_good(void **state)
{
    static const char *const levels[] = {"allow", "block", "quarantine"};
    for (size_t i = 0; i < 3; i++) {
        char *body = eg_asprintf(
            "{\"id\":\"o%zu\",\"type\":\"org.set_default_access\",\"level\":\"%s\"}", i, levels[i]);
        struct eg_command *c = expect_one(body);
        assert_int_equal(c->level, (enum eg_access_level)i);
        assert_null(c->mailbox);
        assert_null(eg_command_mailbox_key(c));
        eg_command_free(c);
        eg_free(body);
    }
    struct eg_command *c = expect_one("{\"id\":\"i1\",\"type\":\"inventory.sync\"}");
    assert_int_equal(c->mode, EG_SYNC_QUICK);
    assert_null(c->mailbox);
    char *canon = eg_command_canonical(c);
    assert_string_equal(canon, "{\"id\":\"i1\",\"mode\":\"quick\",\"type\":\"inventory.sync\"}");
    eg_free(canon);
    eg_command_free(c);
    c = expect_one("{\"id\":\"i2\",\"type\":\"inventory.sync\",\"mode\":\"full\","
                   "\"mailbox\":\"X@Y.example\"}");
    assert_int_equal(c->mode, EG_SYNC_FULL);
    assert_string_equal(c->mailbox, "X@Y.example");
    char *key = eg_command_mailbox_key(c);
    assert_string_equal(key, "x@y.example");
    eg_free(key);
    eg_command_free(c);
}

/* ---- every type, bad ------------------------------------------------------------------------ */

static void test_common_fields_bad(void **state)
{
    expect_bad("{\"id\":5,\"type\":\"device.block\"}", EG_EINVAL, "id");
    expect_bad("{\"type\":\"device.block\",\"mailbox\":\"a@b.example\",\"device_id\":\"D\"}",
               EG_EINVAL, "id");
    expect_bad("{\"id\":\"bad id\",\"type\":\"device.block\"}", EG_EINVAL, "id");
    expect_bad("{\"id\":null,\"type\":\"device.block\"}", EG_EINVAL, "id");
    expect_bad("{\"id\":\"u-1\",\"type\":\"device.explode\"}", EG_EINVAL, "type");
    expect_bad("{\"id\":\"u-1\"}", EG_EINVAL, "type");
    expect_bad("{\"id\":\"u-1\",\"type\":[\"device.allow\"]}", EG_EINVAL, "type");
    expect_bad("{\"id\":\"u-1\",\"type\":\"device.block\",\"mailbox\":\"a@b.example\","
               "\"device_id\":\"D\",\"colour\":\"blue\"}",
               EG_EINVAL, "colour");
    /* Fields of another type are unknown here. */
    expect_bad("{\"id\":\"u-1\",\"type\":\"device.block\",\"mailbox\":\"a@b.example\","
               "\"device_id\":\"D\",\"account_only\":true}",
               EG_EINVAL, "account_only");
    expect_bad("{\"id\":\"u-1\",\"type\":\"org.set_default_access\",\"level\":\"block\","
               "\"mailbox\":\"a@b.example\"}",
               EG_EINVAL, "mailbox");
    char *long_id = repeat('i', 1024);
    char *body = eg_asprintf("{\"id\":\"%s\",\"type\":\"device.block\"}", long_id);
    expect_bad(body, EG_ELIMIT, "id");
    eg_free(body);
    eg_free(long_id);
    /* Embedded NUL in a string is refused by the parser (no silent cut). */
    struct parsed p = parse("{\"id\":\"a\\u0000b\",\"type\":\"device.block\"}");
    assert_int_equal(p.rc, EG_EPARSE);
}

static void test_device_fields_bad(void **state)
{
    static const enum eg_cmd_type types[] = {EG_CMD_DEVICE_ALLOW,       EG_CMD_DEVICE_BLOCK,
                                             EG_CMD_DEVICE_UNLIST,      EG_CMD_DEVICE_WIPE,
                                             EG_CMD_DEVICE_WIPE_CANCEL, EG_CMD_DEVICE_REMOVE};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const char *tn = eg_cmd_type_name(types[t]);
        char *b;
        b = eg_asprintf("{\"id\":\"c1\",\"type\":\"%s\",\"device_id\":\"D\"}", tn);
        expect_bad(b, EG_EINVAL, "mailbox");
        eg_free(b);
        b = eg_asprintf("{\"id\":\"c1\",\"type\":\"%s\",\"mailbox\":\"a@b.example\"}", tn);
        expect_bad(b, EG_EINVAL, "device_id");
        eg_free(b);
        b = device_body(tn, "\"a@b.example\"", "[\"x\"]");
        expect_bad(b, EG_EINVAL, "device_id");
        eg_free(b);
        b = device_body(tn, "\"a@b.example\"", "42");
        expect_bad(b, EG_EINVAL, "device_id");
        eg_free(b);
        b = device_body(tn, "{\"a\":1}", "\"D\"");
        expect_bad(b, EG_EINVAL, "mailbox");
        eg_free(b);
        b = device_body(tn, "\"\"", "\"D\"");
        expect_bad(b, EG_EINVAL, "mailbox");
        eg_free(b);
        /* Injection-looking values are data: accepted and kept byte for byte. */
        for (size_t i = 0; i < sizeof injections / sizeof injections[0]; i++) {
            if (!injections[i][0])
                continue;
            char *q = json_quote(injections[i]);
            b = device_body(tn, "\"a@b.example\"", q);
            struct eg_command *c = expect_one(b);
            assert_string_equal(c->device_id, injections[i]);
            eg_command_free(c);
            eg_free(b);
            b = device_body(tn, q, "\"D\"");
            c = expect_one(b);
            assert_string_equal(c->mailbox, injections[i]);
            eg_command_free(c);
            eg_free(b);
            eg_free(q);
        }
        /* 1 KB values: refused, naming the field. */
        char *big = repeat('x', 1024), *q = json_quote(big);
        b = device_body(tn, "\"a@b.example\"", q);
        struct parsed p = parse(b);
        assert_true(p.rc == EG_ELIMIT || p.rc == EG_EINVAL);
        assert_string_equal(p.err.field, "device_id");
        eg_free(b);
        b = device_body(tn, q, "\"D\"");
        p = parse(b);
        assert_true(p.rc == EG_ELIMIT || p.rc == EG_EINVAL);
        assert_string_equal(p.err.field, "mailbox");
        eg_free(b);
        eg_free(q);
        eg_free(big);
    }
    /* JSON escapes decode to the literal characters, which are kept as data. */
    struct eg_command *c = expect_one("{\"id\":\"c1\",\"type\":\"device.block\",\"mailbox\":"
                                      "\"alice@corp.example; Remove-Mailbox\",\"device_id\":"
                                      "\"dev\\u0060id\\n$(x)\"}");
    assert_string_equal(c->mailbox, "alice@corp.example; Remove-Mailbox");
    assert_string_equal(c->device_id, "dev`id\n$(x)");
    eg_command_free(c);
}

static void test_wipe_bad(void **state)
{
    const char *pre =
        "{\"id\":\"w\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\",\"device_id\":\"D\"";
    struct {
        const char *tail;
        int rc;
        const char *field;
    } cases[] = {
        {",\"account_only\":\"yes\"}", EG_EINVAL, "account_only"},
        {",\"account_only\":1}", EG_EINVAL, "account_only"},
        {",\"account_only\":null}", EG_EINVAL, "account_only"},
        {",\"notify\":\"admin@corp.example\"}", EG_EINVAL, "notify"},
        {",\"notify\":[\"admin@corp.example\",\"nope\"]}", EG_EINVAL, "notify[1]"},
        {",\"notify\":[5]}", EG_EINVAL, "notify[0]"},
        {",\"notify\":[\"a$(whoami)@x.example\"]}", EG_EINVAL, "notify[0]"},
        {",\"notify\":[\"a@b.example\",\"a@b.example\",\"a@b.example\",\"a@b.example\","
         "\"a@b.example\",\"a@b.example\",\"a@b.example\",\"a@b.example\",\"a@b.example\","
         "\"a@b.example\",\"a@b.example\"]}",
         EG_ELIMIT, "notify"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *b = eg_asprintf("%s%s", pre, cases[i].tail);
        expect_bad(b, cases[i].rc, cases[i].field);
        eg_free(b);
    }
    /* Exactly EG_MAX_NOTIFY is fine. */
    char *b = eg_asprintf("%s,\"notify\":[\"a@b.example\",\"a@b.example\",\"a@b.example\","
                          "\"a@b.example\",\"a@b.example\",\"a@b.example\",\"a@b.example\","
                          "\"a@b.example\",\"a@b.example\",\"a@b.example\"]}",
                          pre);
    struct eg_command *c = expect_one(b);
    assert_int_equal(c->n_notify, EG_MAX_NOTIFY);
    eg_command_free(c);
    eg_free(b);
}

static void test_mailbox_set_bad(void **state)
{
    const char *pre = "{\"id\":\"m\",\"type\":\"mailbox.set\",\"mailbox\":\"a@b.example\"";
    struct {
        const char *tail;
        const char *field;
    } cases[] = {
        {"}", "activesync_enabled"}, /* at least one of the two */
        {",\"activesync_enabled\":\"true\"}", "activesync_enabled"},
        {",\"activesync_enabled\":null}", "activesync_enabled"},
        {",\"policy\":5}", "policy"},
        {",\"policy\":[\"Default\"]}", "policy"},
        {",\"policy\":\"\"}", "policy"},
        {",\"policy\":\" Default\"}", "policy"},
        {",\"policy\":\"x'; Remove-Mailbox -Identity ceo\"}", "policy"},
        {",\"policy\":\"a$(whoami)\"}", "policy"},
        {",\"policy\":\"dev`id\"}", "policy"},
        {",\"policy\":\"dev\\nid\"}", "policy"},
        {",\"policy\":\"smart\\u2019quote\"}", "policy"},
        {",\"device_id\":\"D\",\"policy\":null}", "device_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *b = eg_asprintf("%s%s", pre, cases[i].tail);
        expect_bad(b, EG_EINVAL, cases[i].field);
        eg_free(b);
    }
    expect_bad("{\"id\":\"m\",\"type\":\"mailbox.set\",\"policy\":null}", EG_EINVAL, "mailbox");
    char *big = repeat('p', 1024);
    char *b = eg_asprintf("%s,\"policy\":\"%s\"}", pre, big);
    expect_bad(b, EG_ELIMIT, "policy");
    eg_free(b);
    eg_free(big);
}

static void test_set_devices_bad(void **state)
{
    const char *pre = "{\"id\":\"s\",\"type\":\"mailbox.set_devices\",\"mailbox\":\"a@b.example\"";
    struct {
        const char *tail;
        int rc;
        const char *field;
    } cases[] = {
        {",\"allowed\":[\"A\"]}", EG_EINVAL, "blocked"}, /* declarative: both required */
        {",\"blocked\":[\"A\"]}", EG_EINVAL, "allowed"},
        {",\"allowed\":\"A\",\"blocked\":[]}", EG_EINVAL, "allowed"},
        {",\"allowed\":[],\"blocked\":null}", EG_EINVAL, "blocked"},
        {",\"allowed\":[\"A\",\"\"],\"blocked\":[]}", EG_EINVAL, "allowed[1]"},
        {",\"allowed\":[],\"blocked\":[\"B\",[\"x\"]]}", EG_EINVAL, "blocked[1]"},
        {",\"allowed\":[\"A\",\"B\",\"a\"],\"blocked\":[]}", EG_EINVAL, "allowed[2]"},
        {",\"allowed\":[],\"blocked\":[\"x\",\"y\",\"Y\"]}", EG_EINVAL, "blocked[2]"},
        {",\"allowed\":[\"A\",\"B\"],\"blocked\":[\"C\",\"b\"]}", EG_EINVAL, "blocked[1]"},
        {",\"allowed\":[\"Q\"],\"blocked\":[\"Q\"]}", EG_EINVAL, "blocked[0]"},
        {",\"allowed\":[],\"blocked\":[],\"device_id\":\"D\"}", EG_EINVAL, "device_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *b = eg_asprintf("%s%s", pre, cases[i].tail);
        expect_bad(b, cases[i].rc, cases[i].field);
        eg_free(b);
    }
    /* The detail says why. */
    char *b = eg_asprintf("%s,\"allowed\":[\"Q\"],\"blocked\":[\"q\"]}", pre);
    struct parsed p = parse(b);
    assert_int_equal(p.rc, EG_EINVAL);
    assert_non_null(strstr(p.err.detail, "allowed[0]"));
    assert_non_null(strstr(p.err.detail, "both"));
    eg_free(b);

    /* Set size limit: EG_MAX_DEVICE_SET entries pass, one more is refused. */
    for (int over = 0; over <= 1; over++) {
        size_t n = EG_MAX_DEVICE_SET + (size_t)over;
        size_t cap = n * 12 + 256, len = 0;
        char *body = eg_malloc(cap);
        assert_non_null(body);
        len += (size_t)snprintf(body + len, cap - len, "%s,\"allowed\":[", pre);
        for (size_t i = 0; i < n; i++)
            len += (size_t)snprintf(body + len, cap - len, "%s\"D%zu\"", i ? "," : "", i);
        len += (size_t)snprintf(body + len, cap - len, "],\"blocked\":[\"Z\"]}");
        p = parse(body);
        if (over) {
            assert_int_equal(p.rc, EG_ELIMIT);
            assert_string_equal(p.err.field, "allowed");
        } else {
            assert_int_equal(p.rc, 0);
            assert_int_equal(p.cmds[0]->n_allowed, EG_MAX_DEVICE_SET);
            parsed_free(&p);
        }
        eg_free(body);
    }
}

static void test_org_and_inventory_bad(void **state)
{
    expect_bad("{\"id\":\"o\",\"type\":\"org.set_default_access\",\"level\":\"maybe\"}", EG_EINVAL,
               "level");
    expect_bad("{\"id\":\"o\",\"type\":\"org.set_default_access\",\"level\":\"Allow\"}", EG_EINVAL,
               "level");
    expect_bad("{\"id\":\"o\",\"type\":\"org.set_default_access\"}", EG_EINVAL, "level");
    expect_bad("{\"id\":\"o\",\"type\":\"org.set_default_access\",\"level\":true}", EG_EINVAL,
               "level");
    expect_bad("{\"id\":\"i\",\"type\":\"inventory.sync\",\"mode\":\"slow\"}", EG_EINVAL, "mode");
    expect_bad("{\"id\":\"i\",\"type\":\"inventory.sync\",\"mode\":1}", EG_EINVAL, "mode");
    expect_bad("{\"id\":\"i\",\"type\":\"inventory.sync\",\"mailbox\":\"\"}", EG_EINVAL, "mailbox");
    expect_bad("{\"id\":\"i\",\"type\":\"inventory.sync\",\"device_id\":\"D\"}", EG_EINVAL,
               "device_id");
}

/* ---- bodies --------------------------------------------------------------------------------- */

static void test_malformed_bodies(void **state)
{
    struct parsed p = parse("{\"id\": ");
    assert_int_equal(p.rc, EG_EPARSE);
    assert_non_null(strstr(p.err.detail, "line 1, column"));
    assert_string_equal(p.err.field, "");

    p = parse("{\"id\":\"a\",\n\"type\" \"device.block\"}");
    assert_int_equal(p.rc, EG_EPARSE);
    assert_non_null(strstr(p.err.detail, "invalid JSON at line 2"));

    p = parse("");
    assert_int_equal(p.rc, EG_EPARSE);
    p = parse_n(NULL, 0, 10);
    assert_int_equal(p.rc, EG_EPARSE);

    expect_bad("[1,2]", EG_EINVAL, "");
    expect_bad("[]", EG_EINVAL, "");

    /* Trailing garbage, duplicate keys, NUL bytes, invalid UTF-8. */
    assert_int_equal(parse("{\"id\":\"a\",\"type\":\"inventory.sync\"} x").rc, EG_EPARSE);
    p = parse("{\"id\":\"a\",\"id\":\"b\",\"type\":\"inventory.sync\"}");
    assert_int_equal(p.rc, EG_EPARSE);
    static const char nul[] = "{\"id\":\"a\0\",\"type\":\"inventory.sync\"}";
    assert_int_equal(parse_n(nul, sizeof nul - 1, 10).rc, EG_EPARSE);
    static const char nul2[] = "{\"id\":\"a\",\"type\":\"inventory.sync\"}\0";
    assert_int_equal(parse_n(nul2, sizeof nul2 - 1, 10).rc, EG_EPARSE);
    assert_int_equal(parse("{\"id\":\"a\xff\",\"type\":\"inventory.sync\"}").rc, EG_EPARSE);
    assert_int_equal(parse("{\"id\":\"a\xc0\xaf\",\"type\":\"inventory.sync\"}").rc, EG_EPARSE);
    /* A body given with an explicit length is not read past it. */
    const char *two = "{\"id\":\"a\",\"type\":\"inventory.sync\"}{\"junk\"";
    p = parse_n(two, strlen("{\"id\":\"a\",\"type\":\"inventory.sync\"}"), 10);
    assert_int_equal(p.rc, 0);
    parsed_free(&p);
}

static char *nested(int depth, const char *inner)
{
    /* {"id":"d","type":"inventory.sync","x":[[[...inner...]]]} with depth levels in total */
    size_t cap = (size_t)depth * 2 + strlen(inner) + 128;
    char *s = eg_malloc(cap);
    assert_non_null(s);
    size_t len = (size_t)snprintf(s, cap, "{\"id\":\"d\",\"type\":\"inventory.sync\",\"x\":");
    for (int i = 1; i < depth; i++)
        s[len++] = '[';
    len += (size_t)snprintf(s + len, cap - len, "%s", inner);
    for (int i = 1; i < depth; i++)
        s[len++] = ']';
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    char *b = nested(EG_MAX_JSON_DEPTH + 1, "1");
    struct parsed p = parse(b);
    assert_int_equal(p.rc, EG_ELIMIT);
    assert_string_equal(p.err.field, "");
    eg_free(b);
    /* At the limit the parser runs; the (unknown) field "x" is what is refused. */
    b = nested(EG_MAX_JSON_DEPTH, "1");
    p = parse(b);
    assert_int_equal(p.rc, EG_EINVAL);
    assert_string_equal(p.err.field, "x");
    eg_free(b);
    /* Brackets inside strings do not count, escaped quotes do not end strings. */
    b = nested(2, "\"[[[[[[[[[[[[{{{{{{{{{{\\\"[[[[[[[[[[\"");
    p = parse(b);
    assert_int_equal(p.rc, EG_EINVAL);
    assert_string_equal(p.err.field, "x");
    eg_free(b);
    /* Deep garbage is refused before parsing. */
    char deep[4096];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    p = parse(deep);
    assert_int_equal(p.rc, EG_ELIMIT);
    /* A batch nests commands one level deeper; a wipe with notify is well within the limit. */
    p = parse("{\"commands\":[{\"id\":\"w\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\","
              "\"device_id\":\"D\",\"notify\":[\"x@y.example\"]}]}");
    assert_int_equal(p.rc, 0);
    parsed_free(&p);
}

static char *batch_of(size_t n, const char *id_prefix)
{
    size_t cap = n * 120 + 64, len = 0;
    char *s = eg_malloc(cap);
    assert_non_null(s);
    len += (size_t)snprintf(s, cap, "{\"commands\":[");
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s%zu", id_prefix, i);
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"id\":\"%s\",\"type\":\"device.block\",\"mailbox\":"
                                "\"a@b.example\",\"device_id\":\"D%zu\"}",
                                i ? "," : "", id, i);
    }
    snprintf(s + len, cap - len, "]}");
    return s;
}

static void test_batches(void **state)
{
    char *b = batch_of(3, "b-");
    struct parsed p = parse(b);
    assert_int_equal(p.rc, 0);
    assert_true(p.batch);
    assert_int_equal(p.n, 3);
    assert_string_equal(p.cmds[2]->id, "b-2");
    assert_string_equal(p.cmds[2]->device_id, "D2");
    parsed_free(&p);
    eg_free(b);

    /* A batch of one is still a batch. */
    b = batch_of(1, "one-");
    p = parse(b);
    assert_int_equal(p.rc, 0);
    assert_true(p.batch);
    assert_int_equal(p.n, 1);
    parsed_free(&p);
    eg_free(b);

    /* Error field paths name the item. */
    expect_bad("{\"commands\":[{\"id\":\"wt-5\",\"type\":\"device.block\",\"mailbox\":"
               "\"a@b.example\",\"device_id\":\"D\"},{\"id\":\"wt-6\",\"type\":\"device.allow\","
               "\"mailbox\":\"\",\"device_id\":\"D\"}]}",
               EG_EINVAL, "commands[1].mailbox");
    expect_bad("{\"commands\":[{\"id\":\"a\",\"type\":\"mailbox.set_devices\",\"mailbox\":"
               "\"a@b.example\",\"allowed\":[\"ok\",\"\"],\"blocked\":[]}]}",
               EG_EINVAL, "commands[0].allowed[1]");
    expect_bad("{\"commands\":[{\"id\":\"a\",\"type\":\"inventory.sync\"},{\"id\":\"b\","
               "\"type\":\"inventory.sync\",\"colour\":1}]}",
               EG_EINVAL, "commands[1].colour");
    expect_bad("{\"commands\":[{\"id\":\"a\",\"type\":\"inventory.sync\"},5]}", EG_EINVAL,
               "commands[1]");
    expect_bad("{\"commands\":[]}", EG_EINVAL, "commands");
    expect_bad("{\"commands\":{}}", EG_EINVAL, "commands");
    expect_bad("{\"commands\":null}", EG_EINVAL, "commands");
    expect_bad("{\"commands\":[{\"id\":\"a\",\"type\":\"inventory.sync\"}],\"id\":\"x\"}",
               EG_EINVAL, "id");

    /* Duplicate ids within a batch: the later one is named. */
    expect_bad("{\"commands\":[{\"id\":\"a\",\"type\":\"inventory.sync\"},{\"id\":\"b\","
               "\"type\":\"inventory.sync\"},{\"id\":\"a\",\"type\":\"inventory.sync\"}]}",
               EG_EINVAL, "commands[2].id");
    expect_bad("{\"commands\":[{\"id\":\"z\",\"type\":\"inventory.sync\"},{\"id\":\"b\","
               "\"type\":\"inventory.sync\"},{\"id\":\"b\",\"type\":\"inventory.sync\"},"
               "{\"id\":\"z\",\"type\":\"inventory.sync\"}]}",
               EG_EINVAL, "commands[2].id");
    /* Ids are case-sensitive keys. */
    p = parse("{\"commands\":[{\"id\":\"a\",\"type\":\"inventory.sync\"},{\"id\":\"A\","
              "\"type\":\"inventory.sync\"}]}");
    assert_int_equal(p.rc, 0);
    parsed_free(&p);
}

static void test_batch_limit(void **state)
{
    char *b = batch_of(EG_MAX_BATCH, "id-");
    struct parsed p = parse(b);
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.n, EG_MAX_BATCH);
    parsed_free(&p);
    eg_free(b);

    b = batch_of(EG_MAX_BATCH + 1, "id-");
    p = parse(b);
    assert_int_equal(p.rc, EG_ELIMIT);
    assert_string_equal(p.err.field, "commands");
    eg_free(b);

    /* The configured max_batch applies. */
    b = batch_of(6, "id-");
    p = parse_n(b, strlen(b), 5);
    assert_int_equal(p.rc, EG_ELIMIT);
    assert_string_equal(p.err.field, "commands");
    p = parse_n(b, strlen(b), 6);
    assert_int_equal(p.rc, 0);
    parsed_free(&p);
    eg_free(b);

    /* Duplicate detection across a full batch. */
    b = batch_of(EG_MAX_BATCH, "id-");
    char *dup = strstr(b, "\"id-999\"");
    assert_non_null(dup);
    memcpy(dup, "\"id-500\"", 8);
    p = parse(b);
    assert_int_equal(p.rc, EG_EINVAL);
    assert_string_equal(p.err.field, "commands[999].id");
    eg_free(b);
}

/* ---- canonical ------------------------------------------------------------------------------ */

static const char *const all_types_bodies[] = {
    "{\"id\":\"t-allow\",\"type\":\"device.allow\",\"mailbox\":\"T@corp.example\","
    "\"device_id\":\"DevA\"}",
    "{\"id\":\"t-block\",\"type\":\"device.block\",\"mailbox\":\"t@corp.example\","
    "\"device_id\":\"DevB\"}",
    "{\"id\":\"t-unlist\",\"type\":\"device.unlist\",\"mailbox\":\"t@corp.example\","
    "\"device_id\":\"DevC\"}",
    "{\"id\":\"t-wipe\",\"type\":\"device.wipe\",\"mailbox\":\"t@corp.example\","
    "\"device_id\":\"DevD\",\"account_only\":false,\"notify\":[\"admin@corp.example\"]}",
    "{\"id\":\"t-wipe2\",\"type\":\"device.wipe\",\"mailbox\":\"t@corp.example\","
    "\"device_id\":\"DevD\"}",
    "{\"id\":\"t-wipe-cancel\",\"type\":\"device.wipe_cancel\",\"mailbox\":\"t@corp.example\","
    "\"device_id\":\"DevD\"}",
    "{\"id\":\"t-remove\",\"type\":\"device.remove\",\"mailbox\":\"t@corp.example\","
    "\"device_id\":\"DevE\"}",
    "{\"id\":\"t-mbx\",\"type\":\"mailbox.set\",\"mailbox\":\"t@corp.example\","
    "\"activesync_enabled\":true,\"policy\":null}",
    "{\"id\":\"t-mbx2\",\"type\":\"mailbox.set\",\"mailbox\":\"t@corp.example\","
    "\"policy\":\"Sales \xc3\x9c"
    "bersee\"}",
    "{\"id\":\"t-mbx3\",\"type\":\"mailbox.set\",\"mailbox\":\"t@corp.example\","
    "\"activesync_enabled\":false}",
    "{\"id\":\"t-setdev\",\"type\":\"mailbox.set_devices\",\"mailbox\":\"decl@corp.example\","
    "\"allowed\":[\"DevY\",\"DevX\"],\"blocked\":[\"DevZ\"]}",
    "{\"id\":\"t-org\",\"type\":\"org.set_default_access\",\"level\":\"quarantine\"}",
    "{\"id\":\"t-sync\",\"type\":\"inventory.sync\",\"mode\":\"full\"}",
    "{\"id\":\"t-sync2\",\"type\":\"inventory.sync\",\"mailbox\":\"t@corp.example\"}",
};

static void test_canonical_set_order_independent(void **state)
{
    struct eg_command *a =
        expect_one("{\"id\":\"s\",\"type\":\"mailbox.set_devices\",\"mailbox\":\"d@corp.example\","
                   "\"allowed\":[\"DevY\",\"devx\",\"DevW\"],\"blocked\":[\"B2\",\"B1\"]}");
    struct eg_command *b =
        expect_one("{\"id\":\"s\",\"type\":\"mailbox.set_devices\",\"mailbox\":\"d@corp.example\","
                   "\"allowed\":[\"devx\",\"DevW\",\"DevY\"],\"blocked\":[\"B1\",\"B2\"]}");
    char *ca = eg_command_canonical(a), *cb = eg_command_canonical(b);
    assert_string_equal(ca, cb);
    assert_non_null(strstr(ca, "\"allowed\":[\"DevW\",\"devx\",\"DevY\"]"));
    eg_free(ca);
    eg_free(cb);
    eg_command_free(a);
    eg_command_free(b);
}

static void test_canonical_round_trip(void **state)
{
    for (size_t i = 0; i < sizeof all_types_bodies / sizeof all_types_bodies[0]; i++) {
        struct eg_command *a = expect_one(all_types_bodies[i]);
        char *canon = eg_command_canonical(a);
        assert_non_null(canon);
        /* Compact, sorted: starts with the alphabetically first key and has no spaces outside
         * strings (the policy has one inside). */
        assert_int_equal(canon[0], '{');
        assert_null(strstr(canon, ": "));
        assert_null(strstr(canon, ", "));
        struct eg_command *b = expect_one(canon);
        if (!cmd_equal(a, b))
            fail_msg("round trip changed %s -> %s", all_types_bodies[i], canon);
        char *canon2 = eg_command_canonical(b);
        assert_string_equal(canon, canon2);

        /* eg_command_from_json directly, with a path. */
        json_error_t jerr;
        json_t *j = json_loads(canon, 0, &jerr);
        assert_non_null(j);
        struct eg_command *c = NULL;
        struct eg_verr err;
        assert_int_equal(eg_command_from_json(j, "commands[7]", &c, &err), 0);
        assert_true(cmd_equal(a, c));
        /* Keys are sorted in the canonical text. */
        const char *prev = "";
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            assert_true(strcmp(prev, key) < 0);
            prev = key;
        }
        json_decref(j);
        eg_command_free(c);
        eg_free(canon2);
        eg_free(canon);
        eg_command_free(a);
        eg_command_free(b);
    }
}

static void test_canonical_key_order_independent(void **state)
{
    struct eg_command *a = expect_one("{\"id\":\"idem-1\",\"type\":\"device.block\",\"mailbox\":"
                                      "\"alice@corp.example\",\"device_id\":\"ApplIdem1\"}");
    struct eg_command *b =
        expect_one("{ \"device_id\":\"ApplIdem1\", \"type\":\"device.block\",\n \"mailbox\":"
                   "\"alice@corp.example\",\"id\":\"idem-1\"}");
    char *ca = eg_command_canonical(a), *cb = eg_command_canonical(b);
    assert_string_equal(ca, cb);
    assert_string_equal(ca, "{\"device_id\":\"ApplIdem1\",\"id\":\"idem-1\",\"mailbox\":"
                            "\"alice@corp.example\",\"type\":\"device.block\"}");
    eg_free(ca);
    eg_free(cb);
    eg_command_free(a);
    eg_command_free(b);

    /* Defaults are explicit: an omitted default equals the default given explicitly. */
    a = expect_one("{\"id\":\"w\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\","
                   "\"device_id\":\"D\"}");
    b = expect_one("{\"notify\":[],\"account_only\":true,\"id\":\"w\",\"type\":\"device.wipe\","
                   "\"mailbox\":\"a@b.example\",\"device_id\":\"D\"}");
    ca = eg_command_canonical(a);
    cb = eg_command_canonical(b);
    assert_string_equal(ca, cb);
    eg_free(ca);
    eg_free(cb);
    eg_command_free(a);
    eg_command_free(b);
    a = expect_one("{\"id\":\"s\",\"type\":\"inventory.sync\"}");
    b = expect_one("{\"mode\":\"quick\",\"type\":\"inventory.sync\",\"id\":\"s\"}");
    ca = eg_command_canonical(a);
    cb = eg_command_canonical(b);
    assert_string_equal(ca, cb);
    eg_free(ca);
    eg_free(cb);
    eg_command_free(a);
    eg_command_free(b);

    /* Different content -> different canonical text. */
    a = expect_one("{\"id\":\"w\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\","
                   "\"device_id\":\"D\"}");
    b = expect_one("{\"id\":\"w\",\"type\":\"device.wipe\",\"mailbox\":\"a@b.example\","
                   "\"device_id\":\"D\",\"account_only\":false}");
    ca = eg_command_canonical(a);
    cb = eg_command_canonical(b);
    assert_string_not_equal(ca, cb);
    eg_free(ca);
    eg_free(cb);
    eg_command_free(a);
    eg_command_free(b);
    assert_null(eg_command_canonical(NULL));
}

static void test_from_json_direct(void **state)
{
    struct eg_command *c = NULL;
    struct eg_verr err;
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s}", "id", "x", "type", "device.allow", "mailbox", "a@b.example",
                  "device_id", "0123456789012345678901234567890123456789012345678901234567890123X");
    assert_int_equal(eg_command_from_json(j, "commands[3]", &c, &err), EG_ELIMIT);
    assert_null(c);
    assert_string_equal(err.field, "commands[3].device_id");
    assert_non_null(strstr(err.detail, "at most 64"));
    json_decref(j);

    /* A programmatically built string with an embedded NUL is refused, not cut. */
    j = json_pack("{s:s,s:s,s:s,s:s%}", "id", "x", "type", "device.allow", "mailbox", "a@b.example",
                  "device_id", "ab\0; evil", (size_t)9);
    assert_non_null(j);
    assert_int_equal(eg_command_from_json(j, "", &c, &err), EG_EINVAL);
    assert_string_equal(err.field, "device_id");
    json_decref(j);

    j = json_integer(3);
    assert_int_equal(eg_command_from_json(j, "", &c, &err), EG_EINVAL);
    assert_string_equal(err.field, "");
    json_decref(j);
    assert_int_equal(eg_command_from_json(NULL, "commands[0]", &c, &err), EG_EINVAL);
    assert_string_equal(err.field, "commands[0]");
    eg_command_free(NULL);
    eg_commands_free(NULL, 3);
}

/* ---- allocation failure --------------------------------------------------------------------- */

static char *all_types_batch(void)
{
    size_t n = sizeof all_types_bodies / sizeof all_types_bodies[0];
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < n; i++)
        cap += strlen(all_types_bodies[i]) + 1;
    char *s = eg_malloc(cap);
    assert_non_null(s);
    len += (size_t)snprintf(s, cap, "{\"commands\":[");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", all_types_bodies[i]);
    snprintf(s + len, cap - len, "]}");
    return s;
}

static void test_alloc_failure(void **state)
{
    char *body = all_types_batch();
    size_t nt = sizeof all_types_bodies / sizeof all_types_bodies[0];
    struct parsed ref = parse(body);
    assert_int_equal(ref.rc, 0);
    assert_int_equal(ref.n, nt);

    bool completed = false;
    long n;
    for (n = 0; n < 100000 && !completed; n++) {
        struct eg_command **cmds = NULL;
        size_t cnt = 0;
        bool batch = false;
        struct eg_verr err;
        eg_alloc_fail_after(n);
        int rc = eg_command_parse_body(body, strlen(body), EG_MAX_BATCH, &cmds, &cnt, &batch, &err);
        long failures = eg_alloc_failures();
        eg_alloc_fail_after(-1);
        if (rc != 0 && rc != EG_ENOMEM)
            fail_msg("n=%ld: rc %d (%s: %s)", n, rc, err.field, err.detail);
        if (rc == EG_ENOMEM) {
            assert_null(cmds);
            assert_true(failures > 0);
            continue;
        }
        assert_int_equal(cnt, nt);
        for (size_t i = 0; i < cnt; i++)
            assert_true(cmd_equal(cmds[i], ref.cmds[i]));
        eg_commands_free(cmds, cnt);
        completed = failures == 0;
    }
    assert_true(completed);
    assert_true(n > 20); /* the loop really went through the allocations */

    /* Canonical and mailbox key under failure: NULL or the right text. */
    for (size_t i = 0; i < nt; i++) {
        char *want = eg_command_canonical(ref.cmds[i]);
        char *want_key = eg_command_mailbox_key(ref.cmds[i]);
        assert_non_null(want);
        for (long k = 0; k < 200; k++) {
            eg_alloc_fail_after(k);
            char *got = eg_command_canonical(ref.cmds[i]);
            char *key = eg_command_mailbox_key(ref.cmds[i]);
            long failures = eg_alloc_failures();
            eg_alloc_fail_after(-1);
            if (got)
                assert_string_equal(got, want);
            if (key)
                assert_string_equal(key, want_key);
            eg_free(got);
            eg_free(key);
            if (failures == 0)
                break;
        }
        eg_free(want);
        eg_free(want_key);
    }
    parsed_free(&ref);
    eg_free(body);

    /* Failures on the error paths too. */
    const char *bad = "{\"commands\":[{\"id\":\"a\",\"type\":\"mailbox.set_devices\",\"mailbox\":"
                      "\"a@b.example\",\"allowed\":[\"A\",\"B\"],\"blocked\":[\"b\"]}]}";
    for (long k = 0; k < 500; k++) {
        struct eg_command **cmds = NULL;
        size_t cnt = 0;
        bool batch = false;
        struct eg_verr err;
        eg_alloc_fail_after(k);
        int rc = eg_command_parse_body(bad, strlen(bad), 10, &cmds, &cnt, &batch, &err);
        long failures = eg_alloc_failures();
        eg_alloc_fail_after(-1);
        assert_true(rc == EG_ENOMEM || rc == EG_EINVAL);
        assert_null(cmds);
        if (rc == EG_EINVAL) {
            assert_string_equal(err.field, "commands[0].blocked[0]");
            if (failures == 0)
                break;
        }
    }
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_valid_command_id),
        cmocka_unit_test(test_valid_device_id),
        cmocka_unit_test(test_valid_mailbox),
        cmocka_unit_test(test_valid_smtp),
        cmocka_unit_test(test_valid_policy_name),
        cmocka_unit_test(test_device_types_good),
        cmocka_unit_test(test_wipe_defaults_and_fields),
        cmocka_unit_test(test_mailbox_set_good),
        cmocka_unit_test(test_set_devices_good),
        cmocka_unit_test(test_org_and_inventory_good),
        cmocka_unit_test(test_common_fields_bad),
        cmocka_unit_test(test_device_fields_bad),
        cmocka_unit_test(test_wipe_bad),
        cmocka_unit_test(test_mailbox_set_bad),
        cmocka_unit_test(test_set_devices_bad),
        cmocka_unit_test(test_org_and_inventory_bad),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_batch_limit),
        cmocka_unit_test(test_canonical_round_trip),
        cmocka_unit_test(test_canonical_set_order_independent),
        cmocka_unit_test(test_canonical_key_order_independent),
        cmocka_unit_test(test_from_json_direct),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
