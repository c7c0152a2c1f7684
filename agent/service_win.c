/* service_win.c - the Windows build's main(): the easgate service, or the daemon in a console.
 *
 * The same easgate.exe runs
 *   - as the Windows service "easgate" when the service control manager starts it: the main
 *     thread hands itself to StartServiceCtrlDispatcherW; the service thread (service_main)
 *     reports START_PENDING, sets restart-on-failure on its own service entry
 *     (ChangeServiceConfig2W: wixl cannot express ServiceConfig), sends its log lines to the
 *     Windows event log (Application, source "easgate") and to
 *     %ProgramData%\easgate\logs\easgate.log, then runs the daemon (agent/main.c, compiled as
 *     eg_daemon_main) with --config %ProgramData%\easgate\easgate.conf unless the service's
 *     arguments name one. The daemon's readiness (eg_notify_ready) reports SERVICE_RUNNING;
 *     STOP, SHUTDOWN and PRESHUTDOWN post SIGTERM (the daemon's normal drain and stop, see
 *     common/platform.h), PARAMCHANGE posts SIGHUP (TLS reload); the daemon's exit status becomes
 *     the service's (non-zero: a service-specific error, so the failure actions restart it);
 *   - in the console with --console, or when the dispatcher reports that the process was not
 *     started by the service control manager (ERROR_FAILED_SERVICE_CONTROLLER_CONNECT, 1063):
 *     the daemon exactly as on Linux, Ctrl-C / Ctrl-Break / closing the window stopping it.
 *
 * This file also implements agent/notify.h for Windows (agent/notify.c is systemd's): the
 * service control manager is the service manager here; there is no watchdog.
 * Built only for Windows (CMakeLists.txt).
 */
#include <windows.h>

#include <io.h>
#include <knownfolders.h>
#include <shlobj.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/notify.h"
#include "common/alloc.h"
#include "common/platform.h"

/* agent/main.c's main(), renamed for Windows by its #ifdef _WIN32 block. */
int eg_daemon_main(int argc, char **argv);

#define SERVICE_NAME       L"easgate"
#define START_WAIT_HINT_MS 60000
#define STOP_MARGIN_MS     10000
#define LOG_LINE_MAX       4096

static SERVICE_STATUS_HANDLE svc_handle;
static SERVICE_STATUS svc_status;
static CRITICAL_SECTION svc_lock;
static bool in_service;
static int main_argc;
static char **main_argv;

/* --- service status ----------------------------------------------------------------------------
 */

static void report(DWORD state, DWORD exit_code, DWORD specific, DWORD wait_hint_ms)
{
    if (!in_service || !svc_handle)
        return;
    EnterCriticalSection(&svc_lock);
    svc_status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    svc_status.dwCurrentState = state;
    svc_status.dwWin32ExitCode = exit_code;
    svc_status.dwServiceSpecificExitCode = specific;
    svc_status.dwWaitHint = wait_hint_ms;
    svc_status.dwControlsAccepted = state == SERVICE_START_PENDING || state == SERVICE_STOPPED
                                        ? 0
                                        : SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN |
                                              SERVICE_ACCEPT_PRESHUTDOWN |
                                              SERVICE_ACCEPT_PARAMCHANGE;
    if (state == SERVICE_RUNNING || state == SERVICE_STOPPED)
        svc_status.dwCheckPoint = 0;
    else
        svc_status.dwCheckPoint++;
    SetServiceStatus(svc_handle, &svc_status);
    LeaveCriticalSection(&svc_lock);
}

static DWORD WINAPI control_handler(DWORD control, DWORD type, LPVOID data, LPVOID ctx)
{
    (void)type, (void)data, (void)ctx;
    switch (control) {
    case SERVICE_CONTROL_STOP:
    case SERVICE_CONTROL_SHUTDOWN:
    case SERVICE_CONTROL_PRESHUTDOWN:
        report(SERVICE_STOP_PENDING, NO_ERROR, 0, START_WAIT_HINT_MS);
        eg_platform_post_signal(SIGTERM);
        return NO_ERROR;
    case SERVICE_CONTROL_PARAMCHANGE:
        eg_platform_post_signal(SIGHUP);
        return NO_ERROR;
    case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;
    default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
}

/* Restart on failure: after 5 s, then 30 s, then no more until the failure count resets after an
 * hour (a broken configuration does not restart forever); also when the daemon exits with an
 * error rather than crashing. A preshutdown window for the drain. Best effort: a failure is
 * logged and the service runs on. */
static void set_recovery(void)
{
    SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
    SC_HANDLE svc =
        scm ? OpenServiceW(scm, SERVICE_NAME, SERVICE_CHANGE_CONFIG | SERVICE_START) : NULL;
    SC_ACTION actions[3] = {
        {SC_ACTION_RESTART, 5000}, {SC_ACTION_RESTART, 30000}, {SC_ACTION_NONE, 0}};
    SERVICE_FAILURE_ACTIONSW fa = {.dwResetPeriod = 3600, .cActions = 3, .lpsaActions = actions};
    SERVICE_FAILURE_ACTIONS_FLAG flag = {.fFailureActionsOnNonCrashFailures = TRUE};
    SERVICE_PRESHUTDOWN_INFO pre = {.dwPreshutdownTimeout = 60000};
    if (!svc || !ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, &fa))
        fprintf(stderr, "warn: cannot set the service's restart-on-failure actions (error %lu)\n",
                (unsigned long)GetLastError());
    else {
        (void)ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &flag);
        (void)ChangeServiceConfig2W(svc, SERVICE_CONFIG_PRESHUTDOWN_INFO, &pre);
    }
    if (svc)
        CloseServiceHandle(svc);
    if (scm)
        CloseServiceHandle(scm);
}

/* --- logging: stderr -> event log + file -------------------------------------------------------
 */

static HANDLE event_source;
static FILE *log_file;
static int log_pipe_read = -1;

static WORD event_type(const char *line)
{
    /* common/log.c: "<timestamp> <level> <message>" */
    const char *sp = strchr(line, ' ');
    if (sp) {
        if (strncmp(sp + 1, "error", 5) == 0)
            return EVENTLOG_ERROR_TYPE;
        if (strncmp(sp + 1, "warn", 4) == 0)
            return EVENTLOG_WARNING_TYPE;
    }
    return EVENTLOG_INFORMATION_TYPE;
}

static void emit_line(const char *line)
{
    if (log_file) {
        fputs(line, log_file);
        fputc('\n', log_file);
        fflush(log_file);
    }
    if (event_source) {
        wchar_t w[LOG_LINE_MAX];
        if (MultiByteToWideChar(CP_UTF8, 0, line, -1, w, LOG_LINE_MAX) > 0) {
            LPCWSTR strs[1] = {w};
            ReportEventW(event_source, event_type(line), 0, 1, NULL, 1, 0, strs, NULL);
        }
    }
}

static DWORD WINAPI log_reader(LPVOID arg)
{
    (void)arg;
    char line[LOG_LINE_MAX];
    size_t len = 0;
    char buf[1024];
    int n;
    while ((n = _read(log_pipe_read, buf, sizeof buf)) > 0) {
        for (int i = 0; i < n; i++) {
            if (buf[i] == '\n' || len == sizeof line - 1) {
                line[len] = '\0';
                if (len && line[len - 1] == '\r')
                    line[len - 1] = '\0';
                emit_line(line);
                len = 0;
                if (buf[i] == '\n')
                    continue;
            }
            line[len++] = buf[i];
        }
    }
    return 0;
}

/* %ProgramData%\easgate (created private: SYSTEM and Administrators only, common/platform.h). */
static void data_dir(char *buf, size_t size)
{
    /* The known folder, not %ProgramData%: a service's environment may carry another value
     * (wine gives LocalSystem services C:\\users\\Public), the MSI installs to this one. */
    PWSTR w = NULL;
    char pd[MAX_PATH] = "";
    if (SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, NULL, &w) == S_OK)
        WideCharToMultiByte(CP_UTF8, 0, w, -1, pd, sizeof pd, NULL, NULL);
    CoTaskMemFree(w);
    if (!*pd) {
        const char *env = getenv("ProgramData");
        snprintf(pd, sizeof pd, "%s", env && *env ? env : "C:/ProgramData");
    }
    snprintf(buf, size, "%s/easgate", pd);
    for (char *p = buf; *p; p++) /* one separator throughout: the daemon joins paths with '/' */
        if (*p == '\\')
            *p = '/';
}

static void start_service_logging(void)
{
    char dir[MAX_PATH], path[MAX_PATH + 32];
    int fds[2];
    data_dir(dir, sizeof dir);
    (void)mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/logs", dir);
    (void)mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/logs/easgate.log", dir);
    log_file = fopen(path, "ab");
    event_source = RegisterEventSourceW(NULL, SERVICE_NAME);
    /* A service starts without standard handles: the pipe becomes descriptor 2, and stderr,
     * which msvcrt (Debian's mingw-w64 C runtime) left on descriptor -2, is pointed at it. */
    if (_pipe(fds, 65536, _O_BINARY | _O_NOINHERIT) == 0) {
        int efd = 2;
        _dup2(fds[1], efd);
        _close(fds[1]);
        if (_fileno(stderr) != efd) /* msvcrt marks a missing standard handle -2 for good */
            stderr->_file = efd;
        SetStdHandle(STD_ERROR_HANDLE, (HANDLE)_get_osfhandle(efd));
        setvbuf(stderr, NULL, _IONBF, 0);
        log_pipe_read = fds[0];
        HANDLE t = CreateThread(NULL, 0, log_reader, NULL, 0, NULL);
        if (t)
            CloseHandle(t);
    }
}

static void stop_service_logging(void)
{
    /* Closing the write end ends the reader after the last line; give it a moment. */
    fflush(stderr);
    _close(_fileno(stderr));
    Sleep(200);
    if (event_source)
        DeregisterEventSource(event_source);
    event_source = NULL;
    if (log_file)
        fclose(log_file);
    log_file = NULL;
}

/* --- the service thread -------------------------------------------------------------------- */

static bool has_config_arg(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0)
            return true;
    return false;
}

static char *utf8(const wchar_t *w)
{
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
    char *s = n > 0 ? eg_malloc((size_t)n) : NULL;
    if (s && WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL) <= 0) {
        eg_free(s);
        s = NULL;
    }
    return s;
}

static void WINAPI service_main(DWORD argc, LPWSTR *wargv)
{
    char cfg_path[MAX_PATH + 32], dir[MAX_PATH];
    char **args = NULL;
    int n = 0, code = 1;

    svc_handle = RegisterServiceCtrlHandlerExW(SERVICE_NAME, control_handler, NULL);
    if (!svc_handle)
        return;
    report(SERVICE_START_PENDING, NO_ERROR, 0, START_WAIT_HINT_MS);
    start_service_logging();
    set_recovery();

    /* argv: the image path's arguments (main), then the start parameters (sc start easgate ...),
     * then --config <ProgramData>\easgate\easgate.conf unless one of them names a file. */
    args = eg_calloc((size_t)main_argc + argc + 3, sizeof *args);
    if (!args)
        goto out;
    for (int i = 0; i < main_argc; i++)
        args[n++] = main_argv[i];
    for (DWORD i = 1; i < argc; i++)
        if ((args[n] = utf8(wargv[i])))
            n++;
    data_dir(dir, sizeof dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/easgate.conf", dir);
    if (!has_config_arg(n, args)) {
        /* First start after the MSI: the configuration begins as a copy of the sample. */
        char sample[MAX_PATH + 48];
        snprintf(sample, sizeof sample, "%s/easgate.conf.sample", dir);
        if (CopyFileA(sample, cfg_path, TRUE))
            fprintf(stderr,
                    "service notice %s created from %s: edit it, then restart the "
                    "service\n",
                    cfg_path, sample);
        args[n++] = "--config";
        args[n++] = cfg_path;
    }
    args[n] = NULL;
    code = eg_daemon_main(n, args);
out:
    if (code != 0)
        fprintf(stderr, "service error  easgate stopped with exit status %d\n", code);
    stop_service_logging();
    report(SERVICE_STOPPED, code ? ERROR_SERVICE_SPECIFIC_ERROR : NO_ERROR, (DWORD)code, 0);
    /* the start parameters converted above are left to the process exit */
}

int main(int argc, char **argv)
{
    bool console = argc > 1 && strcmp(argv[1], "audit") == 0; /* easgate audit verify */
    int n = 1;

    InitializeCriticalSection(&svc_lock);
    for (int i = 1; i < argc; i++) { /* --console: drop it, the daemon does not know it */
        /* One-shot actions never run as the service: no dispatcher round trip (which waits
         * 10 s before failing under wine). */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
            strcmp(argv[i], "--version") == 0 || strncmp(argv[i], "--check-config", 14) == 0)
            console = true;
        if (strcmp(argv[i], "--console") == 0)
            console = true;
        else
            argv[n++] = argv[i];
    }
    argv[n] = NULL;
    argc = n;
    main_argc = argc;
    main_argv = argv;

    if (!console) {
        SERVICE_TABLE_ENTRYW table[] = {{(LPWSTR)SERVICE_NAME, service_main}, {NULL, NULL}};
        in_service = true;
        if (StartServiceCtrlDispatcherW(table))
            return 0; /* the service ran and stopped */
        in_service = false;
        DWORD e = GetLastError();
        if (e != ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
            fprintf(stderr, "easgate: cannot start the service dispatcher (error %lu)\n",
                    (unsigned long)e);
            return 1;
        }
    }
    eg_platform_console_signals();
    return eg_daemon_main(argc, argv);
}

/* --- agent/notify.h on Windows --------------------------------------------------------------- */

int eg_notify_ready(const char *fmt, ...)
{
    (void)fmt;
    report(SERVICE_RUNNING, NO_ERROR, 0, 0);
    return 0;
}

int eg_notify_status(const char *fmt, ...)
{
    (void)fmt; /* the service control manager shows no status text; the log has the line */
    return 0;
}

int eg_notify_stopping(int64_t drain_ms)
{
    report(SERVICE_STOP_PENDING, NO_ERROR, 0,
           (DWORD)((drain_ms > 0 ? drain_ms : 0) + STOP_MARGIN_MS));
    return 0;
}

int eg_notify_watchdog_start(eg_notify_alive_fn alive, void *ctx, struct eg_notify_watchdog **ret)
{
    (void)alive, (void)ctx;
    if (!ret)
        return EG_EINVAL;
    *ret = NULL; /* the service control manager has no watchdog */
    return 0;
}

void eg_notify_watchdog_stop(struct eg_notify_watchdog *w)
{
    (void)w;
}

uint64_t eg_notify_watchdog_interval_us(const struct eg_notify_watchdog *w)
{
    (void)w;
    return 0;
}
