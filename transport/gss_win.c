/* gss_win.c - transport/gss.h in the Windows build: not available yet.
 *
 * The Linux module sits on MIT krb5's GSSAPI (and gss-ntlmssp), which the Windows cross-build
 * does not carry; on Windows the same contract belongs on SSPI (secur32: AcquireCredentialsHandle,
 * InitializeSecurityContext, EncryptMessage), not done yet. Until then every credential or
 * context request fails with EG_EUNSUPPORTED and a sentence saying so, so a console-stored target
 * with Negotiate/Kerberos/NTLM is refused clearly; Basic over HTTPS (the file-configured psrp
 * bridge) and Exchange Online are unaffected. Built only for Windows.
 */
#include "transport/gss.h"

#include <stdio.h>

static int unsupported(char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        snprintf(errbuf, errlen,
                 "Negotiate, Kerberos and NTLM authentication are not available in the Windows "
                 "build of easgate yet: use Basic over HTTPS");
    return EG_EUNSUPPORTED;
}

int eg_gss_cred_new(const struct eg_gss_cred_opts *o, struct eg_gss_cred **ret, char *errbuf,
                    size_t errlen)
{
    (void)o;
    if (ret)
        *ret = NULL;
    return unsupported(errbuf, errlen);
}

void eg_gss_cred_free(struct eg_gss_cred *c)
{
    (void)c;
}

int eg_gss_init_new(struct eg_gss_cred *cred, const char *host, const uint8_t *cb, size_t cb_len,
                    struct eg_gss_ctx **ret)
{
    (void)cred, (void)host, (void)cb, (void)cb_len;
    if (ret)
        *ret = NULL;
    return EG_EUNSUPPORTED;
}

int eg_gss_accept_new(const struct eg_gss_acceptor_opts *o, struct eg_gss_ctx **ret)
{
    (void)o;
    if (ret)
        *ret = NULL;
    return EG_EUNSUPPORTED;
}

int eg_gss_step(struct eg_gss_ctx *x, const uint8_t *in, size_t in_len, uint8_t **out,
                size_t *out_len, bool *done, char *errbuf, size_t errlen)
{
    (void)x, (void)in, (void)in_len;
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (done)
        *done = false;
    return unsupported(errbuf, errlen);
}

enum eg_gss_mech eg_gss_ctx_mech(const struct eg_gss_ctx *x)
{
    (void)x;
    return EG_GSS_MECH_NONE;
}

const char *eg_gss_peer_name(const struct eg_gss_ctx *x)
{
    (void)x;
    return NULL;
}

void eg_gss_ctx_free(struct eg_gss_ctx *x)
{
    (void)x;
}

const char *eg_gss_protocol(enum eg_gss_scheme s)
{
    return s == EG_GSS_KERBEROS ? "application/HTTP-Kerberos-session-encrypted"
                                : "application/HTTP-SPNEGO-session-encrypted";
}

const char *eg_gss_sealed_content_type(enum eg_gss_scheme s)
{
    return s == EG_GSS_KERBEROS
               ? "multipart/encrypted;protocol=\"application/HTTP-Kerberos-session-encrypted\";"
                 "boundary=\"Encrypted Boundary\""
               : "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";"
                 "boundary=\"Encrypted Boundary\"";
}

int eg_gss_seal(struct eg_gss_ctx *x, enum eg_gss_scheme s, const char *orig_type,
                const uint8_t *plain, size_t len, char **body, size_t *body_len)
{
    (void)x, (void)s, (void)orig_type, (void)plain, (void)len;
    if (body)
        *body = NULL;
    if (body_len)
        *body_len = 0;
    return EG_ESTATE;
}

int eg_gss_unseal(struct eg_gss_ctx *x, const char *body, size_t len, uint8_t **plain,
                  size_t *plain_len, char **orig_type, char *errbuf, size_t errlen)
{
    (void)x, (void)body, (void)len;
    if (plain)
        *plain = NULL;
    if (plain_len)
        *plain_len = 0;
    if (orig_type)
        *orig_type = NULL;
    unsupported(errbuf, errlen);
    return EG_ESTATE;
}

int eg_gss_multipart_parse(const char *body, size_t len, struct eg_gss_multipart *ret)
{
    (void)body, (void)len, (void)ret;
    return EG_EUNSUPPORTED;
}

int eg_gss_tls_end_point(const uint8_t *cert_der, size_t der_len, uint8_t **ret, size_t *ret_len)
{
    (void)cert_der, (void)der_len;
    if (ret)
        *ret = NULL;
    if (ret_len)
        *ret_len = 0;
    return EG_EUNSUPPORTED;
}
