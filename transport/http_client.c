/* http_client.c - libcurl wrapper for one WS-Man endpoint (see http_client.h).
 *
 * One easy handle per client: libcurl keeps the connection of the last transfer open in the
 * handle's own cache (MAXCONNECTS 1) and reuses it for the next POST to the same target. The
 * response body is collected in a growing buffer, refused past max_response_bytes both from
 * Content-Length (MAXFILESIZE) and while streaming (write callback), after any content decoding.
 */
#include "transport/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/alloc.h"

#ifndef EG_VERSION
#define EG_VERSION "0"
#endif

struct eg_http_client {
    CURL *h;
    char errbuf[CURL_ERROR_SIZE];
    char *url; /* the client's URL (restored after a request to another one) */
    bool has_credentials;
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
        o->auth != EG_HTTP_CLIENT_AUTH_NEGOTIATE)
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
    c->url = eg_strdup(o->url);
    if (!c->url) {
        r = EG_ENOMEM;
        goto out;
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

int eg_http_client_request(struct eg_http_client *c, const struct eg_http_client_req *rq,
                           struct eg_http_client_response *ret)
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
    if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
        c->connections += (unsigned long)connects;
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
    if (status == 401) {
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
