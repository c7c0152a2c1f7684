/* audit.h - the audit trail: every change easgate makes in Exchange, appended to a hash-chained
 * JSON-lines file (<state_dir>/audit.log unless the audit_log option names another).
 *
 * One line per record, fields in this order:
 *   {"seq":N,"time":"2026-12-02T10:00:00.123Z","command_id":"...","console":"...","type":"...",
 *    "cmdlet":"Set-CASMailbox","parameters":{...},"outcome":"succeeded|failed|retrying",
 *    "code":null|"...", ["shared_with":[ids],] ["redacted":[names],] "prev":"<hex>","hash":"<hex>"}
 * seq counts from 1 without gaps. prev is the hex SHA-256 of the previous line's bytes (without
 * its newline), 64 zeros for the first line. hash is the hex SHA-256 of the line's own text with
 * the hash member removed, i.e. of `{...,"prev":"<hex>"}`. Output is ASCII only (JSON escapes).
 * Parameters whose name looks secret (password, securestring, credential, privatekey, secret,
 * token; any depth, case-insensitive) are left out and named in "redacted".
 *
 * The file is opened O_APPEND, created 0600; records are written whole and fdatasync'ed before
 * eg_audit_append returns (concurrent appenders share one write + fdatasync: group commit).
 * Library code: nothing here logs; errors are returned.
 */
#ifndef EG_AUDIT_H
#define EG_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/limits.h"

#define EG_AUDIT_HASH_HEX 65 /* 64 hex digits + NUL */

struct eg_audit;

/* What eg_audit_open found. */
struct eg_audit_open_info {
    int64_t last_seq;                     /* seq of the last record, 0 for an empty log */
    char head[EG_AUDIT_HASH_HEX];         /* prev of the next record (64 zeros when empty) */
    size_t torn_bytes;                    /* > 0: a torn last line of this size was moved... */
    char torn_path[EG_MAX_PATH_LEN + 64]; /* ...to this file (path.torn-<UTC time>) */
};

/* Open (creating with mode 0600; an existing file's group/other bits are cleared) the log at
 * path and continue its chain. The last complete line must verify on its own (hash, fields);
 * the rest of the file is not read (that is eg_audit_verify's job). A last line without its
 * newline (a write cut short by a crash) is moved to path.torn-<time> and cut off the log, and
 * reported in info (optional). Returns 0, EG_EIO (errno set), EG_EPARSE (the last line does not
 * verify or is longer than EG_MAX_AUDIT_LINE), EG_EINVAL, EG_ENOMEM. On failure *ret_error
 * (optional; caller frees with eg_free) says what is wrong with which file. */
int eg_audit_open(const char *path, struct eg_audit **ret, struct eg_audit_open_info *info,
                  char **ret_error) EG_MUST_CHECK;

/* Close; accepts NULL. No append may be in progress. */
void eg_audit_close(struct eg_audit *a);

/* One Exchange call made for one command. Strings are borrowed for the call. */
struct eg_audit_record {
    const char *command_id;
    const char *console;      /* identity that posted the command; NULL = "anonymous" */
    const char *type;         /* command type, "device.block" ... */
    const char *cmdlet;       /* NULL = "(unknown)" */
    const json_t *parameters; /* object (copied, secret-named members dropped) or NULL */
    const char *outcome;      /* "succeeded" | "failed" | "retrying" */
    const char *code;         /* error code, NULL on success */
    const char *const *batch; /* ids of every command the same call served (coalescing), */
    size_t n_batch;           /* command_id included; written as "shared_with" when > 1 */
};

/* Append n records (in order, consecutive seq) and make them durable (write + fdatasync)
 * before returning. Thread-safe; concurrent callers share a write. All or nothing: on failure
 * none of the n records is in the log (a partial write is cut back) and the chain continues
 * from the last durable record. Returns 0, EG_EINVAL, EG_ELIMIT (a record over
 * EG_MAX_AUDIT_LINE), EG_EIO (errno set), EG_ENOMEM. */
int eg_audit_append(struct eg_audit *a, const struct eg_audit_record *v, size_t n) EG_MUST_CHECK;

/* The last durable record's seq (0 if none) and the prev of the next record. */
void eg_audit_head(struct eg_audit *a, int64_t *ret_seq, char ret_head[EG_AUDIT_HASH_HEX]);

/* Number of eg_audit_append calls that failed since open. */
int64_t eg_audit_failures(struct eg_audit *a);

/* True when a cmdlet may change Exchange and is therefore audited: everything except the
 * read-only verbs Get-, Test- and Search-. NULL counts as a change. */
bool eg_audit_is_change(const char *cmdlet);

/* True when a parameter name looks secret (see above). */
bool eg_audit_is_secret_name(const char *name);

/* Result of eg_audit_verify. */
struct eg_audit_report {
    int64_t records;              /* complete lines that verified */
    int64_t last_seq;             /* seq of the last one that verified */
    char head[EG_AUDIT_HASH_HEX]; /* SHA-256 of the last line that verified */
    int64_t bad_line;             /* first broken line, 1-based; 0 = none */
    char why[256];                /* what is wrong with it */
};

/* Check the whole file at path: each line's hash, the chain of prev values, seq continuity
 * from 1, the fields, and that the file ends with a newline. Returns 0 (intact; also for an
 * empty file), EG_EPARSE (broken: bad_line and why say where and why), EG_EIO (cannot be
 * read; errno set), EG_ENOMEM. rep is filled in every case. */
int eg_audit_verify(const char *path, struct eg_audit_report *rep) EG_MUST_CHECK;

/* The log path for a configuration: audit_log when set, else state_dir/audit.log. A new string
 * (eg_free) or NULL without memory. */
char *eg_audit_path(const char *audit_log, const char *state_dir);

/* The `easgate audit ...` subcommand: argv[0] is "audit", then `verify [--config FILE] [LOG]`.
 * Without LOG the path comes from the configuration (defaults < --config file / EASGATE_CONFIG
 * < EASGATE_* environment). Prints the verdict (stdout when intact, stderr otherwise) and
 * returns the exit status: 0 intact, 1 broken (tampered or torn), 2 usage error or unreadable. */
int eg_audit_cli(int argc, char *const argv[], char *const envp[]);

#endif
