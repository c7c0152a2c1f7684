/* bridge_psrp.c - the PSRP runner of the cmdlet catalogue (contract: bridge_psrp.h). */
#include "exchange/bridge_psrp.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "exchange/classify.h"

struct psrp_runner {
    pthread_mutex_t lock; /* guards pool creation */
    struct eg_psrp_pool *pool;
    struct eg_psrp_pool_opts o;
    char *url, *configuration, *username, *password, *ca_file;
    /* AUTH_GSS: our own credential (made on first use from these), or a borrowed one */
    struct eg_gss_cred *own_cred;
    char *gss_principal, *gss_password, *gss_keytab;
};

/* What a wrong password looks like in MIT krb5's words ("Decrypt integrity check failed":
 * the KDC's pre-authentication reply does not decrypt): said plainly. */
static const char *password_hint(const char *text)
{
    return strstr(text, "integrity check failed") && strstr(text, "ticket")
               ? " (the password or keytab does not match the principal)"
               : "";
}

/* A Kerberos/NTLM failure on the way to Exchange (the handshake was refused, or a ticket could
 * not be renewed): permission_denied with the GSSAPI reason. */
static void gss_auth_error(struct psrp_runner *r, const struct eg_psrp_error *perr,
                           struct eg_bridge_error *err)
{
    eg_bridge_error_set(err, EG_BERR_PERMISSION_DENIED, false,
                        "Kerberos/NTLM authentication to %s failed: %s%s", r->url, perr->message,
                        password_hint(perr->message));
}

/* Make the credential if the bridge owns one and has none yet (r->lock held). */
static int get_cred(struct psrp_runner *r, struct eg_bridge_error *err)
{
    if (r->o.auth != EG_HTTP_CLIENT_AUTH_GSS || r->o.gss_cred)
        return 0;
    char why[512] = "";
    struct eg_gss_cred_opts co = {.scheme = r->o.gss_scheme,
                                  .principal = r->gss_principal,
                                  .password = r->gss_password,
                                  .keytab = r->gss_keytab};
    int rc = eg_gss_cred_new(&co, &r->own_cred, why, sizeof why);
    if (rc == 0) {
        r->o.gss_cred = r->own_cred;
        return 0;
    }
    const char *text = why[0] ? why : eg_strerror(rc);
    switch (rc) {
    case EG_EAUTH:
        /* MIT krb5 reports a password that does not decrypt the KDC's pre-authentication
         * reply as an integrity failure: say what it means */
        eg_bridge_error_set(err, EG_BERR_PERMISSION_DENIED, false,
                            "cannot authenticate to Exchange at %s: %s%s", r->url, text,
                            password_hint(text));
        break;
    case EG_EUNAVAIL:
        eg_bridge_error_set(err, EG_BERR_UNREACHABLE, true,
                            "cannot get Kerberos credentials for %s (KDC unreachable): %s", r->url,
                            text);
        break;
    case EG_ENOMEM:
        eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory in the PSRP bridge");
        break;
    default:
        eg_bridge_error_set(err, EG_BERR_INTERNAL, false,
                            "cannot set up Kerberos/NTLM credentials for %s: %s", r->url, text);
    }
    return rc;
}

/* Open the pool if needed. */
static int get_pool(struct psrp_runner *r, struct eg_psrp_pool **ret, struct eg_bridge_error *err)
{
    struct eg_psrp_error perr;
    int rc = 0;
    memset(&perr, 0, sizeof perr);
    pthread_mutex_lock(&r->lock);
    if (!r->pool && (rc = get_cred(r, err)) == 0) {
        rc = eg_psrp_pool_open(&r->o, &r->pool, &perr);
        if (rc < 0) {
            eg_classify_psrp(&perr, EG_TARGET_ORG, err);
            if (perr.kind == EG_PSRP_ERR_AUTH && r->o.auth == EG_HTTP_CLIENT_AUTH_GSS)
                gss_auth_error(r, &perr, err);
            eg_psrp_error_clear(&perr);
            /* Not reaching Exchange is transient even when the cause looks permanent: the
             * configuration may be fixed meanwhile; attempts stay bounded by the worker. */
            if (strcmp(err->code, EG_BERR_PERMISSION_DENIED) != 0)
                err->transient = true;
        }
    }
    *ret = r->pool;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* One command's streams. */
struct stream {
    eg_catalogue_output_fn out;
    void *out_ctx;
    int out_rc;
    struct eg_ps_error_record *first_error;
};

static int on_output(void *ctx, struct eg_ps_value *v)
{
    struct stream *s = ctx;
    if (!s->out) {
        eg_ps_value_free(v);
        return 0;
    }
    int rc = s->out(s->out_ctx, v);
    if (rc != 0) {
        s->out_rc = rc;
        return EG_ESHUTDOWN; /* stops the pipeline */
    }
    return 0;
}

static int copy_record(const struct eg_ps_error_record *er, struct eg_ps_error_record **ret)
{
    struct eg_ps_error_record *c = NULL;
    int rc = eg_ps_error_record_new(er->exception_type ? er->exception_type : "",
                                    er->message ? er->message : "", er->fqeid ? er->fqeid : "",
                                    er->category, &c);
    if (rc < 0)
        return rc;
    if (er->reason && !(c->reason = eg_strdup(er->reason))) {
        eg_ps_error_record_free(c);
        return EG_ENOMEM;
    }
    *ret = c;
    return 0;
}

static int on_error(void *ctx, const struct eg_ps_error_record *er)
{
    struct stream *s = ctx;
    if (!s->first_error && copy_record(er, &s->first_error) < 0)
        return EG_ENOMEM;
    return 0;
}

static int psrp_run(void *impl, struct eg_ps_command *cmd, enum eg_classify_target target,
                    eg_catalogue_output_fn out, void *out_ctx, struct eg_bridge_error *err)
{
    struct psrp_runner *r = impl;
    struct eg_psrp_pool *pool = NULL;
    struct eg_ps_pipeline *pl = NULL;
    struct eg_psrp_error perr;
    struct stream s = {.out = out, .out_ctx = out_ctx};
    int rc;

    memset(&perr, 0, sizeof perr);
    if ((rc = get_pool(r, &pool, err)) < 0) {
        eg_ps_command_free(cmd);
        return rc;
    }
    if ((rc = eg_ps_pipeline_new(&pl)) < 0) {
        eg_ps_command_free(cmd);
        goto nomem;
    }
    if ((rc = eg_ps_pipeline_add(pl, cmd)) < 0)
        goto nomem;
    struct eg_psrp_run_ops ops = {.output = on_output, .error = on_error};
    rc = eg_psrp_pool_run(pool, pl, &ops, &s, &perr);
    if (rc < 0) {
        if (s.out_rc) {
            rc = s.out_rc;
            eg_bridge_error_set(err, EG_BERR_INTERNAL, false, "stopped by the caller");
        } else {
            eg_classify_psrp(&perr, target, err);
            if (perr.kind == EG_PSRP_ERR_AUTH && r->o.auth == EG_HTTP_CLIENT_AUTH_GSS)
                gss_auth_error(r, &perr, err);
        }
        goto out;
    }
    if (s.first_error) {
        eg_classify_record(s.first_error, target, err);
        rc = EG_EREMOTE;
    }
    goto out;
nomem:
    eg_bridge_error_set(err, EG_BERR_INTERNAL, true, "out of memory in the PSRP bridge");
    rc = EG_ENOMEM;
out:
    eg_ps_error_record_free(s.first_error);
    eg_psrp_error_clear(&perr);
    eg_ps_pipeline_free(pl);
    return rc;
}

static const char *psrp_url(void *impl)
{
    struct psrp_runner *r = impl;
    return r->url;
}

static void psrp_destroy(void *impl)
{
    struct psrp_runner *r = impl;
    if (!r)
        return;
    eg_psrp_pool_close(r->pool);
    eg_gss_cred_free(r->own_cred);
    if (r->password) {
        eg_memzero(r->password, strlen(r->password));
        eg_free(r->password);
    }
    if (r->gss_password) {
        eg_memzero(r->gss_password, strlen(r->gss_password));
        eg_free(r->gss_password);
    }
    eg_free(r->gss_principal);
    eg_free(r->gss_keytab);
    eg_free(r->url);
    eg_free(r->configuration);
    eg_free(r->username);
    eg_free(r->ca_file);
    pthread_mutex_destroy(&r->lock);
    eg_free(r);
}

static const struct eg_catalogue_runner_ops psrp_runner_ops = {
    .name = "psrp",
    .run = psrp_run,
    .url = psrp_url,
    .destroy = psrp_destroy,
};

static bool dup_opt(const char *s, char **dst)
{
    if (!s)
        return true;
    *dst = eg_strdup(s);
    return *dst != NULL;
}

int eg_bridge_psrp_new(const struct eg_bridge_psrp_opts *o, struct eg_bridge **ret)
{
    struct psrp_runner *r = NULL;
    if (!o || !ret || !o->pool.url || o->pool.max_pipelines > EG_PSRP_MAX_PIPELINES ||
        o->version == EG_EXCHANGE_ONLINE || (unsigned)o->version > EG_EXCHANGE_ONLINE ||
        eg_psrp_pool_check_timeouts(&o->pool) < 0)
        return EG_EINVAL;
    if (o->pool.auth == EG_HTTP_CLIENT_AUTH_GSS && !o->pool.gss_cred && !o->gss.principal)
        return EG_EINVAL;
    r = eg_calloc(1, sizeof *r);
    if (!r)
        return EG_ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    r->o = o->pool;
    if (!dup_opt(o->pool.url, &r->url) || !dup_opt(o->pool.configuration, &r->configuration) ||
        !dup_opt(o->pool.username, &r->username) || !dup_opt(o->pool.password, &r->password) ||
        !dup_opt(o->pool.ca_file, &r->ca_file) || !dup_opt(o->gss.principal, &r->gss_principal) ||
        !dup_opt(o->gss.password, &r->gss_password) || !dup_opt(o->gss.keytab, &r->gss_keytab)) {
        psrp_destroy(r);
        return EG_ENOMEM;
    }
    r->o.url = r->url;
    r->o.configuration = r->configuration;
    r->o.username = r->username;
    r->o.password = r->password;
    r->o.ca_file = r->ca_file;
    struct eg_catalogue_opts co = {
        .ops = &psrp_runner_ops,
        .runner = r,
        .version = o->version,
        .online = false,
        .ceiling = o->pool.max_pipelines ? o->pool.max_pipelines : 1,
    };
    return eg_catalogue_bridge_new(&co, ret);
}

enum eg_exchange_version eg_bridge_psrp_version(struct eg_bridge *b)
{
    if (!eg_catalogue_runner(b, &psrp_runner_ops))
        return EG_EXCHANGE_UNKNOWN;
    return eg_catalogue_version(b);
}
