/* frontend.c - the mock Exchange's listeners (contract: frontend.h): sockets we bind ourselves
 * (so port 0 resolves at once and a listener taken down comes back on the same port), one
 * libmicrohttpd daemon per listener with a thread per connection (a Receive long-poll blocks
 * its connection's thread), HTTP Basic authentication against the --users file (GSSAPI and
 * sealing: gss_auth.c, called from here), the HTTP-level
 * faults (status N for the next requests, dropped connections; they apply to the REST paths
 * of rest_server.c too, which this file dispatches to), and the org, reference counted
 * so that the control API can replace it while pipelines run.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/log.h"
#include "common/util.h"
#include "fe_internal.h"

#define SOAP_CONTENT_TYPE "application/soap+xml;charset=UTF-8"
#define CONN_TIMEOUT_S    300  /* idle keep-alive connection */
#define CONN_LIMIT        2000 /* connections per listener */

/* Per-request state (*req_cls), freed in the completed callback. */
struct fe_req {
    char *body;
    size_t len, cap;
    bool too_big;
    bool drop_after;
};

static void set_err(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t size, const char *fmt, ...)
{
    if (!err || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

/* =========================================================================================== */
/* The org                                                                                      */
/* =========================================================================================== */

struct fe_org *fe_org_get(struct mx_fe *fe)
{
    pthread_mutex_lock(&fe->lock);
    struct fe_org *o = fe->org;
    o->refs++;
    pthread_mutex_unlock(&fe->lock);
    return o;
}

void fe_org_put(struct mx_fe *fe, struct fe_org *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&fe->lock);
    bool last = --o->refs == 0;
    pthread_mutex_unlock(&fe->lock);
    if (last) {
        mx_org_free(o->org);
        eg_free(o);
    }
}

static int org_make(const struct mx_org_opts *opts, struct fe_org **ret)
{
    struct fe_org *o = eg_calloc(1, sizeof *o);
    if (!o)
        return EG_ENOMEM;
    int rc = mx_org_new(opts, &o->org);
    if (rc < 0) {
        eg_free(o);
        return rc;
    }
    o->refs = 1;
    *ret = o;
    return 0;
}

int fe_org_reseed(struct mx_fe *fe, const struct mx_org_opts *opts)
{
    struct fe_org *o = NULL;
    int rc = org_make(opts, &o);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&fe->lock);
    struct fe_org *old = fe->org;
    fe->org = o;
    fe->org_opts = *opts;
    fe->org_opts.admin_display_version = NULL;
    pthread_mutex_unlock(&fe->lock);
    fe_org_put(fe, old);
    return 0;
}

/* =========================================================================================== */
/* Users and authentication                                                                     */
/* =========================================================================================== */

static void users_free(struct fe_user *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        eg_free(u[i].name);
        if (u[i].password) {
            eg_memzero(u[i].password, strlen(u[i].password));
            eg_free(u[i].password);
        }
    }
    eg_free(u);
}

/* "user:password" per line; blank lines and lines starting with '#' are skipped. */
static int users_load(struct mx_fe *fe, const char *path, char *err, size_t err_size)
{
    char *text = NULL;
    size_t len = 0;
    int rc = eg_read_file(path, EG_MOCK_MAX_USERS_FILE, &text, &len);
    if (rc < 0) {
        set_err(err, err_size, "cannot read users file %s: %s", path,
                rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
        return rc;
    }
    struct fe_user *users = NULL;
    size_t n = 0;
    unsigned lineno = 0;
    char *line = text;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r')
            line[--l] = '\0';
        if (l && line[0] != '#') {
            char *colon = strchr(line, ':');
            if (!colon || colon == line) {
                set_err(err, err_size, "%s:%u: expected user:password", path, lineno);
                rc = EG_EINVAL;
                break;
            }
            if (n >= EG_MOCK_MAX_USERS) {
                set_err(err, err_size, "%s: more than %d users", path, EG_MOCK_MAX_USERS);
                rc = EG_ELIMIT;
                break;
            }
            struct fe_user *nu = eg_reallocarray(users, n + 1, sizeof *nu);
            if (!nu) {
                rc = EG_ENOMEM;
                break;
            }
            users = nu;
            users[n].name = eg_strndup(line, (size_t)(colon - line));
            users[n].password = eg_strdup(colon + 1);
            n++;
            if (!users[n - 1].name || !users[n - 1].password) {
                rc = EG_ENOMEM;
                break;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    eg_memzero(text, len);
    eg_free(text);
    if (rc == 0 && n == 0) {
        set_err(err, err_size, "%s: no users", path);
        rc = EG_EINVAL;
    }
    if (rc < 0) {
        if (rc == EG_ENOMEM)
            set_err(err, err_size, "out of memory");
        users_free(users, n);
        return rc;
    }
    fe->users = users;
    fe->n_users = n;
    return 0;
}

/* Check the Authorization header. On success user (size bytes) gets the user name. Without a
 * users file every request passes (the user is the Basic name if one is given). */
static bool authenticate(struct mx_fe *fe, struct MHD_Connection *c, char *user, size_t size)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    uint8_t *dec = NULL;
    size_t dlen = 0;
    bool ok = false;

    snprintf(user, size, "anonymous");
    if (h && strncasecmp(h, "Basic ", 6) == 0) {
        const char *b = h + 6;
        while (*b == ' ')
            b++;
        if (eg_base64_decode(b, strlen(b), 0, &dec, &dlen) < 0)
            dec = NULL;
    }
    char *colon = dec ? memchr(dec, ':', dlen) : NULL;
    if (!fe->users && fe->gss_schemes)
        goto out; /* GSS only: no anonymous access, no Basic */
    if (!fe->users) {
        if (colon && colon > (char *)dec)
            snprintf(user, size, "%.*s", (int)(colon - (char *)dec), (char *)dec);
        ok = true;
        goto out;
    }
    if (!colon)
        goto out;
    size_t ulen = (size_t)(colon - (char *)dec);
    const char *pw = colon + 1;
    size_t plen = dlen - ulen - 1;
    for (size_t i = 0; i < fe->n_users; i++) {
        const struct fe_user *u = &fe->users[i];
        if (strlen(u->name) == ulen && strncasecmp(u->name, (char *)dec, ulen) == 0 &&
            eg_ct_equal(u->password, strlen(u->password), pw, plen)) {
            snprintf(user, size, "%s", u->name);
            ok = true;
            break;
        }
    }
out:
    if (dec) {
        eg_memzero(dec, dlen);
        eg_free(dec);
    }
    return ok;
}

/* =========================================================================================== */
/* HTTP                                                                                         */
/* =========================================================================================== */

enum MHD_Result fe_send(struct MHD_Connection *c, unsigned status, const char *content_type,
                        char *body, size_t len)
{
    struct MHD_Response *r;
    if (body)
        r = MHD_create_response_from_buffer_with_free_callback(len, body, eg_free);
    else
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        eg_free(body);
        return MHD_NO;
    }
    if (content_type)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_SERVER, "Microsoft-IIS/10.0");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    char *b = eg_strdup(text);
    return fe_send(c, status, "text/html", b, b ? strlen(b) : 0);
}

static void client_ip_of(struct MHD_Connection *c, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, size, "unknown");
    if (!ci || !ci->client_addr)
        return;
    socklen_t sl = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in);
    char host[64];
    if (getnameinfo(ci->client_addr, sl, host, sizeof host, NULL, 0, NI_NUMERICHOST) == 0)
        snprintf(out, size, "%s", host);
}

/* "/PowerShell", any case, with or without a trailing slash (the query string is not part of
 * url). */
static bool powershell_path(const char *url)
{
    size_t n = strlen(url);
    while (n > 1 && url[n - 1] == '/')
        n--;
    return n == strlen("/PowerShell") && strncasecmp(url, "/PowerShell", n) == 0;
}

static enum MHD_Result on_ps_request(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **req_cls)
{
    struct fe_listener *l = cls;
    struct mx_fe *fe = l->fe;
    struct fe_req *r = *req_cls;

    if (!r) {
        if (!(r = eg_calloc(1, sizeof *r)))
            return MHD_NO;
        *req_cls = r;
        bool drop = false;
        pthread_mutex_lock(&fe->lock);
        if (l->down || fe->stopping) {
            drop = true;
        } else if (fe->faults.drop_count) {
            fe->faults.drop_count--;
            if (fe->faults.drop_after)
                r->drop_after = true;
            else
                drop = true;
        }
        pthread_mutex_unlock(&fe->lock);
        if (drop)
            eg_log_info("%s %s: connection dropped (fault injection or listener down)", method,
                        url);
        return drop ? MHD_NO : MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_big && r->len + *upload_size > EG_MOCK_WS_MAX_REQUEST_BYTES) {
            r->too_big = true;
            eg_freep(&r->body);
        }
        if (!r->too_big) {
            if (r->len + *upload_size + 1 > r->cap) {
                size_t cap = r->cap ? r->cap : 16384;
                while (cap < r->len + *upload_size + 1)
                    cap *= 2;
                char *nb = eg_realloc(r->body, cap);
                if (!nb)
                    return MHD_NO;
                r->body = nb;
                r->cap = cap;
            }
            memcpy(r->body + r->len, upload_data, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }

    /* the whole request is here */
    bool rest = fe_rest_path(url);
    if (!rest && !powershell_path(url))
        return send_text(c, 404, "<h1>Not Found</h1>");
    if (strcmp(method, "POST") != 0)
        return send_text(c, 405, "<h1>Method Not Allowed</h1>");
    pthread_mutex_lock(&fe->lock);
    int status = 0;
    int64_t retry_after = 0;
    if (fe->faults.http_error_count) {
        fe->faults.http_error_count--;
        status = fe->faults.http_error_status;
        retry_after = fe->faults.http_retry_after_s;
    }
    pthread_mutex_unlock(&fe->lock);
    if (status) {
        eg_log_info("POST %s: HTTP %d (fault injection)", url, status);
        char *b = eg_asprintf("<h1>%s</h1>", MHD_get_reason_phrase_for((unsigned)status));
        struct MHD_Response *resp =
            b ? MHD_create_response_from_buffer_with_free_callback(strlen(b), b, eg_free) : NULL;
        if (!resp) {
            eg_free(b);
            return MHD_NO;
        }
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html");
        if (retry_after > 0) {
            char ra[32];
            snprintf(ra, sizeof ra, "%lld", (long long)retry_after);
            (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
        }
        enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (rest) /* REST: bearer tokens instead of Basic (rest_server.c) */
        return fe_rest_request(l, c, url, r->body ? r->body : "", r->len, r->too_big,
                               r->drop_after);
    struct fe_gss_result g;
    enum fe_gss_verdict gv = fe_gss_request(l, c, r->body ? r->body : "", r->len, &g);
    if (gv == FE_GSS_ANSWERED) {
        enum MHD_Result ret = g.mhd;
        fe_gss_result_clear(&g);
        return ret;
    }
    char user[128];
    if (gv == FE_GSS_OK) {
        snprintf(user, sizeof user, "%s", g.user);
    } else if (!authenticate(fe, c, user, sizeof user)) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        fe_gss_challenge(fe, resp);
        if (fe->users || !fe->gss_schemes) {
            char hdr[200];
            snprintf(hdr, sizeof hdr, "Basic realm=\"%s\"", fe->realm);
            (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, hdr);
        }
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_SERVER, "Microsoft-IIS/10.0");
        enum MHD_Result ret = MHD_queue_response(c, 401, resp);
        MHD_destroy_response(resp);
        eg_log_info("POST %s: 401", url);
        return ret;
    }
    if (r->too_big) {
        fe_gss_result_clear(&g);
        return send_text(c, 413, "<h1>Request Entity Too Large</h1>");
    }
    const char *in = g.plain ? (const char *)g.plain : r->body ? r->body : "";
    size_t in_len = g.plain ? g.plain_len : r->len;
    if (gv == FE_GSS_OK && g.handshake && in_len == 0) {
        /* the last step of the token exchange (empty body): 200 with the final token */
        enum MHD_Result ret = fe_gss_reply(l, c, &g, 200, NULL, 0);
        fe_gss_result_clear(&g);
        return ret;
    }
    char ip[64];
    client_ip_of(c, ip, sizeof ip);
    unsigned st = 500;
    char *body = NULL;
    size_t blen = 0;
    enum fe_outcome out = fe_psrp_handle(fe, l, user, ip, in, in_len, &st, &body, &blen);
    if (out == FE_DROP) {
        fe_gss_result_clear(&g);
        return MHD_NO;
    }
    if (r->drop_after) {
        eg_log_info("POST %s: answer dropped after processing (fault injection)", url);
        eg_free(body);
        fe_gss_result_clear(&g);
        return MHD_NO;
    }
    if (gv == FE_GSS_OK) {
        enum MHD_Result ret = fe_gss_reply(l, c, &g, st, body, blen);
        fe_gss_result_clear(&g);
        return ret;
    }
    return fe_send(c, st, body ? SOAP_CONTENT_TYPE : NULL, body, blen);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct fe_req *r = *req_cls;
    if (!r)
        return;
    eg_free(r->body);
    eg_free(r);
    *req_cls = NULL;
}

/* =========================================================================================== */
/* Listeners                                                                                    */
/* =========================================================================================== */

/* Resolve hostport ("ADDR:PORT", port 0 allowed) into l->ss. */
static int bind_hostport(const char *hostport, struct fe_listener *l, char *err, size_t err_size)
{
    char *addr = NULL;
    uint16_t port = 0;
    int rc = eg_parse_hostport(hostport, &addr, &port);
    if (rc < 0) {
        set_err(err, err_size, "bad listen address '%s' (want ADDR:PORT)", hostport);
        return rc;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE,
                             .ai_family = AF_UNSPEC};
    struct addrinfo *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    int g = getaddrinfo(addr, ps, &hints, &ai);
    if (g != 0 || !ai) {
        set_err(err, err_size, "cannot resolve listen address %s: %s", addr, gai_strerror(g));
        eg_free(addr);
        return EG_EINVAL;
    }
    memcpy(&l->ss, ai->ai_addr, ai->ai_addrlen);
    l->ss_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    eg_free(addr);
    return 0;
}

/* Open, bind and listen on l->ss; refresh l->port and l->host. */
static int listen_on(struct fe_listener *l, int *ret_fd, char *err, size_t err_size)
{
    int one = 1, fd = socket(l->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    if (l->ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&l->ss, l->ss_len) < 0 || listen(fd, SOMAXCONN) < 0)
        goto fail;
    socklen_t sl = sizeof l->ss;
    if (getsockname(fd, (struct sockaddr *)&l->ss, &sl) < 0)
        goto fail;
    l->ss_len = sl;
    char host[64], serv[NI_MAXSERV];
    if (getnameinfo((struct sockaddr *)&l->ss, sl, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        goto fail;
    snprintf(l->host, sizeof l->host, "%s", host);
    int64_t p;
    if (eg_parse_int64(serv, 1, 65535, &p) < 0)
        goto fail;
    l->port = (uint16_t)p;
    *ret_fd = fd;
    return 0;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    set_err(err, err_size, "cannot listen: %s", strerror(e));
    return EG_EIO;
}

int fe_open_listener(const char *hostport, struct fe_listener *l, int *ret_fd, char *err,
                     size_t err_size)
{
    int rc = bind_hostport(hostport, l, err, err_size);
    if (rc == 0)
        rc = listen_on(l, ret_fd, err, err_size);
    return rc;
}

static int daemon_start(struct fe_listener *l, int fd, char *err, size_t err_size)
{
    struct mx_fe *fe = l->fe;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC;
    struct MHD_OptionItem tls[3];
    size_t n = 0;
    if (fe->tls_cert) {
        flags |= MHD_USE_TLS;
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, fe->tls_cert};
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, fe->tls_key};
    }
    tls[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    l->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_ps_request, l, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)CONN_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
        MHD_OPTION_NOTIFY_CONNECTION, fe_gss_notify, l, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!l->d) {
        close(fd);
        set_err(err, err_size, "cannot start the HTTP%s server on %s port %u",
                fe->tls_cert ? "S" : "", l->host, (unsigned)l->port);
        return fe->tls_cert ? EG_ETLS : EG_EIO;
    }
    return 0;
}

int fe_listener_down(struct mx_fe *fe, size_t i)
{
    if (i >= fe->n_listeners)
        return EG_ENOTFOUND;
    struct fe_listener *l = &fe->listeners[i];
    pthread_mutex_lock(&fe->admin);
    if (l->d) {
        pthread_mutex_lock(&fe->lock);
        l->down = true;
        fe_listener_down_locked(fe, (int)i);
        pthread_mutex_unlock(&fe->lock);
        MHD_stop_daemon(l->d); /* closes the socket and every connection */
        l->d = NULL;
        eg_log_notice("listener %zu (%s port %u) is down", i, l->host, (unsigned)l->port);
    }
    pthread_mutex_unlock(&fe->admin);
    return 0;
}

int fe_listener_up(struct mx_fe *fe, size_t i)
{
    if (i >= fe->n_listeners)
        return EG_ENOTFOUND;
    struct fe_listener *l = &fe->listeners[i];
    int rc = 0, fd = -1;
    char err[256];
    pthread_mutex_lock(&fe->admin);
    if (!l->d) {
        if ((rc = listen_on(l, &fd, err, sizeof err)) == 0 &&
            (rc = daemon_start(l, fd, err, sizeof err)) == 0) {
            pthread_mutex_lock(&fe->lock);
            l->down = false;
            pthread_mutex_unlock(&fe->lock);
            eg_log_notice("listener %zu (%s port %u) is up", i, l->host, (unsigned)l->port);
        } else {
            eg_log_warn("listener %zu cannot come back up: %s", i, err);
        }
    }
    pthread_mutex_unlock(&fe->admin);
    return rc;
}

uint16_t mx_fe_port(const struct mx_fe *fe, size_t i)
{
    return fe && i < fe->n_listeners ? fe->listeners[i].port : 0;
}

size_t mx_fe_listener_count(const struct mx_fe *fe)
{
    return fe ? fe->n_listeners : 0;
}

uint16_t mx_fe_control_port(const struct mx_fe *fe)
{
    return fe ? fe->control_port : 0;
}

/* =========================================================================================== */
/* Start and stop                                                                               */
/* =========================================================================================== */

static int read_pem(const char *path, char **ret, char *err, size_t err_size)
{
    size_t len = 0;
    int rc = eg_read_file(path, EG_MAX_TLS_FILE_BYTES, ret, &len);
    if (rc < 0)
        set_err(err, err_size, "cannot read %s: %s", path,
                rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
    return rc;
}

int mx_fe_start(const struct mx_fe_opts *o, struct mx_fe **ret, char *err, size_t err_size)
{
    struct mx_fe *fe = NULL;
    int fds[EG_MOCK_MAX_LISTENERS];
    size_t n_fds = 0;
    int rc;

    if (!o || !ret || !o->n_listen || !o->listen) {
        set_err(err, err_size, "at least one --listen address is needed");
        return EG_EINVAL;
    }
    if (o->n_listen > EG_MOCK_MAX_LISTENERS) {
        set_err(err, err_size, "at most %d listeners", EG_MOCK_MAX_LISTENERS);
        return EG_ELIMIT;
    }
    if (!o->tls_cert != !o->tls_key) {
        set_err(err, err_size, "--tls-cert and --tls-key go together");
        return EG_EINVAL;
    }
    if (!(fe = eg_calloc(1, sizeof *fe))) {
        set_err(err, err_size, "out of memory");
        return EG_ENOMEM;
    }
    pthread_mutex_init(&fe->lock, NULL);
    pthread_mutex_init(&fe->admin, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fe->idle, &ca);
    pthread_condattr_destroy(&ca);
    fe->pid = (long)getpid();
    fe->shared_shells = o->shared_shells;
    snprintf(fe->realm, sizeof fe->realm, "%s", o->realm ? o->realm : "easgate-mock-exchange");
    if (strchr(fe->realm, '"')) {
        set_err(err, err_size, "the realm may not contain '\"'");
        rc = EG_EINVAL;
        goto fail;
    }

    fe->org_opts = (struct mx_org_opts){.profile = o->profile,
                                        .seed = o->seed,
                                        .mailboxes = o->mailboxes,
                                        .devices = o->devices,
                                        .seed_lists = o->seed_lists};
    if ((rc = org_make(&fe->org_opts, &fe->org)) < 0) {
        set_err(err, err_size, "cannot build the org (%zu mailboxes, %zu devices): %s",
                o->mailboxes, o->devices, eg_strerror(rc));
        goto fail;
    }
    if ((rc = fe_rest_init(fe, o, err, err_size)) < 0)
        goto fail;
    if (o->users_file && (rc = users_load(fe, o->users_file, err, err_size)) < 0)
        goto fail;
    if (o->tls_cert && ((rc = read_pem(o->tls_cert, &fe->tls_cert, err, err_size)) < 0 ||
                        (rc = read_pem(o->tls_key, &fe->tls_key, err, err_size)) < 0))
        goto fail;
    if ((rc = fe_gss_init(fe, o, err, err_size)) < 0)
        goto fail;

    for (size_t i = 0; i < o->n_listen; i++) {
        struct fe_listener *l = &fe->listeners[i];
        l->fe = fe;
        l->index = (int)i;
        if ((rc = fe_open_listener(o->listen[i], l, &fds[n_fds], err, err_size)) < 0)
            goto fail;
        n_fds++;
        fe->n_listeners++;
    }
    for (size_t i = 0; i < fe->n_listeners; i++) {
        rc = daemon_start(&fe->listeners[i], fds[i], err, err_size);
        fds[i] = -1; /* daemon_start owns it (closed on failure) */
        if (rc < 0)
            goto fail;
    }
    n_fds = 0;
    if (o->control && (rc = fe_control_start(fe, o->control, err, err_size)) < 0)
        goto fail;
    *ret = fe;
    return 0;
fail:
    for (size_t i = 0; i < n_fds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    mx_fe_free(fe);
    return rc;
}

void mx_fe_free(struct mx_fe *fe)
{
    if (!fe)
        return;
    if (fe->control)
        MHD_stop_daemon(fe->control);
    fe->control = NULL;
    pthread_mutex_lock(&fe->lock);
    fe->stopping = true;
    for (size_t i = 0; i < fe->n_listeners; i++)
        fe->listeners[i].down = true;
    fe_listener_down_locked(fe, -1); /* wake every waiting Receive */
    pthread_mutex_unlock(&fe->lock);
    for (size_t i = 0; i < fe->n_listeners; i++) {
        if (fe->listeners[i].d)
            MHD_stop_daemon(fe->listeners[i].d);
        fe->listeners[i].d = NULL;
    }
    fe_psrp_shutdown(fe);
    pthread_mutex_lock(&fe->lock);
    unsigned running = fe->running;
    pthread_mutex_unlock(&fe->lock);
    if (running) {
        /* engine threads still inside the org (a long injected latency): leave everything to
         * the process exit rather than free what they use */
        return;
    }
    fe_org_put(fe, fe->org);
    users_free(fe->users, fe->n_users);
    fe_rest_free(fe->rest);
    fe_gss_free(fe);
    if (fe->tls_key) {
        eg_memzero(fe->tls_key, strlen(fe->tls_key));
        eg_free(fe->tls_key);
    }
    eg_free(fe->tls_cert);
    pthread_cond_destroy(&fe->idle);
    pthread_mutex_destroy(&fe->admin);
    pthread_mutex_destroy(&fe->lock);
    eg_free(fe);
}
