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

#include <stddef.h>

#include "common/error.h"
#include "exchange/psrp_objects.h"

/* Parse words[0..n): words[0] is the cmdlet. On success *ret is a new command (free with
 * eg_ps_command_free). On failure why (size bytes) says which word is wrong and why.
 * Returns 0, EG_EINVAL, EG_ENOMEM. */
int eg_ps_cli_parse(char *const *words, size_t n, struct eg_ps_command **ret, char *why,
                    size_t size) EG_MUST_CHECK;

#endif
