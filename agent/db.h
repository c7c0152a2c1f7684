/* db.h - the one way the agent opens its SQLite stores (the journal, the outbox, the inventory).
 *
 * Every store lives in the state directory (created 0700), its database file is created 0600
 * before SQLite opens it (SQLite gives -wal and -shm the database file's mode), and it runs in WAL
 * mode with synchronous=FULL, both checked after setting them. The connection is opened
 * NOMUTEX: the caller serialises its use.
 */
#ifndef EG_DB_H
#define EG_DB_H

#include <sqlite3.h>

#include "common/error.h"

/* Open (creating if needed) path inside state_dir as above, with busy_ms as SQLite's busy
 * timeout. On success *ret is the connection (close with sqlite3_close_v2). Returns 0, EG_EIO
 * (the directory or file could not be made or tightened; errno says why), EG_EDB (SQLite refused
 * WAL, FULL or the open), EG_ENOMEM. On failure *ret is NULL. */
int eg_db_open(const char *state_dir, const char *path, int busy_ms, sqlite3 **ret) EG_MUST_CHECK;

/* Tighten path's existing -wal and -shm side files to 0600 (absent ones are fine). 0 or
 * EG_EIO. */
int eg_db_tighten(const char *path) EG_MUST_CHECK;

/* An SQLite result code as ours: EG_ENOMEM for SQLITE_NOMEM, else EG_EDB. */
int eg_db_err(int sqlite_rc);

#endif
