/* test_worker.c - coalescing order, the worker pool over a real journal, retries and failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/command.h"
#include "agent/metrics.h"
#include "agent/queue.h"
#include "agent/worker.h"
#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/bridge.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static struct eg_command *cmd(const char *json)
{
    struct eg_command **v = NULL;
    size_t n = 0;
    bool batch = false;
    struct eg_verr e;
    assert_int_equal(eg_command_parse_body(json, strlen(json), 10, &v, &n, &batch, &e), 0);
    assert_int_equal(n, 1);
    struct eg_command *c = v[0];
    eg_free(v);
    return c;
}

/* Submit one command (JSON text) through the same path as the API. */
static void submit(struct eg_queue *q, const char *json)
{
    struct eg_command *c = cmd(json);
    char *body = eg_command_canonical(c), *key = eg_command_mailbox_key(c);
    struct eg_submit s = {.id = c->id,
                          .type = eg_cmd_type_name(c->type),
                          .mailbox_key = key,
                          .body = body,
                          .client = "test"};
    enum eg_submit_outcome o;
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_submit(q, &s, 1, &o, &r), 0);
    assert_int_equal(o, EG_SUBMIT_CREATED);
    eg_cmd_record_free(r);
    eg_free(body);
    eg_free(key);
    eg_command_free(c);
}

static struct eg_cmd_record *wait_final(struct eg_queue *q, const char *id)
{
    for (int i = 0; i < 1000; i++) {
        struct eg_cmd_record *r = NULL;
        assert_int_equal(eg_queue_get(q, id, &r), 0);
        if (eg_cmd_state_is_final(r->state))
            return r;
        eg_cmd_record_free(r);
        usleep(10000);
    }
    fail_msg("command %s never reached a final state", id);
    return NULL;
}

struct fixture {
    char dir[64];
    struct eg_queue *q;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/eg-test-worker.XXXXXX");
    if (!mkdtemp(f->dir) || eg_queue_open(f->dir, &f->q) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmdline[128];
    eg_queue_close(f->q);
    snprintf(cmdline, sizeof cmdline, "rm -rf '%s'", f->dir);
    if (system(cmdline) != 0)
        return -1;
    free(f);
    return 0;
}

static const struct eg_workers_opts default_opts = {.threads = 2,
                                                    .coalesce = true,
                                                    .max_coalesce = 100,
                                                    .max_attempts = 4,
                                                    .retry_base_ms = 20,
                                                    .retry_max_ms = 200};

/* ---- eg_coalesce ---------------------------------------------------------------------------- */

static void test_coalesce_later_wins(void **state)
{
    struct eg_command *c[] = {
        cmd("{\"id\":\"1\",\"type\":\"device.allow\",\"mailbox\":\"A@x.example\",\"device_id\":"
            "\"D1\"}"),
        cmd("{\"id\":\"2\",\"type\":\"device.block\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"D2\"}"),
        cmd("{\"id\":\"3\",\"type\":\"device.block\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"d1\"}"),
        cmd("{\"id\":\"4\",\"type\":\"device.unlist\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"D2\"}"),
    };
    struct eg_list_edit *e = NULL;
    assert_int_equal(eg_coalesce((const struct eg_command *const *)c, 4, &e), 0);
    assert_false(e->has_base);
    assert_int_equal(e->n_overrides, 2);
    assert_string_equal(e->overrides[0].device_id, "d1");
    assert_int_equal(e->overrides[0].target, EG_LIST_BLOCK);
    assert_string_equal(e->overrides[1].device_id, "D2");
    assert_int_equal(e->overrides[1].target, EG_LIST_NONE);
    eg_list_edit_free(e);
    for (int i = 0; i < 4; i++)
        eg_command_free(c[i]);
}

static void test_coalesce_declaration_resets(void **state)
{
    struct eg_command *c[] = {
        cmd("{\"id\":\"1\",\"type\":\"device.allow\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"D1\"}"),
        cmd("{\"id\":\"2\",\"type\":\"mailbox.set_devices\",\"mailbox\":\"a@x.example\","
            "\"allowed\":[\"S1\",\"S2\"],\"blocked\":[\"S3\"]}"),
        cmd("{\"id\":\"3\",\"type\":\"device.block\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"S1\"}"),
    };
    struct eg_list_edit *e = NULL;
    assert_int_equal(eg_coalesce((const struct eg_command *const *)c, 3, &e), 0);
    assert_true(e->has_base);
    assert_int_equal(e->n_base_allowed, 2);
    assert_int_equal(e->n_base_blocked, 1);
    assert_int_equal(e->n_overrides, 1); /* D1's allow was replaced by the declaration */
    assert_string_equal(e->overrides[0].device_id, "S1");
    eg_list_edit_free(e);
    for (int i = 0; i < 3; i++)
        eg_command_free(c[i]);
}

static void test_coalesce_refuses_mixed_input(void **state)
{
    struct eg_command *c[] = {
        cmd("{\"id\":\"1\",\"type\":\"device.allow\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"D1\"}"),
        cmd("{\"id\":\"2\",\"type\":\"device.allow\",\"mailbox\":\"b@x.example\",\"device_id\":"
            "\"D1\"}"),
        cmd("{\"id\":\"3\",\"type\":\"device.remove\",\"mailbox\":\"a@x.example\",\"device_id\":"
            "\"D1\"}"),
    };
    struct eg_list_edit *e = NULL;
    assert_int_equal(eg_coalesce((const struct eg_command *const *)c, 2, &e), EG_EINVAL);
    const struct eg_command *pair[] = {c[0], c[2]};
    assert_int_equal(eg_coalesce(pair, 2, &e), EG_EINVAL);
    assert_null(e);
    for (int i = 0; i < 3; i++)
        eg_command_free(c[i]);
}

/* ---- the pool with the dry-run bridge ------------------------------------------------------- */

static void run_burst(struct fixture *f, bool coalesce, size_t *ret_calls)
{
    struct eg_bridge *b = NULL;
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    o.coalesce = coalesce;
    assert_int_equal(eg_bridge_dryrun_new(0, &b), 0);
    submit(f->q, "{\"id\":\"b1\",\"type\":\"device.allow\",\"mailbox\":\"m@x.example\",\"device_"
                 "id\":\"D1\"}");
    submit(f->q, "{\"id\":\"b2\",\"type\":\"device.block\",\"mailbox\":\"m@x.example\",\"device_"
                 "id\":\"D2\"}");
    submit(f->q, "{\"id\":\"b3\",\"type\":\"device.block\",\"mailbox\":\"m@x.example\",\"device_"
                 "id\":\"D1\"}");
    submit(f->q, "{\"id\":\"b4\",\"type\":\"device.allow\",\"mailbox\":\"m@x.example\",\"device_"
                 "id\":\"D3\"}");
    submit(f->q, "{\"id\":\"b5\",\"type\":\"device.unlist\",\"mailbox\":\"m@x.example\",\"device_"
                 "id\":\"D3\"}");
    assert_int_equal(eg_workers_start(f->q, b, NULL, &o, &w), 0);
    const char *ids[] = {"b1", "b2", "b3", "b4", "b5"};
    for (int i = 0; i < 5; i++) {
        struct eg_cmd_record *r = wait_final(f->q, ids[i]);
        assert_int_equal(r->state, EG_STATE_SUCCEEDED);
        assert_non_null(r->result);
        if (coalesce)
            assert_non_null(strstr(r->result, "coalesced_with"));
        eg_cmd_record_free(r);
    }
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    json_t *lists = eg_bridge_dryrun_lists(b, "M@x.example");
    assert_non_null(lists);
    char *text = json_dumps(lists, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "{\"allowed\":[],\"blocked\":[\"D2\",\"D1\"]}");
    eg_free(text);
    json_decref(lists);
    *ret_calls = eg_bridge_dryrun_calls(b);
    eg_bridge_free(b);
}

static void test_pool_coalesces_one_call_per_mailbox(void **state)
{
    size_t calls = 0;
    run_burst(*state, true, &calls);
    assert_int_equal(calls, 1);
}

static void test_pool_without_coalescing_same_outcome(void **state)
{
    size_t calls = 0;
    run_burst(*state, false, &calls);
    assert_int_equal(calls, 5);
}

/* ---- a scripted bridge for retries and failures --------------------------------------------- */

struct script {
    atomic_int calls;
    int transient_failures; /* first N calls fail transiently */
    int64_t retry_after_ms;
    bool permanent; /* every call fails permanently */
    int sleep_ms;
    bool transient_detail; /* transient failures carry an Exchange exception type and message */
};

static int scripted(struct script *s, json_t *actions, struct eg_bridge_error *err)
{
    int n = atomic_fetch_add(&s->calls, 1);
    if (s->sleep_ms)
        usleep((useconds_t)s->sleep_ms * 1000);
    if (s->permanent) {
        eg_bridge_error_set(err, EG_BERR_MAILBOX_NOT_FOUND, false, "no such mailbox");
        snprintf(err->exchange_type, sizeof err->exchange_type,
                 "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException");
        snprintf(err->exchange_message, sizeof err->exchange_message,
                 "The operation couldn't be performed because object 'x' couldn't be found.");
        return EG_EREMOTE;
    }
    if (n < s->transient_failures) {
        eg_bridge_error_set(err, EG_BERR_THROTTLED, true, "micro delay");
        err->retry_after_ms = s->retry_after_ms;
        if (s->transient_detail) {
            snprintf(err->exchange_type, sizeof err->exchange_type,
                     "Microsoft.Exchange.Data.Storage.ServerBusyException");
            snprintf(err->exchange_message, sizeof err->exchange_message,
                     "The server cannot service this request right now.");
        }
        return EG_EAGAIN;
    }
    json_array_append_new(actions, json_pack("{s:s, s:{}}", "cmdlet", "Fake-Cmdlet", "parameters"));
    return 0;
}

static int s_list_edit(void *impl, const struct eg_list_edit *e, json_t *a,
                       struct eg_bridge_error *err)
{
    return scripted(impl, a, err);
}
static int s_org(void *impl, enum eg_access_level l, json_t *a, struct eg_bridge_error *err)
{
    return scripted(impl, a, err);
}

static const struct eg_bridge_ops script_ops = {
    .name = "script", .list_edit = s_list_edit, .set_org_default_access = s_org};

static void test_transient_errors_retry_then_succeed(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 2, .retry_after_ms = 50};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    struct eg_metrics *m = NULL;
    assert_int_equal(eg_metrics_new(&m), 0);
    submit(f->q, "{\"id\":\"r1\",\"type\":\"org.set_default_access\",\"level\":\"block\"}");
    int64_t t0 = eg_mono_ms();
    assert_int_equal(eg_workers_start(f->q, &b, m, &default_opts, &w), 0);
    struct eg_cmd_record *r = wait_final(f->q, "r1");
    int64_t took = eg_mono_ms() - t0;
    assert_int_equal(r->state, EG_STATE_SUCCEEDED);
    assert_int_equal(r->attempts, 3);
    assert_int_equal(atomic_load(&s.calls), 3);
    assert_true(took >= 100); /* two retries, each at least the 50 ms Exchange named */
    eg_cmd_record_free(r);
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    char *text = NULL;
    assert_int_equal(eg_metrics_render(m, NULL, &text), 0);
    assert_non_null(strstr(
        text, "easgate_bridge_calls_total{op=\"set_org_default_access\",outcome=\"throttled\"} 2"));
    assert_non_null(
        strstr(text, "easgate_bridge_calls_total{op=\"set_org_default_access\",outcome=\"ok\"} 1"));
    assert_non_null(strstr(
        text,
        "easgate_commands_finished_total{type=\"org.set_default_access\",state=\"succeeded\"} 1"));
    eg_free(text);
    eg_metrics_free(m);
}

static void test_transient_errors_bounded_by_max_attempts(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 1000};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    submit(f->q, "{\"id\":\"r2\",\"type\":\"org.set_default_access\",\"level\":\"allow\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &default_opts, &w), 0);
    struct eg_cmd_record *r = wait_final(f->q, "r2");
    assert_int_equal(r->state, EG_STATE_FAILED);
    assert_int_equal(r->attempts, 4);
    assert_int_equal(atomic_load(&s.calls), 4);
    assert_string_equal(r->error_code, "throttled");
    /* The default deadline (15 min) is far away: max_attempts ended it, and the message says so. */
    assert_non_null(strstr(r->error_message, "micro delay (retries stopped after 4 attempts, "));
    assert_non_null(strstr(r->error_message, "max_attempts (4) reached)"));
    eg_cmd_record_free(r);
    assert_int_equal(eg_workers_stop(w, 5000), 0);
}

/* ---- the retry deadline --------------------------------------------------------------------- */

/* Transient failures forever, max_attempts far away: the deadline ends it with the bridge's code,
 * message and Exchange detail. Each retry waits at least retry_base_ms / 2, so the number of
 * attempts is bounded by 1 + deadline / (base / 2) whatever the speed of the machine. */
static void test_deadline_ends_transient_failures(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 1000000, .transient_detail = true};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    o.max_attempts = 100;
    o.retry_base_ms = 20;
    o.retry_max_ms = 60;
    o.retry_deadline_ms = 300;
    submit(f->q, "{\"id\":\"dl1\",\"type\":\"org.set_default_access\",\"level\":\"block\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &o, &w), 0);
    struct eg_cmd_record *r = wait_final(f->q, "dl1");
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    assert_int_equal(r->state, EG_STATE_FAILED);
    assert_string_equal(r->error_code, "throttled");
    assert_int_equal(atomic_load(&s.calls), r->attempts);
    assert_true(r->attempts >= 1);
    assert_true(r->attempts <= 1 + 300 / (20 / 2));
    assert_true((unsigned)r->attempts < o.max_attempts);
    /* It stopped because the next attempt (at most retry_max_ms away) would pass the deadline. */
    assert_true(r->finished_ms + o.retry_max_ms > r->created_ms + o.retry_deadline_ms);
    assert_true(strncmp(r->error_message, "micro delay (retries stopped after ", 35) == 0);
    assert_non_null(strstr(r->error_message, " after acceptance: the next attempt would start "
                                             "after the retry deadline of 300 ms)"));
    char n_attempts[64];
    snprintf(n_attempts, sizeof n_attempts, "after %d attempt%s,", r->attempts,
             r->attempts == 1 ? "" : "s");
    assert_non_null(strstr(r->error_message, n_attempts));
    assert_non_null(r->error_detail);
    assert_non_null(strstr(r->error_detail, "ServerBusyException"));
    assert_non_null(strstr(r->error_detail, "cannot service this request"));
    eg_cmd_record_free(r);
}

/* The console changes the deadline at run time (retry.deadline_ms): a pool started with a far
 * deadline ends a failing command by the new, short one; 0 restores the start-up value. */
static void test_deadline_set_at_run_time(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 1000000, .transient_detail = true};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    o.max_attempts = 1000;
    o.retry_base_ms = 20;
    o.retry_max_ms = 60;
    o.retry_deadline_ms = 7LL * 24 * 3600 * 1000;
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &o, &w), 0);
    assert_int_equal(eg_workers_set_retry_deadline(w, 999), EG_EINVAL); /* below the minimum */
    assert_int_equal(eg_workers_set_retry_deadline(NULL, 5000), EG_EINVAL);
    assert_int_equal(eg_workers_set_retry_deadline(w, 1000), 0);
    submit(f->q, "{\"id\":\"rt1\",\"type\":\"org.set_default_access\",\"level\":\"block\"}");
    eg_workers_notify(w);
    struct eg_cmd_record *r = wait_final(f->q, "rt1");
    assert_int_equal(r->state, EG_STATE_FAILED);
    assert_true((unsigned)r->attempts < o.max_attempts);
    assert_non_null(strstr(r->error_message, "the retry deadline of 1.0 s)"));
    eg_cmd_record_free(r);
    /* Back to the start-up deadline: the next failure is ended by max_attempts instead. */
    assert_int_equal(eg_workers_set_retry_deadline(w, 0), 0);
    assert_int_equal(eg_workers_stop(w, 5000), 0);
}

/* A delay named by Exchange that would pass the deadline ends the retries at once: no sleeping
 * past it, one attempt only, whatever max_attempts allows. */
static void test_named_delay_past_deadline_stops_at_once(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 1000, .retry_after_ms = 3600 * 1000};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    o.max_attempts = 50;
    o.retry_deadline_ms = 60 * 1000;
    submit(f->q, "{\"id\":\"dl2\",\"type\":\"org.set_default_access\",\"level\":\"allow\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &o, &w), 0);
    struct eg_cmd_record *r = wait_final(f->q, "dl2");
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    assert_int_equal(r->state, EG_STATE_FAILED);
    assert_int_equal(r->attempts, 1);
    assert_int_equal(atomic_load(&s.calls), 1);
    assert_int_equal(r->next_attempt_ms, 0); /* never scheduled a retry */
    assert_string_equal(r->error_code, "throttled");
    assert_non_null(strstr(r->error_message, "micro delay (retries stopped after 1 attempt, "));
    assert_non_null(strstr(r->error_message,
                           "Exchange asked to wait 60.0 min, past the retry deadline of 60.0 s)"));
    eg_cmd_record_free(r);
}

/* A named delay that fits is honoured, and a success before the deadline is a success. */
static void test_success_before_deadline(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 2, .retry_after_ms = 30};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    o.retry_deadline_ms = 60 * 1000;
    submit(f->q, "{\"id\":\"dl3\",\"type\":\"org.set_default_access\",\"level\":\"block\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &o, &w), 0);
    struct eg_cmd_record *r = wait_final(f->q, "dl3");
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    assert_int_equal(r->state, EG_STATE_SUCCEEDED);
    assert_int_equal(r->attempts, 3);
    assert_int_equal(atomic_load(&s.calls), 3);
    assert_null(r->error_code);
    eg_cmd_record_free(r);
}

/* The deadline counts from acceptance, which the journal keeps: a command accepted longer than
 * the deadline ago (here across a close and reopen of the journal, as at a restart) gets its
 * first attempt, and a transient failure of it is final at once. */
static void test_deadline_counts_from_acceptance_across_restart(void **state)
{
    struct fixture *f = *state;
    struct script s = {.transient_failures = 1000};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    o.max_attempts = 50;
    o.retry_deadline_ms = 100;
    submit(f->q, "{\"id\":\"dl4\",\"type\":\"org.set_default_access\",\"level\":\"block\"}");
    eg_queue_close(f->q);
    f->q = NULL;
    usleep(150 * 1000); /* longer than the deadline, so any retry would start after it */
    assert_int_equal(eg_queue_open(f->dir, &f->q), 0);
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &o, &w), 0);
    struct eg_cmd_record *r = wait_final(f->q, "dl4");
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    assert_int_equal(r->state, EG_STATE_FAILED);
    assert_int_equal(r->attempts, 1);
    assert_int_equal(atomic_load(&s.calls), 1);
    assert_true(r->finished_ms - r->created_ms >= 100);
    assert_non_null(strstr(r->error_message, "retries stopped after 1 attempt, "));
    assert_non_null(strstr(r->error_message, "the retry deadline of 100 ms)"));
    eg_cmd_record_free(r);
}

static void test_permanent_error_fails_at_once_with_exchange_detail(void **state)
{
    struct fixture *f = *state;
    struct script s = {.permanent = true};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    submit(f->q, "{\"id\":\"p1\",\"type\":\"device.block\",\"mailbox\":\"gone@x.example\",\"device_"
                 "id\":\"D\"}");
    submit(f->q, "{\"id\":\"p2\",\"type\":\"device.allow\",\"mailbox\":\"gone@x.example\",\"device_"
                 "id\":\"E\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &default_opts, &w), 0);
    const char *ids[] = {"p1", "p2"};
    for (int i = 0; i < 2; i++) {
        struct eg_cmd_record *r = wait_final(f->q, ids[i]);
        assert_int_equal(r->state, EG_STATE_FAILED);
        assert_int_equal(r->attempts, 1);
        assert_string_equal(r->error_code, "mailbox_not_found");
        assert_non_null(strstr(r->error_detail, "ManagementObjectNotFoundException"));
        eg_cmd_record_free(r);
    }
    assert_int_equal(atomic_load(&s.calls), 1); /* both in one coalesced call */
    assert_int_equal(eg_workers_stop(w, 5000), 0);
}

static void test_stop_drains_in_flight_call(void **state)
{
    struct fixture *f = *state;
    struct script s = {.sleep_ms = 300};
    struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    submit(f->q, "{\"id\":\"d1\",\"type\":\"org.set_default_access\",\"level\":\"quarantine\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &default_opts, &w), 0);
    while (eg_workers_in_flight(w) == 0)
        usleep(1000);
    assert_int_equal(eg_workers_stop(w, 5000), 0);
    struct eg_cmd_record *r = NULL;
    assert_int_equal(eg_queue_get(f->q, "d1", &r), 0);
    assert_int_equal(r->state, EG_STATE_SUCCEEDED);
    eg_cmd_record_free(r);
}

static void test_stop_times_out_on_a_stuck_call(void **state)
{
    struct fixture *f = *state;
    static struct script s = {.sleep_ms = 800};
    static struct eg_bridge b = {&script_ops, &s};
    struct eg_workers *w = NULL;
    submit(f->q, "{\"id\":\"s1\",\"type\":\"org.set_default_access\",\"level\":\"quarantine\"}");
    assert_int_equal(eg_workers_start(f->q, &b, NULL, &default_opts, &w), 0);
    while (eg_workers_in_flight(w) == 0)
        usleep(1000);
    assert_int_equal(eg_workers_stop(w, 50), EG_ETIMEDOUT);
    /* The pool is still alive; a second stop with time enough completes it. */
    assert_int_equal(eg_workers_stop(w, 5000), 0);
}

static void test_start_rejects_bad_options(void **state)
{
    struct fixture *f = *state;
    struct eg_bridge *b = NULL;
    struct eg_workers *w = NULL;
    struct eg_workers_opts o = default_opts;
    assert_int_equal(eg_bridge_dryrun_new(0, &b), 0);
    o.threads = 0;
    assert_int_equal(eg_workers_start(f->q, b, NULL, &o, &w), EG_EINVAL);
    o = default_opts;
    o.max_coalesce = 0;
    assert_int_equal(eg_workers_start(f->q, b, NULL, &o, &w), EG_EINVAL);
    o = default_opts;
    o.retry_max_ms = 1;
    assert_int_equal(eg_workers_start(f->q, b, NULL, &o, &w), EG_EINVAL);
    o = default_opts;
    o.retry_deadline_ms = -1;
    assert_int_equal(eg_workers_start(f->q, b, NULL, &o, &w), EG_EINVAL);
    o.retry_deadline_ms = EG_MAX_RETRY_DEADLINE_MS + 1;
    assert_int_equal(eg_workers_start(f->q, b, NULL, &o, &w), EG_EINVAL);
    assert_null(w);
    eg_bridge_free(b);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coalesce_later_wins),
        cmocka_unit_test(test_coalesce_declaration_resets),
        cmocka_unit_test(test_coalesce_refuses_mixed_input),
        cmocka_unit_test_setup_teardown(test_pool_coalesces_one_call_per_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_without_coalescing_same_outcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_errors_retry_then_succeed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_errors_bounded_by_max_attempts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_permanent_error_fails_at_once_with_exchange_detail,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_drains_in_flight_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_times_out_on_a_stuck_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_rejects_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_ends_transient_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_delay_past_deadline_stops_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_success_before_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_set_at_run_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_counts_from_acceptance_across_restart, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
