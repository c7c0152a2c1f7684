/* wsman_parse.c - parsing WS-Man responses and SOAP faults (see wsman.h).
 *
 * The body is loaded by transport/xml.h (eg_xml_read: no network, no entities, no DOCTYPE,
 * bounded depth, nodes and attributes) and walked with libxml2's tree API.
 * Elements are matched by namespace URI and local name; QName values (fault codes) are
 * resolved against the in-scope namespace declarations.
 */
#include "transport/wsman.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/util.h"
#include "transport/xml.h"

#define ACTION_TRANSFER "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
#define ACTION_SHELL    EG_WSMAN_NS_SHELL "/"

/* ---- element and text helpers ---- */

static bool xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The text and CDATA nodes in the list starting at first (an element's or attribute's
 * children; descendants are not included), concatenated, optionally trimmed of XML white
 * space, into a new string (never NULL on success; "" when there is no text). */
static int list_text(const xmlNode *first, bool trim, char **ret, size_t *ret_len)
{
    size_t total = 0;
    for (const xmlNode *c = first; c; c = c->next)
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content)
            total += strlen((const char *)c->content);
    char *s = eg_malloc(total + 1);
    if (!s)
        return EG_ENOMEM;
    size_t n = 0;
    for (const xmlNode *c = first; c; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            size_t k = strlen((const char *)c->content);
            memcpy(s + n, c->content, k);
            n += k;
        }
    }
    s[n] = '\0';
    if (trim) {
        size_t a = 0;
        while (a < n && xml_space(s[a]))
            a++;
        while (n > a && xml_space(s[n - 1]))
            n--;
        if (a)
            memmove(s, s + a, n - a);
        n -= a;
        s[n] = '\0';
    }
    *ret = s;
    if (ret_len)
        *ret_len = n;
    return 0;
}

/* Trimmed text of element n into *ret; NULL (and 0) when n is NULL or the text is empty. */
static int el_text(const xmlNode *n, char **ret)
{
    char *s = NULL;
    *ret = NULL;
    if (!n)
        return 0;
    int r = list_text(n->children, true, &s, NULL);
    if (r)
        return r;
    if (!*s) {
        eg_free(s);
        return 0;
    }
    *ret = s;
    return 0;
}

/* Trimmed value of the unqualified attribute name of n into *ret; NULL when absent or empty. */
static int attr_text(const xmlNode *n, const char *name, char **ret)
{
    char *s = NULL;
    *ret = NULL;
    xmlAttr *a = n ? xmlHasNsProp(n, (const xmlChar *)name, NULL) : NULL;
    if (!a || a->type != XML_ATTRIBUTE_NODE)
        return 0;
    int r = list_text(a->children, true, &s, NULL);
    if (r)
        return r;
    if (!*s) {
        eg_free(s);
        return 0;
    }
    *ret = s;
    return 0;
}

/* Strict unsigned decimal of at most max; EG_EPARSE / EG_ELIMIT. */
static int parse_u32(const char *s, uint32_t max, uint32_t *ret)
{
    int64_t v;
    if (!s || s[0] < '0' || s[0] > '9')
        return EG_EPARSE;
    int r = eg_parse_int64(s, 0, (int64_t)max, &v);
    if (r)
        return r == EG_ELIMIT ? EG_ELIMIT : EG_EPARSE;
    *ret = (uint32_t)v;
    return 0;
}

/* xs:duration without years or months ("PT7200.000S", "P0DT0H0M0S") in milliseconds, or -1. */
static int64_t parse_duration_ms(const char *s)
{
    if (!s || *s++ != 'P' || !*s)
        return -1;
    const int64_t cap = INT64_C(1) << 52; /* far beyond any timeout, far from overflow */
    int64_t total = 0;
    bool in_time = false, any = false;
    char last = 0; /* designators must come in order D, H, M, S */
    while (*s) {
        if (*s == 'T') {
            if (in_time || !s[1])
                return -1;
            in_time = true;
            s++;
            continue;
        }
        int64_t whole = 0, frac_ms = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (whole > cap)
                return -1;
            whole = whole * 10 + (*s++ - '0');
            digits++;
        }
        if (!digits)
            return -1;
        if (*s == '.') {
            s++;
            int fd = 0;
            int64_t scale = 100;
            if (*s < '0' || *s > '9')
                return -1;
            while (*s >= '0' && *s <= '9') {
                if (fd < 3)
                    frac_ms += (*s - '0') * scale, scale /= 10;
                fd++;
                s++;
            }
            if (*s != 'S')
                return -1;
        }
        int64_t unit;
        char d = *s++;
        if (!in_time && d == 'D' && last == 0)
            unit = 86400000;
        else if (in_time && d == 'H' && (last == 0 || last == 'D'))
            unit = 3600000;
        else if (in_time && d == 'M' && last != 'M' && last != 'S')
            unit = 60000;
        else if (in_time && d == 'S' && last != 'S')
            unit = 1000;
        else
            return -1;
        if (whole > cap / unit)
            return -1;
        total += whole * unit + frac_ms;
        if (total > cap)
            return -1;
        last = d;
        any = true;
    }
    return any ? total : -1;
}

static bool same_message_id(const char *a, const char *b)
{
    if (strncasecmp(a, "uuid:", 5) == 0)
        a += 5;
    if (strncasecmp(b, "uuid:", 5) == 0)
        b += 5;
    return strcasecmp(a, b) == 0;
}

/* ---- faults ---- */

void eg_wsman_fault_free(struct eg_wsman_fault *f)
{
    if (!f)
        return;
    eg_free(f->code_ns);
    eg_free(f->code);
    eg_free(f->subcode_ns);
    eg_free(f->subcode);
    eg_free(f->reason);
    eg_free(f->machine);
    eg_free(f->message);
    eg_free(f->provider);
    eg_free(f->fault_detail);
    eg_free(f);
}

const char *eg_wsman_fault_kind_name(enum eg_wsman_fault_kind kind)
{
    switch (kind) {
    case EG_WSMAN_FAULT_TIMED_OUT:
        return "timed_out";
    case EG_WSMAN_FAULT_INVALID_SELECTORS:
        return "invalid_selectors";
    case EG_WSMAN_FAULT_ACCESS_DENIED:
        return "access_denied";
    case EG_WSMAN_FAULT_THROTTLED:
        return "throttled";
    case EG_WSMAN_FAULT_OTHER:
        break;
    }
    return "other";
}

int eg_wsman_fault_error(enum eg_wsman_fault_kind kind)
{
    switch (kind) {
    case EG_WSMAN_FAULT_TIMED_OUT:
        return EG_ETIMEDOUT;
    case EG_WSMAN_FAULT_INVALID_SELECTORS:
        return EG_ENOTFOUND;
    case EG_WSMAN_FAULT_ACCESS_DENIED:
        return EG_EPERM;
    case EG_WSMAN_FAULT_THROTTLED:
        return EG_EAGAIN;
    case EG_WSMAN_FAULT_OTHER:
        break;
    }
    return EG_EREMOTE;
}

/* Resolve the QName text of element n ("w:TimedOut") into namespace URI and local name. An
 * unprefixed name takes the default namespace; an undeclared prefix leaves *ret_ns NULL. */
static int qname(xmlDocPtr doc, xmlNode *n, char **ret_ns, char **ret_local)
{
    char *text = NULL, *ns = NULL, *local = NULL;
    int r = el_text(n, &text);
    if (r || !text)
        return r ? r : EG_EPROTO;
    char *colon = strchr(text, ':');
    const char *prefix = NULL;
    const char *name = text;
    if (colon) {
        *colon = '\0';
        prefix = text;
        name = colon + 1;
    }
    if (!*name || (prefix && !*prefix)) {
        eg_free(text);
        return EG_EPROTO;
    }
    xmlNs *x = xmlSearchNs(doc, n, (const xmlChar *)prefix);
    if (x && x->href) {
        ns = eg_strdup((const char *)x->href);
        if (!ns)
            goto nomem;
    }
    local = eg_strdup(name);
    if (!local)
        goto nomem;
    eg_free(text);
    *ret_ns = ns;
    *ret_local = local;
    return 0;
nomem:
    eg_free(text);
    eg_free(ns);
    return EG_ENOMEM;
}

static bool text_has(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle);
}

static enum eg_wsman_fault_kind classify(const struct eg_wsman_fault *f)
{
    const char *sc = f->subcode ? f->subcode : "";
    bool wsman = f->subcode_ns && strcmp(f->subcode_ns, EG_WSMAN_NS_WSMAN) == 0;
    bool wsa = f->subcode_ns && strcmp(f->subcode_ns, EG_WSMAN_NS_ADDRESSING) == 0;
    uint32_t code = f->has_wsman_code ? f->wsman_code : 0;

    if ((wsman && strcmp(sc, "TimedOut") == 0) || code == 2150858793u)
        return EG_WSMAN_FAULT_TIMED_OUT;
    if ((wsman && strcmp(sc, "InvalidSelectors") == 0) || code == 2150858843u ||
        text_has(f->message, "WSMan-InvalidShellID") || text_has(f->reason, "WSMan-InvalidShellID"))
        return EG_WSMAN_FAULT_INVALID_SELECTORS;
    if ((wsman && strcmp(sc, "AccessDenied") == 0) || (f->has_wsman_code && code == 5) ||
        code == 0x80070005u)
        return EG_WSMAN_FAULT_ACCESS_DENIED;
    if ((wsman && (strcmp(sc, "QuotaLimit") == 0 || strcmp(sc, "Concurrency") == 0)) ||
        (wsa && strcmp(sc, "EndpointUnavailable") == 0) || code == 2150859173u ||
        code == 2150859174u)
        return EG_WSMAN_FAULT_THROTTLED;
    static const char *const quota_texts[] = {
        "quota",
        "concurrent shells",
        "concurrent operations",
        "maximum number of connections",
        "exceeded your budget",
    };
    for (size_t i = 0; i < sizeof quota_texts / sizeof quota_texts[0]; i++)
        if (text_has(f->message, quota_texts[i]) || text_has(f->reason, quota_texts[i]))
            return EG_WSMAN_FAULT_THROTTLED;
    return EG_WSMAN_FAULT_OTHER;
}

/* Take the first value found for a field: set *field from *val (consumed) if still NULL. */
static void keep_first(char **field, char **val)
{
    if (!*field) {
        *field = *val;
        *val = NULL;
    }
    eg_freep(val);
}

static int walk_wsman_fault(xmlNode *wf, int depth, struct eg_wsman_fault *f);

/* f:ProviderFault: @provider, its own text, a nested f:WSManFault. */
static int walk_provider_fault(xmlNode *pf, int depth, struct eg_wsman_fault *f)
{
    char *s = NULL;
    int r = attr_text(pf, "provider", &s);
    if (r)
        return r;
    keep_first(&f->provider, &s);
    if ((r = el_text(pf, &s)))
        return r;
    keep_first(&f->message, &s);
    for (xmlNode *c = pf->children; c; c = c->next)
        if (eg_xml_is(c, EG_WSMAN_NS_FAULT, "WSManFault") &&
            (r = walk_wsman_fault(c, depth + 1, f)))
            return r;
    return 0;
}

/* f:WSManFault: @Code, @Machine, f:Message (own text, nested f:ProviderFault). */
static int walk_wsman_fault(xmlNode *wf, int depth, struct eg_wsman_fault *f)
{
    char *s = NULL;
    int r;
    if (depth > EG_WSMAN_MAX_FAULT_DEPTH)
        return EG_ELIMIT;
    if ((r = attr_text(wf, "Code", &s)))
        return r;
    if (s && !f->has_wsman_code) {
        uint32_t code;
        r = parse_u32(s, UINT32_MAX, &code);
        if (r == 0) {
            f->wsman_code = code;
            f->has_wsman_code = true;
        }
        /* a Code that is not a number is ignored: the subcode still classifies the fault */
    }
    eg_freep(&s);
    if ((r = attr_text(wf, "Machine", &s)))
        return r;
    keep_first(&f->machine, &s);
    for (xmlNode *m = wf->children; m; m = m->next) {
        if (eg_xml_is(m, EG_WSMAN_NS_FAULT, "ProviderFault")) {
            if ((r = walk_provider_fault(m, depth, f)))
                return r;
            continue;
        }
        if (!eg_xml_is(m, EG_WSMAN_NS_FAULT, "Message"))
            continue;
        if ((r = el_text(m, &s)))
            return r;
        keep_first(&f->message, &s);
        for (xmlNode *c = m->children; c; c = c->next)
            if (eg_xml_is(c, EG_WSMAN_NS_FAULT, "ProviderFault") &&
                (r = walk_provider_fault(c, depth, f)))
                return r;
    }
    return 0;
}

static int parse_fault_node(xmlDocPtr doc, xmlNode *fault, struct eg_wsman_fault **ret)
{
    int r;
    char *s = NULL;
    struct eg_wsman_fault *f = eg_calloc(1, sizeof *f);
    if (!f)
        return EG_ENOMEM;

    xmlNode *code = eg_xml_child(fault, EG_WSMAN_NS_SOAP, "Code");
    xmlNode *value = eg_xml_child(code, EG_WSMAN_NS_SOAP, "Value");
    if (!value) {
        r = EG_EPROTO;
        goto out;
    }
    if ((r = qname(doc, value, &f->code_ns, &f->code)))
        goto out;
    xmlNode *sub =
        eg_xml_child(eg_xml_child(code, EG_WSMAN_NS_SOAP, "Subcode"), EG_WSMAN_NS_SOAP, "Value");
    if (sub && (r = qname(doc, sub, &f->subcode_ns, &f->subcode)))
        goto out;
    if ((r = el_text(eg_xml_child(eg_xml_child(fault, EG_WSMAN_NS_SOAP, "Reason"), EG_WSMAN_NS_SOAP,
                                  "Text"),
                     &f->reason)))
        goto out;
    xmlNode *detail = eg_xml_child(fault, EG_WSMAN_NS_SOAP, "Detail");
    if ((r = el_text(eg_xml_child(detail, EG_WSMAN_NS_WSMAN, "FaultDetail"), &f->fault_detail)))
        goto out;
    xmlNode *wf = eg_xml_child(detail, EG_WSMAN_NS_FAULT, "WSManFault");
    if (wf && (r = walk_wsman_fault(wf, 0, f)))
        goto out;
    if (!f->message && f->reason) {
        f->message = eg_strdup(f->reason);
        if (!f->message) {
            r = EG_ENOMEM;
            goto out;
        }
    }
    f->kind = classify(f);
    *ret = f;
    f = NULL;
out:
    eg_free(s);
    eg_wsman_fault_free(f);
    return r;
}

/* ---- envelopes ---- */

struct envelope {
    xmlNode *header; /* may be NULL */
    xmlNode *body;
    xmlNode *fault; /* s:Body/s:Fault or NULL */
};

static int open_envelope(xmlDocPtr doc, struct envelope *e)
{
    xmlNode *root = xmlDocGetRootElement(doc);
    if (!eg_xml_is(root, EG_WSMAN_NS_SOAP, "Envelope"))
        return EG_EPROTO;
    e->header = eg_xml_child(root, EG_WSMAN_NS_SOAP, "Header");
    e->body = eg_xml_child(root, EG_WSMAN_NS_SOAP, "Body");
    if (!e->body)
        return EG_EPROTO;
    e->fault = eg_xml_child(e->body, EG_WSMAN_NS_SOAP, "Fault");
    return 0;
}

int eg_wsman_parse_fault(const char *xml, size_t len, struct eg_wsman_fault **ret)
{
    xmlDocPtr doc = NULL;
    struct envelope e = {0};
    if (!ret)
        return EG_EINVAL;
    int r = eg_xml_read(xml, len, EG_WSMAN_MAX_RESPONSE_BYTES, &doc);
    if (r)
        return r;
    if ((r = open_envelope(doc, &e)))
        goto out;
    if (!e.fault) {
        r = EG_ENOTFOUND;
        goto out;
    }
    r = parse_fault_node(doc, e.fault, ret);
out:
    xmlFreeDoc(doc);
    return r;
}

/* ---- responses ---- */

const char *eg_wsman_op_name(enum eg_wsman_op op)
{
    switch (op) {
    case EG_WSMAN_OP_CREATE:
        return "create";
    case EG_WSMAN_OP_RECEIVE:
        return "receive";
    case EG_WSMAN_OP_COMMAND:
        return "command";
    case EG_WSMAN_OP_SEND:
        return "send";
    case EG_WSMAN_OP_SIGNAL:
        return "signal";
    case EG_WSMAN_OP_DELETE:
        return "delete";
    case EG_WSMAN_OP_GET_SHELL:
        return "get_shell";
    case EG_WSMAN_OP_GET_CONFIG:
        return "get_config";
    }
    return "unknown";
}

static const char *response_action(enum eg_wsman_op op)
{
    switch (op) {
    case EG_WSMAN_OP_CREATE:
        return ACTION_TRANSFER "CreateResponse";
    case EG_WSMAN_OP_RECEIVE:
        return ACTION_SHELL "ReceiveResponse";
    case EG_WSMAN_OP_COMMAND:
        return ACTION_SHELL "CommandResponse";
    case EG_WSMAN_OP_SEND:
        return ACTION_SHELL "SendResponse";
    case EG_WSMAN_OP_SIGNAL:
        return ACTION_SHELL "SignalResponse";
    case EG_WSMAN_OP_DELETE:
        return ACTION_TRANSFER "DeleteResponse";
    case EG_WSMAN_OP_GET_SHELL:
    case EG_WSMAN_OP_GET_CONFIG:
        return ACTION_TRANSFER "GetResponse";
    }
    return NULL;
}

void eg_wsman_response_free(struct eg_wsman_response *r)
{
    if (!r)
        return;
    eg_free(r->action);
    eg_free(r->message_id);
    eg_free(r->relates_to);
    eg_free(r->shell_id);
    eg_free(r->shell_state);
    eg_free(r->command_id);
    for (size_t i = 0; i < r->n_streams; i++) {
        eg_free(r->streams[i].name);
        eg_free(r->streams[i].command_id);
        eg_free(r->streams[i].data);
    }
    eg_free(r->streams);
    eg_free(r->state_uri);
    eg_free(r->state_command_id);
    eg_free(r);
}

/* rsp:Shell (Create and Get responses): ShellId, State, IdleTimeOut, MaxIdleTimeOut. */
static int parse_shell_info(xmlNode *shell, struct eg_wsman_response *resp)
{
    char *s = NULL;
    int r;
    if ((r = el_text(eg_xml_child(shell, EG_WSMAN_NS_SHELL, "ShellId"), &s)))
        return r;
    keep_first(&resp->shell_id, &s);
    if ((r = el_text(eg_xml_child(shell, EG_WSMAN_NS_SHELL, "State"), &resp->shell_state)))
        return r;
    if ((r = el_text(eg_xml_child(shell, EG_WSMAN_NS_SHELL, "IdleTimeOut"), &s)))
        return r;
    resp->idle_timeout_ms = parse_duration_ms(s);
    eg_freep(&s);
    if ((r = el_text(eg_xml_child(shell, EG_WSMAN_NS_SHELL, "MaxIdleTimeOut"), &s)))
        return r;
    resp->max_idle_timeout_ms = parse_duration_ms(s);
    eg_free(s);
    return 0;
}

static int parse_create(xmlNode *body, struct eg_wsman_response *resp)
{
    int r;
    xmlNode *set =
        eg_xml_child(eg_xml_child(eg_xml_child(body, EG_WSMAN_NS_TRANSFER, "ResourceCreated"),
                                  EG_WSMAN_NS_ADDRESSING, "ReferenceParameters"),
                     EG_WSMAN_NS_WSMAN, "SelectorSet");
    for (xmlNode *c = set ? set->children : NULL; c; c = c->next) {
        if (!eg_xml_is(c, EG_WSMAN_NS_WSMAN, "Selector"))
            continue;
        char *name = NULL;
        if ((r = attr_text(c, "Name", &name)))
            return r;
        bool is_shell = name && strcasecmp(name, "ShellId") == 0;
        eg_free(name);
        if (is_shell) {
            if ((r = el_text(c, &resp->shell_id)))
                return r;
            break;
        }
    }
    xmlNode *shell = eg_xml_child(body, EG_WSMAN_NS_SHELL, "Shell");
    if (shell && (r = parse_shell_info(shell, resp)))
        return r;
    return resp->shell_id ? 0 : EG_EPROTO;
}

static int parse_get_shell(xmlNode *body, struct eg_wsman_response *resp)
{
    xmlNode *shell = eg_xml_child(body, EG_WSMAN_NS_SHELL, "Shell");
    if (!shell)
        return EG_EPROTO;
    int r = parse_shell_info(shell, resp);
    if (r)
        return r;
    return resp->shell_id ? 0 : EG_EPROTO;
}

static int parse_command(xmlNode *body, struct eg_wsman_response *resp)
{
    xmlNode *cr = eg_xml_child(body, EG_WSMAN_NS_SHELL, "CommandResponse");
    if (!cr)
        return EG_EPROTO;
    int r = el_text(eg_xml_child(cr, EG_WSMAN_NS_SHELL, "CommandId"), &resp->command_id);
    if (r)
        return r;
    return resp->command_id ? 0 : EG_EPROTO;
}

/* xs:boolean (trimmed): "true"/"1", "false"/"0". */
static int parse_bool(const char *s, bool *ret)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *ret = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *ret = false;
    else
        return EG_EPROTO;
    return 0;
}

static int parse_stream(xmlNode *n, struct eg_wsman_stream *st)
{
    char *text = NULL, *end = NULL;
    size_t len = 0;
    int r;
    if ((r = attr_text(n, "Name", &st->name)))
        goto out;
    if (!st->name) {
        r = EG_EPROTO;
        goto out;
    }
    if ((r = attr_text(n, "CommandId", &st->command_id)))
        goto out;
    if ((r = attr_text(n, "End", &end)))
        goto out;
    if (end && (r = parse_bool(end, &st->end)))
        goto out;
    if ((r = list_text(n->children, false, &text, &len)))
        goto out;
    r = eg_base64_decode(text, len, EG_BASE64_IGNORE_WS, &st->data, &st->len);
out:
    eg_free(text);
    eg_free(end);
    return r;
}

static int parse_command_state(xmlNode *n, struct eg_wsman_response *resp)
{
    char *s = NULL;
    int r;
    if ((r = attr_text(n, "State", &resp->state_uri)))
        return r;
    if (!resp->state_uri)
        return EG_EPROTO;
    if (strcmp(resp->state_uri, EG_WSMAN_STATE_DONE) == 0)
        resp->state = EG_WSMAN_CMD_DONE;
    else if (strcmp(resp->state_uri, EG_WSMAN_STATE_RUNNING) == 0)
        resp->state = EG_WSMAN_CMD_RUNNING;
    else if (strcmp(resp->state_uri, EG_WSMAN_STATE_PENDING) == 0)
        resp->state = EG_WSMAN_CMD_PENDING;
    else
        resp->state = EG_WSMAN_CMD_OTHER;
    if ((r = attr_text(n, "CommandId", &resp->state_command_id)))
        return r;
    xmlNode *ec = eg_xml_child(n, EG_WSMAN_NS_SHELL, "ExitCode");
    if (!ec)
        return 0;
    if ((r = el_text(ec, &s)))
        return r;
    int64_t v;
    r = eg_parse_int64(s, INT64_MIN, INT64_MAX, &v);
    eg_free(s);
    if (r)
        return r == EG_ELIMIT ? EG_ELIMIT : EG_EPARSE;
    resp->exit_code = v;
    resp->has_exit_code = true;
    return 0;
}

static int parse_receive(xmlNode *body, struct eg_wsman_response *resp)
{
    xmlNode *rr = eg_xml_child(body, EG_WSMAN_NS_SHELL, "ReceiveResponse");
    if (!rr)
        return EG_EPROTO;
    size_t n = 0;
    for (xmlNode *c = rr->children; c; c = c->next)
        if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "Stream") && ++n > EG_WSMAN_MAX_STREAMS)
            return EG_ELIMIT;
    if (n) {
        resp->streams = eg_calloc(n, sizeof *resp->streams);
        if (!resp->streams)
            return EG_ENOMEM;
    }
    int r;
    bool have_state = false;
    for (xmlNode *c = rr->children; c; c = c->next) {
        if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "Stream")) {
            /* counted before the call: a partly filled stream is freed with the response */
            if ((r = parse_stream(c, &resp->streams[resp->n_streams++])))
                return r;
        } else if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "CommandState")) {
            if (have_state)
                return EG_EPROTO;
            have_state = true;
            if ((r = parse_command_state(c, resp)))
                return r;
        }
    }
    return 0;
}

static int parse_config(xmlNode *body, struct eg_wsman_response *resp)
{
    xmlNode *cfg = eg_xml_child(body, EG_WSMAN_NS_CONFIG, "Config");
    char *s = NULL;
    int r;
    if ((r = el_text(eg_xml_child(cfg, EG_WSMAN_NS_CONFIG, "MaxEnvelopeSizekb"), &s)))
        return r;
    if (!s)
        return EG_EPROTO;
    r = parse_u32(s, UINT32_MAX / 1024, &resp->max_envelope_size_kb);
    eg_freep(&s);
    if (r)
        return r;
    if (resp->max_envelope_size_kb == 0)
        return EG_EPROTO;
    if ((r = el_text(eg_xml_child(cfg, EG_WSMAN_NS_CONFIG, "MaxTimeoutms"), &s)))
        return r;
    if (s)
        r = parse_u32(s, UINT32_MAX, &resp->max_timeout_ms);
    eg_free(s);
    return r;
}

/* The wsa:RelatesTo of a header (NULL if none), trimmed, copied. */
static int header_field(xmlNode *header, const char *name, char **ret)
{
    return el_text(eg_xml_child(header, EG_WSMAN_NS_ADDRESSING, name), ret);
}

int eg_wsman_parse_response(enum eg_wsman_op op, const char *expect_message_id, const char *xml,
                            size_t len, struct eg_wsman_response **ret,
                            struct eg_wsman_fault **ret_fault)
{
    xmlDocPtr doc = NULL;
    struct envelope e = {0};
    struct eg_wsman_response *resp = NULL;
    const char *want_action = response_action(op);
    int r;

    if (!ret || !want_action)
        return EG_EINVAL;
    if ((r = eg_xml_read(xml, len, EG_WSMAN_MAX_RESPONSE_BYTES, &doc)))
        return r;
    if ((r = open_envelope(doc, &e)))
        goto out;
    resp = eg_calloc(1, sizeof *resp);
    if (!resp) {
        r = EG_ENOMEM;
        goto out;
    }
    resp->op = op;
    resp->idle_timeout_ms = resp->max_idle_timeout_ms = -1;
    if ((r = header_field(e.header, "Action", &resp->action)) ||
        (r = header_field(e.header, "MessageID", &resp->message_id)) ||
        (r = header_field(e.header, "RelatesTo", &resp->relates_to)))
        goto out;

    if (e.fault) {
        if (expect_message_id && resp->relates_to &&
            !same_message_id(resp->relates_to, expect_message_id)) {
            r = EG_EPROTO;
            goto out;
        }
        struct eg_wsman_fault *f = NULL;
        if ((r = parse_fault_node(doc, e.fault, &f)))
            goto out;
        if (ret_fault)
            *ret_fault = f;
        else
            eg_wsman_fault_free(f);
        r = EG_EREMOTE;
        goto out;
    }
    if (expect_message_id &&
        (!resp->relates_to || !same_message_id(resp->relates_to, expect_message_id))) {
        r = EG_EPROTO;
        goto out;
    }
    if (resp->action && strcmp(resp->action, want_action) != 0) {
        r = EG_EPROTO;
        goto out;
    }

    switch (op) {
    case EG_WSMAN_OP_CREATE:
        r = parse_create(e.body, resp);
        break;
    case EG_WSMAN_OP_RECEIVE:
        r = parse_receive(e.body, resp);
        break;
    case EG_WSMAN_OP_COMMAND:
        r = parse_command(e.body, resp);
        break;
    case EG_WSMAN_OP_SEND:
        r = eg_xml_child(e.body, EG_WSMAN_NS_SHELL, "SendResponse") ? 0 : EG_EPROTO;
        break;
    case EG_WSMAN_OP_SIGNAL:
        r = eg_xml_child(e.body, EG_WSMAN_NS_SHELL, "SignalResponse") ? 0 : EG_EPROTO;
        break;
    case EG_WSMAN_OP_DELETE:
        r = 0;
        break; /* empty body; the action (if any) was checked */
    case EG_WSMAN_OP_GET_SHELL:
        r = parse_get_shell(e.body, resp);
        break;
    case EG_WSMAN_OP_GET_CONFIG:
        r = parse_config(e.body, resp);
        break;
    }
    if (r)
        goto out;
    *ret = resp;
    resp = NULL;
out:
    eg_wsman_response_free(resp);
    xmlFreeDoc(doc);
    return r;
}
