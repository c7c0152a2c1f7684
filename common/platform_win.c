/* platform_win.c - the POSIX calls the code base uses, on Windows (common/platform.h).
 *
 * Built only for Windows (CMakeLists.txt leaves *_win.c out elsewhere). Nothing here logs.
 */
#include "common/platform.h"

#include <windows.h>

#include <aclapi.h>
#include <bcrypt.h>
#include <ctype.h>
#include <sddl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <winsock2.h>

/* The calls below are the CRT's own, not the macros of platform.h. */
#undef open
#undef close
#undef rename
#undef mkdir
#undef stat
#undef fstat

/* --- process start: sockets, binary files --------------------------------------------------- */

__attribute__((constructor)) static void platform_init(void)
{
    WSADATA wsa;
    (void)WSAStartup(MAKEWORD(2, 2), &wsa);
    _fmode = _O_BINARY; /* fopen() without "b" too: no CRLF translation anywhere */
}

/* --- errors ------------------------------------------------------------------------------------
 */

static void set_errno_from_win(DWORD e)
{
    switch (e) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
        errno = ENOENT;
        break;
    case ERROR_ALREADY_EXISTS:
    case ERROR_FILE_EXISTS:
        errno = EEXIST;
        break;
    case ERROR_ACCESS_DENIED:
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
        errno = EACCES;
        break;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        errno = ENOMEM;
        break;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
        errno = ENOSPC;
        break;
    case ERROR_DIR_NOT_EMPTY:
        errno = ENOTEMPTY;
        break;
    case ERROR_INVALID_HANDLE:
        errno = EBADF;
        break;
    default:
        errno = EIO;
        break;
    }
}

/* --- files ------------------------------------------------------------------------------------ */

int eg_win_open(const char *path, int flags, ...)
{
    int mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, int);
        va_end(ap);
    }
    if (flags & O_DIRECTORY) {
        /* Only ever opened to fsync a directory: check it is one, hand out a placeholder. */
        DWORD a = GetFileAttributesA(path);
        if (a == INVALID_FILE_ATTRIBUTES) {
            set_errno_from_win(GetLastError());
            return -1;
        }
        if (!(a & FILE_ATTRIBUTE_DIRECTORY)) {
            errno = ENOTDIR;
            return -1;
        }
        return _open("NUL", _O_RDONLY | _O_BINARY | _O_NOINHERIT);
    }
    /* POSIX modes to the CRT's: read always, write unless the owner may not write. */
    int pmode = _S_IREAD | ((mode & 0200) || !(flags & O_CREAT) ? _S_IWRITE : 0);
    return _open(path, (flags & ~O_DIRECTORY) | _O_BINARY, pmode);
}

int eg_win_close(int fd)
{
    if (fd >= 0 && fd < 2048 && _get_osfhandle(fd) != (intptr_t)INVALID_HANDLE_VALUE)
        return _close(fd);
    if (closesocket((SOCKET)fd) != 0) {
        errno = EBADF;
        return -1;
    }
    return 0;
}

int eg_win_fsync(int fd)
{
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    if (h == INVALID_HANDLE_VALUE) {
        errno = EBADF;
        return -1;
    }
    if (GetFileType(h) != FILE_TYPE_DISK)
        return 0; /* the O_DIRECTORY placeholder (NUL) */
    if (!FlushFileBuffers(h)) {
        set_errno_from_win(GetLastError());
        return -1;
    }
    return 0;
}

int eg_win_ftruncate(int fd, int64_t size)
{
    errno_t e = _chsize_s(fd, size);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

ssize_t eg_win_pread(int fd, void *buf, size_t n, int64_t off)
{
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    OVERLAPPED ov = {0};
    DWORD got = 0;
    if (h == INVALID_HANDLE_VALUE || off < 0) {
        errno = h == INVALID_HANDLE_VALUE ? EBADF : EINVAL;
        return -1;
    }
    if (n > 0x40000000)
        n = 0x40000000;
    ov.Offset = (DWORD)((uint64_t)off & 0xffffffffu);
    ov.OffsetHigh = (DWORD)((uint64_t)off >> 32);
    if (!ReadFile(h, buf, (DWORD)n, &got, &ov)) {
        DWORD e = GetLastError();
        if (e == ERROR_HANDLE_EOF)
            return 0;
        set_errno_from_win(e);
        return -1;
    }
    return (ssize_t)got;
}

int eg_win_rename(const char *from, const char *to)
{
    if (!MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) {
        set_errno_from_win(GetLastError());
        return -1;
    }
    return 0;
}

int eg_win_mkdir(const char *path, int mode)
{
    if (mode & 077)
        return _mkdir(path);
    /* Private directory: protected DACL, inherited by what is created inside. */
    SECURITY_ATTRIBUTES sa = {.nLength = sizeof sa, .bInheritHandle = FALSE};
    PSECURITY_DESCRIPTOR sd = NULL;
    if (!ConvertStringSecurityDescriptorToSecurityDescriptorA(
            "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)", SDDL_REVISION_1, &sd, NULL))
        return _mkdir(path);
    sa.lpSecurityDescriptor = sd;
    BOOL ok = CreateDirectoryA(path, &sa);
    DWORD e = GetLastError();
    LocalFree(sd);
    if (!ok) {
        set_errno_from_win(e);
        return -1;
    }
    return 0;
}

/* No mode bits on Windows: access is the DACL's. Report the owner's bits only. */
int eg_win_stat(const char *path, struct stat *st)
{
    int r = stat(path, st);
    if (r == 0)
        st->st_mode &= (unsigned short)~077;
    return r;
}

int eg_win_fstat(int fd, struct stat *st)
{
    int r = fstat(fd, st);
    if (r == 0)
        st->st_mode &= (unsigned short)~077;
    return r;
}

/* --- randomness, strings, time ------------------------------------------------------------- */

ssize_t eg_win_getrandom(void *buf, size_t n, unsigned flags)
{
    (void)flags;
    uint8_t *p = buf;
    size_t left = n;
    while (left) {
        ULONG chunk = left > 0x10000000 ? 0x10000000 : (ULONG)left;
        if (BCryptGenRandom(NULL, p, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) {
            errno = EIO;
            return -1;
        }
        p += chunk;
        left -= chunk;
    }
    return (ssize_t)n;
}

uint32_t arc4random_uniform(uint32_t upper)
{
    if (upper < 2)
        return 0;
    uint32_t min = (uint32_t)(-upper) % upper, r = 0; /* reject below 2^32 mod upper */
    do {
        if (eg_win_getrandom(&r, sizeof r, 0) < 0)
            abort();
    } while (r < min);
    return r % upper;
}

char *strcasestr(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    if (!nl)
        return (char *)hay;
    for (; *hay; hay++)
        if (_strnicmp(hay, needle, nl) == 0)
            return (char *)hay;
    return NULL;
}

void *memmem(const void *hay, size_t hl, const void *needle, size_t nl)
{
    const unsigned char *h = hay;
    if (!nl)
        return (void *)hay;
    if (nl > hl)
        return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == *(const unsigned char *)needle && memcmp(h + i, needle, nl) == 0)
            return (void *)(h + i);
    return NULL;
}

void *memrchr(const void *s, int c, size_t n)
{
    const unsigned char *p = s;
    while (n--)
        if (p[n] == (unsigned char)c)
            return (void *)(p + n);
    return NULL;
}

static const char *const wdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};

static const char *parse_num(const char *s, int digits, int lo, int hi, int *out)
{
    int v = 0, k = 0;
    while (k < digits && isdigit((unsigned char)s[k]))
        v = v * 10 + (s[k++] - '0');
    if (k == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return s + k;
}

static const char *parse_name(const char *s, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (_strnicmp(s, names[i], 3) == 0) {
            *out = i;
            return s + 3;
        }
    return NULL;
}

char *strptime(const char *s, const char *fmt, struct tm *tm)
{
    for (; *fmt && s; fmt++) {
        if (*fmt != '%') {
            if (isspace((unsigned char)*fmt)) {
                while (isspace((unsigned char)*s))
                    s++;
            } else if (*s++ != *fmt) {
                return NULL;
            }
            continue;
        }
        int v = 0;
        switch (*++fmt) {
        case 'a':
            s = parse_name(s, wdays, 7, &tm->tm_wday);
            break;
        case 'b':
            s = parse_name(s, months, 12, &tm->tm_mon);
            break;
        case 'd':
            s = parse_num(s, 2, 1, 31, &tm->tm_mday);
            break;
        case 'Y':
            if ((s = parse_num(s, 4, 0, 9999, &v)))
                tm->tm_year = v - 1900;
            break;
        case 'H':
            s = parse_num(s, 2, 0, 23, &tm->tm_hour);
            break;
        case 'M':
            s = parse_num(s, 2, 0, 59, &tm->tm_min);
            break;
        case 'S':
            s = parse_num(s, 2, 0, 60, &tm->tm_sec);
            break;
        case '%':
            if (*s++ != '%')
                return NULL;
            break;
        default:
            return NULL; /* not needed by the code base */
        }
    }
    return (char *)s;
}

const char *eg_win_strsignal(int sig)
{
    switch (sig) {
    case SIGINT:
        return "Interrupt";
    case SIGTERM:
        return "Terminated";
    case SIGHUP:
        return "Hangup";
    case SIGPIPE:
        return "Broken pipe";
    default:
        return "Unknown signal";
    }
}

/* --- signals -----------------------------------------------------------------------------------
 */

static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sig_cond = PTHREAD_COND_INITIALIZER;
static sigset_t sig_pending;

void eg_platform_post_signal(int sig)
{
    if (sig <= 0 || sig >= 64)
        return;
    pthread_mutex_lock(&sig_lock);
    sig_pending |= (sigset_t)1 << sig;
    pthread_cond_broadcast(&sig_cond);
    pthread_mutex_unlock(&sig_lock);
}

int eg_win_sigwait(const sigset_t *set, int *sig)
{
    pthread_mutex_lock(&sig_lock);
    while (!(sig_pending & *set))
        pthread_cond_wait(&sig_cond, &sig_lock);
    int n = 1;
    while (!((sig_pending & *set) >> n & 1))
        n++;
    sig_pending &= ~((sigset_t)1 << n);
    pthread_mutex_unlock(&sig_lock);
    *sig = n;
    return 0;
}

static BOOL WINAPI console_handler(DWORD type)
{
    switch (type) {
    case CTRL_C_EVENT:
        eg_platform_post_signal(SIGINT);
        return TRUE;
    case CTRL_BREAK_EVENT:
    case CTRL_CLOSE_EVENT:
    case CTRL_LOGOFF_EVENT:
    case CTRL_SHUTDOWN_EVENT:
        eg_platform_post_signal(SIGTERM);
        return TRUE; /* for CLOSE/LOGOFF/SHUTDOWN Windows ends the process a few seconds later */
    default:
        return FALSE;
    }
}

void eg_platform_console_signals(void)
{
    SetConsoleCtrlHandler(console_handler, TRUE);
}

/* --- condition variables -----------------------------------------------------------------------
 */

int eg_win_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abs_mono)
{
    struct timespec now, rel = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = ((int64_t)abs_mono->tv_sec - (int64_t)now.tv_sec) * 1000000000LL +
                 ((int64_t)abs_mono->tv_nsec - (int64_t)now.tv_nsec);
    if (ns > 0) {
        rel.tv_sec = (time_t)(ns / 1000000000LL);
        rel.tv_nsec = (long)(ns % 1000000000LL);
    }
    return pthread_cond_timedwait_relative_np(c, m, &rel);
}
