/* command.h - the console's command model: strict parsing and validation of command JSON.
 *
 * A command body is one JSON object, or {"commands":[...]} (a batch of at most
 * EG_MAX_BATCH objects). Every field is checked for type, length and allowed characters;
 * unknown fields are rejected. On error, struct eg_verr names the offending field with a JSON
 * path ("commands[3].device_id") and says what is wrong. Validated commands have a canonical
 * JSON form (sorted keys, compact, defaults filled in) that is what the journal stores and what
 * idempotency compares.
 */
#ifndef EG_COMMAND_H
#define EG_COMMAND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "exchange/bridge.h"

enum eg_cmd_type {
    EG_CMD_DEVICE_ALLOW,           /* mailbox, device_id: put on allowed list (off blocked) */
    EG_CMD_DEVICE_BLOCK,           /* mailbox, device_id: put on blocked list (off allowed) */
    EG_CMD_DEVICE_UNLIST,          /* mailbox, device_id: off both lists */
    EG_CMD_DEVICE_WIPE,            /* mailbox, device_id, account_only (default true), notify[] */
    EG_CMD_DEVICE_WIPE_CANCEL,     /* mailbox, device_id */
    EG_CMD_DEVICE_REMOVE,          /* mailbox, device_id: remove the partnership */
    EG_CMD_MAILBOX_SET,            /* mailbox, activesync_enabled?, policy? (null = default) */
    EG_CMD_MAILBOX_SET_DEVICES,    /* mailbox, allowed[], blocked[] (full declared sets) */
    EG_CMD_ORG_SET_DEFAULT_ACCESS, /* level: allow|block|quarantine */
    EG_CMD_INVENTORY_SYNC,         /* mode: full|quick (default quick), mailbox? */
    EG_CMD__COUNT
};

enum eg_sync_mode { EG_SYNC_QUICK, EG_SYNC_FULL };

struct eg_command {
    char *id; /* console's idempotency key: 1..EG_MAX_ID_LEN of [A-Za-z0-9._:-] */
    enum eg_cmd_type type;
    char *mailbox;     /* SMTP address or UPN; NULL for org.* and unscoped inventory.sync */
    char *device_id;   /* ActiveSync DeviceId for device.* ; else NULL */
    bool account_only; /* device.wipe */
    char **notify;     /* device.wipe: notification SMTP addresses */
    size_t n_notify;
    int activesync_enabled; /* mailbox.set: -1 not given, 0 false, 1 true */
    bool policy_given;      /* mailbox.set: "policy" present */
    char *policy;   /* mailbox.set: policy name, NULL with policy_given = reset to default */
    char **allowed; /* mailbox.set_devices */
    size_t n_allowed;
    char **blocked;
    size_t n_blocked;
    enum eg_access_level level; /* org.set_default_access */
    enum eg_sync_mode mode;     /* inventory.sync */
};

/* Where validation failed. field is a JSON path ("" for the whole body); detail says why. */
struct eg_verr {
    char field[160];
    char detail[256];
};

/* Name of a type ("device.allow"); never NULL for valid values. */
const char *eg_cmd_type_name(enum eg_cmd_type t);
/* Parse a type name. 0 or EG_EINVAL. */
int eg_cmd_type_parse(const char *s, enum eg_cmd_type *ret) EG_MUST_CHECK;
/* True for device.allow/block/unlist and mailbox.set_devices: the list edits a worker coalesces. */
bool eg_cmd_type_is_list_edit(enum eg_cmd_type t);

/* Validate one command object. path is the JSON path of obj used in error fields ("" or
 * "commands[3]"). On success *ret is a new command (free with eg_command_free).
 * Returns 0, EG_EINVAL (err filled), EG_ELIMIT (err filled) or EG_ENOMEM. */
int eg_command_from_json(const json_t *obj, const char *path, struct eg_command **ret,
                         struct eg_verr *err) EG_MUST_CHECK;

/* Parse an HTTP request body: a single command or a batch. Checks the nesting depth
 * (EG_MAX_JSON_DEPTH) before parsing, the batch size (max_batch), and that ids in one batch are
 * unique. On success *ret_cmds is an array of *ret_n commands (free with eg_commands_free) and
 * *ret_batch tells whether the body was a batch.
 * Returns 0, EG_EPARSE (malformed JSON; err->detail has line:column), EG_EINVAL, EG_ELIMIT
 * (err filled) or EG_ENOMEM. */
int eg_command_parse_body(const char *body, size_t len, size_t max_batch,
                          struct eg_command ***ret_cmds, size_t *ret_n, bool *ret_batch,
                          struct eg_verr *err) EG_MUST_CHECK;

/* Canonical JSON of a validated command (sorted keys, compact, defaults explicit). Caller frees
 * with eg_free. NULL on allocation failure. Parsing the result with eg_command_from_json gives
 * an equal command. */
char *eg_command_canonical(const struct eg_command *c);

/* Lower-cased mailbox used to serialise and coalesce work per mailbox, or NULL when the command
 * is not scoped to a mailbox. Caller frees with eg_free. */
char *eg_command_mailbox_key(const struct eg_command *c);

void eg_command_free(struct eg_command *c);
void eg_commands_free(struct eg_command **v, size_t n);

/* Field validators, exported for reuse (config, tests). */
bool eg_valid_command_id(const char *s);
bool eg_valid_smtp(const char *s); /* local@domain, RFC 5321 dot-atom, ASCII, length limits */
/* Mailbox identity and DeviceId: 1..EG_MAX_MAILBOX_LEN / EG_MAX_DEVICE_ID_LEN bytes of valid
 * UTF-8; every character (quotes, $, backtick, ;, newline) is literal data, except that a
 * mailbox may not contain the -Identity wildcards * and ?. */
bool eg_valid_mailbox(const char *s);
bool eg_valid_device_id(const char *s);
bool eg_valid_policy_name(const char *s);

#endif
