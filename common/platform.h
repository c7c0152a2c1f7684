/* platform.h - the operating-system differences, in one place (Windows port, issue 10).
 *
 * The code base is written against POSIX (Linux first). On Linux this header declares nothing and
 * no source includes it. For Windows (mingw-w64 with winpthreads) the build force-includes it in
 * every translation unit (`-include common/platform.h`, CMakeLists.txt WIN32 branch), and
 * common/platform_win/ holds stand-ins for the POSIX-only headers (<arpa/inet.h>,
 * <netinet/in.h>, <sys/socket.h>, <sys/random.h>), so the POSIX sources build unchanged. What it
 * maps, with the Windows semantics chosen (implemented in common/platform_win.c):
 *
 *   open()        always binary (no CRLF translation); O_CLOEXEC -> not inherited; O_NOFOLLOW is
 *                 ignored (no symlinks are created by us); O_DIRECTORY opens a placeholder so that
 *                 "fsync the directory" succeeds (NTFS journals directory entries itself).
 *   close()       a CRT descriptor -> _close; anything else is taken for a Winsock socket ->
 *                 closesocket (sockets live in int variables as on POSIX).
 *   fsync()       FlushFileBuffers on files; 0 on the O_DIRECTORY placeholder.
 *   fdatasync()   as fsync().  ftruncate() -> _chsize_s.  pread() -> ReadFile at an offset.
 *   rename()      MoveFileEx(REPLACE_EXISTING | WRITE_THROUGH): atomic replace as on POSIX.
 *   mkdir(p, m)   a mode without group/other bits (0700) creates the directory with a protected
 *                 DACL: SYSTEM, Administrators and the creator's owner rights only.
 *   stat/fstat    st_mode without group/other bits: Windows has no mode bits, access is the
 *                 DACL's (see mkdir); the daemon's "0600 or stricter" checks then pass.
 *   fchmod()      no-op (0).  chmod() -> _chmod.
 *   getrandom()   BCryptGenRandom (system RNG); never short, never EINTR.
 *   arc4random_uniform(), strcasestr(), memmem(), memrchr(), strptime() (the subset used:
 *                 %a %d %b %Y %H %M %S and literal text), timegm() -> _mkgmtime, gmtime_r,
 *                 strsignal().
 *   signals       sigset_t/sigemptyset/sigaddset/pthread_sigmask (no-op) and sigwait(): the
 *                 daemon's main thread waits in sigwait() for a signal posted with
 *                 eg_platform_post_signal() - by the console Ctrl handler (Ctrl-C -> SIGINT,
 *                 Ctrl-Break/close/logoff/shutdown -> SIGTERM) or the service control handler
 *                 (agent/service_win.c: STOP/SHUTDOWN/PRESHUTDOWN -> SIGTERM,
 *                 PARAMCHANGE -> SIGHUP). SIGHUP and SIGPIPE are defined (never raised by Windows).
 *   condition variables  every pthread_cond in the code base is CLOCK_MONOTONIC; winpthreads
 *                 measures absolute timeouts on the wall clock, so pthread_cond_timedwait() is
 *                 mapped to a relative wait computed from CLOCK_MONOTONIC, and
 *                 pthread_condattr_setclock() accepts CLOCK_MONOTONIC.
 *   environ       the CRT's _environ.
 *   libmicrohttpd transport/server.c's epoll thread is MHD_USE_AUTO_INTERNAL_THREAD
 *                 (EG_MHD_INTERNAL_THREAD).
 */
#ifndef EG_PLATFORM_H
#define EG_PLATFORM_H

#ifdef _WIN32

#ifndef _POSIX_THREAD_SAFE_FUNCTIONS
#define _POSIX_THREAD_SAFE_FUNCTIONS 200112L /* gmtime_r, localtime_r from <time.h> */
#endif

/* Every system header whose names are mapped below comes first, so that the macros do not
 * rewrite its declarations. */
#include <direct.h>
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* --- files ------------------------------------------------------------------------------------ */
#ifndef O_CLOEXEC
#define O_CLOEXEC _O_NOINHERIT
#endif
#ifndef O_NOFOLLOW
#define O_NOFOLLOW 0
#endif
#ifndef O_NOCTTY
#define O_NOCTTY 0
#endif
#ifndef O_NONBLOCK
#define O_NONBLOCK 0 /* regular files only: never blocks */
#endif
#ifndef O_DIRECTORY
#define O_DIRECTORY 0x01000000
#endif

int eg_win_open(const char *path, int flags, ...);
int eg_win_close(int fd);
int eg_win_fsync(int fd);
int eg_win_ftruncate(int fd, int64_t size);
ssize_t eg_win_pread(int fd, void *buf, size_t n, int64_t off);
int eg_win_rename(const char *from, const char *to);
int eg_win_mkdir(const char *path, int mode);
int eg_win_stat(const char *path, struct stat *st);
int eg_win_fstat(int fd, struct stat *st);

#define open(...)          eg_win_open(__VA_ARGS__)
#define close(fd)          eg_win_close(fd)
#define fsync(fd)          eg_win_fsync(fd)
#define fdatasync(fd)      eg_win_fsync(fd)
#define ftruncate(fd, n)   eg_win_ftruncate((fd), (int64_t)(n))
#define pread(fd, b, n, o) eg_win_pread((fd), (b), (n), (int64_t)(o))
#define rename(a, b)       eg_win_rename((a), (b))
#define mkdir(p, m)        eg_win_mkdir((p), (int)(m))
#define stat(p, b)         eg_win_stat((p), (b))
#define fstat(fd, b)       eg_win_fstat((fd), (b))
static inline int eg_win_fchmod(int fd, int mode)
{
    (void)fd;
    (void)mode;
    return 0;
}
#define fchmod(fd, m) eg_win_fchmod((fd), (int)(m))

/* --- randomness, strings, time ------------------------------------------------------------- */
#define GRND_NONBLOCK 1
ssize_t eg_win_getrandom(void *buf, size_t n, unsigned flags);
#define getrandom(b, n, f) eg_win_getrandom((b), (n), (f))
uint32_t arc4random_uniform(uint32_t upper);
char *strcasestr(const char *hay, const char *needle);
void *memmem(const void *hay, size_t hl, const void *needle, size_t nl);
void *memrchr(const void *s, int c, size_t n);
char *strptime(const char *s, const char *fmt, struct tm *tm);
#define timegm(tm) _mkgmtime(tm)
const char *eg_win_strsignal(int sig);
#define strsignal(sig) eg_win_strsignal(sig)

/* --- signals: the daemon's synchronous signal loop ---------------------------------------------
 */
#ifndef SIGHUP
#define SIGHUP 1
#endif
#ifndef SIGPIPE
#define SIGPIPE 13
#endif
typedef _sigset_t sigset_t;
static inline int eg_win_sigemptyset(sigset_t *s)
{
    *s = 0;
    return 0;
}
static inline int eg_win_sigaddset(sigset_t *s, int n)
{
    *s |= (sigset_t)1 << n;
    return 0;
}
static inline int eg_win_sigismember(const sigset_t *s, int n)
{
    return (int)((*s >> n) & 1);
}
#define sigemptyset(s)    eg_win_sigemptyset(s)
#define sigaddset(s, n)   eg_win_sigaddset((s), (n))
#define sigismember(s, n) eg_win_sigismember((s), (n))
/* winpthreads defines pthread_sigmask() as 0: nothing to block, signals are never asynchronous. */
int eg_win_sigwait(const sigset_t *set, int *sig);
#define sigwait(set, sig) eg_win_sigwait((set), (sig))

/* Post sig (SIGINT, SIGTERM, SIGHUP) to the process: a thread in sigwait() whose set has it
 * returns it; otherwise it stays pending until one does. Callable from any thread, including
 * console and service control handlers. */
void eg_platform_post_signal(int sig);

/* Install the console control handler (Ctrl-C -> SIGINT; Ctrl-Break, close, logoff, shutdown ->
 * SIGTERM) for a daemon run in a console. */
void eg_platform_console_signals(void);

/* --- condition variables: CLOCK_MONOTONIC deadlines --------------------------------------------
 */
int eg_win_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abs_mono);
#define pthread_cond_timedwait(c, m, t) eg_win_cond_timedwait((c), (m), (t))
static inline int eg_win_condattr_setclock(pthread_condattr_t *a, clockid_t clk)
{
    (void)a;
    return clk == CLOCK_MONOTONIC ? 0 : EINVAL;
}
#define pthread_condattr_setclock(a, clk) eg_win_condattr_setclock((a), (clk))

#define environ _environ

/* libmicrohttpd's internal thread for transport/server.c: no epoll on Windows, let it pick
 * (WSAPoll or select). */
#define EG_MHD_INTERNAL_THREAD MHD_USE_AUTO_INTERNAL_THREAD

#endif /* _WIN32 */
#endif
