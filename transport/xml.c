/* xml.c - hardened libxml2 document loading for outside input (contract: xml.h).
 *
 * The push parser on the whole (bounded) input, never touching the network, never substituting
 * entities, and refusing any DOCTYPE outright (a SAX hook stops the parse when one starts), so no
 * entity can be declared, let alone expanded. XML_PARSE_HUGE only lifts libxml2's 10 MB cap on
 * one text node, which the caller's max_len replaces. Depth, node count and attributes per tag
 * are bounded (EG_WSMAN_MAX_DEPTH, _NODES, _ATTRIBUTES) while parsing.
 */
#include "transport/xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdint.h>
#include <string.h>

#include "common/limits.h"

/* Per-parse state reached from the SAX hooks through ctxt->_private. */
struct parse_guard {
    xmlSAXHandler orig; /* libxml2's SAX2 tree builders, called after the checks */
    size_t nodes;       /* elements, attributes, namespace declarations, comments, PIs, CDATA */
    int stop;           /* 0, EG_EPARSE (DTD) or EG_ELIMIT (too deep / too many nodes) */
    bool nomem;         /* libxml2 reported an allocation failure */
};

static void guard_stop(xmlParserCtxtPtr ctxt, int why)
{
    struct parse_guard *g = ctxt->_private;
    if (!g->stop)
        g->stop = why;
    xmlStopParser(ctxt);
}

/* Count n more nodes; false (parser stopped) when over the limit. */
static bool guard_count(xmlParserCtxtPtr ctxt, size_t n)
{
    struct parse_guard *g = ctxt->_private;
    g->nodes += n;
    if (g->nodes > EG_WSMAN_MAX_NODES) {
        guard_stop(ctxt, EG_ELIMIT);
        return false;
    }
    return true;
}

/* <!DOCTYPE ...>: SOAP 1.2 forbids it; stopping here means no declaration is ever read. */
static void guard_dtd(void *ctx, const xmlChar *name, const xmlChar *external_id,
                      const xmlChar *system_id)
{
    guard_stop(ctx, EG_EPARSE);
}

static void guard_start(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                        const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                        int nb_attributes, int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_guard *g = ctxt->_private;
    if (ctxt->nameNr + 1 > EG_WSMAN_MAX_DEPTH) {
        guard_stop(ctxt, EG_ELIMIT);
        return;
    }
    if (!guard_count(ctxt, 1 + (size_t)nb_namespaces + (size_t)nb_attributes) ||
        !g->orig.startElementNs)
        return;
    g->orig.startElementNs(ctx, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
                           nb_defaulted, attributes);
}

static void guard_comment(void *ctx, const xmlChar *value)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_guard *g = ctxt->_private;
    if (guard_count(ctxt, 1) && g->orig.comment)
        g->orig.comment(ctx, value);
}

static void guard_pi(void *ctx, const xmlChar *target, const xmlChar *data)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_guard *g = ctxt->_private;
    if (guard_count(ctxt, 1) && g->orig.processingInstruction)
        g->orig.processingInstruction(ctx, target, data);
}

static void guard_cdata(void *ctx, const xmlChar *value, int len)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct parse_guard *g = ctxt->_private;
    if (guard_count(ctxt, 1) && g->orig.cdataBlock)
        g->orig.cdataBlock(ctx, value, len);
}

/* libxml2 reports some errors (allocation failures) through the generic handler, which
 * prints to stderr by default; this module never prints. */
static void silent_error(void *ctx, const char *msg, ...) {}

/* Every libxml2 error of this thread during our parse lands here (the structured handler is
 * per thread). Allocation failures are not always visible in the parser context (some are
 * raised without it and the parse then ends in an unrelated-looking error), so note them. */
static void note_error(void *ctx, xmlErrorPtr err)
{
    struct parse_guard *g = ctx;
    if (err && (err->code == XML_ERR_NO_MEMORY || err->domain == XML_FROM_MEMORY))
        g->nomem = true;
}

/* The ASCII character of the code unit at byte offset i (0x80 for anything else, -1 past the
 * end); utf16: 0 = UTF-8 (bytes), 1 = UTF-16LE, 2 = UTF-16BE. */
static int unit_at(const char *xml, size_t len, size_t i, int utf16)
{
    if (utf16 == 0)
        return i < len ? (unsigned char)xml[i] : -1;
    if (i + 2 > len)
        return -1;
    const unsigned char *p = (const unsigned char *)xml + i;
    if (utf16 == 1)
        return p[1] == 0 ? p[0] : 0x80;
    return p[0] == 0 ? p[1] : 0x80;
}

/* Whether the ASCII string s is at unit offset i. */
static bool seq_at(const char *xml, size_t len, size_t i, int utf16, const char *s)
{
    size_t step = utf16 ? 2 : 1;
    for (size_t k = 0; s[k]; k++)
        if (unit_at(xml, len, i + k * step, utf16) != (unsigned char)s[k])
            return false;
    return true;
}

/* libxml2 checks each start tag's attributes (and namespace declarations) for duplicates by
 * comparing every pair, before any SAX hook runs: quadratic in their number. So count them
 * first, lexically: '=' outside quotes inside a tag, skipping comments, CDATA sections and
 * PIs. This never undercounts a well-formed tag; anything ill-formed is rejected by libxml2
 * afterwards. UTF-16 text is scanned by code unit (only ASCII matters here). */
static int prescan_attributes(const char *xml, size_t len, int utf16)
{
    static const struct {
        const char *open, *close;
    } skips[] = {{"<!--", "-->"}, {"<![CDATA[", "]]>"}, {"<?", "?>"}};
    enum { TEXT, TAG, QUOTE, SKIP } st = TEXT;
    const char *close = NULL;
    size_t step = utf16 ? 2 : 1, attrs = 0;
    int quote = 0;
    for (size_t i = 0; i < len; i += step) {
        int c = unit_at(xml, len, i, utf16);
        if (c < 0)
            break;
        switch (st) {
        case TEXT:
            if (c != '<')
                break;
            st = TAG;
            attrs = 0;
            for (size_t k = 0; k < sizeof skips / sizeof skips[0]; k++) {
                if (seq_at(xml, len, i, utf16, skips[k].open)) {
                    st = SKIP;
                    close = skips[k].close;
                    i += (strlen(skips[k].open) - 1) * step;
                    break;
                }
            }
            break;
        case TAG:
            if (c == '"' || c == '\'') {
                st = QUOTE;
                quote = c;
            } else if (c == '=') {
                if (++attrs > EG_WSMAN_MAX_ATTRIBUTES)
                    return EG_ELIMIT;
            } else if (c == '>') {
                st = TEXT;
            }
            break;
        case QUOTE:
            if (c == quote)
                st = TAG;
            break;
        case SKIP:
            if (seq_at(xml, len, i, utf16, close)) {
                i += (strlen(close) - 1) * step;
                st = TEXT;
            }
            break;
        }
    }
    return 0;
}

int eg_xml_read(const char *xml, size_t len, size_t max_len, xmlDocPtr *ret)
{
    if (!xml)
        return EG_EINVAL;
    if (len > max_len || len > INT32_MAX)
        return EG_ELIMIT;
    if (len == 0)
        return EG_EPARSE;

    /* libxml2 stops at a NUL byte as if the input ended there, accepting what came before
     * (unless the text is UTF-16, where NUL bytes are part of the encoding). */
    bool utf16 = len >= 2 && (xml[0] == '\0' || xml[1] == '\0' ||
                              ((unsigned char)xml[0] == 0xFF && (unsigned char)xml[1] == 0xFE) ||
                              ((unsigned char)xml[0] == 0xFE && (unsigned char)xml[1] == 0xFF));
    if (!utf16 && memchr(xml, '\0', len))
        return EG_EPARSE;
    int unit = !utf16                                              ? 0
               : ((unsigned char)xml[0] == 0xFF || xml[1] == '\0') ? 1 /* LE */
                                                                   : 2;
    int r = prescan_attributes(xml, len, unit);
    if (r)
        return r;

    xmlInitParser();
    struct parse_guard g = {0};
    /* The error handlers are per thread in libxml2; restore the caller's afterwards. */
    xmlGenericErrorFunc saved_fn = xmlGenericError;
    void *saved_ctx = xmlGenericErrorContext;
    xmlStructuredErrorFunc saved_sfn = xmlStructuredError;
    void *saved_sctx = xmlStructuredErrorContext;
    xmlSetGenericErrorFunc(NULL, silent_error);
    xmlSetStructuredErrorFunc(&g, note_error);

    xmlDocPtr doc = NULL;
    /* The push parser: xmlCreateMemoryParserCtxt leaks its input buffer when it runs out of
     * memory half-way (libxml2 2.9.14); this one cleans up. The whole body is one chunk. */
    xmlParserCtxtPtr ctxt = xmlCreatePushParserCtxt(NULL, NULL, NULL, 0, NULL);
    if (!ctxt) {
        r = EG_ENOMEM;
        goto out;
    }
    xmlCtxtUseOptions(ctxt,
                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_HUGE);
    g.orig = *ctxt->sax;
    ctxt->_private = &g;
    ctxt->sax->internalSubset = guard_dtd;
    ctxt->sax->externalSubset = guard_dtd;
    ctxt->sax->startElementNs = guard_start;
    ctxt->sax->comment = guard_comment;
    ctxt->sax->processingInstruction = guard_pi;
    ctxt->sax->cdataBlock = guard_cdata;
    /* -1 (XML_PARSER_EOF) without a report: the input buffer could not grow */
    bool eof = xmlParseChunk(ctxt, xml, (int)len, 1) == -1;
    doc = ctxt->myDoc;
    ctxt->myDoc = NULL;
    if (g.nomem || ctxt->errNo == XML_ERR_NO_MEMORY || (eof && !g.stop))
        r = EG_ENOMEM;
    else if (g.stop)
        r = g.stop;
    else if (!doc || !ctxt->wellFormed || !ctxt->nsWellFormed || doc->intSubset ||
             !xmlDocGetRootElement(doc))
        r = EG_EPARSE;
out:
    xmlFreeParserCtxt(ctxt);
    xmlSetStructuredErrorFunc(saved_sctx, saved_sfn);
    xmlSetGenericErrorFunc(saved_ctx, saved_fn);
    if (r) {
        xmlFreeDoc(doc);
        return r;
    }
    *ret = doc;
    return 0;
}

bool eg_xml_is(const xmlNode *n, const char *ns, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
           strcmp((const char *)n->ns->href, ns) == 0 && strcmp((const char *)n->name, name) == 0;
}

/* First element child of parent (NULL allowed) with this namespace and local name. */
xmlNode *eg_xml_child(const xmlNode *parent, const char *ns, const char *name)
{
    if (!parent)
        return NULL;
    for (xmlNode *c = parent->children; c; c = c->next)
        if (eg_xml_is(c, ns, name))
            return c;
    return NULL;
}
