/* test_psrp_capture.c - decoding captured envelopes: every recorded exchange of the vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/util.h"
#include "exchange/psrp_capture.h"

struct seen {
    int envelopes, messages, faults, partial;
    char types[4096];
};

static int collect(void *ctx, json_t *o)
{
    struct seen *s = ctx;
    const char *type = json_string_value(json_object_get(o, "type"));
    if (json_object_get(o, "partial"))
        s->partial++;
    else if (type) {
        s->messages++;
        size_t len = strlen(s->types);
        snprintf(s->types + len, sizeof s->types - len, "%s ", type);
        /* Every message carries its CLIXML rendered as JSON, except the empty ones. */
        if (strcmp(type, "END_OF_PIPELINE_INPUT") != 0)
            assert_non_null(json_object_get(o, "data"));
    } else {
        s->envelopes++;
        if (json_object_get(o, "fault"))
            s->faults++;
    }
    json_decref(o);
    return 0;
}

/* Feed every envelope of one recording, in order (requests and responses interleaved). */
static void decode_recording(const char *name, struct seen *s, int only_pairs)
{
    const char *src = getenv("EG_SOURCE_DIR");
    struct eg_psrp_capture *c = NULL;
    assert_non_null(src);
    assert_int_equal(eg_psrp_capture_new(&c), 0);
    for (int pair = 0; pair < 100 && (only_pairs < 0 || pair < only_pairs); pair++) {
        for (int k = 0; k < 2; k++) {
            char path[1024], *xml = NULL, why[512] = "";
            size_t len = 0;
            snprintf(path, sizeof path, "%s/tests/fixtures/wsman/%s.%02d.%s.xml", src, name, pair,
                     k ? "response" : "request");
            if (eg_read_file(path, 1 << 24, &xml, &len) < 0) {
                if (k == 0)
                    goto done;
                continue;
            }
            int rc = eg_psrp_capture_feed(c, path, xml, len, collect, s, why, sizeof why);
            eg_free(xml);
            if (rc != 0)
                fail_msg("%s: %s", path, why);
        }
    }
done:
    assert_true(eg_psrp_capture_finish(c, collect, s) >= 0);
    eg_psrp_capture_free(c);
}

static void test_every_recording_decodes(void **state)
{
    static const char *const recs[] = {"test_psrp_is_alive_invalid_selectors",
                                       "test_psrp_long_running_cmdlet",
                                       "test_psrp_multiple_commands",
                                       "test_psrp_nested_command",
                                       "test_psrp_open_runspace",
                                       "test_psrp_small_msg_size",
                                       "test_psrp_with_jea_configuration"};
    int total = 0;
    for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++) {
        struct seen s;
        memset(&s, 0, sizeof s);
        decode_recording(recs[i], &s, -1);
        assert_int_equal(s.partial, 0);
        assert_true(s.envelopes > 0);
        assert_true(strstr(s.types, "SESSION_CAPABILITY INIT_RUNSPACEPOOL ") == s.types);
        assert_non_null(strstr(s.types, "RUNSPACEPOOL_STATE"));
        total += s.messages;
    }
    assert_true(total >= 40);
}

static void test_faults_and_states(void **state)
{
    struct seen s;
    memset(&s, 0, sizeof s);
    decode_recording("test_psrp_long_running_cmdlet", &s, -1);
    assert_int_equal(s.faults, 2); /* two TimedOut Receives */
    assert_non_null(strstr(s.types, "CREATE_PIPELINE"));
    assert_non_null(strstr(s.types, "PIPELINE_OUTPUT PIPELINE_STATE"));
    memset(&s, 0, sizeof s);
    decode_recording("test_psrp_with_jea_configuration", &s, -1);
    assert_non_null(strstr(s.types, "ERROR_RECORD"));
}

static void test_split_message_is_partial_until_its_end(void **state)
{
    /* small_msg_size: CREATE_PIPELINE's first fragment is in the Command (pair 04), its last in
     * the following Send (pair 05). Stopping after the Command leaves it partial. */
    struct seen s;
    memset(&s, 0, sizeof s);
    decode_recording("test_psrp_small_msg_size", &s, 5);
    assert_int_equal(s.partial, 1);
    assert_null(strstr(s.types, "CREATE_PIPELINE"));
    memset(&s, 0, sizeof s);
    decode_recording("test_psrp_small_msg_size", &s, -1);
    assert_int_equal(s.partial, 0);
    assert_non_null(strstr(s.types, "CREATE_PIPELINE"));
}

static void test_bad_input(void **state)
{
    struct eg_psrp_capture *c = NULL;
    struct seen s;
    char why[256];
    memset(&s, 0, sizeof s);
    assert_int_equal(eg_psrp_capture_new(&c), 0);
    const char *notxml = "<s:Envelope";
    assert_int_equal(
        eg_psrp_capture_feed(c, "x", notxml, strlen(notxml), collect, &s, why, sizeof why),
        EG_EPARSE);
    const char *notsoap = "<a/>";
    assert_int_equal(
        eg_psrp_capture_feed(c, "x", notsoap, strlen(notsoap), collect, &s, why, sizeof why),
        EG_EPROTO);
    const char *badb64 =
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" "
        "xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\"><s:Body>"
        "<rsp:ReceiveResponse><rsp:Stream Name=\"stdout\">!!!</rsp:Stream></rsp:ReceiveResponse>"
        "</s:Body></s:Envelope>";
    assert_int_equal(
        eg_psrp_capture_feed(c, "x", badb64, strlen(badb64), collect, &s, why, sizeof why),
        EG_EPARSE);
    assert_non_null(strstr(why, "not base64"));
    const char *dtd = "<!DOCTYPE x [<!ENTITY e \"y\">]><x>&e;</x>";
    assert_int_equal(eg_psrp_capture_feed(c, "x", dtd, strlen(dtd), collect, &s, why, sizeof why),
                     EG_EPARSE);
    eg_psrp_capture_free(c);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_recording_decodes),
        cmocka_unit_test(test_faults_and_states),
        cmocka_unit_test(test_split_message_is_partial_until_its_end),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
