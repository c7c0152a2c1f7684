/* gss.c - GSSAPI contexts and WinRM message sealing (see gss.h, psrp-wire.md section 14).
 *
 * Mechanisms: MIT krb5's Kerberos and SPNEGO, gss-ntlmssp's NTLM (a mechglue plugin,
 * /etc/gss/mech.d). Kerberos credentials live in a private MEMORY: ccache named per credential
 * (gss_acquire_cred_from with a cred_store); the SPNEGO credential is acquired from that same
 * ccache and restricted with gss_set_neg_mechs. NTLM credentials come from
 * gss_acquire_cred_with_password on the gss-ntlmssp mechanism (wrapped by SPNEGO, restricted to
 * NTLM).
 */
#include "transport/gss.h"

#include <errno.h>
#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <krb5/krb5.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/limits.h"

/* ---- OIDs ---- */

static gss_OID_desc oid_krb5 = {9, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02"};
static gss_OID_desc oid_krb5_ms = {9, (void *)"\x2a\x86\x48\x82\xf7\x12\x01\x02\x02"};
static gss_OID_desc oid_spnego = {6, (void *)"\x2b\x06\x01\x05\x05\x02"};
static gss_OID_desc oid_ntlm = {10, (void *)"\x2b\x06\x01\x04\x01\x82\x37\x02\x02\x0a"};

#define BOUNDARY     "Encrypted Boundary"
#define PROTO_SPNEGO "application/HTTP-SPNEGO-session-encrypted"
#define PROTO_KRB5   "application/HTTP-Kerberos-session-encrypted"
#define CB_PREFIX    "tls-server-end-point:"

static bool oid_eq(const gss_OID_desc *a, const gss_OID_desc *b)
{
    return a && b && a->length == b->length && memcmp(a->elements, b->elements, a->length) == 0;
}

static enum eg_gss_mech mech_of(gss_OID o)
{
    if (oid_eq(o, &oid_krb5) || oid_eq(o, &oid_krb5_ms))
        return EG_GSS_MECH_KRB5;
    if (oid_eq(o, &oid_ntlm))
        return EG_GSS_MECH_NTLM;
    return EG_GSS_MECH_NONE;
}

/* ---- error texts ---- */

static void append_status(char *buf, size_t len, size_t *used, OM_uint32 code, int type,
                          gss_OID mech)
{
    OM_uint32 min = 0, ctx = 0;
    do {
        gss_buffer_desc s = GSS_C_EMPTY_BUFFER;
        OM_uint32 maj = gss_display_status(&min, code, type, mech, &ctx, &s);
        if (GSS_ERROR(maj))
            break;
        bool noise = (s.length == 7 && memcmp(s.value, "Success", 7) == 0) ||
                     (s.length == 13 && memcmp(s.value, "Unknown error", 13) == 0);
        if (s.length && !noise && *used < len) {
            int n = snprintf(buf + *used, len - *used, "%s%.*s", *used ? ": " : "", (int)s.length,
                             (const char *)s.value);
            if (n > 0)
                *used = (size_t)n >= len - *used ? len - 1 : *used + (size_t)n;
        }
        gss_release_buffer(&min, &s);
    } while (ctx);
}

/* "<what>: <major text>: <minor text>", never containing secret (when non-NULL). */
static void set_error(char *buf, size_t len, const char *secret, const char *what, OM_uint32 maj,
                      OM_uint32 min, gss_OID mech)
{
    if (!buf || !len)
        return;
    int n = snprintf(buf, len, "%s", what);
    size_t used = n < 0 ? 0 : (size_t)n >= len ? len - 1 : (size_t)n;
    if (GSS_ROUTINE_ERROR(maj) || GSS_CALLING_ERROR(maj))
        append_status(buf, len, &used, maj, GSS_C_GSS_CODE, GSS_C_NO_OID);
    if (min)
        append_status(buf, len, &used, min, GSS_C_MECH_CODE, mech);
    if (secret && *secret) {
        size_t sl = strlen(secret);
        for (char *p = strstr(buf, secret); p; p = strstr(p, secret))
            memset(p, '*', sl);
    }
}

static void set_text(char *buf, size_t len, const char *text)
{
    if (buf && len)
        snprintf(buf, len, "%s", text);
}

/* The text of a minor code (mechglue renumbers the minor codes of mechanisms reached through
 * SPNEGO, so the krb5 constants cannot be compared directly). */
static bool minor_says(OM_uint32 min, const char *what)
{
    OM_uint32 m2 = 0, ctx = 0;
    bool hit = false;
    if (!min)
        return false;
    do {
        gss_buffer_desc s = GSS_C_EMPTY_BUFFER;
        if (GSS_ERROR(gss_display_status(&m2, min, GSS_C_MECH_CODE, GSS_C_NO_OID, &ctx, &s)))
            break;
        if (s.length && memmem(s.value, s.length, what, strlen(what)))
            hit = true;
        gss_release_buffer(&m2, &s);
    } while (ctx);
    return hit;
}

/* KDC unreachable -> EG_EUNAVAIL; malformed tokens -> EG_EPROTO; anything else the peer or the
 * KDC refused -> EG_EAUTH. */
static int map_status(OM_uint32 maj, OM_uint32 min)
{
    switch ((krb5_error_code)min) {
    case KRB5_KDC_UNREACH:
    case KRB5_REALM_CANT_RESOLVE:
    case KRB5_REALM_UNKNOWN:
        return EG_EUNAVAIL;
    default:
        break;
    }
    if (minor_says(min, "Cannot contact any KDC") || minor_says(min, "Cannot find KDC") ||
        minor_says(min, "Cannot resolve network address for KDC"))
        return EG_EUNAVAIL;
    switch (GSS_ROUTINE_ERROR(maj)) {
    case GSS_S_DEFECTIVE_TOKEN:
    case GSS_S_BAD_SIG:
    case GSS_S_NO_CONTEXT:
        return EG_EPROTO;
    case GSS_S_BAD_MECH:
        return EG_EUNSUPPORTED;
    default:
        return EG_EAUTH;
    }
}

static bool is_expired(OM_uint32 maj, OM_uint32 min)
{
    return GSS_ROUTINE_ERROR(maj) == GSS_S_CREDENTIALS_EXPIRED ||
           GSS_ROUTINE_ERROR(maj) == GSS_S_CONTEXT_EXPIRED ||
           (krb5_error_code)min == KRB5KRB_AP_ERR_TKT_EXPIRED ||
           (krb5_error_code)min == KRB5KDC_ERR_TGT_REVOKED || minor_says(min, "Ticket expired");
}

static bool mech_available(gss_OID m)
{
    OM_uint32 min = 0;
    gss_OID_set set = GSS_C_NO_OID_SET;
    int present = 0;
    if (GSS_ERROR(gss_indicate_mechs(&min, &set)))
        return false;
    gss_test_oid_set_member(&min, m, set, &present);
    gss_release_oid_set(&min, &set);
    return present != 0;
}

/* ---- credentials ---- */

struct eg_gss_cred {
    pthread_mutex_t mu;
    enum eg_gss_scheme scheme;
    char *principal, *password, *keytab;
    char ccname[64];     /* MEMORY:eg-<pid>-<n>-<gen> (Kerberos) */
    gss_cred_id_t gcred; /* what gss_init_sec_context gets */
    unsigned long renewals;
};

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        eg_free(s);
    }
}

static void destroy_ccache(const char *name)
{
    krb5_context k = NULL;
    krb5_ccache cc = NULL;
    if (!name[0] || krb5_init_context(&k))
        return;
    if (krb5_cc_resolve(k, name, &cc) == 0)
        krb5_cc_destroy(k, cc);
    krb5_free_context(k);
}

static void release_gcred(struct eg_gss_cred *c)
{
    OM_uint32 min = 0;
    if (c->gcred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&min, &c->gcred);
    c->gcred = GSS_C_NO_CREDENTIAL;
    destroy_ccache(c->ccname);
    c->ccname[0] = '\0';
}

static int map_krb5(krb5_error_code code)
{
    switch (code) {
    case KRB5_KDC_UNREACH:
    case KRB5_REALM_CANT_RESOLVE:
    case KRB5_REALM_UNKNOWN:
    case KRB5_KDCREP_MODIFIED:
        return code == KRB5_KDCREP_MODIFIED ? EG_EAUTH : EG_EUNAVAIL;
    case KRB5_PARSE_MALFORMED:
    case KRB5_CONFIG_NODEFREALM:
        return EG_EINVAL;
    case ENOMEM:
        return EG_ENOMEM;
    default:
        return EG_EAUTH;
    }
}

/* Get a TGT for c->principal from the password or the keytab into the private ccache
 * c->ccname (krb5_get_init_creds_*: MIT's GSSAPI refuses a "password" together with a
 * "ccache" in a cred_store). */
static int get_tgt(struct eg_gss_cred *c, const char *what, char *errbuf, size_t errlen)
{
    krb5_context k = NULL;
    krb5_principal p = NULL;
    krb5_get_init_creds_opt *opt = NULL;
    krb5_keytab kt = NULL;
    krb5_ccache cc = NULL;
    krb5_creds creds;
    bool have_creds = false;
    krb5_error_code code;
    int r = 0;
    memset(&creds, 0, sizeof creds);
    if ((code = krb5_init_context(&k))) {
        set_text(errbuf, errlen, "Kerberos: cannot initialise the library (krb5.conf?)");
        return code == ENOMEM ? EG_ENOMEM : EG_EINVAL;
    }
    if ((code = krb5_parse_name(k, c->principal, &p)))
        goto fail;
    if ((code = krb5_get_init_creds_opt_alloc(k, &opt)))
        goto fail;
    if ((code = krb5_cc_resolve(k, c->ccname, &cc)))
        goto fail;
    if ((code = krb5_get_init_creds_opt_set_out_ccache(k, opt, cc)))
        goto fail;
    if (c->password) {
        code = krb5_get_init_creds_password(k, &creds, p, c->password, NULL, NULL, 0, NULL, opt);
    } else {
        if ((code = krb5_kt_resolve(k, c->keytab, &kt)))
            goto fail;
        code = krb5_get_init_creds_keytab(k, &creds, p, kt, 0, NULL, opt);
    }
    if (code)
        goto fail;
    have_creds = true;
    goto out;
fail:
    if (errbuf && errlen) {
        const char *m = krb5_get_error_message(k, code);
        const char *hint = "";
        if (code == KRB5KDC_ERR_PREAUTH_FAILED || code == KRB5KRB_AP_ERR_BAD_INTEGRITY)
            hint = c->password ? "password incorrect: " : "keytab does not match: ";
        else if (code == KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN)
            hint = "unknown principal: ";
        else if (code == KRB5KRB_AP_ERR_SKEW || code == KRB5_KDCREP_SKEW)
            hint = "clock skew: ";
        else if (code == KRB5KDC_ERR_KEY_EXP)
            hint = "password expired: ";
        snprintf(errbuf, errlen, "%s: %s%s", what, hint, m ? m : "unknown error");
        krb5_free_error_message(k, m);
        if (c->password && *c->password)
            for (char *q = strstr(errbuf, c->password); q; q = strstr(q, c->password))
                memset(q, '*', strlen(c->password));
    }
    r = map_krb5(code);
out:
    if (have_creds)
        krb5_free_cred_contents(k, &creds);
    if (kt)
        krb5_kt_close(k, kt);
    if (cc)
        krb5_cc_close(k, cc);
    if (opt)
        krb5_get_init_creds_opt_free(k, opt);
    if (p)
        krb5_free_principal(k, p);
    krb5_free_context(k);
    return r;
}

/* (Re)acquire c->gcred from the stored password or keytab. Called with c->mu held (or before the
 * credential is shared). */
static int acquire(struct eg_gss_cred *c, char *errbuf, size_t errlen)
{
    static unsigned long counter;
    OM_uint32 maj = 0, min = 0, tmin = 0;
    gss_name_t name = GSS_C_NO_NAME;
    gss_cred_id_t kcred = GSS_C_NO_CREDENTIAL, out = GSS_C_NO_CREDENTIAL;
    gss_buffer_desc nb = {strlen(c->principal), c->principal};
    int r = 0;
    char what[EG_GSS_MAX_NAME + 64], old_cc[sizeof c->ccname];

    /* the old credential stays in place until the new one is complete */
    memcpy(old_cc, c->ccname, sizeof old_cc);
    c->ccname[0] = '\0';
    if ((maj = gss_import_name(&min, &nb, GSS_C_NT_USER_NAME, &name)) != GSS_S_COMPLETE) {
        set_error(errbuf, errlen, c->password, "GSSAPI: bad principal name", maj, min, NULL);
        r = EG_EINVAL;
        goto out;
    }
    if (c->scheme == EG_GSS_NTLM) {
        gss_buffer_desc pw = {strlen(c->password), c->password};
        gss_OID_set_desc mechs = {1, &oid_spnego};
        snprintf(what, sizeof what, "NTLM: cannot use the credentials of %s", c->principal);
        maj = gss_acquire_cred_with_password(&min, name, &pw, GSS_C_INDEFINITE, &mechs,
                                             GSS_C_INITIATE, &out, NULL, NULL);
        if (GSS_ERROR(maj)) {
            set_error(errbuf, errlen, c->password, what, maj, min, NULL);
            r = map_status(maj, min);
            goto out;
        }
        gss_OID_set_desc neg = {1, &oid_ntlm};
        maj = gss_set_neg_mechs(&min, out, &neg);
        if (GSS_ERROR(maj)) {
            set_error(errbuf, errlen, c->password, what, maj, min, NULL);
            r = EG_EUNSUPPORTED;
            goto out;
        }
    } else {
        unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        snprintf(c->ccname, sizeof c->ccname, "MEMORY:eg-%ld-%lu", (long)getpid(), n);
        snprintf(what, sizeof what, "Kerberos: cannot get a ticket for %s", c->principal);
        if ((r = get_tgt(c, what, errbuf, errlen)))
            goto out;
        gss_key_value_element_desc el[2] = {{"ccache", c->ccname}, {"client_keytab", c->keytab}};
        gss_key_value_set_desc store = {c->keytab ? 2 : 1, el};
        gss_OID_set_desc kmechs = {1, c->scheme == EG_GSS_KERBEROS ? &oid_krb5 : &oid_spnego};
        maj = gss_acquire_cred_from(&min, name, GSS_C_INDEFINITE, &kmechs, GSS_C_INITIATE, &store,
                                    &kcred, NULL, NULL);
        if (GSS_ERROR(maj)) {
            set_error(errbuf, errlen, c->password, what, maj, min, GSS_C_NO_OID);
            r = map_status(maj, min);
            goto out;
        }
        if (c->scheme != EG_GSS_KERBEROS) {
            gss_OID_set_desc neg = {1, &oid_krb5};
            maj = gss_set_neg_mechs(&min, kcred, &neg);
            if (GSS_ERROR(maj)) {
                set_error(errbuf, errlen, c->password, what, maj, min, &oid_spnego);
                r = EG_EUNSUPPORTED;
                goto out;
            }
        }
        out = kcred;
        kcred = GSS_C_NO_CREDENTIAL;
    }
    if (c->gcred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&tmin, &c->gcred);
    destroy_ccache(old_cc);
    c->gcred = out;
    out = GSS_C_NO_CREDENTIAL;
out:
    if (out != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&tmin, &out);
    if (kcred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&tmin, &kcred);
    if (name != GSS_C_NO_NAME)
        gss_release_name(&tmin, &name);
    if (r) {
        destroy_ccache(c->ccname);
        memcpy(c->ccname, old_cc, sizeof old_cc);
    }
    return r;
}

int eg_gss_cred_new(const struct eg_gss_cred_opts *o, struct eg_gss_cred **ret, char *errbuf,
                    size_t errlen)
{
    struct eg_gss_cred *c = NULL;
    int r;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!o || !ret || !o->principal || !*o->principal || strlen(o->principal) > EG_GSS_MAX_NAME ||
        (!o->password == !o->keytab) ||
        (o->scheme != EG_GSS_NEGOTIATE && o->scheme != EG_GSS_KERBEROS &&
         o->scheme != EG_GSS_NTLM) ||
        (o->scheme == EG_GSS_NTLM && !o->password) || (o->keytab && !*o->keytab) ||
        (o->password && strlen(o->password) > EG_GSS_MAX_PASSWORD)) {
        set_text(errbuf, errlen, "GSSAPI: invalid credential options");
        return EG_EINVAL;
    }
    if (!mech_available(o->scheme == EG_GSS_NTLM ? &oid_ntlm : &oid_krb5) ||
        !mech_available(&oid_spnego)) {
        set_text(errbuf, errlen,
                 o->scheme == EG_GSS_NTLM ? "NTLM: the gss-ntlmssp mechanism is not installed"
                                          : "Kerberos: the GSSAPI krb5 mechanism is not available");
        return EG_EUNSUPPORTED;
    }
    c = eg_calloc(1, sizeof *c);
    if (!c)
        return EG_ENOMEM;
    c->gcred = GSS_C_NO_CREDENTIAL;
    pthread_mutex_init(&c->mu, NULL);
    c->scheme = o->scheme;
    c->principal = eg_strdup(o->principal);
    if (o->password)
        c->password = eg_strdup(o->password);
    if (o->keytab)
        c->keytab = eg_strdup(o->keytab);
    if (!c->principal || (o->password && !c->password) || (o->keytab && !c->keytab)) {
        r = EG_ENOMEM;
        goto out;
    }
    if ((r = acquire(c, errbuf, errlen)))
        goto out;
    *ret = c;
    c = NULL;
out:
    eg_gss_cred_free(c);
    return r;
}

void eg_gss_cred_free(struct eg_gss_cred *c)
{
    if (!c)
        return;
    release_gcred(c);
    pthread_mutex_destroy(&c->mu);
    wipe_free(c->password);
    eg_free(c->principal);
    eg_free(c->keytab);
    eg_free(c);
}

/* ---- contexts ---- */

struct eg_gss_ctx {
    bool initiator, established, renewed;
    enum eg_gss_scheme scheme;
    enum eg_gss_mech mech;
    struct eg_gss_cred *cred; /* initiator */
    gss_cred_id_t acred;      /* acceptor */
    gss_ctx_id_t ctx;
    gss_name_t target;
    char *keytab; /* acceptor */
    uint8_t *cb;
    size_t cb_len;
    struct gss_channel_bindings_struct cbs;
    char *peer;
    unsigned steps;
};

void eg_gss_ctx_free(struct eg_gss_ctx *x)
{
    OM_uint32 min = 0;
    if (!x)
        return;
    if (x->ctx != GSS_C_NO_CONTEXT)
        gss_delete_sec_context(&min, &x->ctx, GSS_C_NO_BUFFER);
    if (x->acred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&min, &x->acred);
    if (x->target != GSS_C_NO_NAME)
        gss_release_name(&min, &x->target);
    eg_free(x->cb);
    eg_free(x->keytab);
    eg_free(x->peer);
    eg_free(x);
}

static int ctx_alloc(const uint8_t *cb, size_t cb_len, struct eg_gss_ctx **ret)
{
    if ((!cb && cb_len) || cb_len > EG_GSS_MAX_TOKEN_BYTES)
        return EG_EINVAL;
    struct eg_gss_ctx *x = eg_calloc(1, sizeof *x);
    if (!x)
        return EG_ENOMEM;
    x->ctx = GSS_C_NO_CONTEXT;
    x->acred = GSS_C_NO_CREDENTIAL;
    x->target = GSS_C_NO_NAME;
    if (cb) {
        x->cb = eg_malloc(cb_len ? cb_len : 1);
        if (!x->cb) {
            eg_free(x);
            return EG_ENOMEM;
        }
        memcpy(x->cb, cb, cb_len);
        x->cb_len = cb_len;
        x->cbs.application_data.length = cb_len;
        x->cbs.application_data.value = x->cb;
    }
    *ret = x;
    return 0;
}

static gss_channel_bindings_t ctx_cbs(struct eg_gss_ctx *x)
{
    return x->cb ? &x->cbs : GSS_C_NO_CHANNEL_BINDINGS;
}

int eg_gss_init_new(struct eg_gss_cred *cred, const char *host, const uint8_t *cb, size_t cb_len,
                    struct eg_gss_ctx **ret)
{
    struct eg_gss_ctx *x = NULL;
    char *svc = NULL;
    OM_uint32 maj, min = 0;
    int r;
    if (!cred || !host || !*host || !ret || strlen(host) > EG_GSS_MAX_NAME ||
        strpbrk(host, "@/ \t\r\n"))
        return EG_EINVAL;
    if ((r = ctx_alloc(cb, cb_len, &x)))
        return r;
    x->initiator = true;
    x->cred = cred;
    x->scheme = cred->scheme;
    if (!(svc = eg_asprintf("HTTP@%s", host))) {
        r = EG_ENOMEM;
        goto out;
    }
    gss_buffer_desc nb = {strlen(svc), svc};
    maj = gss_import_name(&min, &nb, GSS_C_NT_HOSTBASED_SERVICE, &x->target);
    if (GSS_ERROR(maj)) {
        r = EG_EINVAL;
        goto out;
    }
    *ret = x;
    x = NULL;
out:
    eg_free(svc);
    eg_gss_ctx_free(x);
    return r;
}

/* An acceptor credential: Kerberos from the keytab (raw krb5, or SPNEGO restricted to krb5),
 * or SPNEGO restricted to gss-ntlmssp (whose server credential comes from NTLM_USER_FILE /
 * winbind; gss-ntlmssp makes no server credential out of a keytab cred_store). */
static int acceptor_cred(enum eg_gss_scheme s, const char *keytab, bool ntlm, gss_cred_id_t *ret)
{
    OM_uint32 maj = 0, min = 0, tmin = 0;
    gss_OID_set_desc mechs = {1, s == EG_GSS_KERBEROS ? &oid_krb5 : &oid_spnego};
    if (keytab && !ntlm) {
        gss_key_value_element_desc el = {"keytab", keytab};
        gss_key_value_set_desc store = {1, &el};
        maj = gss_acquire_cred_from(&min, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs, GSS_C_ACCEPT,
                                    &store, ret, NULL, NULL);
    } else {
        maj = gss_acquire_cred(&min, GSS_C_NO_NAME, GSS_C_INDEFINITE, &mechs, GSS_C_ACCEPT, ret,
                               NULL, NULL);
    }
    if (GSS_ERROR(maj))
        return GSS_ROUTINE_ERROR(maj) == GSS_S_BAD_MECH ? EG_EUNSUPPORTED : EG_EINVAL;
    if (s != EG_GSS_KERBEROS) {
        gss_OID_set_desc neg = {1, ntlm ? &oid_ntlm : &oid_krb5};
        maj = gss_set_neg_mechs(&min, *ret, &neg);
        if (GSS_ERROR(maj)) {
            gss_release_cred(&tmin, ret);
            return EG_EUNSUPPORTED;
        }
    }
    return 0;
}

/* Whether the client's first token asks for NTLM: a raw NTLMSSP message, or a SPNEGO
 * NegTokenInit that lists the NTLM OID before the Kerberos ones. */
static bool prefers_ntlm(const uint8_t *t, size_t n)
{
    static const uint8_t ntlm_der[] = {0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04,
                                       0x01, 0x82, 0x37, 0x02, 0x02, 0x0a};
    static const uint8_t krb_der[] = {0x06, 0x09, 0x2a, 0x86, 0x48};
    if (n >= 8 && memcmp(t, "NTLMSSP", 8) == 0)
        return true;
    const uint8_t *pn = memmem(t, n, ntlm_der, sizeof ntlm_der);
    const uint8_t *pk = memmem(t, n, krb_der, sizeof krb_der);
    return pn && (!pk || pn < pk);
}

int eg_gss_accept_new(const struct eg_gss_acceptor_opts *o, struct eg_gss_ctx **ret)
{
    struct eg_gss_ctx *x = NULL;
    int r;
    if (!o || !ret ||
        (o->scheme != EG_GSS_NEGOTIATE && o->scheme != EG_GSS_KERBEROS && o->scheme != EG_GSS_NTLM))
        return EG_EINVAL;
    if ((r = ctx_alloc(o->cb, o->cb_len, &x)))
        return r;
    x->scheme = o->scheme;
    if (o->keytab && !(x->keytab = eg_strdup(o->keytab))) {
        r = EG_ENOMEM;
        goto out;
    }
    if ((r = acceptor_cred(o->scheme, o->keytab, o->scheme == EG_GSS_NTLM, &x->acred)))
        goto out;
    *ret = x;
    x = NULL;
out:
    eg_gss_ctx_free(x);
    return r;
}

static int take_token(gss_buffer_t t, uint8_t **out, size_t *out_len)
{
    OM_uint32 min = 0;
    *out = NULL;
    *out_len = 0;
    if (!t->length)
        return 0;
    uint8_t *p = eg_malloc(t->length);
    if (!p) {
        gss_release_buffer(&min, t);
        return EG_ENOMEM;
    }
    memcpy(p, t->value, t->length);
    *out = p;
    *out_len = t->length;
    gss_release_buffer(&min, t);
    return 0;
}

static void init_step(struct eg_gss_ctx *x, gss_buffer_t in, gss_buffer_t out, OM_uint32 *maj,
                      OM_uint32 *min, gss_OID *mech)
{
    OM_uint32 flags = GSS_C_MUTUAL_FLAG | GSS_C_SEQUENCE_FLAG | GSS_C_CONF_FLAG | GSS_C_INTEG_FLAG |
                      GSS_C_REPLAY_FLAG;
    *maj = gss_init_sec_context(min, x->cred->gcred, &x->ctx, x->target,
                                x->scheme == EG_GSS_KERBEROS ? &oid_krb5 : &oid_spnego, flags,
                                GSS_C_INDEFINITE, ctx_cbs(x), in, mech, out, NULL, NULL);
}

int eg_gss_step(struct eg_gss_ctx *x, const uint8_t *in, size_t in_len, uint8_t **out,
                size_t *out_len, bool *done, char *errbuf, size_t errlen)
{
    OM_uint32 maj = 0, min = 0, tmin = 0;
    gss_buffer_desc ib = {in_len, (void *)in}, ob = GSS_C_EMPTY_BUFFER;
    gss_OID mech = GSS_C_NO_OID;
    gss_name_t src = GSS_C_NO_NAME;
    int r = 0;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!x || !out || !out_len || !done || (!in && in_len))
        return EG_EINVAL;
    *out = NULL;
    *out_len = 0;
    if (x->established) {
        set_text(errbuf, errlen, "GSSAPI: the security context is already established");
        return EG_EPROTO;
    }
    if (in_len > EG_GSS_MAX_TOKEN_BYTES) {
        set_text(errbuf, errlen, "GSSAPI: token too large");
        return EG_ELIMIT;
    }
    if (++x->steps > EG_GSS_MAX_STEPS) {
        set_text(errbuf, errlen, "GSSAPI: too many handshake rounds");
        return EG_EPROTO;
    }
    if (x->initiator) {
        struct eg_gss_cred *c = x->cred;
        pthread_mutex_lock(&c->mu);
        if (x->steps == 1 && c->scheme != EG_GSS_NTLM) {
            /* tickets (nearly) expired: get new ones before starting, once */
            OM_uint32 life = 0;
            OM_uint32 m = gss_inquire_cred(&tmin, c->gcred, NULL, &life, NULL, NULL);
            if (GSS_ERROR(m) || life < EG_GSS_RENEW_MARGIN_S) {
                x->renewed = true;
                if ((r = acquire(c, errbuf, errlen))) {
                    pthread_mutex_unlock(&c->mu);
                    goto out;
                }
                c->renewals++;
            }
        }
        if (c->gcred == GSS_C_NO_CREDENTIAL) { /* never fall back to the default cache */
            set_text(errbuf, errlen, "GSSAPI: the credential has no tickets");
            pthread_mutex_unlock(&c->mu);
            r = EG_EAUTH;
            goto out;
        }
        init_step(x, in_len ? &ib : GSS_C_NO_BUFFER, &ob, &maj, &min, &mech);
        if (GSS_ERROR(maj) && is_expired(maj, min) && !x->renewed && x->steps == 1) {
            /* tickets expired: get new ones from the password / keytab, once */
            x->renewed = true;
            gss_release_buffer(&tmin, &ob);
            if (x->ctx != GSS_C_NO_CONTEXT)
                gss_delete_sec_context(&tmin, &x->ctx, GSS_C_NO_BUFFER);
            if ((r = acquire(c, errbuf, errlen))) {
                pthread_mutex_unlock(&c->mu);
                goto out;
            }
            c->renewals++;
            init_step(x, GSS_C_NO_BUFFER, &ob, &maj, &min, &mech);
        }
        if (GSS_ERROR(maj)) {
            char what[EG_GSS_MAX_NAME + 64];
            snprintf(what, sizeof what, "%s: authentication of %s failed",
                     c->scheme == EG_GSS_NTLM ? "NTLM" : "Kerberos", c->principal);
            set_error(errbuf, errlen, c->password, what, maj, min, GSS_C_NO_OID);
            r = map_status(maj, min);
            pthread_mutex_unlock(&c->mu);
            goto out;
        }
        pthread_mutex_unlock(&c->mu);
    } else {
        if (!in_len) {
            set_text(errbuf, errlen, "GSSAPI: empty token from the initiator");
            r = EG_EPROTO;
            goto out;
        }
        if (x->steps == 1 && x->scheme == EG_GSS_NEGOTIATE && mech_available(&oid_ntlm) &&
            prefers_ntlm(in, in_len)) {
            gss_cred_id_t nc = GSS_C_NO_CREDENTIAL;
            if ((r = acceptor_cred(EG_GSS_NEGOTIATE, NULL, true, &nc))) {
                set_text(errbuf, errlen, "NTLM: no acceptor credential (NTLM_USER_FILE?)");
                goto out;
            }
            gss_release_cred(&tmin, &x->acred);
            x->acred = nc;
        }
        maj = gss_accept_sec_context(&min, &x->ctx, x->acred, &ib, ctx_cbs(x), &src, &mech, &ob,
                                     NULL, NULL, NULL);
        if (GSS_ERROR(maj)) {
            set_error(errbuf, errlen, NULL, "GSSAPI: the client's authentication failed", maj, min,
                      GSS_C_NO_OID);
            r = map_status(maj, min);
            /* past the first token, a refused token is a refused authentication (gss-ntlmssp
             * reports a channel-binding mismatch as a defective token) */
            if (GSS_ROUTINE_ERROR(maj) == GSS_S_BAD_BINDINGS || (r == EG_EPROTO && x->steps > 1))
                r = EG_EAUTH;
            goto out;
        }
    }
    if (maj == GSS_S_COMPLETE) {
        x->established = true;
        x->mech = mech_of(mech);
        if (x->mech == EG_GSS_MECH_NONE) {
            gss_OID m = GSS_C_NO_OID;
            if (!GSS_ERROR(
                    gss_inquire_context(&tmin, x->ctx, NULL, NULL, NULL, &m, NULL, NULL, NULL)))
                x->mech = mech_of(m);
        }
        if (!x->initiator && src != GSS_C_NO_NAME) {
            gss_buffer_desc dn = GSS_C_EMPTY_BUFFER;
            if (!GSS_ERROR(gss_display_name(&tmin, src, &dn, NULL))) {
                x->peer = eg_strndup(dn.value, dn.length);
                gss_release_buffer(&tmin, &dn);
                if (!x->peer) {
                    r = EG_ENOMEM;
                    goto out;
                }
            }
        }
    }
    if ((r = take_token(&ob, out, out_len)))
        goto out;
    *done = x->established;
out:
    gss_release_buffer(&tmin, &ob);
    if (src != GSS_C_NO_NAME)
        gss_release_name(&tmin, &src);
    return r;
}

enum eg_gss_mech eg_gss_ctx_mech(const struct eg_gss_ctx *x)
{
    return x && x->established ? x->mech : EG_GSS_MECH_NONE;
}

const char *eg_gss_peer_name(const struct eg_gss_ctx *x)
{
    return x && x->established ? x->peer : NULL;
}

/* ---- sealing ---- */

const char *eg_gss_protocol(enum eg_gss_scheme s)
{
    return s == EG_GSS_KERBEROS ? PROTO_KRB5 : PROTO_SPNEGO;
}

const char *eg_gss_sealed_content_type(enum eg_gss_scheme s)
{
    return s == EG_GSS_KERBEROS
               ? "multipart/encrypted;protocol=\"" PROTO_KRB5 "\";boundary=\"" BOUNDARY "\""
               : "multipart/encrypted;protocol=\"" PROTO_SPNEGO "\";boundary=\"" BOUNDARY "\"";
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int ctx_usable(const struct eg_gss_ctx *x)
{
    if (!x->established || x->mech == EG_GSS_MECH_NONE)
        return EG_ESTATE;
    return 0;
}

static int wrap_error(OM_uint32 maj)
{
    return GSS_ROUTINE_ERROR(maj) == GSS_S_CONTEXT_EXPIRED ? EG_ESTATE : EG_EPROTO;
}

int eg_gss_seal(struct eg_gss_ctx *x, enum eg_gss_scheme s, const char *orig_type,
                const uint8_t *plain, size_t len, char **body, size_t *body_len)
{
    OM_uint32 maj = 0, min = 0;
    char *head = NULL, *b = NULL;
    gss_buffer_desc ob = GSS_C_EMPTY_BUFFER;
    int r;
    static const char tail[] = "--" BOUNDARY "--\r\n";
    if (!x || !body || !body_len || (!plain && len))
        return EG_EINVAL;
    if (!orig_type)
        orig_type = "application/soap+xml;charset=UTF-8";
    if (strpbrk(orig_type, "\r\n") || strlen(orig_type) > EG_GSS_MAX_PART_HEADER)
        return EG_EINVAL;
    if ((r = ctx_usable(x)))
        return r;
    if (len > EG_WSMAN_MAX_RESPONSE_BYTES)
        return EG_ELIMIT;
    if (x->mech == EG_GSS_MECH_KRB5) {
        gss_iov_buffer_desc iov[3] = {
            {GSS_IOV_BUFFER_TYPE_HEADER, {0, NULL}},
            {GSS_IOV_BUFFER_TYPE_DATA, {len, (void *)plain}},
            {GSS_IOV_BUFFER_TYPE_PADDING, {0, NULL}},
        };
        int conf = 0;
        maj = gss_wrap_iov_length(&min, x->ctx, 1, GSS_C_QOP_DEFAULT, &conf, iov, 3);
        if (GSS_ERROR(maj) || !conf) {
            r = GSS_ERROR(maj) ? wrap_error(maj) : EG_EPROTO;
            goto out;
        }
        size_t hl = iov[0].buffer.length, pl = iov[2].buffer.length;
        if (hl > EG_GSS_MAX_SIGNATURE || pl > EG_GSS_MAX_SIGNATURE) {
            r = EG_EPROTO;
            goto out;
        }
        head = eg_asprintf("--" BOUNDARY "\r\n\tContent-Type: %s\r\n\tOriginalContent: "
                           "type=%s;Length=%zu\r\n--" BOUNDARY
                           "\r\n\tContent-Type: application/octet-stream\r\n",
                           eg_gss_protocol(s), orig_type, len + pl);
        if (!head) {
            r = EG_ENOMEM;
            goto out;
        }
        size_t h = strlen(head), total = h + 4 + hl + len + pl + sizeof tail - 1;
        if (!(b = eg_malloc(total + 1))) {
            r = EG_ENOMEM;
            goto out;
        }
        memcpy(b, head, h);
        put_u32le((uint8_t *)b + h, (uint32_t)hl);
        uint8_t *p = (uint8_t *)b + h + 4;
        iov[0].buffer.value = p;
        iov[1].buffer.value = p + hl;
        iov[2].buffer.value = p + hl + len;
        if (len)
            memcpy(p + hl, plain, len);
        maj = gss_wrap_iov(&min, x->ctx, 1, GSS_C_QOP_DEFAULT, &conf, iov, 3);
        if (GSS_ERROR(maj) || !conf || iov[0].buffer.length != hl || iov[2].buffer.length != pl) {
            r = GSS_ERROR(maj) ? wrap_error(maj) : EG_EPROTO;
            goto out;
        }
        memcpy(b + total - (sizeof tail - 1), tail, sizeof tail - 1);
        b[total] = '\0';
        *body_len = total;
    } else {
        /* gss-ntlmssp refuses to wrap an empty buffer (WinRM never seals an empty body) */
        if (!len) {
            r = EG_EINVAL;
            goto out;
        }
        gss_buffer_desc ib = {len, (void *)plain};
        int conf = 0;
        maj = gss_wrap(&min, x->ctx, 1, GSS_C_QOP_DEFAULT, &ib, &conf, &ob);
        if (GSS_ERROR(maj) || !conf || ob.length != len + EG_GSS_NTLM_SIGNATURE) {
            r = GSS_ERROR(maj) ? wrap_error(maj) : EG_EPROTO;
            goto out;
        }
        head = eg_asprintf("--" BOUNDARY "\r\n\tContent-Type: %s\r\n\tOriginalContent: "
                           "type=%s;Length=%zu\r\n--" BOUNDARY
                           "\r\n\tContent-Type: application/octet-stream\r\n",
                           eg_gss_protocol(s), orig_type, len);
        if (!head) {
            r = EG_ENOMEM;
            goto out;
        }
        size_t h = strlen(head), total = h + 4 + ob.length + sizeof tail - 1;
        if (!(b = eg_malloc(total + 1))) {
            r = EG_ENOMEM;
            goto out;
        }
        memcpy(b, head, h);
        put_u32le((uint8_t *)b + h, EG_GSS_NTLM_SIGNATURE);
        memcpy(b + h + 4, ob.value, ob.length);
        memcpy(b + h + 4 + ob.length, tail, sizeof tail - 1);
        b[total] = '\0';
        *body_len = total;
    }
    *body = b;
    b = NULL;
    r = 0;
out:
    gss_release_buffer(&min, &ob);
    eg_free(head);
    eg_free(b);
    return r;
}

/* ---- multipart parsing ---- */

struct cursor {
    const char *p, *end;
};

static bool ci_prefix(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && strncasecmp(p, lit, n) == 0;
}

static void skip_blank(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

/* End of line: CRLF or LF. */
static bool eat_eol(struct cursor *c)
{
    if (c->p < c->end && *c->p == '\r')
        c->p++;
    if (c->p < c->end && *c->p == '\n') {
        c->p++;
        return true;
    }
    return false;
}

/* "--\s*Encrypted Boundary" followed by blanks and end of line. */
static bool eat_boundary(struct cursor *c)
{
    struct cursor t = *c;
    skip_blank(&t);
    if (!ci_prefix(t.p, t.end, "--"))
        return false;
    t.p += 2;
    skip_blank(&t);
    if (!ci_prefix(t.p, t.end, BOUNDARY))
        return false;
    t.p += sizeof BOUNDARY - 1;
    skip_blank(&t);
    if (!eat_eol(&t))
        return false;
    *c = t;
    return true;
}

/* One "Name: value" line (leading blanks allowed); value without trailing blanks. */
static bool eat_header(struct cursor *c, const char *name, const char **v, size_t *vlen)
{
    struct cursor t = *c;
    skip_blank(&t);
    if (!ci_prefix(t.p, t.end, name))
        return false;
    t.p += strlen(name);
    skip_blank(&t);
    if (t.p >= t.end || *t.p != ':')
        return false;
    t.p++;
    skip_blank(&t);
    const char *s = t.p;
    size_t max = (size_t)(t.end - t.p) < EG_GSS_MAX_PART_HEADER ? (size_t)(t.end - t.p)
                                                                : EG_GSS_MAX_PART_HEADER;
    const char *nl = memchr(s, '\n', max);
    if (!nl)
        return false;
    const char *e = nl;
    if (e > s && e[-1] == '\r')
        e--;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (memchr(s, '\0', (size_t)(e - s)))
        return false;
    *v = s;
    *vlen = (size_t)(e - s);
    t.p = nl + 1;
    *c = t;
    return true;
}

static bool valid_protocol(const char *v, size_t n)
{
    return (n == sizeof PROTO_SPNEGO - 1 && strncasecmp(v, PROTO_SPNEGO, n) == 0) ||
           (n == sizeof PROTO_KRB5 - 1 && strncasecmp(v, PROTO_KRB5, n) == 0);
}

int eg_gss_multipart_parse(const char *body, size_t len, struct eg_gss_multipart *ret)
{
    struct cursor c = {body, body + len};
    const char *v = NULL, *oc = NULL, *proto = NULL;
    size_t vl = 0, ocl = 0, proto_len = 0;
    if (!ret || (!body && len))
        return EG_EINVAL;
    if (len > EG_GSS_MAX_SEALED_BODY)
        return EG_ELIMIT;
    while (c.p < c.end && (*c.p == '\r' || *c.p == '\n'))
        c.p++;
    if (!eat_boundary(&c))
        return EG_EPARSE;
    /* first part: Content-Type (the protocol) and OriginalContent, in either order */
    bool have_ct = false, have_oc = false;
    for (int i = 0; i < 2; i++) {
        if (!have_ct && eat_header(&c, "Content-Type", &v, &vl)) {
            have_ct = true;
            if (!valid_protocol(v, vl))
                return EG_EPARSE;
            proto = v;
            proto_len = vl;
        } else if (!have_oc && eat_header(&c, "OriginalContent", &oc, &ocl)) {
            have_oc = true;
        } else {
            return EG_EPARSE;
        }
    }
    /* OriginalContent: type=<type>;Length=<n> */
    if (ocl < 5 || strncasecmp(oc, "type=", 5) != 0)
        return EG_EPARSE;
    const char *lp = NULL;
    for (const char *q = oc + 5; q + 8 <= oc + ocl; q++)
        if (strncasecmp(q, ";Length=", 8) == 0)
            lp = q;
    if (!lp || lp == oc + 5)
        return EG_EPARSE;
    const char *d = lp + 8, *de = oc + ocl;
    if (d == de || de - d > 10)
        return EG_EPARSE;
    uint64_t n = 0;
    for (; d < de; d++) {
        if (*d < '0' || *d > '9')
            return EG_EPARSE;
        n = n * 10 + (uint64_t)(*d - '0');
    }
    if (n > EG_WSMAN_MAX_RESPONSE_BYTES)
        return EG_ELIMIT;
    if (!eat_boundary(&c))
        return EG_EPARSE;
    if (!eat_header(&c, "Content-Type", &v, &vl) ||
        !(vl == 24 && strncasecmp(v, "application/octet-stream", 24) == 0))
        return EG_EPARSE;
    /* the closing boundary ends the body: "--\s*Encrypted Boundary--" + optional blanks/EOL */
    const char *e = c.end;
    while (e > c.p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    static const char close[] = BOUNDARY "--";
    if ((size_t)(e - c.p) < sizeof close - 1 + 2 ||
        strncasecmp(e - (sizeof close - 1), close, sizeof close - 1) != 0)
        return EG_EPARSE;
    e -= sizeof close - 1;
    while (e > c.p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e - c.p < 2 || e[-1] != '-' || e[-2] != '-')
        return EG_EPARSE;
    e -= 2;
    if (e - c.p < 4)
        return EG_EPARSE;
    const uint8_t *pl = (const uint8_t *)c.p;
    size_t plen = (size_t)(e - c.p);
    uint32_t sl = get_u32le(pl);
    if (sl > EG_GSS_MAX_SIGNATURE || sl > plen - 4)
        return EG_EPARSE;
    *ret = (struct eg_gss_multipart){
        .protocol = proto,
        .protocol_len = proto_len,
        .orig_type = oc + 5,
        .orig_type_len = (size_t)(lp - (oc + 5)),
        .length = (size_t)n,
        .payload = pl,
        .payload_len = plen,
        .sig_len = sl,
    };
    return 0;
}

int eg_gss_unseal(struct eg_gss_ctx *x, const char *body, size_t len, uint8_t **plain,
                  size_t *plain_len, char **orig_type, char *errbuf, size_t errlen)
{
    struct eg_gss_multipart m;
    OM_uint32 maj = 0, min = 0;
    gss_buffer_desc ob = GSS_C_EMPTY_BUFFER;
    uint8_t *p = NULL, *work = NULL;
    char *ot = NULL;
    size_t n = 0;
    int conf = 0, r;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!x || !plain || !plain_len || (!body && len))
        return EG_EINVAL;
    if ((r = ctx_usable(x))) {
        set_text(errbuf, errlen, "GSSAPI: no established security context");
        return r;
    }
    if ((r = eg_gss_multipart_parse(body, len, &m))) {
        set_text(errbuf, errlen,
                 r == EG_ELIMIT ? "sealed message too large" : "not a multipart/encrypted message");
        return r;
    }
    const uint8_t *tok = m.payload + 4;
    size_t tok_len = m.payload_len - 4;
    if (x->mech == EG_GSS_MECH_KRB5) {
        /* MIT needs the IOV path: the whole token as one STREAM buffer (header + data) */
        if (!(work = eg_malloc(tok_len ? tok_len : 1))) {
            r = EG_ENOMEM;
            goto out;
        }
        memcpy(work, tok, tok_len);
        gss_iov_buffer_desc iov[2] = {
            {GSS_IOV_BUFFER_TYPE_STREAM, {tok_len, work}},
            {GSS_IOV_BUFFER_TYPE_DATA, {0, NULL}},
        };
        maj = gss_unwrap_iov(&min, x->ctx, &conf, NULL, iov, 2);
        if (GSS_ERROR(maj)) {
            set_error(errbuf, errlen, NULL, "Kerberos: cannot unseal the message", maj, min,
                      &oid_krb5);
            r = wrap_error(maj);
            goto out;
        }
        n = iov[1].buffer.length;
        if (!(p = eg_malloc(n + 1))) {
            r = EG_ENOMEM;
            goto out;
        }
        if (n)
            memcpy(p, iov[1].buffer.value, n);
        if (m.length != n && m.length != tok_len - m.sig_len) {
            set_text(errbuf, errlen, "sealed message: OriginalContent Length does not match");
            r = EG_EPROTO;
            goto out;
        }
    } else {
        if (m.sig_len != EG_GSS_NTLM_SIGNATURE) {
            set_text(errbuf, errlen, "NTLM: signature length is not 16");
            r = EG_EPROTO;
            goto out;
        }
        gss_buffer_desc ib = {tok_len, (void *)tok};
        maj = gss_unwrap(&min, x->ctx, &ib, &ob, &conf, NULL);
        if (GSS_ERROR(maj)) {
            set_error(errbuf, errlen, NULL, "NTLM: cannot unseal the message", maj, min, &oid_ntlm);
            r = wrap_error(maj);
            goto out;
        }
        n = ob.length;
        if (!(p = eg_malloc(n + 1))) {
            r = EG_ENOMEM;
            goto out;
        }
        if (n)
            memcpy(p, ob.value, n);
        if (m.length != n) {
            set_text(errbuf, errlen, "sealed message: OriginalContent Length does not match");
            r = EG_EPROTO;
            goto out;
        }
    }
    if (maj & (GSS_S_DUPLICATE_TOKEN | GSS_S_OLD_TOKEN | GSS_S_UNSEQ_TOKEN | GSS_S_GAP_TOKEN)) {
        set_text(errbuf, errlen, "sealed message replayed or out of sequence");
        r = EG_EPROTO;
        goto out;
    }
    if (!conf) {
        set_text(errbuf, errlen, "sealed message was not encrypted");
        r = EG_EPROTO;
        goto out;
    }
    p[n] = '\0';
    if (orig_type) {
        if (!(ot = eg_strndup(m.orig_type, m.orig_type_len))) {
            r = EG_ENOMEM;
            goto out;
        }
        *orig_type = ot;
        ot = NULL;
    }
    *plain = p;
    *plain_len = n;
    p = NULL;
    r = 0;
out:
    gss_release_buffer(&min, &ob);
    if (p) {
        explicit_bzero(p, n);
        eg_free(p);
    }
    eg_free(work);
    eg_free(ot);
    return r;
}

/* ---- channel binding ---- */

int eg_gss_tls_end_point(const uint8_t *cert_der, size_t der_len, uint8_t **ret, size_t *ret_len)
{
    X509 *x = NULL;
    const unsigned char *p = cert_der;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int md_nid = NID_undef, pk_nid = NID_undef, r = EG_EPARSE;
    if (!cert_der || !der_len || !ret || !ret_len || der_len > EG_MAX_TLS_FILE_BYTES)
        return EG_EINVAL;
    x = d2i_X509(NULL, &p, (long)der_len);
    if (!x || p != cert_der + der_len)
        goto out;
    if (!OBJ_find_sigid_algs(X509_get_signature_nid(x), &md_nid, &pk_nid))
        md_nid = NID_undef;
    const EVP_MD *h = NULL;
    if (md_nid == NID_undef || md_nid == NID_md5 || md_nid == NID_sha1 || md_nid == NID_md5_sha1)
        h = EVP_sha256();
    else
        h = EVP_get_digestbynid(md_nid);
    if (!h)
        h = EVP_sha256();
    if (!X509_digest(x, h, md, &mdlen))
        goto out;
    size_t pl = sizeof CB_PREFIX - 1;
    uint8_t *b = eg_malloc(pl + mdlen);
    if (!b) {
        r = EG_ENOMEM;
        goto out;
    }
    memcpy(b, CB_PREFIX, pl);
    memcpy(b + pl, md, mdlen);
    *ret = b;
    *ret_len = pl + mdlen;
    r = 0;
out:
    X509_free(x);
    return r;
}
