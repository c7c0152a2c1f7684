/* error.c - texts of the EG_E* codes. */
#include "common/error.h"

static const struct {
    const char *name;
    const char *text;
} errtab[EG__ECOUNT] = {
    [0] = {"ok", "success"},
    [1] = {"enomem", "out of memory"},
    [2] = {"einval", "invalid argument"},
    [3] = {"elimit", "over a limit"},
    [4] = {"enotfound", "not found"},
    [5] = {"econflict", "conflicts with existing state"},
    [6] = {"estate", "not allowed in the current state"},
    [7] = {"eio", "input/output error"},
    [8] = {"edb", "storage error"},
    [9] = {"eparse", "malformed input"},
    [10] = {"etls", "TLS error"},
    [11] = {"eauth", "authentication failed"},
    [12] = {"eperm", "permission denied"},
    [13] = {"eproto", "protocol error"},
    [14] = {"etimedout", "timed out"},
    [15] = {"eunavail", "unavailable"},
    [16] = {"eunsupported", "not supported"},
    [17] = {"eshutdown", "shutting down"},
    [18] = {"eagain", "temporarily unavailable, try again"},
    [19] = {"eremote", "remote error"},
    [20] = {"einternal", "internal error"},
};

const char *eg_strerror(int code)
{
    if (code > 0 || -code >= EG__ECOUNT)
        return "unknown error";
    return errtab[-code].text;
}

const char *eg_errname(int code)
{
    if (code > 0 || -code >= EG__ECOUNT)
        return "eunknown";
    return errtab[-code].name;
}
