/* test_wsman_server.c - cmocka tests of wsman_server.c: every recorded request parses into the
 * fields the mock uses; malformed and hostile requests are refused with the right diagnosis;
 * built responses and faults are byte for byte the recorded Windows ones (ActivityId aside) and
 * parse with the client's own parser (transport/wsman.h); allocation failures are clean.
 *
 * Fixtures: tests/fixtures/wsman/<recording>.<NN>.{request,response}.xml and index.txt (from
 * shared/vectors, see tests/fixtures/wsman/extract.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libxml/parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/util.h"
#include "transport/wsman.h"
#include "wsman_server.h"

/* ---- fixtures ---- */

static char *load_fixture(const char *name, size_t *ret_len)
{
    const char *src = getenv("EG_SOURCE_DIR");
    char *path = eg_asprintf("%s/tests/fixtures/wsman/%s", src ? src : ".", name);
    assert_non_null(path);
    char *data = NULL;
    size_t len = 0;
    int r = eg_read_file(path, 16 * 1024 * 1024, &data, &len);
    if (r)
        fprintf(stderr, "cannot read %s\n", path);
    assert_int_equal(r, 0);
    eg_free(path);
    if (ret_len)
        *ret_len = len;
    return data;
}

/* Remove every <p:ActivityId>...</p:ActivityId> (random per response) in place. */
static void strip_activity(char *s)
{
    char *a;
    while ((a = strstr(s, "<p:ActivityId>"))) {
        char *e = strstr(a, "</p:ActivityId>");
        assert_non_null(e);
        e += strlen("</p:ActivityId>");
        memmove(a, e, strlen(e) + 1);
    }
}

/* The text of the first <tag ...>...</tag> in xml (tag may carry attributes), copied into out. */
static void element_text(const char *xml, const char *tag, char *out, size_t size)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%.*s>", (int)strcspn(tag, " "), tag);
    const char *a = strstr(xml, open);
    assert_non_null(a);
    a += strlen(open);
    const char *e = strstr(a, close);
    assert_non_null(e);
    assert_true((size_t)(e - a) < size);
    memcpy(out, a, (size_t)(e - a));
    out[e - a] = '\0';
}

static struct mx_ws_request *parse_ok(const char *xml, size_t len)
{
    struct mx_ws_request *r = NULL;
    struct mx_ws_parse_diag d;
    int rc = mx_ws_parse_request(xml, len, &r, &d);
    if (rc)
        fprintf(stderr, "parse: %d kind %d %s\n", rc, d.kind, d.detail);
    assert_int_equal(rc, 0);
    assert_non_null(r);
    return r;
}

/* ---- parsing ---- */

/* Every recorded request parses, with the action of index.txt and what each action needs. */
static void test_parse_recorded(void **state)
{
    size_t len;
    char *index = load_fixture("index.txt", &len);
    size_t n = 0;
    char *next = NULL;
    for (char *line = index; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        if (line[0] == '#')
            continue;
        char rec[128], pair[8], action[256], raction[256];
        int status;
        assert_int_equal(
            sscanf(line, "%127s %7s %255s %255s %d", rec, pair, action, raction, &status), 5);
        char name[256];
        snprintf(name, sizeof name, "%s.%s.request.xml", rec, pair);
        size_t xl;
        char *xml = load_fixture(name, &xl);
        struct mx_ws_request *r = parse_ok(xml, xl);
        assert_string_equal(r->action_uri, action);
        assert_true(strncmp(r->message_id, "uuid:", 5) == 0);
        assert_non_null(r->resource_uri);
        assert_true(r->max_envelope_size >= 32768);
        assert_true(r->operation_timeout_ms == 20000 || r->operation_timeout_ms == 5000);
        assert_string_equal(r->locale, "en-US");
        assert_string_equal(r->data_locale, "en-US");
        switch (r->action) {
        case MX_WS_CREATE:
            assert_true(r->has_shell);
            assert_non_null(r->creation_xml);
            assert_true(r->creation_xml_len > 2 * 21);
            assert_non_null(r->shell_id_requested);
            assert_string_equal(r->input_streams, "stdin pr");
            assert_string_equal(r->output_streams, "stdout");
            assert_null(mx_ws_selector(r, "ShellId"));
            assert_string_equal(mx_ws_option(r, "protocolversion")->value, "2.3");
            assert_true(mx_ws_option(r, "PROTOCOLVERSION")->must_comply);
            break;
        case MX_WS_COMMAND:
            assert_non_null(r->command_id);
            assert_non_null(r->arguments);
            assert_true(r->arguments_len > 21);
            assert_string_equal(r->command, "");
            assert_non_null(mx_ws_selector(r, "ShellId"));
            break;
        case MX_WS_SEND:
            assert_true(r->n_streams >= 1);
            assert_string_equal(r->streams[0].name, "stdin");
            assert_true(r->streams[0].len > 21);
            break;
        case MX_WS_RECEIVE:
            assert_string_equal(r->desired_stream, "stdout");
            assert_int_equal(
                strcasecmp(mx_ws_option(r, "WSMAN_CMDSHELL_OPTION_KEEPALIVE")->value, "TRUE"), 0);
            break;
        case MX_WS_SIGNAL:
            assert_non_null(r->command_id);
            assert_string_equal(r->signal_code, "powershell/signal/ctrl_c");
            break;
        case MX_WS_DELETE:
        case MX_WS_GET:
            break;
        default:
            fail_msg("unexpected action %s", r->action_uri);
        }
        mx_ws_request_free(r);
        eg_free(xml);
        n++;
    }
    assert_int_equal(n, 52);
    eg_free(index);
}

static void test_parse_fields(void **state)
{
    size_t len;
    char *xml = load_fixture("test_psrp_open_runspace.00.request.xml", &len);
    struct mx_ws_request *r = parse_ok(xml, len);
    assert_int_equal(r->action, MX_WS_CREATE);
    assert_string_equal(r->message_id, "uuid:F249DBE7-0E83-4F39-AE4A-28324CF61227");
    assert_string_equal(r->resource_uri, EG_WSMAN_URI_POWERSHELL);
    assert_string_equal(r->to, "https://127.0.0.1:55986/wsman");
    assert_string_equal(r->session_id, "uuid:AECF49AF-7164-43E6-B10A-E38E8C4986AD");
    assert_int_equal(r->max_envelope_size, 153600);
    assert_int_equal(r->operation_timeout_ms, 20000);
    assert_string_equal(r->shell_id_requested, "76056A84-51DC-4F24-9262-CA2A55464B2B");
    assert_int_equal(r->idle_timeout_ms, -1);
    /* creationXml: fragment of object 1 (SESSION_CAPABILITY) then object 2 */
    assert_int_equal(r->creation_xml[7], 1);
    assert_int_equal(r->creation_xml[16], 3);
    mx_ws_request_free(r);
    eg_free(xml);

    /* the CommandId of a pipeline Receive and a Send's stream attributes */
    xml = load_fixture("test_psrp_long_running_cmdlet.04.request.xml", &len);
    r = parse_ok(xml, len);
    assert_int_equal(r->action, MX_WS_RECEIVE);
    assert_string_equal(r->command_id, "79590BBD-46E2-486A-85B0-70EA7049235E");
    assert_int_equal(r->operation_timeout_ms, 5000);
    assert_string_equal(mx_ws_selector(r, "shellid"), "49EE5C41-E806-4A44-B192-DAD4B3AEECB5");
    mx_ws_request_free(r);
    eg_free(xml);

    xml = load_fixture("test_psrp_small_msg_size.05.request.xml", &len);
    r = parse_ok(xml, len);
    assert_int_equal(r->action, MX_WS_SEND);
    assert_int_equal(r->max_envelope_size, 32768);
    assert_non_null(r->streams[0].command_id);
    mx_ws_request_free(r);
    eg_free(xml);
}

#define HDR(extra)                                                                                 \
    "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" "                             \
    "xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" "                                \
    "xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\" "                                  \
    "xmlns:r=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\"><s:Header>"               \
    "<a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal</a:Action>"          \
    "<a:MessageID>uuid:1</a:MessageID>" extra "</s:Header>"

static int parse_kind(const char *xml, enum mx_ws_parse_error *ret_kind, char *detail, size_t dsize,
                      char *mid, size_t msize)
{
    struct mx_ws_request *r = NULL;
    struct mx_ws_parse_diag d;
    memset(&d, 0x55, sizeof d);
    int rc = mx_ws_parse_request(xml, strlen(xml), &r, &d);
    if (rc == 0) {
        mx_ws_request_free(r);
        return 0;
    }
    assert_null(r);
    *ret_kind = d.kind;
    if (detail)
        snprintf(detail, dsize, "%s", d.detail);
    if (mid)
        snprintf(mid, msize, "%s", d.message_id);
    return rc;
}

static void test_parse_errors(void **state)
{
    enum mx_ws_parse_error k;
    char detail[128], mid[128];

    assert_int_equal(parse_kind("<s:Envelope", &k, NULL, 0, NULL, 0), EG_EPARSE);
    assert_int_equal(k, MX_WS_PERR_XML);
    assert_int_equal(parse_kind("<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>", &k, NULL, 0, NULL, 0),
                     EG_EPARSE);
    assert_int_equal(k, MX_WS_PERR_XML);
    assert_int_equal(parse_kind("<x xmlns=\"urn:y\"/>", &k, NULL, 0, NULL, 0), EG_EPROTO);
    assert_int_equal(k, MX_WS_PERR_ENVELOPE);
    /* no Body */
    assert_int_equal(parse_kind(HDR("") "</s:Envelope>", &k, NULL, 0, NULL, 0), EG_EPROTO);
    assert_int_equal(k, MX_WS_PERR_ENVELOPE);
    /* no Action */
    assert_int_equal(
        parse_kind("<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Header/>"
                   "<s:Body/></s:Envelope>",
                   &k, NULL, 0, NULL, 0),
        EG_EPROTO);
    assert_int_equal(k, MX_WS_PERR_HEADER);
    /* a negative timeout: the text and the MessageID are reported */
    assert_int_equal(
        parse_kind(HDR("<w:OperationTimeout>PT-1S</w:OperationTimeout>") "<s:Body/></s:Envelope>",
                   &k, detail, sizeof detail, mid, sizeof mid),
        EG_EPROTO);
    assert_int_equal(k, MX_WS_PERR_TIMEOUT);
    assert_string_equal(detail, "PT-1S");
    assert_string_equal(mid, "uuid:1");
    assert_int_equal(
        parse_kind(HDR("<w:MaxEnvelopeSize>lots</w:MaxEnvelopeSize>") "<s:Body/></s:Envelope>", &k,
                   NULL, 0, NULL, 0),
        EG_EPROTO);
    assert_int_equal(k, MX_WS_PERR_HEADER);
    /* Signal without a code; with an empty code */
    assert_int_equal(
        parse_kind(HDR("") "<s:Body><r:Signal/></s:Body></s:Envelope>", &k, NULL, 0, NULL, 0),
        EG_EPROTO);
    assert_int_equal(k, MX_WS_PERR_BODY);
    assert_int_equal(parse_kind(HDR("") "<s:Body><r:Signal><r:Code> </r:Code></r:Signal></s:Body>"
                                        "</s:Envelope>",
                                &k, NULL, 0, NULL, 0),
                     EG_EPROTO);
    /* the right element in the wrong namespace does not count */
    assert_int_equal(parse_kind(HDR("") "<s:Body><Signal xmlns=\"urn:other\"><Code>x</Code>"
                                        "</Signal></s:Body></s:Envelope>",
                                &k, NULL, 0, NULL, 0),
                     EG_EPROTO);
    /* prefixes do not matter */
    struct mx_ws_request *r = NULL;
    static const char other_prefixes[] =
        "<E:Envelope xmlns:E=\"http://www.w3.org/2003/05/soap-envelope\"><E:Header>"
        "<Action xmlns=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\">"
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal</Action>"
        "<q:MessageID xmlns:q=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\">uuid:2"
        "</q:MessageID></E:Header><E:Body><z:Signal "
        "xmlns:z=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\" CommandId=\"C\">"
        "<z:Code>\n powershell/signal/crtl_c \n</z:Code></z:Signal></E:Body></E:Envelope>";
    assert_int_equal(mx_ws_parse_request(other_prefixes, strlen(other_prefixes), &r, NULL), 0);
    assert_int_equal(r->action, MX_WS_SIGNAL);
    assert_string_equal(r->signal_code, "powershell/signal/crtl_c");
    assert_string_equal(r->command_id, "C");
    mx_ws_request_free(r);
    /* bad base64 in a Send stream, a bad End */
    assert_int_equal(
        parse_kind("<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" "
                   "xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" "
                   "xmlns:r=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\"><s:Header>"
                   "<a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
                   "</a:Action><a:MessageID>m</a:MessageID></s:Header><s:Body><r:Send>"
                   "<r:Stream Name=\"stdin\">!!!!</r:Stream></r:Send></s:Body></s:Envelope>",
                   &k, NULL, 0, NULL, 0),
        EG_EPARSE);
    assert_int_equal(k, MX_WS_PERR_BODY);
    assert_int_equal(
        parse_kind("<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" "
                   "xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" "
                   "xmlns:r=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\"><s:Header>"
                   "<a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
                   "</a:Action><a:MessageID>m</a:MessageID></s:Header><s:Body><r:Send>"
                   "<r:Stream Name=\"stdin\" End=\"maybe\">AAAA</r:Stream></r:Send></s:Body>"
                   "</s:Envelope>",
                   &k, NULL, 0, NULL, 0),
        EG_EPROTO);
    /* a NUL byte, an empty body */
    r = NULL;
    assert_int_equal(mx_ws_parse_request("<a>\0</a>", 8, &r, NULL), EG_EPARSE);
    assert_int_equal(mx_ws_parse_request("", 0, &r, NULL), EG_EPARSE);
    assert_int_equal(mx_ws_parse_request(NULL, 0, &r, NULL), EG_EINVAL);
    assert_null(r);
}

/* Build a request with n selectors / a nesting depth / attributes on one element. */
static void test_parse_limits(void **state)
{
    struct mx_ws_request *r = NULL;
    struct mx_ws_parse_diag d;
    size_t cap = 1 << 20, at = 0;
    char *buf = eg_malloc(cap);
    assert_non_null(buf);

    /* too many selectors */
    at = 0;
    at += (size_t)snprintf(
        buf + at, cap - at, "%s",
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" "
        "xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" "
        "xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"><s:Header>"
        "<a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete</a:Action>"
        "<a:MessageID>uuid:3</a:MessageID><w:SelectorSet>");
    for (int i = 0; i < EG_MOCK_WS_MAX_PAIRS + 1; i++)
        at += (size_t)snprintf(buf + at, cap - at, "<w:Selector Name=\"S%d\">v</w:Selector>", i);
    at += (size_t)snprintf(buf + at, cap - at, "%s",
                           "</w:SelectorSet></s:Header><s:Body/></s:Envelope>");
    assert_int_equal(mx_ws_parse_request(buf, at, &r, &d), EG_ELIMIT);
    assert_int_equal(d.kind, MX_WS_PERR_HEADER);
    assert_string_equal(d.message_id, "uuid:3");

    /* nesting deeper than EG_WSMAN_MAX_DEPTH */
    at = 0;
    for (int i = 0; i < EG_WSMAN_MAX_DEPTH + 2; i++)
        at += (size_t)snprintf(buf + at, cap - at, "<e>");
    for (int i = 0; i < EG_WSMAN_MAX_DEPTH + 2; i++)
        at += (size_t)snprintf(buf + at, cap - at, "</e>");
    assert_int_equal(mx_ws_parse_request(buf, at, &r, &d), EG_ELIMIT);
    assert_int_equal(d.kind, MX_WS_PERR_XML);

    /* an element with more attributes than EG_WSMAN_MAX_ATTRIBUTES (refused before libxml2's
     * pairwise check) */
    at = (size_t)snprintf(buf, cap, "<e");
    for (int i = 0; i < EG_WSMAN_MAX_ATTRIBUTES + 1; i++)
        at += (size_t)snprintf(buf + at, cap - at, " a%d=\"x\"", i);
    at += (size_t)snprintf(buf + at, cap - at, "/>");
    assert_int_equal(mx_ws_parse_request(buf, at, &r, &d), EG_ELIMIT);

    /* over the request size limit */
    assert_int_equal(mx_ws_parse_request(buf, EG_MOCK_WS_MAX_REQUEST_BYTES + 1, &r, &d), EG_ELIMIT);
    assert_null(r);
    eg_free(buf);
}

static void test_duration(void **state)
{
    static const struct {
        const char *text;
        int rc;
        int64_t ms;
    } cases[] = {
        {"PT20S", 0, 20000},
        {"PT180.000S", 0, 180000},
        {"PT5S", 0, 5000},
        {"PT0.5S", 0, 500},
        {"PT1.2345S", 0, 1234},
        {"P0DT0H0M20S", 0, 20000},
        {"PT1M", 0, 60000},
        {"PT2H", 0, 7200000},
        {"P1D", 0, 86400000},
        {"P1DT1S", 0, 86401000},
        {"PT2147483.647S", 0, 2147483647},
        {"PT-1S", EG_EPARSE, 0},
        {"-PT1S", EG_EPARSE, 0},
        {"P1Y", EG_EPARSE, 0},
        {"P1M", EG_EPARSE, 0},
        {"PT", EG_EPARSE, 0},
        {"P", EG_EPARSE, 0},
        {"PT1S1M", EG_EPARSE, 0},
        {"PT1.S", EG_EPARSE, 0},
        {"PT1.5M", EG_EPARSE, 0},
        {"20", EG_EPARSE, 0},
        {"PT999999999999999S", EG_ELIMIT, 0},
        {"", EG_EPARSE, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = -7;
        int rc = mx_ws_parse_duration(cases[i].text, &ms);
        if (rc != cases[i].rc)
            fail_msg("%s: %d", cases[i].text, rc);
        if (rc == 0)
            assert_int_equal(ms, cases[i].ms);
        else
            assert_int_equal(ms, -7);
    }
    char out[32];
    mx_ws_format_duration(900000, out, sizeof out);
    assert_string_equal(out, "PT900.000S");
    mx_ws_format_duration(60123, out, sizeof out);
    assert_string_equal(out, "PT60.123S");
}

/* ---- building: byte for byte against the recordings ---- */

/* Build with the recorded MessageID and RelatesTo, strip ActivityId from both, compare. */
static void expect_recorded(const char *fixture, const char *built)
{
    size_t len;
    char *want = load_fixture(fixture, &len);
    char *got = eg_strdup(built);
    assert_non_null(got);
    strip_activity(want);
    strip_activity(got);
    if (strcmp(want, got) != 0)
        fail_msg("%s differs:\nwant %s\ngot  %s", fixture, want, got);
    eg_free(want);
    eg_free(got);
}

/* reply with the recorded MessageID / RelatesTo of a response fixture */
static void recorded_reply(const char *fixture, char *mid, char *rel, size_t size)
{
    char *xml = load_fixture(fixture, NULL);
    element_text(xml, "a:MessageID", mid, size);
    element_text(xml, "a:RelatesTo", rel, size);
    eg_free(xml);
}

static void test_build_recorded(void **state)
{
    char mid[128], rel[128];
    char *xml = NULL;
    size_t len = 0;

    /* TimedOut */
    recorded_reply("test_psrp_long_running_cmdlet.04.response.xml", mid, rel, sizeof mid);
    struct mx_ws_reply r = {.relates_to = rel, .machine = "127.0.0.1", .message_id = mid};
    struct mx_ws_fault f;
    mx_ws_fault_timed_out(&f);
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), 0);
    assert_int_equal(len, strlen(xml));
    expect_recorded("test_psrp_long_running_cmdlet.04.response.xml", xml);
    eg_freep(&xml);

    /* InvalidSelectors with the nested ProviderFault */
    recorded_reply("test_psrp_is_alive_invalid_selectors.04.response.xml", mid, rel, sizeof mid);
    mx_ws_fault_invalid_selectors(&f);
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), 0);
    expect_recorded("test_psrp_is_alive_invalid_selectors.04.response.xml", xml);
    eg_freep(&xml);

    /* CommandResponse */
    recorded_reply("test_psrp_long_running_cmdlet.03.response.xml", mid, rel, sizeof mid);
    assert_int_equal(
        mx_ws_build_command_response(&r, "79590BBD-46E2-486A-85B0-70EA7049235E", &xml, &len), 0);
    expect_recorded("test_psrp_long_running_cmdlet.03.response.xml", xml);
    eg_freep(&xml);

    /* SendResponse, SignalResponse, DeleteResponse */
    recorded_reply("test_psrp_multiple_commands.03.response.xml", mid, rel, sizeof mid);
    assert_int_equal(mx_ws_build_empty_response(&r, MX_WS_SEND, &xml, &len), 0);
    expect_recorded("test_psrp_multiple_commands.03.response.xml", xml);
    eg_freep(&xml);
    recorded_reply("test_psrp_nested_command.06.response.xml", mid, rel, sizeof mid);
    assert_int_equal(mx_ws_build_empty_response(&r, MX_WS_SIGNAL, &xml, &len), 0);
    expect_recorded("test_psrp_nested_command.06.response.xml", xml);
    eg_freep(&xml);
    recorded_reply("test_psrp_long_running_cmdlet.07.response.xml", mid, rel, sizeof mid);
    assert_int_equal(mx_ws_build_empty_response(&r, MX_WS_DELETE, &xml, &len), 0);
    expect_recorded("test_psrp_long_running_cmdlet.07.response.xml", xml);
    eg_freep(&xml);
    assert_int_equal(mx_ws_build_empty_response(&r, MX_WS_CREATE, &xml, &len), EG_EINVAL);

    /* ReceiveResponse with two pipeline streams and CommandState Done (the §7 worked example) */
    recorded_reply("test_psrp_long_running_cmdlet.06.response.xml", mid, rel, sizeof mid);
    const char *cid = "79590BBD-46E2-486A-85B0-70EA7049235E";
    struct mx_ws_out_stream st[2] = {
        {.command_id = cid,
         .b64 = "AAAAAAAAAAQAAAAAAAAAAAMAAAA0AQAAAAQQBABJ7lxB6AZKRLGS2tSzruy1eVkLvUbiSGqFsHDqcE"
                "kjXu+7vzxTPmhpPC9TPg=="},
        {.name = "stdout",
         .command_id = cid,
         .b64 = "AAAAAAAAAAUAAAAAAAAAAAMAAABnAQAAAAYQBABJ7lxB6AZKRLGS2tSzruy1eVkLvUbiSGqFsHDqcE"
                "kjXu+7vzxPYmogUmVmSWQ9IjAiPjxNUz48STMyIE49IlBpcGVsaW5lU3RhdGUiPjQ8L0kzMj48L01T"
                "PjwvT2JqPg=="},
    };
    struct mx_ws_command_state cs = {
        .command_id = cid, .state_uri = EG_WSMAN_STATE_DONE, .has_exit_code = true};
    assert_int_equal(mx_ws_build_receive_response(&r, st, 2, &cs, &xml, &len), 0);
    expect_recorded("test_psrp_long_running_cmdlet.06.response.xml", xml);
    assert_true(mx_ws_receive_overhead(rel, cid) + 2 * mx_ws_stream_overhead(cid) +
                    strlen(st[0].b64) + strlen(st[1].b64) >=
                len);
    eg_freep(&xml);

    /* a pool-level ReceiveResponse (no CommandId) */
    recorded_reply("test_psrp_open_runspace.02.response.xml", mid, rel, sizeof mid);
    char *want = load_fixture("test_psrp_open_runspace.02.response.xml", NULL);
    char b64[512];
    element_text(want, "rsp:Stream Name=\"stdout\"", b64, sizeof b64);
    eg_free(want);
    struct mx_ws_out_stream pool = {.b64 = b64};
    assert_int_equal(mx_ws_build_receive_response(&r, &pool, 1, NULL, &xml, &len), 0);
    expect_recorded("test_psrp_open_runspace.02.response.xml", xml);
    eg_freep(&xml);
}

/* The client's parser (transport/wsman.h) accepts what the server builds. */
static void test_build_client_roundtrip(void **state)
{
    struct mx_ws_reply r = {.relates_to = "uuid:AAAAAAAA-0000-4000-8000-000000000001"};
    struct eg_wsman_response *resp = NULL;
    struct eg_wsman_fault *fault = NULL;
    char *xml = NULL;
    size_t len = 0;

    struct mx_ws_shell_info sh = {.shell_id = "0E0E0E0E-1111-4222-8333-444455556666",
                                  .resource_uri = EG_WSMAN_URI_EXCHANGE,
                                  .address = "http://exch01/PowerShell?PSVersion=5.1",
                                  .owner = "CONTOSO\\svc-eas & co",
                                  .client_ip = "127.0.0.1",
                                  .process_id = 4242,
                                  .idle_timeout_ms = 900000,
                                  .run_time_ms = 90061000};
    assert_int_equal(mx_ws_build_create_response(&r, &sh, &xml, &len), 0);
    assert_non_null(strstr(xml, "<rsp:IdleTimeOut>PT900.000S</rsp:IdleTimeOut>"));
    assert_non_null(strstr(xml, "<rsp:ShellRunTime>P1DT1H1M1S</rsp:ShellRunTime>"));
    assert_non_null(strstr(xml, "<rsp:Owner>CONTOSO\\svc-eas &amp; co</rsp:Owner>"));
    assert_non_null(strstr(xml, "<a:Address>http://exch01/PowerShell?PSVersion=5.1</a:Address>"));
    assert_int_equal(
        eg_wsman_parse_response(EG_WSMAN_OP_CREATE, r.relates_to, xml, len, &resp, NULL), 0);
    assert_string_equal(resp->shell_id, sh.shell_id);
    assert_int_equal(resp->idle_timeout_ms, 900000);
    assert_int_equal(resp->max_idle_timeout_ms, 2147483647);
    assert_string_equal(resp->shell_state, "Connected");
    eg_wsman_response_free(resp);
    resp = NULL;
    eg_freep(&xml);

    sh.memory_used = "58MB";
    assert_int_equal(mx_ws_build_get_shell_response(&r, &sh, &xml, &len), 0);
    assert_non_null(strstr(xml, "<rsp:MemoryUsed>58MB</rsp:MemoryUsed>"));
    assert_int_equal(
        eg_wsman_parse_response(EG_WSMAN_OP_GET_SHELL, r.relates_to, xml, len, &resp, NULL), 0);
    assert_string_equal(resp->shell_id, sh.shell_id);
    eg_wsman_response_free(resp);
    resp = NULL;
    eg_freep(&xml);

    assert_int_equal(mx_ws_build_get_config_response(&r, 500, 60000, &xml, &len), 0);
    assert_int_equal(
        eg_wsman_parse_response(EG_WSMAN_OP_GET_CONFIG, r.relates_to, xml, len, &resp, NULL), 0);
    assert_int_equal(resp->max_envelope_size_kb, 500);
    assert_int_equal(resp->max_timeout_ms, 60000);
    eg_wsman_response_free(resp);
    resp = NULL;
    eg_freep(&xml);

    /* Receive: data round-trips through base64, the command state is seen */
    uint8_t data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7);
    char *b64 = NULL;
    assert_int_equal(eg_base64_encode(data, sizeof data, &b64, NULL), 0);
    struct mx_ws_out_stream st[2] = {{.command_id = "C1", .b64 = b64},
                                     {.command_id = "C1", .b64 = ""}};
    struct mx_ws_command_state cs = {
        .command_id = "C1", .state_uri = EG_WSMAN_STATE_DONE, .has_exit_code = true};
    assert_int_equal(mx_ws_build_receive_response(&r, st, 2, &cs, &xml, &len), 0);
    assert_int_equal(
        eg_wsman_parse_response(EG_WSMAN_OP_RECEIVE, r.relates_to, xml, len, &resp, NULL), 0);
    assert_int_equal(resp->n_streams, 2);
    assert_int_equal(resp->streams[0].len, sizeof data);
    assert_memory_equal(resp->streams[0].data, data, sizeof data);
    assert_string_equal(resp->streams[0].command_id, "C1");
    assert_int_equal(resp->state, EG_WSMAN_CMD_DONE);
    assert_true(resp->has_exit_code);
    assert_int_equal(resp->exit_code, 0);
    eg_wsman_response_free(resp);
    resp = NULL;
    eg_freep(&xml);
    eg_free(b64);

    /* faults classify as the client expects */
    struct mx_ws_fault f;
    mx_ws_fault_timed_out(&f);
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), 0);
    assert_int_equal(
        eg_wsman_parse_response(EG_WSMAN_OP_RECEIVE, r.relates_to, xml, len, &resp, &fault),
        EG_EREMOTE);
    assert_int_equal(fault->kind, EG_WSMAN_FAULT_TIMED_OUT);
    assert_int_equal(fault->wsman_code, MX_WS_CODE_TIMED_OUT);
    eg_wsman_fault_free(fault);
    fault = NULL;
    eg_freep(&xml);

    mx_ws_fault_invalid_selectors(&f);
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), 0);
    assert_int_equal(eg_wsman_parse_fault(xml, len, &fault), 0);
    assert_int_equal(fault->kind, EG_WSMAN_FAULT_INVALID_SELECTORS);
    assert_string_equal(fault->provider, "Shell provider");
    eg_wsman_fault_free(fault);
    fault = NULL;
    eg_freep(&xml);

    static const char shells[] =
        "The WS-Management service cannot process the request. This user is allowed a maximum "
        "number of 18 concurrent shells, which has been exceeded. Close existing shells or raise "
        "the quota for this user. ";
    f = (struct mx_ws_fault){
        .subcode = "w:QuotaLimit", .reason = shells, .code = MX_WS_CODE_MAX_SHELLS};
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), 0);
    assert_int_equal(eg_wsman_parse_fault(xml, len, &fault), 0);
    assert_int_equal(fault->kind, EG_WSMAN_FAULT_THROTTLED);
    assert_non_null(strstr(fault->message, "maximum number of 18 concurrent shells"));
    eg_wsman_fault_free(fault);
    fault = NULL;
    eg_freep(&xml);

    char buf[512];
    mx_ws_fault_resource_uri(&f, "http://schemas.microsoft.com/powershell/Nope", buf, sizeof buf);
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), 0);
    assert_non_null(strstr(xml, "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"));
    assert_int_equal(eg_wsman_parse_fault(xml, len, &fault), 0);
    assert_int_equal(fault->wsman_code, MX_WS_CODE_RESOURCE_URI);
    assert_string_equal(fault->subcode, "DestinationUnreachable");
    assert_non_null(strstr(fault->reason, "(http://schemas.microsoft.com/powershell/Nope)"));
    eg_wsman_fault_free(fault);
    fault = NULL;
    eg_freep(&xml);

    /* a fault without RelatesTo (the request's MessageID was unreadable) */
    struct mx_ws_parse_diag d = {.kind = MX_WS_PERR_TIMEOUT};
    snprintf(d.detail, sizeof d.detail, "PT-1S");
    mx_ws_fault_for_parse(&f, &d, buf, sizeof buf);
    struct mx_ws_reply anon = {0};
    assert_int_equal(mx_ws_build_fault(&anon, &f, &xml, &len), 0);
    assert_null(strstr(xml, "RelatesTo"));
    assert_int_equal(eg_wsman_parse_fault(xml, len, &fault), 0);
    assert_int_equal(fault->wsman_code, MX_WS_CODE_INVALID_HEADER);
    assert_string_equal(fault->reason,
                        "The XML contains an invalid timeout field in the SOAP header: PT-1S.");
    eg_wsman_fault_free(fault);
    eg_freep(&xml);
}

static void test_build_errors(void **state)
{
    struct mx_ws_reply r = {.relates_to = "uuid:1"};
    char *xml = NULL;
    size_t len = 0;
    struct mx_ws_fault f = {.subcode = "w:TimedOut", .reason = "bad \xff utf-8"};
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), EG_EINVAL);
    f.reason = "control \x01 char";
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), EG_EINVAL);
    f.reason = "ok";
    f.subcode = "zz:Undeclared";
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), EG_EINVAL);
    f.subcode = "w:Bad Name";
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), EG_EINVAL);
    f.subcode = NULL;
    f.reason = NULL;
    assert_int_equal(mx_ws_build_fault(&r, &f, &xml, &len), EG_EINVAL);
    struct mx_ws_out_stream bad = {.b64 = "not base64!"};
    assert_int_equal(mx_ws_build_receive_response(&r, &bad, 1, NULL, &xml, &len), EG_EINVAL);
    assert_int_equal(mx_ws_build_receive_response(&r, NULL, 1, NULL, &xml, &len), EG_EINVAL);
    struct mx_ws_shell_info sh = {.resource_uri = EG_WSMAN_URI_EXCHANGE};
    assert_int_equal(mx_ws_build_create_response(&r, &sh, &xml, &len), EG_EINVAL);
    assert_int_equal(mx_ws_build_command_response(&r, "", &xml, &len), EG_EINVAL);
    assert_int_equal(mx_ws_build_command_response(NULL, "C", &xml, &len), EG_EINVAL);
    assert_null(xml);
    /* escaping of text and attributes */
    struct mx_ws_out_stream q = {.command_id = "a\"<&>", .b64 = "AAAA"};
    assert_int_equal(mx_ws_build_receive_response(&r, &q, 1, NULL, &xml, &len), 0);
    assert_non_null(strstr(xml, "CommandId=\"a&quot;&lt;&amp;&gt;\""));
    eg_free(xml);
}

/* Every allocation failure is reported as EG_ENOMEM (or the call succeeds), never a crash or a
 * leak (the Sanitize build checks the leaks). */
static void test_alloc_failures(void **state)
{
    size_t len;
    char *create = load_fixture("test_psrp_small_msg_size.05.request.xml", &len);
    struct mx_ws_reply r = {.relates_to = "uuid:1"};
    struct mx_ws_out_stream st = {.command_id = "C", .b64 = "AAAA"};
    struct mx_ws_command_state cs = {.command_id = "C", .state_uri = EG_WSMAN_STATE_DONE};
    bool parse_done = false, build_done = false;
    for (long n = 0; n < 2000 && !(parse_done && build_done); n++) {
        struct mx_ws_request *rq = NULL;
        char *xml = NULL;
        eg_alloc_fail_after(n);
        int a = mx_ws_parse_request(create, len, &rq, NULL);
        int b = mx_ws_build_receive_response(&r, &st, 1, &cs, &xml, NULL);
        eg_alloc_fail_after(-1);
        if (a != 0 && a != EG_ENOMEM)
            fail_msg("parse with allocation %ld failing: %d", n, a);
        assert_true(b == 0 || b == EG_ENOMEM);
        if (a == 0)
            parse_done = true;
        if (b == 0)
            build_done = true;
        mx_ws_request_free(rq);
        eg_free(xml);
    }
    assert_true(parse_done && build_done);
    eg_free(create);
}

int main(void)
{
    eg_alloc_init();
    xmlInitParser();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_recorded),
        cmocka_unit_test(test_parse_fields),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_build_recorded),
        cmocka_unit_test(test_build_client_roundtrip),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
