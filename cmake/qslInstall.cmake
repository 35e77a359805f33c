# Install rules and the package config for find_package(qsl).
# Build tree = install tree: consumers get qsl::qsl whether they find or add qsl.
include(CMakePackageConfigHelpers)

set(QSL_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/qsl"
    CACHE STRING "Where qslConfig.cmake is installed, relative to the prefix")

# No INCLUDES DESTINATION: the target's $<INSTALL_INTERFACE:include> already exports it.
install(TARGETS qsl EXPORT qslTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/qsl DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")

install(EXPORT qslTargets NAMESPACE qsl:: DESTINATION ${QSL_INSTALL_CMAKEDIR})
# The same targets for the build tree, so find_package(qsl) also works with qsl_DIR=<build dir>.
export(EXPORT qslTargets NAMESPACE qsl:: FILE ${PROJECT_BINARY_DIR}/qslTargets.cmake)

# Optional components get export sets of their own, so that qslConfig.cmake finds their
# dependencies (protobuf, ONNX) only when a consumer asks for the component.
set(QSL_BUILT_COMPONENTS "")
if(TARGET qsl_onnx)
  install(TARGETS qsl_onnx EXPORT qslOnnxTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT qslOnnxTargets NAMESPACE qsl:: DESTINATION ${QSL_INSTALL_CMAKEDIR})
  export(EXPORT qslOnnxTargets NAMESPACE qsl:: FILE ${PROJECT_BINARY_DIR}/qslOnnxTargets.cmake)
  list(APPEND QSL_BUILT_COMPONENTS onnx)
endif()
if(TARGET qsl_cuda)
  install(TARGETS qsl_cuda EXPORT qslCudaTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT qslCudaTargets NAMESPACE qsl:: DESTINATION ${QSL_INSTALL_CMAKEDIR})
  export(EXPORT qslCudaTargets NAMESPACE qsl:: FILE ${PROJECT_BINARY_DIR}/qslCudaTargets.cmake)
  list(APPEND QSL_BUILT_COMPONENTS cuda)
endif()

if(TARGET qsl_onnxruntime)  # the ONNX Runtime operators: a library sessions load by path
  install(TARGETS qsl_onnxruntime EXPORT qslOnnxruntimeTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT qslOnnxruntimeTargets NAMESPACE qsl:: DESTINATION ${QSL_INSTALL_CMAKEDIR})
  export(EXPORT qslOnnxruntimeTargets NAMESPACE qsl::
         FILE ${PROJECT_BINARY_DIR}/qslOnnxruntimeTargets.cmake)
  list(APPEND QSL_BUILT_COMPONENTS onnxruntime)
endif()

configure_package_config_file(cmake/qslConfig.cmake.in
  ${PROJECT_BINARY_DIR}/qslConfig.cmake
  INSTALL_DESTINATION ${QSL_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/qslConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/qslConfig.cmake
  ${PROJECT_BINARY_DIR}/qslConfigVersion.cmake
  DESTINATION ${QSL_INSTALL_CMAKEDIR})
