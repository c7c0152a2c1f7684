/* wsman_envelope.c - building WS-Man request envelopes (see wsman.h).
 *
 * String building with XML escaping into one growing buffer. The layout is the one pypsrp sends
 * and Windows accepts (psrp-wire.md section 3): namespace declarations on s:Envelope, header
 * elements in a fixed order, empty elements written "<x />", attributes in alphabetical order.
 * The recorded requests of shared/vectors are reproduced byte for byte by tests/unit/test_wsman.c.
 */
#include "transport/wsman.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/alloc.h"

#define ACTION_TRANSFER "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
#define ACTION_SHELL    EG_WSMAN_NS_SHELL "/"
#define ANONYMOUS       EG_WSMAN_NS_ADDRESSING "/role/anonymous"

/* ---- output buffer ---- */

struct sb {
    char *p;
    size_t len, cap;
    int err; /* sticky: first failure */
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
    if (b->err)
        return;
    if (n >= b->cap - b->len || !b->p) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len <= n) {
            if (cap > SIZE_MAX / 2) {
                b->err = EG_ELIMIT;
                return;
            }
            cap *= 2;
        }
        char *np = eg_realloc(b->p, cap);
        if (!np) {
            b->err = EG_ENOMEM;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Escaped character data (attr: also '"' and the white space that attribute-value
 * normalisation would turn into spaces). */
static void sb_escaped(struct sb *b, const char *s, bool attr)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
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
        case '\t':
            rep = attr ? "&#9;" : NULL;
            break;
        case '\n':
            rep = attr ? "&#10;" : NULL;
            break;
        case '\r':
            rep = "&#13;";
            break; /* a raw CR would be normalised away by the reader */
        default:
            break;
        }
        if (rep) {
            sb_put(b, run, (size_t)(s - run));
            sb_puts(b, rep);
            run = s + 1;
        }
    }
    sb_put(b, run, (size_t)(s - run));
}

static void sb_text(struct sb *b, const char *s)
{
    sb_escaped(b, s, false);
}

static void sb_attr(struct sb *b, const char *s)
{
    sb_escaped(b, s, true);
}

/* ---- input checks ---- */

/* True if s is UTF-8 (shortest form, no surrogates, at most U+10FFFF) made only of XML 1.0
 * characters: TAB, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF. */
static bool xml_string_ok(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return false;
            s++;
            continue;
        }
        unsigned n, cp, min;
        if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false; /* also catches the terminating NUL */
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE ||
            cp == 0xFFFF)
            return false;
        s += n + 1;
    }
    return true;
}

/* A required, non-empty text value. */
static bool required_ok(const char *s)
{
    return s && *s && xml_string_ok(s);
}

/* Base64 alphabet only (the caller encoded it; this catches mix-ups, not every bad text). */
static bool b64_ok(const char *s, bool allow_empty)
{
    if (!s || (!*s && !allow_empty))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '='))
            return false;
    }
    return true;
}

/* s without a leading "uuid:" (any case). */
static const char *strip_uuid(const char *s)
{
    return strncasecmp(s, "uuid:", 5) == 0 ? s + 5 : s;
}

/* "PT20S" or "PT20.500S". */
static void format_duration(uint32_t ms, char *out, size_t size)
{
    if (ms % 1000 == 0)
        snprintf(out, size, "PT%uS", ms / 1000);
    else
        snprintf(out, size, "PT%u.%03uS", ms / 1000, ms % 1000);
}

/* ---- GUIDs ---- */

static int random_bytes(uint8_t *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(out + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    if (got == n)
        return 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return EG_EIO;
    while (got < n) {
        ssize_t r = read(fd, out + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            close(fd);
            return EG_EIO;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

int eg_wsman_uuid(char out[EG_WSMAN_UUID_SIZE])
{
    uint8_t b[16];
    int r = random_bytes(b, sizeof b);
    if (r)
        return r;
    b[6] = (uint8_t)((b[6] & 0x0F) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    snprintf(out, EG_WSMAN_UUID_SIZE,
             "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

/* ---- the common part ---- */

struct option {
    const char *name;
    const char *value;
    bool must_comply;
};

struct header {
    const char *action;
    const char *resource_uri;     /* NULL = t->resource_uri */
    const char *shell_id;         /* NULL = no SelectorSet */
    const struct option *options; /* n_options entries */
    size_t n_options;
    bool rsp; /* body uses the rsp prefix: declare it */
};

/* Check the target and start the envelope: everything up to and including "<s:Body>". */
static int begin(const struct eg_wsman_target *t, const struct header *h, struct sb *b,
                 char message_id[EG_WSMAN_MESSAGE_ID_SIZE])
{
    char uuid[EG_WSMAN_UUID_SIZE];
    char timeout[32];
    const char *resource_uri = h->resource_uri ? h->resource_uri : (t ? t->resource_uri : NULL);

    if (!t || !required_ok(t->to) || !required_ok(resource_uri))
        return EG_EINVAL;
    const char *locale = t->locale ? t->locale : "en-US";
    const char *data_locale = t->data_locale ? t->data_locale : locale;
    if (!required_ok(locale) || !required_ok(data_locale))
        return EG_EINVAL;
    if (t->session_id && !required_ok(strip_uuid(t->session_id)))
        return EG_EINVAL;
    uint32_t envelope = t->max_envelope_size ? t->max_envelope_size : EG_WSMAN_DEFAULT_MAX_ENVELOPE;
    uint32_t op_timeout =
        t->operation_timeout_ms ? t->operation_timeout_ms : EG_WSMAN_DEFAULT_OPERATION_TIMEOUT_MS;
    if (envelope > EG_WSMAN_MAX_MAX_ENVELOPE || op_timeout > EG_WSMAN_MAX_OPERATION_TIMEOUT_MS)
        return EG_EINVAL;
    if (h->shell_id && !required_ok(h->shell_id))
        return EG_EINVAL;

    const char *mid;
    if (t->message_id) {
        mid = strip_uuid(t->message_id);
        if (!required_ok(mid) || strlen(mid) >= EG_WSMAN_UUID_SIZE)
            return EG_EINVAL;
    } else {
        int r = eg_wsman_uuid(uuid);
        if (r)
            return r;
        mid = uuid;
    }
    snprintf(message_id, EG_WSMAN_MESSAGE_ID_SIZE, "uuid:%s", mid);
    format_duration(op_timeout, timeout, sizeof timeout);

    sb_puts(b, "<s:Envelope");
    if (h->rsp)
        sb_puts(b, " xmlns:rsp=\"" EG_WSMAN_NS_SHELL "\"");
    sb_puts(b, " xmlns:s=\"" EG_WSMAN_NS_SOAP "\""
               " xmlns:wsa=\"" EG_WSMAN_NS_ADDRESSING "\""
               " xmlns:wsman=\"" EG_WSMAN_NS_WSMAN "\""
               " xmlns:wsmv=\"" EG_WSMAN_NS_WSMV "\">"
               "<s:Header><wsa:Action s:mustUnderstand=\"true\">");
    sb_text(b, h->action);
    sb_puts(b, "</wsa:Action><wsmv:DataLocale s:mustUnderstand=\"false\" xml:lang=\"");
    sb_attr(b, data_locale);
    sb_puts(b, "\" /><wsman:Locale s:mustUnderstand=\"false\" xml:lang=\"");
    sb_attr(b, locale);
    char num[16];
    snprintf(num, sizeof num, "%u", envelope);
    sb_puts(b, "\" /><wsman:MaxEnvelopeSize s:mustUnderstand=\"true\">");
    sb_puts(b, num);
    sb_puts(b, "</wsman:MaxEnvelopeSize><wsa:MessageID>");
    sb_text(b, message_id);
    sb_puts(b, "</wsa:MessageID><wsman:OperationTimeout>");
    sb_puts(b, timeout);
    sb_puts(
        b, "</wsman:OperationTimeout><wsa:ReplyTo><wsa:Address s:mustUnderstand=\"true\">" ANONYMOUS
           "</wsa:Address></wsa:ReplyTo><wsman:ResourceURI s:mustUnderstand=\"true\">");
    sb_text(b, resource_uri);
    sb_puts(b, "</wsman:ResourceURI>");
    if (t->session_id) {
        sb_puts(b, "<wsmv:SessionId s:mustUnderstand=\"false\">uuid:");
        sb_text(b, strip_uuid(t->session_id));
        sb_puts(b, "</wsmv:SessionId>");
    }
    sb_puts(b, "<wsa:To>");
    sb_text(b, t->to);
    sb_puts(b, "</wsa:To>");
    if (h->n_options) {
        sb_puts(b, "<wsman:OptionSet s:mustUnderstand=\"true\">");
        for (size_t i = 0; i < h->n_options; i++) {
            sb_puts(b, "<wsman:Option ");
            if (h->options[i].must_comply)
                sb_puts(b, "MustComply=\"true\" ");
            sb_puts(b, "Name=\"");
            sb_attr(b, h->options[i].name);
            sb_puts(b, "\">");
            sb_text(b, h->options[i].value);
            sb_puts(b, "</wsman:Option>");
        }
        sb_puts(b, "</wsman:OptionSet>");
    }
    if (h->shell_id) {
        sb_puts(b, "<wsman:SelectorSet><wsman:Selector Name=\"ShellId\">");
        sb_text(b, h->shell_id);
        sb_puts(b, "</wsman:Selector></wsman:SelectorSet>");
    }
    sb_puts(b, "</s:Header>");
    return 0;
}

/* Hand the finished buffer over to *ret, or free it on error. */
static int finish(struct sb *b, const char message_id[EG_WSMAN_MESSAGE_ID_SIZE],
                  struct eg_wsman_request *ret)
{
    if (b->err) {
        int r = b->err;
        eg_free(b->p);
        return r;
    }
    ret->xml = b->p;
    ret->len = b->len;
    memcpy(ret->message_id, message_id, EG_WSMAN_MESSAGE_ID_SIZE);
    return 0;
}

void eg_wsman_request_clear(struct eg_wsman_request *r)
{
    if (!r)
        return;
    eg_free(r->xml);
    memset(r, 0, sizeof *r);
}

/* ---- the operations ---- */

int eg_wsman_build_create(const struct eg_wsman_target *t, const struct eg_wsman_create_opts *o,
                          struct eg_wsman_request *ret)
{
    struct sb b = {0};
    char mid[EG_WSMAN_MESSAGE_ID_SIZE];
    char idle[32];

    if (!o || !ret || !b64_ok(o->creation_xml_b64, false))
        return EG_EINVAL;
    if (o->shell_id && !required_ok(o->shell_id))
        return EG_EINVAL;
    const char *version = o->protocol_version ? o->protocol_version : "2.3";
    if (!required_ok(version))
        return EG_EINVAL;
    if (o->idle_timeout_ms > EG_WSMAN_MAX_OPERATION_TIMEOUT_MS)
        return EG_EINVAL;

    const struct option opts[] = {{"protocolversion", version, true}};
    const struct header h = {
        .action = ACTION_TRANSFER "Create", .options = opts, .n_options = 1, .rsp = true};
    int r = begin(t, &h, &b, mid);
    if (r)
        return r;
    sb_puts(&b, "<s:Body><rsp:Shell");
    if (o->shell_id) {
        sb_puts(&b, " ShellId=\"");
        sb_attr(&b, o->shell_id);
        sb_puts(&b, "\"");
    }
    sb_puts(&b, ">");
    /* MS-WSMV ShellType order: IdleTimeOut before the stream lists (as Windows sends it). */
    if (o->idle_timeout_ms) {
        format_duration(o->idle_timeout_ms, idle, sizeof idle);
        sb_puts(&b, "<rsp:IdleTimeOut>");
        sb_puts(&b, idle);
        sb_puts(&b, "</rsp:IdleTimeOut>");
    }
    sb_puts(&b, "<rsp:InputStreams>stdin pr</rsp:InputStreams>"
                "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
                "<creationXml xmlns=\"" EG_WSMAN_NS_POWERSHELL "\">");
    sb_puts(&b, o->creation_xml_b64);
    sb_puts(&b, "</creationXml></rsp:Shell></s:Body></s:Envelope>");
    return finish(&b, mid, ret);
}

int eg_wsman_build_receive(const struct eg_wsman_target *t, const char *shell_id,
                           const char *command_id, struct eg_wsman_request *ret)
{
    struct sb b = {0};
    char mid[EG_WSMAN_MESSAGE_ID_SIZE];

    if (!ret || !required_ok(shell_id) || (command_id && !required_ok(command_id)))
        return EG_EINVAL;
    const struct option opts[] = {{"WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True", false}};
    const struct header h = {.action = ACTION_SHELL "Receive",
                             .shell_id = shell_id,
                             .options = opts,
                             .n_options = 1,
                             .rsp = true};
    int r = begin(t, &h, &b, mid);
    if (r)
        return r;
    sb_puts(&b, "<s:Body><rsp:Receive><rsp:DesiredStream");
    if (command_id) {
        sb_puts(&b, " CommandId=\"");
        sb_attr(&b, command_id);
        sb_puts(&b, "\"");
    }
    sb_puts(&b, ">stdout</rsp:DesiredStream></rsp:Receive></s:Body></s:Envelope>");
    return finish(&b, mid, ret);
}

int eg_wsman_build_command(const struct eg_wsman_target *t, const char *shell_id,
                           const char *command_id, const char *arguments_b64,
                           struct eg_wsman_request *ret)
{
    struct sb b = {0};
    char mid[EG_WSMAN_MESSAGE_ID_SIZE];

    if (!ret || !required_ok(shell_id) || !required_ok(command_id) || !b64_ok(arguments_b64, false))
        return EG_EINVAL;
    const struct option opts[] = {{"WINRS_SKIP_CMD_SHELL", "False", false}};
    const struct header h = {.action = ACTION_SHELL "Command",
                             .shell_id = shell_id,
                             .options = opts,
                             .n_options = 1,
                             .rsp = true};
    int r = begin(t, &h, &b, mid);
    if (r)
        return r;
    sb_puts(&b, "<s:Body><rsp:CommandLine CommandId=\"");
    sb_attr(&b, command_id);
    sb_puts(&b, "\"><rsp:Command /><rsp:Arguments>");
    sb_puts(&b, arguments_b64);
    sb_puts(&b, "</rsp:Arguments></rsp:CommandLine></s:Body></s:Envelope>");
    return finish(&b, mid, ret);
}

int eg_wsman_build_send(const struct eg_wsman_target *t, const char *shell_id,
                        const char *command_id, const char *stream, const char *data_b64, bool end,
                        struct eg_wsman_request *ret)
{
    struct sb b = {0};
    char mid[EG_WSMAN_MESSAGE_ID_SIZE];

    if (!ret || !required_ok(shell_id) || (command_id && !required_ok(command_id)) ||
        !required_ok(stream) || !b64_ok(data_b64, true))
        return EG_EINVAL;
    const struct header h = {.action = ACTION_SHELL "Send", .shell_id = shell_id, .rsp = true};
    int r = begin(t, &h, &b, mid);
    if (r)
        return r;
    sb_puts(&b, "<s:Body><rsp:Send><rsp:Stream");
    if (command_id) {
        sb_puts(&b, " CommandId=\"");
        sb_attr(&b, command_id);
        sb_puts(&b, "\"");
    }
    if (end)
        sb_puts(&b, " End=\"true\"");
    sb_puts(&b, " Name=\"");
    sb_attr(&b, stream);
    sb_puts(&b, "\">");
    sb_puts(&b, data_b64);
    sb_puts(&b, "</rsp:Stream></rsp:Send></s:Body></s:Envelope>");
    return finish(&b, mid, ret);
}

int eg_wsman_build_signal(const struct eg_wsman_target *t, const char *shell_id,
                          const char *command_id, const char *code, struct eg_wsman_request *ret)
{
    struct sb b = {0};
    char mid[EG_WSMAN_MESSAGE_ID_SIZE];

    if (!ret || !required_ok(shell_id) || !required_ok(command_id) || !required_ok(code))
        return EG_EINVAL;
    const struct header h = {.action = ACTION_SHELL "Signal", .shell_id = shell_id, .rsp = true};
    int r = begin(t, &h, &b, mid);
    if (r)
        return r;
    sb_puts(&b, "<s:Body><rsp:Signal CommandId=\"");
    sb_attr(&b, command_id);
    sb_puts(&b, "\"><rsp:Code>");
    sb_text(&b, code);
    sb_puts(&b, "</rsp:Code></rsp:Signal></s:Body></s:Envelope>");
    return finish(&b, mid, ret);
}

/* Delete and both Gets: an empty body. */
static int build_empty(const struct eg_wsman_target *t, const struct header *h,
                       struct eg_wsman_request *ret)
{
    struct sb b = {0};
    char mid[EG_WSMAN_MESSAGE_ID_SIZE];

    if (!ret)
        return EG_EINVAL;
    int r = begin(t, h, &b, mid);
    if (r)
        return r;
    sb_puts(&b, "<s:Body /></s:Envelope>");
    return finish(&b, mid, ret);
}

int eg_wsman_build_delete(const struct eg_wsman_target *t, const char *shell_id,
                          struct eg_wsman_request *ret)
{
    if (!required_ok(shell_id))
        return EG_EINVAL;
    const struct header h = {.action = ACTION_TRANSFER "Delete", .shell_id = shell_id};
    return build_empty(t, &h, ret);
}

int eg_wsman_build_get_shell(const struct eg_wsman_target *t, const char *shell_id,
                             struct eg_wsman_request *ret)
{
    if (!required_ok(shell_id))
        return EG_EINVAL;
    const struct header h = {
        .action = ACTION_TRANSFER "Get", .resource_uri = EG_WSMAN_URI_SHELL, .shell_id = shell_id};
    return build_empty(t, &h, ret);
}

int eg_wsman_build_get_config(const struct eg_wsman_target *t, struct eg_wsman_request *ret)
{
    const struct header h = {.action = ACTION_TRANSFER "Get", .resource_uri = EG_WSMAN_URI_CONFIG};
    return build_empty(t, &h, ret);
}
