/* queue.c - the durable command journal: SQLite (WAL, synchronous=FULL), group commit for
 * submitters, idempotency by console id, the command state machine and crash recovery.
 *
 * One connection serves every call, guarded by db_lock; the statements are prepared once at open.
 * Submitters share transactions (leader/follower group commit, see eg_queue_submit).
 *
 * Invariants every writer keeps:
 *   - next_attempt_ms is non-zero only in state retrying (claim, cancel and finish clear it);
 *   - per mailbox_key, commands run in acceptance order, one batch at a time: a command is
 *     claimable only when no older command of its mailbox is non-final and no command of its
 *     mailbox is running. Commands without a mailbox_key are independent of each other.
 * State codes on disk are the enum eg_cmd_state values (pinned below): never renumber them.
 * The schema is versioned with PRAGMA user_version; add a step to `migrations` for a new table.
 */
#include "agent/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>

#include "agent/db.h"
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"

_Static_assert(EG_STATE_QUEUED == 0 && EG_STATE_RUNNING == 1 && EG_STATE_RETRYING == 2 &&
                   EG_STATE_SUCCEEDED == 3 && EG_STATE_FAILED == 4 && EG_STATE_CANCELLED == 5 &&
                   EG_STATE__COUNT == 6,
               "state codes are stored on disk; the SQL below uses them as literals");

/* ---- schema ------------------------------------------------------------------------------ */

/* migrations[v] takes the schema from user_version v to v + 1. Append only. */
static const char *const migrations[] = {
    /* 0 -> 1: the command journal. state < 3 means non-final (queued, running, retrying). */
    "CREATE TABLE commands ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT," /* acceptance order, never reused */
    " id TEXT NOT NULL UNIQUE,"
    " type TEXT NOT NULL,"
    " mailbox_key TEXT,"
    " body TEXT NOT NULL,"
    " client TEXT,"
    " state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 5),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL DEFAULT 0,"
    " finished_ms INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    " result TEXT, error_code TEXT, error_message TEXT, error_detail TEXT);"
    /* listing by state, counts, the queued part of claim (seq order within a state) */
    "CREATE INDEX commands_state ON commands(state, seq);"
    /* state + next_attempt: next_attempt_ms is only set while retrying, so the index is partial */
    "CREATE INDEX commands_retry ON commands(next_attempt_ms) WHERE state = 2;"
    /* per-mailbox order: the non-final commands of a mailbox in seq order */
    "CREATE INDEX commands_mailbox_pending ON commands(mailbox_key, seq)"
    " WHERE state < 3 AND mailbox_key IS NOT NULL;"
    /* per-mailbox exclusivity: is a batch of this mailbox running? */
    "CREATE INDEX commands_mailbox_running ON commands(mailbox_key)"
    " WHERE state = 1 AND mailbox_key IS NOT NULL;",
    /* 1 -> 2: the claim order across mailboxes (fair_rank): claims walk the queued and the
     * retrying commands in (rank, seq) order through these indexes and stop at the first
     * claimable one. Rows from before keep rank 0 (claimed first). */
    "ALTER TABLE commands ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX commands_claim ON commands(rank, seq) WHERE state = 0;"
    "CREATE INDEX commands_claim_retry ON commands(rank, seq) WHERE state = 2;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- statements -------------------------------------------------------------------------- */

#define COLS                                                                                       \
    "seq, id, type, mailbox_key, body, client, state, attempts, created_ms, updated_ms, "          \
    "started_ms, finished_ms, next_attempt_ms, result, error_code, error_message, error_detail"
enum {
    C_SEQ,
    C_ID,
    C_TYPE,
    C_MAILBOX,
    C_BODY,
    C_CLIENT,
    C_STATE,
    C_ATTEMPTS,
    C_CREATED,
    C_UPDATED,
    C_STARTED,
    C_FINISHED,
    C_NEXT,
    C_RESULT,
    C_ECODE,
    C_EMSG,
    C_EDETAIL
};

/* Claimable with respect to its mailbox (see the invariants at the top). Alias c. The terms
 * match the partial indexes' WHERE clauses so SQLite can use them. */
#define HEAD_OK                                                                                    \
    "(c.mailbox_key IS NULL OR ("                                                                  \
    "NOT EXISTS (SELECT 1 FROM commands o WHERE o.mailbox_key = c.mailbox_key AND o.state < 3"     \
    " AND o.seq < c.seq) AND "                                                                     \
    "NOT EXISTS (SELECT 1 FROM commands r WHERE r.mailbox_key = c.mailbox_key"                     \
    " AND r.state = 1)))"

enum st {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_INSERT,
    ST_GET,
    ST_EXISTS,
    ST_CLAIM_HEAD,
    ST_CLAIM_MORE,
    ST_CLAIM_TAKE,
    ST_CANCEL,
    ST_FINISH,
    ST_RETRY,
    ST_LIST_ALL,
    ST_LIST_STATE,
    ST_COUNTS,
    ST_WAKEUP,
    ST_SYNC_NORMAL,
    ST_SYNC_FULL,
    ST__COUNT
};

static const char *const sql_text[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    /* A claim's commit needs no fsync (see eg_queue_claim); everything else is FULL. */
    [ST_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
    [ST_SYNC_FULL] = "PRAGMA synchronous = FULL",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT submit",
    [ST_RELEASE] = "RELEASE submit",
    [ST_ROLLBACK_TO] = "ROLLBACK TO submit",
    [ST_INSERT] = "INSERT INTO commands (id, type, mailbox_key, body, client, state, created_ms,"
                  " updated_ms, rank) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, ?7)"
                  " ON CONFLICT (id) DO NOTHING",
    [ST_GET] = "SELECT " COLS " FROM commands WHERE id = ?1",
    [ST_EXISTS] = "SELECT 1 FROM commands WHERE id = ?1",
    /* Eligible commands in claim order (rank, then seq): queued, or retrying and due at ?1. */
    /* INDEXED BY: each arm is walked in claim order and the merge stops at the first row
     * choose() takes; without it SQLite sorts every eligible row on each claim. */
    [ST_CLAIM_HEAD] = "SELECT seq, type, mailbox_key, rank FROM commands c"
                      " INDEXED BY commands_claim WHERE c.state = 0 AND " HEAD_OK " UNION ALL "
                      "SELECT seq, type, mailbox_key, rank FROM commands c"
                      " INDEXED BY commands_claim_retry WHERE c.state = 2"
                      " AND c.next_attempt_ms <= ?1 AND " HEAD_OK " ORDER BY 4, 1",
    [ST_CLAIM_MORE] = "SELECT seq, type, state, next_attempt_ms FROM commands"
                      " WHERE mailbox_key = ?1 AND state < 3 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [ST_CLAIM_TAKE] = "UPDATE commands SET state = 1, attempts = attempts + 1, started_ms = ?2,"
                      " updated_ms = ?2, next_attempt_ms = 0 WHERE seq = ?1 AND state IN (0, 2)"
                      " RETURNING " COLS,
    [ST_CANCEL] = "UPDATE commands SET state = 5, finished_ms = ?2, updated_ms = ?2,"
                  " next_attempt_ms = 0 WHERE id = ?1 AND state IN (0, 2) RETURNING " COLS,
    [ST_FINISH] = "UPDATE commands SET state = ?2, finished_ms = ?3, updated_ms = ?3,"
                  " next_attempt_ms = 0, result = ?4, error_code = ?5, error_message = ?6,"
                  " error_detail = ?7 WHERE id = ?1 AND state = 1",
    [ST_RETRY] = "UPDATE commands SET state = 2, next_attempt_ms = ?2, updated_ms = ?3,"
                 " result = NULL, error_code = ?4, error_message = ?5, error_detail = ?6"
                 " WHERE id = ?1 AND state = 1",
    [ST_LIST_ALL] = "SELECT " COLS " FROM commands WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    [ST_LIST_STATE] = "SELECT " COLS " FROM commands WHERE state = ?3 AND seq > ?1"
                      " ORDER BY seq LIMIT ?2",
    [ST_COUNTS] = "SELECT state, count(*) FROM commands GROUP BY state",
    /* The earliest retrying command a claim could take then (blocked ones wait for the
     * command ahead of them, whose worker claims again when it is done). */
    [ST_WAKEUP] = "SELECT next_attempt_ms FROM commands c WHERE c.state = 2 AND " HEAD_OK
                  " ORDER BY next_attempt_ms LIMIT 1",
};

/* ---- the queue --------------------------------------------------------------------------- */

/* One eg_queue_submit call waiting for (or being) the group commit. Lives on its caller's
 * stack; the leader fills rc, outcomes and records, then sets done under gc_lock. */
struct submit_req {
    const struct eg_submit *items;
    size_t n;
    enum eg_submit_outcome *outcomes;
    struct eg_cmd_record **records;
    int rc;
    bool done;
    struct submit_req *next;
};

struct eg_queue {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    pthread_mutex_t db_lock; /* the connection and its statements */
    pthread_mutex_t gc_lock; /* pending, pending_tail, committing */
    pthread_cond_t gc_cond;  /* a group commit finished */
    bool locks_ready;
    struct submit_req *pending, **pending_tail;
    bool committing;
    _Atomic int64_t commits; /* transactions committed by eg_queue_submit */
    /* fair_rank: when a command of each mailbox was last accepted, by a hash of its key
     * (db_lock). Not persisted: after a restart every mailbox counts as fresh. */
    int64_t lane_accepted[EG_QUEUE_FAIR_LANES];
};

static int db_err(int rc)
{
    return rc == SQLITE_NOMEM ? EG_ENOMEM : EG_EDB;
}

/* Run a statement whose rows (if any) are not needed; resets it. */
static int step_done(struct eg_queue *q, enum st s)
{
    sqlite3_stmt *st = q->st[s];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* Roll back the open transaction, if any (after an error). */
static void rollback(struct eg_queue *q)
{
    if (!sqlite3_get_autocommit(q->db))
        (void)step_done(q, ST_ROLLBACK);
}

/* ---- records ----------------------------------------------------------------------------- */

const char *eg_cmd_state_name(enum eg_cmd_state s)
{
    static const char *const names[EG_STATE__COUNT] = {
        [EG_STATE_QUEUED] = "queued",     [EG_STATE_RUNNING] = "running",
        [EG_STATE_RETRYING] = "retrying", [EG_STATE_SUCCEEDED] = "succeeded",
        [EG_STATE_FAILED] = "failed",     [EG_STATE_CANCELLED] = "cancelled",
    };
    return (unsigned)s < EG_STATE__COUNT ? names[s] : "unknown";
}

int eg_cmd_state_parse(const char *s, enum eg_cmd_state *ret)
{
    if (!s)
        return EG_EINVAL;
    for (int i = 0; i < EG_STATE__COUNT; i++) {
        if (strcmp(s, eg_cmd_state_name((enum eg_cmd_state)i)) == 0) {
            *ret = (enum eg_cmd_state)i;
            return 0;
        }
    }
    return EG_EINVAL;
}

bool eg_cmd_state_is_final(enum eg_cmd_state s)
{
    return s == EG_STATE_SUCCEEDED || s == EG_STATE_FAILED || s == EG_STATE_CANCELLED;
}

void eg_cmd_record_free(struct eg_cmd_record *r)
{
    if (!r)
        return;
    eg_free(r->id);
    eg_free(r->type);
    eg_free(r->mailbox_key);
    eg_free(r->body);
    eg_free(r->client);
    eg_free(r->result);
    eg_free(r->error_code);
    eg_free(r->error_message);
    eg_free(r->error_detail);
    eg_free(r);
}

void eg_cmd_records_free(struct eg_cmd_record **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        eg_cmd_record_free(v[i]);
    eg_free(v);
}

/* Copy text column i (NULL stays NULL). */
static int col_text(sqlite3_stmt *st, int i, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return 0;
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t)
        return EG_ENOMEM;
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *s = eg_malloc(n + 1);
    if (!s)
        return EG_ENOMEM;
    memcpy(s, t, n);
    s[n] = '\0';
    *out = s;
    return 0;
}

/* Build a record from the current row of a statement selecting COLS. */
static int row_record(sqlite3_stmt *st, struct eg_cmd_record **ret)
{
    struct eg_cmd_record *r = NULL;
    int rc;

    r = eg_calloc(1, sizeof *r);
    if (!r)
        return EG_ENOMEM;
    int64_t state = sqlite3_column_int64(st, C_STATE);
    if (state < 0 || state >= EG_STATE__COUNT) {
        rc = EG_EDB;
        goto out;
    }
    r->seq = sqlite3_column_int64(st, C_SEQ);
    r->state = (enum eg_cmd_state)state;
    r->attempts = sqlite3_column_int(st, C_ATTEMPTS);
    r->created_ms = sqlite3_column_int64(st, C_CREATED);
    r->updated_ms = sqlite3_column_int64(st, C_UPDATED);
    r->started_ms = sqlite3_column_int64(st, C_STARTED);
    r->finished_ms = sqlite3_column_int64(st, C_FINISHED);
    r->next_attempt_ms = sqlite3_column_int64(st, C_NEXT);
    if ((rc = col_text(st, C_ID, &r->id)) < 0 || (rc = col_text(st, C_TYPE, &r->type)) < 0 ||
        (rc = col_text(st, C_MAILBOX, &r->mailbox_key)) < 0 ||
        (rc = col_text(st, C_BODY, &r->body)) < 0 ||
        (rc = col_text(st, C_CLIENT, &r->client)) < 0 ||
        (rc = col_text(st, C_RESULT, &r->result)) < 0 ||
        (rc = col_text(st, C_ECODE, &r->error_code)) < 0 ||
        (rc = col_text(st, C_EMSG, &r->error_message)) < 0 ||
        (rc = col_text(st, C_EDETAIL, &r->error_detail)) < 0)
        goto out;
    if (!r->id || !r->type || !r->body) {
        rc = EG_EDB;
        goto out;
    }
    *ret = r;
    r = NULL;
    rc = 0;
out:
    eg_cmd_record_free(r);
    return rc;
}

/* The record of a command just inserted by submit, built without reading it back. */
static struct eg_cmd_record *created_record(const struct eg_submit *it, int64_t seq, int64_t now)
{
    struct eg_cmd_record *r = eg_calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->seq = seq;
    r->state = EG_STATE_QUEUED;
    r->created_ms = r->updated_ms = now;
    r->id = eg_strdup(it->id);
    r->type = eg_strdup(it->type);
    r->body = eg_strdup(it->body);
    r->mailbox_key = eg_strdup(it->mailbox_key);
    r->client = eg_strdup(it->client);
    if (!r->id || !r->type || !r->body || (it->mailbox_key && !r->mailbox_key) ||
        (it->client && !r->client)) {
        eg_cmd_record_free(r);
        return NULL;
    }
    return r;
}

/* Current record of id (db_lock held). */
static int lookup(struct eg_queue *q, const char *id, struct eg_cmd_record **ret)
{
    sqlite3_stmt *st = q->st[ST_GET];
    int rc = bind_text(st, 1, id);
    if (rc != SQLITE_OK) {
        rc = db_err(rc);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = row_record(st, ret);
    else
        rc = rc == SQLITE_DONE ? EG_ENOTFOUND : db_err(rc);
out:
    sqlite3_reset(st);
    return rc;
}

/* 0 when id exists, EG_ENOTFOUND or a database error (db_lock held). */
static int exists(struct eg_queue *q, const char *id)
{
    sqlite3_stmt *st = q->st[ST_EXISTS];
    int rc = bind_text(st, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? EG_ENOTFOUND : db_err(rc);
}

/* ---- open / close ------------------------------------------------------------------------ */

static int exec_sql(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_err(rc);
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *ret)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *ret = sqlite3_column_int64(st, 0);
        rc = 0;
    } else {
        rc = db_err(rc);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Bring the schema to SCHEMA_VERSION in one transaction. A newer schema than this build knows
 * is refused (EG_EDB) rather than used. */
static int migrate(sqlite3 *db)
{
    int64_t version = 0;
    int rc;

    if ((rc = exec_sql(db, "BEGIN IMMEDIATE")) < 0)
        return rc;
    if ((rc = pragma_int(db, "PRAGMA user_version", &version)) < 0)
        goto out;
    if (version < 0 || version > SCHEMA_VERSION) {
        rc = EG_EDB;
        goto out;
    }
    for (int64_t v = version; v < SCHEMA_VERSION; v++)
        if ((rc = exec_sql(db, migrations[v])) < 0)
            goto out;
    if (version < SCHEMA_VERSION) {
        char sql[48];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        if ((rc = exec_sql(db, sql)) < 0)
            goto out;
    }
    rc = exec_sql(db, "COMMIT");
out:
    if (rc < 0 && !sqlite3_get_autocommit(db))
        (void)exec_sql(db, "ROLLBACK");
    return rc;
}

/* Crash recovery: whatever was running when the process died is queued again (its attempts
 * are kept: the attempt that was cut short counts). */
static int recover(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        db, "UPDATE commands SET state = 0, updated_ms = ?1 WHERE state = 1", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_bind_int64(st, 1, eg_now_ms())) == SQLITE_OK)
        rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

int eg_queue_open(const char *state_dir, struct eg_queue **ret)
{
    struct eg_queue *q = NULL;
    char *path = NULL;
    int64_t v = 0;
    int rc;

    if (!state_dir || !*state_dir || !ret || strlen(state_dir) > EG_MAX_PATH_LEN - 16)
        return EG_EINVAL;
    q = eg_calloc(1, sizeof *q);
    path = eg_asprintf("%s/easgate.db", state_dir);
    if (!q || !path) {
        rc = EG_ENOMEM;
        goto out;
    }
    q->pending_tail = &q->pending;
    atomic_init(&q->commits, 0);
    if (pthread_mutex_init(&q->db_lock, NULL) != 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&q->gc_lock, NULL) != 0) {
        pthread_mutex_destroy(&q->db_lock);
        rc = EG_ENOMEM;
        goto out;
    }
    if (pthread_cond_init(&q->gc_cond, NULL) != 0) {
        pthread_mutex_destroy(&q->gc_lock);
        pthread_mutex_destroy(&q->db_lock);
        rc = EG_ENOMEM;
        goto out;
    }
    q->locks_ready = true;

    if ((rc = eg_db_open(state_dir, path, EG_QUEUE_BUSY_TIMEOUT_MS, &q->db)) < 0)
        goto out;
    if ((rc = exec_sql(q->db, "PRAGMA foreign_keys = ON")) < 0)
        goto out;
    if ((rc = pragma_int(q->db, "PRAGMA synchronous", &v)) < 0)
        goto out;
    if (v != 2) { /* FULL */
        rc = EG_EDB;
        goto out;
    }
    if ((rc = migrate(q->db)) < 0)
        goto out;
    if ((rc = recover(q->db)) < 0)
        goto out;
    for (int i = 0; i < ST__COUNT; i++) {
        rc = sqlite3_prepare_v3(q->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &q->st[i], NULL);
        if (rc != SQLITE_OK) {
            rc = db_err(rc);
            goto out;
        }
    }
    if ((rc = eg_db_tighten(path)) < 0)
        goto out;
    *ret = q;
    q = NULL;
    rc = 0;
out:
    eg_queue_close(q);
    eg_free(path);
    return rc;
}

void eg_queue_close(struct eg_queue *q)
{
    if (!q)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(q->st[i]);
    sqlite3_close(q->db);
    if (q->locks_ready) {
        pthread_cond_destroy(&q->gc_cond);
        pthread_mutex_destroy(&q->gc_lock);
        pthread_mutex_destroy(&q->db_lock);
    }
    eg_free(q);
}

int64_t eg_queue_commits(struct eg_queue *q)
{
    return q ? atomic_load(&q->commits) : 0;
}

/* ---- submit (group commit) --------------------------------------------------------------- */

static void clear_records(struct submit_req *r)
{
    for (size_t i = 0; i < r->n; i++) {
        eg_cmd_record_free(r->records[i]);
        r->records[i] = NULL;
    }
}

/* The claim order across mailboxes. Claims take eligible heads by (rank, seq); a command's rank
 * is fixed at acceptance: the time its mailbox last had a command accepted, but no earlier than
 * now - EG_QUEUE_FAIR_WINDOW_MS (that is also the rank of a mailbox not seen within the window,
 * and of commands without a mailbox). So a mailbox that has been quiet goes ahead of mailboxes
 * with a stream of commands - a console's single block is not queued behind a bulk job of
 * other mailboxes - while no command is overtaken by commands accepted more than the window
 * after it. Order within a mailbox is seq order regardless (HEAD_OK). The lanes are a hash
 * table without chaining: two mailboxes sharing a lane only make the order less fair. */
static size_t fair_lane(const char *mailbox_key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)mailbox_key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % EG_QUEUE_FAIR_LANES);
}

static int64_t fair_rank(struct eg_queue *q, const char *mailbox_key, int64_t now)
{
    int64_t floor = now - EG_QUEUE_FAIR_WINDOW_MS;
    if (!mailbox_key)
        return floor;
    int64_t last = q->lane_accepted[fair_lane(mailbox_key)];
    return last > floor ? last : floor;
}

/* Insert one item unless its id exists; *ret_created tells which. */
static int insert_item(struct eg_queue *q, const struct eg_submit *it, int64_t now,
                       bool *ret_created)
{
    sqlite3_stmt *st = q->st[ST_INSERT];
    int rc;
    if ((rc = bind_text(st, 1, it->id)) != SQLITE_OK || (rc = bind_text(st, 2, it->type)) ||
        (rc = bind_text(st, 3, it->mailbox_key)) || (rc = bind_text(st, 4, it->body)) ||
        (rc = bind_text(st, 5, it->client)) || (rc = sqlite3_bind_int64(st, 6, now)) ||
        (rc = sqlite3_bind_int64(st, 7, fair_rank(q, it->mailbox_key, now)))) {
        sqlite3_reset(st);
        return db_err(rc);
    }
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    *ret_created = sqlite3_changes(q->db) == 1;
    return 0;
}

/* One request inside the group's transaction, in its own savepoint. Sets r->rc (0,
 * EG_ECONFLICT or EG_ENOMEM: the savepoint is rolled back and the group goes on) and returns
 * 0, or returns a database error that fails the whole group. */
static int submit_one(struct eg_queue *q, struct submit_req *r)
{
    int64_t now = eg_now_ms(), first_new = 0;
    bool conflict = false, nomem = false;
    int rc;

    if ((rc = step_done(q, ST_SAVEPOINT)) < 0)
        return rc;
    for (size_t i = 0; i < r->n && !nomem; i++) {
        const struct eg_submit *it = &r->items[i];
        bool created = false;
        if ((rc = insert_item(q, it, now, &created)) < 0)
            return rc;
        if (created) {
            int64_t seq = sqlite3_last_insert_rowid(q->db);
            if (!first_new)
                first_new = seq;
            r->outcomes[i] = EG_SUBMIT_CREATED;
            r->records[i] = created_record(it, seq, now);
            nomem = !r->records[i];
            continue;
        }
        /* The id is stored: by an earlier call, or by an earlier item of this one. */
        struct eg_cmd_record *stored = NULL;
        rc = lookup(q, it->id, &stored);
        if (rc == EG_ENOMEM) {
            nomem = true;
            break;
        }
        if (rc < 0)
            return rc == EG_ENOTFOUND ? EG_EDB : rc;
        bool same = strcmp(stored->body, it->body) == 0;
        r->outcomes[i] = same ? EG_SUBMIT_EXISTS : EG_SUBMIT_CONFLICT;
        r->records[i] = stored;
        conflict |= !same;
    }
    if (!nomem && !conflict) {
        if ((rc = step_done(q, ST_RELEASE)) < 0)
            return rc;
        for (size_t i = 0; i < r->n; i++) /* fair_rank: only what is stored counts */
            if (r->outcomes[i] == EG_SUBMIT_CREATED && r->items[i].mailbox_key)
                q->lane_accepted[fair_lane(r->items[i].mailbox_key)] = now;
        r->rc = 0;
        return 0;
    }
    if ((rc = step_done(q, ST_ROLLBACK_TO)) < 0 || (rc = step_done(q, ST_RELEASE)) < 0)
        return rc;
    if (nomem) {
        clear_records(r);
        r->rc = EG_ENOMEM;
        return 0;
    }
    /* Nothing of this call is stored: drop the records of rows it had inserted itself. */
    for (size_t i = 0; i < r->n; i++) {
        if (r->outcomes[i] == EG_SUBMIT_CREATED ||
            (first_new && r->records[i] && r->records[i]->seq >= first_new)) {
            eg_cmd_record_free(r->records[i]);
            r->records[i] = NULL;
        }
    }
    r->rc = EG_ECONFLICT;
    return 0;
}

/* The leader's work: one transaction (one fsync) for every request of the group. */
static void commit_group(struct eg_queue *q, struct submit_req *group)
{
    int rc;

    pthread_mutex_lock(&q->db_lock);
    rc = step_done(q, ST_BEGIN);
    for (struct submit_req *r = group; rc == 0 && r; r = r->next)
        rc = submit_one(q, r);
    if (rc == 0)
        rc = step_done(q, ST_COMMIT);
    if (rc == 0) {
        atomic_fetch_add(&q->commits, 1);
    } else {
        rollback(q);
        for (struct submit_req *r = group; r; r = r->next) {
            clear_records(r);
            r->rc = rc == EG_ENOMEM ? EG_ENOMEM : EG_EDB;
        }
    }
    pthread_mutex_unlock(&q->db_lock);
}

/* Group commit: the request joins the pending list; whoever finds no commit in progress
 * becomes the leader, takes the whole list, commits it in one transaction and wakes the
 * followers, each of which finds its own result in its request. */
int eg_queue_submit(struct eg_queue *q, const struct eg_submit *items, size_t n,
                    enum eg_submit_outcome *outcomes, struct eg_cmd_record **records)
{
    if (!q || (n && (!items || !outcomes || !records)))
        return EG_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!items[i].id || !items[i].type || !items[i].body)
            return EG_EINVAL;
    for (size_t i = 0; i < n; i++)
        records[i] = NULL;
    if (n == 0)
        return 0;

    struct submit_req req = {
        .items = items, .n = n, .outcomes = outcomes, .records = records, .rc = EG_EINTERNAL};
    pthread_mutex_lock(&q->gc_lock);
    *q->pending_tail = &req;
    q->pending_tail = &req.next;
    while (!req.done) {
        if (q->committing) {
            pthread_cond_wait(&q->gc_cond, &q->gc_lock);
            continue;
        }
        struct submit_req *group = q->pending;
        q->pending = NULL;
        q->pending_tail = &q->pending;
        q->committing = true;
        pthread_mutex_unlock(&q->gc_lock);

        commit_group(q, group);

        pthread_mutex_lock(&q->gc_lock);
        while (group) {
            struct submit_req *next = group->next; /* a follower's req dies once done is seen */
            group->done = true;
            group = next;
        }
        q->committing = false;
        pthread_cond_broadcast(&q->gc_cond);
    }
    pthread_mutex_unlock(&q->gc_lock);
    return req.rc;
}

/* ---- reads ------------------------------------------------------------------------------- */

int eg_queue_get(struct eg_queue *q, const char *id, struct eg_cmd_record **ret)
{
    if (!q || !id || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&q->db_lock);
    int rc = lookup(q, id, ret);
    pthread_mutex_unlock(&q->db_lock);
    return rc;
}

int eg_queue_list(struct eg_queue *q, int state_filter, int64_t after_seq, size_t limit,
                  struct eg_cmd_record ***ret, size_t *ret_n, int64_t *ret_next)
{
    struct eg_cmd_record **v = NULL;
    size_t n = 0, cap = 0;
    int64_t next = 0;
    sqlite3_stmt *st = NULL;
    int rc;

    if (!q || !ret || !ret_n || !ret_next || limit == 0 || state_filter >= EG_STATE__COUNT)
        return EG_EINVAL;
    if (limit > (size_t)INT32_MAX)
        limit = INT32_MAX;
    pthread_mutex_lock(&q->db_lock);
    st = q->st[state_filter < 0 ? ST_LIST_ALL : ST_LIST_STATE];
    /* One row more than asked tells whether another page exists. */
    if ((rc = sqlite3_bind_int64(st, 1, after_seq)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, (int64_t)limit + 1)) != SQLITE_OK ||
        (state_filter >= 0 && (rc = sqlite3_bind_int(st, 3, state_filter)) != SQLITE_OK)) {
        rc = db_err(rc);
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            next = v[n - 1]->seq;
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : (limit < 64 ? limit : 64);
            if (ncap > limit)
                ncap = limit;
            struct eg_cmd_record **nv = eg_reallocarray(v, ncap, sizeof *nv);
            if (!nv) {
                rc = EG_ENOMEM;
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        if ((rc = row_record(st, &v[n])) < 0)
            goto out;
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        rc = db_err(rc);
        goto out;
    }
    *ret = v;
    *ret_n = n;
    *ret_next = next;
    v = NULL;
    rc = 0;
out:
    sqlite3_reset(st);
    pthread_mutex_unlock(&q->db_lock);
    if (v)
        eg_cmd_records_free(v, n);
    return rc;
}

int eg_queue_counts(struct eg_queue *q, int64_t counts[EG_STATE__COUNT])
{
    int64_t c[EG_STATE__COUNT] = {0};
    sqlite3_stmt *st;
    int rc;

    if (!q || !counts)
        return EG_EINVAL;
    pthread_mutex_lock(&q->db_lock);
    st = q->st[ST_COUNTS];
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t s = sqlite3_column_int64(st, 0);
        if (s >= 0 && s < EG_STATE__COUNT)
            c[s] = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&q->db_lock);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    memcpy(counts, c, sizeof c);
    return 0;
}

int64_t eg_queue_next_wakeup(struct eg_queue *q)
{
    int64_t t = 0;
    if (!q)
        return 0;
    pthread_mutex_lock(&q->db_lock);
    sqlite3_stmt *st = q->st[ST_WAKEUP];
    if (sqlite3_step(st) == SQLITE_ROW)
        t = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    pthread_mutex_unlock(&q->db_lock);
    return t;
}

/* ---- claim ------------------------------------------------------------------------------- */

static bool type_in(const char *const *types, const char *type)
{
    for (size_t i = 0; types && types[i]; i++)
        if (strcmp(types[i], type) == 0)
            return true;
    return false;
}

/* Choose the claim (db_lock held, transaction open): the first eligible command in claim order
 * (fair_rank) that heads its mailbox and whose mailbox is not busy, then, if its type coalesces,
 * the eligible coalescible commands right behind it in the same mailbox, stopping at the first that
 * is not (taking a later command past it would break the mailbox's order). */
static int choose(struct eg_queue *q, int64_t now, bool (*is_busy)(const char *, void *),
                  void *busy_ctx, const char *const *types, size_t max, int64_t *seqs,
                  size_t *ret_n)
{
    sqlite3_stmt *st = q->st[ST_CLAIM_HEAD];
    char *mailbox = NULL;
    bool coalesce = false;
    size_t n = 0;
    int rc;

    if ((rc = sqlite3_bind_int64(st, 1, now)) != SQLITE_OK) {
        rc = db_err(rc);
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mk = (const char *)sqlite3_column_text(st, 2);
        if (mk && is_busy && is_busy(mk, busy_ctx))
            continue;
        seqs[n++] = sqlite3_column_int64(st, 0);
        if (mk && max > 1) {
            const char *type = (const char *)sqlite3_column_text(st, 1);
            coalesce = type && type_in(types, type);
            if (coalesce && !(mailbox = eg_strdup(mk))) {
                rc = EG_ENOMEM;
                goto out;
            }
        }
        break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        rc = db_err(rc);
        goto out;
    }
    sqlite3_reset(st);
    rc = 0;
    if (!coalesce)
        goto out;

    st = q->st[ST_CLAIM_MORE];
    if ((rc = bind_text(st, 1, mailbox)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, seqs[0])) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, (int64_t)(max - 1))) != SQLITE_OK) {
        rc = db_err(rc);
        goto out;
    }
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 1);
        int64_t state = sqlite3_column_int64(st, 2), next = sqlite3_column_int64(st, 3);
        bool eligible = state == EG_STATE_QUEUED || (state == EG_STATE_RETRYING && next <= now);
        if (!eligible || !type || !type_in(types, type))
            break;
        seqs[n++] = sqlite3_column_int64(st, 0);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(rc);
out:
    sqlite3_reset(st);
    eg_free(mailbox);
    if (rc == 0)
        *ret_n = n;
    return rc;
}

int eg_queue_claim(struct eg_queue *q, int64_t now_ms,
                   bool (*is_busy)(const char *mailbox_key, void *ctx), void *busy_ctx,
                   const char *const *coalesce_types, size_t max, struct eg_cmd_record ***ret,
                   size_t *ret_n)
{
    struct eg_cmd_record **v = NULL;
    int64_t *seqs = NULL;
    size_t n = 0, done = 0;
    int rc;

    if (!q || !ret || !ret_n || max == 0)
        return EG_EINVAL;
    if (max > EG_MAX_COALESCE) /* bounds the work done under the lock */
        max = EG_MAX_COALESCE;
    seqs = eg_calloc(max, sizeof *seqs);
    if (!seqs)
        return EG_ENOMEM;
    pthread_mutex_lock(&q->db_lock);
    /* The claim is committed without an fsync (WAL, synchronous=NORMAL for this transaction
     * only): a claim lost to a power cut leaves its commands queued, which is what a restart
     * makes of running commands anyway, and the next FULL commit (the batch's outcomes) syncs
     * the WAL up to and including it. Saves one fsync per batch. */
    if ((rc = step_done(q, ST_SYNC_NORMAL)) < 0)
        goto out;
    if ((rc = step_done(q, ST_BEGIN)) < 0)
        goto out;
    if ((rc = choose(q, now_ms, is_busy, busy_ctx, coalesce_types, max, seqs, &n)) < 0)
        goto out;
    if (n == 0) {
        rc = step_done(q, ST_COMMIT);
        goto out;
    }
    v = eg_calloc(n, sizeof *v);
    if (!v) {
        rc = EG_ENOMEM;
        goto out;
    }
    sqlite3_stmt *st = q->st[ST_CLAIM_TAKE];
    for (; done < n; done++) {
        if ((rc = sqlite3_bind_int64(st, 1, seqs[done])) != SQLITE_OK ||
            (rc = sqlite3_bind_int64(st, 2, now_ms)) != SQLITE_OK) {
            rc = db_err(rc);
            goto out;
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            int brc = row_record(st, &v[done]);
            int src = sqlite3_step(st);
            rc = brc < 0 ? brc : src == SQLITE_DONE ? 0 : db_err(src);
        } else {
            rc = rc == SQLITE_DONE ? EG_EINTERNAL : db_err(rc); /* chosen row vanished */
        }
        sqlite3_reset(st);
        if (rc < 0)
            goto out;
    }
    rc = step_done(q, ST_COMMIT);
out:
    if (rc < 0) {
        rollback(q);
        eg_cmd_records_free(v, n);
        v = NULL;
    }
    /* A prepared PRAGMA on an open connection does not fail short of memory; try twice. The
     * claim stands either way (undoing it would strand its commands as running). */
    if (step_done(q, ST_SYNC_FULL) < 0)
        (void)step_done(q, ST_SYNC_FULL);
    pthread_mutex_unlock(&q->db_lock);
    eg_free(seqs);
    if (rc == 0) {
        *ret = v;
        *ret_n = v ? n : 0;
    }
    return rc;
}

/* ---- transitions ------------------------------------------------------------------------- */

int eg_queue_cancel(struct eg_queue *q, const char *id, struct eg_cmd_record **ret)
{
    struct eg_cmd_record *r = NULL;
    sqlite3_stmt *st;
    int rc;

    if (!q || !id)
        return EG_EINVAL;
    pthread_mutex_lock(&q->db_lock);
    /* A transaction, so that failing to build the record undoes the cancel. */
    if ((rc = step_done(q, ST_BEGIN)) < 0)
        goto out;
    st = q->st[ST_CANCEL];
    if ((rc = bind_text(st, 1, id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, eg_now_ms())) != SQLITE_OK) {
        sqlite3_reset(st);
        rc = db_err(rc);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int brc = row_record(st, &r);
        int src = sqlite3_step(st);
        sqlite3_reset(st);
        rc = brc < 0 ? brc : src == SQLITE_DONE ? 0 : db_err(src);
        if (rc == 0)
            rc = step_done(q, ST_COMMIT);
        goto out;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        rc = db_err(rc);
        goto out;
    }
    /* Nothing cancelled: unknown, running or already final. */
    rc = lookup(q, id, &r);
    if (rc == 0)
        rc = EG_ESTATE;
    if (rc == 0 || rc == EG_ESTATE || rc == EG_ENOTFOUND) {
        int crc = step_done(q, ST_COMMIT); /* nothing written: no sync */
        if (crc < 0)
            rc = crc;
    }
out:
    if (rc < 0)
        rollback(q); /* no-op when the transaction is already over */
    pthread_mutex_unlock(&q->db_lock);
    if ((rc == 0 || rc == EG_ESTATE) && ret)
        *ret = r;
    else
        eg_cmd_record_free(r);
    return rc;
}

/* After an UPDATE ... WHERE id = ? AND state = running changed nothing: why. */
static int not_running(struct eg_queue *q, const char *id)
{
    int rc = exists(q, id);
    return rc == 0 ? EG_ESTATE : rc;
}

/* One outcome with the lock held and no transaction of its own. */
static int outcome_locked(struct eg_queue *q, const struct eg_queue_outcome *o)
{
    sqlite3_stmt *st;
    int rc, which;

    if (!o->id || (o->state != EG_STATE_SUCCEEDED && o->state != EG_STATE_FAILED &&
                   o->state != EG_STATE_RETRYING))
        return EG_EINVAL;
    which = o->state == EG_STATE_RETRYING ? ST_RETRY : ST_FINISH;
    st = q->st[which];
    if (which == ST_FINISH) {
        rc = bind_text(st, 1, o->id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(st, 2, (int)o->state);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 3, eg_now_ms());
        if (rc == SQLITE_OK)
            rc = bind_text(st, 4, o->result);
        if (rc == SQLITE_OK)
            rc = bind_text(st, 5, o->error_code);
        if (rc == SQLITE_OK)
            rc = bind_text(st, 6, o->error_message);
        if (rc == SQLITE_OK)
            rc = bind_text(st, 7, o->error_detail);
    } else {
        /* 0 means "never" in a record; "now" is 1 */
        int64_t next = o->next_attempt_ms < 1 ? 1 : o->next_attempt_ms;
        rc = bind_text(st, 1, o->id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 2, next);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 3, eg_now_ms());
        if (rc == SQLITE_OK)
            rc = bind_text(st, 4, o->error_code);
        if (rc == SQLITE_OK)
            rc = bind_text(st, 5, o->error_message);
        if (rc == SQLITE_OK)
            rc = bind_text(st, 6, o->error_detail);
    }
    if (rc != SQLITE_OK) {
        sqlite3_reset(st);
        return db_err(rc);
    }
    if ((rc = step_done(q, which)) < 0)
        return rc;
    return sqlite3_changes(q->db) == 0 ? not_running(q, o->id) : 0;
}

int eg_queue_record_outcomes(struct eg_queue *q, const struct eg_queue_outcome *v, size_t n,
                             int *results)
{
    int rc;
    if (!q || (!v && n))
        return EG_EINVAL;
    if (n == 0)
        return 0;
    pthread_mutex_lock(&q->db_lock);
    if (n == 1) {
        rc = outcome_locked(q, &v[0]);
        if (results)
            results[0] = rc;
        rc = rc == EG_EDB ? rc : 0;
        goto out;
    }
    if ((rc = step_done(q, ST_BEGIN)) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        int r = outcome_locked(q, &v[i]);
        if (results)
            results[i] = r;
        if (r == EG_EDB) {
            rc = r;
            break;
        }
    }
    if (rc == 0)
        rc = step_done(q, ST_COMMIT);
    if (rc < 0) {
        rollback(q);
        for (size_t i = 0; results && i < n; i++)
            results[i] = rc;
    }
out:
    pthread_mutex_unlock(&q->db_lock);
    return rc;
}

int eg_queue_finish(struct eg_queue *q, const char *id, enum eg_cmd_state state, const char *result,
                    const char *error_code, const char *error_message, const char *error_detail)
{
    if (state != EG_STATE_SUCCEEDED && state != EG_STATE_FAILED)
        return EG_EINVAL;
    struct eg_queue_outcome o = {.id = id,
                                 .state = state,
                                 .result = result,
                                 .error_code = error_code,
                                 .error_message = error_message,
                                 .error_detail = error_detail};
    int r = 0, rc = eg_queue_record_outcomes(q, &o, 1, &r);
    return rc < 0 ? rc : r;
}

int eg_queue_retry(struct eg_queue *q, const char *id, int64_t next_attempt_ms,
                   const char *error_code, const char *error_message, const char *error_detail)
{
    struct eg_queue_outcome o = {.id = id,
                                 .state = EG_STATE_RETRYING,
                                 .next_attempt_ms = next_attempt_ms,
                                 .error_code = error_code,
                                 .error_message = error_message,
                                 .error_detail = error_detail};
    int r = 0, rc = eg_queue_record_outcomes(q, &o, 1, &r);
    return rc < 0 ? rc : r;
}
