/* db.c - opening the agent's SQLite stores (see db.h). */
#include "agent/db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"

int eg_db_err(int sqlite_rc)
{
    return sqlite_rc == SQLITE_NOMEM ? EG_ENOMEM : EG_EDB;
}

static int prepare_files(const char *state_dir, const char *path)
{
    struct stat sb;
    if (mkdir(state_dir, 0700) == 0) {
        if (chmod(state_dir, 0700) < 0)
            return EG_EIO;
    } else if (errno != EEXIST) {
        return EG_EIO;
    }
    if (stat(state_dir, &sb) < 0)
        return EG_EIO;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return EG_EIO;
    }
    /* Created here with 0600 so that SQLite never creates anything more open; an existing file
     * is tightened too. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return EG_EIO;
    int rc = fchmod(fd, 0600) < 0 ? EG_EIO : 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : eg_db_err(rc);
}

/* The first column of a one-row statement as text compared with want. */
static int expect_text(sqlite3 *db, const char *sql, const char *want)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        if (!v) /* NULL text is out of memory (the pragmas answer a value) */
            rc = eg_db_err(sqlite3_errcode(db));
        else
            rc = strcmp((const char *)v, want) == 0 ? 0 : EG_EDB;
    } else {
        rc = eg_db_err(rc);
    }
    sqlite3_finalize(st);
    return rc;
}

int eg_db_open(const char *state_dir, const char *path, int busy_ms, sqlite3 **ret)
{
    sqlite3 *db = NULL;
    int rc;

    if (!ret)
        return EG_EINVAL;
    *ret = NULL;
    if (!state_dir || !path)
        return EG_EINVAL;
    if ((rc = prepare_files(state_dir, path)) < 0)
        return rc;
    rc = sqlite3_open_v2(path, &db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = eg_db_err(rc);
        goto out;
    }
    if (sqlite3_busy_timeout(db, busy_ms) != SQLITE_OK) {
        rc = EG_EDB;
        goto out;
    }
    /* journal_mode answers the mode in force; synchronous is read back (2 = FULL). */
    if ((rc = expect_text(db, "PRAGMA journal_mode = WAL", "wal")) < 0 ||
        (rc = exec_sql(db, "PRAGMA synchronous = FULL")) < 0 ||
        (rc = expect_text(db, "PRAGMA synchronous", "2")) < 0)
        goto out;
    *ret = db;
    db = NULL;
out:
    sqlite3_close_v2(db);
    return rc;
}

int eg_db_tighten(const char *path)
{
    static const char *const suffixes[] = {"-wal", "-shm"};
    for (size_t i = 0; i < 2; i++) {
        char p[EG_MAX_PATH_LEN + 16];
        if (snprintf(p, sizeof p, "%s%s", path, suffixes[i]) >= (int)sizeof p)
            return EG_EIO;
        if (chmod(p, 0600) < 0 && errno != ENOENT)
            return EG_EIO;
    }
    return 0;
}
