/* classify.c - Exchange errors to stable codes (contract: classify.h). */
#include "exchange/classify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Case-insensitive substring search. */
static bool has(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

/* The number just before `unit` in text (skipping spaces), or -1. */
static int64_t number_before(const char *text, const char *unit)
{
    const char *u = strcasestr(text, unit);
    while (u) {
        const char *p = u;
        while (p > text && p[-1] == ' ')
            p--;
        const char *end = p;
        while (p > text && p[-1] >= '0' && p[-1] <= '9')
            p--;
        if (p < end && end - p <= 12)
            return strtoll(p, NULL, 10);
        u = strcasestr(u + 1, unit);
    }
    return -1;
}

int64_t eg_classify_named_delay_ms(const char *text)
{
    int64_t v;
    if (!text)
        return -1;
    /* "The next request from this user will not be approved for at least Z milliseconds." */
    if (has(text, "at least") && (v = number_before(text, "milliseconds")) >= 0)
        return v;
    /* "Micro delay applied. Actual delayed: 21956 msecs, ..." */
    if (has(text, "Micro delay applied") && (v = number_before(text, "msecs")) >= 0)
        return v;
    /* "... budget to create runspace. Please wait for <N> seconds." */
    if (has(text, "wait for") && (v = number_before(text, "seconds")) >= 0)
        return v * 1000;
    return -1;
}

bool eg_classify_is_throttle_text(const char *text)
{
    return has(text, "concurrent shells") || has(text, "user load quota") ||
           has(text, "concurrent commands per shell") || has(text, "budget to create runspace") ||
           has(text, "maximum number of connections allowed") ||
           has(text, "maximum number of concurrent requests") || has(text, "Micro delay applied");
}

static void set(struct eg_bridge_error *out, const char *code, bool transient, const char *msg,
                const struct eg_ps_error_record *er)
{
    eg_bridge_error_set(out, code, transient, "%s", msg);
    if (er) {
        snprintf(out->exchange_type, sizeof out->exchange_type, "%s",
                 er->exception_type ? er->exception_type : "");
        snprintf(out->exchange_message, sizeof out->exchange_message, "%s",
                 er->message ? er->message : "");
    }
}

static bool type_is(const struct eg_ps_error_record *er, const char *short_name)
{
    if (has(er->exception_type, short_name) || has(er->reason, short_name) ||
        has(er->fqeid, short_name))
        return true;
    for (size_t i = 0; i < er->n_exception_types; i++)
        if (has(er->exception_types[i], short_name))
            return true;
    return false;
}

void eg_classify_record(const struct eg_ps_error_record *er, enum eg_classify_target target,
                        struct eg_bridge_error *out)
{
    const char *msg = er && er->message ? er->message : "";
    if (!er) {
        set(out, EG_BERR_INTERNAL, true, "Exchange reported an error without a record", NULL);
        return;
    }
    if (eg_classify_is_throttle_text(msg)) {
        set(out, EG_BERR_THROTTLED, true, "Exchange is throttling this account", er);
        int64_t d = eg_classify_named_delay_ms(msg);
        out->retry_after_ms = d > 0 ? d : 0;
        return;
    }
    if (type_is(er, "NamedParameterNotFound") || type_is(er, "ParameterBindingException") ||
        has(msg, "A parameter cannot be found")) {
        set(out, EG_BERR_UNSUPPORTED, false,
            "this Exchange version (or the account's role) lacks a parameter the command needs",
            er);
        return;
    }
    if (has(msg, "doesn't support account-only remote wipe") ||
        has(msg, "does not support account-only remote wipe")) {
        set(out, EG_BERR_UNSUPPORTED, false,
            "the device cannot do an account-only wipe (it needs ActiveSync 16.1); a full wipe "
            "must be asked for explicitly",
            er);
        return;
    }
    if (type_is(er, "CommandNotFoundException") ||
        has(msg, "is not recognized as the name of a cmdlet")) {
        set(out, EG_BERR_UNSUPPORTED, false,
            "the cmdlet is not available to this account on this Exchange (version or RBAC role)",
            er);
        return;
    }
    if (has(msg, "write scope") || type_is(er, "AccessDenied") || type_is(er, "Unauthorized") ||
        er->category == EG_PS_ERR_PERMISSION_DENIED) {
        set(out, EG_BERR_PERMISSION_DENIED, false,
            "the Exchange account may not change this object (RBAC or write scope)", er);
        return;
    }
    if (type_is(er, "ManagementObjectNotFoundException") || has(msg, "couldn't be found") ||
        has(msg, "cannot be found") || has(msg, "could not be found")) {
        bool device = target == EG_TARGET_DEVICE || has(msg, "mobile device");
        set(out, device ? EG_BERR_DEVICE_NOT_FOUND : EG_BERR_MAILBOX_NOT_FOUND, false,
            device ? "the device was not found in Exchange"
                   : "the mailbox was not found in Exchange",
            er);
        return;
    }
    if (has(msg, "is already present in the collection")) {
        /* The lists changed under us: a retry re-reads them and sends the new difference. */
        set(out, EG_BERR_THROTTLED, true, "the device lists changed meanwhile; re-reading them",
            er);
        out->retry_after_ms = 0;
        return;
    }
    if (type_is(er, "ScriptsNotAllowed") || type_is(er, "ParseException") ||
        has(msg, "prompts the user failed") || type_is(er, "ParameterArgumentTransformation")) {
        set(out, EG_BERR_INTERNAL, false, "Exchange refused how easgate called it (a bug)", er);
        return;
    }
    if (type_is(er, "PSRemotingTransportException") || type_is(er, "TimeoutException") ||
        er->category == EG_PS_ERR_RESOURCE_UNAVAILABLE ||
        er->category == EG_PS_ERR_OPERATION_TIMEOUT) {
        set(out, EG_BERR_UNREACHABLE, true, "Exchange could not complete the call now", er);
        return;
    }
    if (type_is(er, "ArgumentException") || er->category == EG_PS_ERR_INVALID_ARGUMENT ||
        er->category == EG_PS_ERR_INVALID_DATA) {
        set(out, EG_BERR_INVALID_ARGUMENT, false, "Exchange refused a value of the command", er);
        return;
    }
    /* Unknown Exchange errors: not known to be permanent, so retry within the bounded budget. */
    set(out, EG_BERR_INTERNAL, true, "Exchange reported an unexpected error", er);
}

void eg_classify_exception(const char *exception_type, const char *message,
                           enum eg_classify_target target, struct eg_bridge_error *out)
{
    /* classification only reads the record */
    struct eg_ps_error_record er = {.exception_type =
                                        (char *)(exception_type ? exception_type : ""),
                                    .message = (char *)(message ? message : ""),
                                    .category = EG_PS_ERR_NOT_SPECIFIED};
    eg_classify_record(&er, target, out);
}

bool eg_classify_is_load(const struct eg_bridge_error *err)
{
    return err && strcmp(err->code, EG_BERR_THROTTLED) == 0 &&
           !has(err->exchange_message, "is already present in the collection");
}

void eg_classify_psrp(const struct eg_psrp_error *e, enum eg_classify_target target,
                      struct eg_bridge_error *out)
{
    if (!e) {
        set(out, EG_BERR_INTERNAL, true, "unknown failure", NULL);
        return;
    }
    if ((e->kind == EG_PSRP_ERR_PIPELINE || e->kind == EG_PSRP_ERR_POOL) && e->record) {
        eg_classify_record(e->record, target, out);
        if (e->kind == EG_PSRP_ERR_POOL && strcmp(out->code, EG_BERR_INTERNAL) == 0) {
            set(out, EG_BERR_UNREACHABLE, true, e->message, e->record);
        }
        return;
    }
    switch (e->kind) {
    case EG_PSRP_ERR_AUTH:
        set(out, EG_BERR_PERMISSION_DENIED, false,
            "Exchange refused the configured credentials (HTTP 401)", NULL);
        return;
    case EG_PSRP_ERR_TRANSPORT:
        set(out, e->code == EG_ETIMEDOUT ? EG_BERR_TIMEOUT : EG_BERR_UNREACHABLE, true, e->message,
            NULL);
        return;
    case EG_PSRP_ERR_FAULT:
        switch (e->fault_kind) {
        case EG_WSMAN_FAULT_THROTTLED: {
            set(out, EG_BERR_THROTTLED, true, e->message, NULL);
            int64_t d = eg_classify_named_delay_ms(e->message);
            out->retry_after_ms = d > 0 ? d : 0;
            return;
        }
        case EG_WSMAN_FAULT_ACCESS_DENIED:
            set(out, EG_BERR_PERMISSION_DENIED, false, e->message, NULL);
            return;
        case EG_WSMAN_FAULT_TIMED_OUT:
            set(out, EG_BERR_TIMEOUT, true, e->message, NULL);
            return;
        case EG_WSMAN_FAULT_INVALID_SELECTORS:
            set(out, EG_BERR_UNREACHABLE, true, e->message, NULL);
            return;
        default:
            if (e->wsman_code == 2150858811u) { /* resource URI not in the catalog */
                set(out, EG_BERR_UNSUPPORTED, false,
                    "the endpoint has no Microsoft.Exchange configuration (wrong URL?)", NULL);
                return;
            }
            if (eg_classify_is_throttle_text(e->message)) {
                set(out, EG_BERR_THROTTLED, true, e->message, NULL);
                int64_t d = eg_classify_named_delay_ms(e->message);
                out->retry_after_ms = d > 0 ? d : 0;
                return;
            }
            set(out, EG_BERR_UNREACHABLE, true, e->message, NULL);
            return;
        }
    case EG_PSRP_ERR_POOL:
        set(out, e->code == EG_ETIMEDOUT ? EG_BERR_TIMEOUT : EG_BERR_UNREACHABLE, true, e->message,
            NULL);
        return;
    case EG_PSRP_ERR_PIPELINE:
    case EG_PSRP_ERR_PROTOCOL:
        set(out, EG_BERR_INTERNAL, true, e->message, NULL);
        return;
    case EG_PSRP_ERR_LOCAL:
    case EG_PSRP_ERR_NONE:
    default:
        set(out, e->code == EG_EINVAL ? EG_BERR_INVALID_ARGUMENT : EG_BERR_INTERNAL,
            e->code != EG_EINVAL, e->message, NULL);
        return;
    }
}
