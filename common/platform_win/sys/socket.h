/* sys/socket.h - Windows stand-in (common/platform.h): the BSD socket API is Winsock's.
 * Sockets are kept in int variables as on POSIX (Winsock handles fit); close() of a socket is
 * closesocket() (common/platform_win.c, eg_win_close). */
#ifndef EG_PLATFORM_WIN_SYS_SOCKET_H
#define EG_PLATFORM_WIN_SYS_SOCKET_H
#include <winsock2.h>
#include <ws2tcpip.h>

#define SHUT_RD       SD_RECEIVE
#define SHUT_WR       SD_SEND
#define SHUT_RDWR     SD_BOTH
#define SOCK_CLOEXEC  0 /* nothing is ever spawned */
#define SOCK_NONBLOCK 0 /* libmicrohttpd makes its listening socket non-blocking */
/* Winsock's option value is a const char *. */
#define setsockopt(s, l, o, v, n) setsockopt((s), (l), (o), (const char *)(v), (n))
#endif
