/* inventory.c - the device inventory: snapshot store, syncs, drift, the paged read (contract:
 * inventory.h).
 *
 * One SQLite connection guarded by `lock`; the statements are prepared once at open. A sync
 * holds the lock only while it compares one chunk of buffered records with the store (one
 * transaction), never while the bridge streams, so the API's reads and the worker's hooks wait at
 * most one chunk. The in-flight list edits are a small in-memory table under their own mutex
 * (edits_lock), so eg_inventory_edit_begin never waits for a chunk.
 *
 * Tables (schema version in PRAGMA user_version):
 *   meta      k -> v: generation, last_full_start/end, last_quick_start/end, synced_revision,
 *             baseline, since_base (start of the last completed unscoped sync);
 *   devices   one row per partnership, keyed (mkey, dkey); the content fields, their FNV-1a
 *             hash, when_changed, first_seen, changed_at, seen_gen, stats_due (0 none, 1 wipe,
 *             2 new, 3 a scoped sync asked; lower is more urgent), stats_ms, pending_add (a new
 *             device whose device.added waits for its statistics, emitted by the same sync - or
 *             by the next one after a crash);
 *   mailboxes the lists Get-CASMailbox reported (JSON arrays), keyed by the lower-cased Identity;
 *   desired   the console's declared lists, keyed by the lower-cased mailbox the console named,
 *             with the Exchange key it resolved to, the time noted and the generation that last
 *             judged it.
 */
#include "agent/inventory.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>

#include "agent/db.h"
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/command.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/list_plan.h"

#define HEAL_CLIENT "easgate:inventory"

/* ---- schema ------------------------------------------------------------------------------ */

/* migrations[v] takes the schema from user_version v to v + 1. Append only. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
    "CREATE TABLE devices ("
    " id INTEGER PRIMARY KEY,"
    " mkey TEXT NOT NULL, dkey TEXT NOT NULL,"
    " mailbox_lc TEXT, mailbox_identity TEXT, device_id TEXT NOT NULL,"
    " mailbox TEXT, identity TEXT, device_type TEXT, model TEXT, os TEXT, user_agent TEXT,"
    " access_state TEXT, access_reason TEXT, wipe_status TEXT,"
    " first_sync INTEGER NOT NULL DEFAULT 0, last_success INTEGER NOT NULL DEFAULT 0,"
    " wipe_request INTEGER NOT NULL DEFAULT 0, wipe_sent INTEGER NOT NULL DEFAULT 0,"
    " wipe_ack INTEGER NOT NULL DEFAULT 0, list INTEGER NOT NULL DEFAULT 0,"
    " when_changed INTEGER NOT NULL DEFAULT 0, hash INTEGER NOT NULL,"
    " first_seen INTEGER NOT NULL, changed_at INTEGER NOT NULL, seen_gen INTEGER NOT NULL,"
    " stats_due INTEGER NOT NULL DEFAULT 0, stats_ms INTEGER NOT NULL DEFAULT 0,"
    " pending_add INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE (mkey, dkey));"
    "CREATE INDEX devices_mailbox ON devices(mailbox_lc);"
    "CREATE INDEX devices_changed ON devices(changed_at);"
    "CREATE INDEX devices_seen ON devices(seen_gen);"
    "CREATE INDEX devices_stats ON devices(stats_due, stats_ms) WHERE stats_due > 0;"
    "CREATE INDEX devices_pending ON devices(pending_add) WHERE pending_add != 0;"
    "CREATE TABLE mailboxes ("
    " key TEXT PRIMARY KEY, identity TEXT NOT NULL, smtp TEXT, smtp_lc TEXT,"
    " allowed TEXT NOT NULL, blocked TEXT NOT NULL, when_changed INTEGER NOT NULL DEFAULT 0,"
    " seen_gen INTEGER NOT NULL, read_ms INTEGER NOT NULL);"
    "CREATE INDEX mailboxes_smtp ON mailboxes(smtp_lc);"
    "CREATE TABLE desired ("
    " mailbox_lc TEXT PRIMARY KEY, mailbox TEXT NOT NULL,"
    " allowed TEXT NOT NULL, blocked TEXT NOT NULL, noted_ms INTEGER NOT NULL,"
    " checked_gen INTEGER NOT NULL DEFAULT 0, resolved_key TEXT);"
    "CREATE INDEX desired_resolved ON desired(resolved_key);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- the content fields of a device record ------------------------------------------------ */

enum field {
    F_MAILBOX,
    F_IDENTITY,
    F_TYPE,
    F_MODEL,
    F_OS,
    F_UA,
    F_STATE,
    F_REASON,
    F_WIPE_STATUS,
    F_FIRST_SYNC, /* the first numeric field */
    F_LAST_SUCCESS,
    F_WIPE_REQ,
    F_WIPE_SENT,
    F_WIPE_ACK,
    F_LIST,
    F__COUNT
};
#define F_FIRST_NUM F_FIRST_SYNC

/* json: the key in a record and in "changed"; col: the column; sticky: only device statistics
 * report it, so an unknown value from the device stream keeps the stored one. */
static const struct fdef {
    const char *json, *col;
    bool sticky;
} fdefs[F__COUNT] = {
    [F_MAILBOX] = {"mailbox", "mailbox", false},
    [F_IDENTITY] = {"identity", "identity", false},
    [F_TYPE] = {"device_type", "device_type", false},
    [F_MODEL] = {"model", "model", false},
    [F_OS] = {"os", "os", false},
    [F_UA] = {"user_agent", "user_agent", false},
    [F_STATE] = {"access_state", "access_state", false},
    [F_REASON] = {"access_reason", "access_reason", false},
    [F_WIPE_STATUS] = {"wipe_status", "wipe_status", true},
    [F_FIRST_SYNC] = {"first_sync", "first_sync", false},
    [F_LAST_SUCCESS] = {"last_success_sync", "last_success", true},
    [F_WIPE_REQ] = {"wipe_requested_at", "wipe_request", true},
    [F_WIPE_SENT] = {"wipe_sent_at", "wipe_sent", true},
    [F_WIPE_ACK] = {"wipe_acknowledged_at", "wipe_ack", true},
    [F_LIST] = {"list", "list", false},
};

enum { LIST_NONE = 0, LIST_ALLOWED = 1, LIST_BLOCKED = 2 };
static const char *const list_names[] = {"none", "allowed", "blocked"};

enum { DUE_NONE = 0, DUE_WIPE = 1, DUE_NEW = 2, DUE_SCOPED = 3 };

/* One device, owned strings. s[] for the string fields, n[] for the numeric ones. */
struct dev {
    char *mkey, *dkey, *mailbox_identity, *device_id;
    char *raw_mailbox; /* what the bridge named the mailbox (before the mailbox table) */
    char *s[F__COUNT];
    int64_t n[F__COUNT];
    int64_t when_changed;
    /* from the store */
    int64_t id, hash, first_seen, changed_at, seen_gen, stats_ms;
    int stats_due;
    bool pending_add;
};

static void dev_clear(struct dev *d)
{
    eg_free(d->mkey);
    eg_free(d->dkey);
    eg_free(d->mailbox_identity);
    eg_free(d->device_id);
    eg_free(d->raw_mailbox);
    for (int f = 0; f < F__COUNT; f++)
        eg_free(d->s[f]);
    memset(d, 0, sizeof *d);
}

/* FNV-1a 64 over every content field, each with a tag and a terminator. */
static int64_t dev_hash(const struct dev *d)
{
    uint64_t h = 1469598103934665603ULL;
    char num[24];
    for (int f = 0; f < F__COUNT; f++) {
        const char *v = f < F_FIRST_NUM ? (d->s[f] ? d->s[f] : "") : num;
        if (f >= F_FIRST_NUM)
            snprintf(num, sizeof num, "%" PRId64, d->n[f]);
        h ^= (uint64_t)(unsigned char)('A' + f);
        h *= 1099511628211ULL;
        for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
            h ^= *p;
            h *= 1099511628211ULL;
        }
        h ^= 0xff;
        h *= 1099511628211ULL;
    }
    return (int64_t)h;
}

static bool field_equal(const struct dev *a, const struct dev *b, int f)
{
    if (f >= F_FIRST_NUM)
        return a->n[f] == b->n[f];
    const char *x = a->s[f] ? a->s[f] : "", *y = b->s[f] ? b->s[f] : "";
    return strcmp(x, y) == 0;
}

static bool field_known(const struct dev *d, int f)
{
    return f >= F_FIRST_NUM ? d->n[f] != 0 : d->s[f] != NULL;
}

/* Copy field f from src into dst (replacing it). 0 or EG_ENOMEM. */
static int field_copy(struct dev *dst, const struct dev *src, int f)
{
    if (f >= F_FIRST_NUM) {
        dst->n[f] = src->n[f];
        return 0;
    }
    char *v = NULL;
    if (src->s[f] && !(v = eg_strdup(src->s[f])))
        return EG_ENOMEM;
    eg_free(dst->s[f]);
    dst->s[f] = v;
    return 0;
}

/* ---- statements -------------------------------------------------------------------------- */

#define ROW_COLS                                                                                   \
    "id, mkey, dkey, mailbox_identity, device_id, mailbox, identity, device_type, model, os, "     \
    "user_agent, access_state, access_reason, wipe_status, first_sync, last_success, "             \
    "wipe_request, wipe_sent, wipe_ack, list, when_changed, hash, first_seen, changed_at, "        \
    "seen_gen, stats_due, stats_ms, pending_add"
enum {
    RC_ID,
    RC_MKEY,
    RC_DKEY,
    RC_MID,
    RC_DID,
    RC_F0, /* F_MAILBOX .. F_LIST follow in order */
    RC_WHEN = RC_F0 + F__COUNT,
    RC_HASH,
    RC_FIRST_SEEN,
    RC_CHANGED_AT,
    RC_SEEN_GEN,
    RC_STATS_DUE,
    RC_STATS_MS,
    RC_PENDING
};

enum st {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_META_GET,
    ST_META_PUT,
    ST_COUNT,
    ST_DEV_GET,
    ST_DEV_BY_ID,
    ST_DEV_INSERT,
    ST_DEV_UPDATE,
    ST_DEV_DELETE,
    ST_DEV_TOUCH,
    ST_DEV_OF_MAILBOX,
    ST_DEV_UNSEEN,
    ST_DEV_STATS_DUE,
    ST_DEV_NOTE_WIPE,
    ST_MBX_GET,
    ST_MBX_PUT,
    ST_MBX_DELETE_UNSEEN,
    ST_DES_FIND,
    ST_DES_CHECKED,
    ST_DES_UNCHECKED,
    ST_DES_PUT,
    ST_DES_GET,
    ST_DES_RESOLVE,
    ST_DEV_PENDING,
    ST__COUNT
};

static const char *const sql_text[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT v FROM meta WHERE k = ?1",
    [ST_META_PUT] = "INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = ?2",
    [ST_COUNT] = "SELECT count(*) FROM devices",
    [ST_DEV_GET] = "SELECT " ROW_COLS " FROM devices WHERE mkey = ?1 AND dkey = ?2",
    [ST_DEV_BY_ID] = "SELECT " ROW_COLS " FROM devices WHERE id = ?1",
    [ST_DEV_INSERT] =
        "INSERT INTO devices (mkey, dkey, mailbox_lc, mailbox_identity, device_id, mailbox, "
        "identity, device_type, model, os, user_agent, access_state, access_reason, wipe_status, "
        "first_sync, last_success, wipe_request, wipe_sent, wipe_ack, list, when_changed, hash, "
        "first_seen, changed_at, seen_gen, stats_due, stats_ms, pending_add) VALUES (?1, ?2, ?3, "
        "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, "
        "?23, ?24, ?25, ?26, ?27, ?29)",
    [ST_DEV_UPDATE] =
        "UPDATE devices SET mailbox_lc = ?3, mailbox_identity = ?4, device_id = ?5, mailbox = ?6, "
        "identity = ?7, device_type = ?8, model = ?9, os = ?10, user_agent = ?11, "
        "access_state = ?12, access_reason = ?13, wipe_status = ?14, first_sync = ?15, "
        "last_success = ?16, wipe_request = ?17, wipe_sent = ?18, wipe_ack = ?19, list = ?20, "
        "when_changed = ?21, hash = ?22, changed_at = ?24, seen_gen = ?25, stats_due = ?26, "
        "stats_ms = ?27, pending_add = ?29 WHERE id = ?28", /* ?1, ?2, ?23 stay unused */
    [ST_DEV_DELETE] = "DELETE FROM devices WHERE id = ?1",
    [ST_DEV_TOUCH] = "UPDATE devices SET seen_gen = ?2, when_changed = ?3, stats_due = ?4 "
                     "WHERE id = ?1",
    [ST_DEV_OF_MAILBOX] = "SELECT " ROW_COLS " FROM devices WHERE mkey = ?1 AND id > ?2 "
                          "ORDER BY id LIMIT ?3",
    [ST_DEV_UNSEEN] = "SELECT " ROW_COLS " FROM devices WHERE seen_gen < ?1 AND (?3 IS NULL OR "
                      "mkey = ?3 OR mailbox_lc = ?3) ORDER BY id LIMIT ?2",
    [ST_DEV_STATS_DUE] = "SELECT id, mailbox_identity, device_id, identity, mkey FROM devices "
                         "WHERE stats_due > 0 AND (?2 IS NULL OR mkey = ?2 OR mailbox_lc = ?2) "
                         "ORDER BY stats_due, stats_ms LIMIT ?1",
    [ST_DEV_NOTE_WIPE] = "UPDATE devices SET stats_due = 1, stats_ms = 0 "
                         "WHERE (mailbox_lc = ?1 OR mkey = ?1) AND dkey = ?2",
    [ST_MBX_GET] = "SELECT smtp, allowed, blocked FROM mailboxes WHERE key = ?1",
    [ST_MBX_PUT] = "INSERT INTO mailboxes (key, identity, smtp, smtp_lc, allowed, blocked, "
                   "when_changed, seen_gen, read_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                   "ON CONFLICT(key) DO UPDATE SET identity = ?2, smtp = ?3, smtp_lc = ?4, "
                   "allowed = ?5, blocked = ?6, when_changed = ?7, seen_gen = ?8, read_ms = ?9",
    [ST_MBX_DELETE_UNSEEN] = "DELETE FROM mailboxes WHERE seen_gen < ?1",
    [ST_DES_FIND] = "SELECT mailbox_lc, mailbox, allowed, blocked, noted_ms FROM desired "
                    "WHERE mailbox_lc = ?1 OR mailbox_lc = ?2 OR resolved_key = ?1",
    [ST_DES_CHECKED] = "UPDATE desired SET checked_gen = ?2, resolved_key = coalesce(?3, "
                       "resolved_key) WHERE mailbox_lc = ?1",
    [ST_DES_UNCHECKED] = "SELECT mailbox_lc, mailbox FROM desired WHERE checked_gen < ?1 "
                         "ORDER BY checked_gen, mailbox_lc LIMIT ?2",
    [ST_DES_PUT] = "INSERT INTO desired (mailbox_lc, mailbox, allowed, blocked, noted_ms) VALUES "
                   "(?1, ?2, ?3, ?4, ?5) ON CONFLICT(mailbox_lc) DO UPDATE SET mailbox = ?2, "
                   "allowed = ?3, blocked = ?4, noted_ms = ?5",
    [ST_DES_GET] = "SELECT allowed, blocked FROM desired WHERE mailbox_lc = ?1",
    [ST_DES_RESOLVE] = "UPDATE desired SET resolved_key = ?2 WHERE mailbox_lc = ?1",
    [ST_DEV_PENDING] = "SELECT " ROW_COLS " FROM devices WHERE pending_add != 0 LIMIT 64",
};

struct edit_mark {
    char *key;
    unsigned n;
};

struct eg_inventory {
    pthread_mutex_t lock; /* the connection and its statements */
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    bool lock_ok, edits_ok;
    pthread_mutex_t edits_lock;
    struct edit_mark *edits;
    size_t n_edits;
};

const char *eg_inv_mode_name(enum eg_inv_mode m)
{
    return m == EG_INV_FULL ? "full" : "quick";
}

/* ---- small helpers ------------------------------------------------------------------------ */

static int db_err(int rc)
{
    return rc == SQLITE_NOMEM ? EG_ENOMEM : EG_EDB;
}

static char *lower_dup(const char *s)
{
    char *k = eg_strdup(s);
    for (char *p = k; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return k;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_err(rc);
}

/* Step a statement that returns no row, then reset it. */
static int step_done(struct eg_inventory *inv, enum st i)
{
    sqlite3_stmt *s = inv->st[i];
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static void st_reset(struct eg_inventory *inv, enum st i)
{
    sqlite3_reset(inv->st[i]);
    sqlite3_clear_bindings(inv->st[i]);
}

static int bind_text(sqlite3_stmt *s, int i, const char *v)
{
    int rc = v ? sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s, i);
    return rc == SQLITE_OK ? 0 : db_err(rc);
}

static int bind_int(sqlite3_stmt *s, int i, int64_t v)
{
    return sqlite3_bind_int64(s, i, v) == SQLITE_OK ? 0 : EG_EDB;
}

/* A new copy of a text column, or NULL (*nomem when the copy failed). */
static char *col_dup(sqlite3_stmt *s, int i, bool *nomem)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    if (!t)
        return NULL;
    char *v = eg_strdup((const char *)t);
    if (!v)
        *nomem = true;
    return v;
}

static int meta_get(struct eg_inventory *inv, const char *k, int64_t *ret)
{
    sqlite3_stmt *s = inv->st[ST_META_GET];
    int rc = bind_text(s, 1, k);
    if (rc == 0) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *ret = sqlite3_column_int64(s, 0);
            rc = 0;
        } else if (rc == SQLITE_DONE) {
            *ret = 0;
            rc = 0;
        } else {
            rc = db_err(rc);
        }
    }
    st_reset(inv, ST_META_GET);
    return rc;
}

static int meta_put(struct eg_inventory *inv, const char *k, int64_t v)
{
    sqlite3_stmt *s = inv->st[ST_META_PUT];
    int rc = bind_text(s, 1, k);
    if (rc == 0)
        rc = bind_int(s, 2, v);
    if (rc < 0) {
        st_reset(inv, ST_META_PUT);
        return rc;
    }
    return step_done(inv, ST_META_PUT);
}

static int txn_begin(struct eg_inventory *inv)
{
    return step_done(inv, ST_BEGIN);
}

static int txn_end(struct eg_inventory *inv, int rc)
{
    if (rc == 0 && (rc = step_done(inv, ST_COMMIT)) == 0)
        return 0;
    if (!sqlite3_get_autocommit(inv->db))
        (void)step_done(inv, ST_ROLLBACK);
    return rc;
}

static json_t *time_json(int64_t ms)
{
    char buf[40];
    return ms > 0 ? json_string(eg_format_time(ms, buf, sizeof buf)) : json_null();
}

/* A JSON array of strings from a C array. NULL on OOM. */
static json_t *strings_json(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i] ? v[i] : "")) < 0) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

static bool json_has_ci(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *t = json_string_value(v);
        if (t && strcasecmp(t, s) == 0)
            return true;
    }
    return false;
}

/* The same set, case-insensitively (duplicates do not count). */
static bool sets_equal(const json_t *a, const json_t *b)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (!json_has_ci(b, json_string_value(v))) return false;
    json_array_foreach(b, i, v) if (!json_has_ci(a, json_string_value(v))) return false;
    return true;
}

static json_t *load_array(const unsigned char *text)
{
    json_t *a = text ? json_loads((const char *)text, 0, NULL) : NULL;
    if (a && !json_is_array(a)) {
        json_decref(a);
        a = NULL;
    }
    return a;
}

/* ---- open / close ----------------------------------------------------------------------- */

static int migrate(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int64_t version = 0;
    int rc;
    if ((rc = exec_sql(db, "BEGIN IMMEDIATE")) < 0)
        return rc;
    rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        version = sqlite3_column_int64(s, 0);
        rc = 0;
    } else {
        rc = db_err(rc);
    }
    sqlite3_finalize(s);
    if (rc < 0)
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

int eg_inventory_open(const char *state_dir, struct eg_inventory **ret)
{
    struct eg_inventory *inv = NULL;
    char *path = NULL;
    int rc;

    if (!state_dir || !*state_dir || !ret || strlen(state_dir) > EG_MAX_PATH_LEN - 32)
        return EG_EINVAL;
    inv = eg_calloc(1, sizeof *inv);
    path = eg_asprintf("%s/inventory.db", state_dir);
    if (!inv || !path) {
        rc = EG_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&inv->lock, NULL) != 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    inv->lock_ok = true;
    if (pthread_mutex_init(&inv->edits_lock, NULL) != 0) {
        rc = EG_ENOMEM;
        goto out;
    }
    inv->edits_ok = true;
    if ((rc = eg_db_open(state_dir, path, EG_INVENTORY_BUSY_TIMEOUT_MS, &inv->db)) < 0)
        goto out;
    /* The page cache is the one memory cost that grows with the org: bounded here
     * (EG_INVENTORY_CACHE_KIB), enough to keep the indexes of a large org warm. */
    char cache[64];
    snprintf(cache, sizeof cache, "PRAGMA cache_size = -%d", EG_INVENTORY_CACHE_KIB);
    if ((rc = exec_sql(inv->db, cache)) < 0 || (rc = migrate(inv->db)) < 0)
        goto out;
    for (int i = 0; i < ST__COUNT; i++) {
        rc = sqlite3_prepare_v3(inv->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &inv->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            rc = db_err(rc);
            goto out;
        }
    }
    if ((rc = eg_db_tighten(path)) < 0)
        goto out;
    *ret = inv;
    inv = NULL;
    rc = 0;
out:
    eg_inventory_close(inv);
    eg_free(path);
    return rc;
}

void eg_inventory_close(struct eg_inventory *inv)
{
    if (!inv)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(inv->st[i]);
    sqlite3_close(inv->db);
    for (size_t i = 0; i < inv->n_edits; i++)
        eg_free(inv->edits[i].key);
    eg_free(inv->edits);
    if (inv->edits_ok)
        pthread_mutex_destroy(&inv->edits_lock);
    if (inv->lock_ok)
        pthread_mutex_destroy(&inv->lock);
    eg_free(inv);
}

/* ---- in-flight list edits ---------------------------------------------------------------- */

void eg_inventory_edit_begin(struct eg_inventory *inv, const char *mailbox)
{
    if (!inv || !mailbox)
        return;
    pthread_mutex_lock(&inv->edits_lock);
    for (size_t i = 0; i < inv->n_edits; i++)
        if (strcasecmp(inv->edits[i].key, mailbox) == 0) {
            inv->edits[i].n++;
            pthread_mutex_unlock(&inv->edits_lock);
            return;
        }
    /* Without memory the mark is lost: at worst a sync judges the mailbox during the edit and
     * reports a drift that the next sync no longer sees. */
    struct edit_mark *nv = eg_reallocarray(inv->edits, inv->n_edits + 1, sizeof *nv);
    char *key = nv ? eg_strdup(mailbox) : NULL;
    if (nv)
        inv->edits = nv;
    if (key) {
        inv->edits[inv->n_edits].key = key;
        inv->edits[inv->n_edits].n = 1;
        inv->n_edits++;
    }
    pthread_mutex_unlock(&inv->edits_lock);
}

static void edit_unmark(struct eg_inventory *inv, const char *mailbox)
{
    pthread_mutex_lock(&inv->edits_lock);
    for (size_t i = 0; i < inv->n_edits; i++)
        if (strcasecmp(inv->edits[i].key, mailbox) == 0) {
            if (--inv->edits[i].n == 0) {
                eg_free(inv->edits[i].key);
                inv->edits[i] = inv->edits[--inv->n_edits];
            }
            break;
        }
    pthread_mutex_unlock(&inv->edits_lock);
}

static bool edit_in_flight(struct eg_inventory *inv, const char *mailbox)
{
    bool busy = false;
    pthread_mutex_lock(&inv->edits_lock);
    for (size_t i = 0; i < inv->n_edits && !busy; i++)
        busy = strcasecmp(inv->edits[i].key, mailbox) == 0;
    pthread_mutex_unlock(&inv->edits_lock);
    return busy;
}

/* ---- declared lists --------------------------------------------------------------------- */

/* Store the declaration (lock held). */
static int put_desired(struct eg_inventory *inv, const char *mailbox, json_t *allowed,
                       json_t *blocked)
{
    char *key = lower_dup(mailbox), *a = NULL, *b = NULL;
    int rc = EG_ENOMEM;
    a = allowed ? json_dumps(allowed, JSON_COMPACT) : NULL;
    b = blocked ? json_dumps(blocked, JSON_COMPACT) : NULL;
    if (!key || !a || !b)
        goto out;
    sqlite3_stmt *s = inv->st[ST_DES_PUT];
    if ((rc = bind_text(s, 1, key)) < 0 || (rc = bind_text(s, 2, mailbox)) < 0 ||
        (rc = bind_text(s, 3, a)) < 0 || (rc = bind_text(s, 4, b)) < 0 ||
        (rc = bind_int(s, 5, eg_now_ms())) < 0) {
        st_reset(inv, ST_DES_PUT);
        goto out;
    }
    rc = step_done(inv, ST_DES_PUT);
out:
    eg_free(key);
    eg_free(a);
    eg_free(b);
    return rc;
}

int eg_inventory_note_desired(struct eg_inventory *inv, const char *mailbox,
                              const char *const *allowed, size_t n_allowed,
                              const char *const *blocked, size_t n_blocked)
{
    if (!inv)
        return 0;
    if (!mailbox || !*mailbox || (n_allowed && !allowed) || (n_blocked && !blocked))
        return EG_EINVAL;
    if (n_allowed > EG_MAX_DEVICE_SET || n_blocked > EG_MAX_DEVICE_SET)
        return EG_ELIMIT;
    json_t *a = strings_json(allowed, n_allowed), *b = strings_json(blocked, n_blocked);
    int rc = EG_ENOMEM;
    if (a && b) {
        pthread_mutex_lock(&inv->lock);
        rc = put_desired(inv, mailbox, a, b);
        pthread_mutex_unlock(&inv->lock);
    }
    json_decref(a);
    json_decref(b);
    return rc;
}

/* The stored declaration of mailbox as two new arrays (lock held). EG_ENOTFOUND when none. */
static int get_desired(struct eg_inventory *inv, const char *mailbox, json_t **ret_a,
                       json_t **ret_b)
{
    char *key = lower_dup(mailbox);
    int rc;
    if (!key)
        return EG_ENOMEM;
    sqlite3_stmt *s = inv->st[ST_DES_GET];
    if ((rc = bind_text(s, 1, key)) == 0) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *ret_a = load_array(sqlite3_column_text(s, 0));
            *ret_b = load_array(sqlite3_column_text(s, 1));
            rc = *ret_a && *ret_b ? 0 : EG_ENOMEM;
            if (rc < 0) {
                json_decref(*ret_a);
                json_decref(*ret_b);
            }
        } else {
            rc = rc == SQLITE_DONE ? EG_ENOTFOUND : db_err(rc);
        }
    }
    st_reset(inv, ST_DES_GET);
    eg_free(key);
    return rc;
}

int eg_inventory_desired(struct eg_inventory *inv, const char *mailbox, json_t **ret)
{
    json_t *a = NULL, *b = NULL;
    if (!inv || !mailbox || !ret)
        return EG_EINVAL;
    pthread_mutex_lock(&inv->lock);
    int rc = get_desired(inv, mailbox, &a, &b);
    pthread_mutex_unlock(&inv->lock);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:o, s:o}", "allowed", a, "blocked", b);
    return *ret ? 0 : EG_ENOMEM;
}

/* A C array view of a JSON string array (borrowed strings). NULL on OOM (n = 0 is fine). */
static const char **strings_of(const json_t *arr, size_t *ret_n)
{
    size_t n = json_array_size(arr);
    const char **v = eg_calloc(n + 1, sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(arr, i));
    *ret_n = n;
    return v;
}

int eg_inventory_edit_end(struct eg_inventory *inv, const struct eg_list_edit *edit, bool applied)
{
    json_t *cur_a = NULL, *cur_b = NULL;
    const char **va = NULL, **vb = NULL;
    struct eg_list_plan *plan = NULL;
    size_t na = 0, nb = 0;
    int rc = 0;

    if (!inv)
        return 0;
    if (!edit || !edit->mailbox)
        return EG_EINVAL;
    if (!applied)
        goto out;
    pthread_mutex_lock(&inv->lock);
    if (!edit->has_base) {
        /* Overrides only: they move devices in an existing declaration, else nothing to do. */
        rc = get_desired(inv, edit->mailbox, &cur_a, &cur_b);
        if (rc == EG_ENOTFOUND) {
            rc = 0;
            goto unlock;
        }
        if (rc < 0)
            goto unlock;
        if (!(va = strings_of(cur_a, &na)) || !(vb = strings_of(cur_b, &nb))) {
            rc = EG_ENOMEM;
            goto unlock;
        }
    }
    /* With a base the current lists are not used: the plan's final lists are the declaration. */
    if ((rc = eg_list_plan_compute(edit, va, na, vb, nb, &plan)) < 0)
        goto unlock;
    json_t *a = strings_json((const char *const *)plan->final_allowed.v, plan->final_allowed.n);
    json_t *b = strings_json((const char *const *)plan->final_blocked.v, plan->final_blocked.n);
    rc = a && b ? put_desired(inv, edit->mailbox, a, b) : EG_ENOMEM;
    json_decref(a);
    json_decref(b);
unlock:
    pthread_mutex_unlock(&inv->lock);
out:
    /* After the declaration is stored: a sync that sees no mark sees the new declaration. */
    edit_unmark(inv, edit->mailbox);
    eg_list_plan_free(plan);
    eg_free(va);
    eg_free(vb);
    json_decref(cur_a);
    json_decref(cur_b);
    return rc;
}

int eg_inventory_note_wipe(struct eg_inventory *inv, const char *mailbox, const char *device_id)
{
    if (!inv)
        return 0;
    if (!mailbox || !device_id)
        return EG_EINVAL;
    char *m = lower_dup(mailbox), *d = lower_dup(device_id);
    int rc = EG_ENOMEM;
    if (m && d) {
        pthread_mutex_lock(&inv->lock);
        sqlite3_stmt *s = inv->st[ST_DEV_NOTE_WIPE];
        if ((rc = bind_text(s, 1, m)) == 0 && (rc = bind_text(s, 2, d)) == 0)
            rc = step_done(inv, ST_DEV_NOTE_WIPE);
        else
            st_reset(inv, ST_DEV_NOTE_WIPE);
        pthread_mutex_unlock(&inv->lock);
    }
    eg_free(m);
    eg_free(d);
    return rc;
}

/* ---- rows --------------------------------------------------------------------------------- */

/* Read the current row of a statement positioned on it. 0 or EG_ENOMEM. */
static int row_read(sqlite3_stmt *s, struct dev *d)
{
    bool nomem = false;
    memset(d, 0, sizeof *d);
    d->id = sqlite3_column_int64(s, RC_ID);
    d->mkey = col_dup(s, RC_MKEY, &nomem);
    d->dkey = col_dup(s, RC_DKEY, &nomem);
    d->mailbox_identity = col_dup(s, RC_MID, &nomem);
    d->device_id = col_dup(s, RC_DID, &nomem);
    for (int f = 0; f < F__COUNT; f++) {
        if (f < F_FIRST_NUM)
            d->s[f] = col_dup(s, RC_F0 + f, &nomem);
        else
            d->n[f] = sqlite3_column_int64(s, RC_F0 + f);
    }
    d->when_changed = sqlite3_column_int64(s, RC_WHEN);
    d->hash = sqlite3_column_int64(s, RC_HASH);
    d->first_seen = sqlite3_column_int64(s, RC_FIRST_SEEN);
    d->changed_at = sqlite3_column_int64(s, RC_CHANGED_AT);
    d->seen_gen = sqlite3_column_int64(s, RC_SEEN_GEN);
    d->stats_due = sqlite3_column_int(s, RC_STATS_DUE);
    d->stats_ms = sqlite3_column_int64(s, RC_STATS_MS);
    d->pending_add = sqlite3_column_int(s, RC_PENDING) != 0;
    if (nomem) {
        dev_clear(d);
        return EG_ENOMEM;
    }
    return 0;
}

/* The row (mkey, dkey): 0 with *found, or an error. */
static int row_get(struct eg_inventory *inv, const char *mkey, const char *dkey, struct dev *d,
                   bool *found)
{
    sqlite3_stmt *s = inv->st[ST_DEV_GET];
    int rc;
    *found = false;
    if ((rc = bind_text(s, 1, mkey)) == 0 && (rc = bind_text(s, 2, dkey)) == 0) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            rc = row_read(s, d);
            *found = rc == 0;
        } else {
            rc = rc == SQLITE_DONE ? 0 : db_err(rc);
        }
    }
    st_reset(inv, ST_DEV_GET);
    return rc;
}

static int row_by_id(struct eg_inventory *inv, int64_t id, struct dev *d, bool *found)
{
    sqlite3_stmt *s = inv->st[ST_DEV_BY_ID];
    int rc;
    *found = false;
    if ((rc = bind_int(s, 1, id)) == 0) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            rc = row_read(s, d);
            *found = rc == 0;
        } else {
            rc = rc == SQLITE_DONE ? 0 : db_err(rc);
        }
    }
    st_reset(inv, ST_DEV_BY_ID);
    return rc;
}

/* Insert (d->id == 0) or update the row of d. */
static int row_write(struct eg_inventory *inv, const struct dev *d)
{
    enum st which = d->id ? ST_DEV_UPDATE : ST_DEV_INSERT;
    sqlite3_stmt *s = inv->st[which];
    char *mlc = d->s[F_MAILBOX] ? lower_dup(d->s[F_MAILBOX]) : NULL;
    int rc = 0;
    if (d->s[F_MAILBOX] && !mlc)
        return EG_ENOMEM;
    rc |= bind_text(s, 1, d->mkey);
    rc |= bind_text(s, 2, d->dkey);
    rc |= bind_text(s, 3, mlc);
    rc |= bind_text(s, 4, d->mailbox_identity);
    rc |= bind_text(s, 5, d->device_id);
    for (int f = 0; f < F__COUNT; f++)
        rc |= f < F_FIRST_NUM ? bind_text(s, 6 + f, d->s[f]) : bind_int(s, 6 + f, d->n[f]);
    rc |= bind_int(s, 21, d->when_changed);
    rc |= bind_int(s, 22, d->hash);
    rc |= bind_int(s, 23, d->first_seen);
    rc |= bind_int(s, 24, d->changed_at);
    rc |= bind_int(s, 25, d->seen_gen);
    rc |= bind_int(s, 26, d->stats_due);
    rc |= bind_int(s, 27, d->stats_ms);
    if (d->id)
        rc |= bind_int(s, 28, d->id);
    rc |= bind_int(s, 29, d->pending_add ? 1 : 0);
    eg_free(mlc);
    if (rc) {
        st_reset(inv, which);
        return EG_ENOMEM;
    }
    return step_done(inv, which);
}

/* An unchanged row was seen again: only its generation, WhenChanged and statistics mark. */
static int row_touch(struct eg_inventory *inv, const struct dev *d)
{
    sqlite3_stmt *s = inv->st[ST_DEV_TOUCH];
    int rc = 0;
    rc |= bind_int(s, 1, d->id);
    rc |= bind_int(s, 2, d->seen_gen);
    rc |= bind_int(s, 3, d->when_changed);
    rc |= bind_int(s, 4, d->stats_due);
    if (rc) {
        st_reset(inv, ST_DEV_TOUCH);
        return EG_EDB;
    }
    return step_done(inv, ST_DEV_TOUCH);
}

/* The record of d as the deltas and the read API show it. NULL on OOM. */
static json_t *dev_json(const struct dev *d)
{
    json_t *o = json_object();
    int bad = o ? 0 : 1;
    for (int f = 0; o && f < F__COUNT; f++) {
        json_t *v;
        if (f == F_LIST)
            v = json_string(list_names[d->n[f] >= 0 && d->n[f] <= 2 ? d->n[f] : 0]);
        else if (f >= F_FIRST_NUM)
            v = time_json(d->n[f]);
        else
            v = d->s[f] ? json_string(d->s[f]) : json_null();
        bad |= json_object_set_new(o, fdefs[f].json, v);
    }
    if (o) {
        bad |= json_object_set_new(o, "mailbox_identity",
                                   d->mailbox_identity ? json_string(d->mailbox_identity)
                                                       : json_null());
        bad |= json_object_set_new(o, "device_id", json_string(d->device_id ? d->device_id : ""));
        bad |= json_object_set_new(o, "first_seen", time_json(d->first_seen));
        bad |= json_object_set_new(o, "changed_at", time_json(d->changed_at));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- a sync ------------------------------------------------------------------------------- */

/* One buffered mailbox of the lists stream. */
struct mbx {
    char *key, *identity, *smtp;
    json_t *allowed, *blocked;
    int64_t when_changed, read_ms;
};

static void mbx_clear(struct mbx *m)
{
    eg_free(m->key);
    eg_free(m->identity);
    eg_free(m->smtp);
    json_decref(m->allowed);
    json_decref(m->blocked);
    memset(m, 0, sizeof *m);
}

/* The lists of one mailbox key as the store has them, cached for the device stream. */
struct mbx_cache {
    char *key;
    bool known;
    char *smtp;
    json_t *allowed, *blocked;
};

static void cache_clear(struct mbx_cache *c)
{
    eg_free(c->key);
    eg_free(c->smtp);
    json_decref(c->allowed);
    json_decref(c->blocked);
    memset(c, 0, sizeof *c);
}

struct sync {
    struct eg_inventory *inv;
    const struct eg_inv_sync_opts *o;
    struct eg_inv_sync_result *res;
    enum eg_inv_mode mode;
    int64_t gen;
    bool resync;      /* every device is emitted as device.added */
    bool stats_new;   /* devices added now get their statistics */
    char *scope_key;  /* lower-cased key of the one mailbox of a scoped sync */
    char *scope_name; /* lower-cased name the console gave for it */
    int fail;         /* our own failure inside a callback */
    struct eg_bridge_error err;
    struct dev *devs; /* the chunk buffers */
    size_t n_devs;
    struct mbx *mbxs;
    size_t n_mbxs;
    struct mbx_cache cache;
    uint64_t heal_seq;
    bool in_txn;
};

static bool stopped(const struct sync *x)
{
    return x->o->stop && atomic_load(x->o->stop);
}

/* Append one delta (payload taken). A record the outbox refuses (full) is counted, not fatal. */
static int emit(struct sync *x, const char *kind, json_t *payload)
{
    int rc = payload ? 0 : EG_ENOMEM;
    if (rc == 0 && x->o->outbox) {
        rc = eg_outbox_append(x->o->outbox, kind, payload);
        if (rc == EG_ELIMIT) {
            x->res->refused++;
            rc = 0;
        }
    }
    json_decref(payload);
    return rc;
}

/* A chunk's transaction: the store and the outbox together (lock held in between). */
static int chunk_begin(struct sync *x)
{
    int rc;
    pthread_mutex_lock(&x->inv->lock);
    if ((rc = txn_begin(x->inv)) < 0) {
        pthread_mutex_unlock(&x->inv->lock);
        return rc;
    }
    if (x->o->outbox && (rc = eg_outbox_begin(x->o->outbox)) < 0) {
        (void)txn_end(x->inv, rc);
        pthread_mutex_unlock(&x->inv->lock);
        return rc;
    }
    x->in_txn = true;
    return 0;
}

/* Commit (rc == 0) or roll back both. The outbox commits first: if the store's commit then
 * fails, the next sync finds the same differences and sends them again (never lost). */
static int chunk_end(struct sync *x, int rc)
{
    if (x->o->outbox) {
        if (rc == 0)
            rc = eg_outbox_commit(x->o->outbox);
        else
            (void)eg_outbox_rollback(x->o->outbox);
    }
    rc = txn_end(x->inv, rc);
    x->in_txn = false;
    pthread_mutex_unlock(&x->inv->lock);
    return rc;
}

/* The stored lists of mailbox key (lock held), through a one-entry cache. */
static int mailbox_lookup(struct sync *x, const char *key, const struct mbx_cache **ret)
{
    struct mbx_cache *c = &x->cache;
    if (c->key && strcmp(c->key, key) == 0) {
        *ret = c;
        return 0;
    }
    cache_clear(c);
    if (!(c->key = eg_strdup(key)))
        return EG_ENOMEM;
    sqlite3_stmt *s = x->inv->st[ST_MBX_GET];
    int rc = bind_text(s, 1, key);
    if (rc == 0) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            bool nomem = false;
            c->smtp = col_dup(s, 0, &nomem);
            c->allowed = load_array(sqlite3_column_text(s, 1));
            c->blocked = load_array(sqlite3_column_text(s, 2));
            c->known = c->allowed && c->blocked;
            rc = nomem ? EG_ENOMEM : 0;
        } else {
            rc = rc == SQLITE_DONE ? 0 : db_err(rc);
        }
    }
    st_reset(x->inv, ST_MBX_GET);
    if (rc < 0)
        cache_clear(c);
    else
        *ret = c;
    return rc;
}

static int list_of(const struct mbx_cache *c, const char *device_id)
{
    if (json_has_ci(c->blocked, device_id))
        return LIST_BLOCKED; /* the blocked list wins (exchange-semantics.md section 10) */
    return json_has_ci(c->allowed, device_id) ? LIST_ALLOWED : LIST_NONE;
}

/* {"device": record, "changed": [...]} of cur against old. */
static json_t *changed_payload(const struct dev *cur, const struct dev *old)
{
    json_t *fields = json_array(), *rec = dev_json(cur);
    for (int f = 0; fields && f < F__COUNT; f++)
        if (!field_equal(cur, old, f) && json_array_append_new(fields, json_string(fdefs[f].json)))
            json_decref(fields), fields = NULL;
    if (!fields || !rec) {
        json_decref(fields);
        json_decref(rec);
        return NULL;
    }
    return json_pack("{s:o, s:o}", "device", rec, "changed", fields);
}

/* The row of d is now cur (merged); write it and emit what changed. old: the stored row (id set)
 * or an empty one for a new device. */
static int store_device(struct sync *x, struct dev *cur, const struct dev *old, bool found)
{
    int64_t now = eg_now_ms();
    cur->hash = dev_hash(cur);
    cur->seen_gen = x->gen;
    if (!found) {
        cur->id = 0;
        cur->first_seen = cur->changed_at = now;
        cur->stats_due = x->stats_new ? DUE_NEW : x->o->mailbox ? DUE_SCOPED : DUE_NONE;
        cur->stats_ms = 0;
        /* With statistics due, device.added waits for them (phase_stats, or flush_pending when
         * the budget ran out), so that the console gets one complete record. */
        cur->pending_add = cur->stats_due != DUE_NONE && !x->resync;
        int rc = row_write(x->inv, cur);
        if (rc == 0) {
            x->res->added++;
            if (!cur->pending_add)
                rc = emit(x, EG_OUTBOX_DEVICE_ADDED, dev_json(cur));
        }
        return rc;
    }
    cur->id = old->id;
    cur->first_seen = old->first_seen;
    cur->stats_ms = old->stats_ms;
    cur->stats_due = old->stats_due;
    cur->pending_add = old->pending_add;
    if (x->o->mailbox && cur->stats_due == DUE_NONE)
        cur->stats_due = DUE_SCOPED; /* a sync of one mailbox looks at every device of it */
    bool same = cur->hash == old->hash;
    cur->changed_at = same ? old->changed_at : now;
    int rc = same ? row_touch(x->inv, cur) : row_write(x->inv, cur);
    if (rc < 0)
        return rc;
    if (same) {
        x->res->unchanged++;
        return x->resync ? emit(x, EG_OUTBOX_DEVICE_ADDED, dev_json(cur)) : 0;
    }
    x->res->changed++;
    if (cur->pending_add)
        return 0; /* its device.added is still to come, with this content */
    if (x->resync)
        return emit(x, EG_OUTBOX_DEVICE_ADDED, dev_json(cur));
    return emit(x, EG_OUTBOX_DEVICE_CHANGED, changed_payload(cur, old));
}

/* Compare one streamed device with the store (lock held, transaction open). */
static int process_device(struct sync *x, struct dev *d)
{
    const struct mbx_cache *mc = NULL;
    struct dev old;
    bool found = false;
    int rc;

    memset(&old, 0, sizeof old);
    if ((rc = mailbox_lookup(x, d->mkey, &mc)) < 0)
        return rc;
    /* The mailbox as the console knows it: its primary SMTP address when the lists told it. */
    const char *shown = mc->smtp ? mc->smtp : d->raw_mailbox;
    if (shown && !(d->s[F_MAILBOX] = eg_strdup(shown)))
        return EG_ENOMEM;
    if ((rc = row_get(x->inv, d->mkey, d->dkey, &old, &found)) < 0)
        return rc;
    if (mc->known)
        d->n[F_LIST] = list_of(mc, d->device_id);
    else
        d->n[F_LIST] = found ? old.n[F_LIST] : LIST_NONE; /* lists unknown: keep */
    for (int f = 0; found && f < F__COUNT && rc == 0; f++)
        if (fdefs[f].sticky && !field_known(d, f))
            rc = field_copy(d, &old, f);
    if (rc == 0)
        rc = store_device(x, d, &old, found);
    dev_clear(&old);
    return rc;
}

static void devs_clear(struct sync *x)
{
    for (size_t i = 0; i < x->n_devs; i++)
        dev_clear(&x->devs[i]);
    x->n_devs = 0;
}

static int flush_devices(struct sync *x)
{
    int rc = 0;
    if (x->n_devs == 0)
        return 0;
    if ((rc = chunk_begin(x)) == 0) {
        for (size_t i = 0; i < x->n_devs && rc == 0; i++)
            rc = process_device(x, &x->devs[i]);
        rc = chunk_end(x, rc);
    }
    if (rc == 0) {
        x->res->devices += x->n_devs;
        if (x->o->progress)
            atomic_store(x->o->progress, x->res->devices);
    }
    devs_clear(x);
    return rc;
}

/* A streamed record as a dev (copies). Records without a device id or a mailbox are skipped
 * (*skip). */
static int dev_from_record(const struct eg_device_record *r, struct dev *d, bool *skip)
{
    const char *mbx = r->mailbox_identity ? r->mailbox_identity : r->mailbox;
    memset(d, 0, sizeof *d);
    *skip = !r->device_id || !*r->device_id || !mbx || !*mbx;
    if (*skip)
        return 0;
    const char *src[F__COUNT] = {
        [F_IDENTITY] = r->identity,    [F_TYPE] = r->device_type,
        [F_MODEL] = r->model,          [F_OS] = r->os,
        [F_UA] = r->user_agent,        [F_STATE] = r->access_state,
        [F_REASON] = r->access_reason, [F_WIPE_STATUS] = r->wipe_status,
    };
    bool nomem = false;
    for (int f = 0; f < F_FIRST_NUM; f++)
        if (f != F_MAILBOX && src[f] && !(d->s[f] = eg_strdup(src[f])))
            nomem = true;
    d->n[F_FIRST_SYNC] = r->first_sync_ms;
    d->n[F_LAST_SUCCESS] = r->last_success_sync_ms;
    d->n[F_WIPE_REQ] = r->wipe_request_ms;
    d->n[F_WIPE_SENT] = r->wipe_sent_ms;
    d->n[F_WIPE_ACK] = r->wipe_ack_ms;
    d->when_changed = r->when_changed_ms;
    d->mkey = lower_dup(mbx);
    d->dkey = lower_dup(r->device_id);
    d->device_id = eg_strdup(r->device_id);
    d->raw_mailbox = eg_strdup(mbx);
    if (r->mailbox_identity && !(d->mailbox_identity = eg_strdup(r->mailbox_identity)))
        nomem = true;
    if (nomem || !d->mkey || !d->dkey || !d->device_id || !d->raw_mailbox) {
        dev_clear(d);
        return EG_ENOMEM;
    }
    return 0;
}

static int device_cb(void *ctx, const struct eg_device_record *r)
{
    struct sync *x = ctx;
    bool skip = false;
    if (stopped(x))
        return x->fail = EG_ESHUTDOWN;
    int rc = dev_from_record(r, &x->devs[x->n_devs], &skip);
    if (rc < 0)
        return x->fail = rc;
    if (skip)
        return 0;
    if (++x->n_devs == EG_INVENTORY_CHUNK && (rc = flush_devices(x)) < 0)
        return x->fail = rc;
    return 0;
}

/* ---- drift ---- */

/* Submit the heal of one mailbox: mailbox.set_devices with the declared sets. *ret_id gets the
 * command id when one was stored. */
static int heal(struct sync *x, const char *mailbox, const json_t *allowed, const json_t *blocked,
                char *ret_id, size_t idlen)
{
    const char **va = NULL, **vb = NULL;
    char *body = NULL, *mkey = NULL;
    struct eg_cmd_record *rec = NULL;
    enum eg_submit_outcome outcome;
    size_t na = 0, nb = 0;
    char id[EG_MAX_ID_LEN + 1];
    int rc = EG_ENOMEM;

    snprintf(id, sizeof id, "inventory-heal-%" PRId64 "-%" PRIu64, x->gen, ++x->heal_seq);
    if (!(va = strings_of(allowed, &na)) || !(vb = strings_of(blocked, &nb)))
        goto out;
    struct eg_command c = {.id = id,
                           .type = EG_CMD_MAILBOX_SET_DEVICES,
                           .mailbox = (char *)mailbox,
                           .allowed = (char **)va,
                           .n_allowed = na,
                           .blocked = (char **)vb,
                           .n_blocked = nb,
                           .activesync_enabled = -1};
    if (!(body = eg_command_canonical(&c)) || !(mkey = eg_command_mailbox_key(&c)))
        goto out;
    struct eg_submit item = {.id = id,
                             .type = eg_cmd_type_name(EG_CMD_MAILBOX_SET_DEVICES),
                             .mailbox_key = mkey,
                             .body = body,
                             .client = HEAL_CLIENT};
    rc = eg_queue_submit(x->o->queue, &item, 1, &outcome, &rec);
    if (rc == 0) {
        snprintf(ret_id, idlen, "%s", id);
        if (x->o->healed)
            x->o->healed(x->o->healed_ctx);
    }
out:
    eg_cmd_record_free(rec);
    eg_free(va);
    eg_free(vb);
    eg_free(body);
    eg_free(mkey);
    return rc;
}

/* Judge the declarations that name mailbox m (lock held, transaction open). */
static int check_drift(struct sync *x, const struct mbx *m)
{
    sqlite3_stmt *s = x->inv->st[ST_DES_FIND];
    char *smtp_lc = m->smtp ? lower_dup(m->smtp) : NULL;
    struct found {
        char *key, *mailbox;
        json_t *allowed, *blocked;
        int64_t noted_ms;
    } f[4];
    size_t n = 0;
    int rc;

    if (m->smtp && !smtp_lc)
        return EG_ENOMEM;
    memset(f, 0, sizeof f);
    if ((rc = bind_text(s, 1, m->key)) == 0 && (rc = bind_text(s, 2, smtp_lc)) == 0) {
        while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < 4) {
            bool nomem = false;
            f[n].key = col_dup(s, 0, &nomem);
            f[n].mailbox = col_dup(s, 1, &nomem);
            f[n].allowed = load_array(sqlite3_column_text(s, 2));
            f[n].blocked = load_array(sqlite3_column_text(s, 3));
            f[n].noted_ms = sqlite3_column_int64(s, 4);
            n++;
            if (nomem || !f[n - 1].key || !f[n - 1].mailbox || !f[n - 1].allowed ||
                !f[n - 1].blocked) {
                rc = EG_ENOMEM;
                break;
            }
        }
        rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc < 0 ? rc : db_err(rc);
    }
    st_reset(x->inv, ST_DES_FIND);
    eg_free(smtp_lc);

    for (size_t i = 0; i < n && rc == 0; i++) {
        /* Judged now, or deliberately not: an edit in flight, or a declaration newer than what
         * was read (the next sync judges it). */
        sqlite3_stmt *u = x->inv->st[ST_DES_CHECKED];
        if ((rc = bind_text(u, 1, f[i].key)) < 0 || (rc = bind_int(u, 2, x->gen)) < 0 ||
            (rc = bind_text(u, 3, m->key)) < 0 || (rc = step_done(x->inv, ST_DES_CHECKED)) < 0) {
            st_reset(x->inv, ST_DES_CHECKED);
            break;
        }
        if (edit_in_flight(x->inv, f[i].key) || f[i].noted_ms >= m->read_ms)
            continue;
        if (sets_equal(f[i].allowed, m->allowed) && sets_equal(f[i].blocked, m->blocked))
            continue;
        char cmd_id[EG_MAX_ID_LEN + 1] = "";
        bool healed = false;
        x->res->drift++;
        if (x->o->heal_drift && x->o->queue) {
            rc = heal(x, f[i].mailbox, f[i].allowed, f[i].blocked, cmd_id, sizeof cmd_id);
            if (rc < 0)
                break;
            healed = true;
            x->res->healed++;
        }
        json_t *p =
            json_pack("{s:s, s:{s:O, s:O}, s:{s:O, s:O}, s:b}", "mailbox", f[i].mailbox, "expected",
                      "allowed", f[i].allowed, "blocked", f[i].blocked, "actual", "allowed",
                      m->allowed, "blocked", m->blocked, "healed", healed);
        if (p && cmd_id[0] && json_object_set_new(p, "command_id", json_string(cmd_id)) < 0)
            json_decref(p), p = NULL;
        if (p && json_object_set_new(p, "mailbox_identity", json_string(m->identity)) < 0)
            json_decref(p), p = NULL;
        rc = emit(x, EG_OUTBOX_DRIFT, p);
    }
    for (size_t i = 0; i < n; i++) {
        eg_free(f[i].key);
        eg_free(f[i].mailbox);
        json_decref(f[i].allowed);
        json_decref(f[i].blocked);
    }
    return rc;
}

/* A quick sync saw the lists of mailbox key change: the stored devices' list membership follows
 * (lock held, transaction open). */
static int relist_devices(struct sync *x, const struct mbx *m)
{
    sqlite3_stmt *s = x->inv->st[ST_DEV_OF_MAILBOX];
    struct mbx_cache mc = {.known = true, .allowed = m->allowed, .blocked = m->blocked};
    int64_t after = 0;
    int rc = 0;
    for (;;) {
        struct dev rows[16];
        size_t n = 0;
        if ((rc = bind_text(s, 1, m->key)) < 0 || (rc = bind_int(s, 2, after)) < 0 ||
            (rc = bind_int(s, 3, 16)) < 0) {
            st_reset(x->inv, ST_DEV_OF_MAILBOX);
            return rc;
        }
        while (n < 16 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            if ((rc = row_read(s, &rows[n])) < 0)
                break;
            after = rows[n++].id;
        }
        rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc < 0 ? rc : db_err(rc);
        st_reset(x->inv, ST_DEV_OF_MAILBOX);
        for (size_t i = 0; i < n && rc == 0; i++) {
            int l = list_of(&mc, rows[i].device_id);
            if (l == rows[i].n[F_LIST])
                continue;
            struct dev cur = rows[i];
            struct dev old = rows[i]; /* shallow: the same strings, another list */
            cur.n[F_LIST] = l;
            cur.hash = dev_hash(&cur);
            cur.changed_at = eg_now_ms();
            if ((rc = row_write(x->inv, &cur)) < 0)
                break;
            x->res->changed++;
            rc = emit(x, x->resync ? EG_OUTBOX_DEVICE_ADDED : EG_OUTBOX_DEVICE_CHANGED,
                      x->resync ? dev_json(&cur) : changed_payload(&cur, &old));
        }
        for (size_t i = 0; i < n; i++)
            dev_clear(&rows[i]);
        if (rc < 0 || n < 16)
            return rc;
    }
}

/* Store one mailbox's lists and judge it (lock held, transaction open). */
static int process_mailbox(struct sync *x, struct mbx *m)
{
    char *a = json_dumps(m->allowed, JSON_COMPACT), *b = json_dumps(m->blocked, JSON_COMPACT);
    char *smtp_lc = m->smtp ? lower_dup(m->smtp) : NULL;
    bool changed = true;
    int rc = EG_ENOMEM;
    if (!a || !b || (m->smtp && !smtp_lc))
        goto out;
    if (x->mode == EG_INV_QUICK) {
        sqlite3_stmt *g = x->inv->st[ST_MBX_GET];
        if ((rc = bind_text(g, 1, m->key)) == 0 && (rc = sqlite3_step(g)) == SQLITE_ROW) {
            const unsigned char *oa = sqlite3_column_text(g, 1), *ob = sqlite3_column_text(g, 2);
            changed = !oa || !ob || strcmp((const char *)oa, a) || strcmp((const char *)ob, b);
            rc = 0;
        } else if (rc > 0) {
            rc = rc == SQLITE_DONE ? 0 : db_err(rc);
        }
        st_reset(x->inv, ST_MBX_GET);
        if (rc < 0)
            goto out;
    }
    sqlite3_stmt *s = x->inv->st[ST_MBX_PUT];
    if ((rc = bind_text(s, 1, m->key)) < 0 || (rc = bind_text(s, 2, m->identity)) < 0 ||
        (rc = bind_text(s, 3, m->smtp)) < 0 || (rc = bind_text(s, 4, smtp_lc)) < 0 ||
        (rc = bind_text(s, 5, a)) < 0 || (rc = bind_text(s, 6, b)) < 0 ||
        (rc = bind_int(s, 7, m->when_changed)) < 0 || (rc = bind_int(s, 8, x->gen)) < 0 ||
        (rc = bind_int(s, 9, m->read_ms)) < 0) {
        st_reset(x->inv, ST_MBX_PUT);
        goto out;
    }
    if ((rc = step_done(x->inv, ST_MBX_PUT)) < 0)
        goto out;
    if (x->cache.key && strcmp(x->cache.key, m->key) == 0)
        cache_clear(&x->cache);
    x->res->mailboxes++;
    if ((rc = check_drift(x, m)) < 0)
        goto out;
    if (x->mode == EG_INV_QUICK && changed)
        rc = relist_devices(x, m);
out:
    eg_free(a);
    eg_free(b);
    eg_free(smtp_lc);
    return rc;
}

static int flush_mailboxes(struct sync *x)
{
    int rc = 0;
    if (x->n_mbxs == 0)
        return 0;
    if ((rc = chunk_begin(x)) == 0) {
        for (size_t i = 0; i < x->n_mbxs && rc == 0; i++)
            rc = process_mailbox(x, &x->mbxs[i]);
        rc = chunk_end(x, rc);
    }
    for (size_t i = 0; i < x->n_mbxs; i++)
        mbx_clear(&x->mbxs[i]);
    x->n_mbxs = 0;
    return rc;
}

static int mailbox_cb(void *ctx, const struct eg_mailbox_record *r)
{
    struct sync *x = ctx;
    if (stopped(x))
        return x->fail = EG_ESHUTDOWN;
    if (!r->identity || !*r->identity)
        return 0;
    struct mbx *m = &x->mbxs[x->n_mbxs];
    memset(m, 0, sizeof *m);
    m->key = lower_dup(r->identity);
    m->identity = eg_strdup(r->identity);
    m->smtp = r->primary_smtp ? eg_strdup(r->primary_smtp) : NULL;
    m->allowed = strings_json(r->allowed, r->n_allowed);
    m->blocked = strings_json(r->blocked, r->n_blocked);
    m->when_changed = r->when_changed_ms;
    m->read_ms = eg_now_ms();
    if (!m->key || !m->identity || (r->primary_smtp && !m->smtp) || !m->allowed || !m->blocked) {
        mbx_clear(m);
        return x->fail = EG_ENOMEM;
    }
    if (x->o->mailbox && !x->scope_key && !(x->scope_key = eg_strdup(m->key))) {
        mbx_clear(m);
        return x->fail = EG_ENOMEM;
    }
    int rc;
    if (++x->n_mbxs == EG_INVENTORY_CHUNK && (rc = flush_mailboxes(x)) < 0)
        return x->fail = rc;
    return 0;
}

/* ---- the phases ---- */

/* Turn a stream's result into the sync's: our own failure first, else the bridge's. */
static int stream_result(struct sync *x, int rc, const char *what)
{
    if (x->fail) {
        int f = x->fail;
        if (f == EG_ESHUTDOWN)
            eg_bridge_error_set(&x->err, EG_BERR_INTERNAL, true, "the agent is shutting down");
        else
            eg_bridge_error_set(&x->err, EG_BERR_INTERNAL, f == EG_EDB || f == EG_ENOMEM, "%s: %s",
                                what, eg_strerror(f));
        return f;
    }
    if (rc > 0)
        rc = EG_EINTERNAL;
    if (rc < 0 && !x->err.code[0])
        eg_bridge_error_set(&x->err, EG_BERR_INTERNAL, false, "%s: %s", what, eg_strerror(rc));
    return rc;
}

static int phase_lists(struct sync *x, int64_t since)
{
    const struct eg_bridge_ops *ops = x->o->bridge->ops;
    struct eg_mailbox_query q = {.mailbox = x->o->mailbox, .since_ms = since};
    if (!ops->mailbox_lists)
        return 0; /* lists unknown: list membership is kept as it was */
    memset(&x->err, 0, sizeof x->err);
    int rc = ops->mailbox_lists(x->o->bridge->impl, &q, mailbox_cb, x, &x->err);
    if (rc == EG_EUNSUPPORTED && !x->fail) {
        for (size_t i = 0; i < x->n_mbxs; i++)
            mbx_clear(&x->mbxs[i]);
        x->n_mbxs = 0;
        memset(&x->err, 0, sizeof x->err);
        return 0;
    }
    if (rc == 0)
        rc = flush_mailboxes(x);
    return stream_result(x, rc, "the mailboxes' lists");
}

static int phase_devices(struct sync *x, int64_t since)
{
    const struct eg_bridge_ops *ops = x->o->bridge->ops;
    struct eg_inventory_query q = {.full = x->mode == EG_INV_FULL,
                                   .mailbox = x->o->mailbox,
                                   .page_size = EG_MAX_PAGE_SIZE,
                                   .since_ms = since};
    char *cursor = NULL;
    int rc = 0;
    if (!ops->inventory_page) {
        eg_bridge_error_set(&x->err, EG_BERR_UNSUPPORTED, false,
                            "the Exchange backend has no inventory");
        return EG_EUNSUPPORTED;
    }
    for (int pages = 0;; pages++) {
        char *next = NULL;
        if (pages >= EG_INVENTORY_MAX_PAGES) {
            eg_free(cursor);
            eg_bridge_error_set(&x->err, EG_BERR_INTERNAL, false,
                                "inventory paging did not end after %d pages",
                                EG_INVENTORY_MAX_PAGES);
            return EG_EPROTO;
        }
        memset(&x->err, 0, sizeof x->err);
        rc = ops->inventory_page(x->o->bridge->impl, &q, cursor, device_cb, x, &next, &x->err);
        eg_free(cursor);
        cursor = next;
        if (rc != 0 || !cursor)
            break;
    }
    eg_free(cursor);
    if (rc == 0)
        rc = flush_devices(x);
    else
        devs_clear(x);
    return stream_result(x, rc, "the inventory");
}

/* Full sync: every row this sync did not see is gone. */
static int phase_removals(struct sync *x)
{
    const char *scope = x->o->mailbox ? (x->scope_key ? x->scope_key : x->scope_name) : NULL;
    for (;;) {
        struct dev rows[64];
        size_t n = 0;
        int rc;
        if (stopped(x))
            return EG_ESHUTDOWN;
        if ((rc = chunk_begin(x)) < 0)
            return rc;
        sqlite3_stmt *s = x->inv->st[ST_DEV_UNSEEN];
        if ((rc = bind_int(s, 1, x->gen)) == 0 && (rc = bind_int(s, 2, 64)) == 0 &&
            (rc = bind_text(s, 3, scope)) == 0) {
            while (n < 64 && (rc = sqlite3_step(s)) == SQLITE_ROW)
                if ((rc = row_read(s, &rows[n])) < 0)
                    break;
                else
                    n++;
            rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc < 0 ? rc : db_err(rc);
        }
        st_reset(x->inv, ST_DEV_UNSEEN);
        for (size_t i = 0; i < n && rc == 0; i++) {
            sqlite3_stmt *d = x->inv->st[ST_DEV_DELETE];
            if ((rc = bind_int(d, 1, rows[i].id)) < 0 ||
                (rc = step_done(x->inv, ST_DEV_DELETE)) < 0) {
                st_reset(x->inv, ST_DEV_DELETE);
                break;
            }
            x->res->removed++;
            rc = emit(x, EG_OUTBOX_DEVICE_REMOVED,
                      json_pack("{s:s, s:s, s:s?}", "mailbox",
                                rows[i].s[F_MAILBOX] ? rows[i].s[F_MAILBOX] : rows[i].mkey,
                                "device_id", rows[i].device_id, "mailbox_identity",
                                rows[i].mailbox_identity));
        }
        if (rc == 0 && n == 0 && !x->o->mailbox) {
            sqlite3_stmt *m = x->inv->st[ST_MBX_DELETE_UNSEEN];
            if ((rc = bind_int(m, 1, x->gen)) == 0)
                rc = step_done(x->inv, ST_MBX_DELETE_UNSEEN);
            else
                st_reset(x->inv, ST_MBX_DELETE_UNSEEN);
        }
        for (size_t i = 0; i < n; i++)
            dev_clear(&rows[i]);
        if ((rc = chunk_end(x, rc)) < 0 || n == 0)
            return rc;
    }
}

/* Sleep ms unless the sync is stopped meanwhile. */
static void pause_ms(const struct sync *x, int64_t ms)
{
    while (ms > 0 && !stopped(x)) {
        int64_t step = ms > 50 ? 50 : ms;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Full sync: declarations the lists stream did not cover (another identity form, a mailbox
 * without partnerships) are read one mailbox at a time. A failure ends this phase only. */
static int phase_declared(struct sync *x)
{
    const struct eg_bridge_ops *ops = x->o->bridge->ops;
    unsigned budget = x->o->mailbox_reads_per_sync;
    if (!ops->mailbox_lists || budget == 0 || x->o->mailbox)
        return 0;
    while (budget > 0 && !stopped(x)) {
        char *keys[16], *names[16];
        size_t n = 0;
        int rc;
        pthread_mutex_lock(&x->inv->lock);
        sqlite3_stmt *s = x->inv->st[ST_DES_UNCHECKED];
        if ((rc = bind_int(s, 1, x->gen)) == 0 &&
            (rc = bind_int(s, 2, budget < 16 ? budget : 16)) == 0)
            while (n < 16 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
                bool nomem = false;
                keys[n] = col_dup(s, 0, &nomem);
                names[n] = col_dup(s, 1, &nomem);
                n++;
                if (nomem || !keys[n - 1] || !names[n - 1]) {
                    rc = EG_ENOMEM;
                    break;
                }
            }
        st_reset(x->inv, ST_DES_UNCHECKED);
        pthread_mutex_unlock(&x->inv->lock);
        rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc < 0 ? rc : db_err(rc);
        for (size_t i = 0; i < n && rc == 0 && !stopped(x); i++) {
            struct eg_mailbox_query q = {.mailbox = names[i]};
            struct eg_bridge_error e;
            budget--;
            memset(&e, 0, sizeof e);
            int brc = ops->mailbox_lists(x->o->bridge->impl, &q, mailbox_cb, x, &e);
            if (brc == 0 && x->n_mbxs > 0) {
                /* The Exchange key this name resolves to, so that the judgement below (and the
                 * streams of later syncs) find the declaration by it. */
                pthread_mutex_lock(&x->inv->lock);
                sqlite3_stmt *r = x->inv->st[ST_DES_RESOLVE];
                if ((rc = bind_text(r, 1, keys[i])) == 0 &&
                    (rc = bind_text(r, 2, x->mbxs[0].key)) == 0)
                    rc = step_done(x->inv, ST_DES_RESOLVE);
                else
                    st_reset(x->inv, ST_DES_RESOLVE);
                pthread_mutex_unlock(&x->inv->lock);
            }
            if (brc == 0 && rc == 0)
                rc = flush_mailboxes(x);
            for (size_t k = 0; k < x->n_mbxs; k++)
                mbx_clear(&x->mbxs[k]);
            x->n_mbxs = 0;
            x->fail = 0;
            if (rc == 0 && brc != 0 && strcmp(e.code, EG_BERR_MAILBOX_NOT_FOUND) != 0)
                rc = brc < 0 ? brc : EG_EINTERNAL; /* Exchange trouble: try again next sync */
            if (rc == 0) {
                /* Judged (or not in Exchange any more: nothing to compare) in this sync. */
                pthread_mutex_lock(&x->inv->lock);
                sqlite3_stmt *u = x->inv->st[ST_DES_CHECKED];
                if ((rc = bind_text(u, 1, keys[i])) == 0 && (rc = bind_int(u, 2, x->gen)) == 0 &&
                    (rc = bind_text(u, 3, NULL)) == 0)
                    rc = step_done(x->inv, ST_DES_CHECKED);
                else
                    st_reset(x->inv, ST_DES_CHECKED);
                pthread_mutex_unlock(&x->inv->lock);
            }
        }
        for (size_t i = 0; i < n; i++) {
            eg_free(keys[i]);
            eg_free(names[i]);
        }
        if (rc < 0 || n == 0)
            return 0;
    }
    return 0;
}

/* What the statistics call reported. */
struct stats_rec {
    bool got, nomem;
    char *wipe_status;
    int64_t last_success, wreq, wsent, wack;
};

static int stats_cb(void *ctx, const struct eg_device_record *r)
{
    struct stats_rec *sr = ctx;
    if (sr->got)
        return 0;
    sr->got = true;
    sr->wipe_status = r->wipe_status ? eg_strdup(r->wipe_status) : NULL;
    sr->nomem = r->wipe_status && !sr->wipe_status;
    sr->last_success = r->last_success_sync_ms;
    sr->wreq = r->wipe_request_ms;
    sr->wsent = r->wipe_sent_ms;
    sr->wack = r->wipe_ack_ms;
    return 0;
}

/* Apply one statistics answer to row id (lock held, transaction open). */
static int apply_stats(struct sync *x, int64_t id, const struct stats_rec *sr)
{
    struct dev old, cur;
    bool found = false;
    int rc = row_by_id(x->inv, id, &old, &found);
    if (rc < 0 || !found)
        return rc;
    memset(&cur, 0, sizeof cur);
    /* cur: a deep copy of old with the statistics' fields, which are authoritative here (a null
     * wipe time after a cancel is real). */
    cur = old;
    cur.mkey = eg_strdup(old.mkey);
    cur.dkey = eg_strdup(old.dkey);
    cur.mailbox_identity = old.mailbox_identity ? eg_strdup(old.mailbox_identity) : NULL;
    cur.device_id = eg_strdup(old.device_id);
    cur.raw_mailbox = NULL;
    bool nomem =
        !cur.mkey || !cur.dkey || !cur.device_id || (old.mailbox_identity && !cur.mailbox_identity);
    for (int f = 0; f < F_FIRST_NUM; f++) {
        cur.s[f] = NULL;
        if (f == F_WIPE_STATUS) {
            if (sr->got && sr->wipe_status && !(cur.s[f] = eg_strdup(sr->wipe_status)))
                nomem = true;
            if (!sr->got && old.s[f] && !(cur.s[f] = eg_strdup(old.s[f])))
                nomem = true;
        } else if (old.s[f] && !(cur.s[f] = eg_strdup(old.s[f]))) {
            nomem = true;
        }
    }
    if (nomem) {
        rc = EG_ENOMEM;
        goto out;
    }
    int64_t now = eg_now_ms();
    if (sr->got) {
        cur.n[F_LAST_SUCCESS] = sr->last_success ? sr->last_success : old.n[F_LAST_SUCCESS];
        cur.n[F_WIPE_REQ] = sr->wreq;
        cur.n[F_WIPE_SENT] = sr->wsent;
        cur.n[F_WIPE_ACK] = sr->wack;
    }
    bool pending =
        sr->got &&
        ((cur.s[F_WIPE_STATUS] && strcasecmp(cur.s[F_WIPE_STATUS], "DeviceWipePending") == 0) ||
         (cur.n[F_WIPE_REQ] && !cur.n[F_WIPE_ACK]));
    if (pending && cur.n[F_WIPE_REQ] && now - cur.n[F_WIPE_REQ] > EG_INVENTORY_WIPE_WATCH_MS)
        pending = false; /* Exchange Online never acknowledges: stop watching after a while */
    cur.stats_due = pending ? DUE_WIPE : DUE_NONE;
    cur.stats_ms = now;
    cur.pending_add = false;
    cur.hash = dev_hash(&cur);
    bool same = cur.hash == old.hash;
    if (!same && !old.pending_add)
        cur.changed_at = now;
    if ((rc = row_write(x->inv, &cur)) < 0)
        goto out;
    if (old.pending_add) { /* the device.added that waited for these statistics */
        rc = emit(x, EG_OUTBOX_DEVICE_ADDED, dev_json(&cur));
        goto out;
    }
    if (same)
        goto out;
    x->res->changed++;
    rc = emit(x, x->resync ? EG_OUTBOX_DEVICE_ADDED : EG_OUTBOX_DEVICE_CHANGED,
              x->resync ? dev_json(&cur) : changed_payload(&cur, &old));
out:
    dev_clear(&cur);
    dev_clear(&old);
    return rc;
}

/* Statistics for the devices that need them, rate limited. A failure ends this phase only. */
static int phase_stats(struct sync *x)
{
    const struct eg_bridge_ops *ops = x->o->bridge->ops;
    unsigned budget = x->o->stats_per_sync;
    const char *scope = x->o->mailbox ? (x->scope_key ? x->scope_key : x->scope_name) : NULL;
    struct due {
        int64_t id;
        char *mbx, *device_id, *identity;
    } *v = NULL;
    size_t n = 0;
    int rc;

    if (!ops->device_stats || budget == 0)
        return 0;
    if (!(v = eg_calloc(budget, sizeof *v)))
        return EG_ENOMEM;
    pthread_mutex_lock(&x->inv->lock);
    sqlite3_stmt *s = x->inv->st[ST_DEV_STATS_DUE];
    if ((rc = bind_int(s, 1, budget)) == 0 && (rc = bind_text(s, 2, scope)) == 0)
        while (n < budget && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            bool nomem = false;
            v[n].id = sqlite3_column_int64(s, 0);
            v[n].mbx = col_dup(s, 1, &nomem);
            if (!v[n].mbx)
                v[n].mbx = col_dup(s, 4, &nomem);
            v[n].device_id = col_dup(s, 2, &nomem);
            v[n].identity = col_dup(s, 3, &nomem);
            n++;
            if (nomem) {
                rc = EG_ENOMEM;
                break;
            }
        }
    st_reset(x->inv, ST_DEV_STATS_DUE);
    pthread_mutex_unlock(&x->inv->lock);
    rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc < 0 ? rc : db_err(rc);

    for (size_t i = 0; i < n && rc == 0 && !stopped(x); i++) {
        struct stats_rec sr = {0};
        struct eg_bridge_error e;
        memset(&e, 0, sizeof e);
        pause_ms(x, x->o->stats_interval_ms);
        if (stopped(x))
            break;
        int brc = ops->device_stats(x->o->bridge->impl, v[i].mbx, v[i].device_id, v[i].identity,
                                    stats_cb, &sr, &e);
        x->res->stats++;
        if (brc == 0 && sr.nomem)
            brc = EG_ENOMEM;
        if (brc != 0 && strcmp(e.code, EG_BERR_DEVICE_NOT_FOUND) != 0) {
            eg_free(sr.wipe_status);
            break; /* Exchange trouble or no such operation: the rest waits for the next sync */
        }
        /* device_not_found: gone; the next full sync removes it. Its statistics are no longer
         * due. */
        if ((rc = chunk_begin(x)) == 0)
            rc = chunk_end(x, apply_stats(x, v[i].id, &sr));
        eg_free(sr.wipe_status);
    }
    for (size_t i = 0; i < n; i++) {
        eg_free(v[i].mbx);
        eg_free(v[i].device_id);
        eg_free(v[i].identity);
    }
    eg_free(v);
    return rc == EG_ENOMEM || rc == EG_EDB || rc == EG_EIO ? rc : 0;
}

/* Emit the device.added records still waiting for statistics (the budget ran out, the
 * statistics failed, the sync failed or stopped after the devices were stored, or an earlier
 * sync crashed): without them, as the devices are now. */
static int flush_pending(struct sync *x)
{
    for (;;) {
        struct dev rows[64];
        size_t n = 0;
        int rc;
        if ((rc = chunk_begin(x)) < 0)
            return rc;
        sqlite3_stmt *s = x->inv->st[ST_DEV_PENDING];
        while (n < 64 && (rc = sqlite3_step(s)) == SQLITE_ROW)
            if ((rc = row_read(s, &rows[n])) < 0)
                break;
            else
                n++;
        rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc < 0 ? rc : db_err(rc);
        st_reset(x->inv, ST_DEV_PENDING);
        for (size_t i = 0; i < n && rc == 0; i++) {
            rows[i].pending_add = false;
            if ((rc = row_write(x->inv, &rows[i])) == 0)
                rc = emit(x, EG_OUTBOX_DEVICE_ADDED, dev_json(&rows[i]));
        }
        for (size_t i = 0; i < n; i++)
            dev_clear(&rows[i]);
        if ((rc = chunk_end(x, rc)) < 0 || n == 0)
            return rc;
    }
}

static json_t *result_json(const struct sync *x, int rc)
{
    const struct eg_inv_sync_result *r = x->res;
    json_t *p = json_pack(
        "{s:I, s:s, s:b, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "sync_id",
        (json_int_t)x->o->sync_id, "mode", eg_inv_mode_name(x->mode), "ok", rc == 0, "started_at",
        time_json(r->started_ms), "finished_at", time_json(r->finished_ms), "devices",
        (json_int_t)r->devices, "mailboxes", (json_int_t)r->mailboxes, "added",
        (json_int_t)r->added, "changed", (json_int_t)r->changed, "removed", (json_int_t)r->removed,
        "unchanged", (json_int_t)r->unchanged, "drift", (json_int_t)r->drift, "healed",
        (json_int_t)r->healed, "stats", (json_int_t)r->stats, "resync", x->resync && rc == 0);
    if (p && x->o->mailbox && json_object_set_new(p, "mailbox", json_string(x->o->mailbox)) < 0)
        json_decref(p), p = NULL;
    if (p && rc != 0 &&
        json_object_set_new(p, "error",
                            json_pack("{s:s, s:s}", "code", r->error_code[0] ? r->error_code : "?",
                                      "message", r->error)) < 0)
        json_decref(p), p = NULL;
    return p;
}

/* The last transaction: meta of a completed sync, sync.completed, and the resync flag. */
static int finish(struct sync *x, int rc)
{
    struct eg_inv_sync_result *res = x->res;
    res->finished_ms = eg_now_ms();
    if (rc != 0) {
        snprintf(res->error_code, sizeof res->error_code, "%s",
                 x->err.code[0] ? x->err.code : EG_BERR_INTERNAL);
        snprintf(res->error, sizeof res->error, "%s",
                 x->err.message[0] ? x->err.message : eg_strerror(rc));
    }
    int crc = chunk_begin(x);
    if (crc < 0)
        return rc ? rc : crc;
    if (rc == 0 && !x->o->mailbox) {
        struct eg_inventory *inv = x->inv;
        bool full = x->mode == EG_INV_FULL;
        crc = meta_put(inv, full ? "last_full_start" : "last_quick_start", res->started_ms);
        if (crc == 0)
            crc = meta_put(inv, full ? "last_full_end" : "last_quick_end", res->finished_ms);
        if (crc == 0) /* the next quick sync looks at what changed since this one began */
            crc = meta_put(inv, "since_base", res->started_ms);
        if (crc == 0 && full)
            crc = meta_put(inv, "synced_revision", x->o->target_revision);
        if (crc == 0 && full)
            crc = meta_put(inv, "baseline", 1);
    }
    if (crc == 0)
        crc = emit(x, EG_OUTBOX_SYNC, result_json(x, rc));
    if (crc == 0 && rc == 0 && x->resync && res->refused == 0)
        eg_outbox_resync_done(x->o->outbox); /* applied at the commit below */
    crc = chunk_end(x, crc);
    res->resync = x->resync && rc == 0 && crc == 0;
    return rc ? rc : crc;
}

int eg_inventory_meta(struct eg_inventory *inv, struct eg_inventory_meta *ret)
{
    int64_t baseline = 0;
    int rc;
    if (!inv || !ret)
        return EG_EINVAL;
    memset(ret, 0, sizeof *ret);
    pthread_mutex_lock(&inv->lock);
    rc = meta_get(inv, "generation", &ret->generation);
    if (rc == 0)
        rc = meta_get(inv, "last_full_start", &ret->last_full_start_ms);
    if (rc == 0)
        rc = meta_get(inv, "last_full_end", &ret->last_full_end_ms);
    if (rc == 0)
        rc = meta_get(inv, "last_quick_start", &ret->last_quick_start_ms);
    if (rc == 0)
        rc = meta_get(inv, "last_quick_end", &ret->last_quick_end_ms);
    if (rc == 0)
        rc = meta_get(inv, "synced_revision", &ret->synced_revision);
    if (rc == 0)
        rc = meta_get(inv, "baseline", &baseline);
    if (rc == 0) {
        sqlite3_stmt *s = inv->st[ST_COUNT];
        rc = sqlite3_step(s);
        ret->devices = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        rc = rc == SQLITE_ROW ? 0 : db_err(rc);
        st_reset(inv, ST_COUNT);
    }
    pthread_mutex_unlock(&inv->lock);
    ret->baseline = baseline != 0;
    return rc;
}

static int since_base(struct eg_inventory *inv, int64_t *ret)
{
    pthread_mutex_lock(&inv->lock);
    int rc = meta_get(inv, "since_base", ret);
    pthread_mutex_unlock(&inv->lock);
    return rc;
}

int eg_inventory_sync(struct eg_inventory *inv, const struct eg_inv_sync_opts *o,
                      struct eg_inv_sync_result *res)
{
    struct eg_inventory_meta meta;
    struct sync x;
    int64_t since = 0, base = 0;
    int rc;

    if (!res)
        return EG_EINVAL;
    memset(res, 0, sizeof *res);
    res->started_ms = eg_now_ms();
    res->mode = o ? o->mode : EG_INV_QUICK;
    if (!inv || !o || !o->bridge || !o->bridge->ops || o->stats_interval_ms < 0 ||
        o->since_margin_ms < 0 || (o->mailbox && !*o->mailbox)) {
        res->rc = EG_EINVAL;
        snprintf(res->error_code, sizeof res->error_code, "%s", EG_BERR_INVALID_ARGUMENT);
        snprintf(res->error, sizeof res->error, "invalid sync options");
        return EG_EINVAL;
    }
    memset(&x, 0, sizeof x);
    x.inv = inv;
    x.o = o;
    x.res = res;
    x.mode = o->mode;
    if ((rc = eg_inventory_meta(inv, &meta)) < 0 || (rc = since_base(inv, &base)) < 0)
        goto done;
    bool same_target = meta.baseline && meta.synced_revision == o->target_revision;
    if (o->mailbox || !same_target)
        x.mode = EG_INV_FULL; /* one mailbox is read whole; a quick sync needs a baseline */
    res->mode = x.mode;
    if (x.mode == EG_INV_QUICK) {
        since = base - o->since_margin_ms;
        if (since <= 0)
            since = 1;
    }
    /* New devices need statistics only once a baseline exists for this target (the first full
     * sync would otherwise ask for every device). */
    x.stats_new = same_target;
    x.resync =
        x.mode == EG_INV_FULL && !o->mailbox && o->outbox && eg_outbox_resync_needed(o->outbox);
    x.gen = meta.generation + 1;
    pthread_mutex_lock(&inv->lock);
    rc = meta_put(inv, "generation", x.gen);
    pthread_mutex_unlock(&inv->lock);
    if (rc < 0)
        goto done;
    x.devs = eg_calloc(EG_INVENTORY_CHUNK, sizeof *x.devs);
    x.mbxs = eg_calloc(EG_INVENTORY_CHUNK, sizeof *x.mbxs);
    if (!x.devs || !x.mbxs || (o->mailbox && !(x.scope_name = lower_dup(o->mailbox)))) {
        rc = EG_ENOMEM;
        goto done;
    }
    if ((rc = phase_lists(&x, since)) != 0)
        goto done;
    if ((rc = phase_devices(&x, since)) != 0)
        goto done;
    if (x.mode == EG_INV_FULL && (rc = phase_removals(&x)) != 0)
        goto done;
    if (x.mode == EG_INV_FULL && (rc = phase_declared(&x)) != 0)
        goto done;
    if ((rc = phase_stats(&x)) != 0)
        goto done;
    if (stopped(&x))
        rc = EG_ESHUTDOWN;
done:
    if (x.devs) { /* whatever happened: the additions waiting for statistics go out now */
        int prc = flush_pending(&x);
        if (rc == 0)
            rc = prc;
    }
    if (rc == EG_ESHUTDOWN && !x.err.code[0])
        eg_bridge_error_set(&x.err, EG_BERR_INTERNAL, true, "the agent is shutting down");
    if (rc == EG_ENOMEM && !x.err.code[0])
        eg_bridge_error_set(&x.err, EG_BERR_INTERNAL, true, "out of memory");
    if (rc == EG_EDB && !x.err.code[0])
        eg_bridge_error_set(&x.err, EG_BERR_INTERNAL, true, "the inventory store failed");
    if (rc == EG_EIO && !x.err.code[0])
        eg_bridge_error_set(&x.err, EG_BERR_INTERNAL, true, "the outbox storage failed");
    rc = finish(&x, rc);
    devs_clear(&x);
    for (size_t i = 0; x.mbxs && i < x.n_mbxs; i++)
        mbx_clear(&x.mbxs[i]);
    eg_free(x.devs);
    eg_free(x.mbxs);
    cache_clear(&x.cache);
    eg_free(x.scope_key);
    eg_free(x.scope_name);
    res->rc = rc;
    if (rc != 0 && !res->error_code[0]) {
        snprintf(res->error_code, sizeof res->error_code, "%s",
                 x.err.code[0] ? x.err.code : EG_BERR_INTERNAL);
        snprintf(res->error, sizeof res->error, "%s",
                 x.err.message[0] ? x.err.message : eg_strerror(rc));
    }
    return rc;
}

/* ---- the read API ------------------------------------------------------------------------- */

static int parse_cursor(const char *c, int64_t *ret)
{
    int64_t v = 0;
    size_t n = 0;
    if (!c || c[0] != 'c')
        return EG_EINVAL;
    for (const char *p = c + 1; *p; p++, n++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0 || n >= 15)
            return EG_EINVAL;
        v = v * 16 + d;
    }
    if (n == 0)
        return EG_EINVAL;
    *ret = v;
    return 0;
}

int eg_inventory_list(struct eg_inventory *inv, const struct eg_inv_query *q, json_t **ret_devices,
                      char **ret_next)
{
    sqlite3_stmt *s = NULL;
    json_t *arr = NULL;
    char *key = NULL, *next = NULL;
    int64_t after = 0, last = 0;
    size_t n = 0;
    int rc;

    if (!inv || !q || !ret_devices || !ret_next || q->limit < 1 || q->limit > EG_MAX_PAGE_SIZE)
        return EG_EINVAL;
    if (q->cursor && parse_cursor(q->cursor, &after) < 0)
        return EG_EINVAL;
    if (q->mailbox && !(key = lower_dup(q->mailbox)))
        return EG_ENOMEM;
    if (!(arr = json_array())) {
        eg_free(key);
        return EG_ENOMEM;
    }
    const char *sql = key ? "SELECT " ROW_COLS " FROM devices WHERE (mailbox_lc = ?2 OR mkey = ?2)"
                            " AND id > ?1 AND changed_at >= ?3 ORDER BY id LIMIT ?4"
                          : "SELECT " ROW_COLS " FROM devices WHERE id > ?1 AND changed_at >= ?3"
                            " AND ?2 IS NULL ORDER BY id LIMIT ?4";
    pthread_mutex_lock(&inv->lock);
    rc = sqlite3_prepare_v2(inv->db, sql, -1, &s, NULL);
    rc = rc == SQLITE_OK ? 0 : db_err(rc);
    if (rc == 0 && (rc = bind_int(s, 1, after)) == 0 && (rc = bind_text(s, 2, key)) == 0 &&
        (rc = bind_int(s, 3, q->changed_since_ms > 0 ? q->changed_since_ms : 0)) == 0)
        rc = bind_int(s, 4, (int64_t)q->limit + 1);
    while (rc == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct dev d;
        if (n == q->limit) {
            rc = SQLITE_DONE; /* one more exists: there is a next page */
            if (!(next = eg_asprintf("c%" PRIx64, (uint64_t)last)))
                rc = EG_ENOMEM;
            break;
        }
        if ((rc = row_read(s, &d)) < 0)
            break;
        json_t *j = dev_json(&d);
        last = d.id;
        dev_clear(&d);
        if (!j || json_array_append_new(arr, j) < 0) {
            rc = EG_ENOMEM;
            break;
        }
        n++;
        rc = 0;
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = db_err(rc);
    sqlite3_finalize(s);
    pthread_mutex_unlock(&inv->lock);
    eg_free(key);
    if (rc < 0) {
        json_decref(arr);
        eg_free(next);
        return rc;
    }
    *ret_devices = arr;
    *ret_next = next;
    return 0;
}
