# CMake toolchain file: cross-compile for 64-bit Windows with Debian's mingw-w64.
#   cmake -DCMAKE_TOOLCHAIN_FILE=installer/windows/toolchain-mingw64.cmake \
#         -DEG_WIN_DEPS=/path/to/deps ...
# EG_WIN_DEPS (cache variable or environment) is the OUT directory of build-deps.sh: its
# lib/pkgconfig is the only place pkg-config looks.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(EG_MINGW_PREFIX x86_64-w64-mingw32)

# The posix thread model gives winpthreads underneath, which the daemon uses for pthreads.
find_program(CMAKE_C_COMPILER NAMES ${EG_MINGW_PREFIX}-gcc-posix ${EG_MINGW_PREFIX}-gcc REQUIRED)
find_program(CMAKE_RC_COMPILER NAMES ${EG_MINGW_PREFIX}-windres)
set(CMAKE_AR ${EG_MINGW_PREFIX}-ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${EG_MINGW_PREFIX}-ranlib CACHE FILEPATH "")

set(CMAKE_FIND_ROOT_PATH /usr/${EG_MINGW_PREFIX})
if(NOT EG_WIN_DEPS AND DEFINED ENV{EG_WIN_DEPS})
  set(EG_WIN_DEPS $ENV{EG_WIN_DEPS})
endif()
if(EG_WIN_DEPS)
  set(EG_WIN_DEPS ${EG_WIN_DEPS} CACHE PATH "build-deps.sh output directory")
  list(APPEND CMAKE_FIND_ROOT_PATH ${EG_WIN_DEPS})
  set(ENV{PKG_CONFIG_LIBDIR} ${EG_WIN_DEPS}/lib/pkgconfig)
  set(ENV{PKG_CONFIG_PATH} ${EG_WIN_DEPS}/lib/pkgconfig)
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Static everything: the exe then depends on system DLLs only.
set(PKG_CONFIG_USE_STATIC_LIBS ON)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static -static-libgcc")
