/* target.c - the Exchange target of the daemon: bridge building, the stored document and the
 * swap on PUT (see target.h). */
#include "agent/target.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/util.h"
#include "exchange/bridge_multi.h"
#include "exchange/bridge_psrp.h"
#include "exchange/bridge_rest.h"
#include "exchange/bridge_swap.h"

#define TARGET_FILE "target.json"
#define KEY_FILE    "secret.key"
#define CA_PREFIX   "target-ca-"
#define CA_SUFFIX   ".pem"

struct eg_target {
    char *state_dir;
    char *path; /* <state_dir>/target.json */
    struct eg_secretbox *box;
    struct eg_bridge *bridge; /* the swappable bridge */
    char *bootstrap_kind;
    pthread_mutex_t put_lock;     /* serialises PUTs */
    pthread_mutex_t cfg_lock;     /* guards cfg for readers */
    struct eg_target_config *cfg; /* NULL = bootstrap bridge in use */
};

static void why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || !whylen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* ---- building ------------------------------------------------------------------------------- */

/* <state_dir>/target-ca-<first 16 hex digits of SHA-256>.pem, written when ca_pem is set. */
static int write_ca_file(const char *state_dir, const char *pem, char **ret_path, char *why,
                         size_t whylen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[17];
    if (EVP_Digest(pem, strlen(pem), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 8) {
        why_set(why, whylen, "target.ca_pem: cannot hash the CA bundle");
        return EG_ETLS;
    }
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    char *path = eg_asprintf("%s/%s%s%s", state_dir, CA_PREFIX, hex, CA_SUFFIX);
    if (!path)
        return EG_ENOMEM;
    int rc = eg_write_file_atomic(path, pem, strlen(pem), 0600);
    if (rc < 0) {
        why_set(why, whylen, "target.ca_pem: cannot write %s: %s", path,
                rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
        eg_free(path);
        return rc;
    }
    *ret_path = path;
    return 0;
}

static int build_onprem(const struct eg_target_config *c, const char *ca_file,
                        struct eg_bridge **ret, char *why, size_t whylen)
{
    struct eg_bridge *servers[EG_MAX_SERVERS_PER_TARGET] = {0};
    const char *names[EG_MAX_SERVERS_PER_TARGET] = {0};
    enum eg_exchange_version version = EG_EXCHANGE_UNKNOWN;
    int rc = 0;
    size_t made = 0;

    if (strcmp(c->version, "auto") != 0 && eg_exchange_version_parse(c->version, &version) < 0) {
        why_set(why, whylen, "target.version: '%s' is not an Exchange version", c->version);
        return EG_EINVAL;
    }
    bool gss = eg_target_config_uses_gss(c);
    enum eg_gss_scheme scheme = c->auth == EG_TARGET_AUTH_KERBEROS ? EG_GSS_KERBEROS
                                : c->auth == EG_TARGET_AUTH_NTLM   ? EG_GSS_NTLM
                                                                   : EG_GSS_NEGOTIATE;
    for (; made < c->n_servers; made++) {
        /* Kerberos / NTLM: each server's bridge makes its credential on first use (see
         * bridge_psrp.h) and frees it with the bridge, i.e. on the next PUT */
        struct eg_bridge_psrp_opts o = {
            .pool = {.url = c->servers[made],
                     .auth = gss                               ? EG_HTTP_CLIENT_AUTH_GSS
                             : c->auth == EG_TARGET_AUTH_BASIC ? EG_HTTP_CLIENT_AUTH_BASIC
                                                               : EG_HTTP_CLIENT_AUTH_NEGOTIATE,
                     .gss_scheme = scheme,
                     .username = gss ? NULL : c->username,
                     .password = gss ? NULL : c->password,
                     .allow_cleartext_auth = c->allow_http_basic,
                     .ca_file = ca_file,
                     .insecure = c->insecure,
                     .max_pipelines = (unsigned)c->max_concurrency,
                     .max_commands_per_shell = (unsigned)c->commands_per_shell,
                     .connect_timeout_ms = c->connect_timeout_ms,
                     .io_timeout_ms = c->io_timeout_ms,
                     .response_timeout_ms = c->response_timeout_ms},
            .version = version,
            .gss = {.principal = gss ? c->username : NULL,
                    .password = gss ? c->password : NULL,
                    .keytab = gss ? c->keytab : NULL}};
        rc = eg_bridge_psrp_new(&o, &servers[made]);
        if (rc < 0) {
            why_set(why, whylen, "target.servers[%zu]: the on-premises backend refused it: %s",
                    made, eg_strerror(rc));
            goto fail;
        }
        names[made] = c->servers[made];
    }
    rc = eg_bridge_multi_new(&c->multi, servers, names, c->n_servers, ret);
    if (rc < 0)
        why_set(why, whylen, "target: the server list could not be set up: %s", eg_strerror(rc));
    return rc; /* eg_bridge_multi_new owns the servers now, also on failure */
fail:
    for (size_t i = 0; i < made; i++)
        eg_bridge_free(servers[i]);
    return rc;
}

static int build_online(const struct eg_target_config *c, const char *ca_file,
                        struct eg_bridge **ret, char *why, size_t whylen)
{
    struct eg_bridge *rest = NULL;
    struct eg_bridge_rest_opts o = {.tenant = c->tenant,
                                    .app_id = c->app_id,
                                    .cert_pem = c->certificate,
                                    .key_pem = c->private_key,
                                    .api_url = c->api_url,
                                    .token_url = c->token_url,
                                    .ca_file = ca_file,
                                    .insecure = c->insecure,
                                    .allow_http = c->allow_http,
                                    .max_concurrency = (unsigned)c->max_concurrency,
                                    .connect_timeout_ms = c->connect_timeout_ms,
                                    .io_timeout_ms = c->io_timeout_ms,
                                    .response_timeout_ms = c->response_timeout_ms};
    int rc = eg_bridge_rest_new(&o, &rest);
    if (rc < 0) {
        why_set(why, whylen, "target: the Exchange Online backend refused the settings: %s",
                eg_strerror(rc));
        return rc;
    }
    const char *name = c->api_url ? c->api_url : "https://outlook.office365.com/adminapi/beta";
    rc = eg_bridge_multi_new(&c->multi, &rest, &name, 1, ret);
    if (rc < 0)
        why_set(why, whylen, "target: the server list could not be set up: %s", eg_strerror(rc));
    return rc;
}

int eg_target_build(const struct eg_target_config *c, const char *state_dir, struct eg_bridge **ret,
                    char *why, size_t whylen)
{
    char *ca_file = NULL;
    int rc;
    if (why && whylen)
        why[0] = '\0';
    if (!c || !state_dir || !ret)
        return EG_EINVAL;
    if (c->ca_pem && (rc = write_ca_file(state_dir, c->ca_pem, &ca_file, why, whylen)) < 0)
        return rc;
    switch (c->kind) {
    case EG_TARGET_ONPREM:
        rc = build_onprem(c, ca_file, ret, why, whylen);
        break;
    case EG_TARGET_ONLINE:
        rc = build_online(c, ca_file, ret, why, whylen);
        break;
    case EG_TARGET_DRYRUN:
        rc = eg_bridge_dryrun_new((int)c->latency_ms, ret);
        if (rc < 0)
            why_set(why, whylen, "target: the dry-run backend refused it: %s", eg_strerror(rc));
        break;
    default:
        rc = EG_EINVAL;
        why_set(why, whylen, "target.kind: unknown kind");
    }
    eg_free(ca_file);
    return rc;
}

/* ---- the manager ---------------------------------------------------------------------------- */

/* Remove CA files of earlier documents (at start, when no bridge uses them). keep may be NULL. */
static void remove_stale_ca_files(const char *state_dir, const struct eg_target_config *keep)
{
    char *keep_name = NULL, *tmp = NULL;
    if (keep && keep->ca_pem && write_ca_file(state_dir, keep->ca_pem, &tmp, NULL, 0) == 0) {
        const char *slash = strrchr(tmp, '/');
        keep_name = eg_strdup(slash ? slash + 1 : tmp);
    }
    eg_free(tmp);
    DIR *d = opendir(state_dir);
    if (d) {
        struct dirent *e;
        size_t pl = strlen(CA_PREFIX), sl = strlen(CA_SUFFIX);
        while ((e = readdir(d))) {
            size_t n = strlen(e->d_name);
            if (n <= pl + sl || strncmp(e->d_name, CA_PREFIX, pl) != 0 ||
                strcmp(e->d_name + n - sl, CA_SUFFIX) != 0)
                continue;
            if (keep_name && strcmp(e->d_name, keep_name) == 0)
                continue;
            char *p = eg_asprintf("%s/%s", state_dir, e->d_name);
            if (p)
                unlink(p);
            eg_free(p);
        }
        closedir(d);
    }
    eg_free(keep_name);
}

void eg_target_free(struct eg_target *t)
{
    if (!t)
        return;
    eg_bridge_free(t->bridge);
    eg_target_config_free(t->cfg);
    eg_secretbox_free(t->box);
    pthread_mutex_destroy(&t->put_lock);
    pthread_mutex_destroy(&t->cfg_lock);
    eg_free(t->bootstrap_kind);
    eg_free(t->path);
    eg_free(t->state_dir);
    eg_free(t);
}

int eg_target_open(const struct eg_target_opts *o, struct eg_target **ret, char *why, size_t whylen)
{
    struct eg_target *t = NULL;
    struct eg_bridge *inner = NULL;
    char *key_path = NULL, sub[512];
    int rc;

    if (why && whylen)
        why[0] = '\0';
    if (!o || !o->state_dir || !o->bootstrap || !ret) {
        why_set(why, whylen, "no state directory or bootstrap bridge was given");
        return EG_EINVAL;
    }
    t = eg_calloc(1, sizeof *t);
    if (!t)
        return EG_ENOMEM;
    pthread_mutex_init(&t->put_lock, NULL);
    pthread_mutex_init(&t->cfg_lock, NULL);
    t->state_dir = eg_strdup(o->state_dir);
    t->path = eg_asprintf("%s/%s", o->state_dir, TARGET_FILE);
    t->bootstrap_kind = eg_strdup(o->bootstrap_kind ? o->bootstrap_kind : "bootstrap");
    key_path = o->key_file ? eg_strdup(o->key_file) : eg_asprintf("%s/%s", o->state_dir, KEY_FILE);
    if (!t->state_dir || !t->path || !t->bootstrap_kind || !key_path) {
        rc = EG_ENOMEM;
        goto fail;
    }
    if ((rc = eg_secretbox_new(key_path, true, &t->box, why, whylen)) < 0)
        goto fail;
    rc = eg_target_config_load(t->path, t->box, &t->cfg, sub, sizeof sub);
    if (rc == EG_ENOTFOUND) {
        remove_stale_ca_files(t->state_dir, NULL);
        if ((rc = o->bootstrap(o->bootstrap_ctx, &inner)) < 0) {
            why_set(why, whylen, "the bootstrap Exchange bridge could not be created: %s",
                    eg_strerror(rc));
            goto fail;
        }
    } else if (rc < 0) {
        why_set(why, whylen, "cannot use the stored Exchange target: %s", sub);
        goto fail;
    } else {
        remove_stale_ca_files(t->state_dir, t->cfg);
        if ((rc = eg_target_build(t->cfg, t->state_dir, &inner, sub, sizeof sub)) < 0) {
            why_set(why, whylen, "cannot use the stored Exchange target %s (revision %lld): %s",
                    t->path, (long long)t->cfg->revision, sub);
            goto fail;
        }
    }
    if ((rc = eg_bridge_swap_new(inner, &t->bridge)) < 0) /* owns inner, also on failure */
        goto fail;
    eg_free(key_path);
    *ret = t;
    return 0;
fail:
    eg_free(key_path);
    eg_target_free(t);
    return rc;
}

struct eg_bridge *eg_target_bridge(struct eg_target *t)
{
    return t ? t->bridge : NULL;
}

enum eg_target_source eg_target_source(struct eg_target *t)
{
    pthread_mutex_lock(&t->cfg_lock);
    bool console = t->cfg != NULL;
    pthread_mutex_unlock(&t->cfg_lock);
    return console ? EG_TARGET_SOURCE_CONSOLE : EG_TARGET_SOURCE_BOOTSTRAP;
}

int64_t eg_target_revision(struct eg_target *t)
{
    pthread_mutex_lock(&t->cfg_lock);
    int64_t r = t->cfg ? t->cfg->revision : 0;
    pthread_mutex_unlock(&t->cfg_lock);
    return r;
}

int64_t eg_target_retry_deadline_ms(struct eg_target *t)
{
    pthread_mutex_lock(&t->cfg_lock);
    int64_t ms = t->cfg && t->cfg->has_retry_deadline ? t->cfg->retry_deadline_ms : 0;
    pthread_mutex_unlock(&t->cfg_lock);
    return ms;
}

int eg_target_put(struct eg_target *t, const char *body, size_t len, json_t **ret_doc,
                  struct eg_target_error *err)
{
    struct eg_target_error dummy;
    struct eg_target_config *next = NULL;
    struct eg_bridge *bridge = NULL;
    json_t *doc = NULL;
    int rc;

    if (!err)
        err = &dummy;
    memset(err, 0, sizeof *err);
    if (!t)
        return EG_EINVAL;
    pthread_mutex_lock(&t->put_lock);
    /* Only PUT changes t->cfg, and PUTs hold put_lock: reading it here needs no cfg_lock. */
    err->stage = EG_TARGET_STAGE_PARSE;
    if ((rc = eg_target_config_parse(body, len, t->cfg, &next, &err->v)) < 0)
        goto out;
    err->stage = EG_TARGET_STAGE_BUILD;
    if ((rc = eg_target_build(next, t->state_dir, &bridge, err->v.detail, sizeof err->v.detail)) <
        0) {
        snprintf(err->v.field, sizeof err->v.field, "target");
        goto out;
    }
    next->revision = (t->cfg ? t->cfg->revision : 0) + 1;
    next->updated_ms = eg_now_ms();
    err->stage = EG_TARGET_STAGE_STORE;
    if ((rc = eg_target_config_save(next, t->box, t->path)) < 0) {
        snprintf(err->v.detail, sizeof err->v.detail,
                 "the configuration could not be stored in %s: %s; nothing was changed", t->path,
                 rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
        goto out;
    }
    err->stage = EG_TARGET_STAGE_APPLY;
    rc = eg_bridge_swap_set(t->bridge, bridge); /* owns bridge, also on failure */
    bridge = NULL;
    if (rc < 0)
        snprintf(err->v.detail, sizeof err->v.detail,
                 "the configuration was stored (revision %lld) but could not be applied: %s; it "
                 "applies at the next start",
                 (long long)next->revision, eg_strerror(rc));
    else if (ret_doc && !(doc = eg_target_config_redacted(next))) {
        rc = EG_ENOMEM;
        snprintf(err->v.detail, sizeof err->v.detail,
                 "the configuration was stored and applied (revision %lld), but the answer "
                 "could not be built: out of memory",
                 (long long)next->revision);
    }
    pthread_mutex_lock(&t->cfg_lock);
    struct eg_target_config *old = t->cfg;
    t->cfg = next;
    pthread_mutex_unlock(&t->cfg_lock);
    next = NULL;
    eg_target_config_free(old);
    if (rc == 0 && ret_doc) {
        *ret_doc = doc;
        doc = NULL;
    }
out:
    pthread_mutex_unlock(&t->put_lock);
    json_decref(doc);
    eg_bridge_free(bridge);
    eg_target_config_free(next);
    return rc;
}

int eg_target_get(struct eg_target *t, json_t **ret)
{
    int rc = 0;
    if (!t || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&t->cfg_lock);
    if (!t->cfg)
        rc = EG_ENOTFOUND;
    else if (!(*ret = eg_target_config_redacted(t->cfg)))
        rc = EG_ENOMEM;
    pthread_mutex_unlock(&t->cfg_lock);
    return rc;
}

int eg_target_upload(struct eg_target *t, char **ret_url, char **ret_hmac_key,
                     int64_t *ret_revision)
{
    char *url = NULL, *key = NULL;
    int64_t rev = 0;
    int rc = 0;
    if (!t || !ret_url || !ret_hmac_key || !ret_revision)
        return EG_EINVAL;
    pthread_mutex_lock(&t->cfg_lock);
    if (t->cfg) {
        rev = t->cfg->revision;
        if (t->cfg->upload_url && !(url = eg_strdup(t->cfg->upload_url)))
            rc = EG_ENOMEM;
        if (rc == 0 && t->cfg->upload_hmac_key && !(key = eg_strdup(t->cfg->upload_hmac_key)))
            rc = EG_ENOMEM;
    }
    pthread_mutex_unlock(&t->cfg_lock);
    if (rc < 0) {
        eg_free(url);
        eg_secret_free(key);
        return rc;
    }
    *ret_url = url;
    *ret_hmac_key = key;
    *ret_revision = rev;
    return 0;
}

json_t *eg_target_status(struct eg_target *t)
{
    if (!t)
        return NULL;
    json_t *st = eg_bridge_status(t->bridge);
    if (!st)
        return NULL;
    if (!json_is_object(st)) {
        json_decref(st);
        return NULL;
    }
    int bad = 0;
    pthread_mutex_lock(&t->cfg_lock);
    if (t->cfg) {
        bad |= json_object_set_new(st, "kind", json_string(eg_target_kind_name(t->cfg->kind)));
        bad |= json_object_set_new(st, "source", json_string("console"));
        bad |= json_object_set_new(st, "revision", json_integer((json_int_t)t->cfg->revision));
    } else {
        bad |= json_object_set_new(st, "kind", json_string(t->bootstrap_kind));
        bad |= json_object_set_new(st, "source", json_string("bootstrap"));
        bad |= json_object_set_new(st, "revision", json_integer(0));
    }
    pthread_mutex_unlock(&t->cfg_lock);
    bad |= json_object_set_new(st, "retiring",
                               json_integer((json_int_t)eg_bridge_swap_retiring(t->bridge)));
    if (!json_object_get(st, "version"))
        bad |= json_object_set_new(st, "version", json_null());
    if (bad) {
        json_decref(st);
        return NULL;
    }
    return st;
}
