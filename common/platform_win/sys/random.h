/* sys/random.h - Windows stand-in: getrandom() is mapped by common/platform.h (BCryptGenRandom). */
#ifndef EG_PLATFORM_WIN_SYS_RANDOM_H
#define EG_PLATFORM_WIN_SYS_RANDOM_H
#include "common/platform.h"
#endif
