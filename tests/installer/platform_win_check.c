/* platform_win_check.c - common/platform.h's Windows semantics, checked under wine64 by
 * tests/installer/test_windows.sh (cross-compiled with mingw-w64, force-including platform.h as
 * the Windows build does). Usage: platform_win_check.exe DIR (an empty scratch directory).
 * Prints one "ok"/"FAIL" line per check; exit status 0 when all pass.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int failed;

static void check(int cond, const char *what)
{
    printf("%s - platform: %s\n", cond ? "ok  " : "FAIL", what);
    if (!cond)
        failed = 1;
}

static void *poster(void *arg)
{
    (void)arg;
    struct timespec d = {0, 50 * 1000 * 1000};
    nanosleep(&d, NULL);
    eg_platform_post_signal(SIGHUP);
    eg_platform_post_signal(SIGTERM);
    return NULL;
}

int main(int argc, char **argv)
{
    char a[512], b[512], buf[64];
    if (argc != 2)
        return 2;
    snprintf(a, sizeof a, "%s/a.bin", argv[1]);
    snprintf(b, sizeof b, "%s/b.bin", argv[1]);

    /* open() is binary: "\n" and Ctrl-Z survive a round trip */
    const char data[] = "x\ny\r\n\x1az";
    int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    check(fd >= 0 && write(fd, data, sizeof data) == (int)sizeof data && fsync(fd) == 0 &&
              close(fd) == 0,
          "open/write/fsync/close");
    fd = open(a, O_RDONLY | O_CLOEXEC);
    int n = fd >= 0 ? (int)read(fd, buf, sizeof buf) : -1;
    check(n == (int)sizeof data && memcmp(buf, data, sizeof data) == 0, "files are binary");
    check(pread(fd, buf, 3, 2) == 3 && memcmp(buf, "y\r\n", 3) == 0, "pread at an offset");
    close(fd);

    /* stat: no group/other bits, so "0600 or stricter" checks pass */
    struct stat st;
    check(stat(a, &st) == 0 && (st.st_mode & 077) == 0 && S_ISREG(st.st_mode),
          "stat reports owner bits only");

    /* rename replaces an existing file (atomic replacement) */
    fd = open(b, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    close(fd);
    check(rename(a, b) == 0 && stat(b, &st) == 0 && st.st_size == (long)sizeof data &&
              stat(a, &st) != 0,
          "rename over an existing file");

    /* mkdir with a private mode, then fsync of the directory */
    char d[512];
    snprintf(d, sizeof d, "%s/private", argv[1]);
    check(mkdir(d, 0700) == 0 && stat(d, &st) == 0 && S_ISDIR(st.st_mode), "mkdir 0700");
    fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(fd >= 0 && fsync(fd) == 0 && close(fd) == 0, "fsync of a directory");
    check(open(b, O_RDONLY | O_DIRECTORY) < 0, "O_DIRECTORY refuses a file");

    /* randomness */
    uint8_t r1[32] = {0}, r2[32] = {0};
    check(getrandom(r1, sizeof r1, 0) == 32 && getrandom(r2, sizeof r2, 0) == 32 &&
              memcmp(r1, r2, 32) != 0,
          "getrandom");
    int in_range = 1;
    for (int i = 0; i < 1000; i++)
        in_range &= arc4random_uniform(7) < 7;
    check(in_range, "arc4random_uniform");

    /* strings and time */
    check(strcasestr("Hello World", "WORLD") != NULL && !strcasestr("abc", "d"), "strcasestr");
    const char *h = "abcabc";
    check(memmem(h, 6, "ca", 2) == h + 2 && !memmem(h, 6, "cc", 2), "memmem");
    const char *s = "a/b/c";
    check(memrchr(s, '/', 5) == s + 3, "memrchr");
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime("Wed, 02 Dec 2026 13:45:10 GMT", "%a, %d %b %Y %H:%M:%S GMT", &tm);
    check(end && !*end && timegm(&tm) == (time_t)1796219110, "strptime + timegm");
    struct tm g;
    time_t t0 = 0;
    check(gmtime_r(&t0, &g) && g.tm_year == 70, "gmtime_r");

    /* condition variables with CLOCK_MONOTONIC deadlines really wait */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    check(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0, "condattr CLOCK_MONOTONIC");
    pthread_cond_init(&c, &ca);
    struct timespec t1, t2, dl;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    dl = t1;
    dl.tv_nsec += 200 * 1000 * 1000;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m);
    int w = pthread_cond_timedwait(&c, &m, &dl);
    pthread_mutex_unlock(&m);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    long ms = (long)((t2.tv_sec - t1.tv_sec) * 1000 + (t2.tv_nsec - t1.tv_nsec) / 1000000);
    check(w == ETIMEDOUT && ms >= 150, "cond_timedwait waits until a monotonic deadline");

    /* sigwait takes posted signals, in the set only, lowest first */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_t th;
    pthread_create(&th, NULL, poster, NULL);
    int sig1 = 0, sig2 = 0;
    sigwait(&set, &sig1);
    if (sig1 == SIGHUP)
        sigwait(&set, &sig2);
    pthread_join(th, NULL);
    check(sig1 == SIGHUP && sig2 == SIGTERM, "sigwait takes posted SIGHUP then SIGTERM");
    check(strcmp(strsignal(SIGTERM), "Terminated") == 0, "strsignal");

    return failed;
}
