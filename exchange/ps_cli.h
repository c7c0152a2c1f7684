/* ps_cli.h - typed cmdlet parameters from command-line words, for the easgate-ps tool.
 *
 * Words: CMDLET followed by any number of "-p SPEC". SPEC forms:
 *   Name=Value          string
 *   Name:int=5          Int32 (Int64 when out of Int32 range)
 *   Name:bool=true      Boolean (true/false, also $true/$false)
 *   Name:switch         a switch parameter (present)
 *   Name:null           $null (clears a property)
 *   Name:list=a,b       string array (empty items refused; "Name:list=" is an empty array)
 *   Name:add=a,b        } together one hashtable @{Add=a,b; Remove=c} for Name; either may be
 *   Name:remove=c       } given alone
 * Parameter names follow eg_ps_param_name_valid (a letter, then letters, digits or '_'), the
 * cmdlet eg_ps_cmdlet_name_valid (Verb-Noun). Nothing here is ever script text: each value
 * travels as a typed CLIXML value.
 */
#ifndef EG_PS_CLI_H
#define EG_PS_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "exchange/psrp_objects.h"
#include "transport/http_client.h"

/* Parse words[0..n): words[0] is the cmdlet. On success *ret is a new command (free with
 * eg_ps_command_free). On failure why (size bytes) says which word is wrong and why.
 * Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_ps_cli_parse(char *const *words, size_t n, struct eg_ps_command **ret, char *why,
                    size_t size) EG_MUST_CHECK;

/* easgate-ps's authentication options. */
struct eg_ps_cli_auth {
    const char *auth;      /* --auth: "basic" (default when NULL), "negotiate", "kerberos",
                              "ntlm" (any case) */
    const char *user;      /* --user (Basic account, or the principal) */
    const char *principal; /* --principal (the same as --user; give one) */
    bool password_file;    /* --password-file given */
    const char *keytab;    /* --keytab (Kerberos client keytab) */
};

/* Check a's combination and pick the transport: Basic needs user + password; kerberos a
 * principal and a password file or keytab; ntlm a principal and a password file; negotiate with
 * a principal is our GSSAPI SPNEGO (like kerberos, keytab allowed), without one libcurl's
 * SPNEGO with the process's Kerberos tickets (KRB5CCNAME, https only). *http_auth, *scheme (for
 * EG_HTTP_CLIENT_AUTH_GSS) and *account (the user or principal, borrowed; may be NULL) are set
 * on success. Returns 0 or EG_EINVAL (why says which option is wrong). */
int eg_ps_cli_auth_check(const struct eg_ps_cli_auth *a, enum eg_http_client_auth *http_auth,
                         enum eg_gss_scheme *scheme, const char **account, char *why,
                         size_t size) EG_MUST_CHECK;

#endif
