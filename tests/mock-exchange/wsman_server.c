/* wsman_server.c - the server side of WS-Management for the mock Exchange (see wsman_server.h):
 * request parsing with libxml2 (guarded like transport/wsman_parse.c: no DTD, bounded depth,
 * nodes and attributes) and response/fault building by careful string building, in the shapes
 * recorded from Windows (shared/vectors).
 */
#include "wsman_server.h"

#include <libxml/parser.h>
#include <stdarg.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "transport/xml.h"
#include "common/base64.h"
#include "common/util.h"

#define ACTION_TRANSFER   "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
#define ACTION_SHELL      EG_WSMAN_NS_SHELL "/"
#define ACTION_ENUMERATE  "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
#define ACTION_FAULT      "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
#define ACTION_ADDR_FAULT "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
#define NS_EVENTING       "http://schemas.xmlsoap.org/ws/2004/08/eventing"
#define NS_ENUMERATION    "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
#define ADDRESS_ANONYMOUS "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
#define DETAIL_UNEXPECTED                                                                          \
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors"
#define DETAIL_INVALID_URI                                                                         \
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidResourceURI"

/* =========================================================================================== */
/* Names                                                                                        */
/* =========================================================================================== */

static const struct {
    enum mx_ws_action action;
    const char *uri;
    const char *name;
} actions[] = {
    {MX_WS_CREATE, ACTION_TRANSFER "Create", "Create"},
    {MX_WS_DELETE, ACTION_TRANSFER "Delete", "Delete"},
    {MX_WS_GET, ACTION_TRANSFER "Get", "Get"},
    {MX_WS_PUT, ACTION_TRANSFER "Put", "Put"},
    {MX_WS_COMMAND, ACTION_SHELL "Command", "Command"},
    {MX_WS_SEND, ACTION_SHELL "Send", "Send"},
    {MX_WS_RECEIVE, ACTION_SHELL "Receive", "Receive"},
    {MX_WS_SIGNAL, ACTION_SHELL "Signal", "Signal"},
    {MX_WS_CONNECT, ACTION_SHELL "Connect", "Connect"},
    {MX_WS_DISCONNECT, ACTION_SHELL "Disconnect", "Disconnect"},
    {MX_WS_RECONNECT, ACTION_SHELL "Reconnect", "Reconnect"},
    {MX_WS_ENUMERATE, ACTION_ENUMERATE, "Enumerate"},
};

const char *mx_ws_action_name(enum mx_ws_action a)
{
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (actions[i].action == a)
            return actions[i].name;
    return "Other";
}

static enum mx_ws_action action_from_uri(const char *uri)
{
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(actions[i].uri, uri) == 0)
            return actions[i].action;
    return MX_WS_OTHER;
}

/* =========================================================================================== */
/* Durations                                                                                    */
/* =========================================================================================== */

#define DURATION_MAX_MS (INT64_C(1) << 53)

/* Read digits at *p into *ret (at most 15 of them, so no overflow); false if none. */
static bool read_digits(const char **p, int64_t *ret, int *ret_n)
{
    int64_t v = 0;
    int n = 0;
    while (**p >= '0' && **p <= '9') {
        if (n >= 15)
            return false;
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    *ret = v;
    if (ret_n)
        *ret_n = n;
    return n > 0;
}

int mx_ws_parse_duration(const char *s, int64_t *ret_ms)
{
    if (!s || *s != 'P')
        return EG_EPARSE;
    const char *p = s + 1;
    int64_t total = 0, v;
    bool any = false, in_time = false;
    /* components must come in the order D, T, H, M, S */
    int last = 0; /* 1 D, 2 H, 3 M, 4 S */
    while (*p) {
        if (*p == 'T') {
            if (in_time)
                return EG_EPARSE;
            in_time = true;
            p++;
            if (!*p)
                return EG_EPARSE; /* "P1DT" */
            continue;
        }
        if (!read_digits(&p, &v, NULL))
            return EG_EPARSE;
        int64_t frac_ms = 0;
        if (*p == '.') {
            p++;
            int64_t f;
            int nd;
            if (!in_time || !read_digits(&p, &f, &nd))
                return EG_EPARSE;
            /* keep milliseconds: the first three digits */
            while (nd > 3) {
                f /= 10;
                nd--;
            }
            while (nd < 3) {
                f *= 10;
                nd++;
            }
            frac_ms = f;
            if (*p != 'S')
                return EG_EPARSE;
        }
        int64_t unit;
        int which;
        if (!in_time && *p == 'D') {
            unit = 86400000;
            which = 1;
        } else if (in_time && *p == 'H') {
            unit = 3600000;
            which = 2;
        } else if (in_time && *p == 'M') {
            unit = 60000;
            which = 3;
        } else if (in_time && *p == 'S') {
            unit = 1000;
            which = 4;
        } else {
            return EG_EPARSE; /* years, months, a sign, garbage */
        }
        if (which <= last)
            return EG_EPARSE;
        last = which;
        p++;
        if (v > DURATION_MAX_MS / unit)
            return EG_ELIMIT;
        total += v * unit + frac_ms;
        if (total > DURATION_MAX_MS)
            return EG_ELIMIT;
        any = true;
    }
    if (!any)
        return EG_EPARSE;
    *ret_ms = total;
    return 0;
}

void mx_ws_format_duration(int64_t ms, char *out, size_t size)
{
    if (ms < 0)
        ms = 0;
    snprintf(out, size, "PT%lld.%03lldS", (long long)(ms / 1000), (long long)(ms % 1000));
}

/* "P0DT0H0M0S" as Windows writes ShellRunTime. */
static void format_dhms(int64_t ms, char *out, size_t size)
{
    if (ms < 0)
        ms = 0;
    long long s = (long long)(ms / 1000);
    snprintf(out, size, "P%lldDT%lldH%lldM%lldS", s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
}

/* =========================================================================================== */
/* Parsing: the document                                                                        */
/* =========================================================================================== */

/* The document is read by transport/xml.h (eg_xml_read): the same hardened loader as the
 * client's response parser. */

/* =========================================================================================== */
/* Parsing: elements and texts                                                                  */
/* =========================================================================================== */

static bool xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A new copy of s[0..len) without surrounding XML white space. */
static char *dup_trim(const char *s, size_t len)
{
    while (len && xml_space(*s)) {
        s++;
        len--;
    }
    while (len && xml_space(s[len - 1]))
        len--;
    return eg_strndup(s, len);
}

/* The text and CDATA nodes of the list starting at first, concatenated and trimmed, in a new
 * string ("" when none). NULL when out of memory. */
static char *list_text(const xmlNode *first)
{
    size_t total = 0;
    for (const xmlNode *c = first; c; c = c->next)
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content)
            total += strlen((const char *)c->content);
    char *buf = eg_malloc(total + 1);
    if (!buf)
        return NULL;
    size_t at = 0;
    for (const xmlNode *c = first; c; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            size_t l = strlen((const char *)c->content);
            memcpy(buf + at, c->content, l);
            at += l;
        }
    }
    buf[at] = '\0';
    char *t = dup_trim(buf, at);
    eg_free(buf);
    return t;
}

static char *node_text(const xmlNode *n)
{
    return list_text(n->children);
}

/* Copy of the attribute (ns NULL: without namespace) of n; *ret NULL when absent. Reads the
 * attribute's nodes directly (libxml2's getters allocate, and a failed allocation would look
 * like an absent attribute). 0 or EG_ENOMEM. */
static int attr_ns_copy(const xmlNode *n, const char *name, const char *ns, char **ret)
{
    *ret = NULL;
    xmlAttrPtr a = xmlHasNsProp(n, (const xmlChar *)name, (const xmlChar *)ns);
    if (!a || a->type != XML_ATTRIBUTE_NODE)
        return 0;
    *ret = list_text(a->children);
    return *ret ? 0 : EG_ENOMEM;
}

static int attr_copy(const xmlNode *n, const char *name, char **ret)
{
    return attr_ns_copy(n, name, NULL, ret);
}

/* xml:lang of n. */
static int lang_copy(const xmlNode *n, char **ret)
{
    return attr_ns_copy(n, "lang", (const char *)XML_XML_NAMESPACE, ret);
}

/* Decode the base64 text of n (white space allowed) into *ret / *ret_len. */
static int b64_text(const xmlNode *n, uint8_t **ret, size_t *ret_len)
{
    char *t = node_text(n);
    if (!t)
        return EG_ENOMEM;
    int rc = eg_base64_decode(t, strlen(t), EG_BASE64_IGNORE_WS, ret, ret_len);
    eg_free(t);
    return rc;
}

static bool xs_bool(const char *s, bool *ret)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *ret = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *ret = false;
    else
        return false;
    return true;
}

static void diag_set(struct mx_ws_parse_diag *d, enum mx_ws_parse_error kind, const char *detail)
{
    if (!d)
        return;
    if (kind == MX_WS_PERR_NONE)
        d->message_id[0] = '\0';
    d->kind = kind;
    d->detail[0] = '\0';
    if (detail) {
        /* keep printable ASCII only: the detail goes into a fault text */
        size_t j = 0;
        for (size_t i = 0; detail[i] && j + 1 < sizeof d->detail; i++)
            d->detail[j++] = (detail[i] >= 0x20 && detail[i] < 0x7f) ? detail[i] : '?';
        d->detail[j] = '\0';
    }
}

/* Append a selector/option of element n to *arr. */
static int add_pair(struct mx_ws_pair **arr, size_t *n, const xmlNode *el, bool option)
{
    if (*n >= EG_MOCK_WS_MAX_PAIRS)
        return EG_ELIMIT;
    struct mx_ws_pair *na = eg_reallocarray(*arr, *n + 1, sizeof **arr);
    if (!na)
        return EG_ENOMEM;
    *arr = na;
    struct mx_ws_pair *p = &na[*n];
    memset(p, 0, sizeof *p);
    int rc = attr_copy(el, "Name", &p->name);
    if (rc == 0 && !p->name)
        p->name = eg_strdup("");
    if (rc == 0 && !p->name)
        rc = EG_ENOMEM;
    if (rc == 0 && !(p->value = node_text(el)))
        rc = EG_ENOMEM;
    if (rc == 0 && option) {
        char *mc = NULL;
        rc = attr_copy(el, "MustComply", &mc);
        if (rc == 0 && mc)
            (void)xs_bool(mc, &p->must_comply);
        eg_free(mc);
    }
    if (rc) {
        eg_free(p->name);
        eg_free(p->value);
        return rc;
    }
    (*n)++;
    return 0;
}

void mx_ws_request_free(struct mx_ws_request *r)
{
    if (!r)
        return;
    eg_free(r->action_uri);
    eg_free(r->message_id);
    eg_free(r->to);
    eg_free(r->resource_uri);
    eg_free(r->session_id);
    eg_free(r->locale);
    eg_free(r->data_locale);
    for (size_t i = 0; i < r->n_selectors; i++) {
        eg_free(r->selectors[i].name);
        eg_free(r->selectors[i].value);
    }
    eg_free(r->selectors);
    for (size_t i = 0; i < r->n_options; i++) {
        eg_free(r->options[i].name);
        eg_free(r->options[i].value);
    }
    eg_free(r->options);
    eg_free(r->shell_id_requested);
    eg_free(r->shell_name);
    eg_free(r->input_streams);
    eg_free(r->output_streams);
    eg_free(r->creation_xml);
    eg_free(r->command_id);
    eg_free(r->command);
    eg_free(r->arguments);
    for (size_t i = 0; i < r->n_streams; i++) {
        eg_free(r->streams[i].name);
        eg_free(r->streams[i].command_id);
        eg_free(r->streams[i].data);
    }
    eg_free(r->streams);
    eg_free(r->desired_stream);
    eg_free(r->signal_code);
    eg_free(r);
}

const char *mx_ws_selector(const struct mx_ws_request *r, const char *name)
{
    for (size_t i = 0; r && i < r->n_selectors; i++)
        if (strcasecmp(r->selectors[i].name, name) == 0)
            return r->selectors[i].value;
    return NULL;
}

const struct mx_ws_pair *mx_ws_option(const struct mx_ws_request *r, const char *name)
{
    for (size_t i = 0; r && i < r->n_options; i++)
        if (strcasecmp(r->options[i].name, name) == 0)
            return &r->options[i];
    return NULL;
}

/* Replace *field with the trimmed text of n. */
static int set_text(char **field, const xmlNode *n)
{
    char *t = node_text(n);
    if (!t)
        return EG_ENOMEM;
    eg_free(*field);
    *field = t;
    return 0;
}

static int parse_header(xmlNode *header, struct mx_ws_request *r, struct mx_ws_parse_diag *diag)
{
    int rc = 0;
    for (xmlNode *h = header->children; h && rc == 0; h = h->next) {
        if (h->type != XML_ELEMENT_NODE)
            continue;
        if (eg_xml_is(h, EG_WSMAN_NS_ADDRESSING, "Action")) {
            rc = set_text(&r->action_uri, h);
        } else if (eg_xml_is(h, EG_WSMAN_NS_ADDRESSING, "MessageID")) {
            rc = set_text(&r->message_id, h);
        } else if (eg_xml_is(h, EG_WSMAN_NS_ADDRESSING, "To")) {
            rc = set_text(&r->to, h);
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMAN, "ResourceURI")) {
            rc = set_text(&r->resource_uri, h);
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMV, "SessionId")) {
            rc = set_text(&r->session_id, h);
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMAN, "Locale")) {
            eg_freep(&r->locale);
            rc = lang_copy(h, &r->locale);
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMV, "DataLocale")) {
            eg_freep(&r->data_locale);
            rc = lang_copy(h, &r->data_locale);
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMAN, "MaxEnvelopeSize")) {
            char *t = node_text(h);
            int64_t v;
            if (!t)
                return EG_ENOMEM;
            if (eg_parse_int64(t, 1, EG_WSMAN_MAX_MAX_ENVELOPE, &v) < 0) {
                diag_set(diag, MX_WS_PERR_HEADER, t);
                eg_free(t);
                return EG_EPROTO;
            }
            eg_free(t);
            r->max_envelope_size = (uint32_t)v;
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMAN, "OperationTimeout")) {
            char *t = node_text(h);
            int64_t v;
            if (!t)
                return EG_ENOMEM;
            if (mx_ws_parse_duration(t, &v) < 0) {
                diag_set(diag, MX_WS_PERR_TIMEOUT, t);
                eg_free(t);
                return EG_EPROTO;
            }
            eg_free(t);
            r->operation_timeout_ms = v;
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMAN, "SelectorSet")) {
            for (xmlNode *s = h->children; s && rc == 0; s = s->next)
                if (eg_xml_is(s, EG_WSMAN_NS_WSMAN, "Selector"))
                    rc = add_pair(&r->selectors, &r->n_selectors, s, false);
        } else if (eg_xml_is(h, EG_WSMAN_NS_WSMAN, "OptionSet")) {
            for (xmlNode *s = h->children; s && rc == 0; s = s->next)
                if (eg_xml_is(s, EG_WSMAN_NS_WSMAN, "Option"))
                    rc = add_pair(&r->options, &r->n_options, s, true);
        }
    }
    if (rc == EG_ELIMIT)
        diag_set(diag, MX_WS_PERR_HEADER, "too many selectors or options");
    return rc;
}

static int parse_create(xmlNode *body, struct mx_ws_request *r, struct mx_ws_parse_diag *diag)
{
    xmlNode *shell = eg_xml_child(body, EG_WSMAN_NS_SHELL, "Shell");
    if (!shell)
        return 0; /* a Create of something else: the caller answers with a fault */
    r->has_shell = true;
    int rc;
    if ((rc = attr_copy(shell, "ShellId", &r->shell_id_requested)) < 0 ||
        (rc = attr_copy(shell, "Name", &r->shell_name)) < 0)
        return rc;
    for (xmlNode *c = shell->children; c; c = c->next) {
        if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "InputStreams")) {
            rc = set_text(&r->input_streams, c);
        } else if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "OutputStreams")) {
            rc = set_text(&r->output_streams, c);
        } else if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "IdleTimeOut")) {
            char *t = node_text(c);
            if (!t)
                return EG_ENOMEM;
            int64_t v;
            if (mx_ws_parse_duration(t, &v) < 0) {
                diag_set(diag, MX_WS_PERR_BODY, "rsp:IdleTimeOut is not a duration");
                eg_free(t);
                return EG_EPROTO;
            }
            eg_free(t);
            r->idle_timeout_ms = v;
        } else if (eg_xml_is(c, EG_WSMAN_NS_POWERSHELL, "creationXml")) {
            eg_freep(&r->creation_xml);
            rc = b64_text(c, &r->creation_xml, &r->creation_xml_len);
            if (rc == EG_EPARSE)
                diag_set(diag, MX_WS_PERR_BODY, "creationXml is not base64");
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Append decoded bytes to *buf. */
static int append_bytes(uint8_t **buf, size_t *len, const uint8_t *data, size_t n)
{
    uint8_t *nb = eg_realloc(*buf, *len + n + 1);
    if (!nb)
        return EG_ENOMEM;
    memcpy(nb + *len, data, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
    return 0;
}

static int parse_command(xmlNode *body, struct mx_ws_request *r, struct mx_ws_parse_diag *diag)
{
    xmlNode *cl = eg_xml_child(body, EG_WSMAN_NS_SHELL, "CommandLine");
    if (!cl) {
        diag_set(diag, MX_WS_PERR_BODY, "no rsp:CommandLine");
        return EG_EPROTO;
    }
    int rc = attr_copy(cl, "CommandId", &r->command_id);
    for (xmlNode *c = cl->children; c && rc == 0; c = c->next) {
        if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "Command")) {
            rc = set_text(&r->command, c);
        } else if (eg_xml_is(c, EG_WSMAN_NS_SHELL, "Arguments")) {
            uint8_t *d = NULL;
            size_t n = 0;
            rc = b64_text(c, &d, &n);
            if (rc == 0)
                rc = append_bytes(&r->arguments, &r->arguments_len, d, n);
            else if (rc == EG_EPARSE)
                diag_set(diag, MX_WS_PERR_BODY, "rsp:Arguments is not base64");
            eg_free(d);
        }
    }
    if (rc == 0 && !r->command && !(r->command = eg_strdup("")))
        rc = EG_ENOMEM;
    return rc;
}

static int parse_send(xmlNode *body, struct mx_ws_request *r, struct mx_ws_parse_diag *diag)
{
    xmlNode *send = eg_xml_child(body, EG_WSMAN_NS_SHELL, "Send");
    if (!send) {
        diag_set(diag, MX_WS_PERR_BODY, "no rsp:Send");
        return EG_EPROTO;
    }
    for (xmlNode *c = send->children; c; c = c->next) {
        if (!eg_xml_is(c, EG_WSMAN_NS_SHELL, "Stream"))
            continue;
        if (r->n_streams >= EG_MOCK_WS_MAX_STREAMS) {
            diag_set(diag, MX_WS_PERR_BODY, "too many streams");
            return EG_ELIMIT;
        }
        struct mx_ws_in_stream *na = eg_reallocarray(r->streams, r->n_streams + 1, sizeof *na);
        if (!na)
            return EG_ENOMEM;
        r->streams = na;
        struct mx_ws_in_stream *s = &na[r->n_streams];
        memset(s, 0, sizeof *s);
        char *end = NULL;
        int rc = attr_copy(c, "Name", &s->name);
        if (rc == 0)
            rc = attr_copy(c, "CommandId", &s->command_id);
        if (rc == 0)
            rc = attr_copy(c, "End", &end);
        if (rc == 0 && !s->name) {
            diag_set(diag, MX_WS_PERR_BODY, "rsp:Stream without Name");
            rc = EG_EPROTO;
        }
        if (rc == 0 && end && !xs_bool(end, &s->end)) {
            diag_set(diag, MX_WS_PERR_BODY, "rsp:Stream/@End is not a boolean");
            rc = EG_EPROTO;
        }
        if (rc == 0) {
            rc = b64_text(c, &s->data, &s->len);
            if (rc == EG_EPARSE)
                diag_set(diag, MX_WS_PERR_BODY, "rsp:Stream is not base64");
        }
        eg_free(end);
        if (rc) {
            eg_free(s->name);
            eg_free(s->command_id);
            eg_free(s->data);
            return rc;
        }
        r->n_streams++;
    }
    return 0;
}

static int parse_receive(xmlNode *body, struct mx_ws_request *r, struct mx_ws_parse_diag *diag)
{
    xmlNode *rcv = eg_xml_child(body, EG_WSMAN_NS_SHELL, "Receive");
    xmlNode *ds = eg_xml_child(rcv, EG_WSMAN_NS_SHELL, "DesiredStream");
    if (!rcv) {
        diag_set(diag, MX_WS_PERR_BODY, "no rsp:Receive");
        return EG_EPROTO;
    }
    if (!ds)
        return (r->desired_stream = eg_strdup("stdout")) ? 0 : EG_ENOMEM;
    int rc = attr_copy(ds, "CommandId", &r->command_id);
    if (rc == 0)
        rc = set_text(&r->desired_stream, ds);
    return rc;
}

static int parse_signal(xmlNode *body, struct mx_ws_request *r, struct mx_ws_parse_diag *diag)
{
    xmlNode *sig = eg_xml_child(body, EG_WSMAN_NS_SHELL, "Signal");
    xmlNode *code = eg_xml_child(sig, EG_WSMAN_NS_SHELL, "Code");
    if (!sig || !code) {
        diag_set(diag, MX_WS_PERR_BODY, "no rsp:Signal/rsp:Code");
        return EG_EPROTO;
    }
    int rc = attr_copy(sig, "CommandId", &r->command_id);
    if (rc == 0)
        rc = set_text(&r->signal_code, code);
    if (rc == 0 && !*r->signal_code) {
        diag_set(diag, MX_WS_PERR_BODY, "empty rsp:Code");
        rc = EG_EPROTO;
    }
    return rc;
}

int mx_ws_parse_request(const char *xml, size_t len, struct mx_ws_request **ret,
                        struct mx_ws_parse_diag *diag)
{
    xmlDocPtr doc = NULL;
    xmlNode *header = NULL;
    struct mx_ws_request *r = NULL;
    int rc;

    diag_set(diag, MX_WS_PERR_NONE, NULL);
    if (!xml || !ret)
        return EG_EINVAL;
    if ((rc = eg_xml_read(xml, len, EG_MOCK_WS_MAX_REQUEST_BYTES, &doc)) < 0) {
        diag_set(diag, MX_WS_PERR_XML, NULL);
        return rc;
    }
    if (!(r = eg_calloc(1, sizeof *r))) {
        rc = EG_ENOMEM;
        goto out;
    }
    r->operation_timeout_ms = -1;
    r->idle_timeout_ms = -1;
    xmlNode *root = xmlDocGetRootElement(doc);
    header = eg_xml_child(root, EG_WSMAN_NS_SOAP, "Header");
    xmlNode *body = eg_xml_child(root, EG_WSMAN_NS_SOAP, "Body");
    if (!eg_xml_is(root, EG_WSMAN_NS_SOAP, "Envelope") || !header || !body) {
        diag_set(diag, MX_WS_PERR_ENVELOPE, NULL);
        rc = EG_EPROTO;
        goto out;
    }
    if ((rc = parse_header(header, r, diag)) < 0)
        goto out;
    if (!r->action_uri || !*r->action_uri || !r->message_id || !*r->message_id) {
        diag_set(diag, MX_WS_PERR_HEADER, !r->action_uri ? "no wsa:Action" : "no wsa:MessageID");
        rc = EG_EPROTO;
        goto out;
    }
    r->action = action_from_uri(r->action_uri);
    switch (r->action) {
    case MX_WS_CREATE:
        rc = parse_create(body, r, diag);
        break;
    case MX_WS_COMMAND:
        rc = parse_command(body, r, diag);
        break;
    case MX_WS_SEND:
        rc = parse_send(body, r, diag);
        break;
    case MX_WS_RECEIVE:
        rc = parse_receive(body, r, diag);
        break;
    case MX_WS_SIGNAL:
        rc = parse_signal(body, r, diag);
        break;
    default:
        rc = 0;
        break;
    }
    if (rc == EG_EPARSE && diag && diag->kind == MX_WS_PERR_NONE)
        diag_set(diag, MX_WS_PERR_BODY, NULL);
out:
    if (rc < 0 && diag && header) {
        /* the MessageID, wherever it is in the header, for the fault's RelatesTo */
        for (xmlNode *h = header->children; h; h = h->next) {
            if (!eg_xml_is(h, EG_WSMAN_NS_ADDRESSING, "MessageID"))
                continue;
            char *t = node_text(h);
            if (t && strlen(t) < sizeof diag->message_id)
                snprintf(diag->message_id, sizeof diag->message_id, "%s", t);
            eg_free(t);
            break;
        }
    }
    xmlFreeDoc(doc);
    if (rc < 0) {
        if (diag && diag->kind == MX_WS_PERR_NONE)
            diag_set(diag, rc == EG_ENOMEM ? MX_WS_PERR_NONE : MX_WS_PERR_BODY, NULL);
        mx_ws_request_free(r);
        return rc;
    }
    *ret = r;
    return 0;
}

/* =========================================================================================== */
/* Building                                                                                     */
/* =========================================================================================== */

struct sbuf {
    char *p;
    size_t len, cap;
    int err;
};

static void sb_reserve(struct sbuf *b, size_t n)
{
    if (b->err)
        return;
    if (n > SIZE_MAX / 2 - b->len) {
        b->err = EG_ELIMIT;
        return;
    }
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 2048;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *np = eg_realloc(b->p, cap);
    if (!np) {
        b->err = EG_ENOMEM;
        return;
    }
    b->p = np;
    b->cap = cap;
}

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->err)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static void sb_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_addf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        if (!b->err)
            b->err = EG_EINVAL;
        return;
    }
    sb_addn(b, tmp, (size_t)n);
}

/* Length of the UTF-8 sequence at s (n bytes left) that is one XML 1.0 character; 0 if s does
 * not start with one. */
static size_t xml_char_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return (c >= 0x20 || c == 0x09 || c == 0x0A || c == 0x0D) ? 1 : 0;
    size_t l;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
        l = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        l = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        l = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < l)
        return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) || (l == 4 && cp < 0x10000))
        return 0; /* overlong */
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE || cp == 0xFFFF || cp > 0x10FFFF)
        return 0;
    return l;
}

/* Append s XML-escaped (attr: also '"'); EG_EINVAL for NULL or text that is not UTF-8 XML
 * characters. */
static void sb_esc(struct sbuf *b, const char *s, bool attr)
{
    if (b->err)
        return;
    if (!s) {
        b->err = EG_EINVAL;
        return;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, run = 0;
    while (i < n) {
        size_t l = xml_char_len(p + i, n - i);
        if (!l) {
            b->err = EG_EINVAL;
            return;
        }
        const char *rep = NULL;
        switch (p[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = attr ? "&quot;" : NULL;
            break;
        case '\r':
            rep = "&#xD;";
            break;
        case '\n':
            rep = attr ? "&#xA;" : NULL;
            break;
        case '\t':
            rep = attr ? "&#x9;" : NULL;
            break;
        default:
            break;
        }
        if (rep) {
            sb_addn(b, s + run, i - run);
            sb_add(b, rep);
            run = i + 1;
        }
        i += l;
    }
    sb_addn(b, s + run, n - run);
}

/* An element <tag>escaped text</tag>. */
static void sb_el(struct sbuf *b, const char *tag, const char *text)
{
    sb_addf(b, "<%s>", tag);
    sb_esc(b, text, false);
    sb_addf(b, "</%s>", tag);
}

static int sb_finish(struct sbuf *b, char **ret, size_t *ret_len)
{
    if (b->err) {
        int rc = b->err;
        eg_freep(&b->p);
        return rc;
    }
    if (!b->p) {
        sb_reserve(b, 0);
        if (b->err)
            return b->err;
        b->p[0] = '\0';
    }
    *ret = b->p;
    if (ret_len)
        *ret_len = b->len;
    b->p = NULL;
    return 0;
}

/* Namespace sets of the response envelopes (recorded order: s a x e n w rsp p). */
#define ENV_X   0x1u
#define ENV_EN  0x2u /* e and n: fault envelopes */
#define ENV_RSP 0x4u

static void envelope_open(struct sbuf *b, unsigned ns, const struct mx_ws_reply *r,
                          const char *action)
{
    char mid[EG_WSMAN_UUID_SIZE], aid[EG_WSMAN_UUID_SIZE];
    if (!r) {
        b->err = EG_EINVAL;
        return;
    }
    if (eg_wsman_uuid(aid) < 0 || (!r->message_id && eg_wsman_uuid(mid) < 0)) {
        b->err = EG_EIO;
        return;
    }
    sb_add(b, "<s:Envelope xml:lang=\"en-US\" xmlns:s=\"" EG_WSMAN_NS_SOAP
              "\" xmlns:a=\"" EG_WSMAN_NS_ADDRESSING "\"");
    if (ns & ENV_X)
        sb_add(b, " xmlns:x=\"" EG_WSMAN_NS_TRANSFER "\"");
    if (ns & ENV_EN)
        sb_add(b, " xmlns:e=\"" NS_EVENTING "\" xmlns:n=\"" NS_ENUMERATION "\"");
    sb_add(b, " xmlns:w=\"" EG_WSMAN_NS_WSMAN "\"");
    if (ns & ENV_RSP)
        sb_add(b, " xmlns:rsp=\"" EG_WSMAN_NS_SHELL "\"");
    sb_add(b, " xmlns:p=\"" EG_WSMAN_NS_WSMV "\"><s:Header><a:Action>");
    sb_add(b, action);
    sb_add(b, "</a:Action><a:MessageID>");
    if (r->message_id) {
        if (strncasecmp(r->message_id, "uuid:", 5) != 0)
            sb_add(b, "uuid:");
        sb_esc(b, r->message_id, false);
    } else {
        sb_add(b, "uuid:");
        sb_add(b, mid);
    }
    sb_add(b, "</a:MessageID><p:ActivityId>");
    sb_add(b, aid);
    sb_add(b, "</p:ActivityId><a:To>" ADDRESS_ANONYMOUS "</a:To>");
    if (r->relates_to) {
        sb_add(b, "<a:RelatesTo>");
        sb_esc(b, r->relates_to, false);
        sb_add(b, "</a:RelatesTo>");
    }
    sb_add(b, "</s:Header>");
}

static void shell_body(struct sbuf *b, const struct mx_ws_shell_info *sh, bool get)
{
    char d[64];
    if (!sh || !sh->shell_id || !sh->resource_uri) {
        b->err = EG_EINVAL;
        return;
    }
    const char *locale = sh->locale ? sh->locale : "en-US";
    sb_add(b, "<rsp:Shell xmlns:rsp=\"" EG_WSMAN_NS_SHELL "\">");
    sb_el(b, "rsp:ShellId", sh->shell_id);
    sb_el(b, "rsp:ResourceUri", sh->resource_uri);
    sb_el(b, "rsp:Owner", sh->owner ? sh->owner : "");
    sb_el(b, "rsp:ClientIP", sh->client_ip ? sh->client_ip : "");
    sb_addf(b, "<rsp:ProcessId>%ld</rsp:ProcessId>", sh->process_id);
    mx_ws_format_duration(sh->idle_timeout_ms, d, sizeof d);
    sb_el(b, "rsp:IdleTimeOut", d);
    sb_el(b, "rsp:InputStreams", sh->input_streams ? sh->input_streams : "stdin pr");
    sb_el(b, "rsp:OutputStreams", sh->output_streams ? sh->output_streams : "stdout");
    sb_add(b, "<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut>");
    sb_el(b, "rsp:Locale", locale);
    sb_el(b, "rsp:DataLocale", sh->data_locale ? sh->data_locale : locale);
    sb_add(b, "<rsp:CompressionMode>NoCompression</rsp:CompressionMode>"
              "<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>"
              "<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State>");
    format_dhms(sh->run_time_ms, d, sizeof d);
    sb_el(b, "rsp:ShellRunTime", d);
    format_dhms(sh->inactivity_ms, d, sizeof d);
    sb_el(b, "rsp:ShellInactivity", d);
    if (get) {
        sb_el(b, "rsp:MemoryUsed", sh->memory_used ? sh->memory_used : "0MB");
        sb_add(b, "<rsp:ChildProcesses>0</rsp:ChildProcesses>");
    }
    sb_add(b, "</rsp:Shell>");
}

int mx_ws_build_create_response(const struct mx_ws_reply *r, const struct mx_ws_shell_info *sh,
                                char **ret, size_t *ret_len)
{
    struct sbuf b = {0};
    envelope_open(&b, ENV_X | ENV_RSP, r, ACTION_TRANSFER "CreateResponse");
    sb_add(&b, "<s:Body><x:ResourceCreated><a:Address>");
    sb_esc(&b, sh && sh->address ? sh->address : "", false);
    sb_add(&b, "</a:Address><a:ReferenceParameters><w:ResourceURI>");
    sb_esc(&b, sh ? sh->resource_uri : NULL, false);
    sb_add(&b, "</w:ResourceURI><w:SelectorSet><w:Selector Name=\"ShellId\">");
    sb_esc(&b, sh ? sh->shell_id : NULL, false);
    sb_add(&b, "</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>");
    shell_body(&b, sh, false);
    sb_add(&b, "</s:Body></s:Envelope>");
    return sb_finish(&b, ret, ret_len);
}

int mx_ws_build_get_shell_response(const struct mx_ws_reply *r, const struct mx_ws_shell_info *sh,
                                   char **ret, size_t *ret_len)
{
    struct sbuf b = {0};
    envelope_open(&b, ENV_X, r, ACTION_TRANSFER "GetResponse");
    sb_add(&b, "<s:Body>");
    shell_body(&b, sh, true);
    sb_add(&b, "</s:Body></s:Envelope>");
    return sb_finish(&b, ret, ret_len);
}

int mx_ws_build_get_config_response(const struct mx_ws_reply *r, uint32_t max_envelope_kb,
                                    uint32_t max_timeout_ms, char **ret, size_t *ret_len)
{
    struct sbuf b = {0};
    envelope_open(&b, ENV_X, r, ACTION_TRANSFER "GetResponse");
    sb_add(&b, "<s:Body><cfg:Config xmlns:cfg=\"" EG_WSMAN_NS_CONFIG "\">");
    sb_addf(&b, "<cfg:MaxEnvelopeSizekb>%u</cfg:MaxEnvelopeSizekb>", (unsigned)max_envelope_kb);
    sb_addf(&b, "<cfg:MaxTimeoutms>%u</cfg:MaxTimeoutms>", (unsigned)max_timeout_ms);
    sb_add(&b, "</cfg:Config></s:Body></s:Envelope>");
    return sb_finish(&b, ret, ret_len);
}

int mx_ws_build_command_response(const struct mx_ws_reply *r, const char *command_id, char **ret,
                                 size_t *ret_len)
{
    struct sbuf b = {0};
    if (!command_id || !*command_id)
        return EG_EINVAL;
    envelope_open(&b, ENV_X | ENV_RSP, r, ACTION_SHELL "CommandResponse");
    sb_add(&b, "<s:Body><rsp:CommandResponse>");
    sb_el(&b, "rsp:CommandId", command_id);
    sb_add(&b, "</rsp:CommandResponse></s:Body></s:Envelope>");
    return sb_finish(&b, ret, ret_len);
}

int mx_ws_build_empty_response(const struct mx_ws_reply *r, enum mx_ws_action action, char **ret,
                               size_t *ret_len)
{
    struct sbuf b = {0};
    switch (action) {
    case MX_WS_SEND:
        envelope_open(&b, ENV_X | ENV_RSP, r, ACTION_SHELL "SendResponse");
        sb_add(&b, "<s:Body><rsp:SendResponse/></s:Body></s:Envelope>");
        break;
    case MX_WS_SIGNAL:
        envelope_open(&b, ENV_X | ENV_RSP, r, ACTION_SHELL "SignalResponse");
        sb_add(&b, "<s:Body><rsp:SignalResponse/></s:Body></s:Envelope>");
        break;
    case MX_WS_DELETE:
        envelope_open(&b, 0, r, ACTION_TRANSFER "DeleteResponse");
        sb_add(&b, "<s:Body></s:Body></s:Envelope>");
        break;
    default:
        return EG_EINVAL;
    }
    return sb_finish(&b, ret, ret_len);
}

static bool b64_chars(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '+' || *s == '/' || *s == '='))
            return false;
    return true;
}

int mx_ws_build_receive_response(const struct mx_ws_reply *r,
                                 const struct mx_ws_out_stream *streams, size_t n,
                                 const struct mx_ws_command_state *state, char **ret,
                                 size_t *ret_len)
{
    struct sbuf b = {0};
    if (n && !streams)
        return EG_EINVAL;
    envelope_open(&b, ENV_RSP, r, ACTION_SHELL "ReceiveResponse");
    sb_add(&b, "<s:Body><rsp:ReceiveResponse>");
    for (size_t i = 0; i < n; i++) {
        if (!streams[i].b64 || !b64_chars(streams[i].b64)) {
            b.err = EG_EINVAL;
            break;
        }
        sb_add(&b, "<rsp:Stream Name=\"");
        sb_esc(&b, streams[i].name ? streams[i].name : "stdout", true);
        sb_add(&b, "\"");
        if (streams[i].command_id) {
            sb_add(&b, " CommandId=\"");
            sb_esc(&b, streams[i].command_id, true);
            sb_add(&b, "\"");
        }
        sb_add(&b, ">");
        sb_add(&b, streams[i].b64);
        sb_add(&b, "</rsp:Stream>");
    }
    if (state) {
        if (!state->command_id || !state->state_uri) {
            b.err = b.err ? b.err : EG_EINVAL;
        } else {
            sb_add(&b, "<rsp:CommandState CommandId=\"");
            sb_esc(&b, state->command_id, true);
            sb_add(&b, "\" State=\"");
            sb_esc(&b, state->state_uri, true);
            sb_add(&b, "\">");
            if (state->has_exit_code)
                sb_addf(&b, "<rsp:ExitCode>%lld</rsp:ExitCode>", (long long)state->exit_code);
            sb_add(&b, "</rsp:CommandState>");
        }
    }
    sb_add(&b, "</rsp:ReceiveResponse></s:Body></s:Envelope>");
    return sb_finish(&b, ret, ret_len);
}

size_t mx_ws_receive_overhead(const char *relates_to, const char *command_id)
{
    struct mx_ws_reply r = {.relates_to = relates_to ? relates_to : "",
                            .message_id = "uuid:00000000-0000-0000-0000-000000000000"};
    struct mx_ws_command_state st = {.command_id = command_id,
                                     .state_uri = EG_WSMAN_STATE_DONE,
                                     .has_exit_code = true,
                                     .exit_code = 0};
    char *xml = NULL;
    size_t len = 0;
    if (mx_ws_build_receive_response(&r, NULL, 0, command_id ? &st : NULL, &xml, &len) < 0)
        return 4096;
    eg_free(xml);
    return len + 64; /* ExitCode digits, slack */
}

size_t mx_ws_stream_overhead(const char *command_id)
{
    return strlen("<rsp:Stream Name=\"stdout\" CommandId=\"\"></rsp:Stream>") +
           (command_id ? strlen(command_id) * 6 : 0); /* escaping could at most sextuple it */
}

/* ---- faults ---- */

void mx_ws_fault_timed_out(struct mx_ws_fault *f)
{
    static const char text[] = "The WS-Management service cannot complete the operation within "
                               "the time specified in OperationTimeout.  ";
    *f = (struct mx_ws_fault){.sender = false,
                              .subcode = "w:TimedOut",
                              .reason = text,
                              .code = MX_WS_CODE_TIMED_OUT,
                              .message = text};
}

void mx_ws_fault_invalid_selectors(struct mx_ws_fault *f)
{
    static const char text[] = "The WS-Management service cannot process the request because the "
                               "request contained invalid selectors for the resource. ";
    *f = (struct mx_ws_fault){.sender = true,
                              .subcode = "w:InvalidSelectors",
                              .reason = text,
                              .detail_uri = DETAIL_UNEXPECTED,
                              .code = MX_WS_CODE_INVALID_SELECTORS,
                              .message = text,
                              .provider_fault = true};
}

void mx_ws_fault_resource_uri(struct mx_ws_fault *f, const char *uri, char *buf, size_t size)
{
    snprintf(buf, size,
             "The WS-Management service cannot process the request. The resource URI (%s) was "
             "not found in the WS-Management catalog. The catalog contains the metadata that "
             "describes resources, or logical endpoints. ",
             uri ? uri : "");
    *f = (struct mx_ws_fault){.sender = true,
                              .subcode = "a:DestinationUnreachable",
                              .reason = buf,
                              .detail_uri = DETAIL_INVALID_URI,
                              .code = MX_WS_CODE_RESOURCE_URI,
                              .message = buf};
}

void mx_ws_fault_for_parse(struct mx_ws_fault *f, const struct mx_ws_parse_diag *d, char *buf,
                           size_t size)
{
    enum mx_ws_parse_error kind = d ? d->kind : MX_WS_PERR_XML;
    const char *detail = d ? d->detail : "";
    *f = (struct mx_ws_fault){.sender = true, .reason = buf, .message = buf};
    switch (kind) {
    case MX_WS_PERR_TIMEOUT:
        snprintf(buf, size, "The XML contains an invalid timeout field in the SOAP header: %s. ",
                 detail);
        f->subcode = "a:InvalidMessageInformationHeader";
        f->code = MX_WS_CODE_INVALID_HEADER;
        break;
    case MX_WS_PERR_HEADER:
        snprintf(buf, size,
                 "The WS-Management service cannot process the request because the header of "
                 "the SOAP message is invalid%s%s. ",
                 *detail ? ": " : "", detail);
        f->subcode = "a:InvalidMessageInformationHeader";
        f->code = MX_WS_CODE_INVALID_HEADER;
        break;
    case MX_WS_PERR_BODY:
        snprintf(buf, size,
                 "The WS-Management service cannot process the request because the SOAP body "
                 "is invalid for the action%s%s. ",
                 *detail ? ": " : "", detail);
        f->subcode = "w:SchemaValidationError";
        f->code = MX_WS_CODE_INVALID_BODY;
        break;
    case MX_WS_PERR_ENVELOPE:
        snprintf(buf, size,
                 "The WS-Management service cannot process the request because the message is "
                 "not a SOAP 1.2 envelope with a header and a body. ");
        f->subcode = "w:SchemaValidationError";
        f->code = MX_WS_CODE_SCHEMA;
        break;
    default:
        snprintf(buf, size,
                 "The WS-Management service cannot process the request because the XML is "
                 "invalid. ");
        f->subcode = "w:SchemaValidationError";
        f->code = MX_WS_CODE_INVALID_XML;
        break;
    }
}

/* A subcode QName must use a prefix the fault envelope declares. */
static bool subcode_ok(const char *q)
{
    static const char *const prefixes[] = {"s:", "a:", "x:", "e:", "n:", "w:", "p:"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        if (strncmp(q, prefixes[i], 2) == 0) {
            const char *l = q + 2;
            if (!*l)
                return false;
            for (; *l; l++)
                if (!((*l >= 'A' && *l <= 'Z') || (*l >= 'a' && *l <= 'z') ||
                      (*l >= '0' && *l <= '9') || *l == '_' || *l == '-' || *l == '.'))
                    return false;
            return true;
        }
    }
    return false;
}

static void wsman_fault_el(struct sbuf *b, const struct mx_ws_fault *f, const char *machine,
                           bool nest)
{
    sb_add(b, "<f:WSManFault xmlns:f=\"" EG_WSMAN_NS_FAULT "\"");
    sb_addf(b, " Code=\"%lu\" Machine=\"", (unsigned long)f->code);
    sb_esc(b, machine, true);
    sb_add(b, "\"><f:Message>");
    if (nest) {
        sb_add(b, "<f:ProviderFault provider=\"Shell provider\" "
                  "path=\"%systemroot%\\system32\\WsmSvc.dll\">");
        wsman_fault_el(b, f, machine, false);
        sb_add(b, "</f:ProviderFault>");
    } else {
        sb_esc(b, f->message ? f->message : f->reason, false);
    }
    sb_add(b, "</f:Message></f:WSManFault>");
}

int mx_ws_build_fault(const struct mx_ws_reply *r, const struct mx_ws_fault *f, char **ret,
                      size_t *ret_len)
{
    struct sbuf b = {0};
    if (!f || !f->reason || (f->subcode && !subcode_ok(f->subcode)))
        return EG_EINVAL;
    const char *machine = r && r->machine ? r->machine : "127.0.0.1";
    bool addressing = f->subcode && strncmp(f->subcode, "a:", 2) == 0;
    envelope_open(&b, ENV_X | ENV_EN, r, addressing ? ACTION_ADDR_FAULT : ACTION_FAULT);
    sb_add(&b, "<s:Body><s:Fault><s:Code><s:Value>");
    sb_add(&b, f->sender ? "s:Sender" : "s:Receiver");
    sb_add(&b, "</s:Value>");
    if (f->subcode) {
        sb_add(&b, "<s:Subcode><s:Value>");
        sb_add(&b, f->subcode);
        sb_add(&b, "</s:Value></s:Subcode>");
    }
    sb_add(&b, "</s:Code><s:Reason><s:Text xml:lang=\"en-US\">");
    sb_esc(&b, f->reason, false);
    sb_add(&b, "</s:Text></s:Reason><s:Detail>");
    if (f->detail_uri)
        sb_el(&b, "w:FaultDetail", f->detail_uri);
    wsman_fault_el(&b, f, machine, f->provider_fault);
    sb_add(&b, "</s:Detail></s:Fault></s:Body></s:Envelope>");
    return sb_finish(&b, ret, ret_len);
}
