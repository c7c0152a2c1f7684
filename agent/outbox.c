/* outbox.c - what the agent owes the console, kept on disk until acknowledged (see outbox.h).
 *
 * SQLite in <state_dir>/outbox.db (WAL, synchronous=FULL, busy timeout, schema version in
 * PRAGMA user_version), one connection guarded by `lock`. Tables:
 *   meta     one row: agent_id, next_seq (the sequence the next formed batch gets), acked_seq,
 *            resync;
 *   records  n (AUTOINCREMENT: strictly increasing, never reused), kind, at_ms, payload, bytes;
 *   batches  at most one row: the pending batch's seq and its record range [first_n, last_n];
 *   finals   the id of every command whose command.final record was ever appended (kept after
 *            the ack), written in the same transaction as the record: a second append for the
 *            same id is dropped, and start-up recovery (eg_outbox_has_final) finds the final
 *            commands of the journal whose record a crash lost; meta.finals_seq is the journal
 *            seq up to which every command is final and reported (where recovery resumes).
 * Invariants every writer keeps:
 *   - a batch row and its records are deleted together (ack), in one transaction;
 *   - a batch is formed from committed records only (forming waits for any open transaction),
 *     and records appended later have larger n, so the range of a batch never changes;
 *   - next_seq is incremented in the transaction that forms a batch: a sequence is never reused;
 *   - records/bytes/oldest_ms in memory equal the committed table (updated after each commit).
 * A transaction opened by eg_outbox_begin belongs to its thread (txn_owner) until commit or
 * rollback; `lock` is not held in between, so statistics never wait for it, but every other use
 * of the connection waits on txn_done.
 */
#include "agent/outbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>

#include "agent/db.h"
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"

/* migrations[v] takes the schema from user_version v to v + 1. Append only. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE meta ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " agent_id TEXT NOT NULL,"
    " next_seq INTEGER NOT NULL CHECK (next_seq >= 1),"
    " acked_seq INTEGER NOT NULL CHECK (acked_seq >= 0),"
    " resync INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE records ("
    " n INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL,"
    " at_ms INTEGER NOT NULL,"
    " payload TEXT NOT NULL,"
    " bytes INTEGER NOT NULL);"
    "CREATE TABLE batches ("
    " seq INTEGER PRIMARY KEY,"
    " first_n INTEGER NOT NULL,"
    " last_n INTEGER NOT NULL,"
    " records INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL);",
    /* 1 -> 2: which commands were reported (outbox.h eg_outbox_has_final) */
    "CREATE TABLE finals (id TEXT PRIMARY KEY) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO finals (id) SELECT json_extract(payload, '$.id') FROM records"
    " WHERE kind = 'command.final' AND json_extract(payload, '$.id') IS NOT NULL;"
    "ALTER TABLE meta ADD COLUMN finals_seq INTEGER NOT NULL DEFAULT 0;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

enum st {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_INSERT,
    ST_SET_RESYNC,
    ST_PENDING,
    ST_BATCH_RECORDS,
    ST_CANDIDATES,
    ST_FORM,
    ST_BUMP_SEQ,
    ST_DEL_RECORDS,
    ST_DEL_BATCH,
    ST_SET_ACKED,
    ST_OLDEST,
    ST_FINAL_ADD,
    ST_FINAL_HAS,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_FINALS_SEQ,
    ST_SET_FINALS_SEQ,
    ST__COUNT
};

static const char *const sql_text[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT] = "INSERT INTO records (kind, at_ms, payload, bytes) VALUES (?1, ?2, ?3, ?4)",
    [ST_SET_RESYNC] = "UPDATE meta SET resync = ?1 WHERE id = 1",
    [ST_PENDING] = "SELECT seq, first_n, last_n, records, bytes, created_ms FROM batches"
                   " ORDER BY seq LIMIT 1",
    [ST_BATCH_RECORDS] = "SELECT n, kind, at_ms, payload FROM records WHERE n BETWEEN ?1 AND ?2"
                         " ORDER BY n",
    [ST_CANDIDATES] = "SELECT n, bytes FROM records ORDER BY n LIMIT ?1",
    [ST_FORM] = "INSERT INTO batches (seq, first_n, last_n, records, bytes, created_ms)"
                " SELECT next_seq, ?1, ?2, ?3, ?4, ?5 FROM meta WHERE id = 1 RETURNING seq",
    [ST_BUMP_SEQ] = "UPDATE meta SET next_seq = next_seq + 1 WHERE id = 1",
    [ST_DEL_RECORDS] = "DELETE FROM records WHERE n BETWEEN ?1 AND ?2",
    [ST_DEL_BATCH] = "DELETE FROM batches WHERE seq = ?1",
    [ST_SET_ACKED] = "UPDATE meta SET acked_seq = ?1 WHERE id = 1",
    [ST_OLDEST] = "SELECT at_ms FROM records ORDER BY n LIMIT 1",
    [ST_FINAL_ADD] = "INSERT OR IGNORE INTO finals (id) VALUES (?1)",
    [ST_FINAL_HAS] = "SELECT 1 FROM finals WHERE id = ?1",
    [ST_SAVEPOINT] = "SAVEPOINT eg_final",
    [ST_RELEASE] = "RELEASE eg_final",
    [ST_ROLLBACK_TO] = "ROLLBACK TO eg_final",
    [ST_FINALS_SEQ] = "SELECT finals_seq FROM meta WHERE id = 1",
    [ST_SET_FINALS_SEQ] = "UPDATE meta SET finals_seq = ?1 WHERE id = 1",
};

struct eg_outbox {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    pthread_mutex_t lock;    /* the connection, the statements and every field below */
    pthread_cond_t txn_done; /* an eg_outbox_begin transaction ended */
    bool locks_ready;
    bool in_txn;
    pthread_t txn_owner;
    uint64_t txn_records, txn_bytes; /* appended in the open transaction */
    int64_t txn_first_at;            /* at_ms of its first record (0 = none) */
    bool txn_refused;                /* a record was refused in it */
    bool txn_clear;                  /* eg_outbox_resync_done in it: cleared at its COMMIT */
    /* committed state */
    uint64_t records, bytes;
    int64_t oldest_ms;
    uint64_t next_seq, acked_seq, pending_seq;
    bool resync;      /* the flag (set at once when a record is refused) */
    bool resync_disk; /* its value in meta; written again whenever they differ */
    uint64_t refused;
    uint64_t max_records, max_bytes;
    char agent_id[40];
};

static int db_err(int rc)
{
    return rc == SQLITE_NOMEM ? EG_ENOMEM : EG_EIO;
}

/* Run a statement whose rows are not needed; resets it and clears its bindings. */
static int step_done(struct eg_outbox *o, enum st s)
{
    sqlite3_stmt *st = o->st[s];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static void rollback_open(struct eg_outbox *o)
{
    if (!sqlite3_get_autocommit(o->db))
        (void)step_done(o, ST_ROLLBACK);
}

/* Wait (lock held) until no other thread's transaction is open. */
static void wait_txn(struct eg_outbox *o)
{
    while (o->in_txn && !pthread_equal(o->txn_owner, pthread_self()))
        pthread_cond_wait(&o->txn_done, &o->lock);
}

static bool own_txn(const struct eg_outbox *o)
{
    return o->in_txn && pthread_equal(o->txn_owner, pthread_self());
}

/* ---- open / close --------------------------------------------------------------------------- */

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

/* A random (version 4) UUID. */
static int make_uuid(char out[40])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return EG_EIO;
        }
        got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* Schema to SCHEMA_VERSION and the meta row (with a new agent id on first open), in one
 * transaction. A newer schema than this build knows is refused. */
static int migrate(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t version = 0;
    char uuid[40];
    int rc;

    if ((rc = exec_sql(db, "BEGIN IMMEDIATE")) < 0)
        return rc;
    if ((rc = pragma_int(db, "PRAGMA user_version", &version)) < 0)
        goto out;
    if (version < 0 || version > SCHEMA_VERSION) {
        rc = EG_EIO;
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
    if ((rc = make_uuid(uuid)) < 0)
        goto out;
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO meta (id, agent_id, next_seq, acked_seq, resync)"
                            " VALUES (1, ?1, 1, 0, 0) ON CONFLICT (id) DO NOTHING",
                            -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_bind_text(st, 1, uuid, -1, SQLITE_STATIC)) == SQLITE_OK)
        rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        rc = db_err(rc);
        goto out;
    }
    rc = exec_sql(db, "COMMIT");
out:
    if (rc < 0 && !sqlite3_get_autocommit(db))
        (void)exec_sql(db, "ROLLBACK");
    return rc;
}

/* Read the committed state into memory (at open). */
static int load_state(struct eg_outbox *o)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(o->db,
                                "SELECT agent_id, next_seq, acked_seq, resync,"
                                " (SELECT count(*) FROM records),"
                                " (SELECT coalesce(sum(bytes), 0) FROM records),"
                                " (SELECT at_ms FROM records ORDER BY n LIMIT 1),"
                                " (SELECT count(*) FROM batches),"
                                " (SELECT min(seq) FROM batches) FROM meta WHERE id = 1",
                                -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *id = sqlite3_column_text(st, 0);
        int64_t next = sqlite3_column_int64(st, 1), acked = sqlite3_column_int64(st, 2);
        int64_t n_batches = sqlite3_column_int64(st, 7), pending = sqlite3_column_int64(st, 8);
        /* One pending batch at most, and it is the one after the last acknowledged. */
        if (!id || strlen((const char *)id) != 36 || next < 1 || acked < 0 || n_batches > 1 ||
            (n_batches == 1 && (pending != acked + 1 || next != pending + 1)) ||
            (n_batches == 0 && next != acked + 1)) {
            rc = EG_EIO;
        } else {
            snprintf(o->agent_id, sizeof o->agent_id, "%s", (const char *)id);
            o->next_seq = (uint64_t)next;
            o->acked_seq = (uint64_t)acked;
            o->pending_seq = n_batches ? (uint64_t)pending : 0;
            o->resync = o->resync_disk = sqlite3_column_int64(st, 3) != 0;
            o->records = (uint64_t)sqlite3_column_int64(st, 4);
            o->bytes = (uint64_t)sqlite3_column_int64(st, 5);
            o->oldest_ms = sqlite3_column_int64(st, 6);
            rc = 0;
        }
    } else {
        rc = rc == SQLITE_DONE ? EG_EIO : db_err(rc);
    }
    sqlite3_finalize(st);
    return rc;
}

int eg_outbox_open(const char *state_dir, struct eg_outbox **ret)
{
    struct eg_outbox *o = NULL;
    char *path = NULL;
    int64_t v = 0;
    int rc;

    if (!state_dir || !*state_dir || !ret || strlen(state_dir) > EG_MAX_PATH_LEN - 16)
        return EG_EINVAL;
    o = eg_calloc(1, sizeof *o);
    path = eg_asprintf("%s/outbox.db", state_dir);
    if (!o || !path) {
        rc = EG_ENOMEM;
        goto out;
    }
    o->max_records = EG_OUTBOX_MAX_RECORDS;
    o->max_bytes = EG_OUTBOX_MAX_BYTES;
    if (pthread_mutex_init(&o->lock, NULL) != 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (pthread_cond_init(&o->txn_done, NULL) != 0) {
        pthread_mutex_destroy(&o->lock);
        rc = EG_ENOMEM;
        goto out;
    }
    o->locks_ready = true;
    if ((rc = eg_db_open(state_dir, path, EG_OUTBOX_BUSY_TIMEOUT_MS, &o->db)) < 0) {
        rc = rc == EG_EDB ? EG_EIO : rc; /* outbox.h: EG_EIO */
        goto out;
    }
    if ((rc = pragma_int(o->db, "PRAGMA synchronous", &v)) < 0)
        goto out;
    if (v != 2) { /* FULL */
        rc = EG_EIO;
        goto out;
    }
    if ((rc = migrate(o->db)) < 0 || (rc = load_state(o)) < 0)
        goto out;
    for (int i = 0; i < ST__COUNT; i++) {
        rc = sqlite3_prepare_v3(o->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &o->st[i], NULL);
        if (rc != SQLITE_OK) {
            rc = db_err(rc);
            goto out;
        }
    }
    if ((rc = eg_db_tighten(path)) < 0)
        goto out;
    *ret = o;
    o = NULL;
    rc = 0;
out:
    eg_outbox_close(o);
    eg_free(path);
    return rc;
}

void eg_outbox_close(struct eg_outbox *o)
{
    if (!o)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(o->st[i]);
    sqlite3_close(o->db);
    if (o->locks_ready) {
        pthread_cond_destroy(&o->txn_done);
        pthread_mutex_destroy(&o->lock);
    }
    eg_free(o);
}

int eg_outbox_set_bounds(struct eg_outbox *o, uint64_t max_records, uint64_t max_bytes)
{
    if (!o || max_records == 0 || max_bytes == 0 || max_records > EG_OUTBOX_MAX_RECORDS ||
        max_bytes > (uint64_t)EG_OUTBOX_MAX_BYTES)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    o->max_records = max_records;
    o->max_bytes = max_bytes;
    pthread_mutex_unlock(&o->lock);
    return 0;
}

const char *eg_outbox_agent_id(struct eg_outbox *o)
{
    return o ? o->agent_id : NULL;
}

/* ---- appending ------------------------------------------------------------------------------ */

static bool valid_kind(const char *kind)
{
    size_t n = 0;
    if (!kind)
        return false;
    for (; kind[n]; n++) {
        char c = kind[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_'))
            return false;
    }
    return n >= 1 && n <= EG_OUTBOX_MAX_KIND_LEN;
}

static int write_resync(struct eg_outbox *o, bool on)
{
    int rc = sqlite3_bind_int(o->st[ST_SET_RESYNC], 1, on ? 1 : 0);
    return rc == SQLITE_OK ? step_done(o, ST_SET_RESYNC) : db_err(rc);
}

/* Outside a transaction (lock held): bring meta.resync to the flag's value. A failed write is
 * tried again at the next call. */
static void save_resync(struct eg_outbox *o)
{
    if (o->in_txn || o->resync == o->resync_disk)
        return;
    if (write_resync(o, o->resync) == 0)
        o->resync_disk = o->resync;
}

/* A record was refused (lock held). For an inventory kind the flag is set at once, whatever
 * becomes of an open transaction: the record is lost either way. It reaches the disk with the
 * transaction's COMMIT, after its ROLLBACK, or now. */
static void refuse(struct eg_outbox *o, bool inventory)
{
    o->refused++;
    if (own_txn(o))
        o->txn_refused = true;
    if (!inventory)
        return;
    o->resync = true;
    save_resync(o);
}

int eg_outbox_append(struct eg_outbox *o, const char *kind, const json_t *payload)
{
    char *text = NULL;
    bool savepoint = false;
    int rc;

    if (!o || !valid_kind(kind) || !payload)
        return EG_EINVAL;
    bool inventory = strcmp(kind, EG_OUTBOX_COMMAND) != 0;
    text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return EG_ENOMEM;
    size_t len = strlen(text);
    int64_t now = eg_now_ms();

    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    bool in_txn = own_txn(o);
    uint64_t recs = o->records + (in_txn ? o->txn_records : 0);
    uint64_t bytes = o->bytes + (in_txn ? o->txn_bytes : 0);
    if (len > EG_OUTBOX_MAX_RECORD_BYTES ||
        (inventory && (recs + 1 > o->max_records || bytes + len > o->max_bytes))) {
        refuse(o, inventory);
        rc = EG_ELIMIT;
        goto out;
    }
    /* A command's result: its id goes into finals in the same (sub)transaction as the record;
     * an id already there was reported before (a re-run after a crash, recovery): dropped. */
    const char *cmd_id = inventory ? NULL : json_string_value(json_object_get(payload, "id"));
    if (cmd_id) {
        if ((rc = step_done(o, ST_SAVEPOINT)) < 0)
            goto out;
        savepoint = true;
        if ((rc = sqlite3_bind_text(o->st[ST_FINAL_ADD], 1, cmd_id, -1, SQLITE_STATIC)) !=
            SQLITE_OK) {
            rc = db_err(rc);
            goto out;
        }
        if ((rc = step_done(o, ST_FINAL_ADD)) < 0)
            goto out;
        if (sqlite3_changes(o->db) == 0) { /* reported already */
            rc = step_done(o, ST_RELEASE);
            savepoint = false;
            goto out;
        }
    }
    sqlite3_stmt *st = o->st[ST_INSERT];
    if ((rc = sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, now)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(st, 3, text, (int)len, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)len)) != SQLITE_OK) {
        sqlite3_clear_bindings(st);
        rc = db_err(rc);
        goto out;
    }
    if ((rc = step_done(o, ST_INSERT)) < 0)
        goto out;
    if (savepoint) {
        savepoint = false;
        if ((rc = step_done(o, ST_RELEASE)) < 0) { /* outside a transaction: the commit */
            rollback_open(o);
            goto out;
        }
    }
    if (in_txn) {
        if (o->txn_records == 0)
            o->txn_first_at = now;
        o->txn_records++;
        o->txn_bytes += len;
    } else { /* autocommit: durable now */
        if (o->records == 0)
            o->oldest_ms = now;
        o->records++;
        o->bytes += len;
        save_resync(o);
    }
out:
    if (savepoint) { /* undo what this append did, and nothing of the caller's transaction */
        (void)step_done(o, ST_ROLLBACK_TO);
        (void)step_done(o, ST_RELEASE);
    }
    pthread_mutex_unlock(&o->lock);
    eg_free(text);
    return rc;
}

int eg_outbox_has_final(struct eg_outbox *o, const char *id)
{
    if (!o || !id)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    sqlite3_stmt *st = o->st[ST_FINAL_HAS];
    int rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        rc = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : db_err(rc);
    } else {
        rc = db_err(rc);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int eg_outbox_finals_seq(struct eg_outbox *o, int64_t *ret)
{
    if (!o || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    sqlite3_stmt *st = o->st[ST_FINALS_SEQ];
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *ret = sqlite3_column_int64(st, 0);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? EG_EIO : db_err(rc);
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int eg_outbox_set_finals_seq(struct eg_outbox *o, int64_t seq)
{
    if (!o || seq < 0)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    int rc = sqlite3_bind_int64(o->st[ST_SET_FINALS_SEQ], 1, seq);
    rc = rc == SQLITE_OK ? step_done(o, ST_SET_FINALS_SEQ) : db_err(rc);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int eg_outbox_begin(struct eg_outbox *o)
{
    int rc;
    if (!o)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    if (own_txn(o)) {
        pthread_mutex_unlock(&o->lock);
        return EG_ESTATE;
    }
    wait_txn(o);
    if ((rc = step_done(o, ST_BEGIN)) == 0) {
        o->in_txn = true;
        o->txn_owner = pthread_self();
        o->txn_records = o->txn_bytes = 0;
        o->txn_first_at = 0;
        o->txn_refused = o->txn_clear = false;
    }
    pthread_mutex_unlock(&o->lock);
    return rc;
}

/* End the caller's transaction (lock held). */
static void end_txn(struct eg_outbox *o)
{
    o->in_txn = false;
    o->txn_records = o->txn_bytes = 0;
    o->txn_first_at = 0;
    o->txn_refused = o->txn_clear = false;
    pthread_cond_broadcast(&o->txn_done);
}

int eg_outbox_commit(struct eg_outbox *o)
{
    int rc = 0;
    if (!o)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    if (!own_txn(o)) {
        pthread_mutex_unlock(&o->lock);
        return EG_ESTATE;
    }
    /* The flag as it stands after this transaction, written in it. */
    bool want = o->txn_clear && !o->txn_refused ? false : o->resync;
    if (want != o->resync_disk)
        rc = write_resync(o, want);
    if (rc == 0)
        rc = step_done(o, ST_COMMIT);
    if (rc == 0) {
        if (o->records == 0 && o->txn_records > 0)
            o->oldest_ms = o->txn_first_at;
        o->records += o->txn_records;
        o->bytes += o->txn_bytes;
        o->resync = o->resync_disk = want;
    } else {
        rollback_open(o);
    }
    end_txn(o);
    save_resync(o);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int eg_outbox_rollback(struct eg_outbox *o)
{
    int rc = 0;
    if (!o)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    if (!own_txn(o)) {
        pthread_mutex_unlock(&o->lock);
        return EG_ESTATE;
    }
    if (!sqlite3_get_autocommit(o->db))
        rc = step_done(o, ST_ROLLBACK);
    /* A snapshot rolled back did not reach the console: a resync_done in it is void. Records
     * refused in it are lost whatever happens to it: their flag stays and is written now. */
    end_txn(o);
    save_resync(o);
    pthread_mutex_unlock(&o->lock);
    return rc;
}

bool eg_outbox_resync_needed(struct eg_outbox *o)
{
    if (!o)
        return false;
    pthread_mutex_lock(&o->lock);
    bool r = o->resync;
    pthread_mutex_unlock(&o->lock);
    return r;
}

void eg_outbox_resync_done(struct eg_outbox *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    if (own_txn(o)) {
        /* Applied at the COMMIT, unless a record of this very transaction was refused (it is
         * not in the snapshot either). */
        o->txn_clear = true;
    } else {
        o->resync = false;
        save_resync(o);
    }
    pthread_mutex_unlock(&o->lock);
}

void eg_outbox_request_resync(struct eg_outbox *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    o->resync = true;
    save_resync(o); /* in the caller's own transaction: written by its COMMIT, or after it */
    pthread_mutex_unlock(&o->lock);
}

int eg_outbox_stats(struct eg_outbox *o, struct eg_outbox_stats *ret)
{
    if (!o || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    *ret = (struct eg_outbox_stats){
        .records = o->records,
        .bytes = o->bytes,
        .next_seq = o->pending_seq ? o->pending_seq : o->next_seq,
        .acked_seq = o->acked_seq,
        .oldest_ms = o->records ? o->oldest_ms : 0,
        .warning = (double)o->records > EG_OUTBOX_WARN_FRACTION * (double)o->max_records ||
                   (double)o->bytes > EG_OUTBOX_WARN_FRACTION * (double)o->max_bytes,
        .resync_needed = o->resync,
        .refused = o->refused,
        .pending_seq = o->pending_seq,
        .max_records = o->max_records,
        .max_bytes = o->max_bytes,
    };
    pthread_mutex_unlock(&o->lock);
    return 0;
}

/* ---- batches -------------------------------------------------------------------------------- */

void eg_outbox_batch_free(struct eg_outbox_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_records; i++) {
        eg_free(b->records[i].kind);
        eg_free(b->records[i].payload);
    }
    eg_free(b->records);
    eg_free(b);
}

/* Load the records [first, last] of a batch that should hold `count` of them (lock held). */
static int load_records(struct eg_outbox *o, int64_t first, int64_t last, size_t count,
                        struct eg_outbox_batch *b)
{
    sqlite3_stmt *st = o->st[ST_BATCH_RECORDS];
    int rc;
    if (count == 0)
        return 0;
    if (!(b->records = eg_calloc(count, sizeof *b->records)))
        return EG_ENOMEM;
    if (sqlite3_bind_int64(st, 1, first) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, last) != SQLITE_OK) {
        rc = EG_EIO;
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (b->n_records == count) { /* more rows than the batch says: corrupt */
            rc = EG_EIO;
            goto out;
        }
        struct eg_outbox_record *r = &b->records[b->n_records];
        const char *kind = (const char *)sqlite3_column_text(st, 1);
        const char *payload = (const char *)sqlite3_column_text(st, 3);
        int plen = sqlite3_column_bytes(st, 3);
        if (!kind || !payload) {
            rc = EG_EIO;
            goto out;
        }
        r->n = sqlite3_column_int64(st, 0);
        r->at_ms = sqlite3_column_int64(st, 2);
        r->kind = eg_strdup(kind);
        r->payload = eg_strndup(payload, (size_t)plen);
        r->payload_len = (size_t)plen;
        b->n_records++; /* counted now so that the free path sees the strings */
        if (!r->kind || !r->payload) {
            rc = EG_ENOMEM;
            goto out;
        }
    }
    rc = rc == SQLITE_DONE ? (b->n_records == count ? 0 : EG_EIO) : db_err(rc);
out:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/* Form a new batch of the oldest waiting records (or an empty one) in one transaction (lock
 * held, no transaction open). Fills seq and the range. */
static int form_batch(struct eg_outbox *o, int64_t *first, int64_t *last, size_t *count,
                      uint64_t *bytes, int64_t *created)
{
    sqlite3_stmt *st = o->st[ST_CANDIDATES];
    int64_t f = 1, l = 0;
    size_t n = 0;
    uint64_t sum = 0;
    int rc;

    if ((rc = step_done(o, ST_BEGIN)) < 0)
        return rc;
    if (sqlite3_bind_int64(st, 1, EG_OUTBOX_BATCH_RECORDS) != SQLITE_OK) {
        rc = EG_EIO;
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t rn = sqlite3_column_int64(st, 0);
        uint64_t rb = (uint64_t)sqlite3_column_int64(st, 1);
        if (n > 0 && sum + rb > EG_OUTBOX_BATCH_BYTES)
            break;
        if (n == 0)
            f = rn;
        l = rn;
        sum += rb;
        n++;
    }
    rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_err(rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc < 0)
        goto out;
    *created = eg_now_ms();
    st = o->st[ST_FORM];
    if (sqlite3_bind_int64(st, 1, f) != SQLITE_OK || sqlite3_bind_int64(st, 2, l) != SQLITE_OK ||
        sqlite3_bind_int64(st, 3, (sqlite3_int64)n) != SQLITE_OK ||
        sqlite3_bind_int64(st, 4, (sqlite3_int64)sum) != SQLITE_OK ||
        sqlite3_bind_int64(st, 5, *created) != SQLITE_OK) {
        sqlite3_clear_bindings(st);
        rc = EG_EIO;
        goto out;
    }
    rc = sqlite3_step(st);
    int64_t seq = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE || (uint64_t)seq != o->next_seq) {
        rc = rc == SQLITE_DONE ? EG_EIO : db_err(rc);
        goto out;
    }
    if ((rc = step_done(o, ST_BUMP_SEQ)) < 0 || (rc = step_done(o, ST_COMMIT)) < 0)
        goto out;
    o->pending_seq = (uint64_t)seq;
    o->next_seq = (uint64_t)seq + 1;
    *first = f;
    *last = l;
    *count = n;
    *bytes = sum;
out:
    if (rc < 0)
        rollback_open(o);
    return rc;
}

int eg_outbox_next_batch(struct eg_outbox *o, bool heartbeat, struct eg_outbox_batch **ret)
{
    struct eg_outbox_batch *b = NULL;
    int64_t first = 1, last = 0, created = 0;
    size_t count = 0;
    uint64_t bytes = 0;
    int rc;

    if (!o || !ret)
        return EG_EINVAL;
    if (!(b = eg_calloc(1, sizeof *b)))
        return EG_ENOMEM;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    if (own_txn(o)) { /* the uploader never holds a transaction; refuse rather than mix */
        rc = EG_ESTATE;
        goto out;
    }
    if (o->pending_seq) {
        sqlite3_stmt *st = o->st[ST_PENDING];
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            b->seq = (uint64_t)sqlite3_column_int64(st, 0);
            first = sqlite3_column_int64(st, 1);
            last = sqlite3_column_int64(st, 2);
            count = (size_t)sqlite3_column_int64(st, 3);
            bytes = (uint64_t)sqlite3_column_int64(st, 4);
            created = sqlite3_column_int64(st, 5);
            rc = b->seq == o->pending_seq && count <= EG_OUTBOX_BATCH_RECORDS ? 0 : EG_EIO;
        } else {
            rc = rc == SQLITE_DONE ? EG_EIO : db_err(rc);
        }
        sqlite3_reset(st);
        if (rc < 0)
            goto out;
    } else {
        if (o->records == 0 && !heartbeat) {
            rc = EG_ENOTFOUND;
            goto out;
        }
        if ((rc = form_batch(o, &first, &last, &count, &bytes, &created)) < 0)
            goto out;
        b->seq = o->pending_seq;
    }
    if ((rc = load_records(o, first, last, count, b)) < 0)
        goto out;
    snprintf(b->agent_id, sizeof b->agent_id, "%s", o->agent_id);
    b->created_ms = created;
    b->bytes = bytes;
    *ret = b;
    b = NULL;
out:
    pthread_mutex_unlock(&o->lock);
    eg_outbox_batch_free(b);
    return rc;
}

int eg_outbox_ack(struct eg_outbox *o, uint64_t seq)
{
    sqlite3_stmt *st;
    int64_t first = 0, last = 0, count = 0, bytes = 0;
    int rc;

    if (!o)
        return EG_EINVAL;
    pthread_mutex_lock(&o->lock);
    wait_txn(o);
    if (own_txn(o) || seq == 0 || seq != o->pending_seq) {
        rc = EG_ESTATE;
        goto unlock;
    }
    if ((rc = step_done(o, ST_BEGIN)) < 0)
        goto unlock;
    st = o->st[ST_PENDING];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && (uint64_t)sqlite3_column_int64(st, 0) == seq) {
        first = sqlite3_column_int64(st, 1);
        last = sqlite3_column_int64(st, 2);
        count = sqlite3_column_int64(st, 3);
        bytes = sqlite3_column_int64(st, 4);
        rc = 0;
    } else {
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? EG_EIO : db_err(rc);
    }
    sqlite3_reset(st);
    if (rc < 0)
        goto out;
    st = o->st[ST_DEL_RECORDS];
    if (sqlite3_bind_int64(st, 1, first) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, last) != SQLITE_OK) {
        rc = EG_EIO;
        goto out;
    }
    if ((rc = step_done(o, ST_DEL_RECORDS)) < 0)
        goto out;
    if (sqlite3_changes(o->db) != (int)count) { /* the range must hold exactly its records */
        rc = EG_EIO;
        goto out;
    }
    if (sqlite3_bind_int64(o->st[ST_DEL_BATCH], 1, (sqlite3_int64)seq) != SQLITE_OK ||
        (rc = step_done(o, ST_DEL_BATCH)) < 0 ||
        sqlite3_bind_int64(o->st[ST_SET_ACKED], 1, (sqlite3_int64)seq) != SQLITE_OK ||
        (rc = step_done(o, ST_SET_ACKED)) < 0) {
        rc = rc < 0 ? rc : EG_EIO;
        goto out;
    }
    if ((rc = step_done(o, ST_COMMIT)) < 0)
        goto out;
    o->acked_seq = seq;
    o->pending_seq = 0;
    o->records -= (uint64_t)count <= o->records ? (uint64_t)count : o->records;
    o->bytes -= (uint64_t)bytes <= o->bytes ? (uint64_t)bytes : o->bytes;
    o->oldest_ms = 0;
    if (o->records > 0) {
        st = o->st[ST_OLDEST];
        if (sqlite3_step(st) == SQLITE_ROW)
            o->oldest_ms = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
out:
    if (rc < 0)
        rollback_open(o);
unlock:
    pthread_mutex_unlock(&o->lock);
    return rc;
}
