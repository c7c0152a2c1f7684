/* main.c - the easgate daemon: configuration, start-up, signals, orderly shutdown.
 *
 * Signals are blocked in every thread and taken synchronously by the main thread with
 * sigwait(): SIGTERM/SIGINT drain and stop, SIGHUP reloads the TLS material.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <sys/prctl.h>
#include <sys/resource.h>
#endif

#include "agent/api.h"
#include "agent/audit.h"
#include "agent/config.h"
#include "agent/inventory.h"
#include "agent/metrics.h"
#include "agent/notify.h"
#include "agent/outbox.h"
#include "agent/queue.h"
#include "agent/scheduler.h"
#include "agent/target.h"
#include "agent/uploader.h"
#include "agent/worker.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/bridge.h"
#include "exchange/bridge_psrp.h"
#include "transport/server.h"

extern char **environ;

static int write_ports_file(const char *path, uint16_t port)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"api\": %u}\n", (unsigned)port);
    return eg_write_file_atomic(path, buf, (size_t)n, 0644);
}

static int make_bridge(const struct eg_config *cfg, struct eg_bridge **ret)
{
    if (strcmp(cfg->bridge, "dryrun") == 0)
        return eg_bridge_dryrun_new((int)cfg->dryrun_latency_ms, ret);
    if (strcmp(cfg->bridge, "psrp") == 0) {
        char *password = NULL;
        int rc = eg_read_secret_line(cfg->exchange_password_file, EG_MAX_TOKEN_BYTES, &password);
        if (rc < 0) {
            eg_log_err("cannot read exchange_password_file %s: %s", cfg->exchange_password_file,
                       rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
            return rc;
        }
        struct eg_bridge_psrp_opts o = {
            .pool = {.url = cfg->exchange_url,
                     .configuration = cfg->exchange_configuration,
                     .auth = EG_HTTP_CLIENT_AUTH_BASIC,
                     .username = cfg->exchange_user,
                     .password = password,
                     .allow_cleartext_auth = cfg->exchange_allow_http_basic,
                     .ca_file = cfg->exchange_ca,
                     .insecure = cfg->exchange_insecure,
                     .max_pipelines = (unsigned)cfg->exchange_max_pipelines,
                     .max_commands_per_shell = (unsigned)cfg->exchange_commands_per_shell}};
        if (strcmp(cfg->exchange_version, "auto") != 0 &&
            eg_exchange_version_parse(cfg->exchange_version, &o.version) < 0)
            o.version = EG_EXCHANGE_UNKNOWN;
        rc = eg_bridge_psrp_new(&o, ret);
        eg_memzero(password, strlen(password));
        eg_free(password);
        return rc;
    }
    return EG_EUNSUPPORTED;
}

/* The bridge of the command line / configuration file, used while the console has not stored
 * a target (eg_target_bootstrap_fn). */
static int bootstrap_bridge(void *ctx, struct eg_bridge **ret)
{
    return make_bridge(ctx, ret);
}

/* The uploader's settings: upload.url and upload.hmac_key of the stored target document
 * (eg_upload_settings_fn). */
static int upload_settings(void *ctx, struct eg_upload_settings *ret)
{
    return eg_target_upload(ctx, &ret->url, &ret->hmac_key, &ret->revision);
}

struct final_ctx {
    struct eg_queue *queue;
    struct eg_uploader *uploader;
};

/* Queue the final views of recs[0..n) (NULL entries and non-final records are skipped) for the
 * console, in one outbox transaction. A failure here never fails a command; it is logged and
 * counted. */
static void report_finals(struct final_ctx *f, struct eg_cmd_record *const *recs, size_t n)
{
    json_t **views = eg_calloc(n, sizeof *views);
    const char **vids = eg_calloc(n, sizeof *vids);
    int *rcs = eg_calloc(n, sizeof *rcs);
    size_t k = 0;

    if (!views || !vids || !rcs) {
        eg_log_err("%zu final command%s could not be queued for upload to the console: out of "
                   "memory",
                   n, n == 1 ? "" : "s");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!recs[i] || !eg_cmd_state_is_final(recs[i]->state))
            continue; /* the journal did not take the outcome (logged by the worker): the command
                         runs again after a restart and is reported when it is final */
        vids[k] = recs[i]->id;
        views[k++] = eg_api_command_view(recs[i]); /* NULL (no memory) is counted below */
    }
    if (k > 0 && eg_uploader_record_commands(f->uploader, (const json_t *const *)views, k, rcs) < 0)
        for (size_t i = 0; i < k; i++)
            if (rcs[i] < 0)
                eg_log_err("command %s: final, but its result could not be queued for upload to "
                           "the console: %s%s%s",
                           vids[i], eg_strerror(rcs[i]),
                           rcs[i] == EG_ELIMIT ? " (larger than an outbox record)" : "",
                           rcs[i] == EG_EIO ? " (outbox storage error)" : "");
out:
    for (size_t i = 0; views && i < k; i++)
        json_decref(views[i]);
    eg_free(views);
    eg_free(vids);
    eg_free(rcs);
}

/* Workers finished a batch (eg_workers_opts.on_final): read its final commands back from the
 * journal (the one record of their final state and times) and report them. */
static void command_final(void *ctx, const char *const *ids, size_t n)
{
    struct final_ctx *f = ctx;
    struct eg_cmd_record **recs = eg_calloc(n, sizeof *recs);

    if (!recs) {
        eg_log_err("%zu final command%s could not be queued for upload to the console: out of "
                   "memory",
                   n, n == 1 ? "" : "s");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = eg_queue_get(f->queue, ids[i], &recs[i]);
        if (rc < 0)
            eg_log_err("command %s: final, but it cannot be read back for upload to the console: "
                       "%s",
                       ids[i], eg_strerror(rc));
    }
    report_finals(f, recs, n);
    eg_cmd_records_free(recs, n);
}

/* Start-up: every final command of the journal whose command.final record is not in the outbox
 * (a crash between the journal's commit and the append) is reported now, a page at a time in
 * one outbox transaction each, before any worker runs. The scan resumes at the outbox's
 * finals_seq and moves it past the prefix of commands that are all final and reported, so each
 * restart reads only the journal's recent part. */
static void recover_finals(struct final_ctx *f, struct eg_outbox *outbox)
{
    int64_t after = 0, clean = 0, next = 0;
    size_t recovered = 0;
    bool prefix = true;
    int rc = eg_outbox_finals_seq(outbox, &after);
    clean = after;
    while (rc == 0) {
        struct eg_cmd_record **v = NULL, **missing = NULL;
        int *has = NULL; /* per command: 1 reported, 0 final but not reported, 2 not final */
        size_t n = 0, m = 0;
        if ((rc = eg_queue_list(f->queue, -1, after, 500, &v, &n, &next)) < 0)
            break;
        if (n > 0 &&
            (!(missing = eg_calloc(n, sizeof *missing)) || !(has = eg_calloc(n, sizeof *has))))
            rc = EG_ENOMEM;
        for (size_t i = 0; i < n && rc == 0; i++) {
            has[i] = eg_cmd_state_is_final(v[i]->state) ? eg_outbox_has_final(outbox, v[i]->id) : 2;
            if (has[i] < 0)
                rc = has[i];
            else if (has[i] == 0)
                missing[m++] = v[i];
        }
        if (rc == 0 && m > 0) {
            report_finals(f, missing, m);
            for (size_t i = 0; i < n && rc == 0; i++) {
                if (has[i] != 0)
                    continue;
                if ((has[i] = eg_outbox_has_final(outbox, v[i]->id)) < 0)
                    rc = has[i];
                recovered += has[i] == 1;
            }
        }
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (has[i] == 1 && prefix)
                clean = v[i]->seq;
            else
                prefix = false;
        }
        eg_free(missing);
        eg_free(has);
        eg_cmd_records_free(v, n);
        if (rc < 0 || next == 0 || n == 0)
            break;
        after = next;
    }
    if (rc == 0)
        rc = eg_outbox_set_finals_seq(outbox, clean);
    if (rc < 0)
        eg_log_err("cannot check the journal for command results the console was not sent: %s",
                   eg_strerror(rc));
    else if (recovered)
        eg_log_warn("%zu final command%s had no result queued for the console (a crash right after "
                    "they finished): queued now",
                    recovered, recovered == 1 ? "" : "s");
}

/* A heal command was queued by an inventory sync (eg_scheduler_opts.healed). */
static void wake_workers(void *ctx)
{
    eg_workers_notify(ctx);
}

static int run(const struct eg_config *cfg)
{
    struct eg_queue *queue = NULL;
    struct eg_outbox *outbox = NULL;
    struct eg_uploader *uploader = NULL;
    struct final_ctx fctx = {0};
    struct eg_audit *audit = NULL;
    struct eg_target *target = NULL;
    struct eg_metrics *metrics = NULL;
    struct eg_workers *workers = NULL;
    struct eg_inventory *inventory = NULL;
    struct eg_scheduler *scheduler = NULL;
    struct eg_server *server = NULL;
    struct eg_notify_watchdog *watchdog = NULL;
    char *token = NULL, *why = NULL;
    struct eg_api api = {0};
    sigset_t sigs;
    int rc, exit_code = 1;

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every thread started below */

    if ((rc = eg_queue_open(cfg->state_dir, &queue)) < 0) {
        eg_log_err("cannot open the command journal in %s: %s%s%s", cfg->state_dir, eg_strerror(rc),
                   rc == EG_EIO ? ": " : "", rc == EG_EIO ? strerror(errno) : "");
        goto out;
    }
    if ((rc = eg_outbox_open(cfg->state_dir, &outbox)) < 0 ||
        (rc = eg_outbox_set_bounds(outbox, (uint64_t)cfg->outbox_max_records,
                                   (uint64_t)cfg->outbox_max_bytes)) < 0) {
        eg_log_err("cannot open the upload outbox in %s: %s%s%s", cfg->state_dir, eg_strerror(rc),
                   rc == EG_EIO ? ": " : "", rc == EG_EIO ? strerror(errno) : "");
        goto out;
    }
    struct eg_audit_open_info ainfo;
    char *apath = eg_audit_path(cfg->audit_log, cfg->state_dir), *awhy = NULL;
    rc = apath ? eg_audit_open(apath, &audit, &ainfo, &awhy) : EG_ENOMEM;
    if (rc == 0 && ainfo.torn_bytes)
        eg_log_warn("audit trail %s: its torn last line (%zu bytes, a write cut short) was moved "
                    "to %s",
                    apath, ainfo.torn_bytes, ainfo.torn_path);
    if (rc == 0)
        eg_log_notice("audit trail %s: last seq %lld, head %s", apath, (long long)ainfo.last_seq,
                      ainfo.head);
    else
        eg_log_err("cannot open the audit trail: %s", awhy ? awhy : eg_strerror(rc));
    eg_free(apath);
    eg_free(awhy);
    if (rc < 0)
        goto out;
    char twhy[1024];
    struct eg_target_opts topts = {
        .state_dir = cfg->state_dir,
        .key_file = cfg->secret_key_file,
        .bootstrap = bootstrap_bridge,
        .bootstrap_ctx = (void *)cfg,
        .bootstrap_kind = strcmp(cfg->bridge, "psrp") == 0 ? "onprem" : cfg->bridge,
    };
    if ((rc = eg_target_open(&topts, &target, twhy, sizeof twhy)) < 0) {
        eg_log_err("cannot set up the Exchange target: %s", twhy[0] ? twhy : eg_strerror(rc));
        goto out;
    }
    if ((rc = eg_inventory_open(cfg->state_dir, &inventory)) < 0) {
        eg_log_err("cannot open the inventory in %s: %s%s%s", cfg->state_dir, eg_strerror(rc),
                   rc == EG_EIO ? ": " : "", rc == EG_EIO ? strerror(errno) : "");
        goto out;
    }
    struct eg_uploader_opts uopts = {
        .outbox = outbox,
        .settings = upload_settings,
        .settings_ctx = target,
        .heartbeat_ms = cfg->upload_heartbeat_s * 1000,
        .retry_max_ms = cfg->upload_retry_max_ms,
    };
    if ((rc = eg_uploader_start(&uopts, &uploader)) < 0) {
        eg_log_err("cannot start the uploader: %s", eg_strerror(rc));
        goto out;
    }
    struct eg_outbox_stats ostats = {0};
    if (eg_outbox_stats(outbox, &ostats) == 0)
        eg_log_notice("upload outbox: agent id %s, %llu records waiting, next batch %llu%s",
                      eg_outbox_agent_id(outbox), (unsigned long long)ostats.records,
                      (unsigned long long)ostats.next_seq,
                      ostats.resync_needed ? ", the next full sync uploads a complete snapshot"
                                           : "");
    fctx = (struct final_ctx){.queue = queue, .uploader = uploader};
    recover_finals(&fctx, outbox);
    if ((rc = eg_metrics_new(&metrics)) < 0) {
        eg_log_err("cannot create metrics: %s", eg_strerror(rc));
        goto out;
    }
    struct eg_workers_opts wopts = {
        .threads = (unsigned)cfg->workers,
        .coalesce = cfg->coalesce,
        .max_coalesce = (size_t)cfg->max_coalesce,
        .max_attempts = (unsigned)cfg->max_attempts,
        .retry_base_ms = cfg->retry_base_ms,
        .retry_max_ms = cfg->retry_max_ms,
        .retry_deadline_ms = cfg->retry_deadline_ms,
        .audit = audit,
        .on_final = command_final,
        .on_final_ctx = &fctx,
        .inventory = inventory,
    };
    if ((rc = eg_workers_start(queue, eg_target_bridge(target), metrics, &wopts, &workers)) < 0) {
        eg_log_err("cannot start workers: %s", eg_strerror(rc));
        goto out;
    }
    if (eg_workers_set_retry_deadline(workers, eg_target_retry_deadline_ms(target)) < 0)
        eg_log_warn("the stored retry.deadline_ms is out of range; retry_deadline_ms applies");
    /* Inventory syncs on their own thread: on the schedule of the stored target document, or on
     * request (agent/scheduler.h). Heal commands wake the workers. */
    struct eg_scheduler_opts schopts = {.inventory = inventory,
                                        .bridge = eg_target_bridge(target),
                                        .outbox = outbox,
                                        .queue = queue,
                                        .config = eg_scheduler_config_from_target,
                                        .config_ctx = target,
                                        .healed = wake_workers,
                                        .healed_ctx = workers};
    if ((rc = eg_scheduler_start(&schopts, &scheduler)) < 0) {
        eg_log_err("cannot start the inventory scheduler: %s", eg_strerror(rc));
        goto out;
    }
    if (cfg->token_file && (rc = eg_config_read_token(cfg, &token)) < 0) {
        eg_log_err("cannot use token_file %s: %s", cfg->token_file, eg_strerror(rc));
        goto out;
    }

    api = (struct eg_api){.queue = queue,
                          .workers = workers,
                          .metrics = metrics,
                          .target = target,
                          .uploader = uploader,
                          .scheduler = scheduler,
                          .inventory = inventory,
                          .bridge_name = cfg->bridge,
                          .max_batch = (size_t)cfg->max_batch,
                          .started_ms = eg_now_ms(),
                          .ready = false};
    struct eg_server_opts sopts = {
        .listen_addr = cfg->listen_addr,
        .port = cfg->listen_port,
        .tls = !cfg->plain_http,
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .client_ca_file = cfg->client_ca,
        .priorities = cfg->tls_priorities,
        .token = token,
        .public_paths = eg_api_public_paths,
        .max_body_bytes = (size_t)cfg->max_body_bytes,
        .max_connections = (unsigned)cfg->max_connections,
        .conn_timeout_s = (unsigned)cfg->conn_timeout_s,
        .max_connections_per_client = (unsigned)cfg->max_connections_per_client,
        .rate_per_s = (unsigned)cfg->api_rate,
        .rate_burst = (unsigned)cfg->api_burst,
        .handler = eg_api_handle,
        .observer = eg_api_observe,
        .ctx = &api,
    };
    if ((rc = eg_server_start(&sopts, &server, &why)) < 0) {
        eg_log_err("cannot serve on %s: %s%s%s", cfg->listen, eg_strerror(rc), why ? ": " : "",
                   why ? why : "");
        goto out;
    }
    uint16_t port = eg_server_port(server);
    if (cfg->ports_file && (rc = write_ports_file(cfg->ports_file, port)) < 0) {
        eg_log_err("cannot write ports file %s: %s", cfg->ports_file, strerror(errno));
        goto out;
    }
    api.ready = true;
    char tdesc[96];
    if (eg_target_source(target) == EG_TARGET_SOURCE_CONSOLE)
        snprintf(tdesc, sizeof tdesc, "Exchange target set by the console (revision %lld)",
                 (long long)eg_target_revision(target));
    else
        snprintf(tdesc, sizeof tdesc, "bridge %s", cfg->bridge);
    eg_log_notice("easgate %s listening on %s port %u (%s%s%s), %s, %lld workers", EG_VERSION,
                  cfg->listen_addr, (unsigned)port, cfg->plain_http ? "plain HTTP" : "HTTPS",
                  cfg->client_ca ? ", client certs" : "", token ? ", bearer token" : "", tdesc,
                  (long long)cfg->workers);
    (void)eg_notify_ready("listening on %s port %u, %s", cfg->listen_addr, (unsigned)port, tdesc);
    if ((rc = eg_notify_watchdog_start(NULL, NULL, &watchdog)) < 0)
        eg_log_warn("systemd watchdog not started: %s", eg_strerror(rc));

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            eg_freep(&why);
            rc = eg_server_reload_tls(server, &why);
            if (rc == 0)
                eg_log_notice("SIGHUP: TLS certificate, key and client CA reloaded");
            else
                eg_log_warn("SIGHUP: TLS reload refused, old material kept: %s%s%s",
                            eg_strerror(rc), why ? ": " : "", why ? why : "");
            (void)eg_notify_status("SIGHUP: TLS reload %s", rc == 0 ? "done" : "refused");
            continue;
        }
        if (sig == SIGPIPE)
            continue;
        eg_log_notice("%s: draining (up to %lld ms) and stopping", strsignal(sig),
                      (long long)cfg->drain_timeout_ms);
        (void)eg_notify_stopping(cfg->drain_timeout_ms);
        break;
    }
    exit_code = 0;

out:
    api.ready = false;
    /* Order: stop taking requests, then finish in-flight Exchange work, then close the journal. */
    eg_server_stop(server, cfg->drain_timeout_ms);
    eg_scheduler_stop(scheduler); /* a sync in progress ends at its next record */
    if (eg_workers_stop(workers, cfg->drain_timeout_ms) == EG_ETIMEDOUT) {
        /* A bridge call outlived the drain: leave the journal to SQLite's crash safety (those
         * commands are re-queued at the next start) rather than close it under a worker. */
        eg_log_warn("drain timeout: Exchange calls still in flight are abandoned and will be "
                    "retried at the next start");
        queue = NULL;
        target = NULL;
        audit = NULL;     /* abandoned workers may still append */
        outbox = NULL;    /* ...and report results */
        inventory = NULL; /* ...and note list edits */
    }
    /* A POST in flight may end (its acknowledgement is recorded); what is not acknowledged is
     * sent again, with the same sequence, after the next start. */
    if (eg_uploader_stop(uploader, cfg->drain_timeout_ms) == EG_ETIMEDOUT) {
        eg_log_warn("drain timeout: an upload to the console is still in flight; it is sent "
                    "again at the next start");
        outbox = NULL;
        target = NULL; /* the uploader reads its settings */
    }
    eg_inventory_close(inventory);
    eg_outbox_close(outbox);
    eg_queue_close(queue);
    if (audit) {
        char head[EG_AUDIT_HASH_HEX];
        int64_t seq = 0;
        eg_audit_head(audit, &seq, head);
        eg_log_notice("audit trail closed: last seq %lld, head %s", (long long)seq, head);
        eg_audit_close(audit);
    }
    eg_target_free(target);
    eg_metrics_free(metrics);
    if (token) {
        eg_memzero(token, strlen(token));
        eg_free(token);
    }
    eg_free(why);
    eg_notify_watchdog_stop(watchdog); /* pinged through the drain */
    if (exit_code == 0)
        eg_log_notice("stopped");
    return exit_code;
}

/* Secrets live in this process's memory (the Exchange password, keys, tokens): it never writes
 * a core file and cannot be ptrace-attached or read through /proc/PID/mem by other processes of
 * its user. Best effort: a refusal is not fatal. */
static void no_core_dumps(void)
{
#ifndef _WIN32
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
}

#ifdef _WIN32 /* Windows: agent/service_win.c has main() (service or console); it calls this */
#define main eg_daemon_main
int eg_daemon_main(int argc, char **argv);
#endif
int main(int argc, char **argv)
{
    struct eg_config *cfg = NULL;
    struct eg_config_diags diags = {0};
    enum eg_log_level level = EG_LOG_NOTICE;
    int rc, code = 1;

    eg_alloc_init();
    no_core_dumps();
    if (argc > 1 && strcmp(argv[1], "audit") == 0) /* easgate audit verify [LOG] */
        return eg_audit_cli(argc - 1, argv + 1, environ);
    rc = eg_config_load(argc, argv, environ, &cfg, &diags);
    if (!cfg) {
        fprintf(stderr, "easgate: %s\n", eg_strerror(rc));
        return 1;
    }
    switch (cfg->action) {
    case EG_ACTION_HELP:
        eg_config_usage(stdout, argv[0]);
        code = 0;
        goto out;
    case EG_ACTION_VERSION:
        printf("easgate %s\n", EG_VERSION);
        code = 0;
        goto out;
    default:
        break;
    }
    for (size_t i = 0; i < diags.n; i++)
        fprintf(stderr, "%s: %s\n", diags.v[i].where, diags.v[i].message);
    if (cfg->action == EG_ACTION_CHECK) {
        if (diags.n == 0)
            printf("%s: configuration OK\n", cfg->config_file ? cfg->config_file : "(defaults)");
        else
            fprintf(stderr, "%zu error%s\n", diags.n, diags.n == 1 ? "" : "s");
        code = diags.n ? 1 : 0;
        goto out;
    }
    if (diags.n) {
        fprintf(stderr, "easgate: not starting: fix the configuration (%zu error%s)\n", diags.n,
                diags.n == 1 ? "" : "s");
        goto out;
    }
    if (eg_log_level_parse(cfg->log_level, &level) == 0)
        eg_log_set_level(level);
    code = run(cfg);
out:
    eg_config_diags_free(&diags);
    eg_config_free(cfg);
    return code;
}
