/* http_client.c - libcurl wrapper for one WS-Man endpoint (see http_client.h).
 *
 * One easy handle per client: libcurl keeps the connection of the last transfer open in the
 * handle's own cache (MAXCONNECTS 1) and reuses it for the next POST to the same target. The
 * response body is collected in a growing buffer, refused past max_response_bytes both from
 * Content-Length (MAXFILESIZE) and while streaming (write callback), after any content decoding.
 */
#include "transport/http_client.h"

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"

#ifndef EG_VERSION
#define EG_VERSION "0"
#endif

struct eg_http_client {
    CURL *h;
    char errbuf[CURL_ERROR_SIZE];
    char *url; /* the client's URL (restored after a request to another one) */
    bool has_credentials, https;
    /* AUTH_GSS */
    bool gss;
    struct eg_gss_cred *gss_cred; /* borrowed */
    enum eg_gss_scheme gss_scheme;
    struct eg_gss_ctx *gctx; /* the context of the current connection; NULL = authenticate */
    char *gss_host;          /* host of the URL: the service is HTTP@host */
    bool gss_fresh;          /* the next handshake opens a new connection (after a bad
                                answer: the context's sequence state is lost) */
    uint8_t *cb;             /* https: tls-server-end-point of the current connection */
    size_t cb_len;
    int64_t timeout_ms, io_timeout_ms;
    size_t max_response;
    unsigned long connections;
    /* the body being received */
    char *buf;
    size_t len, cap;
    bool over_limit, nomem;
    /* the response headers being received ("Name: value\0" ...) */
    char *hbuf;
    size_t hlen, hcap;
    bool headers_over_limit;
};

/* ---- libcurl global state ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- helpers ---- */

static bool has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n");
}

static int setopt_error(CURLcode rc)
{
    if (rc == CURLE_OK)
        return 0;
    if (rc == CURLE_OUT_OF_MEMORY)
        return EG_ENOMEM;
    if (rc == CURLE_UNKNOWN_OPTION || rc == CURLE_NOT_BUILT_IN)
        return EG_EUNSUPPORTED;
    return EG_EINVAL;
}

/* http or https, parseable, no user info. */
static int check_url(const char *url, bool *ret_https)
{
    int r = EG_EINVAL;
    char *scheme = NULL, *part = NULL;
    if (!url || !*url || has_crlf(url))
        return EG_EINVAL;
    CURLU *u = curl_url();
    if (!u)
        return EG_ENOMEM;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        r = uc == CURLUE_OUT_OF_MEMORY ? EG_ENOMEM : EG_EINVAL;
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || !scheme)
        goto out;
    bool https = strcasecmp(scheme, "https") == 0;
    if (!https && strcasecmp(scheme, "http") != 0)
        goto out;
    if (curl_url_get(u, CURLUPART_USER, &part, 0) != CURLUE_NO_USER)
        goto out;
    if (curl_url_get(u, CURLUPART_PASSWORD, &part, 0) != CURLUE_NO_PASSWORD)
        goto out;
    *ret_https = https;
    r = 0;
out:
    curl_free(part);
    curl_free(scheme);
    curl_url_cleanup(u);
    return r;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct eg_http_client *c = userdata;
    size_t n = size * nmemb;
    if (n > c->max_response - c->len) {
        c->over_limit = true;
        return 0; /* CURLE_WRITE_ERROR: the transfer is aborted */
    }
    if (c->cap - c->len <= n) { /* keep room for the NUL */
        size_t cap = c->cap ? c->cap : 4096;
        while (cap - c->len <= n)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        if (cap > c->max_response + 1)
            cap = c->max_response + 1;
        char *nb = eg_realloc(c->buf, cap);
        if (!nb) {
            c->nomem = true;
            return 0;
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
    return n;
}

/* One header line of the response (also the status line, which starts a new header block:
 * interim 1xx answers and authentication rounds are forgotten). */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct eg_http_client *c = userdata;
    size_t n = size * nmemb, len = n;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        c->hlen = 0;
        c->headers_over_limit = false;
        return n;
    }
    while (len && (data[len - 1] == '\r' || data[len - 1] == '\n'))
        len--;
    if (!len || memchr(data, '\0', len) || !memchr(data, ':', len))
        return n; /* the blank line at the end, or not a field: ignored */
    if (c->headers_over_limit || len + 1 > EG_HTTP_CLIENT_MAX_HEADER_BYTES - c->hlen) {
        c->headers_over_limit = true;
        return n;
    }
    if (c->hcap - c->hlen < len + 1) {
        size_t cap = c->hcap ? c->hcap : 1024;
        while (cap - c->hlen < len + 1)
            cap *= 2;
        char *nb = eg_realloc(c->hbuf, cap);
        if (!nb) {
            c->nomem = true;
            return 0;
        }
        c->hbuf = nb;
        c->hcap = cap;
    }
    memcpy(c->hbuf + c->hlen, data, len);
    c->hbuf[c->hlen + len] = '\0';
    c->hlen += len + 1;
    return n;
}

static int map_curl_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return EG_ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_AGAIN:
        return EG_EUNAVAIL;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_CLIENTCERT:
        return EG_ETLS;
    case CURLE_FILESIZE_EXCEEDED:
        return EG_ELIMIT;
    case CURLE_OUT_OF_MEMORY:
        return EG_ENOMEM;
    case CURLE_LOGIN_DENIED:
    case CURLE_AUTH_ERROR:
        return EG_EAUTH;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return EG_EPROTO;
    case CURLE_URL_MALFORMAT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        return EG_EINVAL;
    default:
        return EG_EUNAVAIL;
    }
}

/* ---- client ---- */

static int origin_of(const char *url, char **scheme, char **host, char **port);

int eg_http_client_new(const struct eg_http_client_opts *o, struct eg_http_client **ret)
{
    struct eg_http_client *c = NULL;
    bool https = false;
    int r;

    if (!o || !ret)
        return EG_EINVAL;
    if ((r = eg_http_client_check_timeouts(o->connect_timeout_ms, o->io_timeout_ms,
                                           o->response_timeout_ms)))
        return r;
    if ((r = check_url(o->url, &https)))
        return r;
    if (o->auth != EG_HTTP_CLIENT_AUTH_NONE && o->auth != EG_HTTP_CLIENT_AUTH_BASIC &&
        o->auth != EG_HTTP_CLIENT_AUTH_NEGOTIATE && o->auth != EG_HTTP_CLIENT_AUTH_GSS)
        return EG_EINVAL;
    if (o->auth == EG_HTTP_CLIENT_AUTH_GSS &&
        (!o->gss_cred || (o->gss_scheme != EG_GSS_NEGOTIATE && o->gss_scheme != EG_GSS_KERBEROS &&
                          o->gss_scheme != EG_GSS_NTLM)))
        return EG_EINVAL;
    if (o->auth == EG_HTTP_CLIENT_AUTH_NEGOTIATE && !https)
        return EG_EINVAL;
    if (o->auth == EG_HTTP_CLIENT_AUTH_BASIC) {
        if (!o->username || !*o->username || !o->password || has_crlf(o->username) ||
            strchr(o->username, ':'))
            return EG_EINVAL;
        if (!https && !o->allow_cleartext_auth)
            return EG_EINVAL;
    }
    if (has_crlf(o->proxy) || has_crlf(o->ca_file))
        return EG_EINVAL;
    if (o->ca_file && access(o->ca_file, R_OK) != 0)
        return EG_ETLS;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return EG_EUNSUPPORTED;
    if (o->auth == EG_HTTP_CLIENT_AUTH_NEGOTIATE &&
        !(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_SPNEGO))
        return EG_EUNSUPPORTED;

    c = eg_calloc(1, sizeof *c);
    if (!c)
        return EG_ENOMEM;
    c->timeout_ms =
        o->response_timeout_ms ? o->response_timeout_ms : EG_HTTP_CLIENT_DEFAULT_TIMEOUT_MS;
    c->io_timeout_ms = o->io_timeout_ms ? o->io_timeout_ms : EG_HTTP_CLIENT_DEFAULT_IO_TIMEOUT_MS;
    c->has_credentials = o->auth != EG_HTTP_CLIENT_AUTH_NONE;
    c->https = https;
    c->url = eg_strdup(o->url);
    if (!c->url) {
        r = EG_ENOMEM;
        goto out;
    }
    if (o->auth == EG_HTTP_CLIENT_AUTH_GSS) {
        char *scheme = NULL, *host = NULL, *port = NULL;
        c->gss = true;
        c->gss_cred = o->gss_cred;
        c->gss_scheme = o->gss_scheme;
        if ((r = origin_of(o->url, &scheme, &host, &port)) == 0) {
            size_t hl = strlen(host);
            /* an IPv6 literal keeps no brackets in the service name */
            c->gss_host = hl > 2 && host[0] == '[' ? eg_strndup(host + 1, hl - 2) : eg_strdup(host);
        }
        curl_free(scheme);
        curl_free(host);
        curl_free(port);
        if (r)
            goto out;
        if (!c->gss_host) {
            r = EG_ENOMEM;
            goto out;
        }
    }
    c->max_response = o->max_response_bytes ? o->max_response_bytes : EG_WSMAN_MAX_RESPONSE_BYTES;
    if (c->max_response > (size_t)INT64_MAX - 1) {
        r = EG_EINVAL;
        goto out;
    }
    c->h = curl_easy_init();
    if (!c->h) {
        r = EG_ENOMEM;
        goto out;
    }
    CURL *h = c->h;
    int64_t connect_ms =
        o->connect_timeout_ms ? o->connect_timeout_ms : EG_HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if ((r = setopt_error(curl_easy_setopt(h, opt, val))))                                     \
            goto out;                                                                              \
    } while (0)
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_URL, o->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_MAXCONNECTS, 1L);
    SET(CURLOPT_PROXY, o->proxy ? o->proxy : "");
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    SET(CURLOPT_USERAGENT, "easgate/" EG_VERSION);
    /* Ask for no compression; should a server compress anyway (IIS has been seen doing so),
     * libcurl decodes it because an encoding is set, and the size limit applies after
     * decoding. */
    SET(CURLOPT_ACCEPT_ENCODING, "identity");
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_response);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, c);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, c);
    SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SET(CURLOPT_SSL_VERIFYPEER, o->insecure ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, o->insecure ? 0L : 2L);
    if (o->ca_file)
        SET(CURLOPT_CAINFO, o->ca_file);
    if (o->auth == EG_HTTP_CLIENT_AUTH_BASIC) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, o->username);
        SET(CURLOPT_PASSWORD, o->password); /* copied by libcurl; we keep no copy */
    } else if (o->auth == EG_HTTP_CLIENT_AUTH_NEGOTIATE) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_NEGOTIATE);
        SET(CURLOPT_USERPWD, ":"); /* credentials come from the Kerberos ticket cache */
    } else if (o->auth == EG_HTTP_CLIENT_AUTH_GSS && https) {
        SET(CURLOPT_CERTINFO, 1L); /* the server certificate, for channel binding */
    }
#undef SET
    *ret = c;
    c = NULL;
    r = 0;
out:
    eg_http_client_free(c);
    return r;
}

void eg_http_client_free(struct eg_http_client *c)
{
    if (!c)
        return;
    if (c->h)
        curl_easy_cleanup(c->h);
    eg_gss_ctx_free(c->gctx);
    eg_free(c->gss_host);
    eg_free(c->cb);
    eg_free(c->buf);
    eg_free(c->hbuf);
    eg_free(c->url);
    eg_free(c);
}

void eg_http_client_response_clear(struct eg_http_client_response *r)
{
    if (!r)
        return;
    eg_free(r->body);
    eg_free(r->content_type);
    eg_free(r->headers);
    memset(r, 0, sizeof *r);
}

const char *eg_http_client_last_error(const struct eg_http_client *c)
{
    return c ? c->errbuf : "";
}

unsigned long eg_http_client_connections(const struct eg_http_client *c)
{
    return c ? c->connections : 0;
}

int eg_http_client_check_timeouts(int64_t connect_ms, int64_t io_ms, int64_t response_ms)
{
    const int64_t v[3] = {connect_ms, io_ms, response_ms};
    for (int i = 0; i < 3; i++)
        if (v[i] < 0 || v[i] > EG_HTTP_CLIENT_MAX_TIMEOUT_MS)
            return EG_EINVAL;
    return 0;
}

const char *eg_http_client_response_header(const struct eg_http_client_response *r,
                                           const char *name)
{
    if (!r || !r->headers || !name)
        return NULL;
    size_t nl = strlen(name);
    for (size_t off = 0; off < r->headers_len;) {
        const char *line = r->headers + off;
        size_t len = strlen(line);
        if (len > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            return v;
        }
        off += len + 1;
    }
    return NULL;
}

static bool header_name_valid(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

/* Scheme, host and port of url (the port made explicit). */
static int origin_of(const char *url, char **scheme, char **host, char **port)
{
    CURLU *u = curl_url();
    int r = EG_EINVAL;
    if (!u)
        return EG_ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) == CURLUE_OK)
        r = 0;
    curl_url_cleanup(u);
    return r;
}

static bool same_origin(const char *a, const char *b)
{
    char *s1 = NULL, *h1 = NULL, *p1 = NULL, *s2 = NULL, *h2 = NULL, *p2 = NULL;
    bool same = origin_of(a, &s1, &h1, &p1) == 0 && origin_of(b, &s2, &h2, &p2) == 0 &&
                strcasecmp(s1, s2) == 0 && strcasecmp(h1, h2) == 0 && strcmp(p1, p2) == 0;
    curl_free(s1);
    curl_free(h1);
    curl_free(p1);
    curl_free(s2);
    curl_free(h2);
    curl_free(p2);
    return same;
}

static int append_header(struct curl_slist **list, const char *text)
{
    struct curl_slist *tmp = curl_slist_append(*list, text);
    if (!tmp)
        return EG_ENOMEM;
    *list = tmp;
    return 0;
}

/* One transfer. auth_line: an extra "Authorization: ..." header line (the GSS handshake), or
 * NULL. allow_401: return a 401 response like any other (the GSS layer handles it).
 * *new_conn (may be NULL): whether libcurl opened a new connection for it. */
static int do_request(struct eg_http_client *c, const struct eg_http_client_req *rq,
                      struct eg_http_client_response *ret, const char *auth_line, bool allow_401,
                      bool *new_conn)
{
    struct curl_slist *headers = NULL;
    char *line = NULL, *ctype = NULL;
    const char *method = rq && rq->method ? rq->method : "POST";
    bool https = false, get = false, other_url = false;
    int r;

    if (!c || !rq || !ret || (!rq->body && rq->body_len) || rq->response_timeout_ms < 0 ||
        rq->io_timeout_ms < 0 || rq->response_timeout_ms > EG_HTTP_CLIENT_MAX_TIMEOUT_MS ||
        rq->io_timeout_ms > EG_HTTP_CLIENT_MAX_TIMEOUT_MS || has_crlf(rq->content_type) ||
        (rq->n_headers && !rq->headers))
        return EG_EINVAL;
    if (strcmp(method, "GET") == 0)
        get = true;
    else if (strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0 &&
             strcmp(method, "PATCH") != 0 && strcmp(method, "DELETE") != 0)
        return EG_EINVAL;
    if (get && rq->body_len)
        return EG_EINVAL;
    if (rq->body_len > (size_t)INT64_MAX)
        return EG_ELIMIT;
    if (rq->n_headers > EG_HTTP_CLIENT_MAX_EXTRA_HEADERS)
        return EG_ELIMIT;
    for (size_t i = 0; i < rq->n_headers; i++)
        if (!header_name_valid(rq->headers[i].name) || !rq->headers[i].value ||
            has_crlf(rq->headers[i].value))
            return EG_EINVAL;
    if (rq->url && strcmp(rq->url, c->url) != 0) {
        if ((r = check_url(rq->url, &https)))
            return r;
        if (c->has_credentials && !same_origin(rq->url, c->url))
            return EG_EINVAL;
        other_url = true;
    }
    c->errbuf[0] = '\0';
    c->len = c->hlen = 0;
    c->over_limit = c->nomem = c->headers_over_limit = false;

    if (new_conn)
        *new_conn = false;
    if (auth_line && (r = append_header(&headers, auth_line)))
        goto out;
    if (rq->content_type) {
        if (!(line = eg_asprintf("Content-Type: %s", rq->content_type))) {
            r = EG_ENOMEM;
            goto out;
        }
        if ((r = append_header(&headers, line)))
            goto out;
        eg_freep(&line);
    }
    /* No "Expect: 100-continue" round trip before larger bodies. */
    if ((r = append_header(&headers, "Expect:")))
        goto out;
    for (size_t i = 0; i < rq->n_headers; i++) {
        /* "Name;" sends a header with an empty value ("Name:" would remove it) */
        line = rq->headers[i].value[0]
                   ? eg_asprintf("%s: %s", rq->headers[i].name, rq->headers[i].value)
                   : eg_asprintf("%s;", rq->headers[i].name);
        if (!line) {
            r = EG_ENOMEM;
            goto out;
        }
        if ((r = append_header(&headers, line)))
            goto out;
        eg_freep(&line);
    }

    CURL *h = c->h;
    int64_t total = rq->response_timeout_ms ? rq->response_timeout_ms : c->timeout_ms;
    int64_t io = rq->io_timeout_ms ? rq->io_timeout_ms : c->io_timeout_ms;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if ((r = setopt_error(curl_easy_setopt(h, opt, val))))                                     \
            goto out;                                                                              \
    } while (0)
    if (other_url)
        SET(CURLOPT_URL, rq->url);
    if (get) {
        SET(CURLOPT_HTTPGET, 1L);
    } else {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
    }
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_TIMEOUT_MS, (long)total);
    SET(CURLOPT_LOW_SPEED_TIME, (long)((io + 999) / 1000));
#undef SET

    CURLcode rc = curl_easy_perform(h);
    long connects = 0;
    if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0) {
        c->connections += (unsigned long)connects;
        if (new_conn)
            *new_conn = true;
    }
    if (c->over_limit || c->headers_over_limit) {
        r = EG_ELIMIT;
        goto out;
    }
    if (c->nomem) {
        r = EG_ENOMEM;
        goto out;
    }
    if (rc != CURLE_OK) {
        r = map_curl_error(rc);
        long sent = 0;
        /* a timeout before the request went out is a connect (or TLS handshake) timeout: the
         * server is unreachable rather than slow */
        if (r == EG_ETIMEDOUT && curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK &&
            sent == 0)
            r = EG_EUNAVAIL;
        goto out;
    }
    long status = 0;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status < 100) {
        r = EG_EPROTO;
        goto out;
    }
    if (status == 401 && !allow_401) {
        snprintf(c->errbuf, sizeof c->errbuf, "HTTP 401: credentials refused");
        r = EG_EAUTH;
        goto out;
    }
    char *ct = NULL;
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) {
        ctype = eg_strdup(ct);
        if (!ctype) {
            r = EG_ENOMEM;
            goto out;
        }
    }
    if (!c->buf) {
        c->buf = eg_malloc(1);
        if (!c->buf) {
            r = EG_ENOMEM;
            goto out;
        }
        c->cap = 1;
    }
    c->buf[c->len] = '\0';
    *ret = (struct eg_http_client_response){.status = status,
                                            .body = c->buf,
                                            .body_len = c->len,
                                            .content_type = ctype,
                                            .headers = c->hlen ? c->hbuf : NULL,
                                            .headers_len = c->hlen};
    ctype = NULL;
    c->buf = NULL;
    c->len = c->cap = 0;
    if (c->hlen) {
        c->hbuf = NULL;
        c->hlen = c->hcap = 0;
    }
    r = 0;
out:
    /* Do not keep pointers to this call's body, headers and URL in the handle. */
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, NULL);
    if (other_url)
        curl_easy_setopt(c->h, CURLOPT_URL, c->url);
    curl_slist_free_all(headers);
    eg_free(line);
    eg_free(ctype);
    c->len = c->hlen = 0;
    if (r) { /* do not keep a large partial body around */
        eg_freep(&c->buf);
        c->cap = 0;
    }
    return r;
}

/* ---- AUTH_GSS: the 401 token exchange, sealing ---- */

static const char *gss_header_scheme(enum eg_gss_scheme s)
{
    return s == EG_GSS_KERBEROS ? "Kerberos" : "Negotiate";
}

/* The WWW-Authenticate header offering scheme; *tok / *tok_len its token (NULL / 0 for none).
 * Returns whether the scheme was offered at all. */
static bool find_challenge(const struct eg_http_client_response *r, const char *scheme,
                           const char **tok, size_t *tok_len)
{
    static const char name[] = "WWW-Authenticate:";
    size_t sl = strlen(scheme);
    *tok = NULL;
    *tok_len = 0;
    for (size_t off = 0; r->headers && off < r->headers_len;) {
        const char *line = r->headers + off;
        size_t len = strlen(line);
        off += len + 1;
        if (len < sizeof name - 1 || strncasecmp(line, name, sizeof name - 1) != 0)
            continue;
        const char *v = line + sizeof name - 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strncasecmp(v, scheme, sl) != 0 || (v[sl] && v[sl] != ' ' && v[sl] != ','))
            continue;
        v += sl;
        while (*v == ' ')
            v++;
        size_t n = strcspn(v, " ,\t");
        *tok = n ? v : NULL;
        *tok_len = n;
        return true;
    }
    return false;
}

/* tls-server-end-point of the connection's server certificate (libcurl CERTINFO, first entry
 * = the leaf). */
static int update_cb(struct eg_http_client *c)
{
    struct curl_certinfo *ci = NULL;
    if (curl_easy_getinfo(c->h, CURLINFO_CERTINFO, &ci) != CURLE_OK || !ci || ci->num_of_certs < 1)
        return c->cb ? 0 : EG_ETLS;
    for (struct curl_slist *e = ci->certinfo[0]; e; e = e->next) {
        if (strncmp(e->data, "Cert:", 5) != 0)
            continue;
        BIO *b = BIO_new_mem_buf(e->data + 5, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        unsigned char *der = NULL;
        int dl = x ? i2d_X509(x, &der) : -1;
        int r = EG_ETLS;
        if (dl > 0) {
            uint8_t *cb = NULL;
            size_t cbl = 0;
            r = eg_gss_tls_end_point(der, (size_t)dl, &cb, &cbl);
            if (!r) {
                eg_free(c->cb);
                c->cb = cb;
                c->cb_len = cbl;
            }
        }
        OPENSSL_free(der);
        X509_free(x);
        BIO_free(b);
        return r;
    }
    return c->cb ? 0 : EG_ETLS;
}

/* Authenticate the current (or a new) connection: empty POST -> 401 -> token rounds. */
static int gss_handshake(struct eg_http_client *c, const struct eg_http_client_req *orig)
{
    struct eg_http_client_response resp = {0};
    struct eg_http_client_req rq = {.method = "POST",
                                    .url = orig->url,
                                    .content_type = EG_HTTP_CLIENT_SOAP_TYPE,
                                    .body = "",
                                    .body_len = 0,
                                    .response_timeout_ms = orig->response_timeout_ms,
                                    .io_timeout_ms = orig->io_timeout_ms};
    const char *scheme = gss_header_scheme(c->gss_scheme), *tok = NULL;
    uint8_t *in = NULL, *out = NULL;
    char *b64 = NULL, *line = NULL, gerr[CURL_ERROR_SIZE] = "";
    size_t in_len = 0, out_len = 0, tok_len = 0;
    bool done = false, new_conn = false;
    int r;

    eg_gss_ctx_free(c->gctx);
    c->gctx = NULL;
    if (c->gss_fresh)
        curl_easy_setopt(c->h, CURLOPT_FRESH_CONNECT, 1L);
    r = do_request(c, &rq, &resp, NULL, true, &new_conn);
    if (c->gss_fresh) {
        curl_easy_setopt(c->h, CURLOPT_FRESH_CONNECT, 0L);
        c->gss_fresh = false;
    }
    if (r)
        goto out;
    if (resp.status != 401 || !find_challenge(&resp, scheme, &tok, &tok_len)) {
        snprintf(c->errbuf, sizeof c->errbuf, "HTTP %ld: the server does not offer %s", resp.status,
                 scheme);
        r = EG_EAUTH;
        goto out;
    }
    if (c->https && (new_conn || !c->cb) && (r = update_cb(c))) {
        snprintf(c->errbuf, sizeof c->errbuf, "no server certificate for channel binding");
        goto out;
    }
    if ((r = eg_gss_init_new(c->gss_cred, c->gss_host, c->https ? c->cb : NULL,
                             c->https ? c->cb_len : 0, &c->gctx)))
        goto out;
    for (int round = 0; round < EG_GSS_MAX_STEPS; round++) {
        eg_http_client_response_clear(&resp);
        r = eg_gss_step(c->gctx, in, in_len, &out, &out_len, &done, gerr, sizeof gerr);
        eg_freep(&in);
        in_len = 0;
        if (r) {
            snprintf(c->errbuf, sizeof c->errbuf, "%s", gerr);
            goto out;
        }
        if (!out_len) {
            if (done)
                break;
            r = EG_EPROTO;
            goto out;
        }
        if ((r = eg_base64_encode(out, out_len, &b64, NULL)))
            goto out;
        eg_freep(&out);
        if (!(line = eg_asprintf("Authorization: %s %s", scheme, b64))) {
            r = EG_ENOMEM;
            goto out;
        }
        eg_freep(&b64);
        r = do_request(c, &rq, &resp, line, true, &new_conn);
        eg_freep(&line);
        if (r)
            goto out;
        if (new_conn) {
            snprintf(c->errbuf, sizeof c->errbuf, "connection lost during authentication");
            r = EG_EUNAVAIL;
            goto out;
        }
        find_challenge(&resp, scheme, &tok, &tok_len);
        if (tok_len > 2 * EG_GSS_MAX_TOKEN_BYTES) {
            r = EG_ELIMIT;
            goto out;
        }
        if (tok_len && (r = eg_base64_decode(tok, tok_len, 0, &in, &in_len))) {
            r = EG_EPROTO;
            goto out;
        }
        if (resp.status == 401) {
            if (!in_len || done) {
                snprintf(c->errbuf, sizeof c->errbuf, "HTTP 401: credentials refused");
                r = EG_EAUTH;
                goto out;
            }
            continue;
        }
        /* accepted; a last server token completes mutual authentication */
        if (in_len && !done) {
            r = eg_gss_step(c->gctx, in, in_len, &out, &out_len, &done, gerr, sizeof gerr);
            if (r) {
                snprintf(c->errbuf, sizeof c->errbuf, "%s", gerr);
                goto out;
            }
        }
        if (!done) {
            snprintf(c->errbuf, sizeof c->errbuf, "HTTP %ld before authentication completed",
                     resp.status);
            r = EG_EAUTH;
        }
        break;
    }
    if (!r && !done)
        r = EG_EAUTH;
out:
    eg_http_client_response_clear(&resp);
    eg_free(in);
    eg_free(out);
    eg_free(b64);
    eg_free(line);
    if (r) {
        eg_gss_ctx_free(c->gctx);
        c->gctx = NULL;
    }
    return r;
}

static bool is_sealed_type(const char *ct)
{
    return ct && strncasecmp(ct, "multipart/encrypted", 19) == 0;
}

/* Unseal a sealed response in place (body, content_type). */
static int unseal_response(struct eg_http_client *c, struct eg_http_client_response *ret)
{
    uint8_t *plain = NULL;
    size_t plen = 0;
    char *type = NULL, gerr[CURL_ERROR_SIZE] = "";
    int r =
        eg_gss_unseal(c->gctx, ret->body, ret->body_len, &plain, &plen, &type, gerr, sizeof gerr);
    if (r) {
        snprintf(c->errbuf, sizeof c->errbuf, "%s", gerr);
        return r;
    }
    eg_free(ret->body);
    eg_free(ret->content_type);
    ret->body = (char *)plain;
    ret->body_len = plen;
    ret->content_type = type;
    return 0;
}

static int gss_request(struct eg_http_client *c, const struct eg_http_client_req *rq,
                       struct eg_http_client_response *ret)
{
    struct eg_http_client_response resp = {0};
    char *sealed = NULL;
    int r = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct eg_http_client_req q = *rq;
        bool new_conn = false;
        eg_http_client_response_clear(&resp);
        eg_freep(&sealed);
        if (!c->gctx && (r = gss_handshake(c, rq)))
            goto out;
        if (!c->https && rq->body_len) {
            size_t sl = 0;
            r = eg_gss_seal(c->gctx, c->gss_scheme, rq->content_type, (const uint8_t *)rq->body,
                            rq->body_len, &sealed, &sl);
            if (r == EG_ESTATE && attempt == 0) { /* context expired: authenticate again */
                eg_gss_ctx_free(c->gctx);
                c->gctx = NULL;
                continue;
            }
            if (r)
                goto out;
            q.body = sealed;
            q.body_len = sl;
            q.content_type = eg_gss_sealed_content_type(c->gss_scheme);
        }
        if ((r = do_request(c, &q, &resp, NULL, true, &new_conn)))
            goto out;
        if (new_conn) { /* the context belonged to the previous connection */
            eg_gss_ctx_free(c->gctx);
            c->gctx = NULL;
        }
        if (resp.status == 401) {
            eg_gss_ctx_free(c->gctx);
            c->gctx = NULL;
            if (attempt == 0)
                continue; /* the server did not process it: authenticate again, resend */
            snprintf(c->errbuf, sizeof c->errbuf, "HTTP 401: credentials refused");
            r = EG_EAUTH;
            goto out;
        }
        if (c->gctx && is_sealed_type(resp.content_type))
            r = unseal_response(c, &resp);
        else if (!c->https && resp.status / 100 == 2 && resp.body_len) {
            snprintf(c->errbuf, sizeof c->errbuf, "unsealed answer over http");
            r = EG_EPROTO;
        }
        if (r) { /* do not go on with this context or connection */
            eg_gss_ctx_free(c->gctx);
            c->gctx = NULL;
            c->gss_fresh = true;
            goto out;
        }
        *ret = resp;
        memset(&resp, 0, sizeof resp);
        r = 0;
        goto out;
    }
out:
    eg_http_client_response_clear(&resp);
    eg_free(sealed);
    return r;
}

int eg_http_client_request(struct eg_http_client *c, const struct eg_http_client_req *rq,
                           struct eg_http_client_response *ret)
{
    if (c && rq && ret && c->gss)
        return gss_request(c, rq, ret);
    return do_request(c, rq, ret, NULL, false, NULL);
}

int eg_http_client_post(struct eg_http_client *c, const char *body, size_t len,
                        const char *content_type, int64_t timeout_ms,
                        struct eg_http_client_response *ret)
{
    if (!c || !ret || (!body && len) || timeout_ms < 0 || has_crlf(content_type))
        return EG_EINVAL;
    struct eg_http_client_req rq = {
        .method = "POST",
        .content_type = content_type ? content_type : EG_HTTP_CLIENT_SOAP_TYPE,
        .body = body,
        .body_len = len,
        .response_timeout_ms = timeout_ms,
    };
    return eg_http_client_request(c, &rq, ret);
}
