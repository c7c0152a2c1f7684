/* test_notify.c - sd_notify messages as systemd receives them (a datagram socket named by
 * NOTIFY_SOCKET), status sanitising and limits, and the watchdog thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/notify.h"
#include "common/alloc.h"
#include "common/limits.h"

struct fx {
    char dir[64];
    char path[96];
    int fd;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 10}; /* a bound against hanging, not a timing assertion */

    snprintf(f->dir, sizeof f->dir, "/tmp/eg-test-notify.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/notify", f->dir);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", f->path, 1);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    free(f);
    return 0;
}

/* The next datagram as a string; flags MSG_DONTWAIT returns -1 with EAGAIN when none. */
static ssize_t next_msg(struct fx *f, char *buf, size_t size, int flags)
{
    ssize_t n = recv(f->fd, buf, size - 1, flags);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

static void assert_no_msg(struct fx *f)
{
    char buf[64];
    assert_int_equal(next_msg(f, buf, sizeof buf, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void test_no_socket_is_a_noop(void **state)
{
    struct eg_notify_watchdog *w = (void *)1;
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "100000", 1);
    assert_int_equal(eg_notify_ready("up %d", 1), 0);
    assert_int_equal(eg_notify_status("x"), 0);
    assert_int_equal(eg_notify_stopping(1000), 0);
    /* Without the socket sd_watchdog_enabled still reads WATCHDOG_USEC; pinging is harmless. */
    assert_int_equal(eg_notify_watchdog_start(NULL, NULL, &w), 0);
    eg_notify_watchdog_stop(w);
    unsetenv("WATCHDOG_USEC");
    assert_int_equal(eg_notify_watchdog_start(NULL, NULL, &w), 0);
    assert_null(w);
    assert_int_equal(eg_notify_watchdog_interval_us(NULL), 0);
    eg_notify_watchdog_stop(NULL);
}

static void test_ready_and_status(void **state)
{
    struct fx *f = *state;
    char buf[1024];
    assert_int_equal(eg_notify_ready("listening on %s port %u", "127.0.0.1", 9090u), 0);
    assert_true(next_msg(f, buf, sizeof buf, 0) > 0);
    assert_string_equal(buf, "READY=1\nSTATUS=listening on 127.0.0.1 port 9090");
    assert_int_equal(eg_notify_status("reloaded %s", "TLS"), 0);
    assert_true(next_msg(f, buf, sizeof buf, 0) > 0);
    assert_string_equal(buf, "STATUS=reloaded TLS");
    assert_no_msg(f);
}

static void test_status_cannot_inject_fields(void **state)
{
    struct fx *f = *state;
    char buf[1024];
    assert_int_equal(eg_notify_status("a\nREADY=1\tb\x7f"), 0);
    assert_true(next_msg(f, buf, sizeof buf, 0) > 0);
    assert_string_equal(buf, "STATUS=a READY=1 b ");
}

static void test_status_limit(void **state)
{
    struct fx *f = *state;
    char text[EG_MAX_NOTIFY_STATUS_BYTES + 2], buf[EG_MAX_NOTIFY_STATUS_BYTES + 64];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0'; /* one over the limit */
    assert_int_equal(eg_notify_status("%s", text), EG_ELIMIT);
    assert_int_equal(eg_notify_ready("%s", text), EG_ELIMIT);
    assert_no_msg(f);
    text[EG_MAX_NOTIFY_STATUS_BYTES] = '\0'; /* exactly the limit */
    assert_int_equal(eg_notify_ready("%s", text), 0);
    assert_int_equal(next_msg(f, buf, sizeof buf, 0),
                     (ssize_t)(strlen("READY=1\nSTATUS=") + EG_MAX_NOTIFY_STATUS_BYTES));
    assert_memory_equal(buf, "READY=1\nSTATUS=xxx", 18);
}

static void test_stopping(void **state)
{
    struct fx *f = *state;
    char buf[1024];
    assert_int_equal(eg_notify_stopping(10000), 0);
    assert_true(next_msg(f, buf, sizeof buf, 0) > 0);
    assert_string_equal(buf, "STOPPING=1\nSTATUS=draining (up to 10000 ms) and stopping\n"
                             "EXTEND_TIMEOUT_USEC=20000000");
    assert_int_equal(eg_notify_stopping(0), 0);
    assert_true(next_msg(f, buf, sizeof buf, 0) > 0);
    assert_string_equal(buf, "STOPPING=1\nSTATUS=stopping");
}

static void test_send_failure(void **state)
{
    struct fx *f = *state;
    char gone[160];
    snprintf(gone, sizeof gone, "%s/no-such-socket", f->dir);
    setenv("NOTIFY_SOCKET", gone, 1);
    errno = 0;
    assert_int_equal(eg_notify_ready("x"), EG_EIO);
    assert_int_not_equal(errno, 0);
    assert_int_equal(eg_notify_stopping(5), EG_EIO);
}

static void test_watchdog_pings(void **state)
{
    struct fx *f = *state;
    struct eg_notify_watchdog *w = NULL;
    char buf[64], pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    setenv("WATCHDOG_USEC", "100000", 1);
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(eg_notify_watchdog_start(NULL, NULL, &w), 0);
    assert_non_null(w);
    assert_int_equal(eg_notify_watchdog_interval_us(w), 50000);
    for (int k = 0; k < 3; k++) {
        assert_true(next_msg(f, buf, sizeof buf, 0) > 0);
        assert_string_equal(buf, "WATCHDOG=1");
    }
    eg_notify_watchdog_stop(w);
    while (next_msg(f, buf, sizeof buf, MSG_DONTWAIT) > 0) /* sent before the stop */
        assert_string_equal(buf, "WATCHDOG=1");
    usleep(200000); /* four intervals: a thread still running would have pinged */
    assert_no_msg(f);
}

static void test_watchdog_other_pid(void **state)
{
    struct eg_notify_watchdog *w = (void *)1;
    (void)state;
    setenv("WATCHDOG_USEC", "100000", 1);
    setenv("WATCHDOG_PID", "1", 1); /* enabled for another process (e.g. our parent) */
    assert_int_equal(eg_notify_watchdog_start(NULL, NULL, &w), 0);
    assert_null(w);
}

static void test_watchdog_bad_env(void **state)
{
    struct eg_notify_watchdog *w = NULL;
    (void)state;
    setenv("WATCHDOG_USEC", "soon", 1);
    assert_int_equal(eg_notify_watchdog_start(NULL, NULL, &w), EG_EINVAL);
    assert_null(w);
    assert_int_equal(eg_notify_watchdog_start(NULL, NULL, NULL), EG_EINVAL);
}

static atomic_int alive_calls;

static bool not_alive(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&alive_calls, 1);
    return false;
}

static void test_watchdog_skips_when_not_alive(void **state)
{
    struct fx *f = *state;
    struct eg_notify_watchdog *w = NULL;
    setenv("WATCHDOG_USEC", "20000", 1);
    atomic_store(&alive_calls, 0);
    assert_int_equal(eg_notify_watchdog_start(not_alive, NULL, &w), 0);
    assert_non_null(w);
    for (int k = 0; k < 1000 && atomic_load(&alive_calls) < 3; k++)
        usleep(10000);
    eg_notify_watchdog_stop(w);
    assert_true(atomic_load(&alive_calls) >= 3);
    assert_no_msg(f); /* consulted three times, pinged never */
}

static void test_watchdog_oom(void **state)
{
    struct eg_notify_watchdog *w = NULL;
    (void)state;
    setenv("WATCHDOG_USEC", "100000", 1);
    eg_alloc_fail_after(0);
    int rc = eg_notify_watchdog_start(NULL, NULL, &w);
    eg_alloc_fail_after(-1);
    assert_int_equal(rc, EG_ENOMEM);
    assert_null(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_socket_is_a_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_cannot_inject_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_pings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_other_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_bad_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_skips_when_not_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_oom, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
