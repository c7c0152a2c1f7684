/* main.c - easgate-mock-exchange: a test double of Exchange's remote PowerShell endpoint.
 *
 * Serves WS-Man/PSRP at POST /PowerShell on one or more listeners (each plays one Exchange
 * server of the same org) and a JSON control API on a loopback listener; see --help and
 * docs/internals/mock-exchange.md. Test-only: never install it.
 *
 * Start-up: parse options, build the org, bind every listener (port 0 = any free port), write
 * the ports file, then wait for SIGTERM/SIGINT, which stops everything cleanly (exit 0).
 */
#include <getopt.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"
#include "frontend.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: easgate-mock-exchange [options]\n"
            "\n"
            "A mock Exchange server for tests: WS-Man/PSRP at POST /PowerShell\n"
            "(configuration Microsoft.Exchange) and a JSON control API.\n"
            "\n"
            "  --listen ADDR:PORT      a PSRP listener; repeatable (each one plays one server\n"
            "                          of the same org); port 0 = any free port\n"
            "                          (default 127.0.0.1:0)\n"
            "  --control ADDR:PORT     the control API listener (loopback only; default none)\n"
            "  --profile P             2010 | 2013 | 2016 | online (default 2016)\n"
            "  --mailboxes N           seeded mailboxes (default 10)\n"
            "  --devices M             seeded devices (default 20)\n"
            "  --seed S                seed of the generated org (default 1)\n"
            "  --seed-lists            put some seeded devices on allow/block lists\n"
            "  --users FILE            user:password lines for HTTP Basic (default: no auth)\n"
            "  --tls-cert FILE         PEM certificate: serve HTTPS on every listener\n"
            "  --tls-key FILE          PEM private key (with --tls-cert)\n"
            "  --ports-file FILE       write {\"exchange\": P1, \"exchange_all\": [P1, ...],\n"
            "                          \"control\": P2} once listening\n"
            "  --shared-shells         every listener sees every shell (default: a shell\n"
            "                          belongs to the listener that created it)\n"
            "  --realm TEXT            WWW-Authenticate realm (default easgate-mock-exchange)\n"
            "  --tenant NAME_OR_GUID   REST tenant: a GUID sets the tenant id (default\n"
            "                          5f4ea0e5-8a2b-4c3d-9e1f-0a1b2c3d4e5f), a name the domain\n"
            "                          (default contoso.onmicrosoft.com); URLs accept both\n"
            "  --app-cert FILE         PEM certificate that signs the app's client assertions\n"
            "                          (POST /{tenant}/oauth2/v2.0/token)\n"
            "  --app-id GUID           the app's client_id (default\n"
            "                          a1b2c3d4-0000-4000-8000-00000000e0a5)\n"
            "  --token-lifetime-s N    access token lifetime (default 3599)\n"
            "  --gss-schemes LIST      accept GSSAPI authentication on /PowerShell: a comma list\n"
            "                          of negotiate, kerberos, ntlm (default with --gss-keytab:\n"
            "                          all three); over http bodies are then sealed\n"
            "                          (multipart/encrypted), over https channel binding is\n"
            "                          checked; Basic stays available only with --users\n"
            "  --gss-keytab FILE       service keytab (HTTP/<host>@REALM) for Kerberos\n"
            "                          (default: KRB5_KTNAME); NTLM users come from\n"
            "                          gss-ntlmssp's NTLM_USER_FILE\n"
            "  --log-level LEVEL       err | warn | notice | info | debug (default notice)\n"
            "  --help, --version\n");
}

static int parse_size(const char *opt, const char *s, int64_t max, int64_t *ret)
{
    if (eg_parse_int64(s, 0, max, ret) < 0) {
        fprintf(stderr, "easgate-mock-exchange: %s wants an integer 0..%lld, got '%s'\n", opt,
                (long long)max, s);
        return -1;
    }
    return 0;
}

static int write_ports(const char *path, const struct mx_fe *fe)
{
    json_t *all = json_array();
    for (size_t i = 0; all && i < mx_fe_listener_count(fe); i++)
        if (json_array_append_new(all, json_integer(mx_fe_port(fe, i))) < 0) {
            json_decref(all);
            all = NULL;
        }
    json_t *j =
        all ? json_pack("{s:i, s:o, s:o}", "exchange", (int)mx_fe_port(fe, 0), "exchange_all", all,
                        "control",
                        mx_fe_control_port(fe) ? json_integer(mx_fe_control_port(fe)) : json_null())
            : NULL;
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return EG_ENOMEM;
    size_t len = strlen(text);
    char *line = eg_asprintf("%s\n", text);
    eg_free(text);
    if (!line)
        return EG_ENOMEM;
    int rc = eg_write_file_atomic(path, line, len + 1, 0644);
    eg_free(line);
    return rc;
}

int main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_CONTROL,
        OPT_PROFILE,
        OPT_MAILBOXES,
        OPT_DEVICES,
        OPT_SEED,
        OPT_SEED_LISTS,
        OPT_USERS,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_PORTS_FILE,
        OPT_SHARED,
        OPT_REALM,
        OPT_LOG_LEVEL,
        OPT_TENANT,
        OPT_APP_CERT,
        OPT_APP_ID,
        OPT_TOKEN_LIFETIME,
        OPT_GSS_SCHEMES,
        OPT_GSS_KEYTAB,
        OPT_HELP,
        OPT_VERSION,
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"control", required_argument, NULL, OPT_CONTROL},
        {"profile", required_argument, NULL, OPT_PROFILE},
        {"mailboxes", required_argument, NULL, OPT_MAILBOXES},
        {"devices", required_argument, NULL, OPT_DEVICES},
        {"seed", required_argument, NULL, OPT_SEED},
        {"seed-lists", no_argument, NULL, OPT_SEED_LISTS},
        {"users", required_argument, NULL, OPT_USERS},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"ports-file", required_argument, NULL, OPT_PORTS_FILE},
        {"shared-shells", no_argument, NULL, OPT_SHARED},
        {"realm", required_argument, NULL, OPT_REALM},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"tenant", required_argument, NULL, OPT_TENANT},
        {"app-cert", required_argument, NULL, OPT_APP_CERT},
        {"app-id", required_argument, NULL, OPT_APP_ID},
        {"token-lifetime-s", required_argument, NULL, OPT_TOKEN_LIFETIME},
        {"gss-schemes", required_argument, NULL, OPT_GSS_SCHEMES},
        {"gss-keytab", required_argument, NULL, OPT_GSS_KEYTAB},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *listen[EG_MOCK_MAX_LISTENERS];
    struct mx_fe_opts o = {.profile = MX_PROFILE_2016, .seed = 1, .mailboxes = 10, .devices = 20};
    const char *ports_file = NULL;
    size_t n_listen = 0;
    int64_t v;
    int c;

    eg_alloc_init();
    xmlInitParser();
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            if (n_listen >= EG_MOCK_MAX_LISTENERS) {
                fprintf(stderr, "easgate-mock-exchange: at most %d --listen\n",
                        EG_MOCK_MAX_LISTENERS);
                return 2;
            }
            listen[n_listen++] = optarg;
            break;
        case OPT_CONTROL:
            o.control = optarg;
            break;
        case OPT_PROFILE:
            if (mx_profile_parse(optarg, &o.profile) < 0) {
                fprintf(stderr, "easgate-mock-exchange: unknown --profile '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_MAILBOXES:
            if (parse_size("--mailboxes", optarg, INT64_C(1) << 31, &v) < 0)
                return 2;
            o.mailboxes = (size_t)v;
            break;
        case OPT_DEVICES:
            if (parse_size("--devices", optarg, INT64_C(1) << 31, &v) < 0)
                return 2;
            o.devices = (size_t)v;
            break;
        case OPT_SEED:
            if (parse_size("--seed", optarg, INT64_MAX, &v) < 0)
                return 2;
            o.seed = (uint64_t)v;
            break;
        case OPT_SEED_LISTS:
            o.seed_lists = true;
            break;
        case OPT_USERS:
            o.users_file = optarg;
            break;
        case OPT_TLS_CERT:
            o.tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            o.tls_key = optarg;
            break;
        case OPT_PORTS_FILE:
            ports_file = optarg;
            break;
        case OPT_SHARED:
            o.shared_shells = true;
            break;
        case OPT_REALM:
            o.realm = optarg;
            break;
        case OPT_LOG_LEVEL: {
            enum eg_log_level lv;
            if (eg_log_level_parse(optarg, &lv) < 0) {
                fprintf(stderr, "easgate-mock-exchange: unknown --log-level '%s'\n", optarg);
                return 2;
            }
            eg_log_set_level(lv);
            break;
        }
        case OPT_TENANT:
            o.tenant = optarg;
            break;
        case OPT_APP_CERT:
            o.app_cert = optarg;
            break;
        case OPT_APP_ID:
            o.app_id = optarg;
            break;
        case OPT_TOKEN_LIFETIME:
            if (parse_size("--token-lifetime-s", optarg, 86400, &v) < 0)
                return 2;
            if (v == 0) {
                fprintf(stderr, "easgate-mock-exchange: --token-lifetime-s wants 1..86400\n");
                return 2;
            }
            o.token_lifetime_s = v;
            break;
        case OPT_GSS_SCHEMES:
            if (!(o.gss_schemes = mx_gss_parse_schemes(optarg))) {
                fprintf(stderr,
                        "easgate-mock-exchange: --gss-schemes wants a comma list of negotiate, "
                        "kerberos, ntlm; got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_GSS_KEYTAB:
            o.gss_keytab = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("easgate-mock-exchange %s\n", EG_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "easgate-mock-exchange: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (n_listen == 0)
        listen[n_listen++] = "127.0.0.1:0";
    if (o.gss_keytab && !o.gss_schemes)
        o.gss_schemes = MX_GSS_NEGOTIATE | MX_GSS_KERBEROS | MX_GSS_NTLM;
    o.listen = listen;
    o.n_listen = n_listen;

    /* Every thread inherits this mask; the main thread takes the signals with sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct mx_fe *fe = NULL;
    char err[512] = "";
    int rc = mx_fe_start(&o, &fe, err, sizeof err);
    if (rc < 0) {
        eg_log_err("cannot start: %s", err[0] ? err : eg_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < mx_fe_listener_count(fe); i++)
        eg_log_notice("listener %zu (%s): %s, port %u, POST /PowerShell and REST", i, listen[i],
                      o.tls_cert ? "https" : "http", (unsigned)mx_fe_port(fe, i));
    if (mx_fe_control_port(fe))
        eg_log_notice("control API on port %u", (unsigned)mx_fe_control_port(fe));
    eg_log_notice("org: profile %s, %zu mailboxes, %zu devices, seed %llu%s",
                  mx_profile_name(o.profile), o.mailboxes, o.devices, (unsigned long long)o.seed,
                  o.users_file || o.gss_schemes ? "" : " (no authentication)");
    if (o.gss_schemes)
        eg_log_notice("GSSAPI:%s%s%s%s", o.gss_schemes & MX_GSS_NEGOTIATE ? " Negotiate" : "",
                      o.gss_schemes & MX_GSS_KERBEROS ? " Kerberos" : "",
                      o.gss_schemes & MX_GSS_NTLM ? " NTLM" : "",
                      o.tls_cert ? " with channel binding" : ", bodies sealed");
    if (ports_file && (rc = write_ports(ports_file, fe)) < 0) {
        eg_log_err("cannot write %s: %s", ports_file, eg_strerror(rc));
        mx_fe_free(fe);
        return 1;
    }
    int sig = 0;
    sigwait(&set, &sig);
    eg_log_notice("signal %d: stopping", sig);
    mx_fe_free(fe);
    eg_log_notice("stopped");
    return 0;
}
