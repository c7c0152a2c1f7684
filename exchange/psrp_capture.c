/* psrp_capture.c - captured WS-Man envelopes to JSON (contract: psrp_capture.h). */
#include "exchange/psrp_capture.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/limits.h"
#include "exchange/clixml.h"
#include "exchange/clixml_json.h"
#include "exchange/psrp_fragment.h"
#include "exchange/psrp_message.h"
#include "transport/wsman.h"
#include "transport/xml.h"

enum { C2S, S2C };
static const char *const dir_names[] = {"client->server", "server->client"};

struct eg_psrp_capture {
    struct eg_psrp_defrag *d[2];
};

__attribute__((format(printf, 4, 5))) static int say(char *why, size_t size, int rc,
                                                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && size)
        vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return rc;
}

int eg_psrp_capture_new(struct eg_psrp_capture **ret)
{
    struct eg_psrp_capture *c = eg_calloc(1, sizeof *c);
    if (!c)
        return EG_ENOMEM;
    for (int i = 0; i < 2; i++)
        if (eg_psrp_defrag_new(NULL, &c->d[i]) < 0) {
            eg_psrp_capture_free(c);
            return EG_ENOMEM;
        }
    *ret = c;
    return 0;
}

void eg_psrp_capture_free(struct eg_psrp_capture *c)
{
    if (!c)
        return;
    eg_psrp_defrag_free(c->d[0]);
    eg_psrp_defrag_free(c->d[1]);
    eg_free(c);
}

/* Messages completed in direction dir, emitted in order. */
static int emit_ready(struct eg_psrp_capture *c, int dir, const char *source,
                      eg_psrp_capture_emit emit, void *ctx, char *why, size_t size)
{
    for (;;) {
        uint8_t *data = NULL;
        size_t len = 0;
        uint64_t oid = 0;
        int rc = eg_psrp_defrag_pop(c->d[dir], &data, &len, &oid);
        if (rc == EG_ENOTFOUND)
            return 0;
        if (rc < 0)
            return say(why, size, rc, "reassembly: %s", eg_strerror(rc));
        struct eg_psrp_message m;
        struct eg_ps_value *v = NULL;
        json_t *data_json = NULL, *o = NULL;
        char rpid[EG_PSRP_GUID_STRLEN], pid[EG_PSRP_GUID_STRLEN];
        rc = eg_psrp_message_decode(data, len, &m);
        if (rc < 0) {
            rc = say(why, size, EG_EPROTO, "%s: object %llu is not a PSRP message", source,
                     (unsigned long long)oid);
            goto next;
        }
        if (m.data_len > 0) {
            struct eg_clixml_error cerr;
            memset(&cerr, 0, sizeof cerr);
            if ((rc = eg_clixml_decode(m.data, m.data_len, &v, &cerr)) < 0) {
                rc = say(why, size, rc, "%s: %s (object %llu): CLIXML: %s", source,
                         eg_psrp_msg_type_name(m.type), (unsigned long long)oid, cerr.msg);
                goto next;
            }
            if ((rc = eg_clixml_to_json(v, &data_json)) < 0) {
                rc = say(why, size, rc, "%s: cannot render %s as JSON", source,
                         eg_psrp_msg_type_name(m.type));
                goto next;
            }
        }
        o = json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:o?}", "source", source, "direction",
                      dir_names[dir], "object_id", (json_int_t)oid, "type",
                      eg_psrp_msg_type_name(m.type), "type_value", (json_int_t)m.type, "rpid",
                      eg_psrp_guid_to_string(&m.rpid, false, rpid), "pid",
                      eg_psrp_guid_to_string(&m.pid, false, pid), "data", data_json);
        data_json = NULL;
        if (!o) {
            rc = EG_ENOMEM;
            goto next;
        }
        rc = emit(ctx, o);
    next:
        json_decref(data_json);
        eg_ps_value_free(v);
        eg_free(data);
        if (rc != 0)
            return rc;
    }
}

/* Feed one base64 blob of fragments in direction dir. */
static int feed_blob(struct eg_psrp_capture *c, int dir, const xmlNode *n, const char *source,
                     char *why, size_t size)
{
    xmlChar *text = xmlNodeGetContent(n);
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc;
    if (!text)
        return EG_ENOMEM;
    rc = eg_base64_decode((const char *)text, strlen((const char *)text), EG_BASE64_IGNORE_WS,
                          &bytes, &len);
    xmlFree(text);
    if (rc < 0)
        return say(why, size, rc == EG_ENOMEM ? rc : EG_EPARSE, "%s: <%s> is not base64", source,
                   (const char *)n->name);
    rc = eg_psrp_defrag_feed_buffer(c->d[dir], bytes, len);
    eg_free(bytes);
    if (rc < 0)
        return say(why, size, rc == EG_ENOMEM ? rc : EG_EPROTO, "%s: <%s>: bad fragments: %s",
                   source, (const char *)n->name, eg_psrp_defrag_reason(c->d[dir]));
    return 0;
}

/* Walk the body for PSRP payloads. *dirs gets a bit per direction seen. */
static int walk(struct eg_psrp_capture *c, const xmlNode *n, const char *source, unsigned *dirs,
                char *why, size_t size, int depth)
{
    if (depth > EG_WSMAN_MAX_DEPTH)
        return say(why, size, EG_ELIMIT, "%s: nested too deeply", source);
    for (; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        int dir = -1;
        if (eg_xml_is(n, EG_WSMAN_NS_POWERSHELL, "creationXml") ||
            eg_xml_is(n, EG_WSMAN_NS_POWERSHELL, "connectXml") ||
            eg_xml_is(n, EG_WSMAN_NS_SHELL, "Arguments"))
            dir = C2S;
        else if (eg_xml_is(n, EG_WSMAN_NS_POWERSHELL, "connectResponseXml"))
            dir = S2C;
        else if (eg_xml_is(n, EG_WSMAN_NS_SHELL, "Stream"))
            dir = eg_xml_is(n->parent, EG_WSMAN_NS_SHELL, "Send") ? C2S : S2C;
        if (dir >= 0) {
            int rc = feed_blob(c, dir, n, source, why, size);
            if (rc < 0)
                return rc;
            *dirs |= 1u << dir;
            continue;
        }
        int rc = walk(c, n->children, source, dirs, why, size, depth + 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int eg_psrp_capture_feed(struct eg_psrp_capture *c, const char *source, const char *xml, size_t len,
                         eg_psrp_capture_emit emit, void *ctx, char *why, size_t size)
{
    xmlDoc *doc = NULL;
    json_t *o = NULL;
    struct eg_wsman_fault *fault = NULL;
    unsigned dirs = 0;
    int rc = 0;

    if (!c || !xml || !emit)
        return EG_EINVAL;
    if ((rc = eg_xml_read(xml, len, EG_WSMAN_MAX_RESPONSE_BYTES, &doc)) < 0) {
        rc = say(why, size, rc,
                 rc == EG_ELIMIT   ? "%s: over a size, depth or node limit"
                 : rc == EG_ENOMEM ? "%s: out of memory"
                                   : "%s: not well-formed XML (or a DTD, which is not allowed)",
                 source);
        goto out;
    }
    const xmlNode *env = xmlDocGetRootElement(doc);
    const xmlNode *header = eg_xml_child(env, EG_WSMAN_NS_SOAP, "Header");
    const xmlNode *body = eg_xml_child(env, EG_WSMAN_NS_SOAP, "Body");
    if (!eg_xml_is(env, EG_WSMAN_NS_SOAP, "Envelope") || !body) {
        rc = say(why, size, EG_EPROTO, "%s: not a SOAP 1.2 envelope", source);
        goto out;
    }
    const xmlNode *action = eg_xml_child(header, EG_WSMAN_NS_ADDRESSING, "Action");
    xmlChar *action_text = action ? xmlNodeGetContent(action) : NULL;
    o = json_pack("{s:s, s:s?}", "source", source, "action", (const char *)action_text);
    xmlFree(action_text);
    if (!o) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (eg_xml_child(body, EG_WSMAN_NS_SOAP, "Fault")) {
        if ((rc = eg_wsman_parse_fault(xml, len, &fault)) < 0) {
            rc = say(why, size, rc, "%s: unreadable SOAP fault", source);
            goto out;
        }
        json_t *f = json_pack("{s:s, s:s?, s:s?, s:s?}", "kind",
                              eg_wsman_fault_kind_name(fault->kind), "subcode", fault->subcode,
                              "reason", fault->reason, "message", fault->message);
        if (!f ||
            (fault->has_wsman_code &&
             json_object_set_new(f, "wsman_code", json_integer(fault->wsman_code)) < 0) ||
            json_object_set_new(o, "fault", f) < 0) {
            rc = EG_ENOMEM;
            goto out;
        }
    }
    if ((rc = walk(c, body->children, source, &dirs, why, size, 0)) < 0)
        goto out;
    if (dirs == 1u << C2S || dirs == 1u << S2C)
        json_object_set_new(o, "direction", json_string(dir_names[dirs == 1u << C2S ? C2S : S2C]));
    rc = emit(ctx, o);
    o = NULL;
    if (rc != 0)
        goto out;
    for (int dir = 0; dir < 2 && rc == 0; dir++)
        rc = emit_ready(c, dir, source, emit, ctx, why, size);
out:
    json_decref(o);
    eg_wsman_fault_free(fault);
    xmlFreeDoc(doc);
    return rc;
}

int eg_psrp_capture_finish(struct eg_psrp_capture *c, eg_psrp_capture_emit emit, void *ctx)
{
    int partial = 0;
    if (!c || !emit)
        return EG_EINVAL;
    for (int dir = 0; dir < 2; dir++) {
        size_t n = eg_psrp_defrag_in_progress(c->d[dir]);
        if (n == 0)
            continue;
        json_t *o = json_pack("{s:b, s:s, s:I}", "partial", 1, "direction", dir_names[dir],
                              "objects_in_progress", (json_int_t)n);
        if (!o)
            return EG_ENOMEM;
        if (emit(ctx, o) != 0)
            return partial;
        partial++;
    }
    return partial;
}
