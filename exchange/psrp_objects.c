/* psrp_objects.c - PSRP message bodies: SESSION_CAPABILITY, the runspace-count messages and
 * RUNSPACE_AVAILABILITY, APPLICATION_PRIVATE_DATA, host calls, END_OF_PIPELINE_INPUT, and the
 * helpers the other body files share through the public header (eg_psrp_body_encode,
 * eg_ps_version_cmp). The command model and CREATE_PIPELINE / INIT_RUNSPACEPOOL are in
 * psrp_pipeline.c; error and informational records and the state messages in psrp_records.c. */
#include "exchange/psrp_objects.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

const struct eg_ps_capability eg_ps_capability_default = {
    .protocol_version = {2, 3, -1, -1},
    .ps_version = {2, 0, -1, -1},
    .serialization_version = {1, 1, 0, 1},
};

bool eg_ps_pipeline_state_terminal(int32_t state)
{
    return state == EG_PS_PIPELINE_STOPPED || state == EG_PS_PIPELINE_COMPLETED ||
           state == EG_PS_PIPELINE_FAILED;
}

int eg_psrp_body_encode(struct eg_ps_value *v, char **ret, size_t *ret_len)
{
    int rc;

    if (!ret) {
        rc = EG_EINVAL;
        goto out;
    }
    if (!v) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = eg_clixml_encode(v, ret, ret_len);
out:
    eg_ps_value_free(v);
    return rc;
}

int eg_ps_version_cmp(const int32_t v[4], int32_t major, int32_t minor)
{
    int32_t a = v[0] < 0 ? 0 : v[0];
    int32_t b = v[1] < 0 ? 0 : v[1];
    if (a != major)
        return a < major ? -1 : 1;
    if (b != minor)
        return b < minor ? -1 : 1;
    return 0;
}

/* ---- SESSION_CAPABILITY ---- */

static bool version_ok(const int32_t v[4])
{
    if (v[0] < 0 || v[1] < 0 || v[2] < -1 || v[3] < -1)
        return false;
    return !(v[2] < 0 && v[3] >= 0); /* a revision needs a build */
}

/* A Version value from its components (already checked by version_ok); NULL on ENOMEM. */
static struct eg_ps_value *new_version(const int32_t v[4])
{
    char buf[64];
    int n;
    if (v[2] < 0)
        n = snprintf(buf, sizeof buf, "%d.%d", (int)v[0], (int)v[1]);
    else if (v[3] < 0)
        n = snprintf(buf, sizeof buf, "%d.%d.%d", (int)v[0], (int)v[1], (int)v[2]);
    else
        n = snprintf(buf, sizeof buf, "%d.%d.%d.%d", (int)v[0], (int)v[1], (int)v[2], (int)v[3]);
    struct eg_ps_value *val = NULL;
    if (n < 0 || (size_t)n >= sizeof buf || eg_ps_new_text(EG_PS_VERSION, buf, (size_t)n, &val))
        return NULL;
    return val;
}

/* A Version value from text known to be valid; NULL on ENOMEM. */
static struct eg_ps_value *version_text(const char *s)
{
    struct eg_ps_value *val = NULL;
    if (eg_ps_new_text(EG_PS_VERSION, s, strlen(s), &val) != 0)
        return NULL;
    return val;
}

int eg_psrp_build_session_capability(const struct eg_ps_capability *cap, char **ret,
                                     size_t *ret_len)
{
    struct eg_ps_value *o = NULL;
    int rc;

    if (!cap)
        cap = &eg_ps_capability_default;
    if (!ret || !version_ok(cap->protocol_version) || !version_ok(cap->ps_version) ||
        !version_ok(cap->serialization_version)) {
        rc = EG_EINVAL;
        goto out;
    }
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    /* Member order as the recorded clients send it. */
    rc = eg_ps_obj_add_ms(o, "protocolversion", new_version(cap->protocol_version));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "PSVersion", new_version(cap->ps_version));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "SerializationVersion", new_version(cap->serialization_version));
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(o);
    return rc;
}

static int member_version(const struct eg_ps_value *v, const char *name, int32_t out[4])
{
    return eg_ps_get_version(eg_ps_obj_prop(v, name), out) == 0 ? 0 : EG_EPROTO;
}

int eg_psrp_parse_session_capability(const struct eg_ps_value *v, struct eg_ps_capability *ret)
{
    struct eg_ps_capability cap;
    int rc;

    if (!ret)
        return EG_EINVAL;
    rc = member_version(v, "protocolversion", cap.protocol_version);
    if (rc == 0)
        rc = member_version(v, "PSVersion", cap.ps_version);
    if (rc == 0)
        rc = member_version(v, "SerializationVersion", cap.serialization_version);
    if (rc == 0)
        *ret = cap;
    return rc;
}

/* ---- runspace counts and RUNSPACE_AVAILABILITY ---- */

static int build_count_call(const char *count_name, int32_t count, int64_t call_id, char **ret,
                            size_t *ret_len)
{
    struct eg_ps_value *o = NULL;
    int rc;

    if (!ret || (count_name && count < 1)) {
        rc = EG_EINVAL;
        goto out;
    }
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = count_name ? eg_ps_obj_add_ms(o, count_name, eg_ps_new_i32(count)) : 0;
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ci", eg_ps_new_i64(call_id));
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(o);
    return rc;
}

int eg_psrp_build_set_max_runspaces(int32_t max_runspaces, int64_t call_id, char **ret,
                                    size_t *ret_len)
{
    return build_count_call("MaxRunspaces", max_runspaces, call_id, ret, ret_len);
}

int eg_psrp_build_set_min_runspaces(int32_t min_runspaces, int64_t call_id, char **ret,
                                    size_t *ret_len)
{
    return build_count_call("MinRunspaces", min_runspaces, call_id, ret, ret_len);
}

int eg_psrp_build_get_available_runspaces(int64_t call_id, char **ret, size_t *ret_len)
{
    return build_count_call(NULL, 0, call_id, ret, ret_len);
}

int eg_psrp_parse_runspace_availability(const struct eg_ps_value *v, struct eg_ps_availability *ret)
{
    struct eg_ps_availability a = {0};

    if (!ret)
        return EG_EINVAL;
    if (eg_ps_get_int64(eg_ps_obj_prop(v, "ci"), &a.call_id) != 0)
        return EG_EPROTO;
    const struct eg_ps_value *r = eg_ps_obj_prop(v, "SetMinMaxRunspacesResponse");
    if (eg_ps_get_bool(r, &a.set_ok) == 0) {
        a.is_count = false;
    } else if (eg_ps_get_int64(r, &a.available) == 0) {
        a.is_count = true;
    } else {
        return EG_EPROTO;
    }
    *ret = a;
    return 0;
}

int eg_psrp_build_runspace_availability(const struct eg_ps_availability *a, char **ret,
                                        size_t *ret_len)
{
    struct eg_ps_value *o = NULL;
    int rc;

    if (!a || !ret) {
        rc = EG_EINVAL;
        goto out;
    }
    o = eg_ps_new_obj();
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = eg_ps_obj_add_ms(o, "SetMinMaxRunspacesResponse",
                          a->is_count ? eg_ps_new_i64(a->available) : eg_ps_new_bool(a->set_ok));
    if (rc == 0)
        rc = eg_ps_obj_add_ms(o, "ci", eg_ps_new_i64(a->call_id));
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(o);
    return rc;
}

/* ---- APPLICATION_PRIVATE_DATA ---- */

int eg_psrp_parse_application_private_data(const struct eg_ps_value *v, struct eg_ps_value **ret)
{
    if (!ret)
        return EG_EINVAL;
    const struct eg_ps_value *d = eg_ps_obj_prop(v, "ApplicationPrivateData");
    if (!d)
        return EG_EPROTO;
    /* The tree is read-only for us; taking a reference does not change its contents. */
    *ret = eg_ps_value_ref((struct eg_ps_value *)d);
    return 0;
}

static const char *const k_primitive_dict_tn[] = {
    "System.Management.Automation.PSPrimitiveDictionary", "System.Collections.Hashtable",
    "System.Object"};

static struct eg_ps_value *new_primitive_dict(void)
{
    struct eg_ps_value *d = eg_ps_new_obj();
    if (!d || eg_ps_obj_set_types(d, k_primitive_dict_tn, 3) != 0 ||
        eg_ps_obj_set_container(d, EG_PS_CT_DCT) != 0) {
        eg_ps_value_free(d);
        return NULL;
    }
    return d;
}

int eg_psrp_build_application_private_data(char **ret, size_t *ret_len)
{
    static const struct {
        const char *key;
        const char *version; /* NULL: the string in text */
        const char *text;
    } table[] = {
        {"PSVersion", "5.1.14393.0", NULL},        {"PSEdition", NULL, "Desktop"},
        {"WSManStackVersion", "3.0", NULL},        {"PSRemotingProtocolVersion", "2.3", NULL},
        {"SerializationVersion", "1.1.0.1", NULL},
    };
    struct eg_ps_value *o = NULL, *outer = NULL, *inner = NULL;
    int rc = 0;

    if (!ret) {
        rc = EG_EINVAL;
        goto out;
    }
    o = eg_ps_new_obj();
    outer = new_primitive_dict();
    inner = new_primitive_dict();
    if (!o || !outer || !inner) {
        rc = EG_ENOMEM;
        goto out;
    }
    for (size_t i = 0; rc == 0 && i < sizeof table / sizeof table[0]; i++)
        rc = eg_ps_obj_add_entry(inner, eg_ps_new_string(table[i].key),
                                 table[i].version ? version_text(table[i].version)
                                                  : eg_ps_new_string(table[i].text));
    if (rc != 0)
        goto out;
    rc = eg_ps_obj_add_entry(outer, eg_ps_new_string("PSVersionTable"), inner);
    inner = NULL; /* taken over, also on failure */
    if (rc != 0)
        goto out;
    rc = eg_ps_obj_add_ms(o, "ApplicationPrivateData", outer);
    outer = NULL;
    if (rc == 0) {
        rc = eg_psrp_body_encode(o, ret, ret_len);
        o = NULL;
    }
out:
    eg_ps_value_free(inner);
    eg_ps_value_free(outer);
    eg_ps_value_free(o);
    return rc;
}

/* ---- host calls ---- */

int eg_psrp_parse_host_call(const struct eg_ps_value *v, struct eg_ps_host_call *ret)
{
    struct eg_ps_host_call h = {0};

    if (!ret)
        return EG_EINVAL;
    if (eg_ps_get_int64(eg_ps_obj_prop(v, "ci"), &h.call_id) != 0)
        return EG_EPROTO;
    const struct eg_ps_value *mi = eg_ps_obj_prop(v, "mi");
    if (eg_ps_get_i32(mi, &h.method_id) != 0)
        return EG_EPROTO;
    h.method_name = mi->kind == EG_PS_OBJ ? eg_ps_to_string(mi) : NULL;
    h.n_params = eg_ps_list_len(eg_ps_obj_prop(v, "mp"));
    *ret = h;
    return 0;
}

/* ---- END_OF_PIPELINE_INPUT ---- */

int eg_psrp_build_end_of_pipeline_input(char **ret, size_t *ret_len)
{
    if (!ret)
        return EG_EINVAL;
    char *s = eg_strdup("");
    if (!s)
        return EG_ENOMEM;
    *ret = s;
    if (ret_len)
        *ret_len = 0;
    return 0;
}
