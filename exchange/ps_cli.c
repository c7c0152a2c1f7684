/* ps_cli.c - "-p Name:type=value" words to a typed command (contract: ps_cli.h). */
#include "exchange/ps_cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/util.h"

#define MAX_SPEC_NAME 128

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && size)
        vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return EG_EINVAL;
}

/* Split "a,b,c" into a string array value; "" gives an empty array. */
static int split_list(const char *s, char ***ret, size_t *ret_n)
{
    char **v = NULL;
    size_t n = 0;
    const char *p = s;
    if (*s) {
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len == 0)
                goto invalid;
            char **nv = eg_reallocarray(v, n + 1, sizeof *nv);
            if (!nv)
                goto nomem;
            v = nv;
            if (!(v[n] = eg_strndup(p, len)))
                goto nomem;
            n++;
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
invalid:
    eg_ps_string_array_free(v, n);
    return EG_EINVAL;
nomem:
    eg_ps_string_array_free(v, n);
    return EG_ENOMEM;
}

/* Pending @{Add;Remove} of one parameter name. */
struct pending_hash {
    char name[MAX_SPEC_NAME + 1];
    char **add, **remove;
    size_t n_add, n_remove;
    bool has_add, has_remove;
};

static void pending_free(struct pending_hash *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        eg_ps_string_array_free(h[i].add, h[i].n_add);
        eg_ps_string_array_free(h[i].remove, h[i].n_remove);
    }
    eg_free(h);
}

int eg_ps_cli_parse(char *const *words, size_t n, struct eg_ps_command **ret, char *why,
                    size_t size)
{
    struct eg_ps_command *cmd = NULL;
    struct pending_hash *hashes = NULL;
    size_t n_hashes = 0;
    int rc;

    if (!words || n == 0 || !ret)
        return bad(why, size, "no cmdlet given");
    if (!eg_ps_cmdlet_name_valid(words[0]))
        return bad(why, size, "'%s' is not a cmdlet name (Verb-Noun of letters and digits)",
                   words[0]);
    if ((rc = eg_ps_command_new(words[0], &cmd)) < 0)
        return rc == EG_ENOMEM ? rc : bad(why, size, "bad cmdlet name '%s'", words[0]);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(words[i], "-p") != 0) {
            rc = bad(why, size, "expected -p SPEC, got '%s'", words[i]);
            goto out;
        }
        if (++i == n) {
            rc = bad(why, size, "-p needs a SPEC (Name=Value, Name:int=5, Name:switch...)");
            goto out;
        }
        const char *spec = words[i];
        const char *eq = strchr(spec, '=');
        const char *colon = strchr(spec, ':');
        if (colon && eq && colon > eq)
            colon = NULL;
        size_t name_len = colon ? (size_t)(colon - spec) : eq ? (size_t)(eq - spec) : strlen(spec);
        char name[MAX_SPEC_NAME + 1], type[16] = "string";
        if (name_len == 0 || name_len > MAX_SPEC_NAME) {
            rc = bad(why, size, "-p %s: missing or over-long parameter name", spec);
            goto out;
        }
        memcpy(name, spec, name_len);
        name[name_len] = '\0';
        if (!eg_ps_param_name_valid(name)) {
            rc = bad(why, size, "-p %s: '%s' is not a parameter name", spec, name);
            goto out;
        }
        if (colon) {
            size_t tlen = eq ? (size_t)(eq - colon - 1) : strlen(colon + 1);
            if (tlen == 0 || tlen >= sizeof type) {
                rc = bad(why, size, "-p %s: unknown type", spec);
                goto out;
            }
            memcpy(type, colon + 1, tlen);
            type[tlen] = '\0';
        }
        const char *value = eq ? eq + 1 : NULL;
        bool needs_value = strcmp(type, "switch") != 0 && strcmp(type, "null") != 0;
        if (needs_value != (value != NULL)) {
            rc =
                bad(why, size, needs_value ? "-p %s: needs =VALUE" : "-p %s: takes no value", spec);
            goto out;
        }
        struct eg_ps_value *v = NULL;
        if (strcmp(type, "string") == 0) {
            v = eg_ps_new_string(value);
        } else if (strcmp(type, "int") == 0) {
            int64_t x;
            if (eg_parse_int64(value, INT64_MIN, INT64_MAX, &x) < 0) {
                rc = bad(why, size, "-p %s: not an integer", spec);
                goto out;
            }
            v = x >= INT32_MIN && x <= INT32_MAX ? eg_ps_new_i32((int32_t)x) : eg_ps_new_i64(x);
        } else if (strcmp(type, "bool") == 0) {
            bool b;
            if (strcasecmp(value, "true") == 0 || strcasecmp(value, "$true") == 0)
                b = true;
            else if (strcasecmp(value, "false") == 0 || strcasecmp(value, "$false") == 0)
                b = false;
            else {
                rc = bad(why, size, "-p %s: not true or false", spec);
                goto out;
            }
            v = eg_ps_new_bool(b);
        } else if (strcmp(type, "null") == 0) {
            v = eg_ps_new_nil();
        } else if (strcmp(type, "switch") == 0) {
            if ((rc = eg_ps_command_add_switch(cmd, name)) < 0) {
                if (rc != EG_ENOMEM)
                    rc = bad(why, size, "-p %s: %s", spec,
                             rc == EG_ECONFLICT ? "parameter given twice" : eg_strerror(rc));
                goto out;
            }
            continue;
        } else if (strcmp(type, "list") == 0) {
            char **items = NULL;
            size_t n_items = 0;
            if ((rc = split_list(value, &items, &n_items)) < 0) {
                if (rc != EG_ENOMEM)
                    rc = bad(why, size, "-p %s: empty list item", spec);
                goto out;
            }
            v = eg_ps_new_string_array((const char *const *)items, n_items);
            eg_ps_string_array_free(items, n_items);
        } else if (strcmp(type, "add") == 0 || strcmp(type, "remove") == 0) {
            bool add = strcmp(type, "add") == 0;
            struct pending_hash *h = NULL;
            for (size_t k = 0; k < n_hashes; k++)
                if (strcasecmp(hashes[k].name, name) == 0)
                    h = &hashes[k];
            if (!h) {
                struct pending_hash *nh = eg_reallocarray(hashes, n_hashes + 1, sizeof *nh);
                if (!nh) {
                    rc = EG_ENOMEM;
                    goto out;
                }
                hashes = nh;
                h = &hashes[n_hashes++];
                memset(h, 0, sizeof *h);
                snprintf(h->name, sizeof h->name, "%s", name);
            }
            if (add ? h->has_add : h->has_remove) {
                rc = bad(why, size, "-p %s: %s given twice for %s", spec, type, name);
                goto out;
            }
            rc = split_list(value, add ? &h->add : &h->remove, add ? &h->n_add : &h->n_remove);
            if (rc < 0) {
                if (rc != EG_ENOMEM)
                    rc = bad(why, size, "-p %s: empty list item", spec);
                goto out;
            }
            *(add ? &h->has_add : &h->has_remove) = true;
            continue;
        } else {
            rc = bad(why, size,
                     "-p %s: unknown type '%s' (string, int, bool, switch, null, list, add, "
                     "remove)",
                     spec, type);
            goto out;
        }
        if ((rc = eg_ps_command_add_param(cmd, name, v)) < 0) {
            if (rc != EG_ENOMEM)
                rc = bad(why, size, "-p %s: %s", spec,
                         rc == EG_ECONFLICT ? "parameter given twice" : eg_strerror(rc));
            goto out;
        }
    }
    for (size_t k = 0; k < n_hashes; k++) {
        struct pending_hash *h = &hashes[k];
        struct eg_ps_value *v = eg_ps_new_add_remove((const char *const *)h->add, h->n_add,
                                                     (const char *const *)h->remove, h->n_remove);
        if ((rc = eg_ps_command_add_param(cmd, h->name, v)) < 0) {
            if (rc != EG_ENOMEM)
                rc = bad(why, size, "%s: %s", h->name,
                         rc == EG_ECONFLICT ? "given both as a value and as add/remove"
                                            : eg_strerror(rc));
            goto out;
        }
    }
    *ret = cmd;
    cmd = NULL;
    rc = 0;
out:
    pending_free(hashes, n_hashes);
    eg_ps_command_free(cmd);
    return rc;
}

/* ---- authentication options ----------------------------------------------------------------- */

int eg_ps_cli_auth_check(const struct eg_ps_cli_auth *a, enum eg_http_client_auth *http_auth,
                         enum eg_gss_scheme *scheme, const char **account, char *why, size_t size)
{
    const char *name = a->auth ? a->auth : "basic";
    if (a->user && a->principal && strcmp(a->user, a->principal) != 0) {
        snprintf(why, size, "--user and --principal name different accounts; give one");
        return EG_EINVAL;
    }
    const char *acct = a->principal ? a->principal : a->user;
    *scheme = EG_GSS_NEGOTIATE;
    if (strcasecmp(name, "basic") == 0) {
        if (!acct || !a->password_file) {
            snprintf(why, size, "basic authentication needs --user and --password-file");
            return EG_EINVAL;
        }
        if (a->keytab) {
            snprintf(why, size, "--keytab is for --auth kerberos or negotiate");
            return EG_EINVAL;
        }
        *http_auth = EG_HTTP_CLIENT_AUTH_BASIC;
    } else if (strcasecmp(name, "kerberos") == 0 || strcasecmp(name, "negotiate") == 0) {
        bool krb = strcasecmp(name, "kerberos") == 0;
        if (a->password_file && a->keytab) {
            snprintf(why, size, "--password-file and --keytab exclude each other");
            return EG_EINVAL;
        }
        if (!krb && !acct && !a->password_file && !a->keytab) {
            *http_auth = EG_HTTP_CLIENT_AUTH_NEGOTIATE; /* the process's own tickets */
        } else if (!acct) {
            snprintf(why, size, "--auth %s needs --principal (user@REALM)",
                     krb ? "kerberos" : "negotiate");
            return EG_EINVAL;
        } else if (!a->password_file && !a->keytab) {
            snprintf(why, size, "--auth %s needs --password-file or --keytab",
                     krb ? "kerberos" : "negotiate");
            return EG_EINVAL;
        } else {
            *http_auth = EG_HTTP_CLIENT_AUTH_GSS;
            *scheme = krb ? EG_GSS_KERBEROS : EG_GSS_NEGOTIATE;
        }
    } else if (strcasecmp(name, "ntlm") == 0) {
        if (!acct || !a->password_file) {
            snprintf(why, size, "--auth ntlm needs --principal (DOMAIN\\user) and --password-file");
            return EG_EINVAL;
        }
        if (a->keytab) {
            snprintf(why, size, "--keytab is for Kerberos; NTLM takes --password-file");
            return EG_EINVAL;
        }
        *http_auth = EG_HTTP_CLIENT_AUTH_GSS;
        *scheme = EG_GSS_NTLM;
    } else {
        snprintf(why, size, "--auth must be basic, negotiate, kerberos or ntlm");
        return EG_EINVAL;
    }
    *account = acct;
    return 0;
}
