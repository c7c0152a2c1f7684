/* fuzz_wsman.c - libFuzzer target for the WS-Man response and fault parser (transport/wsman).
 *
 * The input is treated as:
 *   1. a response body, parsed as the answer to every operation (with and without an expected
 *      MessageID): the result must be consistent (a response exactly on 0, a fault exactly on
 *      EG_EREMOTE, the fields each operation promises non-NULL, streams with data);
 *   2. a body for eg_wsman_parse_fault, which must agree with (1) on whether there is a fault
 *      and on its kind;
 *   3. text for the builders (the first 256 bytes as a ShellId and a signal code): when a
 *      builder accepts it, its envelope must be well-formed and give the text back.
 * Any broken invariant aborts.
 */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "transport/wsman.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_response(enum eg_wsman_op op, const struct eg_wsman_response *r)
{
    if (!r || r->op != op)
        abort();
    switch (op) {
    case EG_WSMAN_OP_CREATE:
    case EG_WSMAN_OP_GET_SHELL:
        if (!r->shell_id || !*r->shell_id)
            abort();
        break;
    case EG_WSMAN_OP_COMMAND:
        if (!r->command_id || !*r->command_id)
            abort();
        break;
    case EG_WSMAN_OP_RECEIVE:
        if (r->n_streams > EG_WSMAN_MAX_STREAMS || (r->n_streams && !r->streams))
            abort();
        for (size_t i = 0; i < r->n_streams; i++)
            if (!r->streams[i].name || !r->streams[i].data || r->streams[i].data[r->streams[i].len])
                abort();
        if ((r->state == EG_WSMAN_CMD_NONE) != (r->state_uri == NULL))
            abort();
        break;
    case EG_WSMAN_OP_GET_CONFIG:
        if (r->max_envelope_size_kb == 0)
            abort();
        break;
    default:
        break;
    }
}

/* The Selector text of a built Delete must be the ShellId given. */
static void check_built(const struct eg_wsman_request *req, const char *shell_id)
{
    xmlDocPtr d = xmlReadMemory(req->xml, (int)req->len, NULL, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!d)
        abort();
    xmlNode *root = xmlDocGetRootElement(d);
    xmlNode *header = root ? root->children : NULL;
    xmlNode *last = header ? xmlGetLastChild(header) : NULL;
    xmlNode *sel = last ? last->children : NULL;
    xmlChar *text = sel ? xmlNodeGetContent(sel) : NULL;
    if (!text || strcmp((const char *)text, shell_id) != 0)
        abort();
    xmlFree(text);
    xmlFreeDoc(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    if (!initialised) {
        eg_alloc_init();
        xmlInitParser();
        initialised = 1;
    }
    const char *xml = (const char *)data;

    int fault_kind = -1, any_remote = 0;
    for (int op = EG_WSMAN_OP_CREATE; op <= EG_WSMAN_OP_GET_CONFIG; op++) {
        for (int pass = 0; pass < 2; pass++) {
            struct eg_wsman_response *resp = NULL;
            struct eg_wsman_fault *f = NULL;
            int r = eg_wsman_parse_response((enum eg_wsman_op)op, pass ? "uuid:ABC" : NULL, xml,
                                            size, &resp, &f);
            if (r == 0) {
                check_response((enum eg_wsman_op)op, resp);
                if (f)
                    abort();
            } else if (r == EG_EREMOTE) {
                if (resp || !f || (fault_kind >= 0 && (int)f->kind != fault_kind))
                    abort();
                fault_kind = (int)f->kind;
                any_remote = 1;
                (void)eg_wsman_fault_kind_name(f->kind);
                (void)eg_wsman_fault_error(f->kind);
            } else if (resp || f) {
                abort();
            }
            eg_wsman_response_free(resp);
            eg_wsman_fault_free(f);
        }
    }

    struct eg_wsman_fault *f = NULL;
    int r = eg_wsman_parse_fault(xml, size, &f);
    if (r == 0) {
        if (!f || !f->code || (any_remote && (int)f->kind != fault_kind))
            abort();
        eg_wsman_fault_free(f);
    } else if (f || (r == EG_ENOTFOUND && any_remote)) {
        abort();
    }

    /* builders: escaping must round-trip */
    size_t n = size < 256 ? size : 256;
    char *text = eg_malloc(n + 1);
    if (!text)
        return 0;
    memcpy(text, data, n);
    text[n] = '\0';
    struct eg_wsman_target t = {.to = "https://exch01/PowerShell?a=1&b=<2>",
                                .resource_uri = EG_WSMAN_URI_EXCHANGE};
    struct eg_wsman_request req = {0};
    if (eg_wsman_build_delete(&t, text, &req) == 0) {
        check_built(&req, text);
        eg_wsman_request_clear(&req);
    }
    if (eg_wsman_build_signal(&t, "S", "C", text, &req) == 0) {
        xmlDocPtr d = xmlReadMemory(req.xml, (int)req.len, NULL, NULL,
                                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        if (!d)
            abort();
        xmlFreeDoc(d);
        eg_wsman_request_clear(&req);
    }
    eg_free(text);
    return 0;
}
