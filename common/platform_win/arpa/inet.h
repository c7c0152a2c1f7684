/* arpa/inet.h - Windows stand-in (common/platform.h): the BSD socket API is Winsock's. */
#ifndef EG_PLATFORM_WIN_ARPA_INET_H
#define EG_PLATFORM_WIN_ARPA_INET_H
#include <winsock2.h>
#include <ws2tcpip.h>
#endif
