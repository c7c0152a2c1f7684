/* test_queue.c - the command journal: files and schema, idempotency, the state machine, crash
 * recovery, claim (coalescing, per-mailbox order and exclusivity, retries), cancel, listing,
 * counts, next_wakeup, group commit under threads, allocation failure injection. */
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

#include "agent/queue.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/util.h"

/* ---- fixture: a fresh state dir and an open queue per test -------------------------------- */

struct fx {
    char dir[64];
    char state_dir[96]; /* dir/state: created by eg_queue_open */
    struct eg_queue *q;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/eg_test_queue_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->state_dir, sizeof f->state_dir, "%s/state", f->dir);
    assert_int_equal(eg_queue_open(f->state_dir, &f->q), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    eg_alloc_fail_after(-1);
    eg_queue_close(f->q);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void reopen(struct fx *f)
{
    eg_queue_close(f->q);
    f->q = NULL;
    assert_int_equal(eg_queue_open(f->state_dir, &f->q), 0);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *const LIST_EDITS[] = {"device.allow", "device.block", "device.unlist",
                                         "mailbox.set_devices", NULL};

static char *body_for(const char *id, const char *extra)
{
    static __thread char buf[256];
    snprintf(buf, sizeof buf, "{\"id\":\"%s\",\"x\":\"%s\"}", id, extra ? extra : "");
    return buf;
}

/* Submit one command; returns the submit rc, *out the outcome, *ret_seq its seq (or 0). */
static int sub_full(struct eg_queue *q, const char *id, const char *type, const char *mbx,
                    const char *body, enum eg_submit_outcome *out, int64_t *ret_seq)
{
    struct eg_submit it = {
        .id = id, .type = type, .mailbox_key = mbx, .body = body, .client = "token"};
    enum eg_submit_outcome o = (enum eg_submit_outcome) - 1;
    struct eg_cmd_record **recs = calloc(1, sizeof *recs);
    assert_non_null(recs);
    int rc = eg_queue_submit(q, &it, 1, &o, recs);
    if (out)
        *out = o;
    if (ret_seq)
        *ret_seq = recs[0] ? recs[0]->seq : 0;
    eg_cmd_record_free(recs[0]);
    free(recs);
    return rc;
}

/* Submit a new command and assert it was created; returns its seq. */
static int64_t add(struct eg_queue *q, const char *id, const char *type, const char *mbx)
{
    enum eg_submit_outcome o;
    int64_t seq = 0;
    assert_int_equal(sub_full(q, id, type, mbx, body_for(id, NULL), &o, &seq), 0);
    assert_int_equal(o, EG_SUBMIT_CREATED);
    assert_true(seq > 0);
    return seq;
}

static enum eg_cmd_state state_of(struct eg_queue *q, const char *id)
{
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(q, id, &r), 0);
    enum eg_cmd_state s = r->state;
    eg_cmd_record_free(r);
    return s;
}

static int attempts_of(struct eg_queue *q, const char *id)
{
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(q, id, &r), 0);
    int a = r->attempts;
    eg_cmd_record_free(r);
    return a;
}

/* Claim and return the claimed ids joined by ',' in claim order ("" for nothing). */
static char *claim_ids(struct eg_queue *q, int64_t now, bool (*busy)(const char *, void *),
                       void *ctx, const char *const *types, size_t max)
{
    static char buf[1024];
    struct eg_cmd_record **recs = NULL;
    size_t n = 99;
    buf[0] = '\0';
    assert_int_equal(eg_queue_claim(q, now, busy, ctx, types, max, &recs, &n), 0);
    assert_true(n <= max);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(recs[i]->state, EG_STATE_RUNNING);
        assert_int_equal(recs[i]->started_ms, now);
        assert_int_equal(recs[i]->next_attempt_ms, 0);
        if (i > 0) {
            assert_true(recs[i]->seq > recs[i - 1]->seq);
            strncat(buf, ",", sizeof buf - strlen(buf) - 1);
        }
        strncat(buf, recs[i]->id, sizeof buf - strlen(buf) - 1);
    }
    eg_cmd_records_free(recs, n);
    return buf;
}

static void finish_ok(struct eg_queue *q, const char *id)
{
    assert_int_equal(eg_queue_finish(q, id, EG_STATE_SUCCEEDED, "{}", NULL, NULL, NULL), 0);
}

static void get_counts(struct eg_queue *q, int64_t c[EG_STATE__COUNT])
{
    assert_int_equal(eg_queue_counts(q, c), 0);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_state_names(void **state)
{
    const char *names[] = {"queued", "running", "retrying", "succeeded", "failed", "cancelled"};
    for (int i = 0; i < EG_STATE__COUNT; i++) {
        enum eg_cmd_state s = EG_STATE__COUNT;
        assert_string_equal(eg_cmd_state_name((enum eg_cmd_state)i), names[i]);
        assert_int_equal(eg_cmd_state_parse(names[i], &s), 0);
        assert_int_equal(s, i);
        assert_int_equal(eg_cmd_state_is_final((enum eg_cmd_state)i), i >= EG_STATE_SUCCEEDED);
    }
    enum eg_cmd_state s = EG_STATE_RUNNING;
    assert_int_equal(eg_cmd_state_parse("Queued", &s), EG_EINVAL);
    assert_int_equal(eg_cmd_state_parse("", &s), EG_EINVAL);
    assert_int_equal(eg_cmd_state_parse(NULL, &s), EG_EINVAL);
    assert_int_equal(s, EG_STATE_RUNNING); /* untouched on error */
    assert_string_equal(eg_cmd_state_name(EG_STATE__COUNT), "unknown");
}

static void test_files_and_schema(void **state)
{
    struct fx *f = *state;
    char path[160];
    struct stat sb;

    add(f->q, "a", "device.allow", "m@x"); /* makes sure -wal and -shm exist */
    assert_int_equal(stat(f->state_dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    const char *files[] = {"easgate.db", "easgate.db-wal", "easgate.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", f->state_dir, files[i]);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
    }

    /* An existing, too open database file is tightened on open. */
    snprintf(path, sizeof path, "%s/easgate.db", f->state_dir);
    assert_int_equal(chmod(path, 0644), 0);
    reopen(f);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* Schema version, WAL, and the command survived. */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(state_of(f->q, "a"), EG_STATE_QUEUED);

    /* A database from a newer build is refused, not used. */
    eg_queue_close(f->q);
    f->q = NULL;
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct eg_queue *q2 = NULL;
    assert_int_equal(eg_queue_open(f->state_dir, &q2), EG_EDB);
    assert_null(q2);

    /* state_dir that cannot be a directory. */
    snprintf(path, sizeof path, "%s/file", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(eg_queue_open(path, &q2), EG_EIO);
    snprintf(path, sizeof path, "%s/missing/parent", f->dir);
    assert_int_equal(eg_queue_open(path, &q2), EG_EIO);
    assert_int_equal(eg_queue_open("", &q2), EG_EINVAL);
    assert_null(q2);
}

static void test_submit_and_get(void **state)
{
    struct fx *f = *state;
    int64_t before = eg_now_ms();
    int64_t s1 = add(f->q, "c1", "device.allow", "alice@example.com");
    int64_t s2 = add(f->q, "c2", "org.set_default_access", NULL);
    assert_true(s2 > s1);

    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(f->q, "c1", &r), 0);
    assert_int_equal(r->seq, s1);
    assert_string_equal(r->id, "c1");
    assert_string_equal(r->type, "device.allow");
    assert_string_equal(r->mailbox_key, "alice@example.com");
    assert_string_equal(r->body, body_for("c1", NULL));
    assert_string_equal(r->client, "token");
    assert_int_equal(r->state, EG_STATE_QUEUED);
    assert_int_equal(r->attempts, 0);
    assert_true(r->created_ms >= before && r->created_ms <= eg_now_ms());
    assert_int_equal(r->updated_ms, r->created_ms);
    assert_int_equal(r->started_ms, 0);
    assert_int_equal(r->finished_ms, 0);
    assert_int_equal(r->next_attempt_ms, 0);
    assert_null(r->result);
    assert_null(r->error_code);
    assert_null(r->error_message);
    assert_null(r->error_detail);
    eg_cmd_record_free(r);

    r = NULL;
    assert_int_equal(eg_queue_get(f->q, "c2", &r), 0);
    assert_null(r->mailbox_key);
    eg_cmd_record_free(r);

    r = NULL;
    assert_int_equal(eg_queue_get(f->q, "nope", &r), EG_ENOTFOUND);
    assert_null(r);

    /* The record returned by submit equals what get reads back. */
    struct eg_submit it = {.id = "c3",
                           .type = "device.block",
                           .mailbox_key = "b@x",
                           .body = "{\"b\":1}",
                           .client = NULL};
    enum eg_submit_outcome o;
    struct eg_cmd_record *recs[1] = {NULL};
    assert_int_equal(eg_queue_submit(f->q, &it, 1, &o, recs), 0);
    assert_int_equal(o, EG_SUBMIT_CREATED);
    assert_int_equal(eg_queue_get(f->q, "c3", &r), 0);
    assert_int_equal(recs[0]->seq, r->seq);
    assert_int_equal(recs[0]->created_ms, r->created_ms);
    assert_string_equal(recs[0]->body, r->body);
    assert_null(recs[0]->client);
    assert_null(r->client);
    eg_cmd_record_free(r);
    eg_cmd_record_free(recs[0]);

    /* Invalid input is refused before anything is written. */
    struct eg_submit bad = {.id = NULL, .type = "device.allow", .body = "{}"};
    assert_int_equal(eg_queue_submit(f->q, &bad, 1, &o, recs), EG_EINVAL);
    assert_int_equal(eg_queue_submit(f->q, NULL, 0, NULL, NULL), 0);
}

static void test_idempotency(void **state)
{
    struct fx *f = *state;
    enum eg_submit_outcome o;
    int64_t seq = 0, seq2 = 0, c0[EG_STATE__COUNT], c1[EG_STATE__COUNT];
    struct eg_cmd_record *before = NULL, *after = NULL;

    assert_int_equal(sub_full(f->q, "x", "device.allow", "m@x", "{\"v\":1}", &o, &seq), 0);
    assert_int_equal(o, EG_SUBMIT_CREATED);
    assert_int_equal(eg_queue_get(f->q, "x", &before), 0);
    get_counts(f->q, c0);

    /* Same id, same body: EXISTS, the stored record, nothing written. */
    assert_int_equal(sub_full(f->q, "x", "device.allow", "m@x", "{\"v\":1}", &o, &seq2), 0);
    assert_int_equal(o, EG_SUBMIT_EXISTS);
    assert_int_equal(seq2, seq);
    /* Same id, different body: CONFLICT with the stored record. */
    struct eg_submit it = {
        .id = "x", .type = "device.allow", .mailbox_key = "m@x", .body = "{\"v\":2}"};
    struct eg_cmd_record *recs[1] = {NULL};
    assert_int_equal(eg_queue_submit(f->q, &it, 1, &o, recs), EG_ECONFLICT);
    assert_int_equal(o, EG_SUBMIT_CONFLICT);
    assert_non_null(recs[0]);
    assert_int_equal(recs[0]->seq, seq);
    assert_string_equal(recs[0]->body, "{\"v\":1}");
    eg_cmd_record_free(recs[0]);
    /* Byte for byte: whitespace makes a different body. */
    assert_int_equal(sub_full(f->q, "x", "device.allow", "m@x", "{\"v\": 1}", &o, NULL),
                     EG_ECONFLICT);

    assert_int_equal(eg_queue_get(f->q, "x", &after), 0);
    assert_int_equal(after->updated_ms, before->updated_ms);
    assert_string_equal(after->body, "{\"v\":1}");
    get_counts(f->q, c1);
    assert_memory_equal(c0, c1, sizeof c0);

    /* A state change does not affect idempotency: EXISTS reports the current state. */
    assert_string_equal(claim_ids(f->q, eg_now_ms(), NULL, NULL, NULL, 1), "x");
    assert_int_equal(eg_queue_submit(f->q,
                                     &(struct eg_submit){.id = "x",
                                                         .type = "device.allow",
                                                         .mailbox_key = "m@x",
                                                         .body = "{\"v\":1}"},
                                     1, &o, recs),
                     0);
    assert_int_equal(o, EG_SUBMIT_EXISTS);
    assert_int_equal(recs[0]->state, EG_STATE_RUNNING);
    assert_int_equal(recs[0]->attempts, 1);
    eg_cmd_record_free(recs[0]);
    eg_cmd_record_free(before);
    eg_cmd_record_free(after);
}

static void test_batch_conflict_writes_nothing(void **state)
{
    struct fx *f = *state;
    int64_t sx = add(f->q, "x", "device.allow", "m@x");
    int64_t sy = add(f->q, "y", "device.block", "m@x");
    int64_t c0[EG_STATE__COUNT], c1[EG_STATE__COUNT];
    char body_x[256], body_y[256]; /* body_for() reuses one buffer */
    snprintf(body_x, sizeof body_x, "%s", body_for("x", NULL));
    snprintf(body_y, sizeof body_y, "%s", body_for("y", NULL));
    get_counts(f->q, c0);

    struct eg_submit items[4] = {
        {.id = "a", .type = "device.allow", .mailbox_key = "n@x", .body = "{}"},
        {.id = "x", .type = "device.allow", .mailbox_key = "m@x", .body = "{\"other\":1}"},
        {.id = "y", .type = "device.block", .mailbox_key = "m@x", .body = body_y},
        {.id = "b", .type = "device.allow", .mailbox_key = "n@x", .body = "{}"},
    };
    enum eg_submit_outcome o[4];
    struct eg_cmd_record *recs[4] = {NULL};
    assert_int_equal(eg_queue_submit(f->q, items, 4, o, recs), EG_ECONFLICT);
    assert_int_equal(o[0], EG_SUBMIT_CREATED);
    assert_int_equal(o[1], EG_SUBMIT_CONFLICT);
    assert_int_equal(o[2], EG_SUBMIT_EXISTS);
    assert_int_equal(o[3], EG_SUBMIT_CREATED);
    assert_null(recs[0]); /* not stored */
    assert_null(recs[3]);
    assert_non_null(recs[1]);
    assert_int_equal(recs[1]->seq, sx);
    assert_non_null(recs[2]);
    assert_int_equal(recs[2]->seq, sy);
    for (int i = 0; i < 4; i++)
        eg_cmd_record_free(recs[i]);

    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(f->q, "a", &r), EG_ENOTFOUND);
    assert_int_equal(eg_queue_get(f->q, "b", &r), EG_ENOTFOUND);
    get_counts(f->q, c1);
    assert_memory_equal(c0, c1, sizeof c0);

    /* Without the conflict the same batch is stored whole, in order. */
    items[1].body = body_x;
    memset(recs, 0, sizeof recs);
    assert_int_equal(eg_queue_submit(f->q, items, 4, o, recs), 0);
    assert_int_equal(o[0], EG_SUBMIT_CREATED);
    assert_int_equal(o[1], EG_SUBMIT_EXISTS);
    assert_int_equal(o[2], EG_SUBMIT_EXISTS);
    assert_int_equal(o[3], EG_SUBMIT_CREATED);
    assert_true(recs[0]->seq > sy);
    assert_true(recs[3]->seq > recs[0]->seq);
    for (int i = 0; i < 4; i++) {
        assert_non_null(recs[i]);
        assert_string_equal(recs[i]->id, items[i].id);
        eg_cmd_record_free(recs[i]);
    }
    get_counts(f->q, c1);
    assert_int_equal(c1[EG_STATE_QUEUED], c0[EG_STATE_QUEUED] + 2);
}

static void test_batch_repeated_ids(void **state)
{
    struct fx *f = *state;
    enum eg_submit_outcome o[3];
    struct eg_cmd_record *recs[3] = {NULL};
    int64_t c[EG_STATE__COUNT];

    /* Same id twice with the same body: the second is EXISTS against the first. */
    struct eg_submit same[2] = {{.id = "d", .type = "device.allow", .body = "{}"},
                                {.id = "d", .type = "device.allow", .body = "{}"}};
    assert_int_equal(eg_queue_submit(f->q, same, 2, o, recs), 0);
    assert_int_equal(o[0], EG_SUBMIT_CREATED);
    assert_int_equal(o[1], EG_SUBMIT_EXISTS);
    assert_int_equal(recs[0]->seq, recs[1]->seq);
    eg_cmd_record_free(recs[0]);
    eg_cmd_record_free(recs[1]);
    get_counts(f->q, c);
    assert_int_equal(c[EG_STATE_QUEUED], 1);

    /* Same id twice with different bodies: CONFLICT, and the first is not stored either. */
    struct eg_submit diff[3] = {{.id = "e", .type = "device.allow", .body = "{}"},
                                {.id = "f", .type = "device.allow", .body = "{}"},
                                {.id = "e", .type = "device.allow", .body = "{\"z\":1}"}};
    memset(recs, 0, sizeof recs);
    assert_int_equal(eg_queue_submit(f->q, diff, 3, o, recs), EG_ECONFLICT);
    assert_int_equal(o[0], EG_SUBMIT_CREATED);
    assert_int_equal(o[1], EG_SUBMIT_CREATED);
    assert_int_equal(o[2], EG_SUBMIT_CONFLICT);
    for (int i = 0; i < 3; i++)
        assert_null(recs[i]); /* none of them is stored */
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(f->q, "e", &r), EG_ENOTFOUND);
    assert_int_equal(eg_queue_get(f->q, "f", &r), EG_ENOTFOUND);
    get_counts(f->q, c);
    assert_int_equal(c[EG_STATE_QUEUED], 1);
}

static void test_state_machine(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    struct eg_cmd_record *r = NULL;
    int64_t now = eg_now_ms();

    /* Unknown ids. */
    assert_int_equal(eg_queue_finish(q, "zz", EG_STATE_SUCCEEDED, NULL, NULL, NULL, NULL),
                     EG_ENOTFOUND);
    assert_int_equal(eg_queue_retry(q, "zz", now, NULL, NULL, NULL), EG_ENOTFOUND);
    assert_int_equal(eg_queue_cancel(q, "zz", &r), EG_ENOTFOUND);
    assert_null(r);

    /* queued: finish and retry refused; cancel allowed. */
    add(q, "q1", "device.allow", "a@x");
    assert_int_equal(eg_queue_finish(q, "q1", EG_STATE_SUCCEEDED, NULL, NULL, NULL, NULL),
                     EG_ESTATE);
    assert_int_equal(eg_queue_finish(q, "q1", EG_STATE_FAILED, NULL, NULL, NULL, NULL), EG_ESTATE);
    assert_int_equal(eg_queue_retry(q, "q1", now, NULL, NULL, NULL), EG_ESTATE);
    assert_int_equal(state_of(q, "q1"), EG_STATE_QUEUED);
    assert_int_equal(eg_queue_cancel(q, "q1", &r), 0);
    assert_int_equal(r->state, EG_STATE_CANCELLED);
    assert_true(r->finished_ms >= now);
    eg_cmd_record_free(r);
    r = NULL;

    /* cancelled is final: everything refused, not claimable. */
    assert_int_equal(eg_queue_cancel(q, "q1", &r), EG_ESTATE);
    assert_int_equal(r->state, EG_STATE_CANCELLED);
    eg_cmd_record_free(r);
    r = NULL;
    assert_int_equal(eg_queue_finish(q, "q1", EG_STATE_SUCCEEDED, NULL, NULL, NULL, NULL),
                     EG_ESTATE);
    assert_int_equal(eg_queue_retry(q, "q1", now, NULL, NULL, NULL), EG_ESTATE);
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "");

    /* queued -> running; running refuses cancel (ret filled) and a second claim. */
    add(q, "r1", "device.allow", "b@x");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "r1");
    assert_int_equal(attempts_of(q, "r1"), 1);
    assert_int_equal(eg_queue_cancel(q, "r1", &r), EG_ESTATE);
    assert_non_null(r);
    assert_int_equal(r->state, EG_STATE_RUNNING);
    eg_cmd_record_free(r);
    r = NULL;
    assert_int_equal(eg_queue_cancel(q, "r1", NULL), EG_ESTATE);
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "");
    assert_int_equal(eg_queue_finish(q, "r1", EG_STATE_QUEUED, NULL, NULL, NULL, NULL), EG_EINVAL);
    assert_int_equal(eg_queue_finish(q, "r1", EG_STATE_CANCELLED, NULL, NULL, NULL, NULL),
                     EG_EINVAL);

    /* running -> retrying (error recorded) -> running (due) -> succeeded (error cleared). */
    assert_int_equal(
        eg_queue_retry(q, "r1", now + 1000, "throttled", "slow down", "{\"type\":\"X\"}"), 0);
    assert_int_equal(eg_queue_get(q, "r1", &r), 0);
    assert_int_equal(r->state, EG_STATE_RETRYING);
    assert_int_equal(r->next_attempt_ms, now + 1000);
    assert_string_equal(r->error_code, "throttled");
    assert_string_equal(r->error_message, "slow down");
    assert_string_equal(r->error_detail, "{\"type\":\"X\"}");
    assert_int_equal(r->finished_ms, 0);
    eg_cmd_record_free(r);
    r = NULL;
    /* retrying: finish and retry refused (not running). */
    assert_int_equal(eg_queue_finish(q, "r1", EG_STATE_SUCCEEDED, NULL, NULL, NULL, NULL),
                     EG_ESTATE);
    assert_int_equal(eg_queue_retry(q, "r1", now, NULL, NULL, NULL), EG_ESTATE);
    assert_string_equal(claim_ids(q, now + 999, NULL, NULL, NULL, 10), "");
    assert_string_equal(claim_ids(q, now + 1000, NULL, NULL, NULL, 10), "r1");
    assert_int_equal(attempts_of(q, "r1"), 2);
    assert_int_equal(
        eg_queue_finish(q, "r1", EG_STATE_SUCCEEDED, "{\"ok\":true}", NULL, NULL, NULL), 0);
    assert_int_equal(eg_queue_get(q, "r1", &r), 0);
    assert_int_equal(r->state, EG_STATE_SUCCEEDED);
    assert_string_equal(r->result, "{\"ok\":true}");
    assert_null(r->error_code);
    assert_null(r->error_message);
    assert_null(r->error_detail);
    assert_int_equal(r->next_attempt_ms, 0);
    assert_int_equal(r->started_ms, now + 1000);
    assert_true(r->finished_ms > 0);
    assert_int_equal(r->attempts, 2);
    eg_cmd_record_free(r);
    r = NULL;

    /* succeeded is final. */
    assert_int_equal(eg_queue_finish(q, "r1", EG_STATE_FAILED, NULL, NULL, NULL, NULL), EG_ESTATE);
    assert_int_equal(eg_queue_retry(q, "r1", now, NULL, NULL, NULL), EG_ESTATE);
    assert_int_equal(eg_queue_cancel(q, "r1", &r), EG_ESTATE);
    assert_int_equal(r->state, EG_STATE_SUCCEEDED);
    eg_cmd_record_free(r);
    r = NULL;

    /* running -> failed with error fields; failed is final. */
    add(q, "f1", "device.wipe", "c@x");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "f1");
    assert_int_equal(eg_queue_finish(q, "f1", EG_STATE_FAILED, NULL, "mailbox_not_found",
                                     "no such mailbox", "{\"e\":1}"),
                     0);
    assert_int_equal(eg_queue_get(q, "f1", &r), 0);
    assert_int_equal(r->state, EG_STATE_FAILED);
    assert_null(r->result);
    assert_string_equal(r->error_code, "mailbox_not_found");
    assert_string_equal(r->error_message, "no such mailbox");
    assert_string_equal(r->error_detail, "{\"e\":1}");
    eg_cmd_record_free(r);
    r = NULL;
    assert_int_equal(eg_queue_finish(q, "f1", EG_STATE_SUCCEEDED, NULL, NULL, NULL, NULL),
                     EG_ESTATE);
    assert_int_equal(eg_queue_retry(q, "f1", now, NULL, NULL, NULL), EG_ESTATE);
    assert_int_equal(eg_queue_cancel(q, "f1", NULL), EG_ESTATE);

    /* retrying -> cancelled. */
    add(q, "t1", "device.block", "d@x");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "t1");
    assert_int_equal(eg_queue_retry(q, "t1", now + 5000, "timeout", NULL, NULL), 0);
    assert_int_equal(eg_queue_cancel(q, "t1", &r), 0);
    assert_int_equal(r->state, EG_STATE_CANCELLED);
    assert_int_equal(r->next_attempt_ms, 0);
    eg_cmd_record_free(r);
    assert_string_equal(claim_ids(q, now + 5000, NULL, NULL, NULL, 10), "");
    assert_int_equal(eg_queue_next_wakeup(q), 0);
}

static void test_crash_recovery(void **state)
{
    struct fx *f = *state;
    int64_t now = eg_now_ms();
    add(f->q, "a", "device.allow", "m@x");
    add(f->q, "b", "device.allow", "n@x");
    add(f->q, "c", "device.allow", "o@x");
    assert_string_equal(claim_ids(f->q, now, NULL, NULL, NULL, 1), "a");
    finish_ok(f->q, "a");
    assert_string_equal(claim_ids(f->q, now, NULL, NULL, NULL, 1), "b");
    assert_string_equal(claim_ids(f->q, now, NULL, NULL, NULL, 1), "c");
    assert_int_equal(eg_queue_retry(f->q, "c", now + 60000, "timeout", NULL, NULL), 0);
    assert_string_equal(claim_ids(f->q, now, NULL, NULL, NULL, 1), "");

    reopen(f); /* "b" was running: as after a crash */

    assert_int_equal(state_of(f->q, "a"), EG_STATE_SUCCEEDED);
    assert_int_equal(state_of(f->q, "b"), EG_STATE_QUEUED);
    assert_int_equal(attempts_of(f->q, "b"), 1);
    assert_int_equal(state_of(f->q, "c"), EG_STATE_RETRYING);
    int64_t c[EG_STATE__COUNT];
    get_counts(f->q, c);
    assert_int_equal(c[EG_STATE_RUNNING], 0);
    assert_string_equal(claim_ids(f->q, now, NULL, NULL, NULL, 1), "b");
    assert_int_equal(attempts_of(f->q, "b"), 2);
    assert_int_equal(eg_queue_next_wakeup(f->q), now + 60000);
}

struct busy_ctx {
    const char *busy; /* mailbox reported busy, or NULL */
    int calls;
};

static bool busy_cb(const char *mailbox_key, void *ctx)
{
    struct busy_ctx *b = ctx;
    assert_non_null(mailbox_key);
    b->calls++;
    return b->busy && strcmp(mailbox_key, b->busy) == 0;
}

static void test_claim_coalescing(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    int64_t now = eg_now_ms();

    add(q, "1", "device.allow", "m1");
    add(q, "2", "device.block", "m1");
    add(q, "3", "mailbox.set_devices", "m1");
    add(q, "4", "device.allow", "m2");
    add(q, "5", "device.unlist", "m1");
    /* All list edits of m1 in seq order, across m2's command. */
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "1,2,3,5");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "4");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "");
    /* m1 has a batch running: new work for it waits. */
    add(q, "6", "device.allow", "m1");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "");
    finish_ok(q, "1");
    finish_ok(q, "2");
    finish_ok(q, "3");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), ""); /* 5 still runs */
    finish_ok(q, "5");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "6");
    finish_ok(q, "6");
    finish_ok(q, "4");

    /* max bounds the batch; the rest waits for it. */
    add(q, "m3a", "device.allow", "m3");
    add(q, "m3b", "device.allow", "m3");
    add(q, "m3c", "device.allow", "m3");
    add(q, "m3d", "device.allow", "m3");
    add(q, "m3e", "device.allow", "m3");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 3), "m3a,m3b,m3c");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 3), "");
    finish_ok(q, "m3a");
    finish_ok(q, "m3b");
    finish_ok(q, "m3c");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 3), "m3d,m3e");
    finish_ok(q, "m3d");
    finish_ok(q, "m3e");

    /* A head that does not coalesce goes alone; coalescing stops at a non-coalescible
     * command rather than jumping over it. */
    add(q, "w1", "device.wipe", "m4");
    add(q, "w2", "device.allow", "m4");
    add(q, "w3", "device.block", "m4");
    add(q, "w4", "device.remove", "m4");
    add(q, "w5", "device.allow", "m4");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "w1");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "");
    finish_ok(q, "w1");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "w2,w3");
    finish_ok(q, "w2");
    finish_ok(q, "w3");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "w4");
    finish_ok(q, "w4");
    /* No types (coalescing off): one command per claim. */
    add(q, "w6", "device.allow", "m4");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "w5");
    finish_ok(q, "w5");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 10), "w6");
    finish_ok(q, "w6");

    /* Commands without a mailbox: never coalesced, never exclusive, never busy-checked. */
    const char *const with_org[] = {"org.set_default_access", "device.allow", NULL};
    add(q, "o1", "org.set_default_access", NULL);
    add(q, "o2", "org.set_default_access", NULL);
    struct busy_ctx b = {.busy = NULL};
    assert_string_equal(claim_ids(q, now, busy_cb, &b, with_org, 10), "o1");
    assert_string_equal(claim_ids(q, now, busy_cb, &b, with_org, 10), "o2");
    assert_int_equal(b.calls, 0);
    finish_ok(q, "o1");
    finish_ok(q, "o2");

    /* is_busy: a busy mailbox is skipped, the next eligible command is taken. */
    add(q, "b1", "device.allow", "busy");
    add(q, "b2", "device.allow", "free");
    add(q, "b3", "device.allow", "busy");
    b = (struct busy_ctx){.busy = "busy"};
    assert_string_equal(claim_ids(q, now, busy_cb, &b, LIST_EDITS, 10), "b2");
    assert_true(b.calls >= 2);
    assert_string_equal(claim_ids(q, now, busy_cb, &b, LIST_EDITS, 10), "");
    b.busy = NULL;
    assert_string_equal(claim_ids(q, now, busy_cb, &b, LIST_EDITS, 10), "b1,b3");

    struct eg_cmd_record **recs = NULL;
    size_t n = 0;
    assert_int_equal(eg_queue_claim(q, now, NULL, NULL, NULL, 0, &recs, &n), EG_EINVAL);
}

static void test_claim_order_across_retries(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    int64_t now = eg_now_ms();

    /* An older command retrying later blocks the mailbox until it is due. */
    add(q, "a", "device.allow", "m");
    add(q, "b", "device.block", "m");
    add(q, "c", "device.allow", "other");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 1), "a");
    assert_int_equal(eg_queue_retry(q, "a", now + 10000, "throttled", NULL, NULL), 0);
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "c");
    assert_string_equal(claim_ids(q, now + 9999, NULL, NULL, LIST_EDITS, 10), "");
    /* Due: the retried command comes first and the queued one behind it coalesces. */
    assert_string_equal(claim_ids(q, now + 10000, NULL, NULL, LIST_EDITS, 10), "a,b");
    assert_int_equal(attempts_of(q, "a"), 2);
    assert_int_equal(attempts_of(q, "b"), 1);

    /* Retried one by one out of a batch: while part of it still runs, nothing of the
     * mailbox is taken, even if due. */
    assert_int_equal(eg_queue_retry(q, "a", 1, "timeout", NULL, NULL), 0);
    assert_string_equal(claim_ids(q, now + 10000, NULL, NULL, LIST_EDITS, 10), "");
    assert_int_equal(eg_queue_retry(q, "b", now + 20000, "timeout", NULL, NULL), 0);
    /* a is due, b is not: a goes alone, b waits for its own time. */
    assert_string_equal(claim_ids(q, now + 10000, NULL, NULL, LIST_EDITS, 10), "a");
    finish_ok(q, "a");
    assert_string_equal(claim_ids(q, now + 19999, NULL, NULL, LIST_EDITS, 10), "");
    assert_string_equal(claim_ids(q, now + 20000, NULL, NULL, LIST_EDITS, 10), "b");
    finish_ok(q, "b");

    /* A non-coalescible head: without a mailbox-order rule the queued command behind a
     * retrying one would overtake it. */
    add(q, "w", "device.wipe", "n");
    add(q, "x", "device.allow", "n");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "w");
    assert_int_equal(eg_queue_retry(q, "w", now + 500, "timeout", NULL, NULL), 0);
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "");
    assert_string_equal(claim_ids(q, now + 500, NULL, NULL, LIST_EDITS, 10), "w");
    finish_ok(q, "w");
    assert_string_equal(claim_ids(q, now + 500, NULL, NULL, LIST_EDITS, 10), "x");
    finish_ok(q, "x");
    finish_ok(q, "c");
}

/* Across mailboxes claims are fair (queue.c fair_rank): a mailbox that had no command accepted
 * lately goes ahead of a mailbox with a stream of commands, though accepted after them; within
 * a mailbox the order stays acceptance order; ranks survive a reopen. */
static void test_claim_fair_across_mailboxes(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    int64_t now = eg_now_ms();

    add(q, "h1", "device.wipe", "hot");
    add(q, "h2", "device.wipe", "hot");
    add(q, "h3", "device.wipe", "hot");
    add(q, "o1", "org.set_default_access", NULL);
    add(q, "q1", "device.wipe", "quiet");
    add(q, "q2", "device.wipe", "quiet");
    /* h1, o1 and q1 were the first of their mailbox (rank: the window's start) and go in
     * acceptance order; h2 and h3 came behind h1 in a busy mailbox and wait. */
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 1), "h1");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 1), "o1");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 1), "q1");
    finish_ok(q, "h1");
    finish_ok(q, "q1");
    finish_ok(q, "o1");
    /* A mailbox seen for the first time overtakes both streams. */
    add(q, "n1", "device.wipe", "new");
    reopen(f);
    q = f->q;
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 1), "n1");
    /* Then the streams by when their previous command was accepted: h2 (after h1), h3 (after
     * h2), q2 (after q1, accepted after h2). */
    static const char *const rest[] = {"h2", "h3", "q2"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), rest[i]);
        finish_ok(q, rest[i]);
    }
    finish_ok(q, "n1");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 1), "");
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    int64_t now = eg_now_ms();
    struct eg_cmd_record *r = NULL;

    /* Cancelling the command at the head of a mailbox unblocks the next one. */
    add(q, "a", "device.wipe", "m");
    add(q, "b", "device.allow", "m");
    assert_int_equal(eg_queue_cancel(q, "a", NULL), 0);
    assert_int_equal(state_of(q, "a"), EG_STATE_CANCELLED);
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "b");
    assert_int_equal(eg_queue_retry(q, "b", now + 100000, "timeout", NULL, NULL), 0);
    add(q, "c", "device.allow", "m");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "");
    /* Cancelling a retrying head also unblocks. */
    assert_int_equal(eg_queue_cancel(q, "b", &r), 0);
    assert_int_equal(r->state, EG_STATE_CANCELLED);
    assert_string_equal(r->error_code, "timeout"); /* the last error stays visible */
    assert_int_equal(r->attempts, 1);
    eg_cmd_record_free(r);
    assert_int_equal(eg_queue_next_wakeup(q), 0);
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "c");
    r = NULL;
    assert_int_equal(eg_queue_cancel(q, "c", &r), EG_ESTATE);
    assert_int_equal(r->state, EG_STATE_RUNNING);
    eg_cmd_record_free(r);
    r = NULL;
    assert_int_equal(eg_queue_cancel(q, "none", &r), EG_ENOTFOUND);
    assert_null(r);
    int64_t c[EG_STATE__COUNT];
    get_counts(q, c);
    assert_int_equal(c[EG_STATE_CANCELLED], 2);
    assert_int_equal(c[EG_STATE_RUNNING], 1);
}

static void test_list_paging(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    struct eg_cmd_record **recs = NULL;
    size_t n = 0;
    int64_t next = -1, seqs[25];
    char id[16];

    /* Empty journal. */
    assert_int_equal(eg_queue_list(q, -1, 0, 10, &recs, &n, &next), 0);
    assert_int_equal(n, 0);
    assert_int_equal(next, 0);
    eg_cmd_records_free(recs, n);

    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "L%02d", i);
        seqs[i] = add(q, id, "device.allow", NULL);
    }
    /* Every third one succeeds: L00, L03, ... L24 (9 commands). */
    int64_t now = eg_now_ms();
    for (int i = 0; i < 25; i++) {
        char *got = claim_ids(q, now, NULL, NULL, NULL, 1);
        snprintf(id, sizeof id, "L%02d", i);
        assert_string_equal(got, id);
        if (i % 3 == 0)
            finish_ok(q, id);
        else
            assert_int_equal(eg_queue_retry(q, id, now + 1000000, "t", NULL, NULL), 0);
    }

    /* All states, pages of 10: 10, 10, 5. */
    int64_t after = 0;
    int total = 0;
    for (int page = 0; page < 3; page++) {
        recs = NULL;
        assert_int_equal(eg_queue_list(q, -1, after, 10, &recs, &n, &next), 0);
        assert_int_equal(n, page < 2 ? 10 : 5);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(recs[i]->seq, seqs[total]);
            total++;
        }
        if (page < 2)
            assert_int_equal(next, recs[n - 1]->seq);
        else
            assert_int_equal(next, 0);
        after = next;
        eg_cmd_records_free(recs, n);
    }
    assert_int_equal(total, 25);

    /* A last page that is exactly full says there is nothing more. */
    recs = NULL;
    assert_int_equal(eg_queue_list(q, -1, seqs[14], 10, &recs, &n, &next), 0);
    assert_int_equal(n, 10);
    assert_int_equal(next, 0);
    eg_cmd_records_free(recs, n);

    /* Filtered by state, pages of 4: 4, 4, 1 succeeded commands. */
    after = 0;
    total = 0;
    for (int page = 0; page < 3; page++) {
        recs = NULL;
        assert_int_equal(eg_queue_list(q, EG_STATE_SUCCEEDED, after, 4, &recs, &n, &next), 0);
        assert_int_equal(n, page < 2 ? 4 : 1);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(recs[i]->state, EG_STATE_SUCCEEDED);
            assert_int_equal(recs[i]->seq, seqs[3 * total]);
            total++;
        }
        assert_int_equal(next, page < 2 ? recs[n - 1]->seq : 0);
        after = next;
        eg_cmd_records_free(recs, n);
    }
    recs = NULL;
    assert_int_equal(eg_queue_list(q, EG_STATE_RETRYING, 0, 100, &recs, &n, &next), 0);
    assert_int_equal(n, 16);
    assert_int_equal(next, 0);
    eg_cmd_records_free(recs, n);
    recs = NULL;
    assert_int_equal(eg_queue_list(q, EG_STATE_FAILED, 0, 100, &recs, &n, &next), 0);
    assert_int_equal(n, 0);
    eg_cmd_records_free(recs, n);

    recs = NULL;
    assert_int_equal(eg_queue_list(q, -1, 0, 0, &recs, &n, &next), EG_EINVAL);
    assert_int_equal(eg_queue_list(q, EG_STATE__COUNT, 0, 10, &recs, &n, &next), EG_EINVAL);
    assert_null(recs);
}

static void test_counts_and_wakeup(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    int64_t c[EG_STATE__COUNT], now = eg_now_ms();

    get_counts(q, c);
    for (int i = 0; i < EG_STATE__COUNT; i++)
        assert_int_equal(c[i], 0);
    assert_int_equal(eg_queue_next_wakeup(q), 0);

    add(q, "s", "device.allow", "m1");
    add(q, "fl", "device.allow", "m2");
    add(q, "r1", "device.allow", "m3");
    add(q, "r2", "device.allow", "m4");
    add(q, "x", "device.allow", "m5");
    add(q, "queued", "device.allow", "m6");
    add(q, "run", "device.allow", "m7");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 1), "s");
    finish_ok(q, "s");
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 1), "fl");
    assert_int_equal(eg_queue_finish(q, "fl", EG_STATE_FAILED, NULL, "internal", NULL, NULL), 0);
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 1), "r1");
    assert_int_equal(eg_queue_retry(q, "r1", now + 3000, "t", NULL, NULL), 0);
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 1), "r2");
    assert_int_equal(eg_queue_retry(q, "r2", now + 2000, "t", NULL, NULL), 0);
    assert_int_equal(eg_queue_cancel(q, "x", NULL), 0);
    assert_string_equal(claim_ids(q, now, NULL, NULL, NULL, 1), "queued");
    assert_int_equal(eg_queue_retry(q, "queued", now + 1, "t", NULL, NULL), 0);
    assert_int_equal(eg_queue_next_wakeup(q), now + 1);
    assert_string_equal(claim_ids(q, now + 1, NULL, NULL, NULL, 1), "queued");
    assert_string_equal(claim_ids(q, now + 1, NULL, NULL, NULL, 1), "run");

    get_counts(q, c);
    assert_int_equal(c[EG_STATE_QUEUED], 0);
    assert_int_equal(c[EG_STATE_RUNNING], 2);
    assert_int_equal(c[EG_STATE_RETRYING], 2);
    assert_int_equal(c[EG_STATE_SUCCEEDED], 1);
    assert_int_equal(c[EG_STATE_FAILED], 1);
    assert_int_equal(c[EG_STATE_CANCELLED], 1);
    assert_int_equal(eg_queue_next_wakeup(q), now + 2000);
    add(q, "new", "device.allow", "m8");
    get_counts(q, c);
    assert_int_equal(c[EG_STATE_QUEUED], 1);

    /* A retrying command waiting behind an older one of its mailbox does not count: waking
     * up for it would find nothing to claim. */
    add(q, "o1", "device.allow", "mo");
    add(q, "o2", "device.allow", "mo");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "new");
    assert_string_equal(claim_ids(q, now, NULL, NULL, LIST_EDITS, 10), "o1,o2");
    assert_int_equal(eg_queue_retry(q, "o1", now + 900000, "t", NULL, NULL), 0);
    assert_int_equal(eg_queue_retry(q, "o2", now + 100, "t", NULL, NULL), 0);
    assert_int_equal(eg_queue_next_wakeup(q), now + 2000);
    assert_int_equal(eg_queue_cancel(q, "r1", NULL), 0);
    assert_int_equal(eg_queue_cancel(q, "r2", NULL), 0);
    assert_int_equal(eg_queue_next_wakeup(q), now + 900000);
    assert_int_equal(eg_queue_cancel(q, "o1", NULL), 0);
    assert_int_equal(eg_queue_next_wakeup(q), now + 100);
}

/* ---- group commit ------------------------------------------------------------------------- */

#define GC_THREADS    8
#define GC_PER_THREAD 200
#define GC_SHARED     20

struct gc_arg {
    struct eg_queue *q;
    int t;
    int created_shared;
    int failures;
};

static void *gc_thread(void *p)
{
    struct gc_arg *a = p;
    char id[32];
    for (int i = 0; i < GC_PER_THREAD; i++) {
        enum eg_submit_outcome o;
        snprintf(id, sizeof id, "t%d-%d", a->t, i);
        if (sub_full(a->q, id, "device.allow", i % 2 ? "odd" : NULL, body_for(id, NULL), &o,
                     NULL) != 0 ||
            o != EG_SUBMIT_CREATED)
            a->failures++;
        /* Every thread also posts the same shared ids: exactly one of them creates each. */
        if (i % (GC_PER_THREAD / GC_SHARED) == 0) {
            snprintf(id, sizeof id, "shared-%d", i / (GC_PER_THREAD / GC_SHARED));
            if (sub_full(a->q, id, "device.block", "s", body_for(id, "same"), &o, NULL) != 0)
                a->failures++;
            else if (o == EG_SUBMIT_CREATED)
                a->created_shared++;
            else if (o != EG_SUBMIT_EXISTS)
                a->failures++;
        }
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_group_commit_threads(void **state)
{
    struct fx *f = *state;
    pthread_t th[GC_THREADS];
    struct gc_arg args[GC_THREADS];
    int64_t commits0 = eg_queue_commits(f->q);

    for (int t = 0; t < GC_THREADS; t++) {
        args[t] = (struct gc_arg){.q = f->q, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, gc_thread, &args[t]), 0);
    }
    int created_shared = 0;
    for (int t = 0; t < GC_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].failures, 0);
        created_shared += args[t].created_shared;
    }
    assert_int_equal(created_shared, GC_SHARED);

    const int64_t submits = GC_THREADS * (GC_PER_THREAD + GC_SHARED);
    const int64_t expected = GC_THREADS * GC_PER_THREAD + GC_SHARED;
    int64_t commits = eg_queue_commits(f->q) - commits0;
    print_message("group commit: %lld submits in %lld commits\n", (long long)submits,
                  (long long)commits);
    assert_true(commits >= 1);
    assert_true(commits < submits);

    /* No loss: every id is there. No duplicates: exactly the expected number of rows, all
     * with distinct ids and increasing seq. */
    char id[32];
    for (int t = 0; t < GC_THREADS; t++)
        for (int i = 0; i < GC_PER_THREAD; i++) {
            snprintf(id, sizeof id, "t%d-%d", t, i);
            assert_int_equal(state_of(f->q, id), EG_STATE_QUEUED);
        }
    int64_t c[EG_STATE__COUNT];
    get_counts(f->q, c);
    assert_int_equal(c[EG_STATE_QUEUED], expected);

    char **ids = calloc((size_t)expected, sizeof *ids);
    assert_non_null(ids);
    size_t total = 0;
    int64_t after = 0, last_seq = 0;
    do {
        struct eg_cmd_record **recs = NULL;
        size_t n = 0;
        int64_t next = 0;
        assert_int_equal(eg_queue_list(f->q, -1, after, 500, &recs, &n, &next), 0);
        for (size_t i = 0; i < n; i++) {
            assert_true(total < (size_t)expected);
            assert_true(recs[i]->seq > last_seq);
            last_seq = recs[i]->seq;
            ids[total++] = strdup(recs[i]->id);
        }
        eg_cmd_records_free(recs, n);
        after = next;
    } while (after);
    assert_int_equal(total, expected);
    qsort(ids, total, sizeof *ids, cmp_str);
    for (size_t i = 1; i < total; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    for (size_t i = 0; i < total; i++)
        free(ids[i]);
    free(ids);
}

/* The leader/follower mechanism itself: while the connection is held (by a claim whose
 * is_busy blocks), submitters pile up and then share transactions. */
struct hold {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool entered, release;
};

static bool hold_cb(const char *mailbox_key, void *ctx)
{
    struct hold *h = ctx;
    pthread_mutex_lock(&h->m);
    h->entered = true;
    pthread_cond_broadcast(&h->c);
    while (!h->release)
        pthread_cond_wait(&h->c, &h->m);
    pthread_mutex_unlock(&h->m);
    return true; /* busy: nothing claimed */
}

struct hold_claim {
    struct eg_queue *q;
    struct hold *h;
    int rc;
    size_t n;
};

static void *hold_thread(void *p)
{
    struct hold_claim *hc = p;
    struct eg_cmd_record **recs = NULL;
    hc->rc = eg_queue_claim(hc->q, eg_now_ms(), hold_cb, hc->h, NULL, 1, &recs, &hc->n);
    if (hc->rc == 0)
        eg_cmd_records_free(recs, hc->n);
    return NULL;
}

struct one_sub {
    struct eg_queue *q;
    int i, rc;
};

static void *one_sub_thread(void *p)
{
    struct one_sub *s = p;
    char id[16];
    enum eg_submit_outcome o;
    snprintf(id, sizeof id, "g%d", s->i);
    s->rc = sub_full(s->q, id, "device.allow", NULL, "{}", &o, NULL);
    if (s->rc == 0 && o != EG_SUBMIT_CREATED)
        s->rc = EG_EINTERNAL;
    return NULL;
}

static void test_group_commit_shares_transactions(void **state)
{
    struct fx *f = *state;
    struct hold h = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    struct hold_claim hc = {.q = f->q, .h = &h};
    pthread_t holder, subs[GC_THREADS];
    struct one_sub s[GC_THREADS];

    add(f->q, "blocker", "device.allow", "held");
    int64_t commits0 = eg_queue_commits(f->q);
    assert_int_equal(pthread_create(&holder, NULL, hold_thread, &hc), 0);
    pthread_mutex_lock(&h.m);
    while (!h.entered)
        pthread_cond_wait(&h.c, &h.m);
    pthread_mutex_unlock(&h.m);

    for (int i = 0; i < GC_THREADS; i++) {
        s[i] = (struct one_sub){.q = f->q, .i = i, .rc = 1};
        assert_int_equal(pthread_create(&subs[i], NULL, one_sub_thread, &s[i]), 0);
    }
    usleep(200 * 1000); /* let them all queue up behind the held connection */
    pthread_mutex_lock(&h.m);
    h.release = true;
    pthread_cond_broadcast(&h.c);
    pthread_mutex_unlock(&h.m);
    pthread_join(holder, NULL);
    assert_int_equal(hc.rc, 0);
    assert_int_equal(hc.n, 0);
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(subs[i], NULL);
        assert_int_equal(s[i].rc, 0);
    }
    int64_t commits = eg_queue_commits(f->q) - commits0;
    print_message("held connection: %d submits in %lld commits\n", GC_THREADS, (long long)commits);
    /* Typically 2: the first submitter's own, then everyone who queued behind it. */
    assert_true(commits >= 1 && commits < GC_THREADS);
    int64_t c[EG_STATE__COUNT];
    get_counts(f->q, c);
    assert_int_equal(c[EG_STATE_QUEUED], GC_THREADS + 1);
}

/* ---- allocation failure ------------------------------------------------------------------- */

static void test_alloc_failures(void **state)
{
    struct fx *f = *state;
    struct eg_queue *q = f->q;
    int64_t c[EG_STATE__COUNT], now = eg_now_ms();
    int rc, failed;

    /* open */
    char dir2[128];
    snprintf(dir2, sizeof dir2, "%s/second", f->dir);
    failed = 0;
    for (long k = 0;; k++) {
        struct eg_queue *q2 = NULL;
        eg_alloc_fail_after(k);
        rc = eg_queue_open(dir2, &q2);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            eg_queue_close(q2);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_null(q2);
        failed++;
    }
    assert_true(failed > 0);

    /* submit: a batch either fails whole with ENOMEM or is stored whole. */
    struct eg_submit items[3] = {
        {.id = "a1", .type = "device.allow", .mailbox_key = "m", .body = "{}", .client = "c"},
        {.id = "a2", .type = "device.allow", .mailbox_key = "m", .body = "{}", .client = "c"},
        {.id = "a3", .type = "device.wipe", .mailbox_key = NULL, .body = "{}", .client = "c"},
    };
    failed = 0;
    for (long k = 0;; k++) {
        enum eg_submit_outcome o[3];
        struct eg_cmd_record *recs[3];
        eg_alloc_fail_after(k);
        rc = eg_queue_submit(q, items, 3, o, recs);
        long refused = eg_alloc_failures();
        eg_alloc_fail_after(-1);
        get_counts(q, c);
        if (rc == 0) {
            assert_int_equal(refused, 0);
            assert_int_equal(c[EG_STATE_QUEUED], 3);
            for (int i = 0; i < 3; i++)
                eg_cmd_record_free(recs[i]);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_true(refused > 0);
        for (int i = 0; i < 3; i++)
            assert_null(recs[i]);
        assert_int_equal(c[EG_STATE_QUEUED], 0);
        failed++;
    }
    assert_true(failed >= 3);

    /* get and list */
    for (long k = 0;; k++) {
        struct eg_cmd_record *r = NULL;
        eg_alloc_fail_after(k);
        rc = eg_queue_get(q, "a1", &r);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            assert_string_equal(r->client, "c");
            eg_cmd_record_free(r);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_null(r);
    }
    for (long k = 0;; k++) {
        struct eg_cmd_record **v = NULL;
        size_t n = 0;
        int64_t next = 0;
        eg_alloc_fail_after(k);
        rc = eg_queue_list(q, -1, 0, 2, &v, &n, &next);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            assert_int_equal(n, 2);
            assert_true(next > 0);
            eg_cmd_records_free(v, n);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_null(v);
    }

    /* claim: a failure claims nothing. */
    failed = 0;
    for (long k = 0;; k++) {
        struct eg_cmd_record **v = NULL;
        size_t n = 0;
        eg_alloc_fail_after(k);
        rc = eg_queue_claim(q, now, NULL, NULL, LIST_EDITS, 10, &v, &n);
        eg_alloc_fail_after(-1);
        get_counts(q, c);
        if (rc == 0) {
            assert_int_equal(n, 2);
            assert_string_equal(v[0]->id, "a1");
            assert_string_equal(v[1]->id, "a2");
            assert_int_equal(c[EG_STATE_RUNNING], 2);
            eg_cmd_records_free(v, n);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_int_equal(c[EG_STATE_RUNNING], 0);
        assert_int_equal(c[EG_STATE_QUEUED], 3);
        assert_int_equal(attempts_of(q, "a1"), 0);
        failed++;
    }
    assert_true(failed > 0);

    /* cancel: a failure cancels nothing. */
    for (long k = 0;; k++) {
        struct eg_cmd_record *r = NULL;
        eg_alloc_fail_after(k);
        rc = eg_queue_cancel(q, "a3", &r);
        eg_alloc_fail_after(-1);
        if (rc == 0) {
            assert_int_equal(r->state, EG_STATE_CANCELLED);
            eg_cmd_record_free(r);
            break;
        }
        assert_int_equal(rc, EG_ENOMEM);
        assert_null(r);
        assert_int_equal(state_of(q, "a3"), EG_STATE_QUEUED);
    }
}

static void test_record_outcomes_batch(void **state)
{
    struct fx *f = *state;
    add(f->q, "o1", "device.allow", "m@x.example");
    add(f->q, "o2", "device.block", "m@x.example");
    add(f->q, "o3", "device.unlist", "m@x.example");
    add(f->q, "o4", "device.allow", "other@x.example");
    assert_string_equal(claim_ids(f->q, eg_now_ms(), NULL, NULL, LIST_EDITS, 10), "o1,o2,o3");
    int64_t later = eg_now_ms() + 60000;
    struct eg_queue_outcome v[] = {
        {.id = "o1", .state = EG_STATE_SUCCEEDED, .result = "{\"actions\":[]}"},
        {.id = "o2",
         .state = EG_STATE_RETRYING,
         .next_attempt_ms = later,
         .error_code = "throttled",
         .error_message = "slow down"},
        {.id = "o3", .state = EG_STATE_FAILED, .error_code = "mailbox_not_found"},
        {.id = "o4", .state = EG_STATE_SUCCEEDED}, /* not running: refused alone */
        {.id = "nope", .state = EG_STATE_FAILED},  /* unknown: refused alone */
        {.id = "o1", .state = EG_STATE_QUEUED},    /* not an outcome */
    };
    int results[6] = {99, 99, 99, 99, 99, 99};
    assert_int_equal(eg_queue_record_outcomes(f->q, v, 6, results), 0);
    assert_int_equal(results[0], 0);
    assert_int_equal(results[1], 0);
    assert_int_equal(results[2], 0);
    assert_int_equal(results[3], EG_ESTATE);
    assert_int_equal(results[4], EG_ENOTFOUND);
    assert_int_equal(results[5], EG_EINVAL);
    assert_int_equal(state_of(f->q, "o1"), EG_STATE_SUCCEEDED);
    assert_int_equal(state_of(f->q, "o2"), EG_STATE_RETRYING);
    assert_int_equal(state_of(f->q, "o3"), EG_STATE_FAILED);
    assert_int_equal(state_of(f->q, "o4"), EG_STATE_QUEUED);
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(f->q, "o2", &r), 0);
    assert_int_equal(r->next_attempt_ms, later);
    assert_string_equal(r->error_code, "throttled");
    eg_cmd_record_free(r);
    assert_int_equal(eg_queue_record_outcomes(f->q, NULL, 0, NULL), 0);
    assert_int_equal(eg_queue_record_outcomes(NULL, v, 1, NULL), EG_EINVAL);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test_setup_teardown(test_files_and_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_and_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_outcomes_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_conflict_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_repeated_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_machine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_coalescing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_order_across_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_fair_across_mailboxes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_and_wakeup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_shares_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
