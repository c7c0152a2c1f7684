/* psrp_records.c - error and informational records and the state messages that carry them:
 * ERROR_RECORD (MS-PSRP 2.2.2.20, ErrorRecord 2.2.3.15), RUNSPACEPOOL_STATE (2.2.2.9) and
 * PIPELINE_STATE (2.2.2.21) with their optional ExceptionAsErrorRecord, WARNING / VERBOSE /
 * DEBUG_RECORD (InformationalRecord 2.2.3.16) and INFORMATION_RECORD (2.2.2.26). Parsers for the
 * client, builders in the shape pwsh sends (recorded in test_psrp_with_jea_configuration.yml)
 * for the mock server. */
#include "exchange/psrp_objects.h"

#include <string.h>
#include <strings.h>

#include "common/alloc.h"

#define TN_ERROR_RECORD "System.Management.Automation.ErrorRecord"

/* ---- error categories ---- */

static const char *const k_category_names[] = {
    "NotSpecified",        "OpenError",           "CloseError",       "DeviceError",
    "DeadlockDetected",    "InvalidArgument",     "InvalidData",      "InvalidOperation",
    "InvalidResult",       "InvalidType",         "MetadataError",    "NotImplemented",
    "NotInstalled",        "ObjectNotFound",      "OperationStopped", "OperationTimeout",
    "SyntaxError",         "ParserError",         "PermissionDenied", "ResourceBusy",
    "ResourceExists",      "ResourceUnavailable", "ReadError",        "WriteError",
    "FromStdErr",          "SecurityError",       "ProtocolError",    "ConnectionError",
    "AuthenticationError", "LimitsExceeded",      "QuotaExceeded",    "NotEnabled",
};

#define N_CATEGORIES ((int32_t)(sizeof k_category_names / sizeof k_category_names[0]))

const char *eg_ps_error_category_name(int32_t category)
{
    if (category < 0 || category >= N_CATEGORIES)
        return NULL;
    return k_category_names[category];
}

int32_t eg_ps_error_category_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int32_t i = 0; i < N_CATEGORIES; i++)
        if (strcasecmp(k_category_names[i], name) == 0)
            return i;
    return -1;
}

/* ---- error records: parsing ---- */

static const char *strip_deserialized(const char *s)
{
    static const char pfx[] = "Deserialized.";
    return strncmp(s, pfx, sizeof pfx - 1) == 0 ? s + sizeof pfx - 1 : s;
}

/* Copy the string of v (S, or an Obj whose base is one) into *out; *out stays NULL when v is
 * absent, Nil or not a string. Only EG_ENOMEM is an error. */
static int copy_string(const struct eg_ps_value *v, char **out)
{
    const char *s = NULL;
    size_t len = 0;
    if (eg_ps_get_string(v, &s, &len) != 0)
        return 0;
    *out = eg_strndup(s, len);
    return *out ? 0 : EG_ENOMEM;
}

/* The first of two members that holds a string (MS name on the record, else the adapted name on
 * an auxiliary object such as CategoryInfo). */
static int copy_member(const struct eg_ps_value *v, const char *name, const struct eg_ps_value *alt,
                       const char *alt_name, char **out)
{
    int rc = copy_string(eg_ps_obj_prop(v, name), out);
    if (rc == 0 && !*out && alt)
        rc = copy_string(eg_ps_obj_prop(alt, alt_name), out);
    return rc;
}

static int32_t parse_category(const struct eg_ps_value *v, const struct eg_ps_value *ci)
{
    int32_t cat = 0;
    if (eg_ps_get_i32(eg_ps_obj_prop(v, "ErrorCategory_Category"), &cat) == 0)
        return cat;
    const struct eg_ps_value *c = eg_ps_obj_prop(ci, "Category");
    if (eg_ps_get_i32(c, &cat) == 0)
        return cat;
    const char *name = NULL;
    if (eg_ps_get_string(c, &name, NULL) == 0 || (name = eg_ps_to_string(c)) != NULL) {
        cat = eg_ps_error_category_from_name(name);
        return cat < 0 ? 0 : cat;
    }
    return 0;
}

static int parse_exception_types(struct eg_ps_error_record *er, const struct eg_ps_value *exc)
{
    size_t n = 0;
    while (eg_ps_type_name(exc, n))
        n++;
    if (n == 0)
        return 0;
    er->exception_types = eg_calloc(n, sizeof *er->exception_types);
    if (!er->exception_types)
        return EG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        er->exception_types[i] = eg_strdup(strip_deserialized(eg_ps_type_name(exc, i)));
        if (!er->exception_types[i])
            return EG_ENOMEM;
        er->n_exception_types = i + 1;
    }
    er->exception_type = eg_strdup(er->exception_types[0]);
    return er->exception_type ? 0 : EG_ENOMEM;
}

int eg_psrp_parse_error_record(const struct eg_ps_value *v, struct eg_ps_error_record **ret)
{
    struct eg_ps_error_record *er = NULL;
    int rc;

    if (!ret)
        return EG_EINVAL;
    if (!v || v->kind != EG_PS_OBJ)
        return EG_EPROTO;
    const struct eg_ps_value *exc = eg_ps_obj_prop(v, "Exception");
    const struct eg_ps_value *fq = eg_ps_obj_prop(v, "FullyQualifiedErrorId");
    if ((!exc || exc->kind == EG_PS_NIL) && !fq)
        return EG_EPROTO;
    const struct eg_ps_value *ci = eg_ps_obj_prop(v, "CategoryInfo");
    const struct eg_ps_value *details = eg_ps_obj_prop(v, "ErrorDetails");

    er = eg_calloc(1, sizeof *er);
    if (!er) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = parse_exception_types(er, exc);
    if (rc == 0)
        rc = copy_string(eg_ps_obj_prop(exc, "Message"), &er->message);
    if (rc == 0 && !er->message && eg_ps_to_string(v))
        rc = (er->message = eg_strdup(eg_ps_to_string(v))) ? 0 : EG_ENOMEM;
    if (rc == 0 && !er->message)
        rc = (er->message = eg_strdup("")) ? 0 : EG_ENOMEM;
    if (rc == 0)
        rc = copy_string(fq, &er->fqeid);
    if (rc == 0)
        rc = copy_member(v, "ErrorCategory_Activity", ci, "Activity", &er->activity);
    if (rc == 0)
        rc = copy_member(v, "ErrorCategory_Reason", ci, "Reason", &er->reason);
    if (rc == 0)
        rc = copy_member(v, "ErrorCategory_TargetName", ci, "TargetName", &er->target_name);
    if (rc == 0)
        rc = copy_member(v, "ErrorCategory_TargetType", ci, "TargetType", &er->target_type);
    if (rc == 0)
        rc = copy_string(eg_ps_obj_prop(v, "ErrorCategory_Message"), &er->category_message);
    if (rc == 0 && !er->category_message && eg_ps_to_string(ci) && ci->kind == EG_PS_OBJ)
        rc = (er->category_message = eg_strdup(eg_ps_to_string(ci))) ? 0 : EG_ENOMEM;
    if (rc == 0)
        rc = copy_member(v, "ErrorDetails_Message", details, "Message", &er->details_message);
    if (rc != 0)
        goto out;
    er->category = parse_category(v, ci);
    if (eg_ps_get_bool(eg_ps_obj_prop(v, "writeErrorStream"), &er->write_error_stream) != 0)
        er->write_error_stream = false;
    *ret = er;
    er = NULL;
out:
    eg_ps_error_record_free(er);
    return rc;
}

int eg_ps_error_record_new(const char *exception_type, const char *message, const char *fqeid,
                           int32_t category, struct eg_ps_error_record **ret)
{
    struct eg_ps_error_record *er = NULL;
    int rc = 0;

    if (!exception_type || !message || !fqeid || !ret)
        return EG_EINVAL;
    er = eg_calloc(1, sizeof *er);
    if (!er)
        return EG_ENOMEM;
    er->exception_type = eg_strdup(exception_type);
    er->message = eg_strdup(message);
    er->fqeid = eg_strdup(fqeid);
    er->category = category;
    if (!er->exception_type || !er->message || !er->fqeid) {
        rc = EG_ENOMEM;
        goto out;
    }
    *ret = er;
    er = NULL;
out:
    eg_ps_error_record_free(er);
    return rc;
}

void eg_ps_error_record_free(struct eg_ps_error_record *er)
{
    if (!er)
        return;
    for (size_t i = 0; i < er->n_exception_types; i++)
        eg_free(er->exception_types[i]);
    eg_free(er->exception_types);
    eg_free(er->exception_type);
    eg_free(er->message);
    eg_free(er->fqeid);
    eg_free(er->activity);
    eg_free(er->reason);
    eg_free(er->target_name);
    eg_free(er->target_type);
    eg_free(er->category_message);
    eg_free(er->details_message);
    eg_free(er);
}

/* ---- error records: building ---- */

/* Windows PowerShell's ErrorCategoryInfo.Ellipsize: over 40 characters, the first 15, "...",
 * the last 15. Counted in code points (.NET counts UTF-16 units; they differ only outside the
 * BMP). NULL on ENOMEM. */
static char *ellipsize(const char *s)
{
    size_t len = strlen(s), cps = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            cps++;
    if (cps <= 40)
        return eg_strdup(s);
    size_t head = 0, tail = len, seen = 0;
    while (seen < 15) { /* byte offset after the 15th code point */
        head++;
        while (head < len && ((unsigned char)s[head] & 0xC0) == 0x80)
            head++;
        seen++;
    }
    for (seen = 0; seen < 15; seen++) { /* byte offset of the 15th code point from the end */
        tail--;
        while (tail > 0 && ((unsigned char)s[tail] & 0xC0) == 0x80)
            tail--;
    }
    return eg_asprintf("%.*s...%s", (int)head, s, s + tail);
}

static const char *short_type_name(const char *type)
{
    const char *dot = strrchr(type, '.');
    return dot ? dot + 1 : type;
}

/* The Exception object: the type chain, "Type: message" as ToString, Message in Props. */
static struct eg_ps_value *build_exception(const struct eg_ps_error_record *er, const char *type)
{
    struct eg_ps_value *x = eg_ps_new_obj();
    char *text = eg_asprintf("%s: %s", type, er->message);
    int rc = x && text ? 0 : EG_ENOMEM;

    if (rc == 0 && er->n_exception_types > 0) {
        rc =
            eg_ps_obj_set_types(x, (const char *const *)er->exception_types, er->n_exception_types);
    } else if (rc == 0) {
        const char *chain[] = {type, "System.Exception", "System.Object"};
        if (strcmp(type, "System.Exception") == 0)
            rc = eg_ps_obj_set_types(x, chain + 1, 2);
        else
            rc = eg_ps_obj_set_types(x, chain, 3);
    }
    if (rc == 0)
        rc = eg_ps_obj_set_to_string(x, text, strlen(text));
    if (rc == 0)
        rc = eg_ps_obj_add_prop(x, "Message", eg_ps_new_string(er->message));
    if (rc == 0)
        rc = eg_ps_obj_add_prop(x, "InnerException", eg_ps_new_nil());
    eg_free(text);
    if (rc != 0) {
        eg_ps_value_free(x);
        return NULL;
    }
    return x;
}

static struct eg_ps_value *string_or_empty(const char *s)
{
    return eg_ps_new_string(s ? s : "");
}

/* The ErrorRecord object. with_stream: add writeErrorStream (ERROR_RECORD messages only). */
static int build_error_value(const struct eg_ps_error_record *er, bool with_stream,
                             struct eg_ps_value **ret)
{
    static const char *const tn[] = {TN_ERROR_RECORD, "System.Object"};
    struct eg_ps_value *o = NULL;
    char *cat_msg = NULL, *target = NULL;
    int rc;

    if (!er || !er->message || !er->fqeid ||
        (!er->exception_type && (er->n_exception_types == 0 || !er->exception_types[0])))
        return EG_EINVAL;
    for (size_t i = 0; i < er->n_exception_types; i++)
        if (!er->exception_types[i])
            return EG_EINVAL;
    const char *type = er->exception_type ? er->exception_type : er->exception_types[0];
    const char *reason = er->reason ? er->reason : short_type_name(type);
    const char *target_type = er->target_type ? er->target_type : er->target_name ? "String" : "";
    const char *cat_name = eg_ps_error_category_name(er->category);
    const char *shown = er->details_message ? er->details_message : er->message;

    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (!er->category_message) {
        target = ellipsize(er->target_name ? er->target_name : "");
        if (target)
            cat_msg = eg_asprintf("%s: (%s:%s) [%s], %s", cat_name ? cat_name : "NotSpecified",
                                  target, target_type, er->activity ? er->activity : "", reason);
        if (!cat_msg) {
            rc = EG_ENOMEM;
            goto out;
        }
    }
    rc = eg_ps_obj_set_types(o, tn, 2);
    if (rc == 0)
        rc = eg_ps_obj_set_to_string(o, shown, strlen(shown));
    if (rc == 0 && with_stream)
        rc = eg_ps_obj_add_ms(o, "writeErrorStream", eg_ps_new_bool(er->write_error_stream));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "Exception", build_exception(er, type));
    if (rc == 0)
        rc =
            eg_ps_obj_add_ms(o, "TargetObject",
                             er->target_name ? eg_ps_new_string(er->target_name) : eg_ps_new_nil());
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "FullyQualifiedErrorId", eg_ps_new_string(er->fqeid));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "InvocationInfo", eg_ps_new_nil());
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ErrorCategory_Category", eg_ps_new_i32(er->category));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ErrorCategory_Activity", string_or_empty(er->activity));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ErrorCategory_Reason", eg_ps_new_string(reason));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ErrorCategory_TargetName", string_or_empty(er->target_name));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ErrorCategory_TargetType", eg_ps_new_string(target_type));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(
            o, "ErrorCategory_Message",
            eg_ps_new_string(er->category_message ? er->category_message : cat_msg));
    if (rc == 0 && er->details_message) {
        rc = eg_ps_obj_add_ms(o, "ErrorDetails_Message", eg_ps_new_string(er->details_message));
        if (rc == 0)
            rc = eg_ps_obj_add_ms(o, "ErrorDetails_RecommendedAction", eg_ps_new_string(""));
    }
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "SerializeExtendedInfo", eg_ps_new_bool(false));
    if (rc != 0)
        goto out;
    *ret = o;
    o = NULL;
out:
    eg_free(target);
    eg_free(cat_msg);
    eg_ps_value_free(o);
    return rc;
}

int eg_psrp_build_error_record(const struct eg_ps_error_record *er, char **ret, size_t *ret_len)
{
    struct eg_ps_value *o = NULL;
    if (!ret)
        return EG_EINVAL;
    int rc = build_error_value(er, true, &o);
    if (rc != 0)
        return rc;
    return eg_psrp_body_encode(o, ret, ret_len);
}

/* ---- RUNSPACEPOOL_STATE and PIPELINE_STATE ---- */

static int parse_state(const struct eg_ps_value *v, const char *state_name, int32_t *ret_state,
                       struct eg_ps_error_record **ret_error)
{
    struct eg_ps_error_record *er = NULL;
    int32_t state;

    if (!ret_state)
        return EG_EINVAL;
    if (eg_ps_get_i32(eg_ps_obj_prop(v, state_name), &state) != 0)
        return EG_EPROTO;
    const struct eg_ps_value *x = eg_ps_obj_prop(v, "ExceptionAsErrorRecord");
    if (ret_error && x && x->kind != EG_PS_NIL) {
        int rc = eg_psrp_parse_error_record(x, &er);
        if (rc != 0)
            return rc;
    }
    *ret_state = state;
    if (ret_error)
        *ret_error = er;
    return 0;
}

int eg_psrp_parse_runspacepool_state(const struct eg_ps_value *v, int32_t *ret_state,
                                     struct eg_ps_error_record **ret_error)
{
    return parse_state(v, "RunspaceState", ret_state, ret_error);
}

int eg_psrp_parse_pipeline_state(const struct eg_ps_value *v, int32_t *ret_state,
                                 struct eg_ps_error_record **ret_error)
{
    return parse_state(v, "PipelineState", ret_state, ret_error);
}

static int build_state(const char *state_name, int32_t state, const struct eg_ps_error_record *err,
                       char **ret, size_t *ret_len)
{
    struct eg_ps_value *o = NULL, *x = NULL;
    int rc;

    if (!ret)
        return EG_EINVAL;
    if (err) {
        rc = build_error_value(err, false, &x);
        if (rc != 0)
            goto out;
    }
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = eg_ps_obj_add_ms(o, state_name, eg_ps_new_i32(state));
    if (rc == 0 && x) {
        rc = eg_ps_obj_add_ms(o, "ExceptionAsErrorRecord", x);
        x = NULL;
    }
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(x);
    eg_ps_value_free(o);
    return rc;
}

int eg_psrp_build_runspacepool_state(int32_t state, const struct eg_ps_error_record *err,
                                     char **ret, size_t *ret_len)
{
    return build_state("RunspaceState", state, err, ret, ret_len);
}

int eg_psrp_build_pipeline_state(int32_t state, const struct eg_ps_error_record *err, char **ret,
                                 size_t *ret_len)
{
    return build_state("PipelineState", state, err, ret, ret_len);
}

/* ---- informational records ---- */

/* The text of a MessageData value: a string, an object's Message member, or its ToString. */
static const char *message_data_text(const struct eg_ps_value *d)
{
    const char *s = NULL;
    if (eg_ps_get_string(d, &s, NULL) == 0)
        return s;
    if (eg_ps_get_string(eg_ps_obj_prop(d, "Message"), &s, NULL) == 0)
        return s;
    return d && d->kind == EG_PS_OBJ ? eg_ps_to_string(d) : NULL;
}

int eg_psrp_parse_informational(const struct eg_ps_value *v, char **ret)
{
    const char *s = NULL;

    if (!ret)
        return EG_EINVAL;
    if (!v)
        return EG_EPROTO;
    if (v->kind != EG_PS_OBJ) {
        if (eg_ps_get_string(v, &s, NULL) != 0)
            return EG_EPROTO;
    } else if (eg_ps_get_string(eg_ps_obj_prop(v, "InformationalRecord_Message"), &s, NULL) != 0) {
        s = message_data_text(eg_ps_obj_prop(v, "MessageData"));
        if (!s && eg_ps_get_string(eg_ps_obj_prop(v, "Message"), &s, NULL) != 0)
            s = NULL;
        if (!s)
            s = eg_ps_to_string(v);
        if (!s)
            return EG_EPROTO;
    }
    char *copy = eg_strdup(s);
    if (!copy)
        return EG_ENOMEM;
    *ret = copy;
    return 0;
}

int eg_psrp_build_informational(enum eg_ps_info_kind kind, const char *message, char **ret,
                                size_t *ret_len)
{
    static const char *const types[] = {
        [EG_PS_INFO_WARNING] = "System.Management.Automation.WarningRecord",
        [EG_PS_INFO_VERBOSE] = "System.Management.Automation.VerboseRecord",
        [EG_PS_INFO_DEBUG] = "System.Management.Automation.DebugRecord",
    };
    struct eg_ps_value *o = NULL;
    int rc;

    if (!message || !ret || (unsigned)kind >= sizeof types / sizeof types[0]) {
        rc = EG_EINVAL;
        goto out;
    }
    const char *tn[] = {types[kind], "System.Management.Automation.InformationalRecord",
                        "System.Object"};
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = eg_ps_obj_set_types(o, tn, 3);
    if (rc == 0)
        rc = eg_ps_obj_set_to_string(o, message, strlen(message));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "InformationalRecord_Message", eg_ps_new_string(message));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "InformationalRecord_SerializeInvocationInfo",
                              eg_ps_new_bool(false));
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(o);
    return rc;
}
