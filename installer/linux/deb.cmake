# installer/linux/deb.cmake - what the Debian package holds and how CPack builds it
# (included from the top CMakeLists.txt before include(CPack); `cpack -G DEB` in a build dir).
#
# Only the install() rules of COMPONENT easgate go into the package (CPACK_INSTALL_CMAKE_PROJECTS
# below), so test programs such as the mock Exchange can never end up in it. Layout (Debian 12):
#   /usr/sbin/easgate, /usr/bin/easgate-ps, /usr/share/man/man8/easgate.8.gz,
#   /lib/systemd/system/easgate.service, /etc/easgate/easgate.json (conffile),
#   /usr/share/doc/easgate/install.md
# Owners and modes under /etc/easgate and the easgate user are the maintainer scripts' work
# (postinst, prerm, postrm beside this file).

set(EG_LINUX_DIR ${CMAKE_SOURCE_DIR}/installer/linux)

# easgate(8): the template plus the daemon's own --help (the option table), at build time.
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/easgate.8 ${CMAKE_BINARY_DIR}/easgate.8.gz
  COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=0
          bash ${EG_LINUX_DIR}/gen-man.sh $<TARGET_FILE:easgate> ${EG_LINUX_DIR}/easgate.8.in
          ${CMAKE_BINARY_DIR}/easgate.8
  DEPENDS easgate ${EG_LINUX_DIR}/gen-man.sh ${EG_LINUX_DIR}/easgate.8.in
  COMMENT "Generating easgate.8 from the option table"
  VERBATIM)
add_custom_target(easgate-man ALL DEPENDS ${CMAKE_BINARY_DIR}/easgate.8.gz)

install(FILES ${CMAKE_BINARY_DIR}/easgate.8.gz DESTINATION share/man/man8 COMPONENT easgate)
install(FILES ${EG_LINUX_DIR}/easgate.service DESTINATION /lib/systemd/system COMPONENT easgate)
install(FILES ${EG_LINUX_DIR}/easgate.json DESTINATION /etc/easgate
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ COMPONENT easgate)
install(FILES ${CMAKE_SOURCE_DIR}/docs/install.md DESTINATION share/doc/easgate
        COMPONENT easgate)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME easgate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/deb)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_CMAKE_PROJECTS "${CMAKE_BINARY_DIR};easgate;easgate;/")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_CONTACT "easgate maintainers <easgate@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Exchange ActiveSync gatekeeping agent for a mobile-device-management console")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "easgate runs beside Microsoft Exchange, listens on port 9090 (HTTPS, client certificates
and/or a bearer token) for JSON commands from an MDM console and turns them into Exchange
changes: mailbox ActiveSync allowed/blocked device lists, the organisation's default access
level, remote wipe, removal of device partnerships and inventory pulls. Commands are journalled
in SQLite before they are acknowledged. Includes easgate-ps, a remote PowerShell client for
checking the service account's rights.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
# gss-ntlmssp is a GSSAPI mechanism plugin (loaded by libgssapi-krb5, not linked): NTLM needs it.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd, gss-ntlmssp, krb5-user")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${EG_LINUX_DIR}/conffiles ${EG_LINUX_DIR}/postinst ${EG_LINUX_DIR}/prerm ${EG_LINUX_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
