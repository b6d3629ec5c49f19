# Install rules and the exported CMake package: a third party builds a plugin out of tree with
#   find_package(kivi REQUIRED)
#   kivi_add_plugin(my_plugin SOURCES my_plugin.cpp)
# against an installed core, and drops the module into <prefix>/lib/kivi/plugins.
include(CMakePackageConfigHelpers)

install(TARGETS kivi_core kivi_registry kivi_engine kivi_torch kivi_toml EXPORT kiviTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY core/kivi registry/kivi apps/kivi-host/include/kivi DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES "${PROJECT_BINARY_DIR}/generated/kivi/build_info.h"
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kivi)
install(EXPORT kiviTargets NAMESPACE kivi:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kivi)

configure_package_config_file(cmake/kiviConfig.cmake.in
  "${PROJECT_BINARY_DIR}/kiviConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kivi)
write_basic_package_version_file("${PROJECT_BINARY_DIR}/kiviConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/kiviConfig.cmake" "${PROJECT_BINARY_DIR}/kiviConfigVersion.cmake"
              cmake/KiviPlugin.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kivi)
