/* gss_auth.c - the mock Exchange's GSSAPI acceptor (contract: fe_internal.h, "GSSAPI
 * authentication"): the Negotiate / Kerberos / NTLM 401 token exchange on the kept-alive
 * connection (one eg_gss_ctx per TCP connection, kept in libmicrohttpd's socket context), the
 * authenticated peer name as the request's user, and over plain HTTP the multipart/encrypted
 * bodies of psrp-wire.md section 14: requests must be sealed (an unsealed body is refused with
 * 400, as WinRM does with AllowUnencrypted = false) and replies are sealed. Over HTTPS the
 * context expects tls-server-end-point channel binding of the listener's certificate.
 */
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/log.h"
#include "fe_internal.h"

#define SOAP_CONTENT_TYPE "application/soap+xml;charset=UTF-8"
#define CLOSING_BOUNDARY  "--Encrypted Boundary--\r\n"

/* One TCP connection's security context. */
struct fe_conn {
    struct eg_gss_ctx *ctx;
    enum eg_gss_scheme scheme; /* of the Authorization header that started ctx */
    bool established;
    char user[128];
};

static void set_err(char *err, size_t size, const char *what)
{
    if (err && size)
        snprintf(err, size, "%s", what);
}

unsigned mx_gss_parse_schemes(const char *list)
{
    unsigned mask = 0;
    const char *p = list;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        if (n == 9 && strncasecmp(p, "negotiate", n) == 0)
            mask |= MX_GSS_NEGOTIATE;
        else if (n == 8 && strncasecmp(p, "kerberos", n) == 0)
            mask |= MX_GSS_KERBEROS;
        else if (n == 4 && strncasecmp(p, "ntlm", n) == 0)
            mask |= MX_GSS_NTLM;
        else
            return 0;
        p += n;
        if (*p == ',')
            p++;
    }
    return mask;
}

/* The channel binding data of the listener's certificate (PEM text). */
static int make_cb(struct mx_fe *fe, char *err, size_t err_size)
{
    BIO *bio = BIO_new_mem_buf(fe->tls_cert, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    int dlen = x ? i2d_X509(x, &der) : -1;
    int rc = EG_ETLS;
    if (dlen > 0)
        rc = eg_gss_tls_end_point(der, (size_t)dlen, &fe->gss_cb, &fe->gss_cb_len);
    if (rc < 0)
        set_err(err, err_size, "cannot compute the channel binding of the TLS certificate");
    OPENSSL_free(der);
    X509_free(x);
    BIO_free(bio);
    return rc;
}

int fe_gss_init(struct mx_fe *fe, const struct mx_fe_opts *o, char *err, size_t err_size)
{
    fe->gss_schemes = o->gss_schemes;
    if (!fe->gss_schemes)
        return 0;
    if (o->gss_keytab && !(fe->gss_keytab = eg_strdup(o->gss_keytab))) {
        set_err(err, err_size, "out of memory");
        return EG_ENOMEM;
    }
    if (fe->tls_cert)
        return make_cb(fe, err, err_size);
    return 0;
}

void fe_gss_free(struct mx_fe *fe)
{
    eg_free(fe->gss_keytab);
    eg_free(fe->gss_cb);
    fe->gss_keytab = NULL;
    fe->gss_cb = NULL;
}

void fe_gss_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                   enum MHD_ConnectionNotificationCode toe)
{
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = eg_calloc(1, sizeof(struct fe_conn));
        return;
    }
    struct fe_conn *fc = *socket_context;
    if (fc) {
        eg_gss_ctx_free(fc->ctx);
        eg_free(fc);
    }
    *socket_context = NULL;
}

static struct fe_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void fe_gss_challenge(struct mx_fe *fe, struct MHD_Response *r)
{
    if (fe->gss_schemes & (MX_GSS_NEGOTIATE | MX_GSS_NTLM))
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Negotiate");
    if (fe->gss_schemes & MX_GSS_KERBEROS)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Kerberos");
}

static void note_failure(struct mx_fe *fe, const char *why)
{
    pthread_mutex_lock(&fe->lock);
    fe->gss.failures++;
    snprintf(fe->gss.last_failure, sizeof fe->gss.last_failure, "%s", why);
    pthread_mutex_unlock(&fe->lock);
}

/* A 401 with the challenge (no token: authentication failed or has to start over) or with a
 * continuation token. */
static enum MHD_Result send_401(struct mx_fe *fe, struct MHD_Connection *c, const char *scheme_name,
                                const char *token_b64)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    if (token_b64) {
        char *h = eg_asprintf("%s %s", scheme_name, token_b64);
        if (!h) {
            MHD_destroy_response(r);
            return MHD_NO;
        }
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, h);
        eg_free(h);
    } else {
        fe_gss_challenge(fe, r);
        if (fe->users) {
            char hdr[200];
            snprintf(hdr, sizeof hdr, "Basic realm=\"%s\"", fe->realm);
            (void)MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, hdr);
        }
    }
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_SERVER, "Microsoft-IIS/10.0");
    enum MHD_Result ret = MHD_queue_response(c, 401, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_plain(struct MHD_Connection *c, unsigned status, const char *text)
{
    char *b = eg_strdup(text);
    return fe_send(c, status, "text/plain; charset=utf-8", b, b ? strlen(b) : 0);
}

/* Parse "Negotiate <b64>" / "Kerberos <b64>" / "NTLM <b64>". Returns false when h is no GSS
 * scheme this listener accepts. */
static bool parse_authz(struct mx_fe *fe, const char *h, enum eg_gss_scheme *scheme,
                        const char **name, const char **b64)
{
    static const struct {
        const char *name;
        enum eg_gss_scheme scheme;
        unsigned mask;
    } schemes[] = {
        {"Negotiate", EG_GSS_NEGOTIATE, MX_GSS_NEGOTIATE | MX_GSS_NTLM},
        {"Kerberos", EG_GSS_KERBEROS, MX_GSS_KERBEROS},
        {"NTLM", EG_GSS_NTLM, MX_GSS_NTLM},
    };
    for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++) {
        size_t n = strlen(schemes[i].name);
        if (strncasecmp(h, schemes[i].name, n) == 0 && h[n] == ' ' &&
            (fe->gss_schemes & schemes[i].mask)) {
            const char *b = h + n;
            while (*b == ' ')
                b++;
            *scheme = schemes[i].scheme;
            *name = schemes[i].name;
            *b64 = b;
            return true;
        }
    }
    return false;
}

/* One handshake step. */
static enum fe_gss_verdict step(struct fe_listener *l, struct MHD_Connection *c, struct fe_conn *fc,
                                const char *authz, struct fe_gss_result *res)
{
    struct mx_fe *fe = l->fe;
    enum eg_gss_scheme scheme;
    const char *name = NULL, *b64 = NULL;
    uint8_t *in = NULL, *out = NULL;
    size_t in_len = 0, out_len = 0;
    char *out_b64 = NULL;
    char why[512] = "";
    bool done = false;
    enum fe_gss_verdict v = FE_GSS_ANSWERED;
    int rc;

    if (!parse_authz(fe, authz, &scheme, &name, &b64))
        return FE_GSS_NONE;
    if (eg_base64_decode(b64, strlen(b64), 0, &in, &in_len) < 0 || in_len == 0) {
        note_failure(fe, "malformed token in the Authorization header");
        res->mhd = send_401(fe, c, name, NULL);
        goto out;
    }
    /* Which acceptor: SPNEGO with both mechanisms (eg_gss_step moves to the NTLM credential when
     * the client's first token asks for NTLM), or the NTLM-only one when only NTLM is
     * accepted. */
    enum eg_gss_scheme accept_scheme = scheme;
    if (scheme == EG_GSS_NEGOTIATE && !(fe->gss_schemes & MX_GSS_NEGOTIATE))
        accept_scheme = EG_GSS_NTLM; /* NTLM only: SPNEGO must carry NTLM */
    if (!fc->ctx || fc->established) {
        /* a new handshake (also re-authentication on an authenticated connection) */
        eg_gss_ctx_free(fc->ctx);
        fc->ctx = NULL;
        fc->established = false;
        fc->user[0] = '\0';
        struct eg_gss_acceptor_opts ao = {.scheme = accept_scheme,
                                          .keytab = fe->gss_keytab,
                                          .cb = fe->gss_cb,
                                          .cb_len = fe->gss_cb_len};
        if ((rc = eg_gss_accept_new(&ao, &fc->ctx)) < 0) {
            snprintf(why, sizeof why, "cannot start an acceptor context: %s", eg_strerror(rc));
            note_failure(fe, why);
            res->mhd = fe_send(c, 500, "text/plain", eg_strdup(why), strlen(why));
            goto out;
        }
        fc->scheme = scheme == EG_GSS_KERBEROS ? EG_GSS_KERBEROS : EG_GSS_NEGOTIATE;
    }
    rc = eg_gss_step(fc->ctx, in, in_len, &out, &out_len, &done, why, sizeof why);
    if (rc < 0) {
        eg_log_info("POST %s authentication failed: %s", name, why[0] ? why : eg_strerror(rc));
        note_failure(fe, why[0] ? why : eg_strerror(rc));
        eg_gss_ctx_free(fc->ctx);
        fc->ctx = NULL;
        res->mhd = send_401(fe, c, name, NULL);
        goto out;
    }
    if (out_len && eg_base64_encode(out, out_len, &out_b64, NULL) < 0) {
        res->mhd = MHD_NO;
        goto out;
    }
    if (!done) {
        res->mhd = send_401(fe, c, name, out_b64);
        goto out;
    }
    const char *peer = eg_gss_peer_name(fc->ctx);
    snprintf(fc->user, sizeof fc->user, "%s", peer ? peer : "unknown");
    fc->established = true;
    enum eg_gss_mech mech = eg_gss_ctx_mech(fc->ctx);
    pthread_mutex_lock(&fe->lock);
    fe->gss.handshakes++;
    if (mech == EG_GSS_MECH_KRB5)
        fe->gss.krb5++;
    else if (mech == EG_GSS_MECH_NTLM)
        fe->gss.ntlm++;
    snprintf(fe->gss.last_user, sizeof fe->gss.last_user, "%s", fc->user);
    pthread_mutex_unlock(&fe->lock);
    eg_log_info("%s authentication of %s (%s) complete", name, fc->user,
                mech == EG_GSS_MECH_KRB5 ? "Kerberos" : "NTLM");
    if (out_b64) {
        res->final_header = eg_asprintf("%s %s", name, out_b64);
        if (!res->final_header) {
            res->mhd = MHD_NO;
            goto out;
        }
    }
    res->handshake = true;
    v = FE_GSS_OK;
out:
    eg_free(in);
    eg_free(out);
    eg_free(out_b64);
    return v;
}

enum fe_gss_verdict fe_gss_request(struct fe_listener *l, struct MHD_Connection *c,
                                   const char *body, size_t len, struct fe_gss_result *res)
{
    struct mx_fe *fe = l->fe;
    memset(res, 0, sizeof *res);
    if (!fe->gss_schemes)
        return FE_GSS_NONE;
    struct fe_conn *fc = conn_of(c);
    if (!fc)
        return FE_GSS_NONE;
    const char *authz =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (authz) {
        enum fe_gss_verdict v = step(l, c, fc, authz, res);
        if (v != FE_GSS_OK)
            return v;
    } else if (!fc->established) {
        return FE_GSS_NONE; /* Basic, or the 401 challenge */
    }
    snprintf(res->user, sizeof res->user, "%s", fc->user);
    res->seal = !fe->tls_cert;
    if (!res->seal || len == 0) {
        return FE_GSS_OK; /* plain stays NULL: the body as it came */
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "multipart/encrypted", 19) != 0) {
        pthread_mutex_lock(&fe->lock);
        fe->gss.plain_rejected++;
        pthread_mutex_unlock(&fe->lock);
        eg_log_info("POST from %s: unsealed body over http refused", fc->user);
        res->mhd = send_plain(c, 400,
                              "The WinRM service cannot process the request: unencrypted traffic "
                              "is not allowed (AllowUnencrypted = false). Over HTTP every message "
                              "after Negotiate or Kerberos authentication must be a "
                              "multipart/encrypted body sealed with the security context.");
        eg_free(res->final_header);
        res->final_header = NULL;
        return FE_GSS_ANSWERED;
    }
    char why[512] = "";
    int rc = eg_gss_unseal(fc->ctx, body, len, &res->plain, &res->plain_len, NULL, why, sizeof why);
    if (rc < 0 && (rc == EG_ESTATE || strcasestr(why, "expired"))) {
        /* the context outlived its ticket: authenticate again, as IIS asks with a 401 */
        eg_log_info("POST from %s: security context expired (%s): 401", fc->user, why);
        note_failure(fe, why[0] ? why : "the security context expired");
        eg_gss_ctx_free(fc->ctx);
        fc->ctx = NULL;
        fc->established = false;
        eg_free(res->final_header);
        res->final_header = NULL;
        res->mhd = send_401(fe, c, NULL, NULL);
        return FE_GSS_ANSWERED;
    }
    if (rc < 0) {
        char msg[700];
        snprintf(msg, sizeof msg,
                 "The WinRM service cannot process the request: the encrypted message could "
                 "not be decrypted (%s).",
                 why[0] ? why : eg_strerror(rc));
        note_failure(fe, msg);
        eg_log_info("POST from %s: %s", fc->user, msg);
        res->mhd = send_plain(c, 400, msg);
        eg_free(res->final_header);
        res->final_header = NULL;
        return FE_GSS_ANSWERED;
    }
    pthread_mutex_lock(&fe->lock);
    fe->gss.sealed_requests++;
    pthread_mutex_unlock(&fe->lock);
    return FE_GSS_OK;
}

enum MHD_Result fe_gss_reply(struct fe_listener *l, struct MHD_Connection *c,
                             struct fe_gss_result *res, unsigned status, char *soap, size_t len)
{
    struct mx_fe *fe = l->fe;
    struct fe_conn *fc = conn_of(c);
    char *body = soap;
    size_t blen = len;
    const char *ct = soap ? SOAP_CONTENT_TYPE : NULL;
    if (res->seal && soap && fc && fc->established) {
        char *sealed = NULL;
        size_t slen = 0;
        int rc = eg_gss_seal(fc->ctx, fc->scheme, SOAP_CONTENT_TYPE, (const uint8_t *)soap, len,
                             &sealed, &slen);
        eg_free(soap);
        if (rc < 0) {
            eg_log_warn("cannot seal a reply: %s", eg_strerror(rc));
            return MHD_NO;
        }
        bool tamper = false;
        pthread_mutex_lock(&fe->lock);
        fe->gss.sealed_replies++;
        if (fe->faults.gss_tamper_count) {
            fe->faults.gss_tamper_count--;
            fe->gss.tampered++;
            tamper = true;
        }
        pthread_mutex_unlock(&fe->lock);
        size_t tail = strlen(CLOSING_BOUNDARY);
        if (tamper && slen > tail + 1) {
            sealed[slen - tail - 1] ^= 0x5a; /* the last byte of the sealed data */
            eg_log_info("sealed reply tampered with (fault injection)");
        }
        body = sealed;
        blen = slen;
        ct = eg_gss_sealed_content_type(fc->scheme);
    }
    struct MHD_Response *r;
    if (body)
        r = MHD_create_response_from_buffer_with_free_callback(blen, body, eg_free);
    else
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        eg_free(body);
        return MHD_NO;
    }
    if (ct)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
    if (res->final_header)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, res->final_header);
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_SERVER, "Microsoft-IIS/10.0");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

void fe_gss_result_clear(struct fe_gss_result *res)
{
    if (!res)
        return;
    if (res->plain) {
        eg_memzero(res->plain, res->plain_len);
        eg_free(res->plain);
    }
    eg_free(res->final_header);
    memset(res, 0, sizeof *res);
}

json_t *fe_gss_json(struct mx_fe *fe)
{
    pthread_mutex_lock(&fe->lock);
    struct fe_gss_stats s = fe->gss;
    unsigned tamper = fe->faults.gss_tamper_count;
    pthread_mutex_unlock(&fe->lock);
    json_t *schemes = json_array();
    if (schemes && (fe->gss_schemes & MX_GSS_NEGOTIATE))
        json_array_append_new(schemes, json_string("negotiate"));
    if (schemes && (fe->gss_schemes & MX_GSS_KERBEROS))
        json_array_append_new(schemes, json_string("kerberos"));
    if (schemes && (fe->gss_schemes & MX_GSS_NTLM))
        json_array_append_new(schemes, json_string("ntlm"));
    return json_pack("{s:o?, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:I}",
                     "schemes", schemes, "basic", fe->users != NULL, "sealing", !fe->tls_cert,
                     "handshakes", (json_int_t)s.handshakes, "kerberos", (json_int_t)s.krb5, "ntlm",
                     (json_int_t)s.ntlm, "failures", (json_int_t)s.failures, "sealed_requests",
                     (json_int_t)s.sealed_requests, "sealed_replies", (json_int_t)s.sealed_replies,
                     "plain_rejected", (json_int_t)s.plain_rejected, "tampered",
                     (json_int_t)s.tampered, "last_failure", s.last_failure, "last_user",
                     s.last_user, "tamper_pending", (json_int_t)tamper);
}

void fe_gss_reset(struct mx_fe *fe)
{
    pthread_mutex_lock(&fe->lock);
    memset(&fe->gss, 0, sizeof fe->gss);
    pthread_mutex_unlock(&fe->lock);
}
