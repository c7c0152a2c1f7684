/* test_outbox.c - the upload outbox: files and schema, append/batch/ack, the same batch (same
 * sequence, same records) after a failure and after a restart, heartbeats, batch size limits,
 * bounds -> EG_ELIMIT and the persisted resync flag, begin/commit/rollback, statistics,
 * concurrent appends (with a transaction among them), allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/outbox.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/limits.h"

struct fx {
    char dir[64];
    char state_dir[96];
    struct eg_outbox *o;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/eg_test_outbox_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->state_dir, sizeof f->state_dir, "%s/state", f->dir);
    assert_int_equal(eg_outbox_open(f->state_dir, &f->o), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    eg_alloc_fail_after(-1);
    eg_outbox_close(f->o);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void reopen(struct fx *f)
{
    eg_outbox_close(f->o);
    f->o = NULL;
    assert_int_equal(eg_outbox_open(f->state_dir, &f->o), 0);
}

/* Append a device.added record {"i": i}. */
static int add(struct eg_outbox *o, int i)
{
    json_t *p = json_pack("{s:i, s:s}", "i", i, "mailbox", "a@corp.example");
    assert_non_null(p);
    int rc = eg_outbox_append(o, EG_OUTBOX_DEVICE_ADDED, p);
    json_decref(p);
    return rc;
}

static int add_command(struct eg_outbox *o, const char *id)
{
    json_t *p = json_pack("{s:s, s:s}", "id", id, "state", "succeeded");
    assert_non_null(p);
    int rc = eg_outbox_append(o, EG_OUTBOX_COMMAND, p);
    json_decref(p);
    return rc;
}

/* The "i" of a record's payload. */
static int payload_i(const struct eg_outbox_record *r)
{
    json_t *v = json_loads(r->payload, 0, NULL);
    assert_non_null(v);
    assert_int_equal(strlen(r->payload), r->payload_len);
    int i = (int)json_integer_value(json_object_get(v, "i"));
    json_decref(v);
    return i;
}

static struct eg_outbox_stats stats(struct eg_outbox *o)
{
    struct eg_outbox_stats s;
    assert_int_equal(eg_outbox_stats(o, &s), 0);
    return s;
}

/* ---- files and schema ----------------------------------------------------------------------- */

static void test_files_and_agent_id(void **state)
{
    struct fx *f = *state;
    char path[160];
    struct stat sb;

    snprintf(path, sizeof path, "%s/outbox.db", f->state_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(f->state_dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(add(f->o, 1), 0); /* -wal exists now */
    reopen(f);
    snprintf(path, sizeof path, "%s/outbox.db-wal", f->state_dir);
    if (stat(path, &sb) == 0)
        assert_int_equal(sb.st_mode & 0777, 0600);

    const char *id = eg_outbox_agent_id(f->o);
    assert_non_null(id);
    assert_int_equal(strlen(id), 36);
    assert_true(id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-');
    assert_int_equal(id[14], '4'); /* version 4 */
    char first[40];
    snprintf(first, sizeof first, "%s", id);
    reopen(f);
    assert_string_equal(eg_outbox_agent_id(f->o), first); /* created once, stored */

    /* Another state dir: another agent. */
    char other[128];
    struct eg_outbox *o2 = NULL;
    snprintf(other, sizeof other, "%s/other", f->dir);
    assert_int_equal(eg_outbox_open(other, &o2), 0);
    assert_string_not_equal(eg_outbox_agent_id(o2), first);
    eg_outbox_close(o2);
}

static void test_newer_schema_refused(void **state)
{
    struct fx *f = *state;
    char path[160];
    sqlite3 *db = NULL;
    eg_outbox_close(f->o);
    f->o = NULL;
    snprintf(path, sizeof path, "%s/outbox.db", f->state_dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(eg_outbox_open(f->state_dir, &f->o), EG_EIO);
    assert_null(f->o);
    assert_int_equal(eg_outbox_open(NULL, &f->o), EG_EINVAL);
    assert_int_equal(eg_outbox_open("", &f->o), EG_EINVAL);
}

static void test_bad_arguments(void **state)
{
    struct fx *f = *state;
    json_t *p = json_object();
    assert_int_equal(eg_outbox_append(f->o, "", p), EG_EINVAL);
    assert_int_equal(eg_outbox_append(f->o, "Device.Added", p), EG_EINVAL);
    assert_int_equal(eg_outbox_append(f->o, "device added", p), EG_EINVAL);
    assert_int_equal(eg_outbox_append(f->o, "x\"y", p), EG_EINVAL);
    assert_int_equal(eg_outbox_append(f->o, NULL, p), EG_EINVAL);
    assert_int_equal(eg_outbox_append(f->o, EG_OUTBOX_SYNC, NULL), EG_EINVAL);
    char longkind[EG_OUTBOX_MAX_KIND_LEN + 2];
    memset(longkind, 'a', sizeof longkind - 1);
    longkind[sizeof longkind - 1] = '\0';
    assert_int_equal(eg_outbox_append(f->o, longkind, p), EG_EINVAL);
    longkind[EG_OUTBOX_MAX_KIND_LEN] = '\0';
    assert_int_equal(eg_outbox_append(f->o, longkind, p), 0);
    json_decref(p);
    assert_int_equal(eg_outbox_commit(f->o), EG_ESTATE);   /* no transaction */
    assert_int_equal(eg_outbox_rollback(f->o), EG_ESTATE); /* no transaction */
    assert_int_equal(eg_outbox_set_bounds(f->o, 0, 100), EG_EINVAL);
    assert_int_equal(eg_outbox_set_bounds(f->o, EG_OUTBOX_MAX_RECORDS + 1, 100), EG_EINVAL);
    assert_int_equal(eg_outbox_ack(f->o, 1), EG_ESTATE); /* nothing pending */
    eg_outbox_close(NULL);
    eg_outbox_batch_free(NULL);
}

/* ---- append / batch / ack ------------------------------------------------------------------- */

static void test_append_batch_ack(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_batch *b = NULL;
    struct eg_outbox_stats s = stats(f->o);

    assert_int_equal(s.records, 0);
    assert_int_equal(s.next_seq, 1);
    assert_int_equal(s.acked_seq, 0);
    assert_int_equal(s.oldest_ms, 0);
    assert_false(s.warning);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), EG_ENOTFOUND);
    assert_null(b);

    for (int i = 1; i <= 5; i++)
        assert_int_equal(add(f->o, i), 0);
    assert_int_equal(add_command(f->o, "c-1"), 0);
    s = stats(f->o);
    assert_int_equal(s.records, 6);
    assert_true(s.bytes > 6 * 10);
    assert_true(s.oldest_ms > 0);

    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 1);
    assert_string_equal(b->agent_id, eg_outbox_agent_id(f->o));
    assert_int_equal(b->n_records, 6);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(b->records[i].kind, EG_OUTBOX_DEVICE_ADDED);
        assert_int_equal(payload_i(&b->records[i]), (int)i + 1);
        assert_true(b->records[i].at_ms > 0);
        if (i)
            assert_true(b->records[i].n > b->records[i - 1].n);
    }
    assert_string_equal(b->records[5].kind, EG_OUTBOX_COMMAND);
    assert_non_null(strstr(b->records[5].payload, "\"c-1\""));
    int64_t last_n = b->records[5].n;
    s = stats(f->o);
    assert_int_equal(s.pending_seq, 1);
    assert_int_equal(s.next_seq, 1); /* the pending batch is the next to be sent */

    /* Records appended while a batch is pending are not in it. */
    assert_int_equal(add(f->o, 6), 0);
    struct eg_outbox_batch *again = NULL;
    assert_int_equal(eg_outbox_next_batch(f->o, false, &again), 0);
    assert_int_equal(again->seq, 1);
    assert_int_equal(again->n_records, 6);
    eg_outbox_batch_free(again);

    assert_int_equal(eg_outbox_ack(f->o, 2), EG_ESTATE); /* not the pending one */
    assert_int_equal(eg_outbox_ack(f->o, 0), EG_ESTATE);
    assert_int_equal(eg_outbox_ack(f->o, 1), 0);
    assert_int_equal(eg_outbox_ack(f->o, 1), EG_ESTATE); /* once */
    eg_outbox_batch_free(b);
    s = stats(f->o);
    assert_int_equal(s.records, 1);
    assert_int_equal(s.acked_seq, 1);
    assert_int_equal(s.next_seq, 2);
    assert_int_equal(s.pending_seq, 0);

    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 2);
    assert_int_equal(b->n_records, 1);
    assert_int_equal(payload_i(&b->records[0]), 6);
    assert_true(b->records[0].n > last_n);
    assert_int_equal(eg_outbox_ack(f->o, 2), 0);
    eg_outbox_batch_free(b);
    s = stats(f->o);
    assert_int_equal(s.records, 0);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.oldest_ms, 0);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), EG_ENOTFOUND);
}

/* A command's result is reported once: a second command.final for the same id stores nothing,
 * also after its batch was acknowledged, after a reopen and inside a transaction (where a
 * rollback forgets it again); has_final says which were reported; finals_seq persists. */
static void test_command_reported_once(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_batch *b = NULL;
    int64_t seq = -1;

    assert_int_equal(eg_outbox_has_final(f->o, "c-1"), 0);
    assert_int_equal(add_command(f->o, "c-1"), 0);
    assert_int_equal(eg_outbox_has_final(f->o, "c-1"), 1);
    assert_int_equal(add_command(f->o, "c-1"), 0); /* dropped */
    assert_int_equal(stats(f->o).records, 1);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(eg_outbox_ack(f->o, b->seq), 0);
    eg_outbox_batch_free(b);
    reopen(f);
    assert_int_equal(eg_outbox_has_final(f->o, "c-1"), 1);
    assert_int_equal(add_command(f->o, "c-1"), 0);
    assert_int_equal(stats(f->o).records, 0);

    /* In a transaction: a rollback undoes the record and the id; a commit keeps both. */
    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(add_command(f->o, "c-2"), 0);
    assert_int_equal(add_command(f->o, "c-2"), 0);
    assert_int_equal(eg_outbox_rollback(f->o), 0);
    assert_int_equal(eg_outbox_has_final(f->o, "c-2"), 0);
    assert_int_equal(stats(f->o).records, 0);
    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(add_command(f->o, "c-2"), 0);
    assert_int_equal(add_command(f->o, "c-3"), 0);
    assert_int_equal(add_command(f->o, "c-2"), 0);
    assert_int_equal(eg_outbox_commit(f->o), 0);
    assert_int_equal(stats(f->o).records, 2);
    assert_int_equal(eg_outbox_has_final(f->o, "c-3"), 1);

    /* Records of other kinds, and command records without an id, are not deduplicated. */
    assert_int_equal(add(f->o, 1), 0);
    assert_int_equal(add(f->o, 1), 0);
    assert_int_equal(stats(f->o).records, 4);

    assert_int_equal(eg_outbox_finals_seq(f->o, &seq), 0);
    assert_int_equal(seq, 0);
    assert_int_equal(eg_outbox_set_finals_seq(f->o, 42), 0);
    assert_int_equal(eg_outbox_set_finals_seq(f->o, -1), EG_EINVAL);
    reopen(f);
    assert_int_equal(eg_outbox_finals_seq(f->o, &seq), 0);
    assert_int_equal(seq, 42);
    assert_int_equal(eg_outbox_has_final(NULL, "x"), EG_EINVAL);
    assert_int_equal(eg_outbox_has_final(f->o, NULL), EG_EINVAL);
}

static void test_restart_resends_same_batch(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_batch *b = NULL;

    for (int i = 1; i <= 3; i++)
        assert_int_equal(add(f->o, i), 0);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 1);
    int64_t n0 = b->records[0].n, n2 = b->records[2].n;
    eg_outbox_batch_free(b);
    assert_int_equal(add(f->o, 4), 0); /* after the batch was formed */

    reopen(f); /* a restart before the ack */
    struct eg_outbox_stats s = stats(f->o);
    assert_int_equal(s.records, 4);
    assert_int_equal(s.pending_seq, 1);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 1);
    assert_int_equal(b->n_records, 3); /* exactly the records of before, not the 4th */
    assert_int_equal(b->records[0].n, n0);
    assert_int_equal(b->records[2].n, n2);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(payload_i(&b->records[i]), (int)i + 1);
    eg_outbox_batch_free(b);
    assert_int_equal(eg_outbox_ack(f->o, 1), 0);

    reopen(f); /* after the ack: the sequence goes on, never reused */
    s = stats(f->o);
    assert_int_equal(s.acked_seq, 1);
    assert_int_equal(s.next_seq, 2);
    assert_int_equal(s.records, 1);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 2);
    assert_int_equal(b->n_records, 1);
    assert_int_equal(payload_i(&b->records[0]), 4);
    eg_outbox_batch_free(b);
}

static void test_heartbeat(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_batch *b = NULL;

    assert_int_equal(eg_outbox_next_batch(f->o, true, &b), 0);
    assert_int_equal(b->seq, 1);
    assert_int_equal(b->n_records, 0);
    assert_null(b->records);
    eg_outbox_batch_free(b);
    /* Records that arrive now wait behind the pending heartbeat. */
    assert_int_equal(add(f->o, 1), 0);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 1);
    assert_int_equal(b->n_records, 0);
    eg_outbox_batch_free(b);
    reopen(f);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->seq, 1);
    assert_int_equal(b->n_records, 0);
    eg_outbox_batch_free(b);
    assert_int_equal(eg_outbox_ack(f->o, 1), 0);
    /* With records waiting, a heartbeat request gets them. */
    assert_int_equal(eg_outbox_next_batch(f->o, true, &b), 0);
    assert_int_equal(b->seq, 2);
    assert_int_equal(b->n_records, 1);
    eg_outbox_batch_free(b);
    assert_int_equal(eg_outbox_ack(f->o, 2), 0);
    assert_int_equal(stats(f->o).acked_seq, 2);
}

static void test_batch_limits(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_batch *b = NULL;
    size_t total = EG_OUTBOX_BATCH_RECORDS + 7;

    assert_int_equal(eg_outbox_begin(f->o), 0);
    for (size_t i = 0; i < total; i++)
        assert_int_equal(add(f->o, (int)i), 0);
    assert_int_equal(eg_outbox_commit(f->o), 0);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->n_records, EG_OUTBOX_BATCH_RECORDS);
    assert_int_equal(payload_i(&b->records[EG_OUTBOX_BATCH_RECORDS - 1]),
                     EG_OUTBOX_BATCH_RECORDS - 1);
    assert_int_equal(eg_outbox_ack(f->o, b->seq), 0);
    eg_outbox_batch_free(b);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->n_records, 7);
    assert_int_equal(payload_i(&b->records[0]), EG_OUTBOX_BATCH_RECORDS);
    assert_int_equal(eg_outbox_ack(f->o, b->seq), 0);
    eg_outbox_batch_free(b);

    /* Bytes: records of ~1.5 MiB, so two fill a 4 MiB batch and the third waits; a single
     * record up to EG_OUTBOX_MAX_RECORD_BYTES always makes a batch of its own. */
    size_t big = 1536 * 1024;
    char *text = malloc(big + 1);
    assert_non_null(text);
    memset(text, 'x', big);
    text[big] = '\0';
    json_t *p = json_string(text);
    for (int i = 0; i < 3; i++)
        assert_int_equal(eg_outbox_append(f->o, EG_OUTBOX_SYNC, p), 0);
    json_decref(p);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->n_records, 2);
    assert_true(b->bytes <= EG_OUTBOX_BATCH_BYTES);
    assert_int_equal(b->records[0].payload_len, big + 2); /* a JSON string: quoted */
    assert_int_equal(eg_outbox_ack(f->o, b->seq), 0);
    eg_outbox_batch_free(b);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->n_records, 1);
    assert_int_equal(eg_outbox_ack(f->o, b->seq), 0);
    eg_outbox_batch_free(b);

    /* Over the per-record limit: refused, whatever the kind. */
    free(text);
    text = malloc(EG_OUTBOX_MAX_RECORD_BYTES + 1);
    assert_non_null(text);
    memset(text, 'y', EG_OUTBOX_MAX_RECORD_BYTES);
    text[EG_OUTBOX_MAX_RECORD_BYTES] = '\0';
    p = json_pack("{s:s}", "big", text);
    free(text);
    assert_int_equal(eg_outbox_append(f->o, EG_OUTBOX_COMMAND, p), EG_ELIMIT);
    assert_false(eg_outbox_resync_needed(f->o)); /* a command result: resync would not help */
    assert_int_equal(eg_outbox_append(f->o, EG_OUTBOX_DEVICE_CHANGED, p), EG_ELIMIT);
    assert_true(eg_outbox_resync_needed(f->o));
    json_decref(p);
    assert_int_equal(stats(f->o).records, 0);
    assert_int_equal(stats(f->o).refused, 2);
}

/* ---- bounds and resync ---------------------------------------------------------------------- */

static void test_bounds_and_resync(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_stats s;

    assert_int_equal(eg_outbox_set_bounds(f->o, 10, EG_OUTBOX_MAX_BYTES), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(add(f->o, i), 0);
    s = stats(f->o);
    assert_false(s.warning); /* 8 of 10: not above 80 % */
    assert_int_equal(s.max_records, 10);
    assert_int_equal(add(f->o, 8), 0);
    assert_true(stats(f->o).warning);
    assert_int_equal(add(f->o, 9), 0);
    assert_false(eg_outbox_resync_needed(f->o));

    assert_int_equal(add(f->o, 10), EG_ELIMIT); /* the 11th */
    assert_true(eg_outbox_resync_needed(f->o));
    s = stats(f->o);
    assert_int_equal(s.records, 10);
    assert_int_equal(s.refused, 1);
    assert_true(s.resync_needed);
    /* Command results are always stored. */
    assert_int_equal(add_command(f->o, "c-over"), 0);
    assert_int_equal(stats(f->o).records, 11);
    assert_int_equal(add(f->o, 11), EG_ELIMIT);

    /* The flag survives a restart; bounds are the process's (set again after open). */
    reopen(f);
    assert_true(eg_outbox_resync_needed(f->o));
    assert_int_equal(stats(f->o).max_records, EG_OUTBOX_MAX_RECORDS);
    assert_int_equal(add(f->o, 12), 0);
    eg_outbox_resync_done(f->o);
    assert_false(eg_outbox_resync_needed(f->o));
    reopen(f);
    assert_false(eg_outbox_resync_needed(f->o));

    /* Bytes bound. */
    assert_int_equal(eg_outbox_set_bounds(f->o, EG_OUTBOX_MAX_RECORDS, s.bytes + 100), 0);
    json_t *p = json_pack("{s:s}", "pad",
                          "0123456789012345678901234567890123456789"
                          "0123456789012345678901234567890123456789"
                          "0123456789");
    assert_int_equal(eg_outbox_append(f->o, EG_OUTBOX_DRIFT, p), EG_ELIMIT);
    json_decref(p);
    assert_true(eg_outbox_resync_needed(f->o));
    assert_true(stats(f->o).warning);
}

static void test_resync_in_transaction(void **state)
{
    struct fx *f = *state;
    assert_int_equal(eg_outbox_set_bounds(f->o, 10, EG_OUTBOX_MAX_BYTES), 0);

    /* Refused inside a transaction that is rolled back: the flag stays, also on disk. */
    assert_int_equal(eg_outbox_begin(f->o), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(add(f->o, i), 0); /* the transaction's own records count */
    assert_int_equal(add(f->o, 10), EG_ELIMIT);
    assert_true(eg_outbox_resync_needed(f->o));
    assert_int_equal(eg_outbox_rollback(f->o), 0);
    assert_int_equal(stats(f->o).records, 0);
    reopen(f);
    assert_true(eg_outbox_resync_needed(f->o));
    assert_int_equal(eg_outbox_set_bounds(f->o, 10, EG_OUTBOX_MAX_BYTES), 0);

    /* A snapshot transaction with resync_done that is rolled back: the flag stays. */
    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(add(f->o, 1), 0);
    eg_outbox_resync_done(f->o);
    assert_int_equal(eg_outbox_rollback(f->o), 0);
    assert_true(eg_outbox_resync_needed(f->o));

    /* resync_done in a transaction that also refused a record: the flag stays. */
    assert_int_equal(eg_outbox_begin(f->o), 0);
    for (int i = 0; i < 11; i++)
        (void)add(f->o, i);
    eg_outbox_resync_done(f->o);
    assert_int_equal(eg_outbox_commit(f->o), 0);
    assert_true(eg_outbox_resync_needed(f->o));
    assert_int_equal(stats(f->o).records, 10);
    reopen(f);
    assert_true(eg_outbox_resync_needed(f->o));
    assert_int_equal(stats(f->o).records, 10);

    /* A complete snapshot committed with resync_done clears it, durably. */
    struct eg_outbox_batch *b = NULL;
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(eg_outbox_ack(f->o, b->seq), 0);
    eg_outbox_batch_free(b);
    assert_int_equal(eg_outbox_begin(f->o), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(add(f->o, i), 0);
    eg_outbox_resync_done(f->o);
    assert_true(eg_outbox_resync_needed(f->o)); /* until the commit */
    assert_int_equal(eg_outbox_commit(f->o), 0);
    assert_false(eg_outbox_resync_needed(f->o));
    reopen(f);
    assert_false(eg_outbox_resync_needed(f->o));
    assert_int_equal(stats(f->o).records, 5);
}

/* ---- transactions --------------------------------------------------------------------------- */

static void test_begin_commit_rollback(void **state)
{
    struct fx *f = *state;
    struct eg_outbox_batch *b = NULL;

    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(eg_outbox_begin(f->o), EG_ESTATE); /* no nesting */
    assert_int_equal(add(f->o, 1), 0);
    assert_int_equal(add(f->o, 2), 0);
    assert_int_equal(stats(f->o).records, 0); /* not committed yet */
    assert_int_equal(eg_outbox_rollback(f->o), 0);
    assert_int_equal(stats(f->o).records, 0);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), EG_ENOTFOUND);

    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(add(f->o, 3), 0);
    assert_int_equal(add(f->o, 4), 0);
    assert_int_equal(eg_outbox_commit(f->o), 0);
    struct eg_outbox_stats s = stats(f->o);
    assert_int_equal(s.records, 2);
    assert_true(s.oldest_ms > 0);
    reopen(f);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->n_records, 2);
    assert_int_equal(payload_i(&b->records[0]), 3);
    assert_int_equal(payload_i(&b->records[1]), 4);
    eg_outbox_batch_free(b);

    /* A transaction left open at close is rolled back by SQLite. */
    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(add(f->o, 5), 0);
    reopen(f);
    assert_int_equal(stats(f->o).records, 2);
}

/* ---- threads -------------------------------------------------------------------------------- */

#define THREADS 6
#define PER     60

struct worker_arg {
    struct eg_outbox *o;
    int id;
    bool txn;
};

static void *appender(void *p)
{
    struct worker_arg *a = p;
    if (a->txn) { /* this thread appends in transactions of 10 */
        for (int i = 0; i < PER; i += 10) {
            if (eg_outbox_begin(a->o) != 0)
                return (void *)1;
            for (int k = 0; k < 10; k++)
                if (add(a->o, a->id * 1000 + i + k) != 0)
                    return (void *)1;
            if (eg_outbox_commit(a->o) != 0)
                return (void *)1;
        }
        return NULL;
    }
    for (int i = 0; i < PER; i++)
        if (add(a->o, a->id * 1000 + i) != 0)
            return (void *)1;
    return NULL;
}

/* Drains batches while the appenders run. */
struct drain_arg {
    struct eg_outbox *o;
    int *seen; /* count per value */
    size_t n_seen;
    volatile bool stop;
    uint64_t last_seq;
    int errors;
};

static void drain_once(struct drain_arg *d)
{
    struct eg_outbox_batch *b = NULL;
    int rc = eg_outbox_next_batch(d->o, false, &b);
    if (rc == EG_ENOTFOUND)
        return;
    if (rc != 0 || b->seq != d->last_seq + 1) {
        d->errors++;
        eg_outbox_batch_free(b);
        return;
    }
    for (size_t i = 0; i < b->n_records; i++) {
        int v = payload_i(&b->records[i]);
        if (v < 0 || (size_t)v >= d->n_seen || (i && b->records[i].n <= b->records[i - 1].n))
            d->errors++;
        else
            d->seen[v]++;
    }
    if (eg_outbox_ack(d->o, b->seq) != 0)
        d->errors++;
    d->last_seq = b->seq;
    eg_outbox_batch_free(b);
}

static void *drainer(void *p)
{
    struct drain_arg *d = p;
    while (!d->stop)
        drain_once(d);
    return NULL;
}

static void test_concurrent_appends(void **state)
{
    struct fx *f = *state;
    pthread_t t[THREADS], dt;
    struct worker_arg a[THREADS];
    struct drain_arg d = {.o = f->o, .n_seen = THREADS * 1000};

    d.seen = calloc(d.n_seen, sizeof *d.seen);
    assert_non_null(d.seen);
    assert_int_equal(pthread_create(&dt, NULL, drainer, &d), 0);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct worker_arg){.o = f->o, .id = i, .txn = i == 0 || i == 3};
        assert_int_equal(pthread_create(&t[i], NULL, appender, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *r = NULL;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
    d.stop = true;
    assert_int_equal(pthread_join(dt, NULL), 0);
    drain_once(&d); /* what was left */
    drain_once(&d);
    assert_int_equal(d.errors, 0);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < PER; k++)
            assert_int_equal(d.seen[i * 1000 + k], 1); /* each exactly once */
    struct eg_outbox_stats s = stats(f->o);
    assert_int_equal(s.records, 0);
    assert_int_equal(s.acked_seq, d.last_seq);
    free(d.seen);
}

/* A transaction of one thread holds other threads' appends until it ends; their records come
 * after the transaction's. */
struct blocked_arg {
    struct eg_outbox *o;
    volatile int done;
};

static void *blocked_appender(void *p)
{
    struct blocked_arg *b = p;
    (void)add(b->o, 99);
    b->done = 1;
    return NULL;
}

static void test_transaction_holds_others(void **state)
{
    struct fx *f = *state;
    struct blocked_arg ba = {.o = f->o};
    pthread_t t;
    struct eg_outbox_batch *b = NULL;

    assert_int_equal(eg_outbox_begin(f->o), 0);
    assert_int_equal(add(f->o, 1), 0);
    assert_int_equal(pthread_create(&t, NULL, blocked_appender, &ba), 0);
    usleep(50 * 1000); /* give it a chance to append, which it must not do before our commit */
    struct eg_outbox_stats s;
    assert_int_equal(eg_outbox_stats(f->o, &s), 0); /* statistics do not wait */
    assert_int_equal(add(f->o, 2), 0);
    assert_int_equal(eg_outbox_commit(f->o), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(ba.done, 1);
    assert_int_equal(eg_outbox_next_batch(f->o, false, &b), 0);
    assert_int_equal(b->n_records, 3);
    assert_int_equal(payload_i(&b->records[0]), 1);
    assert_int_equal(payload_i(&b->records[1]), 2);
    assert_int_equal(payload_i(&b->records[2]), 99);
    eg_outbox_batch_free(b);
}

/* ---- allocation failures -------------------------------------------------------------------- */

static void test_allocation_failures(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 4; i++)
        assert_int_equal(add(f->o, i), 0);
    /* Forming and loading a batch under every allocation failure point: never a crash, and the
     * batch that finally comes is seq 1 with all four records. */
    for (long n = 0; n < 40; n++) {
        struct eg_outbox_batch *b = NULL;
        eg_alloc_fail_after(n);
        int rc = eg_outbox_next_batch(f->o, false, &b);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            assert_int_equal(b->seq, 1);
            assert_int_equal(b->n_records, 4);
            eg_outbox_batch_free(b);
        } else {
            assert_int_equal(rc, EG_ENOMEM);
            assert_null(b);
        }
    }
    struct eg_outbox_stats s = stats(f->o);
    assert_int_equal(s.pending_seq, 1); /* formed once, never again */
    for (long n = 0; n < 20; n++) {
        json_t *p = json_pack("{s:i}", "i", 100);
        eg_alloc_fail_after(n);
        int rc = eg_outbox_append(f->o, EG_OUTBOX_SYNC, p);
        eg_alloc_fail_after(-1);
        json_decref(p);
        assert_true(rc == 0 || rc == EG_ENOMEM);
    }
    assert_int_equal(eg_outbox_ack(f->o, 1), 0);
    /* Opening under allocation failure. */
    char other[128];
    snprintf(other, sizeof other, "%s/alloc", f->dir);
    for (long n = 0; n < 10; n++) {
        struct eg_outbox *o2 = NULL;
        eg_alloc_fail_after(n);
        int rc = eg_outbox_open(other, &o2);
        eg_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == EG_ENOMEM);
        eg_outbox_close(o2);
    }
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_files_and_agent_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_batch_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_resends_same_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_and_resync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resync_in_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_begin_commit_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_holds_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
