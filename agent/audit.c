/* audit.c - the hash-chained audit trail of Exchange changes (contract: audit.h).
 *
 * Writing. An appender turns each record into the middle of its line (command_id ... redacted,
 * serialised by jansson, ASCII only) without holding any lock, then queues it. The first
 * queued appender that finds nobody writing becomes the leader: it takes every queued record,
 * gives each its seq, time and prev, hashes it, writes all of them with one write() and one
 * fdatasync(), and wakes the others with the shared result (group commit, as agent/queue does
 * for the journal). The chain state (seq, head, size) only advances after a successful
 * fdatasync; after a failed or partial write the file is cut back to its last durable size, so
 * a failure loses exactly the records of that group and the chain stays intact.
 *
 * Checking. A line is checked on its own bytes first (the hash member is the last one and
 * hashes the rest), then parsed for its fields; the chain check adds seq continuity and prev.
 * eg_audit_open checks only the last line (start-up must not read a year of log); the
 * `easgate audit verify` subcommand streams the whole file with a bounded line buffer.
 */
#include "agent/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/config.h"
#include "common/alloc.h"
#include "common/util.h"

#define HASH_LEN        32
#define HASH_SUFFIX_LEN 75  /* ,"hash":"<64 hex>"} */
#define LINE_OVERHEAD   256 /* {"seq":N,"time":"...",  ,"prev":"<hex>","hash":"<hex>"}\n */
#define READ_CHUNK      (64 * 1024)

static const char zero_hex[EG_AUDIT_HASH_HEX] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* One eg_audit_append call waiting for the leader. */
struct pending {
    struct pending *next;
    char **frags; /* the middle of each line */
    size_t n;
    int rc;
    int err; /* errno of a failed write */
    bool done;
};

struct eg_audit {
    int fd;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool flushing;
    struct pending *q_head, **q_tail;
    /* Durable chain state (lock; the leader reads it while flushing). */
    int64_t seq;
    char head[EG_AUDIT_HASH_HEX];
    off_t size;
    atomic_llong failures;
};

/* ---- small helpers ----------------------------------------------------------------------------
 */

static void set_error(char **why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **why, const char *fmt, ...)
{
    va_list ap;
    if (!why || *why)
        return;
    va_start(ap, fmt);
    *why = eg_vasprintf(fmt, ap);
    va_end(ap);
}

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Hex SHA-256 of n bytes. */
static int sha256_hex(const void *p, size_t n, char out[EG_AUDIT_HASH_HEX])
{
    unsigned char d[HASH_LEN];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n, d) < 0)
        return EG_EINTERNAL;
    to_hex(d, sizeof d, out);
    return 0;
}

static bool is_hex64(const char *s, size_t n)
{
    if (n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static int fsync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? eg_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : NULL;
    int fd, rc = 0;
    if (slash && !dir)
        return EG_ENOMEM;
    fd = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        rc = EG_EIO;
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    eg_free(dir);
    return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO;
            return EG_EIO;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- what is audited, what is dropped -----------------------------------------------------------
 */

bool eg_audit_is_change(const char *cmdlet)
{
    static const char *const readers[] = {"Get-", "Test-", "Search-"};
    if (!cmdlet)
        return true;
    for (size_t i = 0; i < sizeof readers / sizeof readers[0]; i++)
        if (strncasecmp(cmdlet, readers[i], strlen(readers[i])) == 0)
            return false;
    return true;
}

bool eg_audit_is_secret_name(const char *name)
{
    static const char *const secret[] = {"password",   "passwd",      "securestring", "credential",
                                         "privatekey", "private_key", "secret",       "token"};
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++)
        if (strcasestr(name, secret[i]))
            return true;
    return false;
}

/* Add name to the redacted list (once). */
static int note_redacted(json_t *redacted, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(redacted, i, v) if (strcmp(json_string_value(v), name) == 0) return 0;
    json_t *s = json_string(name);
    if (!s) /* not valid UTF-8: name it by position only */
        s = json_string("(unprintable name)");
    return json_array_append_new(redacted, s) < 0 ? EG_ENOMEM : 0;
}

/* Remove secret-named members from v (a copy we own), at any depth. */
static int drop_secrets(json_t *v, json_t *redacted)
{
    int rc;
    if (json_is_object(v)) {
        const char *key;
        json_t *m, *tmp;
        json_object_foreach_safe(v, tmp, key, m)
        {
            if (eg_audit_is_secret_name(key)) {
                if ((rc = note_redacted(redacted, key)) < 0)
                    return rc;
                if (json_object_del(v, key) < 0)
                    return EG_EINTERNAL;
                continue;
            }
            if ((rc = drop_secrets(m, redacted)) < 0)
                return rc;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) if ((rc = drop_secrets(m, redacted)) < 0) return rc;
    }
    return 0;
}

/* A JSON string of s; bytes that are not valid UTF-8 text become '?'. */
static json_t *text(const char *s)
{
    json_t *j = json_string(s);
    char *copy = NULL;
    if (j || !s)
        return j;
    if (!(copy = eg_strdup(s)))
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
            *p = '?';
    j = json_string(copy);
    eg_free(copy);
    return j;
}

static int set(json_t *o, const char *key, json_t *v)
{
    return v && json_object_set_new(o, key, v) == 0 ? 0 : EG_ENOMEM;
}

/* The middle of a record's line: "command_id":... up to (not including) ,"prev". */
static int make_fragment(const struct eg_audit_record *r, char **ret)
{
    json_t *o = NULL, *params = NULL, *redacted = NULL, *shared = NULL;
    char *dump = NULL;
    int rc = EG_EINVAL;

    if (!r->command_id || !r->type || !r->outcome ||
        (strcmp(r->outcome, "succeeded") != 0 && strcmp(r->outcome, "failed") != 0 &&
         strcmp(r->outcome, "retrying") != 0) ||
        (r->parameters && !json_is_object(r->parameters)) || (r->n_batch && !r->batch))
        goto out;
    rc = EG_ENOMEM;
    params = r->parameters ? json_deep_copy(r->parameters) : json_object();
    redacted = json_array();
    if (!(o = json_object()) || !params || !redacted)
        goto out;
    if ((rc = drop_secrets(params, redacted)) < 0)
        goto out;
    if ((rc = set(o, "command_id", text(r->command_id))) < 0 ||
        (rc = set(o, "console", text(r->console ? r->console : "anonymous"))) < 0 ||
        (rc = set(o, "type", text(r->type))) < 0 ||
        (rc = set(o, "cmdlet", text(r->cmdlet ? r->cmdlet : "(unknown)"))) < 0)
        goto out;
    rc = json_object_set(o, "parameters", params) == 0 ? 0 : EG_ENOMEM;
    if (rc < 0 || (rc = set(o, "outcome", json_string(r->outcome))) < 0 ||
        (rc = set(o, "code", r->code ? text(r->code) : json_null())) < 0)
        goto out;
    if (r->n_batch > 1) {
        rc = EG_ENOMEM;
        if (!(shared = json_array()))
            goto out;
        for (size_t i = 0; i < r->n_batch; i++)
            if (r->batch[i] && strcmp(r->batch[i], r->command_id) != 0 &&
                json_array_append_new(shared, text(r->batch[i])) < 0)
                goto out;
        if (json_array_size(shared) && json_object_set(o, "shared_with", shared) < 0)
            goto out;
    }
    if (json_array_size(redacted) && json_object_set(o, "redacted", redacted) < 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    rc = EG_ENOMEM;
    if (!(dump = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER)))
        goto out;
    size_t len = strlen(dump);
    if (len < 2 || dump[0] != '{' || dump[len - 1] != '}') {
        rc = EG_EINTERNAL;
        goto out;
    }
    if (len + LINE_OVERHEAD > EG_MAX_AUDIT_LINE) {
        rc = EG_ELIMIT;
        goto out;
    }
    memmove(dump, dump + 1, len - 2);
    dump[len - 2] = '\0';
    *ret = dump;
    dump = NULL;
    rc = 0;
out:
    eg_free(dump); /* json_dumps allocates through eg_malloc (eg_alloc_init) */
    json_decref(o);
    json_decref(params);
    json_decref(redacted);
    json_decref(shared);
    return rc;
}

/* ---- checking one line -------------------------------------------------------------------------
 */

/* Check a line (without its newline) on its own: the hash member last and matching the rest,
 * then the fields. On success *ret_seq and ret_prev are the record's. 0 or EG_EPARSE (why). */
static int check_line(const char *line, size_t len, int64_t *ret_seq,
                      char ret_prev[EG_AUDIT_HASH_HEX], char *why, size_t wsize)
{
    static const char *const strings[] = {"time", "command_id", "console", "type", "cmdlet"};
    char want[EG_AUDIT_HASH_HEX], *body = NULL;
    json_t *o = NULL, *v;
    json_error_t je;
    int rc = EG_EPARSE;

    if (len == 0) {
        snprintf(why, wsize, "empty line");
        goto out;
    }
    if (len < HASH_SUFFIX_LEN + 2 || memcmp(line + len - HASH_SUFFIX_LEN, ",\"hash\":\"", 9) != 0 ||
        !is_hex64(line + len - HASH_SUFFIX_LEN + 9, 64) || line[len - 2] != '"' ||
        line[len - 1] != '}') {
        snprintf(why, wsize, "not an audit record: it does not end with its \"hash\" member");
        goto out;
    }
    size_t blen = len - HASH_SUFFIX_LEN;
    if (!(body = eg_malloc(blen + 1))) {
        rc = EG_ENOMEM;
        goto out;
    }
    memcpy(body, line, blen);
    body[blen] = '}';
    if ((rc = sha256_hex(body, blen + 1, want)) < 0)
        goto out;
    rc = EG_EPARSE;
    if (memcmp(want, line + len - HASH_SUFFIX_LEN + 9, 64) != 0) {
        snprintf(why, wsize, "its hash does not match its content (the line was altered)");
        goto out;
    }
    if (!(o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je))) {
        /* jansson reports a failed allocation inside the parser as a syntax error; the hash
         * matched, so the text is very likely ours: tell memory trouble apart by trying. */
        void *probe = eg_malloc(2 * len + 4096);
        if (!probe) {
            rc = EG_ENOMEM;
            goto out;
        }
        eg_free(probe);
    }
    if (!o || !json_is_object(o)) {
        snprintf(why, wsize, "not a JSON object (%s)", o ? "another JSON value" : je.text);
        goto out;
    }
    v = json_object_get(o, "seq");
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        snprintf(why, wsize, "\"seq\" is missing or not a positive integer");
        goto out;
    }
    *ret_seq = (int64_t)json_integer_value(v);
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (!json_is_string(json_object_get(o, strings[i]))) {
            snprintf(why, wsize, "\"%s\" is missing or not a string", strings[i]);
            goto out;
        }
    if (!json_is_object(json_object_get(o, "parameters"))) {
        snprintf(why, wsize, "\"parameters\" is missing or not an object");
        goto out;
    }
    const char *oc = json_string_value(json_object_get(o, "outcome"));
    if (!oc || (strcmp(oc, "succeeded") != 0 && strcmp(oc, "failed") != 0 &&
                strcmp(oc, "retrying") != 0)) {
        snprintf(why, wsize, "\"outcome\" is missing or not succeeded, failed or retrying");
        goto out;
    }
    v = json_object_get(o, "code");
    if (!json_is_null(v) && !json_is_string(v)) {
        snprintf(why, wsize, "\"code\" is missing or neither null nor a string");
        goto out;
    }
    v = json_object_get(o, "prev");
    if (!json_is_string(v) || !is_hex64(json_string_value(v), json_string_length(v))) {
        snprintf(why, wsize, "\"prev\" is missing or not 64 lower-case hex digits");
        goto out;
    }
    memcpy(ret_prev, json_string_value(v), EG_AUDIT_HASH_HEX);
    rc = 0;
out:
    json_decref(o);
    eg_free(body);
    return rc;
}

/* ---- opening -----------------------------------------------------------------------------------
 */

/* Move the torn fragment (the bytes after the last newline) to path.torn-<time>. */
static int move_torn(int fd, const char *path, const char *frag, size_t n, off_t new_size,
                     struct eg_audit_open_info *info, char **why)
{
    char stamp[32], *name = NULL;
    time_t t = (time_t)(eg_now_ms() / 1000);
    struct tm tm;
    int tfd = -1, rc;

    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int i = 0; i < 100 && tfd < 0; i++) {
        eg_free(name);
        name = i ? eg_asprintf("%s.torn-%s-%d", path, stamp, i)
                 : eg_asprintf("%s.torn-%s", path, stamp);
        if (!name)
            return EG_ENOMEM;
        tfd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (tfd < 0 && errno != EEXIST)
            break;
    }
    if (tfd < 0) {
        set_error(why, "cannot move the torn last line of %s aside to %s: %s", path, name,
                  strerror(errno));
        rc = EG_EIO;
        goto out;
    }
    if ((rc = write_all(tfd, frag, n)) < 0 || fsync(tfd) < 0 || (rc = fsync_dir_of(name)) < 0) {
        set_error(why, "cannot write %s: %s", name, strerror(errno));
        rc = EG_EIO;
        goto out;
    }
    if (ftruncate(fd, new_size) < 0 || fsync(fd) < 0) {
        set_error(why, "cannot cut the torn last line off %s: %s", path, strerror(errno));
        rc = EG_EIO;
        goto out;
    }
    if (info) {
        info->torn_bytes = n;
        snprintf(info->torn_path, sizeof info->torn_path, "%s", name);
    }
    rc = 0;
out:
    if (tfd >= 0)
        close(tfd);
    eg_free(name);
    return rc;
}

/* Read the end of the log: move a torn tail aside, check the last line, set a's chain state. */
static int load_tail(struct eg_audit *a, const char *path, struct eg_audit_open_info *info,
                     char **why)
{
    struct stat st;
    char *buf = NULL, w[256];
    int rc;

    if (fstat(a->fd, &st) < 0) {
        set_error(why, "cannot stat %s: %s", path, strerror(errno));
        return EG_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        set_error(why, "%s is not a regular file", path);
        return EG_EINVAL;
    }
    if ((st.st_mode & 077) && fchmod(a->fd, st.st_mode & 0700) < 0) {
        set_error(why, "cannot restrict the mode of %s: %s", path, strerror(errno));
        return EG_EIO;
    }
    a->size = st.st_size;
    if (a->size == 0)
        return 0;
    size_t win = (size_t)a->size < EG_MAX_AUDIT_LINE + 2 ? (size_t)a->size : EG_MAX_AUDIT_LINE + 2;
    off_t start = a->size - (off_t)win;
    if (!(buf = eg_malloc(win))) {
        rc = EG_ENOMEM;
        goto out;
    }
    for (size_t got = 0; got < win;) {
        ssize_t k = pread(a->fd, buf + got, win - got, start + (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            set_error(why, "cannot read %s: %s", path, k == 0 ? "unexpected end" : strerror(errno));
            rc = EG_EIO;
            goto out;
        }
        got += (size_t)k;
    }
    size_t end = win; /* bytes of buf that belong to complete lines */
    if (buf[win - 1] != '\n') {
        char *nl = memrchr(buf, '\n', win);
        if (!nl && start > 0) {
            set_error(why, "%s ends with a line longer than any record (%d bytes)", path,
                      EG_MAX_AUDIT_LINE);
            rc = EG_EPARSE;
            goto out;
        }
        end = nl ? (size_t)(nl - buf) + 1 : 0;
        if ((rc = move_torn(a->fd, path, buf + end, win - end, start + (off_t)end, info, why)) < 0)
            goto out;
        a->size = start + (off_t)end;
        if (a->size == 0) {
            rc = 0;
            goto out;
        }
    }
    /* The last complete line is buf[ls, end - 1). */
    char *prev_nl = end >= 2 ? memrchr(buf, '\n', end - 1) : NULL;
    if (!prev_nl && start > 0) {
        set_error(why, "the last line of %s is longer than any record (%d bytes)", path,
                  EG_MAX_AUDIT_LINE);
        rc = EG_EPARSE;
        goto out;
    }
    size_t ls = prev_nl ? (size_t)(prev_nl - buf) + 1 : 0;
    int64_t seq = 0;
    char prev[EG_AUDIT_HASH_HEX];
    if ((rc = check_line(buf + ls, end - 1 - ls, &seq, prev, w, sizeof w)) < 0) {
        if (rc == EG_EPARSE)
            set_error(why,
                      "the last record of %s does not verify: %s (run `easgate audit verify`; "
                      "move the file aside to start a new log)",
                      path, w);
        goto out;
    }
    if ((rc = sha256_hex(buf + ls, end - 1 - ls, a->head)) < 0)
        goto out;
    a->seq = seq;
    rc = 0;
out:
    eg_free(buf);
    return rc;
}

int eg_audit_open(const char *path, struct eg_audit **ret, struct eg_audit_open_info *info,
                  char **ret_error)
{
    struct eg_audit *a = NULL;
    char *why = NULL;
    bool created = false;
    int rc;

    if (info)
        memset(info, 0, sizeof *info);
    if (!path || !*path || !ret) {
        rc = EG_EINVAL;
        goto out;
    }
    if (!(a = eg_calloc(1, sizeof *a))) {
        rc = EG_ENOMEM;
        goto out;
    }
    a->fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (a->fd < 0 && errno == ENOENT) {
        a->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        created = a->fd >= 0;
    }
    if (a->fd < 0) {
        set_error(&why, "cannot open %s: %s", path, strerror(errno));
        rc = EG_EIO;
        goto out;
    }
    if (created && fsync_dir_of(path) < 0) {
        set_error(&why, "cannot sync the directory of %s: %s", path, strerror(errno));
        rc = EG_EIO;
        goto out;
    }
    memcpy(a->head, zero_hex, sizeof a->head);
    if ((rc = load_tail(a, path, info, &why)) < 0)
        goto out;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    a->q_tail = &a->q_head;
    atomic_init(&a->failures, 0);
    if (info) {
        info->last_seq = a->seq;
        memcpy(info->head, a->head, sizeof info->head);
    }
    *ret = a;
    a = NULL;
    rc = 0;
out:
    if (a) {
        if (a->fd >= 0)
            close(a->fd);
        eg_free(a);
    }
    if (rc < 0 && !why && rc == EG_ENOMEM)
        set_error(&why, "out of memory");
    if (rc < 0 && ret_error) {
        *ret_error = why;
        why = NULL;
    }
    eg_free(why);
    return rc;
}

void eg_audit_close(struct eg_audit *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    eg_free(a);
}

void eg_audit_head(struct eg_audit *a, int64_t *ret_seq, char ret_head[EG_AUDIT_HASH_HEX])
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    if (ret_seq)
        *ret_seq = a->seq;
    if (ret_head)
        memcpy(ret_head, a->head, EG_AUDIT_HASH_HEX);
    pthread_mutex_unlock(&a->lock);
}

int64_t eg_audit_failures(struct eg_audit *a)
{
    return a ? (int64_t)atomic_load(&a->failures) : 0;
}

/* ---- appending (group commit) ------------------------------------------------------------------
 */

/* Write every record of the group after *seq / head, and fdatasync. On success the new chain
 * state is in *seq, head and *size; on failure the file is cut back to *size. */
static int write_group(struct eg_audit *a, struct pending *group, int64_t *seq,
                       char head[EG_AUDIT_HASH_HEX], off_t *size, int *err)
{
    char stamp[40], hash[EG_AUDIT_HASH_HEX], *buf = NULL;
    size_t cap = 0, len = 0;
    int64_t s = *seq;
    int rc;

    for (struct pending *p = group; p; p = p->next)
        for (size_t i = 0; i < p->n; i++)
            cap += strlen(p->frags[i]) + LINE_OVERHEAD;
    if (!(buf = eg_malloc(cap + 1)))
        return EG_ENOMEM;
    eg_format_time(eg_now_ms(), stamp, sizeof stamp);
    for (struct pending *p = group; p; p = p->next) {
        for (size_t i = 0; i < p->n; i++) {
            size_t ls = len;
            int k =
                snprintf(buf + len, cap - len, "{\"seq\":%lld,\"time\":\"%s\",%s,\"prev\":\"%s\"}",
                         (long long)++s, stamp, p->frags[i], head);
            if (k < 0 || (size_t)k >= cap - len) {
                rc = EG_EINTERNAL;
                goto out;
            }
            len += (size_t)k;
            if ((rc = sha256_hex(buf + ls, len - ls, hash)) < 0)
                goto out;
            len--; /* the closing brace: the hash member follows */
            k = snprintf(buf + len, cap - len, ",\"hash\":\"%s\"}\n", hash);
            if (k < 0 || (size_t)k >= cap - len) {
                rc = EG_EINTERNAL;
                goto out;
            }
            len += (size_t)k;
            if ((rc = sha256_hex(buf + ls, len - 1 - ls, head)) < 0)
                goto out;
        }
    }
    if ((rc = write_all(a->fd, buf, len)) < 0 || fdatasync(a->fd) < 0) {
        *err = errno;
        if (ftruncate(a->fd, *size) == 0)
            (void)fdatasync(a->fd);
        rc = EG_EIO;
        goto out;
    }
    *seq = s;
    *size += (off_t)len;
    rc = 0;
out:
    eg_free(buf);
    return rc;
}

int eg_audit_append(struct eg_audit *a, const struct eg_audit_record *v, size_t n)
{
    struct pending p = {0};
    int rc = 0;

    if (!a)
        return EG_EINVAL;
    if (n == 0)
        return 0;
    if (!v) {
        rc = EG_EINVAL;
        goto out;
    }
    if (!(p.frags = eg_calloc(n, sizeof *p.frags))) {
        rc = EG_ENOMEM;
        goto out;
    }
    p.n = n;
    for (size_t i = 0; i < n; i++)
        if ((rc = make_fragment(&v[i], &p.frags[i])) < 0)
            goto out;

    pthread_mutex_lock(&a->lock);
    *a->q_tail = &p;
    a->q_tail = &p.next;
    while (!p.done) {
        if (a->flushing) {
            pthread_cond_wait(&a->cond, &a->lock);
            continue;
        }
        struct pending *group = a->q_head;
        int64_t seq = a->seq;
        char head[EG_AUDIT_HASH_HEX];
        off_t size = a->size;
        int err = 0;
        memcpy(head, a->head, sizeof head);
        a->q_head = NULL;
        a->q_tail = &a->q_head;
        a->flushing = true;
        pthread_mutex_unlock(&a->lock);
        int grc = write_group(a, group, &seq, head, &size, &err);
        pthread_mutex_lock(&a->lock);
        if (grc == 0) {
            a->seq = seq;
            memcpy(a->head, head, sizeof head);
            a->size = size;
        }
        for (struct pending *g = group, *next; g; g = next) {
            next = g->next;
            g->rc = grc;
            g->err = err;
            g->done = true;
        }
        a->flushing = false;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    rc = p.rc;
    if (rc == EG_EIO)
        errno = p.err;
out:
    for (size_t i = 0; p.frags && i < n; i++)
        eg_free(p.frags[i]);
    eg_free(p.frags);
    if (rc < 0)
        atomic_fetch_add(&a->failures, 1);
    return rc;
}

/* ---- verifying the whole file ------------------------------------------------------------------
 */

static int broken(struct eg_audit_report *rep, int64_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int broken(struct eg_audit_report *rep, int64_t line, const char *fmt, ...)
{
    va_list ap;
    rep->bad_line = line;
    va_start(ap, fmt);
    vsnprintf(rep->why, sizeof rep->why, fmt, ap);
    va_end(ap);
    return EG_EPARSE;
}

/* Check line number no (without its newline) against the chain so far. */
static int verify_line(struct eg_audit_report *rep, int64_t no, const char *line, size_t len)
{
    char prev[EG_AUDIT_HASH_HEX], w[200];
    int64_t seq = 0;
    int rc;

    if (len > EG_MAX_AUDIT_LINE)
        return broken(rep, no, "longer than any record (%d bytes)", EG_MAX_AUDIT_LINE);
    if ((rc = check_line(line, len, &seq, prev, w, sizeof w)) < 0)
        return rc == EG_EPARSE ? broken(rep, no, "%s", w) : rc;
    if (seq != rep->last_seq + 1)
        return broken(rep, no,
                      rep->last_seq == 0
                          ? "seq %lld where %lld was expected (the log does not start with its "
                            "first record)"
                          : "seq %lld where %lld was expected (a record was removed, inserted or "
                            "reordered)",
                      (long long)seq, (long long)rep->last_seq + 1);
    if (strcmp(prev, rep->head) != 0)
        return broken(rep, no,
                      no == 1 ? "\"prev\" of the first record is not 64 zeros"
                              : "\"prev\" does not match the previous line (that line was altered, "
                                "or lines were removed, inserted or reordered)");
    if ((rc = sha256_hex(line, len, rep->head)) < 0)
        return rc;
    rep->last_seq = seq;
    rep->records++;
    return 0;
}

int eg_audit_verify(const char *path, struct eg_audit_report *rep)
{
    char *buf = NULL;
    size_t cap = EG_MAX_AUDIT_LINE + 1 + READ_CHUNK, len = 0, scan = 0;
    int64_t no = 0;
    int fd = -1, rc;

    if (!rep)
        return EG_EINVAL;
    memset(rep, 0, sizeof *rep);
    memcpy(rep->head, zero_hex, sizeof rep->head);
    if (!path)
        return EG_EINVAL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return EG_EIO;
    if (!(buf = eg_malloc(cap))) {
        rc = EG_ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t k = read(fd, buf + len, cap - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = EG_EIO;
            goto out;
        }
        if (k == 0) {
            rc = len ? broken(rep, no + 1,
                              "incomplete last line (no newline): a write was cut short; the "
                              "daemon moves it aside at its next start")
                     : 0;
            goto out;
        }
        len += (size_t)k;
        size_t start = 0;
        char *nl;
        while ((nl = memchr(buf + scan, '\n', len - scan))) {
            size_t end = (size_t)(nl - buf);
            if ((rc = verify_line(rep, ++no, buf + start, end - start)) < 0)
                goto out;
            start = scan = end + 1;
        }
        scan = len;
        if (start) {
            memmove(buf, buf + start, len - start);
            len -= start;
            scan -= start;
        }
        if (len > EG_MAX_AUDIT_LINE) {
            rc = broken(rep, no + 1, "longer than any record (%d bytes)", EG_MAX_AUDIT_LINE);
            goto out;
        }
    }
out:
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    eg_free(buf);
    return rc;
}

/* ---- paths and the subcommand ------------------------------------------------------------------
 */

char *eg_audit_path(const char *audit_log, const char *state_dir)
{
    if (audit_log && *audit_log)
        return eg_strdup(audit_log);
    return eg_asprintf("%s/audit.log", state_dir && *state_dir ? state_dir : ".");
}

static int usage(FILE *out, int code)
{
    fprintf(out, "usage: easgate audit verify [--config FILE] [LOG]\n"
                 "  Check the hash chain of the audit log LOG (default: audit_log, or\n"
                 "  <state_dir>/audit.log, of the configuration).\n"
                 "  Exit status: 0 intact, 1 broken (altered, reordered, cut or torn),\n"
                 "  2 usage error or unreadable.\n");
    return code;
}

/* The log path from the configuration (defaults < file < environment). */
static int configured_path(const char *config_file, char *const envp[], char **ret)
{
    char *argv[4] = {"easgate", NULL, NULL, NULL};
    struct eg_config *cfg = NULL;
    struct eg_config_diags diags = {0};
    int argc = 1, code = 2;

    if (config_file) {
        argv[argc++] = "--config";
        argv[argc++] = (char *)config_file;
    }
    if (eg_config_load(argc, argv, envp, &cfg, &diags) < 0) {
        /* Only problems in the file itself matter here (see below). */
    }
    if (!cfg) {
        fprintf(stderr, "easgate audit: out of memory\n");
        goto out;
    }
    /* Cross-field rules about serving (TLS material...) do not matter here, but a file that
     * does not parse, or a rejected value, could point at the wrong log: check the file layer
     * on its own. */
    if (cfg->config_file) {
        struct eg_config *scratch = NULL;
        struct eg_config_diags fd = {0};
        char *text = NULL;
        size_t len = 0;
        int rc = eg_read_file(cfg->config_file, EG_MAX_CONFIG_BYTES, &text, &len);
        if (rc < 0) {
            fprintf(stderr, "easgate audit: cannot read %s: %s%s%s\n", cfg->config_file,
                    eg_strerror(rc), rc == EG_EIO ? ": " : "", rc == EG_EIO ? strerror(errno) : "");
            goto out;
        }
        if ((rc = eg_config_defaults(&scratch)) == 0)
            rc = eg_config_parse_buffer(scratch, cfg->config_file, text, len, &fd);
        for (size_t i = 0; i < fd.n; i++)
            fprintf(stderr, "%s: %s\n", fd.v[i].where, fd.v[i].message);
        if (rc == EG_ENOMEM)
            fprintf(stderr, "easgate audit: out of memory\n");
        eg_config_diags_free(&fd);
        eg_config_free(scratch);
        eg_free(text);
        if (rc < 0)
            goto out;
    }
    if (!(*ret = eg_audit_path(cfg->audit_log, cfg->state_dir))) {
        fprintf(stderr, "easgate audit: out of memory\n");
        goto out;
    }
    code = 0;
out:
    eg_config_diags_free(&diags);
    eg_config_free(cfg);
    return code;
}

int eg_audit_cli(int argc, char *const argv[], char *const envp[])
{
    const char *config_file = NULL, *log = NULL;
    char *path = NULL;
    struct eg_audit_report rep;
    int code = 2, rc;

    if (argc < 2 || !argv[1])
        return usage(stderr, 2);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout, 0);
    if (strcmp(argv[1], "verify") != 0) {
        fprintf(stderr, "easgate audit: unknown action \"%s\"\n", argv[1]);
        return usage(stderr, 2);
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return usage(stdout, 0);
        if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            config_file = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            config_file = a + 9;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "easgate audit: unknown option %s\n", a);
            return usage(stderr, 2);
        } else if (!log) {
            log = a;
        } else {
            fprintf(stderr, "easgate audit: more than one log given\n");
            return usage(stderr, 2);
        }
    }
    if (log) {
        if (!(path = eg_strdup(log))) {
            fprintf(stderr, "easgate audit: out of memory\n");
            return 2;
        }
    } else if ((code = configured_path(config_file, envp, &path)) != 0) {
        return code;
    }
    rc = eg_audit_verify(path, &rep);
    if (rc == 0) {
        printf("%s: %lld record%s, chain intact; last seq %lld, head %s\n", path,
               (long long)rep.records, rep.records == 1 ? "" : "s", (long long)rep.last_seq,
               rep.head);
        code = 0;
    } else if (rc == EG_EPARSE) {
        fprintf(stderr, "%s:%lld: %s\n", path, (long long)rep.bad_line, rep.why);
        fprintf(stderr,
                "%s: NOT intact: first broken line %lld (%lld record%s before it verify, up to "
                "seq %lld)\n",
                path, (long long)rep.bad_line, (long long)rep.records, rep.records == 1 ? "" : "s",
                (long long)rep.last_seq);
        code = 1;
    } else {
        fprintf(stderr, "%s: cannot be checked: %s%s%s\n", path, eg_strerror(rc),
                rc == EG_EIO ? ": " : "", rc == EG_EIO ? strerror(errno) : "");
        code = 2;
    }
    eg_free(path);
    return code;
}
