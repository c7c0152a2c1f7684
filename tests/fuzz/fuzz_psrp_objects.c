/* fuzz_psrp_objects.c - libFuzzer target for the PSRP body parsers (exchange/psrp_objects): the
 * input is decoded as one message's CLIXML data and, when that works, handed to every parser.
 * Properties checked:
 *  - parsers return 0 or EG_EPROTO / EG_ELIMIT / EG_ENOMEM, never anything else, and write
 *    nothing on failure;
 *  - a parsed CREATE_PIPELINE whose commands the client could have sent (Verb-Noun names, no
 *    script, valid parameter names) is rebuilt by the client builder and parses back to the same
 *    commands; one that it could not have sent is refused by the builder with EG_EINVAL;
 *  - a parsed error record with the mandatory fields rebuilds and parses back with the same
 *    FQEID, category, message and exception type; informational text round-trips likewise;
 *  - no value node outlives the call. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "exchange/clixml.h"
#include "exchange/psrp_objects.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rc(int rc)
{
    if (rc != 0 && rc != EG_EPROTO && rc != EG_ELIMIT && rc != EG_ENOMEM)
        abort();
}

static bool expressible(const struct eg_ps_pipeline *p)
{
    for (size_t i = 0; i < p->n_cmds; i++) {
        const struct eg_ps_command *c = p->cmds[i];
        if (c->is_script || !eg_ps_cmdlet_name_valid(c->name))
            return false;
        for (size_t j = 0; j < c->n_params; j++)
            if (c->params[j].name && !eg_ps_param_name_valid(c->params[j].name))
                return false;
    }
    return true;
}

static void same_pipeline(const struct eg_ps_pipeline *a, const struct eg_ps_pipeline *b)
{
    if (a->n_cmds != b->n_cmds)
        abort();
    for (size_t i = 0; i < a->n_cmds; i++) {
        const struct eg_ps_command *x = a->cmds[i], *y = b->cmds[i];
        if (strcmp(x->name, y->name) != 0 || x->is_script != y->is_script ||
            x->end_of_statement != y->end_of_statement || x->n_params != y->n_params)
            abort();
        for (size_t j = 0; j < x->n_params; j++) {
            const struct eg_ps_param *px = &x->params[j], *py = &y->params[j];
            if (px->kind != py->kind || !px->name != !py->name ||
                (px->name && strcmp(px->name, py->name) != 0) ||
                !eg_ps_value_equal(px->value, py->value))
                abort();
        }
    }
}

static void fuzz_pipeline(const struct eg_ps_value *v)
{
    struct eg_ps_pipeline *p = NULL, *q = NULL;
    int rc = eg_psrp_parse_create_pipeline(v, &p);
    check_rc(rc);
    if (rc != 0) {
        if (p)
            abort();
        return;
    }
    /* Flags the builder range-checks: bring them into range, they are not what is tested. */
    if (p->apartment_state < 0 || p->apartment_state > EG_PS_APARTMENT_UNKNOWN)
        p->apartment_state = EG_PS_APARTMENT_UNKNOWN;
    if (p->remote_stream_options < 0 || p->remote_stream_options > 15)
        p->remote_stream_options = 0;
    char *text = NULL;
    size_t len = 0;
    rc = eg_psrp_build_create_pipeline(p, NULL, &text, &len);
    if (!expressible(p)) {
        if (rc != EG_EINVAL || text)
            abort();
    } else if (rc == 0) {
        struct eg_ps_value *w = NULL;
        if (eg_clixml_decode(text, len, &w, NULL) != 0 || eg_psrp_parse_create_pipeline(w, &q))
            abort();
        same_pipeline(p, q);
        eg_ps_value_free(w);
    } else if (rc != EG_ENOMEM && rc != EG_ELIMIT) {
        abort();
    }
    eg_free(text);
    eg_ps_pipeline_free(q);
    eg_ps_pipeline_free(p);
}

static void fuzz_error_record(const struct eg_ps_value *v)
{
    struct eg_ps_error_record *er = NULL, *back = NULL;
    int rc = eg_psrp_parse_error_record(v, &er);
    check_rc(rc);
    if (rc != 0 || !er->fqeid || !er->exception_type) {
        eg_ps_error_record_free(er);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    struct eg_ps_value *w = NULL;
    rc = eg_psrp_build_error_record(er, &text, &len);
    if (rc == 0) {
        if (eg_clixml_decode(text, len, &w, NULL) != 0 || eg_psrp_parse_error_record(w, &back))
            abort();
        if (strcmp(back->fqeid, er->fqeid) != 0 || back->category != er->category ||
            strcmp(back->message, er->message) != 0 ||
            strcmp(back->exception_type, er->exception_type) != 0)
            abort();
    } else if (rc != EG_ENOMEM && rc != EG_ELIMIT) {
        abort();
    }
    eg_ps_value_free(w);
    eg_free(text);
    eg_ps_error_record_free(back);
    eg_ps_error_record_free(er);
}

static void fuzz_informational(const struct eg_ps_value *v)
{
    char *msg = NULL, *text = NULL, *back = NULL;
    size_t len = 0;
    struct eg_ps_value *w = NULL;
    int rc = eg_psrp_parse_informational(v, &msg);
    check_rc(rc);
    if (rc != 0)
        return;
    rc = eg_psrp_build_informational(EG_PS_INFO_WARNING, msg, &text, &len);
    if (rc == 0) {
        if (eg_clixml_decode(text, len, &w, NULL) != 0 || eg_psrp_parse_informational(w, &back) ||
            strcmp(back, msg) != 0)
            abort();
    } else if (rc != EG_ENOMEM && rc != EG_ELIMIT) {
        abort();
    }
    eg_ps_value_free(w);
    eg_free(back);
    eg_free(text);
    eg_free(msg);
}

static void fuzz_others(const struct eg_ps_value *v)
{
    struct eg_ps_capability cap;
    struct eg_ps_pool_init init;
    struct eg_ps_availability av;
    struct eg_ps_host_call hc;
    struct eg_ps_value *apd = NULL;
    struct eg_ps_error_record *er = NULL;
    int32_t st = 0;

    check_rc(eg_psrp_parse_session_capability(v, &cap));
    check_rc(eg_psrp_parse_init_runspacepool(v, &init));
    check_rc(eg_psrp_parse_runspace_availability(v, &av));
    check_rc(eg_psrp_parse_host_call(v, &hc));
    check_rc(eg_psrp_parse_application_private_data(v, &apd));
    eg_ps_value_free(apd);
    check_rc(eg_psrp_parse_runspacepool_state(v, &st, &er));
    eg_ps_error_record_free(er);
    er = NULL;
    check_rc(eg_psrp_parse_pipeline_state(v, &st, &er));
    eg_ps_error_record_free(er);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    if (!initialised) {
        eg_alloc_init();
        initialised = 1;
    }
    if (size > 1024 * 1024)
        return 0;
    size_t live = eg_ps_live_values();
    struct eg_ps_value *v = NULL;
    if (eg_clixml_decode(data, size, &v, NULL) != 0)
        return 0;
    fuzz_pipeline(v);
    fuzz_error_record(v);
    fuzz_informational(v);
    fuzz_others(v);
    eg_ps_value_free(v);
    if (eg_ps_live_values() != live)
        abort();
    return 0;
}
