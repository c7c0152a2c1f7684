/* main_easgate_ps.c - easgate-ps: run one Exchange cmdlet over PowerShell remoting, or decode
 * captured WS-Man traffic.
 *
 *   easgate-ps --url URL [--auth basic|negotiate|kerberos|ntlm] [--user U | --principal P]
 *              [--password-file F | --keytab K]
 *              [--configuration-name NAME] [--cacert PEM] [--insecure] [--allow-http-basic]
 *              [--operation-timeout-ms N] -- CMDLET [-p SPEC]...
 *   easgate-ps decode FILE...
 *
 * Output objects go to stdout as JSON lines; warnings and errors to stderr. Exit status: 0 on
 * success, 1 when the cmdlet reported an error or failed, 2 for usage errors, 3 when the
 * endpoint could not be used (connect, auth, protocol).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/util.h"
#include "exchange/clixml_json.h"
#include "exchange/ps_cli.h"
#include "exchange/psrp_capture.h"
#include "exchange/psrp_pool.h"

#define MAX_PASSWORD_FILE 4096
#define MAX_CAPTURE_FILE  (64 * 1024 * 1024)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: easgate-ps --url URL [options] -- CMDLET [-p SPEC]...\n"
            "       easgate-ps decode FILE...\n"
            "\n"
            "options:\n"
            "  --url URL                  endpoint, e.g. https://ex01.corp.example/PowerShell\n"
            "  --auth METHOD              basic (default), negotiate, kerberos or ntlm;\n"
            "                             kerberos/ntlm (and negotiate with --principal) work\n"
            "                             over http:// too, every message sealed; negotiate\n"
            "                             without --principal uses your own tickets\n"
            "                             (KRB5CCNAME), https only\n"
            "  --user USER                user name (CORP\\svc or svc@corp.example)\n"
            "  --principal NAME           Kerberos principal (svc@CORP.EXAMPLE) or NTLM\n"
            "                             DOMAIN\\user (the same as --user)\n"
            "  --password-file FILE       file holding the password (first line)\n"
            "  --keytab FILE              Kerberos client keytab (instead of a password)\n"
            "  --configuration-name NAME  shell configuration (default Microsoft.Exchange)\n"
            "  --cacert FILE              PEM trust anchors for https\n"
            "  --insecure                 do not verify the server's certificate\n"
            "  --allow-http-basic         allow Basic over plain http (test servers only)\n"
            "  --operation-timeout-ms N   WS-Man OperationTimeout (default 20000)\n"
            "\n"
            "SPEC: Name=Value (string), Name:int=5, Name:bool=true, Name:switch, Name:null,\n"
            "      Name:list=a,b, Name:add=a,b and/or Name:remove=c (@{Add=...;Remove=...})\n"
            "\n"
            "Output objects are printed as JSON lines; warnings and errors go to stderr.\n"
            "Exit: 0 ok, 1 cmdlet error, 2 usage, 3 endpoint unusable.\n"
            "decode prints each envelope and each PSRP message in captured SOAP envelopes\n"
            "(one per file, in order) as JSON lines; exit 1 when something cannot be decoded\n"
            "or a message stays incomplete.\n");
}

/* ---- decode --------------------------------------------------------------------------------- */

static int print_line(void *ctx, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return EG_ENOMEM;
    fprintf(stdout, "%s\n", text);
    eg_free(text);
    return 0;
}

static int cmd_decode(int argc, char **argv)
{
    struct eg_psrp_capture *cap = NULL;
    int status = 0;
    if (argc < 1) {
        fprintf(stderr, "easgate-ps decode: no files given\n");
        return 2;
    }
    if (eg_psrp_capture_new(&cap) < 0) {
        fprintf(stderr, "easgate-ps: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        char *data = NULL, why[512] = "";
        size_t len = 0;
        int rc = eg_read_file(argv[i], MAX_CAPTURE_FILE, &data, &len);
        if (rc < 0) {
            fprintf(stderr, "easgate-ps decode: %s: %s\n", argv[i],
                    rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
            status = 1;
            continue;
        }
        rc = eg_psrp_capture_feed(cap, argv[i], data, len, print_line, NULL, why, sizeof why);
        eg_free(data);
        if (rc != 0) {
            fprintf(stderr, "easgate-ps decode: %s\n", why[0] ? why : eg_strerror(rc));
            status = 1;
        }
    }
    int partial = eg_psrp_capture_finish(cap, print_line, NULL);
    if (partial != 0) {
        fprintf(stderr, "easgate-ps decode: %s\n",
                partial > 0 ? "messages left incomplete (fragments continue in a file not given)"
                            : eg_strerror(partial));
        status = 1;
    }
    eg_psrp_capture_free(cap);
    fflush(stdout);
    return status;
}

/* ---- run ------------------------------------------------------------------------------------ */

struct run_ctx {
    int errors;
    int stop_rc;
};

static int on_output(void *ctx, struct eg_ps_value *v)
{
    char *text = NULL;
    int rc = eg_clixml_to_json_text(v, &text);
    eg_ps_value_free(v);
    if (rc < 0) {
        fprintf(stderr, "easgate-ps: an output object cannot be shown as JSON: %s\n",
                eg_strerror(rc));
        ((struct run_ctx *)ctx)->errors++;
        return 0;
    }
    fprintf(stdout, "%s\n", text);
    eg_free(text);
    return 0;
}

static void print_record(const char *prefix, const struct eg_ps_error_record *er)
{
    fprintf(stderr, "%s: %s: %s", prefix, er->exception_type ? er->exception_type : "(no type)",
            er->message ? er->message : "");
    if (er->fqeid)
        fprintf(stderr, " [FullyQualifiedErrorId %s]", er->fqeid);
    fprintf(stderr, " [category %s]\n", eg_ps_error_category_name(er->category));
}

static int on_error(void *ctx, const struct eg_ps_error_record *er)
{
    ((struct run_ctx *)ctx)->errors++;
    print_record("error", er);
    return 0;
}

static int on_info(void *ctx, enum eg_ps_info_kind kind, const char *text)
{
    fprintf(stderr, "%s: %s\n",
            kind == EG_PS_INFO_WARNING   ? "warning"
            : kind == EG_PS_INFO_VERBOSE ? "verbose"
                                         : "debug",
            text);
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        O_URL = 1,
        O_AUTH,
        O_USER,
        O_PWFILE,
        O_CONF,
        O_CACERT,
        O_INSECURE,
        O_HTTPBASIC,
        O_OPTO,
        O_PRINCIPAL,
        O_KEYTAB,
        O_HELP
    };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"auth", required_argument, NULL, O_AUTH},
        {"user", required_argument, NULL, O_USER},
        {"password-file", required_argument, NULL, O_PWFILE},
        {"configuration-name", required_argument, NULL, O_CONF},
        {"cacert", required_argument, NULL, O_CACERT},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"allow-http-basic", no_argument, NULL, O_HTTPBASIC},
        {"operation-timeout-ms", required_argument, NULL, O_OPTO},
        {"principal", required_argument, NULL, O_PRINCIPAL},
        {"keytab", required_argument, NULL, O_KEYTAB},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    struct eg_psrp_pool_opts po = {.auth = EG_HTTP_CLIENT_AUTH_BASIC};
    const char *password_file = NULL;
    char *password = NULL, why[512] = "";
    struct eg_ps_command *cmd = NULL;
    struct eg_ps_pipeline *pl = NULL;
    struct eg_psrp_pool *pool = NULL;
    struct eg_psrp_error err;
    struct run_ctx rctx = {0};
    struct eg_ps_cli_auth ca = {0};
    struct eg_gss_cred *cred = NULL;
    int status = 2, rc, opt;

    memset(&err, 0, sizeof err);
    eg_alloc_init();
    if (argc >= 2 && strcmp(argv[1], "decode") == 0)
        return cmd_decode(argc - 2, argv + 2);
    while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_URL:
            po.url = optarg;
            break;
        case O_AUTH:
            ca.auth = optarg;
            break;
        case O_USER:
            ca.user = optarg;
            break;
        case O_PRINCIPAL:
            ca.principal = optarg;
            break;
        case O_KEYTAB:
            ca.keytab = optarg;
            break;
        case O_PWFILE:
            password_file = optarg;
            break;
        case O_CONF:
            po.configuration = optarg;
            break;
        case O_CACERT:
            po.ca_file = optarg;
            break;
        case O_INSECURE:
            po.insecure = true;
            break;
        case O_HTTPBASIC:
            po.allow_cleartext_auth = true;
            break;
        case O_OPTO: {
            int64_t v;
            if (eg_parse_int64(optarg, 1000, 3600000, &v) < 0) {
                fprintf(stderr, "easgate-ps: --operation-timeout-ms must be 1000..3600000\n");
                return 2;
            }
            po.operation_timeout_ms = (uint32_t)v;
            break;
        }
        case O_HELP:
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!po.url || optind >= argc) {
        usage(stderr);
        return 2;
    }
    if ((rc = eg_ps_cli_parse(argv + optind, (size_t)(argc - optind), &cmd, why, sizeof why)) < 0) {
        fprintf(stderr, "easgate-ps: %s\n", rc == EG_ENOMEM ? "out of memory" : why);
        return 2;
    }
    ca.password_file = password_file != NULL;
    const char *account = NULL;
    if (eg_ps_cli_auth_check(&ca, &po.auth, &po.gss_scheme, &account, why, sizeof why) < 0) {
        fprintf(stderr, "easgate-ps: %s\n", why);
        eg_ps_command_free(cmd);
        return 2;
    }
    if (po.auth == EG_HTTP_CLIENT_AUTH_BASIC)
        po.username = account;
    if (password_file) {
        if ((rc = eg_read_secret_line(password_file, MAX_PASSWORD_FILE, &password)) < 0) {
            fprintf(stderr, "easgate-ps: cannot read --password-file %s: %s\n", password_file,
                    rc == EG_EIO ? strerror(errno) : eg_strerror(rc));
            goto out;
        }
        if (po.auth == EG_HTTP_CLIENT_AUTH_BASIC)
            po.password = password;
    }
    if (po.auth == EG_HTTP_CLIENT_AUTH_GSS) {
        struct eg_gss_cred_opts go = {.scheme = po.gss_scheme,
                                      .principal = account,
                                      .password = password,
                                      .keytab = ca.keytab};
        if ((rc = eg_gss_cred_new(&go, &cred, why, sizeof why)) < 0) {
            fprintf(stderr, "easgate-ps: cannot get credentials for %s: %s%s\n", account,
                    why[0] ? why : eg_strerror(rc),
                    strstr(why, "integrity check failed")
                        ? " (the password or keytab does not match the principal)"
                        : "");
            status = 3;
            goto out;
        }
        po.gss_cred = cred;
    }
    if ((rc = eg_ps_pipeline_new(&pl)) < 0 || (rc = eg_ps_pipeline_add(pl, cmd)) < 0) {
        cmd = NULL;
        fprintf(stderr, "easgate-ps: out of memory\n");
        status = 3;
        goto out;
    }
    cmd = NULL;
    if ((rc = eg_psrp_pool_open(&po, &pool, &err)) < 0) {
        fprintf(stderr, "easgate-ps: cannot open a runspace pool at %s: %s\n", po.url, err.message);
        if (err.record)
            print_record("error", err.record);
        status = 3;
        goto out;
    }
    struct eg_psrp_run_ops ops = {.output = on_output, .error = on_error, .info = on_info};
    rc = eg_psrp_pool_run(pool, pl, &ops, &rctx, &err);
    if (rc < 0) {
        if (err.kind == EG_PSRP_ERR_PIPELINE && err.record) {
            print_record("error", err.record);
            status = 1;
        } else {
            fprintf(stderr, "easgate-ps: %s\n", err.message);
            status = 3;
        }
        goto out;
    }
    status = rctx.errors ? 1 : 0;
out:
    fflush(stdout);
    eg_psrp_error_clear(&err);
    eg_psrp_pool_close(pool);
    eg_gss_cred_free(cred);
    eg_ps_pipeline_free(pl);
    eg_ps_command_free(cmd);
    if (password) {
        eg_memzero(password, strlen(password));
        eg_free(password);
    }
    return status;
}
