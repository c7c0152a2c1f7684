/* command.c - the console's command model: strict validation of every command type and field,
 * request-body parsing (single command or batch), and the canonical JSON form that the journal
 * stores and idempotency compares.
 *
 * Nothing here is ever turned into script text, but every string that ends up as a cmdlet
 * parameter is still held to a narrow character set so that a value such as
 * "x'; Remove-Mailbox -Identity ceo" is refused at the door (400) instead of travelling on.
 */
#include "agent/command.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/json.h"
#include "common/limits.h"

/* RFC 5321 4.5.3.1.3: a path is at most 256 octets including the angle brackets. */
#define MAX_ADDRESS_LEN (EG_MAX_MAILBOX_LEN - 2)

/* ---- types ---------------------------------------------------------------------------------- */

static const char *const type_names[EG_CMD__COUNT] = {
    [EG_CMD_DEVICE_ALLOW] = "device.allow",
    [EG_CMD_DEVICE_BLOCK] = "device.block",
    [EG_CMD_DEVICE_UNLIST] = "device.unlist",
    [EG_CMD_DEVICE_WIPE] = "device.wipe",
    [EG_CMD_DEVICE_WIPE_CANCEL] = "device.wipe_cancel",
    [EG_CMD_DEVICE_REMOVE] = "device.remove",
    [EG_CMD_MAILBOX_SET] = "mailbox.set",
    [EG_CMD_MAILBOX_SET_DEVICES] = "mailbox.set_devices",
    [EG_CMD_ORG_SET_DEFAULT_ACCESS] = "org.set_default_access",
    [EG_CMD_INVENTORY_SYNC] = "inventory.sync",
};

const char *eg_cmd_type_name(enum eg_cmd_type t)
{
    if ((unsigned)t >= EG_CMD__COUNT)
        return "?";
    return type_names[t];
}

int eg_cmd_type_parse(const char *s, enum eg_cmd_type *ret)
{
    if (!s)
        return EG_EINVAL;
    for (int i = 0; i < EG_CMD__COUNT; i++)
        if (strcmp(s, type_names[i]) == 0) {
            *ret = (enum eg_cmd_type)i;
            return 0;
        }
    return EG_EINVAL;
}

bool eg_cmd_type_is_list_edit(enum eg_cmd_type t)
{
    return t == EG_CMD_DEVICE_ALLOW || t == EG_CMD_DEVICE_BLOCK || t == EG_CMD_DEVICE_UNLIST ||
           t == EG_CMD_MAILBOX_SET_DEVICES;
}

/* ---- field validators ----------------------------------------------------------------------- */

static bool is_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool eg_valid_command_id(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= EG_MAX_ID_LEN)
            return false;
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return n > 0;
}

/* RFC 5321 atext minus what PowerShell gives a meaning to: quotes, backtick, $ ; | & ( ) < > { }.
 * What remains: letters, digits and ! # % * + - / = ? ^ _ ~ */
static bool is_safe_atext(unsigned char c)
{
    return is_alnum(c) || (c != '\0' && strchr("!#%*+-/=?^_~", c) != NULL);
}

/* Dot-atom of safe atext: no leading, trailing or doubled dot. */
static bool valid_local_part(const char *s, size_t n)
{
    if (n == 0 || n > EG_MAX_LOCALPART_LEN || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (s[i + 1] == '.')
                return false;
            continue;
        }
        if (!is_safe_atext(c))
            return false;
    }
    return true;
}

/* Labels of letters, digits and hyphens, 1..63 each, no hyphen at either end, no empty label
 * (so no leading, trailing or doubled dot). A single label is allowed (UPN suffixes). */
static bool valid_domain(const char *s, size_t n)
{
    size_t label = 0;
    if (n == 0 || n > EG_MAX_DOMAIN_LEN)
        return false;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : '.';
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!is_alnum(c) && c != '-')
            return false;
        if (label == 0 && c == '-')
            return false;
        if (++label > EG_MAX_LABEL_LEN)
            return false;
    }
    return true;
}

bool eg_valid_smtp(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, MAX_ADDRESS_LEN + 1);
    if (n == 0 || n > MAX_ADDRESS_LEN)
        return false;
    const char *at = memchr(s, '@', n);
    if (!at)
        return false;
    size_t local = (size_t)(at - s);
    /* '@' is not atext, so a second one fails the domain check. */
    return valid_local_part(s, local) && valid_domain(at + 1, n - local - 1);
}

/* Decode one UTF-8 sequence strictly (no overlongs, no surrogates, <= U+10FFFF).
 * Returns its length, or 0 when invalid. */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if ((p[0] & 0xE0) == 0xC0) {
        len = 2, v = p[0] & 0x1F, min = 0x80;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3, v = p[0] & 0x0F, min = 0x800;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4, v = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* An Exchange identity passed on as literal data: 1..max bytes of valid UTF-8 (any character but
 * NUL, which JSON strings here cannot carry anyway). Nothing is ever interpreted: the value
 * travels as a typed string parameter (CLIXML <S> or a JSON string), so quotes, $(...),
 * backticks, semicolons and newlines are plain characters. */
static bool valid_literal(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp = 0;
        size_t k = utf8_decode(p, &cp);
        if (k == 0)
            return false;
        p += k;
    }
    return true;
}

/* '*' and '?' are the one exception: Exchange's -Identity reads them as a pattern, so a
 * command for one literal address could read or change other mailboxes. */
bool eg_valid_mailbox(const char *s)
{
    return valid_literal(s, EG_MAX_MAILBOX_LEN) && !strpbrk(s, "*?");
}

bool eg_valid_device_id(const char *s)
{
    return valid_literal(s, EG_MAX_DEVICE_ID_LEN);
}

/* Code points refused in a policy name: control characters (C0, DEL, C1), the characters
 * PowerShell reads as quotes or variables or statement ends (' " ` $ ; and the typographic
 * quotes U+2018..U+201E it also treats as quotes), invisible format and bidi controls, line and
 * paragraph separators, the BOM and the non-characters U+FFFE/U+FFFF. */
static bool policy_char_refused(uint32_t c)
{
    if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F))
        return true;
    if (c == '\'' || c == '"' || c == '`' || c == '$' || c == ';')
        return true;
    if (c >= 0x2018 && c <= 0x201E)
        return true;
    if ((c >= 0x200B && c <= 0x200F) || (c >= 0x2028 && c <= 0x202E) ||
        (c >= 0x2060 && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) ||
        c == 0xFFFE || c == 0xFFFF)
        return true;
    return false;
}

bool eg_valid_policy_name(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, EG_MAX_POLICY_LEN + 1);
    if (n == 0 || n > EG_MAX_POLICY_LEN || s[0] == ' ' || s[n - 1] == ' ')
        return false;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp = 0;
        size_t k = utf8_decode(p, &cp);
        if (k == 0 || policy_char_refused(cp))
            return false;
        p += k;
    }
    return true;
}

/* ---- errors --------------------------------------------------------------------------------- */

/* Write the JSON path "<path>.<name>" (or "<name>" at the top) and a detail into err.
 * Returns code so callers can `return verr(...)`. */
static int verr(struct eg_verr *err, int code, const char *path, const char *name, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));
static int verr(struct eg_verr *err, int code, const char *path, const char *name, const char *fmt,
                ...)
{
    va_list ap;
    if (!path)
        path = "";
    if (!name || !*name)
        snprintf(err->field, sizeof err->field, "%s", path);
    else if (!*path)
        snprintf(err->field, sizeof err->field, "%s", name);
    else
        snprintf(err->field, sizeof err->field, "%s.%s", path, name);
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    return code;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* ---- per-type field rules ------------------------------------------------------------------- */

enum field {
    F_ID,
    F_TYPE,
    F_MAILBOX,
    F_DEVICE_ID,
    F_ACCOUNT_ONLY,
    F_NOTIFY,
    F_ACTIVESYNC_ENABLED,
    F_POLICY,
    F_ALLOWED,
    F_BLOCKED,
    F_LEVEL,
    F_MODE,
    F__COUNT
};

static const char *const field_names[F__COUNT] = {
    "id",     "type",    "mailbox", "device_id", "account_only", "notify", "activesync_enabled",
    "policy", "allowed", "blocked", "level",     "mode",
};

#define B(f)          (1u << (f))
#define DEVICE_FIELDS (B(F_ID) | B(F_TYPE) | B(F_MAILBOX) | B(F_DEVICE_ID))

/* Which fields each type takes, and which of them it requires. */
static const struct type_rule {
    unsigned allowed;
    unsigned required;
} type_rules[EG_CMD__COUNT] = {
    [EG_CMD_DEVICE_ALLOW] = {DEVICE_FIELDS, DEVICE_FIELDS},
    [EG_CMD_DEVICE_BLOCK] = {DEVICE_FIELDS, DEVICE_FIELDS},
    [EG_CMD_DEVICE_UNLIST] = {DEVICE_FIELDS, DEVICE_FIELDS},
    [EG_CMD_DEVICE_WIPE] = {DEVICE_FIELDS | B(F_ACCOUNT_ONLY) | B(F_NOTIFY), DEVICE_FIELDS},
    [EG_CMD_DEVICE_WIPE_CANCEL] = {DEVICE_FIELDS, DEVICE_FIELDS},
    [EG_CMD_DEVICE_REMOVE] = {DEVICE_FIELDS, DEVICE_FIELDS},
    [EG_CMD_MAILBOX_SET] = {B(F_ID) | B(F_TYPE) | B(F_MAILBOX) | B(F_ACTIVESYNC_ENABLED) |
                                B(F_POLICY),
                            B(F_ID) | B(F_TYPE) | B(F_MAILBOX)},
    [EG_CMD_MAILBOX_SET_DEVICES] = {B(F_ID) | B(F_TYPE) | B(F_MAILBOX) | B(F_ALLOWED) |
                                        B(F_BLOCKED),
                                    B(F_ID) | B(F_TYPE) | B(F_MAILBOX) | B(F_ALLOWED) |
                                        B(F_BLOCKED)},
    [EG_CMD_ORG_SET_DEFAULT_ACCESS] = {B(F_ID) | B(F_TYPE) | B(F_LEVEL),
                                       B(F_ID) | B(F_TYPE) | B(F_LEVEL)},
    [EG_CMD_INVENTORY_SYNC] = {B(F_ID) | B(F_TYPE) | B(F_MODE) | B(F_MAILBOX), B(F_ID) | B(F_TYPE)},
};

static int field_lookup(const char *name)
{
    for (int i = 0; i < F__COUNT; i++)
        if (strcmp(name, field_names[i]) == 0)
            return i;
    return -1;
}

#define MSG_ID "must be 1-128 characters of A-Z a-z 0-9 . _ : -"
#define MSG_MAILBOX                                                                                \
    "must be the mailbox's identity in Exchange (SMTP address, UPN, alias...): 1-256 bytes of "    \
    "UTF-8 without * or ? (Exchange reads those as wildcards)"
#define MSG_DEVICE "must be an ActiveSync device ID: 1-64 bytes of UTF-8"
#define MSG_POLICY                                                                                 \
    "must be a policy name of 1-256 bytes of printable UTF-8 without quotes, backtick, $, ; or "   \
    "control characters, and without leading or trailing spaces"

/* Get a string member. A string with an embedded NUL is refused (it would be silently cut). */
static int get_string(const json_t *v, const char *path, const char *name, size_t max,
                      const char **ret, struct eg_verr *err)
{
    if (!json_is_string(v))
        return verr(err, EG_EINVAL, path, name, "must be a string, not %s", json_type_name(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return verr(err, EG_EINVAL, path, name, "must not contain NUL characters");
    if (len > max)
        return verr(err, EG_ELIMIT, path, name, "is %zu bytes long; at most %zu are allowed", len,
                    max);
    *ret = s;
    return 0;
}

/* Validate and copy one string field. */
static int take_string(const json_t *v, const char *path, const char *name, size_t max,
                       bool (*valid)(const char *), const char *msg, char **ret,
                       struct eg_verr *err)
{
    const char *s = NULL;
    int rc = get_string(v, path, name, max, &s, err);
    if (rc < 0)
        return rc;
    if (!valid(s))
        return verr(err, EG_EINVAL, path, name, "%s", msg);
    char *d = eg_strdup(s);
    if (!d)
        return EG_ENOMEM;
    *ret = d;
    return 0;
}

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        eg_free(v[i]);
    eg_free(v);
}

/* Validate and copy an array of strings (notify, allowed, blocked). */
static int take_string_array(const json_t *v, const char *path, const char *name, size_t max_n,
                             size_t max_len, bool (*valid)(const char *), const char *msg,
                             char ***ret_v, size_t *ret_n, struct eg_verr *err)
{
    char **out = NULL;
    size_t n = 0;
    int rc = 0;
    char elem[48];

    if (!json_is_array(v))
        return verr(err, EG_EINVAL, path, name, "must be an array of strings, not %s",
                    json_type_name(v));
    size_t count = json_array_size(v);
    if (count > max_n)
        return verr(err, EG_ELIMIT, path, name, "has %zu entries; at most %zu are allowed", count,
                    max_n);
    out = eg_calloc(count ? count : 1, sizeof *out);
    if (!out)
        return EG_ENOMEM;
    for (n = 0; n < count; n++) {
        snprintf(elem, sizeof elem, "%s[%zu]", name, n);
        rc = take_string(json_array_get(v, n), path, elem, max_len, valid, msg, &out[n], err);
        if (rc < 0)
            goto out;
    }
    *ret_v = out;
    *ret_n = count;
    out = NULL;
out:
    free_strv(out, n);
    return rc;
}

/* One entry of a declared device set, for duplicate detection. */
struct set_entry {
    const char *id;
    int list; /* 0 allowed, 1 blocked */
    size_t index;
};

static int set_entry_cmp(const void *a, const void *b)
{
    const struct set_entry *x = a, *y = b;
    int c = strcasecmp(x->id, y->id);
    if (c)
        return c;
    if (x->list != y->list)
        return x->list - y->list;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int set_entry_pos_cmp(const struct set_entry *x, const struct set_entry *y)
{
    if (x->list != y->list)
        return x->list - y->list;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* mailbox.set_devices: no device twice in one set and none in both (DeviceIds compare
 * case-insensitively in Exchange). Reports the first offender in document order. */
static int check_device_sets(const struct eg_command *c, const char *path, struct eg_verr *err)
{
    static const char *const list_names[2] = {"allowed", "blocked"};
    size_t total = c->n_allowed + c->n_blocked;
    struct set_entry *v = NULL;
    const struct set_entry *bad = NULL, *orig = NULL;

    if (total < 2)
        return 0;
    v = eg_calloc(total, sizeof *v);
    if (!v)
        return EG_ENOMEM;
    for (size_t i = 0; i < c->n_allowed; i++)
        v[i] = (struct set_entry){c->allowed[i], 0, i};
    for (size_t i = 0; i < c->n_blocked; i++)
        v[c->n_allowed + i] = (struct set_entry){c->blocked[i], 1, i};
    qsort(v, total, sizeof *v, set_entry_cmp);
    for (size_t i = 1; i < total; i++) {
        if (strcasecmp(v[i].id, v[i - 1].id) != 0)
            continue;
        size_t first = i - 1;
        while (first > 0 && strcasecmp(v[first - 1].id, v[i].id) == 0)
            first--;
        if (!bad || set_entry_pos_cmp(&v[i], bad) < 0) {
            bad = &v[i];
            orig = &v[first];
        }
    }
    int rc = 0;
    if (bad) {
        char elem[48];
        snprintf(elem, sizeof elem, "%s[%zu]", list_names[bad->list], bad->index);
        if (bad->list == orig->list)
            rc = verr(err, EG_EINVAL, path, elem,
                      "duplicate of %s[%zu] (device IDs compare case-insensitively)",
                      list_names[orig->list], orig->index);
        else
            rc = verr(err, EG_EINVAL, path, elem,
                      "is also in allowed[%zu]; a device cannot be both allowed and blocked "
                      "(device IDs compare case-insensitively)",
                      orig->index);
    }
    eg_free(v);
    return rc;
}

void eg_command_free(struct eg_command *c)
{
    if (!c)
        return;
    eg_free(c->id);
    eg_free(c->mailbox);
    eg_free(c->device_id);
    free_strv(c->notify, c->n_notify);
    eg_free(c->policy);
    free_strv(c->allowed, c->n_allowed);
    free_strv(c->blocked, c->n_blocked);
    eg_free(c);
}

void eg_commands_free(struct eg_command **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        eg_command_free(v[i]);
    eg_free(v);
}

static const char *type_list(void)
{
    return "device.allow, device.block, device.unlist, device.wipe, device.wipe_cancel, "
           "device.remove, mailbox.set, mailbox.set_devices, org.set_default_access, "
           "inventory.sync";
}

int eg_command_from_json(const json_t *obj, const char *path, struct eg_command **ret,
                         struct eg_verr *err)
{
    struct eg_verr dummy;
    struct eg_command *c = NULL;
    const json_t *fv[F__COUNT] = {0};
    const char *s = NULL;
    int rc = 0;

    if (!err)
        err = &dummy;
    if (!path)
        path = "";
    if (!json_is_object(obj))
        return verr(err, EG_EINVAL, path, NULL, "a command must be a JSON object, not %s",
                    obj ? json_type_name(obj) : "nothing");

    /* id and type first: everything else depends on the type. */
    fv[F_ID] = json_object_get(obj, "id");
    if (!fv[F_ID])
        return verr(err, EG_EINVAL, path, "id", "is required");
    if ((rc = get_string(fv[F_ID], path, "id", EG_MAX_ID_LEN, &s, err)) < 0)
        return rc;
    if (!eg_valid_command_id(s))
        return verr(err, EG_EINVAL, path, "id", MSG_ID);

    fv[F_TYPE] = json_object_get(obj, "type");
    if (!fv[F_TYPE])
        return verr(err, EG_EINVAL, path, "type", "is required");
    if ((rc = get_string(fv[F_TYPE], path, "type", 64, &s, err)) < 0)
        return rc;
    enum eg_cmd_type type;
    if (eg_cmd_type_parse(s, &type) < 0)
        return verr(err, EG_EINVAL, path, "type", "unknown command type; expected one of %s",
                    type_list());
    const struct type_rule *rule = &type_rules[type];

    /* Unknown fields, in document order. */
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        int f = field_lookup(key);
        if (f < 0 || !(rule->allowed & B(f)))
            return verr(err, EG_EINVAL, path, key, "unknown field for %s", type_names[type]);
        fv[f] = val;
    }
    for (int f = 0; f < F__COUNT; f++)
        if ((rule->required & B(f)) && !fv[f])
            return verr(err, EG_EINVAL, path, field_names[f], "is required for %s",
                        type_names[type]);

    c = eg_calloc(1, sizeof *c);
    if (!c)
        return EG_ENOMEM;
    c->type = type;
    c->activesync_enabled = -1;
    c->account_only = true; /* the safe default: never erase a personal phone by omission */
    c->mode = EG_SYNC_QUICK;
    c->level = EG_ACCESS_BLOCK;

    c->id = eg_strdup(json_string_value(fv[F_ID]));
    if (!c->id) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (fv[F_MAILBOX] && (rc = take_string(fv[F_MAILBOX], path, "mailbox", EG_MAX_MAILBOX_LEN,
                                           eg_valid_mailbox, MSG_MAILBOX, &c->mailbox, err)) < 0)
        goto out;
    if (fv[F_DEVICE_ID] &&
        (rc = take_string(fv[F_DEVICE_ID], path, "device_id", EG_MAX_DEVICE_ID_LEN,
                          eg_valid_device_id, MSG_DEVICE, &c->device_id, err)) < 0)
        goto out;
    if (fv[F_ACCOUNT_ONLY]) {
        if (!json_is_boolean(fv[F_ACCOUNT_ONLY])) {
            rc = verr(err, EG_EINVAL, path, "account_only", "must be true or false, not %s",
                      json_type_name(fv[F_ACCOUNT_ONLY]));
            goto out;
        }
        c->account_only = json_is_true(fv[F_ACCOUNT_ONLY]);
    }
    if (fv[F_NOTIFY] &&
        (rc = take_string_array(fv[F_NOTIFY], path, "notify", EG_MAX_NOTIFY, EG_MAX_MAILBOX_LEN,
                                eg_valid_smtp, "must be an SMTP address (local@domain, ASCII)",
                                &c->notify, &c->n_notify, err)) < 0)
        goto out;
    if (fv[F_ACTIVESYNC_ENABLED]) {
        if (!json_is_boolean(fv[F_ACTIVESYNC_ENABLED])) {
            rc = verr(err, EG_EINVAL, path, "activesync_enabled", "must be true or false, not %s",
                      json_type_name(fv[F_ACTIVESYNC_ENABLED]));
            goto out;
        }
        c->activesync_enabled = json_is_true(fv[F_ACTIVESYNC_ENABLED]) ? 1 : 0;
    }
    if (fv[F_POLICY]) {
        c->policy_given = true;
        if (!json_is_null(fv[F_POLICY])) {
            if (!json_is_string(fv[F_POLICY])) {
                rc = verr(err, EG_EINVAL, path, "policy",
                          "must be a policy name or null (the default policy), not %s",
                          json_type_name(fv[F_POLICY]));
                goto out;
            }
            if ((rc = take_string(fv[F_POLICY], path, "policy", EG_MAX_POLICY_LEN,
                                  eg_valid_policy_name, MSG_POLICY, &c->policy, err)) < 0)
                goto out;
        }
    }
    if (type == EG_CMD_MAILBOX_SET && c->activesync_enabled < 0 && !c->policy_given) {
        rc = verr(err, EG_EINVAL, path, "activesync_enabled",
                  "mailbox.set needs at least one of activesync_enabled and policy");
        goto out;
    }
    if (fv[F_ALLOWED] && (rc = take_string_array(fv[F_ALLOWED], path, "allowed", EG_MAX_DEVICE_SET,
                                                 EG_MAX_DEVICE_ID_LEN, eg_valid_device_id,
                                                 MSG_DEVICE, &c->allowed, &c->n_allowed, err)) < 0)
        goto out;
    if (fv[F_BLOCKED] && (rc = take_string_array(fv[F_BLOCKED], path, "blocked", EG_MAX_DEVICE_SET,
                                                 EG_MAX_DEVICE_ID_LEN, eg_valid_device_id,
                                                 MSG_DEVICE, &c->blocked, &c->n_blocked, err)) < 0)
        goto out;
    if (type == EG_CMD_MAILBOX_SET_DEVICES && (rc = check_device_sets(c, path, err)) < 0)
        goto out;
    if (fv[F_LEVEL]) {
        if ((rc = get_string(fv[F_LEVEL], path, "level", 64, &s, err)) < 0)
            goto out;
        if (eg_access_level_parse(s, &c->level) < 0) {
            rc = verr(err, EG_EINVAL, path, "level", "must be one of allow, block, quarantine");
            goto out;
        }
    }
    if (fv[F_MODE]) {
        if ((rc = get_string(fv[F_MODE], path, "mode", 64, &s, err)) < 0)
            goto out;
        if (strcmp(s, "quick") == 0) {
            c->mode = EG_SYNC_QUICK;
        } else if (strcmp(s, "full") == 0) {
            c->mode = EG_SYNC_FULL;
        } else {
            rc = verr(err, EG_EINVAL, path, "mode", "must be quick or full");
            goto out;
        }
    }
    *ret = c;
    c = NULL;
out:
    eg_command_free(c);
    return rc;
}

/* ---- request bodies ------------------------------------------------------------------------- */

/* Nesting depth of the JSON text, counting brackets outside strings. Stops early once over
 * limit; tolerant of malformed input (jansson reports that). */
static bool depth_over(const char *s, size_t len, int limit)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
            continue;
        }
        switch (ch) {
        case '"':
            in_str = true;
            break;
        case '{':
        case '[':
            if (++depth > limit)
                return true;
            break;
        case '}':
        case ']':
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
    }
    return false;
}

struct id_ref {
    const char *id;
    size_t index;
};

static int id_ref_cmp(const void *a, const void *b)
{
    const struct id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Ids must be unique within a batch; reports the first repeat in document order. */
static int check_unique_ids(struct eg_command **v, size_t n, struct eg_verr *err)
{
    struct id_ref *refs = NULL;
    size_t bad = SIZE_MAX, orig = 0;
    if (n < 2)
        return 0;
    refs = eg_calloc(n, sizeof *refs);
    if (!refs)
        return EG_ENOMEM;
    for (size_t i = 0; i < n; i++)
        refs[i] = (struct id_ref){v[i]->id, i};
    qsort(refs, n, sizeof *refs, id_ref_cmp);
    size_t first = 0;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(refs[i].id, refs[first].id) != 0) {
            first = i;
            continue;
        }
        if (refs[i].index < bad) {
            bad = refs[i].index;
            orig = refs[first].index;
        }
    }
    eg_free(refs);
    if (bad == SIZE_MAX)
        return 0;
    char path[48];
    snprintf(path, sizeof path, "commands[%zu]", bad);
    return verr(err, EG_EINVAL, path, "id", "duplicate of commands[%zu].id in this batch", orig);
}

int eg_command_parse_body(const char *body, size_t len, size_t max_batch,
                          struct eg_command ***ret_cmds, size_t *ret_n, bool *ret_batch,
                          struct eg_verr *err)
{
    struct eg_verr dummy;
    json_error_t jerr;
    json_t *root = NULL;
    struct eg_command **cmds = NULL;
    size_t n = 0, made = 0;
    bool batch = false;
    int rc = 0;

    if (!err)
        err = &dummy;
    err->field[0] = '\0';
    err->detail[0] = '\0';
    if (!body)
        body = "", len = 0;
    if (max_batch == 0 || max_batch > EG_MAX_BATCH)
        max_batch = EG_MAX_BATCH;

    if (depth_over(body, len, EG_MAX_JSON_DEPTH))
        return verr(err, EG_ELIMIT, "", NULL, "JSON nesting is deeper than %d levels",
                    EG_MAX_JSON_DEPTH);
    rc = eg_json_load(body, len, &root, &jerr);
    if (rc == EG_ENOMEM)
        return rc;
    if (rc < 0)
        return verr(err, EG_EPARSE, "", NULL, "invalid JSON at line %d, column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    if (!json_is_object(root)) {
        rc = verr(err, EG_EINVAL, "", NULL,
                  "the body must be a JSON object: one command, or {\"commands\": [...]}");
        goto out;
    }

    json_t *list = json_object_get(root, "commands");
    if (list) {
        batch = true;
        const char *key;
        json_t *val;
        json_object_foreach(root, key, val)
        {
            if (strcmp(key, "commands") != 0) {
                rc = verr(err, EG_EINVAL, "", key,
                          "unknown field; a batch is exactly {\"commands\": [...]}");
                goto out;
            }
        }
        if (!json_is_array(list)) {
            rc = verr(err, EG_EINVAL, "", "commands", "must be an array of commands, not %s",
                      json_type_name(list));
            goto out;
        }
        n = json_array_size(list);
        if (n == 0) {
            rc = verr(err, EG_EINVAL, "", "commands", "must hold at least one command");
            goto out;
        }
        if (n > max_batch) {
            rc = verr(err, EG_ELIMIT, "", "commands",
                      "a batch holds at most %zu commands; this one has %zu", max_batch, n);
            goto out;
        }
    } else {
        n = 1;
    }

    cmds = eg_calloc(n, sizeof *cmds);
    if (!cmds) {
        rc = EG_ENOMEM;
        goto out;
    }
    for (made = 0; made < n; made++) {
        char path[48] = "";
        if (batch)
            snprintf(path, sizeof path, "commands[%zu]", made);
        rc =
            eg_command_from_json(batch ? json_array_get(list, made) : root, path, &cmds[made], err);
        if (rc < 0)
            goto out;
    }
    if ((rc = check_unique_ids(cmds, n, err)) < 0)
        goto out;

    *ret_cmds = cmds;
    *ret_n = n;
    *ret_batch = batch;
    cmds = NULL;
out:
    eg_commands_free(cmds, made);
    json_decref(root);
    return rc;
}

/* ---- canonical form ------------------------------------------------------------------------- */

static int cmp_str_ci(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int r = strcasecmp(x, y);
    return r ? r : strcmp(x, y);
}

/* The canonical form of a set: sorted (case-insensitively, then bytewise), so that the same set
 * sent in another order is the same command for idempotency. */
static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    const char **sorted = n ? eg_calloc(n, sizeof *sorted) : NULL;
    if (!a || (n && !sorted)) {
        json_decref(a);
        eg_free(sorted);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = v[i];
    if (n > 1)
        qsort(sorted, n, sizeof *sorted, cmp_str_ci);
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(a, json_string(sorted[i])) < 0) {
            json_decref(a);
            a = NULL;
            break;
        }
    eg_free(sorted);
    return a;
}

char *eg_command_canonical(const struct eg_command *c)
{
    json_t *o = NULL;
    char *text = NULL;
    int bad = 0;

    if (!c || (unsigned)c->type >= EG_CMD__COUNT)
        return NULL;
    o = json_object();
    if (!o)
        return NULL;
    bad |= json_object_set_new(o, "id", json_string(c->id));
    bad |= json_object_set_new(o, "type", json_string(type_names[c->type]));
    if (c->mailbox)
        bad |= json_object_set_new(o, "mailbox", json_string(c->mailbox));
    if (c->device_id)
        bad |= json_object_set_new(o, "device_id", json_string(c->device_id));
    switch (c->type) {
    case EG_CMD_DEVICE_WIPE:
        bad |= json_object_set_new(o, "account_only", json_boolean(c->account_only));
        bad |= json_object_set_new(o, "notify", strv_json(c->notify, c->n_notify));
        break;
    case EG_CMD_MAILBOX_SET:
        if (c->activesync_enabled >= 0)
            bad |= json_object_set_new(o, "activesync_enabled",
                                       json_boolean(c->activesync_enabled > 0));
        if (c->policy_given)
            bad |=
                json_object_set_new(o, "policy", c->policy ? json_string(c->policy) : json_null());
        break;
    case EG_CMD_MAILBOX_SET_DEVICES:
        bad |= json_object_set_new(o, "allowed", strv_json(c->allowed, c->n_allowed));
        bad |= json_object_set_new(o, "blocked", strv_json(c->blocked, c->n_blocked));
        break;
    case EG_CMD_ORG_SET_DEFAULT_ACCESS:
        bad |= json_object_set_new(o, "level", json_string(eg_access_level_name(c->level)));
        break;
    case EG_CMD_INVENTORY_SYNC:
        bad |=
            json_object_set_new(o, "mode", json_string(c->mode == EG_SYNC_FULL ? "full" : "quick"));
        break;
    default:
        break;
    }
    if (!bad)
        text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

char *eg_command_mailbox_key(const struct eg_command *c)
{
    if (!c || !c->mailbox)
        return NULL;
    char *k = eg_strdup(c->mailbox);
    if (!k)
        return NULL;
    for (char *p = k; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return k;
}
