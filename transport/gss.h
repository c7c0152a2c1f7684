/* gss.h - GSSAPI security contexts for WinRM (MIT krb5, plus gss-ntlmssp for NTLM): the client's
 * own credentials, the SPNEGO / Kerberos / NTLM token exchange of the HTTP 401 handshake,
 * channel binding over HTTPS, and the sealing of message bodies over plain HTTP
 * (multipart/encrypted, psrp-wire.md section 14).
 *
 * Used by both sides: the agent is the initiator (transport/http_client), the mock Exchange is
 * the acceptor (tests/mock-exchange). Sealing and unsealing work the same on either side of an
 * established context.
 *
 * Credentials are the client's own: a Kerberos password or keytab yields tickets in a private
 * MEMORY: cache owned by the eg_gss_cred (never the process-wide KRB5CCNAME cache, never the
 * default keytab); an NTLM user/password goes to gss-ntlmssp directly. When tickets expire the
 * credential gets new ones from the password or keytab it holds. The password is copied, kept
 * only as long as the credential (it is needed to renew), wiped on free; it never appears in an
 * error text.
 *
 * Error texts: functions that fail write one clear sentence into errbuf (when non-NULL),
 * built from gss_display_status of the major and minor codes plus what was being done
 * ("Kerberos: cannot get a ticket for easgate@EXAMPLE.TEST: Password incorrect"). Nothing here
 * logs.
 *
 * Threads: an eg_gss_cred may be shared by many contexts and threads (internally locked). An
 * eg_gss_ctx belongs to one connection and is used by one thread at a time.
 */
#ifndef EG_GSS_H
#define EG_GSS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Authentication scheme, as in the HTTP Authorization header. */
enum eg_gss_scheme {
    EG_GSS_NEGOTIATE = 1, /* "Negotiate": SPNEGO, which picks Kerberos or NTLM */
    EG_GSS_KERBEROS,      /* "Kerberos": raw Kerberos 5 tokens */
    EG_GSS_NTLM,          /* "Negotiate" carrying the gss-ntlmssp mechanism only */
};

/* The mechanism an established context actually uses (decides the sealing layout). */
enum eg_gss_mech { EG_GSS_MECH_NONE = 0, EG_GSS_MECH_KRB5, EG_GSS_MECH_NTLM };

/* Credentials for an initiator. */
struct eg_gss_cred_opts {
    enum eg_gss_scheme scheme;
    /* Kerberos: "user@REALM" or "user" (default realm of KRB5_CONFIG); NTLM: "DOMAIN\user",
     * "user@domain" or "user". Required. */
    const char *principal;
    const char *password; /* secret; exactly one of password and keytab (NTLM: password only) */
    const char *keytab;   /* Kerberos: path of a client keytab holding principal's keys */
};

struct eg_gss_cred;

/* Check the options and create a credential (the first ticket is got here, so a wrong password
 * or an unreachable KDC fails now: EG_EAUTH / EG_EUNAVAIL; an NTLM password can only be checked
 * by the server, so it fails later, in eg_gss_step). Strings are copied. Returns 0,
 * EG_EINVAL (bad options), EG_EAUTH, EG_EUNAVAIL, EG_EUNSUPPORTED (mechanism not installed, e.g.
 * no gss-ntlmssp), EG_ENOMEM. On success *ret is the credential; free it with
 * eg_gss_cred_free. */
int eg_gss_cred_new(const struct eg_gss_cred_opts *o, struct eg_gss_cred **ret, char *errbuf,
                    size_t errlen) EG_MUST_CHECK;

/* Wipe the password, destroy the private ticket cache and free. Accepts NULL. */
void eg_gss_cred_free(struct eg_gss_cred *c);

/* One security context (one TCP connection). */
struct eg_gss_ctx;

/* Start an initiator context towards the service HTTP@host (host: the server's name from the
 * URL, as the SPN HTTP/<fqdn> wants it). cb / cb_len: channel-binding application data (for
 * HTTPS "tls-server-end-point:" + certificate hash, see eg_gss_tls_end_point), NULL / 0 for
 * none. The credential must outlive the context. Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_gss_init_new(struct eg_gss_cred *cred, const char *host, const uint8_t *cb, size_t cb_len,
                    struct eg_gss_ctx **ret) EG_MUST_CHECK;

/* Acceptor options (tests: the mock Exchange). */
struct eg_gss_acceptor_opts {
    enum eg_gss_scheme scheme; /* which scheme to accept (NEGOTIATE accepts either mechanism) */
    const char *keytab;        /* service keytab for Kerberos; NULL = KRB5_KTNAME / default */
    const uint8_t *cb;         /* expected channel-binding application data; NULL = none */
    size_t cb_len;
};

/* Start an acceptor context. Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_gss_accept_new(const struct eg_gss_acceptor_opts *o, struct eg_gss_ctx **ret) EG_MUST_CHECK;

/* One step of the token exchange, either side. in / in_len: the peer's token (initiator: NULL /
 * 0 on the first step). *out / *out_len: the token to send (eg_malloc'd, caller frees; NULL / 0
 * when there is none). *done: true once the context is established (there may still be an
 * out token to send). If credentials expired the initiator renews them once and goes on.
 * Returns 0, EG_EAUTH (the peer or KDC refused: wrong password, clock skew, expired or unknown
 * principal, bad channel binding; errbuf says which), EG_EPROTO (malformed token, step after
 * done), EG_EUNAVAIL (KDC unreachable), EG_ENOMEM. */
int eg_gss_step(struct eg_gss_ctx *x, const uint8_t *in, size_t in_len, uint8_t **out,
                size_t *out_len, bool *done, char *errbuf, size_t errlen) EG_MUST_CHECK;

/* The mechanism of an established context (EG_GSS_MECH_NONE before). */
enum eg_gss_mech eg_gss_ctx_mech(const struct eg_gss_ctx *x);

/* Acceptor: the authenticated client's name ("easgate@EXAMPLE.TEST", "EXAMPLE\\user"),
 * borrowed, NULL before the context is established. */
const char *eg_gss_peer_name(const struct eg_gss_ctx *x);

/* Free the context. Accepts NULL. */
void eg_gss_ctx_free(struct eg_gss_ctx *x);

/* The multipart "protocol" value for a scheme: "application/HTTP-SPNEGO-session-encrypted" for
 * NEGOTIATE and NTLM, "application/HTTP-Kerberos-session-encrypted" for KERBEROS. */
const char *eg_gss_protocol(enum eg_gss_scheme s);

/* The Content-Type header value of a sealed body:
 * multipart/encrypted;protocol="<protocol>";boundary="Encrypted Boundary". */
const char *eg_gss_sealed_content_type(enum eg_gss_scheme s);

/* Seal plain (len bytes, content type orig_type such as
 * "application/soap+xml;charset=UTF-8") into the multipart/encrypted body of psrp-wire.md 14,
 * with the layout of the context's mechanism (NTLM: 16-byte signature + RC4 data; Kerberos:
 * gss_wrap_iov HEADER | DATA | PADDING). Advances the context's sequence. orig_type NULL =
 * EG_HTTP_CLIENT_SOAP_TYPE's value; no CR/LF (EG_EINVAL). NTLM cannot seal an empty plaintext
 * (gss-ntlmssp refuses it: EG_EINVAL); Kerberos can. *body / *body_len: eg_malloc'd
 * (NUL-terminated), caller frees. Returns 0, EG_ESTATE (context not established, or expired:
 * authenticate again), EG_ELIMIT (len over EG_WSMAN_MAX_RESPONSE_BYTES), EG_EPROTO (GSSAPI
 * refused), EG_EINVAL, EG_ENOMEM. */
int eg_gss_seal(struct eg_gss_ctx *x, enum eg_gss_scheme s, const char *orig_type,
                const uint8_t *plain, size_t len, char **body, size_t *body_len) EG_MUST_CHECK;

/* Unseal a multipart/encrypted body (boundaries matched leniently, "--\s*Encrypted Boundary",
 * as Exchange writes them). Checks the declared Length against what was unsealed. *plain /
 * *plain_len: eg_malloc'd and NUL-terminated, caller frees; *orig_type (may be NULL to skip):
 * the OriginalContent type, eg_malloc'd. Returns 0, EG_EPARSE (not that layout), EG_EPROTO
 * (integrity check failed - a tampered or replayed message - or a length mismatch; errbuf says
 * which), EG_ESTATE (not established, or expired), EG_ELIMIT, EG_ENOMEM. */
int eg_gss_unseal(struct eg_gss_ctx *x, const char *body, size_t len, uint8_t **plain,
                  size_t *plain_len, char **orig_type, char *errbuf, size_t errlen) EG_MUST_CHECK;

/* The parts of a multipart/encrypted body (eg_gss_multipart_parse); pointers borrow from the
 * parsed body. */
struct eg_gss_multipart {
    const char *protocol; /* first part's Content-Type (one of the eg_gss_protocol values) */
    size_t protocol_len;
    const char *orig_type; /* OriginalContent type=... (without ";Length=") */
    size_t orig_type_len;
    size_t length;          /* OriginalContent Length */
    const uint8_t *payload; /* second part: <u32 LE sig_len><signature><sealed data> */
    size_t payload_len;     /* >= 4 */
    uint32_t sig_len;       /* <= payload_len - 4 */
};

/* Parse a multipart/encrypted body without a context (eg_gss_unseal's first step; the fuzz
 * target's entry): boundaries "--\s*Encrypted Boundary" (CRLF or LF line ends, leading blanks
 * on header lines), the protocol Content-Type and OriginalContent of the first part in either
 * order, the application/octet-stream part up to the closing boundary. Returns 0 (*ret set),
 * EG_EPARSE, EG_ELIMIT (body over EG_GSS_MAX_SEALED_BODY, Length over
 * EG_WSMAN_MAX_RESPONSE_BYTES), EG_EINVAL. */
int eg_gss_multipart_parse(const char *body, size_t len,
                           struct eg_gss_multipart *ret) EG_MUST_CHECK;

/* Channel binding for HTTPS (RFC 5929 tls-server-end-point): "tls-server-end-point:" followed
 * by the hash of the server certificate's DER (the certificate's signature hash, SHA-256 when
 * that is MD5 or SHA-1). *ret / *ret_len: eg_malloc'd. Returns 0, EG_EPARSE (not a
 * certificate), EG_ENOMEM. */
int eg_gss_tls_end_point(const uint8_t *cert_der, size_t der_len, uint8_t **ret,
                         size_t *ret_len) EG_MUST_CHECK;

#endif
