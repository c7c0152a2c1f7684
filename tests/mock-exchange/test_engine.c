/* test_engine.c - the mock Exchange's cmdlet engine (engine.h) through its public API: every
 * cmdlet in each profile, the identity forms, the access-state precedence, the wipe state
 * machine, list edits, ResultSize, -Filter, confirmation and -WhatIf, faults, RBAC, the call
 * recorder, JSON rendering, seeding determinism, and streaming 200,000 devices in bounded memory
 * (MX_SCALE_DEVICES overrides the size; smaller under AddressSanitizer). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/util.h"
#include "engine.h"
#include "exchange/clixml.h"
#include "exchange/clixml_json.h"
#include "exchange/psrp_objects.h"

#if defined(__SANITIZE_ADDRESS__)
#define MX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MX_SANITIZED 1
#endif
#endif
#ifndef MX_SANITIZED
#define MX_SANITIZED 0
#endif

/* ================================================================ helpers */

#define MAX_KEPT 64

struct cap {
    size_t n_obj;
    struct eg_ps_value *obj[MAX_KEPT]; /* the first MAX_KEPT objects */
    size_t n_warn;
    char *warn[16];
    size_t n_err;
    struct mx_error err[8];
    bool keep_none;      /* free every object at once (streaming tests) */
    size_t max_live;     /* highest eg_ps_live_values() seen in the object callback */
    size_t stop_after;   /* return EG_ESHUTDOWN after this many objects (0: never) */
    struct mx_org *nest; /* call mx_invoke from inside the callback */
    int nest_rc;
};

static int cb_obj(void *ctx, struct eg_ps_value *o)
{
    struct cap *c = ctx;
    size_t live = eg_ps_live_values();
    if (live > c->max_live)
        c->max_live = live;
    c->n_obj++;
    if (c->nest) {
        struct mx_error t;
        c->nest_rc =
            mx_invoke(c->nest, "Get-ActiveSyncOrganizationSettings", NULL, 0, NULL, NULL, &t);
    }
    if (!c->keep_none && c->n_obj <= MAX_KEPT)
        c->obj[c->n_obj - 1] = o;
    else
        eg_ps_value_free(o);
    if (c->stop_after && c->n_obj >= c->stop_after)
        return EG_ESHUTDOWN;
    return 0;
}

static int cb_warn(void *ctx, const char *text)
{
    struct cap *c = ctx;
    if (c->n_warn < 16)
        c->warn[c->n_warn] = eg_strdup(text);
    c->n_warn++;
    return 0;
}

static int cb_err(void *ctx, const struct mx_error *e)
{
    struct cap *c = ctx;
    if (c->n_err < 8)
        c->err[c->n_err] = *e;
    c->n_err++;
    return 0;
}

static const struct mx_output_ops OPS = {cb_obj, cb_warn, cb_err};

static void cap_free(struct cap *c)
{
    for (size_t i = 0; i < c->n_obj && i < MAX_KEPT; i++)
        eg_ps_value_free(c->obj[i]);
    for (size_t i = 0; i < c->n_warn && i < 16; i++)
        eg_free(c->warn[i]);
    memset(c, 0, sizeof *c);
}

struct tp {
    const char *name;
    struct eg_ps_value *v;
};

/* Run cmdlet with the parameters (values are freed afterwards); c is reset first. */
static int run_(struct mx_org *org, const char *cmdlet, struct cap *c, struct mx_error *t,
                const struct tp *p, size_t n)
{
    struct mx_param mp[32];
    assert_true(n <= 32);
    for (size_t i = 0; i < n; i++) {
        mp[i].name = p[i].name;
        mp[i].value = p[i].v;
    }
    bool keep_none = c->keep_none;
    size_t stop = c->stop_after;
    struct mx_org *nest = c->nest;
    cap_free(c);
    c->keep_none = keep_none;
    c->stop_after = stop;
    c->nest = nest;
    int rc = mx_invoke(org, cmdlet, mp, n, &OPS, c, t);
    for (size_t i = 0; i < n; i++)
        eg_ps_value_free(p[i].v);
    return rc;
}

#define TPS(...)               ((const struct tp[]){__VA_ARGS__})
#define NTP(...)               (sizeof(TPS(__VA_ARGS__)) / sizeof(struct tp))
#define RUN(o, cmd, c, t, ...) run_(o, cmd, c, t, TPS(__VA_ARGS__), NTP(__VA_ARGS__))
#define RUN0(o, cmd, c, t)     run_(o, cmd, c, t, NULL, 0)
#define S(x)                   eg_ps_new_string(x)
#define B(x)                   eg_ps_new_bool(x)
#define NIL                    eg_ps_new_nil()
#define SW                     NULL
#define NOCONFIRM                                                                                  \
    {                                                                                              \
        "Confirm", B(false)                                                                        \
    }

static struct eg_ps_value *strs(const char *a, const char *b)
{
    const char *v[2] = {a, b};
    return eg_ps_new_string_array(v, b ? 2 : 1);
}

/* @{Add=..; Remove=..} as pypsrp sends it (eg_ps_new_add_remove lives in psrp_objects). */
static struct eg_ps_value *addrem(const char *add, const char *rem)
{
    struct eg_ps_value *h = eg_ps_new_hashtable();
    if (add)
        assert_int_equal(eg_ps_obj_add_entry(h, S("Add"), strs(add, NULL)), 0);
    if (rem)
        assert_int_equal(eg_ps_obj_add_entry(h, S("Remove"), S(rem)), 0);
    return h;
}

static const char *pstr(const struct eg_ps_value *o, const char *name)
{
    const char *s = NULL;
    if (eg_ps_get_string(eg_ps_obj_prop(o, name), &s, NULL) != 0)
        return NULL;
    return s;
}

static bool pbool(const struct eg_ps_value *o, const char *name)
{
    bool b = false;
    assert_int_equal(eg_ps_get_bool(eg_ps_obj_prop(o, name), &b), 0);
    return b;
}

static bool pnil(const struct eg_ps_value *o, const char *name)
{
    const struct eg_ps_value *v = eg_ps_obj_prop(o, name);
    return v && v->kind == EG_PS_NIL;
}

static size_t plen(const struct eg_ps_value *o, const char *name)
{
    return eg_ps_list_len(eg_ps_obj_prop(o, name));
}

static const char *pitem(const struct eg_ps_value *o, const char *name, size_t i)
{
    const char *s = NULL;
    if (eg_ps_get_string(eg_ps_list_item(eg_ps_obj_prop(o, name), i), &s, NULL) != 0)
        return NULL;
    return s;
}

static struct mx_org *org_new(enum mx_profile p, size_t mbx, size_t dev)
{
    struct mx_org_opts o = {.profile = p, .seed = 42, .mailboxes = mbx, .devices = dev};
    struct mx_org *org = NULL;
    assert_int_equal(mx_org_new(&o, &org), 0);
    return org;
}

/* Sync a device (creating it) with the given type/model. */
static struct mx_sync_outcome sync_dev(struct mx_org *org, const char *mbx, const char *id,
                                       const char *type, const char *model, enum mx_wipe_ack ack)
{
    struct mx_sync_spec sp = {.device_type = type, .model = model, .ack = ack};
    struct mx_sync_outcome o;
    assert_int_equal(mx_org_device_sync(org, mbx, id, &sp, &o), 0);
    return o;
}

static json_t *dev_state(struct mx_org *org, const char *mbx, const char *id)
{
    json_t *j = NULL;
    assert_int_equal(mx_state_device(org, mbx, id, &j), 0);
    return j;
}

static const char *jget(json_t *j, const char *path)
{
    /* "a.b": one level of nesting */
    char key[64];
    const char *dot = strchr(path, '.');
    if (dot) {
        snprintf(key, sizeof key, "%.*s", (int)(dot - path), path);
        return json_string_value(json_object_get(json_object_get(j, key), dot + 1));
    }
    return json_string_value(json_object_get(j, path));
}

static void wipe_status_is(struct mx_org *org, const char *mbx, const char *id, const char *want)
{
    json_t *j = dev_state(org, mbx, id);
    assert_string_equal(jget(j, "wipe.status"), want);
    json_decref(j);
}

static bool starts_with(const char *s, const char *p)
{
    return s && strncmp(s, p, strlen(p)) == 0;
}

static bool is_hex8_comma(const char *s)
{
    for (int i = 0; i < 8; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return s[8] == ',';
}

/* ================================================================ seeding and org */

static void test_seed_determinism(void **state)
{
    (void)state;
    struct mx_org_opts o = {
        .profile = MX_PROFILE_2016, .seed = 7, .mailboxes = 50, .devices = 120, .seed_lists = true};
    struct mx_org *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(mx_org_new(&o, &a), 0);
    assert_int_equal(mx_org_new(&o, &b), 0);
    o.seed = 8;
    assert_int_equal(mx_org_new(&o, &c), 0);
    assert_int_equal(mx_org_device_count(a), 120);
    assert_int_equal(mx_org_mailbox_count(a), 50);
    struct cap ca = {0}, cb = {0}, cc = {0};
    struct mx_error t;
    assert_int_equal(RUN(a, "Get-MobileDevice", &ca, &t, {"ResultSize", S("Unlimited")}), 0);
    assert_int_equal(RUN(b, "Get-MobileDevice", &cb, &t, {"ResultSize", S("Unlimited")}), 0);
    assert_int_equal(RUN(c, "Get-MobileDevice", &cc, &t, {"ResultSize", S("Unlimited")}), 0);
    assert_int_equal(ca.n_obj, 120);
    size_t same_c = 0;
    for (size_t i = 0; i < MAX_KEPT; i++) {
        /* the same options give the same objects (identities, GUIDs, times) */
        assert_true(eg_ps_value_equal(ca.obj[i], cb.obj[i]));
        same_c += eg_ps_value_equal(ca.obj[i], cc.obj[i]);
    }
    assert_true(same_c < MAX_KEPT / 2);
    json_t *ja = NULL, *jb = NULL;
    assert_int_equal(mx_state_mailbox(a, "user0007", &ja), 0);
    assert_int_equal(mx_state_mailbox(b, "user0007", &jb), 0);
    assert_true(json_equal(ja, jb));
    /* mailbox 7 got device 7 first (j < mailboxes) */
    assert_true(json_array_size(json_object_get(ja, "devices")) >= 1);
    json_decref(ja);
    json_decref(jb);
    /* seed_lists put some devices on lists */
    size_t listed = 0;
    for (int i = 1; i <= 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "user%04d", i);
        assert_int_equal(mx_state_mailbox(a, id, &ja), 0);
        listed += json_array_size(json_object_get(ja, "allowed")) +
                  json_array_size(json_object_get(ja, "blocked"));
        json_decref(ja);
    }
    assert_true(listed > 0);
    cap_free(&ca);
    cap_free(&cb);
    cap_free(&cc);
    mx_org_free(a);
    mx_org_free(b);
    mx_org_free(c);

    /* bad options */
    struct mx_org *x = NULL;
    struct mx_org_opts bad = {.profile = MX_PROFILE_2016, .devices = 3};
    assert_int_equal(mx_org_new(&bad, &x), EG_EINVAL);
    assert_int_equal(mx_org_new(NULL, &x), EG_EINVAL);
    mx_org_free(NULL);
    enum mx_profile p;
    assert_int_equal(mx_profile_parse("2019", &p), 0);
    assert_int_equal(p, MX_PROFILE_2016);
    assert_int_equal(mx_profile_parse("online", &p), 0);
    assert_int_equal(mx_profile_parse("2007", &p), EG_EINVAL);
    assert_string_equal(mx_profile_name(MX_PROFILE_2013), "2013");
}

/* ================================================================ identities (§3) */

static void test_mailbox_identities(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 10, 10);
    struct cap c = {0};
    struct mx_error t;
    json_t *st = NULL;
    assert_int_equal(mx_state_mailbox(org, "user0003", &st), 0);
    char guid[40], guid_n[40] = "", guid_b[48];
    snprintf(guid, sizeof guid, "%s", json_string_value(json_object_get(st, "guid")));
    size_t k = 0;
    for (const char *p = guid; *p; p++)
        if (*p != '-')
            guid_n[k++] = *p;
    snprintf(guid_b, sizeof guid_b, "{%s}", guid);
    json_decref(st);

    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0003")}), 0);
    assert_int_equal(c.n_obj, 1);
    const char *dn = pstr(c.obj[0], "DistinguishedName");
    const char *ldn = pstr(c.obj[0], "LegacyExchangeDN");
    char dnb[256], ldnb[256];
    snprintf(dnb, sizeof dnb, "%s", dn);
    snprintf(ldnb, sizeof ldnb, "%s", ldn);
    assert_string_equal(pstr(c.obj[0], "Identity"), "contoso.example/Users/User 0003");
    assert_string_equal(dnb, "CN=User 0003,CN=Users,DC=contoso,DC=example");

    const char *forms[] = {"User 0003", /* Name / DisplayName */
                           "USER0003",  /* Alias / SamAccountName, any case */
                           dnb,
                           "contoso.example/Users/User 0003",
                           "CONTOSO\\user0003",
                           "user0003@contoso.example",
                           "smtp:user0003@contoso.example",
                           "user0003@mail.contoso.example", /* proxy address */
                           guid,
                           guid_n,
                           guid_b,
                           ldnb};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        assert_int_equal(RUN(org, "get-casmailbox", &c, &t, {"identity", S(forms[i])}), 0);
        assert_int_equal(c.n_err, 0);
        assert_int_equal(c.n_obj, 1);
        assert_string_equal(pstr(c.obj[0], "SamAccountName"), "user0003");
    }
    /* positional identity */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {NULL, S("user0004")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "Name"), "User 0004");
    /* wildcard */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user000*")}), 0);
    assert_int_equal(c.n_obj, 9);
    /* $null returns everything */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", NIL}), 0);
    assert_int_equal(c.n_obj, 10);
    assert_int_equal(c.n_err, 0);

    /* unknown: ManagementObjectNotFoundException, non-terminating, exact text */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("nobody@contoso.example")}),
                     0);
    assert_int_equal(c.n_obj, 0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].message,
                        "The operation couldn't be performed because object "
                        "'nobody@contoso.example' couldn't be found on 'dc01.contoso.example'.");
    assert_string_equal(c.err[0].exception_type,
                        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException");
    assert_true(starts_with(c.err[0].fqeid, "[Server=EXCH01,RequestId="));
    assert_non_null(
        strstr(c.err[0].fqeid, "] [FailureCategory=Cmdlet-ManagementObjectNotFoundException] "));
    assert_non_null(strstr(c.err[0].fqeid, ",Microsoft.Exchange.Management.RecipientTasks."
                                           "GetCASMailbox"));
    assert_string_equal(c.err[0].category_message,
                        "NotSpecified: (:) [Get-CASMailbox], ManagementObjectNotFoundException");
    assert_string_equal(c.err[0].rest_code, "NotFound");
    assert_int_equal(c.err[0].http_status, 404);
    assert_string_equal(c.err[0].details_message, "");

    /* -ErrorAction Stop: the same error terminates */
    assert_int_equal(
        RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("nobody")}, {"ErrorAction", S("Stop")}),
        EG_EREMOTE);
    assert_int_equal(c.n_err, 0);
    assert_non_null(strstr(t.message, "'nobody'"));
    /* -ErrorAction SilentlyContinue: dropped */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("nobody")},
                         {"ea", eg_ps_new_enum("System.Management.Automation.ActionPreference",
                                               "SilentlyContinue", 0)}),
                     0);
    assert_int_equal(c.n_err, 0);

    /* ambiguous: two mailboxes share a proxy address */
    const char *px[] = {"shared@contoso.example"};
    struct mx_mailbox_spec s1 = {.alias = "amb1", .proxies = px, .n_proxies = 1};
    struct mx_mailbox_spec s2 = {.alias = "amb2", .proxies = px, .n_proxies = 1};
    assert_int_equal(mx_org_add_mailbox(org, &s1), 0);
    assert_int_equal(mx_org_add_mailbox(org, &s2), 0);
    assert_int_equal(mx_org_add_mailbox(org, &s2), EG_EINVAL); /* alias taken */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("shared@contoso.example")}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].message, "The operation couldn't be performed because "
                                          "'shared@contoso.example' matches multiple entries.");
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("amb2")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "PrimarySmtpAddress"), "amb2@contoso.example");

    /* a deserialized object as identity is refused (§12) */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")}), 0);
    struct eg_ps_value *obj = eg_ps_value_ref(c.obj[0]);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", obj}), EG_EREMOTE);
    assert_string_equal(
        t.message,
        "Cannot process argument transformation on parameter 'Mailbox'. Cannot convert the "
        "\"contoso.example/Users/User 0001\" value of type "
        "\"Deserialized.Microsoft.Exchange.Data.Directory.Management.CASMailbox\" to type "
        "\"Microsoft.Exchange.Configuration.Tasks.MailboxIdParameter\".");
    assert_true(starts_with(t.fqeid, "ParameterArgumentTransformationError,"));
    assert_int_equal(t.category, 6);
    cap_free(&c);
    mx_org_free(org);
}

static void test_online_and_2010_shapes(void **state)
{
    (void)state;
    struct cap c = {0};
    struct mx_error t;
    /* Online: ExternalDirectoryObjectId is an identity; errors carry the Ex<hex>|Type|Message */
    struct mx_org *org = org_new(MX_PROFILE_ONLINE, 5, 5);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0002")}), 0);
    assert_int_equal(c.n_obj, 1);
    char ext[64];
    snprintf(ext, sizeof ext, "%s", pstr(c.obj[0], "ExternalDirectoryObjectId"));
    assert_int_equal(strlen(ext), 36);
    assert_string_equal(pstr(c.obj[0], "Identity"), "user0002");
    assert_null(eg_ps_obj_prop(c.obj[0], "OriginatingServer"));
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S(ext)}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "Name"), "user0002");
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("nobody@contoso.test")}), 0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].details_message,
                        "Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
                        "ManagementObjectNotFoundException|The operation couldn't be performed "
                        "because object 'nobody@contoso.test' couldn't be found on "
                        "'EURPR01A001DC01.EURPR01A001.prod.outlook.com'.");
    assert_true(starts_with(c.err[0].fqeid, "[Server=AM6PR01MB1234,RequestId="));
    /* devices: <name>\ExchangeActiveSyncDevices\<type>§<id> */
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}), 0);
    assert_true(c.n_obj >= 1);
    assert_true(starts_with(pstr(c.obj[0], "Identity"), "user0001\\ExchangeActiveSyncDevices\\"));
    assert_non_null(eg_ps_obj_prop(c.obj[0], "ExchangeObjectId"));
    /* no Get-ExchangeServer in EXO; Get-OrganizationConfig reports the version */
    assert_int_equal(RUN0(org, "Get-ExchangeServer", &c, &t), EG_EREMOTE);
    assert_string_equal(t.fqeid, "CommandNotFoundException");
    assert_int_equal(RUN0(org, "Get-OrganizationConfig", &c, &t), 0);
    assert_string_equal(pstr(c.obj[0], "AdminDisplayVersion"), "Version 15.20 (Build 7762.25)");
    cap_free(&c);
    mx_org_free(org);

    /* 2010: FQEID without the server prefix; ActiveSync cmdlet names */
    org = org_new(MX_PROFILE_2010, 5, 5);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("x")}), 0);
    assert_int_equal(c.n_err, 1);
    assert_true(is_hex8_comma(c.err[0].fqeid));
    assert_string_equal(c.err[0].fqeid + 9,
                        "Microsoft.Exchange.Management.RecipientTasks.GetCASMailbox");
    assert_int_equal(RUN0(org, "Get-MobileDevice", &c, &t), EG_EREMOTE);
    assert_string_equal(t.message,
                        "The term 'Get-MobileDevice' is not recognized as the name of a cmdlet, "
                        "function, script file, or operable program. Check the spelling of the "
                        "name, or if a path was included, verify that the path is correct and "
                        "try again.");
    assert_string_equal(t.exception_type, "System.Management.Automation.CommandNotFoundException");
    assert_string_equal(t.category_message,
                        "ObjectNotFound: (Get-MobileDevice:String) [], CommandNotFoundException");
    assert_int_equal(t.category, 13);
    assert_int_equal(RUN0(org, "Get-ActiveSyncDevice", &c, &t), 0);
    assert_int_equal(c.n_obj, 5);
    assert_int_equal(c.n_warn, 0); /* not deprecated in 2010 */
    assert_string_equal(eg_ps_type_name(c.obj[0], 0),
                        "Microsoft.Exchange.Data.Directory.Management.ActiveSyncDevice");
    assert_null(eg_ps_obj_prop(c.obj[0], "ClientType"));
    assert_int_equal(RUN(org, "Clear-ActiveSyncDevice", &c, &t,
                         {"Identity", S(pstr(c.obj[0], "Identity"))}, {"AccountOnly", SW},
                         NOCONFIRM),
                     EG_EREMOTE);
    assert_string_equal(t.message,
                        "A parameter cannot be found that matches parameter name 'AccountOnly'.");
    assert_int_equal(RUN0(org, "Get-ExchangeServer", &c, &t), 0);
    assert_string_equal(pstr(c.obj[0], "AdminDisplayVersion"), "Version 14.3 (Build 123.4)");
    cap_free(&c);
    mx_org_free(org);

    /* 2013: *-ActiveSyncDevice* still there, with the deprecation warning */
    org = org_new(MX_PROFILE_2013, 5, 5);
    assert_int_equal(RUN0(org, "Get-ActiveSyncDevice", &c, &t), 0);
    assert_int_equal(c.n_warn, 1);
    assert_true(starts_with(c.warn[0], "The Get-ActiveSyncDevice cmdlet will be removed in a "
                                       "future version of Exchange. Use the Get-MobileDevice"));
    assert_int_equal(RUN0(org, "Get-ExchangeServer", &c, &t), 0);
    assert_string_equal(pstr(c.obj[0], "AdminDisplayVersion"), "Version 15.0 (Build 1497.2)");
    cap_free(&c);
    mx_org_free(org);

    /* a configured AdminDisplayVersion */
    struct mx_org_opts o = {.profile = MX_PROFILE_2016,
                            .mailboxes = 1,
                            .admin_display_version = "Version 15.2 (Build 1544.4)"};
    assert_int_equal(mx_org_new(&o, &org), 0);
    assert_int_equal(RUN0(org, "Get-ExchangeServer", &c, &t), 0);
    assert_string_equal(pstr(c.obj[0], "AdminDisplayVersion"), "Version 15.2 (Build 1544.4)");
    assert_string_equal(eg_ps_type_name(c.obj[0], 0),
                        "Microsoft.Exchange.Data.Directory.Management.ExchangeServer");
    cap_free(&c);
    mx_org_free(org);
}

static void test_device_identities(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 3, 3);
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0002")}), 0);
    assert_int_equal(c.n_obj, 1);
    const struct eg_ps_value *d = c.obj[0];
    char ident[768], guid[40], dn[512], name[256], bs[512];
    snprintf(ident, sizeof ident, "%s", pstr(d, "Identity"));
    uint8_t g[16];
    assert_int_equal(eg_ps_get_guid(eg_ps_obj_prop(d, "Guid"), g), 0);
    snprintf(guid, sizeof guid,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", g[0], g[1],
             g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13], g[14],
             g[15]);
    snprintf(dn, sizeof dn, "%s", pstr(d, "DistinguishedName"));
    snprintf(name, sizeof name, "%s", pstr(d, "Name"));
    /* Name = <DeviceType>§<DeviceId> (U+00A7) unless an Outlook REST partnership */
    char want_name[256];
    if (strcmp(pstr(d, "ClientType"), "Outlook") == 0)
        snprintf(want_name, sizeof want_name, "REST\xC2\xA7Outlook\xC2\xA7%s", pstr(d, "DeviceId"));
    else
        snprintf(want_name, sizeof want_name, "%s\xC2\xA7%s", pstr(d, "DeviceType"),
                 pstr(d, "DeviceId"));
    assert_string_equal(name, want_name);
    assert_string_equal(eg_ps_to_string(d), name);
    assert_true(starts_with(ident, "contoso.example/Users/User 0002/ExchangeActiveSyncDevices/"));
    snprintf(bs, sizeof bs, "user0002\\ExchangeActiveSyncDevices\\%s", name);
    assert_true(starts_with(dn, "CN="));
    const char *forms[] = {ident, guid, dn, bs};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Identity", S(forms[i])}), 0);
        assert_int_equal(c.n_err, 0);
        assert_int_equal(c.n_obj, 1);
        assert_string_equal(pstr(c.obj[0], "Name"), name);
    }
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t,
                         {"Identity", S("user0002\\ExchangeActiveSyncDevices\\iPhone\xC2\xA7X")}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_true(starts_with(c.err[0].message, "The operation couldn't be performed because "
                                              "object 'user0002\\ExchangeActiveSyncDevices\\"));
    /* -Mailbox and -Identity together: no parameter set */
    assert_int_equal(
        RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0002")}, {"Identity", S(guid)}),
        EG_EREMOTE);
    assert_string_equal(t.message,
                        "Parameter set cannot be resolved using the specified named parameters.");
    assert_true(starts_with(t.fqeid, "AmbiguousParameterSet,"));
    /* a mailbox without devices: empty, no error */
    struct mx_mailbox_spec sp = {.alias = "nodev"};
    assert_int_equal(mx_org_add_mailbox(org, &sp), 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("nodev")}), 0);
    assert_int_equal(c.n_obj + c.n_err, 0);
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ output shape */

static void test_output_shape(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 2);
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")}), 0);
    const struct eg_ps_value *m = c.obj[0];
    assert_string_equal(eg_ps_type_name(m, 0),
                        "Microsoft.Exchange.Data.Directory.Management.CASMailbox");
    assert_string_equal(eg_ps_to_string(m), "User 0001");
    assert_int_equal(m->u.obj->n_ms, 0); /* data in Props */
    assert_true(m->u.obj->n_props > 20);
    const struct eg_ps_value *l = eg_ps_obj_prop(m, "ActiveSyncAllowedDeviceIDs");
    assert_non_null(l);
    assert_true(starts_with(eg_ps_type_name(l, 0),
                            "Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String"));
    assert_int_equal(eg_ps_list_len(l), 0);
    assert_string_equal(eg_ps_type_name(eg_ps_obj_prop(m, "EmailAddresses"), 0),
                        "Microsoft.Exchange.Data.ProxyAddressCollection");
    assert_string_equal(pitem(m, "EmailAddresses", 0), "SMTP:user0001@contoso.example");
    assert_string_equal(pitem(m, "EmailAddresses", 1), "smtp:user0001@mail.contoso.example");
    assert_int_equal(eg_ps_obj_prop(m, "WhenChangedUTC")->kind, EG_PS_DT);
    assert_int_equal(eg_ps_obj_prop(m, "Guid")->kind, EG_PS_G);
    assert_string_equal(pstr(m, "ActiveSyncMailboxPolicy"), "Default");
    assert_true(pbool(m, "ActiveSyncMailboxPolicyIsDefaulted"));
    assert_true(pbool(m, "ActiveSyncEnabled"));
    assert_true(pbool(m, "HasActiveSyncDevicePartnership"));
    assert_string_equal(pstr(m, "ExchangeVersion"), "0.20 (15.0.0.0)");
    assert_string_equal(pstr(m, "OriginatingServer"), "dc01.contoso.example");
    /* every object encodes to CLIXML and decodes back equal (§ survives) */
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}), 0);
    const struct eg_ps_value *d = c.obj[0];
    assert_string_equal(eg_ps_type_name(d, 0),
                        "Microsoft.Exchange.Data.Directory.Management.MobileDevice");
    assert_int_equal(eg_ps_obj_prop(d, "FirstSyncTime")->kind, EG_PS_DT);
    assert_true(pnil(d, "DeviceAccessControlRule"));
    assert_string_equal(pstr(d, "DeviceAccessState"), "Allowed");
    assert_string_equal(pstr(d, "DeviceAccessStateReason"), "Global");
    assert_string_equal(pstr(d, "UserDisplayName"), "contoso.example/Users/User 0001");
    char *xml = NULL;
    size_t len = 0;
    assert_int_equal(eg_clixml_encode(d, &xml, &len), 0);
    assert_non_null(strstr(xml, "\xC2\xA7"));
    assert_non_null(
        strstr(xml, "<T>Microsoft.Exchange.Data.Directory.Management.MobileDevice</T>"));
    struct eg_ps_value *back = NULL;
    assert_int_equal(eg_clixml_decode(xml, len, &back, NULL), 0);
    assert_true(eg_ps_value_equal(back, d));
    eg_ps_value_free(back);
    eg_free(xml);
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ ResultSize, Filter, SortBy */

static void test_result_size(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 300, 1500);
    struct cap c = {.keep_none = true};
    struct mx_error t;
    static const char warn[] = "There are more results available than are currently displayed. "
                               "To view them, increase the value for the ResultSize parameter.";
    assert_int_equal(RUN0(org, "Get-MobileDevice", &c, &t), 0);
    assert_int_equal(c.n_obj, 1000);
    assert_int_equal(c.n_warn, 1);
    assert_string_equal(c.warn[0], warn);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"ResultSize", S("unlimited")}), 0);
    assert_int_equal(c.n_obj, 1500);
    assert_int_equal(c.n_warn, 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"ResultSize", eg_ps_new_i32(1500)}), 0);
    assert_int_equal(c.n_obj, 1500);
    assert_int_equal(c.n_warn, 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"ResultSize", S("1499")}), 0);
    assert_int_equal(c.n_obj, 1499);
    assert_int_equal(c.n_warn, 1);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"ResultSize", eg_ps_new_i32(10)}), 0);
    assert_int_equal(c.n_obj, 10);
    assert_int_equal(c.n_warn, 1);
    /* -WarningAction SilentlyContinue hides it */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"ResultSize", eg_ps_new_i32(10)},
                         {"WarningAction", S("SilentlyContinue")}),
                     0);
    assert_int_equal(c.n_warn, 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"ResultSize", S("lots")}), EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "CannotConvertArgumentNoMessage,"));
    assert_true(starts_with(t.message, "Cannot bind parameter 'ResultSize'. Cannot convert value "
                                       "\"lots\" to type"));
    /* the statistics cmdlets have no ResultSize */
    assert_int_equal(RUN(org, "Get-MobileDeviceStatistics", &c, &t, {"Mailbox", S("user0001")},
                         {"ResultSize", S("Unlimited")}),
                     EG_EREMOTE);
    assert_string_equal(t.message,
                        "A parameter cannot be found that matches parameter name 'ResultSize'.");
    /* a callback that stops: the cmdlet ends with its code */
    c.stop_after = 5;
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"ResultSize", S("Unlimited")}),
                     EG_ESHUTDOWN);
    assert_int_equal(c.n_obj, 5);
    c.stop_after = 0;
    cap_free(&c);
    mx_org_free(org);
}

static void test_filter_and_sort(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 40, 200);
    struct cap c = {0}, all = {.keep_none = true};
    struct mx_error t;
    assert_int_equal(RUN(org, "Get-MobileDevice", &all, &t, {"ResultSize", S("Unlimited")}), 0);
    assert_int_equal(all.n_obj, 200);
    struct cap ip = {.keep_none = true}, and = {.keep_none = true}, nt = {.keep_none = true};
    assert_int_equal(RUN(org, "Get-MobileDevice", &ip, &t, {"Filter", S("DeviceType -eq 'iPhone'")},
                         {"ResultSize", S("Unlimited")}),
                     0);
    assert_true(ip.n_obj > 0 && ip.n_obj < 200);
    assert_int_equal(RUN(org, "Get-MobileDevice", &nt, &t,
                         {"Filter", S("-not (DeviceType -eq 'iPhone')")},
                         {"ResultSize", S("Unlimited")}),
                     0);
    assert_int_equal(ip.n_obj + nt.n_obj, 200);
    assert_int_equal(RUN(org, "Get-MobileDevice", &and, &t,
                         {"Filter", S("DeviceType -like 'iP*' -and DeviceOS -like 'iPadOS*'")},
                         {"ResultSize", S("Unlimited")}),
                     0);
    assert_true(and.n_obj > 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t,
                         {"Filter", S("DeviceType -eq 'iPad' -or DeviceType -eq 'iPhone'")}),
                     0);
    for (size_t i = 0; i < c.n_obj && i < MAX_KEPT; i++) {
        const char *ty = pstr(c.obj[i], "DeviceType");
        assert_true(strcmp(ty, "iPad") == 0 || strcmp(ty, "iPhone") == 0);
    }
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t,
                         {"Filter", S("FirstSyncTime -gt '2000-01-01' -and DeviceAccessState -eq "
                                      "'Allowed'")}),
                     0);
    assert_true(c.n_obj > 0);
    /* bad syntax and unknown properties fail the pipeline */
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Filter", S("DeviceType -eq")}),
                     EG_EREMOTE);
    assert_true(starts_with(t.message, "Cannot bind parameter 'Filter' to the target. Exception "
                                       "setting \"Filter\": \"Invalid filter syntax."));
    assert_true(starts_with(t.fqeid, "ParameterBindingFailed,"));
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Filter", S("Colour -eq 'red'")}),
                     EG_EREMOTE);
    assert_non_null(strstr(t.message, "\"Colour\" is not a recognized filterable property."));
    /* lists have contains-semantics */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0005")},
                         {"ActiveSyncAllowedDeviceIDs", strs("FLTDEV1", "FLTDEV2")}),
                     0);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t,
                         {"Filter", S("ActiveSyncAllowedDeviceIDs -eq 'fltdev2'")}),
                     0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "SamAccountName"), "user0005");
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t,
                         {"Filter", S("HasActiveSyncDevicePartnership -eq $true -and -not "
                                      "DisplayName -like 'CAS_{*'")},
                         {"ResultSize", S("Unlimited")}),
                     0);
    assert_int_equal(c.n_obj, 40);
    assert_int_equal(
        RUN(org, "Get-CASMailbox", &c, &t, {"Filter", S("ActiveSyncEnabled -eq $false")}), 0);
    assert_int_equal(c.n_obj, 0);
    /* SortBy */
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"SortBy", S("DeviceId")},
                         {"ResultSize", eg_ps_new_i32(50)}),
                     0);
    assert_int_equal(c.n_obj, 50);
    for (size_t i = 1; i < 50; i++)
        assert_true(strcasecmp(pstr(c.obj[i - 1], "DeviceId"), pstr(c.obj[i], "DeviceId")) <= 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"SortBy", S("ClientType")}), EG_EREMOTE);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"SortBy", S("DisplayName")},
                         {"ResultSize", S("Unlimited")}),
                     0);
    assert_string_equal(pstr(c.obj[0], "DisplayName"), "User 0001");
    /* client-type switches */
    struct cap eas = {.keep_none = true}, rest = {.keep_none = true};
    assert_int_equal(
        RUN(org, "Get-MobileDevice", &eas, &t, {"ActiveSync", SW}, {"ResultSize", S("Unlimited")}),
        0);
    assert_int_equal(
        RUN(org, "Get-MobileDevice", &rest, &t, {"RestApi", SW}, {"ResultSize", S("Unlimited")}),
        0);
    assert_true(rest.n_obj > 0);
    assert_int_equal(eas.n_obj + rest.n_obj, 200);
    cap_free(&eas);
    cap_free(&rest);
    cap_free(&ip);
    cap_free(&and);
    cap_free(&nt);
    cap_free(&all);
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ Set-CASMailbox (§4) */

static json_t *mbx_state(struct mx_org *org, const char *id)
{
    json_t *j = NULL;
    assert_int_equal(mx_state_mailbox(org, id, &j), 0);
    return j;
}

static void lists_are(struct mx_org *org, const char *id, const char *which, size_t n, ...)
{
    json_t *j = mbx_state(org, id);
    json_t *l = json_object_get(j, which);
    assert_int_equal(json_array_size(l), n);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(l, i)), va_arg(ap, const char *));
    va_end(ap);
    json_decref(j);
}

static void test_set_casmailbox(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 3, 0);
    struct cap c = {0};
    struct mx_error t;
    /* replace */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", strs("ApplA", "androidB")}),
                     0);
    assert_int_equal(c.n_obj + c.n_err + c.n_warn, 0); /* no output */
    lists_are(org, "user0001", "allowed", 2, "ApplA", "androidB");
    /* a single string replaces too */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncBlockedDeviceIDs", S("ApplBAD")}),
                     0);
    lists_are(org, "user0001", "blocked", 1, "ApplBAD");
    /* @{Add; Remove}: keeps the rest; matching is case-insensitive, storage as given */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", addrem("ApplC", "appla")}),
                     0);
    lists_are(org, "user0001", "allowed", 2, "androidB", "ApplC");
    /* Remove of an absent value is a silent no-op */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", addrem(NULL, "NotThere")}),
                     0);
    assert_int_equal(c.n_err, 0);
    lists_are(org, "user0001", "allowed", 2, "androidB", "ApplC");
    /* strict duplicates: Add of a present value fails, nothing changes */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", addrem("APPLC", NULL)},
                         {"ActiveSyncEnabled", B(false)}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].message, "The value \"APPLC\" is already present in the "
                                          "collection.");
    assert_string_equal(c.err[0].exception_type, "System.InvalidOperationException");
    json_t *j = mbx_state(org, "user0001");
    assert_true(json_is_true(json_object_get(j, "activesync_enabled")));
    json_decref(j);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0002")},
                         {"ActiveSyncAllowedDeviceIDs", strs("X1", "x1")}),
                     0);
    assert_int_equal(c.n_err, 1);
    /* lenient: ignored */
    struct mx_behaviour b;
    mx_org_get_behaviour(org, &b);
    assert_true(b.strict_duplicates);
    b.strict_duplicates = false;
    mx_org_set_behaviour(org, &b);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", addrem("APPLC", NULL)}),
                     0);
    assert_int_equal(c.n_err, 0);
    lists_are(org, "user0001", "allowed", 2, "androidB", "ApplC");
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0002")},
                         {"ActiveSyncAllowedDeviceIDs", strs("X1", "x1")}),
                     0);
    lists_are(org, "user0002", "allowed", 1, "X1");
    /* $null clears */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", NIL}),
                     0);
    lists_are(org, "user0001", "allowed", 0);
    /* an invalid hashtable key */
    struct eg_ps_value *h = eg_ps_new_hashtable();
    assert_int_equal(eg_ps_obj_add_entry(h, S("Append"), S("Z")), 0);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", h}),
                     EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "ParameterArgumentTransformationError,"));
    /* other settings; policy $null vs "Default" */
    assert_int_equal(mx_org_add_policy(org, "Strict"), 0);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncMailboxPolicy", S("strict")},
                         {"ActiveSyncSuppressReadReceipt", B(true)},
                         {"ActiveSyncDebugLogging", eg_ps_new_i32(1)}),
                     0);
    j = mbx_state(org, "user0003");
    assert_string_equal(jget(j, "policy"), "Strict");
    assert_true(json_is_false(json_object_get(j, "policy_defaulted")));
    assert_true(json_is_true(json_object_get(j, "suppress_read_receipt")));
    assert_true(json_is_true(json_object_get(j, "debug_logging")));
    json_decref(j);
    /* Get-CASMailbox shows debug logging only with -ActiveSyncDebugLogging */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0003")}), 0);
    assert_false(pbool(c.obj[0], "ActiveSyncDebugLogging"));
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncDebugLogging", SW}),
                     0);
    assert_true(pbool(c.obj[0], "ActiveSyncDebugLogging"));
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncMailboxPolicy", NIL}),
                     0);
    j = mbx_state(org, "user0003");
    assert_string_equal(jget(j, "policy"), "Default");
    assert_true(json_is_true(json_object_get(j, "policy_defaulted")));
    json_decref(j);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncMailboxPolicy", S("Default")}),
                     0);
    j = mbx_state(org, "user0003");
    assert_true(json_is_false(json_object_get(j, "policy_defaulted")));
    json_decref(j);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncMailboxPolicy", S("NoSuchPolicy")}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_non_null(strstr(c.err[0].message, "'NoSuchPolicy'"));
    /* a string is not a Boolean */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncEnabled", S("yes")}),
                     EG_EREMOTE);
    assert_string_equal(t.message,
                        "Cannot process argument transformation on parameter 'ActiveSyncEnabled'. "
                        "Cannot convert value \"System.String\" to type \"System.Boolean\". "
                        "Boolean parameters accept only Boolean values and numbers, such as $True, "
                        "$False, 1 or 0.");
    /* the optional no-change warning */
    b.noop_warning = true;
    mx_org_set_behaviour(org, &b);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncEnabled", B(true)}),
                     0);
    assert_int_equal(c.n_warn, 1);
    assert_string_equal(c.warn[0], "The command completed successfully but no settings of "
                                   "'contoso.example/Users/User 0003' have been modified.");
    /* the list cap */
    b.list_cap = 2;
    mx_org_set_behaviour(org, &b);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncBlockedDeviceIDs", strs("A", "B")}),
                     0);
    assert_int_equal(c.n_err, 0);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncBlockedDeviceIDs", addrem("C", NULL)}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].exception_type,
                        "Microsoft.Exchange.Data.Directory.ADOperationException");
    lists_are(org, "user0003", "blocked", 2, "A", "B");
    /* Identity is mandatory, and may not be $null */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"ActiveSyncEnabled", B(true)}),
                     EG_EREMOTE);
    assert_string_equal(t.message, "Cannot process command because of one or more missing "
                                   "mandatory parameters: Identity.");
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", NIL}), EG_EREMOTE);
    assert_string_equal(t.message, "Cannot bind argument to parameter 'Identity' because it is "
                                   "null.");
    /* Set-CASMailbox has no Confirm prompt by default, but -Confirm asks (and fails) */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncEnabled", B(false)}, {"Confirm", SW}),
                     EG_EREMOTE);
    assert_true(starts_with(t.message, "A command that prompts the user failed because the host "
                                       "program or the command type does not support user "
                                       "interaction."));
    /* -WhatIf changes nothing */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0003")},
                         {"ActiveSyncEnabled", B(false)}, {"WhatIf", SW}),
                     0);
    j = mbx_state(org, "user0003");
    assert_true(json_is_true(json_object_get(j, "activesync_enabled")));
    json_decref(j);
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ binding */

static void test_binding_errors(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 2);
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(RUN0(org, "Get-Nothing", &c, &t), EG_EREMOTE);
    assert_string_equal(t.fqeid, "CommandNotFoundException");
    assert_string_equal(t.target, "Get-Nothing");
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Colour", S("red")}), EG_EREMOTE);
    assert_string_equal(t.message, "A parameter cannot be found that matches parameter name "
                                   "'Colour'.");
    assert_string_equal(t.exception_type, "System.Management.Automation.ParameterBindingException");
    assert_string_equal(t.fqeid,
                        "NamedParameterNotFound,Microsoft.Exchange.Management.RecipientTasks."
                        "GetCASMailbox");
    assert_string_equal(t.category_message,
                        "InvalidArgument: (:) [Get-CASMailbox], ParameterBindingException");
    assert_string_equal(t.activity, "Get-CASMailbox");
    assert_int_equal(t.category, 5);
    /* names: case-insensitive, a leading dash / trailing colon accepted, unique prefixes */
    assert_int_equal(RUN(org, "GET-CASMAILBOX", &c, &t, {"-IDENTITY:", S("user0001")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Ident", S("user0001")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_int_equal(
        RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")}, {"ActiveSyncAllowed", NIL}),
        0);
    assert_int_equal(
        RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")}, {"ActiveSync", NIL}),
        EG_EREMOTE);
    assert_true(starts_with(t.message, "Parameter cannot be processed because the parameter name "
                                       "'ActiveSync' is ambiguous. Possible matches include: "
                                       "-ActiveSyncAllowedDeviceIDs -ActiveSyncBlockedDeviceIDs"));
    assert_true(starts_with(t.fqeid, "AmbiguousParameter,"));
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"identity", S("user0002")}),
                     EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "ParameterAlreadyBound,"));
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {NULL, S("user0001")}, {NULL, S("extra")}),
                     EG_EREMOTE);
    assert_string_equal(t.message,
                        "A positional parameter cannot be found that accepts argument 'extra'.");
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", SW}), EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "MissingArgument,"));
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("")}), EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "ParameterArgumentValidationErrorEmptyStringNotAllowed,"));
    /* common parameters are accepted everywhere */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"Verbose", SW}, {"OutVariable", S("x")}, {"wa", S("Continue")}),
                     0);
    assert_int_equal(c.n_obj, 1);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"ErrorAction", S("Sometimes")}),
                     EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "CannotConvertArgumentNoMessage,"));
    /* parameters absent in a profile */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"HasActiveSyncDevicePartnership", B(false)}),
                     EG_EREMOTE);
    assert_int_equal(
        RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}, {"UniversalOutlook", SW}),
        0);
    /* invalid arguments of mx_invoke itself */
    assert_int_equal(mx_invoke(NULL, "Get-CASMailbox", NULL, 0, NULL, NULL, &t), EG_EINVAL);
    assert_int_equal(mx_invoke(org, NULL, NULL, 0, NULL, NULL, &t), EG_EINVAL);
    assert_int_equal(mx_invoke(org, "Get-CASMailbox", NULL, 1, NULL, NULL, &t), EG_EINVAL);
    assert_int_equal(mx_invoke(org, "Get-CASMailbox", NULL, 0, NULL, NULL, NULL), EG_EINVAL);
    /* NULL ops discard the output */
    assert_int_equal(mx_invoke(org, "Get-CASMailbox", NULL, 0, NULL, NULL, &t), 0);
    /* the script refusal */
    mx_error_scripts_not_allowed(&t);
    assert_string_equal(t.fqeid, "ScriptsNotAllowed");
    assert_int_equal(t.category, 17);
    assert_string_equal(t.category_reason, "ParseException");
    assert_string_equal(t.message, "The syntax is not supported by this runspace. This can occur "
                                   "if the runspace is in no-language mode.");
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ precedence (§10.3) */

static void access_is(struct mx_org *org, const char *mbx, const char *id, const char *st,
                      const char *reason)
{
    json_t *j = dev_state(org, mbx, id);
    assert_string_equal(jget(j, "access_state"), st);
    assert_string_equal(jget(j, "access_reason"), reason);
    json_decref(j);
}

static void new_rule(struct mx_org *org, const char *q, const char *ch, const char *lv)
{
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(RUN(org, "New-ActiveSyncDeviceAccessRule", &c, &t, {"QueryString", S(q)},
                         {"Characteristic", S(ch)}, {"AccessLevel", S(lv)}),
                     0);
    assert_int_equal(c.n_obj, 1);
    cap_free(&c);
}

static void set_lists(struct mx_org *org, const char *mbx, const char *allow, const char *block)
{
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S(mbx)},
                         {"ActiveSyncAllowedDeviceIDs", allow ? strs(allow, NULL) : NIL},
                         {"ActiveSyncBlockedDeviceIDs", block ? strs(block, NULL) : NIL}),
                     0);
    assert_int_equal(c.n_err, 0);
    cap_free(&c);
}

static void test_precedence(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 0);
    struct cap c = {0};
    struct mx_error t;
    struct mx_sync_outcome o;
    /* 9: default Allow / Global */
    struct mx_sync_spec first = {.device_type = "iPhone", .model = "iPhone15C2", .os = "iOS 17.5"};
    assert_int_equal(mx_org_device_sync(org, "user0001", "DEV1", &first, &o), 0);
    assert_true(o.created);
    assert_int_equal(o.result, MX_SYNC_ALLOWED);
    assert_string_equal(o.access_reason, "Global");
    /* 9: default Quarantine */
    assert_int_equal(RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t,
                         {"DefaultAccessLevel", S("Quarantine")}),
                     0);
    access_is(org, "user0001", "DEV1", "Quarantined", "Global"); /* recomputed at once */
    o = sync_dev(org, "user0001", "DEV1", NULL, NULL, MX_ACK_SUCCESS);
    assert_false(o.created);
    assert_int_equal(o.result, MX_SYNC_QUARANTINED);
    /* 8: an Allow rule beats the default */
    new_rule(org, "iPhone", "DeviceType", "Allow");
    access_is(org, "user0001", "DEV1", "Allowed", "DeviceRule");
    json_t *j = dev_state(org, "user0001", "DEV1");
    assert_string_equal(jget(j, "access_rule"), "iPhone (DeviceType)");
    json_decref(j);
    /* 7: Quarantine beats Allow */
    new_rule(org, "iPhone15C2", "DeviceModel", "Quarantine");
    access_is(org, "user0001", "DEV1", "Quarantined", "DeviceRule");
    /* 6: Block beats Quarantine */
    new_rule(org, "iOS 17.5", "DeviceOS", "Block");
    access_is(org, "user0001", "DEV1", "Blocked", "DeviceRule");
    o = sync_dev(org, "user0001", "DEV1", NULL, NULL, MX_ACK_SUCCESS);
    assert_int_equal(o.result, MX_SYNC_BLOCKED);
    assert_string_equal(o.access_rule, "iOS 17.5 (DeviceOS)");
    /* 5: a personal allow beats rules */
    set_lists(org, "user0001", "dev1", NULL);
    access_is(org, "user0001", "DEV1", "Allowed", "Individual");
    /* 4: on both lists: Blocked */
    set_lists(org, "user0001", "DEV1", "DEV1");
    access_is(org, "user0001", "DEV1", "Blocked", "Individual");
    /* 3: policy failure beats everything */
    set_lists(org, "user0001", "DEV1", NULL);
    struct mx_sync_spec sp = {.fails_policy = true};
    assert_int_equal(mx_org_device_sync(org, "user0001", "DEV1", &sp, &o), 0);
    assert_int_equal(o.result, MX_SYNC_BLOCKED);
    assert_string_equal(o.access_reason, "Policy");
    /* 2: EAS disabled */
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncEnabled", B(false)}),
                     0);
    assert_int_equal(mx_org_device_sync(org, "user0001", "DEV1", NULL, &o), 0);
    assert_int_equal(o.result, MX_SYNC_USER_DISABLED);
    /* rules: Get / Set / Remove */
    assert_int_equal(RUN0(org, "Get-ActiveSyncDeviceAccessRule", &c, &t), 0);
    assert_int_equal(c.n_obj, 3);
    assert_string_equal(pstr(c.obj[0], "Name"), "iPhone (DeviceType)");
    assert_string_equal(pstr(c.obj[0], "AccessLevel"), "Allow");
    assert_string_equal(pstr(c.obj[0], "Characteristic"), "DeviceType");
    assert_string_equal(eg_ps_type_name(c.obj[0], 0),
                        "Microsoft.Exchange.Data.Directory.SystemConfiguration."
                        "ActiveSyncDeviceAccessRule");
    assert_int_equal(RUN(org, "New-ActiveSyncDeviceAccessRule", &c, &t,
                         {"QueryString", S("iPhone")}, {"Characteristic", S("DeviceType")},
                         {"AccessLevel", S("Block")}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_true(starts_with(c.err[0].message, "Active Directory operation failed on "));
    assert_int_equal(RUN(org, "New-ActiveSyncDeviceAccessRule", &c, &t, {"QueryString", S("x")},
                         {"Characteristic", S("Colour")}, {"AccessLevel", S("Block")}),
                     EG_EREMOTE);
    assert_non_null(strstr(t.message, "Unable to match the identifier name Colour to a valid "
                                      "enumerator name."));
    assert_non_null(strstr(t.message, "DeviceType, DeviceModel, DeviceOS, UserAgent, "
                                      "XMSWLHeader"));
    assert_int_equal(RUN(org, "Set-ActiveSyncDeviceAccessRule", &c, &t,
                         {"Identity", S("iphone15c2 (devicemodel)")}, {"AccessLevel", S("Allow")}),
                     0);
    assert_int_equal(c.n_err, 0);
    assert_int_equal(RUN(org, "Get-ActiveSyncDeviceAccessRule", &c, &t,
                         {"Identity", S("iPhone15C2 (DeviceModel)")}),
                     0);
    assert_string_equal(pstr(c.obj[0], "AccessLevel"), "Allow");
    cap_free(&c);
    mx_org_free(org);
}

static void test_rules_and_org_settings(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 0);
    struct cap c = {0};
    struct mx_error t;
    sync_dev(org, "user0001", "ANDR1", "Android", "Pixel 8", MX_ACK_SUCCESS);
    new_rule(org, "Android", "DeviceType", "Block");
    access_is(org, "user0001", "ANDR1", "Blocked", "DeviceRule");
    assert_int_equal(
        RUN(org, "Get-ActiveSyncDeviceAccessRule", &c, &t, {"Identity", S("Android (DeviceType)")}),
        0);
    assert_int_equal(c.n_obj, 1);
    assert_int_equal(RUN(org, "Set-ActiveSyncDeviceAccessRule", &c, &t,
                         {"Identity", S("android (devicetype)")}, {"AccessLevel", S("Quarantine")}),
                     0);
    assert_int_equal(c.n_err, 0);
    access_is(org, "user0001", "ANDR1", "Quarantined", "DeviceRule");
    /* Remove needs -Confirm:$false */
    assert_int_equal(RUN(org, "Remove-ActiveSyncDeviceAccessRule", &c, &t,
                         {"Identity", S("Android (DeviceType)")}),
                     EG_EREMOTE);
    assert_true(starts_with(t.message, "A command that prompts the user failed"));
    assert_int_equal(RUN(org, "Remove-ActiveSyncDeviceAccessRule", &c, &t,
                         {"Identity", S("Android (DeviceType)")}, NOCONFIRM),
                     0);
    access_is(org, "user0001", "ANDR1", "Allowed", "Global");
    assert_int_equal(
        RUN(org, "Get-ActiveSyncDeviceAccessRule", &c, &t, {"Identity", S("Android (DeviceType)")}),
        0);
    assert_int_equal(c.n_err, 1);
    /* org settings */
    assert_int_equal(RUN0(org, "Get-ActiveSyncOrganizationSettings", &c, &t), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "DefaultAccessLevel"), "Allow");
    assert_string_equal(pstr(c.obj[0], "Identity"), "Mobile Mailbox Settings");
    assert_int_equal(plen(c.obj[0], "AdminMailRecipients"), 0);
    assert_int_equal(RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t,
                         {"DefaultAccessLevel", S("Block")},
                         {"AdminMailRecipients", addrem("admin@contoso.example", NULL)},
                         {"UserMailInsert", S("Call the helpdesk.")}),
                     0);
    assert_int_equal(c.n_err, 0);
    access_is(org, "user0001", "ANDR1", "Blocked", "Global");
    assert_int_equal(RUN0(org, "Get-ActiveSyncOrganizationSettings", &c, &t), 0);
    assert_string_equal(pstr(c.obj[0], "DefaultAccessLevel"), "Block");
    assert_string_equal(pitem(c.obj[0], "AdminMailRecipients", 0), "admin@contoso.example");
    assert_string_equal(pstr(c.obj[0], "UserMailInsert"), "Call the helpdesk.");
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(
        RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t, {"UserMailInsert", S(big)}),
        EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "ParameterArgumentValidationError,"));
    assert_int_equal(
        RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t, {"DefaultAccessLevel", S("Deny")}),
        EG_EREMOTE);
    assert_true(starts_with(t.message, "Cannot bind parameter 'DefaultAccessLevel'. Cannot convert "
                                       "value \"Deny\" to type "
                                       "\"Microsoft.Exchange.Data.Directory.SystemConfiguration."
                                       "DeviceAccessLevel\"."));
    /* enum objects and numbers work too */
    assert_int_equal(RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t,
                         {"DefaultAccessLevel",
                          eg_ps_new_enum("Microsoft.Exchange.Data.Directory.SystemConfiguration."
                                         "DeviceAccessLevel",
                                         "Quarantine", 2)}),
                     0);
    json_t *j = NULL;
    assert_int_equal(mx_state_org(org, &j), 0);
    assert_string_equal(jget(j, "default_access_level"), "Quarantine");
    assert_string_equal(jget(j, "user_mail_insert"), "Call the helpdesk.");
    assert_int_equal(json_array_size(json_object_get(j, "rules")), 0);
    json_decref(j);
    /* recompute at next sync only */
    struct mx_behaviour b;
    mx_org_get_behaviour(org, &b);
    b.recompute_on_set = false;
    mx_org_set_behaviour(org, &b);
    assert_int_equal(RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t,
                         {"DefaultAccessLevel", eg_ps_new_i32(0)}),
                     0);
    access_is(org, "user0001", "ANDR1", "Quarantined", "Global");
    set_lists(org, "user0001", NULL, "ANDR1");
    access_is(org, "user0001", "ANDR1", "Quarantined", "Global");
    sync_dev(org, "user0001", "ANDR1", NULL, NULL, MX_ACK_SUCCESS);
    access_is(org, "user0001", "ANDR1", "Blocked", "Individual");
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ wipe (§8.1) */

static void test_wipe_state_machine(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 0);
    struct cap c = {0};
    struct mx_error t;
    mx_org_set_clock(org, INT64_C(1750000000000));
    struct mx_sync_outcome o = sync_dev(org, "user0001", "WIPE1", "iPhone", NULL, MX_ACK_NEVER);
    char ident[768];
    snprintf(ident, sizeof ident, "%s", o.identity);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceOk");

    /* without -Confirm:$false the prompt fails and nothing changes */
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}), EG_EREMOTE);
    assert_string_equal(t.message,
                        "A command that prompts the user failed because the host program or the "
                        "command type does not support user interaction. The host was attempting "
                        "to request confirmation with the following message: This command will "
                        "force all the data on the device to be permanently deleted. Do you want "
                        "to continue?");
    assert_string_equal(t.exception_type, "System.Management.Automation.Host.HostException");
    assert_int_equal(
        RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, {"Confirm", SW}),
        EG_EREMOTE);
    assert_int_equal(
        RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, {"Confirm", B(true)}),
        EG_EREMOTE);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceOk");
    /* -WhatIf: no prompt, no change */
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, {"WhatIf", SW}),
                     0);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceOk");

    /* A -> B */
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM,
                         {"NotificationEmailAddresses", strs("sec@contoso.example", NULL)}),
                     0);
    assert_int_equal(c.n_obj + c.n_err, 0);
    json_t *j = dev_state(org, "user0001", "WIPE1");
    assert_string_equal(jget(j, "wipe.status"), "DeviceWipePending");
    assert_string_equal(jget(j, "wipe.request_time"), "2025-06-15T15:06:40.000Z");
    assert_null(jget(j, "wipe.sent_time"));
    assert_string_equal(jget(j, "wipe.requestor"), "contoso.example/Users/Administrator");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(json_object_get(j, "wipe"), "notify"), 0)),
        "sec@contoso.example");
    json_decref(j);
    /* statistics show it */
    assert_int_equal(RUN(org, "Get-MobileDeviceStatistics", &c, &t, {"Identity", S(ident)}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "Status"), "DeviceWipePending");
    assert_int_equal(eg_ps_obj_prop(c.obj[0], "DeviceWipeRequestTime")->kind, EG_PS_DT);
    assert_true(pnil(c.obj[0], "DeviceWipeSentTime"));
    assert_string_equal(pstr(c.obj[0], "LastDeviceWipeRequestor"),
                        "contoso.example/Users/Administrator");
    /* B -> A by -Cancel */
    assert_int_equal(
        RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, {"Cancel", SW}, NOCONFIRM),
        0);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceOk");
    /* A -> B -> C (the device's next request; no ack) */
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM), 0);
    mx_org_advance_clock(org, 60000);
    o = sync_dev(org, "user0001", "WIPE1", NULL, NULL, MX_ACK_NEVER);
    assert_int_equal(o.result, MX_SYNC_WIPE);
    assert_false(o.acked);
    assert_false(o.account_only);
    j = dev_state(org, "user0001", "WIPE1");
    assert_string_equal(jget(j, "wipe.status"), "DeviceWipePending");
    assert_string_equal(jget(j, "wipe.sent_time"), "2025-06-15T15:07:40.000Z");
    assert_null(jget(j, "wipe.ack_time"));
    json_decref(j);
    /* -Cancel in C does nothing (too late) */
    assert_int_equal(
        RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, {"Cancel", SW}, NOCONFIRM),
        0);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceWipePending");
    /* Status 2: no ack, repeated next time */
    o = sync_dev(org, "user0001", "WIPE1", NULL, NULL, MX_ACK_FAILURE);
    assert_int_equal(o.result, MX_SYNC_WIPE);
    assert_false(o.acked);
    /* C -> D */
    o = sync_dev(org, "user0001", "WIPE1", NULL, NULL, MX_ACK_SUCCESS);
    assert_int_equal(o.result, MX_SYNC_WIPE);
    assert_true(o.acked);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceWipeSucceeded");
    assert_int_equal(RUN(org, "Get-MobileDeviceStatistics", &c, &t, {"Mailbox", S("user0001")}), 0);
    assert_string_equal(pstr(c.obj[0], "Status"), "DeviceWipeSucceeded");
    assert_int_equal(eg_ps_obj_prop(c.obj[0], "DeviceWipeAckTime")->kind, EG_PS_DT);
    /* Cancel in D: no effect; the device is wiped again on reconnect */
    assert_int_equal(
        RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, {"Cancel", SW}, NOCONFIRM),
        0);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceWipeSucceeded");
    o = sync_dev(org, "user0001", "WIPE1", NULL, NULL, MX_ACK_NEVER);
    assert_int_equal(o.result, MX_SYNC_WIPE);
    /* Remove: gone; -WhatIf and the prompt first */
    assert_int_equal(RUN(org, "Remove-MobileDevice", &c, &t, {"Identity", S(ident)}), EG_EREMOTE);
    assert_true(starts_with(t.message, "A command that prompts the user failed"));
    assert_int_equal(
        RUN(org, "Remove-MobileDevice", &c, &t, {"Identity", S(ident)}, {"WhatIf", SW}), 0);
    assert_int_equal(RUN(org, "Remove-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM), 0);
    assert_int_equal(c.n_err, 0);
    json_t *tmp = NULL;
    assert_int_equal(mx_state_device(org, "user0001", "WIPE1", &tmp), EG_ENOTFOUND);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Identity", S(ident)}), 0);
    assert_int_equal(c.n_err, 1);
    /* list entries are kept; HasActiveSyncDevicePartnership is computed */
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")}), 0);
    assert_false(pbool(c.obj[0], "HasActiveSyncDevicePartnership"));
    /* the next sync re-creates the partnership: new Guid, no wipe */
    char old_guid[40];
    snprintf(old_guid, sizeof old_guid, "%s", o.guid);
    o = sync_dev(org, "user0001", "WIPE1", NULL, NULL, MX_ACK_SUCCESS);
    assert_true(o.created);
    assert_int_equal(o.result, MX_SYNC_ALLOWED);
    assert_string_not_equal(o.guid, old_guid);
    wipe_status_is(org, "user0001", "WIPE1", "DeviceOk");
    /* AccountOnly (2016): delivered as <AccountOnlyRemoteWipe/> */
    snprintf(ident, sizeof ident, "%s", o.identity);
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)},
                         {"AccountOnly", SW}, NOCONFIRM),
                     0);
    o = sync_dev(org, "user0001", "WIPE1", NULL, NULL, MX_ACK_SUCCESS);
    assert_int_equal(o.result, MX_SYNC_WIPE);
    assert_true(o.account_only);
    /* AccountOnly needs EAS 16.1 */
    struct mx_sync_spec old = {.device_type = "Android", .eas_version = "14.1"};
    assert_int_equal(mx_org_device_sync(org, "user0001", "OLD1", &old, &o), 0);
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(o.identity)},
                         {"AccountOnly", SW}, NOCONFIRM),
                     0);
    assert_int_equal(c.n_err, 1);
    wipe_status_is(org, "user0001", "OLD1", "DeviceOk");
    /* a device without remote-wipe support shows DeviceBlocked and is blocked */
    struct mx_sync_spec nw = {.device_type = "EASDevice", .wipe_unsupported = true};
    assert_int_equal(mx_org_device_sync(org, "user0002", "NOWIPE", &nw, &o), 0);
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(o.guid)}, NOCONFIRM), 0);
    wipe_status_is(org, "user0002", "NOWIPE", "DeviceBlocked");
    assert_int_equal(mx_org_device_sync(org, "user0002", "NOWIPE", &nw, &o), 0);
    assert_int_equal(o.result, MX_SYNC_BLOCKED);
    /* unknown device */
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t,
                         {"Identity", S("00000000-0000-0000-0000-000000000001")}, NOCONFIRM),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].message,
                        "The operation couldn't be performed because object "
                        "'00000000-0000-0000-0000-000000000001' couldn't be found on "
                        "'dc01.contoso.example'.");
    cap_free(&c);
    mx_org_free(org);
}

static void test_wipe_profiles(void **state)
{
    (void)state;
    struct cap c = {0};
    struct mx_error t;
    /* Online: the ack is never reported */
    struct mx_org *org = org_new(MX_PROFILE_ONLINE, 1, 0);
    struct mx_sync_outcome o = sync_dev(org, "user0001", "EXO1", "iPhone", NULL, MX_ACK_SUCCESS);
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(o.identity)},
                         {"AccountOnly", SW}, NOCONFIRM),
                     0);
    assert_int_equal(c.n_err, 0);
    o = sync_dev(org, "user0001", "EXO1", NULL, NULL, MX_ACK_SUCCESS);
    assert_int_equal(o.result, MX_SYNC_WIPE);
    assert_false(o.acked);
    wipe_status_is(org, "user0001", "EXO1", "DeviceWipePending");
    json_t *j = dev_state(org, "user0001", "EXO1");
    assert_string_equal(jget(j, "wipe.requestor"), "admin@contoso.onmicrosoft.com");
    json_decref(j);
    assert_int_equal(RUN(org, "Get-MobileDeviceStatistics", &c, &t, {"Mailbox", S("user0001")}), 0);
    assert_true(pnil(c.obj[0], "LastSuccessSync")); /* empty in EXO */
    /* Get-EXOMobileDeviceStatistics by DeviceId */
    assert_int_equal(RUN(org, "Get-EXOMobileDeviceStatistics", &c, &t, {"Identity", S("exo1")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(pstr(c.obj[0], "Status"), "DeviceWipePending");
    assert_int_equal(RUN(org, "Get-EXOMobileDeviceStatistics", &c, &t, {"Identity", S("nope")}), 0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].message, "The mobile device cannot be found.");
    assert_string_equal(c.err[0].details_message,
                        "Ex0FBD0C|Microsoft.Exchange.Configuration.Tasks."
                        "ManagementObjectNotFoundException|The mobile device cannot be found.");
    cap_free(&c);
    mx_org_free(org);

    /* 2013: no AccountOnly */
    org = org_new(MX_PROFILE_2013, 1, 0);
    o = sync_dev(org, "user0001", "E13", "iPhone", NULL, MX_ACK_SUCCESS);
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(o.identity)},
                         {"AccountOnly", SW}, NOCONFIRM),
                     EG_EREMOTE);
    assert_string_equal(t.message,
                        "A parameter cannot be found that matches parameter name 'AccountOnly'.");
    assert_true(starts_with(t.fqeid, "NamedParameterNotFound,Microsoft.Exchange.Management.Tasks."
                                     "ClearMobileDevice"));
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(o.identity)}, NOCONFIRM),
                     0);
    o = sync_dev(org, "user0001", "E13", NULL, NULL, MX_ACK_SUCCESS);
    assert_true(o.acked);
    wipe_status_is(org, "user0001", "E13", "DeviceWipeSucceeded");
    cap_free(&c);
    mx_org_free(org);

    /* 2010: Clear-ActiveSyncDevice */
    org = org_new(MX_PROFILE_2010, 1, 0);
    o = sync_dev(org, "user0001", "E10", "WindowsMail", NULL, MX_ACK_SUCCESS);
    assert_int_equal(RUN(org, "Clear-ActiveSyncDevice", &c, &t, {"Identity", S(o.guid)}, NOCONFIRM),
                     0);
    wipe_status_is(org, "user0001", "E10", "DeviceWipePending");
    assert_int_equal(RUN(org, "Get-ActiveSyncDeviceStatistics", &c, &t, {"Identity", S(o.guid)}),
                     0);
    assert_string_equal(pstr(c.obj[0], "Status"), "DeviceWipePending");
    assert_int_equal(
        RUN(org, "Remove-ActiveSyncDevice", &c, &t, {"Identity", S(o.guid)}, NOCONFIRM), 0);
    assert_int_equal(mx_org_device_count(org), 0);
    cap_free(&c);
    mx_org_free(org);
}

static void test_sync_lifecycle(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 1, 0);
    struct cap c = {0};
    struct mx_error t;
    struct mx_behaviour b;
    mx_org_get_behaviour(org, &b);
    b.discovery_ms = 10 * 60 * 1000;
    b.stale_partnership = true;
    mx_org_set_behaviour(org, &b);
    mx_org_set_clock(org, INT64_C(1750000000000));
    struct mx_sync_spec sp = {.device_type = "Android",
                              .model = "SM-S911B",
                              .os = "Android 14",
                              .user_agent = "Android/14-EAS-2.0",
                              .eas_version = "16.1"};
    struct mx_sync_outcome o;
    assert_int_equal(mx_org_device_sync(org, "user0001@contoso.example", "androidc0ffee", &sp, &o),
                     0);
    assert_true(o.created);
    assert_int_equal(o.result, MX_SYNC_DISCOVERY);
    assert_string_equal(o.access_state, "DeviceDiscovery");
    mx_org_advance_clock(org, 11 * 60 * 1000);
    assert_int_equal(mx_org_device_sync(org, "user0001", "ANDROIDC0FFEE", NULL, &o), 0);
    assert_false(o.created); /* DeviceIds match case-insensitively */
    assert_int_equal(o.result, MX_SYNC_ALLOWED);
    json_t *j = dev_state(org, "user0001", "androidc0ffee");
    assert_string_equal(jget(j, "model"), "SM-S911B"); /* kept from the first sync */
    assert_string_equal(jget(j, "last_success_sync"), "2025-06-15T15:17:40.000Z");
    json_decref(j);
    /* stale HasActiveSyncDevicePartnership after Remove until recalculated */
    assert_int_equal(RUN(org, "Remove-MobileDevice", &c, &t, {"Identity", S(o.guid)}, NOCONFIRM),
                     0);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")}), 0);
    assert_true(pbool(c.obj[0], "HasActiveSyncDevicePartnership"));
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"RecalculateHasActiveSyncDevicePartnership", SW}),
                     0);
    assert_false(pbool(c.obj[0], "HasActiveSyncDevicePartnership"));
    /* errors of the hook */
    assert_int_equal(mx_org_device_sync(org, "nobody", "X", NULL, &o), EG_ENOTFOUND);
    assert_int_equal(mx_org_device_sync(org, "user0001", "", NULL, &o), EG_EINVAL);
    char longid[100];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_int_equal(mx_org_device_sync(org, "user0001", longid, NULL, &o), EG_EINVAL);
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ statistics, Get-EXO*,
 * Get-Command */

static void test_statistics_and_exo(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 4);
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(RUN(org, "Get-MobileDeviceStatistics", &c, &t, {"Mailbox", S("user0001")},
                         {"ShowRecoveryPassword", SW}, {"GetMailboxLog", SW}),
                     0);
    assert_true(c.n_obj >= 1);
    const struct eg_ps_value *s = c.obj[0];
    assert_string_equal(eg_ps_type_name(s, 0),
                        "Microsoft.Exchange.Data.Directory.Management.MobileDeviceConfiguration");
    assert_string_equal(pstr(s, "Status"), "DeviceOk");
    assert_true(pnil(s, "DeviceWipeRequestTime"));
    assert_int_equal(eg_ps_obj_prop(s, "LastSuccessSync")->kind, EG_PS_DT);
    assert_non_null(pstr(s, "MailboxLogReport"));
    assert_string_not_equal(pstr(s, "RecoveryPassword"), "********");
    assert_non_null(pstr(s, "DeviceID"));
    assert_int_equal(RUN0(org, "Get-MobileDeviceStatistics", &c, &t), EG_EREMOTE);
    assert_true(starts_with(t.fqeid, "MissingMandatoryParameter,"));
    assert_int_equal(RUN(org, "Get-MobileDeviceStatistics", &c, &t, {"Mailbox", S("nobody")}), 0);
    assert_int_equal(c.n_err, 1);
    /* Get-EXO* only Online */
    assert_int_equal(RUN0(org, "Get-EXOCasMailbox", &c, &t), EG_EREMOTE);
    cap_free(&c);
    mx_org_free(org);

    org = org_new(MX_PROFILE_ONLINE, 3, 3);
    assert_int_equal(RUN(org, "Get-EXOCasMailbox", &c, &t, {"Identity", S("user0001")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_null(eg_ps_obj_prop(c.obj[0], "ActiveSyncAllowedDeviceIDs")); /* Minimum */
    assert_non_null(eg_ps_obj_prop(c.obj[0], "PrimarySmtpAddress"));
    assert_int_equal(RUN(org, "Get-EXOCasMailbox", &c, &t, {"Identity", S("user0001")},
                         {"PropertySets", S("ActiveSync")}),
                     0);
    assert_non_null(eg_ps_obj_prop(c.obj[0], "ActiveSyncAllowedDeviceIDs"));
    assert_non_null(eg_ps_obj_prop(c.obj[0], "HasActiveSyncDevicePartnership"));
    assert_null(eg_ps_obj_prop(c.obj[0], "PrimarySmtpAddress"));
    assert_int_equal(
        RUN(org, "Get-EXOCasMailbox", &c, &t, {"PrimarySmtpAddress", S("user0002@contoso.example")},
            {"PropertySets", strs("Minimum", "ActiveSync")}, {"Properties", S("WhenCreated")}),
        0);
    assert_non_null(eg_ps_obj_prop(c.obj[0], "ActiveSyncBlockedDeviceIDs"));
    assert_non_null(eg_ps_obj_prop(c.obj[0], "WhenCreated"));
    assert_int_equal(RUN(org, "Get-EXOCasMailbox", &c, &t, {"PropertySets", S("All")}), 0);
    assert_int_equal(c.n_obj, 3);
    assert_non_null(eg_ps_obj_prop(c.obj[0], "ObjectState"));
    assert_int_equal(RUN(org, "Get-EXOCasMailbox", &c, &t, {"PropertySets", S("Everything")}),
                     EG_EREMOTE);
    assert_int_equal(RUN(org, "Get-EXOCasMailbox", &c, &t, {"Identity", S("user0001")},
                         {"UserPrincipalName", S("user0001@contoso.example")}),
                     EG_EREMOTE);
    cap_free(&c);
    mx_org_free(org);
}

static bool has_param(const struct eg_ps_value *cmd, const char *p)
{
    return eg_ps_dict_get(eg_ps_obj_prop(cmd, "Parameters"), p) != NULL;
}

static void test_get_command(void **state)
{
    (void)state;
    struct cap c = {0};
    struct mx_error t;
    struct mx_org *org = org_new(MX_PROFILE_2016, 1, 0);
    assert_int_equal(RUN(org, "Get-Command", &c, &t, {NULL, S("Clear-MobileDevice")}), 0);
    assert_int_equal(c.n_obj, 1);
    assert_string_equal(eg_ps_type_name(c.obj[0], 0), "System.Management.Automation.CmdletInfo");
    assert_true(has_param(c.obj[0], "AccountOnly"));
    assert_true(has_param(c.obj[0], "Confirm"));
    assert_true(has_param(c.obj[0], "ErrorAction"));
    assert_int_equal(RUN(org, "Get-Command", &c, &t, {"Name", S("*-MobileDevice*")}), 0);
    assert_int_equal(c.n_obj, 4);
    assert_int_equal(RUN(org, "Get-Command", &c, &t, {"Name", S("Get-Fake")}), 0);
    assert_int_equal(c.n_obj, 0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].fqeid,
                        "CommandNotFoundException,Microsoft.PowerShell.Commands.GetCommandCommand");
    /* RBAC trims Get-Command as it trims invocation */
    assert_int_equal(mx_rbac_hide_parameter(org, "clear-mobiledevice", "accountonly"), 0);
    assert_int_equal(mx_rbac_hide_cmdlet(org, "Remove-MobileDevice"), 0);
    assert_int_equal(RUN(org, "Get-Command", &c, &t, {"Name", S("*-MobileDevice")}), 0);
    assert_int_equal(c.n_obj, 2); /* Get-, Clear- */
    assert_int_equal(RUN(org, "Get-Command", &c, &t, {"Name", S("Clear-MobileDevice")}), 0);
    assert_false(has_param(c.obj[0], "AccountOnly"));
    cap_free(&c);
    mx_org_free(org);
    org = org_new(MX_PROFILE_2013, 1, 0);
    assert_int_equal(RUN(org, "Get-Command", &c, &t, {"Name", S("Clear-MobileDevice")}), 0);
    assert_false(has_param(c.obj[0], "AccountOnly"));
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ faults and RBAC */

static int64_t elapsed_since(int64_t t0)
{
    return eg_mono_ms() - t0;
}

static void test_faults(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 2);
    struct cap c = {0};
    struct mx_error t;
    /* latency, per cmdlet */
    assert_int_equal(mx_fault_latency(org, "get-casmailbox", 120), 0);
    int64_t t0 = eg_mono_ms();
    assert_int_equal(RUN0(org, "Get-CASMailbox", &c, &t), 0);
    assert_true(elapsed_since(t0) >= 120);
    t0 = eg_mono_ms();
    assert_int_equal(RUN0(org, "Get-ActiveSyncOrganizationSettings", &c, &t), 0);
    assert_true(elapsed_since(t0) < 100);
    /* every cmdlet; the specific key wins, also when it says 0 */
    assert_int_equal(mx_fault_latency(org, NULL, 80), 0);
    assert_int_equal(mx_fault_latency(org, "Get-CASMailbox", 0), 0);
    t0 = eg_mono_ms();
    assert_int_equal(RUN0(org, "Get-ActiveSyncOrganizationSettings", &c, &t), 0);
    assert_true(elapsed_since(t0) >= 80);
    t0 = eg_mono_ms();
    assert_int_equal(RUN0(org, "Get-CASMailbox", &c, &t), 0);
    assert_true(elapsed_since(t0) < 70);
    mx_fault_reset(org);
    t0 = eg_mono_ms();
    assert_int_equal(RUN0(org, "Get-ActiveSyncOrganizationSettings", &c, &t), 0);
    assert_true(elapsed_since(t0) < 70);

    /* quota: the next 2 calls, then every 3rd */
    struct mx_quota_fault q = {.next_k = 2, .delay_ms = 1500, .requests = 10, .seconds = 5};
    assert_int_equal(mx_fault_quota(org, "Get-CASMailbox", &q), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(RUN0(org, "Get-CASMailbox", &c, &t), EG_EREMOTE);
        assert_string_equal(t.message,
                            "The WS-Management service cannot process the request. The user load "
                            "quota of 10 requests per 5 seconds has been exceeded. Send future "
                            "requests at a slower rate or raise the quota for this user. The next "
                            "request from this user will not be approved for at least 1500 "
                            "milliseconds.");
        assert_true(t.throttled);
        assert_int_equal(t.retry_after_ms, 1500);
        assert_int_equal(t.http_status, 429);
        assert_string_equal(t.rest_code, "TooManyRequests");
    }
    assert_int_equal(RUN0(org, "Get-CASMailbox", &c, &t), 0);
    assert_int_equal(RUN0(org, "Get-MobileDevice", &c, &t), 0); /* other cmdlets unaffected */
    struct mx_quota_fault q3 = {.every_nth = 3, .delay_ms = 250};
    assert_int_equal(mx_fault_quota(org, NULL, &q3), 0);
    int fails = 0;
    for (int i = 1; i <= 9; i++) {
        int rc = RUN0(org, "Get-MobileDevice", &c, &t);
        if (rc == EG_EREMOTE) {
            fails++;
            assert_int_equal(i % 3, 0);
            assert_non_null(strstr(t.message, "30 requests per 60 seconds"));
        }
    }
    assert_int_equal(fails, 3);
    assert_int_equal(mx_fault_quota(org, NULL, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(RUN0(org, "Get-MobileDevice", &c, &t), 0);

    /* micro-delay: a real delay and the warning */
    assert_int_equal(mx_fault_micro_delay(org, "Get-MobileDevice", 2, 60), 0);
    t0 = eg_mono_ms();
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}), 0);
    assert_int_equal(c.n_warn, 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}), 0);
    assert_true(elapsed_since(t0) >= 60);
    assert_int_equal(c.n_warn, 1);
    assert_true(starts_with(c.warn[0], "Micro delay applied. Actual delayed: 60 msecs, Enforced: "
                                       "True, Capped delay: 60 msecs, Required: False"));
    assert_non_null(strstr(c.warn[0], "PowerShellCmdletsLeft: 384/400"));
    assert_int_equal(c.n_obj, 1);
    assert_int_equal(mx_fault_micro_delay(org, "Get-MobileDevice", 0, 60), 0); /* off */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}), 0);
        assert_int_equal(c.n_warn, 0);
    }

    /* write scope */
    assert_int_equal(mx_fault_write_scope(org, "user0002", true), 0);
    assert_int_equal(mx_fault_write_scope(org, "nobody", true), EG_ENOTFOUND);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0002")},
                         {"ActiveSyncEnabled", B(false)}),
                     0);
    assert_int_equal(c.n_err, 1);
    assert_string_equal(c.err[0].message,
                        "The operation on mailbox \"contoso.example/Users/User 0002\" failed "
                        "because it's out of the current user's write scope. The object "
                        "'contoso.example/Users/User 0002' must be within the read scope before "
                        "and after it's modified. Can't perform the save operation.");
    assert_int_equal(c.err[0].http_status, 403);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0002")}), 0);
    char ident[768];
    snprintf(ident, sizeof ident, "%s", pstr(c.obj[0], "Identity"));
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM), 0);
    assert_int_equal(c.n_err, 1);
    assert_int_equal(RUN(org, "Remove-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM), 0);
    assert_int_equal(c.n_err, 1);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncEnabled", B(false)}),
                     0);
    assert_int_equal(c.n_err, 0);
    /* task errors made terminating */
    struct mx_behaviour b;
    mx_org_get_behaviour(org, &b);
    b.task_errors_terminating = true;
    mx_org_set_behaviour(org, &b);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0002")},
                         {"ActiveSyncEnabled", B(false)}),
                     EG_EREMOTE);
    assert_true(starts_with(t.message, "The operation on mailbox"));
    b.task_errors_terminating = false;
    mx_org_set_behaviour(org, &b);
    assert_int_equal(mx_fault_write_scope(org, "user0002", false), 0);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0002")},
                         {"ActiveSyncEnabled", B(false)}),
                     0);
    assert_int_equal(c.n_err, 0);
    /* argument checks and the key limit */
    assert_int_equal(mx_fault_latency(org, "", 1), EG_EINVAL);
    assert_int_equal(mx_fault_latency(org, "Get-X", -1), EG_EINVAL);
    mx_fault_reset(org);
    char key[32];
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "Get-K%d", i);
        assert_int_equal(mx_fault_latency(org, key, 0), 0);
    }
    assert_int_equal(mx_fault_latency(org, "Get-K64", 0), EG_ELIMIT);
    mx_fault_reset(org);
    cap_free(&c);
    mx_org_free(org);
}

static void test_rbac(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 1, 1);
    struct cap c = {0};
    struct mx_error t;
    assert_int_equal(mx_rbac_hide_cmdlet(org, "Get-NoSuch"), EG_ENOTFOUND);
    assert_int_equal(mx_rbac_hide_parameter(org, "Get-CASMailbox", "NoSuch"), EG_ENOTFOUND);
    assert_int_equal(mx_rbac_hide_parameter(org, "Get-CASMailbox", "ErrorAction"), EG_ENOTFOUND);
    assert_int_equal(mx_rbac_hide_cmdlet(org, "set-activesyncorganizationsettings"), 0);
    assert_int_equal(
        RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t, {"DefaultAccessLevel", S("Block")}),
        EG_EREMOTE);
    assert_string_equal(t.message,
                        "The term 'Set-ActiveSyncOrganizationSettings' is not recognized as the "
                        "name of a cmdlet, function, script file, or operable program. Check the "
                        "spelling of the name, or if a path was included, verify that the path is "
                        "correct and try again.");
    /* the role entry lists exactly the kept parameters (Confirm dropped) */
    const char *keep[] = {"Identity", "ActiveSyncAllowedDeviceIDs", "ActiveSyncBlockedDeviceIDs",
                          "ActiveSyncEnabled", "WhatIf"};
    assert_int_equal(mx_rbac_allow_only(org, "Set-CASMailbox", keep, 5), 0);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", strs("A", NULL)}),
                     0);
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncMailboxPolicy", S("Default")}),
                     EG_EREMOTE);
    assert_string_equal(t.message, "A parameter cannot be found that matches parameter name "
                                   "'ActiveSyncMailboxPolicy'.");
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                         {"ActiveSyncEnabled", B(true)}, NOCONFIRM),
                     EG_EREMOTE);
    assert_string_equal(t.message, "A parameter cannot be found that matches parameter name "
                                   "'Confirm'.");
    /* the common parameters stay */
    assert_int_equal(
        RUN(org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")}, {"ErrorAction", S("Stop")}),
        0);
    /* a hidden Confirm on Clear-MobileDevice: -Confirm:$false itself fails (§14) */
    assert_int_equal(mx_rbac_hide_parameter(org, "Clear-MobileDevice", "Confirm"), 0);
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"Mailbox", S("user0001")}), 0);
    char ident[768];
    snprintf(ident, sizeof ident, "%s", pstr(c.obj[0], "Identity"));
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM),
                     EG_EREMOTE);
    assert_string_equal(t.message, "A parameter cannot be found that matches parameter name "
                                   "'Confirm'.");
    /* a hidden parameter no longer takes part in prefix matching */
    assert_int_equal(mx_rbac_hide_parameter(org, "Get-CASMailbox", "ActiveSyncDebugLogging"), 0);
    assert_int_equal(RUN(org, "Get-CASMailbox", &c, &t, {"ActiveSyncDebug", SW}), EG_EREMOTE);
    mx_rbac_reset(org);
    assert_int_equal(RUN(org, "Clear-MobileDevice", &c, &t, {"Identity", S(ident)}, NOCONFIRM), 0);
    assert_int_equal(
        RUN(org, "Set-ActiveSyncOrganizationSettings", &c, &t, {"DefaultAccessLevel", S("Block")}),
        0);
    cap_free(&c);
    mx_org_free(org);
}

/* ================================================================ recorder and JSON */

static void test_recorder(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 1);
    struct cap c = {0};
    struct mx_error t;
    mx_recorder_reset(org);
    assert_int_equal(mx_recorder_count(org), 0);
    const char *add[] = {"ApplF17ABC", "androidc123"}, *rem[] = {"ApplOLD1"};
    assert_int_equal(RUN(org, "Set-CASMailbox", &c, &t, {"identity", S("user0001")},
                         {"ActiveSyncAllowedDeviceIDs", eg_ps_new_add_remove(add, 2, rem, 1)},
                         {"ActiveSyncBlockedDeviceIDs", NIL}, {"WhatIf", SW}),
                     0);
    assert_int_equal(
        RUN(org, "Get-CASMailbox", &c, &t, {NULL, S("nobody")}, {"ResultSize", eg_ps_new_i32(5)}),
        0);
    assert_int_equal(RUN(org, "Get-Fake", &c, &t, {"X", B(false)}), EG_EREMOTE);
    c.stop_after = 1;
    assert_int_equal(RUN0(org, "Get-CASMailbox", &c, &t), EG_ESHUTDOWN);
    c.stop_after = 0;
    assert_int_equal(mx_recorder_count(org), 4);
    json_t *r = NULL;
    assert_int_equal(mx_recorder_get(org, &r), 0);
    assert_int_equal(json_array_size(r), 4);
    char *txt = json_dumps(json_array_get(r, 0), JSON_COMPACT);
    assert_non_null(txt);
    assert_string_equal(txt,
                        "{\"seq\":1,\"cmdlet\":\"Set-CASMailbox\",\"parameters\":{\"identity\":"
                        "\"user0001\",\"ActiveSyncAllowedDeviceIDs\":{\"Add\":[\"ApplF17ABC\","
                        "\"androidc123\"],\"Remove\":[\"ApplOLD1\"]},"
                        "\"ActiveSyncBlockedDeviceIDs\":null,\"WhatIf\":true},\"status\":"
                        "\"Completed\",\"errors\":[]}");
    eg_free(txt);
    json_t *r1 = json_array_get(r, 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r1, "positional"), 0)),
                        "nobody");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r1, "parameters"), "ResultSize")), 5);
    assert_int_equal(json_array_size(json_object_get(r1, "errors")), 1);
    assert_true(starts_with(json_string_value(json_object_get(
                                json_array_get(json_object_get(r1, "errors"), 0), "message")),
                            "The operation couldn't be performed"));
    json_t *r2 = json_array_get(r, 2);
    assert_string_equal(jget(r2, "status"), "Failed");
    assert_string_equal(jget(r2, "cmdlet"), "Get-Fake");
    assert_string_equal(jget(r2, "error.fqeid"), "CommandNotFoundException");
    assert_string_equal(jget(json_array_get(r, 3), "status"), "Stopped");
    json_decref(r);
    /* the limit keeps the newest */
    mx_recorder_set_limit(org, 3);
    assert_int_equal(mx_recorder_count(org), 3);
    for (int i = 0; i < 20; i++)
        assert_int_equal(RUN0(org, "Get-ActiveSyncOrganizationSettings", &c, &t), 0);
    assert_int_equal(mx_recorder_count(org), 3);
    assert_int_equal(mx_recorder_get(org, &r), 0);
    assert_int_equal(json_array_size(r), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 2), "seq")), 24);
    json_decref(r);
    mx_recorder_reset(org);
    assert_int_equal(mx_recorder_count(org), 0);
    cap_free(&c);
    mx_org_free(org);
}

static void test_clixml_json(void **state)
{
    (void)state;
    struct eg_ps_value *o = eg_ps_new_obj();
    const char *tn[] = {"My.Type", "System.Object"};
    assert_int_equal(eg_ps_obj_set_types(o, tn, 2), 0);
    assert_int_equal(eg_ps_obj_set_to_string(o, "me", 2), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "S", S("x\xC2\xA7y")), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "N", NIL), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "B", B(true)), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "I", eg_ps_new_i32(-7)), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "U", eg_ps_new_u64(UINT64_MAX)), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "D", eg_ps_new_double(NAN)), 0);
    uint8_t g[16] = {0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    assert_int_equal(eg_ps_obj_add_prop(o, "G", eg_ps_new_guid(g)), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "T", eg_ps_new_datetime(INT64_C(1748736000500))), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "L", strs("a", "b")), 0);
    assert_int_equal(eg_ps_obj_add_prop(o, "H", addrem("p", "q")), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "M", eg_ps_new_char(0x41)), 0);
    struct eg_ps_value *ss = NULL;
    assert_int_equal(eg_ps_new_text(EG_PS_SS, "AAAA", 4, &ss), 0);
    assert_int_equal(eg_ps_obj_add_ms(o, "Secret", ss), 0);
    char *txt = NULL;
    assert_int_equal(eg_clixml_to_json_text(o, &txt), 0);
    assert_string_equal(txt, "{\"_types\":[\"My.Type\",\"System.Object\"],\"_tostring\":\"me\","
                             "\"S\":\"x\xC2\xA7y\",\"N\":null,\"B\":true,\"I\":-7,"
                             "\"U\":\"18446744073709551615\",\"D\":\"NaN\","
                             "\"G\":\"ab010203-0405-0607-0809-0a0b0c0d0e0f\","
                             "\"T\":\"2025-06-01T00:00:00.5Z\",\"L\":[\"a\",\"b\"],"
                             "\"H\":{\"Add\":[\"p\"],\"Remove\":\"q\"},\"M\":\"A\","
                             "\"Secret\":\"[SecureString]\"}");
    eg_free(txt);
    /* invalid UTF-8 is refused */
    struct eg_ps_value *bad = eg_ps_new_stringn("\xFF", 1);
    json_t *j = NULL;
    assert_int_equal(eg_clixml_to_json(bad, &j), EG_EINVAL);
    assert_int_equal(eg_clixml_to_json(NULL, &j), EG_EINVAL);
    eg_ps_value_free(bad);
    eg_ps_value_free(o);
}

static void test_state_and_control(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 2, 0);
    char err[256];
    json_t *out = NULL, *req = NULL;
#define CTRL(text, want_rc)                                                                        \
    do {                                                                                           \
        req = json_loads(text, 0, NULL);                                                           \
        assert_non_null(req);                                                                      \
        out = NULL;                                                                                \
        assert_int_equal(mx_control(org, req, &out, err, sizeof err), want_rc);                    \
        json_decref(req);                                                                          \
    } while (0)
    CTRL("{\"op\":\"add_mailbox\",\"alias\":\"carol\",\"display_name\":\"Carol C\","
         "\"proxies\":[\"carol@alt.example\"]}",
         0);
    assert_true(json_is_true(json_object_get(out, "ok")));
    json_decref(out);
    CTRL("{\"op\":\"sync\",\"mailbox\":\"carol@alt.example\",\"device_id\":\"ApplC1\","
         "\"device_type\":\"iPhone\",\"model\":\"iPhone16C1\",\"ack\":\"never\"}",
         0);
    assert_string_equal(jget(out, "result"), "allowed");
    assert_true(json_is_true(json_object_get(out, "created")));
    assert_true(starts_with(jget(out, "identity"), "contoso.example/Users/carol/Exchange"));
    json_decref(out);
    CTRL("{\"op\":\"state_mailbox\",\"mailbox\":\"carol\"}", 0);
    assert_string_equal(jget(out, "primary_smtp"), "carol@contoso.example");
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "devices"), 0)),
                        "ApplC1");
    assert_true(json_is_true(json_object_get(out, "has_partnership")));
    json_decref(out);
    CTRL("{\"op\":\"state_device\",\"mailbox\":\"carol\",\"device_id\":\"applc1\"}", 0);
    assert_string_equal(jget(out, "model"), "iPhone16C1");
    assert_string_equal(jget(out, "mailbox"), "carol@contoso.example");
    assert_string_equal(jget(out, "wipe.status"), "DeviceOk");
    assert_true(json_is_null(json_object_get(json_object_get(out, "wipe"), "request_time")));
    json_decref(out);
    CTRL("{\"op\":\"state_org\"}", 0);
    assert_string_equal(jget(out, "profile"), "2016");
    assert_int_equal(json_integer_value(json_object_get(out, "mailboxes")), 3);
    assert_int_equal(json_integer_value(json_object_get(out, "devices")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "policies"), 0)),
                        "Default");
    json_decref(out);
    CTRL("{\"op\":\"behaviour\",\"strict_duplicates\":false,\"list_cap\":5,"
         "\"requestor\":\"svc-eas\"}",
         0);
    assert_true(json_is_false(json_object_get(out, "strict_duplicates")));
    assert_int_equal(json_integer_value(json_object_get(out, "list_cap")), 5);
    assert_string_equal(jget(out, "requestor"), "svc-eas");
    json_decref(out);
    CTRL("{\"op\":\"clock\",\"now_ms\":1750000000000}", 0);
    json_decref(out);
    CTRL("{\"op\":\"fault_latency\",\"cmdlet\":\"Get-CASMailbox\",\"ms\":1}", 0);
    json_decref(out);
    CTRL("{\"op\":\"fault_quota\",\"cmdlet\":null,\"next_k\":1,\"delay_ms\":5}", 0);
    json_decref(out);
    struct mx_error t;
    assert_int_equal(mx_invoke(org, "Get-CASMailbox", NULL, 0, NULL, NULL, &t), EG_EREMOTE);
    assert_true(t.throttled);
    CTRL("{\"op\":\"fault_micro_delay\",\"every_nth\":0}", 0);
    json_decref(out);
    CTRL("{\"op\":\"fault_write_scope\",\"mailbox\":\"carol\",\"on\":true}", 0);
    json_decref(out);
    CTRL("{\"op\":\"fault_reset\"}", 0);
    json_decref(out);
    CTRL("{\"op\":\"rbac_hide_cmdlet\",\"cmdlet\":\"Get-MobileDevice\"}", 0);
    json_decref(out);
    assert_int_equal(mx_invoke(org, "Get-MobileDevice", NULL, 0, NULL, NULL, &t), EG_EREMOTE);
    CTRL("{\"op\":\"rbac_allow_only\",\"cmdlet\":\"Set-CASMailbox\",\"parameters\":"
         "[\"Identity\"]}",
         0);
    json_decref(out);
    CTRL("{\"op\":\"rbac_hide_parameter\",\"cmdlet\":\"Get-CASMailbox\",\"parameter\":\"Nope\"}",
         EG_ENOTFOUND);
    assert_string_equal(err, "Get-CASMailbox: unknown cmdlet or parameter");
    CTRL("{\"op\":\"rbac_reset\"}", 0);
    json_decref(out);
    assert_int_equal(mx_invoke(org, "Get-MobileDevice", NULL, 0, NULL, NULL, &t), 0);
    CTRL("{\"op\":\"calls\"}", 0);
    assert_true(json_array_size(out) >= 3);
    json_decref(out);
    CTRL("{\"op\":\"calls_reset\"}", 0);
    json_decref(out);
    CTRL("{\"op\":\"info\"}", 0);
    assert_int_equal(json_integer_value(json_object_get(out, "calls")), 0);
    assert_true(json_integer_value(json_object_get(out, "memory")) > 0);
    json_decref(out);
    CTRL("{\"op\":\"add_policy\",\"name\":\"Strict\"}", 0);
    json_decref(out);
    /* errors */
    CTRL("{\"op\":\"nope\"}", EG_EINVAL);
    assert_string_equal(err, "nope: unknown op");
    CTRL("{\"op\":\"sync\",\"mailbox\":\"nobody\",\"device_id\":\"D\"}", EG_ENOTFOUND);
    assert_string_equal(err, "nobody: no such mailbox");
    CTRL("{\"op\":\"sync\",\"mailbox\":\"carol\"}", EG_EINVAL);
    assert_string_equal(err, "device_id: is required");
    CTRL("{\"op\":\"sync\",\"mailbox\":\"carol\",\"device_id\":\"D\",\"ack\":\"maybe\"}",
         EG_EINVAL);
    CTRL("{\"op\":\"behaviour\",\"list_cap\":\"x\"}", EG_EINVAL);
    CTRL("{\"op\":\"state_device\",\"mailbox\":\"carol\",\"device_id\":\"none\"}", EG_ENOTFOUND);
    CTRL("[1]", EG_EINVAL);
    CTRL("{\"op\":\"add_mailbox\",\"alias\":\"carol\"}", EG_EINVAL);
    assert_int_equal(mx_control(NULL, NULL, &out, NULL, 0), EG_EINVAL);
#undef CTRL
    mx_org_free(org);
}

/* ================================================================ threads */

struct thr {
    struct mx_org *org;
    int rc;
    size_t objects;
};

static void *thr_get(void *arg)
{
    struct thr *th = arg;
    struct cap c = {.keep_none = true, .nest = th->org};
    struct mx_error t;
    for (int i = 0; i < 5 && th->rc == 0; i++) {
        th->rc = RUN(th->org, "Get-MobileDevice", &c, &t, {"ResultSize", S("Unlimited")});
        th->objects += c.n_obj;
        if (c.nest_rc != 0)
            th->rc = c.nest_rc;
    }
    cap_free(&c);
    return NULL;
}

static void *thr_set(void *arg)
{
    struct thr *th = arg;
    struct cap c = {0};
    struct mx_error t;
    for (int i = 0; i < 200 && th->rc == 0; i++) {
        char dev[32];
        snprintf(dev, sizeof dev, "THR%d", i);
        th->rc = RUN(th->org, "Set-CASMailbox", &c, &t, {"Identity", S("user0001")},
                     {"ActiveSyncBlockedDeviceIDs", addrem(dev, NULL)});
        struct mx_sync_outcome o;
        if (th->rc == 0)
            th->rc = mx_org_device_sync(th->org, "user0002", dev, NULL, &o);
    }
    cap_free(&c);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct mx_org *org = org_new(MX_PROFILE_2016, 50, 500);
    struct thr a = {.org = org}, b = {.org = org}, s = {.org = org};
    pthread_t ta, tb, ts;
    assert_int_equal(pthread_create(&ta, NULL, thr_get, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, thr_get, &b), 0);
    assert_int_equal(pthread_create(&ts, NULL, thr_set, &s), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_join(ts, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(s.rc, 0);
    assert_true(a.objects >= 2500);
    json_t *st = mbx_state(org, "user0001");
    json_t *bl = json_object_get(st, "blocked");
    assert_int_equal(json_array_size(bl), 200);
    for (size_t i = 0; i < 200; i++) {
        char dev[32];
        snprintf(dev, sizeof dev, "THR%zu", i);
        assert_string_equal(json_string_value(json_array_get(bl, i)), dev);
    }
    json_decref(st);
    assert_int_equal(mx_org_device_count(org), 700);
    mx_org_free(org);
}

/* ================================================================ scale */

static size_t scale_devices(void)
{
    const char *e = getenv("MX_SCALE_DEVICES");
    int64_t n = 0;
    if (e && eg_parse_int64(e, 1, INT64_C(10000000), &n) == 0)
        return (size_t)n;
    return MX_SANITIZED ? 20000 : 200000;
}

static void test_scale_streaming(void **state)
{
    (void)state;
    size_t n = scale_devices();
    struct mx_org_opts o = {.profile = MX_PROFILE_2016,
                            .seed = 99,
                            .mailboxes = n / 4 ? n / 4 : 1,
                            .devices = n,
                            .seed_lists = true};
    struct mx_org *org = NULL;
    int64_t t0 = eg_mono_ms();
    assert_int_equal(mx_org_new(&o, &org), 0);
    size_t mem = mx_org_memory(org);
    print_message("scale: %zu devices, %zu mailboxes, org memory %zu bytes (%.1f per device), "
                  "seeded in %lld ms\n",
                  n, o.mailboxes, mem, (double)mem / (double)n, (long long)elapsed_since(t0));
    assert_true(mem < (size_t)1 << 30);
    assert_true(mem < n * 1024); /* well under 1 KB per device */
    size_t live0 = eg_ps_live_values();
    struct cap c = {.keep_none = true};
    struct mx_error t;
    t0 = eg_mono_ms();
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t, {"ResultSize", S("Unlimited")}), 0);
    print_message("scale: streamed %zu objects in %lld ms, at most %zu live values\n", c.n_obj,
                  (long long)elapsed_since(t0), c.max_live);
    assert_int_equal(c.n_obj, n);
    assert_int_equal(c.n_warn, 0);
    /* one object at a time: the live values never exceed a few objects' worth */
    assert_true(c.max_live < live0 + 1000);
    assert_int_equal(eg_ps_live_values(), live0);
    /* a filtered stream over the same org */
    assert_int_equal(RUN(org, "Get-MobileDevice", &c, &t,
                         {"Filter", S("DeviceAccessState -eq 'Blocked'")},
                         {"ResultSize", S("Unlimited")}),
                     0);
    assert_true(c.n_obj > 0 && c.n_obj < n / 10);
    cap_free(&c);
    mx_org_free(org);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_mailbox_identities),
        cmocka_unit_test(test_online_and_2010_shapes),
        cmocka_unit_test(test_device_identities),
        cmocka_unit_test(test_output_shape),
        cmocka_unit_test(test_result_size),
        cmocka_unit_test(test_filter_and_sort),
        cmocka_unit_test(test_set_casmailbox),
        cmocka_unit_test(test_binding_errors),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_rules_and_org_settings),
        cmocka_unit_test(test_wipe_state_machine),
        cmocka_unit_test(test_wipe_profiles),
        cmocka_unit_test(test_sync_lifecycle),
        cmocka_unit_test(test_statistics_and_exo),
        cmocka_unit_test(test_get_command),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_rbac),
        cmocka_unit_test(test_recorder),
        cmocka_unit_test(test_clixml_json),
        cmocka_unit_test(test_state_and_control),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_scale_streaming),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
