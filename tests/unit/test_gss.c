/* test_gss.c - transport/gss against a throwaway MIT KDC (tests/krb/realm.sh, started in a
 * temporary directory) and gss-ntlmssp: in-process initiator <-> acceptor handshakes (Negotiate
 * and raw Kerberos, with a password and with a client keytab; NTLM), sealing and unsealing in
 * both directions for several sizes with the wire layout checked byte by byte, tampered and
 * replayed messages, lenient boundaries, wrong password, clock skew (a child process under
 * faketime), an expired ticket renewed transparently, channel-binding mismatch, the multipart
 * parser on its own, and tls-server-end-point against the test PKI certificate.
 *
 * Skipped (cmocka skip) only when krb5kdc is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <krb5/krb5.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"
#include "transport/gss.h"
#include "transport/http_client.h"

/* gss-ntlmssp 1.2 leaks per context (EVP_MD_fetch results of its NTLM crypto) and per
 * acceptor credential; those are not ours. LeakSanitizer reads this hook (Sanitize build). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:gssntlmssp.so\n";
}
/* Full malloc stacks (the frame-pointer unwinder stops in libcrypto), so that the suppression
 * above sees gss-ntlmssp under OpenSSL's allocations. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0:malloc_context_size=48";
}

static char tmpdir[PATH_MAX];
static bool have_realm;
static char *krb_user, *krb_pw, *krb_keytab, *svc_keytab, *short_user, *short_pw, *ntlm_user,
    *ntlm_pw;

#define SKIP_IF_NO_REALM()                                                                         \
    do {                                                                                           \
        if (!have_realm) {                                                                         \
            fprintf(stderr, "krb5kdc is not installed: Kerberos tests skipped\n");                 \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static const char *src_dir(void)
{
    const char *s = getenv("EG_SOURCE_DIR");
    return s ? s : ".";
}

static char *dup_env(const char *k)
{
    const char *v = getenv(k);
    return v ? strdup(v) : NULL;
}

static int load_env(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        /* the env file escapes the backslash of DOMAIN\user for the shell */
        char *v = eq + 1, *w = v;
        for (char *r = v; *r; r++) {
            if (r[0] == '\\' && r[1] == '\\')
                r++;
            *w++ = *r;
        }
        *w = '\0';
        setenv(line, v, 1);
    }
    fclose(f);
    return 0;
}

static int group_setup(void **state)
{
    char cmd[3 * PATH_MAX], envp[PATH_MAX + 16];
    (void)state;
    if (access("/usr/sbin/krb5kdc", X_OK) != 0 && system("command -v krb5kdc >/dev/null") != 0)
        return 0; /* have_realm stays false: every test skips */
    snprintf(tmpdir, sizeof tmpdir, "%.900s/eg-test-gss.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(cmd, sizeof cmd, "bash '%s/tests/krb/realm.sh' '%s' >/dev/null", src_dir(), tmpdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "realm.sh failed: %s\n", cmd);
        return -1;
    }
    snprintf(envp, sizeof envp, "%s/env", tmpdir);
    if (load_env(envp) != 0)
        return -1;
    krb_user = dup_env("EG_KRB_USER");
    krb_pw = dup_env("EG_KRB_PASSWORD");
    krb_keytab = dup_env("EG_KRB_CLIENT_KEYTAB");
    svc_keytab = dup_env("EG_KRB_SERVICE_KEYTAB");
    short_user = dup_env("EG_KRB_SHORT_USER");
    short_pw = dup_env("EG_KRB_SHORT_PASSWORD");
    ntlm_user = dup_env("EG_NTLM_USER");
    ntlm_pw = dup_env("EG_NTLM_PASSWORD");
    if (!krb_user || !krb_pw || !krb_keytab || !svc_keytab || !short_user || !short_pw ||
        !ntlm_user || !ntlm_pw)
        return -1;
    /* no test may fall back to a process-wide cache or keytab */
    setenv("KRB5CCNAME", "MEMORY:eg-test-must-stay-empty", 1);
    have_realm = true;
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[3 * PATH_MAX];
    (void)state;
    if (!tmpdir[0])
        return 0;
    snprintf(cmd, sizeof cmd, "bash '%s/tests/krb/realm.sh' stop '%s'; rm -rf '%s'", src_dir(),
             tmpdir, tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "realm cleanup failed\n");
    free(krb_user);
    free(krb_pw);
    free(krb_keytab);
    free(svc_keytab);
    free(short_user);
    free(short_pw);
    free(ntlm_user);
    free(ntlm_pw);
    return 0;
}

/* ---- helpers ---- */

static struct eg_gss_cred *cred_pw(enum eg_gss_scheme s, const char *user, const char *pw)
{
    struct eg_gss_cred *c = NULL;
    char err[512];
    struct eg_gss_cred_opts o = {.scheme = s, .principal = user, .password = pw};
    int r = eg_gss_cred_new(&o, &c, err, sizeof err);
    if (r)
        fprintf(stderr, "cred_new: %s (%s)\n", eg_strerror(r), err);
    assert_int_equal(r, 0);
    return c;
}

/* Run the token exchange to its end; returns the first error (of either side). */
static int handshake(struct eg_gss_ctx *ini, struct eg_gss_ctx *acc, char *err, size_t errlen)
{
    uint8_t *tok = NULL, *back = NULL;
    size_t tok_len = 0, back_len = 0;
    bool idone = false, adone = false;
    int r = 0;
    for (int round = 0; round < 10 && !(idone && adone); round++) {
        r = eg_gss_step(ini, back, back_len, &tok, &tok_len, &idone, err, errlen);
        eg_freep(&back);
        back_len = 0;
        if (r)
            break;
        if (!tok_len)
            continue;
        r = eg_gss_step(acc, tok, tok_len, &back, &back_len, &adone, err, errlen);
        eg_freep(&tok);
        tok_len = 0;
        if (r)
            break;
        if (!back_len && !idone && adone) /* acceptor finished without a token */
            break;
    }
    eg_free(tok);
    eg_free(back);
    if (!r && !(idone && adone))
        r = EG_EPROTO;
    return r;
}

static void pair_new(struct eg_gss_cred *c, enum eg_gss_scheme accept, const char *cb_i,
                     const char *cb_a, struct eg_gss_ctx **ini, struct eg_gss_ctx **acc)
{
    struct eg_gss_acceptor_opts ao = {.scheme = accept,
                                      .keytab = svc_keytab,
                                      .cb = (const uint8_t *)cb_a,
                                      .cb_len = cb_a ? strlen(cb_a) : 0};
    assert_int_equal(
        eg_gss_init_new(c, "localhost", (const uint8_t *)cb_i, cb_i ? strlen(cb_i) : 0, ini), 0);
    assert_int_equal(eg_gss_accept_new(&ao, acc), 0);
}

static void established_pair(struct eg_gss_cred *c, enum eg_gss_scheme accept,
                             struct eg_gss_ctx **ini, struct eg_gss_ctx **acc)
{
    char err[512] = "";
    pair_new(c, accept, NULL, NULL, ini, acc);
    int r = handshake(*ini, *acc, err, sizeof err);
    if (r)
        fprintf(stderr, "handshake: %s (%s)\n", eg_strerror(r), err);
    assert_int_equal(r, 0);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + 3);
    return p;
}

static const char *find_mem(const char *hay, size_t hl, const char *needle)
{
    return memmem(hay, hl, needle, strlen(needle));
}

/* Seal on one side, check the layout, unseal on the other. */
static void roundtrip(struct eg_gss_ctx *from, struct eg_gss_ctx *to, enum eg_gss_scheme s,
                      size_t n)
{
    uint8_t *plain = pattern(n), *out = NULL;
    char *body = NULL, *type = NULL, err[512] = "";
    size_t blen = 0, olen = 0;
    enum eg_gss_mech mech = eg_gss_ctx_mech(from);
    assert_int_equal(
        eg_gss_seal(from, s, "application/soap+xml;charset=UTF-8", plain, n, &body, &blen), 0);
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "--Encrypted Boundary\r\n\tContent-Type: %s\r\n\tOriginalContent: "
                      "type=application/soap+xml;charset=UTF-8;Length=%zu\r\n"
                      "--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n",
                      s == EG_GSS_KERBEROS ? "application/HTTP-Kerberos-session-encrypted"
                                           : "application/HTTP-SPNEGO-session-encrypted",
                      n);
    assert_true(blen > (size_t)hn + 4);
    assert_memory_equal(body, head, (size_t)hn);
    static const char tail[] = "--Encrypted Boundary--\r\n";
    assert_memory_equal(body + blen - (sizeof tail - 1), tail, sizeof tail - 1);
    const uint8_t *p = (const uint8_t *)body + hn;
    uint32_t sl =
        (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    size_t data_len = blen - (size_t)hn - 4 - sl - (sizeof tail - 1);
    if (mech == EG_GSS_MECH_NTLM) {
        assert_memory_equal(p, "\x10\x00\x00\x00", 4);
        assert_memory_equal(p + 4, "\x01\x00\x00\x00", 4); /* NTLM signature version */
        assert_int_equal(data_len, n);                     /* RC4: as long as the plaintext */
    } else {
        assert_int_equal(mech, EG_GSS_MECH_KRB5);
        assert_true(sl >= 16 && sl <= 128); /* AES: header + trailer, no padding */
        assert_int_equal(data_len, n);
        assert_int_equal(p[4], 0x05); /* RFC 4121 wrap token id 05 04 */
        assert_int_equal(p[5], 0x04);
    }
    if (n >= 16) /* encrypted: the plaintext does not appear */
        assert_null(memmem(body, blen, plain, 16));
    int r = eg_gss_unseal(to, body, blen, &out, &olen, &type, err, sizeof err);
    if (r)
        fprintf(stderr, "unseal %zu: %s (%s)\n", n, eg_strerror(r), err);
    assert_int_equal(r, 0);
    assert_int_equal(olen, n);
    if (n)
        assert_memory_equal(out, plain, n);
    assert_int_equal(out[olen], '\0');
    assert_string_equal(type, "application/soap+xml;charset=UTF-8");
    eg_free(out);
    eg_free(type);
    eg_free(body);
    free(plain);
}

static const size_t sizes[] = {0, 1, 15, 16, 17, 4096, 200000};

static void both_directions(struct eg_gss_ctx *ini, struct eg_gss_ctx *acc, enum eg_gss_scheme s)
{
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (!sizes[i] && eg_gss_ctx_mech(ini) == EG_GSS_MECH_NTLM) {
            /* gss-ntlmssp cannot wrap an empty buffer */
            char *body = NULL;
            size_t blen = 0;
            assert_int_equal(eg_gss_seal(ini, s, NULL, (const uint8_t *)"", 0, &body, &blen),
                             EG_EINVAL);
            continue;
        }
        roundtrip(ini, acc, s, sizes[i]);
        roundtrip(acc, ini, s, sizes[i]);
    }
}

/* ---- handshakes and sealing ---- */

static void test_negotiate_password(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_NEGOTIATE, krb_user, krb_pw);
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    assert_null(eg_gss_peer_name(acc));
    established_pair(c, EG_GSS_NEGOTIATE, &ini, &acc);
    assert_int_equal(eg_gss_ctx_mech(ini), EG_GSS_MECH_KRB5);
    assert_int_equal(eg_gss_ctx_mech(acc), EG_GSS_MECH_KRB5);
    assert_string_equal(eg_gss_peer_name(acc), "easgate@EASGATE.TEST");
    both_directions(ini, acc, EG_GSS_NEGOTIATE);
    /* a step after the end is a protocol error */
    uint8_t *o = NULL;
    size_t ol = 0;
    bool done = false;
    assert_int_equal(eg_gss_step(ini, (const uint8_t *)"x", 1, &o, &ol, &done, NULL, 0), EG_EPROTO);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
    /* the process default cache (KRB5CCNAME) was never written */
    krb5_context k = NULL;
    krb5_ccache cc = NULL;
    krb5_principal p = NULL;
    assert_int_equal(krb5_init_context(&k), 0);
    assert_int_equal(krb5_cc_default(k, &cc), 0);
    assert_string_equal(krb5_cc_get_name(k, cc), "eg-test-must-stay-empty");
    assert_int_not_equal(krb5_cc_get_principal(k, cc, &p), 0);
    krb5_cc_close(k, cc);
    krb5_free_context(k);
}

static void test_kerberos_password(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_KERBEROS, "easgate", krb_pw); /* default realm */
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    established_pair(c, EG_GSS_KERBEROS, &ini, &acc);
    assert_int_equal(eg_gss_ctx_mech(ini), EG_GSS_MECH_KRB5);
    assert_string_equal(eg_gss_peer_name(acc), "easgate@EASGATE.TEST");
    both_directions(ini, acc, EG_GSS_KERBEROS);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

static void keytab_case(enum eg_gss_scheme s)
{
    struct eg_gss_cred *c = NULL;
    char err[512] = "";
    struct eg_gss_cred_opts o = {.scheme = s, .principal = krb_user, .keytab = krb_keytab};
    int r = eg_gss_cred_new(&o, &c, err, sizeof err);
    if (r)
        fprintf(stderr, "keytab cred: %s\n", err);
    assert_int_equal(r, 0);
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    established_pair(c, s, &ini, &acc);
    assert_string_equal(eg_gss_peer_name(acc), "easgate@EASGATE.TEST");
    roundtrip(ini, acc, s, 17);
    roundtrip(acc, ini, s, 4096);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

static void test_keytab(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    keytab_case(EG_GSS_NEGOTIATE);
    keytab_case(EG_GSS_KERBEROS);
    /* a keytab without the principal's keys fails at once */
    struct eg_gss_cred *c = NULL;
    char err[512] = "";
    struct eg_gss_cred_opts o = {
        .scheme = EG_GSS_KERBEROS, .principal = krb_user, .keytab = svc_keytab};
    assert_int_equal(eg_gss_cred_new(&o, &c, err, sizeof err), EG_EAUTH);
    assert_null(c);
    assert_true(strlen(err) > 0);
}

static void test_ntlm(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_NTLM, ntlm_user, ntlm_pw);
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    established_pair(c, EG_GSS_NTLM, &ini, &acc);
    assert_int_equal(eg_gss_ctx_mech(ini), EG_GSS_MECH_NTLM);
    assert_int_equal(eg_gss_ctx_mech(acc), EG_GSS_MECH_NTLM);
    assert_non_null(eg_gss_peer_name(acc));
    assert_non_null(strstr(eg_gss_peer_name(acc), "ntlmuser"));
    both_directions(ini, acc, EG_GSS_NTLM);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    /* a Negotiate acceptor (with a Kerberos keytab) accepts the NTLM client too */
    established_pair(c, EG_GSS_NEGOTIATE, &ini, &acc);
    assert_int_equal(eg_gss_ctx_mech(acc), EG_GSS_MECH_NTLM);
    roundtrip(ini, acc, EG_GSS_NEGOTIATE, 17);
    roundtrip(acc, ini, EG_GSS_NEGOTIATE, 4096);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

static void test_ntlm_wrong_password(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_NTLM, ntlm_user, "Wr0ngNtlmSecret");
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    char err[512] = "";
    pair_new(c, EG_GSS_NTLM, NULL, NULL, &ini, &acc);
    assert_int_equal(handshake(ini, acc, err, sizeof err), EG_EAUTH);
    assert_null(strstr(err, "Wr0ngNtlmSecret"));
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

/* ---- integrity ---- */

static void tamper_case(enum eg_gss_scheme s, struct eg_gss_cred *c)
{
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    established_pair(c, s, &ini, &acc);
    char *body = NULL, err[512] = "";
    size_t blen = 0, olen = 0;
    uint8_t *out = NULL;
    const uint8_t msg[] = "<s:Envelope>hello</s:Envelope>";
    assert_int_equal(eg_gss_seal(ini, s, NULL, msg, sizeof msg - 1, &body, &blen), 0);
    /* a flipped byte in the sealed data */
    body[blen - 30] ^= 0x01;
    assert_int_equal(eg_gss_unseal(acc, body, blen, &out, &olen, NULL, err, sizeof err), EG_EPROTO);
    assert_null(out);
    assert_true(strlen(err) > 0);
    eg_free(body);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);

    /* fresh contexts: a wrong OriginalContent Length */
    established_pair(c, s, &ini, &acc);
    assert_int_equal(eg_gss_seal(ini, s, NULL, msg, sizeof msg - 1, &body, &blen), 0);
    char *lp = strstr(body, "Length=30");
    assert_non_null(lp);
    lp[8] = '1';
    assert_int_equal(eg_gss_unseal(acc, body, blen, &out, &olen, NULL, err, sizeof err), EG_EPROTO);
    assert_non_null(strstr(err, "Length"));
    eg_free(body);

    /* a replayed message: the second unseal of the same body fails */
    assert_int_equal(eg_gss_seal(ini, s, NULL, msg, sizeof msg - 1, &body, &blen), 0);
    char *copy = malloc(blen);
    assert_non_null(copy);
    memcpy(copy, body, blen);
    assert_int_equal(eg_gss_unseal(acc, body, blen, &out, &olen, NULL, err, sizeof err), 0);
    eg_freep(&out);
    assert_int_equal(eg_gss_unseal(acc, copy, blen, &out, &olen, NULL, err, sizeof err), EG_EPROTO);
    assert_null(out);
    eg_free(body);
    free(copy);

    /* not the layout at all */
    assert_int_equal(eg_gss_unseal(acc, "<s:Envelope/>", 13, &out, &olen, NULL, err, sizeof err),
                     EG_EPARSE);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
}

static void test_tamper_and_replay(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *k = cred_pw(EG_GSS_NEGOTIATE, krb_user, krb_pw);
    tamper_case(EG_GSS_NEGOTIATE, k);
    eg_gss_cred_free(k);
    struct eg_gss_cred *n = cred_pw(EG_GSS_NTLM, ntlm_user, ntlm_pw);
    tamper_case(EG_GSS_NTLM, n);
    eg_gss_cred_free(n);
}

/* "-- Encrypted Boundary" (Exchange writes a space), LF line ends. */
static void test_lenient_boundary(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_KERBEROS, krb_user, krb_pw);
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    established_pair(c, EG_GSS_KERBEROS, &ini, &acc);
    char *body = NULL, err[512] = "";
    size_t blen = 0, olen = 0;
    uint8_t *out = NULL;
    const uint8_t msg[] = "payload";
    assert_int_equal(eg_gss_seal(acc, EG_GSS_KERBEROS, NULL, msg, 7, &body, &blen), 0);
    /* rewrite every boundary as "-- Encrypted Boundary" */
    char *nb = malloc(blen + 16);
    assert_non_null(nb);
    size_t o = 0;
    for (size_t i = 0; i < blen;) {
        if (blen - i >= 20 && memcmp(body + i, "--Encrypted Boundary", 20) == 0 &&
            (i == 0 || body[i - 1] == '\n' || i > blen - 40)) {
            memcpy(nb + o, "-- Encrypted Boundary", 21);
            o += 21;
            i += 20;
        } else {
            nb[o++] = body[i++];
        }
    }
    assert_int_equal(o, blen + 3);
    assert_non_null(find_mem(nb, o, "-- Encrypted Boundary--\r\n"));
    int r = eg_gss_unseal(ini, nb, o, &out, &olen, NULL, err, sizeof err);
    if (r)
        fprintf(stderr, "lenient: %s\n", err);
    assert_int_equal(r, 0);
    assert_int_equal(olen, 7);
    assert_memory_equal(out, "payload", 7);
    eg_free(out);
    eg_free(body);
    free(nb);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

static void test_not_established(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_KERBEROS, krb_user, krb_pw);
    struct eg_gss_ctx *ini = NULL;
    char *body = NULL;
    size_t blen = 0, olen = 0;
    uint8_t *out = NULL;
    assert_int_equal(eg_gss_init_new(c, "localhost", NULL, 0, &ini), 0);
    assert_int_equal(eg_gss_ctx_mech(ini), EG_GSS_MECH_NONE);
    assert_int_equal(eg_gss_seal(ini, EG_GSS_KERBEROS, NULL, (const uint8_t *)"x", 1, &body, &blen),
                     EG_ESTATE);
    assert_int_equal(eg_gss_unseal(ini, "x", 1, &out, &olen, NULL, NULL, 0), EG_ESTATE);
    eg_gss_ctx_free(ini);
    assert_int_equal(eg_gss_init_new(c, "", NULL, 0, &ini), EG_EINVAL);
    assert_int_equal(eg_gss_init_new(c, "a@b", NULL, 0, &ini), EG_EINVAL);
    eg_gss_cred_free(c);
}

/* ---- failures ---- */

static void test_wrong_password(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = NULL;
    char err[512] = "";
    const char *bad = "NotThePassw0rd-42";
    struct eg_gss_cred_opts o = {
        .scheme = EG_GSS_NEGOTIATE, .principal = krb_user, .password = bad};
    assert_int_equal(eg_gss_cred_new(&o, &c, err, sizeof err), EG_EAUTH);
    assert_null(c);
    assert_non_null(strstr(err, "easgate@EASGATE.TEST"));
    assert_non_null(strstr(err, "password incorrect"));
    assert_null(strstr(err, bad));
    fprintf(stderr, "wrong password: %s\n", err);
    /* unknown principal */
    o.principal = "nobody@EASGATE.TEST";
    assert_int_equal(eg_gss_cred_new(&o, &c, err, sizeof err), EG_EAUTH);
    assert_null(strstr(err, bad));
    /* options */
    o.keytab = krb_keytab;
    assert_int_equal(eg_gss_cred_new(&o, &c, err, sizeof err), EG_EINVAL);
    struct eg_gss_cred_opts n = {.scheme = EG_GSS_NTLM, .principal = "u", .keytab = krb_keytab};
    assert_int_equal(eg_gss_cred_new(&n, &c, err, sizeof err), EG_EINVAL);
}

static void test_kdc_unreachable(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = NULL;
    char err[512] = "";
    struct eg_gss_cred_opts o = {
        .scheme = EG_GSS_KERBEROS, .principal = "easgate@NOWHERE.TEST", .password = krb_pw};
    /* a realm with a KDC on a closed port (written into a private krb5.conf) */
    char conf[PATH_MAX + 32], *old = getenv("KRB5_CONFIG") ? strdup(getenv("KRB5_CONFIG")) : NULL;
    snprintf(conf, sizeof conf, "%s/unreach.conf", tmpdir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "[libdefaults]\n default_realm = NOWHERE.TEST\n dns_lookup_kdc = false\n"
               " udp_preference_limit = 1\n kdc_timeout = 1000\n max_retries = 1\n"
               "[realms]\n NOWHERE.TEST = {\n  kdc = 127.0.0.1:1\n }\n");
    fclose(f);
    setenv("KRB5_CONFIG", conf, 1);
    int r = eg_gss_cred_new(&o, &c, err, sizeof err);
    setenv("KRB5_CONFIG", old, 1);
    free(old);
    fprintf(stderr, "unreachable: %s\n", err);
    assert_int_equal(r, EG_EUNAVAIL);
    assert_null(strstr(err, krb_pw));
}

static void test_channel_binding(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *c = cred_pw(EG_GSS_NEGOTIATE, krb_user, krb_pw);
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    char err[512] = "";
    /* the same binding on both sides: fine */
    pair_new(c, EG_GSS_NEGOTIATE, "tls-server-end-point:AAAA", "tls-server-end-point:AAAA", &ini,
             &acc);
    assert_int_equal(handshake(ini, acc, err, sizeof err), 0);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    /* a different one: the acceptor refuses */
    pair_new(c, EG_GSS_NEGOTIATE, "tls-server-end-point:AAAA", "tls-server-end-point:BBBB", &ini,
             &acc);
    assert_int_equal(handshake(ini, acc, err, sizeof err), EG_EAUTH);
    fprintf(stderr, "binding mismatch: %s\n", err);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
    /* NTLM carries the binding too */
    c = cred_pw(EG_GSS_NTLM, ntlm_user, ntlm_pw);
    pair_new(c, EG_GSS_NTLM, "tls-server-end-point:AAAA", "tls-server-end-point:BBBB", &ini, &acc);
    int r = handshake(ini, acc, err, sizeof err);
    fprintf(stderr, "NTLM binding mismatch: %s\n", err);
    assert_int_equal(r, EG_EAUTH);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

/* The skew child: run under faketime +1h by test_clock_skew (argv[1] == "--skew-child"). */
static int skew_child(void)
{
    struct eg_gss_cred *c = NULL;
    char err[512] = "";
    struct eg_gss_cred_opts o = {.scheme = EG_GSS_NEGOTIATE,
                                 .principal = getenv("EG_KRB_USER"),
                                 .password = getenv("EG_KRB_PASSWORD")};
    int r = eg_gss_cred_new(&o, &c, err, sizeof err);
    eg_gss_cred_free(c);
    printf("%d %s\n", r, err);
    return r == EG_EAUTH && strstr(err, "skew") && !strstr(err, o.password) ? 0 : 1;
}

static void test_clock_skew(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    if (system("command -v faketime >/dev/null") != 0) {
        fprintf(stderr, "faketime not installed: skew test skipped\n");
        skip();
    }
    char exe[PATH_MAX], cmd[2 * PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    /* ASan wants to be first in the library list; faketime preloads itself before it */
    snprintf(cmd, sizeof cmd,
             "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 faketime -f +2h '%s' "
             "--skew-child",
             exe);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[1024] = "";
    if (!fgets(line, sizeof line, p))
        line[0] = '\0';
    int st = pclose(p);
    fprintf(stderr, "skew child: %s", line);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_expired_ticket_renewed(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    /* short@: tickets live 5 seconds */
    struct eg_gss_cred *c = cred_pw(EG_GSS_NEGOTIATE, short_user, short_pw);
    struct eg_gss_ctx *ini = NULL, *acc = NULL;
    established_pair(c, EG_GSS_NEGOTIATE, &ini, &acc);
    roundtrip(ini, acc, EG_GSS_NEGOTIATE, 100);
    sleep(6); /* let the TGT and the service ticket expire (not a timing assertion) */
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    /* a new context gets new tickets from the stored password, transparently */
    established_pair(c, EG_GSS_NEGOTIATE, &ini, &acc);
    roundtrip(ini, acc, EG_GSS_NEGOTIATE, 100);
    roundtrip(acc, ini, EG_GSS_NEGOTIATE, 100);
    eg_gss_ctx_free(ini);
    eg_gss_ctx_free(acc);
    eg_gss_cred_free(c);
}

/* ---- the parser alone ---- */

static void test_multipart_parse(void **state)
{
    (void)state;
    struct eg_gss_multipart m;
    static const char ok[] =
        "--Encrypted Boundary\r\n"
        "\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        "\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=3\r\n"
        "--Encrypted Boundary\r\n"
        "\tContent-Type: application/octet-stream\r\n"
        "\x10\x00\x00\x00"
        "0123456789abcdefXYZ--Encrypted Boundary--\r\n";
    assert_int_equal(eg_gss_multipart_parse(ok, sizeof ok - 1, &m), 0);
    assert_int_equal(m.length, 3);
    assert_int_equal(m.sig_len, 16);
    assert_int_equal(m.payload_len, 4 + 16 + 3);
    assert_memory_equal(m.payload + 20, "XYZ", 3);
    assert_int_equal(m.orig_type_len, strlen("application/soap+xml;charset=UTF-8"));
    assert_memory_equal(m.orig_type, "application/soap+xml;charset=UTF-8", m.orig_type_len);
    assert_memory_equal(m.protocol, "application/HTTP-SPNEGO-session-encrypted", m.protocol_len);
    /* the Exchange spelling, LF line ends, no final CRLF */
    static const char sp[] = "-- Encrypted Boundary\n"
                             "Content-Type: application/HTTP-Kerberos-session-encrypted\n"
                             "OriginalContent: type=text/xml;Length=0\n"
                             "-- Encrypted Boundary\n"
                             "Content-Type: application/octet-stream\n"
                             "\x02\x00\x00\x00"
                             "ab-- Encrypted Boundary--";
    assert_int_equal(eg_gss_multipart_parse(sp, sizeof sp - 1, &m), 0);
    assert_int_equal(m.sig_len, 2);
    assert_int_equal(m.payload_len, 6);
    /* broken variants */
    const char *bad[] = {
        "",
        "--Encrypted Boundary\r\n",
        "--Other Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n",
        "--Encrypted Boundary\r\n\tContent-Type: text/plain\r\n\tOriginalContent: "
        "type=a;Length=1\r\n--Encrypted Boundary\r\n\tContent-Type: "
        "application/octet-stream\r\n\x01\x00\x00\x00xx--Encrypted Boundary--\r\n",
        "--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        "\tOriginalContent: type=a;Length=x1\r\n--Encrypted Boundary\r\n\tContent-Type: "
        "application/octet-stream\r\n\x01\x00\x00\x00xx--Encrypted Boundary--\r\n",
        /* signature length beyond the data */
        "--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        "\tOriginalContent: type=a;Length=1\r\n--Encrypted Boundary\r\n\tContent-Type: "
        "application/octet-stream\r\n\x09\x00\x00\x00xx--Encrypted Boundary--\r\n",
        /* no closing boundary */
        "--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        "\tOriginalContent: type=a;Length=1\r\n--Encrypted Boundary\r\n\tContent-Type: "
        "application/octet-stream\r\n\x01\x00\x00\x00xx",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(eg_gss_multipart_parse(bad[i], strlen(bad[i]), &m), EG_EPARSE);
    /* Length over the limit */
    char big[512];
    int n = snprintf(big, sizeof big,
                     "--Encrypted Boundary\r\n\tContent-Type: "
                     "application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: "
                     "type=a;Length=%llu\r\n--Encrypted Boundary\r\n\tContent-Type: "
                     "application/octet-stream\r\n\x01%c%c%cxx--Encrypted Boundary--\r\n",
                     (unsigned long long)EG_WSMAN_MAX_RESPONSE_BYTES + 1, 0, 0, 0);
    assert_int_equal(eg_gss_multipart_parse(big, (size_t)n, &m), EG_ELIMIT);
    assert_string_equal(eg_gss_protocol(EG_GSS_KERBEROS),
                        "application/HTTP-Kerberos-session-encrypted");
    assert_string_equal(
        eg_gss_sealed_content_type(EG_GSS_NEGOTIATE),
        "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";"
        "boundary=\"Encrypted Boundary\"");
}

/* ---- channel binding data ---- */

static void test_tls_end_point(void **state)
{
    (void)state;
    char dir[1024], cmd[6 * 1024], path[1024 + 32];
    snprintf(dir, sizeof dir, "%.900s/eg-test-gss-pki.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "bash '%s/tests/fixtures/gen-test-pki.sh' '%s'", src_dir(), dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "openssl x509 -in '%s/server.pem' -outform der -out '%s/server.der' && "
             "openssl x509 -in '%s/server.pem' -outform der | openssl dgst -sha256 -binary "
             "> '%s/hash'",
             dir, dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    uint8_t der[8192], hash[64];
    snprintf(path, sizeof path, "%s/server.der", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t dl = fread(der, 1, sizeof der, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/hash", dir);
    f = fopen(path, "rb");
    assert_non_null(f);
    size_t hl = fread(hash, 1, sizeof hash, f);
    fclose(f);
    assert_int_equal(hl, 32);
    uint8_t *cb = NULL;
    size_t cbl = 0;
    assert_int_equal(eg_gss_tls_end_point(der, dl, &cb, &cbl), 0);
    assert_int_equal(cbl, 21 + 32);
    assert_memory_equal(cb, "tls-server-end-point:", 21);
    assert_memory_equal(cb + 21, hash, 32);
    eg_free(cb);
    assert_int_equal(eg_gss_tls_end_point((const uint8_t *)"nope", 4, &cb, &cbl), EG_EPARSE);
    der[dl / 2] ^= 0xff; /* still DER-shaped maybe, but not the same certificate */
    if (eg_gss_tls_end_point(der, dl, &cb, &cbl) == 0) {
        assert_memory_not_equal(cb + 21, hash, 32);
        eg_free(cb);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- the HTTP client against a small acceptor (libmicrohttpd, one context per connection) ---- */

struct gsrv {
    struct MHD_Daemon *d;
    uint16_t port;
    enum eg_gss_scheme scheme;
    bool tls;          /* https: plain bodies, channel binding cb */
    const uint8_t *cb; /* expected binding (borrowed) */
    size_t cb_len;
    atomic_int connections, handshakes, sealed_requests, plain_after_auth;
    char last_peer[128];
};

struct gconn {
    struct eg_gss_ctx *ctx;
};

struct greq {
    char *body;
    size_t len;
};

static void g_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe)
{
    struct gsrv *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->connections, 1);
        *socket_context = calloc(1, sizeof(struct gconn));
    } else if (*socket_context) {
        struct gconn *gc = *socket_context;
        eg_gss_ctx_free(gc->ctx);
        free(gc);
        *socket_context = NULL;
    }
}

static void g_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                        enum MHD_RequestTerminationCode toe)
{
    struct greq *r = *req_cls;
    if (r) {
        free(r->body);
        free(r);
    }
    *req_cls = NULL;
}

static enum MHD_Result g_reply(struct MHD_Connection *c, unsigned code, const char *www,
                               const char *ctype, char *body, size_t len, bool close)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (www)
        MHD_add_response_header(resp, "WWW-Authenticate", www);
    if (ctype)
        MHD_add_response_header(resp, "Content-Type", ctype);
    if (close)
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result g_handler(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **req_cls)
{
    struct gsrv *s = cls;
    struct greq *r = *req_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *req_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        char *nb = realloc(r->body, r->len + *upload_size + 1);
        if (!nb)
            return MHD_NO;
        r->body = nb;
        memcpy(r->body + r->len, upload, *upload_size);
        r->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct gconn *gc = ci ? ci->socket_context : NULL;
    const char *scheme = s->scheme == EG_GSS_KERBEROS ? "Kerberos" : "Negotiate";
    if (!gc)
        return MHD_NO;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!eg_gss_peer_name(gc->ctx)) {
        if (!auth || strncmp(auth, scheme, strlen(scheme)) != 0)
            return g_reply(c, 401, scheme, NULL, NULL, 0, false);
        const char *b64 = auth + strlen(scheme) + 1;
        uint8_t *in = NULL, *out = NULL;
        size_t in_len = 0, out_len = 0;
        bool done = false;
        if (eg_base64_decode(b64, strlen(b64), 0, &in, &in_len))
            return g_reply(c, 400, NULL, NULL, NULL, 0, true);
        if (!gc->ctx) {
            struct eg_gss_acceptor_opts ao = {
                .scheme = s->scheme, .keytab = svc_keytab, .cb = s->cb, .cb_len = s->cb_len};
            if (eg_gss_accept_new(&ao, &gc->ctx)) {
                eg_free(in);
                return MHD_NO;
            }
        }
        int rr = eg_gss_step(gc->ctx, in, in_len, &out, &out_len, &done, NULL, 0);
        eg_free(in);
        if (rr) {
            eg_gss_ctx_free(gc->ctx);
            gc->ctx = NULL;
            return g_reply(c, 401, scheme, NULL, NULL, 0, false);
        }
        char *tok = NULL, *www = NULL;
        if (out_len && !eg_base64_encode(out, out_len, &tok, NULL))
            www = eg_asprintf("%s %s", scheme, tok);
        eg_free(out);
        eg_free(tok);
        if (done) {
            atomic_fetch_add(&s->handshakes, 1);
            snprintf(s->last_peer, sizeof s->last_peer, "%s", eg_gss_peer_name(gc->ctx));
        }
        enum MHD_Result ret =
            g_reply(c, done ? 200 : 401, www ? www : scheme, NULL, NULL, 0, false);
        eg_free(www);
        return ret;
    }
    if (s->tls) { /* https: plain "echo:" + body */
        atomic_fetch_add(&s->plain_after_auth, 1);
        char *echo = eg_asprintf("echo:%.*s", (int)r->len, r->body ? r->body : "");
        enum MHD_Result ret = g_reply(c, 200, NULL, "application/soap+xml;charset=UTF-8", echo,
                                      echo ? strlen(echo) : 0, false);
        eg_free(echo);
        return ret;
    }
    /* authenticated: the body must be sealed; answer "echo:" + plaintext, sealed */
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct || strncmp(ct, "multipart/encrypted", 19) != 0) {
        atomic_fetch_add(&s->plain_after_auth, 1);
        return g_reply(c, 401, scheme, NULL, NULL, 0, false);
    }
    uint8_t *plain = NULL;
    size_t plen = 0;
    char *otype = NULL;
    if (eg_gss_unseal(gc->ctx, r->body ? r->body : "", r->len, &plain, &plen, &otype, NULL, 0))
        return g_reply(c, 400, NULL, NULL, NULL, 0, true);
    atomic_fetch_add(&s->sealed_requests, 1);
    size_t el = plen + 5;
    uint8_t *echo = malloc(el);
    memcpy(echo, "echo:", 5);
    memcpy(echo + 5, plain, plen);
    char *body = NULL;
    size_t blen = 0;
    int rr = eg_gss_seal(gc->ctx, s->scheme, otype, echo, el, &body, &blen);
    bool close = plen >= 5 && memcmp(plain, "close", 5) == 0;
    bool tamper = plen == 6 && memcmp(plain, "tamper", 6) == 0;
    if (plen == 5 && memcmp(plain, "plain", 5) == 0) { /* an unsealed 200 answer */
        eg_free(body);
        free(echo);
        eg_free(plain);
        eg_free(otype);
        return g_reply(c, 200, NULL, "application/soap+xml", (char *)"<plain/>", 8, false);
    }
    free(echo);
    eg_free(plain);
    eg_free(otype);
    if (rr)
        return g_reply(c, 500, NULL, NULL, NULL, 0, true);
    if (tamper)
        body[blen - 30] ^= 0x40;
    enum MHD_Result ret =
        g_reply(c, 200, NULL, eg_gss_sealed_content_type(s->scheme), body, blen, close);
    eg_free(body);
    return ret;
}

static void gsrv_start(struct gsrv *s, enum eg_gss_scheme scheme)
{
    memset(s, 0, sizeof *s);
    s->scheme = scheme;
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, g_handler, s, MHD_OPTION_NOTIFY_CONNECTION, g_notify, s,
                            MHD_OPTION_NOTIFY_COMPLETED, g_completed, s, MHD_OPTION_SOCK_ADDR, NULL,
                            MHD_OPTION_END);
    assert_non_null(s->d);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(di);
    s->port = di->port;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *b = calloc(1, 65536);
    assert_non_null(b);
    *len = fread(b, 1, 65535, f);
    fclose(f);
    return b;
}

static void https_case(struct eg_gss_cred *c, const char *acc_cert, bool expect_ok)
{
    char dir[1024], cmd[8 * 1024], path[1024 + 64];
    snprintf(dir, sizeof dir, "%.900s/pki", tmpdir);
    snprintf(cmd, sizeof cmd,
             "[ -f '%s/ca.pem' ] || bash '%s/tests/fixtures/gen-test-pki.sh' '%s' && "
             "openssl x509 -in '%s/%s.pem' -outform der -out '%s/%s.der'",
             dir, src_dir(), dir, dir, acc_cert, dir, acc_cert);
    assert_int_equal(system(cmd), 0);
    size_t cl = 0, kl = 0, dl = 0;
    snprintf(path, sizeof path, "%s/server.pem", dir);
    char *cert = slurp(path, &cl);
    snprintf(path, sizeof path, "%s/server-key.pem", dir);
    char *key = slurp(path, &kl);
    snprintf(path, sizeof path, "%s/%s.der", dir, acc_cert);
    char *der = slurp(path, &dl);
    uint8_t *cb = NULL;
    size_t cbl = 0;
    assert_int_equal(eg_gss_tls_end_point((const uint8_t *)der, dl, &cb, &cbl), 0);

    struct gsrv s;
    memset(&s, 0, sizeof s);
    s.scheme = EG_GSS_NEGOTIATE;
    s.tls = true;
    s.cb = cb;
    s.cb_len = cbl;
    s.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                               MHD_USE_TLS,
                           0, NULL, NULL, g_handler, &s, MHD_OPTION_NOTIFY_CONNECTION, g_notify, &s,
                           MHD_OPTION_NOTIFY_COMPLETED, g_completed, &s, MHD_OPTION_HTTPS_MEM_CERT,
                           cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
    assert_non_null(s.d);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s.d, MHD_DAEMON_INFO_BIND_PORT);
    char url[64], ca[1024 + 16];
    snprintf(url, sizeof url, "https://localhost:%u/wsman", di->port);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    struct eg_http_client_opts o = {.url = url,
                                    .auth = EG_HTTP_CLIENT_AUTH_GSS,
                                    .gss_cred = c,
                                    .gss_scheme = EG_GSS_NEGOTIATE,
                                    .ca_file = ca};
    struct eg_http_client *hc = NULL;
    struct eg_http_client_response resp = {0};
    assert_int_equal(eg_http_client_new(&o, &hc), 0);
    int r = eg_http_client_post(hc, "<e/>", 4, NULL, 0, &resp);
    if (expect_ok) {
        if (r)
            fprintf(stderr, "https post: %s\n", eg_http_client_last_error(hc));
        assert_int_equal(r, 0);
        assert_int_equal(resp.status, 200);
        assert_string_equal(resp.body, "echo:<e/>"); /* plain over TLS, no sealing */
        assert_int_equal(atomic_load(&s.handshakes), 1);
        eg_http_client_response_clear(&resp);
    } else {
        assert_int_equal(r, EG_EAUTH); /* the binding of another certificate */
        assert_int_equal(atomic_load(&s.handshakes), 0);
    }
    eg_http_client_free(hc);
    MHD_stop_daemon(s.d);
    eg_free(cb);
    free(cert);
    free(key);
    free(der);
}

static void test_http_client_gss_https(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *k = cred_pw(EG_GSS_NEGOTIATE, krb_user, krb_pw);
    https_case(k, "server", true);   /* binding of the served certificate */
    https_case(k, "server2", false); /* acceptor expects another certificate's binding */
    eg_gss_cred_free(k);
}

static void http_case(enum eg_gss_scheme scheme, struct eg_gss_cred *c)
{
    struct gsrv s;
    gsrv_start(&s, scheme);
    char url[64];
    snprintf(url, sizeof url, "http://localhost:%u/wsman", s.port);
    struct eg_http_client_opts o = {
        .url = url, .auth = EG_HTTP_CLIENT_AUTH_GSS, .gss_cred = c, .gss_scheme = scheme};
    struct eg_http_client *hc = NULL;
    assert_int_equal(eg_http_client_new(&o, &hc), 0);
    struct eg_http_client_response resp = {0};
    for (int i = 0; i < 3; i++) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "<s:Envelope>%d</s:Envelope>", i);
        int r = eg_http_client_post(hc, msg, (size_t)n, NULL, 0, &resp);
        if (r)
            fprintf(stderr, "post: %s (%s)\n", eg_strerror(r), eg_http_client_last_error(hc));
        assert_int_equal(r, 0);
        assert_int_equal(resp.status, 200);
        assert_int_equal(resp.body_len, (size_t)n + 5);
        assert_memory_equal(resp.body, "echo:", 5);
        assert_memory_equal(resp.body + 5, msg, (size_t)n);
        assert_string_equal(resp.content_type, "application/soap+xml;charset=UTF-8");
        eg_http_client_response_clear(&resp);
    }
    /* one connection, one handshake, every body sealed */
    assert_int_equal(atomic_load(&s.connections), 1);
    assert_int_equal(atomic_load(&s.handshakes), 1);
    assert_int_equal(atomic_load(&s.sealed_requests), 3);
    assert_int_equal(atomic_load(&s.plain_after_auth), 0);
    /* the server drops the connection: the client authenticates the new one and resends */
    assert_int_equal(eg_http_client_post(hc, "close", 5, NULL, 0, &resp), 0);
    eg_http_client_response_clear(&resp);
    assert_int_equal(eg_http_client_post(hc, "after", 5, NULL, 0, &resp), 0);
    assert_int_equal(resp.body_len, 10);
    assert_memory_equal(resp.body, "echo:after", 10);
    eg_http_client_response_clear(&resp);
    assert_int_equal(atomic_load(&s.connections), 2);
    assert_int_equal(atomic_load(&s.handshakes), 2);
    assert_int_equal(eg_http_client_connections(hc), 2);
    /* a tampered sealed answer, and a plain 200 answer over http: both refused */
    assert_int_equal(eg_http_client_post(hc, "tamper", 6, NULL, 0, &resp), EG_EPROTO);
    assert_null(resp.body);
    /* the client goes on with a new connection and a new context */
    assert_int_equal(eg_http_client_post(hc, "again", 5, NULL, 0, &resp), 0);
    assert_memory_equal(resp.body, "echo:again", 10);
    eg_http_client_response_clear(&resp);
    assert_int_equal(atomic_load(&s.connections), 3);
    assert_int_equal(atomic_load(&s.handshakes), 3);
    eg_http_client_free(hc);
    hc = NULL;
    assert_int_equal(eg_http_client_new(&o, &hc), 0);
    assert_int_equal(eg_http_client_post(hc, "plain", 5, NULL, 0, &resp), EG_EPROTO);
    assert_non_null(strstr(eg_http_client_last_error(hc), "unsealed"));
    eg_http_client_free(hc);
    MHD_stop_daemon(s.d);
}

static void test_http_client_gss(void **state)
{
    (void)state;
    SKIP_IF_NO_REALM();
    struct eg_gss_cred *k = cred_pw(EG_GSS_KERBEROS, krb_user, krb_pw);
    http_case(EG_GSS_KERBEROS, k);
    eg_gss_cred_free(k);
    struct eg_gss_cred *n = cred_pw(EG_GSS_NEGOTIATE, krb_user, krb_pw);
    http_case(EG_GSS_NEGOTIATE, n);
    eg_gss_cred_free(n);
    struct eg_gss_cred *t = cred_pw(EG_GSS_NTLM, ntlm_user, ntlm_pw);
    http_case(EG_GSS_NTLM, t);
    eg_gss_cred_free(t);
    /* a wrong NTLM password: the server keeps answering 401 -> EG_EAUTH */
    struct eg_gss_cred *w = cred_pw(EG_GSS_NTLM, ntlm_user, "Wr0ng-Http-Secret");
    struct gsrv s;
    gsrv_start(&s, EG_GSS_NTLM);
    char url[64];
    snprintf(url, sizeof url, "http://localhost:%u/wsman", s.port);
    struct eg_http_client_opts o = {
        .url = url, .auth = EG_HTTP_CLIENT_AUTH_GSS, .gss_cred = w, .gss_scheme = EG_GSS_NTLM};
    struct eg_http_client *hc = NULL;
    struct eg_http_client_response resp = {0};
    assert_int_equal(eg_http_client_new(&o, &hc), 0);
    assert_int_equal(eg_http_client_post(hc, "x", 1, NULL, 0, &resp), EG_EAUTH);
    assert_null(strstr(eg_http_client_last_error(hc), "Wr0ng-Http-Secret"));
    assert_int_equal(atomic_load(&s.sealed_requests), 0);
    eg_http_client_free(hc);
    MHD_stop_daemon(s.d);
    eg_gss_cred_free(w);
    /* options */
    o.gss_cred = NULL;
    assert_int_equal(eg_http_client_new(&o, &hc), EG_EINVAL);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--skew-child") == 0)
        return skew_child();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multipart_parse),
        cmocka_unit_test(test_tls_end_point),
        cmocka_unit_test(test_negotiate_password),
        cmocka_unit_test(test_kerberos_password),
        cmocka_unit_test(test_keytab),
        cmocka_unit_test(test_ntlm),
        cmocka_unit_test(test_ntlm_wrong_password),
        cmocka_unit_test(test_tamper_and_replay),
        cmocka_unit_test(test_lenient_boundary),
        cmocka_unit_test(test_not_established),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_kdc_unreachable),
        cmocka_unit_test(test_channel_binding),
        cmocka_unit_test(test_clock_skew),
        cmocka_unit_test(test_http_client_gss),
        cmocka_unit_test(test_http_client_gss_https),
        cmocka_unit_test(test_expired_ticket_renewed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
