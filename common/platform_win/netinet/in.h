/* netinet/in.h - Windows stand-in (common/platform.h): the BSD socket API is Winsock's. */
#ifndef EG_PLATFORM_WIN_NETINET_IN_H
#define EG_PLATFORM_WIN_NETINET_IN_H
#include <winsock2.h>
#include <ws2tcpip.h>
#endif
