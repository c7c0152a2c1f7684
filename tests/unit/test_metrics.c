/* test_metrics.c - Prometheus text rendering of counters, gauges and histograms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "agent/metrics.h"
#include "common/alloc.h"

static void test_render_series(void **state)
{
    struct eg_metrics *m = NULL;
    char *text = NULL;
    int64_t counts[EG_STATE__COUNT] = {3, 1, 0, 7, 2, 0};
    assert_int_equal(eg_metrics_new(&m), 0);
    eg_metrics_http(m, "/api/v1/commands", 202);
    eg_metrics_http(m, "/api/v1/commands", 202);
    eg_metrics_http(m, "/api/v1/commands", 400);
    eg_metrics_command_done(m, "device.block", EG_STATE_SUCCEEDED, 0.02);
    eg_metrics_command_done(m, "device.block", EG_STATE_SUCCEEDED, 3.0);
    eg_metrics_command_done(m, "device.block", EG_STATE_FAILED, 1000.0);
    eg_metrics_bridge_call(m, "list_edit", "ok");
    assert_int_equal(eg_metrics_render(m, counts, &text), 0);
    assert_non_null(strstr(text, "# TYPE easgate_http_requests_total counter\n"));
    assert_non_null(
        strstr(text, "easgate_http_requests_total{route=\"/api/v1/commands\",status=\"202\"} 2\n"));
    assert_non_null(
        strstr(text, "easgate_http_requests_total{route=\"/api/v1/commands\",status=\"400\"} 1\n"));
    assert_non_null(strstr(text, "easgate_queue_depth{state=\"queued\"} 3\n"));
    assert_non_null(strstr(text, "easgate_queue_depth{state=\"succeeded\"} 7\n"));
    assert_non_null(strstr(text, "# TYPE easgate_command_duration_seconds histogram\n"));
    /* Buckets are cumulative: 0.02 s is in le=0.025 and above; 3 s from le=5; 1000 s only +Inf. */
    assert_non_null(strstr(
        text, "easgate_command_duration_seconds_bucket{type=\"device.block\",le=\"0.01\"} 0\n"));
    assert_non_null(strstr(
        text, "easgate_command_duration_seconds_bucket{type=\"device.block\",le=\"0.025\"} 1\n"));
    assert_non_null(strstr(
        text, "easgate_command_duration_seconds_bucket{type=\"device.block\",le=\"5\"} 2\n"));
    assert_non_null(strstr(
        text, "easgate_command_duration_seconds_bucket{type=\"device.block\",le=\"300\"} 2\n"));
    assert_non_null(strstr(
        text, "easgate_command_duration_seconds_bucket{type=\"device.block\",le=\"+Inf\"} 3\n"));
    assert_non_null(
        strstr(text, "easgate_command_duration_seconds_count{type=\"device.block\"} 3\n"));
    assert_non_null(
        strstr(text, "easgate_command_duration_seconds_sum{type=\"device.block\"} 1003.020000\n"));
    assert_non_null(strstr(
        text, "easgate_commands_finished_total{type=\"device.block\",state=\"failed\"} 1\n"));
    assert_non_null(
        strstr(text, "easgate_bridge_calls_total{op=\"list_edit\",outcome=\"ok\"} 1\n"));
    eg_free(text);

    /* Without queue counts the gauge is left out. */
    assert_int_equal(eg_metrics_render(m, NULL, &text), 0);
    assert_null(strstr(text, "easgate_queue_depth"));
    eg_free(text);
    eg_metrics_free(m);
    eg_metrics_free(NULL);
}

static void test_label_values_escaped_and_tables_bounded(void **state)
{
    struct eg_metrics *m = NULL;
    char *text = NULL, label[32];
    assert_int_equal(eg_metrics_new(&m), 0);
    eg_metrics_http(m, "a\"b\\c", 200);
    for (int i = 0; i < 400; i++) {
        snprintf(label, sizeof label, "/r%d", i);
        eg_metrics_http(m, label, 200);
    }
    assert_int_equal(eg_metrics_render(m, NULL, &text), 0);
    assert_non_null(strstr(text, "route=\"a\\\"b\\\\c\""));
    assert_non_null(strstr(text, "easgate_metrics_dropped_total 145\n"));
    eg_free(text);
    eg_metrics_free(m);
}

static void test_render_allocation_failure(void **state)
{
    struct eg_metrics *m = NULL;
    char *text = NULL;
    assert_int_equal(eg_metrics_new(&m), 0);
    eg_metrics_http(m, "/x", 200);
    eg_alloc_fail_after(0);
    assert_int_equal(eg_metrics_render(m, NULL, &text), EG_ENOMEM);
    eg_alloc_fail_after(-1);
    assert_null(text);
    eg_metrics_free(m);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_series),
        cmocka_unit_test(test_label_values_escaped_and_tables_bounded),
        cmocka_unit_test(test_render_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
